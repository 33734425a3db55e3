"""Scenario files: TOML descriptions of what to simulate, loaded, validated and run.

    name = "quickstart"                 # used for the default output folder results/<name>
    description = "..."
    output_dir = "results/quickstart"   # optional

    [hardware]
    preset = "h200"
    set = { smem_per_sm_bytes = 466944 }          # optional overrides

    [hardware_sweep]                    # optional: one or more fields, swept as a grid
    hbm_bandwidth_bytes_per_s = [2.0e12, 3.35e12, 4.8e12, 8e12]

    [hardware_zip]                      # optional: fields that must move together, swept element by
    smem_per_sm_bytes = [65536, 131072]           # element (lists of one length); together they are one
    smem_per_cta_max_bytes = [64512, 130048]      # more axis of the hardware_sweep grid

    [[runs]]                            # any problem field may be a list: the product is swept
    kernel = ["naive", "fa2"]
    batch = 1
    heads = 16
    seq_len = [1024, 2048, 4096]
    head_dim = 64
    options = { fa2 = { block_n = 64 } }   # per kernel

    exact = false                       # optional: simulate every CTA (default: folded)
    l2_start = "empty"                  # optional: "flushed" = the L2 do_bench's flush leaves (dirty lines)

    [[plots]]
    x = "seq_len"
    y = ["hbm_bytes", "l2_bytes"]
    series = "kernel"
    logx = true
    logy = true

Every key is checked: an unknown key or impossible value is an InputError naming the file and key.
A file with a top-level [serving] table runs one serving study instead (gpusim.serving.scenario).
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpusim.engine.memory import check_l2_start
from gpusim.errors import InputError
from gpusim.hardware import HardwareSpec, get_preset
from gpusim.problem import AttentionProblem, CopyProblem, GemmProblem

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TOP_KEYS = {"name", "description", "output_dir", "hardware", "hardware_sweep", "hardware_zip", "runs", "plots",
            "exact", "l2_start"}
HARDWARE_KEYS = {"preset", "set"}
PROBLEM_FIELDS = {"batch", "heads", "kv_heads", "seq_len", "kv_len", "head_dim", "causal", "dtype", "pass"}
RUN_KEYS = PROBLEM_FIELDS | {"kernel", "options", "bytes", "sms", "m", "n", "k", "label"}
PLOT_KEYS = {"x", "y", "series", "logx", "logy", "title", "file", "kind", "filter"}
PLOT_KINDS = ("line", "hbm_traffic", "roofline", "breakdown", "io_law")


@dataclass(frozen=True)
class Point:
    """One simulation to run: kernel, problem, hardware, options and the sweep coordinates that led here."""

    kernel: str
    problem: Any
    hardware: HardwareSpec
    options: dict
    coords: dict = field(default_factory=dict)
    exact: bool = False
    l2_start: str = "empty"  # the L2 the point's first launch finds (engine.memory.L2_STARTS)


@dataclass
class Scenario:
    path: Path
    name: str
    description: str
    output_dir: Path
    points: list[Point]
    plots: list[dict]
    hardware_sweep: dict


def _where(path: Path, key: str) -> str:
    return f"{path}: {key}"


def _check_keys(path: Path, where: str, table: dict, allowed: set) -> None:
    if not isinstance(table, dict):
        raise InputError(f"{path}: {where} must be a table")
    for key in table:
        if key not in allowed:
            raise InputError(f"{path}: unknown key {where + '.' if where else ''}{key} "
                             f"(known: {', '.join(sorted(allowed))})")


def _as_list(value) -> list:
    return list(value) if isinstance(value, list) else [value]


def load_scenario(path: str | Path) -> Scenario:
    """A kernel Scenario, or a gpusim.serving.scenario.ServingScenario for a file with a [serving] table."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such scenario file") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML ({exc})") from None
    if "serving" in data:
        from gpusim.serving.scenario import load_serving_scenario
        return load_serving_scenario(path, data, _load_hardware(path, data.get("hardware", {})))
    _check_keys(path, "", data, TOP_KEYS)
    name = str(data.get("name", path.stem))
    hardware = _load_hardware(path, data.get("hardware", {}))
    sweep = data.get("hardware_sweep", {})
    _check_keys(path, "hardware_sweep", sweep, set(f.name for f in hardware.__dataclass_fields__.values()))
    for key, values in sweep.items():
        if not isinstance(values, list) or not values:
            raise InputError(f"{path}: hardware_sweep.{key} must be a non-empty list")
    zipped = data.get("hardware_zip", {})
    _check_keys(path, "hardware_zip", zipped, set(f.name for f in hardware.__dataclass_fields__.values()))
    for key, values in zipped.items():
        if not isinstance(values, list) or not values:
            raise InputError(f"{path}: hardware_zip.{key} must be a non-empty list")
        if len(values) != len(next(iter(zipped.values()))):
            raise InputError(f"{path}: hardware_zip.{key}: all hardware_zip lists must have the same length")
        if key in sweep:
            raise InputError(f"{path}: hardware_zip.{key} is also in hardware_sweep")
    axes = [[{key: value} for value in values] for key, values in sweep.items()]
    if zipped:
        axes.append([dict(zip(zipped, values)) for values in zip(*zipped.values())])
    runs = data.get("runs")
    if not runs or not isinstance(runs, list):
        raise InputError(f"{path}: needs at least one [[runs]] table")
    exact = bool(data.get("exact", False))
    l2_start = data.get("l2_start", "empty")
    check_l2_start(l2_start, str(path))
    points = []
    for combo in itertools.product(*axes):
        hw_coords = {key: value for part in combo for key, value in part.items()}
        origin = f"{path}: hardware_sweep" + (" / hardware_zip" if zipped else "")
        hw = hardware.with_overrides(hw_coords, origin=origin) if hw_coords else hardware
        for i, run in enumerate(runs):
            points.extend(_expand_run(path, i, run, hw, hw_coords, exact, l2_start))
    plots = data.get("plots", [])
    for i, plot in enumerate(plots):
        _check_keys(path, f"plots[{i}]", plot, PLOT_KEYS)
        kind = plot.get("kind", "line")
        if kind not in PLOT_KINDS:
            raise InputError(f"{path}: plots[{i}].kind={kind!r}: known {', '.join(PLOT_KINDS)}")
        if kind == "line" and ("x" not in plot or "y" not in plot):
            raise InputError(f"{path}: plots[{i}] needs x and y")
    output_dir = Path(data.get("output_dir", Path("results") / name))
    return Scenario(path=path, name=name, description=str(data.get("description", "")), output_dir=output_dir,
                    points=points, plots=plots, hardware_sweep={**sweep, **zipped})


