"""Core behaviours against independent expectations: hand-computed small cases and references written
differently from src/spfl (tests/core_helpers.py), each chosen so that a plausible wrong implementation
fails.  Covers the inputs of the allocation (U_s, U_m per rule, alpha_k = n_k / n), server momentum,
b-bit moduli through the aggregator and a simulated round, checkpoints that are really used, the
maxima of the settings on the `spfl run` path, the settings' contract (schema, files, --set) and the
deadline calibration."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings
from types import SimpleNamespace

import jsonschema
import numpy as np
import pytest
import torch

from core_helpers import (
    batch_generators,
    cell_averaged_outage,
    dbm_to_watt,
    gain_at,
    outage_threshold,
    partition_weights,
    quantized,
    textbook_gradients,
)
from spfl.configuration.reading import load_spec, load_yaml, parse_assignment
from spfl.configuration.settings import SETTINGS, SpecError, did_you_mean, json_schema, make_spec
from spfl.simulator import checkpoint as checkpoints
from spfl.simulator.aggregation import Full, SignReuse
from spfl.simulator.channel import draw_fading, failure_threshold, packet_error_rate
from spfl.simulator.simulation import Simulation, build_environment
from spfl.simulator.transmission import Delivery, Link, Payload, quantize_modulus, signs

# eta = 0.1, L = 5: a full gradient is worth (eta - L eta^2 / 2) ||g||^2 = 0.075 ||g||^2, a sign with
# modulus c is worth 0.1 <|g|, c> - 0.025 ||c||^2 (distinct factors, so swapping them is caught).
ETA, L = 0.1, 5.0
FULL_FACTOR, QUADRATIC = 0.075, 0.025
TINY = dict(num_devices=3, batch_size=8, rounds=3, eval_every=1, learning_rate=ETA, smoothness=L)
# Resources so ample that no packet is lost in practice (error probability below 1e-9).
PERFECT = dict(total_bandwidth_mhz=1000.0, deadline_ms=10_000.0, max_power_dbm=40.0)

UPLOADS = [[0.3, -0.4, 0.0, 1.2], [-0.1, 0.2, -0.2, 0.4], [2.0, 0.0, -1.0, 0.5]]


def tensor(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def squared_norm(row) -> float:
    return sum(x * x for x in row)


def own_norm_sign_worth(row) -> float:
    """Signs scaled by the device's own ||g|| / sqrt(d) in every entry (nothing received yet)."""
    d = len(row)
    c = math.sqrt(squared_norm(row)) / math.sqrt(d)
    return ETA * sum(abs(x) * c for x in row) - QUADRATIC * d * c * c


def own_scale_sign_worth(row) -> float:
    """Signs scaled by the device's own ||g||_1 / d in every entry (signSGD, compensation: scalar)."""
    d = len(row)
    c = sum(abs(x) for x in row) / d
    return ETA * sum(abs(x) * c for x in row) - QUADRATIC * d * c * c


def modulus_sign_worth(row, c) -> float:
    return ETA * sum(abs(x) * m for x, m in zip(row, c)) - QUADRATIC * sum(m * m for m in c)


def delivery(sign_ok, modulus_ok) -> Delivery:
    sign_ok, modulus_ok = np.array(sign_ok), np.array(modulus_ok)
    ones = np.ones(len(sign_ok), dtype=bool)
    zeros = np.zeros(len(sign_ok))
    return Delivery(ones, ones, sign_ok, modulus_ok, zeros, zeros, 0.0)


@pytest.fixture(scope="module")
def env():
    return build_environment(make_spec(TINY, partition="dirichlet"))


# --- the inputs of the allocation ------------------------------------------------------------------

def test_alpha_is_each_devices_share_of_the_samples(env):
    sizes = [len(part) for part in env.parts]
    assert len(set(sizes)) == len(sizes), "a partition with equal sizes cannot tell alpha apart"
    problem = Simulation(env, "spfl").allocation_problem(tensor(UPLOADS), Simulation(env, "spfl").initial_state()
                                                         .aggregator)
    assert problem.alpha == pytest.approx(partition_weights(env), rel=1e-12)
    assert sum(problem.alpha) == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("method, sign_worth", [
    ("spfl", own_norm_sign_worth),         # sign_reuse before any modulus: the own-norm fallback
    ("spfl_noreuse", lambda row: 0.0),     # a sign without its modulus counts nothing
    ("digital", None),                     # one packet: worth a full gradient
    ("digital_reuse", None),
    ("signsgd", own_scale_sign_worth),     # signs with their own scale, in the one packet
])
def test_packet_worths_by_hand_before_any_modulus(env, method, sign_worth):
    sim = Simulation(env, method)
    problem = sim.allocation_problem(tensor(UPLOADS), sim.initial_state().aggregator)
    full = [FULL_FACTOR * squared_norm(row) for row in UPLOADS]
    if method == "signsgd":
        full = [own_scale_sign_worth(row) for row in UPLOADS]
    sign = full if sign_worth is None else [sign_worth(row) for row in UPLOADS]
    assert problem.u_modulus == pytest.approx(full, rel=1e-6)
    assert problem.u_sign == pytest.approx(sign, rel=1e-6, abs=1e-9)
    assert problem.sign_only_counts == (method != "spfl_noreuse")


