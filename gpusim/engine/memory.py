"""The memory hierarchy: HBM and L2 shared by all SMs, and each SM's own path to them.

A read from an SM passes, in order of what can hold it back:
  1. the memory-level-parallelism window of its path (register loads: `sm_max_inflight_bytes`; cp.async and
     TMA have their own where the GPU's spec gives them one): one SM's bandwidth is bounded by window /
     latency (Little's law), so a few SMs cannot saturate HBM;
  2. the path's link from L2 (`sm_load_bandwidth_bytes_per_clk`, `async_copy_*`, `tma_*`);
  3. the L2 (shared bandwidth, LRU capacity);
  4. on a miss, HBM (shared achievable bandwidth, latency).
It completes one access latency after its bytes have drained through the servers it queued on (the
first byte pays the latency, the rest stream behind it), plus what its path adds (cp.async).

A simulation can start from the L2 a benchmark's flush leaves (`start_flushed`): full of another buffer's dirty
lines, which the kernel's first allocations evict to HBM (hw.flushed_l2_*).

Nsight Compute's L2 bytes (lts__t_bytes) count lookups at the L2's tag stage: the SMs' requests, and those that
the partition beside an SM forwards to the line's home in the other one (`hw.l2_far_home_share` of lines live
there; run 56). A read that misses to DRAM is forwarded with that chance; a line SMs on both sides use is looked up
from the far side once more (counted when a second SM first uses it, or at the miss of a request that stands for
several SMs: forwarded_share); every write is forwarded with that chance (ByteCounters.l2_fabric_*).

Folded simulation: one representative request can stand for `weight` CTAs' requests for a few distinct
tiles (`keys`, each counting `multiplicity` real tiles). The L2 server sees weight x bytes, HBM the bytes of
the distinct tiles that miss; the SM's own path sees the bytes of one CTA.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

from sortedcontainers import SortedList

from gpusim.engine.l2 import SHARED, L2Cache
from gpusim.engine.servers import Server
from gpusim.engine.stand_in_hits import NEVER_READ, StandInHits
from gpusim.errors import InputError
from gpusim.hardware import HardwareSpec


#: The L2 a simulation starts from: "empty" (as Nsight Compute's cache control leaves it, and a cold start), or
#: "flushed" (as triton.testing.do_bench leaves it between repeats: full of a zeroed buffer's dirty lines).
L2_STARTS = ("empty", "flushed")


def check_l2_start(value, where: str) -> None:
    """An InputError naming `where` unless `value` is one of L2_STARTS."""
    if value not in L2_STARTS:
        raise InputError(f"{where}: l2_start={value!r}: must be one of {', '.join(L2_STARTS)}")


@dataclass
class ByteCounters:
    hbm_read: float = 0.0
    hbm_write: float = 0.0
    l2_read: float = 0.0
    l2_write: float = 0.0
    l2_dirtied: float = 0.0  # bytes of L2 lines a write made dirty (absent or clean before): distinct data
    l2_hits: float = 0.0
    l2_misses: float = 0.0
    # lookups the L2 partition beside a request's SM forwarded to the line's home in the other one (bytes), as
    # Nsight Compute's lts__t_bytes counts them beside the SMs' own: those of misses to DRAM, and the rest (writes,
    # and the first use from the other side of a line one SM had used)
    l2_fabric_miss: float = 0.0
    l2_fabric_other: float = 0.0


class SmMemoryPort:
    """One path from an SM to L2: an outstanding-request window and its links (load and store
    directions). Each SM has one for its load/store units, with TMA one for the copy engine, and one for
    cp.async where the GPU's spec gives it its own."""

    __slots__ = ("window_bytes", "inflight", "outstanding_bytes", "load_link", "store_link", "hit_extra_cycles",
                 "miss_extra_cycles", "sm_index")

    def __init__(self, name: str, window_bytes: int, link_bytes_per_clk: float, hit_extra_cycles: float = 0.0,
                 miss_extra_cycles: float = 0.0, sm_index: int = SHARED):
        self.window_bytes = window_bytes
        self.sm_index = sm_index  # the SM whose requests it carries (an L2 line's reader)
        # what the path adds to the access latency of a read that hits in L2 / that misses to HBM
        self.hit_extra_cycles, self.miss_extra_cycles = hit_extra_cycles, miss_extra_cycles
        self.inflight: list = []  # heap of (done_cycle, bytes)
        self.outstanding_bytes = 0.0
        self.load_link = Server(f"{name}.load", link_bytes_per_clk)
        self.store_link = Server(f"{name}.store", link_bytes_per_clk)

    @classmethod
    def load_store_units(cls, hw: HardwareSpec, sm_index: int) -> "SmMemoryPort":
        return cls(f"sm{sm_index}.lsu", hw.sm_max_inflight_bytes, hw.sm_load_bandwidth_bytes_per_clk,
                   sm_index=sm_index)

    @classmethod
    def async_copy_path(cls, hw: HardwareSpec, sm_index: int) -> "SmMemoryPort | None":
        """cp.async's own window and link, where the GPU's spec measures them apart from register loads."""
        if hw.async_copy_max_inflight_bytes <= 0:
            return None
        return cls(f"sm{sm_index}.cp_async", hw.async_copy_max_inflight_bytes, hw.async_copy_bandwidth_bytes_per_clk,
                   hw.async_copy_hit_extra_latency_cycles, hw.async_copy_miss_extra_latency_cycles, sm_index)

    @classmethod
    def tma_engine(cls, hw: HardwareSpec, sm_index: int) -> "SmMemoryPort | None":
        if not hw.has_tma:
            return None
        return cls(f"sm{sm_index}.tma", hw.tma_max_inflight_bytes, hw.tma_bandwidth_bytes_per_clk, sm_index=sm_index)

    def admit(self, t: float, nbytes: float) -> float:
        """Earliest time >= t at which `nbytes` more fit in the in-flight window."""
        heap = self.inflight
        while heap and heap[0][0] <= t:
            self.outstanding_bytes -= heapq.heappop(heap)[1]
        while heap and self.outstanding_bytes + nbytes > self.window_bytes:
            done, size = heapq.heappop(heap)
            self.outstanding_bytes -= size
            t = max(t, done)
        return t

    def track(self, done: float, nbytes: float) -> None:
        heapq.heappush(self.inflight, (done, nbytes))
        self.outstanding_bytes += nbytes


