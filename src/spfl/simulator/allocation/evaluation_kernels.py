"""The compiled loops of :mod:`.evaluation`: Phi and its coefficients, one batch row at a time.

The solver evaluates a handful of points per call, where numpy's per-call cost outweighs the arithmetic;
these kernels do each row's sums as plain loops (formulas: the module docstring of :mod:`.evaluation`).
Node arrays are laid out (K, N), the quadrature node fastest, so that the inner loops run over nodes
without a reduction and compile to vector instructions; every sum is taken in a fixed order (no
``fastmath``), and only +, -, * and / are used, so a row's results do not depend on the machine, on the
batch it came in, or on its neighbours.

Transcendental-free form of the quadrature factors (the same numbers as the log-domain form, to rounding):
E_n = prod_k f_nk; rho_nk = e^{-t_n a_k} / f_nk (1 where f_nk = 0: a device certain to arrive whose
e^{-t a} underflowed); E_n d log f_nk / d p_k = -(1 - e^{-t_n a_k}) prod_{i != k} f_ni, the product of
the others taken from prefix and suffix products (no division by an f that may be 0).
"""

from __future__ import annotations

import numpy as np

from spfl.simulator.compiled import jit

# Rows of DescentEvaluator's per-device constants (``vectors``, (DESCENT_ROWS, K)).
WEIGHT, TO_G, TO_R, SQ_G, SQ_R, MU, NU, INCLUDE = 0, 1, 2, 3, 4, 5, 8, 11   # MU, NU, INCLUDE: 3 rows each
DESCENT_ROWS = 14
# Node constants: ``node_rows`` (3, N) = t, w, t w; ``node_tables`` (2, K, N) = e^{-t a}, 1 - e^{-t a}.
T, W, TW = 0, 1, 2
SURVIVE, COMPLEMENT = 0, 1


@jit
def _factors(p, survive, f, rho, every):
    """f (K, N), rho (K, N) and E (N) at the inclusion probabilities p (K), clipped to [0, 1]."""
    num, count = survive.shape
    every[:] = 1.0
    for k in range(num):
        pk = p[k]
        if pk < 0.0:
            pk = 0.0
        elif pk > 1.0:
            pk = 1.0
        keep = 1.0 - pk
        for n in range(count):
            fk = keep + pk * survive[k, n]
            f[k, n] = fk
            rho[k, n] = survive[k, n] / fk if fk != 0.0 else 1.0
            every[n] *= fk


@jit
def _changes(f, complement, change):
    """E d log f_k / d p_k = -(1 - e^{-t a_k}) prod_{i != k} f_i (K, N), from prefix and suffix products."""
    num, count = f.shape
    run = np.ones(count)
    for k in range(num):
        for n in range(count):
            change[k, n] = run[n]
            run[n] *= f[k, n]
    run[:] = 1.0
    for k in range(num - 1, -1, -1):
        for n in range(count):
            change[k, n] = -(complement[k, n] * change[k, n] * run[n])
            run[n] *= f[k, n]


@jit
def _weighted_sum(weights, rows, out):
    """out (N) = sum_k weights_k rows[k] (rows (K, N))."""
    out[:] = 0.0
    for k in range(rows.shape[0]):
        x = weights[k]
        for n in range(rows.shape[1]):
            out[n] += x * rows[k, n]


@jit
def _matrix_rows(matrix, rows, out, upper):
    """out[i] = sum_j matrix[i, j] rows[j] (rows (K, N)) over j > i if ``upper``, else over every j; four
    j at a time, so that each pass over out[i] does four products (the loads, not the arithmetic, bound
    these loops)."""
    num, count = rows.shape
    for i in range(num):
        o = out[i]
        o[:] = 0.0
        j = i + 1 if upper else 0
        while j + 4 <= num:
            x0, x1, x2, x3 = matrix[i, j], matrix[i, j + 1], matrix[i, j + 2], matrix[i, j + 3]
            r0, r1, r2, r3 = rows[j], rows[j + 1], rows[j + 2], rows[j + 3]
            for n in range(count):
                o[n] += (x0 * r0[n] + x1 * r1[n]) + (x2 * r2[n] + x3 * r3[n])
            j += 4
        while j < num:
            x, r = matrix[i, j], rows[j]
            for n in range(count):
                o[n] += x * r[n]
            j += 1


