"""L2 cache: capacity-managed, LRU or tree pseudo-LRU over tiles, write-back, with a gradual capacity edge.

Entries are whole tiles keyed by their global region, so two CTAs reading the same K/V tile hit. A
written tile is dirty; its bytes reach HBM only when it is evicted (as Nsight Compute counts DRAM
writes during a kernel: output that stays in L2 at the end is not written yet).

A real L2 does not drop lines at one LRU depth: addresses hash into sets and two partitions, so a data set
re-read in the same order starts to miss somewhat below the mean capacity and misses wholly somewhat above it
(run 26). With `spread_bytes` > 0 every tile joins one of CLASSES classes, each an LRU of its own; class k holds
(capacity + spread x z_k) / CLASSES bytes, z_k the k-th of CLASSES normal quantiles. A data set of W bytes
re-read in order then misses in the classes whose depth (capacity + spread x z_k) is below W: a normal CDF of W
around the capacity, the shape run 26 measured. With spread 0 it is one LRU.
A tile's class is a hash of its key (CRC-32 of its repr: the same in every process, unlike Python's str hash),
as a line's set is a hash of its address. Giving a tensor's tiles the classes in turn instead aliases with
streams that interleave (two heads' K tiles would take alternate classes). Hashing leaves the classes' shares of
a stream of n tiles uneven by about sqrt(8 / n).

A line only one SM has used takes less room than one SMs on both sides of the GPU read (`private_share` of it):
the L2 is two partitions, and a line read from both sides is held in both, so the capacity is that of data every SM
reads, and a private line (a CTA's Q or O tile) fills one partition only (run 26: private data fits about 46 MiB
where shared data fits 29). Each line remembers its one reader (an SM index) until a second one uses it, which makes
it shared; requests that stand for several SMs (folded mode) read as SHARED, and each other CTA's tile that a folded
request names is read by a reader of its own (memory._key_reader). (On the GPU only a reader beside the other
partition does, run 52; the model has no sides, and an attention wave's K/V is read from both.)

With `pseudo_lru` the victims are a tree pseudo-LRU's (_victim_rank), as the H200's L2 picks them: a causal forward's
K/V, which its CTAs re-touch every two steps of their walks, is pushed out by once-used Q and O lines far sooner than
an LRU would let them (runs 63-64), and a line-level model with a 16-way tree per set follows the GPU's causal walks
where true LRU does not (validation/replay_l2_lines.py, twenty-eighth session).
"""

from __future__ import annotations

import bisect
import random
import zlib
from collections import OrderedDict
from itertools import islice
from statistics import NormalDist

#: Classes of a cache with a gradual edge: enough steps to follow the measured curve, few enough that each class
#: (an eighth of the capacity, 3.6 MiB on the h200) holds dozens of tiles (57 of d = 256's 64 KiB ones; a
#: simulation setting).
CLASSES = 8

#: The reader of a request that stands for several SMs, and the owner of a line more than one SM has used.
SHARED = -1

#: Tree pseudo-LRU over 16 ways: where its victims sit in their set's true recency order (rank 0 the least recent,
#: in sixteenths of the set) once hits have scattered its tree bits. The four most recent ways are never chosen.
#: Measured on the line-level model (validation/replay_l2_lines.py, 30 MiB partitions, 16 ways, `plru`) replaying
#: run 58's causal walk at 4 heads, 32k tokens (validation/plru_victim_ranks.py); run 57b's lag patterns give the
#: same fall-off where hits dominate.
TREE_PLRU_VICTIM_RANKS = (0.182, 0.167, 0.147, 0.137, 0.114, 0.089, 0.065, 0.048, 0.028, 0.015, 0.007, 0.001)
_VICTIM_RANK_CDF = tuple(sum(TREE_PLRU_VICTIM_RANKS[:i + 1]) / sum(TREE_PLRU_VICTIM_RANKS)
                         for i in range(len(TREE_PLRU_VICTIM_RANKS)))
