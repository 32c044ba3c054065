"""The separable problem a linearization of Phi defines, solved for a batch of coefficient sets at once.

Given every device's coefficients (a_k, b_k) (Phi = a_k pi_sign,k + b_k pi_both,k + terms without device
k), the best allocation of the linearized Phi is separable: per device the packet level (power split and,
when optimized, sign share) at its bandwidth (:mod:`.power`, :mod:`.packet`), and across devices the
bandwidth split (:mod:`.bandwidth`: a knapsack over a grid of J levels, then two zooms).  The solver asks
for several coefficient sets in each of its rounds (two linearization points, the ablations), so here each
stage runs for all of them in one vectorized pass: the packet level on arrays (S, levels, K), the knapsack
with a batch axis.  Everything that depends only on the problem (the grid's thresholds per sign share, the
coefficient-free part of the exact block-fading maximizer) is computed once per problem and kept in a
:class:`PacketLevel`.  Under block fading (or with one packet) the stages are the compiled loops of
:mod:`.level_kernels` (:func:`_solve_compiled`); per-packet fading keeps the numpy form, which the tests
also use as the compiled loops' reference.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

import spfl.simulator.allocation.level_kernels as level_kernels
from spfl.simulator.allocation.bandwidth import _ZOOM_STEPS, _ZOOMS, best_choices, grid_units
from spfl.simulator.allocation.packet import BlockPacket
from spfl.simulator.allocation.power import (
    _TAU_LOGITS,
    _TAU_ZOOM_LEVELS,
    Split,
    _geometry,
    _logit,
    _search,
    _sigmoid,
    share_candidates,
)
from spfl.simulator.allocation.problem import AllocationProblem


class _Table:
    """The packet problem of every entry at one sign share: thresholds, constraint weights, and the
    coefficient-free part of its maximizer."""

    def __init__(self, problem: AllocationProblem, bandwidth: np.ndarray, tau, fixed: bool):
        self.tau, self.c_s, self.c_m, self.A, self.M = _geometry(problem, bandwidth, tau)
        self.fixed = fixed
        self.problem = problem
        with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
            if fixed:  # equal packet powers: x is the sign's share of the budget at equal powers
                self.x = np.where(self.tau < 1.0, self.c_s / (self.c_s + self.c_m), 1.0)
                t_s = self.A / self.x
                t_m = self.M / (1.0 - self.x)
                joint = np.maximum(t_s, t_m) if problem.fading == "block" else t_s + t_m
                self.pi_sign = np.exp(-t_s)
                self.pi_both = np.where(self.x < 1.0, np.exp(-joint), 0.0)
            elif problem.fading == "block" or not problem.two_packets:
                self.packet = BlockPacket(self.A, self.M)
            else:
                self.packet = None

    def best(self, a, b):
        """(value, x) of every entry for coefficients broadcasting against the entries' shape."""
        with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
            if self.fixed:
                value = a * self.pi_sign + b * self.pi_both
                return value, np.broadcast_to(self.x, value.shape)
            if self.packet is not None:
                return self.packet.best(a, b)
            shape = np.broadcast_shapes(np.shape(a), np.shape(b), self.A.shape)
            x, value = _search(self.problem, *(np.broadcast_to(v, shape) for v in (self.A, self.M, a, b)))
            return value, x

    def split(self, value, x) -> Split:
        """The packet powers of the chosen x (a device whose best term is not positive stays silent)."""
        budget = self.problem.max_power
        with np.errstate(divide="ignore", invalid="ignore"):
            silent = ~(value > 0)
            return Split(np.where(silent, 0.0, value), np.where(silent, 0.0, x * budget / self.c_s),
                         np.where(silent | (x >= 1.0) | ~np.isfinite(self.M), 0.0,
                                  (1.0 - x) * budget / np.maximum(self.c_m, 1e-300)),
                         np.broadcast_to(self.tau, value.shape))


