"""Activations and their Gaussian kernel rules.

Every activation φ carries one *kernel rule*: for a centred bivariate Gaussian
``(u, v) ~ N(0, [[qx, Σ], [Σ, qz]])`` it returns

    E  = E[φ(u) φ(v)]          (the NNGP map)
    Ė  = E[φ'(u) φ'(v)]        (the derivative map used by the NTK)

vectorised over NumPy arrays (``qx``, ``qz`` broadcast against ``sigma``).
These rules are the plain-NumPy oracle that the compiled engine is tested
against; the compiled engine implements the same formulas in C
(``src_ext/ntk_recursion.h``), identified by :attr:`Activation.engine_code`.

The angle convention (as in neural-tangents' ``stax``): θ is the angle with
cos θ = Σ / √(qx qz), computed as ``atan2(√max(qx qz − Σ², 0), Σ)``, and
θ = π/2 when both arguments are 0 (a zero input).
"""

from __future__ import annotations

import dis
import functools
import hashlib
import math
import threading
import types

import numpy as np
from scipy import special

__all__ = [
    "Activation", "ReLU", "LeakyReLU", "Abs", "ABReLU", "Erf", "GELU", "Identity",
    "get_activation", "ACTIVATION_NAMES",
]


def _angle(sigma, qx, qz):
    """θ = atan2(√max(qx qz − Σ², 0), Σ), with θ = π/2 where both are 0."""
    sin_part = np.sqrt(np.maximum(qx * qz - sigma * sigma, 0.0))
    theta = np.arctan2(sin_part, sigma)
    degenerate = (sin_part == 0) & (sigma == 0)
    if np.any(degenerate):
        theta = np.where(degenerate, np.asarray(np.pi / 2, dtype=theta.dtype), theta)
    return theta, sin_part


def _near_parallel(theta, tau):
    """The mask of entries with sin²θ < τ (near-parallel or near-antiparallel), or None
    when there is none (two reductions decide that without a mask)."""
    t = math.asin(math.sqrt(tau))
    if theta.size == 0 or (theta.min() >= t and theta.max() <= math.pi - t):
        return None
    return (theta < t) | (theta > math.pi - t)


class Activation:
    """Base class: an elementwise nonlinearity with a closed-form kernel rule.

    Subclasses define :meth:`kernel_rule` (the oracle), :meth:`fn` and
    :meth:`dfn` (φ and φ' on arrays, for finite networks and Monte Carlo
    checks) and :attr:`engine_code`, :meth:`engine_params` for the compiled
    engine.
    """

    engine_code: int = -1
    #: True if the kernel maps are smooth functions of Σ (no angle needed).
    smooth: bool = True

    def kernel_rule(self, sigma, qx, qz):  # pragma: no cover - abstract
        raise NotImplementedError

    def diag_rule(self, q):
        """(E, Ė) on the diagonal: the kernel rule with Σ = qx = qz = q (θ = 0)."""
        return self.kernel_rule(q, q, q)

    #: True if :meth:`kernel_rule_dd` evaluates E in double-double (a closed form
    #: written in double-double arithmetic); else it is the float64 rule.
    dd_exact: bool = False

    @property
    def angle_sensitive(self) -> bool:
        """True if E[φ'φ'] reads the angle θ to first order near θ = 0 (the ReLU
        family), so that float64 loses digits on near-parallel pairs and the network
        engine recomputes such pairs in double-double (which needs
        :attr:`dd_exact`)."""
        return not self.smooth and self.dd_exact

    def kernel_rule_dd(self, sigma, qx, qz):
        """(E, Ė) with Σ, qx, qz and E double-doubles
        (:class:`ntkfast.layers.doubledouble.DD`) and Ė float64, for the precise pass
        of near-parallel pairs.  Default (no double-double closed form): the float64
        rule on the leading parts."""
        from .layers.doubledouble import DD, as_float
        e, edot = self.kernel_rule(as_float(sigma), as_float(qx), as_float(qz))
        return DD(e), edot

    def diag_rule_dd(self, q):
        """:meth:`diag_rule` in double-double (θ = 0)."""
        if self.dd_exact:
            return self.kernel_rule_dd(q, q, q)
        from .layers.doubledouble import DD, as_float
        e, edot = self.diag_rule(as_float(q))
        return DD(e), edot

    def fn(self, u):  # pragma: no cover - abstract
        raise NotImplementedError

    def dfn(self, u):  # pragma: no cover - abstract
        raise NotImplementedError

    def engine_params(self):
        """Four floats handed to the compiled engine (meaning per engine_code)."""
        return (0.0, 0.0, 0.0, 0.0)

    def _key(self):
        return (type(self).__name__,)

    def __eq__(self, other):
        return isinstance(other, Activation) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        return f"{type(self).__name__}()"


