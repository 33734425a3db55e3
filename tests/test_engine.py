"""The timing engine on a tiny made-up GPU with round numbers, so every expected time is hand-checkable.

TINY: 2 SMs at 1 GHz; HBM 100 B/clk (1e11 B/s at an achievable fraction of 1), 500 cycles latency; L2
1000 B/clk, 200 cycles hit latency, 1 MB (every line takes its bytes of room in it); the SM's load/store link and
in-flight window are effectively unlimited unless a test narrows them; no TMA (TINY_TMA adds one); no launch
overhead. Tensor cores: wgmma 1024 FLOP/clk, mma_sync 512 FLOP/clk; FP32 pipe 1 op/clk, MUFU 16 ops/clk, SMEM 128 B/clk
per SM.

Memory reads complete at (the time their bytes have drained through every server they queued on: the SM's
link, L2 and, on a miss, HBM) + the access latency (200 on an L2 hit, 500 on a miss): latency and
serialization add. So one cold read of n bytes alone takes n / 100 + 500 cycles, an L2 hit n / 1000 + 200.
Writes are posted: L2 absorbs them after max(drain, 200).

Per-SM execution units (tensor, MUFU, FP32, SMEM, dispatch) are processor-sharing: n ops in service each
progress at rate / n (TINY favours no CTA by age), and completions wake on whole cycles. No power cap. Vector ops and
mma_sync also hold the SM's dispatch unit for their duration; async MMAs (wgmma, tcgen05) do not.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import simpy

from gpusim.engine import loop_sampling
from gpusim.engine.folding import (MIN_REPRESENTATIVES, MIN_SIMULATED_SMS, Representative, choose_fold_factor,
                                   fold_grid, steady_dispatch_lag)
from gpusim.engine.l2 import CLASSES, SHARED, L2Cache, class_capacities
from gpusim.engine.loop_sampling import (LAST_WAVE_FULL_ITERATIONS, TAIL_ITERATIONS, TAIL_WAVE_FULL_ITERATIONS,
                                         WARM_ITERATIONS, FullRuns)
from gpusim.engine.memory import MemorySystem, ReadTally, SmMemoryPort, _key_reader, _reader
from gpusim.engine.servers import Server, SharedUnit
from gpusim.engine.stand_in_hits import NEVER_READ, StandInHits
from gpusim.engine.steady_state import (MAX_BAND_CTAS, SIMULATED_WAVES, Drift, GridHeads, WaveMeter, extrapolated_reads,
                                        kept_between_boundaries, last_waves_hold_no_boundary, window_waves)
from gpusim.engine.timing import TimingInterpreter, _all_done
from gpusim.errors import InputError
from gpusim.hardware import ASYNC_INSTRUCTIONS, get_preset
from gpusim.kernels import get_kernel
from gpusim.kernels.cudnn_options import CUDNN_FPROP_SOFTMAX_EXTRA, CUDNN_FPROP_TILES
from gpusim.kernels.warp_specialized import NamedBarrier
from gpusim.launch import KernelPlan, Launch, RegionKey, WalkedRange
from gpusim.ops import GlobalTensor, Load, Loop, Mma, Store, Tile, Vector, Wait
from gpusim.problem import AttentionProblem
from gpusim.result import BOUND_OF_UNIT, Result
from gpusim.simulate import simulate
from helpers import unit_finish_times

TINY = dataclasses.replace(
    get_preset("h200"), name="tiny", description="2-SM test GPU", sources={},
    sm_count=2, sm_clock_hz=1e9,
    hbm_bandwidth_bytes_per_s=1e11, hbm_achievable_fraction=1.0, hbm_latency_cycles=500,
    l2_capacity_bytes=10**6, l2_capacity_spread_fraction=0.0, l2_private_line_share=1.0,
    l2_bandwidth_bytes_per_clk=1000.0, l2_hit_latency_cycles=200,
    sm_load_bandwidth_bytes_per_clk=1e9, sm_max_inflight_bytes=10**9,
    has_tma=False, tma_max_inflight_bytes=0, tma_bandwidth_bytes_per_clk=0.0,
    async_copy_max_inflight_bytes=0, async_copy_bandwidth_bytes_per_clk=0.0,
    async_copy_hit_extra_latency_cycles=0.0, async_copy_miss_extra_latency_cycles=0.0,
    wgmma_bf16_flops_per_clk_per_sm=1024.0, mma_sync_bf16_flops_per_clk_per_sm=512.0, tensor_sustained_fraction=1.0,
    smem_bandwidth_bytes_per_clk_per_sm=128.0, fp32_ops_per_clk_per_sm=1.0, mufu_ops_per_clk_per_sm=16.0,
    kernel_launch_overhead_s=0.0, async_mma_latency_cycles=0.0,
    mma_sync_sustained_fraction=None, mma_sync_serial_operands=False,
    oldest_cta_issue_share=0.5, power_limit_w=0.0,
)
#: TINY with a TMA engine whose window and link are effectively unlimited unless a test narrows them.
TINY_TMA = dataclasses.replace(TINY, name="tiny-tma", has_tma=True, tma_max_inflight_bytes=10**9,
                               tma_bandwidth_bytes_per_clk=1e9)
#: The H200 preset, for tests that check its measured values.
H200 = get_preset("h200")
SRC = GlobalTensor("src", (10**6,), "int8", "input")
DST = GlobalTensor("dst", (10**6,), "int8", "output")


def plan_of(*launches: Launch) -> KernelPlan:
    return KernelPlan(kernel="test", tensors={"src": SRC, "dst": DST}, launches=list(launches))


def launch_of(grid, program, *, smem: int = 0, max_ctas_per_sm: int | None = 1, name: str = "t") -> Launch:
    return Launch(name=name, grid=list(grid), program=program, smem_bytes_per_cta=smem, threads_per_cta=128,
                  max_ctas_per_sm=max_ctas_per_sm)


def run(plan: KernelPlan, hw=TINY, *, trace: bool = False, **overrides) -> dict:
    if overrides:
        hw = dataclasses.replace(hw, **overrides)
    return TimingInterpreter(hw, exact=True, trace=trace).run(plan)


def folded_and_exact(kernel: str, problem) -> tuple:
    """The kernel's folded and exact simulations of `problem` on the h200."""
    return simulate(kernel, problem, "h200"), simulate(kernel, problem, "h200", exact=True)


def finished(out: dict, name: str) -> list[float]:
    """End cycles of the traced ops called `name` (trace rows: name, sm, unit, start, duration)."""
    return [start + duration for op, _sm, _unit, start, duration in out["trace"] if op == name]


def chunk(start: int, nbytes: int):
    return SRC.region(slice(start, start + nbytes))


def buf(nbytes: int) -> Tile:
    return Tile((nbytes,), "int8", "smem")


def delay(cycles: int) -> Vector:
    """Keep a CTA busy for `cycles` on TINY's 1-op/clk FP32 pipe before it touches memory."""
    return Vector(lambda: None, [], Tile((cycles,), "fp32"), fp32_ops_per_element=1.0, elements=cycles)


def test_tiny_gpu_has_the_round_numbers_the_tests_assume():
    assert TINY.hbm_bytes_per_clk == 100.0
    assert TINY.tensor_flops_per_clk("wgmma", "bf16") == 1024.0
    assert TINY.tensor_flops_per_clk("mma_sync", "bf16") == 512.0
    assert not TINY.has_tma and TINY_TMA.has_tma
    assert "wgmma" in ASYNC_INSTRUCTIONS and "mma_sync" not in ASYNC_INSTRUCTIONS


# ---------------------------------------------------------------------------------------------- transfers
def test_latency_adds_to_serialization():
    # one 10000 B miss: it drains through HBM at 100 B/clk in 100 cycles (L2: 10, link: ~0), then pays the
    # 500-cycle latency: 100 + 500 = 600 (not max(100, 500) = 500)
    def program(cta):
        yield Load(chunk(0, 10000), buf(10000))

    out = run(plan_of(launch_of([0], program)))
    assert out["cycles"] == 600
    assert out["bytes"].hbm_read == 10000
    assert out["bytes"].l2_read == 10000
    assert out["bytes"].l2_misses == 1


def test_one_large_transfer_completes_at_bytes_over_bandwidth_plus_latency():
    # 100000 B at 100 B/clk = 1000 cycles of HBM, then the 500-cycle latency: 1500
    def program(cta):
        yield Load(chunk(0, 100000), buf(100000))

    out = run(plan_of(launch_of([0], program)))
    assert out["cycles"] == 1500
    assert out["busy"]["hbm"] == pytest.approx(1000 / 1500)
    assert out["busy"]["l2"] == pytest.approx(100 / 1500)  # 100000 B at 1000 B/clk


def test_the_slowest_server_on_the_way_sets_the_drain_time():
    # the same 10000 B miss through a 50 B/clk SM link: the link drains it in 200 cycles (HBM: 100, L2: 10),
    # servers overlap (the bytes stream through them), so 200 + 500 = 700
    def program(cta):
        yield Load(chunk(0, 10000), buf(10000))

    assert run(plan_of(launch_of([0], program)), sm_load_bandwidth_bytes_per_clk=50.0)["cycles"] == 700


def test_two_transfers_from_two_sms_share_hbm_bandwidth():
    # each alone: 1000 + 500 cycles; together HBM drains their 200000 B at 100 B/clk by 2000 (SM0's by
    # 1000, SM1's queued behind it), and the last one then pays the latency: 2000 + 500 = 2500
    def program(cta):
        yield Load(chunk(cta * 100000, 100000), buf(100000))

    out = run(plan_of(launch_of([0, 1], program)))
    assert out["cycles"] == 2500
    assert out["bytes"].hbm_read == 200000
    assert out["busy"]["hbm"] == pytest.approx(2000 / 2500)


def test_l2_hit_versus_miss_from_the_other_sm():
    # SM0 misses at t=0 (done at 100 + 500 = 600); SM1 reads the same 10000 B at t=600 and hits: it drains
    # through L2 at 1000 B/clk in 10 cycles, then the 200-cycle hit latency: 600 + 10 + 200 = 810
    def program(cta):
        if cta == 1:
            yield delay(600)
        yield Load(chunk(0, 10000), buf(10000))

    out = run(plan_of(launch_of([0, 1], program)))
    assert out["cycles"] == 810
    assert out["bytes"].hbm_read == 10000  # DRAM once
    assert out["bytes"].l2_read == 20000  # L2 twice
    assert (out["bytes"].l2_hits, out["bytes"].l2_misses) == (1, 1)


def test_second_read_on_the_same_sm_costs_the_hit_latency():
    def program(cta):
        yield Load(chunk(0, 10000), buf(10000))
        yield Load(chunk(0, 10000), buf(10000))

    # miss: 100 + 500 = 600; then a hit at 600: 10 cycles through L2 + 200 latency = 810
    out = run(plan_of(launch_of([0], program)))
    assert out["cycles"] == 600 + 10 + 200
    assert out["bytes"].hbm_read == 10000


def test_l2_capacity_makes_a_reread_miss():
    # a 1500-byte L2 holds one 1000-byte tile: a, b, a misses three times, each 1000 / 100 + 500 = 510
    def program(cta):
        for start in (0, 1000, 0):
            yield Load(chunk(start, 1000), buf(1000))

    out = run(plan_of(launch_of([0], program)), l2_capacity_bytes=1500)
    assert out["cycles"] == 3 * 510
    assert out["bytes"].hbm_read == 3000
    assert out["bytes"].l2_misses == 3
    # where a line one SM reads takes half its bytes of room, the same L2 holds both: a hits the second time
    out = run(plan_of(launch_of([0], program)), l2_capacity_bytes=1500, l2_private_line_share=0.5)
    assert out["bytes"].hbm_read == 2000


# ---------------------------------------------------------------------------------------------- per-SM MLP
def _many_async_loads(n: int, size: int, tma: bool = False, cp_async: bool = False):
    def program(cta):
        handles = []
        for i in range(n):
            handle = yield Load(chunk((cta * n + i) * size, size), buf(size), wait=False, tma=tma, cp_async=cp_async)
            handles.append(handle)
        for handle in handles:
            yield Wait(handle)
    return program


#: 16 async loads of 1000 B issued at t=0 with k = W / 1000 of them in flight. Each drains through HBM in 10
#: cycles and completes 500 later; the first k queue on HBM 10 cycles apart (done 510 + 10 i), and load i >= k
#: is admitted when load i - k completes, finds HBM idle, and takes another 510: done(i) = done(i - k) + 510,
#: so done(15) = 510 * (15 // k) + 510 + 10 * (15 % k):
#: k = 1: 510 * 15 + 510 = 8160; k = 4: 510 * 3 + 510 + 30 = 2070; k = 16: 510 + 150 = 660.
WINDOW_CASES = [(1000, 8160), (4000, 2070), (16000, 660)]


@pytest.mark.parametrize("window, expected", WINDOW_CASES)
def test_in_flight_window_limits_one_sm_to_window_over_round_trip(window, expected):
    # Little's law: about W bytes per 510-cycle round trip (HBM at 100 B/clk is never the limit)
    out = run(plan_of(launch_of([0], _many_async_loads(16, 1000))), sm_max_inflight_bytes=window)
    assert out["cycles"] == expected
    assert out["bytes"].hbm_read == 16000


def test_in_flight_window_is_per_sm_so_two_sms_get_twice_the_bandwidth():
    # two SMs, each 16 loads through a 4000-byte window (4 in flight), together 16 B/clk of HBM's 100.
    # SM0 issues all 16 at t=0 first: alone it ends at 2070 (WINDOW_CASES). SM1's first 4 queue on HBM behind
    # SM0's first 4 (drained at 50..80, done 550..580); each later round finds HBM idle and takes 510, as
    # SM0's rounds do: SM1 ends at 580 + 3 * 510 = 2110, only the one 40-cycle queueing later than alone.
    # HBM is busy 32000 B / 100 = 320 cycles.
    out = run(plan_of(launch_of([0, 1], _many_async_loads(16, 1000))), sm_max_inflight_bytes=4000)
    assert out["cycles"] == 2110
    assert out["bytes"].hbm_read == 32000
    assert out["busy"]["hbm"] == pytest.approx(320 / 2110)


def test_sm_port_admits_when_the_window_drains():
    hw = dataclasses.replace(TINY, sm_max_inflight_bytes=3000)
    port = SmMemoryPort.load_store_units(hw, 0)
    assert port.window_bytes == 3000
    assert port.admit(0, 2000) == 0
    port.track(500, 2000)
    assert port.admit(0, 1000) == 0  # 3000 in flight fits exactly
    port.track(700, 1000)
    assert port.admit(10, 1000) == 500  # must wait for the first request to complete
    assert port.outstanding_bytes == 1000


# ---------------------------------------------------------------------------------------------- TMA path
def test_each_sm_has_a_tma_port_only_with_tma():
    hw = dataclasses.replace(TINY_TMA, tma_max_inflight_bytes=8000, tma_bandwidth_bytes_per_clk=64.0)
    tma = SmMemoryPort.tma_engine(hw, 1)
    assert tma.window_bytes == 8000
    assert tma.load_link.rate == 64.0 and tma.load_link.name == "sm1.tma.load"
    lsu = SmMemoryPort.load_store_units(hw, 1)
    assert lsu.window_bytes == 10**9 and lsu.load_link.name == "sm1.lsu.load"
    assert SmMemoryPort.tma_engine(TINY, 0) is None


@pytest.mark.parametrize("tma, expected", [(False, 8160), (True, 660)])
def test_tma_loads_use_the_tma_window_not_the_load_store_window(tma, expected):
    # a 1000-byte LSU window (one load in flight) and an unlimited TMA window: 16 LSU loads take
    # WINDOW_CASES' one-at-a-time 16 * 510 = 8160; 16 TMA loads are all in flight at once: 510 + 150 = 660
    hw = dataclasses.replace(TINY_TMA, sm_max_inflight_bytes=1000)
    out = run(plan_of(launch_of([0], _many_async_loads(16, 1000, tma=tma))), hw)
    assert out["cycles"] == expected
    assert out["bytes"].hbm_read == 16000


