"""Elementwise layers: every activation of :mod:`ntkfast.activations` used as a layer.

Rule, at every pixel pair (p, p') with the per-position variances q_x(p), q_z(p'):
Σ'[p, p'] = E[φ(u)φ(v)],  Θ'[p, p'] = Θ[p, p'] · E[φ'(u)φ'(v)],
(u, v) ~ N(0, [[q_x(p), Σ[p, p']], [Σ[p, p'], q_z(p')]]) — the activation's own
``kernel_rule``.  In the self pass (Σ(x, x)) the same-position pairs p = p' use
the activation's ``diag_rule`` (θ = 0 exactly), so the diagonals are exact.

As in neural-tangents 0.6.5 (``_elementwise`` raises unless ``k.is_gaussian``), the
input must be a zero-mean Gaussian (after a Dense/Conv, possibly pooled, normalised or
summed), and the output is not one (``is_gaussian=False``); the identity is a no-op.
"""

from __future__ import annotations

import numpy as np

from ..activations import Activation, Identity, get_activation
from .base import Layer, LayerError
from .state import Meta, scale_ntk, set_spatial_diagonal

__all__ = ["Elementwise"]


class Elementwise(Layer):
    """An activation φ as a layer (``serial`` wraps activation objects in it)."""

    kind = "elementwise"

    def __init__(self, activation):
        self.activation: Activation = get_activation(activation)

    def output_meta(self, meta, where):
        meta = super().output_meta(meta, where)
        if isinstance(self.activation, Identity):
            return meta
        if not meta.gaussian:
            raise LayerError(
                f"{where}: an activation is defined (as in neural-tangents) only on "
                "zero-mean Gaussian input, i.e. after a Dense/Conv (possibly pooled, "
                "normalised or summed), not after another activation, Flatten or on the raw "
                "input; put a Dense or Conv before it")
        return Meta(meta.spatial, meta.channels, False)

    def kernel(self, state):
        act = self.activation
        if isinstance(act, Identity):  # E[φφ] = Σ, E[φ'φ'] = 1 exactly: a no-op
            return state
        meta = Meta(state.meta.spatial, state.meta.channels, False)
        qx, qz, q = state.variances()
        if state.is_self:
            e_diag, edot_diag = act.diag_rule(q)
            if state.full:
                e, edot = act.kernel_rule(state.cov, qx, qz)
                shape = state.cov.shape
                e = np.array(np.broadcast_to(e, shape), dtype=np.float64)
                edot = np.array(np.broadcast_to(edot, shape), dtype=np.float64)
                d = len(state.meta.spatial)
                set_spatial_diagonal(e, d, e_diag)
                set_spatial_diagonal(edot, d, edot_diag)
            else:
                e, edot = e_diag, edot_diag
        else:
            e, edot = act.kernel_rule(state.nngp, qx, qz)
        e = np.broadcast_to(e, state.sigma.shape)
        return state.evolve(sigma=e, ntk=scale_ntk(state.ntk, edot), meta=meta)

    def describe(self):
        from ..outofcore.journal import describe
        return {"layer": "Elementwise", "activation": describe(self.activation)}

    def __repr__(self):
        return repr(self.activation)