class _GridTable:
    """The grid's table for the compiled loops: thresholds at full power (A, M: (shares, J + 1, K)) and
    either their block packets (``packet``) or, with equal packet powers, the arrival probabilities; as
    :func:`.level_kernels.solve_shares` reads them (``shares``, ``kernel_arrays``)."""

    def __init__(self, level: PacketLevel, taus: np.ndarray, fixed: bool):
        shape = (taus.size,) + level.grid.shape
        A, M = np.empty(shape), np.empty(shape)
        pi_sign, pi_both = (np.empty(shape), np.empty(shape)) if fixed else (_NO_TABLE, _NO_TABLE)
        level_kernels.grid_tables(level.grid[:, 0].copy(), np.ascontiguousarray(taus, dtype=float), level.gain,
                                  level.link, fixed, A, M, pi_sign, pi_both)
        self.shares = taus.size
        if fixed:
            self.kernel_arrays = _NO_PACKET + (pi_sign, pi_both)
        else:
            packet = BlockPacket(A, M)
            self.kernel_arrays = (packet.A, packet.M, packet.sign, packet.kink_x, packet.kink_sign, packet.kink_both,
                                  packet.bracket, packet.table_x, packet.table_g, packet.table_z, packet.log_ratio,
                                  _NO_TABLE, _NO_TABLE)


_SHARED = threading.local()   # per thread: the grid tables of the last few links (a table fills lazily)
_SHARED_TABLES = 4            # tables kept per thread
_SHARED_BYTES = 32 << 20      # larger tables are not kept (K = 100, five sign shares: 14 MB)


def _shared_grid(level: PacketLevel, taus: np.ndarray, fixed: bool) -> _GridTable:
    """The grid's table of ``level``, shared with earlier problems of the same link: a table depends only on
    the devices' gains, the link and the budgets (not on the round's coefficients), which every round and
    method of a simulated cell share, so its thresholds, block packets and lazily computed points are
    built once per cell instead of once per solve.  The numbers are the same either way."""
    problem = level.problem
    key = (level.gain.tobytes(), level.link, level.units, float(problem.total_bandwidth), taus.tobytes(), fixed)
    kept = getattr(_SHARED, "tables", None)
    if kept is None:
        kept = _SHARED.tables = OrderedDict()
    if key in kept:
        kept.move_to_end(key)
        return kept[key]
    table = _GridTable(level, taus, fixed)
    if sum(array.nbytes for array in table.kernel_arrays) <= _SHARED_BYTES:
        kept[key] = table
        while len(kept) > _SHARED_TABLES:
            kept.popitem(last=False)
    return table


def clear_shared_tables() -> None:
    """Forget this thread's shared grid tables (benchmarks of one solve from scratch)."""
    _SHARED.tables = OrderedDict()


