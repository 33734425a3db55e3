"""What PyTorch's SDPA (FLASH backend) launches for GQA decode on an H200, kernel by kernel, with Nsight Compute:
names, grid, block, registers, shared memory, duration, DRAM/L2 bytes and instructions executed, and the
time of the whole call with CUDA events (plain and replayed from a CUDA graph). The campaign's `sdpa_flash`
decode rows (validation/README.md, decode group) are predicted 20-35% fast at B >= 32 and for kernels under
about 30 us; this says which kernels and launch shapes the call really runs.

    python validation/profile_sdpa_decode.py --out validation/data      (needs torch, CUDA and `ncu`)

Writes `h200_profile_<date>_sdpa_decode.json`.
"""

from __future__ import annotations

import sys

from ncu_profile import event_timings, profile_cases_main

METRICS = ["gpu__time_duration.sum", "dram__bytes_read.sum", "dram__bytes_write.sum", "lts__t_bytes.sum",
           "launch__grid_size", "launch__block_size", "launch__registers_per_thread",
           "launch__shared_mem_per_block_dynamic", "launch__shared_mem_per_block_static",
           "smsp__inst_executed.sum", "sm__warps_active.avg.pct_of_peak_sustained_active",
           "sm__cycles_active.avg", "sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active",
           "smsp__cycles_active.avg"]
HQ, HKV, D = 32, 8, 128
CASES = [{"batch": b, "kv_len": n} for b in (1, 8, 32, 64) for n in (1024, 4096, 16384)]


def sdpa_decode(torch, case):
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    b, n = case["batch"], case["kv_len"]
    q = torch.randn(b, HQ, 1, D, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(b, HKV, n, D, device="cuda", dtype=torch.bfloat16) for _ in range(2))

    def call():
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    return call


def graph_timings(cases: list, warmup: int = 3, repeats: int = 50) -> list[dict]:
    """Each case captured in a CUDA graph and replayed: the GPU time without Python launch gaps."""
    import torch
    rows = []
    for case in cases:
        fn = sdpa_decode(torch, case)
        for _ in range(warmup):
            fn()
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        stream = torch.cuda.Stream()
        with torch.cuda.stream(stream):
            fn()
            with torch.cuda.graph(graph, stream=stream):
                fn()
        torch.cuda.synchronize()
        ms = []
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            graph.replay()
            end.record()
            torch.cuda.synchronize()
            ms.append(start.elapsed_time(end))
        ms.sort()
        rows.append({**case, "graph_ms_median": ms[len(ms) // 2], "graph_ms_min": ms[0]})
        graph = fn = None
        torch.cuda.empty_cache()
    return rows


def main() -> int:
    def timed() -> dict:
        import torch
        return {"event_timings": event_timings(CASES, sdpa_decode), "graph_timings": graph_timings(CASES),
                "torch": torch.__version__}

    status, record = profile_cases_main(__file__, __doc__, "sdpa_decode", CASES, sdpa_decode, METRICS, timed)
    if record is None:
        return status
    for row, graph in zip(record["event_timings"], record["graph_timings"]):
        print(row["batch"], row["kv_len"], f"plain {row['time_ms_median'] * 1e3:.1f} us",
              f"graph {graph['graph_ms_median'] * 1e3:.1f} us")
    for kernel in record["kernels"]:
        print(kernel.get("Kernel Name", "")[:80], kernel.get("launch__grid_size"), kernel.get("launch__block_size"),
              kernel.get("launch__registers_per_thread"), kernel.get("gpu__time_duration.sum"),
              kernel.get("smsp__inst_executed.sum"), kernel.get("dram__bytes_read.sum"))
    return status


if __name__ == "__main__":
    sys.exit(main())
