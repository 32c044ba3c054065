"""Yardsticks for the allocation solver, shared by the tests and bench/bench_allocation.py.

Nothing here knows how :func:`spfl.simulator.allocation.allocate` works:

* :func:`sample_problem`: a calibrated random round (scarce to ample budgets, every reconstruction
  switch settable, utilities with U_s > U_m and U_s < 0 among them);
* :func:`grid_search` (K <= 3): a dense grid over bandwidth shares, each device's power split theta and,
  when it is optimized, the sign share tau, then a local pattern search from the best grid point; the
  grid is searched with an exact enumeration of the devices' inclusion patterns and the answer is
  evaluated with :func:`spfl.simulator.allocation.objective`;
* :func:`scipy_solve`: multi-start SLSQP over shares, power splits (and sign shares), with Phi from
  :func:`spfl.simulator.allocation.objective` and numerical gradients.

:func:`assert_feasible` and :func:`assert_consistent` are the checks every allocation must pass.

A point of the feasible set is written z = (b, theta, tau): b_k = B_k / B_tot (sum b <= 1), theta_k the
sign's share of the power budget on the tight constraint c_s p_s + c_m p_m = P (theta = 1: sign only,
0: silent) and tau_k the sign packet's share of the link.  Spending the whole budget loses nothing:
Phi is affine in each device's own (P(sign arrives), P(both arrive)) with the other devices fixed, and
every pair reachable with slack power is a mix of pairs on the tight curve and the silent point.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.spatial import ConvexHull, QhullError

from spfl.simulator.allocation import Allocation, AllocationProblem, objective
from spfl.simulator.channel import dbm_to_watt, failure_threshold, large_scale_gain, place_devices

NOISE_PSD = dbm_to_watt(-174.0)
_MIN_SHARE = 1e-4  # the smallest sign share tau the references try


def sample_problem(num: int, seed: int, scarcity: float = 0.0, **fields) -> AllocationProblem:
    """A random round in the 50-500 m cell, scarce (scarcity < 0) to ample (> 0).

    Payloads d and 31 d bits with d in 1e3..1e6, transmit power 0..23 dBm, U_m log-normal and
    U_s = U_m * u with u uniform in [-0.3, 1.2] (so about one device in five has U_s < 0 and one in
    eight U_s > U_m).  The deadline is calibrated so that, at the uniform share of a middle bandwidth
    B_mid in 1e5..3e7 Hz, the fixed (or proportional) sign share and equal packet powers, the median
    device's modulus packet (the only packet of single-packet problems) fails half the time; then
    B_tot = B_mid 10^scarcity.  ``fields`` override any problem field before the calibration (pass
    ``modulus_bits=0`` for a single-packet problem; its U_s then defaults to U_m).
    """
    rng = np.random.default_rng(seed)
    gain = large_scale_gain(place_devices(num, 50.0, 500.0, rng))
    samples = rng.integers(50, 500, num)
    u_modulus = rng.lognormal(0.0, 1.0, num)
    u_sign = u_modulus * rng.uniform(-0.3, 1.2, num)
    params = 10 ** rng.uniform(3.0, 6.0)
    values = dict(
        alpha=samples / samples.sum(), gain=gain, u_sign=u_sign, u_modulus=u_modulus,
        max_power=dbm_to_watt(rng.uniform(0.0, 23.0)), noise_psd=NOISE_PSD,
        sign_bits=params, modulus_bits=31.0 * params, slot_share=None, normalize="all",
    )
    middle = 10 ** rng.uniform(5.0, 7.5)
    if fields.get("modulus_bits", 1.0) == 0 and "u_sign" not in fields:
        values["u_sign"] = u_modulus  # a single packet carries the whole gradient
    values.update(fields)
    draft = AllocationProblem(total_bandwidth=middle, deadline=1.0, **values)
    tau = draft.fixed_share
    share = middle / num
    power = float(draft.equal_power(tau))
    bits, slot = ((draft.modulus_bits, 1.0 - tau) if draft.two_packets else (draft.sign_bits, 1.0))
    # Outage threshold ln 2 (half the packets fail): B log2(1 + ln2 p g / (B N0)) = bits / slot.
    efficiency = np.log1p(np.log(2.0) * power * np.median(draft.gain) / (draft.noise_psd * share))
    deadline = bits * np.log(2.0) / (efficiency * share) / slot
    return replace(draft, total_bandwidth=middle * 10**scarcity, deadline=deadline)


# --- checks every allocation must pass -----------------------------------------------------------------

def assert_feasible(problem, result, rel=1e-9):
    """Every budget holds: sum B <= B_tot and c_s p_s + c_m p_m <= P at each device's own tau."""
    for array in (result.bandwidth, result.power_sign, result.power_modulus, result.slot_share):
        assert array.shape == (problem.num_devices,)
        assert np.all(np.isfinite(array)) and np.all(array >= 0)
    assert np.all((result.slot_share > 0) & (result.slot_share <= 1))
    assert result.bandwidth.sum() <= problem.total_bandwidth * (1 + rel)
    c_s, c_m = problem.power_weights(result.slot_share)
    assert np.all(c_s * result.power_sign + c_m * result.power_modulus <= problem.max_power * (1 + rel))
    if not problem.two_packets:
        assert np.all(result.power_modulus == 0) and np.all(result.slot_share == 1)


