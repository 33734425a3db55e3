"""Steady-state extrapolation of long, uniform launches.

A launch whose CTAs all do the same work runs in identical waves once the pipeline has filled: each wave
moves the same bytes, does the same work and takes the same time. Folded mode therefore simulates the
first SIMULATED_WAVES waves (more where a head spans several waves and its K/V fits the L2: window_waves) and
continues their pattern: the steady period is the time between the mean
finishing cycles of the two waves before the last (the last simulated wave drains with slots left empty behind
it, which a steady wave never does), never shorter than the busy time of the busiest unit per wave, which no
schedule can beat; each skipped CTA finishes a whole number of periods after the CTA at its position in the
steady wave, so a partial last wave costs the share of a wave its CTAs need.
Work counters (L2 bytes, FLOPs) scale with the CTAs run instead, from the average over all simulated
CTAs: CTAs overlap wave boundaries, so one wave's count depends on where the boundary falls in the data.
HBM reads scale per tensor: a tensor the CTAs share (K/V of a head) costs its DRAM bytes once per distinct
`shared_by` key while L2 holds it, and per CTA when over STREAMED_REREAD_SHARE of the window's last wave's
DRAM reads of it are re-reads after eviction (re-reads confined to the launch's start while its CTAs fall out
of lockstep, or a few between waves of representatives that run in step, are not repeated, except those after a
head boundary where a head spans a wave or more, which recur at every later boundary; such a head's K/V that the L2
keeps between its boundaries is not streamed however much the window re-read: kept_between_boundaries); a private
one (Q tiles) once per CTA. HBM writes come from ageing the L2 with stand-in
traffic of the extrapolated volume (write-backs depend on the cache filling up, not on the work alone): the
lines the skipped waves' writes would dirty, not their write traffic (repeated atomic adds hit one line),
ending with the mix of clean and dirty tiles the window's last wave left, as the launch's last wave would.
Exact mode never extrapolates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from gpusim.engine.memory import ReadTally

#: Waves simulated before extrapolating: the two before the last give the period, the last the counters per wave
#: (its drain does not change the work). (A simulation setting; at least 3.)
SIMULATED_WAVES = 3
assert SIMULATED_WAVES >= 3, "the period needs two waves with a wave behind them"
#: Share of a shared tensor's DRAM reads in the last simulated wave that must be re-reads for the extrapolation
#: to take it as streamed (its DRAM traffic grows with the CTAs) rather than read once per distinct tile. (A
#: simulation setting: the streamed K/V of FA2 and FA3 at 16k-131k tokens re-read 20-100% in that wave; a few
#: percent are tiles evicted between two waves of representatives that run in step, as FA2 at 8 sequences and
#: 4k tokens re-reads 4% where exact mode re-reads nothing after its first waves.)
STREAMED_REREAD_SHARE = 0.1
#: The widest band of start times, in CTA durations, that the CTAs running together can drift into (Drift).
MAX_BAND_CTAS = 1.0
#: A shared stream whose walk the L2's gradual edge evicts below this share (Drift.outgrows_l2) counts as kept between
#: head boundaries (kept_between_boundaries); at or above it, as re-read on every walk. (A simulation setting: the
#: median of the edge, where a walk is as likely evicted as kept.)
KEPT_BELOW_EVICTED_SHARE = 0.5
#: Only launches with at least this many waves are extrapolated.
MIN_WAVES_TO_EXTRAPOLATE = 6


def should_extrapolate(reps: int, slots: int, uniform: bool, exact: bool, waves: int = SIMULATED_WAVES) -> bool:
    """Whether a launch of `reps` representatives over `slots` is extrapolated after `waves` simulated waves
    (window_waves): a uniform one of MIN_WAVES_TO_EXTRAPOLATE waves or more, with a wave left after its window."""
    return uniform and not exact and reps >= max(MIN_WAVES_TO_EXTRAPOLATE, waves + 1) * slots


def first_boundary(grid, shared_by) -> int | None:
    """The grid position of the first CTA whose `shared_by` keys differ from the first CTA's (the next head's), or
    None when every CTA shares the same keys."""
    if not grid:
        return None
    first = shared_by(grid[0])
    return next((i for i, cta in enumerate(grid) if shared_by(cta) != first), None)


def window_waves(grid, shared_by, wave_ctas: int, tensor_bytes: dict[str, float] | None = None,
                 l2_bytes: float = math.inf) -> int:
    """Waves a launch simulates before extrapolating: SIMULATED_WAVES, or more where a head (the CTAs that share K/V)
    spans a wave or more and its shared data (`tensor_bytes` over each shared tensor's distinct keys) fits the L2's
    `l2_bytes`. The wave after one that straddles two heads re-reads part of the new head's K/V, which the two heads'
    walks pushed out of the L2 (cuDNN at 65k tokens, d = 64: 3.6 MB a boundary simulated wave by wave, 9.7 on the H200;
    thirty-second session); the window then runs through the first straddling wave, the wave after it and one more
    (a steady last wave), so that it measures one boundary's re-reads, which extrapolated_reads counts at every later
    boundary. K/V that outgrows the L2 is streamed: the later waves' walks of it count the straddles
    (Drift.walks_by_wave) without a longer window, which would double the cost of FA2 at 131k tokens, 32 heads."""
    boundary = first_boundary(grid, shared_by)
    if boundary is None or boundary < wave_ctas:
        return SIMULATED_WAVES
    straddling = boundary // wave_ctas + 1  # the 1-based wave that holds the first CTA of the second head
    if straddling + 1 <= SIMULATED_WAVES:  # the usual window already holds the wave after it
        return SIMULATED_WAVES
    if tensor_bytes is not None:  # (a pass over the whole grid: only where the window would grow)
        keys = _distinct_keys(grid, shared_by)
        head_bytes = sum(tensor_bytes[t] / len(found) for t, found in keys.items() if t in tensor_bytes)
        if head_bytes > l2_bytes:
            return SIMULATED_WAVES
    return straddling + 2


class WaveMeter:
    """Counts finished CTAs and snapshots the counters when the last two simulated waves complete, and sums the
    DRAM reads and re-reads per tensor of the CTAs of the last simulated wave (the last `slots` dispatched): only
    re-reads there show a steady pattern (the launch's start can re-read a few tiles once, while its CTAs fall out
    of lockstep). A wave's reads are its own CTAs' (memory.ReadTally), not those made while it finished: a sampled
    loop reads its skipped tiles when it jumps, early in its CTA, and CTAs that differ in pace overlap waves."""

    def __init__(self, slots: int, read_counters, waves: int = SIMULATED_WAVES):
        if waves < SIMULATED_WAVES:
            raise ValueError(f"WaveMeter: {waves} waves; the period needs at least {SIMULATED_WAVES}")
        self.slots = slots
        self.waves = waves  # simulated waves (window_waves)
        self.read_counters = read_counters  # () -> dict of additive counters
        self.started = 0
        self.finished = 0
        self.finish_cycles: list[float] = []  # every simulated CTA's, in finishing order
        self.snapshots: dict[int, dict] = {}  # the additive counters when that many CTAs had finished
        self._last_wave_tallies: list[ReadTally] = []  # each CTA's of the last simulated wave
        self._starts: dict[int, list[float]] = {}  # per SM: its CTAs' start cycles, in order
        self._durations: list[float] = []  # every finished CTA's

    def cta_started(self, tally: ReadTally, sm_index: int = 0, cycle: float = 0.0) -> None:
        """A simulated CTA was dispatched to SM `sm_index` at `cycle`; `tally` will hold its DRAM reads."""
        self.started += 1
        self._starts.setdefault(sm_index, []).append(cycle)
        if self.started > self.slots * (self.waves - 1):
            self._last_wave_tallies.append(tally)

    def cta_finished(self, cycle: float, started: float | None = None) -> None:
        self.finished += 1
        self.finish_cycles.append(cycle)
        if started is not None:
            self._durations.append(cycle - started)
        if self.finished in (self.slots * (self.waves - 1), self.slots * self.waves):
            self.snapshots[self.finished] = self.read_counters()

    def partner_offset(self, ctas_per_sm: int) -> float:
        """How far apart, in CTA durations, the CTAs that share an SM started in the last simulated wave: the mean
        over SMs of each start's distance to the one before it on its SM, folded to [0, 1/2] (0: partners in
        step; 1/2: each starts halfway through its partner, the most two can be apart). 0 with one CTA per SM."""
        if ctas_per_sm < 2 or not self._durations:
            return 0.0
        duration = sorted(self._durations)[len(self._durations) // 2]
        if duration <= 0:
            return 0.0
        offsets = []
        for starts in self._starts.values():
            for before, after in zip(starts[-ctas_per_sm - 1:], starts[-ctas_per_sm:]):
                gap = (after - before) / duration % 1.0
                offsets.append(min(gap, 1.0 - gap))
        return sum(offsets) / len(offsets) if offsets else 0.0

    def partner_offset_per_wave(self, ctas_per_sm: int) -> float:
        """How fast the CTAs that share an SM moved apart, in CTA durations per wave: they start in step in the first
        simulated wave and partner_offset apart in the last."""
        offset = self.partner_offset(ctas_per_sm)
        if offset <= 0.0:
            return 0.0
        most = 1.0 / ctas_per_sm  # the rate Drift.partner_offset's tanh takes to this offset at the last wave
        return most * math.atanh(min(offset / most, 0.999)) / (self.waves - 1)

    @property
    def last_wave(self) -> ReadTally:
        """The DRAM reads and re-reads per tensor of the last simulated wave's CTAs."""
        if not self._last_wave_tallies:
            raise RuntimeError("WaveMeter: no CTA of the last simulated wave was dispatched")
        total = ReadTally()
        for tally in self._last_wave_tallies:
            for tensor, nbytes in tally.dram.items():
                total.add(tensor, nbytes, tally.rereads.get(tensor, 0.0))
        return total

    def period(self) -> tuple[float, dict]:
        """(cycles, counter deltas) of a steady wave: the counters of the last simulated wave; the time between
        the mean finishing cycles of the two waves before it. The last wave's later CTAs finish with slots
        left empty behind them (no wave follows in the simulation) and run faster than a steady wave's."""
        a = self.snapshots[self.slots * (self.waves - 1)]
        b = self.snapshots[self.slots * self.waves]
        return self._mean_finish(self.waves - 2) - self._mean_finish(self.waves - 3), \
            {k: b[k] - a[k] for k in b}

    def streaming(self) -> set:
        """The tensors the last simulated wave streamed: over STREAMED_REREAD_SHARE of what its CTAs read of them
        from DRAM was re-reads of tiles evicted since their first read."""
        last = self.last_wave
        return {t for t, n in last.rereads.items() if n > STREAMED_REREAD_SHARE * last.dram.get(t, 0.0)}

    def _mean_finish(self, wave: int) -> float:
        cycles = self.finish_cycles[wave * self.slots:(wave + 1) * self.slots]
        return sum(cycles) / len(cycles)

    def last_finish(self, period_cycles: float, skipped_reps: int) -> float:
        """When the last of `skipped_reps` more CTAs finishes: the steady pattern continued, so the CTA at
        position i of a later wave finishes `period_cycles` per wave after position i of the steady wave
        before the last simulated one (whose CTAs all had a wave behind them). A partial last wave thus
        costs the share of a wave its CTAs need, as CTAs refill freed slots one by one."""
        if skipped_reps <= 0:
            raise ValueError("last_finish: no CTA was skipped")
        waves_on, position = divmod(skipped_reps - 1, self.slots)
        steady = self.waves - 2
        waves_after_steady = waves_on + self.waves - steady
        return self.finish_cycles[steady * self.slots + position] + waves_after_steady * period_cycles


