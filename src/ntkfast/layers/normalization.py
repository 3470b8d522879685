"""LayerNorm over the channel axis (neural-tangents' ``LayerNorm(axis=-1)``).

In the infinite-width limit the channel mean is 0 and the channel variance of the
pre-normalisation representation at position p is q(p), so
Σ'[p, p'] = Σ[p, p'] / √((q_x(p) + ε)(q_z(p') + ε)),  Θ' likewise, q' = q/(q + ε).
"""

from __future__ import annotations

from .base import Layer

__all__ = ["LayerNorm"]


class LayerNorm(Layer):
    """Normalise each position's channels to zero mean and unit variance."""

    kind = "normalization"

    def __init__(self, eps=1e-12):
        import math
        eps = float(eps)
        if not (math.isfinite(eps) and eps >= 0):
            raise ValueError(f"LayerNorm: eps must be finite and >= 0, got {eps!r}")
        self.eps = eps

    def _params(self):
        return {"eps": self.eps}
