"""Double-double arithmetic on NumPy arrays: the precise kernel pass of near-parallel pairs.

A :class:`DD` holds an unevaluated sum ``hi + lo`` of two float64 arrays with
``|lo| <= ulp(hi)/2`` (about 32 significant digits).  It is used only where float64
loses the angle between two inputs: the kernel state of a block of input pairs that
has near-parallel pixel pairs is recomputed with Σ as a DD (see
:mod:`ntkfast.backends.reference_network`), so that D = q q' − Σ² — and with it the
angle θ = atan2(√D, Σ) that the ReLU family's E[φ'φ'] = (a²+b²)/2 − (a−b)² θ/(2π)
reads — keeps its digits for (near-)duplicate images.

The operations are the classical error-free transformations (Dekker 1971, Knuth's
TwoSum, Veltkamp's split; no FMA is needed): ``+ - *`` of DDs and float64 arrays or
scalars, ``/`` (DD by DD or float64), :meth:`DD.sqrt`, :func:`atan2` (absolute error
~1e-32 of the angle), sums and means over axes (pairwise), indexing, reshaping and
broadcasting.  Each result has an *absolute* error of a few 1e-32 of its operands'
magnitudes, which is what the kernel needs (the angle to 1e-16 however small it is).
Constants that are float64 numbers (σ_w², 1/(2π), ...) enter exactly as those
numbers: the same slightly perturbed network everywhere, which moves every kernel by
~1e-16 relative and no angle by more.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DD", "atan2", "as_float", "is_dd", "PI", "HALF_PI"]

_SPLIT = 134217729.0  # 2^27 + 1 (Veltkamp)


def two_sum(a, b):
    """s + e = a + b exactly (Knuth)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def fast_two_sum(a, b):
    """s + e = a + b exactly when |a| >= |b| (or a = 0)."""
    s = a + b
    return s, b - (s - a)


def _split(a):
    c = _SPLIT * a
    hi = c - (c - a)
    return hi, a - hi


def two_prod(a, b):
    """p + e = a·b exactly (Dekker; |a|, |b| < ~1e300)."""
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def _f64(x):
    return np.asarray(x, dtype=np.float64)


