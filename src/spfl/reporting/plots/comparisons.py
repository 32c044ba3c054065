"""Plotters of the comparisons on the same seeds: the method minus the best baseline per budget (gain) and
per reconstruction variant (sensitivity), with paired 95 % intervals and hollow markers where a gain is
not significant, and the devices each method serves per round."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from spfl.reporting.plots.axes import MAX_ROW_IN, first_column, legend_below, need_columns, panel_names, wrapped, x_axis
from spfl.reporting.plots.marks import dodged, draw_curves, drawn_interval
from spfl.reporting.plots.style import DASHED, LOG_AXES, METHOD_LABELS, method_colors

HOLLOW_LABEL = "hollow: not significant (the paired 95 % interval contains 0)"
SHORT_BASELINES = {"digital": "digital", "digital_reuse": "dig.+reuse", "scheduling": "sched.",
                   "signsgd": "signSGD", "ideal": "ideal"}
BEST_LABEL = "text at each point: the best baseline there (highest mean final accuracy)"


def _significance_marker(ax, xs, ys, significant, color, marker) -> None:
    """Hollow markers over the points whose paired interval contains 0 (column significant = no)."""
    hollow = np.asarray(significant) == "no"
    if hollow.any():
        ax.plot(np.asarray(xs)[hollow], np.asarray(ys)[hollow], linestyle="", marker=marker, markersize=6,
                markerfacecolor="white", markeredgecolor=color, label="_not_significant")


def _seed_group_rows(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(seed-group name, rows) of a headline table, exploratory first; one unnamed group for old tables."""
    if "seed_group" not in table:
        return [("", table)]
    groups = sorted(dict.fromkeys(table["seed_group"].astype(str)), key=lambda g: g != "exploratory")
    return [(str(table.loc[table["seed_group"] == g, "seeds"].iloc[0]) if "seeds" in table else g,
             table[table["seed_group"] == g]) for g in groups]


def figure_gain(table, figure, x, style):
    """SP-FL minus the best baseline per budget (headline table), one panel per budget experiment, titled
    with the experiment's label: the gain of the final accuracy (per seed group: exploratory and, when
    configured, confirmatory seeds) and, without confirmation seeds, of the accuracy at the round budget,
    with paired 95 % intervals as error bars (from MIN_SEEDS_DRAWN seeds on), a zero line, the paper's
    reported gain, and the name of the best baseline at each point."""
    need_columns(table, figure, "experiment", "budget", "budget_value", "gain_pp", "gain_ci_low", "gain_ci_high", "n")
    experiments = list(dict.fromkeys(table["experiment"]))
    fig, axes, used = wrapped(len(experiments), style, sharey=True, sharex=False)
    colors = method_colors(style["palette"])
    method = table["method"].iloc[0]
    groups = _seed_group_rows(table)
    rounds = ", ".join(dict.fromkeys(table["round_budget"].astype(str))) if "round_budget" in table else ""
    series = []  # (rows, value, low, high, significant, marker, dash, color, label, name the best baseline)
    for i, (name, rows) in enumerate(groups):
        label = f"final accuracy, {name}" if name else "final accuracy"
        color = colors.get(method) if i == 0 else "0.15"
        series.append((rows, "gain_pp", "gain_ci_low", "gain_ci_high", "significant", "o" if i == 0 else "D",
                       "-", color, label, True))
    if len(groups) == 1 and "budget_gain_pp" in table and table["budget_gain_pp"].notna().any():
        series.append((table, "budget_gain_pp", "budget_gain_ci_low", "budget_gain_ci_high", "budget_significant",
                       "s", "--", "0.45", f"accuracy at round {rounds} (round budget)", False))
    paper = float(table["paper_gain_pp"].iloc[0]) if "paper_gain_pp" in table else None
    for ax, experiment in zip(used, experiments):
        title = experiment
        for i, (rows, value, low_col, high_col, sig_col, marker, dash, color, label, named) in enumerate(series):
            data = rows[rows["experiment"] == experiment].sort_values("budget_value")
            if data.empty:
                continue
            budget = data["budget"].iloc[0]
            if "experiment_label" in data:
                title = str(data["experiment_label"].iloc[0])
            log = budget in LOG_AXES and (data["budget_value"] > 0).all()
            xs = dodged(data["budget_value"].to_numpy(float), i - (len(series) - 1) / 2, log)
            mean = data[value].to_numpy(float)
            ax.plot(xs, mean, linestyle=dash, marker=marker, markersize=6, color=color, label=label)
            low, high = drawn_interval(data.assign(ci_low=data[low_col], ci_high=data[high_col]))
            if style["error_bars"] != "none" and not np.all(np.isnan(low)):
                ax.errorbar(xs, mean, yerr=[mean - low, high - mean], fmt="none", ecolor=color, capsize=3)
            if sig_col in data:
                _significance_marker(ax, xs, mean, data[sig_col], color, marker)
            if named and "best_baseline" in data:
                above = i % 2 == 0
                for xv, yv, hi, lo, best in zip(xs, mean, high, low, data["best_baseline"]):
                    if not (isinstance(best, str) and np.isfinite(yv)):
                        continue
                    anchor = (hi if above else lo) if np.isfinite(hi if above else lo) else yv
                    note = ax.annotate(SHORT_BASELINES.get(best, best), (xv, anchor), xytext=(0, 4 if above else -4),
                                       textcoords="offset points", ha="center", va="bottom" if above else "top",
                                       fontsize="xx-small", color=color, rotation=90)
                    note.set_in_layout(False)
            x_axis(ax, data.assign(**{budget: data["budget_value"]}), budget)
        ax.axhline(0.0, color="black", linewidth=0.8)
        if paper is not None:
            ax.axhline(paper, color="0.5", linestyle=":", linewidth=1.2,
                       label=f"paper: up to {paper:g} pp (CIFAR-10)")
        ax.set_title(title)
        ax.margins(y=0.15)
    for ax in first_column(axes, used):
        ax.set_ylabel(f"{METHOD_LABELS.get(method, method)} minus\nthe best baseline (pp)")
    hollow = any(line.get_label() == "_not_significant" for ax in axes.flat for line in ax.get_lines())
    extra = [(Line2D([], [], linestyle="", marker="o", markerfacecolor="white", markeredgecolor="0.3"),
              HOLLOW_LABEL)] if hollow else []
    if "best_baseline" in table:
        extra.append((Line2D([], [], linestyle="", marker="$ab$", color="0.3"), BEST_LABEL))
    legend_below(fig, axes, extra=extra)
    return fig


