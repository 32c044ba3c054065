"""Channel physics and the link: closed-form packet errors against direct sampling of the fading, dead and
tiny links, the waterfall model, and one link model shared by transmission and allocation."""

import math
import warnings

import numpy as np
import pytest
from scipy.stats import binom

from core_helpers import outage_threshold
from spfl.simulator.allocation import AllocationProblem
from spfl.simulator.allocation.objective import thresholds as allocation_thresholds
from spfl.simulator.channel import (
    dbm_to_watt,
    draw_fading,
    failure_threshold,
    large_scale_gain,
    packet_error_rate,
    packet_thresholds,
    path_loss_db,
    place_devices,
)
from spfl.simulator.transmission import Link, PacketLayout, Resources, get_scheme

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


@pytest.mark.parametrize("fading", ["per_packet", "block"])
def test_simulator_drop_rate_matches_closed_form(fading):
    """Realized losses of the scheme's transmit() match q (and P(both)) within 99.9 % binomial intervals.

    Under block fading both packets see one draw: P(both) = exp(-max(t_s, t_m)) = min(pi_s, pi_m);
    per packet: P(both) = pi_s pi_m.  The two differ by 0.1-0.3 here, far outside the intervals."""
    rng = np.random.default_rng(7)
    num_devices, rounds = 8, 4000
    distance = place_devices(num_devices, 50.0, 500.0, rng)
    gain = large_scale_gain(distance)
    layout = get_scheme("sign_modulus").layout(4810, 31, "received_mean", 0.8)
    resources = Resources(np.full(num_devices, 1.5e4), np.full(num_devices, 0.4), np.full(num_devices, 0.15),
                          np.full(num_devices, 1 / 32))
    link = Link(gain, NOISE, fading=fading)
    lost_sign = np.zeros(num_devices, dtype=int)
    lost_modulus = np.zeros(num_devices, dtype=int)
    both = np.zeros(num_devices, dtype=int)
    for _ in range(rounds):
        d = get_scheme("sign_modulus").transmit(layout, resources, link, draw_fading(rng, num_devices, fading))
        lost_sign += ~d.sign_ok
        lost_modulus += ~d.modulus_ok
        both += d.both_ok
    pi_s, pi_m = 1 - d.q_sign, 1 - d.q_modulus
    p_both = np.minimum(pi_s, pi_m) if fading == "block" else pi_s * pi_m
    for count, p in ((lost_sign, d.q_sign), (lost_modulus, d.q_modulus), (both, p_both)):
        for k in range(num_devices):
            lo, hi = binomial_interval(rounds, float(p[k]))
            assert lo <= count[k] <= hi, (k, count[k], p[k] * rounds)
    assert 0.02 < d.q_modulus.mean() < 0.98  # the check above is not vacuous
    assert np.abs(np.minimum(pi_s, pi_m) - pi_s * pi_m).max() > 0.1  # and tells the two models apart


def test_block_fading_shares_one_draw_per_device_and_per_packet_does_not():
    block = draw_fading(np.random.default_rng(3), 5, "block")
    independent = draw_fading(np.random.default_rng(3), 5, "per_packet")
    assert np.array_equal(block[:, 0], block[:, 1])
    assert np.array_equal(block[:, 0], independent[:, 0])  # same stream: common random numbers
    assert not np.array_equal(independent[:, 0], independent[:, 1])
    with pytest.raises(ValueError, match="fading"):
        draw_fading(np.random.default_rng(3), 5, "rician")


# --- edges: dead and tiny links, defaults, huge numbers, one link model ------------------------------------

def test_waterfall_links_without_bandwidth_or_time_are_dead():
    """The waterfall threshold m B N0 / (p lambda) does not involve the slot and is 0 at B = 0; a packet with
    no bandwidth or no time is still always lost (threshold +inf), not always received."""
    assert failure_threshold(0.0, 0.1, 1e-10, 1e4, 0.05, NOISE, "waterfall") == np.inf
    assert failure_threshold(1e6, 0.1, 1e-10, 1e4, 0.0, NOISE, "waterfall") == np.inf
    assert failure_threshold(1e6, 0.1, 1e-10, 1e4, 0.05, NOISE, "waterfall") == pytest.approx(1e6 * NOISE / 1e-11)


def test_integer_arguments_are_real_numbers_however_large():
    """Settings may arrive as Python integers (``total_bandwidth_mhz: 5``); each argument is taken as a real
    number, also beyond 64-bit integers (where numpy would otherwise keep an object array)."""
    big = [10**20, 10**20]  # lists: numpy keeps integers beyond int64 as Python objects
    spectral_efficiency = 1e20 / (1e20 * 1e20)
    expected = 1e20 * NOISE * math.expm1(spectral_efficiency * math.log(2.0)) / (1e20 * 1e20)
    assert failure_threshold(big, big, big, big, big, NOISE) == pytest.approx([expected, expected], rel=1e-12)
    assert path_loss_db(big) == pytest.approx([128.1 + 37.6 * 17.0] * 2, rel=1e-12)  # log10(1e20 m / 1 km) = 17


