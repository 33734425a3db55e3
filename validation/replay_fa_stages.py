"""Replay run 55's causal schedules (wgmma and mma.sync builds of the Triton forward of FA2's shape) through L2
models: does the instruction's extra re-reads show in a schedule of CTA starts and ends? (No GPU; a few minutes.)

Each case's K/V walk is spread evenly over each CTA's recorded start and end (replay_causal_schedule.accesses), then
read through the model's L2 (h200 preset), one LRU of 24 and of 29.2 MiB, and two partitions of 26 MiB (spread 0.106,
a far read leaving a copy half the time: run 29, replay_causal_schedule.TwoPartitions).

    python validation/replay_fa_stages.py
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

from ncu_profile import metric_value
from profile_dram_heads import kv_reads_per_head
from replay_causal_schedule import MIB, ModelL2, OneLru, accesses, partitioned, replayed_kv_reads_per_head

DATA = Path(__file__).resolve().parent / "data"
RUNS = [DATA / f"h200_probe_2026-12-01_fa_stages{suffix}.json.gz" for suffix in ("", "_mma_sync")]
PARTITIONS = (26, 0.106, 0.5)


def main() -> int:
    print("| instruction | heads | stages | GPU | model's L2 | LRU 24 / 29.2 MiB | two partitions of 26 MiB |")
    print("|---|---|---|---|---|---|---|")
    for path in RUNS:
        doc = json.loads(gzip.open(path, "rt").read())
        for timeline, kernel in zip(doc["timelines"], doc["kernels"]):
            case = timeline["case"]
            if not case.get("causal"):
                continue
            gpu = kv_reads_per_head(case, metric_value(kernel, "dram__bytes_read.sum"))
            events = accesses(case, timeline["records"])
            model = replayed_kv_reads_per_head(case, events, ModelL2())
            lru = [replayed_kv_reads_per_head(case, events, OneLru(c * MIB)) for c in (24, 29.2)]
            parts = replayed_kv_reads_per_head(case, events, partitioned(PARTITIONS))
            instruction = "mma.sync" if case.get("mma_v3_disabled") else "wgmma"
            print(f"| {instruction} | {case['heads']} | {case['stages']} | {gpu:.2f} | {model:.2f} | "
                  f"{lru[0]:.2f} / {lru[1]:.2f} | {parts:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
