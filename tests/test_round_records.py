"""Per-round records recomputed independently for a tiny run: every value of metrics.csv and allocation.csv
from the allocation's own resources, the devices' positions, the fading stream rebuilt from the seed
and the channel's formulas (tests/core_helpers.py), not from the code that wrote them."""

from __future__ import annotations

import csv
import itertools
import math

import numpy as np
import pytest

from core_helpers import (
    batch_generators,
    dbm_to_watt,
    fading_generator,
    gain_at,
    outage_threshold,
    textbook_gradients,
)
from spfl.simulation import Simulation, build_environment, run_cell
from spfl.spec import make_spec

ETA, L = 0.1, 5.0
D = 4810  # parameters of the digits MLP
# Four devices at 0.8 MHz with the sign packet on half the deadline: signs mostly arrive, moduli sometimes.
TINY_RUN = dict(num_devices=4, batch_size=8, rounds=3, eval_every=1, learning_rate=ETA, smoothness=L,
            total_bandwidth_mhz=0.8, deadline_ms=100.0, slot_share=0.5, partition="dirichlet")


def read_csv(path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def number(text: str) -> float | None:
    return None if text == "" else float(text)


@pytest.fixture(scope="module", params=[("spfl_uniform", "all"), ("spfl", "received"), ("digital", "received")])
def run(request, tmp_path_factory):
    method, normalize = request.param
    spec = make_spec(TINY_RUN, normalize=normalize)
    out = tmp_path_factory.mktemp(method)
    run_cell(spec, [method], out)
    return {
        "method": method, "spec": spec, "out": out,
        "devices": read_csv(out / "devices.csv"),
        "metrics": read_csv(out / method / "metrics.csv"),
        "allocation": read_csv(out / method / "allocation.csv"),
    }


def per_device(run, round_index: int) -> list[dict[str, float]]:
    rows = [r for r in run["allocation"] if int(r["round"]) == round_index]
    assert [int(r["device"]) for r in rows] == list(range(run["spec"].num_devices))
    return [{k: float(v) for k, v in r.items()} for r in rows]


def packet_bits(method: str) -> tuple[int, int]:
    return (D, 31 * D) if method.startswith("spfl") else (32 * D, 0)


def test_devices_record_holds_gain_and_weight_by_their_formulas(run):
    devices = run["devices"]
    total = sum(int(d["num_samples"]) for d in devices)
    for d in devices:
        assert float(d["gain"]) == pytest.approx(gain_at(float(d["distance_m"])), rel=1e-9)
        assert float(d["alpha"]) == pytest.approx(int(d["num_samples"]) / total, rel=1e-12)
        assert 50.0 <= float(d["distance_m"]) <= 500.0


def outcomes(run):
    """Per round: (resources, thresholds, sent, sign_ok, modulus_ok) from allocation.csv and the fading
    stream rebuilt from the seed (one (K, 2) block of Exp(1) draws per round, block fading)."""
    spec, method = run["spec"], run["method"]
    sign_bits, modulus_bits = packet_bits(method)
    gains = [float(d["gain"]) for d in run["devices"]]
    noise = dbm_to_watt(spec.noise_psd_dbm_hz)
    deadline = spec.deadline_ms / 1000
    rng = fading_generator(spec.seed)
    result = []
    for round_index in range(1, spec.rounds + 1):
        draws = rng.exponential(1.0, size=(spec.num_devices, 2))
        rows = per_device(run, round_index)
        entry = []
        for k, row in enumerate(rows):
            tau = row["slot_share"]
            t_s = outage_threshold(row["bandwidth_hz"], row["power_sign_w"], gains[k], sign_bits, tau * deadline,
                                   noise)
            t_m = (outage_threshold(row["bandwidth_hz"], row["power_modulus_w"], gains[k], modulus_bits,
                                    (1 - tau) * deadline, noise) if modulus_bits else math.inf)
            sent = row["bandwidth_hz"] > 0 and row["power_sign_w"] > 0
            sent_m = sent and modulus_bits > 0 and row["power_modulus_w"] > 0
            h = draws[k, 0]  # block fading: one draw for both packets
            entry.append({"row": row, "t_s": t_s, "t_m": t_m, "sent": sent, "sent_m": sent_m,
                          "sign_ok": sent and h >= t_s, "modulus_ok": sent_m and h >= t_m})
        result.append(entry)
    return result


def test_allocation_record_error_rates_follow_the_outage_formula(run):
    spec = run["spec"]
    for entry in outcomes(run):
        total = 0.0
        for device in entry:
            row = device["row"]
            total += row["bandwidth_hz"]
            assert row["q_sign"] == pytest.approx(-math.expm1(-device["t_s"]), rel=1e-9, abs=1e-15)
            assert row["q_modulus"] == pytest.approx(-math.expm1(-device["t_m"]), rel=1e-9, abs=1e-15)
            if run["method"] == "spfl_uniform":  # nothing optimized: equal shares, full power to each packet
                assert row["bandwidth_hz"] == pytest.approx(spec.total_bandwidth_mhz * 1e6 / spec.num_devices)
                assert row["power_sign_w"] == pytest.approx(dbm_to_watt(spec.max_power_dbm))
                assert row["power_modulus_w"] == pytest.approx(dbm_to_watt(spec.max_power_dbm))
                assert row["slot_share"] == 0.5
            if run["method"] == "spfl":  # the energy constraint tau p_s + (1 - tau) p_m <= P_max
                tau = row["slot_share"]
                energy = tau * row["power_sign_w"] + (1 - tau) * row["power_modulus_w"]
                assert energy <= dbm_to_watt(spec.max_power_dbm) * (1 + 1e-9)
        assert total <= spec.total_bandwidth_mhz * 1e6 * (1 + 1e-9)


def test_metrics_counts_rates_bits_and_expected_errors(run):
    sign_bits, modulus_bits = packet_bits(run["method"])
    metrics = run["metrics"]
    assert [int(m["round"]) for m in metrics] == list(range(run["spec"].rounds + 1))
    seen_sign_only = seen_loss = False
    for entry, m in zip(outcomes(run), metrics[1:]):
        sent = [d for d in entry if d["sent"]]
        sent_m = [d for d in entry if d["sent_m"]]
        sign_ok = sum(d["sign_ok"] for d in entry)
        both = sum(d["sign_ok"] and (d["modulus_ok"] or not modulus_bits) for d in entry)
        seen_sign_only |= both < sign_ok
        seen_loss |= sign_ok < len(sent)
        assert int(m["devices_transmitting"]) == len(sent)
        assert int(m["devices_sign_received"]) == sign_ok
        assert int(m["devices_both_received"]) == both
        assert float(m["uplink_bits"]) == sign_bits * len(sent) + modulus_bits * len(sent_m)
        assert number(m["sign_error_rate"]) == pytest.approx((len(sent) - sign_ok) / len(sent))
        expected_sign = np.mean([d["row"]["q_sign"] for d in sent])
        assert float(m["expected_sign_error"]) == pytest.approx(expected_sign, rel=1e-12)
        if modulus_bits:
            arrived = sum(d["modulus_ok"] for d in sent_m)
            assert number(m["modulus_error_rate"]) == pytest.approx((len(sent_m) - arrived) / len(sent_m))
            assert float(m["expected_modulus_error"]) == pytest.approx(np.mean([d["row"]["q_modulus"]
                                                                               for d in sent_m]), rel=1e-12)
        else:
            assert m["modulus_error_rate"] == "" and m["expected_modulus_error"] == ""
    if run["method"] == "spfl_uniform":  # the case is chosen to show both kinds of partial receipt
        assert seen_sign_only
    if run["method"] == "digital":
        assert seen_loss


def phi_by_enumeration(alpha, u_sign, u_modulus, p_sign, p_both, normalize: str, sign_only_counts=True) -> float:
    """E[sum_k w_k V_k] over every joint outcome (nothing / sign only / both per device, independent)."""
    total = 0.0
    for pattern in itertools.product((0, 1, 2), repeat=len(alpha)):
        probability, weight_sum, value = 1.0, 0.0, 0.0
        for k, outcome in enumerate(pattern):
            chance = (1 - p_sign[k], p_sign[k] - p_both[k], p_both[k])[outcome]
            probability *= chance
            counts = outcome == 2 or (outcome == 1 and sign_only_counts)
            if counts:
                weight_sum += alpha[k]
                value += alpha[k] * (u_modulus[k] if outcome == 2 else u_sign[k])
        if probability == 0 or weight_sum == 0:
            continue
        total += probability * (value / weight_sum if normalize == "received" else value)
    return total


def test_round_objective_is_the_expected_surrogate_at_the_chosen_allocation(run):
    devices = run["devices"]
    alpha = [float(d["alpha"]) for d in devices]
    for round_index, m in enumerate(run["metrics"][1:], start=1):
        rows = per_device(run, round_index)
        q_s = [r["q_sign"] for r in rows]
        q_m = [r["q_modulus"] for r in rows]
        p_sign = [1 - q for q in q_s]
        # block fading: both arrive when the weaker packet does
        p_both = [min(1 - a, 1 - b) for a, b in zip(q_s, q_m)] if run["method"].startswith("spfl") else p_sign
        phi = phi_by_enumeration(alpha, [r["u_sign"] for r in rows], [r["u_modulus"] for r in rows], p_sign, p_both,
                                 run["spec"].normalize)
        assert float(m["objective"]) == pytest.approx(phi, rel=1e-7, abs=1e-12)


def test_first_round_packet_worths_and_update_norms(run):
    """Round 1: U_m = (eta - L eta^2 / 2) ||g_k||^2 and (SP-FL, no modulus yet) U_s with c = ||g_k|| / sqrt(d);
    update_norm = ||w_t - w_{t+1}|| / eta from the weights of runs of 1, 2 and 3 rounds."""
    spec, method = run["spec"], run["method"]
    env = build_environment(spec)
    gradients = textbook_gradients(env, env.initial_weights, batch_generators(spec.seed, spec.num_devices)).double()
    norm2 = gradients.square().sum(dim=1)
    u_modulus = (ETA - L * ETA**2 / 2) * norm2
    c = norm2.sqrt() / math.sqrt(D)
    u_sign = ETA * gradients.abs().sum(dim=1) * c - L * ETA**2 / 2 * D * c**2
    rows = per_device(run, 1)
    assert [r["u_modulus"] for r in rows] == pytest.approx(u_modulus.tolist(), rel=1e-5)
    expected_sign = u_sign if method.startswith("spfl") else u_modulus
    assert [r["u_sign"] for r in rows] == pytest.approx(expected_sign.tolist(), rel=1e-5)

    weights = [env.initial_weights]
    for rounds in range(1, spec.rounds + 1):
        weights.append(Simulation(build_environment(make_spec(spec.to_dict(), rounds=rounds)), method).train().weights)
    for t, m in enumerate(run["metrics"][1:]):
        expected = float((weights[t].double() - weights[t + 1].double()).norm()) / ETA
        assert float(m["update_norm"]) == pytest.approx(expected, rel=1e-4, abs=1e-9)
        assert (float(m["update_norm"]) == 0.0) == (int(m["devices_sign_received"]) == 0)
