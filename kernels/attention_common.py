"""Pieces every attention schedule shares: tensor declarations, causal tile bounds, and the online-softmax
step (FlashAttention-2 paper, Algorithm 1 lines 8-10) as op sequences.

Per-element instruction counts below are the algorithm's own (what the kernels' inner loops execute per
score element), not hardware efficiency factors; the hardware decides how long each instruction takes.
"""

from __future__ import annotations

import math

import numpy as np

from gpusim.launch import RegionKey, WalkedRange
from gpusim.ops import GlobalTensor, Tile, Vector
from gpusim.problem import AttentionProblem

#: FP32 instructions per score element in the online softmax, split by step:
#:  scale + causal select + running row max (2), exp2 argument FMA (1), row sum (1).
MAX_OPS_PER_ELEMENT = 2.0
EXP_FMA_OPS_PER_ELEMENT = 1.0
SUM_OPS_PER_ELEMENT = 1.0
#: Rescaling the output accumulator by exp(m_old - m_new): one multiply per accumulator element.
RESCALE_OPS_PER_ELEMENT = 1.0
#: FA2's forward on a score tile that the causal mask cuts: about 1000 more warp instructions per tile, whatever
#: its size (ncu, validation/README.md run 11: 830-1208 at d = 64 on 128 x 128 tiles, 1100-1170 at d = 128 on
#: 128 x 64), as FP32 lane operations.
MASKED_TILE_FP32_OPS = 1000 * 32


def tensor_dtype(problem: AttentionProblem) -> str:
    return "fp8" if problem.dtype == "fp8" else problem.dtype


def declare_tensors(problem: AttentionProblem, *, lse: bool = True, backward: bool = False) -> dict[str, GlobalTensor]:
    """Q, K, V inputs and O output (and LSE, and the backward pass's dO, dQ, dK, dV)."""
    b, h, hk, n, l, d = (problem.batch, problem.heads, problem.kv_heads, problem.seq_len, problem.kv_len,
                         problem.head_dim)
    dt = tensor_dtype(problem)
    out_dt = "bf16" if dt == "fp8" else dt
    forward_kind = "input" if problem.pass_ == "bwd" else "output"  # a backward-only pass reads O and LSE
    tensors = {
        "Q": GlobalTensor("Q", (b, h, n, d), dt, "input"),
        "K": GlobalTensor("K", (b, hk, l, d), dt, "input"),
        "V": GlobalTensor("V", (b, hk, l, d), dt, "input"),
        "O": GlobalTensor("O", (b, h, n, d), out_dt, forward_kind),
    }
    if lse or backward:
        tensors["LSE"] = GlobalTensor("LSE", (b, h, n), "fp32", forward_kind)
    if backward:
        tensors["dO"] = GlobalTensor("dO", (b, h, n, d), out_dt, "input")
        tensors["dQ"] = GlobalTensor("dQ", (b, h, n, d), "fp32", "output")
        tensors["dK"] = GlobalTensor("dK", (b, hk, l, d), out_dt, "output")
        tensors["dV"] = GlobalTensor("dV", (b, hk, l, d), out_dt, "output")
    return tensors


def own_regions(tensors: dict[str, GlobalTensor], names, *index) -> dict[str, RegionKey]:
    """`shared_by` keys for tiles a CTA owns (the same region of each named tensor) that another launch
    reads back, e.g. a preprocessing launch's rows of dO: folded runs then stand for the real tiles, which
    that launch finds in L2, rather than stand-ins. Keyed by each tensor's own name (which a role name such as
    "dO" may map to a copy, "dO.copy"), as the engine looks tiles up by it."""
    return {tensors[name].name: RegionKey.of_region(tensors[name].region(*index)) for name in names}


def causal_walk_key(problem: AttentionProblem, b: int, kv_head: int, row_start: int, row_stop: int, block_n: int,
                    descending: bool = False) -> RegionKey:
    """`shared_by` key of a causal CTA's K and V: the range of keys it walks (kv_tiles_for_rows), in tiles of
    `block_n`, from the diagonal down when `descending`. Folding then has a representative's read at each step
    stand for the tile each CTA of its block reads at that step (launch.WalkedRange)."""
    tiles = kv_tiles_for_rows(problem, row_start, row_stop, block_n)
    walked = WalkedRange(tiles.start * block_n, tiles.stop * block_n, block_n, descending)
    return RegionKey({0: b, 1: kv_head, 2: walked})


def causal_offset(problem: AttentionProblem) -> int:
    """Query i sees keys j <= i + offset (bottom-right alignment)."""
    return problem.kv_len - problem.seq_len


def kv_tiles_for_rows(problem: AttentionProblem, row_start: int, row_stop: int, block_n: int,
                      kv_start: int = 0, kv_stop: int | None = None) -> range:
    """Indices of the K/V tiles (of `block_n` keys) that rows [row_start, row_stop) must visit within
    keys [kv_start, kv_stop): all of them, or under causal masking only those left of the diagonal."""
    kv_stop = problem.kv_len if kv_stop is None else kv_stop
    if problem.causal:
        last_visible = min(row_stop, problem.seq_len) - 1 + causal_offset(problem)
        kv_stop = min(kv_stop, last_visible + 1)
    first, stop = kv_start // block_n, math.ceil(kv_stop / block_n)
    return range(first, max(first, stop))


