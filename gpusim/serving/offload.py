"""Long context beyond GPU memory: offloading KV pages to host memory over PCIe, against evicting
low-attention tokens (H2O heavy hitters).

(a) Offload (FlexGen, Sheng et al. 2023, arXiv 2303.06865 Sec. 4, KV cache on the CPU). A fraction f of every
    sequence's KV pages lives in host memory and is copied to an HBM staging buffer every decode step, layer by
    layer, before that layer's attention reads the whole KV with `flash_decoding` (simulated on the full
    context). Per layer and step:
        pcie_s    = pcie_latency_s + f x batch x context x KV bytes per token per layer / pcie_bandwidth
                    (one DMA per layer: the host pages of a layer are gathered into one transfer)
        compute_s = attention_s (simulated) + non-attention time / layers (serving_sim's stated model:
                    weight streaming + linear FLOPs; include_linear=False leaves it out)
    Two schedules, both reported:
        serial:      layers x (pcie_s + compute_s)                            (fetch, then compute)
        overlapped:  pcie_s + (layers - 1) x max(pcie_s, compute_s) + compute_s
                     (double-buffered: layer i+1's pages cross PCIe while layer i computes; with f = 0,
                     layers x compute_s). HBM bandwidth taken by the staging writes is not charged.
    The smallest f that fits the KV budget (kv_memory_fraction x HBM capacity - bf16 weights) is reported.

(b) Eviction (H2O, Zhang et al. 2023, arXiv 2306.14048 Sec. 3-4): each KV head keeps a budget of k tokens,
    a recent window of round(recent_fraction x k) tokens plus the k - window tokens with the largest
    accumulated attention (summed over the query heads of the group and over the last `history` decode
    queries, each of which saw the keys up to its own position). Time: `flash_decoding` on the serving
    shape with kv_len = ceil(kept_fraction x context) (the accumulation H2O needs, reading the attention
    probabilities back, is not charged). Error: output of the current decode query on the kept tokens against
    the full cache, on a small problem:
        eviction_error  float64 reference (gpusim.reference.attention_forward) on the kept K/V against the same
                        on all of it: the error eviction alone causes, exactly 0 when everything is kept;
        recent_error    the same with a recent window only (StreamingLLM without sinks), for contrast;
        kernel_error    `flash_decoding` run by the functional interpreter on the kept K/V (bf16 tiles)
                        against float64 on all of it: eviction plus the kernel's own rounding.
    Data model (random data with heavy hitters; stated, not measured from a model): per (sequence, KV head)
    a random unit direction u; K, V and queries are standard normal; the keys of `heavy_fraction` of the
    positions (drawn at random) and of position 0 (an attention sink) get + a u, and every query gets + a u,
    with a = sqrt(heavy_logit x sqrt(head_dim)), so a heavy key's scaled score is on average `heavy_logit`
    above the others (noise std about 1). With the defaults (5% heavy, 5 logits) heavy tokens hold about 87%
    of the current query's attention mass (`heavy_mass` in the rows), the skew H2O reports for real models
    (its Sec. 3: attention is over 95% sparse, a small share of tokens collects most of it); heavy_logit 3
    gives about half. V is independent noise, so the output's norm is small and its relative error large:
    the numbers rank policies and budgets, they are not a model's accuracy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gpusim.errors import InputError
from gpusim.hardware import HardwareSpec
from gpusim.problem import AttentionProblem
from gpusim.reference import attention_forward, relative_error
from gpusim.serving.kv_cache import kv_cache_size
from gpusim.serving.models import ModelShape
from gpusim.serving.serving_sim import StepCostModel, _hardware, _model, kernel_time_s

OFFLOAD_FRACTIONS = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)
KEPT_FRACTIONS = (1.0, 0.5, 0.25, 0.1, 0.05)
#: The small problem the eviction error is measured on (one decode query, GQA 4:1, 1024 cached tokens).
ERROR_PROBLEM = AttentionProblem(batch=1, heads=8, kv_heads=2, seq_len=1, kv_len=1024, head_dim=64)


def _fraction(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise InputError(f"{name}={value!r} must be a number in [0, 1]")
    return float(value)


def _decode_problem(model: ModelShape, batch: int, kv_len: int) -> AttentionProblem:
    return AttentionProblem(batch=batch, heads=model.heads, kv_heads=model.kv_heads, seq_len=1, kv_len=kv_len,
                            head_dim=model.head_dim)


# ---------------------------------------------------------------------------------------------- offload
@dataclass(frozen=True, kw_only=True)
class OffloadRow:
    offload_fraction: float
    host_bytes_per_layer: float
    pcie_s_per_layer: float
    attention_s_per_layer: float
    compute_s_per_layer: float
    step_serial_s: float
    step_overlapped_s: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True, kw_only=True)
class OffloadResult:
    model: str
    hardware: str
    batch: int
    context_len: int
    kv_bytes_total: int
    kv_budget_bytes: float
    min_offload_fraction: float      # smallest f for which the GPU part fits the KV budget
    rows: tuple

    def to_dict(self) -> dict:
        return {**{k: v for k, v in self.__dict__.items() if k != "rows"}, "rows": [r.to_dict() for r in self.rows]}


def _kv_budget(cost: StepCostModel, kv_memory_fraction: float) -> float:
    return kv_memory_fraction * cost.hw.hbm_capacity_bytes - cost.weight_bytes


def offload_sweep(model: ModelShape | str = "llama3-8b", *, batch: int = 1, context_len: int = 131072,
                  hardware: HardwareSpec | str = "h200", fractions=OFFLOAD_FRACTIONS, include_linear: bool = True,
                  kv_memory_fraction: float = 0.9) -> OffloadResult:
    """Decode step time with a fraction of the KV on the host, fetched over PCIe every step."""
    shape, hw = _model(model), _hardware(hardware)
    cost = StepCostModel(shape, hw)
    size = kv_cache_size(shape, batch=batch, seq_len=context_len)
    layer_bytes = batch * context_len * size.bytes_per_token_per_layer
    attn = kernel_time_s(cost.decode_kernel, _decode_problem(shape, batch, context_len), hw)
    compute = attn + (cost.linear_s(batch) / shape.layers if include_linear else 0.0)
    rows = []
    for f in fractions:
        f = _fraction("offload fraction", f)
        host = f * layer_bytes
        pcie = hw.pcie_latency_s + host / hw.pcie_bandwidth_bytes_per_s if f > 0 else 0.0
        serial = shape.layers * (pcie + compute)
        overlapped = (pcie + (shape.layers - 1) * max(pcie, compute) + compute) if f > 0 else shape.layers * compute
        rows.append(OffloadRow(offload_fraction=f, host_bytes_per_layer=host, pcie_s_per_layer=pcie,
                               attention_s_per_layer=attn, compute_s_per_layer=compute, step_serial_s=serial,
                               step_overlapped_s=overlapped))
    budget = _kv_budget(cost, kv_memory_fraction)
    need = max(0.0, 1.0 - max(budget, 0.0) / size.total_bytes)
    return OffloadResult(model=shape.name, hardware=hw.name, batch=batch, context_len=context_len,
                         kv_bytes_total=size.total_bytes, kv_budget_bytes=budget, min_offload_fraction=need,
                         rows=tuple(rows))


# ---------------------------------------------------------------------------------------------- eviction
def heavy_hitter_inputs(problem: AttentionProblem, *, heavy_fraction: float = 0.05, heavy_logit: float = 5.0,
                        history: int = 32, seed: int = 0) -> dict:
    """Q (the current decode query), K, V and Q_hist (the last `history` queries) with heavy hitters
    (the data model of the module docstring). Shapes: Q [b, h, 1, d], K/V [b, hk, L, d], Q_hist [b, h, T, d]."""
    if problem.seq_len != 1:
        raise InputError("eviction: a decode problem (seq_len=1) is needed")
    _fraction("heavy_fraction", heavy_fraction)
    rng = np.random.default_rng(seed)
    b, h, hk, L, d = problem.batch, problem.heads, problem.kv_heads, problem.kv_len, problem.head_dim
    u = rng.standard_normal((b, hk, d))
    u /= np.linalg.norm(u, axis=-1, keepdims=True)
    a = math.sqrt(heavy_logit * math.sqrt(d))
    heavy = rng.random((b, hk, L)) < heavy_fraction
    heavy[..., 0] = True
    k = rng.standard_normal((b, hk, L, d)) + a * heavy[..., None] * u[:, :, None, :]
    v = rng.standard_normal((b, hk, L, d))
    u_q = np.repeat(u, h // hk, axis=1)[:, :, None, :]
    q_all = rng.standard_normal((b, h, history + 1, d)) + a * u_q
    return {"Q": q_all[:, :, -1:], "Q_hist": q_all[:, :, :-1], "K": k, "V": v, "heavy": heavy}


def accumulated_attention(q_hist: np.ndarray, k: np.ndarray) -> np.ndarray:
    """H2O's score per key: attention probabilities summed over the history queries (query t of T sits at
    position L - T + t and sees keys <= it) and over the query heads of each KV head. [b, hk, L]."""
    b, h, T, d = q_hist.shape
    hk, L = k.shape[1], k.shape[2]
    ke = np.repeat(k, h // hk, axis=1)
    s = np.einsum("bhtd,bhld->bhtl", q_hist, ke) / math.sqrt(d)
    visible = np.arange(L)[None, :] <= (L - T + np.arange(T))[:, None]
    s = np.where(visible, s, -np.inf)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    return p.sum(axis=2).reshape(b, hk, h // hk, L).sum(axis=2)


def h2o_keep(scores: np.ndarray, budget: int, recent_fraction: float = 0.5) -> np.ndarray:
    """Indices kept per (sequence, KV head), ascending: the last round(recent_fraction x budget) positions
    plus the top-scoring rest. [b, hk, budget]."""
    b, hk, L = scores.shape
    if not 1 <= budget <= L:
        raise InputError(f"eviction: keep budget {budget} must be in 1..{L}")
    recent = min(budget, int(round(recent_fraction * budget)))
    older = scores[..., :L - recent]
    top = np.argsort(-older, axis=-1, kind="stable")[..., :budget - recent]
    idx = np.concatenate([top, np.broadcast_to(np.arange(L - recent, L), (b, hk, recent))], axis=-1)
    return np.sort(idx, axis=-1)


def _gather(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return np.take_along_axis(x, idx[..., None], axis=2)


@dataclass(frozen=True, kw_only=True)
class EvictionRow:
    kept_fraction: float
    kept_tokens: int                 # of the serving context
    attention_s_per_layer: float
    step_s: float                    # layers x attention + non-attention (serving_sim's model)
    speedup: float                   # full-cache step time / this step time
    error_kept_tokens: int           # of ERROR_PROBLEM's kv_len
    eviction_error: float
    recent_error: float
    kernel_error: float | None
    heavy_mass: float                # share of the current query's attention on heavy tokens (full cache)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def eviction_error(kept_fraction: float, *, problem: AttentionProblem = ERROR_PROBLEM, recent_fraction: float = 0.5,
                   heavy_fraction: float = 0.05, heavy_logit: float = 5.0, history: int = 32, seed: int = 0,
                   functional: bool = True, hardware: HardwareSpec | str = "h200") -> dict:
    """Errors of keeping `kept_fraction` of `problem`'s KV (see the module docstring)."""
    kept_fraction = _fraction("kept_fraction", kept_fraction)
    x = heavy_hitter_inputs(problem, heavy_fraction=heavy_fraction, heavy_logit=heavy_logit, history=history,
                            seed=seed)
    L = problem.kv_len
    budget = max(1, math.ceil(kept_fraction * L))
    o_full, _ = attention_forward(x["Q"], x["K"], x["V"])
    idx = h2o_keep(accumulated_attention(x["Q_hist"], x["K"]), budget, recent_fraction)
    k, v = _gather(x["K"], idx), _gather(x["V"], idx)
    o_kept, _ = attention_forward(x["Q"], k, v, scale=problem.scale)
    recent = np.broadcast_to(np.arange(L - budget, L), idx.shape)
    o_recent, _ = attention_forward(x["Q"], _gather(x["K"], recent), _gather(x["V"], recent), scale=problem.scale)
    kernel = None
    if functional:
        from dataclasses import replace

        from gpusim.simulate import run_functional_check

        small = replace(problem, kv_len=budget)
        out = run_functional_check("flash_decoding", small, _hardware(hardware),
                                   {"Q": x["Q"].astype(np.float32), "K": k.astype(np.float32),
                                    "V": v.astype(np.float32)})
        kernel = relative_error(out["O"], o_full)
    # heavy mass of the current query on the full cache
    ke = np.repeat(x["K"], problem.group_size, axis=1)
    s = np.einsum("bhnd,bhld->bhnl", x["Q"], ke) * problem.scale
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    heavy = np.repeat(x["heavy"], problem.group_size, axis=1)[:, :, None, :]
    return {"kept_tokens": budget, "eviction_error": relative_error(o_kept, o_full),
            "recent_error": relative_error(o_recent, o_full), "kernel_error": kernel,
            "heavy_mass": float((p * heavy).sum(axis=-1).mean())}