def busiest_unit_cycles(totals: dict, sm_count: int, waves: float) -> float:
    """Busy cycles per wave of the busiest SM unit, from the busy totals (`sm.*`, summed over `sm_count`
    SMs) of `waves` finished waves. (HBM is left out: early waves also drain the previous launch's dirty
    lines; the extrapolation has its own HBM-bytes floor.)"""
    return max(v / sm_count for k, v in totals.items() if k.startswith("sm.")) / waves


@dataclass(frozen=True)
class Drift:
    """CTAs that run the same schedule drift out of step: each CTA's duration varies a little (`jitter`, one
    value for the GPU, fitted to DRAM reads, though runs 31 and 32 in validation/README.md find the drift a property
    of the kernel), so after k waves the start times of the CTAs running together spread like a random walk's, over
    a band of 2 jitter sqrt(k) of a CTA's duration, and never over more than one: each slot's CTA starts when the
    one before it ends, so the CTAs running at any moment all started within the last CTA's duration
    (MAX_BAND_CTAS; the band is the whole range of their starts, not a standard deviation). While the band's share
    of the tiles a CTA streams fits the L2, one DRAM pass per wave serves it; a wider band is served by one pass per
    L2-sized slice of it (a band of one CTA: stream / L2 passes, as cuDNN's d = 128 forward makes at 98k and 128k).
    The simulated waves may already have needed more than one pass (`window_passes`): CTAs that share an SM fall
    out of step by part of a CTA's duration, a band of their own. Drift then adds passes only once its band
    outgrows that one: a later wave makes the larger of the two counts, not their product.
    The CTAs that share an SM also move apart steadily, as the simulated waves measure (`partner_offset_per_wave`):
    on the GPU, a Triton forward of FA2's shape at d = 64 compiled to mma.sync (as SDPA's FA2 issues its MMAs) has its
    partners settle half a CTA apart within about ten waves, where compiled to wgmma they stay in step
    (validation/README.md run 55; with 64-key tiles, as at d = 128, its mma.sync partners stop at 0.1-0.2 of a CTA); a
    later wave makes the larger of their passes (partner_passes) and the random walk's."""

    jitter: float
    stream_bytes_per_cta: float  # bytes of the shared, streamed tensors one CTA reads through L2
    l2_bytes: float
    window_passes: float = 1.0  # DRAM passes over them per simulated wave (the last one), at least 1
    ctas_per_sm: int = 1
    partner_offset_per_wave: float = 0.0  # how fast co-resident CTAs move apart, in CTA durations per wave
    l2_spread_bytes: float = 0.0  # the L2's capacity spread (L2Cache.spread_bytes)
    #: L2 room that other data takes while the CTAs running together walk the stream once: their private reads (Q
    #: tiles) and the lines they dirty (O tiles), which push a tile as deep into the L2 as the stream's own bytes do
    other_bytes_per_walk: float = 0.0

    def passes(self, wave: int) -> float:
        """DRAM passes over the shared streamed data during wave `wave` (1-based) of the launch, in simulated
        waves' passes (1: as many as a simulated wave made): the larger of the random walk's and the partners'."""
        spread = min(MAX_BAND_CTAS, 2.0 * self.jitter * math.sqrt(wave))
        band = spread * self.stream_bytes_per_cta / self.l2_bytes
        return max(1.0, max(band, self.partner_passes(wave)) / max(1.0, self.window_passes))

    def _missed_at_depth(self, depth_bytes: float) -> float:
        """The share of tiles re-read `depth_bytes` of distinct data after their last read that the L2 has evicted:
        its gradual edge, a normal around its capacity (a step without a spread)."""
        if self.l2_spread_bytes > 0:
            return NormalDist(self.l2_bytes, self.l2_spread_bytes).cdf(depth_bytes)
        return 1.0 if depth_bytes > self.l2_bytes else 0.0

    def _depth(self, stream_walks: float, ctas: float) -> float:
        """The L2 depth, in bytes, a tile reaches after `stream_walks` of the stream passed through the L2 while the
        CTAs ran for `ctas` CTA durations, each of which brings other_bytes_per_walk."""
        return stream_walks * self.stream_bytes_per_cta + ctas * self.other_bytes_per_walk

    def outgrows_l2(self) -> float:
        """The share of a stream that CTAs walking it in step re-read from DRAM on each walk (1 for K/V well over the
        L2, 0 well under it): a tile is re-read after a whole walk of the stream and the other data read or dirtied
        meanwhile (two heads of 131k tokens, d = 64: 33.5 MB of K/V and 5.5 MB of Q and O room per walk)."""
        return self._missed_at_depth(self._depth(1.0, 1.0))

    def walks_by_wave(self, grid, shared_by, tensor: str, slots: int) -> list[float]:
        """Per wave of `slots` CTAs, the walks of `tensor`'s stream its DRAM reads stand for, in waves' walks (1: one
        whole stream). A wave that straddles two heads walks both heads' K/V, each CTA its own head's whole stream,
        and the partial last wave's CTAs walk whole streams too: where the stream outgrows the L2 each such walk is a
        DRAM pass (the H200 read 4 / 9 passes of K/V at one / two heads of 131k tokens, d = 64, in 3.9 / 7.8 waves:
        validation/README.md, thirty-first session); where the L2 keeps it the reads follow the wave's CTAs."""
        outgrows = self.outgrows_l2()
        walks = []
        for start in range(0, len(grid), slots):
            ctas = grid[start:start + slots]
            share = len(ctas) / slots
            streams = len({shared_by(cta)[tensor] for cta in ctas})
            walks.append(share + (1.0 - share) * outgrows + (streams - 1) * outgrows)
        return walks

    def partner_offset(self, wave: int) -> float:
        """How far apart the CTAs that share an SM start in wave `wave`, in CTA durations: they move apart at the
        rate the simulated waves showed, slowing as each nears 1 / ctas_per_sm of a CTA after the one before it
        (o_max tanh(rate (wave - 1) / o_max): a launch simulated wave by wave, validation/model_partner_offsets.py,
        has its partners 0.25 / 0.38 / 0.44 / 0.47 of a CTA apart at waves 16 / 31 / 46 / 61 where this gives 0.23 /
        0.38 / 0.45 / 0.48: FA2 at 131k tokens, d = 64, 16 heads; thirty-first session)."""
        if self.ctas_per_sm < 2:
            return 0.0
        most = 1.0 / self.ctas_per_sm
        return most * math.tanh(self.partner_offset_per_wave * (wave - 1) / most)

    def partner_passes(self, wave: int) -> float:
        """DRAM passes in wave `wave` when the CTAs that share an SM walk the stream o CTAs apart (partner_offset):
        the CTAs run as ctas_per_sm groups, each o of the stream behind the one before, and a tile one group read is
        read by the next after 2 o of the stream has passed through L2 (the stream the first read ahead and the one
        the second caught up on) with o CTA durations' other data, so each later group re-reads the share of the tiles
        whose L2 depth that exceeds (the L2's gradual edge: a normal around its capacity). Validation/README.md run
        55: partners half a CTA apart (the mma.sync build at d = 64, 128k tokens) re-read K/V about twice per wave."""
        offset = self.partner_offset(wave)
        if offset <= 0.0:
            return 1.0
        missed = self._missed_at_depth(self._depth(2.0 * offset, offset))
        return 1.0 + (self.ctas_per_sm - 1) * missed


