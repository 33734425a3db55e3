"""The model's schedule of a causal forward against run 43's measured one, and both through the replay's L2 models.

Run 43 (probe_fa_causal.py) recorded each CTA of a Triton causal forward of FA2's shape: its SM, start and end. This
simulates SDPA's FA2 on the same problem in exact mode with the engine's trace (one `cta` row per CTA: its SM,
start and duration), then prints, for both schedules, each normalized to its own span:

- every head's first start, last start and last end, and how many heads have CTAs running at 21 points in time (the
  middles of 21 equal slices of the span);
- each CTA's time per K/V step over the median (10th and 90th percentile, and a head's first CTAs, the shortest),
  and the spread of paces among a query block's CTAs in different heads (probe_fa_phases.pace_spread);
- the K/V reads per head that replay_causal_schedule.py's L2 models give on each schedule, beside the engine's own
  and the GPU's (run 43's Triton kernel, run 42's SDPA kernel).

So it tells whether a causal launch's re-reads differ between model and GPU because of the schedule or the L2.

    python validation/compare_causal_schedule.py [HEADS]   (no GPU; about 2 minutes at 4 heads; HEADS: 1, 2, 4 or 16)
"""

from __future__ import annotations

import ast
import json
import statistics
import sys

from ncu_profile import metric_value
from probe_fa_phases import pace_spread
from profile_dram_heads import kv_reads_per_head
from replay_causal_schedule import (PARTITIONS, SCHEDULES, ModelL2, accesses, partition_label, partitioned,
                                    replayed_kv_reads_per_head)

#: Points in time at which running heads are counted.
LIVE_SAMPLES = 21
#: A head's first CTAs (query blocks), whose walks are the shortest (2-16 tiles at 128 x 64): their fixed costs show.
SHORT_CTAS = 8


def model_records(case: dict) -> tuple[list, float]:
    """The engine's exact-mode schedule of SDPA's FA2 on run 43's case: (sm, start, end) per CTA in grid order
    (cycles, from the trace's `cta` rows of the forward launch), and the engine's own K/V reads per head."""
    from gpusim import AttentionProblem, simulate
    problem = AttentionProblem(batch=1, heads=case["heads"], seq_len=case["seq_len"], head_dim=case["head_dim"],
                               causal=True)
    result = simulate("fa2", problem, "h200", exact=True, trace=True)
    if (result.info["block_m"], result.info["block_n"]) != (case["block_m"], case["block_n"]):
        raise SystemExit(f"compare_causal_schedule.py: the model's FA2 tiles {result.info['block_m']} x "
                         f"{result.info['block_n']} are not the probe's {case['block_m']} x {case['block_n']}")
    blocks_per_head = case["seq_len"] // case["block_m"]
    records = {}
    for name, sm, unit, start, duration in result.trace:
        if unit.startswith("cta slot") and name.startswith("fa2_fwd cta "):
            block, _batch, head = ast.literal_eval(name.removeprefix("fa2_fwd cta "))  # (query block, batch, head)
            records[head * blocks_per_head + block] = (sm, start, start + duration)
    if sorted(records) != list(range(case["heads"] * blocks_per_head)):
        raise SystemExit(f"compare_causal_schedule.py: the trace has {len(records)} forward CTAs, not "
                         f"{case['heads']} x {blocks_per_head}")
    return [records[i] for i in range(len(records))], kv_reads_per_head(case, result.hbm_read_bytes)


def describe(label: str, case: dict, records: list) -> None:
    """Print a schedule's heads, running heads over time and step times, normalized to its span."""
    t0, t1 = min(r[1] for r in records), max(r[2] for r in records)
    span = t1 - t0
    spans = [((start - t0) / span, (end - t0) / span) for _sm, start, end in records]
    blocks = case["seq_len"] // case["block_m"]
    print(f"{label}:")
    for head in range(case["heads"]):
        own = spans[head * blocks:(head + 1) * blocks]
        print(f"  head {head}: first start {min(s for s, _ in own):.3f}, last start {max(s for s, _ in own):.3f}, "
              f"last end {max(e for _, e in own):.3f}")
    live = [len({i // blocks for i, (s, e) in enumerate(spans) if s <= (k + 0.5) / LIVE_SAMPLES < e})
            for k in range(LIVE_SAMPLES)]
    print(f"  heads running at {LIVE_SAMPLES} points: {live}")
    tiles_per_block = case["block_m"] // case["block_n"]
    steps = [(e - s) / ((i % blocks + 1) * tiles_per_block) for i, (s, e) in enumerate(spans)]
    median = statistics.median(steps)
    deciles = statistics.quantiles(steps, n=10)
    short = statistics.median(steps[i] for i in range(len(steps)) if i % blocks < SHORT_CTAS)
    print(f"  time per K/V step over the median: p10 {deciles[0] / median:.2f}, p90 {deciles[-1] / median:.2f}; "
          f"a head's first {SHORT_CTAS} CTAs {short / median:.2f}")
    print(f"  pace spread among a query block's CTAs in different heads: {pace_spread(case, records)[0]:.3f}")


def main() -> None:
    heads = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    doc = json.loads(SCHEDULES.read_text())
    found = [(t, k) for t, k in zip(doc["timelines"], doc["kernels"])
             if t["case"]["heads"] == heads and t["case"]["seq_len"] == 32768]
    if not found:
        raise SystemExit(f"compare_causal_schedule.py: no run 43 case with {heads} heads at 32k tokens (1, 2, 4, 16)")
    timeline, kernel = found[0]
    case = {**timeline["case"], "causal": True}  # every run 43 case is causal; its data does not say so
    gpu_reads = kv_reads_per_head(case, metric_value(kernel, "dram__bytes_read.sum"))
    model, engine_reads = model_records(case)
    describe("run 43 (Triton kernel on the H200)", case, timeline["records"])
    describe("the model (SDPA's FA2, exact mode)", case, model)
    print(f"K/V reads per head: GPU (run 43's kernel) {gpu_reads:.2f}; the engine {engine_reads:.2f}")
    models = [("model's L2", ModelL2)] + [(partition_label(p), lambda p=p: partitioned(p)) for p in PARTITIONS]
    for label, records in (("run 43's schedule", timeline["records"]), ("the model's schedule", model)):
        events = accesses(case, records)
        figures = " / ".join(f"{replayed_kv_reads_per_head(case, events, make()):.2f}" for _name, make in models)
        print(f"  replay of {label}: {figures}  ({' / '.join(name for name, _ in models)})", flush=True)


if __name__ == "__main__":
    main()
