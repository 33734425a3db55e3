"""Figures are drawn from result rows: the numbers a figure plots are the rows' numbers, its roofs and ceilings
are the hardware spec's, and every figure has a title, labelled axes and a legend. Also the scenario side
of the what-if figures: [hardware_zip] (fields swept together), the plot kinds, the bundled what-if files."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.figure
import matplotlib.pyplot as plt
import numpy as np
import pytest

from gpusim.cli import main
from gpusim.errors import InputError
from gpusim.hardware import get_preset
from gpusim.plots import breakdown_figure, hbm_traffic_figure, io_law_figure, line_figure, roofline_figure
from gpusim.plots.breakdown import UNIT_LABELS
from gpusim.plots.io_law import io_law_data
from gpusim.plots.roofline import varying_coords
from gpusim.problem import AttentionProblem
from gpusim.report import scenario_figures
from gpusim.runner import result_row, run_points
from gpusim.scenario import Point, load_scenario
from gpusim.simulate import simulate

REPO = Path(__file__).resolve().parents[1]
H200 = get_preset("h200")
REL = 1e-12  # plotted numbers are the rows' numbers, up to float formatting


def problem_coords(p: AttentionProblem) -> dict:
    """The coordinates a scenario row would carry for this problem."""
    return {"batch": p.batch, "heads": p.heads, "seq_len": p.seq_len, "head_dim": p.head_dim}


def make_rows(kernels, problems, hw=H200, coords_of=problem_coords):
    rows = []
    for kernel in kernels:
        for problem in problems:
            point = Point(kernel=kernel, problem=problem, hardware=hw, options={}, coords=coords_of(problem))
            rows.append(result_row(point, simulate(kernel, problem, hw)))
    return rows


@pytest.fixture(scope="module")
def rows():
    problems = [AttentionProblem(batch=1, heads=4, seq_len=n, head_dim=64) for n in (256, 512)]
    return make_rows(["naive", "fa2"], problems)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def line_by_gid(ax, gid: str):
    found = [line for line in ax.lines if line.get_gid() == gid]
    assert len(found) == 1, [line.get_gid() for line in ax.lines]
    return found[0]


def assert_xy(plotted, expected) -> None:
    """A line's (x, y) points equal the rows' numbers."""
    np.testing.assert_allclose(np.asarray(plotted, dtype=float), np.asarray(expected, dtype=float), rtol=REL)


# ---------------------------------------------------------------------------------------------- roofline
def test_roofline_markers_are_the_rows(rows):
    fig = roofline_figure(rows, H200, title="roofline test")
    assert isinstance(fig, matplotlib.figure.Figure)
    ax = fig.axes[0]
    for kernel in ("naive", "fa2"):
        sel = [r for r in rows if r["kernel"] == kernel]
        xy = line_by_gid(ax, f"points:{kernel}").get_xydata()
        assert len(xy) == len(sel) == 2
        for (x, y), row in zip(xy, sel):
            assert x == pytest.approx(row["flops"] / row["hbm_bytes"], rel=REL)
            assert y == pytest.approx(row["tflops_per_s"], rel=REL)
    labels = {t.get_text() for t in ax.texts}
    assert {"N=256", "N=512"} <= labels  # each marker says its size
    assert ax.get_title() == "roofline test"
    assert ax.get_xscale() == ax.get_yscale() == "log"
    assert "FLOP per HBM byte" in ax.get_xlabel() and "TFLOP/s" in ax.get_ylabel()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "naive" in legend and "fa2" in legend


def test_roofline_roofs_and_ceilings_are_the_specs(rows):
    ax = roofline_figure(rows, H200).axes[0]
    by_kind = {line.get_gid().split(":")[1]: line for line in ax.lines
               if line.get_gid() and line.get_gid().startswith(("roof:", "ceiling:"))}
    # bandwidth roofs: throughput = bandwidth x intensity along the whole line
    for level, bytes_per_s in (("hbm", H200.hbm_bandwidth_bytes_per_s * H200.hbm_achievable_fraction),
                               ("l2", H200.l2_bandwidth_bytes_per_clk * H200.sm_clock_hz),
                               ("smem", H200.smem_bandwidth_bytes_per_clk_per_sm * H200.sm_count * H200.sm_clock_hz)):
        xs, ys = by_kind[level].get_data()
        for x, y in zip(xs, ys):
            assert y * 1e12 == pytest.approx(bytes_per_s * x, rel=1e-9), level
    # 4.8 TB/s x 0.885 achievable on h200
    assert by_kind["hbm"].get_ydata()[0] / by_kind["hbm"].get_xdata()[0] == pytest.approx(4.248, rel=1e-9)
    # tensor ceilings: wgmma and mma.sync peaks x sustained fraction; exp ceiling: MUFU rate x 4d FLOPs/exp
    flat = {gid: line.get_ydata()[0] for line in ax.lines if (gid := line.get_gid() or "").startswith("ceiling:")}
    sustained = H200.tensor_sustained_fraction
    expected = {
        "wgmma": H200.wgmma_bf16_flops_per_clk_per_sm * H200.sm_count * H200.sm_clock_hz * sustained,
        "mma_sync": H200.mma_sync_bf16_flops_per_clk_per_sm * H200.sm_count * H200.sm_clock_hz * sustained,
        "exp": H200.mufu_ops_per_clk_per_sm * H200.sm_count * H200.sm_clock_hz * 4 * 64,
    }
    for name, flops in expected.items():
        [value] = [v for gid, v in flat.items() if gid.split(":")[1] == name]
        assert value * 1e12 == pytest.approx(flops, rel=1e-9), name
    legend = " ".join(t.get_text() for t in ax.get_legend().get_texts())
    assert "4d = 256 FLOP/exp" in legend and "HBM roof" in legend and "0.885 achievable" in legend


def test_roofline_draws_one_hbm_roof_per_swept_bandwidth():
    problem = AttentionProblem(batch=1, heads=4, seq_len=256, head_dim=64)
    rows = []
    for bw in (2.0e12, 8.0e12):
        hw = H200.with_overrides({"hbm_bandwidth_bytes_per_s": bw})
        rows += make_rows(["fa2"], [problem], hw, coords_of=lambda p, bw=bw: {"hbm_bandwidth_bytes_per_s": bw})
    ax = roofline_figure(rows, H200).axes[0]
    slopes = sorted(line.get_ydata()[0] / line.get_xdata()[0] * 1e12 for line in ax.lines
                    if (line.get_gid() or "").startswith("roof:hbm"))
    assert slopes == pytest.approx([2.0e12 * 0.885, 8.0e12 * 0.885], rel=1e-9)
    assert {t.get_text() for t in ax.texts} == {"HBM 2 TB/s", "HBM 8 TB/s"}


# ---------------------------------------------------------------------------------------------- breakdown
def test_breakdown_bars_are_the_busy_shares(rows):
    fig = breakdown_figure(rows, H200, title="breakdown test")
    assert fig._suptitle.get_text() == "breakdown test"
    axes = {ax.get_title("left"): ax for ax in fig.axes}
    assert set(axes) == {"naive", "fa2"}
    units = [u for u in UNIT_LABELS if any(r.get(f"busy_{u}") for r in rows)]
    assert {"hbm", "l2", "tensor", "mufu", "dispatch"} <= set(units)
    for kernel, ax in axes.items():
        sel = [r for r in rows if r["kernel"] == kernel]
        bars = {c.get_label(): [p.get_height() for p in c.patches] for c in ax.containers}
        assert len(bars) == len(units) + 1
        for unit in units:
            assert bars[UNIT_LABELS[unit]] == pytest.approx([r[f"busy_{unit}"] for r in sel], rel=REL)
        busiest = [max(v for k, v in r.items() if k.startswith("busy_")) for r in sel]
        assert bars["idle (1 - busiest)"] == pytest.approx([1 - b for b in busiest], rel=REL)
        assert [t.get_text() for t in ax.texts] == [f"bound: {r['bound']}" for r in sel]
        assert [t.get_text() for t in ax.get_xticklabels()] == ["N=256", "N=512"]
        assert ax.get_ylabel() == "share of kernel time"
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "tensor cores" in legend and "idle (1 - busiest)" in legend


def test_breakdown_leaves_out_units_idle_throughout(rows):
    fa2 = [r for r in rows if r["kernel"] == "fa2"]
    fig = breakdown_figure([{**r, "busy_tma": 0.0} for r in fa2], H200)
    labels = {c.get_label() for c in fig.axes[0].containers}
    assert "TMA engine" not in labels and "tensor cores" in labels


# ---------------------------------------------------------------------------------------------- lines
def test_line_figure_plots_the_rows(rows):
    fig = line_figure(rows, "seq_len", ["time_s", "hbm_bytes"], "kernel", logx=True, logy=True, title="lines")
    assert fig._suptitle.get_text() == "lines"
    assert len(fig.axes) == 2
    for ax, metric in zip(fig.axes, ("time_s", "hbm_bytes")):
        assert ax.get_xlabel() == "sequence length (tokens)"
        assert ax.get_ylabel() in ("time (s)", "HBM bytes (read + write)")
        assert ax.get_title()
        plotted = {line.get_label(): line.get_xydata().tolist() for line in ax.lines}
        for kernel in ("naive", "fa2"):
            sel = sorted((r["seq_len"], r[metric]) for r in rows if r["kernel"] == kernel)
            assert_xy(plotted[kernel], sel)
        assert ax.get_xscale() == ax.get_yscale() == "log"


def test_hbm_traffic_figure_plots_the_rows(rows):
    smem = H200.smem_per_sm_bytes
    fig = hbm_traffic_figure(rows, smem, title="traffic")
    ax = fig.axes[0]
    assert ax.get_title() == "traffic" and ax.get_xlabel() and ax.get_ylabel()
    plotted = {line.get_label(): line.get_xydata().tolist() for line in ax.lines}
    for kernel in ("naive", "fa2"):
        sel = sorted((r for r in rows if r["kernel"] == kernel), key=lambda r: r["seq_len"])
        assert_xy(plotted[f"{kernel} d=64: HBM"], [[r["seq_len"], r["hbm_bytes"]] for r in sel])
        assert_xy(plotted[f"{kernel} d=64: L2"], [[r["seq_len"], r["l2_bytes"]] for r in sel])
    [compulsory] = [v for k, v in plotted.items() if k.startswith("compulsory")]
    fa2 = sorted((r for r in rows if r["kernel"] == "fa2"), key=lambda r: r["seq_len"])
    assert [y for _, y in compulsory] == pytest.approx([r["compulsory_bytes"] for r in fa2], rel=REL)
    # FA's IO bound: N^2 d^2 / M elements with M = SMEM / 2 bytes (bf16), times the heads, in bytes
    [bound] = [v for k, v in plotted.items() if k.startswith("FA IO bound")]
    assert [y for _, y in bound] == pytest.approx([4 * n * n * 64 * 64 / (smem / 2) * 2 for n in (256, 512)], rel=REL)


# ---------------------------------------------------------------------------------------------- io law
#: The part of the H200's 256 KB L1/shared SRAM not given to shared memory.
L1_KIB = 28


@pytest.fixture(scope="module")
def smem_rows():
    problem = AttentionProblem(batch=1, heads=2, seq_len=512, head_dim=64)
    rows = []
    for kib in (64, 128):
        fields = {"smem_per_sm_bytes": kib * 1024, "smem_per_cta_max_bytes": kib * 1024 - 1024,
                  "sram_per_sm_bytes": kib * 1024 + L1_KIB * 1024}
        rows += make_rows(["fa1", "fa2"], [problem], H200.with_overrides(fields),
                          coords_of=lambda p, f=fields: {**f, "batch": 1, "heads": 2, "seq_len": 512, "head_dim": 64})
    return rows


def test_io_law_figure_plots_rows_and_the_law(smem_rows):
    fig = io_law_figure(smem_rows, H200, title="io law")
    assert fig._suptitle.get_text() == "io law"
    ax_bytes, ax_time = fig.axes
    for ax in (ax_bytes, ax_time):
        assert ax.get_title() and ax.get_ylabel() and "SMEM per SM" in ax.get_xlabel()
        assert ax.get_legend() is not None
    for kernel in ("fa1", "fa2"):
        sel = sorted((r for r in smem_rows if r["kernel"] == kernel), key=lambda r: r["smem_per_sm_bytes"])
        assert_xy(line_by_gid(ax_bytes, f"hbm:{kernel}").get_xydata(),
                  [[r["smem_per_sm_bytes"], r["hbm_bytes"]] for r in sel])
        assert_xy(line_by_gid(ax_time, f"time:{kernel}").get_xydata(),
                  [[r["smem_per_sm_bytes"], r["time_s"] * 1e6] for r in sel])
        # the star marks the smallest SMEM whose time is within 2% of the kernel's best
        best = min(r["time_s"] for r in sel)
        first = next(r for r in sel if r["time_s"] <= 1.02 * best)
        assert line_by_gid(ax_time, f"plateau:{kernel}").get_xdata().tolist() == [first["smem_per_sm_bytes"]]
    # the law falls as 1 / M, M = the SM's SRAM (its SMEM plus the L1 share) in bf16 elements
    law_x, law_y = line_by_gid(ax_bytes, "law").get_data()
    m = [(x + L1_KIB * 1024) / 2 for x in law_x]
    assert law_y[0] * m[0] == pytest.approx(law_y[1] * m[1], rel=1e-9)
    assert line_by_gid(ax_bytes, "compulsory").get_ydata()[0] == smem_rows[0]["compulsory_bytes"]
    data = io_law_data(smem_rows, H200)
    assert data["x_key"] == "smem_per_sm_bytes" and data["problem"] == (1, 2, 512, 64)


def test_io_law_needs_an_smem_sweep(rows):
    with pytest.raises(InputError, match="smem_per_sm_bytes"):
        io_law_figure(rows, H200)


def test_lockstep_coordinates_label_once(smem_rows):
    assert varying_coords(smem_rows) == ["smem_per_sm_bytes"]


# ---------------------------------------------------------------------------------------------- scenarios
ZIP = """
name = "zip"
[hardware]
preset = "h200"
[hardware_sweep]
hbm_bandwidth_bytes_per_s = [2.0e12, 4.8e12]
[hardware_zip]
smem_per_sm_bytes = [65536, 131072, 262144]
smem_per_cta_max_bytes = [64512, 130048, 261120]
[[runs]]
kernel = "fa1"
batch = 1
heads = 2
seq_len = 512
head_dim = 64
[[plots]]
kind = "io_law"
filter = { hbm_bandwidth_bytes_per_s = 4.8e12 }
file = "law"
[[plots]]
kind = "roofline"
file = "roof"
[[plots]]
kind = "breakdown"
filter = { hbm_bandwidth_bytes_per_s = 4.8e12 }
file = "bars"
"""


def test_hardware_zip_sweeps_fields_together_times_the_grid(tmp_path):
    path = tmp_path / "zip.toml"
    path.write_text(ZIP)
    scenario = load_scenario(path)
    got = [(p.hardware.hbm_bandwidth_bytes_per_s, p.hardware.smem_per_sm_bytes, p.hardware.smem_per_cta_max_bytes)
           for p in scenario.points]
    assert got == [(bw, sm, sm - 1024) for bw in (2.0e12, 4.8e12) for sm in (65536, 131072, 262144)]
    assert all(p.coords["smem_per_cta_max_bytes"] == p.hardware.smem_per_cta_max_bytes for p in scenario.points)
    assert list(scenario.hardware_sweep) == ["hbm_bandwidth_bytes_per_s", "smem_per_sm_bytes", "smem_per_cta_max_bytes"]


@pytest.mark.parametrize("change, words", [
    (("smem_per_cta_max_bytes = [64512, 130048, 261120]", "smem_per_cta_max_bytes = [64512, 130048]"),
     ["hardware_zip.smem_per_cta_max_bytes", "same length"]),
    (("smem_per_cta_max_bytes = [64512, 130048, 261120]", "smem_per_cta_max_bytes = [64512, 130048, 300000]"),
     ["hardware_zip", "smem_per_cta_max_bytes", "exceeds"]),
    (("smem_per_cta_max_bytes =", "smem_per_cta_maxbytes ="), ["hardware_zip.smem_per_cta_maxbytes"]),
    (("smem_per_sm_bytes = [65536, 131072, 262144]", "hbm_bandwidth_bytes_per_s = [1e12, 2e12, 3e12]"),
     ["hardware_zip.hbm_bandwidth_bytes_per_s", "also in hardware_sweep"]),
    (("kind = \"io_law\"", "kind = \"io_laws\""), ["plots[0].kind", "io_law"]),
])
def test_hardware_zip_errors_name_file_and_key(tmp_path, change, words):
    path = tmp_path / "zip.toml"
    path.write_text(ZIP.replace(*change))
    with pytest.raises(InputError) as info:
        load_scenario(path)
    message = str(info.value)
    assert str(path) in message
    for word in words:
        assert word in message


def small_zip(tmp_path: Path) -> Path:
    path = tmp_path / "zip.toml"
    path.write_text(ZIP.replace("[2.0e12, 4.8e12]", "[4.8e12]").replace("seq_len = 512", "seq_len = 256"))
    return path


def test_scenario_dispatches_the_what_if_kinds(tmp_path):
    scenario = load_scenario(small_zip(tmp_path))
    rows = [result_row(p, r) for p, r in zip(scenario.points, run_points(scenario.points))]
    figures = scenario_figures(scenario, rows)
    assert set(figures) == {"law", "roof", "bars"}
    assert figures["law"]._suptitle.get_text().startswith("SMEM what-if on h200")
    assert figures["roof"].axes[0].get_title() == "Roofline on h200* (3 hardware variants)"
    assert [ax.get_title("left") for ax in figures["bars"].axes] == ["fa1"]
    assert [t.get_text() for t in figures["bars"].axes[0].get_xticklabels()] == \
        ["SMEM/SM 64 KiB", "SMEM/SM 128 KiB", "SMEM/SM 256 KiB"]


@pytest.mark.slow
def test_gpusim_run_writes_the_what_if_figures(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(small_zip(tmp_path)), "--out", str(out)]) == 0
    capsys.readouterr()
    for stem in ("law", "roof", "bars"):
        for ext in ("png", "svg"):
            assert (out / f"{stem}.{ext}").stat().st_size > 1000


@pytest.mark.parametrize("name, points, kernels", [
    ("what_if_hbm_bandwidth", 6 * 9, {"naive", "fa2", "flash_decoding"}),
    ("what_if_smem", 10 * 2, {"fa1", "fa2"}),
])
def test_bundled_what_if_scenarios_load(name, points, kernels):
    scenario = load_scenario(REPO / "scenarios" / f"{name}.toml")
    assert len(scenario.points) == points
    assert {p.kernel for p in scenario.points} == kernels
    assert scenario.description and all(p.get("title") for p in scenario.plots)
    if name == "what_if_smem":
        sizes = sorted({p.hardware.smem_per_sm_bytes for p in scenario.points})
        assert sizes[0] == 64 * 1024 and sizes[-1] == 1024 * 1024
        assert all(p.hardware.smem_per_cta_max_bytes == p.hardware.smem_per_sm_bytes - 1024 for p in scenario.points)
    else:
        assert sorted({p.hardware.hbm_bandwidth_bytes_per_s for p in scenario.points}) == \
            [2.0e12, 3.35e12, 4.8e12, 8e12, 12e12, 16e12]
        assert all(math.isclose(p.hardware.sm_clock_hz, 1.98e9) for p in scenario.points)
