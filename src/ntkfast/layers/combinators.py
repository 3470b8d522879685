"""Combinators: ``serial`` (a network) and ``parallel`` (branches).

``nk.serial(*layers)`` is the network object users compute kernels with: it has the
kernel methods of :class:`ntkfast.MLP` (``nngp``, ``ntk``, ``kernels``, ``nngp_diag``,
``ntk_diag``) with the same keyword-only options, and is itself a layer
(serial networks nest; its kernel rule applies its layers in order).
"""

from __future__ import annotations

import numpy as np

from .._validation import check_diag_options
from ..activations import Activation
from ..network import _DIAG_DOC, _KERNELS_DOC, _NNGP_DOC, _NTK_DOC, Kernels, _doc
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


_BACKENDS = ("auto", "reference", "compiled", "numba", "cuda")

_NETWORK_FORMULA = """Computed layer by layer with the rules of :mod:`ntkfast.layers` (Dense/Conv:
    Σ' = σ_w² · mean over the window of E[φφ] + σ_b², Θ' = σ_w² · mean(Ė · Θ) + Σ';
    pooling averages; FanInSum adds), as neural-tangents' ``stax``."""


class KernelMethods:
    """How a network's kernel methods run (the public methods are :class:`Serial`'s).

    Inputs: X (N, D), (N, L, C) or (N, H, W, C), channels last as in neural-tangents; Z
    (M, …) with the same per-example shape, or None for K(X, X) (exactly symmetric, the
    diagonal equal to the ``*_diag`` methods bitwise).

    Engines: a network that is exactly a fully-connected chain ``Dense, [φ, Dense] *
    depth`` (one φ, one w_std/b_std/parameterization, equal hidden widths) on vectors
    runs on the MLP's engines (``backend`` 'auto', 'compiled', 'numba', 'cuda': the same
    numbers as :class:`ntkfast.MLP`, ``out='K.npy'`` out of core included).  Every other
    network — and every network with ``backend='reference'`` — runs the layer rules of
    :mod:`ntkfast.layers` in NumPy (:mod:`ntkfast.backends.reference_network`), in blocks
    of pairs with bounded memory; ``out`` is then None or arrays.
    """

    def _mlp_equivalent(self):
        """The :class:`ntkfast.MLP` this network equals, or None."""
        from ..network import MLP
        from .linear import Dense
        layers = _flat_layers(self)
        if len(layers) % 2 == 0:
            return None
        dense, acts = layers[0::2], layers[1::2]
        if not all(type(l) is Dense for l in dense) or \
                not all(type(a) is Elementwise for a in acts):
            return None
        first = dense[0]
        key = (first.w_std, first.b_std, first.parameterization)
        if any((l.w_std, l.b_std, l.parameterization) != key for l in dense):
            return None
        if any(a.activation != acts[0].activation for a in acts):
            return None
        width = None
        if first.parameterization == "standard":
            hidden = {l.width for l in dense[:-1]}
            if not hidden:
                width = 1  # depth 0: the hidden width never enters
            elif len(hidden) == 1 and None not in hidden:
                width = hidden.pop()
            else:
                return None
        return MLP(depth=len(acts), activation=acts[0].activation if acts else "identity",
                   w_std=first.w_std, b_std=first.b_std,
                   parameterization=first.parameterization, width=width)

    def _fast_path(self, X, backend):
        """The equivalent MLP when the fully-connected fast path applies, else None."""
        if not isinstance(backend, str) or backend not in _BACKENDS:
            valid = ", ".join(map(repr, _BACKENDS))
            raise ValueError(f"backend: unknown backend {backend!r}; use one of {valid}")
        if backend == "reference":
            return None
        from .._validation import as_numeric_array
        mlp = self._mlp_equivalent()
        if mlp is not None and as_numeric_array(X, "X").ndim == 2:
            return mlp
        if backend == "compiled":
            from ..backends.compiled_network import unsupported_layer
            bad = unsupported_layer(self)
            if bad:
                raise ValueError(
                    f"backend='compiled': {bad} has no compiled kernel rule (the compiled "
                    "network engine runs Dense, Conv, AvgPool, GlobalAvgPool, Flatten, "
                    "FanOut/parallel/FanInSum, Identity, the ReLU family, Erf, GELU and "
                    "the series activations Tanh, Softplus, Sigmoid, SiLU, Custom); "
                    "use backend='auto' or 'reference' for this network")
        elif backend != "auto":
            raise ValueError(f"backend={backend!r}: only fully-connected chains Dense, [φ, "
                             f"Dense] * depth on vectors have a {backend} engine so far; "
                             "use backend='auto', 'compiled' or 'reference' for this "
                             "network")
        return None

    def _network_engine(self, backend, n_threads):
        """The engine of a network that is not an MLP chain: the compiled network
        engine for 'auto' and 'compiled' when it runs every layer, else the NumPy
        reference engine."""
        from ..backends.reference_network import STATE_BUDGET, NetworkReferenceEngine
        budget = STATE_BUDGET // max(1, n_threads)
        if backend in ("auto", "compiled"):
            from ..backends.compiled_network import unsupported_layer
            if unsupported_layer(self) is None:
                try:
                    from ..backends.compiled_network import CompiledNetworkEngine
                except ImportError:  # pragma: no cover - extension not built
                    if backend == "compiled":
                        raise
                else:
                    return CompiledNetworkEngine(budget, n_jobs=n_threads)
        return NetworkReferenceEngine(budget)

    def _engine_and_spec(self, example_shape, backend="auto", n_jobs=1):
        """(engine, spec) for examples of ``example_shape`` (see
        :func:`ntkfast.backends.engine_and_spec`): the MLP's for fully-connected chains
        on vectors, else the network reference engine and its plan."""
        mlp = self._mlp_equivalent() if len(example_shape) == 1 else None
        if mlp is not None and backend != "reference":
            from ..backends import engine_and_spec
            return engine_and_spec(mlp, example_shape, backend, n_jobs)
        self._fast_path(np.empty((0,) + tuple(example_shape)), backend)  # checks backend
        from ..backends.reference_network import NetworkPlan
        return (self._network_engine(backend, n_jobs),
                NetworkPlan(self, tuple(example_shape)))

    def _check_examples(self, A, name, example_shape=None):
        from ..backends.reference_network import check_batch
        return check_batch(A, name, example_shape)

    def _compute(self, X, Z, want_nngp, want_ntk, *, dtype, out, tile, n_jobs, backend,
                 progress, resume):
        mlp = self._fast_path(X, backend)
        if mlp is not None:
            return mlp._compute(X, Z, want_nngp, want_ntk, dtype=dtype, out=out, tile=tile,
                                n_jobs=n_jobs, backend=backend, progress=progress,
                                resume=resume)
        from .. import _validation as V
        from ..backends.reference_network import prepare
        from ..outofcore.tiling import compute_gram
        X, Z, dt, plan = prepare(self, X, Z, dtype)
        n_threads = V.check_n_jobs(n_jobs)
        if tile is not None:
            tile = V.check_int(tile, "tile", minimum=1)
        engine = self._network_engine(backend, n_threads)
        return compute_gram(engine, plan, X, Z, dt, want_nngp, want_ntk, out=out, tile=tile,
                            n_jobs=n_threads, progress=progress, resume=resume)

    def _diag(self, X, dtype, out, backend, kind):
        mlp = self._fast_path(X, backend)
        if mlp is not None:
            return mlp._diag(X, dtype, out, backend, kind)
        from ..backends.reference_network import compute_diagonal
        return compute_diagonal(self, X, kind, dtype=dtype, out=out, backend=backend)

