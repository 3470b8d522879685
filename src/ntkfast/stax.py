"""A drop-in for neural-tangents' ``stax`` (nt 0.6.5 names, signatures and defaults),
computed by ntkfast — no JAX needed.

Change one import and keep the code::

    from ntkfast import stax          # instead of: from neural_tangents import stax

    init_fn, apply_fn, kernel_fn = stax.serial(
        stax.Conv(32, (3, 3)), stax.Relu(), stax.Flatten(), stax.Dense(1, 2., 0.05))
    K = kernel_fn(x1, x2, 'ntk')                  # an (N1, N2) NumPy array
    k = kernel_fn(x1, x2, ('nngp', 'ntk'))        # namedtuple AnalyticKernel(nngp, ntk)
    k = kernel_fn(x1)                             # a Kernel with .nngp, .ntk, .cov1, ...

Every layer function returns ``(init_fn, apply_fn, kernel_fn)`` as nt's do, and its
defaults are nt 0.6.5's (checked against nt itself, ``bench/nt_stax_conv_reference.py``):
``Conv(..., padding='VALID')``, ``Conv``/``AvgPool`` ``strides=None`` = 1 on every axis
(nt's pooling does *not* default to the window shape), ``Dense``/``Conv`` ``W_std=1.0``,
``b_std=None`` (no bias), ``parameterization='ntk'``, ``LayerNorm(axis=-1, eps=1e-12)``,
``Erf(a=1, b=1, c=0)``, ``AvgPool(normalize_edges=False)`` (padded positions count as
zeros).

``kernel_fn(x1, x2=None, get=None, **kwargs)``:

- ``x1`` (N1, ...) and ``x2`` (N2, ...) arrays, channels last as in nt ((N, D) vectors,
  (N, L, C) signals, (N, H, W, C) images); ``x2=None`` means ``x2 = x1`` (K(x1, x1)
  exactly symmetric; its diagonal is exact, where nt's acos(1 − ε) is ~1e-8 off).
- ``get``: None → a :class:`Kernel` (``.nngp``, ``.ntk``, ``.cov1``, ``.cov2``, ...);
  a string ('nngp', 'ntk', 'cov1', 'cov2') → that array; a tuple of them → the
  namedtuple ``AnalyticKernel`` with those fields, in that order, as nt returns.
- nt's ``diagonal_batch`` (True or False: ``cov1``/``cov2`` are the diagonals or the full
  K(x1, x1), K(x2, x2)) and ``diagonal_spatial`` (False; True only on vector inputs) are
  accepted; ``pattern``/``mask_constant`` (masking), Kernel objects as input and
  per-position (spatial) outputs are not (NotImplementedError).
- ntkfast's own keywords pass through to :meth:`ntkfast.serial` networks' kernel
  methods: ``dtype``, ``tile``, ``n_jobs``, ``backend``, ``progress``.
- Outputs are NumPy float64 arrays (float32 with ``dtype=np.float32``).

``init_fn``/``apply_fn`` are finite-width networks from :mod:`ntkfast.finite_layers`
(NumPy; nt's parameter pytrees; ``rng`` an int seed, a ``np.random.Generator`` or a JAX
key's integers).  The ntkfast network behind a layer is ``layer.layer`` (an
``ntkfast.serial`` for ``stax.serial``), for ntkfast's extras (``out='K.npy'``, ...).

Not supported, with a NotImplementedError naming the layer: nt layers ntkfast has no
rule for (SumPool, Dropout, attention, ConvTranspose, ...), ``batch_axis``/
``channel_axis``/``dimension_numbers`` other than nt's defaults, ``s`` ≠ (1, 1),
``AvgPool(normalize_edges=True)`` with 'SAME', ``LayerNorm`` over axes other than the
channel axis, and array-valued ``W_std``/``b_std``.

Signs: W_std and b_std enter the kernels squared (and a random layer with −W has the
same distribution as with W), so negative values are taken by absolute value.

Extras that nt 0.6.5 lacks (ntkfast's quadrature activations): :func:`Tanh`,
:func:`Sigmoid`, :func:`Softplus`, :func:`Silu`.
"""

