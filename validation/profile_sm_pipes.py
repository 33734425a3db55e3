"""Which SM pipes an attention softmax uses, and how fast: run 20 (issue #4, cuDNN's forward at d = 64).

Two parts in one call:
1. `probe_sm_pipes.cu` (built with nvcc -arch=sm_90a -use_fast_math): lanes per SM cycle of ex2, FMA, FADD,
   FMUL, FMNMX, bf16x2/f16x2 packing conversions and shuffles, alone and in pairs (a pair that runs at the
   sum of its rates uses two pipes), with one and with eight warps per SM sub-partition; and the cycles one,
   two and three warpgroups take per 64 x 128 tile for FlashAttention-3's per-thread softmax, whose
   instructions per pipe ncu then counts (`probe_ncu`).
2. Nsight Compute on cuDNN's and FA2's forward (SDPA backends) at N = 8192, d = 64 and 128: instructions
   executed per pipe and the warp stall reasons, whichever of those metrics this ncu knows.

    python validation/profile_sm_pipes.py --out validation/data      (needs nvcc, torch, CUDA and `ncu`)
    python validation/profile_sm_pipes.py --out validation/data --cases fa2_causal   (FA2 causal and not, run 21)
    python validation/profile_sm_pipes.py --out validation/data --cases cudnn_d256   (cuDNN at d = 256, run 24)
    python validation/profile_sm_pipes.py --out validation/data --cases bwd          (the backwards, run 40)

Writes `h200_profile_<date>_sm_pipes.json` (`..._sm_pipes_<cases>.json` with `--cases` other than pipes).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile

from ncu_profile import build_cuda_probe, find_ncu, parse_raw_csv, profile_until_kernels, run_cases, write_json
from profile_bwd_sizes import sdpa_backward
from profile_kernel_cycles import sdpa_forward

CASES = [{"backend": backend, "batch": 2, "heads": heads, "seq_len": 8192, "head_dim": d, "causal": False}
         for backend in ("cudnn", "flash") for heads, d in ((32, 64), (16, 128))]
#: `--cases fa2_causal`: FA2's forward with and without the causal mask where the model misses (run 11), without
#: the probe.
FA2_CAUSAL_CASES = [{"backend": "flash", "batch": b, "heads": h, "seq_len": n, "head_dim": d, "causal": causal}
                    for b, h, n, d in ((32, 32, 512, 64), (8, 32, 2048, 64), (32, 16, 512, 128))
                    for causal in (False, True)]
#: `--cases cudnn_d256`: cuDNN's forward at d = 256, whose tiles and instruction counts no other run measured.
CUDNN_D256_CASES = [{"backend": "cudnn", "batch": b, "heads": 8, "seq_len": n, "head_dim": 256, "causal": causal}
                    for b, n in ((8, 2048), (2, 8192)) for causal in (False, True)]
#: `--cases bwd`: cuDNN's and FA2's backwards (`pass` bwd: torch.autograd.grad of the output, as the campaign times
#: them) at the forward cases' shapes, and cuDNN's causal: how many instructions a step issues on each pipe.
BWD_CASES = [{"backend": backend, "batch": 2, "heads": heads, "seq_len": 8192, "head_dim": d, "causal": causal,
              "pass": "bwd"}
             for backend in ("cudnn", "flash") for heads, d in ((32, 64), (16, 128))
             for causal in ((False, True) if backend == "cudnn" else (False,))]
CASE_SETS = {"pipes": CASES, "fa2_causal": FA2_CAUSAL_CASES, "cudnn_d256": CUDNN_D256_CASES, "bwd": BWD_CASES}
BASE_METRICS = ["gpu__time_duration.sum", "sm__cycles_active.max", "smsp__inst_executed.sum",
                "sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active",
                "launch__registers_per_thread", "launch__shared_mem_per_block_dynamic"]
#: Prefixes of the per-pipe and stall metrics wanted (whatever `ncu --query-metrics` lists under them).
PIPE_PREFIX = "smsp__inst_executed_pipe_"
STALL_PREFIX = "smsp__average_warps_issue_stalled_"
#: What ncu counts in the probe's softmax kernels: the instructions the model's steps stand for.
PROBE_METRICS = ["sm__cycles_active.max", "smsp__inst_executed.sum", "smsp__inst_executed_pipe_xu.sum",
                 "smsp__inst_executed_pipe_alu.sum", "smsp__inst_executed_pipe_fma.sum"]


def run_probe() -> tuple[list, str, list]:
    """The probe's JSON rows, its stderr, and ncu's counts for its fa3_softmax launches (in launch order:
    d = 64 then 128, each with 1, 2 and 3 warpgroups, warm-up and timed launch)."""
    with tempfile.TemporaryDirectory() as tmp:
        exe, errors = build_cuda_probe("probe_sm_pipes.cu", tmp, "-use_fast_math")
        if exe is None:
            return [], errors, []
        done = subprocess.run([exe], capture_output=True, text=True, timeout=300)
        ncu = find_ncu()
        counted = []
        if ncu is not None:
            profiled = subprocess.run([ncu, "--clock-control", "none", "--kernel-name", "regex:fa3_softmax",
                                       "--metrics", ",".join(PROBE_METRICS), "--csv", "--page", "raw", exe],
                                      capture_output=True, text=True, timeout=300)
            counted = parse_raw_csv(profiled.stdout)
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return rows, f"exit status {done.returncode}\n" + done.stderr[-2000:], counted


def sdpa_call(torch, case):
    """The case's SDPA forward, or its backward where `pass` is bwd."""
    return (sdpa_backward if case.get("pass") == "bwd" else sdpa_forward)(torch, case)


