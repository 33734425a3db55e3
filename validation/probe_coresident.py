"""How far two CTAs that share an H200 SM fall out of step (run 30).

Builds `probe_coresident.cu` with nvcc and runs it: eight waves of equal CTAs, two per SM (100 KiB of SMEM each),
each a loop of WMMA bf16 MMAs with 0, 8 or 32 exps per step, recording its SM and start and end times. FA2's DRAM
reads at d = 64 and 128k tokens fit co-resident CTAs half a CTA apart; the model's, with the older CTA taking 0.6
of a contended unit (the preset until the sixteenth session), ended 0.25-0.3 apart (validation/README.md, twelfth
session).

    python validation/probe_coresident.py --out validation/data      (needs nvcc and a CUDA GPU)

Writes `h200_probe_<date>_coresident.json`.
"""

from __future__ import annotations

import sys

from ncu_profile import cuda_probe_main

if __name__ == "__main__":
    sys.exit(cuda_probe_main(__doc__, "probe_coresident.cu", "coresident"))