def tile_needs_mask(problem: AttentionProblem, row_start: int, col_start: int, col_stop: int) -> bool:
    """True when some key in [col_start, col_stop) is hidden from some query row >= row_start."""
    return problem.causal and col_stop - 1 > row_start + causal_offset(problem)


def masked_scores(problem: AttentionProblem, row_start: int, col_start: int, needs_mask: bool):
    """Function applying scale and (if needed) the causal mask to a raw score tile."""
    scale, offset = problem.scale, causal_offset(problem)

    def apply(s: np.ndarray) -> np.ndarray:
        s = s * scale
        if needs_mask:
            rows = np.arange(row_start, row_start + s.shape[0])[:, None]
            cols = np.arange(col_start, col_start + s.shape[1])[None, :]
            s = np.where(cols <= rows + offset, s, -np.inf)
        return s
    return apply


def _safe(m: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(m), m, 0.0)


def init_row_state(rows: int, block_m: int, head_dim: int, acc_rows: int | None = None):
    """Ops and tiles for the running max m, running sum l and output accumulator of `rows` valid rows."""
    m = Tile((block_m,), "fp32", "reg", "m")
    l_ = Tile((block_m,), "fp32", "reg", "l")
    acc = Tile((block_m, head_dim), "fp32", "reg", "acc")
    ops = [Vector(lambda: np.full(rows, -np.inf), [], m, 0.0),
           Vector(lambda: np.zeros(rows), [], l_, 0.0),
           Vector(lambda: np.zeros((acc_rows or rows, head_dim)), [], acc, 0.0)]
    return m, l_, acc, ops


def online_softmax(s: Tile, m: Tile, l_: Tile, acc: Tile, p: Tile, scale_and_mask,
                   *, exp_on_fma_fraction: float = 0.0, fma_ops_per_software_exp: float = 0.0,
                   rescale: bool = True, extra_fp32_ops: float = 0.0, instructions: int = 0):
    """Yield the op of one online-softmax step on score tile `s` (raw Q K^T), as one fused Vector op of
    dependent steps: m_new = max(m, rowmax(s')); p = exp(s' - m_new); alpha = exp(m - m_new);
    l = l * alpha + rowsum(p); acc *= alpha, where s' = scale_and_mask(s). `p` receives P in its own
    dtype (the operand of the P V product).

    exp_on_fma_fraction moves that share of the exponentials from the MUFU to a polynomial on the FP32
    pipe (FlashAttention-4); rescale=False skips the accumulator rescale work (FA4's conditional rescaling
    when the max did not grow enough; the functional result is still exact because the step is applied
    with the true max here, see fa4). `extra_fp32_ops`: the tile's own work beyond the per-element counts
    (a causal mask's, MASKED_TILE_FP32_OPS). `instructions`: the warp instructions it issues (ops.Vector)."""
    def step(s_, m0, l0, o):
        scaled = scale_and_mask(s_)
        m_new = np.maximum(m0, scaled.max(axis=1))
        p_ = np.exp(scaled - _safe(m_new)[:, None])
        alpha = np.exp(_safe(m0) - _safe(m_new)) * np.isfinite(m0)
        return m_new, p_, l0 * alpha + p_.sum(axis=1), o * alpha[:, None]

    mufu = 1.0 - exp_on_fma_fraction
    fma = EXP_FMA_OPS_PER_ELEMENT + exp_on_fma_fraction * fma_ops_per_software_exp
    steps = ((s.elements, MAX_OPS_PER_ELEMENT + extra_fp32_ops / s.elements, 0.0),  # scale, mask, running max
             (s.elements, fma, mufu),                             # exponentials
             (m.elements, 1.0, 1.0),                              # alpha = exp(m_old - m_new)
             (s.elements, SUM_OPS_PER_ELEMENT, 0.0),              # row sums
             (acc.elements, RESCALE_OPS_PER_ELEMENT if rescale else 0.0, 0.0))  # acc *= alpha
    yield Vector(step, [s, m, l_, acc], (m, p, l_, acc), steps=steps, instructions=instructions)


def finalize_output(acc: Tile, l_: Tile, m: Tile, out: Tile, lse: Tile | None, instructions: int = 0):
    """O = acc / l (rows with l = 0 give 0) and LSE = m + log(l). `instructions`: the epilogue's warp
    instructions (ops.Vector)."""
    yield Vector(lambda o, s: np.divide(o, s[:, None], out=np.zeros_like(o), where=s[:, None] > 0),
                 [acc, l_], out, 1.0, elements=acc.elements, instructions=instructions)
    if lse is not None:
        yield Vector(lambda mx, s: np.where(s > 0, _safe(mx) + np.log(np.where(s > 0, s, 1.0)), -np.inf),
                     [m, l_], lse, 1.0, 1.0, elements=m.elements)
