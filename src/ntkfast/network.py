"""Fully-connected networks of infinite width: their NNGP kernel Σ and NTK Θ.

The network is ``Dense, [Activation, Dense] * depth`` (the last Dense is the
readout), with the conventions of neural-tangents' ``stax`` (the recursion is
spelled out in :mod:`ntkfast._spec`).  References: Jacot,
Gabriel & Hongler (2018), "Neural Tangent Kernel"; Lee et al. (2018), "Deep
neural networks as Gaussian processes".
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

from . import _validation as V
from ._spec import RecursionSpec
from .backends import get_backend

__all__ = ["MLP", "Kernels"]


def __dir__():  # the API, not this module's imports
    return list(__all__)


class Kernels(NamedTuple):
    """The NNGP kernel Σ and the NTK Θ from one pass (either may be None)."""

    nngp: np.ndarray | None
    ntk: np.ndarray | None


def _doc(template, **fields):
    """Set a method's docstring from a shared template (one text for MLP and networks)."""
    def decorate(func):
        func.__doc__ = template.format(**{"inputs": _INPUTS_DOC, "options": _OPTIONS_DOC,
                                          **fields})
        return func
    return decorate


#: Parameters shared by the kernel methods of MLP and of ``nk.serial`` networks.
_OPTIONS_DOC = """\
    dtype : {None, 'float32', 'float64'}, optional
        Dtype of the result and of the arithmetic; default: float32 for float32
        inputs, float64 for anything else.
    out : None, ndarray or path ending in '.npy', optional
        None: a new array.  An array of shape (N, M) and ``dtype``: filled in place
        (it must not share memory with X or Z).  A path: the kernel is written to
        that file block by block, out of core, and returned as a read-only memory
        map; an interrupted run resumes (see ``resume``).  :meth:`kernels` takes a
        pair (nngp, ntk) of arrays or of paths.
    tile : int, optional
        Block edge in rows (default: chosen from the cache and memory budget).
    n_jobs : int, optional
        Threads.  None or -1: every core this process may use; k > 0: k threads
        (at most the cores); -k: all but k - 1.  (The convention of the whole
        library, see :mod:`ntkfast._threads`.)
    backend : {'auto', 'compiled', 'numba', 'cuda', 'reference'}
        'auto': the compiled engine (closed-form activations and every layer it
        runs), Numba quadrature for other activations, NumPy layer rules for the
        rest; 'reference': the plain NumPy implementation (the test oracle).
    progress : bool
        Show a progress bar on stderr.
    resume : bool
        With a path ``out``: continue an interrupted run of the same computation
        (default); False deletes the partial output and starts over."""

_INPUTS_DOC = """\
    X : array_like, shape (N, d) (networks: also (N, L, C) or (N, H, W, C))
        Inputs, one example per row (channels last).
    Z : array_like, shape (M, ...), optional
        Second inputs.  None: K(X, X), computed on the blocks on and above the
        diagonal and mirrored, so it is exactly symmetric."""

_NNGP_DOC = """The NNGP kernel Σ(X, Z): the covariance of the network's output at initialisation.

    Σ(x, z) = E[f(x) f(z)] over the random weights and biases, for one output unit;
    as the widths grow the network is the Gaussian process GP(0, Σ) (Lee et al. 2018).

    {formula}

    Parameters
    ----------
{inputs}
{options}

    Returns
    -------
    ndarray, shape (N, M)
        Σ(X, Z) (``out`` itself when one is given).
    """

_NTK_DOC = """The neural tangent kernel Θ(X, Z) of the infinitely wide network.

    Θ(x, z) = E[⟨∂f(x)/∂θ, ∂f(z)/∂θ⟩] over the initialisation, for one output unit;
    at infinite width it stays constant during training, so gradient flow on the
    squared loss is kernel regression with Θ (Jacot et al. 2018).

    {formula}

    Parameters
    ----------
{inputs}
{options}

    Returns
    -------
    ndarray, shape (N, M)
        Θ(X, Z) (``out`` itself when one is given).
    """

