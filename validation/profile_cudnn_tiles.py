"""Nsight Compute launch shape of cuDNN's fused attention forward (PyTorch SDPA, CUDNN_ATTENTION backend) on
an H200: grid and block size tell how many query rows one CTA takes and how many warpgroups it runs, which the
kernel's name (..._64x128x{d}_4x1x1) leaves open. The `cudnn` validation rows are simulated with FA3's schedule;
this says which tile to give it.

    python validation/profile_cudnn_tiles.py --out validation/data      (needs torch, CUDA and `ncu`)

Writes `h200_profile_<date>_cudnn_tiles.json`: per case the kernels with grid, block, registers, shared memory,
duration, DRAM and L2 bytes.
"""

from __future__ import annotations

import sys

from ncu_profile import profile_cases_main

METRICS = ["gpu__time_duration.sum", "dram__bytes_read.sum", "lts__t_bytes.sum", "launch__grid_size",
           "launch__block_size", "launch__registers_per_thread", "launch__shared_mem_per_block_dynamic",
           "launch__cluster_dim_x", "sm__warps_active.avg.pct_of_peak_sustained_active"]
CASES = [{"batch": 1, "heads": 16, "seq_len": n, "head_dim": d, "causal": causal}
         for d in (64, 128) for n in (1024, 2048, 8192) for causal in (False,)] + \
        [{"batch": 1, "heads": 16, "seq_len": 2048, "head_dim": 64, "causal": True},
         {"batch": 2, "heads": 8, "seq_len": 4096, "head_dim": 256, "causal": False}]


def cudnn_forward(torch, case):
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    b, h, n, d = case["batch"], case["heads"], case["seq_len"], case["head_dim"]
    q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))

    def call():
        with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
            F.scaled_dot_product_attention(q, k, v, is_causal=case["causal"])
    return call


def main() -> int:
    status, record = profile_cases_main(__file__, __doc__, "cudnn_tiles", CASES, cudnn_forward, METRICS)
    for kernel in (record or {}).get("kernels", []):
        print(kernel.get("Kernel Name", "")[:90], kernel.get("Grid Size"), kernel.get("Block Size"),
              kernel.get("launch__grid_size"), kernel.get("launch__block_size"),
              kernel.get("launch__registers_per_thread"), kernel.get("gpu__time_duration.sum"))
    return status


if __name__ == "__main__":
    sys.exit(main())
