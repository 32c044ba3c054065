"""Deadline calibration against closed forms: the three cell-averaged packet errors of the uniform
allocation, the bounds of the deadline search and its messages, and the model size it calibrates for."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.integrate import quad

from core_helpers import cell_averaged_outage, dbm_to_watt, gain_at
from spfl.configuration.settings import make_spec
from spfl.simulator import calibration
from spfl.simulator.calibration import calibrate_deadline, uniform_packet_error
from spfl.simulator.channel import large_scale_gain, place_devices

D = 4810  # parameters of the digits MLP: 64 * 64 + 64 + 64 * 10 + 10
TOLERANCE = 0.012  # 20,000 random drops: standard error <= 0.0035


def test_uniform_errors_of_each_packet_under_the_sum_constraint_and_a_fixed_share():
    """Sign packet: d + 32 bits (scalar compensation) on 15 % of T at P / 2; modulus packet: 8-bit quantizer
    (8 d + 32 bits) on 85 % of T at P / 2; digital: both, d + 8 d + 32 bits, on all of T at the full P."""
    spec = make_spec(total_bandwidth_mhz=2.0, num_devices=10, max_power_dbm=20.0, noise_psd_dbm_hz=-170.0,
                     slot_share=0.15, power_constraint="sum", modulus_bits=8, compensation="scalar",
                     cell_inner_radius_m=100.0, cell_outer_radius_m=400.0, seed=3)
    deadline_s, bandwidth, power, noise = 0.025, 2e6 / 10, dbm_to_watt(20.0), dbm_to_watt(-170.0)
    errors = uniform_packet_error(spec, 1000 * deadline_s, D)

    def closed_form(bits, share, p):
        return cell_averaged_outage(deadline_s, bits, share, bandwidth, p, noise, 100.0, 400.0)

    expected = {"sign": closed_form(D + 32, 0.15, power / 2), "modulus": closed_form(8 * D + 32, 0.85, power / 2),
                "digital": closed_form(9 * D + 32, 1.0, power)}
    assert 0.05 < min(expected.values()) and max(expected.values()) < 0.95  # all three sensitive to a change
    assert errors == pytest.approx(expected, abs=TOLERANCE)


def test_uniform_errors_are_the_mean_outage_over_the_seeded_drops():
    """The same 20,000 drops (the seed's stream, by area in the annulus), each packet's Rayleigh outage
    1 - exp(-B N0 (2^(D / (B S)) - 1) / (p lambda)) averaged: equal to rounding, so that a 0.1 % change of
    the deadline, 1 ppm of the bandwidth or the 32 scale bits of the sign packet show."""
    spec = make_spec(total_bandwidth_mhz=2.0, num_devices=10, max_power_dbm=20.0, noise_psd_dbm_hz=-170.0,
                     slot_share=0.15, power_constraint="sum", modulus_bits=8, compensation="scalar",
                     cell_inner_radius_m=100.0, cell_outer_radius_m=400.0, seed=3)
    gains = large_scale_gain(place_devices(20000, 100.0, 400.0, np.random.default_rng(3)))
    deadline_s, bandwidth, power, noise = 0.025, 2e6 / 10, dbm_to_watt(20.0), dbm_to_watt(-170.0)

    def mean_outage(bits, slot, p):
        theta = bandwidth * noise * np.expm1(bits / (bandwidth * slot) * np.log(2.0)) / (p * gains)
        return float(np.mean(-np.expm1(-theta)))

    expected = {"sign": mean_outage(D + 32, 0.15 * deadline_s, power / 2),
                "modulus": mean_outage(8 * D + 32, 0.85 * deadline_s, power / 2),
                "digital": mean_outage(9 * D + 32, deadline_s, power)}
    assert uniform_packet_error(spec, 1000 * deadline_s, D) == pytest.approx(expected, rel=1e-9)


def test_waterfall_errors_do_not_depend_on_bits_or_time():
    """Waterfall model: a packet fails when |h|^2 < m B N0 / (p lambda), whatever its size or slot."""
    spec = make_spec(per_model="waterfall", waterfall_m=2.0, max_power_dbm=10.0, total_bandwidth_mhz=20.0,
                     num_devices=2)
    bandwidth, power, noise = 10e6, dbm_to_watt(10.0), dbm_to_watt(-174.0)

    def error_at(r):
        return -math.expm1(-2.0 * bandwidth * noise / (power * gain_at(r))) * 2 * r / (500.0**2 - 50.0**2)

    expected, _ = quad(error_at, 50.0, 500.0, limit=200)
    assert 0.05 < expected < 0.95
    errors = uniform_packet_error(spec, 50.0, D)
    assert errors == pytest.approx({"sign": expected, "modulus": expected, "digital": expected}, abs=TOLERANCE)


def test_uniform_errors_average_20000_drops_in_the_specs_annulus_with_its_seed(monkeypatch):
    placed = []
    place_devices = calibration.place_devices

    def recording(count, inner, outer, rng):
        placed.append((count, inner, outer))
        return place_devices(count, inner, outer, rng)

    monkeypatch.setattr(calibration, "place_devices", recording)
    spec = make_spec(cell_inner_radius_m=20.0, cell_outer_radius_m=300.0, seed=5)
    first = uniform_packet_error(spec, 50.0, D)
    assert placed == [(20000, 20.0, 300.0)]
    assert uniform_packet_error(spec, 50.0, D) == first  # the spec's seed, not fresh entropy
    assert uniform_packet_error(make_spec(cell_inner_radius_m=20.0, cell_outer_radius_m=300.0, seed=6),
                                50.0, D) != first


@pytest.mark.parametrize("settings, num_params", [
    ({}, D),
    ({"model": "cnn"}, 16 * 9 + 16 + 16 * 4 * 4 * 10 + 10),  # conv3x3(1 -> 16), Linear(16 * 4 * 4, 10)
    # conv5x5(3 -> 32), conv5x5(32 -> 64), Linear(64 * 5 * 5, 512), Linear(512, 10) on 32x32x3 images
    ({"dataset": "cifar10"}, 3 * 32 * 25 + 32 + 32 * 64 * 25 + 64 + 64 * 25 * 512 + 512 + 512 * 10 + 10),
])
def test_calibration_counts_the_parameters_of_the_specs_model(settings, num_params):
    result = calibrate_deadline(make_spec(settings), 0.3)
    assert result["num_params"] == num_params
    assert result["uniform_packet_error"]["modulus"] == pytest.approx(0.3, abs=2e-3)  # 4 significant digits


def test_calibrated_deadline_may_be_shorter_than_a_millisecond_and_has_four_digits():
    """200 MHz for one device: the modulus packet of 31 d bits meets 50 % error within 0.6 ms, below the
    1 ms a narrower search would start at; the deadline is rounded to 4 significant digits."""
    result = calibrate_deadline(make_spec(total_bandwidth_mhz=200.0, num_devices=1), 0.5)
    assert result["total_bandwidth_mhz"] == 200.0
    deadline = result["deadline_ms"]
    assert 0.1 < deadline < 1.0
    assert float(f"{deadline:.4g}") == deadline
    share = 31 / 32  # the modulus packet's proportional share of the deadline
    closed = cell_averaged_outage(deadline / 1000, 31 * D, share, 200e6, dbm_to_watt(23.0), dbm_to_watt(-174.0),
                                  50.0, 500.0)
    assert closed == pytest.approx(0.5, abs=TOLERANCE)


@pytest.mark.parametrize("target", [0.0, 1.0, -0.1, 1.5])
def test_targets_outside_the_open_unit_interval_are_refused(target):
    with pytest.raises(ValueError) as error:
        calibrate_deadline(make_spec(), target)
    assert str(error.value) == f"--target {target} is invalid: allowed a packet error strictly between 0 and 1"


def test_a_target_no_deadline_reaches_is_refused_by_name():
    """Even 1e7 ms leaves an error far above 1e-9 at the cell edge: the message names target and band."""
    with pytest.raises(ValueError) as error:
        calibrate_deadline(make_spec(total_bandwidth_mhz=2.5), 1e-9)
    assert str(error.value) == ("no deadline between 1e-6 and 1e7 ms gives packet error 1e-09 at "
                                "total_bandwidth_mhz = 2.5")


@pytest.mark.parametrize("settings, target", [
    ({"total_bandwidth_mhz": 2.0}, 0.4),
    ({"total_bandwidth_mhz": 0.5, "num_devices": 10, "max_power_dbm": 17.0}, 0.2),
    ({"total_bandwidth_mhz": 1.0, "modulus_bits": 15, "power_constraint": "sum"}, 0.6),
])
def test_calibrated_deadline_gives_the_target_error_of_the_closed_form(tmp_path, capsys, settings, target):
    from spfl.cli import main

    path = tmp_path / "spec.json"
    path.write_text(json.dumps(settings))
    spec = make_spec(settings)
    assert main(["calibrate", str(path), "--target", str(target)]) == 0
    result = json.loads(capsys.readouterr().out)
    d = 4810
    assert result["num_params"] == d
    bits = spec.modulus_bits * d
    share = bits / (d + bits)  # the modulus packet's share of the deadline (proportional split)
    power = dbm_to_watt(spec.max_power_dbm) / (2 if spec.power_constraint == "sum" else 1)
    error = cell_averaged_outage(result["deadline_ms"] / 1000, bits, share,
                                 spec.total_bandwidth_mhz * 1e6 / spec.num_devices, power,
                                 dbm_to_watt(spec.noise_psd_dbm_hz), spec.cell_inner_radius_m,
                                 spec.cell_outer_radius_m)
    # 20,000 random drops in the calibration (standard error <= 0.0035) and a 4-digit deadline
    assert error == pytest.approx(target, abs=0.012)
