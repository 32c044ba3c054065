"""Tables and figures from run records, for the entries of the figure catalogue.

:func:`build_table` and :func:`write_table` serve the table rules, :func:`make_figure` the plot rules;
what each entry builds and draws is named in :mod:`spfl.configuration.figures`.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spfl.configuration.figures import entry
from spfl.records import write_atomic

if TYPE_CHECKING:
    import pandas as pd

def build_table(kind: str, runs: Sequence[Mapping[str, Any]], options: Mapping[str, Any]) -> pd.DataFrame:
    """The table of one registry entry from run records (``Run.record()`` dicts) and its resolved options."""
    from spfl.reporting.tables.reading import RecordError

    builder = entry(kind).builder
    if not runs:
        raise RecordError(f"table '{kind}' has no runs: check the figure's experiment, select and methods")
    return builder(list(runs), dict(options))


def write_table(frame: pd.DataFrame, kind: str, csv_path: str | Path, md_path: str | Path | None = None,
                html_path: str | Path | None = None) -> None:
    """CSV (full precision) and, optionally, Markdown and an HTML fragment for the Snakemake report.

    Every text is built before the first file is written, so a failure leaves no file half-written."""
    from spfl.reporting.tables.markdown import to_markdown

    figure = entry(kind)
    notes = figure.note_lines(frame)
    texts = {csv_path: frame.to_csv(index=False, float_format="%.10g")}
    view = figure.markdown_view(frame)
    if md_path is not None:
        texts[md_path] = to_markdown(view, figure.title, notes)
    if html_path is not None:
        shown = view.drop(columns=[c for c in ("gain_std", "budget", "budget_value") if c in view])
        body = shown.to_html(index=False, na_rep="n/a", float_format=lambda v: f"{v:.2f}", border=0)
        text = "".join(f"<p>{html.escape(n)}</p>" for n in notes)
        title = html.escape(figure.title)
        texts[html_path] = (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{title}</title></head>"
                            f"<body><h1>{title}</h1>{body}{text}</body></html>\n")
    for path, text in texts.items():
        write_atomic(path, text)


def draw(name: str, table: pd.DataFrame, style: Mapping[str, Any] | None = None):
    """The matplotlib Figure of one registered figure from its aggregated table, its overlapping tick
    labels thinned out after layout."""
    from spfl.reporting.plots.axes import declutter_ticks
    from spfl.reporting.plots.style import apply_style

    figure = entry(name, figures_only=True)
    style = apply_style(style or {})
    fig = figure.plotter(_without_missing_panels(table), name, figure.x, style)
    declutter_ticks(fig)
    return fig


def _without_missing_panels(table: pd.DataFrame) -> pd.DataFrame:
    """A figure without panels has an empty (all-missing) panel column: make it the empty string."""
    if "panel" in table:
        table = table.assign(panel=table["panel"].astype(object).where(table["panel"].notna(), "").astype(str))
    return table


def make_figure(name: str, table_path: str | Path, pdf: str | Path, png: str | Path,
                style: Mapping[str, Any] | None = None, source: str | None = None) -> None:
    """Read the table, draw, save PDF and PNG (the PNG at the style's dpi), byte-reproducibly.

    ``source`` (e.g. "config quick, digits") is written in the figure's top right corner, so a figure
    copied out of its folder still says what it shows."""
    import pandas as pd

    from spfl.reporting.plots import style as plot_style

    logging.getLogger("fontTools").setLevel(logging.WARNING)  # font subsetting logs pages at INFO
    style = {**plot_style.DEFAULT_STYLE, **dict(style or {})}
    fig = draw(name, pd.read_csv(table_path), style)
    if source:
        fig.suptitle(source, x=0.99, ha="right", fontsize="small", color="0.35")
    plot_style.save_figure(fig, pdf, png, style["dpi"])
