"""The packet level's compiled loops (block fading, or a single packet): the separable solve's stages per
entry, with the link's thresholds computed in the loop (:func:`spfl.simulator.channel.threshold_kernel`).

:class:`.separable.PacketLevel` calls them with the problem's link as a tuple of numbers (:func:`link_of`); each
stage gives what its numpy form gave (:mod:`.separable`, :mod:`.power`): the thresholds at 1 W times
c / P (``_geometry``), the best x of an entry (:func:`.packet.entry_best`, or equal packet powers when
``fixed``), the split of a chosen x (silent where the best term is not positive), the first best sign
share of the candidates, then (tau optimized) a zoom of each entry's share in logit(tau).
:func:`solve_shares` runs the bandwidth stages of a separable solve (the grid's knapsack and its zooms) in
one call; :func:`point_arrivals` the arrival probabilities of many candidate allocations; :func:`grid_tables` the
bandwidth grid's thresholds (and with equal packet powers its probabilities).
"""

from __future__ import annotations

import numpy as np

from spfl.simulator.allocation.bandwidth import _best_choices
from spfl.simulator.allocation.packet import _best, entry_best
from spfl.simulator.allocation.problem import AllocationProblem
from spfl.simulator.channel import received_need, threshold_kernel
from spfl.simulator.compiled import inline, jit

_POWER, _SIGN_BITS, _MODULUS_BITS, _DEADLINE, _NOISE, _WATERFALL, _ENERGY, _OUTAGE, _TWO, _BLOCK = range(10)


def link_of(problem: AllocationProblem) -> tuple[float, ...]:
    """The problem's link and budgets as the kernels read them (indices ``_POWER`` ...; a tuple of numbers,
    which a kernel passes on as plain values)."""
    return tuple(float(v) for v in (problem.max_power, problem.sign_bits, problem.modulus_bits, problem.deadline,
                                    problem.noise_psd, problem.waterfall_m, problem.power_constraint == "energy",
                                    problem.per_model == "outage", problem.two_packets, problem.fading == "block"))


@inline
def _entry(bandwidth, tau, gain, link, fixed, a, b):
    """(value, power_sign, power_modulus) of one device at one bandwidth and sign share: its best split
    (value 0 and no power when silent)."""
    budget = link[_POWER]
    c_s, c_m = (tau, 1.0 - tau) if link[_ENERGY] > 0 else (1.0, 1.0)
    outage = link[_OUTAGE] > 0
    unit_s = threshold_kernel(bandwidth, 1.0, gain, link[_SIGN_BITS], tau * link[_DEADLINE], link[_NOISE], outage,
                              link[_WATERFALL])
    A = unit_s * (c_s / budget)
    M = np.inf
    if link[_TWO] > 0 and tau < 1.0:
        unit_m = threshold_kernel(bandwidth, 1.0, gain, link[_MODULUS_BITS], (1.0 - tau) * link[_DEADLINE],
                                  link[_NOISE], outage, link[_WATERFALL])
        M = unit_m * (c_m / budget)
    if fixed:  # equal packet powers: x is the sign's share of the budget at equal powers
        x = c_s / (c_s + c_m) if tau < 1.0 else 1.0
        t_s, t_m = A / x, M / (1.0 - x)
        joint = max(t_s, t_m) if link[_BLOCK] > 0 else t_s + t_m
        value = a * np.exp(-t_s) + (b * np.exp(-joint) if x < 1.0 else 0.0)
    else:
        value, x = entry_best(A, M, a, b)
    if not value > 0.0:
        return 0.0, 0.0, 0.0
    power_modulus = 0.0 if (x >= 1.0 or not np.isfinite(M)) else (1.0 - x) * budget / max(c_m, 1e-300)
    return value, x * budget / c_s, power_modulus


@inline
def _best_share(bandwidth, taus, gain, link, fixed, a, b):
    """(value, power_sign, power_modulus, tau) at the first best of the sign shares ``taus``."""
    best = (-1.0, 0.0, 0.0, taus[0])
    for tau in taus:
        value, power_sign, power_modulus = _entry(bandwidth, tau, gain, link, fixed, a, b)
        if value > best[0]:
            best = (value, power_sign, power_modulus, tau)
    return best


@inline
def _fixed_best(a, b, pi_sign, pi_both, j, k):
    """The best term (silent: 0) over the sign shares of one device at grid level j, equal packet powers."""
    best = 0.0
    for s in range(pi_sign.shape[0]):
        value = a * pi_sign[s, j, k] + b * pi_both[s, j, k]
        if value > best:
            best = value
    return best


