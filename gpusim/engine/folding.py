"""Folding: simulate one representative per block of CTAs that behave alike.

Blocks are runs of f consecutive CTAs in launch order, and f divides the SM count, so the folded GPU
(S/f SMs running the blocks' representatives) keeps the real one's waves, tail wave and per-SM behaviour.
Neighbouring CTAs in launch order are what a real GPU runs side by side, so a block is also a set of CTAs
that share data the way concurrent CTAs do: its representative's read of a tile stands for `weight` L2
requests for the distinct tiles of its block (the CTAs' `shared_by` keys), so DRAM traffic and
L2 residency count the distinct tiles, L2 traffic counts weight.
"""

from __future__ import annotations

import math
import zlib
from statistics import NormalDist
from typing import Any, Callable, Hashable, Mapping, Sequence

from gpusim.launch import RegionKey, WalkedRange

#: Fewest SMs a folded simulation keeps: enough that wave quantization and neighbouring-CTA effects
#: survive, few enough that a large grid costs a handful of CTAs per wave. (A simulation setting.)
MIN_SIMULATED_SMS = 4
#: Fewest representatives a folded launch of more than one wave keeps (fewer: a smaller fold). With a
#: handful, where one of them lands decides the whole launch: which tail CTAs share an SM, which finish last
#: (benchmarks/folded_vs_exact.py: a 320-CTA split-K decode whose tail doubles up on some SMs, -15% against
#: exact with 10 representatives, -0.5% with 80). A grid that small is cheap to simulate at a finer fold.
#: A launch of one wave places every CTA at once and keeps the coarsest fold: its long loops run in full
#: only within loop_sampling's budget, which more representatives would share (FA1's 32 CTAs: slower than
#: exact mode with one representative each). (A simulation setting.)
MIN_REPRESENTATIVES = 64


class Representative:
    """One simulated CTA standing for the `count` real CTAs of its block. Its demands on shared resources
    are scaled by `weight`: the block's work over the representative's own (`count` when the CTAs are alike),
    so a block of uneven CTAs still moves its real bytes and FLOPs. `shared[tensor] = (own key, other keys[,
    walkers])` lists the distinct `shared_by` keys of its block and, for a walked key (WalkedRange), every other
    CTA's (key, grid position relative to the representative's): CTAs that walk the same range but start at
    different times read different tiles at one step. `lag_steps`: how many steps of a walk each CTA of the block is
    behind the one before it in the grid, because it started later (see steady_dispatch_lag). `pace_spread`: the std
    over the mean of the paces of alike CTAs (HardwareSpec.cta_pace_spread): each sibling's walk drifts from the
    representative's by its own pace, step by step (_pace_deviates)."""

    __slots__ = ("cta", "weight", "count", "_shared", "lag_steps", "pace_spread", "_deviates")

    def __init__(self, cta: Any, weight: float, shared: Mapping[str, tuple], count: int | None = None):
        self.cta, self.weight = cta, weight
        self._shared = {tensor: entry if len(entry) > 2 else (*entry, ()) for tensor, entry in shared.items()}
        self.count = int(weight) if count is None else count
        self.lag_steps = 0.0
        self.pace_spread = 0.0
        self._deviates: dict[str, tuple] = {}  # tensor -> its walking siblings' _pace_deviates, once

    def shared_keys(self, tensor: str) -> tuple:
        """The distinct `shared_by` keys of `tensor` in the representative's block, its own first; () for a
        tensor its CTAs do not share."""
        entry = self._shared.get(tensor)
        return () if entry is None else (entry[0], *entry[1])

    def l2_keys(self, ref) -> tuple[tuple, float, tuple | None]:
        """The L2 keys one access to `ref` by this representative stands for, and how many real tiles
        each key counts for. Shared tensors: the block's distinct tiles, found by substituting each
        other CTA's shared key for the named (RegionKey) or leading indices of the region (K[b, kv_head, ...]
        and key (b, kv_head)); keys that are not part of the region count each distinct key once. A walked
        range (WalkedRange) maps the representative's tile onto the one each other CTA reads at this step (none
        where its walk has not started or is over); siblings that read the representative's own tile are that
        tile. Private tensors: one tile per CTA of the block. Third: each key's bytes where they differ from the
        representative's tile (a sibling's region is a partial tile at the edge of the tensor), else None."""
        name = ref.tensor.name
        entry = self._shared.get(name)
        scale = self.weight / self.count
        if entry is None:
            return self._private_keys(ref.key), scale, None
        own, others, walkers = entry
        if not others and not walkers:
            return (ref.key,), scale, None
        index = ref.index
        if isinstance(own, RegionKey):
            if not all(_within(index[dim], value) for dim, value in own):
                return (ref.key,), (len(others) + 1) * scale, None
            shape = ref.tensor.shape
            if walkers:  # siblings that read the representative's own tile at this step are that tile
                lag, spread = self.lag_steps, self.pace_spread
                deviates = self._deviates.get(name)
                if deviates is None:
                    deviates = self._deviates[name] = _pace_deviates(walkers)
                walked = (_substituted(index, own, other, shape, offset * lag, spread * deviate)
                          for (other, offset), deviate in zip(walkers, deviates))
                indices = list(dict.fromkeys(s for s in walked if s is not None and s != index))
            else:
                indices = [s for s in (_substituted(index, own, other, shape) for other in others) if s is not None]
            siblings = tuple((name, sibling) for sibling in indices)
            return (ref.key,) + siblings, 1, _region_bytes(ref, index, indices)
        prefix = own if isinstance(own, tuple) else (own,)
        if index[:len(prefix)] != prefix:
            return (ref.key,), (len(others) + 1) * scale, None
        tail = index[len(prefix):]
        siblings = tuple((name, (o if isinstance(o, tuple) else (o,)) + tail) for o in others)
        return (ref.key,) + siblings, 1, None

    def _private_keys(self, key) -> tuple:
        """A private tile stands for `count` distinct tiles, one per CTA of the block: each its own L2 line
        of the tile's size, so that eviction (and write-back) happens tile by tile as on the real GPU."""
        return (key,) + tuple((key, "cta", i) for i in range(1, self.count))


