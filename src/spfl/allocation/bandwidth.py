"""Bandwidth block (SPEC section 6): successive convex approximation (SCA) with powers fixed.

Variables are the shares b_k = B_k / B_tot on the simplex.  Each device term is
alpha [U_s e^{h_s} + V e^{h_s + h_m}] with h = -t concave in b (outage model), so the inequality
e^h >= e^{h0} (1 + h - h0) gives a concave minorant that touches Phi, with equal gradient, at the
current point:

    S(b) = const + sum_k [w_s,k h_s,k(b_k) + w_m,k h_m,k(b_k)],
    w_s = alpha pi_s0 (U_s + pi_m0 V),   w_m = alpha V pi_s0 pi_m0.

S is separable and concave under the one constraint sum b = 1.  Its KKT conditions say that every
served device has the same log marginal L_k(s_k) = nu, with s = -log b and

    L_k(s) = log sum_x W_x phi(gamma_x e^s),   W_x = w_x N0 B_tot / (lambda_k p_x),   gamma_x = c_x / B_tot,

c_x = bits_x ln2 / slot_x (phi from :func:`spfl.allocation.objective.log_phi`).  L_k is convex,
increasing and of slope >= 2 in s, so Newton-Raphson on the KKT system, with the multiplier nu
eliminated in closed form at each step (it is the value for which the linearized budget holds),
converges in a few steps for all devices and rows at once.  Weights stay in log space so devices
deep in outage still rank correctly.

The surrogate is more concave than Phi (it drops the e^h h'^2 curvature), so its maximizer falls
short along the way to Phi's: each SCA step also tries longer steps along the same direction and
keeps the best point for Phi.  A row moves only if Phi rises (MM guarantees that up to rounding),
so the block never lowers Phi; it stops when no row gains more than 1e-6 of the best row's Phi.

The waterfall model has dt/dB > 0 (bandwidth only adds noise, no rate requirement), so Phi falls
in every B_k and has no maximizer on the open simplex: the block keeps the given shares there.
"""

from __future__ import annotations

import numpy as np

from spfl.allocation.objective import Links, log_phi
from spfl.allocation.problem import AllocationProblem

SCA_TOL = 1e-6
_SCA_MAX_ITER = 200
_KKT_TOL = 1e-12
_NEWTON_MAX_ITER = 100
# Largest change of log b_k per Newton step: damps the first steps from a start far from the root.
_MAX_LOG_STEP = 2.0
# Step lengths tried along each SCA direction (1 is the plain SCA step).
_OMEGAS = np.array([1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0])
# Devices whose surrogate weight is below e^-700 of their row's largest get no bandwidth: their
# marginals would need b below the floating-point range to balance the others.
_LOG_WEIGHT_FLOOR = -700.0


def sca_bandwidth(
    problem: AllocationProblem, links: Links, power_sign: np.ndarray, power_modulus: np.ndarray,
    tol: float = SCA_TOL,
) -> Links:
    """SCA iterations from ``links`` (rows of K shares) until no row gains ``tol`` of the best Phi."""
    if problem.per_model != "outage":
        return links
    log_scale_s, log_scale_m = _log_marginal_scales(problem, power_sign, power_modulus)
    log_gamma_s = _log_gamma(problem, problem.sign_bits, problem.sign_slot)
    log_gamma_m = _log_gamma(problem, problem.modulus_bits, problem.modulus_slot)
    values = links.total(problem, power_sign, power_modulus)
    for _ in range(_SCA_MAX_ITER):
        log_w_s, log_w_m = _surrogate_log_weights(problem, links, power_sign, power_modulus)
        target = solve_surrogate(
            _times(log_w_s, log_scale_s), _times(log_w_m, log_scale_m), log_gamma_s, log_gamma_m, links.share
        )
        candidate, new_values = _line_search(problem, links.share, target, power_sign, power_modulus)
        better = new_values > values
        links = links.where(better, candidate)
        gain = np.where(better, new_values - values, 0.0)
        values = np.maximum(values, new_values)
        if np.all(gain <= tol * values.max()):
            break
    return links