def available_metrics(ncu: str) -> list[str]:
    """Per-pipe instruction counters (.sum) and stall ratios (.ratio) this ncu lists for the GH100."""
    listed = subprocess.run([ncu, "--query-metrics", "--chip", "gh100"], capture_output=True, text=True).stdout
    names = [line.split()[0] for line in listed.splitlines() if line.strip()]
    pipes = [n + ".sum" for n in names if n.startswith(PIPE_PREFIX)]
    stalls = [n + ".ratio" for n in names if n.startswith(STALL_PREFIX) and n.endswith("_per_issue_active")]
    return pipes + stalls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="validation/data")
    parser.add_argument("--cases", choices=sorted(CASE_SETS), default="pipes",
                        help="pipes: the probe, then cuDNN and FA2 at N = 8192; fa2_causal: FA2 causal and not; "
                             "cudnn_d256: cuDNN at d = 256; bwd: cuDNN's and FA2's backwards (the probe only with "
                             "pipes)")
    parser.add_argument("--driver", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    cases = CASE_SETS[args.cases]
    if args.driver:
        run_cases(cases, sdpa_call)
        return 0
    probe, probe_log, probe_counts = run_probe() if args.cases == "pipes" else ([], "", [])
    for row in probe:
        print(json.dumps(row))
    for kernel in probe_counts:
        print(kernel.get("Kernel Name", "")[:40], {m: kernel.get(m) for m in PROBE_METRICS})
    record = {"probe": probe, "probe_log": probe_log, "probe_ncu": probe_counts, "cases": cases}
    ncu = find_ncu()
    if ncu is not None:
        extra = available_metrics(ncu)
        record["ncu_metrics_listed"] = extra
        metric_lists = (BASE_METRICS + extra, BASE_METRICS + [m for m in extra if m.startswith(PIPE_PREFIX)],
                        BASE_METRICS)
        kernels, record["ncu_attempts"] = profile_until_kernels(
            __file__, metric_lists, driver_flag="--driver", driver_args=("--cases", args.cases), timeout=480,
            base_units=False)
        record["kernels"] = kernels
        for kernel in kernels:
            pipes = {k: v for k, v in kernel.items() if k.startswith(PIPE_PREFIX) and v not in ("0", "")}
            print(kernel.get("Kernel Name", "")[:70], kernel.get("smsp__inst_executed.sum"), pipes)
    suffix = "sm_pipes" if args.cases == "pipes" else f"sm_pipes_{args.cases}"
    path = os.path.join(args.out, f"h200_profile_{datetime.date.today()}_{suffix}.json")
    write_json(path, record)
    print("->", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
