"""Divergence (issue #5): a run whose loss becomes NaN or infinite stops, records `status: diverged` with its
round, the workflow goes on, and tables and figures mark such runs instead of averaging them in silently.

Two levels.  Synthetic run records (the writer of tests/synthetic_records.py, some runs rewritten the way the
simulator leaves a diverged run) pin the exact rule in a few seconds: a diverged run is in no mean, no
interval and no gain -- in the per-round tables not even at its rounds before the divergence -- and every
table counts it (n_diverged).  One tiny end-to-end run whose grid has a learning rate of 1e30 then checks that
the real simulator, the workflow, the tables and the figures agree.
"""

from __future__ import annotations

import json
import math

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from spfl.configuration import load_plan
from spfl.reporting import render
from spfl.reporting.plots import marks
from spfl.reporting.plots import style as plot_style
from spfl.reporting.tables import comparisons, markdown, progress
from synthetic_records import config as synthetic_config
from synthetic_records import records, table, write_cell
from workflow_helpers import copy_workflow, snakemake, write_config

DIVERGED_AT = 4  # round of the synthetic divergence: between the evaluations at rounds 3 and 6
SEEDS = (0, 1, 2)


# --- synthetic records -----------------------------------------------------------------------------

def make_diverged(folder, at: int = DIVERGED_AT) -> None:
    """Rewrite one run's records as the simulator leaves a run that diverged at round `at`: its metrics stop
    there (the last row evaluated on non-finite weights) and its summary says so.  The summary keeps the
    simulator's 'final_accuracy' of the NaN model (10 %, argmax of NaN logits): the tables must ignore it."""
    metrics = pd.read_csv(folder / "metrics.csv")
    metrics = metrics[metrics["round"] < at]
    last = {column: math.nan for column in metrics.columns} | {"round": at, "train_loss": math.nan,
                                                                 "test_accuracy": 0.1}
    pd.concat([metrics, pd.DataFrame([last])], ignore_index=True).to_csv(folder / "metrics.csv", index=False)
    summary = json.loads((folder / "summary.json").read_text())
    summary.update(status="diverged", diverged_round=at, final_accuracy=0.1, final_test_loss=None,
                   rounds_completed=at)
    (folder / "summary.json").write_text(json.dumps(summary))


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    """The synthetic records of test_analysis with, in the bandwidth sweep, SP-FL's seed 0 diverged at
    1 MHz (one run of three) and every digital run diverged at 2 MHz (all three)."""
    root = tmp_path_factory.mktemp("diverged")
    plan = load_plan(synthetic_config())
    for cell in plan.cells.values():
        write_cell(root / "results" / "runs" / cell.hash, cell, cell.methods)
    for run in plan.experiments["bandwidth"].runs:
        bandwidth = dict(run.point)["total_bandwidth_mhz"]
        if (run.method, bandwidth, run.seed) == ("spfl", 1.0, 0) or (run.method, bandwidth) == ("digital", 2.0):
            make_diverged(root / "results" / "runs" / run.cell / run.method)
    plan.root = root
    return plan


def level(method: str, seed: int, bandwidth: float) -> float:
    """Final accuracy (%) test_analysis writes for a run that did not diverge."""
    from synthetic_records import accuracy

    return 100 * accuracy(method, seed, bandwidth)


def row(frame, **where):
    match = frame
    for key, value in where.items():
        match = match[match[key] == value]
    assert len(match) == 1, f"{len(match)} rows for {where}"
    return match.iloc[0]


def test_final_table_leaves_diverged_runs_out_and_counts_them(plan):
    out = table(plan, "accuracy_vs_bandwidth")
    spfl = row(out, method="spfl", total_bandwidth_mhz=1.0)
    assert (spfl["n"], spfl["n_diverged"], spfl["first_diverged_round"]) == (2, 1, DIVERGED_AT)
    assert spfl["mean"] == pytest.approx((level("spfl", 1, 1.0) + level("spfl", 2, 1.0)) / 2)
    digital = row(out, method="digital", total_bandwidth_mhz=2.0)  # every run diverged: a row, no number
    assert (digital["n"], digital["n_diverged"]) == (0, 3) and math.isnan(digital["mean"])
    others = out.drop(index=[spfl.name, digital.name])
    assert (others["n_diverged"] == 0).all() and (others["n"] == 3).all()
    assert others["first_diverged_round"].isna().all()


def test_round_table_leaves_a_diverged_run_out_at_every_round(plan):
    """Before its divergence too: the curve averages the same two seeds from round 0 to the end."""
    out = table(plan, "accuracy_vs_round")
    spfl = out[(out["method"] == "spfl") & (out["total_bandwidth_mhz"] == 1.0)]
    assert sorted(spfl["round"]) == [0, 1, 3, 6]  # nothing at the divergence round, which is off the schedule
    assert (spfl["n"] == 2).all() and (spfl["n_diverged"] == 1).all()
    assert (spfl["first_diverged_round"] == DIVERGED_AT).all()
    final = row(spfl, round=6)
    assert final["mean"] == pytest.approx((level("spfl", 1, 1.0) + level("spfl", 2, 1.0)) / 2)
    digital = out[(out["method"] == "digital") & (out["total_bandwidth_mhz"] == 2.0)]
    assert set(digital["round"]) == {0, 1, 3} and (digital["n"] == 0).all() and (digital["n_diverged"] == 3).all()
    assert (out.loc[~out.index.isin([*spfl.index, *digital.index]), "n_diverged"] == 0).all()


