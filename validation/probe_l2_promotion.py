"""Does a hit keep a line in the H200's L2 (LRU), or does a line leave in the order it came (FIFO)? Run 53.

Every probe so far re-read data in a cycle (runs 26, 50-52), where LRU and FIFO replacement evict alike. Causal
attention walks re-read their lowest K/V tiles far more often than their highest, which the two policies treat very
differently: LRU keeps the hot tiles, FIFO evicts them once enough newer lines have come in. This reads, per pass, a
stream S in chunks, and after each chunk a hot set H again (every one of 132 CTAs, one per SM, in the same order,
so both are lines every SM reads). Under LRU H is never far from the most recent end and hits; under FIFO it leaves
after about the L2's capacity of newer stream lines and is read again. Nsight Compute (`--cache-control none`) counts
each pass's DRAM reads; with H = 0 the stream alone gives the cyclic baseline.

    python validation/probe_l2_promotion.py --out validation/data      (needs torch, triton and ncu)

Writes `h200_probe_<date>_l2_promotion.json`; prints each case's DRAM reads per pass over S.
"""

from __future__ import annotations

import sys

from ncu_profile import probe_main, report_pass_shares

PASSES = 4
CTAS = 132
BLOCK = 4096  # bf16 elements per step (8 KiB)
CHUNK_MIB = 2
METRICS = ["dram__bytes_read.sum", "lts__t_bytes.sum", "gpu__time_duration.sum"]
CASES = [{"stream_mib": s, "hot_mib": h, "passes": PASSES} for s in (16, 24, 32, 48) for h in (0, 4, 8)]


def pass_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def one_pass(s_ptr, h_ptr, out_ptr, s_elems, h_elems, chunk_elems, BLOCK: tl.constexpr):
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for chunk in range(0, s_elems, chunk_elems):
            for start in range(chunk, chunk + chunk_elems, BLOCK):  # the next chunk of the stream
                offs = start + tl.arange(0, BLOCK)
                acc += tl.load(s_ptr + offs, mask=offs < s_elems, other=0.0).to(tl.float32)
            for start in range(0, h_elems, BLOCK):  # the hot set again
                offs = start + tl.arange(0, BLOCK)
                acc += tl.load(h_ptr + offs).to(tl.float32)
        tl.store(out_ptr + tl.program_id(0) * BLOCK + tl.arange(0, BLOCK), acc)
    return one_pass


def promotion_passes(torch, case):
    """PASSES kernels, each reading the stream in chunks with the hot set after each."""
    s = torch.ones(case["stream_mib"] * 2 ** 19, device="cuda", dtype=torch.bfloat16)
    h = torch.ones(max(case["hot_mib"], 1) * 2 ** 19, device="cuda", dtype=torch.bfloat16)
    out = torch.empty(CTAS * BLOCK, device="cuda", dtype=torch.float32)
    kernel = pass_kernel()
    h_elems = case["hot_mib"] * 2 ** 19

    def passes():
        for _ in range(case["passes"]):
            kernel[(CTAS,)](s, h, out, s.numel(), h_elems, CHUNK_MIB * 2 ** 19, BLOCK=BLOCK)
    return passes


def main() -> int:
    done = probe_main(__file__, __doc__, "l2_promotion", CASES, promotion_passes, METRICS,
                      ncu_flags=("--cache-control", "none"), ctas=CTAS, block=BLOCK, chunk_mib=CHUNK_MIB)
    if done is None:
        return 0
    kernels, path = done
    status = report_pass_shares(kernels, CASES, PASSES, "dram__bytes_read.sum", lambda c: c["stream_mib"] * 2 ** 20,
                                lambda c: f"S {c['stream_mib']} MiB, H {c['hot_mib']} MiB: DRAM reads per pass / S")
    print("wrote", path)
    return status


if __name__ == "__main__":
    sys.exit(main())
