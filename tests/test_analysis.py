"""Tables (spfl.analysis) and figures (spfl.plots) on synthetic run records written to the contract.

The records follow spfl.records (devices.csv, metrics.csv, allocation.csv, solver_trace.csv,
summary.json, spec.json) with known numbers, so the aggregates can be checked exactly and the tests
need no simulator.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from spfl import analysis, plots
from spfl.experiments import FIGURES
from spfl.plan import load_plan
from spfl.records import ALLOCATION_COLUMNS, METRIC_COLUMNS, write_csv, write_json
from spfl.spec import make_spec

ROUNDS, EVAL = 6, 3
K = 4
# Final accuracy of each method: a per-method level plus a per-seed offset (so paired gains are exact).
LEVEL = {"ideal": 0.9, "digital": 0.5, "digital_reuse": 0.55, "scheduling": 0.6, "signsgd": 0.62,
         "spfl": 0.7, "spfl_uniform": 0.4, "spfl_power": 0.5, "spfl_bandwidth": 0.6, "spfl_noreuse": 0.65}
OPTIMIZED = {"spfl", "spfl_power", "spfl_bandwidth", "spfl_noreuse"}


def config() -> dict:
    main = ["ideal", "digital", "digital_reuse", "scheduling", "signsgd", "spfl", "spfl_uniform"]
    return {
        "name": "synthetic",
        "base": {"dataset": "digits", "rounds": ROUNDS, "eval_every": EVAL, "num_devices": K},
        "seeds": [0, 1, 2],
        "experiments": {
            "bandwidth": {"grid": {"total_bandwidth_mhz": [1, 2], "method": main}},
            "power": {"grid": {"max_power_dbm": [10, 23], "method": main}},
            "devices": {"grid": {"num_devices": [4, 8], "method": main}},
            "noniid": {"grid": {"dirichlet_beta": [0.1, 0.5], "method": main}},
            "ablation": {"grid": {"method": ["spfl", "spfl_uniform", "spfl_power", "spfl_bandwidth",
                                             "spfl_noreuse"]}},
        },
        "figures": {name: {"experiment": exp} for name, exp in (
            ("accuracy_vs_round", "bandwidth"), ("accuracy_vs_bandwidth", "bandwidth"),
            ("accuracy_vs_power", "power"), ("accuracy_vs_devices", "devices"), ("allocation", "bandwidth"),
            ("packet_errors", "bandwidth"), ("ablation", "ablation"), ("solver_convergence", "bandwidth"),
            ("noniid", "noniid"))},
        "headline": {"experiments": ["bandwidth", "power"]},
    }


def accuracy(method: str, seed: int, bandwidth: float) -> float:
    """Known final accuracy: SP-FL's lead over the best baseline (signsgd) shrinks with bandwidth."""
    gain = 0.04 / bandwidth if method == "spfl" else 0.0
    return LEVEL[method] + gain + 0.01 * seed


def write_cell(folder, cell, methods):
    params = cell.params
    num_devices = params["num_devices"]
    gains = [10 ** (-(9 + d)) for d in range(num_devices)]  # device 0 strongest
    write_csv(folder / "devices.csv", ("device", "distance_m", "gain", "num_samples", "alpha"),
              [{"device": d, "distance_m": 100.0 + d, "gain": g, "num_samples": 10, "alpha": 1 / num_devices}
               for d, g in enumerate(gains)])
    write_csv(folder / "partition.csv", ("device", "label", "count"),
              [{"device": d, "label": 0, "count": 10} for d in range(num_devices)])
    bandwidth = params["total_bandwidth_mhz"]
    for method in methods:
        out = folder / method
        final = accuracy(method, params["seed"], bandwidth)
        metrics = []
        for r in range(ROUNDS + 1):
            evaluated = r % EVAL == 0 or r == ROUNDS
            metrics.append({"round": r, "train_loss": 1.0 / (r + 1),
                            "test_accuracy": final * r / ROUNDS if evaluated else None,
                            "test_loss": 1.0 if evaluated else None,
                            "sign_error_rate": None if r == 0 else 0.1 / bandwidth,
                            "modulus_error_rate": None if r == 0 or method == "signsgd" else 0.4 / bandwidth})
        write_csv(out / "metrics.csv", METRIC_COLUMNS, metrics)
        snapshots = [1, EVAL, ROUNDS]
        write_csv(out / "allocation.csv", ALLOCATION_COLUMNS, [
            {"round": r, "device": d, "bandwidth_hz": bandwidth * 1e6 * (d + 1) / sum(range(1, num_devices + 1)),
             "power_sign_w": 0.2 * 32, "power_modulus_w": 0.0 if d == num_devices - 1 else 0.1,
             "q_sign": 0.1, "q_modulus": 0.3, "u_sign": 1.0, "u_modulus": 2.0}
            for r in snapshots for d in range(num_devices)])
        trace = [{"round": r, "iteration": i, "objective": (1 + r) * (1 - 0.5 ** (i + 1))}
                 for r in snapshots for i in range(4)] if method in OPTIMIZED else []
        write_csv(out / "solver_trace.csv", ("round", "iteration", "objective"), trace)
        spec = make_spec({**params, "method": method}).to_dict()
        write_json(out / "spec.json", spec)
        write_json(out / "summary.json", {
            "method": method, "status": "ok", "diverged_round": None, "final_accuracy": final,
            "best_accuracy": final, "final_test_loss": 1.0, "rounds_completed": ROUNDS,
            "mean_sign_error": 0.1 / bandwidth,
            "mean_modulus_error": None if method == "signsgd" else 0.4 / bandwidth,
            "run_hash": "x", "code_version": "y", "num_params": 310, "wall_time_s": 1.0, "versions": {}})


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    """A plan whose run records exist (synthetic) under a temporary working directory."""
    root = tmp_path_factory.mktemp("records")
    plan = load_plan(config())
    for cell in plan.cells.values():
        write_cell(root / "results" / "runs" / cell.hash, cell, cell.methods)
    plan.root = root
    return plan


