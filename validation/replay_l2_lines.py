"""Line-level L2 models, set-sampled, on the patterns measured on the H200 (no GPU).

The engine's L2 (and replay_causal_schedule.py's models) keep whole tiles in a few hashed LRU classes. This keeps
128 B lines in the sets of two partitions, to try replacement policies a tile model cannot express:
- each partition: `partition_mib` of `ways`-way sets; a region's lines (a tensor's, or one head's) fill consecutive
  sets from a hashed offset, as the GPU's address hash spreads contiguous data evenly; each 2 KiB block of a region is
  homed in one partition by hash;
- a read from an SM looks in the partition beside it (run 29's map): the home line there, else a copy; a copy's miss
  looks up the home (a far hit, or a DRAM miss that fills the home) and leaves a copy beside the reader with the
  chance `copy`. A request for SMs on both sides (the cyclic shared pattern) reads from both. A write goes home;
- policies per set: `lru`; `plru` (tree pseudo-LRU: ways - 1 bits, each access points the bits on its path away from
  it, the victim follows them); `nru` (one referenced bit per line, set on insert and hit; the victim is random among
  unreferenced lines, and when none is left every bit is cleared); `srrip` (2-bit re-reference values, insert at 2,
  hit to 0, evict the first at 3, ageing all).
Only the sets whose index is a multiple of SAMPLE are simulated; DRAM bytes are scaled by SAMPLE.

Prints, for one model: run 26's re-read streams, runs 57-59's lag patterns (validation/model_l2_reuse_lag.py) and runs
58 and 60-64's causal walks (validation/replay_causal_walks.py), each beside the GPU's.

    python validation/replay_l2_lines.py PARTITION_MIB WAYS POLICY COPY     (e.g. 30 16 nru 1; minutes)
"""

from __future__ import annotations

import gzip
import json
import random
import sys
import zlib
from concurrent.futures import ProcessPoolExecutor

import model_l2_reuse_lag as lag_model
import replay_causal_walks as walks
from replay_causal_schedule import MIB, SM0_SIDE, rereads_in_order

LINE = 128
SAMPLE = 32
BLOCK_LINES = 16  # 2 KiB blocks homed by hash
#: Run 26 (validation/probe_l2_policy.py): DRAM reads per byte of the last pass of a data set re-read in order, by every
#: SM (working set MiB -> share) and each line by one SM.
RUN26_SHARED = {24: 0.0, 28: 0.35, 32: 0.82, 40: 1.0}
RUN26_PRIVATE = {40: 0.02, 44: 0.20, 48: 0.69, 56: 1.0}
WALK_FILES = (walks.DATA, walks.MEMORY_ONLY_DATA, walks.BISECT_DATA, walks.GAP_DATA, walks.NO_QO_DATA,
              walks.NO_Q_OR_O_DATA)


