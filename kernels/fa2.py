"""FlashAttention-2 (Dao 2023, arXiv 2307.08691), Sections 3.1-3.2, Algorithm 1 (forward).

One CTA per (Q tile, batch, head), grid order (m_block, batch, head) with the Q tile fastest, so CTAs that
run together share K/V tiles in L2. Each CTA keeps its Q tile and O accumulator on chip and walks K/V tiles
from the last visible one down to the first, as the reference kernel does (under causal masking the diagonal
tile first; tiles past it are skipped), with the online softmax; O and the log-sum-exp are written once.
Tensor cores through Ampere-style `mma.sync` (all four warps read the K and V tiles from SMEM through
ldmatrix), K/V loaded with cp.async in the reference kernel's order (walk_kv_tiles: V_j while computing S_j,
K_j-1 while computing the softmax and P_j V_j), and no overlap of softmax with the matrix products inside a
CTA: overlap comes only from the second CTA resident on the SM. SMEM port traffic of S = Q K^T: every
warp reads K, Q is read again from SMEM on every iteration (Is_Q_in_regs = false in the default
Flash_fwd_kernel_traits), and the cp.async fill of V_j lands meanwhile; of P V: every warp reads V while
K_j-1 lands. Head dim 256 on H100/H200 runs 64 x 64 tiles with
4 warps, two CTAs per SM (run_mha_fwd_hdim256 picks it from the SMEM per SM and per CTA).

Differences from the CUDA kernel: warps of a CTA are one process (they run in lockstep in FA2), except that an
8-warp tile (two warps per scheduler) overlaps one warp's operand reads with another's MMAs (Mma.warps: measured
on the backward, run 38; the forward's 8-warp tiles for d = 160-224 follow it unmeasured), and the
per-element softmax work is counted from the algorithm (attention_common), not from SASS. With seq_len 1
it is FlashAttention's decode path without a KV split (one CTA per (batch, head)). Backward: fa2_backward.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpusim.errors import InputError
from gpusim.launch import KernelPlan, Launch, Option, resolve_options
from gpusim.ops import CodePath, Load, Loop, LoopPlan, Mma, SpillStore, Store, Tile, Wait
from gpusim.problem import AttentionProblem
from gpusim.kernels.attention_common import (MASKED_TILE_FP32_OPS, causal_walk_key, declare_tensors, finalize_output,
                                             init_row_state, kv_tiles_for_rows, masked_scores, online_softmax,
                                             own_regions, tensor_dtype, tile_needs_mask)

#: Rows of one mma.sync m16n8k16 tile: the rows one warp owns.
MMA_M = 16

NAME = "fa2"
PROBLEM = AttentionProblem
OPTIONS = {
    "block_m": Option(int, None, "Q rows per CTA (default: FA2's choice for the head dim)"),
    "block_n": Option(int, None, "K/V rows per tile (default: FA2's choice for the head dim)"),
    "warps": Option(int, None, "warps per CTA (default 4; 8 for head dim 256)"),
    "stages": Option(int, None, "forward: a software-pipelined ring of this many K/V tile pairs in SMEM, as a "
                                "Triton kernel's num_stages - 1 (default: FA2's own order, one K and one V tile)"),
    "loads_in_flight": Option(int, None, "forward, with stages: K/V tile pairs loaded ahead at most (default: "
                                         "stages)"),
    "bwd_block_m": Option(int, None, "backward: Q rows per inner tile (default: FA2's choice)"),
    "bwd_block_n": Option(int, None, "backward: K/V rows per CTA (default: FA2's choice)"),
    "bwd_warps": Option(int, None, "backward: warps per CTA (default: FA2's choice)"),
    "sdpa_copies": Option(bool, False, "backward as PyTorch SDPA calls it: dO and O are first copied into "
                                       "FA2's layout by two elementwise copy kernels (none with one head or one "
                                       "query)"),
}
#: FA2's forward kernels use almost the whole register file per thread (255 registers), which with
#: 4 warps allows two CTAs per SM; a property of the compiled kernel.
REGISTERS_PER_THREAD = 255


def default_tiles(head_dim: int, decode: bool = False, hw=None) -> tuple[int, int, int]:
    """(block_m, block_n, warps) that FlashAttention-2 picks for sm80/sm90 forward (flash_fwd_launch_template.h,
    run_mha_fwd_hdim*); its decode (split-KV kernel family) uses 64-row tiles.

    Head dim 256 depends on the GPU's shared memory: 128 x 64 with 8 warps (128 KiB, one CTA per SM) where a
    CTA may take 2 d (128 + 2*64) bytes but an SM holds less than two 64 x 64 CTAs' 4 d (64 + 2*64) (A100), else
    64 x 64 with 4 warps (96 KiB, two CTAs per SM: H100, H200)."""
    if decode:
        return 64, (256 if head_dim <= 64 else 128 if head_dim <= 128 else 64), 4
    if head_dim <= 64:
        return 128, 128, 4
    if head_dim <= 128:
        return 128, 64, 4
    if head_dim <= 224 or hw is None:  # hdim160/192/224 kernels: 128 x 64, 8 warps on sm80/sm90
        return 128, 64, 8
    d256 = 256  # the kernel is instantiated for d = 256; the rule reads its SMEM sizes
    if hw.smem_per_cta_max_bytes >= 2 * d256 * (128 + 2 * 64) and hw.smem_per_sm_bytes < 4 * d256 * (64 + 2 * 64):
        return 128, 64, 8
    return 64, 64, 4


#: FA2's forward kernels as compiled, per (head dim, block_m, block_n, warps, causal, even shapes): SASS instructions
#: per warp of the straight-line start (the prologue and the first tiles), the main loop body and the epilogue, of
#: a product's HMMAs and ldmatrix in the loop body (half the two products'), and of the masking of one masked
#: first tile; and the bytes each thread's register spills store per loop iteration (validation/fa2_code_paths.py
#: on the SASS of SDPA's bf16 sm_90 kernels of torch 2.11, validation/data/fa2_sass_2026-11-30.json.gz;
#: validation/README.md runs 35, 56). A kernel property, like its registers; bf16 only (the fp16 kernels were not
#: read).
FORWARD_CODE = {
    (32, 128, 128, 4, False, False): (2041, 1382, 665, 82, 0, 16),
    (32, 128, 128, 4, False, True): (1609, 1371, 412, 82, 0, 0),
    (32, 128, 128, 4, True, False): (4125, 1382, 661, 82, 351, 16),
    (32, 128, 128, 4, True, True): (1923, 1372, 529, 82, 313, 0),
    (64, 128, 128, 4, False, False): (2357, 1631, 932, 164, 0, 24),
    (64, 128, 128, 4, False, True): (1858, 1636, 514, 164, 0, 24),
    (64, 128, 128, 4, True, False): (4867, 1612, 929, 164, 458, 20),
    (64, 128, 128, 4, True, True): (2179, 1620, 705, 164, 337, 24),
    (96, 128, 64, 4, False, False): (1473, 977, 806, 126, 0, 0),
    (96, 128, 64, 4, False, True): (1145, 979, 556, 126, 0, 0),
    (96, 128, 64, 4, True, False): (3815, 977, 808, 126, 129, 0),
    (96, 128, 64, 4, True, True): (2481, 978, 685, 126, 180, 0),
    (128, 128, 32, 4, False, False): (1095, 661, 1068, 88, 0, 0),
    (128, 128, 32, 4, False, True): (797, 661, 646, 88, 0, 0),
    (128, 128, 64, 4, False, False): (1912, 1158, 1090, 168, 0, 32),
    (128, 128, 64, 4, False, True): (1525, 1189, 654, 168, 0, 56),
    (128, 128, 64, 4, True, False): (5783, 1153, 1088, 168, 523, 32),
    (128, 128, 64, 4, True, True): (3339, 1186, 859, 168, 316, 56),
    (192, 128, 64, 8, False, False): (1118, 727, 731, 150, 0, 0),
    (192, 128, 64, 8, True, False): (2888, 724, 740, 150, 108, 0),
    (256, 64, 64, 4, False, False): (1375, 876, 813, 200, 0, 0),
    (256, 64, 64, 4, True, False): (2903, 871, 818, 200, 331, 0),
    (256, 128, 64, 8, False, False): (1274, 864, 806, 200, 0, 0),
    (256, 128, 64, 8, True, False): (3574, 860, 814, 200, 195, 0),
}


@dataclass(frozen=True)
class ForwardCode:
    """SASS instructions per warp of one of FA2's forward kernels (FORWARD_CODE): the code paths its instruction
    cache holds (ops.CodePath), what each op issues and what its register spills store. The kernel runs its first
    `masking_steps` tiles (one without a causal mask, the tiles the diagonal cuts with one, one more where the shapes
    are not tile multiples) as code of their own after the prologue, straight-line code run once, then its loop,
    then the epilogue."""

    first: int  # the prologue and the first tiles
    loop: int  # the main loop's body: both products and the softmax
    epilogue: int
    mma: int  # one product's HMMAs and ldmatrix
    mask: int  # more in each of the first tiles under a causal mask
    spill_bytes: int  # stored to local memory per thread and iteration (register spills)
    masking_steps: int

    @classmethod
    def of(cls, problem: AttentionProblem, block_m: int, block_n: int, warps: int) -> "ForwardCode | None":
        """The kernel SDPA runs for this problem and tile, or None where its SASS was not read (other head dims
        or tiles) or it is not flash_fwd_kernel (decode runs the split-KV kernel family; so do prefills too small
        to fill the GPU, which the model runs as flash_fwd_kernel; only the bf16 kernels were read)."""
        d = problem.head_dim
        # flash_fwd_launch_template.h: even shapes only up to head dim 128
        even = problem.seq_len % block_m == 0 and problem.kv_len % block_n == 0 and d <= 128
        counts = FORWARD_CODE.get((d, block_m, block_n, warps, problem.causal, even))
        if counts is None or problem.seq_len == 1 or problem.dtype != "bf16":
            return None
        steps = 1 if not problem.causal else -(-block_m // block_n) + (0 if even else 1)
        return cls(*counts, masking_steps=steps)

    @property
    def softmax(self) -> int:
        return self.loop - 2 * self.mma

    def first_path(self) -> CodePath:
        return CodePath("fa2_fwd.first", self.first)

    def loop_path(self) -> CodePath:
        return CodePath("fa2_fwd.loop", self.loop, loops=True)

    def epilogue_path(self) -> CodePath:
        return CodePath("fa2_fwd.epilogue", self.epilogue)


def warp_layout(block_m: int, warps: int) -> tuple[int, int]:
    """(warps along M, warps along the keys / head dim) of an mma.sync tile. FA2 gives each warp 16 rows of
    the tile (all warps along M); a tile of fewer rows (a Triton decode kernel's 16) has its warps split the
    keys / the head dim instead, so each reads a share of K and V from SMEM and all of Q."""
    warps_m = max(1, min(warps, block_m // MMA_M))
    return warps_m, warps // warps_m


def forward_launch(problem: AttentionProblem, tensors: dict, block_m: int, block_n: int, warps: int,
                   instruction: str = "mma_sync", stages: int | None = None, in_flight: int | None = None) -> Launch:
    """One CTA per (Q tile, batch, head). For decode (seq_len == 1) with GQA the query heads of a KV group
    are packed as the rows of one tile (FA2's seqlen_q/ngroups swap), one CTA per (batch, KV head).
    `stages`, `in_flight`: a software-pipelined ring of K/V tile pairs instead of FA2's own order (walk_kv_tiles)."""
    q_t, k_t, v_t, o_t, lse_t = (tensors[k] for k in ("Q", "K", "V", "O", "LSE"))
    d, group = problem.head_dim, problem.group_size
    dt = tensor_dtype(problem)
    packed = problem.seq_len == 1 and group > 1
    if packed:
        grid = [(0, b, hk) for hk in range(problem.kv_heads) for b in range(problem.batch)]
    else:
        m_blocks = -(-problem.seq_len // block_m)
        grid = [(mb, b, h) for h in range(problem.heads) for b in range(problem.batch) for mb in range(m_blocks)]

    warps_m, warps_n = warp_layout(block_m, warps)
    # FA2's own prefill kernel: its compiled code paths (decode packs its rows into another kernel's tile, and a
    # ring of stages is a Triton kernel's, whose code is not read here)
    code = ForwardCode.of(problem, block_m, block_n, warps) if not packed and stages is None and warps_n == 1 \
        and instruction == "mma_sync" else None

    def program(cta):
        mb, b, h = cta
        if packed:  # rows are the group's query heads at position 0
            hk, r0, valid_rows = h, 0, group
            q_ref = q_t.region(b, slice(hk * group, (hk + 1) * group), 0)
            out_refs = (o_t.region(b, slice(hk * group, (hk + 1) * group), 0),
                        lse_t.region(b, slice(hk * group, (hk + 1) * group), 0))
        else:
            hk, r0 = h // group, mb * block_m
            valid_rows = min(block_m, problem.seq_len - r0)
            rows = slice(r0, r0 + block_m)
            q_ref = q_t.region(b, h, rows)
            out_refs = (o_t.region(b, h, rows), lse_t.region(b, h, rows))
        kv = lambda j: slice(j * block_n, (j + 1) * block_n)  # noqa: E731
        q = Tile((block_m, d), dt, "smem", "Q")
        m, l_, acc, init = init_row_state(valid_rows, block_m, d)
        if code is not None:
            yield code.first_path()
        q_ready = yield Load(q_ref, q, wait=False, cp_async=True)
        for op in init:
            yield op
        tiles = kv_tiles_for_rows(problem, r0, r0 + (1 if packed else valid_rows), block_n)
        if packed:  # decode: K/V private to the CTA, so a long walk may be sampled (engine loop_sampling)
            plan = yield Loop(len(tiles), lookahead=loads_ahead(stages, in_flight))
        else:  # K/V tiles shared with concurrent CTAs in L2: every iteration is simulated (sampled as a shared
            # walk, ops.Loop.shared, a pair's two CTAs measure different paces in their first iterations and their
            # reads drift apart: 17 passes over K/V at 131k tokens where the full walk reads 8 and the GPU 8.3,
            # validation/README.md, fourteenth session)
            plan = LoopPlan(len(tiles), range(len(tiles)))
        masked = lambda j: not packed and tile_needs_mask(problem, r0, j * block_n, (j + 1) * block_n)  # noqa: E731
        scores = lambda j: masked_scores(problem, r0, j * block_n, masked(j))  # noqa: E731
        yield from walk_kv_tiles(plan, tiles, k_region=lambda j: k_t.region(b, hk, kv(j)),
                                 v_region=lambda j: v_t.region(b, hk, kv(j)), q=q, q_ready=q_ready,
                                 row_state=(m, l_, acc), scores=scores, block_n=block_n, instruction=instruction,
                                 warps_m=warps_m, warps_n=warps_n, stages=stages, in_flight=in_flight, masked=masked,
                                 code=code)
        out = Tile((block_m, d), o_t.dtype, "smem", "O")
        lse = Tile((block_m,), "fp32", "reg", "LSE")
        if code is not None:
            yield code.epilogue_path()
        yield from finalize_output(acc, l_, m, out, lse, instructions=warps * code.epilogue if code else 0)
        yield Store(out, out_refs[0])
        yield Store(lse, out_refs[1])

    smem = (block_m + 2 * (stages or 1) * block_n) * d * problem.element_bytes

    def kv_key(cta):
        """Packed decode: one CTA per (batch, KV head). Causal: each CTA walks its own K/V range from the diagonal
        down, so the key names that range (folding: a block's CTAs read offset tiles at each step)."""
        mb, b, h = cta
        if packed:
            return b, h
        if not problem.causal:
            return b, h // group
        r0 = mb * block_m
        return causal_walk_key(problem, b, h // group, r0, min(r0 + block_m, problem.seq_len), block_n,
                               descending=True)

    def work(cta) -> float:
        r0 = cta[0] * block_m
        return 1 + len(kv_tiles_for_rows(problem, r0, min(r0 + block_m, problem.seq_len), block_n))

    def owned_by(cta):  # named by region so that a folded block counts its partial last tile
        mb, b, h = cta
        return own_regions(tensors, ("Q", "O", "LSE"), b, h, slice(mb * block_m, (mb + 1) * block_m))

    return Launch(name="fa2_fwd", grid=grid, program=program, smem_bytes_per_cta=int(smem),
                  threads_per_cta=32 * warps, registers_per_thread=REGISTERS_PER_THREAD,
                  shared_by=lambda cta: {"K": kv_key(cta), "V": kv_key(cta)}, owned_by=None if packed else owned_by,
                  work=work if problem.causal and not packed else None)


def loads_ahead(stages: int | None, in_flight: int | None) -> int:
    """Iterations ahead whose K/V loads walk_kv_tiles issues: one (FA2's own order: the next K during S_j), or
    the ring's depth (`stages`), or `in_flight` of them."""
    return (in_flight or stages) if stages else 1


def walk_kv_tiles(plan: LoopPlan, tiles, *, k_region, v_region, q: Tile, q_ready, row_state, scores, block_n: int,
                  instruction: str, warps_m: int, warps_n: int, q_ops=(), stages: int | None = None,
                  in_flight: int | None = None, masked=lambda j: False, code: ForwardCode | None = None):
    """FA2's main loop (flash_fwd_kernel.h, the split-KV kernel alike) over the K/V tiles `tiles`, from the last
    visible one down to the first as FA2 walks them (the causal diagonal, the only tile to mask, comes first;
    iteration i of `plan` is tile tiles[-1 - i]). Loads are cp.async into SMEM.

    stages=None is FA2's own order, one K and one V tile in SMEM: Q with the first K; V_j once K_j has landed,
    while S_j = Q K_j^T runs; then, once V_j has landed, K_j-1 while the softmax and P V_j run, so each iteration
    waits for two loads one after the other. stages=k is a software-pipelined kernel (Triton's num_stages = k + 1):
    a ring of k K/V tile pairs in SMEM, K and V of a tile loaded together, at most `in_flight` pairs (1..k,
    default k) ahead: the pair `in_flight` iterations ahead is loaded once P V_j is done.

    `k_region(j)` / `v_region(j)` name tile j in global memory, `scores(j)` scales and masks its score tile
    (`masked(j)`: whether the causal mask cuts it, which costs MASKED_TILE_FP32_OPS more),
    `row_state` is (m, l, acc) from init_row_state, `q_ops` run on Q once it has landed. SMEM port traffic as
    mma.sync reads it: every warp of a row slice reads K (ldmatrix), Q is read again from SMEM by every warp of a
    key slice (Is_Q_in_regs = false), and a cp.async fill lands meanwhile. `code`: the compiled kernel's
    instructions (ForwardCode), for FA2's own kernel: the walk enters its loop's code path after the first
    `code.masking_steps` tiles, and its ops say what they issue."""
    m, l_, acc = row_state
    block_m, d = q.shape
    ring = stages or 1
    k_buf = [Tile((block_n, d), q.dtype, "smem", f"K{x}") for x in range(ring)]
    v_buf = [Tile((block_n, d), q.dtype, "smem", f"V{x}") for x in range(ring)]
    s = Tile((block_m, block_n), "fp32", "reg", "S")
    p = Tile((block_m, block_n), q.dtype, "reg", "P")
    order = plan.indices  # iteration i walks tile tiles[-1 - i]: the plan counts iterations, not tiles
    tile_at = lambda pos: tiles[-1 - order[pos]]  # noqa: E731
    k_ready, v_ready = {}, {}
    tile_bytes = k_buf[0].nbytes

    def load_k(pos):
        k_ready[pos] = yield Load(k_region(tile_at(pos)), k_buf[pos % ring], wait=False, cp_async=True)

    def load_v(pos):
        v_ready[pos] = yield Load(v_region(tile_at(pos)), v_buf[pos % ring], wait=False, cp_async=True)

    ahead = loads_ahead(stages, in_flight)
    for pos in range(min(ahead, len(order))):
        yield from load_k(pos)
        if stages:
            yield from load_v(pos)
    yield Wait(q_ready)
    yield from q_ops
    # SMEM port: the cp.async fills land in SMEM while the products read it (FA2: V_j during S_j, K_j-1 during
    # P V_j; the ring declares one tile's fill per S_j). What they cost the port is the GPU's
    # async_copy_fill_smem_port_share: nothing on Hopper (run 15, "SMEM wavefronts"), every byte elsewhere.
    warps = warps_m * warps_n
    product_instructions = warps * code.mma if code else 0  # what each op issues (ForwardCode)

    def softmax_instructions(pos: int) -> int:
        if code is None:
            return 0
        return warps * (code.softmax + (code.mask if pos < code.masking_steps else 0))

    for pos, i in enumerate(order):
        yield plan.mark(i)
        if code is not None and pos == code.masking_steps:
            yield code.loop_path()
        j = tile_at(pos)
        k, v = k_buf[pos % ring], v_buf[pos % ring]
        yield Wait(k_ready.pop(pos))
        if not stages:
            yield from load_v(pos)
        yield Mma(q, k, s, instruction, b_transposed=True,
                  smem_read_bytes=warps_m * k.nbytes + warps_n * q.nbytes, smem_fill_bytes=tile_bytes,
                  instructions=product_instructions, warps=warps)
        following = pos + ahead
        fill = 0
        if not stages:
            yield Wait(v_ready.pop(pos))
            if following < len(order):
                yield from load_k(following)
                fill = tile_bytes
        yield from online_softmax(s, m, l_, acc, p, scores(j),
                                  extra_fp32_ops=MASKED_TILE_FP32_OPS if masked(j) else 0.0,
                                  instructions=softmax_instructions(pos))
        if code is not None and code.spill_bytes:  # the softmax's registers spill (taken alike in every tile)
            yield SpillStore(code.spill_bytes * 32 * warps)
        if stages:
            yield Wait(v_ready.pop(pos))
        yield Mma(p, v, acc, instruction, accumulate=True, smem_read_bytes=warps_m * v.nbytes, smem_fill_bytes=fill,
                  instructions=product_instructions, warps=warps)
        if stages and following < len(order):  # P V_j is done: the pair `ahead` iterations ahead
            yield from load_k(following)
            yield from load_v(following)


def resolve_tiles(problem: AttentionProblem, opts: dict, hw=None) -> tuple[int, int, int]:
    bm, bn, warps = default_tiles(problem.head_dim, decode=problem.seq_len == 1, hw=hw)
    bm, bn, warps = opts["block_m"] or bm, opts["block_n"] or bn, opts["warps"] or warps
    if min(bm, bn, warps) <= 0:
        raise InputError("fa2: block_m, block_n and warps must be positive")
    return bm, bn, warps


def build_plan(problem: AttentionProblem, hw, options=None) -> KernelPlan:
    opts = resolve_options(NAME, OPTIONS, options)
    if problem.dtype == "fp8":
        raise InputError("fa2: FlashAttention-2 has no FP8 path; use fa3 for fp8")
    bm, bn, warps = resolve_tiles(problem, opts, hw)
    _check_ring_options(opts, problem.pass_)
    backward = problem.pass_ != "fwd"
    tensors = declare_tensors(problem, backward=backward)
    launches = []
    if problem.pass_ in ("fwd", "fwd_bwd"):
        launches.append(forward_launch(problem, tensors, bm, bn, warps, stages=opts["stages"],
                                       in_flight=opts["loads_in_flight"]))
    if backward:
        from gpusim.kernels.fa2_backward import backward_launches
        launches.extend(backward_launches(problem, hw, tensors, opts))
    return KernelPlan(kernel=NAME, tensors=tensors, launches=launches,
                      info={"block_m": bm, "block_n": bn, "warps": warps, "instruction": "mma_sync",
                            "stages": opts["stages"], "loads_in_flight": opts["loads_in_flight"]})


def _check_ring_options(opts: dict, pass_: str) -> None:
    stages, in_flight = opts["stages"], opts["loads_in_flight"]
    if stages is None and in_flight is None:
        return
    if pass_ == "bwd":
        raise InputError("fa2: stages and loads_in_flight shape the forward's K/V loads; pass=bwd has no forward")
    if stages is None:
        raise InputError("fa2: loads_in_flight needs stages (FA2's own order has one K and one V tile)")
    if stages <= 0:
        raise InputError(f"fa2: stages={stages} must be positive")
    if in_flight is not None and not 0 < in_flight <= stages:
        raise InputError(f"fa2: loads_in_flight={in_flight} must be in 1..stages ({stages})")
