"""Methods (docs/model.md, section 8) as compositions of a transmission scheme, an allocation policy and
an aggregation rule.  There is one training loop (:mod:`spfl.simulator.simulation`); a method only picks
its three parts, so a new method is one line here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    name: str
    scheme: str       # spfl.simulator.transmission.SCHEMES
    policy: str       # spfl.simulator.allocation.ALLOCATION_POLICIES, or "none" for the error-free bound
    aggregation: str  # spfl.simulator.aggregation.RULES
    summary: str


_TABLE = (
    Method("ideal", "error_free", "none", "full", "error-free FedSGD (upper bound)"),
    Method("digital", "digital", "uniform", "full", "whole gradient in one packet; a lost packet drops the device"),
    Method("digital_reuse", "digital", "uniform", "stale", "digital, reusing a lost device's last gradient"),
    Method("scheduling", "digital", "scheduling", "full", "importance- and channel-aware device scheduling"),
    Method("signsgd", "sign_only", "uniform", "signs", "sign packets with a 32-bit scale only"),
    Method("spfl", "sign_modulus", "spfl", "sign_reuse", "SP-FL: sign reuse, optimized bandwidth and power"),
    Method("spfl_uniform", "sign_modulus", "uniform", "sign_reuse", "SP-FL without optimization"),
    Method("spfl_power", "sign_modulus", "power", "sign_reuse", "SP-FL, power optimized, uniform bandwidth"),
    Method("spfl_bandwidth", "sign_modulus", "bandwidth", "sign_reuse", "SP-FL, bandwidth optimized, equal power"),
    Method("spfl_noreuse", "sign_modulus", "spfl", "no_reuse", "SP-FL allocation without sign reuse"),
)
METHOD = {m.name: m for m in _TABLE}
METHODS = tuple(METHOD)  # the vocabulary of the `method` setting, in the tables' order


def get_method(name: str) -> Method:
    try:
        return METHOD[name]
    except KeyError:
        raise ValueError(f"method {name!r} is unknown: allowed {', '.join(METHODS)}") from None
