"""Transmission and aggregation rules: exact, hand-computed small cases (docs/model.md, "Aggregation")."""

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

from spfl.configuration import methods
from spfl.simulator import aggregation
from spfl.simulator.aggregation import RULES, Full, NoReuse, Rule, SignReuse, Signs, Stale, get_rule, register
from spfl.simulator.kernels import Workspace
from spfl.simulator.transmission import Delivery, Link, Payload, Resources, get_scheme, quantize_modulus, signs

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
    agg = SignReuse(ALPHA)
    out = agg.aggregate(Payload(G), delivery([1, 1, 1], [1, 1, 1]))
    expected = torch.tensor([0.5 * 1 + 0.25 * -3 + 0.25 * 2, 0.5 * -2 + 0.25 * 1 + 0.25 * 2, 0.25 * 2 - 0.25])
    assert torch.equal(out, expected)


def test_received_mean_compensation_exact():
    agg = SignReuse(ALPHA)
    # devices 0 and 1 deliver both packets; device 2 only its signs
    out = agg.aggregate(Payload(G), delivery([1, 1, 1], [1, 1, 0]))
    c = (0.5 * G[0].abs() + 0.25 * G[1].abs()) / 0.75          # [5/3, 5/3, 2/3]
    row2 = signs(G[2]) * c                                      # [5/3, 5/3, -2/3]
    expected = 0.5 * G[0] + 0.25 * G[1] + 0.25 * row2
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.allclose(agg.modulus, c)
    # next round nobody delivers a modulus: the last c is reused
    out2 = agg.aggregate(Payload(G), delivery([0, 1, 0], [0, 0, 0]))
    assert torch.allclose(out2, signs(G[1]) * c)


def test_sign_only_devices_before_any_modulus_use_their_own_norm():
    """No modulus has arrived yet: a sign-only device's signs are scaled by its own ||g_k|| / sqrt(d)."""
    agg = SignReuse(ALPHA)
    out = agg.aggregate(Payload(G), delivery([1, 1, 0], [0, 0, 0]))
    own0, own1 = 5.0**0.5 / 3**0.5, 14.0**0.5 / 3**0.5  # ||(1,-2,0)|| / sqrt 3, ||(-3,1,2)|| / sqrt 3
    expected = (0.5 * signs(G[0]) * own0 + 0.25 * signs(G[1]) * own1) / 0.75
    assert torch.allclose(out, expected, atol=1e-6)
    out = agg.aggregate(Payload(G), delivery([1, 1, 1], [0, 0, 1]))  # device 2's modulus is this round's c
    c = G[2].abs()
    assert torch.allclose(out, 0.5 * signs(G[0]) * c + 0.25 * signs(G[1]) * c + 0.25 * G[2])


def test_sign_lost_drops_device_and_nothing_received_means_no_update():
    agg = SignReuse(ALPHA)
    out = agg.aggregate(Payload(G), delivery([0, 1, 1], [1, 1, 1]))  # modulus of 0 without its signs is useless
    assert torch.allclose(out, (0.25 * G[1] + 0.25 * G[2]) / 0.5)
    assert agg.aggregate(Payload(G), delivery([0, 0, 0], [1, 1, 1])) is None


def test_normalize_all_divides_by_all_weights():
    agg = Full(ALPHA, normalize="all")
    out = agg.aggregate(Payload(G), delivery([0, 1, 1], [0, 0, 0]))
    assert torch.allclose(out, 0.25 * G[1] + 0.25 * G[2])


def test_previous_update_compensation():
    agg = SignReuse(ALPHA, compensation="previous_update")
    first = agg.aggregate(Payload(G), delivery([1, 1, 1], [1, 1, 1]))
    out = agg.aggregate(Payload(G), delivery([1, 0, 0], [0, 0, 0]))
    assert torch.allclose(out, signs(G[0]) * first.abs())


def test_scalar_compensation_uses_each_devices_l1_scale():
    agg = SignReuse(ALPHA, compensation="scalar")
    out = agg.aggregate(Payload(G), delivery([1, 1, 0], [1, 0, 0]))
    row1 = signs(G[1]) * (6.0 / 3)
    assert torch.allclose(out, (0.5 * G[0] + 0.25 * row1) / 0.75)
    inner, c_sq = agg.sign_importance_terms(G)
    assert inner == pytest.approx([3.0 * 1.0, 6.0 * 2.0, 5.0 * 5 / 3])
    assert c_sq == pytest.approx([3 * 1.0, 3 * 4.0, 3 * (5 / 3) ** 2])


