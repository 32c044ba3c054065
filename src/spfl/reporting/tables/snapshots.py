"""Table builders of the allocation snapshots: each device's share of the band at the snapshot rounds, and
the allocation objective per alternating-optimization iteration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from spfl.records import ALLOCATION_CSV, DEVICES_CSV, DIVERGED, RUN_SETTINGS_JSON, TRACE_CSV
from spfl.reporting.tables.panels import curve_keys, leave_out_diverged, panel_settings, with_diverged, with_panel
from spfl.reporting.tables.reading import (
    RecordError,
    diverged_runs,
    per_run_csv,
    read_csv,
    read_json,
    runs_frame,
    swept_keys,
)
from spfl.reporting.tables.statistics import STAT_COLUMNS, sort_key, summarize

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
    status = diverged_runs(runs).set_index(["dir", "method"])
    panel_keys = panel_settings(runs, options)
    rows = []
    for run in runs:
        folder = Path(run["dir"]) / run["method"]
        spec = read_json(folder / RUN_SETTINGS_JSON)
        alloc = read_csv(folder / ALLOCATION_CSV)
        devices = read_csv(Path(run["dir"]) / DEVICES_CSV)
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
    if not rows and not diverged_runs(runs)["diverged"].any():
        raise RecordError("no allocation snapshots in the runs of this table (empty allocation.csv files)")
    frame = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=[c for c in columns
                                                                                  if c != "panel"])
    frame = with_panel(frame, panel_keys)[columns]
    # n_diverged per panel and method (every row of a curve carries it, as in the other tables)
    every = with_panel(runs_frame(runs), panel_keys)
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
    return frame.sort_values([*swept_keys(runs), "method", "seed", "round", "device"], key=sort_key,
                             kind="stable", ignore_index=True)


def table_solver(runs, options) -> pd.DataFrame:
    """Allocation objective Phi per alternating-optimization iteration, relative to its final value
    (so traces of different rounds and seeds share one scale), per snapshot round."""
    trace = per_run_csv(runs, TRACE_CSV)
    if trace.empty:
        raise RecordError("no solver traces in the runs of this table (empty solver_trace.csv files): "
                          "solver_convergence needs a method with optimized allocation, e.g. spfl")
    final = trace.groupby(["dir", "method", "round"])["objective"].transform("last")
    trace["objective_rel"] = trace["objective"] / final.where(final != 0)
    trace = leave_out_diverged(trace, runs, "objective", "objective_rel")
    trace = with_panel(trace, panel_settings(runs, options))
    rel = summarize(trace, curve_keys(runs, options, "round", "iteration"), "objective_rel")
    raw = summarize(trace, curve_keys(runs, options, "round", "iteration"), "objective")
    rel.insert(len(rel.columns) - len(STAT_COLUMNS), "metric", "objective_rel")
    raw.insert(len(raw.columns) - len(STAT_COLUMNS), "metric", "objective")
    return with_diverged(pd.concat([rel, raw], ignore_index=True), runs, options)
