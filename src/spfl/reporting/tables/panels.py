"""Where a row of a table belongs: the panel (the swept settings not on the x axis, in words), the curve
(experiment, swept settings, panel, method) and how many of the curve's runs diverged.

A diverged run enters no mean and no interval, but its curve keeps its rows and counts it
(``n_diverged``, ``first_diverged_round``), so ``n`` + ``n_diverged`` is the number of runs asked for.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from spfl.records import DIVERGED
from spfl.reporting.tables.reading import diverged_runs, runs_frame, swept_keys

DIVERGED_COLUMNS = ("n_diverged", "first_diverged_round")


# Short symbol and unit of the settings that experiments sweep, for panel labels and the headline.
SETTING_LABELS: dict[str, tuple[str, str]] = {
    "total_bandwidth_mhz": ("B_tot", "MHz"),
    "max_power_dbm": ("P_max", "dBm"),
    "num_devices": ("K", ""),
    "dirichlet_beta": ("beta", ""),
    "deadline_ms": ("T", "ms"),
    "modulus_bits": ("b", "bits"),
    "learning_rate": ("eta", ""),
    "partition": ("partition", ""),
    "compensation": ("compensation", ""),
}


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def setting_label(key: str, value: Any) -> str:
    """A setting and its value in words, e.g. "B_tot = 0.2 MHz"."""
    symbol, unit = SETTING_LABELS.get(key, (key, ""))
    return f"{symbol} = {format_value(value)}" + (f" {unit}" if unit else "")


def panel_label(run: Mapping[str, Any], keys: Sequence[str]) -> str:
    """Panel title of a run in a faceted figure: its values of the swept settings not on the x axis."""
    return ", ".join(setting_label(k, run[k]) for k in keys)


def with_panel(frame: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """``frame`` with the column ``panel``: each row's :func:`panel_label` of the settings ``keys``."""
    frame = frame.copy()
    frame["panel"] = [panel_label(row, keys) for row in frame.to_dict("records")] if len(frame) else []
    return frame


def panel_settings(runs, options) -> list[str]:
    """The swept settings that make a panel: every one but the figure's x axis."""
    return [k for k in swept_keys(runs) if k != options.get("x")]


def curve_keys(runs, options, *extra: str) -> list[str]:
    """The columns that make one curve (experiment, swept settings, panel, method), then ``extra``."""
    return ["experiment", *swept_keys(runs), "panel", "method", *extra]


def leave_out_diverged(frame: pd.DataFrame, runs, *values: str, drop_from_round: bool = False) -> pd.DataFrame:
    """``frame`` (rows tagged with their run's dir and method) with the ``values`` of diverged runs set to NaN.

    The rows stay, so a curve whose every run diverged still has its rows (n = 0, mean NaN) and its
    n_diverged.  ``drop_from_round``: a diverged run's rows from its divergence round on are dropped
    (the round it diverged in is evaluated at once, off the evaluation schedule, on non-finite weights).
    """
    status = diverged_runs(runs).rename(columns={"diverged": "_diverged", "diverged_round": "_diverged_round"})
    frame = frame.merge(status, on=["dir", "method"], how="left", validate="many_to_one")
    diverged = frame["_diverged"].astype("boolean").fillna(False).astype(bool)
    if drop_from_round:
        since = pd.to_numeric(frame["_diverged_round"])
        late = diverged & since.notna() & (frame["round"] >= since.fillna(0))
        frame, diverged = frame[~late], diverged[~late]
    frame = frame.copy()
    frame.loc[diverged, list(values)] = math.nan
    return frame.drop(columns=["_diverged", "_diverged_round"])


def with_diverged(table: pd.DataFrame, runs, options) -> pd.DataFrame:
    """Append n_diverged and first_diverged_round of each row's curve (experiment, grid point, panel, method)."""
    keys = curve_keys(runs, options)
    frame = with_panel(runs_frame(runs), panel_settings(runs, options))
    frame["is_diverged"] = frame["status"].eq(DIVERGED)
    frame["round_if_diverged"] = frame["diverged_round"].where(frame["is_diverged"])
    counts = (frame.groupby(keys, sort=False, dropna=False)
              .agg(n_diverged=("is_diverged", "sum"), first_diverged_round=("round_if_diverged", "min"))
              .reset_index())
    counts["n_diverged"] = counts["n_diverged"].astype(int)
    counts["first_diverged_round"] = pd.to_numeric(counts["first_diverged_round"]).astype("Int64")
    out = table.merge(counts, on=keys, how="left", validate="many_to_one")
    out["n_diverged"] = out["n_diverged"].fillna(0).astype(int)
    return out
