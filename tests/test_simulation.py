"""The round loop: FedSGD to the bit, common random numbers, reproducibility, sanity."""

import numpy as np
import pytest
import torch

from spfl.simulation import Simulation, build_environment, run_cell, streams
from spfl.spec import make_spec

SMALL = dict(num_devices=5, batch_size=16, rounds=6, eval_every=3, learning_rate=0.1, partition="iid")
# Resources so ample that a packet is lost with probability below 1e-9 (no loss in practice).
PERFECT = dict(total_bandwidth_mhz=1000.0, deadline_ms=10_000.0, max_power_dbm=40.0)


def fedsgd_reference(env, rounds: int) -> torch.Tensor:
    """Plain FedSGD written the textbook way: module forward/backward per device, weighted average."""
    spec = env.spec
    module = env.model.module
    torch.nn.utils.vector_to_parameters(env.initial_weights.clone(), module.parameters())
    batch_rngs = [np.random.default_rng(s) for s in streams(spec.seed)["batches"].spawn(spec.num_devices)]
    weights = torch.as_tensor(env.alpha / env.alpha.sum(), dtype=torch.float32)
    w = env.initial_weights.clone()
    for _ in range(rounds):
        grads = []
        for part, rng in zip(env.parts, batch_rngs):
            pick = part[np.sort(rng.choice(len(part), size=min(spec.batch_size, len(part)), replace=False))]
            index = torch.from_numpy(pick)
            module.zero_grad()
            loss = torch.nn.functional.cross_entropy(module(env.dataset.train_x[index]), env.dataset.train_y[index])
            loss.backward()
            grads.append(torch.nn.utils.parameters_to_vector(p.grad for p in module.parameters()))
        w = w - spec.learning_rate * (weights @ torch.stack(grads))
        torch.nn.utils.vector_to_parameters(w, module.parameters())
    return w


def test_ideal_is_plain_fedsgd_to_the_bit():
    env = build_environment(make_spec(SMALL, method="ideal"))
    state = Simulation(env, "ideal").train()
    reference = fedsgd_reference(build_environment(make_spec(SMALL)), SMALL["rounds"])
    assert torch.equal(state.weights, reference)


@pytest.mark.parametrize("method", ["digital", "spfl", "spfl_uniform", "digital_reuse"])
def test_with_every_packet_received_methods_equal_ideal(method):
    """Under `normalize: all` every arrival adds to the objective, so with ample resources SP-FL serves
    everyone and equals FedSGD (under `received` it may concentrate the band: docs/model.md)."""
    env = build_environment(make_spec(SMALL, **PERFECT, normalize="all"))
    ideal = Simulation(env, "ideal").train()
    other = Simulation(env, method).train()
    assert all(r["devices_both_received"] == SMALL["num_devices"] for r in other.metric_rows[1:])
    assert torch.equal(other.weights, ideal.weights)


def test_environment_is_a_function_of_the_seed():
    a, b = build_environment(make_spec(SMALL)), build_environment(make_spec(SMALL, method="digital"))
    assert all(np.array_equal(x, y) for x, y in zip(a.parts, b.parts))
    assert np.array_equal(a.geometry.gain, b.geometry.gain)
    assert torch.equal(a.initial_weights, b.initial_weights)
    c = build_environment(make_spec(SMALL, seed=1))
    assert not torch.equal(a.initial_weights, c.initial_weights)
    assert not np.array_equal(a.geometry.gain, c.geometry.gain)


def test_methods_share_batches_and_fading():
    """Common random numbers: every method consumes the same draws in the same order."""
    env = build_environment(make_spec(SMALL))
    draws = {}
    for method in ("ideal", "digital", "scheduling", "signsgd", "spfl"):
        sim = Simulation(env, method)
        state = sim.initial_state()
        sim.step(state)  # a full round, whatever the method does with it
        batches = sim.draw_batches(state)
        fading = state.fading_rng.random(3)
        draws[method] = (torch.cat([y for device in batches for _, y in device]), fading)
    first = draws["ideal"]
    for method, (labels, fading) in draws.items():
        assert torch.equal(labels, first[0]), method
        assert np.array_equal(fading, first[1]), method