class DD:
    """An array of double-double numbers ``hi + lo`` (float64 arrays of one shape)."""

    __slots__ = ("hi", "lo")
    __array_ufunc__ = None  # ndarray (op) DD defers to DD's reflected operators

    def __init__(self, hi, lo=None):
        self.hi = _f64(hi)
        self.lo = np.zeros_like(self.hi) if lo is None else _f64(lo)

    # -- shape ---------------------------------------------------------------------
    @property
    def shape(self):
        return self.hi.shape

    @property
    def ndim(self):
        return self.hi.ndim

    @property
    def size(self):
        return self.hi.size

    def __len__(self):
        return len(self.hi)

    def __getitem__(self, key):
        return DD(self.hi[key], self.lo[key])

    def __setitem__(self, key, value):
        value = as_dd(value)
        self.hi[key] = value.hi
        self.lo[key] = value.lo

    def reshape(self, *shape):
        return DD(self.hi.reshape(*shape), self.lo.reshape(*shape))

    def transpose(self, *axes):
        return DD(self.hi.transpose(*axes), self.lo.transpose(*axes))

    def copy(self):
        return DD(np.array(self.hi), np.array(self.lo))

    def broadcast_to(self, shape):
        return DD(np.broadcast_to(self.hi, shape), np.broadcast_to(self.lo, shape))

    def contiguous(self):
        return DD(np.ascontiguousarray(self.hi), np.ascontiguousarray(self.lo))

    def __repr__(self):
        return f"DD(hi={self.hi!r}, lo={self.lo!r})"

    # -- arithmetic ------------------------------------------------------------------
    def __neg__(self):
        return DD(-self.hi, -self.lo)

    def __abs__(self):
        neg = self.hi < 0
        return DD(np.where(neg, -self.hi, self.hi), np.where(neg, -self.lo, self.lo))

    def __add__(self, other):
        if isinstance(other, DD):
            s, e = two_sum(self.hi, other.hi)
            e = e + (self.lo + other.lo)
        else:
            s, e = two_sum(self.hi, _f64(other))
            e = e + self.lo
        return DD(*fast_two_sum(s, e))

    __radd__ = __add__

    def __sub__(self, other):
        return self + (-other)

    def __rsub__(self, other):
        return (-self) + other

    def __mul__(self, other):
        if isinstance(other, DD):
            p, e = two_prod(self.hi, other.hi)
            e = e + (self.hi * other.lo + self.lo * other.hi)
        else:
            other = _f64(other)
            p, e = two_prod(self.hi, other)
            e = e + self.lo * other
        return DD(*fast_two_sum(p, e))

    __rmul__ = __mul__

    def __truediv__(self, other):
        """One quotient digit and a correction: error ~ few 1e-32 relative."""
        den_hi = other.hi if isinstance(other, DD) else _f64(other)
        q1 = self.hi / den_hi
        r = self - as_dd(other) * q1
        q2 = r.hi / den_hi
        return DD(*fast_two_sum(q1, q2))

    def __rtruediv__(self, other):
        return as_dd(other) / self

    def sqrt(self):
        """√self (0 where self <= 0): s = √hi corrected by (self − s²)/(2 s)."""
        s = np.sqrt(np.maximum(self.hi, 0.0))
        p, e = two_prod(s, s)
        with np.errstate(divide="ignore", invalid="ignore"):
            corr = ((self.hi - p) - e + self.lo) / (2.0 * s)
        corr = np.where(s > 0, corr, 0.0)
        return DD(*fast_two_sum(s, corr))

    def maximum0(self):
        """max(self, 0)."""
        neg = self.hi < 0
        return DD(np.where(neg, 0.0, self.hi), np.where(neg, 0.0, self.lo))

    # -- reductions ------------------------------------------------------------------
    def sum(self, axis=None):
        """The sum over ``axis`` (an int, a tuple or None for all), pairwise."""
        nd = self.ndim
        axes = tuple(range(nd)) if axis is None else \
            tuple(a % nd for a in (axis if isinstance(axis, tuple) else (axis,)))
        keep = [a for a in range(nd) if a not in axes]
        a = self.transpose(*(keep + list(axes)))
        n = int(np.prod([self.shape[ax] for ax in axes], dtype=np.int64))
        a = a.reshape(a.shape[:len(keep)] + (n,))
        while n > 1:
            h = n // 2
            s = a[..., :h] + a[..., h:2 * h]
            if n % 2:
                s = DD(np.concatenate([s.hi, a.hi[..., 2 * h:]], axis=-1),
                       np.concatenate([s.lo, a.lo[..., 2 * h:]], axis=-1))
            a, n = s, s.shape[-1]
        if n == 0:
            return DD(np.zeros(a.shape[:-1]))
        return a[..., 0]

    def mean(self, axis=None):
        s = self.sum(axis)
        count = self.size // max(s.size, 1)
        return s / float(count)


def as_dd(x) -> DD:
    return x if isinstance(x, DD) else DD(x)


def is_dd(x) -> bool:
    return isinstance(x, DD)


def as_float(x):
    """The float64 value of a DD (its ``hi``), anything else unchanged."""
    return x.hi if isinstance(x, DD) else x


def where(cond, a, b) -> DD:
    a, b = as_dd(a), as_dd(b)
    return DD(np.where(cond, a.hi, b.hi), np.where(cond, a.lo, b.lo))


PI = DD(3.141592653589793, 1.2246467991473532e-16)
HALF_PI = DD(1.5707963267948966, 6.123233995736766e-17)