class ReadTally:
    """One CTA's DRAM reads and re-reads per tensor: what its own requests missed, whenever it made them (a sampled
    loop's jump reads its skipped iterations' tiles early), so a wave's reads are its CTAs' reads."""

    __slots__ = ("dram", "rereads")

    def __init__(self):
        self.dram: dict[str, float] = {}
        self.rereads: dict[str, float] = {}

    def add(self, tensor: str, dram: float, rereads: float) -> None:
        self.dram[tensor] = self.dram.get(tensor, 0.0) + dram
        if rereads:
            self.rereads[tensor] = self.rereads.get(tensor, 0.0) + rereads


class MemorySystem:
    def __init__(self, hw: HardwareSpec):
        self.hw = hw
        self.hbm = Server("hbm", hw.hbm_bytes_per_clk)
        self.l2 = Server("l2", hw.l2_bandwidth_bytes_per_clk)
        self.cache = L2Cache(hw.l2_capacity_bytes, hw.l2_capacity_spread_fraction * hw.l2_capacity_bytes,
                             hw.l2_private_line_share, pseudo_lru=hw.l2_tree_pseudo_lru)
        self.bytes = ByteCounters()
        self.trace: list | None = None  # when tracing: (name, track, unit, start, duration) of HBM transfers
        self.hbm_read_by_tensor: dict[str, float] = {}
        self.l2_read_by_tensor: dict[str, float] = {}
        self.reread_bytes_by_tensor: dict[str, float] = {}  # DRAM bytes of misses on tiles that had missed
        # before in the launch (evicted)
        self._missed_once: set = set()
        # room that lines entering L2 did not take: private reads at l2_private_line_share (the fill counts them at
        # their bytes), less the room folded writes gave dirtied lines beyond a private line's (counted at the share)
        self._fill_room_saved = 0.0
        # stand-in chunks of shared walks (read_stand_ins): chunk -> (cycle of its latest read, sequence number), and
        # per L2 class those entries in time order; the launch's stand-in DRAM reads so far
        self._walk_reads: dict = {}
        self._walk_times: dict[int, SortedList] = {}
        self._walk_seq = 0
        self._walk_missed_bytes = 0.0
        self._walk_hits = StandInHits()  # hits that chunks booked later may still push out
        self._launch_start = (0.0, 0.0)  # (cycle, L2 fill bytes) at the launch's start
        self.flush_residue_bytes = 0.0  # dirty bytes of a benchmark's flush buffer still in L2
        self.flush_written_back = 0.0  # the bytes of them written back so far
        self._flush_write_backs: list[tuple[float, float]] = []  # (start, end) of each on HBM

    def start_flushed(self) -> None:
        """Start from the L2 that zeroing a buffer larger than it leaves: dirty lines of that buffer, which
        the real L2 keeps outside the modelled tiles' LRU order (they are written back at a measured rate per
        byte allocated, not all by the first capacity's worth of misses)."""
        hw = self.hw
        if not (hw.flushed_l2_dirty_fraction and hw.flushed_l2_writeback_per_byte):
            raise InputError(f"l2_start='flushed' on {hw.name}: its flushed_l2_dirty_fraction and "
                             "flushed_l2_writeback_per_byte must both be positive (else it is the empty start)")
        self.flush_residue_bytes = hw.flushed_l2_dirty_fraction * hw.l2_capacity_bytes

    def evict_flush_residue(self, t: float, allocated_bytes: float) -> float:
        """Write back the flush buffer's dirty lines that `allocated_bytes` of new L2 lines evict; returns
        when they have drained (the lines are free again)."""
        if not self.flush_residue_bytes or not allocated_bytes:
            return t
        evicted = min(self.flush_residue_bytes, allocated_bytes * self.hw.flushed_l2_writeback_per_byte)
        self.flush_residue_bytes -= evicted
        self.flush_written_back += evicted
        done = self._write_back(t, evicted)
        self._flush_write_backs.append((done - evicted / self.hbm.rate, done))
        return done

    def drain_flush_residue(self) -> None:
        """Write back all of the flush residue without queueing it ahead of any request: a long launch's HBM
        time absorbs it where HBM has room, and where HBM bounds the launch its bytes count there."""
        evicted, self.flush_residue_bytes = self.flush_residue_bytes, 0.0
        self.flush_written_back += evicted
        self.bytes.hbm_write += evicted
        self.hbm.busy_cycles += evicted / self.hbm.rate

    def flush_write_back_cycles(self, start: float, end: float) -> float:
        """HBM cycles spent writing back the flush residue within [start, end] (queued ones included): loop
        sampling does not measure a loop's pace over iterations that shared HBM with them."""
        return sum(max(0.0, min(b, end) - max(a, start)) for a, b in self._flush_write_backs)

    def own_hbm_write_bytes(self) -> float:
        """DRAM writes of the simulated kernels' own data (the flush's write-backs are a one-off: loop sampling
        must not take them as part of a loop's steady pace)."""
        return self.bytes.hbm_write - self.flush_written_back

    def start_launch(self, now: float = 0.0) -> None:
        """A launch's first read of a tile is not a re-read, even if an earlier launch read it (FA3's
        backward reads the dO tiles its preprocess launch read)."""
        self._missed_once.clear()
        self._walk_reads.clear()
        self._walk_times.clear()
        self._walk_missed_bytes = 0.0
        self._walk_hits.clear()
        self._launch_start = (now, self._l2_fill_bytes())

    def _l2_fill_bytes(self) -> float:
        """The room that has filled in L2 so far: reads from HBM, those of one SM (a CTA's Q tiles) at a private line's
        room, and lines dirtied by writes at the room they took. A sampled walk's stand-in chunks count other lines by
        it: counting a private read at its bytes, cuDNN's forward at 49k tokens, d = 128, one head read K/V 2.61 times
        folded where exact mode reads 2.02 (2.13 with it)."""
        return self.bytes.hbm_read - self._fill_room_saved + self.bytes.l2_dirtied * self.cache.private_share

    def _hbm(self, t: float, nbytes: float, what: str) -> float:
        """Queue a transfer on HBM; returns when it has drained."""
        done = self.hbm.reserve(t, nbytes)
        if self.trace is not None:
            duration = nbytes / self.hbm.rate
            self.trace.append((what, -1, "hbm", done - duration, duration))  # track -1: the shared HBM
        return done

    def _write_back(self, t: float, nbytes: float) -> float:
        """Write evicted dirty bytes to HBM; returns when they have drained (the line is free again)."""
        if not nbytes:
            return t
        self.bytes.hbm_write += nbytes
        return self._hbm(t, nbytes, "write-back")

    def fabric_bytes(self) -> tuple[float, float]:
        """(l2_fabric_miss, l2_fabric_other) so far: a caller's before and after of one access."""
        return self.bytes.l2_fabric_miss, self.bytes.l2_fabric_other

    def note_private_fill(self, nbytes: float, room: float) -> None:
        """`nbytes` of reads counted in hbm_read outside `read` (a sampled loop's skipped iterations) took `room` of
        L2 room."""
        self._fill_room_saved += nbytes - room

    def read(self, port: SmMemoryPort, t: float, keys: tuple, nbytes: int, weight: float = 1.0,
             multiplicity: float = 1.0, key_bytes: tuple | None = None, tally: ReadTally | None = None,
             ctas: int = 1) -> float:
        """Read a tile into an SM; returns its completion cycle: the time its bytes have drained through
        every server on the way (SM link, L2, HBM on a miss) plus the access latency. `keys` are the
        distinct tiles the request stands for (the first is the issuing CTA's own), each counting
        `multiplicity` real tiles of `nbytes`, or of `key_bytes[i]` where they differ. Its DRAM reads also
        go to the requesting CTA's `tally`. `ctas`: the real CTAs the request stands for (folded mode); each key after
        the first is another CTA's, read from an SM of its own (_key_reader)."""
        t = port.admit(t, nbytes)
        reader = _reader(port, keys, ctas)
        l2_bytes = nbytes * weight if key_bytes is None else sum(key_bytes) * weight / len(keys)
        self.bytes.l2_read += l2_bytes
        self.l2_read_by_tensor[keys[0][0]] = self.l2_read_by_tensor.get(keys[0][0], 0.0) + l2_bytes
        drained = max(self.l2.reserve(t, l2_bytes), port.load_link.reserve(t, nbytes))
        shared_before = self.cache.shared_bytes
        fabric_per_miss = forwarded_share(self.hw.l2_far_home_share,
                                          ctas / (len(keys) * multiplicity) if reader == SHARED else 1.0)
        fabric_missed = 0.0
        missed = []
        own_hit = True
        own_arrival = 0.0
        missed_bytes = 0.0
        for i, key in enumerate(keys):
            key_reader = _key_reader(reader, i)
            arrival = self.cache.arrival(key, key_reader)
            if arrival is None:
                size = (nbytes if key_bytes is None else key_bytes[i]) * multiplicity
                missed.append((key, size))
                fabric_missed += size * fabric_per_miss
                own_hit = own_hit and i > 0
                missed_bytes += size
                written_back = self.cache.insert(key, size, dirty=False, reader=key_reader)
                drained = max(drained, self._write_back(t, written_back))
                if reader != SHARED:
                    self._fill_room_saved += size * (1.0 - self.cache.private_share)
            elif i == 0:
                own_arrival = arrival
        self._count_fabric(fabric_missed, shared_before)
        misses = len(missed) * multiplicity
        self.bytes.l2_misses += misses
        self.bytes.l2_hits += weight - misses
        if missed:
            dram = missed_bytes
            drained = max(drained, self.evict_flush_residue(t, dram))
            self.bytes.hbm_read += dram
            rereads = 0.0
            for key, size in missed:
                if key in self._missed_once:
                    rereads += size
                else:
                    self._missed_once.add(key)
            self.count_tensor_reads(keys[0][0], dram, rereads, tally)
            hbm_done = self._hbm(t, dram, f"read {keys[0][0]}")
            if not own_hit:
                drained = max(drained, hbm_done)
            # A missed tile is in L2 one HBM latency after its bytes drained, whichever path asked for it; the
            # path's own extra (cp.async) delays only its requester.
            arrival = max(drained, hbm_done) + self.hw.hbm_latency_cycles
            for key, _size in missed:
                self.cache.set_arrival(key, arrival)
        if own_hit:
            done = max(drained + self.hw.l2_hit_latency_cycles, own_arrival) + port.hit_extra_cycles
        else:  # the requester's own tile missed, so `arrival` is its
            done = arrival + port.miss_extra_cycles
        port.track(done, nbytes)
        return done

    def _count_fabric(self, forwarded_miss_bytes: float, shared_before: float) -> None:
        """The lookups a read forwarded to the other L2 partition (see the module's docstring): those of its misses,
        and the lines it made shared, with the far-home chance."""
        self.bytes.l2_fabric_miss += forwarded_miss_bytes
        self.bytes.l2_fabric_other += self.hw.l2_far_home_share * (self.cache.shared_bytes - shared_before)

    def write_frame(self, port: SmMemoryPort, t: float, nbytes: int, weight: float, new_room: float) -> float:
        """Post register spills (ops.SpillStore): `nbytes` per CTA, for `weight` CTAs, to stack frames the L2 holds for
        good (each is rewritten every iteration, so it never ages out); `new_room` is the L2 room frames that were not
        resident before take, reserved from every class (L2Cache.reserve). Returns when the L2 has absorbed them."""
        l2_bytes = nbytes * weight
        self.bytes.l2_write += l2_bytes
        self.bytes.l2_fabric_other += self.hw.l2_far_home_share * l2_bytes
        done = max(self.l2.reserve(t, l2_bytes), port.store_link.reserve(t, nbytes))
        if new_room > 0:
            done = max(done, self._write_back(t, self.cache.reserve(new_room)))
        return max(done, t + self.hw.l2_hit_latency_cycles)

    def count_tensor_reads(self, tensor: str, dram: float, rereads: float, tally: ReadTally | None = None) -> None:
        """Add DRAM reads of `tensor` (`rereads` of them re-read tiles that had missed before) to the per-tensor
        totals and to the requesting CTA's `tally`."""
        self.hbm_read_by_tensor[tensor] = self.hbm_read_by_tensor.get(tensor, 0.0) + dram
        if rereads:
            self.reread_bytes_by_tensor[tensor] = self.reread_bytes_by_tensor.get(tensor, 0.0) + rereads
        if tally is not None:
            tally.add(tensor, dram, rereads)

    def read_stand_ins(self, chunks: list[tuple], now: float, tally: ReadTally | None = None) -> float:
        """Reads of a sampled loop's skipped iterations of a walk that concurrent CTAs share, as `chunks` ((tensor,
        key, bytes, class, cycle), in order of `cycle`: when the real walk reads that part). The chunks of a whole
        jump arrive at once, so L2 residency cannot tell whether a CTA walking the same data a little later would
        still find a chunk; instead each chunk's LRU stack distance is estimated from the walk's timeline: it hits
        when it and the bytes touched in its class between its last read and this one fit the class. Those are the
        other stand-in chunks of the class whose latest read falls strictly in between, counted at this chunk's size
        (a walk's chunks are alike; a walk that re-reads its data in order touches all of it between two reads of
        one chunk, though every chunk may hit), and the lines other reads brought in over that time (DRAM reads of
        other data and of skipped iterations, and dirtied lines, at the launch's mean rate so far). Only a chunk's
        latest read is kept, and a jump books reads up to its whole span ahead: a chunk touched in the interval and
        booked again later drops out of it (too many hits), and where the booked read is the later one, the interval
        runs from the new read to it and a miss goes to the CTA that reads second in processing order. A hit stays
        open to chunks that CTAs jumping later book inside its interval (StandInHits: the new head's K/V that a folded
        block straddling two heads walks) and becomes a miss, the deciding CTA's re-read, once they fill its class's
        room. Chunks read
        at the same cycle as either end are left out (a jump reads the K and V chunk of one place at one cycle):
        counting them, cuDNN at 98k, d = 64 reads K/V 3.24 times per head at one head where exact mode reads 2.94
        and the GPU 1.99 (validation/README.md, twenty-second session). A miss is read from HBM and counted as a
        real read of its tensor (a re-read when it had missed before); every chunk is put in L2, whose other lines
        it ages as the real tiles would. No transfer is queued and the loop's jump does not wait for them (it lasts
        the measured iterations' pace, or their share of HBM); HBM's busy time grows by the bytes read (their write-
        backs count as bytes only, as an aged cache's do). The DRAM reads are counted when the jump is, not when the
        walk reaches them, and go to the jumping CTA's `tally`. Returns the DRAM bytes read."""
        start_cycle, start_fill = self._launch_start
        other_fill = self._l2_fill_bytes() - start_fill - self._walk_missed_bytes
        other_per_cycle = max(0.0, other_fill) / max(now - start_cycle, 1.0) / self.cache.classes
        written_back = 0.0
        missed = self._push_out_kept_hits(chunks, now)
        dram: dict[str, float] = {}
        rereads: dict[str, float] = {}
        for tensor, key, nbytes, cls, cycle in chunks:
            times = self._walk_times.setdefault(cls, SortedList())
            entry = self._walk_reads.get(key)
            hit = False
            if entry is not None:
                low, high = sorted((entry[0], cycle))
                between = times.bisect_left((high, -1)) - times.bisect_right((low, math.inf))
                room = self.cache.class_bytes(cls) - (between + 1) * nbytes - (high - low) * other_per_cycle
                hit = room >= 0
                if hit:
                    self._walk_hits.keep(cls, low, high, room, (tensor, nbytes, tally))
                times.remove(entry)
            self._walk_seq += 1
            entry = (cycle if entry is None else max(entry[0], cycle), self._walk_seq)
            self._walk_reads[key] = entry
            times.add(entry)
            written_back += self.cache.insert(key, nbytes, dirty=False, cls=cls)
            if hit:
                continue
            dram[tensor] = dram.get(tensor, 0.0) + nbytes
            if key in self._missed_once:
                rereads[tensor] = rereads.get(tensor, 0.0) + nbytes
            else:
                self._missed_once.add(key)
        for tensor, nbytes in dram.items():
            self.count_tensor_reads(tensor, nbytes, rereads.get(tensor, 0.0), tally)
        missed += sum(dram.values())
        self.bytes.l2_fabric_miss += forwarded_share(self.hw.l2_far_home_share, math.inf) * missed  # many readers
        self._walk_missed_bytes += missed
        self.bytes.hbm_read += missed
        self.bytes.hbm_write += written_back
        self.hbm.busy_cycles += missed / self.hbm.rate
        return missed

    def _push_out_kept_hits(self, chunks: list[tuple], now: float) -> float:
        """Turn into misses the earlier stand-in hits that `chunks` (read_stand_ins') push out of the L2 (StandInHits):
        each is read from HBM, a re-read by the CTA that made it. Returns their DRAM bytes."""
        by_class: dict[int, tuple[list, list, list]] = {}
        for _tensor, key, nbytes, cls, cycle in chunks:
            entry = self._walk_reads.get(key)
            cycles, previous, sizes = by_class.setdefault(cls, ([], [], []))
            cycles.append(cycle)
            previous.append(NEVER_READ if entry is None else entry[0])
            sizes.append(nbytes)
        missed = 0.0
        for cls, (cycles, previous, sizes) in by_class.items():
            for tensor, nbytes, tally in self._walk_hits.book(now, cls, cycles, previous, sizes):
                self.count_tensor_reads(tensor, nbytes, nbytes, tally)
                missed += nbytes
        return missed

    def write(self, port: SmMemoryPort, t: float, keys: tuple, nbytes: int, weight: float = 1.0,
              multiplicity: float = 1.0, accumulate: bool = False, key_bytes: tuple | None = None,
              ctas: int = 1) -> float:
        """Post a tile write (write-back L2); returns when L2 has absorbed it. `accumulate` is an atomic
        add performed at L2: a read-modify-write there, reading HBM only if the line is absent."""
        l2_bytes = nbytes * weight if key_bytes is None else sum(key_bytes) * weight / len(keys)
        reader = _reader(port, keys, ctas)
        self.bytes.l2_write += l2_bytes
        self.bytes.l2_fabric_other += self.hw.l2_far_home_share * l2_bytes
        done = max(self.l2.reserve(t, l2_bytes * (2 if accumulate else 1)), port.store_link.reserve(t, nbytes))
        for i, key in enumerate(keys):
            key_reader = _key_reader(reader, i)
            tile_bytes = (nbytes if key_bytes is None else key_bytes[i]) * multiplicity
            if not self.cache.contains(key):
                done = max(done, self.evict_flush_residue(t, tile_bytes))
            if not self.cache.is_dirty(key):
                self.bytes.l2_dirtied += tile_bytes
                if reader == SHARED:  # a shared line's room, where the fill counts a private one's
                    self._fill_room_saved -= tile_bytes * (1.0 - self.cache.private_share)
            if accumulate:
                if not self.cache.hit(key, key_reader):
                    self.bytes.hbm_read += tile_bytes
                    done = max(done, t + self.hw.hbm_latency_cycles, self._hbm(t, tile_bytes, f"read {key[0]}"))
            done = max(done, self._write_back(t, self.cache.insert(key, tile_bytes, dirty=True, reader=key_reader)))
        if accumulate:
            self.bytes.l2_read += l2_bytes
        return max(done, t + self.hw.l2_hit_latency_cycles)


