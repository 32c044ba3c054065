"""Packet level: per device, the split of the power budget (and of the link) between its two packets.

With the bandwidth of every device fixed and Phi's coefficients per device known, the packet problem
of device k is max a pi_sign + b pi_both over its packet powers (docs/model.md, "Solver"; a = alpha U_s,
b = alpha (U_m - U_s) under ``normalize: all``, under ``received`` the coefficients come from the exact
linearization of the coupling).  Every error model has a threshold t = (threshold at 1 W) / p, so with
the sign's share x of the power budget on the tight constraint c_s p_s + c_m p_m = P,

    t_s = A / x,  t_m = M / (1 - x),   A = a_s c_s / P,  M = a_m c_m / P,

and the device's term is f(x) = a e^{-A/x} + b e^{-max(A/x, M/(1-x))} (block fading; per-packet:
e^{-A/x - M/(1-x)}).  x = 1 sends the sign only; under block fading x0 = A / (A + M) makes both
packets equally reliable (the kink of f, where SP-FL behaves like one digital packet).  f is not
concave and a, b may be negative (received normalization), so the maximum over x in (0, 1] is found
globally on a grid in logit(x) with the kink and x = 1 as extra candidates, then refined by zooming
the grid around the best point (6 levels: resolution 4e-4 in logit(x)).  A device whose best
term is negative stays silent.  With ``slot_share`` optimized the same search runs for every tau of
a grid that contains the proportional share and tau = 1 (sign only over the whole deadline).

Under block fading the maximum is found in closed form plus Newton steps instead (:mod:`.packet`); the
lattice search here serves per-packet fading.  Speed: every search point lies on one fixed lattice of
logit values, so x and 1 - x are read from precomputed tables instead of recomputed; a zoom does not
re-evaluate its own centre; exp's underflows are set to 0 without numpy's slow path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spfl.simulator.allocation.problem import AllocationProblem
from spfl.simulator.channel import failure_threshold

_COARSE = np.linspace(-14.0, 14.0, 17)   # logit(x) grid
_ZOOM_POINTS = 9
_ZOOM_LEVELS = 6
_UNDERFLOW = 746.0  # exp(-t) is exactly 0 in float64 from t = 745.14 on
_BIG_ARRAY = 4096
_DEAD = 700.0  # a sign threshold above this at full power: nothing ever arrives (e^-700 ~ 1e-304)
# Sign shares tried when tau is optimized, besides the proportional share and 1 (sign only): a fine grid
# for the final decisions and a coarse one for the bandwidth grid search.
_TAU_LOGITS = np.linspace(-6.0, 6.0, 9)
_COARSE_TAU_LOGITS = np.array([-3.0, 0.0, 3.0])
_TAU_ZOOM_LEVELS = 8

# The lattice of logit(x) values the search can visit.  The coarse grid has step 1.75 and each zoom
# level tries centre + step * j / 4 (j = -4..4) then divides the step by 4, so every point is
# -14 + n * 1.75 / 4^6 for an integer n, computed exactly in binary floating point (all these numbers
# are short dyadic fractions): x = sigmoid(point) can be tabulated once, bit for bit.
_SHRINK = (_ZOOM_POINTS - 1) // 2                   # the step shrinks by 4 per zoom level
_COARSE_STRIDE = _SHRINK**_ZOOM_LEVELS               # lattice units per coarse step
_UNIT = (_COARSE[1] - _COARSE[0]) / _COARSE_STRIDE
_REACH = sum(_SHRINK * _SHRINK**(_ZOOM_LEVELS - 1 - level) for level in range(_ZOOM_LEVELS))
_LATTICE_LOW = -_REACH                               # smallest reachable n
_LATTICE = _COARSE[0] + np.arange(_LATTICE_LOW, (_COARSE.size - 1) * _COARSE_STRIDE + _REACH + 1) * _UNIT
_ZOOM_OFFSETS = np.array([j for j in range(-_SHRINK, _SHRINK + 1) if j != 0])   # the centre is known


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _logit(p):
    return np.log(p) - np.log1p(-p)


_LATTICE_X = _sigmoid(_LATTICE)
_LATTICE_REST = 1.0 - _LATTICE_X                     # 1 - x, as _term computed it
_COARSE_INDEX = np.arange(_COARSE.size) * _COARSE_STRIDE - _LATTICE_LOW
for _table in (_LATTICE, _LATTICE_X, _LATTICE_REST, _COARSE_INDEX):
    _table.setflags(write=False)
del _table


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
    """The best split of every device (last axis of ``bandwidth``, any leading axes) at the given
    bandwidths, for the coefficients (K,) (:class:`.separable.PacketLevel` solves it for many at once).

    ``fixed_power``: keep equal packet powers and the fixed sign share (the bandwidth-only ablation);
    with tau optimized, ``coarse`` tries the coarse set of sign shares and ``refine`` zooms each entry's
    best share (logit resolution 0.01)."""
    from spfl.simulator.allocation.separable import PacketLevel  # (separable builds on this module)

    bandwidth = np.asarray(bandwidth, dtype=float)
    coef_sign, coef_both = (np.asarray(c, dtype=float) for c in (coef_sign, coef_both))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        return PacketLevel(problem).split(bandwidth, coef_sign, coef_both, fixed=fixed_power, refine=refine,
                                          coarse=coarse)


def _geometry(problem, bandwidth, tau):
    """(tau, c_s, c_m, A, M) of the entries at sign share(s) ``tau`` (broadcast to the bandwidth's shape):
    the packets' failure thresholds at 1 W (the link model, spfl.simulator.channel) times c / P, so that
    at the sign's power share x of the budget they are A / x and M / (1 - x)."""
    tau = np.broadcast_to(np.asarray(tau, dtype=float), np.broadcast_shapes(np.shape(tau), bandwidth.shape))
    c_s, c_m = problem.power_weights(tau)
    budget = problem.max_power
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
    return tau, c_s, c_m, A, M


def _term(block: bool, x, rest, A, M, a, b):
    """f(x) = a pi_sign + b pi_both at the sign's power share x in (0, 1), ``rest`` = 1 - x (thresholds
    A, M > 0; floating-point warnings off, as in :func:`best_split`)."""
    t_s = A / x
    t_m = M / rest
    joint = np.maximum(t_s, t_m, out=t_m) if block else np.add(t_s, t_m, out=t_m)
    sign = _exp_negative(t_s)
    sign *= a
    both = _exp_negative(joint)
    both *= b
    sign += both
    return sign


def _exp_negative(t):
    """exp(-t) for t >= 0 (+inf and NaN included), in place, bit for bit numpy's.  numpy's vectorized exp
    is several times slower on arguments whose result underflows to 0 (t > 745.2), and most of a large
    grid's are there, so on large arrays those are set to 0 directly.  (Not by multiplying with a mask:
    inf * 0 is NaN, and a dead packet's threshold is +inf.)"""
    if t.size < _BIG_ARRAY:
        return np.exp(np.negative(t, out=t), out=t)
    far = t >= _UNDERFLOW               # +inf too; NaN stays NaN, as in numpy
    np.copyto(t, 0.0, where=far)        # exp(-0) = 1, set to 0 below
    np.exp(np.negative(t, out=t), out=t)
    np.copyto(t, 0.0, where=far)
    return t


def _search(problem, A, M, a, b):
    """Global maximum of f over x in (0, 1] per entry: grid in logit(x), extra candidates, zoom."""
    shape = A.shape
    A, M, a, b = (_filled(v, shape) for v in (A, M, a, b))
    sign_only = a * np.exp(-A)  # x = 1: all power to the sign, no modulus packet
    x = np.ones(A.shape)
    best = sign_only.copy()
    # Entries whose sign cannot arrive even at full power are worth 0 whatever x: skip them.
    live = np.flatnonzero((A < _DEAD) & np.isfinite(M)) if problem.two_packets else np.array([], dtype=int)
    if live.size:
        x[live], best[live] = _interior(problem.fading == "block", A[live], M[live], a[live], b[live],
                                        sign_only[live])
    return x.reshape(shape), best.reshape(shape)


def _filled(value, shape) -> np.ndarray:
    """``value`` broadcast to ``shape``, flattened (a view when it already has that shape)."""
    value = np.asarray(value, dtype=float)
    if value.shape == shape:
        return value.ravel()
    filled = np.empty(shape)
    filled[...] = value
    return filled.ravel()


def _interior(block, A, M, a, b, sign_only):
    """The best x in (0, 1] of entries that can send both packets."""
    A1, M1, a1, b1 = (v[:, None] for v in (A, M, a, b))
    rows = np.arange(A.size)
    values = _term(block, _LATTICE_X[_COARSE_INDEX], _LATTICE_REST[_COARSE_INDEX], A1, M1, a1, b1)
    pick = np.argmax(values, axis=1)
    center = _COARSE_INDEX[pick]                    # lattice index of the best point so far
    best_value = values[rows, pick]
    stride = _COARSE_STRIDE
    for _ in range(_ZOOM_LEVELS):
        # Trials centre + step * j / 4, j != 0; the centre's own value is best_value.
        trial = center[:, None] + (stride // _SHRINK) * _ZOOM_OFFSETS
        trial_values = _term(block, _LATTICE_X[trial], _LATTICE_REST[trial], A1, M1, a1, b1)
        pick = np.argmax(trial_values, axis=1)
        top = trial_values[rows, pick]
        center = np.where(top > best_value, trial[rows, pick], center)
        best_value = np.maximum(best_value, top)
        stride //= _SHRINK
    x = _LATTICE_X[center]
    # The kink of block fading (both packets equally reliable) and sign only are exact candidates.
    kink = A / (A + M)
    kink_value = _term(block, kink, 1.0 - kink, A, M, a, b)
    for candidate, value in ((kink, kink_value), (np.ones_like(x), sign_only)):
        take = value > best_value
        x = np.where(take, candidate, x)
        best_value = np.maximum(best_value, value)
    return x, best_value
