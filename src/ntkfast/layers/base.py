"""The layer base class and the shape bookkeeping shared by every layer kind.

A layer describes one step of an infinitely wide network, as a layer of
neural-tangents' ``stax`` does.  It carries its hyperparameters, checks and infers
the spatial shape it maps (``output_spatial``), and — in the module of its kind —
its kernel rule (the plain-NumPy oracle, :meth:`Layer.kernel`).

Shapes: one example is ``(D,)`` (a vector), ``(L, C)`` (a signal) or ``(H, W, C)``
(an image), channels last as in neural-tangents.  The *spatial* shape is everything
but the channel axis (``()`` for vectors).  Widths (channel counts) of hidden layers
do not enter the kernels in the 'ntk' parameterization.
"""

from __future__ import annotations

import math
import numbers

__all__ = ["Layer", "LayerError", "check_std", "check_window", "check_padding"]

PADDINGS = ("SAME", "VALID", "CIRCULAR")


class LayerError(ValueError):
    """A network that does not fit its input, or a layer with bad hyperparameters;
    the message names the layer (its index in the network and its type) and the fix."""


class Layer:
    """Base class of every layer: hyperparameters, shape inference, description.

    Subclasses set :attr:`kind` ('linear', 'elementwise', 'branching',
    'normalization') and override :meth:`output_spatial` and :meth:`kernel`.
    """

    kind = "linear"
    #: True for layers after which the representation has no spatial axes.
    is_readout = False
    #: True for layers whose kernel mixes different positions (p ≠ p'): pooling.  A
    #: network containing one is computed on all pixel pairs (full mode), otherwise
    #: on the same-position pairs only (see :mod:`.state`).
    mixes_positions = False

    def output_spatial(self, spatial: tuple, where: str) -> tuple:
        """The spatial shape this layer outputs for input spatial shape ``spatial``
        (``()`` for vectors); ``where`` names the layer in error messages, e.g.
        "layer 3 (AvgPool)".  Raises :class:`LayerError` if the input does not fit."""
        return spatial

    def output_meta(self, meta, where: str):
        """The :class:`~.state.Meta` (spatial shape, channel count, Gaussianity) this
        layer outputs for input ``meta``; raises :class:`LayerError` naming ``where``
        if the input does not fit.  Default: the spatial rule, channels and
        Gaussianity unchanged."""
        from .state import Meta
        if isinstance(meta, list):
            raise LayerError(f"{where}: {type(self).__name__} needs one input, got "
                             f"{len(meta)} branches; join them with FanInSum first")
        return Meta(self.output_spatial(meta.spatial, where), meta.channels, meta.gaussian)

    def kernel(self, state):
        """The kernel rule: the :class:`~.state.KernelState` after this layer given
        the state before it (plain NumPy, the oracle of every faster engine)."""
        raise NotImplementedError(f"{type(self).__name__} has no kernel rule")

    def describe(self) -> dict:
        """A JSON-able description: the layer's type and hyperparameters (journal keys,
        spec files, reprs)."""
        return {"layer": type(self).__name__, **self._params()}

    def _params(self) -> dict:
        return {}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and self.describe() == other.describe()

    def __hash__(self):
        return hash(repr(self.describe()))


def check_std(value, name, layer, allow_none=False):
    """A finite σ ≥ 0 whose square is finite (σ² enters every rule)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{layer}: {name} must be a real number, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and value >= 0 and math.isfinite(value * value)):
        raise ValueError(f"{layer}: {name} must be finite, >= 0 and with a finite square "
                         f"(below ~1e154), got {value!r}")
    return value


def check_window(value, name, layer, allow_none=False):
    """A tuple of positive ints (filter, window or stride shape)."""
    if value is None and allow_none:
        return None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value,)
    try:
        out = tuple(value)
    except TypeError:
        raise TypeError(f"{layer}: {name} must be a tuple of positive ints, e.g. (3, 3), "
                        f"got {value!r}") from None
    if not out or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1
                      for v in out):
        raise ValueError(f"{layer}: {name} must be a non-empty tuple of positive ints, e.g. "
                         f"(3, 3), got {value!r}")
    return tuple(int(v) for v in out)


def check_padding(value, layer):
    key = str(value).upper() if isinstance(value, str) else None
    if key not in PADDINGS:
        raise ValueError(f"{layer}: padding must be one of {', '.join(map(repr, PADDINGS))}, "
                         f"got {value!r}")
    return key


def window_output(spatial, window, strides, padding, where, what):
    """Output spatial shape of a sliding window (Conv, AvgPool), as lax.conv computes it:
    VALID ⌈(n − k + 1)/s⌉, SAME and CIRCULAR ⌈n/s⌉."""
    if len(spatial) != len(window):
        raise LayerError(
            f"{where}: {what} {window} has {len(window)} spatial dimension(s) but its input "
            f"has {len(spatial)} (spatial shape {spatial}); give a {what} of rank "
            f"{len(spatial)}" + (", or put the layer before the readout" if not spatial else ""))
    out = []
    for n, k, s in zip(spatial, window, strides):
        if padding == "VALID":
            if k > n:
                raise LayerError(f"{where}: {what} {window} is larger than its input "
                                 f"{spatial} with padding='VALID'; use a smaller {what} or "
                                 "padding='SAME'")
            out.append(-(-(n - k + 1) // s))
        else:
            out.append(-(-n // s))
    return tuple(out)