@pytest.mark.parametrize("tma, expected", [(False, 660), (True, 8160)])
def test_a_small_tma_window_slows_tma_loads_only(tma, expected):
    # the mirror image: a 1000-byte TMA window and an unlimited LSU window
    hw = dataclasses.replace(TINY_TMA, tma_max_inflight_bytes=1000)
    assert run(plan_of(launch_of([0], _many_async_loads(16, 1000, tma=tma))), hw)["cycles"] == expected


@pytest.mark.parametrize("tma, expected", [(False, 600), (True, 1500)])
def test_tma_loads_drain_through_the_tma_link(tma, expected):
    # a 10 B/clk TMA link: a 10000 B TMA miss drains through it in 1000 cycles (HBM: 100), + 500 = 1500; the
    # same load on the (unlimited) LSU link: 100 + 500 = 600. The TMA link's busy time counts as tma.
    hw = dataclasses.replace(TINY_TMA, tma_bandwidth_bytes_per_clk=10.0)

    def program(cta):
        yield Load(chunk(0, 10000), buf(10000), tma=tma)

    out = run(plan_of(launch_of([0], program)), hw)
    assert out["cycles"] == expected
    if tma:
        assert out["busy"]["tma"] == pytest.approx(1000 / (2 * 1500))  # one of two SMs, 1000 of 1500
        assert out["busy"]["sm_load"] == 0


# ---------------------------------------------------------------------------------------------- cp.async path
@pytest.mark.parametrize("own_path, cp_async, expected", [(False, True, 8160), (True, False, 8160), (True, True, 660)])
def test_cp_async_has_its_own_window_only_where_the_gpu_gives_it_one(own_path, cp_async, expected):
    # a 1000-byte load/store window (one load in flight, WINDOW_CASES: 8160). cp.async loads take it too unless
    # the GPU measures cp.async apart (async_copy_*: here unlimited, so all 16 are in flight: 660)
    hw = dataclasses.replace(TINY, sm_max_inflight_bytes=1000)
    if own_path:
        hw = dataclasses.replace(hw, async_copy_max_inflight_bytes=10**9, async_copy_bandwidth_bytes_per_clk=1e9)
    out = run(plan_of(launch_of([0], _many_async_loads(16, 1000, cp_async=cp_async))), hw)
    assert out["cycles"] == expected
    assert out["bytes"].hbm_read == 16000


@pytest.mark.parametrize("extra_latency", [0, 100])
def test_cp_async_loads_drain_through_their_own_link_and_count_as_cp_async(extra_latency):
    # a 10 B/clk cp.async link: a 10000 B miss drains in 1000 cycles (HBM: 100), + 500 = 1500, plus what the
    # path adds to the access latency
    hw = dataclasses.replace(TINY, async_copy_max_inflight_bytes=10**9, async_copy_bandwidth_bytes_per_clk=10.0,
                             async_copy_miss_extra_latency_cycles=extra_latency)

    def program(cta):
        yield Load(chunk(0, 10000), buf(10000), cp_async=True)

    out = run(plan_of(launch_of([0], program)), hw)
    assert out["cycles"] == 1500 + extra_latency
    assert out["busy"]["cp_async"] == pytest.approx(1000 / (2 * out["cycles"]))  # one of two SMs
    assert out["busy"]["sm_load"] == 0


@pytest.mark.parametrize("second_cp_async, second_done", [(True, 540), (False, 510)])
def test_a_cp_async_miss_delays_only_its_requester(second_cp_async, second_done):
    # SM0's cp.async miss of a 1000 B tile drains in 10 cycles and is in L2 at 10 + 500 = 510; its requester
    # lands it 100 cycles later (the path's miss extra): 610. SM1 asks for the same tile at 50 and merges with
    # the miss: it has it at 510, plus the path's hit extra (30) if it too reads through cp.async
    hw = dataclasses.replace(TINY, async_copy_max_inflight_bytes=10**9, async_copy_bandwidth_bytes_per_clk=1e9,
                             async_copy_hit_extra_latency_cycles=30, async_copy_miss_extra_latency_cycles=100)

    def program(cta):
        if cta:
            yield delay(50)
        yield Load(chunk(0, 1000), buf(1000), cp_async=not cta or second_cp_async)

    out = run(plan_of(launch_of([0, 1], program)), hw, trace=True)
    assert sorted(finished(out, "load src")) == sorted([610, second_done])


def test_cp_async_latency_extras_need_the_path_of_their_own():
    with pytest.raises(InputError, match="async_copy"):
        dataclasses.replace(TINY, async_copy_miss_extra_latency_cycles=100)
    with pytest.raises(InputError, match="async_copy"):
        dataclasses.replace(TINY, async_copy_max_inflight_bytes=1000)


def test_h200_cp_async_rounds_take_what_the_probe_measured():
    # validation/README.md runs 17-18: one CTA alone, rounds of cp.async, each waited for before the next. A round
    # grows linearly with its bytes (no knee up to 192 KiB) at 105 GB/s, from DRAM (after an L2 flush: 192 KiB in
    # 2.44-2.46 us, 32 KiB in 0.87-0.92) and from L2 (32 KiB in 0.54 us); register loads stream slower (copy_vs_sms)
    def rounds(nbytes: int, cp_async: bool = True, warm: bool = False) -> float:
        """Seconds of the last round of one lone CTA (warm: the second of two rounds over the same bytes)."""
        chunks = nbytes // 16384

        def program(cta):
            for _ in range(2 if warm else 1):
                handles = []
                for i in range(chunks):
                    handles.append((yield Load(chunk(i * 16384, 16384), buf(16384), wait=False, cp_async=cp_async)))
                for handle in handles:
                    yield Wait(handle)

        out = run(plan_of(launch_of([0], program)), H200, trace=True)
        last = sorted((start, start + duration) for name, _, _, start, duration in out["trace"]
                      if name == "load src")[-chunks:]
        return (max(end for _, end in last) - min(start for start, _ in last)) / H200.sm_clock_hz

    per_kib = (rounds(196608) - rounds(98304)) / 96
    assert per_kib == pytest.approx(1024 / H200.async_copy_bandwidth_bytes_per_clk / H200.sm_clock_hz, rel=1e-3)
    assert rounds(196608) == pytest.approx(2.45e-6, rel=0.03)
    assert rounds(32768) == pytest.approx(0.89e-6, rel=0.05)
    assert rounds(32768, warm=True) == pytest.approx(0.54e-6, rel=0.05)
    register_per_kib = (rounds(196608, cp_async=False) - rounds(98304, cp_async=False)) / 96
    assert register_per_kib > 1.2 * per_kib


def test_a_load_cannot_take_both_copy_paths():
    with pytest.raises(ValueError, match="pick one"):
        Load(chunk(0, 1000), buf(1000), tma=True, cp_async=True)
    with pytest.raises(ValueError, match="into shared memory, not into reg"):
        Load(chunk(0, 1000), Tile((1000,), "int8", "reg"), cp_async=True)


def test_a_tma_load_on_a_gpu_without_tma_is_an_input_error():
    def program(cta):
        yield Load(chunk(0, 1000), buf(1000), tma=True)

    with pytest.raises(InputError, match="no TMA"):
        run(plan_of(launch_of([0], program)))


def test_sm_load_busy_share_stays_within_one_when_both_paths_are_busy():
    # both links at 10 B/clk; each SM loads 10000 B on each path at t=0: both links busy 0..1000, HBM drains
    # the 40000 B by 400, so each load completes at 1000 + 500 = 1500
    hw = dataclasses.replace(TINY_TMA, sm_load_bandwidth_bytes_per_clk=10.0, tma_bandwidth_bytes_per_clk=10.0)

    def program(cta):
        a = yield Load(chunk(cta * 20000, 10000), buf(10000), wait=False)
        b = yield Load(chunk(cta * 20000 + 10000, 10000), buf(10000), wait=False, tma=True)
        yield Wait(a)
        yield Wait(b)

    out = run(plan_of(launch_of([0, 1], program)), hw)
    assert out["cycles"] == 1500
    assert out["busy"]["sm_load"] <= 1.0
    assert out["busy"]["tma"] <= 1.0


# ---------------------------------------------------------------------------------------------- stores, write-back
def test_store_is_posted_and_absorbed_by_l2():
    # writes keep max(drain, latency): 1000 B drain through L2 in 1 cycle, absorbed after the 200-cycle latency
    def program(cta):
        yield Store(buf(1000), DST.region(slice(0, 1000)))

    out = run(plan_of(launch_of([0], program)))
    assert out["cycles"] == 200  # the launch ends when L2 has absorbed the store
    assert out["bytes"].l2_write == 1000
    assert out["bytes"].hbm_write == 0  # still dirty in L2 at the end, as Nsight counts DRAM writes


def test_dirty_tiles_are_written_back_when_evicted():
    def program(cta):
        for i in range(3):
            yield Store(buf(1000), DST.region(slice(i * 1000, (i + 1) * 1000)))

    out = run(plan_of(launch_of([0], program)), l2_capacity_bytes=2000)
    assert out["bytes"].l2_write == 3000
    assert out["bytes"].hbm_write == 1000  # the first tile made room for the third


def test_a_launch_ends_only_when_the_write_backs_it_caused_have_drained():
    # a 100000-byte L2 and three 100000-byte stores at t=0: the second evicts the first (HBM 0..1000), the
    # third the second (1000..2000); a line is free only when its victim is written, so the launch ends at 2000
    def program(cta):
        for i in range(3):
            yield Store(buf(100000), DST.region(slice(i * 100000, (i + 1) * 100000)))

    out = run(plan_of(launch_of([0], program)), l2_capacity_bytes=100000)
    assert out["bytes"].hbm_write == 200000
    assert out["cycles"] == 2000
    assert out["busy"]["hbm"] == 1.0


def test_memory_system_atomic_accumulate_reads_hbm_only_when_absent():
    # writes keep max(drain, latency): an absent line is read from HBM (10 cycles of drain, 500 of latency)
    mem = MemorySystem(TINY)
    port = SmMemoryPort.load_store_units(TINY, 0)
    key = ("dst", ((0, 1000),))
    assert mem.write(port, 0, (key,), 1000, accumulate=True) == 500  # read-modify-write of an absent line
    assert mem.bytes.hbm_read == 1000
    assert mem.write(port, 1000, (key,), 1000, accumulate=True) == 1200  # now resident: L2 latency
    assert mem.bytes.hbm_read == 1000
    assert mem.bytes.l2_write == 2000 and mem.bytes.l2_read == 2000


def _chunk(tensor: str, i: int, cycle: float, nbytes: float = 1000) -> tuple:
    """A stand-in chunk of a shared walk (MemorySystem.read_stand_ins), in L2 class 0."""
    return (tensor, (tensor, "walk", i), nbytes, 0, cycle)


def test_stand_in_chunks_of_a_shared_walk_hit_while_the_chunks_read_since_fit_l2():
    mem = MemorySystem(TINY)  # 1 MB of L2 in one class
    mem.start_launch(0)
    assert mem.read_stand_ins([_chunk("K", 0, 1000)], now=1000) == 1000  # first read: from HBM
    assert mem.read_stand_ins([_chunk("K", 0, 1100)], now=1100) == 0  # no other chunk read since: a hit
    # a walk over 1100 other chunks (1.1 MB) before the next read: an LRU of 1 MB has evicted it, though what the
    # walk itself would re-read from L2 fills nothing new (the stack distance counts the chunks touched)
    other = [_chunk("V", i, 2000 + i) for i in range(1100)]
    assert mem.read_stand_ins(other, now=2000) == 1.1e6
    assert mem.read_stand_ins([_chunk("K", 0, 4000)], now=4000) == 1000
    assert mem.read_stand_ins([_chunk("V", i, 5000 + i) for i in range(1100)], now=5000) == 1.1e6
    assert mem.hbm_read_by_tensor == {"K": 2000, "V": 2.2e6}
    assert mem.reread_bytes_by_tensor == {"K": 1000, "V": 1.1e6}
    assert mem.bytes.hbm_read == 2.2e6 + 2000


def test_stand_in_chunks_count_what_the_walk_reads_by_then_not_by_the_jump():
    mem = MemorySystem(TINY)
    mem.start_launch(0)
    # one CTA's jump books a whole walk of 1.1 MB, read over the next 10^6 cycles
    assert mem.read_stand_ins([_chunk("K", i, 1000 + 1000 * i) for i in range(1100)], now=1000) == 1.1e6
    # another CTA 500 cycles behind reads the first chunk again: only chunk 1 (at cycle 2000) is outside the
    # range (1000, 1500), so nothing came between: a hit, though the first jump booked the whole walk already
    assert mem.read_stand_ins([_chunk("K", 0, 1500)], now=1500) == 0
    # other lines entering L2 count at the launch's mean rate: 2 MB dirtied over 2000 cycles, 1000 B a cycle
    mem.bytes.l2_dirtied += 2e6
    assert mem.read_stand_ins([_chunk("K", 0, 2000)], now=2000) == 0  # 500 cycles: 0.5 MB
    assert mem.read_stand_ins([_chunk("K", 0, 3500)], now=2000) == 1000  # 1500 cycles: 1.5 MB (and chunk 2)


def test_a_stand_in_hit_becomes_a_miss_when_a_later_jump_books_other_data_before_it():
    mem = MemorySystem(TINY)  # 1 MB of L2 in one class
    mem.start_launch(0)
    assert mem.read_stand_ins([_chunk("K", 0, 1000)], now=1000) == 1000
    # a CTA that jumps at 1500 reads chunk 0 again at 3000: nothing booked in between yet, a hit
    assert mem.read_stand_ins([_chunk("K", 0, 3000)], now=1500) == 0
    # a CTA that jumps later (a folded block's representative that walks the next head) books 1.1 MB of other chunks
    # at 2000-2999, inside that interval: they push chunk 0 out before its read at 3000, which becomes a re-read
    other = [_chunk("V", i, 2000 + i * 999 / 1100) for i in range(1100)]
    assert mem.read_stand_ins(other, now=1600) == 1.1e6 + 1000
    assert mem.reread_bytes_by_tensor == {"K": 1000}
    # chunks read inside the interval before the decision were counted by it: booking them again takes no room
    mem = MemorySystem(TINY)
    mem.start_launch(0)
    mem.read_stand_ins([_chunk("K", 0, 1000)] + [_chunk("V", i, 1500) for i in range(900)], now=1000)
    assert mem.read_stand_ins([_chunk("K", 0, 3000)], now=1200) == 0  # 900 chunks between: 0.9 MB, a hit
    assert mem.read_stand_ins([_chunk("V", i, 2000) for i in range(900)], now=1300) == 0


def test_kept_stand_in_hits_are_dropped_once_their_read_has_passed():
    hits = StandInHits()
    hits.keep(0, low=100.0, high=200.0, room_bytes=1500.0, charge="a")
    hits.keep(0, low=100.0, high=300.0, room_bytes=500.0, charge="b")
    # one new chunk at 150 and one read at 120 before (already counted): "b" has no room left for the first
    assert hits.book(110.0, 0, [150.0, 160.0], [NEVER_READ, 120.0], [1000.0, 1000.0]) == ["b"]
    # "a" (read at 200) is gone once bookings start at 250; chunks of another class never touch it
    assert hits.book(110.0, 1, [150.0], [NEVER_READ], [1e9]) == []
    assert hits.book(250.0, 0, [260.0], [NEVER_READ], [1e9]) == []
    assert hits.book(255.0, 0, [150.0], [NEVER_READ], [1e9]) == []


# ---------------------------------------------------------------------------------------------- compute units
A, B, ACC = Tile((64, 64), "bf16", "smem"), Tile((64, 64), "bf16", "smem"), Tile((64, 64), "fp32")


