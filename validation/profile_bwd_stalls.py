"""Where the backward kernels' warps wait, instruction by instruction (issue #5: the fixed cost of a backward CTA,
run 41).

cuDNN's backward CTA spends about 12k cycles beyond its steps at d = 128 (the model 5.5k) and FA2's about 12k (the
model 7.7k), their warps stalled on global memory (runs 39, 40). This samples warp states per SASS instruction
(Nsight Compute's SourceCounters section) in the main backward kernel of one-wave launches with short and long
loops, so that the stalls of the prologue, the loop and the epilogue can be told apart, and exports them with
`ncu --import ... --page source --csv --print-source sass`. Each case is profiled by its own ncu call.

    python validation/profile_bwd_stalls.py --out validation/data      (needs torch, CUDA and `ncu`)

Writes `h200_profile_<date>_bwd_stalls.json.gz`: per case, ncu's source-page CSV (one row per SASS instruction with
its sampled stall reasons) and details-page CSV (the sections' summaries), and each ncu call's errors.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import os
import subprocess
import sys
import tempfile

from ncu_profile import find_ncu, run_cases
from profile_bwd_sizes import sdpa_backward
from profile_kernel_cycles import sdpa_case

#: One wave of CTAs (cuDNN: 66 of 128 keys; FA2: 132 of 128 keys) with 4-8 steps, where the fixed cost is most of a
#: CTA, and cuDNN's 132-step CTA for contrast.
CASES = [sdpa_case("cudnn", 1, 33, 256, 128), sdpa_case("cudnn", 1, 1, 8448, 128), sdpa_case("flash", 1, 33, 512, 128)]
#: The main backward kernels (cuDNN's bprop, FA2's dq_dk_dv loop); the auxiliary kernels are not sampled.
MAIN_KERNELS = "regex:bprop|dq_dk_dv"


def run(cmd: list, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def profile_case(ncu: str, index: int, tmp: str) -> dict:
    """Sample one case's main kernel; its source and details pages as CSV text, and ncu's messages."""
    report = os.path.join(tmp, f"case{index}")
    sampled = run([ncu, "--profile-from-start", "off", "--clock-control", "none", "--kernel-name", MAIN_KERNELS,
                   "--launch-count", "1", "--section", "SourceCounters", "--section", "WarpStateStats",
                   "--section", "LaunchStats", "--import-source", "no", "-f", "-o", report,
                   sys.executable, os.path.abspath(__file__), "--driver", str(index)])
    record = {"case": CASES[index], "profile_rc": sampled.returncode,
              "profile_messages": [ln for ln in (sampled.stdout + sampled.stderr).splitlines()
                                   if "==ERROR==" in ln or "==WARNING==" in ln or "Traceback" in ln][:40]}
    for page, flags in (("source", ["--print-source", "sass"]), ("details", [])):
        exported = run([ncu, "--import", report + ".ncu-rep", "--page", page, "--csv", *flags])
        record[page] = exported.stdout
        record[f"{page}_rc"] = exported.returncode
        record[f"{page}_stderr"] = exported.stderr[-2000:]
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="validation/data")
    parser.add_argument("--driver", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.driver is not None:
        run_cases([CASES[args.driver]], sdpa_backward)
        return 0
    ncu = find_ncu()
    if ncu is None:
        print("ncu not found", file=sys.stderr)
        return 1
    version = run([ncu, "--version"]).stdout
    with tempfile.TemporaryDirectory() as tmp:
        records = [profile_case(ncu, i, tmp) for i in range(len(CASES))]
    for record in records:
        rows = record["source"].count("\n")
        print(record["case"], "profile rc", record["profile_rc"], "source rows", rows, "rc", record["source_rc"],
              record["source_stderr"][-300:], record["profile_messages"][-3:])
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"h200_profile_{datetime.date.today()}_bwd_stalls.json.gz")
    with gzip.open(path + ".tmp", "wt") as fh:
        json.dump({"ncu_version": version, "cases": records}, fh)
    os.replace(path + ".tmp", path)
    print("->", path)
    return 0 if all(r["profile_rc"] == 0 and r["source_rc"] == 0 for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
