"""Folding: simulate one representative per block of CTAs that behave alike.

Blocks are runs of f consecutive CTAs in launch order, and f divides the SM count, so the folded GPU
(S/f SMs running the blocks' representatives) keeps the real one's waves, tail wave and per-SM behaviour.
Neighbouring CTAs in launch order are what a real GPU runs side by side, so a block is also a set of CTAs
that share data the way concurrent CTAs do: its representative's read of a tile stands for `weight` L2
requests of which `copies_of(tensor)` are distinct tiles (the CTAs' `shared_by` keys), so DRAM traffic and
L2 residency count copies, L2 traffic counts weight.
"""

from __future__ import annotations

from typing import Any, Callable, Hashable, Mapping, Sequence

#: Fewest SMs a folded simulation keeps: enough that wave quantization and neighbouring-CTA effects
#: survive, few enough that a large grid costs a handful of CTAs per wave. (A simulation setting.)
MIN_SIMULATED_SMS = 4


class Representative:
    __slots__ = ("cta", "weight", "_copies")

    def __init__(self, cta: Any, weight: int, copies: Mapping[str, int]):
        self.cta, self.weight, self._copies = cta, weight, copies

    def copies_of(self, tensor: str) -> int:
        """Distinct tiles of `tensor` that one read by this representative stands for."""
        return self._copies.get(tensor, self.weight)


def choose_fold_factor(sm_count: int, grid_size: int, ctas_per_sm: int) -> int:
    """Largest divisor f of the SM count that keeps >= MIN_SIMULATED_SMS SMs and one CTA per block."""
    best = 1
    for f in range(1, sm_count + 1):
        if sm_count % f == 0 and sm_count // f >= MIN_SIMULATED_SMS and f <= grid_size:
            best = f
    return best


def fold_grid(grid: Sequence[Any], shared_by: Callable[[Any], Mapping[str, Hashable]], fold: int) -> list[Representative]:
    """Representatives of consecutive blocks of `fold` CTAs: the middle CTA of each block (so causal work,
    which grows along the grid, averages out)."""
    if fold == 1:
        return [Representative(cta, 1, {}) for cta in grid]
    reps = []
    for start in range(0, len(grid), fold):
        block = grid[start:start + fold]
        keys: dict[str, set] = {}
        for cta in block:
            for tensor, key in shared_by(cta).items():
                keys.setdefault(tensor, set()).add(key)
        copies = {tensor: len(distinct) for tensor, distinct in keys.items()}
        reps.append(Representative(block[len(block) // 2], len(block), copies))
    return reps
