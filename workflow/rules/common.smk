# Helpers shared by every stage: config loading and validation, the experiment plan, code versions,
# input functions and resources.  Everything heavy (expansion into cells, checks) lives in
# src/spfl/experiments.py so the tests exercise exactly what the workflow runs.
import hashlib
import json
import os
import shlex
import sys
from pathlib import Path

import spfl
from snakemake.exceptions import WorkflowError

from spfl.experiments import FIGURES, ConfigError, cell_dir, data_file, load_plan
from spfl.provenance import code_version

# The shell of every rule finds the `spfl` of the environment Snakemake runs in, activated or not
# (e.g. `.venv/bin/snakemake ...`, or a SLURM job started by the executor plugin).
envvars:
    "PATH",


_search_path = os.environ["PATH"]
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), _search_path])


# The paper config is the default.  It is loaded only when no --configfile is given: Snakemake *merges*
# command-line config files into the `configfile:` one, so loading config.yaml under quick.yaml would
# leak the CIFAR experiments into the quick run.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "../report/workflow.rst"


# Validate before any job: unknown keys, wrong types, out-of-range values stop here, naming the key.
try:
    PLAN = load_plan(config, Path(workflow.basedir) / "workflow" / "schemas")
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None


def canonical(value):
    """Params in a canonical form (sorted keys, runs in a fixed order): Snakemake compares params by
    their repr, so reordering keys or experiments in the config must not rerun anything."""
    return json.loads(json.dumps(value, sort_keys=True))


def run_records(runs):
    """The runs handed to a table script, in a fixed order."""
    records = sorted((r.record() for r in runs), key=lambda r: (r["cell"], r["method"], r["experiment"]))
    return canonical(records)


# Raw data is checked at the start of a real run (not a dry run, which needs no data): a missing or
# corrupt CIFAR-10 archive stops the workflow naming the file, before any job runs.
onstart:
    from spfl.data import DatasetError, check_dataset_source

    for _dataset in PLAN.datasets():
        if Path(data_file(_dataset)).exists():
            continue
        try:
            check_dataset_source(_dataset, PLAN.config["base"].get("data_dir", "data"),
                                 download=bool(PLAN.config["base"].get("download")))
        except DatasetError as exc:
            raise WorkflowError(str(exc)) from None


RESOURCES = PLAN.config["resources"]
STYLE = canonical(PLAN.config["style"])
FIGURE_NAMES = list(FIGURES)

# Simulation code version: a params of the simulate rule, so that changing code that affects results
# reruns the simulations (Snakemake's params rerun trigger) while analysis or plot code does not.
CODE_VERSION = code_version()


def module_version(name):
    """Hash of one spfl module; analysis and plot rules rerun when theirs changes."""
    return hashlib.sha256((Path(spfl.__file__).parent / name).read_bytes()).hexdigest()[:12]


ANALYSIS_VERSION = module_version("analysis.py")
PLOTS_VERSION = module_version("plots.py")
DATA_VERSION = module_version("data.py")


wildcard_constraints:
    cell="[0-9a-f]{12}",
    dataset="digits|cifar10",


def cell_of(wildcards):
    try:
        return PLAN.cells[wildcards.cell]
    except KeyError:
        raise WorkflowError(
            f"results/runs/{wildcards.cell} is not a cell of this config "
            f"(config files: {', '.join(map(str, workflow.configfiles)) or 'none'})"
        ) from None


def cell_marker(cell):
    """The file a finished simulate job leaves: the folder's manifest (methods, code version)."""
    return f"{cell_dir(cell)}/cell.json"


def markers(runs):
    return [cell_marker(c) for c in PLAN.cells_of(runs)]


def figure_runs(figure):
    try:
        return PLAN.figure_runs(figure)
    except ConfigError as exc:
        raise WorkflowError(str(exc)) from None


def headline_runs():
    try:
        return PLAN.headline_runs()
    except ConfigError as exc:
        raise WorkflowError(str(exc)) from None


def grown(group, key):
    """Resource that grows with each retry (attempt 1, 2, ...) so a job killed for memory or time succeeds."""
    base = RESOURCES[group][key]
    return lambda wildcards, attempt: base * attempt


def simulation_gpus(wildcards):
    """GPUs of a simulate job: the configured count when the cell's torch device may be a GPU."""
    return RESOURCES["simulate"]["gpu"] if cell_of(wildcards).device != "cpu" else 0


def all_targets():
    targets = ["results/tables/runs.csv"]
    for name in PLAN.figures:
        targets += [f"results/tables/{name}.csv", f"results/tables/{name}.md"]
        targets += [f"figures/{name}.pdf", f"figures/{name}.png"]
    if PLAN.headline is not None:
        targets += [f"results/tables/headline.{ext}" for ext in ("csv", "md", "html")]
    return targets