@dataclass(frozen=True, kw_only=True)
class EvictionResult:
    model: str
    hardware: str
    batch: int
    context_len: int
    rows: tuple

    def to_dict(self) -> dict:
        return {**{k: v for k, v in self.__dict__.items() if k != "rows"}, "rows": [r.to_dict() for r in self.rows]}


def eviction_sweep(model: ModelShape | str = "llama3-8b", *, batch: int = 1, context_len: int = 131072,
                   hardware: HardwareSpec | str = "h200", kept_fractions=KEPT_FRACTIONS,
                   error_problem: AttentionProblem = ERROR_PROBLEM, recent_fraction: float = 0.5,
                   heavy_fraction: float = 0.05, heavy_logit: float = 5.0, seed: int = 0,
                   functional: bool = True) -> EvictionResult:
    """Decode time of the evicted cache on the serving shape, and the error eviction causes on a small one."""
    shape, hw = _model(model), _hardware(hardware)
    cost = StepCostModel(shape, hw)
    linear = cost.linear_s(batch)
    full = shape.layers * kernel_time_s(cost.decode_kernel, _decode_problem(shape, batch, context_len), hw) + linear
    rows = []
    for f in kept_fractions:
        f = _fraction("kept fraction", f)
        if f == 0:
            raise InputError("eviction: kept fraction must be positive")
        kept = max(1, math.ceil(f * context_len))
        attn = kernel_time_s(cost.decode_kernel, _decode_problem(shape, batch, kept), hw)
        step = shape.layers * attn + linear
        err = eviction_error(f, problem=error_problem, recent_fraction=recent_fraction, heavy_fraction=heavy_fraction,
                             heavy_logit=heavy_logit, seed=seed, functional=functional, hardware=hw)
        rows.append(EvictionRow(kept_fraction=f, kept_tokens=kept, attention_s_per_layer=attn, step_s=step,
                                speedup=full / step, error_kept_tokens=err["kept_tokens"],
                                eviction_error=err["eviction_error"], recent_error=err["recent_error"],
                                kernel_error=err["kernel_error"], heavy_mass=err["heavy_mass"]))
    return EvictionResult(model=shape.name, hardware=hw.name, batch=batch, context_len=context_len, rows=tuple(rows))
