"""Figures: the registry and the files generated from it, readable drawings, intervals only from three
seeds, byte-identical output.  Every figure is drawn from tables built from synthetic run records
(tests/synthetic_records.py), and the tests inspect the drawn artists, not only that a file exists."""

from __future__ import annotations

import itertools
import shutil
import subprocess
import sys

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import seaborn as sns
import yaml
from matplotlib.collections import PolyCollection
from matplotlib.container import ErrorbarContainer

from spfl import cli
from spfl.configuration import figures, generated
from spfl.reporting import render
from spfl.reporting.plots import axes as plot_axes
from spfl.reporting.plots import comparisons as comparison_plots
from spfl.reporting.plots import marks
from spfl.reporting.plots import style as plot_style
from spfl.reporting.tables import comparisons
from synthetic_records import make_plan, records, table, write_run
from workflow_helpers import ROOT

STYLE = {**plot_style.DEFAULT_STYLE, "dpi": 100}


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    return make_plan(tmp_path_factory.mktemp("records"))


def comparison_runs(root, seeds=(0, 1, 2), variants=("default",)):
    """Runs of spfl, digital and scheduling at two bandwidths (and variants), seeds as given."""
    finals = {0.5: {"spfl": [80, 82, 84], "digital": [70, 71, 75], "scheduling": [78, 78, 80]},
              2.0: {"spfl": [90, 88, 91], "digital": [89, 90, 89], "scheduling": [85, 85, 85]}}
    runs = []
    for v, variant in enumerate(variants):
        for budget, methods in finals.items():
            for method, values in methods.items():
                for seed in seeds:
                    final = values[seed] - 2 * v
                    extra = {"variant": variant} if len(variants) > 1 else {}
                    runs.append(write_run(root, "bw", method, seed, final, final - 10,
                                          total_bandwidth_mhz=budget, **extra))
    return runs


HEADLINE_OPTIONS = {"method": "spfl", "baselines": ["digital", "scheduling"], "budgets": {"bw": "total_bandwidth_mhz"},
                    "paper_gain_points": 9.96, "round_budget": None, "target_accuracy": None}
VARIANTS = ("default", "fading=per_packet", "normalize=all", "slot_share=optimized", "power_constraint=sum",
            "compensation=scalar")


@pytest.fixture(scope="module")
def tables(plan, tmp_path_factory):
    """name -> table of every registered figure."""
    root = tmp_path_factory.mktemp("comparisons")
    out = {name: table(plan, name) for name in plan.figures if name != "gain"}
    out["devices_served"] = render.build_table("devices_served", records(plan, plan.headline_runs()), plan.headline)
    out["gain"] = comparisons.headline_table(comparison_runs(root / "headline"), HEADLINE_OPTIONS)
    out["sensitivity"] = render.build_table(
        "sensitivity", comparison_runs(root / "sensitivity", variants=VARIANTS),
        {"x": "variant", "methods": ["spfl", "digital", "scheduling"]})
    return out


# --- the registry and what is generated from it -----------------------------------------------------

def test_committed_files_equal_the_ones_generated_from_the_registry():
    """The config schema's figure list, the report captions and config/README.md's figure table;
    regenerate with `spfl generate`."""
    for path, text in generated.generated_files(ROOT).items():
        assert (ROOT / path).read_text() == text, f"{path} is out of date"


def test_the_schema_lists_exactly_the_registered_figures():
    schema = yaml.safe_load((ROOT / generated.SCHEMA_FILE).read_text())
    assert schema["properties"]["figures"] == generated.figures_schema()
    assert list(schema["properties"]["figures"]["properties"]) == list(figures.FIGURES)
    assert schema["properties"]["figures"]["properties"]["gain"] == {"$ref": "#/$defs/headline_figure"}


def test_every_registered_name_has_a_report_caption_and_the_interval_rule_where_intervals_are_drawn():
    for name, entry in figures.REGISTRY.items():
        if entry.caption:
            text = (ROOT / "workflow" / "report" / f"{name}.rst").read_text()
            assert ("fewer than 3 seeds" in text) == entry.intervals, name
    assert set(figures.FIGURES) | set(figures.TABLE_ONLY) == set(figures.REGISTRY)
    assert figures.TABLE_ONLY == ("headline", "runs")


def test_write_generated_repairs_a_stale_file(tmp_path):
    for path in (generated.SCHEMA_FILE, generated.README_FILE):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / path, tmp_path / path)
    readme = tmp_path / generated.README_FILE
    readme.write_text(readme.read_text().replace("| `noniid` |", "| `noniid_old` |"))
    changed = generated.write_generated(tmp_path)
    assert generated.README_FILE in changed and generated.SCHEMA_FILE not in changed
    assert "| `noniid` |" in readme.read_text() and "noniid_old" not in readme.read_text()
    assert generated.write_generated(tmp_path) == []