def _elements(index: tuple) -> int:
    return math.prod(entry[1] - entry[0] for entry in index if isinstance(entry, tuple))


def _region_bytes(ref, own_index: tuple, indices: list) -> tuple | None:
    """Bytes of the representative's region and of each sibling region, or None when all are the same."""
    own = _elements(own_index)
    counts = [_elements(index) for index in indices]
    if all(count == own for count in counts):
        return None
    per_element = ref.nbytes / own if own else 0.0
    return (ref.nbytes,) + tuple(count * per_element for count in counts)


def _within(entry, value) -> bool:
    """An index entry lies in a key's entry: the same int, or a range inside the key's range."""
    if isinstance(value, tuple) and isinstance(entry, tuple):
        return value[0] <= entry[0] and entry[1] <= value[1]
    return entry == value


def _pace_deviates(walkers: tuple) -> tuple[float, ...]:
    """The paces of a block's walking siblings ((key, grid offset) each), in standard deviations from the mean: the
    normal quantiles of as many evenly spaced probabilities, dealt in an order hashed from each sibling (CRC-32 of its
    repr, the same in every process). Quantiles rather than draws, so that every block's paces have the spread's mean
    and width, and which sibling runs fast is still arbitrary."""
    order = sorted(range(len(walkers)), key=lambda i: zlib.crc32(repr(walkers[i]).encode()))
    normal, n = NormalDist(), len(walkers)
    deviates = [0.0] * n
    for rank, i in enumerate(order):
        deviates[i] = normal.inv_cdf((rank + 0.5) / n)
    return tuple(deviates)


def _substituted(index: tuple, own: RegionKey, other: RegionKey, shape: tuple, lag_steps: float = 0.0,
                 drift_per_step: float = 0.0) -> tuple | None:
    """The sibling's counterpart of `index`: each entry `own` names replaced by `other`'s; an index range
    that is part of the representative's range (one warpgroup's rows of its tile, the tile a walk reads at this
    step) is moved by the offset of the ranges' starts (of their stops for a descending WalkedRange), and a walked
    range back by the `lag_steps` the sibling's walk is behind, plus `drift_per_step` for every step the
    representative has walked (its pace against the representative's); then clipped to the sibling's range and the
    tensor's `shape` (the sibling's tile may be partial, its walk not started or over). None when nothing is
    left."""
    entries = list(index)
    own_values = dict(own)
    for dim, value in other:
        entry, mine = entries[dim], own_values[dim]
        if entry == mine or not isinstance(entry, tuple):
            entries[dim] = value
            continue
        end = entry[1]
        if isinstance(mine, WalkedRange):
            walked = (mine[1] - end if mine.descending else entry[0] - mine[0]) / mine.step
            lag = math.floor(lag_steps + drift_per_step * max(walked, 0.0) + 0.5) * mine.step
            shift = value[1] - mine[1] + lag if mine.descending else value[0] - mine[0] - lag
            end = max(end, entry[0] + mine.step)  # the tensor's partial last tile is a whole one elsewhere
        else:
            shift = value[0] - mine[0]
        start, stop = max(entry[0] + shift, value[0]), min(end + shift, value[1], shape[dim])
        if start >= stop:
            return None
        entries[dim] = (start, stop)
    return tuple(entries)


#: Largest average mismatch between a representative's work and the work of the CTAs it stands for
#: (sum |w - w_rep| / sum w) a fold may have; causal grids, whose CTAs' work grows along the grid, get
#: smaller blocks. (A simulation setting: below it folded time stays within a few percent of exact.)
MAX_WORK_MISMATCH = 0.05
#: Largest mismatch at which a block may have an even number of CTAs (see choose_fold_factor).
EVEN_BLOCK_MISMATCH = 0.01


