"""How many bytes of cp.async (LDGSTS, global -> shared, the loads FA2 and Triton's pipelined kernels use) one
SM keeps in flight on an H200, and how long a dependent round trip of FA2-sized tiles takes when every SM runs
one or two such CTAs (issue #3 and #5: with a 48 KiB window per SM, calibrated on register loads by
copy_vs_sms, FA2's split decode kernel cannot reach the HBM bandwidth it measurably reaches at 8 sequences and
16k-128k keys).

A CUDA kernel (compiled here with torch's load_inline) where each CTA of 128 threads runs `rounds` rounds; in
a round it issues `bytes_per_round` of 16-byte cp.async.cg into shared memory from a region no other CTA or
round touches, commits, waits for all of it (cp.async.wait_group 0) and syncs. Rounds are one after another,
so a round's time is one round trip of that many bytes. Timed with CUDA events around one launch after the
L2 was flushed (a 256 MiB memset), median of 15; a round's time is (t(9 rounds) - t(1 round)) / 8.

- `lone`: one CTA on the GPU, bytes per round 8 KiB .. 192 KiB: the time per round against the bytes in
  flight. Linear growth with no knee means the SM streams at one rate; a knee at W bytes means a window of W.
- `loaded`: 132 or 264 CTAs (one or two per SM), 16, 32 or 64 KiB per round each.
- `warm`: as `lone`, without the flush: the rounds re-read what the previous launch left in L2 (L2 hits).
- `bursts`: one round per CTA (132 or 264 CTAs, 16 or 64 KiB each), each CTA stamping the GPU's global timer
  when it starts issuing and when all its bytes have landed: the quantiles of the landing times (us after the
  first start) show whether the memory system serves the burst first come, first served (landings spread
  evenly up to the burst's end) or interleaved (landings bunched at its end).

    python validation/probe_cp_async_window.py --out validation/data      (needs torch with nvcc, and CUDA)

Writes `h200_probe_<date>_cp_async_window.json`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

CUDA_SOURCE = r"""
#include <cuda_runtime.h>
#include <torch/extension.h>

// Copy vecs 16-byte vectors from p into shared memory with cp.async, and wait until all of them have landed.
__device__ void copy_round(const int4* p, int4* smem, int vecs) {
    for (int i = threadIdx.x; i < vecs; i += blockDim.x) {
        unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(&smem[i]));
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" :: "r"(dst), "l"(p + i));
    }
    asm volatile("cp.async.commit_group;\n" ::);
    asm volatile("cp.async.wait_group 0;\n" ::);
    __syncthreads();
}

__global__ void cp_async_rounds(const int4* __restrict__ src, int* out, int rounds, int vecs_per_round) {
    extern __shared__ int4 smem[];
    const long long cta_base = (long long)blockIdx.x * rounds * vecs_per_round;
    int acc = 0;
    for (int r = 0; r < rounds; ++r) {
        copy_round(src + cta_base + (long long)r * vecs_per_round, smem, vecs_per_round);
        acc += smem[threadIdx.x].x;
        __syncthreads();
    }
    if (acc == 0x7fffffff) out[blockIdx.x] = acc;
}

// One round per CTA, timed on the GPU's global timer: when the CTA started issuing and when its bytes had all
// landed, so the spread of finishing times within one burst shows how the memory system orders requesters.
__global__ void cp_async_burst(const int4* __restrict__ src, long long* stamps, int vecs_per_round) {
    extern __shared__ int4 smem[];
    const int4* p = src + (long long)blockIdx.x * vecs_per_round;
    long long t0, t1;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
    copy_round(p, smem, vecs_per_round);
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t1));
    if (threadIdx.x == 0) {
        stamps[2 * blockIdx.x] = t0;
        stamps[2 * blockIdx.x + 1] = t1 + (smem[0].x == 0x7fffffff);
    }
}

