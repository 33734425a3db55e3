"""Replay runs 43-44's measured causal schedules through L2 models: is it the schedule or the L2 that re-reads?

Runs 43 and 44 (probe_fa_causal.py, probe_fa_causal_more.py) recorded when each CTA of a Triton causal forward ran,
on which SM, and Nsight Compute counted the kernel's DRAM reads. This replays every CTA's K/V walk (its tiles from
its diagonal down, spread evenly over its start and end, Q read at its start, O written at its end) through three L2
models, and prints the K/V passes per head each gives beside the GPU's:

- the model's L2 (`gpusim.engine.l2.L2Cache` at the h200 preset: 8 hashed LRU classes around 29.2 MiB);
- one LRU of a given capacity;
- two partitions of a given capacity each (run 29): every line has a home partition by address (half of each tile
  on each side), and a read from an SM on the other side leaves a copy beside it (always, or with a probability);
  each partition an LRU, or the model's hashed classes with a spread.

It first reads run 26's patterns (a working set re-read in order, by every SM or each line by one) through the same
models, since an L2 model must fit those too.

    python validation/replay_causal_schedule.py [CAPACITY_MIB:SPREAD:COPY_PROBABILITY ...]   (no GPU; minutes)

The replay's own approximation (tiles spread evenly over a CTA, no prefetch) was gauged on the model's exact-mode
schedule of SDPA's FA2: compare_causal_schedule.py records it from the engine's trace and replays it the same way.
"""

from __future__ import annotations

import json
import random
import sys
from collections import OrderedDict
from pathlib import Path

from ncu_profile import metric_value
from profile_dram_heads import kv_reads_per_head

HERE = Path(__file__).resolve().parent
SCHEDULES = HERE / "data" / "h200_probe_2026-11-30_fa_causal.json"
#: Run 44 (probe_fa_causal_more.py): the same kernel on run 42's other gated shapes, each recorded after an L2 flush.
MORE_SCHEDULES = HERE / "data" / "h200_probe_2026-11-30_fa_causal_more.json"
MIB = 1 << 20
#: Run 29: the SMs beside SM 0's L2 partition (inclusive ranges); the others sit beside SM 67's.
SIDE_OF_SM0 = ((0, 1), (8, 13), (16, 17), (24, 29), (32, 33), (40, 45), (48, 49), (56, 61), (70, 75), (84, 89),
               (98, 103), (112, 117), (120, 121), (124, 131))
SM0_SIDE = {sm for first, last in SIDE_OF_SM0 for sm in range(first, last + 1)}
LRU_CAPACITIES_MIB = (24, 27, 29.2, 32)
#: Two partitions: (capacity of each in MiB, spread as a fraction of it, probability that a far read leaves a copy).
#: The first three are copies always and one LRU each; the last three give run 26's gradual edges too (nineteenth
#: session). More from the command line: `replay_causal_schedule.py 26:0.106:0.5 ...`.
PARTITIONS = ((24, 0.0, 1.0), (25.5, 0.0, 1.0), (27, 0.0, 1.0), (26, 0.106, 0.5), (26.5, 0.12, 0.45), (27, 0.15, 0.4))


