"""The one way the allocation compiles its inner loops: numba, ahead of the first call, cached on disk.

The solver's rounds are many small steps (K = 20: arrays of a few hundred numbers), where numpy spends
more time per call than on arithmetic; the kernels in :mod:`.packet`, :mod:`.bandwidth` and
:mod:`.evaluation` run those steps as compiled loops instead.  Every kernel is compiled with the same
options: ``error_model="numpy"`` (a division by zero gives inf or NaN, as numpy's, instead of raising),
``cache`` (the machine code is kept next to the source, or in numba's user cache where the source
is read-only, so a later process loads it in milliseconds), ``nogil`` (the solve may overlap training in
another thread), no ``fastmath`` and no ``parallel`` (IEEE arithmetic in a fixed order: the same bytes on
any machine and core count).
"""

from __future__ import annotations

import numba

jit = numba.njit(cache=True, nogil=True, error_model="numpy")
"""Decorator of every compiled kernel of the allocation (``@jit``)."""