class LineL2:
    """Two set-sampled partitions of 128 B lines (see the module's docstring); `access` as the replays call it."""

    def __init__(self, partition_mib: float, ways: int, policy: str, copy: float, seed: int = 1):
        self.sets = int(partition_mib * MIB / LINE / ways)
        self.ways, self.policy, self.copy = ways, policy, copy
        self.parts = ({}, {})  # per partition: set -> list of [tag, state], least recent first (lru)
        self.random = random.Random(seed)
        self._lines: dict = {}

    def sampled_lines(self, key, nbytes: float) -> list[tuple]:
        """(set, tag, home) of the key's lines in sampled sets. Keys are (tensor, index) or (tensor, head, index)."""
        lines = self._lines.get(key)
        if lines is None:
            region, index = (key[:1], key[1]) if len(key) == 2 else (key[:2], key[2])
            offset = zlib.crc32(repr(region).encode())
            count = int(nbytes) // LINE
            lines = []
            for j in range(count):
                line = index * count + j
                cache_set = (offset + line) % self.sets
                if cache_set % SAMPLE == 0:
                    home = (zlib.crc32(repr((region, line // BLOCK_LINES)).encode()) >> 7) & 1
                    lines.append((cache_set, (key, j), home))
            self._lines[key] = lines
        return lines

    def _plru_point_away(self, bits: list, way: int) -> None:
        """Point the tree's bits on `way`'s path away from it (bit 0: the victim is in the left half)."""
        node, low, high = 0, 0, self.ways
        while high - low > 1:
            mid = (low + high) // 2
            left = way < mid
            bits[node] = 0 if not left else 1  # 1: the victim is in the right half
            node, low, high = (2 * node + 1, low, mid) if left else (2 * node + 2, mid, high)

    def _plru_victim(self, bits: list) -> int:
        node, low, high = 0, 0, self.ways
        while high - low > 1:
            mid = (low + high) // 2
            right = bits[node] == 1
            node, low, high = (2 * node + 2, mid, high) if right else (2 * node + 1, low, mid)
        return low

    def _plru(self, part: int, cache_set: int, tag, fill: bool) -> bool:
        """Tree pseudo-LRU: look `tag` up (and fill it when `fill`); True on a hit."""
        slots, bits = self.parts[part].setdefault(cache_set, ([None] * self.ways, [0] * (self.ways - 1)))
        if tag in slots:
            self._plru_point_away(bits, slots.index(tag))
            return True
        if fill:
            way = slots.index(None) if None in slots else self._plru_victim(bits)
            slots[way] = tag
            self._plru_point_away(bits, way)
        return False

    def _touch(self, part: int, cache_set: int, tag) -> bool:
        if self.policy == "plru":
            return self._plru(part, cache_set, tag, fill=False)
        ways = self.parts[part].get(cache_set)
        if ways:
            for i, entry in enumerate(ways):
                if entry[0] == tag:
                    if self.policy == "lru":
                        ways.append(ways.pop(i))
                    else:
                        entry[1] = 1 if self.policy == "nru" else 0
                    return True
        return False

    def _fill(self, part: int, cache_set: int, tag) -> None:
        if self.policy == "plru":
            self._plru(part, cache_set, tag, fill=True)
            return
        ways = self.parts[part].setdefault(cache_set, [])
        if len(ways) >= self.ways:
            if self.policy == "lru":
                ways.pop(0)
            elif self.policy == "nru":
                victims = [i for i, entry in enumerate(ways) if not entry[1]]
                if not victims:
                    for entry in ways:
                        entry[1] = 0
                    victims = list(range(len(ways)))
                ways.pop(victims[int(self.random.random() * len(victims))])
            else:  # srrip
                while not any(entry[1] >= 3 for entry in ways):
                    for entry in ways:
                        entry[1] += 1
                ways.pop(next(i for i, entry in enumerate(ways) if entry[1] >= 3))
        ways.append([tag, {"lru": 0, "nru": 1, "srrip": 2}[self.policy]])

    def _read(self, side: int, cache_set: int, tag, home: int) -> bool:
        """One read from `side`; True when it misses to DRAM."""
        if side == home:
            if self._touch(home, cache_set, tag):
                return False
            self._fill(home, cache_set, tag)
            return True
        if self._touch(side, cache_set, (tag, "copy")):
            return False
        missed = not self._touch(home, cache_set, tag)
        if missed:
            self._fill(home, cache_set, tag)
        if self.copy >= 1.0 or self.random.random() < self.copy:
            self._fill(side, cache_set, (tag, "copy"))
        return missed

    def access(self, sm: int, key, nbytes: float, write: bool) -> float:
        """DRAM bytes the access reads (SM -1: SMs on both sides)."""
        sides = (0, 1) if sm < 0 else (0 if sm % 132 in SM0_SIDE else 1,)
        missed = 0
        for cache_set, tag, home in self.sampled_lines(key, nbytes):
            if write:
                if not self._touch(home, cache_set, tag):
                    self._fill(home, cache_set, tag)
                continue
            missed += any([self._read(side, cache_set, tag, home) for side in sides])
        return missed * LINE * SAMPLE


def cyclic(params: tuple, working_set_mib: float, shared: bool) -> float:
    """Run 26's pattern (replay_causal_schedule.rereads_in_order), a shared set read by one request for SMs on both
    sides."""
    return rereads_in_order(working_set_mib, LineL2(*params), shared, shared_readers=(-1,))


def lag_row(args: tuple) -> tuple:
    params, key, lags = args
    group, followers, side = key
    return key, [lag_model.replay(LineL2(*params), lag, followers, group, 16 * 1024, 128, side) for lag in lags]


def walk_row(args: tuple) -> tuple:
    params, path, index = args
    doc = json.loads(gzip.open(path).read())
    timeline = doc["timelines"][index]
    case = timeline["case"]
    model = walks.reads_per_head(case, walks.replayed_kv_reads_per_head(case, walks.walked_accesses(timeline),
                                                                        LineL2(*params)))
    return path.name, index, walks.gpu_reads_per_head(case, doc["kernels"][index]), model


def main() -> None:
    params = (float(sys.argv[1]), int(sys.argv[2]), sys.argv[3], float(sys.argv[4]))
    print(f"two partitions of {params[0]:g} MiB, {params[1]}-way, {params[2]}, copies {params[3]:g}")
    for name, shared, gpu in (("shared", True, RUN26_SHARED), ("private", False, RUN26_PRIVATE)):
        row = [cyclic(params, w, shared) for w in gpu]
        print(f"run 26, {name}, {' / '.join(map(str, gpu))} MiB: GPU {' / '.join(f'{v:.2f}' for v in gpu.values())}; "
              f"model {' / '.join(f'{v:.2f}' for v in row)}", flush=True)
    measured = lag_model.measured_rows()
    jobs = [(params, key, [lag for lag in sorted(rows) if lag <= 64]) for key, rows in sorted(measured.items())]
    walk_jobs = [(params, path, i) for path in WALK_FILES
                 for i in range(len(json.loads(gzip.open(path).read())["timelines"]))]
    with ProcessPoolExecutor(2) as pool:
        for key, row in pool.map(lag_row, jobs):
            lags = [lag for lag in sorted(measured[key]) if lag <= 64]
            error = sum(abs(m - max(measured[key][lag], 0.0)) for m, lag in zip(row, lags))
            print(f"runs 57-59, {key}: GPU {' / '.join(f'{measured[key][lag]:.2f}' for lag in lags)}; model "
                  f"{' / '.join(f'{v:.2f}' for v in row)} (summed |model - GPU| {error:.2f})", flush=True)
        for name, index, gpu, model in pool.map(walk_row, walk_jobs):
            print(f"{name} case {index}: K/V reads per head GPU {gpu:.2f}, model {model:.2f}", flush=True)


if __name__ == "__main__":
    main()
