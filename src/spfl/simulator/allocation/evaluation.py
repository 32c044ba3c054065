"""Phi and its exact per-device coefficients at many points at once (docs/model.md, sections 6-7).

One evaluator is built per problem (:func:`evaluator_for`): everything that does not depend on the
allocation (the quadrature nodes t_n and weights, e^{-t_n a_k}, the Gram matrix's blocks, <gbar, g_k>, the
rule's outcome indicators) is computed once, and every evaluation then takes a batch of points
(pi_sign, pi_both), shape (B, K), row by row in the compiled loops of :mod:`.evaluation_kernels`:

    f_nk = 1 - p_k + p_k e^{-t_n a_k},  E_n = prod_k f_nk,  rho_nk = e^{-t_n a_k} / f_nk,
    G_k = sum_n w_n E_n rho_nk,  H_kk = sum_n w_n t_n E_n rho_nk,  H_jk = sum_n w_n t_n E_n rho_nj rho_nk,

so that under ``received`` the descent surrogate is Phi = sum_k lin_k G_k - c (sum_k own_k H_kk +
sum_{j != k} Z_jk H_jk) with Z_jk = a_j a_k <m_j, m_k> (module :mod:`.descent`).  f is summed directly
(its two terms are never negative, so there is no cancellation); a device certain to arrive whose
e^{-t a} is 0 in float64 has rho = 1.  A row's results do not depend on the batch it came in.
"""

from __future__ import annotations

import numpy as np

import spfl.simulator.allocation.evaluation_kernels as kernels
from spfl.simulator.allocation.descent import FULL, NOTHING, OTHER, DescentTerms

# Trapezoid steps of the double-exponential quadrature: u in [-4.5, 13.5] covers t from 1e-42 to 7e5
# times 1 / mean(alpha).
QUADRATURE_U = np.arange(-4.5, 13.5 + 1e-9, 0.125)
QUADRATURE_U.setflags(write=False)
_GONE = 1500.0  # e^{-1500} is 0 in float64, also divided by a probability's complement down to 1e-300
# The kernels take e^{-t a} below this as 0: with f >= 1 - p >= 1e-16 (or f = 0, where rho is 1 either
# way), what it adds to any sum is below 1e-180 of its size, and the loops meet no subnormal numbers
# (each costs about a hundred times a normal operation).
_TINY = 1e-200


def quadrature(alpha: np.ndarray):
    """Nodes t and weights of int_0^inf f(t) dt, scaled to the devices' weights."""
    u = QUADRATURE_U
    step = u[1] - u[0]
    t = np.exp(u - np.exp(-u)) / float(np.mean(alpha))
    return t, step * t * (1.0 + np.exp(-u))


class _Nodes:
    """The quadrature of the normalization over weights ``weight`` (a_k) and what depends only on them."""

    def __init__(self, weight: np.ndarray, nodes=None):
        t, w = quadrature(weight) if nodes is None else nodes
        # Where e^{-t a_k} is 0 in float64 for every device of positive weight by far (t a_k > _GONE), every
        # product the formulas sum has such a factor (a device of zero weight contributes nothing): the
        # node adds exactly nothing and is left out.
        smallest = np.min(weight[weight > 0])
        keep = t * smallest <= _GONE
        self.t, self.w = t[keep], w[keep]
        self.decay = -(self.t[:, None] * weight)                      # -t_n a_k, (N, K)
        self.survive = np.exp(self.decay)                              # e^{-t_n a_k}
        self.tw = self.t * self.w
        # The kernels' layout (:mod:`.evaluation_kernels`): (t, w, t w) and (e^{-t a}, 1 - e^{-t a}) as (K, N).
        self.rows = np.ascontiguousarray(np.stack([self.t, self.w, self.tw]))
        survive = np.where(self.survive < _TINY, 0.0, self.survive)
        self.tables = np.ascontiguousarray(np.stack([survive.T, -np.expm1(self.decay).T]))


def _rows(pi_sign, pi_both):
    """The points as two C-contiguous (B, K) float64 arrays (copies), and the batch shape."""
    sign = np.array(pi_sign, dtype=float, order="C")
    both = np.array(pi_both, dtype=float, order="C")
    if both.shape != sign.shape:
        both = np.array(np.broadcast_to(both, sign.shape), order="C")
    num = sign.shape[-1]
    return sign.reshape(-1, num), both.reshape(-1, num), sign.shape[:-1]


