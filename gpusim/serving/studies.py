"""One function per serving study, shared by the CLI commands and `[serving]` scenarios, so the two cannot
drift apart. Each takes plain parameters and returns a StudyOutput: the JSON summary the CLI prints with
--json, CSV tables (file name -> row dicts) and figures (name -> function drawing a Figure). Nothing here
prints or writes files; gpusim.serving.cli does both.

    paging           PagedAttention block size: kernel slowdown, block-table bytes, allocator waste, max batch
    kv_quant         KV quantization: bytes per token, output error (functional interpreter), decode time
    chunked_prefill  request-level serving without and with chunked prefill, for a KV dtype and allocator
                     (and the default memory configuration as a baseline when asked)
    kv_memory        request-level serving across KV dtypes and allocators at one chunking
    offload          KV offload over PCIe against H2O eviction
    tp               tensor parallelism: per-GPU KV bytes and attention time per degree
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from gpusim.errors import InputError
from gpusim.hardware import HardwareSpec
from gpusim.problem import AttentionProblem
from gpusim.serving.allocator import TraceSpec
from gpusim.serving.models import ModelShape, get_model

#: Paging: the sweet spot is the smallest page whose kernel is within this fraction of the fastest page size
#: (waste only grows with the page, kernel time falls and then flattens: this is the knee).
SLOWDOWN_TOLERANCE = 0.05
#: The issue's bar for paging waste (share of reserved KV memory).
PAGED_WASTE_LIMIT = 0.04
#: KV quantization: the output error is measured on this many KV tokens (functional interpreter, all heads).
ERROR_KV_LEN = 256
QUANT_DTYPES = ("bf16", "fp8_e4m3", "fp8_e5m2", "int8", "int4")
QUANT_SCALES = ("block", "channel")
#: The memory configuration `gpusim serve` runs without --kv-dtype / --block-size (vLLM's defaults).
DEFAULT_MEMORY = ("bf16", 16)


@dataclass(frozen=True)
class StudyOutput:
    study: str
    summary: dict
    tables: dict = field(default_factory=dict)     # CSV file name -> list of row dicts
    figures: dict = field(default_factory=dict)    # figure name -> zero-argument function returning a Figure
    results: object = None                         # the result objects the CLI's table printer reads


def _shape(model: ModelShape | str) -> ModelShape:
    return get_model(model) if isinstance(model, str) else model


def _key(name: str) -> str:
    """A parameter as both interfaces spell it: scenario key and CLI flag."""
    return f"{name} (--{name.replace('_', '-')})"


def _require_positive(study: str, **values) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise InputError(f"{study}: {_key(name)}={v!r} must be a positive whole number")


# ---------------------------------------------------------------------------------------------- paging
def trace_description(trace: TraceSpec) -> dict:
    """The stated distribution and what the seeded draw gave (mean, p50, p99 of prompt and output)."""
    prompt, output = trace.lengths()

    def stats(x):
        return {"mean": float(x.mean()), "p50": float(np.percentile(x, 50)), "p99": float(np.percentile(x, 99)),
                "max": int(x.max())}

    return {"distribution": f"lognormal prompt and output lengths, means {trace.mean_prompt:g} / "
                            f"{trace.mean_output:g} tokens (ShareGPT, vLLM paper Fig. 11), log-space sigma "
                            f"{trace.sigma:g}, prompt + output clipped to {trace.max_seq_len}, seed {trace.seed}",
            "requests": trace.requests, "mean_prompt": trace.mean_prompt, "mean_output": trace.mean_output,
            "sigma": trace.sigma, "max_seq_len": trace.max_seq_len, "seed": trace.seed,
            "prompt": stats(prompt), "output": stats(output), "total": stats(prompt + output)}


def sweet_spot(rows: list[dict], tolerance: float = SLOWDOWN_TOLERANCE) -> tuple[int, str]:
    """(block size, why): the smallest page within `tolerance` of the fastest paged kernel. Waste grows with
    the page, so every larger page wastes more for at most `tolerance` less kernel time."""
    best = min(r["slowdown"] for r in rows)
    pick = min((r for r in rows if r["slowdown"] <= best * (1 + tolerance)), key=lambda r: r["block_size"])
    smaller = [r for r in rows if r["block_size"] < pick["block_size"]]
    larger = [r for r in rows if r["block_size"] > pick["block_size"]]
    why = (f"block {pick['block_size']}: kernel {pick['slowdown']:.3f}x contiguous (within {tolerance:.0%} of the "
           f"fastest page size, {best:.3f}x) and {pick['waste_fraction']:.2%} of reserved KV wasted")
    if smaller:
        why += "; smaller pages slow the kernel: " + ", ".join(f"{r['block_size']}: {r['slowdown']:.3f}x"
                                                              for r in smaller)
    if larger:
        why += "; larger pages waste more: " + ", ".join(f"{r['block_size']}: {r['waste_fraction']:.2%}"
                                                        for r in larger)
    if not 16 <= pick["block_size"] <= 32:
        flat = max(r["slowdown"] for r in rows) <= best * (1 + tolerance)
        why += (". Not 16-32 because " + ("the kernel's time does not depend on the page size here (pages "
                                          "gathered into full tiles keep enough bytes in flight), so the "
                                          "smallest page wins on memory" if flat else
                                          "the kernel only reaches the fastest page size's time at this page"))
    return pick["block_size"], why


def paging_study(model: ModelShape | str = "llama3-8b", hardware: HardwareSpec | str = "h200", *,
                 block_sizes=(8, 16, 32, 64, 128, 256), batch: int = 1, kv_len: int = 4096, tile: str = "page",
                 trace: TraceSpec | None = None, budget_bytes: int | None = None,
                 kv_memory_fraction: float = 0.9) -> StudyOutput:
    """Per block size: paged decode kernel (simulated) against contiguous K/V, block-table bytes, allocator
    waste and largest batch on one trace; the contiguous max-length row; the sweet spot and why."""
    from gpusim.serving.allocator import simulate_allocation
    from gpusim.serving.paged_cost import BLOCK_SIZES, paged_kernel_sweep
    from gpusim.serving.serving_sim import StepCostModel, _hardware

    _require_positive("paging", batch=batch, kv_len=kv_len)
    bad = [b for b in block_sizes if b not in BLOCK_SIZES]
    if not block_sizes or bad:
        raise InputError(f"paging: {_key('block_sizes')}={list(block_sizes)}: page sizes of "
                         f"{', '.join(map(str, BLOCK_SIZES))} tokens (the paged decode kernel's)")
    if tile not in ("page", "gather"):
        raise InputError(f"paging: {_key('tile')}={tile!r}: page or gather")
    shape, hw = _shape(model), _hardware(hardware)
    trace = trace or TraceSpec()
    if budget_bytes is None:
        budget_bytes = int(kv_memory_fraction * hw.hbm_capacity_bytes - StepCostModel(shape, hw).weight_bytes)
    if budget_bytes <= 0:
        raise InputError(f"paging: {shape.name}'s weights leave no KV memory on {hw.name}")
    problem = AttentionProblem(batch=batch, heads=shape.heads, kv_heads=shape.kv_heads, seq_len=1, kv_len=kv_len,
                               head_dim=shape.head_dim)
    kernel = paged_kernel_sweep(problem, hw, block_sizes=block_sizes, tile=tile, page_table_seed=1)
    other_tile = "gather" if tile == "page" else "page"
    other = {r.block_size: r for r in paged_kernel_sweep(problem, hw, block_sizes=block_sizes, tile=other_tile,
                                                         page_table_seed=1)}
    rows, allocations = [], {}
    for k in kernel:
        alloc = simulate_allocation(shape, trace=trace, block_size=k.block_size, budget_bytes=budget_bytes)
        allocations[k.block_size] = alloc
        rows.append({"scheme": "paged", "block_size": k.block_size, "slowdown": k.slowdown,
                     f"slowdown_{other_tile}_tiles": other[k.block_size].slowdown, "time_s": k.time_s,
                     "contiguous_time_s": k.contiguous_time_s, "block_table_bytes": k.block_table_bytes,
                     "hbm_read_bytes": k.hbm_read_bytes, "waste_fraction": alloc.paged.waste_fraction,
                     "reserved_bytes_per_request": alloc.paged.reserved_bytes_per_request,
                     "max_batch": alloc.paged.max_batch})
    first = next(iter(allocations.values()))
    contiguous = {"scheme": "contiguous", "block_size": None, "slowdown": 1.0, f"slowdown_{other_tile}_tiles": 1.0,
                  "time_s": kernel[0].contiguous_time_s, "contiguous_time_s": kernel[0].contiguous_time_s,
                  "block_table_bytes": 0, "hbm_read_bytes": kernel[0].contiguous_hbm_read_bytes,
                  "waste_fraction": first.contiguous.waste_fraction,
                  "reserved_bytes_per_request": first.contiguous.reserved_bytes_per_request,
                  "max_batch": first.contiguous.max_batch}
    best, why = sweet_spot(rows)
    summary = {"model": shape.name, "hardware": hw.name, "tile": tile,
               "kernel_problem": problem.describe(), "budget_bytes": budget_bytes,
               "bytes_per_token": first.bytes_per_token, "trace": trace_description(trace),
               "rows": rows, "contiguous": contiguous, "sweet_spot": best, "why": why,
               "paged_waste_under_4pct": [r["block_size"] for r in rows if r["waste_fraction"] < PAGED_WASTE_LIMIT]}
    cost_rows = [replace(k, waste_fraction=allocations[k.block_size].paged.waste_fraction,
                         max_batch=allocations[k.block_size].paged.max_batch) for k in kernel]
    return StudyOutput(study="paging", summary=summary, tables={"paging.csv": rows + [contiguous]},
                       figures=_paging_figures(cost_rows, allocations[best], shape.name, tile), results=summary)


def _paging_figures(cost_rows, allocation, model: str, tile: str) -> dict:
    from gpusim.plots.serving import allocation_figure, block_size_tradeoff_figure

    return {"block_size_tradeoff": lambda: block_size_tradeoff_figure(
                cost_rows, title=f"PagedAttention block size: {model}, tile={tile}"),
            "allocation": lambda: allocation_figure(allocation)}


# ---------------------------------------------------------------------------------------------- kv quant
def _quant_format(dtype: str, scale: str, group_size: int | None, head_dim: int):
    """KVFormat of one row: 16-bit unscaled; block scales (group_size, else KV_GROUP's default); channel."""
    from gpusim.serving.kv_cache import KVFormat
    from gpusim.serving.serving_sim import KV_GROUP

    if dtype in ("bf16", "fp16"):
        return KVFormat(dtype=dtype), None
    if scale == "channel":
        return KVFormat(dtype=dtype, scale="channel"), None
    group = group_size or KV_GROUP.get(dtype) or head_dim
    if head_dim % group:
        raise InputError(f"kv-quant: {_key('group_size')}={group} must divide head_dim={head_dim}")
    return KVFormat(dtype=dtype, scale="block", group_size=group), group


def _kernel_error(problem: AttentionProblem, dtype: str, scale: str, group: int | None, hw, seed: int) -> float:
    """Output error of paged_decoding (functional interpreter, contiguous K/V) against float64 attention on
    exact K/V: block scales run the kernel's own dequantization; channel scales (which the kernel cannot
    read) and bf16 feed it K/V already rounded to the format, which it rounds to bf16 as its tiles do."""
    from gpusim.reference import attention_forward, random_inputs, relative_error
    from gpusim.serving.kv_quant import fake_quantize, kernel_quantization_error
    from gpusim.simulate import run_functional_check

    if dtype not in ("bf16", "fp16") and scale == "block":
        return kernel_quantization_error(problem, dtype, group_size=group, hardware=hw, seed=seed,
                                         options={"paged": False})
    x = random_inputs(problem, seed)
    o_ref, _ = attention_forward(x["Q"], x["K"], x["V"])
    kv = {n: fake_quantize(x[n], dtype, scheme="channel") for n in ("K", "V")}
    out = run_functional_check("paged_decoding", problem, hw, {"Q": x["Q"], **kv}, {"paged": False})
    return relative_error(out["O"], o_ref)


def kv_quant_study(model: ModelShape | str = "llama3-8b", hardware: HardwareSpec | str = "h200", *,
                   kv_len: int = 32768, batch: int = 8, dtypes=QUANT_DTYPES, scale: str = "block",
                   group_size: int | None = None, error_kv_len: int = ERROR_KV_LEN, seed: int = 0) -> StudyOutput:
    """Per KV dtype: bytes per token with scales, output error (functional interpreter, batch 1 x
    error_kv_len tokens, the model's heads), decode attention time (timing model, paged_decoding reading
    contiguous K/V of batch x kv_len), and the speedup against bf16."""
    from gpusim.serving.kv_cache import KVCacheSize
    from gpusim.serving.kv_quant import quantization_error
    from gpusim.serving.serving_sim import _hardware
    from gpusim.simulate import simulate

    _require_positive("kv-quant", kv_len=kv_len, batch=batch, error_kv_len=error_kv_len)
    if scale not in QUANT_SCALES:
        raise InputError(f"kv-quant: {_key('scale')}={scale!r}: known {', '.join(QUANT_SCALES)}")
    if group_size is not None:
        _require_positive("kv-quant", group_size=group_size)
    dtypes = ["fp8_e4m3" if d == "fp8" else d for d in dtypes]
    for d in dtypes:
        if d not in QUANT_DTYPES + ("fp16",):
            raise InputError(f"kv-quant: {_key('dtypes')}: {d!r} is not a KV dtype (known "
                             f"{', '.join(QUANT_DTYPES)}, fp16, fp8)")
    if not dtypes:
        raise InputError(f"kv-quant: {_key('dtypes')} is empty")
    shape, hw = _shape(model), _hardware(hardware)
    problem = AttentionProblem(batch=batch, heads=shape.heads, kv_heads=shape.kv_heads, seq_len=1, kv_len=kv_len,
                               head_dim=shape.head_dim)
    small = replace(problem, batch=1, kv_len=min(kv_len, error_kv_len))
    base = simulate("paged_decoding", problem, hw, {"paged": False})
    rows = []
    for dtype in dtypes:
        fmt, group = _quant_format(dtype, scale, group_size, shape.head_dim)
        quantized = fmt.bits < 16
        opts = {"paged": False, **({"kv_dtype": dtype, "kv_group": group or None} if quantized else {})}
        timed = simulate("paged_decoding", problem, hw, opts) if quantized else base
        size = KVCacheSize(model=shape, fmt=fmt, batch=batch, seq_len=kv_len)
        ref = quantization_error(small, dtype, scheme=scale if quantized else "block", group_size=group, seed=seed)
        rows.append({"dtype": dtype, "scale": fmt.scale + (f" G={group}" if group else ""), "bits": fmt.bits,
                     "bytes_per_token": size.bytes_per_token,
                     "bytes_per_token_per_layer": size.bytes_per_token_per_layer,
                     "kv_total_bytes": size.total_bytes,
                     "output_error": _kernel_error(small, dtype, scale, group, hw, seed),
                     "reference_error": ref.output_relative_error,
                     "time_s_per_layer": timed.time_s, "decode_attention_s": shape.layers * timed.time_s,
                     "hbm_read_bytes_per_layer": timed.hbm_read_bytes,
                     "fp32_busy": timed.unit_busy.get("fp32", 0.0), "speedup": base.time_s / timed.time_s})
    timed_as = ("block scales of head_dim elements (the kernel reads block scales; per-channel scales are per "
                "sequence, so this overcounts scale bytes by 2 bytes per token and head)" if scale == "channel"
                else "its block scales")
    summary = {"model": shape.name, "hardware": hw.name, "batch": batch, "kv_len": kv_len, "scale": scale,
               "timing_problem": problem.describe(), "timing_kernel": "paged_decoding (contiguous K/V, paged=false)",
               "channel_or_block_timing": f"quantized rows timed with {timed_as}",
               "error_problem": small.describe(),
               "error_method": "functional interpreter (paged_decoding on numbers, bf16 tiles) against float64 "
                               "attention with exact K/V; reference_error: float64 attention on dequantized K/V",
               "bf16_time_s_per_layer": base.time_s, "rows": rows}
    return StudyOutput(study="kv_quant", summary=summary, tables={"kv_quant.csv": rows},
                       figures={"kv_quant": lambda: _kv_quant_figure(rows, shape.name, problem)}, results=summary)


def _kv_quant_figure(rows, model, problem):
    from gpusim.plots.serving import kv_quant_tradeoff_figure

    return kv_quant_tradeoff_figure(rows, title=f"KV quantization: {model}, batch {problem.batch} x "
                                                f"{problem.kv_len} tokens")


# ---------------------------------------------------------------------------------------------- serving
def serving_runs(config, memories, chunk_sizes) -> list:
    """simulate_serving for each (kv_dtype, block_size) memory configuration and chunk size (None: none)."""
    from gpusim.serving.serving_sim import simulate_serving

    return [simulate_serving(replace(config, kv_dtype=dtype, block_size=block, chunk_size=chunk))
            for dtype, block in memories for chunk in chunk_sizes]


CHANGE_METRICS = ("kv_capacity_requests", "max_concurrent_requests", "throughput_tokens_per_s", "ttft_p50_s",
                  "ttft_p99_s", "tpot_p50_s", "tpot_p99_s")


def memory_changes(results) -> list[dict]:
    """Each run against the run of the first memory configuration at the same chunk size: ratio per metric."""
    base = {}
    for r in results:
        base.setdefault(r.config.chunk_size, r)
    rows = []
    for r in results:
        b = base[r.config.chunk_size]
        if b is r:
            continue
        s, bs = r.summary(), b.summary()
        rows.append({"chunk_size": r.config.chunk_size, "memory": r.config.memory_label,
                     "baseline": b.config.memory_label,
                     **{f"{m}_ratio": (s[m] / bs[m] if bs[m] else float("nan")) for m in CHANGE_METRICS}})
    return rows


def serve_memories(config) -> list[tuple]:
    """The config's (kv_dtype, block_size), preceded by DEFAULT_MEMORY as the baseline when they differ."""
    memory = (config.kv_dtype, config.block_size)
    return [memory] if memory == DEFAULT_MEMORY else [DEFAULT_MEMORY, memory]


def serving_study(config, *, memories=None, chunk_sizes=(None, 512), study: str = "chunked_prefill") -> StudyOutput:
    """Request-level serving for every memory configuration x chunk size (see serving_runs), with the change
    of each memory configuration against the first."""
    from gpusim.plots.serving import serving_memory_figure, step_latency_figure

    memories = list(memories or [(config.kv_dtype, config.block_size)])
    results = serving_runs(config, memories, list(chunk_sizes))
    summary = {"runs": [r.summary() for r in results]}
    figures = {"step_latency": lambda: step_latency_figure(results)}
    if len(memories) > 1:
        summary["changes"] = memory_changes(results)
        figures["kv_memory"] = lambda: serving_memory_figure(results)
    tables = {"steps.csv": [row for r in results for row in r.step_rows()],
              "requests.csv": [row for r in results for row in r.request_rows()]}
    return StudyOutput(study=study, summary=summary, tables=tables, figures=figures, results=results)


# ---------------------------------------------------------------------------------------------- offload, tp
def offload_study(model: ModelShape | str = "llama3-8b", hardware: HardwareSpec | str = "h200", *, batch: int = 1,
                  seq_len: int = 131072, fractions=(0, 0.1, 0.25, 0.5), keep=(1, 0.5, 0.25, 0.1)) -> StudyOutput:
    """KV offload over PCIe (step time per host fraction) against H2O eviction (time and error per kept share)."""
    from gpusim.plots.serving import offload_eviction_figure
    from gpusim.serving.offload import eviction_sweep, offload_sweep

    _require_positive("offload", batch=batch, seq_len=seq_len)
    shape = _shape(model)
    offload = offload_sweep(shape, batch=batch, context_len=seq_len, hardware=hardware, fractions=fractions)
    eviction = eviction_sweep(shape, batch=batch, context_len=seq_len, hardware=hardware, kept_fractions=keep)
    rows = ([{"sweep": "offload", **r.to_dict()} for r in offload.rows]
            + [{"sweep": "eviction", **r.to_dict()} for r in eviction.rows])
    return StudyOutput(study="offload", summary={"offload": offload.to_dict(), "eviction": eviction.to_dict()},
                       tables={"offload.csv": rows},
                       figures={"offload_eviction": lambda: offload_eviction_figure(offload, eviction)},
                       results=(offload, eviction))


def tp_study(model: ModelShape | str = "llama3-70b", hardware: HardwareSpec | str = "h200", *, batch: int = 8,
             seq_len: int = 4096, degrees=(1, 2, 4, 8, 16), replicate: bool = False) -> StudyOutput:
    """Per TP degree: per-GPU KV bytes and attention time; a degree that does not split the KV heads is a row
    with its error unless `replicate`. No figure when no degree could be computed."""
    import json

    from gpusim.plots.serving import tensor_parallel_figure
    from gpusim.serving.serving_sim import _hardware
    from gpusim.serving.tensor_parallel import tp_attention, tp_plan

    _require_positive("tp", batch=batch, seq_len=seq_len)
    shape, hw = _shape(model), _hardware(hardware)
    policy = "replicate" if replicate else "error"
    results, rows = [], []
    for tp in degrees:
        plan = tp_plan(shape, tp, kv_policy="replicate")      # raises for a degree the query heads reject
        if plan.replicated and not replicate:
            try:
                tp_plan(shape, tp, kv_policy="error")
            except InputError as exc:
                rows.append({"tp": tp, "error": str(exc)})
                continue
        res = tp_attention(shape, tp, batch=batch, kv_len=seq_len, hardware=hw, kv_policy=policy)
        results.append(res)
        rows.append({**res.to_dict(), "error": ""})
    summary = {"model": shape.name, "hardware": hw.name, "batch": batch, "seq_len": seq_len, "replicate": replicate,
               "rows": rows}
    figures = {"tensor_parallel": lambda: tensor_parallel_figure(results)} if results else {}
    table = [{k: (json.dumps(v) if isinstance(v, list) else v) for k, v in r.items()} for r in rows]
    return StudyOutput(study="tp", summary=summary, tables={"tp.csv": table}, figures=figures, results=results)
