"""FlashAttention-2 backward (Dao 2023, arXiv 2307.08691), Section 3.1.2 and Algorithm 2; used by fa2.

Three launches, as run_flash_bwd_seqk_parallel (flash_bwd_launch_template.h) issues them:

1. `fa2_bwd_dot_do_o` (flash_bwd_dot_do_o_kernel<Clear_dQaccum=true>): one CTA per (Q block, batch, head)
   computes D_i = rowsum(dO_i * O_i) into an fp32 scratch tensor and clears its rows of the fp32 dQaccum.
2. `fa2_bwd` (flash_bwd_dq_dk_dv_loop_seqk_parallel_kernel, compute_dq_dk_dv_1colblock in flash_bwd_kernel.h):
   one CTA per (K/V block, batch, KV head), K/V block fastest, keeps K_j and V_j in SMEM and the dK_j, dV_j
   accumulators in registers, and walks the Q blocks that see block j from the last one down (under causal
   masking down to the diagonal). Per Q block, in the CUDA kernel's order: S = Q_i K_j^T; P = exp(tau S - LSE_i)
   stored to SMEM in bf16; dP = dO_i V_j^T; dS = P (dP - D_i), with D_i read from global memory at the top of
   the iteration; the next Q block (and LSE) prefetched into the second Q buffer (cp.async); dS stored to SMEM;
   dV_j += P^T dO_i; then the next dO block into the single dO buffer; dQ_i = dS K_j added to dQaccum with
   fp32 atomicAdd; dK_j += dS^T Q_i. One 8-warp CTA per SM (255 registers per thread).
3. `fa2_bwd_convert_dq` (flash_bwd_convert_dq_kernel): one CTA per (Q block, batch, head) reads dQaccum,
   applies tau and writes dQ in the output type.

SMEM port traffic per product: the ldmatrix reads of both operands by the warp grid of that product
(AtomLayoutMSdP, AtomLayoutNdKV, AtomLayoutMdQ) and the stores of P and dS; the cp.async fills of Q and dO
that the warps issue between the products are declared on the product they overlap (Mma.smem_fill_bytes),
and cost the port what the GPU's async_copy_fill_smem_port_share says. The 8 warps are two per scheduler, so
each product's reads and MMAs overlap in two turns (Mma.warps; validation/README.md run 38: on the H200 the main
loop takes 0.88-0.91 of its tensor-pipe plus SMEM time, and its vector work does not hide).

GQA/MQA: the CTA of KV head hk loops over the group's query heads inside (head-major, then Q blocks), so
dK and dV are summed on chip and written once in bf16; the CUDA code instead runs one CTA per query head,
writes per-query-head dK/dV and the caller (PyTorch) sums them afterwards.

Tiles are FA2's sm80/sm90 choices for GPUs whose CTAs may take 144 KiB of SMEM or more (A100, H100, H200;
flash_bwd_launch_template.h run_mha_bwd_hdim*): kBlockM x kBlockN = 128 x 128 for d <= 64, 64 x 128 for
d <= 128, 64 x 64 above, 8 warps, Ampere `mma.sync`; Is_V_in_regs off and Q double-buffered
(Flash_bwd_kernel_traits<..., false, false>). Optional opts keys bwd_block_m, bwd_block_n, bwd_warps
override the tiles.
"""

from __future__ import annotations

import numpy as np

from gpusim.errors import InputError
from gpusim.launch import Launch
from gpusim.ops import GlobalTensor, Load, Mma, Store, Tile, Vector, Wait
from gpusim.problem import AttentionProblem
from gpusim.kernels.attention_common import (kv_tiles_for_rows, masked_scores, own_regions, tensor_dtype,
                                             tile_needs_mask)

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
#: PyTorch's elementwise copy kernel (direct_copy_kernel_cuda): 128-thread CTAs and, measured by run 7's profile
#: of this strided copy, about 66 thread instructions per element (smsp__inst_executed x 32 / elements: the
#: strided index arithmetic), charged as issue work: about 70 us per copy at B*H*N*d = 2^25 (ncu: 90 us at 1.8 GHz).
COPY_OPS = 66.0
COPY_THREADS = 128