def forwarded_share(far_home_share: float, readers: float) -> float:
    """The share of a missed line's bytes looked up in both L2 partitions when `readers` SMs (on random sides) read
    it: once one of them is away from its home. One reader: the far-home share; many: all of it."""
    return 1.0 - (1.0 - far_home_share) ** max(1.0, readers) if far_home_share else 0.0


def _reader(port: SmMemoryPort, keys: tuple, ctas: int) -> int:
    """The L2 reader of a request: its SM, or SHARED where a folded request stands for more CTAs (on other SMs)
    than the distinct tiles it names, so that several of them use one tile."""
    return port.sm_index if ctas <= len(keys) else SHARED


#: Apart from SHARED, the L2 reader of the i-th key of a folded request is its SM's index + i x this: the keys after
#: the first are other CTAs' tiles, each CTA on an SM of its own, so a tile that one CTA of a block reads and another
#: reads later is shared, as on two SMs of the GPU. (Kept on one reader, the tiles a causal block's CTAs walk one
#: after the other stayed private: FA2 at 32k tokens, 16 heads read K/V 1.21 times per head folded, 1.30 now, exact
#: mode 1.58.)
KEY_READER_STRIDE = 1 << 16


def _key_reader(reader: int, i: int) -> int:
    """The L2 reader of the i-th key of a request whose reader is `reader` (see KEY_READER_STRIDE)."""
    return reader if reader == SHARED else reader + i * KEY_READER_STRIDE