class ABReLU(Activation):
    """φ(u) = a·min(u, 0) + b·max(u, 0).

    With θ the angle between the two inputs:

        E[φφ]   = (a−b)²/(2π) · √(qx qz − Σ²) + ((a²+b²)/2 − (a−b)² θ/(2π)) · Σ
        E[φ'φ'] = (a²+b²)/2 − (a−b)² θ/(2π)
    """

    engine_code = 1
    smooth = False
    dd_exact = True

    def __init__(self, a: float, b: float):
        a, b = float(a), float(b)
        for name, v in (("a", a), ("b", b)):
            if not math.isfinite(v):
                raise ValueError(f"{type(self).__name__}: {name} must be finite, got {v!r}")
        self.a, self.b = a, b

    @property
    def edot_angle_slope(self) -> float:
        """|dĖ/dθ| = (a−b)²/(2π): how an error of θ moves E[φ'φ']."""
        return (self.a - self.b) ** 2 / (2 * np.pi)

    def kernel_rule(self, sigma, qx, qz, near_tau=None):
        """(E, Ė); with ``near_tau`` also the mask of the near-parallel entries,
        sin²θ < τ (None if there is none; see :mod:`ntkfast.layers.elementwise`)."""
        a, b = self.a, self.b
        theta, sin_part = _angle(sigma, qx, qz)
        factor = (a - b) ** 2 / (2 * np.pi)
        edot = (a * a + b * b) / 2 - factor * theta
        e = factor * sin_part + edot * sigma
        if near_tau is None:
            return e, edot
        return e, edot, _near_parallel(theta, near_tau)

    def kernel_rule_dd(self, sigma, qx, qz):
        """The rule in double-double, written (as the compiled engine's exact step)
        with φ = atan2(√D, |Σ|) in [0, π/2] (θ = φ for Σ >= 0, π − φ for Σ < 0) and
        h = √D − φ |Σ| = √(qx qz) (sin φ − φ cos φ):

            Σ >= 0:  E = (a²+b²)/2 · Σ + (a−b)²/(2π) · h,   Ė = (a²+b²)/2 − (a−b)² φ/(2π)
            Σ <  0:  E = (a−b)²/(2π) · h − ab |Σ|,          Ė = ab + (a−b)² φ/(2π)

        (using ab = (a²+b²)/2 − (a−b)²/2 exactly: Abs maps antiparallel inputs to
        exactly parallel outputs, E = √(E_x E_z)).  D, √D, φ, h and E in double-double;
        Ė from φ (1e-16 absolute however small the angle)."""
        from .layers.doubledouble import HALF_PI, as_dd, atan2, where
        a, b = self.a, self.b
        sigma, qx, qz = as_dd(sigma), as_dd(qx), as_dd(qz)
        root = (qx * qz - sigma * sigma).maximum0().sqrt()
        mag = abs(sigma)
        phi = atan2(root, mag)
        degenerate = (root.hi == 0) & (sigma.hi == 0)  # θ = π/2 by convention
        if np.any(degenerate):
            phi = where(degenerate, HALF_PI, phi)
        factor = (a - b) ** 2 / (2 * np.pi)
        half, ab = (a * a + b * b) / 2, a * b
        h = root - phi * mag
        neg = sigma.hi < 0
        e = where(neg, h * factor - mag * ab, sigma * half + h * factor)
        edot = np.where(neg, ab + factor * phi.hi, half - factor * phi.hi)
        return e, edot

    def fn(self, u):
        return self.a * np.minimum(u, 0) + self.b * np.maximum(u, 0)

    def dfn(self, u):
        return np.where(u > 0, self.b, self.a).astype(np.result_type(u, float))

    def engine_params(self):
        return (self.a, self.b, 0.0, 0.0)

    def _key(self):
        return ("ABReLU", self.a, self.b)

    def __repr__(self):
        return f"ABReLU(a={self.a!r}, b={self.b!r})"


class ReLU(ABReLU):
    """φ(u) = max(u, 0): ABReLU(0, 1).  E[φ'φ'] = (π − θ)/(2π)."""

    def __init__(self):
        super().__init__(0.0, 1.0)

    def __repr__(self):
        return "ReLU()"


class LeakyReLU(ABReLU):
    """φ(u) = max(u, 0) + negative_slope·min(u, 0): ABReLU(negative_slope, 1)."""

    def __init__(self, negative_slope: float = 0.01):
        super().__init__(negative_slope, 1.0)
        self.negative_slope = float(negative_slope)

    def __repr__(self):
        return f"LeakyReLU(negative_slope={self.negative_slope!r})"


class Abs(ABReLU):
    """φ(u) = |u|: ABReLU(−1, 1)."""

    def __init__(self):
        super().__init__(-1.0, 1.0)

    def __repr__(self):
        return "Abs()"


