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
from spfl.simulator.compiled import jit

_TARGET_UNITS = 80
_ZOOM_STEPS = 8   # sub-steps per grid step in each zoom
_ZOOMS = 2
_FLAT = 1e-12     # marginal gains rising by less than this times the largest value count as concave
_MAGNITUDE = np.int64(0x7FFF_FFFF_FFFF_FFFF)   # the bits of |x| of a double x
_INFINITY = np.int64(0x7FF0_0000_0000_0000)    # the bits of +inf: |x| below it is finite


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
    values = np.ascontiguousarray(values, dtype=float)
    batch, num, options = values.shape
    if total > num * (options - 1):
        raise ValueError(f"knapsack total {total} exceeds what {num} devices x {options - 1} can reach")
    chosen, solved = (np.zeros((batch, num), dtype=np.intp), False) if total < 0 else _best_choices(values, total)
    if not solved:
        raise ValueError(f"knapsack: no choice of options summing to {total} has a finite value")
    return chosen


# --- the compiled kernel -----------------------------------------------------------------------------------
# The loops below reproduce, decision for decision, the numpy formulation of revision 3d3cc94 (sort the
# concave devices' marginal gains, a max-plus dynamic program over the others, the best split between the
# two): every sum is formed in the same order and every maximum keeps the first of equals (a NaN, as in
# np.argmax, counting as the largest), so the choices are the same bit for bit
# (bench/check_knapsack_kernel.py compares the two).


@jit
def _best_choices(values, total):
    """chosen (S, K) for every row of the batch, and whether every row has a finite choice."""
    batch, num, _ = values.shape
    chosen = np.zeros((batch, num), dtype=np.intp)
    for row in range(batch):
        if not _best_choice(values[row], total, chosen[row]):
            return chosen, False
    return chosen, True


@jit
def _best_choice(values, total, chosen):
    """One row (K, options) into ``chosen``; False when no choice has a finite value."""
    num, options = values.shape
    steps = options - 1
    low = np.empty(num, dtype=np.intp)
    high = np.empty(num, dtype=np.intp)
    contiguous = np.empty(num, dtype=np.bool_)
    largest = 0   # max |finite value| as the bits of a non-negative double (ordered as integers: vectorizes)
    for k in range(num):  # each device's possible options low..high, and the scale of all finite values
        bits = values[k].view(np.int64)
        first, last = 0, options - 1
        while first < options and not np.isfinite(values[k, first]):
            first += 1
        if first == options:
            return False
        while not np.isfinite(values[k, last]):
            last -= 1
        part, count = bits[first:last + 1], 0
        for j in range(part.size):   # (a view from 0: no negative index to wrap, it vectorizes)
            magnitude = part[j] & _MAGNITUDE
            finite = magnitude < _INFINITY
            count += finite
            largest = max(largest, magnitude if finite else 0)
        low[k], high[k], contiguous[k] = first, last, count == last - first + 1
    noise = _FLAT * np.array([largest]).view(np.float64)[0]
    concave = np.empty(num, dtype=np.intp)   # the concave devices, then (from the end) the others
    slot = np.empty(num, dtype=np.intp)      # of a concave device: -1 if its marginal gains never rise
    flat, other, unsorted = 0, 0, 0
    for k in range(num):
        row = values[k]
        rising, unordered = 0 if contiguous[k] else 1, 0
        if contiguous[k]:
            part = row[low[k]:high[k] + 1]
            for j in range(part.size - 2):   # (counts, no early exit: it vectorizes)
                before, after = part[j + 1] - part[j], part[j + 2] - part[j + 1]
                rising += after - before > noise
                unordered += after > before
        if rising:
            other += 1
            concave[num - other] = k
        else:
            concave[flat] = k
            # (a last gain of -inf, an overflow, would sort among the -inf of the impossible options)
            if unordered or (high[k] > low[k] and row[high[k]] - row[high[k] - 1] == -np.inf):
                slot[flat] = unsorted
                unsorted += 1
            else:
                slot[flat] = -1
            flat += 1
    others = concave[flat:][::-1].copy()
    base, count = 0, 0
    for i in range(flat):
        chosen[concave[i]] = low[concave[i]]
        base += low[concave[i]]
        count += high[concave[i]] - low[concave[i]]
    units = total - base
    # The concave devices' marginal gains in np.argsort(-gains, kind="stable") order, as far as needed:
    # each device's in order (gain descending, then option), merged (gain descending, earlier device
    # first).  A device whose gains never rise is in order already: its possible options' gains, then the
    # -inf of the others; the few whose gains rise within the noise are sorted here (stably).
    gains = np.empty((unsorted, steps))
    for i in range(flat):
        if slot[i] >= 0:
            k, line = concave[i], gains[slot[i]]
            for j in range(steps):
                gain = values[k, j + 1] - values[k, j] if low[k] <= j < high[k] else -np.inf
                at = j
                while at > 0 and line[at - 1] < gain:
                    line[at] = line[at - 1]
                    at -= 1
                line[at] = gain
    owner, aggregate = _merged(values, concave[:flat], low, high, slot, gains, max(0, min(count, units)))
    if other:
        reach = min(total, steps * other)
        table, choices = _dynamic_program(values, others, reach)
        split, top = 0, -np.inf
        for t in range(reach + 1):
            need = units - t
            score = table[other - 1, t] + aggregate[need] if 0 <= need <= count else -np.inf
            if score > top or (score != score and top == top):
                split, top = t, score
        if not np.isfinite(top):
            return False
        left = split
        for k in range(other - 1, 0, -1):
            if choices.shape[0]:
                option = choices[k, left]
            else:
                option = _option(table[k - 1], values[others[k]], left, min(reach, steps * k))
            chosen[others[k]] = option
            left -= option
        chosen[others[0]] = left
        units -= split
    elif not 0 <= units <= count:
        return False
    for n in range(units):   # every taken marginal adds one unit to its device
        chosen[concave[owner[n]]] += 1
    return True


