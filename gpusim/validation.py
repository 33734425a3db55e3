"""`gpusim validate`: simulate every measured case, print the error table, summarize, write CSV and
parity plots, and fail when a stated tolerance is exceeded.

Cases live in gpusim/data/validation_cases.csv (built by validation/build_cases.py from the raw
measurements in validation/data/ and the published anchors). The same preset values serve every case.
"""

from __future__ import annotations

import csv
import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from gpusim.engine.memory import check_l2_start
from gpusim.errors import InputError
from gpusim.hardware import get_preset
from gpusim.problem import AttentionProblem

#: Derived rows: the speed-up of one (kernel, impl) over another on the same problem in the same suite, as
#: measured and as predicted (issue 4's fa3 / fa2 ratio against cuDNN / FLASH).
SPEEDUP = ("fa3", "cudnn", "fa2", "flash")
#: Gated tolerances: (suite prefix, kernels, metric) -> (max median |error|, max worst |error|).
#: Fused kernels on the H200 data: issue 5's targets (fa2 against `flash`, fa3 against `cudnn`, flash_decoding
#: against the split decode rows, DRAM bytes). Anchors are read off papers' figures: reported only.
TOLERANCES = {
    ("h200", ("fa2", "fa3", "flash_decoding"), "time_s"): (0.10, 0.25),
    ("h200", ("fa2", "fa3", "flash_decoding"), "hbm_read_bytes"): (0.10, 0.25),
    # issue 4: FA3's speed-up over FA2 within 15% of cuDNN's measured over SDPA's FLASH backend, on every case
    ("h200", (f"{SPEEDUP[0]}/{SPEEDUP[2]}",), "speedup"): (0.15, 0.15),
}
#: Groups of one measured implementation whose target is another issue's: FA2's decode without a split
#: against the no-split Triton rows, within 20% (issue 3), and no worse than issue 5's worst case.
IMPL_TOLERANCES = {("h200", "triton_nosplit", "time_s"): (0.20, 0.25)}
#: Cases faster than this are dominated by host launch cost in the measurement (see the reference README).
HOST_BOUND_BELOW_S = 50e-6
#: A measured time this many times the project's own CUDA-graph replay of the same case timed the host (the
#: Python call and its launches), not the kernel: shown, not gated. Replays and plain CUDA-event timings
#: of the project agree within 10% on every decode case (validation/data/h200_measured_2026-11-28_decode.json).
HOST_BOUND_RATIO = 1.5
#: Causal attention is simulated tile by tile (its CTAs differ in work, so neither waves nor loops are
#: extrapolated): forward cases beyond this length and causal backward cases take minutes each and are
#: skipped unless --all is given.
CAUSAL_SEQ_LEN_LIMIT = 32768


@dataclass
class Case:
    suite: str
    hardware: str
    kernel: str
    impl: str
    problem: AttentionProblem
    options: dict
    metric: str
    measured: float
    source: str
    remeasured: float | None = None  # the project's CUDA-graph replay time of the same case, where it has one
    l2_start: str = "empty"  # the L2 the measurement started from (simulate's l2_start)

    @property
    def host_bound(self) -> bool:
        """The measurement timed the host, not the kernel: far above a replay of the same case."""
        return (self.metric == "time_s" and self.remeasured is not None
                and self.measured > HOST_BOUND_RATIO * self.remeasured)

    @property
    def label(self) -> str:
        opts = "".join(f" {k}={v}" for k, v in self.options.items())
        return f"{self.kernel}[{self.impl}]{opts} {self.problem.describe()}"


def load_cases(suite: str | None = None, kernel: str | None = None) -> list[Case]:
    text = (Path(__file__).parent / "data" / "validation_cases.csv").read_text()
    cases = []
    for line, r in enumerate(csv.DictReader(text.splitlines()), start=2):
        if suite and not r["suite"].startswith(suite):
            continue
        if kernel and r["kernel"] != kernel:
            continue
        problem = AttentionProblem(
            batch=int(r["batch"]), heads=int(r["heads"]), kv_heads=int(r["kv_heads"]) if r["kv_heads"] else None,
            seq_len=int(r["seq_len"]), kv_len=int(r["kv_len"]) if r["kv_len"] else None, head_dim=int(r["head_dim"]),
            causal=r["causal"] == "True", dtype=r["dtype"], pass_=r["pass"])
        cases.append(Case(suite=r["suite"], hardware=r["hardware"], kernel=r["kernel"], impl=r["impl"],
                          problem=problem, options=json.loads(r["options"] or "{}"), metric=r["metric"],
                          measured=float(r["measured"]), source=r["source"],
                          remeasured=float(r["remeasured"]) if r.get("remeasured") else None,
                          l2_start=r.get("l2_start") or "empty"))
        check_l2_start(cases[-1].l2_start, f"gpusim/data/validation_cases.csv line {line}")
    if not cases:
        raise InputError(f"validate: no cases match suite={suite!r} kernel={kernel!r}")
    return cases