class Erf(Activation):
    """φ(u) = a·erf(b·u) + c.  With Σ, q scaled by b² first (P = (1+2qx)(1+2qz)):

        E[φφ]   = a² · (2/π) · asin(2Σ / √P) + c²
        E[φ'φ'] = a² b² · (4/π) / √(P − 4Σ²)
    """

    engine_code = 2
    dd_exact = True

    def __init__(self, a: float = 1.0, b: float = 1.0, c: float = 0.0):
        self.a, self.b, self.c = float(a), float(b), float(c)
        for name in ("a", "b", "c"):
            v = getattr(self, name)
            if not math.isfinite(v):
                raise ValueError(f"Erf: {name} must be finite, got {v!r}")

    def kernel_rule_dd(self, sigma, qx, qz):
        """The rule below with Σ, q and E in double-double."""
        from .layers.doubledouble import as_dd, atan2
        a, b, c = self.a, self.b, self.c
        b2 = b * b
        s, qx, qz = as_dd(sigma) * b2, as_dd(qx) * b2, as_dd(qz) * b2
        root = (1.0 + 2.0 * (qx + qz) + 4.0 * (qx * qz - s * s).maximum0()).sqrt()
        e = atan2(2.0 * s, root) * (a * a * (2 / np.pi)) + c * c
        return e, a * a * b2 * (4 / np.pi) / root.hi

    def kernel_rule(self, sigma, qx, qz):
        a, b, c = self.a, self.b, self.c
        b2 = b * b
        s, qx, qz = b2 * sigma, b2 * qx, b2 * qz
        # P − 4Σ² written as 1 + 2(qx+qz) + 4(qx qz − Σ²) to avoid cancellation.
        det = 1 + 2 * (qx + qz) + 4 * np.maximum(qx * qz - s * s, 0.0)
        root = np.sqrt(det)
        e = a * a * (2 / np.pi) * np.arctan2(2 * s, root) + c * c
        edot = a * a * b2 * (4 / np.pi) / root
        return e, edot

    def fn(self, u):
        return self.a * special.erf(self.b * u) + self.c

    def dfn(self, u):
        return self.a * self.b * (2 / np.sqrt(np.pi)) * np.exp(-(self.b * u) ** 2)

    def engine_params(self):
        return (self.a, self.b, self.c, 0.0)

    def _key(self):
        return ("Erf", self.a, self.b, self.c)

    def __repr__(self):
        return f"Erf(a={self.a!r}, b={self.b!r}, c={self.c!r})"


class GELU(Activation):
    """φ(u) = u·Φ(u) (exact GELU).  Closed form as in neural-tangents' ``Gelu``
    (Tsuchida et al. 2021, arXiv:2002.08517): with δ² = (qx+1)(qz+1) − Σ²,
    α = atan2(Σ, δ),

        E[φφ]   = Σ/4 + [ (Σ² + qx qz δ²) / ((qx+1)(qz+1) δ) + Σ α ] / (2π)
        E[φ'φ'] = 1/4 + α/(2π) + Σ/(2πδ) · (1/δ² + (1 − qx qz)/((qx+1)(qz+1)) + 1)
    """

    engine_code = 3
    dd_exact = True

    def kernel_rule_dd(self, sigma, qx, qz):
        """E of the rule below in double-double (Ė float64: smooth in Σ)."""
        from .layers.doubledouble import as_dd, as_float, atan2
        s, qx, qz = as_dd(sigma), as_dd(qx), as_dd(qz)
        pp1 = (qx + 1.0) * (qz + 1.0)
        prod = qx * qz
        delta2 = qx + qz + 1.0 + (prod - s * s).maximum0()
        delta = delta2.sqrt()
        e = ((s * s + prod * delta2) / (pp1 * delta) + s * atan2(s, delta)) * (0.5 / np.pi)
        e = e + s * 0.25
        return e, self.kernel_rule(as_float(sigma), as_float(qx), as_float(qz))[1]

    def kernel_rule(self, sigma, qx, qz):
        pp1 = (qx + 1) * (qz + 1)
        prod = qx * qz
        delta2 = 1 + qx + qz + np.maximum(prod - sigma * sigma, 0.0)
        delta = np.sqrt(delta2)
        angle = np.arctan2(sigma, delta)
        e = ((sigma * sigma + prod * delta2) / (pp1 * delta) + sigma * angle) / (2 * np.pi)
        e = e + 0.25 * sigma
        first = (1 / delta2 + (1 - prod) / pp1 + 1) * sigma / delta / (2 * np.pi)
        edot = first + 0.25 + angle / (2 * np.pi)
        return e, edot

    def fn(self, u):
        return u * special.ndtr(u)

    def dfn(self, u):
        return special.ndtr(u) + u * np.exp(-0.5 * u * u) / np.sqrt(2 * np.pi)


class Identity(Activation):
    """φ(u) = u:  E[φφ] = Σ,  E[φ'φ'] = 1."""

    engine_code = 0
    dd_exact = True

    def kernel_rule(self, sigma, qx, qz):
        return sigma + 0 * (qx + qz), np.ones_like(sigma + 0 * (qx + qz))

    def kernel_rule_dd(self, sigma, qx, qz):
        from .layers.doubledouble import as_dd, as_float
        shape = np.broadcast_shapes(np.shape(as_float(sigma)), np.shape(as_float(qx)),
                                    np.shape(as_float(qz)))
        return as_dd(sigma).broadcast_to(shape), np.ones(shape)

    def fn(self, u):
        return np.asarray(u, dtype=float)

    def dfn(self, u):
        return np.ones_like(np.asarray(u, dtype=float))


_BY_NAME = {
    "relu": ReLU,
    "leaky_relu": LeakyReLU,
    "abs": Abs,
    "erf": Erf,
    "gelu": GELU,
    "identity": Identity,
}
ACTIVATION_NAMES = tuple(_BY_NAME)


def get_activation(activation) -> Activation:
    """Turn a name ('relu', …) or an :class:`Activation` instance into an instance."""
    if isinstance(activation, Activation):
        return activation
    if isinstance(activation, type) and issubclass(activation, Activation):
        return activation()
    if isinstance(activation, str):
        key = activation.strip().lower().replace("-", "_")
        key = {"leakyrelu": "leaky_relu", "linear": "identity"}.get(key, key)
        if key in _BY_NAME:
            return _BY_NAME[key]()
    valid = ", ".join(repr(n) for n in ACTIVATION_NAMES)
    raise ValueError(
        f"activation: unknown activation {activation!r}; use one of {valid} "
        "or an instance from ntkfast.activations (ReLU(), LeakyReLU(0.1), Abs(), "
        "ABReLU(a, b), Erf(a, b, c), GELU(), Identity())."
    )


