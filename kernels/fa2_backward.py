"""FlashAttention-2 backward (Dao 2023, arXiv 2307.08691), Section 3.1.2 and Algorithm 2; used by fa2.

Two launches, as in the reference CUDA code:

1. `fa2_bwd_dot_do_o` (flash_bwd_dot_do_o_kernel): one CTA per (Q block, batch, head) computes
   D_i = rowsum(dO_i * O_i) into an fp32 scratch tensor and clears its rows of the fp32 dQ accumulator.
2. `fa2_bwd` (flash_bwd_dq_dk_dv_loop_kernel): one CTA per (K/V block, batch, KV head), K/V block fastest,
   keeps K_j and V_j in SMEM and the dK_j, dV_j accumulators in registers, and walks the Q blocks that see
   block j (under causal masking from the diagonal down). Per Q block it recomputes P_ij = exp(tau Q_i K_j^T
   - LSE_i), forms dP = dO_i V_j^T and dS = P (dP - D_i), accumulates dV_j += P^T dO_i and dK_j += dS^T Q_i on
   chip and adds tau dS K_j into dQ in HBM with an accumulating store (atomicAdd in FP32). Q_i, dO_i, LSE_i
   and D_i for the next block are prefetched (cp.async) while the current one is computed.

GQA/MQA: the CTA of KV head hk loops over the group's query heads inside (head-major, then Q blocks), so
dK and dV are summed on chip and written once in bf16; the CUDA code instead writes per-query-head dK/dV
and sums them afterwards. dQ: the declared dQ tensor is the fp32 accumulator itself, so no conversion
launch runs (the CUDA code converts dq_accum to bf16 and applies tau in a third kernel; here tau is applied
to each dS K_j product before the atomic add).

Tiles are FA2's sm80/sm90 choices (flash_bwd_launch_template.h): kBlockM x kBlockN = 128 x 128 for d <= 32,
64 x 128 for d <= 128, 64 x 64 above, 8 warps, Ampere `mma.sync`. The warp layout of each product
(AtomLayoutMSdP, AtomLayoutNdKV, AtomLayoutMdQ) sets how many warps read each SMEM operand.
Optional opts keys bwd_block_m, bwd_block_n, bwd_warps override the tiles.
"""

from __future__ import annotations

import numpy as np

from gpusim.errors import InputError
from gpusim.launch import Launch
from gpusim.ops import GlobalTensor, Load, Mma, Store, Tile, Vector, Wait
from gpusim.problem import AttentionProblem
from gpusim.kernels.attention_common import kv_tiles_for_rows, masked_scores, tensor_dtype, tile_needs_mask

#: FA2's backward kernels use the whole register file per thread (255), one 8-warp CTA per SM.
REGISTERS_PER_THREAD = 255

# ---- per-element instruction counts (algorithm constants)
#: D = rowsum(dO * O): one FMA per element.
DOT_OPS = 1.0
#: P = exp2(S * tau * log2e - LSE * log2e): one FMA on the FP32 pipe plus one MUFU exponential.
P_FMA_OPS = 1.0
#: Causal select on tiles that cross the diagonal.
MASK_OPS = 1.0
#: dS = P * (dP - D): a subtract and a multiply.
DS_OPS = 2.0
#: tau applied to the dQ contribution before the atomic add, and to dK at the end: one multiply.
SCALE_OPS = 1.0
#: Convert an fp32 accumulator to the output type.
CONVERT_OPS = 1.0


def default_tiles(head_dim: int) -> tuple[int, int, int, tuple[int, int, int]]:
    """(block_m, block_n, warps, (AtomLayoutMSdP, AtomLayoutNdKV, AtomLayoutMdQ)) of FA2's backward."""
    if head_dim <= 32:
        return 128, 128, 8, (4, 4, 4)
    if head_dim <= 64:
        return 64, 128, 8, (2, 4, 4)
    if head_dim <= 128:
        return 64, 128, 8, (2, 4, 2)
    return 64, 64, 8, (4, 2, 2)