#: Ways per set of the tree those ranks were counted on: each rank bin is a sixteenth of the class's lines.
TREE_PLRU_WAYS = 16
#: A tree pseudo-LRU of 16 ways never evicts the 4 most recent (log2 16 levels point away from each), and a hit on one
#: of them moves no bit that picks the next victim; nor does a hit on a line at the least recent end, where the bits
#: already point (a stream re-read in order keeps the tree in order). So a hit scatters the tree only on a line older
#: than the most recent 1 / PROTECTED_SHARE_INVERSE of the cache and younger than all of it (by the accesses since its
#: last use, which overcounts lines).
PROTECTED_SHARE_INVERSE = 4
#: Accesses over which the pseudo-LRU's state forgets (an exponential average; a simulation setting, not measured): a
#: few sets' worth of recent traffic.
PLRU_MEMORY_ACCESSES = 64


def class_capacities(capacity_bytes: float, spread_bytes: float, classes: int = CLASSES) -> list[float]:
    """Each class's bytes: their LRU depths (capacity_bytes + spread_bytes x z_k) are normal quantiles around
    the capacity, and they add up to it."""
    if not spread_bytes:
        return [float(capacity_bytes)]
    normal = NormalDist()
    depths = [capacity_bytes + spread_bytes * normal.inv_cdf((k + 0.5) / classes) for k in range(classes)]
    return [max(depth, 0.0) / classes for depth in depths]