class PacketLevel:
    """The packet level of one problem, with the bandwidth grid's tables kept per sign share."""

    def __init__(self, problem: AllocationProblem, grid_tables: dict | None = None):
        """``grid_tables``: another level's tables to share (the same problem at another fixed share)."""
        self.problem = problem
        num = problem.num_devices
        self.units = grid_units(num)
        levels = np.arange(self.units + 1) / self.units
        self.grid = np.broadcast_to(levels[:, None], (self.units + 1, num)) * problem.total_bandwidth
        self.grid_tables: dict = {} if grid_tables is None else grid_tables
        # Block fading (or one packet): the compiled loops of :mod:`.level_kernels`; per-packet fading keeps
        # the lattice search of :mod:`.power` on numpy arrays.
        self.compiled = problem.fading == "block" or not problem.two_packets
        self.link = level_kernels.link_of(problem)
        self.gain = np.ascontiguousarray(problem.gain)

    def taus(self, fixed: bool, coarse: bool = False) -> np.ndarray:
        if fixed:
            return np.array([self.problem.fixed_share])
        return share_candidates(self.problem, coarse)

    def _table(self, bandwidth: np.ndarray, taus: np.ndarray, fixed: bool) -> _Table:
        """One table of every entry of ``bandwidth`` at every sign share of ``taus`` (a leading axis)."""
        taus = np.asarray(taus, dtype=float)
        if taus.ndim == 1:
            taus = taus.reshape(taus.shape + (1,) * bandwidth.ndim)
        return _Table(self.problem, bandwidth, taus, fixed)

    def grid_table(self, fixed: bool):
        """The grid's table at the coarse sign shares (kept: one per share set and power mode)."""
        taus = self.taus(fixed, coarse=True)
        key = (taus.tobytes(), fixed)
        if key not in self.grid_tables:
            if self.compiled:
                self.grid_tables[key] = _shared_grid(self, taus, fixed)
            else:
                table = self.grid_tables[key] = self._table(self.grid, taus, fixed)
                table.shares = taus.size
        return self.grid_tables[key]

    def grid_values(self, coef_sign, coef_both, fixed: bool) -> np.ndarray:
        """The best term (S, J + 1, K) of every device at every grid level for coefficients (S, 1, K), over
        the coarse sign shares (silent: 0), on numpy arrays (the compiled loops: :func:`_solve_compiled`).
        The grid's table is kept."""
        value = self.grid_table(fixed).best(coef_sign[:, None], coef_both[:, None])[0]   # (S, shares, J + 1, K)
        return np.max(np.where(value > 0, value, 0.0), axis=1)

    def single_share(self, fixed: bool) -> bool:
        """Whether the packet level searches one sign share (then a split needs no zoom of it)."""
        return fixed or self.problem.slot_share is not None or not self.problem.two_packets

    def values_and_split(self, bandwidth, coef_sign, coef_both, fixed: bool) -> tuple[np.ndarray, Split]:
        """:meth:`values` and the split of every entry, where the level searches one sign share."""
        table = self._table(bandwidth, self.taus(fixed), fixed)
        value, x = table.best(coef_sign, coef_both)
        split = table.split(value, x)
        split = Split(*(getattr(split, f)[0] for f in Split.__dataclass_fields__))
        return split.value, split

    def values(self, bandwidth, coef_sign, coef_both, fixed: bool) -> np.ndarray:
        """The best term of every entry of ``bandwidth`` (S, L, K) over the fine sign shares (silent: 0)."""
        value = self._table(bandwidth, self.taus(fixed), fixed).best(coef_sign, coef_both)[0]
        return np.max(np.where(value > 0, value, 0.0), axis=0)

    def split(self, bandwidth, coef_sign, coef_both, fixed: bool, refine: bool = True, coarse: bool = False
              ) -> Split:
        """The best split of every device at ``bandwidth`` (S, K) for coefficients (S, K): the first best
        sign share of the candidates (``coarse``: of the coarse set), then (tau optimized, ``refine``) a
        zoom of each device's share."""
        problem = self.problem
        zoom = refine and not fixed and problem.slot_share is None and problem.two_packets
        if self.compiled:
            shape = np.broadcast_shapes(np.shape(bandwidth), np.shape(coef_sign), np.shape(coef_both))
            rows = (-1, problem.num_devices)
            arrays = [np.ascontiguousarray(np.broadcast_to(np.asarray(v, dtype=float), shape)).reshape(rows)
                      for v in (bandwidth, coef_sign, coef_both)]
            out = [np.empty(arrays[0].shape) for _ in range(4)]
            level_kernels.split(*arrays, self.gain, self.link, self.taus(fixed, coarse), fixed,
                                _TAU_LOGITS[1] - _TAU_LOGITS[0], _TAU_ZOOM_LEVELS if zoom else 0, *out)
            return Split(*(array.reshape(shape) for array in out))
        best = _first_best(self._split_at(bandwidth, self.taus(fixed, coarse), coef_sign, coef_both, fixed))
        if zoom:
            step = _TAU_LOGITS[1] - _TAU_LOGITS[0]
            for _ in range(_TAU_ZOOM_LEVELS):
                center = _logit(np.clip(best.slot_share, 1e-12, 1.0 - 1e-12))
                # An entry at tau = 1 stays there: both trials repeat it, and a tie never replaces the best.
                trials = np.where(best.slot_share >= 1.0, 1.0, _sigmoid(center + np.array([-step, step])[
                    (slice(None),) + (None,) * center.ndim]))
                tried = self._split_at(bandwidth, trials, coef_sign, coef_both, fixed)
                best = _first_best(Split(*(np.concatenate([getattr(best, f)[None], getattr(tried, f)])
                                           for f in Split.__dataclass_fields__)))
                step /= 2.0
        return best

    def _split_at(self, bandwidth, taus, coef_sign, coef_both, fixed) -> Split:
        """The split of every entry at every sign share (a leading axis)."""
        table = self._table(bandwidth, taus, fixed)
        value, x = table.best(coef_sign, coef_both)
        return table.split(value, x)


def _first_best(candidates: Split) -> Split:
    """Per entry, the first candidate (leading axis) with the largest value (values are never NaN)."""
    if candidates.value.shape[0] == 1:
        return Split(*(getattr(candidates, f)[0] for f in Split.__dataclass_fields__))
    pick = np.argmax(candidates.value, axis=0)[None]
    return Split(*(np.take_along_axis(np.broadcast_to(getattr(candidates, f), candidates.value.shape), pick,
                                      axis=0)[0] for f in Split.__dataclass_fields__))


