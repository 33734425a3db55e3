"""Timelines: `simulate(..., trace=True)` exports valid Chrome/Perfetto trace-event JSON with a process per SM
and a track for every unit that worked; folded runs say their CTAs are representatives; the CLI writes it."""

from __future__ import annotations

import json

import pytest

import gpusim
from gpusim.cli import main
from gpusim.problem import AttentionProblem
from gpusim.trace import trace_events, write_trace

SMALL = AttentionProblem(batch=1, heads=4, seq_len=512, head_dim=64)
#: Trace track (thread id) that shows each unit's work: loads of every path are drawn on the "tma" track,
#: vector ops with exponentials on "mufu" (FP32 work fused with them included), the rest on "fp32".
TRACKS_OF_UNIT = {"tensor": {"tensor"}, "mufu": {"mufu"}, "fp32": {"fp32", "mufu"}, "sm_load": {"tma"},
                  "cp_async": {"tma"}, "tma": {"tma"}}
X_KEYS = {"ph", "ts", "dur", "pid", "tid", "name"}


@pytest.fixture(scope="module", params=[True, False], ids=["exact", "folded"])
def traced(request):
    return gpusim.simulate("fa2", SMALL, "h200", exact=request.param, trace=True)


def load(path) -> dict:
    with open(path) as fh:
        return json.load(fh)


def complete_events(payload: dict) -> list[dict]:
    return [e for e in payload["traceEvents"] if e["ph"] == "X"]


def test_trace_file_is_trace_event_json(traced, tmp_path):
    path = tmp_path / "fa2.json"
    write_trace(traced, path)
    payload = load(path)
    assert isinstance(payload["traceEvents"], list)
    events = complete_events(payload)
    assert len(events) > 10
    for event in events:
        assert X_KEYS <= set(event)
        assert isinstance(event["pid"], int) and isinstance(event["tid"], str) and event["name"]
        assert event["ts"] >= 0 and event["dur"] >= 0
    assert payload["otherData"]["kernel"] == "fa2" and payload["otherData"]["folded"] is (not traced.exact)
    # times are microseconds of the simulated kernel: nothing ends after it, and the events span most of it
    end = max(e["ts"] + e["dur"] for e in events)
    assert traced.time_s * 1e6 * 0.5 < end <= traced.time_s * 1e6 * (1 + 1e-9)


def test_trace_has_two_sms_and_a_track_for_every_busy_unit(traced):
    events = trace_events(traced)
    x = [e for e in events if e["ph"] == "X"]
    assert len({e["pid"] for e in x}) >= 2
    tracks = {e["tid"] for e in x}
    assert {"tensor", "tma"} <= tracks and tracks & {"mufu", "fp32"}
    busy = [unit for unit, share in traced.unit_busy.items() if share > 0 and unit in TRACKS_OF_UNIT]
    assert {"tensor", "mufu"} <= set(busy)
    for unit in busy:
        assert TRACKS_OF_UNIT[unit] & tracks, unit
    # every (SM, track) with events is named, so Perfetto shows "SM k" / unit names
    named = {(e["pid"], e["tid"]) for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert {(e["pid"], e["tid"]) for e in x} <= named
    loads = [e for e in x if e["tid"] == "tma"]
    assert {"load Q", "load K", "load V"} <= {e["name"] for e in loads}


def test_folded_trace_says_its_ctas_are_representative(traced):
    names = {e["pid"]: e["args"]["name"] for e in trace_events(traced) if e["ph"] == "M" and e["name"] == "process_name"}
    assert names.pop(-1) == "HBM (shared by all SMs)"  # the HBM occupancy track
    assert names
    if traced.exact:
        assert not any("representative" in n for n in names.values())
    else:
        assert all("representative CTAs, folded" in n for n in names.values())


def test_trace_needs_trace_true():
    result = gpusim.simulate("fa2", SMALL, "h200")
    assert result.trace is None
    with pytest.raises(ValueError, match="trace=True"):
        trace_events(result)


def test_warp_specialized_trace_shows_loads_overlapping_mma():
    """FA3's producer warp keeps TMA loads in flight while the consumers multiply: on one SM some load
    interval overlaps some MMA interval (pipelining visible in the timeline)."""
    result = gpusim.simulate("fa3", AttentionProblem(batch=1, heads=4, seq_len=1024, head_dim=128), "h200",
                             exact=True, trace=True)
    x = [e for e in trace_events(result) if e["ph"] == "X" and e["pid"] == 0]
    loads = [e for e in x if e["tid"] == "tma" and e["name"].startswith("load")]
    mmas = [e for e in x if e["tid"] == "tensor"]
    overlapping = [(a, b) for a in loads for b in mmas if a["ts"] < b["ts"] + b["dur"] and b["ts"] < a["ts"] + a["dur"]]
    assert loads and mmas and overlapping


def test_cli_simulate_writes_the_trace(tmp_path, capsys):
    path = tmp_path / "cli.json"
    argv = ["simulate", "--kernel", "fa2", "--batch", "1", "--heads", "4", "--seq-len", "512", "--head-dim", "64",
            "--trace", str(path), "--json"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    payload = load(path)
    events = complete_events(payload)
    assert len({e["pid"] for e in events}) >= 2
    assert payload["otherData"]["folded"] is True and payload["otherData"]["kernel"] == printed["kernel"] == "fa2"
    assert max(e["ts"] + e["dur"] for e in events) <= printed["time_s"] * 1e6 * (1 + 1e-9)
    assert not list(tmp_path.glob("*.tmp"))  # written atomically, no temporary left behind
