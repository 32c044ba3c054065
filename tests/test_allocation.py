"""Allocation: problem validation, the objective and its normalization, the solver's blocks, the policies,
and the behaviour the model predicts."""

import itertools
from dataclasses import replace

import numpy as np
import pytest

from allocation_reference import (
    NOISE_PSD,
    assert_consistent,
    assert_feasible,
    exact_factors,
    point_arrays,
    sample_problem,
)
from spfl.simulator.allocation import ALLOCATION_POLICIES, AllocationProblem, allocate, objective, uniform_point
from spfl.simulator.allocation.bandwidth import knapsack
from spfl.simulator.allocation.objective import device_coefficients, dilution, normalization_factors
from spfl.simulator.allocation.power import best_split
from spfl.simulator.channel import failure_threshold

SWITCHES = [(fading, normalize) for fading in ("block", "per_packet") for normalize in ("all", "received")]


# --- problem -------------------------------------------------------------------------------------------

BASE = dict(alpha=[0.5, 0.5], gain=[1e-10, 1e-11], u_sign=[1.0, -0.5], u_modulus=[2.0, 1.0], total_bandwidth=1e6,
            max_power=0.2, noise_psd=NOISE_PSD, deadline=0.1, sign_bits=1e4, modulus_bits=3.1e5, slot_share=None,
            normalize="all")


@pytest.mark.parametrize(
    "change, field",
    [
        ({"alpha": [0.5, -0.1]}, "alpha"),
        ({"alpha": [0.0, 0.0]}, "alpha"),
        ({"gain": [1e-10, np.nan]}, "gain"),
        ({"gain": [1e-10, -1e-10]}, "gain"),
        ({"u_sign": [[1.0, 2.0]]}, "u_sign"),
        ({"u_sign": [1.0, np.inf]}, "u_sign"),
        ({"u_modulus": [1.0]}, "equal lengths"),
        ({"u_modulus": []}, "u_modulus"),
        ({"total_bandwidth": 0.0}, "total_bandwidth"),
        ({"max_power": -1.0}, "max_power"),
        ({"noise_psd": np.inf}, "noise_psd"),
        ({"deadline": 0.0}, "deadline"),
        ({"sign_bits": 0}, "sign_bits"),
        ({"modulus_bits": -1.0}, "modulus_bits"),
        ({"modulus_bits": np.nan}, "modulus_bits"),
        ({"power_constraint": "peak"}, "power_constraint"),
        ({"per_model": "rician"}, "per_model"),
        ({"fading": "fast"}, "fading"),
        ({"normalize": "none"}, "normalize"),
        ({"slot_share": 0.0}, "slot_share"),
        ({"slot_share": 1.5}, "slot_share"),
        ({"waterfall_m": 0.0}, "waterfall_m"),
    ],
)
def test_problem_validation_names_the_field(change, field):
    with pytest.raises(ValueError, match=field):
        AllocationProblem(**{**BASE, **change})


def test_problem_derived_quantities():
    problem = AllocationProblem(**{**BASE, "slot_share": 0.25})
    assert problem.two_packets and problem.fixed_share == 0.25
    assert problem.proportional_share == pytest.approx(1e4 / 3.2e5)
    assert np.allclose(problem.power_weights(0.25), (0.25, 0.75))
    assert problem.equal_power(0.25) == pytest.approx(0.2)
    summed = replace(problem, power_constraint="sum")
    assert np.allclose(summed.power_weights(0.25), (1.0, 1.0)) and summed.equal_power(0.25) == pytest.approx(0.1)
    optimized = AllocationProblem(**BASE)
    assert optimized.slot_share is None and optimized.fixed_share == optimized.proportional_share
    single = AllocationProblem(**{**BASE, "modulus_bits": 0})
    assert not single.two_packets and single.slot_share == 1.0 and single.equal_power(1.0) == pytest.approx(0.2)
    assert single.u_sign[1] == -0.5  # any finite worth is allowed


def test_problem_copies_and_freezes_its_arrays():
    alpha = np.array([0.5, 0.5])
    problem = AllocationProblem(**{**BASE, "alpha": alpha})
    alpha[0] = 9.0
    assert problem.alpha[0] == 0.5
    with pytest.raises(ValueError):
        problem.alpha[0] = 1.0


# --- objective -----------------------------------------------------------------------------------------

def _by_hand(problem, bandwidth, power_sign, power_modulus, tau):
    """Phi from the Shannon outage rule and an enumeration of every device's outcome (lost / sign only /
    both), with the aggregate's weights alpha_k I_k (all) or alpha_k I_k / sum alpha_j I_j (received)."""
    def threshold(bits, slot, power):
        rate_need = 2.0 ** (bits / (bandwidth * slot)) - 1.0
        return bandwidth * problem.noise_psd * rate_need / (power * problem.gain)

    pi_s = np.exp(-threshold(problem.sign_bits, tau * problem.deadline, power_sign))
    pi_m = np.exp(-threshold(problem.modulus_bits, (1 - tau) * problem.deadline, power_modulus))
    pi_both = np.minimum(pi_s, pi_m) if problem.fading == "block" else pi_s * pi_m
    outcomes = {"lost": 1 - pi_s, "sign": pi_s - pi_both, "both": pi_both}
    total = 0.0
    for states in itertools.product(outcomes, repeat=problem.num_devices):
        probability = np.prod([outcomes[s][k] for k, s in enumerate(states)])
        included = np.array([s == "both" or (s == "sign" and problem.sign_only_counts) for s in states])
        worth = np.array([problem.u_modulus[k] if s == "both" else problem.u_sign[k] for k, s in enumerate(states)])
        weights = problem.alpha * included
        if problem.normalize == "received":
            if not included.any():
                continue
            weights = weights / weights.sum()
        total += probability * float(np.sum(weights * worth))
    return total


@pytest.mark.parametrize("fading, normalize", SWITCHES)
@pytest.mark.parametrize("sign_only_counts", [True, False])
def test_objective_is_the_expected_surrogate(fading, normalize, sign_only_counts):
    problem = AllocationProblem(**{**BASE, "alpha": [0.3, 0.7], "fading": fading, "normalize": normalize,
                                   "sign_only_counts": sign_only_counts})
    bandwidth = np.array([4e5, 6e5])
    # Arrival probabilities: sign (0.99, 0.34), modulus (0.27, 0.71): device 1's sign is the more
    # reliable packet, device 2's the less reliable one, so min and product differ in both directions.
    power_sign, power_modulus, tau = np.array([0.002, 0.002]), np.array([0.01, 0.03]), np.array([0.2, 0.05])
    want = _by_hand(problem, bandwidth, power_sign, power_modulus, tau)
    got = objective(problem, bandwidth, power_sign, power_modulus, tau)
    assert got == pytest.approx(want, rel=1e-12)
    pi = [np.exp(-failure_threshold(bandwidth, power, problem.gain, bits, share * problem.deadline, NOISE_PSD))
          for power, bits, share in ((power_sign, problem.sign_bits, tau),
                                     (power_modulus, problem.modulus_bits, 1 - tau))]
    assert pi[0][0] > pi[1][0] + 0.5 and pi[0][1] < pi[1][1] - 0.3