def test_packet_worths_use_the_modulus_received_last_round(env):
    """After a round where devices 0 and 1 delivered both packets, c is their alpha-weighted mean
    magnitude, and next round's U_s is eta <|g_k|, c> - (L eta^2 / 2) ||c||^2 for every device."""
    sim = Simulation(env, "spfl")
    aggregator = sim.initial_state().aggregator
    aggregator.aggregate(Payload(tensor(UPLOADS)), delivery([True, True, True], [True, True, False]))
    alpha = partition_weights(env)
    share = [alpha[0] / (alpha[0] + alpha[1]), alpha[1] / (alpha[0] + alpha[1])]
    c = [share[0] * abs(a) + share[1] * abs(b) for a, b in zip(UPLOADS[0], UPLOADS[1])]
    following = [[1.0, -2.0, 0.5, 0.25], [0.0, 0.1, -0.3, 0.2], [-0.7, 0.6, 0.0, -0.1]]
    problem = sim.allocation_problem(tensor(following), aggregator)
    assert problem.u_sign == pytest.approx([modulus_sign_worth(row, c) for row in following], rel=1e-6)
    assert problem.u_modulus == pytest.approx([FULL_FACTOR * squared_norm(row) for row in following], rel=1e-6)


def test_packet_worths_under_previous_update_and_scalar_compensation():
    env = build_environment(make_spec(TINY, compensation="previous_update"))
    sim = Simulation(env, "spfl")
    aggregator = sim.initial_state().aggregator
    before = sim.allocation_problem(tensor(UPLOADS), aggregator)
    assert before.u_sign == pytest.approx([own_norm_sign_worth(row) for row in UPLOADS], rel=1e-6)
    update = aggregator.aggregate(Payload(tensor(UPLOADS)), delivery([True, True, False], [True, True, False]))
    alpha = partition_weights(env)
    expected_update = [(alpha[0] * a + alpha[1] * b) / (alpha[0] + alpha[1]) for a, b in zip(UPLOADS[0], UPLOADS[1])]
    assert update.tolist() == pytest.approx(expected_update, rel=1e-6, abs=1e-7)
    after = sim.allocation_problem(tensor(UPLOADS), aggregator)
    c = [abs(x) for x in expected_update]
    assert after.u_sign == pytest.approx([modulus_sign_worth(row, c) for row in UPLOADS], rel=1e-6, abs=1e-8)

    scalar = Simulation(build_environment(make_spec(TINY, compensation="scalar")), "spfl")
    problem = scalar.allocation_problem(tensor(UPLOADS), scalar.initial_state().aggregator)
    assert problem.u_sign == pytest.approx([own_scale_sign_worth(row) for row in UPLOADS], rel=1e-6)


def test_problem_budgets_and_packet_sizes(env):
    d = env.num_params
    assert d == 64 * 64 + 64 + 64 * 10 + 10  # the digits MLP: 64 -> 64 -> 10
    spec = make_spec(TINY, total_bandwidth_mhz=2.5, max_power_dbm=17.0, deadline_ms=40.0, noise_psd_dbm_hz=-170.0)
    bound = build_environment(spec)
    cases = {"spfl": (d, 31 * d), "digital": (32 * d, 0), "signsgd": (d + 32, 0)}
    for method, (sign_bits, modulus_bits) in cases.items():
        sim = Simulation(bound, method)
        problem = sim.allocation_problem(tensor([[1.0] * 4] * 3), sim.initial_state().aggregator)
        assert (problem.sign_bits, problem.modulus_bits) == (sign_bits, modulus_bits), method
        assert problem.total_bandwidth == pytest.approx(2.5e6)
        assert problem.max_power == pytest.approx(dbm_to_watt(17.0))
        assert problem.noise_psd == pytest.approx(dbm_to_watt(-170.0))
        assert problem.deadline == pytest.approx(0.040)
        expected_share = 1.0 if method != "spfl" else 1 / 32
        assert problem.slot_share == pytest.approx(expected_share)
        distances = bound.geometry.distance
        assert problem.gain == pytest.approx([gain_at(x) for x in distances], rel=1e-9)


