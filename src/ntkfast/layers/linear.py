"""Linear layers: Dense, Conv, AvgPool, GlobalAvgPool, Flatten.

Kernel rules (neural-tangents' ``stax`` conventions; Φ, Ψ the covariances Σ, Θ of the
previous layer's output at the pixel pair (p, p'), one pair of inputs (x, z)):

- Dense (per position, like a 1×1 convolution):
  Σ'[p, p'] = σ_w² Φ[p, p'] + σ_b²,   Θ' = σ_w² Ψ[p, p'] + Σ'.
- Conv(k, s, padding): with the same window offset a on both sides,
  Σ'[p, p'] = σ_w² · mean_a Φ[s·p + a, s·p' + a] + σ_b²,  Θ' = σ_w² · mean_a Ψ[..] + Σ'
  (SAME: zero-padded positions count as zeros in the mean; CIRCULAR: wrap around).
- AvgPool(k, s, padding): Σ'[p, p'] = mean_a mean_b Φ[s·p + a, s·p' + b] (windows of p
  and p' averaged independently), Θ' likewise; no σ.
- GlobalAvgPool: Σ' = mean over all (p, p') of Φ; a vector afterwards.
- Flatten: Σ' = mean over the same-position pairs (p, p) of Φ (the readout Dense after it
  has fan-in P·C); a vector afterwards.

'standard' parameterization (Dense, Conv; needs the input width): Θ' = n_in Σ_in + σ_w² Ψ
(+1 with a bias), n_in the fan-in without the filter size, as in neural-tangents.
"""

from __future__ import annotations

from .base import Layer, LayerError, check_padding, check_std, check_window, window_output

__all__ = ["Dense", "Conv", "AvgPool", "GlobalAvgPool", "Flatten"]


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

    @property
    def strides_or_default(self):
        # neural-tangents 0.6.5 `_pool_kernel`/`AvgPool`: strides=None means the window
        # shape (non-overlapping pooling).  (Checked by tests against nt's numbers.)
        return self.strides or self.window_shape

    def output_spatial(self, spatial, where):
        if not spatial:
            raise LayerError(f"{where}: AvgPool needs spatial input but gets vectors; move it "
                             "before the Flatten/GlobalAvgPool readout")
        return window_output(spatial, self.window_shape, self.strides_or_default,
                             self.padding, where, "window_shape")

    def _params(self):
        return {"window_shape": self.window_shape, "strides": self.strides,
                "padding": self.padding}


class GlobalAvgPool(Layer):
    """The mean over all positions: Σ' = mean_{p, p'} Φ[p, p'].  Output: vectors."""

    is_readout = True

    def output_spatial(self, spatial, where):
        if not spatial:
            raise LayerError(f"{where}: GlobalAvgPool needs spatial input but gets vectors "
                             "(is there already a readout before it?); remove it")
        return ()


class Flatten(Layer):
    """Positions × channels into one vector: Σ' = mean_p Φ[p, p].  On vectors: no-op."""

    is_readout = True

    def output_spatial(self, spatial, where):
        return ()
