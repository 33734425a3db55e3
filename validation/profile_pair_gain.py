"""What a second co-resident CTA adds to FA2's forward on an H200 (Nsight Compute cycles, CUDA-event times).

SDPA's FLASH (FA2) forward, batch 1, d = 64 and 128, at 1-3 heads of N = 132 x 128 = 16896 tokens (132 query blocks
of 128 rows per head) and of twice that. At 16896 tokens one head is 132 CTAs, one per SM, and two heads are 264, two
per SM (as many as fit), each CTA with the same work: the two-head kernel's cycles over the one-head kernel's say how
much a second CTA adds to an SM, 2.0 if the two CTAs' work serializes, 1.0 if the second one is free. Three heads
are a wave and a tail; at 33792 tokens every case runs two CTAs per SM. The model's answer depends on how it shares
an SM's units between co-resident CTAs (HardwareSpec.oldest_cta_issue_share, validation/README.md, sixteenth
session). `sm__ctas_launched` counts the CTAs each SM ran (min and max over the SMs), which shows the placement.

    python validation/profile_pair_gain.py --out validation/data      (needs torch, CUDA and `ncu`)

Writes `h200_profile_<date>_pair_gain.json`: per profiled kernel (in case order) its launch shape, duration, SM
cycles and CTAs per SM; then the same cases timed without the profiler (CUDA events, median of 20 calls).
"""

from __future__ import annotations

import sys

from profile_kernel_cycles import METRICS as CYCLE_METRICS, profile_cycles_main, sdpa_case

METRICS = CYCLE_METRICS + ["sm__ctas_launched.max", "sm__ctas_launched.min", "sm__ctas_launched.sum"]
SEQ_LEN_ONE_CTA_PER_SM = 132 * 128  # one head: one 128-row query block per SM
CASES = [sdpa_case("flash", 1, heads, n, d) for d in (64, 128)
         for n in (SEQ_LEN_ONE_CTA_PER_SM, 2 * SEQ_LEN_ONE_CTA_PER_SM) for heads in (1, 2, 3)]


def main() -> int:
    return profile_cycles_main(__file__, __doc__, "pair_gain", CASES, METRICS, "sm__ctas_launched.min",
                               "sm__ctas_launched.max")


if __name__ == "__main__":
    sys.exit(main())
