"""Which lines the H200's L2 keeps when each is read once and then once more after a given lag (run 57).

Runs 26 and 50 measured the L2 on streams that every SM re-reads in the same order, pass after pass: every line is
used many times, at one reuse distance. The causal forward's K/V tiles are read by a few CTAs at a time, at many
distances, and the model's L2 (fitted to run 26) re-reads about half of what the GPU does on the GPU's own causal
schedules (validation/replay_causal_schedule.py). This measures the L2 on the simplest pattern of that kind: one
kernel per case; `GROUP` leader CTAs stream a buffer of `STREAM_MIB` in order, chunk by chunk; as many follower CTAs
read the same chunks in the same order, each chunk only once the leaders have finished the chunk `lag_mib` further
on (a counter in global memory that the leaders add to and the followers poll). So every line is read once by a
leader and once more by a follower, with `lag_mib` of new lines read in between. Nsight Compute (its default cache
control: the L2 is flushed before each kernel) counts the kernel's DRAM reads; the followers' re-read share is
(DRAM reads - STREAM_MIB) / STREAM_MIB. A second pass without the profiler records how far ahead of each follower
chunk the leaders really were (the lag is a lower bound: followers that hit run faster and wait).

    python validation/probe_l2_reuse_lag.py --out validation/data      (needs torch, triton and ncu)
    python validation/probe_l2_reuse_lag.py --readers --out validation/data   (run 57b: k followers, each line
                                                                               read k + 1 times over the lag)
    python validation/probe_l2_reuse_lag.py --more --out validation/data      (run 59: seven followers; Q- and
                                                                               O-like side traffic)

Writes `h200_probe_<date>_l2_reuse_lag.json` (`_l2_reuse_readers.json` with --readers, `_l2_reuse_more.json` with
--more).
"""

from __future__ import annotations

import datetime
import os
import sys

import measure_h200 as campaign
from ncu_profile import event_timings, profile_until_kernels, run_cases, write_json

STREAM_MIB = 128
CHUNK = 8192  # bf16 elements a CTA reads per step (16 KiB)
CHUNK_BYTES = 2 * CHUNK
METRICS = ["dram__bytes_read.sum", "dram__bytes_write.sum", "lts__t_bytes.sum", "gpu__time_duration.sum"]
#: (CTAs per group, lag in MiB): 66 + 66 CTAs (one per SM) and 132 + 132 (two per SM, both groups on every SM).
CASES = [{"group": group, "lag_mib": lag} for group in (66, 132)
         for lag in (1, 4, 8, 11, 14, 17, 20, 23, 26, 29, 32, 38, 48)]
#: `--readers` (run 57b): `followers` groups of 33 CTAs read each line after the leaders, follower f (1..k) at f / k of
#: the lag, so a line is read k + 1 times with lag / k of new lines between reads.
READER_CASES = [{"group": 33, "followers": k, "lag_mib": lag} for k in (1, 3)
                for lag in (14, 20, 26, 32, 40, 48, 64, 80)]
#: `--more` (run 59): seven follower groups of 16 CTAs (a line read eight times), and one or three followers with side
#: traffic: for every chunk the leaders read, a fresh half chunk read (like Q) and one written (like O), each by one
#: leader, as a causal forward reads and writes about as much new Q and O as new K/V.
SIDE = CHUNK // 2
MORE_CASES = ([{"group": 16, "followers": 7, "lag_mib": lag} for lag in (14, 20, 26, 32, 40, 48, 64)]
              + [{"group": 33, "followers": k, "lag_mib": lag, "side": True} for k in (1, 3)
                 for lag in (8, 14, 20, 26, 32, 40, 48)])


def lag_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def reuse_lag(x_ptr, counter_ptr, lead_ptr, out_ptr, q_ptr, o_ptr, n_chunks, lag_chunks, followers,
                  GROUP: tl.constexpr, CHUNK: tl.constexpr, SIDE: tl.constexpr = 0):
        pid = tl.program_id(0)
        me = pid % GROUP
        group = pid // GROUP  # 0: the leaders; f = 1..followers: at f / followers of the lag
        offs = tl.arange(0, CHUNK)
        acc = tl.zeros([CHUNK], dtype=tl.float32)
        if pid < GROUP:  # a leader: read, then count the chunk done
            for c in range(me, n_chunks, GROUP):
                acc += tl.load(x_ptr + c * CHUNK + offs).to(tl.float32)
                if SIDE > 0:  # a fresh Q-like half chunk read, and an O-like one written
                    side_offs = c * SIDE + tl.arange(0, SIDE)
                    tl.store(o_ptr + side_offs, tl.load(q_ptr + side_offs) + 1)
                # counted once its data is in (acc is positive, so the comparison adds 0; it only waits)
                tl.atomic_add(counter_ptr, 1 + (tl.sum(acc, 0) < -1.0).to(tl.int32))
        else:  # a follower: wait until the leaders are its lag ahead of this chunk
            my_lag = group * lag_chunks // followers
            for c in range(me, n_chunks, GROUP):
                target = tl.minimum(c + my_lag + 1, n_chunks)
                done = tl.atomic_add(counter_ptr, 0)
                while done < target:
                    done = tl.atomic_add(counter_ptr, 0)
                tl.store(lead_ptr + (group - 1) * n_chunks + c, done - c)
                acc += tl.load(x_ptr + c * CHUNK + offs).to(tl.float32)
        tl.store(out_ptr + pid * CHUNK + offs, acc)
    return reuse_lag


