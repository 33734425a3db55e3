"""L2 cache: capacity-managed, LRU over tiles, write-back.

Entries are whole tiles keyed by their global region, so two CTAs reading the same K/V tile hit. A
written tile is dirty; its bytes reach HBM only when it is evicted (as Nsight Compute counts DRAM
writes during a kernel: output that stays in L2 at the end is not written yet).
"""

from __future__ import annotations

from collections import OrderedDict


class L2Cache:
    __slots__ = ("capacity_bytes", "used_bytes", "_lines")

    def __init__(self, capacity_bytes: int):
        self.capacity_bytes = capacity_bytes
        self.used_bytes = 0
        self._lines: OrderedDict = OrderedDict()  # key -> [bytes, dirty, ready cycle]

    def hit(self, key) -> bool:
        """True (and the line becomes most recently used) when the tile is resident."""
        return self.arrival(key) is not None

    def arrival(self, key) -> float | None:
        """The cycle a resident tile's data is (or will be) in L2, making it most recently used; None
        when absent. A tile whose miss is still in flight is resident with a future arrival: a second
        reader merges with the miss and waits for it, as L2 miss handling does."""
        line = self._lines.get(key)
        if line is None:
            return None
        self._lines.move_to_end(key)
        return line[2]

    def contains(self, key) -> bool:
        """True when the tile is resident (LRU order unchanged)."""
        return key in self._lines

    def is_dirty(self, key) -> bool:
        """True when the tile is resident and holds data not yet written to HBM (LRU order unchanged)."""
        line = self._lines.get(key)
        return line is not None and line[1]

    def set_arrival(self, key, cycle: float) -> None:
        line = self._lines.get(key)
        if line is not None:
            line[2] = cycle

    def insert(self, key, nbytes: float, dirty: bool, arrival: float = 0.0) -> float:
        """Make a tile resident; returns the dirty bytes evicted to make room (to be written to HBM)."""
        line = self._lines.get(key)
        if line is not None:
            self._lines.move_to_end(key)
            self.used_bytes += nbytes - line[0]
            line[0] = nbytes
            line[1] = line[1] or dirty
        else:
            self._lines[key] = [nbytes, dirty, arrival]
            self.used_bytes += nbytes
        written_back = 0.0
        while self.used_bytes > self.capacity_bytes and len(self._lines) > 1:
            _, (size, was_dirty, _ready) = self._lines.popitem(last=False)
            self.used_bytes -= size
            if was_dirty:
                written_back += size
        return written_back

    def dirty_bytes(self) -> float:
        return sum(size for size, dirty, _ready in self._lines.values() if dirty)

    def composition(self) -> list[tuple[float, bool]]:
        """(bytes, dirty) of every resident tile, least recently used first."""
        return [(size, dirty) for size, dirty, _ready in self._lines.values()]

    def age(self, clean_bytes: float, dirty_bytes: float, tag, chunks: int = 64,
            ending: list[tuple[float, bool]] = ()) -> float:
        """Stand-in traffic for work that was extrapolated rather than simulated: insert that many clean
        (read) and dirty (written) bytes as anonymous lines, interleaved, so that the cache ends as full and
        as dirty as the real traffic would leave it. The last of it takes the `ending` composition (bytes,
        dirty), least recently used first: the mix of tiles a launch's last wave leaves behind, whose recent
        K/V and output tiles outlive its older Q tiles (as much of it as the stand-in volume covers, most
        recent first). Returns the dirty bytes this evicts to HBM."""
        # the ending is the last of the stand-in traffic: its most recent tiles, as many as that traffic holds
        tail = []
        for size, dirty in reversed(ending):
            if dirty and size <= dirty_bytes:
                dirty_bytes -= size
            elif not dirty and size <= clean_bytes:
                clean_bytes -= size
            else:
                continue
            tail.append((size, dirty))
        written_back = 0.0
        for i in range(chunks):
            written_back += self.insert((tag, "read", i), clean_bytes / chunks, dirty=False)
            written_back += self.insert((tag, "write", i), dirty_bytes / chunks, dirty=True)
        for i, (size, dirty) in enumerate(reversed(tail)):
            written_back += self.insert((tag, "end", i), size, dirty=dirty)
        return written_back