def test_missing_markers_are_named(tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "README.md").write_text("no markers\n")
    (tmp_path / generated.SCHEMA_FILE).parent.mkdir(parents=True)
    shutil.copy(ROOT / generated.SCHEMA_FILE, tmp_path / generated.SCHEMA_FILE)
    with pytest.raises(figures.FigureError, match="config/README.md' lacks the generated-block markers"):
        generated.generated_files(tmp_path)


def test_every_registry_entry_names_functions_that_exist():
    """Builders and Markdown helpers under spfl.reporting.tables, plotters under spfl.reporting.plots: a table
    rule never imports matplotlib, and each rule's code version hashes the folder its functions are in."""
    for name, entry in figures.REGISTRY.items():
        assert callable(entry.builder), name
        assert (entry.plotter is None) == (name in figures.TABLE_ONLY), name
        for helper in (entry.notes, entry.markdown):
            assert helper is None or callable(figures.reporting_function(helper)), (name, helper)
        assert all(f.startswith("tables.") for f in (entry.table, entry.notes, entry.markdown or "tables.")), name
        assert entry.plot is None or entry.plot.startswith("plots."), name


def test_a_catalogue_name_that_is_no_function_is_named():
    with pytest.raises(figures.FigureError, match="names 'tables.curves.table_pie': allowed a function"):
        figures.reporting_function("tables.curves.table_pie")
    with pytest.raises(figures.FigureError, match="names 'table_final': allowed a function"):
        figures.reporting_function("table_final")


def test_reading_the_registry_imports_no_plotting_or_data_frames():
    """The Snakefile and `spfl` validate configs through spfl.configuration at every start."""
    code = ("import sys, spfl.configuration; "
            "print(*(m in sys.modules for m in ('pandas', 'matplotlib', 'seaborn', 'spfl.reporting.plots')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False"] * 4


