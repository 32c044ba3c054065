"""Packet level: one device's split of its power (and, when optimized, of its link) between its packets.

For a device with bandwidth B the objective is a_k pi_sign + b_k pi_both (:mod:`.objective`; under
``normalize: received`` the coefficients come from the exact linearization of the coupling).  Every
error model has a threshold t = (threshold at 1 W) / p, so with the sign's share x of the power budget
on the tight constraint c_s p_s + c_m p_m = P,

    t_s = A / x,  t_m = M / (1 - x),   A = a_s c_s / P,  M = a_m c_m / P,

and the device's term is f(x) = a e^{-A/x} + b e^{-max(A/x, M/(1-x))} (block fading; per-packet:
e^{-A/x - M/(1-x)}).  x = 1 sends the sign only; under block fading x0 = A / (A + M) makes both
packets equally reliable (the kink of f, where SP-FL behaves like one digital packet).  f is not
concave and a, b may be negative (received normalization), so the maximum over x in (0, 1] is found
globally on a grid in logit(x) with the kink and x = 1 as extra candidates, then refined by zooming
the grid around the best point (6 levels: resolution 4e-4 in logit(x)).  A device whose best
term is negative stays silent.  With ``slot_share`` optimized the same search runs for every tau of
a grid that contains the proportional share and tau = 1 (sign only over the whole deadline).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spfl.channel import failure_threshold

from .problem import AllocationProblem

_COARSE = np.linspace(-14.0, 14.0, 17)   # logit(x) grid
_ZOOM_POINTS = 9
_ZOOM_LEVELS = 6
_DEAD = 700.0  # a sign threshold above this at full power: nothing ever arrives (e^-700 ~ 1e-304)
# Sign shares tried when tau is optimized, besides the proportional share and 1 (sign only): a fine grid
# for the final decisions and a coarse one for the bandwidth grid search.
_TAU_LOGITS = np.linspace(-6.0, 6.0, 9)
_COARSE_TAU_LOGITS = np.array([-3.0, 0.0, 3.0])
_TAU_ZOOM_LEVELS = 8


@dataclass(frozen=True)
class Split:
    """Best packet-level decisions per candidate (arrays of the bandwidth's shape)."""

    value: np.ndarray          # the device's term (>= 0: a silent device is worth 0)
    power_sign: np.ndarray
    power_modulus: np.ndarray
    slot_share: np.ndarray


def share_candidates(problem: AllocationProblem, coarse: bool = False) -> np.ndarray:
    """The sign shares tau the packet level may choose (``coarse``: fewer, for the bandwidth grid)."""
    if problem.slot_share is not None:
        return np.array([problem.slot_share])
    grid = _sigmoid(_COARSE_TAU_LOGITS if coarse else _TAU_LOGITS)
    return np.unique(np.concatenate([grid, [problem.proportional_share, 1.0]]))


def best_split(problem: AllocationProblem, bandwidth: np.ndarray, coef_sign: np.ndarray, coef_both: np.ndarray,
               fixed_power: bool = False, coarse: bool = False, refine: bool = False) -> Split:
    """The best split of every device (last axis of ``bandwidth``) at the given bandwidths.

    ``fixed_power``: keep equal packet powers and the fixed sign share (the bandwidth-only ablation);
    with tau optimized, ``coarse`` tries the coarse set of sign shares and ``refine`` zooms each entry's
    best share (logit resolution 0.01)."""
    bandwidth = np.asarray(bandwidth, dtype=float)
    if fixed_power:
        return _split_at_share(problem, bandwidth, coef_sign, coef_both, problem.fixed_share, fixed_power)
    best = None
    for tau in share_candidates(problem, coarse):
        candidate = _split_at_share(problem, bandwidth, coef_sign, coef_both, float(tau), fixed_power)
        best = candidate if best is None else _better(best, candidate)
    if refine and problem.slot_share is None and problem.two_packets:
        step = _TAU_LOGITS[1] - _TAU_LOGITS[0]
        for _ in range(_TAU_ZOOM_LEVELS):
            center = _logit(np.clip(best.slot_share, 1e-12, 1.0 - 1e-12))
            for offset in (-step, step):
                tau = np.where(best.slot_share >= 1.0, 1.0, _sigmoid(center + offset))
                best = _better(best, _split_at_share(problem, bandwidth, coef_sign, coef_both, tau, fixed_power))
            step /= 2.0
    return best


def _better(current: Split, other: Split) -> Split:
    take = other.value > current.value
    return Split(*(np.where(take, getattr(other, f), getattr(current, f))
                   for f in ("value", "power_sign", "power_modulus", "slot_share")))


def _split_at_share(problem, bandwidth, coef_sign, coef_both, tau, fixed_power) -> Split:
    """The best split at the sign share(s) ``tau`` (a number, or an array broadcasting with ``bandwidth``)."""
    tau = np.broadcast_to(np.asarray(tau, dtype=float), np.broadcast_shapes(np.shape(tau), bandwidth.shape))
    c_s, c_m = problem.power_weights(tau)
    budget = problem.max_power
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        unit_s = failure_threshold(bandwidth, 1.0, problem.gain, problem.sign_bits, tau * problem.deadline,
                                   problem.noise_psd, problem.per_model, problem.waterfall_m)
        A = unit_s * (c_s / budget)
        if problem.two_packets:
            unit_m = failure_threshold(bandwidth, 1.0, problem.gain, problem.modulus_bits,
                                       (1.0 - tau) * problem.deadline, problem.noise_psd, problem.per_model,
                                       problem.waterfall_m)
            M = np.where(tau < 1.0, unit_m * (c_m / budget), np.inf)
        else:
            M = np.full_like(A, np.inf)
    a = np.broadcast_to(coef_sign, A.shape)
    b = np.broadcast_to(coef_both, A.shape)
    if fixed_power and problem.two_packets:
        x = np.where(tau < 1.0, c_s / (c_s + c_m), 1.0)
        with np.errstate(invalid="ignore", over="ignore", under="ignore"):
            both = _term(problem, np.where(x < 1.0, x, 0.5), A, M, a, b)  # x = 1: no modulus, sign only
            value = np.where(x < 1.0, both, a * np.exp(-A))
    else:
        x, value = _search(problem, A, M, a, b)
    silent = ~(value > 0)
    value = np.where(silent, 0.0, value)
    with np.errstate(divide="ignore", invalid="ignore"):
        power_sign = np.where(silent, 0.0, x * budget / c_s)
        power_modulus = np.where(silent | (x >= 1.0) | ~np.isfinite(M), 0.0,
                                 (1.0 - x) * budget / np.maximum(c_m, 1e-300))
    return Split(value, power_sign, power_modulus, np.array(tau))


def _term(problem, x, A, M, a, b):
    """f(x) = a pi_sign + b pi_both at the sign's power share x in (0, 1) (thresholds A, M > 0)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        t_s = A / x
        t_m = M / (1.0 - x)
        joint = np.maximum(t_s, t_m) if problem.fading == "block" else t_s + t_m
        return a * np.exp(-t_s) + b * np.exp(-joint)


def _search(problem, A, M, a, b):
    """Global maximum of f over x in (0, 1] per entry: grid in logit(x), extra candidates, zoom."""
    shape = A.shape
    A, M, a, b = (np.broadcast_to(np.asarray(v, dtype=float), shape).ravel() for v in (A, M, a, b))
    with np.errstate(over="ignore", under="ignore"):
        sign_only = a * np.exp(-A)  # x = 1: all power to the sign, no modulus packet
    x = np.ones(A.shape)
    best = sign_only.copy()
    # Entries whose sign cannot arrive even at full power are worth 0 whatever x: skip them.
    live = np.flatnonzero((A < _DEAD) & np.isfinite(M)) if problem.two_packets else np.array([], dtype=int)
    if live.size:
        x[live], best[live] = _interior(problem, A[live], M[live], a[live], b[live], sign_only[live])
    return x.reshape(shape), best.reshape(shape)


def _interior(problem, A, M, a, b, sign_only):
    """The best x in (0, 1] of entries that can send both packets."""
    A1, M1, a1, b1 = (v[:, None] for v in (A, M, a, b))
    logits = np.broadcast_to(_COARSE, (A1.shape[0], _COARSE.size))
    values = _term(problem, _sigmoid(logits), A1, M1, a1, b1)
    pick = np.argmax(values, axis=1)
    center = logits[np.arange(len(pick)), pick]
    best_value = values[np.arange(len(pick)), pick]
    step = _COARSE[1] - _COARSE[0]
    offsets = np.linspace(-1.0, 1.0, _ZOOM_POINTS)
    for _ in range(_ZOOM_LEVELS):
        trial = center[:, None] + step * offsets
        trial_values = _term(problem, _sigmoid(trial), A1, M1, a1, b1)
        pick = np.argmax(trial_values, axis=1)
        better = trial_values[np.arange(len(pick)), pick] > best_value
        center = np.where(better, trial[np.arange(len(pick)), pick], center)
        best_value = np.maximum(best_value, trial_values[np.arange(len(pick)), pick])
        step = step * 2.0 / (_ZOOM_POINTS - 1)
    x = _sigmoid(center)
    # The kink of block fading (both packets equally reliable) and sign only are exact candidates.
    kink = A / (A + M)
    kink_value = _term(problem, kink, A, M, a, b)
    for candidate, value in ((kink, kink_value), (np.ones_like(x), sign_only)):
        take = value > best_value
        x = np.where(take, candidate, x)
        best_value = np.maximum(best_value, value)
    return x, best_value


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _logit(p):
    return np.log(p) - np.log1p(-p)
