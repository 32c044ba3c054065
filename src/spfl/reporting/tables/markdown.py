"""The Markdown of a table and the sentences under it: what a reader needs to judge the numbers (seeds,
the test set's resolution, significance, like-for-like aggregation, diverged runs), and the columns a
comparison's Markdown shows."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from spfl.reporting.tables.comparisons import CONFIRMATORY, DEVICES_QUANTITIES, EXPLORATORY, SENSITIVITY_KEY
from spfl.reporting.tables.panels import DIVERGED_COLUMNS
from spfl.reporting.tables.statistics import STAT_COLUMNS


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
