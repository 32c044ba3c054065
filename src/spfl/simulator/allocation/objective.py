"""The one-step objective Phi: the expectation, over packet outcomes, of the aggregate's surrogate.

docs/model.md ("Objective") derives every formula here.  In short: an aggregate
g_hat = sum_k w_k X_k (X_k = g_k if both packets arrived, s_k * c if only the sign did, else the
device is left out) has the one-step surrogate S = sum_k w_k V_k with V_k the worth of what arrived:

    U_m,k = (eta - L eta^2 / 2) ||g_k||^2              (a full gradient)
    U_s,k = eta <|g_k|, c> - (L eta^2 / 2) ||c||^2       (signs with the compensatory modulus c)

Per device, E[I_k V_k] = pi_both U_m + (pi_sign - pi_both) U_s, with pi_both = min(pi_s, pi_m) under
block fading and pi_s pi_m under per-packet fading.  Under ``normalize: all`` (w_k = alpha_k I_k)
Phi = sum_k alpha_k E[I_k V_k].  Under ``normalize: received`` (w_k = alpha_k I_k / sum_j alpha_j I_j),
with devices independent, 1/x = int_0^inf exp(-t x) dt gives

    Phi = sum_k alpha_k E[I_k V_k] G_k,   G_k = E[1 / (alpha_k + sum_{j != k} alpha_j I_j)]
        = int_0^inf exp(-t alpha_k) prod_{j != k} (1 - p_j + p_j exp(-t alpha_j)) dt,

a one-dimensional integral per device (p_j = P(device j enters the aggregate)), computed here by
double-exponential quadrature (t = exp(u - e^-u) / mean(alpha), trapezoid in u): about 1e-13
relative against exact enumeration for weights down to 1e-4 of their mean.  :func:`objective` and the
solver evaluate Phi and its coefficients with :mod:`.evaluation` (both surrogates, batches of points);
:func:`normalization_factors` and :func:`dilution` here are the direct forms of G_k and of d Phi / d p_j.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from spfl.simulator.allocation.evaluation import QUADRATURE_U, evaluator_for
from spfl.simulator.allocation.evaluation import quadrature as _quadrature
from spfl.simulator.allocation.problem import AllocationProblem
from spfl.simulator.channel import packet_thresholds

QUADRATURE_NODES = QUADRATURE_U.size


def packet_worth(squared_norm, inner, c_squared, learning_rate: float, smoothness: float):
    """(U_s, U_m): the surrogates of a sign-only receipt and of a full gradient (docs/model.md).

    ``inner`` = <|g_k|, c>, ``c_squared`` = ||c||^2.  U_s may be negative (a compensatory modulus
    much larger than the gradient overshoots); U_m > 0 because learning_rate * smoothness < 2."""
    quadratic = smoothness * learning_rate**2 / 2.0
    u_modulus = (learning_rate - quadratic) * np.asarray(squared_norm, dtype=float)
    u_sign = learning_rate * np.asarray(inner, dtype=float) - quadratic * np.asarray(c_squared, dtype=float)
    return u_sign, u_modulus


@dataclass(frozen=True)
class Allocation:
    """One round's allocation: per device bandwidth (Hz), packet powers (W) and sign share tau.

    ``trace`` holds Phi after each stage of the solver, starting at the uniform point; its last entry
    is ``objective``.  Under single-packet schemes power_sign is the packet's power."""

    bandwidth: np.ndarray
    power_sign: np.ndarray
    power_modulus: np.ndarray
    slot_share: np.ndarray
    objective: float
    trace: tuple[float, ...]
    policy: str

    @property
    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(bandwidth, power_sign, power_modulus, slot_share), the arguments of :func:`objective`."""
        return self.bandwidth, self.power_sign, self.power_modulus, self.slot_share


def thresholds(problem: AllocationProblem, bandwidth, power_sign, power_modulus, slot_share):
    """Failure thresholds (t_s, t_m) of each device's packets under the problem's link (broadcasting;
    inf = always lost): the link model the transmission uses."""
    return packet_thresholds(bandwidth, power_sign, power_modulus, slot_share, gain=problem.gain,
                             sign_bits=problem.sign_bits, modulus_bits=problem.modulus_bits,
                             deadline=problem.deadline, noise_psd=problem.noise_psd, per_model=problem.per_model,
                             waterfall_m=problem.waterfall_m)


def arrival_probabilities(problem: AllocationProblem, threshold_sign, threshold_modulus):
    """(P(sign arrives), P(both arrive)) from the thresholds, under the problem's fading model."""
    with np.errstate(invalid="ignore", over="ignore"):
        pi_sign = np.exp(-threshold_sign)
        joint = (np.maximum(threshold_sign, threshold_modulus) if problem.fading == "block"
                 else threshold_sign + threshold_modulus)
        return pi_sign, np.exp(-joint)


def device_coefficients(problem: AllocationProblem) -> tuple[np.ndarray, np.ndarray]:
    """(a_k, b_k) with alpha_k E[I_k V_k] = a_k pi_sign + b_k pi_both (``normalize: all``)."""
    if problem.sign_only_counts:
        return problem.alpha * problem.u_sign, problem.alpha * (problem.u_modulus - problem.u_sign)
    return np.zeros_like(problem.alpha), problem.alpha * problem.u_modulus


