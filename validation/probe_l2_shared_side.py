"""How much of a K/V-like stream the H200's L2 keeps between waves while Q- and O-like traffic passes (run 50).

Run 47 found cuDNN's forward re-reading less of one head's K/V than the model where that K/V is about the L2's size,
and run 49 found no cache hints in its loads. This measures the L2 itself on the pattern: each pass is one kernel of
132 CTAs (one per SM) that each first read their own slice of a fresh "Q" buffer, then all read the same W MiB in the
same order (K/V, in step), then write their own slice of a fresh "O" buffer; S MiB of such side traffic per pass
(half read, half written), W and S swept around the L2's size and one wave's Q and O (4-8 MiB at d = 64-128). Nsight
Compute (`--cache-control none`, so each pass finds what the last one left) counts every pass's DRAM bytes; the
shared stream's re-read share is (DRAM reads - the side reads) / W.

    python validation/probe_l2_shared_side.py --out validation/data      (needs torch, triton and ncu)
    python validation/probe_l2_shared_side.py --split --out validation/data   (run 51: side traffic all read or
                                                                               all written)

Writes `h200_probe_<date>_l2_shared_side.json` (`_l2_side_split.json` with --split).
"""

from __future__ import annotations

import datetime
import os
import sys

import measure_h200 as campaign
from ncu_profile import profile_until_kernels, run_cases, write_json

PASSES = 4
CTAS = 132
BLOCK = 4096  # bf16 elements per CTA per step of the stream (8 KiB)
SIDE_BLOCK = 1024  # of its Q and O slices
METRICS = ["dram__bytes_read.sum", "dram__bytes_write.sum", "lts__t_bytes.sum", "gpu__time_duration.sum"]
CASES = [{"stream_mib": w, "side_mib": s, "passes": PASSES} for w in (16, 20, 24, 28, 32) for s in (0, 4, 8, 16)]
#: `--split` (run 51): the side traffic all read or all written, to tell which of them displaces the stream.
SPLIT_CASES = [{"stream_mib": w, "side_mib": s, "side": side, "passes": PASSES}
               for w in (24, 28) for s in (4, 8, 16) for side in ("reads", "writes")]


def pass_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def one_pass(x_ptr, q_ptr, o_ptr, n_elems, q_elems, o_elems, BLOCK: tl.constexpr, SIDE_BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        side = tl.zeros([SIDE_BLOCK], dtype=tl.float32)
        for start in range(0, q_elems, SIDE_BLOCK):  # this CTA's Q slice
            offs = pid * q_elems + start + tl.arange(0, SIDE_BLOCK)
            side += tl.load(q_ptr + offs).to(tl.float32)
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for start in range(0, n_elems, BLOCK):  # the shared K/V stream, every CTA in the same order
            offs = start + tl.arange(0, BLOCK)
            acc += tl.load(x_ptr + offs, mask=offs < n_elems, other=0.0).to(tl.float32)
        total = tl.sum(acc, axis=0)
        for start in range(0, o_elems, SIDE_BLOCK):  # this CTA's O slice
            offs = pid * o_elems + start + tl.arange(0, SIDE_BLOCK)
            tl.store(o_ptr + offs, (side + total).to(tl.bfloat16))
    return one_pass


def side_elems(case: dict) -> tuple[int, int]:
    """bf16 elements of each CTA's Q slice and of its O slice per pass: half of the side traffic read and half
    written, or all of it read (`side`: "reads") or written ("writes")."""
    share = {"both": (1, 1), "reads": (2, 0), "writes": (0, 2)}[case.get("side", "both")]
    per_half = case["side_mib"] * 2 ** 18 // CTAS // SIDE_BLOCK * SIDE_BLOCK
    return share[0] * per_half, share[1] * per_half


def shared_side_passes(torch, case):
    """PASSES kernels over the same stream, each with fresh Q and O slices."""
    x = torch.ones(case["stream_mib"] * 2 ** 19, device="cuda", dtype=torch.bfloat16)
    q_elems, o_elems = side_elems(case)
    q = torch.ones(PASSES * CTAS * q_elems + SIDE_BLOCK, device="cuda", dtype=torch.bfloat16)
    o = torch.empty(PASSES * CTAS * o_elems + SIDE_BLOCK, device="cuda", dtype=torch.bfloat16)
    kernel = pass_kernel()

    def passes():
        for p in range(case["passes"]):
            kernel[(CTAS,)](x, q[p * CTAS * q_elems:], o[p * CTAS * o_elems:], x.numel(), q_elems, o_elems,
                            BLOCK=BLOCK, SIDE_BLOCK=SIDE_BLOCK)
    return passes


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="validation/data")
    parser.add_argument("--split", action="store_true", help="run 51's cases: side traffic all read or all written")
    parser.add_argument("--driver", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    cases, name = (SPLIT_CASES, "l2_side_split") if args.split else (CASES, "l2_shared_side")
    campaign.import_gpu()
    if args.driver:
        run_cases(cases, shared_side_passes)
        return 0
    kernels, runs = profile_until_kernels(__file__, [METRICS], driver_flag="--driver", timeout=500,
                                          driver_args=("--split",) if args.split else (),
                                          ncu_flags=("--cache-control", "none"))
    record = {"script": "validation/probe_l2_shared_side.py", "date": datetime.date.today().isoformat(),
              "meta": campaign.env_meta(), "cases": cases, "ctas": CTAS, "block": BLOCK, "metrics": METRICS,
              "kernels": kernels, "ncu_runs": runs}
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"h200_probe_{record['date']}_{name}.json")
    write_json(path, record)
    for i, case in enumerate(cases):
        mine = kernels[i * PASSES:(i + 1) * PASSES]
        side_read = 2 * CTAS * side_elems(case)[0]  # bytes of Q read per pass
        shares = [((campaign._num(k.get("dram__bytes_read.sum")) or 0.0) - side_read) / (case["stream_mib"] * 2 ** 20)
                  for k in mine]
        print(f"W {case['stream_mib']} MiB, side {case['side_mib']} MiB ({case.get('side', 'both')}): stream DRAM "
              "reads per pass / W", " ".join(f"{r:.2f}" for r in shares))
    print("wrote", path)
    return 0 if len(kernels) == len(cases) * PASSES else 1


if __name__ == "__main__":
    sys.exit(main())
