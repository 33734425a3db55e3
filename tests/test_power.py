"""The power-capped SM clock (engine.power): where it applies, which way it moves, and what it does to time."""

from __future__ import annotations

import dataclasses

import pytest

from gpusim.engine import power
from gpusim.hardware import get_preset
from gpusim.problem import AttentionProblem, CopyProblem
from gpusim.simulate import simulate

H200 = get_preset("h200")


def _activity(flop_share=0.0, smem_share=0.0, hbm_tb_s=0.0, sm_bound_share=1.0) -> power.Activity:
    return power.Activity(flop_share, smem_share, hbm_tb_s * 1e12, sm_bound_share)


def test_no_power_limit_keeps_the_preset_clock():
    assert power.clock_fraction(dataclasses.replace(H200, power_limit_w=0.0), _activity(1.0, 1.0, 4.0)) == 1.0
    assert get_preset("h100").power_limit_w == 0.0  # only the measured GPU has a power model


def test_an_idle_gpu_and_a_dram_copy_stay_at_full_clock():
    assert power.clock_fraction(H200, _activity()) == 1.0
    assert power.clock_fraction(H200, _activity(hbm_tb_s=4.25, smem_share=0.2, sm_bound_share=0.0)) == 1.0


def test_more_tensor_work_per_cycle_means_a_lower_clock_at_the_cap():
    clocks = [power.clock_fraction(H200, _activity(flop_share=f, smem_share=0.4)) for f in (0.3, 0.6, 0.95)]
    assert 1.0 > clocks[0] > clocks[1] > clocks[2] > 0.5
    for x, f in zip(clocks, (0.3, 0.6, 0.95)):
        assert power.board_power_w(H200, _activity(flop_share=f, smem_share=0.4), x) == \
            pytest.approx(H200.power_limit_w, abs=0.1)


def test_only_the_sm_bound_share_of_the_time_stretches():
    act = _activity(sm_bound_share=0.25)
    assert power.stretched_time_s(1.0, act, 0.5) == pytest.approx(0.25 / 0.5 + 0.75)
    assert power.stretched_time_s(1.0, _activity(), 0.8) == pytest.approx(1 / 0.8)


def test_a_tensor_bound_attention_kernel_runs_power_capped_and_a_copy_does_not():
    fa3 = simulate("fa3", AttentionProblem(batch=1, heads=16, seq_len=4096, head_dim=128), "h200",
                   {"block_m": 128, "block_n": 128})
    # run 15: cuDNN's forward at d = 128 held an effective 1.45 GHz at the 700 W cap
    assert fa3.info["power_capped"] and 1.3e9 < fa3.info["sm_clock_hz"] < 1.6e9
    assert fa3.info["board_power_w"] == pytest.approx(H200.power_limit_w, abs=1.0)
    uncapped = simulate("fa3", AttentionProblem(batch=1, heads=16, seq_len=4096, head_dim=128),
                        dataclasses.replace(H200, power_limit_w=0.0), {"block_m": 128, "block_n": 128})
    assert fa3.time_s > 1.2 * uncapped.time_s
    copy = simulate("copy", CopyProblem(bytes=256 * 2**20), "h200")
    assert not copy.info["power_capped"] and copy.info["sm_clock_hz"] == H200.sm_clock_hz


def test_launch_times_follow_the_stretched_total():
    r = simulate("fa2", AttentionProblem(batch=1, heads=8, seq_len=2048, head_dim=64, pass_="fwd_bwd"), "h200")
    assert r.info["power_capped"]
    last = r.launches[-1]
    assert last.start_s + last.time_s <= r.time_s * (1 + 1e-9)
