"""The one way the simulator compiles its inner loops: numba, cached on disk.

The allocation solver's rounds are many small steps (K = 20: arrays of a few hundred numbers), where
numpy spends more time per call than on arithmetic; its kernels (and the link model they call) run as
compiled loops instead.  Every kernel is compiled with the same options: ``error_model="numpy"`` (a
division by zero gives inf or NaN, as numpy's, instead of raising), ``cache`` (the machine code is kept
next to the source, or in numba's user cache where the source is read-only, so a later process loads
it in milliseconds), ``nogil`` (a solve may overlap training in another thread), no ``fastmath`` and no
``parallel`` (IEEE arithmetic in a fixed order: the same bytes on any machine and core count).
"""

from __future__ import annotations

import numba

jit = numba.njit(cache=True, nogil=True, error_model="numpy")
"""Decorator of every compiled kernel (``@jit``)."""

inline = numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
"""Decorator of a kernel's helper that takes arrays and is called per entry: inlined where it is called
(a call that passes arrays copies their descriptors, which cost 7x the work of a grid entry)."""