def test_no_reuse_ignores_sign_only_devices():
    agg = NoReuse(ALPHA)
    out = agg.aggregate(Payload(G), delivery([1, 1, 1], [1, 0, 0]))
    assert torch.equal(out, G[0])


def test_stale_reuse_of_last_received_gradient():
    agg = Stale(ALPHA)
    agg.aggregate(Payload(G), delivery([1, 1, 0], [0, 0, 0]))
    newer = G * 10
    out = agg.aggregate(Payload(newer), delivery([0, 1, 0], [0, 0, 0]))
    assert torch.allclose(out, (0.5 * G[0] + 0.25 * newer[1]) / 0.75)


def test_signsgd_mean_and_majority():
    mean = Signs(ALPHA).aggregate(Payload(G), delivery([1, 1, 1], [0, 0, 0]))
    scale = G.abs().mean(dim=1)  # [1, 2, 5/3]
    expected = 0.5 * signs(G[0]) * scale[0] + 0.25 * signs(G[1]) * scale[1] + 0.25 * signs(G[2]) * scale[2]
    assert torch.allclose(mean, expected)
    vote = Signs(ALPHA, signsgd_aggregation="majority").aggregate(Payload(G), delivery([1, 1, 1], [0, 0, 0]))
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


# -- the work-buffer implementation against the arithmetic written plainly -------------------------------
# The rules compute their per-device terms and rows in a reused workspace (spfl.simulator.kernels).  Two
# references, over several rounds so that a buffer reused across rounds or calls would show:
# (a) the plain torch expressions of the same arithmetic (fresh tensors), which must agree bit for bit;
# (b) numpy float64 sums in another order, which must agree to 1e-12 relative (float64 terms) or to
#     float32 rounding (the aggregate, a float32 product).
ETA, SMOOTH = 0.05, 10.0
CASES = [("full", "received_mean", 31), ("stale", "received_mean", 31), ("no_reuse", "received_mean", 31),
         ("signs", "received_mean", 31), ("sign_reuse", "received_mean", 31), ("sign_reuse", "received_mean", 15),
         ("sign_reuse", "previous_update", 31), ("sign_reuse", "scalar", 31), ("stale", "received_mean", 7)]


def _plain_terms(rule, compensation, uploads, c):
    """(||g||^2, <|g|, c>, ||c||^2) per device as plain torch expressions on fresh tensors."""
    squared = uploads.double().square().sum(dim=1)
    d = uploads.shape[1]
    if rule == "signs" or (rule == "sign_reuse" and compensation == "scalar"):
        l1 = uploads.abs().double().sum(dim=1)
        return squared, l1 * (l1 / d), (l1 / d) ** 2 * d
    if c is None:
        norm = uploads.double().abs().square().sum(dim=1).sqrt()
        return squared, uploads.double().abs().sum(dim=1) * norm / d**0.5, norm.square()
    return squared, uploads.abs().double() @ c.double(), c.double().square().sum().expand(len(uploads))


def _plain_rows(agg, uploads, bits, deliv, c_before):
    """The sign_reuse matrix X of one round, as torch.where over fresh tensors."""
    decoded = uploads if bits >= 31 else signs(uploads) * quantize_modulus(uploads.abs(), bits)
    both, sign_only = deliv.both_ok, deliv.sign_ok & ~deliv.both_ok
    if agg.compensation == "scalar":
        scale = uploads.abs().mean(dim=1, keepdim=True)
    else:
        c = c_before
        if agg.compensation == "received_mean" and both.any():
            w = torch.as_tensor(ALPHA_K[both] / ALPHA_K[both].sum(), dtype=uploads.dtype)
            c = w @ decoded[torch.from_numpy(np.flatnonzero(both))].abs()
        scale = uploads.norm(dim=1, keepdim=True) / uploads.shape[1] ** 0.5 if c is None else c
    return torch.where(torch.from_numpy(sign_only).unsqueeze(1), signs(uploads) * scale, decoded)


