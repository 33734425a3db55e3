"""Roofline figure: arithmetic intensity (FLOP per HBM byte) against achieved throughput, one marker per
kernel and size, under the bandwidth roofs and compute ceilings of the hardware the rows ran on.

Everything comes from result rows (gpusim.runner.result_row) and the HardwareSpec of the scenario. Where the
rows carry hardware coordinates (a [hardware_sweep]), the roofs are those of each swept variant: a
bandwidth sweep draws one HBM roof per bandwidth.

Roofs and ceilings drawn (all from spec fields, no other constants):
- HBM roof: hbm_bandwidth_bytes_per_s x hbm_achievable_fraction (what a streaming kernel can reach).
- L2 and SMEM roofs: l2_bandwidth_bytes_per_s and smem_bandwidth_bytes_per_s. The markers are placed at the
  HBM intensity; these two roofs bound a kernel at its intensity with respect to L2 or SMEM bytes, which is
  lower (every HBM byte also crosses L2), so they are drawn for reference as in a hierarchical roofline.
- Tensor-core ceilings: the best instruction's peak (wgmma on Hopper) and mma.sync's, each times
  tensor_sustained_fraction, which the timing engine applies to every MMA.
- Exp ceiling: attention computes one exponential per score element, which costs 4 d matmul FLOPs
  (2 d for Q K^T and 2 d for P V), so the MUFU rate caps attention at mufu_ops_per_s x 4 d FLOP/s (one line
  per head dim in the rows). FlashAttention-3/4's softmax bottleneck is where this line sits low.
"""

from __future__ import annotations

import dataclasses

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from gpusim.hardware import HardwareSpec  # noqa: E402

#: Matmul FLOPs of attention's forward pass per score element, i.e. per exponential: 2 d (Q K^T) + 2 d (P V).
ATTENTION_FLOPS_PER_EXP_PER_HEAD_DIM = 4

#: Hardware fields a row may carry as sweep coordinates.
HARDWARE_FIELDS = frozenset(f.name for f in dataclasses.fields(HardwareSpec)) - {"name", "description", "sources"}
#: Problem and run fields a row may carry as coordinates, with the short names used in point labels.
PROBLEM_SHORT = {"batch": "B", "heads": "H", "kv_heads": "kvh", "seq_len": "N", "kv_len": "L", "head_dim": "d",
                 "causal": "causal", "dtype": "", "pass": "", "m": "m", "n": "n", "k": "k", "bytes": "bytes",
                 "sms": "SMs", "label": ""}

#: Short names of hardware fields often swept.
HARDWARE_SHORT = {"smem_per_sm_bytes": "SMEM/SM", "smem_per_cta_max_bytes": "SMEM/CTA", "l2_capacity_bytes": "L2"}


# ---------------------------------------------------------------------------------------------- row helpers
def varying_coords(rows: list[dict]) -> list[str]:
    """Coordinate keys (problem fields, swept hardware fields, run labels) whose value differs among rows,
    the run label first; a key that moves one-to-one with one already listed (a [hardware_zip]) is left out."""
    keys: list[str] = []
    for row in rows:
        for key in row:
            if (key in PROBLEM_SHORT or key in HARDWARE_FIELDS) and key not in keys:
                keys.append(key)
    keys.sort(key=lambda k: k != "label")  # a run's own label first: it names the runs best
    varying = [k for k in keys if len({repr(r.get(k)) for r in rows}) > 1]
    kept: list[str] = []
    for key in varying:  # a key that moves in lockstep with one already kept (a [hardware_zip]) adds nothing
        if not any(_one_to_one(rows, k, key) for k in kept):
            kept.append(key)
    return kept


def _one_to_one(rows: list[dict], a: str, b: str) -> bool:
    pairs = {(repr(r.get(a)), repr(r.get(b))) for r in rows}
    return len(pairs) == len({p[0] for p in pairs}) == len({p[1] for p in pairs})


def _fmt_bytes(value: float) -> str:
    for unit, size in (("MiB", 2**20), ("KiB", 2**10)):
        if value >= size:
            return f"{value / size:g} {unit}"
    return f"{value:g} B"


