"""FA2's forward code paths, read from the SASS of SDPA's kernels (validation/README.md run 35): per kernel
(head dim, tile, warps, causal, even shapes), the instructions per warp of its straight-line start (prologue and
first tiles), its main loop body and its epilogue, how the loop body splits into the two products (HMMA and
ldmatrix) and the rest (the softmax), and the bytes each thread's register spills store per loop iteration (STL,
run 56). Prints the table kernels/fa2.py's FORWARD_CODE holds (kernels with a causal variant only, whose prologue
the non-causal one gives, are left out); tests/test_icache.py checks it against this.

    python validation/fa2_code_paths.py [validation/data/fa2_sass_2026-11-30.json.gz]
"""

from __future__ import annotations

import gzip
import json
import os
import re
import sys

from dump_fa2_sass import INSTRUCTION

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "fa2_sass_2026-11-30.json.gz")
TEMPLATE = re.compile(r"Flash_fwd_kernel_traits<(\d+), (\d+), (\d+), (\d+), .*>, (true|false), (true|false), "
                      r"(true|false), (true|false), (true|false), (true|false), (true|false), (true|false)>\(")


def opcode(text: str) -> str:
    return re.sub(r"^@!?U?P\w+\s+", "", text).split()[0].split(".")[0]


def stored_bytes(text: str) -> int:
    """The bytes one thread's local store (STL, STL.64, STL.128) writes; 0 for any other instruction."""
    match = re.search(r"\bSTL(?:\.(\d+))?\s", re.sub(r"^@!?U?P\w+\s+", "", text) + " ")
    return int(match.group(1) or 32) // 8 if match else 0


def paths(sass: str) -> dict:
    """Instructions before, in and after the main loop (the longest backward branch), the loop's HMMA and
    ldmatrix instructions, the HMMAs before and in it, and the bytes per thread its local stores write."""
    lines = [(int(a, 16), text.strip()) for a, text in INSTRUCTION.findall(sass)]
    loops = []
    for at, text in lines:
        m = re.search(r"BRA\s+(?:\S+\s+)?0x([0-9a-f]+)", text)
        if m and int(m.group(1), 16) <= at:
            loops.append((int(m.group(1), 16), at))
    lo, hi = max(loops, key=lambda r: r[1] - r[0])
    inside = [opcode(text) for at, text in lines if lo <= at <= hi]
    return {"first": sum(1 for at, _ in lines if at < lo), "loop": len(inside),
            "epilogue": sum(1 for at, _ in lines if at > hi),
            "mma": sum(1 for op in inside if op in ("HMMA", "LDSM")),
            "first_hmma": sum(1 for at, text in lines if at < lo and opcode(text) == "HMMA"),
            "loop_hmma": inside.count("HMMA"),
            "loop_spill": sum(stored_bytes(text) for at, text in lines if lo <= at <= hi)}


def kernel_paths(path: str) -> dict:
    """paths() of every bf16 kernel SDPA runs without dropout, local window, alibi, softcap or returned softmax,
    by (head dim, block_m, block_n, warps, causal, even shapes)."""
    with gzip.open(path, "rt") as f:
        kernels = json.load(f)["kernels"]
    found = {}
    for kernel in kernels.values():
        m = TEMPLATE.search(kernel["demangled"])
        if "sass" not in kernel or not m or "bfloat16" not in kernel["demangled"]:
            continue
        d, bm, bn, warps = (int(x) for x in m.groups()[:4])
        dropout, causal, local, alibi, even_mn, even_k, softcap, ret = (x == "true" for x in m.groups()[4:])
        if dropout or local or alibi or softcap or ret or not even_k:
            continue
        found[(d, bm, bn, warps, causal, even_mn)] = paths(kernel["sass"])
    return found


def forward_code(found: dict) -> dict:
    """FORWARD_CODE's rows: (first, loop, epilogue, mma per product, masking per masked tile, spilled bytes per
    thread and loop iteration). The masking is what the causal kernel's first tiles have beyond the non-causal
    kernel's prologue and loop bodies."""
    table = {}
    for key in sorted(found):
        d, bm, bn, warps, causal, even_mn = key
        p = found[key]
        plain = found.get((d, bm, bn, warps, False, even_mn))
        if plain is None:
            continue
        prologue = plain["first"] - plain["loop"]  # the non-causal kernel's start: prologue and one tile
        steps = 1 if not causal else -(-bm // bn) + (0 if even_mn else 1)
        mask = round((p["first"] - prologue - steps * p["loop"]) / steps) if causal else 0
        table[key] = (p["first"], p["loop"], p["epilogue"], p["mma"] // 2, mask, p["loop_spill"])
    return table


def main() -> int:
    path = sys.argv[1] if len(sys.argv) > 1 else DATA
    print("# (head_dim, block_m, block_n, warps, causal, even_mn): "
          "(first, loop, epilogue, mma per product, masking per masked tile, loop spill bytes per thread)")
    for key, row in forward_code(kernel_paths(path)).items():
        print(f"    {key}: {row},")
    return 0


if __name__ == "__main__":
    sys.exit(main())