def predicted_value(result, metric: str) -> float:
    if metric == "kernel_cycles":  # the launches' own time (no launch gaps) in SM cycles
        return sum(launch.time_s for launch in result.launches) * result.info["sm_clock_hz"]
    return float(getattr(result, metric))


#: Causal query lengths up to which a CTA walks only a few K/V tiles, so that its masked and unmasked tile loops
#: alternate within a few tiles (validation/README.md run 21: FA2 at N = 512 stalls on instruction fetch, at 2048 not;
#: the model has it for FA2's kernel, runs 35-36).
SHORT_CAUSAL_ROWS = 1024
#: Predicted tensor-core busy share above which a fast prediction points at the power-capped clock: run 10's
#: decode kernel (52-57% tensor pipe) ran at 1.70 GHz, run 7's FA2 kernels at 1.79 GHz.
CLOCK_CAPPED_TENSOR_BUSY = 0.3


def suspect(case: Case, result, error: float) -> str:
    """A first guess at the mechanism behind a miss, from what the prediction says bounds it."""
    if case.host_bound:
        return (f"host-bound measurement (not gated): a CUDA-graph replay of the same case took "
                f"{case.remeasured * 1e6:.1f} us")
    if abs(error) < 0.10:
        return ""
    problem = case.problem
    if case.metric in ("time_s", "kernel_cycles") and error < 0 and problem.seq_len == 1:
        return ("decode: short kernels' fixed costs (SDPA's combine kernel takes 3.9 us, the model's 1.0: "
                "validation/README.md run 19), and HBM serving a burst of in-step CTAs interleaved where the model "
                "serves first come first served (run 18; do_bench's flush, run 25, is modelled)")
    if case.metric == "time_s" and case.measured < HOST_BOUND_BELOW_S:
        return "launch overhead / host-bound small kernel"
    if case.metric == "hbm_read_bytes" and _causal_walk_near_l2(case):
        return _causal_walk_suspect(error)
    if case.metric == "hbm_read_bytes" and error < 0 and problem.seq_len >= 32768:
        if case.kernel == "fa2":
            return ("K/V re-read from DRAM more than modelled: FA2's two CTAs on an SM move apart faster than the "
                    "model's (a Triton forward of its shape compiled to mma.sync, as FA2 issues its MMAs, with 128-key "
                    "tiles: 0.048 of a CTA per wave at first, 0.44 apart by wave 12; the model's 0.017-0.022, 0.21 by "
                    "wave 12: validation/README.md run 55, thirty-first session; Drift.partner_passes)")
        return ("K/V re-read from DRAM more than modelled: CTAs fall out of step faster than the model's drift "
                "(cta_duration_jitter, alike for every kernel; validation/README.md runs 31-32, 45-46)")
    if case.metric == "hbm_read_bytes" and error > 0 and problem.seq_len >= 32768 and case.kernel == "fa2":
        return ("K/V the GPU's L2 keeps between partners far apart: once the stream between an SM's two CTAs outgrows "
                "the L2 the model re-reads all of it in every later wave (Drift.partner_passes), where the GPU keeps "
                "part of it (validation/README.md, twenty-sixth session)")
    if case.metric == "hbm_read_bytes" and error > 0 and _heads_fit_l2(case):
        return ("K/V re-read at head boundaries more than the GPU does: in each wave that straddles two heads and the "
                "wave after it the model re-reads about half of a head's K/V (exact mode: 17 MB at every boundary of "
                "cuDNN's forward at 8 heads of 32k tokens, d = 128), where the H200's come to about 8 MB "
                "(validation/README.md, thirty-third session)")
    if case.metric == "hbm_read_bytes" and error > 0 and problem.seq_len >= 32768:
        return ("K/V kept between waves that the model evicts: cuDNN's CTAs stay more in step than modelled (its d = 64 "
                "forward at any length: validation/README.md run 31), or folded mode's sampled K/V walk where one "
                "head's K/V is about the L2's size (run 47; twenty-fourth session)")
    if case.metric in ("hbm_read_bytes", "hbm_write_bytes"):
        return "L2 capacity and eviction order (write-back timing)" if problem.seq_len >= 8192 else "L2 residency"
    if case.metric == "l2_tag_bytes" and error > 0:
        return ("L2 lookups merged: CTAs that read the same lines at about the same moment (a short launch's, in step) "
                "are served by fewer tag lookups than requests, which the model does not merge (run 56: a buffer every "
                "SM reads in step is looked up 0.27 times per byte it delivers, cuDNN's forward at 4k tokens 0.44, "
                "FA2's 0.84; validation/README.md)")
    if case.metric in ("l2_bytes", "l2_tag_bytes"):
        return "L2 traffic per tile (sector granularity, spills, lookups forwarded between partitions: run 56)"
    modelled_cap = getattr(result, "info", {}).get("board_power_w") is not None  # the clock follows the cap
    if case.metric in ("time_s", "kernel_cycles") and error < 0 and problem.causal \
            and problem.seq_len <= SHORT_CAUSAL_ROWS and problem.pass_ == "fwd":
        if case.kernel == "fa2":
            return ("instruction fetch: short causal CTAs run their prologue and first tiles as straight-line code "
                    "beside a partner in another path, evicting each other from the SM's instruction cache (modelled "
                    "from the kernel's SASS, validation/README.md runs 21, 35, 36; what is left is not told apart)")
        return ("instruction fetch: short causal CTAs alternate their masked and unmasked tile loops, two large "
                "code paths that co-resident CTAs evict from the SM's instruction cache (validation/README.md runs "
                "21, 23; modelled for FA2's kernel only, whose SASS was read)")
    backward = case.metric in ("time_s", "kernel_cycles") and problem.pass_ != "fwd"
    if backward and case.impl == "cudnn":
        if error < 0:
            return ("backward fixed cost per CTA: cuDNN's 128-key CTA spends about 12k (d = 128) / 9.5k (d = 64) "
                    "cycles beyond its steps, the model 5.5k / 3.1k: its consumers' first wait for K and V, its epilogue's "
                    "barriers and dK/dV stores, and slower first steps (validation/README.md runs 39, 41)")
        return ("backward pace: with its warpgroups held in step by the barrier, the model's cuDNN step at d = 64 "
                "is about 9% slow on long loops (2766 cycles against 2543) and 5% fast at d = 128 (3773 against "
                "3976): where the GPU overlaps its exponentials with the MMAs is not known (validation/README.md "
                "run 40, eighteenth session)")
    if backward and error < 0 and case.impl == "flash":
        return ("backward fixed costs: FA2's CTA spends about 12k cycles beyond its loop at d = 128 (the model "
                "7.7k), waiting on global memory; PyTorch's layout copies issue at 2.95 instructions per cycle per "
                "SM, the model at 4; one-wave auxiliary kernels take 7-10k cycles, the model's 2k "
                "(validation/README.md runs 38, 39)")
    if case.metric == "time_s" and error > 0 and modelled_cap and "dram" in case.suite:
        return ("clock: these times are single Nsight Compute replays, which ran above the power-capped clock the "
                "model uses for sustained calls (validation/README.md run 15)")
    if (case.metric == "time_s" and error < 0 and not modelled_cap
            and result.unit_busy.get("tensor", 0.0) >= CLOCK_CAPPED_TENSOR_BUSY):
        return ("SM clock under load: tensor-heavy kernels ran at 1.6-1.8 GHz under the power cap (validation/"
                "README.md runs 2, 7, 10), the preset's clock is fixed")
    return f"{result.bound}-bound prediction: busiest unit {result.busiest_unit}"


