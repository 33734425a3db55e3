"""The timing engine on a tiny made-up GPU with round numbers, so every expected time is hand-checkable.

TINY: 2 SMs at 1 GHz; HBM 100 B/clk (1e11 B/s at an achievable fraction of 1), 500 cycles latency; L2
1000 B/clk, 200 cycles hit latency, 1 MB; the SM's own link and in-flight window are effectively unlimited
unless a test narrows them; no launch overhead. A read completes at the latest of its latency and the drain
times of the servers it queued on, so one cold read of n bytes takes max(500, n / 100) cycles.
"""

from __future__ import annotations

import dataclasses

import pytest

from gpusim.engine.folding import MIN_SIMULATED_SMS, Representative, choose_fold_factor, fold_grid
from gpusim.engine.l2 import L2Cache
from gpusim.engine.memory import MemorySystem, SmMemoryPort
from gpusim.engine.servers import Server
from gpusim.engine.timing import TimingInterpreter
from gpusim.errors import InputError
from gpusim.hardware import get_preset
from gpusim.launch import KernelPlan, Launch
from gpusim.ops import GlobalTensor, Load, Mma, Store, Tile, Vector, Wait
from gpusim.problem import AttentionProblem
from gpusim.simulate import simulate

TINY = dataclasses.replace(
    get_preset("h200"), name="tiny", description="2-SM test GPU", sources={},
    sm_count=2, sm_clock_hz=1e9,
    hbm_bandwidth_bytes_per_s=1e11, hbm_achievable_fraction=1.0, hbm_latency_cycles=500,
    l2_capacity_bytes=10**6, l2_bandwidth_bytes_per_clk=1000.0, l2_hit_latency_cycles=200,
    sm_load_bandwidth_bytes_per_clk=1e9, sm_max_inflight_bytes=10**9,
    wgmma_bf16_flops_per_clk_per_sm=1024.0, tensor_sustained_fraction=1.0,
    smem_bandwidth_bytes_per_clk_per_sm=128.0, fp32_ops_per_clk_per_sm=1.0, mufu_ops_per_clk_per_sm=16.0,
    kernel_launch_overhead_s=0.0,
)
SRC = GlobalTensor("src", (10**6,), "int8", "input")
DST = GlobalTensor("dst", (10**6,), "int8", "output")


def plan_of(*launches: Launch) -> KernelPlan:
    return KernelPlan(kernel="test", tensors={"src": SRC, "dst": DST}, launches=list(launches))


def launch_of(grid, program, *, smem: int = 0, max_ctas_per_sm: int | None = 1, name: str = "t") -> Launch:
    return Launch(name=name, grid=list(grid), program=program, smem_bytes_per_cta=smem, threads_per_cta=128,
                  max_ctas_per_sm=max_ctas_per_sm)


def run(plan: KernelPlan, hw=TINY, **overrides) -> dict:
    if overrides:
        hw = dataclasses.replace(hw, **overrides)
    return TimingInterpreter(hw, exact=True).run(plan)


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


# ---------------------------------------------------------------------------------------------- transfers
def test_one_small_transfer_completes_at_the_hbm_latency():
    # 10000 B drain in 100 cycles, well inside the 500-cycle latency
    def program(cta):
        yield Load(chunk(0, 10000), buf(10000))

    out = run(plan_of(launch_of([0], program)))
    assert out["cycles"] == 500
    assert out["bytes"].hbm_read == 10000
    assert out["bytes"].l2_read == 10000
    assert out["bytes"].l2_misses == 1


def test_one_large_transfer_completes_at_bytes_over_bandwidth():
    # 100000 B at 100 B/clk = 1000 cycles > 500 latency; HBM busy the whole time
    def program(cta):
        yield Load(chunk(0, 100000), buf(100000))

    out = run(plan_of(launch_of([0], program)))
    assert out["cycles"] == 1000
    assert out["busy"]["hbm"] == 1.0
    assert out["busy"]["l2"] == pytest.approx(0.1)  # 100 of 1000 cycles at 1000 B/clk


