"""A run resumes from its checkpoint: the weights, the rules' state, the momentum and the records so far come
back, and the resumed run ends with the records of the run that was never interrupted."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from core_helpers import Recorder, method_files, round_view
from spfl import records
from spfl.configuration.settings import make_spec
from spfl.simulator import checkpoint as checkpoints
from spfl.simulator.lifecycle import Checkpoints
from spfl.simulator.simulation import Simulation, build_environment, run_cell

TINY = dict(num_devices=3, batch_size=8, rounds=3, eval_every=1, learning_rate=0.1, smoothness=5.0)
IID_TINY = dict(num_devices=3, batch_size=8, rounds=2, eval_every=2, learning_rate=0.1, partition="iid")
# Scarce enough that something is allocated (allocation rows, solver traces) and packets are lost.
SCARCE = dict(num_devices=3, batch_size=8, rounds=4, eval_every=2, learning_rate=0.1, partition="iid",
              total_bandwidth_mhz=0.5, deadline_ms=60.0)
# Scarce enough that packets are lost and the allocation matters; two local steps and server momentum, so
# every piece of per-method state (aggregator, momentum, random streams) is exercised; checkpoints on.
LOCKSTEP = dict(num_devices=5, batch_size=16, rounds=6, eval_every=3, learning_rate=0.1, partition="iid",
                local_steps=2, server_momentum=0.5, total_bandwidth_mhz=0.5, deadline_ms=60.0, checkpoint_every=2)


@pytest.fixture(scope="module")
def env():
    return build_environment(make_spec(SCARCE))


# --- the state a checkpoint restores -------------------------------------------------------------------

def steps_counted(monkeypatch):
    calls = []
    original = Simulation.launch_round  # every round starts there

    def counting(self, state):
        calls.append(state.round)
        return original(self, state)

    monkeypatch.setattr(Simulation, "launch_round", counting)
    return calls


def resume_altered(tmp_path, monkeypatch, spec, method, every, alter_saved, alter_live):
    """Run to a checkpoint, alter its saved state, resume from it; and, independently, run the same
    rounds in one piece with the same alteration applied to the live state at the checkpoint's round.
    Returns (resumed, expected, untouched) final states and the rounds computed after resuming."""
    env = build_environment(spec)
    path = tmp_path / "checkpoint.pt"
    Simulation(env, method).train(path)  # leaves the checkpoint of the last multiple of `every`
    payload = torch.load(path, weights_only=False)
    assert payload["state"]["round"] == every
    alter_saved(payload["state"])
    checkpoints.save(path, payload["run_hash"], payload["state"])

    calls = steps_counted(monkeypatch)
    resumed = Simulation(env, method).train(path)
    resumed_rounds = list(calls)
    monkeypatch.undo()

    untouched = Simulation(env, method).train()
    sim = Simulation(env, method)
    expected = sim.initial_state()
    expected.metric_rows.append(untouched.metric_rows[0])  # the evaluation before round 1 (train() adds it)
    bookkeeping = sim.callbacks()
    for _ in range(every):
        sim.advance(expected, bookkeeping)
    alter_live(expected)
    while expected.round < spec.rounds:
        sim.advance(expected, bookkeeping)
    return resumed, expected, untouched, resumed_rounds


def assert_same_run(a, b):
    assert torch.equal(a.weights, b.weights)
    assert a.metric_rows == b.metric_rows


def test_resume_continues_from_the_saved_weights(tmp_path, monkeypatch):
    spec = make_spec(TINY, rounds=4, checkpoint_every=2, method="ideal")
    shift = 0.01

    def saved(state):
        state["weights"] = state["weights"] + shift
        state["metric_rows"][1]["train_loss"] = 123.0  # the records so far come from the checkpoint too

    def live(state):
        state.weights = state.weights + shift
        state.metric_rows[1]["train_loss"] = 123.0

    resumed, expected, untouched, rounds = resume_altered(tmp_path, monkeypatch, spec, "ideal", 2, saved, live)
    assert rounds == [2, 3], "resuming at round 2 computes rounds 3 and 4 only"
    assert_same_run(resumed, expected)
    assert not torch.equal(resumed.weights, untouched.weights)


def test_resume_of_digital_reuse_restores_the_stale_gradients(tmp_path, monkeypatch):
    """At 0.6 MHz devices 0, 1 and 3 have delivered by round 3 and some are lost in rounds 4-6, so their
    stale gradients enter the aggregate after the resume; halving the saved ones changes the run."""
    spec = make_spec(TINY, num_devices=4, rounds=6, checkpoint_every=3, total_bandwidth_mhz=0.6,
                     deadline_ms=100.0, partition="iid")
    env = build_environment(spec)
    state = Simulation(env, "digital_reuse").train()
    received = [r["devices_sign_received"] for r in state.metric_rows[4:]]
    assert min(received) < int(state.aggregator.has_stale.sum()), "no stale gradient is reused after round 3"
    assert 0 < sum(received)

    def saved(s):
        s["aggregator"]["stale"] = s["aggregator"]["stale"] / 2

    def live(s):
        s.aggregator.stale = s.aggregator.stale / 2

    resumed, expected, untouched, rounds = resume_altered(tmp_path, monkeypatch, spec, "digital_reuse", 3, saved, live)
    assert rounds == [3, 4, 5]
    assert_same_run(resumed, expected)
    assert not torch.equal(resumed.weights, untouched.weights)


@pytest.mark.parametrize("compensation, key", [("received_mean", "modulus"), ("previous_update", "previous_update")])
def test_resume_restores_the_compensatory_modulus(tmp_path, monkeypatch, compensation, key):
    """SP-FL's compensatory modulus (c, or the previous update) comes back from the checkpoint: at 0.8 MHz
    with the sign packet on half the deadline, round 4 delivers signs only (no fresh modulus), so scaling
    the saved c by 10 changes the run exactly as doing so live does."""
    spec = make_spec(TINY, num_devices=4, rounds=5, checkpoint_every=3, total_bandwidth_mhz=0.8,
                     deadline_ms=100.0, slot_share=0.5, compensation=compensation, partition="iid")

    def saved(s):
        assert s["aggregator"][key] is not None
        s["aggregator"][key] = s["aggregator"][key] * 10

    def live(s):
        setattr(s.aggregator, key, getattr(s.aggregator, key) * 10)

    rows = Simulation(build_environment(spec), "spfl_uniform").train().metric_rows
    assert rows[4]["devices_sign_received"] > 0 == rows[4]["devices_both_received"], rows[4]
    resumed, expected, untouched, rounds = resume_altered(tmp_path, monkeypatch, spec, "spfl_uniform", 3, saved,
                                                          live)
    assert rounds == [3, 4]
    assert_same_run(resumed, expected)
    assert not torch.equal(resumed.weights, untouched.weights)


def test_resume_restores_the_server_momentum(tmp_path, monkeypatch):
    spec = make_spec(TINY, rounds=4, checkpoint_every=2, server_momentum=0.9)

    def saved(s):
        s["momentum"] = s["momentum"] * -1

    def live(s):
        s.momentum = s.momentum * -1

    resumed, expected, untouched, _ = resume_altered(tmp_path, monkeypatch, spec, "ideal", 2, saved, live)
    assert_same_run(resumed, expected)
    assert not torch.equal(resumed.weights, untouched.weights)


# --- which checkpoints are written and which are used --------------------------------------------------

def test_checkpoints_are_written_at_every_multiple_from_round_one_on(tmp_path, monkeypatch):
    """With every = 1 each round but the last is saved, round 1 included; the initial model (round 0)
    never is (nothing to resume)."""
    saved = []
    monkeypatch.setattr("spfl.simulator.checkpoint.save", lambda path, run_hash, state: saved.append(state["round"]))
    hook = Checkpoints(tmp_path / "checkpoint.pt", every=1)
    views = [round_view(r, snapshot=lambda r=r: {"round": r}, rounds=3) for r in range(4)]
    hook.begin(views[0])
    for view in views[1:]:
        hook.after_round(view)
    assert saved == [1, 2]


def test_checkpoint_of_another_spec_is_ignored(tmp_path):
    from spfl.configuration.settings import make_spec
    from spfl.simulator.simulation import RunState, Simulation, build_environment

    spec = make_spec(num_devices=4, batch_size=8, rounds=4, eval_every=2, method="ideal", checkpoint_every=1)
    env = build_environment(spec)
    other = Simulation(build_environment(make_spec(spec.to_dict(), seed=9)), "ideal")
    stale_state: RunState = other.train()
    path = tmp_path / "checkpoint.pt"
    checkpoints.save(path, other.spec.run_hash, stale_state.to_checkpoint())
    resumed = Simulation(env, "ideal").train(path)
    fresh = Simulation(env, "ideal").train()
    assert resumed.metric_rows == fresh.metric_rows


def test_begin_logs_the_method_when_resuming(tmp_path, caplog):
    from spfl.simulator import checkpoint as checkpoints

    sim = Simulation(build_environment(make_spec(IID_TINY, rounds=3)), "digital")
    state = sim.initial_state()
    sim.step(state)
    path = tmp_path / "checkpoint.pt"
    checkpoints.save(path, sim.spec.run_hash, state.to_checkpoint())
    with caplog.at_level(logging.INFO, logger="spfl"):
        resumed = sim.begin(path, [])
    assert resumed.round == 1 and torch.equal(resumed.weights, state.weights)
    assert any(r.getMessage().startswith("digital: resumed from checkpoint") for r in caplog.records)


def test_a_resumed_run_does_not_begin_again_and_ends_with_the_uninterrupted_records(env, tmp_path):
    path = tmp_path / records.CHECKPOINT
    sim = Simulation(env, "spfl")
    callbacks = sim.callbacks() + [Checkpoints(path, 2)]
    state = sim.begin(None, callbacks)
    for _ in range(2):
        sim.advance(state, callbacks)
    recorder = Recorder()
    resumed = sim.train(path, callbacks=sim.callbacks() + [recorder])
    assert [call[:2] for call in recorder.calls] == [("after_round", 3), ("after_round", 4), ("end", 4)]
    whole = Simulation(env, "spfl").train()
    assert resumed.metric_rows == whole.metric_rows and resumed.allocation_rows == whole.allocation_rows


def test_lockstep_resumes_each_method_from_its_own_checkpoint(tmp_path):
    """A method with a matching checkpoint continues from it (its saved rows are kept, here marked),
    while the others start fresh; the resumed run ends with the uninterrupted run's weights."""
    from spfl.simulator import checkpoint as checkpoints
    from spfl.simulator.lifecycle import Checkpoints

    spec = make_spec(LOCKSTEP)
    run_cell(spec, ["spfl", "digital"], tmp_path / "whole", overlap=True)
    env = build_environment(spec)
    sim = Simulation(env, "spfl")
    saved = tmp_path / "resumed" / "spfl" / "checkpoint.pt"
    callbacks = sim.callbacks() + [Checkpoints(saved, 2)]
    state = sim.begin(None, callbacks)
    for _ in range(2):
        sim.advance(state, callbacks)
    checkpoint = state.to_checkpoint()
    checkpoint["metric_rows"][1]["train_loss"] = 123.0  # a mark only the checkpoint carries
    checkpoints.save(saved, spec.with_method("spfl").run_hash, checkpoint)
    run_cell(spec, ["spfl", "digital"], tmp_path / "resumed", overlap=True)
    whole, resumed = method_files(tmp_path / "whole"), method_files(tmp_path / "resumed")
    assert resumed["digital/metrics.csv"] == whole["digital/metrics.csv"]
    rows = resumed["spfl/metrics.csv"].decode().splitlines()
    assert rows[2].split(",")[1] == "123.0"  # round 1 came from the checkpoint
    assert rows[:2] + rows[3:] == whole["spfl/metrics.csv"].decode().splitlines()[:2] + \
        whole["spfl/metrics.csv"].decode().splitlines()[3:]
    assert not saved.exists()


