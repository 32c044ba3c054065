"""The round loop: FedSGD to the bit, common random numbers, reproducibility, sanity."""

import dataclasses
import types

import numpy as np
import pytest
import torch

import spfl.simulator.simulation as simulation
from core_helpers import TWO_STEP_RUN, method_files
from spfl.configuration.settings import make_spec
from spfl.simulator.models import build_model
from spfl.simulator.simulation import (
    LaunchedRound,
    Simulation,
    build_environment,
    resolve_device,
    run_cell,
    run_methods,
    streams,
)

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


def test_jensen_objective_concentrates_the_band_even_when_it_is_ample_and_descent_does_not():
    """The documented property of the Jensen surrogate under `received` (docs/model.md, section 6): the
    expected weighted average of the arrived devices' worth is largest when only the best devices are
    served, so SP-FL and scheduling leave devices silent although every device could be served reliably.
    The descent surrogate (the default) values the averaging and serves them all."""
    spec = make_spec(num_devices=10, rounds=3, eval_every=3, learning_rate=0.1, total_bandwidth_mhz=50.0,
                     deadline_ms=100.0, surrogate="jensen")
    env = build_environment(spec)
    for method in ("spfl", "scheduling"):
        rows = Simulation(env, method).train().metric_rows[1:]
        assert all(r["devices_transmitting"] < 10 for r in rows), (method, rows)
    rows = Simulation(env, "digital").train().metric_rows[1:]
    assert all(r["devices_both_received"] == 10 for r in rows)  # the band is ample: all could arrive
    env = build_environment(make_spec(spec.to_dict(), surrogate="descent"))
    for method in ("spfl", "scheduling"):
        rows = Simulation(env, method).train().metric_rows[1:]
        assert all(r["devices_both_received"] == 10 for r in rows), (method, rows)


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
    sees the initial model at begin, then every round once, in order, with the update the round applied."""
    from spfl.simulator.lifecycle import Callback

    class UpdateNorms(Callback):
        def __init__(self):
            self.seen = []

        def begin(self, view):
            self.seen.append((view.round, None))

        def after_round(self, view):
            update = view.outcome.update
            self.seen.append((view.round, None if update is None else float(update.double().norm())))

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
    sequential, lockstep = method_files(tmp_path / "sequential"), method_files(tmp_path / "lockstep")
    assert sorted(sequential) == sorted(lockstep) and len(sequential) >= 2 + 5 * len(LOCKSTEP_METHODS)
    assert [name for name in sequential if sequential[name] != lockstep[name]] == []
    assert order == [(m, r) for r in range(1, SMALL["rounds"] + 1) for m in LOCKSTEP_METHODS]
    assert not list(tmp_path.rglob("checkpoint.pt"))  # removed once each method's records are written


# --- setup and the round loop, step by step ---------------------------------------------------------------

TINY = dict(num_devices=3, batch_size=8, rounds=2, eval_every=2, learning_rate=0.1, partition="iid")
CUDA_ERROR = "run setting 'device' = 'cuda' is invalid here: no CUDA device; allowed cpu or auto"


def test_resolve_device_without_and_with_cuda(monkeypatch):
    """cuda without CUDA is refused with the exact message; auto is cpu without CUDA, cuda with it."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError) as raised:
        resolve_device("cuda")
    assert str(raised.value) == CUDA_ERROR
    assert resolve_device("auto") == torch.device("cpu") and resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")  # a device object only: nothing allocated
    assert resolve_device("cuda") == torch.device("cuda")


