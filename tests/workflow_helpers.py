"""Helpers of the tests that run the Snakemake pipeline in a temporary copy (resilience, divergence, bad input).

They build on tests/test_workflow.py (copy_workflow, snakemake, jobs_of), so every workflow test runs
Snakemake the same way: from the tests' environment, in a private copy of Snakefile, workflow/ and
config/, never touching the repository's results/ and figures/.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import yaml

from test_workflow import LOCAL_ONLY, ROOT, SNAKEMAKE, copy_workflow, jobs_of, snakemake

__all__ = ["LOCAL_ONLY", "ROOT", "RUNS", "SNAKEMAKE", "TABLES", "TINY_CONFIG", "copy_workflow", "jobs_of",
           "snakemake", "snakemake_command", "snakemake_env", "tiny_config", "tree", "write_config"]

TINY_CONFIG = "config/test.yaml"


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
