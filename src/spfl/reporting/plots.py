"""Plotters: one function per kind of figure, drawn with seaborn from an aggregated table only.

Each plotter reads one table written by :mod:`spfl.reporting.analysis` (columns ``mean``, ``ci_low``,
``ci_high`` per group) and never the run records, so restyling a figure needs no simulation and no
aggregation.  Which plotter draws which figure is the registry's business (:mod:`spfl.configuration.figures`); a
plotter is called as ``plot(table, name, x, style)`` with the figure's name and x-axis setting.  The
style (theme, context, palette, sizes, dpi, error bars) comes from the config's ``style`` section;
every method keeps one color and marker across all figures.

Readability rules every plotter follows: the legend sits in its own row below the panels and the
figure grows by its height, so the axes keep the size of ``width_in`` x ``height_in`` per panel; log
axes carry a few explicit ticks and overlapping tick labels are thinned out after layout; an interval
(band or error bar) is drawn only for a group of at least ``MIN_SEEDS_DRAWN`` seeds, because a t-interval
from two seeds is mostly the t quantile (12.7) and hides the data.  Saved files carry no time stamp or
software version, so the same table gives the same bytes.

Diverged runs are in no mean (spfl.reporting.analysis), so a figure must say where runs are missing: wherever a
table row has ``n_diverged`` > 0, the figure draws a cross in the method's color at the top of the panel
with "k/n diverged" (k of the n runs asked for) -- above the x value for final-value figures, at the
divergence round for per-round figures -- or, for the allocation and solver figures, a note in the
panel's corner.  The legend explains the cross.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

from spfl.records import write_atomic  # noqa: E402

MIN_SEEDS_DRAWN = 3  # no band or error bar from fewer seeds
LOG_TICKS = 12  # a log axis labels every swept value up to this many (overlapping labels are thinned after layout)
MAX_ROW_IN = 10.0  # no row of panels is wider than this (inches): more panels wrap onto further rows

DEFAULT_STYLE: dict[str, Any] = {
    "theme": "whitegrid", "context": "paper", "palette": "colorblind", "font_scale": 1.1, "dpi": 200,
    "width_in": 4.5, "height_in": 3.4, "error_bars": "band",
}


class MethodStyle(NamedTuple):
    label: str
    marker: str
    color_slot: int  # index into the palette: SP-FL the first, most salient color; the bound a muted one
    line: str = "-"


# How each method is drawn, whatever subset a figure shows (one entry per method of spfl.configuration.methods).
METHOD_STYLES = {
    "ideal": MethodStyle("Ideal (error-free)", "o", 7, "--"),  # a reference, not a competitor: dashed
    "digital": MethodStyle("Digital FL", "s", 1),
    "digital_reuse": MethodStyle("Digital FL + reuse", "D", 2),
    "scheduling": MethodStyle("Scheduling", "^", 3),
    "signsgd": MethodStyle("signSGD", "v", 4),
    "spfl": MethodStyle("SP-FL", "*", 0),
    "spfl_uniform": MethodStyle("SP-FL, uniform allocation", "P", 5),
    "spfl_power": MethodStyle("SP-FL, power only", "X", 6),
    "spfl_bandwidth": MethodStyle("SP-FL, bandwidth only", "<", 8),
    "spfl_noreuse": MethodStyle("SP-FL, no sign reuse", ">", 9),
}
METHOD_LABELS = {name: style.label for name, style in METHOD_STYLES.items()}
MARKERS = {name: style.marker for name, style in METHOD_STYLES.items()}
DASHED = {name: style.line for name, style in METHOD_STYLES.items() if style.line != "-"}

AXIS_LABELS = {
    "round": "Communication round",
    "total_bandwidth_mhz": r"Total bandwidth $B_{\mathrm{tot}}$ (MHz)",
    "max_power_dbm": r"Device power budget $P_{\max}$ (dBm)",
    "num_devices": r"Number of devices $K$",
    "dirichlet_beta": r"Dirichlet concentration $\beta$ (smaller = more non-IID)",
    "iteration": "Alternating-optimization iteration",
    "rank": "Device rank by channel gain (1 = strongest)",
}
LOG_AXES = {"total_bandwidth_mhz", "dirichlet_beta"}
DIVERGED_MARKER = "X"
DIVERGED_LABEL = "diverged runs (not averaged)"


class PlotError(ValueError):
    """A table cannot be drawn as the requested figure; names the figure and the column."""


def apply_style(style: Mapping[str, Any]) -> dict[str, Any]:
    style = {**DEFAULT_STYLE, **dict(style)}
    sns.set_theme(context=style["context"], style=style["theme"], palette=style["palette"],
                  font_scale=style["font_scale"])
    plt.rcParams.update({"pdf.fonttype": 42, "savefig.bbox": "tight"})
    return style


def method_colors(palette: str) -> dict[str, Any]:
    """One fixed color per method, whatever subset a figure shows."""
    colors = sns.color_palette(palette, n_colors=len(METHOD_STYLES))
    return {name: colors[style.color_slot] for name, style in METHOD_STYLES.items()}


def _panels(table: pd.DataFrame) -> list[str]:
    if "panel" not in table:
        return [""]
    return list(dict.fromkeys(table["panel"])) or [""]


def _subplots(n_cols: int, n_rows: int, style: Mapping[str, Any], sharey: bool | str = True,
              sharex: bool = True):
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(style["width_in"] * n_cols, style["height_in"] * n_rows),
                             sharey=sharey, sharex=sharex, squeeze=False, layout="constrained")
    return fig, axes


def row_width(style: Mapping[str, Any]) -> int:
    """Panels per row: as many as fit in MAX_ROW_IN inches (at least one)."""
    return max(1, int(MAX_ROW_IN // float(style["width_in"])))


def _wrapped(n_panels: int, style: Mapping[str, Any], sharey: bool | str = True, sharex: bool = True):
    """One panel per item, wrapped onto rows of at most row_width(style) panels (no row wider than
    MAX_ROW_IN); the axes left over in the last row are removed.  Returns the figure, the 2-D axes array
    and the list of the n_panels axes in reading order."""
    cols = min(n_panels, row_width(style))
    rows = -(-n_panels // cols)
    fig, axes = _subplots(cols, rows, style, sharey=sharey, sharex=sharex)
    used = list(axes.flat[:n_panels])
    for ax in axes.flat[n_panels:]:
        ax.remove()
    for ax in used:  # every panel labels its own x ticks (a shared axis keeps only the limits in common)
        ax.xaxis.set_tick_params(labelbottom=True)
    return fig, axes, used


def _first_column(axes, used) -> list:
    """The used axes at the start of each row (where the y label goes)."""
    return [ax for i, ax in enumerate(axes.flat) if ax in used and i % axes.shape[1] == 0]


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


def _note_coinciding(ax, data: pd.DataFrame, x: str, hue: str, labels: Mapping[Any, str], tolerance: float,
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


def _draw(ax, data: pd.DataFrame, x: str, hue: str, style: Mapping[str, Any], colors: Mapping[str, Any],
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
            xs = _dodge(xs, 0.6 * (keys.index(key) - (len(keys) - 1) / 2), log)
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


def _mark_diverged(ax, data: pd.DataFrame, x: str, colors: Mapping[str, Any], per_round: bool = False) -> None:
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


def _note_diverged(ax, data: pd.DataFrame, labels: Mapping[str, str]) -> None:
    """A note in the panel's corner naming the methods with diverged runs (figures without a run axis)."""
    rows = _diverged_rows(data)
    if rows.empty:
        return
    lines = [f"{labels.get(m, m)}: {int(g['n_diverged'].iloc[0])} of {_total(g)} runs diverged (left out)"
             for m, g in rows.groupby("method", sort=False)]
    ax.text(0.02, 0.98, "\n".join(lines), transform=ax.transAxes, fontsize="x-small", va="top", ha="left",
            bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "0.5", "alpha": 0.9})