def test_two_transfers_from_two_sms_share_hbm_bandwidth():
    # each alone: 1000 cycles; together they drain 200000 B at 100 B/clk = 2000 cycles
    def program(cta):
        yield Load(chunk(cta * 100000, 100000), buf(100000))

    out = run(plan_of(launch_of([0, 1], program)))
    assert out["cycles"] == 2000
    assert out["bytes"].hbm_read == 200000
    assert out["busy"]["hbm"] == 1.0


def test_l2_hit_versus_miss_from_the_other_sm():
    # SM0 misses at t=0 (done at 500); SM1 reads the same 10000 B at t=600 and hits: 600 + 200 = 800.
    def program(cta):
        if cta == 1:
            yield delay(600)
        yield Load(chunk(0, 10000), buf(10000))

    out = run(plan_of(launch_of([0, 1], program)))
    assert out["cycles"] == 800
    assert out["bytes"].hbm_read == 10000  # DRAM once
    assert out["bytes"].l2_read == 20000  # L2 twice
    assert (out["bytes"].l2_hits, out["bytes"].l2_misses) == (1, 1)


def test_second_read_on_the_same_sm_costs_the_hit_latency():
    def program(cta):
        yield Load(chunk(0, 10000), buf(10000))
        yield Load(chunk(0, 10000), buf(10000))

    out = run(plan_of(launch_of([0], program)))
    assert out["cycles"] == 500 + 200
    assert out["bytes"].hbm_read == 10000


def test_l2_capacity_makes_a_reread_miss():
    # a 1500-byte L2 holds one 1000-byte tile: a, b, a misses three times
    def program(cta):
        for start in (0, 1000, 0):
            yield Load(chunk(start, 1000), buf(1000))

    out = run(plan_of(launch_of([0], program)), l2_capacity_bytes=1500)
    assert out["cycles"] == 3 * 500
    assert out["bytes"].hbm_read == 3000
    assert out["bytes"].l2_misses == 3


# ---------------------------------------------------------------------------------------------- per-SM MLP
def _many_async_loads(n: int, size: int):
    def program(cta):
        handles = []
        for i in range(n):
            handle = yield Load(chunk((cta * n + i) * size, size), buf(size), wait=False)
            handles.append(handle)
        for handle in handles:
            yield Wait(handle)
    return program


@pytest.mark.parametrize("window, expected", [(1000, 16 * 500), (4000, 4 * 500), (16000, 500)])
def test_in_flight_window_limits_one_sm_to_window_over_latency(window, expected):
    # 16 loads of 1000 B; a window of W bytes keeps W/1000 loads in flight, each round trip 500 cycles:
    # throughput W / 500 B/clk, so 16000 B take 16000 / (W / 500) cycles (HBM at 100 B/clk is never the limit)
    out = run(plan_of(launch_of([0], _many_async_loads(16, 1000))), sm_max_inflight_bytes=window)
    assert out["cycles"] == expected
    assert out["bytes"].hbm_read == 16000


def test_in_flight_window_is_per_sm_so_two_sms_get_twice_the_bandwidth():
    # two SMs, each 16 loads through a 4000-byte window: each runs at 4000 / 500 = 8 B/clk, together 16 B/clk
    # of HBM's 100, so both finish at 2000 cycles, as each would alone (Little's law per SM)
    out = run(plan_of(launch_of([0, 1], _many_async_loads(16, 1000))), sm_max_inflight_bytes=4000)
    assert out["cycles"] == 2000
    assert out["bytes"].hbm_read == 32000
    assert out["busy"]["hbm"] == pytest.approx(320 / 2000)


def test_sm_port_admits_when_the_window_drains():
    hw = dataclasses.replace(TINY, sm_max_inflight_bytes=3000)
    port = SmMemoryPort(hw, 0)
    assert port.admit(0, 2000) == 0
    port.track(500, 2000)
    assert port.admit(0, 1000) == 0  # 3000 in flight fits exactly
    port.track(700, 1000)
    assert port.admit(10, 1000) == 500  # must wait for the first request to complete
    assert port.outstanding_bytes == 1000


