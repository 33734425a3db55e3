"""Run 44: probe_fa_causal.py's Triton causal forward on the shapes of run 42's other gated rows (H200).

Run 42's SDPA FA2 rows past 25% are FA2's causal forward at 32k tokens, d = 128, with 4, 8 and 16 heads, and at 16k
with 16 and 32 heads; run 43 probed 1, 2, 4 and 16 heads at 32k. This probes 8 heads at 32k and 4, 16 and 32 at 16k
with the same kernel (and 4 at 32k again), each schedule recorded from a call after an L2 flush (run 43's came from a
call after a warm-up call), so that an L2 model can be judged on more of the walks that the gated rows make.

    python validation/probe_fa_causal_more.py --out validation/data      (needs torch, triton, CUDA and `ncu`)

Writes `h200_probe_<date>_fa_causal_more.json`, as probe_fa_causal.py writes its own.
"""

from __future__ import annotations

import sys

from probe_fa_causal import probe

#: FA2's tiles at d = 128 (128 x 64; two stages, four warps): 32k tokens at 4 (run 43's case, now after a flush) and 8
#: heads, 16k at 4, 16 and 32.
CASES = ([{"heads": h, "seq_len": 32768} for h in (4, 8)] + [{"heads": h, "seq_len": 16384} for h in (4, 16, 32)])
CASES = [{**case, "head_dim": 128, "block_m": 128, "block_n": 64, "warps": 4, "stages": 2, "causal": True}
         for case in CASES]

if __name__ == "__main__":
    sys.exit(probe(__file__, __doc__, CASES, "fa_causal_more", flush_l2=True))