def test_objective_of_a_single_packet_and_of_silent_devices():
    problem = AllocationProblem(**{**BASE, "modulus_bits": 0, "u_sign": [2.0, 1.0]})
    bandwidth, power = np.array([4e5, 6e5]), np.array([0.2, 0.2])
    t = failure_threshold(bandwidth, power, problem.gain, problem.sign_bits, problem.deadline, NOISE_PSD)
    want = float(np.sum(problem.alpha * np.exp(-t) * problem.u_sign))
    assert objective(problem, bandwidth, power, np.zeros(2)) == pytest.approx(want, rel=1e-12)
    # No band or no power: the device is never heard.
    assert objective(problem, np.array([0.0, 6e5]), power, np.zeros(2)) == pytest.approx(want - problem.alpha[0]
                                                                                       * np.exp(-t[0]) * 2.0)
    assert objective(problem, bandwidth, np.zeros(2), np.zeros(2)) == 0.0


def test_normalization_factors_match_enumeration():
    rng = np.random.default_rng(5)
    worst = 0.0
    for trial in range(40):
        num = int(rng.integers(1, 11))
        alpha = 10 ** rng.uniform(-4.0, 0.0, num)
        alpha[rng.integers(num)] = 1.0
        alpha *= rng.uniform(0.01, 100.0)  # any scale: the quadrature follows mean(alpha)
        include = rng.choice([0.0, 1.0, *rng.uniform(0.0, 1.0, 6)], size=(3, num))
        problem = replace(sample_problem(num, trial, normalize="received"), alpha=alpha)
        got = normalization_factors(problem, include)
        want = exact_factors(alpha, include)
        worst = max(worst, float(np.max(np.abs(got - want) / want)))
        assert np.all(normalization_factors(replace(problem, normalize="all"), include) == 1.0)
    assert worst < 1e-10, worst


def test_dilution_is_the_derivative_through_the_other_normalizations():
    rng = np.random.default_rng(6)
    for trial in range(10):
        num = int(rng.integers(2, 9))
        problem = replace(sample_problem(num, trial, normalize="received"), alpha=10 ** rng.uniform(-3, 0, num))
        values = rng.normal(size=num) * problem.alpha
        include = rng.uniform(0.05, 0.95, num)
        got = dilution(problem, values, include)
        step = 1e-4
        for j in range(num):
            up, down = include.copy(), include.copy()
            up[j] += step
            down[j] -= step
            numeric = (np.sum(values * normalization_factors(problem, up))
                       - np.sum(values * normalization_factors(problem, down))) / (2 * step)
            scale = float(np.sum(np.abs(values) * normalization_factors(problem, include)))
            assert got[j] == pytest.approx(numeric, rel=1e-7, abs=1e-9 * scale)
        assert np.all(dilution(replace(problem, normalize="all"), values, include) == 0.0)


# --- power block ---------------------------------------------------------------------------------------

_SPLITS = np.unique(np.concatenate([1 / (1 + np.exp(-np.linspace(-30, 30, 60001))), np.linspace(0, 1, 20001)]))


def _grid_best(problem, bandwidth, tau, a, b):
    """max(0, max over the sign's power share x of a pi_sign + b pi_both), on a dense 1-D grid."""
    arrays = point_arrays(problem, bandwidth[:, None] / problem.total_bandwidth, _SPLITS[None, :], tau)
    t_s = failure_threshold(arrays[0], arrays[1], problem.gain[:, None], problem.sign_bits, tau * problem.deadline,
                            NOISE_PSD, problem.per_model, problem.waterfall_m)
    t_m = failure_threshold(arrays[0], arrays[2], problem.gain[:, None], problem.modulus_bits,
                            (1 - tau) * problem.deadline, NOISE_PSD, problem.per_model, problem.waterfall_m)
    pi_s, pi_m = np.exp(-t_s), np.exp(-t_m)
    pi_both = np.minimum(pi_s, pi_m) if problem.fading == "block" else pi_s * pi_m
    return np.maximum(0.0, np.max(a[:, None] * pi_s + b[:, None] * pi_both, axis=1))


def _term_at(problem, bandwidth, split, a, b):
    """a pi_sign + b pi_both at the split's own powers (what the split claims must be achieved)."""
    t_s = failure_threshold(bandwidth, split.power_sign, problem.gain, problem.sign_bits,
                            split.slot_share * problem.deadline, NOISE_PSD, problem.per_model, problem.waterfall_m)
    t_m = failure_threshold(bandwidth, split.power_modulus, problem.gain, problem.modulus_bits,
                            (1 - split.slot_share) * problem.deadline, NOISE_PSD, problem.per_model,
                            problem.waterfall_m)
    pi_s, pi_m = np.exp(-t_s), np.exp(-t_m)
    pi_both = np.minimum(pi_s, pi_m) if problem.fading == "block" else pi_s * pi_m
    return a * pi_s + b * pi_both


@pytest.mark.parametrize("fading", ["block", "per_packet"])
@pytest.mark.parametrize("power_constraint", ["energy", "sum"])
def test_power_block_is_the_global_optimum_per_device(fading, power_constraint):
    rng = np.random.default_rng(7)
    worst = 0.0
    for seed in range(12):
        problem = sample_problem(8, 100 + seed, scarcity=rng.uniform(-1.5, 1.0), fading=fading,
                                 power_constraint=power_constraint, slot_share=float(rng.uniform(0.02, 0.9)),
                                 per_model="waterfall" if seed == 11 else "outage")
        bandwidth = problem.total_bandwidth * rng.dirichlet(np.ones(8))
        a, b = device_coefficients(problem)
        if seed % 2:  # the received normalization's coefficients have any sign
            a, b = a * rng.normal(size=8), b * rng.normal(size=8)
        split = best_split(problem, bandwidth, a, b)
        c_s, c_m = problem.power_weights(split.slot_share)
        assert np.all(c_s * split.power_sign + c_m * split.power_modulus <= problem.max_power * (1 + 1e-12))
        achieved = np.where(split.power_sign > 0, _term_at(problem, bandwidth, split, a, b), 0.0)
        np.testing.assert_allclose(split.value, achieved, rtol=1e-12, atol=0)
        best = _grid_best(problem, bandwidth, problem.slot_share, a, b)
        worst = max(worst, float(np.max((best - split.value) / np.maximum(best, 1e-300))))
    assert worst <= 1e-6, worst