def assert_consistent(problem, result):
    """A monotone trace that ends at the reported Phi, which is Phi at the reported arrays."""
    assert np.all(np.isfinite(result.trace)) and np.all(np.diff(result.trace) >= 0), result.trace
    assert result.trace[-1] == result.objective
    recomputed = objective(problem, result.bandwidth, result.power_sign, result.power_modulus, result.slot_share)
    assert result.objective == pytest.approx(recomputed, rel=1e-12, abs=1e-300)


# --- points of the feasible set ------------------------------------------------------------------------

def point_arrays(problem: AllocationProblem, share, theta, tau):
    """(B, p_s, p_m, tau) of the point z = (b, theta, tau) (broadcasting)."""
    share, theta = np.asarray(share, dtype=float), np.asarray(theta, dtype=float)
    tau = np.broadcast_to(np.asarray(tau, dtype=float), np.broadcast_shapes(share.shape, theta.shape,
                                                                            np.shape(tau)))
    c_s, c_m = problem.power_weights(tau)
    power_sign = theta * problem.max_power / c_s
    with np.errstate(divide="ignore", invalid="ignore"):
        modulus = (1.0 - theta) * problem.max_power / c_m
    no_modulus = (not problem.two_packets) | (theta >= 1.0) | (tau >= 1.0)
    power_modulus = np.where(no_modulus, 0.0, modulus)
    if not problem.two_packets:
        power_sign = np.where(theta > 0, problem.max_power / c_s, 0.0)
    return share * problem.total_bandwidth, power_sign, power_modulus, tau


def point_of(problem: AllocationProblem, allocation: Allocation):
    """z = (b, theta, tau) of an allocation that spends each device's whole budget (or nothing)."""
    tau = np.asarray(allocation.slot_share, dtype=float)
    c_s, _ = problem.power_weights(tau)
    theta = np.clip(c_s * allocation.power_sign / problem.max_power, 0.0, 1.0)
    return allocation.bandwidth / problem.total_bandwidth, theta, tau


def evaluated(problem: AllocationProblem, share, theta, tau, policy: str) -> Allocation:
    bandwidth, power_sign, power_modulus, tau = (np.array(a, dtype=float) for a in
                                                 point_arrays(problem, share, theta, tau))
    value = objective(problem, bandwidth, power_sign, power_modulus, tau)
    return Allocation(bandwidth, power_sign, power_modulus, tau, value, (value,), policy)


def share_grid(problem: AllocationProblem, points: int) -> np.ndarray:
    """Sign shares tau to try: the fixed one, or a logit grid on (0, 1] with the proportional share."""
    if problem.slot_share is not None:
        return np.array([problem.slot_share])
    logits = np.linspace(np.log(_MIN_SHARE), 9.0, points)
    grid = 1.0 / (1.0 + np.exp(-logits))
    return np.unique(np.concatenate([grid, [problem.proportional_share, 1.0]]))


