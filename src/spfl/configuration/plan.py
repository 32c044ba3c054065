"""The experiment plan: a valid pipeline config expanded into simulation cells, runs and figure inputs.

Pure Python (no torch, no Snakemake) and free of file locations: the workflow decides where cells,
data and tables live.  The pipeline config declares *experiments* as grids over run settings; this
module

* checks, after the schema (:mod:`spfl.configuration.pipeline`), what a schema cannot express (that a
  figure's experiment sweeps the figure's x axis, that selected values are in the grid, ...), so every
  mistake stops the workflow before any job runs, with a message naming the config key;
* expands every experiment into runs (one per grid point, seed and method) and groups the runs into
  *cells*: all methods that share one point of the settings grid and one seed run in ONE process,
  because they share common random numbers and one process pays the torch import once.  A cell is
  named by the hash of its science settings without ``method``, so a point shared by two experiments
  (the 5 MHz point of the bandwidth sweep that is also the default of the power sweep) is one cell
  running the union of the methods asked for it.

*Confirmation seeds* (config key ``confirmation``) are fresh seeds, disjoint from ``seeds`` (the exploratory
seeds used to choose settings), run only for the listed experiments.  Their runs are the same cells as
any other seed's (a cell's name does not depend on whether its seed confirms), so adding them leaves every
existing cell in place; the headline table reads them, the per-experiment figures do not.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from spfl.configuration.figures import FIGURES
from spfl.configuration.methods import METHODS
from spfl.configuration.pipeline import BASE_ONLY, PIPELINE_OWNED, ConfigError, check_value, validated
from spfl.configuration.settings import SETTING, SpecError, canonical_hash, make_spec
from spfl.records import evaluation_schedule

# The pseudo-setting of an experiment's `variants`: runs carry the variant's name like a swept setting.
VARIANT = "variant"


def cell_hash(params: Mapping[str, Any]) -> str:
    """Name of a cell folder: hash of the validated science settings without ``method``.

    ``make_spec`` coerces values first, so 5 and 5.0 MHz give the same cell, and settings that do not
    change the numbers (paths, torch device) are not part of the name.
    """
    science = make_spec({k: v for k, v in params.items() if k != "method"}).science()
    science.pop("method")
    return canonical_hash(science)


@dataclass(frozen=True)
class Run:
    """One (method, seed) simulation at one grid point of one experiment."""

    experiment: str
    cell: str
    seed: int
    method: str
    point: tuple[tuple[str, Any], ...]  # the swept settings (not method or seed), in grid order
    confirmation: bool = False  # a run on a confirmation seed (not part of the record: the seed says it)

    def record(self) -> dict[str, Any]:
        """Flat JSON-able description handed to the table scripts (the workflow adds the cell's folder)."""
        return {"experiment": self.experiment, "cell": self.cell, "seed": self.seed, "method": self.method,
                **dict(self.point)}


@dataclass
class Cell:
    """One simulation process: one grid point and seed, the union of the methods asked for it."""

    hash: str
    params: dict[str, Any]  # content of params.json: every resolved run setting except method and data_file
    methods: list[str] = field(default_factory=list)
    experiments: list[str] = field(default_factory=list)

    @property
    def dataset(self) -> str:
        return self.params["dataset"]

    @property
    def device(self) -> str:
        return self.params["device"]


@dataclass
class Experiment:
    name: str
    description: str
    swept: tuple[str, ...]  # grid keys other than method and seed
    grid: dict[str, list[Any]]  # validated values of every grid key (method and seed included)
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    runs: list[Run]  # the exploratory seeds' runs (what the experiment's figures read)
    label: str = ""  # a few words for a reader (config key experiments.<name>.label; default: the name)
    confirmation_seeds: tuple[int, ...] = ()
    confirmation_runs: list[Run] = field(default_factory=list)


@dataclass
class Plan:
    """Everything the workflow needs, computed once when the Snakefile is parsed."""

    config: dict[str, Any]
    experiments: dict[str, Experiment]
    cells: dict[str, Cell]
    figures: dict[str, dict[str, Any]]
    headline: dict[str, Any] | None
    confirmation: dict[str, Any] | None = None  # {"seeds": [...], "experiments": [...]} or None

    def figure_runs(self, figure: str) -> list[Run]:
        """Runs a figure's table reads: its experiment's runs, restricted to its select and methods."""
        if figure not in self.figures:
            raise ConfigError(f"figure '{figure}' is not configured: add it under config key 'figures' "
                              f"(configured: {', '.join(self.figures) or 'none'})")
        options = self.figures[figure]
        if options.get("source") == "headline":
            return self.headline_runs()
        select = options["select"]
        return [r for r in self.experiments[options["experiment"]].runs
                if r.method in options["methods"]
                and all(dict(r.point)[k] in values for k, values in select.items())]

    def headline_runs(self) -> list[Run]:
        if self.headline is None:
            raise ConfigError("no headline table is configured: add config key 'headline'")
        methods = {self.headline["method"], *self.headline["baselines"]}
        return [r for name in self.headline["experiments"]
                for r in (*self.experiments[name].runs, *self.experiments[name].confirmation_runs)
                if r.method in methods]

    def all_runs(self) -> list[Run]:
        return [r for e in self.experiments.values() for r in (*e.runs, *e.confirmation_runs)]

    def datasets(self) -> list[str]:
        return sorted({c.dataset for c in self.cells.values()})

    @staticmethod
    def cells_of(runs: Iterable[Run]) -> list[str]:
        return sorted({r.cell for r in runs})


def _expand_experiment(name: str, exp: Mapping[str, Any], config: Mapping[str, Any],
                       cells: dict[str, Cell], confirmation_seeds: tuple[int, ...] = ()) -> Experiment:
    where = f"experiments.{name}"
    base = dict(config.get("base") or {})
    fixed = dict(exp.get("set") or {})
    raw_grid = dict(exp["grid"])
    for key in PIPELINE_OWNED:
        for section, values in (("base", base), (f"{where}.set", fixed)):
            if key in values:
                hint = "use 'seeds' or a grid over seed" if key == "seed" else "the pipeline sets it per dataset"
                raise ConfigError(f"config key '{section}.{key}' is not allowed: {hint}")
    for key in BASE_ONLY:
        if key in fixed or key in raw_grid:
            section = "set" if key in fixed else "grid"
            raise ConfigError(f"config key '{where}.{section}.{key}' is not allowed: "
                              f"the prepare rule reads {key} from 'base' only")
    for key in fixed:
        if key in raw_grid:
            raise ConfigError(f"config key '{where}.set.{key}' is also swept in '{where}.grid.{key}': "
                              "set it in one place only")
    variants = {variant: dict(values or {}) for variant, values in (exp.get("variants") or {}).items()}
    for variant, values in variants.items():
        for key in values:
            if key in raw_grid or key in (*PIPELINE_OWNED, *BASE_ONLY, "method"):
                raise ConfigError(f"config key '{where}.variants.{variant}.{key}' is not allowed: a variant changes "
                                  "settings that the grid does not sweep (and not method, seed or data paths)")
    grid = {k: [check_value(f"{where}.grid.{k}[{i}]", k, v) for i, v in enumerate(values)]
            for k, values in raw_grid.items()}
    if variants:  # one-at-a-time changes, swept as the pseudo-setting `variant` (first, so panels follow it)
        grid = {VARIANT: list(variants), **grid}
    for k, values in grid.items():
        if len(set(map(repr, values))) != len(values):
            raise ConfigError(f"config key '{where}.grid.{k}' = {raw_grid[k]!r} is invalid: "
                              "allowed a list without repeated values (after conversion to the setting's type)")
    seeds = grid.pop("seed", None) or [check_value(f"seeds[{i}]", "seed", s)
                                       for i, s in enumerate(config["seeds"])]
    default_method = fixed.get("method", base.get("method", SETTING["method"].default))
    methods = grid.pop("method", None) or [check_value(f"{where}.set.method", "method", default_method)]
    if confirmation_seeds and "seed" in raw_grid:
        raise ConfigError(f"config key 'confirmation.experiments' names {name!r}, whose grid sweeps 'seed': "
                          "allowed experiments that take their seeds from 'seeds'")
    swept = tuple(grid)
    runs: list[Run] = []
    confirmation_runs: list[Run] = []
    for values in itertools.product(*grid.values()):
        point = tuple(zip(swept, values))
        for seed, confirms in [*((s, False) for s in seeds), *((s, True) for s in confirmation_seeds)]:
            settings = {**base, **fixed, **dict(point), "seed": seed}
            if VARIANT in settings:
                settings.update(variants[settings.pop(VARIANT)])
            settings.pop("method", None)
            try:
                spec = make_spec(settings)
            except SpecError as exc:
                shown = ", ".join(f"{k}={v!r}" for k, v in point) or "no swept setting"
                raise ConfigError(f"config key '{where}' at grid point {shown}: {exc}") from None
            params = spec.to_dict()
            params.pop("method")
            params.pop("data_file")  # where the prepared data lives is the workflow's business
            cell = cell_hash(params)
            existing = cells.get(cell)
            if existing is None:
                existing = cells[cell] = Cell(cell, params)
            elif existing.params != params:
                diff = sorted(k for k in params if params[k] != existing.params[k])
                raise ConfigError(
                    f"config key '{where}' gives cell {cell} (shared with experiments "
                    f"{', '.join(existing.experiments)}) a different '{diff[0]}': {params[diff[0]]!r} vs "
                    f"{existing.params[diff[0]]!r}; settings outside the run's identity must agree")
            for method in methods:
                if method not in existing.methods:
                    existing.methods.append(method)
                (confirmation_runs if confirms else runs).append(Run(name, cell, seed, method, point, confirms))
            if name not in existing.experiments:
                existing.experiments.append(name)
    description = exp.get("description", "")
    return Experiment(name, description, swept, {**grid, "method": list(methods), "seed": list(seeds)},
                      tuple(methods), tuple(seeds), runs, exp.get("label") or name, tuple(confirmation_seeds),
                      confirmation_runs)


def _resolve_confirmation(config: Mapping[str, Any]) -> dict[str, Any] | None:
    """The confirmation seeds and experiments, checked: seeds disjoint from `seeds`, experiments configured."""
    options = config.get("confirmation")
    if not options:
        return None
    exploratory = [check_value(f"seeds[{i}]", "seed", s) for i, s in enumerate(config["seeds"])]
    seeds = [check_value(f"confirmation.seeds[{i}]", "seed", s) for i, s in enumerate(options["seeds"])]
    for i, seed in enumerate(seeds):
        if seed in exploratory:
            raise ConfigError(f"config key 'confirmation.seeds[{i}]' = {seed} is invalid: allowed a seed not in "
                              f"'seeds' {exploratory} (confirmation seeds must be fresh: disjoint from the "
                              "exploratory seeds used to choose settings)")
    names = options.get("experiments")
    key = "confirmation.experiments"
    if names is None:
        if not config.get("headline"):
            raise ConfigError(f"config key '{key}' is missing: allowed a list of experiments (it defaults to "
                              "'headline.experiments', and no headline is configured)")
        names = list(config["headline"]["experiments"])
    for i, name in enumerate(names):
        if name not in config["experiments"]:
            raise ConfigError(f"config key '{key}[{i}]' = {name!r} is invalid: allowed one of "
                              f"{', '.join(config['experiments'])} (the configured experiments)")
    return {"seeds": seeds, "experiments": list(names)}


def _resolve_figure(name: str, options: Mapping[str, Any], experiments: Mapping[str, Experiment],
                    headline: Mapping[str, Any] | None = None) -> dict:
    where = f"figures.{name}"
    kind = FIGURES[name]
    if kind.source == "headline":
        if headline is None:
            raise ConfigError(f"config key '{where}' needs the headline table: add config key 'headline'")
        return {**headline, "source": "headline", "x": None}
    exp_name = options["experiment"]
    if exp_name not in experiments:
        raise ConfigError(f"config key '{where}.experiment' = {exp_name!r} is invalid: allowed one of "
                          f"{', '.join(experiments)} (the configured experiments)")
    exp = experiments[exp_name]
    if kind.x is not None and kind.x not in exp.swept:
        raise ConfigError(f"config key '{where}.experiment' = {exp_name!r} is invalid: figure '{name}' needs "
                          f"an experiment whose grid sweeps '{kind.x}' (experiments.{exp_name} sweeps "
                          f"{', '.join(exp.swept) or 'nothing'})")
    select: dict[str, list[Any]] = {}
    for key, values in (options.get("select") or {}).items():
        if key not in exp.swept:
            raise ConfigError(f"config key '{where}.select.{key}' is invalid: experiments.{exp_name} sweeps "
                              f"{', '.join(exp.swept) or 'nothing'}")
        checked = (list(values) if key == VARIANT else
                   [check_value(f"{where}.select.{key}[{i}]", key, v) for i, v in enumerate(values)])
        missing = [v for v in checked if v not in exp.grid[key]]
        if missing:
            raise ConfigError(f"config key '{where}.select.{key}' = {missing[0]!r} is invalid: allowed values "
                              f"of experiments.{exp_name}.grid.{key}: {exp.grid[key]}")
        select[key] = checked
    methods = options.get("methods")
    if methods is None:
        methods = [m for m in kind.methods if m in exp.methods]
        if not methods:
            raise ConfigError(f"config key '{where}.experiment' = {exp_name!r} is invalid: figure '{name}' "
                              f"needs one of the methods {', '.join(kind.methods)}, the experiment runs "
                              f"{', '.join(exp.methods)}")
    else:
        missing = [m for m in methods if m not in exp.methods]
        if missing:
            raise ConfigError(f"config key '{where}.methods' = {missing[0]!r} is invalid: allowed the methods "
                              f"of experiments.{exp_name}: {', '.join(exp.methods)}")
    return {"experiment": exp_name, "x": kind.x, "select": select, "methods": list(methods),
            "swept": list(exp.swept), "description": exp.description}


def _resolve_headline(options: Mapping[str, Any], experiments: Mapping[str, Experiment],
                      cells: Mapping[str, Cell]) -> dict:
    budgets = {}
    for i, name in enumerate(options["experiments"]):
        key = f"headline.experiments[{i}]"
        if name not in experiments:
            raise ConfigError(f"config key '{key}' = {name!r} is invalid: allowed one of {', '.join(experiments)}")
        exp = experiments[name]
        if len(exp.swept) != 1:
            raise ConfigError(f"config key '{key}' = {name!r} is invalid: a headline experiment must sweep "
                              f"exactly one budget setting (it sweeps {', '.join(exp.swept) or 'nothing'})")
        if options["method"] not in exp.methods:
            raise ConfigError(f"config key 'headline.method' = {options['method']!r} is invalid: "
                              f"experiments.{name} runs {', '.join(exp.methods)}")
        if not set(options["baselines"]) & set(exp.methods):
            raise ConfigError(f"config key 'headline.baselines' = {options['baselines']!r} is invalid: none of "
                              f"them is run by experiments.{name} ({', '.join(exp.methods)})")
        budgets[name] = exp.swept[0]
        round_budget = options.get("round_budget")
        for params in {r.cell: cells[r.cell].params for r in exp.runs}.values():
            evaluated = evaluation_schedule(params["rounds"], params["eval_every"])
            if round_budget is not None and round_budget not in evaluated:
                shown = ", ".join(map(str, itertools.islice(evaluated, 12))) + (", ..." if len(evaluated) > 12 else "")
                raise ConfigError(f"config key 'headline.round_budget' = {round_budget} is invalid: allowed an "
                                  f"evaluated round of experiments.{name} ({shown})")
    return {**dict(options), "budgets": budgets}


def load_plan(config: Mapping[str, Any]) -> Plan:
    """Validate the pipeline config and expand it; raise ConfigError naming the key on any problem."""
    config = validated(config)
    cells: dict[str, Cell] = {}
    confirmation = _resolve_confirmation(config)
    confirming = confirmation["experiments"] if confirmation else []
    experiments = {name: _expand_experiment(name, exp, config, cells,
                                            tuple(confirmation["seeds"]) if name in confirming else ())
                   for name, exp in config["experiments"].items()}
    for cell in cells.values():
        cell.methods.sort(key=METHODS.index)
    headline = _resolve_headline(config["headline"], experiments, cells) if config.get("headline") else None
    if headline is not None:
        headline["labels"] = {name: experiments[name].label for name in headline["experiments"]}
        headline["confirmation_seeds"] = list(confirmation["seeds"]) if confirmation else []
    figures = {name: _resolve_figure(name, opts, experiments, headline) for name, opts in config["figures"].items()}
    return Plan(config, experiments, cells, figures, headline, confirmation)
