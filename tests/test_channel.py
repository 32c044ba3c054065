"""Channel physics: closed-form packet errors against direct sampling of the fading."""

import numpy as np
import pytest
from scipy.stats import binom

from spfl.channel import (
    dbm_to_watt,
    draw_fading,
    failure_threshold,
    large_scale_gain,
    packet_error_rate,
    path_loss_db,
    place_devices,
)
from spfl.transmission import packet_layout, transmit

NOISE = dbm_to_watt(-174.0)


def binomial_interval(n: int, p: float, level: float = 0.999) -> tuple[int, int]:
    lo, hi = binom.interval(level, n, p)
    return int(lo), int(hi)


def test_path_loss_and_units():
    assert path_loss_db(1000.0) == pytest.approx(128.1)
    assert path_loss_db(100.0) == pytest.approx(128.1 - 37.6)
    assert large_scale_gain(1000.0) == pytest.approx(10 ** -12.81)
    assert dbm_to_watt(23.0) == pytest.approx(0.19953, rel=1e-4)
    assert NOISE == pytest.approx(3.981e-21, rel=1e-3)


def test_devices_uniform_by_area():
    rng = np.random.default_rng(0)
    r = place_devices(200_000, 50.0, 500.0, rng)
    assert r.min() >= 50.0 and r.max() <= 500.0
    # P(r <= 275) = (275^2 - 50^2) / (500^2 - 50^2) for a uniform-by-area drop
    expected = (275**2 - 50**2) / (500**2 - 50**2)
    n = len(r)
    lo, hi = binomial_interval(n, expected)
    assert lo <= (r <= 275.0).sum() <= hi


@pytest.mark.parametrize("bandwidth, power_dbm, distance, bits, target_q", [
    (5e4, 23.0, 450.0, 4810 * 32, 0.3),
    (1e6, 10.0, 300.0, 878_538, 0.05),
    (2e5, 23.0, 100.0, 4810 * 31, 0.8),
])
def test_outage_closed_form_equals_sampled_rate_outage(bandwidth, power_dbm, distance, bits, target_q):
    """q = P(B log2(1 + p lambda |h|^2 / (B N0)) < bits / slot), with |h|^2 sampled directly."""
    power, gain = dbm_to_watt(power_dbm), large_scale_gain(distance)
    snr = power * gain / (bandwidth * NOISE)
    slot = bits / (bandwidth * np.log2(1 + -np.log1p(-target_q) * snr))  # puts q near target_q
    q = float(packet_error_rate(bandwidth, power, gain, bits, slot, NOISE))
    assert q == pytest.approx(target_q, rel=1e-6)
    h2 = np.random.default_rng(1).exponential(size=400_000)
    rate = bandwidth * np.log2(1.0 + power * gain * h2 / (bandwidth * NOISE))
    outages = int((rate < bits / slot).sum())
    lo, hi = binomial_interval(len(h2), q)
    assert lo <= outages <= hi


def test_waterfall_model_and_dead_links():
    q = packet_error_rate(1e5, 0.1, 1e-12, 1e4, 0.01, NOISE, per_model="waterfall", waterfall_m=2.0)
    assert q == pytest.approx(1 - np.exp(-2.0 * 1e5 * NOISE / (0.1 * 1e-12)))
    dead = failure_threshold(np.array([0.0, 1e5, 1e5]), np.array([0.1, 0.0, 0.1]), 1e-12, 1e4,
                             np.array([0.01, 0.01, 0.0]), NOISE)
    assert np.all(np.isinf(dead))
    with pytest.raises(ValueError, match="per_model"):
        failure_threshold(1e5, 0.1, 1e-12, 1e4, 0.01, NOISE, per_model="awgn")


def test_huge_payload_saturates_without_overflow():
    with np.errstate(all="raise"):
        q = packet_error_rate(1e3, 0.1, 1e-13, 1e9, 1e-3, NOISE)
    assert q == 1.0


def test_simulator_drop_rate_matches_closed_form():
    """The realized losses of the simulator's transmit() match q within a 99.9 % binomial interval."""
    rng = np.random.default_rng(7)
    num_devices, rounds = 8, 4000
    distance = place_devices(num_devices, 50.0, 500.0, rng)
    gain = large_scale_gain(distance)
    layout = packet_layout("sign_modulus", 4810, 31, "received_mean", 0.8, None)
    bandwidth = np.full(num_devices, 2.5e4)
    power_sign = np.full(num_devices, 0.4)
    power_modulus = np.full(num_devices, 0.15)
    lost_sign = np.zeros(num_devices, dtype=int)
    lost_modulus = np.zeros(num_devices, dtype=int)
    for _ in range(rounds):
        d = transmit(layout, bandwidth, power_sign, power_modulus, gain, draw_fading(rng, num_devices, 2),
                     NOISE, "outage", 1.0)
        lost_sign += ~d.sign_ok
        lost_modulus += ~d.modulus_ok
    for lost, q in ((lost_sign, d.q_sign), (lost_modulus, d.q_modulus)):
        for k in range(num_devices):
            lo, hi = binomial_interval(rounds, float(q[k]))
            assert lo <= lost[k] <= hi, (k, lost[k], q[k] * rounds)
    assert 0.02 < d.q_modulus.mean() < 0.98  # the check above is not vacuous
