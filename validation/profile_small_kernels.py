"""What a small kernel costs on an H200 besides its work, and how long one CTA's dependent DRAM round trip takes
when every SM runs one or two such CTAs; plus the DRAM bytes of FA2's causal forward, which walks K/V tiles
from the diagonal down (issues #3 and #5: SDPA's split decode kernel at 8 sequences and 1k keys is predicted
25% fast, and FA2's causal d = 128 forward at 32k reads 2.6x what the model predicted).

- `empty`: a Triton kernel that only stores one int per program, grid 1 .. 4224 programs: the time per launch
  of 200 back-to-back launches from Python and from one CUDA graph, and Nsight Compute's duration of one.
- `chain`: every program reads `rounds` tiles of `tile_bytes` bf16 one after another, each load's address
  depending on the previous tile's sum (a true data dependence, so no two loads overlap), from a buffer
  region no other program or round touches. One launch timed with CUDA events after the L2 was flushed by a
  256 MiB memset (median of 30), and under Nsight Compute (which flushes the L2 itself). The slope over
  `rounds` is one dependent round trip of a tile; the intercept is the kernel's fixed cost.
- `fa2_causal`: SDPA's FLASH backend (and cuDNN for comparison), B = 1, H = 16, causal and not, under Nsight
  Compute (DRAM and L2 bytes, duration), twice each.

    python validation/profile_small_kernels.py --out validation/data      (needs torch, triton, CUDA and `ncu`)

Writes `h200_profile_<date>_small_kernels.json`.
"""

from __future__ import annotations

import sys

from ncu_profile import profile_cases_main

METRICS = ["gpu__time_duration.sum", "dram__bytes_read.sum", "dram__bytes_write.sum", "lts__t_bytes.sum",
           "launch__grid_size", "launch__block_size", "launch__registers_per_thread", "sm__cycles_active.avg",
           "launch__shared_mem_per_block_dynamic"]
EMPTY_GRIDS = (1, 132, 264, 1056, 4224)
CHAIN_CASES = [{"grid": g, "rounds": r, "tile_bytes": 32768} for g in (132, 264) for r in (1, 2, 4, 8)] + \
              [{"grid": 264, "rounds": r, "tile_bytes": b} for b in (8192, 16384, 65536) for r in (1, 8)] + \
              [{"grid": g, "rounds": r, "tile_bytes": 32768} for g in (1, 16) for r in (1, 8)]
ATTENTION_CASES = [{"backend": be, "head_dim": d, "seq_len": n, "causal": c, "repeat": rep}
                   for rep in (0, 1)
                   for (be, d, n, c) in [("flash", 128, 16384, True), ("flash", 128, 32768, True),
                                         ("flash", 128, 65536, True), ("flash", 64, 32768, True),
                                         ("flash", 64, 65536, True), ("flash", 128, 32768, False),
                                         ("cudnn", 128, 32768, True), ("cudnn", 128, 65536, True)]]
CASES = [{"kind": "empty", "grid": g} for g in EMPTY_GRIDS] + [{"kind": "chain", **c} for c in CHAIN_CASES] + \
        [{"kind": "attention", **c} for c in ATTENTION_CASES]
HEADS, BATCH = 16, 1
_KERNELS = {}


def kernels():
    """The two Triton kernels, compiled once (triton imported only where a GPU runs this)."""
    if _KERNELS:
        return _KERNELS
    import triton
    import triton.language as tl

    @triton.jit
    def empty_kernel(out):
        tl.store(out + tl.program_id(0), 1)

    @triton.jit
    def chain_kernel(src, out, programs, rounds, ROWS: tl.constexpr, COLS: tl.constexpr):
        pid = tl.program_id(0)
        offs = tl.arange(0, ROWS)[:, None] * COLS + tl.arange(0, COLS)[None, :]
        total = 0.0
        dep = 0
        for r in range(rounds):
            # 8 elements (16 bytes) per unit of dep, so the compiler keeps 16-byte vector loads (cp.async-sized)
            base = tl.multiple_of((r * programs + pid).to(tl.int64) * (ROWS * COLS) + dep * 8, 8)
            x = tl.load(src + base + offs).to(tl.float32)
            s = tl.sum(tl.sum(x, axis=1), axis=0)
            total += s
            dep = (s > 1e30).to(tl.int32)  # 0 for the data used, but the next address waits for this tile
        tl.store(out + pid, total)

    _KERNELS.update(empty=empty_kernel, chain=chain_kernel)
    return _KERNELS


