"""Which readers make an L2 line take a shared line's room on the H200 (run 52).

Run 26 found a data set every SM re-reads fits about 29 MiB of the L2 and one each byte of which one SM reads about
46 MiB: the L2 is two partitions, and a line read from both sides is held in both (the preset's
`l2_private_line_share`, 0.63). The model makes a line shared once a second SM reads it. This tells apart "a second
SM" from "an SM on the other side" (run 29's map of the sides): a W MiB stream is read PASSES times in a row, in the
same order, by a chosen set of SMs, and Nsight Compute (`--cache-control none`, so each pass finds what the last one
left) counts each pass's DRAM reads. Each kernel launches CTAS_PER_SM CTAs per SM; the first CTA on each SM claims it
(an atomic flag per SM and pass) and reads the whole stream if its SM is in the set, every other CTA returns.

Readers: `all` (every SM), `side` (the 66 SMs beside SM 0's partition), `two_far` (SM 0 and SM 2, across the
partitions), `two_near` (SM 0 and SM 8, beside the same one), `one` (SM 0).

    python validation/probe_l2_readers.py --out validation/data      (needs torch, triton and ncu)

Writes `h200_probe_<date>_l2_readers.json`; prints each case's DRAM reads per pass over W (the last PASSES - 1
passes: the first pass of a case may find the warm-up's lines).
"""

from __future__ import annotations

import sys

from ncu_profile import probe_main, report_pass_shares

PASSES = 4
SMS = 132
CTAS_PER_SM = 4
BLOCK = 4096  # bf16 elements per step of the stream (8 KiB)
METRICS = ["dram__bytes_read.sum", "lts__t_bytes.sum", "gpu__time_duration.sum"]
#: Run 29 (replay_causal_schedule.SIDE_OF_SM0): the SMs beside SM 0's L2 partition (inclusive ranges).
SIDE_OF_SM0 = ((0, 1), (8, 13), (16, 17), (24, 29), (32, 33), (40, 45), (48, 49), (56, 61), (70, 75), (84, 89),
               (98, 103), (112, 117), (120, 121), (124, 131))
READERS = {
    "all": tuple(range(SMS)),
    "side": tuple(sm for first, last in SIDE_OF_SM0 for sm in range(first, last + 1)),
    "two_far": (0, 2),
    "two_near": (0, 8),
    "one": (0,),
}
CASES = [{"readers": name, "stream_mib": w, "passes": PASSES} for name in READERS
         for w in (24, 28, 32, 36, 40, 44, 48, 56)]


def pass_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def one_pass(x_ptr, claims_ptr, readers_ptr, out_ptr, n_elems, BLOCK: tl.constexpr):
        sm = tl.inline_asm_elementwise("mov.u32 $0, %smid;", "=r", [], dtype=tl.int32, is_pure=False, pack=1)
        first = tl.atomic_cas(claims_ptr + sm, 0, 1) == 0  # the first CTA on this SM in this pass
        reads = tl.load(readers_ptr + sm) != 0
        if first & reads:
            acc = tl.zeros([BLOCK], dtype=tl.float32)
            for start in range(0, n_elems, BLOCK):
                offs = start + tl.arange(0, BLOCK)
                acc += tl.load(x_ptr + offs, mask=offs < n_elems, other=0.0).to(tl.float32)
            tl.store(out_ptr + sm * BLOCK + tl.arange(0, BLOCK), acc)
    return one_pass


def reader_passes(torch, case):
    """PASSES kernels over the same stream, read by the case's SMs."""
    x = torch.ones(case["stream_mib"] * 2 ** 19, device="cuda", dtype=torch.bfloat16)
    readers = torch.zeros(SMS, device="cuda", dtype=torch.int32)
    readers[list(READERS[case["readers"]])] = 1
    out = torch.empty(SMS * BLOCK, device="cuda", dtype=torch.float32)
    kernel = pass_kernel()

    def passes():
        claims = torch.zeros(case["passes"], SMS, device="cuda", dtype=torch.int32)
        for p in range(case["passes"]):
            kernel[(SMS * CTAS_PER_SM,)](x, claims[p], readers, out, x.numel(), BLOCK=BLOCK)
    return passes


def main() -> int:
    done = probe_main(__file__, __doc__, "l2_readers", CASES, reader_passes, METRICS,
                      ncu_flags=("--cache-control", "none", "--kernel-name", "one_pass"),  # not the claims' zeroing
                      readers=READERS, ctas_per_sm=CTAS_PER_SM, block=BLOCK)
    if done is None:
        return 0
    kernels, path = done
    status = report_pass_shares(kernels, CASES, PASSES, "dram__bytes_read.sum", lambda c: c["stream_mib"] * 2 ** 20,
                                lambda c: f"{c['readers']:>8}, W {c['stream_mib']} MiB: DRAM reads per pass / W")
    print("wrote", path)
    return status


if __name__ == "__main__":
    sys.exit(main())
