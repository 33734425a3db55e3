"""FlashAttention-3 (Shah et al. 2024, arXiv 2407.08608): forward (Sec. 3.1-3.2, Algorithms 1-2), FP8
forward (Sec. 3.3) and backward (Appendix B) for Hopper.

Forward. One CTA per (Q tile, batch, head), grid order (m_block, batch, head) with the Q tile fastest (FA3 can
run persistent CTAs with a tile scheduler; a plain grid is used here, so one CTA's epilogue does not overlap
the next one's prologue). A producer warpgroup streams K and V tiles with TMA into `stages`-deep SMEM rings
guarded by full/empty barriers (Sec. 3.1, "producer-consumer asynchrony"); the consumer warpgroups each own
64 rows of the CTA's Q tile (wgmma's M = 64 per warpgroup), so a 128-row tile has two consumers and a
192-row tile three. Tile sizes are those of the public FA3 release (hopper/, July 2024): bf16 d <= 64:
192 x 128; d <= 128: 128 x 176 (128 x 128 causal); d <= 192: 128 x 112; d <= 256: 128 x 80; fp8: 192 x 160,
128 x 224, 128 x 160, 128 x 128. Both products are asynchronous `wgmma`s (Q and K from SMEM, P from
registers); mechanisms, each an option:
  - pingpong (Sec. 3.1, Fig. 1): a round-robin barrier makes the consumer warpgroups issue their GEMMs in
    turn, so one warpgroup's softmax runs while the other's GEMMs occupy the tensor core. The turn is handed
    on when the warpgroup's GEMMs complete (the code arrives when they are issued; with the tensor core's
    in-order execution the next warpgroup's GEMMs start at the same time either way, see PingPong);
  - intra_wg_pipeline (Sec. 3.2, Algorithm 2): S_next = Q K_{j+1}^T and O += P_j V_j are issued together and
    the softmax of S_next runs while P_j V_j is on the tensor core (P V is issued when S_next completes,
    which is when the in-order tensor core would start it); off, the code's non-IntraWGOverlap mainloop
    (CollectiveMainloopFwdSm90::mma in hopper/mainloop_fwd_sm90_tma_gmma_ws.hpp): S, wait, softmax, P V,
    wait, with the scheduler barrier around the pair, not the single GEMM: a warpgroup's turn is P_{j-1} V_{j-1}
    (waited for to completion) followed by S_j, so the other warpgroup's GEMMs never overlap a P V and every
    turn pays the P V completion latency; the barrier is used only with two consumer warpgroups
    (UseSchedulerBarrier), and the producer loads K_j and V_j in turn (V is no longer one tile behind K).
    Tiles and register split are those of the default (tile_size_fwd_sm90 ties no other tile to it at d 128);
  - warp_specialization: off, there is no producer warpgroup and no setmaxnreg (two consumer warpgroups get
    255 registers a thread without it, more than setmaxnreg's 240, so registers limit nothing). The paper's
    no-WS kernel is not public; this one follows CUTLASS's. The K/V rings stay in SMEM, shared
    by the consumer warpgroups (per-warpgroup copies would not fit two stages in SMEM and would double L2
    traffic), and one elected thread of consumer warpgroup 0 issues their TMA loads in its own instruction
    stream, as CUTLASS's non-warp-specialized sm90 mainloop does (KernelTma, sm90_mma_tma_gmma_ss.hpp: a
    prologue fills every stage; after releasing a slot the thread acquires it again for the tile `stages`
    ahead, see warp_specialized.InlineLoader). The acquire waits for the other warpgroup's release of the
    same tile, and with ping-pong that warpgroup is a GEMM turn behind: warpgroup 0 stalls before its
    softmax every iteration and the stagger that ping-pong builds collapses into lockstep. In lockstep the
    intra-warpgroup overlap still hides each softmax behind the warpgroup's own P V (a warpgroup's wgmmas run
    in issue order), so the loss is the softmax that outlasts the P Vs (Table 2: 570 TFLOP/s);
  - causal masking skips the K/V tiles right of the CTA's diagonal (all of the CTA's warpgroups walk the
    CTA's tiles, as the code does; a warpgroup's tiles past its own diagonal are fully masked).
Without causal masking every role walks the K/V tiles as one announced shared loop (ops.Loop), so that folded
mode samples a long walk (131k tokens: 6.6k events instead of 358k) and reads its skipped tiles through L2 as
the data the CTAs share (engine.loop_sampling); causal CTAs, of different lengths, run every iteration.

FP8 (problem.dtype == "fp8"): Q, K, V are e4m3 tensors in HBM with descale factors, P is rounded to e4m3 for
the P V product, both products run at the wgmma fp8 rate. `fp8_scaling="block"` gives every Q tile and
every K/V tile its own scale (as later FA3 releases and the paper's discussion of block quantization), "tensor"
one scale per tensor. The quantization itself happens before the kernel (as with the real FA3 API, which
takes fp8 tensors plus descales); `quantize_inputs` performs it (optionally with the paper's incoherent
processing, a random Hadamard rotation of Q and K) and returns the inputs a functional run needs. In the
kernel the Q and K descales fold into the per-tile softmax scale and the V descale into the accumulator
rescale, so scaling costs no per-element instruction. Differences: the in-SMEM transpose of V that fp8
wgmma needs (done by the producer warpgroup, Sec. 3.3) is not charged.

Backward (pass bwd / fwd_bwd), after FA3's Appendix B and hopper/mainloop_bwd (tiles: `bwd_block_m` query
rows per step, `bwd_block_n` keys per CTA, the release's by default): a preprocess launch computes
D = rowsum(dO * O) and zeroes the fp32 dQ accumulator; the main launch has one CTA per (K/V block, batch,
KV head); a producer warp loads K and V once and streams (Q, dO, LSE, D) tiles through a ring; each consumer
warpgroup owns 64 keys and computes S^T = K Q^T and dP^T = V dO^T with wgmma, P^T and dS^T; dS goes to
SMEM and all consumer warpgroups meet at a named barrier (the code's PdS: every warpgroup's dS is written
before any reads it), then each computes dV += P^T dO, its share of the head-dim columns of
dQ_i = dS K over every warpgroup's keys, and dK += dS^T Q, and adds its dQ columns to the fp32 dQaccum with an
atomic reduce (Store accumulate=True). The barrier keeps the warpgroups in step, so their exponentials and dS
arithmetic run at the same time and the tensor core waits for them (cuDNN's backward, whose warps stall on
barriers 17-23% of the time: validation/README.md runs 39-40). Its instructions beyond that arithmetic (index
math, packing, the atomics' addresses) are options measured per implementation (`extra_bwd_ops_*`). A
postprocess launch writes dQ = scale * dQaccum in the output type (flash_bwd_postprocess). Differences:
query heads of a GQA group are walked inside the CTA (dK, dV stay in registers) instead of atomically
accumulating dK/dV per head; P stays in registers (FA3 also writes it to SMEM where its dV product reads it
from there, the order whose barrier the model follows); the forward-only options (pingpong,
warp_specialization, intra_wg_pipeline) do not change the backward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gpusim.errors import InputError
from gpusim.launch import MAX_REGISTERS_PER_THREAD, KernelPlan, Launch, Option, resolve_options
from gpusim.ops import Acquire, GlobalTensor, Load, Loop, LoopPlan, Mma, Semaphore, Signal, Store, Tile, Vector
from gpusim.problem import AttentionProblem
from gpusim.kernels.attention_common import (EXP_FMA_OPS_PER_ELEMENT, causal_walk_key, declare_tensors, finalize_output,
                                             init_row_state, kv_tiles_for_rows, masked_scores, online_softmax,
                                             own_regions, tensor_dtype, tile_needs_mask)
from gpusim.kernels.fa2_backward import convert_dq_launch
from gpusim.kernels.warp_specialized import CommitQueue, InlineLoader, NamedBarrier, PingPong, SmemRing, wait_for

NAME = "fa3"
PROBLEM = AttentionProblem
OPTIONS = {
    "block_m": Option(int, None, "Q rows per CTA, a multiple of 64: one consumer warpgroup per 64 rows "
                                 "(default: FA3's tile for the head dim and dtype)"),
    "block_n": Option(int, None, "K/V rows per tile (default: FA3's tile for the head dim and dtype)"),
    "stages": Option(int, 2, "depth of the K and V SMEM rings"),
    "warp_specialization": Option(bool, True, "a producer warpgroup issues TMA loads; off: consumer warpgroup 0 "
                                              "issues them in-line, refilling each slot once every consumer "
                                              "has released it"),
    "pingpong": Option(bool, True, "consumer warpgroups take turns issuing GEMMs (softmax overlaps the other's GEMMs)"),
    "intra_wg_pipeline": Option(bool, True, "issue S_next = Q K_next^T with P V before the softmax of S_next"),
    "bwd_block_m": Option(int, None, "backward: query rows per step (default: the FA3 release's for the head dim)"),
    "bwd_block_n": Option(int, None, "backward: keys per CTA, a multiple of 64: one consumer warpgroup per 64 "
                                     "keys (default: the FA3 release's for the head dim)"),
    "fp8_scaling": Option(str, "block", "fp8 only: one scale per Q/K/V tile, or one per tensor",
                          choices=("block", "tensor")),
    "incoherent_processing": Option(bool, False, "fp8 only, used by quantize_inputs: rotate Q and K by a random "
                                                 "Hadamard matrix before quantizing (FA3 Sec. 3.3)"),
    "extra_softmax_ops_per_score": Option(float, 0.0, "FP32 lane operations per score element a consumer warpgroup "
                                                      "issues in its softmax beyond the online softmax's arithmetic "
                                                      "(index math, moves, packing P): an implementation's ncu count"),
    "extra_softmax_ops_per_acc": Option(float, 0.0, "the same per output-accumulator element (beside its rescale)"),
    "extra_bwd_ops_per_score": Option(float, 0.0, "backward: FP32 lane operations per score element an "
                                                  "implementation issues beyond the step's arithmetic, split between "
                                                  "the exp and dS steps in proportion to their own counts (its ncu "
                                                  "count)"),
    "extra_bwd_ops_per_dq": Option(float, 0.0, "backward: the same per dQ element a step adds to dQaccum, "
                                               "issued after its dQ product"),
}

#: Rows of the Q tile one consumer warpgroup owns: wgmma's M per warpgroup (PTX ISA, wgmma.mma_async).
WG_ROWS = 64
#: Keys one backward consumer warpgroup owns (the M of its S^T = K Q^T wgmma).
BWD_WG_KEYS = 64
#: Warps of the dQ postprocess CTA (FA3's flash_bwd_postprocess and cuDNN's convert kernel: 128 threads, run 12).
POSTPROCESS_WARPS = 4
#: Largest finite e4m3 value: the quantizer maps a block's absolute maximum to it.
E4M3_MAX = 448.0
#: Per-element FP32 instructions of the backward's softmax-gradient: dS = P * (dP - D) is one subtract and
#: one multiply; D = rowsum(dO * O) in the preprocess is one FMA per element.
DS_OPS_PER_ELEMENT = 2.0
DELTA_OPS_PER_ELEMENT = 1.0
#: One multiply per element to apply the softmax scale to dK before writing it (dQ's is the postprocess launch's).
SCALE_OPS_PER_ELEMENT = 1.0


@dataclass(frozen=True)
class Config:
    block_m: int
    block_n: int
    stages: int
    warp_specialization: bool
    pingpong: bool
    intra_wg_pipeline: bool
    fp8: bool
    fp8_scaling: str
    tma: bool
    extra_softmax_ops_per_score: float = 0.0
    extra_softmax_ops_per_acc: float = 0.0

    @property
    def consumers(self) -> int:
        return self.block_m // WG_ROWS


def default_tiles(head_dim: int, dtype: str, causal: bool) -> tuple[int, int]:
    """(block_m, block_n) of the FA3 release for sm90 forward."""
    if dtype == "fp8":
        if head_dim <= 64:
            return 192, 160
        if head_dim <= 128:
            return 128, 224
        if head_dim <= 192:
            return 128, 160
        return 128, 128
    if head_dim <= 64:
        return 192, 128
    if head_dim <= 128:
        return 128, 128 if causal else 176
    if head_dim <= 192:
        return 128, 112
    return 128, 80


def resolve_config(problem: AttentionProblem, opts: dict, tma: bool = True) -> Config:
    bm, bn = default_tiles(problem.head_dim, problem.dtype, problem.causal)
    bm, bn = opts["block_m"] or bm, opts["block_n"] or bn
    if bm <= 0 or bn <= 0 or opts["stages"] <= 0:
        raise InputError("fa3: block_m, block_n and stages must be positive")
    if bm % WG_ROWS:
        raise InputError(f"fa3: block_m={bm} must be a multiple of {WG_ROWS} (one consumer warpgroup per "
                         f"{WG_ROWS} rows, wgmma's M)")
    if problem.head_dim > 256:
        raise InputError(f"fa3: head_dim {problem.head_dim} > 256 is not supported (FA3 supports up to 256)")
    require_non_negative(opts, ("extra_softmax_ops_per_score", "extra_softmax_ops_per_acc"))
    return Config(bm, bn, opts["stages"], opts["warp_specialization"], opts["pingpong"],
                  opts["intra_wg_pipeline"], problem.dtype == "fp8", opts["fp8_scaling"], tma,
                  opts["extra_softmax_ops_per_score"], opts["extra_softmax_ops_per_acc"])


def require_non_negative(opts: dict, keys) -> None:
    """Instruction counts are added work: a negative one is an input error."""
    for key in keys:
        if opts[key] < 0:
            raise InputError(f"fa3: option {key}={opts[key]} must not be negative")


def _registers(threads: int) -> int:
    """FA3 redistributes the whole register file with setmaxnreg (producer 24-56, consumers 160-240), so the
    launch owns it: one CTA per SM."""
    return min(MAX_REGISTERS_PER_THREAD, 65536 // threads)


# ------------------------------------------------------------------------------------------------ fp8 scales
def descale_tensors(problem: AttentionProblem, cfg: Config) -> dict[str, GlobalTensor]:
    """Descale factors (fp32): per Q tile / K-V tile with block scaling, a single value with tensor scaling."""
    if cfg.fp8_scaling == "tensor":
        one = (1, 1, 1, 1)
        return {name: GlobalTensor(name, one, "fp32", "input") for name in ("Q_descale", "K_descale", "V_descale")}
    b, h, hk = problem.batch, problem.heads, problem.kv_heads
    mq, nk = -(-problem.seq_len // cfg.block_m), -(-problem.kv_len // cfg.block_n)
    return {"Q_descale": GlobalTensor("Q_descale", (b, h, mq, 1), "fp32", "input"),
            "K_descale": GlobalTensor("K_descale", (b, hk, nk, 1), "fp32", "input"),
            "V_descale": GlobalTensor("V_descale", (b, hk, nk, 1), "fp32", "input")}


def _hadamard(d: int, seed: int) -> np.ndarray:
    if d & (d - 1):
        raise InputError(f"fa3: incoherent processing needs a power-of-two head_dim, got {d}")
    h = np.ones((1, 1))
    while h.shape[0] < d:
        h = np.block([[h, h], [h, -h]])
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=d)
    return (signs[:, None] * h) / math.sqrt(d)  # orthogonal: (Q M)(K M)^T = Q K^T


def _quantize_blocks(x: np.ndarray, block: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Scale each block of `block` rows (axis 2) of x [B, H, N, d] so its absolute maximum maps to E4M3_MAX,
    round to e4m3; block None = one scale for the tensor. Returns (values on the e4m3 grid, descales)."""
    import ml_dtypes

    def q(v, scale):
        return (v / scale).astype(ml_dtypes.float8_e4m3fn).astype(np.float32)

    if block is None:
        amax = float(np.abs(x).max())
        scale = amax / E4M3_MAX if amax > 0 else 1.0
        return q(x, scale), np.full((1, 1, 1, 1), scale, np.float32)
    b, h, n, d = x.shape
    nb = -(-n // block)
    out = np.empty_like(x, dtype=np.float32)
    scales = np.empty((b, h, nb, 1), np.float32)
    for i in range(nb):
        part = x[:, :, i * block:(i + 1) * block]
        amax = np.abs(part).max(axis=(2, 3))
        scale = np.where(amax > 0, amax / E4M3_MAX, 1.0).astype(np.float32)
        scales[:, :, i, 0] = scale
        out[:, :, i * block:(i + 1) * block] = q(part, scale[:, :, None, None])
    return out, scales


def quantize_inputs(problem: AttentionProblem, inputs: dict, hw="h200", options=None, seed: int = 0) -> dict:
    """The fp8 inputs FA3 consumes, from high-precision Q, K, V: values on the e4m3 grid plus descales (the
    quantization kernel that runs before attention). Other entries of `inputs` pass through."""
    if problem.dtype != "fp8":
        return dict(inputs)
    opts = resolve_options(NAME, OPTIONS, options)
    cfg = resolve_config(problem, opts)
    q, k, v = (np.asarray(inputs[name], np.float64) for name in ("Q", "K", "V"))
    if opts["incoherent_processing"]:
        rot = _hadamard(problem.head_dim, seed)
        q, k = q @ rot, k @ rot
    block = cfg.fp8_scaling == "block"
    out = dict(inputs)
    out["Q"], out["Q_descale"] = _quantize_blocks(q, cfg.block_m if block else None)
    out["K"], out["K_descale"] = _quantize_blocks(k, cfg.block_n if block else None)
    out["V"], out["V_descale"] = _quantize_blocks(v, cfg.block_n if block else None)
    return out


prepare_inputs = quantize_inputs  # the hook name a generic functional checker can look for


# ------------------------------------------------------------------------------------------------ forward
def forward_launch(problem: AttentionProblem, tensors: dict, cfg: Config) -> Launch:
    q_t, k_t, v_t, o_t, lse_t = (tensors[k] for k in ("Q", "K", "V", "O", "LSE"))
    d, n, group = problem.head_dim, problem.seq_len, problem.group_size
    bm, bn, n_wg = cfg.block_m, cfg.block_n, cfg.consumers
    dt = tensor_dtype(problem)
    block_scales = cfg.fp8 and cfg.fp8_scaling == "block"
    m_blocks = -(-n // bm)
    grid = [(mb, b, h) for h in range(problem.heads) for b in range(problem.batch) for mb in range(m_blocks)]

    def program(cta):
        mb, b, h = cta
        hk = h // group
        r0 = mb * bm
        tiles = kv_tiles_for_rows(problem, r0, min(r0 + bm, n), bn)
        count = len(tiles)

        def kv(tile):
            return slice(tile * bn, (tile + 1) * bn)

        pingpong = PingPong(n_wg, cfg.pingpong)
        # Without intra-warpgroup overlap the code uses its scheduler barrier only with two consumer
        # warpgroups (UseSchedulerBarrier in hopper/mainloop_fwd_sm90_tma_gmma_ws.hpp)
        no_overlap_turns = PingPong(n_wg, cfg.pingpong and n_wg == 2)
        commits = CommitQueue("gemm_done", issuers=n_wg)
        q_tiles = [Tile((WG_ROWS, d), dt, "smem", f"Q{w}") for w in range(n_wg)]
        q_full = [Semaphore(f"q_full{w}") for w in range(n_wg)]
        # One K ring and one V ring shared by the CTA's consumer warpgroups, with or without a producer
        # (without one, TMA needs an SM with TMA; otherwise the same ring is filled with cp.async)
        k_ring = SmemRing("K", cfg.stages, lambda s: [Tile((bn, d), dt, "smem", f"K{s}")], n_wg, tma=cfg.tma)
        v_ring = SmemRing("V", cfg.stages, lambda s: [Tile((bn, d), dt, "smem", f"V{s}")], n_wg, tma=cfg.tma)
        rings = {"K": (k_ring, k_t), "V": (v_ring, v_t)}
        # Every role walks the CTA's K/V tiles as one loop (announced, ops.Loop, unless causal), which the
        # folded timing model may sample: a role's positions are the entries of its walk's `indices` (the iterations it runs, the
        # same in every role), the rings are filled and drained by position and the tile at position p is
        # tiles[walk.indices[p]]. Each role marks position p where it needs nothing that another role does
        # after marking p: a sampled loop's roles jump over the skipped iterations side by side, not one
        # after the other. The producer marks p once K_p is out; a consumer at the top of its iteration
        # (with intra-warpgroup overlap it needs K_{p-1} and V_{p-2} there) or once S_p is done (without it,
        # where it holds no ping-pong turn). An in-line loader loads `stages` ahead, so the loop declares
        # that much lookahead.
        walks: dict = {}

        def announce_walk():
            """The role's walk. Causal CTAs walk different lengths, so one's L2 hits and misses in its first
            iterations do not stand for the rest of its walk: every iteration is simulated (as FA2's are)."""
            if problem.causal:
                return LoopPlan(count, range(count))
            return (yield Loop(count, lookahead=cfg.stages, shared=True))

        def wg_rows(w):
            return slice(r0 + w * WG_ROWS, r0 + (w + 1) * WG_ROWS)

        def loads_at(p, positions):
            """(ring, position) of the loads the code issues at step p of `positions`: with intra-warpgroup
            overlap K_{p+1} before V_p (V is used one step after K; step 0 starts with K_0); without it K_p, V_p."""
            if not cfg.intra_wg_pipeline:
                return [("K", p), ("V", p)]
            return ([("K", 0)] if p == 0 else []) + ([("K", p + 1)] if p + 1 < positions else []) + [("V", p)]

        def load_order(positions):
            return [load for p in range(positions) for load in loads_at(p, positions)]

        def fill(walk, name, p):
            ring, tensor = rings[name]
            yield from ring.produce(p, [tensor.region(b, hk, kv(tiles[walk.indices[p]]))])

        def load_q():
            for w in range(n_wg):
                yield Load(q_t.region(b, h, wg_rows(w)), q_tiles[w], wait=False, signal=q_full[w], tma=cfg.tma)

        def producer():
            yield from load_q()
            walk = yield from announce_walk()
            p = 0
            while p < len(walk.indices):  # (loop sampling may lengthen the walk while it runs)
                for name, j in loads_at(p, len(walk.indices)):
                    yield from fill(walk, name, j)
                    if name == "K":  # position j's iteration begins once K_j is out (see the walk's marks)
                        yield walk.mark(walk.indices[j])
                p += 1

        loader = None if cfg.warp_specialization else InlineLoader(cfg.stages, lambda name, p: fill(walks[0], name, p))

        def get_k(p, w):
            return (yield from k_ring.consume(p, w))[0]

        def get_v(p, w):
            return (yield from v_ring.consume(p, w))[0]

        def release(ring_name, p, w, holds_turn=False):
            yield from rings[ring_name][0].release(p)
            if loader is not None and w == 0:
                yield from loader.refill(ring_name, p, len(walks[0].indices), holds_turn)

        def consumer(w):
            wr0 = r0 + w * WG_ROWS
            valid = max(0, min(WG_ROWS, n - wr0))
            q = q_tiles[w]
            walk = walks[w] = yield from announce_walk()
            if loader is not None and w == 0:  # warp 0 of warpgroup 0 issues the prologue loads
                yield from load_q()
                yield from loader.prologue(load_order(len(walk.indices)))
            yield Acquire(q_full[w])
            m, l_, acc, init = init_row_state(valid, WG_ROWS, d)
            for op in init:
                yield op
            if cfg.fp8:
                qd, kd, vd, descale_handles = yield from _load_descales(tensors, b, h, hk, mb, block_scales)
            s_tiles = [Tile((WG_ROWS, bn), "fp32", "reg", f"S{k}") for k in range(2)]
            p_tiles = [Tile((WG_ROWS, bn), dt, "reg", f"P{k}") for k in range(2)]

            def softmax(pos, s, p):
                j = tiles[walk.indices[pos]]
                if cfg.fp8:
                    if pos == 0:
                        for handle in descale_handles:
                            yield from wait_for(handle)
                    kj = j if block_scales else 0
                    # the Q and K descales fold into the per-tile softmax scale (a scalar): no per-element work
                    yield Vector(lambda s_, q_, k_, kj=kj: s_ * (q_[0] * k_[kj, 0]), [s, qd, kd], s, 0.0)
                mask = masked_scores(problem, wr0, j * bn, tile_needs_mask(problem, wr0, j * bn, (j + 1) * bn))
                # the implementation's instructions beyond the softmax's arithmetic, issued in line with it
                extra = cfg.extra_softmax_ops_per_score * s.elements + cfg.extra_softmax_ops_per_acc * acc.elements
                yield from online_softmax(s, m, l_, acc, p, mask, extra_fp32_ops=extra)
                if cfg.fp8 and block_scales and pos > 0:
                    # acc is kept in units of the newest V tile's scale; the ratio folds into the rescale multiply
                    prev = tiles[walk.indices[pos - 1]]
                    yield Vector(lambda o, v_, a=prev, c=j: o * (v_[a, 0] / v_[c, 0]), [acc, vd], acc, 0.0)

            def mma_s(k_tile, s):
                return Mma(q, k_tile, s, "wgmma", b_transposed=True, wait=False)

            if cfg.intra_wg_pipeline:
                yield walk.mark(walk.indices[0])
                k_tile = yield from get_k(0, w)
                yield from pingpong.sync(w)
                hs = yield mma_s(k_tile, s_tiles[0])
                yield from pingpong.arrive_when_done(w, hs, commits)
                yield from wait_for(hs)
                yield from release("K", 0, w)
                yield from softmax(0, s_tiles[0], p_tiles[0])
                pos = 1
                while pos < len(walk.indices):
                    yield walk.mark(walk.indices[pos])
                    cur, nxt = (pos - 1) % 2, pos % 2
                    k_tile = yield from get_k(pos, w)
                    yield from pingpong.sync(w)
                    hs = yield mma_s(k_tile, s_tiles[nxt])
                    v_tile = yield from get_v(pos - 1, w)
                    # issued back to back: the tensor core runs them in order, S_next first
                    hpv = yield Mma(p_tiles[cur], v_tile, acc, "wgmma", accumulate=True, wait=False)
                    yield from pingpong.arrive_when_done(w, hpv, commits)
                    yield from wait_for(hs)
                    yield from release("K", pos, w)
                    yield from softmax(pos, s_tiles[nxt], p_tiles[nxt])
                    yield from wait_for(hpv)
                    yield from release("V", pos - 1, w)
                    pos += 1
                last = len(walk.indices) - 1
                v_tile = yield from get_v(last, w)
                yield from pingpong.sync(w)
                hpv = yield Mma(p_tiles[last % 2], v_tile, acc, "wgmma", accumulate=True, wait=False)
                yield from pingpong.arrive_when_done(w, hpv, commits)
                yield from wait_for(hpv)
                yield from release("V", last, w)
            else:
                # The code's non-IntraWGOverlap mainloop: a warpgroup's turn covers P_{j-1} V_{j-1}, waited for
                # to completion, and then S_j = Q K_j^T; the turn is handed on after S_j (sync before the loop
                # and before each P V, arrive after each S and after the loop). So one warpgroup's P V never
                # overlaps the other's GEMMs, and each turn pays the P V completion before S is issued.
                turns = no_overlap_turns
                yield from turns.sync(w)
                pos = 0
                while pos < len(walk.indices):
                    k_tile = yield from get_k(pos, w)
                    hs = yield mma_s(k_tile, s_tiles[0])
                    yield from turns.arrive_when_done(w, hs, commits)
                    yield from wait_for(hs)
                    # marked where the warpgroup holds no turn: a sampled loop's jump must not hold up the other
                    yield walk.mark(walk.indices[pos])
                    yield from release("K", pos, w)
                    yield from softmax(pos, s_tiles[0], p_tiles[0])
                    v_tile = yield from get_v(pos, w)
                    yield from turns.sync(w)
                    yield Mma(p_tiles[0], v_tile, acc, "wgmma", accumulate=True)
                    yield from release("V", pos, w, holds_turn=turns.enabled)
                    pos += 1
                yield from turns.arrive(w)
            if cfg.pingpong:
                yield from commits.close()
            if cfg.fp8:
                last = tiles[count - 1] if block_scales else 0
                # back from V-tile units: folds into the final 1/l multiply
                yield Vector(lambda o, v_, c=last: o * v_[c, 0], [acc, vd], acc, 0.0)
            out = Tile((WG_ROWS, d), o_t.dtype, "smem", "O")
            lse = Tile((WG_ROWS,), "fp32", "reg", "LSE")
            yield from finalize_output(acc, l_, m, out, lse)
            if valid:
                yield Store(out, o_t.region(b, h, wg_rows(w)))
                yield Store(lse, lse_t.region(b, h, wg_rows(w)))

        roles = [producer()] if cfg.warp_specialization else []
        roles += [consumer(w) for w in range(n_wg)]
        return roles + [commits.role()] if cfg.pingpong else roles

    el = problem.element_bytes
    smem = bm * d * el + 2 * cfg.stages * bn * d * el
    threads = 128 * (n_wg + (1 if cfg.warp_specialization else 0))

    def shared_by(cta):
        mb, b, h = cta
        key = (b, h // group)
        # a causal CTA walks its own keys up to its diagonal (causal_walk_key); its descales are read whole
        walk = causal_walk_key(problem, b, h // group, mb * bm, min((mb + 1) * bm, n), bn) if problem.causal else key
        return {"K": walk, "V": walk, "K_descale": key, "V_descale": key} if block_scales else {"K": walk, "V": walk}

    def owned_by(cta):  # named by region so that a folded block counts its partial last tile
        mb, b, h = cta
        return own_regions(tensors, ("Q", "O", "LSE"), b, h, slice(mb * bm, (mb + 1) * bm))

    def work(cta) -> float:  # K/V tiles the CTA visits (plus its prologue/epilogue)
        r0 = cta[0] * bm
        return 1 + len(kv_tiles_for_rows(problem, r0, min(r0 + bm, n), bn))

    return Launch(name="fa3_fwd", grid=grid, program=program, smem_bytes_per_cta=int(smem),
                  threads_per_cta=threads, registers_per_thread=_registers(threads), shared_by=shared_by,
                  owned_by=owned_by, work=work if problem.causal else None)


def _load_descales(tensors, b, h, hk, mb, block_scales):
    qd = Tile((1,), "fp32", "reg", "q_descale")
    kd_t, vd_t = tensors["K_descale"], tensors["V_descale"]
    rows = kd_t.shape[2]
    kd = Tile((rows, 1), "fp32", "reg", "k_descale")
    vd = Tile((rows, 1), "fp32", "reg", "v_descale")
    q_index = (b, h, mb) if block_scales else (0, 0, 0)
    kv_index = (b, hk) if block_scales else (0, 0)
    handles = [(yield Load(tensors["Q_descale"].region(*q_index), qd, wait=False)),
               (yield Load(kd_t.region(*kv_index), kd, wait=False)),
               (yield Load(vd_t.region(*kv_index), vd, wait=False))]
    return qd, kd, vd, handles


# ------------------------------------------------------------------------------------------------ backward
def backward_tiles(head_dim: int) -> tuple[int, int, int]:
    """(query rows per step, keys per CTA, ring stages) of the FA3 release's sm90 backward."""
    if head_dim <= 64:
        return 128, 128, 2
    if head_dim <= 128:
        return 64, 128, 2
    return 64, 64, 1


def backward_extras(opts: dict) -> tuple[float, float]:
    """The backward's instructions beyond its arithmetic: (FP32 ops per score element, per dQ element)."""
    keys = ("extra_bwd_ops_per_score", "extra_bwd_ops_per_dq")
    require_non_negative(opts, keys)
    return float(opts[keys[0]]), float(opts[keys[1]])


def resolve_backward_tiles(problem: AttentionProblem, opts: dict) -> tuple[int, int, int]:
    """The backward's (query rows per step, keys per CTA, stages): the release's, or the options'."""
    bm, bn, stages = backward_tiles(problem.head_dim)
    bm = bm if opts["bwd_block_m"] is None else opts["bwd_block_m"]
    bn = bn if opts["bwd_block_n"] is None else opts["bwd_block_n"]
    if bm <= 0 or bn <= 0:
        raise InputError("fa3: bwd_block_m and bwd_block_n must be positive")
    if bn % BWD_WG_KEYS:
        raise InputError(f"fa3: bwd_block_n={bn} must be a multiple of {BWD_WG_KEYS} (one consumer warpgroup per "
                         f"{BWD_WG_KEYS} keys, wgmma's M)")
    return bm, bn, stages


def preprocess_launch(problem: AttentionProblem, tensors: dict, bm: int) -> Launch:
    """D = rowsum(dO * O) per query row, and dQaccum (the fp32 accumulator) zeroed (FA3's flash_bwd_preprocess,
    whose tile is the main kernel's kBlockM: so the main kernel finds these dO rows and dQ tiles in L2)."""
    o_t, do_t, delta_t, dq_t = (tensors[k] for k in ("O", "dO", "Delta", "dQaccum"))
    d = problem.head_dim
    m_blocks = -(-problem.seq_len // bm)
    grid = [(mb, b, h) for h in range(problem.heads) for b in range(problem.batch) for mb in range(m_blocks)]

    def program(cta):
        mb, b, h = cta
        rows = slice(mb * bm, (mb + 1) * bm)
        valid = min(bm, problem.seq_len - mb * bm)
        o = Tile((bm, d), o_t.dtype, "smem", "O")
        do = Tile((bm, d), do_t.dtype, "smem", "dO")
        delta = Tile((bm,), "fp32", "reg", "D")
        zeros = Tile((bm, d), "fp32", "smem", "dQ0")
        ho = yield Load(o_t.region(b, h, rows), o, wait=False)
        yield Load(do_t.region(b, h, rows), do)
        yield from wait_for(ho)
        yield Vector(lambda x, y: (x * y).sum(axis=1), [o, do], delta, DELTA_OPS_PER_ELEMENT)
        yield Store(delta, delta_t.region(b, h, rows))
        yield Vector(lambda: np.zeros((valid, d)), [], zeros, 0.0)
        yield Store(zeros, dq_t.region(b, h, rows))

    def owned_by(cta):
        mb, b, h = cta
        return own_regions(tensors, ("O", "dO", "Delta", "dQaccum"), b, h, slice(mb * bm, (mb + 1) * bm))

    return Launch(name="fa3_bwd_preprocess", grid=grid, program=program,
                  smem_bytes_per_cta=int(bm * d * (2 * problem.element_bytes + 4)),
                  threads_per_cta=128, registers_per_thread=128, owned_by=owned_by)


def _masked_scores_t(problem: AttentionProblem, key_start: int, q_start: int, needs_mask: bool):
    """Scale and (if needed) causal-mask a transposed score tile S^T (keys x queries)."""
    apply = masked_scores(problem, q_start, key_start, needs_mask)
    return lambda st: apply(st.T).T


def backward_launch(problem: AttentionProblem, tensors: dict, tiles: tuple[int, int, int],
                    extras: tuple[float, float]) -> Launch:
    q_t, k_t, v_t, do_t, lse_t, delta_t, dq_t, dk_t, dv_t = (
        tensors[k] for k in ("Q", "K", "V", "dO", "LSE", "Delta", "dQaccum", "dK", "dV"))
    d, n, group = problem.head_dim, problem.seq_len, problem.group_size
    bm, bn, stages = tiles
    n_wg = bn // BWD_WG_KEYS
    extra_per_score, extra_per_dq = extras
    # the implementation's extra instructions per score element go with the exp and dS steps, in proportion
    score_scale = 1.0 + extra_per_score / (EXP_FMA_OPS_PER_ELEMENT + DS_OPS_PER_ELEMENT)
    exp_ops, ds_ops = EXP_FMA_OPS_PER_ELEMENT * score_scale, DS_OPS_PER_ELEMENT * score_scale
    dt = tensor_dtype(problem)
    offset = problem.kv_len - problem.seq_len
    n_blocks = -(-problem.kv_len // bn)
    m_blocks = -(-n // bm)
    grid = [(nb, b, hk) for hk in range(problem.kv_heads) for b in range(problem.batch) for nb in range(n_blocks)]

    def program(cta):
        nb, b, hk = cta
        k0 = nb * bn
        first = max(0, k0 - offset) // bm if problem.causal else 0
        steps = [(hq, i) for hq in range(hk * group, (hk + 1) * group) for i in range(first, m_blocks)]

        def q_rows(i):
            return slice(i * bm, (i + 1) * bm)

        def key_rows(w):
            return slice(k0 + w * BWD_WG_KEYS, k0 + (w + 1) * BWD_WG_KEYS)

        k_tiles = [Tile((BWD_WG_KEYS, d), dt, "smem", f"K{w}") for w in range(n_wg)]
        v_tiles = [Tile((BWD_WG_KEYS, d), dt, "smem", f"V{w}") for w in range(n_wg)]
        kv_issued = [Semaphore(f"kv_issued{w}") for w in range(n_wg)]
        kv_handles: dict = {}
        ring = SmemRing("QdO", stages, lambda s: [Tile((bm, d), dt, "smem", f"Q{s}"),
                                                  Tile((bm, d), do_t.dtype, "smem", f"dO{s}"),
                                                  Tile((bm,), "fp32", "smem", f"LSE{s}"),
                                                  Tile((bm,), "fp32", "smem", f"D{s}")], n_wg)
        # dS^T per warpgroup, double-buffered across steps; dS is the same SMEM read through a transposed
        # descriptor by the dQ product. Double-buffered, it needs no release: the barrier of step t + 1 comes
        # after every warpgroup has waited for its step-t dQ product.
        ds_t = [[Tile((BWD_WG_KEYS, bm), dt, "smem", f"dS^T{w}.{k}") for k in range(2)] for w in range(n_wg)]
        ds = [[Tile((bm, BWD_WG_KEYS), dt, "smem", f"dS{w}.{k}") for k in range(2)] for w in range(n_wg)]
        ds_written = NamedBarrier(n_wg, "PdS")
        # dQ_i = dS_i K is split over the warpgroups by head-dim columns: each reads every warpgroup's dS and its
        # own columns of every K tile (the same SMEM through a narrower descriptor)
        col_bounds = [d * w // n_wg for w in range(n_wg + 1)]
        dq_cols = [slice(col_bounds[w], col_bounds[w + 1]) for w in range(n_wg)]
        k_cols = [[Tile((BWD_WG_KEYS, col_bounds[w + 1] - col_bounds[w]), dt, "smem", f"K{u}[:, {w}]")
                   for u in range(n_wg)] for w in range(n_wg)]
        dq = [Tile((bm, col_bounds[w + 1] - col_bounds[w]), "fp32", "smem", f"dQ{w}") for w in range(n_wg)]

        def producer():
            for w in range(n_wg):
                kv_handles["K", w] = yield Load(k_t.region(b, hk, key_rows(w)), k_tiles[w], wait=False, tma=True)
                kv_handles["V", w] = yield Load(v_t.region(b, hk, key_rows(w)), v_tiles[w], wait=False, tma=True)
            for w in range(n_wg):  # several warpgroups wait on each K tile: each waits on the loads themselves
                yield Signal(kv_issued[w])
            for t, (hq, i) in enumerate(steps):
                yield from ring.produce(t, [q_t.region(b, hq, q_rows(i)), do_t.region(b, hq, q_rows(i)),
                                            lse_t.region(b, hq, q_rows(i)), delta_t.region(b, hq, q_rows(i))])

        def consumer(w):
            kw0 = k0 + w * BWD_WG_KEYS
            keys = max(0, min(BWD_WG_KEYS, problem.kv_len - kw0))
            yield Acquire(kv_issued[w])
            yield from wait_for(kv_handles["V", w])
            for u in range(n_wg):  # every warpgroup reads every K tile in its dQ product
                yield from wait_for(kv_handles["K", u])
            for u in range(n_wg):
                yield Vector(lambda k_, c=dq_cols[w]: k_[:, c], [k_tiles[u]], k_cols[w][u], 0.0)
            dk = Tile((BWD_WG_KEYS, d), "fp32", "reg", "dK")
            dv = Tile((BWD_WG_KEYS, d), "fp32", "reg", "dV")
            yield Vector(lambda: np.zeros((keys, d)), [], dk, 0.0)
            yield Vector(lambda: np.zeros((keys, d)), [], dv, 0.0)
            s_t = Tile((BWD_WG_KEYS, bm), "fp32", "reg", "S^T")
            dp_t = Tile((BWD_WG_KEYS, bm), "fp32", "reg", "dP^T")
            p_t = Tile((BWD_WG_KEYS, bm), dt, "reg", "P^T")
            for t, (hq, i) in enumerate(steps):
                buf = t % 2
                q, do, lse, delta = yield from ring.consume(t, w)
                hs = yield Mma(k_tiles[w], q, s_t, "wgmma", b_transposed=True, wait=False)
                hdp = yield Mma(v_tiles[w], do, dp_t, "wgmma", b_transposed=True, wait=False)
                yield from wait_for(hs)
                q0 = i * bm
                mask = _masked_scores_t(problem, kw0, q0, problem.causal and kw0 + BWD_WG_KEYS - 1 > q0 + offset)
                yield Vector(lambda s_, l_, f=mask: np.exp(f(s_) - l_[None, :]), [s_t, lse], p_t, exp_ops, 1.0)
                yield from wait_for(hdp)
                yield Vector(lambda p_, dp_, d_: p_ * (dp_ - d_[None, :]), [p_t, dp_t, delta], ds_t[w][buf],
                             ds_ops)
                yield Vector(lambda x: x.T, [ds_t[w][buf]], ds[w][buf], 0.0)  # the transposed descriptor
                # every warpgroup's dS is in SMEM before any reads it (the code's PdS named barrier; P stays in
                # registers here, where FA3 also writes it to SMEM when dV reads P from there)
                yield from ds_written.sync(w)
                hv = yield Mma(p_t, do, dv, "wgmma", accumulate=True, wait=False)
                h_dq = None
                for u in range(n_wg):
                    h_dq = yield Mma(ds[u][buf], k_cols[w][u], dq[w], "wgmma", accumulate=u > 0, wait=False)
                yield from wait_for(hv)
                h_dk = yield Mma(ds_t[w][buf], q, dk, "wgmma", accumulate=True, wait=False)
                yield from wait_for(h_dq)
                if extra_per_dq:
                    yield Vector(lambda x: x, [dq[w]], dq[w], extra_per_dq)
                # unscaled: the postprocess launch applies the softmax scale when it converts dQaccum
                yield Store(dq[w], dq_t.region(b, hq, q_rows(i), dq_cols[w]), accumulate=True)
                yield from wait_for(h_dk)
                yield from ring.release(t)
            out_k = Tile((BWD_WG_KEYS, d), dk_t.dtype, "smem", "dK.out")
            out_v = Tile((BWD_WG_KEYS, d), dv_t.dtype, "smem", "dV.out")
            yield Vector(lambda x: x * problem.scale, [dk], out_k, SCALE_OPS_PER_ELEMENT)
            yield Vector(lambda x: x, [dv], out_v, 0.0)  # the conversion to the output type on the way out
            if keys:
                yield Store(out_k, dk_t.region(b, hk, key_rows(w)))
                yield Store(out_v, dv_t.region(b, hk, key_rows(w)))

        return [producer()] + [consumer(w) for w in range(n_wg)]

    el = problem.element_bytes
    smem = (2 * bn * d * el + stages * (2 * bm * d * el + 2 * bm * 4) + 2 * n_wg * BWD_WG_KEYS * bm * el
            + bm * d * 4)
    threads = 128 * (n_wg + 1)
    def work(cta) -> float:  # query tiles the CTA visits (plus its prologue/epilogue)
        first = max(0, cta[0] * bn - offset) // bm if problem.causal else 0
        return 1 + group * (m_blocks - first)

    return Launch(name="fa3_bwd", grid=grid, program=program, smem_bytes_per_cta=int(smem),
                  threads_per_cta=threads, registers_per_thread=_registers(threads),
                  shared_by=lambda cta: dict.fromkeys(("Q", "dO", "LSE", "Delta", "dQaccum"), (cta[1], cta[2])),
                  work=work if problem.causal else None)


# ------------------------------------------------------------------------------------------------ plan
def build_plan(problem: AttentionProblem, hw, options=None) -> KernelPlan:
    opts = resolve_options(NAME, OPTIONS, options)
    cfg = resolve_config(problem, opts, tma=hw.has_tma)
    operand = "fp8" if cfg.fp8 else "bf16"
    if hw.tensor_flops_per_clk("wgmma", operand) <= 0:
        raise InputError(f"fa3: hardware {hw.name} has no wgmma tensor instruction for {operand} "
                         f"(FlashAttention-3 is a Hopper kernel; use fa2, or fa4 on Blackwell)")
    if cfg.warp_specialization and not hw.has_tma:
        raise InputError(f"fa3: hardware {hw.name} has no TMA (has_tma) for the producer warpgroup")
    backward = problem.pass_ != "fwd"
    if cfg.fp8 and backward:
        raise InputError("fa3: the fp8 path is forward only (as in FlashAttention-3)")
    tensors = declare_tensors(problem, backward=backward)
    if cfg.fp8:
        tensors.update(descale_tensors(problem, cfg))
    launches = []
    if problem.pass_ in ("fwd", "fwd_bwd"):
        launches.append(forward_launch(problem, tensors, cfg))
    info = {"block_m": cfg.block_m, "block_n": cfg.block_n, "consumer_warpgroups": cfg.consumers,
            "stages": cfg.stages, "instruction": "wgmma", "warp_specialization": cfg.warp_specialization,
            "pingpong": cfg.pingpong, "intra_wg_pipeline": cfg.intra_wg_pipeline}
    if cfg.fp8:
        info["fp8_scaling"] = cfg.fp8_scaling
    if backward:
        b, h, n, d = problem.batch, problem.heads, problem.seq_len, problem.head_dim
        tensors["Delta"] = GlobalTensor("Delta", (b, h, n), "fp32", "scratch")
        tensors["dQaccum"] = GlobalTensor("dQaccum", (b, h, n, d), "fp32", "scratch")
        tensors["dQ"] = GlobalTensor("dQ", (b, h, n, d), tensors["dO"].dtype, "output")
        bm, bn, stages = tiles = resolve_backward_tiles(problem, opts)
        launches.append(preprocess_launch(problem, tensors, bm))
        launches.append(backward_launch(problem, tensors, tiles, backward_extras(opts)))
        # flash_bwd_postprocess: dQ = scale * dQaccum in the output type (cuDNN's convert_dq_to_16bits, run 12)
        launches.append(convert_dq_launch(problem, tensors, bm, POSTPROCESS_WARPS, name="fa3_bwd_postprocess"))
        info.update(bwd_block_m=bm, bwd_block_n=bn, bwd_stages=stages)
    return KernelPlan(kernel=NAME, tensors=tensors, launches=launches, info=info)