def split_grid(problem: AllocationProblem, points: int) -> np.ndarray:
    """Power splits theta: silent, sign only and a logit grid packed towards both ends."""
    if not problem.two_packets:
        return np.array([0.0, 1.0])
    logits = np.linspace(-18.0, 18.0, points)
    inner = np.concatenate([1.0 / (1.0 + np.exp(-logits)), np.linspace(0.0, 1.0, points // 4)])
    return np.unique(np.concatenate([inner, [0.0, 1.0]]))


# --- exact Phi by enumeration --------------------------------------------------------------------------

def device_outcomes(problem: AllocationProblem, bandwidth, power_sign, power_modulus, tau):
    """(v, p): alpha_k E[I_k V_k] and P(I_k = 1), written from the channel model (not the solver's)."""
    sign = failure_threshold(bandwidth, power_sign, problem.gain, problem.sign_bits, tau * problem.deadline,
                             problem.noise_psd, problem.per_model, problem.waterfall_m)
    if problem.two_packets:
        modulus = failure_threshold(bandwidth, power_modulus, problem.gain, problem.modulus_bits,
                                    (1.0 - tau) * problem.deadline, problem.noise_psd, problem.per_model,
                                    problem.waterfall_m)
    else:
        modulus = np.full(np.shape(sign), np.inf)
    pi_sign, pi_modulus = np.exp(-sign), np.exp(-modulus)
    pi_both = np.minimum(pi_sign, pi_modulus) if problem.fading == "block" else pi_sign * pi_modulus
    if problem.sign_only_counts:
        worth = pi_both * problem.u_modulus + (pi_sign - pi_both) * problem.u_sign
        return problem.alpha * worth, pi_sign
    return problem.alpha * pi_both * problem.u_modulus, pi_both


def exact_factors(alpha: np.ndarray, include: np.ndarray) -> np.ndarray:
    """G_k = E[1 / (alpha_k + sum_{j != k} alpha_j I_j)] by enumerating the others' 2^(K-1) patterns
    (``include`` may have leading batch axes)."""
    include = np.asarray(include, dtype=float)
    num = alpha.size
    factors = np.zeros(include.shape)
    for k in range(num):
        others = [j for j in range(num) if j != k]
        for pattern in itertools.product((0, 1), repeat=len(others)):
            probability = np.ones(include.shape[:-1])
            weight = alpha[k]
            for j, bit in zip(others, pattern):
                probability = probability * (include[..., j] if bit else 1.0 - include[..., j])
                weight += alpha[j] * bit
            factors[..., k] += probability / weight
    return factors


def exact_objective(problem: AllocationProblem, values, include) -> np.ndarray:
    """Phi from per-device (v, p) (batch axes allowed), by enumeration under ``received``."""
    values = np.asarray(values, dtype=float)
    if problem.normalize == "all":
        return values.sum(axis=-1)
    return np.sum(values * exact_factors(problem.alpha, include), axis=-1)


# --- dense grid (K <= 3) ----------------------------------------------------------------------------

def grid_search(problem: AllocationProblem, bandwidth_points: int | None = None, split_points: int = 160,
                share_points: int = 12, polish: bool = True) -> Allocation:
    """The best point of a dense grid, then a local pattern search from it (K <= 3).

    Bandwidth: shares i / N on the face sum b = 1 (Phi never falls when a device gets more band under
    the outage model: its reachable pairs of arrival probabilities only grow); power: ``split_points``
    splits theta per device, packed towards 0 and 1; tau: ``share_points`` values when optimized.  Under
    ``normalize: received`` Phi is affine in each device's (v_k, p_k) with a positive weight on v_k, so
    the optimum uses, per device and share, a vertex of the upper convex hull of its candidates' (p, v):
    only those enter the joint enumeration, which makes the grid search exact on its grid.
    """
    num = problem.num_devices
    if num > 3:
        raise ValueError(f"grid_search: K={num}: allowed K <= 3")
    if bandwidth_points is None:
        bandwidth_points = {1: 1, 2: 200, 3: 40}[num]
    levels = np.arange(bandwidth_points + 1) / bandwidth_points
    theta, tau = np.meshgrid(split_grid(problem, split_points), share_grid(problem, share_points), indexing="ij")
    theta, tau = theta.ravel(), tau.ravel()
    # Candidates per device and level: (v, p) and the (theta, tau) that reach them.
    tables = []
    for k in range(num):
        device = _single(problem, k)
        arrays = point_arrays(device, levels[:, None], theta[None, :], tau[None, :])
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            values, include = device_outcomes(device, *arrays)
        tables.append((values, include))
    if problem.normalize == "all":  # Phi = sum of the devices' values: the best candidate per level
        best_pick = [np.argmax(values, axis=1) for values, _ in tables]
        best_level = [values[np.arange(len(levels)), pick] for (values, _), pick in zip(tables, best_pick)]
    else:
        hulls = [[_upper_hull(include[i], values[i]) for i in range(len(levels))] for values, include in tables]
    best_value, best = -np.inf, None
    for composition in _compositions(num, bandwidth_points):
        if problem.normalize == "all":
            picks = [best_pick[k][i] for k, i in enumerate(composition)]
            value = sum(best_level[k][i] for k, i in enumerate(composition))
        else:
            options = [hulls[k][i] for k, i in enumerate(composition)]
            combos = np.stack([m.ravel() for m in np.meshgrid(*options, indexing="ij")], axis=-1)
            vals = np.stack([tables[k][0][i, combos[:, k]] for k, i in enumerate(composition)], axis=-1)
            incs = np.stack([tables[k][1][i, combos[:, k]] for k, i in enumerate(composition)], axis=-1)
            phi = exact_objective(problem, vals, incs)
            pick = int(np.argmax(phi))
            value, picks = phi[pick], list(combos[pick])
        if value > best_value:
            best_value, best = value, (levels[list(composition)], theta[picks], tau[picks])
    share, split, shares = best
    if polish:
        share, split, shares = _pattern_search(problem, share, split, shares)
    return evaluated(problem, share, split, shares, "grid")


def _single(problem: AllocationProblem, k: int) -> AllocationProblem:
    return replace(problem, alpha=problem.alpha[k:k + 1], gain=problem.gain[k:k + 1],
                   u_sign=problem.u_sign[k:k + 1], u_modulus=problem.u_modulus[k:k + 1], normalize="all")


def _compositions(num: int, total: int):
    """Level indices (i_1, ..., i_K) with sum i_k = total."""
    if num == 1:
        yield (total,)
        return
    for first in range(total + 1):
        for rest in _compositions(num - 1, total - first):
            yield (first, *rest)


def _upper_hull(include: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Indices of the candidates that maximize g v + h p for some g > 0 (the upper convex hull of (p, v))."""
    scale = max(float(np.max(np.abs(values))), 1e-300)
    points = np.column_stack([include, values / scale])
    index = np.flatnonzero(np.all(np.isfinite(points), axis=1))
    unique, first = np.unique(points[index], axis=0, return_index=True)
    if len(unique) <= 3:
        return index[first]
    try:
        hull = ConvexHull(unique)
    except QhullError:  # collinear: a linear objective peaks at an end
        ends = {int(np.argmin(unique[:, 0])), int(np.argmax(unique[:, 0])), int(np.argmax(unique[:, 1]))}
        return index[first[sorted(ends)]]
    upper = hull.simplices[hull.equations[:, 1] > 0].ravel()
    # The leftmost and rightmost points bound the upper chain (vertical facets have no v-component).
    ends = [int(np.argmin(unique[:, 0])), int(np.argmax(unique[:, 0]))]
    return index[first[np.unique(np.concatenate([upper, ends]))]]


def _logit(x):
    x = np.clip(x, 1e-300, 1.0)
    with np.errstate(divide="ignore"):
        return np.log(x) - np.log1p(-x)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _pattern_search(problem, share, theta, tau, points: int = 21, min_span: float = 1e-7):
    """Local zoom from a grid point: per device a (logit theta, logit tau) grid of ``points`` squared
    points around the current one (so ridges along which both must move are followed), per pair of
    devices a grid of bandwidth transfers; improvements are kept, the spans halve when none is found."""
    num = problem.num_devices
    share, theta, tau = (np.array(a, dtype=float) for a in (share, theta, tau))

    def batch_value(shares, thetas, taus):
        arrays = point_arrays(problem, shares, thetas, taus)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            values, include = device_outcomes(problem, *arrays)
        return np.nan_to_num(exact_objective(problem, values, include), nan=-np.inf)

    current = float(batch_value(share[None], theta[None], tau[None])[0])
    free_theta = problem.two_packets
    free_tau = problem.two_packets and problem.slot_share is None
    span_x, span_t, span_b = 1.0, 1.0, 0.02
    offsets = np.linspace(-1.0, 1.0, points)
    while span_x > min_span:
        improved = False
        for k in range(num):
            if not (free_theta or free_tau):
                break
            lx = np.clip(_logit(theta[k]), -40.0, 40.0) + (span_x * offsets if free_theta else np.zeros(1))
            lt = np.clip(_logit(tau[k]), -40.0, 40.0) + (span_t * offsets if free_tau else np.zeros(1))
            xs, ts = np.meshgrid(_sigmoid(lx), _sigmoid(lt) if free_tau else np.array([tau[k]]), indexing="ij")
            xs = np.concatenate([xs.ravel(), [1.0, 0.0]])   # sign only and silent stay reachable
            ts = np.clip(np.concatenate([ts.ravel(), [tau[k], tau[k]]]), _MIN_SHARE, 1.0)
            thetas = np.repeat(theta[None], len(xs), axis=0)
            taus = np.repeat(tau[None], len(xs), axis=0)
            thetas[:, k], taus[:, k] = xs, ts
            trial = batch_value(np.repeat(share[None], len(xs), axis=0), thetas, taus)
            pick = int(np.argmax(trial))
            if trial[pick] > current:
                theta, tau, current, improved = thetas[pick], taus[pick], float(trial[pick]), True
        for i, j in itertools.combinations(range(num), 2):
            moves = span_b * offsets
            shares = np.repeat(share[None], len(moves), axis=0)
            shares[:, i] += moves
            shares[:, j] -= moves
            trial = np.where(np.all(shares >= 0, axis=1),
                             batch_value(np.clip(shares, 0.0, 1.0), theta[None], tau[None]), -np.inf)
            pick = int(np.argmax(trial))
            if trial[pick] > current:
                share, current, improved = shares[pick], float(trial[pick]), True
        if not improved:
            span_x, span_t, span_b = span_x / 4.0, span_t / 4.0, span_b / 4.0
    return share, theta, tau


# --- multi-start SLSQP ---------------------------------------------------------------------------------

def scipy_starts(problem: AllocationProblem, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The uniform point (fixed or proportional tau, equal packet powers), then random points."""
    num = problem.num_devices
    tau = problem.fixed_share
    c_s, c_m = problem.power_weights(tau)
    equal = float(c_s / (c_s + c_m)) if problem.two_packets else 1.0
    starts = [_pack(problem, np.full(num, 1.0 / num), np.full(num, equal), np.full(num, tau))]
    for _ in range(count - 1):
        starts.append(_pack(problem, rng.dirichlet(np.ones(num)), rng.uniform(0.05, 1.0, num),
                            rng.uniform(0.02, 1.0, num) if problem.slot_share is None else np.full(num, tau)))
    return starts


def start_at(problem: AllocationProblem, allocation: Allocation) -> np.ndarray:
    """An SLSQP start at a given allocation (a local optimality probe)."""
    return _pack(problem, *point_of(problem, allocation))


def _pack(problem, share, theta, tau):
    parts = [share, theta] + ([tau] if problem.slot_share is None and problem.two_packets else [])
    return np.concatenate(parts)


def _unpack(problem, z):
    num = problem.num_devices
    z = np.clip(z, 0.0, 1.0)
    share, theta = z[:num], z[num:2 * num]
    free_tau = problem.slot_share is None and problem.two_packets
    tau = np.clip(z[2 * num:], _MIN_SHARE, 1.0) if free_tau else np.full(num, problem.fixed_share)
    return share / max(1.0, share.sum()), theta, tau


def scipy_solve(problem: AllocationProblem, starts: list[np.ndarray], max_iter: int = 200) -> Allocation:
    """SLSQP (finite-difference gradients) from each start z = (b, theta[, tau]); the best result."""
    num = problem.num_devices
    size = len(starts[0])
    scale = max(float(np.sum(problem.alpha * np.abs(problem.u_modulus) + problem.alpha * np.abs(problem.u_sign))),
                1e-300)

    def loss(z):
        return -objective(problem, *point_arrays(problem, *_unpack(problem, z))) / scale

    constraints = [{"type": "ineq", "fun": lambda z: 1.0 - z[:num].sum(),
                    "jac": lambda z: np.concatenate([-np.ones(num), np.zeros(size - num)])}]
    bounds = [(0.0, 1.0)] * (2 * num) + [(_MIN_SHARE, 1.0)] * (size - 2 * num)
    best = None
    for start in starts:
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            result = minimize(loss, start, method="SLSQP", bounds=bounds, constraints=constraints,
                              options={"maxiter": max_iter, "ftol": 1e-12, "eps": 1e-7})
        candidate = evaluated(problem, *_unpack(problem, result.x), "scipy")
        if best is None or candidate.objective > best.objective:
            best = candidate
    return best
