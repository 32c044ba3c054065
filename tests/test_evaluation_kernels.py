"""The compiled evaluator (allocation/evaluation_kernels.py) against a plain numpy transcription of the
formulas (docs/model.md, sections 6-7; allocation/descent.py), on every 20th case of the benchmark set
(K = 2-100, both surrogates, both normalizations, degenerate devices) at random points with exact 0s and
1s.  The reference's coefficients are exact differences of Phi, which is affine in each device's own
(mu_k, nu_k, p_k) (descent) or (v_k, p_k) (Jensen): dPhi/dx_k = Phi(x_k = 1) - Phi(x_k = 0).
"""

from __future__ import annotations

import numpy as np
import pytest

from allocation_cases import BENCHMARK_SIZE, benchmark_case
from spfl.simulator.allocation.descent import FULL, NOTHING, OTHER
from spfl.simulator.allocation.evaluation import evaluator_for, quadrature

CASES = range(0, BENCHMARK_SIZE, 20)


def reference_factors(weight, p):
    """E_n (M, N) and rho_nk (M, N, K) at inclusion probabilities p (M, K), in the log domain."""
    t, w = quadrature(weight)
    keep = t * np.min(weight[weight > 0]) <= 1500.0
    t, w = t[keep], w[keep]
    decay = -t[:, None] * weight
    f = 1.0 - p[:, None, :] + p[:, None, :] * np.exp(decay)
    with np.errstate(divide="ignore"):
        log_f = np.where(f == 0.0, decay, np.log(f))
    return t, w, np.exp(log_f.sum(axis=-1)), np.exp(decay - log_f)


def reference_descent(problem, mu, nu, p):
    """Phi of the descent surrogate at the mixtures mu, nu, p (M, K)."""
    terms, normalize = problem.descent, problem.normalize
    a = problem.alpha / problem.alpha.sum()
    num = a.size
    gram = terms.gram
    gg, gr, rg, rr = gram[:num, :num], gram[:num, num:], gram[num:, :num], gram[num:, num:]
    inner_gbar = mu * (a @ gg) + nu * (a @ gr)                     # <gbar, m_k>
    inner = (mu[:, :, None] * gg * mu[:, None, :] + mu[:, :, None] * gr * nu[:, None, :]
             + nu[:, :, None] * rg * mu[:, None, :] + nu[:, :, None] * rr * nu[:, None, :])   # <m_j, m_k>
    q = mu * np.diag(gg) + nu * np.diag(rr)
    pairs = a[:, None] * a * inner * (1.0 - np.eye(num))
    if normalize == "all":
        g_factor, h_diag, h_pair = 1.0, 1.0, 1.0
    else:
        t, w, every, rho = reference_factors(a, p)
        g_factor = np.einsum("mn,mnk->mk", every * w, rho)
        h_diag = np.einsum("mn,mnk->mk", every * w * t, rho)
        h_pair = np.matmul(np.swapaxes(rho * (every * w * t)[..., None], 1, 2), rho)
    c = terms.quadratic
    return (terms.learning_rate * np.sum(a * inner_gbar * g_factor, axis=-1)
            - c * (np.sum(pairs * h_pair, axis=(1, 2)) + np.sum(a * a * q * h_diag, axis=-1)))


def reference_jensen(problem, evaluator, v, p):
    """Phi of the Jensen surrogate at the per-device values v and inclusion probabilities p (M, K)."""
    if problem.normalize == "all":
        return np.sum(v, axis=-1)
    _, w, every, rho = reference_factors(problem.alpha, p)
    return np.sum(v * np.einsum("mn,mnk->mk", every * w, rho), axis=-1)


def differences(phi, points):
    """Phi at the point (a list of K arrays, phi's arguments) and, per argument i, dPhi/dx_ik as Phi with
    x_ik = 1 minus Phi with x_ik = 0 (the others held)."""
    num = points[0].size
    slopes = []
    for i in range(len(points)):
        ends = []
        for value in (1.0, 0.0):
            moved = [np.repeat(x[None], num, axis=0) for x in points]
            moved[i][np.arange(num), np.arange(num)] = value
            ends.append(phi(*moved))
        slopes.append(ends[0] - ends[1])
    return phi(*[x[None] for x in points])[0], slopes


def reference(problem, evaluator, pi_sign, pi_both):
    """Phi and (a_k, b_k) of one point (K arrays)."""
    if problem.descent is not None:
        states = problem.descent.states
        pb = np.minimum(pi_both, pi_sign)
        mixes = []
        for mask in (states == FULL, states == OTHER, states != NOTHING):
            x = mask.astype(float)
            mixes.append((x[:, 0] + pi_sign * (x[:, 1] - x[:, 0]) + pb * (x[:, 2] - x[:, 1]),
                          x[:, 1] - x[:, 0], x[:, 2] - x[:, 1]))
        value, slopes = differences(lambda mu, nu, p: reference_descent(problem, mu, nu, p),
                                    [m[0] for m in mixes])
        sign = sum(s * m[1] for s, m in zip(slopes, mixes))
        both = sum(s * m[2] for s, m in zip(slopes, mixes))
        return value, sign, both
    a, b = evaluator.a, evaluator.b
    v = a * pi_sign + b * pi_both
    include = np.clip(pi_sign if evaluator.sign_counts else pi_both, 0.0, 1.0)
    value, (d_v, d_p) = differences(lambda v, p: reference_jensen(problem, evaluator, v, p), [v, include])
    return value, a * d_v + (d_p if evaluator.sign_counts else 0.0), b * d_v + (0.0 if evaluator.sign_counts else d_p)


def points(rng, rows, num):
    pi_sign = rng.random((rows, num))
    pi_both = pi_sign * rng.random((rows, num))
    for array in (pi_sign, pi_both):
        pick = rng.random((rows, num))
        array[pick < 0.1] = 0.0
        array[pick > 0.9] = 1.0
    return pi_sign, pi_both


@pytest.mark.parametrize("index", CASES)
def test_compiled_evaluator_matches_the_numpy_formulas(index):
    problem, _ = benchmark_case(index)
    evaluator = evaluator_for(problem)
    pi_sign, pi_both = points(np.random.default_rng(index), 2, problem.num_devices)
    phi = evaluator.phi(pi_sign, pi_both)
    value, sign, both = evaluator.phi_coefficients(pi_sign, pi_both)
    only_sign, only_both = evaluator.coefficients(pi_sign, pi_both)
    assert phi.shape == value.shape == (2,) and sign.shape == both.shape == (2, problem.num_devices)
    np.testing.assert_array_equal(only_sign, sign)
    np.testing.assert_array_equal(only_both, both)
    for row in range(2):
        want, want_sign, want_both = reference(problem, evaluator, pi_sign[row], pi_both[row])
        for got in (phi[row], value[row]):
            assert abs(got - want) <= 1e-9 * (abs(want) + np.max(np.abs(want_sign)) + 1e-12), (got, want)
        for got, expected in ((sign[row], want_sign), (both[row], want_both)):
            scale = np.max(np.abs(expected)) + 1e-9 * abs(want) + 1e-12
            np.testing.assert_allclose(got, expected, rtol=0.0, atol=1e-9 * scale)
        # A row's results do not depend on the batch it came in.
        alone = evaluator.phi_coefficients(pi_sign[row], pi_both[row])
        assert alone[0] == value[row] and np.array_equal(alone[1], sign[row]) and evaluator.phi(
            pi_sign[row], pi_both[row]) == phi[row]
