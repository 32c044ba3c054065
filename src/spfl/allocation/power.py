"""Power block (SPEC section 6): each device's split of power between its two packets.

With bandwidth fixed, device k's term of Phi depends only on its own powers, and every error
model has threshold t = a / p (a = threshold at unit power).  On the active constraint
c_s p_s + c_m p_m = P write A = a_s c_s / P, M = a_m c_m / P and theta = c_s p_s / P, so that

    Phi_k(theta) = alpha e^{-A / theta} (U_s + V e^{-M / (1 - theta)}),   V = (U_m - U_s)^+.

Parametrize by the modulus error exponent e = M / (1 - theta) and y = log(e - M).  The sign of
dPhi_k/dtheta is the sign of

    D(y) = log(A M) - 2 y + softplus(M + e^y - log(V / U_s)),

which is convex in y and positive at both ends.  Hence Phi_k rises, falls, rises again at most
once: its global maximum is either the first root of D (a unique interior local maximum) or
theta = 1 (all power to the sign).  Newton-Raphson on D from a point left of the first root
converges monotonically to it, without overshoot, and stops at once where D has no root; the
two candidates (and the current split, so the block never loses ground) are then compared.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from spfl.allocation.objective import scaled_values
from spfl.allocation.problem import AllocationProblem

_NEWTON_TOL = 1e-13
_NEWTON_MAX_ITER = 100


def optimal_power(
    problem: AllocationProblem, unit_sign: np.ndarray, unit_modulus: np.ndarray,
    power_sign: np.ndarray, power_modulus: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-device global maximizer of Phi_k over the power constraint, for fixed thresholds.

    ``unit_sign`` / ``unit_modulus`` are the packets' failure thresholds at 1 W (any shape that
    broadcasts against the K devices).  The current powers are kept unless a candidate is strictly
    better (dead links, zero weights, ties), so the block never lowers Phi.
    """
    c_s, c_m = problem.power_weights
    budget = problem.max_power
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        sign_scale = unit_sign * (c_s / budget)
        exponent = _modulus_exponent(sign_scale, unit_modulus * (c_m / budget), problem.log_worth_ratio)
        interior_pm = unit_modulus / exponent
        interior_ps = np.maximum(budget - c_m * interior_pm, 0.0) / c_s
    sign_only_ps = budget / c_s
    current = scaled_values(problem, unit_sign, unit_modulus, power_sign, power_modulus)
    sign_only = scaled_values(problem, unit_sign, unit_modulus, sign_only_ps, 0.0)
    interior = scaled_values(problem, unit_sign, unit_modulus, interior_ps, interior_pm)
    use_interior = interior > np.maximum(current, sign_only)
    use_sign_only = ~use_interior & (sign_only > current)
    power_sign = np.where(use_interior, interior_ps, np.where(use_sign_only, sign_only_ps, power_sign))
    power_modulus = np.where(use_interior, interior_pm, np.where(use_sign_only, 0.0, power_modulus))
    return power_sign, power_modulus


def _modulus_exponent(sign_scale: np.ndarray, modulus_scale: np.ndarray, ell: np.ndarray) -> np.ndarray:
    """Modulus error exponent e at the interior local maximum; inf where there is none.

    ``sign_scale`` = A, ``modulus_scale`` = M, ``ell`` = log(V / U_s) (see the module docstring).
    Starting at y0 = log(A M) / 2, where D >= 0 and left of which D > 0, Newton steps increase y
    monotonically to the first root; a point with D > 0 and D' >= 0 proves there is no root.
    Devices leave the iteration as soon as they are settled, so a few slow ones cost little.
    """
    A, M, ell = np.broadcast_arrays(sign_scale, modulus_scale, ell)
    shape = A.shape
    A, M, ell = A.ravel(), M.ravel(), ell.ravel()
    exponent = np.full(A.shape, np.inf)
    todo = np.flatnonzero((A > 0) & np.isfinite(A) & (M > 0) & np.isfinite(M) & (ell > -np.inf))
    M, ell = M[todo], ell[todo]
    log_am = np.log(A[todo] * M)
    y = 0.5 * log_am
    for _ in range(_NEWTON_MAX_ITER):
        value, slope = _stationarity(y, log_am, M, ell)
        step = value / slope
        root = (value <= _NEWTON_TOL) | ((slope < 0) & (np.abs(step) <= 1e-12 * (1.0 + np.abs(y))))
        exponent[todo[root]] = M[root] + np.exp(y[root])
        going = ~root & (slope < 0)
        if not going.any():
            break
        todo, y, step, log_am, M, ell = (x[going] for x in (todo, y, step, log_am, M, ell))
        y = y - step
    else:
        exponent[todo] = M + np.exp(y)  # still converging from the left: as good as it gets
    return exponent.reshape(shape)


def _stationarity(y: np.ndarray, log_am: np.ndarray, M: np.ndarray, ell: np.ndarray):
    """D(y) and D'(y): the log ratio of the two sides of dPhi_k/dtheta = 0 and its slope."""
    e_y = np.exp(y)
    z = M + e_y - ell
    return log_am - 2.0 * y + np.logaddexp(0.0, z), -2.0 + e_y * expit(z)
