"""The memory instructions of SDPA's CUDNN and FLASH forward kernels as the H200 runs them, with their cache hints.

An L2 that keeps priorities per load matters only if the kernels ask for them (run 48: a stream read evict-first
displaces almost nothing; evict-last protects within the persisting-L2 limit). cuDNN's forward kernels are generated
at run time, so their SASS is in no library file: Nsight Compute's source page prints it for the kernel it profiles
(`--page source --print-source sass`). This runs one small forward of each backend and head size (batch 1, 1 head,
4096 tokens, d = 64 and 128) under it and keeps every global-memory and TMA instruction (opcode with its modifiers)
and how often each form occurs, per kernel. FLASH's kernels come from torch's library (validation/dump_fa2_sass.py).

    python validation/dump_fwd_memory_sass.py --out validation/data      (needs torch, CUDA and `ncu`)

Writes `h200_sass_<date>_fwd_memory.json` and ncu's whole source page as `h200_sass_<date>_fwd_memory.csv.gz`.
"""

from __future__ import annotations

import collections
import datetime
import gzip
import json
import os
import re
import subprocess
import sys

from ncu_profile import find_ncu, profile_args, run_cases, write_json
from profile_dram_repeats import sdpa_forward

#: FWD_SASS_HEADS=16 in the environment: 16 heads, where SDPA runs FLASH's whole-sequence kernel rather than its
#: split-KV one (run 56; the output name then ends in `_h16`).
HEADS = int(os.environ.get("FWD_SASS_HEADS", "1"))
CASES = [{"impl": impl, "batch": 1, "heads": HEADS, "seq_len": 4096, "head_dim": d, "causal": False, "repeats": 1}
         for impl in ("cudnn", "flash") for d in (64, 128)]
#: Opcodes that move data between global memory (through L2) and the SM.
MEMORY_OPCODE = re.compile(r"\b((?:LDGSTS|LDG|STG|RED|ATOMG|UTMALDG|UTMASTG|UTMAPF|UTMAREDG|UBLKCP|UBLKRED|UBLKPF|"
                           r"CCTL|UTMACCTL)(?:\.[A-Z0-9_]+)*)")


def main() -> int:
    args = profile_args(__doc__)
    if args.driver:
        run_cases(CASES, sdpa_forward)
        return 0
    ncu = find_ncu()
    if ncu is None:
        print("ncu not found", file=sys.stderr)
        return 1
    cmd = [ncu, "--profile-from-start", "off", "--section", "SourceCounters", "--page", "source",
           "--print-source", "sass", "--csv", sys.executable, os.path.abspath(__file__), "--driver"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=500)
    kernels: dict[str, collections.Counter] = {}
    current = None
    for line in done.stdout.splitlines():
        name = re.search(r'"?Kernel Name"?\s*[,:]\s*"?([^",]+)', line)
        if name:
            current = name.group(1).strip()
        for match in MEMORY_OPCODE.finditer(line):
            kernels.setdefault(current or "?", collections.Counter())[match.group(1)] += 1
    record = {"cases": CASES, "command": " ".join(cmd[:-3]), "returncode": done.returncode,
              "memory_instructions": {k: dict(v.most_common()) for k, v in kernels.items()},
              "stdout_head": done.stdout[:4000], "stderr_tail": done.stderr[-3000:]}
    path = os.path.join(args.out, f"h200_sass_{datetime.date.today()}_fwd_memory"
                                  f"{'' if HEADS == 1 else f'_h{HEADS}'}.json")
    write_json(path, record)
    with gzip.open(path.replace(".json", ".csv.gz"), "wt") as raw:  # ncu's whole source page, to read again
        raw.write(done.stdout)
    for kernel, forms in record["memory_instructions"].items():
        print(kernel[:100], json.dumps(forms))
    print("->", path)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
