"""The tiny configuration's tables are byte-identical with `--cores 1` and `--cores 2` (issue #5).

Parallel jobs must not change a single byte of results/test/tables: every number comes from seeded
simulations, and nothing that depends on scheduling (order of completion, wall-clock times, host
names) may reach a table.  tests/test_slurm.py reuses these helpers to compare a SLURM run with a
local one.

Snakemake runs from the environment of the tests, in a temporary copy of the workflow (as in
tests/test_workflow.py), always under `timeout -k`, so a hung run fails the test instead of hanging it.
Only the table rules and what they need are run (`--until`): the figures are drawn from the tables and
add minutes without adding anything to compare.
"""

from __future__ import annotations

import csv
import difflib
import io
import os
import subprocess
from pathlib import Path

import pytest

from workflow_helpers import LOCAL_ONLY, SNAKEMAKE, TINY_CONFIG, copy_workflow
from workflow_helpers import TABLES as TABLES_DIR

TABLES = Path(TABLES_DIR)
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


@pytest.mark.slow
def test_tables_do_not_depend_on_the_number_of_cores(tmp_path):
    runs = {}
    for cores in ("1", "2"):
        workdir = copy_workflow(tmp_path / f"cores{cores}")
        result = run_tables(workdir, "--cores", cores)
        assert result.returncode == 0, failure(result, f"--cores {cores}")
        runs[cores] = workdir
    differences = table_differences(runs["1"], runs["2"])
    assert not differences, "tables differ between --cores 1 and --cores 2:\n" + "\n".join(differences)
