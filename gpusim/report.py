"""Terminal tables and the figures a scenario asks for, from result rows."""

from __future__ import annotations

from gpusim.scenario import Scenario

TABLE_COLUMNS = (("kernel", "kernel", str), ("problem", "problem", str), ("time_s", "time (us)", lambda v: f"{v * 1e6:,.1f}"),
                 ("tflops_per_s", "TFLOP/s", lambda v: f"{v:,.1f}"),
                 ("hbm_bytes", "HBM MB", lambda v: f"{v / 1e6:,.2f}"), ("l2_bytes", "L2 MB", lambda v: f"{v / 1e6:,.1f}"),
                 ("hbm_bytes_per_s", "HBM TB/s", lambda v: f"{v / 1e12:,.2f}"), ("bound", "bound", str))


def print_rows(scenario: Scenario, rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{scenario.name} ({scenario.points[0].hardware.name if scenario.points else ''})")
    sweep = list(scenario.hardware_sweep) + (["label"] if any("label" in row for row in rows) else [])
    for key in sweep:
        table.add_column(key)
    for _, title, _ in TABLE_COLUMNS:
        table.add_column(title, justify="right" if title not in ("kernel", "problem", "bound") else "left")
    for row in rows:
        cells = [f"{row.get(k):.4g}" if isinstance(row.get(k), float) else str(row.get(k)) for k in sweep]
        if "does_not_fit" in row:
            cells += [row["kernel"], row["problem"], "does not fit"] + [""] * (len(TABLE_COLUMNS) - 4)
            cells.append(row["does_not_fit"][:60])
        else:
            cells += [fmt(row[key]) for key, _, fmt in TABLE_COLUMNS]
        table.add_row(*cells)
    Console(width=200).print(table)


def scenario_figures(scenario: Scenario, rows: list[dict]) -> dict:
    """{file stem: Figure} for every [[plots]] entry of the scenario."""
    from gpusim.plots import hbm_traffic_figure, line_figure

    figures = {}
    for i, spec in enumerate(scenario.plots):
        kind = spec.get("kind", "line")
        selected = [r for r in rows if all(r.get(k) == v for k, v in spec.get("filter", {}).items())]
        name = spec.get("file", f"{scenario.name}_{i}")
        if kind == "hbm_traffic":
            hw = scenario.points[0].hardware
            sram = hw.sram_per_sm_bytes or hw.smem_per_sm_bytes  # the M of FlashAttention's IO bound
            figures[name] = hbm_traffic_figure(selected, sram, spec.get("title", ""))
        elif kind == "line":
            figures[name] = line_figure(selected, spec["x"], spec["y"], spec.get("series", "kernel"),
                                        logx=spec.get("logx", False), logy=spec.get("logy", False),
                                        title=spec.get("title", ""))
        else:
            from gpusim import plots
            draw = getattr(plots, f"{kind}_figure", None)
            if draw is None:
                continue
            figures[name] = draw(selected, scenario.points[0].hardware, title=spec.get("title", ""))
    return figures
