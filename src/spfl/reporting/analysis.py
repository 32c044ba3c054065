"""Analysis: run records -> tidy tables with the mean and 95 % t-interval over seeds.

Every builder takes the runs a figure needs (``Run.record()`` dicts from :mod:`spfl.configuration`:
experiment, cell, dir, seed, method and the swept settings) and its resolved options; the registry
(:mod:`spfl.configuration.figures`) says which builder makes which table and writes the result.  Per-figure tables
are long ("tidy"): one row per group with the columns ``n`` (seeds), ``mean``, ``std``, ``ci_low``,
``ci_high``; the plots read nothing else.  Accuracies and packet errors are in percent, so differences
are percentage points as in the paper.

Seeds are paired: every method of one seed shares the partition, initial model and fading draws, so
a gain (headline, sensitivity) is computed per seed and its interval is that of the paired differences;
``significant`` is "no" when that interval contains 0.  Besides the final accuracy, the headline compares
the accuracy at a round budget and the rounds to a target accuracy; a run that never reaches the target
is censored (reported as not reached, never as a round), and the median over seeds counts it as later
than every round.

Diverged runs (``status: diverged`` in summary.json: the loss or the weights became NaN or infinite)
enter no mean, no interval and no gain: a NaN model's "accuracy" is that of argmax over NaN logits, not a
result.  Every per-figure table has the columns ``n_diverged`` (runs of the row's curve -- experiment,
grid point, panel and method -- that diverged) and ``first_diverged_round``, so ``n`` + ``n_diverged`` is
the number of runs asked for, and the headline table counts the diverged runs at each budget.  In the
per-round tables a diverged run is left out at *every* round, its rounds before the divergence too: a
curve then averages the same seeds from start to end instead of jumping where a seed drops out (its
rounds before the divergence stay in its own metrics.csv).  ``runs.csv`` lists every run with its
status and ``diverged_round`` and shows no final accuracy or loss for a diverged one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spfl.configuration.datasets import DATASET
from spfl.configuration.methods import METHODS
from spfl.records import ALLOCATION_COLUMNS, METRIC_COLUMNS, TRACE_COLUMNS

CONFIDENCE = 0.95
STAT_COLUMNS = ("n", "mean", "std", "ci_low", "ci_high")
DIVERGED = "diverged"  # summary.json status of a run whose loss or weights became non-finite
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


class RecordError(ValueError):
    """A run record the table needs is missing or malformed; names the file."""


# ---------------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------------

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
    return table.sort_values(list(by), key=_sort_key, kind="stable", ignore_index=True)


def _sort_key(column: pd.Series) -> pd.Series:
    if column.name == "method":
        return column.map(lambda m: METHODS.index(m) if m in METHODS else len(METHODS))
    return column


# ---------------------------------------------------------------------------------------------------
# Reading records
# ---------------------------------------------------------------------------------------------------

def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise RecordError(f"run record '{path}' is missing: rerun its cell (delete the cell's cell.json)") \
            from None
    except json.JSONDecodeError as exc:
        raise RecordError(f"run record '{path}' is not valid JSON: {exc}") from None
    except (UnicodeDecodeError, OSError) as exc:
        raise RecordError(f"run record '{path}' cannot be read ({type(exc).__name__}): rerun its cell") from None
    if not isinstance(value, dict):
        raise RecordError(f"run record '{path}' holds {type(value).__name__}, not a JSON object: rerun its cell")
    return value


# The columns of each CSV record (spfl.records); every column of every record is a number.
RECORD_COLUMNS = {"metrics.csv": METRIC_COLUMNS,  # allocation.csv's slot_share: table_allocation says why
                  "allocation.csv": tuple(c for c in ALLOCATION_COLUMNS if c != "slot_share"),
                  "solver_trace.csv": TRACE_COLUMNS, "devices.csv": ("device", "gain"),
                  "partition.csv": ("device", "label", "count")}


def _read_csv(path: Path) -> pd.DataFrame:
    """A CSV record with its columns and only numbers (or empty cells); anything else is a RecordError naming
    the file, the column and the line."""
    rerun = "rerun its cell (delete the cell's cell.json)"
    try:  # only an empty cell is missing (how spfl.records writes None and NaN), not "n/a", "NA", "null", ...
        frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    except FileNotFoundError:
        raise RecordError(f"run record '{path}' is missing: {rerun}") from None
    except pd.errors.EmptyDataError:
        raise RecordError(f"run record '{path}' is empty: {rerun}") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as exc:
        reason = " ".join(str(exc).split())[:120] or type(exc).__name__
        raise RecordError(f"run record '{path}' is not a readable CSV file ({reason}): {rerun}") from None
    missing = [c for c in RECORD_COLUMNS.get(path.name, ()) if c not in frame.columns]
    if missing:
        raise RecordError(f"run record '{path}' lacks column '{missing[0]}': {rerun}")
    for column in frame.columns:
        if pd.api.types.is_numeric_dtype(frame[column]):
            continue
        numbers = pd.to_numeric(frame[column], errors="coerce")
        bad = frame[column].notna() & numbers.isna()
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            raise RecordError(f"run record '{path}' line {row + 2}, column '{str(column)[:40]}' holds "
                              f"{str(frame[column].iloc[row])[:40]!r}: allowed a number; {rerun}")
        frame[column] = numbers
    return frame


def swept_keys(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The swept settings present in run records (everything but the bookkeeping fields)."""
    fixed = {"experiment", "cell", "dir", "seed", "method"}
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run if k not in fixed and k not in keys]
    return keys


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def setting_label(key: str, value: Any) -> str:
    symbol, unit = SETTING_LABELS.get(key, (key, ""))
    return f"{symbol} = {format_value(value)}" + (f" {unit}" if unit else "")