@jit
def zoom_values(share, step, offsets, a, b, gain, link, taus, fixed, total_bandwidth, trial, values,
                power_sign, power_modulus, slot_share):
    """One zoom of the bandwidth shares (R, K): every offset's trial share, its best term over the sign
    shares ``taus`` (-inf where the trial is outside [0, 1]: not an option) and its split."""
    rows, num, options = values.shape
    for r in range(rows):
        for k in range(num):
            for o in range(options):
                t = share[r, k] + offsets[o] * step
                trial[r, k, o] = t
                if not (t >= 0.0 and t <= 1.0):
                    values[r, k, o] = -np.inf
                    power_sign[r, k, o] = power_modulus[r, k, o] = 0.0
                    slot_share[r, k, o] = taus[0]
                    continue
                best = _best_share(t * total_bandwidth, taus, gain[k], link, fixed, a[r, k], b[r, k])
                values[r, k, o], power_sign[r, k, o], power_modulus[r, k, o], slot_share[r, k, o] = best


@jit
def split(bandwidth, a, b, gain, link, taus, fixed, refine_step, refine_levels, value, power_sign,
          power_modulus, slot_share):
    """The best split of every entry (R, K) at its bandwidth: the first best of the sign shares ``taus``,
    then ``refine_levels`` zooms of its share (trials logit(tau) -+ step, the step halving; a share of 1
    stays; the incumbent wins ties)."""
    rows, num = bandwidth.shape
    for r in range(rows):
        for k in range(num):
            best = _best_share(bandwidth[r, k], taus, gain[k], link, fixed, a[r, k], b[r, k])
            step = refine_step
            for _ in range(refine_levels):
                tau = best[3]
                if tau >= 1.0:
                    break
                p = min(max(tau, 1e-12), 1.0 - 1e-12)
                center = np.log(p) - np.log1p(-p)
                for trial in (center - step, center + step):
                    tau = 1.0 / (1.0 + np.exp(-trial))
                    tried = _entry(bandwidth[r, k], tau, gain[k], link, fixed, a[r, k], b[r, k])
                    if tried[0] > best[0]:
                        best = (tried[0], tried[1], tried[2], tau)
                step /= 2.0
            value[r, k], power_sign[r, k], power_modulus[r, k], slot_share[r, k] = best


@jit
def solve_shares(a, b, fixed, shares, A, M, sign, kink_x, kink_sign, kink_both, bracket, table_x, table_g, table_z,
                 log_ratio, fixed_sign, fixed_both, units, zooms, zoom_steps, offsets, gain, link, taus,
                 total_bandwidth, zoom):
    """The bandwidth shares (S, K) of a separable solve for coefficient rows a, b (S, K), before their
    normalization, as :func:`.separable.solve_bandwidth` forms them: each device's best term at every grid
    level (the block packets' table, A ... log_ratio, over its ``shares`` sign shares; or, ``fixed``, the
    equal-power tables fixed_sign, fixed_both (shares, J + 1, K)), the knapsack over the grid, then ``zooms``
    zooms of +-``zoom_steps`` sub-steps.  ``zoom`` (5, S, K, options) receives the last zoom's trial shares,
    best terms and splits (:func:`zoom_values`); also returns the last zoom's picks (S, K) and False when a
    knapsack has no finite choice (then the rest is not filled)."""
    rows, num = a.shape
    levels = units + 1
    grid = np.empty((rows, num, levels))
    if fixed:
        for r in range(rows):
            for j in range(levels):
                for k in range(num):
                    grid[r, k, j] = _fixed_best(a[r, k], b[r, k], fixed_sign, fixed_both, j, k)
    else:
        flat = np.empty((rows, levels * num))
        _best(a, b, A, M, sign, kink_x, kink_sign, kink_both, bracket, table_x, table_g, table_z, log_ratio,
              shares, flat, flat)
        for r in range(rows):
            for j in range(levels):
                for k in range(num):
                    grid[r, k, j] = flat[r, j * num + k]
    chosen, solved = _best_choices(grid, units)
    share = np.empty((rows, num))
    if not solved:
        return share, chosen, False
    for r in range(rows):
        for k in range(num):
            share[r, k] = chosen[r, k] / units
    step = 1.0 / units
    for _ in range(zooms):
        zoom_values(share, step / zoom_steps, offsets, a, b, gain, link, taus, fixed, total_bandwidth, zoom[0],
                    zoom[1], zoom[2], zoom[3], zoom[4])
        chosen, solved = _best_choices(zoom[1], zoom_steps * num)
        if not solved:
            return share, chosen, False
        for r in range(rows):
            for k in range(num):
                t = zoom[0, r, k, chosen[r, k]]
                t = t if t >= 0.0 else 0.0     # (numpy's clip: maximum, then minimum)
                share[r, k] = t if t <= 1.0 else 1.0
        step /= zoom_steps
    return share, chosen, True