from __future__ import annotations

import math
import numbers
from collections import namedtuple

import numpy as np

from . import activations as _act
from . import layers as _layers

__all__ = [
    "serial", "parallel", "repeat", "Dense", "Conv", "AvgPool", "GlobalAvgPool", "Flatten",
    "FanOut", "FanInSum", "LayerNorm", "Identity", "Relu", "LeakyRelu", "Abs", "ABRelu",
    "Erf", "Gelu", "Sigmoid_like", "Sin", "Cos", "ElementwiseNumerical", "Tanh",
    "Sigmoid", "Softplus", "Silu", "Kernel", "StaxLayer",
]


def __dir__():  # the API, not this module's imports
    return list(__all__)

#: nt 0.6.5 ``stax`` names that ntkfast does not compute (calling them raises
#: NotImplementedError naming the layer).
UNSUPPORTED = (
    "Aggregate", "ConvLocal", "ConvTranspose", "DotGeneral", "Dropout", "Elementwise",
    "Exp", "ExpNormalized", "FanInConcat", "FanInProd", "Gabor", "Gaussian",
    "GlobalSelfAttention", "GlobalSumPool", "Hermite", "ImageResize", "Index", "Monomial",
    "Polynomial", "Rbf", "RectifiedMonomial", "Sign", "SumPool",
)

#: the keywords of ntkfast's kernel methods that ``kernel_fn`` passes through
_NK_KEYWORDS = ("dtype", "tile", "n_jobs", "backend", "progress")

_GETS = ("nngp", "ntk", "cov1", "cov2")


# ---------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------

class Kernel:
    """What ``kernel_fn(x1, x2)`` returns with ``get=None`` (nt's ``Kernel``, the fields
    that exist after a readout): ``nngp`` and ``ntk`` (N1×N2), ``cov1`` (Σ(x1_i, x1_i),
    shape (N1,); (N1, N1) with ``diagonal_batch=False``), ``cov2`` (likewise for x2;
    None when x2 is None), ``x1_is_x2``, ``diagonal_batch``, ``diagonal_spatial``
    (False), ``batch_axis`` (0), ``channel_axis`` (1)."""

    _fields = ("nngp", "ntk", "cov1", "cov2", "x1_is_x2", "diagonal_batch",
               "diagonal_spatial", "batch_axis", "channel_axis")

    def __init__(self, nngp, ntk, cov1, cov2, x1_is_x2, diagonal_batch=True):
        self.nngp, self.ntk, self.cov1, self.cov2 = nngp, ntk, cov1, cov2
        self.x1_is_x2 = x1_is_x2
        self.diagonal_batch = diagonal_batch
        self.diagonal_spatial = False
        self.batch_axis, self.channel_axis = 0, 1

    def asdict(self):
        return {f: getattr(self, f) for f in self._fields}

    _asdict = asdict

    def __repr__(self):
        shape = None if self.nngp is None else self.nngp.shape
        return f"Kernel(nngp/ntk of shape {shape}, x1_is_x2={self.x1_is_x2})"


_ANALYTIC = {}


def _analytic_kernel(fields):
    """nt's namedtuple type ``AnalyticKernel`` with ``fields`` (cached per fields)."""
    if fields not in _ANALYTIC:
        _ANALYTIC[fields] = namedtuple("AnalyticKernel", fields)
    return _ANALYTIC[fields]


# ---------------------------------------------------------------------------------------
# the (init_fn, apply_fn, kernel_fn) triple
# ---------------------------------------------------------------------------------------

class StaxLayer(tuple):
    """``(init_fn, apply_fn, kernel_fn)`` of one layer, as nt's layer functions return;
    ``.layer`` is the ntkfast layer (or network) it wraps."""

    def __new__(cls, layer, name):
        kernel_fn = _KernelFn(layer, name)
        init_fn, apply_fn = _finite_fns(layer, name)
        self = super().__new__(cls, (init_fn, apply_fn, kernel_fn))
        self.layer = layer
        self.name = name
        return self

    def __repr__(self):
        return f"<ntkfast.stax.{self.name}: {self.layer!r}>"