@pytest.mark.parametrize("figure", ["packet_errors", "allocation", "solver_convergence"])
def test_other_tables_leave_diverged_runs_out_and_count_them(plan, figure):
    out = table(plan, figure)
    spfl = out[(out["method"] == "spfl") & (out["total_bandwidth_mhz"] == 1.0)]
    if figure == "allocation":  # one row per device and snapshot round of each finished run: no n
        assert len(spfl) and (spfl["n_diverged"] == 1).all() and spfl["seed"].nunique() == 2
    else:
        assert len(spfl) and (spfl["n_diverged"] == 1).all() and (spfl["n"] <= 2).all()
    assert (out.loc[~out.index.isin(spfl.index), "n_diverged"] == 0).all()


def test_headline_pairs_only_finished_runs_and_counts_the_diverged(plan):
    out = comparisons.headline_table(records(plan, plan.headline_runs()), plan.headline)
    bw = out[out["experiment"] == "bandwidth"].set_index("budget_value")
    assert (bw.loc[1.0, "n"], bw.loc[1.0, "n_diverged"]) == (2, 1)  # seed 0 has no SP-FL result
    assert bw.loc[1.0, "method_accuracy_pct"] == pytest.approx((level("spfl", 1, 1.0) + level("spfl", 2, 1.0)) / 2)
    assert (bw.loc[2.0, "n"], bw.loc[2.0, "n_diverged"]) == (3, 3)  # every digital run: not the best baseline
    assert bw.loc[2.0, "best_baseline"] == "signsgd"
    assert (out[out["experiment"] == "power"]["n_diverged"] == 0).all()
    assert any("4 run(s) diverged" in note for note in markdown.headline_notes(out))


def test_runs_table_shows_status_and_round_and_no_final_accuracy_of_a_diverged_run(plan):
    out = progress.runs_table(records(plan, plan.experiments["bandwidth"].runs), {})
    diverged = out[out["status"] == "diverged"]
    assert len(diverged) == 4 and (diverged["diverged_round"] == DIVERGED_AT).all()
    assert diverged["final_accuracy_pct"].isna().all() and diverged["final_test_loss"].isna().all()
    assert out[out["status"] == "ok"]["final_accuracy_pct"].notna().all()


def test_markdown_tables_say_that_runs_diverged(plan, tmp_path):
    render.write_table(table(plan, "accuracy_vs_bandwidth"), "accuracy_vs_bandwidth", tmp_path / "t.csv",
                         tmp_path / "t.md")
    assert "4 run(s) diverged" in (tmp_path / "t.md").read_text()
    render.write_table(table(plan, "accuracy_vs_power"), "accuracy_vs_power", tmp_path / "p.csv",
                         tmp_path / "p.md")
    assert "run(s) diverged" not in (tmp_path / "p.md").read_text()


def texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts] + [t.get_text() for t in fig.legends[0].get_texts()]


def test_final_figure_marks_each_x_with_diverged_runs(plan):
    fig = render.draw("accuracy_vs_bandwidth", table(plan, "accuracy_vs_bandwidth"))
    shown = texts(fig)
    plt.close(fig)
    assert "1/3 diverged" in shown and "3/3 diverged" in shown and marks.DIVERGED_LABEL in shown


def test_round_figure_marks_the_divergence_round(plan):
    fig = render.draw("accuracy_vs_round", table(plan, "accuracy_vs_round"))
    shown = texts(fig)
    crosses = [line for ax in fig.axes for line in ax.get_lines() if line.get_label() == "_diverged"]
    plt.close(fig)
    assert f"1/3 diverged (round {DIVERGED_AT})" in shown and f"3/3 diverged (round {DIVERGED_AT})" in shown
    assert sorted(float(line.get_xdata()[0]) for line in crosses) == [DIVERGED_AT, DIVERGED_AT]
    colors = plot_style.method_colors("colorblind")
    assert sorted(map(str, (line.get_markerfacecolor() for line in crosses))) == sorted(
        map(str, (colors["spfl"], colors["digital"])))


@pytest.mark.parametrize("figure", ["allocation", "solver_convergence", "packet_errors"])
def test_other_figures_mark_diverged_runs(plan, figure):
    fig = render.draw(figure, table(plan, figure))
    shown = " | ".join(texts(fig))
    plt.close(fig)
    assert "SP-FL: 1 of 3 runs diverged (left out)" in shown or "1/3 diverged" in shown, shown


