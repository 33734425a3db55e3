"""Line charts of a metric against a swept coordinate, one line per series."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

#: Axis labels with units for the metrics rows carry.
LABELS = {
    "time_s": "time (s)", "tflops_per_s": "throughput (TFLOP/s)", "hbm_bytes": "HBM bytes (read + write)",
    "hbm_read_bytes": "HBM bytes read", "hbm_write_bytes": "HBM bytes written", "l2_bytes": "L2 bytes (read + write)",
    "hbm_bytes_per_s": "achieved HBM bandwidth (B/s)", "seq_len": "sequence length (tokens)",
    "kv_len": "KV length (tokens)", "batch": "batch", "head_dim": "head dim",
    "hbm_bandwidth_bytes_per_s": "peak HBM bandwidth (B/s)", "smem_per_sm_bytes": "SMEM per SM (bytes)",
    "info_block_n": "K/V block rows",
}


def label_of(name: str) -> str:
    return LABELS.get(name, name)


def series_data(rows: list[dict], x: str, y: str, series: str | None) -> dict[str, tuple[list, list]]:
    """{series name: (xs, ys)} sorted by x: exactly the numbers the figure draws."""
    groups: dict[str, list] = {}
    for row in rows:
        if x not in row or y not in row:
            continue
        if not series:
            key = y
        elif isinstance(series, (list, tuple)):
            key = " ".join(str(row.get(name, "")) if name == "kernel" else f"{name}={row.get(name, '')}"
                           for name in series)
        else:
            key = str(row.get(series, ""))
        groups.setdefault(key, []).append((row[x], row[y]))
    return {k: tuple(map(list, zip(*sorted(v)))) for k, v in groups.items()}


def line_figure(rows: list[dict], x: str, ys: list[str] | str, series: str | None = "kernel", *,
                logx: bool = False, logy: bool = False, title: str = ""):
    ys = [ys] if isinstance(ys, str) else list(ys)
    fig, axes = plt.subplots(1, len(ys), figsize=(6.4 * len(ys), 4.6), squeeze=False)
    for ax, y in zip(axes[0], ys):
        for name, (xs, vals) in series_data(rows, x, y, series).items():
            ax.plot(xs, vals, marker="o", label=name)
        ax.set_xlabel(label_of(x))
        ax.set_ylabel(label_of(y))
        if logx:
            ax.set_xscale("log", base=2)
        if logy:
            ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(title=series if isinstance(series, str) else None, fontsize=8)
        ax.set_title(f"{label_of(y)} vs {label_of(x)}")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def hbm_traffic_figure(rows: list[dict], sram_bytes: float, title: str = ""):
    """The headline figure: HBM (solid) and L2 (dashed) bytes against sequence length per kernel and head
    dim, with the compulsory bytes and FlashAttention's IO bound Theta(N^2 d^2 / M) for reference."""
    fig, ax = plt.subplots(figsize=(8.5, 6))
    keys = sorted({(r["kernel"], r.get("head_dim")) for r in rows}, key=str)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (kernel, d) in enumerate(keys):
        sel = sorted((r for r in rows if r["kernel"] == kernel and r.get("head_dim") == d), key=lambda r: r["seq_len"])
        xs = [r["seq_len"] for r in sel]
        c = colors[i % len(colors)]
        ax.plot(xs, [r["hbm_bytes"] for r in sel], "-o", color=c, label=f"{kernel} d={d}: HBM")
        ax.plot(xs, [r["l2_bytes"] for r in sel], "--", color=c, alpha=0.6, label=f"{kernel} d={d}: L2")
    for d in sorted({r.get("head_dim") for r in rows if r.get("head_dim")}):
        sel = sorted({r["seq_len"]: r for r in rows if r.get("head_dim") == d}.values(), key=lambda r: r["seq_len"])
        xs = [r["seq_len"] for r in sel]
        ax.plot(xs, [r["compulsory_bytes"] for r in sel], ":", color="black", lw=2,
                label=f"compulsory (read Q,K,V, write O) d={d}")
        heads = [r.get("batch", 1) * r.get("heads", 1) for r in sel]
        elem = 2
        bound = [h * n * n * d * d / (sram_bytes / elem) * elem for h, n in zip(heads, xs)]
        ax.plot(xs, bound, "-.", color="gray", label=f"FA IO bound N²d²/M (M = SRAM/SM) d={d}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(label_of("seq_len"))
    ax.set_ylabel("bytes moved (log scale)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(title or "Attention forward: memory traffic vs sequence length")
    fig.tight_layout()
    return fig