class L2Cache:
    __slots__ = ("capacity_bytes", "spread_bytes", "private_share", "shared_bytes", "_lines", "_orders",
                 "_capacities", "_used", "_stamp", "_class_of_key", "pseudo_lru", "_fill_share", "_random")

    def __init__(self, capacity_bytes: int, spread_bytes: float = 0.0, private_share: float = 1.0,
                 pseudo_lru: bool = False, seed: int = 0):
        self.capacity_bytes = capacity_bytes
        self.pseudo_lru = pseudo_lru  # victims as a tree pseudo-LRU picks them (_victim_rank), else the least recent
        self._fill_share = 1.0  # recent accesses that were fills rather than hits on older lines (pseudo_lru)
        self._random = random.Random(seed)  # seeded: a simulation repeats
        self.spread_bytes = spread_bytes  # the standard deviation of the depth at which a re-read stream misses
        self.private_share = private_share  # the room a line one SM has used takes, over its bytes
        self.shared_bytes = 0.0  # bytes of lines a second SM has used while resident (each counted once per stay)
        self._capacities = class_capacities(capacity_bytes, spread_bytes)
        self._orders = [OrderedDict() for _ in self._capacities]  # per class: key -> None, least recent first
        self._used = [0.0 for _ in self._capacities]  # per class: the room its lines take
        # key -> [bytes, dirty, ready cycle, class, last-use stamp, room, owner (its one reader's SM, or SHARED)]
        self._lines: dict = {}
        self._stamp = 0
        self._class_of_key: dict = {}  # every key seen: its class (hashed once)

    @property
    def classes(self) -> int:
        return len(self._orders)

    def class_bytes(self, cls: int) -> float:
        """The capacity of class `cls`."""
        return self._capacities[cls]

    @property
    def used_bytes(self) -> float:
        """The room the resident lines take (their bytes, private lines at `private_share`)."""
        return sum(self._used)

    def _touch(self, key, line) -> None:
        self._orders[line[3]].move_to_end(key)
        self._stamp += 1
        line[4] = self._stamp

    def _class_of(self, key) -> int:
        """The key's class, a hash of its repr (keys are tuples of names and integers, so it is stable)."""
        if len(self._orders) == 1:
            return 0
        cls = self._class_of_key.get(key)
        if cls is None:
            cls = self._class_of_key[key] = zlib.crc32(repr(key).encode()) % len(self._orders)
        return cls

    def hit(self, key, reader: int = SHARED) -> bool:
        """True (and the line becomes most recently used) when the tile is resident; a `reader` other than the
        line's one owner makes it shared."""
        return self.arrival(key, reader) is not None

    def arrival(self, key, reader: int = SHARED) -> float | None:
        """The cycle a resident tile's data is (or will be) in L2, making it most recently used; None
        when absent. A tile whose miss is still in flight is resident with a future arrival: a second
        reader merges with the miss and waits for it, as L2 miss handling does. A `reader` other than the
        line's one owner makes it shared."""
        line = self._lines.get(key)
        if line is None:
            return None
        if self.pseudo_lru:  # a hit between the most recent quarter and the least recent end scatters the tree
            lines, quarters_since = len(self._lines), (self._stamp - line[4]) * PROTECTED_SHARE_INVERSE
            if lines <= quarters_since < lines * PROTECTED_SHARE_INVERSE:
                self._fill_share -= self._fill_share / PLRU_MEMORY_ACCESSES
        self._orders[line[3]].move_to_end(key)  # _touch, inlined: this is the hottest call of a simulation
        self._stamp += 1
        line[4] = self._stamp
        if line[6] != reader and line[6] != SHARED:
            self._share(line)
        return line[2]

    def _room(self, nbytes: float, owner: int) -> float:
        """The room a line of `nbytes` takes: its bytes once shared, a private line's share while one SM owns it."""
        return nbytes if owner == SHARED else nbytes * self.private_share

    def _share(self, line) -> None:
        """A second SM uses the line: it now takes its whole bytes of room. The class may hold more than its
        capacity until its next insert evicts down to it (a hit evicts nothing, and returns no write-back)."""
        self._used[line[3]] += line[0] - line[5]
        self.shared_bytes += line[0]
        line[5], line[6] = line[0], SHARED

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

    def insert(self, key, nbytes: float, dirty: bool, arrival: float = 0.0, cls: int | None = None,
               reader: int = SHARED, room: float | None = None) -> float:
        """Make a tile resident for `reader` (an SM index, or SHARED); returns the dirty bytes evicted to make room
        (to be written to HBM). `cls` places a new line in that class rather than its key's, and `room` gives it
        that room rather than its owner's (age's stand-in lines, also when they are inserted again: a revisiting
        loop's stand-ins keep their tag)."""
        line = self._lines.get(key)
        if line is not None:
            self._touch(key, line)
            if line[6] != reader and line[6] != SHARED:
                self._share(line)
            line[0] = nbytes
            line[1] = line[1] or dirty
            new_room = self._room(nbytes, line[6]) if room is None else room
            grown = new_room - line[5]
            line[5] = new_room
        else:
            self._stamp += 1
            if room is None:
                room = self._room(nbytes, reader)
            line = self._lines[key] = [nbytes, dirty, arrival, self._class_of(key) if cls is None else cls,
                                       self._stamp, room, reader]
            self._orders[line[3]][key] = None
            grown = room
            if self.pseudo_lru:
                self._fill_share += (1.0 - self._fill_share) / PLRU_MEMORY_ACCESSES
        cls = line[3]
        self._used[cls] += grown
        return self._evict(cls, keep=1)  # never the line just inserted

    def _evict(self, cls: int, keep: int) -> float:
        """Evict class `cls`'s least recent lines until it fits its capacity or holds `keep` lines; returns the dirty
        bytes evicted."""
        order, capacity = self._orders[cls], self._capacities[cls]
        written_back = 0.0
        while self._used[cls] > capacity and len(order) > keep:
            rank = self._victim_rank(len(order) - keep)
            if rank == 0:
                victim, _ = order.popitem(last=False)
            else:
                victim = next(islice(iter(order), rank, None))
                del order[victim]
            evicted = self._lines.pop(victim)
            self._used[cls] -= evicted[5]
            if evicted[1]:
                written_back += evicted[0]
        return written_back

    def _victim_rank(self, candidates: int) -> int:
        """The recency rank (0: least recent) of the next victim among a class's `candidates` oldest lines.

        LRU: always the least recent. Tree pseudo-LRU: a stream of fills alone walks its tree bits round the ways in
        order, evicting the least recent; a hit on an older line points the bits away from it, and the fills that
        follow evict lines the tree no longer orders by age. So the victim is the least recent with the chance that
        recent accesses were fills, else a line at a rank drawn from TREE_PLRU_VICTIM_RANKS. A hit on a class's most
        recent lines (PROTECTED_SHARE_INVERSE: SMs reading a tile just fetched) or on its least recent (a stream
        re-read in order, which run 26 finds the GPU's L2 treating as an LRU does) moves no bit that matters."""
        if not self.pseudo_lru or self._random.random() < self._fill_share:
            return 0
        step = bisect.bisect_left(_VICTIM_RANK_CDF, self._random.random())
        return min(candidates - 1, int((step + self._random.random()) / TREE_PLRU_WAYS * candidates))

    def reserve(self, room: float) -> float:
        """Take `room` out of the capacity, evenly from every class (lines that never leave the L2 because they are
        rewritten all the time, hashed over every set: ops.SpillStore's stack frames), evicting what no longer fits;
        returns the dirty bytes evicted. A negative room gives it back."""
        share = room / len(self._orders)
        written_back = 0.0
        for cls in range(len(self._orders)):
            self._capacities[cls] = max(0.0, self._capacities[cls] - share)
            written_back += self._evict(cls, keep=0)
        return written_back

    def dirty_bytes(self) -> float:
        return sum(line[0] for line in self._lines.values() if line[1])

    def composition(self) -> list[tuple[float, bool, int, float]]:
        """(bytes, dirty, class, room) of every resident tile, least recently used first."""
        return [(line[0], line[1], line[3], line[5])
                for line in sorted(self._lines.values(), key=lambda line: line[4])]

    def age(self, clean_bytes: float, dirty_bytes: float, tag, chunks: int = 64,
            ending: list[tuple[float, bool, int, float]] = (), clean_room: float = 1.0) -> float:
        """Stand-in traffic for work that was extrapolated rather than simulated: insert that many clean
        (read) and dirty (written) bytes as anonymous lines, interleaved and spread evenly over the classes, so
        that the cache ends as full and as dirty as the real traffic would leave it. Clean lines take
        `clean_room` of their bytes as room (the share of a shared line's room the reads they stand for take);
        dirty lines a private line's (each written by one SM). The last of it takes the `ending` composition
        (bytes, dirty, class, room; `composition()`), least recently used first: the mix of tiles a launch's last
        wave leaves behind, whose recent K/V and output tiles outlive its older Q tiles (as much of it as the
        stand-in volume covers, most recent first), each in its class. Returns the dirty bytes this evicts to
        HBM."""
        # the ending is the last of the stand-in traffic: its most recent tiles, as many as that traffic holds
        tail = []
        for size, dirty, cls, room in reversed(ending):
            if dirty and size <= dirty_bytes:
                dirty_bytes -= size
            elif not dirty and size <= clean_bytes:
                clean_bytes -= size
            else:
                continue
            tail.append((size, dirty, cls, room))
        written_back = 0.0
        # Traffic beyond what fills every class passes through: its older part would have been evicted, and its dirty
        # bytes written back, before the skipped work ended, so only the last of it (the deepest class's fill in
        # every class) stays as lines. (Inserted whole, each of a few lines could be larger than its class and stay
        # there, until a real access evicted it and waited for gigabytes to be written back: FA1's forward at 65k
        # tokens, 32 heads stalled 50M cycles and took 3.0 s where its time per N^2 gives 1.05.)
        room = clean_bytes * clean_room + dirty_bytes * self.private_share
        fills_every_class = max(self._capacities) * len(self._capacities)
        if room > fills_every_class:
            kept = fills_every_class / room
            written_back += dirty_bytes * (1.0 - kept)
            clean_bytes, dirty_bytes = clean_bytes * kept, dirty_bytes * kept
        classes = self.classes  # the stand-in lines' tags may hold object ids: classes are given, not hashed
        clean_chunk, dirty_chunk = clean_bytes / chunks, dirty_bytes / chunks
        for i in range(chunks):
            written_back += self.insert((tag, "read", i), clean_chunk, dirty=False, cls=i % classes,
                                        room=clean_chunk * clean_room)
            written_back += self.insert((tag, "write", i), dirty_chunk, dirty=True, cls=i % classes,
                                        room=dirty_chunk * self.private_share)
        for i, (size, dirty, cls, room) in enumerate(reversed(tail)):
            written_back += self.insert((tag, "end", i), size, dirty=dirty, cls=cls, room=room)
        return written_back
