"""Confirmation seeds (config key `confirmation`), experiment labels, the headline's exploratory and
confirmatory groups and the devices-served table, on synthetic run records (no simulation)."""

from __future__ import annotations

import copy

import pandas as pd
import pytest

from spfl.configuration.pipeline import ConfigError
from spfl.configuration.plan import load_plan
from spfl.reporting import render
from spfl.reporting.tables import comparisons, markdown
from synthetic_records import config, make_plan, records, served_devices


def confirming(seeds=(5, 6), experiments=("bandwidth",), labels=True) -> dict:
    cfg = config()
    cfg["confirmation"] = {"seeds": list(seeds), **({"experiments": list(experiments)} if experiments else {})}
    if labels:
        cfg["experiments"]["bandwidth"]["label"] = "normalize: received (default)"
    return cfg


# --- the plan --------------------------------------------------------------------------------------

def test_confirmation_seeds_add_cells_only_for_the_listed_experiments_and_keep_every_existing_cell():
    before, after = load_plan(config()), load_plan(confirming())
    assert set(before.cells) < set(after.cells)  # every existing cell (and so its folder) stays
    for name, cell in before.cells.items():
        assert after.cells[name].params == cell.params and after.cells[name].methods == cell.methods
    new = [after.cells[c] for c in set(after.cells) - set(before.cells)]
    assert {c.params["seed"] for c in new} == {5, 6} and {tuple(c.experiments) for c in new} == {("bandwidth",)}
    bandwidth = after.experiments["bandwidth"]
    assert bandwidth.seeds == (0, 1, 2) and bandwidth.confirmation_seeds == (5, 6)
    assert {r.seed for r in bandwidth.confirmation_runs} == {5, 6} and all(r.confirmation for r in
                                                                             bandwidth.confirmation_runs)
    assert after.experiments["power"].confirmation_runs == []
    # the per-experiment figures read the exploratory seeds only; the headline and the runs table read all
    assert {r.seed for r in after.figure_runs("accuracy_vs_bandwidth")} == {0, 1, 2}
    assert {r.seed for r in after.headline_runs() if r.experiment == "bandwidth"} == {0, 1, 2, 5, 6}
    assert {r.seed for r in after.headline_runs() if r.experiment == "power"} == {0, 1, 2}
    assert len(after.all_runs()) == len(before.all_runs()) + len(bandwidth.confirmation_runs)
    assert after.headline["confirmation_seeds"] == [5, 6]
    assert after.headline["labels"] == {"bandwidth": "normalize: received (default)", "power": "power"}


def test_confirmation_experiments_default_to_the_headline_experiments():
    plan = load_plan(confirming(experiments=None))
    assert plan.confirmation == {"seeds": [5, 6], "experiments": ["bandwidth", "power"]}
    assert plan.experiments["power"].confirmation_seeds == (5, 6)


@pytest.mark.parametrize(("change", "message"), [
    ({"seeds": [5, 2]}, "config key 'confirmation.seeds[1]' = 2 is invalid: allowed a seed not in 'seeds' [0, 1, 2]"),
    ({"experiments": ["bandwdith"]}, "config key 'confirmation.experiments[0]' = 'bandwdith' is invalid: allowed "
                                     "one of bandwidth, power"),
    ({"seeds": []}, "config key 'confirmation.seeds' = [] is invalid: allowed a list of at least 1 item"),
    ({"seed": [5]}, "config key 'confirmation.seed' is unknown: allowed keys are experiments, seeds"),
])
def test_bad_confirmation_is_refused_in_one_line_naming_the_key(change, message):
    cfg = confirming()
    cfg["confirmation"] = {**cfg["confirmation"], **change}
    if "seed" in change:  # a misspelt key: reported with the then missing `seeds` on a line of its own
        del cfg["confirmation"]["seeds"]
    with pytest.raises(ConfigError) as caught:
        load_plan(cfg)
    assert message in str(caught.value)
    if "seed" not in change:
        assert "\n" not in str(caught.value).strip().removeprefix("invalid config:\n  ")


def test_experiment_label_is_validated():
    cfg = copy.deepcopy(config())
    cfg["experiments"]["bandwidth"]["label"] = ""
    with pytest.raises(ConfigError, match="config key 'experiments.bandwidth.label' = \"\" is invalid"):
        load_plan(cfg)


# --- the headline ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    return make_plan(tmp_path_factory.mktemp("confirmation"), confirming())