_KERNELS_DOC = """Σ(X, Z) and Θ(X, Z) from one pass (see :meth:`nngp` and :meth:`ntk`).

    Parameters
    ----------
{inputs}
{options}{extra}

    Returns
    -------
    Kernels
        The named pair ``Kernels(nngp=Σ, ntk=Θ)``.{extra_returns}
    """

_DIAG_DOC = """{symbol}(x_i, x_i) for every row of X, in O(N · depth) time.

    The same values as the diagonal of ``{name}(X)``, bitwise (θ = 0 exactly).

    Parameters
    ----------
    X : array_like, shape (N, d) (networks: also (N, L, C) or (N, H, W, C))
        Inputs, one example per row.
    dtype : {{None, 'float32', 'float64'}}, optional
        As for :meth:`{name}`.
    out : ndarray, shape (N,), optional
        Filled in place and returned.
    tile, n_jobs, backend, progress
        As for :meth:`{name}` (accepted for uniformity; only ``backend`` is used).

    Returns
    -------
    ndarray, shape (N,)
    """

_MLP_NNGP_FORMULA = """Recursion ('ntk' parameterization): Σ¹ = σ_w² x·z/d + σ_b², then per
    [φ, Dense] step Σ' = σ_w² E[φ(u)φ(v)] + σ_b², (u, v) ~ N(0, [[q(x), Σ], [Σ, q(z)]])."""

_MLP_NTK_FORMULA = """Recursion ('ntk' parameterization): Θ¹ = Σ¹, then per [φ, Dense] step
    Θ' = Θ · Σ̇ + Σ', where Σ' is the NNGP step of :meth:`nngp` and
    Σ̇ = σ_w² E[φ'(u)φ'(v)] ('standard': Θ' = n_in Σ_in + σ_w² Θ_in, + 1 with a bias)."""

_MULTIDEPTH_DOC = """
    depths : int or sequence of int, optional
        Return the kernels of these depths instead, all from the one recursion pass
        (:func:`ntkfast.multidepth.kernels_multi`; ``out`` may then be the
        ``MultiKernels`` of an earlier call, whose arrays are overwritten: no new
        memory; ``progress`` stays off).
    frozen_layers : int or sequence of int, optional
        The NTKs with the bottom k Dense layers frozen, for each k given (Arora et
        al. 2020's ``fix_dep``; default 0, the ordinary NTK); without ``depths``,
        for depths 1 … ``depth``."""


class _TinyRowRescaling:
    """An engine whose ``fill`` goes through the exact rescaling of tiny rows
    (:func:`ntkfast.backends.reference.fill_rescaled`), for engines that do not do it
    themselves (the compiled and reference engines do; this wraps e.g. 'cuda')."""

    def __init__(self, engine):
        self.engine = engine
        self.name = getattr(engine, "name", type(engine).__name__)

    def fill(self, spec, Xb, Zb, out_nngp, out_ntk, **kw):
        from .backends.reference import fill_rescaled
        return fill_rescaled(self.engine.fill, spec, Xb, Zb, out_nngp, out_ntk, **kw)


