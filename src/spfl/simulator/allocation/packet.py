"""The packet level under block fading, exactly: the best sign power share x of every entry in closed form
plus a few Newton steps (docs/model.md, section 7).

With thresholds A / x (sign) and M / (1 - x) (modulus) at the sign's power share x of the budget, a
device's term is f(x) = a e^{-A/x} + b e^{-max(A/x, M/(1-x))}.  Below the kink x0 = A / (A + M) both
packets fail together and f = (a + b) e^{-A/x} is monotone, so the left piece peaks at x -> 0 (f -> 0,
silent) or at x0.  On the right piece [x0, 1), f = a e^{-A/x} + b e^{-M/(1-x)}; with a, b > 0 the sign
of f' is that of

    F(x) = log(a A / (b M)) + g(x),   g(x) = -2 log x - A/x + 2 log(1 - x) + M/(1 - x),

and F'(x) = Q(x) / (x^2 (1 - x)^2) with the quadratic Q(x) = (A + M + 2) x^2 - 2 (A + 1) x + A (the cubic
terms cancel).  Q > 0 at 0 and 1; when A M < 1 it is negative between its roots x- < x+, so F rises,
falls on [x-, x+] and rises again: f has at most one interior local maximum, the root of F on
[max(x-, x0), x+] where F falls from positive to negative.  With a or b <= 0, f is monotone on the right
piece.  So the global maximum over (0, 1] is the best of: silent (0), sign only (x = 1: a e^{-A}), the kink
((a + b) e^{-(A + M)}) and that root, which exists iff -g(lo) < log(a A / (b M)) < -g(x+).

Everything but the coefficients (a, b) is fixed per entry, so :class:`BlockPacket` keeps it: the bracket
and g at ``_TABLE`` points spaced evenly in logit(x) across it (the two ends at once, the rest when first
needed).  Per coefficient set, the root is bracketed by a table interval, started by linear interpolation
there and polished by Newton steps (kept inside the interval) on F; ``_NEWTON`` steps bring the value
within about 1e-16 of the maximum (tests/test_allocation.py checks it against a dense grid).
:func:`entry_best` does the same for one entry without keeping its table.  All of it is compiled loops
(:mod:`spfl.simulator.compiled`): the solver asks for thousands of entries per call.
"""

from __future__ import annotations

import numpy as np

from spfl.simulator.compiled import jit

_TABLE = 9
_NEWTON = 3
_DEAD = 700.0  # a sign threshold above this at full power: nothing ever arrives (e^-700 ~ 1e-304)


@jit
def _g(x, A, M):
    return -2.0 * np.log(x) - A / x + 2.0 * np.log1p(-x) + M / (1.0 - x)


@jit
def _slope(x, A, M):
    """F'(x) = Q(x) / (x^2 (1 - x)^2)."""
    rest = 1.0 - x
    return ((A + M + 2.0) * x * x - 2.0 * (A + 1.0) * x + A) / (x * x * rest * rest)


@jit
def _kink(A, M):
    """(x0, pi_sign, pi_both) at the kink x0 = A / (A + M), as its rounded x gives them (the powers are
    computed from x); an entry that cannot send both packets has x0 = 1 and nothing there."""
    if not (A < _DEAD and np.isfinite(M)):
        return 1.0, 0.0, 0.0
    x0 = A / (A + M)
    t_s = A / x0
    return x0, np.exp(-t_s), np.exp(-max(t_s, M / (1.0 - x0)))


@jit
def _bracket(A, M, x0):
    """(lower, upper): the bracket [max(x-, x0), x+] of the interior root (A M < 1), or (0, 0) where there is
    none."""
    disc = 1.0 - A * M
    if not (A < _DEAD and np.isfinite(M) and disc > 0.0):
        return 0.0, 0.0
    upper = ((A + 1.0) + np.sqrt(disc)) / (A + M + 2.0)
    lower = max(A / ((A + M + 2.0) * upper), x0)   # x- from the roots' product
    if not lower < upper:
        return 0.0, 0.0
    return lower, upper


@jit
def _logit(x):
    return np.log(x) - np.log1p(-x)