@pytest.mark.parametrize("modulus_bits", [31_000.0, 0.0])
@pytest.mark.parametrize("per_model", ["outage", "waterfall"])
def test_transmission_and_allocation_share_one_link_model(modulus_bits, per_model):
    """The simulator's Link and the allocation's objective give the same thresholds bit for bit, for one
    round and for a batch of candidate allocations (a leading axis, as the solver evaluates them): the
    sign packet over tau T, the modulus packet over (1 - tau) T, a single packet with t_m = inf."""
    gain, deadline = np.array([1e-11, 4e-12, 2e-13]), 0.1
    link = Link(gain, NOISE, per_model=per_model, waterfall_m=2.0)
    layout = PacketLayout(1000.0, modulus_bits, deadline)
    problem = AllocationProblem(alpha=np.ones(3), gain=gain, u_sign=np.ones(3), u_modulus=np.ones(3),
                                total_bandwidth=3e5, max_power=0.2, noise_psd=NOISE, deadline=deadline,
                                sign_bits=1000.0, modulus_bits=modulus_bits, slot_share=None, per_model=per_model,
                                waterfall_m=2.0)
    bandwidth = np.array([[1e5, 1e5, 1e5], [2e5, 0.0, 1e5]])
    power_sign, power_modulus = np.array([0.1, 0.2, 0.05]), np.array([0.05, 0.2, 0.0])
    tau = np.array([1 / 32, 0.5, 1.0]) if modulus_bits else np.ones(3)
    batch = allocation_thresholds(problem, bandwidth, power_sign, power_modulus, tau)
    rounds = [link.thresholds(layout, Resources(b, power_sign, power_modulus, tau)) for b in bandwidth]
    direct = packet_thresholds(bandwidth, power_sign, power_modulus, tau, gain=gain, sign_bits=1000.0,
                               modulus_bits=modulus_bits, deadline=deadline, noise_psd=NOISE, per_model=per_model,
                               waterfall_m=2.0)
    for packet in range(2):
        assert np.array_equal(batch[packet], np.stack([r[packet] for r in rounds]))
        assert np.array_equal(batch[packet], direct[packet])
    t_s, t_m = batch
    assert t_s.shape == t_m.shape == (2, 3) and np.isinf(t_s[1, 1])  # no bandwidth: always lost
    expected_sign = failure_threshold(1e5, 0.1, gain[0], 1000.0, tau[0] * deadline, NOISE, per_model, 2.0)
    assert t_s[0, 0] == expected_sign
    if modulus_bits:
        assert np.isinf(t_m[0, 2]) and t_m[0, 0] == failure_threshold(
            1e5, 0.05, gain[0], modulus_bits, (1 - tau[0]) * deadline, NOISE, per_model, 2.0)
    else:
        assert np.isinf(t_m).all()


def test_links_without_bandwidth_power_or_time_fail_silently_and_tiny_ones_do_not():
    """No (or negative) bandwidth, power or slot is a dead link (threshold inf), computed without numpy
    warnings; a link of 0.5 Hz still carries a 1-bit packet over 10 s."""
    noise = dbm_to_watt(-174.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for bandwidth, power, slot in [(0.0, 0.2, 0.1), (-1e5, 0.2, 0.1), (1e5, 0.0, 0.1), (1e5, -0.2, 0.1),
                                       (1e5, 0.2, 0.0), (1e5, 0.2, -0.1)]:
            assert failure_threshold(bandwidth, power, 1e-10, 1e4, slot, noise) == math.inf, (bandwidth, power, slot)
        huge = failure_threshold(1e3, 0.2, 1e-10, 1e9, 1e-3, noise)
    assert huge == math.inf
    tiny = failure_threshold(0.5, 0.2, 1e-10, 1.0, 10.0, noise)
    assert tiny == pytest.approx(outage_threshold(0.5, 0.2, 1e-10, 1.0, 10.0, noise), rel=1e-12)


def test_waterfall_threshold_defaults_to_m_equal_one():
    noise = dbm_to_watt(-174.0)
    expected = 2e5 * noise / (0.1 * 1e-11)  # m B N0 / (p lambda) with m = 1
    assert failure_threshold(2e5, 0.1, 1e-11, 5e4, 0.1, noise, "waterfall") == pytest.approx(expected, rel=1e-12)
    assert packet_error_rate(2e5, 0.1, 1e-11, 5e4, 0.1, noise, "waterfall") == pytest.approx(
        -math.expm1(-expected), rel=1e-12)


def test_fading_draws_default_to_one_block_per_device():
    draws = draw_fading(np.random.default_rng(5), 7)
    assert draws.shape == (7, 2)
    assert np.array_equal(draws[:, 0], draws[:, 1])


@pytest.mark.parametrize("m", [1.0, 3.0])
def test_the_simulators_link_applies_the_waterfall_threshold_to_both_packets(m):
    from spfl.simulator.transmission import PacketLayout, Resources

    noise, gains = dbm_to_watt(-174.0), np.array([1e-11, 4e-12])
    link = Link(gains, noise, per_model="waterfall", waterfall_m=m)
    resources = Resources(np.array([1e5, 2e5]), np.array([0.1, 0.2]), np.array([0.05, 0.2]), np.array([0.25, 0.5]))
    t_s, t_m = link.thresholds(PacketLayout(1000.0, 31000.0, 0.1), resources)
    assert t_s.tolist() == pytest.approx([m * b * noise / (p * g) for b, p, g in zip([1e5, 2e5], [0.1, 0.2], gains)])
    assert t_m.tolist() == pytest.approx([m * b * noise / (p * g) for b, p, g in zip([1e5, 2e5], [0.05, 0.2], gains)])
