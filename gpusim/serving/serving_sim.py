"""A request-level serving simulation: continuous batching with and without chunked prefill, on simpy.

Requests arrive by a Poisson process, are batched step by step by a scheduler, and every step takes the time
the kernel simulator gives its attention plus a stated model of the rest of the layer. Reports TTFT, time per
output token (TPOT) and inter-token latency (ITL) p50/p99, throughput, and the latency of every step.

Workload. Prompt and output lengths come from `gpusim.serving.allocator.TraceSpec` (lognormal around ShareGPT's
means, seeded); arrivals are a Poisson process of rate `rate_per_s`: exponential inter-arrival times from
numpy's generator seeded with SeedSequence([trace.seed, 1]) (independent of the length stream), the first
request arriving one inter-arrival time after t = 0.

Schedulers (one engine, one GPU, tensor parallelism 1):
  - no chunking (vLLM's original scheduler, Kwon et al. 2023 Sec. 4.5; Orca-style iteration-level batching
    with prefill priority): when requests wait and fit, the step is a prefill-only step that admits waiting
    requests in arrival order while the sum of their prompts stays within `max_batch_tokens` (vLLM's
    max_num_batched_tokens; the first always goes) and the batch stays within `max_seqs`; it computes whole
    prompts and emits each request's first token. Running requests' decodes stall during it (the "prefill
    stall"). Otherwise the step decodes one token for every running request.
  - chunked prefill (Sarathi-Serve, Agrawal et al. 2024, arXiv 2403.02310 Sec. 4; vLLM's
    enable_chunked_prefill): every step has a token budget `chunk_size`. All running decodes go first (one
    token each), then the remaining budget goes to prompts in arrival order (requests already part-way
    through their prompt first, then newly admitted ones), up to `chunk_size - decodes` prompt tokens per
    step. A request whose last prompt chunk runs in a step emits its first token at the end of that step.
  Admission reserves KV against a budget of kv_memory_fraction x HBM capacity - weight bytes (the budget in
  tokens follows from the KV bytes per token of `kv_dtype`); there is no preemption. The allocator
  (`block_size`) decides how much one request reserves:
    - block_size = 0, contiguous (systems before vLLM): max_seq_len tokens per request, whatever its length;
    - block_size > 0, paged (PagedAttention): the request's final length (prompt + output; the simulator knows
      the output length) rounded up to whole pages. vLLM grows pages on demand and preempts when it runs out,
      so its footprint is smaller still; on-demand growth and preemption are not modeled.
  So the KV capacity in requests is budget / (max_seq_len x bytes per token) when contiguous, and about
  budget / (mean paged length x bytes per token) when paged; `max_seqs` caps both.

KV dtype (`kv_dtype`): bf16/fp16 K/V, or quantized fp8 (e4m3, e5m2), int8 or int4 with fp16 block scales
(one per head vector for fp8/int8, one per 32 elements for int4: KV_GROUP), stored and read as the paged
decode kernel does (gpusim.kernels.paged_decoding). Fewer bytes per token admit more requests, and the decode
step reads fewer bytes but dequantizes them.

Step time (seconds) = layers x attention time per layer + non-attention time:
  - attention, decode part: the decode kernel (`flash_decoding` for 16-bit KV; `paged_decoding` with
    kv_dtype for quantized KV, the only kernel with a quantized read path, reading K/V contiguously: the
    block table's own cost is `gpusim paging`'s subject, about 3% with gathered tiles) on AttentionProblem(batch=b, heads, kv_heads, seq_len=1,
    kv_len=L) with b the decoding requests and L their mean KV length (prompt + tokens generated), so the
    KV bytes read are exact; imbalance between long and short sequences is not modeled. Shapes are bucketed on a
    grid of powers of two in b and L (L >= KV_MIN) and the time is interpolated bilinearly between the four
    corners (exact at grid points, the simulator's own time there).
  - attention, prefill part: one causal launch of `prefill_kernel` per request piece (a prompt, or a chunk of
    `c` tokens after `p` cached ones: seq_len = c, kv_len = p + c); pieces longer than PREFILL_PIECE_ROWS
    (512) are timed as consecutive 512-row pieces. The bucket rounds c up to a power of two >= SEQ_MIN and
    p + c up to a power of two >= the rounded c; the time is the bucket's simulated time x the piece's FLOPs
    / the bucket's FLOPs (the kernel's simulated FLOP rate at the bucket shape). Real servers pack pieces into
    one variable-length launch; separate launches overcount small pieces' latency.
  - non-attention (QKV/O projections, MLP, embeddings; stated model, not simulated): every step streams all
    weights from HBM once and does 2 FLOPs per parameter per token at a large GEMM's rate, without overlap:
        t_linear = weight_bytes / (hbm_bandwidth x hbm_achievable_fraction)
                   + 2 x params x tokens / (simulated FLOP/s of an 8192^3 bf16 GEMM, power cap included)
    with params = model.params_billions x 1e9 (or 12 x layers x hidden^2 when a custom shape has none),
    weight_bytes = 2 bytes per parameter (bf16). No overlap makes it an upper bound of the roofline (max of
    the two); sampling, the LM head's softmax and CPU scheduling are not charged.
Kernel times are cached in a module-level dict keyed by (kernel, problem, hardware spec, options) (the spec is frozen
and hashable, so overridden presets do not collide with the preset of the same name), so a simulation calls
the kernel simulator a few dozen times at most and repeated simulations (chunked vs not) share the shapes.
"""

