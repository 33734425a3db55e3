"""When every CTA of a causal FlashAttention-style forward reads each of its K/V tiles (H200, run 58).

Runs 43-44 recorded each CTA's start and end; replay_causal_schedule.py spreads a CTA's tiles evenly between them,
and on those schedules the model's L2 re-reads K/V half as often as the GPU did (4 heads at 32k: 1.17 against 1.80),
while it fits streams measured alone (runs 26, 50, 57). This records the real time of every K/V iteration of every
CTA (probe_fa_phases.py's kernel, RECORD_CTAS = the whole grid: one `%globaltimer` store per iteration), after an L2
flush, and Nsight Compute measures the DRAM reads of the same instrumented kernel, so that the replay can read each
tile at its real time (replay_causal_walks.py): is the gap in the schedule within CTAs, or in the L2?

    python validation/probe_fa_causal_walks.py --out validation/data      (needs torch, triton, CUDA and `ncu`)
    python validation/probe_fa_causal_walks.py --memory-only --out validation/data   (run 60: the loads alone)
    python validation/probe_fa_causal_walks.py --bisect --out validation/data        (run 61: walked up, or K alone)
    python validation/probe_fa_causal_walks.py --gap --out validation/data           (run 62: V at an odd gap)
    python validation/probe_fa_causal_walks.py --no-qo --out validation/data         (run 63: no Q or O traffic)
    python validation/probe_fa_causal_walks.py --no-q-or-o --out validation/data     (run 64: no Q, or no O)

Writes `h200_probe_<date>_fa_causal_walks.json.gz` (with a suffix per mode: `_memory`, `_bisect`, `_gap`, `_no_qo`,
`_no_q_or_o`): per case every CTA's (sm, start, end) in ns from the first start, and its iterations' starts in units of
10 ns, the first from the CTA's start and each later one from the one before. (Run 58's file was written with offsets
from the CTA's start and turned into these deltas afterwards.)
"""

from __future__ import annotations

import datetime
import gzip
import json
import os
import sys

from ncu_profile import metric_value, profile_args, profile_until_kernels, run_cases
from probe_fa_phases import FLUSH_BYTES, iterations, make_call
from profile_dram_heads import kv_reads_per_head

CASES = [{"heads": h, "seq_len": n, "head_dim": 128, "block_m": 128, "block_n": 64, "warps": 4, "stages": 2,
          "causal": True} for h, n in ((4, 32768), (8, 32768), (16, 16384))]
#: `--memory-only` (run 60): the same loads without the arithmetic, each iteration first spinning 2 us (about the
#: compute kernel's 2.3 us per iteration, so the walks keep its pace), and once without the wait at 4 heads.
MEMORY_ONLY_CASES = ([{**case, "memory_only": True, "delay": 1, "delay_ns": 2000} for case in CASES]
                     + [{**CASES[0], "memory_only": True}])
#: `--bisect` (run 61): the 2 us-paced loads of run 60 at 4 and 16 heads, walked first tile first, or K alone.
BISECT_CASES = [{**MEMORY_ONLY_CASES[i], **change} for i in (0, 2) for change in ({"walk_up": True}, {"k_only": True})]
#: `--gap` (run 62): run 60's paced 4-head loads again, and with V 1 MiB + 48 KiB past K's end in one buffer (run 60's
#: separate tensors of 32 MiB may sit a power of two apart).
GAP_CASES = [MEMORY_ONLY_CASES[0], {**MEMORY_ONLY_CASES[0], "kv_gap_bytes": (1 << 20) + 48 * 1024}]
#: `--no-qo` (run 63): run 60's paced loads at 4 and 16 heads without Q's reads and O's writes (one row of O per CTA).
NO_QO_CASES = [{**MEMORY_ONLY_CASES[i], "no_qo": True} for i in (0, 2)]
#: `--no-q-or-o` (run 64): the same without Q's reads only, or without O's writes only.
NO_Q_OR_O_CASES = [{**MEMORY_ONLY_CASES[i], change: True} for i in (0, 2) for change in ("no_q", "no_o")]
METRICS = ["dram__bytes_read.sum", "dram__bytes_write.sum", "gpu__time_duration.sum"]
TICK_NS = 10


