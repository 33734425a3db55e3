"""Which of the H200's two L2 partitions each SM sits beside (run 29).

Builds `probe_l2_sides.cu` with nvcc and runs it: SM 0 (then SM 67) reads 1024 lines that fit in one partition, and
one thread on every SM in turn times a load of each (ld.global.cg). SMs beside the reader's partition find all of
them near; SMs on the other side find about half of them far. Groundwork for a two-partition L2 (run 26: the L2
keeps about 29 MiB of data every SM reads, about 46 MiB of data each SM reads alone).

    python validation/probe_l2_sides.py --out validation/data      (needs nvcc and a CUDA GPU)

Writes `h200_probe_<date>_l2_sides.json`.
"""

from __future__ import annotations

import sys

from ncu_profile import cuda_probe_main

if __name__ == "__main__":
    sys.exit(cuda_probe_main(__doc__, "probe_l2_sides.cu", "l2_sides"))