@pytest.mark.parametrize("instruction, cycles, dispatch", [("wgmma", 512, 0.0), ("mma_sync", 1024, 0.5)])
def test_mma_takes_flops_over_the_tensor_rate(instruction, cycles, dispatch):
    # 64x64x64: 2 * 64^3 = 524288 FLOPs; wgmma at 1024 FLOP/clk = 512 cycles, mma_sync at 512 = 1024; the
    # SMEM operands (16384 B at 128 B/clk = 128 cycles) overlap with it. mma_sync holds the SM's dispatch
    # unit for its duration (one of two SMs: 0.5), wgmma does not
    def program(cta):
        yield Mma(A, B, ACC, instruction)

    out = run(plan_of(launch_of([0], program)))
    assert out["cycles"] == cycles
    assert out["counters"].flops == 524288
    assert out["counters"].smem_read == 16384
    assert out["busy"]["tensor"] == pytest.approx(0.5)  # one of two SMs busy all the time
    assert out["busy"]["dispatch"] == pytest.approx(dispatch)
    assert out["busy"]["smem"] == pytest.approx(128 / (2 * cycles))


def test_vector_op_takes_the_slower_of_fp32_and_mufu():
    # 1600 elements: 1 FP32 op each at 1/clk = 1600 cycles; 2 exp each at 16/clk = 200 cycles; the op holds
    # dispatch for the slower of the two, 1600
    def program(cta):
        yield Vector(lambda x: x, [], Tile((1600,), "fp32"), fp32_ops_per_element=1.0, mufu_ops_per_element=2.0)

    out = run(plan_of(launch_of([0], program)))
    assert out["cycles"] == 1600
    assert out["counters"].mufu_ops == 3200
    assert out["busy"]["mufu"] == pytest.approx(200 / (2 * 1600))
    assert out["busy"]["dispatch"] == pytest.approx(0.5)



def test_fused_vector_steps_hold_dispatch_for_each_step_in_turn():
    # two dependent steps: 160 exps (at 16/clk: 10 cycles) then 100 FP32 ops (at 1/clk: 100 cycles). The pipes
    # see the totals (MUFU done at 10, FP32 at 100), the warps are held for 10 + 100 = 110 on dispatch
    def program(cta):
        yield Vector(lambda: None, [], Tile((160,), "fp32"), steps=[(160, 0.0, 1.0), (100, 1.0, 0.0)])

    out = run(plan_of(launch_of([0], program)))
    assert out["cycles"] == 110
    assert (out["counters"].mufu_ops, out["counters"].fp32_ops) == (160, 100)
    assert out["busy"]["dispatch"] == pytest.approx(110 / (2 * 110))
    assert out["busy"]["fp32"] == pytest.approx(100 / (2 * 110))


# ---------------------------------------------------------------------------------------------- processor sharing
def test_shared_unit_two_equal_concurrent_ops_finish_together_at_twice_the_duration():
    # rate 10: 100 units alone take 10 cycles; two at once each progress at 5/clk and both finish at 20
    alone, _ = unit_finish_times(10.0, [(0, 100)])
    assert alone == {0: 10}
    together, unit = unit_finish_times(10.0, [(0, 100), (0, 100)])
    assert together == {0: 20, 1: 20}
    assert unit.busy_cycles == 20 and unit.work == 200


def test_shared_unit_is_processor_sharing_not_fifo():
    # rate 1: 100 and 300 at t=0 share until the short one has had 100 (t=200), the long one then runs alone
    # for its last 200: 400 (FIFO would give 100 and 400). A job arriving at t=50 while one of 100 runs: at
    # 50 the first has 50 left; sharing, it finishes at 150, the second (100 - 50 served) at 200.
    done, _ = unit_finish_times(1.0, [(0, 100), (0, 300)])
    assert done == {0: 200, 1: 400}
    done, _ = unit_finish_times(1.0, [(0, 100), (50, 100)])
    assert done == {0: 150, 1: 200}


def test_a_job_for_an_idle_unit_is_timed_from_its_arrival_and_shares_with_the_next():
    # rate 2: the first job (10) ends at 5; the unit idles until the second (10) arrives at 20, alone until a third
    # (2) arrives at 22 with 6 of it left; they share 1/clk each until the third ends at 24, the second then has 4
    # left at 2/clk: 26. Busy 5 + 6 cycles. (An idle unit takes a job without the general share computation.)
    done, unit = unit_finish_times(2.0, [(0, 10), (20, 10), (22, 2)])
    assert done == {0: 5, 1: 26, 2: 24}
    assert unit.busy_cycles == 11 and unit.work == 22


def test_shared_unit_completions_wake_on_whole_cycles():
    # rate 3: 10 units take 3.33 cycles, woken at 4; two of 10 take 20 / 3 = 6.67, both woken at 7
    assert unit_finish_times(3.0, [(0, 10)])[0] == {0: 4}
    assert unit_finish_times(3.0, [(0, 10), (0, 10)])[0] == {0: 7, 1: 7}


def test_a_capped_job_takes_at_most_its_share_and_leaves_the_rest():
    # alone, 100 units at a quarter of rate 1 take 400 cycles, and the unit is busy a quarter of them
    done, unit = unit_finish_times(1.0, [(0, 100)], caps=[0.25])
    assert done == {0: 400} and unit.busy_cycles == pytest.approx(100)
    # beside an uncapped job of 300 (the capped one the older: it would get 0.75), each gets what it may
    # take: 0.25 and 0.75, and both end at 400
    done, unit = unit_finish_times(1.0, [(0, 100), (0, 300)], ages=[1, 2], oldest_share=0.75, caps=[0.25, 1.0])
    assert done == {0: 400, 1: 400} and unit.busy_cycles == pytest.approx(400)
    # a cap above the job's share changes nothing
    assert unit_finish_times(1.0, [(0, 100), (0, 100)], caps=[0.9, 1.0])[0] == {0: 200, 1: 200}


def test_what_a_capped_job_leaves_stays_with_its_cta_first():
    # the older CTA (share 0.6) has a job capped at 0.2 and an uncapped one: the uncapped one gets the 0.4 the
    # CTA has left, the younger CTA keeps its 0.4 (all three do 80 units: 400, 200 and 200 cycles)
    done, _ = unit_finish_times(1.0, [(0, 80), (0, 80), (0, 80)], ages=[1, 1, 2], oldest_share=0.6,
                                caps=[0.2, 1.0, 1.0])
    assert done == {0: 400, 1: 200, 2: 200}
    # with every share given to the oldest CTA, what its capped job leaves goes to the younger one
    done, _ = unit_finish_times(1.0, [(0, 20), (0, 80)], ages=[1, 2], oldest_share=1.0, caps=[0.2, 1.0])
    assert done == {0: 100, 1: 100}


def test_a_stand_in_job_yields_to_its_own_ctas_real_work_only():
    # a loop's skipped iterations (100 units capped at 0.5) and a real job of 50 of the same CTA: the real one
    # runs alone (done at 50), the stand-in then at its cap (100 units over 200 cycles: done at 250)
    done, unit = unit_finish_times(1.0, [(0, 100), (0, 50)], caps=[0.5, 1.0], stand_ins=[True, False])
    assert done == {0: 250, 1: 50} and unit.busy_cycles == pytest.approx(150)
    # against another CTA's real job it is an ordinary job: 0.5 each, both done at 100
    done, _ = unit_finish_times(1.0, [(0, 50), (0, 50)], ages=[1, 2], caps=[0.5, 1.0], stand_ins=[True, False])
    assert done == {0: 100, 1: 100}


def test_a_waiting_stand_in_takes_nothing_that_a_capped_job_leaves():
    # every share to the oldest CTA: its real job capped at 0.3 leaves 0.7, which goes to the younger CTA's job,
    # not to the older CTA's own stand-in (that waits until its CTA's real work is done, then runs at its cap)
    done, _ = unit_finish_times(1.0, [(0, 30), (0, 100), (0, 70)], ages=[1, 1, 2], oldest_share=1.0,
                                caps=[0.3, 0.5, 1.0], stand_ins=[False, True, False])
    assert done == {0: 100, 1: 300, 2: 100}


def test_a_cap_must_be_a_fraction():
    unit = SharedUnit(simpy.Environment(), "u", 1.0)
    with pytest.raises(ValueError, match="cap"):
        unit.submit(10, cap=0.0)


def test_settling_a_unit_counts_the_work_left_as_busy():
    env = simpy.Environment()
    unit = SharedUnit(env, "u", 2.0)
    unit.submit(100, cap=0.5)  # 100 units at 1 unit/cycle: 100 cycles, half the unit busy
    env.run(until=40)
    unit.settle()  # 20 busy cycles so far, 60 units (30 busy cycles) left
    assert unit.busy_cycles == pytest.approx(50)
    env.run()
    assert unit.busy_cycles == pytest.approx(50)


def test_shared_unit_rejects_a_non_positive_rate():
    with pytest.raises(ValueError, match="rate"):
        SharedUnit(simpy.Environment(), "u", 0)


def test_the_oldest_cta_gets_its_share_of_a_contended_unit():
    # 1000 units each, rate 1: the older CTA's job at 0.75 of the rate ends at 1334 (1333.3 on whole cycles),
    # the younger then has 1000 - 0.25 * 1334 = 666.5 left alone: ends at 2001 (not 2000: the whole-cycle wake)
    assert unit_finish_times(1.0, [(0, 1000), (0, 1000)], ages=[1, 2], oldest_share=0.75)[0] == {0: 1334, 1: 2001}
    # jobs of one CTA share evenly whatever the setting
    assert unit_finish_times(1.0, [(0, 1000), (0, 1000)], ages=[1, 1], oldest_share=0.75)[0] == {0: 2000, 1: 2000}
    # the age order decides, not the submission order
    assert unit_finish_times(1.0, [(0, 1000), (0, 1000)], ages=[2, 1], oldest_share=0.75)[0] == {0: 2001, 1: 1334}


def test_oldest_cta_issue_share_must_be_a_fraction():
    with pytest.raises(InputError, match="oldest_cta_issue_share"):
        dataclasses.replace(TINY, oldest_cta_issue_share=1.5)


def test_two_ctas_on_one_sm_share_its_fp32_pipe():
    # one SM, two resident CTAs each with 1000 FP32 ops at 1/clk: alone 1000 cycles, together both at 2000
    def program(cta):
        yield delay(1000)

    out = run(plan_of(launch_of([0, 1], program, max_ctas_per_sm=2)), sm_count=1, trace=True)
    assert out["cycles"] == 2000
    assert finished(out, "vector") == [2000, 2000]
    assert out["busy"]["fp32"] == 1.0 and out["busy"]["dispatch"] == 1.0


def test_trace_has_a_row_per_cta_on_its_slot():
    # one SM of two slots, three CTAs of 1000 FP32 cycles: the first two share the SM (2000 cycles each), the
    # third takes the slot that frees first and runs alone
    def program(cta):
        yield delay(1000)

    out = run(plan_of(launch_of([0, 1, 2], program, max_ctas_per_sm=2)), sm_count=1, trace=True)
    rows = sorted((name, sm, unit, start, duration) for name, sm, unit, start, duration in out["trace"]
                  if unit.startswith("cta"))
    assert rows == [("t cta 0", 0, "cta slot 0", 0, 2000), ("t cta 1", 0, "cta slot 1", 0, 2000),
                    ("t cta 2", 0, "cta slot 0", 2000, 1000)]


def _mma_and_vector(instruction: str, vector_cycles: int):
    """One CTA of two warp roles: one issues a 64x64x64 MMA, the other a vector op, both at t=0."""
    def program(cta):
        def mma():
            yield Mma(A, B, ACC, instruction)

        def vector():
            yield delay(vector_cycles)

        return [mma(), vector()]
    return program


def test_mma_sync_and_vector_work_serialize_through_dispatch():
    # mma_sync alone: 1024 cycles (holds dispatch 1024); the vector op alone: 512 (holds dispatch 512). Both
    # at t=0 share dispatch: each progresses at 1/2 per cycle, the vector op has had its 512 at 1024, the
    # mma_sync has 512 left and runs alone until 1536 = 1024 + 512: the sum, no overlap. (The tensor core
    # itself is done at 1024, the FP32 pipe at 512.)
    out = run(plan_of(launch_of([0], _mma_and_vector("mma_sync", 512))), trace=True)
    assert out["cycles"] == 1536
    assert finished(out, "vector") == [1024]
    assert finished(out, "mma") == [1536]
    assert out["busy"]["dispatch"] == pytest.approx(1536 / (2 * 1536))
    assert out["busy"]["tensor"] == pytest.approx(1024 / (2 * 1536))


def test_mma_sync_with_serial_operands_reads_smem_before_the_tensor_work():
    # a 64x64x64 mma_sync reads A and B (2 x 8 KiB) from SMEM at 128 B/clk: 128 cycles, then 1024 on the
    # tensor core (as the H200 runs FA2's ldmatrix + HMMA stream); a wgmma still overlaps them
    serial = dataclasses.replace(TINY, mma_sync_serial_operands=True)
    out = run(plan_of(launch_of([0], _mma_and_vector("mma_sync", 0))), serial)
    assert out["cycles"] == 128 + 1024
    out = run(plan_of(launch_of([0], _mma_and_vector("wgmma", 0))), serial)
    assert out["cycles"] == 512


def test_serial_operands_of_warps_sharing_a_scheduler_overlap_in_turns():
    # the same 64x64x64 mma_sync (128 cycles of SMEM reads, 1024 of tensor work) issued by 8 warps, two per
    # scheduler: the first warp's half reads (64), then its MMAs (512) run while the second's reads do (64);
    # the second's MMAs follow (512): 64 + 512 + 512. Four warps, one per scheduler, stay serial (128 + 1024).
    # Where the reads are the longer part (2048 cycles of ldmatrix against 1024 of MMAs), the MMAs hide under them.
    # Warps that do not fill every scheduler twice (2 or 6 on 4) stay serial.
    serial = dataclasses.replace(TINY, mma_sync_serial_operands=True)

    def program_of(warps: int, smem_read_bytes: int | None = None):
        def program(cta):
            yield Mma(A, B, ACC, "mma_sync", warps=warps, smem_read_bytes=smem_read_bytes)
        return program
    for warps, smem_bytes, cycles in ((4, None, 128 + 1024), (2, None, 128 + 1024), (6, None, 128 + 1024),
                                      (8, None, 64 + 512 + 512),
                                      (16, None, 32 + 3 * 256 + 256), (8, 262144, 1024 + 1024 + 512)):
        out = run(plan_of(launch_of([0], program_of(warps, smem_bytes))), serial)
        assert out["cycles"] == pytest.approx(cycles, abs=1), warps  # (whole cycles per unit job)
        assert out["busy"]["tensor"] == pytest.approx(1024 / (2 * cycles), rel=1e-3)  # the same work, in less time


def test_cp_async_fills_take_the_smem_port_as_the_gpu_says():
    # the same serial mma_sync with 16 KiB of cp.async fills landing meanwhile: on Hopper (share 0) the fills cost
    # the port nothing; with share 1 they take 128 more cycles before the tensor work. They are SMEM writes, never
    # counted as reads.
    def program(cta):
        yield Mma(A, B, ACC, "mma_sync", smem_fill_bytes=16384)
    for share, cycles in ((0.0, 128 + 1024), (1.0, 256 + 1024)):
        gpu = dataclasses.replace(TINY, mma_sync_serial_operands=True, async_copy_fill_smem_port_share=share)
        out = run(plan_of(launch_of([0], program)), gpu)
        assert out["cycles"] == cycles
        assert out["counters"].smem_read == 16384
    assert H200.async_copy_fill_smem_port_share == 0.0 and get_preset("a100").async_copy_fill_smem_port_share == 1.0


def test_wgmma_and_vector_work_overlap():
    # wgmma alone: 512 cycles on the tensor core, no dispatch; the vector op alone: 512 on FP32 + dispatch.
    # Nothing shared: both done at 512 = max, full overlap.
    out = run(plan_of(launch_of([0], _mma_and_vector("wgmma", 512))), trace=True)
    assert out["cycles"] == 512
    assert finished(out, "vector") == [512]
    assert finished(out, "mma") == [512]
    assert out["busy"]["tensor"] == pytest.approx(0.5)
    assert out["busy"]["dispatch"] == pytest.approx(0.5)  # the vector op's


