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
contributes: nothing (0), g_k (1) or r_k (2) (each rule's ``outcomes``, spfl.simulator.aggregation).
With m_k = E[I_k X_k], q_k = E[I_k ||X_k||^2] and independent devices:

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
@dataclass(frozen=True)
class DescentTerms:
    """What the allocator knows for the descent surrogate.

    ``gram``: (2K, 2K) inner products of [g_1 .. g_K, r_1 .. r_K] (exact, or estimated from sketches);
    ``states``: (K, 3) contributions per outcome (a rule's ``descent_states``)."""

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


    @property
    def quadratic(self) -> float:
        return self.smoothness * self.learning_rate**2 / 2.0


def phi(terms: DescentTerms, alpha, normalize: str, pi_sign, pi_both, nodes) -> np.ndarray:
    """Phi of the descent surrogate at the outcome probabilities (any leading batch axes), on the
    quadrature ``nodes`` (:func:`.evaluation.quadrature`)."""
    from spfl.simulator.allocation.evaluation import DescentEvaluator  # (it builds on this module)

    return DescentEvaluator(terms, alpha, normalize, nodes).phi(pi_sign, pi_both)


def coefficients(terms: DescentTerms, alpha, normalize: str, pi_sign, pi_both, nodes):
    """(a_k, b_k): Phi = a_k pi_sign,k + b_k pi_both,k + (terms without device k), exactly, at the point
    (pi_sign, pi_both) of one allocation."""
    from spfl.simulator.allocation.evaluation import DescentEvaluator

    sign, both = DescentEvaluator(terms, alpha, normalize, nodes).coefficients(np.asarray(pi_sign)[None],
                                                                               np.asarray(pi_both)[None])
    return sign[0], both[0]
