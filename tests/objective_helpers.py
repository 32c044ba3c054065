"""Shared pieces of the objective's Monte-Carlo proofs (test_objective_consistency, test_descent_objective).

A round's resources are drawn so that every packet's success probability is in the interesting range, and
the surrogate of the aggregate is averaged over fading draws sent through the scheme's own transmit(): each
of the 3^K outcome patterns is evaluated once through a Delivery built by hand.
"""

from __future__ import annotations

import itertools

import numpy as np

from spfl.simulator.allocation import AllocationProblem
from spfl.simulator.channel import failure_threshold
from spfl.simulator.transmission import Delivery, Link, Resources

NOISE = 4e-21
DEADLINE = 1e-3
BANDWIDTH = 4e5
MAX_POWER = 0.2

DRAWS = 200_000  # fading draws per Monte-Carlo proof
ETA, SMOOTH = 0.3, 2.0
NUM, DIM = 4, 6

# (label, scheme, rule, compensation, preset compensatory / stale state)
RULES = [
    ("spfl, previous-update modulus", "sign_modulus", "sign_reuse", "previous_update", True),
    ("spfl, before any modulus (own norm)", "sign_modulus", "sign_reuse", "previous_update", False),
    ("spfl, scalar modulus", "sign_modulus", "sign_reuse", "scalar", False),
    ("spfl_noreuse", "sign_modulus", "no_reuse", "previous_update", True),
    ("digital / scheduling", "digital", "full", "received_mean", False),
    ("digital_reuse, some stale", "digital", "stale", "received_mean", True),
    ("signsgd (mean)", "sign_only", "signs", "received_mean", False),
]


def draw_resources(rng: np.random.Generator, layout, num: int, fading: str) -> tuple[Resources, Link]:
    """Random sign shares, bandwidths and power splits on the energy constraint, and gains that put every
    device's weaker packet a success probability between e^-1.5 and e^-0.3."""
    tau = rng.uniform(0.05, 0.6, num) if layout.two_packets else np.ones(num)
    bandwidth = rng.dirichlet(np.full(num, 3.0)) * BANDWIDTH
    split = rng.uniform(0.2, 0.8, num)
    c_s, c_m = (tau, 1 - tau)
    power_sign = split * MAX_POWER / c_s
    power_modulus = (1 - split) * MAX_POWER / np.where(c_m > 0, c_m, 1) if layout.two_packets else np.zeros(num)
    unit = failure_threshold(bandwidth, power_sign, 1.0, layout.sign_bits, tau * DEADLINE, NOISE)
    if layout.two_packets:
        unit = np.maximum(unit, failure_threshold(bandwidth, power_modulus, 1.0, layout.modulus_bits,
                                                  (1 - tau) * DEADLINE, NOISE))
    gain = unit / rng.uniform(0.3, 1.5, num)
    return Resources(bandwidth, power_sign, power_modulus, tau), Link(gain, NOISE, fading=fading)


def monte_carlo(surrogate, scheme, layout, resources, link, rng, draws: int, num: int) -> tuple[float, float]:
    """Mean and standard error of ``surrogate(delivery)`` over ``draws`` fading draws."""
    fading = rng.exponential(1.0, size=(draws, num, 2))
    if link.fading == "block":
        fading[..., 1] = fading[..., 0]
    delivery = scheme.transmit(layout, resources, link, fading)
    state = np.where(delivery.sign_ok, np.where(delivery.both_ok, 2, 1), 0)  # lost / sign only / both
    codes = state @ (3 ** np.arange(num))
    values = np.zeros(3**num)
    sent = np.ones(num, dtype=bool)
    zeros = np.zeros(num)
    for pattern in itertools.product(range(3), repeat=num):
        pattern = np.array(pattern)
        one = Delivery(sent, sent, pattern >= 1, pattern == 2, zeros, zeros, 0.0,
                       single_packet=not layout.two_packets)
        values[pattern @ (3 ** np.arange(num))] = surrogate(one)
    samples = values[codes]
    assert len(np.unique(codes)) > 10  # many patterns occur: the check is not a trivial one
    return samples.mean(), samples.std(ddof=1) / np.sqrt(draws)


def problem_of(aggregator, uploads, layout, link, normalize, fading, learning_rate, smoothness, descent=None):
    """The allocation problem of this round (budgets as drawn by :func:`draw_resources`)."""
    u_sign, u_modulus = aggregator.packet_worths(uploads, learning_rate, smoothness)
    return AllocationProblem(
        alpha=aggregator.alpha, gain=link.gain, u_sign=u_sign, u_modulus=u_modulus, total_bandwidth=BANDWIDTH,
        max_power=MAX_POWER, noise_psd=NOISE, deadline=DEADLINE, sign_bits=layout.sign_bits,
        modulus_bits=layout.modulus_bits, slot_share=None, power_constraint="energy", fading=fading,
        normalize=normalize, sign_only_counts=aggregator.sign_only_counts, descent=descent)
