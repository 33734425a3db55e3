"""Run a scenario's points (serially or over processes), collect rows, and write results atomically."""

from __future__ import annotations

import csv
import functools
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from gpusim import cache
from gpusim.atomic import replaced_dir
from gpusim.errors import DoesNotFitError
from gpusim.result import Result
from gpusim.scenario import Point, Scenario
from gpusim.simulate import simulate

ROW_METRICS = ("time_s", "tflops_per_s", "flops", "hbm_read_bytes", "hbm_write_bytes", "hbm_bytes", "l2_read_bytes",
               "l2_write_bytes", "l2_bytes", "l2_tag_bytes", "smem_read_bytes", "hbm_bytes_per_s",
               "arithmetic_intensity", "bound", "busiest_unit", "sim_wall_s", "events")


def run_point(point: Point, use_cache: bool = False) -> Result | DoesNotFitError:
    """Simulate one point; a point that does not fit the hardware returns its error (reported, not raised).
    With use_cache, a result simulated before with the same inputs and model is reused."""
    key = cache.point_key(point.kernel, point.problem, point.hardware, point.options, point.exact,
                          point.l2_start) if use_cache else None
    if key:
        cached = cache.load(key)
        if cached is not None:
            return cached
    try:
        result = simulate(point.kernel, point.problem, point.hardware, point.options, exact=point.exact,
                          l2_start=point.l2_start)
    except DoesNotFitError as exc:
        result = exc
    if key:
        cache.store(key, result)
    return result


def result_row(point: Point, result: Result | DoesNotFitError) -> dict:
    """One flat row per point: sweep coordinates, problem, metrics and unit busy shares (or why it does not
    fit the hardware)."""
    if isinstance(result, DoesNotFitError):
        return {"kernel": point.kernel, "hardware": point.hardware.name, **point.coords,
                "problem": point.problem.describe(), "does_not_fit": str(result)}
    row = {"kernel": point.kernel, "hardware": point.hardware.name, **point.coords, "problem": result.problem}
    for metric in ROW_METRICS:
        row[metric] = getattr(result, metric)
    problem = point.problem
    if hasattr(problem, "compulsory_bytes"):
        row["compulsory_bytes"] = problem.compulsory_bytes
    for unit, share in result.unit_busy.items():
        row[f"busy_{unit}"] = share
    for key, value in result.info.items():
        if isinstance(value, (int, float, str, bool)):
            row[f"info_{key}"] = value
    return row


def run_points(points: list[Point], jobs: int = 1, progress: bool = False, use_cache: bool = False) -> list:
    """Simulate every point; with jobs > 1 spread them over processes (results in point order, identical
    to a serial run: each point is simulated independently)."""
    work = functools.partial(run_point, use_cache=use_cache)
    if jobs > 1 and len(points) > 1:
        # the costliest first, so that the last point to start is a short one (a sweep's longest sequences
        # would otherwise start last and keep one process busy while the others idle)
        order = sorted(range(len(points)), key=lambda i: -_cost_estimate(points[i]))
        results: list = [None] * len(points)
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            iterator = pool.map(work, [points[i] for i in order])
            for i, result in zip(order, _with_progress(iterator, len(points), progress)):
                results[i] = result
        return results
    return list(_with_progress(map(work, points), len(points), progress))


def _cost_estimate(point: Point) -> float:
    """A point's relative simulation cost, for ordering only: its attention FLOPs (0 for other problems)."""
    return float(getattr(point.problem, "flops", 0))


def _with_progress(iterator, total: int, enabled: bool):
    if not enabled:
        yield from iterator
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("simulating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=True) as bar:
        task = bar.add_task("points", total=total)
        for item in iterator:
            bar.advance(task)
            yield item


def write_outputs(scenario: Scenario, rows: list[dict], results: list[Result], figures: dict) -> Path:
    """Write results.csv, results.json and figures into the scenario's output folder, all or nothing:
    everything goes to a temporary folder first, which then replaces the output folder."""
    out = scenario.output_dir
    with replaced_dir(out) as staging:
        columns: list[str] = []
        for row in rows:
            columns.extend(k for k in row if k not in columns)
        with open(staging / "results.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        payload = {"scenario": scenario.name, "description": scenario.description, "source": str(scenario.path),
                   "rows": rows, "results": [r.to_dict() for r in results if isinstance(r, Result)]}
        (staging / "results.json").write_text(json.dumps(payload, indent=1, default=_jsonable))
        for name, fig in figures.items():
            for ext in ("png", "svg"):
                fig.savefig(staging / f"{name}.{ext}", dpi=150 if ext == "png" else None, bbox_inches="tight")
    return out


def _jsonable(value):
    if hasattr(value, "__dataclass_fields__"):
        from dataclasses import asdict
        return asdict(value)
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)
