"""When each CTA of a long causal FlashAttention-style forward starts and ends, and what it reads (H200, run 43).

Run 42 found SDPA's causal FA2 forward at 32k tokens, d = 128, reading each head's K/V 1.0 / 1.4 / 2.4-2.9 / 3.8 / 4.0
times at 1 / 2 / 4 / 8 / 16 heads (12.5 times at 128k, d = 64, 4 heads), while cuDNN's causal forward reads it once
and the model 1.0-1.6 times. SDPA's kernel cannot be instrumented, so this runs a causal forward of FA2's shape
written here in Triton (probe_fa_phases.py's kernel: 128 query rows per CTA, grid of query blocks, then heads; each
CTA walks K/V from its own diagonal tile down to the first, masking the keys past its rows), whose CTAs record
`%smid` and `%globaltimer` at their start and end, and Nsight Compute measures the same kernel's DRAM reads. If this
kernel re-reads as FA2 does, its records give the schedule that does it.

    python validation/probe_fa_causal.py --out validation/data      (needs torch, triton, CUDA and `ncu`)

Writes `h200_probe_<date>_fa_causal.json`: per case the DRAM reads and every CTA's (sm, start ns, end ns).
"""

from __future__ import annotations

import sys

from ncu_profile import profile_args, run_cases
from probe_fa_phases import profile_and_write, timer_functions

#: FA2's tiles: 128 x 64 at d = 128, 128 x 128 at d = 64; two stages, four warps.
CASES = ([{"heads": h, "seq_len": 32768, "head_dim": 128, "block_m": 128, "block_n": 64} for h in (1, 2, 4, 16)]
         + [{"heads": h, "seq_len": 131072, "head_dim": 64, "block_m": 128, "block_n": 128} for h in (1, 4)])
CASES = [{**case, "warps": 4, "stages": 2} for case in CASES]


def label(case: dict) -> str:
    return f"H={case['heads']} N={case['seq_len']} d={case['head_dim']} {case['block_m']}x{case['block_n']}:"


def build_kernel():
    import triton
    import triton.language as tl

    stamp, sm_id = timer_functions()

    @triton.jit
    def forward(q_ptr, k_ptr, v_ptr, o_ptr, rec_ptr, seq_len, scale_log2,
                D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        mb = tl.program_id(0)
        head = tl.program_id(1)
        cta = head * tl.num_programs(0) + mb
        start = stamp()
        base = head.to(tl.int64) * seq_len * D
        rows = mb * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = tl.arange(0, D)
        q = tl.load(q_ptr + base + rows[:, None] * D + cols[None, :])
        m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
        l_i = tl.zeros((BLOCK_M,), tl.float32)
        acc = tl.zeros((BLOCK_M, D), tl.float32)
        n_tiles = ((mb + 1) * BLOCK_M + BLOCK_N - 1) // BLOCK_N  # up to the diagonal
        for i in range(0, n_tiles):
            keys = (n_tiles - 1 - i) * BLOCK_N + tl.arange(0, BLOCK_N)  # the diagonal tile first, as FA2 walks
            k = tl.load(k_ptr + base + keys[None, :] * D + cols[:, None])
            v = tl.load(v_ptr + base + keys[:, None] * D + cols[None, :])
            s = tl.dot(q, k) * scale_log2
            s = tl.where(keys[None, :] <= rows[:, None], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows whose keys so far are all masked
            p = tl.exp2(s - m_safe[:, None])
            alpha = tl.exp2(m_i - m_safe)
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + tl.dot(p.to(tl.bfloat16), v)
            m_i = m_new
        acc = acc / l_i[:, None]
        tl.store(o_ptr + base + rows[:, None] * D + cols[None, :], acc.to(tl.bfloat16))
        end = stamp()
        tl.store(rec_ptr + cta * 3, sm_id().to(tl.int64))
        tl.store(rec_ptr + cta * 3 + 1, start)
        tl.store(rec_ptr + cta * 3 + 2, end)

    return forward


def make_call(torch, case):
    """A callable that runs `case` once and returns its per-CTA (sm, start, end) records."""
    kernel = build_kernel()
    shape = (case["heads"], case["seq_len"], case["head_dim"])
    q, k, v = (torch.randn(*shape, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    o = torch.empty_like(q)
    grid = (case["seq_len"] // case["block_m"], case["heads"])
    rec = torch.zeros(grid[0] * grid[1] * 3, device="cuda", dtype=torch.int64)
    scale_log2 = case["head_dim"] ** -0.5 * 1.4426950408889634

    def call():
        kernel[grid](q, k, v, o, rec, case["seq_len"], scale_log2, D=case["head_dim"], BLOCK_M=case["block_m"],
                     BLOCK_N=case["block_n"], num_warps=case["warps"], num_stages=case["stages"])
        return rec

    def error() -> float:
        """Largest |difference| from float32 causal attention over 256 query rows of head 0 (rows 1024-1279)."""
        rows = slice(1024, 1280)
        scores = q[0, rows].float() @ k[0, :1280].float().T * case["head_dim"] ** -0.5
        future = torch.ones(256, 1280, device="cuda", dtype=torch.bool).triu(1 + 1024)  # keys past each row
        scores = scores.masked_fill(future, float("-inf"))
        return float((torch.softmax(scores, -1) @ v[0, :1280].float() - o[0, rows].float()).abs().max())
    call.error = error
    return call


def main() -> int:
    args = profile_args(__doc__)
    if args.driver:
        run_cases(CASES, make_call)
        return 0
    import torch
    timelines = []
    for case in CASES:
        call = make_call(torch, case)
        call()
        torch.cuda.synchronize()
        rec = call()
        torch.cuda.synchronize()
        records = rec.view(-1, 3).tolist()
        t0 = min(r[1] for r in records)
        span_us = (max(r[2] for r in records) - t0) / 1e3
        error = call.error()
        print(label(case), f"max |error| {error:.4f}, {len(records)} CTAs on {len({r[0] for r in records})} SMs,",
              f"{span_us:.0f} us", flush=True)
        timelines.append({"case": case, "max_abs_error": error, "records": records})
        call = None
        torch.cuda.empty_cache()
    return profile_and_write(__file__, CASES, label, args.out, "fa_causal", timelines)


if __name__ == "__main__":
    sys.exit(main())
