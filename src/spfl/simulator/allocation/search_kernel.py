"""The optimized policies' search (:func:`.policies._search`) as one compiled loop, where the packet level is
compiled (block fading, or one packet).

The steps are those of :func:`.policies._program`, node after node in dependency order instead of in
lockstep (the lockstep only batches numpy calls; every solve and every evaluation is a function of its
own inputs, so the order changes no number): the dependencies' answers offered first, then each chain of
separable solves re-linearized at its incumbent, a solve asked twice answered from a memo, and the root's
answer polished one device at a time (:func:`.policies._polish`).  The Python search stays the reference
(tests compare the two bit for bit) and the path of per-packet fading.

Arguments are tuples of arrays prepared by :mod:`.policies`: ``evaluator`` (the surrogate's kind and
constants, :func:`evaluate`), ``levels`` (per sign-share mode: its tables and shares), ``nodes`` (name, tau mode,
dependencies), ``settings`` (the search's constants).
"""

from __future__ import annotations

import numpy as np

from spfl.simulator.allocation.evaluation_kernels import descent_all, descent_received, jensen_all, jensen_received
from spfl.simulator.allocation.level_kernels import point_arrivals, solve_shares, split
from spfl.simulator.compiled import jit

POWER, BANDWIDTH, SPFL = 0, 1, 2          # node names (:func:`.policies._nodes`)
DESCENT_ALL, DESCENT_RECEIVED, JENSEN_ALL, JENSEN_RECEIVED = 0, 1, 2, 3   # evaluator kinds (:func:`evaluate`)
_CAPACITY = 128                            # points one search may evaluate (it needs fewer than 60)


@jit
def numpy_sum(row):
    """sum(row) as numpy sums a contiguous float64 row: blocks of at most 128 with eight partial sums,
    halves (rounded to multiples of 8) added pairwise, so that shares normalized here are those of
    ``share / share.sum(axis=1)``.  (numpy's recursion, written with a stack: numba's disk cache does not
    keep recursive functions.)"""
    n = row.size
    if n <= 128:
        return _block(row, 0, n)
    frame_lo, frame_n, frame_stage = np.empty(64, np.intp), np.empty(64, np.intp), np.empty(64, np.intp)
    results = np.empty(64)
    frame_lo[0], frame_n[0], frame_stage[0] = 0, n, 0
    top, done = 1, 0
    while top > 0:
        lo, size, stage = frame_lo[top - 1], frame_n[top - 1], frame_stage[top - 1]
        if size <= 128:
            results[done] = _block(row, lo, size)
            done += 1
            top -= 1
            continue
        half = size // 2
        half -= half % 8
        if stage < 2:   # the left half, then the right one
            frame_stage[top - 1] = stage + 1
            frame_lo[top], frame_n[top], frame_stage[top] = (lo, half, 0) if stage == 0 else (lo + half, size - half, 0)
            top += 1
        else:
            results[done - 2] = results[done - 2] + results[done - 1]
            done -= 1
            top -= 1
    return results[0]


