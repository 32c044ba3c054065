"""Device level: the split of the total bandwidth across devices, by dynamic programming.

With the packet-level decisions solved per device (:mod:`.power`), the bandwidth problem is
max sum_k F_k(b_k) subject to sum_k b_k = 1, b_k >= 0, where F_k(b) is device k's best term at the
share b.  F_k is S-shaped in b (nothing arrives until the link can carry the payload) with kinks
where the device changes mode (silent, sign only, both packets), so no local method can find which
devices to serve.  A max-plus knapsack over the grid b = j / J (J about 80, a multiple of K, so the
uniform split is on it) finds the exact grid optimum; two zooms then re-solve the same knapsack over
offsets of +-1 grid step in eighths around it (resolution 1 / (64 J)); they are local, so a continuous
optimum more than one grid step from the grid optimum is approached, not reached.  When the sign share
is optimized, the grid search tries a coarse set of shares and the zooms the fine one.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from spfl.simulator.allocation.power import Split
from spfl.simulator.allocation.problem import AllocationProblem

_TARGET_UNITS = 80
_ZOOM_STEPS = 8   # sub-steps per grid step in each zoom
_ZOOMS = 2
_FLAT = 1e-12     # marginal gains rising by less than this times the largest value count as concave


def grid_units(num_devices: int) -> int:
    """J: about 80 grid steps, the smallest multiple of K from 80 on (K itself beyond), so that b = 1 / K
    is on the grid."""
    return num_devices * max(1, -(-_TARGET_UNITS // num_devices))


def best_bandwidth(problem: AllocationProblem, coef_sign, coef_both, fixed_power: bool = False,
                   cache: dict | None = None) -> tuple[np.ndarray, Split]:
    """Shares b (summing to 1) maximizing sum_k F_k(b_k), and the packet-level split at them, for one
    coefficient set (:func:`.separable.solve_bandwidth` solves it for many at once).

    ``cache``: a dict kept for one solve; the grid's packet-level tables are computed once in it."""
    from spfl.simulator.allocation.separable import PacketLevel, solve_bandwidth  # (separable builds on this module)

    level = None if cache is None else cache.get("packet level")
    if level is None:
        level = PacketLevel(problem)
        if cache is not None:
            cache["packet level"] = level
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        share, split = solve_bandwidth(level, np.asarray(coef_sign, dtype=float)[None],
                                       np.asarray(coef_both, dtype=float)[None], fixed_power)
    return share[0], Split(*(getattr(split, f)[0] for f in Split.__dataclass_fields__))