def _load_hardware(path: Path, table: dict) -> HardwareSpec:
    _check_keys(path, "hardware", table, HARDWARE_KEYS)
    try:
        hw = get_preset(str(table.get("preset", "h200")))
    except InputError as exc:
        raise InputError(f"{path}: hardware.preset: {exc}") from None
    overrides = table.get("set", {})
    if not isinstance(overrides, dict):
        raise InputError(f"{path}: hardware.set must be a table of field = value")
    return hw.with_overrides(overrides, origin=f"{path}: hardware.set")


def _expand_run(path: Path, index: int, run: dict, hw: HardwareSpec, hw_coords: dict, exact: bool,
                l2_start: str = "empty") -> list[Point]:
    from gpusim.kernels import get_kernel
    from gpusim.launch import resolve_options

    where = f"runs[{index}]"
    _check_keys(path, where, run, RUN_KEYS)
    if "kernel" not in run:
        raise InputError(f"{path}: {where} needs a kernel")
    kernels = _as_list(run["kernel"])
    options = run.get("options", {})
    _check_keys(path, f"{where}.options", options, set(kernels))
    axes = {k: _as_list(v) for k, v in run.items() if k not in ("kernel", "options", "label")}
    points = []
    for kernel in kernels:
        try:
            module = get_kernel(kernel)
            opts = resolve_options(kernel, module.OPTIONS, options.get(kernel))
        except InputError as exc:
            raise InputError(f"{path}: {where}.kernel: {exc}") from None
        for combo in itertools.product(*axes.values()):
            fields = dict(zip(axes, combo))
            problem = _make_problem(path, where, module.PROBLEM, fields)
            coords = {**hw_coords, **fields}
            if "label" in run:
                coords["label"] = run["label"]
            points.append(Point(kernel=kernel, problem=problem, hardware=hw, options=opts, coords=coords,
                                exact=exact, l2_start=l2_start))
    return points


def _make_problem(path: Path, where: str, kind: type, fields: dict):
    allowed = {AttentionProblem: PROBLEM_FIELDS, CopyProblem: {"bytes", "sms"}, GemmProblem: {"m", "n", "k", "dtype"}}
    extra = set(fields) - allowed[kind]
    if extra:
        raise InputError(f"{path}: {where}.{sorted(extra)[0]} does not apply to {kind.__name__}")
    kwargs = {("pass_" if k == "pass" else k): v for k, v in fields.items()}
    try:
        return kind(**kwargs)
    except InputError as exc:
        raise InputError(f"{path}: {where}: {exc}") from None
    except TypeError as exc:
        raise InputError(f"{path}: {where}: {exc}") from None
