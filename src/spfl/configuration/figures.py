"""The figure catalogue: every figure and table of the pipeline is one entry here.

An entry says what the figure needs from its experiment (the swept setting on its x axis, or none),
which methods it shows by default, which :mod:`spfl.reporting` functions build its table and draw it
(named "module.function" under spfl.reporting, e.g. "tables.curves.table_final" and
"plots.curves.figure_final", imported only when used: the configuration never imports the reporting
wing), and its title and report caption.  The files derived from the catalogue (the schema's figure list,
the report captions, the figure table of config/README.md) are written by ``spfl generated write``
(:mod:`.generated`).  Adding a figure is one entry plus its builder and plotter.

Entries whose ``source`` is ``headline`` read the headline table's runs and options instead of one
experiment (``gain``).  ``headline`` and ``runs`` are table-only entries (no plotter).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

MAIN_METHODS = ("ideal", "digital", "digital_reuse", "scheduling", "signsgd", "spfl")
ABLATION_METHODS = ("spfl", "spfl_uniform", "spfl_power", "spfl_bandwidth", "spfl_noreuse")
COMPARED_METHODS = ("spfl", "digital", "digital_reuse", "scheduling", "signsgd")  # method first, then baselines

INTERVAL_NOTE = ("No band or error bar is drawn for a group of fewer than 3 seeds (an interval from 2 seeds\n"
                 "mostly shows the t quantile, not the data).")


def reporting_function(name: str) -> Callable:
    """The reporting function a catalogue entry names as "module.function" under :mod:`spfl.reporting`
    (e.g. "tables.curves.table_final"), imported only when a table or figure is built."""
    module, _, function = name.rpartition(".")
    found = getattr(importlib.import_module(f"spfl.reporting.{module}"), function, None) if module else None
    if not callable(found):
        raise FigureError(f"the figure catalogue names '{name}': allowed a function of spfl.reporting, written "
                          "as module.function (e.g. tables.curves.table_final)")
    return found


@dataclass(frozen=True)
class Figure:
    """One figure or table of the pipeline.

    Builders, plotters and the Markdown helpers are named, not imported: the config validation and the
    Snakefile read the registry without paying for pandas, matplotlib and seaborn."""

    name: str
    x: str | None  # the swept setting the experiment must have (the x axis or the categories); None: any
    methods: tuple[str, ...]  # default methods (those the experiment runs); the first is the one compared
    table: str  # builder under spfl.reporting.tables: (runs, options) -> table
    plot: str | None  # plotter under spfl.reporting.plots: (table, name, x, style) -> Figure; None: table only
    title: str
    caption: str  # report caption (reStructuredText with Snakemake's Jinja)
    what: str  # one line for the figure table of config/README.md
    needs: str = ""  # what the experiment must sweep, for config/README.md (default: from x)
    source: str = "experiment"  # "headline": the headline table's runs and options
    notes: str = "tables.markdown.diverged_notes"  # table -> sentences under the Markdown table
    intervals: bool = True  # the figure draws 95 % intervals (its caption says from how many seeds)
    markdown: str | None = None  # table -> the columns the Markdown shows (None: all)

    @property
    def what_it_needs(self) -> str:
        return self.needs or (f"`{self.x}`" if self.x else "anything (one panel per swept point)")

    @property
    def builder(self) -> Callable:
        return reporting_function(self.table)

    @property
    def plotter(self) -> Callable | None:
        return reporting_function(self.plot) if self.plot else None

    def note_lines(self, frame: pd.DataFrame) -> list[str]:
        return reporting_function(self.notes)(frame)

    def markdown_view(self, frame: pd.DataFrame) -> pd.DataFrame:
        return reporting_function(self.markdown)(frame) if self.markdown else frame


def _experiment(name: str) -> str:
    return f'``{{{{ snakemake.config["figures"]["{name}"]["experiment"] }}}}``'


ENTRIES: tuple[Figure, ...] = (
    Figure("accuracy_vs_round", None, MAIN_METHODS, "tables.curves.table_rounds", "plots.curves.figure_rounds",
           "Test accuracy (%) per round",
           "Test accuracy per communication round of the main methods (experiment\n"
           f"{_experiment('accuracy_vs_round')}), one panel per budget.\n"
           "Lines: mean over seeds; band: 95 % Student-t interval.",
           "test accuracy per round"),
    Figure("accuracy_vs_bandwidth", "total_bandwidth_mhz", MAIN_METHODS, "tables.curves.table_final",
           "plots.curves.figure_final",
           "Final test accuracy (%) vs total bandwidth",
           "Final test accuracy against the total uplink bandwidth B_tot (log scale) for the main methods\n"
           f"(experiment {_experiment('accuracy_vs_bandwidth')}).\n"
           "SP-FL's advantage should be largest where bandwidth is scarce. Mean over seeds with 95 % interval.",
           "final accuracy vs B_tot"),
    Figure("accuracy_vs_power", "max_power_dbm", MAIN_METHODS, "tables.curves.table_final",
           "plots.curves.figure_final",
           "Final test accuracy (%) vs device power budget",
           "Final test accuracy against the per-device power budget P_max (dBm) for the main methods\n"
           f"(experiment {_experiment('accuracy_vs_power')}).\n"
           "Mean over seeds with 95 % interval.",
           "final accuracy vs P_max"),
    Figure("accuracy_vs_devices", "num_devices", MAIN_METHODS, "tables.curves.table_final",
           "plots.curves.figure_final",
           "Final test accuracy (%) vs number of devices",
           "Final test accuracy against the number of devices K at a fixed total bandwidth for the main methods\n"
           f"(experiment {_experiment('accuracy_vs_devices')}).\n"
           "Mean over seeds with 95 % interval.",
           "final accuracy vs K"),
    Figure("allocation", None, ("spfl",), "tables.snapshots.table_allocation", "plots.snapshots.figure_allocation",
           "Who gets the bandwidth: each device's share against its distance and gradient norm",
           "Who SP-FL gives the band to (experiment\n"
           f"{_experiment('allocation')}): every device at every snapshot round of every seed is\n"
           "one point, its share of the total bandwidth B_tot against its distance to the server (top) and its\n"
           "gradient norm relative to the round's largest (bottom), one column per budget. Hollow grey points are\n"
           "silent devices, given no bandwidth that round; each panel says how many device-rounds were silent and\n"
           "compares their gradient norms with the served devices'. The objective values a device by its gradient\n"
           "(the one-step decrease it brings) and by what its channel costs, so a near device with a small gradient\n"
           "can be silent. The table also has each device's channel gain and the sign packet's share of its power.",
           "each device's share of B_tot against its distance and its gradient norm; silent devices marked",
           needs="anything (panels)", intervals=False),
    Figure("packet_errors", "total_bandwidth_mhz", ("spfl", "spfl_uniform"), "tables.curves.table_packet_errors",
           "plots.curves.figure_packet_errors",
           "Mean packet error (%) vs total bandwidth",
           "Mean realized packet error of sign packets (solid) and modulus packets (dashed) against the total\n"
           "bandwidth, one panel per method: optimized SP-FL and SP-FL with uniform allocation (experiment\n"
           f"{_experiment('packet_errors')}). Optimization should protect\n"
           "the sign packets first. A note in a panel says where the two packets' lines coincide: with the\n"
           "default proportional slot share and equal packet powers (uniform allocation) both packets need the\n"
           "same SNR, so their errors are identical by construction (docs/model.md, section 4). Mean over seeds\n"
           "with 95 % interval.",
           "mean realized sign / modulus packet error vs B_tot"),
    Figure("ablation", None, ABLATION_METHODS, "tables.curves.table_rounds", "plots.curves.figure_rounds",
           "Test accuracy (%) per round: SP-FL and its ablations",
           "Test accuracy per round of SP-FL and its ablations: uniform allocation, power optimization only,\n"
           "bandwidth optimization only, and no sign reuse (experiment\n"
           f"{_experiment('ablation')}), one panel per budget. Mean over\n"
           "seeds with 95 % interval.",
           "test accuracy per round", needs="anything (panels)"),
    Figure("solver_convergence", None, ("spfl",), "tables.snapshots.table_solver", "plots.snapshots.figure_solver",
           "Allocation objective per alternating-optimization iteration",
           "Convergence of the alternating optimization (Newton-Raphson power block, SCA bandwidth block): the\n"
           "allocation objective Phi at each AO iteration relative to its final value, for a few snapshot rounds\n"
           f"(experiment {_experiment('solver_convergence')}). Iteration 0 is\n"
           "the uniform starting point; Phi must never decrease. Mean over seeds with 95 % interval.",
           "objective Phi / final Phi per AO iteration, a few snapshot rounds", needs="anything (panels)"),
    Figure("noniid", "dirichlet_beta", MAIN_METHODS, "tables.curves.table_final",
           "plots.curves.figure_final",
           "Final test accuracy (%) vs Dirichlet beta",
           "Final test accuracy against the Dirichlet concentration beta of the label split (log scale; smaller\n"
           "is more non-IID) for the main methods (experiment\n"
           f"{_experiment('noniid')}). Mean over seeds with 95 % interval.",
           "final accuracy vs Dirichlet beta"),
    Figure("gain", None, (), "tables.comparisons.headline_table", "plots.comparisons.figure_gain",
           "SP-FL minus the best baseline per budget (percentage points)",
           "SP-FL minus the best baseline at each budget of the headline experiments\n"
           '({{ snakemake.config["headline"]["experiments"] | join(", ") }}), one panel per experiment titled\n'
           "with its label, in percentage points of test accuracy at the last round: on the exploratory seeds\n"
           "(circles) and, when the config has confirmation seeds, on those (diamonds); without them, also at the\n"
           "round budget (squares). The small text at each point names the best baseline there (the one with the\n"
           "highest mean final accuracy). Error bars: 95 % Student-t interval of the per-seed differences (seeds\n"
           "are paired through common random numbers); hollow markers: not significant (the interval contains 0).\n"
           "The dotted line is the paper's \"up to 9.96 points\" on CIFAR-10; runs on other data are not comparable\n"
           "to it. The headline table has the numbers.",
           "SP-FL minus the best baseline with paired 95 % intervals, per budget",
           needs="nothing: reads the `headline` runs (no options)", source="headline",
           notes="tables.markdown.headline_notes", markdown="tables.markdown.comparison_markdown"),
    Figure("devices_served", None, (), "tables.comparisons.devices_served_table",
           "plots.comparisons.figure_devices_served",
           "Devices served per round by each method",
           "How many devices each method serves per round, against the budget of each headline experiment\n"
           '({{ snakemake.config["headline"]["experiments"] | join(", ") }}; one row of panels each): the\n'
           "devices whose sign (or whole) packet arrived (left) and those whose full gradient arrived (right), per\n"
           "round, averaged over the run's rounds, then mean over the exploratory seeds with 95 % interval; the\n"
           "dotted line is the number of devices K. A method that sends one packet per device (digital FL,\n"
           "scheduling, signSGD) counts it in both panels when it arrives (for signSGD: its signs and one scale).\n"
           "The table (devices_served.md) also has the devices given bandwidth and the confirmation seeds.",
           "devices whose sign arrived and devices whose full gradient arrived per round, per method and budget",
           needs="nothing: reads the `headline` runs (no options)", source="headline",
           notes="tables.markdown.devices_served_notes", markdown="tables.markdown.devices_served_markdown"),
    Figure("sensitivity", "variant", COMPARED_METHODS, "tables.comparisons.sensitivity_table",
           "plots.comparisons.figure_sensitivity",
           "Sensitivity: gain over the best baseline per reconstruction variant",
           "How much each unknown of the paper matters: the gain of SP-FL over the best baseline (highest mean\n"
           "final accuracy under the same variant) for each reconstruction variant, one panel per budget\n"
           f"(experiment {_experiment('sensitivity')}). Error bars: 95 %\n"
           "Student-t interval of the per-seed differences; hollow markers: not significant. The table says\n"
           "which ``normalize`` each method ran with.",
           "gain over the best baseline per reconstruction variant, with paired 95 % intervals",
           needs="`variant` and a budget (one panel per budget)", notes="tables.markdown.sensitivity_notes",
           markdown="tables.markdown.comparison_markdown"),
    Figure("headline", None, (), "tables.comparisons.headline_table", None,
           "Headline: SP-FL minus the best baseline (percentage points)",
           "SP-FL minus the best baseline at each budget of the headline experiments\n"
           '({{ snakemake.params.options["experiments"] | join(", ") }}; column ``experiment`` names each in\n'
           "words, its config ``label``), per seed group: the exploratory ``seeds`` and, when configured, the\n"
           "fresh ``confirmation`` seeds (column ``seeds``), side by side; the summary line rests on the confirmation\n"
           "seeds when there are any. In percentage points of test\n"
           "accuracy at the last round and at the round budget: mean and 95 % Student-t interval of the per-seed\n"
           "differences (seeds are paired through common random numbers), and whether the interval excludes 0\n"
           "(significant). The best baseline at a budget is the one with the highest mean final accuracy\n"
           'among {{ snakemake.params.options["baselines"] | join(", ") }}. The table also gives the rounds to\n'
           "the target accuracy, which ``normalize`` each method ran with, the number of seeds, the test-set\n"
           "size and the smallest visible accuracy difference (one test image). The paper reports up to\n"
           '{{ snakemake.params.options["paper_gain_points"] }} points on CIFAR-10; runs on other data are not\n'
           "comparable to it.",
           "the headline table", source="headline", notes="tables.markdown.headline_notes", intervals=False,
           markdown="tables.markdown.comparison_markdown"),
    Figure("runs", None, (), "tables.progress.runs_table", None, "Every run", "", "every run with its summary",
           intervals=False),
)

REGISTRY: dict[str, Figure] = {f.name: f for f in ENTRIES}
FIGURES: dict[str, Figure] = {name: f for name, f in REGISTRY.items() if f.plot is not None}
TABLE_ONLY = tuple(name for name, f in REGISTRY.items() if f.plot is None)


class FigureError(ValueError):
    """An unknown figure or table name; names it and the allowed ones."""


def entry(name: str, figures_only: bool = False) -> Figure:
    known = FIGURES if figures_only else REGISTRY
    if name not in known:
        what = "figure" if figures_only else "table kind"
        raise FigureError(f"{what} '{name}' is unknown: allowed one of {', '.join(known)}")
    return known[name]
