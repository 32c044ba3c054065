"""Run records are checked before a table reads them (issue #22, classes 3 and 11).

A run writes checksums.json beside its records: its identity (cell, seed, method, run hash) and the sha256
of every record but timing.json.  The table rules verify each run against it and against the cell, seed
and method the table expects, and take the records of finished cells as inputs, so that

* a hand-edited metrics.csv value, a damaged or emptied record, or a folder copied from another cell
  fails the table job in one line naming the file, instead of moving a mean or counting a run under the
  wrong bandwidth and seed;
* `snakemake -n` after a record changed lists the table jobs again (it said "nothing to be done").

Reading a damaged CSV record (a word in a number column, an empty file) is one RecordError naming the file,
never a pandas traceback.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from spfl.configuration.settings import make_spec
from spfl.reporting.tables import curves, reading
from synthetic_records import config as synthetic_config
from synthetic_records import write_cell
from workflow_helpers import RUNS, copy_workflow, jobs_of, snakemake, tiny_config, write_config

RUN_SETTINGS = {"num_devices": 4, "batch_size": 16, "rounds": 3, "eval_every": 1, "partition": "iid"}
METHODS = ("digital", "spfl")


def spfl_run(spec: Path, out: Path, *extra: str) -> None:
    result = subprocess.run([sys.executable, "-m", "spfl.cli", "run", str(spec), "--methods", ",".join(METHODS),
                             "--out", str(out), *extra], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def cells(tmp_path_factory) -> dict[str, Path]:
    """Three real cells: the reference, one at another bandwidth and one of another seed."""
    root = tmp_path_factory.mktemp("cells")
    spec = root / "spec.json"
    spec.write_text(json.dumps(RUN_SETTINGS))
    made = {"reference": root / "reference", "bandwidth": root / "bandwidth", "seed": root / "seed"}
    spfl_run(spec, made["reference"])
    spfl_run(spec, made["bandwidth"], "--set", "total_bandwidth_mhz=2")
    spfl_run(spec, made["seed"], "--set", "seed=1")
    return made


@pytest.fixture
def cell(cells, tmp_path) -> Path:
    copy = tmp_path / "cell"
    shutil.copytree(cells["reference"], copy)
    return copy


def cell_hash(**settings) -> str:
    """The cell of RUN_SETTINGS with ``settings`` (plan.cell_hash: the science settings but the method)."""
    from spfl.configuration.plan import cell_hash as of_params

    return of_params(make_spec(RUN_SETTINGS, **settings).to_dict())


CELL = cell_hash()


def verify_run(*args) -> None:
    from spfl.records import verify_run

    verify_run(*args)


def refused(folder: Path, method: str = "spfl", cell: str = CELL, seed: int = 0) -> str:
    from spfl.records import RecordError

    with pytest.raises(RecordError) as caught:
        verify_run(folder, method, cell, seed)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_the_records_of_a_run_verify(cell):
    for method in METHODS:
        verify_run(cell, method, CELL, 0)
    saved = json.loads((cell / "spfl" / "checksums.json").read_text())
    assert {k: saved[k] for k in ("cell", "seed", "method", "run_hash")} == {
        "cell": CELL, "seed": 0, "method": "spfl", "run_hash": make_spec(RUN_SETTINGS, method="spfl").run_hash}


def test_a_hand_edited_metric_is_named(cell):
    path = cell / "spfl" / "metrics.csv"
    lines = path.read_text().splitlines()
    fields = lines[-1].split(",")
    fields[3] = "0.522"  # the last round's test accuracy
    path.write_text("\n".join([*lines[:-1], ",".join(fields)]) + "\n")
    assert refused(cell) == (f"run record '{path}' does not match its checksum in '{cell / 'spfl' / 'checksums.json'}' "
                             "(changed or damaged after its run): rerun its cell (delete the cell's cell.json)")


@pytest.mark.parametrize("name", ["spfl/summary.json", "spfl/spec.json", "spfl/allocation.csv", "spfl/solver_trace.csv",
                                  "devices.csv", "partition.csv"])
def test_any_changed_record_is_named(cell, name):
    path = cell / name
    path.write_bytes(path.read_bytes().replace(b"0", b"1", 1))
    assert refused(cell).startswith(f"run record '{path}' does not match its checksum")


@pytest.mark.parametrize("content", [b"", b"round,train_loss\n", b"\x00\xff" * 50])
def test_an_emptied_or_damaged_record_is_named(cell, content):
    (cell / "spfl" / "metrics.csv").write_bytes(content)
    assert refused(cell).startswith(f"run record '{cell / 'spfl' / 'metrics.csv'}' does not match its checksum")


def test_a_missing_record_or_checksum_file_is_named(cell):
    (cell / "digital" / "solver_trace.csv").unlink()
    assert refused(cell, "digital") == (f"run record '{cell / 'digital' / 'solver_trace.csv'}' is missing: rerun its "
                                        "cell (delete the cell's cell.json)")
    (cell / "spfl" / "checksums.json").unlink()
    assert refused(cell).startswith(f"run record '{cell / 'spfl' / 'checksums.json'}' is missing")


@pytest.mark.parametrize("source, identity", [
    ("bandwidth", "cell " + cell_hash(total_bandwidth_mhz=2) + ", seed 0, method spfl"),
    ("seed", "cell " + cell_hash(seed=1) + ", seed 1, method spfl"),
])
def test_a_folder_copied_from_another_cell_is_named(cells, cell, source, identity):
    """Another bandwidth's or seed's run copied over this cell's: its records are whole and consistent, and
    would be counted under this cell's bandwidth and seed."""
    shutil.rmtree(cell / "spfl")
    shutil.copytree(cells[source] / "spfl", cell / "spfl")
    assert refused(cell) == (f"run records in '{cell / 'spfl'}' are of another run ({identity} in "
                             f"'{cell / 'spfl' / 'checksums.json'}', expected cell {CELL}, seed 0, method spfl): "
                             "copied from another cell? rerun its cell (delete the cell's cell.json)")