def _layer_name(layer):
    if isinstance(layer, Elementwise):
        return type(layer.activation).__name__
    return type(layer).__name__


def _flat_layers(serial):
    out = []
    for layer in serial.layers:
        out.extend(_flat_layers(layer) if isinstance(layer, Serial) else [layer])
    return out


class Serial(KernelMethods, Layer):
    """Layers applied in order: an infinitely wide network.

    Its kernel methods :meth:`nngp`, :meth:`ntk`, :meth:`kernels`, :meth:`nngp_diag`
    and :meth:`ntk_diag` take the keyword-only options of :class:`ntkfast.MLP`
    (``dtype``, ``out``, ``tile``, ``n_jobs``, ``backend``, ``progress``, ``resume``);
    :class:`KernelMethods` says which engine runs them."""

    kind = "combinator"

    def __init__(self, *layers):
        self.layers = tuple(as_layer(l, f"serial: layer {i}") for i, l in enumerate(layers))

    def _name(self, where, i):
        return f"{where + ' ' if where else ''}layer {i} ({_layer_name(self.layers[i])})"

    def output_spatial(self, spatial, where=""):
        for i, layer in enumerate(self.layers):
            spatial = layer.output_spatial(spatial, self._name(where, i))
        return spatial

    def output_meta(self, meta, where=""):
        for i, layer in enumerate(self.layers):
            meta = layer.output_meta(meta, self._name(where, i))
        return meta

    @property
    def mixes_positions(self):
        return any(l.mixes_positions for l in self.layers)

    def kernel(self, state):
        for layer in self.layers:
            state = layer.kernel(state)
        return state

    def describe(self):
        return {"layer": "Serial", "layers": [l.describe() for l in self.layers]}

    def __repr__(self):
        return "serial(" + ", ".join(map(repr, self.layers)) + ")"

    # -- the kernel methods (the same options as MLP's) ------------------------------
    @_doc(_NNGP_DOC, formula=_NETWORK_FORMULA)
    def nngp(self, X, Z=None, *, dtype=None, out=None, tile=None, n_jobs=None,
             backend="auto", progress=False, resume=True):
        return self._compute(X, Z, True, False, dtype=dtype, out=out, tile=tile,
                             n_jobs=n_jobs, backend=backend, progress=progress,
                             resume=resume)[0]

    @_doc(_NTK_DOC, formula=_NETWORK_FORMULA)
    def ntk(self, X, Z=None, *, dtype=None, out=None, tile=None, n_jobs=None,
            backend="auto", progress=False, resume=True):
        return self._compute(X, Z, False, True, dtype=dtype, out=out, tile=tile,
                             n_jobs=n_jobs, backend=backend, progress=progress,
                             resume=resume)[1]

    @_doc(_KERNELS_DOC, extra="", extra_returns="")
    def kernels(self, X, Z=None, *, dtype=None, out=None, tile=None, n_jobs=None,
                backend="auto", progress=False, resume=True):
        nngp, ntk = self._compute(X, Z, True, True, dtype=dtype, out=out, tile=tile,
                                  n_jobs=n_jobs, backend=backend, progress=progress,
                                  resume=resume)
        return Kernels(nngp, ntk)

    @_doc(_DIAG_DOC, name="nngp", symbol="Σ")
    def nngp_diag(self, X, *, dtype=None, out=None, tile=None, n_jobs=None, backend="auto",
                  progress=False):
        check_diag_options(tile, n_jobs)
        return self._diag(X, dtype, out, backend, 0)

    @_doc(_DIAG_DOC, name="ntk", symbol="Θ")
    def ntk_diag(self, X, *, dtype=None, out=None, tile=None, n_jobs=None, backend="auto",
                 progress=False):
        check_diag_options(tile, n_jobs)
        return self._diag(X, dtype, out, backend, 1)

    def finite(self, width, seed=0, **kw):
        """The finite-width network of this architecture, parameters drawn N(0, 1) from
        ``seed`` (see :func:`ntkfast.finite_layers.finite_network_for`; keywords
        ``input_shape``, ``n_out``); its empirical NTK converges to :meth:`ntk` as
        ``width`` grows (Jacot et al. 2018, Theorem 1)."""
        from ..finite_layers import finite_network_for
        return finite_network_for(self, width, seed=seed, **kw)


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