def records(plan, runs):
    return [{**r.record(), "dir": str(plan.root / "results" / "runs" / r.cell)} for r in runs]


def table(plan, figure):
    return analysis.build_table(figure, records(plan, plan.figure_runs(figure)), plan.figures[figure])


# --- statistics ------------------------------------------------------------------------------------

def test_t_interval_matches_the_textbook_formula():
    out = analysis.t_interval([1.0, 2.0, 3.0])
    half = stats.t.ppf(0.975, 2) * 1.0 / math.sqrt(3)
    assert out["n"] == 3 and out["mean"] == 2.0 and out["std"] == 1.0
    assert out["ci_low"] == pytest.approx(2.0 - half) and out["ci_high"] == pytest.approx(2.0 + half)


def test_t_interval_of_one_or_no_value_has_no_interval_and_skips_missing():
    one = analysis.t_interval([5.0, None, math.nan])
    assert one["n"] == 1 and one["mean"] == 5.0 and math.isnan(one["ci_low"])
    assert analysis.t_interval([])["n"] == 0


# --- tables ----------------------------------------------------------------------------------------

def test_final_accuracy_table_is_mean_and_interval_over_seeds(plan):
    out = table(plan, "accuracy_vs_bandwidth")
    assert set(out["method"]) == {"ideal", "digital", "digital_reuse", "scheduling", "signsgd", "spfl"}
    row = out[(out["method"] == "spfl") & (out["total_bandwidth_mhz"] == 1.0)].iloc[0]
    expected = analysis.t_interval([100 * accuracy("spfl", s, 1.0) for s in (0, 1, 2)])
    assert row["n"] == 3 and row["n_diverged"] == 0
    assert row["mean"] == pytest.approx(expected["mean"]) and row["ci_high"] == pytest.approx(expected["ci_high"])
    assert (out["ci_low"] <= out["mean"]).all() and (out["mean"] <= out["ci_high"]).all()


def test_rounds_table_has_every_evaluated_round_per_panel(plan):
    out = table(plan, "accuracy_vs_round")
    assert sorted(out["round"].unique()) == [0, 3, 6]
    assert set(out["panel"]) == {"B_tot = 1 MHz", "B_tot = 2 MHz"}
    final = out[(out["round"] == 6) & (out["method"] == "ideal")]
    assert final["mean"].tolist() == pytest.approx([91.0, 91.0])


def test_ablation_table_holds_spfl_and_its_ablations(plan):
    out = table(plan, "ablation")
    assert set(out["method"]) == {"spfl", "spfl_uniform", "spfl_power", "spfl_bandwidth", "spfl_noreuse"}


def test_packet_error_table_in_percent_with_missing_modulus_left_empty(plan):
    out = table(plan, "packet_errors")
    sign = out[(out["packet"] == "sign") & (out["total_bandwidth_mhz"] == 2.0)]
    assert sign["mean"].tolist() == pytest.approx([5.0, 5.0])
    assert set(out["method"]) == {"spfl", "spfl_uniform"}


def test_allocation_table_ranks_devices_by_channel_gain(plan):
    out = table(plan, "allocation")
    band = out[(out["quantity"] == "bandwidth_khz") & (out["total_bandwidth_mhz"] == 1.0)]
    # device d gets (d + 1) / 10 of 1 MHz and has the (d + 1)-th strongest gain
    assert band.sort_values("rank")["mean"].tolist() == pytest.approx([100.0, 200.0, 300.0, 400.0])
    share = out[(out["quantity"] == "sign_power_share") & (out["rank"] == K)]
    assert share["mean"].tolist() == pytest.approx([1.0, 1.0])  # no modulus power at all
    tau = 1 / 32  # D_s / (D_s + 31 D_s)
    first = out[(out["quantity"] == "sign_power_share") & (out["rank"] == 1)]["mean"].iloc[0]
    assert first == pytest.approx(tau * 6.4 / (tau * 6.4 + (1 - tau) * 0.1))


def test_solver_table_is_relative_to_the_final_objective(plan):
    out = table(plan, "solver_convergence")
    rel = out[out["metric"] == "objective_rel"]
    last = rel[rel["iteration"] == 3]
    assert last["mean"].tolist() == pytest.approx([1.0] * len(last))
    assert (rel.groupby(["panel", "round"])["mean"].apply(lambda s: s.is_monotonic_increasing)).all()


