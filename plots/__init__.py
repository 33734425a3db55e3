"""Figures drawn from result rows (dicts made by gpusim.runner.result_row) or Result objects. Plotting
functions return matplotlib Figures; only the scenario runner and the CLI write them to disk."""

from gpusim.plots.lines import hbm_traffic_figure, line_figure

__all__ = ["line_figure", "hbm_traffic_figure"]