def lag_launch(torch, case):
    """One launch of the case (the counter zeroed first), and the buffer of the leaders' lead at each follower chunk."""
    n_chunks = STREAM_MIB * 2 ** 20 // CHUNK_BYTES
    x = torch.ones(n_chunks * CHUNK, device="cuda", dtype=torch.bfloat16)
    counter = torch.zeros(1, device="cuda", dtype=torch.int32)
    followers = case.get("followers", 1)
    side = SIDE if case.get("side") else 0
    q = torch.ones(max(1, side * n_chunks), device="cuda", dtype=torch.bfloat16)
    o = torch.empty_like(q)
    lead = torch.zeros(followers * n_chunks, device="cuda", dtype=torch.int32)
    out = torch.empty((1 + followers) * case["group"] * CHUNK, device="cuda", dtype=torch.float32)
    kernel = lag_kernel()
    lag_chunks = case["lag_mib"] * 2 ** 20 // CHUNK_BYTES

    def launch():
        counter.zero_()
        kernel[((1 + followers) * case["group"],)](x, counter, lead, out, q, o, n_chunks, lag_chunks, followers,
                                                  GROUP=case["group"], CHUNK=CHUNK, SIDE=side)
    return launch, lead


def leads(cases) -> list[dict]:
    """Without the profiler: each case's time (CUDA events, median of 5 after a warm-up) and the leaders' lead over
    the followers' chunks in MiB (quantiles)."""
    buffers = {}

    def launch_keeping_lead(torch, case):
        launch, buffers["lead"] = lag_launch(torch, case)
        return launch

    rows = []
    for case in cases:
        (row,) = event_timings([case], launch_keeping_lead, warmup=1, repeats=5)
        lead = buffers.pop("lead")
        mib = sorted((lead[-(lead.numel() // case.get("followers", 1)):].float() * CHUNK_BYTES / 2 ** 20).tolist())
        row.update({f"lead_mib_p{p}": round(mib[min(len(mib) - 1, len(mib) * p // 100)], 3) for p in (5, 50, 95)})
        rows.append(row)
        print("LEAD", row, flush=True)
    return rows


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="validation/data")
    parser.add_argument("--readers", action="store_true", help="run 57b's cases: a line read by several followers")
    parser.add_argument("--more", action="store_true", help="run 59's cases: seven followers; side traffic")
    parser.add_argument("--driver", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    campaign.import_gpu()
    cases, name = ((MORE_CASES, "l2_reuse_more") if args.more else (READER_CASES, "l2_reuse_readers") if args.readers
                   else (CASES, "l2_reuse_lag"))
    if args.driver:
        run_cases(cases, lambda torch, case: lag_launch(torch, case)[0])
        return 0
    timings = leads(cases)
    kernels, runs = profile_until_kernels(__file__, [METRICS], driver_flag="--driver", timeout=500,
                                          driver_args=("--more",) if args.more else ("--readers",) if args.readers
                                          else ())
    kernels = [k for k in kernels if "reuse_lag" in k.get("Kernel Name", "")]
    record = {"script": "validation/probe_l2_reuse_lag.py", "date": datetime.date.today().isoformat(),
              "meta": campaign.env_meta(), "stream_mib": STREAM_MIB, "chunk_bytes": CHUNK_BYTES, "cases": cases,
              "metrics": METRICS, "kernels": kernels, "timings": timings, "ncu_runs": runs}
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"h200_probe_{record['date']}_{name}.json")
    write_json(path, record)
    stream = STREAM_MIB * 2 ** 20
    for case, kernel, timing in zip(cases, kernels, timings):
        side_read = stream // 2 if case.get("side") else 0  # the Q-like reads, each once
        dram = (campaign._num(kernel.get("dram__bytes_read.sum")) or 0.0) - side_read
        print(f"group {case['group']} x {case.get('followers', 1)} followers, lag {case['lag_mib']} MiB (last "
              f"follower's lead p50 {timing['lead_mib_p50']} MiB): followers re-read {(dram - stream) / stream:.3f} "
              f"of the stream; {timing['time_ms_median']:.3f} ms")
    print("wrote", path)
    return 0 if len(kernels) == len(cases) else 1


if __name__ == "__main__":
    sys.exit(main())