def format_coord(key: str, value) -> str:
    """A short, readable 'name=value' for a point label."""
    if key in PROBLEM_SHORT:
        short = PROBLEM_SHORT[key]
        if isinstance(value, bool):
            return short if value else f"not {short}"
        return f"{short}={value}" if short else str(value)
    if key == "hbm_bandwidth_bytes_per_s":
        return f"HBM {value / 1e12:g} TB/s"
    if key in HARDWARE_SHORT:
        return f"{HARDWARE_SHORT[key]} {_fmt_bytes(value)}"
    if key.endswith("_bytes") and isinstance(value, (int, float)):
        return f"{key.removesuffix('_bytes').replace('_', ' ')} {_fmt_bytes(value)}"
    return f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}"


def point_label(row: dict, keys: list[str]) -> str:
    """Label of a row among others: its values of the varying coordinates, or its problem if none vary."""
    parts = [format_coord(k, row[k]) for k in keys if row.get(k) is not None]
    return " ".join(parts) if parts else str(row.get("problem", ""))


def hardware_of(row: dict, hw: HardwareSpec) -> HardwareSpec:
    """`hw` with the hardware coordinates the row carries (a swept variant)."""
    overrides = {k: row[k] for k in row if k in HARDWARE_FIELDS and row[k] != getattr(hw, k)}
    return hw.with_overrides({**overrides, "name": hw.name}, origin="row coordinates") if overrides else hw


def hardware_variants(rows: list[dict], hw: HardwareSpec) -> list[HardwareSpec]:
    """The distinct hardware the rows ran on, in order of first appearance."""
    seen, out = set(), []
    for row in rows:
        key = tuple(sorted((k, repr(row[k])) for k in row if k in HARDWARE_FIELDS))
        if key not in seen:
            seen.add(key)
            out.append(hardware_of(row, hw))
    return out or [hw]


# ---------------------------------------------------------------------------------------------- data
def roofline_points(rows: list[dict]) -> dict[str, list[tuple[float, float, str]]]:
    """{kernel: [(FLOP per HBM byte, achieved TFLOP/s, label)]}: exactly the markers the figure draws.
    Rows without HBM traffic or FLOPs have no place on log axes and are left out."""
    keys = varying_coords(rows)
    out: dict[str, list] = {}
    for row in rows:
        if not row.get("hbm_bytes") or not row.get("flops") or not row.get("tflops_per_s"):
            continue
        out.setdefault(str(row["kernel"]), []).append(
            (row["flops"] / row["hbm_bytes"], row["tflops_per_s"], point_label(row, keys)))
    return out


def roofs(rows: list[dict], hw: HardwareSpec) -> list[dict]:
    """Bandwidth roofs (kind 'roof', bytes_per_s) and compute ceilings (kind 'ceiling', flops_per_s) of the
    hardware the rows ran on, deduplicated. Each has an id (the line's gid) and a legend label."""
    out: dict[str, dict] = {}

    def add(kind: str, gid: str, value: float, label: str) -> None:
        if value > 0 and gid not in out:
            out[gid] = {"kind": kind, "gid": gid, "value": value, "label": label}

    dtypes = sorted({str(r.get("dtype", "bf16")) for r in rows}) or ["bf16"]
    head_dims = sorted({int(r["head_dim"]) for r in rows if r.get("head_dim")})
    for spec in hardware_variants(rows, hw):
        hbm = spec.hbm_bandwidth_bytes_per_s * spec.hbm_achievable_fraction
        add("roof", f"roof:hbm:{hbm:.6g}", hbm,
            f"HBM roof {hbm / 1e12:.2f} TB/s ({spec.hbm_bandwidth_bytes_per_s / 1e12:g} TB/s x "
            f"{spec.hbm_achievable_fraction:g} achievable)")
        l2 = spec.l2_bandwidth_bytes_per_s
        add("roof", f"roof:l2:{l2:.6g}", l2, f"L2 roof {l2 / 1e12:.1f} TB/s (per L2 byte)")
        smem = spec.smem_bandwidth_bytes_per_s
        add("roof", f"roof:smem:{smem:.6g}", smem, f"SMEM roof {smem / 1e12:.1f} TB/s (per SMEM byte)")
        for dtype in dtypes:
            best = spec.best_instruction(dtype)
            for instruction in dict.fromkeys((best, "mma_sync")):
                if spec.tensor_flops_per_clk(instruction, dtype) <= 0:
                    continue
                peak = spec.peak_tensor_flops_per_s(dtype, instruction) * spec.tensor_sustained_fraction
                add("ceiling", f"ceiling:{instruction}:{dtype}:{peak:.6g}", peak,
                    f"tensor cores, {instruction} {dtype}: {peak / 1e12:.0f} TFLOP/s "
                    f"(peak x {spec.tensor_sustained_fraction:g} sustained)")
        for d in head_dims:
            flops = spec.peak_mufu_ops_per_s * ATTENTION_FLOPS_PER_EXP_PER_HEAD_DIM * d
            add("ceiling", f"ceiling:exp:d{d}:{flops:.6g}", flops,
                f"exp (MUFU) d={d}: {spec.peak_mufu_ops_per_s / 1e12:.2f} T exp/s x 4d = "
                f"{ATTENTION_FLOPS_PER_EXP_PER_HEAD_DIM * d} FLOP/exp -> {flops / 1e12:.0f} TFLOP/s")
    return list(out.values())


