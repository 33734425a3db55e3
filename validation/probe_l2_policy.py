"""How much of a working set the H200's L2 keeps across passes: DRAM bytes per pass of a cyclic read (issue #5).

The model's L2 is one 30 MiB LRU over tiles, so a working set re-read in the same order either hits entirely (it
fits) or misses entirely (LRU evicts each line just before its reuse). The DRAM suites disagree on both sides of
that cliff: FA3's forward at d = 64 re-reads K/V 1.2x / 2.4x at 65k / 98k tokens (one head's K/V: 17 / 25 MB),
where the model reads them once, and 6.4x at 131k (34 MB), where the model's LRU thrashes to 7.4x. This probe
measures the curve: for each working-set size W, a bf16 tensor of W bytes is read PASSES times in a row (one
kernel per pass, reading it in the same order; by torch's sum, or by 132 CTAs that each read all of it), after the
same again as warm-up, and Nsight Compute
(`--cache-control none`, so that each pass finds what the last one left) counts every pass's DRAM and L2 bytes.

    python validation/probe_l2_policy.py --out validation/data      (needs torch and ncu)

Writes `h200_probe_<date>_l2_policy.json`.
"""

from __future__ import annotations

import datetime
import os
import sys

import measure_h200 as campaign
from ncu_profile import profile_args, profile_until_kernels, run_cases, write_json

PASSES = 4
#: `private`: torch's sum, each byte read by one SM; `shared`: every one of 132 CTAs (one per SM) reads all W bytes
#: in the same order, as the CTAs of an attention wave read one head's K/V.
WORKING_SETS_MB = {"private": (4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 56, 64, 80, 96, 128),
                   "shared": (4, 8, 12, 16, 20, 24, 28, 32, 40, 48)}
SHARED_CTAS = 132
SHARED_BLOCK = 4096  # bf16 elements per CTA per step (8 KiB)
METRICS = ["dram__bytes_read.sum", "dram__bytes_write.sum", "lts__t_bytes.sum", "gpu__time_duration.sum"]
CASES = [{"pattern": pattern, "mbytes": mb, "passes": PASSES} for pattern, sizes in WORKING_SETS_MB.items()
         for mb in sizes]


def shared_read_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def shared_read(x_ptr, out_ptr, n_elems, BLOCK: tl.constexpr):
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for start in range(0, n_elems, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            acc += tl.load(x_ptr + offs, mask=offs < n_elems, other=0.0).to(tl.float32)
        tl.store(out_ptr + tl.program_id(0) * BLOCK + tl.arange(0, BLOCK), acc)
    return shared_read


def cyclic_reads(torch, case):
    """PASSES reads of the same W bytes, in the same order each time (one kernel per pass)."""
    x = torch.ones(case["mbytes"] * 2 ** 19, device="cuda", dtype=torch.bfloat16)
    if case["pattern"] == "private":
        def passes():
            for _ in range(case["passes"]):
                x.sum()
        return passes
    kernel = shared_read_kernel()
    out = torch.empty(SHARED_CTAS * SHARED_BLOCK, device="cuda", dtype=torch.float32)

    def shared_passes():
        for _ in range(case["passes"]):
            kernel[(SHARED_CTAS,)](x, out, x.numel(), BLOCK=SHARED_BLOCK)
    return shared_passes


def main() -> int:
    args = profile_args(__doc__)
    campaign.import_gpu()
    if args.driver:
        run_cases(CASES, cyclic_reads)
        return 0
    kernels, runs = profile_until_kernels(__file__, [METRICS], driver_flag="--driver", timeout=500,
                                          ncu_flags=("--cache-control", "none"))
    record = {"script": "validation/probe_l2_policy.py", "date": datetime.date.today().isoformat(),
              "meta": campaign.env_meta(), "cases": CASES, "metrics": METRICS, "kernels": kernels, "ncu_runs": runs}
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"h200_probe_{record['date']}_l2_policy.json")
    write_json(path, record)
    for i, case in enumerate(CASES):
        mine = kernels[i * PASSES:(i + 1) * PASSES]
        reads = [(campaign._num(k.get("dram__bytes_read.sum")) or 0.0) / (case["mbytes"] * 2 ** 20) for k in mine]
        print(case["pattern"], case["mbytes"], "MiB: DRAM read per pass / W", " ".join(f"{r:.2f}" for r in reads))
    print("wrote", path)
    return 0 if len(kernels) == len(CASES) * PASSES else 1


if __name__ == "__main__":
    sys.exit(main())