@jit
def _table_point(j, lower, upper, z_lower, z_upper, A, M):
    """(z, x, g) of the j-th of ``_TABLE`` points spaced evenly in logit(x) across the bracket."""
    z = z_lower + (z_upper - z_lower) * (j / (_TABLE - 1))
    x = lower if j == 0 else (upper if j == _TABLE - 1 else 1.0 / (1.0 + np.exp(-z)))
    return z, x, _g(x, A, M)


@jit
def _root(t, x_low, x_high, g_low, g_high, z_low, z_high, A, M):
    """The root of g(x) = t in the table interval [x_low, x_high]: linear interpolation in logit(x), then
    ``_NEWTON`` Newton steps kept inside the interval."""
    z = z_low + (z_high - z_low) * (g_low - t) / (g_low - g_high)
    root = 1.0 / (1.0 + np.exp(-z))
    for _ in range(_NEWTON):
        excess = _g(root, A, M) - t                 # F(root): > 0 left of the root
        if excess > 0.0:
            x_low = root
        if excess < 0.0:
            x_high = root
        trial = root - excess / _slope(root, A, M)
        root = trial if (trial >= x_low and trial <= x_high) else 0.5 * (x_low + x_high)
    return root


@jit
def _candidates(a, b, A, M, sign, x0, kink_sign, kink_both):
    """(value, x): the better of sign only (x = 1) and the kink."""
    best, at = a * sign, 1.0
    kink = a * kink_sign + b * kink_both
    if kink > best:
        best, at = kink, x0
    return best, at


@jit
def _with_root(best, at, root, a, b, A, M):
    t_s = A / root
    inner = a * np.exp(-t_s) + b * np.exp(-max(t_s, M / (1.0 - root)))
    if inner >= best:   # the interior maximum first: it wins ties with the kink and the sign-only point
        return inner, root
    return best, at


@jit
def entry_best(A, M, a, b):
    """(value, x) of one entry, as :meth:`BlockPacket.best` gives it, without keeping a table (for entries
    solved once)."""
    x0, kink_sign, kink_both = _kink(A, M)
    best, at = _candidates(a, b, A, M, np.exp(-A), x0, kink_sign, kink_both)
    lower, upper = _bracket(A, M, x0)
    if upper == 0.0:
        return best, at
    t = -((np.log(a) - np.log(b)) + (np.log(A) - np.log(M)))   # g(root) = t; NaN where a or b <= 0
    if not (t < _g(lower, A, M) and t > _g(upper, A, M)):
        return best, at
    z_lower, z_upper = _logit(lower), _logit(upper)
    z_low, x_low, g_low = _table_point(0, lower, upper, z_lower, z_upper, A, M)   # the last point with g > t
    for j in range(1, _TABLE):
        z_high, x_high, g_high = _table_point(j, lower, upper, z_lower, z_upper, A, M)
        if not g_high > t:
            break
        z_low, x_low, g_low = z_high, x_high, g_high
    root = _root(t, x_low, x_high, g_low, g_high, z_low, z_high, A, M)
    return _with_root(best, at, root, a, b, A, M)


@jit
def _prepare(A, M, sign, kink_x, kink_sign, kink_both, bracket, table_x, table_g, table_z, log_ratio):
    """The coefficient-free part of every entry (flat arrays A, M; the others are filled): of the table, its
    two ends only (``bracket`` 1), which decide whether a coefficient set has an interior root at all; the
    logits and the points between are filled when one first does (:func:`_interior`; ``bracket`` 2)."""
    for i in range(A.size):
        sign[i] = np.exp(-A[i])
        kink_x[i], kink_sign[i], kink_both[i] = _kink(A[i], M[i])
        lower, upper = _bracket(A[i], M[i], kink_x[i])
        bracket[i] = 1 if upper > 0.0 else 0
        if bracket[i]:
            table_x[i, 0], table_x[i, _TABLE - 1] = lower, upper
            table_g[i, 0], table_g[i, _TABLE - 1] = _g(lower, A[i], M[i]), _g(upper, A[i], M[i])
            log_ratio[i] = np.log(A[i]) - np.log(M[i])


