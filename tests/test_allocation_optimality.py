"""Allocation quality and robustness: dense grid at K = 2-3, multi-start SLSQP at K = 10-20, hypothesis."""

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from allocation_reference import (
    assert_consistent,
    assert_feasible,
    device_outcomes,
    exact_objective,
    grid_search,
    point_arrays,
    sample_problem,
    scipy_solve,
    scipy_starts,
    share_grid,
    split_grid,
    start_at,
)
from spfl.simulator.allocation import ALLOCATION_POLICIES, AllocationProblem, allocate
from spfl.simulator.allocation.bandwidth import knapsack

REL = 1e-3
SWITCHES = [(fading, normalize) for fading in ("block", "per_packet") for normalize in ("all", "received")]
SCARCITY = (-2.0, -0.8, 0.2, 1.2)  # B_tot from ~100x below to ~15x above the calibrated middle


def _gaps(num, fading, normalize, slot_share, seeds):
    """(grid - spfl) / |grid| over calibrated rounds, alternating the power constraint and whether a sign
    that arrives alone counts."""
    gaps = []
    for index, seed in enumerate(seeds):
        problem = sample_problem(num, seed, scarcity=SCARCITY[index % len(SCARCITY)], fading=fading,
                                 normalize=normalize, slot_share=slot_share,
                                 power_constraint=("energy", "sum")[index % 2], sign_only_counts=index % 3 != 2)
        result = allocate(problem)
        grid = grid_search(problem)
        gaps.append((grid.objective - result.objective) / max(abs(grid.objective), 1e-300))
    return np.array(gaps)


@pytest.mark.parametrize("fading", ["block", "per_packet"])
def test_grid_search_is_exact_on_its_grid(fading):
    """The yardstick itself: under received, its hull-pruned enumeration finds the best point of a small
    grid, checked against every combination of the two devices' candidates."""
    for seed in range(3):
        problem = sample_problem(2, 3000 + seed, scarcity=(-1.0, 0.0, 1.0)[seed], fading=fading, normalize="received",
                                 slot_share=None)
        found = grid_search(problem, bandwidth_points=12, split_points=16, share_points=3, polish=False)
        theta, tau = np.meshgrid(split_grid(problem, 16), share_grid(problem, 3), indexing="ij")
        theta, tau = theta.ravel(), tau.ravel()
        first, second = np.meshgrid(np.arange(theta.size), np.arange(theta.size), indexing="ij")
        first, second = first.ravel(), second.ravel()
        best = -np.inf
        for level in range(13):
            share = np.column_stack([np.full(first.size, level / 12), np.full(first.size, 1 - level / 12)])
            arrays = point_arrays(problem, share, np.column_stack([theta[first], theta[second]]),
                                  np.column_stack([tau[first], tau[second]]))
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                best = max(best, float(np.nanmax(exact_objective(problem, *device_outcomes(problem, *arrays)))))
        assert found.objective == pytest.approx(best, rel=1e-9), (found.objective, best)


@pytest.mark.parametrize("fading, normalize", SWITCHES)
def test_spfl_matches_dense_grid_search_fixed_share(fading, normalize):
    gaps = _gaps(2, fading, normalize, 0.2, range(1000, 1008))
    assert gaps.max() <= REL, gaps


@pytest.mark.parametrize("fading, normalize", SWITCHES)
def test_spfl_matches_dense_grid_search_three_devices(fading, normalize):
    gaps = _gaps(3, fading, normalize, 0.1, range(1100, 1102))
    assert gaps.max() <= REL, gaps


def test_spfl_matches_dense_grid_search_optimized_share():
    gaps = [_gaps(2, fading, normalize, None, range(1200, 1204)) for fading, normalize in SWITCHES]
    for fading in ("block", "per_packet"):
        problem = sample_problem(1, 2, slot_share=None, fading=fading, alpha=[1.0], u_sign=[0.2], u_modulus=[1.0])
        grid = grid_search(problem)
        gaps.append([(grid.objective - allocate(problem).objective) / grid.objective])
    gaps = np.concatenate(gaps)
    assert gaps.max() <= REL, gaps


@pytest.mark.parametrize("num, normalize", [(10, "all"), (20, "all"), (12, "received")])
def test_spfl_at_least_multistart_scipy(num, normalize):
    """No worse than SLSQP from the uniform point, a random point and spfl's own answer (a local
    optimality probe: SLSQP started there must not find a better nearby point)."""
    problem = sample_problem(num, 2000 + num, scarcity=0.0, normalize=normalize, slot_share=0.2,
                             power_constraint=("energy", "sum")[num % 2])
    result = allocate(problem)
    starts = scipy_starts(problem, 2, np.random.default_rng(num)) + [start_at(problem, result)]
    reference = scipy_solve(problem, starts, max_iter=60)
    assert reference.bandwidth.shape == (num,)
    assert result.objective >= reference.objective * (1 - REL), (result.objective, reference.objective)


