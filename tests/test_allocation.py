"""Allocation (SPEC sections 5-6): problem validation, objective and physics, blocks, policies, behaviour."""

from dataclasses import replace

import mpmath
import numpy as np
import pytest

from spfl.allocation import (
    ALLOCATION_POLICIES,
    AllocationProblem,
    allocate,
    objective,
    objective_gradient,
    packet_error,
)
from spfl.allocation.objective import Links, log_phi
from spfl.allocation.power import optimal_power
from spfl.allocation.reference import sample_problem
from spfl.channel import dbm_to_watt, packet_error_rate

NOISE = dbm_to_watt(-174.0)


def make_problem(num, seed, scarcity=0.0, **fields):
    """A calibrated random round (see :func:`spfl.allocation.reference.sample_problem`)."""
    return sample_problem(num, seed, scarcity, **fields)


def assert_feasible(problem, result, rel=1e-9):
    for array in (result.bandwidth, result.power_sign, result.power_modulus):
        assert array.shape == (problem.num_devices,)
        assert np.all(np.isfinite(array)) and np.all(array >= 0)
    assert result.bandwidth.sum() <= problem.total_bandwidth * (1 + rel)
    c_s, c_m = problem.power_weights
    assert np.all(c_s * result.power_sign + c_m * result.power_modulus <= problem.max_power * (1 + rel))


# --- problem -------------------------------------------------------------------------------------------

def test_problem_derived_quantities():
    problem = make_problem(3, 0)
    tau = problem.sign_bits / (problem.sign_bits + problem.modulus_bits)
    assert problem.tau == pytest.approx(tau)
    assert problem.sign_slot + problem.modulus_slot == pytest.approx(problem.deadline)
    assert problem.sign_slot == pytest.approx(tau * problem.deadline)
    assert problem.power_weights == pytest.approx((tau, 1 - tau))
    assert problem.equal_power == pytest.approx(problem.max_power)
    summed = make_problem(3, 0, power_constraint="sum", slot_share=0.25)
    assert summed.tau == 0.25 and summed.power_weights == (1.0, 1.0)
    assert summed.equal_power == pytest.approx(summed.max_power / 2)
    np.testing.assert_allclose(problem.extra_worth, np.maximum(problem.u_modulus - problem.u_sign, 0))


@pytest.mark.parametrize(
    "change, field",
    [
        ({"alpha": [0.5, -0.1]}, "alpha"),
        ({"gain": [1e-10, np.nan]}, "gain"),
        ({"u_sign": [[1.0, 2.0]]}, "u_sign"),
        ({"u_modulus": [1.0]}, "equal lengths"),
        ({"u_modulus": []}, "u_modulus"),
        ({"total_bandwidth": 0.0}, "total_bandwidth"),
        ({"max_power": -1.0}, "max_power"),
        ({"noise_psd": np.inf}, "noise_psd"),
        ({"deadline": 0.0}, "deadline"),
        ({"sign_bits": 0}, "sign_bits"),
        ({"power_constraint": "peak"}, "power_constraint"),
        ({"per_model": "rician"}, "per_model"),
        ({"slot_share": 1.0}, "slot_share"),
        ({"waterfall_m": 0.0}, "waterfall_m"),
    ],
)
def test_problem_validation_names_the_field(change, field):
    base = dict(alpha=[0.5, 0.5], gain=[1e-10, 1e-11], u_sign=[1.0, 0.0], u_modulus=[2.0, 1.0],
                total_bandwidth=1e6, max_power=0.2, noise_psd=NOISE, deadline=0.1, sign_bits=1e4,
                modulus_bits=3.1e5)
    with pytest.raises(ValueError, match=field):
        AllocationProblem(**{**base, **change})


def test_problem_copies_and_freezes_its_arrays():
    alpha = np.array([0.5, 0.5])
    problem = AllocationProblem(alpha=alpha, gain=[1e-10, 1e-10], u_sign=[1, 1], u_modulus=[2, 2],
                                total_bandwidth=1e6, max_power=0.2, noise_psd=NOISE, deadline=0.1,
                                sign_bits=1e4, modulus_bits=3.1e5)
    alpha[0] = 9.0
    assert problem.alpha[0] == 0.5
    with pytest.raises(ValueError):
        problem.alpha[0] = 1.0


