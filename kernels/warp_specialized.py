"""Building blocks of warp-specialized (Hopper/Blackwell) kernels, written with the op API only.

- `SmemRing`: a `stages`-deep ring of SMEM tiles filled by a producer role with asynchronous (TMA) loads and
  drained by one or more consumer roles, guarded by full/empty barriers (CUTLASS's PipelineTmaAsync).
- `PingPong`: the named-barrier round robin FlashAttention-3 uses so that consumer warpgroups issue their
  GEMMs in turn (its `warp_scheduler_barrier_sync/arrive`).
- `InlineLoader`: the same rings filled in-line by a consumer role when there is no producer warp.
- `NamedBarrier`: `bar.sync` of a set of roles (warpgroups), each waiting until all have arrived.
- `wait_for`: wait on an asynchronous op's handle.
- `CommitQueue`: completion of asynchronous tensor-core work announced to other roles (`tcgen05.commit` to
  an mbarrier, or a wgmma whose completion another role waits on).

Why the helpers look the way they do: the op API's semaphores count, while an mbarrier is phase-based (every
waiter sees the phase complete). A `Load(signal=...)` adds one count when its bytes land, which is exactly an
mbarrier when one role waits (the ring then uses it). When several roles wait on the same tile, the producer
instead posts one token per consumer right after issuing the load and each consumer waits on the load's
handle: the same "wait until the bytes have landed" for each of them, with no consumer able to take another
one's token. `CommitQueue` needs a bookkeeping role (no warp, no instructions): it waits on the tensor
core's completion handles in issue order (the tensor core completes in order) and signals the barrier; an
`Mma(signal=...)` in the op API would make it unnecessary.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Sequence

from gpusim.ops import Acquire, Load, Semaphore, Signal, TensorRef, Tile, Wait


def wait_for(handle):
    """Wait for an asynchronous op's handle (None in the functional interpreter: nothing to wait for)."""
    if handle is not None:
        yield Wait(handle)


class SmemRing:
    """`stages` slots of SMEM tiles, each slot holding the tiles `make_tiles(slot)` returns.

    Producer: `yield from ring.produce(i, refs)` loads refs[k] into slot i % stages tile k (on the TMA engine
    unless tma=False) once every consumer has released the slot's previous use. Consumer c: `tiles = yield from ring.consume(i, c)` waits until the
    bytes have landed; `yield from ring.release(i)` when its reads of the slot are complete.
    """

    def __init__(self, name: str, stages: int, make_tiles: Callable[[int], Sequence[Tile]], consumers: int = 1,
                 tma: bool = True):
        if stages < 1 or consumers < 1:
            raise ValueError(f"ring {name}: stages and consumers must be positive")
        self.name, self.stages, self.consumers, self.tma = name, stages, consumers, tma
        self.tiles = [list(make_tiles(s)) for s in range(stages)]
        self.full = [[Semaphore(f"{name}.full{s}.{c}") for c in range(consumers)] for s in range(stages)]
        self.empty = [Semaphore(f"{name}.empty{s}", initial=consumers) for s in range(stages)]
        self._handles: list[list] = [[] for _ in range(stages)]

    @property
    def bytes_per_stage(self) -> int:
        return sum(t.nbytes for t in self.tiles[0])

    @property
    def smem_bytes(self) -> int:
        return self.stages * self.bytes_per_stage

    def produce(self, i: int, refs: Sequence[TensorRef]):
        s = i % self.stages
        tiles = self.tiles[s]
        if len(refs) != len(tiles):
            raise ValueError(f"ring {self.name}: {len(refs)} regions for {len(tiles)} tiles")
        yield Acquire(self.empty[s], self.consumers)
        if self.consumers == 1:
            # one waiter: the load's own completion signal is the mbarrier's transaction count
            for ref, tile in zip(refs, tiles):
                yield Load(ref, tile, wait=False, signal=self.full[s][0], tma=self.tma)
            return
        handles = []
        for ref, tile in zip(refs, tiles):
            handles.append((yield Load(ref, tile, wait=False, tma=self.tma)))
        self._handles[s] = handles
        for c in range(self.consumers):
            yield Signal(self.full[s][c])

    def consume(self, i: int, consumer: int = 0):
        s = i % self.stages
        if self.consumers == 1:
            yield Acquire(self.full[s][0], len(self.tiles[s]))
        else:
            yield Acquire(self.full[s][consumer])
            for handle in self._handles[s]:
                yield from wait_for(handle)
        return self.tiles[s]

    def release(self, i: int):
        yield Signal(self.empty[i % self.stages])


