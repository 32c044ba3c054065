"""Per-round records and the summary, recomputed independently for a tiny run from the allocation's resources,
the devices' positions, the seed's fading stream and the channel's formulas (tests/core_helpers.py)."""

from __future__ import annotations

import csv
import itertools
import json
import logging
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from core_helpers import (
    TWO_STEP_RUN,
    batch_generators,
    dbm_to_watt,
    fading_generator,
    gain_at,
    outage_threshold,
    partition_weights,
    textbook_gradients,
)
from spfl import records
from spfl.configuration.settings import make_spec
from spfl.provenance import code_version, package_versions
from spfl.simulator.lifecycle import RunRecords, _finite_or_none
from spfl.simulator.simulation import Simulation, build_environment, run_cell
from spfl.simulator.transmission import Delivery

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
    """Runs under the Jensen surrogate, whose objective the records let a test recompute by enumeration
    (the descent surrogate's needs the devices' inner products: tests/test_descent_objective.py)."""
    method, normalize = request.param
    spec = make_spec(TINY_RUN, normalize=normalize, surrogate="jensen")
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


# --- a round's row, the allocation problem and the summary, case by case -----------------------------
# Each test calls the code in its own body (not through the module fixture above: mutmut maps a mutant to the
# tests that reach its function, and a module-scoped fixture reaches it only in the first test's setup).

def tiny_simulation(method: str, **settings) -> Simulation:
    return Simulation(build_environment(make_spec(TINY_RUN, **settings)), method)


def test_round_row_counts_rates_and_means_of_a_hand_made_delivery():
    """Every field of a metrics row from a 4-device delivery built by hand, and of a round where nothing
    was sent, nothing allocated and no update made (no rates, no means, no objective, a zero update norm)."""
    sim = tiny_simulation("spfl")
    yes, no = True, False
    delivery = Delivery(np.array([yes, yes, yes, no]), np.array([yes, yes, yes, no]),
                        np.array([yes, no, yes, no]), np.array([yes, no, no, no]),
                        np.array([0.1, 0.2, 0.3, 0.9]), np.array([0.4, 0.6, 0.8, 0.95]), 123.0)
    row = sim.round_row(2, 0.5, delivery, SimpleNamespace(objective=0.25), torch.tensor([3.0, 4.0]))
    assert row == {
        "round": 2, "train_loss": 0.5,
        "sign_error_rate": pytest.approx(1 / 3),      # 1 of 3 sent signs lost
        "modulus_error_rate": pytest.approx(2 / 3),   # 2 of 3 sent moduli lost
        "devices_transmitting": 3, "devices_sign_received": 2, "devices_both_received": 1,
        "uplink_bits": 123.0, "objective": 0.25,
        "control_bits": 4 * (2 * 4096 + 3) * 32,   # a 4096-entry sketch of g_k and of its signs, 3 scalars
        "expected_sign_error": pytest.approx(0.2), "expected_modulus_error": pytest.approx(0.6),
        "update_norm": 5.0,
    }
    nothing = np.zeros(4, dtype=bool)
    silent = Delivery(nothing, nothing, nothing, nothing, np.ones(4), np.ones(4), 0.0)
    row = sim.round_row(3, 0.7, silent, None, None)
    assert row == {
        "round": 3, "train_loss": 0.7, "sign_error_rate": None, "modulus_error_rate": None,
        "devices_transmitting": 0, "devices_sign_received": 0, "devices_both_received": 0, "uplink_bits": 0.0,
        "control_bits": 0, "objective": None, "expected_sign_error": None, "expected_modulus_error": None,
        "update_norm": 0.0,
    }


def test_finite_or_none_keeps_finite_numbers_only():
    assert _finite_or_none(0.25) == 0.25 and _finite_or_none(0.0) == 0.0
    assert _finite_or_none(None) is None
    assert _finite_or_none(math.nan) is None and _finite_or_none(math.inf) is None
    assert _finite_or_none(-math.inf) is None


def test_error_free_resources_are_equal_bandwidth_full_power_and_one_packet():
    """Nothing is allocated for the ideal method: B / K each, P_max on the one packet, no modulus packet
    (power 0), the whole link to it (share 1)."""
    sim = tiny_simulation("ideal")
    state = sim.initial_state()
    resources, allocation, problem = sim.resources(torch.zeros(4, D), state)
    assert allocation is None and problem is None
    assert resources.bandwidth.tolist() == pytest.approx([0.8e6 / 4] * 4, rel=1e-12)
    assert resources.power_sign.tolist() == pytest.approx([dbm_to_watt(23.0)] * 4, rel=1e-12)
    assert resources.power_modulus.tolist() == [0.0] * 4
    assert resources.slot_share.tolist() == [1.0] * 4