class DescentEvaluator:
    """Phi of the descent surrogate and its coefficients (:mod:`.descent`) for one problem."""

    def __init__(self, terms: DescentTerms, alpha, normalize: str, nodes=None):
        alpha = np.asarray(alpha, dtype=float)
        weight = alpha / alpha.sum()
        num = weight.size
        self.num, self.weight, self.normalize = num, weight, normalize
        self.eta, self.c = float(terms.learning_rate), float(terms.quadratic)
        gram = terms.gram
        self.gram = gram
        self.gg, self.gr, self.rg, self.rr = gram[:num, :num], gram[:num, num:], gram[num:, :num], gram[num:, num:]
        self.to_g, self.to_r = weight @ self.gg, weight @ self.gr
        diag = np.diag(gram)
        self.sq_g, self.sq_r = diag[:num], diag[num:]
        states = terms.states
        # mu = m0 + pi_sign (m1 - m0) + pi_both (m2 - m1), and likewise nu and p.
        self.indicator = {}
        for name, mask in (("mu", states == FULL), ("nu", states == OTHER), ("p", states != NOTHING)):
            x = mask.astype(float)
            self.indicator[name] = (x[:, 0], x[:, 1] - x[:, 0], x[:, 2] - x[:, 1])
        self.nodes = _Nodes(weight, nodes) if normalize == "received" else None
        # The kernels' constants: per-device rows (kernels.DESCENT_ROWS, K) and the blocks gg, gr, rg, rr
        # followed by their transposes.
        self.vectors = np.ascontiguousarray(np.stack([weight, self.to_g, self.to_r, self.sq_g, self.sq_r,
                                                      *self.indicator["mu"], *self.indicator["nu"],
                                                      *self.indicator["p"]]))
        blocks = [self.gg, self.gr, self.rg, self.rr]
        self.blocks = np.ascontiguousarray(np.stack(blocks + [block.T for block in blocks]))

    def _evaluate(self, pi_sign, pi_both, coefficients: bool):
        sign, both, shape = _rows(pi_sign, pi_both)
        if self.nodes is None:
            value, a, b = kernels.descent_all(sign, both, self.vectors, self.blocks, self.eta, self.c,
                                              coefficients)
        else:
            value, a, b = kernels.descent_received(sign, both, self.vectors, self.blocks, self.eta, self.c,
                                                   self.nodes.rows, self.nodes.tables, coefficients)
        return value.reshape(shape), a.reshape(*shape, self.num), b.reshape(*shape, self.num)

    def phi(self, pi_sign, pi_both) -> np.ndarray:
        return self._evaluate(pi_sign, pi_both, False)[0]

    def coefficients(self, pi_sign, pi_both):
        """(a_k, b_k) per batch row: Phi = a_k pi_sign,k + b_k pi_both,k + (terms without device k)."""
        return self.phi_coefficients(pi_sign, pi_both)[1:]

    def phi_coefficients(self, pi_sign, pi_both):
        """(Phi, a_k, b_k) per batch row, from the same sums (Phi costs little more than the coefficients;
        its last bits may differ from :meth:`phi`'s)."""
        return self._evaluate(pi_sign, pi_both, True)


class JensenEvaluator:
    """Phi of the Jensen surrogate (``surrogate: jensen``) and its coefficients for one problem:
    Phi = sum_k v_k G_k with v_k = a_k pi_sign,k + b_k pi_both,k (G_k = 1 under ``all``)."""

    def __init__(self, problem):
        alpha = problem.alpha
        if problem.sign_only_counts:
            self.a, self.b = alpha * problem.u_sign, alpha * (problem.u_modulus - problem.u_sign)
        else:
            self.a, self.b = np.zeros_like(alpha), alpha * problem.u_modulus
        self.a, self.b = np.ascontiguousarray(self.a, dtype=float), np.ascontiguousarray(self.b, dtype=float)
        self.sign_counts = bool(problem.sign_only_counts)
        self.num = alpha.size
        self.nodes = _Nodes(alpha) if problem.normalize == "received" else None

    def _evaluate(self, pi_sign, pi_both, coefficients: bool):
        sign, both, shape = _rows(pi_sign, pi_both)
        if self.nodes is None:
            value = kernels.jensen_all(sign, both, self.a, self.b).reshape(shape)
            if not coefficients:
                return value, None, None
            coef_sign, coef_both = np.empty_like(sign), np.empty_like(both)
            coef_sign[:], coef_both[:] = self.a, self.b
            return value, coef_sign.reshape(*shape, self.num), coef_both.reshape(*shape, self.num)
        value, a, b = kernels.jensen_received(sign, both, sign if self.sign_counts else both, self.a, self.b,
                                              self.nodes.rows, self.nodes.tables, coefficients,
                                              self.sign_counts)
        return value.reshape(shape), a.reshape(*shape, self.num), b.reshape(*shape, self.num)

    def phi(self, pi_sign, pi_both) -> np.ndarray:
        return self._evaluate(pi_sign, pi_both, False)[0]

    def coefficients(self, pi_sign, pi_both):
        return self.phi_coefficients(pi_sign, pi_both)[1:]

    def phi_coefficients(self, pi_sign, pi_both):
        return self._evaluate(pi_sign, pi_both, True)


def evaluator_for(problem):
    """The evaluator of the problem's surrogate."""
    if problem.descent is not None:
        return DescentEvaluator(problem.descent, problem.alpha, problem.normalize)
    return JensenEvaluator(problem)
