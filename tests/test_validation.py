"""`gpusim validate`: the bundled cases, the error table it writes, its exit status, and the suspect it names."""

from __future__ import annotations

import csv
import dataclasses
from types import SimpleNamespace

import pytest

from gpusim.cli import main
from gpusim.errors import InputError
from gpusim.problem import AttentionProblem
from gpusim.validation import CLOCK_CAPPED_TENSOR_BUSY, Case, load_cases, speedup_rows, suspect, summarize


def test_every_bundled_case_names_its_source_and_a_positive_measurement():
    cases = load_cases()
    assert {c.suite for c in cases} >= {"h200_prefill", "h200_decode", "h200_dram", "anchors"}
    assert all(c.source and c.measured > 0 for c in cases)


def test_times_measured_by_do_bench_start_from_its_flushed_l2_and_profiles_from_an_empty_one():
    starts = {}
    for c in load_cases():
        starts.setdefault((c.suite, c.metric), set()).add(c.l2_start)
    for suite in ("h200_prefill", "h200_decode", "h200_campaign_prefill", "h200_campaign_decode"):
        assert starts[(suite, "time_s")] == {"flushed"}, suite
    # Nsight Compute's profiles (its cache control empties the L2) and the papers' figures
    for key in (("h200_dram", "time_s"), ("h200_dram", "hbm_read_bytes"), ("h200_campaign_dram", "time_s"),
                ("h200_ncu_cycles", "kernel_cycles"), ("anchors", "flops_per_s")):
        assert starts[key] == {"empty"}, key


def test_unknown_suite_is_an_input_error():
    with pytest.raises(InputError, match="no cases match suite='nope'"):
        load_cases("nope")


def _case(metric="time_s", measured=1e-3, seq_len=4096, causal=False, suite="h200_campaign_prefill",
          kv_len=None) -> Case:
    problem = AttentionProblem(batch=1, heads=16, seq_len=seq_len, kv_len=kv_len, head_dim=128, causal=causal)
    return Case(suite, "h200", "fa2", "flash", problem, {}, metric, measured, "test")


def _result(tensor_busy: float):
    return SimpleNamespace(unit_busy={"tensor": tensor_busy, "hbm": 0.2}, bound="compute", busiest_unit="tensor")


def test_suspects_name_the_measured_mechanisms_of_known_misses():
    fast = _result(0.5)
    assert "instruction fetch" in suspect(_case(seq_len=512, causal=True), fast, -0.25)
    assert "instruction fetch" not in suspect(_case(seq_len=2048, causal=True), fast, -0.25)
    assert "instruction fetch" not in suspect(_case(seq_len=512, causal=True), fast, +0.25)  # slow: not a fetch stall
    assert "burst" in suspect(_case(seq_len=1, kv_len=1024, measured=3e-5), fast, -0.22)
    capped = _result(0.5)
    capped.info = {"board_power_w": 690.0}
    assert "Nsight Compute replays" in suspect(_case(suite="h200_campaign_dram"), capped, +0.2)
    assert "Nsight Compute replays" not in suspect(_case(), capped, +0.2)  # do_bench timings: sustained calls
    # runs 38-40: a short backward's fixed costs, and cuDNN's backward CTA's fixed cost and pace
    backward = AttentionProblem(batch=32, heads=16, seq_len=512, head_dim=128, pass_="bwd")
    fa2_bwd = Case("h200_campaign_prefill", "h200", "fa2", "flash", backward, {}, "time_s", 1e-3, "test")
    cudnn_bwd = Case("h200_ncu_cycles", "h200", "fa3", "cudnn", backward, {}, "kernel_cycles", 1e6, "test")
    assert "backward fixed costs" in suspect(fa2_bwd, fast, -0.12)
    assert "fixed cost per CTA" in suspect(cudnn_bwd, fast, -0.2)
    assert "backward pace" in suspect(cudnn_bwd, fast, +0.12)
    assert "backward" not in suspect(fa2_bwd, fast, +0.12)
    short_causal = Case("h200_ncu_cycles", "h200", "fa2", "flash",
                        AttentionProblem(batch=32, heads=16, seq_len=512, head_dim=128, causal=True, pass_="bwd"),
                        {}, "kernel_cycles", 1e6, "test")
    assert "backward fixed costs" in suspect(short_causal, fast, -0.15)  # the fetch suspect is the forward's
    # run 43: FA2's causal forward on the H200 whose K/V per head is at about the L2's capacity, and nothing else
    causal_reads = _case(metric="hbm_read_bytes", seq_len=32768, causal=True, suite="h200_campaign_dram_heads")
    assert "re-read more than modelled" in suspect(causal_reads, fast, -0.3)
    assert "kept by the GPU's L2" in suspect(causal_reads, fast, +0.3)
    causal_32k = AttentionProblem(batch=1, heads=16, seq_len=32768, head_dim=128, causal=True)
    others = [_case(metric="hbm_read_bytes", seq_len=32768),  # not causal
              _case(metric="hbm_read_bytes", seq_len=4096, causal=True),  # K/V well inside the L2
              _case(metric="hbm_read_bytes", seq_len=131072, causal=True),  # streamed: 2.2 times the L2
              _case(metric="hbm_write_bytes", seq_len=32768, causal=True),
              Case("h200_campaign_dram", "h200", "fa3", "cudnn", causal_32k, {}, "hbm_read_bytes", 1e8, "test"),
              Case("h200_campaign_dram", "h200", "fa2", "flash", dataclasses.replace(causal_32k, pass_="bwd"), {},
                   "hbm_read_bytes", 1e8, "test"),
              Case("h100_dram", "h100", "fa2", "flash", causal_32k, {}, "hbm_read_bytes", 1e8, "test")]
    for other in others:
        assert "causal K/V walks" not in suspect(other, fast, -0.3), other
    fa1_anchor = Case("anchors", "a100-40gb", "fa1", "flashattention", backward, {}, "time_s", 1e-2, "test")
    assert "FA2's CTA" not in suspect(fa1_anchor, fast, -0.15)