class _KernelFn:
    """nt's ``kernel_fn(x1_or_kernel, x2=None, get=None, **kwargs)`` for one layer or
    network (a layer alone is computed as the network of that one layer)."""

    def __init__(self, layer, name):
        self.layer = layer
        self.name = name
        self._net = None

    @property
    def net(self):
        if self._net is None:
            layer = self.layer
            self._net = layer if isinstance(layer, _layers.Serial) else _layers.serial(layer)
        return self._net

    def __call__(self, x1_or_kernel, x2=None, get=None, *, pattern=None,
                 mask_constant=None, diagonal_batch=None, diagonal_spatial=None, **kwargs):
        where = f"ntkfast.stax.{self.name} kernel_fn"
        if _is_nt_kernel(x1_or_kernel):
            raise NotImplementedError(f"{where}: Kernel objects as input (composing kernel_fns "
                                      "by hand) are not supported; pass the inputs x1, x2")
        if pattern is not None:
            raise NotImplementedError(f"{where}: pattern= (graph aggregation) is not supported")
        if mask_constant is not None:
            raise NotImplementedError(f"{where}: mask_constant= (masked inputs) is not "
                                      "supported")
        unknown = sorted(set(kwargs) - set(_NK_KEYWORDS))
        if unknown:
            raise TypeError(f"{where}: unexpected keyword argument(s) {unknown}; nt's "
                            f"kernel_fn keywords supported: get, diagonal_batch, "
                            f"diagonal_spatial; ntkfast's: {', '.join(_NK_KEYWORDS)}")
        single, fields = _canonical_get(get, where)
        diagonal_batch = True if diagonal_batch is None else bool(diagonal_batch)

        x1 = _as_input(x1_or_kernel, "x1", where)
        x2 = None if x2 is None else _as_input(x2, "x2", where)
        if diagonal_spatial and x1.ndim > 2:
            raise NotImplementedError(f"{where}: diagonal_spatial=True (per-position "
                                      "kernels) is not supported; ntkfast computes kernels "
                                      "after a readout (Flatten / GlobalAvgPool)")
        self._check_readout(x1, where)

        need = set(_GETS) if fields is None else set(fields)
        nngp = ntk = None
        if "nngp" in need and "ntk" in need:
            nngp, ntk = self.net.kernels(x1, x2, **kwargs)
        elif "nngp" in need:
            nngp = self.net.nngp(x1, x2, **kwargs)
        elif "ntk" in need:
            ntk = self.net.ntk(x1, x2, **kwargs)
        cov1 = cov2 = None
        if "cov1" in need:
            cov1 = self._cov(x1, diagonal_batch, nngp if x2 is None else None, kwargs)
        if "cov2" in need and x2 is not None:
            cov2 = self._cov(x2, diagonal_batch, None, kwargs)
        values = {"nngp": nngp, "ntk": ntk, "cov1": cov1, "cov2": cov2}
        if fields is None:
            return Kernel(nngp, ntk, cov1, cov2, x2 is None, diagonal_batch)
        if single:
            return values[fields[0]]
        return _analytic_kernel(fields)(*(values[f] for f in fields))

    def _cov(self, x, diagonal_batch, full, kwargs):
        if not diagonal_batch:
            return full if full is not None else self.net.nngp(x, None, **kwargs)
        diag_kw = {k: v for k, v in kwargs.items() if k in ("dtype", "backend")}
        return self.net.nngp_diag(x, **diag_kw)

    def _check_readout(self, x1, where):
        spatial = tuple(x1.shape[1:-1])
        try:
            out = self.net.output_spatial(spatial)
        except _layers.LayerError:
            return  # ntkfast's own message names the layer; let the kernel call raise it
        if isinstance(out, list):
            raise NotImplementedError(
                f"{where}: the network ends in {len(out)} branches (FanOut/parallel without "
                "FanInSum); nt returns a list of kernels there, ntkfast does not; join "
                "them with stax.FanInSum()")
        if out:
            raise NotImplementedError(
                f"{where}: the network's output is still spatial (positions {out}); nt "
                "returns per-position kernels there (N1, N2, H, H, W, W), ntkfast computes "
                "kernels after a readout only: end the network with stax.Flatten() or "
                "stax.GlobalAvgPool() (then e.g. stax.Dense(1))")

    def __repr__(self):
        return f"<ntkfast.stax kernel_fn of {self.name}>"


