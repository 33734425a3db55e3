"""The timing interpreter: runs a kernel plan's CTA programs as simpy processes on the hardware model.

Each op occupies the unit that executes it for the cycles it costs (per-SM tensor core, MUFU, FP32 pipe,
SMEM port; shared L2 and HBM through `MemorySystem`) and the issuing warp role waits for what it needs.
Launches run back to back, each after the launch overhead; CTAs are dispatched in grid order to SM slots
as they free up (occupancy from SMEM, registers and threads), which yields waves and the tail wave.

Folded mode (the default) simulates a GPU with S/f SMs running every f-th block of f consecutive CTAs,
each representative standing for its block: its demand on shared servers (L2, HBM) is scaled by the
block's weight and distinct-data count (see `folding`), per-SM behaviour is simulated as is.
"""

from __future__ import annotations

import math
import time as wallclock
from collections import deque

import simpy

from gpusim.engine.folding import Representative, choose_fold_factor, fold_grid, steady_dispatch_lag
from gpusim.engine.icache import InstructionCache
from gpusim.engine.memory import MemorySystem, ReadTally, SmMemoryPort, check_l2_start
from gpusim.engine.servers import SharedUnit
from gpusim.engine.steady_state import (Drift, GridHeads, WaveMeter, busiest_unit_cycles, extrapolated_reads,
                                        kept_between_boundaries, last_waves_hold_no_boundary, should_extrapolate,
                                        window_waves)
from gpusim.errors import InputError
from gpusim.hardware import ASYNC_INSTRUCTIONS, INSTRUCTION_BYTES, HardwareSpec
from gpusim.launch import KernelPlan, Launch
from gpusim.engine.loop_sampling import (LAST_WAVE_FULL_ITERATIONS, MEASURED, TAIL_WAVE_FULL_ITERATIONS, FullRuns,
                                         extend_warm, gap_after, is_warm_decision)
from gpusim.ops import (Acquire, CodePath, Handle, Load, Loop, LoopMark, LoopPlan, Mma, Signal, SpillStore, Store,
                        Vector, Wait)
from gpusim.result import LaunchStats

PER_SM_UNITS = ("tensor", "mufu", "fp32", "smem", "sm_load", "cp_async", "tma", "dispatch", "fetch")
#: Stand-in chunks per tensor for a sampled shared walk's skipped reads (a simulation setting: a multiple of the
#: L2's classes, each chunk a 64th of the skipped data, 0.5 MB of K at d = 128 and 128k tokens).
WALK_CHUNKS = 64
#: HBM busy share over a sampled loop's measured iterations above which the loop is taken as bandwidth-bound.
HBM_SATURATED = 0.95


class SmState:
    """One simulated SM: its compute units, SMEM budget and memory port."""

    def __init__(self, env: simpy.Environment, hw: HardwareSpec, index: int):
        self.index = index
        share = hw.oldest_cta_issue_share
        self.tensor = SharedUnit(env, f"sm{index}.tensor", 1.0, share)  # work in cycles; rate applied per instruction
        self.mufu = SharedUnit(env, f"sm{index}.mufu", hw.mufu_ops_per_clk_per_sm, share)
        self.fp32 = SharedUnit(env, f"sm{index}.fp32", hw.fp32_ops_per_clk_per_sm, share)
        self.smem = SharedUnit(env, f"sm{index}.smem", hw.smem_bandwidth_bytes_per_clk_per_sm, share)
        # Instruction dispatch of the SM's sub-partitions: synchronous work (vector math, mma.sync streams)
        # holds it for its duration, asynchronous MMAs (wgmma, tcgen05) only issue through it. So vector
        # work of one warp overlaps another warp's async MMA but not its mma.sync stream.
        self.dispatch = SharedUnit(env, f"sm{index}.dispatch", 1.0, share)
        self.port = SmMemoryPort.load_store_units(hw, index)
        self.tma = SmMemoryPort.tma_engine(hw, index)
        self.cp_async = SmMemoryPort.async_copy_path(hw, index)  # None: cp.async shares the load/store units'
        self.smem_budget = simpy.Container(env, capacity=hw.smem_per_sm_bytes, init=hw.smem_per_sm_bytes)
        # instruction fetch past the instruction cache: a unit that ops with instructions use only while it thrashes
        self.icache = InstructionCache(hw.instruction_cache_bytes, hw.instruction_stream_window_bytes) \
            if hw.instruction_cache_bytes else None
        self.fetch = SharedUnit(env, f"sm{index}.fetch", hw.instruction_fetch_bytes_per_clk_per_sm,
                                share) if self.icache else None
        self.reps_run = 0
        self.work_represented = 0.0  # its representatives' weights: the real CTAs' work they stood for

    def real_sms(self) -> float:
        """How many real SMs' worth of work this folded SM's busy time stands for: the fold factor for full
        blocks of alike CTAs, less for short blocks (the grid's last, or a one-wave launch that leaves SMs
        idle) and blocks whose representative worked more than its block's average."""
        return self.work_represented / self.reps_run if self.reps_run else 0.0

    def settle(self) -> None:
        """End of the launch: count the work still on the units (see SharedUnit.settle)."""
        for unit in (self.tensor, self.mufu, self.fp32, self.smem, self.dispatch, self.fetch):
            if unit is not None:
                unit.settle()

    def fetch_bytes(self, instructions: int) -> int:
        """Bytes of instructions an op issuing `instructions` warp instructions fetches now: all of them while
        the SM's code paths thrash its instruction cache, none otherwise."""
        icache = self.icache
        return instructions * INSTRUCTION_BYTES if icache is not None and icache.thrashing else 0

    def busy(self) -> dict:
        return {"tensor": self.tensor.busy_cycles, "mufu": self.mufu.busy_cycles, "fp32": self.fp32.busy_cycles,
                "smem": self.smem.busy_cycles, "sm_load": self.port.load_link.busy_cycles,
                "cp_async": self.cp_async.load_link.busy_cycles if self.cp_async else 0.0,
                "tma": self.tma.load_link.busy_cycles if self.tma else 0.0,
                "dispatch": self.dispatch.busy_cycles,
                "fetch": self.fetch.busy_cycles if self.fetch else 0.0}


class _Counters:
    __slots__ = ("flops", "smem_read", "smem_write", "events", "mufu_ops", "fp32_ops")

    def __init__(self):
        self.flops = self.smem_read = self.smem_write = self.mufu_ops = self.fp32_ops = 0.0
        self.events = 0