def test_ideal_round_is_the_alpha_weighted_textbook_gradient(env):
    """w_1 = w_0 - eta sum_k (n_k / n) g_k with the weights recomputed from the partition sizes."""
    state = Simulation(env, "ideal").initial_state()
    Simulation(env, "ideal").step(state)
    gradients = textbook_gradients(env, env.initial_weights, batch_generators(env.spec.seed, env.spec.num_devices))
    alpha = torch.tensor(partition_weights(env), dtype=torch.float64)
    expected = env.initial_weights.double() - ETA * (alpha @ gradients.double())
    assert torch.allclose(state.weights.double(), expected, rtol=0, atol=1e-7)


# --- server momentum ---------------------------------------------------------------------------------

def test_server_momentum_is_heavy_ball_by_hand_over_three_rounds():
    """v_t = beta v_{t-1} + g_t, w_{t+1} = w_t - eta v_t (not (1 - beta) g, not Nesterov)."""
    beta = 0.5
    env = build_environment(make_spec(TINY, server_momentum=beta))
    generators = batch_generators(env.spec.seed, env.spec.num_devices)
    alpha = torch.tensor(partition_weights(env), dtype=torch.float64)
    w, velocity = env.initial_weights.clone(), torch.zeros(env.num_params, dtype=torch.float64)
    applied = []
    for _ in range(3):
        g = alpha @ textbook_gradients(env, w, generators).double()
        velocity = beta * velocity + g
        applied.append(float(velocity.norm()))
        w = (w.double() - ETA * velocity).float()
    state = Simulation(env, "ideal").train()
    assert torch.allclose(state.weights.double(), w.double(), rtol=0, atol=1e-6)
    # update_norm records the step applied, eta times which the weights moved
    assert [r["update_norm"] for r in state.metric_rows[1:]] == pytest.approx(applied, rel=1e-5)
    without = Simulation(build_environment(make_spec(TINY)), "ideal").train()
    assert (state.weights - without.weights).abs().max() > 1e-4  # momentum made a visible difference


# --- b-bit moduli -----------------------------------------------------------------------------------

GRADIENTS = [[0.31, -0.47, 0.05, -0.9], [1.0, -0.2, 0.61, 0.0]]
ALPHA = np.array([0.25, 0.75])


def decoded(row, bits):
    """What the PS recovers of one device's gradient sent with b-bit magnitudes."""
    magnitudes = [abs(x) for x in row]
    if bits == 31:
        values = magnitudes
    elif bits == 15:
        values = [float(np.float16(np.float32(m))) for m in magnitudes]
    else:
        values = quantized([float(np.float32(m)) for m in magnitudes], bits)
    return [v if x >= 0 else -v for v, x in zip(values, row)]


@pytest.mark.parametrize("bits", [1, 4, 15, 31])
def test_full_rule_aggregates_what_b_bit_moduli_decode_to(bits):
    aggregator = Full(ALPHA)
    update = aggregator.aggregate(Payload(tensor(GRADIENTS), bits), delivery([True, True], [True, True]))
    rows = [decoded(row, bits) for row in GRADIENTS]
    expected = [0.25 * a + 0.75 * b for a, b in zip(*rows)]
    assert update.tolist() == pytest.approx(expected, rel=1e-6, abs=1e-7)
    if bits == 4:  # the levels by hand: top 0.9 -> 15 levels of 0.06; top 1.0 -> levels of 1/15
        assert rows[0] == pytest.approx([0.30, -0.48, 0.06, -0.9], abs=1e-7)
        assert rows[1] == pytest.approx([1.0, -3 / 15, 9 / 15, 0.0], abs=1e-7)


