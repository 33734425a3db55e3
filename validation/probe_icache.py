"""Instruction fetch on an H200 (runs 23 and 36): cycles per instruction of large straight-line code bodies.

Builds `probe_icache.cu` with nvcc and runs it. Straight-line FFMA bodies of 2-128 KiB run in a loop, by 2 or 4
warpgroups per SM, all the same body or two different bodies (even and odd warpgroups); it prints the cycles per warp
instruction per SM sub-partition (1.0: one issue per cycle). Then (`loop_and_stream`) one warpgroup loops over a small
body while the other streams through a long one, each warpgroup's cycles per warp instruction on its own (2.0: full
rate with two warps per sub-partition).

    python validation/probe_icache.py --out validation/data      (needs nvcc and a CUDA GPU)

Writes `h200_probe_<date>_icache.json`.
"""

from __future__ import annotations

import sys

from ncu_profile import cuda_probe_main

if __name__ == "__main__":
    sys.exit(cuda_probe_main(__doc__, "probe_icache.cu", "icache"))
