"""`simulate(kernel, problem, hardware) -> Result`: the one entry point every interface goes through."""

from __future__ import annotations

import time as wallclock
from typing import Any, Mapping

from gpusim.engine import power
from gpusim.engine.memory import check_l2_start
from gpusim.engine.timing import TimingInterpreter
from gpusim.hardware import HardwareSpec, get_preset
from gpusim.result import Result


def simulate(kernel: str, problem, hardware: HardwareSpec | str, options: Mapping[str, Any] | None = None,
             *, exact: bool = False, trace: bool = False, l2_start: str = "empty", extrapolate: bool = True) -> Result:
    """Time `kernel` (a name from gpusim.kernels) on `problem` and `hardware` (a spec or preset name).

    exact=True simulates every CTA; the default folds alike CTAs (see gpusim.engine.folding) and continues a long
    launch's steady waves from its first ones (engine.steady_state); extrapolate=False simulates every wave of the
    folded launch instead (slower; benchmarks/folded_vs_exact.py prints how far apart the two are). `l2_start` is the
    L2 the first launch finds (engine.memory.L2_STARTS): "flushed" for times measured as do_bench measures them.
    On a preset with a power limit the SM-bound share of the time runs at the clock the cap allows (engine.power).
    """
    from gpusim.kernels import get_kernel

    started = wallclock.perf_counter()
    check_l2_start(l2_start, f"simulate {kernel}")
    hw = get_preset(hardware) if isinstance(hardware, str) else hardware
    module = get_kernel(kernel)
    plan = module.build_plan(problem, hw, options)
    run = TimingInterpreter(hw, exact=exact, trace=trace, l2_start=l2_start, extrapolate=extrapolate).run(plan)
    counters, bytes_ = run["counters"], run["bytes"]
    act = power.activity(hw, run["cycles"], counters.flops, counters.smem_read + counters.smem_write,
                         bytes_.hbm_read + bytes_.hbm_write, run["busy"]["hbm"])
    x = power.clock_fraction(hw, act)
    stretch = power.stretched_time_s(1.0, act, x)  # every launch's time grows alike
    time_s = run["cycles"] * hw.seconds_per_cycle * stretch
    for launch in run["launches"]:
        launch.start_s, launch.time_s = launch.start_s * stretch, launch.time_s * stretch
    return Result(
        kernel=kernel, hardware=hw.name, problem=problem.describe(),
        time_s=time_s,
        flops=float(problem.flops),
        hbm_read_bytes=bytes_.hbm_read, hbm_write_bytes=bytes_.hbm_write,
        l2_read_bytes=bytes_.l2_read, l2_write_bytes=bytes_.l2_write,
        l2_fabric_bytes=bytes_.l2_fabric_miss + bytes_.l2_fabric_other,
        smem_read_bytes=counters.smem_read, smem_write_bytes=counters.smem_write,
        unit_busy=run["busy"], launches=run["launches"],
        sim_wall_s=wallclock.perf_counter() - started, events=counters.events, exact=exact,
        info={**plan.info, "sm_clock_hz": hw.sm_clock_hz * x, "power_capped": x < 1.0, "l2_start": l2_start,
              "board_power_w": power.board_power_w(hw, act, x) if hw.power_limit_w else None},
        trace=run.get("trace"),
    )


def run_functional_check(kernel: str, problem, hardware: HardwareSpec | str, inputs: Mapping, options=None) -> dict:
    """Run the kernel's programs on numbers; returns its output arrays by tensor name."""
    from gpusim.functional import run_functional
    from gpusim.kernels import get_kernel

    hw = get_preset(hardware) if isinstance(hardware, str) else hardware
    plan = get_kernel(kernel).build_plan(problem, hw, options)
    return run_functional(plan, dict(inputs))