# --- objective and physics -----------------------------------------------------------------------------

@pytest.mark.parametrize("per_model", ["outage", "waterfall"])
def test_packet_error_is_the_channel_physics(per_model):
    problem = make_problem(4, 1, per_model=per_model)
    bandwidth = np.array([1e5, 2e5, 0.0, 4e5])
    got = packet_error(problem, bandwidth, 0.1, problem.sign_bits, problem.sign_slot)
    want = packet_error_rate(bandwidth, 0.1, problem.gain, problem.sign_bits, problem.sign_slot, NOISE,
                             per_model)
    np.testing.assert_array_equal(got, want)
    assert got[2] == 1.0  # no bandwidth: always lost


def test_objective_matches_the_formula():
    problem = make_problem(5, 2)
    bandwidth = problem.total_bandwidth * np.array([0.1, 0.2, 0.3, 0.4, 0.0])
    power_sign = np.full(5, 0.5)
    power_modulus = np.full(5, 0.1)
    pi_s = 1 - packet_error(problem, bandwidth, power_sign, problem.sign_bits, problem.sign_slot)
    pi_m = 1 - packet_error(problem, bandwidth, power_modulus, problem.modulus_bits, problem.modulus_slot)
    extra = np.maximum(problem.u_modulus - problem.u_sign, 0)
    want = np.sum(problem.alpha * pi_s * (problem.u_sign + pi_m * extra))
    assert objective(problem, bandwidth, power_sign, power_modulus) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("per_model", ["outage", "waterfall"])
def test_gradient_matches_central_differences(per_model):
    problem = make_problem(4, 3, per_model=per_model)
    bandwidth = problem.total_bandwidth * np.array([0.3, 0.2, 0.4, 0.1])
    power_sign = problem.max_power * np.array([1.0, 2.0, 0.5, 3.0])
    power_modulus = problem.max_power * np.array([0.9, 0.5, 1.0, 0.2])
    grads = objective_gradient(problem, bandwidth, power_sign, power_modulus)
    point = [bandwidth, power_sign, power_modulus]
    value = objective(problem, *point)
    for which, grad in enumerate(grads):
        for k in range(4):
            step = 1e-6 * point[which][k]
            plus = [p.copy() for p in point]
            minus = [p.copy() for p in point]
            plus[which][k] += step
            minus[which][k] -= step
            numeric = (objective(problem, *plus) - objective(problem, *minus)) / (2 * step)
            # Differences of Phi carry rounding ~1e-16 Phi / step: the absolute tolerance allows for it.
            assert grad[k] == pytest.approx(numeric, rel=1e-5, abs=1e-8 * value / point[which][k])


def test_log_phi_against_high_precision():
    mpmath.mp.dps = 40
    log_x = np.linspace(np.log(1e-12), np.log(1e5), 301)
    value, slope = log_phi(log_x)
    for lx, v, d in zip(log_x, value, slope):
        x = mpmath.e ** mpmath.mpf(lx)
        phi = 1 + (x - 1) * mpmath.e**x
        assert v == pytest.approx(float(mpmath.log(phi)), rel=1e-11, abs=1e-11)
        assert d == pytest.approx(float(x * x * mpmath.e**x / phi), rel=1e-9)
    assert np.all(np.diff(slope) >= -1e-9 * slope[1:])  # log phi is convex in log x


