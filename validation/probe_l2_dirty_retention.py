"""How much of what a kernel writes is still dirty in the H200's L2 when it ends (run 54).

Nsight Compute counts a kernel's DRAM writes while it runs: output still dirty in L2 at its end is written back
later, by whatever evicts it. SDPA's FA2 and cuDNN forwards at 8k-16k tokens (validation `h200_dram` write rows)
write back more of their output during the kernel than the model, whose L2 keeps a written line dirty until LRU
evicts it. This writes W MiB (132 CTAs, each its own slice of a fresh buffer, optionally followed in the same kernel
by a stream of S MiB that every CTA reads), then a second kernel reads 256 MiB of another buffer, which evicts
everything: the first kernel's DRAM writes are what left L2 during it, the second's what it left dirty. A kernel
reading 256 MiB runs first, so every case starts from an L2 of clean lines.

    python validation/probe_l2_dirty_retention.py --out validation/data      (needs torch, triton and ncu)

Writes `h200_probe_<date>_l2_dirty_retention.json`; prints each case's DRAM writes during and after the writing
kernel, in MiB.
"""

from __future__ import annotations

import sys

import measure_h200 as campaign
from ncu_profile import probe_main

CTAS = 132
BLOCK = 4096  # bf16 elements per step (8 KiB)
EVICT_MIB = 256
METRICS = ["dram__bytes_read.sum", "dram__bytes_write.sum", "gpu__time_duration.sum"]
CASES = [{"write_mib": w, "stream_mib": s} for s in (0, 16) for w in (2, 4, 8, 16, 24, 32, 48, 64)]
KERNELS_PER_CASE = 3  # evict, write, evict


def kernels():
    import triton
    import triton.language as tl

    @triton.jit
    def write_then_stream(o_ptr, s_ptr, out_ptr, o_elems, s_elems, BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        for start in range(0, o_elems, BLOCK):  # this CTA's slice of the output
            offs = pid * o_elems + start + tl.arange(0, BLOCK)
            tl.store(o_ptr + offs, tl.full([BLOCK], 1.0, tl.bfloat16))
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for start in range(0, s_elems, BLOCK):  # then a stream every CTA reads
            offs = start + tl.arange(0, BLOCK)
            acc += tl.load(s_ptr + offs).to(tl.float32)
        tl.store(out_ptr + pid * BLOCK + tl.arange(0, BLOCK), acc)

    @triton.jit
    def evict_reads(x_ptr, out_ptr, n_per_cta, BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for start in range(0, n_per_cta, BLOCK):
            offs = pid * n_per_cta + start + tl.arange(0, BLOCK)
            acc += tl.load(x_ptr + offs).to(tl.float32)
        tl.store(out_ptr + pid * BLOCK + tl.arange(0, BLOCK), acc)
    return write_then_stream, evict_reads


def retention(torch, case):
    """Evict, write W MiB (then read S MiB), evict."""
    write_then_stream, evict_reads = kernels()
    per_cta = case["write_mib"] * 2 ** 19 // CTAS // BLOCK * BLOCK
    o = torch.empty(CTAS * per_cta + BLOCK, device="cuda", dtype=torch.bfloat16)
    s = torch.ones(max(case["stream_mib"], 1) * 2 ** 19, device="cuda", dtype=torch.bfloat16)
    x = torch.ones(EVICT_MIB * 2 ** 19, device="cuda", dtype=torch.bfloat16)
    out = torch.empty(CTAS * BLOCK, device="cuda", dtype=torch.float32)
    evict_per_cta = x.numel() // CTAS // BLOCK * BLOCK

    def run():
        evict_reads[(CTAS,)](x, out, evict_per_cta, BLOCK=BLOCK)
        write_then_stream[(CTAS,)](o, s, out, per_cta, case["stream_mib"] * 2 ** 19, BLOCK=BLOCK)
        evict_reads[(CTAS,)](x, out, evict_per_cta, BLOCK=BLOCK)
    return run


def main() -> int:
    done = probe_main(__file__, __doc__, "l2_dirty_retention", CASES, retention, METRICS,
                      ncu_flags=("--cache-control", "none"), ctas=CTAS, block=BLOCK, evict_mib=EVICT_MIB)
    if done is None:
        return 0
    kernels, path = done
    mib = 2 ** 20
    for i, case in enumerate(CASES):
        mine = kernels[i * KERNELS_PER_CASE:(i + 1) * KERNELS_PER_CASE]
        if len(mine) < KERNELS_PER_CASE:
            break
        written = case["write_mib"] * 2 ** 19 // CTAS // BLOCK * BLOCK * CTAS * 2  # bytes
        during = (campaign._num(mine[1].get("dram__bytes_write.sum")) or 0.0) / mib
        after = (campaign._num(mine[2].get("dram__bytes_write.sum")) or 0.0) / mib
        print(f"W {case['write_mib']} MiB (written {written / mib:.2f}), stream {case['stream_mib']} MiB: "
              f"DRAM writes during {during:.2f} MiB, after {after:.2f} MiB", flush=True)
    print("wrote", path)
    return 0 if len(kernels) == len(CASES) * KERNELS_PER_CASE else 1


if __name__ == "__main__":
    sys.exit(main())
