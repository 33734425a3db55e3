"""How K/V re-reads grow with the spread of CTA paces (H200, run 46): run 45's Triton forwards
(probe_fa_jitter.py) with each CTA waiting a time of its own before every K/V iteration, at small mean waits, so that
a model of pace differences can be checked against a curve rather than two points.

    python validation/probe_fa_jitter_curve.py --out validation/data      (needs torch, triton, CUDA and `ncu`)

Writes `h200_probe_<date>_fa_jitter_curve.json`: per case the DRAM reads and every CTA's (sm, start ns, end ns).
"""

from __future__ import annotations

import sys

from probe_fa_causal import probe
from probe_fa_jitter import CAUSAL_32K, LONG_64

CASES = ([{**CAUSAL_32K, "heads": 4, "delay": delay, "delay_ns": ns}
          for delay, ns in ((0, 0), (2, 50), (2, 100), (2, 200))]
         + [{**CAUSAL_32K, "heads": 8, "delay": 2, "delay_ns": 300}]
         + [{**LONG_64, "delay": 2, "delay_ns": ns} for ns in (50, 100, 200, 300)])
CASES = [{**case, "warps": 4, "stages": 2} for case in CASES]

if __name__ == "__main__":
    sys.exit(probe(__file__, __doc__, CASES, "fa_jitter_curve", flush_l2=True))
