"""FlashDecoding (Dao, Haziza, Massa, Sizov: "Flash-Decoding for long-context inference", PyTorch /
Stanford CRFM blog, Oct 2023), as FlashAttention-2's split-KV forward path implements it
(`flash_fwd_splitkv_kernel` + `flash_fwd_splitkv_combine_kernel`, with `num_splits_heuristic`).

Step 1 (launch `flash_decoding_split`): the visible K/V tiles of every (batch, KV head) are cut into
`num_splits` contiguous chunks and each chunk goes to its own CTA, so a decode step with few sequences
still puts a CTA on (nearly) every SM. For GQA/MQA a CTA packs the query heads of its KV group and their
query positions into one M tile, head-major ("seqlenq_ngroups_swapped" in FA2), so each K/V tile is read
once per group, not once per query head; groups too large for one tile are cut into row blocks. The CTA
runs the FlashAttention-2 online softmax over its chunk (causal: bottom-right aligned, each packed row
masked at its own query position) and writes a normalized partial output (fp32 scratch
`O_part[B, H, splits, N, d]`) and its log-sum-exp (`LSE_part[B, H, splits, N]`). Step 2 (launch
`flash_decoding_combine`) reduces the splits of one block of query rows per CTA: it reads every split's
LSE, forms LSE = log sum_s exp(LSE_s) and O = sum_s exp(LSE_s - LSE) O_s streaming the partial outputs
split by split, and writes O and LSE. Its row block is the split CTA's (the packed heads and positions of
one (batch, KV head, row block)), so it reads back exactly the partial tiles the split CTAs wrote, from L2.
With one split the first launch writes O and LSE directly and the combine launch is skipped (FA2's
flash_attn_with_kvcache does the same: its split kernel's non-split epilogue). Option api="mha_fwd" follows
FA2's mha_fwd instead, as PyTorch SDPA calls it: its heuristic counts 2 CTA slots per SM, and one split runs
FA2's regular forward kernel (kernels/fa2, 128-row tiles, mostly padding for one query position).

The split count follows the idea of FA2's heuristic: do not split when the (batch, KV head, row block)
CTAs already almost fill the GPU's CTA slots; otherwise take the fewest splits whose wave efficiency
(CTAs / slots over whole waves) is within a tolerance of the best, skipping counts that do not shorten the
longest split, never more splits than K/V tiles (so no split is empty) and at most MAX_SPLITS.

Differences from the CUDA kernels: the CTA is warp-specialized Hopper style (one producer warp streaming
K and V through a `stages`-deep SMEM ring with asynchronous loads completing on semaphores, one consumer
warpgroup doing both products and the softmax), where FA2's split kernel uses cp.async prefetch inside
4 lock-step warps; the tensor instruction is the newest the GPU has (wgmma on Hopper) unless `instruction`
says otherwise; `loads_in_flight` caps how far the producer runs ahead of the ring (the campaign's Triton kernel
keeps two tile pairs in SMEM but one in flight). With api="mha_fwd" the CTA is FA2's own as measured
(validation/README.md run 10): 4 lock-step warps with mma.sync, one K and one V tile in SMEM (two CTAs per SM),
loaded in FA2's order (fa2.walk_kv_tiles), and FA2's "2 x SMs" split slots; otherwise the split slots come from
this launch's real occupancy. Loads into SMEM are cp.async. K/V tiles are split evenly (chunks differ by at
most one tile) instead of FA2's ceil(n_blocks / splits) per split. FA2's combine CTA takes a few (batch, head,
position) rows of the flat row space; here it takes one split CTA's packed rows (a similar count of rows for
decode GQA). Nothing in the engine knows about decoding: the speed-up at small batch comes only from more CTAs
on more SMs, each with its own bounded window of bytes in flight.
"""

from __future__ import annotations

import math

import numpy as np

from gpusim.errors import InputError
from gpusim.launch import MAX_REGISTERS_PER_THREAD, KernelPlan, Launch, Option, RegionKey, resolve_options
from gpusim.ops import Acquire, GlobalTensor, Load, Loop, Mma, Semaphore, Signal, Store, Tile, Vector, Wait
from gpusim.problem import AttentionProblem
from gpusim.kernels import fa2
from gpusim.kernels.attention_common import (causal_offset, declare_tensors, finalize_output, init_row_state,
                                             kv_tiles_for_rows, online_softmax, tensor_dtype, tile_needs_mask)

