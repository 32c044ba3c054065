"""The allocation objective is the expectation of the surrogate of the aggregate each rule really forms.

For small random rounds, 2 x 10^5 fading draws go through the scheme's own transmit(); for every packet
outcome pattern the real aggregation rule gives its weights w and rows X, and the one-step surrogate
S = sum_k w_k [eta <g_k, X_k> - (L eta^2 / 2) ||X_k||^2] of that aggregate is evaluated
(docs/model.md, "Objective").  Phi (spfl.simulator.allocation.objective) must lie within 4 standard errors of
the Monte-Carlo mean, for every aggregation rule the methods use, both normalizations and both fading
models; and under `received` the old objective (a plain sum of per-device terms) must be rejected.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

from objective_helpers import DEADLINE, DIM, DRAWS, ETA, NUM, SMOOTH, draw_resources, monte_carlo, problem_of
from objective_helpers import RULES as ALL_RULES
from spfl.simulator.aggregation import Rule, get_rule
from spfl.simulator.allocation import objective
from spfl.simulator.transmission import Delivery, Payload, get_scheme

# The Jensen surrogate's proofs run every rule but the stale one.
RULES = [r for r in ALL_RULES if r[2] != "stale"]


def _round(seed: int, scheme_name: str, rule: str, compensation: str, preset: bool, normalize: str, fading: str):
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    uploads = torch.randn(NUM, DIM, generator=gen, dtype=torch.float64) * torch.tensor(
        rng.uniform(0.3, 2.0, (NUM, 1)))
    alpha = rng.dirichlet(np.full(NUM, 2.0))
    aggregator = get_rule(rule)(alpha, compensation=compensation, normalize=normalize)
    if preset:
        aggregator.previous_update = torch.randn(DIM, generator=gen, dtype=torch.float64) * 0.8
    scheme = get_scheme(scheme_name)
    layout = scheme.layout(DIM, 31, compensation, DEADLINE)
    resources, link = draw_resources(rng, layout, NUM, fading)
    problem = problem_of(aggregator, uploads, layout, link, normalize, fading, ETA, SMOOTH)
    return uploads, aggregator, scheme, layout, resources, link, problem, rng


def _surrogate(aggregator: Rule, uploads: torch.Tensor, delivery: Delivery) -> float:
    weights, rows = copy.deepcopy(aggregator).contributions(Payload(uploads), delivery)
    if weights is None:
        return 0.0
    inner = (uploads * rows).sum(dim=1).numpy()
    squared = rows.square().sum(dim=1).numpy()
    return float(np.sum(weights * (ETA * inner - SMOOTH * ETA**2 / 2 * squared)))


def _monte_carlo(uploads, aggregator, scheme, layout, resources, link, rng):
    """Mean and standard error of S over fading draws; S by outcome pattern from the real aggregator."""
    return monte_carlo(lambda delivery: _surrogate(aggregator, uploads, delivery), scheme, layout, resources, link,
                       rng, DRAWS, NUM)


@pytest.mark.parametrize("fading", ["block", "per_packet"])
@pytest.mark.parametrize("normalize", ["received", "all"])
@pytest.mark.parametrize("label, scheme, rule, compensation, preset", RULES, ids=[r[0] for r in RULES])
def test_objective_is_the_expected_surrogate_of_the_aggregate(label, scheme, rule, compensation, preset,
                                                             normalize, fading):
    seed = 11 + RULES.index((label, scheme, rule, compensation, preset))
    uploads, aggregator, scheme_, layout, resources, link, problem, rng = _round(
        seed, scheme, rule, compensation, preset, normalize, fading)
    phi = objective(problem, resources.bandwidth, resources.power_sign, resources.power_modulus,
                    resources.slot_share)
    mean, error = _monte_carlo(uploads, aggregator, scheme_, layout, resources, link, rng)
    assert abs(phi - mean) <= 4 * error + 1e-12 * abs(mean), (label, phi, mean, error)
    if normalize == "received":
        # The objective of the first build (a sum of per-device terms, i.e. `all`) misses this aggregate.
        old = objective(replace(problem, normalize="all"), resources.bandwidth, resources.power_sign,
                        resources.power_modulus, resources.slot_share)
        assert abs(old - mean) > 8 * error, (label, old, mean, error)


def test_fresher_received_mean_modulus_is_the_documented_approximation():
    """`received_mean` compensates with this round's mean of the arrived moduli when any arrived: the
    objective uses the one known before the round (documented): with a stale c far from this round's
    moduli, Phi is then not the exact expectation."""
    uploads, aggregator, scheme, layout, resources, link, problem, rng = _round(
        5, "sign_modulus", "sign_reuse", "received_mean", False, "all", "block")
    aggregator.modulus = uploads.abs().mean(dim=0) * 4.0  # last round's c, far from this round's
    u_sign, u_modulus = aggregator.packet_worths(uploads, ETA, SMOOTH)
    problem = replace(problem, u_sign=u_sign, u_modulus=u_modulus)
    phi = objective(problem, resources.bandwidth, resources.power_sign, resources.power_modulus,
                    resources.slot_share)
    mean, error = _monte_carlo(uploads, aggregator, scheme, layout, resources, link, rng)
    assert abs(phi - mean) > 4 * error
