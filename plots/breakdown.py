"""Time breakdown: for each kernel (one panel) and size (one group of bars), the busy share of every unit
and the idle share, annotated with the bound the result names.

Units work concurrently (HBM streams while tensor cores multiply), so busy shares overlap and do not add up
to one; they are drawn side by side, not stacked. Each is the unit's busy time over the kernel time,
averaged over SMs for per-SM units (Result.unit_busy). The idle share is 1 - the busiest unit's share: the
time even the bottleneck unit waited (latency, launch overhead, tail wave, dependencies).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from gpusim.hardware import HardwareSpec  # noqa: E402
from gpusim.plots.roofline import point_label, varying_coords  # noqa: E402

#: Units in drawing order, with their legend names (row key busy_<unit>).
UNIT_LABELS = {
    "hbm": "HBM", "l2": "L2", "sm_load": "LSU load path", "cp_async": "cp.async path", "tma": "TMA engine",
    "smem": "SMEM",
    "tensor": "tensor cores", "mufu": "MUFU (exp)", "fp32": "FP32 / FMA", "dispatch": "issue (dispatch)",
}
UNIT_COLORS = {"hbm": "tab:blue", "l2": "tab:cyan", "sm_load": "tab:purple", "cp_async": "tab:gray", "tma": "tab:brown",
               "smem": "tab:olive",
               "tensor": "tab:green", "mufu": "tab:red", "fp32": "tab:orange", "dispatch": "tab:pink",
               "idle": "lightgray"}


def units_of(rows: list[dict]) -> list[str]:
    """Units that were busy in any row, known ones in drawing order first (units idle throughout are left
    out: a GPU without TMA, a kernel that never uses it)."""
    present = {k.removeprefix("busy_") for r in rows for k in r if k.startswith("busy_") and r[k]}
    return [u for u in UNIT_LABELS if u in present] + sorted(present - set(UNIT_LABELS))


def breakdown_data(rows: list[dict]) -> dict[str, list[dict]]:
    """{kernel: [{label, shares: {unit: share}, idle, bound}]} in row order: exactly what the figure draws."""
    units = units_of(rows)
    keys = varying_coords(rows)
    per_kernel = {}
    for row in rows:
        kernel = str(row["kernel"])
        others = [r for r in rows if str(r["kernel"]) == kernel]
        label_keys = [k for k in keys if len({repr(r.get(k)) for r in others}) > 1] or keys
        shares = {u: float(row.get(f"busy_{u}", 0.0)) for u in units}
        per_kernel.setdefault(kernel, []).append({
            "label": point_label(row, label_keys), "shares": shares,
            "idle": max(0.0, 1.0 - max(shares.values(), default=0.0)), "bound": str(row.get("bound", ""))})
    return per_kernel


def breakdown_figure(rows: list[dict], hw: HardwareSpec | None = None, title: str = ""):
    """One panel per kernel; in each, a group of bars per size: every unit's busy share and the idle share."""
    data = breakdown_data(rows)
    units = units_of(rows)
    bars = units + ["idle"]
    groups = max((len(v) for v in data.values()), default=1)
    width = 0.85 / len(bars)
    fig_w = max(8.0, 1.5 + groups * len(bars) * 0.16)
    fig, axes = plt.subplots(max(1, len(data)), 1, figsize=(fig_w, 1.4 + 2.9 * max(1, len(data))), squeeze=False,
                             layout="constrained")
    for ax, (kernel, entries) in zip(axes[:, 0], data.items()):
        xs = list(range(len(entries)))
        for j, unit in enumerate(bars):
            heights = [e["idle"] if unit == "idle" else e["shares"][unit] for e in entries]
            ax.bar([x - 0.425 + (j + 0.5) * width for x in xs], heights, width, color=UNIT_COLORS.get(unit, None),
                   edgecolor="black" if unit == "idle" else "none", linewidth=0.4,
                   hatch="//" if unit == "idle" else None,
                   label="idle (1 - busiest)" if unit == "idle" else UNIT_LABELS.get(unit, unit))
        for x, entry in zip(xs, entries):
            ax.text(x, 1.03, f"bound: {entry['bound']}", ha="center", va="bottom", fontsize=8, fontweight="bold")
        ax.set_xticks(xs)
        ax.set_xticklabels([e["label"] for e in entries], fontsize=8, rotation=15 if groups > 4 else 0)
        ax.set_xlim(-0.6, len(entries) - 0.4)
        ax.set_ylim(0, 1.15)
        ax.set_ylabel("share of kernel time")
        ax.set_title(kernel, loc="left", fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(bars), 5), fontsize=8)
    hw_name = f" on {hw.name}" if hw is not None else ""
    fig.suptitle(title or f"Where the time goes{hw_name}: busy share of each unit")
    return fig
