"""Parity plot: predicted against measured, log-log, one colour per kernel, with the 1:1 line and +-25% band."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

UNITS = {"time_s": "s", "hbm_read_bytes": "B", "hbm_write_bytes": "B", "hbm_bytes": "B", "l2_bytes": "B",
         "flops_per_s": "FLOP/s", "speedup": "x"}


def parity_figure(rows: list[dict], metric: str):
    """`rows` carry kernel, measured and predicted (gpusim.validation rows)."""
    fig, ax = plt.subplots(figsize=(6, 6))
    for kernel in sorted({r["kernel"] for r in rows}):
        sel = [r for r in rows if r["kernel"] == kernel]
        ax.scatter([r["measured"] for r in sel], [r["predicted"] for r in sel], label=kernel, s=22)
    values = [v for r in rows for v in (r["measured"], r["predicted"]) if v > 0]
    lo, hi = min(values) / 1.5, max(values) * 1.5
    ax.plot([lo, hi], [lo, hi], "k-", lw=1, label="predicted = measured")
    ax.fill_between([lo, hi], [lo * 0.75, hi * 0.75], [lo * 1.25, hi * 1.25], color="gray", alpha=0.15, label="±25%")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    unit = UNITS.get(metric, "")
    ax.set_xlabel(f"measured {metric} ({unit})")
    ax.set_ylabel(f"predicted {metric} ({unit})")
    ax.set_title(f"gpusim vs measurement: {metric}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
