"""Plotters of the curve figures: lines per method against a swept setting or the round, one panel per
grid point (accuracy per round, final accuracy, ablation), and the sign and modulus packet errors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from spfl.reporting.plots.axes import first_column, legend_below, need_columns, panel_names, wrapped, x_axis
from spfl.reporting.plots.marks import diverged_legend_entry, draw_curves, mark_diverged, note_coinciding
from spfl.reporting.plots.style import DASHED, LOG_AXES, METHOD_LABELS, method_colors


def _method_figure(table: pd.DataFrame, figure: str, x: str, ylabel: str, style: Mapping[str, Any]):
    """Lines per method against x, one panel per grid point (accuracy figures and ablation)."""
    need_columns(table, figure, x, "method", "mean", "ci_low", "ci_high")
    panels = panel_names(table)
    fig, axes, used = wrapped(len(panels), style)
    colors = method_colors(style["palette"])
    log = x in LOG_AXES and (table[x] > 0).all()
    for ax, panel in zip(used, panels):
        data = table[table["panel"] == panel] if "panel" in table else table
        draw_curves(ax, data, x, "method", style, colors, METHOD_LABELS, DASHED, bounds=(0.0, 100.0),
                    dodge=(x != "round"), log=log)
        mark_diverged(ax, data, x, colors, per_round=(x == "round"))
        note_coinciding(ax, data, x, "method", METHOD_LABELS, tolerance=0.5)  # about two test images on digits
        ax.set_title(panel)
        x_axis(ax, table, x)
    for ax in first_column(axes, used):
        ax.set_ylabel(ylabel)
    diverged_legend_entry(fig, axes)
    legend_below(fig, axes)
    return fig


def figure_rounds(table, figure, x, style):
    """Test accuracy per round, a line per method, one panel per grid point."""
    return _method_figure(table, figure, "round", "Test accuracy (%)", style)


def figure_final(table, figure, x, style):
    """Final test accuracy against the swept setting x, a line per method, one panel per other grid point."""
    return _method_figure(table, figure, x, "Final test accuracy (%)", style)


def figure_packet_errors(table, figure, x, style):
    """Sign (solid) and modulus (dashed) packet error against x: one panel per method (and per other swept
    point), so the two packets of one method are compared where they cannot hide another method's lines;
    a note says where they coincide."""
    need_columns(table, figure, x, "method", "packet", "mean")
    table = table.assign(panel=[(f"{p}, " if p else "") + METHOD_LABELS.get(m, m)
                                for p, m in zip(table["panel"] if "panel" in table else [""] * len(table),
                                                table["method"])])
    panels = panel_names(table)
    fig, axes, used = wrapped(len(panels), style)
    colors = method_colors(style["palette"])
    shades = {"sign": 1.0, "modulus": 0.55}
    for ax, panel in zip(used, panels):
        data = table[table["panel"] == panel].dropna(subset=["mean"])
        method = table[table["panel"] == panel]["method"].iloc[0]
        base = np.asarray(matplotlib.colors.to_rgb(colors.get(method, "gray")))
        line_colors = {p: tuple(base * f + (1 - f) * 0.15) for p, f in shades.items()}
        labels = {"sign": "sign packet", "modulus": "modulus packet"}
        draw_curves(ax, data, x, "packet", style, line_colors, {k: f"_{v}" for k, v in labels.items()},
                    {"sign": "-", "modulus": "--"}, bounds=(0.0, 100.0))
        note_coinciding(ax, data, x, "packet", labels, tolerance=0.1, where=(0.98, 0.98))
        mark_diverged(ax, table[table["panel"] == panel], x, colors)
        ax.set_title(panel)
        x_axis(ax, table, x)
    for ax in first_column(axes, used):
        ax.set_ylabel("Mean packet error (%)")
    diverged_legend_entry(fig, axes)
    legend_below(fig, axes, extra=[(Line2D([], [], color="0.3", linestyle="-", marker="o"), "sign packet"),
                                   (Line2D([], [], color="0.3", linestyle="--", marker="o"), "modulus packet")])
    return fig
