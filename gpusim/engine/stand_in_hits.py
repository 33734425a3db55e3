"""Stand-in chunk hits that reads booked later can turn into misses.

A sampled walk's jump decides whether each of its stand-in chunks hits when it books it
(MemorySystem.read_stand_ins), from the reads booked so far. A CTA that jumps later can still book reads of other
data at cycles inside such a chunk's interval, between its last read and the one decided. One case is the new head's
K/V that a folded block straddling two heads walks: its representative jumps after those of the old head. In exact
mode those reads push the old head's tiles out before the later reads reach them. For cuDNN at 4 heads of 32k tokens,
d = 128, the straddling wave re-reads 4.1-4.4 MB of the old head's K in exact mode, and 0.03-0.07 MB in folded mode
without this (validation/README.md, thirty-third session). So each hit is kept, with the room its class had left,
until its read's cycle has passed. A later booking takes room from every kept hit whose interval holds its cycle, if
its chunk was not read in that interval before (else the decision counted it). A hit left without room becomes a
miss.
"""

from __future__ import annotations

import math

import numpy as np

#: The last read of a chunk not read before in the launch: before every interval, so it takes room from each.
NEVER_READ = -math.inf


class _ClassHits:
    """One L2 class's kept hits: their intervals (cycles), the room the class had left at each (bytes), and what to
    charge each if it becomes a miss."""

    __slots__ = ("low", "high", "room", "charges")

    def __init__(self):
        self.low: list[float] = []
        self.high: list[float] = []
        self.room: list[float] = []
        self.charges: list = []


class StandInHits:
    """The stand-in hits of a launch whose intervals have not passed yet, per L2 class."""

    def __init__(self):
        self._by_class: dict[int, _ClassHits] = {}

    def clear(self) -> None:
        self._by_class.clear()

    def keep(self, cls: int, low: float, high: float, room_bytes: float, charge) -> None:
        """A chunk of class `cls` hit: read at `low` and again at `high`, with `room_bytes` of its class left.
        `charge` comes back from book() if later reads leave it no room."""
        hits = self._by_class.setdefault(cls, _ClassHits())
        hits.low.append(low)
        hits.high.append(high)
        hits.room.append(room_bytes)
        hits.charges.append(charge)

    def book(self, now: float, cls: int, cycles: list[float], previous: list[float], nbytes: list[float]) -> list:
        """Reads of class `cls` booked at `now`: at `cycles`, of chunks last read at `previous` (-inf: never), of
        `nbytes` each. Drops the hits whose reads have passed; returns the charges of those that no longer fit."""
        hits = self._by_class.get(cls)
        if hits is None or not hits.low:
            return []
        low, high, room = np.array(hits.low), np.array(hits.high), np.array(hits.room)
        cycle, before = np.array(cycles)[None, :], np.array(previous)[None, :]
        inside = (low[:, None] < cycle) & (cycle < high[:, None]) & (before <= low[:, None])
        room = room - inside @ np.array(nbytes, dtype=float)
        missed = room < 0
        kept = (high > now) & ~missed
        charges = [hits.charges[i] for i in np.flatnonzero(missed)]
        index = np.flatnonzero(kept)
        hits.low = low[index].tolist()
        hits.high = high[index].tolist()
        hits.room = room[index].tolist()
        hits.charges = [hits.charges[i] for i in index]
        return charges
