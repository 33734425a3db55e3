"""How one SM's DRAM load bandwidth grows with the CTAs it holds, for cp.async and register loads (issue #8).

Builds `probe_sm_share.cu` with nvcc and runs it. On one SM, 1 to 4 CTAs stream their own regions (every other
CTA of the launch exits at once): cp.async rings of 2 x 32 KiB or 3 x 16 KiB (128 or 256 threads), and register
loads (256 or 1024 threads). It prints each case's time per round and the SM's and each CTA's GB/s.

    python validation/probe_sm_share.py --out validation/data      (needs nvcc and a CUDA GPU)

Writes `h200_probe_<date>_sm_share.json`.
"""

from __future__ import annotations

import sys

from ncu_profile import cuda_probe_main

if __name__ == "__main__":
    sys.exit(cuda_probe_main(__doc__, "probe_sm_share.cu", "sm_share"))
