"""LayerNorm over the channel axis (neural-tangents' ``LayerNorm(axis=-1)``).

In the infinite-width limit the channel mean is 0 and the channel variance of the
pre-normalisation representation at position p is q(p), so
Σ'[p, p'] = Σ[p, p'] / √((q_x(p) + ε)(q_z(p') + ε)),  Θ' likewise, q' = q/(q + ε).

As in neural-tangents 0.6.5 (``LayerNorm`` raises NotImplementedError unless
``k.is_gaussian``), the input must be a zero-mean Gaussian: the output of a
Dense/Conv (possibly pooled or summed), not of an activation, Flatten or the input.
"""

from __future__ import annotations

import numpy as np

from .base import Layer, LayerError
from .doubledouble import as_float, is_dd

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

    def output_meta(self, meta, where):
        meta = super().output_meta(meta, where)
        if not meta.gaussian:
            raise LayerError(
                f"{where}: LayerNorm is defined (as in neural-tangents) only on zero-mean "
                "Gaussian input, i.e. right after a Dense/Conv (or pooling / FanInSum of "
                "such), not after an activation, Flatten or on the raw input; put a Dense "
                "or Conv before it")
        return meta

    def kernel(self, state):
        qx, qz, _ = state.variances()
        if is_dd(state.sigma):
            # precise pass: Σ / n_x / n_z with n = √(q + ε) per position (float64, the
            # same for a row's self and cross states), so q' q' − Σ'² = D / (n_x n_z)²
            nx, nz = np.sqrt(self.eps + as_float(qx)), np.sqrt(self.eps + as_float(qz))
            ntk = state.ntk
            if ntk is not None and np.ndim(ntk) > 0:
                ntk = ntk / (nx * nz)
            return state.evolve(sigma=state.sigma / nx / nz, ntk=ntk)
        norm = np.sqrt((self.eps + qx) * (self.eps + qz))
        ntk = state.ntk
        if ntk is not None and np.ndim(ntk) > 0:
            ntk = ntk / norm
        return state.evolve(sigma=state.sigma / norm, ntk=ntk)

    def _params(self):
        return {"eps": self.eps}