def panel_label(run: Mapping[str, Any], keys: Sequence[str]) -> str:
    """Panel title of a run in a faceted figure: its values of the swept settings not on the x axis."""
    return ", ".join(setting_label(k, run[k]) for k in keys)


def runs_frame(runs: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per run: the run record, its summary.json and its dataset (from spec.json)."""
    rows = []
    for run in runs:
        folder = Path(run["dir"]) / run["method"]
        summary = _read_json(folder / "summary.json")
        spec = _read_json(folder / "spec.json")
        diverged = summary.get("status") == DIVERGED  # its final model is NaN: no final accuracy or loss
        rows.append({
            **run,
            "dataset": spec.get("dataset"),
            "normalize": spec.get("normalize"),
            "status": summary.get("status"),
            "diverged_round": summary.get("diverged_round"),
            "final_accuracy_pct": math.nan if diverged else _pct(summary.get("final_accuracy")),
            "best_accuracy_pct": _pct(summary.get("best_accuracy")),
            "final_test_loss": math.nan if diverged else _num(summary.get("final_test_loss")),
            "rounds_completed": summary.get("rounds_completed"),
            "mean_sign_error_pct": _pct(summary.get("mean_sign_error")),
            "mean_modulus_error_pct": _pct(summary.get("mean_modulus_error")),
            "run_hash": summary.get("run_hash"),
            "code_version": summary.get("code_version"),
        })
    return pd.DataFrame(rows)


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)


def _pct(value: Any) -> float:
    return 100.0 * _num(value)


def per_run_csv(runs: Sequence[Mapping[str, Any]], name: str, shared: bool = False) -> pd.DataFrame:
    """Concatenate one CSV of every run (``shared``: the cell-level file), tagged with the run's fields."""
    frames = []
    for run in runs:
        folder = Path(run["dir"]) if shared else Path(run["dir"]) / run["method"]
        frame = _read_csv(folder / name)
        for key, value in run.items():
            frame[key] = value
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# ---------------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------------

def _with_panel(frame: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    frame = frame.copy()
    frame["panel"] = [panel_label(row, keys) for row in frame.to_dict("records")] if len(frame) else []
    return frame


def _panel_keys(runs, options) -> list[str]:
    return [k for k in swept_keys(runs) if k != options.get("x")]


def _group(runs, options, *extra: str) -> list[str]:
    return ["experiment", *swept_keys(runs), "panel", "method", *extra]


def _diverged_runs(runs) -> pd.DataFrame:
    """(dir, method) of every run with its ``diverged`` flag and ``diverged_round``, from summary.json."""
    rows = []
    for run in runs:
        summary = _read_json(Path(run["dir"]) / run["method"] / "summary.json")
        rows.append({"dir": run["dir"], "method": run["method"], "diverged": summary.get("status") == DIVERGED,
                     "diverged_round": summary.get("diverged_round")})
    return pd.DataFrame(rows, columns=["dir", "method", "diverged", "diverged_round"]).drop_duplicates(
        ["dir", "method"])


def _leave_out_diverged(frame: pd.DataFrame, runs, *values: str, drop_from_round: bool = False) -> pd.DataFrame:
    """``frame`` (rows tagged with their run's dir and method) with the ``values`` of diverged runs set to NaN.

    The rows stay, so a curve whose every run diverged still has its rows (n = 0, mean NaN) and its
    n_diverged.  ``drop_from_round``: a diverged run's rows from its divergence round on are dropped
    (the round it diverged in is evaluated at once, off the evaluation schedule, on non-finite weights).
    """
    status = _diverged_runs(runs).rename(columns={"diverged": "_diverged", "diverged_round": "_diverged_round"})
    frame = frame.merge(status, on=["dir", "method"], how="left", validate="many_to_one")
    diverged = frame["_diverged"].astype("boolean").fillna(False).astype(bool)
    if drop_from_round:
        since = pd.to_numeric(frame["_diverged_round"])
        late = diverged & since.notna() & (frame["round"] >= since.fillna(0))
        frame, diverged = frame[~late], diverged[~late]
    frame = frame.copy()
    frame.loc[diverged, list(values)] = math.nan
    return frame.drop(columns=["_diverged", "_diverged_round"])


def _with_diverged(table: pd.DataFrame, runs, options) -> pd.DataFrame:
    """Append n_diverged and first_diverged_round of each row's curve (experiment, grid point, panel, method)."""
    keys = _group(runs, options)
    frame = _with_panel(runs_frame(runs), _panel_keys(runs, options))
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


def table_final(runs, options) -> pd.DataFrame:
    """Final test accuracy (%) per swept value and method (accuracy_vs_bandwidth/power/devices, noniid)."""
    frame = _with_panel(runs_frame(runs), _panel_keys(runs, options))  # diverged runs: no final accuracy
    table = summarize(frame, _group(runs, options), "final_accuracy_pct")
    table.insert(len(table.columns) - len(STAT_COLUMNS), "metric", "final_accuracy_pct")
    return _with_diverged(table, runs, options)


def table_rounds(runs, options) -> pd.DataFrame:
    """Test accuracy (%) per evaluated round and method (accuracy_vs_round, ablation).

    A diverged run is left out of every round of its curve (see the module docstring)."""
    metrics = per_run_csv(runs, "metrics.csv")
    metrics = metrics[metrics["test_accuracy"].notna()].copy()
    metrics["test_accuracy_pct"] = 100.0 * metrics["test_accuracy"]
    metrics = _leave_out_diverged(metrics, runs, "test_accuracy_pct", drop_from_round=True)
    metrics = _with_panel(metrics, _panel_keys(runs, options))
    table = summarize(metrics, _group(runs, options, "round"), "test_accuracy_pct")
    table.insert(len(table.columns) - len(STAT_COLUMNS), "metric", "test_accuracy_pct")
    return _with_diverged(table, runs, options)


def table_packet_errors(runs, options) -> pd.DataFrame:
    """Mean realized sign and modulus packet error (%) of each run, per swept value and method.

    A diverged run's packet errors are left out too: its allocation was computed from non-finite
    gradients in its last rounds."""
    frame = _with_panel(runs_frame(runs), _panel_keys(runs, options))
    frame = _leave_out_diverged(frame, runs, "mean_sign_error_pct", "mean_modulus_error_pct")
    long = pd.concat([
        frame.assign(packet="sign", packet_error_pct=frame["mean_sign_error_pct"]),
        frame.assign(packet="modulus", packet_error_pct=frame["mean_modulus_error_pct"]),
    ], ignore_index=True)
    table = summarize(long, _group(runs, options, "packet"), "packet_error_pct")
    table.insert(len(table.columns) - len(STAT_COLUMNS), "metric", "packet_error_pct")
    return _with_diverged(table, runs, options)


SILENT_KHZ = 1e-6  # a device given less bandwidth than this (kHz) sends nothing: "silent"


def table_allocation(runs, options) -> pd.DataFrame:
    """Who gets the band: one row per run, snapshot round and device, with the device's share of the total
    bandwidth (%), its distance to the server, its channel gain and its gradient norm relative to the
    round's largest (sqrt of ``u_modulus``, which is proportional to ||g_k||^2, over the round's largest),
    and the sign packet's share of its power budget; ``silent`` marks a device given no bandwidth.

    Not aggregated over seeds: every device's allocation at every snapshot round is a point of the figure
    (the allocation is a function of the round's gradients, so averaging over rounds or seeds would hide
    it).  Diverged runs are left out; ``n_diverged`` counts them per panel and method.
    """
    status = _diverged_runs(runs).set_index(["dir", "method"])
    panel_keys = _panel_keys(runs, options)
    rows = []
    for run in runs:
        folder = Path(run["dir"]) / run["method"]
        spec = _read_json(folder / "spec.json")
        alloc = _read_csv(folder / "allocation.csv")
        devices = _read_csv(Path(run["dir"]) / "devices.csv")
        if alloc.empty or bool(status.loc[(run["dir"], run["method"]), "diverged"]):
            continue
        if "slot_share" not in alloc or alloc["slot_share"].isna().any():
            raise RecordError(f"run record '{folder / 'allocation.csv'}' has no slot_share per device: "
                              "rerun its cell (records written before the sign share was recorded)")
        tau = alloc["slot_share"]  # the share the simulator used, per device and round
        w_s, w_m = (tau, 1.0 - tau) if spec.get("power_constraint", "energy") == "energy" else (1.0, 1.0)
        spent_s = w_s * alloc["power_sign_w"]
        spent = spent_s + w_m * alloc["power_modulus_w"]
        worth = alloc["u_modulus"].abs()
        largest = worth.groupby(alloc["round"]).transform("max")
        total_khz = float(spec["total_bandwidth_mhz"]) * 1e3
        frame = alloc.assign(
            bandwidth_khz=alloc["bandwidth_hz"] / 1e3,
            bandwidth_share_pct=100.0 * alloc["bandwidth_hz"] / 1e3 / total_khz,
            sign_power_share=(spent_s / spent.where(spent > 0)),
            gradient_norm_rel=np.sqrt(worth / largest.where(largest > 0)),
        ).merge(devices[["device", "distance_m", "gain"]], on="device", how="left")
        frame["channel_gain_db"] = 10 * np.log10(frame["gain"])
        frame["silent"] = frame["bandwidth_khz"] < SILENT_KHZ
        for key, value in run.items():
            frame[key] = value
        rows.append(frame)
    columns = ["experiment", *swept_keys(runs), "panel", "method", "seed", "round", "device", "distance_m",
               "channel_gain_db", "gradient_norm_rel", "bandwidth_khz", "bandwidth_share_pct", "silent",
               "sign_power_share"]  # then n_diverged and n_runs of the row's panel and method
    if not rows and not _diverged_runs(runs)["diverged"].any():
        raise RecordError("no allocation snapshots in the runs of this table (empty allocation.csv files)")
    frame = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=[c for c in columns
                                                                                  if c != "panel"])
    frame = _with_panel(frame, panel_keys)[columns]
    # n_diverged per panel and method (every row of a curve carries it, as in the other tables)
    every = _with_panel(runs_frame(runs), panel_keys)
    counts = (every.assign(is_diverged=every["status"].eq(DIVERGED))
              .groupby(["panel", "method"], sort=False)["is_diverged"].agg(n_diverged="sum", n_runs="count")
              .astype(int))
    frame = frame.merge(counts.reset_index(), on=["panel", "method"], how="left")
    frame["n_diverged"] = frame["n_diverged"].fillna(0).astype(int)
    missing = counts[counts["n_diverged"] > 0].reset_index()
    missing = missing[~missing.set_index(["panel", "method"]).index.isin(
        frame.set_index(["panel", "method"]).index)]
    if len(missing):  # a curve whose every run diverged keeps one row that says so
        frame = pd.concat([frame, missing], ignore_index=True)
    return frame.sort_values([*swept_keys(runs), "method", "seed", "round", "device"], key=_sort_key,
                             kind="stable", ignore_index=True)


def table_solver(runs, options) -> pd.DataFrame:
    """Allocation objective Phi per alternating-optimization iteration, relative to its final value
    (so traces of different rounds and seeds share one scale), per snapshot round."""
    trace = per_run_csv(runs, "solver_trace.csv")
    if trace.empty:
        raise RecordError("no solver traces in the runs of this table (empty solver_trace.csv files): "
                          "solver_convergence needs a method with optimized allocation, e.g. spfl")
    final = trace.groupby(["dir", "method", "round"])["objective"].transform("last")
    trace["objective_rel"] = trace["objective"] / final.where(final != 0)
    trace = _leave_out_diverged(trace, runs, "objective", "objective_rel")
    trace = _with_panel(trace, _panel_keys(runs, options))
    rel = summarize(trace, _group(runs, options, "round", "iteration"), "objective_rel")
    raw = summarize(trace, _group(runs, options, "round", "iteration"), "objective")
    rel.insert(len(rel.columns) - len(STAT_COLUMNS), "metric", "objective_rel")
    raw.insert(len(raw.columns) - len(STAT_COLUMNS), "metric", "objective")
    return _with_diverged(pd.concat([rel, raw], ignore_index=True), runs, options)


# ---------------------------------------------------------------------------------------------------
# Progress within a run: accuracy at a round budget, rounds to a target accuracy
# ---------------------------------------------------------------------------------------------------

def evaluated_rounds(spec: Mapping[str, Any]) -> list[int]:
    """Rounds at which a run of ``spec`` evaluates test accuracy: 0, every ``eval_every`` and the last."""
    rounds, every = int(spec["rounds"]), int(spec["eval_every"])
    return sorted({0, rounds, *range(every, rounds + 1, every)})


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
    spec = _read_json(folder / "spec.json")
    budget = default_round_budget(spec) if round_budget is None else int(round_budget)
    out = {"round_budget": budget, "budget_accuracy_pct": math.nan,
           "target_accuracy_pct": math.nan if target_pct is None else float(target_pct),
           "rounds_to_target": math.nan, "target_reached": None}
    if _read_json(folder / "summary.json").get("status") == DIVERGED:
        return out
    metrics = _read_csv(folder / "metrics.csv")
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


# ---------------------------------------------------------------------------------------------------
# Comparisons: a method against the best of several baselines, paired by seed
# ---------------------------------------------------------------------------------------------------

def test_set_size(datasets: Iterable[str]) -> float:
    """The test-set size (images) the datasets share, from the dataset registry (the records do not carry it)."""
    sizes = {DATASET[d].test_size if d in DATASET else math.nan for d in datasets}
    return sizes.pop() if len(sizes) == 1 else math.nan


def significance(interval: Mapping[str, float]) -> str:
    """"yes" when the 95 % interval excludes 0, "no" when it contains 0, "n/a" below two pairs."""
    if interval["n"] < 2 or not math.isfinite(interval["ci_low"]):
        return "n/a"
    return "no" if interval["ci_low"] <= 0.0 <= interval["ci_high"] else "yes"


def _per_seed(group: pd.DataFrame, value: str) -> pd.DataFrame:
    """seed x method table of one value (one run per seed and method in a compared group)."""
    return group.groupby(["seed", "method"], sort=True)[value].first().unstack("method")


def _normalize(group: pd.DataFrame, method: str | None) -> str:
    if method is None or "normalize" not in group:
        return ""
    return ",".join(sorted(set(group.loc[group["method"] == method, "normalize"].dropna().astype(str))))


def _reached(group: pd.DataFrame, method: str | None) -> str:
    rows = group[(group["method"] == method) & group["target_reached"].notna()] if method else group.iloc[0:0]
    return f"{int(rows['target_reached'].astype(bool).sum())}/{len(rows)}" if len(rows) else "n/a"


def compare(group: pd.DataFrame, method: str, baselines: Sequence[str]) -> dict[str, Any] | None:
    """``method`` against the best baseline of one group of runs (one budget, one variant, ...).

    The best baseline is the one with the highest mean final accuracy (the earlier in ``baselines`` on a
    tie); the gains are the mean and 95 % t-interval of the per-seed differences (seeds are paired by
    common random numbers); diverged runs have no accuracy and so enter no pair.  None when the group
    lacks the method or every baseline.
    """
    final = _per_seed(group, "final_accuracy_pct")
    present = [b for b in baselines if b in final.columns]
    if method not in final.columns or not present:
        return None
    best = max(present, key=lambda b: (np.nan_to_num(final[b].mean(), nan=-np.inf), -present.index(b)))
    if final[best].isna().all():  # every baseline run diverged: there is no best baseline
        best = None
    gain = t_interval((final[method] - final[best]).tolist() if best else [])
    row = {
        "method": method, "method_normalize": _normalize(group, method),
        "method_accuracy_pct": final[method].mean(),
        "best_baseline": best, "baseline_normalize": _normalize(group, best),
        "baseline_accuracy_pct": final[best].mean() if best else math.nan,
        "gain_pp": gain["mean"], "gain_std": gain["std"], "gain_ci_low": gain["ci_low"],
        "gain_ci_high": gain["ci_high"], "significant": significance(gain), "n": gain["n"],
        "n_diverged": int(group[group["method"].isin([method, *present])]["status"].eq(DIVERGED).sum()),
    }
    if "budget_accuracy_pct" in group:
        at_budget = _per_seed(group, "budget_accuracy_pct")
        budget_gain = t_interval((at_budget[method] - at_budget[best]).tolist() if best else [])
        rounds = sorted(set(group["round_budget"].dropna().astype(int)))
        target = group["target_accuracy_pct"].dropna()
        row.update({
            "round_budget": rounds[0] if len(rounds) == 1 else ",".join(map(str, rounds)),
            "method_budget_accuracy_pct": at_budget[method].mean(),
            "baseline_budget_accuracy_pct": at_budget[best].mean() if best else math.nan,
            "budget_gain_pp": budget_gain["mean"], "budget_gain_ci_low": budget_gain["ci_low"],
            "budget_gain_ci_high": budget_gain["ci_high"], "budget_significant": significance(budget_gain),
            "target_accuracy_pct": target.iloc[0] if len(target) else math.nan,
            "method_median_rounds_to_target": _median_to_target(group, method),
            "method_reached_target": _reached(group, method),
            "baseline_median_rounds_to_target": _median_to_target(group, best),
            "baseline_reached_target": _reached(group, best),
        })
    return row


def _median_to_target(group: pd.DataFrame, method: str | None) -> float:
    rows = group[(group["method"] == method) & group["target_reached"].notna()] if method else group.iloc[0:0]
    return median_rounds_to_target(rows["rounds_to_target"].tolist()) if len(rows) else math.nan


HEADLINE_COLUMNS = (
    "experiment", "experiment_label", "seed_group", "seeds", "dataset", "test_set_size", "smallest_step_pp",
    "budget", "budget_value", "budget_label",
    "method", "method_normalize", "method_accuracy_pct", "best_baseline", "baseline_normalize",
    "baseline_accuracy_pct", "gain_pp", "gain_std", "gain_ci_low", "gain_ci_high", "significant",
    "round_budget", "method_budget_accuracy_pct", "baseline_budget_accuracy_pct", "budget_gain_pp",
    "budget_gain_ci_low", "budget_gain_ci_high", "budget_significant", "target_accuracy_pct",
    "method_median_rounds_to_target", "method_reached_target", "baseline_median_rounds_to_target",
    "baseline_reached_target", "n", "n_diverged", "paper_gain_pp")


def _dataset_columns(group: pd.DataFrame) -> dict[str, Any]:
    datasets = sorted(set(group["dataset"].dropna()))
    size = test_set_size(datasets)
    return {"dataset": ",".join(datasets), "test_set_size": size, "smallest_step_pp": 100.0 / size}


EXPLORATORY, CONFIRMATORY = "exploratory", "confirmatory"


def seed_list(seeds: Iterable[int]) -> str:
    """Seeds in a few characters: runs of consecutive seeds as ranges ("0-4", "0, 2, 5-9")."""
    values = sorted({int(s) for s in seeds})
    parts: list[str] = []
    start = prev = None
    for value in [*values, None]:
        if start is not None and (value is None or value != prev + 1):
            parts.append(str(start) if start == prev else f"{start}-{prev}")
            start = None
        if value is not None and start is None:
            start = value
        prev = value
    return ", ".join(parts)


def seed_groups(frame: pd.DataFrame, confirmation_seeds: Iterable[int]) -> pd.DataFrame:
    """``frame`` with the columns seed_group (exploratory or confirmatory, by the run's seed) and seeds
    (e.g. "confirmatory (seeds 5-9)": the group and the seeds of the experiment's runs in it)."""
    confirming = {int(s) for s in confirmation_seeds}
    frame = frame.assign(seed_group=[CONFIRMATORY if int(s) in confirming else EXPLORATORY for s in frame["seed"]])
    names = {}
    for (experiment, group), rows in frame.groupby(["experiment", "seed_group"], sort=False):
        seeds = sorted(set(rows["seed"]))
        names[(experiment, group)] = f"{group} ({'seeds' if len(seeds) > 1 else 'seed'} {seed_list(seeds)})"
    return frame.assign(seeds=[names[k] for k in zip(frame["experiment"], frame["seed_group"])])


def headline_table(runs, options) -> pd.DataFrame:
    """SP-FL minus the best baseline, per budget, at the last round and at the round budget.

    Per budget (each value of a headline experiment's one swept setting) and seed group (the exploratory
    seeds, then the confirmation seeds of config key ``confirmation``, when the experiment has them):
    :func:`compare` of the final accuracy and of the accuracy at ``round_budget``, the median rounds to
    ``target_accuracy`` of both methods, which ``normalize`` each ran with, the test-set size and the
    smallest visible accuracy step (one test image).  ``n`` counts the seeds with both runs finished.
    Each row names its experiment in words (``experiment_label``: the experiment's config ``label``).
    """
    frame = with_progress(runs_frame(runs), runs, options)
    frame = seed_groups(frame, options.get("confirmation_seeds") or ())
    method, baselines = options["method"], list(options["baselines"])
    labels = dict(options.get("labels") or {})
    rows = []
    for experiment, budget in options["budgets"].items():
        groups = dict(list(frame[frame["experiment"] == experiment].groupby([budget, "seed_group"])))
        for (value, seed_group) in sorted(groups, key=lambda k: (k[0], k[1] != EXPLORATORY)):
            group = groups[(value, seed_group)]
            compared = compare(group, method, baselines)
            if compared is None:
                continue
            rows.append({"experiment": experiment, "experiment_label": labels.get(experiment, experiment),
                         "seed_group": seed_group, "seeds": group["seeds"].iloc[0], **_dataset_columns(group),
                         "budget": budget, "budget_value": value, "budget_label": setting_label(budget, value),
                         **compared, "paper_gain_pp": options.get("paper_gain_points", 9.96)})
    return pd.DataFrame(rows, columns=list(HEADLINE_COLUMNS))


DEVICES_QUANTITIES = {
    "devices_transmitting": "transmitting",
    "devices_sign_received": "sign arrived",
    "devices_both_received": "full gradient arrived",
}


def devices_served_table(runs, options) -> pd.DataFrame:
    """Devices served per round by each method of the headline experiments, per budget and seed group.

    Per run, the mean over rounds 1..R of metrics.csv's ``devices_transmitting`` (given bandwidth),
    ``devices_sign_received`` (whose sign, or whole, packet arrived: served) and ``devices_both_received``
    (whose full gradient arrived); then the mean and 95 % t-interval over the seeds of each seed group
    (exploratory, confirmatory).  Diverged runs are left out (``n_diverged``).
    """
    frame = seed_groups(runs_frame(runs), options.get("confirmation_seeds") or ())
    labels = dict(options.get("labels") or {})
    budgets = dict(options["budgets"])
    per_run = []
    for run, row in zip(runs, frame.to_dict("records")):
        if run["experiment"] not in budgets:
            continue
        folder = Path(run["dir"]) / run["method"]
        metrics = _read_csv(folder / "metrics.csv")
        metrics = metrics[metrics["round"] >= 1]
        budget = budgets[run["experiment"]]
        spec = _read_json(folder / "spec.json")
        base = {"experiment": run["experiment"], "experiment_label": labels.get(run["experiment"], run["experiment"]),
                "seed_group": row["seed_group"], "seeds": row["seeds"], "budget": budget,
                "budget_value": run[budget], "budget_label": setting_label(budget, run[budget]),
                "method": run["method"], "num_devices": spec.get("num_devices"), "seed": run["seed"],
                "status": row["status"]}
        for column, quantity in DEVICES_QUANTITIES.items():
            value = math.nan if row["status"] == DIVERGED or column not in metrics else float(metrics[column].mean())
            per_run.append({**base, "quantity": quantity, "value": value})
    long = pd.DataFrame(per_run)
    if long.empty:
        raise RecordError("table 'devices_served' has no runs of the headline experiments")
    keys = ["experiment", "experiment_label", "seed_group", "seeds", "budget", "budget_value", "budget_label",
            "num_devices", "method", "quantity"]
    table = summarize(long, keys, "value")
    diverged = (long[long["quantity"] == "transmitting"].assign(d=lambda f: f["status"].eq(DIVERGED))
                .groupby([k for k in keys if k != "quantity"], sort=False)["d"].sum().astype(int)
                .rename("n_diverged").reset_index())
    table = table.merge(diverged, on=[k for k in keys if k != "quantity"], how="left")
    order = {name: i for i, name in enumerate(budgets)}
    quantities = {q: i for i, q in enumerate(DEVICES_QUANTITIES.values())}
    return table.sort_values(
        ["experiment", "seed_group", "budget_value", "method", "quantity"], kind="stable", ignore_index=True,
        key=lambda c: (c.map(order) if c.name == "experiment" else c.map(lambda g: g != EXPLORATORY)
                       if c.name == "seed_group" else c.map(quantities) if c.name == "quantity"
                       else _sort_key(c)))


def devices_served_markdown(table: pd.DataFrame) -> pd.DataFrame:
    """One row per experiment, seed group, budget and method; one column per quantity: "mean [low, high]"."""
    def text(row) -> str:
        if not math.isfinite(row["mean"]):
            return "n/a"
        if not math.isfinite(row["ci_low"]):
            return f"{row['mean']:.1f}"
        return f"{row['mean']:.1f} [{row['ci_low']:.1f}, {row['ci_high']:.1f}]"

    keys = ["experiment_label", "seeds", "budget_label", "num_devices", "method"]
    shown = table.assign(text=table.apply(text, axis=1))
    wide = shown.pivot_table(index=keys, columns="quantity", values="text", aggfunc="first", sort=False)
    n = shown.groupby(keys, sort=False)["n"].max()
    wide = wide[[q for q in DEVICES_QUANTITIES.values() if q in wide.columns]]
    wide = wide.join(n).reset_index().rename(columns={"experiment_label": "experiment", "budget_label": "budget",
                                                      "num_devices": "K"})
    return wide.rename(columns={q: f"{q} per round" for q in DEVICES_QUANTITIES.values()})


def devices_served_notes(table: pd.DataFrame) -> list[str]:
    return ["Per run, the mean over its rounds of the devices given bandwidth (transmitting), the devices whose "
            "sign (or whole) packet arrived (served) and those whose full gradient arrived; per row, the mean and "
            "95 % Student-t interval over the row's n seeds (an interval from n >= 2).",
            "A method that sends one packet per device (digital FL, scheduling, signSGD) counts it in both columns "
            "when it arrives: for signSGD, whose packet is the signs and one scale, \"full gradient\" means that "
            "packet."] + diverged_notes(table)


SENSITIVITY_KEY = "variant"


def sensitivity_table(runs, options) -> pd.DataFrame:
    """Per reconstruction variant and budget (the experiment's other swept settings): the figure's first
    method against the best of its other methods under that variant (:func:`compare`)."""
    key = options.get("x") or SENSITIVITY_KEY
    methods = list(options["methods"])
    if len(methods) < 2:
        raise RecordError(f"table 'sensitivity' needs a method and at least one baseline: methods = {methods}")
    panel_keys = [k for k in swept_keys(runs) if k != key]
    frame = _with_panel(runs_frame(runs), panel_keys)
    rows = []
    for values, group in frame.groupby(["experiment", *panel_keys, "panel", key], sort=False):
        compared = compare(group, methods[0], methods[1:])
        if compared is not None:
            rows.append({**dict(zip(["experiment", *panel_keys, "panel", key], values)),
                         **_dataset_columns(group), **compared})
    columns = ["experiment", *panel_keys, "panel", key, "dataset", "test_set_size", "smallest_step_pp",
               "method", "method_normalize", "method_accuracy_pct", "best_baseline", "baseline_normalize",
               "baseline_accuracy_pct", "gain_pp", "gain_std", "gain_ci_low", "gain_ci_high", "significant",
               "n", "n_diverged"]
    table = pd.DataFrame(rows, columns=columns)
    # variants in a fixed order: "default" first, the others alphabetically
    return table.sort_values(["experiment", *panel_keys, key], kind="stable", ignore_index=True,
                             key=lambda c: c.map(lambda v: (v != "default", str(v))) if c.name == key else c)


def runs_table(runs, options) -> pd.DataFrame:
    """Every run of the config with its summary (no aggregation): the raw material of all tables, with the
    accuracy at the round budget and the rounds to the target accuracy (options of the headline)."""
    frame = with_progress(runs_frame(runs), runs, options)
    order = [c for c in ("experiment", *swept_keys(runs), "method", "seed") if c in frame]
    return frame.sort_values(order, key=_sort_key, kind="stable", na_position="first", ignore_index=True)


# ---------------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------------

def _cell(value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, (float, np.floating)):
        return f"{value:.4g}"
    return str(value)


def to_markdown(frame: pd.DataFrame, title: str = "", notes: Sequence[str] = ()) -> str:
    """A GitHub Markdown table (no extra dependency); NaN shows as n/a."""
    lines = [f"# {title}", ""] if title else []
    columns = list(frame.columns)
    lines.append("| " + " | ".join(columns) + " |")
    lines.append("|" + "|".join("---" for _ in columns) + "|")
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    if notes:
        lines += [""] + [f"{n}" for n in notes]
    return "\n".join(lines) + "\n"


def diverged_notes(table: pd.DataFrame) -> list[str]:
    """A sentence under a table some of whose runs diverged (none when none did)."""
    if "n_diverged" not in table or not (table["n_diverged"] > 0).any():
        return []
    curve = [c for c in table.columns if c not in (*STAT_COLUMNS, *DIVERGED_COLUMNS, "metric", "round",
                                                   "iteration", "packet", "quantity", "rank")]
    rows = table[table["n_diverged"] > 0].drop_duplicates(curve)
    return [f"{int(rows['n_diverged'].sum())} run(s) diverged (non-finite loss or weights): they are left out "
            "of every mean and interval here (column n_diverged; results/tables/runs.csv has their "
            "diverged_round)."]


def _labels(rows: pd.DataFrame, label: str) -> str:
    return "; ".join(dict.fromkeys(rows[label].astype(str)))


def comparison_notes(table: pd.DataFrame, label: str) -> list[str]:
    """What a reader needs to judge a comparison table (headline, sensitivity): seeds, the test set's
    resolution, which rows are not significant and whether the methods compared aggregated alike.
    ``label`` names the column that says where a row is (budget_label, or panel and variant)."""
    notes = []
    counts = sorted(set(table["n"].astype(int)))
    notes.append(f"n = {', '.join(map(str, counts))} seed(s) per row, paired by seed (each seed's methods share "
                 "common random numbers); the intervals are 95 % Student-t intervals of the per-seed "
                 "differences, computed from n >= 2 and drawn in the figures only from n >= 3.")
    for dataset, rows in table.groupby("dataset", sort=True):
        size = float(rows["test_set_size"].iloc[0])
        if math.isfinite(size):
            notes.append(f"Test set of {dataset}: {size:g} images, so one image is {100.0 / size:.2f} pp, the "
                         "smallest visible accuracy difference.")
    for column, what in (("significant", "final accuracy"), ("budget_significant", "accuracy at the round budget")):
        if column not in table:
            continue
        unsure = table[table[column] == "no"]
        if len(unsure):
            notes.append(f"Not significant ({what}; the paired 95 % interval contains 0): {_labels(unsure, label)}.")
        elif (table[column] == "yes").any():
            notes.append(f"Every gain in {what} with an interval is significant (its 95 % interval excludes 0).")
    differs = table[table["method_normalize"].astype(str) != table["baseline_normalize"].astype(str)]
    differs = differs[differs["best_baseline"].notna()]
    if len(differs):
        notes.append("Not a like-for-like aggregation at " + "; ".join(
            f"{r[label]} ({r['method']}: normalize = {r['method_normalize']}, {r['best_baseline']}: "
            f"normalize = {r['baseline_normalize']})" for _, r in differs.iterrows()) + ".")
    elif len(table):
        shown = ", ".join(sorted(set(table["method_normalize"].astype(str))))
        notes.append(f"Every pair compared ran with the same normalize ({shown}).")
    diverged = int(table["n_diverged"].sum()) if "n_diverged" in table else 0
    if diverged:
        notes.append(f"{diverged} run(s) diverged (non-finite loss or weights) and are left out of the accuracies "
                     "and gains (column n_diverged).")
    return notes


def headline_notes(table: pd.DataFrame) -> list[str]:
    """The notes under the headline table: our largest gain against the paper's, and how to read it."""
    finite = table.dropna(subset=["gain_pp"])
    if finite.empty:
        diverged = int(table["n_diverged"].sum()) if "n_diverged" in table else 0
        return ["No budget had both the method and a baseline with a finished run."] + (
            [f"{diverged} run(s) diverged (non-finite loss or weights) and are left out (column n_diverged)."]
            if diverged else [])
    groups = finite["seed_group"] if "seed_group" in finite else pd.Series(EXPLORATORY, index=finite.index)
    confirmed = finite[groups == CONFIRMATORY]

    def largest(rows: pd.DataFrame, lead: str) -> str:
        best = rows.loc[rows["gain_pp"].idxmax()]
        ci = ("n/a" if math.isnan(best["gain_ci_low"])
              else f"[{best['gain_ci_low']:.2f}, {best['gain_ci_high']:.2f}]")
        verdict = {"no": ", not significant", "yes": ", significant"}.get(best["significant"], "")
        label = best.get("experiment_label", best.get("experiment"))
        return (f"{lead}: {best['gain_pp']:.2f} pp (95 % CI {ci}, n = {best['n']} seeds{verdict}) at "
                f"{best['budget_label']} against {best['best_baseline']}, in \"{label}\"")

    paper = f"; the paper reports up to {finite['paper_gain_pp'].iloc[0]:.2f} pp on CIFAR-10."

    def which(rows: pd.DataFrame) -> str:  # "confirmatory (seeds 5-9)" -> "confirmatory seeds (5-9)"
        return str(rows["seeds"].iloc[0]).replace(" (seeds ", " seeds (").replace(" (seed ", " seed (")

    if len(confirmed):
        exploratory = finite[groups != CONFIRMATORY]
        notes = [largest(confirmed, f"Largest gain on the {which(confirmed)}") + paper]
        if len(exploratory):
            notes.append(largest(exploratory, f"On the {which(exploratory)}, used to choose the settings, the "
                                              "largest gain was").replace(" was: ", " was ") + ".")
    else:
        notes = [largest(finite, "Largest gain") + paper]
    datasets = ", ".join(sorted(set(table["dataset"])))
    if datasets != "cifar10":
        notes.append(f"These runs use {datasets}, not CIFAR-10: the numbers are not comparable to the paper's.")
    notes += comparison_notes(table.assign(where=headline_where(table)), "where")
    rounds = ", ".join(dict.fromkeys(table["round_budget"].astype(str)))
    notes.append(f"budget_*: accuracy at round {rounds} (the round budget) instead of the last round.")
    targets = table["target_accuracy_pct"].dropna()
    if len(targets):
        notes.append(f"Rounds to {targets.iloc[0]:g} %: per run, the first evaluated round with test accuracy >= "
                     f"{targets.iloc[0]:g} %; per row, the median over seeds, a run that never got there counted "
                     "as later than every round, so \"not reached\" when the median run did not get there, and how "
                     "many runs got there (CSV: *_median_rounds_to_target, empty when not reached; *_reached_target).")
    return notes


def headline_where(table: pd.DataFrame) -> pd.Series:
    """Where each headline row is, in words: its budget, with its experiment's label when the table has
    several experiments and its seed group when it has several."""
    where = table["budget_label"].astype(str)
    if "experiment_label" in table and table["experiment_label"].nunique() > 1:
        where = table["experiment_label"].astype(str) + ", " + where
    if "seed_group" in table and table["seed_group"].nunique() > 1:
        where = where + " (" + table["seed_group"].astype(str) + ")"
    return where


# Columns of a comparison table that its Markdown leaves to the notes (or to the CSV).
MARKDOWN_LEFT_OUT = ("experiment", "seed_group", "dataset", "test_set_size", "smallest_step_pp", "budget",
                     "budget_value",
                     "method", "gain_std", "target_accuracy_pct", "paper_gain_pp")


def comparison_markdown(table: pd.DataFrame) -> pd.DataFrame:
    """The columns a reader of the Markdown needs: the notes give the dataset, test-set size, smallest step
    and target; rounds to the target read "6 (3/3 reached)" or "not reached (1/3 reached)"."""
    shown = table.drop(columns=[c for c in MARKDOWN_LEFT_OUT if c in table])
    shown = shown.rename(columns={"experiment_label": "experiment"})
    for who in ("method", "baseline"):
        median, reached = f"{who}_median_rounds_to_target", f"{who}_reached_target"
        if median not in shown:
            continue
        if "target_accuracy_pct" not in table or table["target_accuracy_pct"].isna().all():
            shown = shown.drop(columns=[median, reached])
            continue
        text = [("n/a" if count == "n/a" else f"{value:g} ({count} reached)" if math.isfinite(value)
                 else f"not reached ({count} reached)") for value, count in zip(shown[median], shown[reached])]
        position = shown.columns.get_loc(median)
        shown = shown.drop(columns=[median, reached])
        shown.insert(position, f"{who}_rounds_to_target", text)
    return shown


def sensitivity_notes(table: pd.DataFrame) -> list[str]:
    if table.empty:
        return ["No variant had both the method and a baseline with a finished run."]
    panel = table["panel"].fillna("").astype(str)
    table = table.assign(where=panel.where(panel == "", panel + ": ") + table[SENSITIVITY_KEY].astype(str))
    return comparison_notes(table, "where")