def test_a_method_folder_renamed_is_named(cell):
    shutil.rmtree(cell / "digital")
    shutil.copytree(cell / "spfl", cell / "digital")
    assert "are of another run (cell " + CELL + ", seed 0, method spfl" in refused(cell, "digital")


def test_the_expected_cell_is_checked_not_only_the_folder(cell):
    other = cell_hash(total_bandwidth_mhz=2)
    assert f"expected cell {other}, seed 0" in refused(cell, cell=other)
    assert "expected cell " + CELL + ", seed 3" in refused(cell, seed=3)


# -- class 11: a damaged CSV record read by the tables -------------------------------------------------------

@pytest.fixture
def synthetic(tmp_path):
    from spfl.configuration import load_plan

    plan = load_plan(synthetic_config())
    runs = [r for r in plan.figure_runs("accuracy_vs_round")]
    cells = {}
    for run in runs:
        if run.cell not in cells:
            cells[run.cell] = tmp_path / run.cell
            write_cell(cells[run.cell], plan.cells[run.cell], plan.cells[run.cell].methods)
    records = [{**run.record(), "dir": str(cells[run.cell])} for run in runs]
    return records, plan.figures["accuracy_vs_round"]


def with_field(text: str, line: int, column: int, value: str) -> str:
    """The CSV text with one field (line 1 is the header, columns from 0) replaced."""
    lines = text.splitlines()
    fields = lines[line - 1].split(",")
    fields[column] = value
    lines[line - 1] = ",".join(fields)
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("damage, message", [
    (lambda text: with_field(text, 8, 0, "6x"), "line 8, column 'round' holds '6x': allowed a number"),
    (lambda text: with_field(text, 5, 3, "n/a"), "line 5, column 'test_accuracy' holds 'n/a': allowed a number"),
    (lambda text: "", "is empty"),
    (lambda text: "round,train_loss\n0,1\n", "lacks column 'test_loss'"),
])
def test_a_damaged_metrics_file_fails_the_table_naming_the_file(synthetic, damage, message):
    records, options = synthetic
    path = Path(records[0]["dir"]) / records[0]["method"] / "metrics.csv"
    path.write_text(damage(path.read_text()))
    with pytest.raises(reading.RecordError) as caught:
        curves.table_rounds(records, options)
    assert str(caught.value).startswith(f"run record '{path}'") and message in str(caught.value), str(caught.value)


