"""FlashAttention-1 (Dao et al. 2022, arXiv 2205.14135), Section 3.1 Algorithm 1 (forward) and Appendix B.4
Algorithm 4 (backward with recomputation).

Forward: the outer loop walks K/V blocks j (B_c keys, loaded once into SMEM), the inner loop walks Q blocks i
(B_r rows); for every (j, i) the CTA loads Q_i and the running O_i, l_i, m_i from HBM, updates them with
block j (Algorithm 1 lines 9-12, O kept normalized by l after every step exactly as written) and writes
them back. O, l and m live in FP32 scratch tensors (`Oacc`, `Lsum`, `Mmax`) between outer iterations; the
last K/V block a Q block visits writes the bf16 output O and the log-sum-exp directly instead (so O is
converted once, at the end, and the scratch is never copied). Like the CUDA code (`Is_first`), the first
block does not read the scratch: the paper's line 2 (initialize O, l, m in HBM) is done in registers.
Block sizes come from the paper's SRAM rule with M = the SM's on-chip SRAM in elements (the unified L1 and
shared memory, sram_per_sm_bytes: 192 KB on an A100, the paper's figure): B_c = ceil(M / 4d), B_r = min(B_c, d)
(Algorithm 4 uses the same rule), rounded down to multiples of 16 and then shrunk (B_c first) until the
tiles the schedule keeps in SMEM fit one CTA's SMEM (smem_per_cta_max_bytes): K_j, V_j and two Q_i buffers
forward; K_j, V_j, Q_i, dO_i and the staged P_ij, dS_ij backward. The paper counts S_ij and the accumulators
in its SRAM too; the CUDA code (and this model) keeps them in registers, whose capacity is not checked.
block_m / block_n override. On an A100 at d = 64 this gives B_c = 384 forward (three K/V blocks at N = 1024)
and 288 backward (four). Under causal masking fully masked blocks
are skipped: the inner loop for K/V block j starts at the first Q block that sees a key of it.

Parallelization as in the original CUDA kernels: one CTA per (batch, head) runs the whole double loop
(grid = batch x heads), 4 warps, Ampere `mma.sync`. Its warps split the K/V block (the "1 x N" layout the
FlashAttention-2 paper Section 3.3 calls split-K): each warp reads all of Q_i and a quarter of K_j/V_j, and
the partial P_ij V_j products are summed across warps through SMEM (modeled as SMEM traffic on the PV
product and FP32 adds).

Backward (Algorithm 4): one CTA per (batch, KV head); the outer loop over K/V blocks keeps K_j, V_j and the
dK_j, dV_j accumulators on chip; the inner loop over Q blocks (and, for GQA, over the group's query heads,
so dK/dV are summed on chip without atomics) loads Q_i, O_i, dO_i and the LSE, recomputes
P_ij = exp(tau S_ij - LSE_i) (the paper keeps l and m; LSE = m + log l is the same information),
computes D_i = rowsum(dO_i * O_i) on its first visit (K/V block 0, which every row sees) and saves it to HBM,
reading those 4 bytes per row back later, as the CUDA code does (the paper's Algorithm 4 recomputes it on
every visit, reading O_i again), and adds dQ_i += tau dS_ij K_j into the fp32 dQ in HBM with an accumulating
store (a read-modify-write at L2).
"""

from __future__ import annotations

import math

import numpy as np

from gpusim.errors import InputError
from gpusim.launch import KernelPlan, Launch, Option, resolve_options
from gpusim.ops import GlobalTensor, Load, Loop, LoopPlan, Mma, Store, Tile, Vector, Wait
from gpusim.problem import AttentionProblem
from gpusim.kernels.attention_common import (EXP_FMA_OPS_PER_ELEMENT, MAX_OPS_PER_ELEMENT, SUM_OPS_PER_ELEMENT,
                                             declare_tensors, kv_tiles_for_rows, masked_scores, tensor_dtype,
                                             tile_needs_mask)

