"""Helpers shared by test modules."""

from __future__ import annotations

import simpy

from gpusim.engine.servers import SharedUnit


def unit_finish_times(rate: float, jobs: list[tuple[int, float]], ages: list[int] | None = None,
                      oldest_share: float = 0.5, caps: list[float] | None = None,
                      stand_ins: list[bool] | None = None) -> tuple[dict, SharedUnit]:
    """Submit (start cycle, amount) jobs, of CTAs of the given age ranks (default: one CTA), rate caps
    (default: none) and stand-in flags (default: none is), to one SharedUnit; returns ({job index: completion
    cycle}, unit)."""
    env = simpy.Environment()
    unit = SharedUnit(env, "u", rate, oldest_share)
    done = {}
    ages = ages or [0] * len(jobs)
    caps = caps or [1.0] * len(jobs)
    stand_ins = stand_ins or [False] * len(jobs)

    def job(i, start, amount):
        yield env.timeout(start)
        yield unit.submit(amount, ages[i], caps[i], stand_ins[i])
        done[i] = env.now

    for i, (start, amount) in enumerate(jobs):
        env.process(job(i, start, amount))
    env.run()
    return done, unit


def assert_bad_cli_input(main, capsys, tmp_path, argv: list[str]) -> str:
    """Run the CLI with `--out tmp_path/out` on bad input: exit 2, one `gpusim: error:` line on stderr, no
    traceback, nothing written. Returns the error line."""
    out = tmp_path / "out"
    assert main(argv + ["--out", str(out)]) == 2
    stdout, err = capsys.readouterr()
    assert stdout == "" and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpusim: error: ")
    assert list(tmp_path.iterdir()) == []
    return lines[0]
