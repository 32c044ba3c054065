"""The allocation objective is the expectation of the surrogate of the aggregate each rule really forms.

For small random rounds, 2 x 10^5 fading draws go through the scheme's own transmit(); for every packet
outcome pattern the real Aggregator gives its weights w and rows X, and the one-step surrogate
S = sum_k w_k [eta <g_k, X_k> - (L eta^2 / 2) ||X_k||^2] of that aggregate is evaluated
(docs/model.md, "Objective").  Phi (spfl.allocation.objective) must lie within 4 standard errors of
the Monte-Carlo mean, for every aggregation rule the methods use, both normalizations and both fading
models; and under `received` the old objective (a plain sum of per-device terms) must be rejected.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import replace

import numpy as np
import pytest
import torch

from spfl.aggregation import Aggregator
from spfl.allocation import AllocationProblem, objective
from spfl.channel import failure_threshold
from spfl.transmission import Delivery, Link, Resources, get_scheme

DRAWS = 200_000
ETA, SMOOTH = 0.3, 2.0
NUM, DIM = 4, 6
NOISE = 4e-21
DEADLINE = 1e-3

# (method-like label, scheme, rule, compensation, preset compensatory state)
RULES = [
    ("spfl, previous-update modulus", "sign_modulus", "sign_reuse", "previous_update", True),
    ("spfl, before any modulus (own norm)", "sign_modulus", "sign_reuse", "previous_update", False),
    ("spfl, scalar modulus", "sign_modulus", "sign_reuse", "scalar", False),
    ("spfl_noreuse", "sign_modulus", "no_reuse", "previous_update", True),
    ("digital / scheduling", "digital", "full", "received_mean", False),
    ("signsgd (mean)", "sign_only", "signs", "received_mean", False),
]


def _round(seed: int, scheme_name: str, rule: str, compensation: str, preset: bool, normalize: str, fading: str):
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    uploads = torch.randn(NUM, DIM, generator=gen, dtype=torch.float64) * torch.tensor(
        rng.uniform(0.3, 2.0, (NUM, 1)))
    alpha = rng.dirichlet(np.full(NUM, 2.0))
    aggregator = Aggregator(rule, alpha, compensation=compensation, normalize=normalize)
    if preset:
        aggregator.previous_update = torch.randn(DIM, generator=gen, dtype=torch.float64) * 0.8
    scheme = get_scheme(scheme_name)
    layout = scheme.layout(DIM, 31, compensation, DEADLINE)
    tau = rng.uniform(0.05, 0.6, NUM) if layout.two_packets else np.ones(NUM)
    bandwidth = rng.dirichlet(np.full(NUM, 3.0)) * 4e5
    split = rng.uniform(0.2, 0.8, NUM)
    c_s, c_m = (tau, 1 - tau)
    power_sign = split * 0.2 / c_s
    power_modulus = (1 - split) * 0.2 / np.where(c_m > 0, c_m, 1) if layout.two_packets else np.zeros(NUM)
    # Gains that put every packet's success probability in the interesting range.
    unit = failure_threshold(bandwidth, power_sign, 1.0, layout.sign_bits, tau * DEADLINE, NOISE)
    if layout.two_packets:
        unit = np.maximum(unit, failure_threshold(bandwidth, power_modulus, 1.0, layout.modulus_bits,
                                                  (1 - tau) * DEADLINE, NOISE))
    gain = unit / rng.uniform(0.3, 1.5, NUM)
    resources = Resources(bandwidth, power_sign, power_modulus, tau)
    link = Link(gain, NOISE, fading=fading)
    u_sign, u_modulus = aggregator.packet_worths(uploads, ETA, SMOOTH)
    problem = AllocationProblem(
        alpha=alpha, gain=gain, u_sign=u_sign, u_modulus=u_modulus, total_bandwidth=4e5, max_power=0.2,
        noise_psd=NOISE, deadline=DEADLINE, sign_bits=layout.sign_bits, modulus_bits=layout.modulus_bits,
        slot_share=None, power_constraint="energy", fading=fading, normalize=normalize,
        sign_only_counts=aggregator.sign_only_counts)
    return uploads, aggregator, scheme, layout, resources, link, problem, rng


def _surrogate(aggregator: Aggregator, uploads: torch.Tensor, delivery: Delivery) -> float:
    weights, rows = copy.deepcopy(aggregator).contributions(uploads, delivery)
    if weights is None:
        return 0.0
    inner = (uploads * rows).sum(dim=1).numpy()
    squared = rows.square().sum(dim=1).numpy()
    return float(np.sum(weights * (ETA * inner - SMOOTH * ETA**2 / 2 * squared)))


def _monte_carlo(uploads, aggregator, scheme, layout, resources, link, rng):
    """Mean and standard error of S over fading draws; S by outcome pattern from the real aggregator."""
    fading = rng.exponential(1.0, size=(DRAWS, NUM, 2))
    if link.fading == "block":
        fading[..., 1] = fading[..., 0]
    delivery = scheme.transmit(layout, resources, link, fading)
    state = np.where(delivery.sign_ok, np.where(delivery.both_ok, 2, 1), 0)  # lost / sign only / both
    codes = state @ (3 ** np.arange(NUM))
    values = np.zeros(3**NUM)
    sent = np.ones(NUM, dtype=bool)
    zeros = np.zeros(NUM)
    for pattern in itertools.product(range(3), repeat=NUM):
        pattern = np.array(pattern)
        one = Delivery(sent, sent, pattern >= 1, pattern == 2, zeros, zeros, 0.0,
                       single_packet=not layout.two_packets)
        values[pattern @ (3 ** np.arange(NUM))] = _surrogate(aggregator, uploads, one)
    samples = values[codes]
    assert len(np.unique(codes)) > 10  # many patterns occur: the check is not a trivial one
    return samples.mean(), samples.std(ddof=1) / np.sqrt(DRAWS)


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
