"""Progress within a run: the accuracy at a round budget and the rounds to a target accuracy, and the
table of every run with its summary and progress.

A run that never reaches the target is censored: reported as not reached, never as a round, and the
median over seeds counts it as later than every round.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spfl.records import DIVERGED, METRICS_CSV, RUN_SETTINGS_JSON, SUMMARY_JSON, evaluation_schedule
from spfl.reporting.tables.reading import RecordError, read_csv, read_json, runs_frame, swept_keys
from spfl.reporting.tables.statistics import sort_key


def evaluated_rounds(spec: Mapping[str, Any]) -> list[int]:
    """Rounds at which a run of ``spec`` evaluates test accuracy (the simulator's schedule)."""
    return list(evaluation_schedule(int(spec["rounds"]), int(spec["eval_every"])))


def default_round_budget(spec: Mapping[str, Any]) -> int:
    """Half the rounds, moved to the nearest evaluated round after round 0 (the earlier one on a tie)."""
    rounds = int(spec["rounds"])
    candidates = [r for r in evaluated_rounds(spec) if r > 0] or [0]
    return min(candidates, key=lambda r: (abs(2 * r - rounds), r))


def run_progress(run: Mapping[str, Any], round_budget: int | None, target_pct: float | None) -> dict[str, Any]:
    """Accuracy (%) at the round budget and the first evaluated round with accuracy >= ``target_pct``.

    A run that never reaches the target is *censored*: ``rounds_to_target`` is NaN and ``target_reached``
    False, never a round number.  A diverged run has neither (NaN, None).  ``round_budget`` None: the
    run's :func:`default_round_budget`; a budget that is not an evaluated round of the run is an error.
    """
    folder = Path(run["dir"]) / run["method"]
    spec = read_json(folder / RUN_SETTINGS_JSON)
    budget = default_round_budget(spec) if round_budget is None else int(round_budget)
    out = {"round_budget": budget, "budget_accuracy_pct": math.nan,
           "target_accuracy_pct": math.nan if target_pct is None else float(target_pct),
           "rounds_to_target": math.nan, "target_reached": None}
    if read_json(folder / SUMMARY_JSON).get("status") == DIVERGED:
        return out
    metrics = read_csv(folder / METRICS_CSV)
    evaluated = metrics[metrics["test_accuracy"].notna()]
    accuracy = dict(zip(evaluated["round"].astype(int), 100.0 * evaluated["test_accuracy"].astype(float)))
    if budget not in accuracy:
        raise RecordError(f"run record '{folder / 'metrics.csv'}' has no test accuracy at round_budget = {budget}: "
                          f"allowed an evaluated round ({', '.join(map(str, sorted(accuracy)))})")
    out["budget_accuracy_pct"] = accuracy[budget]
    if target_pct is not None:
        # accuracies are k / test-set size: a tolerance keeps 0.9 * 100 = 90.00000000000001 from missing 90
        reached = [r for r in sorted(accuracy) if accuracy[r] >= float(target_pct) - 1e-9]
        out["target_reached"] = bool(reached)
        out["rounds_to_target"] = float(reached[0]) if reached else math.nan
    return out


def median_rounds_to_target(rounds: Iterable[float]) -> float:
    """Median over runs of the rounds to the target, a censored run (NaN: never reached) counted as later
    than any round; NaN ("not reached") when the median run did not reach the target."""
    values = [math.inf if (r is None or math.isnan(r)) else float(r) for r in rounds]
    if not values:
        return math.nan
    median = float(np.median(values))
    return median if math.isfinite(median) else math.nan


def with_progress(frame: pd.DataFrame, runs, options: Mapping[str, Any]) -> pd.DataFrame:
    """``runs_frame`` rows with the run_progress columns (options: round_budget, target_accuracy)."""
    progress = [run_progress(run, options.get("round_budget"), options.get("target_accuracy")) for run in runs]
    return pd.concat([frame.reset_index(drop=True), pd.DataFrame(progress)], axis=1)


def runs_table(runs, options) -> pd.DataFrame:
    """Every run of the config with its summary (no aggregation): the raw material of all tables, with the
    accuracy at the round budget and the rounds to the target accuracy (options of the headline)."""
    frame = with_progress(runs_frame(runs), runs, options)
    order = [c for c in ("experiment", *swept_keys(runs), "method", "seed") if c in frame]
    return frame.sort_values(order, key=sort_key, kind="stable", na_position="first", ignore_index=True)
