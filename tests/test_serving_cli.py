"""`gpusim offload` and `gpusim tp`, run in-process: JSON keys, --out files, and the bad-input contract
(exit 2, one `gpusim: error:` line, no output folder)."""

from __future__ import annotations

import csv
import json

import pytest

from gpusim.cli import main
from helpers import assert_bad_cli_input

OFFLOAD = ["offload", "--model", "llama3-8b", "--hardware", "h200", "--batch", "1", "--seq-len", "8192",
           "--fractions", "0,0.5", "--keep", "1,0.25"]
TP = ["tp", "--model", "llama3-70b", "--hardware", "h200", "--batch", "2", "--seq-len", "1024", "--degrees", "1,8,16"]


def run_json(capsys, argv: list[str]) -> dict:
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert err == ""
    return json.loads(out)


def test_offload_json_keys(capsys):
    data = run_json(capsys, OFFLOAD + ["--json"])
    assert set(data) == {"offload", "eviction"}
    off, ev = data["offload"], data["eviction"]
    assert {"model", "hardware", "batch", "context_len", "kv_bytes_total", "kv_budget_bytes",
            "min_offload_fraction", "rows"} <= set(off)
    assert [r["offload_fraction"] for r in off["rows"]] == [0.0, 0.5]
    assert {"pcie_s_per_layer", "step_serial_s", "step_overlapped_s"} <= set(off["rows"][0])
    # nothing on the host: no PCIe; half on the host: the step takes longer
    assert off["rows"][0]["pcie_s_per_layer"] == 0 < off["rows"][1]["pcie_s_per_layer"]
    assert off["rows"][1]["step_overlapped_s"] > off["rows"][0]["step_overlapped_s"]
    assert [r["kept_fraction"] for r in ev["rows"]] == [1.0, 0.25]
    assert {"kept_tokens", "step_s", "speedup", "eviction_error", "recent_error", "kernel_error"} <= set(ev["rows"][0])
    assert ev["rows"][0]["eviction_error"] == 0 < ev["rows"][1]["eviction_error"]


def test_tp_json_reports_indivisible_degree_per_row(capsys):
    data = run_json(capsys, TP + ["--json"])
    assert {"model", "hardware", "batch", "seq_len", "replicate", "rows"} <= set(data)
    rows = {r["tp"]: r for r in data["rows"]}
    assert rows[1]["error"] == rows[8]["error"] == ""
    assert {"kv_bytes_per_gpu", "attention_s_per_layer", "replication", "speedup"} <= set(rows[8])
    assert rows[8]["kv_bytes_per_gpu"] * 8 == rows[1]["kv_bytes_per_gpu"]
    assert "8 KV heads" in rows[16]["error"] and "kv_bytes_per_gpu" not in rows[16]
    rows = {r["tp"]: r for r in run_json(capsys, TP + ["--json", "--replicate"])["rows"]}
    assert rows[16]["replication"] == 2.0 and rows[16]["kv_bytes_per_gpu"] == rows[8]["kv_bytes_per_gpu"]


def test_out_writes_files(capsys, tmp_path):
    out = tmp_path / "off"
    assert main(OFFLOAD + ["--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["offload.csv", "offload_eviction.png", "offload_eviction.svg",
                                                     "summary.json"]
    with open(out / "offload.csv") as fh:
        assert [r["sweep"] for r in csv.DictReader(fh)] == ["offload", "offload", "eviction", "eviction"]
    assert set(json.loads((out / "summary.json").read_text())) == {"offload", "eviction"}
    out = tmp_path / "tp"
    assert main(TP + ["--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["summary.json", "tensor_parallel.png", "tensor_parallel.svg",
                                                     "tp.csv"]
    with open(out / "tp.csv") as fh:
        assert [r["tp"] for r in csv.DictReader(fh)] == ["1", "8", "16"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]     # no staging folder left


@pytest.mark.parametrize("argv", [
    OFFLOAD[:1] + ["--model", "no-such-model"] + OFFLOAD[3:],
    TP[:1] + ["--model", "no-such-model"] + TP[3:],
    OFFLOAD + ["--fractions", "0,x"],
    OFFLOAD + ["--keep", "0"],
    TP + ["--degrees", "3"],                        # 64 query heads: not divisible, not even with --replicate
    TP + ["--degrees", "16"],                       # --out needs one computed degree
    TP[:-1] + ["0"],
])
def test_bad_input_exits_2_without_folder(capsys, tmp_path, argv):
    assert_bad_cli_input(main, capsys, tmp_path, argv)
