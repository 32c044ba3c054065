"""What a device sends and what the PS reads of it: signs, b-bit modulus quantizers, packet layouts, which
packets are sent and arrive, the probability that both arrive, and the scheme's decoding of a payload."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from spfl.simulator.kernels import Workspace
from spfl.simulator.transmission import Link, Resources, get_scheme, quantize_modulus, signs

G = torch.tensor([[1.0, -2.0, 0.0],
                  [-3.0, 1.0, 2.0],
                  [2.0, 2.0, -1.0]])


# --- signs and moduli --------------------------------------------------------------------------------

def test_sign_of_zero_is_plus_one():
    assert signs(torch.tensor([0.0, -0.0, -1e-30, 3.0])).tolist() == [1.0, 1.0, -1.0, 1.0]


def test_signs_keep_the_dtype_and_map_zero_to_plus_one():
    for dtype in (torch.float32, torch.float64):
        s = signs(torch.tensor([-2.0, 0.0, 3.0, -0.0], dtype=dtype))
        assert s.dtype == dtype
        assert s.tolist() == [-1.0, 1.0, 1.0, 1.0]


def test_modulus_quantizers():
    m = torch.tensor([[0.0, 0.3, 1.2, 3.0]])
    assert torch.equal(quantize_modulus(m, 31), m)
    assert torch.equal(quantize_modulus(m, 15), m.half().float())
    q2 = quantize_modulus(m, 2)  # levels 0, 1, 2, 3 of 3.0 / 3
    assert torch.allclose(q2, torch.tensor([[0.0, 0.0, 1.0, 3.0]]))


def test_quantizer_is_exact_at_31_bits_keeps_the_dtype_and_leaves_zero_rows_zero():
    m = torch.tensor([[0.3, 0.7, 1e-3, 0.123456789], [0.0, 0.0, 0.0, 0.0], [0.2, 0.4, 0.6, 0.8]])
    assert torch.equal(quantize_modulus(m, 31), m)
    half = quantize_modulus(m, 15)
    assert half.dtype == m.dtype
    assert torch.equal(half, torch.from_numpy(m.numpy().astype(np.float16).astype(np.float32)))
    four = quantize_modulus(m, 4)
    assert torch.equal(four[1], torch.zeros(4))
    # rows whose maximum is below 1 are scaled by their maximum: 0.8 / 15 per level
    assert four[2].tolist() == pytest.approx([round(x / 0.8 * 15) / 15 * 0.8 for x in (0.2, 0.4, 0.6, 0.8)], abs=1e-7)


def test_31_bit_moduli_are_the_float32_magnitudes_bit_for_bit():
    """A uniform quantizer with 2^31 - 1 levels is close but not exact in float32 (about 0.3 % of entries
    move by an ulp): 31 bits must bypass it."""
    m = torch.rand(20, 4810, generator=torch.Generator().manual_seed(3))
    assert torch.equal(quantize_modulus(m, 31), m)
    assert torch.equal(quantize_modulus(m.double(), 31), m.double())


def test_quantized_moduli_keep_the_uploads_dtype():
    """float16 moduli (15 bits) come back in the uploads' dtype, rounded to float16's nearest value."""
    m = torch.tensor([[1.0, 1.0 + 2.0**-12, 70000.0]], dtype=torch.float64)
    back = quantize_modulus(m, 15)
    assert back.dtype == torch.float64
    assert back.tolist() == [[1.0, 1.0, 65504.0]]  # 1 + 2^-12 is below float16's resolution; 65504 its max


@pytest.mark.parametrize("scheme", ["error_free", "digital", "sign_only", "sign_modulus"])
@pytest.mark.parametrize("bits", [31, 15, 7])
def test_the_scheme_decodes_the_payload(scheme, bits):
    """What the PS reads: whole gradients with b-bit magnitudes (exact at 31), each device's signs alone,
    and the 32-bit scale ||g_k||_1 / d a sign packet carries."""
    payload = get_scheme(scheme).decode(G, bits)
    gradients = G if bits == 31 else signs(G) * quantize_modulus(G.abs(), bits)
    assert torch.equal(payload.gradients, gradients) and (bits != 31 or payload.gradients is G)
    assert all(torch.equal(payload.signs(k), signs(G[k])) for k in range(3))
    assert torch.equal(payload.scaled_signs(2, torch.tensor(0.5)), signs(G[2]) * 0.5)
    assert torch.equal(payload.scales(Workspace()), torch.tensor([[1.0], [2.0], [5 / 3]]))


# --- packets: layouts, sending, arrival ----------------------------------------------------------------

def layout(scheme, d, bits=31, compensation="received_mean", deadline=0.1):
    return get_scheme(scheme).layout(d, bits, compensation, deadline)


def test_packet_layouts_count_bits_and_shares():
    d = 1000
    sm = layout("sign_modulus", d)
    assert (sm.sign_bits, sm.modulus_bits) == (1000, 31000)
    assert sm.proportional_share == pytest.approx(1 / 32)
    assert sm.share_for_setting("proportional") == pytest.approx(1 / 32) and sm.share_for_setting(0.25) == 0.25
    assert sm.share_for_setting("optimized") is None
    assert layout("sign_modulus", d, compensation="scalar").sign_bits == 1032
    whole = layout("digital", d)
    assert (whole.sign_bits, whole.modulus_bits, whole.share_for_setting("optimized")) == (32000, 0, 1.0)
    assert layout("sign_only", d).sign_bits == 1032
    assert layout("sign_modulus", d, bits=7).modulus_bits == 7032  # 7 d bits + the 32-bit quantizer range
    assert layout("sign_modulus", d, bits=15).modulus_bits == 15000  # float16: no header


def test_transmit_error_free_and_silent_devices():
    link = Link(np.ones(2), 1e-20)
    none = Resources(np.zeros(2), np.zeros(2), np.zeros(2), np.ones(2))
    d = get_scheme("error_free").transmit(layout("error_free", 10), none, link, np.zeros((2, 2)))
    assert d.sign_ok.all() and d.both_ok.all() and d.uplink_bits == 640
    sm = layout("sign_modulus", 10)
    resources = Resources(np.array([0.0, 1e6]), np.array([1.0, 1.0]), np.array([1.0, 0.0]), np.full(2, 1 / 32))
    d = get_scheme("sign_modulus").transmit(sm, resources, link, np.full((2, 2), 5.0))
    assert d.sent_sign.tolist() == [False, True] and d.sent_modulus.tolist() == [False, False]
    assert d.sign_ok.tolist() == [False, True] and d.uplink_bits == 10
    assert d.both_ok.tolist() == [False, False]  # a sign without its modulus is not a full gradient


def test_transmit_per_device_slot_share():
    """tau_k splits the deadline: a sign packet with all of it (tau = 1) needs the lowest SNR."""
    link = Link(np.full(3, 1e-10), 4e-21)
    sm = layout("sign_modulus", 4000, deadline=0.01)
    resources = Resources(np.full(3, 1e5), np.full(3, 0.2), np.full(3, 0.2), np.array([1 / 32, 0.5, 1.0]))
    t_s, t_m = link.thresholds(sm, resources)
    assert t_s[0] > t_s[1] > t_s[2] and t_m[2] == np.inf
    expected = 1e5 * 4e-21 * (2 ** (4000 / (1e5 * 0.5 * 0.01)) - 1) / (0.2 * 1e-10)
    assert t_s[1] == pytest.approx(expected, rel=1e-12)


def test_bad_link_or_scheme_names_the_value_and_the_allowed_ones():
    with pytest.raises(ValueError) as bad_model:
        Link(np.ones(2), 1e-20, per_model="awgn")
    assert str(bad_model.value) == "per_model='awgn': allowed ('outage', 'waterfall')"
    with pytest.raises(ValueError) as bad_fading:
        Link(np.ones(2), 1e-20, fading="rician")
    assert str(bad_fading.value) == "fading='rician': allowed ('block', 'per_packet')"
    with pytest.raises(ValueError) as bad_scheme:
        get_scheme("analog")
    assert str(bad_scheme.value) == "scheme 'analog': allowed error_free, digital, sign_only, sign_modulus"


def test_transmit_keeps_a_leading_axis_of_rounds():
    """fading of shape (R, K, 2) gives packet outcomes of shape (R, K) for every scheme, the error-free one
    too (the error probabilities depend on the resources only)."""
    link = Link(np.ones(2), 1e-20)
    fading = np.full((3, 2, 2), 5.0)
    resources = Resources(np.full(2, 1e6), np.ones(2), np.ones(2), np.full(2, 1 / 32))
    for name in ("error_free", "sign_modulus"):
        d = get_scheme(name).transmit(layout(name, 10), resources, link, fading)
        assert d.sign_ok.shape == d.modulus_ok.shape == d.both_ok.shape == (3, 2), name
        assert d.sign_ok.all(), name
    d = get_scheme("error_free").transmit(layout("error_free", 10), resources, link, fading)
    assert d.q_sign.shape == d.q_modulus.shape == (3, 2) and not d.q_sign.any()


def test_a_device_sends_when_it_has_any_bandwidth_and_power():
    """A sign packet is sent with any positive bandwidth (here 0.5 Hz, a 1-bit packet over 100 s) and
    positive power; with zero power nothing is sent and no bit is counted, whatever its bandwidth."""
    link = Link(np.ones(2), 1e-20)
    single = layout("sign_only", 1, deadline=100.0)  # 1 + 32 bits (the scale)
    resources = Resources(np.array([0.5, 1e6]), np.array([1.0, 0.0]), np.zeros(2), np.ones(2))
    d = get_scheme("sign_only").transmit(single, resources, link, np.full((2, 2), 5.0))
    assert d.sent_sign.tolist() == [True, False] and d.uplink_bits == single.sign_bits
    assert d.sign_ok.tolist() == [True, False]  # 33 bits / (0.5 Hz * 100 s): 0.66 bit/s/Hz, SNR 1e20 * 5


def test_a_packet_whose_fading_equals_its_threshold_arrives():
    """Lost only when |h|^2 falls *below* the threshold (the rate then falls below bits / slot); at equality
    the rate is exactly enough."""
    link = Link(np.full(2, 1e-10), 4e-21)
    sm = layout("sign_modulus", 4000, deadline=0.01)
    resources = Resources(np.full(2, 1e5), np.full(2, 0.2), np.full(2, 0.2), np.full(2, 0.5))
    t_s, t_m = link.thresholds(sm, resources)
    d = get_scheme("sign_modulus").transmit(sm, resources, link, np.stack([t_s, t_m], axis=-1))
    assert d.sign_ok.all() and d.modulus_ok.all()
    below = np.stack([np.nextafter(t_s, 0), np.nextafter(t_m, 0)], axis=-1)
    d = get_scheme("sign_modulus").transmit(sm, resources, link, below)
    assert not d.sign_ok.any() and not d.modulus_ok.any()


@pytest.mark.parametrize("fading", ["block", "per_packet"])
def test_probability_that_both_packets_arrive(fading):
    """P(both): exp(-max) under block fading (the weaker packet decides), exp(-t_s - t_m) per packet;
    a dead packet (inf) makes it impossible; P(sign) = exp(-t_s) either way."""
    from spfl.simulator.allocation.objective import arrival_probabilities

    problem = SimpleNamespace(fading=fading)
    t_s, t_m = np.array([0.1, 0.5, 0.2]), np.array([0.3, 0.5, np.inf])
    joint = [max(a, b) for a, b in zip(t_s, t_m)] if fading == "block" else [a + b for a, b in zip(t_s, t_m)]
    pi_sign, pi_both = arrival_probabilities(problem, t_s, t_m)
    assert pi_both.tolist() == pytest.approx([math.exp(-j) for j in joint], rel=1e-12)
    assert pi_sign.tolist() == pytest.approx([math.exp(-a) for a in t_s], rel=1e-12)
