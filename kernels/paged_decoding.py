"""PagedAttention decode (Kwon et al. 2023, arXiv 2309.06180), Section 4.1 and Figure 5: one query token per
sequence attends to a KV cache stored in fixed-size pages (blocks of `block_size` tokens) found through a
per-sequence block table.

Schedule: FlashDecoding-style (Dao et al. 2023) rather than vLLM's v1 kernel. One CTA per (sequence, KV head,
split): the query heads of a GQA group are packed into the rows of one Q tile (padded to the 16 rows of an
`mma.sync`), so each K/V page is read once per KV head; the KV range is cut into `num_splits` page-aligned
parts whose partial outputs a second launch merges through their log-sum-exps (as vLLM's v2 kernel does).
Each CTA walks its KV range in tiles of `block_n` tokens with the online softmax, keeping `stages` tiles of
K and V in flight.

What paging costs, as modelled here:
  * block-table reads: the page ids of each tile are read from the `block_table` tensor in HBM (4 bytes per
    page), `stages` tiles ahead of the page loads that need them; the first one is on the critical path;
  * page-granular loads: one load per page (or per `block_n`-token piece of a page larger than a tile); loads
    never straddle pages, and the last, partly filled page is read whole (its tail is masked), so ragged
    ends cost up to min(block_size, block_n) - 1 tokens of extra bytes;
  * address generation: every thread forms each page's base address from its table entry (one IMAD);
  * a split must hold whole tiles, so big pages cap how finely a short context can be split.
`paged=False` runs the same tile loop over contiguous K/V ([batch, kv_heads, kv_len, head_dim], clamped
ragged end, no table), the baseline the paged kernel is compared with.

Programs must not branch on data values, so the page ids come from the plan: the host builds the block
table (`make_block_table`, pages in order or shuffled with `page_table_seed`) exactly as a serving engine's
scheduler does, the program addresses the pages it lists and still reads the table from HBM for its bytes
and latency. The functional test scatters K/V into a shuffled page pool with the same table, so a kernel
that ignored the table would compute the wrong output.

Quantized KV (`kv_dtype` fp8_e4m3, fp8_e5m2, int8, int4): pages hold codes plus one fp16 scale per
`kv_group` elements of each token's head vector (KV-cache quantization as in vLLM's fp8 cache, KIVI,
QServe); the kernel reads the smaller pages and their scales and dequantizes each tile to the problem's
dtype on the FP32 pipe before the tensor-core products (which therefore stay bf16/fp16).

Differences from vLLM: vLLM's v1/v2 kernels use CUDA-core dot products per warp and a page per warp; here
the GQA group goes through tensor cores as in FlashInfer / FlashDecoding, and warps are one process.
"""

from __future__ import annotations


import numpy as np

from gpusim.errors import InputError
from gpusim.launch import KernelPlan, Launch, Option, resolve_options
from gpusim.ops import GlobalTensor, Load, Mma, Store, Tile, Vector, Wait
from gpusim.problem import AttentionProblem
from gpusim.kernels.attention_common import finalize_output, init_row_state, online_softmax, tensor_dtype