def test_experiments_keeps_figures_importable_and_plots_does_not_import_experiments():
    from spfl.configuration import FIGURES

    assert FIGURES is figures.FIGURES
    assert all(hasattr(f, "name") and hasattr(f, "x") and hasattr(f, "methods") for f in FIGURES.values())
    code = ("import sys, spfl.reporting.plots.curves, spfl.reporting.plots.snapshots, "
            "spfl.reporting.plots.comparisons; "
            "print('spfl.configuration' in sys.modules, 'spfl.configuration.figures' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


@pytest.mark.parametrize("half, other", [("tables", "plots"), ("plots", "tables")])
def test_the_table_builders_and_the_plotters_do_not_import_each_other(half, other):
    """The table rules' code version hashes reporting/tables and the plot rules' reporting/plots
    (workflow/rules/common.smk), so neither half may run the other's code; building a table loads no
    matplotlib."""
    code = (f"import importlib, pkgutil, sys, spfl.reporting.{half} as half; "
            f"[importlib.import_module(f'{{half.__name__}}.{{m.name}}') for m in pkgutil.iter_modules(half.__path__)]; "
            f"print('spfl.reporting.{other}' in sys.modules, 'matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", str(half == "plots")]


def test_unknown_figure_and_missing_column_are_named():
    with pytest.raises(figures.FigureError, match="figure 'pie' is unknown: allowed one of accuracy_vs_round"):
        render.draw("pie", pd.DataFrame())
    with pytest.raises(figures.FigureError, match="figure 'headline' is unknown"):
        render.draw("headline", pd.DataFrame())
    with pytest.raises(plot_axes.PlotError, match="has no column 'total_bandwidth_mhz'"):
        render.draw("accuracy_vs_bandwidth", pd.DataFrame({"mean": [1.0]}))


# --- readable figures -------------------------------------------------------------------------------

def drawn_labels(axis):
    low, high = sorted(axis.get_view_interval())
    pad = (high - low) * 1e-9
    return [label for loc, label in zip(axis.get_majorticklocs(), axis.get_majorticklabels())
            if label.get_visible() and label.get_text() and low - pad <= loc <= high + pad]


def assert_readable(fig, style):
    """Each axes at least 40 % of its panel's size; no two tick labels of an axis overlap; the legend
    overlaps no axes."""
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    width, height = style["width_in"] * fig.dpi, style["height_in"] * fig.dpi
    for ax in fig.axes:
        box = ax.get_window_extent(renderer)
        assert box.width >= 0.4 * width and box.height >= 0.4 * height, (ax.get_title(), box.bounds, width, height)
        for axis in (ax.xaxis, ax.yaxis):
            boxes = [label.get_window_extent(renderer) for label in drawn_labels(axis)]
            for a, b in itertools.combinations(boxes, 2):
                assert not a.overlaps(b), (ax.get_title(), [t.get_text() for t in drawn_labels(axis)])
        for legend in fig.legends:
            assert not legend.get_window_extent(renderer).overlaps(box)
    assert fig.legends, "the figure has no legend"


@pytest.mark.parametrize("name", list(figures.FIGURES))
def test_every_figure_is_readable(tables, name):
    fig = render.draw(name, tables[name], STYLE)
    try:
        assert_readable(fig, STYLE)
    finally:
        plt.close(fig)


def many_bandwidths_table(n: int = 3) -> pd.DataFrame:
    """accuracy_vs_bandwidth at nine bandwidths spanning two decades and a half, six methods."""
    rows = []
    for method in ("ideal", "digital", "digital_reuse", "scheduling", "signsgd", "spfl"):
        for i, b in enumerate((0.1, 0.2, 0.3, 0.5, 1, 2, 5, 10, 20)):
            mean = 40 + 5 * i
            rows.append({"experiment": "bw", "total_bandwidth_mhz": b, "panel": "", "method": method,
                         "metric": "final_accuracy_pct", "n": n, "mean": mean, "std": 2.0, "ci_low": mean - 5,
                         "ci_high": mean + 5, "n_diverged": 0, "first_diverged_round": None})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("style", [STYLE, {**STYLE, "width_in": 3.0, "height_in": 2.5, "font_scale": 1.5}])
def test_a_dense_log_axis_keeps_few_non_overlapping_ticks(style):
    fig = render.draw("accuracy_vs_bandwidth", many_bandwidths_table(), style)
    try:
        assert_readable(fig, style)
        assert 2 <= len(drawn_labels(fig.axes[0].xaxis)) <= plot_axes.LOG_TICKS
    finally:
        plt.close(fig)


def test_packet_error_legend_sits_below_the_axes(tables):
    fig = render.draw("packet_errors", tables["packet_errors"], STYLE)
    try:
        fig.draw_without_rendering()
        renderer = fig.canvas.get_renderer()
        legend = fig.legends[0].get_window_extent(renderer)
        axes = fig.axes[0].get_window_extent(renderer)
        assert legend.y1 <= axes.y0 and axes.width >= 0.6 * STYLE["width_in"] * fig.dpi
    finally:
        plt.close(fig)


def test_log_ticks_label_every_swept_value_up_to_the_limit_and_keep_the_ends():
    assert plot_axes.log_ticks([0.5, 1, 2]) == [0.5, 1.0, 2.0]
    assert plot_axes.log_ticks([0.1, 0.2, 0.4, 0.7, 1.2, 2.5]) == [0.1, 0.2, 0.4, 0.7, 1.2, 2.5]
    picked = plot_axes.log_ticks([0.1, 0.2, 0.3, 0.5, 1, 2, 5, 10, 20], most=5)
    assert picked[0] == 0.1 and picked[-1] == 20 and len(picked) <= 5


# --- what is drawn: lines, and intervals only from three seeds --------------------------------------

def bands(fig):
    return [c for ax in fig.axes for c in ax.collections if isinstance(c, PolyCollection)]


def method_lines(fig):
    return [line for ax in fig.axes for line in ax.get_lines() if not line.get_label().startswith("_")]


@pytest.mark.parametrize(("n", "expected_bands"), [(3, 6), (2, 0), (1, 0)])
def test_bands_are_drawn_only_from_three_seeds(n, expected_bands):
    fig = render.draw("accuracy_vs_bandwidth", many_bandwidths_table(n), STYLE)
    try:
        assert len(method_lines(fig)) == 6  # one line per method
        assert len(bands(fig)) == expected_bands
    finally:
        plt.close(fig)


def test_a_band_skips_the_points_with_fewer_than_three_seeds():
    data = many_bandwidths_table(3)
    data.loc[data["total_bandwidth_mhz"] == 20, "n"] = 2
    low, high = marks.drawn_interval(data[data["method"] == "spfl"])
    assert np.isnan(low[-1]) and np.isnan(high[-1]) and not np.isnan(low[:-1]).any()


def test_error_bars_are_drawn_only_from_three_seeds():
    for n, expected in ((3, 6), (2, 0)):
        fig = render.draw("accuracy_vs_bandwidth", many_bandwidths_table(n), {**STYLE, "error_bars": "bars"})
        containers = [c for ax in fig.axes for c in ax.containers if isinstance(c, ErrorbarContainer)]
        plt.close(fig)
        assert len(containers) == expected, n


def test_round_figure_has_one_line_per_method_and_panel(tables):
    fig = render.draw("accuracy_vs_round", tables["accuracy_vs_round"], STYLE)
    try:
        assert len(fig.axes) == 2 and [ax.get_title() for ax in fig.axes] == ["B_tot = 1 MHz", "B_tot = 2 MHz"]
        for ax in fig.axes:
            labels = [line.get_label() for line in ax.get_lines()]
            assert labels == [plot_style.METHOD_LABELS[m] for m in ("ideal", "digital", "digital_reuse", "scheduling",
                                                                "signsgd", "spfl")]
            assert list(ax.get_lines()[-1].get_xdata()) == [0, 1, 3, 6]
        assert len(bands(fig)) == 12  # three seeds: a band per method and panel
    finally:
        plt.close(fig)


def gain_bars(fig):
    return [c for ax in fig.axes for c in ax.containers if isinstance(c, ErrorbarContainer)]


def test_gain_figure_draws_paired_intervals_zero_line_and_the_paper(tmp_path):
    out = comparisons.headline_table(comparison_runs(tmp_path), HEADLINE_OPTIONS)
    fig = render.draw("gain", out, STYLE)
    try:
        ax = fig.axes[0]
        gains = [line for line in ax.get_lines() if line.get_label().startswith("final accuracy")][0]
        assert list(gains.get_ydata()) == pytest.approx([10 / 3, 1 / 3])  # 2, 4, 4 and 1, -2, 2 (hand means)
        assert len(gain_bars(fig)) == 2  # final and round-budget gains, three seeds
        flat = [tuple(line.get_ydata()) for line in ax.get_lines() if len(line.get_ydata()) == 2]
        assert (0.0, 0.0) in flat and (9.96, 9.96) in flat
        texts = [t.get_text() for t in fig.legends[0].get_texts()]
        assert "paper: up to 9.96 pp (CIFAR-10)" in texts and comparison_plots.HOLLOW_LABEL in texts
        hollow = [line for line in ax.get_lines() if line.get_label() == "_not_significant"]
        # 2 MHz: both intervals contain 0 (final and round budget: every method loses 10 points there)
        # (each series shifted sideways a little so that neither hides the other)
        assert [len(line.get_xdata()) for line in hollow] == [1, 1]
        assert [line.get_xdata()[0] for line in hollow] == pytest.approx([2.0, 2.0], rel=0.05)
        assert hollow[0].get_xdata()[0] < 2.0 < hollow[1].get_xdata()[0]
    finally:
        plt.close(fig)
    two = comparisons.headline_table(comparison_runs(tmp_path / "two", seeds=(0, 1)), HEADLINE_OPTIONS)
    fig = render.draw("gain", two, STYLE)
    assert gain_bars(fig) == []  # n = 2: the interval is in the table, not drawn
    plt.close(fig)


def test_sensitivity_figure_has_one_row_per_variant_and_a_panel_per_budget(tables):
    fig = render.draw("sensitivity", tables["sensitivity"], STYLE)
    try:
        assert [ax.get_title() for ax in fig.axes] == ["B_tot = 0.5 MHz", "B_tot = 2 MHz"]
        # the default first, the others alphabetically
        shown = ["default", *(v.replace("=", ": ") for v in sorted(VARIANTS[1:]))]  # variants in words
        assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == shown
        assert len(gain_bars(fig)) == 2
        assert any(tuple(line.get_xdata()) == (0.0, 0.0) for line in fig.axes[0].get_lines())  # zero line
    finally:
        plt.close(fig)


def test_method_colors_are_fixed_and_distinct():
    colors = plot_style.method_colors("colorblind")
    palette = sns.color_palette("colorblind", n_colors=len(plot_style.METHOD_STYLES))
    assert colors["spfl"] == palette[0]  # SP-FL takes the most salient color whatever the figure shows
    assert len(set(colors.values())) == len(colors) == len(plot_style.METHOD_LABELS)


# --- byte-identical output --------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["accuracy_vs_bandwidth", "gain"])
def test_the_same_table_gives_the_same_bytes(tables, name, tmp_path):
    path = tmp_path / f"{name}.csv"
    render.write_table(tables[name], name, path)
    for i in (1, 2):
        render.make_figure(name, path, tmp_path / f"{i}.pdf", tmp_path / f"{i}.png", {"dpi": 60})
    pdf, png = (tmp_path / "1.pdf").read_bytes(), (tmp_path / "1.png").read_bytes()
    assert pdf[:4] == b"%PDF" and png[:4] == b"\x89PNG"
    assert pdf == (tmp_path / "2.pdf").read_bytes() and png == (tmp_path / "2.png").read_bytes()
    assert b"CreationDate" not in pdf and b"Software" not in png and b"matplotlib" not in png.lower()


# --- configuration of the registry's figures and headline options ----------------------------------

def test_gain_reads_the_headline_runs_and_needs_a_headline():
    from spfl.configuration import ConfigError, load_plan
    from synthetic_records import config

    plan = load_plan(config())
    assert plan.figures["gain"]["source"] == "headline"
    assert plan.figure_runs("gain") == plan.headline_runs()
    without = {k: v for k, v in config().items() if k != "headline"}
    with pytest.raises(ConfigError, match="config key 'figures.gain' needs the headline table: add config key "
                                          "'headline'"):
        load_plan(without)
    with pytest.raises(ConfigError, match="'figures.gain.experiment' is unknown"):
        load_plan({**config(), "figures": {"gain": {"experiment": "bandwidth"}}})


@pytest.mark.parametrize(("options", "message"), [
    ({"round_budget": 4}, r"'headline.round_budget' = 4 is invalid: allowed an evaluated round of "
                          r"experiments.bandwidth \(0, 1, 3, 6\)"),
    ({"round_budget": 0}, r"'headline.round_budget' = 0 is invalid: allowed >= 1"),
    ({"target_accuracy": 120}, r"'headline.target_accuracy' = 120 is invalid: allowed <= 100"),
    ({"target_accuracy": 0}, r"'headline.target_accuracy' = 0 is invalid: allowed > 0"),
])
def test_bad_headline_options_are_refused_naming_the_key(options, message):
    from spfl.configuration import ConfigError, load_plan
    from synthetic_records import config

    cfg = config()
    cfg["headline"].update(options)
    with pytest.raises(ConfigError, match=message):
        load_plan(cfg)


def test_headline_options_default_to_null():
    from spfl.configuration import load_plan
    from synthetic_records import config

    plan = load_plan(config())
    assert plan.headline["round_budget"] is None and plan.headline["target_accuracy"] is None
    cfg = config()
    cfg["headline"].update(round_budget=6, target_accuracy=75)
    assert load_plan(cfg).headline["round_budget"] == 6


def test_the_check_command_reports_stale_files(tmp_path, capsys):
    for path in generated.generated_files(ROOT):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / path, tmp_path / path)
    assert cli.main(["generate", str(tmp_path), "--check"]) == 0
    (tmp_path / "workflow" / "report" / "gain.rst").write_text("old caption\n")
    assert cli.main(["generate", str(tmp_path), "--check"]) == 1
    assert "workflow/report/gain.rst: out of date" in capsys.readouterr().err
    assert cli.main(["generate", str(tmp_path)]) == 0 and cli.main(["generate", str(tmp_path), "--check"]) == 0
    assert cli.main(["generate", str(tmp_path / "workflow")]) == 2
    assert "is not an spfl checkout" in capsys.readouterr().err


