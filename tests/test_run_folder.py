"""The --out folder of `spfl run`: one run at a time, nothing overwritten that no run of the spec wrote, and a
--log that is none of the run's inputs or outputs and whose write failures stop the run in one line."""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from spfl import cli
from spfl.configuration.settings import make_spec

# Independent expectations: a second run into a held folder fails at once and the first run's records are
# whole and of its own seed; a user's file is byte for byte what it was; a log that cannot be written is exit
# status 2 with one line, never exit 0.

TINY = {"num_devices": 4, "batch_size": 16, "rounds": 2, "eval_every": 1, "partition": "iid", "method": "ideal"}


pytestmark = pytest.mark.usefixtures("restore_logging")


@pytest.fixture
def spec(tmp_path) -> Path:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(TINY))
    return path


def run(capsys, *argv) -> tuple[int, str]:
    status = cli.main(["run", *map(str, argv)])
    return status, capsys.readouterr().err


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- class 4: one run at a time ----------------------------------------------------------------------------

def test_a_run_into_a_folder_another_run_holds_fails_at_once_in_one_line(tmp_path, spec, capsys):
    out = tmp_path / "out"
    out.mkdir()
    held = open(out / ".spfl-lock", "a+b")  # what a running `spfl run` holds (a separate open: flock conflicts)
    try:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        status, err = run(capsys, spec, "--out", out)
    finally:
        held.close()
    assert status == 2
    assert err.splitlines()[-1] == (f"spfl run: error: --out '{out}' is in use by another spfl run (it holds "
                                    f"'{out / '.spfl-lock'}'): wait for it to end, or choose another --out folder")
    assert sorted(p.name for p in out.rglob("*")) == [".spfl-lock"], "nothing written"
    assert run(capsys, spec, "--out", out)[0] == 0, "free again once the other run ends"