def extrapolated_reads(window_reads: dict, heads: "GridHeads", window_ctas: int, streaming: set = frozenset(),
                       slots: int | None = None, drift: Drift | None = None,
                       window_rereads: dict | None = None, steady_rereads: dict | None = None) -> float:
    """HBM read bytes the CTAs after the first `window_ctas` of `heads`' grid add: per tensor, the window's bytes times
    the ratio of distinct data in the whole grid to the window: distinct `shared_by` keys for a shared tensor
    that L2 kept (read once per key: the window's first reads, not its `window_rereads` bytes, a transient of
    its start or of its in-step waves), CTAs for a private one or for a `streaming` tensor, whose tiles the
    window's steady waves had to re-read from DRAM after eviction (its traffic grows with the CTAs, not the
    data).
    A shared streaming tensor's later waves take `drift`'s passes over the walks each makes (Drift.walks_by_wave:
    two where a wave straddles two heads), in the window's walks' passes; `slots` is the CTAs per wave.
    A kept tensor's `steady_rereads` (bytes a wave, kept_between_boundaries: the window's last wave, where neither it
    nor the wave before it holds a boundary) recur in every later wave, and only the window's re-reads beyond them
    (its first wave re-reads nothing) at every later boundary."""
    window_rereads = window_rereads or {}
    steady_rereads = steady_rereads or {}
    grid, shared_by = heads.grid, heads.shared_by
    keys_window = _distinct_keys(grid[:window_ctas], shared_by)
    keys_all = heads.keys
    extra = 0.0
    for tensor, nbytes in window_reads.items():
        if tensor in keys_all and tensor not in streaming:
            ratio = len(keys_all[tensor]) / max(1, len(keys_window.get(tensor, ())))
            rereads = window_rereads.get(tensor, 0.0)
            nbytes -= rereads
            steady = steady_rereads.get(tensor, 0.0) if slots else 0.0
            if steady:
                waves_in_window = -(-window_ctas // slots)
                extra += steady * (len(grid) - window_ctas) / slots
                rereads = max(0.0, rereads - steady * (waves_in_window - 1))
            extra += rereads * _later_boundaries_per_window_boundary(heads, tensor, window_ctas, slots)
        elif tensor in keys_all and drift is not None and slots:
            walks = drift.walks_by_wave(grid, shared_by, tensor, slots)
            window_waves = -(-window_ctas // slots)
            later = sum(walk * drift.passes(wave + 1) for wave, walk in enumerate(walks) if wave >= window_waves)
            ratio = 1.0 + later / sum(walks[:window_waves])
        else:
            ratio = len(grid) / window_ctas
        extra += nbytes * (ratio - 1.0)
    return extra


def kept_between_boundaries(heads: "GridHeads", tensor: str, slots: int, drift: Drift) -> bool:
    """Whether the L2 keeps `tensor`'s stream (one head's K/V) between its head boundaries, so that what the window's
    waves re-read of it comes from the boundaries, not from every walk: its heads each span a wave of `slots` CTAs or
    more and a walk of it, with the other data, fits the L2 (drift.outgrows_l2 under KEPT_BELOW_EVICTED_SHARE). Its
    later reads are then each head's first reads, a steady wave's re-reads in every wave and the window's other
    re-reads at every later boundary (extrapolated_reads), not a DRAM pass per walk: counting each wave's walk as a
    pass of the window's reads (two heads' first reads in a window of three waves) read 24% more than cuDNN's forward
    at 2 heads of 98k tokens, d = 64, simulated wave by wave (thirty-third session)."""
    if drift.outgrows_l2() >= KEPT_BELOW_EVICTED_SHARE:
        return False
    return heads.fewest_head_ctas(tensor) >= slots


def last_waves_hold_no_boundary(heads: "GridHeads", tensor: str, slots: int, waves: int) -> bool:
    """Whether the last of `waves` waves of `slots` CTAs and the wave before it start no head of `tensor`: the last
    wave then neither straddles a boundary nor re-reads after one, and its re-reads recur in every wave."""
    start, end = (waves - 2) * slots, waves * slots
    return not any(start <= b < end for b in heads.boundaries[tensor])


class GridHeads:
    """A launch's grid as its shared tensors see it, walked once: per tensor, its distinct `shared_by` keys (`keys`)
    and the grid positions where its key changes (`boundaries`: a new head's first CTA). The steady-state rules for
    head boundaries (kept_between_boundaries, last_waves_hold_no_boundary, extrapolated_reads) all read it."""

    __slots__ = ("grid", "shared_by", "keys", "boundaries")

    def __init__(self, grid, shared_by):
        self.grid, self.shared_by = grid, shared_by
        self.keys: dict[str, set] = {}
        self.boundaries: dict[str, list[int]] = {}
        previous: dict = {}
        for i, cta in enumerate(grid):
            current = shared_by(cta)
            for tensor, key in current.items():
                found = self.keys.get(tensor)
                if found is None:
                    self.keys[tensor], self.boundaries[tensor] = {key}, []
                    continue
                found.add(key)
                if previous.get(tensor) != key:
                    self.boundaries[tensor].append(i)
            previous = current

    def fewest_head_ctas(self, tensor: str) -> int:
        """The fewest consecutive CTAs between `tensor`'s head boundaries (a head's CTAs); 0 where it has none (one
        head: nothing to re-read at)."""
        boundaries = self.boundaries.get(tensor)
        if not boundaries:
            return 0
        return min(b - a for a, b in zip([0] + boundaries, boundaries + [len(self.grid)]))


def _later_boundaries_per_window_boundary(heads: GridHeads, tensor: str, window_ctas: int, slots: int | None) -> float:
    """How many times the head boundaries of `tensor` (grid positions where its `shared_by` key changes) after the
    window outnumber those in it, where its heads span a wave of `slots` CTAs or more (each boundary then re-reads what
    the straddling wave's two walks evicted: window_waves); 0 otherwise (the window's re-reads are a transient of the
    launch's start, or of waves that run many small heads in step)."""
    if not slots or heads.fewest_head_ctas(tensor) < slots:
        return 0.0
    boundaries = heads.boundaries[tensor]
    in_window = sum(1 for i in boundaries if i < window_ctas)
    return (len(boundaries) - in_window) / in_window if in_window else 0.0


def _distinct_keys(ctas, shared_by) -> dict[str, set]:
    """Per tensor, the distinct `shared_by` keys of `ctas`. A tight loop: a large grid (the naive kernel's 524288
    GEMM CTAs at 16k tokens) is walked whole."""
    keys: dict[str, set] = {}
    for cta in ctas:
        for tensor, key in shared_by(cta).items():
            found = keys.get(tensor)
            if found is None:
                keys[tensor] = found = set()
            found.add(key)
    return keys
