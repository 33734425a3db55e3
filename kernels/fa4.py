"""FlashAttention-4 (Zadouri, Hoehnerbach, Shah, Liu, Thakkar, Dao 2026, arXiv 2603.05451): forward pass for
Blackwell (tcgen05 tensor cores with accumulators in tensor memory). Forward only: the backward is not modeled.

Schedule (the paper's forward pipeline and flash_attn/cute/flash_fwd_sm100.py): one CTA per pair of 128-row
Q tiles ("q stages") of one (batch, head), so a CTA covers 256 query rows; warp roles:
  - load warp: TMA loads of Q0, Q1 and of K and V tiles through `stages`-deep SMEM rings;
  - MMA warp: issues every tcgen05 MMA, S_i = Q_i K_j^T into TMEM and O_i += P_i V_j with P read from TMEM
    (P aliases S's columns, so S_i of the next tile is issued after P_i V_j of this one);
  - two softmax warpgroups, one per Q tile: row max, exponentials (a share of them as a polynomial on the FP32
    pipe), P written to TMEM, row sums; they ping-pong, so one's softmax overlaps the other tile's MMAs;
  - a correction warpgroup: rescales O_i in TMEM by exp(m_old - m_new) between P V products, and at the end
    normalizes O by the row sum and writes O and the log-sum-exp.
TMEM per SM holds S and O of both Q tiles: 2 x 128 x (block_n + d) x 4 bytes = 256 KB at d = 128 (with d
up to 256 one Q tile per CTA). The MMA warp's instructions run on the tensor core in issue order; the program
issues each MMA when the previous one completes, which is the same timing (the next one cannot start
earlier) and lets the MMA warp signal completions itself (tcgen05.commit to an mbarrier).

Mechanisms, each an option:
  - exp_on_fma_fraction: share of the exponentials computed by Cody-Waite range reduction plus a degree-3
    polynomial on the FP32 pipe instead of the MUFU (paper: 10-25% of the elements);
  - rescale_threshold (log2 units, 8 = a factor of 256): the online softmax keeps the old row max unless the
    new one exceeds it by more than the threshold, so O is rarely rescaled. Programs cannot branch on data,
    so the correction warpgroup is charged the rescale on a fixed share of the tiles (RESCALED_TILE_FRACTION)
    and the functional interpreter always applies the exact update (the result is exact either way);
    0 = rescale every tile;
  - two_cta: 2-CTA MMA (cta_group::2, M = 256 over a CTA pair): each CTA holds and reads from SMEM only half of
    the B operand (K for S, V for P V). Modeled per CTA: the MMAs charge half the B-operand SMEM traffic and
    the K/V rings take half the SMEM; the loads still bring whole K/V tiles into each CTA (the functional
    interpreter needs the whole tile in one program), so L2->SM bytes for K/V are counted twice for a pair;
  - lpt_schedule: causal grids are ordered longest-processing-time first (the Q tiles nearest the end of the
    sequence, which see the most keys, start first) within sections of heads whose K and V fit the L2
    budget the FA3/FA4 tile scheduler uses (32 MB), so concurrent CTAs still share K/V in L2.
Differences: a plain grid in that order stands for FA4's persistent tile scheduler (no overlap of one tile's
epilogue with the next tile's prologue); the TMEM load/store traffic of the softmax and correction
warpgroups is not charged (the model has no TMEM port); the polynomial's two integer ops (shift, add on
the ALU pipe) are not charged (the model has FP32 and MUFU pipes only).
"""

from __future__ import annotations

import math

import numpy as np

from gpusim.errors import InputError
from gpusim.launch import KernelPlan, Launch, Option, resolve_options
from gpusim.ops import Acquire, Load, Mma, Semaphore, Signal, Store, Tile, Vector
from gpusim.problem import AttentionProblem
from gpusim.kernels.attention_common import (EXP_FMA_OPS_PER_ELEMENT, MAX_OPS_PER_ELEMENT, RESCALE_OPS_PER_ELEMENT,
                                             SUM_OPS_PER_ELEMENT, causal_walk_key, declare_tensors, finalize_output,
                                             kv_tiles_for_rows, masked_scores, tensor_dtype, tile_needs_mask)