# ---------------------------------------------------------------------------------
# Activations without a compiled closed form: Gaussian quadrature (issue 5).
# See ntkfast.quadrature for the rules and their accuracy; the Numba backend
# (ntkfast.backends.numba_quad) compiles the same rules.
# ---------------------------------------------------------------------------------

class QuadratureActivation(Activation):
    """φ without a closed-form kernel: the Hermite series, certified per element.

    ``kernel_rule`` evaluates E[φφ] and E[φ'φ'] by the Hermite (Mehler) series of
    :mod:`ntkfast.series`: per distinct variance one coefficient vector (a 1-D
    trapezoidal quadrature), per element a polynomial in ρ = Σ/√(qx qz) with a stated
    truncation bound (≤ 1e-13 · √(E[φ(u)²] E[φ(v)²])).  Elements the series cannot
    certify (|ρ| → 1 with a steep φ(√q ·)) use 2-D quadrature
    (:func:`ntkfast.series.quadrature_fallback`).  ``diag_rule`` is the 1-D rule of the
    series' coefficients (θ = 0 exactly).

    ``method="quadrature"`` (the default when ``degree`` is given; also a φ with
    ``kink=True``, or a :class:`Custom` φ whose coefficients decay too slowly) uses the
    2-D quadrature of :mod:`ntkfast.quadrature` for every element instead
    (:meth:`quadrature_rule`, 10³–10⁴× the ReLU time): ``degree``: its points per
    dimension (default :data:`ntkfast.quadrature.DEFAULT_DEGREE` = 97, trapezoidal rule
    on the Gaussian; also the base degree of the series' fallback); φ with ``kink=True``
    (non-differentiable at 0 only) use the polar rule
    (:data:`ntkfast.quadrature.DEFAULT_POLAR`).  ``quad_code`` identifies the built-in φ
    in the Numba kernels (−1: a :class:`Custom` φ compiled on its own).
    """

    engine_code = -1
    quad_code = -1
    kink = False
    #: "series" or "quadrature" (see the class doc)
    method = "series"

    def _init_degree(self, degree, rule="trapezoid", method=None):
        if degree is not None:
            degree = int(degree)
            if degree < 2:
                raise ValueError(f"{type(self).__name__}: degree must be >= 2, got {degree}")
        if rule not in ("trapezoid", "hermite"):
            raise ValueError(f"{type(self).__name__}: rule must be 'trapezoid' or 'hermite'")
        if method is None:  # an explicit quadrature degree asks for the quadrature
            method = "series" if degree is None else "quadrature"
        if method not in ("series", "quadrature"):
            raise ValueError(f"{type(self).__name__}: method must be 'series' or "
                             f"'quadrature', got {method!r}")
        self.degree = degree
        self.rule = rule
        self.method = method

    @property
    def uses_series(self) -> bool:
        """True when the kernel maps come from the Hermite series (see the class doc)."""
        return self.method == "series" and not self.kink

    def phi2(self, u):
        """(φ(u), φ'(u)) on a float64 array."""
        raise NotImplementedError  # pragma: no cover

    #: scale of the series' trapezoidal step (below 1 for φ analytic in a narrower strip
    #: than tanh's; :class:`Custom` calibrates it)
    series_step = 1.0

    def kernel_rule(self, sigma, qx, qz):
        if not self.uses_series:
            return self.quadrature_rule(sigma, qx, qz)
        from . import series
        return series.evaluate(self.phi2, sigma, qx, qz, self._fallback,
                               step=self.series_step)

    def _fallback(self, sigma, qx, qz):
        from . import series
        return series.quadrature_fallback(self.phi2, sigma, qx, qz, degree=self.degree,
                                          rule=self.rule)

    def quadrature_rule(self, sigma, qx, qz):
        """(E, Ė) by 2-D quadrature alone (:func:`ntkfast.quadrature.gauss_kernel`)."""
        from . import quadrature
        return quadrature.gauss_kernel(self.phi2, sigma, qx, qz,
                                       kink=self.kink or self._quad_kink,
                                       degree=self.degree, rule=self.rule)

    #: the 2-D quadrature uses the polar (kink-aware) rule
    _quad_kink = False

    def diag_rule(self, q):
        if self.uses_series:
            return self._series_diag(q)
        from . import quadrature
        kink = self.kink or self._quad_kink
        return quadrature.gauss_diag(self.phi2, q, kink=kink,
                                     degree=None if kink else self.degree, rule=self.rule)

    #: entries of the per-activation memo of :meth:`_series_diag`, and the most rows
    #: an entry may have
    _DIAG_MEMO = 8
    _DIAG_MEMO_ROWS = 1 << 20

    def _series_diag(self, q):
        """:func:`ntkfast.series.diag_interpolated` (the diagonal rule at a few variances,
        interpolated in log q where that is verified) memoised by the content of q
        (copies returned): a network asks for the same layer variances' maps several
        times (the layer variances, the diagonal of Θ, the φ' tails of
        :meth:`series_coefficients`)."""
        q = np.asarray(q, dtype=np.float64)
        if q.size > self._DIAG_MEMO_ROWS:           # bound the memo's memory (~16 MB/entry)
            return self._diag_values(q)
        key = (q.shape, self.series_step,
               hashlib.blake2b(np.ascontiguousarray(q).tobytes(), digest_size=16).digest())
        with _MEMO_LOCK:
            memo = self.__dict__.setdefault("_diag_memo", {})
            hit = memo.get(key)
        if hit is None:
            hit = self._diag_values(q)
            with _MEMO_LOCK:
                while len(memo) >= self._DIAG_MEMO:
                    memo.pop(next(iter(memo)))
                memo[key] = hit
        return hit[0].copy(), hit[1].copy()

    def _diag_values(self, q):
        from . import series
        return series.diag_interpolated(self.phi2, q, step=self.series_step)

    def phi(self, u):
        """φ alone on a float64 array (subclasses skip computing φ')."""
        return self.phi2(u)[0]

    def series_coefficients(self, q, kcap):
        """:func:`ntkfast.series.coefficients` of φ and φ' at the variances ``q`` (the
        engine's per-layer tables), φ''s by Stein's identity from φ's (``stein``): φ' is
        not evaluated for the tables except on rows of tiny q
        (:func:`ntkfast.series.stein_rows`); E[φ'²] per row (the tail bound of Ė) from
        the memoised diagonal rule."""
        from . import series
        return series.coefficients(self.phi2, q, kcap, self.series_step,
                                   stein=(self.phi, self.diag_rule(q)[1]))

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_diag_memo", None)       # a cache, not state
        return state

    def fn(self, u):
        return self.phi2(np.asarray(u, dtype=np.float64))[0]

    def dfn(self, u):
        return self.phi2(np.asarray(u, dtype=np.float64))[1]

    def _default_method(self):
        return "series" if self.degree is None else "quadrature"

    def _key(self):
        # the method joins the key only when it is not the one ``degree`` implies (so
        # describe() of the default activations, and journals, keep their form)
        extra = () if self.method == self._default_method() else (self.method,)
        return (type(self).__name__, self.degree, self.rule, *extra)

    def __repr__(self):
        args = []
        if self.degree is not None:
            args.append(f"degree={self.degree}")
        if self.method != self._default_method():
            args.append(f"method={self.method!r}")
        return f"{type(self).__name__}({', '.join(args)})"


