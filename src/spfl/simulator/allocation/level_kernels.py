"""The packet level's compiled loops (block fading, or a single packet): the separable solve's stages per
entry, with the link's thresholds computed in the loop (:func:`spfl.simulator.channel.threshold_kernel`).

:class:`.separable.PacketLevel` calls them with the problem's link as a tuple of numbers (:func:`link_of`); each
stage gives what its numpy form gave (:mod:`.separable`, :mod:`.power`): the thresholds at 1 W times
c / P (``_geometry``), the best x of an entry (:func:`.packet.entry_best`, or equal packet powers when
``fixed``), the split of a chosen x (silent where the best term is not positive), the first best sign
share of the candidates, then (tau optimized) a zoom of each entry's share in logit(tau).
"""

from __future__ import annotations

import numpy as np

from spfl.simulator.allocation.packet import entry_best
from spfl.simulator.allocation.problem import AllocationProblem
from spfl.simulator.channel import threshold_kernel
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


@jit
def fixed_values(a, b, pi_sign, pi_both, out):
    """out[r, j, k]: the best term (silent: 0) of device k at grid level j with equal packet powers, over the
    sign shares (the leading axis of the tables pi_sign, pi_both: (shares, J + 1, K)), coefficients (R, K)."""
    rows, levels, num = out.shape
    for r in range(rows):
        for j in range(levels):
            for k in range(num):
                best = 0.0
                for s in range(pi_sign.shape[0]):
                    value = a[r, k] * pi_sign[s, j, k] + b[r, k] * pi_both[s, j, k]
                    if value > best:
                        best = value
                out[r, j, k] = best


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
