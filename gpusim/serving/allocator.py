"""KV-cache allocation over a request trace: contiguous max-length reservation against paging.

PagedAttention (Kwon et al. 2023, arXiv 2309.06180, Sections 3 and 4.2, Figure 2): systems before vLLM
reserved one contiguous KV region of the maximum sequence length per request, so most of it sits reserved
for tokens not generated yet or never generated (internal fragmentation); paging allocates `block_size`-token
pages on demand and wastes only the unused tail of each request's last page.

The trace: `requests` requests with prompt and output lengths drawn from lognormal distributions whose means
follow ShareGPT as measured in the vLLM paper (Figure 11: mean input 161.31, mean output 337.99 tokens), with
log-space standard deviation `sigma` (default 1.0), each rounded up to at least one token and the total clipped
to `max_seq_len` (the output is shortened). Seeded numpy generator; the same trace feeds both schemes.

Accounting is time-averaged over decode steps, which is what a snapshot of a server in steady state sees:
during its step t (1 <= t <= output) a request holds prompt + t tokens of KV. Per step,
    contiguous: reserved = max_seq_len tokens; used = prompt + t;
                wasted = reserved - used, split into "future" (tokens the request will still generate) and
                "never used" (max_seq_len - prompt - output, internal fragmentation);
    paged:      reserved = ceil((prompt + t) / block_size) x block_size; wasted = the last page's free slots.
The largest batch that fits a KV budget: budget // reserved bytes per request (max length for contiguous;
for paging the time-averaged reservation, i.e. the steady-state mean with requests at every point of their
lives).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from gpusim.errors import InputError
from gpusim.serving.kv_cache import kv_cache_size
from gpusim.serving.models import ModelShape

#: ShareGPT means from the vLLM paper, Figure 11 (tokens).
SHAREGPT_MEAN_PROMPT = 161.31
SHAREGPT_MEAN_OUTPUT = 337.99


@dataclass(frozen=True, kw_only=True)
class TraceSpec:
    """Request lengths: lognormal with the given means (tokens) and log-space sigma, clipped to max_seq_len."""

    requests: int = 1000
    mean_prompt: float = SHAREGPT_MEAN_PROMPT
    mean_output: float = SHAREGPT_MEAN_OUTPUT
    sigma: float = 1.0
    max_seq_len: int = 2048
    seed: int = 0

    def __post_init__(self) -> None:
        if self.requests <= 0 or self.max_seq_len < 2:
            raise InputError("trace: requests must be positive and max_seq_len at least 2")
        if self.mean_prompt <= 0 or self.mean_output <= 0 or self.sigma < 0:
            raise InputError("trace: means must be positive and sigma non-negative")

    def lengths(self) -> tuple[np.ndarray, np.ndarray]:
        """(prompt, output) token counts, integer arrays. mu = ln(mean) - sigma^2 / 2 gives the stated mean."""
        rng = np.random.default_rng(self.seed)
        mu_p = math.log(self.mean_prompt) - self.sigma ** 2 / 2
        mu_o = math.log(self.mean_output) - self.sigma ** 2 / 2
        prompt = np.maximum(1, np.ceil(rng.lognormal(mu_p, self.sigma, self.requests))).astype(np.int64)
        output = np.maximum(1, np.ceil(rng.lognormal(mu_o, self.sigma, self.requests))).astype(np.int64)
        prompt = np.minimum(prompt, self.max_seq_len - 1)
        output = np.minimum(output, self.max_seq_len - prompt)
        return prompt, output


@dataclass(frozen=True, kw_only=True)
class SchemeUsage:
    """Time-averaged KV bytes of one allocation scheme (mean over all decode steps of all requests)."""

    scheme: str
    reserved_bytes_per_request: float
    used_bytes_per_request: float
    max_batch: int
    breakdown: dict = field(default_factory=dict)  # waste categories, bytes per request

    @property
    def wasted_bytes_per_request(self) -> float:
        return self.reserved_bytes_per_request - self.used_bytes_per_request

    @property
    def waste_fraction(self) -> float:
        """Wasted share of reserved KV memory."""
        return self.wasted_bytes_per_request / self.reserved_bytes_per_request

    def to_dict(self) -> dict:
        return {"scheme": self.scheme, "reserved_bytes_per_request": self.reserved_bytes_per_request,
                "used_bytes_per_request": self.used_bytes_per_request,
                "wasted_bytes_per_request": self.wasted_bytes_per_request, "waste_fraction": self.waste_fraction,
                "max_batch": self.max_batch, **{f"wasted_{k}": v for k, v in self.breakdown.items()}}


@dataclass(frozen=True, kw_only=True)
class AllocationResult:
    model: str
    dtype: str
    trace: TraceSpec
    block_size: int
    budget_bytes: int
    bytes_per_token: int
    mean_prompt: float
    mean_output: float
    contiguous: SchemeUsage
    paged: SchemeUsage

    def to_dict(self) -> dict:
        return {"model": self.model, "dtype": self.dtype, "block_size": self.block_size,
                "budget_bytes": self.budget_bytes, "bytes_per_token": self.bytes_per_token,
                "requests": self.trace.requests, "seed": self.trace.seed, "sigma": self.trace.sigma,
                "max_seq_len": self.trace.max_seq_len, "mean_prompt": self.mean_prompt,
                "mean_output": self.mean_output, "contiguous": self.contiguous.to_dict(),
                "paged": self.paged.to_dict()}


def _step_lengths(prompt: np.ndarray, output: np.ndarray) -> np.ndarray:
    """Length held at every decode step of every request: prompt + t for t = 1..output."""
    starts = np.repeat(prompt, output)
    offsets = np.arange(int(output.sum())) - np.repeat(np.cumsum(output) - output, output) + 1
    return starts + offsets


def simulate_allocation(model: ModelShape | str = "llama3-8b", *, trace: TraceSpec | None = None,
                        block_size: int = 16, budget_bytes: int = 40 * 2**30, dtype: str = "bf16") -> AllocationResult:
    """Serve `trace` with contiguous max-length reservation and with paging; bytes per request and max batch."""
    trace = trace or TraceSpec()
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size <= 0:
        raise InputError(f"allocator: block_size={block_size!r} must be a positive whole number")
    if budget_bytes <= 0:
        raise InputError(f"allocator: budget_bytes={budget_bytes} must be positive")
    size = kv_cache_size(model, dtype=dtype)
    bpt = size.bytes_per_token
    prompt, output = trace.lengths()
    held = _step_lengths(prompt, output)                     # tokens held, per step
    final = np.repeat(prompt + output, output)                # the request's final length, per step
    used = held.mean() * bpt

    cont_reserved = trace.max_seq_len * bpt
    future = (final - held).mean() * bpt
    never = (trace.max_seq_len - final).mean() * bpt
    contiguous = SchemeUsage(scheme="contiguous", reserved_bytes_per_request=float(cont_reserved),
                             used_bytes_per_request=float(used), max_batch=int(budget_bytes // cont_reserved),
                             breakdown={"future_tokens": float(future), "never_used": float(never)})

    pages = np.ceil(held / block_size) * block_size
    paged_reserved = pages.mean() * bpt
    paged = SchemeUsage(scheme="paged", reserved_bytes_per_request=float(paged_reserved),
                        used_bytes_per_request=float(used), max_batch=int(budget_bytes // paged_reserved),
                        breakdown={"last_page": float(paged_reserved - used)})
    return AllocationResult(model=size.model.name, dtype=dtype, trace=trace, block_size=block_size,
                            budget_bytes=int(budget_bytes), bytes_per_token=bpt, mean_prompt=float(prompt.mean()),
                            mean_output=float(output.mean()), contiguous=contiguous, paged=paged)


def block_size_sweep(model: ModelShape | str = "llama3-8b", *, trace: TraceSpec | None = None,
                     block_sizes=(8, 16, 32, 64, 128, 256), budget_bytes: int = 40 * 2**30,
                     dtype: str = "bf16") -> list[AllocationResult]:
    """`simulate_allocation` at each block size (same trace)."""
    return [simulate_allocation(model, trace=trace, block_size=bs, budget_bytes=budget_bytes, dtype=dtype)
            for bs in block_sizes]