NAME = "paged_decoding"
PROBLEM = AttentionProblem
BLOCK_SIZES = (8, 16, 32, 64, 128, 256)
KV_QUANT_DTYPES = ("fp8_e4m3", "fp8_e5m2", "int8", "int4")
OPTIONS = {
    "block_size": Option(int, 16, "tokens per KV page (vLLM's block size)", BLOCK_SIZES),
    "paged": Option(bool, True, "read K/V through the block table (false: contiguous K/V, the baseline)"),
    "tile": Option(str, "gather", "gather: pages gathered into block_n-token SMEM tiles; page: one page is one "
                   "tile (block_n = block_size, vLLM's page-at-a-time loop)", ("gather", "page")),
    "block_n": Option(int, None, "KV tokens per SMEM tile with tile=gather (default 64; 32 for head dim 256)"),
    "stages": Option(int, None, "K/V tiles in flight per CTA (default 2, or 1 where two do not fit in SMEM)"),
    "num_splits": Option(int, None, "KV splits per (sequence, KV head) (default: enough CTAs for one wave)"),
    "page_table_seed": Option(int, 0, "0: pages in order; otherwise the page pool is shuffled with this seed"),
    "kv_dtype": Option(str, None, "quantized KV cache: fp8_e4m3, fp8_e5m2, int8 or int4 (default: unquantized)",
                       (None,) + KV_QUANT_DTYPES),
    "kv_group": Option(int, None, "elements per fp16 scale along the head dim, quantized KV (default head_dim)"),
}
#: Block-table entries are 4-byte integers (int32 in vLLM). Stored as fp32 here because the op API has no
#: int32 type; page ids below 2^24 are exact and the byte count is the same.
TABLE_DTYPE = "fp32"
#: Rows of one mma.sync tile (m16n8k16): the packed GQA query heads are padded to a multiple of it.
MMA_ROWS = 16
#: Per page and thread: one IMAD forming the page's base address (table entry x page stride + head offset).
ADDRESS_OPS_PER_THREAD_PER_PAGE = 1.0
#: Dequantization per K/V element: one conversion to FP32 (I2F / F2F) and one multiply by its scale; int4
#: also unpacks two codes per byte (one shift-and-mask, LOP3).
DEQUANT_OPS_PER_ELEMENT = {"fp8_e4m3": 2.0, "fp8_e5m2": 2.0, "int8": 2.0, "int4": 3.0}
#: Split merge per partial output element: exp-weight FMA and the sum (2); per (row, split): one exp.
COMBINE_OPS_PER_ELEMENT = 2.0
WARPS = 4
REGISTERS_PER_THREAD = 128
SCALE_DTYPE = "fp16"


def make_block_table(batch: int, pages_per_seq: int, seed: int = 0) -> np.ndarray:
    """[batch, pages_per_seq] physical page ids into a pool of batch x pages_per_seq pages: in order when
    seed is 0, else a random permutation of the pool (what a long-running allocator's free list looks like)."""
    ids = np.arange(batch * pages_per_seq)
    if seed:
        ids = np.random.default_rng(seed).permutation(ids)
    return ids.reshape(batch, pages_per_seq)


