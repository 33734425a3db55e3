"""How a causal forward's DRAM reads grow with the heads it runs (H200, Nsight Compute).

The campaign's causal FA2 forward at 32k tokens, d = 128 and 16 heads reads 1.20 GB, three times its Q, K and V,
where the model (folded or exact) reads 0.72-0.83 GB. A causal CTA walks K/V from its own diagonal down, so the CTAs
running together read a head's K/V in a wavefront rather than in step, and its longest CTAs still walk one head
while the next head's CTAs start. This profiles SDPA's FLASH (FA2) and CUDNN causal forwards at 1 to 32 heads of
one sequence, each call its own kernel with the L2 flushed before it (ncu's default cache control), REPEATS calls
per case, as run 31 (profile_dram_heads.py) did for the non-causal ones.

    python validation/profile_dram_causal_heads.py --out validation/data      (needs torch, CUDA and `ncu`)

Writes `h200_profile_<date>_dram_causal_heads.json`.
"""

from __future__ import annotations

import sys

from profile_dram_heads import describe
from profile_dram_repeats import profile_forwards

REPEATS = 2
#: (backend, head dim, tokens, head counts): one head's K and V are 4 N d bytes, 16 MiB at d = 128 and 32k tokens.
SHAPES = [("flash", 128, 32768, (1, 2, 4, 8, 16)), ("flash", 128, 16384, (4, 16, 32)),
          ("flash", 64, 65536, (1, 4, 16)), ("flash", 64, 131072, (1, 4)), ("cudnn", 128, 32768, (1, 4, 8))]
CASES = [{"impl": impl, "batch": 1, "heads": h, "seq_len": n, "head_dim": d, "causal": True, "repeats": REPEATS}
         for impl, d, n, heads in SHAPES for h in heads]


def main() -> int:
    return profile_forwards(__file__, __doc__, "dram_causal_heads", CASES, describe)


if __name__ == "__main__":
    sys.exit(main())