def _smem_reads(a: Tile, b_: Tile, warps: int, warps_m: int) -> int:
    """SMEM bytes of one product whose warps form a warps_m x (warps / warps_m) grid: each A row-slice is read
    by every warp column and each B column-slice by every warp row (ldmatrix)."""
    warps_m = max(1, min(warps_m, warps))
    return int(a.nbytes * max(1, warps // warps_m) + b_.nbytes * warps_m)


def _first_q_block(problem: AttentionProblem, j: int, block_m: int, block_n: int) -> int:
    """First Q block with a row that sees a key of K/V block j."""
    tr = -(-problem.seq_len // block_m)
    for i in range(tr):
        if j in kv_tiles_for_rows(problem, i * block_m, min((i + 1) * block_m, problem.seq_len), block_n):
            return i
    return tr


def dot_do_o_launch(problem: AttentionProblem, tensors: dict, block_m: int, warps: int) -> Launch:
    o_t, do_t, d_t, dq_t = tensors["O"], tensors["dO"], tensors["D"], tensors["dQ"]
    d, n = problem.head_dim, problem.seq_len
    m_blocks = -(-n // block_m)
    grid = [(mb, b, h) for h in range(problem.heads) for b in range(problem.batch) for mb in range(m_blocks)]

    def program(cta):
        mb, b, h = cta
        r0 = mb * block_m
        rows = slice(r0, r0 + block_m)
        valid = min(block_m, n - r0)
        o = Tile((block_m, d), o_t.dtype, "reg", "O")
        do = Tile((block_m, d), do_t.dtype, "reg", "dO")
        dd = Tile((block_m,), "fp32", "reg", "D")
        zero = Tile((block_m, d), "fp32", "reg", "zero")
        ready = yield Load(o_t.region(b, h, rows), o, wait=False)
        yield Load(do_t.region(b, h, rows), do)
        yield Wait(ready)
        yield Vector(lambda a, c: (a * c).sum(axis=1), [o, do], dd, DOT_OPS, elements=o.elements)
        yield Store(dd, d_t.region(b, h, rows))
        yield Vector(lambda: np.zeros((valid, d)), [], zero, 0.0)
        yield Store(zero, dq_t.region(b, h, rows))  # clear the fp32 dQ accumulator

    return Launch(name="fa2_bwd_dot_do_o", grid=grid, program=program, smem_bytes_per_cta=0,
                  threads_per_cta=32 * warps, registers_per_thread=64)


def main_launch(problem: AttentionProblem, tensors: dict, block_m: int, block_n: int, warps: int,
                layouts: tuple[int, int, int]) -> Launch:
    q_t, k_t, v_t, lse_t = (tensors[x] for x in ("Q", "K", "V", "LSE"))
    do_t, dq_t, dk_t, dv_t, d_t = (tensors[x] for x in ("dO", "dQ", "dK", "dV", "D"))
    d, n, l, group, scale = problem.head_dim, problem.seq_len, problem.kv_len, problem.group_size, problem.scale
    dt = tensor_dtype(problem)
    lay_sdp, lay_dkv, lay_dq = layouts
    n_blocks, m_blocks = -(-l // block_n), -(-n // block_m)
    grid = [(nb, b, hk) for hk in range(problem.kv_heads) for b in range(problem.batch) for nb in range(n_blocks)]

    def program(cta):
        nb, b, hk = cta
        c0 = nb * block_n
        cols = slice(c0, c0 + block_n)
        valid_cols = min(block_n, l - c0)
        k = Tile((block_n, d), dt, "smem", "K")
        v = Tile((block_n, d), dt, "smem", "V")
        q_buf = [Tile((block_m, d), dt, "smem", f"Q{x}") for x in range(2)]
        do_buf = [Tile((block_m, d), do_t.dtype, "smem", f"dO{x}") for x in range(2)]
        lse_buf = [Tile((block_m,), "fp32", "reg", f"LSE{x}") for x in range(2)]
        dd_buf = [Tile((block_m,), "fp32", "reg", f"D{x}") for x in range(2)]
        s = Tile((block_m, block_n), "fp32", "reg", "S")
        dp = Tile((block_m, block_n), "fp32", "reg", "dP")
        p = Tile((block_m, block_n), dt, "smem", "P")
        pt = Tile((block_n, block_m), dt, "smem", "P^T")
        ds = Tile((block_m, block_n), dt, "smem", "dS")
        dst = Tile((block_n, block_m), dt, "smem", "dS^T")
        dq = Tile((block_m, d), "fp32", "reg", "dQ_part")
        dk_acc = Tile((block_n, d), "fp32", "reg", "dK")
        dv_acc = Tile((block_n, d), "fp32", "reg", "dV")
        first = _first_q_block(problem, nb, block_m, block_n)
        steps = [(h, i) for h in range(hk * group, (hk + 1) * group) for i in range(first, m_blocks)]

        def issue(idx):
            h, i = steps[idx]
            x = idx % 2
            rows = slice(i * block_m, (i + 1) * block_m)
            return [(yield Load(q_t.region(b, h, rows), q_buf[x], wait=False)),
                    (yield Load(do_t.region(b, h, rows), do_buf[x], wait=False)),
                    (yield Load(lse_t.region(b, h, rows), lse_buf[x], wait=False)),
                    (yield Load(d_t.region(b, h, rows), dd_buf[x], wait=False))]

        k_ready = yield Load(k_t.region(b, hk, cols), k, wait=False)
        v_ready = yield Load(v_t.region(b, hk, cols), v, wait=False)
        pending = (yield from issue(0)) if steps else []
        yield Vector(lambda: np.zeros((valid_cols, d)), [], dk_acc, 0.0)
        yield Vector(lambda: np.zeros((valid_cols, d)), [], dv_acc, 0.0)
        yield Wait(k_ready)
        yield Wait(v_ready)
        for idx, (h, i) in enumerate(steps):
            x = idx % 2
            r0 = i * block_m
            rows = slice(r0, r0 + block_m)
            for handle in pending:
                yield Wait(handle)
            if idx + 1 < len(steps):
                pending = yield from issue(idx + 1)
            q, do, lse, dd = q_buf[x], do_buf[x], lse_buf[x], dd_buf[x]
            # S = Q_i K_j^T and dP = dO_i V_j^T.
            yield Mma(q, k, s, "mma_sync", b_transposed=True, smem_read_bytes=_smem_reads(q, k, warps, lay_sdp))
            yield Mma(do, v, dp, "mma_sync", b_transposed=True, smem_read_bytes=_smem_reads(do, v, warps, lay_sdp))
            # P = exp(tau S - LSE) (masked), written to SMEM for the transposed product.
            needs_mask = tile_needs_mask(problem, r0, c0, c0 + block_n)
            mask = masked_scores(problem, r0, c0, needs_mask)
            yield Vector(lambda s_, lse_: np.exp(mask(s_) - np.where(np.isfinite(lse_), lse_, 0.0)[:, None]),
                         [s, lse], p, P_FMA_OPS + (MASK_OPS if needs_mask else 0.0), 1.0, elements=s.elements)
            # dS = P (dP - D).
            yield Vector(lambda p_, dp_, d_: p_ * (dp_ - d_[:, None]), [p, dp, dd], ds, DS_OPS, elements=s.elements)
            # dV_j += P^T dO_i (transposed SMEM operand: a layout change, no instructions).
            yield Vector(lambda t: t.T, [p], pt, 0.0)
            yield Mma(pt, do, dv_acc, "mma_sync", accumulate=True,
                      smem_read_bytes=_smem_reads(pt, do, warps, lay_dkv))
            # dQ_i += tau dS K_j, atomically added to the fp32 dQ in HBM.
            yield Mma(ds, k, dq, "mma_sync", smem_read_bytes=_smem_reads(ds, k, warps, lay_dq))
            yield Vector(lambda t: t * scale, [dq], dq, SCALE_OPS)
            yield Store(dq, dq_t.region(b, h, rows), accumulate=True)
            # dK_j += dS^T Q_i (tau applied once at the end).
            yield Vector(lambda t: t.T, [ds], dst, 0.0)
            yield Mma(dst, q, dk_acc, "mma_sync", accumulate=True,
                      smem_read_bytes=_smem_reads(dst, q, warps, lay_dkv))
        dk_out = Tile((block_n, d), dk_t.dtype, "smem", "dK_out")
        dv_out = Tile((block_n, d), dv_t.dtype, "smem", "dV_out")
        yield Vector(lambda t: t * scale, [dk_acc], dk_out, SCALE_OPS)
        yield Vector(lambda t: t, [dv_acc], dv_out, CONVERT_OPS)
        yield Store(dk_out, dk_t.region(b, hk, cols))
        yield Store(dv_out, dv_t.region(b, hk, cols))

    e = problem.element_bytes
    # Q and dO double-buffered, K, V, and the P and dS tiles staged for the transposed products.
    smem = int((4 * block_m * d + 2 * block_n * d + 2 * block_m * block_n) * e)
    shared = {"Q", "dO", "LSE", "D", "dQ"}

    def work(cta) -> float:  # Q blocks visited (under causal masking fewer for K/V blocks right of the diagonal)
        return 1 + group * (m_blocks - _first_q_block(problem, cta[0], block_m, block_n))

    return Launch(name="fa2_bwd", grid=grid, program=program, smem_bytes_per_cta=smem,
                  threads_per_cta=32 * warps, registers_per_thread=REGISTERS_PER_THREAD,
                  shared_by=lambda cta: {name: (cta[1], cta[2]) for name in shared},
                  work=work if problem.causal else None)


def backward_launches(problem: AttentionProblem, hw, tensors: dict, opts: dict) -> list[Launch]:
    """The preprocessing and main launches of FA2's backward; adds the fp32 scratch tensor D to `tensors`."""
    if hw.tensor_flops_per_clk("mma_sync", problem.dtype) <= 0:
        raise InputError(f"fa2: {hw.name} has no mma.sync rate for {problem.dtype}")
    bm, bn, warps, layouts = default_tiles(problem.head_dim)
    bm = opts.get("bwd_block_m") or bm
    bn = opts.get("bwd_block_n") or bn
    warps = opts.get("bwd_warps") or warps
    if min(bm, bn, warps) <= 0:
        raise InputError("fa2: backward block sizes and warps must be positive")
    tensors["D"] = GlobalTensor("D", (problem.batch, problem.heads, problem.seq_len), "fp32", "scratch")
    return [dot_do_o_launch(problem, tensors, bm, warps),
            main_launch(problem, tensors, bm, bn, warps, layouts)]