@jit
def _interior(i, t, best, at, a, b, A, M, bracket, table_x, table_g, table_z):
    """Entry i's interior root, bracketed by its table (g(root) = t), if it beats (best, at)."""
    if bracket[i] == 1:   # the table's logits and the points between its ends
        lower, upper = table_x[i, 0], table_x[i, _TABLE - 1]
        z_lower, z_upper = _logit(lower), _logit(upper)
        for j in range(_TABLE):
            table_z[i, j], table_x[i, j], table_g[i, j] = _table_point(j, lower, upper, z_lower, z_upper, A, M)
        bracket[i] = 2
    count = 0
    for j in range(_TABLE):
        if table_g[i, j] > t:
            count += 1
    root = _root(t, table_x[i, count - 1], table_x[i, count], table_g[i, count - 1], table_g[i, count],
                 table_z[i, count - 1], table_z[i, count], A, M)
    return _with_root(best, at, root, a, b, A, M)


@jit
def _best(a, b, A, M, sign, kink_x, kink_sign, kink_both, bracket, table_x, table_g, table_z, log_ratio,
          shares, value, x):
    """(value, x) of every entry i (value, x: (R, n); A ... log_ratio: (n,)) for the coefficients of row r
    and column i % C (a, b: (R, C): C = n for one coefficient per entry, C = K for one per device, the
    device being the entries' last axis); or, with ``shares`` > 0, value (R, n / shares): the best term
    (silent: 0) over the leading axis of the entries, the sign shares.
    (The common path is written out here, not called: a call that passes arrays costs more than an entry.)"""
    rows, num = a.shape
    n = A.size
    ratio = np.log(a) - np.log(b)     # (NaN where a or b <= 0: no interior maximum)
    for r in range(rows):
        for i in range(n):
            k = i % num
            ai, bi = a[r, k], b[r, k]
            best, at = _candidates(ai, bi, A[i], M[i], sign[i], kink_x[i], kink_sign[i], kink_both[i])
            if bracket[i]:
                t = -(ratio[r, k] + log_ratio[i])
                if t < table_g[i, 0] and t > table_g[i, _TABLE - 1]:
                    best, at = _interior(i, t, best, at, ai, bi, A[i], M[i], bracket, table_x, table_g, table_z)
            if shares == 0:
                value[r, i], x[r, i] = best, at
            else:
                cell = i % value.shape[1]
                if i < value.shape[1]:
                    value[r, cell] = 0.0
                if best > value[r, cell]:
                    value[r, cell] = best


class BlockPacket:
    """The fixed part of every entry's packet problem (thresholds A, M at full power, any shape)."""

    def __init__(self, A, M):
        A = np.asarray(A, dtype=float)
        self.shape = A.shape
        # (own writeable copies: the kernels are compiled for one array type)
        self.A = np.array(A, dtype=float).ravel()
        self.M = np.array(np.broadcast_to(np.asarray(M, dtype=float), A.shape)).ravel()
        n = self.A.size
        self.sign, self.kink_x, self.kink_sign, self.kink_both, self.log_ratio = (np.empty(n) for _ in range(5))
        self.bracket = np.empty(n, dtype=np.int8)   # 0: no interior root; 1: table ends; 2: table
        self.table_x, self.table_g, self.table_z = (np.empty((n, _TABLE)) for _ in range(3))
        _prepare(self.A, self.M, self.sign, self.kink_x, self.kink_sign, self.kink_both, self.bracket,
                 self.table_x, self.table_g, self.table_z, self.log_ratio)

    def best(self, a, b):
        """(value, x) of every entry, for coefficients broadcasting to (..., *shape): the best of silent
        (value 0 at x = 1 is reported as the sign-only point when a > 0, else silent is value <= 0)."""
        shape = np.broadcast_shapes(np.shape(a), np.shape(b), self.shape)
        n = self.A.size
        a, b = (np.ascontiguousarray(np.broadcast_to(np.asarray(v, dtype=float), shape)).reshape(-1, n)
                for v in (a, b))
        value, x = np.empty(a.shape), np.empty(a.shape)
        _best(a, b, self.A, self.M, self.sign, self.kink_x, self.kink_sign, self.kink_both, self.bracket,
              self.table_x, self.table_g, self.table_z, self.log_ratio, 0, value, x)
        return value.reshape(shape), x.reshape(shape)
