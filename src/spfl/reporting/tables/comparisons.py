"""Table builders that compare methods on the same seeds: the headline (a method minus the best baseline per
budget), the sensitivity to each reconstruction variant, and the devices each method serves.

The best baseline is the one with the highest mean final accuracy; a gain is the mean and 95 % interval
of the per-seed differences (seeds are paired), ``significant`` is "no" when that interval contains 0.
Besides the final accuracy, the headline compares the accuracy at a round budget and the rounds to a
target accuracy (:mod:`.progress`).  Seeds split into the exploratory ones and the confirmation seeds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spfl.configuration.datasets import DATASET
from spfl.records import DIVERGED, METRICS_CSV, RUN_SETTINGS_JSON
from spfl.reporting.tables.panels import setting_label, with_panel
from spfl.reporting.tables.progress import median_rounds_to_target, with_progress
from spfl.reporting.tables.reading import RecordError, read_csv, read_json, runs_frame, swept_keys
from spfl.reporting.tables.statistics import significance, sort_key, summarize, t_interval


def test_set_size(datasets: Iterable[str]) -> float:
    """The test-set size (images) the datasets share, from the dataset registry (the records do not carry it)."""
    sizes = {DATASET[d].test_size if d in DATASET else math.nan for d in datasets}
    return sizes.pop() if len(sizes) == 1 else math.nan


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
        metrics = read_csv(folder / METRICS_CSV)
        metrics = metrics[metrics["round"] >= 1]
        budget = budgets[run["experiment"]]
        spec = read_json(folder / RUN_SETTINGS_JSON)
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
                       else sort_key(c)))


SENSITIVITY_KEY = "variant"


def sensitivity_table(runs, options) -> pd.DataFrame:
    """Per reconstruction variant and budget (the experiment's other swept settings): the figure's first
    method against the best of its other methods under that variant (:func:`compare`)."""
    key = options.get("x") or SENSITIVITY_KEY
    methods = list(options["methods"])
    if len(methods) < 2:
        raise RecordError(f"table 'sensitivity' needs a method and at least one baseline: methods = {methods}")
    panel_keys = [k for k in swept_keys(runs) if k != key]
    frame = with_panel(runs_frame(runs), panel_keys)
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
