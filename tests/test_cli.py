"""The command line: one run end to end, and bad input stopped before any work."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core_helpers import cell_averaged_outage, dbm_to_watt
from spfl.cli import main

TINY = {"num_devices": 4, "batch_size": 16, "rounds": 3, "eval_every": 3, "partition": "iid"}


def write_spec(tmp_path, **settings):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({**TINY, **settings}))
    return path


def test_run_writes_every_record(tmp_path, capsys):
    spec = write_spec(tmp_path, method="digital")
    out = tmp_path / "out"
    argv = ["run", str(spec), "--methods", "ideal,digital", "--out", str(out), "--log", str(tmp_path / "run.log")]
    assert main(argv) == 0
    for method in ("ideal", "digital"):
        for name in ("spec.json", "metrics.csv", "allocation.csv", "solver_trace.csv", "summary.json"):
            assert (out / method / name).is_file(), name
        summary = json.loads((out / method / "summary.json").read_text())
        assert summary["status"] == "ok" and summary["rounds_completed"] == 3
        assert 0.0 <= summary["final_accuracy"] <= 1.0
        header = (out / method / "metrics.csv").read_text().splitlines()[0]
        assert header.startswith("round,train_loss,test_loss,test_accuracy,sign_error_rate")
    assert (out / "partition.csv").is_file() and (out / "devices.csv").is_file()
    log = (tmp_path / "run.log").read_text()
    assert "digital round 3/3: test accuracy" in log and "packet error" in log


@pytest.mark.parametrize("settings, argv_extra, fragment", [
    ({"method": "fedavg"}, [], "'method' = 'fedavg'"),
    ({"total_bandwidth_mhz": -2}, [], "'total_bandwidth_mhz' = -2"),
    ({"num_devices": 0}, [], "'num_devices' = 0"),
    ({"dirichlet_beta": 0}, [], "'dirichlet_beta' = 0"),
    ({"rounds": 0}, [], "'rounds' = 0"),
    ({"bandwidth": 5}, [], "unknown run setting 'bandwidth'"),
    ({}, ["--methods", "spfl,nope"], "'nope'"),
    ({}, ["--methods", "spfl,spfl"], "lists a method twice"),
    ({}, ["--set", "seed=-1"], "'seed' = -1"),
    ({"num_devices": 500, "partition": "dirichlet", "min_samples_per_device": 10}, [], "'num_devices' = 500"),
    ({"num_devices": 140, "partition": "dirichlet", "min_samples_per_device": 10, "dirichlet_beta": 0.01}, [],
     "min_size"),
    ({"dataset": "cifar10", "data_dir": "EMPTY"}, [], "cifar-10"),
    ({"data_file": "MISSING.pt"}, [], "MISSING.pt"),
])
def test_bad_input_one_line_error_and_no_output(tmp_path, capsys, settings, argv_extra, fragment):
    settings = {k: (str(tmp_path / v) if isinstance(v, str) and v.isupper() else v) for k, v in settings.items()}
    spec = write_spec(tmp_path, **settings)
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out), *argv_extra]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err, err
    assert len(err.splitlines()) == 1, err
    assert not out.exists()


def test_corrupt_prepared_data_file_is_named(tmp_path, capsys):
    bad = tmp_path / "digits.pt"
    bad.write_bytes(b"not a torch file")
    spec = write_spec(tmp_path, data_file=str(bad))
    assert main(["run", str(spec), "--out", str(tmp_path / "out")]) == 2
    assert "digits.pt" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_prepare_and_run_from_prepared_file(tmp_path):
    data = tmp_path / "digits.pt"
    assert main(["prepare", "digits", "--out", str(data)]) == 0
    spec = write_spec(tmp_path, data_file=str(data), method="ideal")
    assert main(["run", str(spec), "--out", str(tmp_path / "a")]) == 0
    direct = write_spec(tmp_path, method="ideal")
    assert main(["run", str(direct), "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "a/ideal/metrics.csv").read_bytes() == (tmp_path / "b/ideal/metrics.csv").read_bytes()


def test_console_script_and_schema(tmp_path):
    result = subprocess.run([sys.executable, "-m", "spfl.cli", "schema"], capture_output=True, text=True, check=True)
    schema = json.loads(result.stdout)
    assert "method" in schema["properties"]


def test_calibrate_finds_deadline_for_target_error(tmp_path, capsys):
    """The deadline it prints gives the target error by the closed form averaged over the cell (not by
    calibrate's own sampling), and a deadline 10 % shorter gives clearly more."""
    spec = write_spec(tmp_path, total_bandwidth_mhz=2.0)
    assert main(["calibrate", str(spec), "--target", "0.4"]) == 0
    result = json.loads(capsys.readouterr().out)
    d = result["num_params"]
    assert d == 4810  # the digits MLP

    def error(deadline_ms):  # the modulus packet: 31 d bits on its proportional share 31/32 of the deadline
        return cell_averaged_outage(deadline_ms / 1000, 31 * d, 31 / 32, 2e6 / TINY["num_devices"],
                                    dbm_to_watt(23.0), dbm_to_watt(-174.0), 50.0, 500.0)

    assert error(result["deadline_ms"]) == pytest.approx(0.4, abs=0.012)
    assert error(0.9 * result["deadline_ms"]) > 0.4 + 0.03


# --- thread-independent numbers ------------------------------------------------------------------

def spfl_run(*argv, **kwargs):
    return subprocess.run([sys.executable, "-m", "spfl.cli", "run", *map(str, argv)], capture_output=True,
                          text=True, **kwargs)


def record_bytes(out):
    """Every record file's bytes but timing.json, the one record that measures the machine rather than
    the run."""
    files = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        if path.name == "timing.json":
            assert json.loads(path.read_text())["wall_time_s"] >= 0
        else:
            files[str(path.relative_to(out))] = path.read_bytes()
    return files


def test_records_do_not_depend_on_the_cores_granted(tmp_path):
    """`--threads` is what Snakemake or SLURM grants (it varies with --cores); the numbers must not.
    Before the thread count was pinned to the spec's `threads` setting, --threads 1 and 2 gave different
    bytes for most records (torch splits reductions by thread count)."""
    spec = write_spec(tmp_path, num_devices=10, batch_size=32, rounds=6, eval_every=3, total_bandwidth_mhz=1.0)
    outs = {}
    for threads in (1, 2):
        outs[threads] = tmp_path / f"threads{threads}"
        result = spfl_run(spec, "--methods", "spfl,digital,ideal", "--threads", threads, "--out", outs[threads],
                          timeout=600)
        assert result.returncode == 0, result.stderr
    one, two = record_bytes(outs[1]), record_bytes(outs[2])
    # run.json and the lock file, devices and partition; per method 5 records and checksums.json
    assert len(one) == 4 + 3 * 6 and one == two
    recorded = json.loads((outs[1] / "spfl" / "spec.json").read_text())
    assert recorded["threads"] == 1, "the thread count the numbers were computed with is recorded"


def test_thread_count_is_part_of_the_run_identity():
    from spfl.configuration.settings import make_spec

    assert make_spec(threads=1).run_hash != make_spec(threads=4).run_hash


def test_more_threads_than_granted_is_said_once(tmp_path, capsys):
    spec = write_spec(tmp_path, method="ideal", threads=2)
    assert main(["run", str(spec), "--threads", "1", "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "run setting 'threads' = 2 is more than --threads 1 (the cores granted): the numbers stay" in err


# --- what the command line says -------------------------------------------------------------------

def test_accuracy_is_printed_in_percent_like_the_tables(tmp_path, capsys):
    spec = write_spec(tmp_path, method="ideal")
    assert main(["run", str(spec), "--out", str(tmp_path / "out")]) == 0
    line = capsys.readouterr().out.strip()
    accuracy = json.loads((tmp_path / "out/ideal/summary.json").read_text())["final_accuracy"]
    assert line == f"ideal: status ok, final accuracy {100 * accuracy:.2f} % -> {tmp_path / 'out/ideal'}"


def test_run_help_lists_every_method(capsys):
    from spfl.configuration.methods import METHOD

    with pytest.raises(SystemExit) as done:
        main(["run", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for name, method in METHOD.items():
        assert f"  {name}" in text and method.summary in text, name


# --- --out: reuse, another spec, read-only, full disk ---------------------------------------------

def test_out_folder_reused_by_the_same_spec_but_not_by_another(tmp_path, capsys):
    spec = write_spec(tmp_path, method="ideal")
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out)]) == 0
    assert main(["run", str(spec), "--methods", "digital", "--out", str(out)]) == 0, "same spec, more methods"
    before = sorted((p.name, p.stat().st_mtime_ns) for p in out.rglob("*"))
    capsys.readouterr()
    assert main(["run", str(spec), "--set", "seed=3", "--methods", "spfl", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"spfl run: error: --out '{out}' holds records of another run spec ('{out}/digital/spec.json' "
                   f"differs in seed): choose a new --out folder, or delete '{out}' to replace them")
    assert sorted((p.name, p.stat().st_mtime_ns) for p in out.rglob("*")) == before


def test_read_only_out_is_one_line(tmp_path, capsys, monkeypatch):
    """A read-only --out folder is refused before any work, in one line, with nothing written.  Root may
    write anywhere, so under root the folder's owner is taken to be someone else (os.access says no)."""
    import os

    spec = write_spec(tmp_path, method="ideal")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.geteuid() == 0:
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode, **kw: (
            not (Path(path) == locked and mode & os.W_OK) and real_access(path, mode, **kw)))
    try:
        assert main(["run", str(spec), "--out", str(locked / "out")]) == 2
        assert capsys.readouterr().err.strip() == (
            f"spfl run: error: --out '{locked / 'out'}' cannot be written ('{locked}' is read-only for this "
            f"user): choose another --out folder")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def test_full_disk_during_a_run_is_one_line_and_leaves_no_temporary_file(tmp_path, capsys, monkeypatch):
    import errno
    import os

    spec = write_spec(tmp_path, method="ideal")
    out = tmp_path / "out"

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    assert main(["run", str(spec), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    # the first file a run writes is run.json, its claim on the folder (spfl.simulator.run_folder), beside its lock file
    assert err.splitlines()[-1] == (f"spfl run: error: cannot write '{out / 'run.json'}': No space left on "
                                    f"device; free some space and run again")
    assert [p for p in out.rglob("*") if p.is_file()] == [out / ".spfl-lock"], "no torn or temporary file"