@jit
def _matrix_rows_pair(first, second, rows, out_first, out_second):
    """:func:`_matrix_rows` (every j) of two matrices, two output rows of each at a time, in one pass over
    ``rows`` (each output's sum is formed in the same order, so these are the same numbers)."""
    num, count = rows.shape
    for o in (out_first, out_second):
        o[:] = 0.0
    i = 0
    while i < num:
        pair = i + 1 < num
        h = i + 1 if pair else i     # (a last odd row is computed twice, into the same place)
        o0, o1, p0, p1 = out_first[i], out_first[h], out_second[i], out_second[h]
        j = 0
        while j + 4 <= num:
            x0, x1, x2, x3 = first[i, j], first[i, j + 1], first[i, j + 2], first[i, j + 3]
            u0, u1, u2, u3 = first[h, j], first[h, j + 1], first[h, j + 2], first[h, j + 3]
            y0, y1, y2, y3 = second[i, j], second[i, j + 1], second[i, j + 2], second[i, j + 3]
            v0, v1, v2, v3 = second[h, j], second[h, j + 1], second[h, j + 2], second[h, j + 3]
            r0, r1, r2, r3 = rows[j], rows[j + 1], rows[j + 2], rows[j + 3]
            for n in range(count):
                a0, a1, a2, a3 = r0[n], r1[n], r2[n], r3[n]
                o0[n] += (x0 * a0 + x1 * a1) + (x2 * a2 + x3 * a3)
                p0[n] += (y0 * a0 + y1 * a1) + (y2 * a2 + y3 * a3)
                if pair:
                    o1[n] += (u0 * a0 + u1 * a1) + (u2 * a2 + u3 * a3)
                    p1[n] += (v0 * a0 + v1 * a1) + (v2 * a2 + v3 * a3)
            j += 4
        while j < num:
            x, u, y, v, r = first[i, j], first[h, j], second[i, j], second[h, j], rows[j]
            for n in range(count):
                o0[n] += x * r[n]
                p0[n] += y * r[n]
                if pair:
                    o1[n] += u * r[n]
                    p1[n] += v * r[n]
            j += 1
        i += 2


@jit
def _descent_parts(sign, both, vectors, blocks, eta, linear, own, zg, zr, include, cross, transposes):
    """One point's per-device terms (:mod:`.descent`) and the pair weights' factors ``cross`` (4, K, K):
    [0] g_jk = zg_j gg_jk + zr_j rg_jk, [1] r_jk = zg_j gr_jk + zr_j rr_jk and with ``transposes``
    [2], [3] their transposes (diagonals 0), so that Z_jk = g_jk zg_k + r_jk zr_k for j != k."""
    num = sign.size
    for k in range(num):
        ps = sign[k]
        pb = both[k] if both[k] <= ps else ps   # pi_both <= pi_sign (NaN stays NaN, as np.minimum)
        if both[k] != both[k]:
            pb = both[k]
        mu = vectors[MU, k] + ps * vectors[MU + 1, k] + pb * vectors[MU + 2, k]
        nu = vectors[NU, k] + ps * vectors[NU + 1, k] + pb * vectors[NU + 2, k]
        include[k] = vectors[INCLUDE, k] + ps * vectors[INCLUDE + 1, k] + pb * vectors[INCLUDE + 2, k]
        w = vectors[WEIGHT, k]
        linear[k] = eta * w * (mu * vectors[TO_G, k] + nu * vectors[TO_R, k])
        own[k] = w * w * (mu * vectors[SQ_G, k] + nu * vectors[SQ_R, k])
        zg[k], zr[k] = w * mu, w * nu
    for j in range(num):
        g, r = zg[j], zr[j]
        for k in range(num):   # blocks: gg, gr, rg, rr, then their transposes
            cross[0, j, k] = g * blocks[0, j, k] + r * blocks[2, j, k]
            cross[1, j, k] = g * blocks[1, j, k] + r * blocks[3, j, k]
        cross[0, j, j], cross[1, j, j] = 0.0, 0.0
        if transposes:
            for k in range(num):
                cross[2, j, k] = zg[k] * blocks[4, j, k] + zr[k] * blocks[6, j, k]
                cross[3, j, k] = zg[k] * blocks[5, j, k] + zr[k] * blocks[7, j, k]
            cross[2, j, j], cross[3, j, j] = 0.0, 0.0


