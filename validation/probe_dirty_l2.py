"""Does do_bench's L2 flush leave dirty lines that a short kernel must write back? (issues #3, #5)

triton.testing.do_bench, which timed every row of the reference campaign and of measure_h200.py, clears L2
before each repeat by zeroing a 256 MB buffer. If a write-back L2 then holds part of that buffer as dirty lines, a
kernel's first misses evict them and write them to DRAM, on the same HBM, until they are gone. Run 18 saw a first
burst after the flush drain at 2.1-3.0 TB/s against 4.25 TB/s for repeated rounds, and short decode rows ran
20-35% slower than the model's empty L2 allowed. (Run 25's answer: about 28.8 MB of dirty lines, written back at
0.31-0.37 bytes per byte missed; validation/README.md.)

Each case is timed as the campaign's decode rows were (do_bench over replays of a CUDA graph holding one call:
per repeat, prepare, start event, replay, end event; medians of REPEATS) after three preparations, each ending
with a GPU sleep so that the host has queued the replay before the GPU reaches it:
- `dirty`: zero the 256 MB buffer (do_bench's flush);
- `clean`: the same, then read another 256 MB buffer (evicting the dirty lines: L2 ends clean, without the
  inputs);
- `warm`: nothing (back to back: the inputs stay in L2 where they fit).
Then Nsight Compute, with `--cache-control none` so that the preparation's L2 state reaches the kernel, counts
the DRAM bytes read and written by every kernel of a few cases after `dirty` and `clean`.

    python validation/probe_dirty_l2.py --out validation/data      (needs torch, triton, CUDA; ncu optional)

Writes `h200_probe_<date>_dirty_l2.json`.
"""

from __future__ import annotations

import datetime
import json
import os
import statistics
import sys

import measure_h200 as campaign
from ncu_profile import profile_args, profile_until_kernels, run_cases, write_json
from profile_launch_timeline import make_call

REPEATS = 40
FLUSH_BYTES = 256 * 1024 * 1024
PREPARATIONS = ("dirty", "clean", "warm")
#: GPU sleep at the end of every preparation (about 60 us), longer than the host takes to queue a replay.
SLEEP_CYCLES = 100_000
READ_MB = (4, 16, 32, 48, 64, 128)
CASES = [{"kind": "empty", "grid": 132}] + \
        [{"kind": "read", "mbytes": mb} for mb in READ_MB] + \
        [{"kind": "decode", "impl": impl, "batch": b, "kv_len": n}
         for impl, b, n in [("sdpa_flash", 8, 1024), ("sdpa_flash", 1, 1024), ("sdpa_flash", 8, 4096),
                            ("sdpa_flash", 8, 16384), ("sdpa_cudnn", 8, 1024), ("splitk", 8, 1024),
                            ("nosplit", 8, 1024), ("nosplit", 16, 1024), ("nosplit", 16, 4096)]] + \
        [{"kind": "prefill", "backend": backend, "batch": 32, "heads": 32, "seq_len": 512, "head_dim": 64}
         for backend in ("flash", "cudnn")]
#: The cases Nsight Compute counts DRAM bytes for, after `dirty` and after `clean`.
NCU_CASES = [{"kind": "read", "mbytes": 32}, {"kind": "read", "mbytes": 128},
             {"kind": "decode", "impl": "sdpa_flash", "batch": 8, "kv_len": 1024},
             {"kind": "decode", "impl": "nosplit", "batch": 16, "kv_len": 1024}]
NCU_METRICS = ["dram__bytes_read.sum", "dram__bytes_write.sum", "gpu__time_duration.sum"]


def case_call(torch, case):
    """The case's callable: a plain read of `mbytes` (a sum over a bf16 tensor) or profile_launch_timeline's."""
    if case["kind"] == "read":
        x = torch.randn(case["mbytes"] * 2 ** 19, device="cuda", dtype=torch.bfloat16)
        return lambda: x.sum()
    return make_call(torch, case)


class Preparations:
    """The L2 states a call can start from (see the module docstring)."""

    def __init__(self, torch):
        self.torch = torch
        self.flush = torch.empty(FLUSH_BYTES // 4, device="cuda", dtype=torch.int32)
        self.other = torch.ones(FLUSH_BYTES // 2, device="cuda", dtype=torch.bfloat16)

    def run(self, name: str) -> None:
        if name in ("dirty", "clean"):
            self.flush.zero_()
        if name == "clean":
            self.other.sum()
        self.torch.cuda._sleep(SLEEP_CYCLES)


def timed(torch, call, prepare) -> dict:
    """do_bench's loop: per repeat, prepare, start event, call, end event; median and quartiles in us."""
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(REPEATS)]
    for start, end in events:
        prepare()
        start.record()
        call()
        end.record()
    torch.cuda.synchronize()
    us = sorted(s.elapsed_time(e) * 1e3 for s, e in events)
    return {"us_median": statistics.median(us), "us_p25": us[len(us) // 4], "us_p75": us[3 * len(us) // 4]}


def ncu_case(torch, case):
    """The profiled callable: the preparation, then the call (both inside the profiled region)."""
    call = case_call(torch, case["case"])
    prep = Preparations(torch)

    def prepared():
        prep.run(case["prep"])
        call()
    return prepared


def main() -> int:
    args = profile_args(__doc__)
    ncu_cases = [{"case": c, "prep": p} for c in NCU_CASES for p in ("dirty", "clean")]
    torch = campaign.import_gpu()
    if args.driver:
        run_cases(ncu_cases, ncu_case)
        return 0
    prep = Preparations(torch)
    rows, errors = [], []
    for case in CASES:
        try:
            eager = case_call(torch, case)
            for _ in range(3):
                eager()
            graph = campaign.capture_graph(eager)
            call = graph.replay
            row = dict(case)
            for name in PREPARATIONS:
                row[name] = timed(torch, call, lambda name=name: prep.run(name))
        except Exception as e:  # keep the other cases: one backend missing must not lose the run
            errors.append({**case, "error": f"{type(e).__name__}: {e}"})
            print("error", case, e, file=sys.stderr)
            continue
        rows.append(row)
        print(json.dumps(case), " ".join(f"{n}={row[n]['us_median']:.1f}" for n in PREPARATIONS), flush=True)
        call = graph = eager = None
        torch.cuda.empty_cache()
    prep = None  # free its 512 MB before the profiled child allocates its own
    torch.cuda.empty_cache()
    kernels, ncu_runs = profile_until_kernels(__file__, [NCU_METRICS], driver_flag="--driver", timeout=400,
                                              ncu_flags=("--cache-control", "none"))
    record = {"script": "validation/probe_dirty_l2.py", "date": datetime.date.today().isoformat(),
              "meta": campaign.env_meta(), "repeats": REPEATS, "flush_bytes": FLUSH_BYTES, "rows": rows,
              "errors": errors, "ncu_cases": ncu_cases, "ncu_kernels": kernels, "ncu_runs": ncu_runs}
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"h200_probe_{record['date']}_dirty_l2.json")
    write_json(path, record)
    for k in kernels:
        print({key: k.get(key) for key in ("Kernel Name", *NCU_METRICS)})
    print("wrote", path)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
