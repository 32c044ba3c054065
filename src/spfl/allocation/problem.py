"""One round's allocation problem (SPEC sections 3 and 5) as a validated, immutable value.

Everything the solver needs is here: the per-device weights, large-scale gains and packet
utilities reported before allocation, the round's budgets, and the [recon] switches.  The
derived quantities (slot lengths, power-constraint weights, the modulus's extra worth) are
properties, so every module reads them from one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from spfl.channel import PACKET_ERROR_MODELS

POWER_CONSTRAINTS = ("energy", "sum")
_DEVICE_FIELDS = ("alpha", "gain", "u_sign", "u_modulus")
_POSITIVE_SCALARS = (
    "total_bandwidth", "max_power", "noise_psd", "deadline", "sign_bits", "modulus_bits", "waterfall_m",
)


@dataclass(frozen=True)
class AllocationProblem:
    """Inputs of one round's allocation (units: Hz, W, W/Hz, s, bits).

    ``alpha``: device weights; ``gain``: large-scale gains lambda_k; ``u_sign`` / ``u_modulus``:
    packet utilities U_s,k and U_m,k (SPEC section 5).  ``slot_share`` is tau, the share of the
    deadline given to the sign packet; None means tau = sign_bits / (sign_bits + modulus_bits).
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
    power_constraint: str = "energy"
    per_model: str = "outage"
    waterfall_m: float = 1.0
    slot_share: float | None = None

    def __post_init__(self) -> None:
        for name in _DEVICE_FIELDS:
            object.__setattr__(self, name, _device_array(name, getattr(self, name)))
        sizes = {name: getattr(self, name).size for name in _DEVICE_FIELDS}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"device arrays must have equal lengths, got {sizes}")
        for name in _POSITIVE_SCALARS:
            object.__setattr__(self, name, _positive_scalar(name, getattr(self, name)))
        if self.power_constraint not in POWER_CONSTRAINTS:
            raise ValueError(f"power_constraint={self.power_constraint!r}: allowed {POWER_CONSTRAINTS}")
        if self.per_model not in PACKET_ERROR_MODELS:
            raise ValueError(f"per_model={self.per_model!r}: allowed {PACKET_ERROR_MODELS}")
        if self.slot_share is not None:
            tau = float(self.slot_share)
            if not 0.0 < tau < 1.0:
                raise ValueError(f"slot_share={self.slot_share!r}: allowed None or a float in (0, 1)")
            object.__setattr__(self, "slot_share", tau)

    @property
    def num_devices(self) -> int:
        return int(self.alpha.size)

    @property
    def tau(self) -> float:
        """Sign packet's share of the deadline (SPEC section 3)."""
        if self.slot_share is not None:
            return self.slot_share
        return self.sign_bits / (self.sign_bits + self.modulus_bits)

    @property
    def sign_slot(self) -> float:
        return self.tau * self.deadline

    @property
    def modulus_slot(self) -> float:
        return (1.0 - self.tau) * self.deadline

    @property
    def power_weights(self) -> tuple[float, float]:
        """(c_s, c_m) of the per-device power constraint c_s p_s + c_m p_m <= max_power."""
        if self.power_constraint == "energy":
            return self.tau, 1.0 - self.tau
        return 1.0, 1.0

    @property
    def equal_power(self) -> float:
        """Power of each packet when both get the same power and the constraint is tight."""
        c_s, c_m = self.power_weights
        return self.max_power / (c_s + c_m)

    @cached_property
    def extra_worth(self) -> np.ndarray:
        """(U_m - U_s)^+: what the modulus adds on top of the sign (SPEC section 5)."""
        return np.maximum(self.u_modulus - self.u_sign, 0.0)

    @cached_property
    def log_worth_ratio(self) -> np.ndarray:
        """log(V / U_s): how much more the modulus adds than the sign alone is worth (+-inf allowed)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(self.extra_worth) - np.log(self.u_sign)


def _device_array(name: str, value) -> np.ndarray:
    """A read-only private copy, so a caller's later edits cannot change a solved problem."""
    array = np.array(value, dtype=float, ndmin=1)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} has shape {array.shape}: allowed a non-empty 1-D array")
    bad = np.flatnonzero(~np.isfinite(array) | (array < 0))
    if bad.size:
        raise ValueError(f"{name}[{bad[0]}]={float(array[bad[0]])!r}: allowed finite values >= 0")
    array.setflags(write=False)
    return array


def _positive_scalar(name: str, value) -> float:
    number = float(value)
    if not np.isfinite(number) or number <= 0:
        raise ValueError(f"{name}={value!r}: allowed a finite number > 0")
    return number
