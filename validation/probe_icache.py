"""Instruction fetch on an H200 (run 23): builds `probe_icache.cu` with nvcc and runs it. Straight-line FFMA bodies
of 2-128 KiB run in a loop, by 2 or 4 warpgroups per SM, all the same body or two different bodies (one per
warpgroup parity); it prints the cycles per warp instruction per SM sub-partition (1.0: one issue per cycle).

    python validation/probe_icache.py --out validation/data      (needs nvcc and a CUDA GPU)

Writes `h200_probe_<date>_icache.json`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile

from ncu_profile import build_cuda_probe, write_json


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="validation/data")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        exe, errors = build_cuda_probe("probe_icache.cu", tmp)
        if exe is None:
            print(errors, file=sys.stderr)
            return 1
        done = subprocess.run([exe], capture_output=True, text=True, timeout=300)
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    for row in rows:
        print(json.dumps(row))
    path = os.path.join(args.out, f"h200_probe_{datetime.date.today()}_icache.json")
    write_json(path, {"rows": rows, "stderr": done.stderr[-2000:]})
    print("->", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
