"""Linear layers: Dense, Conv, AvgPool, GlobalAvgPool, Flatten.

Kernel rules (neural-tangents' ``stax`` conventions; Φ, Ψ the covariances Σ, Θ of the
previous layer's output at the pixel pair (p, p'), one pair of inputs (x, z)):

- Dense (per position, like a 1×1 convolution):
  Σ'[p, p'] = σ_w² Φ[p, p'] + σ_b²,   Θ' = σ_w² Ψ[p, p'] + Σ'.
- Conv(k, s, padding): with the same window offset a on both sides,
  Σ'[p, p'] = σ_w² · mean_a Φ[s·p + a, s·p' + a] + σ_b²,  Θ' = σ_w² · mean_a Ψ[..] + Σ'
  (SAME: zero-padded positions count as zeros in the mean; CIRCULAR: wrap around).
- AvgPool(k, s, padding): Σ'[p, p'] = mean_a mean_b Φ[s·p + a, s·p' + b] (windows of p
  and p' averaged independently), Θ' likewise; no σ.  Divided by the full window size
  also where SAME pads with zeros (nt's ``normalize_edges=False``); strides default 1.
- GlobalAvgPool: Σ' = mean over all (p, p') of Φ; a vector afterwards.
- Flatten: Σ' = mean over the same-position pairs (p, p) of Φ (the readout Dense after it
  has fan-in P·C); a vector afterwards.

'standard' parameterization (Dense, Conv; needs the input width C, see ``width=``):
Σ' as above, Θ' = n_in · M(Φ) + σ_w² M(Ψ) (+1 with a bias, even b_std = 0), M the layer's
window mean (identity for Dense), n_in = C for Dense (P·C after Flatten) and C·|k| for
Conv (nt's ``get_fan_in`` times its mean-normalised ``conv_unscaled``).

The input layer (nt's ``_inputs_to_kernel``): Σ⁰[p, p'] = x[p]·z[p']/C (the channel
mean), Θ⁰ = 0.
"""

from __future__ import annotations

import math

import numpy as np

from .base import Layer, LayerError, check_padding, check_std, check_window, window_output
from .doubledouble import as_float
from .state import Meta, same_position_mean, spatial_mean, window_sum

__all__ = ["Dense", "Conv", "AvgPool", "GlobalAvgPool", "Flatten"]


def _spatial_axes(d, i, full):
    """The trailing axes of spatial dimension i of d: (p, p') in full mode, (p,) else."""
    return (-2 * d + 2 * i, -2 * d + 2 * i + 1) if full else (-d + i,)


def _check_fan_in(layer, meta, where):
    """'standard' layers read their input width (nt: ``k.shape1[channel_axis]``)."""
    if layer.parameterization == "standard" and meta.channels is None:
        raise LayerError(
            f"{where}: parameterization='standard' needs the width of this layer's input, "
            "which is unknown; give width= to the Dense/Conv that produces it (the first "
            "layer reads the input's channel count)")


def _affine_ntk(layer, sig_in_unscaled, sig, ntk_unscaled, fan_in):
    """nt's Θ' of Dense/Conv: 'ntk' Σ' + σ_w² Θ; 'standard' n_in Σ_in + σ_w² Θ (+1 with
    a bias, even b_std = 0).  Θ is float64 also in a precise (double-double) pass."""
    sig_in_unscaled, sig = as_float(sig_in_unscaled), as_float(sig)
    w2 = layer.w_std ** 2
    if layer.parameterization == "ntk":
        return sig + w2 * ntk_unscaled
    ntk = fan_in * sig_in_unscaled + w2 * ntk_unscaled
    if layer.b_std is not None:
        ntk = ntk + 1.0
    return ntk


def _affine(layer, a):
    a = layer.w_std ** 2 * a
    if layer.b_std is not None:
        a = a + layer.b_std ** 2
    return a


def _check_parameterization(parameterization, width, layer):
    if parameterization not in ("ntk", "standard"):
        raise ValueError(f"{layer}: parameterization must be 'ntk' or 'standard', got "
                         f"{parameterization!r}")
    if width is not None:
        from .._validation import check_int
        width = check_int(width, f"{layer}: width", minimum=1)
    return parameterization, width