def solve_surrogate(
    log_w_s: np.ndarray, log_w_m: np.ndarray, log_gamma_s: float, log_gamma_m: float, share: np.ndarray
) -> np.ndarray:
    """Maximizer of the concave surrogate on the simplex, by Newton-Raphson on its KKT conditions.

    ``log_w_*`` are log W_x per device (-inf: the packet adds nothing).  Devices with no share in
    ``share`` stay at 0 (the minorant is -inf there); rows with nothing to gain keep ``share``.
    """
    row_max = np.maximum(log_w_s, log_w_m).max(axis=-1, keepdims=True)
    active = (share > 0) & (np.maximum(log_w_s, log_w_m) > row_max + _LOG_WEIGHT_FLOOR)
    solvable = (active.any(axis=-1) & np.isfinite(row_max[..., 0]))[..., None]
    active &= solvable
    marginals = _Marginals(log_w_s, log_w_m, log_gamma_s, log_gamma_m, active)
    start = np.where(active, share, 0.0)
    start = start / np.where(solvable, start.sum(axis=-1, keepdims=True), 1.0)
    s = np.where(active, -np.log(np.where(active, start, 1.0)), 0.0)
    for _ in range(_NEWTON_MAX_ITER):
        level, slope = marginals(s)
        b = np.where(active, np.exp(-s), 0.0)
        # Newton on {L_k(s_k) = nu, sum_k e^{-s_k} = 1}: s_k moves by (nu - L_k) / L_k', and nu is
        # the multiplier for which the linearized budget sum_k b_k (1 - ds_k) = 1 holds.
        ratio = b / slope
        nu = ((ratio * level).sum(axis=-1, keepdims=True) + b.sum(axis=-1, keepdims=True) - 1.0) / np.where(
            solvable, ratio.sum(axis=-1, keepdims=True), 1.0
        )
        gap = np.where(active, nu - level, 0.0)
        s = s + np.clip(gap / slope, -_MAX_LOG_STEP, _MAX_LOG_STEP)
        if np.all(np.abs(gap) <= _KKT_TOL * np.maximum(1.0, np.abs(nu))):
            break
    b = np.where(active, np.exp(-s), 0.0)
    return np.where(solvable, b / np.where(solvable, b.sum(axis=-1, keepdims=True), 1.0), share)


class _Marginals:
    """Log marginals L_k(s) of the surrogate and their slopes, per device, for a batch of rows.

    With the default slot share both packets need the same rate (gamma_s = gamma_m), and L_k
    collapses to log(W_s + W_m) + log phi(gamma e^s): one log phi instead of two.
    """

    def __init__(self, log_w_s, log_w_m, log_gamma_s: float, log_gamma_m: float, active: np.ndarray):
        self.shared = bool(np.isclose(log_gamma_s, log_gamma_m, rtol=0.0, atol=1e-12))
        if self.shared:
            self.log_w = np.logaddexp(log_w_s, log_w_m)
        self.log_w_s, self.log_w_m = log_w_s, log_w_m
        self.log_gamma_s, self.log_gamma_m = log_gamma_s, log_gamma_m
        self.active = active

    def __call__(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(L_k(s_k), L_k'(s_k)); inactive devices read (0, 1) so they never produce NaN."""
        if self.shared:
            value, slope = log_phi(self.log_gamma_s + s)
            level = self.log_w + value
        else:
            value_s, slope_s = log_phi(self.log_gamma_s + s)
            value_m, slope_m = log_phi(self.log_gamma_m + s)
            term_s, term_m = self.log_w_s + value_s, self.log_w_m + value_m
            level = np.logaddexp(term_s, term_m)
            weight_s = np.exp(term_s - level)
            slope = weight_s * slope_s + (1.0 - weight_s) * slope_m
        return np.where(self.active, level, 0.0), np.where(self.active, slope, 1.0)


def _line_search(problem: AllocationProblem, share, target, power_sign, power_modulus):
    """Best point for Phi among share + omega (target - share), omega in _OMEGAS, kept on the simplex."""
    direction = target - share
    with np.errstate(divide="ignore", invalid="ignore"):
        limit = np.where(direction < 0, share / -direction, np.inf).min(axis=-1, keepdims=True)
    omegas = np.minimum(_OMEGAS[:, None, None], np.maximum(limit, 1.0))
    trial = np.maximum(share + omegas * direction, 0.0)
    trials = Links.at(problem, trial / trial.sum(axis=-1, keepdims=True))
    trial_values = trials.total(problem, power_sign, power_modulus)
    best = (np.argmax(trial_values, axis=0), np.arange(trial_values.shape[1]))
    return trials.rows(best), trial_values[best]


def _log_gamma(problem: AllocationProblem, bits: float, slot: float) -> float:
    """log(gamma) = log(bits ln2 / (slot B_tot)): the packet's spectral efficiency need at b = 1, in nats."""
    return float(np.log(bits * np.log(2.0) / (slot * problem.total_bandwidth)))


def _log_marginal_scales(problem: AllocationProblem, power_sign, power_modulus):
    """log(N0 B_tot / (lambda p_x)): the factor of phi in -dt_x/db (b = B / B_tot)."""
    with np.errstate(divide="ignore"):
        base = np.log(problem.noise_psd * problem.total_bandwidth) - np.log(problem.gain)
        return base - np.log(power_sign), base - np.log(power_modulus)


def _surrogate_log_weights(problem: AllocationProblem, links: Links, power_sign, power_modulus):
    """log w_s and log w_m of the minorant at the current shares (-inf where they vanish)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t_s, t_m = links.unit_sign / power_sign, links.unit_modulus / power_modulus
        log_alpha = np.log(problem.alpha)
        log_w_s = log_alpha - t_s + np.log(problem.u_sign + np.exp(-t_m) * problem.extra_worth)
        log_w_m = log_alpha - t_s - t_m + np.log(problem.extra_worth)
    return log_w_s, log_w_m


def _times(log_weight: np.ndarray, log_scale: np.ndarray) -> np.ndarray:
    """log(w c) with 0 * inf = 0: a packet that is always lost adds nothing, whatever its scale."""
    with np.errstate(invalid="ignore"):
        return np.where(log_weight == -np.inf, -np.inf, log_weight + log_scale)