from __future__ import annotations

import math
import time as wallclock
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from gpusim.errors import InputError
from gpusim.hardware import HardwareSpec, get_preset
from gpusim.problem import AttentionProblem
from gpusim.serving.allocator import TraceSpec
from gpusim.serving.models import ModelShape, get_model

#: Smallest KV length of the decode grid (below it the time at KV_MIN is used: the kernel is latency-bound).
KV_MIN = 128
#: Smallest query length of a prefill bucket (one 64-row M tile).
SEQ_MIN = 64
#: Longest prefill piece timed as one launch; longer prompts are timed as consecutive pieces of this many
#: query rows (each over the keys up to its end). Keeps the simulated shapes small (a causal launch's
#: simulation cost grows with its distinct Q-tile classes); 512 rows x 32 heads is about one wave of
#: 128-row CTAs on 132 SMs, so the pieces still fill the GPU.
PREFILL_PIECE_ROWS = 512
#: Weights stored in bf16.
WEIGHT_BYTES_PER_PARAM = 2
#: Multiply-add = 2 FLOPs per parameter per token in the linear layers.
FLOPS_PER_PARAM_PER_TOKEN = 2
#: Parameters of a decoder layer without a published count: 4 h^2 (attention projections) + 8 h^2 (MLP).
PARAMS_PER_LAYER_PER_HIDDEN_SQ = 12
#: KV dtypes the serving simulation takes ("fp8" is e4m3).
SERVING_KV_DTYPES = ("bf16", "fp16", "fp8", "fp8_e4m3", "fp8_e5m2", "int8", "int4")
#: Elements per fp16 scale of quantized KV (None = one scale per head vector): int4 needs finer groups to
#: keep its error near fp8's (KIVI, QServe use 32-128; gpusim.serving.kv_cache's int4 default).
KV_GROUP = {"fp8_e4m3": None, "fp8_e5m2": None, "int8": None, "int4": 32}
#: Page sizes the allocator takes (paged_decoding's block sizes); 0 = contiguous max-length reservation.
SERVING_BLOCK_SIZES = (0, 8, 16, 32, 64, 128, 256)

_KERNEL_TIMES: dict = {}


def _hardware(hw: HardwareSpec | str) -> HardwareSpec:
    return get_preset(hw) if isinstance(hw, str) else hw


def _model(model: ModelShape | str) -> ModelShape:
    return get_model(model) if isinstance(model, str) else model


def _pow2_ceil(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(n, 1))))


def _pow2_floor(n: int) -> int:
    return 1 << max(0, math.floor(math.log2(max(n, 1))))


def kernel_time_s(kernel: str, problem: AttentionProblem, hardware: HardwareSpec, options: dict | None = None) -> float:
    """Simulated time of one launch, cached per (kernel, problem, hardware spec, options)."""
    key = (kernel, problem, hardware, tuple(sorted((options or {}).items())))
    if key not in _KERNEL_TIMES:
        from gpusim.simulate import simulate

        _KERNEL_TIMES[key] = simulate(kernel, problem, hardware, options).time_s
    return _KERNEL_TIMES[key]


#: The GEMM whose simulated FLOP rate stands for the linear layers' (a large square, as cuBLAS runs them).
LINEAR_GEMM_SIZE = 8192