class InlineLoader:
    """The loads of a kernel without a producer warp: one elected thread of the first consumer warpgroup fills
    the shared rings in its own instruction stream, as CUTLASS's non-warp-specialized sm90 mainloop does
    (KernelTma, include/cutlass/gemm/collective/sm90_mma_tma_gmma_ss.hpp; examples/88_hopper_fmha
    FmhaMainloopTma): a prologue issues the first `stages` tiles of each ring, then every time the warpgroup
    releases a slot it acquires that slot again for the tile `stages` ahead and issues its copy. The acquire
    waits until every consumer has released the slot, so the issuing warpgroup stalls on the slowest one:
    free when the warpgroups run in lockstep (a GEMM), a wait for the other warpgroup's turn when they are
    staggered (FlashAttention-3's ping-pong). A warpgroup that holds a round-robin turn when it releases
    defers the refill until it has handed the turn on (waiting with the turn held could wait for a release
    that needs the turn).

    `fill(ring_name, i)` is the producer's load of tile i into its ring (a generator)."""

    def __init__(self, stages: int, fill: Callable):
        self.stages, self.fill = stages, fill
        self.pending: list[tuple[str, int]] = []

    def prologue(self, order: Sequence[tuple[str, int]]):
        """Issue the first `stages` tiles of every ring, in the producer's order."""
        for name, i in order:
            if i < self.stages:
                yield from self.fill(name, i)

    def refill(self, name: str, released: int, count: int, holds_turn: bool = False):
        """After releasing tile `released` of ring `name`: load tile released + stages (of `count`) into it."""
        if released + self.stages < count:
            self.pending.append((name, released + self.stages))
        if holds_turn:
            return
        while self.pending:
            yield from self.fill(*self.pending.pop(0))


class NamedBarrier:
    """`bar.sync` over `n` roles: role w's `sync(w)` returns once every role has called sync the same number of
    times. Built from counting semaphores: each arrival posts one token to every other role, and a role takes
    n - 1 of its own. Tokens of consecutive phases cannot be confused: the first role to pass phase p has, from
    every other role, exactly its p arrivals so far (none of them can have passed p yet, so none has arrived
    at p + 1), and every role must call sync equally often."""

    def __init__(self, n: int, name: str = "bar"):
        self.n = n
        self.arrived = [Semaphore(f"{name}{w}") for w in range(n)]

    def sync(self, w: int):
        if self.n < 2:
            return
        for u in range(self.n):
            if u != w:
                yield Signal(self.arrived[u])
        yield Acquire(self.arrived[w], self.n - 1)


class PingPong:
    """Round robin of `n` warpgroups over a resource (the tensor core): warpgroup w waits for its turn with
    `sync(w)` before issuing its GEMMs and hands the turn on with `arrive(w)` once they are issued, or with
    `arrive_when_done(w, handle, commits)` when they complete. The tensor core runs queued GEMMs in issue
    order, so a turn handed on at issue lets the next warpgroup's GEMMs start exactly when this one's finish;
    handing it on at completion gives the same start times and keeps a processor-sharing model of the tensor
    core from running two warpgroups' GEMM batches side by side. Every warpgroup must take the same number of
    turns. Disabled, all are no-ops."""

    def __init__(self, n: int, enabled: bool = True, name: str = "pingpong"):
        self.n, self.enabled = n, enabled
        self.sems = [Semaphore(f"{name}{w}", initial=1 if w == 0 else 0) for w in range(n)]

    def sync(self, w: int):
        if self.enabled:
            yield Acquire(self.sems[w])

    def arrive(self, w: int):
        if self.enabled:
            yield Signal(self.sems[(w + 1) % self.n])

    def arrive_when_done(self, w: int, handle, commits: "CommitQueue"):
        """Hand the turn on when the MMA of `handle` (the warpgroup's last issued GEMM) completes."""
        if self.enabled:
            yield from commits.commit(handle, self.sems[(w + 1) % self.n])


class CommitQueue:
    """Announce the completion of asynchronous MMAs to other roles. An issuing role calls
    `yield from q.commit(handle, sem)` (sem is signalled when that MMA has completed) and, when it has no more
    to commit, `yield from q.close()`; `q.role()` is the bookkeeping generator to run as one more role of the
    CTA. It serves commits in the order they were made, which is completion order as long as the committed
    MMAs were issued in that order (the tensor core completes in order). `issuers` roles may share a queue;
    the role ends when all of them have closed it."""

    def __init__(self, name: str = "commit", issuers: int = 1):
        self.posted = Semaphore(f"{name}.posted")
        self.issuers = issuers
        self._queue: deque = deque()

    def commit(self, handle, sem: Semaphore, count: int = 1):
        self._queue.append((handle, sem, count))
        yield Signal(self.posted)

    def close(self):
        self._queue.append(None)
        yield Signal(self.posted)

    def role(self):
        open_issuers = self.issuers
        while open_issuers:
            yield Acquire(self.posted)
            entry = self._queue.popleft()
            if entry is None:
                open_issuers -= 1
                continue
            handle, sem, count = entry
            yield from wait_for(handle)
            yield Signal(sem, count)