def _diverged_legend_entry(fig, axes) -> None:
    """One legend entry for the crosses, when a panel has one."""
    if any(line.get_label() == "_diverged" for ax in axes.flat for line in ax.get_lines()):
        axes.flat[0].add_line(Line2D([], [], linestyle="", marker=DIVERGED_MARKER, markersize=8,
                                     markerfacecolor="0.6", markeredgecolor="black", label=DIVERGED_LABEL))


def log_ticks(values: Sequence[float], most: int = LOG_TICKS) -> list[float]:
    """At most ``most`` of the (positive) values, spread evenly on a log scale, both ends kept."""
    values = sorted({float(v) for v in values if v > 0})
    if len(values) <= most:
        return values
    logs = np.log10(values)
    picks = [int(np.argmin(np.abs(logs - t))) for t in np.linspace(logs[0], logs[-1], most)]
    return [values[i] for i in dict.fromkeys(picks)]


def _x_axis(ax, table: pd.DataFrame, x: str) -> None:
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


def _legend(fig, axes, extra: Sequence[tuple[Any, str]] = ()) -> None:
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


def _need(table: pd.DataFrame, figure: str, *columns: str) -> None:
    missing = [c for c in columns if c not in table]
    if missing:
        raise PlotError(f"figure '{figure}': table has no column '{missing[0]}' (columns: "
                        f"{', '.join(table.columns)})")
    if table.empty:
        raise PlotError(f"figure '{figure}': the table is empty")