def test_block_packet_maximum_is_exact():
    """Under block fading the packet level's closed form plus Newton steps (spfl.simulator.allocation.packet) is
    the global maximum of f(x) = a e^{-A/x} + b e^{-max(A/x, M/(1-x))} over x in (0, 1] and silence, to
    1e-12 of it, against a dense grid of x (uniform and logit-spaced), for thresholds over six decades and
    coefficients of either sign; the reported x achieves the reported value."""
    from spfl.simulator.allocation.packet import BlockPacket

    rng = np.random.default_rng(44)
    count = 400
    A, M = 10 ** rng.uniform(-4.0, 1.5, count), 10 ** rng.uniform(-4.0, 1.5, count)
    a = 10 ** rng.uniform(-3.0, 3.0, count) * np.where(rng.random(count) < 0.2, -1.0, 1.0)
    b = 10 ** rng.uniform(-3.0, 3.0, count) * np.where(rng.random(count) < 0.2, -1.0, 1.0)
    value, x = BlockPacket(A, M).best(a, b)
    grid = np.concatenate([np.linspace(0.0, 1.0, 20001)[1:], 1.0 / (1.0 + np.exp(-np.linspace(-30, 30, 20001)))])
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        dense = a[:, None] * np.exp(-A[:, None] / grid) + b[:, None] * np.exp(
            -np.maximum(A[:, None] / grid, M[:, None] / (1.0 - grid)))
        achieved = a * np.exp(-A / x) + b * np.exp(-np.maximum(A / x, M / (1.0 - x)))
    best = np.maximum(np.nanmax(dense, axis=1), 0.0)
    assert np.all(np.maximum(value, 0.0) >= best - 1e-12 * np.abs(best))
    np.testing.assert_allclose(achieved, value, rtol=1e-12, atol=1e-300)


