"""Load-to-use latency of dependent loads on an H200, per level (run 22): builds `probe_latency.cu` with nvcc
and runs it (one thread chasing pointers through 128-byte lines in random order: L1 over 32 KiB, L2 over 1-32 MiB
with ld.global.cg, HBM over 1 GiB). The model's `l2_hit_latency_cycles` is this L2 latency.

    python validation/probe_latency.py --out validation/data      (needs nvcc and a CUDA GPU)

Writes `h200_probe_<date>_latency.json`.
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
        exe, errors = build_cuda_probe("probe_latency.cu", tmp)
        if exe is None:
            print(errors, file=sys.stderr)
            return 1
        done = subprocess.run([exe], capture_output=True, text=True, timeout=300)
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    for row in rows:
        print(json.dumps(row))
    path = os.path.join(args.out, f"h200_probe_{datetime.date.today()}_latency.json")
    write_json(path, {"rows": rows, "stderr": done.stderr[-2000:]})
    print("->", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
