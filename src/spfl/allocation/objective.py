"""The one-step importance objective Phi (SPEC section 5), packet errors and their derivatives.

Packet errors always come from :mod:`spfl.channel` (one physics).  Every error model there is a
failure threshold t on the fading power, t = a(B) / p, so pi = exp(-t) and

    Phi = sum_k alpha_k pi_s,k [ U_s,k + pi_m,k (U_m,k - U_s,k)^+ ].

This module adds only what the solver needs on top: the analytic derivatives of t (dt/dp = -t/p,
dt/dB = eps t / B with eps the bandwidth elasticity of the threshold) and, for the outage model,
the log of the bandwidth marginal -dt/dB = (N0 / (lambda p)) phi(x), x = bits ln2 / (B slot),
phi(x) = 1 + (x - 1) e^x, written in log space because x spans many orders of magnitude.
All array functions broadcast, so the solver can evaluate many candidate allocations at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spfl.allocation.problem import AllocationProblem
from spfl.channel import failure_threshold, packet_error_rate


def packet_error(problem: AllocationProblem, bandwidth, power, bits, slot) -> np.ndarray:
    """q = 1 - exp(-threshold) (SPEC section 3) under the problem's error model and gains."""
    return packet_error_rate(
        bandwidth, power, problem.gain, bits, slot, problem.noise_psd, problem.per_model, problem.waterfall_m
    )


def packet_thresholds(problem: AllocationProblem, bandwidth, power_sign, power_modulus):
    """Failure thresholds (t_s, t_m) of each device's sign and modulus packets; inf = always lost."""
    sign = failure_threshold(
        bandwidth, power_sign, problem.gain, problem.sign_bits, problem.sign_slot, problem.noise_psd,
        problem.per_model, problem.waterfall_m,
    )
    modulus = failure_threshold(
        bandwidth, power_modulus, problem.gain, problem.modulus_bits, problem.modulus_slot, problem.noise_psd,
        problem.per_model, problem.waterfall_m,
    )
    return sign, modulus


def device_values(problem: AllocationProblem, threshold_sign, threshold_modulus) -> np.ndarray:
    """Per-device terms alpha_k pi_s,k [U_s,k + pi_m,k (U_m,k - U_s,k)^+] of Phi."""
    pi_sign = np.exp(-threshold_sign)
    pi_modulus = np.exp(-threshold_modulus)
    return problem.alpha * pi_sign * (problem.u_sign + pi_modulus * problem.extra_worth)


@dataclass(frozen=True)
class Links:
    """Bandwidth shares b = B / B_tot of a batch of candidate allocations (rows) and their links.

    Thresholds scale as 1 / p, so the thresholds at 1 W (``unit_*``) are all the solver needs to
    evaluate any powers at these bandwidths: the physics is called once per bandwidth point.
    """

    share: np.ndarray
    unit_sign: np.ndarray
    unit_modulus: np.ndarray

    @classmethod
    def at(cls, problem: AllocationProblem, share: np.ndarray) -> Links:
        return cls(share, *packet_thresholds(problem, share * problem.total_bandwidth, 1.0, 1.0))

    def values(self, problem: AllocationProblem, power_sign, power_modulus) -> np.ndarray:
        """Per-device terms of Phi at these bandwidths and the given powers."""
        return scaled_values(problem, self.unit_sign, self.unit_modulus, power_sign, power_modulus)

    def total(self, problem: AllocationProblem, power_sign, power_modulus) -> np.ndarray:
        """Phi of each row."""
        return self.values(problem, power_sign, power_modulus).sum(axis=-1)

    def rows(self, index) -> Links:
        """The entries picked by ``index`` (anything numpy accepts), from all three arrays."""
        return Links(self.share[index], self.unit_sign[index], self.unit_modulus[index])

    @staticmethod
    def stack(batches: list[Links]) -> Links:
        """One batch whose rows are the given batches."""
        fields = ("share", "unit_sign", "unit_modulus")
        return Links(*(np.stack([getattr(batch, name) for batch in batches]) for name in fields))

    def where(self, rows: np.ndarray, other: Links) -> Links:
        """``other`` in the rows where ``rows`` is true, self elsewhere."""
        pick = rows[..., None]
        return Links(np.where(pick, other.share, self.share), np.where(pick, other.unit_sign, self.unit_sign),
                     np.where(pick, other.unit_modulus, self.unit_modulus))