@jit
def point_arrivals(bandwidth, power_sign, power_modulus, slot_share, gain, link, sign, both):
    """Every entry's (P(sign arrives), P(both arrive)) (P, K) of candidate allocations (P, K): e^{-t_s} and
    e^{-t_joint}, t_joint = max(t_s, t_m) under block fading, t_s + t_m per packet, t_m = inf with one
    packet (:func:`.objective.thresholds`, :func:`.objective.arrival_probabilities`; the exponential is
    the C library's, which may differ from numpy's in the last bit)."""
    outage = link[_OUTAGE] > 0
    points, num = bandwidth.shape
    for p in range(points):
        for k in range(num):
            tau = slot_share[p, k]
            t_s = threshold_kernel(bandwidth[p, k], power_sign[p, k], gain[k], link[_SIGN_BITS], tau * link[_DEADLINE],
                                   link[_NOISE], outage, link[_WATERFALL])
            t_m = np.inf
            if link[_TWO] > 0:
                t_m = threshold_kernel(bandwidth[p, k], power_modulus[p, k], gain[k], link[_MODULUS_BITS],
                                       (1.0 - tau) * link[_DEADLINE], link[_NOISE], outage, link[_WATERFALL])
            joint = (t_s if t_s >= t_m else t_m) if link[_BLOCK] > 0 else t_s + t_m
            sign[p, k], both[p, k] = np.exp(-t_s), np.exp(-joint)


@jit
def grid_tables(levels, taus, gain, link, fixed, A, M, pi_sign, pi_both):
    """A, M (S, L, K) of every sign share (S), bandwidth level (L) and device at full power, as
    :func:`.power._geometry` gives them (a level's received-power need is computed once for all devices),
    and with ``fixed`` the equal-power arrival probabilities pi_sign, pi_both, as :class:`.separable._Table`
    gives them."""
    budget = link[_POWER]
    outage = link[_OUTAGE] > 0
    shares, count, num = A.shape
    for s in range(shares):
        tau = taus[s]
        c_s, c_m = (tau, 1.0 - tau) if link[_ENERGY] > 0 else (1.0, 1.0)
        x = c_s / (c_s + c_m) if tau < 1.0 else 1.0
        slot_s, slot_m = tau * link[_DEADLINE], (1.0 - tau) * link[_DEADLINE]
        for j in range(count):
            bandwidth = levels[j]
            reach_s = bandwidth > 0.0 and slot_s > 0.0
            reach_m = bandwidth > 0.0 and slot_m > 0.0
            need_s = received_need(bandwidth, link[_SIGN_BITS], slot_s, link[_NOISE], outage, link[_WATERFALL]) \
                if reach_s else np.inf
            need_m = received_need(bandwidth, link[_MODULUS_BITS], slot_m, link[_NOISE], outage, link[_WATERFALL]) \
                if reach_m else np.inf
            for k in range(num):
                unit = need_s / (1.0 * gain[k]) if reach_s else np.inf
                unit = unit if np.isfinite(unit) else np.inf
                A[s, j, k] = unit * (c_s / budget)
                if link[_TWO] > 0 and tau < 1.0:
                    unit = need_m / (1.0 * gain[k]) if reach_m else np.inf
                    unit = unit if np.isfinite(unit) else np.inf
                    M[s, j, k] = unit * (c_m / budget)
                else:
                    M[s, j, k] = np.inf
                if fixed:
                    t_s, t_m = A[s, j, k] / x, M[s, j, k] / (1.0 - x)
                    joint = (t_s if t_s >= t_m else t_m) if link[_BLOCK] > 0 else t_s + t_m
                    pi_sign[s, j, k] = np.exp(-t_s)
                    pi_both[s, j, k] = np.exp(-joint) if x < 1.0 else 0.0