@pytest.mark.parametrize("bits", [4, 15, 31])
def test_sign_reuse_compensates_with_the_decoded_modulus(bits):
    """Device 0 delivers both packets, device 1 only its signs: device 1 steps by s_1 * c, c = device
    0's decoded magnitudes (the only full receipt), and sign(0) = +1."""
    aggregator = SignReuse(ALPHA)
    update = aggregator.aggregate(Payload(tensor(GRADIENTS), bits), delivery([True, True], [True, False]))
    first = decoded(GRADIENTS[0], bits)
    c = [abs(x) for x in first]
    second = [m if x >= 0 else -m for m, x in zip(c, GRADIENTS[1])]
    assert aggregator.modulus.tolist() == pytest.approx(c, rel=1e-6)
    assert update.tolist() == pytest.approx([0.25 * a + 0.75 * b for a, b in zip(first, second)], rel=1e-6)


@pytest.mark.parametrize("bits, method", [(4, "digital"), (15, "digital"), (4, "spfl_uniform"), (31, "spfl_uniform")])
def test_a_simulated_round_with_b_bit_moduli(bits, method):
    """One round with every packet received: w_1 = w_0 - eta sum alpha_k decode_b(g_k), and the uplink
    carries K packets of (b + 1) d bits (+ 32 for the quantizer's range unless b is 15 or 31)."""
    spec = make_spec(TINY, **PERFECT, normalize="all", modulus_bits=bits, rounds=1)
    env = build_environment(spec)
    state = Simulation(env, method).train()
    gradients = textbook_gradients(env, env.initial_weights, batch_generators(spec.seed, spec.num_devices))
    alpha = partition_weights(env)
    rows = [decoded(row, bits) for row in gradients.tolist()]
    expected = [w - ETA * sum(alpha[k] * rows[k][i] for k in range(len(rows)))
                for i, w in enumerate(env.initial_weights.tolist())]
    changed = (state.weights.double() - torch.tensor(expected, dtype=torch.float64)).abs()
    # one entry may sit on a rounding boundary of the quantizer: allow at most one level there
    assert (changed > 1e-6).sum() <= 1, changed.max()
    d, num = env.num_params, spec.num_devices
    header = 0 if bits in (15, 31) else 32
    assert state.metric_rows[1]["uplink_bits"] == num * ((bits + 1) * d + header)
    assert state.metric_rows[1]["devices_both_received"] == num


# --- checkpoints are used, not just written --------------------------------------------------------

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


# --- the maxima of the settings on the `spfl run` path ---------------------------------------------

MAXIMA = {s.name: s for s in SETTINGS if s.maximum is not None}


# What a setting at its maximum needs of the others to pass the rules between settings.
PARTNERS = {
    "num_devices": {"dataset": "cifar10", "min_samples_per_device": 1},  # 10,000 x min_samples samples
    "min_samples_per_device": {"dataset": "cifar10", "num_devices": 1},  # 1 x 50,000 samples
    "learning_rate": {"smoothness": 0.0},  # learning_rate * smoothness < 2
    "smoothness": {"learning_rate": 1e-6},
    "cell_inner_radius_m": {"cell_outer_radius_m": 100_000.0},  # outer > inner
}