def device_values(problem: AllocationProblem, pi_sign, pi_both) -> np.ndarray:
    """alpha_k E[I_k V_k] per device."""
    a, b = device_coefficients(problem)
    return a * pi_sign + b * pi_both


def inclusion(problem: AllocationProblem, pi_sign, pi_both) -> np.ndarray:
    """P(device k enters the aggregate and its normalization)."""
    return pi_sign if problem.sign_only_counts else pi_both


def _log_factors(alpha, include):
    """Quadrature nodes t, their weights, and log(1 - p_j + p_j e^{-t alpha_j}) for every node (rows) and
    device (columns), exact for p in {0, 1}."""
    t, weight = _quadrature(alpha)
    p = np.clip(include, 0.0, 1.0)[..., None, :]
    with np.errstate(divide="ignore"):
        return t, weight, np.logaddexp(np.log1p(-p), np.log(p) - t[:, None] * alpha)


def normalization_factors(problem: AllocationProblem, include: np.ndarray) -> np.ndarray:
    """G_k = E[1 / (alpha_k + sum_{j != k} alpha_j I_j)] (``received``), or 1 (``all``).

    ``include`` holds P(I_j = 1) per device (any leading batch axes)."""
    include = np.asarray(include, dtype=float)
    if problem.normalize == "all":
        return np.ones_like(include)
    alpha = problem.alpha
    t, weight, log_f = _log_factors(alpha, include)               # log_f: (..., nodes, K)
    others = log_f.sum(axis=-1, keepdims=True) - log_f             # prod over j != k
    integrand = np.exp(others - t[:, None] * alpha)
    return np.einsum("...nk,n->...k", integrand, weight)


def dilution(problem: AllocationProblem, values: np.ndarray, include: np.ndarray) -> np.ndarray:
    """D_j = d Phi / d p_j through the other devices' normalizations (``received``; 0 under ``all``).

    Phi = sum_k v_k G_k and each G_k (k != j) is affine in p_j, so as a function of device j's own
    decisions Phi = G_j v_j + D_j p_j + (terms without device j): the exact per-device objective
    the solver maximizes (docs/model.md, "Solver")."""
    values = np.asarray(values, dtype=float)
    include = np.asarray(include, dtype=float)
    if problem.normalize == "all":
        return np.zeros_like(values)
    alpha = problem.alpha
    t, weight, log_f = _log_factors(alpha, include)               # log_f: (..., nodes, K)
    log_all = log_f.sum(axis=-1, keepdims=True)
    own = np.exp(-t[:, None] * alpha - log_f)                      # e^{-t alpha_k} / f_k
    weighted = values[..., None, :] * own
    total = weighted.sum(axis=-1, keepdims=True)
    change = -np.expm1(-t[:, None] * alpha)                        # 1 - e^{-t alpha_j}
    integrand = -np.exp(log_all - log_f) * change * (total - weighted)
    return np.einsum("...nk,n->...k", integrand, weight)


class Terms(NamedTuple):
    """Phi at one allocation (or a batch, along leading axes) and the arrival probabilities it came from."""

    phi: np.ndarray
    pi_sign: np.ndarray
    pi_both: np.ndarray


def objective_terms(problem: AllocationProblem, bandwidth, power_sign, power_modulus, slot_share,
                    evaluator=None) -> Terms:
    """Phi and its arrival probabilities at an allocation (arrays of length K, or batches of them).

    ``evaluator``: the problem's :func:`.evaluation.evaluator_for` (built here when not given)."""
    t_s, t_m = thresholds(problem, bandwidth, power_sign, power_modulus, slot_share)
    pi_sign, pi_both = arrival_probabilities(problem, t_s, t_m)
    if evaluator is None:
        evaluator = evaluator_for(problem)
    shape = np.broadcast_shapes(np.shape(pi_sign), np.shape(pi_both))
    value = evaluator.phi(np.broadcast_to(pi_sign, shape), np.broadcast_to(pi_both, shape))
    return Terms(np.asarray(value, dtype=float), pi_sign, pi_both)


def linearization(problem: AllocationProblem, terms: Terms, evaluator=None) -> tuple[np.ndarray, np.ndarray]:
    """(a_k, b_k): every device's exact coefficients of Phi in its own pi_sign and pi_both at the point
    ``terms`` describes, the others' held fixed (docs/model.md, section 7)."""
    if evaluator is None:
        evaluator = evaluator_for(problem)
    shape = np.broadcast_shapes(np.shape(terms.pi_sign), np.shape(terms.pi_both))
    return evaluator.coefficients(np.broadcast_to(terms.pi_sign, shape), np.broadcast_to(terms.pi_both, shape))


def objective(problem: AllocationProblem, bandwidth, power_sign, power_modulus, slot_share=None) -> float:
    """Phi at one allocation (arrays of length K); ``slot_share`` None = the problem's fixed tau."""
    if slot_share is None:
        slot_share = problem.fixed_share
    return float(objective_terms(problem, bandwidth, power_sign, power_modulus, slot_share).phi)
