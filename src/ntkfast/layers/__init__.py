"""Layers of infinitely wide networks, composed as in neural-tangents' ``stax``.

One module per kind of layer, each holding the layers' hyperparameters, their shape
rules and their kernel rules (the plain-NumPy oracle):

- :mod:`.linear`: Dense, Conv, AvgPool, GlobalAvgPool, Flatten
- :mod:`.elementwise`: any activation of :mod:`ntkfast.activations` as a layer
- :mod:`.branching`: FanOut, parallel, FanInSum
- :mod:`.normalization`: LayerNorm
- :mod:`.combinators`: serial (the network users compute kernels with), parallel
- :mod:`.state`: the kernel state the rules act on (a block of input pairs; all pixel
  pairs or the same-position ones) and the spatial helpers the rules share

Each layer has ``output_spatial``/``output_meta`` (shape, channel and Gaussianity
inference; errors name the layer) and ``kernel(state) -> state`` (its rule, in the
conventions of neural-tangents 0.6.5 ``stax``).  Networks run on the rules through
:mod:`ntkfast.backends.reference_network`.
"""

from .base import Layer, LayerError
from .branching import FanInSum, FanOut, Parallel
from .combinators import Serial, parallel, serial
from .elementwise import Elementwise
from .linear import AvgPool, Conv, Dense, Flatten, GlobalAvgPool
from .normalization import LayerNorm

__all__ = ["Layer", "LayerError", "Dense", "Conv", "AvgPool", "GlobalAvgPool", "Flatten",
           "Elementwise", "FanOut", "FanInSum", "Parallel", "LayerNorm", "Serial", "serial",
           "parallel"]