# --- power block ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("power_constraint", ["energy", "sum"])
def test_power_block_is_the_global_optimum_per_device(power_constraint):
    """NR on the convex stationarity function D(y) + end-point comparison = global max of the 1-D split."""
    rng = np.random.default_rng(4)
    splits = np.unique(np.concatenate([np.linspace(0, 1, 20001), np.logspace(-14, -1, 2000),
                                       1 - np.logspace(-14, -1, 2000)]))[:, None]
    worst = 0.0
    for seed in range(40):
        problem = make_problem(8, seed, scarcity=rng.uniform(-2, 1.5), power_constraint=power_constraint,
                               slot_share=None if seed % 3 else rng.uniform(0.05, 0.5))
        links = Links.at(problem, np.full(8, 1 / 8))
        equal = np.full(8, problem.equal_power)
        power_sign, power_modulus = optimal_power(problem, links.unit_sign, links.unit_modulus, equal, equal)
        found = links.values(problem, power_sign, power_modulus)
        c_s, c_m = problem.power_weights
        with np.errstate(divide="ignore"):
            grid = links.values(problem, splits * problem.max_power / c_s,
                                (1 - splits) * problem.max_power / c_m)
        best = grid.max(axis=0)
        assert np.all(c_s * power_sign + c_m * power_modulus <= problem.max_power * (1 + 1e-12))
        worst = max(worst, float(np.max((best - found) / np.maximum(best, 1e-300))))
    assert worst <= 1e-9


# --- policies ------------------------------------------------------------------------------------------

def test_unknown_policy_names_the_allowed_ones():
    with pytest.raises(ValueError, match="spfl"):
        allocate(make_problem(2, 0), "greedy")


@pytest.mark.parametrize("policy", ALLOCATION_POLICIES)
@pytest.mark.parametrize("power_constraint", ["energy", "sum"])
def test_every_policy_is_feasible_and_monotone(policy, power_constraint):
    for seed in range(8):
        problem = make_problem(6, 10 + seed, scarcity=-2.0 + 0.5 * seed, power_constraint=power_constraint)
        result = allocate(problem, policy)
        assert result.policy == policy
        assert np.all(np.diff(result.trace) >= 0)
        if policy == "scheduling":
            assert np.all(result.bandwidth.sum() <= problem.total_bandwidth * (1 + 1e-9))
            continue
        assert_feasible(problem, result)
        assert result.objective == pytest.approx(
            objective(problem, result.bandwidth, result.power_sign, result.power_modulus), rel=1e-12)
        assert result.trace[-1] == result.objective
        assert len(result.trace) == result.iterations + 1


def test_spfl_trace_starts_at_the_uniform_point_and_beats_the_ablations():
    for seed in range(10):
        problem = make_problem(10, 30 + seed, scarcity=-1.5 + 0.3 * seed)
        results = {policy: allocate(problem, policy) for policy in ALLOCATION_POLICIES}
        uniform = results["uniform"].objective
        assert results["spfl"].trace[0] == pytest.approx(uniform, rel=1e-12)
        assert results["power"].objective >= uniform
        assert results["bandwidth"].objective >= uniform
        # The uniform row of the alternation starts with the "power" solution and never loses ground.
        assert results["spfl"].objective >= results["power"].objective
        assert results["spfl"].objective >= results["bandwidth"].objective * (1 - 1e-6)
        assert 1 <= results["spfl"].iterations <= 50


def test_ablation_policies_touch_only_their_block():
    problem = make_problem(5, 40, power_constraint="sum")
    uniform_bandwidth = np.full(5, problem.total_bandwidth / 5)
    power = allocate(problem, "power")
    np.testing.assert_allclose(power.bandwidth, uniform_bandwidth)
    bandwidth = allocate(problem, "bandwidth")
    served = bandwidth.bandwidth > 0
    np.testing.assert_allclose(bandwidth.power_sign[served], problem.max_power / 2)
    np.testing.assert_allclose(bandwidth.power_modulus[served], problem.max_power / 2)
    uniform = allocate(problem, "uniform")
    np.testing.assert_allclose(uniform.bandwidth, uniform_bandwidth)
    np.testing.assert_allclose(uniform.power_sign, problem.max_power / 2)
    assert uniform.iterations == 0 and uniform.trace == (uniform.objective,)


