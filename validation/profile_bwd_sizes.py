"""Nsight Compute cycles of SDPA's fused attention backwards on an H200 across sequence lengths: FLASH (FA2's
backward, five kernels with PyTorch's two layout copies) and CUDNN (three kernels), d = 64 (32 heads) and d = 128
(16 heads), N = 512 to 16384 at batch x N = 16384 tokens, causal and not: the campaign's backward shapes. Every
case runs the same number of CTAs of FA2's main kernel with loops growing with N, so the cycles against N split each
kernel into a fixed part and a per-iteration part (validation/README.md run 38).

    python validation/profile_bwd_sizes.py --out validation/data      (needs torch, CUDA and `ncu`)

Writes `h200_profile_<date>_bwd_sizes.json`: per profiled kernel (in case order; a case's last kernel is its dQ
conversion) its launch shape, duration, SM cycles, tensor-pipe activity and shared-memory wavefronts; then the same
cases timed without the profiler (CUDA events, median of 20 calls).
"""

from __future__ import annotations

import sys

from profile_kernel_cycles import METRICS, profile_cycles_main, sdpa_case

TOKENS = 16384
HEADS_OF_DIM = {64: 32, 128: 16}
CASES = [sdpa_case(backend, TOKENS // n, HEADS_OF_DIM[d], n, d, causal)
         for backend in ("flash", "cudnn") for d in (64, 128) for causal in (False, True)
         for n in (512, 1024, 2048, 4096, 8192, 16384)]


def sdpa_backward(torch, case):
    """The backward only (`torch.autograd.grad` of an SDPA output, retain_graph), as the campaign's bwd rows time it."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    backend = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}[case["backend"]]
    b, h, n, d = case["batch"], case["heads"], case["seq_len"], case["head_dim"]
    q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    grad = torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16)
    with sdpa_kernel([backend]):
        out = F.scaled_dot_product_attention(q, k, v, is_causal=case["causal"])

    def call():
        with sdpa_kernel([backend]):
            return torch.autograd.grad(out, (q, k, v), grad, retain_graph=True)
    return call


def main() -> int:
    return profile_cycles_main(__file__, __doc__, "bwd_sizes", CASES, METRICS,
                               "sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active",
                               make_callable=sdpa_backward)


if __name__ == "__main__":
    sys.exit(main())