def test_two_runs_of_different_seeds_at_once_never_mix_their_records(tmp_path, spec):
    """Both started together: one runs, the other is refused (held folder, or another spec's records once the
    first is done); the folder holds one run, every record of the same seed and verified by its checksums."""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "spfl.cli", "run", str(spec), "--out", str(out)]
    runs = [subprocess.Popen([*command, "--set", f"seed={seed}", "--set", "rounds=20"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in runs]
    assert sorted(status for status, _ in results) == [0, 2], results
    (winner,) = [seed for seed, (status, _) in zip((1, 2), results) if status == 0]
    (message,) = [err for status, err in results if status == 2]
    assert len(message.strip().splitlines()[-1:]) == 1 and "Traceback" not in message
    assert ("is in use by another spfl run" in message) or ("holds records of another run spec" in message)
    assert json.loads((out / "ideal" / "spec.json").read_text())["seed"] == winner
    from spfl.records import verify_run

    assert json.loads((out / "run.json").read_text())["cell"] == make_spec(TINY, seed=winner, rounds=20).cell_hash
    verify_run(out, "ideal", make_spec(TINY, seed=winner, rounds=20).cell_hash, winner)


# -- class 5: files no run of the spec wrote ----------------------------------------------------------------

@pytest.mark.parametrize("name", ["devices.csv", "notes.txt", "ideal/metrics.csv", "spfl/summary.json",
                                  "cell.json", "sub/results.csv"])
def test_a_folder_holding_a_users_file_is_refused_and_the_file_kept(tmp_path, spec, capsys, name):
    out = tmp_path / "out"
    (out / name).parent.mkdir(parents=True)
    (out / name).write_bytes(b"device,mine\n0,1\n")
    status, err = run(capsys, spec, "--out", out)
    assert status == 2
    assert err == (f"spfl run: error: --out '{out}' holds '{out / name}', which no spfl run of this spec wrote: "
                   "choose a new or empty --out folder, or add --force to write into it anyway\n")
    assert files(out) == {name: b"device,mine\n0,1\n"}


def test_force_writes_into_a_folder_with_other_files(tmp_path, spec, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    assert run(capsys, spec, "--out", out, "--force")[0] == 0
    assert (out / "notes.txt").read_text() == "mine\n" and (out / "ideal" / "summary.json").is_file()


def test_force_never_mixes_two_specs(tmp_path, spec, capsys):
    out = tmp_path / "out"
    assert run(capsys, spec, "--out", out)[0] == 0
    status, err = run(capsys, spec, "--out", out, "--set", "seed=5", "--force")
    assert status == 2 and "holds records of another run spec" in err


def test_a_runs_own_outputs_are_reused_extended_and_rerun(tmp_path, spec, capsys):
    """Rerun, more methods, the spec file inside the folder (the pipeline's params.json), leftovers of a
    killed write and a set-aside checkpoint are the run's own."""
    out = tmp_path / "out"
    out.mkdir()
    inside = out / "params.json"
    inside.write_text(spec.read_text())
    assert run(capsys, inside, "--out", out)[0] == 0
    first = files(out)
    assert run(capsys, inside, "--out", out)[0] == 0
    assert {k: v for k, v in files(out).items() if not k.endswith("timing.json")} == {
        k: v for k, v in first.items() if not k.endswith("timing.json")}, "a rerun writes the same bytes"
    (out / "ideal" / ".metrics.csv.x1y2z3.tmp").write_text("torn")
    (out / "ideal" / "checkpoint.pt.damaged").write_bytes(b"\0")
    assert run(capsys, inside, "--out", out, "--methods", "digital")[0] == 0
    assert (out / "digital" / "summary.json").is_file()


def test_records_of_runs_older_than_run_json_are_the_runs_own(tmp_path, spec, capsys):
    out = tmp_path / "out"
    assert run(capsys, spec, "--out", out)[0] == 0
    (out / "run.json").unlink()  # as a folder written before runs claimed their folders
    assert run(capsys, spec, "--out", out, "--methods", "digital")[0] == 0


# -- class 6 and 12: --log ---------------------------------------------------------------------------------

@pytest.mark.parametrize("log, what", [
    ("spec.json", "is the run spec file"),
    ("out/devices.csv", "is an output of the run in --out 'out'"),
    ("out/ideal/metrics.csv", "is an output of the run in --out 'out'"),
    ("out/spfl/summary.json", "is an output of the run in --out 'out'"),
    ("out/run.json", "is an output of the run in --out 'out'"),
    ("data.pt", "is the run's prepared dataset (data_file)"),
])
def test_the_log_may_be_none_of_the_runs_inputs_or_outputs(tmp_path, spec, capsys, monkeypatch, log, what):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.pt").write_bytes(b"prepared")
    before = spec.read_bytes()
    status, err = run(capsys, "spec.json", "--out", "out", "--log", log, "--set", "data_file=data.pt")
    assert status == 2
    assert err == (f"spfl run: error: --log '{log}' {what}: allowed a file that is none of the run's inputs or "
                   "outputs\n")
    assert spec.read_bytes() == before and (tmp_path / "data.pt").read_bytes() == b"prepared"
    assert not (tmp_path / "out").exists()


def test_the_log_is_the_run_spec_by_another_path(tmp_path, spec, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.symlink("spec.json", "link.json")
    status, err = run(capsys, "spec.json", "--out", "out", "--log", "./sub/../link.json")
    assert status == 2 and "is the run spec file" in err


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (a device that is always full)")
def test_a_log_on_a_full_disk_stops_the_run_in_one_line(tmp_path, spec, capsys):
    status, err = run(capsys, spec, "--out", tmp_path / "out", "--log", "/dev/full")
    assert status == 2
    assert "Traceback" not in err and "--- Logging error ---" not in err
    assert err.splitlines()[-1] == ("spfl run: error: cannot write the log '/dev/full': No space left on device; "
                                    "free some space and run again")


def test_a_log_that_fails_mid_run_stops_it_in_one_line(tmp_path, spec, capsys, monkeypatch):
    """The disk fills up after some lines were written: the run stops there, exit 2, one line."""
    real_flush = logging.FileHandler.flush
    lines = {"n": 0}

    def flush(handler):
        if isinstance(handler, logging.FileHandler):
            lines["n"] += 1
            if lines["n"] > 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        real_flush(handler)

    monkeypatch.setattr(logging.FileHandler, "flush", flush)
    status, err = run(capsys, spec, "--out", tmp_path / "out", "--log", tmp_path / "run.log", "--set", "rounds=4")
    assert status == 2 and "Traceback" not in err
    assert err.splitlines()[-1] == (f"spfl run: error: cannot write the log '{tmp_path / 'run.log'}': No space left "
                                    "on device; free some space and run again")


def test_prepare_with_a_log_on_a_full_disk_is_one_line(tmp_path, capsys):
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    status = cli.main(["prepare", "digits", "--out", str(tmp_path / "d.pt"), "--log", "/dev/full"])
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err and err.splitlines()[-1].startswith(
        "spfl prepare: error: cannot write the log '/dev/full': No space left on device")


def test_prepare_refuses_a_log_that_is_its_output(tmp_path, capsys):
    out = tmp_path / "d.pt"
    status = cli.main(["prepare", "digits", "--out", str(out), "--log", str(tmp_path / "." / "d.pt")])
    assert status == 2 and not out.exists()
    assert capsys.readouterr().err == (f"spfl prepare: error: --log '{tmp_path / 'd.pt'}' is the prepared file "
                                       "(--out): allowed another file\n")


def test_a_file_system_without_locks_runs_with_a_warning(tmp_path, spec, capsys, monkeypatch):
    """NFS without a lock daemon answers ENOLCK: the run goes on, and says that it cannot detect a second run."""
    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    status, err = run(capsys, spec, "--out", tmp_path / "out")
    assert status == 0
    assert "its file system cannot lock files (No locks available)" in err
