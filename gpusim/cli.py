"""The `gpusim` command. Bad input prints one line `gpusim: error: ...` and exits 2, with no traceback
and no partial output files."""

from __future__ import annotations

import argparse
import json
import sys

from gpusim.engine.memory import L2_STARTS
from gpusim.errors import InputError


def _parse_sets(pairs: list[str] | None, flag: str = "--set") -> dict:
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise InputError(f"{flag} {pair!r}: expected FIELD=VALUE")
        key, value = pair.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def _hardware(args):
    from gpusim.hardware import get_preset
    return get_preset(args.hardware).with_overrides(_parse_sets(getattr(args, "set", None)))


def _add_hardware_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hardware", default="h200", help="preset name (gpusim hardware list)")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a hardware field (repeatable)")


def _print_json(data: dict) -> None:
    print(json.dumps(data, indent=1, default=str))


def _result_json(result) -> dict:
    data = result.to_dict()
    data.pop("launches", None)
    data["launches"] = [vars(launch) for launch in result.launches]
    return data


def _print_result(result) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result.kernel} on {result.hardware}: {result.problem}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [("time", f"{result.time_s * 1e6:,.1f} us"), ("throughput", f"{result.tflops_per_s:,.1f} TFLOP/s"),
            ("HBM read / write", f"{result.hbm_read_bytes / 1e6:,.2f} / {result.hbm_write_bytes / 1e6:,.2f} MB"),
            ("HBM bandwidth", f"{result.hbm_bytes_per_s / 1e12:,.3f} TB/s"),
            ("L2 read / write", f"{result.l2_read_bytes / 1e6:,.2f} / {result.l2_write_bytes / 1e6:,.2f} MB"),
            ("L2 lookups", f"{result.l2_tag_bytes / 1e6:,.2f} MB, {result.l2_fabric_bytes / 1e6:,.2f} MB forwarded"),
            ("bound", f"{result.bound} (busiest: {result.busiest_unit})")]
    clock_hz = result.info.get("sm_clock_hz")
    if clock_hz:
        capped = result.info.get("power_capped")
        rows.append(("SM clock", f"{clock_hz / 1e9:.2f} GHz" + (
            f" (power-capped: {result.info['board_power_w']:.0f} W)" if capped else "")))
    rows += [(f"busy {unit}", f"{share:.0%}") for unit, share in result.unit_busy.items()]
    rows.append(("simulation", f"{result.sim_wall_s:.2f} s wall, {result.events} ops"))
    for metric, value in rows:
        table.add_row(metric, value)
    Console().print(table)


# ---------------------------------------------------------------------------------------------- commands
def cmd_hardware(args) -> int:
    from gpusim.hardware import PRESETS, field_unit, get_preset

    if args.action == "list":
        if args.json:
            _print_json({name: spec.description for name, spec in PRESETS.items()})
            return 0
        for name, spec in PRESETS.items():
            print(f"{name:6s} {spec.description}")
        return 0
    if not args.name:
        raise InputError("hardware show: name a preset (gpusim hardware list)")
    spec = get_preset(args.name).with_overrides(_parse_sets(args.set))
    if args.json:
        _print_json({f: v for f, v, _ in spec.as_rows()})
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{spec.name}: {spec.description}")
    for col in ("field", "value", "unit", "source"):
        table.add_column(col, overflow="fold")
    for name, value, source in spec.as_rows():
        table.add_row(name, f"{value:,}" if isinstance(value, (int, float)) and not isinstance(value, bool)
                      else str(value), field_unit(name), source)
    Console(width=max(160, 0)).print(table)
    return 0


def cmd_microbench(args) -> int:
    from gpusim.problem import CopyProblem, GemmProblem
    from gpusim.simulate import simulate

    hw = _hardware(args)
    if args.bench == "copy":
        problem = CopyProblem(bytes=args.bytes, sms=args.sms)
        result = simulate("copy", problem, hw, exact=args.exact)
        data = {"bench": "copy", "hardware": hw.name, "bytes": args.bytes, "sms": args.sms or hw.sm_count,
                "time_s": result.time_s, "bytes_per_s": result.hbm_bytes / result.time_s,
                "read_bytes_per_s": result.hbm_read_bytes / result.time_s, "sim_wall_s": result.sim_wall_s}
    else:
        problem = GemmProblem(m=args.m, n=args.n, k=args.k, dtype=args.dtype)
        result = simulate("gemm", problem, hw, exact=args.exact)
        data = {"bench": "gemm", "hardware": hw.name, "m": args.m, "n": args.n, "k": args.k, "dtype": args.dtype,
                "time_s": result.time_s, "tflops_per_s": result.tflops_per_s, "bound": result.bound,
                "sim_wall_s": result.sim_wall_s}
    if args.json:
        _print_json(data)
    else:
        _print_result(result)
    return 0


