"""Finite-width versions of ``nk.serial`` networks and their empirical NTK (NumPy, float64).

A network of :mod:`ntkfast.layers` (Dense, Conv, AvgPool, GlobalAvgPool, Flatten, FanOut,
parallel, FanInSum, LayerNorm, activations, nested serial) is instantiated with
parameters drawn N(0, 1), in neural-tangents' conventions (DESIGN §1, §5):

- ``Dense`` (per position on spatial input):  z = a · x W + β b,  fan-in n = C_in;
- ``Conv(k, s, padding)``:  z[p, c'] = a · Σ_a Σ_c W[a, c, c'] xp[s·p + a, c] + β b[c'],
  fan-in n = C_in·|k|, where xp is the input padded as lax pads it ('SAME': zeros,
  low = total//2; 'CIRCULAR': the same pads filled by wrapping around; 'VALID': none);

      'ntk'      : a = σ_w/√n,  β = σ_b,  W, b ~ N(0, 1)
      'standard' : a = 1,       β = 1,    W ~ N(0, σ_w²/n),  b ~ N(0, σ_b²)

  (``b_std=None``: no bias parameter);
- ``AvgPool``: the mean over the window, padded positions counted as zeros ('SAME') or
  wrapped ('CIRCULAR'); ``GlobalAvgPool``: the mean over all positions; ``Flatten``:
  the (positions × channels) vector in C order, so the next Dense has fan-in P·C;
- ``LayerNorm``: (x − mean_c x)/√(var_c x + eps) over the channel axis; activations φ
  elementwise; ``FanOut``/``parallel``/``FanInSum`` copy, run branches, and add.

Widths: every hidden Dense/Conv has ``width`` output channels (or its own ``.width``
when set); the *terminal* ones — those with no Dense/Conv after them on the way to the
output, normally the readout Dense — have ``n_out`` (``n_out=None``: their own
``.width``, else 1).  Parameters are drawn from one ``np.random.default_rng(seed)``
in forward order, W then b for each Dense/Conv.

Empirical NTK.  Θ_emp(x, z)_{cd} = Σ_θ ∂f_c(x)/∂θ · ∂f_d(z)/∂θ, computed from a
manual reverse-mode pass (never finite differences): the cotangents e_c of all output
units are pushed back at once (batched over examples and units), and each Dense/Conv
contributes the Gram product of its per-example parameter gradients — for a Dense on
vectors through the factorisation (h(x)·h(z)) (g(x)·g(z)) as in :mod:`ntkfast.finite`,
otherwise from the per-example weight gradient a · patches(x)ᵀ g (memory
O((N + M) · n_out · parameters of one layer)).  As in :class:`ntkfast.FiniteMLP`,
:meth:`FiniteNetwork.empirical_ntk` returns the mean over output units of Θ_cc
(``full=True``: all of Θ_cd), which → ``net.ntk`` as width → ∞ (Jacot et al. 2018,
Theorem 1; Arora et al. 2019 for CNNs), and :meth:`FiniteNetwork.empirical_nngp` the
readout's conditional covariance σ_w² h(x)·h(z)/n + σ_b², which → ``net.nngp``;
:meth:`FiniteNetwork.empirical_kernels` gives both from one pass.

Functional interface (for :mod:`ntkfast.stax`, nt-compatible wrappers)::

    init_params(net, rng, input_shape, width=None, n_out=None) -> (output_shape, params)
        rng: an int seed, a np.random.Generator, or an array of ints (e.g. a JAX PRNG
        key's data) used as seed entropy.  input_shape: WITH the batch axis first, as
        nt's init_fn(rng, input_shape), e.g. (-1, 8, 8, 3); output_shape likewise
        (a list of shapes where the net ends in branches).  Hidden Dense/Conv without
        a .width need ``width``.
    apply(net, params, inputs) -> outputs
        inputs (N, *input_shape[1:]) → (N, *output_shape[1:]).
    stax_functions(net, width=None, n_out=None) -> (init_fn, apply_fn)
        init_fn(rng, input_shape) and apply_fn(params, inputs, **kwargs) with nt's
        signatures, closing over the two functions above.

    params mirror nt's stax pytrees: Dense (W (C_in, C_out), b (C_out,) or None);
    Conv (W (*filter_shape, C_in, C_out) [HWIO], b (1,…,1, C_out) or None); serial and
    parallel tuples of their layers' params; every other layer ().

The object interface: :func:`finite_network_for` (backs ``Serial.finite``) →
:class:`FiniteNetwork`.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from . import _validation as V
from .layers.base import LayerError
from .layers.branching import FanInSum, FanOut, Parallel
from .layers.combinators import Serial, as_layer
from .layers.elementwise import Elementwise
from .layers.linear import AvgPool, Conv, Dense, Flatten, GlobalAvgPool
from .layers.normalization import LayerNorm

__all__ = ["FiniteNetwork", "finite_network_for", "init_params", "apply", "stax_functions",
           "n_params"]


def __dir__():  # the API, not this module's imports
    return list(__all__)


# ----------------------------------------------------------------------------------------
# structure helpers
# ----------------------------------------------------------------------------------------

def _has_linear(layer) -> bool:
    if isinstance(layer, (Dense, Conv)):
        return True
    if isinstance(layer, Serial):
        return any(_has_linear(l) for l in layer.layers)
    if isinstance(layer, Parallel):
        return any(_has_linear(b) for b in layer.branches)
    return False


def _name(prefix, i, layer):
    return f"{prefix + ' ' if prefix else ''}layer {i} ({type(layer).__name__})"


def _as_rng(rng):
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    arr = np.asarray(rng)
    if arr.dtype.kind in "ui" and arr.size:
        return np.random.default_rng(arr.astype(np.uint64).ravel().tolist())
    raise TypeError(f"rng: expected an int seed, a numpy Generator or an integer array "
                    f"(e.g. a PRNG key), got {rng!r}")


def _scales(layer, fan_in):
    """(a, β, std of W at init, std of b at init) of a Dense/Conv with fan-in ``fan_in``."""
    sb = 0.0 if layer.b_std is None else layer.b_std
    if layer.parameterization == "ntk":
        return layer.w_std / math.sqrt(fan_in), sb, 1.0, 1.0
    return 1.0, 1.0, layer.w_std / math.sqrt(fan_in), sb


class _Widths:
    def __init__(self, width, n_out):
        self.width = None if width is None else V.check_int(width, "width", minimum=1)
        self.n_out = None if n_out is None else V.check_int(n_out, "n_out", minimum=1)

    def out(self, layer, terminal, where):
        if terminal and self.n_out is not None:
            return self.n_out
        if layer.width is not None:
            return layer.width
        if terminal:
            return 1
        if self.width is None:
            raise ValueError(f"{where}: a hidden {type(layer).__name__} needs a width: pass "
                             "width=... (or give the layer width=...)")
        return self.width


def _check_single(shape, where):
    if isinstance(shape, list):
        raise LayerError(f"{where}: gets {len(shape)} branches but takes one input; join "
                         "them with FanInSum() first")


# ----------------------------------------------------------------------------------------
# initialisation (per-example shapes: spatial + (C,), or lists of them for branches)
# ----------------------------------------------------------------------------------------

def _init(layer, rng, shape, widths, followed, where):
    if isinstance(layer, Serial):
        params = []
        for i, l in enumerate(layer.layers):
            after = followed or any(_has_linear(m) for m in layer.layers[i + 1:])
            shape, p = _init(l, rng, shape, widths, after, _name(where, i, l))
            params.append(p)
        return shape, tuple(params)
    if isinstance(layer, Parallel):
        if not isinstance(shape, list) or len(shape) != len(layer.branches):
            got = f"{len(shape)} branches" if isinstance(shape, list) else "one input"
            raise LayerError(f"{where}: parallel has {len(layer.branches)} branches but gets "
                             f"{got}; put FanOut({len(layer.branches)}) before it")
        outs, params = [], []
        for i, (b, s) in enumerate(zip(layer.branches, shape)):
            o, p = _init(b, rng, s, widths, followed, f"{where} branch {i}")
            outs.append(o)
            params.append(p)
        return outs, tuple(params)
    if isinstance(layer, FanOut):
        _check_single(shape, where)
        return [shape] * layer.num, ()
    if isinstance(layer, FanInSum):
        if not isinstance(shape, list):
            raise LayerError(f"{where}: FanInSum needs branches (FanOut then parallel) but "
                             "gets one input")
        if len(set(shape)) != 1:
            raise LayerError(f"{where}: FanInSum adds branches of one shape, got per-example "
                             f"shapes {shape} (spatial + channels); make the branches agree "
                             "(strides, padding, and widths: a branch that ends in a "
                             "terminal Dense/Conv has n_out channels)")
        return shape[0], ()
    _check_single(shape, where)
    spatial, C = tuple(shape[:-1]), shape[-1]
    if isinstance(layer, (Dense, Conv)):
        terminal = not followed
        C_out = widths.out(layer, terminal, where)
        if isinstance(layer, Dense):
            out_spatial, wshape, fan_in = spatial, (C, C_out), C
            bshape = (C_out,)
        else:
            out_spatial = layer.output_spatial(spatial, where)
            wshape = tuple(layer.filter_shape) + (C, C_out)
            fan_in = C * math.prod(layer.filter_shape)
            bshape = (1,) * len(spatial) + (C_out,)
        _, _, w_sd, b_sd = _scales(layer, fan_in)
        W = w_sd * rng.standard_normal(wshape)
        b = None if layer.b_std is None else b_sd * rng.standard_normal(bshape)
        return out_spatial + (C_out,), (W, b)
    if isinstance(layer, (AvgPool, GlobalAvgPool, Flatten)):
        out_spatial = layer.output_spatial(spatial, where)
        if isinstance(layer, Flatten):
            return (math.prod(shape),), ()
        return tuple(out_spatial) + (C,), ()
    if isinstance(layer, (Elementwise, LayerNorm)):
        return tuple(shape), ()
    raise TypeError(f"{where}: finite networks do not support {type(layer).__name__}")


# ----------------------------------------------------------------------------------------
# sliding windows (Conv, AvgPool): lax padding, im2col, and the scatter-back
# ----------------------------------------------------------------------------------------

class _Window:
    """Geometry of a sliding window over ``spatial`` (padding as lax computes it)."""

    def __init__(self, spatial, window, strides, padding):
        self.spatial, self.window, self.strides = tuple(spatial), tuple(window), tuple(strides)
        self.padding = padding
        self.low, self.npad, self.out = [], [], []
        for n, k, s in zip(spatial, window, strides):
            if padding == "VALID":
                out, total = (n - k) // s + 1, 0
            else:
                out = -(-n // s)
                total = max((out - 1) * s + k - n, 0)
            self.low.append(total // 2)
            self.npad.append(n + total)
            self.out.append(out)
        self.offsets = list(itertools.product(*[range(k) for k in window]))
        self.size = len(self.offsets)

    def slices(self, a):
        return tuple(slice(o, o + s * (m - 1) + 1, s)
                     for o, s, m in zip(a, self.strides, self.out))

    def pad(self, x, lead):
        """x (*lead, *spatial, C) → padded (*lead, *npad, C)."""
        for i, (n, low, npad) in enumerate(zip(self.spatial, self.low, self.npad)):
            if npad == n:
                continue
            ax = lead + i
            if self.padding == "CIRCULAR":
                x = np.take(x, (np.arange(npad) - low) % n, axis=ax)
            else:
                width = [(0, 0)] * x.ndim
                width[ax] = (low, npad - n - low)
                x = np.pad(x, width)
        return x

    def unpad(self, dxp, lead):
        """The adjoint of :meth:`pad`."""
        for i, (n, low, npad) in enumerate(zip(self.spatial, self.low, self.npad)):
            if npad == n:
                continue
            ax = lead + i
            if self.padding == "CIRCULAR":
                moved = np.moveaxis(dxp, ax, 0)
                acc = np.zeros((n,) + moved.shape[1:], dtype=dxp.dtype)
                np.add.at(acc, (np.arange(npad) - low) % n, moved)
                dxp = np.moveaxis(acc, 0, ax)
            else:
                sl = [slice(None)] * dxp.ndim
                sl[ax] = slice(low, low + n)
                dxp = dxp[tuple(sl)]
        return dxp

    def patches(self, xp):
        """xp (N, *npad, C) → (N, P, |k|·C), the window offsets major (HWIO order)."""
        N, C = xp.shape[0], xp.shape[-1]
        cols = [xp[(slice(None),) + self.slices(a)] for a in self.offsets]
        return np.stack(cols, axis=-2).reshape(N, math.prod(self.out), self.size * C)

    def scatter(self, dpatch, lead_shape, C):
        """Adjoint of :meth:`patches` then :meth:`pad`: dpatch (*lead, P, |k|·C) →
        (*lead, *spatial, C)."""
        lead = len(lead_shape)
        dp = dpatch.reshape(lead_shape + tuple(self.out) + (self.size, C))
        dxp = np.zeros(lead_shape + tuple(self.npad) + (C,))
        for j, a in enumerate(self.offsets):
            dxp[(slice(None),) * lead + self.slices(a)] += dp[..., j, :]
        return self.unpad(dxp, lead)


def _window_of(layer, spatial):
    if isinstance(layer, Conv):
        return _Window(spatial, layer.filter_shape, layer.strides_or_ones, layer.padding)
    return _Window(spatial, layer.window_shape, layer.strides_or_default, layer.padding)


# ----------------------------------------------------------------------------------------
# forward (with the context the backward pass needs) and backward
# ----------------------------------------------------------------------------------------

def _forward(layer, params, x, keep):
    """(output, ctx); ctx is None when ``keep`` is False.  x: (N, *shape) or a list."""
    if isinstance(layer, Serial):
        ctxs = []
        for l, p in zip(layer.layers, params):
            x, c = _forward(l, p, x, keep)
            ctxs.append(c)
        return x, ctxs
    if isinstance(layer, Parallel):
        outs, ctxs = [], []
        for b, p, xi in zip(layer.branches, params, x):
            o, c = _forward(b, p, xi, keep)
            outs.append(o)
            ctxs.append(c)
        return outs, ctxs
    if isinstance(layer, FanOut):
        return [x] * layer.num, None
    if isinstance(layer, FanInSum):
        out = x[0]
        for xi in x[1:]:
            out = out + xi
        return out, len(x)
    if isinstance(layer, Dense):
        W, b = params
        a, beta, _, _ = _scales(layer, W.shape[0])
        z = x.reshape(-1, W.shape[0]) @ W
        z *= a
        z = z.reshape(x.shape[:-1] + (W.shape[1],))
        if b is not None:
            z = z + beta * b
        return z, (x if keep else None)
    if isinstance(layer, Conv):
        W, b = params
        N, C = x.shape[0], x.shape[-1]
        win = _window_of(layer, x.shape[1:-1])
        a, beta, _, _ = _scales(layer, C * win.size)
        cols = win.patches(win.pad(x, 1))                                  # (N, P, |k|C)
        z = cols.reshape(-1, win.size * C) @ W.reshape(win.size * C, -1)
        z *= a
        z = z.reshape((N,) + tuple(win.out) + (W.shape[-1],))
        if b is not None:
            z = z + beta * b
        return z, ((cols, win, C) if keep else None)
    if isinstance(layer, AvgPool):
        win = _window_of(layer, x.shape[1:-1])
        xp = win.pad(x, 1)
        out = sum(xp[(slice(None),) + win.slices(a)] for a in win.offsets) / win.size
        return out, (win if keep else None)
    if isinstance(layer, GlobalAvgPool):
        axes = tuple(range(1, x.ndim - 1))
        return x.mean(axis=axes), (x.shape[1:] if keep else None)
    if isinstance(layer, Flatten):
        return x.reshape(x.shape[0], -1), (x.shape[1:] if keep else None)
    if isinstance(layer, Elementwise):
        return layer.activation.fn(x), (x if keep else None)
    if isinstance(layer, LayerNorm):
        mean = x.mean(axis=-1, keepdims=True)
        var = x.var(axis=-1, keepdims=True)
        sd = np.sqrt(var + layer.eps)
        xhat = (x - mean) / sd
        return xhat, ((xhat, sd) if keep else None)
    raise TypeError(f"finite networks do not support {type(layer).__name__}")


def _backward(layer, params, ctx, g, sink, need_dx=True):
    """Pull the cotangents g (K, N, *out_shape) back to the layer's input; report each
    Dense/Conv's parameter gradients to ``sink`` (in reverse order of the forward pass).
    ``need_dx=False``: the input cotangents are not wanted (None may be returned)."""
    if isinstance(layer, Serial):
        n = len(layer.layers)
        for i in reversed(range(n)):
            g = _backward(layer.layers[i], params[i], ctx[i], g, sink,
                          need_dx or i > 0)
        return g
    if isinstance(layer, Parallel):
        n = len(layer.branches)
        out = [None] * n
        for i in reversed(range(n)):
            out[i] = _backward(layer.branches[i], params[i], ctx[i], g[i], sink, need_dx)
        return out
    if not need_dx and not isinstance(layer, (Dense, Conv)):
        return None
    if isinstance(layer, FanOut):
        total = g[0]
        for gi in g[1:]:
            total = total + gi
        return total
    if isinstance(layer, FanInSum):
        return [g] * ctx
    if isinstance(layer, Dense):
        W, b = params
        x = ctx
        a, beta, _, _ = _scales(layer, W.shape[0])
        K, N = g.shape[:2]
        factors = []
        if x.ndim == 2:                                   # vectors: J_W = (a h) ⊗ g
            factors.append(("outer", a * x, g))
        else:
            xr = x.reshape(N, -1, W.shape[0])
            gr = g.reshape(K, N, -1, W.shape[1])
            factors.append(("full", (a * np.matmul(np.swapaxes(xr, 1, 2)[None], gr))
                            .reshape(K, N, -1)))
        if b is not None:
            factors.append(("full", beta * g.reshape(K, N, -1, W.shape[1]).sum(axis=2)))
        sink(factors)
        if not need_dx:
            return None
        dx = g.reshape(-1, W.shape[1]) @ W.T
        dx *= a
        return dx.reshape(g.shape[:-1] + (W.shape[0],))
    if isinstance(layer, Conv):
        W, b = params
        cols, win, C = ctx
        a, beta, _, _ = _scales(layer, C * win.size)
        K, N = g.shape[:2]
        C_out = W.shape[-1]
        gr = g.reshape(K, N, -1, C_out)                                   # (K, N, P, C')
        JW = a * np.matmul(np.swapaxes(cols, 1, 2)[None], gr)             # (K, N, |k|C, C')
        factors = [("full", JW.reshape(K, N, -1))]
        if b is not None:
            factors.append(("full", beta * gr.sum(axis=2)))
        sink(factors)
        if not need_dx:
            return None
        dcols = gr.reshape(-1, C_out) @ W.reshape(win.size * C, C_out).T  # (K·N·P, |k|C)
        dcols *= a
        return win.scatter(dcols.reshape(K, N, -1, win.size * C), (K, N), C)
    if isinstance(layer, AvgPool):
        win = ctx
        K, N, C = g.shape[0], g.shape[1], g.shape[-1]
        dcols = np.broadcast_to((g / win.size).reshape(K, N, -1, 1, C),
                                (K, N, math.prod(win.out), win.size, C))
        return win.scatter(dcols.reshape(K, N, math.prod(win.out), win.size * C), (K, N), C)
    if isinstance(layer, GlobalAvgPool):
        in_shape = ctx
        P = math.prod(in_shape[:-1])
        K, N, C = g.shape
        view = (g / P).reshape((K, N) + (1,) * (len(in_shape) - 1) + (C,))
        return np.broadcast_to(view, (K, N) + tuple(in_shape)).copy()
    if isinstance(layer, Flatten):
        return g.reshape(g.shape[:2] + tuple(ctx))
    if isinstance(layer, Elementwise):
        return g * layer.activation.dfn(ctx)
    if isinstance(layer, LayerNorm):
        xhat, sd = ctx
        gm = g.mean(axis=-1, keepdims=True)
        gx = (g * xhat).mean(axis=-1, keepdims=True)
        return (g - gm - xhat * gx) / sd
    raise TypeError(f"finite networks do not support {type(layer).__name__}")


# ----------------------------------------------------------------------------------------
# functional interface
# ----------------------------------------------------------------------------------------

def _as_net(net):
    if isinstance(net, Serial):
        return net
    return Serial(as_layer(net, "net"))


def init_params(net, rng, input_shape, width=None, n_out=None):
    """Draw a finite network's parameters: ``(output_shape, params)`` (module docstring).

    ``input_shape`` has the batch axis first (nt's convention; its value is ignored)."""
    net = _as_net(net)
    input_shape = tuple(input_shape)
    if len(input_shape) < 2:
        raise ValueError(f"input_shape: expected (batch, *example_shape), e.g. (-1, 8, 8, 3) "
                         f"or (-1, 10), got {input_shape}")
    batch, example = input_shape[0], tuple(int(s) for s in input_shape[1:])
    if any(s < 1 for s in example):
        raise ValueError(f"input_shape: example dimensions must be >= 1, got {input_shape}")
    out, params = _init(net, _as_rng(rng), example, _Widths(width, n_out), False, "")
    if isinstance(out, list):
        return [(batch,) + tuple(o) for o in out], params
    return (batch,) + tuple(out), params


def apply(net, params, inputs):
    """Outputs of the finite network ``net`` with ``params`` on ``inputs`` (N, *shape)."""
    net = _as_net(net)
    x = np.asarray(inputs, dtype=np.float64)
    return _forward(net, params, x, False)[0]


def stax_functions(net, width=None, n_out=None):
    """``(init_fn, apply_fn)`` with neural-tangents' signatures for ``net``."""
    net = _as_net(net)

    def init_fn(rng, input_shape):
        return init_params(net, rng, input_shape, width=width, n_out=n_out)

    def apply_fn(params, inputs, **kwargs):
        return apply(net, params, inputs)

    return init_fn, apply_fn


def _linear_params(net, params):
    """[(W, b)] of every Dense/Conv in forward order."""
    out = []

    def walk(layer, p):
        if isinstance(layer, Serial):
            for l, q in zip(layer.layers, p):
                walk(l, q)
        elif isinstance(layer, Parallel):
            for l, q in zip(layer.branches, p):
                walk(l, q)
        elif isinstance(layer, (Dense, Conv)):
            out.append(p)

    walk(net, params)
    return out


def n_params(net, params) -> int:
    """The number of scalar parameters."""
    return sum(W.size + (0 if b is None else b.size) for W, b in _linear_params(net, params))


# ----------------------------------------------------------------------------------------
# Gram accumulation of parameter gradients
# ----------------------------------------------------------------------------------------

def _gram(fx, fz, full):
    """Σ over one parameter block of J_x[c, n] · J_z[d, m] → (N, M) (mean over c = d)
    or (N, M, K, K) with ``full``."""
    kind = fx[0]
    if kind == "outer":
        hx, gx = fx[1], fx[2]
        hz, gz = fz[1], fz[2]
        H = hx @ hz.T
        if full:
            G = np.einsum("cno,dmo->nmcd", gx, gz, optimize=True)
            return H[:, :, None, None] * G
        K = gx.shape[0]
        G = np.swapaxes(gx, 0, 1).reshape(gx.shape[1], -1) @ \
            np.swapaxes(gz, 0, 1).reshape(gz.shape[1], -1).T
        return H * G / K
    Jx, Jz = fx[1], fz[1]
    K = Jx.shape[0]
    if full:
        return np.tensordot(Jx, Jz, axes=([2], [2])).transpose(1, 3, 0, 2)
    return (np.swapaxes(Jx, 0, 1).reshape(Jx.shape[1], -1) @
            np.swapaxes(Jz, 0, 1).reshape(Jz.shape[1], -1).T) / K


def _split(factor, n):
    if factor[0] == "outer":
        return ("outer", factor[1][:n], factor[2][:, :n]), \
               ("outer", factor[1][n:], factor[2][:, n:])
    return ("full", factor[1][:, :n]), ("full", factor[1][:, n:])


def _flat(factor):
    """(K, N, p) Jacobian of one parameter block."""
    if factor[0] == "outer":
        h, g = factor[1], factor[2]
        J = h[None, :, :, None] * g[:, :, None, :]
        return J.reshape(g.shape[0], g.shape[1], -1)
    return factor[1]


# ----------------------------------------------------------------------------------------
# the object interface
# ----------------------------------------------------------------------------------------

class FiniteNetwork:
    """A finite-width instance of an ``nk.serial`` network (see the module docstring).

    Parameters
    ----------
    net : Serial (or any layer)
        The infinitely wide network; its layers' σ_w, σ_b, parameterization, filters,
        strides and paddings are used.
    width : int
        Output channels of every hidden Dense/Conv (those without their own ``.width``).
    seed : int
        Seed of the ``np.random.default_rng`` drawing all parameters (forward order,
        W then b per Dense/Conv).
    input_shape : tuple, optional
        The shape of one example without the batch axis, e.g. (5, 5, 2), (L, C) or (D,);
        ``None``: taken from the first input (the same seed gives the same network).
    n_out : int
        Output units of the terminal Dense/Conv (the readout).
    """

    def __init__(self, net, width, seed=0, input_shape=None, n_out=1):
        self.net = _as_net(net)
        self.width = V.check_int(width, "width", minimum=1)
        self.seed = V.check_int(seed, "seed", minimum=0)
        self.n_out = V.check_int(n_out, "n_out", minimum=1)
        self.input_shape = None
        self.output_shape = None
        self.params = None
        if input_shape is not None:
            self._build(tuple(input_shape))

    # -- construction ---------------------------------------------------------------
    def _build(self, shape):
        out, params = init_params(self.net, self.seed, (-1,) + tuple(shape), self.width,
                                  self.n_out)
        if isinstance(out, list):
            raise LayerError(f"the network ends with {len(out)} branches; join them with "
                             "FanInSum()")
        self.input_shape = tuple(int(s) for s in shape)
        self.output_shape = tuple(out[1:])
        self.params = params

    def _require_built(self):
        if self.params is None:
            raise RuntimeError("the network has no parameters yet: pass input_shape=... or "
                               "call it on an input first")

    def _check_x(self, X, name="X"):
        X = V.as_numeric_array(X, name).astype(np.float64, copy=False)
        if X.ndim < 2 or X.shape[0] == 0:
            raise ValueError(f"{name}: expected (N, D), (N, L, C) or (N, H, W, C) with N >= 1, "
                             f"got shape {X.shape}")
        if not np.isfinite(X).all():
            raise ValueError(f"{name}: contains NaN or inf")
        if self.params is None:
            self._build(X.shape[1:])
        elif X.shape[1:] != self.input_shape:
            raise ValueError(f"{name}: examples have shape {X.shape[1:]} but the network was "
                             f"built for {self.input_shape}")
        return X

    @property
    def n_params(self) -> int:
        self._require_built()
        return n_params(self.net, self.params)

    def analytic(self):
        """The infinitely wide network this one converges to (``net`` itself)."""
        return self.net

    def copy(self) -> "FiniteNetwork":
        """A deep copy (same parameters)."""
        new = object.__new__(FiniteNetwork)
        new.__dict__.update(self.__dict__)
        if self.params is not None:
            new.params = _map_arrays(self.params, np.copy)
        return new

    def __repr__(self):
        return (f"FiniteNetwork({self.net!r}, width={self.width}, seed={self.seed}, "
                f"input_shape={self.input_shape}, n_out={self.n_out})")

    # -- flat parameter vector --------------------------------------------------------
    def get_params(self) -> np.ndarray:
        """All parameters as one vector (forward order: W, b of each Dense/Conv)."""
        self._require_built()
        parts = []
        for W, b in _linear_params(self.net, self.params):
            parts.append(W.ravel())
            if b is not None:
                parts.append(b.ravel())
        return np.concatenate(parts) if parts else np.zeros(0)

    def set_params(self, theta) -> "FiniteNetwork":
        """Overwrite the parameters (in place) from a vector laid out as :meth:`get_params`."""
        self._require_built()
        theta = np.asarray(theta, dtype=np.float64)
        if theta.shape != (self.n_params,):
            raise ValueError(f"theta: expected shape ({self.n_params},), got {theta.shape}")
        i = 0
        for W, b in _linear_params(self.net, self.params):
            for arr in (W, b):
                if arr is not None:
                    arr[...] = theta[i:i + arr.size].reshape(arr.shape)
                    i += arr.size
        return self

    # -- forward and backward ---------------------------------------------------------
    def __call__(self, X) -> np.ndarray:
        """f(X): (N, n_out) for a network ending in vectors, else (N, *output_shape)."""
        X = self._check_x(X)
        return _forward(self.net, self.params, X, False)[0]

    apply = forward = __call__

    def _vector_output(self):
        if len(self.output_shape) != 1:
            raise ValueError(f"the network's output has per-example shape {self.output_shape}; "
                             "the empirical kernels need vector outputs: end the network "
                             "with Flatten() or GlobalAvgPool() and a Dense readout")
        return self.output_shape[0]

    def _backprop(self, X, sink, need_dx=False):
        """Forward on X (keeping what the backward pass needs), then the cotangents e_c of
        every output unit back at once.  Returns (ctx, input cotangents (K, N, *input_shape)
        or None)."""
        K = self._vector_output()
        _, ctx = _forward(self.net, self.params, X, True)
        g = np.ascontiguousarray(np.broadcast_to(np.eye(K)[:, None, :], (K, X.shape[0], K)))
        return ctx, _backward(self.net, self.params, ctx, g, sink, need_dx)

    def jacobian(self, X) -> np.ndarray:
        """∂f_c(x_n)/∂θ as (N, K, n_params), θ laid out as :meth:`get_params` (from the
        manual backward pass)."""
        X = self._check_x(X)
        groups = []
        self._backprop(X, groups.append)
        blocks = [_flat(f) for grp in reversed(groups) for f in grp]
        if not blocks:
            return np.zeros((X.shape[0], self._vector_output(), 0))
        return np.concatenate(blocks, axis=2).transpose(1, 0, 2)

    def input_jacobian(self, X) -> np.ndarray:
        """∂f_c(x_n)/∂x_n as (N, K, *input_shape)."""
        X = self._check_x(X)
        return np.swapaxes(self._backprop(X, lambda factors: None, need_dx=True)[1], 0, 1)

    # -- kernels ----------------------------------------------------------------------
    def _readout(self):
        """(the final Dense, a function ctx → its input h) for the NNGP helper."""
        layer, path = self.net, []
        while isinstance(layer, Serial) and layer.layers:
            path.append(len(layer.layers) - 1)
            layer = layer.layers[-1]
        if not isinstance(layer, Dense):
            raise ValueError("empirical_nngp: the network must end with a Dense readout (on "
                             "vectors); use the mean of f(x) f(z) over seeds instead")

        def h_of(ctx):
            for i in path:
                ctx = ctx[i]
            if ctx.ndim != 2:
                raise ValueError("empirical_nngp: the readout Dense acts per position on "
                                 "spatial input; put Flatten() or GlobalAvgPool() before it")
            return ctx

        return layer, h_of

    def _inputs(self, X, Z):
        X = self._check_x(X)
        if Z is None:
            return X, None
        Z = self._check_x(Z, "Z")
        return np.concatenate([X, Z]), X.shape[0]

    def empirical_kernels(self, X, Z=None, full=False, get=("nngp", "ntk")):
        """``nk.Kernels(nngp, ntk)`` of :meth:`empirical_nngp` and :meth:`empirical_ntk`
        from one forward pass (X and Z are run as one batch)."""
        want_ntk, want_nngp = "ntk" in get, "nngp" in get
        B, N = self._inputs(X, Z)
        same = N is None
        if want_nngp:
            readout, h_of = self._readout()
        acc = []

        def sink(factors):
            for f in factors:
                fx, fz = (f, f) if same else _split(f, N)
                t = _gram(fx, fz, full)
                if acc:
                    acc[0] += t
                else:
                    acc.append(t)

        if want_ntk:
            ctx, _ = self._backprop(B, sink)
        else:
            ctx = _forward(self.net, self.params, B, True)[1]
        theta = sigma = None
        if want_ntk:
            K = self._vector_output()
            if acc:
                theta = acc[0]
            else:
                n = B.shape[0] if same else N
                theta = np.zeros((n, B.shape[0] - (0 if same else N)) +
                                 ((K, K) if full else ()))
            if same and not full:
                theta = 0.5 * (theta + theta.T)
        if want_nngp:
            h = h_of(ctx)
            hx, hz = (h, h) if same else (h[:N], h[N:])
            b2 = 0.0 if readout.b_std is None else readout.b_std ** 2
            sigma = readout.w_std ** 2 * (hx @ hz.T) / h.shape[1] + b2
            if same:
                sigma = 0.5 * (sigma + sigma.T)
        from .network import Kernels
        return Kernels(nngp=sigma, ntk=theta)

    def empirical_ntk(self, X, Z=None, full=False) -> np.ndarray:
        """Θ_emp(X, Z) = J(X) J(Z)ᵀ summed over all parameters, from the manual backward
        pass (never a finite-difference Jacobian).  Returns (N, M): the mean over output
        units (1/K) Σ_c Θ_cc (for K = 1 the NTK itself), or with ``full=True`` the
        (N, M, K, K) array Θ_cd.  As width → ∞ it → ``net.ntk(X, Z)``."""
        return self.empirical_kernels(X, Z, full=full, get=("ntk",)).ntk

    ntk = empirical_ntk

    def empirical_nngp(self, X, Z=None) -> np.ndarray:
        """The readout's conditional covariance given everything before it,

            Σ_emp(x, z) = σ_w² h(x)·h(z)/n + σ_b²    (h: the readout's input, n its size),

        i.e. Cov[f_c(x), f_c(z) | all but the readout's parameters] in either
        parameterization; → ``net.nngp`` as width → ∞.  Needs a network ending with a
        Dense on vectors."""
        return self.empirical_kernels(X, Z, get=("nngp",)).nngp

    nngp = empirical_nngp


def _map_arrays(tree, fn):
    if isinstance(tree, np.ndarray):
        return fn(tree)
    if isinstance(tree, (tuple, list)):
        return type(tree)(_map_arrays(t, fn) for t in tree)
    return tree


def finite_network_for(serial_net, width, seed=0, input_shape=None, n_out=1) -> FiniteNetwork:
    """The finite-width instance of ``serial_net`` at hidden width ``width`` (parameters
    from ``seed``; ``input_shape`` per example, ``None``: from the first input).  Backs
    ``Serial.finite(width, seed, **kw)``."""
    return FiniteNetwork(serial_net, width, seed=seed, input_shape=input_shape, n_out=n_out)