def figure_devices_served(table, figure, x, style):
    """Devices served per round against the budget, one row of panels per headline experiment (titled with its
    label): devices whose sign packet arrived (left) and devices whose full gradient arrived (right), one line
    per method, the exploratory seeds (the table has the confirmation seeds too)."""
    need_columns(table, figure, "experiment", "budget_value", "quantity", "method", "mean")
    if "seed_group" in table and (table["seed_group"] == "exploratory").any():
        table = table[table["seed_group"] == "exploratory"]
    experiments = list(dict.fromkeys(table["experiment"]))
    quantities = [("sign arrived", "Devices whose sign arrived\n(served) per round"),
                  ("full gradient arrived", "Devices whose full gradient\narrived per round")]
    cols = len(quantities)
    width = min(float(style["width_in"]), MAX_ROW_IN / cols)
    fig, axes = plt.subplots(len(experiments), cols, figsize=(width * cols, style["height_in"] * len(experiments)),
                             sharey="row", sharex=False, squeeze=False, layout="constrained")
    colors = method_colors(style["palette"])
    for row, experiment in enumerate(experiments):
        rows = table[table["experiment"] == experiment]
        budget = rows["budget"].iloc[0]
        label = str(rows["experiment_label"].iloc[0]) if "experiment_label" in rows else experiment
        seeds = f", {rows['seeds'].iloc[0]}" if "seeds" in rows else ""
        total = rows["num_devices"].dropna()
        log = budget in LOG_AXES and (rows["budget_value"] > 0).all()
        for col, (quantity, ylabel) in enumerate(quantities):
            ax = axes[row, col]
            data = rows[rows["quantity"] == quantity].assign(**{budget: rows["budget_value"]})
            draw_curves(ax, data, budget, "method", style, colors, METHOD_LABELS, DASHED, bounds=(0.0, None),
                        dodge=True, log=log)
            if len(total) and total.nunique() == 1:
                ax.axhline(float(total.iloc[0]), color="0.6", linestyle=":", linewidth=1.0,
                           label="all devices (K)")
            ax.set_title(f"{label}{seeds}" if col == 0 else label, fontsize="small")
            ax.set_ylim(bottom=0)
            x_axis(ax, data, budget)
            if col == 0:
                ax.set_ylabel(ylabel)
            else:
                ax.set_ylabel(ylabel)
                ax.yaxis.set_tick_params(labelleft=True)
    legend_below(fig, axes)
    return fig


def figure_sensitivity(table, figure, x, style):
    """Gain of the method over the best baseline per reconstruction variant (y, categories), with paired
    95 % intervals (from MIN_SEEDS_DRAWN seeds on), one panel per budget; a zero line."""
    key = x or "variant"
    need_columns(table, figure, key, "panel", "gain_pp", "gain_ci_low", "gain_ci_high", "n")
    panels = panel_names(table)
    variants = list(dict.fromkeys(table[key].astype(str)))
    style = {**style, "height_in": max(float(style["height_in"]), 0.32 * len(variants) + 1.3)}
    fig, axes = plt.subplots(1, len(panels), figsize=(style["width_in"] * len(panels), style["height_in"]),
                             sharey=True, squeeze=False, layout="constrained")
    colors = method_colors(style["palette"])
    method = table["method"].iloc[0]
    color = colors.get(method)
    position = {v: i for i, v in enumerate(variants)}
    for ax, panel in zip(axes.flat, panels):
        data = table[table["panel"] == panel]
        ys = data[key].astype(str).map(position).to_numpy(float)
        mean = data["gain_pp"].to_numpy(float)
        ax.plot(mean, ys, linestyle="", marker="o", markersize=6, color=color,
                label=f"{METHOD_LABELS.get(method, method)} minus the best baseline")
        low, high = drawn_interval(data.assign(ci_low=data["gain_ci_low"], ci_high=data["gain_ci_high"]))
        if style["error_bars"] != "none" and not np.all(np.isnan(low)):
            ax.errorbar(mean, ys, xerr=[mean - low, high - mean], fmt="none", ecolor=color, capsize=3)
        _significance_marker(ax, mean, ys, data["significant"], color, "o")
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_title(panel)
        ax.set_xlabel("Gain in final test accuracy (pp)")
    # "normalize=all+slot_share=optimized" -> "normalize: all\n+ slot_share: optimized": the change in words
    axes[0, 0].set_yticks(range(len(variants)),
                          labels=[v.replace("=", ": ").replace("+", "\n+ ") for v in variants])
    axes[0, 0].set_ylim(len(variants) - 0.5, -0.5)  # the first variant (default) on top
    axes[0, 0].set_ylabel("Reconstruction variant")
    hollow = any(line.get_label() == "_not_significant" for ax in axes.flat for line in ax.get_lines())
    legend_below(fig, axes, extra=[(Line2D([], [], linestyle="", marker="o", markerfacecolor="white",
                                           markeredgecolor="0.3"), HOLLOW_LABEL)] if hollow else [])
    return fig