def make_call(torch, case):
    """A function that launches the case's kernels once."""
    if case["kind"] == "empty":
        out = torch.zeros(case["grid"], device="cuda", dtype=torch.int32)
        kernel = kernels()["empty"]
        return lambda: kernel[(case["grid"],)](out, num_warps=4)
    if case["kind"] == "chain":
        cols = 128
        rows = case["tile_bytes"] // 2 // cols
        elements = case["grid"] * case["rounds"] * rows * cols + 8
        src = torch.randn(elements, device="cuda", dtype=torch.bfloat16)
        out = torch.zeros(case["grid"], device="cuda", dtype=torch.float32)
        kernel = kernels()["chain"]
        return lambda: kernel[(case["grid"],)](src, out, case["grid"], case["rounds"], ROWS=rows, COLS=cols,
                                               num_warps=4, num_stages=1)
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    backend = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}[case["backend"]]
    q, k, v = (torch.randn(BATCH, HEADS, case["seq_len"], case["head_dim"], device="cuda", dtype=torch.bfloat16)
               for _ in range(3))

    def call():
        with sdpa_kernel([backend]):
            return F.scaled_dot_product_attention(q, k, v, is_causal=case["causal"])
    return call


def launch_timings(torch) -> list[dict]:
    """Per-launch time of 200 back-to-back empty launches, from Python and replayed from one CUDA graph."""
    rows = []
    for grid in EMPTY_GRIDS:
        fn = make_call(torch, {"kind": "empty", "grid": grid})
        for _ in range(20):
            fn()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(200):
            fn()
        end.record()
        torch.cuda.synchronize()
        stream_us = start.elapsed_time(end) * 1e3 / 200
        graph, stream = torch.cuda.CUDAGraph(), torch.cuda.Stream()
        with torch.cuda.stream(stream):
            fn()
            with torch.cuda.graph(graph, stream=stream):
                for _ in range(200):
                    fn()
        torch.cuda.synchronize()
        graph_us = []
        for _ in range(5):
            start.record()
            graph.replay()
            end.record()
            torch.cuda.synchronize()
            graph_us.append(start.elapsed_time(end) * 1e3 / 200)
        rows.append({"grid": grid, "stream_us_per_launch": stream_us, "graph_us_per_launch": sorted(graph_us)[2]})
    return rows


def chain_timings(torch) -> list[dict]:
    """One chain launch timed with CUDA events after an L2 flush (a 256 MiB memset), median of 30."""
    flush = torch.empty(256 * 2**20, device="cuda", dtype=torch.uint8)
    rows = []
    for case in CHAIN_CASES:
        fn = make_call(torch, {"kind": "chain", **case})
        fn()
        us = []
        for _ in range(30):
            flush.zero_()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            us.append(start.elapsed_time(end) * 1e3)
        us.sort()
        rows.append({**case, "event_us_median": us[len(us) // 2], "event_us_min": us[0]})
    return rows


def main() -> int:
    def timed() -> dict:
        import torch
        import triton
        fields = {"torch": torch.__version__, "triton": triton.__version__}
        for name, part in (("launch_timings", launch_timings), ("chain_timings", chain_timings)):
            try:
                fields[name] = part(torch)
            except Exception as error:  # keep the other parts' results  # noqa: BLE001
                fields[name], fields[name + "_error"] = [], repr(error)
        return fields

    status, record = profile_cases_main(__file__, __doc__, "small_kernels", CASES, make_call, METRICS, timed,
                                        base_units=True)
    if record is None:
        return status
    for row in record["launch_timings"]:
        print("empty", row)
    for row in record["chain_timings"]:
        print("chain", row)
    for kernel in record["kernels"]:
        print(kernel.get("Kernel Name", "")[:50], kernel.get("launch__grid_size"), kernel.get("gpu__time_duration.sum"),
              kernel.get("dram__bytes_read.sum"), kernel.get("lts__t_bytes.sum"), kernel.get("sm__cycles_active.avg"))
    return status


if __name__ == "__main__":
    sys.exit(main())