def test_auto_device_is_cuda_when_present_else_cpu():
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_initial_model_is_drawn_from_the_init_stream_as_a_63_bit_seed():
    """The init stream is the second of five children of SeedSequence(seed); its first 64-bit word, shifted
    to 63 bits (torch's seed range), seeds the model's generator.  Seed 1: torch's CPU generator keeps the
    low 32 bits of its seed, which after the shift hold bit 32 of the word; it is set for seed 1 (not for
    seeds 0, 2-4), so a 32-bit word would give another model there."""
    spec = make_spec({**TWO_STEP_RUN, "seed": 1})
    env = build_environment(spec)
    init_stream = np.random.SeedSequence(1).spawn(5)[1]
    generator = torch.Generator().manual_seed(int(init_stream.generate_state(1, np.uint64)[0]) // 2)
    module = build_model(spec.resolved_model, env.dataset.input_shape,
                         env.dataset.num_classes, generator=generator)
    expected = torch.cat([p.detach().reshape(-1) for p in module.parameters()])
    assert torch.equal(env.initial_weights.cpu(), expected)


def test_build_environment_passes_every_partition_setting():
    """beta (dirichlet), min size (redraws) and shards reach the partition, drawn from the seed's stream."""
    from spfl.simulator.partition import partition

    def direct(spec):
        return partition(y, spec.num_devices, spec.partition, np.random.default_rng(streams(spec.seed)["partition"]),
                         beta=spec.dirichlet_beta, min_size=spec.min_samples_per_device,
                         shards_per_device=spec.shards_per_device)

    spec = make_spec(num_devices=5, dirichlet_beta=0.3, min_samples_per_device=10)
    env = build_environment(spec)
    y = env.dataset.train_y.numpy()
    assert all(np.array_equal(a, b) for a, b in zip(env.parts, direct(spec)))
    # seed 0, beta 0.5: the first draw leaves a device with 105 < 150 samples, so the minimum forces a redraw
    env = build_environment(make_spec(num_devices=5, min_samples_per_device=150))
    assert min(len(p) for p in env.parts) >= 150
    spec = make_spec(num_devices=5, partition="shards", shards_per_device=3)
    env = build_environment(spec)
    assert all(np.array_equal(a, b) for a, b in zip(env.parts, direct(spec)))
    sizes = np.array([len(p) for p in env.parts])
    assert env.alpha.dtype == np.float64 and np.array_equal(env.alpha, sizes / float(len(y)))
    assert env.dataset.name == "digits"


def test_build_environment_passes_download_and_model(monkeypatch):
    """The spec's download flag reaches the dataset loader; an explicit model replaces the default mlp."""
    seen = {}

    class Stop(Exception):
        pass

    def fake_load(name, data_dir, download=False, **kw):
        seen.update(name=name, data_dir=data_dir, download=download)
        raise Stop

    monkeypatch.setattr(simulation, "load_dataset", fake_load)
    with pytest.raises(Stop):
        build_environment(make_spec(dataset="cifar10", data_dir="somewhere", download=True, num_devices=3))
    assert seen == dict(name="cifar10", data_dir="somewhere", download=True)
    monkeypatch.undo()
    cnn = build_environment(make_spec(TINY, model="cnn"))
    assert any(isinstance(m, torch.nn.Conv2d) for m in cnn.model.module.modules())


def test_simulation_takes_every_setting_from_the_spec():
    """Method objects or names; the sign packet's scale header under scalar compensation; link, band,
    learning rate, local steps, precision and the batched switch reach their owners."""
    from spfl.configuration.methods import get_method

    spec = make_spec(TINY, compensation="scalar", per_model="waterfall", waterfall_m=2.5, fading="per_packet",
                     total_bandwidth_mhz=0.5, learning_rate=0.05, local_steps=2, precision="tf32")
    env = build_environment(spec)
    sim = Simulation(env, "spfl")
    assert sim.layout.sign_bits == env.num_params + 32
    assert (sim.link.per_model, sim.link.waterfall_m, sim.link.fading) == ("waterfall", 2.5, "per_packet")
    assert sim.total_bandwidth == 500_000.0
    assert (sim.trainer.learning_rate, sim.trainer.local_steps, sim.trainer.precision) == (0.05, 2, "tf32")
    assert Simulation(env, get_method("digital")).spec == spec.with_method("digital")
    cpu = torch.device("cpu")
    assert not sim.trainer.uses_batched(cpu)
    assert Simulation(env, "ideal", batched=True).trainer.uses_batched(cpu)
    assert not Simulation(env, "ideal", batched=False).trainer.uses_batched(cpu)
    # on a CUDA environment the default is batched (Simulation only reads the device's type)
    on_cuda = dataclasses.replace(env, device=torch.device("cuda"))
    assert Simulation(on_cuda, "ideal").trainer.uses_batched(cpu)


def test_initial_state_aggregator_and_launch_fading():
    """The aggregator gets normalize and the signSGD rule; a round's fading follows the fading model."""
    spec = make_spec(TINY, normalize="all", signsgd_aggregation="majority", fading="per_packet")
    sim = Simulation(build_environment(spec), "signsgd")
    state = sim.initial_state()
    assert (state.aggregator.normalize, state.aggregator.signsgd_aggregation) == ("all", "majority")
    fading = sim.launch_round(state).fading
    expected = np.random.default_rng(streams(spec.seed)["fading"]).exponential(1.0, size=(3, 2))
    assert np.array_equal(fading, expected) and not np.array_equal(fading[:, 0], fading[:, 1])


def test_draw_batches_gives_each_device_its_own_steps():
    """Device k's list holds exactly its local_steps batches, drawn from its own stream."""
    spec = make_spec(TINY, local_steps=2)
    env = build_environment(spec)
    sim = Simulation(env, "ideal")
    batches = sim.draw_batches(sim.initial_state())
    rngs = [np.random.default_rng(s) for s in streams(spec.seed)["batches"].spawn(3)]
    assert [len(device) for device in batches] == [2, 2, 2]
    for part, rng, device in zip(env.parts, rngs, batches):
        for _, y in device:
            pick = part[np.sort(rng.choice(len(part), size=8, replace=False))]
            assert torch.equal(y, env.dataset.train_y[torch.from_numpy(pick)])


def _launched(env, value, losses):
    k, d = env.spec.num_devices, env.num_params
    return LaunchedRound(np.ones((k, 2)), torch.full((k, d), value), torch.tensor(losses, dtype=torch.float32))


def test_finish_round_divergence_before_sending():
    """A non-finite upload with finite losses stops the round unsent: next round index, the weighted
    train loss, status diverged."""
    env = build_environment(make_spec(TINY))
    sim = Simulation(env, "ideal")
    state = sim.initial_state()
    state.round = 3
    launched = _launched(env, 0.0, [1.0, 2.0, 4.0])
    launched.uploads[1, 0] = float("inf")
    outcome = sim.finish_round(state, launched)
    loss = sum(a * v for a, v in zip(env.alpha, (1.0, 2.0, 4.0)))
    assert outcome.sent is False and outcome.round == 4 and outcome.train_loss == pytest.approx(loss)
    assert (state.round, state.status, state.diverged_round) == (4, "diverged", 4)
    assert state.metric_rows[-1] == {"round": 4, "train_loss": outcome.train_loss}
    assert torch.equal(state.weights, env.initial_weights)


def test_finish_round_update_momentum_and_divergence_after_update():
    """Server momentum in closed form over two rounds (m1 = u1, m2 = 0.5 m1 + u2); no momentum leaves
    none in the state; finite losses but overflowing weights mark the round diverged."""
    env = build_environment(make_spec(TINY, server_momentum=0.5))
    sim = Simulation(env, "ideal")
    state = sim.initial_state()
    state.round = 3
    first = sim.finish_round(state, _launched(env, 1.0, [1.0, 1.0, 1.0]))
    assert first.sent is True and first.round == 4 and state.round == 4
    assert first.train_loss == pytest.approx(1.0) and state.status == "ok"
    sim.finish_round(state, _launched(env, 2.0, [1.0, 1.0, 1.0]))
    assert state.round == 5
    assert torch.allclose(state.weights, env.initial_weights - 0.1 * (1.0 + 2.5), atol=1e-6)
    assert torch.allclose(state.momentum, torch.full_like(state.momentum, 2.5))

    env = build_environment(make_spec(TINY, learning_rate=10.0, smoothness=0.0))
    sim = Simulation(env, "ideal")
    state = sim.initial_state()
    outcome = sim.finish_round(state, _launched(env, 3e38, [1.0, 1.0, 1.0]))
    assert state.momentum is None  # server_momentum 0: no momentum kept (nor checkpointed)
    assert outcome.sent is True and outcome.train_loss == pytest.approx(1.0)
    assert (state.status, state.diverged_round) == ("diverged", 1)


def test_finish_round_records_the_allocation_objective():
    env = build_environment(make_spec(TINY, total_bandwidth_mhz=0.5, deadline_ms=60.0))
    sim = Simulation(env, "spfl")
    state = sim.initial_state()
    outcome = sim.step(state)
    assert outcome.allocation is not None
    assert state.metric_rows[-1]["objective"] == float(outcome.allocation.objective)


def test_running_needs_rounds_left_and_status_ok():
    sim = Simulation(build_environment(make_spec(TINY)), "ideal")
    state = sim.initial_state()
    assert sim.running(state)
    state.round = 2
    assert not sim.running(state)
    state.round, state.status = 1, "diverged"
    assert not sim.running(state)


def test_run_methods_wall_time_checkpoints_and_keys(tmp_path, monkeypatch):
    """Each member's wall time is the sum of its own turns (one to begin, then one per round
    sequentially, two per round in lockstep); an interrupted run leaves its checkpoint.pt; no
    simulations give no summaries."""
    import json

    assert run_methods([], []) == {}
    clock = iter(range(10_000))
    monkeypatch.setattr(simulation, "time", types.SimpleNamespace(perf_counter=lambda: 0.25 * next(clock)))
    spec = make_spec(TINY, checkpoint_every=1, rounds=3)
    env = build_environment(spec)
    for overlap, turns in ((False, 1 + 3), (True, 1 + 2 * 3)):
        out = tmp_path / str(overlap)
        summaries = run_methods([Simulation(env, m) for m in ("ideal", "digital")], [out / "ideal", out / "digital"],
                                overlap)
        assert list(summaries) == ["ideal", "digital"] and summaries["digital"]["method"] == "digital"
        for m in ("ideal", "digital"):
            assert json.loads((out / m / "timing.json").read_text()) == {"wall_time_s": 0.25 * turns}
    finish = Simulation.finish_round

    def failing(self, state, launched):
        if state.round == 2:
            raise RuntimeError("interrupted")
        return finish(self, state, launched)

    monkeypatch.setattr(Simulation, "finish_round", failing)
    with pytest.raises(RuntimeError):
        run_methods([Simulation(env, "ideal")], [tmp_path / "cut"])
    assert (tmp_path / "cut" / "checkpoint.pt").exists()


def test_run_methods_schedules(tmp_path, monkeypatch):
    """On a CPU the default runs one method after another; in lockstep every method's round is launched
    before any method's round is finished."""
    events = []
    launch, finish = Simulation.launch_round, Simulation.finish_round

    def launch_spy(self, state):
        events.append(("launch", self.spec.method, state.round + 1))
        return launch(self, state)

    def finish_spy(self, state, launched):
        events.append(("finish", self.spec.method, state.round + 1))
        return finish(self, state, launched)

    monkeypatch.setattr(Simulation, "launch_round", launch_spy)
    monkeypatch.setattr(Simulation, "finish_round", finish_spy)
    env = build_environment(make_spec(TINY))
    methods = ("ideal", "digital")
    run_methods([Simulation(env, m) for m in methods], [tmp_path / "a" / m for m in methods])
    assert events == [(e, m, r) for m in methods for r in (1, 2) for e in ("launch", "finish")]
    events.clear()
    run_methods([Simulation(env, m) for m in methods], [tmp_path / "b" / m for m in methods], overlap=True)
    assert events == [(e, m, r) for r in (1, 2) for e in ("launch", "finish") for m in methods]


def test_run_methods_on_cuda_overlaps_on_own_streams(tmp_path, monkeypatch):
    """The GPU schedule, with torch.cuda's stream API faked (no GPU here) and stand-in simulations: by
    default on a CUDA environment the methods run in lockstep after one synchronize of the device, each
    member's work (begin, launch, finish) on its own stream made for that device."""
    import contextlib

    log, current = [], [None]

    class FakeStream:
        def __init__(self, device):
            self.device = device

    @contextlib.contextmanager
    def fake_stream(stream):
        previous, current[0] = current[0], stream
        yield
        current[0] = previous

    monkeypatch.setattr(torch.cuda, "Stream", FakeStream)
    monkeypatch.setattr(torch.cuda, "stream", fake_stream)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: log.append(("sync", device)))
    cuda = torch.device("cuda")

    @dataclasses.dataclass(frozen=True)
    class Summary:  # what run_methods returns of a member's end: its summary, as a dict
        method: str

    class StandIn:
        def __init__(self, name):
            self.env = types.SimpleNamespace(device=cuda)
            self.spec = types.SimpleNamespace(method=name)

        def callbacks(self, checkpoint, out):
            return []

        def begin(self, checkpoint, callbacks):
            log.append(("begin", self.spec.method, current[0]))
            return types.SimpleNamespace(round=0, status="ok")

        def running(self, state):
            return state.round < 2

        def launch_round(self, state):
            log.append(("launch", self.spec.method, current[0]))
            return ("launched", self.spec.method)

        def advance(self, state, callbacks, launched=None):
            log.append(("finish", self.spec.method, current[0], launched))
            state.round += 1

        def end(self, state, callbacks, seconds):
            return types.SimpleNamespace(summary=Summary(self.spec.method))

    sims = [StandIn("a"), StandIn("b")]
    assert run_methods(sims, [tmp_path / "a", tmp_path / "b"]) == {"a": {"method": "a"}, "b": {"method": "b"}}
    assert log[0] == ("sync", cuda)
    streams_of = {e[1]: e[2] for e in log if e[0] == "begin"}
    assert all(isinstance(s, FakeStream) and s.device == cuda for s in streams_of.values())
    assert streams_of["a"] is not streams_of["b"]
    a, b = streams_of["a"], streams_of["b"]
    round_events = [("launch", "a", a), ("launch", "b", b),
                    ("finish", "a", a, ("launched", "a")), ("finish", "b", b, ("launched", "b"))]
    assert log[1:] == [("begin", "a", a), ("begin", "b", b)] + round_events * 2
