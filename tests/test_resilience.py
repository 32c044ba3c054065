"""Workflow restarts (issue #5): Snakemake killed mid-pipeline and started again redoes only the unfinished
jobs and leaves no incomplete output; the profiles retry failed jobs with resources that grow per attempt.

The kill test runs the tiny configuration (config/test.yaml, one seed: five cells instead of ten, the
restart semantics do not depend on the seed count) through the default profile with `--cores 1`, so jobs
run one at a time, in its own process group, and SIGKILLs the whole group -- Snakemake and the running
`spfl run` -- while a simulation is half written: at least one cell finished, one cell folder holding
records but no cell.json.  Nothing gets a chance to clean up, as after a power loss or an OOM kill.

A SIGKILL leaves Snakemake's lock behind, and the next start refuses to run until `snakemake --unlock`
(Snakemake cannot tell a stale lock from a live run); the test does what a user must do after a kill:
the same command with `--unlock`, then the same command again.  Only the tables are
built (`--until` the table rules): the figures add a minute of plotting and nothing to the restart
semantics.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from spfl.configuration.plan import load_plan
from spfl.provenance import code_version
from workflow_helpers import (
    ROOT,
    RUNS,
    TABLES,
    copy_workflow,
    jobs_of,
    snakemake,
    snakemake_command,
    snakemake_env,
    tiny_config,
    tree,
    write_config,
)

TABLE_RULES = ("table", "headline_table", "runs_table")
KILL_WITHIN = 300  # seconds: the first cell needs data preparation and one simulation (~20 s on 2 CPUs)


def one_seed_config() -> dict:
    config = tiny_config()
    config["seeds"] = [0]
    return config


def expected_tables(plan) -> list[str]:
    names = ["runs.csv"] + [f"{figure}.{ext}" for figure in plan.figures for ext in ("csv", "md")]
    return names + ([f"headline.{ext}" for ext in ("csv", "md", "html")] if plan.headline else [])


def cells_done(workdir: Path) -> set[str]:
    return {path.parent.name for path in (workdir / RUNS).glob("*/cell.json")}


def cells_half_written(workdir: Path) -> set[str]:
    """Cells whose simulation has written records but not yet its cell.json: a simulate job mid-way."""
    half = set()
    for folder in (workdir / RUNS).glob("*"):
        written = {path.name for path in folder.iterdir()} - {"params.json"}
        if written and "cell.json" not in written:
            half.add(folder.name)
    return half


def kill_mid_simulation(workdir: Path, args: list[str]) -> tuple[set[str], set[str], str]:
    """Start Snakemake in its own process group; SIGKILL the group once a cell is done and another is
    half written.  Returns the finished cells, the half-written ones and Snakemake's output so far."""
    log = workdir / "first-run.log"
    with log.open("w") as out:
        process = subprocess.Popen(snakemake_command(workdir, *args), stdout=out, stderr=subprocess.STDOUT,
                                   cwd=workdir, env=snakemake_env(), start_new_session=True)
    try:
        deadline = time.monotonic() + KILL_WITHIN
        while time.monotonic() < deadline and process.poll() is None:
            if cells_done(workdir) and cells_half_written(workdir):
                break
            time.sleep(0.05)
        running = process.poll() is None
        os.killpg(process.pid, signal.SIGKILL)  # the group: Snakemake, its job's shell and `spfl run`
    finally:
        process.wait(timeout=30)
    assert running, f"Snakemake ended (exit {process.returncode}) before the kill:\n{log.read_text()[-3000:]}"
    return cells_done(workdir), cells_half_written(workdir), log.read_text()