def test_figures_are_readable_per_the_umask(tables, tmp_path):
    import os

    path = tmp_path / "t.csv"
    render.write_table(tables["accuracy_vs_power"], "accuracy_vs_power", path)
    old = os.umask(0o022)
    try:
        render.make_figure("accuracy_vs_power", path, tmp_path / "f.pdf", tmp_path / "f.png", {"dpi": 40})
    finally:
        os.umask(old)
    assert (tmp_path / "f.pdf").stat().st_mode & 0o777 == 0o644 and (tmp_path / "f.png").stat().st_mode & 0o777 == 0o644
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_figure_names_its_config_and_dataset(tables, tmp_path, monkeypatch):
    """A figure copied out of its folder still says which config and data it shows (the plot rule passes
    "config <name>, <dataset>"); without a source nothing is added."""
    drawn = []
    monkeypatch.setattr(plot_style, "save_figure", lambda fig, pdf, png, dpi: drawn.append(fig))
    path = tmp_path / "t.csv"
    tables["accuracy_vs_bandwidth"].to_csv(path, index=False)
    render.make_figure("accuracy_vs_bandwidth", path, tmp_path / "f.pdf", tmp_path / "f.png", {"dpi": 40},
                        source="config quick, digits")
    render.make_figure("accuracy_vs_bandwidth", path, tmp_path / "g.pdf", tmp_path / "g.png", {"dpi": 40})
    assert drawn[0]._suptitle.get_text() == "config quick, digits"
    assert drawn[1]._suptitle is None
