"""Tiled GEMM microbenchmark: the tensor-core ceiling (what cuBLAS reaches on large squares).

A Hopper-style schedule (CUTLASS/cuBLAS warp-specialized GEMM): a producer role streams A and B tiles
through a `stages`-deep SMEM ring with asynchronous loads (TMA where the GPU has it, cp.async otherwise),
a consumer role issues the newest tensor-core instruction the GPU has, accumulating in FP32, and writes C
once. Output tiles are rasterized in groups of `group_m` tile rows so that concurrent CTAs share A and B
tiles in L2.
"""

from __future__ import annotations

from gpusim.errors import InputError
from gpusim.launch import KernelPlan, Launch, Option, resolve_options
from gpusim.ops import Acquire, GlobalTensor, Load, Mma, Semaphore, Signal, Store, Tile, Vector, Wait
from gpusim.problem import GemmProblem

NAME = "gemm"
PROBLEM = GemmProblem
OPTIONS = {
    "block_m": Option(int, 128, "output tile rows"),
    "block_n": Option(int, None, "output tile columns (default 256 with wgmma/tcgen05, 128 with mma.sync)"),
    "block_k": Option(int, 64, "reduction depth per stage"),
    "stages": Option(int, 3, "SMEM ring depth"),
    "group_m": Option(int, 8, "tile rows per rasterization group (L2 reuse)"),
}


def raster_order(tiles_m: int, tiles_n: int, group_m: int) -> list[tuple[int, int]]:
    """Grouped row-major order: `group_m` tile rows are swept column by column."""
    order = []
    for g in range(0, tiles_m, group_m):
        rows = range(g, min(g + group_m, tiles_m))
        for n in range(tiles_n):
            order.extend((m, n) for m in rows)
    return order


def build_plan(problem: GemmProblem, hw, options=None) -> KernelPlan:
    opts = resolve_options(NAME, OPTIONS, options)
    instruction = hw.best_instruction(problem.dtype)
    bm, bn, bk, stages = opts["block_m"], opts["block_n"], opts["block_k"], opts["stages"]
    bn = bn or (128 if instruction == "mma_sync" else 256)
    if min(bm, bn, bk, stages, opts["group_m"]) <= 0:
        raise InputError("gemm: tile sizes, stages and group_m must be positive")
    dt = "fp8" if problem.dtype == "fp8" else problem.dtype
    a = GlobalTensor("A", (problem.m, problem.k), dt, "input")
    b = GlobalTensor("B", (problem.k, problem.n), dt, "input")
    c = GlobalTensor("C", (problem.m, problem.n), "bf16", "output")
    tiles_m, tiles_n, tiles_k = -(-problem.m // bm), -(-problem.n // bn), -(-problem.k // bk)
    elem = a.nbytes // max(1, problem.m * problem.k)
    smem = stages * (bm * bk + bk * bn) * max(elem, 1) + bm * bn * 2

    def program(tile):
        m, n = tile
        rows, cols = slice(m * bm, (m + 1) * bm), slice(n * bn, (n + 1) * bn)
        a_buf = [Tile((bm, bk), dt, "smem", f"A{s}") for s in range(stages)]
        b_buf = [Tile((bk, bn), dt, "smem", f"B{s}") for s in range(stages)]
        full = [Semaphore(f"full{s}") for s in range(stages)]
        empty = [Semaphore(f"empty{s}", initial=1) for s in range(stages)]
        acc = Tile((bm, bn), "fp32", "reg", "acc")

        def producer():
            for kk in range(tiles_k):
                s = kk % stages
                yield Acquire(empty[s])
                ks = slice(kk * bk, (kk + 1) * bk)
                yield Load(a.region(rows, ks), a_buf[s], wait=False, signal=full[s], tma=hw.has_tma)
                yield Load(b.region(ks, cols), b_buf[s], wait=False, signal=full[s], tma=hw.has_tma)

        def consumer():
            # keep one MMA group in flight (wgmma wait<1>): issue step kk, then retire step kk-1 and free
            # its stage, so the group's completion latency overlaps the next group's work
            in_flight = None
            for kk in range(tiles_k):
                s = kk % stages
                yield Acquire(full[s], 2)
                handle = yield Mma(a_buf[s], b_buf[s], acc, instruction, accumulate=kk > 0, wait=False)
                if in_flight is not None:
                    yield Wait(in_flight[0])
                    yield Signal(empty[in_flight[1]])
                in_flight = (handle, s)
            yield Wait(in_flight[0])
            out = Tile((bm, bn), "bf16", "smem", "C")
            yield Vector(lambda x: x, [acc], out, fp32_ops_per_element=1)
            yield Store(out, c.region(rows, cols))

        return [producer(), consumer()]

    launch = Launch(name="gemm", grid=raster_order(tiles_m, tiles_n, opts["group_m"]), program=program,
                    smem_bytes_per_cta=smem, threads_per_cta=384, registers_per_thread=168,
                    shared_by=lambda tile: {"A": tile[0], "B": tile[1]})
    return KernelPlan(kernel=NAME, tensors={"A": a, "B": b, "C": c}, launches=[launch],
                      info={"block": (bm, bn, bk), "stages": stages, "instruction": instruction})
