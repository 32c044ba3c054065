"""What the plotters draw in a panel: mean curves with their 95 % interval (only from ``MIN_SEEDS_DRAWN``
seeds: a t-interval from two seeds is mostly the t quantile and hides the data), notes on curves that
coincide, and the marks of diverged runs.

Diverged runs are in no mean, so a figure must say where runs are missing: wherever a table row has
``n_diverged`` > 0, a cross in the method's color at the top of the panel says "k/n diverged" (k of
the n runs asked for) -- above the x value for final-value figures, at the divergence round for
per-round figures -- or, for figures without a run axis, a note in the panel's corner.  The legend
explains the cross.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.transforms import blended_transform_factory

from spfl.reporting.plots.style import MARKERS

MIN_SEEDS_DRAWN = 3  # no band or error bar from fewer seeds
DIVERGED_MARKER = "X"
DIVERGED_LABEL = "diverged runs (not averaged)"


def coinciding(data: pd.DataFrame, x: str, hue: str, tolerance: float) -> list[tuple[Any, Any, float]]:
    """Pairs of curves (hue values) whose means agree within ``tolerance`` at every common x, with their
    largest difference: a reader cannot tell them apart, so the figure says so."""
    means = data.pivot_table(index=x, columns=hue, values="mean", aggfunc="first", sort=False)
    pairs = []
    keys = list(dict.fromkeys(data[hue]))
    keys = [k for k in keys if k in means.columns]  # a curve whose every run diverged has no mean
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            both = means[[a, b]].dropna()
            if len(both) >= 2:
                gap = float((both[a] - both[b]).abs().max())
                if gap <= tolerance:
                    pairs.append((a, b, gap))
    return pairs


def note_coinciding(ax, data: pd.DataFrame, x: str, hue: str, labels: Mapping[Any, str], tolerance: float,
                    unit: str = "pp", where: tuple[float, float] = (0.98, 0.02)) -> list[str]:
    """A note in the panel naming the curves that lie on top of each other (identical, or within
    ``tolerance``); returns the note's lines."""
    lines = []
    for a, b, gap in coinciding(data, x, hue, tolerance):
        how = "identical" if gap <= 1e-9 else f"within {tolerance:g} {unit}"
        lines.append(f"{labels.get(a, a)} = {labels.get(b, b)} ({how} at every point)")
    if lines:
        text = ax.text(*where, "\n".join(lines), transform=ax.transAxes, fontsize="x-small", ha="right",
                       va="bottom" if where[1] < 0.5 else "top", color="0.25",
                       bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "0.7", "alpha": 0.85})
        text.set_in_layout(False)
    return lines


def drawn_interval(data: pd.DataFrame, bounds: tuple[float | None, float | None] = (None, None)):
    """(low, high) of the rows' 95 % intervals clipped to ``bounds``, NaN where fewer than
    MIN_SEEDS_DRAWN seeds stand behind the row (no band or error bar is drawn there)."""
    enough = data["n"].fillna(0).to_numpy(float) >= MIN_SEEDS_DRAWN if "n" in data else np.zeros(len(data), bool)
    low = np.where(enough, np.clip(data["ci_low"].to_numpy(float), *bounds), np.nan)
    high = np.where(enough, np.clip(data["ci_high"].to_numpy(float), *bounds), np.nan)
    return low, high


def draw_curves(ax, data: pd.DataFrame, x: str, hue: str, style: Mapping[str, Any], colors: Mapping[str, Any],
                labels: Mapping[str, str], dashes: Mapping[str, Any] | None = None, linestyle: str = "-",
                bounds: tuple[float | None, float | None] = (None, None), dodge: bool = False,
                log: bool = False) -> None:
    """Mean line per hue value with its 95 % interval as a band or error bars (from the table).

    The interval is clipped to the quantity's range (``bounds``, e.g. 0-100 % for an accuracy) and
    drawn only where the row has at least MIN_SEEDS_DRAWN seeds (:func:`drawn_interval`).  Curves that
    lie on top of each other stay visible: with ``dodge`` each curve's points move sideways a little (the
    x values of final-value figures), and on a long curve each draws its markers on every third point
    from a different start, so two coinciding curves show both markers in turn.
    """
    keys = list(dict.fromkeys(data[hue]))
    for i, (key, group) in enumerate(data.groupby(hue, sort=False)):
        group = group.sort_values(x)
        color = colors.get(key)
        xs = group[x].to_numpy(float)
        if dodge and len(keys) > 1:
            xs = dodged(xs, 0.6 * (keys.index(key) - (len(keys) - 1) / 2), log)
        long = len(group) > 8
        ax.plot(xs, group["mean"], linestyle=(dashes or {}).get(key, linestyle), color=color,
                marker=MARKERS.get(key, "o") if len(group) <= 25 else None, markersize=5,
                markevery=(i % 3, 3) if long else None, label=labels.get(key, str(key)))
        low, high = drawn_interval(group, bounds)
        if style["error_bars"] == "none" or np.all(np.isnan(low)):
            continue
        if style["error_bars"] == "band":
            ax.fill_between(xs, low, high, color=color, alpha=0.12, linewidth=0)
        else:
            mean = group["mean"].to_numpy(float)
            ax.errorbar(xs, mean, yerr=[mean - low, high - mean], fmt="none", ecolor=color, capsize=3)