def _is_nt_kernel(x):
    return type(x).__name__ == "Kernel" and hasattr(x, "nngp") and hasattr(x, "cov1")


def _as_input(x, name, where):
    if isinstance(x, (list, tuple)) and x and all(hasattr(a, "shape") for a in x):
        raise NotImplementedError(f"{where}: {name} is a list/tuple of arrays (inputs of a "
                                  "multi-input network); ntkfast networks take one array")
    a = np.asarray(x)
    if a.ndim < 2:
        raise ValueError(f"{where}: {name} must have a batch axis first, shape (N, ...), "
                         f"got shape {a.shape}")
    return a


def _canonical_get(get, where):
    """(is a single string, tuple of lower-case fields or None), nt's rules."""
    if get is None:
        return False, None
    single = isinstance(get, str)
    fields = (get,) if single else tuple(get)
    if not fields:
        raise ValueError(f'{where}: "get" must be non-empty.')
    if not all(isinstance(f, str) for f in fields):
        raise TypeError(f"{where}: get must be None, a string or a tuple of strings, "
                        f"got {get!r}")
    fields = tuple(f.lower() for f in fields)
    if len(set(fields)) < len(fields):
        raise ValueError(f'{where}: All entries in "get" must be unique. Got {fields}')
    bad = [f for f in fields if f not in _GETS]
    if bad:
        raise NotImplementedError(f"{where}: get={bad[0]!r} is not supported; ntkfast "
                                  f"returns {', '.join(map(repr, _GETS))}")
    return single, fields


def _finite_fns(layer, name):
    """(init_fn, apply_fn): finite-width networks from :mod:`ntkfast.finite_layers`,
    imported on first call (NotImplementedError if this ntkfast has none)."""
    wrapped = not isinstance(layer, _layers.Serial)

    def _functions():
        try:
            from . import finite_layers
            stax_functions = finite_layers.stax_functions
        except (ImportError, AttributeError):
            raise NotImplementedError(
                f"ntkfast.stax.{name}: init_fn/apply_fn (finite-width networks) need "
                "ntkfast.finite_layers, which this ntkfast does not provide; kernel_fn "
                "works") from None
        return stax_functions(layer)

    def init_fn(rng, input_shape):
        out_shape, params = _functions()[0](rng, input_shape)
        # a single layer's params are its own pytree, not a 1-tuple, as in nt
        return out_shape, (params[0] if wrapped else params)

    def apply_fn(params, inputs, **kwargs):
        return _functions()[1]((params,) if wrapped else params, inputs, **kwargs)

    init_fn.__qualname__ = f"stax.{name}.init_fn"
    apply_fn.__qualname__ = f"stax.{name}.apply_fn"
    return init_fn, apply_fn


# ---------------------------------------------------------------------------------------
# argument checks (nt's keywords that ntkfast does not model)
# ---------------------------------------------------------------------------------------

def _std(value, name, layer, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool):
        raise TypeError(f"stax.{layer}: {name} must be a real number, got {value!r}")
    if np.ndim(value) != 0:
        raise NotImplementedError(f"stax.{layer}: {name} given as an array (shape "
                                  f"{np.shape(value)}) is not supported; give one number")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"stax.{layer}: {name} must be a real number, got {value!r}") from None
    return abs(v)


def _axes(layer, batch_axis=0, channel_axis=-1):
    if batch_axis != 0:
        raise NotImplementedError(f"stax.{layer}: batch_axis={batch_axis!r} is not supported; "
                                  "ntkfast takes the batch axis first (nt's default 0)")
    if channel_axis != -1:
        raise NotImplementedError(f"stax.{layer}: channel_axis={channel_axis!r} is not "
                                  "supported; ntkfast takes channels last (nt's default -1)")


def _s(layer, s):
    if tuple(s) != (1, 1):
        raise NotImplementedError(f"stax.{layer}: s={tuple(s)} (width scalings of the "
                                  "'standard' parameterization) is not supported; only "
                                  "nt's default s=(1, 1)")