NAME = "flash_decoding"
PROBLEM = AttentionProblem
OPTIONS = {
    "num_splits": Option(int, None, "K/V chunks per (batch, KV head) (default: wave-efficiency heuristic)"),
    "block_m": Option(int, 64, "M tile rows: packed (query head, query position) rows per CTA "
                               "(64 = the smallest wgmma M, and FA2's fixed split-KV kBlockM)"),
    "block_n": Option(int, None, "K/V rows per tile (default: 256 for d <= 64, 128 for d <= 128, else 64, "
                                 "as FA2's split-KV kernel)"),
    "stages": Option(int, None, "depth of the K/V SMEM ring (all of it loaded ahead unless loads_in_flight; default 2, "
                                "and 1, the only choice, with api=mha_fwd: FA2's split kernel holds one K and one V "
                                "tile, 80 KiB at d = 128, two CTAs per SM, validation/README.md run 10)"),
    "loads_in_flight": Option(int, None, "K/V tile pairs loaded ahead of the consumer at most, 1..stages (default: "
                                         "stages)"),
    "instruction": Option(str, None, "tensor-core instruction class (default: the newest the GPU has)",
                          choices=("mma_sync", "wgmma", "tcgen05")),
    "api": Option(str, "with_kvcache", "FA2 entry point: with_kvcache (flash_attn_with_kvcache: the split-KV "
                                       "kernel even for one split; split slots from this kernel's occupancy) or "
                                       "mha_fwd (as PyTorch SDPA calls it: FA2's heuristic counts 2 CTAs per SM, "
                                       "one split runs FA2's regular forward kernel, 128-row tiles, and the "
                                       "split kernel uses mma.sync)",
                  choices=("with_kvcache", "mha_fwd")),
    "combine_loads": Option(str, "serial", "how the combine CTA reads the splits' partial outputs: serial (FA2's "
                                           "flash_fwd_splitkv_combine_kernel: one split's rows are loaded, then "
                                           "accumulated, before the next load) or together (one load of every "
                                           "split, as a Triton reduce over a [splits, d] block)",
                            choices=("serial", "together")),
}

# --- split heuristic constants: FlashAttention-2's num_splits_heuristic (flash_api.cpp) ---------------
#: Do not split when one split's CTAs already fill this share of the GPU's CTA slots.
FILL_FRACTION = 0.8
#: Take the fewest splits whose wave efficiency is at least this share of the best one.
EFFICIENCY_TOLERANCE = 0.85
#: Upper bound on splits (FA2 passes 128; the combine kernel's per-row loop is sized for it).
MAX_SPLITS = 128
#: CTA slots per SM that FA2's mha_fwd assumes in its heuristic (it passes 2 x the SM count).
MHA_FWD_CTAS_PER_SM = 2

# --- CTA shape (properties of the compiled kernel, not hardware speeds) ------------------------------
#: One consumer warpgroup (4 warps) does the products and the softmax; one producer warp issues loads.
CONSUMER_WARPS = 4
PRODUCER_WARPS = 1
#: Registers per thread of the split kernel beyond its FP32 tiles: the block_m x d accumulator and the
#: block_m x block_n score tile spread over the 128 consumer threads, plus this many for addressing and softmax
#: state (168 for FA2's 64 x 128 tiles at d = 128; the Triton kernel's 16 x 64 tiles: 64, measured 78, run 14).
#: The producer warp gives its share back (setmaxnreg).
ADDRESSING_REGISTERS = 40
COMBINE_THREADS = 128
#: Smallest M of one tensor-core instruction issue for the CTA (PTX ISA): mma.sync m16n8k16 per warp,
#: wgmma m64nNk16 per warpgroup, tcgen05.mma M = 64 or 128 (one CTA). The M tile must be a multiple.
INSTRUCTION_MIN_M = {"mma_sync": 16, "wgmma": 64, "tcgen05": 64}