def test_headline_takes_the_best_baseline_per_budget_and_pairs_seeds(plan):
    runs = records(plan, plan.headline_runs())
    out = analysis.headline_table(runs, plan.headline)
    bw = out[out["experiment"] == "bandwidth"].set_index("budget_value")
    assert (bw["best_baseline"] == "signsgd").all()
    assert bw.loc[1.0, "gain_pp"] == pytest.approx(100 * (0.70 + 0.04 - 0.62))
    assert bw.loc[2.0, "gain_pp"] == pytest.approx(100 * (0.70 + 0.02 - 0.62))
    # the per-seed offsets cancel in the paired differences: zero width interval
    assert bw.loc[1.0, "gain_ci_high"] == pytest.approx(bw.loc[1.0, "gain_pp"])
    assert (out["paper_gain_pp"] == 9.96).all() and (out["n"] == 3).all()
    assert set(out["experiment"]) == {"bandwidth", "power"}
    notes = analysis.headline_notes(out)
    assert "Largest gain: 12.00 pp" in notes[0] and "9.96" in notes[0]
    assert "not comparable" in notes[1]


def test_missing_record_names_the_file(plan, tmp_path):
    runs = records(plan, plan.figure_runs("accuracy_vs_power"))
    runs[0] = {**runs[0], "dir": str(tmp_path / "nowhere")}
    with pytest.raises(analysis.RecordError, match="nowhere/.*summary.json' is missing"):
        analysis.build_table("accuracy_vs_power", runs, plan.figures["accuracy_vs_power"])


def test_write_table_writes_csv_markdown_and_html(plan, tmp_path):
    out = analysis.headline_table(records(plan, plan.headline_runs()), plan.headline)
    analysis.write_table(out, "headline", tmp_path / "h.csv", tmp_path / "h.md", tmp_path / "h.html")
    back = pd.read_csv(tmp_path / "h.csv")
    assert back["gain_pp"].tolist() == pytest.approx(out["gain_pp"].tolist())
    md = (tmp_path / "h.md").read_text()
    assert md.startswith("# Headline") and "| gain_pp |" in md.replace("| gain_pp | gain_std", "| gain_pp |")
    assert "<table" in (tmp_path / "h.html").read_text()


def test_markdown_shows_missing_values_as_na():
    text = analysis.to_markdown(pd.DataFrame({"a": [1.23456, np.nan], "b": ["x", None]}))
    assert "| 1.235 | x |" in text and "| n/a | n/a |" in text


# --- figures ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("figure", sorted(FIGURES))
def test_every_figure_draws_from_its_table(plan, figure, tmp_path):
    path = tmp_path / f"{figure}.csv"
    analysis.write_table(table(plan, figure), figure, path)
    plots.make_figure(figure, path, tmp_path / f"{figure}.pdf", tmp_path / f"{figure}.png", {"dpi": 50})
    assert (tmp_path / f"{figure}.pdf").stat().st_size > 1000
    assert (tmp_path / f"{figure}.png").read_bytes()[:4] == b"\x89PNG"


def test_figure_axes_have_readable_labels_with_units(plan):
    fig = plots.draw("accuracy_vs_bandwidth", table(plan, "accuracy_vs_bandwidth"))
    ax = fig.axes[0]
    assert ax.get_xlabel() == plots.AXIS_LABELS["total_bandwidth_mhz"] and "(MHz)" in ax.get_xlabel()
    assert ax.get_ylabel() == "Final test accuracy (%)"
    assert ax.get_xscale() == "log"
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "SP-FL" in labels and "Ideal (error-free)" in labels


def test_method_colors_are_the_same_in_every_figure():
    a = plots.method_colors("colorblind")
    assert a["spfl"] == plots.method_colors("colorblind")["spfl"]
    assert len(set(a.values())) == len(a)


def test_unknown_figure_and_missing_column_are_named():
    with pytest.raises(plots.PlotError, match="figure 'pie' is unknown"):
        plots.draw("pie", pd.DataFrame())
    with pytest.raises(plots.PlotError, match="has no column 'total_bandwidth_mhz'"):
        plots.draw("accuracy_vs_bandwidth", pd.DataFrame({"mean": [1.0]}))


def test_every_method_has_a_color_marker_and_label():
    from spfl.spec import METHODS

    assert sorted(plots.COLOR_ORDER) == sorted(METHODS)
    assert set(plots.MARKERS) == set(METHODS) == set(plots.METHOD_LABELS)


def test_tables_list_methods_in_the_canonical_order_whatever_the_run_order(plan):
    from spfl.spec import METHODS

    runs = records(plan, plan.figure_runs("ablation"))
    forward = analysis.build_table("ablation", runs, plan.figures["ablation"])
    backward = analysis.build_table("ablation", runs[::-1], plan.figures["ablation"])
    pd.testing.assert_frame_equal(forward, backward)
    order = list(dict.fromkeys(forward["method"]))
    assert order == sorted(order, key=METHODS.index)
