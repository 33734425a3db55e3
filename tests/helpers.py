"""Helpers shared by test modules."""

from __future__ import annotations

import simpy

from gpusim.engine.servers import SharedUnit


def unit_finish_times(rate: float, jobs: list[tuple[int, float]]) -> tuple[dict, SharedUnit]:
    """Submit (start cycle, amount) jobs to one SharedUnit; returns ({job index: completion cycle}, unit)."""
    env = simpy.Environment()
    unit = SharedUnit(env, "u", rate)
    done = {}

    def job(i, start, amount):
        yield env.timeout(start)
        yield unit.submit(amount)
        done[i] = env.now

    for i, (start, amount) in enumerate(jobs):
        env.process(job(i, start, amount))
    env.run()
    return done, unit