# --- a killed `spfl run` resumes -----------------------------------------------------------------------

CLI_TINY = {"num_devices": 4, "batch_size": 16, "rounds": 2, "eval_every": 1, "partition": "iid", "method": "ideal"}


@pytest.fixture
def spec(tmp_path) -> Path:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(CLI_TINY))
    return path


def test_a_killed_run_resumes_from_its_checkpoint(tmp_path, spec):
    """kill -9 mid-run leaves records, a checkpoint and possibly temporary files: the same command resumes."""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "spfl.cli", "run", str(spec), "--out", str(out), "--set", "rounds=400",
               "--set", "checkpoint_every=1", "--methods", "spfl"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (out / "spfl" / "checkpoint.pt").exists():
            time.sleep(0.05)
        assert (out / "spfl" / "checkpoint.pt").exists() and process.poll() is None
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    resumed = subprocess.run([*command, "--log", str(tmp_path / "resume.log")], capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from checkpoint" in (tmp_path / "resume.log").read_text()


RUN_SETTINGS = {"num_devices": 20, "batch_size": 32, "rounds": 150, "eval_every": 10, "total_bandwidth_mhz": 1.0,
        "deadline_ms": 60.0, "learning_rate": 0.1, "compensation": "previous_update", "server_momentum": 0.5}


def spfl_run(spec_path, out, *extra, **popen):
    cmd = [sys.executable, "-m", "spfl.cli", "run", str(spec_path), "--out", str(out), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **popen)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["spfl", "digital_reuse"])
def test_sigkill_then_resume_is_byte_identical(tmp_path, method):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({**RUN_SETTINGS, "method": method, "checkpoint_every": 7}))
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