def _numpy_worths(rule, compensation, g, c):
    """(U_s, U_m) from numpy float64 (pairwise sums in another order than torch's)."""
    g = g.astype(np.float64)
    d, quadratic = g.shape[1], SMOOTH * ETA**2 / 2
    u_modulus = (ETA - quadratic) * np.einsum("kd,kd->k", g, g)
    if rule in ("full", "stale"):
        return u_modulus, u_modulus
    if rule == "no_reuse":
        return np.zeros_like(u_modulus), u_modulus
    if rule == "signs" or compensation == "scalar":
        scale = np.abs(g).sum(axis=1, keepdims=True) / d * np.ones_like(g)
    elif c is None:
        scale = np.sqrt(np.einsum("kd,kd->k", g, g))[:, None] / np.sqrt(d) * np.ones_like(g)
    else:
        scale = np.broadcast_to(c.astype(np.float64), g.shape)
    u_sign = ETA * np.einsum("kd,kd->k", np.abs(g), scale) - quadratic * np.einsum("kd,kd->k", scale, scale)
    return (u_sign, u_sign) if rule == "signs" else (u_sign, u_modulus)


ALPHA_K = np.array([0.3, 0.1, 0.2, 0.15, 0.05, 0.2])


@pytest.mark.parametrize("rule, compensation, bits", CASES, ids=[f"{r}-{c}-{b}" for r, c, b in CASES])
def test_work_buffers_match_plain_and_float64_references(rule, compensation, bits):
    gen = torch.Generator().manual_seed(3)
    rng = np.random.default_rng(3)
    agg = get_rule(rule)(ALPHA_K, compensation=compensation)
    num, d = len(ALPHA_K), 1031
    patterns = [([1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0]),   # signs only, before any modulus
                ([1, 0, 1, 1, 0, 1], [1, 0, 0, 1, 0, 0]),   # some moduli, some signs only
                ([1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0]),   # signs only, the last modulus reused
                ([0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]),   # nothing
                ([1, 1, 0, 1, 1, 1], [1, 1, 0, 1, 1, 1])]   # everything that was sent arrives
    stale_rows = np.zeros((num, d))
    for sign_ok, modulus_ok in patterns:
        uploads = torch.randn(num, d, generator=gen) * torch.from_numpy(rng.uniform(0.01, 3.0, (num, 1))).float()
        uploads[:, :7] = 0.0
        uploads[:, 7:11] = -0.0  # sign(-0) = +1: the rows must keep it
        c_before = agg.current_modulus() if rule == "sign_reuse" else None
        c_before = None if c_before is None else c_before.clone()
        u_sign, u_modulus = agg.packet_worths(uploads, ETA, SMOOTH)
        # (a) bit for bit against the plain expressions
        squared, inner, c_sq = _plain_terms(rule, compensation, uploads, c_before)
        quadratic = SMOOTH * ETA**2 / 2
        plain_modulus = (ETA - quadratic) * squared.numpy()
        assert np.array_equal(u_modulus, plain_modulus if rule != "signs" else
                              ETA * inner.numpy() - quadratic * c_sq.numpy())
        if rule in ("sign_reuse", "signs"):
            assert np.array_equal(u_sign, ETA * inner.numpy() - quadratic * c_sq.numpy())
            if rule == "sign_reuse":
                inner_now, c_sq_now = agg.sign_importance_terms(uploads)
                assert np.array_equal(inner_now, inner.numpy()) and np.array_equal(c_sq_now, c_sq.numpy())
        # (b) against numpy float64
        ref_sign, ref_modulus = _numpy_worths(rule, compensation, uploads.numpy(),
                                              None if c_before is None else c_before.numpy())
        assert np.allclose(u_sign, ref_sign, rtol=1e-12, atol=1e-12 * np.abs(ref_sign).max())
        assert np.allclose(u_modulus, ref_modulus, rtol=1e-12, atol=0)
        deliv = delivery(sign_ok, modulus_ok)
        expected_rows = None
        if rule == "sign_reuse":
            expected_rows = _plain_rows(agg, uploads, bits, deliv, c_before)
        weights, rows = copy.deepcopy(agg).contributions(Payload(uploads, bits), deliv)
        update = agg.aggregate(Payload(uploads, bits), deliv)
        if weights is None:
            assert update is None
            continue
        if expected_rows is not None and (deliv.sign_ok & ~deliv.both_ok).any():
            assert torch.equal(rows, expected_rows) and torch.equal(torch.signbit(rows), torch.signbit(expected_rows))
        if rule == "signs":
            assert torch.equal(rows, signs(uploads) * uploads.abs().mean(dim=1, keepdim=True))
        if rule == "stale":
            decoded = Payload(uploads, bits).gradients.double().numpy()
            stale_rows[deliv.sign_ok] = decoded[deliv.sign_ok]
            assert np.array_equal(rows.double().numpy(), stale_rows)
        assert torch.equal(update, torch.as_tensor(weights, dtype=rows.dtype) @ rows)
        reference = weights @ rows.double().numpy()
        bound = 1e-6 * (np.abs(weights) @ np.abs(rows.double().numpy())) + 1e-30
        assert np.all(np.abs(update.double().numpy() - reference) <= bound)


