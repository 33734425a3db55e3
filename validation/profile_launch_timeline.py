"""Where the time of a short attention call goes on an H200, kernel by kernel, as do_bench times it: the GPU
timeline (CUPTI, through torch.profiler) of each call after do_bench's L2 flush, eager and replayed from a CUDA
graph, and of calls issued back to back without a flush (issue #3: SDPA's decode at 8 sequences and 1k keys is
predicted 22% fast; the model charges a flat 4 us before every kernel).

For every case and mode the record keeps, per repeat, the flush's end, each kernel's start and end, and the
CUDA-event time do_bench would report; and the medians of: the gap from the flush's end to the first kernel,
each kernel's duration, the gaps between the call's kernels, and the event time.

Modes:
- `eager_flushed`: do_bench's loop (zero a 256 MB buffer, record the start event, call, record the end event).
- `graph_flushed`: the same over replays of a CUDA graph holding one call.
- `eager_back_to_back`, `graph_back_to_back`: 20 calls in a row, no flush, no events (a graph of 20 calls).

    python validation/profile_launch_timeline.py --out validation/data      (needs torch, triton and CUDA)

Writes `h200_profile_<date>_launch_timeline.json`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile

import measure_h200 as campaign
from ncu_profile import write_json

REPEATS = 30
BACK_TO_BACK = 20
FLUSH_BYTES = 256 * 1024 * 1024
DECODE = [("sdpa_flash", b, n) for b in (1, 8) for n in (1024, 4096, 16384)] + [("sdpa_flash", 64, 1024)] + \
         [("sdpa_cudnn", 8, 1024)] + [(impl, 8, n) for impl in ("nosplit", "splitk") for n in (1024, 4096)]
CASES = [{"kind": "empty", "grid": 132}] + \
        [{"kind": "decode", "impl": impl, "batch": b, "kv_len": n} for impl, b, n in DECODE] + \
        [{"kind": "naive", "batch": 1, "heads": 16, "seq_len": 1024, "head_dim": 64},
         {"kind": "prefill", "backend": "flash", "batch": 32, "heads": 32, "seq_len": 512, "head_dim": 64},
         {"kind": "prefill", "backend": "cudnn", "batch": 32, "heads": 32, "seq_len": 512, "head_dim": 64}]


def make_call(torch, case):
    """The callable of one case (its tensors allocated once)."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    kind = case["kind"]
    if kind == "empty":
        import triton
        import triton.language as tl

        @triton.jit
        def empty_kernel(out):
            tl.store(out + tl.program_id(0), 1)
        out = torch.empty(case["grid"], device="cuda", dtype=torch.int32)
        return lambda: empty_kernel[(case["grid"],)](out)
    if kind == "decode":  # sdpa_*: SDPA with that backend (the campaign's sdpa_flash rows are FLASH)
        calls = campaign.make_decode(case["batch"], case["kv_len"],
                                     torch.cuda.get_device_properties(0).multi_processor_count)
        if not case["impl"].startswith("sdpa"):
            return calls[case["impl"]]
        backend = campaign.flash_ctx if case["impl"] == "sdpa_flash" else campaign.cudnn_ctx

        def sdpa():
            with backend():
                return calls["sdpa"]()
        return sdpa
    shape = (case["batch"], case["heads"], case["seq_len"], case["head_dim"])
    q, k, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    if kind == "naive":
        return lambda: campaign.naive_attention(q, k, v)
    backend = SDPBackend.FLASH_ATTENTION if case["backend"] == "flash" else SDPBackend.CUDNN_ATTENTION

    def prefill():
        with sdpa_kernel([backend]):
            return F.scaled_dot_product_attention(q, k, v)
    return prefill


def gpu_activities(trace_path: str) -> list[dict]:
    """Kernels, memsets and copies of a torch.profiler Chrome trace, in start order (ts and dur in us)."""
    with open(trace_path) as f:
        events = json.load(f)["traceEvents"]
    kept = [e for e in events if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memset", "gpu_memcpy")]
    kept.sort(key=lambda e: e["ts"])
    return [{"name": e["name"][:160], "cat": e["cat"], "start_us": float(e["ts"]), "dur_us": float(e["dur"])}
            for e in kept]


def profiled(torch, body) -> list[dict]:
    """The GPU activities while `body()` runs (torch.profiler, CUDA activities)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        body()
        torch.cuda.synchronize()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        return gpu_activities(path)


def flushed_repeats(torch, call, flush) -> dict:
    """do_bench's loop under the profiler: per repeat, the flush's end, the call's kernels and the event time."""
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(REPEATS)]

    def body():
        for start, end in events:
            flush.zero_()
            start.record()
            call()
            end.record()
    acts = profiled(torch, body)
    is_flush = [a["dur_us"] > 30 and ("fill" in a["name"].lower() or a["cat"] == "gpu_memset") for a in acts]
    starts = [i for i, f in enumerate(is_flush) if f]
    if len(starts) != REPEATS:  # a call of the case's own that looks like the flush: repeats cannot be paired
        raise RuntimeError(f"found {len(starts)} L2 flushes in the timeline, expected {REPEATS}")
    repeats = []
    for r, i in enumerate(starts):
        stop = starts[r + 1] if r + 1 < len(starts) else len(acts)
        flush_end = acts[i]["start_us"] + acts[i]["dur_us"]
        kernels = [{"name": a["name"], "start_us": a["start_us"] - flush_end, "dur_us": a["dur_us"]}
                   for a in acts[i + 1:stop]]
        repeats.append({"kernels": kernels, "event_us": events[r][0].elapsed_time(events[r][1]) * 1e3})
    return summarize(repeats, first_gap_key="after_flush_us")