NAME = "fa1"
PROBLEM = AttentionProblem
OPTIONS = {
    "block_m": Option(int, None, "B_r, Q rows per inner step (default: the paper's rule for this GPU's SMEM)"),
    "block_n": Option(int, None, "B_c, K/V rows per outer step (default: the paper's rule for this GPU's SMEM)"),
    "warps": Option(int, 4, "warps per CTA (they split the K/V block, FA1's 1 x N layout)"),
}
#: Tile granularity of mma.sync (m16n8k16): block sizes are multiples of 16.
TILE_QUANTUM = 16
#: Tensors whose rows of one (batch, head) a forward CTA alone reads and writes. Named for folding (Launch.owned_by):
#: a folded block's Q / Oacc tiles are its CTAs' real tiles, so they take the L2 classes exact mode's take.
OWN_ROW_TENSORS = ("Q", "Oacc", "Lsum", "Mmax", "O", "LSE")
#: FA1's kernels use most of the register file per thread.
REGISTERS_PER_THREAD = 255

# ---- per-element instruction counts (algorithm constants)
#: O_i = (l_i e^{m_i - m_new} O_i + e^{m~ - m_new} P~V) / l_new: two FMAs and a multiply by 1 / l_new.
O_UPDATE_OPS = 3.0
#: Per-row statistics (m_new, the two exponential factors, l_new): a few FP32 ops per row.
ROW_STAT_OPS = 1.0
#: Backward: P = exp(tau S - LSE) is one FMA plus one MUFU exponential; dS = P (dP - D) a subtract and a
#: multiply; D = rowsum(dO * O) a multiply-add per element of dO; scaling dQ_i / dK_j by tau one multiply.
BWD_P_FMA_OPS, BWD_DS_OPS, BWD_D_OPS, BWD_SCALE_OPS = 1.0, 2.0, 1.0, 1.0
#: Causal select on masked tiles.
MASK_OPS = 1.0
#: Epilogue conversion of an FP32 tile to the output type.
CONVERT_OPS = 1.0