def test_suspects_follow_what_bounds_the_miss():
    assert suspect(_case(), _result(0.5), -0.05) == ""  # within 10%: nothing to explain
    assert "host-bound" in suspect(_case(measured=20e-6), _result(0.5), -0.2)
    assert "SM clock" in suspect(_case(), _result(CLOCK_CAPPED_TENSOR_BUSY), -0.2)
    capped = _result(CLOCK_CAPPED_TENSOR_BUSY)
    capped.info = {"board_power_w": 690.0}  # a preset whose clock follows its power cap: not the suspect
    assert "SM clock" not in suspect(_case(), capped, -0.2)
    assert "busiest unit tensor" in suspect(_case(), _result(CLOCK_CAPPED_TENSOR_BUSY), +0.2)  # slow: not the clock
    # run 55: FA2's long forwards under-read where its partners on an SM move apart faster than the model's (mma.sync)
    assert "move apart" in suspect(_case("hbm_read_bytes", seq_len=65536), _result(0.5), -0.3)
    assert "run 55" in suspect(_case("hbm_read_bytes", seq_len=131072), _result(0.5), -0.3)
    assert "partner_passes" in suspect(_case("hbm_read_bytes", seq_len=131072), _result(0.5), +0.3)
    cudnn = Case("h200_campaign_dram", "h200", "fa3", "cudnn", _case(seq_len=131072).problem, {}, "hbm_read_bytes",
                 1e9, "test")
    assert "mma.sync" not in suspect(cudnn, _result(0.5), -0.3)  # FA2's partners are not cuDNN's suspect
    assert "runs 31-32" in suspect(cudnn, _result(0.5), -0.3)
    assert "run 31" in suspect(cudnn, _result(0.5), +0.3)  # cuDNN's d = 64 forward stays in step
    # run 56: short launches' CTAs read K/V in step, and the L2 merges their lookups
    assert "merged" in suspect(_case("l2_tag_bytes", seq_len=4096), _result(0.5), +0.5)
    assert "merged" not in suspect(_case("l2_tag_bytes", seq_len=4096), _result(0.5), -0.2)


def test_summary_gates_only_suites_with_a_tolerance():
    rows = [{"suite": "h200_prefill", "kernel": "fa2", "metric": "time_s", "error": e} for e in (0.05, -0.08, 0.3)]
    rows += [{"suite": "anchors", "kernel": "fa2", "metric": "time_s", "error": 0.5}]
    by_suite = {s["suite"]: s for s in summarize(rows)}
    assert by_suite["h200_prefill"]["gated"] and not by_suite["h200_prefill"]["pass"]  # worst 30% > 25%
    assert by_suite["h200_prefill"]["median_abs_error"] == pytest.approx(0.08)
    assert not by_suite["anchors"]["gated"] and by_suite["anchors"]["pass"]