def test_dispatch_counts_as_compute_bound():
    assert BOUND_OF_UNIT["dispatch"] == "compute"
    result = Result(kernel="k", hardware="tiny", problem="p", time_s=1.0, flops=0, hbm_read_bytes=0,
                    hbm_write_bytes=0, l2_read_bytes=0, l2_write_bytes=0, l2_fabric_bytes=0, smem_read_bytes=0,
                    smem_write_bytes=0, unit_busy={"hbm": 0.3, "tensor": 0.4, "dispatch": 0.9}, launches=[])
    assert result.busiest_unit == "dispatch" and result.bound == "compute"


def test_tensor_instruction_the_gpu_lacks_is_an_input_error():
    def program(cta):
        yield Mma(A, B, ACC, "tcgen05")

    with pytest.raises(InputError, match="tcgen05"):
        run(plan_of(launch_of([0], program)))


# ---------------------------------------------------------------------------------------------- launches
def _latency_bound(cta):
    yield Load(chunk(cta * 1000, 1000), buf(1000))  # 10 cycles of HBM + 500 latency = 510 alone


#: CTAs that start together queue on HBM 10 cycles apart (slots start in the order SM0, SM1, SM0's 2nd, ...):
#:   4 CTAs, 1 per SM: 0, 1 done at 510, 520; 2 starts at 510 -> 1020, 3 at 520 -> 1030.
#:   4 CTAs, 2 per SM: all four at t=0 -> 510, 520, 530, 540.
#:   5 CTAs, 1 per SM: as 4, then CTA 4 starts at 1020 on SM0 (HBM idle) -> 1530.
#:   5 CTAs, 2 per SM: CTA 4 takes the first slot free, at 510 -> 1020.
@pytest.mark.parametrize("grid, per_sm, waves, cycles", [(4, 1, 2.0, 1030), (4, 2, 1.0, 540), (5, 1, 2.5, 1530),
                                                         (5, 2, 1.25, 1020)])
def test_waves_and_the_tail_wave(grid, per_sm, waves, cycles):
    out = run(plan_of(launch_of(range(grid), _latency_bound, max_ctas_per_sm=per_sm)))
    assert out["cycles"] == cycles
    stats = out["launches"][0]
    assert (stats.ctas, stats.ctas_per_sm, stats.waves) == (grid, per_sm, waves)


def test_smem_budget_bounds_ctas_per_sm():
    hw = dataclasses.replace(TINY, smem_per_sm_bytes=100000, smem_per_cta_max_bytes=100000)
    launch = launch_of(range(4), _latency_bound, smem=40000, max_ctas_per_sm=None)
    assert launch.occupancy(hw) == 2
    assert run(plan_of(launch), hw)["cycles"] == 540  # one wave, as (4, 2) above


def test_launch_overhead_is_paid_per_launch():
    # 1 us at 1 GHz = 1000 cycles before each launch of one 510-cycle CTA
    plan = plan_of(launch_of([0], _latency_bound, name="a"), launch_of([1], _latency_bound, name="b"))
    out = run(plan, kernel_launch_overhead_s=1e-6)
    assert out["cycles"] == 2 * (1000 + 510)
    assert [s.start_s for s in out["launches"]] == pytest.approx([1e-6, 2.51e-6])


def test_tile_too_large_for_shared_memory_is_an_input_error():
    launch = launch_of([0], _latency_bound, smem=TINY.smem_per_cta_max_bytes + 1)
    with pytest.raises(InputError, match="shared memory"):
        run(plan_of(launch))


def test_kernel_tiles_too_large_for_shared_memory_are_an_input_error():
    small = TINY.with_overrides({"smem_per_sm_bytes": 49152, "smem_per_cta_max_bytes": 49152})
    problem = AttentionProblem(batch=1, heads=2, seq_len=256, head_dim=128)
    with pytest.raises(InputError, match="shared memory"):
        simulate("fa2", problem, small)


def test_a_yield_that_is_not_an_op_is_a_type_error():
    def program(cta):
        yield "load please"

    with pytest.raises(TypeError, match="not an op"):
        run(plan_of(launch_of([0], program)))


# ---------------------------------------------------------------------------------------------- L2 cache
def test_l2_cache_hit_miss_and_capacity():
    cache = L2Cache(1000)
    assert not cache.hit("a")
    assert cache.insert("a", 400, dirty=False) == 0
    assert cache.hit("a")
    cache.insert("b", 400, dirty=False)
    assert cache.used_bytes == 800
    cache.insert("c", 400, dirty=False)  # 1200 > 1000: evicts the least recently used, a
    assert cache.used_bytes == 800
    assert not cache.hit("a") and cache.hit("b") and cache.hit("c")


def test_l2_cache_is_lru():
    cache = L2Cache(1000)
    cache.insert("a", 400, dirty=False)
    cache.insert("b", 400, dirty=False)
    assert cache.hit("a")  # a becomes most recently used
    cache.insert("c", 400, dirty=False)  # so b is evicted
    assert cache.hit("a") and not cache.hit("b") and cache.hit("c")


def _stream_then_survivors(cache: L2Cache, tiles: int, rehits: int) -> set:
    """Fill `tiles` tiles of 1 byte in a cache of 100 (one class), hitting `rehits` older tiles between fills;
    the tiles still resident."""
    for i in range(tiles):
        cache.insert(i, 1, dirty=False)
        for j in range(rehits):
            cache.hit(max(0, i - 50 - j))
    return {i for i in range(tiles) if cache.contains(i)}


def test_pseudo_lru_evicts_the_least_recent_while_only_fills_come():
    lru, plru = L2Cache(100), L2Cache(100, pseudo_lru=True)
    assert _stream_then_survivors(lru, 300, 0) == _stream_then_survivors(plru, 300, 0) == set(range(200, 300))


