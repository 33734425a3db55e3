"""Serving figures: KV-cache bytes by model and dtype, allocator memory (contiguous vs paged), the block-size
trade-off (kernel slowdown against waste), and KV quantization error against bytes. Each function takes result
objects from gpusim.serving and returns a matplotlib Figure; callers write files."""

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