def test_figures_without_diverged_runs_have_no_marks(plan):
    fig = render.draw("accuracy_vs_power", table(plan, "accuracy_vs_power"))
    shown = texts(fig)
    plt.close(fig)
    assert not any("diverged" in text for text in shown)


# --- end to end ------------------------------------------------------------------------------------

HUGE = 1e30  # learning rate: the weights overflow in the first step, the loss is NaN in the second


def diverging_config() -> dict:
    """One bandwidth sweep at two learning rates, 0.1 and 1e30, and a headline over the learning rate.

    The headline's cells are the bandwidth sweep's 1 MHz cells (same settings), so four cells run in all.
    """
    # smoothness 0: a run spec refuses learning_rate * smoothness >= 2 (the allocation objective would vanish)
    base = {"dataset": "digits", "model": "mlp", "num_devices": 10, "rounds": 4, "eval_every": 2,
            "total_bandwidth_mhz": 1.0, "deadline_ms": 273.3, "device": "cpu", "smoothness": 0.0}
    methods = ["digital", "signsgd", "spfl"]
    return {
        "name": "diverging",
        "base": base,
        "seeds": [0],
        "experiments": {
            "bandwidth": {"grid": {"total_bandwidth_mhz": [0.5, 1.0], "learning_rate": [0.1, HUGE],
                                   "method": methods}},
            "rate": {"grid": {"learning_rate": [0.1, HUGE], "method": methods}},
        },
        "figures": {"accuracy_vs_bandwidth": {"experiment": "bandwidth"},
                    "accuracy_vs_round": {"experiment": "bandwidth"}, "gain": {}},
        "headline": {"experiments": ["rate"]},
        "style": {"dpi": 50},
        "resources": {"simulate": {"threads": 1, "mem_mb": 1000, "runtime": 5, "gpu": 0}},
    }


@pytest.mark.slow
def test_a_diverging_grid_point_is_recorded_and_marked_and_the_workflow_finishes(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    name = write_config(workdir, "diverging.yaml", diverging_config())
    result = snakemake(workdir, "--cores", "2", "--configfile", name, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    tables = workdir / "results" / "diverging" / "tables"

    runs = pd.read_csv(tables / "runs.csv")
    huge, fine = runs[runs["learning_rate"] > 1], runs[runs["learning_rate"] < 1]
    assert len(huge) == len(fine) == 3 * 2 + 3  # 3 methods x 2 bandwidths, and the rate experiment's 3
    assert (huge["status"] == "diverged").all() and (fine["status"] == "ok").all()
    assert huge["diverged_round"].between(1, 4).all() and (huge["rounds_completed"] == huge["diverged_round"]).all()
    assert huge["final_accuracy_pct"].isna().all() and fine["final_accuracy_pct"].between(0, 100).all()

    final = pd.read_csv(tables / "accuracy_vs_bandwidth.csv")
    assert ((final["learning_rate"] > 1) == (final["n_diverged"] == 1)).all()
    assert final[final["learning_rate"] > 1]["mean"].isna().all()
    assert (final[final["learning_rate"] < 1]["n"] == 1).all()
    rounds = pd.read_csv(tables / "accuracy_vs_round.csv")
    assert ((rounds["learning_rate"] > 1) == (rounds["n_diverged"] == 1)).all()
    assert rounds[rounds["learning_rate"] > 1]["mean"].isna().all()
    assert set(rounds["first_diverged_round"].dropna()) <= set(huge["diverged_round"])
    headline = pd.read_csv(tables / "headline.csv").set_index("budget_value")
    assert headline.loc[HUGE, "n_diverged"] == 3 and headline.loc[0.1, "n_diverged"] == 0
    assert math.isnan(headline.loc[HUGE, "gain_pp"]) and headline.loc[HUGE, "n"] == 0
    for name in ("accuracy_vs_bandwidth", "accuracy_vs_round", "headline"):
        assert "diverged" in (tables / f"{name}.md").read_text().split("|---", 1)[1], name

    gain = pd.read_csv(tables / "gain.csv").set_index("budget_value")  # the headline, drawn
    assert gain.loc[HUGE, "n_diverged"] == 3 and gain.loc[HUGE, "n"] == 0 and gain.loc[0.1, "n"] == 1
    assert (workdir / "figures" / "diverging" / "gain.png").read_bytes()[:4] == b"\x89PNG"
    for figure in ("accuracy_vs_bandwidth", "accuracy_vs_round"):
        assert (workdir / "figures" / "diverging" / f"{figure}.pdf").read_bytes()[:4] == b"%PDF"
        assert (workdir / "figures" / "diverging" / f"{figure}.png").read_bytes()[:4] == b"\x89PNG"
        fig = render.draw(figure, pd.read_csv(tables / f"{figure}.csv"), {"dpi": 50})
        shown = texts(fig)
        plt.close(fig)
        assert any("1/1 diverged" in text for text in shown), (figure, shown)
