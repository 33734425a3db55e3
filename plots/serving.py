"""Serving figures: KV-cache bytes by model and dtype, allocator memory (contiguous vs paged), the block-size
trade-off (kernel slowdown against waste), KV quantization error against bytes, per-step serving latency
(prefill stalls with and without chunked prefill), offload vs eviction, and tensor parallelism. Each function
takes result objects from gpusim.serving and returns a matplotlib Figure; callers write files."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def kv_cache_figure(sizes_by_model: dict, *, title: str = "KV cache per token"):
    """sizes_by_model: {model name: [KVCacheSize per dtype]} (gpusim.serving.kv_cache.dtype_table)."""
    fig, ax = plt.subplots(figsize=(8, 4.6))
    models = list(sizes_by_model)
    dtypes = [s.fmt.dtype for s in next(iter(sizes_by_model.values()))]
    width = 0.8 / len(dtypes)
    for i, dt in enumerate(dtypes):
        values = [sizes_by_model[m][i].bytes_per_token / 1024 for m in models]
        ax.bar([x + i * width for x in range(len(models))], values, width, label=dt)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(models))], models, rotation=30, ha="right")
    ax.set_ylabel("KV bytes per token, all layers (KiB)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


def allocation_figure(result, *, title: str = ""):
    """Used and wasted KV bytes per request (time-averaged) for contiguous reservation and paging
    (gpusim.serving.allocator.AllocationResult)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    gib = 2**20
    schemes = [result.contiguous, result.paged]
    names = ["contiguous\n(max length)", f"paged\n(block {result.block_size})"]
    used = [s.used_bytes_per_request / gib for s in schemes]
    ax.bar(names, used, label="used")
    bottom = used[:]
    for scheme_index, scheme in enumerate(schemes):
        for part, value in scheme.breakdown.items():
            ax.bar(names[scheme_index], value / gib, bottom=bottom[scheme_index], label=part.replace("_", " "))
            bottom[scheme_index] += value / gib
    for i, s in enumerate(schemes):
        ax.text(i, bottom[i], f"{s.waste_fraction:.1%} wasted\nmax batch {s.max_batch}", ha="center", va="bottom")
    ax.set_ylabel("KV MiB per request (time-averaged)")
    ax.set_ylim(0, max(bottom) * 1.2)
    ax.set_title(title or f"{result.model}, {result.trace.requests} requests (seed {result.trace.seed})")
    ax.legend(loc="upper right")
    fig.tight_layout()
    return fig


def block_size_tradeoff_figure(rows, *, title: str = "PagedAttention block size"):
    """Kernel slowdown against contiguous K/V and allocator waste per block size
    (gpusim.serving.paged_cost.block_size_tradeoff rows)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    sizes = [r.block_size for r in rows]
    ax.plot(sizes, [r.slowdown for r in rows], marker="o", color="C0", label="kernel time / contiguous")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel("block size (tokens per page)")
    ax.set_ylabel("decode attention time / contiguous", color="C0")
    if all(r.waste_fraction is not None for r in rows):
        twin = ax.twinx()
        twin.plot(sizes, [100 * r.waste_fraction for r in rows], marker="s", color="C1", label="KV waste")
        twin.set_ylabel("wasted KV memory (% of reserved)", color="C1")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def quantization_figure(rows, *, title: str = "KV-cache quantization"):
    """Attention output error against K/V bytes per token and layer (gpusim.serving.kv_quant rows)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    markers = {"none": "o", "tensor": "s", "channel": "^", "block": "D"}
    for r in rows:
        ax.scatter(r.kv_bytes_per_token_per_layer, r.output_relative_error, marker=markers.get(r.scheme, "o"),
                   label=f"{r.dtype} {r.scheme}" + (f" G={r.group_size}" if r.group_size else ""))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("KV bytes per token per layer (with scales)")
    ax.set_ylabel("attention output relative error vs float64")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def step_latency_figure(results, *, title: str = "", window_s: tuple | None = None):
    """Per-step latency over time, one panel per serving run (gpusim.serving.serving_sim.ServingResult, or a
    ChunkingComparison): steps that compute prompt tokens in orange, decode-only steps in blue. Without
    chunking, prefill-only steps stall every running request (tall spikes); with chunked prefill every step
    stays within the token budget. window_s=(t0, t1) zooms on a time range (seconds)."""
    if hasattr(results, "unchunked"):
        results = [results.unchunked, results.chunked]
    results = list(results)
    fig, axes = plt.subplots(len(results), 1, figsize=(9, 2.6 * len(results) + 0.6), sharex=True, sharey=True,
                             squeeze=False)
    for ax, res in zip(axes[:, 0], results):
        steps = res.steps
        if window_s:
            steps = [s for s in steps if window_s[0] <= s.start_s <= window_s[1]]
        t, ms, end = [], [], None
        for s in steps:
            if end is not None and s.start_s > end * (1 + 1e-12):   # idle gap: break the line
                t.append(float("nan"))
                ms.append(float("nan"))
            t.append(s.start_s)
            ms.append(1e3 * s.duration_s)
            end = s.start_s + s.duration_s
        ax.plot(t, ms, color="C0", lw=0.6, label="step latency")
        pre = [(s.start_s, 1e3 * s.duration_s) for s in steps if s.prefill_tokens]
        if pre:
            ax.scatter(*zip(*pre), s=6, color="C1", zorder=3, label="step with prompt tokens")
        ax.set_ylabel("step latency (ms)")
        ax.set_title(f"{res.label}: TTFT p50/p99 {1e3 * res.ttft_p(50):.0f}/{1e3 * res.ttft_p(99):.0f} ms, "
                     f"TPOT p50/p99 {1e3 * res.tpot_p(50):.2f}/{1e3 * res.tpot_p(99):.2f} ms, "
                     f"worst stall {1e3 * res.itl_max_s:.0f} ms", fontsize=9)
        ax.legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("time (s)")
    first = results[0]
    fig.suptitle(title or f"{first.model} on {first.hardware}, {len(first.requests)} requests, Poisson "
                          f"{first.config.rate_per_s:g}/s")
    fig.tight_layout()
    return fig