#: K/V bytes per head, over the L2's capacity, of the causal FA2 forwards whose walks run 43 replayed (0.55 at 32k
#: tokens and d = 128, 1.1 at 128k and d = 64) and of the head counts whose CTAs walk several heads at once (0.27 at
#: 16k): past the upper bound the K/V is streamed, below the lower one it stays in L2.
CAUSAL_WALK_KV_OVER_L2 = (0.25, 1.2)


def _causal_walk_near_l2(case: Case) -> bool:
    """FA2's causal forward on the H200 (run 43's GPU) with one head's K/V at about the L2's capacity."""
    problem = case.problem
    if not (case.kernel == "fa2" and case.hardware == "h200" and problem.causal and problem.pass_ == "fwd"):
        return False
    kv_bytes_per_head = 2 * problem.kv_len * problem.head_dim * problem.element_bytes
    low, high = CAUSAL_WALK_KV_OVER_L2
    return low <= kv_bytes_per_head / get_preset(case.hardware).l2_capacity_bytes <= high


def _heads_fit_l2(case: Case) -> bool:
    """A non-causal forward of several heads, each of whose K/V fits the L2 (steady_state.kept_between_boundaries)."""
    problem = case.problem
    if problem.causal or problem.pass_ != "fwd" or problem.batch * problem.kv_heads < 2:
        return False
    kv_bytes_per_head = 2 * problem.kv_len * problem.head_dim * problem.element_bytes
    return kv_bytes_per_head <= get_preset(case.hardware).l2_capacity_bytes


