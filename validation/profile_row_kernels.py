"""Nsight Compute profile of the kernels the naive model's row launches stand for, and an L2 re-read probe.

    python validation/profile_row_kernels.py --out validation/data      (needs torch, CUDA and `ncu`)

Writes `h200_profile_<date>_row_kernels.json` (not an `h200_measured_*` group file: build_cases.py does
not read it): one row per profiled kernel with its launch configuration
(block, grid, registers, occupancy limits), achieved occupancy, duration, DRAM/L2 bytes, instruction counts
and the warp stall shares; then the same cases timed without the profiler (CUDA events, median of 20).

Cases:
  softmax   torch.softmax(x, -1) on x[1, 16, N, N] bf16 for N = 1024 ... 32768 (PyTorch picks the warp-per-row
            persistent kernel for short rows and a block-per-row kernel for long ones; the model needs to know
            which, with how many threads, and what bounds it)
  scale     x * 0.125 on the same x (the vectorized elementwise kernel)
  l2_reread torch.sum over a W-byte buffer twice in a row, W = 8 ... 96 MiB: the second pass's DRAM reads
            show how much of a streamed buffer the L2 keeps (its effective capacity for re-reads)

The profiled region is opened with cudaProfilerStart/Stop around one call of each case after a warm-up call;
`--profile-from-start off` keeps the warm-up out. Kernel rows are matched to cases by order (the driver
prints the case list it ran).
"""

from __future__ import annotations

import argparse
import datetime
import os

from ncu_profile import event_timings, find_ncu, profile_until_kernels, run_cases, write_json

METRICS_FULL = [
    "gpu__time_duration.sum", "dram__bytes_read.sum", "dram__bytes_write.sum", "lts__t_bytes.sum",
    "launch__block_size", "launch__grid_size", "launch__registers_per_thread",
    "launch__shared_mem_per_block_dynamic", "launch__shared_mem_per_block_static",
    "launch__occupancy_limit_registers", "launch__occupancy_limit_shared_mem",
    "launch__occupancy_limit_warps", "launch__occupancy_limit_blocks",
    "sm__warps_active.avg.pct_of_peak_sustained_active", "sm__throughput.avg.pct_of_peak_sustained_elapsed",
    "smsp__inst_executed.sum", "smsp__inst_executed_pipe_xu.sum",
    "smsp__warp_issue_stalled_long_scoreboard_per_warp_active.pct",
    "smsp__warp_issue_stalled_barrier_per_warp_active.pct",
    "smsp__warp_issue_stalled_lg_throttle_per_warp_active.pct",
    "smsp__warp_issue_stalled_drain_per_warp_active.pct",
    "smsp__warp_issue_stalled_short_scoreboard_per_warp_active.pct",
    "smsp__warp_issue_stalled_math_pipe_throttle_per_warp_active.pct",
    "smsp__warp_issue_stalled_mio_throttle_per_warp_active.pct",
    "smsp__warp_issue_stalled_wait_per_warp_active.pct",
    "smsp__warp_issue_stalled_selected_per_warp_active.pct",
]
METRICS_MIN = ["gpu__time_duration.sum", "dram__bytes_read.sum", "dram__bytes_write.sum", "lts__t_bytes.sum",
               "launch__block_size", "launch__grid_size", "launch__registers_per_thread",
               "sm__warps_active.avg.pct_of_peak_sustained_active"]

SOFTMAX_N = [1024, 2048, 4096, 8192, 16384]
REREAD_MIB = [8, 16, 24, 32, 40, 48, 56, 64, 80, 96]


def cases():
    out = [{"case": "softmax", "N": n} for n in SOFTMAX_N]
    out += [{"case": "scale", "N": n} for n in (4096, 16384)]
    out += [{"case": "l2_reread", "MiB": w} for w in REREAD_MIB]
    return out


def _run_case(torch, c, timed=False):
    """Builds the inputs of case c and returns a callable that launches its kernels once."""
    if c["case"] in ("softmax", "scale"):
        x = torch.randn(1, 16, c["N"], c["N"], device="cuda", dtype=torch.bfloat16)
        if c["case"] == "softmax":
            return lambda: torch.softmax(x, dim=-1)
        return lambda: x * 0.125
    x = torch.randn(c["MiB"] * 2**20 // 2, device="cuda", dtype=torch.bfloat16)

    def twice():
        torch.sum(x)
        torch.sum(x)
    return twice


def driver():
    run_cases(cases(), _run_case)


def timings():
    return event_timings(cases(), _run_case)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="validation/data")
    ap.add_argument("--_driver", action="store_true")
    args = ap.parse_args()
    if args._driver:
        driver()
        return
    import torch
    ncu = find_ncu()
    doc = {"script": "validation/profile_row_kernels.py", "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(),
           "device": torch.cuda.get_device_name(0), "torch": torch.__version__, "ncu": ncu, "cases": cases()}
    kernels, doc["runs"] = profile_until_kernels(__file__, (METRICS_FULL, METRICS_MIN), driver_flag="--_driver",
                                                 timeout=400)
    doc["kernels"] = kernels
    doc["timings"] = timings()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"h200_profile_{datetime.date.today().isoformat()}_row_kernels.json")
    write_json(path, doc)
    print("wrote", path)
    for k in kernels:
        print(k.get("Kernel Name", "")[:60], k.get("Block Size"), k.get("Grid Size"),
              k.get("gpu__time_duration.sum"), k.get("dram__bytes_read.sum"), k.get("launch__registers_per_thread"),
              k.get("sm__warps_active.avg.pct_of_peak_sustained_active"))
    for t in doc["timings"]:
        print(t)


if __name__ == "__main__":
    main()
