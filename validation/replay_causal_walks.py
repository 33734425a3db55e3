"""Replay run 58's causal walks through the model's L2, each tile at the time the GPU's CTA read it.

Run 58 (probe_fa_causal_walks.py) recorded when every CTA of a causal Triton forward started, ended and began each K/V
iteration, and Nsight Compute counted the kernel's DRAM reads. This reads each CTA's Q at its start, its K and V tiles
(last first, as the kernel walks) at their iterations' times, and writes its O at its end, through:

- the model's L2 (the engine's at the h200 preset);
- the same with each CTA's tiles spread evenly between its start and end, as replay_causal_schedule.py does for runs
  43-44: the difference is what the pace within CTAs does;
- the two partitions of halved tiles that replay_causal_schedule.py fitted (26.5 MiB each, spread 0.12, copies 0.45).

and prints the K/V reads per head beside the GPU's.

    python validation/replay_causal_walks.py [--memory-only | --bisect | --gap | --no-qo | --no-q-or-o]
                                                                            (no GPU; a minute; runs 58, 60-64)
"""

from __future__ import annotations

import gzip
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from ncu_profile import metric_value
from profile_dram_heads import kv_reads_per_head
from replay_causal_schedule import ModelL2, accesses, partitioned, replayed_kv_reads_per_head

DATA = Path(__file__).resolve().parent / "data" / "h200_probe_2026-12-01_fa_causal_walks.json.gz"
#: Run 60 (`--memory-only`): the same walks' loads without the arithmetic.
MEMORY_ONLY_DATA = DATA.with_name("h200_probe_2026-12-01_fa_causal_walks_memory.json.gz")
#: Run 61 (`--bisect`): those loads walked first tile first, or K alone.
BISECT_DATA = DATA.with_name("h200_probe_2026-12-01_fa_causal_walks_bisect.json.gz")
#: Run 62 (`--gap`): run 60's 4-head case again, and with V at an odd gap past K.
GAP_DATA = DATA.with_name("h200_probe_2026-12-01_fa_causal_walks_gap.json.gz")
#: Run 63 (`--no-qo`): run 60's paced loads without Q's reads and O's writes.
NO_QO_DATA = DATA.with_name("h200_probe_2026-12-01_fa_causal_walks_no_qo.json.gz")
#: Run 64 (`--no-q-or-o`): without Q's reads only, or without O's writes only.
NO_Q_OR_O_DATA = DATA.with_name("h200_probe_2026-12-01_fa_causal_walks_no_q_or_o.json.gz")


def walked_accesses(timeline: dict) -> list[tuple]:
    """Every access in time order, as replay_causal_schedule.accesses gives them, but each K/V tile at its
    iteration's recorded start."""
    case, tick = timeline["case"], timeline["tick_ns"]
    blocks_per_head = case["seq_len"] // case["block_m"]
    tile_bytes = case["block_n"] * case["head_dim"] * 2
    rows_bytes = case["block_m"] * case["head_dim"] * 2
    tensors = ("K",) if case.get("k_only") else ("K", "V")
    events = []
    for cta, ((sm, start, end), deltas) in enumerate(zip(timeline["records"], timeline["walks"])):
        head, block = divmod(cta, blocks_per_head)
        if not (case.get("no_qo") or case.get("no_q")):
            events.append((start, 0, sm, "read", ("Q", head, block), rows_bytes))
        offset = 0
        for step, delta in enumerate(deltas):
            offset += delta
            tile = step if case.get("walk_up") else len(deltas) - 1 - step
            for tensor in tensors:
                events.append((start + offset * tick, 1, sm, "read", (tensor, head, tile), tile_bytes))
        if not (case.get("no_qo") or case.get("no_o")):
            events.append((end, 2, sm, "write", ("O", head, block), rows_bytes))
    events.sort(key=lambda e: (e[0], e[1]))
    return events


MODELS = {"model's L2": ModelL2, "two partitions": lambda: partitioned((26.5, 0.12, 0.45))}


def reads_per_head(case: dict, kv_reads: float) -> float:
    """K/V reads per head as kv_reads_per_head counts them (over one read of K and V), or K's where the case loads K
    alone (`k_only`)."""
    return 2 * kv_reads if case.get("k_only") else kv_reads


def gpu_reads_per_head(case: dict, kernel: dict) -> float:
    """The GPU's K/V reads per head (K's, for a case that loads K alone) from Nsight Compute's DRAM reads."""
    read = metric_value(kernel, "dram__bytes_read.sum")
    if case.get("no_qo") or case.get("no_q"):  # kv_reads_per_head takes Q's bytes off: this kernel reads none
        read += case["heads"] * case["seq_len"] * case["head_dim"] * 2
    return reads_per_head(case, kv_reads_per_head(case, read))


def replay(args: tuple) -> tuple:
    path, index, model, spread_evenly = args
    timeline = json.loads(gzip.open(path).read())["timelines"][index]
    case = timeline["case"]
    if spread_evenly and (case.get("walk_up") or case.get("k_only")):
        return index, model, spread_evenly, float("nan")  # accesses() walks K and V down
    events = accesses(case, timeline["records"]) if spread_evenly else walked_accesses(timeline)
    return index, model, spread_evenly, reads_per_head(case, replayed_kv_reads_per_head(case, events, MODELS[model]()))


def main() -> None:
    path = {"--memory-only": MEMORY_ONLY_DATA, "--bisect": BISECT_DATA, "--gap": GAP_DATA, "--no-qo": NO_QO_DATA,
            "--no-q-or-o": NO_Q_OR_O_DATA}.get(
        next((a for a in sys.argv[1:] if a.startswith("--")), None), DATA)
    doc = json.loads(gzip.open(path).read())
    jobs = [(path, i, model, even) for i in range(len(doc["timelines"])) for model in MODELS for even in (False, True)]
    with ProcessPoolExecutor(2) as pool:
        results = {(i, model, even): value for i, model, even, value in pool.map(replay, jobs)}
    print("K/V reads per head: GPU | " + " | ".join(f"{m}, tiles at their times / spread evenly" for m in MODELS))
    for i, (timeline, kernel) in enumerate(zip(doc["timelines"], doc["kernels"])):
        case = timeline["case"]
        gpu = gpu_reads_per_head(case, kernel)
        cells = " | ".join(f"{results[(i, m, False)]:.2f} / {results[(i, m, True)]:.2f}" for m in MODELS)
        paced = f", waits {case['delay_ns']} ns per iteration" if case.get("delay") else ""
        paced += ", first tile first" if case.get("walk_up") else ""
        paced += ", K alone (its reads per head)" if case.get("k_only") else ""
        paced += f", V {case['kv_gap_bytes']} bytes past K" if case.get("kv_gap_bytes") else ""
        paced += ", no Q or O traffic" if case.get("no_qo") else ", no Q reads" if case.get("no_q") else ""
        paced += ", no O writes" if case.get("no_o") else ""
        print(f"{case['heads']} heads, N = {case['seq_len']}{paced}: {gpu:.2f} | {cells}", flush=True)


if __name__ == "__main__":
    main()