def _width(value, name, layer):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"stax.{layer}: {name} must be a positive integer, got {value!r}")
    return int(value)


def _window(value, name, layer, allow_none=False):
    if value is None:
        if allow_none:
            return None
        raise TypeError(f"stax.{layer}: {name} is required, e.g. (3, 3)")
    if isinstance(value, numbers.Integral):
        raise TypeError(f"stax.{layer}: {name} must be a tuple, e.g. ({value},) or "
                        f"({value}, {value}), got {value!r}")
    return tuple(value)


def _parameterization(value, layer):
    if not isinstance(value, str) or value.lower() not in ("ntk", "standard"):
        raise ValueError(f"stax.{layer}: Parameterization not supported: {value!r} "
                         "(use 'ntk' or 'standard')")
    return value.lower()


def _unwrap(obj, where):
    """The ntkfast layer behind an ntkfast.stax triple."""
    if isinstance(obj, StaxLayer):
        return obj.layer
    if isinstance(obj, tuple) and len(obj) == 3 and isinstance(obj[2], _KernelFn):
        return obj[2].layer  # a triple rebuilt by hand from our functions
    raise TypeError(f"ntkfast.stax.{where}: expected layers made by ntkfast.stax "
                    f"((init_fn, apply_fn, kernel_fn) triples), got {obj!r}; layers of "
                    "neural_tangents.stax cannot be mixed in")


# ---------------------------------------------------------------------------------------
# combinators
# ---------------------------------------------------------------------------------------

def serial(*layers):
    """Layers applied in order (nt's ``stax.serial``)."""
    return StaxLayer(_layers.serial(*(_unwrap(l, f"serial (layer {i})")
                                      for i, l in enumerate(layers))), "serial")


def parallel(*layers):
    """Layer i applied to input i (after ``FanOut``), nt's ``stax.parallel``."""
    return StaxLayer(_layers.parallel(*(_unwrap(l, f"parallel (branch {i})")
                                        for i, l in enumerate(layers))), "parallel")


def repeat(layer, n):
    """``layer`` applied ``n`` times (nt's ``stax.repeat``; each copy has its own weights)."""
    n = _width(n, "n", "repeat")
    inner = _unwrap(layer, "repeat")
    return StaxLayer(_layers.serial(*([inner] * n)), "repeat")


# ---------------------------------------------------------------------------------------
# linear layers
# ---------------------------------------------------------------------------------------

def Dense(out_dim, W_std=1.0, b_std=None, batch_axis=0, channel_axis=-1,
          parameterization="ntk", s=(1, 1)):
    """nt's ``stax.Dense`` (per position on spatial inputs); ``out_dim`` enters only the
    'standard' parameterization's NTK (as the next layer's fan-in)."""
    _axes("Dense", batch_axis, channel_axis)
    _s("Dense", s)
    return StaxLayer(_layers.Dense(
        w_std=_std(W_std, "W_std", "Dense"), b_std=_std(b_std, "b_std", "Dense", True),
        parameterization=_parameterization(parameterization, "Dense"),
        width=_width(out_dim, "out_dim", "Dense")), "Dense")


def _default_dimension_numbers(n):
    spatial = "".join(c for c in "ABDEFGHJKLMPQRSTUVWXYZ")[:n]
    return ("N" + spatial + "C", spatial + "IO", "N" + spatial + "C")


def Conv(out_chan, filter_shape, strides=None, padding="VALID", W_std=1.0, b_std=None,
         dimension_numbers=None, parameterization="ntk", s=(1, 1)):
    """nt's ``stax.Conv``: default padding 'VALID' and strides 1 (as nt); 'SAME', 'VALID'
    or 'CIRCULAR'."""
    filter_shape = _window(filter_shape, "filter_shape", "Conv")
    if dimension_numbers is not None and \
            tuple(dimension_numbers) != _default_dimension_numbers(len(filter_shape)):
        raise NotImplementedError(
            f"stax.Conv: dimension_numbers={dimension_numbers!r} is not supported; ntkfast "
            f"takes nt's default {_default_dimension_numbers(len(filter_shape))} (batch "
            "first, channels last)")
    _s("Conv", s)
    if not isinstance(padding, str) or padding not in ("SAME", "VALID", "CIRCULAR"):
        raise ValueError(f"stax.Conv: padding must be 'SAME', 'VALID' or 'CIRCULAR', got "
                         f"{padding!r}")
    return StaxLayer(_layers.Conv(
        filter_shape, strides=_window(strides, "strides", "Conv", True), padding=padding,
        w_std=_std(W_std, "W_std", "Conv"), b_std=_std(b_std, "b_std", "Conv", True),
        parameterization=_parameterization(parameterization, "Conv"),
        width=_width(out_chan, "out_chan", "Conv")), "Conv")


