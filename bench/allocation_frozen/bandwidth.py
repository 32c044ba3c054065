"""Device level: the split of the total bandwidth across devices, by dynamic programming.

With the packet-level decisions solved per device (:mod:`.power`), the bandwidth problem is
max sum_k F_k(b_k) subject to sum_k b_k = 1, b_k >= 0, where F_k(b) is device k's best term at the
share b.  F_k is S-shaped in b (nothing arrives until the link can carry the payload) with kinks
where the device changes mode (silent, sign only, both packets), so no local method can find which
devices to serve.  A max-plus knapsack over the grid b = j / J (J about 80, a multiple of K, so the
uniform split is on it) finds the exact grid optimum; two zooms then re-solve the same knapsack over
offsets of +-1 grid step in eighths around it, so the result is within 1 / (64 J) of the continuous
optimum in every share.  When the sign share is optimized, the grid search tries a coarse set of
shares and the zooms the fine one.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .power import Split, best_split
from .problem import AllocationProblem

_TARGET_UNITS = 80
_MAX_UNITS = 512
_ZOOM_STEPS = 8   # sub-steps per grid step in each zoom
_ZOOMS = 2


def grid_units(num_devices: int) -> int:
    """J: about 80 grid steps, a multiple of K so that b = 1 / K is on the grid."""
    per_device = max(1, -(-_TARGET_UNITS // num_devices))
    return min(num_devices * per_device, max(_MAX_UNITS - _MAX_UNITS % num_devices, num_devices))


def best_bandwidth(problem: AllocationProblem, coef_sign, coef_both, fixed_power: bool = False
                   ) -> tuple[np.ndarray, Split]:
    """Shares b (summing to 1) maximizing sum_k F_k(b_k), and the packet-level split at them."""
    num = problem.num_devices
    units = grid_units(num)
    levels = np.arange(units + 1) / units
    table = best_split(problem, np.broadcast_to(levels[:, None], (units + 1, num)) * problem.total_bandwidth,
                       coef_sign, coef_both, fixed_power, coarse=True)
    chosen = knapsack(table.value.T, units)
    share = chosen / units
    step = 1.0 / units
    for _ in range(_ZOOMS):
        offsets = np.arange(-_ZOOM_STEPS, _ZOOM_STEPS + 1) * (step / _ZOOM_STEPS)
        trial = share[:, None] + offsets  # (K, options)
        valid = (trial >= 0) & (trial <= 1)
        split = best_split(problem, np.clip(trial, 0.0, 1.0).T * problem.total_bandwidth, coef_sign, coef_both,
                           fixed_power)
        values = np.where(valid.T, split.value, -np.inf).T
        pick = knapsack(values, _ZOOM_STEPS * num)
        share = np.clip(trial[np.arange(num), pick], 0.0, 1.0)
        step /= _ZOOM_STEPS
    share = share / share.sum()
    return share, best_split(problem, share * problem.total_bandwidth, coef_sign, coef_both, fixed_power,
                             refine=True)


def knapsack(values: np.ndarray, total: int) -> np.ndarray:
    """Option indices j_k (0 <= j_k < values.shape[1]) with sum_k j_k = total maximizing
    sum_k values[k, j_k] (max-plus dynamic program; -inf marks an impossible option)."""
    num, options = values.shape
    if total > num * (options - 1):
        raise ValueError(f"knapsack total {total} exceeds what {num} devices x {options - 1} can reach")
    # best[s]: the best value of the devices so far with their options summing to s.
    # table[s, j] = best[s - j] + row[j], read through a reversed sliding window over a padded buffer.
    buffer = np.full(total + options, -np.inf)
    window = sliding_window_view(buffer, options)[:, ::-1]  # window[s] = buffer[s .. s + options - 1] reversed
    best = np.full(total + 1, -np.inf)
    best[: min(options, total + 1)] = values[0, : min(options, total + 1)]
    choices = []
    for row in values[1:]:
        buffer[options - 1: options - 1 + total + 1] = best
        table = window[: total + 1] + row
        choice = np.argmax(table, axis=1)
        choices.append(choice)
        best = table[np.arange(total + 1), choice]
    if not np.isfinite(best[total]):
        raise ValueError(f"knapsack: no choice of options summing to {total} has a finite value")
    chosen = np.empty(num, dtype=int)
    left = total
    for k in range(num - 1, 0, -1):
        chosen[k] = choices[k - 1][left]
        left -= chosen[k]
    chosen[0] = left
    return chosen
