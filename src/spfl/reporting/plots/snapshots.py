"""Plotters of the allocation snapshots: who gets the band (each device's share against its distance and
gradient norm, silent devices marked) and the allocation objective per alternating-optimization
iteration."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from spfl.reporting.plots.axes import MAX_ROW_IN, legend_below, need_columns, panel_names, subplots, x_axis
from spfl.reporting.plots.marks import draw_curves, note_diverged
from spfl.reporting.plots.style import MARKERS, METHOD_LABELS, method_colors

SILENT_COLOR = "0.55"


def figure_allocation(table, figure, x, style):
    """Who gets the band: every device at every snapshot round (all seeds) as a point, its share of the
    total bandwidth against its distance to the server (top) and its gradient norm relative to the round's
    largest (bottom); one column per panel (budget).  Devices given no bandwidth ("silent") are hollow grey
    points at 0, and each panel says what share of the device-rounds were silent and how their gradients
    compare with the served ones'."""
    need_columns(table, figure, "bandwidth_share_pct", "distance_m", "gradient_norm_rel", "silent", "method")
    panels = panel_names(table)
    rows = [("distance_m", "Distance to the server (m)"),
            ("gradient_norm_rel", "Gradient norm / round's largest")]
    cols = len(panels)
    width = min(float(style["width_in"]), MAX_ROW_IN / cols)
    fig, axes = plt.subplots(len(rows), cols, figsize=(width * cols, style["height_in"] * len(rows)),
                             sharey=False, sharex="row", squeeze=False, layout="constrained")
    colors = method_colors(style["palette"])
    methods = [m for m in dict.fromkeys(table["method"].dropna())]
    for col, panel in enumerate(panels):
        data = table[(table["panel"] == panel) & table["bandwidth_share_pct"].notna()]
        silent = data["silent"].astype(str).str.lower().isin(["true", "1"])
        for row, (column, xlabel) in enumerate(rows):
            ax = axes[row, col]
            for method in methods:
                served = data[(data["method"] == method) & ~silent]
                ax.plot(served[column], served["bandwidth_share_pct"], linestyle="", marker=MARKERS.get(method, "o"),
                        markersize=4, alpha=0.55, color=colors.get(method),
                        label=f"{METHOD_LABELS.get(method, method)}: a device at one snapshot round")
            quiet = data[silent]
            ax.plot(quiet[column], quiet["bandwidth_share_pct"], linestyle="", marker="o", markersize=4,
                    markerfacecolor="none", markeredgecolor=SILENT_COLOR, alpha=0.8,
                    label="silent: given no bandwidth")
            ax.set_xlabel(xlabel)
            ax.set_ylim(bottom=-2)
            if col == 0:
                ax.set_ylabel("Share of $B_{\\mathrm{tot}}$ (%)")
            if row == 0:
                ax.set_title(panel)
                gone = table[(table["panel"] == panel) & (table["n_diverged"].fillna(0) > 0)] \
                    if "n_diverged" in table else table.iloc[0:0]
                lines = [f"{METHOD_LABELS.get(m, m)}: {int(g['n_diverged'].iloc[0])} of {int(g['n_runs'].iloc[0])} "
                         "runs diverged (left out)" for m, g in gone.groupby("method", sort=False)]
                if lines:
                    ax.text(0.02, 0.98, "\n".join(lines), transform=ax.transAxes, fontsize="x-small", va="top",
                            bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "0.5", "alpha": 0.9})
            if row == len(rows) - 1 and len(data):
                share = 100.0 * silent.mean()
                text = f"silent: {share:.0f} % of device-rounds"
                if silent.any() and (~silent).any():
                    text += (f"\nmedian gradient norm: silent {data.loc[silent, column].median():.2f},"
                             f" served {data.loc[~silent, column].median():.2f}")
                note = ax.text(0.02, 0.98, text, transform=ax.transAxes, fontsize="x-small", ha="left", va="top",
                               bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "0.7", "alpha": 0.85})
                note.set_in_layout(False)
    legend_below(fig, axes)
    return fig


def _pick_rounds(rounds: Sequence[int], most: int = 4) -> list[int]:
    rounds = sorted(set(int(r) for r in rounds))
    if len(rounds) <= most:
        return rounds
    picks = np.linspace(0, len(rounds) - 1, most).round().astype(int)
    return [rounds[i] for i in dict.fromkeys(picks)]


def figure_solver(table, figure, x, style):
    """The allocation objective relative to its final value per AO iteration, a line per chosen snapshot
    round (at most four), one panel per grid point."""
    need_columns(table, figure, "metric", "round", "iteration", "mean")
    data = table[table["metric"] == "objective_rel"]
    data = data[data["method"] == data["method"].iloc[0]]
    panels = panel_names(data)
    fig, axes = subplots(len(panels), 1, style)
    chosen = _pick_rounds(data["round"])
    palette = dict(zip(chosen, sns.color_palette("viridis", n_colors=len(chosen))))
    for ax, panel in zip(axes.flat, panels):
        sub = data[(data["panel"] == panel) & data["round"].isin(chosen)]
        labels = {r: f"round {r}" for r in chosen}
        draw_curves(ax, sub, "iteration", "round", style, palette, labels)
        note_diverged(ax, data[data["panel"] == panel], METHOD_LABELS)
        ax.set_title(panel)
        x_axis(ax, sub, "iteration")
    method = METHOD_LABELS.get(data["method"].iloc[0], data["method"].iloc[0])
    axes[0, 0].set_ylabel(f"{method} objective $\\Phi$ / final $\\Phi$")
    legend_below(fig, axes)
    return fig
