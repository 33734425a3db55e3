"""When each CTA of a long causal FlashAttention-style forward starts and ends, and what it reads (H200, run 43).

Run 42 found SDPA's causal FA2 forward at 32k tokens, d = 128, reading each head's K/V 1.0 / 1.4 / 2.4-2.9 / 3.8 / 4.0
times at 1 / 2 / 4 / 8 / 16 heads (12.5 times at 128k, d = 64, 4 heads), while cuDNN's causal forward reads it once
and the model 1.0-1.6 times. SDPA's kernel cannot be instrumented, so this runs a causal forward of FA2's shape
written here in Triton (probe_fa_phases.py's kernel: 128 query rows per CTA, grid of query blocks, then heads; each
CTA walks K/V from its own diagonal tile down to the first, masking the keys past its rows), whose CTAs record
`%smid` and `%globaltimer` at their start and end, and Nsight Compute measures the same kernel's DRAM reads. If this
kernel re-reads as FA2 does, its records give the schedule that does it.

    python validation/probe_fa_causal.py --out validation/data      (needs torch, triton, CUDA and `ncu`)

Writes `h200_probe_<date>_fa_causal.json`: per case the DRAM reads and every CTA's (sm, start ns, end ns).
"""

from __future__ import annotations

import sys

from ncu_profile import profile_args, run_cases
from probe_fa_phases import make_call, profile_and_write, recorded_calls

#: FA2's tiles: 128 x 64 at d = 128, 128 x 128 at d = 64; two stages, four warps.
CASES = ([{"heads": h, "seq_len": 32768, "head_dim": 128, "block_m": 128, "block_n": 64} for h in (1, 2, 4, 16)]
         + [{"heads": h, "seq_len": 131072, "head_dim": 64, "block_m": 128, "block_n": 128} for h in (1, 4)])
CASES = [{**case, "warps": 4, "stages": 2, "causal": True} for case in CASES]


def label(case: dict) -> str:
    delay = f" delay {case['delay']} {case['delay_ns']} ns" if case.get("delay") else ""
    return f"H={case['heads']} N={case['seq_len']} d={case['head_dim']} {case['block_m']}x{case['block_n']}{delay}:"


def probe(script: str, doc: str, cases: list, name: str, flush_l2: bool = False, label=label) -> int:
    """The command line of a causal probe: every case's CTA records, then its DRAM reads under Nsight Compute;
    writes h200_probe_<date>_<name>.json. `flush_l2`: record the schedule of a call after an L2 flush, as the
    profiled call runs, rather than of one after a warm-up call. `label(case)` names a case in the printout."""
    args = profile_args(doc)
    if args.driver:
        run_cases(cases, make_call)
        return 0
    import torch
    timelines = []
    for case in cases:
        (records,), error = recorded_calls(torch, case, 1, flush_l2=flush_l2)
        t0 = min(r[1] for r in records)
        span_us = (max(r[2] for r in records) - t0) / 1e3
        print(label(case), f"max |error| {error:.4f}, {len(records)} CTAs on {len({r[0] for r in records})} SMs,",
              f"{span_us:.0f} us", flush=True)
        timelines.append({"case": case, "max_abs_error": error, "records": records, "l2_flushed": flush_l2})
    return profile_and_write(script, cases, label, args.out, name, timelines)


if __name__ == "__main__":
    sys.exit(probe(__file__, __doc__, CASES, "fa_causal"))