@st.composite
def problems(draw):
    """K in 1..100; budgets over six decades, gains over eight; worths of any sign, some zero; every
    switch, sign shares fixed or optimized, and single-packet problems."""
    num = draw(st.integers(1, 100))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    zeros = draw(st.sampled_from([0.0, 0.3, 1.0]))
    if draw(st.booleans()):
        gain = 10 ** rng.uniform(-15.0, -7.0, num)
    else:
        gain = np.full(num, 10 ** draw(st.floats(-15.0, -7.0)))
    alpha = rng.dirichlet(np.ones(num)) * (rng.random(num) >= zeros / 2)
    alpha[rng.integers(num)] += 1e-3  # a positive sum
    u_modulus = rng.lognormal(0.0, 2.0, num) * (rng.random(num) >= zeros)
    single = draw(st.booleans()) and draw(st.booleans())
    return AllocationProblem(
        alpha=alpha, gain=gain,
        u_sign=u_modulus if single else u_modulus * rng.uniform(-1.0, 2.0, num),
        u_modulus=u_modulus,
        total_bandwidth=10 ** draw(st.floats(3.0, 9.0)),
        max_power=10 ** draw(st.floats(-4.0, 2.0)),
        noise_psd=10 ** draw(st.floats(-21.5, -19.5)),
        deadline=10 ** draw(st.floats(-3.0, 1.0)),
        sign_bits=10 ** draw(st.floats(3.0, 7.5)),
        modulus_bits=0.0 if single else 10 ** draw(st.floats(3.0, 8.5)),
        power_constraint=draw(st.sampled_from(["energy", "sum"])),
        per_model=draw(st.sampled_from(["outage", "outage", "waterfall"])),
        fading=draw(st.sampled_from(["block", "per_packet"])),
        normalize=draw(st.sampled_from(["all", "received"])),
        sign_only_counts=draw(st.booleans()),
        slot_share=draw(st.one_of(st.none(), st.floats(0.01, 1.0))),
    )


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(problems(), st.sampled_from(ALLOCATION_POLICIES))
def test_allocation_never_fails(problem, policy):
    """No exception, no NaN, no infeasible point, a monotone trace, whatever the instance."""
    result = allocate(problem, policy)
    assert np.isfinite(result.objective)
    assert_feasible(problem, result)
    assert_consistent(problem, result)
    assert result.objective >= result.trace[0]


# --- mutation survivors of the knapsack (full mutmut run, session 4) ---

def _knapsack_by_enumeration(values: np.ndarray, total: int) -> float:
    """The best sum of values[k, j_k] with sum_k j_k = total, by trying every choice."""
    return max((float(sum(values[k, j] for k, j in enumerate(choice)))
                for choice in itertools.product(range(values.shape[1]), repeat=values.shape[0])
                if sum(choice) == total), default=-np.inf)


def test_knapsack_with_few_options_and_many_sums_matches_enumeration():
    """The dynamic program's layout for few options and many sums (total + 1 > 4 options: the zooms), which
    the smaller enumerations never reach: random values with impossible options, and a case where the
    first devices must all take option 0 (the lowest sum every device before the last few can leave)."""
    rng = np.random.default_rng(15)
    checked = 0
    for _ in range(60):
        options = int(rng.integers(2, 4))
        num = int(rng.integers(8 if options == 2 else 6, 10))  # so that 4 options <= the largest total
        total = int(rng.integers(4 * options, num * (options - 1) + 1))
        values = rng.normal(size=(num, options))
        values[rng.random((num, options)) < 0.1] = -np.inf
        best = _knapsack_by_enumeration(values, total)
        if best == -np.inf:
            continue
        chosen = knapsack(values, total)
        assert chosen.sum() == total and float(sum(values[k, j] for k, j in enumerate(chosen))) == \
            pytest.approx(best, rel=1e-12, abs=1e-12)
        checked += 1
    assert checked >= 25
    values = np.zeros((12, 3))
    values[:2, 1:] = -10.0       # devices 0 and 1 lose by sending anything
    values[2:, 2] = 1.0          # the others gain by taking two units each: 10 x 2 = 20 = the total
    assert knapsack(values, 20).tolist() == [0, 0] + [2] * 10


def test_knapsack_with_more_options_than_the_total():
    """Options beyond the total can never be taken; the first device's table is cut to the total."""
    values = np.array([[0.0, 3.0, 1.0, 9.0, 9.0], [0.0, 1.0, 2.0, 9.0, 9.0]])
    assert knapsack(values, 2).tolist() == [1, 1]  # 3 + 1 beats 0 + 2 and 1 + 0


def test_knapsack_refuses_a_total_beyond_reach_by_name():
    """2 devices with options 0..2 reach at most 4; a total of 5 is refused in one line."""
    assert knapsack(np.zeros((2, 3)), 4).tolist() == [2, 2]
    with pytest.raises(ValueError) as beyond:
        knapsack(np.zeros((2, 3)), 5)
    assert str(beyond.value) == "knapsack total 5 exceeds what 2 devices x 2 can reach"
