"""Figures a reader understands without the code (issue #23): every figure drawn from synthetic records
shaped like the quick config (six bandwidths, three labelled bandwidth sweeps, confirmation seeds), and
its labels checked: every swept value has a tick label, panel titles are words (not config keys), no row
is wider than 10 in, the gain figure names the best baseline at each point, silent devices are explained,
coinciding curves are noted."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from spfl.reporting import render
from spfl.reporting.plots import axes as plot_axes
from spfl.reporting.plots import comparisons as comparison_plots
from spfl.reporting.plots import style as plot_style
from synthetic_records import make_plan, quick_like_config, table

STYLE = {**plot_style.DEFAULT_STYLE, "dpi": 60}
BANDWIDTHS = {"0.1", "0.2", "0.4", "0.7", "1.2", "2.5"}
LABELS = {"normalize: received (default)", "normalize: all", "normalize: all + optimized sign share",
          "power sweep"}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    plan = make_plan(tmp_path_factory.mktemp("quick-like"), quick_like_config())
    return plan, {name: table(plan, name) for name in plan.figures}


@pytest.fixture(scope="module")
def drawn(quick):
    _, tables = quick
    out = {name: render.draw(name, frame, STYLE) for name, frame in tables.items()}
    for fig in out.values():
        fig.draw_without_rendering()
    yield out
    for fig in out.values():
        plt.close(fig)


def tick_texts(axis) -> set[str]:
    return {label.get_text() for _, label in plot_axes.drawn_tick_labels(axis)}


def test_every_figure_is_at_most_ten_inches_wide(drawn):
    for name, fig in drawn.items():
        assert fig.get_size_inches()[0] <= plot_axes.MAX_ROW_IN + 1e-6, name


def test_every_swept_bandwidth_has_a_tick_label(drawn):
    checked = 0
    for name, fig in drawn.items():
        for ax in fig.axes:
            if ax.get_xlabel().startswith("Total bandwidth"):
                assert BANDWIDTHS <= tick_texts(ax.xaxis), (name, ax.get_title(), tick_texts(ax.xaxis))
                checked += 1
    assert checked >= 6  # accuracy_vs_bandwidth, packet_errors (2), gain (3), devices_served (6)


def test_panel_titles_are_words_not_config_keys(quick, drawn):
    plan, _ = quick
    keys = set(plan.experiments)
    for name, fig in drawn.items():
        for ax in fig.axes:
            title = ax.get_title()
            assert title not in keys and "_" not in title.replace("B_tot", "").replace("P_max", ""), (name, title)


def test_gain_figure_is_titled_with_labels_and_names_the_best_baseline_at_each_point(drawn):
    fig = drawn["gain"]
    assert {ax.get_title() for ax in fig.axes} == LABELS
    names = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert {"signSGD"} <= set(names) and len(names) >= 3 * 6 * 2  # every budget, both seed groups
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert comparison_plots.BEST_LABEL in legend
    assert "final accuracy, exploratory (seeds 0-2)" in legend and "final accuracy, confirmatory (seeds 5-7)" in legend


def test_devices_served_figure_has_a_row_per_experiment_and_both_quantities(drawn):
    fig = drawn["devices_served"]
    assert len(fig.axes) == 2 * len(LABELS)
    assert [ax.get_ylabel() for ax in fig.axes[:2]] == ["Devices whose sign arrived\n(served) per round",
                                                        "Devices whose full gradient\narrived per round"]
    assert {ax.get_title().split(", exploratory")[0] for ax in fig.axes} == LABELS


def test_allocation_figure_plots_share_against_distance_and_gradient_and_explains_silent_devices(drawn):
    fig = drawn["allocation"]
    assert [ax.get_xlabel() for ax in fig.axes[:2]] == ["Distance to the server (m)"] * 2
    assert [ax.get_xlabel() for ax in fig.axes[2:]] == ["Gradient norm / round's largest"] * 2
    notes = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any(n.startswith("silent: ") and "median gradient norm: silent 0.12, served" in n for n in notes), notes
    assert "silent: given no bandwidth" in [t.get_text() for t in fig.legends[0].get_texts()]
    # per-panel scales: the y axes are not shared between budgets
    assert not fig.axes[0].get_shared_y_axes().joined(fig.axes[0], fig.axes[1])


def test_packet_errors_are_one_panel_per_method_and_a_note_says_where_the_packets_coincide(quick):
    _, tables = quick
    frame = tables["packet_errors"].copy()
    sign = frame[frame["packet"] == "sign"].set_index(["method", "total_bandwidth_mhz"])["mean"]
    modulus = frame["packet"] == "modulus"
    frame.loc[modulus, "mean"] = [sign[(m, b)] for m, b in zip(frame.loc[modulus, "method"],
                                                                frame.loc[modulus, "total_bandwidth_mhz"])]
    fig = render.draw("packet_errors", frame, STYLE)
    try:
        assert [ax.get_title() for ax in fig.axes] == ["SP-FL", "SP-FL, uniform allocation"]
        notes = [t.get_text() for ax in fig.axes for t in ax.texts]
        assert notes == ["modulus packet = sign packet (identical at every point)"] * 2
    finally:
        plt.close(fig)


def test_curves_within_half_a_point_are_noted(quick):
    _, tables = quick
    frame = tables["accuracy_vs_bandwidth"].copy()
    digital = frame[frame["method"] == "digital"].set_index("total_bandwidth_mhz")["mean"]
    reuse = frame["method"] == "digital_reuse"
    frame.loc[reuse, "mean"] = frame.loc[reuse, "total_bandwidth_mhz"].map(digital) + 0.3
    fig = render.draw("accuracy_vs_bandwidth", frame, STYLE)
    try:
        notes = [t.get_text() for ax in fig.axes for t in ax.texts]
        assert "Digital FL = Digital FL + reuse (within 0.5 pp at every point)" in notes
        # the two curves' markers are moved apart sideways, so both stay visible
        lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
        assert list(lines["Digital FL"].get_xdata()) != list(lines["Digital FL + reuse"].get_xdata())
    finally:
        plt.close(fig)


def test_the_headline_names_each_row_and_groups_the_seeds(quick, tmp_path):
    plan, _ = quick
    from synthetic_records import records

    out = render.build_table("headline", records(plan, plan.headline_runs()), plan.headline)
    render.write_table(out, "headline", tmp_path / "h.csv", tmp_path / "h.md", tmp_path / "h.html")
    back = pd.read_csv(tmp_path / "h.csv")
    assert set(back["experiment_label"]) == LABELS
    groups = back.groupby("experiment_label")["seeds"].agg(lambda s: sorted(set(s)))
    assert groups["normalize: all"] == ["confirmatory (seeds 5-7)", "exploratory (seeds 0-2)"]
    assert groups["power sweep"] == ["exploratory (seeds 0-2)"]
    md = (tmp_path / "h.md").read_text()
    summary = md.split("\n\n", 2)[2].splitlines()[0]
    assert summary.startswith("Largest gain on the confirmatory seeds (5-7): ") and ', in "normalize: ' in summary
