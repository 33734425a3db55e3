"""The SASS of SDPA's FLASH forward kernels (FA2) from the installed torch (issue #5:
the code size of each path of the tile loop, for an instruction-fetch model of short causal CTAs, runs 21 and 23).

Extracts the sm_90 (or sm_80) cubins of libtorch_cuda.so with cuobjdump, keeps those that hold a
`flash_fwd_kernel`, disassembles them, and writes each flash forward kernel's SASS, with its instruction count,
to `fa2_sass_<date>.json.gz` in --out (the full text for the bf16 kernels SDPA runs without dropout or other
options, the straight-line runs of every kernel).

    python validation/dump_fa2_sass.py --out validation/data      (needs torch with CUDA and cuobjdump)
"""

from __future__ import annotations

import argparse
import datetime
import glob
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile


#: Full SASS kept for the bf16 kernels SDPA runs without dropout, local window, alibi, softcap or returned
#: softmax (causal or not, even shapes or not); the rest keep their summary.
KEEP_SASS = re.compile(r"cutlass::bfloat16_t.*>, false, (true|false), false, false, (true|false), (true|false), "
                       r"false, false>\(")
INSTRUCTION = re.compile(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);")


def summarize(block: str) -> dict:
    """Instruction count, and the straight-line runs between branches and branch targets: (first offset,
    instructions, the branch that ends it), which show the size of the loop bodies."""
    lines = INSTRUCTION.findall(block)
    labels = {m.group(1): int(m.group(2), 16)
              for m in re.finditer(r"\.L_x_(\d+):\s*\n\s*/\*([0-9a-f]{4,})\*/", block)}
    starts = {labels[t] for t in re.findall(r"\(\.L_x_(\d+)\)", block) if t in labels}
    starts |= {int(t, 16) for t in re.findall(r"BRA\s+(?:\S+\s+)?0x([0-9a-f]+)", block)}
    runs, first, count = [], None, 0
    for offset, text in lines:
        at = int(offset, 16)
        if first is None or at in starts:
            if count:
                runs.append((first, count, ""))
            first, count = at, 0
        count += 1
        if "BRA" in text or "EXIT" in text or "RET" in text:
            runs.append((first, count, text.strip()[:60]))
            first, count = None, 0
    if count:
        runs.append((first, count, ""))
    return {"instructions": len(lines), "runs": runs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="validation/data")
    args = parser.parse_args()
    import torch
    lib = os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cuda.so")
    listing = subprocess.run(["cuobjdump", "-lelf", lib], capture_output=True, text=True).stdout
    elves = re.findall(r"ELF file\s+\d+:\s+(\S+)", listing)
    arch = "sm_90" if any("sm_90" in e for e in elves) else "sm_80"
    wanted = [e for e in elves if arch in e]
    print(len(elves), "cubins,", len(wanted), arch, flush=True)
    kernels = {}
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["cuobjdump", "-xelf", "all", lib], cwd=tmp, capture_output=True)
        for path in glob.glob(os.path.join(tmp, f"*{arch}*")):
            with open(path, "rb") as f:
                if b"flash_fwd_kernel" not in f.read():
                    continue
            sass = subprocess.run(["cuobjdump", "-sass", path], capture_output=True, text=True).stdout
            for block in re.split(r"\n\s*Function : ", sass)[1:]:
                name = block.split("\n", 1)[0].strip()
                if "flash_fwd_kernel" not in name:
                    continue
                readable = subprocess.run(["c++filt", name], capture_output=True, text=True).stdout.strip()
                kernels[name] = {**summarize(block), "demangled": readable}
                if KEEP_SASS.search(readable):
                    kernels[name]["sass"] = block
                print(kernels[name]["instructions"], readable[:300], flush=True)
    path = os.path.join(args.out, f"fa2_sass_{datetime.date.today()}.json.gz")
    with gzip.open(path, "wt") as f:
        json.dump({"torch": torch.__version__, "arch": arch, "kernels": kernels}, f)
    print("->", path, len(kernels), "kernels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