# ---------------------------------------------------------------------------------------------- figure
_ROOF_STYLE = {"hbm": ("black", "-"), "l2": ("tab:brown", "--"), "smem": ("tab:olive", "-.")}


def roofline_figure(rows: list[dict], hw: HardwareSpec, title: str = ""):
    """Log-log roofline of the rows on `hw` (and the hardware variants the rows carry)."""
    points = roofline_points(rows)
    lines = roofs(rows, hw)
    fig, ax = plt.subplots(figsize=(13, 7))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    xs_all = [x for pts in points.values() for x, _, _ in pts]
    ceilings = [r for r in lines if r["kind"] == "ceiling"]
    bandwidths = [r for r in lines if r["kind"] == "roof"]
    top = max((c["value"] for c in ceilings), default=1e15)
    ridges = [top / b["value"] for b in bandwidths]
    x_lo = min(xs_all + ridges) / 4
    x_hi = max(xs_all + ridges) * 4
    for roof in bandwidths:
        level = roof["gid"].split(":")[1]
        color, style = _ROOF_STYLE[level]
        x_top = top / roof["value"]
        ax.plot([x_lo, x_top], [x_lo * roof["value"] / 1e12, top / 1e12], style, color=color, lw=1.6,
                label=roof["label"], gid=roof["gid"])
    ceiling_colors = {"exp": "tab:red"}
    tensor_styles = iter(["-", "--", ":", "-."] * 4)
    exp_styles = iter([":", (0, (1, 3)), (0, (3, 1, 1, 1))] * 4)
    for ceiling in ceilings:
        is_exp = ceiling["gid"].startswith("ceiling:exp")
        ax.plot([x_lo, x_hi], [ceiling["value"] / 1e12] * 2, next(exp_styles) if is_exp else next(tensor_styles),
                color=ceiling_colors["exp"] if is_exp else "tab:gray", lw=1.4, label=ceiling["label"],
                gid=ceiling["gid"])
    for i, (kernel, pts) in enumerate(points.items()):
        color = colors[i % len(colors)]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], linestyle="none", marker="o", ms=7, color=color,
                markeredgecolor="black", markeredgewidth=0.5, label=kernel, gid=f"points:{kernel}", zorder=5)
        for x, y, label in pts:
            if label:
                ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7, color=color)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(x_lo, x_hi)
    ys = [y for pts in points.values() for _, y, _ in pts]
    ax.set_ylim(min(ys + [top / 1e12]) / 5, top / 1e12 * 3)
    ax.set_xlabel("arithmetic intensity (FLOP per HBM byte)")
    ax.set_ylabel("achieved throughput (TFLOP/s)")
    variants = len(hardware_variants(rows, hw))
    ax.set_title(title or f"Roofline on {hw.name}" + (f" ({variants} hardware variants)" if variants > 1 else ""))
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    return fig
