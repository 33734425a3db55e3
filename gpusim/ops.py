"""The op API: what a CTA program yields.

A kernel is written once as Python generators that yield these ops on tiles. Two interpreters run them:
the timing interpreter (`gpusim.engine.timing`) charges each op to the unit that executes it, and the
functional interpreter (`gpusim.functional`) executes it on numpy arrays. Programs must not branch on
data values, only on shapes and indices, so that both interpreters see the same op sequence.

Ops and what the program gets back from `yield`:

    Load(src, dst, wait=True, signal=None)  -> Handle | None   global memory -> tile (TMA / cp.async / ld)
    Store(src, dst, accumulate=False)       -> None            tile -> global memory (atomic add if accumulate)
    Mma(a, b, out, ...)                     -> Handle | None   out (+)= a @ b   (b^T if b_transposed)
    Vector(fn, inputs, out, ...)            -> None            elementwise / row-reduction work on FP32 + MUFU pipes
    Wait(handle)                            -> None            block until an async load or MMA completes
    Signal(sem, count) / Acquire(sem, count)                   counting semaphores between warp roles
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from gpusim.errors import InputError
from gpusim.hardware import DTYPE_BYTES

SPACES = ("smem", "reg", "tmem")


class GlobalTensor:
    """A tensor in HBM, declared by a kernel plan. `kind` is input, output or scratch."""

    __slots__ = ("name", "shape", "dtype", "kind")

    def __init__(self, name: str, shape: Sequence[int], dtype: str, kind: str = "input"):
        if dtype not in DTYPE_BYTES:
            raise InputError(f"tensor {name}: unknown dtype {dtype!r}")
        if kind not in ("input", "output", "scratch"):
            raise InputError(f"tensor {name}: kind must be input, output or scratch")
        self.name, self.shape, self.dtype, self.kind = name, tuple(int(s) for s in shape), dtype, kind

    @property
    def nbytes(self) -> int:
        return int(math.prod(self.shape) * DTYPE_BYTES[self.dtype])

    def region(self, *index) -> "TensorRef":
        """A rectangular region: ints and slices, one per leading dimension; slices are clamped to the shape."""
        if len(index) > len(self.shape):
            raise IndexError(f"{self.name}: {len(index)} indices for {len(self.shape)} dimensions")
        norm, shape = [], []
        for i, dim in enumerate(self.shape):
            ix = index[i] if i < len(index) else slice(None)
            if isinstance(ix, slice):
                start, stop, _ = ix.indices(dim)
                stop = max(start, stop)
                norm.append((start, stop))
                shape.append(stop - start)
            else:
                ix = int(ix)
                if not 0 <= ix < dim:
                    raise IndexError(f"{self.name}: index {ix} out of range for dimension {i} of size {dim}")
                norm.append(ix)
        return TensorRef(self, tuple(norm), tuple(shape))

    def __repr__(self) -> str:
        return f"GlobalTensor({self.name}, {self.shape}, {self.dtype})"


@dataclass(frozen=True, slots=True)
class TensorRef:
    """A region of a global tensor; `key` identifies it in the L2 cache."""

    tensor: GlobalTensor
    index: tuple  # per dimension: an int, or a (start, stop) pair
    shape: tuple  # shape of the region after integer indices are dropped

    @property
    def key(self) -> tuple:
        return (self.tensor.name, self.index)

    @property
    def nbytes(self) -> int:
        return int(math.prod(self.shape) * DTYPE_BYTES[self.tensor.dtype])

    @property
    def numpy_index(self) -> tuple:
        return tuple(slice(*ix) if isinstance(ix, tuple) else ix for ix in self.index)


class Tile:
    """A tile on chip. `shape` is the allocated shape (what compute is charged for); `data` holds the
    valid part when the functional interpreter runs (it may be smaller at ragged edges)."""

    __slots__ = ("shape", "dtype", "space", "name", "data")

    def __init__(self, shape: Sequence[int], dtype: str, space: str = "reg", name: str = ""):
        if space not in SPACES:
            raise InputError(f"tile {name}: space must be one of {SPACES}")
        if dtype not in DTYPE_BYTES:
            raise InputError(f"tile {name}: unknown dtype {dtype!r}")
        self.shape, self.dtype, self.space, self.name, self.data = tuple(shape), dtype, space, name, None

    @property
    def elements(self) -> int:
        return int(math.prod(self.shape))

    @property
    def nbytes(self) -> int:
        return int(self.elements * DTYPE_BYTES[self.dtype])

    def __repr__(self) -> str:
        return f"Tile({self.name}, {self.shape}, {self.dtype}, {self.space})"


class Semaphore:
    """A counting semaphore shared by the warp roles of one CTA (an mbarrier's arrive/wait, simplified)."""

    __slots__ = ("name", "initial")

    def __init__(self, name: str = "", initial: int = 0):
        self.name, self.initial = name, initial


class Op:
    __slots__ = ()


@dataclass(slots=True, eq=False)
class Load(Op):
    """Copy a global region into a tile. wait=False makes it asynchronous (TMA or cp.async): the yield
    returns a Handle, and completion also signals `signal` if given. tma=True issues it on the TMA engine
    (its own in-flight window and link) instead of the load/store units; cp_async=True says it is an
    Ampere-style cp.async into shared memory, which on GPUs that measure it apart
    (HardwareSpec.async_copy_*) has its own window and link too."""

    src: TensorRef
    dst: Tile
    wait: bool = True
    signal: Semaphore | None = None
    tma: bool = False
    cp_async: bool = False

    def __post_init__(self):
        if self.tma and self.cp_async:
            raise ValueError("Load: tma and cp_async are two different copy paths; pick one")
        if self.cp_async and self.dst.space != "smem":
            raise ValueError(f"Load: cp.async copies global memory into shared memory, not into {self.dst.space}")


@dataclass(slots=True, eq=False)
class Store(Op):
    """Write a tile to a global region; posted (the program does not wait). accumulate=True adds (atomics)."""

    src: Tile
    dst: TensorRef
    accumulate: bool = False


@dataclass(slots=True, eq=False)
class SpillStore(Op):
    """Register spills: `nbytes` per CTA stored to its local memory, posted. L1 writes local stores through to the
    L2 (validation/README.md run 56), where the lines are the stack frames of the CTA's SM slot, which every CTA
    that runs there writes again, so they stay resident. The loads that read them back hit in L1 (not modelled)."""

    nbytes: int


@dataclass(slots=True, eq=False)
class Mma(Op):
    """out = a @ b (b^T when b_transposed), plus out when accumulate. `instruction` is the tensor-core
    class (mma_sync, wgmma, tcgen05). `smem_read_bytes` overrides the shared-memory operand traffic
    (default: the bytes of operands that live in SMEM, read once). `smem_fill_bytes`: bytes that cp.async
    copies land in SMEM while the product runs; they take the port as the GPU's
    async_copy_fill_smem_port_share says. `instructions`: the warp instructions it issues, summed over the
    role's warps (ldmatrix and MMA), which cost instruction fetch while the SM's code outgrows its
    instruction cache (CodePath). `warps`: the warps that issue it (0: one per warp scheduler); with a whole
    multiple of the schedulers (8 on 4), an mma.sync warp's MMAs overlap the next warp's operand reads on its
    scheduler (fewer extra warps, as 6 on 4, are taken as serial)."""

    a: Tile
    b: Tile
    out: Tile
    instruction: str
    b_transposed: bool = False
    accumulate: bool = False
    wait: bool = True
    smem_read_bytes: int | None = None
    smem_fill_bytes: int = 0
    instructions: int = 0
    warps: int = 0

    @property
    def flops(self) -> int:
        m, k = self.a.shape[-2], self.a.shape[-1]
        n = self.b.shape[-2] if self.b_transposed else self.b.shape[-1]
        return 2 * m * n * k

    @property
    def operand_dtype(self) -> str:
        return self.a.dtype

    def smem_bytes(self) -> int:
        if self.smem_read_bytes is not None:
            return self.smem_read_bytes
        return sum(t.nbytes for t in (self.a, self.b) if t.space == "smem")


@dataclass(slots=True, eq=False)
class Vector(Op):
    """Elementwise or row-wise work. `fn(*input_arrays)` gives the new value of `out` (functional
    interpreter only); `out` may be a tuple of tiles, and then fn returns a tuple. The timing cost is
    `elements` times the per-element op counts on the FP32 and MUFU (exp) pipes; `elements` defaults to
    the largest tile involved. A fused sequence of dependent steps (the online softmax) gives `steps`,
    one (elements, fp32 ops per element, MUFU ops per element) each, instead: the pipes see the totals,
    and the issuing warps are held for each step in turn. `instructions`: as Mma's."""

    fn: Callable[..., Any]
    inputs: Sequence[Tile]
    out: Any
    fp32_ops_per_element: float = 1.0
    mufu_ops_per_element: float = 0.0
    elements: int | None = None
    steps: Sequence[tuple] = ()
    instructions: int = 0

    @property
    def outputs(self) -> tuple:
        return self.out if isinstance(self.out, tuple) else (self.out,)

    def element_count(self) -> int:
        if self.elements is not None:
            return self.elements
        return max([t.elements for t in self.outputs] + [t.elements for t in self.inputs])

    def step_ops(self) -> list[tuple[float, float]]:
        """(FP32 ops, MUFU ops) of each dependent step."""
        if self.steps:
            return [(n * fp32, n * mufu) for n, fp32, mufu in self.steps]
        n = self.element_count()
        return [(n * self.fp32_ops_per_element, n * self.mufu_ops_per_element)]


@dataclass(slots=True, eq=False)
class CodePath(Op):
    """From here on the role's warps run code path `name` of the kernel, `instructions` SASS instructions of it
    per warp as compiled: a loop body (`loops`, walked again every iteration) or straight-line code run once
    (a prologue, an epilogue). The SM's instruction cache holds the paths its resident roles run; while two or
    more different paths together outgrow it, every instruction is fetched again (engine.icache), and ops
    that declare `instructions` also wait for their fetch. A role that declares no path shares the cache with
    nothing (its code is taken to fit)."""

    name: str
    instructions: int
    loops: bool = False


@dataclass(slots=True, eq=False)
class Wait(Op):
    handle: Any


@dataclass(slots=True, eq=False)
class Signal(Op):
    sem: Semaphore
    count: int = 1


@dataclass(slots=True, eq=False)
class Acquire(Op):
    sem: Semaphore
    count: int = 1


@dataclass(slots=True)
class Handle:
    """What an asynchronous op returns: when it completes (timing) or nothing (functional)."""

    done_cycle: float = 0.0
    meta: dict = field(default_factory=dict)


@dataclass(slots=True, eq=False)
class Loop(Op):
    """Announce a loop of `count` alike iterations; the yield returns a LoopPlan. The functional
    interpreter runs every iteration; the folded timing interpreter may run only the first and last few,
    measure the steady ones and account for the rest (gpusim.engine.loop_sampling). The program iterates
    over `plan.indices` and yields `plan.mark(i)` at the start of each iteration. Loops of one CTA that
    walk the same data again (an inner loop re-run by an outer one) give the same `data_key`, so that the
    skipped iterations' tiles are stood in for by the same L2 lines each time instead of new ones. A program
    that issues an iteration's loads `lookahead` iterations before marking it says so: a sampled loop then
    keeps that many tail iterations, so that its measured iterations each issue a steady iteration's loads.
    A loop whose tiles concurrent CTAs walk too (the K/V of a head) says `shared`: its skipped iterations'
    reads of shared tensors then go through L2 as stand-in chunks of the data they walk, which other CTAs'
    skipped iterations touch too, so they hit or miss as the cache holds that data (an extrapolation of the
    measured iterations' hits would miss a walk that outgrows L2 only in its later iterations)."""

    count: int
    data_key: Any = None
    lookahead: int = 0
    shared: bool = False


@dataclass(slots=True, eq=False)
class LoopMark(Op):
    plan: Any
    index: int


class LoopPlan:
    """The iterations a role runs of an announced loop, and how many iterations ahead the program loads
    (`lookahead`, from its Loop op): loop sampling decides on any further warm-up iterations before the loads
    of the first tail iteration go out."""

    __slots__ = ("count", "indices", "state", "lookahead")

    def __init__(self, count: int, indices: Sequence[int], lookahead: int = 0):
        self.count, self.indices, self.state = count, list(indices), None
        self.lookahead = lookahead

    def mark(self, index: int) -> LoopMark:
        return LoopMark(self, index)

    def next_index(self, position: int) -> int | None:
        """The iteration that runs after the one at `position` in `indices` (for prefetching)."""
        return self.indices[position + 1] if position + 1 < len(self.indices) else None
