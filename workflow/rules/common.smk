# Helpers shared by every stage: config loading and validation, the experiment plan, output paths, code
# versions, input functions and resources.  Everything heavy (validation, expansion into cells) lives in
# src/spfl/configuration/pipeline.py and src/spfl/configuration/plan.py so the tests exercise exactly what the workflow runs.
#
# Nothing here changes the process environment, and every path is built from the config (`paths`,
# `name`), so the pipeline also works as a Snakemake `module` of another workflow, with a `prefix`.
import hashlib
import json
import os
import shlex
import sys
from pathlib import Path

import spfl
from snakemake.exceptions import WorkflowError
from snakemake.settings.types import DeploymentMethod

from spfl.configuration.datasets import DATASETS
from spfl.configuration.pipeline import ConfigError, read_config
from spfl.configuration.plan import load_plan
from spfl.provenance import code_version
from spfl.records import CELL_RECORDS, CHECKSUMS, RUN_RECORDS

# The paper config is the default.  It is loaded only when no --configfile is given: Snakemake *merges*
# command-line config files into the `configfile:` one, so loading config.yaml under quick.yaml would
# leak the CIFAR experiments into the quick run.  (A module gets its config from the importing workflow.)
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


# Snakemake reads config files as YAML 1.1 (`2.733e2` is a string there) and `--config` values with a
# loader that leaves nested numbers strings (`seeds=[0]` -> ['0']), and lets a repeated key win silently.
# Read every config file again as `spfl run` reads a spec (YAML 1.2, repeated keys refused), so one
# config gets one verdict, and apply the --config overrides with their types.
if not workflow.modifier.skip_configfile:
    try:
        _config = read_config(workflow.configfiles, workflow.config_settings.config)
    except ConfigError as exc:
        raise WorkflowError(str(exc)) from None
    config.clear()
    config.update(_config)


report: "../report/workflow.rst"


# Validate before any job: unknown keys, wrong types, out-of-range values stop here, naming the key.
try:
    PLAN = load_plan(config)
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None

# Where this config writes.  Prepared datasets are shared by every config (one file per dataset); runs,
# tables and figures live under the config's name, so two configs never touch each other's outputs.
NAME = PLAN.config["name"]
RESULTS_ROOT = PLAN.config["paths"]["results"]
DATA = f"{RESULTS_ROOT}/data"
RUNS = f"{RESULTS_ROOT}/{NAME}/runs"
TABLES = f"{RESULTS_ROOT}/{NAME}/tables"
BENCHMARKS = f"{RESULTS_ROOT}/{NAME}/benchmarks"
FIGS = f"{PLAN.config['paths']['figures']}/{NAME}"
LOGS_ROOT = PLAN.config["paths"]["logs"]
LOGS = f"{LOGS_ROOT}/{NAME}"

# The tools run through the interpreter that runs Snakemake (activated or not, e.g. `.venv/bin/snakemake`,
# or a SLURM job started by the executor plugin), so no PATH is needed or changed; in a conda environment
# of the rule (--software-deployment-method conda) it is that environment's python.
if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method:
    SPFL = "python -m spfl.cli"
else:
    SPFL = f"{shlex.quote(sys.executable)} -m spfl.cli"


def data_file(dataset):
    return f"{DATA}/{dataset}.pt"


def cell_dir(cell):
    return f"{RUNS}/{cell}"


def canonical(value):
    """Params in a canonical form (sorted keys, runs in a fixed order): Snakemake compares params by
    their repr, so reordering keys or experiments in the config must not rerun anything."""
    return json.loads(json.dumps(value, sort_keys=True))


def run_records(runs):
    """The runs handed to a table script, in a fixed order (the script adds each cell's folder from its inputs)."""
    records = sorted((r.record() for r in runs), key=lambda r: (r["cell"], r["method"], r["experiment"]))
    return canonical(records)


# Raw data is checked at the start of a real run (not a dry run, which needs no data): a missing or
# corrupt CIFAR-10 archive stops the workflow naming the file, before any job runs.
onstart:
    from spfl.simulator.data import DatasetError, check_dataset_source

    print(f"spfl: config '{NAME}': {len(PLAN.cells)} simulation cells, {len(PLAN.all_runs())} runs; "
          "stages: 1 data, 2 simulations, 3 tables, 4 figures (one line per job; logs in "
          f"{LOGS}/)", file=sys.stderr)

    for _dataset in PLAN.datasets():
        if Path(data_file(_dataset)).exists():
            continue
        try:
            check_dataset_source(_dataset, PLAN.config["base"].get("data_dir", "data"),
                                 download=bool(PLAN.config["base"].get("download")))
        except DatasetError as exc:
            raise WorkflowError(str(exc)) from None


def config_options():
    """The --configfile options of this run, to repeat in the commands the workflow prints."""
    files = [os.path.relpath(f) if not os.path.relpath(f).startswith("..") else str(f)
             for f in workflow.configfiles]
    return " ".join(f"--configfile {shlex.quote(f)}" for f in files)


def where_outputs_are():
    """Where this config's tables, figures and report are (printed at the end of a successful run)."""
    figures = sorted(Path(FIGS).glob("*.png")) if Path(FIGS).is_dir() else []
    lines = [f"spfl: config '{NAME}' done. Outputs:"]
    if Path(f"{TABLES}/headline.md").exists():
        lines.append(f"  headline table  {TABLES}/headline.md (and .csv, .html)")
    if Path(TABLES).is_dir():
        lines.append(f"  tables          {TABLES}/ (one <figure>.csv and .md per figure; runs.csv: every run)")
    if figures:
        lines.append(f"  figures         {FIGS}/ ({len(figures)} figures, PNG and PDF)")
    lines.append(f"  run records     {RUNS}/<cell>/ (runs.csv names each run's cell)")
    lines.append(f"  report          snakemake --report report.html {config_options()}".rstrip())
    return "\n".join(lines)


