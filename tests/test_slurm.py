"""The SLURM profile on a real scheduler, no mocks (issue #5).

A single-node SLURM cluster (Debian's slurm-wlm + munge) is brought up on localhost for the test
(tests/slurm_cluster.py) and the tiny configuration runs through the committed profile
`workflow/profiles/slurm` with the official snakemake-executor-plugin-slurm.  Its tables must be
byte-identical to those of a local `--cores 2` run, and every non-local job must really have gone
through SLURM.

Without the packages, or without root, the test skips and says what is missing; CI sets
`SPFL_REQUIRE_SLURM=1` (after .ci/install-slurm.sh), which turns that skip into a failure, so the
test cannot silently stop running there.

The committed profile is used as it is: the test cluster's partition is named `debug` like the
profile's, and an account is not needed (no accounting database).  Only test speed is changed on the
command line: status checks start after 5 s instead of 40 s (the cluster keeps finished jobs for
MinJobAge = 300 s >= 3 x 5 s, so the plugin's squeue status checks stay reliable), and a failing job
is not retried.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slurm_cluster import SlurmCluster, missing_requirements
from workflow_helpers import (
    RUNS,
    SNAKEMAKE,
    TABLE_RULES,
    TIMED_OUT,
    TINY_CONFIG,
    copy_workflow,
    failure,
    run_tables,
    table_differences,
    tiny_cells,
)

INIT_SECONDS = 5  # --slurm-init-seconds-before-status-checks: first status check after this
MIN_JOB_AGE = 300  # keep >= 3 x INIT_SECONDS, or the plugin falls back to sacct, which fails here
LIMIT = 420  # seconds for each Snakemake run (each takes 1-2 minutes on 2 busy CPUs)
SUBMITTED = re.compile(r"has been submitted with SLURM jobid (\d+)")
HANG_HINT = ("\nA SLURM run that hangs is usually the plugin tracking its jobs with sacct, which fails without an"
             " accounting database: the profile must keep `slurm-status-command: squeue`.")


@pytest.fixture
def slurm_cluster(tmp_path):
    """A running cluster with its state under tmp_path; its daemons are stopped even if the test fails."""
    missing = missing_requirements()
    if missing:
        reason = "needs a local SLURM: " + "; ".join(missing)
        if os.environ.get("SPFL_REQUIRE_SLURM") == "1":
            pytest.fail(f"{reason} (SPFL_REQUIRE_SLURM=1 forbids skipping)")
        pytest.skip(reason)
    with SlurmCluster(tmp_path / "slurm", min_job_age=MIN_JOB_AGE) as cluster:
        yield cluster


@pytest.mark.slurm
@pytest.mark.slow
def test_slurm_profile_gives_the_tables_of_a_local_run(tmp_path, slurm_cluster):
    local = copy_workflow(tmp_path / "local")
    result = run_tables(local, "--cores", "2", limit=LIMIT)
    assert result.returncode == 0, failure(result, "local run (--cores 2)")

    remote = copy_workflow(tmp_path / "remote")
    result = run_tables(remote, "--profile", "workflow/profiles/slurm",
                        "--slurm-init-seconds-before-status-checks", str(INIT_SECONDS), "--retries", "0",
                        limit=LIMIT, env=slurm_cluster.env)
    hint = HANG_HINT if result.returncode in TIMED_OUT else ""
    assert result.returncode == 0, (failure(result, "SLURM run (--profile workflow/profiles/slurm)") + hint
                                    + "\n" + slurm_cluster.log_tail())

    # Every job that is not a local rule -- prepare_data and one simulate job per cell -- was submitted
    # with sbatch, ran on the cluster and completed there.
    submitted = SUBMITTED.findall(result.stdout + result.stderr)
    cells = list((remote / RUNS).glob("*/cell.json"))
    assert cells and len(submitted) == len(set(submitted)) == len(cells) + 1, (
        f"{len(submitted)} SLURM jobs for {len(cells)} cells + prepare_data")
    assert set(submitted) <= slurm_cluster.job_ids(), "squeue does not know every submitted job"
    finished = slurm_cluster.finished_jobs()
    states = {job: finished.get(job, "not finished") for job in submitted}
    assert set(states.values()) == {"COMPLETED"}, f"SLURM job states: {states}"

    differences = table_differences(local, remote)
    assert not differences, "tables differ between the local and the SLURM run:\n" + "\n".join(differences)


# --- recovery after a kill: cancel the interrupted run's jobs before resubmitting ----------------------

CANCEL_SCRIPT = Path(__file__).resolve().parents[1] / "workflow" / "scripts" / "cancel_slurm_run.py"

FAKE_SQUEUE = """#!/bin/sh
# squeue --noheader --name NAME --format %i: the queued jobs of NAME, from the fake queue file
name=$3
[ -f "$QUEUE" ] && grep "^$name " "$QUEUE" | cut -d' ' -f2
exit 0
"""

FAKE_SCANCEL = """#!/bin/sh
# scancel --name NAME: record the call and empty the queue of NAME
echo "$@" >> "$QUEUE.calls"
grep -v "^$2 " "$QUEUE" > "$QUEUE.new"; mv "$QUEUE.new" "$QUEUE"
"""


def fake_slurm(tmp_path: Path, queue: str) -> dict[str, str]:
    """squeue and scancel stand-ins that act on a queue file ('<job name> <job id>' per line)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("squeue", FAKE_SQUEUE), ("scancel", FAKE_SCANCEL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (tmp_path / "queue").write_text(queue)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "QUEUE": str(tmp_path / "queue")}


