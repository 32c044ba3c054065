"""Tables (spfl.reporting.tables through the figure catalogue spfl.configuration.figures) on synthetic run records.

The records (tests/synthetic_records.py) carry known numbers, so every aggregate is checked against a
value computed by hand here: means, Student-t intervals (with the textbook quantiles, not scipy),
paired differences, the best baseline, censoring of rounds to a target.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest

from spfl.configuration import figures
from spfl.reporting import render
from spfl.reporting.tables import comparisons, markdown, progress, reading, statistics
from synthetic_records import EVAL, ROUNDS, accuracy, make_plan, records, table, write_run

# Two-sided 95 % Student-t quantiles t_{0.975, dof} from a printed table (more digits than the usual 4.303).
T975 = {1: 12.706204736174694, 2: 4.302652729749462}


def hand_interval(values):
    """Mean and 95 % interval written out: mean +- t * s / sqrt(n), s with n - 1 in the denominator."""
    n = len(values)
    mean = sum(values) / n
    s = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = T975[n - 1] * s / math.sqrt(n)
    return mean, mean - half, mean + half


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    return make_plan(tmp_path_factory.mktemp("records"))


# --- statistics ------------------------------------------------------------------------------------

def test_t_interval_of_three_values_against_hand_numbers():
    out = statistics.t_interval([12.0, 13.0, 15.0])
    # mean 40/3; s^2 = (16 + 1 + 25) / 9 / 2 = 7/3; half width = t_{0.975,2} sqrt(7/3) / sqrt(3)
    assert out["n"] == 3 and out["mean"] == pytest.approx(40 / 3) and out["std"] == pytest.approx(math.sqrt(7 / 3))
    half = 4.302652729749462 * math.sqrt(7 / 3) / math.sqrt(3)
    assert half == pytest.approx(3.7945830334, rel=1e-9)
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((40 / 3 - half, 40 / 3 + half), rel=1e-12)


def test_t_interval_of_two_values_uses_one_degree_of_freedom():
    out = statistics.t_interval([1.0, 3.0])
    # s = sqrt(2), half = 12.706 * sqrt(2) / sqrt(2)
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((2 - 12.706204736174694, 2 + 12.706204736174694))


def test_t_interval_of_one_or_no_value_has_no_interval_and_skips_missing():
    one = statistics.t_interval([5.0, None, math.nan])
    assert one["n"] == 1 and one["mean"] == 5.0 and math.isnan(one["ci_low"]) and math.isnan(one["std"])
    none = statistics.t_interval([])
    assert none["n"] == 0 and math.isnan(none["mean"])


@pytest.mark.parametrize(("low", "high", "n", "verdict"), [
    (0.5, 6.2, 3, "yes"), (-4.8, 5.5, 3, "no"), (-3.0, -0.1, 3, "yes"), (0.0, 2.0, 3, "no"),
    (1.0, 2.0, 1, "n/a"), (math.nan, math.nan, 0, "n/a")])
def test_significance_is_no_exactly_when_the_interval_contains_zero(low, high, n, verdict):
    assert statistics.significance({"n": n, "ci_low": low, "ci_high": high}) == verdict


@pytest.mark.parametrize(("rounds", "expected"), [
    ([3, 6, math.nan], 6.0),          # one censored run of three: the median run reached it
    ([3, math.nan, math.nan], math.nan),  # two of three never did: not reached
    ([3, math.nan], math.nan),        # even count: the middle pair includes a censored run
    ([3, 6], 4.5), ([], math.nan)])
def test_median_rounds_to_target_counts_censored_runs_as_latest(rounds, expected):
    out = progress.median_rounds_to_target(rounds)
    assert (math.isnan(out) and math.isnan(expected)) or out == expected


@pytest.mark.parametrize(("rounds", "every", "expected"), [(6, 3, 3), (150, 10, 70), (4, 10, 1), (10, 1, 5),
                                                           (100, 25, 50), (30, 20, 20)])
def test_default_round_budget_is_the_evaluated_round_nearest_half(rounds, every, expected):
    """(4, 10): the run evaluates rounds 0, 1 and 4; 1 and 4 are 1 and 2 rounds from half of 4."""
    assert progress.default_round_budget({"rounds": rounds, "eval_every": every}) == expected


# --- per-run progress ------------------------------------------------------------------------------

def test_run_progress_reads_the_budget_round_and_the_first_round_at_target(tmp_path):
    run = write_run(tmp_path, "e", "spfl", 0, final_pct=80.0, budget_pct=70.0, total_bandwidth_mhz=1.0)
    out = progress.run_progress(run, None, 70.0)
    assert (out["round_budget"], out["budget_accuracy_pct"]) == (3, pytest.approx(70.0))
    assert (out["rounds_to_target"], out["target_reached"]) == (3.0, True)
    assert progress.run_progress(run, 6, 75.0)["rounds_to_target"] == 6.0
    assert progress.run_progress(run, 6, 75.0)["budget_accuracy_pct"] == pytest.approx(80.0)


def test_a_run_that_never_reaches_the_target_is_censored_not_numbered(tmp_path):
    run = write_run(tmp_path, "e", "spfl", 0, final_pct=80.0, budget_pct=70.0, total_bandwidth_mhz=1.0)
    out = progress.run_progress(run, None, 90.0)
    assert out["target_reached"] is False and math.isnan(out["rounds_to_target"])
    no_target = progress.run_progress(run, None, None)
    assert no_target["target_reached"] is None and math.isnan(no_target["target_accuracy_pct"])


def test_a_round_budget_that_was_not_evaluated_names_the_file(tmp_path):
    run = write_run(tmp_path, "e", "spfl", 0, final_pct=80.0, budget_pct=70.0, total_bandwidth_mhz=1.0)
    with pytest.raises(reading.RecordError, match=r"metrics.csv' has no test accuracy at round_budget = 4: "
                                                   r"allowed an evaluated round \(0, 1, 3, 6\)"):
        progress.run_progress(run, 4, None)


def test_a_diverged_run_has_no_progress(tmp_path):
    run = write_run(tmp_path, "e", "spfl", 0, final_pct=80.0, budget_pct=70.0, status="diverged",
                    total_bandwidth_mhz=1.0)
    out = progress.run_progress(run, None, 50.0)
    assert math.isnan(out["budget_accuracy_pct"]) and out["target_reached"] is None


# --- per-figure tables -----------------------------------------------------------------------------

def test_final_accuracy_table_is_mean_and_interval_over_seeds(plan):
    out = table(plan, "accuracy_vs_bandwidth")
    row = out[(out["method"] == "spfl") & (out["total_bandwidth_mhz"] == 1.0)].iloc[0]
    # 100 * (0.70 + 0.04 + spread + 0.01 seed): 74, 76, 79
    mean, low, high = hand_interval([74.0, 76.0, 79.0])
    assert row["n"] == 3 and row["n_diverged"] == 0
    assert (row["mean"], row["ci_low"], row["ci_high"]) == pytest.approx((mean, low, high))
    ideal = out[(out["method"] == "ideal") & (out["total_bandwidth_mhz"] == 2.0)].iloc[0]
    assert (ideal["mean"], ideal["ci_low"], ideal["ci_high"]) == pytest.approx(hand_interval([90.0, 91.0, 92.0]))
    assert list(dict.fromkeys(out["method"])) == ["ideal", "digital", "digital_reuse", "scheduling", "signsgd", "spfl"]


def test_rounds_table_has_every_evaluated_round_per_panel(plan):
    out = table(plan, "accuracy_vs_round")
    assert sorted(out["round"].unique()) == [0, 1, EVAL, ROUNDS]
    assert set(out["panel"]) == {"B_tot = 1 MHz", "B_tot = 2 MHz"}
    spfl = out[(out["method"] == "spfl") & (out["panel"] == "B_tot = 2 MHz")].set_index("round")
    # accuracy grows linearly to the final value: half of it at round 3; 100 * (0.72 + spread + 0.01 seed)
    assert spfl.loc[ROUNDS, "mean"] == pytest.approx((72 + 74 + 77) / 3)
    assert spfl.loc[EVAL, "mean"] == pytest.approx((72 + 74 + 77) / 6)
    assert spfl.loc[0, "mean"] == 0.0


def test_ablation_table_averages_each_ablation(plan):
    out = table(plan, "ablation").query(f"round == {ROUNDS}").set_index("method")
    assert list(out.index) == ["spfl", "spfl_uniform", "spfl_power", "spfl_bandwidth", "spfl_noreuse"]
    # the ablation runs at the default bandwidth; only spfl depends on it, the others are level + seed
    for method, level in (("spfl_uniform", 40), ("spfl_power", 50), ("spfl_bandwidth", 60), ("spfl_noreuse", 65)):
        assert out.loc[method, "mean"] == pytest.approx(level + 1), method
        assert out.loc[method, "std"] == pytest.approx(1.0), method


def test_packet_error_table_in_percent_with_missing_modulus_left_empty(plan):
    out = table(plan, "packet_errors")
    sign = out[(out["packet"] == "sign") & (out["total_bandwidth_mhz"] == 2.0)]
    modulus = out[(out["packet"] == "modulus") & (out["total_bandwidth_mhz"] == 1.0)]
    assert sign["mean"].tolist() == pytest.approx([5.0, 5.0]) and modulus["mean"].tolist() == pytest.approx([40, 40])
    assert list(dict.fromkeys(out["method"])) == ["spfl", "spfl_uniform"]


def test_allocation_table_has_every_device_round_with_its_share_distance_and_gradient_norm(plan):
    out = table(plan, "allocation")
    one = out[(out["total_bandwidth_mhz"] == 1.0) & (out["seed"] == 0) & (out["round"] == 3)].sort_values("device")
    # device d gets d / 6 of 1 MHz (device 0, the strongest, none: silent) at distance 100 + d m
    assert one["bandwidth_khz"].tolist() == pytest.approx([0.0, 1000 / 6, 2000 / 6, 3000 / 6])
    assert one["bandwidth_share_pct"].tolist() == pytest.approx([0.0, 100 / 6, 200 / 6, 300 / 6])
    assert one["silent"].tolist() == [True, False, False, False]
    assert one["distance_m"].tolist() == pytest.approx([100.0, 101.0, 102.0, 103.0])
    # u_modulus = 2 (d + 1)^2 is proportional to the squared gradient norm: norms (d + 1) / 4
    assert one["gradient_norm_rel"].tolist() == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert len(out[out["method"] == "spfl"]) == 2 * 3 * 3 * 4  # budgets x seeds x snapshot rounds x devices
    share = out[out["device"] == 3]["sign_power_share"]
    assert share.tolist() == pytest.approx([1.0] * len(share))  # no modulus power at all
    tau = 1 / 32  # the slot_share column of the records (the share the simulator used)
    first = out[out["device"] == 0]["sign_power_share"].iloc[0]
    assert first == pytest.approx(tau * 6.4 / (tau * 6.4 + (1 - tau) * 0.1))


def test_solver_table_is_relative_to_the_final_objective(plan):
    out = table(plan, "solver_convergence")
    rel = out[(out["metric"] == "objective_rel") & (out["round"] == 1)]
    # (1 - 0.5^(i+1)) / (1 - 0.5^4): 8/15, 12/15, 14/15, 1
    assert rel.groupby("iteration")["mean"].first().tolist() == pytest.approx([8 / 15, 12 / 15, 14 / 15, 1.0])


def test_tables_list_methods_in_the_canonical_order_whatever_the_run_order(plan):
    runs = records(plan, plan.figure_runs("ablation"))
    forward = render.build_table("ablation", runs, plan.figures["ablation"])
    backward = render.build_table("ablation", runs[::-1], plan.figures["ablation"])
    pd.testing.assert_frame_equal(forward, backward)


def test_missing_record_names_the_file(plan, tmp_path):
    runs = records(plan, plan.figure_runs("accuracy_vs_power"))
    runs[0] = {**runs[0], "dir": str(tmp_path / "nowhere")}
    with pytest.raises(reading.RecordError, match="nowhere/.*summary.json' is missing"):
        render.build_table("accuracy_vs_power", runs, plan.figures["accuracy_vs_power"])


def test_unknown_table_kind_is_named():
    with pytest.raises(figures.FigureError, match="table kind 'pie' is unknown: allowed one of accuracy_vs_round"):
        render.build_table("pie", [{}], {})


# --- headline --------------------------------------------------------------------------------------

# Final accuracy (%) per budget, method and seed; the accuracy at the round budget (round 3) is 10 points
# lower for spfl and 20 points lower for the baselines.
FINAL = {
    0.5: {"spfl": [80, 82, 84], "digital": [70, 71, 75], "scheduling": [78, 78, 80]},
    2.0: {"spfl": [90, 88, 91], "digital": [89, 90, 89], "scheduling": [85, 85, 85]},
}


def comparison_runs(root, experiment="bw", seeds=(0, 1, 2), normalize=None, **extra):
    runs = []
    for budget, methods in FINAL.items():
        for method, values in methods.items():
            for seed in seeds:
                final = values[seed]
                runs.append(write_run(root, experiment, method, seed, final, final - (10 if method == "spfl" else 20),
                                      normalize=(normalize or {}).get((budget, method), "received"),
                                      total_bandwidth_mhz=budget, **extra))
    return runs


def headline_options(**extra):
    return {"method": "spfl", "baselines": ["digital", "scheduling"], "budgets": {"bw": "total_bandwidth_mhz"},
            "paper_gain_points": 9.96, "round_budget": None, "target_accuracy": 80.0, **extra}


def test_headline_pairs_seeds_against_the_best_baseline_with_hand_intervals(tmp_path):
    out = comparisons.headline_table(comparison_runs(tmp_path), headline_options()).set_index("budget_value")
    scarce, ample = out.loc[0.5], out.loc[2.0]
    # 0.5 MHz: scheduling (mean 78.67) beats digital (72); differences 2, 4, 4
    assert scarce["best_baseline"] == "scheduling"
    assert (scarce["gain_pp"], scarce["gain_ci_low"], scarce["gain_ci_high"]) == pytest.approx(hand_interval([2, 4, 4]))
    assert scarce["significant"] == "yes" and scarce["n"] == 3
    assert scarce["method_accuracy_pct"] == pytest.approx(82.0)
    assert scarce["baseline_accuracy_pct"] == pytest.approx(236 / 3)
    # at the round budget the differences are 10 points larger: 12, 14, 14
    assert scarce["round_budget"] == 3
    assert (scarce["budget_gain_pp"], scarce["budget_gain_ci_low"], scarce["budget_gain_ci_high"]) == \
        pytest.approx(hand_interval([12, 14, 14]))
    assert scarce["budget_significant"] == "yes"
    # 2 MHz: digital (89.33) is best; differences 1, -2, 2: the interval contains 0
    assert ample["best_baseline"] == "digital"
    assert (ample["gain_pp"], ample["gain_ci_low"], ample["gain_ci_high"]) == pytest.approx(hand_interval([1, -2, 2]))
    assert ample["significant"] == "no"
    assert (out["test_set_size"] == 360).all() and out["smallest_step_pp"].tolist() == pytest.approx([100 / 360] * 2)
    assert (out["method_normalize"] == "received").all() and (out["paper_gain_pp"] == 9.96).all()


def test_headline_rounds_to_target_report_censored_runs_as_not_reached(tmp_path):
    out = comparisons.headline_table(comparison_runs(tmp_path), headline_options()).set_index("budget_value")
    scarce = out.loc[0.5]
    # spfl 80, 82, 84 at round 6 (70, 72, 74 at round 3): every run reaches 80 % at round 6
    assert (scarce["method_median_rounds_to_target"], scarce["method_reached_target"]) == (6.0, "3/3")
    # scheduling 78, 78, 80: one run of three reaches 80 %: the median run never does
    assert math.isnan(scarce["baseline_median_rounds_to_target"]) and scarce["baseline_reached_target"] == "1/3"
    path = tmp_path / "h.csv"
    render.write_table(out.reset_index(), "headline", path, tmp_path / "h.md")
    back = pd.read_csv(path, keep_default_na=False)
    assert back.loc[0, "baseline_median_rounds_to_target"] == ""  # empty, never a number
    md = (tmp_path / "h.md").read_text()
    assert "Rounds to 80 %: per run, the first evaluated round with test accuracy >= 80 %" in md
    assert '"not reached" when the median run did not get there' in md
    assert "| 6 (3/3 reached) | " in md and "| not reached (1/3 reached) |" in md


def test_headline_with_two_seeds_has_an_interval_but_notes_it_is_not_drawn(tmp_path):
    out = comparisons.headline_table(comparison_runs(tmp_path, seeds=(0, 1)), headline_options())
    row = out.set_index("budget_value").loc[0.5]
    assert row["n"] == 2  # differences 2, 4: s = sqrt(2), half = 12.706
    assert (row["gain_ci_low"], row["gain_ci_high"]) == pytest.approx((3 - 12.706204736174694, 3 + 12.706204736174694))
    assert row["significant"] == "no"
    notes = " ".join(markdown.headline_notes(out))
    assert "n = 2 seed(s)" in notes and "drawn in the figures only from n >= 3" in notes


def test_headline_notes_state_seeds_test_set_resolution_and_what_is_not_significant(tmp_path):
    out = comparisons.headline_table(comparison_runs(tmp_path), headline_options())
    notes = markdown.headline_notes(out)
    text = " ".join(notes)
    assert "Largest gain: 3.33 pp" in notes[0] and ", significant) at B_tot = 0.5 MHz against scheduling" in notes[0]
    assert "n = 3 seed(s)" in text
    assert "Test set of digits: 360 images, so one image is 0.28 pp" in text
    assert "Not significant (final accuracy; the paired 95 % interval contains 0): B_tot = 2 MHz." in text
    assert "not comparable to the paper's" in text


def test_headline_says_when_the_methods_compared_aggregated_differently(tmp_path):
    runs = comparison_runs(tmp_path, normalize={(0.5, "scheduling"): "all"})
    out = comparisons.headline_table(runs, headline_options()).set_index("budget_value")
    assert (out.loc[0.5, "method_normalize"], out.loc[0.5, "baseline_normalize"]) == ("received", "all")
    text = " ".join(markdown.headline_notes(out.reset_index()))
    assert "Not a like-for-like aggregation at B_tot = 0.5 MHz (spfl: normalize = received, scheduling: " \
           "normalize = all)" in text


def test_headline_round_budget_option_moves_the_compared_round(tmp_path):
    out = comparisons.headline_table(comparison_runs(tmp_path), headline_options(round_budget=6))
    row = out.set_index("budget_value").loc[0.5]
    assert row["round_budget"] == 6 and row["budget_gain_pp"] == pytest.approx(row["gain_pp"])


def test_headline_of_the_plan_takes_signsgd_and_pairs_seeds(plan):
    out = comparisons.headline_table(records(plan, plan.headline_runs()), plan.headline)
    bw = out[out["experiment"] == "bandwidth"].set_index("budget_value")
    assert (bw["best_baseline"] == "signsgd").all()
    # spfl - signsgd per seed at 1 MHz: 100 * (0.08 + 0.04 + spread) = 12, 13, 15
    assert (bw.loc[1.0, "gain_pp"], bw.loc[1.0, "gain_ci_low"], bw.loc[1.0, "gain_ci_high"]) == \
        pytest.approx(hand_interval([12, 13, 15]))
    assert bw.loc[2.0, "gain_pp"] == pytest.approx((10 + 11 + 13) / 3)
    assert set(out["experiment"]) == {"bandwidth", "power"} and (out["n"] == 3).all()


# --- sensitivity -----------------------------------------------------------------------------------

def test_sensitivity_compares_within_each_variant_and_budget(tmp_path):
    runs = []
    # variant "normalize=all": every method 5 points lower, spfl another 5 lower at 0.5 MHz
    for variant, shift in (("normalize=all", -5), ("default", 0)):
        for budget, methods in FINAL.items():
            for method, values in methods.items():
                for seed in (0, 1, 2):
                    final = values[seed] + shift + (-5 if (variant, budget, method) == ("normalize=all", 0.5, "spfl")
                                                    else 0)
                    runs.append(write_run(tmp_path, "sens", method, seed, final, final - 10,
                                          normalize="all" if variant == "normalize=all" else "received",
                                          total_bandwidth_mhz=budget, variant=variant))
    options = {"experiment": "sens", "x": "variant", "methods": ["spfl", "digital", "scheduling"]}
    out = render.build_table("sensitivity", runs, options)
    assert out["variant"].tolist() == ["default", "normalize=all", "default", "normalize=all"]
    assert out["panel"].tolist() == ["B_tot = 0.5 MHz"] * 2 + ["B_tot = 2 MHz"] * 2
    rows = out.set_index(["total_bandwidth_mhz", "variant"])
    assert (rows.loc[(0.5, "default"), "gain_pp"], rows.loc[(0.5, "default"), "gain_ci_low"]) == \
        pytest.approx(hand_interval([2, 4, 4])[:2])
    # under normalize=all at 0.5 MHz the differences are -3, -1, -1
    assert rows.loc[(0.5, "normalize=all"), ["gain_pp", "gain_ci_low", "gain_ci_high"]].tolist() == \
        pytest.approx(hand_interval([-3, -1, -1]))
    assert rows.loc[(0.5, "default"), "significant"] == "yes"
    assert rows.loc[(0.5, "normalize=all"), "significant"] == "no"  # [-4.53, 1.20]
    assert rows.loc[(0.5, "normalize=all"), "best_baseline"] == "scheduling"
    assert rows.loc[(0.5, "normalize=all"), "method_normalize"] == "all"
    assert rows.loc[(0.5, "default"), "baseline_normalize"] == "received"
    notes = " ".join(markdown.sensitivity_notes(out))
    assert "Not significant (final accuracy; the paired 95 % interval contains 0): B_tot = 0.5 MHz: normalize=all; " \
           "B_tot = 2 MHz: default; B_tot = 2 MHz: normalize=all." in notes
    assert "Not a like-for-like aggregation" not in notes and "same normalize (all, received)" in notes


def test_sensitivity_needs_a_baseline():
    with pytest.raises(reading.RecordError, match="needs a method and at least one baseline"):
        comparisons.sensitivity_table([{"experiment": "e"}], {"methods": ["spfl"], "x": "variant"})


# --- output ----------------------------------------------------------------------------------------

def test_write_table_writes_csv_markdown_and_html_with_notes(tmp_path):
    out = comparisons.headline_table(comparison_runs(tmp_path / "runs"), headline_options())
    render.write_table(out, "headline", tmp_path / "h.csv", tmp_path / "h.md", tmp_path / "h.html")
    back = pd.read_csv(tmp_path / "h.csv")
    assert back["gain_pp"].tolist() == pytest.approx(out["gain_pp"].tolist())
    assert back["significant"].tolist() == ["yes", "no"]
    md = (tmp_path / "h.md").read_text()
    assert md.startswith("# Headline: SP-FL minus the best baseline") and "| significant |" in md
    assert "| B_tot = 0.5 MHz | received | 82 | scheduling | received | 78.67 | 3.333 | 0.4649 | 6.202 | yes |" in md
    assert "| test_set_size |" not in md and "| method_rounds_to_target |" in md  # the size is in the notes
    untargeted = comparisons.headline_table(comparison_runs(tmp_path / "runs"), headline_options(target_accuracy=None))
    assert "rounds_to_target" not in markdown.to_markdown(markdown.comparison_markdown(untargeted))
    page = (tmp_path / "h.html").read_text()
    assert "<table" in page and "Not significant" in page


def test_markdown_shows_missing_values_as_na():
    text = markdown.to_markdown(pd.DataFrame({"a": [1.23456, math.nan], "b": ["x", None]}))
    assert "| 1.235 | x |" in text and "| n/a | n/a |" in text


def test_test_set_sizes_are_the_dataset_registrys():
    size = comparisons.test_set_size
    assert size(["digits"]) == 360 and size(["cifar10", "cifar10"]) == 10000
    assert math.isnan(size(["digits", "cifar10"])) and math.isnan(size(["mnist"]))


def test_runs_table_has_progress_columns(plan):
    out = render.build_table("runs", records(plan, plan.experiments["bandwidth"].runs), {"target_accuracy": 75.0})
    spfl = out[(out["method"] == "spfl") & (out["total_bandwidth_mhz"] == 1.0)].set_index("seed")
    assert (spfl["round_budget"] == EVAL).all()
    assert spfl["budget_accuracy_pct"].tolist() == pytest.approx([37.0, 38.0, 39.5])
    assert spfl["target_reached"].tolist() == [False, True, True]  # 74 < 75 <= 76, 79
    assert math.isnan(spfl.loc[0, "rounds_to_target"]) and spfl.loc[1, "rounds_to_target"] == ROUNDS
    assert accuracy("spfl", 0, 1.0) == pytest.approx(0.74)


def test_allocation_table_needs_the_recorded_slot_share(plan, tmp_path):
    import shutil

    runs = records(plan, plan.figure_runs("allocation"))[:1]
    copy = tmp_path / "cell"
    shutil.copytree(runs[0]["dir"], copy)
    alloc = copy / runs[0]["method"] / "allocation.csv"
    pd.read_csv(alloc).drop(columns=["slot_share"]).to_csv(alloc, index=False)
    with pytest.raises(reading.RecordError, match="allocation.csv' has no slot_share per device"):
        render.build_table("allocation", [{**runs[0], "dir": str(copy)}], plan.figures["allocation"])