def default_tiles(head_dim: int, hw=None) -> tuple[int, int, int, tuple[int, int, int]]:
    """(block_m, block_n, warps, (AtomLayoutMSdP, AtomLayoutNdKV, AtomLayoutMdQ)) of FA2's backward
    (flash_bwd_launch_template.h, run_mha_bwd_hdim*): the choice depends on the SMEM a CTA may take
    (cudaDevAttrMaxSharedMemoryPerBlockOptin); hw None means a GPU with 144 KiB or more (A100, H100, H200)."""
    big = hw is None or hw.smem_per_cta_max_bytes >= 144 * 1024
    if head_dim <= 32:
        return 128, 128, 8, (4, 4, 4)
    if head_dim <= 64:
        return (128, 128, 8, (4, 4, 4)) if big else (64, 128, 8, (2, 4, 4))
    if head_dim <= 96:
        return 64, 128, 8, (2, 4, 4)
    if head_dim <= 128:
        return (64, 128, 8, (2, 4, 2)) if big else (64, 64, 8, (4, 2, 2))
    if head_dim <= 160:
        return 64, 64, 8, (4, 4, 4)
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
    o_t, do_t, d_t, dq_t = tensors["O"], tensors["dO"], tensors["D"], tensors["dQaccum"]
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

    def owned_by(cta):  # the CTA's own rows, read back (dO, D) or accumulated into (dQaccum) by the main loop
        mb, b, h = cta
        return own_regions(tensors, ("O", "dO", "D", "dQaccum"), b, h, slice(mb * block_m, (mb + 1) * block_m))

    return Launch(name="fa2_bwd_dot_do_o", grid=grid, program=program, smem_bytes_per_cta=0,
                  threads_per_cta=32 * warps, registers_per_thread=64, owned_by=owned_by)