def choose_fold_factor(sm_count: int, grid_size: int, ctas_per_sm: int, works: Sequence[float] | None = None) -> int:
    """Largest divisor f of the SM count that keeps >= MIN_SIMULATED_SMS SMs, at least one CTA per block (at
    least MIN_REPRESENTATIVES blocks when the grid takes more than one wave) and, when the CTAs' relative
    `works` are given, blocks of alike work (see MAX_WORK_MISMATCH)."""
    min_blocks = 1 if grid_size <= sm_count * ctas_per_sm else MIN_REPRESENTATIVES
    candidates = [f for f in range(sm_count, 0, -1)
                  if sm_count % f == 0 and (f == 1 or (sm_count // f >= MIN_SIMULATED_SMS
                                                       and grid_size / f >= min_blocks))]
    for f in candidates:
        if works is None or f == 1:
            return f
        # With unequal work only odd blocks: the middle CTA of an odd run of linearly growing work has
        # exactly the run's mean work; an even block's middle is biased by half a step (which does not
        # matter where the works barely differ: a KV split of a few tiles more or less).
        mismatch = work_mismatch(works, f)
        if mismatch <= MAX_WORK_MISMATCH and (f % 2 or mismatch <= EVEN_BLOCK_MISMATCH):
            return f
    return 1


def steady_dispatch_lag(works: Sequence[float] | None, concurrent_ctas: int) -> float:
    """Steps of a walk by which each CTA lags the one before it in the grid once a launch dispatches in steady
    state: a CTA starts whenever one finishes, so by Little's law CTAs start one per (mean CTA duration) /
    (concurrent CTAs), which is (mean work) / (concurrent CTAs) steps of a CTA's walk, `works` counting
    steps (the K/V tiles a CTA visits, and its prologue). 0 when the CTAs' works are not given (uniform CTAs
    read alike tiles at each step, see Representative)."""
    if not works or concurrent_ctas <= 0:
        return 0.0
    return sum(works) / len(works) / concurrent_ctas


def work_mismatch(works: Sequence[float], fold: int) -> float:
    """sum over blocks of |w - w_representative| / sum of w, for blocks of `fold` consecutive CTAs."""
    total = sum(works)
    if total <= 0:
        return 0.0
    off = 0.0
    for start in range(0, len(works), fold):
        block = works[start:start + fold]
        rep = block[len(block) // 2]
        off += sum(abs(w - rep) for w in block)
    return off / total


def fold_grid(grid: Sequence[Any], shared_by: Callable[[Any], Mapping[str, Hashable]], fold: int,
              works: Sequence[float] | None = None, one_wave: bool = False,
              owned_by: Callable[[Any], Mapping[str, Hashable]] | None = None,
              limit: int | None = None) -> list[Representative]:
    """Representatives of consecutive blocks of `fold` CTAs (the first `limit` blocks only, when given).
    Usually the middle CTA of each block (causal work, which grows along the grid, averages out); in a
    launch of one wave with uneven `works`, the block's longest CTA, because the slowest CTA sets the
    launch's time there. `owned_by` keys join the shared ones (every CTA's is distinct)."""
    def keys_of(cta) -> Mapping[str, Hashable]:
        keys = shared_by(cta)
        return {**keys, **owned_by(cta)} if owned_by is not None else keys

    if fold == 1:
        return [Representative(cta, 1, {}) for cta in grid[:limit]]
    reps = []
    for start in range(0, len(grid) if limit is None else min(len(grid), limit * fold), fold):
        block = grid[start:start + fold]
        pick = len(block) // 2
        weight: float = len(block)
        if works is not None:
            block_works = works[start:start + fold]
            if one_wave:
                pick = max(range(len(block)), key=lambda i: (block_works[i], -abs(i - len(block) // 2)))
            if block_works[pick] > 0:
                weight = sum(block_works) / block_works[pick]
        rep = block[pick]
        own = keys_of(rep)
        keys: dict[str, list] = {}  # tensor -> (key, grid position relative to the rep's) of every CTA
        for position, cta in enumerate(block):
            for tensor, key in keys_of(cta).items():
                keys.setdefault(tensor, []).append((key, position - pick))
        shared = {}
        for tensor, held in keys.items():
            if tensor in own:
                mine = own[tensor]
                others = tuple(dict.fromkeys(key for key, _ in held if key != mine))
                walked = isinstance(mine, RegionKey) and any(isinstance(v, WalkedRange) for _, v in mine)
                walkers = tuple((key, offset) for key, offset in held if offset) if walked else ()
                shared[tensor] = (mine, others, walkers)
        reps.append(Representative(rep, weight, shared, count=len(block)))
    return reps
