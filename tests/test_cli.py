"""The `gpusim` command, run in-process: output contracts of hardware, microbench and simulate, and the
bad-input contract (exit 2, one line `gpusim: error: ...` naming the field, no traceback)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from gpusim.cli import main
from gpusim.hardware import PRESETS, HardwareSpec, get_preset

SIMULATE_KEYS = {"kernel", "hardware", "time_s", "flops", "tflops_per_s", "hbm_read_bytes", "hbm_write_bytes",
                 "l2_read_bytes", "l2_write_bytes", "bound", "sim_wall_s"}
SMALL_FA2 = ["simulate", "--kernel", "fa2", "--batch", "1", "--heads", "4", "--seq-len", "512", "--head-dim", "64"]


def run_json(capsys, argv: list[str]) -> dict:
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert err == ""
    return json.loads(out)


def run_error(capsys, argv: list[str]) -> str:
    """Run a command that must fail on bad input; return its one error line."""
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("gpusim: error: ")
    return lines[0]


# ---------------------------------------------------------------------------------------------- hardware
def test_hardware_list_names_every_preset(capsys):
    assert main(["hardware", "list"]) == 0
    out = capsys.readouterr().out
    listed = {line.split()[0] for line in out.splitlines() if line.strip()}
    assert listed == set(PRESETS) >= {"a100", "h100", "h200", "b200"}


def test_hardware_list_json(capsys):
    data = run_json(capsys, ["hardware", "list", "--json"])
    assert set(data) == set(PRESETS)
    assert "H200" in data["h200"]


def test_hardware_show_prints_every_field(capsys):
    assert main(["hardware", "show", "h200"]) == 0
    out = capsys.readouterr().out
    names = [f.name for f in dataclasses.fields(HardwareSpec) if f.name != "sources"]
    missing = [name for name in names if name not in out]
    assert not missing
    assert "B/s" in out and "cycles" in out  # units
    assert "anchors.md" in out  # sources


def test_hardware_show_json_applies_overrides(capsys):
    data = run_json(capsys, ["hardware", "show", "h200", "--json", "--set", "smem_per_sm_bytes=466944",
                             "--set", "smem_per_cta_max_bytes=465920"])
    assert data["smem_per_sm_bytes"] == 466944
    assert data["name"] == "h200*"
    assert data["sm_count"] == get_preset("h200").sm_count


# ---------------------------------------------------------------------------------------------- microbench
def test_microbench_copy_json(capsys):
    data = run_json(capsys, ["microbench", "copy", "--bytes", str(2**24), "--json"])
    assert data["bench"] == "copy" and data["hardware"] == "h200" and data["bytes"] == 2**24
    assert data["time_s"] > 0
    assert 0 < data["bytes_per_s"] <= 2 * 4.8e12
    assert data["sms"] == 132


def test_microbench_copy_on_few_sms_is_slower(capsys):
    full = run_json(capsys, ["microbench", "copy", "--bytes", str(2**24), "--json"])
    few = run_json(capsys, ["microbench", "copy", "--bytes", str(2**24), "--sms", "4", "--json"])
    assert few["sms"] == 4
    assert few["bytes_per_s"] < full["bytes_per_s"] / 4


def test_microbench_gemm_json(capsys):
    data = run_json(capsys, ["microbench", "gemm", "--m", "1024", "--n", "1024", "--k", "1024", "--json"])
    assert data["bench"] == "gemm" and (data["m"], data["n"], data["k"]) == (1024, 1024, 1024)
    assert data["time_s"] > 0
    assert data["tflops_per_s"] == pytest.approx(2 * 1024**3 / data["time_s"] / 1e12)
    assert data["tflops_per_s"] < get_preset("h200").peak_tensor_flops_per_s("bf16") / 1e12


def test_microbench_gemm_fp8_on_another_preset(capsys):
    data = run_json(capsys, ["microbench", "gemm", "--m", "512", "--n", "512", "--k", "512", "--dtype", "fp8",
                             "--hardware", "h100", "--json"])
    assert data["hardware"] == "h100" and data["dtype"] == "fp8"
    assert data["tflops_per_s"] > 0


def test_microbench_table_output(capsys):
    assert main(["microbench", "copy", "--bytes", str(2**22)]) == 0
    out = capsys.readouterr().out
    assert "copy on h200" in out and "HBM bandwidth" in out


# ---------------------------------------------------------------------------------------------- simulate
def test_simulate_json_has_the_stable_contract(capsys):
    data = run_json(capsys, SMALL_FA2 + ["--json"])
    assert SIMULATE_KEYS <= set(data)
    assert data["kernel"] == "fa2" and data["hardware"] == "h200"
    assert data["flops"] == 4 * 1 * 4 * 64 * 512 * 512  # QK^T and PV over all pairs
    assert data["tflops_per_s"] == pytest.approx(data["flops"] / data["time_s"] / 1e12)
    assert data["hbm_read_bytes"] >= 3 * 4 * 512 * 64 * 2  # Q, K, V at least once
    assert data["l2_read_bytes"] >= data["hbm_read_bytes"]
    assert data["bound"] in ("compute", "memory", "latency", "exp")
    assert data["sim_wall_s"] > 0
    assert data["launches"][0]["ctas"] == 16


def test_simulate_with_every_flag(capsys, tmp_path):
    trace = tmp_path / "trace.json"
    data = run_json(capsys, ["simulate", "--hardware", "h100", "--set", "hbm_latency_cycles=700", "--kernel", "fa2",
                             "--option", "block_n=64", "--batch", "2", "--heads", "8", "--kv-heads", "2",
                             "--seq-len", "256", "--kv-len", "512", "--head-dim", "128", "--causal", "--dtype", "fp16",
                             "--exact", "--l2-start", "flushed", "--trace", str(trace), "--json"])
    assert data["hardware"] == "h100*"
    assert data["exact"] is True
    assert data["info"]["l2_start"] == "flushed" and data["hbm_write_bytes"] > 0
    assert data["info"]["block_n"] == 64
    assert "causal" in data["problem"] and "kvh=2" in data["problem"] and "L=512" in data["problem"]
    events = json.loads(trace.read_text())["traceEvents"]
    assert any(e["ph"] == "X" for e in events)


def test_simulate_table_output(capsys):
    assert main(SMALL_FA2) == 0
    out = capsys.readouterr().out
    assert "fa2 on h200" in out and "bound" in out


def test_same_command_same_json(capsys):
    first = run_json(capsys, SMALL_FA2 + ["--json"])
    second = run_json(capsys, SMALL_FA2 + ["--json"])
    first.pop("sim_wall_s")
    second.pop("sim_wall_s")
    assert first == second


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("argv, names", [
    (["hardware", "show", "h300"], ["unknown hardware preset", "h300"]),
    (["hardware", "show"], ["hardware show", "preset"]),
    (SMALL_FA2 + ["--hardware", "h300"], ["unknown hardware preset", "h300"]),
    (SMALL_FA2 + ["--set", "smem_per_sm_byte=1"], ["unknown hardware field", "smem_per_sm_byte",
                                                   "did you mean smem_per_sm_bytes"]),
    (SMALL_FA2 + ["--set", "sm_count=many"], ["sm_count", "cannot read 'many'"]),
    (SMALL_FA2 + ["--set", "sm_count=0"], ["sm_count", "must be positive"]),
    (SMALL_FA2 + ["--set", "hbm_bandwidth_bytes_per_s=-4.8e12"], ["hbm_bandwidth_bytes_per_s", "negative"]),
    (SMALL_FA2 + ["--hardware", "a100", "--set", "has_tma=true"],
     ["--set", "tma_max_inflight_bytes", "tma_bandwidth_bytes_per_clk", "has_tma"]),
    (SMALL_FA2 + ["--set", "sm_count"], ["--set", "sm_count", "FIELD=VALUE"]),
    (["microbench", "copy", "--set", "bogus=1"], ["unknown hardware field", "bogus"]),
    (["microbench", "copy", "--bytes", "0"], ["bytes", "must be positive"]),
    (["microbench", "copy", "--sms", "200"], ["sms=200"]),
    (["microbench", "gemm", "--m", "-8"], ["m=-8", "must be positive"]),
    (["simulate", "--kernel", "fa2", "--batch", "-1", "--heads", "4", "--seq-len", "512", "--head-dim", "64"],
     ["batch=-1", "must be positive"]),
    (["simulate", "--kernel", "fa2", "--batch", "0", "--heads", "4", "--seq-len", "512", "--head-dim", "64"],
     ["batch=0", "must be positive"]),
    (["simulate", "--kernel", "fa2", "--batch", "1", "--heads", "4", "--seq-len", "0", "--head-dim", "64"],
     ["seq_len=0", "must be positive"]),
    (["simulate", "--kernel", "fa2", "--batch", "1", "--heads", "4", "--seq-len", "-512", "--head-dim", "64"],
     ["seq_len=-512", "must be positive"]),
    (["simulate", "--kernel", "fa2", "--batch", "1", "--heads", "4", "--seq-len", "512", "--head-dim", "0"],
     ["head_dim=0", "must be positive"]),
    (SMALL_FA2 + ["--kv-heads", "3"], ["kv_heads=3", "heads=4", "multiple"]),
    (SMALL_FA2 + ["--kv-len", "256", "--causal"], ["causal", "seq_len", "kv_len"]),
    (["simulate", "--kernel", "fa9", "--batch", "1", "--heads", "4", "--seq-len", "512", "--head-dim", "64"],
     ["unknown kernel 'fa9'", "fa2"]),
    (SMALL_FA2 + ["--option", "bogus=1"], ["fa2", "unknown option 'bogus'", "block_m"]),
    (SMALL_FA2 + ["--option", "block_m=big"], ["fa2", "block_m", "cannot read 'big' as int"]),
    (SMALL_FA2 + ["--option", "block_m"], ["--option", "block_m", "=VALUE"]),
    (SMALL_FA2 + ["--dtype", "fp8"], ["fa2", "fp8"]),
    (SMALL_FA2 + ["--option", "block_m=4096"], ["shared memory"]),
    (["run", "/nonexistent/scenario.toml"], ["/nonexistent/scenario.toml", "no such scenario file"]),
], ids=lambda v: " ".join(v) if isinstance(v, list) and v and v[0] in ("hardware", "microbench", "simulate", "run")
    else None)
def test_bad_input_is_one_line_exit_2_naming_the_field(capsys, argv, names):
    line = run_error(capsys, argv)
    for name in names:
        assert name in line, f"{name!r} not in {line!r}"


def test_argparse_rejects_unknown_choices_with_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["microbench", "memset"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
