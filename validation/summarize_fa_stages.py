"""Run 55's tables (validation/README.md, twenty-sixth session) from its data: per case, the tensor-core instruction
and load stages, the K/V reads per head, how far apart the CTAs that share an SM start, the pace spread, and the
wave-by-wave start phases; with --by-wave, each non-causal case's mean partner offset wave by wave, the figure the
model's folded mode measures over its simulated waves (steady_state.WaveMeter.partner_offset) and
validation/model_partner_offsets.py prints for the model.

    python validation/summarize_fa_stages.py [--by-wave] [DATA.json[.gz] ...]   (default: run 55's first two files)
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

from ncu_profile import metric_value
from probe_fa_phases import pace_spread, summarize
from profile_dram_heads import kv_reads_per_head

DATA = Path(__file__).resolve().parent / "data"
#: Run 55's calls (gzip-compressed as written by probe_fa_stages.py, to keep the repository small).
RUNS = [DATA / f"h200_probe_2026-12-01_fa_stages{suffix}.json.gz" for suffix in ("", "_mma_sync")]
#: Waves whose start phases are printed (those the launch has).
WAVES = (3, 7, 11, 14, 31, 61)


def rows(doc: dict) -> list[str]:
    """One markdown row per case: launch | instruction, stages | K/V reads per head | partner gap (90th percentile,
    CTA durations) | pace spread across heads | start phases (10th / 90th percentile) at some waves."""
    out = []
    for timeline, kernel in zip(doc["timelines"], doc["kernels"]):
        case, records = timeline["case"], timeline["records"]
        across_heads = pace_spread(case, records)[0] if case["heads"] > 1 else float("nan")  # across heads
        shape = summarize(records)
        launch = (f"{'causal, ' if case.get('causal') else ''}{case['seq_len'] // 1024}k, d = {case['head_dim']}, "
                  f"{case['heads']} heads")
        instruction = "mma.sync" if case.get("mma_v3_disabled") else "wgmma"
        reads = kv_reads_per_head(case, metric_value(kernel, "dram__bytes_read.sum"))
        phases = " ".join(f"{w['wave']}: {w['p10']:+.2f} / {w['p90']:+.2f}" for w in shape["waves"]
                          if w["wave"] in WAVES)
        out.append(f"| {launch} | {instruction}, {case['stages']} | {reads:.2f} | {shape['partner_gap']['p90']:.3f} | "
                   f"{across_heads:.3f} | {phases} |")
    return out


def partner_offsets_by_wave(records: list, ctas_per_sm: int = 2) -> list[float]:
    """Per wave k (each SM's k-th group of `ctas_per_sm` starts), the mean over SMs of how far its partners start
    apart, in CTA durations folded to [0, 1/2] (0: in step, 1/2: each halfway through the other), as
    WaveMeter.partner_offset measures the model's; waves that fewer than half the SMs reach are left out."""
    duration = sorted(end - start for _, start, end in records)[len(records) // 2]
    starts_by_sm: dict = {}
    for sm, start, _ in records:
        starts_by_sm.setdefault(sm, []).append(start)
    for starts in starts_by_sm.values():
        starts.sort()
    offsets = []
    for wave in range(max(len(s) for s in starts_by_sm.values()) // ctas_per_sm):
        gaps = []
        for starts in starts_by_sm.values():
            if (wave + 1) * ctas_per_sm <= len(starts):
                gap = (starts[wave * ctas_per_sm + 1] - starts[wave * ctas_per_sm]) / duration % 1.0
                gaps.append(min(gap, 1.0 - gap))
        if len(gaps) < len(starts_by_sm) / 2:
            break
        offsets.append(sum(gaps) / len(gaps))
    return offsets


def by_wave_rows(doc: dict) -> list[str]:
    """One line per non-causal case: its instruction, stages, K/V tile and the mean partner offset at waves 0-15."""
    out = []
    for timeline in doc["timelines"]:
        case = timeline["case"]
        if case.get("causal"):
            continue
        instruction = "mma.sync" if case.get("mma_v3_disabled") else "wgmma"
        offsets = " ".join(f"{o:.3f}" for o in partner_offsets_by_wave(timeline["records"])[:16])
        out.append(f"{case['seq_len'] // 1024}k, d = {case['head_dim']}, {case['heads']} heads, {instruction}, "
                   f"{case['stages']} stages, {case.get('block_n', '?')}-key tiles: {offsets}")
    return out


def main() -> int:
    by_wave = "--by-wave" in sys.argv[1:]
    paths = [Path(p) for p in sys.argv[1:] if p != "--by-wave"] or RUNS
    if by_wave:
        for path in paths:
            for row in by_wave_rows(json.loads(gzip.open(path, "rt").read() if path.suffix == ".gz"
                                               else path.read_text())):
                print(row)
        return 0
    print("| launch | instruction, stages | K/V reads per head | partner gap p90 | pace spread | start phases by "
          "wave |")
    print("|---|---|---|---|---|---|")
    for path in paths:
        text = gzip.open(path, "rt").read() if path.suffix == ".gz" else path.read_text()
        for row in rows(json.loads(text)):
            print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
