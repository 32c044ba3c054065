"""Analysis: run records -> tidy tables with the mean and 95 % t-interval over seeds.

The pipeline's table rules call :func:`build_table` with the runs a figure needs (``Run.record()``
dicts from :mod:`spfl.experiments`: experiment, cell, dir, seed, method and the swept settings) and
write the result with :func:`write_table`.  Every table is long ("tidy"): one row per group with the
columns ``n`` (seeds), ``mean``, ``std``, ``ci_low``, ``ci_high``; the plots read nothing else.
Accuracies and packet errors are in percent, so differences are percentage points as in the paper.

Seeds are paired: every method of one seed shares the partition, initial model and fading draws, so
the headline gain is computed per seed and its interval is that of the paired differences.

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

import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spfl.records import write_atomic
from spfl.spec import METHODS

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
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RecordError(f"run record '{path}' is missing: rerun its cell (delete the cell's cell.json)") \
            from None
    except json.JSONDecodeError as exc:
        raise RecordError(f"run record '{path}' is not valid JSON: {exc}") from None


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except FileNotFoundError:
        raise RecordError(f"run record '{path}' is missing: rerun its cell (delete the cell's cell.json)") \
            from None


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


def sign_slot_share(spec: Mapping[str, Any], num_params: int | None) -> float:
    """tau = D_s / (D_s + D_m) as in SPEC section 3 (or the configured slot_share)."""
    if spec.get("slot_share") is not None:
        return float(spec["slot_share"])
    d = float(num_params or 1)
    sign_bits = d + (32 if spec.get("compensation") == "scalar" else 0)
    return sign_bits / (sign_bits + spec.get("modulus_bits", 31) * d)


def table_allocation(runs, options) -> pd.DataFrame:
    """Per device, ranked by channel gain (1 = strongest): bandwidth B_k (kHz) and the sign packet's
    share of the device's power budget, averaged over the snapshot rounds of each run."""
    per_run = []
    for run in runs:
        folder = Path(run["dir"]) / run["method"]
        spec = _read_json(folder / "spec.json")
        summary = _read_json(folder / "summary.json")
        alloc = _read_csv(folder / "allocation.csv")
        devices = _read_csv(Path(run["dir"]) / "devices.csv")
        if alloc.empty:
            continue
        tau = sign_slot_share(spec, summary.get("num_params"))
        w_s, w_m = (tau, 1.0 - tau) if spec.get("power_constraint", "energy") == "energy" else (1.0, 1.0)
        spent_s = w_s * alloc["power_sign_w"]
        spent = spent_s + w_m * alloc["power_modulus_w"]
        alloc = alloc.assign(
            bandwidth_khz=alloc["bandwidth_hz"] / 1e3,
            sign_power_share=(spent_s / spent.where(spent > 0)),
        )
        means = alloc.groupby("device")[["bandwidth_khz", "sign_power_share"]].mean().reset_index()
        means = means.merge(devices[["device", "gain"]], on="device", how="left")
        means["channel_gain_db"] = 10 * np.log10(means["gain"])
        means["rank"] = means["gain"].rank(ascending=False, method="first").astype(int)
        for key, value in run.items():
            means[key] = value
        per_run.append(means)
    if not per_run:
        raise RecordError("no allocation snapshots in the runs of this table (empty allocation.csv files)")
    frame = pd.concat(per_run, ignore_index=True)
    frame = _leave_out_diverged(frame, runs, "bandwidth_khz", "sign_power_share", "channel_gain_db")
    frame = _with_panel(frame, _panel_keys(runs, options))
    long = frame.melt(id_vars=[c for c in frame.columns if c not in
                               ("bandwidth_khz", "sign_power_share", "channel_gain_db")],
                      value_vars=["bandwidth_khz", "sign_power_share", "channel_gain_db"],
                      var_name="quantity", value_name="value")
    return _with_diverged(summarize(long, _group(runs, options, "quantity", "rank"), "value"), runs, options)


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


def headline_table(runs, options) -> pd.DataFrame:
    """SP-FL minus the best baseline, per budget: mean and 95 % interval of the per-seed differences.

    The best baseline at a budget is the baseline with the highest mean final accuracy there; the
    differences are paired by seed (common random numbers).  Diverged runs have no final accuracy: they
    enter no mean and no difference (a seed counts in ``n`` only when both runs of the pair finished), and
    ``n_diverged`` counts the diverged runs of the method and of every baseline at the budget.
    """
    frame = runs_frame(runs)
    method, baselines = options["method"], list(options["baselines"])
    rows = []
    for experiment, budget in options["budgets"].items():
        exp = frame[frame["experiment"] == experiment]
        for value, group in exp.groupby(budget, sort=True):
            acc = group.pivot_table(index="seed", columns="method", values="final_accuracy_pct",
                                    aggfunc="first", dropna=False)
            present = [b for b in baselines if b in acc.columns]
            if method not in acc.columns or not present:
                continue
            best = max(present, key=lambda b: (np.nan_to_num(acc[b].mean(), nan=-np.inf), -present.index(b)))
            if acc[best].isna().all():  # every baseline run diverged: there is no best baseline
                best = None
            gain = t_interval((acc[method] - acc[best]).tolist() if best else [])
            compared = group[group["method"].isin([method, *present])]
            rows.append({
                "experiment": experiment, "dataset": ",".join(sorted(set(group["dataset"].dropna()))),
                "budget": budget, "budget_value": value, "budget_label": setting_label(budget, value),
                "method": method, "method_accuracy_pct": acc[method].mean(),
                "best_baseline": best, "baseline_accuracy_pct": acc[best].mean() if best else math.nan,
                "gain_pp": gain["mean"], "gain_std": gain["std"], "gain_ci_low": gain["ci_low"],
                "gain_ci_high": gain["ci_high"], "n": gain["n"],
                "n_diverged": int(compared["status"].eq(DIVERGED).sum()),
                "paper_gain_pp": options.get("paper_gain_points", 9.96),
            })
    return pd.DataFrame(rows, columns=[
        "experiment", "dataset", "budget", "budget_value", "budget_label", "method", "method_accuracy_pct",
        "best_baseline", "baseline_accuracy_pct", "gain_pp", "gain_std", "gain_ci_low", "gain_ci_high", "n",
        "n_diverged", "paper_gain_pp"])


