"""Statistics over seeds: the mean and 95 % Student-t interval of a group, paired significance, and the
fixed row order of every table.

Seeds are paired: every method of one seed shares the partition, initial model and fading draws, so a
gain is computed per seed and its interval is that of the paired differences.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from spfl.configuration.methods import METHODS

CONFIDENCE = 0.95
STAT_COLUMNS = ("n", "mean", "std", "ci_low", "ci_high")


def t_interval(values: Iterable[float], confidence: float = CONFIDENCE) -> dict[str, float]:
    """Mean and two-sided Student-t interval of the finite values (NaN interval below two values)."""
    from scipy import stats

    data = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = int(data.size)
    if n == 0:
        return {"n": 0, "mean": math.nan, "std": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    mean = float(data.mean())
    if n == 1:
        return {"n": 1, "mean": mean, "std": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    std = float(data.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half}


def summarize(frame: pd.DataFrame, by: Sequence[str], value: str) -> pd.DataFrame:
    """One row per group of ``by`` with the t-interval of ``value`` over the group's rows (seeds)."""
    rows = []
    for key, group in frame.groupby(list(by), sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key)), **t_interval(group[value].tolist())})
    columns = [*by, *STAT_COLUMNS]
    table = pd.DataFrame(rows, columns=columns)
    # Rows in a fixed order whatever the order of the runs: by the group keys, methods in METHODS order.
    return table.sort_values(list(by), key=sort_key, kind="stable", ignore_index=True)


def sort_key(column: pd.Series) -> pd.Series:
    """The pandas sort key of every table: methods in METHODS order, other columns as they are."""
    if column.name == "method":
        return column.map(lambda m: METHODS.index(m) if m in METHODS else len(METHODS))
    return column


def significance(interval: Mapping[str, float]) -> str:
    """"yes" when the 95 % interval excludes 0, "no" when it contains 0, "n/a" below two pairs."""
    if interval["n"] < 2 or not math.isfinite(interval["ci_low"]):
        return "n/a"
    return "no" if interval["ci_low"] <= 0.0 <= interval["ci_high"] else "yes"