def write_log(workdir: Path, name: str, text: str, age_s: float) -> None:
    log = workdir / ".snakemake" / "log" / f"{name}.snakemake.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(text)
    stamp = time.time() - age_s
    os.utime(log, (stamp, stamp))


def test_recovery_cancels_only_the_interrupted_runs_jobs(tmp_path):
    """The newest log naming a run ID is the interrupted run (a later `--unlock` log names none); only its
    jobs are cancelled, and the script waits until the queue no longer lists them."""
    workdir = tmp_path / "wf"
    write_log(workdir, "old", "SLURM run ID: spfl_old\n", age_s=300)
    write_log(workdir, "killed", "Building DAG of jobs...\nSLURM run ID: spfl_killed\nSubmitted job 1\n", age_s=60)
    write_log(workdir, "unlock", "Unlocked working directory.\n", age_s=1)
    env = fake_slurm(tmp_path, "spfl_killed 101\nspfl_killed 102\nspfl_old 7\nother 9\n")
    result = subprocess.run([sys.executable, str(CANCEL_SCRIPT), "--directory", str(workdir), "--wait", "5"],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert "spfl_killed" in result.stdout and "101 102" in result.stdout and "cancelled 2 job(s)" in result.stdout
    assert (tmp_path / "queue.calls").read_text() == "--name spfl_killed\n"
    assert (tmp_path / "queue").read_text() == "spfl_old 7\nother 9\n"  # other runs' jobs untouched

    again = subprocess.run([sys.executable, str(CANCEL_SCRIPT), "--directory", str(workdir)],
                           capture_output=True, text=True, env=env)
    assert again.returncode == 0 and "no job left in the queue" in again.stdout


def test_recovery_without_a_slurm_log_says_so(tmp_path):
    env = fake_slurm(tmp_path, "")
    result = subprocess.run([sys.executable, str(CANCEL_SCRIPT), "--directory", str(tmp_path)],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 1 and "names a SLURM run ID" in result.stderr
    assert not (tmp_path / "queue.calls").exists()


def test_the_profile_names_jobs_after_the_workflow():
    """The recovery finds the run's jobs by name: the profile sets the plugin's job-name prefix."""
    profile = (Path(__file__).resolve().parents[1] / "workflow" / "profiles" / "slurm" / "config.yaml").read_text()
    assert re.search(r"^slurm-jobname-prefix: spfl\b", profile, re.M)


@pytest.mark.slurm
@pytest.mark.slow
def test_after_a_kill_the_recovery_cancels_the_old_jobs_before_the_restart(tmp_path, slurm_cluster):
    """kill -9 of Snakemake while its jobs are queued: the documented recovery (cancel script, --unlock,
    the same command) leaves none of the old run's jobs in the queue before the restart submits again."""
    workdir = copy_workflow(tmp_path / "wf")
    command = [str(SNAKEMAKE), "--directory", str(workdir), "--snakefile", str(workdir / "Snakefile"),
               "--configfile", TINY_CONFIG, "--until", *TABLE_RULES, "--profile", "workflow/profiles/slurm",
               "--slurm-init-seconds-before-status-checks", str(INIT_SECONDS), "--retries", "0"]
    env = {**slurm_cluster.env, "MPLBACKEND": "Agg"}
    log = workdir / "killed-run.log"
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=workdir, env=env,
                                   start_new_session=True)
    try:
        deadline = time.monotonic() + LIMIT
        while time.monotonic() < deadline and process.poll() is None and len(SUBMITTED.findall(log.read_text())) < 3:
            time.sleep(0.2)
        running = process.poll() is None
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    assert running, f"Snakemake ended before the kill:\n{log.read_text()[-3000:]}"
    run_id = re.search(r"SLURM run ID: (\S+)", log.read_text()).group(1)
    old_jobs = set(SUBMITTED.findall(log.read_text()))
    queued = set(slurm_cluster.run("squeue", "--noheader", "--name", run_id, "--format", "%i").stdout.split())
    assert queued, "every job had ended before the kill: the test shows nothing"

    cancel = subprocess.run([sys.executable, str(CANCEL_SCRIPT), "--directory", str(workdir), "--wait", "60"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert cancel.returncode == 0, cancel.stdout + cancel.stderr
    assert not slurm_cluster.run("squeue", "--noheader", "--name", run_id, "--format", "%i").stdout.split()
    states = slurm_cluster.finished_jobs()
    assert {states.get(job) for job in queued} <= {"CANCELLED", "COMPLETED"}, states

    unlock = subprocess.run([*command, "--unlock"], capture_output=True, text=True, cwd=workdir, env=env, timeout=120)
    assert unlock.returncode == 0, unlock.stderr[-3000:]
    restart = run_tables(workdir, "--profile", "workflow/profiles/slurm", "--slurm-init-seconds-before-status-checks",
                         str(INIT_SECONDS), "--retries", "0", limit=LIMIT, env=slurm_cluster.env)
    assert restart.returncode == 0, failure(restart, "restart after the recovery") + "\n" + slurm_cluster.log_tail()
    new_jobs = set(SUBMITTED.findall(restart.stdout + restart.stderr))
    assert new_jobs and not new_jobs & old_jobs
    assert len(list((workdir / RUNS).glob("*/cell.json"))) == tiny_cells()  # every cell of config/test.yaml
