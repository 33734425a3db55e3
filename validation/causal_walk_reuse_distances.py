"""How far back each K/V re-read of run 58's causal walks reaches: its stack distance (the bytes of distinct tiles
touched since that tile's last use) over the L2's capacity, and the same for run 26's re-read in order.

An LRU of the L2's capacity keeps every re-read whose stack distance is below 1. Run 58's walks re-read K/V at 0.25-0.9
of it, run 26's at its working set; where an L2's victims fall in the recency order decides the first, not the second
(validation/README.md, thirtieth session).

    python validation/causal_walk_reuse_distances.py      (no GPU; about 30 s)
"""

from __future__ import annotations

import gzip
import json

import replay_causal_walks as walks
from gpusim.hardware import get_preset

CAPACITY_BYTES = get_preset("h200").l2_capacity_bytes
BINS_PER_CAPACITY = 8
BINS = 12  # the last one holds everything from 11/8 of the capacity up


class StackDistances:
    """Stack distances in bytes, from a Fenwick tree over access times holding each key's bytes at its last use."""

    def __init__(self, accesses: int):
        self.tree = [0.0] * (accesses + 1)
        self.last: dict = {}  # key -> (time of its last use, bytes)
        self.time = 0
        self.total_bytes = 0.0

    def _add(self, time: int, nbytes: float) -> None:
        i = time + 1
        while i < len(self.tree):
            self.tree[i] += nbytes
            i += i & -i

    def _bytes_up_to(self, time: int) -> float:
        i, total = time + 1, 0.0
        while i > 0:
            total += self.tree[i]
            i -= i & -i
        return total

    def access(self, key, nbytes: float) -> float | None:
        """This access's stack distance in bytes; None on a first use."""
        distance = None
        if key in self.last:
            time, old_bytes = self.last[key]
            distance = self.total_bytes - self._bytes_up_to(time)
            self._add(time, -old_bytes)
            self.total_bytes -= old_bytes
        self._add(self.time, nbytes)
        self.total_bytes += nbytes
        self.last[key] = (self.time, nbytes)
        self.time += 1
        return distance


def histogram(distances: list[float]) -> str:
    counts = [0] * BINS
    for d in distances:
        counts[min(BINS - 1, int(d / CAPACITY_BYTES * BINS_PER_CAPACITY))] += 1
    return " ".join(f"{c / max(1, len(distances)):.2f}" for c in counts)


def main() -> None:
    print(f"share of re-reads per eighth of the L2's capacity ({CAPACITY_BYTES / 2**20:.1f} MiB), 0-1/8 ... 11/8 up")
    doc = json.loads(gzip.open(walks.DATA).read())
    for timeline in doc["timelines"]:
        case, events = timeline["case"], walks.walked_accesses(timeline)
        stack, distances = StackDistances(len(events)), []
        for _, _, _, _, key, nbytes in events:
            distance = stack.access(key, nbytes)
            if distance is not None and key[0] in ("K", "V"):
                distances.append(distance)
        print(f"run 58, {case['heads']} heads, N = {case['seq_len']}: {histogram(distances)}", flush=True)
    tile_bytes = 16 * 1024
    for working_set_mib in (24, 28, 32):
        tiles = working_set_mib * 2**20 // tile_bytes
        stack, distances = StackDistances(3 * tiles), []
        for _ in range(3):
            for i in range(tiles):
                distance = stack.access(i, tile_bytes)
                if distance is not None:
                    distances.append(distance)
        print(f"run 26, {working_set_mib} MiB re-read in order: {histogram(distances)}")


if __name__ == "__main__":
    main()