def test_a_binary_metrics_file_fails_the_table_naming_the_file(synthetic):
    records, options = synthetic
    path = Path(records[0]["dir"]) / records[0]["method"] / "metrics.csv"
    path.write_bytes(b"\xff\xfe\x00garbage" * 10)
    with pytest.raises(reading.RecordError) as caught:
        curves.table_rounds(records, options)
    assert str(caught.value).startswith(f"run record '{path}'")


def test_a_summary_that_is_not_an_object_fails_the_table_naming_the_file(synthetic):
    records, options = synthetic
    path = Path(records[0]["dir"]) / records[0]["method"] / "summary.json"
    path.write_text("[1, 2]\n")
    with pytest.raises(reading.RecordError, match="holds list, not a JSON object"):
        curves.table_final(records, options)


# -- the pipeline: changed records rerun the tables, which fail in one line ---------------------------------

def small_config() -> dict:
    config = tiny_config()
    config["seeds"] = [0]
    config["experiments"] = {"bandwidth": {"grid": {"total_bandwidth_mhz": [0.5, 1], "method": list(METHODS)}}}
    config["figures"] = {"accuracy_vs_bandwidth": {"experiment": "bandwidth"}}
    config.pop("headline")
    config.pop("confirmation", None)  # one seed, two cells: one per bandwidth
    return config


TABLES = ("--until", "table", "runs_table")


def planned(dry_run) -> dict[str, int]:
    """The jobs of a dry run, by rule ({} when there is nothing to do)."""
    assert dry_run.returncode == 0, dry_run.stderr[-3000:]
    return jobs_of(dry_run.stdout) if "Job stats:" in dry_run.stdout else {}


@pytest.mark.slow
def test_the_pipeline_tables_rerun_and_fail_on_a_changed_record(tmp_path):
    from spfl.configuration.plan import load_plan

    workdir = copy_workflow(tmp_path / "wf")
    config = small_config()
    name = write_config(workdir, "small.yaml", config)
    args = ("--cores", "1", "--configfile", name, *TABLES)
    first = snakemake(workdir, *args, timeout=600)
    assert first.returncode == 0, first.stderr[-4000:]
    assert planned(snakemake(workdir, "-n", *args)) == {}

    plan = load_plan(config)
    low, high = sorted(plan.cells, key=lambda c: plan.cells[c].params["total_bandwidth_mhz"])
    metrics = workdir / RUNS / low / "spfl" / "metrics.csv"
    original = metrics.read_bytes()
    lines = original.decode().splitlines()
    fields = lines[-1].split(",")
    fields[3] = "0.522"
    metrics.write_text("\n".join([*lines[:-1], ",".join(fields)]) + "\n")

    dry = snakemake(workdir, "-n", *args)
    assert planned(dry) == {"table": 1, "runs_table": 1}, dry.stdout  # Snakemake sees the change
    failed = snakemake(workdir, *args, "--keep-going", timeout=300)
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert "Traceback" not in output, output[-4000:]
    assert (f"error: run record '{RUNS}/{low}/spfl/metrics.csv' does not match its checksum in "
            f"'{RUNS}/{low}/spfl/checksums.json'") in output, output[-4000:]

    metrics.write_bytes(original)  # the record as its run wrote it: the tables build again
    again = snakemake(workdir, *args, timeout=300)
    assert again.returncode == 0, again.stderr[-4000:]

    (workdir / RUNS / low / "spfl").rename(workdir / "own")  # another bandwidth's run copied into this cell
    shutil.copytree(workdir / RUNS / high / "spfl", workdir / RUNS / low / "spfl", copy_function=shutil.copy)  # cp
    copied = snakemake(workdir, *args, "--keep-going", timeout=300)
    output = copied.stdout + copied.stderr
    assert copied.returncode != 0 and "Traceback" not in output, output[-4000:]
    assert f"error: run records in '{RUNS}/{low}/spfl' are of another run (cell {high}, seed 0" in output

    shutil.rmtree(workdir / RUNS / low / "spfl")
    (workdir / "own").rename(workdir / RUNS / low / "spfl")
    (workdir / RUNS / low / "digital" / "metrics.csv").write_text("")  # an emptied record
    emptied = snakemake(workdir, *args, "--keep-going", timeout=300)
    output = emptied.stdout + emptied.stderr
    assert emptied.returncode != 0 and "Traceback" not in output, output[-4000:]
    assert f"error: run record '{RUNS}/{low}/digital/metrics.csv' does not match its checksum" in output