def _method_figure(table: pd.DataFrame, figure: str, x: str, ylabel: str, style: Mapping[str, Any]):
    """Lines per method against x, one panel per grid point (accuracy figures and ablation)."""
    _need(table, figure, x, "method", "mean", "ci_low", "ci_high")
    panels = _panels(table)
    fig, axes, used = _wrapped(len(panels), style)
    colors = method_colors(style["palette"])
    log = x in LOG_AXES and (table[x] > 0).all()
    for ax, panel in zip(used, panels):
        data = table[table["panel"] == panel] if "panel" in table else table
        _draw(ax, data, x, "method", style, colors, METHOD_LABELS, DASHED, bounds=(0.0, 100.0),
              dodge=(x != "round"), log=log)
        _mark_diverged(ax, data, x, colors, per_round=(x == "round"))
        _note_coinciding(ax, data, x, "method", METHOD_LABELS, tolerance=0.5)  # about two test images on digits
        ax.set_title(panel)
        _x_axis(ax, table, x)
    for ax in _first_column(axes, used):
        ax.set_ylabel(ylabel)
    _diverged_legend_entry(fig, axes)
    _legend(fig, axes)
    return fig


def figure_rounds(table, figure, x, style):
    return _method_figure(table, figure, "round", "Test accuracy (%)", style)


def figure_final(table, figure, x, style):
    return _method_figure(table, figure, x, "Final test accuracy (%)", style)


def figure_packet_errors(table, figure, x, style):
    """Sign (solid) and modulus (dashed) packet error against x: one panel per method (and per other swept
    point), so the two packets of one method are compared where they cannot hide another method's lines;
    a note says where they coincide."""
    _need(table, figure, x, "method", "packet", "mean")
    table = table.assign(panel=[(f"{p}, " if p else "") + METHOD_LABELS.get(m, m)
                                for p, m in zip(table["panel"] if "panel" in table else [""] * len(table),
                                                table["method"])])
    panels = _panels(table)
    fig, axes, used = _wrapped(len(panels), style)
    colors = method_colors(style["palette"])
    shades = {"sign": 1.0, "modulus": 0.55}
    for ax, panel in zip(used, panels):
        data = table[table["panel"] == panel].dropna(subset=["mean"])
        method = table[table["panel"] == panel]["method"].iloc[0]
        base = np.asarray(matplotlib.colors.to_rgb(colors.get(method, "gray")))
        line_colors = {p: tuple(base * f + (1 - f) * 0.15) for p, f in shades.items()}
        labels = {"sign": "sign packet", "modulus": "modulus packet"}
        _draw(ax, data, x, "packet", style, line_colors, {k: f"_{v}" for k, v in labels.items()},
              {"sign": "-", "modulus": "--"}, bounds=(0.0, 100.0))
        _note_coinciding(ax, data, x, "packet", labels, tolerance=0.1, where=(0.98, 0.98))
        _mark_diverged(ax, table[table["panel"] == panel], x, colors)
        ax.set_title(panel)
        _x_axis(ax, table, x)
    for ax in _first_column(axes, used):
        ax.set_ylabel("Mean packet error (%)")
    _diverged_legend_entry(fig, axes)
    _legend(fig, axes, extra=[(Line2D([], [], color="0.3", linestyle="-", marker="o"), "sign packet"),
                              (Line2D([], [], color="0.3", linestyle="--", marker="o"), "modulus packet")])
    return fig