def test_pseudo_lru_after_hits_on_older_lines_evicts_younger_ones_but_never_the_newest():
    plru = L2Cache(100, pseudo_lru=True)
    survivors = _stream_then_survivors(plru, 300, 1)
    lru_survivors = _stream_then_survivors(L2Cache(100), 300, 1)
    assert survivors != lru_survivors
    assert set(range(300 - 100 // 4, 300)) <= survivors  # the most recent quarter is never a victim
    assert len(survivors) == len(lru_survivors) == 100


def test_pseudo_lru_repeats_with_its_seed():
    runs = [_stream_then_survivors(L2Cache(100, pseudo_lru=True, seed=seed), 300, 1) for seed in (0, 0, 1)]
    assert runs[0] == runs[1] != runs[2]


def test_l2_class_capacities_are_normal_quantiles_that_add_up_to_the_capacity():
    capacities = class_capacities(1000.0, 100.0)
    assert len(capacities) == CLASSES and sum(capacities) == pytest.approx(1000.0)
    depths = [c * CLASSES for c in capacities]
    assert depths == sorted(depths) and depths[0] < 900 and depths[-1] > 1100
    assert class_capacities(1000.0, 0.0) == [1000.0]


def _miss_share_of_rereads(cache: L2Cache, working_set_tiles: int, tile_bytes: int = 1000) -> float:
    """Read tiles 0..n-1 in order twice; the share of the second pass that misses."""
    for i in range(working_set_tiles):
        cache.insert(("warm", i), tile_bytes, dirty=False)
    misses = 0
    for i in range(working_set_tiles):
        if not cache.hit(("warm", i)):
            misses += 1
            cache.insert(("warm", i), tile_bytes, dirty=False)
    return misses / working_set_tiles


def test_pseudo_lru_treats_a_stream_re_read_in_order_as_lru_does():
    # each hit of a re-read in order lands at the least recent end, where the tree already points (runs 26, 50);
    # with a spread some classes hit and some miss, so a hit that scattered the tree would change the misses
    for working_set_tiles in (95, 100, 105):
        lru, plru = L2Cache(100_000, 10_000), L2Cache(100_000, 10_000, pseudo_lru=True)
        assert _miss_share_of_rereads(plru, working_set_tiles) == _miss_share_of_rereads(lru, working_set_tiles) > 0.3


def test_l2_with_a_spread_misses_gradually_around_its_capacity():
    # 1 MB with a 10% spread: a re-read of 0.8 MB hits, 1.2 MB misses, 1.0 MB misses about half (a normal CDF)
    def cache():
        return L2Cache(10**6, 10**5)
    assert _miss_share_of_rereads(cache(), 800) < 0.05
    assert 0.3 < _miss_share_of_rereads(cache(), 1000) < 0.7
    assert _miss_share_of_rereads(cache(), 1200) > 0.95
    # one LRU edge without a spread: 0.99 MB hits wholly, 1.01 MB misses wholly
    assert _miss_share_of_rereads(L2Cache(10**6), 990) == 0.0
    assert _miss_share_of_rereads(L2Cache(10**6), 1010) == 1.0


def test_l2_with_a_spread_keeps_lru_order_and_composition():
    cache = L2Cache(10**6, 10**5)
    for i in range(50):
        cache.insert(i, 1000 + i, dirty=i % 2 == 0)
    cache.hit(0)  # 0 becomes the most recently used
    assert [(size, dirty) for size, dirty, _cls, _room in cache.composition()] == \
        [(1000 + i, i % 2 == 0) for i in range(1, 50)] + [(1000, True)]
    assert cache.dirty_bytes() == sum(1000 + i for i in range(0, 50, 2))
    assert cache.used_bytes == sum(1000 + i for i in range(50))


def test_l2_classes_hash_keys_stably_and_keep_them():
    # a tile's class is a CRC-32 of its key's repr: the same in every process (no object ids, no randomized str
    # hash), and a tile evicted and read again returns to its class
    import zlib
    cache = L2Cache(10**6, 10**5)
    key = ("K", (3, "x"))
    assert cache._class_of(key) == zlib.crc32(repr(key).encode()) % CLASSES
    cache.insert(key, 1000, dirty=False)
    first = cache._lines[key][3]
    for i in range(5000):  # evicts every earlier tile
        cache.insert(("V", i), 1000, dirty=False)
    assert not cache.contains(key)
    cache.insert(key, 1000, dirty=False)
    assert cache._lines[key][3] == first
    assert all(len(order) > 0 for order in cache._orders)  # a stream reaches every class


def test_l2_stand_in_traffic_ages_every_class():
    # extrapolation's stand-in lines fill the classes evenly, so a gradual-edge cache ends as full as one LRU
    cache = L2Cache(10**6, 10**5)
    for i in range(500):
        cache.insert(("old", i), 1000, dirty=True)
    written_back = cache.age(4 * 10**6, 0.0, tag="t", chunks=64)
    assert written_back == 500 * 1000  # every old dirty line evicted to HBM
    assert all(len(order) > 0 for order in cache._orders)


def test_l2_stand_in_traffic_beyond_the_capacity_passes_through():
    # 100 MB of dirty stand-in traffic through a 1 MB cache: all but what its classes hold was written back during the
    # skipped work; no stand-in line outgrows its class, so a later real access evicts about a class's worth at most
    # (a line of 100 MB / 16, evicted by one access, made it wait for 6 MB of write-backs)
    cache = L2Cache(10**6, 10**5)
    written_back = cache.age(0.0, 10**8, tag="t", chunks=16)
    assert written_back + cache.dirty_bytes() == pytest.approx(10**8)
    assert cache.dirty_bytes() <= 10**6
    assert max(size for size, *_ in cache.composition()) <= max(cache.class_bytes(c) for c in range(CLASSES)) * 1.5
    assert cache.insert("real", 1000, dirty=False) < 10**6


def test_l2_spread_fraction_is_checked():
    with pytest.raises(InputError, match="l2_capacity_spread_fraction"):
        dataclasses.replace(TINY, l2_capacity_spread_fraction=0.6)


def test_l2_cache_dirty_eviction_returns_written_back_bytes():
    cache = L2Cache(1000)
    assert cache.insert("a", 400, dirty=True) == 0
    assert cache.insert("b", 400, dirty=False) == 0
    assert cache.dirty_bytes() == 400
    assert cache.insert("c", 400, dirty=False) == 400  # a was dirty
    assert cache.insert("d", 400, dirty=False) == 0  # b was clean
    assert cache.dirty_bytes() == 0


def test_l2_ageing_ends_with_the_given_composition():
    # a cache full of one clean and one dirty tile, aged by 3000 clean and 1000 dirty bytes: without an ending
    # the stand-ins leave it a quarter dirty; with the window's ending (clean first, dirty most recent) it ends
    # as that composition and the dirty bytes written back are the same in total
    plain, ended = L2Cache(1000), L2Cache(1000)
    for cache in (plain, ended):
        cache.insert("q", 500, dirty=False)
        cache.insert("o", 500, dirty=True)
    ending = ended.composition()
    assert ending == [(500, False, 0, 500), (500, True, 0, 500)]
    written_plain = plain.age(3000, 1000, tag="t")
    written_ended = ended.age(3000, 1000, tag="t", ending=ending)
    assert plain.dirty_bytes() == pytest.approx(250)
    assert ended.dirty_bytes() == pytest.approx(500)
    assert written_plain + plain.dirty_bytes() == pytest.approx(written_ended + ended.dirty_bytes())
    # stand-in traffic smaller than the ending takes only the ending's most recent tiles it covers: with none,
    # the resident tiles stay and nothing is written back
    kept = L2Cache(1000)
    kept.insert("q", 500, dirty=False)
    kept.insert("o", 500, dirty=True)
    assert kept.age(0, 0, tag="t", ending=kept.composition()) == 0
    assert kept.hit("q") and kept.hit("o") and kept.dirty_bytes() == 500


def test_l2_a_line_one_sm_uses_takes_the_private_share_until_a_second_sm_reads_it():
    cache = L2Cache(1000, private_share=0.5)
    cache.insert("q", 400, dirty=False, reader=3)
    assert cache.used_bytes == 200
    assert cache.hit("q", reader=3) and cache.used_bytes == 200  # its own SM again: still private
    assert cache.hit("q", reader=7) and cache.used_bytes == 400  # another SM: held on both sides
    assert cache.hit("q", reader=3) and cache.used_bytes == 400  # shared stays shared
    cache.insert("k", 400, dirty=False)  # a folded request for several SMs: shared at once
    assert cache.used_bytes == 800
    # a class over its capacity after a line became shared evicts down to it at its next insert; a dirty private
    # line evicted writes back its bytes, not its room
    cache.insert("o", 400, dirty=True, reader=1)
    assert cache.used_bytes == 1000
    cache.insert("o", 400, dirty=True, reader=2)  # o now shared: 1200 > 1000 evicts q, the least recent
    assert not cache.contains("q") and cache.used_bytes == 800
    written = L2Cache(1000, private_share=0.5)
    written.insert("o", 400, dirty=True, reader=1)
    assert written.insert("k", 900, dirty=False) == 400


def test_l2_private_lines_displace_a_shared_stream_less():
    # run 50's pattern: a shared stream re-read while each pass's private Q and O lines pass through. With every
    # line at full room the side traffic pushes the stream out; at a private share of one half it stays
    def stream_misses(private_share: float) -> int:
        cache = L2Cache(1000, private_share=private_share)
        misses = 0
        for p in range(4):
            for i in range(3):
                cache.insert(("q", p, i), 100, dirty=False, reader=i)
            for i in range(7):
                if not cache.hit(("k", i)):
                    misses += p > 0
                    cache.insert(("k", i), 100, dirty=False)
            for i in range(3):
                cache.insert(("o", p, i), 100, dirty=True, reader=i)
        return misses
    assert stream_misses(1.0) == 3 * 7
    assert stream_misses(0.5) == 0


def test_l2_lookups_forward_half_of_one_sms_misses_and_writes():
    # run 56: a stream each line of which one SM reads (or writes) once is looked up 1.5 times: half of its lines
    # live in the other partition, which looks them up again
    def program(cta):
        tile = buf(1000)
        yield Load(chunk(cta[0] * 1000, 1000), tile)
        yield Store(tile, DST.region(slice(cta[0] * 1000, (cta[0] + 1) * 1000)))

    counted = run(plan_of(launch_of([(i,) for i in range(4)], program)))["bytes"]
    assert counted.l2_fabric_miss == pytest.approx(0.5 * 4000)
    assert counted.l2_fabric_other == pytest.approx(0.5 * 4000)  # the writes
    one_partition = run(plan_of(launch_of([(i,) for i in range(4)], program)), l2_far_home_share=0.0)["bytes"]
    assert one_partition.l2_fabric_miss == one_partition.l2_fabric_other == 0.0


def test_l2_lookups_forward_a_line_both_sides_read_once_in_all():
    # a tile every CTA reads: its miss is forwarded with the far-home chance, and its first use by a second SM
    # (taken to be beside the other partition) once more; later hits stay beside their SM
    def program(cta):
        yield Load(chunk(0, 1000), buf(1000))

    counted = run(plan_of(launch_of([(i,) for i in range(6)], program)))["bytes"]
    assert counted.l2_fabric_miss == pytest.approx(500)
    assert counted.l2_fabric_other == pytest.approx(500)


def test_a_request_for_many_sms_forwards_its_misses_as_their_readers_would():
    # folded mode: a miss that stands for CTAs on several SMs reading one tile is looked up from both sides
    memory = MemorySystem(TINY)
    port = SmMemoryPort.load_store_units(TINY, 0)
    memory.read(port, 0.0, (("K", 0),), 1000, weight=8, ctas=8)
    assert memory.bytes.l2_fabric_miss == pytest.approx(1000 * (1 - 0.5 ** 8))
    memory.read(port, 0.0, (("K", 1),), 1000, weight=8, multiplicity=8, ctas=8)  # eight tiles, one CTA each
    assert memory.bytes.l2_fabric_miss == pytest.approx(1000 * (1 - 0.5 ** 8) + 0.5 * 8000)


def test_l2_reserved_room_comes_out_of_every_class_and_goes_back():
    cache = L2Cache(800, spread_bytes=80.0)
    before = [cache.class_bytes(c) for c in range(cache.classes)]
    cache.insert("k", 50, dirty=True)
    cls = next(c for c in range(cache.classes) if cache.contains("k"))
    assert cache.reserve(8 * before[cls]) == 50  # its class has no room left: the dirty line is written back
    assert not cache.contains("k")
    assert [cache.class_bytes(c) for c in range(cache.classes)] == \
        pytest.approx([max(0.0, b - before[cls]) for b in before])
    cache.reserve(-8 * before[cls])
    assert cache.class_bytes(cls) == pytest.approx(before[cls])


def test_register_spills_hold_l2_room_for_the_launch_and_count_as_writes():
    # a slot's stack frame is rewritten every iteration: it takes a private line's room out of the L2 while the launch
    # runs (whichever CTA runs on the slot), and its stores are L2 writes, half of them forwarded to the far partition
    from gpusim.ops import SpillStore

    def program(cta):
        for _ in range(3):
            yield SpillStore(100)

    interp = TimingInterpreter(dataclasses.replace(TINY, l2_private_line_share=0.5), exact=True)
    capacity = interp.memory.cache.class_bytes(0)
    seen = []
    original = interp.memory.write_frame

    def spy(port, t, nbytes, weight, new_room):
        seen.append(new_room)
        return original(port, t, nbytes, weight, new_room)

    interp.memory.write_frame = spy
    out = interp.run(plan_of(launch_of([(i,) for i in range(4)], program)))
    assert sorted(seen, reverse=True)[:2] == [50.0, 50.0] and sum(seen) == 100.0  # two slots, once each
    assert out["bytes"].l2_write == 4 * 3 * 100 and out["bytes"].l2_fabric_other == pytest.approx(600)
    assert out["bytes"].hbm_write == 0 and interp.memory.cache.class_bytes(0) == capacity  # given back at the end


def test_l2_private_line_share_is_checked():
    for value in (0.0, 1.5):
        with pytest.raises(InputError, match="l2_private_line_share"):
            dataclasses.replace(TINY, l2_private_line_share=value)


def test_the_l2_fill_counts_each_line_at_its_room():
    # what stand-in chunks count as other lines entering L2: a private read miss at its private room, a shared one
    # at its bytes, a dirtied line at a private line's room
    memory = MemorySystem(dataclasses.replace(TINY, l2_private_line_share=0.5))
    port = SmMemoryPort("sm0", 10**9, 1e9, sm_index=0)
    memory.read(port, 0.0, (("Q", 0),), 1000)
    assert memory._l2_fill_bytes() == 500
    memory.read(port, 0.0, (("K", 0),), 1000, weight=2.0, ctas=2)  # two CTAs read one K tile
    assert memory._l2_fill_bytes() == 1500
    memory.write(port, 0.0, (("O", 0),), 1000)
    assert memory._l2_fill_bytes() == 2000


def test_a_folded_request_for_more_ctas_than_tiles_reads_as_shared():
    port = SmMemoryPort("sm5", 1024, 64.0, sm_index=5)
    assert _reader(port, (("Q", 0),), 1) == 5  # exact mode: the CTA's SM
    assert _reader(port, (("Q", 0), ("Q", 1), ("Q", 2)), 3) == 5  # a private tile per CTA
    assert _reader(port, (("K", 0),), 4) == SHARED  # four CTAs read one K tile
    assert _reader(port, (("K", 0), ("K", 1)), 3) == SHARED  # a causal block whose walks meet on one tile


def test_a_folded_requests_keys_are_read_by_their_own_ctas_sms():
    # a causal block's two CTAs: the second reads at this step the tile the first will read later (one request,
    # two private tiles); when the first reads it, a second SM has used it, so it takes a shared line's room
    memory = MemorySystem(dataclasses.replace(TINY, l2_private_line_share=0.5))
    port = SmMemoryPort("sm0", 10**9, 1e9, sm_index=0)
    memory.read(port, 0.0, (("K", 1), ("K", 0)), 1000, weight=2.0, ctas=2)
    assert memory.cache.used_bytes == 1000  # two private lines
    memory.read(port, 10.0, (("K", 0), ("K", -1)), 1000, weight=2.0, ctas=2)
    assert memory.cache.used_bytes == 2000  # K 0 now shared, K -1 private
    assert _key_reader(SHARED, 3) == SHARED and _key_reader(5, 0) == 5


def test_l2_stand_in_lines_keep_their_room_when_aged_again():
    # a revisiting loop's stand-ins keep their tag: inserted again, they keep the room age gives them
    cache = L2Cache(10**6, private_share=0.5)
    cache.age(1000, 1000, tag="t", chunks=4, clean_room=0.5)
    assert cache.used_bytes == 1000  # clean at half room, dirty at a private line's
    cache.age(1000, 1000, tag="t", chunks=4, clean_room=0.5)
    assert cache.used_bytes == 1000
    # a private line read again by its SM at a new size keeps a private line's room
    cache.insert("q", 400, dirty=False, reader=1)
    cache.insert("q", 600, dirty=False, reader=1)
    assert cache.used_bytes == 1300


def test_stand_in_reads_take_the_room_of_the_tensors_they_stand_for():
    timing = TimingInterpreter(dataclasses.replace(TINY, l2_private_line_share=0.5), exact=True)
    assert timing._clean_room({"K": 300.0, "Q": 100.0}, {"K"}.__contains__) == pytest.approx(1 - 0.25 * 0.5)
    assert timing._clean_room({}, {"K"}.__contains__) == 1.0


def test_l2_cache_reinsert_updates_size_and_keeps_dirtiness():
    cache = L2Cache(1000)
    cache.insert("a", 400, dirty=True)
    cache.insert("a", 600, dirty=False)
    assert cache.used_bytes == 600
    assert cache.dirty_bytes() == 600
    assert cache.insert("b", 900, dirty=False) == 600  # a (dirty) evicted for b
    assert cache.used_bytes == 900


def test_l2_cache_keeps_a_tile_larger_than_itself():
    cache = L2Cache(1000)
    assert cache.insert("huge", 5000, dirty=True) == 0  # nothing else to evict; the tile stays
    assert cache.hit("huge")
    assert cache.insert("next", 10, dirty=False) == 5000


# ---------------------------------------------------------------------------------------------- servers
def test_server_reserve_arithmetic():
    server = Server("s", 10.0)  # 10 units per cycle
    assert server.reserve(0, 100) == 10
    assert server.reserve(5, 50) == 15  # queues behind the first
    assert server.reserve(100, 10) == 101  # idle at 100: starts at once
    assert server.reserve(7, 0) == 7  # no work, no wait
    assert server.busy_cycles == 16
    assert server.work == 160
    assert server.free_at == 101


def test_server_uses_idle_time_before_a_future_reservation():
    # a reservation made for t=500 must not delay work that arrives at t=0 while the server is idle
    server = Server("s", 1.0)
    assert server.reserve(500, 10) == 510
    assert server.reserve(0, 10) == 10
    assert server.reserve(0, 600) == 620  # fills 10..500, waits out 500..510, finishes the remaining 110
    assert server.busy_cycles == 620
    assert server.reserve(600, 5) == 625


def test_server_rejects_a_non_positive_rate():
    with pytest.raises(ValueError, match="rate"):
        Server("s", 0)


# ---------------------------------------------------------------------------------------------- folding
def test_choose_fold_factor():
    # largest divisor of the SM count that keeps >= MIN_SIMULATED_SMS SMs and enough representatives
    assert (MIN_SIMULATED_SMS, MIN_REPRESENTATIVES) == (4, 64)
    assert choose_fold_factor(132, 10000, 2) == 33  # 132 / 33 = 4 SMs simulated
    assert choose_fold_factor(132, 1000, 2) == 12  # 1000 / 12 = 84 representatives; 22 would leave 46
    assert choose_fold_factor(132, 200, 1) == 3  # more than a wave: 67 representatives
    assert choose_fold_factor(132, 200, 2) == 33  # one wave: the coarsest fold
    assert choose_fold_factor(132, 10, 1) == 6  # one CTA per block at least
    assert choose_fold_factor(132, 1, 1) == 1
    assert choose_fold_factor(8, 1000, 1) == 2
    assert choose_fold_factor(2, 1000, 1) == 1  # too few SMs to fold at all
    # unequal work: odd blocks whose representative's work is within 5% of the block's, or even ones within 1%
    assert choose_fold_factor(132, 10000, 1, [10.0] * 10000) == 33
    assert choose_fold_factor(132, 640, 1, [1.0 + i for i in range(640)]) == 6  # 9 of 1920 off per block
    assert choose_fold_factor(132, 640, 1, [1.0 + i % 2 for i in range(640)]) == 1  # every block 33% off
    assert choose_fold_factor(132, 640, 1, [100.0 + i % 2 for i in range(640)]) == 6  # 3 of 603 off


def test_fold_grid_weights_sum_to_the_grid_and_representatives_are_block_middles():
    grid = list(range(10))
    reps = fold_grid(grid, lambda cta: {}, 4)
    assert [r.cta for r in reps] == [2, 6, 9]  # blocks [0..3], [4..7], [8, 9]
    assert [r.weight for r in reps] == [4, 4, 2]
    assert sum(r.weight for r in reps) == len(grid)


def test_fold_grid_without_folding_is_the_grid():
    reps = fold_grid([(0, 0), (1, 0), (0, 1)], lambda cta: {"K": cta[1]}, 1)
    assert [(r.cta, r.weight) for r in reps] == [((0, 0), 1), ((1, 0), 1), ((0, 1), 1)]
    ref = GlobalTensor("K", (2, 8), "bf16").region(0, slice(0, 4))
    assert reps[0].l2_keys(ref) == ((ref.key,), 1, None)


def test_fold_grid_substitutes_the_shared_keys_of_the_block():
    # 10 CTAs; K rows are shared by pairs of CTAs (key cta // 2); Q is private
    k = GlobalTensor("K", (5, 16), "bf16")
    q = GlobalTensor("Q", (10, 16), "bf16")
    reps = fold_grid(list(range(10)), lambda cta: {"K": cta // 2}, 4)
    first = reps[0]  # block 0..3, representative 2 (key 1); the block also holds key 0
    ref = k.region(1, slice(0, 8))
    keys, multiplicity, _ = first.l2_keys(ref)
    assert keys == (("K", (1, (0, 8))), ("K", (0, (0, 8))))
    assert multiplicity == 1
    # a private tensor: the representative's tile stands for one tile per CTA of the block, each its own line
    keys, multiplicity, _ = first.l2_keys(q.region(2))
    assert keys[0] == ("Q", (2, (0, 16))) and len(set(keys)) == 4 and multiplicity == 1
    # a shared tensor read at an index that is not the representative's key: counted once per distinct key
    assert first.l2_keys(k.region(4, slice(0, 8))) == ((("K", (4, (0, 8))),), 2, None)
    last = reps[2]  # block 8, 9: one key (4), nothing to substitute
    assert last.l2_keys(k.region(4)) == ((("K", (4, (0, 16))),), 1, None)


def test_representative_with_tuple_keys():
    k = GlobalTensor("K", (2, 3, 8, 4), "bf16")
    rep = Representative((0, 1, 1), 3, {"K": ((1, 1), ((1, 0), (0, 2)))})
    keys, multiplicity, _ = rep.l2_keys(k.region(1, 1, slice(0, 4)))
    assert multiplicity == 1
    assert [key[1][:2] for key in keys] == [(1, 1), (1, 0), (0, 2)]


def test_region_keys_name_the_real_tiles_with_their_sizes():
    # rows of a tensor owned by each CTA (10 rows in tiles of 4: the last tile holds 2): the representative's
    # read stands for its siblings' own regions, the partial one with its real size
    o = GlobalTensor("O", (10, 8), "bf16")

    def shared_by(cta):
        return {"O": RegionKey.of_region(o.region(slice(4 * cta, 4 * cta + 4)))}
    rep = fold_grid([0, 1, 2], shared_by, 3)[0]
    keys, multiplicity, key_bytes = rep.l2_keys(o.region(slice(4, 8)))
    assert [key[1][0] for key in keys] == [(4, 8), (0, 4), (8, 10)]
    assert multiplicity == 1 and key_bytes == (64, 64, 32)


def test_walked_ranges_stand_for_each_siblings_tile_at_the_same_step():
    # three CTAs walk K from their diagonal tile down (tiles of 4 keys): CTA i walks tiles i .. 0. At the step the
    # representative (CTA 1) reads tile 1, CTA 2 reads tile 2 and CTA 0 tile 0; one step on, CTA 0 is done
    k = GlobalTensor("K", (2, 16), "bf16")

    def shared_by(cta):
        return {"K": RegionKey({0: 0, 1: WalkedRange(0, 4 * (cta + 1), 4, descending=True)})}
    rep = fold_grid([0, 1, 2], shared_by, 3)[0]
    assert rep.cta == 1
    keys, multiplicity, _ = rep.l2_keys(k.region(0, slice(4, 8)))
    assert [key[1][1] for key in keys] == [(4, 8), (0, 4), (8, 12)] and multiplicity == 1
    keys, _, _ = rep.l2_keys(k.region(0, slice(0, 4)))
    assert [key[1][1] for key in keys] == [(0, 4), (4, 8)]
    # started a step apart in grid order: at the representative's first step CTA 2 has not started and CTA 0's walk
    # is over; at its second CTA 2 reads its diagonal tile
    rep.lag_steps = 1.0
    keys, _, _ = rep.l2_keys(k.region(0, slice(4, 8)))
    assert [key[1][1] for key in keys] == [(4, 8)]
    keys, _, _ = rep.l2_keys(k.region(0, slice(0, 4)))
    assert [key[1][1] for key in keys] == [(0, 4), (8, 12)]
    # an ascending walk (CTA i walks tiles 0 .. i): at the representative's tile 1, CTA 2 reads tile 1 too and CTA 0
    # is done; a step behind, CTA 2 reads tile 0
    up = fold_grid([0, 1, 2], lambda cta: {"K": RegionKey({0: 0, 1: WalkedRange(0, 4 * (cta + 1), 4)})}, 3)[0]
    keys, _, _ = up.l2_keys(k.region(0, slice(4, 8)))
    assert [key[1][1] for key in keys] == [(4, 8)]
    up.lag_steps = 1.0
    keys, _, _ = up.l2_keys(k.region(0, slice(4, 8)))
    assert [key[1][1] for key in keys] == [(4, 8), (0, 4)]


def test_walked_ranges_map_a_partial_last_tile_onto_whole_ones_and_lag_identical_walks():
    # 14 keys in tiles of 4: the last tile holds 2. The representative (CTA 3) reads it first; CTA 2 reads its own
    # diagonal tile then, a whole one
    k = GlobalTensor("K", (2, 14), "bf16")
    down = fold_grid([2, 3, 4], lambda cta: {"K": RegionKey({0: 0, 1: WalkedRange(0, 4 * (cta + 1), 4, True)})}, 3)[0]
    keys, _, key_bytes = down.l2_keys(k.region(0, slice(12, 16)))
    assert [key[1][1] for key in keys] == [(12, 14), (8, 12)] and key_bytes == (4, 8)
    # three CTAs walk the same keys up, a step apart: at the representative's last (partial) tile, the CTA before it
    # is done and the one after it reads the whole tile before
    same = fold_grid([0, 1, 2], lambda cta: {"K": RegionKey({0: 0, 1: WalkedRange(0, 16, 4)})}, 3)[0]
    assert same.l2_keys(k.region(0, slice(12, 16)))[0] == (("K", (0, (12, 14))),)
    same.lag_steps = 1.0
    keys, _, _ = same.l2_keys(k.region(0, slice(12, 16)))
    assert [key[1][1] for key in keys] == [(12, 14), (8, 12)]


def test_walking_siblings_drift_from_the_representative_at_their_own_pace():
    # three CTAs walk the same 40 tiles up; with alike paces the siblings read the representative's tile at every
    # step. With paces that differ (cta_pace_spread), each sibling falls behind or gets ahead by its own deviate times
    # the spread per step: none at the first step, deviate x 0.1 x 30 tiles after 30 steps. A block's deviates are
    # normal quantiles (two siblings: -0.67 and +0.67 standard deviations), dealt by a hash of each sibling
    from gpusim.engine.folding import _pace_deviates

    k = GlobalTensor("K", (2, 160), "bf16")
    walk = lambda cta: {"K": RegionKey({0: 0, 1: WalkedRange(0, 160, 4)})}  # noqa: E731
    rep = fold_grid([0, 1, 2], walk, 3)[0]
    assert rep.l2_keys(k.region(0, slice(120, 124)))[0] == (("K", (0, (120, 124))),)
    rep.pace_spread = 0.1
    assert rep.l2_keys(k.region(0, slice(0, 4)))[0] == (("K", (0, (0, 4))),)
    keys, _, _ = rep.l2_keys(k.region(0, slice(120, 124)))
    assert sorted((120 - key[1][1][0]) // 4 for key in keys[1:]) == [-2, 2]  # 0.674 x 0.1 x 30 = 2.02 tiles
    assert sorted(_pace_deviates((("a", -1), ("b", 1)))) == pytest.approx([-0.6745, 0.6745], abs=1e-4)
    assert sorted(_pace_deviates((("a", -1), ("b", 1), ("c", 2)))) == pytest.approx([-0.9674, 0.0, 0.9674], abs=1e-4)


def test_steady_dispatch_lag_is_mean_work_over_concurrent_ctas():
    # CTAs of 10 and 30 steps, 4 at a time: a CTA ends (and the next starts) every 20 / 4 = 5 steps of a walk
    assert steady_dispatch_lag([10, 30, 10, 30], 4) == 5.0
    assert steady_dispatch_lag(None, 4) == 0.0


def test_folded_busy_fractions_count_only_the_sms_a_one_wave_launch_uses():
    # 112 uneven split CTAs on 132 SMs: folded, each simulated SM's busy time stands for its blocks' real
    # work, not for `fold` busy SMs
    problem = AttentionProblem(batch=2, heads=32, kv_heads=8, seq_len=1, kv_len=8192, head_dim=128)
    folded, exact = folded_and_exact("flash_decoding", problem)
    assert folded.unit_busy["tensor"] == pytest.approx(exact.unit_busy["tensor"], rel=0.08)


def test_uneven_blocks_scale_the_representatives_demand_by_their_work():
    # works 1, 1, 4: a block of three moves 6 units; in a one-wave launch its longest CTA represents it
    reps = fold_grid([0, 1, 2], lambda cta: {}, 3, works=[1, 1, 4], one_wave=True)
    assert reps[0].cta == 2 and reps[0].count == 3 and reps[0].weight == pytest.approx(1.5)
    middle = fold_grid([0, 1, 2], lambda cta: {}, 3, works=[1, 2, 3])[0]
    assert middle.cta == 1 and middle.weight == pytest.approx(3.0)


# ---------------------------------------------------------------------------------------------- folded vs exact
@pytest.mark.parametrize("problem", [
    AttentionProblem(batch=1, heads=4, seq_len=1024, head_dim=64),  # 32 CTAs, one wave
    AttentionProblem(batch=2, heads=16, seq_len=2048, head_dim=64),  # 512 CTAs, 2 waves
    AttentionProblem(batch=1, heads=8, kv_heads=2, seq_len=1024, head_dim=128),
], ids=lambda p: p.describe())
def test_folded_agrees_with_exact_on_fa2(problem):
    folded, exact = folded_and_exact("fa2", problem)
    assert folded.launches[0].fold_factor > 1
    assert folded.time_s == pytest.approx(exact.time_s, rel=0.03)
    assert folded.hbm_bytes == pytest.approx(exact.hbm_bytes, rel=0.01)
    assert folded.flops == exact.flops


def test_folded_agrees_with_exact_on_causal_fa2():
    problem = AttentionProblem(batch=1, heads=4, seq_len=1024, head_dim=64, causal=True)
    folded, exact = folded_and_exact("fa2", problem)
    assert folded.time_s == pytest.approx(exact.time_s, rel=0.03)
    assert folded.hbm_bytes == pytest.approx(exact.hbm_bytes, rel=0.01)


def test_async_mma_completion_latency_adds_after_the_tensor_work():
    # a 1024x1024-FLOP wgmma on a 1024 FLOP/clk tensor core: 1024 cycles of work, then 300 cycles of completion
    # latency before the issuing warp sees it; the tensor core itself is free after 1024
    hw = dataclasses.replace(TINY, async_mma_latency_cycles=300.0)
    a, b, c = Tile((16, 32), "bf16"), Tile((32, 1024), "bf16"), Tile((16, 1024), "fp32")

    def program(cta):
        yield Mma(a, b, c, "wgmma")

    out = run(plan_of(launch_of([0], program)), hw)
    assert out["cycles"] == 1024 + 300
    assert out["busy"]["tensor"] == pytest.approx(1024 / (2 * 1324))



def test_one_warps_async_mmas_run_in_issue_order():
    # two 1024-cycle wgmmas issued back to back by one warp: the first completes at 1024, not side by side
    # with the second at 2048, so the warp can work on its result while the second runs
    a, b = Tile((16, 32), "bf16"), Tile((32, 1024), "bf16")

    def issuer(cta):
        first = yield Mma(a, b, Tile((16, 1024), "fp32"), "wgmma", wait=False)
        second = yield Mma(a, b, Tile((16, 1024), "fp32"), "wgmma", wait=False)
        yield Wait(first)
        yield Wait(second)

    out = run(plan_of(launch_of([0], issuer)), trace=True)
    assert finished(out, "mma") == [1024, 2048]
    assert out["cycles"] == 2048


@pytest.mark.parametrize("kernel, problem", [
    ("fa3", AttentionProblem(batch=1, heads=8, seq_len=2048, head_dim=128)),
    ("flash_decoding", AttentionProblem(batch=4, heads=32, kv_heads=8, seq_len=1, kv_len=8192, head_dim=128)),
])
def test_folded_agrees_with_exact_on_hopper_kernels(kernel, problem):
    folded, exact = folded_and_exact(kernel, problem)
    assert folded.launches[0].fold_factor > 1
    assert folded.time_s == pytest.approx(exact.time_s, rel=0.03)
    assert folded.hbm_bytes == pytest.approx(exact.hbm_bytes, rel=0.01)


@pytest.mark.parametrize("problem", [
    AttentionProblem(batch=1, heads=4, seq_len=4096, head_dim=128),    # each head's O fits L2: re-read hits
    AttentionProblem(batch=1, heads=64, seq_len=2048, head_dim=128),   # the heads' O outgrow L2: streams
    # (at 24-32 heads their re-walked Q and O, private lines, sit at the L2's edge: folded mode reads up to 4.4% more,
    # all in the last outer step, whose O writes evict tiles that exact mode keeps)
])
def test_sampled_fa1_loops_agree_with_exact(problem, monkeypatch):
    # FA1's inner loop walks the same Q, O, l, m tiles on every outer step: its sampled iterations keep
    # the same L2 stand-in lines, so a working set that fits stays resident (loops of 16-32 iterations: sampled
    # from 21 on here, as they were before SAMPLE_ABOVE rose to 64)
    monkeypatch.setattr(loop_sampling, "SAMPLE_ABOVE", 20)
    folded, exact = folded_and_exact("fa1", problem)
    assert folded.time_s == pytest.approx(exact.time_s, rel=0.03)
    assert folded.hbm_bytes == pytest.approx(exact.hbm_bytes, rel=0.01)
    assert folded.sim_wall_s < exact.sim_wall_s


# ---------------------------------------------------------------------------------------------- CTA drift
def _stream_reads(jitter: float, ctas: int) -> float:
    """Extra DRAM reads of a K tensor every CTA streams (one shared key), 3 window waves of 10 CTAs that
    read it once per wave, each CTA streaming 2x the L2."""
    drift = Drift(jitter, stream_bytes_per_cta=200.0, l2_bytes=100.0)
    grid = list(range(ctas))
    return extrapolated_reads({"K": 3.0}, GridHeads(grid, lambda c: {"K": 0}), 30, {"K"}, slots=10, drift=drift)


def test_in_step_ctas_read_a_streamed_tensor_once_per_wave():
    assert _stream_reads(0.0, 100) == pytest.approx(7.0)  # 7 more waves, one pass each


def test_a_wave_that_straddles_two_heads_walks_both_streams_where_they_outgrow_the_l2():
    # 2 heads of 35 CTAs, 10 per wave: wave 3 runs 5 CTAs of each head, and each CTA walks its head's whole K, so in
    # step that wave reads both heads' K (the H200: 9 passes at two heads of 131k tokens, d = 64, in 7.8 waves)
    head = lambda cta: {"K": cta // 35}  # noqa: E731
    grid = list(range(70))
    outgrows = Drift(0.0, stream_bytes_per_cta=200.0, l2_bytes=100.0)
    assert outgrows.walks_by_wave(grid, head, "K", 10) == [1, 1, 1, 2, 1, 1, 1]
    assert extrapolated_reads({"K": 3.0}, GridHeads(grid, head), 30, {"K"}, slots=10, drift=outgrows) == \
        pytest.approx(5.0)
    # a stream the L2 keeps is not read again by the wave that walks it a second time
    fits = Drift(0.0, stream_bytes_per_cta=80.0, l2_bytes=100.0)
    assert fits.walks_by_wave(grid, head, "K", 10) == [1, 1, 1, 1, 1, 1, 1]


def test_a_partial_last_wave_walks_the_whole_stream_where_it_outgrows_the_l2():
    one_head = lambda cta: {"K": 0}  # noqa: E731
    grid = list(range(25))  # the last wave is half full; each of its CTAs still walks the whole K
    assert Drift(0.0, 200.0, 100.0).walks_by_wave(grid, one_head, "K", 10)[-1] == 1.0
    assert Drift(0.0, 80.0, 100.0).walks_by_wave(grid, one_head, "K", 10)[-1] == 0.5
    # on the L2's gradual edge, in between
    assert 0.5 < Drift(0.0, 100.0, 100.0, l2_spread_bytes=10.0).walks_by_wave(grid, one_head, "K", 10)[-1] < 1.0


def test_the_other_data_a_walk_passes_through_the_l2_pushes_the_stream_out():
    # a stream of 90 bytes fits an L2 of 100 alone; with the 20 bytes of Q and O room its CTAs read and dirty meanwhile,
    # a tile is 110 bytes deep when it is read again: two heads' walks in one wave are two DRAM passes (two heads of
    # 131k tokens, d = 64: 33.5 MB of K/V and 5.5 MB of other room per walk, 4.9 walks extrapolated against 5.0 wave by
    # wave without it: thirty-second session)
    head = lambda cta: {"K": cta // 35}  # noqa: E731
    grid = list(range(70))
    alone = Drift(0.0, stream_bytes_per_cta=90.0, l2_bytes=100.0, l2_spread_bytes=5.0)
    with_others = Drift(0.0, stream_bytes_per_cta=90.0, l2_bytes=100.0, l2_spread_bytes=5.0, other_bytes_per_walk=20.0)
    assert alone.outgrows_l2() < 0.03 and with_others.outgrows_l2() > 0.97
    assert with_others.walks_by_wave(grid, head, "K", 10)[3] == pytest.approx(2.0, abs=0.03)
    # and partners half a CTA apart re-read the tiles that a walk of the stream and half a CTA's other data push past
    # the L2's edge: half of them on the edge itself, all of them with 40 bytes of other data per CTA on top
    partners = dict(ctas_per_sm=2, partner_offset_per_wave=1.0, l2_spread_bytes=5.0)
    assert Drift(0.0, 100.0, 100.0, **partners).partner_passes(100) == pytest.approx(1.5, abs=0.01)
    assert Drift(0.0, 100.0, 100.0, other_bytes_per_walk=40.0, **partners).partner_passes(100) == \
        pytest.approx(2.0, abs=0.01)


def test_drifting_ctas_reread_a_streamed_tensor_more_as_waves_go_by():
    # passes per wave = max(1, min(MAX_BAND_CTAS, 2 jitter sqrt(k)) x 200 / 100): with jitter 0.1 the band outgrows
    # the L2 after 6 waves, so later waves take more than one pass, and more so the longer the launch (up to the cap)
    drift = Drift(0.1, stream_bytes_per_cta=200.0, l2_bytes=100.0)
    assert drift.passes(4) == 1.0
    assert drift.passes(25) == pytest.approx(2.0)
    assert _stream_reads(0.1, 100) > 7.0
    per_wave = [_stream_reads(0.1, n) / (n / 10 - 3) for n in (100, 400, 1600)]
    assert per_wave == sorted(per_wave)


def test_drift_never_spreads_the_running_ctas_over_more_than_one_cta():
    # the CTAs running together all started within the last CTA's duration: however long the launch, a wave takes at
    # most one pass per L2-sized slice of one CTA's stream
    drift = Drift(0.1, stream_bytes_per_cta=200.0, l2_bytes=100.0)
    assert drift.passes(100) == drift.passes(10_000) == pytest.approx(MAX_BAND_CTAS * 200.0 / 100.0)
    assert Drift(0.1, stream_bytes_per_cta=200.0, l2_bytes=100.0, window_passes=1.5).passes(10_000) == \
        pytest.approx(MAX_BAND_CTAS * 2.0 / 1.5)


def test_drift_adds_passes_only_past_the_band_the_simulated_waves_already_had():
    # the simulated waves made 1.5 passes each (co-resident CTAs out of step): drift's 2 passes at wave 25 are
    # 2 / 1.5 of a simulated wave's, and its 1.2 at wave 9 add nothing
    drift = Drift(0.1, stream_bytes_per_cta=200.0, l2_bytes=100.0, window_passes=1.5)
    assert drift.passes(25) == pytest.approx(2.0 / 1.5)
    assert drift.passes(9) == 1.0
    assert Drift(0.1, 200.0, 100.0, window_passes=0.5).passes(25) == pytest.approx(2.0)  # below 1 counts as 1


def test_partners_that_move_apart_re_read_once_their_gap_outgrows_the_l2():
    # two CTAs per SM moving apart by 0.05 of a CTA per wave at first, slowing as they near half a CTA: a tile the
    # leading CTAs read is read by the trailing ones after 2 x offset x 200 bytes of the stream (the offset reaches
    # 0.25 after 5.5 waves: 100 bytes, the L2's capacity, so half of such tiles have been evicted on its gradual edge);
    # once the offset has grown to a half, the trailing CTAs re-read all of it: two passes per wave
    drift = Drift(0.0, stream_bytes_per_cta=200.0, l2_bytes=100.0, ctas_per_sm=2, partner_offset_per_wave=0.05,
                  l2_spread_bytes=10.0)
    assert drift.partner_offset(1) == 0.0 and drift.partner_offset(100) == pytest.approx(0.5)
    assert drift.partner_offset(2) == pytest.approx(0.05, rel=0.01)  # the measured rate, at first
    assert drift.partner_offset(6) == pytest.approx(0.5 * math.tanh(0.5))  # 0.23: slower than 0.05 a wave
    assert drift.passes(2) == pytest.approx(1.0, abs=1e-6)
    assert 1.1 < drift.passes(6) < 1.5 < drift.passes(7) < 1.9
    assert drift.passes(40) == pytest.approx(2.0)
    # one CTA per SM, or partners in step: no such passes
    assert Drift(0.0, 200.0, 100.0, ctas_per_sm=1, partner_offset_per_wave=0.05).passes(40) == 1.0
    assert Drift(0.0, 200.0, 100.0, ctas_per_sm=2).passes(40) == 1.0
    # a stream whose half fits the L2 is re-read by nobody however far the partners move apart
    assert Drift(0.0, 80.0, 100.0, ctas_per_sm=2, partner_offset_per_wave=0.05, l2_spread_bytes=5.0).passes(40) == \
        pytest.approx(1.0, abs=1e-4)


def test_the_meter_measures_how_far_apart_partners_start():
    # two CTAs per SM; on SM 0 the second pair starts 0.1 of a CTA apart, on SM 1 0.3 (0.7 one way, 0.3 the other)
    meter = WaveMeter(4, dict)
    for sm, cycle in ((0, 0.0), (0, 0.0), (1, 0.0), (1, 0.0), (0, 100.0), (0, 110.0), (1, 100.0), (1, 170.0)):
        meter.cta_started(ReadTally(), sm, cycle)
        meter.cta_finished(cycle + 100.0, cycle)
    assert meter.partner_offset(2) == pytest.approx((0.0 + 0.1 + 0.0 + 0.3) / 4)
    assert meter.partner_offset(1) == 0.0


def test_a_long_launch_measures_its_passes_per_stream(monkeypatch):
    # FA2 at 64k tokens streams each head's 32 MiB of K/V past the L2: the extrapolation's drift gets one CTA's
    # stream (K and V of its head) and the simulated waves' DRAM passes over it, about one per wave
    from gpusim.engine import timing
    made = []
    monkeypatch.setattr(timing, "Drift", lambda *a, **k: made.append(Drift(*a, **k)) or made[-1])
    simulate("fa2", AttentionProblem(batch=1, heads=4, seq_len=65536, head_dim=128), H200)
    (drift,) = made
    assert drift.stream_bytes_per_cta == 2 * 65536 * 128 * 2
    assert 0.8 < drift.window_passes < 2.5


def test_drift_leaves_tensors_that_l2_keeps_alone():
    drift = Drift(0.5, stream_bytes_per_cta=200.0, l2_bytes=100.0)
    kept = extrapolated_reads({"K": 3.0}, GridHeads(list(range(100)), lambda c: {"K": c // 50}), 30, set(), slots=10,
                              drift=drift)
    assert kept == pytest.approx(3.0)  # two keys, the window saw one: read once more


def test_rereads_of_the_launch_start_are_not_extrapolated():
    # a shared tensor L2 keeps: the window read 2 keys for 3.0 bytes, 1.0 of them re-reads while its CTAs
    # fell out of lockstep; the rest of the grid has 2 more keys, read once each (2.0), not 2 x 1.5
    grid = list(range(100))
    heads = GridHeads(grid, lambda c: {"K": c // 25})
    extra = extrapolated_reads({"K": 3.0}, heads, 50, set(), window_rereads={"K": 1.0})
    assert extra == pytest.approx(2.0)


def test_rereads_at_head_boundaries_are_extrapolated_per_boundary():
    # heads of 20 CTAs, 10 per wave: the window (60 CTAs) read 3 heads once (3.0) and re-read 0.4 of them after its
    # 2 boundaries (each straddling wave's two walks evict some of the new head); the rest of the grid adds 2 heads
    # (2.0) and 2 boundaries (0.4)
    grid = list(range(100))
    head = lambda c: {"K": c // 20}  # noqa: E731
    extra = extrapolated_reads({"K": 3.4}, GridHeads(grid, head), 60, set(), slots=10, window_rereads={"K": 0.4})
    assert extra == pytest.approx(2.4)
    # heads shorter than a wave: the window's re-reads are its start's, not the boundaries' (as without slots)
    assert extrapolated_reads({"K": 3.4}, GridHeads(grid, head), 60, set(), slots=30, window_rereads={"K": 0.4}) == \
        pytest.approx(2.0)


def test_grid_heads_walk_the_grid_once_for_each_shared_tensors_keys_and_boundaries():
    # GQA: 4 query heads of 5 CTAs share each K/V head; Q is per query head
    heads = GridHeads(list(range(40)), lambda c: {"K": c // 20, "Q": c // 5})
    assert heads.keys == {"K": {0, 1}, "Q": set(range(8))}
    assert heads.boundaries == {"K": [20], "Q": [5, 10, 15, 20, 25, 30, 35]}
    assert heads.fewest_head_ctas("K") == 20 and heads.fewest_head_ctas("Q") == 5
    assert GridHeads(list(range(7)), lambda c: {"K": 0}).fewest_head_ctas("K") == 0  # one head: no boundary


def test_a_stream_the_l2_keeps_between_head_boundaries_is_not_extrapolated_per_walk():
    grid = list(range(100))
    head = lambda c: {"K": c // 20}  # noqa: E731
    fits = Drift(0.0, stream_bytes_per_cta=50.0, l2_bytes=100.0, other_bytes_per_walk=10.0)
    outgrows = Drift(0.0, stream_bytes_per_cta=200.0, l2_bytes=100.0)
    # heads of 20 CTAs, 10 per wave, whose K fits the L2: its re-reads come from the boundaries
    assert kept_between_boundaries(GridHeads(grid, head), "K", 10, fits)
    # K that outgrows the L2 is re-read on every walk; heads shorter than a wave re-read on every wave
    assert not kept_between_boundaries(GridHeads(grid, head), "K", 10, outgrows)
    assert not kept_between_boundaries(GridHeads(grid, head), "K", 30, fits)
    # one head has no boundaries to re-read at: what its window re-read stays a stream
    assert not kept_between_boundaries(GridHeads(grid, lambda c: {"K": 0}), "K", 10, fits)


def test_a_kept_streams_steady_rereads_recur_every_wave_and_the_rest_at_each_boundary():
    # heads of 45 CTAs, 10 per wave, 120 CTAs: the window's 7 waves (70 CTAs) read 2 heads once (2.0) and re-read 1.0:
    # 0.1 in each of its 6 waves after the first (its last, with no boundary in it or the wave before, re-read 0.1)
    # and 0.4 at its one boundary. The 5 waves after it re-read 0.1 each, the boundary at 90 0.4 more, and the third
    # head is read once
    grid = list(range(120))
    head = lambda c: {"K": c // 45}  # noqa: E731
    assert last_waves_hold_no_boundary(GridHeads(grid, head), "K", 10, 7)  # waves 6 and 7: CTAs 50-69
    assert not last_waves_hold_no_boundary(GridHeads(grid, head), "K", 10, 6)  # wave 5 (CTAs 40-49) straddles it
    extra = extrapolated_reads({"K": 3.0}, GridHeads(grid, head), 70, set(), slots=10, window_rereads={"K": 1.0},
                               steady_rereads={"K": 0.1})
    assert extra == pytest.approx(1.0 + 0.5 + 0.4)


def test_tallied_reads_are_every_simulated_ctas_dram_reads():
    # validation/per_wave_reads.py sums them per wave: together they are the launch's DRAM reads of each tensor
    hw = get_preset("h200")
    problem = AttentionProblem(batch=8, heads=16, seq_len=2048, head_dim=128)
    interpreter = TimingInterpreter(hw, extrapolate=False, tally_reads=True)
    interpreter.run(get_kernel("fa2").build_plan(problem, hw, None))
    assert len(interpreter.cta_reads) == interpreter.launch_stats[0].simulated_ctas
    for tensor, nbytes in interpreter.memory.hbm_read_by_tensor.items():
        assert sum(tally.dram.get(tensor, 0.0) for _, tally in interpreter.cta_reads) == pytest.approx(nbytes)


def test_the_window_covers_the_first_head_boundary_and_the_wave_after_it():
    grid = list(range(200))
    # heads of 45 CTAs, 10 per wave: wave 5 holds the second head's first CTA; the window runs through wave 6, whose
    # re-reads the boundary costs, and wave 7, a steady last wave
    assert window_waves(grid, lambda c: {"K": c // 45}, 10) == 7
    # the usual window already holds a boundary at wave 2 and the wave after it; one head, or heads shorter than a
    # wave, have nothing to wait for
    assert window_waves(grid, lambda c: {"K": c // 15}, 10) == SIMULATED_WAVES
    assert window_waves(grid, lambda c: {"K": 0}, 10) == SIMULATED_WAVES
    assert window_waves(grid, lambda c: {"K": c // 5}, 10) == SIMULATED_WAVES
    # K/V that outgrows the L2 is streamed: its walks count the straddles, and the window stays as it was
    head = lambda c: {"K": c // 45, "V": c // 45}  # noqa: E731
    assert window_waves(grid, head, 10, {"K": 200.0, "V": 200.0, "Q": 1e6}, l2_bytes=100.0) == 7  # 80 bytes a head
    assert window_waves(grid, head, 10, {"K": 400.0, "V": 400.0}, l2_bytes=100.0) == SIMULATED_WAVES  # 160


@pytest.mark.parametrize("heads, seq_len, rel", [(4, 65536, 0.01), (2, 98304, 0.02)])
def test_a_launch_extrapolated_after_a_head_boundary_reads_what_every_wave_reads(heads, seq_len, rel):
    # cuDNN's forward, d = 64, where each head's K/V fits the L2 alone and its CTAs span several waves.
    # 4 heads of 65k tokens: the wave after one that straddles two heads re-reads some of the new head (3.6 MB a
    # boundary); the window runs through the first such wave, and the extrapolation counts it at each later boundary
    # (before: 10% fewer reads).
    # 2 heads of 98k tokens (25 MB of K/V a head, 2.9 waves): every wave also re-reads 1.6 MB of K, which recurs in
    # every later wave. Counted as a DRAM pass per walk of the window's reads that was 24% over every wave's reads;
    # per head and per boundary alone, 9% under (thirty-third session)
    problem = AttentionProblem(batch=1, heads=heads, seq_len=seq_len, head_dim=64)
    options = {**CUDNN_FPROP_TILES, **CUDNN_FPROP_SOFTMAX_EXTRA}
    extrapolated = simulate("fa3", problem, "h200", options)
    every_wave = simulate("fa3", problem, "h200", options, extrapolate=False)
    assert extrapolated.launches[0].simulated_ctas < every_wave.launches[0].simulated_ctas
    assert extrapolated.hbm_read_bytes == pytest.approx(every_wave.hbm_read_bytes, rel=rel)


@pytest.mark.slow
def test_folded_agrees_with_exact_on_many_waves_of_fa2():
    # eight waves of two co-resident CTAs per SM: the folded run simulates three and extrapolates the rest;
    # the re-reads of its start and the mix of tiles its last wave leaves in L2 must not skew the bytes
    problem = AttentionProblem(batch=8, heads=16, seq_len=2048, head_dim=128)
    folded, exact = folded_and_exact("fa2", problem)
    assert folded.hbm_read_bytes == pytest.approx(exact.hbm_read_bytes, rel=0.01)
    assert folded.hbm_bytes == pytest.approx(exact.hbm_bytes, rel=0.01)
    # write-backs alone: the h200's L2 classes (a gradual capacity edge) hash the tiles each mode simulates, and
    # the dirty O tiles the last wave leaves in them (not written back by the launch's end) differ: +3.4%, 1.9 MB
    # of the 67 MB of O (+1.0% with the scheduler's share at 0.6), a known residual of folded mode's ending; the
    # launch's bytes stay within 0.4%
    assert folded.hbm_write_bytes == pytest.approx(exact.hbm_write_bytes, rel=0.04)
    assert folded.time_s == pytest.approx(exact.time_s, rel=0.03)


def test_a_folded_launch_without_extrapolation_simulates_every_wave():
    # 8 waves of FA2: extrapolated, 3 are simulated; with extrapolate=False all of them, and the two agree (the
    # benchmark's folded_vs_exact.py prints how closely on long launches)
    problem = AttentionProblem(batch=8, heads=16, seq_len=2048, head_dim=128)
    extrapolated = simulate("fa2", problem, "h200")
    every_wave = simulate("fa2", problem, "h200", extrapolate=False)
    assert every_wave.launches[0].simulated_ctas > 2 * extrapolated.launches[0].simulated_ctas
    assert every_wave.hbm_bytes == pytest.approx(extrapolated.hbm_bytes, rel=0.02)
    assert every_wave.time_s == pytest.approx(extrapolated.time_s, rel=0.03)


@pytest.mark.slow
@pytest.mark.parametrize("problem", [
    AttentionProblem(batch=8, heads=32, kv_heads=8, seq_len=1, kv_len=65536, head_dim=128),   # HBM-bound walk
    AttentionProblem(batch=1, heads=32, kv_heads=8, seq_len=1, kv_len=131072, head_dim=128),  # 112 of 132 SMs
])
def test_folded_one_wave_decode_agrees_with_exact(problem):
    # one wave: every loop iteration runs (no sampling), so the CTAs' finishing order matches exact mode
    folded, exact = folded_and_exact("flash_decoding", problem)
    assert folded.time_s == pytest.approx(exact.time_s, rel=0.03)
    assert folded.hbm_bytes == pytest.approx(exact.hbm_bytes, rel=0.01)


def test_folded_agrees_with_exact_on_naive():
    # the GEMMs' operand tiles are keyed by where they sit in the region index (RegionKey), so a
    # representative's read stands for exactly the distinct Q and K tiles of its block
    problem = AttentionProblem(batch=1, heads=8, seq_len=2048, head_dim=64)
    folded, exact = folded_and_exact("naive", problem)
    assert folded.time_s == pytest.approx(exact.time_s, rel=0.03)
    assert folded.hbm_read_bytes == pytest.approx(exact.hbm_read_bytes, rel=0.01)
    assert folded.hbm_bytes == pytest.approx(exact.hbm_bytes, rel=0.01)


def test_one_wave_loops_run_in_full_within_their_budget():
    assert FullRuns(0).plan(100, sample=True).state is not None  # not one wave: sampled
    assert FullRuns(4).plan(LAST_WAVE_FULL_ITERATIONS // 4, sample=True).state is None
    assert FullRuns(4).plan(LAST_WAVE_FULL_ITERATIONS // 4 + 1, sample=True).state is not None
    assert FullRuns(1).plan(100, sample=False).state is None  # exact mode


def test_a_tail_wave_after_full_waves_runs_in_full_within_its_larger_budget():
    per_rep = TAIL_WAVE_FULL_ITERATIONS // 40
    assert per_rep > LAST_WAVE_FULL_ITERATIONS // 40
    assert FullRuns(40, TAIL_WAVE_FULL_ITERATIONS).plan(per_rep, sample=True).state is None
    assert FullRuns(40, TAIL_WAVE_FULL_ITERATIONS).plan(per_rep + 1, sample=True).state is not None
    assert FullRuns(40).plan(per_rep, sample=True).state is not None  # a one-wave launch: the smaller budget


def _meter_with(finish_cycles: list, slots: int, tallies=None) -> WaveMeter:
    """A wave meter that saw CTAs start in order and finish at `finish_cycles`; `tallies`: each CTA's ReadTally
    (what its own requests read from DRAM), in dispatch order."""
    meter = WaveMeter(slots, dict)
    for i in range(len(finish_cycles)):
        meter.cta_started(tallies[i] if tallies is not None else ReadTally())
    for cycle in finish_cycles:
        meter.cta_finished(cycle)
    return meter


def _tally(dram: dict, rereads: dict) -> ReadTally:
    tally = ReadTally()
    for tensor, nbytes in dram.items():
        tally.add(tensor, nbytes, rereads.get(tensor, 0.0))
    return tally


def test_steady_period_comes_from_waves_that_had_a_wave_behind_them():
    # two CTAs per slot pair: the older finishes first; the last simulated wave's younger CTAs drain early (no wave
    # follows them in the simulation), which must not shorten the period
    waves = [[177, 177, 207, 207], [354, 354, 406, 406], [535, 535, 584, 584]]
    meter = _meter_with([c for wave in waves for c in wave], slots=4)
    period, _ = meter.period()
    assert period == pytest.approx((354 + 406) / 2 - (177 + 207) / 2)  # 188, not the drained 180
    # the last of 6 more CTAs sits at position 1 of the second wave after the window: three waves after position 1
    # of the steady wave (the second simulated one); the last of 4 more at position 3 of the first, two waves after
    assert meter.last_finish(period, 6) == pytest.approx(354 + 3 * period)
    assert meter.last_finish(period, 4) == pytest.approx(406 + 2 * period)


def test_a_tensor_is_streamed_only_when_the_last_wave_mostly_re_reads_it():
    cycles = [float(c) for c in range(12)]
    first_waves = [_tally({"K": 12.5, "V": 12.5}, {}) for _ in range(8)]
    last_wave = [_tally({"K": 25.0, "V": 25.0}, {"K": 1.0, "V": 12.5}) for _ in range(4)]
    meter = _meter_with(cycles, slots=4, tallies=first_waves + last_wave)
    assert meter.streaming() == {"V"}  # K re-read 4% of what the last wave read of it, V 50%


def test_a_wave_s_reads_are_its_own_ctas_whenever_they_made_them():
    # CTAs that differ in pace overlap waves, and a sampled loop reads its skipped tiles when it jumps, early in its
    # CTA: the last wave's CTAs may have read everything before the wave before them finished. Their reads still
    # count for their wave, not for the CTAs that happened to finish around them.
    tallies = [_tally({"K": 10.0}, {}) for _ in range(8)] + [_tally({"K": 10.0}, {"K": 10.0}) for _ in range(4)]
    meter = _meter_with([float(c) for c in range(12)], slots=4, tallies=tallies)
    tallies[9].add("K", 5.0, 5.0)  # read after the meter saw the CTAs start: tallies are read when asked
    assert meter.last_wave.dram == {"K": 45.0} and meter.last_wave.rereads == {"K": 45.0}
    assert meter.streaming() == {"K"}


def test_a_full_run_loop_that_holds_another_is_sampled_after_all():
    runs = FullRuns(1)
    outer = runs.plan(100, sample=True)
    walk = iter(outer.indices)
    assert next(walk) == 0 and outer.state is None
    inner = runs.plan(50, sample=True)  # announced in the outer loop's first iteration
    assert outer.state is not None and list(walk)[-2:] == [98, 99]
    assert len(outer.indices) == WARM_ITERATIONS + TAIL_ITERATIONS
    assert inner.indices == list(range(50))  # the innermost loop runs in full


def test_extrapolated_atomic_accumulation_writes_back_distinct_lines_only():
    # FA2's backward adds every CTA's dQ_i into the same fp32 dQaccum tile with atomics (7.8 waves, so the
    # main launch is extrapolated): L2 absorbs the repeated adds, and the stand-in write-backs of the skipped
    # waves must count the lines they dirty, not the atomic traffic (which gave 6.6x the written data)
    problem = AttentionProblem(batch=2, heads=16, seq_len=4096, head_dim=128, pass_="bwd")
    result = simulate("fa2", problem, "h200")
    rows = problem.batch * problem.heads * problem.seq_len * problem.head_dim
    written = rows * 4 + 3 * rows * problem.element_bytes  # dQaccum (fp32), dK, dV, dQ
    assert result.hbm_write_bytes < 2 * written


def test_the_partial_last_wave_runs_its_loops_in_full():
    # 5 CTAs on 2 SMs: two full waves sample their 100-iteration loops, the fifth CTA (the partial last wave)
    # walks all of it: its first iterations still share the GPU with the wave before, so their pace would
    # misjudge the rest
    walked = {}

    def program(cta):
        plan = yield Loop(100)
        walked[cta] = len(plan.indices)
        for i in plan.indices:
            yield plan.mark(i)
            yield Load(SRC.region(slice(cta * 1000 + i, cta * 1000 + i + 1)), Tile((1,), "int8", "reg", "x"))

    TimingInterpreter(TINY, exact=False).run(plan_of(launch_of(range(5), program)))
    assert walked[4] == 100
    assert all(walked[c] == WARM_ITERATIONS + TAIL_ITERATIONS for c in range(4))


# ---------------------------------------------------------------------------------------------- flushed L2
def _run_from(l2_start: str, program, hw=TINY) -> dict:
    return TimingInterpreter(hw, exact=True, l2_start=l2_start).run(plan_of(launch_of([0], program)))


def test_a_flushed_l2_writes_back_dirty_lines_before_a_miss_is_served():
    # TINY after a flush holds 0.92 x 1e6 dirty bytes and writes back 0.35 per byte allocated: a 10000-byte
    # miss first writes 3500 bytes (35 cycles of HBM), then reads its own (100 more): 135 + 500 latency = 635
    def program(cta):
        yield Load(chunk(0, 10000), buf(10000))

    flushed, empty = _run_from("flushed", program), _run_from("empty", program)
    assert (flushed["bytes"].hbm_write, flushed["cycles"]) == (3500, 635)
    assert (empty["bytes"].hbm_write, empty["cycles"]) == (0, 600)
    assert flushed["bytes"].hbm_read == empty["bytes"].hbm_read == 10000


def test_a_flushed_l2_runs_out_of_dirty_lines():
    # 2000 dirty bytes: the first 10000-byte miss writes back 2000 (not 3500), the second and a hit nothing
    hw = dataclasses.replace(TINY, flushed_l2_dirty_fraction=0.002)

    def program(cta):
        yield Load(chunk(0, 10000), buf(10000))
        yield Load(chunk(10000, 10000), buf(10000))
        yield Load(chunk(0, 10000), buf(10000))

    assert _run_from("flushed", program, hw)["bytes"].hbm_write == 2000


def test_a_write_that_allocates_evicts_flush_lines_too():
    def program(cta):
        yield Store(buf(10000), DST.region(slice(0, 10000)))

    assert _run_from("flushed", program)["bytes"].hbm_write == 3500  # the store's own line stays dirty in L2


def test_an_unknown_l2_start_is_an_input_error():
    with pytest.raises(InputError, match="l2_start='dirty'"):
        TimingInterpreter(TINY, l2_start="dirty")


def test_a_decode_timed_after_a_flush_is_slower_by_its_write_backs():
    problem = AttentionProblem(batch=8, heads=32, kv_heads=8, seq_len=1, kv_len=1024, head_dim=128)
    empty = simulate("flash_decoding", problem, "h200", {"api": "mha_fwd"})
    flushed = simulate("flash_decoding", problem, "h200", {"api": "mha_fwd"}, l2_start="flushed")
    assert flushed.hbm_read_bytes == pytest.approx(empty.hbm_read_bytes)
    written_back = flushed.hbm_write_bytes - empty.hbm_write_bytes
    assert written_back == pytest.approx(H200.flushed_l2_writeback_per_byte * empty.hbm_read_bytes, rel=0.05)
    assert flushed.time_s > empty.time_s + 0.5 * written_back / H200.hbm_bandwidth_bytes_per_s


def test_a_sampled_loop_warms_up_until_the_flush_write_backs_are_past():
    # 20000 dirty bytes, written back 0.35 per byte missed: the first wave's CTAs miss 1000 bytes per iteration,
    # so write-backs run through their first ~28 iterations, which a pace measured over iterations 4-9 would
    # extrapolate to the whole loop. Both roles of a CTA walk the same iterations (they decide together).
    hw = dataclasses.replace(TINY, flushed_l2_dirty_fraction=0.02)
    walked = {}

    def program(cta):
        def producer():
            plan = yield Loop(100)
            for i in plan.indices:
                yield plan.mark(i)
                yield Load(chunk(cta * 100000 + i * 1000, 1000), buf(1000))
            walked[cta, "producer"] = list(plan.indices)

        def consumer():
            plan = yield Loop(100)
            for i in plan.indices:
                yield plan.mark(i)
                yield delay(5)
            walked[cta, "consumer"] = list(plan.indices)
        return [producer(), consumer()]

    plan = plan_of(launch_of(range(4), program))
    sampled = TimingInterpreter(hw, exact=False, l2_start="flushed").run(plan)
    assert all(walked[c, "producer"] == walked[c, "consumer"] for c in range(4))
    assert len(walked[0, "producer"]) > WARM_ITERATIONS + TAIL_ITERATIONS  # the first wave warmed up longer
    assert len(walked[3, "producer"]) == WARM_ITERATIONS + TAIL_ITERATIONS  # the second started after them
    exact = TimingInterpreter(hw, exact=True, l2_start="flushed").run(plan)
    assert sampled["cycles"] == pytest.approx(exact["cycles"], rel=0.02)
    assert sampled["bytes"].hbm_write == pytest.approx(exact["bytes"].hbm_write)


def test_a_loop_sampled_after_its_announcement_decides_its_warm_up_too():
    # one CTA (a launch of one wave runs its loops in full) whose outer loop turns sampled when the inner loop
    # is announced in its first iteration. From an empty L2 it walks its warm and tail iterations; after a flush
    # whose 920 KB of dirty lines its 1-byte loads never use up, it keeps warming up to the end of the loop.
    walked = {}

    def program(cta):
        outer = yield Loop(80)
        for i in outer.indices:
            yield outer.mark(i)
            inner = yield Loop(70)
            for j in inner.indices:
                yield inner.mark(j)
                yield Load(chunk(i * 1000 + j, 1), Tile((1,), "int8", "reg", "x"))
        walked[start] = len(outer.indices)

    for start in ("empty", "flushed"):
        TimingInterpreter(TINY, exact=False, l2_start=start).run(plan_of(launch_of([0], program)))
    assert walked == {"empty": WARM_ITERATIONS + TAIL_ITERATIONS, "flushed": 80}


def test_a_loop_that_loads_ahead_decides_its_warm_up_before_those_loads():
    # FA2 with a 4-deep ring loads 4 positions ahead: more warm-up iterations must be added before the loads
    # for the first tail position go out (a later decision left a position unloaded, or loaded the wrong tile)
    problem = AttentionProblem(batch=64, heads=32, kv_heads=8, seq_len=1, kv_len=16384, head_dim=128)
    options = {"stages": 4, "block_n": 32}
    empty = simulate("fa2", problem, "h200", options)
    flushed = simulate("fa2", problem, "h200", options, l2_start="flushed")
    assert flushed.hbm_read_bytes == pytest.approx(empty.hbm_read_bytes, rel=0.02)


def test_a_long_launch_writes_the_flush_back_on_the_side():
    # 36 representatives of many waves, whose steady period is extrapolated: the flush's write-backs would run
    # through the measured waves, so the launch writes them all back on the side, at most their HBM time later
    problem = AttentionProblem(batch=8, heads=16, seq_len=2048, head_dim=128)
    empty, flushed = simulate("fa2", problem, "h200"), simulate("fa2", problem, "h200", l2_start="flushed")
    residue = H200.flushed_l2_dirty_fraction * H200.l2_capacity_bytes
    assert flushed.hbm_write_bytes - empty.hbm_write_bytes == pytest.approx(residue)
    achievable = H200.hbm_bandwidth_bytes_per_s * H200.hbm_achievable_fraction
    assert 0 <= flushed.time_s - empty.time_s <= 1.1 * residue / achievable


def test_a_flushed_start_needs_the_flush_values():
    hw = dataclasses.replace(TINY, flushed_l2_dirty_fraction=0.0)
    with pytest.raises(InputError, match="flushed_l2_dirty_fraction"):
        TimingInterpreter(hw, l2_start="flushed")


def test_a_sampled_loop_that_loads_ahead_measures_iterations_that_load(monkeypatch):
    # FA2's 3-deep ring loads each K/V pair 3 iterations ahead, so its last 3 iterations load nothing: the tail
    # keeps them, and the measured iterations each load one pair (with a tail of 2, folded mode read 8% less).
    # The loops have 32 iterations: sampled from 21 on here, as they were before SAMPLE_ABOVE rose to 64
    monkeypatch.setattr(loop_sampling, "SAMPLE_ABOVE", 20)
    problem = AttentionProblem(batch=64, heads=32, kv_heads=8, seq_len=1, kv_len=4096, head_dim=128)
    folded = simulate("fa2", problem, "h200", {"stages": 3})
    exact = simulate("fa2", problem, "h200", {"stages": 3}, exact=True)
    assert folded.hbm_read_bytes == pytest.approx(exact.hbm_read_bytes, rel=0.005)
    assert folded.time_s == pytest.approx(exact.time_s, rel=0.03)


def test_all_done_fires_once_every_part_has_and_not_before():
    env = simpy.Environment()
    parts = [env.timeout(3), env.timeout(7), env.timeout(5)]
    done = _all_done(env, parts)
    fired = []
    done.callbacks.append(lambda _e: fired.append(env.now))
    env.run(until=6)
    assert not done.triggered
    env.run()
    assert fired == [7]
    assert _all_done(env, []).triggered  # nothing to wait for


def test_named_barrier_holds_every_role_until_all_have_arrived():
    """bar.sync of two and three roles: at every phase each role waits for the slowest, whichever role that is,
    and a phase's arrivals never count for the next (each role posts one token to every other role per phase)."""
    def load_alone(_cta):
        yield Load(chunk(0, 128), buf(128))

    load = run(plan_of(launch_of([0], load_alone)))["cycles"]  # a DRAM miss: 500+ cycles

    def program(roles: int):
        def make(_cta):
            bar = NamedBarrier(roles)

            def loader():  # slow in phase 1, then waits for the others' phase 2 and 3
                yield Load(chunk(0, 128), buf(128))
                yield from bar.sync(0)
                yield from bar.sync(0)
                yield delay(10)

            def worker(w: int):  # fast in phase 1; phase 2 takes 300 (w = 1) or 200 cycles
                yield from bar.sync(w)
                yield delay(300 if w == 1 else 200)
                yield from bar.sync(w)
            return [loader()] + [worker(w) for w in range(1, roles)]
        return make

    # phases: the load; the workers' delays (on TINY's one-op FP32 pipe, shared: their sum); the loader's 10
    assert run(plan_of(launch_of([0], program(2))))["cycles"] == pytest.approx(load + 300 + 10, abs=3)
    assert run(plan_of(launch_of([0], program(3))))["cycles"] == pytest.approx(load + 500 + 10, abs=3)