def test_host_bound_reference_rows_are_shown_but_not_gated():
    rows = [{"suite": "h200_decode", "kernel": "flash_decoding", "impl": "triton_splitk", "metric": "time_s",
             "error": e, "gated": g} for e, g in ((0.02, True), (-0.05, True), (-0.9, False))]
    (group,) = summarize(rows)
    assert group["pass"] and group["cases"] == 2 and group["host_bound"] == 1
    assert group["worst_abs_error"] == pytest.approx(0.05)
    case = _case(measured=238e-6)
    case.remeasured = 21e-6  # the same kernel replayed in a CUDA graph: the reference timed the host
    assert case.host_bound and "host-bound" in suspect(case, _result(0.1), -0.9)
    case.remeasured = 200e-6
    assert not case.host_bound


def test_triton_no_split_decode_rows_are_judged_by_issue_3s_tolerance():
    rows = [{"suite": "h200_decode", "kernel": "fa2", "impl": "triton_nosplit", "metric": "time_s", "error": e}
            for e in (0.15, 0.18, 0.02)]
    (group,) = summarize(rows)
    assert group["tolerance"] == (0.20, 0.25) and group["pass"]
    rows = [dict(r, impl="flash") for r in rows]
    (group,) = summarize(rows)
    assert group["tolerance"] == (0.10, 0.25) and not group["pass"]


def test_fa3_speedup_over_fa2_is_derived_per_problem_and_gated_at_issue_4s_15_percent():
    def timed(kernel, impl, problem, measured, predicted, gated=True):
        return {"suite": "h200_prefill", "hardware": "h200", "kernel": kernel, "impl": impl, "problem": problem,
                "metric": "time_s", "measured": measured, "predicted": predicted,
                "error": predicted / measured - 1, "gated": gated, "source": "s"}
    rows = [timed("fa3", "cudnn", "P1", 2.0, 1.8), timed("fa2", "flash", "P1", 3.0, 3.1),
            timed("fa3", "cudnn", "P2", 1.0, 1.0), timed("fa2", "flash", "P2", 1.5, 1.5),
            timed("fa2", "flash", "P3", 1.0, 1.0)]  # no fa3 row: no speed-up
    derived = {r["problem"]: r for r in speedup_rows(rows)}
    assert set(derived) == {"P1", "P2"}
    assert derived["P1"]["measured"] == pytest.approx(1.5) and derived["P1"]["predicted"] == pytest.approx(3.1 / 1.8)
    assert derived["P1"]["error"] == pytest.approx(3.1 / 1.8 / 1.5 - 1)  # +14.8%
    assert "fa3 -10.0%" in derived["P1"]["suspect"] and "fa2 +3.3%" in derived["P1"]["suspect"]
    (group,) = summarize(list(derived.values()))
    assert group["kernel"] == "fa3/fa2" and group["tolerance"] == (0.15, 0.15) and group["pass"]
    rows[0] = timed("fa3", "cudnn", "P1", 2.0, 1.75)  # +18%: past the tolerance on one problem
    (group,) = summarize(speedup_rows(rows))
    assert not group["pass"]


def test_validate_writes_the_error_table_and_fails_past_the_tolerance(tmp_path, monkeypatch):
    from gpusim import validation

    monkeypatch.setattr(validation, "IMPL_TOLERANCES", {("h200", "triton_nosplit", "time_s"): (0.001, 0.001)})
    out = tmp_path / "validation"
    status = main(["validate", "--suite", "h200_decode", "--kernel", "fa2", "--out", str(out)])
    assert status == 1
    rows = list(csv.DictReader(open(out / "validation.csv")))
    assert len(rows) == 5 and all(r["kernel"] == "fa2" for r in rows)
    assert (out / "parity_time_s.png").exists() and (out / "summary.csv").exists()


def test_the_bundled_cases_are_what_build_cases_builds():
    # the CSV is generated; a change to validation/build_cases.py (a kernel option of a measured row) must be
    # followed by `python validation/build_cases.py`, or validate keeps simulating the old options
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("build_cases", root / "validation" / "build_cases.py")
    build_cases = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_cases)
    bundled = list(csv.DictReader(open(root / "gpusim" / "data" / "validation_cases.csv")))
    built = [{k: str(v) for k, v in row.items()} for row in build_cases.all_rows()]
    assert len(bundled) == len(built)
    for have, want in zip(bundled, built):
        assert {k: have[k] for k in ("suite", "kernel", "impl", "options")} == \
            {k: want[k] for k in ("suite", "kernel", "impl", "options")}