def grid_ctas(case: dict) -> int:
    return case["seq_len"] // case["block_m"] * case["heads"]


def instrumented(torch, case):
    """The case's callable with every CTA stamping every iteration."""
    return make_call(torch, case, record_ctas=grid_ctas(case))


def record(torch, case: dict) -> dict:
    """One call after a warm-up call and an L2 flush: per CTA (sm, start, end) and its iterations' offsets."""
    call = instrumented(torch, case)
    call()
    flush = torch.empty(FLUSH_BYTES, dtype=torch.int8, device="cuda")
    torch.cuda.synchronize()
    flush.zero_()
    rec = call()
    torch.cuda.synchronize()
    records = rec.view(-1, 3).tolist()
    stamps = call.iterations.view(grid_ctas(case), -1).tolist()
    t0 = min(r[1] for r in records)
    blocks = case["seq_len"] // case["block_m"]
    walks = []
    for cta, (sm, start, end) in enumerate(records):
        ticks = [(s - start) // TICK_NS for s in stamps[cta][:iterations(case, cta % blocks)]]
        walks.append(ticks[:1] + [b - a for a, b in zip(ticks, ticks[1:])])  # deltas: a quarter of the bytes
    error = call.error()
    call = flush = None
    torch.cuda.empty_cache()
    return {"case": case, "max_abs_error": error, "tick_ns": TICK_NS, "walks_as": "deltas",
            "records": [[sm, start - t0, end - t0] for sm, start, end in records], "walks": walks}


def main() -> int:
    mode = next((flag for flag in ("--memory-only", "--bisect", "--gap", "--no-qo", "--no-q-or-o") if flag in sys.argv),
                None)
    if mode:
        sys.argv.remove(mode)
    cases, name = {"--memory-only": (MEMORY_ONLY_CASES, "fa_causal_walks_memory"),
                   "--bisect": (BISECT_CASES, "fa_causal_walks_bisect"),
                   "--gap": (GAP_CASES, "fa_causal_walks_gap"),
                   "--no-qo": (NO_QO_CASES, "fa_causal_walks_no_qo"),
                   "--no-q-or-o": (NO_Q_OR_O_CASES, "fa_causal_walks_no_q_or_o")}.get(mode, (CASES, "fa_causal_walks"))
    args = profile_args(__doc__)
    if args.driver:
        run_cases(cases, instrumented)
        return 0
    import torch
    timelines = [record(torch, case) for case in cases]
    for t in timelines:
        c = t["case"]
        kind = "".join(f" {k}" for k in ("memory_only", "walk_up", "k_only", "no_qo", "no_q", "no_o") if c.get(k))
        print(f"H={c['heads']} N={c['seq_len']}{kind}: max |error| "
              f"{t['max_abs_error']:.4f}, "
              f"{(max(r[2] for r in t['records'])) / 1e3:.0f} us", flush=True)
    kernels, runs = profile_until_kernels(__file__, [METRICS], driver_flag="--driver", timeout=500,
                                          driver_args=(mode,) if mode else ())
    kernels = [k for k in kernels if "forward" in k.get("Kernel Name", "")]
    for case, kernel in zip(cases, kernels):
        read = metric_value(kernel, "dram__bytes_read.sum")
        print(f"H={case['heads']} N={case['seq_len']}: DRAM {read / 1e9:.3f} GB, "
              f"{kv_reads_per_head(case, read):.2f} K/V reads per head", flush=True)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"h200_probe_{datetime.date.today()}_{name}.json.gz")
    doc = {"script": "validation/probe_fa_causal_walks.py", "cases": cases, "timelines": timelines,
           "kernels": [{k: v for k, v in kernel.items() if k.startswith(("dram", "gpu", "Kernel"))}
                       for kernel in kernels], "ncu_runs": runs}
    with gzip.open(path + ".tmp", "wt", compresslevel=9) as f:
        json.dump(doc, f, separators=(",", ":"))
    os.replace(path + ".tmp", path)
    print("->", path)
    return 0 if len(kernels) == len(cases) else 1


if __name__ == "__main__":
    sys.exit(main())
