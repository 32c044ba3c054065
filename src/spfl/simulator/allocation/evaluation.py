"""Phi and its exact per-device coefficients at many points at once (docs/model.md, sections 6-7).

One :class:`Evaluator` is built per problem: everything that does not depend on the allocation (the
quadrature nodes t_n and weights, e^{-t_n a_k} and log(1 - e^{-t_n a_k}), the Gram matrix's blocks,
<gbar, g_k>, the rule's outcome indicators) is computed once, and every evaluation then takes a batch of
points (pi_sign, pi_both), shape (B, K), with one matrix product where the formulas sum over devices or
quadrature nodes:

    f_nk = 1 - p_k + p_k e^{-t_n a_k},  E_n = prod_k f_nk,  rho_nk = e^{-t_n a_k} / f_nk,
    G_k = sum_n w_n E_n rho_nk,  H_kk = sum_n w_n t_n E_n rho_nk,  H_jk = sum_n w_n t_n E_n rho_nj rho_nk,

so that under ``received`` the descent surrogate is Phi = sum_k lin_k G_k - c (sum_k own_k H_kk +
sum_{j != k} Z_jk H_jk) with Z_jk = a_j a_k <m_j, m_k> (module :mod:`.descent`), one (K, N) x (N, K)
product per point.  f is summed directly (its two terms are never negative, so there is no cancellation)
and its logarithm taken once; where a device certain to arrive has e^{-t a} = 0 in float64, log f is
-t a itself, as in the log-domain form this replaces.  (A point's Phi may differ in its last bits
between batches of different sizes: matrix products block their sums by size.)
"""

from __future__ import annotations

import numpy as np

from spfl.simulator.allocation.descent import FULL, NOTHING, OTHER, DescentTerms

# Trapezoid steps of the double-exponential quadrature: u in [-4.5, 13.5] covers t from 1e-42 to 7e5
# times 1 / mean(alpha).
QUADRATURE_U = np.arange(-4.5, 13.5 + 1e-9, 0.125)
QUADRATURE_U.setflags(write=False)
_GONE = 1500.0  # e^{-1500} is 0 in float64, also divided by a probability's complement down to 1e-300


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
        with np.errstate(divide="ignore"):
            self.log_change = np.log(-np.expm1(self.decay))            # log(1 - e^{-t_n a_k})
        self.tw = self.t * self.w

    def factors(self, include: np.ndarray):
        """log f (B, N, K), log E (B, N, 1) and rho (B, N, K) at the inclusion probabilities (B, K)."""
        p = np.clip(include, 0.0, 1.0)[:, None, :]
        f = (1.0 - p) + p * self.survive
        with np.errstate(divide="ignore"):
            log_f = np.log(f)
        zero = f == 0.0   # a device certain to arrive whose e^{-t a} underflowed: log f = -t a
        if zero.any():
            log_f = np.where(zero, self.decay, log_f)
        log_all = np.sum(log_f, axis=-1, keepdims=True)
        rho = np.exp(self.decay - log_f)
        return log_f, log_all, rho

    def change(self, log_f, log_all):
        """E d f_k / d p_k / f_k = -(1 - e^{-t a_k}) prod_{i != k} f_i (B, N, K)."""
        return -np.exp(log_all + self.log_change - log_f)


def _row_times(row, matrix):
    """row (B, N) times matrix (B, N, K) -> (B, K), one matrix product per batch row."""
    return np.matmul(row[:, None, :], matrix)[:, 0, :]


def _vector_times(vector, matrix):
    """vector (B, K) times matrix (B, K, J) or (K, J) -> (B, J)."""
    if matrix.ndim == 2:
        return vector @ matrix
    return np.matmul(vector[:, None, :], matrix)[:, 0, :]


def _batch(values) -> tuple[np.ndarray, tuple]:
    array = np.asarray(values, dtype=float)
    return array.reshape(-1, array.shape[-1]), array.shape[:-1]