from gpusim.kernels.warp_specialized import SmemRing

NAME = "fa4"
PROBLEM = AttentionProblem
OPTIONS = {
    "block_n": Option(int, 128, "K/V rows per tile"),
    "stages": Option(int, None, "depth of the K and V SMEM rings (default: the deepest of 2-3 that fits)"),
    "two_cta": Option(bool, True, "2-CTA MMA: half the B-operand SMEM traffic and K/V SMEM per CTA"),
    "exp_on_fma_fraction": Option(float, 0.15, "share of exponentials computed by a polynomial on the FP32 pipe"),
    "rescale_threshold": Option(float, 8.0, "rescale O only when the row max grows by more than this "
                                            "(log2 units; 0 = every tile)"),
    "lpt_schedule": Option(bool, True, "causal: longest-processing-time-first order of Q tiles (L2-aware sections)"),
}

#: Rows of one Q tile: the M of a single-CTA tcgen05 MMA whose accumulator spans TMEM's 128 lanes.
BLOCK_M = 128
#: Q tiles per CTA (two softmax warpgroups ping-pong), when S and O of both fit in TMEM.
Q_STAGES = 2
#: FP32-pipe instructions of one software 2^x (flash_attn/cute/utils.py ex2_emulation): clamp (fmax),
#: round-down add, two subtracts for the fraction, three FMAs of the degree-3 Horner polynomial.
FMA_OPS_PER_SOFTWARE_EXP = 7.0
#: Share of tiles on which the thresholded online softmax still rescales O. The FA4 paper (and its
#: announcement: "new online softmax to avoid 90% of softmax rescaling") reports that about 90% of the
#: rescales are skipped with the threshold log2(256) = 8.
RESCALED_TILE_FRACTION = 0.1
#: K and V bytes per scheduler section: the FA3/FA4 LPT tile scheduler (hopper/tile_scheduler.hpp,
#: flash_attn/cute/tile_scheduler.py) groups heads so that their K and V take at most 32 MB of L2.
L2_KV_BUDGET_BYTES = 32 * 2**20


def rescale_charged(i: int, threshold: float) -> bool:
    """Whether the correction warpgroup is charged the O rescale on the i-th K/V tile of a row block. The
    first tile never rescales (O is empty); without a threshold every later tile does; with one, tiles are
    charged at the rate RESCALED_TILE_FRACTION, spread evenly."""
    if i == 0:
        return False
    if threshold <= 0:
        return True
    return math.floor(i * RESCALED_TILE_FRACTION) > math.floor((i - 1) * RESCALED_TILE_FRACTION)