def gemm_flops_per_s(hardware: HardwareSpec) -> float:
    """FLOP rate of a large bf16 GEMM on `hardware`, simulated (tensor-core rate, and the clock the power cap
    leaves it), cached per hardware spec."""
    from gpusim.problem import GemmProblem

    n = LINEAR_GEMM_SIZE
    return 2.0 * n ** 3 / kernel_time_s("gemm", GemmProblem(m=n, n=n, k=n), hardware)


def default_prefill_kernel(hardware: HardwareSpec | str) -> str:
    """fa3 where the GPU has Hopper's wgmma and TMA, fa4 on Blackwell, else fa2 (whichever builds first)."""
    from gpusim.kernels import available, get_kernel

    hw = _hardware(hardware)
    probe = AttentionProblem(batch=1, heads=1, seq_len=128, head_dim=128, causal=True)
    for name in ("fa3", "fa4", "fa2"):
        if name not in available():
            continue
        try:
            get_kernel(name).build_plan(probe, hw, None)
        except InputError:
            continue
        return name
    raise InputError(f"serving: no prefill attention kernel builds on {hw.name}")


@dataclass(frozen=True, kw_only=True)
class StepCost:
    attention_s: float
    linear_s: float

    @property
    def total_s(self) -> float:
        return self.attention_s + self.linear_s


class StepCostModel:
    """Time of one engine step of `model` on `hardware` (see the module docstring for the model)."""

    def __init__(self, model: ModelShape | str, hardware: HardwareSpec | str, *, prefill_kernel: str | None = None,
                 decode_kernel: str = "flash_decoding", decode_options: dict | None = None):
        self.model = _model(model)
        self.hw = _hardware(hardware)
        self.prefill_kernel = prefill_kernel or default_prefill_kernel(self.hw)
        self.decode_kernel = decode_kernel
        self.decode_options = dict(decode_options or {})
        self.shapes: set = set()        # distinct (kernel, problem) this model has asked for

    # ------------------------------------------------------------------ non-attention part
    @property
    def params(self) -> float:
        m = self.model
        if m.params_billions:
            return m.params_billions * 1e9
        hidden = m.hidden_size or m.heads * m.head_dim
        return float(PARAMS_PER_LAYER_PER_HIDDEN_SQ * m.layers * hidden * hidden)

    @property
    def weight_bytes(self) -> float:
        return self.params * WEIGHT_BYTES_PER_PARAM

    def linear_s(self, tokens: int) -> float:
        """Weight streaming plus linear-layer FLOPs of one step over `tokens` tokens (no overlap)."""
        hbm = self.hw.hbm_bandwidth_bytes_per_s * self.hw.hbm_achievable_fraction
        return self.weight_bytes / hbm + FLOPS_PER_PARAM_PER_TOKEN * self.params * tokens / gemm_flops_per_s(self.hw)

    # ------------------------------------------------------------------ attention, per layer
    def _time(self, kernel: str, problem: AttentionProblem, options: dict | None = None) -> float:
        self.shapes.add((kernel, problem))
        return kernel_time_s(kernel, problem, self.hw, options)

    def _decode_point(self, batch: int, kv_len: int) -> float:
        m = self.model
        return self._time(self.decode_kernel, AttentionProblem(batch=batch, heads=m.heads, kv_heads=m.kv_heads,
                                                               seq_len=1, kv_len=kv_len, head_dim=m.head_dim),
                          self.decode_options)

    def decode_attention_s(self, batch: int, mean_kv_len: float) -> float:
        """One layer's decode attention for `batch` sequences of mean KV length: bilinear on the pow-2 grid."""
        if batch <= 0:
            return 0.0
        kv = max(float(mean_kv_len), KV_MIN)
        b0 = _pow2_floor(batch)
        b1 = b0 if b0 == batch else 2 * b0
        l0 = _pow2_floor(int(kv))
        l1 = l0 if l0 == kv else 2 * l0
        wb = 0.0 if b1 == b0 else (batch - b0) / (b1 - b0)
        wl = 0.0 if l1 == l0 else (kv - l0) / (l1 - l0)

        def at(b, length):
            return self._decode_point(b, length)

        low = (1 - wl) * at(b0, l0) + (wl * at(b0, l1) if wl else 0.0)
        if not wb:
            return low
        high = (1 - wl) * at(b1, l0) + (wl * at(b1, l1) if wl else 0.0)
        return (1 - wb) * low + wb * high

    def prefill_attention_s(self, chunk: int, context_end: int) -> float:
        """One layer's causal attention of `chunk` new tokens after context_end - chunk cached ones; pieces
        longer than PREFILL_PIECE_ROWS are timed as consecutive sub-pieces of that many query rows."""
        if chunk <= 0:
            return 0.0
        if chunk > PREFILL_PIECE_ROWS:
            start = context_end - chunk
            ends = range(start + PREFILL_PIECE_ROWS, context_end + PREFILL_PIECE_ROWS, PREFILL_PIECE_ROWS)
            return sum(self.prefill_attention_s(min(e, context_end) - (e - PREFILL_PIECE_ROWS), min(e, context_end))
                       for e in ends)
        m = self.model
        seq = max(_pow2_ceil(chunk), SEQ_MIN)
        kv = max(seq, _pow2_ceil(context_end))
        bucket = AttentionProblem(batch=1, heads=m.heads, kv_heads=m.kv_heads, seq_len=seq, kv_len=kv,
                                  head_dim=m.head_dim, causal=True)
        actual = AttentionProblem(batch=1, heads=m.heads, kv_heads=m.kv_heads, seq_len=chunk, kv_len=context_end,
                                  head_dim=m.head_dim, causal=True)
        return self._time(self.prefill_kernel, bucket) * actual.flops / bucket.flops

    def step(self, decode_kv_lens, prefill_pieces) -> StepCost:
        """decode_kv_lens: KV length of each decoding request; prefill_pieces: (chunk, context_end) pairs."""
        decode_kv_lens = list(decode_kv_lens)
        prefill_pieces = list(prefill_pieces)
        attn = 0.0
        if decode_kv_lens:
            attn += self.decode_attention_s(len(decode_kv_lens), sum(decode_kv_lens) / len(decode_kv_lens))
        attn += sum(self.prefill_attention_s(c, e) for c, e in prefill_pieces)
        tokens = len(decode_kv_lens) + sum(c for c, _ in prefill_pieces)
        return StepCost(attention_s=self.model.layers * attn, linear_s=self.linear_s(tokens))

    def describe(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in sorted(self.decode_options.items()))
        decode = f"{self.decode_kernel} ({opts})" if opts else self.decode_kernel
        return (f"attention: {decode} (decode), {self.prefill_kernel} (prefill) on {self.hw.name}, "
                f"x {self.model.layers} layers; non-attention: {self.weight_bytes / 1e9:.1f} GB weights / HBM + "
                f"2 x {self.params / 1e9:.2f}e9 FLOPs per token / tensor peak")


