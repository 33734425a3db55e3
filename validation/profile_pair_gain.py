"""What a second co-resident CTA adds to FA2's forward on an H200 (Nsight Compute cycles, CUDA-event times).

SDPA's FLASH (FA2) forward at batch 1 and N = 132 x 128 keys: one head is 132 CTAs, one per SM; two heads are 264,
two per SM, each CTA with the same work. The second head's time over the first's says how much the SM gains from
a second CTA: 2.0 if the two CTAs' work serializes, 1.0 if the second one is free. The model's answer depends on
how it shares an SM's units between co-resident CTAs (HardwareSpec.oldest_cta_issue_share, validation/README.md,
sixteenth session). `sm__ctas_launched` per SM checks the placement (one CTA on every SM, then two).

    python validation/profile_pair_gain.py --out validation/data      (needs torch, CUDA and `ncu`)

Writes `h200_profile_<date>_pair_gain.json`: per profiled kernel (in case order) its launch shape, duration, SM
cycles and CTAs per SM; then the same cases timed without the profiler (CUDA events, median of 20 calls).
"""

from __future__ import annotations

import sys

from ncu_profile import event_timings, profile_cases_main
from profile_kernel_cycles import METRICS as CYCLE_METRICS, _case, _num, sdpa_forward

METRICS = CYCLE_METRICS + ["sm__ctas_launched.max", "sm__ctas_launched.min", "sm__ctas_launched.sum"]
KEYS = 132 * 128  # one 128-row query block per SM per head
CASES = [_case("flash", 1, heads, n, d) for d in (64, 128) for n in (KEYS, 2 * KEYS) for heads in (1, 2, 3)]


def main() -> int:
    def timed() -> dict:
        import torch
        return {"event_timings": event_timings(CASES, sdpa_forward), "torch": torch.__version__,
                "device": torch.cuda.get_device_name(0)}

    status, record = profile_cases_main(__file__, __doc__, "pair_gain", CASES, sdpa_forward, METRICS, timed)
    if record is None:
        return status
    for row in record["event_timings"]:
        print(row["backend"], row["batch"], row["heads"], row["seq_len"], row["head_dim"],
              f"{row['time_ms_median'] * 1e3:.1f} us")
    for kernel in record["kernels"]:
        cycles, ns = _num(kernel.get("sm__cycles_active.max")), _num(kernel.get("gpu__time_duration.sum"))
        ghz = f"{cycles / ns:.3f} GHz" if cycles and ns else "-"
        print(kernel.get("Kernel Name", "")[:40], kernel.get("Grid Size"), kernel.get("gpu__time_duration.sum"),
              kernel.get("sm__cycles_active.max"), ghz, "CTAs per SM", kernel.get("sm__ctas_launched.min"),
              "-", kernel.get("sm__ctas_launched.max"))
    return status


if __name__ == "__main__":
    sys.exit(main())