def runs_table(runs, options) -> pd.DataFrame:
    """Every run of the config with its summary (no aggregation): the raw material of all tables."""
    frame = runs_frame(runs)
    order = [c for c in ("experiment", *swept_keys(runs), "method", "seed") if c in frame]
    return frame.sort_values(order, key=_sort_key, kind="stable", na_position="first", ignore_index=True)


BUILDERS = {
    "accuracy_vs_round": table_rounds,
    "accuracy_vs_bandwidth": table_final,
    "accuracy_vs_power": table_final,
    "accuracy_vs_devices": table_final,
    "allocation": table_allocation,
    "packet_errors": table_packet_errors,
    "ablation": table_rounds,
    "solver_convergence": table_solver,
    "noniid": table_final,
    "headline": headline_table,
    "runs": runs_table,
}

TITLES = {
    "accuracy_vs_round": "Test accuracy (%) per round",
    "accuracy_vs_bandwidth": "Final test accuracy (%) vs total bandwidth",
    "accuracy_vs_power": "Final test accuracy (%) vs device power budget",
    "accuracy_vs_devices": "Final test accuracy (%) vs number of devices",
    "allocation": "Per-device allocation, devices ranked by channel gain",
    "packet_errors": "Mean packet error (%) vs total bandwidth",
    "ablation": "Test accuracy (%) per round: SP-FL and its ablations",
    "solver_convergence": "Allocation objective per alternating-optimization iteration",
    "noniid": "Final test accuracy (%) vs Dirichlet beta",
    "headline": "Headline: SP-FL minus the best baseline (percentage points)",
    "runs": "Every run",
}


def build_table(kind: str, runs: Sequence[Mapping[str, Any]], options: Mapping[str, Any]) -> pd.DataFrame:
    if kind not in BUILDERS:
        raise ValueError(f"table kind '{kind}' is unknown: allowed one of {', '.join(BUILDERS)}")
    if not runs:
        raise RecordError(f"table '{kind}' has no runs: check the figure's experiment, select and methods")
    return BUILDERS[kind](list(runs), dict(options))


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


def headline_notes(table: pd.DataFrame) -> list[str]:
    """The sentence next to the headline table: our largest gain against the paper's."""
    diverged = int(table["n_diverged"].sum()) if "n_diverged" in table else 0
    note = ([f"{diverged} run(s) diverged (non-finite loss or weights) and are left out of the accuracies and "
             "gains (column n_diverged)."] if diverged else [])
    finite = table.dropna(subset=["gain_pp"])
    if finite.empty:
        return ["No budget had both the method and a baseline with a finished run.", *note]
    best = finite.loc[finite["gain_pp"].idxmax()]
    ci = ("n/a" if math.isnan(best["gain_ci_low"])
          else f"[{best['gain_ci_low']:.2f}, {best['gain_ci_high']:.2f}]")
    datasets = ", ".join(sorted(set(table["dataset"])))
    notes = [f"Largest gain: {best['gain_pp']:.2f} pp (95 % CI {ci}, n = {best['n']} seeds) at "
             f"{best['budget_label']} against {best['best_baseline']}; the paper reports up to "
             f"{best['paper_gain_pp']:.2f} pp on CIFAR-10."]
    if datasets != "cifar10":
        notes.append(f"These runs use {datasets}, not CIFAR-10: the numbers are not comparable to the paper's.")
    return notes + note


def write_table(frame: pd.DataFrame, kind: str, csv_path: str | Path, md_path: str | Path | None = None,
                html_path: str | Path | None = None) -> None:
    """CSV (full precision) and, optionally, Markdown and an HTML fragment for the Snakemake report."""
    write_atomic(csv_path, frame.to_csv(index=False, float_format="%.10g"))
    notes = headline_notes(frame) if kind == "headline" else diverged_notes(frame)
    if md_path is not None:
        write_atomic(md_path, to_markdown(frame, TITLES.get(kind, kind), notes))
    if html_path is not None:
        shown = frame.drop(columns=[c for c in ("gain_std", "budget", "budget_value") if c in frame])
        body = shown.to_html(index=False, na_rep="n/a", float_format=lambda v: f"{v:.2f}", border=0)
        text = "".join(f"<p>{html.escape(n)}</p>" for n in notes)
        write_atomic(html_path, f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{TITLES[kind]}"
                                f"</title></head><body><h1>{TITLES[kind]}</h1>{body}{text}</body></html>\n")