_MEMO_LOCK = threading.Lock()


def _sigmoid(u):
    e = np.exp(-np.abs(u))
    return np.where(u >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


class Tanh(QuadratureActivation):
    """φ(u) = tanh(u), φ' = 1 − tanh²(u)."""

    quad_code = 1

    def __init__(self, degree=None, rule="trapezoid", method=None):
        self._init_degree(degree, rule, method)

    def phi2(self, u):
        t = np.tanh(u)
        return t, 1.0 - t * t

    def phi(self, u):
        return np.tanh(u)


class Softplus(QuadratureActivation):
    """φ(u) = log(1 + e^u) (computed stably), φ' = sigmoid(u)."""

    quad_code = 2

    def __init__(self, degree=None, rule="trapezoid", method=None):
        self._init_degree(degree, rule, method)

    def phi2(self, u):
        return self.phi(u), _sigmoid(u)

    def phi(self, u):
        return np.maximum(u, 0.0) + np.log1p(np.exp(-np.abs(u)))


class Sigmoid(QuadratureActivation):
    """φ(u) = 1/(1 + e^{−u}), φ' = φ(1 − φ)."""

    quad_code = 3

    def __init__(self, degree=None, rule="trapezoid", method=None):
        self._init_degree(degree, rule, method)

    def phi2(self, u):
        s = _sigmoid(u)
        return s, s * (1.0 - s)

    def phi(self, u):
        return _sigmoid(u)


class SiLU(QuadratureActivation):
    """φ(u) = u·sigmoid(u) (swish), φ' = s + u s (1 − s)."""

    quad_code = 4

    def __init__(self, degree=None, rule="trapezoid", method=None):
        self._init_degree(degree, rule, method)

    def phi2(self, u):
        s = _sigmoid(u)
        return u * s, s + u * s * (1.0 - s)

    def phi(self, u):
        return u * _sigmoid(u)


class Sin(Activation):
    """φ(u) = a·sin(b·u + c), closed form exactly as neural-tangents' ``stax.Sin``:

        E[φφ]   = a²/2 · (e^{−b²(qx+qz−2Σ)/2} − e^{−b²(qx+qz+2Σ)/2} cos 2c)
        E[φ'φ'] = a²b²/2 · (e^{−b²(qx+qz−2Σ)/2} + e^{−b²(qx+qz+2Σ)/2} cos 2c)

    evaluated without cancellation (cos 2c = 1 − 2 sin²c = 2 cos²c − 1, x = b²Σ, h =
    (qx + qz)/2): E[φφ] = a² e^{−b²h} (sinh x + sin²c · e^{−x}) and E[φ'φ'] =
    a²b² e^{−b²h} (sinh x + cos²c · e^{−x}); the difference of exponentials lost every
    digit for small inputs (Σ = 0 at norms ~1e-12).

    No compiled-engine kernel: the 'numba' backend evaluates it (tabulated when q is
    constant, else vectorised per block), 'reference' everywhere.
    """

    engine_code = -1

    def __init__(self, a: float = 1.0, b: float = 1.0, c: float = 0.0):
        self.a, self.b, self.c = float(a), float(b), float(c)
        for name in ("a", "b", "c"):
            v = getattr(self, name)
            if not math.isfinite(v):
                raise ValueError(f"{type(self).__name__}: {name} must be finite, got {v!r}")

    def kernel_rule(self, sigma, qx, qz):
        a, b2 = self.a, self.b * self.b
        x = b2 * sigma
        damp = np.exp(-b2 * (qx + qz) / 2)
        sinh, decay = np.sinh(x), np.exp(-x)
        sin2, cos2 = math.sin(self.c) ** 2, math.cos(self.c) ** 2
        return (a * a * damp * (sinh + sin2 * decay),
                a * a * b2 * damp * (sinh + cos2 * decay))

    def fn(self, u):
        return self.a * np.sin(self.b * np.asarray(u, dtype=np.float64) + self.c)

    def dfn(self, u):
        return self.a * self.b * np.cos(self.b * np.asarray(u, dtype=np.float64) + self.c)

    def _key(self):
        return ("Sin", self.a, self.b, self.c)

    def __repr__(self):
        return f"Sin(a={self.a!r}, b={self.b!r}, c={self.c!r})"


class Cos(Sin):
    """φ(u) = a·cos(b·u + c) = a·sin(b·u + c + π/2) (the Sin closed form)."""

    def __init__(self, a: float = 1.0, b: float = 1.0, c: float = 0.0):
        super().__init__(a, b, float(c) + math.pi / 2)
        self.c_cos = float(c)

    def __repr__(self):
        return f"Cos(a={self.a!r}, b={self.b!r}, c={self.c_cos!r})"


#: points where a Custom φ is compiled and checked
_PROBE = (-3.1, -1.3, -0.7, -0.11, 0.13, 0.6, 1.7, 2.9)


class Custom(QuadratureActivation):
    """A user φ: ``fn`` a Python function of one float, compiled with ``numba.njit``.

    ``dfn``: its derivative (also compiled).  If ``dfn`` is None the derivative is
    derived automatically and :attr:`derivative_method` says how:

    * ``"complex-step"`` — φ'(u) = Im φ(u + i h)/h with h = 1e-30 (exact to rounding, no
      cancellation), used when ``fn`` compiles for complex arguments *and* agrees with
      a finite difference at 8 probe points to 1e-6 (so non-analytic code such as
      ``abs``/``max``/branches, for which complex step is wrong, is detected);
    * ``"central-difference"`` — otherwise, an 8th-order central difference with step
      h = 4e-3·max(1, |u|) (truncation O(h⁸ φ⁽⁹⁾), rounding ~ 1e-13·|φ|/max(1,|u|));
      with ``kink=True`` the step is capped at |u|/5 so the stencil never straddles
      the kink (the right derivative is used at u = 0 itself).

    ``kink=True`` declares φ smooth except at u = 0 (ReLU-like): the polar quadrature
    rule is used, which is exact-to-rounding for positively homogeneous pieces
    (plain Gauss rules converge only algebraically across a kink).  ``degree``/``rule``:
    see :class:`QuadratureActivation`.

    The construction compiles φ and evaluates it at a few points: a φ that Numba
    cannot compile, that takes the wrong number of arguments, returns something other
    than a real scalar, or returns non-finite values raises a ``ValueError`` naming
    the activation.

    ``name``: shown in messages, and — when given — the activation's identity: two
    Custom activations with the same ``name`` (and ``kink``, ``degree``, ``rule``)
    are equal, and an out-of-core run resumes another process's run with it.  Without
    ``name`` the identity is a fingerprint of ``fn`` and ``dfn`` derived from their
    code (:func:`_callable_fingerprint`: bytecode, constants, default arguments,
    closure and global values that are numbers, strings or arrays, functions they
    call), so the same function defined again in a new process is recognised and a
    changed constant is not.  Give ``name=`` when the function's identity cannot be
    derived from its code, e.g. a C function or a closure over other objects (such
    a function is fingerprinted by object identity, so its runs resume only in the
    same process); a ``name`` must then change whenever the function does.
    """

    def __init__(self, fn, dfn=None, *, kink=False, degree=None, rule="trapezoid", name=None,
                 method=None):
        self._init_degree(degree, rule, method)
        if not callable(fn) or (dfn is not None and not callable(dfn)):
            raise ValueError(f"Custom: fn and dfn must be callables, got {fn!r}, {dfn!r}")
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"Custom: name must be a non-empty string, got {name!r}")
        self.name = name or getattr(fn, "__name__", repr(fn))
        self._given_name = name
        self.kink = bool(kink)
        self.py_fn, self.py_dfn = fn, dfn
        self._fingerprint = name if name is not None else _callable_fingerprint((fn, dfn))
        try:
            import numba
        except ImportError as exc:  # pragma: no cover - numba is an optional extra
            raise ImportError(f"Custom({self.name}): needs numba (pip install "
                              "'ntkfast[numba]')") from exc
        self._nb_fn = self._compile(numba, fn, "fn")
        if dfn is not None:
            self._nb_dfn = self._compile(numba, dfn, "dfn")
            self.derivative_method = "given"
        else:
            self._nb_dfn, self.derivative_method = self._derive(numba)
        self._nb_phi2, self._nb_apply, self._nb_apply1 = _custom_kernels(
            numba, self._nb_fn, self._nb_dfn)
        probe = np.array(_PROBE)
        f, d = self.phi2(probe)
        if not (np.all(np.isfinite(f)) and np.all(np.isfinite(d))):
            raise ValueError(f"Custom({self.name}): the derivative is not finite at {probe}")
        self.series_tail = None
        if self.uses_series:
            self._check_decay()

    def _check_decay(self):
        """Kinked or discontinuous φ (or φ'): Hermite coefficients decaying too slowly
        for the series (relative tail after KCAP terms above
        :data:`ntkfast.series.KINK_TAIL` at q = 1 and at q = 1/16) → the kink-aware 2-D
        quadrature, with a warning.  Also calibrates :attr:`series_step` (φ analytic in
        a narrow strip needs a finer rule)."""
        import warnings
        from . import series
        try:
            with np.errstate(all="ignore"):
                step = series.calibrate_step(self.phi2)
                # a kink keeps the tail algebraic at every scale; a steep analytic φ
                # (tanh(3u)) converges at a smaller variance
                tail = math.inf if step is None else min(
                    series.decay_check(self.phi2, q, step=step) for q in (1.0, 1 / 16))
        except Exception:  # noqa: BLE001 - φ fails on the wide rule (overflow ...)
            step, tail = None, math.inf
        self.series_step = step or 1.0
        self.series_tail = tail
        if not tail <= series.KINK_TAIL:
            self.method = "quadrature"
            self._quad_kink = True
            warnings.warn(
                f"Custom({self.name}): its Hermite coefficients decay slowly (relative "
                f"tail {tail:.1e} after {series.KCAP} terms at q = 1/16 and 1): φ or φ' looks "
                "kinked or discontinuous, so every kernel element is computed by 2-D "
                "(kink-aware polar) quadrature, ~3000 evaluations of φ per element and "
                "layer (10^3-10^4 x the ReLU time); pass kink=True to state a kink at 0, "
                "or method='quadrature' to silence this", stacklevel=2)

    def _compile(self, numba, f, what):
        try:
            jf = numba.njit(f)
            vals = [jf(float(x)) for x in _PROBE]
        except Exception as exc:
            raise ValueError(f"Custom({self.name}): {what} must be a Numba-compilable "
                             f"function of one float returning a float; compiling/calling "
                             f"it failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                             ) from exc
        for x, v in zip(_PROBE, vals):
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (float, int, np.floating,
                                                                     np.integer)):
                raise ValueError(f"Custom({self.name}): {what}({x}) returned {v!r} "
                                 f"({type(v).__name__}); it must return one real number")
            if not math.isfinite(float(v)):
                raise ValueError(f"Custom({self.name}): {what}({x}) = {v!r} is not finite")
        return jf

    def _derive(self, numba):
        jf = self._nb_fn

        kink = self.kink

        @numba.njit
        def dfd(u):
            h = 4e-3 * max(1.0, abs(u))
            if kink:
                # keep the stencil on one side of the kink at 0
                h = min(h, abs(u) / 5.0)
                if h == 0.0:  # right derivative at the kink itself
                    h = 1e-6
                    return (-3.0 * jf(0.0) + 4.0 * jf(h) - jf(2.0 * h)) / (2.0 * h)
            c = (4.0 / 5, -1.0 / 5, 4.0 / 105, -1.0 / 280)
            s = 0.0
            for k in range(4):
                s += c[k] * (jf(u + (k + 1) * h) - jf(u - (k + 1) * h))
            return s / h

        fd = np.array([dfd(x) for x in _PROBE])
        try:
            @numba.njit
            def dcs(u):
                return jf(complex(u, 1e-30)).imag * 1e30

            cs = np.array([dcs(x) for x in _PROBE])
            if np.all(np.abs(cs - fd) <= 1e-6 * (1 + np.abs(fd))):
                return dcs, "complex-step"
        except Exception:  # noqa: BLE001 - not complex-analytic code: finite differences
            pass
        return dfd, "central-difference"

    def phi2(self, u):
        u = np.asarray(u, dtype=np.float64)
        flat = np.ascontiguousarray(u).ravel()
        f = np.empty_like(flat)
        d = np.empty_like(flat)
        self._nb_apply(flat, f, d)
        return f.reshape(u.shape), d.reshape(u.shape)

    def phi(self, u):
        """φ alone on a float64 array (no derivative evaluated)."""
        u = np.asarray(u, dtype=np.float64)
        flat = np.ascontiguousarray(u).ravel()
        f = np.empty_like(flat)
        self._nb_apply1(flat, f)
        return f.reshape(u.shape)

    def _diag_values(self, q):
        from . import series
        # a central-difference φ' is good to ~1e-13 (see the class doc): its rule's
        # values carry that noise, which the interpolation check must not chase
        tol_d = 1e-13 if self.derivative_method == "central-difference" else None
        return series.diag_interpolated(self.phi2, q, step=self.series_step, tol_d=tol_d)


    def _key(self):
        # stable across processes (the journal of an out-of-core run holds it)
        ident = ("name", self._given_name) if self._given_name is not None else \
            ("code", self._fingerprint)
        extra = () if self.method == self._default_method() else (self.method,)
        return ("Custom", *ident, self.kink, self.degree, self.rule, *extra)

    def __repr__(self):
        return f"Custom({self.name})"