# ---------------------------------------------------------------------------------------------- stores, write-back
def test_store_is_posted_and_absorbed_by_l2():
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
    mem = MemorySystem(TINY)
    port = SmMemoryPort(TINY, 0)
    key = ("dst", ((0, 1000),))
    assert mem.write(port, 0, (key,), 1000, accumulate=True) == 500  # read-modify-write of an absent line
    assert mem.bytes.hbm_read == 1000
    assert mem.write(port, 1000, (key,), 1000, accumulate=True) == 1200  # now resident: L2 latency
    assert mem.bytes.hbm_read == 1000
    assert mem.bytes.l2_write == 2000 and mem.bytes.l2_read == 2000


# ---------------------------------------------------------------------------------------------- compute units
def test_mma_takes_flops_over_the_tensor_rate():
    # 64x64x64: 2 * 64^3 = 524288 FLOPs at 1024 FLOP/clk = 512 cycles; its SMEM operands (16384 B at
    # 128 B/clk = 128 cycles) overlap with it
    a, b, acc = Tile((64, 64), "bf16", "smem"), Tile((64, 64), "bf16", "smem"), Tile((64, 64), "fp32")

    def program(cta):
        yield Mma(a, b, acc, "wgmma")

    out = run(plan_of(launch_of([0], program)))
    assert out["cycles"] == 512
    assert out["counters"].flops == 524288
    assert out["counters"].smem_read == 16384
    assert out["busy"]["tensor"] == pytest.approx(0.5)  # one of two SMs busy all the time


def test_vector_op_takes_the_slower_of_fp32_and_mufu():
    # 1600 elements: 1 FP32 op each at 1/clk = 1600 cycles; 2 exp each at 16/clk = 200 cycles
    def program(cta):
        yield Vector(lambda x: x, [], Tile((1600,), "fp32"), fp32_ops_per_element=1.0, mufu_ops_per_element=2.0)

    out = run(plan_of(launch_of([0], program)))
    assert out["cycles"] == 1600
    assert out["counters"].mufu_ops == 3200


def test_tensor_instruction_the_gpu_lacks_is_an_input_error():
    a, b, acc = Tile((64, 64), "bf16", "smem"), Tile((64, 64), "bf16", "smem"), Tile((64, 64), "fp32")

    def program(cta):
        yield Mma(a, b, acc, "tcgen05")

    with pytest.raises(InputError, match="tcgen05"):
        run(plan_of(launch_of([0], program)))


# ---------------------------------------------------------------------------------------------- launches
def _latency_bound(cta):
    yield Load(chunk(cta * 1000, 1000), buf(1000))  # 500 cycles each, HBM barely used


@pytest.mark.parametrize("grid, per_sm, waves, cycles", [(4, 1, 2.0, 1000), (4, 2, 1.0, 500), (5, 1, 2.5, 1500),
                                                         (5, 2, 1.25, 1000)])
def test_waves_and_the_tail_wave(grid, per_sm, waves, cycles):
    out = run(plan_of(launch_of(range(grid), _latency_bound, max_ctas_per_sm=per_sm)))
    assert out["cycles"] == cycles
    stats = out["launches"][0]
    assert (stats.ctas, stats.ctas_per_sm, stats.waves) == (grid, per_sm, waves)


def test_smem_budget_bounds_ctas_per_sm():
    hw = dataclasses.replace(TINY, smem_per_sm_bytes=100000, smem_per_cta_max_bytes=100000)
    launch = launch_of(range(4), _latency_bound, smem=40000, max_ctas_per_sm=None)
    assert launch.occupancy(hw) == 2
    assert run(plan_of(launch), hw)["cycles"] == 500


def test_launch_overhead_is_paid_per_launch():
    # 1 us at 1 GHz = 1000 cycles before each launch
    plan = plan_of(launch_of([0], _latency_bound, name="a"), launch_of([1], _latency_bound, name="b"))
    out = run(plan, kernel_launch_overhead_s=1e-6)
    assert out["cycles"] == 2 * (1000 + 500)
    assert [s.start_s for s in out["launches"]] == pytest.approx([1e-6, 2.5e-6])


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


