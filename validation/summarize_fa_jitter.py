"""The tables of runs 45 and 46 (validation/README.md, twenty-first session) from their data: per launch, how its
CTAs waited, the spread of their paces, the median pace, the span of the recorded call and the K/V reads per head.

    python validation/summarize_fa_jitter.py [DATA.json ...]      (default: the two files of runs 45 and 46)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ncu_profile import metric_value
from probe_fa_phases import pace_spread
from profile_dram_heads import kv_reads_per_head

DATA = Path(__file__).resolve().parent / "data"
RUNS = [DATA / "h200_probe_2026-11-30_fa_jitter.json", DATA / "h200_probe_2026-11-30_fa_jitter_curve.json"]
WAITS = {0: "none", 1: "alike", 2: "each its own"}


def rows(doc: dict) -> list[str]:
    """One markdown row per case: launch | wait | pace spread across heads / over all CTAs | median pace (ns per
    iteration) | span (us) | K/V reads per head."""
    out = []
    for timeline, kernel in zip(doc["timelines"], doc["kernels"]):
        case, records = timeline["case"], timeline["records"]
        across_heads, all_ctas, pace = pace_spread(case, records)
        span_us = (max(r[2] for r in records) - min(r[1] for r in records)) / 1e3
        launch = (f"{'causal, ' if case.get('causal') else ''}{case['seq_len'] // 1024}k, d = {case['head_dim']}, "
                  f"{case['heads']} heads")
        delay = case.get("delay", 0)
        wait = WAITS[delay] + (f", {case['delay_ns']} ns" if delay else "")
        reads = kv_reads_per_head(case, metric_value(kernel, "dram__bytes_read.sum"))
        out.append(f"| {launch} | {wait} | {across_heads:.3f} / {all_ctas:.3f} | {pace:.0f} | {span_us:.0f} | "
                   f"{reads:.2f} |")
    return out


def main() -> int:
    paths = [Path(p) for p in sys.argv[1:]] or RUNS
    print("| launch | CTAs wait | pace spread (same query block / all CTAs) | pace (ns) | span (us) "
          "| K/V reads per head |")
    print("|---|---|---|---|---|---|")
    for path in paths:
        for row in rows(json.loads(path.read_text())):
            print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
