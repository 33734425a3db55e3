"""Nsight Compute SM cycles of the forward attention kernels on an H200 that the project has no cycle counts for.
They are cuDNN's fused forward (PyTorch SDPA, CUDNN_ATTENTION backend) at d = 64 and 128, and FlashAttention-2's
forward (FLASH_ATTENTION backend) at d = 256 and at N = 8192. Cycles are what the model predicts before its
clock, which the 700 W cap moves under load (1.71-1.80 GHz in the earlier profiles), so `sm__cycles_active.max`
per kernel is a reference free of the clock; cycles over duration gives the clock the kernel ran at.

    python validation/profile_kernel_cycles.py --out validation/data      (needs torch, CUDA and `ncu`)

Writes `h200_profile_<date>_kernel_cycles.json`: per profiled kernel (in case order) its launch shape, duration,
SM cycles active and elapsed, tensor-pipe activity, shared-memory wavefronts and instructions executed; then the
same cases timed without the profiler (CUDA events, median of 20 calls).
"""

from __future__ import annotations

import sys

from ncu_profile import event_timings, profile_cases_main

METRICS = ["gpu__time_duration.sum", "sm__cycles_active.max", "sm__cycles_active.avg", "sm__cycles_elapsed.max",
           "launch__grid_size", "launch__block_size", "launch__registers_per_thread",
           "launch__shared_mem_per_block_dynamic",
           "sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active",
           "l1tex__data_pipe_lsu_wavefronts_mem_shared.sum", "smsp__inst_executed.sum"]


def sdpa_case(backend: str, b: int, h: int, n: int, d: int, causal: bool = False) -> dict:
    return {"backend": backend, "batch": b, "heads": h, "seq_len": n, "head_dim": d, "causal": causal}


CASES = [sdpa_case("cudnn", *shape) for shape in ((32, 32, 512, 64), (8, 32, 2048, 64), (2, 32, 8192, 64),
                                              (32, 16, 512, 128), (8, 16, 2048, 128), (2, 16, 8192, 128))] + \
        [sdpa_case("cudnn", 8, 16, 2048, 128, True), sdpa_case("cudnn", 8, 32, 2048, 64, True)] + \
        [sdpa_case("flash", *shape) for shape in ((32, 8, 512, 256), (8, 8, 2048, 256), (2, 8, 8192, 256))] + \
        [sdpa_case("flash", 8, 8, 2048, 256, True), sdpa_case("flash", 2, 16, 8192, 128),
         sdpa_case("flash", 2, 32, 8192, 64)]


def sdpa_forward(torch, case):
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    backend = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}[case["backend"]]
    b, h, n, d = case["batch"], case["heads"], case["seq_len"], case["head_dim"]
    q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))

    def call():
        with sdpa_kernel([backend]):
            return F.scaled_dot_product_attention(q, k, v, is_causal=case["causal"])
    return call


def ncu_number(text) -> float | None:
    try:
        return float(str(text).replace(",", ""))
    except ValueError:
        return None


def profile_cycles_main(script: str, doc: str, name: str, cases: list, metrics: list, *columns: str,
                        make_callable=sdpa_forward) -> int:
    """Time `cases` (CUDA events), profile them under Nsight Compute and print each kernel's cycles and clock,
    with the metrics named in `columns` after them; the record goes to `h200_profile_<date>_<name>.json`.
    `make_callable(torch, case)` launches a case's kernels (default: SDPA's forward)."""
    def timed() -> dict:
        import torch
        return {"event_timings": event_timings(cases, make_callable), "torch": torch.__version__,
                "device": torch.cuda.get_device_name(0)}

    status, record = profile_cases_main(script, doc, name, cases, make_callable, metrics, timed)
    if record is None:
        return status
    for row in record["event_timings"]:
        print(row["backend"], row["batch"], row["heads"], row["seq_len"], row["head_dim"], row["causal"],
              f"{row['time_ms_median'] * 1e3:.1f} us")
    for kernel in record["kernels"]:  # ncu's raw page gives gpu__time_duration in ns, so cycles / ns is GHz
        cycles, ns = ncu_number(kernel.get("sm__cycles_active.max")), ncu_number(kernel.get("gpu__time_duration.sum"))
        ghz = f"{cycles / ns:.3f} GHz" if cycles and ns else "-"
        print(kernel.get("Kernel Name", "")[:60], kernel.get("Grid Size"), kernel.get("gpu__time_duration.sum"),
              kernel.get("sm__cycles_active.max"), ghz, *(kernel.get(column) for column in columns))
    return status


def main() -> int:
    return profile_cycles_main(__file__, __doc__, "kernel_cycles", CASES, METRICS)


if __name__ == "__main__":
    sys.exit(main())
