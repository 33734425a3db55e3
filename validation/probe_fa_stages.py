"""Does a shallow load pipeline make CTAs fall out of step and re-read K/V? (H200, run 55.)

SDPA's FA2 forward re-reads K/V more than a Triton kernel of its grid and tiles: 7.20 against 4.84 passes per head at
128k tokens, d = 64, 16 heads (runs 31-32), 4.0 against 2.43 causal at 32k, d = 128, 16 heads (runs 42-43), and its
CTAs are taken to drift apart where the Triton kernel's stay in step (runs 32, 45). The Triton kernel loads each
K/V tile two iterations ahead (`num_stages` 2), so an L2 miss costs it no time. FA2 loads V at the top of an iteration
and the next K after S = QK^T, so a miss is partly exposed: a CTA that falls behind the others finds its tiles
evicted, waits for DRAM and falls further behind. Here the same Triton kernel runs with `num_stages` 1 (each tile
loaded where it is used, every miss exposed) beside 2, on those shapes; each recorded call follows an L2 flush, as the
profiled one does. If one stage re-reads as SDPA's kernel does and two do not, exposure to DRAM latency is what
spreads the CTAs.

Triton compiles `tl.dot` on the H200 to Hopper's wgmma, where SDPA's FA2 issues Ampere's mma.sync from every warp.
With DISABLE_MMA_V3=1 in the environment Triton emits mma.sync instead (the output is then
`h200_probe_<date>_fa_stages_mma_sync.json`); the script prints which one each case's PTX holds.

    python validation/probe_fa_stages.py --out validation/data      (needs torch, triton, CUDA and `ncu`)
    DISABLE_MMA_V3=1 python validation/probe_fa_stages.py --out validation/data
    FA_STAGES_SET=d128 DISABLE_MMA_V3=1 python validation/probe_fa_stages.py --out validation/data   (or =tiles)

Writes `h200_probe_<date>_fa_stages[_SET][_mma_sync].json`: per case the DRAM reads and every CTA's (sm, start ns,
end ns); run 55's are kept gzip-compressed (`summarize_fa_stages.py` reads either).
"""

from __future__ import annotations

import os
import sys

from probe_fa_causal import probe
from probe_fa_phases import make_call

#: SDPA's FA2 tiles: 128 x 128 at d = 64, 128 x 64 at d = 128; four warps.
LONG_64 = {"seq_len": 131072, "head_dim": 64, "block_m": 128, "block_n": 128}
CAUSAL_32K = {"seq_len": 32768, "head_dim": 128, "block_m": 128, "block_n": 64, "causal": True}
MMA_SYNC = os.environ.get("DISABLE_MMA_V3") == "1"
CASES = [{**shape, "heads": heads, "stages": stages, "warps": 4, "mma_v3_disabled": MMA_SYNC}
         for shape in (LONG_64, CAUSAL_32K) for heads in (4, 16) for stages in (1, 2)]
#: FA_STAGES_SET=d128: the campaign's long d = 128 shapes at 16 heads (65k, 98k, 128k tokens, SDPA's 128 x 64 tiles)
#: and 128k at one head, two stages: where the model's partners re-read more than SDPA's FA2 (twenty-sixth session).
#: FA_STAGES_SET=tiles: 128k tokens, d = 64 with 64-key tiles (d = 128's tile width) at 16 heads, and SDPA's 128-key
#: tiles at 2 and 8 heads: is it the head size or the tile that stops the partners at d = 128?
CASE_SET = os.environ.get("FA_STAGES_SET", "")
if CASE_SET == "d128":
    CASES = [{"seq_len": n, "head_dim": 128, "block_m": 128, "block_n": 64, "heads": heads, "stages": 2, "warps": 4,
              "mma_v3_disabled": MMA_SYNC} for n, heads in ((65536, 16), (98304, 16), (131072, 16), (131072, 1))]
elif CASE_SET == "tiles":
    CASES = [{**LONG_64, "block_n": block_n, "heads": heads, "stages": 2, "warps": 4, "mma_v3_disabled": MMA_SYNC}
             for block_n, heads in ((64, 16), (128, 2), (128, 8))]


def label(case: dict) -> str:
    causal = " causal" if case.get("causal") else ""
    return (f"H={case['heads']} N={case['seq_len']} d={case['head_dim']}{causal} {case['block_m']}x{case['block_n']} "
            f"stages={case['stages']}{' mma.sync' if case.get('mma_v3_disabled') else ''}:")


def print_mma_instructions() -> None:
    """Which tensor-core instruction each case's kernel holds (from its PTX), at a quarter of its heads."""
    import torch
    for case in CASES:
        call = make_call(torch, {**case, "heads": 1})
        call()
        torch.cuda.synchronize()
        ptx = call.compiled.asm["ptx"]
        kinds = [kind for kind in ("wgmma", "mma.sync") if kind in ptx]
        print(label(case), "tensor-core instructions in the PTX:", ", ".join(kinds) or "none", flush=True)


if __name__ == "__main__":
    if "--driver" not in sys.argv:
        print_mma_instructions()
    name = "fa_stages" + (f"_{CASE_SET}" if CASE_SET else "") + ("_mma_sync" if MMA_SYNC else "")
    sys.exit(probe(__file__, __doc__, CASES, name, flush_l2=True, label=label))
