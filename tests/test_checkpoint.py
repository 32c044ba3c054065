"""Checkpoint and resume: a run killed with SIGKILL and started again gives the same bytes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

SPEC = {"num_devices": 20, "batch_size": 32, "rounds": 150, "eval_every": 10, "total_bandwidth_mhz": 1.0,
        "deadline_ms": 60.0, "learning_rate": 0.1, "compensation": "previous_update", "server_momentum": 0.5}


def spfl_run(spec_path, out, *extra, **popen):
    cmd = [sys.executable, "-m", "spfl.cli", "run", str(spec_path), "--out", str(out), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **popen)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["spfl", "digital_reuse"])
def test_sigkill_then_resume_is_byte_identical(tmp_path, method):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({**SPEC, "method": method, "checkpoint_every": 7}))
    assert spfl_run(spec, tmp_path / "whole").wait(timeout=600) == 0

    victim = spfl_run(spec, tmp_path / "killed")
    checkpoint = tmp_path / "killed" / method / "checkpoint.pt"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # let it get a few rounds past the checkpoint
    assert victim.poll() is None, "run finished before it could be killed; make it longer"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert checkpoint.exists() and not (tmp_path / "killed" / method / "summary.json").exists()

    assert spfl_run(spec, tmp_path / "killed").wait(timeout=600) == 0
    for name in ("metrics.csv", "allocation.csv", "solver_trace.csv", "spec.json"):
        assert (tmp_path / "whole" / method / name).read_bytes() == (tmp_path / "killed" / method / name).read_bytes()
    assert not checkpoint.exists(), "a finished run removes its checkpoint"


def test_checkpoint_of_another_spec_is_ignored(tmp_path):
    from spfl.simulation import RunState, Simulation, build_environment, save_checkpoint
    from spfl.spec import make_spec

    spec = make_spec(num_devices=4, batch_size=8, rounds=4, eval_every=2, method="ideal", checkpoint_every=1)
    env = build_environment(spec)
    other = Simulation(build_environment(make_spec(spec.to_dict(), seed=9)), "ideal")
    stale_state: RunState = other.train()
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, other.spec.run_hash, stale_state)
    resumed = Simulation(env, "ideal").train(path)
    fresh = Simulation(env, "ideal").train()
    assert resumed.metric_rows == fresh.metric_rows