def _callable_fingerprint(obj) -> str:
    """A hex digest that identifies what a function computes, the same in every process.

    Python functions: their code (bytecode, constants — nested code objects
    included — and names), default arguments, and the values of their closure
    cells and of the globals their code loads; numbers, strings, bytes, arrays,
    tuples/lists/dicts of them, modules (by name), builtins and NumPy ufuncs (by
    qualified name), types (by qualified name) and other Python or Numba-compiled
    functions (recursively) enter by value.  Anything else enters by its type
    and ``id()``, i.e. such a function is only recognised within one process (give
    ``Custom(..., name=...)`` then).  The bytecode depends on the Python version.
    """
    h = hashlib.blake2b(digest_size=16)
    try:
        _feed(h, obj, set())
    except RecursionError:  # pragma: no cover - absurdly deep structures
        h.update(b"opaque-deep:%d" % id(obj))
    return h.hexdigest()


def _feed(h, obj, seen):
    """Hash ``obj`` into ``h`` by value (see :func:`_callable_fingerprint`)."""
    def tag(t, payload=b""):
        h.update(b"<" + t.encode() + b":" + payload + b">")

    if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
        tag(type(obj).__name__, repr(obj).encode())
    elif isinstance(obj, np.generic):
        tag("npscalar", obj.dtype.str.encode() + b"|" + obj.tobytes())
    elif isinstance(obj, np.ndarray):
        tag("ndarray", f"{obj.dtype.str}|{obj.shape}".encode())
        if obj.dtype.hasobject:
            for v in obj.ravel():
                _feed(h, v, seen)
        else:
            h.update(np.ascontiguousarray(obj).tobytes())
    elif isinstance(obj, (tuple, list, frozenset, set)):
        items = sorted(obj, key=repr) if isinstance(obj, (frozenset, set)) else obj
        tag(type(obj).__name__, str(len(items)).encode())
        for v in items:
            _feed(h, v, seen)
    elif isinstance(obj, dict):
        tag("dict", str(len(obj)).encode())
        for k in sorted(obj, key=repr):
            _feed(h, k, seen)
            _feed(h, obj[k], seen)
    elif isinstance(obj, types.CodeType):
        _feed_code(h, obj, None, seen)
    elif isinstance(obj, types.FunctionType):
        if id(obj) in seen:  # recursion (a function calling itself)
            tag("recursive", obj.__qualname__.encode())
            return
        seen.add(id(obj))
        tag("function")
        _feed_code(h, obj.__code__, obj.__globals__, seen)
        _feed(h, obj.__defaults__, seen)
        _feed(h, obj.__kwdefaults__, seen)
        cells = []
        for c in obj.__closure__ or ():
            try:
                cells.append(c.cell_contents)
            except ValueError:  # an empty cell
                cells.append(None)
        _feed(h, cells, seen)
    elif isinstance(obj, types.ModuleType):
        tag("module", obj.__name__.encode())
    elif isinstance(obj, np.ufunc):
        tag("ufunc", obj.__name__.encode())
    elif isinstance(obj, (types.BuiltinFunctionType, type)):
        tag("named", f"{getattr(obj, '__module__', None)}."
                     f"{getattr(obj, '__qualname__', getattr(obj, '__name__', ''))}".encode())
    elif isinstance(obj, functools.partial):
        tag("partial")
        _feed(h, (obj.func, obj.args, obj.keywords), seen)
    elif isinstance(getattr(obj, "py_func", None), types.FunctionType):  # numba dispatcher
        tag("jitted")
        _feed(h, obj.py_func, seen)
    else:  # identity cannot be derived: valid in this process only
        tag("opaque", f"{type(obj).__module__}.{type(obj).__qualname__}:{id(obj)}".encode())