def test_packet_search_lattice_is_the_zoom_arithmetic():
    """The tabulated search points are bitwise the logits the zoom computes (centre + step * offset, the
    step shrinking by (points - 1) / 2 per level), and exp underflows to exactly 0 where the search stops
    computing it."""
    from spfl.simulator.allocation import power
    rng = np.random.default_rng(3)
    offsets = np.linspace(-1.0, 1.0, power._ZOOM_POINTS)
    for _ in range(200):
        pick = int(rng.integers(power._COARSE.size))
        center, index = power._COARSE[pick], power._COARSE_INDEX[pick]
        step, stride = power._COARSE[1] - power._COARSE[0], power._COARSE_STRIDE
        for _ in range(power._ZOOM_LEVELS):
            j = int(rng.integers(power._ZOOM_POINTS))
            center = center + step * offsets[j]
            index = index + (stride // power._SHRINK) * (j - power._SHRINK)
            assert power._LATTICE[index] == center
            assert power._LATTICE_X[index] == 1.0 / (1.0 + np.exp(-center))
            step, stride = step * 2.0 / (power._ZOOM_POINTS - 1), stride // power._SHRINK
    with np.errstate(under="ignore"):
        assert np.exp(-power._UNDERFLOW) == 0.0 and np.exp(-np.nextafter(745.0, 0)) > 0.0
        t = rng.uniform(0.0, 2000.0, 10_000)
        np.testing.assert_array_equal(power._exp_negative(t.copy()), np.exp(-t))


def test_power_block_sign_only_and_silent_devices():
    problem = AllocationProblem(**{**BASE, "alpha": [0.25, 0.25, 0.25, 0.25], "gain": [1e-10] * 4,
                                   "u_sign": [2.0, -1.0, 1.0, 0.0], "u_modulus": [1.0, -0.5, 3.0, 0.0],
                                   "slot_share": 0.1})
    bandwidth = np.full(4, 2.5e6)
    a, b = device_coefficients(problem)
    split = best_split(problem, bandwidth, a, b)
    # U_s > U_m: the modulus only dilutes the sign's worth, so the whole budget goes to the sign.
    assert split.power_modulus[0] == 0.0 and split.power_sign[0] == pytest.approx(problem.max_power / 0.1)
    assert split.value[0] > 0
    # Every receipt harmful (U_s, U_m < 0), and a worthless device: silent.
    assert split.value[1] == 0.0 and split.power_sign[1] == 0.0 and split.power_modulus[1] == 0.0
    assert split.value[3] == 0.0 and split.power_sign[3] == 0.0
    # An ordinary device sends both packets.
    assert split.power_sign[2] > 0 and split.power_modulus[2] > 0
    best = _grid_best(problem, bandwidth, 0.1, a, b)
    assert np.all(split.value >= best * (1 - 1e-9))


# --- bandwidth block -----------------------------------------------------------------------------------

def test_knapsack_matches_brute_force():
    rng = np.random.default_rng(8)
    for _ in range(200):
        num, options = int(rng.integers(1, 5)), int(rng.integers(1, 7))
        values = rng.normal(size=(num, options))
        values[rng.random((num, options)) < 0.2] = -np.inf
        total = int(rng.integers(0, num * (options - 1) + 1))
        best = -np.inf
        for choice in itertools.product(range(options), repeat=num):
            if sum(choice) == total:
                best = max(best, float(sum(values[k, j] for k, j in enumerate(choice))))
        if best == -np.inf:
            continue  # no finite choice: see test_knapsack_without_a_finite_choice
        chosen = knapsack(values, total)
        assert chosen.sum() == total and np.all((chosen >= 0) & (chosen < options))
        got = float(sum(values[k, j] for k, j in enumerate(chosen)))
        assert got == best or got == pytest.approx(best, rel=1e-12)
    with pytest.raises(ValueError, match="knapsack"):
        knapsack(np.zeros((2, 3)), 5)


def _prefix_best(values, count, total):
    """The best sum of values[k, j_k] over the first ``count`` devices with sum j_k = total (enumeration)."""
    best = -np.inf
    for choice in itertools.product(range(values.shape[1]), repeat=count):
        if sum(choice) == total:
            best = max(best, float(sum(values[k, j] for k, j in enumerate(choice))))
    return best


@pytest.mark.parametrize("options, nums, totals", [(2, (9, 11), (8, 11)), (3, (6, 8), (12, 15)), (5, (2, 4), (0, 9)),
                                                   (6, (2, 4), (3, 11))])
def test_knapsack_ties_go_to_the_smallest_option_from_the_last_device(options, nums, totals):
    """Integer values make ties common; both layouts of the dynamic program (many sums per option, and
    about as many options as sums) break them by the documented rule."""
    rng = np.random.default_rng(options)
    for _ in range(25):
        num = int(rng.integers(*nums))
        values = rng.integers(0, 3, size=(num, options)).astype(float)
        total = min(int(rng.integers(*totals)), num * (options - 1))
        assert (total + 1 > 4 * options) == (options <= 3)  # the first two cases take the other layout
        chosen = knapsack(values, total)
        left = total
        for k in range(num - 1, 0, -1):
            target = _prefix_best(values, k + 1, left)
            expected = next(j for j in range(min(options, left + 1))
                            if _prefix_best(values, k, left - j) + values[k, j] == target)
            assert chosen[k] == expected, (values, total, chosen)
            left -= expected
        assert chosen[0] == left


def test_best_choices_reaches_the_dynamic_programs_optimum():
    """The solver's knapsack (concave devices by their sorted marginal gains, the others by the dynamic
    program) reaches knapsack's optimum on random batches: concave, flat (silent), S-shaped and noisy
    devices, impossible options at the ends (the zooms) or inside, ties; the totals are exact, and a
    problem without a finite choice is refused as knapsack refuses it."""
    from spfl.simulator.allocation.bandwidth import best_choices

    rng = np.random.default_rng(21)
    checked = 0
    for _ in range(400):
        num, options = int(rng.integers(1, 9)), int(rng.integers(2, 14))
        total = int(rng.integers(0, num * (options - 1) + 1))
        kinds = rng.integers(0, 5, num)
        steps = np.arange(options)
        rows = []
        for kind in kinds:
            if kind == 0:    # concave
                row = np.sqrt(steps) * rng.uniform(0.1, 2.0)
            elif kind == 1:  # flat (a silent device)
                row = np.zeros(options)
            elif kind == 2:  # S-shaped
                row = 1.0 / (1.0 + np.exp(-(steps - rng.uniform(0, options)) * rng.uniform(0.5, 3.0)))
            elif kind == 3:  # rounded values: ties
                row = np.round(rng.normal(size=options), 1)
            else:            # noise
                row = rng.normal(size=options)
            rows.append(row)
        values = np.array(rows)
        holes = rng.random(values.shape) < 0.15
        if rng.random() < 0.5:   # only at the ends of each row, as in a zoom
            holes = holes & ((steps < 2) | (steps > options - 3))[None, :]
        values[holes] = -np.inf
        try:
            expected = knapsack(values, total)
        except ValueError:
            with pytest.raises(ValueError):
                best_choices(values[None], total)
            continue
        chosen = best_choices(values[None], total)[0]
        assert chosen.sum() == total and np.all((chosen >= 0) & (chosen < options))
        got, best = (float(values[np.arange(num), c].sum()) for c in (chosen, expected))
        assert np.isfinite(got) and got >= best - 1e-12 * max(1.0, np.max(np.abs(values[np.isfinite(values)])))
        checked += 1
    assert checked >= 200


def test_knapsack_without_a_finite_choice():
    values = np.array([[0.0, 0.0], [0.0, -np.inf]])
    try:
        chosen = knapsack(values, 2)
    except ValueError:
        return
    assert np.all((chosen >= 0) & (chosen < 2)), chosen


# --- policies ------------------------------------------------------------------------------------------

def test_unknown_policy_names_the_allowed_ones():
    with pytest.raises(ValueError, match="spfl"):
        allocate(sample_problem(2, 0), "greedy")


def _policy_cases(fading, normalize):
    for seed in range(6):
        yield sample_problem(5, 10 + seed, scarcity=-1.5 + 0.5 * seed, fading=fading, normalize=normalize,
                             power_constraint=("energy", "sum")[seed % 2],
                             slot_share=(None, 0.2, None)[seed % 3], sign_only_counts=seed != 4,
                             **({"modulus_bits": 0} if seed == 5 else {}))


@pytest.mark.parametrize("fading, normalize", SWITCHES)
@pytest.mark.parametrize("policy", ALLOCATION_POLICIES)
def test_every_policy_is_feasible_and_consistent(policy, fading, normalize):
    for problem in _policy_cases(fading, normalize):
        result = allocate(problem, policy)
        assert result.policy == policy
        assert_feasible(problem, result)
        assert_consistent(problem, result)
        assert result.trace[0] == pytest.approx(objective(problem, *uniform_point(problem)), rel=1e-12)


@pytest.mark.parametrize("fading, normalize", SWITCHES)
def test_optimized_share_beats_the_classical_points(fading, normalize):
    """With tau optimized, Phi is never below the signSGD-like point (tau = 1, all power to the sign),
    the digital-like point (proportional tau, both packets equally reliable) or the optimum at the
    proportional tau."""
    for seed in range(5):
        problem = sample_problem(6, 20 + seed, scarcity=-1.0 + 0.5 * seed, fading=fading, normalize=normalize,
                                 power_constraint=("energy", "sum")[seed % 2], slot_share=None)
        result = allocate(problem)
        assert_feasible(problem, result)
        num = problem.num_devices
        uniform = np.full(num, 1.0 / num)
        sign_only = objective(problem, *point_arrays(problem, uniform, np.ones(num), np.ones(num)))
        tau = problem.proportional_share
        c_s, c_m = problem.power_weights(tau)
        unit = [failure_threshold(uniform * problem.total_bandwidth, 1.0, problem.gain, bits, slot * problem.deadline,
                                  NOISE_PSD) for bits, slot in ((problem.sign_bits, tau),
                                                                (problem.modulus_bits, 1 - tau))]
        theta = unit[0] * c_s / (unit[0] * c_s + unit[1] * c_m)  # t_s = t_m
        digital = objective(problem, *point_arrays(problem, uniform, theta, np.full(num, tau)))
        proportional = allocate(replace(problem, slot_share=tau)).objective
        floor = max(sign_only, digital, proportional)
        assert result.objective >= floor - 1e-12 * abs(floor), (seed, result.objective, sign_only, digital,
                                                                proportional)


@pytest.mark.parametrize("normalize", ["all", "received"])
def test_scheduling_picks_the_best_top_n_set(normalize):
    for seed in range(5):
        problem = sample_problem(6, 50 + seed, scarcity=-1.0 + 0.5 * seed, modulus_bits=0, normalize=normalize)
        result = allocate(problem, "scheduling")
        served = result.bandwidth > 0
        n = int(served.sum())
        np.testing.assert_allclose(result.bandwidth[served], problem.total_bandwidth / n, rtol=1e-12)
        assert np.all(result.power_sign[served] == problem.max_power) and np.all(result.power_sign[~served] == 0)
        best = -np.inf
        for size in range(1, 7):
            share = problem.total_bandwidth / size
            t = failure_threshold(share, problem.max_power, problem.gain, problem.sign_bits, problem.deadline,
                                  NOISE_PSD)
            chosen = np.argsort(-problem.alpha * np.exp(-t) * problem.u_modulus, kind="stable")[:size]
            bandwidth, power = np.zeros(6), np.zeros(6)
            bandwidth[chosen], power[chosen] = share, problem.max_power
            best = max(best, objective(problem, bandwidth, power, np.zeros(6)))
        assert result.objective == pytest.approx(max(best, result.trace[0]), rel=1e-12)


def test_ablation_policies_touch_only_their_block():
    for normalize in ("all", "received"):
        problem = sample_problem(5, 40, power_constraint="sum", slot_share=0.2, normalize=normalize,
                                 u_sign=np.full(5, 0.5), u_modulus=np.full(5, 1.0))
        power = allocate(problem, "power")
        served = power.power_sign > 0
        np.testing.assert_allclose(power.bandwidth[served], problem.total_bandwidth / 5, rtol=1e-12)
        assert np.all(power.bandwidth[~served] == 0)
        bandwidth = allocate(problem, "bandwidth")
        served = bandwidth.power_sign > 0
        assert served.any()
        np.testing.assert_allclose(bandwidth.power_sign[served], problem.max_power / 2, rtol=1e-12)
        np.testing.assert_allclose(bandwidth.power_modulus[served], problem.max_power / 2, rtol=1e-12)
        uniform = allocate(problem, "uniform")
        np.testing.assert_allclose(uniform.bandwidth, problem.total_bandwidth / 5)
        np.testing.assert_allclose(uniform.power_sign, problem.max_power / 2)
        assert uniform.trace == (uniform.objective,)
        best = allocate(problem).objective
        # Under received, spfl's successive linearization is a heuristic: seen 7e-7 below "power" here.
        rel = 1e-9 if normalize == "all" else 1e-5
        assert best >= max(power.objective, bandwidth.objective, uniform.objective) * (1 - rel)


def test_single_device_and_degenerate_devices():
    one = sample_problem(1, 60, u_sign=[0.5])
    result = allocate(one)
    assert result.bandwidth[0] == pytest.approx(one.total_bandwidth)
    assert_feasible(one, result)
    # Zero weight, zero worths, a harmful sign and a hopeless channel beside two ordinary devices.
    problem = sample_problem(6, 61, alpha=[0.0, 0.3, 0.2, 0.2, 0.2, 0.1], u_sign=[1.0, 0.0, 0.5, 0.2, -5.0, 0.1],
                             u_modulus=[2.0, 0.0, 1.5, 0.8, -0.5, 0.9], gain=[1e-10, 1e-10, 1e-10, 1e-30, 1e-10, 1e-11])
    for normalize in ("all", "received"):
        for policy in ALLOCATION_POLICIES:
            result = allocate(replace(problem, normalize=normalize), policy)
            assert_feasible(problem, result)
            assert np.isfinite(result.objective)
        spfl = allocate(replace(problem, normalize=normalize))
        assert np.all(spfl.bandwidth[[0, 1, 3, 4]] == 0.0), spfl.bandwidth  # worthless or harmful: nothing
        assert spfl.bandwidth.sum() == pytest.approx(problem.total_bandwidth, rel=1e-12)


@pytest.mark.parametrize("policy", ALLOCATION_POLICIES)
def test_waterfall_model_runs(policy):
    for seed, normalize in enumerate(("all", "received")):
        problem = sample_problem(4, 70 + seed, per_model="waterfall", normalize=normalize, waterfall_m=2.0)
        result = allocate(problem, policy)
        assert_feasible(problem, result)
        assert_consistent(problem, result)


# --- behaviour the model predicts ----------------------------------------------------------------------

def test_equal_channels_more_important_device_gets_more_bandwidth():
    for seed, scarcity in enumerate((-0.5, -0.25, 0.0, 0.25, 0.5, 1.0)):
        importance = np.array([1.0, 1.5, 2.0, 3.0])
        problem = sample_problem(4, 80 + seed, scarcity=scarcity, gain=np.full(4, 10**-11.5), alpha=np.full(4, 0.25),
                                 u_sign=0.3 * importance, u_modulus=importance, normalize="all", slot_share=0.1)
        bandwidth = allocate(problem).bandwidth
        assert np.all(np.diff(bandwidth) >= -1e-9 * problem.total_bandwidth), bandwidth
        assert bandwidth[-1] > bandwidth[0]


@pytest.mark.parametrize("fading", ["block", "per_packet"])
def test_sign_power_share_grows_as_the_channel_weakens(fading):
    base = sample_problem(1, 91, gain=[10**-11.5], alpha=[1.0], u_sign=[1.0], u_modulus=[3.0], slot_share=0.1,
                          fading=fading)
    shares = []
    for gain in 10 ** np.linspace(-10.0, -14.0, 17):
        result = allocate(replace(base, gain=[gain]), "power")
        c_s, c_m = base.power_weights(result.slot_share)
        spent = c_s * result.power_sign + c_m * result.power_modulus
        shares.append(float((c_s * result.power_sign / spent)[0]))
    assert np.all(np.diff(shares) >= -1e-6), shares
    assert shares[-1] == 1.0 and shares[0] < 0.5, shares


# --- mutation survivors (full mutmut run, session 4) ---------------------------------------------------

def test_packet_worth_closed_form_in_float64():
    """U_m = (eta - L eta^2 / 2) ||g||^2 and U_s = eta <|g|, c> - (L eta^2 / 2) ||c||^2 (docs/model.md,
    section 6) on hand-computed numbers, always in float64, also from float32 or integer inputs."""
    from spfl.simulator.allocation import packet_worth

    # eta = 0.1, L = 2: L eta^2 / 2 = 0.01, eta - 0.01 = 0.09.
    u_sign, u_modulus = packet_worth([4.0, 10.0], [3.0, 1.0], [2.0, 50.0], 0.1, 2.0)
    np.testing.assert_allclose(u_modulus, [0.36, 0.9], rtol=1e-14)
    np.testing.assert_allclose(u_sign, [0.28, -0.4], rtol=1e-14)
    u_sign, u_modulus = packet_worth(np.array([4, 10]), np.array([3, 1]), np.array([2, 50]), 0.1, 2.0)
    np.testing.assert_allclose(u_modulus, [0.36, 0.9], rtol=1e-14)
    np.testing.assert_allclose(u_sign, [0.28, -0.4], rtol=1e-14)
    # float32 inputs are widened before the arithmetic: the result is the float64 formula of their values.
    x = np.array([0.7, 1.7], dtype=np.float32)
    wide = x.astype(np.float64)
    one = np.ones(2)
    for index in range(3):
        args = [one, one, one]
        args[index] = x
        u_sign, u_modulus = packet_worth(*args, 0.1, 2.0)
        assert u_sign.dtype == np.float64 and u_modulus.dtype == np.float64
        squared_norm, inner, c_squared = (wide if i == index else one for i in range(3))
        np.testing.assert_allclose(u_modulus, 0.09 * squared_norm, rtol=1e-14)
        np.testing.assert_allclose(u_sign, 0.1 * inner - 0.01 * c_squared, rtol=1e-14)


def test_bandwidth_policy_moves_bandwidth_to_the_better_channel():
    """``bandwidth`` optimizes the bandwidth (at equal packet powers): with one device 10 dB weaker, it
    reaches the best point of a plain scan over the first device's share, above the uniform split."""
    problem = sample_problem(2, 5, scarcity=-0.5, gain=[1e-10, 1e-11], alpha=[0.5, 0.5], u_sign=[0.5, 0.5],
                             u_modulus=[1.0, 1.0], slot_share=0.2)
    power = float(problem.equal_power(0.2))
    scan = max(objective(problem, np.array([b, 1.0 - b]) * problem.total_bandwidth, np.full(2, power),
                         np.full(2, power), np.full(2, 0.2)) for b in np.linspace(0.0, 1.0, 201))
    uniform = objective(problem, *uniform_point(problem))
    assert scan > uniform * 1.01
    result = allocate(problem, "bandwidth")
    assert result.objective >= scan * (1 - 1e-6)


def _scheduling_by_hand(problem):
    """The documented scheduling rule as a plain loop over n: one packet at full power to the n devices
    with the largest alpha_k pi_k(B_tot / n) U_m,k (ties: lower index first), equal shares; the first n
    with the largest Phi wins, and it is taken only if it beats the uniform point."""
    num = problem.num_devices
    tau = problem.fixed_share
    full = float(problem.equal_power(tau))
    best_value, best = -np.inf, None
    for n in range(1, num + 1):
        share = problem.total_bandwidth / n
        t = failure_threshold(share, full, problem.gain, problem.sign_bits, tau * problem.deadline,
                              problem.noise_psd, problem.per_model, problem.waterfall_m)
        score = [problem.alpha[k] * np.exp(-t[k]) * problem.u_modulus[k] for k in range(num)]
        chosen = sorted(range(num), key=lambda k: (-score[k], k))[:n]
        bandwidth, power = np.zeros(num), np.zeros(num)
        bandwidth[chosen], power[chosen] = share, full
        value = objective(problem, bandwidth, power, np.zeros(num), np.full(num, tau))
        if value > best_value:  # NaN never wins
            best_value, best = value, (bandwidth, power)
    uniform = objective(problem, *uniform_point(problem))
    if best is not None and best_value > uniform + 1e-9 * abs(uniform):
        return best
    bandwidth, power, _, _ = uniform_point(problem)
    return bandwidth, power


def _scheduling_cases():
    # Devices 2 and 3 tie, and so do 0 and 1: the best n is 1 (scarce) or 3 (middle).
    ties = dict(modulus_bits=0, alpha=[0.25] * 4, gain=[1e-10] * 4, u_modulus=[1, 1, 2, 2], u_sign=[1, 1, 2, 2])
    yield sample_problem(4, 3, -0.5, **ties)
    yield sample_problem(4, 3, 0.0, **ties)
    # A device of negative worth (never worth serving) and a best n in the middle, under both normalizations.
    negative = dict(modulus_bits=0, u_modulus=[2, -0.5, 1, 1.5, 0.8], u_sign=[2, -0.5, 1, 1.5, 0.8])
    yield sample_problem(5, 7, 0.0, **negative)
    yield sample_problem(5, 7, 0.0, normalize="received", **negative)
    yield sample_problem(3, 8, -0.5, modulus_bits=0, u_modulus=[1.0, 1.0, 1.0], u_sign=[1.0, 1.0, 1.0])


@pytest.mark.parametrize("index", range(5))
def test_scheduling_matches_a_plain_loop_over_n(index):
    """allocate(problem, "scheduling") is the documented rule, ties and negative worths included."""
    problem = list(_scheduling_cases())[index]
    bandwidth, power = _scheduling_by_hand(problem)
    result = allocate(problem, "scheduling")
    np.testing.assert_array_equal(result.bandwidth > 0, bandwidth > 0)
    np.testing.assert_allclose(result.bandwidth, bandwidth, rtol=1e-12)
    np.testing.assert_allclose(result.power_sign, power, rtol=1e-12)
    assert result.objective == pytest.approx(objective(problem, bandwidth, power, np.zeros(problem.num_devices)),
                                             rel=1e-12)


def test_scheduling_with_many_devices_finds_a_late_n():
    """With 200 devices (Phi of the n are evaluated in several chunks) the best n is 199: every device
    but one of negative worth, which the uniform point includes."""
    num = 200
    u = np.ones(num)
    u[7] = -1.0
    problem = sample_problem(num, 9, 1.0, modulus_bits=0, alpha=np.full(num, 1.0 / num), gain=np.full(num, 1e-10),
                             u_modulus=u, u_sign=u)
    result = allocate(problem, "scheduling")
    expected = np.full(num, problem.total_bandwidth / (num - 1))
    expected[7] = 0.0
    np.testing.assert_allclose(result.bandwidth, expected, rtol=1e-12)
    bandwidth, power = _scheduling_by_hand(problem)
    np.testing.assert_allclose(result.bandwidth, bandwidth, rtol=1e-12)


def test_scheduling_never_picks_a_nan_phi():
    """A set of devices whose Phi is NaN (worths near the float64 limit overflow in the sum) is never
    chosen: the first best n with a number for Phi wins (here n = 1, device 1 alone)."""
    big = 1e308
    u_sign = np.array([-big, 1.0, big, -big, 1.0, big, -big, big])
    rank = [1, 3, 7, 0, 5, 4, 6, 2]  # the order of U_m, largest first
    u_modulus = np.zeros(8)
    u_modulus[rank] = np.arange(8, 0, -1)
    problem = sample_problem(8, 4, 2.0, modulus_bits=0, alpha=np.ones(8), gain=np.full(8, 1e-10),
                             u_modulus=u_modulus, u_sign=u_sign)
    result = allocate(problem, "scheduling")
    expected = np.zeros(8)
    expected[1] = problem.total_bandwidth
    np.testing.assert_array_equal(result.bandwidth, expected)
    with np.errstate(over="ignore", invalid="ignore"):
        bandwidth, _ = _scheduling_by_hand(problem)
    np.testing.assert_array_equal(result.bandwidth, bandwidth)


def test_sign_share_candidates_are_the_logit_grid():
    """With tau optimized the packet level tries tau = sigmoid(l) for l = -6, -4.5, ..., 6 (coarse:
    -3, 0, 3), the proportional share and 1."""
    from spfl.simulator.allocation.power import share_candidates

    problem = sample_problem(2, 1, slot_share=None)
    for coarse, logits in ((False, np.arange(-6.0, 6.1, 1.5)), (True, [-3.0, 0.0, 3.0])):
        expected = sorted({1.0 / (1.0 + np.exp(-float(z))) for z in logits} | {problem.proportional_share, 1.0})
        np.testing.assert_allclose(share_candidates(problem, coarse), expected, rtol=1e-14)


def test_refined_sign_share_reaches_the_best_of_a_dense_grid():
    """best_split(refine=True) zooms the sign share tau around the best grid entry: its value is within
    1e-6 of the best of a dense (tau, power split) grid of the device's term, computed here directly."""
    from spfl.simulator.allocation.objective import device_coefficients

    for seed in (0, 5):
        problem = sample_problem(1, seed, slot_share=None, u_sign=[0.6], u_modulus=[1.0])
        a, b = device_coefficients(problem)
        bandwidth = problem.total_bandwidth
        tau = 1.0 / (1.0 + np.exp(-np.linspace(-5.0, 0.0, 501)))[:, None]
        x = 1.0 / (1.0 + np.exp(-np.linspace(-8.0, 8.0, 1601)))[None, :]
        c_s, c_m = problem.power_weights(tau)
        t_s = failure_threshold(bandwidth, x * problem.max_power / c_s, problem.gain[0], problem.sign_bits,
                                tau * problem.deadline, NOISE_PSD)
        t_m = failure_threshold(bandwidth, (1 - x) * problem.max_power / c_m, problem.gain[0], problem.modulus_bits,
                                (1 - tau) * problem.deadline, NOISE_PSD)
        reference = float(np.max(a[0] * np.exp(-t_s) + b[0] * np.exp(-np.maximum(t_s, t_m))))
        split = best_split(problem, np.array([bandwidth]), a, b, refine=True)
        assert split.value[0] >= reference * (1 - 1e-6), (seed, split.value, reference)


@pytest.mark.parametrize("seed, scarcity, fields", [
    (105, 0.0, {}), (107, -0.5, {}), (100, 0.0, {}),
    # under the waterfall model Phi rises as a device's share goes to 0+: the zooms must go a whole step
    (601, -0.29, {"per_model": "waterfall", "u_sign": [0.63, 0.83], "u_modulus": [1.0, 1.0], "slot_share": 0.38}),
])
def test_bandwidth_policy_reaches_the_optimum_of_a_dense_scan(seed, scarcity, fields):
    """Two devices at equal packet powers: the bandwidth block (a grid of 80 steps, then two zooms in
    eighths) finds the best share of its 1/64-step lattice (multiples of 1/5120 of the band), here
    scanned directly."""
    from spfl.simulator.allocation.objective import objective_terms

    problem = sample_problem(2, seed, scarcity=scarcity, normalize="all", **{"slot_share": 0.2, **fields})
    tau = problem.slot_share
    power = np.full(2, float(problem.equal_power(tau)))
    share = (np.arange(5121) / 5120)[:, None]
    scan = float(np.max(objective_terms(problem, np.hstack([share, 1.0 - share]) * problem.total_bandwidth, power,
                                        power, np.full(2, tau)).phi))
    assert allocate(problem, "bandwidth").objective >= scan - 1e-12 * abs(scan)


def test_best_bandwidth_without_a_cache():
    """best_bandwidth works without a per-solve cache: two identical devices split the band equally."""
    from spfl.simulator.allocation.bandwidth import best_bandwidth

    problem = sample_problem(2, 3, alpha=[0.5, 0.5], gain=[1e-10, 1e-10], u_sign=[0.5, 0.5], u_modulus=[1.0, 1.0],
                             slot_share=0.2)
    share, split = best_bandwidth(problem, *device_coefficients(problem), fixed_power=True)
    np.testing.assert_allclose(share, [0.5, 0.5], rtol=1e-12)
    assert np.all(split.power_sign > 0)


def test_normalization_factors_clip_probabilities_just_above_one():
    """A p_j a rounding error above 1 counts as 1: with every device certain to arrive,
    G_k = 1 / sum_j alpha_j."""
    problem = sample_problem(3, 2, normalize="received", alpha=[0.2, 0.3, 0.5])
    factors = normalization_factors(problem, np.full(3, 1.0 + 1e-12))
    np.testing.assert_allclose(factors, 1.0, rtol=1e-10)


def test_dilution_of_a_batch_of_points():
    """dilution takes leading batch axes: each row is d Phi / d p_j through the other devices'
    normalizations, here from the exact enumeration of G by central differences."""
    rng = np.random.default_rng(8)
    num = 4
    problem = replace(sample_problem(num, 1, normalize="received"), alpha=[0.1, 0.2, 0.3, 0.4])
    values = rng.normal(size=(2, num))
    include = rng.uniform(0.1, 0.9, (2, num))
    got = dilution(problem, values, include)
    assert got.shape == (2, num)
    step = 1e-5
    for row in range(2):
        for j in range(num):
            up, down = include[row].copy(), include[row].copy()
            up[j] += step
            down[j] -= step
            change = exact_factors(problem.alpha, up) - exact_factors(problem.alpha, down)
            others = np.arange(num) != j
            numeric = np.sum((values[row] * change)[others]) / (2 * step)
            assert got[row, j] == pytest.approx(numeric, rel=1e-6, abs=1e-9)


def test_objective_widens_a_float32_sign_share():
    """The sign share enters the thresholds in float64 even when given as float32."""
    problem = sample_problem(2, 4, slot_share=None)
    tau = np.array([0.3, 0.7], dtype=np.float32)
    bandwidth = np.full(2, problem.total_bandwidth / 2)
    power = np.full(2, problem.max_power)
    got = objective(problem, bandwidth, power, power, tau)
    assert got == pytest.approx(_by_hand(problem, bandwidth, power, power, tau.astype(np.float64)), rel=1e-13)


def test_bandwidth_policy_with_sign_share_one():
    """slot_share = 1 (the sign packet holds the whole deadline): the bandwidth policy sends signs only,
    each at the whole budget (energy constraint: tau p_s <= P)."""
    problem = replace(sample_problem(3, 6, scarcity=-0.5, slot_share=0.5), slot_share=1.0)
    result = allocate(problem, "bandwidth")
    served = result.power_sign > 0
    assert served.any()
    np.testing.assert_allclose(result.power_sign[served], problem.max_power, rtol=1e-12)
    assert np.all(result.power_modulus == 0)
    assert result.objective >= objective(problem, *uniform_point(problem)) * (1 - 1e-12)


def test_spfl_trace_holds_its_ablations_before_the_linearized_rounds():
    """Under ``received`` with tau optimized, SP-FL first solves at the proportional share, then offers
    the power-only and bandwidth-only answers (with tau optimized too): the trace after those stages
    (entries 0-3: uniform, proportional share, power, bandwidth) is already at least their Phi."""
    problem = sample_problem(3, 302, scarcity=-0.5, slot_share=None, normalize="received", gain=np.full(3, 1e-10),
                             alpha=np.full(3, 1 / 3))
    result = allocate(problem)
    ablations = max(allocate(problem, "power").objective, allocate(problem, "bandwidth").objective)
    assert result.trace[3] >= ablations * (1 - 1e-12), (result.trace, ablations)


@pytest.mark.parametrize("seed, num, scarcity", [(401, 3, -0.95), (410, 3, -0.5), (415, 2, -0.25)])
def test_bandwidth_shares_are_normalized_to_one(seed, num, scarcity):
    """The bandwidth block's shares are normalized to sum to 1 (within half an ulp): the band is spent."""
    problem = sample_problem(num, seed, scarcity=scarcity, slot_share=0.2, normalize="all")
    shares = allocate(problem, "bandwidth").bandwidth / problem.total_bandwidth
    assert abs(float(np.sum(shares)) - 1.0) < 1.5e-16


def test_exp_negative_is_numpys_exp_also_for_infinite_thresholds_on_large_arrays():
    """The packet search's exp(-t) skips numpy's slow underflow path on large arrays; it must still be
    numpy's exp(-t) bit for bit, +inf (a packet that can never arrive: 0) and NaN included.  Found by a
    mutant of the full mutmut run (session 4): inf * mask gave NaN, so an entry whose modulus could never
    arrive was worth NaN (then silent) instead of its sign's worth, in grids of 4096 entries or more."""
    from spfl.simulator.allocation.power import _BIG_ARRAY, _exp_negative

    values = np.array([0.0, 1e-300, 0.5, 744.0, 745.1, 745.2, 746.0, 1e300, np.inf, np.nan])
    for size in (16, _BIG_ARRAY, 3 * _BIG_ARRAY):
        t = np.resize(values, size)
        expected = np.exp(-t)
        got = _exp_negative(t.copy())
        assert np.array_equal(got, expected, equal_nan=True), size


def test_equal_power_splits_of_a_large_grid_are_those_of_its_rows_alone():
    """The bandwidth-only policy's grid at K = 50 (5,050 entries) and each of its rows solved alone (under
    4,096 entries) give the same splits, also where the modulus can never arrive (sign share 0.99)."""
    problem = replace(sample_problem(50, 1, scarcity=-2.0, slot_share=0.5), slot_share=0.99)
    grid = np.linspace(0.0, 1.0, 101)[:, None] * np.full((1, 50), problem.total_bandwidth)
    coef_sign, coef_both = device_coefficients(problem)
    whole = best_split(problem, grid, coef_sign, coef_both, fixed_power=True)
    for row in range(grid.shape[0]):
        alone = best_split(problem, grid[row], coef_sign, coef_both, fixed_power=True)
        assert np.array_equal(whole.value[row], alone.value), row
    assert (whole.value > 0).any()


@pytest.mark.parametrize("num, units", [(1, 80), (2, 80), (3, 81), (7, 84), (50, 100), (79, 158), (80, 80),
                                        (81, 81), (300, 300), (600, 600)])
def test_grid_units_by_hand(num, units):
    """J is the smallest multiple of K that is at least 80, ceil(80 / K) * K (K itself from K = 80 on)."""
    from spfl.simulator.allocation.bandwidth import grid_units

    got = grid_units(num)
    assert got == units and isinstance(got, int)


def test_dilution_of_three_devices_by_hand():
    """K = 3: G_k is affine in p_j, with slope E_m[1 / (alpha_k + alpha_j + alpha_m I_m) - 1 / (alpha_k +
    alpha_m I_m)] over the third device m, so D_j = sum_{k != j} v_k times that slope, written out."""
    problem = replace(sample_problem(3, 1, normalize="received"), alpha=np.array([0.2, 0.3, 0.5]))
    values = np.array([2.0, -1.0, 3.0])
    include = np.array([0.25, 0.5, 0.75])
    a, v, p = [0.2, 0.3, 0.5], values, include
    expected = []
    for j in range(3):
        total = 0.0
        for k in {0, 1, 2} - {j}:
            (m,) = {0, 1, 2} - {j, k}
            slope = (p[m] * (1 / (a[k] + a[j] + a[m]) - 1 / (a[k] + a[m]))
                     + (1 - p[m]) * (1 / (a[k] + a[j]) - 1 / a[k]))
            total += v[k] * slope
        expected.append(total)
    # j = 0 by hand: -1 * (0.75 (1 - 1/0.8) + 0.25 (1/0.5 - 1/0.3)) + 3 * (0.5 (1 - 1/0.8) + 0.5 (1/0.7 - 1/0.5))
    assert expected[0] == pytest.approx(-0.7113095238095238, rel=1e-14)
    np.testing.assert_allclose(dilution(problem, values, include), expected, rtol=1e-12)


def test_dilution_is_float_whatever_the_input_dtypes():
    """dilution computes in float64: integer values give a float array of zeros of their shape under
    ``all``, and float32 probabilities the float64 answer of the same numbers under ``received``."""
    problem = replace(sample_problem(3, 1, normalize="received"), alpha=np.array([0.2, 0.3, 0.5]))
    got = dilution(replace(problem, normalize="all"), np.array([1, 2, 3]), np.array([0.2, 0.5, 0.9]))
    assert got.dtype == np.float64 and got.shape == (3,) and np.all(got == 0.0)
    include = np.array([0.1, 0.3, 0.7], dtype=np.float32)
    values = np.array([2.0, -1.0, 3.0])
    np.testing.assert_allclose(dilution(problem, values, include), dilution(problem, values, include.astype(float)),
                               rtol=1e-14)


def test_best_bandwidth_optimizes_the_power_split_by_default():
    """best_bandwidth's default is the SP-FL packet level (tau and the power split optimized), not the
    equal-power ablation: with tau free some device leaves the fixed share or equal powers."""
    from spfl.simulator.allocation.bandwidth import best_bandwidth

    problem = sample_problem(4, 5, slot_share=None)
    _, split = best_bandwidth(problem, *device_coefficients(problem))
    assert (np.any(split.slot_share != problem.fixed_share)
            or np.any(split.power_sign != split.power_modulus))


def test_best_bandwidth_grid_uses_the_coarse_sign_shares_once_per_solve(monkeypatch):
    """With tau optimized, the bandwidth grid is searched at the coarse sign shares (logits -3, 0, 3,
    the proportional share and 1), its thresholds computed once for all of them (one table, a share
    axis) and kept in the solve's cache: a second call with the same cache computes no grid thresholds
    again, and answers the same."""
    import spfl.simulator.allocation.separable as separable
    from spfl.simulator.allocation.bandwidth import best_bandwidth, grid_units

    problem = sample_problem(3, 4, slot_share=None)
    assert problem.fading == "block"   # (the grid's thresholds come from the compiled loops)
    coarse = np.unique(np.concatenate([1 / (1 + np.exp([3.0, 0.0, -3.0])), [problem.proportional_share, 1.0]]))
    grid_taus = []
    original = separable.level_kernels.grid_tables

    def spy(levels, taus, *rest):
        if np.shape(levels) == (grid_units(3) + 1,):
            grid_taus.append(np.unique(taus))
        return original(levels, taus, *rest)

    monkeypatch.setattr(separable.level_kernels, "grid_tables", spy)
    cache = {}
    first = best_bandwidth(problem, *device_coefficients(problem), cache=cache)
    assert len(grid_taus) == 1
    np.testing.assert_allclose(grid_taus[0], coarse, rtol=1e-15)
    grid_taus.clear()
    second = best_bandwidth(problem, *device_coefficients(problem), cache=cache)
    assert grid_taus == []
    np.testing.assert_array_equal(first[0], second[0])


def test_best_bandwidth_gives_a_saturated_device_the_smallest_lattice_share():
    """Of equally good shares the zooms keep, as the knapsack does, the smallest for the later device: a
    device whose term is already at its top at the lattice's smallest share 1 / (64 J) (J = 81 for
    K = 3) gets exactly that, not more."""
    from spfl.simulator.allocation.bandwidth import best_bandwidth

    problem = sample_problem(3, 1, slot_share=0.2, normalize="all", gain=np.full(3, 1e-40))
    coefficients = device_coefficients(problem)
    share, split = best_bandwidth(problem, *coefficients, fixed_power=True)
    smallest = 1.0 / (64 * 81)
    plateau = best_split(problem, np.array([[0.9, 0.1 - smallest, smallest], [0.9, 0.08, 0.02]])
                         * problem.total_bandwidth, *coefficients, fixed_power=True).value
    assert plateau[0, 2] == plateau[1, 2] > 0  # device 2 gains nothing from more than the smallest share
    assert share[2] == pytest.approx(smallest, rel=1e-9)
