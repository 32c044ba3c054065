"""The Snakemake pipeline: lint, dry runs of the shipped configs, validation, and a tiny end-to-end run.

Snakemake runs from the same environment as the tests, in a temporary copy of the workflow, so the
repository's results/ and figures/ are never touched.
"""

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

from spfl.experiments import FIGURES
from spfl.provenance import code_version

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
WORKFLOW_FILES = ("Snakefile", "workflow", "config")


def copy_workflow(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, dest / name)
    return dest


def snakemake(workdir: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.run([str(SNAKEMAKE), "--directory", str(workdir), "--snakefile",
                           str(workdir / "Snakefile"), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=workdir)


def jobs_of(dry_run_output: str) -> dict[str, int]:
    """Rule -> job count from the 'Job stats' table of a dry run."""
    stats = dry_run_output.split("Job stats:", 1)[1]
    counts = {}
    for line in stats.splitlines()[3:]:
        match = re.match(r"^(\S+)\s+(\d+)$", line.strip())
        if not match:
            break
        if match.group(1) != "total":
            counts[match.group(1)] = int(match.group(2))
    return counts


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
    assert jobs["table"] == len(FIGURES) and jobs["headline_table"] == 1
    assert all(jobs[f"plot_{name}"] == 1 for name in FIGURES)
    assert "results/data/cifar10.pt" in result.stdout
    assert not (workdir / "data").exists() and not (workdir / "results").exists()


def test_dry_run_of_the_quick_config(workdir):
    result = snakemake(workdir, "-n", "--cores", "2", "--configfile", "config/quick.yaml")
    assert result.returncode == 0, result.stderr
    assert "results/data/digits.pt" in result.stdout and "cifar10" not in result.stdout
    jobs = jobs_of(result.stdout)
    assert jobs["simulate"] >= 10 and all(jobs[f"plot_{name}"] == 1 for name in FIGURES)


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
    result = snakemake(workdir, "figures/accuracy_vs_power.pdf", "-n", "--cores", "2", "--configfile",
                       "config/quick.yaml")
    assert result.returncode == 0, result.stderr
    jobs = jobs_of(result.stdout)
    assert set(jobs) == {"prepare_data", "cell_params", "simulate", "table", "plot_accuracy_vs_power"}
    assert jobs["table"] == 1 and jobs["simulate"] == 3 * 2  # 3 power values x 2 seeds


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


# --- end to end ------------------------------------------------------------------------------------

def simulator_ready() -> bool:
    try:
        import spfl.simulation  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """config/test.yaml run to the end once (a few short digits runs); shared by the e2e checks."""
    if not simulator_ready():
        pytest.fail("spfl.simulation is not importable: the end-to-end test needs the simulator")
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
    tables = finished / "results" / "tables"
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
    share = alloc[alloc["quantity"] == "sign_power_share"]["mean"].dropna()
    assert share.between(0, 1).all()
    band = alloc[alloc["quantity"] == "bandwidth_khz"]
    assert 0 < band["mean"].sum() <= 1000.0 * (1 + 1e-6)  # B_k add up to at most B_tot = 1 MHz
    headline = pd.read_csv(tables / "headline.csv")
    assert len(headline) == 2 and (headline["paper_gain_pp"] == 9.96).all()
    assert headline["gain_pp"].between(-100, 100).all()
    assert "9.96" in (tables / "headline.md").read_text()
    runs = pd.read_csv(tables / "runs.csv")
    assert set(runs["status"]) <= {"ok", "diverged"} and len(runs) == len(runs.drop_duplicates(["cell", "method",
                                                                                                 "experiment"]))


@pytest.mark.slow
def test_end_to_end_figures_and_run_folders(finished):
    for name in FIGURES:
        assert (finished / "figures" / f"{name}.pdf").read_bytes()[:4] == b"%PDF"
        assert (finished / "figures" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    for manifest in (finished / "results" / "runs").glob("*/cell.json"):
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
    table = finished / "results" / "tables" / "noniid.csv"  # a changed table: only its figure is outdated
    table.write_text(table.read_text() + "\n")
    result = snakemake(finished, "figures/noniid.pdf", "-n", "--configfile", "config/test.yaml")
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
        "CODE_VERSION = code_version()": {"simulate", "table", "headline_table", "runs_table"},
        'ANALYSIS_VERSION = module_version("analysis.py")': {"table", "headline_table", "runs_table"},
        'PLOTS_VERSION = module_version("plots.py")': set(),
    }
    cells = len(list((finished / "results" / "runs").glob("*/cell.json")))
    try:
        for line, rules in expected.items():
            assert line in original
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