def offload_eviction_figure(offload, eviction, *, title: str = ""):
    """Left: decode step time against the share of KV offloaded over PCIe (serial and overlapped fetch;
    gpusim.serving.offload.OffloadResult). Right: step time and output error against the share of tokens kept
    by H2O eviction (EvictionResult)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4))
    f = [r.offload_fraction for r in offload.rows]
    left.plot(f, [1e3 * r.step_serial_s for r in offload.rows], marker="o", label="fetch, then compute")
    left.plot(f, [1e3 * r.step_overlapped_s for r in offload.rows], marker="s", label="fetch overlapped")
    left.set_xlabel("KV fraction on the host")
    left.set_ylabel("decode step time (ms)")
    left.set_title(f"offload over PCIe ({offload.batch} x {offload.context_len} tokens)", fontsize=10)
    left.legend()
    k = [r.kept_fraction for r in eviction.rows]
    right.plot(k, [1e3 * r.step_s for r in eviction.rows], marker="o", color="C0", label="step time")
    right.set_xscale("log")
    right.set_xlabel("KV fraction kept (H2O)")
    right.set_ylabel("decode step time (ms)", color="C0")
    twin = right.twinx()
    twin.plot(k, [r.eviction_error for r in eviction.rows], marker="s", color="C1", label="H2O error")
    twin.plot(k, [r.recent_error for r in eviction.rows], marker="^", ls="--", color="C2", label="recent-only error")
    twin.set_ylabel("output relative error vs full cache")
    twin.legend(loc="upper right")
    right.set_title("eviction: time and error", fontsize=10)
    fig.suptitle(title or f"{offload.model} on {offload.hardware}: beyond GPU memory")
    fig.tight_layout()
    return fig


def tensor_parallel_figure(rows, *, title: str = ""):
    """Per-GPU KV bytes and attention time per layer against the TP degree
    (gpusim.serving.tensor_parallel.TPAttention rows); replicated KV heads are marked."""
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    tps = [r.plan.tp for r in rows]
    ax.plot(tps, [r.kv_bytes_per_gpu / 2**30 for r in rows], marker="o", color="C0", label="KV GiB per GPU")
    for r in rows:
        if r.plan.replicated:
            ax.annotate(f"{r.plan.replication:g}x replicated", (r.plan.tp, r.kv_bytes_per_gpu / 2**30),
                        textcoords="offset points", xytext=(0, 8), ha="center", fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_xticks(tps, [str(t) for t in tps])
    ax.set_xlabel("tensor-parallel degree")
    ax.set_ylabel("KV GiB per GPU", color="C0")
    twin = ax.twinx()
    twin.plot(tps, [1e6 * r.attention_s_per_layer for r in rows], marker="s", color="C1")
    twin.set_ylabel("attention per layer per GPU (us)", color="C1")
    first = rows[0]
    ax.set_title(title or f"{first.plan.model}: batch {first.batch}, {first.kv_len} tokens, {first.kernel}")
    fig.tight_layout()
    return fig


def kv_quant_tradeoff_figure(rows, *, title: str = "KV quantization"):
    """Left: decode attention speedup against bf16 per KV dtype (timing model). Right: attention output error
    against float64 (functional interpreter). Rows: gpusim.serving.studies.kv_quant_study's summary rows."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    names = [r["dtype"] for r in rows]
    left.bar(names, [r["speedup"] for r in rows], color="C0")
    for i, r in enumerate(rows):
        left.text(i, r["speedup"], f"{r['bytes_per_token'] / 1024:.0f} KiB/tok", ha="center", va="bottom", fontsize=8)
    left.axhline(1.0, color="grey", lw=0.8)
    left.set_ylabel("decode attention speedup vs bf16")
    right.bar(names, [r["output_error"] for r in rows], color="C1")
    right.set_yscale("log")
    right.set_ylabel("output relative error vs float64")
    for ax in (left, right):
        ax.tick_params(axis="x", rotation=20)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def serving_memory_figure(results, *, title: str = ""):
    """Max concurrent requests, throughput, TTFT p99 and TPOT p99 per serving run (one bar per KV dtype and
    allocator, gpusim.serving.serving_sim.ServingResult): what the KV-cache layout does to serving."""
    fig, axes = plt.subplots(1, 4, figsize=(14, 4.2))
    labels = [r.label.replace(", ", "\n", 1) for r in results]
    metrics = [("max concurrent requests", lambda r: r.max_concurrent_requests),
               ("throughput (tokens/s)", lambda r: r.throughput_tokens_per_s),
               ("TTFT p99 (ms)", lambda r: 1e3 * r.ttft_p(99)), ("TPOT p99 (ms)", lambda r: 1e3 * r.tpot_p(99))]
    for ax, (name, get) in zip(axes, metrics):
        ax.bar(range(len(results)), [get(r) for r in results], color=[f"C{i}" for i in range(len(results))])
        ax.set_xticks(range(len(results)), labels, fontsize=7, rotation=30, ha="right")
        ax.set_title(name, fontsize=10)
    first = results[0]
    fig.suptitle(title or f"{first.model} on {first.hardware}: {len(first.requests)} requests, Poisson "
                          f"{first.config.rate_per_s:g}/s, max {first.config.trace.max_seq_len} tokens")
    fig.tight_layout()
    return fig