def test_majority_vote_with_work_buffer_matches_plain_expression():
    gen = torch.Generator().manual_seed(5)
    agg = Signs(ALPHA_K, signsgd_aggregation="majority")
    for arrived in ([1, 1, 1, 1, 1, 1], [1, 0, 1, 0, 1, 1]):
        uploads = torch.randn(len(ALPHA_K), 517, generator=gen)
        uploads[:, :5] = -0.0
        out = agg.aggregate(Payload(uploads), delivery(arrived, [0] * 6))
        w = torch.as_tensor(agg.weights(np.array(arrived, bool)), dtype=uploads.dtype)
        assert torch.equal(out, signs(w @ signs(uploads)) * (w @ uploads.abs().mean(dim=1)))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("num", [1, 2, 5, 8])
def test_blocked_squared_norms_are_the_whole_matrix_sums_at_any_thread_count(threads, num):
    """The squared norms are summed a few rows at a time (in cache): bit for bit the whole-matrix sums,
    also when torch splits the work across threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(num)
        uploads = torch.randn(num, 300_007, generator=gen) * torch.logspace(-5, 1, 300_007)
        agg = SignReuse(np.full(num, 1 / num))
        agg.modulus = uploads[0].abs() * 0.3
        u_sign, u_modulus = agg.packet_worths(uploads, ETA, SMOOTH)
        squared, inner, c_sq = _plain_terms("sign_reuse", "received_mean", uploads, agg.modulus)
        quadratic = SMOOTH * ETA**2 / 2
        assert np.array_equal(u_modulus, (ETA - quadratic) * squared.numpy())
        assert np.array_equal(u_sign, ETA * inner.numpy() - quadratic * c_sq.numpy())
    finally:
        torch.set_num_threads(before)


# -- rules as classes ---------------------------------------------------------------------------------
class Heaviest(Rule):
    """A rule no method uses: only the gradient of the heaviest device whose packet arrived."""

    name = "heaviest"

    def contributions(self, payload, delivery):
        self.seen = payload.uploads
        arrived = np.flatnonzero(delivery.sign_ok)
        if arrived.size == 0:
            return None, payload.gradients
        weights = np.zeros(self.num_devices)
        weights[arrived[np.argmax(self.alpha[arrived])]] = 1.0
        return weights, payload.gradients


def test_a_new_rule_is_one_class_registered_and_named_by_a_method(monkeypatch):
    """Heaviest, defined and registered here, aggregates a hand-made round, keeps the checkpoint layout and
    the base class's worths, and runs in the round loop once a method's row names it: nothing in the
    package is edited and the loop never asks which rule it runs."""
    monkeypatch.setattr(aggregation, "RULES", dict(RULES))
    assert register(Heaviest) is Heaviest and get_rule("heaviest") is Heaviest
    rule = Heaviest(ALPHA)
    assert torch.equal(rule.aggregate(Payload(G), delivery([0, 1, 1], [0, 0, 0])), G[1])  # 0 lost: 1 wins a tie
    assert torch.equal(rule.aggregate(Payload(G * 2), delivery([1, 1, 0], [0, 0, 0])), G[0] * 2)
    assert rule.aggregate(Payload(G), delivery([0, 0, 0], [0, 0, 0])) is None
    assert torch.equal(rule.previous_update, G[0] * 2)  # a round without an update keeps the last one
    assert rule.state_dict().keys() == Full(ALPHA).state_dict().keys()
    u_sign, u_modulus = rule.packet_worths(G, ETA, SMOOTH)
    assert np.array_equal(u_sign, u_modulus) and u_modulus == pytest.approx(
        (ETA - SMOOTH * ETA**2 / 2) * G.double().square().sum(dim=1).numpy(), rel=1e-15)

    from spfl.configuration.settings import make_spec
    from spfl.simulator.simulation import Simulation, build_environment

    monkeypatch.setitem(methods.METHOD, "digital", replace(methods.METHOD["digital"], aggregation="heaviest"))
    spec = make_spec(num_devices=3, batch_size=8, rounds=1, eval_every=1, partition="dirichlet",
                     total_bandwidth_mhz=1000.0, deadline_ms=10_000.0, max_power_dbm=40.0)
    env = build_environment(spec)
    state = Simulation(env, "digital").train()
    heaviest = int(np.argmax(env.alpha))
    assert type(state.aggregator) is Heaviest and state.metric_rows[-1]["devices_sign_received"] == 3
    expected = env.initial_weights - spec.learning_rate * state.aggregator.seen[heaviest]
    assert torch.equal(state.weights, expected)


def test_every_method_names_a_registered_rule_and_rules_differ_in_their_declarations():
    assert {m.aggregation for m in methods.METHOD.values()} == set(RULES)
    assert all(get_rule(name).name == name for name in RULES)
    declared = {name: (cls.sign_only_counts, cls.reported_vectors, cls.outcomes) for name, cls in RULES.items()}
    assert declared == {"full": (True, 1, (0, 1, 1)), "stale": (True, 1, (0, 1, 1)),
                        "no_reuse": (False, 1, (0, 0, 1)), "sign_reuse": (True, 2, (0, 2, 1)),
                        "signs": (True, 2, (0, 2, 2))}


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


# --- mutation survivors (full mutmut run, session 4) ---
def test_constructor_defaults_are_the_spec_defaults():
    """Unset, the modulus is decoded as exact float32 magnitudes (31 bits) and signSGD averages scaled
    signs: the defaults of spfl.configuration.settings, also as the attributes a caller reads back."""
    from spfl.configuration.settings import SETTING

    agg = Signs(ALPHA)
    assert Payload(G).modulus_bits == SETTING["modulus_bits"].default == 31
    assert agg.signsgd_aggregation == SETTING["signsgd_aggregation"].default == "mean"
    assert (agg.compensation, agg.normalize) == ("received_mean", "received")
    assert (SETTING["compensation"].default, SETTING["normalize"].default) == ("received_mean", "received")


def test_unknown_rule_or_compensation_names_the_value_and_the_allowed_ones():
    """One clear line: the bad value and every allowed one."""
    with pytest.raises(ValueError) as bad_rule:
        get_rule("fedavg")
    assert str(bad_rule.value) == "aggregation rule 'fedavg': allowed full, stale, no_reuse, sign_reuse, signs"
    with pytest.raises(ValueError) as bad_compensation:
        SignReuse(ALPHA, compensation="mean")
    assert str(bad_compensation.value) == ("compensation 'mean': allowed "
                                           "('received_mean', 'previous_update', 'scalar')")


def test_float32_weights_are_normalized_in_float64():
    """alpha given in float32 (e.g. a torch tensor) is widened to float64 before it is normalized: the
    weights and the received-mean modulus are the float64 quotients of the float32 values."""
    alpha32 = np.array([0.1, 0.2, 0.3], dtype=np.float32)
    a = [float(x) for x in alpha32]  # the float32 values, exactly, as Python floats
    g = G.double()
    agg = SignReuse(alpha32)
    weights, _ = copy.deepcopy(agg).contributions(Payload(g), delivery([1, 1, 1], [1, 1, 1]))
    assert weights.dtype == np.float64
    assert weights.tolist() == [a[0] / (a[0] + a[1] + a[2]), a[1] / (a[0] + a[1] + a[2]),
                                a[2] / (a[0] + a[1] + a[2])]
    # devices 0 and 1 deliver both packets: c = (a0 |g0| + a1 |g1|) / (a0 + a1), entry by entry
    agg.aggregate(Payload(g), delivery([1, 1, 1], [1, 1, 0]))
    w0, w1 = a[0] / (a[0] + a[1]), a[1] / (a[0] + a[1])
    assert agg.modulus.tolist() == pytest.approx([w0 * 1.0 + w1 * 3.0, w0 * 2.0 + w1 * 1.0, w1 * 2.0], rel=1e-15)


def test_signsgd_worths_use_its_own_scale_also_after_an_update_under_previous_update():
    """signSGD's sign packet carries its own scale ||g_k||_1 / d: with compensation=previous_update (a valid
    spec) its worths do not change once an update exists (hand-computed for G)."""
    eta, smooth = 0.1, 2.0  # quadratic term L eta^2 / 2 = 0.01
    agg = Signs(ALPHA, compensation="previous_update")
    expected = [0.1 * 3.0 - 0.01 * 3.0, 0.1 * 12.0 - 0.01 * 12.0, 0.1 * 25 / 3 - 0.01 * 25 / 3]
    for _ in range(2):  # before and after the first update
        u_sign, u_modulus = agg.packet_worths(G, eta, smooth)
        assert u_sign == pytest.approx(expected, rel=1e-12) and u_modulus == pytest.approx(expected, rel=1e-12)
        assert agg.aggregate(Payload(G), delivery([1, 1, 1], [0, 0, 0])) is not None


def test_squared_norms_never_sum_a_row_alone_when_there_are_more():
    """With two threads torch splits a one-row sum across them (another rounding); the blocks of two or
    three rows keep every squared norm the whole-matrix sum bit for bit for 3, 4 and 5 devices (the row
    chosen is one whose one-row sum differs in the last bit)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        d = 300_007
        row = (torch.randn(4, d, generator=torch.Generator().manual_seed(6)) * torch.logspace(-5, 1, d))[0]
        for num in (3, 4, 5):
            uploads = row.expand(num, d).contiguous()
            agg = Full(np.full(num, 1 / num))
            _, u_modulus = agg.packet_worths(uploads, ETA, SMOOTH)
            whole = uploads.double().square().sum(dim=1)
            assert np.array_equal(u_modulus, (ETA - SMOOTH * ETA**2 / 2) * whole.numpy())
    finally:
        torch.set_num_threads(before)