class TimingInterpreter:
    def __init__(self, hw: HardwareSpec, *, exact: bool = False, trace: bool = False, l2_start: str = "empty",
                 extrapolate: bool = True, tally_reads: bool = False):
        check_l2_start(l2_start, "TimingInterpreter")
        self.hw = hw
        self.exact = exact
        self.extrapolate = extrapolate  # False: a folded launch runs every wave (steady_state off)
        # tally_reads: each simulated CTA's DRAM reads per tensor, (launch name, ReadTally) in dispatch order
        self.cta_reads: list[tuple[str, ReadTally]] | None = [] if tally_reads else None
        self.env = simpy.Environment()
        self.memory = MemorySystem(hw)
        if l2_start == "flushed":
            self.memory.start_flushed()
        self.counters = _Counters()
        self.per_sm_busy = {unit: 0.0 for unit in PER_SM_UNITS}
        self.launch_stats: list[LaunchStats] = []
        self.trace: list | None = [] if trace else None
        self.memory.trace = self.trace
        self._tensor_rate_cache: dict = {}
        self._dispatched = 0  # CTAs dispatched so far (their age order)
        self._resident = 0  # real CTAs running now (representatives' weights; loop sampling's fair share)
        self._last_wave_reps = 0  # representatives in the running launch's partial last wave (a one-wave launch: all)
        self._last_wave_budget = LAST_WAVE_FULL_ITERATIONS  # its loops' full-run budget (loop_sampling.FullRuns)
        self._last_wave_ctas = 0  # the real CTAs they stand for
        self._shared_tensors: set = set()  # the running launch's shared_by tensors (owned_by ones are private)
        self._hbm_busy_jumped = 0.0  # HBM busy cycles that loop sampling added for skipped iterations
        self._frames: dict = {}  # (SM, slot) -> the L2 room its stack frames hold in the running launch
        self._tensor_bytes: dict[str, float] = {}  # the running plan's tensors' bytes (steady_state.window_waves)

    # ------------------------------------------------------------------ public
    def run(self, plan: KernelPlan) -> dict:
        plan.validate(self.hw)
        self._tensor_bytes = {name: tensor.nbytes for name, tensor in plan.tensors.items()}
        started = wallclock.perf_counter()
        # until the plan is done: a loop-sampling jump's stand-in work (_occupy_during_jump) may outlast it
        self.env.run(until=self.env.process(self._run_plan(plan)))
        cycles = self.env.now
        wall = wallclock.perf_counter() - started
        total = max(cycles, 1e-9)
        busy = {"hbm": self.memory.hbm.busy_cycles / total, "l2": self.memory.l2.busy_cycles / total}
        for unit, value in self.per_sm_busy.items():
            busy[unit] = value / (self.hw.sm_count * total)
        return {"cycles": cycles, "busy": busy, "wall_s": wall, "counters": self.counters,
                "bytes": self.memory.bytes, "launches": self.launch_stats, "trace": self.trace}

    # ------------------------------------------------------------------ launches
    def _run_plan(self, plan: KernelPlan):
        overhead_cycles = math.ceil(self.hw.kernel_launch_overhead_s * self.hw.sm_clock_hz)
        for launch in plan.launches:
            yield self.env.timeout(overhead_cycles)
            yield from self._run_launch(launch)

    def _run_launch(self, launch: Launch):
        env, hw = self.env, self.hw
        self.memory.start_launch(env.now)
        self._shared_tensors = set(launch.shared_by(launch.grid[0])) if launch.grid else set()
        occupancy = launch.occupancy(hw)
        works = [launch.work(cta) for cta in launch.grid] if launch.work and not self.exact else None
        fold = 1 if self.exact else choose_fold_factor(hw.sm_count, len(launch.grid), occupancy, works)
        one_wave = len(launch.grid) <= occupancy * hw.sm_count
        sms = [SmState(env, hw, i) for i in range(hw.sm_count // fold)]
        slots = occupancy * len(sms)
        meter = None
        skipped = 0
        blocks = -(-len(launch.grid) // fold)
        uniform = launch.work is None
        extrapolate = self.extrapolate and should_extrapolate(blocks, slots, uniform, self.exact)
        waves = window_waves(launch.grid, launch.shared_by, slots * fold, self._tensor_bytes,
                             self.memory.cache.capacity_bytes) if extrapolate else 0
        extrapolate = extrapolate and should_extrapolate(blocks, slots, uniform, self.exact, waves)
        reps = deque(fold_grid(launch.grid, launch.shared_by, fold, works, one_wave, launch.owned_by,
                               limit=waves * slots if extrapolate else None))
        lag = steady_dispatch_lag(works, slots * fold)
        if lag:
            for rep in list(reps)[slots:]:  # the first wave's CTAs all start at once
                rep.lag_steps = lag
        for rep in reps:
            rep.pace_spread = hw.cta_pace_spread
        if extrapolate:
            skipped = blocks - len(reps)
            meter = WaveMeter(slots, lambda: self._additive_counters(sms, fold), waves)
        window = _Window(len(reps), slots, self._additive_counters(sms, fold), dict(self.memory.hbm_read_by_tensor),
                         dict(self.memory.reread_bytes_by_tensor),
                         dict(self.memory.l2_read_by_tensor)) if meter is not None else None
        if extrapolate:
            # A benchmark's flush residue would be written back during the waves whose period is extrapolated:
            # this launch writes it all back on the side instead, and its HBM floor (_extrapolate) counts it.
            self.memory.drain_flush_residue()
        simulated = len(reps)
        self._last_wave_reps = 0 if extrapolate else (simulated if simulated <= slots else simulated % slots)
        self._last_wave_budget = LAST_WAVE_FULL_ITERATIONS if one_wave else TAIL_WAVE_FULL_ITERATIONS
        # the real CTAs of that wave: once the wave before has finished they are all that streams
        self._last_wave_ctas = sum(rep.count for rep in list(reps)[len(reps) - self._last_wave_reps:])
        start = env.now
        store_done = [start]
        workers = [env.process(self._sm_slot(sm, slot, launch, reps, store_done, meter))
                   for slot in range(occupancy) for sm in sms]
        yield env.all_of(workers)
        finish = max(env.now, store_done[0])
        if finish > env.now:
            yield env.timeout(math.ceil(finish - env.now))
        for sm in sms:
            sm.settle()
            for unit, value in sm.busy().items():
                self.per_sm_busy[unit] += value * sm.real_sms()
        if meter is not None:
            yield from self._extrapolate(launch, meter, window, sms, fold, skipped, start)
        # the launch's stack frames leave with it (their dirty lines are not written back: a few MB at most)
        self.memory.cache.reserve(-sum(self._frames.values()))
        self._frames.clear()
        seconds = hw.seconds_per_cycle
        self.launch_stats.append(LaunchStats(
            name=launch.name, ctas=len(launch.grid), ctas_per_sm=occupancy,
            waves=len(launch.grid) / (occupancy * hw.sm_count), start_s=start * seconds,
            time_s=(env.now - start) * seconds, simulated_ctas=simulated, fold_factor=fold))

    def _frame_room(self, sm: SmState, cta: "_CtaState", nbytes: int) -> float:
        """The L2 room the stack frames of `cta`'s slot take beyond what they took before: `nbytes` of spills per real
        CTA its representative stands for (each frame one SM's line, at l2_private_line_share). A slot's frames stay
        for the launch: every CTA that runs there rewrites them (ops.SpillStore)."""
        room = nbytes * cta.rep.count * self.hw.l2_private_line_share
        held = self._frames.get((sm.index, cta.slot), 0.0)
        if room <= held:
            return 0.0
        self._frames[(sm.index, cta.slot)] = room
        return room - held

    def _clean_room(self, reads: dict[str, float], shared) -> float:
        """The L2 room per byte of stand-in lines for `reads` (bytes per tensor): a tensor the launch's CTAs share
        (`shared(tensor)`) takes its bytes, a private one the room of a line one SM uses (l2_private_line_share)."""
        total = sum(reads.values())
        if total <= 0:
            return 1.0
        private = sum(v for t, v in reads.items() if not shared(t))
        return 1.0 - private / total * (1.0 - self.hw.l2_private_line_share)

    def _extrapolate(self, launch: Launch, meter: WaveMeter, window: "_Window", sms: list, fold: int,
                     skipped: int, start: float):
        """Account for the `skipped` representatives of a uniform launch after its simulated waves (see
        steady_state): time and busy shares follow the measured steady wave; work counters scale with the
        launch's own simulated average; HBM reads per distinct data; write-backs by ageing L2."""
        env, memory = self.env, self.memory
        slots, simulated, before = window.slots, window.simulated, window.counters
        period, deltas = meter.period()
        launch_totals = {k: v - before[k] for k, v in self._additive_counters(sms, fold).items()}
        period = max(period, busiest_unit_cycles(launch_totals, len(sms) * fold, simulated / slots))
        for key in deltas:
            if not key.startswith(("busy.", "sm.")):
                deltas[key] = launch_totals[key] * slots / simulated
        deltas["mem.hbm_write"] = 0.0  # write-backs depend on L2 capacity, not on work: aged below
        streaming = meter.streaming()
        shared = self._shared_tensors
        streamed = sum(v - window.l2_reads.get(t, 0.0) for t, v in memory.l2_read_by_tensor.items()
                       if t in streaming and t in shared)
        stream_per_cta = streamed / (simulated * fold)
        last_wave_reads = meter.last_wave  # (a sum over its CTAs' tallies)
        last_wave_dram = sum(v for t, v in last_wave_reads.dram.items() if t in streaming and t in shared)
        # one pass is one read of every stream the last wave's CTAs walked (two heads' K/V at a head boundary)
        last_wave = launch.grid[(meter.waves - 1) * slots * fold:meter.waves * slots * fold]
        streams = max((len({launch.shared_by(cta)[t] for cta in last_wave}) for t in streaming & shared), default=1)
        ctas_per_sm = slots // len(sms)
        window_reads = {t: v - window.reads.get(t, 0.0) for t, v in memory.hbm_read_by_tensor.items()}
        drift = Drift(self.hw.cta_duration_jitter, stream_per_cta, memory.cache.capacity_bytes,
                      window_passes=last_wave_dram / (stream_per_cta * streams) if stream_per_cta else 1.0,
                      ctas_per_sm=ctas_per_sm,
                      partner_offset_per_wave=meter.partner_offset_per_wave(ctas_per_sm),
                      l2_spread_bytes=memory.cache.spread_bytes,
                      other_bytes_per_walk=self._other_room_per_cta(window_reads, streaming & shared, launch_totals,
                                                                    simulated * fold) * slots * fold)
        heads = GridHeads(launch.grid, launch.shared_by)
        kept = {t for t in streaming & shared if kept_between_boundaries(heads, t, slots * fold, drift)}
        streaming -= kept
        steady = {t: last_wave_reads.rereads.get(t, 0.0) for t in kept
                  if last_waves_hold_no_boundary(heads, t, slots * fold, meter.waves)}
        extra_reads = extrapolated_reads(
            window_reads, heads, simulated * fold, streaming, slots * fold, drift,
            {t: v - window.reread_bytes.get(t, 0.0) for t, v in memory.reread_bytes_by_tensor.items()}, steady)
        deltas["mem.hbm_read"] = extra_reads * slots / skipped
        if launch_totals["mem.hbm_read"] > 0:  # lookups forwarded with the misses follow them
            deltas["mem.l2_fabric_miss"] = (deltas["mem.hbm_read"] * launch_totals["mem.l2_fabric_miss"]
                                            / launch_totals["mem.hbm_read"])
        self._add_counters(deltas, skipped / slots)
        share = skipped / simulated
        # stand-in lines: the reads that missed and the lines the writes dirtied (atomic adds into a resident
        # dirty line, FA2's dQaccum, dirty nothing new)
        written_back = memory.cache.age(launch_totals["mem.hbm_read"] * share,
                                        launch_totals["mem.l2_dirtied"] * share, tag=(launch.name, start),
                                        ending=memory.cache.composition(),
                                        clean_room=self._clean_room(window_reads, shared.__contains__))
        memory.bytes.hbm_write += written_back
        memory.hbm.busy_cycles += written_back / memory.hbm.rate
        # The measured waves ran while L2 still absorbed writes; in steady state the write-backs share HBM
        # too, so the launch cannot be faster than its HBM bytes at HBM bandwidth.
        hbm_bytes = (memory.bytes.hbm_read + memory.bytes.hbm_write - before["mem.hbm_read"] - before["mem.hbm_write"])
        floor = hbm_bytes / memory.hbm.rate - (env.now - start)
        yield env.timeout(math.ceil(max(meter.last_finish(period, skipped) - env.now, floor, 0.0)))

    def _other_room_per_cta(self, window_reads: dict[str, float], streamed: set, launch_totals: dict,
                            ctas: int) -> float:
        """The L2 room one CTA's data other than the `streamed` tensors takes (Drift.other_bytes_per_walk): its DRAM
        reads of them, shared tensors at their bytes and private ones at a private line's room, and the lines it
        dirties (each written by one SM), from the window's `ctas` CTAs."""
        share = self.hw.l2_private_line_share
        reads = sum(v * (1.0 if t in self._shared_tensors else share)
                    for t, v in window_reads.items() if t not in streamed)
        return (reads + launch_totals["mem.l2_dirtied"] * share) / max(ctas, 1)

    def _additive_counters(self, sms: list, fold: int) -> dict:
        """Every counter that grows with work, for steady-state extrapolation."""
        values = {f"mem.{k}": v for k, v in vars(self.memory.bytes).items()}
        values.update({f"cta.{k}": getattr(self.counters, k) for k in self.counters.__slots__ if k != "events"})
        values["busy.hbm"], values["busy.l2"] = self.memory.hbm.busy_cycles, self.memory.l2.busy_cycles
        for sm in sms:
            for unit, value in sm.busy().items():
                values[f"sm.{unit}"] = values.get(f"sm.{unit}", 0.0) + value * fold
        return values

    def _add_counters(self, deltas: dict, times: float) -> None:
        for key, delta in deltas.items():
            group, name = key.split(".", 1)
            extra = delta * times
            if group == "mem":
                setattr(self.memory.bytes, name, getattr(self.memory.bytes, name) + extra)
            elif group == "cta":
                setattr(self.counters, name, getattr(self.counters, name) + extra)
            elif group == "busy":
                server = self.memory.hbm if name == "hbm" else self.memory.l2
                server.busy_cycles += extra
            else:
                self.per_sm_busy[name] += extra

    def _sm_slot(self, sm: SmState, slot: int, launch: Launch, reps: deque, store_done: list, meter=None):
        """One of an SM's CTA slots: runs the next representative whenever it is free (CTAs are placed in grid
        order as slots free). Traced: a row per CTA on the slot's track ("cta slot k"), named by its launch and grid
        index, from its dispatch to the end of its roles (its last stores may still be draining); in folded mode
        the rows are the representatives."""
        env = self.env
        while reps:
            rep = reps.popleft()
            if launch.smem_bytes_per_cta:
                yield sm.smem_budget.get(launch.smem_bytes_per_cta)
            roles = launch.program(rep.cta)
            roles = roles if isinstance(roles, list) else [roles]
            self._dispatched += 1
            cta = _CtaState(rep, sm, self._last_wave_reps if len(reps) < self._last_wave_reps else 0,
                            self._dispatched, slot)
            if meter is not None or self.cta_reads is not None:  # an extrapolated launch needs each CTA's reads
                cta.reads = ReadTally()
                if meter is not None:
                    meter.cta_started(cta.reads, sm.index, env.now)
                if self.cta_reads is not None:
                    self.cta_reads.append((launch.name, cta.reads))
            sm.reps_run += 1
            sm.work_represented += rep.weight
            started = env.now
            procs = [env.process(self._run_role(role, cta, launch.name)) for role in roles]
            self._resident += rep.count
            yield env.all_of(procs)
            self._resident -= rep.count
            if self.trace is not None:
                self.trace.append((f"{launch.name} cta {rep.cta}", sm.index, f"cta slot {slot}", started,
                                   env.now - started))
            store_done[0] = max(store_done[0], cta.store_done)
            if meter is not None:
                meter.cta_finished(env.now, started)
            if launch.smem_bytes_per_cta:
                yield sm.smem_budget.put(launch.smem_bytes_per_cta)

    # ------------------------------------------------------------------ ops
    def _tensor_rate(self, instruction: str, dtype: str) -> float:
        key = (instruction, dtype)
        rate = self._tensor_rate_cache.get(key)
        if rate is None:
            sustained = self.hw.tensor_sustained_fraction
            if instruction not in ASYNC_INSTRUCTIONS and self.hw.mma_sync_sustained_fraction is not None:
                sustained = self.hw.mma_sync_sustained_fraction
            rate = self.hw.tensor_flops_per_clk(instruction, dtype) * sustained
            if rate <= 0:
                raise InputError(f"hardware {self.hw.name} has no {instruction} tensor instruction for {dtype}")
            self._tensor_rate_cache[key] = rate
        return rate

    def _delayed(self, event, cycles: float):
        """An event that fires `cycles` after `event` (completion latency beyond the unit's busy time)."""
        env = self.env
        later = env.event()
        event.callbacks.append(lambda _e: env.timeout(math.ceil(cycles)).callbacks.append(lambda _t: later.succeed()))
        return later

    def _after(self, first, *parts: tuple, age: int = 0):
        """An event that fires when `parts` (started once `first` has fired) are done: a synchronous MMA
        whose warps load their operands from SMEM (ldmatrix) and only then issue the MMAs, so the two do
        not overlap within the warps (hw.mma_sync_serial_operands; measured on the H200, validation/README.md
        run 7); an asynchronous MMA queued behind its warp's previous one."""
        done = self.env.event()
        first.callbacks.append(lambda _e: self._submit(*parts, age=age).callbacks.append(lambda _x: done.succeed()))
        return done

    def _serial_operands(self, sm: SmState, smem_bytes: float, cycles: float, held: float, warps: int, age: int):
        """A synchronous MMA whose warps each read their operands (ldmatrix) before issuing their MMAs
        (hw.mma_sync_serial_operands). Where a scheduler holds several of its warps, the model has it serve one
        warp's reads first and that warp's MMAs run while the next warp's reads do: the op's work split by warps per
        scheduler, each part's reads after the part before's and its MMAs after its own reads (validation/README.md
        run 38: FA2's 8-warp backward loop takes 0.88 (d = 128) and 0.91 (d = 64) of its tensor-pipe plus SMEM time
        on the H200)."""
        turns = max(1, warps // self.hw.warp_schedulers_per_sm)
        parts = []
        read = sm.smem.submit(smem_bytes / turns, age)
        for turn in range(turns):
            parts.append(self._after(read, (sm.tensor, cycles / turns), (sm.dispatch, held / turns), age=age))
            if turn + 1 < turns:
                read = self._after(read, (sm.smem, smem_bytes / turns), age=age)
        return parts[0] if turns == 1 else _all_done(self.env, parts)

    def _submit(self, *parts: tuple, age: int = 0):
        """Start (unit, work) parts at once; the event fires when all are done."""
        events = [unit.submit(work, age) for unit, work in parts if work]
        return events[0] if len(events) == 1 else _all_done(self.env, events)

    def _hbm_busy_simulated(self) -> float:
        """HBM busy cycles of the transfers actually simulated: what a sampled loop's measured iterations
        compare with their span (another CTA's jump adds its skipped iterations' busy time at once)."""
        return self.memory.hbm.busy_cycles - self._hbm_busy_jumped

    def _account_skipped(self, plan: LoopPlan, work: "_RoleWork", sm: SmState, skipped: int, now: float,
                         cta: "_CtaState") -> tuple[int, float, dict]:
        """Add `skipped` copies of the role's last MEASURED iterations to every counter (for a shared walk,
        its reads of shared tensors are read as stand-in chunks instead, _read_skipped_walk); return the
        cycles its clock must jump, the span over which their SM-unit work runs and that work (busy cycles
        per unit, see _occupy_during_jump)."""
        rep, last_wave = cta.rep, cta.last_wave_reps > 0
        state, weight = plan.state, rep.weight
        t0, before, hbm_busy_at_t0 = state["marks"][-MEASURED]
        hbm_saturated = self._hbm_busy_simulated() - hbm_busy_at_t0 >= HBM_SATURATED * (now - t0)
        after = work.snapshot()
        per = {name: (a - b) / MEASURED for name, a, b in zip(_RoleWork.FIELDS, after, before)}
        counters, mem = self.counters, self.memory
        walked = self._skip_tensor_reads(work, before[-1], after[-1], skipped,
                                         rep.shared_keys if state["shared"] else None, cta.reads)
        walked_dram = sum(dram for _tensor, _keys, _distinct, dram in walked)  # per iteration, replaced by chunks
        walked_busy = walked_dram / mem.hbm.rate
        counters.flops += per["flops"] * skipped
        counters.smem_read += per["smem_read"] * skipped
        counters.smem_write += per["smem_write"] * skipped
        counters.fp32_ops += per["fp32_ops"] * skipped
        counters.mufu_ops += per["mufu_ops"] * skipped
        mem.bytes.l2_read += per["l2_read"] * skipped
        mem.bytes.l2_write += per["l2_write"] * skipped
        mem.bytes.l2_dirtied += per["l2_dirtied"] * skipped
        mem.bytes.l2_fabric_other += per["l2_fabric_other"] * skipped
        if per["hbm_read"] > 0:  # the stand-in chunks count their own (MemorySystem.read_stand_ins)
            mem.bytes.l2_fabric_miss += per["l2_fabric_miss"] * (1.0 - walked_dram / per["hbm_read"]) * skipped
        mem.bytes.hbm_read += (per["hbm_read"] - walked_dram) * skipped
        mem.hbm.busy_cycles += (per["hbm_busy"] - walked_busy) * skipped
        self._hbm_busy_jumped += (per["hbm_busy"] - walked_busy) * skipped
        mem.l2.busy_cycles += per["l2_busy"] * skipped
        # the skipped iterations' tiles would have passed through L2: age it by their volume (the missed
        # bytes; for a loop that walks its data again, every tile it reads, those it also writes counted once).
        # Their write-backs are the dirty lines this evicts (not copies of the measured ones: those came
        # from evicting older data, which the stand-in lines now evict).
        clean = max(0.0, per["l2_read"] - per["l2_write"]) if state["revisits"] else per["hbm_read"] - walked_dram
        # their room per byte, from the tensors they read (for a revisiting loop its L2 reads, tiles it also writes
        # included), or those that missed (_RoleWork.by_tensor's fields)
        field = 2 if state["revisits"] else 0
        walked_tensors = {tensor for tensor, *_ in walked}
        reads = {t: v[field] - before[-1].get(t, _NO_READS)[field] for t, v in after[-1].items()
                 if state["revisits"] or t not in walked_tensors}
        clean_room = self._clean_room(reads, self._shared_tensors.__contains__)
        mem.note_private_fill((per["hbm_read"] - walked_dram) * skipped,
                              (per["hbm_read"] - walked_dram) * skipped * clean_room)
        written_back = mem.cache.age(clean * skipped, per["l2_dirtied"] * skipped, tag=state["tag"],
                                     chunks=16, clean_room=clean_room)
        mem.bytes.hbm_write += written_back
        # The skipped traffic is not queued on the shared servers (one huge reservation would serialize the
        # other CTAs behind it), so the jump lasts at least this CTA's fair share of them: one real CTA's
        # demand (the representative's over its weight) times the real CTAs resident now, which all stream
        # at the same rate in steady state; in the launch's partial last wave, that wave's CTAs (the wave
        # before, still resident while the last wave measures its first iterations, is about to finish).
        resident = max(weight, self._last_wave_ctas if last_wave else self._resident) / weight
        fair_share = max(per["hbm_busy"], per["l2_busy"]) * skipped * resident
        unit_cycles = {unit: per[unit] * skipped for unit in ("tensor", "mufu", "fp32", "smem", "dispatch")}
        sm.port.load_link.busy_cycles += per["sm_load"] * skipped
        if sm.cp_async is not None:
            sm.cp_async.load_link.busy_cycles += per["cp_async"] * skipped
        if sm.tma is not None:
            sm.tma.load_link.busy_cycles += per["tma"] * skipped
        for name, value in per.items():
            setattr(work, name, getattr(work, name) + value * skipped)
        # With HBM saturated over the measured iterations the CTAs share it and the fair share is their steady
        # pace (one CTA's window can fall short of its share while another's exceeds it); otherwise the loop
        # runs at its measured pace, or slower if its share of HBM needs longer.
        paced = max((now - t0) / MEASURED * skipped, fair_share)
        delay = math.ceil(fair_share if hbm_saturated else paced)
        # the SM units' share of the skipped work is spread over the jump; for a role with no HBM traffic of
        # its own (whose jump is 0: it follows the roles that load for it), over its measured pace
        span = delay if delay > 0 else paced
        if walked:
            self._read_skipped_walk(walked, plan.count, now, span, cta.reads)
        return delay, span, unit_cycles

    def _skip_tensor_reads(self, work: "_RoleWork", before: dict, after: dict, skipped: int,
                           shared_keys, tally: ReadTally | None) -> list[tuple]:
        """Per tensor: add `skipped` copies of the measured iterations' reads (`before` and `after`: the
        role's per-tensor reads at the first and last measured mark) to the memory's per-tensor counters, its
        CTA's `tally` and the role's own. A shared walk's (`shared_keys`: a tensor's `shared_by` keys in the
        block, () for one the CTAs do not share; None: not a shared walk) reads of shared tensors are left to
        stand-in chunks: returns those as (tensor, keys, distinct bytes of the skipped iterations, DRAM bytes per
        iteration)."""
        mem = self.memory
        walked = []
        for tensor, values in after.items():
            was = before.get(tensor, _NO_READS)
            per = [(value - then) / MEASURED for value, then in zip(values, was)]  # _RoleWork.by_tensor's order
            own = work.by_tensor[tensor]
            for i, value in enumerate(per):
                own[i] += value * skipped
            mem.l2_read_by_tensor[tensor] = mem.l2_read_by_tensor.get(tensor, 0.0) + per[2] * skipped
            keys = shared_keys(tensor) if shared_keys is not None else ()
            if keys:
                if per[3] > 0:
                    walked.append((tensor, keys, per[3] * skipped, per[0]))
                continue
            if per[0] > 0:
                mem.count_tensor_reads(tensor, per[0] * skipped, max(0.0, per[1]) * skipped, tally)
        return walked

    def _read_skipped_walk(self, walked: list[tuple], count: int, now: float, span: float,
                           tally: ReadTally | None) -> None:
        """A sampled shared walk's skipped reads (`walked`: per tensor, its `shared_by` keys in the block and the
        distinct bytes of real tiles, see _skip_tensor_reads) over `span` cycles from `now`, in a loop of `count`
        iterations: WALK_CHUNKS stand-in chunks of the data of each tensor and key, named by them and their place
        in the walk, so that every CTA walking the same data reads the same chunks (MemorySystem.read_stand_ins),
        each at its time in the walk, in the walk's order across the tensors."""
        mem = self.memory
        classes = mem.cache.classes
        chunks = []
        for tensor, shared_keys, distinct_bytes, _dram in walked:
            size = distinct_bytes / WALK_CHUNKS / len(shared_keys)
            chunks += [(tensor, (tensor, key, "walk", count, i), size, i % classes,
                        now + span * (i + 0.5) / WALK_CHUNKS) for i in range(WALK_CHUNKS) for key in shared_keys]
        chunks.sort(key=lambda chunk: chunk[4])
        dram = mem.read_stand_ins(chunks, now, tally)
        self._hbm_busy_jumped += dram / mem.hbm.rate  # the busy time read_stand_ins added

    def _warm_longer(self, cta: "_CtaState", key: tuple, state: dict, now: float) -> bool:
        """Whether a sampled loop at its warm-up decision (loop_sampling.is_warm_decision) should warm up
        longer: while a benchmark's flush residue is still to be written back, or its write-backs overlap the
        iterations the loop's pace would be measured over. The first role of the CTA to get there decides for
        all of them (they must walk the same iterations)."""
        decision = (key, state["warm"])
        if decision not in cta.warm_decisions:
            marks, first_measured = state["marks"], state["warm"] - MEASURED  # marks[i]: warm iteration i
            window_start = marks[first_measured][0] if first_measured < len(marks) else now
            memory = self.memory
            cta.warm_decisions[decision] = (memory.flush_residue_bytes > 0
                                            or memory.flush_write_back_cycles(window_start, math.inf) > 0)
        return cta.warm_decisions[decision]

    @staticmethod
    def _occupy_during_jump(sm: SmState, age: int, span: float, unit_cycles: dict) -> None:
        """Put a jump's skipped work on the SM's units as steady demand over `span` cycles: each unit's busy
        cycles as a job capped at their share of the span, so that a co-resident CTA (measuring its own pace,
        say) meets the contention the skipped iterations would have caused, and the busy time is counted."""
        for unit, cycles in unit_cycles.items():
            if cycles > 0:
                server = getattr(sm, unit)
                server.submit(cycles * server.rate, age, cap=min(1.0, cycles / span) if span > 0 else 1.0,
                              stand_in=True)

    def _run_role(self, gen, cta: "_CtaState", launch_name: str):
        env, mem, counters, trace = self.env, self.memory, self.counters, self.trace
        age = cta.age  # warps of an earlier CTA are older (SharedUnit)
        sm, rep = cta.sm, cta.rep
        weight = rep.weight
        work = _RoleWork()
        tracking = False  # the role's work is counted from its first loop on (loop sampling needs it)
        full_runs = FullRuns(cta.last_wave_reps, self._last_wave_budget)  # the loops this role runs unsampled
        loops_announced: dict[int, int] = {}  # per iteration count: the role's loops of that count so far
        loop_keys: dict = {}  # LoopPlan -> (count, ordinal): the same loop in every role of the CTA
        hw = self.hw
        value = None
        # A warp's asynchronous MMAs (wgmma, tcgen05) run on the tensor core in issue order: the next one
        # starts when the last one's work is done, not side by side with it
        mma_tail = None
        code = None  # the code path (name, instructions, loops) the role's warps run (CodePath)
        while True:
            try:
                op = gen.send(value)
            except StopIteration:
                if code is not None:
                    sm.icache.switch(code, None)
                return
            counters.events += 1
            value = None
            now = env.now
            kind = type(op)
            # the most frequent ops first (FA3 at 128k tokens: Signal 30%, Acquire 25%, Wait 25%)
            if kind is Signal:
                cta.release(op.sem, op.count)
            elif kind is Acquire:
                event = cta.acquire(env, op.sem, op.count)
                if event is not None:
                    start = now
                    yield event
                    if trace is not None:
                        trace.append((f"wait {op.sem.name}", sm.index, "wait", start, env.now - start))
            elif kind is Wait:
                handle = op.handle
                if handle is None:
                    pass
                elif "event" in handle.meta:
                    yield handle.meta["event"]
                    if trace is not None:
                        trace.append((handle.meta["name"], sm.index, "tensor", handle.meta["issued"],
                                      env.now - handle.meta["issued"]))
                elif handle.done_cycle > now:
                    start = now
                    yield env.timeout(math.ceil(handle.done_cycle - now))
                    if trace is not None:
                        trace.append(("wait", sm.index, "wait", start, env.now - start))
            elif kind is Load:
                src = op.src
                nbytes = src.nbytes
                keys, multiplicity, key_bytes = rep.l2_keys(src)
                if op.tma and sm.tma is None:
                    raise InputError(f"{launch_name}: a TMA load on {self.hw.name}, which has no TMA (has_tma)")
                read_before, write_before = mem.bytes.hbm_read, mem.own_hbm_write_bytes()
                if tracking:
                    fabric_before = mem.fabric_bytes()
                    tensor = keys[0][0]
                    reread_before = mem.reread_bytes_by_tensor.get(tensor, 0.0)
                    l2_before = mem.l2_read_by_tensor.get(tensor, 0.0)
                own_cp_async = op.cp_async and sm.cp_async is not None
                path = sm.tma if op.tma else sm.cp_async if own_cp_async else sm.port
                done = mem.read(path, now, keys, nbytes, weight, multiplicity, key_bytes, cta.reads, rep.count)
                if tracking:
                    work.add_hbm(mem.bytes.hbm_read - read_before, mem.own_hbm_write_bytes() - write_before,
                                 mem.hbm.rate)
                    work.add_fabric(fabric_before, mem.fabric_bytes())
                    work.add_tensor_read(tensor, mem.bytes.hbm_read - read_before,
                                         mem.reread_bytes_by_tensor.get(tensor, 0.0) - reread_before,
                                         mem.l2_read_by_tensor[tensor] - l2_before,
                                         (nbytes * len(keys) if key_bytes is None else sum(key_bytes)) * multiplicity)
                    work.l2_read += nbytes * weight
                    work.l2_busy += nbytes * weight / mem.l2.rate
                    if op.tma:
                        work.tma += nbytes / hw.tma_bandwidth_bytes_per_clk
                    elif own_cp_async:
                        work.cp_async += nbytes / hw.async_copy_bandwidth_bytes_per_clk
                    else:
                        work.sm_load += nbytes / hw.sm_load_bandwidth_bytes_per_clk
                    if op.dst.space == "smem":
                        work.smem_write += nbytes * weight
                if op.dst.space == "smem":
                    counters.smem_write += nbytes * weight
                if trace is not None:
                    trace.append((f"load {src.tensor.name}", sm.index, "tma", now, done - now))
                if op.signal is not None:
                    cta.signal_at(env, op.signal, 1, done)
                if op.wait:
                    if done > now:
                        yield env.timeout(math.ceil(done - now))
                else:
                    value = Handle(done)
            elif kind is Mma:
                flops = op.flops
                cycles = flops / self._tensor_rate(op.instruction, op.operand_dtype)
                is_async = op.instruction in ASYNC_INSTRUCTIONS
                held = 0.0 if is_async else cycles
                read_bytes = op.smem_bytes()
                smem_bytes = read_bytes + op.smem_fill_bytes * hw.async_copy_fill_smem_port_share  # port bytes
                parts = ((sm.tensor, cycles), (sm.smem, smem_bytes), (sm.dispatch, held))
                if is_async and mma_tail is not None and not mma_tail.triggered:
                    done = self._after(mma_tail, *parts, age=age)
                elif is_async or not smem_bytes or not hw.mma_sync_serial_operands:
                    done = self._submit(*parts, age=age)
                else:
                    done = self._serial_operands(sm, smem_bytes, cycles, held, op.warps, age)
                fetch = sm.fetch_bytes(op.instructions)
                if fetch:  # the warps issue as fast as their instructions arrive, from the op's start
                    done = _all_done(env, [done, sm.fetch.submit(fetch, age)])
                if is_async:
                    mma_tail = done
                if is_async and hw.async_mma_latency_cycles:
                    done = self._delayed(done, hw.async_mma_latency_cycles)
                if read_bytes:
                    counters.smem_read += read_bytes * weight
                counters.flops += flops * weight
                if tracking:
                    work.flops += flops * weight
                    work.smem_read += read_bytes * weight
                    work.tensor += cycles
                    work.smem += smem_bytes / hw.smem_bandwidth_bytes_per_clk_per_sm
                    work.dispatch += held
                if op.wait:
                    yield done
                    if trace is not None:
                        trace.append(("mma", sm.index, "tensor", now, env.now - now))
                else:
                    value = Handle(meta={"event": done, "issued": now, "name": "mma", "sm": sm.index})
            elif kind is Vector:
                steps = op.step_ops()
                fp32_ops = sum(f for f, _ in steps)
                mufu_ops = sum(m for _, m in steps)
                counters.fp32_ops += fp32_ops * weight
                counters.mufu_ops += mufu_ops * weight
                fetch = sm.fetch_bytes(op.instructions)
                if fp32_ops or mufu_ops or fetch:
                    fp32_rate, mufu_rate = self.hw.fp32_ops_per_clk_per_sm, self.hw.mufu_ops_per_clk_per_sm
                    held = sum(max(f / fp32_rate, m / mufu_rate) for f, m in steps)
                    if tracking:
                        work.fp32_ops += fp32_ops * weight
                        work.mufu_ops += mufu_ops * weight
                        work.fp32 += fp32_ops / fp32_rate
                        work.mufu += mufu_ops / mufu_rate
                        work.dispatch += held
                    yield self._submit((sm.fp32, fp32_ops), (sm.mufu, mufu_ops), (sm.dispatch, held),
                                       *(((sm.fetch, fetch),) if fetch else ()), age=age)
                    if trace is not None:
                        trace.append(("exp" if mufu_ops else "vector", sm.index, "mufu" if mufu_ops else "fp32",
                                      now, env.now - now))
            elif kind is Store or kind is SpillStore:
                nbytes = op.dst.nbytes if kind is Store else op.nbytes
                accumulate = kind is Store and op.accumulate
                read_before, write_before = mem.bytes.hbm_read, mem.own_hbm_write_bytes()
                dirtied_before = mem.bytes.l2_dirtied
                fabric_before = mem.fabric_bytes() if tracking else None
                if kind is Store:
                    keys, multiplicity, key_bytes = rep.l2_keys(op.dst)
                    done = mem.write(sm.port, now, keys, nbytes, weight, multiplicity, accumulate, key_bytes,
                                     rep.count)
                else:
                    done = mem.write_frame(sm.port, now, nbytes, weight, self._frame_room(sm, cta, nbytes))
                if tracking:
                    work.add_hbm(mem.bytes.hbm_read - read_before, mem.own_hbm_write_bytes() - write_before,
                                 mem.hbm.rate)
                    work.add_fabric(fabric_before, mem.fabric_bytes())
                    work.l2_write += nbytes * weight
                    work.l2_dirtied += mem.bytes.l2_dirtied - dirtied_before
                    work.l2_busy += nbytes * weight * (2 if accumulate else 1) / mem.l2.rate
                if kind is Store and op.src.space == "smem":
                    counters.smem_read += nbytes * weight
                if trace is not None:
                    what = op.dst.tensor.name if kind is Store else "spills"
                    trace.append((f"store {what}", sm.index, "tma", now, done - now))
                cta.store_done = max(cta.store_done, done)
            elif kind is CodePath:
                if sm.icache is not None:
                    path = (op.name, op.instructions, op.loops)
                    sm.icache.switch(code, path)
                    code = path
            elif kind is Loop:
                tag = None if op.data_key is None else (launch_name, rep.cta, op.data_key)
                value = full_runs.plan(op.count, sample=not self.exact, data_tag=tag, lookahead=op.lookahead,
                                       shared=op.shared)
                loops_announced[op.count] = loops_announced.get(op.count, 0) + 1
                loop_keys[value] = (op.count, loops_announced[op.count])  # what its roles share (_warm_longer)
                tracking = True  # (a full-run loop may turn into a sampled one when a loop nests in it)
            elif kind is LoopMark:
                plan = op.plan
                full_runs.marked(plan, op.index)
                if plan.state is not None:
                    skipped = gap_after(plan, op.index)
                    if skipped:
                        delay, span, unit_cycles = self._account_skipped(plan, work, sm, skipped, now, cta)
                        self._occupy_during_jump(sm, age, span, unit_cycles)
                        if delay > 0:
                            yield env.timeout(delay)
                    else:
                        if is_warm_decision(plan, op.index) and self._warm_longer(cta, loop_keys[plan], plan.state,
                                                                                  now):
                            extend_warm(plan)
                        plan.state["marks"].append((now, work.snapshot(), self._hbm_busy_simulated()))
            else:
                raise TypeError(f"{launch_name}: a CTA program yielded {op!r}, which is not an op")


def _all_done(env, events: list):
    """An event that fires once every one of `events` (none processed yet; no events: at once) has: simpy's
    all_of without its per-event value dictionary, which the hot path of every MMA does not need."""
    done = env.event()
    if not events:
        return done.succeed()
    left = [len(events)]

    def one(_event):
        left[0] -= 1
        if not left[0]:
            done.succeed()

    for event in events:
        event.callbacks.append(one)
    return done


class _Window:
    """The counters at the start of an extrapolated launch's simulated waves."""

    __slots__ = ("simulated", "slots", "counters", "reads", "reread_bytes", "l2_reads")

    def __init__(self, simulated: int, slots: int, counters: dict, reads: dict, reread_bytes: dict, l2_reads: dict):
        self.simulated, self.slots, self.counters, self.reads = simulated, slots, counters, reads
        self.reread_bytes, self.l2_reads = reread_bytes, l2_reads


#: A tensor's entry in _RoleWork.by_tensor before its first read.
_NO_READS = (0.0, 0.0, 0.0, 0.0)


class _RoleWork:
    """What one warp role has done so far (weighted counters, unit busy cycles), so that loop sampling
    can account skipped iterations as copies of measured ones."""

    FIELDS = ("flops", "smem_read", "smem_write", "fp32_ops", "mufu_ops", "l2_read", "l2_write", "l2_dirtied",
              "l2_fabric_miss", "l2_fabric_other", "hbm_read", "hbm_write", "tensor", "mufu", "fp32", "smem",
              "dispatch", "sm_load", "cp_async", "tma", "hbm_busy", "l2_busy")
    __slots__ = FIELDS + ("by_tensor",)

    def __init__(self):
        for name in self.FIELDS:
            setattr(self, name, 0.0)
        # tensor -> [DRAM read bytes, of them re-reads, L2 read bytes, distinct bytes]: what the steady-state
        # extrapolation of a launch reads per tensor (a sampled loop's skipped iterations add their copies), and
        # the real tiles' bytes the reads stood for (what they would have read from DRAM had they all missed)
        self.by_tensor: dict[str, list] = {}

    def snapshot(self) -> tuple:
        return tuple(getattr(self, name) for name in self.FIELDS) + \
            ({tensor: tuple(values) for tensor, values in self.by_tensor.items()},)

    def add_tensor_read(self, tensor: str, dram_bytes: float, reread_bytes: float, l2_bytes: float,
                        distinct_bytes: float) -> None:
        values = self.by_tensor.get(tensor)
        if values is None:
            values = self.by_tensor[tensor] = list(_NO_READS)
        for i, value in enumerate((dram_bytes, reread_bytes, l2_bytes, distinct_bytes)):
            values[i] += value

    def add_fabric(self, before: tuple[float, float], after: tuple[float, float]) -> None:
        """The lookups an access forwarded to the other L2 partition: memory counters (l2_fabric_miss, _other)
        `after` it less `before`."""
        self.l2_fabric_miss += after[0] - before[0]
        self.l2_fabric_other += after[1] - before[1]

    def add_hbm(self, read_bytes: float, written_back_bytes: float, hbm_bytes_per_cycle: float) -> None:
        """HBM traffic an access caused: its misses (or read-modify-write reads) and the dirty lines it evicted."""
        self.hbm_read += read_bytes
        self.hbm_write += written_back_bytes
        self.hbm_busy += (read_bytes + written_back_bytes) / hbm_bytes_per_cycle


class _CtaState:
    """Per-CTA state shared by its warp roles: semaphores, the completion of posted stores and its DRAM reads."""

    __slots__ = ("rep", "sm", "slot", "store_done", "last_wave_reps", "age", "warm_decisions", "reads", "_sems")

    def __init__(self, rep: Representative, sm: SmState, last_wave_reps: int = 0, age: int = 0, slot: int = 0):
        self.rep, self.sm, self.slot, self.store_done = rep, sm, slot, 0.0
        self.age = age  # dispatch order: the SM units favour the oldest resident CTA (SharedUnit)
        self.last_wave_reps = last_wave_reps  # the launch's last-wave representatives when this is one, else 0
        self.warm_decisions: dict = {}  # (loop key, warm iterations) -> warm up longer (loop sampling)
        self.reads: ReadTally | None = None  # what its requests read from DRAM, in a launch steady_state.WaveMeter
        # extrapolates (a wave's reads are its CTAs')
        self._sems: dict = {}

    def _sem(self, sem):
        state = self._sems.get(sem)
        if state is None:
            state = self._sems[sem] = [sem.initial, deque()]
        return state

    def acquire(self, env: simpy.Environment, sem, count: int):
        state = self._sem(sem)
        if state[0] >= count and not state[1]:
            state[0] -= count
            return None
        event = env.event()
        state[1].append((count, event))
        return event

    def release(self, sem, count: int) -> None:
        state = self._sem(sem)
        state[0] += count
        waiters = state[1]
        while waiters and state[0] >= waiters[0][0]:
            need, event = waiters.popleft()
            state[0] -= need
            event.succeed()

    def signal_at(self, env: simpy.Environment, sem, count: int, cycle: float) -> None:
        delay = max(0, math.ceil(cycle - env.now))
        env.timeout(delay).callbacks.append(lambda _event: self.release(sem, count))