def cmd_simulate(args) -> int:
    from gpusim.problem import AttentionProblem
    from gpusim.simulate import simulate

    hw = _hardware(args)
    problem = AttentionProblem(batch=args.batch, heads=args.heads, kv_heads=args.kv_heads, seq_len=args.seq_len,
                               kv_len=args.kv_len, head_dim=args.head_dim, causal=args.causal, dtype=args.dtype,
                               pass_=args.pass_)
    result = simulate(args.kernel, problem, hw, _parse_sets(args.option, "--option"), exact=args.exact,
                      trace=bool(args.trace), l2_start=args.l2_start)
    if args.trace:
        from gpusim.trace import write_trace
        write_trace(result, args.trace)
    if args.json:
        _print_json(_result_json(result))
    else:
        _print_result(result)
    return 0


def cmd_run(args) -> int:
    from pathlib import Path

    from gpusim.report import print_rows, scenario_figures
    from gpusim.runner import result_row, run_points, write_outputs
    from gpusim.scenario import load_scenario

    scenario = load_scenario(args.scenario)
    if args.out:
        scenario.output_dir = Path(args.out)
    if args.jobs < 1:
        raise InputError(f"--jobs {args.jobs}: must be at least 1")
    from gpusim.serving.scenario import ServingScenario, run_serving_scenario
    if isinstance(scenario, ServingScenario):   # one serving study, not kernel points (--jobs, --no-cache unused)
        return run_serving_scenario(scenario)
    results = run_points(scenario.points, jobs=args.jobs, progress=sys.stderr.isatty(), use_cache=not args.no_cache)
    rows = [result_row(p, r) for p, r in zip(scenario.points, results)]
    figures = scenario_figures(scenario, rows)
    out = write_outputs(scenario, rows, results, figures)
    print_rows(scenario, rows)
    print(f"wrote {out}/results.csv, results.json and {len(figures)} figure(s)")
    return 0


def cmd_validate(args) -> int:
    from gpusim.validation import run_validation
    return run_validation(args)


# ---------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpusim", description="GPU memory-hierarchy simulator for attention")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("hardware", help="list or show hardware presets")
    p.add_argument("action", choices=("list", "show"))
    p.add_argument("name", nargs="?")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_hardware)

    p = sub.add_parser("microbench", help="copy and GEMM microbenchmarks")
    p.add_argument("bench", choices=("copy", "gemm"))
    p.add_argument("--bytes", type=int, default=2**31, help="copy: bytes to copy")
    p.add_argument("--sms", type=int, default=None, help="copy: use only this many SMs")
    p.add_argument("--m", type=int, default=8192)
    p.add_argument("--n", type=int, default=8192)
    p.add_argument("--k", type=int, default=8192)
    p.add_argument("--dtype", default="bf16", choices=("bf16", "fp16", "fp8"))
    p.add_argument("--exact", action="store_true", help="simulate every CTA (no folding)")
    p.add_argument("--json", action="store_true")
    _add_hardware_args(p)
    p.set_defaults(func=cmd_microbench)

    p = sub.add_parser("simulate", help="simulate one attention kernel on one problem")
    _add_hardware_args(p)
    p.add_argument("--kernel", required=True)
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="kernel option (repeatable)")
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--heads", type=int, required=True)
    p.add_argument("--kv-heads", type=int, default=None)
    p.add_argument("--seq-len", type=int, required=True)
    p.add_argument("--kv-len", type=int, default=None)
    p.add_argument("--head-dim", type=int, required=True)
    p.add_argument("--causal", action="store_true")
    p.add_argument("--dtype", default="bf16", choices=("bf16", "fp16", "fp8"))
    p.add_argument("--pass", dest="pass_", default="fwd", choices=("fwd", "bwd", "fwd_bwd"))
    p.add_argument("--exact", action="store_true", help="simulate every CTA (no folding)")
    p.add_argument("--l2-start", default="empty", choices=L2_STARTS,
                   help="the L2 the kernel finds: empty, or flushed as do_bench leaves it (dirty lines to write back)")
    p.add_argument("--trace", metavar="FILE.json", help="write a Chrome/Perfetto trace")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("run", help="run a scenario file")
    p.add_argument("scenario")
    p.add_argument("--out", help="output folder (default: the scenario's output_dir)")
    p.add_argument("--jobs", type=int, default=1, help="processes to spread points over")
    p.add_argument("--no-cache", action="store_true", help="do not reuse cached results")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("validate", help="compare predictions with measured data")
    p.add_argument("--suite", default=None)
    p.add_argument("--kernel", default=None)
    p.add_argument("--out", default="results/validation")
    p.add_argument("--jobs", type=int, default=1, help="processes to spread cases over")
    p.add_argument("--all", action="store_true", help="also causal cases beyond 32k tokens and causal backward (slow)")
    p.set_defaults(func=cmd_validate)

    try:
        from gpusim.serving.cli import add_parsers
    except ModuleNotFoundError:
        pass
    else:
        add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except InputError as exc:
        print(f"gpusim: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gpusim: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
