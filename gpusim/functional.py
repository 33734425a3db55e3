"""The functional interpreter: runs the same CTA programs on numpy arrays.

Values are held as float32 arrays whose contents are rounded to each tile's or tensor's dtype (bf16, fp16,
fp8 through ml_dtypes) whenever they are written, so a kernel's rounding points are the real ones: the
operands of an MMA are whatever its input tiles hold, accumulation is FP32. CTAs run one after another;
the warp roles of one CTA run cooperatively, each until it must wait on a semaphore, so a schedule whose
barriers are wrong computes the wrong numbers or deadlocks here.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from gpusim.launch import KernelPlan
from gpusim.ops import (Acquire, CodePath, Load, Loop, LoopMark, LoopPlan, Mma, Signal, SpillStore, Store, Vector,
                        Wait)

_NUMPY_DTYPES = {
    "fp32": np.float32, "fp16": np.float16, "bf16": ml_dtypes.bfloat16, "fp8": ml_dtypes.float8_e4m3fn,
    "fp8_e4m3": ml_dtypes.float8_e4m3fn, "fp8_e5m2": ml_dtypes.float8_e5m2, "int8": np.int8,
}


def round_to(values: np.ndarray, dtype: str) -> np.ndarray:
    """Round to `dtype` and return as float32 (the working precision of the interpreter)."""
    values = np.asarray(values, dtype=np.float32)
    if dtype == "fp32":
        return values
    if dtype == "int8":
        return np.clip(np.rint(values), -128, 127).astype(np.float32)
    if dtype == "int4":  # signed 4-bit codes (two per byte in memory)
        return np.clip(np.rint(values), -8, 7).astype(np.float32)
    return values.astype(_NUMPY_DTYPES[dtype]).astype(np.float32)


class DeadlockError(RuntimeError):
    """Every warp role of a CTA waits on a semaphore nobody will signal."""


def run_functional(plan: KernelPlan, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Execute `plan` on `inputs` (by tensor name); returns every output tensor as float32."""
    arrays: dict[str, np.ndarray] = {}
    for name, tensor in plan.tensors.items():
        if tensor.kind == "input":
            if name not in inputs:
                raise KeyError(f"functional run of {plan.kernel}: input {name} not given")
            data = np.asarray(inputs[name], dtype=np.float32)
            if data.shape != tensor.shape:
                raise ValueError(f"input {name}: shape {data.shape}, plan expects {tensor.shape}")
            arrays[name] = round_to(data, tensor.dtype)
        else:
            arrays[name] = np.zeros(tensor.shape, dtype=np.float32)
    for launch in plan.launches:
        for cta in launch.grid:
            roles = launch.program(cta)
            _run_cta(roles if isinstance(roles, list) else [roles], arrays)
    return {name: arrays[name] for name in plan.outputs()}


def _run_cta(roles: list, arrays: dict) -> None:
    sems: dict = {}
    pending = [[gen, None, None] for gen in roles]  # generator, value to send, blocking Acquire
    while pending:
        progressed = False
        for entry in list(pending):
            gen, value, blocked = entry
            if blocked is not None:
                count = sems.setdefault(blocked.sem, blocked.sem.initial)
                if count < blocked.count:
                    continue
                sems[blocked.sem] = count - blocked.count
                entry[2] = None
            progressed = True
            while True:
                try:
                    op = gen.send(entry[1])
                except StopIteration:
                    pending.remove(entry)
                    break
                entry[1] = None
                if isinstance(op, Acquire):
                    count = sems.setdefault(op.sem, op.sem.initial)
                    if count >= op.count:
                        sems[op.sem] = count - op.count
                        continue
                    entry[2] = op
                    break
                entry[1] = _execute(op, arrays, sems)
        if pending and not progressed:
            names = ", ".join(entry[2].sem.name or "?" for entry in pending)
            raise DeadlockError(f"every warp role waits on a semaphore ({names})")


def _execute(op, arrays: dict, sems: dict):
    kind = type(op)
    if kind is Load:
        src = op.src
        op.dst.data = round_to(arrays[src.tensor.name][src.numpy_index], op.dst.dtype)
        if op.signal is not None:
            sems[op.signal] = sems.setdefault(op.signal, op.signal.initial) + 1
        return None
    if kind is Mma:
        a, b = op.a.data, op.b.data
        product = a.astype(np.float32) @ (b.T if op.b_transposed else b).astype(np.float32)
        if op.accumulate and op.out.data is not None:
            product = op.out.data + product
        op.out.data = round_to(product, op.out.dtype)
        return None
    if kind is Vector:
        values = op.fn(*[t.data for t in op.inputs])
        if isinstance(op.out, tuple):
            for tile, value in zip(op.out, values, strict=True):
                tile.data = round_to(value, tile.dtype)
        else:
            op.out.data = round_to(values, op.out.dtype)
        return None
    if kind is Store:
        dst = op.dst
        target = arrays[dst.tensor.name]
        index = dst.numpy_index
        values = op.src.data.reshape(target[index].shape)
        if op.accumulate:
            target[index] = round_to(target[index] + values, dst.tensor.dtype)
        else:
            target[index] = round_to(values, dst.tensor.dtype)
        return None
    if kind is Signal:
        sems[op.sem] = sems.setdefault(op.sem, op.sem.initial) + op.count
        return None
    if kind is Wait or kind is LoopMark or kind is CodePath or kind is SpillStore:
        return None
    if kind is Loop:
        return LoopPlan(op.count, range(op.count))
    raise TypeError(f"a CTA program yielded {op!r}, which is not an op")
