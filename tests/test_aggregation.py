"""Aggregation rules and the server update: exact, hand-computed small cases (docs/model.md, "Aggregation"),
b-bit moduli decoded in the aggregate, server momentum, and each rule's work buffers."""

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

from core_helpers import batch_generators, delivery, partition_weights, quantized, tensor, textbook_gradients
from spfl.configuration import methods
from spfl.configuration.settings import make_spec
from spfl.simulator import aggregation
from spfl.simulator.aggregation import RULES, Full, NoReuse, Rule, SignReuse, Signs, Stale, get_rule, register
from spfl.simulator.simulation import Simulation, build_environment
from spfl.simulator.transmission import Payload, quantize_modulus, signs

G = torch.tensor([[1.0, -2.0, 0.0],
                  [-3.0, 1.0, 2.0],
                  [2.0, 2.0, -1.0]])
ALPHA = np.array([0.5, 0.25, 0.25])


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


# -- server momentum and b-bit moduli over whole rounds ----------------------------------------------
# A three-device run recomputed by hand: eta = 0.1, L = 5; PERFECT resources lose a packet with probability
# below 1e-9 (none in practice).
STEP = 0.1
TINY = dict(num_devices=3, batch_size=8, rounds=3, eval_every=1, learning_rate=STEP, smoothness=5.0)
PERFECT = dict(total_bandwidth_mhz=1000.0, deadline_ms=10_000.0, max_power_dbm=40.0)


def test_server_momentum_is_heavy_ball_by_hand_over_three_rounds():
    """v_t = beta v_{t-1} + g_t, w_{t+1} = w_t - eta v_t (not (1 - beta) g, not Nesterov)."""
    beta = 0.5
    env = build_environment(make_spec(TINY, server_momentum=beta))
    generators = batch_generators(env.spec.seed, env.spec.num_devices)
    alpha = torch.tensor(partition_weights(env), dtype=torch.float64)
    w, velocity = env.initial_weights.clone(), torch.zeros(env.num_params, dtype=torch.float64)
    applied = []
    for _ in range(3):
        g = alpha @ textbook_gradients(env, w, generators).double()
        velocity = beta * velocity + g
        applied.append(float(velocity.norm()))
        w = (w.double() - STEP * velocity).float()
    state = Simulation(env, "ideal").train()
    assert torch.allclose(state.weights.double(), w.double(), rtol=0, atol=1e-6)
    # update_norm records the step applied, eta times which the weights moved
    assert [r["update_norm"] for r in state.metric_rows[1:]] == pytest.approx(applied, rel=1e-5)
    without = Simulation(build_environment(make_spec(TINY)), "ideal").train()
    assert (state.weights - without.weights).abs().max() > 1e-4  # momentum made a visible difference


GRADIENTS = [[0.31, -0.47, 0.05, -0.9], [1.0, -0.2, 0.61, 0.0]]
TWO_ALPHA = np.array([0.25, 0.75])


def decoded(row, bits):
    """What the PS recovers of one device's gradient sent with b-bit magnitudes."""
    magnitudes = [abs(x) for x in row]
    if bits == 31:
        values = magnitudes
    elif bits == 15:
        values = [float(np.float16(np.float32(m))) for m in magnitudes]
    else:
        values = quantized([float(np.float32(m)) for m in magnitudes], bits)
    return [v if x >= 0 else -v for v, x in zip(values, row)]


@pytest.mark.parametrize("bits", [1, 4, 15, 31])
def test_full_rule_aggregates_what_b_bit_moduli_decode_to(bits):
    aggregator = Full(TWO_ALPHA)
    update = aggregator.aggregate(Payload(tensor(GRADIENTS), bits), delivery([True, True], [True, True]))
    rows = [decoded(row, bits) for row in GRADIENTS]
    expected = [0.25 * a + 0.75 * b for a, b in zip(*rows)]
    assert update.tolist() == pytest.approx(expected, rel=1e-6, abs=1e-7)
    if bits == 4:  # the levels by hand: top 0.9 -> 15 levels of 0.06; top 1.0 -> levels of 1/15
        assert rows[0] == pytest.approx([0.30, -0.48, 0.06, -0.9], abs=1e-7)
        assert rows[1] == pytest.approx([1.0, -3 / 15, 9 / 15, 0.0], abs=1e-7)


@pytest.mark.parametrize("bits", [4, 15, 31])
def test_sign_reuse_compensates_with_the_decoded_modulus(bits):
    """Device 0 delivers both packets, device 1 only its signs: device 1 steps by s_1 * c, c = device
    0's decoded magnitudes (the only full receipt), and sign(0) = +1."""
    aggregator = SignReuse(TWO_ALPHA)
    update = aggregator.aggregate(Payload(tensor(GRADIENTS), bits), delivery([True, True], [True, False]))
    first = decoded(GRADIENTS[0], bits)
    c = [abs(x) for x in first]
    second = [m if x >= 0 else -m for m, x in zip(c, GRADIENTS[1])]
    assert aggregator.modulus.tolist() == pytest.approx(c, rel=1e-6)
    assert update.tolist() == pytest.approx([0.25 * a + 0.75 * b for a, b in zip(first, second)], rel=1e-6)


@pytest.mark.parametrize("bits, method", [(4, "digital"), (15, "digital"), (4, "spfl_uniform"), (31, "spfl_uniform")])
def test_a_simulated_round_with_b_bit_moduli(bits, method):
    """One round with every packet received: w_1 = w_0 - eta sum alpha_k decode_b(g_k), and the uplink
    carries K packets of (b + 1) d bits (+ 32 for the quantizer's range unless b is 15 or 31)."""
    spec = make_spec(TINY, **PERFECT, normalize="all", modulus_bits=bits, rounds=1)
    env = build_environment(spec)
    state = Simulation(env, method).train()
    gradients = textbook_gradients(env, env.initial_weights, batch_generators(spec.seed, spec.num_devices))
    alpha = partition_weights(env)
    rows = [decoded(row, bits) for row in gradients.tolist()]
    expected = [w - STEP * sum(alpha[k] * rows[k][i] for k in range(len(rows)))
                for i, w in enumerate(env.initial_weights.tolist())]
    changed = (state.weights.double() - torch.tensor(expected, dtype=torch.float64)).abs()
    # one entry may sit on a rounding boundary of the quantizer: allow at most one level there
    assert (changed > 1e-6).sum() <= 1, changed.max()
    d, num = env.num_params, spec.num_devices
    header = 0 if bits in (15, 31) else 32
    assert state.metric_rows[1]["uplink_bits"] == num * ((bits + 1) * d + header)
    assert state.metric_rows[1]["devices_both_received"] == num


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


# -- defaults, messages and edge cases of the rules --------------------------------------------------

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