def dodged(xs: np.ndarray, step: float, log: bool) -> np.ndarray:
    """Shift a series sideways by ``step`` units of 2 % of the axis span (in log space on a log axis),
    so two series at the same budgets do not hide each other's markers and error bars."""
    if log:
        span = np.log10(xs.max() / xs.min()) if len(xs) > 1 and xs.max() > xs.min() else 1.0
        return xs * 10 ** (0.02 * step * span)
    span = xs.max() - xs.min() if len(xs) > 1 and xs.max() > xs.min() else 1.0
    return xs + 0.02 * step * span


def _diverged_rows(data: pd.DataFrame) -> pd.DataFrame:
    """Rows of a table whose curve has diverged runs (none for a table without the column)."""
    if "n_diverged" not in data:
        return data.iloc[0:0]
    return data[data["n_diverged"].fillna(0) > 0]


def _total(rows: pd.DataFrame) -> int:
    """Runs asked for: the finished ones (n, at most over the rows) plus the diverged ones."""
    return int(rows["n"].fillna(0).max()) + int(rows["n_diverged"].iloc[0])


def _cross(ax, x_value, level: int, color, text: str, right_half: bool) -> None:
    """A cross at x (data coordinates) near the top of the panel, one level lower per method, labelled on
    the side towards the middle of the panel (the label stays inside the panel and out of the layout)."""
    transform = blended_transform_factory(ax.transData, ax.transAxes)
    y = 0.95 - 0.08 * level
    ax.plot([x_value], [y], transform=transform, linestyle="", marker=DIVERGED_MARKER, markersize=8,
            markerfacecolor=color, markeredgecolor="black", markeredgewidth=0.6, clip_on=False,
            label="_diverged")
    label = ax.annotate(text, (x_value, y), xycoords=transform, xytext=(-6 if right_half else 6, 0),
                        textcoords="offset points", fontsize="x-small", va="center",
                        ha="right" if right_half else "left", color="black", annotation_clip=False)
    label.set_in_layout(False)


def mark_diverged(ax, data: pd.DataFrame, x: str, colors: Mapping[str, Any], per_round: bool = False) -> None:
    """Mark every method and x with diverged runs: "k/n diverged" (see the module docstring).

    ``per_round``: x is the round, and the cross sits at the round of the first divergence of the curve
    (its last round when the table does not say)."""
    rows = _diverged_rows(data)
    if rows.empty:
        return
    xs = sorted(data[x].dropna().unique())

    def right_half(value) -> bool:
        return len(xs) > 1 and xs.index(value) >= len(xs) / 2 if value in xs else True

    methods = list(dict.fromkeys(rows["method"]))
    for level, method in enumerate(methods):
        curve = rows[rows["method"] == method]
        color = colors.get(method, "gray")  # the cross's color names the method
        if per_round:
            first = curve["first_diverged_round"].dropna() if "first_diverged_round" in curve else pd.Series()
            where = float(first.min()) if len(first) else float(data[data["method"] == method][x].max())
            round_text = f" (round {int(first.min())})" if len(first) else ""
            text = f"{int(curve['n_diverged'].iloc[0])}/{_total(curve)} diverged{round_text}"
            _cross(ax, where, level, color, text, right_half=where >= (xs[0] + xs[-1]) / 2 if xs else True)
        else:
            for x_value, at_x in curve.groupby(x, sort=True):
                _cross(ax, x_value, level, color, f"{int(at_x['n_diverged'].iloc[0])}/{_total(at_x)} diverged",
                       right_half(x_value))


def note_diverged(ax, data: pd.DataFrame, labels: Mapping[str, str]) -> None:
    """A note in the panel's corner naming the methods with diverged runs (figures without a run axis)."""
    rows = _diverged_rows(data)
    if rows.empty:
        return
    lines = [f"{labels.get(m, m)}: {int(g['n_diverged'].iloc[0])} of {_total(g)} runs diverged (left out)"
             for m, g in rows.groupby("method", sort=False)]
    ax.text(0.02, 0.98, "\n".join(lines), transform=ax.transAxes, fontsize="x-small", va="top", ha="left",
            bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "0.5", "alpha": 0.9})


def diverged_legend_entry(fig, axes) -> None:
    """One legend entry for the crosses, when a panel has one."""
    if any(line.get_label() == "_diverged" for ax in axes.flat for line in ax.get_lines()):
        axes.flat[0].add_line(Line2D([], [], linestyle="", marker=DIVERGED_MARKER, markersize=8,
                                     markerfacecolor="0.6", markeredgecolor="black", label=DIVERGED_LABEL))
