"""Whether an L2 eviction-priority hint keeps a working set in the H200's L2 against streaming traffic (run 48).

Builds `probe_l2_evict.cu` with nvcc and runs it: from a clean L2, a buffer of 16-32 MiB (one head's K/V near the
L2's size) is read with a normal or an evict-last L2 policy, then 0-128 MiB of other data with a normal or
evict-first one, then the buffer again, timed. `kept` is the share of the buffer the L2 kept, from the re-read's time
between the all-hit and all-miss references (a timing inference: it scatters by about 0.2-0.4 at 24-32 MiB; at 16
MiB the references are too close to read). Evict-last cases run with the persisting-L2 limit at its default and at
its maximum. FlashAttention-3's Hopper kernels load K and V with an evict-last hint; the model's L2 has no
priorities, and re-reads more than the GPU where one head's K/V is about the L2's size (run 47).

    python validation/probe_l2_evict.py --out validation/data      (needs nvcc and a CUDA GPU)

Writes `h200_probe_<date>_l2_evict.json`.
"""

from __future__ import annotations

import sys

from ncu_profile import cuda_probe_main

if __name__ == "__main__":
    sys.exit(cuda_probe_main(__doc__, "probe_l2_evict.cu", "l2_evict"))