class DescentEvaluator:
    """Phi of the descent surrogate and its coefficients (:mod:`.descent`) for one problem."""

    def __init__(self, terms: DescentTerms, alpha, normalize: str, nodes=None):
        alpha = np.asarray(alpha, dtype=float)
        weight = alpha / alpha.sum()
        num = weight.size
        self.num, self.weight, self.normalize = num, weight, normalize
        self.eta, self.c = terms.learning_rate, terms.quadratic
        gram = terms.gram
        self.gram = gram
        self.gg, self.gr, self.rg, self.rr = gram[:num, :num], gram[:num, num:], gram[num:, :num], gram[num:, num:]
        self.to_g, self.to_r = weight @ self.gg, weight @ self.gr
        diag = np.diag(gram)
        self.sq_g, self.sq_r = diag[:num], diag[num:]
        self.d_gg, self.d_gr, self.d_rr = np.diag(self.gg), np.diag(self.gr), np.diag(self.rr)
        states = terms.states
        # mu = m0 + pi_sign (m1 - m0) + pi_both (m2 - m1), and likewise nu and p.
        self.indicator = {}
        for name, mask in (("mu", states == FULL), ("nu", states == OTHER), ("p", states != NOTHING)):
            x = mask.astype(float)
            self.indicator[name] = (x[:, 0], x[:, 1] - x[:, 0], x[:, 2] - x[:, 1])
        self.off = 1.0 - np.eye(num)
        self.nodes = _Nodes(weight, nodes) if normalize == "received" else None

    def _mixtures(self, pi_sign, pi_both):
        pi_both = np.minimum(pi_both, pi_sign)
        out = []
        for name in ("mu", "nu", "p"):
            base, sign, both = self.indicator[name]
            out.append(base + pi_sign * sign + pi_both * both)
        return out

    def _parts(self, mu, nu):
        w = self.weight
        linear = self.eta * w * (mu * self.to_g + nu * self.to_r)
        own = w * w * (mu * self.sq_g + nu * self.sq_r)
        zg, zr = w * mu, w * nu
        diag = zg * zg * self.d_gg + 2.0 * zg * zr * self.d_gr + zr * zr * self.d_rr   # Z_kk
        return linear, own, zg, zr, diag

    def _pair_sum(self, zg, zr, factor):
        """sum_{j, k} Z_jk factor_jk per batch row (factor (B, K, K))."""
        return (np.sum(_vector_times(zg, factor * self.gg) * zg, axis=-1)
                + 2.0 * np.sum(_vector_times(zg, factor * self.gr) * zr, axis=-1)
                + np.sum(_vector_times(zr, factor * self.rr) * zr, axis=-1))

    def phi(self, pi_sign, pi_both) -> np.ndarray:
        pi_sign, shape = _batch(pi_sign)
        pi_both, _ = _batch(np.broadcast_to(pi_both, np.shape(pi_sign)))
        mu, nu, include = self._mixtures(pi_sign, pi_both)
        linear, own, zg, zr, diag = self._parts(mu, nu)
        if self.normalize == "all":
            z = np.concatenate([zg, zr], axis=-1)
            pairs = np.sum(_vector_times(z, self.gram) * z, axis=-1) - np.sum(diag, axis=-1)
            value = np.sum(linear, axis=-1) - self.c * (pairs + np.sum(own, axis=-1))
            return value.reshape(shape)
        nodes = self.nodes
        _, log_all, rho = nodes.factors(include)
        every = np.exp(log_all[..., 0])                                   # E_n, (B, N)
        g_factor = _row_times(every * nodes.w, rho)                       # G_k
        t_every = every * nodes.tw
        own_factor = _row_times(t_every, rho)                             # H_kk
        pair = np.matmul(np.swapaxes(rho * t_every[..., None], 1, 2), rho)   # H_jk, its diagonal sum rho^2
        cross = self._pair_sum(zg, zr, pair) - np.sum(diag * np.diagonal(pair, axis1=1, axis2=2), axis=-1)
        value = (np.sum(linear * g_factor, axis=-1)
                 - self.c * (np.sum(own * own_factor, axis=-1) + cross))
        return value.reshape(shape)

    def coefficients(self, pi_sign, pi_both):
        """(a_k, b_k) per batch row: Phi = a_k pi_sign,k + b_k pi_both,k + (terms without device k)."""
        return self.phi_coefficients(pi_sign, pi_both)[1:]

    def phi_coefficients(self, pi_sign, pi_both):
        """(Phi, a_k, b_k) per batch row, from the same sums (Phi costs little more than the coefficients;
        its last bits may differ from :meth:`phi`'s)."""
        pi_sign, shape = _batch(pi_sign)
        pi_both, _ = _batch(np.broadcast_to(pi_both, np.shape(pi_sign)))
        mu, nu, include = self._mixtures(pi_sign, pi_both)
        linear, own, zg, zr, diag = self._parts(mu, nu)
        c = self.c
        if self.normalize == "all":
            pair = self.off
            g_factor = own_factor = 1.0
            through = 0.0
            z = np.concatenate([zg, zr], axis=-1)
            pairs = np.sum(_vector_times(z, self.gram) * z, axis=-1) - np.sum(diag, axis=-1)
            value = np.sum(linear, axis=-1) - c * (pairs + np.sum(own, axis=-1))
        else:
            nodes = self.nodes
            log_f, log_all, rho = nodes.factors(include)
            every = np.exp(log_all[..., 0])
            g_factor = _row_times(every * nodes.w, rho)
            t_every = every * nodes.tw
            own_factor = _row_times(t_every, rho)
            pair = np.matmul(np.swapaxes(rho * t_every[..., None], 1, 2), rho) * self.off
            # d Phi / d p_k through the others' G_j, H_jj and H_ij (docs/model.md, section 7).
            z_matrix = (zg[:, :, None] * self.gg * zg[:, None, :] + zg[:, :, None] * self.gr * zr[:, None, :]
                        + zr[:, :, None] * self.rg * zg[:, None, :] + zr[:, :, None] * self.rr * zr[:, None, :])
            z_matrix = z_matrix * self.off
            pair_rho = np.matmul(rho, z_matrix)                                  # (B, N, K)
            lin_sum = np.matmul(rho, linear[:, :, None])[..., 0]
            own_sum = np.matmul(rho, own[:, :, None])[..., 0]
            pair_sum = np.sum(pair_rho * rho, axis=-1)
            t = nodes.t
            without = ((lin_sum[..., None] - linear[:, None, :] * rho)
                       - c * t[:, None] * (own_sum[..., None] - own[:, None, :] * rho + pair_sum[..., None]
                                           - 2.0 * rho * pair_rho))
            change = nodes.change(log_f, log_all)
            through = _row_times(np.broadcast_to(nodes.w, change.shape[:2]), change * without)
            value = (np.sum(linear * g_factor, axis=-1)
                     - c * (np.sum(own * own_factor, axis=-1) + np.sum(z_matrix * pair, axis=(1, 2))))
        eta = self.eta
        with_g = _vector_times(zg, pair * self.gg) + _vector_times(zr, pair * self.rg)
        with_r = _vector_times(zg, pair * self.gr) + _vector_times(zr, pair * self.rr)
        w = self.weight
        d_mu = w * (eta * self.to_g * g_factor - c * (2.0 * with_g + w * self.sq_g * own_factor))
        d_nu = w * (eta * self.to_r * g_factor - c * (2.0 * with_r + w * self.sq_r * own_factor))
        coef_sign = d_mu * self.indicator["mu"][1] + d_nu * self.indicator["nu"][1] + through * self.indicator["p"][1]
        coef_both = d_mu * self.indicator["mu"][2] + d_nu * self.indicator["nu"][2] + through * self.indicator["p"][2]
        return value.reshape(shape), coef_sign.reshape(*shape, self.num), coef_both.reshape(*shape, self.num)


