"""Reference solvers that know nothing of the AO's structure: the yardsticks of tests and benchmark.

* :func:`grid_search` (K <= 3): a dense grid over the whole feasible set.  Phi rises with every
  B_k under the outage model, so the grid covers the simplex face sum B_k = B_tot; the power
  split of each device is gridded on [0, 1] with extra points packed towards both ends.
* :func:`scipy_solve`: ``scipy.optimize.minimize`` (SLSQP) on the same problem and constraints,
  scaled to [0, 1] variables, with the analytic gradient, from given starting points.

Both return an :class:`~spfl.allocation.policies.Allocation` evaluated with the same objective.
:func:`sample_problem` draws the calibrated random rounds that tests and the benchmark share.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy.optimize import minimize

from spfl.allocation.objective import device_values, objective, objective_gradient, packet_thresholds
from spfl.allocation.policies import Allocation
from spfl.allocation.problem import AllocationProblem
from spfl.channel import dbm_to_watt, large_scale_gain, place_devices

NOISE_PSD = dbm_to_watt(-174.0)


def sample_problem(num: int, seed: int, scarcity: float = 0.0, **fields) -> AllocationProblem:
    """A random round in the 50-500 m cell (SPEC section 3), scarce (< 0) to ample (> 0).

    Payloads d and 31 d bits with d in 1e3..1e6, transmit power 0..23 dBm, utilities log-normal
    with U_s < U_m.  The deadline is calibrated as SPEC section 3 asks: at the uniform share of a
    middle bandwidth B_mid in 1e5..3e7 Hz and equal power, the median device's modulus packet fails
    about half the time; then B_tot = B_mid 10^scarcity.  ``fields`` override any problem field
    (gain, alpha, utilities, switches) before the calibration.
    """
    rng = np.random.default_rng(seed)
    gain = large_scale_gain(place_devices(num, 50.0, 500.0, rng))
    samples = rng.integers(50, 500, num)
    u_modulus = rng.lognormal(0.0, 1.0, num)
    params = 10 ** rng.uniform(3.0, 6.0)
    values = dict(
        alpha=samples / samples.sum(), gain=gain, u_sign=u_modulus * rng.uniform(0.0, 0.95, num),
        u_modulus=u_modulus, max_power=dbm_to_watt(rng.uniform(0.0, 23.0)), noise_psd=NOISE_PSD,
        sign_bits=params, modulus_bits=31.0 * params,
    )
    middle = 10 ** rng.uniform(5.0, 7.5)
    values.update(fields)
    draft = AllocationProblem(total_bandwidth=middle, deadline=1.0, **values)
    share = middle / num
    efficiency = np.log1p(np.log(2.0) * draft.max_power * np.median(draft.gain) / (draft.noise_psd * share))
    deadline = draft.modulus_bits * np.log(2.0) / (efficiency * share) / (1.0 - draft.tau)
    return replace(draft, total_bandwidth=middle * 10**scarcity, deadline=deadline)


def grid_search(
    problem: AllocationProblem, bandwidth_points: int = 1000, power_points: int = 1000
) -> Allocation:
    """Best allocation on a grid: shares i / bandwidth_points, and ``power_points`` splits per device."""
    num = problem.num_devices
    if num > 3:
        raise ValueError(f"grid_search: K={num}: allowed K <= 3")
    levels = np.arange(bandwidth_points + 1) / bandwidth_points
    split = _split_grid(power_points)
    c_s, c_m = problem.power_weights
    power_sign = split * problem.max_power / c_s
    power_modulus = (1.0 - split) * problem.max_power / c_m
    best_values, best_split = [], []
    for k in range(num):
        device = _single_device(problem, k)
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            thresholds = packet_thresholds(
                device, levels[:, None] * problem.total_bandwidth, power_sign[None], power_modulus[None]
            )
            values = device_values(device, *thresholds)
        best_split.append(np.argmax(values, axis=1))
        best_values.append(values.max(axis=1))
    indices = _best_composition(np.array(best_values), bandwidth_points)
    chosen = np.array([best_split[k][i] for k, i in enumerate(indices)])
    bandwidth = levels[indices] * problem.total_bandwidth
    return _evaluated(problem, "grid", bandwidth, power_sign[chosen], power_modulus[chosen])


def scipy_solve(problem: AllocationProblem, starts: list[np.ndarray], max_iter: int = 500) -> Allocation:
    """SLSQP from each start z = (b, u_s, u_m) in [0, 1]^{3K}; the best feasible result.

    b = B / B_tot, u_x = c_x p_x / P (c the power-constraint weights), so every constraint is
    linear: sum b <= 1 and u_s + u_m <= 1 per device.
    """
    num = problem.num_devices
    c_s, c_m = problem.power_weights
    scale_b = problem.total_bandwidth
    scale_s, scale_m = problem.max_power / c_s, problem.max_power / c_m
    norm = max(float(np.sum(problem.alpha * np.maximum(problem.u_sign, problem.u_modulus))), 1e-300)

    def unpack(z):
        z = np.clip(z, 0.0, 1.0)
        return z[:num] * scale_b, z[num:2 * num] * scale_s, z[2 * num:] * scale_m

    def loss(z):
        return -objective(problem, *unpack(z)) / norm

    def loss_grad(z):
        grad_b, grad_s, grad_m = objective_gradient(problem, *unpack(z))
        return -np.concatenate([grad_b * scale_b, grad_s * scale_s, grad_m * scale_m]) / norm

    power_rows = np.hstack([np.zeros((num, num)), -np.eye(num), -np.eye(num)])
    constraints = [
        {"type": "ineq", "fun": lambda z: 1.0 - z[:num].sum(),
         "jac": lambda z: np.concatenate([-np.ones(num), np.zeros(2 * num)])},
        {"type": "ineq", "fun": lambda z: 1.0 - z[num:2 * num] - z[2 * num:], "jac": lambda z: power_rows},
    ]
    best = None
    for start in starts:
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            result = minimize(loss, start, jac=loss_grad, method="SLSQP", bounds=[(0.0, 1.0)] * (3 * num),
                              constraints=constraints, options={"maxiter": max_iter, "ftol": 1e-14})
        point = _feasible(problem, result.x, num, scale_b, scale_s, scale_m)
        candidate = _evaluated(problem, "scipy", *point)
        if best is None or candidate.objective > best.objective:
            best = candidate
    return best


def scipy_starts(problem: AllocationProblem, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The uniform point, then ``count - 1`` random points of the feasible set (Dirichlet shares)."""
    num = problem.num_devices
    c_s, c_m = problem.power_weights
    uniform = np.concatenate([np.full(num, 1.0 / num), np.full(num, c_s / (c_s + c_m)),
                              np.full(num, c_m / (c_s + c_m))])
    starts = [uniform]
    for _ in range(count - 1):
        split = rng.random(num)
        starts.append(np.concatenate([rng.dirichlet(np.ones(num)), split, 1.0 - split]))
    return starts


