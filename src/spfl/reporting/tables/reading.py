"""Reading run records into data frames, with errors that name the file.

A record that is missing, not valid JSON or CSV, lacks a column or holds a non-number where a number
belongs is a :class:`RecordError` naming the file (and the line and column) and how to repair it.  The
columns of each CSV record are those of :mod:`spfl.records`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from spfl.records import ALLOCATION_CSV, CSV_COLUMNS, DIVERGED, RUN_SETTINGS_JSON, SUMMARY_JSON


class RecordError(ValueError):
    """A run record the table needs is missing or malformed; names the file."""


def read_json(path: Path) -> dict[str, Any]:
    """A JSON record holding an object (spec.json, summary.json)."""
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


# The columns each CSV record must have (the records contract; every column is a number), but
# allocation.csv's slot_share, which table_allocation does without (it says why).
RECORD_COLUMNS = {**CSV_COLUMNS, ALLOCATION_CSV: tuple(c for c in CSV_COLUMNS[ALLOCATION_CSV] if c != "slot_share")}


def read_csv(path: Path) -> pd.DataFrame:
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


def runs_frame(runs: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per run: the run record, its summary.json and its dataset (from spec.json)."""
    rows = []
    for run in runs:
        folder = Path(run["dir"]) / run["method"]
        summary = read_json(folder / SUMMARY_JSON)
        spec = read_json(folder / RUN_SETTINGS_JSON)
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
        frame = read_csv(folder / name)
        for key, value in run.items():
            frame[key] = value
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def diverged_runs(runs) -> pd.DataFrame:
    """(dir, method) of every run with its ``diverged`` flag and ``diverged_round``, from summary.json."""
    rows = []
    for run in runs:
        summary = read_json(Path(run["dir"]) / run["method"] / SUMMARY_JSON)
        rows.append({"dir": run["dir"], "method": run["method"], "diverged": summary.get("status") == DIVERGED,
                     "diverged_round": summary.get("diverged_round")})
    return pd.DataFrame(rows, columns=["dir", "method", "diverged", "diverged_round"]).drop_duplicates(
        ["dir", "method"])
