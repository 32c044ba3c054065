"""The inputs of the allocation problem, against hand computations: alpha_k = n_k / n, each rule's packet
worths U_s and U_m, the budgets and packet sizes, and packets worth nothing keeping the uniform start."""

from __future__ import annotations

import math

import pytest
import torch

from allocation_reference import NOISE_PSD
from core_helpers import (
    batch_generators,
    dbm_to_watt,
    delivery,
    gain_at,
    partition_weights,
    tensor,
    textbook_gradients,
)
from spfl.configuration.settings import make_spec
from spfl.simulator.allocation import AllocationProblem, allocate
from spfl.simulator.simulation import Simulation, build_environment
from spfl.simulator.transmission import Payload

# eta = 0.1, L = 5: a full gradient is worth (eta - L eta^2 / 2) ||g||^2 = 0.075 ||g||^2, a sign with
# modulus c is worth 0.1 <|g|, c> - 0.025 ||c||^2 (distinct factors, so swapping them is caught).
ETA, L = 0.1, 5.0
FULL_FACTOR, QUADRATIC = 0.075, 0.025
TINY = dict(num_devices=3, batch_size=8, rounds=3, eval_every=1, learning_rate=ETA, smoothness=L)

UPLOADS = [[0.3, -0.4, 0.0, 1.2], [-0.1, 0.2, -0.2, 0.4], [2.0, 0.0, -1.0, 0.5]]


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


@pytest.fixture(scope="module")
def env():
    return build_environment(make_spec(TINY, partition="dirichlet"))


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


@pytest.mark.parametrize("normalize", ["all", "received"])
@pytest.mark.parametrize("policy", ["spfl", "power", "bandwidth"])
def test_packets_worth_nothing_keep_the_uniform_start(policy, normalize):
    """All-zero updates make every allocation worth Phi = 0; only a strict improvement replaces the
    uniform start, so every device keeps B/K, the full power 0.2 W on both packets and the fixed sign
    share 1e4 / (1e4 + 3.1e5) = 0.03125 (a solver that took ties would hand back some other point)."""
    problem = AllocationProblem(alpha=[0.5, 0.5], gain=[1e-10, 1e-11], u_sign=[0.0, 0.0], u_modulus=[0.0, 0.0],
                                total_bandwidth=1e6, max_power=0.2, noise_psd=NOISE_PSD, deadline=0.1,
                                sign_bits=1e4, modulus_bits=3.1e5, slot_share=None, normalize=normalize)
    allocation = allocate(problem, policy)
    assert allocation.bandwidth.tolist() == [5e5, 5e5]
    assert allocation.power_sign.tolist() == [0.2, 0.2]
    assert allocation.power_modulus.tolist() == [0.2, 0.2]
    assert allocation.slot_share.tolist() == [0.03125, 0.03125]
    assert set(allocation.trace) == {0.0}