def _feasible(problem, z, num, scale_b, scale_s, scale_m):
    """SLSQP may end a hair outside the constraints: clip and rescale onto the feasible set."""
    z = np.clip(z, 0.0, 1.0)
    share = z[:num] / max(1.0, z[:num].sum())
    used = np.maximum(1.0, z[num:2 * num] + z[2 * num:])
    return share * scale_b, z[num:2 * num] / used * scale_s, z[2 * num:] / used * scale_m


def _split_grid(points: int) -> np.ndarray:
    """Power splits theta = c_s p_s / P: uniform on [0, 1] plus log-spaced points near 0 and 1."""
    ends = np.logspace(-12, -1, points // 4)
    return np.unique(np.concatenate([np.linspace(0.0, 1.0, points), ends, 1.0 - ends]))


def _single_device(problem: AllocationProblem, k: int) -> AllocationProblem:
    return replace(problem, alpha=problem.alpha[k:k + 1], gain=problem.gain[k:k + 1],
                   u_sign=problem.u_sign[k:k + 1], u_modulus=problem.u_modulus[k:k + 1])


def _best_composition(values: np.ndarray, total: int) -> np.ndarray:
    """Grid indices i_k with sum i_k = total maximizing sum_k values[k, i_k] (K <= 3)."""
    num = values.shape[0]
    if num == 1:
        return np.array([total])
    if num == 2:
        first = int(np.argmax(values[0] + values[1][::-1]))
        return np.array([first, total - first])
    i, j = np.meshgrid(np.arange(total + 1), np.arange(total + 1), indexing="ij")
    rest = total - i - j
    sums = np.where(rest >= 0, values[0][i] + values[1][j] + values[2][np.maximum(rest, 0)], -np.inf)
    first, second = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return np.array([first, second, total - first - second])


def _evaluated(problem, policy, bandwidth, power_sign, power_modulus) -> Allocation:
    value = objective(problem, bandwidth, power_sign, power_modulus)
    return Allocation(bandwidth, power_sign, power_modulus, value, (value,), 0, policy)