onsuccess:
    print(where_outputs_are(), file=sys.stderr)


onerror:
    print(f"spfl: config '{NAME}' stopped: the failed job's log is named above (all logs: {LOGS}/ and "
          f"{LOGS_ROOT}/prepare_data/); rerun the same command to continue where it stopped.", file=sys.stderr)


RESOURCES = PLAN.config["resources"]
STYLE = canonical(PLAN.config["style"])
FIGURE_NAMES = list(PLAN.figures)

# Simulation code version: a params of the simulate rule, so that changing code that affects results
# reruns the simulations (Snakemake's params rerun trigger) while analysis or plot code does not.
CODE_VERSION = code_version()


def module_version(*names):
    """Hash of spfl modules and module folders (paths relative to the package); analysis and plot rules
    rerun when theirs change (both read the figure catalogue)."""
    root = Path(spfl.__file__).parent
    digest = hashlib.sha256()
    for name in names:
        for path in sorted((root / name).rglob("*.py")) if (root / name).is_dir() else [root / name]:
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


# The table rules run spfl.reporting.tables through render.py, the plot rules spfl.reporting.plots (the
# catalogue names builders under tables/ and plotters under plots/; test_figures checks it).
ANALYSIS_VERSION = module_version("reporting/render.py", "reporting/tables", "configuration/figures.py")
PLOTS_VERSION = module_version("reporting/render.py", "reporting/plots", "configuration/figures.py")
DATA_VERSION = module_version("simulator/data.py")


wildcard_constraints:
    cell="[0-9a-f]{12}",
    dataset="|".join(DATASETS),


def cell_of(wildcards):
    try:
        return PLAN.cells[wildcards.cell]
    except KeyError:
        raise WorkflowError(
            f"{cell_dir(wildcards.cell)} is not a cell of config '{NAME}' "
            f"(config files: {', '.join(map(str, workflow.configfiles)) or 'none'})"
        ) from None


def cell_marker(cell):
    """The file a finished simulate job leaves: the folder's manifest (methods, code version)."""
    return f"{cell_dir(cell)}/cell.json"


def markers(runs):
    return [cell_marker(c) for c in PLAN.cells_of(runs)]


def record_files(runs):
    """The record files of the finished cells among ``runs`` (those whose cell.json exists)."""
    files = set()
    for run in runs:
        if Path(cell_marker(run.cell)).exists():
            folder = cell_dir(run.cell)
            files.update(f"{folder}/{name}" for name in CELL_RECORDS)
            files.update(f"{folder}/{run.method}/{name}" for name in (*RUN_RECORDS, CHECKSUMS))
    return sorted(files)


def records_changed(runs, table):
    """The records of ``runs`` changed (or removed) since ``table`` was built: a param of the table rules, so
    that a record edited after its run reruns the tables (Snakemake's params trigger; `snakemake -n` lists
    them), which verify every record (spfl.records.verify_run) and fail naming it.  Empty while the table
    does not exist.  (The records are not inputs: for a cell not yet run they are not known to Snakemake,
    and the set of inputs would change once it has run, rerunning every table once more.)"""
    try:
        built = os.stat(table).st_mtime_ns
    except FileNotFoundError:
        return []
    changed = []
    for path in record_files(runs):
        try:
            newer = os.stat(path).st_mtime_ns > built
        except FileNotFoundError:
            newer = True
        if newer:
            changed.append(path)
    return changed


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


def datasets_of(runs):
    """The datasets a table or figure shows, for the report's labels."""
    return ", ".join(sorted({PLAN.cells[r.cell].dataset for r in runs}))


def grown(group, key):
    """Resource that grows with each retry (attempt 1, 2, ...) so a job killed for memory or time succeeds."""
    base = RESOURCES[group][key]
    return lambda wildcards, attempt: base * attempt


def simulation_gpus(wildcards):
    """GPUs of a simulate job: the configured count when the cell's torch device may be a GPU."""
    return RESOURCES["simulate"]["gpu"] if cell_of(wildcards).device != "cpu" else 0


def all_targets():
    targets = [f"{TABLES}/runs.csv"]
    for name in PLAN.figures:
        targets += [f"{TABLES}/{name}.csv", f"{TABLES}/{name}.md"]
        targets += [f"{FIGS}/{name}.pdf", f"{FIGS}/{name}.png"]
    if PLAN.headline is not None:
        targets += [f"{TABLES}/headline.{ext}" for ext in ("csv", "md", "html")]
    return targets


# `snakemake --report`: a config whose outputs are not all there cannot be reported; say so in one line
# (Snakemake would warn once per missing file, then stop on the first missing figure).
if "--report" in sys.argv and not workflow.modifier.skip_configfile:
    _missing = [f for f in all_targets() if not Path(f).exists()]
    if _missing:
        raise WorkflowError(
            f"no report of config '{NAME}': {len(_missing)} of its {len(all_targets())} outputs are missing "
            f"(e.g. {_missing[0]}); run `snakemake --cores 2 {config_options()}` first, or name the config "
            "that was run with --configfile")
