"""Scenario files through `gpusim run`: a valid scenario writes CSV, JSON and figures; a bad one is one error
line naming the file and the key, exit 2, and leaves no output folder behind."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from gpusim.cli import main
from gpusim.errors import InputError
from gpusim.scenario import load_scenario

REPO = Path(__file__).resolve().parents[1]

VALID = """
name = "tiny"
description = "fa2 at two sequence lengths"

[hardware]
preset = "h200"
set = { hbm_latency_cycles = 600 }

[[runs]]
kernel = "fa2"
batch = 1
heads = 4
seq_len = [256, 512]
head_dim = 64
options = { fa2 = { block_n = 64 } }

[[plots]]
x = "seq_len"
y = ["time_s", "hbm_bytes"]
series = "kernel"
logx = true
file = "tiny_plot"
"""


def write(tmp_path: Path, text: str, name: str = "scenario.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def run_bad(capsys, scenario: Path, out: Path) -> str:
    assert main(["run", str(scenario), "--out", str(out)]) == 2
    stdout, err = capsys.readouterr()
    assert stdout == ""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("gpusim: error: ")
    assert not out.exists()  # no partial output
    return lines[0]


# ---------------------------------------------------------------------------------------------- a valid scenario
def test_valid_scenario_writes_csv_json_and_figures(tmp_path, capsys):
    scenario = write(tmp_path, VALID)
    out = tmp_path / "results" / "tiny"
    assert main(["run", str(scenario), "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "wrote" in stdout and "1 figure" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["results.csv", "results.json", "tiny_plot.png", "tiny_plot.svg"]
    assert (out / "tiny_plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in (out / "tiny_plot.svg").read_text()

    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [(r["kernel"], r["seq_len"]) for r in rows] == [("fa2", "256"), ("fa2", "512")]
    assert all(r["hardware"] == "h200*" for r in rows)
    assert all(float(r["time_s"]) > 0 for r in rows)
    assert float(rows[1]["time_s"]) > float(rows[0]["time_s"])
    assert all(r["info_block_n"] == "64" for r in rows)

    data = json.loads((out / "results.json").read_text())
    assert data["scenario"] == "tiny"
    assert len(data["rows"]) == len(data["results"]) == 2
    assert data["results"][0]["kernel"] == "fa2"
    assert data["results"][1]["flops"] == 4 * 4 * 64 * 512 * 512
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_rerun_replaces_the_output_folder(tmp_path, capsys):
    scenario = write(tmp_path, VALID)
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    assert main(["run", str(scenario), "--out", str(out)]) == 0
    capsys.readouterr()
    assert not (out / "stale.txt").exists()
    assert (out / "results.csv").exists()


def test_hardware_sweep_is_a_grid(tmp_path):
    text = VALID.replace("[[runs]]", "[hardware_sweep]\nhbm_bandwidth_bytes_per_s = [2.4e12, 4.8e12]\n\n[[runs]]")
    scenario = load_scenario(write(tmp_path, text))
    assert len(scenario.points) == 4
    assert [p.coords["hbm_bandwidth_bytes_per_s"] for p in scenario.points] == [2.4e12, 2.4e12, 4.8e12, 4.8e12]
    assert [p.hardware.hbm_bandwidth_bytes_per_s for p in scenario.points] == [2.4e12, 2.4e12, 4.8e12, 4.8e12]
    assert all(p.hardware.hbm_latency_cycles == 600 for p in scenario.points)  # [hardware] set applies too
    assert scenario.output_dir == Path("results") / "tiny"


def test_scenario_defaults(tmp_path):
    text = '[[runs]]\nkernel = "copy"\nbytes = [4096, 8192]\n'
    scenario = load_scenario(write(tmp_path, text, "copies.toml"))
    assert scenario.name == "copies"
    assert {p.l2_start for p in scenario.points} == {"empty"}
    assert [p.problem.bytes for p in scenario.points] == [4096, 8192]
    assert scenario.points[0].hardware.name == "h200"
    assert scenario.points[0].options == {"chunk_bytes": 16384, "stages": 4}


# ---------------------------------------------------------------------------------------------- bad scenarios
BAD = [
    ("unknown top-level key", VALID.replace('name = "tiny"', 'name = "tiny"\nrepeat = 3'), ["repeat"]),
    ("unknown key in runs", VALID.replace("head_dim = 64", "head_dim = 64\nheadz = 8"), ["runs[0].headz"]),
    ("unknown hardware key", VALID.replace('preset = "h200"', 'preset = "h200"\ncolor = "green"'),
     ["hardware.color"]),
    ("unknown hardware.set field", VALID.replace("hbm_latency_cycles = 600", "hbm_latency_cycle = 600"),
     ["hardware.set", "hbm_latency_cycle", "did you mean hbm_latency_cycles"]),
    ("impossible hardware value", VALID.replace("hbm_latency_cycles = 600", "sm_count = 0"),
     ["hardware.set", "sm_count", "must be positive"]),
    ("unreadable hardware value", VALID.replace("hbm_latency_cycles = 600", 'has_tma = "sometimes"'),
     ["hardware.set", "has_tma", "sometimes"]),
    ("tma without a window", VALID.replace('preset = "h200"', 'preset = "a100"')
     .replace("hbm_latency_cycles = 600", "has_tma = true"), ["hardware.set", "tma_max_inflight_bytes", "has_tma"]),
    ("unknown preset", VALID.replace('preset = "h200"', 'preset = "h999"'), ["hardware.preset", "h999"]),
    ("negative seq_len", VALID.replace("seq_len = [256, 512]", "seq_len = [256, -512]"),
     ["runs[0]", "seq_len=-512", "must be positive"]),
    ("zero batch", VALID.replace("batch = 1", "batch = 0"), ["runs[0]", "batch=0", "must be positive"]),
    ("fractional heads", VALID.replace("heads = 4", "heads = 4.5"), ["runs[0]", "heads=4.5", "whole number"]),
    ("kv_heads not dividing heads", VALID.replace("heads = 4", "heads = 4\nkv_heads = 3"),
     ["runs[0]", "kv_heads=3"]),
    ("unknown kernel", VALID.replace('kernel = "fa2"', 'kernel = "fa9"').replace("fa2 = {", "fa9 = {"),
     ["runs[0].kernel", "unknown kernel 'fa9'"]),
    ("unknown kernel option", VALID.replace("block_n = 64", "block_z = 64"),
     ["runs[0].kernel", "unknown option 'block_z'"]),
    ("options for a kernel not run", VALID.replace("fa2 = {", "fa3 = {"), ["runs[0].options.fa3"]),
    ("field of another problem type", VALID.replace("head_dim = 64", "head_dim = 64\nm = 128"),
     ["runs[0].m", "AttentionProblem"]),
    ("no runs", VALID[:VALID.index("[[runs]]")], ["[[runs]]"]),
    ("unknown plot key", VALID.replace("logx = true", "logx = true\ncolour = 'red'"), ["plots[0].colour"]),
    ("unknown plot kind", VALID.replace("logx = true", "logx = true\nkind = 'pie'"), ["plots[0].kind", "pie"]),
    ("impossible sweep value", VALID.replace("[[runs]]", "[hardware_sweep]\nsm_count = [66, 0]\n\n[[runs]]"),
     ["hardware_sweep", "sm_count=0", "must be positive"]),
    ("unknown sweep field", VALID.replace("[[runs]]", "[hardware_sweep]\nhbm_speed = [1, 2]\n\n[[runs]]"),
     ["hardware_sweep.hbm_speed"]),
    ("not TOML", "name = \n", ["not valid TOML"]),
    ("unknown l2_start", VALID.replace('name = "tiny"', 'name = "tiny"\nl2_start = "dirty"'),
     ["l2_start='dirty'", "empty, flushed"]),
]


@pytest.mark.parametrize("text, names", [(text, names) for _, text, names in BAD], ids=[case for case, _, _ in BAD])
def test_bad_scenario_names_file_and_key_and_writes_nothing(tmp_path, capsys, text, names):
    scenario = write(tmp_path, text, "bad.toml")
    line = run_bad(capsys, scenario, tmp_path / "out")
    assert str(scenario) in line
    for name in names:
        assert name in line, f"{name!r} not in {line!r}"


def test_a_point_that_does_not_fit_is_reported_not_fatal(tmp_path, capsys):
    # the tiles do not fit in shared memory: found only when the plan is built; in a sweep such a point
    # becomes a row saying why (a hypothetical GPU may not fit every size), the other points still run
    scenario = write(tmp_path, VALID.replace("block_n = 64", "block_m = 4096"))
    out = tmp_path / "out"
    assert main(["run", str(scenario), "--out", str(out)]) == 0
    capsys.readouterr()
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert rows and all("shared memory" in row["does_not_fit"] for row in rows)


def test_simulate_of_a_tile_that_does_not_fit_is_an_error(capsys):
    code = main(["simulate", "--kernel", "fa2", "--batch", "1", "--heads", "1", "--seq-len", "256", "--head-dim", "64",
                 "--option", "block_m=4096"])
    assert code == 2
    assert "shared memory" in capsys.readouterr().err


def test_a_failed_run_keeps_the_previous_results(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(write(tmp_path, VALID)), "--out", str(out)]) == 0
    capsys.readouterr()
    before = (out / "results.csv").read_text()
    bad = write(tmp_path, VALID.replace("seq_len = [256, 512]", "seq_len = -1"), "bad.toml")
    assert main(["run", str(bad), "--out", str(out)]) == 2
    capsys.readouterr()
    assert (out / "results.csv").read_text() == before


def test_load_scenario_raises_input_error(tmp_path):
    with pytest.raises(InputError, match=r"bad.toml: unknown key runs\[0\].headz"):
        load_scenario(write(tmp_path, VALID.replace("head_dim = 64", "head_dim = 64\nheadz = 8"), "bad.toml"))


# ---------------------------------------------------------------------------------------------- bundled scenarios
def test_quickstart_scenario_runs(tmp_path, capsys):
    pytest.importorskip("gpusim.kernels.naive", reason="the naive kernel is not built yet")
    out = tmp_path / "quickstart"
    assert main(["run", str(REPO / "scenarios" / "quickstart.toml"), "--out", str(out)]) == 0
    capsys.readouterr()
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {r["kernel"] for r in rows} == {"naive", "fa2"}
    assert len(rows) == 8
    assert (out / "quickstart.png").exists() and (out / "quickstart.svg").exists()


@pytest.mark.parametrize("path", sorted((REPO / "scenarios").glob("*.toml")), ids=lambda p: p.name)
def test_bundled_scenarios_load(path):
    try:
        scenario = load_scenario(path)
    except InputError as exc:
        if "is not built yet" in str(exc):
            pytest.skip(str(exc))
        raise
    assert scenario.points


def test_l2_start_reaches_every_point_and_its_cache_key(tmp_path):
    from gpusim import cache

    text = 'l2_start = "flushed"\n[[runs]]\nkernel = "copy"\nbytes = [4096, 8192]\n'
    points = load_scenario(write(tmp_path, text, "flushed.toml")).points
    assert {p.l2_start for p in points} == {"flushed"}
    p = points[0]
    keys = {cache.point_key(p.kernel, p.problem, p.hardware, p.options, p.exact, start)
            for start in ("empty", "flushed")}
    assert len(keys) == 2