class MLP:
    """An infinitely wide fully-connected network.

    Parameters
    ----------
    depth : int, 0 … 10 000
        Number of hidden layers (``depth=0`` is a linear model: Σ = σ_w² x·z/d + σ_b²);
        at most :data:`ntkfast._validation.MAX_DEPTH`.
    activation : str or Activation
        'relu', 'leaky_relu', 'abs', 'erf', 'gelu', 'identity' or an instance
        from :mod:`ntkfast.activations`.
    w_std, b_std : float
        σ_w and σ_b (``b_std=None``: no bias at all); finite, >= 0 and below
        √(largest float64) ≈ 1.34e154, so that σ² is finite.
    parameterization : {'ntk', 'standard'}
        'standard' (Sohl-Dickstein et al. 2020) needs the hidden ``width``; it
        changes Θ, not Σ.
    width : int, optional
        Hidden width n for the 'standard' parameterization.

    Methods :meth:`nngp`, :meth:`ntk`, :meth:`kernels` (both from one pass),
    :meth:`nngp_diag` and :meth:`ntk_diag` take ``X`` (N×d), optionally ``Z`` (M×d),
    and the keyword-only options ``dtype``, ``out``, ``tile``, ``n_jobs``,
    ``backend``, ``progress`` (and ``resume``); a misspelled option is a TypeError.

    Tiny inputs: for the positively homogeneous networks without bias (ReLU,
    LeakyReLU, Abs, ABReLU, Identity with ``b_std=None``), K(a x, b z) = a b K(x, z)
    for a, b > 0, and rows too small for the recursion in the dtype (layer variances
    below ~3e-16 in float32, ~1e-146 in float64, where q q' underflows) are rescaled
    by exact powers of two and their kernels scaled back, so any scale is exact to
    rounding.  Where no such identity holds and the result would be wrong (ReLU-like
    with a tiny bias, quadrature activations below ~1e-146), the call is rejected,
    naming the row.
    """

    def __init__(self, depth=1, activation="relu", w_std=1.0, b_std=None,
                 parameterization="ntk", width=None):
        (self.depth, self.activation, self.w_std, self.b_std,
         self.parameterization) = V.check_architecture(depth, activation, w_std, b_std,
                                                       parameterization)
        if parameterization == "standard":
            if width is None:
                raise ValueError("width: the 'standard' parameterization needs the hidden "
                                 "width, e.g. MLP(..., parameterization='standard', width=512)")
            self.width = V.check_int(width, "width", minimum=1)
        else:
            self.width = None if width is None else V.check_int(width, "width", minimum=1)

    def __repr__(self):
        args = (f"depth={self.depth}, activation={self.activation!r}, w_std={self.w_std!r}, "
                f"b_std={self.b_std!r}, parameterization={self.parameterization!r}")
        if self.width is not None:
            args += f", width={self.width!r}"
        return f"MLP({args})"

    # -- internals ---------------------------------------------------------
    def _spec(self, d) -> RecursionSpec:
        return RecursionSpec.build(self.activation, self.depth, self.w_std, self.b_std,
                                   self.parameterization, self.width, d)

    def _compute(self, X, Z, want_nngp, want_ntk, dtype=None, out=None, tile=None,
                 n_jobs=None, backend="auto", progress=False, resume=True):
        X_in, Z_in = X, Z
        X, Z, dt = V.check_pair(X, Z, dtype)
        n_threads = V.check_n_jobs(n_jobs)
        if tile is not None:
            tile = V.check_int(tile, "tile", minimum=1)
        V.check_out_targets(out, [("X", X_in), ("X", X), ("Z", Z_in), ("Z", Z)])
        engine = get_backend(backend, self.activation)
        spec = self._spec(X.shape[1])
        V.check_tiny_variances(spec, X, Z, dt)
        if getattr(engine, "name", None) not in ("compiled", "reference"):
            engine = _TinyRowRescaling(engine)  # the others do not rescale themselves
        from .outofcore.tiling import compute_gram
        try:
            return compute_gram(engine, spec, X, Z, dt, want_nngp, want_ntk, out=out,
                                tile=tile, n_jobs=n_threads, progress=progress,
                                resume=resume)
        except MemoryError as exc:
            n, m = X.shape[0], (X if Z is None else Z).shape[0]
            rows = n if Z is None else n + m
            in_ram = not any(isinstance(t, (str, os.PathLike)) for t in
                             (out if isinstance(out, (tuple, list)) else (out,)))
            kernels = (f"; the {n}×{m} output{'s' if want_nngp and want_ntk else ''} in "
                       f"RAM take {(want_nngp + want_ntk) * n * m * dt.itemsize / 1e9:.3g} GB "
                       "(out='K.npy' writes to disk instead)" if in_ram else "")
            raise MemoryError(
                f"out of memory for a depth-{self.depth} network on {n}×{m} kernels: the "
                f"per-row layer variances take (depth+1)·{rows}·8 B = "
                f"{(self.depth + 1) * rows * 8 / 1e9:.3g} GB{kernels}; reduce depth or the "
                "number of rows") from exc

    # -- public API ----------------------------------------------------------
    @_doc(_NNGP_DOC, formula=_MLP_NNGP_FORMULA)
    def nngp(self, X, Z=None, *, dtype=None, out=None, tile=None, n_jobs=None,
             backend="auto", progress=False, resume=True) -> np.ndarray:
        return self._compute(X, Z, True, False, dtype=dtype, out=out, tile=tile,
                             n_jobs=n_jobs, backend=backend, progress=progress,
                             resume=resume)[0]

    @_doc(_NTK_DOC, formula=_MLP_NTK_FORMULA)
    def ntk(self, X, Z=None, *, dtype=None, out=None, tile=None, n_jobs=None,
            backend="auto", progress=False, resume=True) -> np.ndarray:
        return self._compute(X, Z, False, True, dtype=dtype, out=out, tile=tile,
                             n_jobs=n_jobs, backend=backend, progress=progress,
                             resume=resume)[1]

    @_doc(_KERNELS_DOC, extra=_MULTIDEPTH_DOC, extra_returns="""
    MultiKernels
        With ``depths`` or ``frozen_layers``: ``{(depth, k): Kernels}``.""")
    def kernels(self, X, Z=None, *, dtype=None, out=None, tile=None, n_jobs=None,
                backend="auto", progress=False, resume=True, depths=None,
                frozen_layers=None):
        if depths is not None or frozen_layers is not None:
            from .multidepth import MultiKernels, kernels_multi
            if progress:
                raise ValueError("progress: not supported with depths=/frozen_layers= "
                                 "(one in-memory pass); leave it at its default")
            if out is not None and not isinstance(out, MultiKernels):
                raise ValueError("out: with depths=/frozen_layers= it must be the "
                                 "MultiKernels of an earlier call (its arrays are reused), "
                                 f"got {type(out).__name__}")
            return kernels_multi(self, X, Z, depths=depths,
                                 frozen_layers=0 if frozen_layers is None else frozen_layers,
                                 dtype=dtype, tile=tile, n_jobs=n_jobs, backend=backend,
                                 out=out)
        nngp, ntk = self._compute(X, Z, True, True, dtype=dtype, out=out, tile=tile,
                                  n_jobs=n_jobs, backend=backend, progress=progress,
                                  resume=resume)
        return Kernels(nngp, ntk)

    def _diag(self, X, dtype, out, backend, kind):
        """The O(N · depth) diagonal recursion (θ = 0); the same values as the diagonal
        of K(X, X) bitwise.  ``backend`` is validated only (every backend shares it)."""
        X = V.check_inputs(X, "X")
        dt = V.check_dtype(dtype, X)
        get_backend(backend, self.activation)
        from .backends.reference import diagonal_in_dtype, layer_variances
        X = X.astype(dt, copy=False)
        spec = self._spec(X.shape[1])
        V.check_tiny_variances(spec, X, None, dt)
        q = layer_variances(spec, X)
        V.check_variances(q, dt, "X")
        value = diagonal_in_dtype(spec, X, q, dt)[kind]
        if out is None:
            return value
        if not isinstance(out, np.ndarray) or out.shape != value.shape or out.dtype != dt:
            raise ValueError(f"out: the diagonal needs an array of shape {value.shape} and "
                             f"dtype {dt}")
        if not out.flags.writeable:
            raise ValueError("out: the output array is read-only")
        out[...] = value
        return out

    def finite(self, width, seed=0, **kw):
        """The finite-width network of this architecture (see :mod:`ntkfast.finite`);
        keywords ``d`` (input dimension) and ``n_out`` are optional."""
        from .finite import finite_network
        return finite_network(self, width, seed, **kw)

    @_doc(_DIAG_DOC, name="nngp", symbol="Σ")
    def nngp_diag(self, X, *, dtype=None, out=None, tile=None, n_jobs=None, backend="auto",
                  progress=False) -> np.ndarray:
        V.check_diag_options(tile, n_jobs)
        return self._diag(X, dtype, out, backend, 0)

    @_doc(_DIAG_DOC, name="ntk", symbol="Θ")
    def ntk_diag(self, X, *, dtype=None, out=None, tile=None, n_jobs=None, backend="auto",
                 progress=False) -> np.ndarray:
        V.check_diag_options(tile, n_jobs)
        return self._diag(X, dtype, out, backend, 1)
