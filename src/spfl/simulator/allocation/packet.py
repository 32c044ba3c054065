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
and g at ``_TABLE`` points spaced evenly in logit(x) across it.  Per coefficient set, the root is
bracketed by a table interval, started by linear interpolation there and polished by Newton steps
(kept inside the interval) on F; ``_NEWTON`` steps bring the value within about 1e-16 of the maximum
(tests/test_allocation.py checks it against a dense grid).
"""

from __future__ import annotations

import numpy as np

_TABLE = 9
_NEWTON = 3
_DEAD = 700.0  # a sign threshold above this at full power: nothing ever arrives (e^-700 ~ 1e-304)


def _expanded(value, shape) -> np.ndarray:
    """``value`` broadcast to ``shape``, as a new array (cheaper than np.broadcast_to on small arrays)."""
    out = np.empty(shape)
    out[...] = value
    return out


def _g(x, A, M):
    return -2.0 * np.log(x) - A / x + 2.0 * np.log1p(-x) + M / (1.0 - x)


def _slope(x, A, M):
    """F'(x) = Q(x) / (x^2 (1 - x)^2)."""
    rest = 1.0 - x
    return ((A + M + 2.0) * x * x - 2.0 * (A + 1.0) * x + A) / (x * x * rest * rest)


class BlockPacket:
    """The fixed part of every entry's packet problem (thresholds A, M at full power, any shape)."""

    def __init__(self, A, M):
        A = np.asarray(A, dtype=float)
        M = np.broadcast_to(np.asarray(M, dtype=float), A.shape)
        self.shape = A.shape
        A, M = A.ravel(), M.ravel()
        with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
            live = A < _DEAD
            self.sign = np.exp(-A)                                            # pi at x = 1
            two = live & np.isfinite(M)
            self.two = two
            self.kink_x = np.where(two, A / (A + M), 1.0)
            # pi_sign and pi_both at the kink as its (rounded) x gives them: the powers are computed from x
            kink_sign = A / self.kink_x
            self.kink_sign = np.where(two, np.exp(-kink_sign), 0.0)
            self.kink_both = np.where(two, np.exp(-np.maximum(kink_sign, M / (1.0 - self.kink_x))), 0.0)
            # The bracket of the interior root: [max(x-, x0), x+], where A M < 1.
            disc = 1.0 - A * M
            bracket = two & (disc > 0.0)
            idx = np.flatnonzero(bracket)
            a_, m_ = A[idx], M[idx]
            upper = ((a_ + 1.0) + np.sqrt(disc[idx])) / (a_ + m_ + 2.0)
            lower = np.maximum(a_ / ((a_ + m_ + 2.0) * upper), self.kink_x[idx])   # x- from the roots' product
            keep = lower < upper
            idx, a_, m_, lower, upper = idx[keep], a_[keep], m_[keep], lower[keep], upper[keep]
            z_low, z_high = np.log(lower) - np.log1p(-lower), np.log(upper) - np.log1p(-upper)
            z = z_low[:, None] + (z_high - z_low)[:, None] * np.linspace(0.0, 1.0, _TABLE)
            x = 1.0 / (1.0 + np.exp(-z))
            x[:, 0], x[:, -1] = lower, upper
            self.index = idx                       # entries with a bracket
            self.table_x, self.table_g, self.table_z = x, _g(x, a_[:, None], m_[:, None]), z
            self.A, self.M = a_, m_
            self.log_ratio = np.log(a_) - np.log(m_)

    def best(self, a, b):
        """(value, x) of every entry, for coefficients broadcasting to (..., *shape): the best of silent
        (value 0 at x = 1 is reported as the sign-only point when a > 0, else silent is value <= 0)."""
        shape = np.broadcast_shapes(np.shape(a), np.shape(b), self.shape)
        flat = shape[: len(shape) - len(self.shape)] + (int(np.prod(self.shape, dtype=int)),)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
            ratio = np.log(a) - np.log(b)          # per coefficient set, before the broadcast over entries
            a, b, ratio = (_expanded(v, shape).reshape(flat) for v in (a, b, ratio))
            value = a * self.sign
            x = np.ones(value.shape)
            kink = a * self.kink_sign + b * self.kink_both
            take = kink > value
            value = np.where(take, kink, value)
            x = np.where(take, self.kink_x, x)
            if self.index.size:
                ai, bi = a[..., self.index], b[..., self.index]
                c = ratio[..., self.index] + self.log_ratio                   # NaN where a or b <= 0
                target = -c                                                   # g(root) = -c
                g = self.table_g
                found = (target < g[:, 0]) & (target > g[:, -1])              # False where c is NaN
                if found.any():
                    where = np.nonzero(found)
                    entry = where[-1]
                    t = target[where]
                    gt = g[entry]
                    count = np.sum(gt > t[:, None], axis=1)                   # in 1 .. _TABLE - 1
                    rows = np.arange(entry.size)
                    x_low, x_high = self.table_x[entry, count - 1], self.table_x[entry, count]
                    g_low, g_high = gt[rows, count - 1], gt[rows, count]
                    z_low, z_high = self.table_z[entry, count - 1], self.table_z[entry, count]
                    z = z_low + (z_high - z_low) * (g_low - t) / (g_low - g_high)
                    root = 1.0 / (1.0 + np.exp(-z))
                    A, M = self.A[entry], self.M[entry]
                    for _ in range(_NEWTON):
                        excess = _g(root, A, M) - t                            # F(root): > 0 left of the root
                        x_low = np.where(excess > 0.0, root, x_low)
                        x_high = np.where(excess < 0.0, root, x_high)
                        trial = root - excess / _slope(root, A, M)
                        inside = (trial >= x_low) & (trial <= x_high)
                        root = np.where(inside, trial, 0.5 * (x_low + x_high))
                    sign = A / root
                    inner = ai[where] * np.exp(-sign) + bi[where] * np.exp(-np.maximum(sign, M / (1.0 - root)))
                    full = tuple(w for w in where[:-1]) + (self.index[entry],)
                    better = inner > value[full]
                    # the interior maximum first: it wins ties with the kink and the sign-only point
                    keep = better | (inner == value[full])
                    value[full] = np.where(keep, inner, value[full])
                    x[full] = np.where(keep, root, x[full])
            return value.reshape(shape), x.reshape(shape)
