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

import pytest

from workflow_helpers import (
    copy_workflow,
    failure,
    run_tables,
    table_differences,
)


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
