"""Allocation policies: SP-FL's hierarchical allocation, its ablations and the baselines.

Every optimized policy maximizes the same Phi (:mod:`.objective`), the expected surrogate of the
aggregate of the method's own aggregation rule:

- ``spfl``: bandwidth across devices (:mod:`.bandwidth`) and, per device, power (and the sign share,
  when ``slot_share`` is optimized) between its packets (:mod:`.power`);
- ``power``: uniform bandwidth, packet level optimized;  ``bandwidth``: equal packet powers, bandwidth
  optimized;  ``uniform``: equal bandwidth and equal packet powers (nothing optimized);
- ``scheduling``: the whole gradient as one packet at full power to the n devices with the largest
  alpha_k pi_k(B_tot / n) U_m,k, sharing the band equally; n maximizes Phi.

Under ``normalize: all`` Phi is a sum of per-device terms and the bandwidth dynamic program is exact
on its grid.  Under ``normalize: received`` the devices are coupled through the normalization; Phi is
affine in each device's own arrival probability, so the solver alternates: compute every device's
exact coefficients at the current point (spfl.simulator.allocation.objective.dilution), solve the separable
problem they define, and keep the result if Phi rose (``RECEIVED_ROUNDS`` more times at most).  The
answer is never worse than the uniform point: it is the best of every point visited, and ``trace``
records Phi after each stage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from spfl.simulator.allocation.bandwidth import best_bandwidth
from spfl.simulator.allocation.objective import (
    QUADRATURE_NODES,
    Allocation,
    Terms,
    arrival_probabilities,
    device_coefficients,
    linearization,
    objective,
    objective_terms,
    thresholds,
)
from spfl.simulator.allocation.power import Split, best_split
from spfl.simulator.allocation.problem import AllocationProblem

ALLOCATION_POLICIES = ("spfl", "power", "bandwidth", "uniform", "scheduling")
RECEIVED_ROUNDS = 3
DESCENT_ROUNDS = 3
_RELATIVE_GAIN = 1e-9
_BATCH_ELEMENTS = 1 << 21  # numbers per array when many candidate allocations are evaluated at once


def allocate(problem: AllocationProblem, policy: str = "spfl") -> Allocation:
    """Solve one round's allocation with the named policy (one of ``ALLOCATION_POLICIES``)."""
    if policy not in _POLICIES:
        raise ValueError(f"policy={policy!r}: allowed {ALLOCATION_POLICIES}")
    with np.errstate(divide="ignore", over="ignore", invalid="ignore", under="ignore"):
        return _POLICIES[policy](problem, {})


