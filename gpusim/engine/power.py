"""The SM clock a power-capped GPU holds under sustained load.

An H200 at full tensor load draws more than its 700 W cap, so the driver lowers the SM clock until the
board power fits (validation/README.md run 15: effective clocks from 1.32 GHz under a bf16 GEMM to the
full 1.98 GHz for a DRAM copy). Dynamic power goes with f V^2 and the voltage with the clock, so the SMs'
share scales with the clock cubed, times how busy their units are per cycle; HBM power goes with the bytes
moved per second. The simulation runs at the preset's clock; this finds the fraction x of it where

    static + x^3 (sm_active + tensor * flop_share + smem * smem_share) + hbm_energy * bytes / t(x) = limit,

with the run's time stretched only in its SM-bound share s (1 minus the HBM busy share): t(x) = t (s / x + 1 - s).
Per-cycle activity of that share does not change with the clock; of the rest, it thins out as x grows.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpusim.hardware import INSTRUCTION_CLASSES, HardwareSpec

#: Bisection steps for x (2^-30 of the clock: far below the model's precision).
_STEPS = 30


@dataclass(frozen=True)
class Activity:
    """What a simulated run did, per cycle of the preset's clock."""

    flop_share: float  # executed tensor FLOPs per cycle per SM over the GPU's peak dense bf16 rate
    smem_share: float  # SMEM bytes per cycle per SM over the SMEM bandwidth
    hbm_bytes_per_s: float
    sm_bound_share: float  # share of the time that stretches with the SM clock (not streaming from HBM)


def activity(hw: HardwareSpec, cycles: float, flops: float, smem_bytes: float, hbm_bytes: float,
             hbm_busy_share: float) -> Activity:
    peak = max(hw.tensor_flops_per_clk(i, "bf16") for i in INSTRUCTION_CLASSES)
    sm_cycles = max(cycles, 1e-9) * hw.sm_count
    return Activity(flop_share=flops / (sm_cycles * peak),
                    smem_share=smem_bytes / (sm_cycles * hw.smem_bandwidth_bytes_per_clk_per_sm),
                    hbm_bytes_per_s=hbm_bytes / (max(cycles, 1e-9) * hw.seconds_per_cycle),
                    sm_bound_share=min(1.0, max(0.0, 1.0 - hbm_busy_share)))


def board_power_w(hw: HardwareSpec, act: Activity, x: float) -> float:
    """Board power with the SMs at x times the preset's clock."""
    s = act.sm_bound_share
    stretch = s / x + 1.0 - s  # t(x) / t(1)
    thinning = 1.0 / (s + (1.0 - s) * x)  # per-cycle activity at x over that at 1
    sm = hw.sm_active_power_w + (hw.tensor_power_w * act.flop_share + hw.smem_power_w * act.smem_share) * thinning
    return hw.static_power_w + x ** 3 * sm + hw.hbm_energy_pj_per_byte * 1e-12 * act.hbm_bytes_per_s / stretch


def clock_fraction(hw: HardwareSpec, act: Activity) -> float:
    """The largest x <= 1 whose board power fits the limit (1 when the preset models no cap)."""
    if hw.power_limit_w <= 0 or board_power_w(hw, act, 1.0) <= hw.power_limit_w:
        return 1.0
    low, high = 0.05, 1.0
    for _ in range(_STEPS):
        mid = 0.5 * (low + high)
        if board_power_w(hw, act, mid) <= hw.power_limit_w:
            low = mid
        else:
            high = mid
    return low


def stretched_time_s(time_s: float, act: Activity, x: float) -> float:
    """The run's time with its SM-bound share at x times the clock."""
    return time_s * (act.sm_bound_share / x + 1.0 - act.sm_bound_share)