def test_scheduling_picks_the_best_top_n_set():
    for seed in range(6):
        problem = make_problem(7, 50 + seed, scarcity=-1.0 + 0.4 * seed)
        result = allocate(problem, "scheduling")
        served = result.bandwidth > 0
        n = int(served.sum())
        assert n >= 1
        np.testing.assert_allclose(result.bandwidth[served], problem.total_bandwidth / n)
        assert np.all(result.power_sign[served] == problem.max_power)
        assert np.all(result.power_sign[~served] == 0) and np.all(result.power_modulus == result.power_sign)
        bits, deadline = problem.sign_bits + problem.modulus_bits, problem.deadline
        best = 0.0
        for size in range(1, 8):
            q = packet_error(problem, problem.total_bandwidth / size, problem.max_power, bits, deadline)
            score = problem.alpha * (1 - q) * problem.u_modulus
            best = max(best, float(np.sort(score)[::-1][:size].sum()))
            if size == n:
                assert result.objective == pytest.approx(float(score[served].sum()), rel=1e-12)
        assert result.objective == pytest.approx(best, rel=1e-12)


def test_single_device_and_degenerate_devices():
    one = make_problem(1, 60)
    result = allocate(one)
    assert result.bandwidth[0] == pytest.approx(one.total_bandwidth)
    assert_feasible(one, result)
    # Zero weight, zero utilities and a hopeless channel beside two ordinary devices.
    problem = make_problem(5, 61, alpha=[0.0, 0.3, 0.3, 0.2, 0.2], u_sign=[1.0, 0.0, 0.5, 0.2, 0.1],
                           u_modulus=[2.0, 0.0, 1.5, 0.8, 0.9], gain=[1e-10, 1e-10, 1e-10, 1e-30, 1e-11])
    for policy in ALLOCATION_POLICIES:
        result = allocate(problem, policy)
        assert np.isfinite(result.objective)
        if policy != "scheduling":
            assert_feasible(problem, result)
    spfl = allocate(problem)
    assert spfl.bandwidth[[0, 1, 3]] == pytest.approx(0.0)  # worthless devices get nothing
    assert spfl.bandwidth.sum() == pytest.approx(problem.total_bandwidth, rel=1e-12)


def test_waterfall_keeps_uniform_bandwidth_and_optimizes_power():
    problem = make_problem(4, 70, per_model="waterfall")
    result = allocate(problem)
    np.testing.assert_allclose(result.bandwidth, problem.total_bandwidth / 4)
    assert result.objective >= allocate(problem, "uniform").objective
    assert_feasible(problem, result)


# --- behaviour the paper describes ---------------------------------------------------------------------

def test_equal_channels_more_important_device_gets_more_bandwidth():
    for seed, scarcity in zip(range(6), (-0.5, -0.25, 0.0, 0.25, 0.5, 1.0)):
        importance = np.array([1.0, 1.5, 2.0, 3.0])
        problem = make_problem(4, 80 + seed, scarcity=scarcity, gain=np.full(4, 10**-11.5),
                               alpha=np.full(4, 0.25), u_sign=0.3 * importance, u_modulus=importance)
        bandwidth = allocate(problem).bandwidth
        assert np.all(np.diff(bandwidth) >= -1e-9 * problem.total_bandwidth), bandwidth
        assert bandwidth[-1] > bandwidth[0]


def _sign_energy_share(problem):
    result = allocate(problem, "power")
    c_s, c_m = problem.power_weights
    spent = c_s * result.power_sign + c_m * result.power_modulus
    return (c_s * result.power_sign / spent)[0]


def test_sign_share_grows_as_modulus_worth_shrinks():
    shares = [
        _sign_energy_share(make_problem(1, 90, gain=[10**-11.5], alpha=[1.0], u_sign=[1.0], u_modulus=[u_m]))
        for u_m in (50.0, 10.0, 4.0, 2.0, 1.5, 1.1, 1.0)
    ]
    assert np.all(np.diff(shares) >= -1e-9), shares
    assert shares[-1] == pytest.approx(1.0) and shares[0] < 0.9


def test_sign_share_grows_as_the_channel_weakens():
    base = make_problem(1, 91, gain=[10**-11.5], alpha=[1.0], u_sign=[1.0], u_modulus=[3.0])
    shares = [_sign_energy_share(replace(base, gain=[gain])) for gain in 10 ** np.linspace(-10.5, -13.5, 13)]
    assert np.all(np.diff(shares) >= -1e-9), shares
    assert shares[-1] == pytest.approx(1.0) and shares[0] < 0.5