def lpt_grid(problem: AttentionProblem, m_blocks: int) -> list[tuple[int, int, int]]:
    """(m_block, batch, head) in longest-processing-time-first order: heads in sections whose K/V fit
    L2_KV_BUDGET_BYTES (heads of one KV group adjacent), and within a section the last Q tiles first."""
    kv_head_bytes = problem.kv_len * 2 * problem.head_dim * problem.element_bytes
    swizzle = 1 if kv_head_bytes > L2_KV_BUDGET_BYTES else 2 ** int(math.log2(L2_KV_BUDGET_BYTES // kv_head_bytes))
    swizzle *= problem.group_size  # query heads of one KV head share its K/V
    heads = [(b, h) for b in range(problem.batch) for h in range(problem.heads)]
    grid = []
    for start in range(0, len(heads), swizzle):
        section = heads[start:start + swizzle]
        for mb in reversed(range(m_blocks)):
            grid.extend((mb, b, h) for b, h in section)
    return grid


def _tmem_bytes(q_stages: int, block_n: int, head_dim: int) -> int:
    return q_stages * BLOCK_M * (block_n + head_dim) * 4


def build_plan(problem: AttentionProblem, hw, options=None) -> KernelPlan:
    opts = resolve_options(NAME, OPTIONS, options)
    if problem.pass_ != "fwd":
        raise InputError("fa4: only the forward pass is modeled (pass=fwd)")
    if problem.dtype == "fp8":
        raise InputError("fa4: the fp8 forward is not modeled; use bf16/fp16 (or fa3 for fp8 on Hopper)")
    if hw.tensor_flops_per_clk("tcgen05", problem.dtype) <= 0:
        raise InputError(f"fa4: hardware {hw.name} lacks the tcgen05 tensor instruction (Blackwell); "
                         f"FlashAttention-4 needs tcgen05 MMAs with tensor memory")
    if hw.tmem_per_sm_bytes <= 0:
        raise InputError(f"fa4: hardware {hw.name} has no tensor memory (tmem_per_sm_bytes)")
    if not hw.has_tma:
        raise InputError(f"fa4: hardware {hw.name} has no TMA (has_tma)")
    bn, d = opts["block_n"], problem.head_dim
    frac, threshold = opts["exp_on_fma_fraction"], opts["rescale_threshold"]
    if bn <= 0:
        raise InputError("fa4: block_n must be positive")
    if not 0.0 <= frac <= 1.0:
        raise InputError(f"fa4: exp_on_fma_fraction={frac} must be in [0, 1]")
    if threshold < 0:
        raise InputError(f"fa4: rescale_threshold={threshold} must not be negative")
    q_stages = Q_STAGES if _tmem_bytes(Q_STAGES, bn, d) <= hw.tmem_per_sm_bytes else 1
    if _tmem_bytes(q_stages, bn, d) > hw.tmem_per_sm_bytes:
        raise InputError(f"fa4: S and O of one {BLOCK_M}-row Q tile ({_tmem_bytes(1, bn, d)} bytes) exceed the "
                         f"{hw.tmem_per_sm_bytes} bytes of tensor memory of {hw.name}")
    el = problem.element_bytes
    two_cta = opts["two_cta"]
    kv_stage_bytes = 2 * bn * d * el / (2 if two_cta else 1)
    q_bytes = q_stages * BLOCK_M * d * el
    stages = opts["stages"]
    if stages is None:
        stages = max([s for s in (2, 3) if q_bytes + s * kv_stage_bytes <= hw.smem_per_cta_max_bytes] or [1])
    if stages <= 0:
        raise InputError("fa4: stages must be positive")
    tensors = declare_tensors(problem)
    launch = forward_launch(problem, tensors, bn, q_stages, stages, two_cta, frac, threshold,
                            opts["lpt_schedule"], int(q_bytes + stages * kv_stage_bytes))
    return KernelPlan(kernel=NAME, tensors=tensors, launches=[launch],
                      info={"block_m": BLOCK_M * q_stages, "q_stages": q_stages, "block_n": bn, "stages": stages,
                            "instruction": "tcgen05", "two_cta": two_cta, "exp_on_fma_fraction": frac,
                            "rescale_threshold": threshold, "lpt_schedule": opts["lpt_schedule"]})


def forward_launch(problem: AttentionProblem, tensors: dict, bn: int, q_stages: int, stages: int, two_cta: bool,
                   frac: float, threshold: float, lpt: bool, smem_bytes: int) -> Launch:
    q_t, k_t, v_t, o_t, lse_t = (tensors[k] for k in ("Q", "K", "V", "O", "LSE"))
    d, n, group = problem.head_dim, problem.seq_len, problem.group_size
    dt = tensor_dtype(problem)
    cta_rows = BLOCK_M * q_stages
    m_blocks = -(-n // cta_rows)
    if lpt and problem.causal:
        grid = lpt_grid(problem, m_blocks)
    else:
        grid = [(mb, b, h) for h in range(problem.heads) for b in range(problem.batch) for mb in range(m_blocks)]
    el = problem.element_bytes
    b_operand = bn * d * el // (2 if two_cta else 1)  # K (for S) and V (for P V) tiles are both bn x d
    s_smem = BLOCK_M * d * el + b_operand  # Q from SMEM, K (half of it under 2-CTA)
    pv_smem = b_operand  # P from TMEM, V from SMEM
    exp_fp32 = EXP_FMA_OPS_PER_ELEMENT + frac * FMA_OPS_PER_SOFTWARE_EXP
    exp_mufu = 1.0 - frac

    def program(cta):
        mb, b, h = cta
        hk = h // group
        r0 = mb * cta_rows
        tiles = kv_tiles_for_rows(problem, r0, min(r0 + cta_rows, n), bn)
        count = len(tiles)

        def kv(i):
            return slice(tiles[i] * bn, (tiles[i] + 1) * bn)

        def rows(st):
            return slice(r0 + st * BLOCK_M, r0 + (st + 1) * BLOCK_M)

        valid = [max(0, min(BLOCK_M, n - (r0 + st * BLOCK_M))) for st in range(q_stages)]
        q = [Tile((BLOCK_M, d), dt, "smem", f"Q{st}") for st in range(q_stages)]
        s = [Tile((BLOCK_M, bn), "fp32", "tmem", f"S{st}") for st in range(q_stages)]
        p = [Tile((BLOCK_M, bn), dt, "tmem", f"P{st}") for st in range(q_stages)]  # aliases S's columns
        o = [Tile((BLOCK_M, d), "fp32", "tmem", f"O{st}") for st in range(q_stages)]
        m = [Tile((BLOCK_M,), "fp32", "reg", f"m{st}") for st in range(q_stages)]
        l_ = [Tile((BLOCK_M,), "fp32", "reg", f"l{st}") for st in range(q_stages)]
        alpha = [Tile((BLOCK_M,), "fp32", "smem", f"alpha{st}") for st in range(q_stages)]
        k_ring = SmemRing("K", stages, lambda i: [Tile((bn, d), dt, "smem", f"K{i}")])
        v_ring = SmemRing("V", stages, lambda i: [Tile((bn, d), dt, "smem", f"V{i}")])
        sem = {name: [Semaphore(f"{name}{st}", initial=1 if name == "alpha_free" else 0) for st in range(q_stages)]
               for name in ("q_full", "s_full", "p_ready", "alpha_ready", "alpha_free", "pv_done", "o_ready",
                            "l_done")}

        def load():
            for st in range(q_stages):
                yield Load(q_t.region(b, h, rows(st)), q[st], wait=False, signal=sem["q_full"][st], tma=True)
            for i in range(count):
                yield from k_ring.produce(i, [k_t.region(b, hk, kv(i))])
                yield from v_ring.produce(i, [v_t.region(b, hk, kv(i))])

        def mma():
            for st in range(q_stages):
                yield Acquire(sem["q_full"][st])
            v_tile = None
            for i in range(count + 1):
                if i > 0:  # O_st += P_st V_{i-1}: P of the previous tile must be read before S_st is rewritten
                    v_tile = (yield from v_ring.consume(i - 1))[0]
                k_tile = (yield from k_ring.consume(i))[0] if i < count else None
                for st in range(q_stages):
                    if i > 0:
                        yield Acquire(sem["p_ready"][st])
                        yield Acquire(sem["o_ready"][st])
                        yield Mma(p[st], v_tile, o[st], "tcgen05", accumulate=i > 1, smem_read_bytes=pv_smem)
                        yield Signal(sem["pv_done"][st])
                    if i < count:
                        yield Mma(q[st], k_tile, s[st], "tcgen05", b_transposed=True, smem_read_bytes=s_smem)
                        yield Signal(sem["s_full"][st])
                if i < count:
                    yield from k_ring.release(i)
                if i > 0:
                    yield from v_ring.release(i - 1)

        def softmax(st):
            row0 = r0 + st * BLOCK_M
            m_old = Tile((BLOCK_M,), "fp32", "reg", "m_old")
            yield Vector(lambda: np.full(valid[st], -np.inf), [], m[st], 0.0)
            yield Vector(lambda: np.zeros(valid[st]), [], l_[st], 0.0)
            for i in range(count):
                j = tiles[i]
                f = masked_scores(problem, row0, j * bn, tile_needs_mask(problem, row0, j * bn, (j + 1) * bn))
                yield Acquire(sem["s_full"][st])
                yield Vector(lambda m_: m_.copy(), [m[st]], m_old, 0.0, elements=BLOCK_M)
                yield Vector(lambda s_, m_, f=f: np.maximum(m_, f(s_).max(axis=1)), [s[st], m[st]], m[st],
                             MAX_OPS_PER_ELEMENT, elements=s[st].elements)
                yield Acquire(sem["alpha_free"][st])
                yield Vector(lambda mo, mn: np.exp(_safe(mo) - _safe(mn)) * np.isfinite(mo), [m_old, m[st]],
                             alpha[st], 1.0, 1.0, elements=BLOCK_M)
                yield Signal(sem["alpha_ready"][st])  # the correction warpgroup can rescale O now
                yield Vector(lambda s_, m_, f=f: np.exp(f(s_) - _safe(m_)[:, None]), [s[st], m[st]], p[st],
                             exp_fp32, exp_mufu, elements=s[st].elements)
                yield Signal(sem["p_ready"][st])
                yield Vector(lambda l0, a, p_: l0 * a + p_.sum(axis=1), [l_[st], alpha[st], p[st]], l_[st],
                             SUM_OPS_PER_ELEMENT, elements=s[st].elements)
            yield Signal(sem["l_done"][st])

        def correction():
            for st in range(q_stages):
                yield Vector(lambda st=st: np.zeros((valid[st], d)), [], o[st], 0.0)
            for i in range(count):
                for st in range(q_stages):
                    yield Acquire(sem["alpha_ready"][st])
                    if i > 0:
                        yield Acquire(sem["pv_done"][st])
                    ops = RESCALE_OPS_PER_ELEMENT if rescale_charged(i, threshold) else 0.0
                    yield Vector(lambda o_, a: o_ * a[:, None], [o[st], alpha[st]], o[st], ops,
                                 elements=o[st].elements)
                    yield Signal(sem["alpha_free"][st])
                    yield Signal(sem["o_ready"][st])
            for st in range(q_stages):
                yield Acquire(sem["pv_done"][st])
                yield Acquire(sem["l_done"][st])
                out = Tile((BLOCK_M, d), o_t.dtype, "smem", f"O{st}.out")
                lse = Tile((BLOCK_M,), "fp32", "reg", f"LSE{st}")
                yield from finalize_output(o[st], l_[st], m[st], out, lse)
                if valid[st]:
                    yield Store(out, o_t.region(b, h, rows(st)))
                    yield Store(lse, lse_t.region(b, h, rows(st)))

        return [load(), mma(), correction()] + [softmax(st) for st in range(q_stages)]

    threads = 128 * q_stages + 128 + 128  # softmax warpgroups, correction warpgroup, load/MMA/epilogue warps
    def work(cta) -> float:  # K/V tiles the CTA visits (plus its prologue/epilogue)
        r0 = cta[0] * cta_rows
        return 1 + len(kv_tiles_for_rows(problem, r0, min(r0 + cta_rows, n), bn))

    def shared_by(cta):  # a causal CTA walks its own keys up to its diagonal (causal_walk_key)
        mb, b, h = cta
        key = causal_walk_key(problem, b, h // group, mb * cta_rows, min((mb + 1) * cta_rows, n), bn) \
            if problem.causal else (b, h // group)
        return {"K": key, "V": key}

    return Launch(name="fa4_fwd", grid=grid, program=program, smem_bytes_per_cta=smem_bytes,
                  threads_per_cta=threads, registers_per_thread=65536 // threads,
                  shared_by=shared_by,
                  work=work if problem.causal else None)


def _safe(m: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(m), m, 0.0)
