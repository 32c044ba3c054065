"""Transmission and aggregation: exact, hand-computed small cases (docs/model.md, "Aggregation")."""

import numpy as np
import pytest
import torch

from spfl.aggregation import Aggregator
from spfl.transmission import Delivery, Link, Resources, get_scheme, quantize_modulus, signs

G = torch.tensor([[1.0, -2.0, 0.0],
                  [-3.0, 1.0, 2.0],
                  [2.0, 2.0, -1.0]])
ALPHA = np.array([0.5, 0.25, 0.25])


def delivery(sign_ok, modulus_ok):
    sign_ok, modulus_ok = np.array(sign_ok, bool), np.array(modulus_ok, bool)
    zeros = np.zeros(len(sign_ok))
    sent = np.ones(len(sign_ok), bool)
    return Delivery(sent, sent, sign_ok, modulus_ok, zeros, zeros, 0.0)


def test_sign_of_zero_is_plus_one():
    assert signs(torch.tensor([0.0, -0.0, -1e-30, 3.0])).tolist() == [1.0, 1.0, -1.0, 1.0]


def test_all_received_is_weighted_fedsgd():
    agg = Aggregator("sign_reuse", ALPHA)
    out = agg.aggregate(G, delivery([1, 1, 1], [1, 1, 1]))
    expected = torch.tensor([0.5 * 1 + 0.25 * -3 + 0.25 * 2, 0.5 * -2 + 0.25 * 1 + 0.25 * 2, 0.25 * 2 - 0.25])
    assert torch.equal(out, expected)


def test_received_mean_compensation_exact():
    agg = Aggregator("sign_reuse", ALPHA)
    # devices 0 and 1 deliver both packets; device 2 only its signs
    out = agg.aggregate(G, delivery([1, 1, 1], [1, 1, 0]))
    c = (0.5 * G[0].abs() + 0.25 * G[1].abs()) / 0.75          # [5/3, 5/3, 2/3]
    row2 = signs(G[2]) * c                                      # [5/3, 5/3, -2/3]
    expected = 0.5 * G[0] + 0.25 * G[1] + 0.25 * row2
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.allclose(agg.modulus, c)
    # next round nobody delivers a modulus: the last c is reused
    out2 = agg.aggregate(G, delivery([0, 1, 0], [0, 0, 0]))
    assert torch.allclose(out2, signs(G[1]) * c)


def test_sign_only_devices_before_any_modulus_use_their_own_norm():
    """No modulus has arrived yet: a sign-only device's signs are scaled by its own ||g_k|| / sqrt(d)."""
    agg = Aggregator("sign_reuse", ALPHA)
    out = agg.aggregate(G, delivery([1, 1, 0], [0, 0, 0]))
    own0, own1 = 5.0**0.5 / 3**0.5, 14.0**0.5 / 3**0.5  # ||(1,-2,0)|| / sqrt 3, ||(-3,1,2)|| / sqrt 3
    expected = (0.5 * signs(G[0]) * own0 + 0.25 * signs(G[1]) * own1) / 0.75
    assert torch.allclose(out, expected, atol=1e-6)
    out = agg.aggregate(G, delivery([1, 1, 1], [0, 0, 1]))  # device 2's modulus is this round's c
    c = G[2].abs()
    assert torch.allclose(out, 0.5 * signs(G[0]) * c + 0.25 * signs(G[1]) * c + 0.25 * G[2])


def test_sign_lost_drops_device_and_nothing_received_means_no_update():
    agg = Aggregator("sign_reuse", ALPHA)
    out = agg.aggregate(G, delivery([0, 1, 1], [1, 1, 1]))  # modulus of 0 without its signs is useless
    assert torch.allclose(out, (0.25 * G[1] + 0.25 * G[2]) / 0.5)
    assert agg.aggregate(G, delivery([0, 0, 0], [1, 1, 1])) is None


def test_normalize_all_divides_by_all_weights():
    agg = Aggregator("full", ALPHA, normalize="all")
    out = agg.aggregate(G, delivery([0, 1, 1], [0, 0, 0]))
    assert torch.allclose(out, 0.25 * G[1] + 0.25 * G[2])


