"""Uplink transmission: which packets a device sends, their bits, what arrives, and what the PS reads.

A *scheme* owns its packet layout, its transmission and the decoding of its payload (:class:`Payload`);
the round loop never asks for its name:

- ``error_free``:   the whole gradient, never lost (the `ideal` upper bound);
- ``digital``:      the whole gradient as one packet of (b + 1) d bits over the deadline T;
- ``sign_only``:    d sign bits plus a 32-bit scale over T (signSGD);
- ``sign_modulus``: SP-FL: a sign packet of d bits in the share tau of the link and a modulus packet of
  b d bits in the rest, each with its own power.

A packet succeeds when the round's fading draw reaches the packet's failure threshold
(:mod:`spfl.simulator.channel`), so realized losses follow the closed-form error rates exactly.  Under block
fading both packets of a device see the same draw, so the packet with the lower threshold arrives
whenever the other one does (docs/model.md, "Packets and fading").  The thresholds are the link model's
(:func:`spfl.simulator.channel.packet_thresholds`), the same function the allocation's objective uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from spfl.simulator import kernels
from spfl.simulator.channel import packet_thresholds
from spfl.vocabulary import FADING_MODELS, PACKET_ERROR_MODELS

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


def magnitude_bits(modulus_bits: int, num_params: int) -> int:
    """Bits of d magnitudes: b per entry, plus the quantizer's 32-bit range for b not in (15, 31)."""
    return modulus_bits * num_params + (0 if modulus_bits in (31, 15) else SCALE_BITS)


@dataclass(frozen=True)
class PacketLayout:
    """Bits of one device's packets and the round deadline (the same for every device)."""

    sign_bits: float     # the sign packet, or the one packet of single-packet schemes
    modulus_bits: float  # 0: the scheme sends a single packet
    deadline: float      # T (s)

    @property
    def two_packets(self) -> bool:
        return self.modulus_bits > 0

    @property
    def proportional_share(self) -> float:
        """tau = D_s / (D_s + D_m): both packets then need the same spectral efficiency."""
        return self.sign_bits / (self.sign_bits + self.modulus_bits)

    def share_for_setting(self, slot_share: float | str) -> float | None:
        """The sign share tau the run setting ``slot_share`` fixes (1 for single packets); None when the
        allocation optimizes it."""
        if not self.two_packets:
            return 1.0
        if slot_share == "optimized":
            return None
        return self.proportional_share if slot_share == "proportional" else float(slot_share)


@dataclass(frozen=True)
class Resources:
    """One round's radio resources per device (arrays of length K)."""

    bandwidth: np.ndarray      # B_k (Hz)
    power_sign: np.ndarray     # p_s,k (W): the sign packet's, or the single packet's
    power_modulus: np.ndarray  # p_m,k (W); 0 = no modulus packet
    slot_share: np.ndarray     # tau_k: the sign packet's share of the link (1 for single packets)


@dataclass(frozen=True)
class Link:
    """What the uplink physics needs besides the resources: gains, noise and the channel model."""

    gain: np.ndarray
    noise_psd: float
    per_model: str = "outage"
    waterfall_m: float = 1.0
    fading: str = "block"

    def __post_init__(self) -> None:
        if self.per_model not in PACKET_ERROR_MODELS:
            raise ValueError(f"per_model={self.per_model!r}: allowed {PACKET_ERROR_MODELS}")
        if self.fading not in FADING_MODELS:
            raise ValueError(f"fading={self.fading!r}: allowed {FADING_MODELS}")

    def thresholds(self, layout: PacketLayout, resources: Resources) -> tuple[np.ndarray, np.ndarray]:
        """Failure thresholds (t_s, t_m) of every device's packets; inf = always lost / not sent."""
        return packet_thresholds(resources.bandwidth, resources.power_sign, resources.power_modulus,
                                 resources.slot_share, gain=self.gain, sign_bits=layout.sign_bits,
                                 modulus_bits=layout.modulus_bits, deadline=layout.deadline,
                                 noise_psd=self.noise_psd, per_model=self.per_model, waterfall_m=self.waterfall_m)


@dataclass(frozen=True)
class Delivery:
    """What happened to every device's packets in one round (PS-side, CRC-detected).

    Arrays have the devices on the last axis (a leading axis of rounds is allowed)."""

    sent_sign: np.ndarray      # bool: the sign / single packet was transmitted
    sent_modulus: np.ndarray   # bool
    sign_ok: np.ndarray        # bool: the sign / single packet arrived
    modulus_ok: np.ndarray     # bool
    q_sign: np.ndarray         # closed-form error probability of each sign / single packet
    q_modulus: np.ndarray
    uplink_bits: float
    single_packet: bool = False  # the sign packet carries the whole upload

    @property
    def both_ok(self) -> np.ndarray:
        """The full gradient arrived (for single-packet schemes: the packet arrived)."""
        return self.sign_ok if self.single_packet else self.sign_ok & self.modulus_ok


