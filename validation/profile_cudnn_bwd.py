"""Nsight Compute launch shape of cuDNN's fused attention backward (PyTorch SDPA, CUDNN_ATTENTION backend) on an
H200: which kernels the backward call runs, with grid, block, registers, shared memory, duration and DRAM
bytes. The `cudnn` bwd/fwd_bwd validation rows are simulated with FA3's backward schedule; at N = 512-1024 they
are predicted 17-26% fast, and this says what cuDNN's backward really launches there.

    python validation/profile_cudnn_bwd.py --out validation/data      (needs torch, CUDA and `ncu`)

Writes `h200_profile_<date>_cudnn_bwd.json`.
"""

from __future__ import annotations

import sys

from ncu_profile import event_timings, profile_cases_main

METRICS = ["gpu__time_duration.sum", "dram__bytes_read.sum", "dram__bytes_write.sum", "launch__grid_size",
           "launch__block_size", "launch__registers_per_thread", "launch__shared_mem_per_block_dynamic",
           "launch__cluster_dim_x", "smsp__inst_executed.sum", "sm__cycles_active.avg",
           "sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active"]
CASES = [{"batch": b, "heads": h, "seq_len": n, "head_dim": d}
         for (h, d) in ((32, 64), (16, 128)) for (b, n) in ((32, 512), (16, 1024), (4, 4096))]


def cudnn_backward(torch, case):
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    b, h, n, d = case["batch"], case["heads"], case["seq_len"], case["head_dim"]
    q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    grad = torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16)
    with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
        out = F.scaled_dot_product_attention(q, k, v)

    def call():  # the backward only, as the campaign's bwd rows time it
        with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
            return torch.autograd.grad(out, (q, k, v), grad, retain_graph=True)
    return call


def main() -> int:
    def timed() -> dict:
        import torch
        return {"event_timings": event_timings(CASES, cudnn_backward), "torch": torch.__version__}

    status, record = profile_cases_main(__file__, __doc__, "cudnn_bwd", CASES, cudnn_backward, METRICS, timed)
    if record is None:
        return status
    for row in record["event_timings"]:
        print(row["batch"], row["heads"], row["seq_len"], row["head_dim"], f"{row['time_ms_median'] * 1e3:.1f} us")
    for kernel in record["kernels"]:
        print(kernel.get("Kernel Name", "")[:100], kernel.get("launch__grid_size"), kernel.get("launch__block_size"),
              kernel.get("launch__registers_per_thread"), kernel.get("launch__shared_mem_per_block_dynamic"),
              kernel.get("gpu__time_duration.sum"), kernel.get("dram__bytes_read.sum"))
    return status


if __name__ == "__main__":
    sys.exit(main())