def test_previous_update_compensation():
    agg = Aggregator("sign_reuse", ALPHA, compensation="previous_update")
    first = agg.aggregate(G, delivery([1, 1, 1], [1, 1, 1]))
    out = agg.aggregate(G, delivery([1, 0, 0], [0, 0, 0]))
    assert torch.allclose(out, signs(G[0]) * first.abs())


def test_scalar_compensation_uses_each_devices_l1_scale():
    agg = Aggregator("sign_reuse", ALPHA, compensation="scalar")
    out = agg.aggregate(G, delivery([1, 1, 0], [1, 0, 0]))
    row1 = signs(G[1]) * (6.0 / 3)
    assert torch.allclose(out, (0.5 * G[0] + 0.25 * row1) / 0.75)
    inner, c_sq = agg.sign_importance_terms(G)
    assert inner == pytest.approx([3.0 * 1.0, 6.0 * 2.0, 5.0 * 5 / 3])
    assert c_sq == pytest.approx([3 * 1.0, 3 * 4.0, 3 * (5 / 3) ** 2])


def test_no_reuse_ignores_sign_only_devices():
    agg = Aggregator("no_reuse", ALPHA)
    out = agg.aggregate(G, delivery([1, 1, 1], [1, 0, 0]))
    assert torch.equal(out, G[0])


def test_stale_reuse_of_last_received_gradient():
    agg = Aggregator("stale", ALPHA)
    agg.aggregate(G, delivery([1, 1, 0], [0, 0, 0]))
    newer = G * 10
    out = agg.aggregate(newer, delivery([0, 1, 0], [0, 0, 0]))
    assert torch.allclose(out, (0.5 * G[0] + 0.25 * newer[1]) / 0.75)


def test_signsgd_mean_and_majority():
    mean = Aggregator("signs", ALPHA).aggregate(G, delivery([1, 1, 1], [0, 0, 0]))
    scale = G.abs().mean(dim=1)  # [1, 2, 5/3]
    expected = 0.5 * signs(G[0]) * scale[0] + 0.25 * signs(G[1]) * scale[1] + 0.25 * signs(G[2]) * scale[2]
    assert torch.allclose(mean, expected)
    vote = Aggregator("signs", ALPHA, signsgd_aggregation="majority").aggregate(G, delivery([1, 1, 1], [0, 0, 0]))
    # weighted votes: [0.5-0.25+0.25, -0.5+0.25+0.25 = 0 -> +1, 0.5+0.25-0.25]
    assert torch.allclose(vote, torch.tensor([1.0, 1.0, 1.0]) * float(ALPHA @ scale.numpy()))


def test_modulus_quantizers():
    m = torch.tensor([[0.0, 0.3, 1.2, 3.0]])
    assert torch.equal(quantize_modulus(m, 31), m)
    assert torch.equal(quantize_modulus(m, 15), m.half().float())
    q2 = quantize_modulus(m, 2)  # levels 0, 1, 2, 3 of 3.0 / 3
    assert torch.allclose(q2, torch.tensor([[0.0, 0.0, 1.0, 3.0]]))


def layout(scheme, d, bits=31, compensation="received_mean", deadline=0.1):
    return get_scheme(scheme).layout(d, bits, compensation, deadline)


def test_packet_layouts_count_bits_and_shares():
    d = 1000
    sm = layout("sign_modulus", d)
    assert (sm.sign_bits, sm.modulus_bits) == (1000, 31000)
    assert sm.proportional_share == pytest.approx(1 / 32)
    assert sm.fixed_share("proportional") == pytest.approx(1 / 32) and sm.fixed_share(0.25) == 0.25
    assert sm.fixed_share("optimized") is None
    assert layout("sign_modulus", d, compensation="scalar").sign_bits == 1032
    whole = layout("digital", d)
    assert (whole.sign_bits, whole.modulus_bits, whole.fixed_share("optimized")) == (32000, 0, 1.0)
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
