"""Elementwise layers: every activation of :mod:`ntkfast.activations` used as a layer.

Rule, at every pixel pair (p, p') with the per-position variances q_x(p), q_z(p'):
Σ'[p, p'] = E[φ(u)φ(v)],  Θ'[p, p'] = Θ[p, p'] · E[φ'(u)φ'(v)],
(u, v) ~ N(0, [[q_x(p), Σ[p, p']], [Σ[p, p'], q_z(p')]]) — the activation's own
``kernel_rule``.
"""

from __future__ import annotations

from ..activations import Activation, get_activation
from .base import Layer

__all__ = ["Elementwise"]


class Elementwise(Layer):
    """An activation φ as a layer (``serial`` wraps activation objects in it)."""

    kind = "elementwise"

    def __init__(self, activation):
        self.activation: Activation = get_activation(activation)

    def describe(self):
        from ..journal import describe
        return {"layer": "Elementwise", "activation": describe(self.activation)}

    def __repr__(self):
        return repr(self.activation)