class Dense(Layer):
    """A fully-connected layer z = σ_w/√n · W x + σ_b b (per position on spatial input).

    ``width``: this layer's output width (only the 'standard' parameterization of the
    *next* Dense/Conv reads it; the kernels do not depend on it otherwise).
    """

    def __init__(self, w_std=1.0, b_std=None, parameterization="ntk", width=None):
        self.w_std = check_std(w_std, "w_std", "Dense")
        self.b_std = check_std(b_std, "b_std", "Dense", allow_none=True)
        self.parameterization, self.width = _check_parameterization(parameterization, width,
                                                                     "Dense")

    def output_meta(self, meta, where):
        meta = super().output_meta(meta, where)
        _check_fan_in(self, meta, where)
        return Meta(meta.spatial, self.width, True)

    def kernel(self, state):
        """Per position: Σ' = σ_w² Σ + σ_b², Θ' as in :func:`_affine_ntk`."""
        sig_in = state.sigma
        sig = _affine(self, sig_in)
        ntk = state.ntk
        if ntk is not None:
            ntk = _affine_ntk(self, sig_in, sig, ntk, state.meta.channels)
        return state.evolve(sigma=sig, ntk=ntk,
                            meta=Meta(state.meta.spatial, self.width, True))

    def _params(self):
        p = {"w_std": self.w_std, "b_std": self.b_std}
        if self.parameterization != "ntk":
            p["parameterization"] = self.parameterization
        if self.width is not None:
            p["width"] = self.width
        return p


class Conv(Layer):
    """A convolution with ``filter_shape`` (one entry per spatial axis), ``strides``
    (default 1), padding 'SAME' | 'VALID' | 'CIRCULAR', z = σ_w/√(n·|k|) W * x + σ_b b."""

    def __init__(self, filter_shape, strides=None, padding="SAME", w_std=1.0, b_std=None,
                 parameterization="ntk", width=None):
        self.filter_shape = check_window(filter_shape, "filter_shape", "Conv")
        self.strides = check_window(strides, "strides", "Conv", allow_none=True)
        if self.strides is not None and len(self.strides) != len(self.filter_shape):
            raise ValueError(f"Conv: strides {self.strides} must have one entry per axis of "
                             f"filter_shape {self.filter_shape}")
        self.padding = check_padding(padding, "Conv")
        self.w_std = check_std(w_std, "w_std", "Conv")
        self.b_std = check_std(b_std, "b_std", "Conv", allow_none=True)
        self.parameterization, self.width = _check_parameterization(parameterization, width,
                                                                     "Conv")

    @property
    def strides_or_ones(self):
        return self.strides or (1,) * len(self.filter_shape)

    def output_spatial(self, spatial, where):
        if not spatial:
            raise LayerError(f"{where}: Conv needs spatial input (signals (N, L, C) or "
                             "images (N, H, W, C)) but gets vectors; move it before the "
                             "Flatten/GlobalAvgPool readout, or use Dense")
        return window_output(spatial, self.filter_shape, self.strides_or_ones, self.padding,
                             where, "filter_shape")

    def output_meta(self, meta, where):
        out = super().output_meta(meta, where)
        _check_fan_in(self, meta, where)
        return Meta(out.spatial, self.width, True)

    def window_mean(self, a, spatial, full):
        """mean over the filter offsets o of a[s·p + o, s·p' + o] (full mode) or
        a[s·p + o] (same-position mode), zero/wrap padded; divided by the full filter
        size |k| (padded positions count as zeros), as nt's ``_conv_kernel_*``."""
        if a is None or np.ndim(a) == 0:  # not wanted, or an identically-zero Θ
            return a
        d = len(spatial)
        for i, (n, k, s) in enumerate(zip(spatial, self.filter_shape, self.strides_or_ones)):
            a = window_sum(a, _spatial_axes(d, i, full), n, k, s, self.padding)
        return a / math.prod(self.filter_shape)

    def kernel(self, state):
        """Σ'[p, p'] = σ_w² mean_o Σ[s p + o, s p' + o] + σ_b²; Θ' = σ_w² mean_o Θ[..] + Σ'
        ('standard': C·|k| mean_o Σ + σ_w² mean_o Θ (+1))."""
        spatial = state.meta.spatial
        sig_un = self.window_mean(state.sigma, spatial, state.full)
        sig = _affine(self, sig_un)
        ntk = state.ntk
        if ntk is not None:
            fan_in = None if state.meta.channels is None else \
                state.meta.channels * math.prod(self.filter_shape)
            ntk = _affine_ntk(self, sig_un, sig, self.window_mean(ntk, spatial, state.full),
                              fan_in)
        meta = Meta(self.output_spatial(spatial, type(self).__name__), self.width, True)
        return state.evolve(sigma=sig, ntk=ntk, meta=meta)

    def _params(self):
        p = {"filter_shape": self.filter_shape, "strides": self.strides,
             "padding": self.padding, "w_std": self.w_std, "b_std": self.b_std}
        if self.parameterization != "ntk":
            p["parameterization"] = self.parameterization
        if self.width is not None:
            p["width"] = self.width
        return p


