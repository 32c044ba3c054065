"""Calibrating the round deadline T (docs/model.md, "Calibration").

T is a per-experiment setting: too long and no packet is ever lost, too short and nothing
arrives.  ``calibrate_deadline`` finds the T at which, with uniform bandwidth and equal power,
the cell-averaged packet error equals a target, so that the interesting regime sits in the
middle of a sweep.  The result goes into the config, not into code.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import brentq

from spfl.configuration.datasets import DATASET
from spfl.configuration.settings import RunSpec
from spfl.simulator.channel import dbm_to_watt, large_scale_gain, packet_error_rate, place_devices
from spfl.simulator.models import build_model, count_parameters
from spfl.simulator.transmission import get_scheme


def uniform_packet_error(spec: RunSpec, deadline_ms: float, num_params: int, drops: int = 20000) -> dict:
    """Cell-averaged error of the sign and modulus packets (uniform allocation) and of a digital packet."""
    rng = np.random.default_rng(spec.seed)
    gain = large_scale_gain(place_devices(drops, spec.cell_inner_radius_m, spec.cell_outer_radius_m, rng))
    bandwidth = spec.total_bandwidth_mhz * 1e6 / spec.num_devices
    power, noise = dbm_to_watt(spec.max_power_dbm), dbm_to_watt(spec.noise_psd_dbm_hz)
    deadline = deadline_ms / 1000.0
    sm = get_scheme("sign_modulus").layout(num_params, spec.modulus_bits, spec.compensation, deadline)
    whole = get_scheme("digital").layout(num_params, spec.modulus_bits, spec.compensation, deadline)
    tau = sm.share_for_setting(spec.slot_share) or sm.proportional_share  # optimized: the proportional start
    # Equal power per packet: p_s = p_m = P under the energy constraint, P / 2 each under the sum one.
    per_packet = power if spec.power_constraint == "energy" else power / 2

    def mean_q(bits, slot, p):
        return float(packet_error_rate(bandwidth, p, gain, bits, slot, noise, spec.per_model,
                                       spec.waterfall_m).mean())

    return {
        "sign": mean_q(sm.sign_bits, tau * deadline, per_packet),
        "modulus": mean_q(sm.modulus_bits, (1 - tau) * deadline, per_packet),
        "digital": mean_q(whole.sign_bits, deadline, power),
    }


def calibrate_deadline(spec: RunSpec, target: float) -> dict:
    """Deadline (ms) at which the uniform modulus-packet error averaged over the cell is ``target``."""
    if not 0.0 < target < 1.0:
        raise ValueError(f"--target {target} is invalid: allowed a packet error strictly between 0 and 1")
    facts = DATASET[spec.dataset]  # the model's size from the dataset's facts: no data on disk needed
    num_params = count_parameters(build_model(spec.resolved_model, facts.input_shape, facts.num_classes))

    def gap(log_deadline: float) -> float:
        return uniform_packet_error(spec, float(np.exp(log_deadline)), num_params)["modulus"] - target

    low, high = np.log(1e-6), np.log(1e7)
    if gap(low) < 0 or gap(high) > 0:
        raise ValueError(f"no deadline between 1e-6 and 1e7 ms gives packet error {target} at "
                         f"total_bandwidth_mhz = {spec.total_bandwidth_mhz}")
    deadline_ms = float(np.exp(brentq(gap, low, high, xtol=1e-10)))
    errors = uniform_packet_error(spec, deadline_ms, num_params)
    return {"deadline_ms": float(f"{deadline_ms:.4g}"), "num_params": num_params,
            "total_bandwidth_mhz": spec.total_bandwidth_mhz, "uniform_packet_error": errors}
