"""Folding: simulate one representative per block of CTAs that behave alike.

Blocks are runs of f consecutive CTAs in launch order, and f divides the SM count, so the folded GPU
(S/f SMs running the blocks' representatives) keeps the real one's waves, tail wave and per-SM behaviour.
Neighbouring CTAs in launch order are what a real GPU runs side by side, so a block is also a set of CTAs
that share data the way concurrent CTAs do: its representative's read of a tile stands for `weight` L2
requests for the distinct tiles of its block (the CTAs' `shared_by` keys), so DRAM traffic and
L2 residency count the distinct tiles, L2 traffic counts weight.
"""

from __future__ import annotations

from typing import Any, Callable, Hashable, Mapping, Sequence

from gpusim.launch import RegionKey

#: Fewest SMs a folded simulation keeps: enough that wave quantization and neighbouring-CTA effects
#: survive, few enough that a large grid costs a handful of CTAs per wave. (A simulation setting.)
MIN_SIMULATED_SMS = 4


class Representative:
    """One simulated CTA standing for `weight` real ones. `shared[tensor] = (own key, other keys)` lists
    the distinct `shared_by` keys of its block."""

    __slots__ = ("cta", "weight", "_shared")

    def __init__(self, cta: Any, weight: int, shared: Mapping[str, tuple]):
        self.cta, self.weight, self._shared = cta, weight, shared

    def l2_keys(self, ref) -> tuple[tuple, int]:
        """The L2 keys one access to `ref` by this representative stands for, and how many real tiles
        each key counts for. Shared tensors: the block's distinct tiles, found by substituting each
        other CTA's shared key for the leading indices of the region (K[b, kv_head, ...] and key
        (b, kv_head)); private tensors: the representative's key counted `weight` times."""
        name = ref.tensor.name
        entry = self._shared.get(name)
        if entry is None:
            return (ref.key,), self.weight
        own, others = entry
        if not others:
            return (ref.key,), 1
        index = ref.index
        if isinstance(own, RegionKey):
            if any(index[dim] != value for dim, value in own):
                return (ref.key,), len(others) + 1
            siblings = tuple((name, _substituted(index, other)) for other in others)
            return (ref.key,) + siblings, 1
        prefix = own if isinstance(own, tuple) else (own,)
        if index[:len(prefix)] != prefix:
            return (ref.key,), len(others) + 1
        tail = index[len(prefix):]
        siblings = tuple((name, (o if isinstance(o, tuple) else (o,)) + tail) for o in others)
        return (ref.key,) + siblings, 1


def _substituted(index: tuple, key: RegionKey) -> tuple:
    """`index` with the entries `key` names replaced by its values."""
    entries = list(index)
    for dim, value in key:
        entries[dim] = value
    return tuple(entries)


#: Largest average mismatch between a representative's work and the work of the CTAs it stands for
#: (sum |w - w_rep| / sum w) a fold may have; causal grids, whose CTAs' work grows along the grid, get
#: smaller blocks. (A simulation setting: below it folded time stays within a few percent of exact.)
MAX_WORK_MISMATCH = 0.05


def choose_fold_factor(sm_count: int, grid_size: int, ctas_per_sm: int, works: Sequence[float] | None = None) -> int:
    """Largest divisor f of the SM count that keeps >= MIN_SIMULATED_SMS SMs, one CTA per block and, when
    the CTAs' relative `works` are given, blocks of alike work (see MAX_WORK_MISMATCH)."""
    candidates = [f for f in range(sm_count, 0, -1)
                  if sm_count % f == 0 and (sm_count // f >= MIN_SIMULATED_SMS or f == 1) and f <= grid_size]
    for f in candidates:
        if works is None or f == 1:
            return f
        # With unequal work only odd blocks: the middle CTA of an odd run of linearly growing work has
        # exactly the run's mean work; an even block's middle is biased by half a step.
        if f % 2 and work_mismatch(works, f) <= MAX_WORK_MISMATCH:
            return f
    return 1


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


def fold_grid(grid: Sequence[Any], shared_by: Callable[[Any], Mapping[str, Hashable]], fold: int) -> list[Representative]:
    """Representatives of consecutive blocks of `fold` CTAs: the middle CTA of each block (so causal work,
    which grows along the grid, averages out)."""
    if fold == 1:
        return [Representative(cta, 1, {}) for cta in grid]
    reps = []
    for start in range(0, len(grid), fold):
        block = grid[start:start + fold]
        rep = block[len(block) // 2]
        own = shared_by(rep)
        keys: dict[str, dict] = {}
        for cta in block:
            for tensor, key in shared_by(cta).items():
                keys.setdefault(tensor, {})[key] = None
        shared = {tensor: (own[tensor], tuple(k for k in distinct if k != own[tensor]))
                  for tensor, distinct in keys.items() if tensor in own}
        reps.append(Representative(rep, len(block), shared))
    return reps
