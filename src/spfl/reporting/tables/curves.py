"""Table builders of the curve figures: a value per method against a swept setting or the round, with
the mean and 95 % interval over seeds (accuracy per round, final accuracy, packet errors)."""

from __future__ import annotations

import pandas as pd

from spfl.records import METRICS_CSV
from spfl.reporting.tables.panels import curve_keys, leave_out_diverged, panel_settings, with_diverged, with_panel
from spfl.reporting.tables.reading import per_run_csv, runs_frame
from spfl.reporting.tables.statistics import STAT_COLUMNS, summarize


def table_final(runs, options) -> pd.DataFrame:
    """Final test accuracy (%) per swept value and method (accuracy_vs_bandwidth/power/devices, noniid)."""
    frame = with_panel(runs_frame(runs), panel_settings(runs, options))  # diverged runs: no final accuracy
    table = summarize(frame, curve_keys(runs, options), "final_accuracy_pct")
    table.insert(len(table.columns) - len(STAT_COLUMNS), "metric", "final_accuracy_pct")
    return with_diverged(table, runs, options)


def table_rounds(runs, options) -> pd.DataFrame:
    """Test accuracy (%) per evaluated round and method (accuracy_vs_round, ablation).

    A diverged run is left out of every round of its curve (see :mod:`spfl.reporting.tables`)."""
    metrics = per_run_csv(runs, METRICS_CSV)
    metrics = metrics[metrics["test_accuracy"].notna()].copy()
    metrics["test_accuracy_pct"] = 100.0 * metrics["test_accuracy"]
    metrics = leave_out_diverged(metrics, runs, "test_accuracy_pct", drop_from_round=True)
    metrics = with_panel(metrics, panel_settings(runs, options))
    table = summarize(metrics, curve_keys(runs, options, "round"), "test_accuracy_pct")
    table.insert(len(table.columns) - len(STAT_COLUMNS), "metric", "test_accuracy_pct")
    return with_diverged(table, runs, options)


def table_packet_errors(runs, options) -> pd.DataFrame:
    """Mean realized sign and modulus packet error (%) of each run, per swept value and method.

    A diverged run's packet errors are left out too: its allocation was computed from non-finite
    gradients in its last rounds."""
    frame = with_panel(runs_frame(runs), panel_settings(runs, options))
    frame = leave_out_diverged(frame, runs, "mean_sign_error_pct", "mean_modulus_error_pct")
    long = pd.concat([
        frame.assign(packet="sign", packet_error_pct=frame["mean_sign_error_pct"]),
        frame.assign(packet="modulus", packet_error_pct=frame["mean_modulus_error_pct"]),
    ], ignore_index=True)
    table = summarize(long, curve_keys(runs, options, "packet"), "packet_error_pct")
    table.insert(len(table.columns) - len(STAT_COLUMNS), "metric", "packet_error_pct")
    return with_diverged(table, runs, options)