def solve_bandwidth(level: PacketLevel, coef_sign: np.ndarray, coef_both: np.ndarray, fixed: bool
                    ) -> tuple[np.ndarray, Split]:
    """Shares (S, K) summing to 1 maximizing sum_k F_k(b_k) for each coefficient set (rows of (S, K)), and
    the packet-level split there: the knapsack over the grid, two zooms of +-1 step in eighths, then the
    split at the normalized shares (``fixed``: equal packet powers at the fixed sign share)."""
    problem = level.problem
    num = problem.num_devices
    if level.compiled:
        return _solve_compiled(level, coef_sign, coef_both, fixed)
    a, b = coef_sign[:, None, :], coef_both[:, None, :]
    values = level.grid_values(a, b, fixed)                                       # (S, J + 1, K)
    share = best_choices(np.swapaxes(values, 1, 2), level.units) / level.units
    step = 1.0 / level.units
    offsets = np.arange(-_ZOOM_STEPS, _ZOOM_STEPS + 1)
    # With one sign share, the last zoom's splits at the chosen offsets are the answer's (the shares'
    # normalization below moves them by rounding only); with tau optimized the answer's shares are zoomed.
    reuse = level.single_share(fixed)
    for zoom in range(_ZOOMS):
        trial = share[:, :, None] + offsets * (step / _ZOOM_STEPS)               # (S, K, options)
        valid = (trial >= 0) & (trial <= 1)
        bandwidth = np.swapaxes(np.clip(trial, 0.0, 1.0), 1, 2) * problem.total_bandwidth
        if reuse and zoom == _ZOOMS - 1:
            values, splits = level.values_and_split(bandwidth, a, b, fixed)
            values = np.where(values > 0, values, 0.0)
        else:
            values = level.values(bandwidth, a, b, fixed)
        pick = best_choices(np.where(valid, np.swapaxes(values, 1, 2), -np.inf), _ZOOM_STEPS * num)
        share = np.clip(np.take_along_axis(trial, pick[:, :, None], axis=2)[:, :, 0], 0.0, 1.0)
        step /= _ZOOM_STEPS
    share = share / share.sum(axis=1, keepdims=True)
    if reuse:
        chosen = pick[:, None, :]
        return share, Split(*(np.take_along_axis(getattr(splits, f), chosen, axis=1)[:, 0, :]
                              for f in Split.__dataclass_fields__))
    return share, level.split(share * problem.total_bandwidth, coef_sign, coef_both, fixed)


def _solve_compiled(level: PacketLevel, coef_sign: np.ndarray, coef_both: np.ndarray, fixed: bool
                    ) -> tuple[np.ndarray, Split]:
    """:func:`solve_bandwidth` with the packet level's compiled loops: the grid, its knapsack and the zooms in
    one call (:func:`.level_kernels.solve_shares`)."""
    problem = level.problem
    a, b = np.ascontiguousarray(coef_sign, dtype=float), np.ascontiguousarray(coef_both, dtype=float)
    table = level.grid_table(fixed)
    zoom = np.empty((5,) + a.shape + (2 * _ZOOM_STEPS + 1,))   # trial, values, power_sign, power_modulus, tau
    share, pick, solved = level_kernels.solve_shares(
        a, b, fixed, table.shares, *table.kernel_arrays, level.units, _ZOOMS, _ZOOM_STEPS, _OFFSETS, level.gain,
        level.link, level.taus(fixed), problem.total_bandwidth, zoom)
    if not solved:
        raise ValueError("knapsack: no choice of options summing to its total has a finite value")
    share = share / share.sum(axis=1, keepdims=True)
    if level.single_share(fixed):
        # (the last zoom's splits at the chosen offsets are the answer's: normalizing moves the shares by
        # rounding only)
        rows, devices = np.arange(a.shape[0])[:, None], np.arange(a.shape[1])[None, :]
        return share, Split(*zoom[1:, rows, devices, pick])
    return share, level.split(share * problem.total_bandwidth, a, b, fixed)


_OFFSETS = np.arange(-_ZOOM_STEPS, _ZOOM_STEPS + 1, dtype=float)   # a zoom's trial offsets, in sub-steps
_NO_TABLE = np.empty((0, 0, 0))
# The block packets' arrays (A, M, sign, kink x / sign / both, bracket, table x / g / z, log ratio) where a table
# has none, and a whole table where a search needs none, typed as the kernels read them.
_NO_PACKET = (*(np.empty(0) for _ in range(6)), np.empty(0, dtype=np.int8), *(np.empty((0, 0)) for _ in range(3)),
              np.empty(0))
EMPTY_GRID = (0, *_NO_PACKET, _NO_TABLE, _NO_TABLE)