SILENT_COLOR = "0.55"


def figure_allocation(table, figure, x, style):
    """Who gets the band: every device at every snapshot round (all seeds) as a point, its share of the
    total bandwidth against its distance to the server (top) and its gradient norm relative to the round's
    largest (bottom); one column per panel (budget).  Devices given no bandwidth ("silent") are hollow grey
    points at 0, and each panel says what share of the device-rounds were silent and how their gradients
    compare with the served ones'."""
    _need(table, figure, "bandwidth_share_pct", "distance_m", "gradient_norm_rel", "silent", "method")
    panels = _panels(table)
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
    _legend(fig, axes)
    return fig


def _pick_rounds(rounds: Sequence[int], most: int = 4) -> list[int]:
    rounds = sorted(set(int(r) for r in rounds))
    if len(rounds) <= most:
        return rounds
    picks = np.linspace(0, len(rounds) - 1, most).round().astype(int)
    return [rounds[i] for i in dict.fromkeys(picks)]


def figure_solver(table, figure, x, style):
    _need(table, figure, "metric", "round", "iteration", "mean")
    data = table[table["metric"] == "objective_rel"]
    data = data[data["method"] == data["method"].iloc[0]]
    panels = _panels(data)
    fig, axes = _subplots(len(panels), 1, style)
    chosen = _pick_rounds(data["round"])
    palette = dict(zip(chosen, sns.color_palette("viridis", n_colors=len(chosen))))
    for ax, panel in zip(axes.flat, panels):
        sub = data[(data["panel"] == panel) & data["round"].isin(chosen)]
        labels = {r: f"round {r}" for r in chosen}
        _draw(ax, sub, "iteration", "round", style, palette, labels)
        _note_diverged(ax, data[data["panel"] == panel], METHOD_LABELS)
        ax.set_title(panel)
        _x_axis(ax, sub, "iteration")
    method = METHOD_LABELS.get(data["method"].iloc[0], data["method"].iloc[0])
    axes[0, 0].set_ylabel(f"{method} objective $\\Phi$ / final $\\Phi$")
    _legend(fig, axes)
    return fig


def _significance_marker(ax, xs, ys, significant, color, marker) -> None:
    """Hollow markers over the points whose paired interval contains 0 (column significant = no)."""
    hollow = np.asarray(significant) == "no"
    if hollow.any():
        ax.plot(np.asarray(xs)[hollow], np.asarray(ys)[hollow], linestyle="", marker=marker, markersize=6,
                markerfacecolor="white", markeredgecolor=color, label="_not_significant")


HOLLOW_LABEL = "hollow: not significant (the paired 95 % interval contains 0)"


def _dodge(xs: np.ndarray, step: float, log: bool) -> np.ndarray:
    """Shift a series sideways by ``step`` units of 2 % of the axis span (in log space on a log axis),
    so two series at the same budgets do not hide each other's markers and error bars."""
    if log:
        span = np.log10(xs.max() / xs.min()) if len(xs) > 1 and xs.max() > xs.min() else 1.0
        return xs * 10 ** (0.02 * step * span)
    span = xs.max() - xs.min() if len(xs) > 1 and xs.max() > xs.min() else 1.0
    return xs + 0.02 * step * span


SHORT_BASELINES = {"digital": "digital", "digital_reuse": "dig.+reuse", "scheduling": "sched.",
                   "signsgd": "signSGD", "ideal": "ideal"}
