"""Hierarchical resource allocation of SP-FL (SPEC sections 5 and 6), pure numpy/scipy.

Per round, bandwidth is split across devices and each device's power between its sign and
modulus packets so as to maximize the one-step importance objective Phi.  Public names:
:class:`AllocationProblem`, :func:`objective`, :func:`packet_error`, :func:`allocate`,
:class:`Allocation` and ``ALLOCATION_POLICIES``.
"""

from spfl.allocation.objective import objective, objective_gradient, packet_error
from spfl.allocation.policies import ALLOCATION_POLICIES, Allocation, allocate
from spfl.allocation.problem import POWER_CONSTRAINTS, AllocationProblem

__all__ = [
    "ALLOCATION_POLICIES",
    "POWER_CONSTRAINTS",
    "Allocation",
    "AllocationProblem",
    "allocate",
    "objective",
    "objective_gradient",
    "packet_error",
]
