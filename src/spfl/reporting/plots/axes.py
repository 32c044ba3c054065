"""Panels and axes shared by the plotters: one panel per grid point wrapped into rows, the x axis of a
swept setting (log axes with a few explicit ticks), tick labels thinned out after layout, one legend
below the panels, and the check that a table has the columns a figure needs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

from spfl.reporting.plots.style import AXIS_LABELS, LOG_AXES

LOG_TICKS = 12  # a log axis labels every swept value up to this many (overlapping labels are thinned after layout)
MAX_ROW_IN = 10.0  # no row of panels is wider than this (inches): more panels wrap onto further rows


class PlotError(ValueError):
    """A table cannot be drawn as the requested figure; names the figure and the column."""


def panel_names(table: pd.DataFrame) -> list[str]:
    """The table's panels in order of appearance (one unnamed panel for a table without them)."""
    if "panel" not in table:
        return [""]
    return list(dict.fromkeys(table["panel"])) or [""]


def subplots(n_cols: int, n_rows: int, style: Mapping[str, Any], sharey: bool | str = True,
             sharex: bool = True):
    """A grid of panels, each ``width_in`` x ``height_in`` of the style, laid out by matplotlib."""
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(style["width_in"] * n_cols, style["height_in"] * n_rows),
                             sharey=sharey, sharex=sharex, squeeze=False, layout="constrained")
    return fig, axes


def row_width(style: Mapping[str, Any]) -> int:
    """Panels per row: as many as fit in MAX_ROW_IN inches (at least one)."""
    return max(1, int(MAX_ROW_IN // float(style["width_in"])))


def wrapped(n_panels: int, style: Mapping[str, Any], sharey: bool | str = True, sharex: bool = True):
    """One panel per item, wrapped onto rows of at most row_width(style) panels (no row wider than
    MAX_ROW_IN); the axes left over in the last row are removed.  Returns the figure, the 2-D axes array
    and the list of the n_panels axes in reading order."""
    cols = min(n_panels, row_width(style))
    rows = -(-n_panels // cols)
    fig, axes = subplots(cols, rows, style, sharey=sharey, sharex=sharex)
    used = list(axes.flat[:n_panels])
    for ax in axes.flat[n_panels:]:
        ax.remove()
    for ax in used:  # every panel labels its own x ticks (a shared axis keeps only the limits in common)
        ax.xaxis.set_tick_params(labelbottom=True)
    return fig, axes, used


def first_column(axes, used) -> list:
    """The used axes at the start of each row (where the y label goes)."""
    return [ax for i, ax in enumerate(axes.flat) if ax in used and i % axes.shape[1] == 0]


def log_ticks(values: Sequence[float], most: int = LOG_TICKS) -> list[float]:
    """At most ``most`` of the (positive) values, spread evenly on a log scale, both ends kept."""
    values = sorted({float(v) for v in values if v > 0})
    if len(values) <= most:
        return values
    logs = np.log10(values)
    picks = [int(np.argmin(np.abs(logs - t))) for t in np.linspace(logs[0], logs[-1], most)]
    return [values[i] for i in dict.fromkeys(picks)]


def x_axis(ax, table: pd.DataFrame, x: str) -> None:
    """Label the x axis; a log axis gets at most LOG_TICKS labelled ticks, a swept setting a tick per value."""
    ax.set_xlabel(AXIS_LABELS.get(x, x))
    if x in LOG_AXES and (table[x] > 0).all():
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(log_ticks(table[x].unique())))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
    elif x in ("rank", "iteration", "round"):
        ax.xaxis.get_major_locator().set_params(integer=True)
    elif x in table and pd.api.types.is_numeric_dtype(table[x]) and 1 < table[x].nunique() <= LOG_TICKS:
        # a swept setting: a tick at every swept value, labelled as the config writes it
        ax.xaxis.set_major_locator(FixedLocator(sorted(table[x].dropna().unique())))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))


def drawn_tick_labels(axis) -> list[tuple[float, Any]]:
    """(location, Text) of the major tick labels an axis draws: visible, non-empty, inside the view."""
    low, high = sorted(axis.get_view_interval())
    span = (high - low) * 1e-9
    return [(loc, label) for loc, label in zip(axis.get_majorticklocs(), axis.get_majorticklabels())
            if label.get_visible() and label.get_text() and low - span <= loc <= high + span]


def _overlap(boxes, vertical: bool, pad: float) -> bool:
    spans = sorted((b.y0, b.y1) if vertical else (b.x0, b.x1) for b in boxes)
    return any(nxt[0] < prev[1] + pad for prev, nxt in zip(spans, spans[1:]))


def declutter_ticks(fig) -> None:
    """Thin out tick labels that overlap after layout: keep every other tick until none do."""
    renderer = fig.canvas.get_renderer()
    axes = [(axis, vertical) for ax in fig.axes for axis, vertical in ((ax.xaxis, False), (ax.yaxis, True))]
    for _ in range(6):
        fig.draw_without_rendering()
        crowded = []
        for axis, vertical in axes:
            shown = drawn_tick_labels(axis)
            if len(shown) >= 3 and _overlap([t.get_window_extent(renderer) for _, t in shown], vertical,
                                            pad=2.0 * fig.dpi / 72):
                crowded.append((axis, shown))
        if not crowded:
            return
        for axis, shown in crowded:
            kept = shown[::2]
            axis.set_ticks([loc for loc, _ in kept], labels=[t.get_text() for _, t in kept])


def legend_below(fig, axes, extra: Sequence[tuple[Any, str]] = ()) -> None:
    """One legend for all panels in a row below them; the figure grows by its height (and is made wide
    enough for it), so the axes keep their size."""
    handles, labels = axes.flat[0].get_legend_handles_labels()
    for ax in axes.flat[1:]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    for h, lab in extra:
        handles.append(h)
        labels.append(lab)
    if not handles:
        return
    width, height = fig.get_size_inches()
    ncols = len(handles)
    while True:
        legend = fig.legend(handles, labels, loc="outside lower center", ncols=ncols, frameon=False)
        fig.draw_without_rendering()
        box = legend.get_window_extent(fig.canvas.get_renderer())
        if box.width <= 0.98 * width * fig.dpi or ncols == 1:
            break
        legend.remove()
        ncols = max(1, min(ncols - 1, int(ncols * 0.98 * width * fig.dpi / box.width)))
    fig.set_size_inches(max(width, box.width / fig.dpi + 0.2), height + box.height / fig.dpi + 0.1)


def need_columns(table: pd.DataFrame, figure: str, *columns: str) -> None:
    """A PlotError naming the figure and the first missing column, or an empty table."""
    missing = [c for c in columns if c not in table]
    if missing:
        raise PlotError(f"figure '{figure}': table has no column '{missing[0]}' (columns: "
                        f"{', '.join(table.columns)})")
    if table.empty:
        raise PlotError(f"figure '{figure}': the table is empty")