class AvgPool(Layer):
    """Average pooling over ``window_shape`` with ``strides`` and ``padding`` ('VALID'
    default; 'SAME' counts padded positions as zeros, as neural-tangents'
    ``normalize_edges=False``).  ``strides=None`` means neural-tangents' default."""

    def __init__(self, window_shape, strides=None, padding="VALID"):
        self.window_shape = check_window(window_shape, "window_shape", "AvgPool")
        self.strides = check_window(strides, "strides", "AvgPool", allow_none=True)
        if self.strides is not None and len(self.strides) != len(self.window_shape):
            raise ValueError(f"AvgPool: strides {self.strides} must have one entry per axis "
                             f"of window_shape {self.window_shape}")
        self.padding = check_padding(padding, "AvgPool")

    mixes_positions = True

    @property
    def strides_or_default(self):
        # neural-tangents 0.6.5 `_Pool`: ``strides = strides or (1,) * len(window_shape)``
        # ("None corresponds to a stride of (1, 1)"), like jax's example_libraries stax.
        return self.strides or (1,) * len(self.window_shape)

    def output_spatial(self, spatial, where):
        if not spatial:
            raise LayerError(f"{where}: AvgPool needs spatial input but gets vectors; move it "
                             "before the Flatten/GlobalAvgPool readout")
        return window_output(spatial, self.window_shape, self.strides_or_default,
                             self.padding, where, "window_shape")

    def pool(self, a, spatial):
        """Full-mode pooling: windows of p and of p' summed independently, divided by
        |k|² (nt's ``_pool_kernel`` with ``normalize_edges=False``)."""
        d = len(spatial)
        for i, (n, k, s) in enumerate(zip(spatial, self.window_shape,
                                          self.strides_or_default)):
            for ax in _spatial_axes(d, i, True):
                a = window_sum(a, (ax,), n, k, s, self.padding)
        return a / math.prod(self.window_shape) ** 2

    def kernel(self, state):
        """Σ'[p, p'] = mean_o mean_o' Σ[s p + o, s p' + o'], Θ' likewise."""
        if not state.full:
            raise ValueError("AvgPool: needs the full (all pixel pairs) kernel state")
        spatial = state.meta.spatial
        meta = Meta(self.output_spatial(spatial, "AvgPool"), state.meta.channels,
                    state.meta.gaussian)
        return state.map_linear(lambda a: self.pool(a, spatial), meta)

    def _params(self):
        return {"window_shape": self.window_shape, "strides": self.strides,
                "padding": self.padding}


class GlobalAvgPool(Layer):
    """The mean over all positions: Σ' = mean_{p, p'} Φ[p, p'].  Output: vectors."""

    is_readout = True
    mixes_positions = True

    def output_spatial(self, spatial, where):
        if not spatial:
            raise LayerError(f"{where}: GlobalAvgPool needs spatial input but gets vectors "
                             "(is there already a readout before it?); remove it")
        return ()

    def kernel(self, state):
        if not state.full:
            raise ValueError("GlobalAvgPool: needs the full (all pixel pairs) kernel state")
        d = len(state.meta.spatial)
        meta = Meta((), state.meta.channels, state.meta.gaussian)
        return state.map_linear(lambda a: spatial_mean(a, d, True), meta)


class Flatten(Layer):
    """Positions × channels into one vector: Σ' = mean_p Φ[p, p].  On vectors: no-op."""

    is_readout = True

    def output_spatial(self, spatial, where):
        return ()

    def output_meta(self, meta, where):
        super().output_meta(meta, where)  # checks there is one input
        return self._meta(meta)

    @staticmethod
    def _meta(meta):
        # nt's Flatten: the channel axis becomes P·C and ``is_gaussian=False``
        channels = None if meta.channels is None else meta.channels * meta.size
        return Meta((), channels, False)

    def kernel(self, state):
        d = len(state.meta.spatial)
        return state.map_linear(lambda a: same_position_mean(a, d, state.full),
                                self._meta(state.meta))