def back_to_back(torch, run_calls) -> dict:
    """Calls issued in a row: the kernels' timeline, grouped per call by the kernel count of one call."""
    acts = [a for a in profiled(torch, run_calls) if a["cat"] == "kernel"]
    first = acts[0]["start_us"] if acts else 0.0
    return {"kernels": [{"name": a["name"], "start_us": a["start_us"] - first, "dur_us": a["dur_us"]} for a in acts]}


def summarize(repeats: list[dict], first_gap_key: str) -> dict:
    """Medians over repeats of the first kernel's start, each kernel's duration, the gaps between kernels and
    the event time (repeats whose kernel count differs from the most common are dropped)."""
    counts = [len(r["kernels"]) for r in repeats]
    n = max(set(counts), key=counts.count) if counts else 0
    kept = [r for r in repeats if len(r["kernels"]) == n]
    med = lambda xs: statistics.median(xs) if xs else None  # noqa: E731
    per_kernel = []
    for k in range(n):
        gaps = [r["kernels"][k]["start_us"] - (r["kernels"][k - 1]["start_us"] + r["kernels"][k - 1]["dur_us"])
                for r in kept] if k else [r["kernels"][0]["start_us"] for r in kept]
        durations = [r["kernels"][k]["dur_us"] for r in kept]
        per_kernel.append({"name": kept[0]["kernels"][k]["name"], "dur_us": med(durations),
                           "gap_before_us" if k else first_gap_key: med(gaps)})
    return {"kernels_per_call": n, "repeats_kept": len(kept), "event_us_median": med([r["event_us"] for r in kept]),
            "per_kernel": per_kernel, "repeats": kept[:5]}


def one_line(summary: dict) -> str:
    """The event time, each kernel's duration and the gaps before them, for the console."""
    fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    parts = " ".join(f"{k['name'][:28]}={fmt(k['dur_us'])}" for k in summary["per_kernel"])
    gaps = ",".join(fmt(k.get("gap_before_us", k.get("after_flush_us"))) for k in summary["per_kernel"])
    return f"event {fmt(summary['event_us_median'])} us {parts} gaps {gaps}"


def measure(torch, case) -> dict:
    call = make_call(torch, case)
    flush = torch.empty(FLUSH_BYTES // 4, device="cuda", dtype=torch.int32)
    for _ in range(5):
        call()
    torch.cuda.synchronize()
    row = {**case, "eager_flushed": flushed_repeats(torch, call, flush)}
    one = campaign.capture_graph(call)
    row["graph_flushed"] = flushed_repeats(torch, one.replay, flush)

    def eager_row():
        for _ in range(BACK_TO_BACK):
            call()
    row["eager_back_to_back"] = back_to_back(torch, eager_row)
    many = campaign.capture_graph(call, BACK_TO_BACK)
    row["graph_back_to_back"] = back_to_back(torch, many.replay)
    del one, many
    torch.cuda.empty_cache()
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="validation/data")
    args = parser.parse_args()
    torch = campaign.import_gpu()
    rows, errors = [], []
    for case in CASES:
        try:
            rows.append(measure(torch, case))
        except Exception as e:  # keep the other cases: one backend missing must not lose the run
            errors.append({**case, "error": f"{type(e).__name__}: {e}"})
            print("error", case, e, file=sys.stderr)
            continue
        for mode in ("eager_flushed", "graph_flushed"):
            print(case, mode, one_line(rows[-1][mode]))
    record = {"script": "validation/profile_launch_timeline.py", "date": datetime.date.today().isoformat(),
              "meta": campaign.env_meta(), "repeats": REPEATS, "back_to_back_calls": BACK_TO_BACK,
              "flush_bytes": FLUSH_BYTES, "rows": rows, "errors": errors}
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"h200_profile_{record['date']}_launch_timeline.json")
    write_json(path, record)
    print("wrote", path)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