def objective(problem: AllocationProblem, bandwidth, power_sign, power_modulus) -> float:
    """Phi at one allocation (arrays of length K).

    Computed exactly as the solver computes it (thresholds at 1 W scaled by 1 / p), so an
    allocation's reported objective and the last entry of its trace agree to the last bit.
    """
    unit_sign, unit_modulus = packet_thresholds(problem, np.asarray(bandwidth, dtype=float), 1.0, 1.0)
    return float(np.sum(scaled_values(problem, unit_sign, unit_modulus, power_sign, power_modulus)))


def scaled_values(problem: AllocationProblem, unit_sign, unit_modulus, power_sign, power_modulus):
    """Phi's device terms from thresholds at 1 W: t = t(1 W) / p (1 / 0 W = inf: always lost).

    Every value the solver compares goes through here, so comparisons and reports agree exactly.
    """
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        return device_values(problem, unit_sign / power_sign, unit_modulus / power_modulus)


def bandwidth_elasticity(problem: AllocationProblem, bandwidth, bits, slot) -> np.ndarray:
    """d log t / d log B of a packet's failure threshold.

    outage: t ~ B expm1(x) with x = bits ln2 / (B slot), so eps = 1 - x / (1 - e^-x) (always < 0:
    bandwidth helps); waterfall: t ~ B, eps = 1 (bandwidth only adds noise).
    """
    bandwidth = np.asarray(bandwidth, dtype=float)
    if problem.per_model == "waterfall":
        return np.ones_like(bandwidth)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        x = bits * np.log(2.0) / (bandwidth * slot)
        return np.where(x > 1e-12, 1.0 - x / -np.expm1(-x), -0.5 * x)


def objective_gradient(problem: AllocationProblem, bandwidth, power_sign, power_modulus):
    """(dPhi/dB, dPhi/dp_s, dPhi/dp_m), each of length K, from dt/dp = -t/p and dt/dB = eps t / B.

    Where a packet is always lost (t = inf) Phi is locally flat in its variables: gradient 0.
    """
    bandwidth = np.asarray(bandwidth, dtype=float)
    power_sign = np.asarray(power_sign, dtype=float)
    power_modulus = np.asarray(power_modulus, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        t_s, t_m = packet_thresholds(problem, bandwidth, power_sign, power_modulus)
        pi_s, pi_m = np.exp(-t_s), np.exp(-t_m)
        # dPhi/dt_s and dPhi/dt_m per device.
        d_sign = -problem.alpha * pi_s * (problem.u_sign + pi_m * problem.extra_worth)
        d_modulus = -problem.alpha * pi_s * pi_m * problem.extra_worth
        eps_s = bandwidth_elasticity(problem, bandwidth, problem.sign_bits, problem.sign_slot)
        eps_m = bandwidth_elasticity(problem, bandwidth, problem.modulus_bits, problem.modulus_slot)
        grad_b = (d_sign * t_s * eps_s + d_modulus * t_m * eps_m) / bandwidth
        grad_ps = -d_sign * t_s / power_sign
        grad_pm = -d_modulus * t_m / power_modulus
    return tuple(np.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0) for g in (grad_b, grad_ps, grad_pm))


def log_phi(log_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log phi(x), d log phi / d log x) for phi(x) = 1 + (x - 1) e^x, given log x.

    phi is the outage threshold's bandwidth marginal up to a constant.  Below x = 1e-3 a series
    avoids the cancellation of phi ~ x^2 / 2; above, log phi = x + log(x + expm1(-x)) never forms
    e^x, so any x is fine (relative error < 1e-12 everywhere).  log phi is convex in log x.
    """
    x = np.exp(log_x)
    with np.errstate(divide="ignore", invalid="ignore"):
        tail = np.log(x + np.expm1(-x))  # log(phi e^-x)
        series = np.log(0.5 + x * (1.0 / 3.0 + 0.125 * x))  # log(phi / x^2) for small x
    small = x < 1e-3
    two_log_x = 2.0 * log_x
    value = np.where(small, two_log_x + series, x + tail)
    # d log phi / d log x = x^2 e^x / phi(x).
    slope = np.exp(np.where(small, x - series, two_log_x - tail))
    return value, slope
