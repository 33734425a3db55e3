"""Chrome / Perfetto trace export (open in ui.perfetto.dev or chrome://tracing)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from gpusim.result import Result


def trace_events(result: Result, sm_clock_hz: float | None = None) -> list[dict]:
    """Trace-event-format 'X' events: one process per SM (and one, pid -1, for the HBM shared by all SMs),
    one thread per unit; times in microseconds."""
    if result.trace is None:
        raise ValueError("result has no trace: simulate with trace=True")
    clock = sm_clock_hz or result.info.get("sm_clock_hz") or 1.0
    us = 1e6 / clock
    events, named = [], set()
    for name, sm, unit, start, duration in result.trace:
        if (sm, unit) not in named:
            named.add((sm, unit))
            events.append({"ph": "M", "name": "thread_name", "pid": sm, "tid": unit, "args": {"name": unit}})
            label = ("HBM (shared by all SMs)" if sm == -1 else
                     f"SM {sm}" + (" (representative CTAs, folded)" if not result.exact else ""))
            events.append({"ph": "M", "name": "process_name", "pid": sm, "tid": unit, "args": {"name": label}})
        events.append({"ph": "X", "name": name, "cat": unit, "pid": sm, "tid": unit, "ts": start * us,
                       "dur": max(duration, 0.0) * us})
    return events


def write_trace(result: Result, path: str | Path) -> None:
    path = Path(path)
    payload = {"traceEvents": trace_events(result), "displayTimeUnit": "ns",
               "otherData": {"kernel": result.kernel, "hardware": result.hardware, "problem": result.problem,
                             "folded": not result.exact}}
    fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(payload, fh)
    os.replace(tmp, path)