#: atan(k/32), k = 0 … 32, as (hi, lo) (40-digit mpmath)
_ATAN_TABLE = np.array([
    (0.0, 0.0),
    (0.031239833430268277, -1.188442711587748e-18),
    (0.06241880999595735, -1.5490756308295046e-18),
    (0.09347678115858947, -6.2844725995420954e-18),
    (0.12435499454676144, -3.1253241424539383e-18),
    (0.15499674192394097, 9.585415594114324e-18),
    (0.18534794999569476, 4.180692268843079e-18),
    (0.21535769969773805, 4.738160130078733e-19),
    (0.24497866312686414, 1.0698755618734451e-17),
    (0.2741674511196588, 8.261353575163773e-18),
    (0.3028848683749714, -1.1010827903001369e-17),
    (0.3310960767041321, -7.952610375793799e-18),
    (0.35877067027057225, -2.4623815582638635e-17),
    (0.38588266939807375, 2.378822732491941e-17),
    (0.4124104415973873, -1.587652227770689e-17),
    (0.43833655985795783, -2.494277030626541e-17),
    (0.4636476090008061, 2.2698777452961687e-17),
    (0.48833395105640554, -1.1373236189329585e-17),
    (0.5123894603107377, -2.5462781472855804e-17),
    (0.5358112379604637, -4.0637956834825575e-18),
    (0.5585993153435624, -5.4556305485916264e-18),
    (0.5807563535676704, -1.441464378193067e-17),
    (0.6022873461349642, 2.950430737228402e-17),
    (0.6231993299340659, 2.672403885140095e-17),
    (0.6435011087932844, 1.5834785051444286e-17),
    (0.6632029927060933, -3.076054864429649e-17),
    (0.6823165548747481, 6.943223671560008e-18),
    (0.7008544078844502, -1.987626234335816e-17),
    (0.7188299996216245, -2.1478388444456983e-17),
    (0.7362574289814281, 3.473937648299457e-17),
    (0.7531512809621944, -2.4256934659182068e-17),
    (0.7695264804056583, -3.704991905602721e-17),
    (0.7853981633974483, 3.061616997868383e-17),
])
#: the atan series on |u| <= 1/64 (u² <= 2.5e-4): Σ_n (−1)^n u^(2n+1)/(2n+1) to n = 9
#: ((1/64)^21/21 < 1e-39); the terms n >= 4 in float64 (their rounding is below 1e-32
#: of u), n <= 3 with double-double coefficients
_ATAN_DD = [DD(1.0) / float(2 * n + 1) * (-1.0) ** n for n in range(4)]
_ATAN_F64 = [(-1.0) ** n / (2 * n + 1) for n in range(4, 10)]


def atan2(y, x) -> DD:
    """atan2(y, x) of DDs (or float64 arrays) in (−π, π], absolute error ~1e-32:
    t = min/max of |y|, |x| in [0, 1], atan t = atan(k/32) + atan u with k/32 nearest
    to t and u = (t − k/32)/(1 + t k/32) (|u| <= 1/64, odd Taylor series), then the
    octant and sign.  atan2(0, 0) = 0 (callers apply their convention)."""
    y, x = as_dd(y), as_dd(x)
    ay, ax = abs(y), abs(x)
    swap = ay.hi > ax.hi
    num, den = where(swap, ax, ay), where(swap, ay, ax)
    zero = den.hi == 0
    den = where(zero, 1.0, den)
    k = np.rint(32.0 * (num.hi / den.hi))
    c = k / 32.0
    u = (num - den * c) / (den + num * c)
    w = u * u
    wh = w.hi
    tail = _ATAN_F64[-1]
    for coef in _ATAN_F64[-2::-1]:
        tail = tail * wh + coef
    poly = w * tail + _ATAN_DD[3]
    for coef in _ATAN_DD[2::-1]:
        poly = poly * w + coef
    ki = k.astype(np.intp)
    phi = DD(_ATAN_TABLE[ki, 0], _ATAN_TABLE[ki, 1]) + u * poly
    phi = where(swap, HALF_PI - phi, phi)
    phi = where(x.hi < 0, PI - phi, phi)
    phi = where(y.hi < 0, -phi, phi)
    return where(zero, 0.0, phi)
