"""Streaming copy microbenchmark: the HBM bandwidth ceiling and per-SM memory-level parallelism.

Persistent CTAs (one per SM, or on `sms` SMs only) walk the buffer in chunks, keeping `stages` asynchronous
chunk loads in flight and writing each chunk back out, as a device-to-device copy kernel does. With all SMs
it measures achievable HBM bandwidth (read + write); with a few it shows the per-SM in-flight limit.
"""

from __future__ import annotations

from collections import deque

from gpusim.errors import InputError
from gpusim.launch import KernelPlan, Launch, Option, resolve_options
from gpusim.ops import GlobalTensor, Load, Store, Tile, Wait
from gpusim.problem import CopyProblem

NAME = "copy"
PROBLEM = CopyProblem
OPTIONS = {
    "chunk_bytes": Option(int, 16384, "bytes per load/store"),
    "stages": Option(int, 4, "chunk loads kept in flight per CTA"),
}


def build_plan(problem: CopyProblem, hw, options=None) -> KernelPlan:
    opts = resolve_options(NAME, OPTIONS, options)
    chunk, stages = opts["chunk_bytes"], opts["stages"]
    if chunk <= 0 or stages <= 0:
        raise InputError("copy: chunk_bytes and stages must be positive")
    sms = problem.sms or hw.sm_count
    if sms > hw.sm_count:
        raise InputError(f"copy field sms={sms}: {hw.name} has {hw.sm_count} SMs")
    src = GlobalTensor("src", (problem.bytes,), "int8", "input")
    dst = GlobalTensor("dst", (problem.bytes,), "int8", "output")
    n_chunks = -(-problem.bytes // chunk)
    grid = list(range(min(sms, n_chunks)))

    def program(cta: int):
        slots = [Tile((chunk,), "int8", "smem", name=f"buf{s}") for s in range(stages)]
        mine = list(range(cta, n_chunks, len(grid)))
        inflight: deque = deque()

        def issue(i):
            c = mine[i]
            tile = slots[i % stages]
            handle = yield Load(src.region(slice(c * chunk, (c + 1) * chunk)), tile, wait=False)
            inflight.append((c, tile, handle))

        for i in range(min(stages, len(mine))):
            yield from issue(i)
        for i in range(len(mine)):
            c, tile, handle = inflight.popleft()
            yield Wait(handle)
            yield Store(tile, dst.region(slice(c * chunk, (c + 1) * chunk)))
            if i + stages < len(mine):
                yield from issue(i + stages)

    def work(cta: int) -> float:
        chunks = range(cta, n_chunks, len(grid))
        return sum(min(chunk, problem.bytes - c * chunk) for c in chunks)

    launch = Launch(name="copy", grid=grid, program=program, smem_bytes_per_cta=chunk * stages,
                    threads_per_cta=128, max_ctas_per_sm=1, work=work)
    return KernelPlan(kernel=NAME, tensors={"src": src, "dst": dst}, launches=[launch],
                      info={"chunk_bytes": chunk, "stages": stages, "sms": len(grid)})
