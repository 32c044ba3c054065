"""Helpers of the tests that run the Snakemake pipeline in a temporary copy (resilience, divergence, bad input).

Every workflow test runs Snakemake the same way through these helpers: from the tests' environment, in a
private copy of Snakefile, workflow/ and config/, never touching the repository's results/ and figures/.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from spfl.configuration import load_plan, read_config

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
WORKFLOW_FILES = ("Snakefile", "workflow", "config")


def configured_figures(config: str) -> list[str]:
    """The figures a shipped config builds (test_experiments checks that they are all the registry's)."""
    return list(load_plan(read_config([ROOT / "config" / config])).figures)


# Snakemake loads every installed executor plugin at start; the SLURM one then runs `scontrol show config`,
# which, where SLURM's client is installed but no controller answers, retries for 10 s on every start.
# Runs that use no cluster point SLURM_CONF at an empty file, so scontrol fails at once (docs/cluster.md, "SLURM's
# client without a cluster"); tests/test_slurm.py gives its own cluster's SLURM_CONF.
LOCAL_ONLY = {"SLURM_CONF": os.devnull}


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
    env = {**os.environ, "MPLBACKEND": "Agg", **LOCAL_ONLY}
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



__all__ = ["LOCAL_ONLY", "ROOT", "RUNS", "SNAKEMAKE", "TABLES", "TINY_CONFIG", "configured_figures",
           "copy_workflow", "jobs_of", "snakemake", "snakemake_command", "snakemake_env", "tiny_cells",
           "tiny_config", "tree", "write_config"]

TINY_CONFIG = "config/test.yaml"


def tiny_cells(seeds: int | None = None) -> int:
    """How many cells config/test.yaml makes (with only its first ``seeds`` seeds), from the plan."""
    from spfl.configuration import load_plan

    config = tiny_config()
    if seeds is not None:
        config["seeds"] = config["seeds"][:seeds]
    return len(load_plan(config).cells)


def tiny_config() -> dict[str, Any]:
    """A fresh copy of the tiny configuration (config/test.yaml) to mutate."""
    return yaml.safe_load((ROOT / TINY_CONFIG).read_text())


# Where a run of the tiny configuration (or of a config made from it, which keeps its name) writes.
RUNS = f"results/{tiny_config()['name']}/runs"
TABLES = f"results/{tiny_config()['name']}/tables"


def write_config(workdir: Path, name: str, config: dict[str, Any]) -> str:
    """Write a config into the workflow copy; returns the name to give --configfile."""
    (workdir / name).write_text(yaml.safe_dump(config, sort_keys=False))
    return name


def snakemake_command(workdir: Path, *args: str) -> list[str]:
    """The command line of `snakemake()` (test_workflow), for runs started with Popen."""
    return [str(SNAKEMAKE), "--directory", str(workdir), "--snakefile", str(workdir / "Snakefile"), *args]


def snakemake_env() -> dict[str, str]:
    """The environment of `snakemake()` (no SLURM probe: test_workflow.LOCAL_ONLY)."""
    return {**os.environ, "MPLBACKEND": "Agg", **LOCAL_ONLY}


def tree(folder: Path) -> dict[str, tuple[str, int, str]]:
    """Every entry under a folder: relative path -> (kind, mtime in ns, sha256 of a file's bytes).

    Two equal trees mean that nothing was created, deleted, rewritten or even touched in between.
    """
    entries = {}
    for path in sorted(folder.rglob("*")):
        stat = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        entries[str(path.relative_to(folder))] = ("dir" if path.is_dir() else "file", stat.st_mtime_ns, digest)
    return entries


# --- running the tiny configuration's tables and comparing them (reproducibility, SLURM) ---------------

TABLE_RULES = ("table", "headline_table", "runs_table")
# Exit status of a run that `timeout` stopped: 124 (TERM), 137 or -9 (the KILL of `-k`, which hits the
# whole process group, `timeout` itself included).
TIMED_OUT = (124, 137, -9)


def run_tables(workdir: Path, *args: str, limit: int = 420, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess:
    """Build the tiny configuration's tables in `workdir`, killed after `limit` seconds.

    `timeout -k 10` rather than only subprocess's timeout: the SLURM executor plugin can ignore
    SIGTERM, and SIGKILL from `timeout` also reaches a Snakemake whose Python is stuck.
    """
    command = ["timeout", "-k", "10", str(limit), str(SNAKEMAKE), "--directory", str(workdir), "--snakefile",
               str(workdir / "Snakefile"), "--configfile", TINY_CONFIG, "--until", *TABLE_RULES, *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=workdir, timeout=limit + 30,
                          env={**(env or {**os.environ, **LOCAL_ONLY}), "MPLBACKEND": "Agg"})


def failure(result: subprocess.CompletedProcess, what: str) -> str:
    """Message for a failed run: the exit status (or that it timed out) and the ends of its output."""
    status = f"timed out (exit {result.returncode})" if result.returncode in TIMED_OUT else f"exit {result.returncode}"
    return f"{what}: {status}\n--- stdout ---\n{result.stdout[-3000:]}\n--- stderr ---\n{result.stderr[-6000:]}"


def tables_of(workdir: Path) -> dict[str, bytes]:
    """Every file under the tables folder (TABLES), by its path relative to that folder."""
    folder = workdir / TABLES
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def differing_columns(want: bytes, got: bytes) -> list[str]:
    """CSV columns whose values differ, when both files have the same header and rows; else []."""
    want_rows = list(csv.reader(io.StringIO(want.decode(errors="replace"))))
    got_rows = list(csv.reader(io.StringIO(got.decode(errors="replace"))))
    if not want_rows or len(want_rows) != len(got_rows) or want_rows[0] != got_rows[0]:
        return []
    return [column for i, column in enumerate(want_rows[0])
            if any(a[i:i + 1] != b[i:i + 1] for a, b in zip(want_rows[1:], got_rows[1:]))]


def table_differences(expected: Path, actual: Path, context: int = 5) -> list[str]:
    """Byte-for-byte comparison of two runs' tables; one readable entry per differing file.

    For a CSV that differs only in some values, the entry names the columns: a column such as a
    wall-clock time then stands out at once among the rows of the line diff.
    """
    want, got = tables_of(expected), tables_of(actual)
    problems = [f"only in {expected / TABLES}: {name}" for name in sorted(want.keys() - got.keys())]
    problems += [f"only in {actual / TABLES}: {name}" for name in sorted(got.keys() - want.keys())]
    for name in sorted(want.keys() & got.keys()):
        if want[name] != got[name]:
            columns = differing_columns(want[name], got[name]) if name.endswith(".csv") else []
            diff = difflib.unified_diff(want[name].decode(errors="replace").splitlines(),
                                        got[name].decode(errors="replace").splitlines(),
                                        f"{expected.name}/{name}", f"{actual.name}/{name}", lineterm="", n=0)
            lines = list(diff)
            if columns:
                lines.insert(0, f"{name}: values differ in column(s) {', '.join(columns)}")
            keep = 2 + 2 * context + bool(columns)
            problems.append("\n".join(lines[:keep]) + ("\n..." if len(lines) > keep else ""))
    if not want:
        problems.append(f"no tables at all under {expected / TABLES}")
    return problems