def uniform_point(problem: AllocationProblem) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Equal bandwidth, the fixed (or proportional) sign share and equal packet powers."""
    num = problem.num_devices
    tau = np.full(num, problem.fixed_share)
    power = np.full(num, float(problem.equal_power(problem.fixed_share)))
    modulus = power.copy() if problem.two_packets else np.zeros(num)
    return np.full(num, problem.total_bandwidth / num), power, modulus, tau


class _Search:
    """The best allocation seen so far and the trace of Phi after each stage."""

    def __init__(self, problem: AllocationProblem, policy: str):
        self.problem, self.policy = problem, policy
        self.point = uniform_point(problem)
        self.terms = objective_terms(problem, *self.point)
        self.value = float(self.terms.phi)
        self.trace = [self.value]

    def offer(self, bandwidth, split: Split) -> bool:
        return self.offer_point((bandwidth, split.power_sign, split.power_modulus, split.slot_share))

    def offer_point(self, point) -> bool:
        terms = objective_terms(self.problem, *point)
        value = float(terms.phi)
        improved = value > self.value + _RELATIVE_GAIN * abs(self.value)
        if improved:
            self.point, self.value, self.terms = point, value, terms
        self.trace.append(self.value)
        return improved

    def result(self) -> Allocation:
        bandwidth, power_sign, power_modulus, tau = self.point
        silent = ~(power_sign > 0)  # a device that sends nothing holds no bandwidth and no share
        bandwidth = np.where(silent, 0.0, bandwidth)
        power_modulus = np.where(silent, 0.0, power_modulus)
        tau = np.where(silent, self.problem.fixed_share, tau)
        value = objective(self.problem, bandwidth, power_sign, power_modulus, tau)
        return Allocation(bandwidth, power_sign, power_modulus, tau, value, tuple(self.trace[:-1]) + (value,),
                          self.policy)


def _optimize(problem: AllocationProblem, policy: str, bandwidth_free: bool, power_free: bool, cache: dict
              ) -> Allocation:
    """``cache``: what every stage of one call of :func:`allocate` shares (thresholds, and the answers of
    the solves it repeats: within one call the problems differ only in ``slot_share``, and with equal
    packet powers the answer depends only on the fixed share, not on whether tau is optimized)."""
    key = ("solve", policy, bandwidth_free, power_free, problem.slot_share if power_free else problem.fixed_share)
    if key not in cache:
        cache[key] = _solve(problem, policy, bandwidth_free, power_free, cache)
    return cache[key]


def _solve(problem: AllocationProblem, policy: str, bandwidth_free: bool, power_free: bool, cache: dict
           ) -> Allocation:
    search = _Search(problem, policy)
    if problem.slot_share is None and problem.two_packets and power_free:
        # With tau optimized the answer is never below the optimum at the proportional share.
        search.offer_point(_optimize(replace(problem, slot_share=problem.proportional_share), policy,
                                     bandwidth_free, power_free, cache).arrays)
    coupled = problem.normalize == "received" or problem.descent is not None
    if coupled and bandwidth_free and power_free:
        # The linearization is a heuristic under the coupling: SP-FL's answer is never below its ablations'.
        for ablation in (_power_only, _bandwidth_only):
            search.offer_point(ablation(problem, cache).arrays)
    if problem.descent is None:
        starts = [device_coefficients(problem)]
        rounds = 1 + (RECEIVED_ROUNDS if coupled else 0)
    else:
        # Linearized where every packet arrives (ample resources) and at the uniform point.
        every = np.ones(problem.num_devices)
        delivered = Terms(np.nan, every, every if problem.two_packets else 0.0 * every)
        starts = [linearization(problem, delivered), linearization(problem, search.terms)]
        rounds = 1 + DESCENT_ROUNDS
    for coef_sign, coef_both in starts:
        for round_index in range(rounds):
            if bandwidth_free:
                share, split = best_bandwidth(problem, coef_sign, coef_both, fixed_power=not power_free,
                                              cache=cache)
                bandwidth = share * problem.total_bandwidth
            else:
                bandwidth = search.point[0]
                split = best_split(problem, bandwidth, coef_sign, coef_both, fixed_power=not power_free)
            if (not search.offer(bandwidth, split) and round_index > 0) or round_index == rounds - 1:
                break
            coef_sign, coef_both = linearization(problem, search.terms)
    return search.result()


def _spfl(problem, cache):
    return _optimize(problem, "spfl", bandwidth_free=True, power_free=True, cache=cache)


def _power_only(problem, cache):
    return _optimize(problem, "power", bandwidth_free=False, power_free=True, cache=cache)


def _bandwidth_only(problem, cache):
    return _optimize(problem, "bandwidth", bandwidth_free=True, power_free=False, cache=cache)


def _uniform(problem, cache):
    return _Search(problem, "uniform").result()


def _scheduling(problem: AllocationProblem, cache) -> Allocation:
    """One packet at full power to the best n devices by alpha_k pi_k(B_tot / n) U_m,k, equal shares.

    Every n is evaluated at once (row n - 1 of each array); the first best n wins."""
    num = problem.num_devices
    search = _Search(problem, "scheduling")
    full = np.full(num, float(problem.equal_power(problem.fixed_share)))
    tau = np.full(num, problem.fixed_share)
    sizes = np.arange(1, num + 1)
    each = problem.total_bandwidth / sizes[:, None]                               # (n, 1)
    t_s, t_m = thresholds(problem, np.broadcast_to(each, (num, num)), full, np.zeros(num), tau)
    pi_sign, _ = arrival_probabilities(problem, t_s, t_m)
    scores = problem.alpha * pi_sign * problem.u_modulus
    order = np.argsort(-scores, axis=1, kind="stable")
    chosen = np.zeros((num, num), dtype=bool)
    np.put_along_axis(chosen, order, sizes[None, :] <= sizes[:, None], axis=1)  # the first n of each order
    bandwidth = np.where(chosen, each, 0.0)
    power = np.where(chosen, full, 0.0)
    # Phi of every n, in chunks: under ``received`` each row's quadrature holds (nodes x K) numbers.
    rows = max(1, _BATCH_ELEMENTS // (QUADRATURE_NODES * num))
    phi = np.concatenate([objective_terms(problem, bandwidth[start:start + rows], power[start:start + rows],
                                          np.zeros(num), tau).phi for start in range(0, num, rows)])
    best = int(np.argmax(np.where(np.isnan(phi), -np.inf, phi)))  # the first best n
    search.offer(bandwidth[best], Split(np.zeros(num), power[best], np.zeros(num), tau))
    return search.result()


_POLICIES: dict[str, Callable[[AllocationProblem, dict], Allocation]] = {
    "spfl": _spfl,
    "power": _power_only,
    "bandwidth": _bandwidth_only,
    "uniform": _uniform,
    "scheduling": _scheduling,
}