def test_no_devices_are_worth_nothing():
    """An empty federation (no upload rows) has empty worths, without an error, under every rule."""
    for rule in RULES:
        u_sign, u_modulus = get_rule(rule)(np.zeros(0)).packet_worths(torch.zeros(0, 4), ETA, SMOOTH)
        assert u_sign.shape == u_modulus.shape == (0,)


def test_restored_stale_flags_are_booleans():
    """A checkpoint's has_stale given as 0/1 is read back as booleans, and the stale rule reuses the
    restored rows of the flagged devices."""
    agg = Stale(ALPHA)
    agg.load_state_dict({"modulus": None, "previous_update": None, "stale": G * 10, "has_stale": [1, 0, 0]})
    assert agg.has_stale.dtype == bool and agg.has_stale.tolist() == [True, False, False]
    out = agg.aggregate(Payload(G), delivery([0, 1, 0], [0, 0, 0]))
    assert torch.allclose(out, (0.5 * G[0] * 10 + 0.25 * G[1]) / 0.75)
    assert agg.state_dict()["has_stale"].dtype == bool


# --- mutation survivors of transmission (full mutmut run, session 4) ---
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


def test_quantized_moduli_keep_the_uploads_dtype():
    """float16 moduli (15 bits) come back in the uploads' dtype, rounded to float16's nearest value."""
    m = torch.tensor([[1.0, 1.0 + 2.0**-12, 70000.0]], dtype=torch.float64)
    back = quantize_modulus(m, 15)
    assert back.dtype == torch.float64
    assert back.tolist() == [[1.0, 1.0, 65504.0]]  # 1 + 2^-12 is below float16's resolution; 65504 its max


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