@pytest.mark.parametrize("method", ["spfl", "spfl_noreuse"])
def test_allocation_problem_carries_the_settings_and_the_layout(method):
    """Every scalar of the round's AllocationProblem from the settings in their own units (non-default
    channel settings, so a setting left at the problem's default shows), alpha from the partition sizes
    and the gains from the devices' distances."""
    settings = dict(power_constraint="sum", per_model="waterfall", waterfall_m=2.5, fading="per_packet",
                    normalize="all", noise_psd_dbm_hz=-170.0, max_power_dbm=20.0)
    sim = tiny_simulation(method, **settings)
    state = sim.initial_state()
    uploads = torch.randn(4, D, generator=torch.Generator().manual_seed(0))
    problem = sim.allocation_problem(uploads, state.aggregator)
    env = sim.env
    assert problem.alpha.tolist() == pytest.approx(partition_weights(env).tolist(), rel=1e-12)
    assert problem.gain.tolist() == pytest.approx([gain_at(d) for d in env.geometry.distance], rel=1e-9)
    assert problem.total_bandwidth == pytest.approx(0.8e6, rel=1e-12)
    assert problem.max_power == pytest.approx(0.1, rel=1e-12)          # 20 dBm
    assert problem.noise_psd == pytest.approx(1e-20, rel=1e-12)        # -170 dBm/Hz
    assert problem.deadline == pytest.approx(0.1, rel=1e-12)           # 100 ms
    assert (problem.sign_bits, problem.modulus_bits) == (D, 31 * D)
    assert problem.slot_share == 0.5
    assert (problem.power_constraint, problem.per_model, problem.waterfall_m, problem.fading) == (
        "sum", "waterfall", 2.5, "per_packet")
    assert problem.normalize == "all"
    assert problem.sign_only_counts is (method == "spfl")  # sign reuse counts a sign-only receipt


def test_run_cell_summary_timing_devices_and_log_line(tmp_path, caplog):
    """One tiny cell: the log line naming the environment, devices.csv's header and device column,
    timing.json, and every summary field recomputed from metrics.csv (means over rounds 1..R)."""
    spec = make_spec(TINY_RUN, normalize="all", total_bandwidth_mhz=1.2)  # moduli lost at 1/2, 1/2, 3/4
    with caplog.at_level(logging.INFO, logger="spfl"):
        run_cell(spec, ["spfl_uniform"], tmp_path)
    device = "cuda" if spec.device != "cpu" and torch.cuda.is_available() else "cpu"
    assert f"environment: digits, 4 devices, {D} parameters, device {device}" in caplog.messages
    with open(tmp_path / "devices.csv", newline="") as handle:
        header = next(csv.reader(handle))
    assert header == ["device", "distance_m", "gain", "num_samples", "alpha"] == list(records.DEVICE_COLUMNS)
    assert [int(d["device"]) for d in read_csv(tmp_path / "devices.csv")] == [0, 1, 2, 3]

    out = tmp_path / "spfl_uniform"
    timing = json.loads((out / "timing.json").read_text())
    assert list(timing) == ["wall_time_s"]
    assert isinstance(timing["wall_time_s"], float) and timing["wall_time_s"] >= 0

    metrics = read_csv(out / "metrics.csv")
    rounds = [m for m in metrics if int(m["round"]) > 0]
    sign = [float(m["sign_error_rate"]) for m in rounds]
    modulus = [float(m["modulus_error_rate"]) for m in rounds]
    accuracy = [float(m["test_accuracy"]) for m in metrics]
    assert len(set(modulus)) > 1  # a mean that leaves a round out differs
    summary = json.loads((out / "summary.json").read_text())
    assert summary == {
        "method": "spfl_uniform", "status": "ok", "diverged_round": None,
        "final_accuracy": accuracy[-1], "best_accuracy": max(accuracy),
        "final_test_loss": float(metrics[-1]["test_loss"]), "rounds_completed": 3,
        "mean_sign_error": pytest.approx(sum(sign) / 3, abs=1e-12),
        "mean_modulus_error": pytest.approx(sum(modulus) / 3, abs=1e-12),
        "run_hash": spec.with_method("spfl_uniform").run_hash, "code_version": code_version(),
        "num_params": D, "versions": package_versions(),
    }


def test_a_diverged_run_has_no_final_accuracy_or_loss_but_keeps_its_best(tmp_path):
    """A run marked diverged (its last evaluation finite: e.g. an upload that overflowed while the weights,
    evaluated, stayed finite) reports no final accuracy or test loss, still its best accuracy; timing.json
    holds the wall time to the millisecond."""
    sim = tiny_simulation("spfl_uniform", rounds=2)
    state = sim.train()
    assert state.status == "ok"
    accuracy = [r["test_accuracy"] for r in state.metric_rows]
    assert math.isfinite(state.metric_rows[-1]["test_loss"])
    state.status, state.diverged_round = "diverged", 2
    summary = sim.end(state, [RunRecords(tmp_path)], 1.23456).summary
    assert (summary.status, summary.diverged_round) == ("diverged", 2)
    assert summary.final_accuracy is None and summary.final_test_loss is None
    assert summary.best_accuracy == max(accuracy)
    assert json.loads((tmp_path / "summary.json").read_text())["final_accuracy"] is None
    assert json.loads((tmp_path / "timing.json").read_text()) == {"wall_time_s": 1.235}


