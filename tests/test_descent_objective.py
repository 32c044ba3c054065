"""The descent surrogate's Phi is the expectation of S = eta <gbar, g_hat> - (L eta^2 / 2) ||g_hat||^2 over
packet outcomes, for the aggregate each rule really forms (docs/model.md, section 6).

Three independent checks:
- Monte Carlo: 2 x 10^5 fading draws through the scheme's own transmit(); for every outcome pattern the
  real rule's weights and rows give g_hat and S; Phi must lie within 4 standard errors of the mean,
  for every rule, both normalizations and both fading models (the Jensen objective is rejected).
- Enumeration: E[S] summed over all 3^K outcome patterns with their probabilities equals Phi to 1e-9
  (the quadrature of G_k and H_jk), on random problems with uneven weights.
- Linearization: Phi moves by exactly a_k d(pi_sign) + b_k d(pi_both) when one device's probabilities move.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import replace

import numpy as np
import pytest
import torch

from objective_helpers import DEADLINE, DIM, DRAWS, ETA, NUM, RULES, SMOOTH, draw_resources, monte_carlo, problem_of
from spfl.simulator import aggregation
from spfl.simulator.aggregation import get_rule
from spfl.simulator.allocation import objective
from spfl.simulator.allocation.descent import FULL, NOTHING, OTHER, coefficients, phi
from spfl.simulator.allocation.objective import _quadrature
from spfl.simulator.gram import gram_matrix
from spfl.simulator.transmission import Payload, get_scheme


def _round(seed, scheme_name, rule, compensation, preset, normalize, fading):
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    # Correlated gradients (a shared direction plus noise), as in training.
    common = torch.randn(DIM, generator=gen, dtype=torch.float64)
    uploads = (common + 0.8 * torch.randn(NUM, DIM, generator=gen, dtype=torch.float64)) * torch.tensor(
        rng.uniform(0.3, 2.0, (NUM, 1)))
    alpha = rng.dirichlet(np.full(NUM, 2.0))
    aggregator = get_rule(rule)(alpha, compensation=compensation, normalize=normalize)
    if preset and rule == "stale":
        aggregator.stale = torch.randn(NUM, DIM, generator=gen, dtype=torch.float64) + common
        aggregator.has_stale = np.array([True, False, True, True])
        aggregator.stale[1] = 0.0
    elif preset:
        aggregator.previous_update = torch.randn(DIM, generator=gen, dtype=torch.float64) * 0.8
    scheme = get_scheme(scheme_name)
    layout = scheme.layout(DIM, 31, compensation, DEADLINE)
    resources, link = draw_resources(rng, layout, NUM, fading)
    gram = gram_matrix(uploads, aggregator.other_vectors(uploads), None)
    terms = aggregator.descent_terms(gram, ETA, SMOOTH)
    problem = problem_of(aggregator, uploads, layout, link, normalize, fading, ETA, SMOOTH, descent=terms)
    return uploads, aggregator, scheme, layout, resources, link, problem, rng


def _surrogate(aggregator, uploads, delivery, alpha) -> float:
    weights, rows = copy.deepcopy(aggregator).contributions(Payload(uploads), delivery)
    if weights is None:
        return 0.0
    aggregate = torch.as_tensor(weights) @ rows
    mean = torch.as_tensor(alpha / alpha.sum()) @ uploads
    return float(ETA * (mean @ aggregate) - SMOOTH * ETA**2 / 2 * (aggregate @ aggregate))


def _monte_carlo(uploads, aggregator, scheme, layout, resources, link, rng, alpha):
    return monte_carlo(lambda delivery: _surrogate(aggregator, uploads, delivery, alpha), scheme, layout,
                       resources, link, rng, DRAWS, NUM)


@pytest.mark.parametrize("fading", ["block", "per_packet"])
@pytest.mark.parametrize("normalize", ["received", "all"])
@pytest.mark.parametrize("label, scheme, rule, compensation, preset", RULES, ids=[r[0] for r in RULES])
def test_descent_objective_is_the_expected_surrogate_of_the_aggregate(label, scheme, rule, compensation, preset,
                                                                     normalize, fading):
    seed = 31 + RULES.index((label, scheme, rule, compensation, preset))
    uploads, aggregator, scheme_, layout, resources, link, problem, rng = _round(
        seed, scheme, rule, compensation, preset, normalize, fading)
    value = objective(problem, resources.bandwidth, resources.power_sign, resources.power_modulus,
                      resources.slot_share)
    mean, error = _monte_carlo(uploads, aggregator, scheme_, layout, resources, link, rng, problem.alpha)
    assert abs(value - mean) <= 4 * error + 1e-12 * abs(mean), (label, value, mean, error)
    # The Jensen surrogate (no cross terms) is another quantity: rejected by the same draws.
    jensen = objective(replace(problem, descent=None), resources.bandwidth, resources.power_sign,
                       resources.power_modulus, resources.slot_share)
    assert abs(jensen - mean) > 8 * error, (label, jensen, mean, error)


def test_stale_reuse_before_any_stale_gradient():
    """digital_reuse in its first round has no stale gradient: a lost device is simply left out."""
    uploads, aggregator, *_ , problem, _ = _round(3, "digital", "stale", "received_mean", False, "all", "block")
    assert aggregator.other_vectors(uploads) is None
    assert (problem.descent.states[:, 0] == 0).all()


def _random_terms(rng, num, rule):
    vectors = rng.normal(size=(2 * num, 7)) + rng.normal(size=7)
    gram = vectors @ vectors.T
    has_stale = rng.random(num) < 0.6  # drawn for every rule: the same numbers follow
    aggregator = get_rule(rule)(np.full(num, 1 / num))
    if rule == "stale":
        aggregator.has_stale = has_stale
    return aggregator.descent_terms(gram, 0.2, 3.0)


def _enumerated(terms, alpha, normalize, pi_sign, pi_both):
    """E[S] over all 3^K outcome patterns, from the Gram matrix directly."""
    num = alpha.size
    a = alpha / alpha.sum()
    gram = terms.gram
    mean_index = np.arange(num)
    total = 0.0
    probabilities = np.stack([1 - pi_sign, pi_sign - pi_both, pi_both], axis=1)
    for pattern in itertools.product(range(3), repeat=num):
        prob = np.prod(probabilities[np.arange(num), pattern])
        if prob == 0:
            continue
        state = terms.states[np.arange(num), pattern]
        used = state != 0
        if not used.any():
            continue
        index = np.where(state == 1, mean_index, num + mean_index)
        weight = np.where(used, a, 0.0)
        if normalize == "received":
            weight = weight / weight.sum()
        # <gbar, g_hat> and ||g_hat||^2 from the Gram matrix.
        towards = a @ gram[np.ix_(mean_index, index)] @ weight
        square = weight @ gram[np.ix_(index, index)] @ weight
        total += prob * (terms.learning_rate * towards - terms.quadratic * square)
    return total


@pytest.mark.parametrize("rule", sorted(aggregation.RULES))
@pytest.mark.parametrize("normalize", ["received", "all"])
@pytest.mark.parametrize("seed", [0, 1])
def test_descent_phi_equals_exact_enumeration(rule, normalize, seed):
    rng = np.random.default_rng(seed)
    num = 5
    terms = _random_terms(rng, num, rule)
    alpha = rng.dirichlet(np.full(num, 0.7)) + np.array([1e-3, 0, 0, 0, 0])
    pi_sign = rng.uniform(0, 1, num)
    pi_sign[0] = 1.0
    pi_both = pi_sign * rng.uniform(0, 1, num)
    exact = _enumerated(terms, alpha, normalize, pi_sign, pi_both)
    value = float(phi(terms, alpha, normalize, pi_sign, pi_both, _quadrature(alpha / alpha.sum())))
    assert value == pytest.approx(exact, rel=1e-9, abs=1e-12)
    # Batches: one row per point, the same numbers.
    batch = phi(terms, alpha, normalize, np.stack([pi_sign, pi_sign * 0.5]), np.stack([pi_both, pi_both * 0.5]),
                _quadrature(alpha / alpha.sum()))
    assert batch[0] == pytest.approx(value, rel=1e-12)
    assert batch[1] == pytest.approx(_enumerated(terms, alpha, normalize, pi_sign * 0.5, pi_both * 0.5),
                                     rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("rule", sorted(aggregation.RULES))
@pytest.mark.parametrize("normalize", ["received", "all"])
def test_descent_linearization_is_exact_in_each_devices_own_probabilities(rule, normalize):
    rng = np.random.default_rng(7)
    num = 6
    terms = _random_terms(rng, num, rule)
    alpha = rng.dirichlet(np.full(num, 1.5))
    nodes = _quadrature(alpha / alpha.sum())
    pi_sign = rng.uniform(0.1, 0.9, num)
    pi_both = pi_sign * rng.uniform(0.1, 0.9, num)
    coef_sign, coef_both = coefficients(terms, alpha, normalize, pi_sign, pi_both, nodes)
    base = float(phi(terms, alpha, normalize, pi_sign, pi_both, nodes))
    for k in range(num):
        new_sign, new_both = pi_sign.copy(), pi_both.copy()
        new_sign[k], new_both[k] = rng.uniform(0.5, 1.0), 0.0
        new_both[k] = new_sign[k] * rng.uniform(0, 1)
        moved = float(phi(terms, alpha, normalize, new_sign, new_both, nodes))
        predicted = base + coef_sign[k] * (new_sign[k] - pi_sign[k]) + coef_both[k] * (new_both[k] - pi_both[k])
        assert moved == pytest.approx(predicted, rel=1e-9, abs=1e-12), k


def test_count_sketch_inner_products_are_unbiased_with_the_stated_variance():
    """Over 3,000 independent sketches (m = 64, d = 300): the mean of <S x, S y> is within 4 standard errors
    of <x, y>, and the variance within 12 % of (||x||^2 ||y||^2 + <x, y>^2 - 2 sum_i x_i^2 y_i^2) / m (its
    standard error here is about 3 %)."""
    from spfl.simulator.gram import CountSketch

    rng = np.random.default_rng(5)
    x = torch.tensor(rng.normal(size=300) + 0.5)
    y = torch.tensor(rng.normal(size=300) + 0.3)
    true = float(x @ y)
    estimates = []
    for seed in range(3000):
        sketch = CountSketch(300, 64, np.random.SeedSequence(seed))
        both = sketch.apply(torch.stack([x, y]))
        estimates.append(float(both[0] @ both[1]))
    estimates = np.array(estimates)
    error = estimates.std(ddof=1) / np.sqrt(estimates.size)
    assert abs(estimates.mean() - true) <= 4 * error, (estimates.mean(), true, error)
    variance = (float(x @ x) * float(y @ y) + true**2 - 2 * float((x * x) @ (y * y))) / 64
    assert estimates.var(ddof=1) == pytest.approx(variance, rel=0.12)


@pytest.mark.parametrize("gram", ["exact", "sketch"])
def test_simulation_gives_the_allocator_the_gram_matrix_of_gradients_and_sign_forms(gram):
    """SP-FL's problem carries <x, y> for x, y in [g_1..g_K, sign(g_k) * c]: exact under `gram: exact`;
    under `sketch` each device's own three numbers exact and the others estimated (seeded: the same
    estimate for every method of a seed), and the control channel's bits counted."""
    from spfl.configuration.settings import make_spec
    from spfl.simulator.simulation import Simulation, build_environment

    spec = make_spec(num_devices=4, batch_size=8, rounds=1, eval_every=1, gram=gram, sketch_size=512)
    sim = Simulation(build_environment(spec), "spfl")
    state = sim.initial_state()
    uploads = sim.launch_round(state).uploads
    problem = sim.allocation_problem(uploads, state.aggregator)
    g = uploads.double().numpy()
    scale = np.linalg.norm(g, axis=1, keepdims=True) / np.sqrt(g.shape[1])  # no modulus has arrived yet
    vectors = np.vstack([g, np.where(g >= 0, 1.0, -1.0) * scale])
    exact = vectors @ vectors.T
    got = problem.descent.gram
    assert (problem.descent.states == np.array([NOTHING, OTHER, FULL])).all()  # sign only: r_k; both: g_k
    if gram == "exact":
        np.testing.assert_allclose(got, exact, rtol=1e-6, atol=1e-9)  # the sign form's scale is float32
        assert sim.control_bits == 0
        return
    own = np.zeros_like(exact, dtype=bool)
    for k in range(4):
        own[np.ix_([k, 4 + k], [k, 4 + k])] = True
    np.testing.assert_allclose(got[own], exact[own], rtol=1e-6)
    assert not np.allclose(got[~own], exact[~own], rtol=1e-6)
    # An estimate, not noise: off-diagonal errors within a few of the sketch's standard deviations.
    scale = np.sqrt(np.outer(np.diag(exact), np.diag(exact)) * 2 / 512)
    assert np.all(np.abs(got - exact)[~own] <= 5 * scale[~own])
    again = Simulation(build_environment(spec), "scheduling").allocation_problem(uploads, state.aggregator)
    np.testing.assert_array_equal(again.descent.gram[:4, :4], got[:4, :4])
    assert sim.control_bits == 4 * (2 * 512 + 3) * 32