@jit
def _gain(values, device, low, high, slot, gains, position):
    """The ``position``-th largest marginal gain of a concave device (see _best_choice)."""
    if slot >= 0:
        return gains[slot, position]
    j = low + position
    return values[device, j + 1] - values[device, j] if j < high else -np.inf


@jit
def _merged(values, devices, low, high, slot, gains, needed):
    """The first ``needed`` marginal gains of the concave ``devices`` in merged order: their owners
    (positions in ``devices``), and the cumulative sums (0 first, then np.cumsum's sequential sums)."""
    rows, steps = devices.size, values.shape[1] - 1
    owner = np.empty(needed, dtype=np.intp)
    aggregate = np.zeros(needed + 1)
    size = rows if steps else 0
    heap = np.arange(rows)   # a binary heap of the devices by their next gain (then the earlier first)
    head = np.empty(rows)
    at = np.zeros(rows, dtype=np.intp)
    for i in range(size):
        k = devices[i]
        head[i] = _gain(values, k, low[k], high[k], slot[i], gains, 0)
    for start in range(size // 2 - 1, -1, -1):
        _sift(heap, size, start, head)
    for n in range(needed):
        i = heap[0]
        owner[n] = i
        aggregate[n + 1] = head[i] if n == 0 else aggregate[n] + head[i]
        at[i] += 1
        if at[i] == steps:
            size -= 1
            heap[0] = heap[size]
        else:
            k = devices[i]
            head[i] = _gain(values, k, low[k], high[k], slot[i], gains, at[i])
        _sift(heap, size, 0, head)
    return owner, aggregate


@jit
def _sift(heap, size, node, head):
    """Moves heap[node] down to its place: a device comes first if its next gain is larger, or equal and the
    device earlier."""
    while True:
        top = node
        for child in (2 * node + 1, 2 * node + 2):
            if child < size:
                a, b = head[heap[child]], head[heap[top]]
                if a > b or (a == b and heap[child] < heap[top]):
                    top = child
        if top == node:
            return
        heap[node], heap[top] = heap[top], heap[node]
        node = top


@jit
def _dynamic_program(values, devices, reach):
    """table[k, s]: the best value of the first k + 1 ``devices`` (rows of ``values``) with options summing
    to s (s = 0..reach); and, with NaN or +inf values only, choices[k, s]: device k's option there (else
    :func:`_option` finds it, on the way back).

    Values finite or -inf: each device's options are tried in turn against every sum (a loop that
    vectorizes), a later option replacing an earlier one only when strictly better, so each sum keeps the
    first best option's value as np.argmax keeps the first; only the sums the devices before can reach are
    read (the others hold -inf, which never wins).  With NaN or +inf, each sum's maximum runs over every
    option and stops at the first NaN (np.argmax's answer), on the sums that the numpy formulation
    computed (all on the grid; the reachable ones when sums outnumber 4 x options)."""
    num, options = devices.size, values.shape[1]
    steps = options - 1
    clean = True
    for k in devices:
        for j in range(options):
            if values[k, j] != values[k, j] or values[k, j] == np.inf:
                clean = False
    table = np.full((num, reach + 1), -np.inf)
    choices = np.zeros((0 if clean else num, reach + 1), dtype=np.intp)
    for s in range(min(options, reach + 1)):
        table[0, s] = values[devices[0], s]
    sums_only = reach + 1 > 4 * options
    for k in range(1, num):
        row, best, following = values[devices[k]], table[k - 1], table[k]
        if clean:
            last = min(reach, steps * (k + 1))
            below = min(reach, steps * k)   # the largest sum the devices before reach
            for j in range(min(steps, last) + 1):
                if row[j] != -np.inf:
                    count = min(last, j + below) + 1 - j   # the sums s = j + t, t < count
                    _raise(best[:count], row[j], following[j:j + count])
        else:
            last = min(reach, steps * (k + 1)) if sums_only else reach
            for s in range(last + 1):
                top, chosen = -np.inf, 0
                for j in range(options):
                    value = (best[s - j] if j <= s else -np.inf) + row[j]
                    if value > top:
                        top, chosen = value, j
                    elif value != value:
                        top, chosen = value, j
                        break
                following[s] = top
                choices[k, s] = chosen
    return table, choices


@jit
def _raise(before, add, after):
    """after[t] = before[t] + add where that is strictly larger, branch-free on views from 0 (no negative
    index to wrap): a loop that vectorizes."""
    for t in range(after.size):
        value = before[t] + add
        after[t] = value if value > after[t] else after[t]


@jit
def _option(best, row, total, below):
    """The first option j of a device (values ``row``) maximizing best[total - j] + row[j] (``best``: the
    devices before it, reaching sums up to ``below``): its choice in :func:`_dynamic_program`'s table."""
    top, pick = -np.inf, 0
    for j in range(max(0, total - below), min(row.size - 1, total) + 1):
        value = best[total - j] + row[j]
        if value > top:
            top, pick = value, j
    return pick
