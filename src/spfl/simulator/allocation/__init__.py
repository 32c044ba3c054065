"""Hierarchical resource allocation of SP-FL (docs/model.md, "Objective" and "Solver"): numpy, with the
inner loops compiled by numba (:mod:`spfl.simulator.compiled`).

Per round, bandwidth is split across devices and each device's power (and, optionally, its link)
between its sign and modulus packets so as to maximize Phi, the expected one-step surrogate of the
aggregate the method forms.  Public names: :class:`AllocationProblem`, :func:`objective`,
:func:`packet_worth`, :func:`allocate`, :class:`Allocation` and ``ALLOCATION_POLICIES``; and
:func:`clear_shared_tables` (the solver keeps each link's bandwidth-grid tables for its next rounds).
"""

from spfl.simulator.allocation.objective import Allocation, objective, packet_worth
from spfl.simulator.allocation.policies import ALLOCATION_POLICIES, allocate, uniform_point
from spfl.simulator.allocation.problem import NORMALIZATIONS, POWER_CONSTRAINTS, AllocationProblem
from spfl.simulator.allocation.separable import clear_shared_tables

__all__ = [
    "ALLOCATION_POLICIES",
    "NORMALIZATIONS",
    "POWER_CONSTRAINTS",
    "Allocation",
    "AllocationProblem",
    "allocate",
    "clear_shared_tables",
    "objective",
    "packet_worth",
    "uniform_point",
]
