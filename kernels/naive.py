"""Standard attention: separate kernel launches with the N x N matrices in HBM.

Follows Algorithm 0 of the FlashAttention paper (Dao et al. 2022, arXiv 2205.14135, Section 2.2): S = Q K^T
is written to HBM, P = softmax(S) is read back and written, O = P V reads it again. The launch sequence is
PyTorch's eager path that the calibration data measured (`naive` rows of h200_calibration.json):

  forward   qk_gemm   S  = Q K^T               (tiled tensor-core GEMM per (batch, head), S in HBM as bf16)
            scale     Ss = S * scale           (its own elementwise kernel; option separate_scale=False fuses
                                                it into the GEMM epilogue, 3 launches instead of 4)
            softmax   P  = softmax(Ss)         (row kernel, causal mask applied here; also writes the
                                                log-sum-exp per row, 4 bytes per row, for interface parity)
            pv_gemm   O  = P V
  backward  dv_gemm   dV = P^T dO              (GQA: summed over the group's query heads inside the GEMM's
                                                reduction loop)
            dp_gemm   dP = dO V^T
            softmax_bwd dS = P * (dP - rowsum(P * dP))   (PyTorch's softmax backward; rowsum(P * dP) equals
                                                rowsum(dO * O), Section B.2 of the paper, and needs no extra reads)
            scale_bwd dSs = dS * scale         (separate_scale=True; else scale is in the two GEMM epilogues)
            dq_gemm   dQ = dSs K               (written fp32, the declared dQ type)
            dk_gemm   dK = dSs^T Q

Backward source of P: with pass fwd_bwd the backward reads the P the forward wrote (what autograd saves);
with pass bwd (O and LSE are inputs) P is recomputed from S: qk_gemm (+ scale) and then a row kernel
P = exp(Ss - LSE) with the causal mask, before the backward launches.

GEMMs are cuBLAS-like: a producer role streams A/B tiles through a `stages`-deep SMEM ring, a consumer role
issues the newest tensor instruction the GPU has (hw.best_instruction), accumulating in FP32; tiles
128 x 128 x 64 by default, narrowed to the matrix (d = 64 outputs use 128 x 64 tiles) and a ring no deeper
than the reduction loop. Output tiles are rasterized in groups of `group_m` tile rows per (batch, head).
Operands stored transposed (P^T, dS^T) are read through the tensor core's transposed SMEM operand path
(ldmatrix.trans / wgmma transpose), which costs no instructions: modeled as a zero-cost layout op.

Row kernels (softmax, its backward, the P recompute) hold whole rows on chip (PyTorch's persistent and
shared-memory softmax), so each N x N element is read from HBM once per kernel. Elementwise scale kernels
walk the matrix in the tiles of the launch that produced it, so that the L2 (keyed by tile) sees the
producer's tiles when they are still resident.

Differences from the eager path: no GQA expansion copy of K/V (heads index K/V head h // group); causal
masking costs no extra masked_fill kernel (it is in the softmax); cuBLAS heuristics are replaced by the
fixed tile choice above.

The FlashAttention paper's "standard attention" (Fig. 1 right: Matmul, Mask, Softmax, Dropout, Matmul; its
benchmarks run with dropout and a mask) is this sequence with options, each a kernel PyTorch launches:
  mask_pass   add: `scores + mask` (broadcast mask; AddBackward passes the gradient through, no kernel);
              masked_fill: `scores.masked_fill_(mask, -inf)` (the FA1 repo's attention_ref), whose backward
              grad.masked_fill(mask, 0) is a kernel. The softmax then needs no mask of its own.
  dropout_p   F.dropout -> native_dropout: fused_dropout_kernel_vec reads P, writes the dropped P (which P V,
              and dV in the backward, read) and a 1-byte keep mask; backward masked_scale reads dP and the mask.
  softmax_bwd_premul  softmax_backward_cuda_out computes `tmp = grad * output` in its own kernel (in
              aten/src/ATen/native/cuda/SoftMax.cu since PyTorch 1.0), then softmax_warp_backward
              dS = tmp - P * rowsum(tmp) reads tmp and P again.
The sequence and each kernel's launch shape and instructions per element were read with Nsight Compute on an
H200 (torch 2.11, B=4 H=16 N=1024: see PointwiseKernel); the per-kernel HBM bytes matched this model within a
few percent. The defaults (none, 0, False) keep the sequence the H200 `naive` rows were measured with.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from gpusim.errors import InputError
from gpusim.launch import KernelPlan, Launch, Option, RegionKey, require_hbm, resolve_options
from gpusim.ops import Acquire, GlobalTensor, Load, Mma, Semaphore, Signal, Store, Tile, Vector, Wait
from gpusim.problem import AttentionProblem
from gpusim.kernels.attention_common import causal_offset, declare_tensors, tensor_dtype

NAME = "naive"
PROBLEM = AttentionProblem
MASK_PASSES = ("none", "add", "masked_fill")
OPTIONS = {
    "separate_scale": Option(bool, True, "scale S (and dS) in their own elementwise kernels, as PyTorch's eager "
                                         "path does; false fuses the scale into the GEMM epilogues"),
    "block_m": Option(int, 128, "GEMM output tile rows"),
    "block_n": Option(int, 128, "GEMM output tile columns (narrowed to the matrix width)"),
    "block_k": Option(int, 64, "GEMM reduction depth per pipeline stage"),
    "stages": Option(int, 3, "GEMM SMEM ring depth (at most the number of reduction steps)"),
    "group_m": Option(int, 8, "GEMM tile rows per rasterization group (L2 reuse)"),
    "mask_pass": Option(str, "none", "a separate masking kernel after the QK^T GEMM, as eager attention code writes "
                                     "it: none (the softmax masks), add (scores + mask: no backward kernel) or "
                                     "masked_fill (its backward grad.masked_fill(mask, 0) is a kernel)",
                        choices=MASK_PASSES),
    "dropout_p": Option(float, 0.0, "attention dropout probability: PyTorch's fused dropout kernel after the "
                                    "softmax (writes the dropped P and a 1-byte keep mask) and its backward"),
    "dropout_seed": Option(int, 0, "seed of the keep mask the functional run draws (dropout_keep)"),
    "softmax_bwd_premul": Option(bool, False, "PyTorch's softmax backward: tmp = grad * P in its own elementwise "
                                              "kernel, then the row kernel dS = tmp - P * rowsum(tmp)"),
}

# ---- per-element instruction counts (algorithm constants, what the kernels execute per element)
#: GEMM epilogue: convert the FP32 accumulator to the output type (one cvt per element) ...
EPILOGUE_CONVERT_OPS = 1.0
#: ... plus one multiply when the GEMM applies a scale (cuBLAS alpha).
EPILOGUE_ALPHA_OPS = 1.0
#: Elementwise `x * scale`: one multiply (load/convert folded into it).
SCALE_OPS = 1.0
#: Causal masking adds one select per element to a row kernel.
MASK_OPS = 1.0
#: P recompute from the log-sum-exp: exp argument x - lse (1 FMA) plus one MUFU exponential.
RECOMPUTE_FMA_OPS = 1.0
#: Per-row work (log of the row sum for the LSE): one FP32 op and one MUFU op per row.
ROW_LOG_OPS = 1.0
#: Register allocation of the GEMM and elementwise kernels (cuBLAS-class GEMMs ~128 per thread with the
#: producer warpgroup's registers given to the consumer; PyTorch's vectorized elementwise kernel: 128 threads,
#: 32 registers, ncu).
GEMM_REGISTERS_PER_THREAD = 128
ELEMENTWISE_REGISTERS_PER_THREAD = 32
ELEMENTWISE_THREADS = 128


@dataclass(frozen=True)
class PointwiseKernel:
    """Launch shape and thread instructions per element of one of PyTorch's elementwise kernels, read with
    Nsight Compute on an H200 (torch 2.11, B=4 H=16 N=1024 d=64 bf16, smsp__inst_executed x 32 / elements;
    the ncu run is quoted in the kernel's comment). Integer work (Philox, index division) is counted like the
    rest: one FP32-pipe issue slot per instruction (on sm_80 the INT32 and FP32 pipes both have 64 lanes)."""

    name: str
    threads_per_cta: int
    registers_per_thread: int
    instructions_per_element: float


#: `scores + mask` / `scores.masked_fill_(mask, v)` with a broadcast [N, N] (or [B, 1, 1, N]) mask: TensorIterator
#: cannot vectorize a broadcast operand, so the generic elementwise_kernel<128, 4> computes three offsets per
#: element by integer division (56.75 instructions per element: 21 ALU, 11 FMA-pipe integer multiplies, 3 LSU).
#: The masked_fill backward, grad.masked_fill(mask, 0), is the same broadcast kernel.
BROADCAST_MASK_KERNEL = PointwiseKernel("broadcast_mask", 128, 18, 56.75)
#: fused_dropout_kernel_vec<bf16, float, uint, 1, 8, bool> (aten/src/ATen/native/cuda/Dropout.cu): a grid-stride
#: loop, 256 threads, 55 registers; curand_uniform4 runs Philox4x32-10 (10 rounds of two 32-bit mul.hi/lo and
#: XORs) per 4 elements, then compare, scale and the byte mask: 28.8 instructions per element (13.3 ALU,
#: 13.2 FMA pipe; none on MUFU).
DROPOUT_KERNEL = PointwiseKernel("fused_dropout", 256, 55, 28.8)
#: native_dropout_backward = masked_scale_kernel (vectorized_elementwise_kernel<8>): grad * mask * 1/(1-p),
#: 11.4 instructions per element.
DROPOUT_BWD_KERNEL = PointwiseKernel("masked_scale", 128, 40, 11.38)
#: softmax_backward_cuda_out (aten/src/ATen/native/cuda/SoftMax.cu): `Tensor tmp = grad * output;` before the
#: row kernel, a vectorized BinaryFunctor<MulFunctor>: 7.25 instructions per element.
PREMUL_KERNEL = PointwiseKernel("softmax_bwd_mul", 128, 40, 7.25)
#: softmax_warp_backward<bf16, bf16, float, 10> after the premultiply: dS = tmp - P * rowsum(tmp), one warp per
#: row, 96 registers, 13.94 instructions per element at L = 1024. Longer rows (block kernels) were not profiled:
#: the forward kernel's count is kept for them, as for the default softmax_bwd.
WARP_SOFTMAX_BWD_INSTRUCTIONS = 13.94
WARP_SOFTMAX_BWD_REGISTERS = 96


def dropout_keep(seed: int, batch: int, head: int, rows: range, kv_len: int, p: float) -> np.ndarray:
    """The keep mask (True = kept) of rows `rows` of (batch, head): uniform draws >= p, one seeded stream per
    row, so any tile of any launch and the tests' float64 reference draw the same mask (like Philox, whose
    counter is the element offset)."""
    return np.array([np.random.default_rng((seed, batch, head, r)).random(kv_len) >= p for r in rows],
                    dtype=bool).reshape(len(rows), kv_len)


@dataclass(frozen=True)
class RowKernel:
    """One of PyTorch's softmax kernels, which one runs depending on the row length. Their launch shape and
    the instructions they execute per element were read with Nsight Compute on an H200 (torch 2.11,
    validation/data/h200_profile_2026-11-28_row_kernels.json, smsp__inst_executed and _pipe_xu per element):
    the block-per-row kernels spend ~80 instructions per element (index arithmetic, bounds checks, a
    precise expf evaluated twice, block reductions), so they are issue-bound, not HBM-bound."""

    name: str
    rows_per_cta: int
    threads_per_cta: int
    registers_per_thread: int
    smem_bytes_per_cta: int
    instructions_per_element: float  # thread instructions (FP32-pipe issue slots)
    mufu_per_element: float
    row_reads: int  # times each row is read (the global-memory kernel re-reads it, from L2)


#: softmax_warp_forward: one warp per row, 4 warps per CTA; each thread holds L/32 elements in registers
#: (48 registers at L = 1024, 80 at 2048). 39 instructions and 3 MUFU ops per element at L = 1024 and 2048.
WARP_SOFTMAX_MAX_ELEMENTS = 2048
#: cunn_SoftMaxForwardReg: one row per 1024-thread CTA held in registers (30 registers at L = 4096, 37 at
#: 8192, so one CTA per SM there). 78 instructions and 4 MUFU ops per element at 4096 and 8192.
REG_SOFTMAX_MAX_ELEMENTS = 8192
#: cunn_SoftMaxForwardSmem: the row in shared memory (when it fits the 48 KiB default allocation with the
#: reduction buffer), 1024 threads, 32 registers; 47 instructions and 4 MUFU ops per element at L = 16384.
#: Longer rows use cunn_SoftMaxForward, which reads the row three times (max, sum, write) from global memory;
#: not profiled: the Smem kernel's counts are used for it.
SMEM_SOFTMAX_MAX_BYTES = 48 * 1024 - 128


def row_kernel(problem: AttentionProblem) -> RowKernel:
    """The softmax kernel PyTorch launches for rows of kv_len elements (its dispatch rule)."""
    length, nbytes = problem.kv_len, problem.kv_len * problem.element_bytes
    if length <= WARP_SOFTMAX_MAX_ELEMENTS:
        return RowKernel("softmax_warp_forward", 4, 128, 16 + -(-length // 32), 0, 39.0, 3.0, 1)
    if length <= REG_SOFTMAX_MAX_ELEMENTS:
        return RowKernel("cunn_SoftMaxForwardReg", 1, 1024, 26 + length // 1024, 128, 78.0, 4.0, 1)
    if nbytes <= SMEM_SOFTMAX_MAX_BYTES:
        return RowKernel("cunn_SoftMaxForwardSmem", 1, 1024, 32, nbytes + 128, 47.0, 4.0, 1)
    return RowKernel("cunn_SoftMaxForward", 1, 1024, 32, 128, 47.0, 4.0, 3)


def _ceil16(x: int) -> int:
    return max(16, -(-x // 16) * 16)


# ============================================================================================== GEMMs
def _tile_grid(t: GlobalTensor, bm: int, bn: int, group_m: int) -> list:
    """(batch, head, tile row, tile column) of a [B, H, rows, cols] matrix: per (batch, head), groups of
    `group_m` tile rows swept column by column (cuBLAS-style rasterization for L2 reuse)."""
    tiles_m, tiles_n = -(-t.shape[2] // bm), -(-t.shape[3] // bn)
    order = []
    for gm in range(0, tiles_m, group_m):
        for tn in range(tiles_n):
            order.extend((tm, tn) for tm in range(gm, min(gm + group_m, tiles_m)))
    return [(b, h, tm, tn) for b in range(t.shape[0]) for h in range(t.shape[1]) for tm, tn in order]


class _Gemm:
    """C[b, hc] (m x n) = alpha * sum over (ha, hb) in pairs(hc) of A[b, ha] @ B[b, hb].

    A is stored [.., m, k], or [.., k, m] when a_trans; B is stored [.., k, n], or [.., n, k] when b_trans.
    """

    def __init__(self, name, out: GlobalTensor, a: GlobalTensor, a_trans: bool, b: GlobalTensor, b_trans: bool,
                 pairs, alpha: float | None):
        self.name, self.out, self.a, self.a_trans, self.b, self.b_trans = name, out, a, a_trans, b, b_trans
        self.pairs, self.alpha = pairs, alpha
        self.m, self.n = out.shape[2], out.shape[3]
        self.k = a.shape[2] if a_trans else a.shape[3]


def _gemm_launch(g: _Gemm, problem: AttentionProblem, hw, opts: dict) -> Launch:
    instruction = hw.best_instruction(problem.dtype)
    dt = tensor_dtype(problem)
    e = problem.element_bytes
    # Tiles narrowed to the matrix (a cuBLAS heuristic picks 128 x 64 for a 64-wide output); wgmma needs
    # 64-row warpgroup tiles, mma.sync 16: keep at least 64 rows.
    bm = min(opts["block_m"], max(64, _ceil16(g.m)))
    bn = min(opts["block_n"], _ceil16(g.n))
    bk = min(opts["block_k"], _ceil16(g.k))
    tiles_k = -(-g.k // bk)
    steps_per_pair = tiles_k
    # A ring deeper than the reduction loop holds nothing (S = Q K^T at d = 64 has one step).
    max_steps = steps_per_pair * max(len(g.pairs(h)) for h in range(g.out.shape[1]))
    stages = max(1, min(opts["stages"], max_steps))
    # mma.sync: 4 warps in a 2 x 2 layout, each A tile is read by 2 warps and each B tile by 2 (ldmatrix);
    # a wgmma/tcgen05 warpgroup reads each operand once from SMEM.
    warps_m, warps_n = (2, 2) if instruction == "mma_sync" else (1, 1)
    threads = 128 if instruction == "mma_sync" else 256  # + a producer warpgroup on Hopper/Blackwell
    a_bytes, b_bytes = bm * bk * e, bk * bn * e
    out_t = g.out

    grid = _tile_grid(out_t, bm, bn, opts["group_m"])

    def program(cta):
        b, hc, tm, tn = cta
        rows, cols = slice(tm * bm, (tm + 1) * bm), slice(tn * bn, (tn + 1) * bn)
        a_buf = [Tile((bk, bm) if g.a_trans else (bm, bk), dt, "smem", f"A{s}") for s in range(stages)]
        b_buf = [Tile((bn, bk) if g.b_trans else (bk, bn), dt, "smem", f"B{s}") for s in range(stages)]
        a_view = Tile((bm, bk), dt, "smem", "At")
        full = [Semaphore(f"full{s}") for s in range(stages)]
        empty = [Semaphore(f"empty{s}", initial=1) for s in range(stages)]
        acc = Tile((bm, bn), "fp32", "reg", "acc")
        steps = [(ha, hb, kk) for ha, hb in g.pairs(hc) for kk in range(tiles_k)]

        def producer():
            for i, (ha, hb, kk) in enumerate(steps):
                s = i % stages
                yield Acquire(empty[s])
                ks = slice(kk * bk, (kk + 1) * bk)
                a_ref = g.a.region(b, ha, ks, rows) if g.a_trans else g.a.region(b, ha, rows, ks)
                b_ref = g.b.region(b, hb, cols, ks) if g.b_trans else g.b.region(b, hb, ks, cols)
                yield Load(a_ref, a_buf[s], wait=False, signal=full[s])
                yield Load(b_ref, b_buf[s], wait=False, signal=full[s])

        def consumer():
            for i in range(len(steps)):
                s = i % stages
                yield Acquire(full[s], 2)
                a_tile = a_buf[s]
                if g.a_trans:  # transposed SMEM operand: a layout change, no instructions
                    yield Vector(lambda x: x.T, [a_buf[s]], a_view, 0.0)
                    a_tile = a_view
                yield Mma(a_tile, b_buf[s], acc, instruction, b_transposed=g.b_trans, accumulate=i > 0,
                          smem_read_bytes=int(a_bytes * warps_n + b_bytes * warps_m), warps=warps_m * warps_n)
                yield Signal(empty[s])
            out = Tile((bm, bn), out_t.dtype, "smem", "C")
            alpha = g.alpha
            ops = EPILOGUE_CONVERT_OPS + (EPILOGUE_ALPHA_OPS if alpha is not None else 0.0)
            yield Vector((lambda x: x * alpha) if alpha is not None else (lambda x: x), [acc], out, ops)
            yield Store(out, out_t.region(b, hc, rows, cols))

        return [producer(), consumer()]

    smem = stages * (a_bytes + b_bytes) + bm * bn * (4 if out_t.dtype == "fp32" else 2)

    @functools.cache
    def a_key(b, hc, tm):
        return RegionKey({0: b, 1: g.pairs(hc)[0][0], (3 if g.a_trans else 2): _span(tm, bm, g.m)})

    @functools.cache
    def b_key(b, hc, tn):
        return RegionKey({0: b, 1: g.pairs(hc)[0][1], (2 if g.b_trans else 3): _span(tn, bn, g.n)})

    def shared_by(cta):
        """A tiles are shared by the CTAs of one output tile row, B tiles by those of one tile column (of the
        first head pair: a GQA group's sum walks more heads, which folding then counts per CTA). The keys are
        built once per row and column: the steady-state extrapolation asks for every CTA's (524288 at 16k tokens)."""
        b, hc, tm, tn = cta
        return {g.a.name: a_key(b, hc, tm), g.b.name: b_key(b, hc, tn)}

    return Launch(name=g.name, grid=grid, program=program, smem_bytes_per_cta=int(smem), threads_per_cta=threads,
                  registers_per_thread=GEMM_REGISTERS_PER_THREAD, shared_by=shared_by), (bm, bn, bk, stages)


def _span(index: int, size: int, extent: int) -> tuple[int, int]:
    """(start, stop) of tile `index` of `size` along a dimension of `extent`, as a region index holds it."""
    return index * size, min((index + 1) * size, extent)


# ============================================================================================== row kernels
def _row_grid(problem: AttentionProblem, rows: int) -> list:
    groups = -(-problem.seq_len // rows)
    return [(b, h, g) for b in range(problem.batch) for h in range(problem.heads) for g in range(groups)]


def _mask_fn(problem: AttentionProblem, r0: int):
    offset = causal_offset(problem)

    def visible(x: np.ndarray) -> np.ndarray:
        rows = np.arange(r0, r0 + x.shape[0])[:, None]
        cols = np.arange(x.shape[1])[None, :]
        return cols <= rows + offset
    return visible


def _softmax_launch(problem: AttentionProblem, src: GlobalTensor, p_t: GlobalTensor, lse_t: GlobalTensor | None,
                    kernel: RowKernel, causal: bool | None = None) -> Launch:
    """P = softmax(src) row-wise with the causal mask (unless `causal` is False: a mask pass already wrote
    -inf there); optionally the log-sum-exp of each row. Three passes over the row (max; exp and sum;
    normalize and write), each a third of the kernel's instructions."""
    R, L = kernel.rows_per_cta, problem.kv_len
    causal = problem.causal if causal is None else causal
    per_pass = kernel.instructions_per_element / 3
    mufu_half = kernel.mufu_per_element / 2

    def program(cta):
        b, h, grp = cta
        r0 = grp * R
        rows = slice(r0, min(r0 + R, problem.seq_len))
        n_rows = rows.stop - rows.start
        visible = _mask_fn(problem, r0)
        s = Tile((n_rows, L), src.dtype, "smem" if kernel.smem_bytes_per_cta > 128 else "reg", "S")
        m = Tile((n_rows,), "fp32", "reg", "m")
        e = Tile((n_rows, L), "fp32", "reg", "E")
        l_ = Tile((n_rows,), "fp32", "reg", "l")
        p = Tile((n_rows, L), p_t.dtype, "reg", "P")
        masked = (lambda x: np.where(visible(x), x, -np.inf)) if causal else (lambda x: x)
        for _ in range(kernel.row_reads):  # the global-memory kernel reads the row once per pass
            yield Load(src.region(b, h, rows), s)
        yield Vector(lambda x: masked(x).max(axis=1), [s], m, per_pass + (MASK_OPS if causal else 0.0),
                     elements=s.elements)
        yield Vector(lambda x, mx: np.exp(masked(x) - np.where(np.isfinite(mx), mx, 0.0)[:, None]), [s, m], e,
                     per_pass, mufu_half, elements=s.elements)
        yield Vector(lambda x: x.sum(axis=1), [e], l_, 0.0, elements=s.elements)
        yield Vector(lambda x, sm: np.divide(x, sm[:, None], out=np.zeros_like(x), where=sm[:, None] > 0),
                     [e, l_], p, per_pass, mufu_half, elements=s.elements)
        yield Store(p, p_t.region(b, h, rows))
        if lse_t is not None:
            lse = Tile((n_rows,), "fp32", "reg", "LSE")
            yield Vector(lambda mx, sm: np.where(sm > 0, np.where(np.isfinite(mx), mx, 0.0)
                                                 + np.log(np.where(sm > 0, sm, 1.0)), -np.inf),
                         [m, l_], lse, ROW_LOG_OPS, 1.0, elements=n_rows)
            yield Store(lse, lse_t.region(b, h, rows))

    return Launch(name="softmax", grid=_row_grid(problem, R), program=program,
                  smem_bytes_per_cta=kernel.smem_bytes_per_cta, threads_per_cta=kernel.threads_per_cta,
                  registers_per_thread=kernel.registers_per_thread)


def _recompute_p_launch(problem: AttentionProblem, src: GlobalTensor, lse_t: GlobalTensor, p_t: GlobalTensor,
                        kernel: RowKernel) -> Launch:
    """Backward-only pass: P = exp(Ss - LSE) with the causal mask (the LSE is an input); an elementwise
    kernel in the softmax's row grid."""
    R, L = kernel.rows_per_cta, problem.kv_len
    causal = problem.causal

    def program(cta):
        b, h, grp = cta
        r0 = grp * R
        rows = slice(r0, r0 + R)
        visible = _mask_fn(problem, r0)
        s = Tile((R, L), src.dtype, "reg", "S")
        lse = Tile((R,), "fp32", "reg", "LSE")
        p = Tile((R, L), p_t.dtype, "reg", "P")
        s_ready = yield Load(src.region(b, h, rows), s, wait=False)
        yield Load(lse_t.region(b, h, rows), lse)
        yield Wait(s_ready)

        def recompute(x, lse_):
            pr = np.exp(x - np.where(np.isfinite(lse_), lse_, 0.0)[:, None])
            return np.where(visible(x), pr, 0.0) if causal else pr
        yield Vector(recompute, [s, lse], p, RECOMPUTE_FMA_OPS + (MASK_OPS if causal else 0.0), 1.0,
                     elements=s.elements)
        yield Store(p, p_t.region(b, h, rows))

    return Launch(name="recompute_p", grid=_row_grid(problem, R), program=program, smem_bytes_per_cta=0,
                  threads_per_cta=kernel.threads_per_cta, registers_per_thread=kernel.registers_per_thread)


def _softmax_bwd_launch(problem: AttentionProblem, p_t: GlobalTensor, dp_t: GlobalTensor, ds_t: GlobalTensor,
                        kernel: RowKernel) -> Launch:
    """dS = P * (dP - rowsum(P * dP)), in the launch shape of the forward's softmax kernel (PyTorch pairs
    each forward kernel with a backward one of the same shape). Its instructions per element were not
    profiled: the forward kernel's, over its two passes, are assumed."""
    R, L = kernel.rows_per_cta, problem.kv_len
    per_pass = kernel.instructions_per_element / 2

    def program(cta):
        b, h, grp = cta
        rows = slice(grp * R, grp * R + R)
        p = Tile((R, L), p_t.dtype, "reg", "P")
        dp = Tile((R, L), dp_t.dtype, "reg", "dP")
        dsum = Tile((R,), "fp32", "reg", "D")
        ds = Tile((R, L), ds_t.dtype, "reg", "dS")
        p_ready = yield Load(p_t.region(b, h, rows), p, wait=False)
        yield Load(dp_t.region(b, h, rows), dp)
        yield Wait(p_ready)
        yield Vector(lambda x, y: (x * y).sum(axis=1), [p, dp], dsum, per_pass, elements=p.elements)
        yield Vector(lambda x, y, dd: x * (y - dd[:, None]), [p, dp, dsum], ds, per_pass, elements=p.elements)
        yield Store(ds, ds_t.region(b, h, rows))

    return Launch(name="softmax_bwd", grid=_row_grid(problem, R), program=program,
                  smem_bytes_per_cta=kernel.smem_bytes_per_cta, threads_per_cta=kernel.threads_per_cta,
                  registers_per_thread=kernel.registers_per_thread)


def _scale_launch(name: str, problem: AttentionProblem, src: GlobalTensor, dst: GlobalTensor, block: tuple,
                  group_m: int = 1) -> Launch:
    """dst = src * scale, elementwise, walking the matrix in `block` tiles in the producer's order."""
    br, bc = block
    scale = problem.scale
    grid = _tile_grid(src, br, bc, group_m)

    def program(cta):
        b, h, tr, tc = cta
        region = (b, h, slice(tr * br, (tr + 1) * br), slice(tc * bc, (tc + 1) * bc))
        x = Tile((br, bc), src.dtype, "reg", "x")
        y = Tile((br, bc), dst.dtype, "reg", "y")
        yield Load(src.region(*region), x)
        yield Vector(lambda v: v * scale, [x], y, SCALE_OPS)
        yield Store(y, dst.region(*region))

    return Launch(name=name, grid=grid, program=program, smem_bytes_per_cta=0,
                  threads_per_cta=ELEMENTWISE_THREADS, registers_per_thread=ELEMENTWISE_REGISTERS_PER_THREAD)


def _pointwise_launch(name: str, problem: AttentionProblem, srcs: list, dsts: list, fn, block: tuple,
                      kernel: PointwiseKernel, group_m: int = 1) -> Launch:
    """dsts = fn(b, h, rows, cols, *srcs) elementwise, walking [B, H, N, L] in `block` tiles in the order of
    the launch that produced srcs[0] (so the L2 sees that launch's tiles while they are still resident).
    fn gets the tile's row range and column slice, for position-dependent work (masks, dropout)."""
    br, bc = block
    n, length = srcs[0].shape[2], srcs[0].shape[3]
    grid = _tile_grid(srcs[0], br, bc, group_m)

    def program(cta):
        b, h, tr, tc = cta
        rows = range(tr * br, min((tr + 1) * br, n))
        cols = slice(tc * bc, min((tc + 1) * bc, length))
        shape = (len(rows), cols.stop - cols.start)
        region = (b, h, slice(rows.start, rows.stop), cols)
        ins = [Tile(shape, t.dtype, "reg", f"x{i}") for i, t in enumerate(srcs)]
        outs = tuple(Tile(shape, t.dtype, "reg", f"y{i}") for i, t in enumerate(dsts))
        handles = []
        for t, tile in zip(srcs, ins):
            handles.append((yield Load(t.region(*region), tile, wait=False)))
        for handle in handles:
            yield Wait(handle)
        yield Vector(lambda *xs: fn(b, h, rows, cols, *xs), ins, outs if len(outs) > 1 else outs[0],
                     kernel.instructions_per_element, elements=shape[0] * shape[1])
        for t, tile in zip(dsts, outs):
            yield Store(tile, t.region(*region))

    return Launch(name=name, grid=grid, program=program, smem_bytes_per_cta=0, threads_per_cta=kernel.threads_per_cta,
                  registers_per_thread=kernel.registers_per_thread)


def _mask_fill(problem: AttentionProblem, value: float = -np.inf):
    """fn for the mask pass: `value` where the causal mask hides a key (PyTorch's masked_fill_ with -inf; an
    additive -10000 mask gives the same softmax in bf16). Without causal masking the mask (a key-padding mask
    with every key valid) changes nothing, but the kernel still streams the matrix. value=0 is the backward of
    masked_fill."""
    offset = causal_offset(problem)

    def fill(b, h, rows, cols, x):
        if not problem.causal:
            return x
        visible = np.arange(cols.start, cols.stop)[None, :] <= np.arange(rows.start, rows.stop)[:, None] + offset
        return np.where(visible, x, value)
    return fill


def _mask_fill_grad(problem: AttentionProblem):
    return _mask_fill(problem, 0.0)


def _dropout_fns(problem: AttentionProblem, p: float, seed: int):
    """(forward fn: P -> (dropped P, keep mask), backward fn: (dPd, keep) -> dP), PyTorch's inverted dropout:
    kept elements are scaled by 1 / (1 - p) in both directions."""
    scale = 1.0 / (1.0 - p)

    def forward(b, h, rows, cols, x):
        keep = dropout_keep(seed, b, h, rows, problem.kv_len, p)[:, cols]
        return np.where(keep, x * scale, 0.0), keep.astype(np.float32)

    def backward(b, h, rows, cols, grad, keep):
        return grad * keep * scale
    return forward, backward


def _softmax_bwd_premul_launch(problem: AttentionProblem, t_t: GlobalTensor, p_t: GlobalTensor,
                               ds_t: GlobalTensor, kernel: RowKernel) -> Launch:
    """The row kernel after PyTorch's premultiply: dS = tmp - P * rowsum(tmp) with tmp = dP * P (in HBM)."""
    R, L = kernel.rows_per_cta, problem.kv_len
    warp = kernel.name == "softmax_warp_forward"
    per_element = WARP_SOFTMAX_BWD_INSTRUCTIONS if warp else kernel.instructions_per_element
    registers = WARP_SOFTMAX_BWD_REGISTERS if warp else kernel.registers_per_thread

    def program(cta):
        b, h, grp = cta
        rows = slice(grp * R, min(grp * R + R, problem.seq_len))
        n_rows = rows.stop - rows.start
        t = Tile((n_rows, L), t_t.dtype, "reg", "T")
        p = Tile((n_rows, L), p_t.dtype, "reg", "P")
        tsum = Tile((n_rows,), "fp32", "reg", "D")
        ds = Tile((n_rows, L), ds_t.dtype, "reg", "dS")
        t_ready = yield Load(t_t.region(b, h, rows), t, wait=False)
        yield Load(p_t.region(b, h, rows), p)
        yield Wait(t_ready)
        yield Vector(lambda x: x.sum(axis=1), [t], tsum, per_element / 2, elements=t.elements)
        yield Vector(lambda x, y, dd: x - y * dd[:, None], [t, p, tsum], ds, per_element / 2, elements=t.elements)
        yield Store(ds, ds_t.region(b, h, rows))

    return Launch(name="softmax_bwd", grid=_row_grid(problem, R), program=program,
                  smem_bytes_per_cta=kernel.smem_bytes_per_cta, threads_per_cta=kernel.threads_per_cta,
                  registers_per_thread=registers)


# ============================================================================================== plan
def build_plan(problem: AttentionProblem, hw, options=None) -> KernelPlan:
    opts = resolve_options(NAME, OPTIONS, options)
    if problem.dtype == "fp8":
        raise InputError("naive: the eager PyTorch path has no FP8 attention (bf16 or fp16 only)")
    for key in ("block_m", "block_n", "block_k", "stages", "group_m"):
        if opts[key] <= 0:
            raise InputError(f"naive: option {key} must be positive")
    drop_p, mask_pass, premul = opts["dropout_p"], opts["mask_pass"], opts["softmax_bwd_premul"]
    if not 0.0 <= drop_p < 1.0:
        raise InputError(f"naive: option dropout_p={drop_p} must be in [0, 1)")
    if drop_p and problem.pass_ == "bwd":
        raise InputError("naive: dropout_p needs the keep mask its forward draws; use pass fwd or fwd_bwd")
    b, h, n, l = problem.batch, problem.heads, problem.seq_len, problem.kv_len
    group = problem.group_size
    dt = tensor_dtype(problem)
    separate = opts["separate_scale"]
    scale = problem.scale
    backward = problem.pass_ != "fwd"
    tensors = declare_tensors(problem, backward=backward)
    q_t, k_t, v_t, o_t, lse_t = (tensors[x] for x in ("Q", "K", "V", "O", "LSE"))
    require_hbm(NAME, _scratch_matrices(opts, backward) * b * h * n * l * problem.element_bytes
                + (b * h * n * l if drop_p else 0) + sum(t.nbytes for t in tensors.values()), hw)

    def nn(name: str, dtype: str = dt) -> GlobalTensor:
        t = GlobalTensor(name, (b, h, n, l), dtype, "scratch")
        tensors[name] = t
        return t

    def same(head: int):
        return [(head, head // group)]

    launches: list[Launch] = []
    rows = row_kernel(problem)
    row_block = (rows.rows_per_cta, l)
    info: dict = {"separate_scale": separate, "instruction": hw.best_instruction(problem.dtype),
                  "softmax_kernel": rows.name}
    if mask_pass != "none" or drop_p or premul:
        info.update(mask_pass=mask_pass, dropout_p=drop_p, softmax_bwd_premul=premul)

    # -------------------------------------------------------------- S = Q K^T (forward, or recompute for bwd)
    s_t = nn("S")
    qk = _Gemm("qk_gemm", s_t, q_t, False, k_t, True, same, None if separate else scale)
    launch, qk_tiles = _gemm_launch(qk, problem, hw, opts)
    launches.append(launch)
    info["gemm_tiles"] = qk_tiles[:3]
    scores = s_t
    if separate:
        scores = nn("Ss")
        launches.append(_scale_launch("scale", problem, s_t, scores, qk_tiles[:2], opts["group_m"]))
    if mask_pass != "none":
        masked = nn("Sm")
        launches.append(_pointwise_launch("mask", problem, [scores], [masked], _mask_fill(problem), qk_tiles[:2],
                                          BROADCAST_MASK_KERNEL, opts["group_m"]))
        scores = masked
    p_t = nn("P")
    dropout_fwd, dropout_bwd = _dropout_fns(problem, drop_p, opts["dropout_seed"])
    if problem.pass_ == "bwd":
        launches.append(_recompute_p_launch(problem, scores, lse_t, p_t, rows))
        p_used = p_t
    else:
        launches.append(_softmax_launch(problem, scores, p_t, lse_t, rows, problem.causal and mask_pass == "none"))
        p_used = p_t
        if drop_p:
            p_used, keep_t = nn("Pd"), nn("Keep", "int8")
            launches.append(_pointwise_launch("dropout", problem, [p_t], [p_used, keep_t], dropout_fwd, row_block,
                                              DROPOUT_KERNEL))
        pv = _Gemm("pv_gemm", o_t, p_used, False, v_t, False, same, None)
        launches.append(_gemm_launch(pv, problem, hw, opts)[0])
    if not backward:
        info["launch_count"] = len(launches)
        return KernelPlan(kernel=NAME, tensors=tensors, launches=launches, info=info)

    # -------------------------------------------------------------- backward
    do_t, dq_t, dk_t, dv_t = (tensors[x] for x in ("dO", "dQ", "dK", "dV"))

    def group_pairs(kv_head: int) -> list:  # dV, dK of a KV head sum the products of its query heads
        return [(q_head, q_head) for q_head in range(kv_head * group, (kv_head + 1) * group)]
    dv = _Gemm("dv_gemm", dv_t, p_used, True, do_t, False, group_pairs, None)
    launches.append(_gemm_launch(dv, problem, hw, opts)[0])
    dp_t = nn("dPd" if drop_p else "dP")
    dp = _Gemm("dp_gemm", dp_t, do_t, False, v_t, True, same, None)
    launches.append(_gemm_launch(dp, problem, hw, opts)[0])
    if drop_p:
        undropped = nn("dP")
        launches.append(_pointwise_launch("dropout_bwd", problem, [dp_t, keep_t], [undropped], dropout_bwd,
                                          row_block, DROPOUT_BWD_KERNEL))
        dp_t = undropped
    ds_t = nn("dS")
    if premul:
        t_t = nn("dPxP")
        launches.append(_pointwise_launch("softmax_bwd_mul", problem, [dp_t, p_t], [t_t],
                                          lambda b_, h_, r, c, x, y: x * y, row_block, PREMUL_KERNEL))
        launches.append(_softmax_bwd_premul_launch(problem, t_t, p_t, ds_t, rows))
    else:
        launches.append(_softmax_bwd_launch(problem, p_t, dp_t, ds_t, rows))
    if mask_pass == "masked_fill":  # autograd of masked_fill_: grad.masked_fill(mask, 0), its own kernel
        dsm_t = nn("dSm")
        launches.append(_pointwise_launch("mask_bwd", problem, [ds_t], [dsm_t], _mask_fill_grad(problem), row_block,
                                          BROADCAST_MASK_KERNEL))
        ds_t = dsm_t
    alpha = None if separate else scale
    if separate:
        dss_t = nn("dSs")
        launches.append(_scale_launch("scale_bwd", problem, ds_t, dss_t, row_block))
        ds_t = dss_t
    dq = _Gemm("dq_gemm", dq_t, ds_t, False, k_t, False, same, alpha)
    launches.append(_gemm_launch(dq, problem, hw, opts)[0])
    dk = _Gemm("dk_gemm", dk_t, ds_t, True, q_t, False, group_pairs, alpha)
    launches.append(_gemm_launch(dk, problem, hw, opts)[0])
    info["launch_count"] = len(launches)
    info["p_source"] = "recomputed from S and LSE" if problem.pass_ == "bwd" else "saved by the forward"
    return KernelPlan(kernel=NAME, tensors=tensors, launches=launches, info=info)


def _scratch_matrices(opts: dict, backward: bool) -> int:
    """How many N x N matrices of the element type the launch sequence keeps in HBM (an upper bound on
    its footprint: in-place masking would reuse S)."""
    forward = 2 + opts["separate_scale"] + (opts["mask_pass"] != "none") + bool(opts["dropout_p"])
    if not backward:
        return forward
    return (forward + 2 + opts["separate_scale"] + (opts["mask_pass"] == "masked_fill")
            + bool(opts["dropout_p"]) + opts["softmax_bwd_premul"])
