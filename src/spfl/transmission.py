"""Uplink transmission: encode gradients into packets, send them through the channel, decode.

A *scheme* says which packets a device sends and how many bits and seconds each takes:

- ``error_free``:   the whole gradient, never lost (the `ideal` upper bound);
- ``digital``:      the whole gradient as one packet of (b + 1) d bits over the deadline T;
- ``sign_only``:    d sign bits plus a 32-bit scale over T (signSGD);
- ``sign_modulus``: SP-FL: a sign packet of d bits in tau T and a modulus packet of b d bits in
  (1 - tau) T, each with its own power and its own fading draw.

Packets succeed when the round's fading draw exceeds the packet's failure threshold
(:mod:`spfl.channel`), so realized losses follow the closed-form error rates exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from spfl.channel import failure_threshold

SCHEMES = ("error_free", "digital", "sign_only", "sign_modulus")
SCALE_BITS = 32  # one float32 header: a scale or a quantizer range


def signs(g: torch.Tensor) -> torch.Tensor:
    """Elementwise sign with sign(0) = +1 (a zero entry still points somewhere)."""
    return torch.where(g >= 0, 1.0, -1.0).to(g.dtype)


def quantize_modulus(m: torch.Tensor, bits: int) -> torch.Tensor:
    """What the PS recovers from b-bit magnitudes: exact (31), float16 (15) or uniform b-bit.

    The uniform quantizer is per device (row), with the row's maximum sent as a 32-bit header.
    """
    if bits >= 31:
        return m
    if bits == 15:
        return m.clamp(max=torch.finfo(torch.float16).max).half().to(m.dtype)
    levels = 2**bits - 1
    top = m.amax(dim=1, keepdim=True)
    scale = torch.where(top > 0, top, torch.ones_like(top))
    return torch.round(m / scale * levels) / levels * scale


@dataclass(frozen=True)
class PacketLayout:
    """Bits and slot durations of one device's packets (the same for every device)."""

    scheme: str
    sign_bits: float      # the sign packet, or the whole packet of single-packet schemes
    modulus_bits: float   # 0 when the scheme sends no modulus packet
    sign_slot: float
    modulus_slot: float

    @property
    def slot_share(self) -> float:
        return self.sign_slot / (self.sign_slot + self.modulus_slot)


def packet_layout(scheme: str, num_params: int, modulus_bits: int, compensation: str,
                  deadline_s: float, slot_share: float | None) -> PacketLayout:
    header = SCALE_BITS if modulus_bits not in (31, 15) else 0
    magnitude_bits = modulus_bits * num_params + header
    if scheme in ("error_free", "digital"):
        return PacketLayout(scheme, num_params + magnitude_bits, 0.0, deadline_s, 0.0)
    if scheme == "sign_only":
        return PacketLayout(scheme, num_params + SCALE_BITS, 0.0, deadline_s, 0.0)
    if scheme == "sign_modulus":
        sign_bits = num_params + (SCALE_BITS if compensation == "scalar" else 0)
        tau = slot_share if slot_share is not None else sign_bits / (sign_bits + magnitude_bits)
        return PacketLayout(scheme, sign_bits, magnitude_bits, tau * deadline_s, (1 - tau) * deadline_s)
    raise ValueError(f"scheme {scheme!r}: allowed {SCHEMES}")


@dataclass(frozen=True)
class Delivery:
    """What happened to every device's packets in one round (PS-side, CRC-detected)."""

    sent_sign: np.ndarray      # bool (K,): the sign / whole packet was transmitted
    sent_modulus: np.ndarray   # bool (K,)
    sign_ok: np.ndarray        # bool (K,): the sign / whole packet arrived
    modulus_ok: np.ndarray     # bool (K,)
    q_sign: np.ndarray         # closed-form error probability of each sign / whole packet
    q_modulus: np.ndarray
    uplink_bits: float

    @property
    def both_ok(self) -> np.ndarray:
        return self.sign_ok & self.modulus_ok


def transmit(layout: PacketLayout, bandwidth: np.ndarray, power_sign: np.ndarray,
             power_modulus: np.ndarray, gain: np.ndarray, fading: np.ndarray, noise_psd: float,
             per_model: str, waterfall_m: float) -> Delivery:
    """Send each device's packets; ``fading`` is the round's (K, 2) block of |h|^2 draws."""
    num_devices = len(gain)
    if layout.scheme == "error_free":
        ones = np.ones(num_devices, dtype=bool)
        zeros = np.zeros(num_devices)
        return Delivery(ones, ones, ones, ones, zeros, zeros, float(layout.sign_bits * num_devices))
    sent_sign = (bandwidth > 0) & (power_sign > 0)
    sent_modulus = sent_sign & (power_modulus > 0) & (layout.modulus_bits > 0)
    sign_threshold = failure_threshold(bandwidth, power_sign, gain, layout.sign_bits, layout.sign_slot,
                                       noise_psd, per_model, waterfall_m)
    if layout.modulus_bits > 0:
        modulus_threshold = failure_threshold(bandwidth, power_modulus, gain, layout.modulus_bits,
                                              layout.modulus_slot, noise_psd, per_model, waterfall_m)
    else:
        modulus_threshold = np.full(num_devices, np.inf)
    sign_ok = sent_sign & (fading[:, 0] >= sign_threshold)
    modulus_ok = sent_modulus & (fading[:, 1] >= modulus_threshold)
    bits = layout.sign_bits * sent_sign.sum() + layout.modulus_bits * sent_modulus.sum()
    return Delivery(sent_sign, sent_modulus, sign_ok, modulus_ok,
                    -np.expm1(-sign_threshold), -np.expm1(-modulus_threshold), float(bits))