def AvgPool(window_shape, strides=None, padding="VALID", normalize_edges=False,
            batch_axis=0, channel_axis=-1):
    """nt's ``stax.AvgPool``; ``strides=None`` is stride 1 on every axis (nt's default)."""
    _axes("AvgPool", batch_axis, channel_axis)
    window_shape = _window(window_shape, "window_shape", "AvgPool")
    strides = _window(strides, "strides", "AvgPool", True)
    if strides is None:
        strides = (1,) * len(window_shape)   # nt 0.6.5 `_Pool`: `strides or (1,) * ndim`
    if not isinstance(padding, str) or padding not in ("SAME", "VALID", "CIRCULAR"):
        raise ValueError(f"stax.AvgPool: padding must be 'SAME', 'VALID' or 'CIRCULAR', got "
                         f"{padding!r}")
    if normalize_edges and padding == "SAME":
        raise NotImplementedError("stax.AvgPool: normalize_edges=True with padding='SAME' "
                                  "(dividing by the window's size inside the image) is not "
                                  "supported; ntkfast counts padded positions as zeros "
                                  "(nt's default normalize_edges=False)")
    return StaxLayer(_layers.AvgPool(window_shape, strides=strides, padding=padding),
                     "AvgPool")


def GlobalAvgPool(batch_axis=0, channel_axis=-1):
    """nt's ``stax.GlobalAvgPool``: the mean over all positions (a readout)."""
    _axes("GlobalAvgPool", batch_axis, channel_axis)
    return StaxLayer(_layers.GlobalAvgPool(), "GlobalAvgPool")


def Flatten(batch_axis=0, batch_axis_out=0):
    """nt's ``stax.Flatten`` (a readout: the next Dense sees positions × channels)."""
    _axes("Flatten", batch_axis)
    if batch_axis_out not in (0, -2):
        raise NotImplementedError(f"stax.Flatten: batch_axis_out={batch_axis_out!r} is not "
                                  "supported; ntkfast keeps the batch axis first")
    return StaxLayer(_layers.Flatten(), "Flatten")


def FanOut(num):
    """``num`` copies of the input (then ``parallel``), nt's ``stax.FanOut``."""
    return StaxLayer(_layers.FanOut(_width(num, "num", "FanOut")), "FanOut")


def FanInSum():
    """The sum of the branches (nt's ``stax.FanInSum``)."""
    return StaxLayer(_layers.FanInSum(), "FanInSum")


def LayerNorm(axis=-1, eps=1e-12, batch_axis=0, channel_axis=-1):
    """nt's ``stax.LayerNorm`` over the channel axis (``axis=-1``, nt's default)."""
    _axes("LayerNorm", batch_axis, channel_axis)
    axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
    if axes != (-1,):
        raise NotImplementedError(f"stax.LayerNorm: axis={axis!r} is not supported; ntkfast "
                                  "normalises over the channel axis only (axis=-1)")
    return StaxLayer(_layers.LayerNorm(eps=eps), "LayerNorm")


def Identity():
    """nt's ``stax.Identity``."""
    return StaxLayer(_layers.Elementwise(_act.Identity()), "Identity")


# ---------------------------------------------------------------------------------------
# activations (nt's do_stabilize only rescales nt's intermediate arithmetic: ignored)
# ---------------------------------------------------------------------------------------

def _activation(activation, name):
    return StaxLayer(_layers.Elementwise(activation), name)