@jit
def _coefficient_rows(vectors, row, d_mu, d_nu, through, sign_out, both_out):
    """a_k and b_k from d Phi / d mu_k, d nu_k and d p_k (mu, nu, p are affine in pi_sign, pi_both)."""
    for k in range(d_mu.size):
        sign_out[row, k] = (d_mu[k] * vectors[MU + 1, k] + d_nu[k] * vectors[NU + 1, k]
                            + through[k] * vectors[INCLUDE + 1, k])
        both_out[row, k] = (d_mu[k] * vectors[MU + 2, k] + d_nu[k] * vectors[NU + 2, k]
                            + through[k] * vectors[INCLUDE + 2, k])


@jit
def descent_all(sign, both, vectors, blocks, eta, c, coefficients):
    """Phi (B) of the descent surrogate under ``all``, and with ``coefficients`` a_k, b_k (B, K)."""
    rows, num = sign.shape
    value = np.empty(rows)
    sign_out, both_out = np.zeros((rows, num)), np.zeros((rows, num))
    linear, own, zg, zr, include = np.empty(num), np.empty(num), np.empty(num), np.empty(num), np.empty(num)
    cross = np.empty((4, num, num))
    d_mu, d_nu, through = np.zeros(num), np.zeros(num), np.zeros(num)
    pairs, with_g, with_r = np.empty(num), np.empty(num), np.empty(num)
    for b in range(rows):
        _descent_parts(sign[b], both[b], vectors, blocks, eta, linear, own, zg, zr, include, cross, False)
        # Column sums over j (vector loops): Z's, and g's and r's (sum_{j != k} g_jk, r_jk).
        pairs[:], with_g[:], with_r[:] = 0.0, 0.0, 0.0
        for j in range(num):
            for k in range(num):
                pairs[k] += cross[0, j, k] * zg[k] + cross[1, j, k] * zr[k]
                with_g[k] += cross[0, j, k]
                with_r[k] += cross[1, j, k]
        value[b] = np.sum(linear) - c * (np.sum(pairs) + np.sum(own))
        if coefficients:
            for k in range(num):
                w = vectors[WEIGHT, k]
                d_mu[k] = w * (eta * vectors[TO_G, k] - c * (2.0 * with_g[k] + w * vectors[SQ_G, k]))
                d_nu[k] = w * (eta * vectors[TO_R, k] - c * (2.0 * with_r[k] + w * vectors[SQ_R, k]))
            _coefficient_rows(vectors, b, d_mu, d_nu, through, sign_out, both_out)
    return value, sign_out, both_out