def _causal_walk_suspect(error: float) -> str:
    """Why a causal FA2 forward's DRAM reads miss: the L2's victims decide its re-reads (runs 43-44, 58, 63-64), and
    SDPA's kernel reads more than a Triton kernel of its grid and tiles (run 42 against 43-44) because it issues
    mma.sync where Triton issues wgmma (run 55)."""
    where = ("each causal CTA walks K/V down from its own diagonal, so the CTAs running together keep a head's K/V "
             "live at about the L2's capacity, each tile re-read at 0.25-0.9 of it")
    if error < 0:
        return (f"causal K/V walks re-read more than modelled: {where}. The model's L2 picks those victims as a tree "
                "pseudo-LRU does, with one victim-rank distribution (engine.l2.TREE_PLRU_VICTIM_RANKS); FA2's "
                "mma.sync CTAs also drift within their walks, where a Triton forward of its shape with wgmma reads "
                "K/V 1.8-3.2 times per head and SDPA 2.7-4.0 (validation/README.md runs 55, 58; thirtieth session)")
    return (f"causal K/V walks kept by the GPU's L2 where the model's loses them: {where}. The model's tree "
            "pseudo-LRU victims come from one rank distribution, measured on run 58's 4-head walk; replayed through "
            "the model's L2, run 58's walks read 2.21 / 2.83 / 1.57 K/V per head where the GPU read 1.71 / 2.27 / "
            "1.42 (validation/README.md, thirtieth session). At one head of 128k tokens, d = 64, a Triton forward of "
            "FA2's shape read K/V 1.92 times (runs 29, 43)")


def run_validation(args) -> int:
    from gpusim.kernels import available
    from gpusim.runner import run_points
    from gpusim.scenario import Point

    cases = load_cases(args.suite, args.kernel)
    built = set(available())
    too_slow = lambda c: (c.problem.causal and not getattr(args, "all", False)  # noqa: E731
                          and (c.problem.seq_len > CAUSAL_SEQ_LEN_LIMIT or c.problem.pass_ != "fwd"))
    skipped = [c for c in cases if c.kernel not in built or too_slow(c)]
    cases = [c for c in cases if c.kernel in built and not too_slow(c)]
    keys, points = {}, []
    for case in cases:
        key = _point_key(case)
        if key not in keys:
            keys[key] = len(points)
            points.append(Point(kernel=case.kernel, problem=case.problem, hardware=get_preset(case.hardware),
                                options=case.options, l2_start=case.l2_start))
    import sys
    results = run_points(points, jobs=getattr(args, "jobs", 1) or 1, progress=sys.stderr.isatty())
    rows = []
    for case in cases:
        result = results[keys[_point_key(case)]]
        if isinstance(result, Exception):
            skipped.append(case)
            continue
        predicted = predicted_value(result, case.metric)
        error = predicted / case.measured - 1.0
        rows.append({"suite": case.suite, "hardware": case.hardware, "kernel": case.kernel, "impl": case.impl,
                     "case": case.label, "metric": case.metric, "measured": case.measured, "predicted": predicted,
                     "error": error, "bound": result.bound, "suspect": suspect(case, result, error),
                     "gated": not case.host_bound,
                     "source": case.source, "problem": case.problem.describe()})
    rows += speedup_rows(rows)
    summary = summarize(rows)
    _print(rows, summary, skipped)
    out = Path(args.out)
    _write(out, rows, summary)
    failed = [s for s in summary if s["gated"] and not s["pass"]]
    return 1 if failed else 0


def _point_key(case: Case) -> tuple:
    """What a case's simulation depends on: cases that share it share one simulation."""
    return case.hardware, case.kernel, case.problem, json.dumps(case.options, sort_keys=True), case.l2_start


