"""Load-to-use latency of dependent loads on an H200, per memory level (run 22).

Builds `probe_latency.cu` with nvcc and runs it: one thread chases pointers through 128-byte lines in random order
(L1 over 32 KiB, L2 over 1-32 MiB with ld.global.cg, HBM over 1 GiB). The model's `l2_hit_latency_cycles` is this
L2 latency.

    python validation/probe_latency.py --out validation/data      (needs nvcc and a CUDA GPU)

Writes `h200_probe_<date>_latency.json`.
"""

from __future__ import annotations

import sys

from ncu_profile import cuda_probe_main

if __name__ == "__main__":
    sys.exit(cuda_probe_main(__doc__, "probe_latency.cu", "latency"))
