"""Nsight Compute launch shape of the campaign's own Triton split-K decode kernel (validation/measure_h200.py,
`decode_attn_kernel` with SPLIT=True) on an H200: shared memory, registers, the occupancy limits (how many CTAs
fit on an SM), duration and DRAM bytes. The model gives this kernel's CTA a 3-stage K/V ring (2 CTAs per SM);
whether the compiled kernel fits 2 or 3 decides whether a 1.2-wave launch has a tail wave at all.

    python validation/profile_triton_decode.py --out validation/data      (needs torch, triton, CUDA and `ncu`)

Writes `h200_profile_<date>_triton_decode.json`.
"""

from __future__ import annotations

import sys

from ncu_profile import profile_cases_main

METRICS = ["gpu__time_duration.sum", "dram__bytes_read.sum", "launch__grid_size", "launch__block_size",
           "launch__registers_per_thread", "launch__shared_mem_per_block_dynamic",
           "launch__shared_mem_per_block_static", "launch__occupancy_limit_shared_mem",
           "launch__occupancy_limit_registers", "launch__occupancy_limit_warps", "launch__waves_per_multiprocessor",
           "sm__warps_active.avg.pct_of_peak_sustained_active", "sm__cycles_active.avg"]
CASES = [{"batch": 8, "kv_len": 65536}, {"batch": 16, "kv_len": 65536}, {"batch": 8, "kv_len": 16384}]


def splitk_decode(torch, case):
    import measure_h200
    measure_h200.import_gpu()  # its torch/triton globals
    return measure_h200.make_decode(case["batch"], case["kv_len"], 132)["splitk"]


def main() -> int:
    status, record = profile_cases_main(__file__, __doc__, "triton_decode", CASES, splitk_decode, METRICS)
    for kernel in (record or {}).get("kernels", []):
        print(kernel.get("Kernel Name", "")[:40], kernel.get("launch__grid_size"), kernel.get("launch__block_size"),
              kernel.get("launch__registers_per_thread"), kernel.get("launch__shared_mem_per_block_dynamic"),
              kernel.get("launch__occupancy_limit_shared_mem"), kernel.get("launch__occupancy_limit_registers"),
              kernel.get("launch__waves_per_multiprocessor"), kernel.get("gpu__time_duration.sum"))
    return status


if __name__ == "__main__":
    sys.exit(main())