# ---------------------------------------------------------------------------------------------- config
@dataclass(frozen=True, kw_only=True)
class ServingConfig:
    """One serving simulation. chunk_size None: no chunked prefill; else the per-step token budget."""

    model: ModelShape | str = "llama3-8b"
    hardware: HardwareSpec | str = "h200"
    rate_per_s: float = 4.0
    trace: TraceSpec = field(default_factory=lambda: TraceSpec(requests=200))
    chunk_size: int | None = None
    max_batch_tokens: int | None = None   # no chunking: prompt tokens per prefill step (default max(8192, max_seq_len))
    max_seqs: int = 256                   # requests in the batch (vLLM max_num_seqs)
    kv_memory_fraction: float = 0.9       # share of HBM for weights + KV (vLLM gpu_memory_utilization default)
    prefill_kernel: str | None = None
    decode_kernel: str | None = None      # default: flash_decoding for 16-bit KV, paged_decoding for quantized
    kv_dtype: str = "bf16"                # KV-cache element type (SERVING_KV_DTYPES)
    block_size: int = 16                  # KV allocator: tokens per page; 0 = contiguous max-length reservation

    def __post_init__(self) -> None:
        if self.kv_dtype not in SERVING_KV_DTYPES:
            raise InputError(f"serve: kv_dtype (--kv-dtype)={self.kv_dtype!r}: known {', '.join(SERVING_KV_DTYPES)}")
        if self.kv_dtype == "fp8":
            object.__setattr__(self, "kv_dtype", "fp8_e4m3")
        if isinstance(self.block_size, bool) or self.block_size not in SERVING_BLOCK_SIZES:
            raise InputError(f"serve: block_size (--block-size)={self.block_size!r}: 0 (contiguous max-length "
                             f"reservation) or a "
                             f"page size of {', '.join(map(str, SERVING_BLOCK_SIZES[1:]))} tokens")
        if self.quantized_kv and self.decode_kernel not in (None, "paged_decoding"):
            raise InputError(f"serve: decode_kernel={self.decode_kernel!r} has no quantized KV path; "
                             f"kv_dtype={self.kv_dtype} needs paged_decoding")
        if not (isinstance(self.rate_per_s, (int, float)) and math.isfinite(self.rate_per_s) and self.rate_per_s > 0):
            raise InputError(f"serve: rate_per_s={self.rate_per_s!r} must be a positive number (requests per second)")
        if self.chunk_size is not None and (isinstance(self.chunk_size, bool) or not isinstance(self.chunk_size, int)
                                            or self.chunk_size <= 0):
            raise InputError(f"serve: chunk_size={self.chunk_size!r} must be a positive whole number of tokens")
        if isinstance(self.max_seqs, bool) or not isinstance(self.max_seqs, int) or self.max_seqs <= 0:
            raise InputError(f"serve: max_seqs={self.max_seqs!r} must be a positive whole number")
        if self.max_batch_tokens is not None:
            if isinstance(self.max_batch_tokens, bool) or not isinstance(self.max_batch_tokens, int):
                raise InputError(f"serve: max_batch_tokens={self.max_batch_tokens!r} must be a whole number")
            if self.max_batch_tokens < self.trace.max_seq_len:
                raise InputError(f"serve: max_batch_tokens={self.max_batch_tokens} must be at least max_seq_len="
                                 f"{self.trace.max_seq_len} without chunked prefill (a whole prompt runs in one step)")
        if not 0 < self.kv_memory_fraction <= 1:
            raise InputError(f"serve: kv_memory_fraction={self.kv_memory_fraction} must be in (0, 1]")

    @property
    def prefill_token_budget(self) -> int:
        return self.max_batch_tokens or max(8192, self.trace.max_seq_len)

    @property
    def quantized_kv(self) -> bool:
        return self.kv_dtype in KV_GROUP

    @property
    def allocator(self) -> str:
        return f"paged {self.block_size}" if self.block_size else "contiguous"

    @property
    def memory_label(self) -> str:
        return f"{self.kv_dtype} KV, {self.allocator}"

    def kv_format(self):
        """The KV storage: 16-bit, or codes with fp16 block scales of KV_GROUP elements (as paged_decoding)."""
        from gpusim.serving.kv_cache import KVFormat

        if not self.quantized_kv:
            return KVFormat(dtype=self.kv_dtype)
        return KVFormat(dtype=self.kv_dtype, scale="block", group_size=KV_GROUP[self.kv_dtype])

    def decode_kernel_and_options(self) -> tuple[str, dict]:
        """flash_decoding for 16-bit KV (unless set); paged_decoding reading quantized K/V contiguously."""
        if not self.quantized_kv:
            return self.decode_kernel or "flash_decoding", {}
        options = {"kv_dtype": self.kv_dtype, "paged": False}
        if KV_GROUP[self.kv_dtype]:
            options["kv_group"] = KV_GROUP[self.kv_dtype]
        return "paged_decoding", options

    def reserved_tokens(self, prompt: int, output: int) -> int:
        """KV tokens one request reserves at admission: max_seq_len (contiguous) or its pages (paged)."""
        if not self.block_size:
            return self.trace.max_seq_len
        return -(-(prompt + output) // self.block_size) * self.block_size


# ---------------------------------------------------------------------------------------------- results
@dataclass(frozen=True, kw_only=True)
class StepRecord:
    start_s: float
    duration_s: float
    decode_tokens: int          # running requests that decoded one token
    prefill_tokens: int         # prompt tokens computed
    prefill_requests: int       # requests with a prompt piece in this step
    first_tokens: int           # requests whose prompt completed here (each emits its first token)
    running: int                # requests holding KV after admission in this step
    attention_s: float
    linear_s: float

    @property
    def output_tokens(self) -> int:
        return self.decode_tokens + self.first_tokens

    def to_dict(self) -> dict:
        return {**self.__dict__, "output_tokens": self.output_tokens}


@dataclass(frozen=True, kw_only=True)
class RequestRecord:
    id: int
    arrival_s: float
    prompt: int
    output: int
    first_token_s: float
    finish_s: float
    max_gap_s: float            # longest time between two consecutive output tokens

    @property
    def ttft_s(self) -> float:
        return self.first_token_s - self.arrival_s

    @property
    def tpot_s(self) -> float | None:
        """Mean time per output token after the first (None for one-token outputs)."""
        return (self.finish_s - self.first_token_s) / (self.output - 1) if self.output > 1 else None

    def to_dict(self) -> dict:
        return {**self.__dict__, "ttft_s": self.ttft_s, "tpot_s": self.tpot_s}


def _pct(values, q) -> float:
    values = [v for v in values if v is not None]
    return float(np.percentile(values, q)) if values else float("nan")


@dataclass(frozen=True, kw_only=True)
class ServingResult:
    config: ServingConfig
    model: str
    hardware: str
    prefill_kernel: str
    decode_kernel: str
    kv_capacity_tokens: int
    steps: tuple
    requests: tuple
    itl_s: np.ndarray = field(repr=False)   # every gap between consecutive output tokens of every request
    simulator_shapes: int = 0
    wall_s: float = 0.0
    cost_model: str = ""

    kv_bytes_per_token: int = 0
    kv_capacity_requests: int = 0           # contiguous: exact; paged: budget / the trace's mean reservation

    @property
    def label(self) -> str:
        chunking = f"chunked prefill ({self.config.chunk_size})" if self.config.chunk_size else "no chunking"
        return f"{chunking}, {self.config.memory_label}"

    @property
    def max_concurrent_requests(self) -> int:
        """Most requests holding KV at once (admitted, not finished)."""
        return max((s.running for s in self.steps), default=0)

    @property
    def mean_concurrent_requests(self) -> float:
        """Requests holding KV, averaged over busy time (step-duration weighted)."""
        busy = self.busy_s
        return float(sum(s.running * s.duration_s for s in self.steps) / busy) if busy else 0.0

    @property
    def output_tokens(self) -> int:
        return int(sum(r.output for r in self.requests))

    @property
    def start_s(self) -> float:
        return min(r.arrival_s for r in self.requests)

    @property
    def end_s(self) -> float:
        return max(r.finish_s for r in self.requests)

    @property
    def duration_s(self) -> float:
        """First arrival to last finish."""
        return self.end_s - self.start_s

    @property
    def throughput_tokens_per_s(self) -> float:
        return self.output_tokens / self.duration_s

    @property
    def throughput_requests_per_s(self) -> float:
        return len(self.requests) / self.duration_s

    @property
    def busy_s(self) -> float:
        return float(sum(s.duration_s for s in self.steps))

    def ttft_p(self, q: float) -> float:
        return _pct([r.ttft_s for r in self.requests], q)

    def tpot_p(self, q: float) -> float:
        return _pct([r.tpot_s for r in self.requests], q)

    def itl_p(self, q: float) -> float:
        return _pct(self.itl_s, q) if len(self.itl_s) else float("nan")

    @property
    def itl_max_s(self) -> float:
        """The longest wait between two output tokens of one request (the worst stall)."""
        return float(self.itl_s.max()) if len(self.itl_s) else float("nan")

    def step_rows(self) -> list[dict]:
        return [{"run": self.label, "step": i, **s.to_dict()} for i, s in enumerate(self.steps)]

    def request_rows(self) -> list[dict]:
        return [{"run": self.label, **r.to_dict()} for r in self.requests]

    def summary(self) -> dict:
        return {
            "label": self.label, "model": self.model, "hardware": self.hardware, "chunk_size": self.config.chunk_size,
            "rate_per_s": self.config.rate_per_s, "requests": len(self.requests), "output_tokens": self.output_tokens,
            "prompt_tokens": int(sum(r.prompt for r in self.requests)),
            "ttft_p50_s": self.ttft_p(50), "ttft_p99_s": self.ttft_p(99),
            "tpot_p50_s": self.tpot_p(50), "tpot_p99_s": self.tpot_p(99),
            "itl_p50_s": self.itl_p(50), "itl_p99_s": self.itl_p(99), "itl_max_s": self.itl_max_s,
            "max_step_s": max(s.duration_s for s in self.steps),
            "throughput_tokens_per_s": self.throughput_tokens_per_s,
            "throughput_requests_per_s": self.throughput_requests_per_s,
            "duration_s": self.duration_s, "busy_s": self.busy_s, "steps": len(self.steps),
            "kv_dtype": self.config.kv_dtype, "block_size": self.config.block_size,
            "allocator": self.config.allocator, "kv_bytes_per_token": self.kv_bytes_per_token,
            "kv_capacity_requests": self.kv_capacity_requests,
            "max_concurrent_requests": self.max_concurrent_requests,
            "mean_concurrent_requests": self.mean_concurrent_requests,
            "kv_capacity_tokens": self.kv_capacity_tokens, "prefill_kernel": self.prefill_kernel,
            "decode_kernel": self.decode_kernel, "simulator_shapes": self.simulator_shapes,
            "sim_wall_s": self.wall_s, "cost_model": self.cost_model,
        }


# ---------------------------------------------------------------------------------------------- engine
class _Request:
    __slots__ = ("arrival", "finish", "first", "gaps", "generated", "id", "last", "output", "prefilled", "prompt")

    def __init__(self, rid, arrival, prompt, output):
        self.id, self.arrival, self.prompt, self.output = rid, arrival, int(prompt), int(output)
        self.prefilled = self.generated = 0
        self.first = self.last = self.finish = None
        self.gaps: list[float] = []

    def emit(self, now: float) -> None:
        if self.generated == 0:
            self.first = now
        else:
            self.gaps.append(now - self.last)
        self.last = now
        self.generated += 1
        if self.generated == self.output:
            self.finish = now


def arrival_times(rate_per_s: float, n: int, seed: int) -> np.ndarray:
    """Poisson process: cumulative exponential inter-arrival times of mean 1 / rate."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    return np.cumsum(rng.exponential(1.0 / rate_per_s, n))


def kv_bytes_per_token(config: ServingConfig, model: ModelShape) -> int:
    """KV bytes of one token, all layers, in the config's KV format (scales included)."""
    from gpusim.serving.kv_cache import KVCacheSize

    return KVCacheSize(model=model, fmt=config.kv_format()).bytes_per_token


def kv_budget_bytes(config: ServingConfig, cost: StepCostModel) -> float:
    """kv_memory_fraction x HBM capacity - bf16 weights: what the KV cache may hold."""
    return config.kv_memory_fraction * cost.hw.hbm_capacity_bytes - cost.weight_bytes


def kv_capacity_tokens(config: ServingConfig, cost: StepCostModel) -> int:
    budget = kv_budget_bytes(config, cost)
    per_token = kv_bytes_per_token(config, cost.model)
    if budget <= 0:
        raise InputError(f"serve: {cost.model.name} weights ({cost.weight_bytes / 1e9:.0f} GB bf16) do not fit in "
                         f"{config.kv_memory_fraction:.0%} of {cost.hw.name}'s {cost.hw.hbm_capacity_bytes / 1e9:.0f} "
                         "GB (tensor parallelism is not simulated here; see gpusim.serving.tensor_parallel)")
    return int(budget // per_token)


def simulate_serving(config: ServingConfig) -> ServingResult:
    """Run the request-level simulation of `config` (see the module docstring)."""
    import simpy

    started = wallclock.perf_counter()
    decode_kernel, decode_options = config.decode_kernel_and_options()
    cost = StepCostModel(config.model, config.hardware, prefill_kernel=config.prefill_kernel,
                         decode_kernel=decode_kernel, decode_options=decode_options)
    capacity = kv_capacity_tokens(config, cost)
    prompts, outputs = config.trace.lengths()
    reserved = [config.reserved_tokens(int(p), int(o)) for p, o in zip(prompts, outputs)]
    if max(reserved) > capacity:
        raise InputError(f"serve: a request reserving {max(reserved)} tokens ({config.allocator}) does not fit the "
                         f"KV budget of {capacity} tokens")
    arrivals = arrival_times(config.rate_per_s, len(prompts), config.trace.seed)
    requests = [_Request(i, float(a), p, o) for i, (a, p, o) in enumerate(zip(arrivals, prompts, outputs))]
    need = {r.id: n for r, n in zip(requests, reserved)}

    env = simpy.Environment()
    waiting: deque = deque()
    state = {"wake": None, "reserved": 0}
    running: list[_Request] = []          # admitted, holding KV (prefilling or decoding)
    steps: list[StepRecord] = []

    def arrive():
        for req in requests:
            yield env.timeout(max(0.0, req.arrival - env.now))
            waiting.append(req)
            if state["wake"] is not None and not state["wake"].triggered:
                state["wake"].succeed()

    def admit(limit_tokens: int | None, max_new: int | None = None) -> list[_Request]:
        """Admit waiting requests in order while KV, max_seqs and (no chunking) the token budget allow."""
        new, tokens = [], 0
        while waiting and len(running) + len(new) < config.max_seqs and (max_new is None or len(new) < max_new):
            req = waiting[0]
            if state["reserved"] + need[req.id] > capacity:
                break
            if limit_tokens is not None and new and tokens + req.prompt > limit_tokens:
                break
            waiting.popleft()
            state["reserved"] += need[req.id]
            tokens += req.prompt
            new.append(req)
        return new

    def plan():
        """(decoding requests, [(request, chunk)]) for the next step."""
        if config.chunk_size is None:
            new = admit(config.prefill_token_budget)
            if new:
                running.extend(new)
                return [], [(r, r.prompt) for r in new]
            return [r for r in running if r.prefilled == r.prompt], []
        decodes = [r for r in running if r.prefilled == r.prompt]
        budget = config.chunk_size - len(decodes)
        pieces = []
        for r in running:
            if budget <= 0:
                break
            if r.prefilled < r.prompt:
                c = min(r.prompt - r.prefilled, budget)
                pieces.append((r, c))
                budget -= c
        while budget > 0 and waiting:
            new = admit(None, max_new=1)
            if not new:
                break
            r = new[0]
            running.append(r)
            c = min(r.prompt, budget)
            pieces.append((r, c))
            budget -= c
        return decodes, pieces

    def engine():
        done = 0
        while done < len(requests):
            decodes, pieces = plan()
            if not decodes and not pieces:
                state["wake"] = env.event()
                yield state["wake"]
                state["wake"] = None
                continue
            step = cost.step([r.prompt + r.generated for r in decodes],
                             [(c, r.prefilled + c) for r, c in pieces])
            start = env.now
            yield env.timeout(step.total_s)
            now = env.now
            first = 0
            for r in decodes:
                r.emit(now)
            for r, c in pieces:
                r.prefilled += c
                if r.prefilled == r.prompt:
                    r.emit(now)
                    first += 1
            finished = [r for r in running if r.finish is not None]
            for r in finished:
                running.remove(r)
                state["reserved"] -= need[r.id]
            done += len(finished)
            steps.append(StepRecord(start_s=start, duration_s=step.total_s, decode_tokens=len(decodes),
                                    prefill_tokens=sum(c for _, c in pieces), prefill_requests=len(pieces),
                                    first_tokens=first, running=len(running) + len(finished),
                                    attention_s=step.attention_s, linear_s=step.linear_s))

    env.process(arrive())
    env.process(engine())
    env.run()
    records = tuple(RequestRecord(id=r.id, arrival_s=r.arrival, prompt=r.prompt, output=r.output,
                                  first_token_s=r.first, finish_s=r.finish, max_gap_s=max(r.gaps, default=0.0))
                    for r in requests)
    itl = np.fromiter((g for r in requests for g in r.gaps), dtype=float)
    return ServingResult(config=config, model=cost.model.name, hardware=cost.hw.name,
                         prefill_kernel=cost.prefill_kernel, decode_kernel=cost.decode_kernel,
                         kv_capacity_tokens=capacity, steps=tuple(steps), requests=records, itl_s=itl,
                         simulator_shapes=len(cost.shapes), wall_s=wallclock.perf_counter() - started,
                         cost_model=cost.describe(), kv_bytes_per_token=kv_bytes_per_token(config, cost.model),
                         kv_capacity_requests=int(capacity // float(np.mean(reserved))))


@dataclass(frozen=True, kw_only=True)
class ChunkingComparison:
    unchunked: ServingResult
    chunked: ServingResult

    def rows(self) -> list[dict]:
        return [self.unchunked.summary(), self.chunked.summary()]


def compare_chunking(config: ServingConfig, chunk_size: int = 512) -> ChunkingComparison:
    """The same workload without chunked prefill and with a `chunk_size` token budget per step."""
    from dataclasses import replace

    return ChunkingComparison(unchunked=simulate_serving(replace(config, chunk_size=None)),
                              chunked=simulate_serving(replace(config, chunk_size=chunk_size)))
