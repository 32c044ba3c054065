"""Wireless uplink physics (docs/model.md, "Channel"): geometry, path loss, fading, packet errors.

A packet of ``bits`` sent in ``slot`` seconds over ``bandwidth`` Hz with transmit power
``power`` W to a device of large-scale gain ``gain`` fails when the fading power |h|^2 falls
below a *failure threshold*.  Every packet-error model is written as such a threshold, so the
closed-form error rate is ``q = 1 - exp(-threshold)`` (|h|^2 ~ Exp(1)) and the simulator
realizes an outcome by comparing one fading draw with the same threshold: the two can never
disagree.

Units: Hz, W, W/Hz, s, bits.  dB/dBm helpers convert configuration values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spfl.simulator.compiled import jit
from spfl.vocabulary import FADING_MODELS, PACKET_ERROR_MODELS


def dbm_to_watt(dbm: float) -> float:
    return 10.0 ** (dbm / 10.0) / 1000.0


def path_loss_db(distance_m: np.ndarray) -> np.ndarray:
    """3GPP-style urban macro path loss, PL(d) = 128.1 + 37.6 log10(d / 1 km) dB."""
    return 128.1 + 37.6 * np.log10(np.asarray(distance_m, dtype=float) / 1000.0)


def large_scale_gain(distance_m: np.ndarray) -> np.ndarray:
    """lambda_k = 10^(-PL/10), linear power gain."""
    return 10.0 ** (-path_loss_db(distance_m) / 10.0)


def place_devices(
    num_devices: int, inner_radius: float, outer_radius: float, rng: np.random.Generator
) -> np.ndarray:
    """Distances of devices dropped uniformly *by area* in the annulus [inner, outer] (m)."""
    u = rng.random(num_devices)
    return np.sqrt(u * (outer_radius**2 - inner_radius**2) + inner_radius**2)


@jit
def threshold_kernel(bandwidth, power, gain, bits, slot, noise_psd, outage, waterfall_m):
    """One packet's failure threshold (:func:`failure_threshold`): the one definition, which
    :func:`failure_threshold` runs over arrays and the allocation's compiled loops call per entry."""
    if not (bandwidth > 0.0 and power > 0.0 and slot > 0.0):
        return np.inf
    threshold = received_need(bandwidth, bits, slot, noise_psd, outage, waterfall_m) / (power * gain)
    return threshold if np.isfinite(threshold) else np.inf


@jit
def received_need(bandwidth, bits, slot, noise_psd, outage, waterfall_m):
    """The received power p lambda |h|^2 a packet needs (:func:`threshold_kernel` divides it by p lambda),
    for bandwidth and slot > 0."""
    noise = bandwidth * noise_psd
    if outage:
        # expm1(x ln 2) = 2^x - 1 without cancellation for small x.
        return noise * np.expm1(bits / (bandwidth * slot) * np.log(2.0))
    return waterfall_m * noise


@jit
def _thresholds(bandwidth, power, gain, bits, slot, noise_psd, outage, waterfall_m, out):
    for i in range(out.size):
        out[i] = threshold_kernel(bandwidth[i], power[i], gain[i], bits[i], slot[i], noise_psd, outage, waterfall_m)


def failure_threshold(
    bandwidth,
    power,
    gain,
    bits,
    slot,
    noise_psd: float,
    per_model: str = "outage",
    waterfall_m: float = 1.0,
) -> np.ndarray:
    """Fading power |h|^2 below which the packet is lost (broadcasts over array inputs).

    outage:    the Shannon rate B log2(1 + p lambda |h|^2 / (B N0)) is below bits / slot, i.e.
               |h|^2 < B N0 (2^(bits / (B slot)) - 1) / (p lambda).
    waterfall: |h|^2 < m B N0 / (p lambda) (Chen et al. 2021), independent of the payload.

    A packet with no bandwidth, no power or no time is always lost (threshold = +inf).
    """
    if per_model not in PACKET_ERROR_MODELS:
        raise ValueError(f"per_model={per_model!r}: allowed {PACKET_ERROR_MODELS}")
    values = [np.asarray(v, dtype=float) for v in (bandwidth, power, gain, bits, slot)]
    shape = np.broadcast_shapes(*(v.shape for v in values))
    out = np.empty(shape)
    _thresholds(*(np.array(np.broadcast_to(v, shape)).reshape(-1) for v in values), float(noise_psd),
                per_model == "outage", float(waterfall_m), out.reshape(-1))
    return out


def packet_thresholds(bandwidth, power_sign, power_modulus, slot_share, *, gain, sign_bits, modulus_bits,
                      deadline, noise_psd: float, per_model: str = "outage", waterfall_m: float = 1.0):
    """The link model: failure thresholds (t_s, t_m) of each device's sign and modulus packets.

    The sign packet has the share tau = ``slot_share`` of the ``deadline``, the modulus packet the rest;
    ``modulus_bits`` = 0 describes a single packet (its t_m is inf).  Broadcasts over array inputs, so
    the transmission (one round) and the allocation's objective (batches of candidate allocations) both
    evaluate it."""
    tau = np.asarray(slot_share, dtype=float)
    sign = failure_threshold(bandwidth, power_sign, gain, sign_bits, tau * deadline, noise_psd, per_model,
                             waterfall_m)
    if not modulus_bits > 0:
        return sign, np.full(np.shape(sign), np.inf)
    modulus = failure_threshold(bandwidth, power_modulus, gain, modulus_bits, (1.0 - tau) * deadline, noise_psd,
                                per_model, waterfall_m)
    return sign, modulus


def packet_error_rate(
    bandwidth, power, gain, bits, slot, noise_psd: float, per_model: str = "outage",
    waterfall_m: float = 1.0,
) -> np.ndarray:
    """Closed-form packet error probability q = 1 - exp(-threshold) under Rayleigh fading."""
    threshold = failure_threshold(bandwidth, power, gain, bits, slot, noise_psd, per_model, waterfall_m)
    return -np.expm1(-threshold)


@dataclass(frozen=True)
class Geometry:
    """Fixed per-seed radio geometry of the cell: device distances and large-scale gains."""

    distance: np.ndarray
    gain: np.ndarray

    @classmethod
    def drop(cls, num_devices: int, inner_radius: float, outer_radius: float,
             rng: np.random.Generator) -> Geometry:
        distance = place_devices(num_devices, inner_radius, outer_radius, rng)
        return cls(distance=distance, gain=large_scale_gain(distance))


def draw_fading(rng: np.random.Generator, num_devices: int, fading: str = "block") -> np.ndarray:
    """One round's Rayleigh fading powers |h|^2 ~ Exp(1) of every device's (sign, modulus) packets.

    ``block``: one draw per device for both packets (quasi-static within the round);
    ``per_packet``: an independent draw per packet.  Both read the same (K, 2) block from the
    stream every round, whatever the model and the method, so methods and fading models see
    common random numbers (block fading uses the first column for both packets).
    """
    if fading not in FADING_MODELS:
        raise ValueError(f"fading={fading!r}: allowed {FADING_MODELS}")
    draws = rng.exponential(1.0, size=(num_devices, 2))
    if fading == "block":
        draws[:, 1] = draws[:, 0]
    return draws
