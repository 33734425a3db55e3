"""Simulation-speed benchmark (issue 8): wall time, events and peak memory of the headline sweep and of
single large points, with the machine they ran on. A script, not a test: it prints figures.

    python benchmarks/run_benchmarks.py            # all
    python benchmarks/run_benchmarks.py --points   # single points only
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POINTS = [  # (kernel, problem kwargs, hardware)
    ("fa3", dict(batch=1, heads=32, seq_len=131072, head_dim=128), "h200"),
    ("fa2", dict(batch=1, heads=32, seq_len=131072, head_dim=128), "h200"),
    ("flash_decoding", dict(batch=1, heads=32, kv_heads=8, seq_len=1, kv_len=131072, head_dim=128), "h200"),
    ("fa2", dict(batch=1, heads=16, seq_len=16384, head_dim=128, causal=True), "h200"),
]


def machine() -> str:
    return f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}"


def run_point(kernel: str, kwargs: dict, hw: str) -> None:
    """Run in a child process so that its peak memory is its own."""
    code = ("import resource, time, sys; from gpusim import simulate, AttentionProblem;"
            f"t = time.perf_counter(); r = simulate({kernel!r}, AttentionProblem(**{kwargs!r}), {hw!r});"
            "w = time.perf_counter() - t;"
            "m = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024;"
            "print(f'{w:.2f} {r.events} {m:.0f} {r.tflops_per_s:.1f}')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    wall, events, mem, tflops = out
    problem = " ".join(f"{k}={v}" for k, v in kwargs.items())
    print(f"{kernel:15s} {problem:60s} wall {wall:>6s} s  events {events:>8s}  peak {mem:>5s} MB  ({tflops} TFLOP/s)")


def run_sweep() -> None:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "gpusim.cli", "run", str(ROOT / "scenarios" / "headline_sweep.toml"),
                        "--jobs", "2", "--no-cache", "--out", out], check=True, capture_output=True)
        wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"headline sweep (--jobs 2 --no-cache): wall {wall:.1f} s, peak child memory {peak:.0f} MB")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", action="store_true", help="single points only")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    for kernel, kwargs, hw in POINTS:
        run_point(kernel, kwargs, hw)
    if not args.points:
        run_sweep()
    return 0


if __name__ == "__main__":
    sys.exit(main())
