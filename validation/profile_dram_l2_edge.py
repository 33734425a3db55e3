"""DRAM reads of long forwards whose one head's K/V is about the L2's size (H200, Nsight Compute; run 47).

cuDNN's forward at 98k tokens, d = 64 streams 25.2 MB of K/V per head, just under the L2's usable capacity: whether a
wave finds the previous wave's K/V still resident decides its DRAM reads, and the campaign measured it at 16 heads
only (2.85 reads per head). The model's exact mode reads 2.94 per head at one head, its folded mode read 1.76 before
the twenty-second session's stack-distance stand-ins and 2.50 after. This profiles SDPA's CUDNN forward at 1 to 8
heads of that shape (run 31 has FLASH's), of d = 128 at 49k tokens (the same 25.2 MB per head) and of d = 64 at 65k
(16.8 MB, well inside the L2), each call its own kernel with the L2 flushed before it (ncu's default cache control),
REPEATS calls per case.

    python validation/profile_dram_l2_edge.py --out validation/data      (needs torch, CUDA and `ncu`)

Writes `h200_profile_<date>_dram_l2_edge.json`.
"""

from __future__ import annotations

import sys

from profile_dram_heads import describe
from profile_dram_repeats import profile_forwards

REPEATS = 2
SHAPES = [("cudnn", 64, 98304), ("cudnn", 128, 49152), ("cudnn", 64, 65536)]
CASES = [{"impl": impl, "batch": 1, "heads": h, "seq_len": n, "head_dim": d, "causal": False, "repeats": REPEATS}
         for impl, d, n in SHAPES for h in (1, 2, 4, 8)]


def main() -> int:
    return profile_forwards(__file__, __doc__, "dram_l2_edge", CASES, describe)


if __name__ == "__main__":
    sys.exit(main())