def paged_inputs(problem: AttentionProblem, inputs: dict, options=None, pad_seed: int = 1) -> dict:
    """Kernel inputs from contiguous Q/K/V (as `gpusim.reference.random_inputs` makes them): K and V scattered
    into the page pool through the block table (unused page slots hold random junk, which the kernel must
    mask), and the table itself. Unquantized values: for kv_dtype, gpusim.serving.kv_quant.quantized_kernel_inputs
    turns these into codes and scales."""
    opts = resolve_options(NAME, OPTIONS, options)
    out = {"Q": inputs["Q"]}
    if not opts["paged"]:
        out.update(K=inputs["K"], V=inputs["V"])
        return out
    bs, b, hk, l, d = opts["block_size"], problem.batch, problem.kv_heads, problem.kv_len, problem.head_dim
    pages = -(-l // bs)
    table = make_block_table(b, pages, opts["page_table_seed"])
    junk = np.random.default_rng(pad_seed)
    for name in ("K", "V"):
        cache = junk.standard_normal((b * pages, hk, bs, d)).astype(np.float32) * 4.0
        src = np.asarray(inputs[name], dtype=np.float32)
        padded = np.concatenate([src, np.zeros((b, hk, pages * bs - l, d), np.float32)], axis=2)
        padded[:, :, l:] = junk.standard_normal((b, hk, pages * bs - l, d)) * 4.0
        for seq in range(b):
            for p in range(pages):
                cache[table[seq, p]] = padded[seq, :, p * bs:(p + 1) * bs]
        out[f"{name}_cache"] = cache
    out["block_table"] = table.astype(np.float32)
    return out


def default_block_n(head_dim: int) -> int:
    return 64 if head_dim <= 128 else 32


def choose_splits(base_ctas: int, tiles: int, sm_count: int) -> int:
    """FlashDecoding's aim: enough CTAs for one wave of the SMs, no split without work, at most 128."""
    if base_ctas >= sm_count:
        return 1
    return max(1, min(tiles, -(-sm_count // base_ctas), 128))


def build_plan(problem: AttentionProblem, hw, options=None) -> KernelPlan:
    opts = resolve_options(NAME, OPTIONS, options)
    if problem.seq_len != 1:
        raise InputError(f"{NAME}: a decode kernel takes one query token per sequence (seq_len=1), "
                         f"got seq_len={problem.seq_len}")
    if problem.pass_ != "fwd":
        raise InputError(f"{NAME}: forward only (decode), got pass={problem.pass_}")
    if problem.dtype not in ("bf16", "fp16"):
        raise InputError(f"{NAME}: Q and the tensor-core products are bf16 or fp16 (quantize K/V with kv_dtype), "
                         f"got dtype={problem.dtype}")
    bs, paged = opts["block_size"], opts["paged"]
    if opts["tile"] == "page":
        if not paged:
            raise InputError(f"{NAME}: tile=page needs paged=true")
        if opts["block_n"] is not None:
            raise InputError(f"{NAME}: tile=page sets block_n to block_size; do not give block_n")
        bn = bs
    else:
        bn = opts["block_n"] or default_block_n(problem.head_dim)
    stages = opts["stages"]
    if bn <= 0 or bn & (bn - 1):
        raise InputError(f"{NAME}: block_n={bn} must be a positive power of two")
    if stages is not None and stages <= 0:
        raise InputError(f"{NAME}: stages={stages} must be positive")
    kv_dt = opts["kv_dtype"]
    d = problem.head_dim
    group = opts["kv_group"] or d
    if opts["kv_group"] is not None and kv_dt is None:
        raise InputError(f"{NAME}: kv_group applies only with kv_dtype")
    if kv_dt is not None and (group <= 0 or d % group):
        raise InputError(f"{NAME}: kv_group={group} must divide head_dim={d}")
    if stages is None:
        stages = 2 if _smem_bytes(problem, bn, 2, kv_dt, group) <= hw.smem_per_cta_max_bytes else 1

    b, h, hk, l = problem.batch, problem.heads, problem.kv_heads, problem.kv_len
    dt = tensor_dtype(problem)
    store_dt = kv_dt or dt
    tiles = -(-l // bn)
    splits = opts["num_splits"] or choose_splits(b * hk, tiles, hw.sm_count)
    if splits <= 0:
        raise InputError(f"{NAME}: num_splits={splits} must be positive")
    tiles_per_split = -(-tiles // min(splits, tiles))
    splits = -(-tiles // tiles_per_split)
    pages_per_seq = -(-l // bs)

    tensors = {
        "Q": GlobalTensor("Q", (b, h, 1, d), dt, "input"),
        "O": GlobalTensor("O", (b, h, 1, d), dt, "output"),
        "LSE": GlobalTensor("LSE", (b, h, 1), "fp32", "output"),
    }
    n_groups = d // group
    if paged:
        table = make_block_table(b, pages_per_seq, opts["page_table_seed"])
        tensors["K_cache"] = GlobalTensor("K_cache", (b * pages_per_seq, hk, bs, d), store_dt, "input")
        tensors["V_cache"] = GlobalTensor("V_cache", (b * pages_per_seq, hk, bs, d), store_dt, "input")
        tensors["block_table"] = GlobalTensor("block_table", (b, pages_per_seq), TABLE_DTYPE, "input")
        if kv_dt:
            for name in ("K_scale", "V_scale"):
                tensors[name] = GlobalTensor(name, (b * pages_per_seq, hk, bs, n_groups), SCALE_DTYPE, "input")
    else:
        table = None
        tensors["K"] = GlobalTensor("K", (b, hk, l, d), store_dt, "input")
        tensors["V"] = GlobalTensor("V", (b, hk, l, d), store_dt, "input")
        if kv_dt:
            for name in ("K_scale", "V_scale"):
                tensors[name] = GlobalTensor(name, (b, hk, l, n_groups), SCALE_DTYPE, "input")
    if splits > 1:
        tensors["O_partial"] = GlobalTensor("O_partial", (b, h, splits, d), "fp32", "scratch")
        tensors["LSE_partial"] = GlobalTensor("LSE_partial", (b, h, splits), "fp32", "scratch")

    geometry = _Geometry(problem, bs, bn, paged, table, kv_dt, group)
    launches = [_decode_launch(problem, tensors, geometry, stages, splits, tiles_per_split)]
    if splits > 1:
        launches.append(_combine_launch(problem, tensors, splits))
    kv_read = sum(t.nbytes for name, t in tensors.items() if name in ("K", "V", "K_cache", "V_cache"))
    info = {"block_size": bs if paged else None, "paged": paged, "block_n": bn, "stages": stages,
            "num_splits": splits, "pages_per_seq": pages_per_seq if paged else None,
            "kv_dtype": store_dt, "kv_group": group if kv_dt else None, "instruction": "mma_sync",
            "kv_cache_bytes": kv_read,
            "block_table_bytes": tensors["block_table"].nbytes if paged else 0}
    return KernelPlan(kernel=NAME, tensors=tensors, launches=launches, info=info)


class _Geometry:
    """Which loads bring tile j of a sequence on chip: page pieces (paged) or one contiguous range."""

    def __init__(self, problem, block_size, block_n, paged, table, kv_dtype, group):
        self.l, self.bs, self.bn, self.paged, self.table = problem.kv_len, block_size, block_n, paged, table
        self.kv_dtype, self.group = kv_dtype, group

    def pieces(self, b: int, j: int):
        """(region index after (page or batch, head), tokens) per load of tile j, and the page-table entries
        [p0, p1) it needs (None for contiguous)."""
        t0 = j * self.bn
        if not self.paged:
            return [((b, slice(t0, t0 + self.bn)), min(self.bn, self.l - t0))], None
        bs = self.bs
        if bs >= self.bn:  # a piece of one page
            p, off = divmod(t0, bs)
            return [((int(self.table[b, p]), slice(off, off + self.bn)), self.bn)], (p, p + 1)
        p0 = t0 // bs
        p1 = min(-(-self.l // bs), (t0 + self.bn) // bs)
        return [((int(self.table[b, p]), slice(0, bs)), bs) for p in range(p0, p1)], (p0, p1)

    def new_table_entries(self, j: int):
        """Table entries tile j reads that no earlier tile read (a page larger than a tile is looked up once)."""
        if not self.paged:
            return None
        t0 = j * self.bn
        if self.bs >= self.bn:
            p, off = divmod(t0, self.bs)
            return (p, p + 1) if off == 0 else None
        return (t0 // self.bs, min(-(-self.l // self.bs), (t0 + self.bn) // self.bs))


def _decode_launch(problem, tensors, geo: _Geometry, stages: int, splits: int, tiles_per_split: int) -> Launch:
    b_, hk_n, d, g, l = problem.batch, problem.kv_heads, problem.head_dim, problem.group_size, problem.kv_len
    dt = tensor_dtype(problem)
    bn, paged, kv_dt = geo.bn, geo.paged, geo.kv_dtype
    store_dt = kv_dt or dt
    m_pad = -(-g // MMA_ROWS) * MMA_ROWS
    tiles = -(-l // bn)
    threads = 32 * WARPS
    q_t, o_t, lse_t = tensors["Q"], tensors["O"], tensors["LSE"]
    k_src = tensors["K_cache" if paged else "K"]
    v_src = tensors["V_cache" if paged else "V"]
    table_t = tensors.get("block_table")
    scales = (tensors.get("K_scale"), tensors.get("V_scale"))
    grid = [(b, hk, s) for s in range(splits) for hk in range(hk_n) for b in range(b_)]

    def program(cta):
        b, hk, split = cta
        h0 = hk * g
        first, stop = split * tiles_per_split, min(tiles, (split + 1) * tiles_per_split)
        q = Tile((m_pad, d), dt, "smem", "Q")
        s = Tile((m_pad, bn), "fp32", "reg", "S")
        p = Tile((m_pad, bn), dt, "reg", "P")
        k_tiles = [Tile((bn, d), dt, "smem", f"K{i}") for i in range(stages)]
        v_tiles = [Tile((bn, d), dt, "smem", f"V{i}") for i in range(stages)]
        yield Load(q_t.region(b, slice(h0, h0 + g), 0), q, wait=False)
        m, l_, acc, init = init_row_state(g, m_pad, d)
        for op in init:
            yield op
        table_handles: dict = {}
        issued: dict = {}

        def issue_table(j):
            entries = geo.new_table_entries(j) if j < stop else None
            if entries is not None:
                tile = Tile((entries[1] - entries[0],), TABLE_DTYPE, "smem", "pages")
                table_handles[j] = yield Load(table_t.region(b, slice(*entries)), tile, wait=False)

        def issue_kv(j):
            if j >= stop:
                return
            if j in table_handles:
                yield Wait(table_handles.pop(j))
            pieces, _ = geo.pieces(b, j)
            slot = (j - first) % stages
            if paged:
                yield Vector(_noop, [], Tile((threads,), "fp32"), ADDRESS_OPS_PER_THREAD_PER_PAGE * len(pieces),
                             elements=threads)
            loads = []
            for src, scale_t, name, dst in ((k_src, scales[0], "K", k_tiles[slot]), (v_src, scales[1], "V", v_tiles[slot])):
                parts, handles = [], []
                direct = len(pieces) == 1 and kv_dt is None  # the load fills the SMEM tile itself
                for index, tokens in pieces:
                    raw = dst if direct else Tile((tokens, d), store_dt, "smem", f"{name}page")
                    handles.append((yield Load(src.region(index[0], hk, index[1]), raw, wait=False)))
                    sc = None
                    if scale_t is not None:
                        sc = Tile((tokens, d // geo.group), SCALE_DTYPE, "smem", f"{name}scale")
                        handles.append((yield Load(scale_t.region(index[0], hk, index[1]), sc, wait=False)))
                    parts.append((raw, sc))
                loads.append((parts, handles, direct))
            issued[j] = loads

        def tile_ready(parts, handles, direct, dst: Tile):
            for handle in handles:
                yield Wait(handle)
            if direct:
                return
            rows = [raw for raw, _ in parts]
            if kv_dt is not None:
                rows = []
                for raw, sc in parts:
                    deq = Tile(raw.shape, dt, "smem", "dequantized")
                    yield Vector(_dequant(d // geo.group), [raw, sc], deq, DEQUANT_OPS_PER_ELEMENT[kv_dt])
                    rows.append(deq)
            # pages land in adjacent rows of the SMEM tile; gathering them costs no instruction (this op
            # only hands the functional interpreter one tile)
            yield Vector(_concat, rows, dst, 0.0)

        for j in range(first, min(stop, first + stages + 1)):
            yield from issue_table(j)
        for j in range(first, min(stop, first + stages)):
            yield from issue_kv(j)
        for j in range(first, stop):
            slot = (j - first) % stages
            k_load, v_load = issued.pop(j)
            k, v = k_tiles[slot], v_tiles[slot]
            yield from tile_ready(*k_load, k)
            yield Mma(q, k, s, "mma_sync", b_transposed=True, smem_read_bytes=k.nbytes, warps=WARPS)
            valid = min(bn, l - j * bn)
            yield from online_softmax(s, m, l_, acc, p, _scale_and_mask(problem.scale, valid))
            yield from tile_ready(*v_load, v)
            yield Mma(p, v, acc, "mma_sync", accumulate=True, smem_read_bytes=v.nbytes, warps=WARPS)
            yield from issue_kv(j + stages)
            yield from issue_table(j + stages + 1)
        heads = slice(h0, h0 + g)
        if splits == 1:
            out = Tile((m_pad, d), o_t.dtype, "smem", "O")
            lse = Tile((m_pad,), "fp32", "reg", "LSE")
            yield from finalize_output(acc, l_, m, out, lse)
            yield Store(out, o_t.region(b, heads, 0))
            yield Store(lse, lse_t.region(b, heads, 0))
        else:
            out = Tile((m_pad, d), "fp32", "smem", "O_partial")
            lse = Tile((m_pad,), "fp32", "reg", "LSE_partial")
            yield from finalize_output(acc, l_, m, out, lse)
            yield Store(out, tensors["O_partial"].region(b, heads, split))
            yield Store(lse, tensors["LSE_partial"].region(b, heads, split))

    smem = _smem_bytes(problem, bn, stages, kv_dt, geo.group)
    shared = (lambda cta: {"block_table": (cta[0],)}) if paged else (lambda cta: {})
    return Launch(name="paged_decode" if paged else "contiguous_decode", grid=grid, program=program,
                  smem_bytes_per_cta=int(smem), threads_per_cta=threads, registers_per_thread=REGISTERS_PER_THREAD,
                  shared_by=shared)


def _smem_bytes(problem, bn: int, stages: int, kv_dt, group: int) -> int:
    """Q tile + per stage the K and V tiles (and, quantized, their code pages and fp16 scales)."""
    elem, d = problem.element_bytes, problem.head_dim
    m_pad = -(-problem.group_size // MMA_ROWS) * MMA_ROWS
    raw = (2 * bn * d * (0.5 if kv_dt == "int4" else 1) + 2 * bn * (d // group) * 2) if kv_dt else 0
    return int(m_pad * d * elem + stages * (2 * bn * d * elem + raw))


def _combine_launch(problem, tensors, splits: int) -> Launch:
    """Merge the splits' partial outputs: O = sum_s exp(lse_s - lse) O_s, lse = log sum_s exp(lse_s)."""
    g, d = problem.group_size, problem.head_dim
    o_p, lse_p, o_t, lse_t = tensors["O_partial"], tensors["LSE_partial"], tensors["O"], tensors["LSE"]
    grid = [(b, hk) for hk in range(problem.kv_heads) for b in range(problem.batch)]
    dt = o_t.dtype

    def program(cta):
        b, hk = cta
        heads = slice(hk * g, (hk + 1) * g)
        parts = Tile((g, splits, d), "fp32", "smem", "O_partial")
        lses = Tile((g, splits), "fp32", "reg", "LSE_partial")
        h1 = yield Load(o_p.region(b, heads), parts, wait=False)
        yield Load(lse_p.region(b, heads), lses)
        lse = Tile((g,), "fp32", "reg", "LSE")
        weights = Tile((g, splits), "fp32", "reg", "w")
        yield Vector(_merge_lse, [lses], lse, 2.0, 1.0, elements=g * splits)
        yield Vector(lambda ls, tot: np.exp(ls - _finite(tot)[:, None]), [lses, lse], weights, 1.0, 1.0)
        yield Wait(h1)
        out = Tile((g, d), dt, "smem", "O")
        yield Vector(lambda o, w: np.einsum("gsd,gs->gd", o, w), [parts, weights], out, COMBINE_OPS_PER_ELEMENT,
                     elements=g * splits * d)
        yield Store(out, o_t.region(b, heads, 0))
        yield Store(lse, lse_t.region(b, heads, 0))

    smem = g * splits * d * 4
    return Launch(name="paged_decode_combine", grid=grid, program=program, smem_bytes_per_cta=int(smem),
                  threads_per_cta=128, registers_per_thread=64)


# ------------------------------------------------------------------------------------------------ numpy
def _noop():
    return np.zeros(1)


def _concat(*parts):
    return np.concatenate(parts, axis=0)


def _finite(x):
    return np.where(np.isfinite(x), x, 0.0)


def _merge_lse(lses):
    m = _finite(lses.max(axis=1))
    total = np.exp(lses - m[:, None]).sum(axis=1)
    with np.errstate(divide="ignore"):
        return np.where(total > 0, m + np.log(np.where(total > 0, total, 1.0)), -np.inf)


def _scale_and_mask(scale: float, valid: int):
    """Scale the raw scores; columns past the sequence's last token (the unused tail of its last page) are
    masked. Part of the per-element softmax count (attention_common: scale + select + max)."""
    def apply(sc):
        sc = sc * scale
        if sc.shape[1] > valid:
            sc = sc.copy()
            sc[:, valid:] = -np.inf
        return sc
    return apply


def _dequant(groups: int):
    def fn(codes, scales):
        rows, d = codes.shape
        return (codes.reshape(rows, groups, d // groups) * scales[:, :, None]).reshape(rows, d)
    return fn
