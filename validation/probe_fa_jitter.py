"""Do CTAs that run at different paces re-read K/V from DRAM that CTAs in step keep in L2? (H200, run 45.)

SDPA's causal FA2 forward reads each head's K/V 1.4-1.7 times as often as the Triton kernel of the same shape
(probe_fa_causal.py, runs 42-44) at 32k tokens, and run 32 found the non-causal version of that kernel keeping its
CTAs in step (SDPA's cannot be recorded). Here the same Triton kernel spins on the clock before every K/V iteration:
by the same time in every CTA (`delay` 1: slower, still in step), or by a time spread evenly over [0, 2 x delay_ns)
by a hash of the CTA's index modulo 1024 (`delay` 2: the same mean, CTAs at different paces; at 128k tokens every
head's CTA at one query block waits alike). If pace differences add re-reads beyond what slowness does, the second
reads more K/V per head than the first. Each recorded call follows an L2 flush, as the profiled one does. The spin
costs 435-570 ns per iteration even for a 50 ns wait (run 46), so every waiting launch is also slowed alike.

    python validation/probe_fa_jitter.py --out validation/data      (needs torch, triton, CUDA and `ncu`)

Writes `h200_probe_<date>_fa_jitter.json`: per case the DRAM reads and every CTA's (sm, start ns, end ns).
"""

from __future__ import annotations

import sys

from probe_fa_causal import probe

CAUSAL_32K = {"seq_len": 32768, "head_dim": 128, "block_m": 128, "block_n": 64, "causal": True}
LONG_64 = {"heads": 4, "seq_len": 131072, "head_dim": 64, "block_m": 128, "block_n": 128}
CASES = ([{**CAUSAL_32K, "heads": 4, "delay": delay, "delay_ns": ns}
          for delay, ns in ((0, 0), (1, 1000), (2, 1000), (2, 300))]
         + [{**CAUSAL_32K, "heads": 8, "delay": delay, "delay_ns": ns} for delay, ns in ((0, 0), (2, 1000))]
         + [{**LONG_64, "delay": delay, "delay_ns": ns} for delay, ns in ((0, 0), (1, 1000), (2, 1000))])
CASES = [{**case, "warps": 4, "stages": 2} for case in CASES]

if __name__ == "__main__":
    sys.exit(probe(__file__, __doc__, CASES, "fa_jitter", flush_l2=True))