# --- combine kernel instruction counts per element (the algorithm's, see combine_launch) --------------
#: Per (split, row): running max (1); then exp argument (1 FP32 + 1 MUFU) and sum (1).
COMBINE_MAX_FP32_OPS = 1.0
COMBINE_EXPSUM_FP32_OPS = 2.0
COMBINE_EXPSUM_MUFU_OPS = 1.0
#: Per row: log of the sum and add of the max (1 FP32 + 1 MUFU).
COMBINE_LOG_FP32_OPS = 1.0
COMBINE_LOG_MUFU_OPS = 1.0
#: Per (split, row): the split's weight exp(LSE_s - LSE) (1 FP32 + 1 MUFU).
COMBINE_WEIGHT_FP32_OPS = 1.0
COMBINE_WEIGHT_MUFU_OPS = 1.0
#: Per (split, row, d) partial-output element: one fused multiply-add into the output accumulator.
COMBINE_ACC_FP32_OPS = 1.0


def default_block_n(head_dim: int) -> int:
    """FA2's split-KV kBlockN: 256 for d <= 64, 128 for d <= 128, 64 above."""
    if head_dim <= 64:
        return 256
    if head_dim <= 128:
        return 128
    return 64


def num_splits_heuristic(ctas_per_split: int, cta_slots: int, kv_tiles: int, max_splits: int = MAX_SPLITS) -> int:
    """Splits of the K/V sequence that fill the GPU (the idea of FA2's num_splits_heuristic).

    `ctas_per_split` CTAs run per split (batch x KV heads x row blocks), `cta_slots` CTAs fit the GPU at
    once (SMs x CTAs per SM), `kv_tiles` K/V tiles are to be shared out. One split when the CTAs already
    almost fill the slots; otherwise the fewest splits whose wave efficiency (waves / whole waves) is within
    EFFICIENCY_TOLERANCE of the best, among counts that shorten the longest split.
    """
    if ctas_per_split >= FILL_FRACTION * cta_slots or kv_tiles <= 1:
        return 1
    limit = max(1, min(max_splits, cta_slots, kv_tiles))
    efficiency = {}
    for splits in range(1, limit + 1):
        longest = -(-kv_tiles // splits)
        if splits > 1 and longest == -(-kv_tiles // (splits - 1)):
            continue  # the longest split is as long as with one split fewer: more CTAs, no shorter critical path
        waves = ctas_per_split * splits / cta_slots
        efficiency[splits] = waves / math.ceil(waves)
    best = max(efficiency.values())
    return min(s for s, eff in efficiency.items() if eff >= EFFICIENCY_TOLERANCE * best)


class _Layout:
    """How the query rows of one (batch, KV head) are cut into M tiles, and the K/V tiles of each split."""

    def __init__(self, problem: AttentionProblem, block_m: int, block_n: int):
        self.problem, self.block_m, self.block_n = problem, block_m, block_n
        n, group = problem.seq_len, problem.group_size
        self.rows_per_head = min(n, block_m)  # query positions per M tile
        self.heads_per_cta = max(1, min(group, block_m // self.rows_per_head))
        self.head_blocks = -(-group // self.heads_per_cta)
        self.position_blocks = -(-n // self.rows_per_head)
        self.row_blocks = self.head_blocks * self.position_blocks

    def rows(self, hk: int, rb: int) -> tuple[int, int, int, int]:
        """(first query head, head count, first position, position count) of row block `rb`."""
        hb, pb = divmod(rb, self.position_blocks)
        h0 = hk * self.problem.group_size + hb * self.heads_per_cta
        hc = min(self.heads_per_cta, (hk + 1) * self.problem.group_size - h0)
        n0 = pb * self.rows_per_head
        return h0, hc, n0, min(self.rows_per_head, self.problem.seq_len - n0)

    def visible_tiles(self, n0: int, nr: int) -> range:
        return kv_tiles_for_rows(self.problem, n0, n0 + nr, self.block_n)

    def max_tiles(self) -> int:
        return max(len(self.visible_tiles(*self.rows(0, rb)[2:])) for rb in range(self.row_blocks))

    @staticmethod
    def split_tiles(tiles: range, split: int, splits: int) -> range:
        """Split `split` of `splits` even chunks of `tiles` (chunk sizes differ by at most one)."""
        count = len(tiles)
        lo, hi = split * count // splits, (split + 1) * count // splits
        return tiles[lo:hi]


def packed_scores(problem: AttentionProblem, n0: int, nr: int, col_start: int, needs_mask: bool):
    """Scale (and causally mask) a score tile whose rows are (query head, query position) pairs packed
    head-major: row r is position n0 + r % nr of one of the CTA's heads."""
    scale, offset = problem.scale, causal_offset(problem)

    def apply(s: np.ndarray) -> np.ndarray:
        s = s * scale
        if needs_mask:
            positions = n0 + (np.arange(s.shape[0]) % nr)[:, None]
            cols = np.arange(col_start, col_start + s.shape[1])[None, :]
            s = np.where(cols <= positions + offset, s, -np.inf)
        return s
    return apply


def pack_rows(q: Tile, rows: int) -> Vector:
    """[heads, positions, d] -> [heads * positions, d]: the packed M tile (an SMEM layout, no work)."""
    return Vector(lambda x: x.reshape(rows, x.shape[-1]), [q], q, 0.0, elements=0)


def split_launch(problem: AttentionProblem, tensors: dict, layout: _Layout, splits: int, stages: int,
                 instruction: str, fa2_cta: bool = False, in_flight: int | None = None) -> Launch:
    """One CTA per (batch, KV head, split, row block); grid order row block fastest, then split (FA2's).
    `fa2_cta`: the CTA is FA2's own split-KV CTA (4 lock-step warps, cp.async in FA2's order, fa2.walk_kv_tiles)
    instead of a producer warp streaming a `stages`-deep ring to a consumer warpgroup, at most `in_flight` K/V tile
    pairs ahead of it (default: the whole ring)."""
    q_t, k_t, v_t = tensors["Q"], tensors["K"], tensors["V"]
    partial = splits > 1
    o_t, lse_t = (tensors["O_part"], tensors["LSE_part"]) if partial else (tensors["O"], tensors["LSE"])
    d, bm, bn = problem.head_dim, layout.block_m, layout.block_n
    dt = tensor_dtype(problem)
    grid = [(b, hk, s, rb) for b in range(problem.batch) for hk in range(problem.kv_heads)
            for s in range(splits) for rb in range(layout.row_blocks)]
    # mma.sync: the warps read their operands from SMEM (ldmatrix) as FA2's layout has them (fa2.warp_layout);
    # wgmma / tcgen05 read SMEM operands once per warpgroup (the default accounting).
    sync = instruction == "mma_sync"
    warps_m, warps_n = fa2.warp_layout(bm, CONSUMER_WARPS)

    def cta_rows(cta):
        """(batch, KV head, split, query-head slice, position slice, packed rows, first position, positions,
        the split's K/V tiles) of one CTA."""
        b, hk, s, rb = cta
        h0, hc, n0, nr = layout.rows(hk, rb)
        tiles = layout.split_tiles(layout.visible_tiles(n0, nr), s, splits)
        return b, hk, s, slice(h0, h0 + hc), slice(n0, n0 + nr), hc * nr, n0, nr, tiles

    kv = lambda j: slice(j * bn, (j + 1) * bn)  # noqa: E731

    def program(cta):
        b, hk, s, heads, positions, rows, n0, nr, tiles = cta_rows(cta)
        q = Tile((bm, d), dt, "smem", "Q")
        k_buf = [Tile((bn, d), dt, "smem", f"K{i}") for i in range(stages)]
        v_buf = [Tile((bn, d), dt, "smem", f"V{i}") for i in range(stages)]
        q_full = Semaphore("q_full")
        k_full = [Semaphore(f"k_full{i}") for i in range(stages)]
        v_full = [Semaphore(f"v_full{i}") for i in range(stages)]
        empty = [Semaphore(f"empty{i}", initial=1) for i in range(stages)]
        ahead = Semaphore("in_flight", initial=in_flight) if in_flight and in_flight < stages else None

        # each CTA walks its own split of its own (batch, KV head): private data, so a long walk may be
        # sampled (engine loop_sampling); both roles sample the same iterations.
        def producer():
            yield Load(q_t.region(b, heads, positions), q, wait=False, signal=q_full, cp_async=True)
            walk = yield Loop(len(tiles))
            for i, t in enumerate(walk.indices):
                yield walk.mark(t)
                j = tiles[t]
                slot = i % stages
                yield Acquire(empty[slot])
                if ahead is not None:
                    yield Acquire(ahead)
                yield Load(k_t.region(b, hk, kv(j)), k_buf[slot], wait=False, signal=k_full[slot], cp_async=True)
                yield Load(v_t.region(b, hk, kv(j)), v_buf[slot], wait=False, signal=v_full[slot], cp_async=True)

        def consumer():
            score = Tile((bm, bn), "fp32", "reg", "S")
            p = Tile((bm, bn), dt, "reg", "P")
            m, l_, acc, init = init_row_state(rows, bm, d)
            for op in init:
                yield op
            yield Acquire(q_full)
            yield pack_rows(q, rows)
            walk = yield Loop(len(tiles))
            for i, t in enumerate(walk.indices):
                yield walk.mark(t)
                j = tiles[t]
                slot = i % stages
                k, v = k_buf[slot], v_buf[slot]
                yield Acquire(k_full[slot])
                yield Mma(q, k, score, instruction, b_transposed=True, warps=CONSUMER_WARPS,
                          smem_read_bytes=warps_m * k.nbytes + warps_n * q.nbytes if sync else None)
                needs_mask = tile_needs_mask(problem, n0, j * bn, (j + 1) * bn)
                yield from online_softmax(score, m, l_, acc, p, packed_scores(problem, n0, nr, j * bn, needs_mask))
                yield Acquire(v_full[slot])
                yield Mma(p, v, acc, instruction, accumulate=True, warps=CONSUMER_WARPS,
                          smem_read_bytes=warps_m * v.nbytes if sync else None)
                yield Signal(empty[slot])
                if ahead is not None:
                    yield Signal(ahead)
            yield from epilogue(cta, m, l_, acc)

        return [producer(), consumer()]

    def epilogue(cta, m, l_, acc):
        """Normalize and write the split's partial output and LSE (or O and LSE with one split)."""
        b, _, s, heads, positions, *_ = cta_rows(cta)
        out = Tile((bm, d), o_t.dtype, "smem", "O")
        lse = Tile((bm,), "fp32", "reg", "LSE")
        yield from finalize_output(acc, l_, m, out, lse)
        if partial:
            yield Store(out, o_t.region(b, heads, s, positions))
            yield Store(lse, lse_t.region(b, heads, s, positions))
        else:
            yield Store(out, o_t.region(b, heads, positions))
            yield Store(lse, lse_t.region(b, heads, positions))

    def fa2_program_for(cta):
        b, hk, _, heads, positions, rows, n0, nr, tiles = cta_rows(cta)
        q = Tile((bm, d), dt, "smem", "Q")
        m, l_, acc, init = init_row_state(rows, bm, d)
        q_ready = yield Load(q_t.region(b, heads, positions), q, wait=False, cp_async=True)
        for op in init:
            yield op
        walk = yield Loop(len(tiles))  # private K/V: a long walk may be sampled (engine loop_sampling)
        scores = lambda j: packed_scores(problem, n0, nr, j * bn,  # noqa: E731
                                         tile_needs_mask(problem, n0, j * bn, (j + 1) * bn))
        yield from fa2.walk_kv_tiles(walk, tiles, k_region=lambda j: k_t.region(b, hk, kv(j)),
                                     v_region=lambda j: v_t.region(b, hk, kv(j)), q=q, q_ready=q_ready,
                                     row_state=(m, l_, acc), scores=scores, block_n=bn, instruction=instruction,
                                     warps_m=warps_m, warps_n=warps_n, q_ops=[pack_rows(q, rows)])
        yield from epilogue(cta, m, l_, acc)

    # Alike CTAs for folded simulation: K/V tiles are shared by the row blocks of one (batch, KV head,
    # split) and Q rows by the splits of one (batch, KV head, row block). Neither is a leading-index prefix
    # of the regions (the split is a range of the sequence axis), so the folded engine counts one copy per
    # distinct key of a block (its fallback for keys that are not region prefixes): exact tile counts.
    # The partial outputs are each CTA's own, read back by the combine launch: keyed by their whole region,
    # so that a representative's siblings are the real tiles the combine will look for in L2.
    def owned_by(cta):
        b, hk, s, rb = cta
        h0, hc, n0, nr = layout.rows(hk, rb)
        heads, positions = slice(h0, h0 + hc), slice(n0, n0 + nr)
        return {"O_part": RegionKey.of_region(o_t.region(b, heads, s, positions)),
                "LSE_part": RegionKey.of_region(lse_t.region(b, heads, s, positions))}

    def work(cta) -> int:  # K/V tiles the CTA walks (+1: its prologue and epilogue)
        _, hk, s, rb = cta
        n0, nr = layout.rows(hk, rb)[2:]
        return 1 + len(layout.split_tiles(layout.visible_tiles(n0, nr), s, splits))

    works = {work(cta) for cta in grid[:splits * layout.row_blocks]}  # every (batch, KV head) alike
    smem = (bm + 2 * stages * bn) * d * problem.element_bytes  # Q + the K/V ring; the epilogue reuses the ring
    # (The producer warp's cp.async fills of this CTA are not declared on the products: they land in the ring
    # slots the consumers are not reading, unlike FA2's single K and V buffers.)
    warps = CONSUMER_WARPS + (0 if fa2_cta else PRODUCER_WARPS)
    return Launch(name="flash_decoding_split", grid=grid, program=fa2_program_for if fa2_cta else program,
                  smem_bytes_per_cta=int(smem), threads_per_cta=32 * warps,
                  registers_per_thread=min(MAX_REGISTERS_PER_THREAD,
                                           -(-(bm * d + bm * bn) // (32 * CONSUMER_WARPS)) + ADDRESSING_REGISTERS),
                  shared_by=lambda cta: {"Q": (cta[0], cta[1], cta[3]), "K": cta[:3], "V": cta[:3]},
                  owned_by=owned_by if partial else None, work=work if len(works) > 1 else None)


def combine_launch(problem: AttentionProblem, tensors: dict, layout: _Layout, splits: int,
                   serial: bool = True) -> Launch:
    """One CTA per (batch, KV head, row block): the same packed rows as one split CTA, so it reads back
    exactly the partial tiles the split CTAs wrote (they are still in L2). As FA2's combine kernel: load
    every split's LSE, form LSE = log sum_s exp(LSE_s) and the weights exp(LSE_s - LSE), then accumulate
    O = sum_s w_s O_s. `serial`: FA2's kernel loads the partial outputs only once the weights are in SMEM, and
    its loop loads one split's partial output into registers and adds it before loading the next (a memory
    round trip per split: 0.21 us per split at B = 1 in a CUDA graph, validation/README.md run 19); otherwise
    every split's partial output is loaded at once, with the LSEs."""
    o_part, lse_part, o_t, lse_t = (tensors[k] for k in ("O_part", "LSE_part", "O", "LSE"))
    d = problem.head_dim
    # No tensor cores here, so tiles hold the packed rows themselves, not a padded MMA tile.
    bm = layout.heads_per_cta * layout.rows_per_head
    grid = [(b, hk, rb) for b in range(problem.batch) for hk in range(problem.kv_heads)
            for rb in range(layout.row_blocks)]
    in_flight = 1 if serial else splits

    def program(cta):
        b, hk, rb = cta
        h0, hc, n0, nr = layout.rows(hk, rb)
        rows = hc * nr
        heads, positions = slice(h0, h0 + hc), slice(n0, n0 + nr)
        lse_parts = [Tile((bm,), "fp32", "smem", f"LSE{s}") for s in range(splits)]
        o_bufs = [Tile((bm, d), "fp32", "reg", f"O_part{i}") for i in range(in_flight)]
        lse_ready = []
        for s in range(splits):
            handle = yield Load(lse_part.region(b, heads, s, positions), lse_parts[s], wait=False)
            lse_ready.append(handle)
        o_ready = {}

        def load_partials():
            for s in range(in_flight):
                o_ready[s] = yield Load(o_part.region(b, heads, s, positions), o_bufs[s], wait=False)
        if not serial:  # every split at once, the LSEs too
            yield from load_partials()
        for handle in lse_ready:
            yield Wait(handle)
        stacked = Tile((splits, bm), "fp32", "reg", "LSE_parts")
        lse_max = Tile((bm,), "fp32", "reg", "lse_max")
        total = Tile((bm,), "fp32", "reg", "sum")
        lse = Tile((bm,), "fp32", "reg", "LSE")
        weights = Tile((splits, bm), "fp32", "reg", "w")
        pairs = splits * bm
        yield Vector(lambda *xs: np.stack([x.reshape(rows) for x in xs]), lse_parts, stacked, 0.0, elements=0)
        yield Vector(lambda x: x.max(axis=0), [stacked], lse_max, COMBINE_MAX_FP32_OPS, elements=pairs)
        yield Vector(lambda x, mx: np.exp(x - _finite(mx)).sum(axis=0), [stacked, lse_max], total,
                     COMBINE_EXPSUM_FP32_OPS, COMBINE_EXPSUM_MUFU_OPS, elements=pairs)
        yield Vector(lambda sm, mx: np.where(sm > 0, _finite(mx) + np.log(np.where(sm > 0, sm, 1.0)), -np.inf),
                     [total, lse_max], lse, COMBINE_LOG_FP32_OPS, COMBINE_LOG_MUFU_OPS, elements=bm)
        yield Vector(lambda x, lz: np.exp(x - _finite(lz)) * np.isfinite(lz), [stacked, lse], weights,
                     COMBINE_WEIGHT_FP32_OPS, COMBINE_WEIGHT_MUFU_OPS, elements=pairs)
        if serial:  # FA2: the partials only once the LSEs are reduced into weights (it syncs the CTA between)
            yield from load_partials()
        acc = Tile((bm, d), "fp32", "reg", "acc")
        yield Vector(lambda: np.zeros((rows, d)), [], acc, 0.0, elements=0)
        for s in range(splits):
            buf = o_bufs[s % in_flight]
            yield Wait(o_ready.pop(s))
            yield Vector(lambda a, o, w, s=s: a + o.reshape(rows, d) * w[s][:, None], [acc, buf, weights], acc,
                         COMBINE_ACC_FP32_OPS, elements=bm * d)
            if s + in_flight < splits:  # serial: the next split's load waits for this one's adds
                o_ready[s + in_flight] = yield Load(o_part.region(b, heads, s + in_flight, positions), buf,
                                                    wait=False)
        out = Tile((bm, d), o_t.dtype, "smem", "O")
        yield Vector(lambda a: a, [acc], out, 0.0, elements=0)  # the conversion rides on the last FMA pass
        yield Store(out, o_t.region(b, heads, positions))
        yield Store(lse, lse_t.region(b, heads, positions))

    def owned_by(cta):  # every split's partial tile of these rows: the tiles the split CTAs wrote
        b, hk, rb = cta
        h0, hc, n0, nr = layout.rows(hk, rb)
        heads, positions = slice(h0, h0 + hc), slice(n0, n0 + nr)
        return {t.name: RegionKey({dim: value for dim, value in RegionKey.of_region(t.region(b, heads, 0, positions))
                                   if dim != 2})
                for t in (o_part, lse_part)}

    smem = splits * bm * 4  # the splits' LSEs; partial outputs and the accumulator live in registers
    return Launch(name="flash_decoding_combine", grid=grid, program=program, smem_bytes_per_cta=int(smem),
                  threads_per_cta=COMBINE_THREADS, owned_by=owned_by)


def _finite(x: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(x), x, 0.0)


def build_plan(problem: AttentionProblem, hw, options=None) -> KernelPlan:
    opts = resolve_options(NAME, OPTIONS, options)
    if problem.pass_ != "fwd":
        raise InputError(f"flash_decoding: inference kernel, forward only (pass={problem.pass_!r}); "
                         "use fa2 or fa3 for the backward pass")
    if problem.dtype == "fp8":
        raise InputError("flash_decoding: FA2's split-KV path has no FP8 kernel; use bf16 or fp16")
    bm = opts["block_m"]
    bn = opts["block_n"] or default_block_n(problem.head_dim)
    mha_fwd = opts["api"] == "mha_fwd"
    if opts["stages"] is not None and opts["stages"] <= 0:
        raise InputError(f"flash_decoding: stages={opts['stages']} must be positive")
    if mha_fwd and opts["stages"] not in (None, 1):
        raise InputError(f"flash_decoding: stages={opts['stages']} with api=mha_fwd: FA2's split kernel holds one "
                         "K and one V tile (stages = 1)")
    stages = opts["stages"] or (1 if mha_fwd else 2)
    if min(bm, bn, stages) <= 0:
        raise InputError("flash_decoding: block_m, block_n and stages must be positive")
    in_flight = opts["loads_in_flight"]
    if mha_fwd and in_flight is not None:
        raise InputError("flash_decoding: loads_in_flight with api=mha_fwd: FA2's split kernel loads in its own order")
    if in_flight is not None and not 0 < in_flight <= stages:
        raise InputError(f"flash_decoding: loads_in_flight={in_flight} must be in 1..stages ({stages})")
    # FA2's own kernels (mha_fwd) are Ampere-style: mma.sync; otherwise the newest instruction the GPU has
    instruction = opts["instruction"] or ("mma_sync" if mha_fwd else hw.best_instruction(problem.dtype))
    if hw.tensor_flops_per_clk(instruction, problem.dtype) <= 0:
        raise InputError(f"flash_decoding: {hw.name} has no {instruction} instruction for {problem.dtype}")
    if bm % INSTRUCTION_MIN_M[instruction]:
        raise InputError(f"flash_decoding: block_m={bm} is not a multiple of {instruction}'s smallest M "
                         f"({INSTRUCTION_MIN_M[instruction]})")
    requested = opts["num_splits"]
    if requested is not None and requested <= 0:
        raise InputError(f"flash_decoding: num_splits={requested} must be positive")

    layout = _Layout(problem, bm, bn)
    tensors = declare_tensors(problem)
    kv_tiles = layout.max_tiles()
    ctas_per_sm = split_launch(problem, tensors, layout, 1, stages, instruction, mha_fwd).occupancy(hw)
    ctas_per_split = problem.batch * problem.kv_heads * layout.row_blocks
    if requested is None:
        slots = hw.sm_count * (MHA_FWD_CTAS_PER_SM if mha_fwd else ctas_per_sm)
        splits = num_splits_heuristic(ctas_per_split, slots, kv_tiles)
    else:
        splits = max(1, min(requested, kv_tiles))  # more splits than K/V tiles would leave splits empty

    if splits == 1 and mha_fwd:
        return _forward_kernel_plan(problem, hw)
    launches, info = [], {}
    if splits > 1:
        b, h, n, d = problem.batch, problem.heads, problem.seq_len, problem.head_dim
        tensors["O_part"] = GlobalTensor("O_part", (b, h, splits, n, d), "fp32", "scratch")
        tensors["LSE_part"] = GlobalTensor("LSE_part", (b, h, splits, n), "fp32", "scratch")
    launches.append(split_launch(problem, tensors, layout, splits, stages, instruction, mha_fwd, in_flight))
    if splits > 1:
        serial = opts["combine_loads"] == "serial"
        launches.append(combine_launch(problem, tensors, layout, splits, serial))
    info.update({"num_splits": splits, "num_splits_requested": requested, "combine": splits > 1,
                 "block_m": bm, "block_n": bn, "stages": stages, "loads_in_flight": in_flight,
                 "instruction": instruction,
                 "heads_per_cta": layout.heads_per_cta, "row_blocks": layout.row_blocks,
                 "kv_tiles": kv_tiles, "ctas_per_sm": ctas_per_sm, "split_ctas": ctas_per_split * splits})
    return KernelPlan(kernel=NAME, tensors=tensors, launches=launches, info=info)


def _forward_kernel_plan(problem: AttentionProblem, hw) -> KernelPlan:
    """FA2's mha_fwd with one split runs its regular forward kernel (run_mha_fwd_, not the split-KV one):
    FA2's forward tiles for the head dim, mma.sync, the GQA group packed as rows of one M tile (most of the
    128 rows are padding, but the tensor core computes them)."""
    block_m, block_n, warps = fa2.default_tiles(problem.head_dim, hw=hw)
    plan = fa2.build_plan(problem, hw, {"block_m": block_m, "block_n": block_n, "warps": warps})
    plan.info.update({"num_splits": 1, "combine": False, "api": "mha_fwd"})
    return plan