@pytest.mark.slow
def test_killed_workflow_restarts_with_only_the_unfinished_jobs(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    config = one_seed_config()
    name = write_config(workdir, "one-seed.yaml", config)
    plan = load_plan(config)
    args = ["--profile", "workflow/profiles/default", "--cores", "1", "--until", *TABLE_RULES, "--configfile", name]

    version = code_version()
    done, half, first_log = kill_mid_simulation(workdir, args)
    assert done and half and len(done) < len(plan.cells), (done, half, first_log[-3000:])
    runs = workdir / RUNS
    finished = {cell: tree(runs / cell) for cell in done}  # every file of a finished cell, with its mtime
    for cell in done:
        for method in plan.cells[cell].methods:
            assert (runs / cell / method / "summary.json").is_file(), (cell, method)
    inputs = {cell: tree(runs / cell)["params.json"] for cell in plan.cells if (runs / cell / "params.json").exists()}

    unlock = snakemake(workdir, "--unlock", *args)
    assert unlock.returncode == 0, unlock.stderr[-3000:]
    started = time.time()
    restart = snakemake(workdir, *args, timeout=600)
    assert restart.returncode == 0, restart.stdout[-3000:] + restart.stderr[-5000:]
    output = restart.stdout + restart.stderr
    if code_version() != version:
        pytest.skip("the simulation code changed while the test ran: every cell reruns, by design")

    # Only the unfinished cells ran again; the finished ones were not touched (bytes and mtimes).
    # one line per simulate job: its message (workflow/rules/simulate.smk), "[stage 2/4: simulations] cell <hash>: ..."
    assert len(re.findall(r"\[stage 2/4: simulations\] cell [0-9a-f]{12}:", output)) == len(plan.cells) - len(done), \
        output[-3000:]
    assert {cell: tree(runs / cell) for cell in done} == finished
    assert {cell: tree(runs / cell)["params.json"] for cell in inputs} == inputs
    assert cells_done(workdir) == set(plan.cells)
    for cell in half:  # the cell killed half-way was simulated again from the start, after the restart
        assert (runs / cell / "cell.json").stat().st_mtime >= started
        for method in plan.cells[cell].methods:
            assert (runs / cell / method / "summary.json").stat().st_mtime >= started, (cell, method)

    tables = workdir / TABLES
    missing = [table for table in expected_tables(plan) if not (tables / table).is_file()]
    assert not missing, f"tables missing after the restart: {missing}"

    # Nothing is left that Snakemake marks incomplete, and nothing is left to do.
    incomplete = workdir / ".snakemake" / "incomplete"
    assert not incomplete.exists() or not any(incomplete.iterdir()), sorted(os.listdir(incomplete))
    dry = snakemake(workdir, *args, "-n")
    assert dry.returncode == 0, dry.stderr[-3000:]
    pending = jobs_of(dry.stdout) if "Job stats:" in dry.stdout else {}
    assert not pending, f"jobs left after the restart: {pending}"


# --- retries ---------------------------------------------------------------------------------------

def profile(name: str) -> dict:
    return yaml.safe_load((ROOT / "workflow" / "profiles" / name / "config.yaml").read_text())


def test_profiles_rerun_incomplete_jobs_and_the_cluster_profile_retries():
    """Both profiles rerun what a kill left incomplete; the SLURM profile resubmits a failed job (a job
    killed for memory or time), the local one does not (a failure on one machine is deterministic)."""
    slurm, local = profile("slurm"), profile("default")
    assert slurm["rerun-incomplete"] is True and local["rerun-incomplete"] is True
    assert slurm["retries"] >= 1
    assert local["retries"] == 0


def test_each_retry_of_a_simulation_gets_more_memory_and_time(tmp_path):
    """The SLURM profile's retries, run for real: a simulate job that always fails is started
    1 + retries times, and each attempt records the mem_mb and runtime Snakemake gave it.

    Only the job's command is replaced (by a probe that writes its resources and fails); the rule's
    resources, the config's sizes and the profile are the shipped ones.  The local executor stands in for
    SLURM (the command line wins over the profile's `executor`); test_slurm.py runs the real cluster.
    """
    workdir = copy_workflow(tmp_path / "wf")
    rules = workdir / "workflow" / "rules" / "simulate.smk"
    text = rules.read_text()
    shell = text.index("\n    shell:\n", text.index("rule simulate:"))  # the simulate rule's, the file's last
    assert text.count("\n    shell:\n", shell) == 1
    probe = '\n    shell:\n        "echo {resources.mem_mb} {resources.runtime} >> attempts.txt; exit 1"\n'
    rules.write_text(text[:shell] + probe)
    config = one_seed_config()
    name = write_config(workdir, "one-seed.yaml", config)
    plan = load_plan(config)
    cell = sorted(plan.cells)[0]
    data = workdir / "results" / "data" / f"{plan.cells[cell].dataset}.pt"
    data.parent.mkdir(parents=True)
    data.write_bytes(b"")  # the probe reads no data: skip preparing it

    retries = profile("slurm")["retries"]
    result = snakemake(workdir, f"{RUNS}/{cell}/cell.json", "--profile", "workflow/profiles/slurm",
                       "--executor", "local", "--cores", "1", "--configfile", name, timeout=300)
    assert result.returncode != 0, "the probe job always fails"
    attempts = [tuple(map(int, line.split())) for line in (workdir / "attempts.txt").read_text().splitlines()]
    base = config["resources"]["simulate"]
    assert attempts == [(base["mem_mb"] * n, base["runtime"] * n) for n in range(1, retries + 2)], (
        attempts, result.stderr[-3000:])
