"""Combinators: ``serial`` (a network) and ``parallel`` (branches).

``nk.serial(*layers)`` is the network object users compute kernels with: it has the
kernel methods of :class:`ntkfast.MLP` (``nngp``, ``ntk``, ``kernels``, ``nngp_diag``,
``ntk_diag``) with the same keywords, and is itself a layer (serial networks nest).
"""

from __future__ import annotations

from ..activations import Activation
from .base import Layer, LayerError
from .branching import Parallel
from .elementwise import Elementwise

__all__ = ["Serial", "serial", "parallel", "as_layer"]


def as_layer(obj, where):
    """A Layer, or an activation object (→ :class:`Elementwise`)."""
    if isinstance(obj, Layer):
        return obj
    if isinstance(obj, Activation):
        return Elementwise(obj)
    if isinstance(obj, type) and issubclass(obj, (Layer, Activation)):
        raise TypeError(f"{where}: got the class {obj.__name__}; call it: {obj.__name__}()")
    raise TypeError(f"{where}: expected a layer (nk.Dense(), nk.Conv(...), nk.ReLU(), ...), "
                    f"got {obj!r}")


class Serial(Layer):
    """Layers applied in order: an infinitely wide network."""

    kind = "combinator"

    def __init__(self, *layers):
        self.layers = tuple(as_layer(l, f"serial: layer {i}") for i, l in enumerate(layers))

    def output_spatial(self, spatial, where=""):
        for i, layer in enumerate(self.layers):
            name = f"{where + ' ' if where else ''}layer {i} ({type(layer).__name__})"
            spatial = layer.output_spatial(spatial, name)
        return spatial

    def describe(self):
        return {"layer": "Serial", "layers": [l.describe() for l in self.layers]}

    def __repr__(self):
        return "serial(" + ", ".join(map(repr, self.layers)) + ")"


def serial(*layers) -> Serial:
    """The network ``layers[0]``, then ``layers[1]``, ... (activations are layers)."""
    return Serial(*layers)


def parallel(*branches) -> Parallel:
    """Branch i applied to the i-th of the inputs made by ``FanOut``."""
    return Parallel(*branches)


def check_output_is_single(spatial, where="the network"):
    if isinstance(spatial, list):
        raise LayerError(f"{where} ends with {len(spatial)} branches; join them with "
                         "FanInSum()")
    return spatial