@jit
def _block(a, lo, n):
    if n < 8:
        res = 0.0
        for i in range(n):
            res += a[lo + i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    while i < n - (n % 8):
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@jit
def evaluate(evaluator, sign, both, coefficients):
    """(Phi (B), a (B, K), b (B, K)) of points (B, K) with the problem's evaluator (the kernels of
    :mod:`.evaluation_kernels`, as :mod:`.evaluation` calls them)."""
    kind, vectors, blocks, eta, c, node_rows, node_tables, a, b, sign_counts = evaluator
    if kind == DESCENT_ALL:
        return descent_all(sign, both, vectors, blocks, eta, c, coefficients)
    if kind == DESCENT_RECEIVED:
        return descent_received(sign, both, vectors, blocks, eta, c, node_rows, node_tables, coefficients)
    if kind == JENSEN_RECEIVED:
        return jensen_received(sign, both, sign if sign_counts else both, a, b, node_rows, node_tables,
                               coefficients, sign_counts)
    value = jensen_all(sign, both, a, b)
    coef_sign, coef_both = np.empty(sign.shape), np.empty(sign.shape)
    for i in range(sign.shape[0]):
        coef_sign[i], coef_both[i] = a, b
    return value, coef_sign, coef_both


@jit
def search(uniform, first, evaluator, levels, nodes, dependencies, gain, link, settings):
    """The root node's answer (4, K), silenced, after its polish, and the trace of its Phi.

    ``uniform`` (4, K): the uniform point; ``first`` (2, K): the first linearization's coefficients;
    ``nodes`` (N, 2): name and tau mode (0 fixed share, 1 optimized) per node, dependencies (N, 3) their
    indices (-1: none); ``settings``: (fused, rounds, descent, polish, total bandwidth, fixed share,
    relative gain, polish steps, zooms, zoom steps, refine step, units); ``levels``: per tau mode (its grid
    table at the coarse shares, the equal-power grid table, the fine shares, the fixed share, whether it
    searches one share, its refinement levels)."""
    (fused, rounds, descent, polish, total, fixed_share, gain_needed, polish_steps, zooms, zoom_steps,
     refine_step, units) = settings
    num = uniform.shape[1]
    points = np.empty((_CAPACITY, 4, num))
    values = np.empty(_CAPACITY)
    pis = np.empty((_CAPACITY, 2, num))
    coefs = np.empty((_CAPACITY, 2, num))
    known = np.zeros(_CAPACITY, dtype=np.bool_)
    count = 0
    # the uniform point, ident 0
    count = _add(uniform, evaluator, gain, link, fused, points, values, pis, coefs, known, count)
    n_nodes = nodes.shape[0]
    answer_ident = np.full(n_nodes, -1)
    answers = np.empty((n_nodes, 4, num))
    traces = np.empty((n_nodes, 64))
    trace_sizes = np.zeros(n_nodes, dtype=np.intp)
    memo_node = np.empty(_CAPACITY, dtype=np.intp)
    memo_at = np.empty(_CAPACITY, dtype=np.intp)
    memo_bandwidth = np.empty((_CAPACITY, num))
    memo_answer = np.empty(_CAPACITY, dtype=np.intp)
    memo = 0
    zoom = np.empty((5, 1, num, 2 * zoom_steps + 1))
    offsets = np.arange(-zoom_steps, zoom_steps + 1).astype(np.float64)
    for node in range(n_nodes):
        name, tau_free = nodes[node, 0], nodes[node, 1]
        level = levels[1] if tau_free else levels[0]   # (a constant index: both are the same type)
        early = name != POWER
        first_ident = -1
        if early:
            first_ident, count, memo = _solve(node, name, level, -1, uniform[0], first, evaluator,
                                              gain, link, fused, total, zooms, zoom_steps, offsets, refine_step,
                                              units, zoom, points, values, pis, coefs, known,
                                              count, memo_node, memo_at, memo_bandwidth, memo_answer, memo)
        # _Best: the incumbent (its point, value, ident) and the trace
        best_point = uniform.copy()
        best_value = values[0]
        best_ident = 0
        trace = traces[node]
        trace[0] = best_value
        size = 1
        for d in range(dependencies.shape[1]):
            dep = dependencies[node, d]
            if dep < 0:
                continue
            candidate_value = values[answer_ident[dep]]
            if candidate_value > best_value + gain_needed * abs(best_value):
                best_point[:] = answers[dep]
                best_value, best_ident = candidate_value, answer_ident[dep]
            trace[size] = best_value
            size += 1
        seed_ident = best_ident
        second_ident = -1
        chains = 2 if (descent and rounds > 1) else 1
        for index in range(chains):
            for round_index in range(rounds):
                if round_index == 0 and index == 0 and first_ident >= 0:
                    candidate = first_ident
                elif round_index == 0 and index == 1 and second_ident >= 0:
                    candidate = second_ident
                else:
                    at = (-1 if index == 0 else seed_ident) if round_index == 0 else best_ident
                    candidate, count, memo = _solve(node, name, level, at, best_point[0], first,
                                                    evaluator, gain, link, fused, total, zooms, zoom_steps,
                                                    offsets, refine_step, units, zoom, points,
                                                    values, pis, coefs, known, count, memo_node, memo_at,
                                                    memo_bandwidth, memo_answer, memo)
                    if early and index == 0 and chains > 1 and second_ident < 0:
                        second_ident, count, memo = _solve(node, name, level, seed_ident, best_point[0],
                                                           first, evaluator, gain, link, fused, total, zooms,
                                                           zoom_steps, offsets, refine_step, units,
                                                           zoom, points, values, pis, coefs, known, count,
                                                           memo_node, memo_at, memo_bandwidth, memo_answer, memo)
                improved = values[candidate] > best_value + gain_needed * abs(best_value)
                if improved:
                    best_point[:] = points[candidate]
                    best_value, best_ident = values[candidate], candidate
                trace[size] = best_value
                size += 1
                if (not improved and round_index > 0) or round_index == rounds - 1:
                    break
        _silence(best_point, fixed_share)
        answers[node] = best_point
        answer_ident[node] = best_ident
        trace_sizes[node] = size
    root = n_nodes - 1
    point = answers[root].copy()
    trace = np.empty(trace_sizes[root] + polish_steps)
    trace[:trace_sizes[root]] = traces[root, :trace_sizes[root]]
    size = trace_sizes[root]
    if polish:
        size = _polish(point, answer_ident[root], levels[1] if nodes[root, 1] else levels[0], evaluator, gain, link, fused,
                       gain_needed, polish_steps, refine_step, points, values, pis, coefs, known,
                       count, trace, size)
    _silence(point, fixed_share)
    return point, trace[:size]


@jit
def _silence(point, fixed_share):
    """:func:`.policies._silenced` in place: a device that sends nothing holds no bandwidth and no share."""
    for k in range(point.shape[1]):
        if not point[1, k] > 0.0:
            point[0, k], point[2, k], point[3, k] = 0.0, 0.0, fixed_share


@jit
def _add(point, evaluator, gain, link, fused, points, values, pis, coefs, known, count):
    """Evaluate ``point`` (4, K) and store it as ident ``count`` (with its coefficients when ``fused``)."""
    if count >= _CAPACITY:
        raise ValueError("the compiled search ran out of room for its points")
    num = point.shape[1]
    sign, both = np.empty((1, num)), np.empty((1, num))
    point_arrivals(point[0:1], point[1:2], point[2:3], point[3:4], gain, link, sign, both)
    value, coef_sign, coef_both = evaluate(evaluator, sign, both, fused)
    points[count] = point
    values[count] = value[0]
    pis[count, 0], pis[count, 1] = sign[0], both[0]
    if fused:
        coefs[count, 0], coefs[count, 1] = coef_sign[0], coef_both[0]
        known[count] = True
    return count + 1


@jit
def _coefficients(ident, evaluator, pis, coefs, known):
    """The coefficients at point ``ident`` (computed once)."""
    if not known[ident]:
        _, coef_sign, coef_both = evaluate(evaluator, pis[ident, 0:1], pis[ident, 1:2], True)
        coefs[ident, 0], coefs[ident, 1] = coef_sign[0], coef_both[0]
        known[ident] = True
    return coefs[ident, 0], coefs[ident, 1]


@jit
def _solve(node, name, level, at, bandwidth, first, evaluator, gain, link, fused, total, zooms, zoom_steps, offsets,
           refine_step, units, zoom, points, values, pis, coefs, known, count, memo_node, memo_at,
           memo_bandwidth, memo_answer, memo):
    """The candidate ident of node's separable solve linearized at ``at`` (-1: the first linearization) and,
    for the power level, at ``bandwidth``; from the memo when asked before.  Returns (ident, count, memo)."""
    num = bandwidth.size
    for m in range(memo):
        if memo_node[m] == node and memo_at[m] == at:
            if name != POWER or _same_bits(memo_bandwidth[m], bandwidth):
                return memo_answer[m], count, memo
    if at < 0:
        a, b = first[0], first[1]
    else:
        a, b = _coefficients(at, evaluator, pis, coefs, known)
    a2, b2 = a.copy().reshape((1, num)), b.copy().reshape((1, num))
    table, table_fixed, taus_fine_free, taus_fixed, single_free, refine_free = level
    point = np.empty((4, num))
    out = np.empty((4, 1, num))   # the split: value, power_sign, power_modulus, slot_share
    if name == POWER:
        point[0] = bandwidth
        split(bandwidth.copy().reshape((1, num)), a2, b2, gain, link, taus_fine_free, False, refine_step, 0,
              out[0], out[1], out[2], out[3])
        point[1:] = out[1:, 0]
    else:
        fixed = name == BANDWIDTH
        grid = table_fixed if fixed else table
        taus = taus_fixed if fixed else taus_fine_free
        share, pick, solved = solve_shares(a2, b2, fixed, grid[0], grid[1], grid[2], grid[3], grid[4], grid[5],
                                           grid[6], grid[7], grid[8], grid[9], grid[10], grid[11], grid[12],
                                           grid[13], units, zooms, zoom_steps, offsets, gain, link, taus, total,
                                           zoom)
        if not solved:
            raise ValueError("knapsack: no choice of options summing to its total has a finite value")
        norm = numpy_sum(share[0])
        for k in range(num):
            point[0, k] = share[0, k] / norm * total
        if fixed or single_free:   # the last zoom's splits at the chosen offsets
            for k in range(num):
                point[1:, k] = zoom[2:, 0, k, pick[0, k]]
        else:
            split(point[0:1].copy(), a2, b2, gain, link, taus, False, refine_step, refine_free, out[0], out[1], out[2],
                  out[3])
            point[1:] = out[1:, 0]
    ident = count
    count = _add(point, evaluator, gain, link, fused, points, values, pis, coefs, known, count)
    memo_node[memo], memo_at[memo], memo_answer[memo] = node, at, ident
    memo_bandwidth[memo] = bandwidth
    return ident, count, memo + 1


@jit
def _same_bits(x, y):
    for k in range(x.size):
        if x[k] != y[k] or np.signbit(x[k]) != np.signbit(y[k]):
            return False
    return True


@jit
def _polish(point, ident, level, evaluator, gain, link, fused, gain_needed, steps, refine_step, points,
            values, pis, coefs, known, count, trace, size):
    """:func:`.policies._polish` on ``point`` (4, K) in place; returns the trace's new size."""
    num = point.shape[1]
    taus, refine_levels = level[2], level[5]
    value = values[ident]
    pi_sign, pi_both = pis[ident, 0].copy(), pis[ident, 1].copy()
    coef_sign, coef_both = _coefficients(ident, evaluator, pis, coefs, known)
    coef_sign, coef_both = coef_sign.copy(), coef_both.copy()
    out = np.empty((4, 1, num))
    sign, both = np.empty((1, num)), np.empty((1, num))
    for _ in range(steps):
        split(point[0].copy().reshape((1, num)), coef_sign.reshape((1, num)), coef_both.reshape((1, num)), gain, link,
              taus, False, refine_step, refine_levels, out[0], out[1], out[2], out[3])
        device, largest = 0, -np.inf
        for k in range(num):
            current = coef_sign[k] * pi_sign[k] + coef_both[k] * pi_both[k] if point[1, k] > 0 else 0.0
            gain_k = out[0, 0, k] - current
            if gain_k > largest or (gain_k != gain_k and largest == largest):   # np.argmax: the first NaN wins
                device, largest = k, gain_k
                if gain_k != gain_k:
                    break
        if not largest > gain_needed * abs(value):
            break
        moved = point.copy()
        moved[1, device], moved[2, device], moved[3, device] = out[1, 0, device], out[2, 0, device], out[3, 0, device]
        point_arrivals(moved[0:1], moved[1:2], moved[2:3], moved[3:4], gain, link, sign, both)
        if fused:
            moved_value, new_sign, new_both = evaluate(evaluator, sign, both, True)
        else:
            moved_value = evaluate(evaluator, sign, both, False)[0]
            _, new_sign, new_both = evaluate(evaluator, sign, both, True)
        if not moved_value[0] > value + gain_needed * abs(value):
            break
        point[:] = moved
        value = moved_value[0]
        pi_sign, pi_both = sign[0].copy(), both[0].copy()
        trace[size] = value
        size += 1
        coef_sign, coef_both = new_sign[0].copy(), new_both[0].copy()
    return size