def _real(value, name, layer):
    if np.ndim(value) != 0 or isinstance(value, bool):
        raise TypeError(f"stax.{layer}: {name} must be a real number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"stax.{layer}: {name} must be finite, got {value!r}")
    return v


def Relu(do_stabilize=False):
    """max(x, 0)."""
    return _activation(_act.ReLU(), "Relu")


def LeakyRelu(alpha, do_stabilize=False):
    """max(x, 0) + alpha·min(x, 0) (``alpha`` required, as in nt)."""
    return _activation(_act.LeakyReLU(_real(alpha, "alpha", "LeakyRelu")), "LeakyRelu")


def Abs(do_stabilize=False):
    """|x|."""
    return _activation(_act.Abs(), "Abs")


def ABRelu(a, b, do_stabilize=False):
    """a·min(x, 0) + b·max(x, 0)."""
    return _activation(_act.ABReLU(_real(a, "a", "ABRelu"), _real(b, "b", "ABRelu")),
                       "ABRelu")


def Erf(a=1.0, b=1.0, c=0.0):
    """a·erf(b·x) + c."""
    return _activation(_act.Erf(_real(a, "a", "Erf"), _real(b, "b", "Erf"),
                                _real(c, "c", "Erf")), "Erf")


def Sigmoid_like():
    """0.5·erf(x / 2.4020563531719796) + 0.5, nt's ``Sigmoid_like`` (an Erf)."""
    return _activation(_act.Erf(0.5, 1 / 2.4020563531719796, 0.5), "Sigmoid_like")


def Gelu(approximate=False):
    """x·Φ(x); ``approximate`` changes only nt's finite ``apply_fn`` (the tanh form), not
    the kernel — ntkfast's finite networks use the exact form either way."""
    return _activation(_act.GELU(), "Gelu")


def Sin(a=1.0, b=1.0, c=0.0):
    """a·sin(b·x + c)."""
    return _activation(_act.Sin(_real(a, "a", "Sin"), _real(b, "b", "Sin"),
                                _real(c, "c", "Sin")), "Sin")


def Cos(a=1.0, b=1.0, c=0.0):
    """a·cos(b·x + c)."""
    return _activation(_act.Cos(_real(a, "a", "Cos"), _real(b, "b", "Cos"),
                                _real(c, "c", "Cos")), "Cos")


def ElementwiseNumerical(fn, deg, df=None):
    """φ = ``fn`` by ``deg``-point Gauss–Hermite quadrature, as nt's
    ``ElementwiseNumerical`` (the same rule, so equal up to rounding); ``fn`` (and ``df``)
    must be Numba-compilable functions of one float (:class:`ntkfast.activations.Custom`),
    not JAX functions.  Without ``df`` the derivative is derived numerically."""
    deg = _width(deg, "deg", "ElementwiseNumerical")
    return _activation(_act.Custom(fn, dfn=df, degree=max(deg, 2), rule="hermite"),
                       "ElementwiseNumerical")


def Tanh():
    """tanh(x) by quadrature (an ntkfast extra: nt 0.6.5 has no Tanh)."""
    return _activation(_act.Tanh(), "Tanh")


def Sigmoid():
    """1/(1 + e^(−x)) by quadrature (an ntkfast extra; nt has only ``Sigmoid_like``)."""
    return _activation(_act.Sigmoid(), "Sigmoid")


def Softplus():
    """log(1 + e^x) by quadrature (an ntkfast extra)."""
    return _activation(_act.Softplus(), "Softplus")


def Silu():
    """x·sigmoid(x) by quadrature (an ntkfast extra)."""
    return _activation(_act.SiLU(), "Silu")


def _unsupported(name):
    def layer(*args, **kwargs):
        raise NotImplementedError(
            f"ntkfast.stax.{name}: neural-tangents' {name} layer is not supported by "
            "ntkfast (supported: " + ", ".join(n for n in __all__ if n[0].isupper() and
                                               n not in ("Kernel", "StaxLayer")) + ")")
    layer.__name__ = layer.__qualname__ = name
    return layer


for _name in UNSUPPORTED:
    globals()[_name] = _unsupported(_name)
del _name
