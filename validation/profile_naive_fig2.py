"""Nsight Compute profile of the standard attention the FlashAttention paper's Fig. 2 times (PyTorch eager:
scaled bmm, causal mask added as a broadcast tensor, softmax, dropout 0.1, P V; then its backward), one
forward+backward call at B=4, H=16, N=1024, d=64 bf16. It shows which kernels PyTorch launches and what each
moves and executes per element; kernels/naive.py's Fig. 2 options (mask_pass, dropout_p,
softmax_bwd_premul) and their per-element instruction counts come from it.

    python validation/profile_naive_fig2.py --out validation/data      (needs torch, CUDA and `ncu`)

Writes `h200_profile_<date>_naive_fig2.json`: one row per kernel in launch order (name, grid, block,
registers, duration, DRAM/L2 bytes, instructions per pipe).
"""

from __future__ import annotations

import datetime
import os
import sys

from ncu_profile import parse_raw_csv, profile_args, profile_script, run_cases, write_json

METRICS = ["gpu__time_duration.sum", "dram__bytes_read.sum", "dram__bytes_write.sum", "lts__t_bytes.sum",
           "launch__grid_size", "launch__block_size", "launch__registers_per_thread", "smsp__inst_executed.sum",
           "smsp__inst_executed_pipe_xu.sum", "smsp__inst_executed_pipe_alu.sum", "smsp__inst_executed_pipe_fma.sum",
           "smsp__inst_executed_pipe_lsu.sum", "smsp__inst_executed_pipe_fmaheavy.sum",
           "smsp__inst_executed_pipe_uniform.sum"]
CASE = {"batch": 4, "heads": 16, "seq_len": 1024, "head_dim": 64, "dropout_p": 0.1}


def standard_attention(torch, case):
    """The forward+backward of one call, as the FlashAttention paper's baseline computes it."""
    import torch.nn.functional as F
    b, h, n, d = case["batch"], case["heads"], case["seq_len"], case["head_dim"]
    q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    grad = torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16)
    mask = torch.triu(torch.full((n, n), -10000.0, device="cuda"), 1).to(torch.bfloat16)
    scores = torch.empty(b * h, n, n, device="cuda", dtype=torch.bfloat16)

    def call():
        s = torch.baddbmm(scores, q.reshape(b * h, n, d), k.reshape(b * h, n, d).transpose(1, 2), beta=0,
                          alpha=d ** -0.5).view(b, h, n, n)
        p = F.dropout(torch.softmax(s + mask, -1), case["dropout_p"], training=True)
        torch.matmul(p, v).backward(grad)
    return call


def main() -> int:
    args = profile_args(__doc__)
    if args.driver:
        run_cases([CASE], standard_attention)
        return 0
    done = profile_script(__file__, METRICS, check=True)
    if done is None:
        print("ncu not found", file=sys.stderr)
        return 1
    kernels = parse_raw_csv(done.stdout)
    path = os.path.join(args.out, f"h200_profile_{datetime.date.today()}_naive_fig2.json")
    write_json(path, {"case": CASE, "metrics": METRICS, "kernels": kernels})
    print(f"{len(kernels)} kernels -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