BEST_LABEL = "text at each point: the best baseline there (highest mean final accuracy)"


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
    _need(table, figure, "experiment", "budget", "budget_value", "gain_pp", "gain_ci_low", "gain_ci_high", "n")
    experiments = list(dict.fromkeys(table["experiment"]))
    fig, axes, used = _wrapped(len(experiments), style, sharey=True, sharex=False)
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
            xs = _dodge(data["budget_value"].to_numpy(float), i - (len(series) - 1) / 2, log)
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
            _x_axis(ax, data.assign(**{budget: data["budget_value"]}), budget)
        ax.axhline(0.0, color="black", linewidth=0.8)
        if paper is not None:
            ax.axhline(paper, color="0.5", linestyle=":", linewidth=1.2,
                       label=f"paper: up to {paper:g} pp (CIFAR-10)")
        ax.set_title(title)
        ax.margins(y=0.15)
    for ax in _first_column(axes, used):
        ax.set_ylabel(f"{METHOD_LABELS.get(method, method)} minus\nthe best baseline (pp)")
    hollow = any(line.get_label() == "_not_significant" for ax in axes.flat for line in ax.get_lines())
    extra = [(Line2D([], [], linestyle="", marker="o", markerfacecolor="white", markeredgecolor="0.3"),
              HOLLOW_LABEL)] if hollow else []
    if "best_baseline" in table:
        extra.append((Line2D([], [], linestyle="", marker="$ab$", color="0.3"), BEST_LABEL))
    _legend(fig, axes, extra=extra)
    return fig


def figure_devices_served(table, figure, x, style):
    """Devices served per round against the budget, one row of panels per headline experiment (titled with its
    label): devices whose sign packet arrived (left) and devices whose full gradient arrived (right), one line
    per method, the exploratory seeds (the table has the confirmation seeds too)."""
    _need(table, figure, "experiment", "budget_value", "quantity", "method", "mean")
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
            _draw(ax, data, budget, "method", style, colors, METHOD_LABELS, DASHED, bounds=(0.0, None),
                  dodge=True, log=log)
            if len(total) and total.nunique() == 1:
                ax.axhline(float(total.iloc[0]), color="0.6", linestyle=":", linewidth=1.0,
                           label="all devices (K)")
            ax.set_title(f"{label}{seeds}" if col == 0 else label, fontsize="small")
            ax.set_ylim(bottom=0)
            _x_axis(ax, data, budget)
            if col == 0:
                ax.set_ylabel(ylabel)
            else:
                ax.set_ylabel(ylabel)
                ax.yaxis.set_tick_params(labelleft=True)
    _legend(fig, axes)
    return fig


def figure_sensitivity(table, figure, x, style):
    """Gain of the method over the best baseline per reconstruction variant (y, categories), with paired
    95 % intervals (from MIN_SEEDS_DRAWN seeds on), one panel per budget; a zero line."""
    key = x or "variant"
    _need(table, figure, key, "panel", "gain_pp", "gain_ci_low", "gain_ci_high", "n")
    panels = _panels(table)
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
    _legend(fig, axes, extra=[(Line2D([], [], linestyle="", marker="o", markerfacecolor="white",
                                      markeredgecolor="0.3"), HOLLOW_LABEL)] if hollow else [])
    return fig


def prepare_table(table: pd.DataFrame) -> pd.DataFrame:
    """A figure without panels has an empty (all-missing) panel column: make it the empty string."""
    if "panel" in table:
        table = table.assign(panel=table["panel"].astype(object).where(table["panel"].notna(), "").astype(str))
    return table


def finish(fig):
    """Last step of every figure: thin out overlapping tick labels after layout."""
    declutter_ticks(fig)
    return fig


def save_figure(fig, pdf: str | Path, png: str | Path, dpi: int) -> None:
    """PDF and PNG without time stamps or software versions, so the same figure gives the same bytes;
    each written atomically (readable per the umask, never half-written)."""
    try:
        write_atomic(pdf, lambda handle: fig.savefig(handle, format="pdf", metadata={
            "CreationDate": None, "Producer": None, "Creator": None}))
        write_atomic(png, lambda handle: fig.savefig(handle, format="png", dpi=dpi, metadata={"Software": None}))
    finally:
        plt.close(fig)
