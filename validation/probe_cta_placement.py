"""Where the block scheduler puts the CTAs of a partial last wave, on an H200.

A launch of equal, memory-bound CTAs (each sums its own slice of a buffer), 1024 threads each so that at most two
fit on an SM, with 2.42 waves' worth or 1.21 waves' worth of CTAs. Every CTA records its SM (%smid) and its start
and end (%globaltimer). The question is the simulator's (issue #8, validation/README.md run 13): when the first
wave ends, do the tail CTAs land one per SM, or two on the SMs that freed first? And how far apart do the two
CTAs of one SM finish?

    python validation/probe_cta_placement.py --out validation/data        (needs torch with CUDA and triton)

Writes `h200_probe_<date>_cta_placement.json`: per case, every CTA's (sm, start_ns, end_ns), plus a summary.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import statistics
import sys

CASES = [{"ctas": 320, "elements_per_cta": 1 << 22}, {"ctas": 640, "elements_per_cta": 1 << 21}]
BLOCK = 4096
WARPS = 32  # 1024 threads: at most 2 CTAs per SM (2048 threads)


def build_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def probe(x_ptr, out_ptr, chunk, BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        t0 = tl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l,r", [pid], dtype=tl.int64,
                                       is_pure=False, pack=1)
        sm = tl.inline_asm_elementwise("mov.u32 $0, %smid;", "=r,r", [pid], dtype=tl.int32, is_pure=False, pack=1)
        acc = tl.zeros([BLOCK], tl.float32)
        base = pid.to(tl.int64) * chunk
        for i in range(0, chunk, BLOCK):
            acc += tl.load(x_ptr + base + i + tl.arange(0, BLOCK)).to(tl.float32)
        total = tl.sum(acc, axis=0)
        t1 = tl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l,r", [pid], dtype=tl.int64,
                                       is_pure=False, pack=1)
        tl.store(out_ptr + pid * 4 + 0, sm.to(tl.int64))
        tl.store(out_ptr + pid * 4 + 1, t0)
        tl.store(out_ptr + pid * 4 + 2, t1)
        tl.store(out_ptr + pid * 4 + 3, total.to(tl.int64))

    return probe


def run_case(torch, probe, case: dict) -> dict:
    ctas, chunk = case["ctas"], case["elements_per_cta"]
    x = torch.ones(ctas * chunk, device="cuda", dtype=torch.bfloat16)
    out = torch.zeros(ctas * 4, device="cuda", dtype=torch.int64)
    for _ in range(3):  # warm-up (compilation, clocks)
        probe[(ctas,)](x, out, chunk, BLOCK=BLOCK, num_warps=WARPS)
    torch.cuda.synchronize()
    probe[(ctas,)](x, out, chunk, BLOCK=BLOCK, num_warps=WARPS)
    torch.cuda.synchronize()
    rows = out.view(ctas, 4).tolist()
    t_min = min(r[1] for r in rows)
    records = [{"cta": i, "sm": r[0], "start_ns": r[1] - t_min, "end_ns": r[2] - t_min} for i, r in enumerate(rows)]
    return {**case, "records": records, "summary": summarize(records)}


def summarize(records: list[dict]) -> dict:
    by_start = sorted(records, key=lambda r: r["start_ns"])
    per_sm = collections.Counter(r["sm"] for r in records)
    sms = len(per_sm)
    first = [r for r in by_start if r["start_ns"] < 2000]  # launched at the kernel's start (within 2 us)
    later = [r for r in by_start if r["start_ns"] >= 2000]
    pairs = collections.defaultdict(list)
    for r in first:
        pairs[r["sm"]].append(r["end_ns"])
    gaps = [abs(e[0] - e[1]) for e in pairs.values() if len(e) == 2]
    durations = [r["end_ns"] - r["start_ns"] for r in first]
    later_sms = collections.Counter(r["sm"] for r in later)
    return {"sms_used": sms, "first_wave_ctas": len(first), "later_ctas": len(later),
            "first_wave_duration_ns_median": statistics.median(durations) if durations else None,
            "first_wave_duration_ns_spread": (max(durations) - min(durations)) if durations else None,
            "same_sm_end_gap_ns_median": statistics.median(gaps) if gaps else None,
            "same_sm_end_gap_ns_max": max(gaps) if gaps else None,
            "later_ctas_distinct_sms": len(later_sms),
            "later_ctas_sharing_an_sm": sum(n for n in later_sms.values() if n > 1),
            "kernel_ns": max(r["end_ns"] for r in records)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="validation/data")
    args = parser.parse_args()
    import torch
    probe = build_kernel()
    results = [run_case(torch, probe, case) for case in CASES]
    path = os.path.join(args.out, f"h200_probe_{datetime.date.today()}_cta_placement.json")
    with open(path + ".tmp", "w") as fh:
        json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "block": BLOCK,
                   "warps": WARPS, "cases": results}, fh)
    os.replace(path + ".tmp", path)
    for result in results:
        print(result["ctas"], json.dumps(result["summary"]))
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
