"""Property tests over random sizes and hardware (a random preset plus random overrides of bandwidths,
latencies, capacities, SMEM and the TMA path): no simulated time beats the roofline, bytes at each level add
up, no unit (the dispatch unit included) is busy more than all the time, and the same input gives the same
result bit for bit."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpusim.engine.servers import Server
from gpusim.hardware import PRESETS, get_preset
from gpusim.problem import AttentionProblem, CopyProblem, GemmProblem
from gpusim.simulate import simulate
from helpers import unit_finish_times

PROPERTY = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def hardware(draw):
    """A preset with some of its memory system and SMEM replaced by other plausible values."""
    base = get_preset(draw(st.sampled_from(sorted(PRESETS))))
    overrides = {}
    if draw(st.booleans()):
        overrides["sm_count"] = draw(st.sampled_from([4, 8, 16, 33, 132]))
    if draw(st.booleans()):
        overrides["hbm_bandwidth_bytes_per_s"] = draw(st.floats(0.5e12, 16e12))
    if draw(st.booleans()):
        overrides["hbm_achievable_fraction"] = draw(st.floats(0.5, 1.0))
    if draw(st.booleans()):
        overrides["hbm_latency_cycles"] = draw(st.integers(100, 1500))
    if draw(st.booleans()):
        overrides["l2_capacity_bytes"] = draw(st.integers(2**18, 2**27))
    if draw(st.booleans()):
        overrides["l2_bandwidth_bytes_per_clk"] = draw(st.floats(512.0, 16384.0))
    if draw(st.booleans()):
        overrides["l2_hit_latency_cycles"] = draw(st.integers(50, 600))
    if draw(st.booleans()):
        overrides["sm_max_inflight_bytes"] = draw(st.integers(4096, 262144))
    if draw(st.booleans()):
        overrides["sm_load_bandwidth_bytes_per_clk"] = draw(st.floats(16.0, 512.0))
    if draw(st.booleans()):
        smem = draw(st.integers(229376, 466944))  # room for the GEMM's 3-stage 128x256 tiles
        overrides["smem_per_sm_bytes"] = smem
        overrides["smem_per_cta_max_bytes"] = smem - 1024
    if draw(st.booleans()):
        overrides["smem_bandwidth_bytes_per_clk_per_sm"] = draw(st.floats(32.0, 512.0))
    if base.has_tma and draw(st.booleans()):
        if draw(st.booleans()):
            overrides["has_tma"] = False  # the GEMM then loads through the load/store units
        else:
            overrides["tma_max_inflight_bytes"] = draw(st.integers(4096, 262144))
            overrides["tma_bandwidth_bytes_per_clk"] = draw(st.floats(16.0, 512.0))
    return base.with_overrides(overrides)


copy_problems = st.builds(lambda n, sms: CopyProblem(bytes=n, sms=sms),
                          st.integers(1, 2**23), st.one_of(st.none(), st.integers(1, 4)))
gemm_problems = st.builds(lambda m, n, k: GemmProblem(m=m, n=n, k=k),
                          st.integers(1, 768), st.integers(1, 768), st.integers(1, 768))


@st.composite
def attention_problems(draw):
    kv_heads = draw(st.integers(1, 4))
    seq_len = draw(st.integers(1, 1024))
    causal = draw(st.booleans())
    kv_len = draw(st.integers(seq_len if causal else 1, 1024))
    return AttentionProblem(batch=draw(st.integers(1, 2)), heads=kv_heads * draw(st.integers(1, 2)),
                            kv_heads=kv_heads, seq_len=seq_len, kv_len=kv_len,
                            head_dim=draw(st.sampled_from([32, 64, 128])), causal=causal,
                            dtype=draw(st.sampled_from(["bf16", "fp16"])))


cases = st.one_of(
    st.tuples(st.just("copy"), copy_problems),
    st.tuples(st.just("gemm"), gemm_problems),
    st.tuples(st.just("fa2"), attention_problems()),
)


def roofline_s(result, problem, hw) -> float:
    """max(HBM bytes / achievable bandwidth, FLOPs / peak of the tensor instruction the kernel used). A lower
    bound whatever the engine adds on top (latencies, SM links and windows, dispatch, unit sharing)."""
    memory = result.hbm_bytes / (hw.hbm_bandwidth_bytes_per_s * hw.hbm_achievable_fraction)
    compute = 0.0
    if result.flops:
        instruction = result.info["instruction"]
        peak = hw.tensor_flops_per_clk(instruction, problem.dtype) * hw.sm_count * hw.sm_clock_hz
        compute = result.flops / peak
    return max(memory, compute)


@PROPERTY
@given(case=cases, hw=hardware())
def test_time_is_never_below_the_roofline(case, hw):
    kernel, problem = case
    result = simulate(kernel, problem, hw)
    assert result.time_s > 0
    assert result.time_s >= roofline_s(result, problem, hw) * (1 - 1e-6)


@PROPERTY
@given(case=cases, hw=hardware())
def test_bytes_add_up(case, hw):
    kernel, problem = case
    result = simulate(kernel, problem, hw, exact=True)
    assert result.l2_read_bytes >= result.hbm_read_bytes * (1 - 1e-12)  # every DRAM read passes through L2
    assert min(result.hbm_read_bytes, result.hbm_write_bytes, result.l2_write_bytes, result.smem_read_bytes) >= 0
    if kernel == "copy":
        assert result.hbm_read_bytes >= problem.bytes  # every source byte comes from DRAM at least once
        assert result.l2_write_bytes >= problem.bytes
        assert result.hbm_write_bytes <= result.l2_write_bytes
    if kernel == "fa2":
        assert result.hbm_read_bytes >= problem.q_bytes + problem.kv_bytes * (1 - 1e-12)


def test_folded_copy_reads_every_source_byte():
    result = simulate("copy", CopyProblem(bytes=16385), "a100")
    assert result.hbm_read_bytes >= 16385


@PROPERTY
@given(problem=copy_problems, hw=hardware())
def test_copy_bytes_are_exact_when_every_cta_is_simulated(problem, hw):
    result = simulate("copy", problem, hw, exact=True)
    assert result.hbm_read_bytes == problem.bytes  # each chunk misses once
    assert result.l2_read_bytes == problem.bytes
    assert result.l2_write_bytes == problem.bytes
    assert result.hbm_write_bytes <= problem.bytes  # the rest is still dirty in L2 at the end
    # lines one SM wrote take l2_private_line_share of their bytes of room
    assert problem.bytes - result.hbm_write_bytes <= hw.l2_capacity_bytes / hw.l2_private_line_share + 2**14


@PROPERTY
@given(case=cases, hw=hardware())
def test_no_unit_is_busy_more_than_all_the_time(case, hw):
    kernel, problem = case
    result = simulate(kernel, problem, hw)
    assert set(result.unit_busy) >= {"hbm", "l2", "tensor", "mufu", "fp32", "smem", "dispatch"}
    over = {unit: share for unit, share in result.unit_busy.items() if not 0 <= share <= 1 + 1e-9}
    assert not over


@PROPERTY
@given(case=cases, hw=hardware(), exact=st.booleans())
def test_same_input_same_result_bit_for_bit(case, hw, exact):
    kernel, problem = case
    first = simulate(kernel, problem, hw, exact=exact).to_dict()
    second = simulate(kernel, problem, hw, exact=exact).to_dict()
    first.pop("sim_wall_s")
    second.pop("sim_wall_s")
    assert first == second


@settings(max_examples=200, deadline=None)
@given(rate=st.sampled_from([0.5, 1.0, 3.0, 100.0]),
       requests=st.lists(st.tuples(st.floats(0, 1000), st.floats(0.01, 500)), min_size=1, max_size=40))
def test_server_never_exceeds_its_rate_and_never_finishes_early(rate, requests):
    server = Server("s", rate)
    total = 0.0
    for t, amount in requests:
        done = server.reserve(t, amount)
        total += amount / rate
        assert done >= t + amount / rate - 1e-9 * max(1.0, done)
    assert server.busy_cycles == pytest.approx(total)
    # the work fits in the busy time: capacity between the first arrival and the last completion is enough
    first = min(t for t, _ in requests)
    assert server.free_at - first >= total * (1 - 1e-9)


@settings(max_examples=200, deadline=None)
@given(rate=st.sampled_from([0.5, 1.0, 3.0, 100.0]),
       jobs=st.lists(st.tuples(st.integers(0, 200), st.floats(0.01, 500)), min_size=1, max_size=20))
def test_shared_unit_is_work_conserving_and_never_finishes_early(rate, jobs):
    # processor sharing on whole cycles: no job ends before it could alone (start + amount / rate), the unit
    # is never busy longer than the simulation, and the last job ends no earlier than all the work needs
    # and no later than that plus one cycle of rounding per completion wake
    done, unit = unit_finish_times(rate, jobs)
    assert len(done) == len(jobs)
    for i, (start, amount) in enumerate(jobs):
        assert done[i] >= start + amount / rate - 1e-9
        assert done[i] == int(done[i])  # whole cycles
    assert unit.work == pytest.approx(sum(amount for _, amount in jobs))
    assert unit.busy_cycles <= max(done.values()) + 1e-9
    assert unit.busy_cycles >= unit.work / rate * (1 - 1e-9)
    assert max(done.values()) >= min(s for s, _ in jobs) + unit.work / rate * (1 - 1e-9)
    # after the last arrival every wake finishes a job and wastes under a cycle to rounding
    assert max(done.values()) <= max(s for s, _ in jobs) + unit.work / rate + len(jobs)