@jit
def descent_received(sign, both, vectors, blocks, eta, c, node_rows, node_tables, coefficients):
    """Phi (B) of the descent surrogate under ``received``, and with ``coefficients`` a_k, b_k (B, K)."""
    rows, num = sign.shape
    count = node_rows.shape[1]
    t, w, tw = node_rows[T], node_rows[W], node_rows[TW]
    survive, complement = node_tables[SURVIVE], node_tables[COMPLEMENT]
    value = np.empty(rows)
    sign_out, both_out = np.zeros((rows, num)), np.zeros((rows, num))
    linear, own, zg, zr, include = np.empty(num), np.empty(num), np.empty(num), np.empty(num), np.empty(num)
    d_mu, d_nu, through = np.empty(num), np.empty(num), np.empty(num)
    cross, pair = np.empty((4, num, num)), np.empty((num, num))
    f, rho, q_g = np.empty((num, count)), np.empty((num, count)), np.empty((num, count))
    change = np.empty((num, count)) if coefficients else np.empty((0, 0))
    q_r = np.empty((num, count)) if coefficients else np.empty((0, 0))
    every, w_every, t_every = np.empty(count), np.empty(count), np.empty(count)
    lin_sum, own_sum, pair_sum = np.empty(count), np.empty(count), np.empty(count)
    for b in range(rows):
        _descent_parts(sign[b], both[b], vectors, blocks, eta, linear, own, zg, zr, include, cross, True)
        _factors(include, survive, f, rho, every)
        for n in range(count):
            w_every[n] = every[n] * w[n]
            t_every[n] = every[n] * tw[n]
        _weighted_sum(linear, rho, lin_sum)
        _weighted_sum(own, rho, own_sum)
        pair_sum[:] = 0.0
        if not coefficients:
            # sum_{j != k} Z_jk rho_j rho_k per node, each pair once: (Z_jk + Z_kj) rho_j rho_k, j < k.
            for j in range(num):
                for k in range(j + 1, num):
                    pair[j, k] = ((cross[0, j, k] * zg[k] + cross[1, j, k] * zr[k])
                                  + (cross[2, j, k] * zg[j] + cross[3, j, k] * zr[j]))
            _matrix_rows(pair, rho, q_g, True)
            for j in range(num):
                for n in range(count):
                    pair_sum[n] += rho[j, n] * q_g[j, n]
        else:
            # q_g[k] = sum_{j != k} g_jk rho_j (likewise q_r): (Z^T rho)_k = zg_k q_g[k] + zr_k q_r[k].
            _matrix_rows_pair(cross[2], cross[3], rho, q_g, q_r)
            for k in range(num):
                for n in range(count):
                    pair_sum[n] += rho[k, n] * (zg[k] * q_g[k, n] + zr[k] * q_r[k, n])
        lin_total, own_total, pair_total = 0.0, 0.0, 0.0
        for n in range(count):
            lin_total += w_every[n] * lin_sum[n]
            own_total += t_every[n] * own_sum[n]
            pair_total += t_every[n] * pair_sum[n]
        value[b] = lin_total - c * (own_total + pair_total)
        if not coefficients:
            continue
        _changes(f, complement, change)
        for k in range(num):
            g, h, with_g, with_r, total = 0.0, 0.0, 0.0, 0.0, 0.0
            lk, ok, gk, rk = linear[k], own[k], zg[k], zr[k]
            for n in range(count):
                r = rho[k, n]
                g += w_every[n] * r
                h += t_every[n] * r
                with_g += t_every[n] * r * q_g[k, n]
                with_r += t_every[n] * r * q_r[k, n]
                pair_rho = gk * q_g[k, n] + rk * q_r[k, n]
                without = ((lin_sum[n] - lk * r)
                           - c * t[n] * (own_sum[n] - ok * r + pair_sum[n] - 2.0 * r * pair_rho))
                total += w[n] * change[k, n] * without
            a = vectors[WEIGHT, k]
            d_mu[k] = a * (eta * vectors[TO_G, k] * g - c * (2.0 * with_g + a * vectors[SQ_G, k] * h))
            d_nu[k] = a * (eta * vectors[TO_R, k] * g - c * (2.0 * with_r + a * vectors[SQ_R, k] * h))
            through[k] = total
        _coefficient_rows(vectors, b, d_mu, d_nu, through, sign_out, both_out)
    return value, sign_out, both_out


@jit
def jensen_all(sign, both, a, b):
    """Phi (B) of the Jensen surrogate under ``all``: sum_k a_k pi_sign,k + b_k pi_both,k."""
    rows, num = sign.shape
    value = np.empty(rows)
    for i in range(rows):
        total = 0.0
        for k in range(num):
            total += a[k] * sign[i, k] + b[k] * both[i, k]
        value[i] = total
    return value


@jit
def jensen_received(sign, both, include, a, b, node_rows, node_tables, coefficients, sign_counts):
    """Phi (B) of the Jensen surrogate under ``received``, and with ``coefficients`` a_k, b_k (B, K); the
    coupling through the others' G_j goes to a_k where a lone sign counts (``sign_counts``), else to b_k."""
    rows, num = sign.shape
    count = node_rows.shape[1]
    w = node_rows[W]
    survive, complement = node_tables[SURVIVE], node_tables[COMPLEMENT]
    value = np.empty(rows)
    sign_out, both_out = np.zeros((rows, num)), np.zeros((rows, num))
    values = np.empty(num)
    f, rho = np.empty((num, count)), np.empty((num, count))
    change = np.empty((num, count)) if coefficients else np.empty((0, 0))
    every, w_every, total = np.empty(count), np.empty(count), np.empty(count)
    for i in range(rows):
        for k in range(num):
            values[k] = a[k] * sign[i, k] + b[k] * both[i, k]
        _factors(include[i], survive, f, rho, every)
        for n in range(count):
            w_every[n] = every[n] * w[n]
        _weighted_sum(values, rho, total)
        if not coefficients:
            phi = 0.0
            for n in range(count):
                phi += w_every[n] * total[n]
            value[i] = phi
            continue
        _changes(f, complement, change)
        phi = 0.0
        for k in range(num):
            g, coupling = 0.0, 0.0
            vk = values[k]
            for n in range(count):
                r = rho[k, n]
                g += w_every[n] * r
                coupling += w[n] * change[k, n] * (total[n] - vk * r)
            phi += vk * g
            sign_out[i, k], both_out[i, k] = g * a[k], g * b[k]
            if sign_counts:
                sign_out[i, k] += coupling
            else:
                both_out[i, k] += coupling
        value[i] = phi
    return value, sign_out, both_out