def knapsack(values: np.ndarray, total: int) -> np.ndarray:
    """Option indices j_k (0 <= j_k < values.shape[1]) with sum_k j_k = total maximizing
    sum_k values[k, j_k] (max-plus dynamic program; -inf marks an impossible option).

    Of equally good choices the one found first is kept: going back from the last device, each takes the
    smallest j_k that is best given what the devices before it can reach."""
    num, options = values.shape
    if total > num * (options - 1):
        raise ValueError(f"knapsack total {total} exceeds what {num} devices x {options - 1} can reach")
    values = np.asarray(values, dtype=float)
    # best[k, s]: the best value of devices 0..k with their options summing to s, stored after options - 1
    # columns of -inf so that the table of device k, best[k - 1, s - j] + values[k, j], is read through a
    # sliding window.
    padded = np.full((num, options - 1 + total + 1), -np.inf)
    best = padded[:, options - 1:]
    best[0, : min(options, total + 1)] = values[0, : min(options, total + 1)]
    row, step = padded.strides  # the windows below step back into the -inf padding, never past it
    if total + 1 > 4 * options:
        # Few options, many sums (the zooms): table[j, s], reduced over j, a vectorized maximum per option;
        # the choices are found on the way back.
        choices = None
        # windows[k, j, s] = best[k, s - j]
        windows = as_strided(best, (num, options, total + 1), (row, -step, step), writeable=False)
        table = np.empty((options, total + 1))
        for k in range(1, num):
            # Only sums that devices 0..k can reach and devices k+1.. can complete to the total matter.
            low = max(0, total - (options - 1) * (num - 1 - k))
            high = min(total, (options - 1) * (k + 1)) + 1
            part = table[:, : high - low]
            np.add(windows[k - 1, :, low:high], values[k][:, None], out=part)
            np.max(part, axis=0, out=best[k, low:high])
    else:
        # As many options as sums (the grid): table[s, j], the first best j of every s kept on the way.
        choices = np.empty((num, total + 1), dtype=np.intp)
        # windows[k, s, j] = best[k, s - j]
        windows = as_strided(best, (num, total + 1, options), (row, step, -step), writeable=False)
        table = np.empty((total + 1, options))
        sums = np.arange(total + 1)
        for k in range(1, num):
            np.add(windows[k - 1], values[k], out=table)
            choices[k] = np.argmax(table, axis=1)
            best[k] = table[sums, choices[k]]
    if not np.isfinite(best[num - 1, total]):
        raise ValueError(f"knapsack: no choice of options summing to {total} has a finite value")
    chosen = np.empty(num, dtype=int)
    reverse = best[:, ::-1]  # reverse[k, total - s] = best[k, s]
    left = total
    for k in range(num - 1, 0, -1):
        if choices is None:
            reach = min(options, left + 1)
            chosen[k] = np.argmax(reverse[k - 1, total - left: total - left + reach] + values[k, :reach])
        else:
            chosen[k] = choices[k, left]
        left -= chosen[k]
    chosen[0] = left
    return chosen


def best_choices(values: np.ndarray, total: int) -> np.ndarray:
    """Option indices (S, K) with sum_k j_k = total maximizing sum_k values[s, k, j_k], for a batch (S, K,
    options) (-inf marks an impossible option): an optimum of :func:`knapsack`'s problem, found faster.

    A device whose possible options are contiguous and whose values are concave over them (its
    marginal gains never rise by more than 1e-12 of the largest value, the rounding noise of a flat
    stretch; silent devices, flat, are concave) needs no dynamic program: for concave
    devices the best value of any total of units is the sum of their lowest options and of the largest
    marginal gains among them (a device's marginals being non-increasing, the largest ones form a
    prefix of each device's), so one sort gives that concave aggregate G(s) for every total.  The other
    devices go through the dynamic program, which gives their best value D(t) for every total t, and
    the optimum is the best split max_t D(t) + G(total - t), within 1e-12 of the values' scale per device
    of :func:`knapsack`'s.  Of equally good units, the earlier devices take them (the later ones keep the
    fewest, as in :func:`knapsack`), though between the two groups another choice than :func:`knapsack`'s
    may be returned (which choice never changed the solver's answers on the benchmark set,
    bench/check_allocation_phi.py)."""
    values = np.asarray(values, dtype=float)
    batch, num, options = values.shape
    if total > num * (options - 1):
        raise ValueError(f"knapsack total {total} exceeds what {num} devices x {options - 1} can reach")
    return np.stack([_best_choice(values[row], total) for row in range(batch)])