def cli_run(tmp_path, name, value):
    spec = {"num_devices": 2, "batch_size": 4, "rounds": 1, "eval_every": 1, "partition": "iid",
            "method": "spfl", name: value, **PARTNERS.get(name, {})}
    if spec.get("dataset") == "cifar10":  # no CIFAR-10 here: the run gets as far as looking for it
        spec.update(data_dir=str(tmp_path / "no-data"))
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(spec))
    return subprocess.run([sys.executable, "-m", "spfl.cli", "run", str(path), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)


def test_every_setting_with_a_maximum_is_covered():
    """Every number has a finite maximum (issue #22: no accepted value may overflow the simulation)."""
    assert set(MAXIMA) == {s.name for s in SETTINGS if s.kind in (int, float)}


@pytest.mark.parametrize("name", sorted(MAXIMA))
def test_setting_at_its_maximum_runs_and_just_above_is_refused(tmp_path, name):
    setting = MAXIMA[name]
    top = setting.maximum
    at = top - (1e-3 if setting.exclusive_maximum else 0)
    above = top if setting.exclusive_maximum else (top + 1 if setting.kind is int else top + max(1e-3, top * 1e-9))
    if setting.kind is int:
        at, above = int(at), int(above)
    refused = cli_run(tmp_path, name, above)
    assert refused.returncode != 0
    assert f"'{name}' = {above!r}" in refused.stderr and "allowed" in refused.stderr, refused.stderr
    assert not (tmp_path / "out").exists(), "refused before any work"
    if name == "rounds":  # 100,000 rounds take an hour: accepted, and memory does not grow with them
        assert make_spec(rounds=at).rounds == at  # (tests/test_extreme_settings.py)
        return
    accepted = cli_run(tmp_path, name, at)
    if PARTNERS.get(name, {}).get("dataset") == "cifar10":  # accepted: the run goes on to look for the data
        assert name not in accepted.stderr and "cifar" in accepted.stderr.lower(), accepted.stderr
        return
    assert accepted.returncode == 0, accepted.stderr
    summary = json.loads((tmp_path / "out" / "spfl" / "summary.json").read_text())
    assert summary["rounds_completed"] == 1
    assert json.loads((tmp_path / "out" / "spfl" / "spec.json").read_text())[name] == at


# --- deadline calibration -----------------------------------------------------------------------------

@pytest.mark.parametrize("settings, target", [
    ({"total_bandwidth_mhz": 2.0}, 0.4),
    ({"total_bandwidth_mhz": 0.5, "num_devices": 10, "max_power_dbm": 17.0}, 0.2),
    ({"total_bandwidth_mhz": 1.0, "modulus_bits": 15, "power_constraint": "sum"}, 0.6),
])
def test_calibrated_deadline_gives_the_target_error_of_the_closed_form(tmp_path, capsys, settings, target):
    from spfl.cli import main

    path = tmp_path / "spec.json"
    path.write_text(json.dumps(settings))
    spec = make_spec(settings)
    assert main(["calibrate", str(path), "--target", str(target)]) == 0
    result = json.loads(capsys.readouterr().out)
    d = 4810
    assert result["num_params"] == d
    bits = spec.modulus_bits * d
    share = bits / (d + bits)  # the modulus packet's share of the deadline (proportional split)
    power = dbm_to_watt(spec.max_power_dbm) / (2 if spec.power_constraint == "sum" else 1)
    error = cell_averaged_outage(result["deadline_ms"] / 1000, bits, share,
                                 spec.total_bandwidth_mhz * 1e6 / spec.num_devices, power,
                                 dbm_to_watt(spec.noise_psd_dbm_hz), spec.cell_inner_radius_m,
                                 spec.cell_outer_radius_m)
    # 20,000 random drops in the calibration (standard error <= 0.0035) and a 4-digit deadline
    assert error == pytest.approx(target, abs=0.012)


# --- edges that mutation testing showed untested (docs/mutation.md) ------------------------------------

def test_links_without_bandwidth_power_or_time_fail_silently_and_tiny_ones_do_not():
    """No (or negative) bandwidth, power or slot is a dead link (threshold inf), computed without numpy
    warnings; a link of 0.5 Hz still carries a 1-bit packet over 10 s."""
    noise = dbm_to_watt(-174.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for bandwidth, power, slot in [(0.0, 0.2, 0.1), (-1e5, 0.2, 0.1), (1e5, 0.0, 0.1), (1e5, -0.2, 0.1),
                                       (1e5, 0.2, 0.0), (1e5, 0.2, -0.1)]:
            assert failure_threshold(bandwidth, power, 1e-10, 1e4, slot, noise) == math.inf, (bandwidth, power, slot)
        huge = failure_threshold(1e3, 0.2, 1e-10, 1e9, 1e-3, noise)
    assert huge == math.inf
    tiny = failure_threshold(0.5, 0.2, 1e-10, 1.0, 10.0, noise)
    assert tiny == pytest.approx(outage_threshold(0.5, 0.2, 1e-10, 1.0, 10.0, noise), rel=1e-12)


def test_waterfall_threshold_defaults_to_m_equal_one():
    noise = dbm_to_watt(-174.0)
    expected = 2e5 * noise / (0.1 * 1e-11)  # m B N0 / (p lambda) with m = 1
    assert failure_threshold(2e5, 0.1, 1e-11, 5e4, 0.1, noise, "waterfall") == pytest.approx(expected, rel=1e-12)
    assert packet_error_rate(2e5, 0.1, 1e-11, 5e4, 0.1, noise, "waterfall") == pytest.approx(
        -math.expm1(-expected), rel=1e-12)


def test_fading_draws_default_to_one_block_per_device():
    draws = draw_fading(np.random.default_rng(5), 7)
    assert draws.shape == (7, 2)
    assert np.array_equal(draws[:, 0], draws[:, 1])


def test_quantizer_is_exact_at_31_bits_keeps_the_dtype_and_leaves_zero_rows_zero():
    m = torch.tensor([[0.3, 0.7, 1e-3, 0.123456789], [0.0, 0.0, 0.0, 0.0], [0.2, 0.4, 0.6, 0.8]])
    assert torch.equal(quantize_modulus(m, 31), m)
    half = quantize_modulus(m, 15)
    assert half.dtype == m.dtype
    assert torch.equal(half, torch.from_numpy(m.numpy().astype(np.float16).astype(np.float32)))
    four = quantize_modulus(m, 4)
    assert torch.equal(four[1], torch.zeros(4))
    # rows whose maximum is below 1 are scaled by their maximum: 0.8 / 15 per level
    assert four[2].tolist() == pytest.approx([round(x / 0.8 * 15) / 15 * 0.8 for x in (0.2, 0.4, 0.6, 0.8)], abs=1e-7)


@pytest.mark.parametrize("fading", ["block", "per_packet"])
def test_probability_that_both_packets_arrive(fading):
    """P(both): exp(-max) under block fading (the weaker packet decides), exp(-t_s - t_m) per packet;
    a dead packet (inf) makes it impossible; P(sign) = exp(-t_s) either way."""
    from spfl.simulator.allocation.objective import arrival_probabilities

    problem = SimpleNamespace(fading=fading)
    t_s, t_m = np.array([0.1, 0.5, 0.2]), np.array([0.3, 0.5, np.inf])
    joint = [max(a, b) for a, b in zip(t_s, t_m)] if fading == "block" else [a + b for a, b in zip(t_s, t_m)]
    pi_sign, pi_both = arrival_probabilities(problem, t_s, t_m)
    assert pi_both.tolist() == pytest.approx([math.exp(-j) for j in joint], rel=1e-12)
    assert pi_sign.tolist() == pytest.approx([math.exp(-a) for a in t_s], rel=1e-12)


def test_31_bit_moduli_are_the_float32_magnitudes_bit_for_bit():
    """A uniform quantizer with 2^31 - 1 levels is close but not exact in float32 (about 0.3 % of entries
    move by an ulp): 31 bits must bypass it."""
    m = torch.rand(20, 4810, generator=torch.Generator().manual_seed(3))
    assert torch.equal(quantize_modulus(m, 31), m)
    assert torch.equal(quantize_modulus(m.double(), 31), m.double())


def test_signs_keep_the_dtype_and_map_zero_to_plus_one():
    for dtype in (torch.float32, torch.float64):
        s = signs(torch.tensor([-2.0, 0.0, 3.0, -0.0], dtype=dtype))
        assert s.dtype == dtype
        assert s.tolist() == [-1.0, 1.0, 1.0, 1.0]


# --- the settings' contract seen from outside: the JSON schema (`spfl schema`, the workflow's check) accepts
# exactly what a run spec accepts; file and --set mistakes are one exact line ---------------------------------

def probes(setting) -> list:
    """Values around every bound of a setting, its words and its choices, and values of wrong types."""
    values: list = [None, True, "word", [1], {"a": 1}, 0, 1, 2.5, -1]
    values += list(setting.choices or ()) + list(setting.named)
    for bound in (setting.minimum, setting.maximum):
        if bound is not None:
            values += [bound, bound - 1, bound + 1, bound - 1e-3, bound + 1e-3]
    if setting.default is not None:
        values.append(setting.default)
    return values


def accepted_by_spec(setting, value) -> bool:
    try:
        setting.check(value)
    except SpecError:
        return False
    return True


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_schema_accepts_exactly_what_the_setting_accepts(setting):
    validator = jsonschema.Draft202012Validator(json_schema()["properties"][setting.name])
    for value in probes(setting):
        if setting.kind is int and isinstance(value, float) and value == int(value) and not math.isinf(value):
            continue  # JSON Schema counts 3.0 as an integer, as the setting does: both accept
        assert validator.is_valid(value) == accepted_by_spec(setting, value), (setting.name, value)


def test_schema_document_describes_every_setting_with_its_default_and_origin():
    schema = json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert schema["title"] == "spfl run settings"
    assert list(schema["properties"]) == [s.name for s in SETTINGS]
    for s in SETTINGS:
        prop = schema["properties"][s.name]
        assert prop["default"] == s.default
        assert prop["description"] == f"[{s.origin}] {s.help}"
    validator = jsonschema.Draft202012Validator(schema)
    assert validator.is_valid({s.name: s.default for s in SETTINGS if s.default is not None})
    assert not validator.is_valid({"bandwidth": 5})
    assert validator.is_valid({"data_file": None}) and not validator.is_valid({"seed": None})


@pytest.mark.parametrize("text, line, first", [
    ("seed: 1\nrounds: 2\nseed: 3\n", 3, 1),
    ("a:\n  x: 1\n  y: 2\n  x: 5\n", 4, 2),
    ('{"seed": 1,\n "seed": 2}', 2, 1),
])
def test_repeated_keys_are_refused_with_their_lines(text, line, first):
    key = "x" if "x:" in text else "seed"
    with pytest.raises(SpecError) as error:
        load_yaml(text, source="'spec.yaml'")
    assert str(error.value) == (f"'spec.yaml' line {line} repeats key '{key}' (first at line {first}): "
                                "allowed each key once")


def test_repeated_key_in_a_json_file_names_the_file_and_line(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text('{"seed": 1,\n "rounds": 2,\n "seed": 2}')
    with pytest.raises(SpecError) as error:
        load_yaml(path)
    assert str(error.value) == f"'{path}' line 3 repeats key 'seed' (first at line 1): allowed each key once"


def test_merge_keys_and_distinct_keys_are_read():
    assert load_yaml("base: &b {seed: 1, rounds: 2}\nrun:\n  <<: *b\n  seed: 4\n") == {
        "base": {"seed": 1, "rounds": 2}, "run": {"seed": 4, "rounds": 2}}
    assert load_yaml("lr: 1e-05\nbig: 1E+30\nplain: 3\n") == {"lr": 1e-05, "big": 1e30, "plain": 3}
    assert load_yaml("{1: a, 2: b, x: c}") == {1: "a", 2: "b", "x": "c"}
    with pytest.raises(SpecError, match="not valid YAML/JSON: line 1.*unhashable"):  # the reader's own message
        load_yaml("{[1, 2]: a}")


def test_near_miss_keys_get_a_suggestion_and_far_ones_none():
    names = [s.name for s in SETTINGS]
    assert did_you_mean("totl_bandwidth_mhz", names) == " (did you mean 'total_bandwidth_mhz'?)"
    assert did_you_mean("sead", names) == " (did you mean 'seed'?)"
    assert did_you_mean("bandwidth", names) == ""
    with pytest.raises(SpecError, match=r"unknown run setting 'sed' \(did you mean 'seed'\?\)"):
        make_spec(sed=1)


# --- files and --set: each mistake is one line naming the file or the --set, the value and what is allowed

def refused(call, *args) -> str:
    with pytest.raises(SpecError) as error:
        call(*args)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_unreadable_spec_files_are_named(tmp_path):
    missing, folder, binary = tmp_path / "missing.yaml", tmp_path / "folder.yaml", tmp_path / "binary.yaml"
    folder.mkdir()
    binary.write_bytes(b"seed: 1\n\xff\xfe")
    assert refused(load_yaml, missing) == f"'{missing}' not found"
    assert refused(load_yaml, folder) == f"'{folder}' is a folder: allowed a YAML or JSON file"
    assert refused(load_yaml, binary) == (f"'{binary}' is not a text file (byte 8 is not UTF-8): allowed a YAML or "
                                          "JSON file")
    assert refused(load_yaml, missing, "the config") == "the config not found"  # a source replaces the path


def test_malformed_yaml_and_json_name_line_and_column(tmp_path):
    broken_json = tmp_path / "spec.json"
    broken_json.write_text('{"seed": 1,\n "rounds": }')
    message = refused(load_yaml, broken_json)
    assert message.startswith(f"'{broken_json}' is not valid JSON: line 2, column 12: ")
    assert refused(load_yaml, "a: [1, 2\nb: 3\n", "'x.yaml'").startswith("'x.yaml' is not valid YAML/JSON: line ")
    control = refused(load_yaml, "seed: 1\x07\n", "'x.yaml'")
    assert control == "'x.yaml' is not a text file (character #x0007 at position 7): allowed a YAML or JSON file"
    assert load_yaml("seed: 1\n") == {"seed": 1}


def test_run_spec_files_that_are_not_mappings_or_hold_bad_values(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("")
    assert refused(load_spec, path) == (f"run spec file '{path}' is empty: allowed a mapping of run settings "
                                        "(write '{}' to run every default)")
    path.write_text("- 1\n- 2\n")
    assert refused(load_spec, path) == f"run spec file '{path}' must hold a mapping of settings, not list"
    path.write_text("seed: -1\n")
    assert refused(load_spec, path) == (f"{path}: run setting 'seed' = -1 is invalid: allowed an integer >= 0 and "
                                        "<= 4294967295")
    path.write_text("seed: 2\n")
    with pytest.raises(SpecError) as error:
        load_spec(path, rounds=0)
    assert str(error.value) == (f"{path} with rounds=0: run setting 'rounds' = 0 is invalid: allowed an integer >= 1 "
                                "and <= 100000")
    assert load_spec(path, rounds=3) == make_spec(seed=2, rounds=3)


def test_set_assignments_are_typed_and_checked():
    assert parse_assignment("seed=3") == ("seed", 3)
    assert parse_assignment(" total_bandwidth_mhz = 2.5") == ("total_bandwidth_mhz", 2.5)
    assert parse_assignment("data_file=null") == ("data_file", None)
    assert parse_assignment("slot_share=optimized") == ("slot_share", "optimized")
    assert refused(parse_assignment, "seed") == "--set 'seed' is invalid: allowed KEY=VALUE"
    assert refused(parse_assignment, "sed=1").startswith(
        "--set 'sed=1': unknown run setting 'sed' (did you mean 'seed'?): allowed keys are dataset, data_dir,")
    assert refused(parse_assignment, "seed=-1") == ("--set 'seed=-1': run setting 'seed' = -1 is invalid: allowed an "
                                                    "integer >= 0 and <= 4294967295")
    assert refused(parse_assignment, "seed=[1").startswith("--set 'seed=[1': the value is not valid YAML/JSON")


def test_run_identity_is_compact_sorted_json_and_its_sha256_prefix():
    import hashlib

    from spfl.configuration.settings import canonical_hash, canonical_json

    mapping = {"b": 1, "a": [1, 2.5], "c": "x"}
    text = '{"a":[1,2.5],"b":1,"c":"x"}'
    assert canonical_json(mapping) == text
    assert canonical_hash(mapping) == hashlib.sha256(text.encode()).hexdigest()[:12]
    with pytest.raises(ValueError):
        canonical_json({"x": math.nan})  # NaN has no JSON form: no identity may hold one


@pytest.mark.parametrize("m", [1.0, 3.0])
def test_the_simulators_link_applies_the_waterfall_threshold_to_both_packets(m):
    from spfl.simulator.transmission import PacketLayout, Resources

    noise, gains = dbm_to_watt(-174.0), np.array([1e-11, 4e-12])
    link = Link(gains, noise, per_model="waterfall", waterfall_m=m)
    resources = Resources(np.array([1e5, 2e5]), np.array([0.1, 0.2]), np.array([0.05, 0.2]), np.array([0.25, 0.5]))
    t_s, t_m = link.thresholds(PacketLayout(1000.0, 31000.0, 0.1), resources)
    assert t_s.tolist() == pytest.approx([m * b * noise / (p * g) for b, p, g in zip([1e5, 2e5], [0.1, 0.2], gains)])
    assert t_m.tolist() == pytest.approx([m * b * noise / (p * g) for b, p, g in zip([1e5, 2e5], [0.05, 0.2], gains)])


def test_unknown_keys_of_mixed_types_are_reported_not_crashed_on():
    with pytest.raises(SpecError, match="unknown run setting '1'"):
        make_spec({1: 0, "zz": 0})


def test_reader_details_found_by_mutation_testing(tmp_path):
    import yaml

    assert parse_assignment("data_dir=a=b") == ("data_dir", "a=b")  # the value may hold '='
    broken = "run:\n  seed: [1, 2\n  rounds: 3\n"
    with pytest.raises(yaml.MarkedYAMLError) as original:
        yaml.safe_load(broken)
    mark = original.value.problem_mark or original.value.context_mark
    assert refused(load_yaml, broken).startswith(
        f"YAML text is not valid YAML/JSON: line {mark.line + 1}, column {mark.column + 1}: ")
    merged = "base: &b {x: 1}\nrun:\n  <<: *b\n  y: 1\n  y: 2\n"
    assert refused(load_yaml, merged) == "YAML text line 5 repeats key 'y' (first at line 4): allowed each key once"
    path = tmp_path / "spec.yaml"
    path.write_text("seed: 2\n")
    with pytest.raises(SpecError) as error:
        load_spec(path, seed=1, rounds=0)
    assert str(error.value).startswith(f"{path} with seed=1, rounds=0: run setting 'rounds' = 0 is invalid")
    with pytest.raises(SpecError, match="'cell_outer_radius_m' = 100.0 is invalid: allowed a number > "
                                        r"cell_inner_radius_m \(100.0\)"):
        make_spec(cell_inner_radius_m=100.0, cell_outer_radius_m=100.0)