def speedup_rows(rows: list[dict], pair: tuple = SPEEDUP) -> list[dict]:
    """One row per problem that a suite times with both kernels of `pair` (fast kernel, its impl, baseline
    kernel, its impl): the fast one's speed-up over the baseline, measured and predicted, and which of the two
    predictions is off."""
    fast, fast_impl, base, base_impl = pair
    timed = {(r["suite"], r["kernel"], r["impl"], r["problem"]): r for r in rows if r["metric"] == "time_s"}
    derived = []
    for (suite, kernel, impl, problem), a in timed.items():
        b = timed.get((suite, base, base_impl, problem))
        if (kernel, impl) != (fast, fast_impl) or b is None:
            continue
        measured, predicted = b["measured"] / a["measured"], b["predicted"] / a["predicted"]
        derived.append({"suite": suite, "hardware": a["hardware"], "kernel": f"{fast}/{base}",
                        "impl": f"{fast_impl}/{base_impl}",
                        "case": f"{fast}[{fast_impl}] / {base}[{base_impl}] {problem}",
                        "metric": "speedup", "measured": measured, "predicted": predicted,
                        "error": predicted / measured - 1.0, "bound": "",
                        "suspect": f"time error {fast} {a['error']:+.1%}, {base} {b['error']:+.1%}",
                        "gated": a["gated"] and b["gated"], "problem": problem,
                        "source": a["source"] if a["source"] == b["source"] else f"{a['source']}; {b['source']}"})
    return derived


def tolerance(suite: str, kernel: str, impls: set, metric: str) -> tuple | None:
    """(median, worst) |error| a group must stay within, or None where it is only reported."""
    if len(impls) == 1:
        (impl,) = impls
        for (prefix, name, m), tol in IMPL_TOLERANCES.items():
            if suite.startswith(prefix) and impl == name and m == metric:
                return tol
    return next((t for (prefix, kernels, m), t in TOLERANCES.items()
                 if suite.startswith(prefix) and kernel in kernels and m == metric), None)


def summarize(rows: list[dict]) -> list[dict]:
    """Per (suite, kernel, metric): median, worst and mean error over the rows that are gated (host-bound
    measurements are counted apart), and whether they meet the group's tolerance."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["suite"], r["kernel"], r["metric"]), []).append(r)
    summary = []
    for (suite, kernel, metric), members in sorted(groups.items()):
        judged = [r for r in members if r.get("gated", True)]
        basis = judged or members  # all host-bound: reported, not gated
        errors = [abs(r["error"]) for r in basis]
        median, worst = statistics.median(errors), max(errors)
        bias = statistics.mean(r["error"] for r in basis)
        tol = tolerance(suite, kernel, {r.get("impl") for r in judged}, metric) if judged else None
        summary.append({"suite": suite, "kernel": kernel, "metric": metric, "cases": len(basis),
                        "host_bound": len(members) - len(judged),
                        "median_abs_error": median, "worst_abs_error": worst, "bias": bias, "gated": tol is not None,
                        "tolerance": tol, "pass": tol is None or (median <= tol[0] and worst <= tol[1])})
    return summary


def _print(rows, summary, skipped) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=220)
    table = Table(title="validation cases")
    for col in ("suite", "case", "metric", "measured", "predicted", "error", "suspect"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["suite"], r["case"], r["metric"], f"{r['measured']:.4g}", f"{r['predicted']:.4g}",
                      f"{r['error']:+.1%}", r["suspect"])
    console.print(table)
    table = Table(title="summary (|error|)")
    for col in ("suite", "kernel", "metric", "cases", "host-bound", "median", "worst", "bias", "tolerance", "status"):
        table.add_column(col)
    for s in summary:
        tol = f"{s['tolerance'][0]:.0%} / {s['tolerance'][1]:.0%}" if s["tolerance"] else "reported"
        status = ("PASS" if s["pass"] else "FAIL") if s["gated"] else "-"
        table.add_row(s["suite"], s["kernel"], s["metric"], str(s["cases"]), str(s["host_bound"] or ""),
                      f"{s['median_abs_error']:.1%}",
                      f"{s['worst_abs_error']:.1%}", f"{s['bias']:+.1%}", tol, status)
    console.print(table)
    if skipped:
        console.print(f"skipped {len(skipped)} case(s) (kernel not built, problem does not fit the hardware, or causal "
                      f"beyond {CAUSAL_SEQ_LEN_LIMIT} tokens or backward, without --all): "
                      f"{', '.join(sorted({c.kernel for c in skipped}))}")


def _write(out: Path, rows: list[dict], summary: list[dict]) -> None:
    from gpusim.atomic import replaced_dir
    from gpusim.plots.parity import parity_figure

    with replaced_dir(out) as staging:
        with open(staging / "validation.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        with open(staging / "summary.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(summary[0]))
            writer.writeheader()
            writer.writerows(summary)
        for metric in sorted({r["metric"] for r in rows}):
            fig = parity_figure([r for r in rows if r["metric"] == metric], metric)
            for ext in ("png", "svg"):
                fig.savefig(staging / f"parity_{metric}.{ext}", dpi=130 if ext == "png" else None, bbox_inches="tight")
