"""Where a backward CTA's fixed cycles go on an H200: SDPA's FLASH (FA2) and CUDNN backwards launched as exactly one
and two waves, at loops of 4 to 264 iterations (Nsight Compute cycles and warp stalls, CUDA-event times).

Run 38 (profile_bwd_sizes.py) suggests FA2's main backward kernel at d = 128 spends about 10k cycles per CTA beyond
its loop (from its many-wave launches), and cuDNN's about 200k cycles per launch. Here one wave is 132 CTAs
(FA2: one per SM, K/V blocks of 128 keys; cuDNN: 132 tiles of 64 keys, meant for its 132 persistent CTAs, though it
turned out to run them as 66 CTAs of 128 keys: validation/README.md run 39), so the main kernel's cycles against its
iterations give one CTA's fixed part without tail or wave effects; two waves (264 CTAs) add what starting a second
CTA on an SM costs. Batch 1, H heads of N tokens with H x N fixed.

    python validation/profile_bwd_waves.py --out validation/data      (needs torch, CUDA and `ncu`)

Writes `h200_profile_<date>_bwd_waves.json`: per profiled kernel (in case order; a case's last kernel is its dQ
conversion) its launch shape, duration, SM cycles, tensor-pipe activity, shared-memory wavefronts, DRAM bytes and
warp stall shares; then the same cases timed without the profiler.
"""

from __future__ import annotations

import sys

from profile_bwd_sizes import sdpa_backward
from profile_kernel_cycles import METRICS as CYCLE_METRICS, profile_cycles_main, sdpa_case

STALLS = ("long_scoreboard", "short_scoreboard", "barrier", "wait", "membar", "drain", "no_instruction",
          "lg_throttle", "mio_throttle", "math_pipe_throttle", "selected", "not_selected")
METRICS = CYCLE_METRICS + ["dram__bytes_read.sum", "dram__bytes_write.sum", "sm__ctas_launched.max"] + \
    [f"smsp__warp_issue_stalled_{s}_per_warp_active.pct" for s in STALLS]
#: tokens x heads of one wave: 132 K/V blocks of 128 keys (FA2's backward CTA) or of 64 keys (cuDNN's tile)
WAVE = {"flash": 132 * 128, "cudnn": 132 * 64}
HEADS = (1, 2, 4, 11, 33)
CASES = [sdpa_case(backend, 1, heads * waves, WAVE[backend] // heads, d)
         for backend in ("flash", "cudnn") for d in (64, 128) for waves in (1, 2) for heads in HEADS]


def main() -> int:
    return profile_cycles_main(__file__, __doc__, "bwd_waves", CASES, METRICS,
                               "sm__ctas_launched.max", "smsp__warp_issue_stalled_long_scoreboard_per_warp_active.pct",
                               "smsp__warp_issue_stalled_barrier_per_warp_active.pct",
                               make_callable=sdpa_backward)


if __name__ == "__main__":
    sys.exit(main())