void burst(torch::Tensor src, torch::Tensor stamps, int64_t grid, int64_t bytes_per_round) {
    int smem = static_cast<int>(bytes_per_round);
    cudaFuncSetAttribute(cp_async_burst, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    cp_async_burst<<<static_cast<int>(grid), 128, smem>>>(
        reinterpret_cast<const int4*>(src.data_ptr()), reinterpret_cast<long long*>(stamps.data_ptr<int64_t>()),
        static_cast<int>(bytes_per_round / 16));
}

void launch(torch::Tensor src, torch::Tensor out, int64_t grid, int64_t rounds, int64_t bytes_per_round) {
    int vecs = static_cast<int>(bytes_per_round / 16);
    int smem = static_cast<int>(bytes_per_round);
    cudaFuncSetAttribute(cp_async_rounds, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    cp_async_rounds<<<static_cast<int>(grid), 128, smem>>>(
        reinterpret_cast<const int4*>(src.data_ptr()), out.data_ptr<int>(), static_cast<int>(rounds), vecs);
}
"""
CPP_SOURCE = ("void launch(torch::Tensor src, torch::Tensor out, int64_t grid, int64_t rounds, "
              "int64_t bytes_per_round);\n"
              "void burst(torch::Tensor src, torch::Tensor stamps, int64_t grid, int64_t bytes_per_round);")
KIB = 1024
CASES = [{"part": "lone", "grid": 1, "bytes_per_round": b * KIB} for b in (8, 16, 32, 48, 64, 96, 128, 192)] + \
        [{"part": "loaded", "grid": g, "bytes_per_round": b * KIB} for g in (132, 264) for b in (16, 32, 64)] + \
        [{"part": "warm", "grid": 1, "bytes_per_round": b * KIB} for b in (8, 16, 32, 64, 128)]
ROUNDS = (1, 9)
BURST_GRIDS = (132, 264)
BURST_BYTES = (16 * KIB, 64 * KIB)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="validation/data")
    args = parser.parse_args()
    import torch
    from torch.utils.cpp_extension import load_inline

    module = load_inline("cp_async_probe", cpp_sources=CPP_SOURCE, cuda_sources=CUDA_SOURCE,
                         functions=["launch", "burst"], extra_cuda_cflags=["-O3", "-arch=sm_90"], verbose=False)
    flush = torch.empty(256 * 2**20, device="cuda", dtype=torch.uint8)
    rows = []
    for case in CASES:
        row = dict(case)
        for rounds in ROUNDS:
            src = torch.randint(0, 100, (case["grid"] * rounds * case["bytes_per_round"] // 4,), device="cuda",
                                dtype=torch.int32)
            out = torch.zeros(case["grid"], device="cuda", dtype=torch.int32)
            module.launch(src, out, case["grid"], rounds, case["bytes_per_round"])
            torch.cuda.synchronize()
            us = []
            for _ in range(15):
                if case["part"] == "warm":  # the previous launch left this region in L2; keep the GPU busy
                    torch.cuda._sleep(200_000)  # while the host launches (no memory traffic)
                else:
                    flush.zero_()
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                module.launch(src, out, case["grid"], rounds, case["bytes_per_round"])
                end.record()
                torch.cuda.synchronize()
                us.append(start.elapsed_time(end) * 1e3)
            us.sort()
            row[f"us_{rounds}_rounds"] = us[len(us) // 2]
            row[f"us_{rounds}_rounds_all"] = [round(x, 3) for x in us]
        row["us_per_round"] = (row[f"us_{ROUNDS[1]}_rounds"] - row[f"us_{ROUNDS[0]}_rounds"]) / (ROUNDS[1] - ROUNDS[0])
        row["GBps_per_cta"] = case["bytes_per_round"] / row["us_per_round"] / 1e3 if row["us_per_round"] > 0 else None
        rows.append(row)
        print(json.dumps(row), flush=True)
    bursts = []
    for grid in BURST_GRIDS:
        for nbytes in BURST_BYTES:
            src = torch.randint(0, 100, (grid * nbytes // 4,), device="cuda", dtype=torch.int32)
            stamps = torch.zeros(2 * grid, device="cuda", dtype=torch.int64)
            module.burst(src, stamps, grid, nbytes)
            for repeat in range(3):
                flush.zero_()
                module.burst(src, stamps, grid, nbytes)
                torch.cuda.synchronize()
                t = stamps.view(grid, 2).cpu().tolist()
                first = min(a for a, _ in t)
                ends = sorted((b - first) / 1e3 for _, b in t)
                starts = sorted((a - first) / 1e3 for a, _ in t)
                row = {"grid": grid, "bytes_per_cta": nbytes, "repeat": repeat, "start_us_max": starts[-1],
                       "end_us": [round(ends[int(q * (grid - 1))], 3) for q in (0, 0.1, 0.25, 0.5, 0.75, 0.9, 1)]}
                bursts.append(row)
                print(json.dumps(row), flush=True)
    record = {"cases": rows, "bursts": bursts, "burst_quantiles": [0, 0.1, 0.25, 0.5, 0.75, 0.9, 1],
              "torch": torch.__version__, "gpu": torch.cuda.get_device_name(),
              "rounds": ROUNDS, "source": CUDA_SOURCE}
    path = os.path.join(args.out, f"h200_probe_{datetime.date.today()}_cp_async_window.json")
    with open(path + ".tmp", "w") as f:
        json.dump(record, f, indent=1)
    os.replace(path + ".tmp", path)
    print("->", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