def main_launch(problem: AttentionProblem, tensors: dict, block_m: int, block_n: int, warps: int,
                layouts: tuple[int, int, int]) -> Launch:
    q_t, k_t, v_t, lse_t = (tensors[x] for x in ("Q", "K", "V", "LSE"))
    do_t, dqa_t, dk_t, dv_t, d_t = (tensors[x] for x in ("dO", "dQaccum", "dK", "dV", "D"))
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
        do_buf = [Tile((block_m, d), do_t.dtype, "smem", "dO")]
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
        # Q blocks from the last down to the first that sees block j (flash_bwd_kernel.h walks m_block down).
        steps = [(h, i) for h in range(hk * group, (hk + 1) * group) for i in range(m_blocks - 1, first - 1, -1)]

        def load_q(idx):  # Q_i and LSE_i: the Q tile double-buffered in SMEM, LSE into registers
            h, i = steps[idx]
            rows = slice(i * block_m, (i + 1) * block_m)
            return [(yield Load(q_t.region(b, h, rows), q_buf[idx % 2], wait=False, cp_async=True)),
                    (yield Load(lse_t.region(b, h, rows), lse_buf[idx % 2], wait=False))]

        def load_do(idx):  # dO_i: one SMEM buffer, refilled once the dV product has read it
            h, i = steps[idx]
            rows = slice(i * block_m, (i + 1) * block_m)
            return (yield Load(do_t.region(b, h, rows), do_buf[0], wait=False, cp_async=True))

        k_ready = yield Load(k_t.region(b, hk, cols), k, wait=False, cp_async=True)
        v_ready = yield Load(v_t.region(b, hk, cols), v, wait=False, cp_async=True)
        q_pending = (yield from load_q(0)) if steps else []
        do_pending = (yield from load_do(0)) if steps else None
        yield Vector(lambda: np.zeros((valid_cols, d)), [], dk_acc, 0.0)
        yield Vector(lambda: np.zeros((valid_cols, d)), [], dv_acc, 0.0)
        yield Wait(k_ready)
        yield Wait(v_ready)
        for idx, (h, i) in enumerate(steps):
            x = idx % 2
            r0 = i * block_m
            rows = slice(r0, r0 + block_m)
            # cp_async_wait<0> + __syncthreads: this block's Q and dO are in SMEM.
            for handle in q_pending:
                yield Wait(handle)
            yield Wait(do_pending)
            q, do, lse, dd = q_buf[x], do_buf[0], lse_buf[x], dd_buf[x]
            # D_i (dP_sum) is read from global memory at the top of the iteration, used after dP.
            d_ready = yield Load(d_t.region(b, h, rows), dd, wait=False)
            # S = Q_i K_j^T.
            yield Mma(q, k, s, "mma_sync", warps=warps, b_transposed=True,
                      smem_read_bytes=_smem_reads(q, k, warps, lay_sdp))
            # P = exp(tau S - LSE) (masked), converted to bf16 and stored to SMEM for the transposed product.
            needs_mask = tile_needs_mask(problem, r0, c0, c0 + block_n)
            mask = masked_scores(problem, r0, c0, needs_mask)
            yield Vector(lambda s_, lse_: np.exp(mask(s_) - np.where(np.isfinite(lse_), lse_, 0.0)[:, None]),
                         [s, lse], p, P_FMA_OPS + (MASK_OPS if needs_mask else 0.0), 1.0, elements=s.elements)
            # dP = dO_i V_j^T (the STS of P shares the SMEM port with its ldmatrix reads).
            yield Mma(do, v, dp, "mma_sync", warps=warps, b_transposed=True,
                      smem_read_bytes=_smem_reads(do, v, warps, lay_sdp) + p.nbytes)
            # dS = P (dP - D).
            yield Wait(d_ready)
            yield Vector(lambda p_, dp_, d_: p_ * (dp_ - d_[:, None]), [p, dp, dd], ds, DS_OPS, elements=s.elements)
            # Q_i+1 (and LSE_i+1) prefetched into the other Q buffer; dS stored to SMEM; __syncthreads.
            fills = 0
            if idx + 1 < len(steps):
                q_pending = yield from load_q(idx + 1)
                fills = q.nbytes
            # dV_j += P^T dO_i (transposed SMEM operand: a layout change, no instructions).
            yield Vector(lambda t: t.T, [p], pt, 0.0)
            yield Mma(pt, do, dv_acc, "mma_sync", warps=warps, accumulate=True,
                      smem_read_bytes=_smem_reads(pt, do, warps, lay_dkv) + ds.nbytes, smem_fill_bytes=fills)
            # __syncthreads, then dO_i+1 into the single dO buffer.
            fills = 0
            if idx + 1 < len(steps):
                do_pending = yield from load_do(idx + 1)
                fills = do.nbytes
            # dQ_i += dS K_j: atomicAdd (fp32) into dQaccum; tau is applied by the convert launch.
            yield Mma(ds, k, dq, "mma_sync", warps=warps, smem_read_bytes=_smem_reads(ds, k, warps, lay_dq),
                      smem_fill_bytes=fills)
            yield Store(dq, dqa_t.region(b, h, rows), accumulate=True)
            # dK_j += dS^T Q_i (tau applied once at the end).
            yield Vector(lambda t: t.T, [ds], dst, 0.0)
            yield Mma(dst, q, dk_acc, "mma_sync", warps=warps, accumulate=True,
                      smem_read_bytes=_smem_reads(dst, q, warps, lay_dkv))
        dk_out = Tile((block_n, d), dk_t.dtype, "smem", "dK_out")
        dv_out = Tile((block_n, d), dv_t.dtype, "smem", "dV_out")
        yield Vector(lambda t: t * scale, [dk_acc], dk_out, SCALE_OPS)
        yield Vector(lambda t: t, [dv_acc], dv_out, CONVERT_OPS)
        yield Store(dk_out, dk_t.region(b, hk, cols))
        yield Store(dv_out, dv_t.region(b, hk, cols))

    e = problem.element_bytes
    # kSmemSize1colblock (kernel_traits.h): Q double-buffered and one dO buffer, K, V, and the P and dS tiles
    # staged for the transposed products.
    smem = int((3 * block_m * d + 2 * block_n * d + 2 * block_m * block_n) * e)
    # by the tensors' own names: with sdpa_copies dO is the copy ("dO.copy"), read by every CTA of the head too
    shared = {t.name for t in (q_t, do_t, lse_t, d_t, dqa_t)}

    def work(cta) -> float:  # Q blocks visited (under causal masking fewer for K/V blocks right of the diagonal)
        return 1 + group * (m_blocks - _first_q_block(problem, cta[0], block_m, block_n))

    return Launch(name="fa2_bwd", grid=grid, program=program, smem_bytes_per_cta=smem,
                  threads_per_cta=32 * warps, registers_per_thread=REGISTERS_PER_THREAD,
                  shared_by=lambda cta: {name: (cta[1], cta[2]) for name in shared},
                  work=work if problem.causal else None)