def test_l2_cache_dirty_eviction_returns_written_back_bytes():
    cache = L2Cache(1000)
    assert cache.insert("a", 400, dirty=True) == 0
    assert cache.insert("b", 400, dirty=False) == 0
    assert cache.dirty_bytes() == 400
    assert cache.insert("c", 400, dirty=False) == 400  # a was dirty
    assert cache.insert("d", 400, dirty=False) == 0  # b was clean
    assert cache.dirty_bytes() == 0


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
    # largest divisor of the SM count that keeps >= MIN_SIMULATED_SMS SMs and at most one CTA per block
    assert MIN_SIMULATED_SMS == 4
    assert choose_fold_factor(132, 1000, 2) == 33  # 132 / 33 = 4 SMs simulated
    assert choose_fold_factor(132, 10, 1) == 6  # no more than the grid
    assert choose_fold_factor(132, 1, 1) == 1
    assert choose_fold_factor(8, 100, 1) == 2
    assert choose_fold_factor(2, 100, 1) == 1  # too few SMs to fold at all


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
    assert reps[0].l2_keys(ref) == ((ref.key,), 1)


def test_fold_grid_substitutes_the_shared_keys_of_the_block():
    # 10 CTAs; K rows are shared by pairs of CTAs (key cta // 2); Q is private
    k = GlobalTensor("K", (5, 16), "bf16")
    q = GlobalTensor("Q", (10, 16), "bf16")
    reps = fold_grid(list(range(10)), lambda cta: {"K": cta // 2}, 4)
    first = reps[0]  # block 0..3, representative 2 (key 1); the block also holds key 0
    ref = k.region(1, slice(0, 8))
    keys, multiplicity = first.l2_keys(ref)
    assert keys == (("K", (1, (0, 8))), ("K", (0, (0, 8))))
    assert multiplicity == 1
    # a private tensor: the representative's own tile stands for `weight` tiles
    assert first.l2_keys(q.region(2)) == ((("Q", (2, (0, 16))),), 4)
    # a shared tensor read at an index that is not the representative's key: counted once per distinct key
    assert first.l2_keys(k.region(4, slice(0, 8))) == ((("K", (4, (0, 8))),), 2)
    last = reps[2]  # block 8, 9: one key (4), nothing to substitute
    assert last.l2_keys(k.region(4)) == ((("K", (4, (0, 16))),), 1)


def test_representative_with_tuple_keys():
    k = GlobalTensor("K", (2, 3, 8, 4), "bf16")
    rep = Representative((0, 1, 1), 3, {"K": ((1, 1), ((1, 0), (0, 2)))})
    keys, multiplicity = rep.l2_keys(k.region(1, 1, slice(0, 4)))
    assert multiplicity == 1
    assert [key[1][:2] for key in keys] == [(1, 1), (1, 0), (0, 2)]


# ---------------------------------------------------------------------------------------------- folded vs exact
@pytest.mark.parametrize("problem", [
    AttentionProblem(batch=1, heads=4, seq_len=1024, head_dim=64),
    AttentionProblem(batch=2, heads=8, seq_len=1024, head_dim=64),
    AttentionProblem(batch=1, heads=8, kv_heads=2, seq_len=1024, head_dim=128),
], ids=lambda p: p.describe())
def test_folded_agrees_with_exact_on_fa2(problem):
    exact = simulate("fa2", problem, "h200", exact=True)
    folded = simulate("fa2", problem, "h200")
    assert folded.launches[0].fold_factor > 1
    assert folded.time_s == pytest.approx(exact.time_s, rel=0.03)
    assert folded.hbm_bytes == pytest.approx(exact.hbm_bytes, rel=0.01)
    assert folded.flops == exact.flops


@pytest.mark.xfail(strict=True, reason=(
    "folding bug: fold_grid's representative (the middle CTA of f consecutive CTAs) does not stand for its "
    "block under causal masking, where work grows with the Q-tile index along fa2's grid: folded time is "
    "-39% and HBM bytes -33% against exact for this problem"))
def test_folded_agrees_with_exact_on_causal_fa2():
    problem = AttentionProblem(batch=1, heads=4, seq_len=1024, head_dim=64, causal=True)
    exact = simulate("fa2", problem, "h200", exact=True)
    folded = simulate("fa2", problem, "h200")
    assert folded.time_s == pytest.approx(exact.time_s, rel=0.03)
    assert folded.hbm_bytes == pytest.approx(exact.hbm_bytes, rel=0.01)