def _feed_code(h, code, globs, seen):
    h.update(b"<code:")
    h.update(code.co_code)
    h.update(repr((code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount,
                   code.co_flags, code.co_names)).encode())
    h.update(b">")
    _feed(h, code.co_consts, seen)
    if globs is None:
        return
    # the values of the globals the code (and its nested functions) loads
    builtins = globs.get("__builtins__", {})
    builtins = getattr(builtins, "__dict__", builtins)
    names = sorted(_global_names(code))
    for name in names:
        h.update(b"<global:" + name.encode() + b">")
        if name in globs:
            _feed(h, globs[name], seen)
        elif name in builtins:
            _feed(h, builtins[name], seen)
        else:
            h.update(b"<undefined>")


def _global_names(code):
    names = set()
    for ins in dis.get_instructions(code):
        if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME"):
            names.add(ins.argval)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _custom_kernels(numba, jf, jd):
    @numba.njit
    def phi2(u):
        return jf(u), jd(u)

    @numba.njit
    def apply(x, f, d):
        for i in range(x.size):
            f[i] = jf(x[i])
            d[i] = jd(x[i])

    @numba.njit
    def apply1(x, f):
        for i in range(x.size):
            f[i] = jf(x[i])

    return phi2, apply, apply1


_BY_NAME.update({"tanh": Tanh, "softplus": Softplus, "sigmoid": Sigmoid, "silu": SiLU,
                 "swish": SiLU, "sin": Sin, "cos": Cos})
ACTIVATION_NAMES = tuple(_BY_NAME)
__all__ += ["QuadratureActivation", "Tanh", "Softplus", "Sigmoid", "SiLU", "Sin", "Cos",
            "Custom"]


def __dir__():  # the API, not this module's imports
    return list(__all__)
