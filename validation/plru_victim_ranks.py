"""Where a 16-way tree pseudo-LRU's victims sit in true recency order, on the patterns measured on the H200 (no GPU).

The engine's L2 keeps tiles, not lines, so it cannot run a tree per set. It stands in for one by drawing each victim's
recency rank (engine.l2.TREE_PLRU_VICTIM_RANKS) once hits have scattered the tree's bits. This measures that
distribution: it replays run 58's causal walks (validation/replay_causal_walks.py) and run 57b's three-follower lag
patterns (validation/model_l2_reuse_lag.py) through replay_l2_lines.LineL2 (two 30 MiB partitions, 16 ways, `plru`,
copies always), keeps each sampled set's true LRU order beside its tree, and prints, per pattern, the share of victims
at each rank (0: the least recent) with the pattern's K/V reads per head or re-reads per byte.

    python validation/plru_victim_ranks.py      (no GPU; a few minutes)
"""

from __future__ import annotations

import gzip
import json

import model_l2_reuse_lag as lag_model
import replay_causal_walks as walks
from replay_l2_lines import LineL2

PARAMS = (30, 16, "plru", 1.0)


class RankedLineL2(LineL2):
    """LineL2 (`plru`) that also keeps each set's true recency order and counts its victims' ranks in it."""

    def __init__(self, *args):
        super().__init__(*args)
        self.recency: dict = {}
        self.victim_ranks = [0] * self.ways

    def _plru(self, part: int, cache_set: int, tag, fill: bool) -> bool:
        slots, bits = self.parts[part].setdefault(cache_set, ([None] * self.ways, [0] * (self.ways - 1)))
        order = self.recency.setdefault((part, cache_set), [])
        if tag in slots:
            self._plru_point_away(bits, slots.index(tag))
            order.remove(tag)
            order.append(tag)
            return True
        if fill:
            if None in slots:
                way = slots.index(None)
            else:
                way = self._plru_victim(bits)
                self.victim_ranks[order.index(slots[way])] += 1
                order.remove(slots[way])
            slots[way] = tag
            order.append(tag)
            self._plru_point_away(bits, way)
        return False

    def shares(self) -> str:
        total = sum(self.victim_ranks) or 1
        return " ".join(f"{count / total:.3f}" for count in self.victim_ranks)


def main() -> None:
    print("share of victims at recency rank 0 (least recent) .. 15")
    doc = json.loads(gzip.open(walks.DATA).read())
    for timeline in doc["timelines"]:
        case, cache = timeline["case"], RankedLineL2(*PARAMS)
        reads = walks.replayed_kv_reads_per_head(case, walks.walked_accesses(timeline), cache)
        print(f"run 58, {case['heads']} heads at {case['seq_len']}: K/V reads per head {reads:.2f}; {cache.shares()}",
              flush=True)
    for lag_mib in (16, 24, 32):
        cache = RankedLineL2(*PARAMS)
        rereads = lag_model.replay(cache, lag_mib, 3, 33, 16 * 1024, 128, False)
        print(f"run 57b, three followers at {lag_mib} MiB: re-reads per byte {rereads:.2f}; {cache.shares()}",
              flush=True)


if __name__ == "__main__":
    main()
