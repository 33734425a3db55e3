"""Whether a long forward's DRAM passes per wave grow with the number of waves it runs (H200, Nsight Compute).

FA2 at one head of 128k tokens and d = 64 runs 3.9 waves of the same head's K/V (33.5 MB, past the L2); the
campaign's 16 heads run 62 waves and read that K/V about 1.9 times per wave, where CTAs in step would read it once.
If the CTAs running together drift apart over the launch (SMs at slightly different speeds), the passes per wave
grow with the waves; if the two CTAs of each SM settle at a fixed offset within the first waves, they do not. This
profiles SDPA's FLASH (FA2) and CUDNN forwards at 1 to 16 heads of one sequence, each call its own kernel with the
L2 flushed before it (ncu's default cache control), REPEATS calls per case.

    python validation/profile_dram_heads.py --out validation/data      (needs torch, CUDA and `ncu`)

Writes `h200_profile_<date>_dram_heads.json`.
"""

from __future__ import annotations

import sys

from profile_dram_repeats import profile_forwards

REPEATS = 2
SHAPES = [("flash", 64, 131072), ("flash", 128, 65536), ("flash", 64, 98304), ("flash", 128, 131072),
          ("cudnn", 64, 131072), ("cudnn", 128, 32768)]
CASES = [{"impl": impl, "batch": 1, "heads": h, "seq_len": n, "head_dim": d, "causal": False, "repeats": REPEATS}
         for impl, d, n in SHAPES for h in (1, 2, 4, 8, 16)]


def kv_reads_per_head(case: dict, read_bytes: float) -> float:
    """A forward's DRAM reads less Q's bytes, over one read of every head's K and V (bf16; Q is half of K and V)."""
    kv_bytes = 2 * case["heads"] * case["seq_len"] * case["head_dim"] * 2
    return (read_bytes - kv_bytes / 2) / kv_bytes


def describe(case: dict, reads: list) -> str:
    """A case's DRAM reads and its K/V reads per head (kv_reads_per_head)."""
    passes = " ".join(f"{kv_reads_per_head(case, r):.2f}" for r in reads)
    return (f"{case['impl']} {case['head_dim']} {case['seq_len']} {case['heads']} GB "
            f"{' '.join(f'{r / 1e9:.3f}' for r in reads)} K/V reads per head {passes}")


def main() -> int:
    return profile_forwards(__file__, __doc__, "dram_heads", CASES, describe)


if __name__ == "__main__":
    sys.exit(main())
