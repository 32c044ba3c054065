"""The Snakemake pipeline: lint, dry runs of the shipped configs, validation, and a tiny end-to-end run."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from spfl.configuration import load_plan, read_config
from spfl.provenance import code_version
from workflow_helpers import (
    LOCAL_ONLY,
    ROOT,
    SNAKEMAKE,
    configured_figures,
    copy_workflow,
    jobs_of,
    snakemake,
    tiny_cells,
)

# Snakemake runs from the same environment as the tests, in a temporary copy of the workflow, so the
# repository's results/ and figures/ are never touched.

FIGURES = configured_figures("test.yaml")  # what the end-to-end run of config/test.yaml draws


@pytest.fixture
def workdir(tmp_path):
    return copy_workflow(tmp_path / "wf")


def test_snakemake_is_the_one_of_this_environment():
    assert SNAKEMAKE.exists(), f"no snakemake next to {sys.executable}"


def test_lint_passes(workdir):
    for extra in ((), ("--configfile", "config/quick.yaml")):
        result = snakemake(workdir, "--lint", *extra)
        assert result.returncode == 0, result.stdout + result.stderr


def test_dry_run_of_the_paper_config_needs_no_data(workdir):
    """The default config (CIFAR-10): no dataset, no network, nothing written.  (Its speed is not asserted:
    a wall-clock limit fails on a busy machine and proves nothing on an idle one.)"""
    result = snakemake(workdir, "-n", "--cores", "2")
    assert result.returncode == 0, result.stderr
    jobs = jobs_of(result.stdout)
    assert jobs["prepare_data"] == 1 and jobs["simulate"] == jobs["cell_params"] >= 30
    paper = configured_figures("config.yaml")
    assert jobs["table"] == len(paper) and jobs["headline_table"] == 1
    assert all(jobs[f"plot_{name}"] == 1 for name in paper)
    assert "results/data/cifar10.pt" in result.stdout
    assert "results/paper/tables/headline.csv" in result.stdout and "figures/paper/ablation.png" in result.stdout
    assert not (workdir / "data").exists() and not (workdir / "results").exists()


def test_dry_run_of_the_quick_config(workdir):
    result = snakemake(workdir, "-n", "--cores", "2", "--configfile", "config/quick.yaml")
    assert result.returncode == 0, result.stderr
    assert "results/data/digits.pt" in result.stdout and "cifar10" not in result.stdout
    jobs = jobs_of(result.stdout)
    assert jobs["simulate"] >= 10 and all(jobs[f"plot_{name}"] == 1 for name in configured_figures("quick.yaml"))


@pytest.mark.parametrize("profile", ["default", "slurm"])
def test_profiles_parse(workdir, profile):
    result = snakemake(workdir, "-n", "--profile", f"workflow/profiles/{profile}", "--configfile",
                       "config/quick.yaml")
    assert result.returncode == 0, result.stderr


def test_profiles_comment_every_key():
    for profile in ("default", "slurm"):
        for line in (ROOT / "workflow" / "profiles" / profile / "config.yaml").read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#") and not line.lstrip().startswith("-"):
                assert "#" in line or line.rstrip().endswith(":"), f"{profile}: uncommented key: {line}"


def test_single_figure_builds_only_what_it_needs(workdir):
    # the target goes before --configfile, which takes every following word as a config file
    result = snakemake(workdir, "figures/quick/accuracy_vs_power.pdf", "-n", "--cores", "2", "--configfile",
                       "config/quick.yaml")
    assert result.returncode == 0, result.stderr
    jobs = jobs_of(result.stdout)
    assert set(jobs) == {"prepare_data", "cell_params", "simulate", "table", "plot_accuracy_vs_power"}
    power = load_plan(read_config([ROOT / "config" / "quick.yaml"])).figure_runs("accuracy_vs_power")
    assert jobs["table"] == 1 and jobs["simulate"] == len({r.cell for r in power})  # its cells, nothing else


def test_invalid_config_stops_before_any_job_naming_the_key(workdir):
    config = yaml.safe_load((workdir / "config" / "quick.yaml").read_text())
    config["experiments"]["power"]["grid"]["max_power_dbm"] = [11, "high"]
    config["figures"]["accuracy_vs_pwr"] = {"experiment": "power"}
    (workdir / "bad.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(workdir, "-n", "--configfile", "bad.yaml")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "config key 'experiments.power.grid.max_power_dbm[1]' = \"high\" is invalid" in output
    assert "config key 'figures.accuracy_vs_pwr' is unknown" in output


def test_quick_config_is_not_merged_with_the_paper_config(workdir):
    """--configfile replaces config/config.yaml (Snakemake would otherwise merge the two)."""
    result = snakemake(workdir, "-n", "--configfile", "config/test.yaml")
    assert result.returncode == 0, result.stderr
    assert "cifar10" not in result.stdout


def cells_of(dry_run_output: str) -> set[str]:
    """The cells of the simulate jobs, from their one-line messages ("[stage 2/4: simulations] cell <hash>: ...")."""
    return set(re.findall(r"\[stage 2/4: simulations\] cell ([0-9a-f]{12}):", dry_run_output))


def test_nested_config_overrides_merge_into_the_section(workdir):
    """`--config 'base={rounds: 6}'` changes one key of `base` and keeps the others (README, docs/pipeline.md);
    `style.dpi=100` is not Snakemake syntax and fails."""
    full = snakemake(workdir, "-n", "--configfile", "config/test.yaml")
    same = snakemake(workdir, "-n", "--configfile", "config/test.yaml", "--config", "base={rounds: 6}",
                     "style={dpi: 100}")
    assert same.returncode == 0, same.stderr[-2000:]
    assert cells_of(same.stdout) == cells_of(full.stdout)  # num_devices, deadline_ms, ... of base kept
    fewer = snakemake(workdir, "-n", "--configfile", "config/test.yaml", "--config", "base={rounds: 4}")
    assert len(cells_of(fewer.stdout)) == len(cells_of(full.stdout)) and not cells_of(fewer.stdout) & cells_of(
        full.stdout)
    dotted = snakemake(workdir, "-n", "--configfile", "config/test.yaml", "--config", "style.dpi=100")
    assert dotted.returncode != 0 and "must start with a valid identifier" in dotted.stdout + dotted.stderr


def test_a_report_of_a_config_without_outputs_says_so_in_one_line(workdir):
    result = snakemake(workdir, "--report", "report.html", "--configfile", "config/test.yaml")
    assert result.returncode != 0 and not (workdir / "report.html").exists()
    lines = [line for line in result.stderr.splitlines() if "no report of config 'test'" in line]
    assert len(lines) == 1 and "outputs are missing" in lines[0] and "--configfile" in lines[0], result.stderr
    assert "Missing metadata" not in result.stderr


def test_config_overrides_set_numbers_and_lists(workdir):
    """`--config seeds=[0]` halves the cells of config/test.yaml; a nested number keeps its type."""
    full = snakemake(workdir, "-n", "--configfile", "config/test.yaml")
    one_seed = snakemake(workdir, "-n", "--configfile", "config/test.yaml", "--config", "seeds=[0]",
                         "base={deadline_ms: 2.733e2}")
    assert full.returncode == 0 and one_seed.returncode == 0, one_seed.stderr[-2000:]
    assert len(cells_of(one_seed.stdout)) == tiny_cells(seeds=1) and len(cells_of(full.stdout)) == tiny_cells()
    assert cells_of(one_seed.stdout) < cells_of(full.stdout)  # the same cells: 2.733e2 == 273.3


def test_a_yaml_1_2_number_means_what_it_means_to_spfl_run(workdir):
    """`deadline_ms: 2.733e2` (a string to YAML 1.1) is 273.3, as for `spfl run`: the same cells."""
    text = (workdir / "config" / "test.yaml").read_text()
    assert "deadline_ms: 273.3" in text
    (workdir / "exp.yaml").write_text(text.replace("deadline_ms: 273.3", "deadline_ms: 2.733e2"))
    plain = snakemake(workdir, "-n", "--configfile", "config/test.yaml")
    exponent = snakemake(workdir, "-n", "--configfile", "exp.yaml")
    assert exponent.returncode == 0, exponent.stderr[-2000:]
    assert cells_of(exponent.stdout) == cells_of(plain.stdout)


def test_an_unreadable_config_file_is_named(workdir):
    (workdir / "bad.yaml").write_text((workdir / "config" / "test.yaml").read_text() + "\nseeds: [0, 1\n")
    result = snakemake(workdir, "-n", "--configfile", "config/test.yaml", "--configfile", "bad.yaml")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    # Snakemake's own parser may refuse the file first (its message names no file); when it accepts it,
    # the workflow's reader names the file and the line
    assert "bad.yaml" in output or "Config file is not valid JSON or YAML" in output


def test_a_repeated_experiment_name_stops_the_workflow_naming_the_file(workdir):
    text = (workdir / "config" / "test.yaml").read_text()
    twice = text.replace("experiments:\n", "experiments:\n  power:\n    grid: {max_power_dbm: [11]}\n", 1)
    (workdir / "twice.yaml").write_text(twice)
    result = snakemake(workdir, "-n", "--configfile", "twice.yaml")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "config file" in output and "twice.yaml" in output and "'power'" in output


def test_two_configs_write_disjoint_outputs(workdir):
    outputs = {}
    for name in ("test", "quick"):
        result = snakemake(workdir, "-n", "--configfile", f"config/{name}.yaml")
        assert result.returncode == 0, result.stderr[-2000:]
        # every output is missing in a fresh folder: each job's "Reason: Missing output files: a, b; ..." lists them
        outputs[name] = set(re.findall(r"Missing output files: ([^;\n]+)", result.stdout))
        outputs[name] = {path for line in outputs[name] for path in line.split(", ")}
    shared = outputs["test"] & outputs["quick"]
    assert shared == {"results/data/digits.pt"}, shared  # only the prepared dataset
    assert all(p.startswith(("results/test/", "figures/test/", "results/data/")) for p in outputs["test"])


# --- end to end ------------------------------------------------------------------------------------

def simulator_ready() -> bool:
    try:
        import spfl.simulator.simulation  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """config/test.yaml run to the end once (a few short digits runs); shared by the e2e checks."""
    if not simulator_ready():
        pytest.fail("spfl.simulator.simulation is not importable: the end-to-end test needs the simulator")
    workdir = copy_workflow(tmp_path_factory.mktemp("e2e") / "wf")
    version = code_version()
    result = snakemake(workdir, "--cores", "2", "--configfile", "config/test.yaml", timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    workdir.joinpath(".code_version").write_text(version)
    return workdir


def skip_if_code_changed(workdir: Path) -> None:
    """The simulations rerun when the simulation code changes (by design): a tree edited while the
    test runs cannot expect 'nothing to be done'."""
    if workdir.joinpath(".code_version").read_text() != code_version():
        pytest.skip("the simulation code changed while the test ran")


@pytest.mark.slow
def test_end_to_end_tables_hold_sane_values(finished):
    tables = finished / "results" / "test" / "tables"
    for name in [*FIGURES, "headline"]:
        assert (tables / f"{name}.csv").stat().st_size > 0 and (tables / f"{name}.md").stat().st_size > 0
    for name in ("accuracy_vs_bandwidth", "accuracy_vs_power", "accuracy_vs_devices", "noniid"):
        table = pd.read_csv(tables / f"{name}.csv")
        assert (table["n"] == 2).all(), name
        assert table["mean"].between(0, 100).all(), name
        assert (table["ci_low"] <= table["mean"] + 1e-9).all() and (table["mean"] <= table["ci_high"] + 1e-9).all()
    rounds = pd.read_csv(tables / "accuracy_vs_round.csv")
    assert {0, 3, 6} <= set(rounds["round"]) and rounds["round"].max() == 6  # eval_every 3, 6 rounds
    packets = pd.read_csv(tables / "packet_errors.csv").dropna(subset=["mean"])
    assert packets["mean"].between(0, 100).all()
    alloc = pd.read_csv(tables / "allocation.csv")
    assert alloc["sign_power_share"].dropna().between(0, 1).all()
    per_round = alloc.groupby(["method", "seed", "round"])["bandwidth_khz"].sum()
    assert (per_round > 0).all() and (per_round <= 1000.0 * (1 + 1e-6)).all()  # B_k add up to at most B_tot = 1 MHz
    assert alloc["bandwidth_share_pct"].between(0, 100 * (1 + 1e-6)).all()
    assert alloc["gradient_norm_rel"].dropna().between(0, 1 + 1e-9).all()
    served = pd.read_csv(tables / "devices_served.csv")
    assert set(served["quantity"]) == {"transmitting", "sign arrived", "full gradient arrived"}
    assert served["mean"].between(0, 10).all()  # K = 10 devices
    headline = pd.read_csv(tables / "headline.csv")
    assert len(headline) == 4 and (headline["paper_gain_pp"] == 9.96).all()  # 2 budgets x (exploratory, confirmatory)
    assert headline["seeds"].tolist() == ["exploratory (seeds 0-1)", "confirmatory (seed 2)"] * 2
    assert headline["gain_pp"].between(-100, 100).all()
    assert "9.96" in (tables / "headline.md").read_text()
    runs = pd.read_csv(tables / "runs.csv")
    assert set(runs["status"]) <= {"ok", "diverged"} and len(runs) == len(runs.drop_duplicates(["cell", "method",
                                                                                                 "experiment"]))


@pytest.mark.slow
def test_end_to_end_figures_and_run_folders(finished):
    for name in FIGURES:
        assert (finished / "figures" / "test" / f"{name}.pdf").read_bytes()[:4] == b"%PDF"
        assert (finished / "figures" / "test" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        log = finished / "logs" / "test" / "plots" / f"{name}.log"
        assert log.stat().st_size < 1000, f"{log}: font-subsetting chatter is back"
    assert sorted(p.name for p in (finished / "results").iterdir()) == ["data", "test"]  # one namespace
    assert sorted(p.name for p in (finished / "figures").iterdir()) == ["test"]
    manifests = list((finished / "results" / "test" / "runs").glob("*/cell.json"))
    assert len(manifests) == tiny_cells()  # the ablation shares its grid point with the bandwidth sweep
    for manifest in manifests:
        cell = manifest.parent
        info = json.loads(manifest.read_text())
        params = json.loads((cell / "params.json").read_text())
        assert "method" not in params and info["cell"] == cell.name
        for method in info["methods"]:
            assert json.loads((cell / method / "summary.json").read_text())["status"] in ("ok", "diverged")


@pytest.mark.slow
def test_end_to_end_rerun_semantics(finished):
    """Complete: nothing to do.  Restyle: only plots rerun.  One figure: only its plot job."""
    skip_if_code_changed(finished)
    result = snakemake(finished, "-n", "--configfile", "config/test.yaml")
    assert result.returncode == 0 and "Nothing to be done" in result.stdout + result.stderr
    config = yaml.safe_load((finished / "config" / "test.yaml").read_text())
    config["style"] = {"dpi": 72, "theme": "ticks"}
    (finished / "restyled.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(finished, "-n", "--configfile", "restyled.yaml")
    assert result.returncode == 0, result.stderr
    assert set(jobs_of(result.stdout)) == {"all", *(f"plot_{name}" for name in FIGURES)}
    table = finished / "results" / "test" / "tables" / "noniid.csv"  # a changed table: only its figure is outdated
    table.write_text(table.read_text() + "\n")
    result = snakemake(finished, "figures/test/noniid.pdf", "-n", "--configfile", "config/test.yaml")
    assert set(jobs_of(result.stdout)) == {"plot_noniid"}


@pytest.mark.slow
def test_end_to_end_code_versions_select_what_reruns(finished):
    """Simulation code -> every simulation; analysis code -> tables and plots; plot code -> plots.

    The versions are hashes of the source (common.smk); a copy of the workflow with one of them
    replaced stands in for an edited module, over the same results.
    """
    skip_if_code_changed(finished)
    common = finished / "workflow" / "rules" / "common.smk"
    original = common.read_text()
    expected = {
        "CODE_VERSION": {"simulate", "table", "headline_table", "runs_table"},
        "ANALYSIS_VERSION": {"table", "headline_table", "runs_table"},
        "PLOTS_VERSION": set(),
    }
    cells = len(list((finished / "results" / "test" / "runs").glob("*/cell.json")))
    try:
        for name, rules in expected.items():
            line = next(line for line in original.splitlines() if line.startswith(f"{name} = "))
            common.write_text(original.replace(line, line.split(" = ")[0] + ' = "edited"'))
            result = snakemake(finished, "-n", "--configfile", "config/test.yaml")
            assert result.returncode == 0, result.stdout[-2000:]
            jobs = jobs_of(result.stdout)
            assert set(jobs) == {"all", *rules, *(f"plot_{name}" for name in FIGURES)}, line
            if "simulate" in rules:
                assert jobs["simulate"] == cells
    finally:
        common.write_text(original)


@pytest.mark.slow
def test_end_to_end_report(finished):
    result = snakemake(finished, "--configfile", "config/test.yaml", "--report", "report.html", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    text = (finished / "report.html").read_text()
    for name in FIGURES:
        assert f"{name}.png" in text, name
    assert "headline.html" in text
    # every figure and the headline table say which config and dataset they show
    assert text.count('"config": "test"') == text.count('"dataset": "digits"') == len(FIGURES) + 1


@pytest.mark.slow
def test_end_to_end_benchmarks_give_the_run_times(finished):
    """Every simulate job leaves a benchmark file; workflow/scripts/runtimes.py sums them."""
    folder = finished / "results" / "test" / "benchmarks" / "simulate"
    cells = {p.parent.name for p in (finished / "results" / "test" / "runs").glob("*/cell.json")}
    assert {p.stem for p in folder.glob("*.tsv")} == cells
    walls = [float(p.read_text().splitlines()[1].split("\t")[0]) for p in folder.glob("*.tsv")]
    result = subprocess.run([sys.executable, str(ROOT / "workflow" / "scripts" / "runtimes.py"), str(folder),
                             "--cores", "2"], capture_output=True, text=True, check=True)
    assert f"cells: {len(cells)}" in result.stdout
    assert f"one after another: {sum(walls):.1f} s" in result.stdout
    missing = subprocess.run([sys.executable, str(ROOT / "workflow" / "scripts" / "runtimes.py"),
                              str(finished / "nowhere")], capture_output=True, text=True)
    assert missing.returncode == 2 and "nowhere" in missing.stderr


MODULE_SNAKEFILE = """
import os