def convert_dq_launch(problem: AttentionProblem, tensors: dict, block_m: int, warps: int,
                      name: str = "fa2_bwd_convert_dq") -> Launch:
    """flash_bwd_convert_dq_kernel: one CTA per (Q block, batch, head) reads its rows of the fp32 dQaccum,
    applies tau and writes dQ in the output type (staged through SMEM)."""
    dqa_t, dq_t = tensors["dQaccum"], tensors["dQ"]
    d, n, scale = problem.head_dim, problem.seq_len, problem.scale
    m_blocks = -(-n // block_m)
    grid = [(mb, b, h) for h in range(problem.heads) for b in range(problem.batch) for mb in range(m_blocks)]

    def program(cta):
        mb, b, h = cta
        rows = slice(mb * block_m, (mb + 1) * block_m)
        acc = Tile((block_m, d), "fp32", "reg", "dQaccum")
        out = Tile((block_m, d), dq_t.dtype, "smem", "dQ")
        yield Load(dqa_t.region(b, h, rows), acc)
        yield Vector(lambda t: t * scale, [acc], out, SCALE_OPS + CONVERT_OPS)
        yield Store(out, dq_t.region(b, h, rows))

    def owned_by(cta):
        mb, b, h = cta
        return own_regions(tensors, ("dQaccum", "dQ"), b, h, slice(mb * block_m, (mb + 1) * block_m))

    return Launch(name=name, grid=grid, program=program,
                  smem_bytes_per_cta=int(block_m * d * problem.element_bytes),
                  threads_per_cta=32 * warps, registers_per_thread=64, owned_by=owned_by)


def layout_copy_launch(problem: AttentionProblem, src: GlobalTensor, dst: GlobalTensor, block_m: int) -> Launch:
    """PyTorch's elementwise copy (direct_copy_kernel_cuda) of one [B, H, N, d] tensor into the layout FA2's
    backward wants; SDPA runs two before the backward (validation/README.md run 7)."""
    d, n = problem.head_dim, problem.seq_len
    grid = [(mb, b, h) for h in range(problem.heads) for b in range(problem.batch) for mb in range(-(-n // block_m))]

    def program(cta):
        mb, b, h = cta
        rows = slice(mb * block_m, (mb + 1) * block_m)
        tile = Tile((block_m, d), src.dtype, "reg", src.name)
        yield Load(src.region(b, h, rows), tile)
        yield Vector(lambda t: t, [tile], tile, COPY_OPS)
        yield Store(tile, dst.region(b, h, rows))

    def owned_by(cta):
        mb, b, h = cta
        return own_regions({src.name: src, dst.name: dst}, (src.name, dst.name), b, h,
                           slice(mb * block_m, (mb + 1) * block_m))

    return Launch(name=f"sdpa_copy_{src.name}", grid=grid, program=program, smem_bytes_per_cta=0,
                  threads_per_cta=COPY_THREADS, registers_per_thread=32, owned_by=owned_by)


def backward_launches(problem: AttentionProblem, hw, tensors: dict, opts: dict) -> list[Launch]:
    """The three launches of FA2's backward (run_flash_bwd_seqk_parallel): dot(dO, O) preprocessing that also
    clears the fp32 dQ accumulator, the main loop, and the dQ conversion. Adds the fp32 scratch tensors D and
    dQaccum to `tensors` and makes dQ an output in the output type."""
    if hw.tensor_flops_per_clk("mma_sync", problem.dtype) <= 0:
        raise InputError(f"fa2: {hw.name} has no mma.sync rate for {problem.dtype}")
    bm, bn, warps, layouts = default_tiles(problem.head_dim, hw)
    bm = opts.get("bwd_block_m") or bm
    bn = opts.get("bwd_block_n") or bn
    warps = opts.get("bwd_warps") or warps
    if min(bm, bn, warps) <= 0:
        raise InputError("fa2: backward block sizes and warps must be positive")
    b, h, n, d = problem.batch, problem.heads, problem.seq_len, problem.head_dim
    tensors["D"] = GlobalTensor("D", (b, h, n), "fp32", "scratch")
    tensors["dQaccum"] = GlobalTensor("dQaccum", (b, h, n, d), "fp32", "scratch")
    tensors["dQ"] = GlobalTensor("dQ", (b, h, n, d), tensors["dO"].dtype, "output")
    launches = []
    used = tensors
    # PyTorch's .contiguous() of the [B, N, H, d] view of a [B, H, N, d] tensor copies unless H or N is 1 (then
    # the view is already contiguous: run 39's one-head cases ran no copies); the kernels read dO and O from them
    if opts.get("sdpa_copies") and problem.heads > 1 and problem.seq_len > 1:
        used = dict(tensors)
        for name in ("dO", "O"):
            copy = GlobalTensor(f"{name}.copy", tensors[name].shape, tensors[name].dtype, "scratch")
            tensors[copy.name] = used[name] = copy
            launches.append(layout_copy_launch(problem, tensors[name], copy, bm))
    return launches + [dot_do_o_launch(problem, used, bm, warps),
                       main_launch(problem, used, bm, bn, warps, layouts),
                       convert_dq_launch(problem, used, bm, warps)]
