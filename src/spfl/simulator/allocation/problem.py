"""One round's allocation problem as a validated, immutable value (docs/model.md, "Allocation").

Everything the solver needs is here: the per-device weights, large-scale gains and packet worths
reported before allocation, the round's budgets, the packets' bits, and the reconstruction switches
(error model, fading, normalization, power constraint, sign share).  Derived quantities are
properties, so every module reads them from one place.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spfl.configuration.settings import SETTING
from spfl.simulator.allocation.descent import DescentTerms
from spfl.vocabulary import FADING_MODELS, NORMALIZATIONS, PACKET_ERROR_MODELS, POWER_CONSTRAINTS

_DEVICE_FIELDS = ("alpha", "gain", "u_sign", "u_modulus")
_NONNEGATIVE_FIELDS = ("alpha", "gain")
_POSITIVE_SCALARS = ("total_bandwidth", "max_power", "noise_psd", "deadline", "sign_bits", "waterfall_m")


@dataclass(frozen=True)
class AllocationProblem:
    """Inputs of one round's allocation (units: Hz, W, W/Hz, s, bits).

    ``alpha``: device weights n_k / n; ``gain``: large-scale gains lambda_k; ``u_sign`` / ``u_modulus``:
    worth U_s,k of a sign-only receipt and U_m,k of a full gradient under the method's aggregation.
    ``modulus_bits`` = 0 describes a single-packet scheme (its one packet is the "sign" packet).
    ``slot_share``: the sign packet's share tau of the link, fixed (1 for a single packet), or None
    when the allocation chooses it per device.  ``sign_only_counts``: whether a sign that arrives
    without its modulus enters the aggregate.  ``descent``: the devices' inner products for the
    descent surrogate (:mod:`.descent`); None maximizes the Jensen surrogate of ``u_sign`` / ``u_modulus``.
    """

    alpha: np.ndarray
    gain: np.ndarray
    u_sign: np.ndarray
    u_modulus: np.ndarray
    total_bandwidth: float
    max_power: float
    noise_psd: float
    deadline: float
    sign_bits: float
    modulus_bits: float
    slot_share: float | None
    power_constraint: str = "energy"
    per_model: str = "outage"
    waterfall_m: float = 1.0
    fading: str = "block"
    normalize: str = SETTING["normalize"].default  # the run setting's default
    sign_only_counts: bool = True
    descent: DescentTerms | None = None

    def __post_init__(self) -> None:
        for name in _DEVICE_FIELDS:
            object.__setattr__(self, name, _device_array(name, getattr(self, name),
                                                         nonnegative=name in _NONNEGATIVE_FIELDS))
        sizes = {name: getattr(self, name).size for name in _DEVICE_FIELDS}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"device arrays must have equal lengths, got {sizes}")
        if not self.alpha.sum() > 0:
            raise ValueError("alpha must have a positive sum")
        for name in _POSITIVE_SCALARS:
            object.__setattr__(self, name, _positive_scalar(name, getattr(self, name)))
        bits = float(self.modulus_bits)
        if not (np.isfinite(bits) and bits >= 0):
            raise ValueError(f"modulus_bits={self.modulus_bits!r}: allowed a finite number >= 0")
        object.__setattr__(self, "modulus_bits", bits)
        for name, allowed in (("power_constraint", POWER_CONSTRAINTS), ("per_model", PACKET_ERROR_MODELS),
                              ("fading", FADING_MODELS), ("normalize", NORMALIZATIONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}: allowed {allowed}")
        if self.descent is not None and self.descent.states.shape[0] != self.num_devices:
            raise ValueError(f"descent terms for {self.descent.states.shape[0]} devices, problem has "
                             f"{self.num_devices}")
        if not self.two_packets:
            object.__setattr__(self, "slot_share", 1.0)
        elif self.slot_share is not None:
            tau = float(self.slot_share)
            if not 0.0 < tau <= 1.0:
                raise ValueError(f"slot_share={self.slot_share!r}: allowed None or a number in (0, 1]")
            object.__setattr__(self, "slot_share", tau)

    @property
    def num_devices(self) -> int:
        return int(self.alpha.size)

    @property
    def two_packets(self) -> bool:
        return self.modulus_bits > 0

    @property
    def proportional_share(self) -> float:
        """tau = D_s / (D_s + D_m): both packets need the same spectral efficiency."""
        return self.sign_bits / (self.sign_bits + self.modulus_bits)

    @property
    def fixed_share(self) -> float:
        """The sign share used where none is chosen: the fixed one, else the proportional one."""
        return self.proportional_share if self.slot_share is None else self.slot_share

    def power_weights(self, slot_share):
        """(c_s, c_m) of the per-device power constraint c_s p_s + c_m p_m <= max_power.

        energy: tau p_s + (1 - tau) p_m (the energy of the round, or equivalently the power of two
        concurrent sub-bands tau B and (1 - tau) B); sum: p_s + p_m."""
        tau = np.asarray(slot_share, dtype=float)
        if self.power_constraint == "energy":
            return tau, 1.0 - tau
        return np.ones_like(tau), np.ones_like(tau)

    def equal_power(self, slot_share) -> np.ndarray:
        """Power of each packet when both get the same power on the tight constraint (a single packet:
        the whole budget)."""
        c_s, c_m = self.power_weights(slot_share)
        return self.max_power / (c_s + np.where(self.two_packets, c_m, 0.0))


def _device_array(name: str, value, nonnegative: bool) -> np.ndarray:
    """A read-only private copy, so a caller's later edits cannot change a solved problem."""
    array = np.array(value, dtype=float, ndmin=1)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} has shape {array.shape}: allowed a non-empty 1-D array")
    bad = np.flatnonzero(~np.isfinite(array) | ((array < 0) if nonnegative else False))
    if bad.size:
        allowed = "finite values >= 0" if nonnegative else "finite values"
        raise ValueError(f"{name}[{bad[0]}]={float(array[bad[0]])!r}: allowed {allowed}")
    array.setflags(write=False)
    return array


def _positive_scalar(name: str, value) -> float:
    number = float(value)
    if not np.isfinite(number) or number <= 0:
        raise ValueError(f"{name}={value!r}: allowed a finite number > 0")
    return number