def test_a_diverged_run_without_evaluations_has_no_accuracies(tmp_path):
    """A run that really diverges (learning rate 1e30), trained without the evaluation callback: its summary
    has no final or best accuracy and no test loss."""
    sim = tiny_simulation("ideal", learning_rate=1e30, smoothness=1e-31)
    state = sim.train(callbacks=[])
    assert state.status == "diverged"
    summary = sim.end(state, [], 0.5).summary
    assert (summary.final_accuracy, summary.best_accuracy, summary.final_test_loss) == (None, None, None)


def test_summary_and_error_rates_follow_from_the_per_round_counts(tmp_path):
    run_cell(make_spec(TWO_STEP_RUN), ["spfl"], tmp_path)
    metrics = read_csv(tmp_path / "spfl" / "metrics.csv")
    summary = json.loads((tmp_path / "spfl" / "summary.json").read_text())
    assert (summary["status"], summary["rounds_completed"]) == ("ok", 3)
    rounds = [r for r in metrics if int(r["round"]) > 0]
    sign_rates, modulus_rates = [], []
    for row in rounds:
        sent, arrived = int(row["devices_transmitting"]), int(row["devices_sign_received"])
        if sent == 0:
            assert row["sign_error_rate"] == ""
            continue
        sign_rates.append(1 - arrived / sent)
        assert float(row["sign_error_rate"]) == pytest.approx(sign_rates[-1], abs=1e-12)
        if row["modulus_error_rate"] != "":
            modulus_rates.append(float(row["modulus_error_rate"]))
    assert sign_rates and modulus_rates  # the case exercises both means
    assert summary["mean_sign_error"] == pytest.approx(sum(sign_rates) / len(sign_rates), abs=1e-12)
    assert summary["mean_modulus_error"] == pytest.approx(sum(modulus_rates) / len(modulus_rates), abs=1e-12)
    assert summary["final_test_loss"] == float(metrics[-1]["test_loss"])
    assert summary["final_accuracy"] == float(metrics[-1]["test_accuracy"])


# --- the records contract (spfl.records): what a run writes is what the fixtures write -------------------

def record_shapes(cell_folder, method: str) -> dict:
    """Each record's CSV header or JSON keys, for the cell's and the method's records that exist."""
    shapes = {}
    for name, folder in [(n, cell_folder) for n in records.CELL_RECORDS] + [(n, cell_folder / method)
                                                                           for n in records.RUN_RECORDS]:
        path = folder / name
        if path.is_file():
            text = path.read_text()
            shapes[name] = tuple(sorted(json.loads(text))) if name.endswith(".json") else \
                tuple(text.splitlines()[0].split(","))
    return shapes


def evaluated_rounds(metrics_csv) -> list[int]:
    return [int(row["round"]) for row in read_csv(metrics_csv) if row["test_accuracy"] != ""]


def test_a_run_and_the_synthetic_fixtures_write_the_declared_records(tmp_path):
    """Every record of a real run has the declared columns and keys and evaluates the scheduled rounds; the
    synthetic records the table tests read have the same shape and schedule."""
    from spfl.configuration import load_plan
    from synthetic_records import EVAL, ROUNDS, write_cell, write_run
    from synthetic_records import config as synthetic_config

    spec = make_spec(TINY_RUN, rounds=4, eval_every=3)
    run_cell(spec, ["spfl"], tmp_path / "real")
    real = record_shapes(tmp_path / "real", "spfl")
    assert set(real) == {*records.CELL_RECORDS, *records.RUN_RECORDS}
    for name, columns in records.CSV_COLUMNS.items():
        assert real[name] == columns, name
    assert real[records.SUMMARY_JSON] == tuple(sorted(records.SUMMARY_KEYS))
    assert evaluated_rounds(tmp_path / "real" / "spfl" / records.METRICS_CSV) == [0, 1, 3, 4]

    cell = next(iter(load_plan(synthetic_config()).cells.values()))
    write_cell(tmp_path / "synthetic", cell, ["spfl"])
    assert record_shapes(tmp_path / "synthetic", "spfl") == real
    schedule = list(records.evaluation_schedule(ROUNDS, EVAL))
    assert evaluated_rounds(tmp_path / "synthetic" / "spfl" / records.METRICS_CSV) == schedule

    run = write_run(tmp_path / "hand", "e", "spfl", 0, final_pct=80.0, budget_pct=70.0)
    by_hand = record_shapes(tmp_path / "hand" / run["cell"], "spfl")
    assert {name: by_hand[name] for name in (records.METRICS_CSV, records.SUMMARY_JSON)} == \
        {name: real[name] for name in (records.METRICS_CSV, records.SUMMARY_JSON)}
    assert evaluated_rounds(tmp_path / "hand" / run["cell"] / "spfl" / records.METRICS_CSV) == schedule
