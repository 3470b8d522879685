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

import math

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

    def __init__(self, a: float, b: float):
        a, b = float(a), float(b)
        for name, v in (("a", a), ("b", b)):
            if not math.isfinite(v):
                raise ValueError(f"{type(self).__name__}: {name} must be finite, got {v!r}")
        self.a, self.b = a, b

    def kernel_rule(self, sigma, qx, qz):
        a, b = self.a, self.b
        theta, sin_part = _angle(sigma, qx, qz)
        factor = (a - b) ** 2 / (2 * np.pi)
        edot = (a * a + b * b) / 2 - factor * theta
        e = factor * sin_part + edot * sigma
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

    def __init__(self, a: float = 1.0, b: float = 1.0, c: float = 0.0):
        self.a, self.b, self.c = float(a), float(b), float(c)
        for name in ("a", "b", "c"):
            v = getattr(self, name)
            if not math.isfinite(v):
                raise ValueError(f"Erf: {name} must be finite, got {v!r}")

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

    def kernel_rule(self, sigma, qx, qz):
        return sigma + 0 * (qx + qz), np.ones_like(sigma + 0 * (qx + qz))

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