def accesses(case: dict, records: list) -> list[tuple]:
    """Every access of a causal schedule in time order: (time, order, SM, kind, key, bytes); kind "read" or "write".
    `records` holds each CTA's (sm, start, end) in grid order (query blocks of a head, then heads)."""
    blocks_per_head = case["seq_len"] // case["block_m"]
    tile_bytes = case["block_n"] * case["head_dim"] * 2
    rows_bytes = case["block_m"] * case["head_dim"] * 2
    t0 = min(r[1] for r in records)
    events = []
    for cta, (sm, start, end) in enumerate(records):
        head, block = divmod(cta, blocks_per_head)
        tiles = -(-((block + 1) * case["block_m"]) // case["block_n"])
        start_ns, end_ns = start - t0, end - t0
        events.append((start_ns, 0, sm, "read", ("Q", head, block), rows_bytes))
        for step in range(tiles):
            time_ns = start_ns + (end_ns - start_ns) * step / tiles
            for tensor in ("K", "V"):
                events.append((time_ns, 1, sm, "read", (tensor, head, tiles - 1 - step), tile_bytes))
        events.append((end_ns, 2, sm, "write", ("O", head, block), rows_bytes))
    events.sort(key=lambda e: (e[0], e[1]))
    return events


class OneLru:
    """One LRU of `capacity_bytes` over whole tiles."""

    def __init__(self, capacity_bytes: float):
        self.lines: OrderedDict = OrderedDict()
        self.capacity_bytes, self.used_bytes = capacity_bytes, 0.0

    def access(self, sm: int, key, nbytes: float, write: bool) -> float:
        """DRAM bytes this access reads."""
        if key in self.lines:
            self.lines.move_to_end(key)
            return 0.0
        self.lines[key] = nbytes
        self.used_bytes += nbytes
        while self.used_bytes > self.capacity_bytes:
            self.used_bytes -= self.lines.popitem(last=False)[1]
        return 0.0 if write else nbytes


class ModelL2:
    """The model's L2 at the h200 preset (a line one SM uses takes l2_private_line_share of its bytes of room)."""

    def __init__(self):
        from gpusim.engine.l2 import L2Cache
        from gpusim.hardware import get_preset
        hw = get_preset("h200")
        self.cache = L2Cache(hw.l2_capacity_bytes, hw.l2_capacity_spread_fraction * hw.l2_capacity_bytes,
                             hw.l2_private_line_share, pseudo_lru=hw.l2_tree_pseudo_lru)

    def access(self, sm: int, key, nbytes: float, write: bool) -> float:
        if write:
            self.cache.insert(key, nbytes, dirty=True, reader=sm)
            return 0.0
        if self.cache.hit(key, sm):
            return 0.0
        self.cache.insert(key, nbytes, dirty=False, reader=sm)
        return nbytes


class TwoPartitions:
    """Two L2 partitions of `capacity_bytes` each, each the model's L2Cache (hashed LRU classes, `spread_fraction`
    of the capacity); half of each tile is homed in each. A read from the far side finds its copy beside it, else
    the home line (a far hit), else reads DRAM into the home; then it leaves a copy beside the reader with
    `copy_probability` (seeded, so a replay repeats)."""

    def __init__(self, capacity_bytes: float, spread_fraction: float = 0.0, copy_probability: float = 1.0,
                 seed: int = 0):
        from gpusim.engine.l2 import L2Cache
        self.parts = tuple(L2Cache(capacity_bytes, spread_fraction * capacity_bytes) for _ in range(2))
        self.copy_probability = copy_probability
        self.random = random.Random(seed)

    def access(self, sm: int, key, nbytes: float, write: bool) -> float:
        side = 0 if sm in SM0_SIDE else 1
        dram = 0.0
        for home in (0, 1):
            half, entry = nbytes / 2, (key, home)
            home_part, near_part = self.parts[home], self.parts[side]
            if write or side == home:
                if not home_part.hit(entry):
                    home_part.insert(entry, half, dirty=False)
                    dram += 0.0 if write else half
                continue
            if near_part.hit((entry, "copy")):
                continue
            if not home_part.hit(entry):
                home_part.insert(entry, half, dirty=False)
                dram += half
            if self.copy_probability >= 1.0 or self.random.random() < self.copy_probability:
                near_part.insert((entry, "copy"), half, dirty=False)
        return dram


def replayed_kv_reads_per_head(case: dict, events: list, cache) -> float:
    """K/V DRAM reads over one read of every head's K and V."""
    kv_read = 0.0
    for _, _, sm, kind, key, nbytes in events:
        dram = cache.access(sm, key, nbytes, kind == "write")
        if key[0] in ("K", "V"):
            kv_read += dram
    return kv_read / (2 * case["heads"] * case["seq_len"] * case["head_dim"] * 2)


def rereads_in_order(working_set_mib: float, cache, shared: bool, passes: int = 3,
                     shared_readers: tuple = (0, 67)) -> float:
    """Run 26's pattern: `working_set_mib` of 16 KiB tiles read `passes` times in the same order, by SMs of both sides
    (`shared`, as a wave's CTAs read a head's K/V: `shared_readers`, by default SM 0 and SM 67, which sit beside
    different partitions, run 29) or each tile by one SM, sides alternating; the last pass's DRAM reads over the
    working set."""
    tile_bytes = 16 * 1024
    tiles = int(working_set_mib * MIB // tile_bytes)
    one_per_side = (0, 67)  # SM 0 and SM 67 sit beside different partitions (run 29)
    for _ in range(passes):
        dram = 0.0
        for i in range(tiles):
            for sm in (shared_readers if shared else (one_per_side[i % 2],)):
                dram += cache.access(sm, ("W", i), tile_bytes, write=False)
    return dram / (tiles * tile_bytes)


def partitioned(params: tuple) -> TwoPartitions:
    capacity_mib, spread_fraction, copy_probability = params
    return TwoPartitions(capacity_mib * MIB, spread_fraction, copy_probability)


def partition_label(params: tuple) -> str:
    capacity_mib, spread_fraction, copy_probability = params
    return f"two partitions of {capacity_mib:g} MiB (spread {spread_fraction:g}, copies {copy_probability:g})"


def main() -> None:
    print("run 26's re-read in order, DRAM reads per byte of the last pass (GPU: shared 0.00 / 0.35 / 0.82 / 1.00 at "
          "24 / 28 / 32 / 40 MiB; private 0.02 / 0.20 / 0.69 / 1.00 at 40 / 44 / 48 / 56 MiB)")
    partitions = [tuple(float(x) for x in arg.split(":")) for arg in sys.argv[1:]] or list(PARTITIONS)
    models = [("model's L2", ModelL2)] + [(partition_label(p), lambda p=p: partitioned(p)) for p in partitions]
    for name, make in models:
        shared = " / ".join(f"{rereads_in_order(w, make(), True):.2f}" for w in (24, 28, 32, 40))
        private = " / ".join(f"{rereads_in_order(w, make(), False):.2f}" for w in (40, 44, 48, 56))
        print(f"  {name}: shared {shared}; private {private}", flush=True)
    print("K/V reads per head: the GPU's (runs 43 and 44), then each L2 model's replay of the GPU's schedule")
    print(f"case | GPU | model L2 | LRU {' / '.join(map(str, LRU_CAPACITIES_MIB))} MiB | "
          + " / ".join(partition_label(p) for p in partitions))
    docs = [json.loads(path.read_text()) for path in (SCHEDULES, MORE_SCHEDULES)]
    for timeline, kernel in ((t, k) for doc in docs for t, k in zip(doc["timelines"], doc["kernels"])):
        case = timeline["case"]
        gpu = kv_reads_per_head(case, metric_value(kernel, "dram__bytes_read.sum"))
        events = accesses(case, timeline["records"])
        lru = [replayed_kv_reads_per_head(case, events, OneLru(c * MIB)) for c in LRU_CAPACITIES_MIB]
        parts = [replayed_kv_reads_per_head(case, events, partitioned(p)) for p in partitions]
        flushed = " (after a flush)" if timeline.get("l2_flushed") else ""
        print(f"{case['heads']} heads, N = {case['seq_len']}, d = {case['head_dim']}{flushed} | {gpu:.2f} | "
              f"{replayed_kv_reads_per_head(case, events, ModelL2()):.2f} | {' / '.join(f'{p:.2f}' for p in lru)} | "
              f"{' / '.join(f'{p:.2f}' for p in parts)}", flush=True)


if __name__ == "__main__":
    main()
