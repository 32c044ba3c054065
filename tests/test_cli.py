"""The command line: one run end to end, and bad input stopped before any work."""

import json
import subprocess
import sys

import pytest

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
    spec = write_spec(tmp_path, total_bandwidth_mhz=2.0)
    assert main(["calibrate", str(spec), "--target", "0.4"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["uniform_packet_error"]["modulus"] == pytest.approx(0.4, abs=2e-3)
    assert result["deadline_ms"] > 0
