"""Figures drawn from result rows (dicts made by gpusim.runner.result_row) or Result objects. Plotting
functions return matplotlib Figures; only the scenario runner and the CLI write them to disk.

A scenario's [[plots]] kind K other than line and hbm_traffic is drawn by `K_figure(rows, hardware, title=...)`
from this package: roofline, breakdown, io_law."""

from gpusim.plots.breakdown import breakdown_figure
from gpusim.plots.io_law import io_law_figure
from gpusim.plots.lines import hbm_traffic_figure, line_figure
from gpusim.plots.roofline import roofline_figure

__all__ = ["line_figure", "hbm_traffic_figure", "roofline_figure", "breakdown_figure", "io_law_figure"]