class JensenEvaluator:
    """Phi of the Jensen surrogate (``surrogate: jensen``) and its coefficients for one problem:
    Phi = sum_k v_k G_k with v_k = a_k pi_sign,k + b_k pi_both,k (G_k = 1 under ``all``)."""

    def __init__(self, problem):
        alpha = problem.alpha
        if problem.sign_only_counts:
            self.a, self.b = alpha * problem.u_sign, alpha * (problem.u_modulus - problem.u_sign)
        else:
            self.a, self.b = np.zeros_like(alpha), alpha * problem.u_modulus
        self.sign_counts = problem.sign_only_counts
        self.num = alpha.size
        self.nodes = _Nodes(alpha) if problem.normalize == "received" else None

    def _factors(self, pi_sign, pi_both):
        values = self.a * pi_sign + self.b * pi_both
        include = pi_sign if self.sign_counts else pi_both
        log_f, log_all, rho = self.nodes.factors(include)
        every = np.exp(log_all[..., 0])
        return values, log_f, log_all, rho, _row_times(every * self.nodes.w, rho)

    def phi(self, pi_sign, pi_both) -> np.ndarray:
        pi_sign, shape = _batch(pi_sign)
        pi_both, _ = _batch(np.broadcast_to(pi_both, np.shape(pi_sign)))
        if self.nodes is None:
            return np.sum(self.a * pi_sign + self.b * pi_both, axis=-1).reshape(shape)
        values, _, _, _, factors = self._factors(pi_sign, pi_both)
        return np.sum(values * factors, axis=-1).reshape(shape)

    def coefficients(self, pi_sign, pi_both):
        return self.phi_coefficients(pi_sign, pi_both)[1:]

    def phi_coefficients(self, pi_sign, pi_both):
        pi_sign, shape = _batch(pi_sign)
        pi_both, _ = _batch(np.broadcast_to(pi_both, np.shape(pi_sign)))
        if self.nodes is None:
            return (np.sum(self.a * pi_sign + self.b * pi_both, axis=-1).reshape(shape),
                    np.broadcast_to(self.a, pi_sign.shape).reshape(*shape, self.num),
                    np.broadcast_to(self.b, pi_sign.shape).reshape(*shape, self.num))
        values, log_f, log_all, rho, factors = self._factors(pi_sign, pi_both)
        # D_j = d Phi / d p_j through the other devices' G_k (objective.dilution).
        weighted = values[:, None, :] * rho
        total = np.matmul(rho, values[:, :, None])                       # (B, N, 1)
        change = self.nodes.change(log_f, log_all)
        coupling = _row_times(np.broadcast_to(self.nodes.w, change.shape[:2]), change * (total - weighted))
        coef_sign, coef_both = factors * self.a, factors * self.b
        if self.sign_counts:
            coef_sign = coef_sign + coupling
        else:
            coef_both = coef_both + coupling
        value = np.sum(values * factors, axis=-1)
        return value.reshape(shape), coef_sign.reshape(*shape, self.num), coef_both.reshape(*shape, self.num)


def evaluator_for(problem):
    """The evaluator of the problem's surrogate."""
    if problem.descent is not None:
        return DescentEvaluator(problem.descent, problem.alpha, problem.normalize)
    return JensenEvaluator(problem)
