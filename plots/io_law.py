"""SMEM what-if: HBM traffic and time against SMEM size, with FlashAttention's IO law.

FlashAttention (Dao et al. 2022, Theorem 2) reads and writes Theta(N^2 d^2 / M) bytes of HBM for SRAM of M
elements, because its K/V block size is B_c ~ M / 4d and Q and O are streamed once per K/V block. The
figure draws each kernel's HBM bytes against the SMEM size the rows were swept over, the law c N^2 d^2 / M
(c fitted at the smallest SMEM of the kernel whose traffic varies most, so only the slope is the claim), and
the compulsory traffic (read Q, K, V, write O once) that no SMEM size can go below; and, beside it, time,
marking for each kernel the smallest SMEM at which time is within 2% of its best (where it stops falling).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from gpusim.errors import InputError  # noqa: E402
from gpusim.hardware import DTYPE_BYTES, HardwareSpec  # noqa: E402
from gpusim.plots.roofline import hardware_of  # noqa: E402

#: Time within this factor of a kernel's best counts as "stopped falling".
PLATEAU_WITHIN = 1.02
SMEM_KEYS = {"smem_per_sm_bytes": "SMEM per SM", "smem_per_cta_max_bytes": "SMEM per CTA (max)"}


def _kib(value: float, _pos=None) -> str:
    return f"{value / 1024:g} KiB" if value < 2**20 else f"{value / 2**20:g} MiB"


def io_law_data(rows: list[dict], hw: HardwareSpec) -> dict:
    """What the figure draws: x key; per kernel sorted (x, hbm_bytes, time_s, tile label); the law curve (xs, bytes) with
    its constant and anchor kernel; the compulsory bytes; per kernel the plateau x (time stops falling)."""
    x_key = next((k for k in SMEM_KEYS if any(k in r for r in rows)), None)
    if x_key is None:
        raise InputError("io_law plot: the rows are not swept over smem_per_sm_bytes or smem_per_cta_max_bytes")
    series: dict[str, list] = {}
    m_of: dict[float, float] = {}
    for row in rows:
        spec = hardware_of(row, hw)
        sram = spec.sram_per_sm_bytes or spec.smem_per_sm_bytes  # FA1's M (kernels/fa1.paper_block_sizes)
        m_elements = sram / DTYPE_BYTES[str(row.get("dtype", "bf16"))]
        m_of[row[x_key]] = m_elements
        tile = f"B_c={row['info_block_n']}" if "info_block_n" in row else ""
        series.setdefault(str(row["kernel"]), []).append((row[x_key], row["hbm_bytes"], row["time_s"], tile))
    for pts in series.values():
        pts.sort()
    problems = {(r.get("batch", 1), r.get("heads", 1), r.get("seq_len"), r.get("head_dim")) for r in rows}
    if len(problems) != 1 or None in next(iter(problems)):
        raise InputError("io_law plot: needs rows of one attention problem (batch, heads, seq_len, head_dim); "
                         "use a filter")
    batch, heads, n, d = next(iter(problems))
    anchor = max(series, key=lambda k: max(p[1] for p in series[k]) / max(min(p[1] for p in series[k]), 1))
    xs = sorted(m_of)
    shape = [batch * heads * n * n * d * d / m_of[x] for x in xs]
    x0, bytes0 = series[anchor][0][:2]
    c = bytes0 / shape[xs.index(x0)]
    plateau = {}
    for kernel, pts in series.items():
        best = min(p[2] for p in pts)
        plateau[kernel] = next(p[0] for p in pts if p[2] <= best * PLATEAU_WITHIN)
    compulsory = next((r["compulsory_bytes"] for r in rows if "compulsory_bytes" in r), None)
    return {"x_key": x_key, "series": series, "law": (xs, [c * s for s in shape]), "law_constant": c,
            "anchor": anchor, "compulsory": compulsory, "plateau": plateau, "problem": (batch, heads, n, d)}


def io_law_figure(rows: list[dict], hw: HardwareSpec, title: str = ""):
    data = io_law_data(rows, hw)
    x_key = data["x_key"]
    batch, heads, n, d = data["problem"]
    fig, (ax_b, ax_t) = plt.subplots(1, 2, figsize=(13, 6.2), layout="constrained")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (kernel, pts) in enumerate(data["series"].items()):
        c = colors[i % len(colors)]
        xs = [p[0] for p in pts]
        ax_b.plot(xs, [p[1] for p in pts], "-o", color=c, label=f"{kernel}: HBM bytes", gid=f"hbm:{kernel}")
        ax_t.plot(xs, [p[2] * 1e6 for p in pts], "-o", color=c, label=kernel, gid=f"time:{kernel}")
        if len({p[3] for p in pts}) > 1:  # tile sizes that change with SMEM: label them
            for x, y, _, tile in pts:
                ax_b.annotate(tile, (x, y), textcoords="offset points", xytext=(4, 5), fontsize=7, color=c)
        x_p = data["plateau"][kernel]
        t_p = next(p[2] for p in pts if p[0] == x_p) * 1e6
        ax_t.plot([x_p], [t_p], marker="*", ms=16, color=c, markeredgecolor="black", linestyle="none",
                  gid=f"plateau:{kernel}",
                  label=f"{kernel}: time stops falling at {_kib(x_p)} (within {PLATEAU_WITHIN - 1:.0%} of best)")
    law_x, law_y = data["law"]
    ax_b.plot(law_x, law_y, "-.", color="gray", lw=2, gid="law",
              label=f"Θ(N²d²/M): {data['law_constant']:.3g} x B·H·N²d²/M bytes, M = the SM's SRAM in elements "
                    f"(constant fitted to {data['anchor']} at the smallest SMEM)")
    if data["compulsory"]:
        ax_b.axhline(data["compulsory"], color="black", ls=":", lw=2, gid="compulsory",
                     label="compulsory: read Q, K, V and write O once")
    pretty = SMEM_KEYS[x_key]
    for ax in (ax_b, ax_t):
        ax.set_xscale("log", base=2)
        ax.set_xticks(law_x)
        ax.xaxis.set_major_formatter(FuncFormatter(_kib))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda *_: ""))
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        ax.set_xlabel(f"{pretty} (bytes, log scale)")
        ax.grid(True, which="both", alpha=0.3)
    ax_b.set_yscale("log")
    ax_b.set_ylabel("HBM bytes (read + write, log scale)")
    ax_b.set_title("HBM traffic against SMEM size")
    ax_b.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    ax_t.set_ylabel("kernel time (µs)")
    ax_t.set_title("Time against SMEM size")
    ax_t.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    fig.suptitle(title or f"SMEM what-if on {hw.name}: B={batch} H={heads} N={n} d={d}")
    return fig