def test_headline_shows_exploratory_and_confirmatory_groups_side_by_side(plan, tmp_path):
    out = comparisons.headline_table(records(plan, plan.headline_runs()), plan.headline)
    bw = out[out["experiment"] == "bandwidth"]
    assert bw["seeds"].tolist() == ["exploratory (seeds 0-2)", "confirmatory (seeds 5-6)"] * 2
    assert bw["experiment_label"].eq("normalize: received (default)").all()
    assert bw["n"].tolist() == [3, 2, 3, 2]
    # confirmation seeds 5, 6 behave like seeds 0, 1 in the synthetic records: spfl - signsgd = 12, 13 at 1 MHz
    confirmatory = bw[(bw["seed_group"] == "confirmatory") & (bw["budget_value"] == 1.0)].iloc[0]
    assert confirmatory["gain_pp"] == pytest.approx(12.5)
    assert out[out["experiment"] == "power"]["seeds"].eq("exploratory (seeds 0-2)").all()
    notes = markdown.headline_notes(out)
    assert notes[0].startswith("Largest gain on the confirmatory seeds (5-6): 12.50 pp")
    assert 'at B_tot = 1 MHz against signsgd, in "normalize: received (default)"' in notes[0]
    assert notes[1].startswith("On the exploratory seeds (0-2), used to choose the settings, the largest gain was 1")
    render.write_table(out, "headline", tmp_path / "h.csv", tmp_path / "h.md", tmp_path / "h.html")
    md = (tmp_path / "h.md").read_text()
    assert "| experiment | seeds | budget_label |" in md
    assert "| normalize: received (default) | confirmatory (seeds 5-6) | B_tot = 1 MHz |" in md
    assert "| power | exploratory (seeds 0-2) | P_max = 10 dBm |" in md
    assert "normalize: received (default)" in (tmp_path / "h.html").read_text()


def test_headline_without_confirmation_names_the_experiment_in_its_summary(tmp_path):
    plan = make_plan(tmp_path, {**config(), "experiments": {
        **config()["experiments"], "bandwidth": {**config()["experiments"]["bandwidth"], "label": "received"}}})
    out = comparisons.headline_table(records(plan, plan.headline_runs()), plan.headline)
    assert set(out["seed_group"]) == {"exploratory"}
    notes = markdown.headline_notes(out)
    assert notes[0].startswith("Largest gain: ") and ', in "received"' in notes[0]


def test_seed_list_is_short():
    assert comparisons.seed_list([5, 6, 7, 8, 9]) == "5-9"
    assert comparisons.seed_list([0, 2, 5, 6, 7]) == "0, 2, 5-7"
    assert comparisons.seed_list([3]) == "3"


# --- devices served --------------------------------------------------------------------------------

def test_devices_served_table_per_method_budget_and_seed_group(plan, tmp_path):
    out = render.build_table("devices_served", records(plan, plan.headline_runs()), plan.headline)
    rows = out.set_index(["experiment", "seed_group", "budget_value", "method", "quantity"])
    sign, both = served_devices("spfl", 4, 1.0)
    # rounds 1..6: sign + (r mod 2) devices' signs arrive, so the mean over rounds is sign + 0.5
    assert rows.loc[("bandwidth", "exploratory", 1.0, "spfl", "sign arrived"), "mean"] == pytest.approx(sign + 0.5)
    assert rows.loc[("bandwidth", "confirmatory", 1.0, "spfl", "full gradient arrived"), "mean"] == both
    assert rows.loc[("bandwidth", "confirmatory", 1.0, "spfl", "transmitting"), "n"] == 2
    assert rows.loc[("bandwidth", "exploratory", 2.0, "signsgd", "full gradient arrived"), "mean"] == 0
    assert set(out["method"]) == {"spfl", "digital", "digital_reuse", "scheduling", "signsgd"}
    assert set(out[out["experiment"] == "power"]["seed_group"]) == {"exploratory"}
    render.write_table(out, "devices_served", tmp_path / "d.csv", tmp_path / "d.md")
    md = (tmp_path / "d.md").read_text()
    assert "| experiment | seeds | budget | K | method | transmitting per round | sign arrived per round | " \
           "full gradient arrived per round | n |" in md
    assert "| normalize: received (default) | confirmatory (seeds 5-6) | B_tot = 1 MHz | 4 | spfl | 4.0 [4.0, 4.0] |" \
           in md
    back = pd.read_csv(tmp_path / "d.csv")
    assert len(back) == len(out)