@dataclass(frozen=True, eq=False)
class Payload:
    """What the PS decodes from one round's packets, a row per device, formed on demand.

    ``gradients``: the whole gradients, from a sign packet with its modulus packet (or from the one
    whole-gradient packet), exact for 31-bit moduli; ``signs`` / ``scaled_signs``: a sign packet alone;
    ``scales``: the 32-bit scale ||g_k||_1 / d a sign packet may carry.  ``uploads`` are the vectors the
    devices sent, which they also describe on the control channel (norms, sketches)."""

    uploads: torch.Tensor
    modulus_bits: int = 31

    @cached_property
    def gradients(self) -> torch.Tensor:
        if self.modulus_bits >= 31:
            return self.uploads
        return signs(self.uploads) * quantize_modulus(self.uploads.abs(), self.modulus_bits)

    def signs(self, k: int) -> torch.Tensor:
        """Device k's signs."""
        return signs(self.uploads[k])

    def scaled_signs(self, k: int, scale: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Device k's signs times ``scale`` (one number, or d entries), into ``out`` when given."""
        return torch.mul(signs(self.uploads[k]), scale, out=out)

    def scales(self, workspace: kernels.Workspace) -> torch.Tensor:
        """Every device's ||g_k||_1 / d (K x 1), in the uploads' dtype; |g| is formed in ``workspace``."""
        return kernels.abs_means(self.uploads, workspace)


@dataclass(frozen=True)
class Scheme:
    """A transmission scheme: its packets, how they travel, and what the PS reads from them."""

    name: str
    error_free: bool = False

    def layout(self, num_params: int, modulus_bits: int, compensation: str, deadline: float) -> PacketLayout:
        raise NotImplementedError

    def transmit(self, layout: PacketLayout, resources: Resources, link: Link, fading: np.ndarray) -> Delivery:
        """Send each device's packets; ``fading`` holds (..., K, 2) draws of |h|^2 (channel.draw_fading)."""
        if self.error_free:
            ones = np.ones(fading.shape[:-1], dtype=bool)
            zeros = np.zeros(fading.shape[:-1])
            return Delivery(ones, ones, ones, ones, zeros, zeros, float(layout.sign_bits * ones.shape[-1]),
                            single_packet=True)
        t_s, t_m = link.thresholds(layout, resources)
        sent_sign = (resources.bandwidth > 0) & (resources.power_sign > 0)
        sent_modulus = sent_sign & (resources.power_modulus > 0) & layout.two_packets
        sign_ok = sent_sign & (fading[..., 0] >= t_s)
        modulus_ok = sent_modulus & (fading[..., 1] >= t_m)
        bits = layout.sign_bits * sent_sign.sum() + layout.modulus_bits * sent_modulus.sum()
        return Delivery(sent_sign, sent_modulus, sign_ok, modulus_ok, -np.expm1(-t_s), -np.expm1(-t_m),
                        float(bits), single_packet=not layout.two_packets)

    def decode(self, uploads: torch.Tensor, modulus_bits: int) -> Payload:
        """The payload of every device's packets, moduli at ``modulus_bits`` per entry; which of its parts
        the PS may use depends on what arrived (a :class:`Delivery`)."""
        return Payload(uploads, modulus_bits)


class _WholeGradient(Scheme):
    def layout(self, num_params, modulus_bits, compensation, deadline):
        return PacketLayout(num_params + magnitude_bits(modulus_bits, num_params), 0.0, deadline)


class _SignOnly(Scheme):
    def layout(self, num_params, modulus_bits, compensation, deadline):
        return PacketLayout(num_params + SCALE_BITS, 0.0, deadline)


class _SignModulus(Scheme):
    def layout(self, num_params, modulus_bits, compensation, deadline):
        sign_bits = num_params + (SCALE_BITS if compensation == "scalar" else 0)
        return PacketLayout(sign_bits, magnitude_bits(modulus_bits, num_params), deadline)


SCHEMES: dict[str, Scheme] = {s.name: s for s in (
    _WholeGradient("error_free", error_free=True),
    _WholeGradient("digital"),
    _SignOnly("sign_only"),
    _SignModulus("sign_modulus"),
)}


def get_scheme(name: str) -> Scheme:
    try:
        return SCHEMES[name]
    except KeyError:
        raise ValueError(f"scheme {name!r}: allowed {', '.join(SCHEMES)}") from None
