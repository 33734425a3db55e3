"""What the profiling scripts share: where `ncu` is, the driver that brackets each case with
cudaProfilerStart/Stop (run under `ncu --profile-from-start off`), the parser of `ncu --csv --page raw`
output, building and running the CUDA probes beside this file, and atomic writing of the result JSON."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import time

KEPT_COLUMNS = ("Kernel Name", "Grid Size", "Block Size")


def find_ncu() -> str | None:
    return shutil.which("ncu") or ("/usr/local/cuda/bin/ncu" if os.path.exists("/usr/local/cuda/bin/ncu") else None)


def profile_script(script: str, metrics: list, check: bool = False, *, driver_flag: str = "--driver",
                   driver_args: tuple = (), base_units: bool = False, ncu_flags: tuple = (),
                   timeout: float | None = None) -> subprocess.CompletedProcess | None:
    """Run `script <driver_flag> <driver_args>` (which calls run_cases) under Nsight Compute, collecting `metrics`
    as a raw CSV on stdout from the profiled regions only (`base_units`: values in base units, with a units row;
    `ncu_flags`: more options, such as `--cache-control none`); None when ncu is not installed."""
    ncu = find_ncu()
    if ncu is None:
        return None
    cmd = [ncu, "--profile-from-start", "off", "--clock-control", "none", "--metrics", ",".join(metrics),
           "--csv", "--page", "raw", *ncu_flags] + (["--print-units", "base"] if base_units else []) + \
          [sys.executable, os.path.abspath(script), driver_flag, *driver_args]
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=timeout)


def profile_until_kernels(script: str, metric_lists, *, driver_flag: str, timeout: float, driver_args: tuple = (),
                          base_units: bool = True, ncu_flags: tuple = ()) -> tuple[list, list]:
    """Profile `script` (in base units unless `base_units` is false) with each metric list of `metric_lists` in
    turn (an ncu that does not know one metric profiles nothing) until one yields kernels. Returns (kernels, one
    record per attempt: metrics, return code, wall time, kernel count, ncu's errors and warnings and the CASE
    lines)."""
    kernels, runs = [], []
    for metrics in metric_lists:
        t0 = time.time()
        done = profile_script(script, metrics, driver_flag=driver_flag, driver_args=driver_args,
                              base_units=base_units, ncu_flags=ncu_flags, timeout=timeout)
        if done is None:
            break
        kernels = parse_raw_csv(done.stdout, with_units=base_units)
        messages = [ln for ln in (done.stdout + done.stderr).splitlines() if "==ERROR==" in ln or "==WARNING==" in ln
                    or ln.startswith("CASE") or "Traceback" in ln][:60]
        runs.append({"metrics": metrics, "rc": done.returncode, "wall_s": round(time.time() - t0, 1),
                     "kernels": len(kernels), "messages": messages})
        print("ncu rc", done.returncode, "kernels", len(kernels), "in", round(time.time() - t0), "s", flush=True)
        if kernels:
            break
        print("\n".join(messages[-20:]))
    return kernels, runs


def build_cuda_probe(source: str, directory: str, *flags: str) -> tuple[str | None, str]:
    """Build `source` (a .cu file beside this one) with nvcc for sm_90a into `directory`; returns (the executable,
    or None when the build failed or nvcc is missing, and nvcc's error output)."""
    if shutil.which("nvcc") is None:
        return None, "nvcc not found on PATH"
    exe = os.path.join(directory, os.path.splitext(os.path.basename(source))[0])
    build = subprocess.run(["nvcc", "-O3", "-arch=sm_90a", *flags, "-o", exe,
                            os.path.join(os.path.dirname(os.path.abspath(__file__)), source)],
                           capture_output=True, text=True)
    return (None if build.returncode else exe), build.stderr[-3000:]


def cuda_probe_main(doc: str, source: str, name: str, *flags: str) -> int:
    """The command line of a script that builds and runs one CUDA probe (`--out DIR`): prints the probe's JSON
    lines and writes them, with its stderr and exit status, to `h200_probe_<date>_<name>.json` in DIR."""
    import argparse
    import datetime
    import tempfile

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--out", default="validation/data")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        exe, errors = build_cuda_probe(source, tmp, *flags)
        if exe is None:
            print(errors, file=sys.stderr)
            return 1
        done = subprocess.run([exe], capture_output=True, text=True, timeout=300)
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    for row in rows:
        print(json.dumps(row))
    path = os.path.join(args.out, f"h200_probe_{datetime.date.today()}_{name}.json")
    write_json(path, {"rows": rows, "returncode": done.returncode, "stderr": done.stderr[-2000:]})
    print("->", path)
    return done.returncode


def run_cases(cases: list, make_callable) -> None:
    """For each case: build its callable, warm it up once, then run it once inside the profiled region
    (`make_callable(torch, case)` returns a function that launches the case's kernels)."""
    import torch
    for i, case in enumerate(cases):
        fn = make_callable(torch, case)
        fn()
        torch.cuda.synchronize()
        torch.cuda.profiler.start()
        fn()
        torch.cuda.synchronize()
        torch.cuda.profiler.stop()
        print("CASE", i, json.dumps(case), flush=True)
        fn = None
        torch.cuda.empty_cache()


def event_timings(cases: list, make_callable, warmup: int = 3, repeats: int = 20) -> list[dict]:
    """Each case timed without the profiler: CUDA events around one call, `repeats` times after `warmup`
    calls; the case's fields plus the median and minimum milliseconds."""
    import torch
    rows = []
    for case in cases:
        fn = make_callable(torch, case)
        for _ in range(warmup):
            fn()
        ms = []
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            ms.append(start.elapsed_time(end))
        ms.sort()
        rows.append({**case, "time_ms_median": ms[len(ms) // 2], "time_ms_min": ms[0]})
        fn = None
        torch.cuda.empty_cache()
    return rows


def parse_raw_csv(text: str, with_units: bool = False) -> list[dict]:
    """One dict per profiled kernel: its name, grid, block and every metric column (values as printed);
    with `with_units`, also the units row under "units"."""
    lines = [ln for ln in text.splitlines() if ln.startswith('"')]
    rows = list(csv.reader(io.StringIO("\n".join(lines))))
    hi = next((i for i, r in enumerate(rows) if "Kernel Name" in r), None)
    if hi is None:
        return []
    hdr, body = rows[hi], rows[hi + 1:]
    units = {}
    if body and not body[0][0].strip().isdigit():
        units, body = dict(zip(hdr, body[0])), body[1:]
    kernels = []
    for r in body:
        if len(r) != len(hdr):
            continue
        kernel = {k: v for k, v in zip(hdr, r) if k in KEPT_COLUMNS or "__" in k}
        if with_units:
            kernel["units"] = {k: units.get(k) for k in hdr if "__" in k}
        kernels.append(kernel)
    return kernels


def metric_value(kernel: dict, metric: str) -> float:
    """A metric of one kernel's record from parse_raw_csv (ncu prints thousands separators)."""
    return float(kernel[metric].replace(",", ""))


def write_json(path: str, doc: dict, compact: bool = False) -> None:
    """Write `doc` to `path` whole or not at all; `compact`: without indentation (per-CTA records)."""
    with open(path + ".tmp", "w") as f:
        json.dump(doc, f, **({"separators": (",", ":")} if compact else {"indent": 1}))
    os.replace(path + ".tmp", path)


def profile_args(doc: str):
    """The command line every profiling script shares: `--out DIR`, and `--driver` for the child that Nsight Compute
    profiles (it runs the cases)."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--out", default="validation/data")
    parser.add_argument("--driver", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def profile_cases_main(script: str, doc: str, name: str, cases: list, make_callable, metrics: list,
                       timed=None, base_units: bool = False) -> tuple[int, dict | None]:
    """The command line of a script that profiles `cases` (`--out DIR`, and `--driver` for the profiled child):
    optionally `timed()` first (CUDA-event timings without the profiler, as a dict of fields to keep), then
    every case under Nsight Compute; writes `h200_profile_<date>_<name>.json` in DIR and returns (exit status,
    the written record, or None when nothing was written). `base_units`: ncu prints values in base units
    (seconds, bytes) and the record keeps each kernel's units."""
    import datetime

    args = profile_args(doc)
    if args.driver:
        run_cases(cases, make_callable)
        return 0, None
    extra = timed() if timed is not None else {}
    done = profile_script(script, metrics, base_units=base_units)
    if done is None:
        print("ncu not found", file=sys.stderr)
        return 1, None
    kernels = parse_raw_csv(done.stdout, with_units=base_units)
    record = {"cases": cases, "case_lines": [ln for ln in done.stdout.splitlines() if ln.startswith("CASE")],
              "metrics": metrics, "kernels": kernels, **extra,
              "returncode": done.returncode, "stderr_tail": done.stderr[-2000:]}
    path = os.path.join(args.out, f"h200_profile_{datetime.date.today()}_{name}.json")
    write_json(path, record)
    print(f"{len(kernels)} kernels -> {path}")
    return 0, record


def probe_main(script: str, doc: str, name: str, cases: list, make_callable, metrics: list, *,
               ncu_flags: tuple = (), **fields) -> tuple[list, str] | None:
    """The command line of a probe (`--out DIR`, and `--driver` for the profiled child, which runs the cases and
    gets None): every case under Nsight Compute with `ncu_flags` (e.g. `--cache-control none`), recorded with the
    machine's metadata and `fields` in `h200_probe_<date>_<name>.json` in DIR. Returns (kernels, that path)."""
    import datetime

    import measure_h200 as campaign

    args = profile_args(doc)
    campaign.import_gpu()
    if args.driver:
        run_cases(cases, make_callable)
        return None
    kernels, runs = profile_until_kernels(script, [metrics], driver_flag="--driver", timeout=500, ncu_flags=ncu_flags)
    record = {"script": f"validation/{os.path.basename(script)}", "date": datetime.date.today().isoformat(),
              "meta": campaign.env_meta(), "cases": cases, **fields, "metrics": metrics, "kernels": kernels,
              "ncu_runs": runs}
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"h200_probe_{record['date']}_{name}.json")
    write_json(path, record)
    return kernels, path


def pass_shares(kernels: list, metric: str, per_bytes: float) -> tuple[list[float], float]:
    """A probe's passes (one profiled kernel each): each one's `metric` over `per_bytes`, and the median of the
    passes after the first (the first may find lines the warm-up left)."""
    import statistics

    shares = [(metric_value(k, metric) if k.get(metric) else 0.0) / per_bytes for k in kernels]
    return shares, statistics.median(shares[1:]) if len(shares) > 1 else float("nan")


def report_pass_shares(kernels: list, cases: list, passes: int, metric: str, per_bytes, label) -> int:
    """Print each case's `passes` kernels' `metric` over `per_bytes(case)` after `label(case)`, with the median of
    the later passes; the exit status: 0 when every case's kernels came back."""
    for i, case in enumerate(cases):
        shares, later = pass_shares(kernels[i * passes:(i + 1) * passes], metric, per_bytes(case))
        print(label(case), " ".join(f"{r:.2f}" for r in shares), f"(median of the later passes {later:.2f})")
    return 0 if len(kernels) == len(cases) * passes else 1
