"""The descent surrogate (``surrogate: descent``): the expected one-step decrease of the loss, exactly.

For an L-smooth loss, one step w - eta g_hat decreases it by at least

    S = eta <gbar, g_hat> - (L eta^2 / 2) ||g_hat||^2,   g_hat = sum_k w_k X_k,

with gbar = sum_k alpha_k g_k the round's error-free aggregate (the allocator's estimate of grad F).
Phi = E[S] over the packet outcomes, cross terms included (docs/model.md, section 6): the
E[w_j w_k] <X_j, X_k> of two different devices is what rewards averaging many of them.  Unlike the
Jensen surrogate (:mod:`.objective`), which replaces ||g_hat||^2 by sum_k w_k ||X_k||^2, this form
needs the devices' pairwise inner products: :class:`DescentTerms` holds them as a Gram matrix of
the 2K vectors [g_1 .. g_K, r_1 .. r_K], where r_k is the other vector a rule may use for device k
(its signs with the compensatory modulus, its stale gradient, its scaled signs).

Each rule maps a device's three outcomes (nothing / only the sign / both packets arrived) to what it
contributes: nothing (0), g_k (1) or r_k (2) (``STATES``).  With m_k = E[I_k X_k], q_k = E[I_k ||X_k||^2]
and independent devices:

    all:       Phi = eta sum_k a_k <gbar, m_k> - c [sum_{j != k} a_j a_k <m_j, m_k> + sum_k a_k^2 q_k]
    received:  Phi = eta sum_k a_k <gbar, m_k> G_k - c [sum_{j != k} a_j a_k <m_j, m_k> H_jk + sum_k a_k^2 q_k H_kk]

with a = alpha / sum(alpha), c = L eta^2 / 2, G_k = E[1 / (a_k + sum_{i != k} a_i I_i)] as for Jensen,
H_jk = E[1 / (a_j + a_k + sum_{i != j, k} a_i I_i)^2] and H_kk = E[1 / (a_k + sum_{i != k} a_i I_i)^2],
from 1/x^2 = int_0^inf t exp(-t x) dt on the same quadrature.  Phi is affine in each device's own
outcome probabilities given the others' (no H or G involving device k depends on its own), which is
what the solver's alternation uses (:func:`coefficients`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# What a device contributes when (nothing, only the sign, both packets) arrive: 0 nothing, 1 its full
# gradient g_k, 2 its other vector r_k.  ``stale`` maps "nothing" to r_k (its last received gradient)
# for the devices that have one.
NOTHING, FULL, OTHER = 0, 1, 2
STATES = {
    "full": (NOTHING, FULL, FULL),        # one packet: the "sign" packet is the whole gradient
    "stale": (NOTHING, FULL, FULL),
    "sign_reuse": (NOTHING, OTHER, FULL),
    "no_reuse": (NOTHING, NOTHING, FULL),
    "signs": (NOTHING, OTHER, OTHER),
}


@dataclass(frozen=True)
class DescentTerms:
    """What the allocator knows for the descent surrogate.

    ``gram``: (2K, 2K) inner products of [g_1 .. g_K, r_1 .. r_K] (exact, or estimated from sketches);
    ``states``: (K, 3) contributions per outcome (see ``STATES``)."""

    gram: np.ndarray
    states: np.ndarray
    learning_rate: float
    smoothness: float

    def __post_init__(self) -> None:
        gram = np.array(self.gram, dtype=float)
        states = np.array(self.states, dtype=int)
        num = states.shape[0] if states.ndim == 2 else -1
        if states.shape != (num, 3) or not np.isin(states, (NOTHING, FULL, OTHER)).all():
            raise ValueError(f"states has shape {states.shape}: allowed (K, 3) entries in 0, 1, 2")
        if gram.shape != (2 * num, 2 * num) or not np.isfinite(gram).all():
            raise ValueError(f"gram has shape {gram.shape}: allowed a finite ({2 * num}, {2 * num}) matrix")
        gram = (gram + gram.T) / 2.0
        for array in (gram, states):
            array.setflags(write=False)
        object.__setattr__(self, "gram", gram)
        object.__setattr__(self, "states", states)

    @classmethod
    def for_rule(cls, rule: str, gram, learning_rate: float, smoothness: float, has_other_when_lost=None):
        """The terms of an aggregation rule; ``has_other_when_lost`` (stale only): which devices have a
        last received gradient to stand in when nothing arrives."""
        states = np.tile(np.array(STATES[rule]), (np.shape(gram)[0] // 2, 1))
        if rule == "stale" and has_other_when_lost is not None:
            states[:, 0] = np.where(np.asarray(has_other_when_lost, dtype=bool), OTHER, NOTHING)
        return cls(gram, states, float(learning_rate), float(smoothness))

    @property
    def quadratic(self) -> float:
        return self.smoothness * self.learning_rate**2 / 2.0


def _indicators(states: np.ndarray):
    """Per device, the 0/1 weights of (nothing, sign only, both) in mu (g_k's coefficient), nu (r_k's)
    and p (inclusion)."""
    return states == FULL, states == OTHER, states != NOTHING


def _mixtures(terms: DescentTerms, pi_sign, pi_both):
    """mu_k, nu_k, p_k: expected coefficients of g_k and r_k in I_k X_k, and P(I_k = 1)."""
    pi_sign = np.asarray(pi_sign, dtype=float)
    pi_both = np.minimum(np.asarray(pi_both, dtype=float), pi_sign)
    outcome = np.stack([1.0 - pi_sign, pi_sign - pi_both, pi_both], axis=-1)   # (..., K, 3)
    return tuple(np.sum(outcome * weight, axis=-1) for weight in _indicators(terms.states))


def _blocks(gram: np.ndarray, num: int):
    """The four K x K blocks gg, gr, rg, rr of the Gram matrix."""
    return gram[:num, :num], gram[:num, num:], gram[num:, :num], gram[num:, num:]


def _pair_matrix(terms: DescentTerms, weight, mu, nu):
    """Z_jk = a_j a_k <m_j, m_k> for every pair (..., K, K), from the expected coefficients."""
    gg, gr, rg, rr = _blocks(terms.gram, mu.shape[-1])
    zg, zr = weight * mu, weight * nu
    outer = lambda x, y, block: x[..., :, None] * block * y[..., None, :]  # noqa: E731
    return outer(zg, zg, gg) + outer(zg, zr, gr) + outer(zr, zg, rg) + outer(zr, zr, rr)


def _normalized(alpha) -> np.ndarray:
    alpha = np.asarray(alpha, dtype=float)
    return alpha / alpha.sum()


def _towards_mean(terms: DescentTerms, weight):
    """<gbar, g_k> and <gbar, r_k> with gbar = sum_j a_j g_j."""
    gg, gr, _, _ = _blocks(terms.gram, weight.size)
    return weight @ gg, weight @ gr


def _own_squares(terms: DescentTerms, num: int):
    return np.diag(terms.gram)[:num], np.diag(terms.gram)[num:]


def _quadrature_factors(alpha, include, nodes):
    """log E(t) = sum_i log f_i(t) and rho_k(t) = e^{-t a_k} / f_k(t), f_i = 1 - p_i + p_i e^{-t a_i}, for
    every node (rows) and device (columns); plus E(t) d f_k / d p_k / f_k = -(1 - e^{-t a_k}) prod_{i != k} f_i
    (computed in logs: f_k may underflow where the product does not)."""
    t, _ = nodes
    p = np.clip(include, 0.0, 1.0)[..., None, :]
    decay = t[:, None] * alpha
    with np.errstate(divide="ignore"):
        log_f = np.logaddexp(np.log1p(-p), np.log(p) - decay)
    log_all = log_f.sum(axis=-1, keepdims=True)
    rho = np.exp(-decay - log_f)
    with np.errstate(divide="ignore"):
        change = -np.exp(log_all + np.log(-np.expm1(-decay)) - log_f)
    return log_all, rho, change


def phi(terms: DescentTerms, alpha, normalize: str, pi_sign, pi_both, nodes) -> np.ndarray:
    """Phi of the descent surrogate at the outcome probabilities (any leading batch axes)."""
    weight = _normalized(alpha)
    num = weight.size
    mu, nu, include = _mixtures(terms, pi_sign, pi_both)
    to_g, to_r = _towards_mean(terms, weight)
    square_g, square_r = _own_squares(terms, num)
    linear = terms.learning_rate * weight * (mu * to_g + nu * to_r)          # (..., K)
    own = weight**2 * (mu * square_g + nu * square_r)                         # (..., K)
    pairs = _pair_matrix(terms, weight, mu, nu)
    pairs = pairs * (1.0 - np.eye(num))
    if normalize == "all":
        return np.sum(linear, axis=-1) - terms.quadratic * (np.sum(pairs, axis=(-2, -1)) + np.sum(own, axis=-1))
    t, node_weight = nodes
    log_all, rho, _ = _quadrature_factors(weight, include, nodes)            # (..., N, 1), (..., N, K)
    every = np.exp(log_all)                                                   # E(t): (..., N, 1)
    first = np.einsum("...nk,...k,n->...", every * rho, linear, node_weight)
    second = np.einsum("...nk,...k,n->...", t[:, None] * every * rho, own, node_weight)
    spread = np.einsum("...nk,...kj,...nj->...n", rho, pairs, rho)          # rho^T Z rho per node
    cross = np.einsum("...n,n->...", t * every[..., 0] * spread, node_weight)
    return first - terms.quadratic * (second + cross)


def coefficients(terms: DescentTerms, alpha, normalize: str, pi_sign, pi_both, nodes):
    """(a_k, b_k): Phi = a_k pi_sign,k + b_k pi_both,k + (terms without device k's probabilities), exactly,
    at the point (pi_sign, pi_both) of one allocation."""
    weight = _normalized(alpha)
    num = weight.size
    mu, nu, include = _mixtures(terms, pi_sign, pi_both)
    to_g, to_r = _towards_mean(terms, weight)
    square_g, square_r = _own_squares(terms, num)
    gg, gr, rg, rr = _blocks(terms.gram, num)
    zg, zr = weight * mu, weight * nu
    off = 1.0 - np.eye(num)
    # <m_j, g_k> a_j and <m_j, r_k> a_j summed over j with the pair factors H_jk (1 under `all`).
    if normalize == "all":
        pair_factor = off
        g_factor = np.ones(num)
        own_factor = np.ones(num)
        through_p = np.zeros(num)
    else:
        t, node_weight = nodes
        log_all, rho, change = _quadrature_factors(weight, include, nodes)   # (N, 1), (N, K), (N, K)
        every = np.exp(log_all)[:, 0]                                          # (N,)
        g_factor = np.einsum("n,nk,n->k", every, rho, node_weight)             # G_k
        own_factor = np.einsum("n,nk,n->k", t * every, rho, node_weight)       # H_kk
        pair_factor = np.einsum("n,nj,nk->jk", t * every * node_weight, rho, rho) * off   # H_jk
        # d Phi / d p_k through the others' G_j, H_jj and H_ij (docs/model.md, section 7).
        linear = terms.learning_rate * weight * (mu * to_g + nu * to_r)
        own = weight**2 * (mu * square_g + nu * square_r)
        pairs = _pair_matrix(terms, weight, mu, nu) * off
        lin_sum = rho @ linear                                                  # (N,)
        own_sum = rho @ own
        pair_rho = rho @ pairs                                                  # (N, K): sum_j rho_j Z_jk
        pair_sum = np.sum(pair_rho * rho, axis=-1)                              # rho^T Z rho
        without_k = (lin_sum[:, None] - linear * rho) - terms.quadratic * t[:, None] * (
            own_sum[:, None] - own * rho + pair_sum[:, None] - 2.0 * rho * pair_rho)
        through_p = np.einsum("nk,nk,n->k", change, without_k, node_weight)
    eta, c = terms.learning_rate, terms.quadratic
    # sum_{j != k} H_jk a_j <m_j, v_k> for v = g, r.
    with_g = (zg @ (pair_factor * gg)) + (zr @ (pair_factor * rg))
    with_r = (zg @ (pair_factor * gr)) + (zr @ (pair_factor * rr))
    d_mu = weight * (eta * to_g * g_factor - c * (2.0 * with_g + weight * square_g * own_factor))
    d_nu = weight * (eta * to_r * g_factor - c * (2.0 * with_r + weight * square_r * own_factor))
    coef_sign = np.zeros(num)
    coef_both = np.zeros(num)
    for derivative, indicator in zip((d_mu, d_nu, through_p), _indicators(terms.states)):
        x = indicator.astype(float)
        coef_sign += derivative * (x[:, 1] - x[:, 0])
        coef_both += derivative * (x[:, 2] - x[:, 1])
    return coef_sign, coef_both