def test_same_spec_twice_gives_identical_bytes(tmp_path):
    spec = make_spec(SMALL, total_bandwidth_mhz=0.5, deadline_ms=20.0)
    methods = ["spfl", "digital", "scheduling"]
    run_cell(spec, methods, tmp_path / "a")
    run_cell(spec, methods, tmp_path / "b")
    for name in ["partition.csv", "devices.csv"] + [f"{m}/{f}" for m in methods
                                                    for f in ("metrics.csv", "allocation.csv", "solver_trace.csv")]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob("checkpoint.pt"))


def test_divergence_is_recorded_not_raised(tmp_path):
    summary = run_cell(make_spec(SMALL, learning_rate=1e30, smoothness=0.0, method="ideal"), ["ideal"],
                       tmp_path)["ideal"]
    assert summary["status"] == "diverged"
    assert 1 <= summary["diverged_round"] <= SMALL["rounds"]
    assert summary["rounds_completed"] == summary["diverged_round"]


def final_accuracy(spec, methods):
    env = build_environment(spec)
    return {m: Simulation(env, m).train().metric_rows[-1]["test_accuracy"] for m in methods}


MAIN = ["ideal", "digital", "digital_reuse", "scheduling", "signsgd", "spfl"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_ample_bandwidth_every_method_near_ideal(seed):
    """Under `normalize: all` (every arrival adds to the objective)."""
    spec = make_spec(num_devices=10, rounds=100, eval_every=100, learning_rate=0.1, seed=seed,
                     total_bandwidth_mhz=50.0, deadline_ms=100.0, normalize="all")
    acc = final_accuracy(spec, MAIN)
    assert acc["ideal"] > 0.85
    for method, value in acc.items():
        # signSGD compresses even on a perfect link, so it gets a few points; the others lose nothing
        tolerance = 0.06 if method == "signsgd" else 0.01
        assert value >= acc["ideal"] - tolerance, (method, acc)


def test_received_objective_concentrates_the_band_even_when_it_is_ample():
    """The documented property of the `received` objective (docs/model.md, section 6): the expected
    weighted average of the arrived devices' worth is largest when only the best devices are served, so
    SP-FL and scheduling leave devices silent although every device could be served reliably."""
    spec = make_spec(num_devices=10, rounds=3, eval_every=3, learning_rate=0.1, total_bandwidth_mhz=50.0,
                     deadline_ms=100.0)
    env = build_environment(spec)
    for method in ("spfl", "scheduling"):
        rows = Simulation(env, method).train().metric_rows[1:]
        assert all(r["devices_transmitting"] < 10 for r in rows), (method, rows)
    rows = Simulation(env, "digital").train().metric_rows[1:]
    assert all(r["devices_both_received"] == 10 for r in rows)  # the band is ample: all could arrive


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_scarce_bandwidth_stops_digital_but_not_ideal(seed):
    spec = make_spec(num_devices=10, rounds=60, eval_every=60, learning_rate=0.1, seed=seed,
                     total_bandwidth_mhz=0.01, deadline_ms=100.0)
    env = build_environment(spec)
    initial = Simulation(env, "digital").train()
    assert all(r["devices_sign_received"] == 0 for r in initial.metric_rows[1:])
    assert torch.equal(initial.weights, env.initial_weights)  # nothing ever arrives: no learning
    assert Simulation(env, "ideal").train().metric_rows[-1]["test_accuracy"] > 0.8


def mean_errors(spec, method):
    rows = Simulation(build_environment(spec), method).train().metric_rows[1:]
    return np.mean([r["sign_error_rate"] for r in rows]), np.mean([r["modulus_error_rate"] for r in rows])


@pytest.mark.slow
def test_packet_errors_fall_as_bandwidth_or_power_grow():
    base = dict(num_devices=20, rounds=40, eval_every=40, deadline_ms=800.0, seed=3)
    by_bandwidth = [mean_errors(make_spec(base, total_bandwidth_mhz=b), "spfl_uniform") for b in (0.25, 0.3, 0.35)]
    by_power = [mean_errors(make_spec(base, total_bandwidth_mhz=0.3, max_power_dbm=p), "spfl_uniform")
                for p in (13.0, 18.0, 23.0)]
    for series in (by_bandwidth, by_power):
        sign, modulus = zip(*series)
        assert sign[0] > sign[1] > sign[2] and modulus[0] > modulus[1] > modulus[2], series
        assert 0.0 < min(sign + modulus) and max(sign + modulus) < 1.0, series  # not saturated


def test_bookkeeping_is_callbacks_around_an_unchanged_round():
    """Without callbacks the rounds and weights are the same and nothing is evaluated; a user's callback
    sees every round once, in order, with the update the round applied."""
    from spfl.callbacks import Callback

    class UpdateNorms(Callback):
        def __init__(self):
            self.seen = []

        def after_round(self, sim, state, outcome):
            self.seen.append((outcome.round, None if outcome.update is None else float(outcome.update.double().norm())))

    spec = make_spec(SMALL, total_bandwidth_mhz=0.5, deadline_ms=60.0)
    env = build_environment(spec)
    default = Simulation(env, "spfl").train()
    bare = Simulation(env, "spfl").train(callbacks=[])
    norms = UpdateNorms()
    sim = Simulation(env, "spfl")
    extended = sim.train(callbacks=sim.callbacks() + [norms])
    assert torch.equal(bare.weights, default.weights) and torch.equal(extended.weights, default.weights)
    assert all("test_accuracy" not in row for row in bare.metric_rows) and not bare.allocation_rows
    evaluated = [row["round"] for row in default.metric_rows if "test_accuracy" in row]
    assert evaluated == [0, 1, 3, 6]  # the initial model, round 1, every eval_every-th, the last
    assert extended.metric_rows == default.metric_rows
    assert [r for r, _ in norms.seen] == list(range(SMALL["rounds"] + 1))
    recorded = [row["update_norm"] for row in default.metric_rows[1:]]
    assert [n or 0.0 for _, n in norms.seen[1:]] == pytest.approx(recorded)


# --- a cell's methods in lockstep (run_methods) ----------------------------------------------------------

# Scarce enough that packets are lost and the allocation matters; two local steps and server momentum, so
# every piece of per-method state (aggregator, momentum, random streams) is exercised; checkpoints on.
LOCKSTEP = dict(SMALL, local_steps=2, server_momentum=0.5, total_bandwidth_mhz=0.5, deadline_ms=60.0,
                checkpoint_every=2)
LOCKSTEP_METHODS = ["spfl", "digital", "signsgd", "scheduling", "ideal"]


def _method_files(folder) -> dict[str, bytes]:
    """Every record of a cell but the wall times."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "timing.json"}


def test_lockstep_writes_the_bytes_of_one_method_after_another(tmp_path, monkeypatch):
    """The overlapped schedule (every method's training of a round queued before any round is finished,
    as on a GPU) changes the order of work, never a record; and it really interleaves the methods."""
    spec = make_spec(LOCKSTEP)
    run_cell(spec, LOCKSTEP_METHODS, tmp_path / "sequential", overlap=False)
    order = []
    launch = Simulation.launch_round

    def recorded(self, state):
        order.append((self.spec.method, state.round + 1))
        return launch(self, state)

    monkeypatch.setattr(Simulation, "launch_round", recorded)
    run_cell(spec, LOCKSTEP_METHODS, tmp_path / "lockstep", overlap=True)
    sequential, lockstep = _method_files(tmp_path / "sequential"), _method_files(tmp_path / "lockstep")
    assert sorted(sequential) == sorted(lockstep) and len(sequential) >= 2 + 5 * len(LOCKSTEP_METHODS)
    assert [name for name in sequential if sequential[name] != lockstep[name]] == []
    assert order == [(m, r) for r in range(1, SMALL["rounds"] + 1) for m in LOCKSTEP_METHODS]
    assert not list(tmp_path.rglob("checkpoint.pt"))  # removed once each method's records are written


def test_lockstep_resumes_each_method_from_its_own_checkpoint(tmp_path):
    """A method with a matching checkpoint continues from it (its saved rows are kept, here marked),
    while the others start fresh; the resumed run ends with the uninterrupted run's weights."""
    from spfl import checkpoint as checkpoints
    from spfl.callbacks import Checkpoints

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
    whole, resumed = _method_files(tmp_path / "whole"), _method_files(tmp_path / "resumed")
    assert resumed["digital/metrics.csv"] == whole["digital/metrics.csv"]
    rows = resumed["spfl/metrics.csv"].decode().splitlines()
    assert rows[2].split(",")[1] == "123.0"  # round 1 came from the checkpoint
    assert rows[:2] + rows[3:] == whole["spfl/metrics.csv"].decode().splitlines()[:2] + \
        whole["spfl/metrics.csv"].decode().splitlines()[3:]
    assert not saved.exists()