def _best_choice(values: np.ndarray, total: int) -> np.ndarray:
    num, options = values.shape
    finite = np.isfinite(values)
    with np.errstate(invalid="ignore"):
        marginal = values[:, 1:] - values[:, :-1]                                   # (K, options - 1)
        if finite.all():   # (the grid: every option possible)
            low = np.zeros(num, dtype=np.intp)
            inside = None
            noise = _FLAT * np.max(np.abs(values))
            rising = marginal[:, 1:] - marginal[:, :-1] > noise
            concave = ~rising.any(axis=1)
        else:
            if not finite.any(axis=1).all():
                raise ValueError(f"knapsack: no choice of options summing to {total} has a finite value")
            low = np.argmax(finite, axis=1)
            high = options - 1 - np.argmax(finite[:, ::-1], axis=1)
            index = np.arange(options - 1)
            inside = (index >= low[:, None]) & (index < high[:, None])
            # (a rise within rounding of the values' scale is the noise of a flat stretch: concave)
            noise = _FLAT * np.max(np.abs(values[finite]))
            rising = (marginal[:, 1:] - marginal[:, :-1] > noise) & inside[:, 1:] & inside[:, :-1]
            concave = (finite.sum(axis=1) == high - low + 1) & ~rising.any(axis=1)
    flat_devices = np.flatnonzero(concave)
    other = np.flatnonzero(~concave)
    chosen = np.zeros(num, dtype=np.intp)
    chosen[flat_devices] = low[flat_devices]
    base = int(low[flat_devices].sum())
    gains = marginal[flat_devices] if inside is None else np.where(inside[flat_devices], marginal[flat_devices],
                                                                    -np.inf)
    gains = gains.ravel()
    order = np.argsort(-gains, kind="stable")
    count = gains.size if inside is None else int(np.count_nonzero(inside[flat_devices]))
    aggregate = np.zeros(count + 1)
    np.cumsum(gains[order[:count]], out=aggregate[1:])                            # G(base + n) - G(base)
    take = total - base
    if other.size:
        reach = min(total, (options - 1) * other.size)
        best, choices = _dynamic_program(values[other], reach)
        need = total - base - np.arange(reach + 1)
        possible = (need >= 0) & (need <= count)
        with np.errstate(invalid="ignore"):
            score = np.where(possible, best + aggregate[np.clip(need, 0, count)], -np.inf)
        split = int(np.argmax(score))
        if not np.isfinite(score[split]):
            raise ValueError(f"knapsack: no choice of options summing to {total} has a finite value")
        left = split
        for k in range(other.size - 1, 0, -1):
            chosen[other[k]] = choices[k, left]
            left -= choices[k, left]
        chosen[other[0]] = left
        take = total - base - split
    elif not 0 <= take <= count:
        raise ValueError(f"knapsack: no choice of options summing to {total} has a finite value")
    # every taken marginal adds one unit to its device (owners: the rows of the concave devices)
    chosen[flat_devices] += np.bincount(order[:take] // (options - 1), minlength=flat_devices.size)
    return chosen


def _dynamic_program(values: np.ndarray, reach: int) -> tuple[np.ndarray, np.ndarray]:
    """best[s] (the best value of all devices with options summing to s, s = 0..reach) and the choices
    to go back from any s (the last device's option for each s, each device's below)."""
    num, options = values.shape
    padded = np.full((num, options - 1 + reach + 1), -np.inf)
    best = padded[:, options - 1:]
    best[0, : min(options, reach + 1)] = values[0, : min(options, reach + 1)]
    choices = np.zeros((num, reach + 1), dtype=np.intp)
    row, step = padded.strides
    if reach + 1 > 4 * options:
        # Few options, many sums (the zooms): table[j, s], reduced over j, only over the sums reachable.
        windows = as_strided(best, (num, options, reach + 1), (row, -step, step), writeable=False)
        table = np.empty((options, reach + 1))
        for k in range(1, num):
            high = min(reach, (options - 1) * (k + 1)) + 1
            part = table[:, :high]
            np.add(windows[k - 1, :, :high], values[k, :, None], out=part)
            np.argmax(part, axis=0, out=choices[k, :high])
            np.max(part, axis=0, out=best[k, :high])
    else:
        # As many options as sums (the grid): table[s, j], reduced over the contiguous j.
        windows = as_strided(best, (num, reach + 1, options), (row, step, -step), writeable=False)
        table = np.empty((reach + 1, options))
        sums = np.arange(reach + 1)
        for k in range(1, num):
            np.add(windows[k - 1], values[k], out=table)
            np.argmax(table, axis=1, out=choices[k])
            best[k] = table[sums, choices[k]]
    return best[num - 1], choices