_path_before = os.environ["PATH"]

configfile: "config/test.yaml"


module spfl:
    snakefile: "{snakefile}"
    config: config
    prefix: "replication"


use rule * from spfl as spfl_*

assert os.environ["PATH"] == _path_before, "importing the pipeline changed PATH"


rule all:
    input:
        rules.spfl_all.input,
    default_target: True
"""


@pytest.mark.slow
def test_the_pipeline_runs_as_a_module_with_a_prefix(finished, tmp_path):
    """Another workflow imports the pipeline with `module` and a `prefix` and runs config/test.yaml
    through it: everything lands under the prefix, and the tables equal those of a direct run."""
    parent = tmp_path / "parent"
    pipeline = copy_workflow(tmp_path / "spfl")
    (parent / "config").mkdir(parents=True)
    shutil.copy2(ROOT / "config" / "test.yaml", parent / "config" / "test.yaml")
    (parent / "Snakefile").write_text(MODULE_SNAKEFILE.format(snakefile=pipeline / "Snakefile"))
    result = subprocess.run([str(SNAKEMAKE), "--cores", "2", "--directory", str(parent), "--snakefile",
                             str(parent / "Snakefile")], capture_output=True, text=True, timeout=900,
                            env={**os.environ, "MPLBACKEND": "Agg", **LOCAL_ONLY}, cwd=parent)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert sorted(p.name for p in parent.iterdir() if not p.name.startswith(".")) == \
        ["Snakefile", "config", "replication"]
    tables = parent / "replication" / "results" / "test" / "tables"
    for name in ("headline.csv", "accuracy_vs_bandwidth.csv", "packet_errors.csv"):
        assert (tables / name).read_bytes() == (finished / "results" / "test" / "tables" / name).read_bytes(), name
    assert all((parent / "replication" / "figures" / "test" / f"{name}.png").is_file() for name in FIGURES)
    assert not (pipeline / "results").exists() and not (pipeline / "figures").exists()