def _round_down(x: int, q: int = TILE_QUANTUM) -> int:
    return max(q, (x // q) * q)


def _round_up(x: int, q: int = TILE_QUANTUM) -> int:
    return max(q, -(-x // q) * q)


def forward_smem_bytes(br: int, bc: int, d: int, e: float) -> int:
    """SMEM tiles of the forward schedule: K_j, V_j and two Q_i buffers (prefetch). S_ij, P_ij and the O_i, l_i,
    m_i state live in registers, as in the CUDA code."""
    return int((2 * bc * d + 2 * br * d) * e)


def backward_smem_bytes(br: int, bc: int, d: int, e: float) -> int:
    """SMEM tiles of the backward schedule: K_j, V_j, Q_i, dO_i and the P_ij and dS_ij tiles staged for the
    transposed products. O_i, S, dP and the dK_j, dV_j, dQ_i accumulators live in registers."""
    return int((2 * bc * d + 2 * br * d + 2 * br * bc) * e)


def paper_block_sizes(hw, problem: AttentionProblem, footprint, block_m=None, block_n=None) -> tuple[int, int]:
    """B_c = ceil(M / 4d), B_r = min(B_c, d) with M the SM's SRAM in elements, then shrunk (B_c first,
    while B_c > B_r, else B_r) in steps of 16 until `footprint` fits; capped at the (rounded-up) sequence
    lengths. Explicit block sizes are used as given."""
    d, e = problem.head_dim, problem.element_bytes
    m_elements = (hw.sram_per_sm_bytes or hw.smem_per_sm_bytes) / e
    bc = math.ceil(m_elements / (4 * d))
    br = min(bc, d)
    bc = _round_down(min(bc, _round_up(problem.kv_len)))
    br = _round_down(min(br, _round_up(problem.seq_len)))
    budget = hw.smem_per_cta_max_bytes
    while footprint(br, bc, d, e) > budget and (bc > TILE_QUANTUM or br > TILE_QUANTUM):
        if bc > br or br <= TILE_QUANTUM:
            bc -= TILE_QUANTUM
        else:
            br -= TILE_QUANTUM
    if footprint(br, bc, d, e) > budget:
        raise InputError(f"fa1: head_dim {d} leaves no block size whose tiles fit {budget} bytes of SMEM on {hw.name}")
    return block_m or br, block_n or bc


def _wait(handle):
    if handle is not None:
        yield Wait(handle)


def _safe(m: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(m), m, 0.0)


def _q_blocks_for_kv_block(problem: AttentionProblem, j: int, br: int, bc: int) -> list[int]:
    """Q blocks with at least one row that sees a key of K/V block j (all of them without causal masking)."""
    tr = -(-problem.seq_len // br)
    return [i for i in range(tr)
            if j in kv_tiles_for_rows(problem, i * br, min((i + 1) * br, problem.seq_len), bc)]


# ============================================================================================== forward
def forward_launch(problem: AttentionProblem, tensors: dict, br: int, bc: int, warps: int) -> Launch:
    q_t, k_t, v_t, o_t, lse_t = (tensors[x] for x in ("Q", "K", "V", "O", "LSE"))
    oacc_t, l_t, m_t = tensors["Oacc"], tensors["Lsum"], tensors["Mmax"]
    d, group, dt = problem.head_dim, problem.group_size, tensor_dtype(problem)
    n = problem.seq_len
    tc = -(-problem.kv_len // bc)
    plan = []  # per K/V block: (j, [(i, last)])
    for j in range(tc):
        blocks = []
        for i in _q_blocks_for_kv_block(problem, j, br, bc):
            tiles = kv_tiles_for_rows(problem, i * br, min((i + 1) * br, n), bc)
            blocks.append((i, j == tiles[-1]))
        if blocks:
            plan.append((j, blocks))
    grid = [(b, h) for b in range(problem.batch) for h in range(problem.heads)]
    sampled = not problem.causal

    def program(cta):
        b, h = cta
        hk = h // group
        k = Tile((bc, d), dt, "smem", "K")
        v = Tile((bc, d), dt, "smem", "V")
        q_buf = [Tile((br, d), dt, "smem", f"Q{x}") for x in range(2)]
        o_buf = [Tile((br, d), "fp32", "reg", f"O{x}") for x in range(2)]
        l_buf = [Tile((br,), "fp32", "reg", f"l{x}") for x in range(2)]
        m_buf = [Tile((br,), "fp32", "reg", f"m{x}") for x in range(2)]
        s = Tile((br, bc), "fp32", "reg", "S")
        p = Tile((br, bc), dt, "reg", "P")
        pv = Tile((br, d), "fp32", "reg", "PV")
        m_til, l_til = Tile((br,), "fp32", "reg", "m~"), Tile((br,), "fp32", "reg", "l~")
        m_new, l_new = Tile((br,), "fp32", "reg", "m_new"), Tile((br,), "fp32", "reg", "l_new")
        alpha, beta = Tile((br,), "fp32", "reg", "alpha"), Tile((br,), "fp32", "reg", "beta")
        o_new = Tile((br, d), "fp32", "reg", "O_new")

        # Without causal masking both loops are announced (engine loop_sampling may run only the first and
        # last iterations of a long one and account for the middle): every K/V block visits every Q block, so
        # the outer iterations are alike and each inner loop walks the same Q, O, l, m tiles again. (Causal
        # inner loops start at the diagonal: the sampled tiles would shift from one outer step to the next.)
        outer = (yield Loop(len(plan))) if sampled else None
        for jj in (outer.indices if outer is not None else range(len(plan))):
            if outer is not None:
                yield outer.mark(jj)
            j, blocks = plan[jj]
            cols = slice(j * bc, (j + 1) * bc)
            first = j == 0
            k_ready = yield Load(k_t.region(b, hk, cols), k, wait=False)
            v_ready = yield Load(v_t.region(b, hk, cols), v, wait=False)

            def issue(idx, x):
                rows = slice(blocks[idx][0] * br, (blocks[idx][0] + 1) * br)
                handles = [(yield Load(q_t.region(b, h, rows), q_buf[x], wait=False))]
                if not first:
                    handles.append((yield Load(oacc_t.region(b, h, rows), o_buf[x], wait=False)))
                    handles.append((yield Load(l_t.region(b, h, rows), l_buf[x], wait=False)))
                    handles.append((yield Load(m_t.region(b, h, rows), m_buf[x], wait=False)))
                return handles

            inner = (yield Loop(len(blocks), data_key="q_blocks")) if sampled else LoopPlan(len(blocks),
                                                                                            range(len(blocks)))
            pending = yield from issue(inner.indices[0], 0)
            yield Wait(k_ready)
            for pos, idx in enumerate(inner.indices):
                yield inner.mark(idx)
                i, last = blocks[idx]
                x = pos % 2
                r0 = i * br
                rows = slice(r0, r0 + br)
                valid = min(br, n - r0)
                for handle in pending:
                    yield Wait(handle)
                following = inner.next_index(pos)
                if following is not None:
                    pending = yield from issue(following, 1 - x)
                q, o_old, l_old, m_old = q_buf[x], o_buf[x], l_buf[x], m_buf[x]
                if first:  # Is_first: O = 0, l = 0, m = -inf start in registers
                    yield Vector(lambda: np.zeros((valid, d)), [], o_old, 0.0)
                    yield Vector(lambda: np.zeros(valid), [], l_old, 0.0)
                    yield Vector(lambda: np.full(valid, -np.inf), [], m_old, 0.0)
                # Line 9: S_ij = Q_i K_j^T (each warp reads all of Q_i and its quarter of K_j).
                yield Mma(q, k, s, "mma_sync", warps=warps, b_transposed=True,
                          smem_read_bytes=warps * q.nbytes + k.nbytes)
                mask = masked_scores(problem, r0, j * bc, tile_needs_mask(problem, r0, j * bc, (j + 1) * bc))
                # Line 10: m~ = rowmax(S), P~ = exp(S - m~), l~ = rowsum(P~).
                yield Vector(lambda s_: mask(s_).max(axis=1), [s], m_til, MAX_OPS_PER_ELEMENT, elements=s.elements)
                yield Vector(lambda s_, m_: np.exp(mask(s_) - _safe(m_)[:, None]), [s, m_til], p,
                             EXP_FMA_OPS_PER_ELEMENT, 1.0, elements=s.elements)
                yield Vector(lambda p_: p_.sum(axis=1), [p], l_til, SUM_OPS_PER_ELEMENT, elements=s.elements)
                # Line 11: m_new = max(m_i, m~), l_new = e^{m_i - m_new} l_i + e^{m~ - m_new} l~.
                yield Vector(np.maximum, [m_old, m_til], m_new, ROW_STAT_OPS, elements=br)
                yield Vector(lambda a, mn: np.exp(_safe(a) - _safe(mn)) * np.isfinite(a), [m_old, m_new], alpha,
                             ROW_STAT_OPS, 1.0, elements=br)
                yield Vector(lambda a, mn: np.exp(_safe(a) - _safe(mn)) * np.isfinite(a), [m_til, m_new], beta,
                             ROW_STAT_OPS, 1.0, elements=br)
                yield Vector(lambda l0, a, lt, bt: a * l0 + bt * lt, [l_old, alpha, l_til, beta], l_new,
                             2 * ROW_STAT_OPS, elements=br)
                # Line 12: O_i = diag(l_new)^-1 (diag(l_i) e^{m_i - m_new} O_i + e^{m~ - m_new} P~ V_j).
                yield from _wait(v_ready)
                v_ready = None
                yield Mma(p, v, pv, "mma_sync", warps=warps, smem_read_bytes=v.nbytes + 2 * warps * pv.nbytes)
                yield Vector(lambda t: t, [pv], pv, float(warps - 1))  # cross-warp sum of the split-K partials
                yield Vector(lambda o, l0, a, pv_, bt, ln: np.divide(
                    (l0 * a)[:, None] * o + bt[:, None] * pv_, ln[:, None],
                    out=np.zeros_like(pv_), where=ln[:, None] > 0),
                    [o_old, l_old, alpha, pv, beta, l_new], o_new, O_UPDATE_OPS, elements=pv.elements)
                # Line 13: write O_i, l_i, m_i back (the final block writes O and the log-sum-exp instead).
                if last:
                    out = Tile((br, d), o_t.dtype, "reg", "O")
                    lse = Tile((br,), "fp32", "reg", "LSE")
                    yield Vector(lambda t: t, [o_new], out, CONVERT_OPS)
                    yield Vector(lambda mx, sm: np.where(sm > 0, _safe(mx) + np.log(np.where(sm > 0, sm, 1.0)),
                                                         -np.inf), [m_new, l_new], lse, ROW_STAT_OPS, 1.0,
                                 elements=br)
                    yield Store(out, o_t.region(b, h, rows))
                    yield Store(lse, lse_t.region(b, h, rows))
                else:
                    yield Store(o_new, oacc_t.region(b, h, rows))
                    yield Store(l_new, l_t.region(b, h, rows))
                    yield Store(m_new, m_t.region(b, h, rows))

    smem = forward_smem_bytes(br, bc, d, problem.element_bytes)
    return Launch(name="fa1_fwd", grid=grid, program=program, smem_bytes_per_cta=smem, threads_per_cta=32 * warps,
                  registers_per_thread=REGISTERS_PER_THREAD,
                  shared_by=lambda cta: {"K": (cta[0], cta[1] // group), "V": (cta[0], cta[1] // group)},
                  owned_by=lambda cta: dict.fromkeys(OWN_ROW_TENSORS, cta))


# ============================================================================================== backward
def backward_launch(problem: AttentionProblem, tensors: dict, br: int, bc: int, warps: int) -> Launch:
    q_t, k_t, v_t, o_t, lse_t = (tensors[x] for x in ("Q", "K", "V", "O", "LSE"))
    do_t, dq_t, dk_t, dv_t, d_t = (tensors[x] for x in ("dO", "dQ", "dK", "dV", "D"))
    d, group, dt = problem.head_dim, problem.group_size, tensor_dtype(problem)
    scale = problem.scale
    tc = -(-problem.kv_len // bc)
    grid = [(b, hk) for b in range(problem.batch) for hk in range(problem.kv_heads)]

    def program(cta):
        b, hk = cta
        k = Tile((bc, d), dt, "smem", "K")
        v = Tile((bc, d), dt, "smem", "V")
        q = Tile((br, d), dt, "smem", "Q")
        o = Tile((br, d), o_t.dtype, "reg", "O")
        do = Tile((br, d), do_t.dtype, "smem", "dO")
        lse = Tile((br,), "fp32", "reg", "LSE")
        s = Tile((br, bc), "fp32", "reg", "S")
        p = Tile((br, bc), dt, "smem", "P")
        pt = Tile((bc, br), dt, "smem", "P^T")
        dp = Tile((br, bc), "fp32", "reg", "dP")
        ds = Tile((br, bc), dt, "smem", "dS")
        dst = Tile((bc, br), dt, "smem", "dS^T")
        dd = Tile((br,), "fp32", "reg", "D")
        dq = Tile((br, d), "fp32", "reg", "dQ_i")
        dk_acc = Tile((bc, d), "fp32", "reg", "dK")
        dv_acc = Tile((bc, d), "fp32", "reg", "dV")
        for j in range(tc):
            c0 = j * bc
            cols = slice(c0, c0 + bc)
            valid_cols = min(bc, problem.kv_len - c0)
            k_ready = yield Load(k_t.region(b, hk, cols), k, wait=False)
            yield Load(v_t.region(b, hk, cols), v)
            yield Wait(k_ready)
            yield Vector(lambda: np.zeros((valid_cols, d)), [], dk_acc, 0.0)
            yield Vector(lambda: np.zeros((valid_cols, d)), [], dv_acc, 0.0)
            for h in range(hk * group, (hk + 1) * group):
                for i in _q_blocks_for_kv_block(problem, j, br, bc):
                    r0 = i * br
                    rows = slice(r0, r0 + br)
                    first_visit = j == 0  # key 0 is visible to every row, causal or not
                    handles = [(yield Load(q_t.region(b, h, rows), q, wait=False)),
                               (yield Load(do_t.region(b, h, rows), do, wait=False))]
                    if first_visit:
                        handles.append((yield Load(o_t.region(b, h, rows), o, wait=False)))
                    else:
                        handles.append((yield Load(d_t.region(b, h, rows), dd, wait=False)))
                    yield Load(lse_t.region(b, h, rows), lse)
                    for handle in handles:
                        yield Wait(handle)
                    # S_ij = tau Q_i K_j^T; P_ij = exp(S_ij - LSE_i) (masked).
                    yield Mma(q, k, s, "mma_sync", warps=warps, b_transposed=True,
                              smem_read_bytes=warps * q.nbytes + k.nbytes)
                    needs_mask = tile_needs_mask(problem, r0, c0, c0 + bc)
                    mask = masked_scores(problem, r0, c0, needs_mask)
                    yield Vector(lambda s_, l_: np.exp(mask(s_) - _safe(l_)[:, None]), [s, lse], p,
                                 BWD_P_FMA_OPS + (MASK_OPS if needs_mask else 0.0), 1.0, elements=s.elements)
                    # dV_j += P_ij^T dO_i (P^T read through the transposed SMEM path).
                    yield Vector(lambda t: t.T, [p], pt, 0.0)
                    yield Mma(pt, do, dv_acc, "mma_sync", warps=warps, accumulate=True,
                              smem_read_bytes=warps * do.nbytes + p.nbytes)
                    # dP_ij = dO_i V_j^T; D_i = rowsum(dO_i * O_i) (first visit; saved); dS_ij = P_ij (dP_ij - D_i).
                    yield Mma(do, v, dp, "mma_sync", warps=warps, b_transposed=True,
                              smem_read_bytes=warps * do.nbytes + v.nbytes)
                    if first_visit:
                        yield Vector(lambda a, c: (a * c).sum(axis=1), [do, o], dd, 2 * BWD_D_OPS,
                                     elements=do.elements)
                        yield Store(dd, d_t.region(b, h, rows))
                    yield Vector(lambda p_, dp_, d_: p_ * (dp_ - d_[:, None]), [p, dp, dd], ds, BWD_DS_OPS,
                                 elements=s.elements)
                    # dQ_i += tau dS_ij K_j, accumulated in HBM (read-modify-write at L2).
                    yield Mma(ds, k, dq, "mma_sync", warps=warps, smem_read_bytes=warps * k.nbytes + ds.nbytes)
                    yield Vector(lambda t: t * scale, [dq], dq, BWD_SCALE_OPS)
                    yield Store(dq, dq_t.region(b, h, rows), accumulate=True)
                    # dK_j += dS_ij^T Q_i (tau applied once at the end).
                    yield Vector(lambda t: t.T, [ds], dst, 0.0)
                    yield Mma(dst, q, dk_acc, "mma_sync", warps=warps, accumulate=True,
                              smem_read_bytes=warps * q.nbytes + ds.nbytes)
            dk_out = Tile((bc, d), dk_t.dtype, "reg", "dK_out")
            dv_out = Tile((bc, d), dv_t.dtype, "reg", "dV_out")
            yield Vector(lambda t: t * scale, [dk_acc], dk_out, BWD_SCALE_OPS)
            yield Vector(lambda t: t, [dv_acc], dv_out, CONVERT_OPS)
            yield Store(dk_out, dk_t.region(b, hk, cols))
            yield Store(dv_out, dv_t.region(b, hk, cols))

    smem = backward_smem_bytes(br, bc, d, problem.element_bytes)
    return Launch(name="fa1_bwd", grid=grid, program=program, smem_bytes_per_cta=smem, threads_per_cta=32 * warps,
                  registers_per_thread=REGISTERS_PER_THREAD)  # every tile is its CTA's own: no sharing


# ============================================================================================== plan
def build_plan(problem: AttentionProblem, hw, options=None) -> KernelPlan:
    opts = resolve_options(NAME, OPTIONS, options)
    if problem.dtype == "fp8":
        raise InputError("fa1: FlashAttention-1 has no FP8 path (bf16 or fp16)")
    for key in ("block_m", "block_n", "warps"):
        if opts[key] is not None and opts[key] <= 0:
            raise InputError(f"fa1: option {key} must be positive")
    if hw.tensor_flops_per_clk("mma_sync", problem.dtype) <= 0:
        raise InputError(f"fa1: {hw.name} has no mma.sync rate for {problem.dtype}")
    backward = problem.pass_ != "fwd"
    tensors = declare_tensors(problem, backward=backward)
    b, h, n = problem.batch, problem.heads, problem.seq_len
    info: dict = {"instruction": "mma_sync", "warps": opts["warps"], "o_scratch": "fp32 Oacc/Lsum/Mmax, bf16 O "
                  "written by the last K/V block"}
    launches = []
    if problem.pass_ in ("fwd", "fwd_bwd"):
        br, bc = paper_block_sizes(hw, problem, forward_smem_bytes, opts["block_m"], opts["block_n"])
        tensors["Oacc"] = GlobalTensor("Oacc", (b, h, n, problem.head_dim), "fp32", "scratch")
        tensors["Lsum"] = GlobalTensor("Lsum", (b, h, n), "fp32", "scratch")
        tensors["Mmax"] = GlobalTensor("Mmax", (b, h, n), "fp32", "scratch")
        launches.append(forward_launch(problem, tensors, br, bc, opts["warps"]))
        info.update(block_m=br, block_n=bc)
    if backward:
        br, bc = paper_block_sizes(hw, problem, backward_smem_bytes, opts["block_m"], opts["block_n"])
        tensors["D"] = GlobalTensor("D", (b, h, n), "fp32", "scratch")
        launches.append(backward_launch(problem, tensors, br, bc, opts["warps"]))
        info.update(bwd_block_m=br, bwd_block_n=bc)
    return KernelPlan(kernel=NAME, tensors=tensors, launches=launches, info=info)
