"""Fully-connected networks of infinite width: their NNGP kernel Σ and NTK Θ.

The network is ``Dense, [Activation, Dense] * depth`` (the last Dense is the
readout), with the conventions of neural-tangents' ``stax`` (see
``../shared/DESIGN.md`` §1 and :mod:`ntkfast._spec`).  References: Jacot,
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


class Kernels(NamedTuple):
    """The NNGP kernel Σ and the NTK Θ from one pass (either may be None)."""

    nngp: np.ndarray | None
    ntk: np.ndarray | None


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

    Every kernel method takes ``X`` (N×d) and optionally ``Z`` (M×d; ``None``
    means K(X, X), computed on tiles on and above the diagonal and mirrored, so
    it is exactly symmetric) and the keywords ``dtype`` (float32/float64,
    default follows X), ``out`` (None, an array, a ``.npy`` path — written
    out of core and resumable — or a pair of them for ``kernels``), ``tile``,
    ``n_jobs``, ``backend`` ('auto': compiled closed forms, Numba quadrature
    for other activations; or 'compiled', 'numba', 'cuda', 'reference') and
    ``progress``.  ``n_jobs``: None or -1 for all available cores, k > 0 for k
    threads (capped at the available cores), −k for all but k − 1.  An ``out`` array
    must not share memory with X or Z (nor the two arrays of a pair with each other).

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
    def kernels(self, X, Z=None, depths=None, frozen_layers=None, **kw):
        """Σ(X, Z) and Θ(X, Z) from one pass of the recursion.

        With ``depths=[...]`` and/or ``frozen_layers=[...]`` (Arora et al. 2020's
        fix_dep: Θ without the Σ terms of the bottom k Dense layers), returns a
        :class:`ntkfast.multidepth.MultiKernels` {(depth, k): Kernels} computed in
        one pass (see :func:`ntkfast.multidepth.kernels_multi`).
        """
        if depths is not None or frozen_layers is not None:
            unsupported = [k for k in ("out", "progress", "resume") if kw.get(k)]
            if unsupported or kw.get("backend", "auto") != "auto":
                raise ValueError(f"{(unsupported or ['backend'])[0]}: not supported with "
                                 "depths=/frozen_layers= (in-memory NumPy pass)")
            from .multidepth import kernels_multi
            return kernels_multi(self, X, Z, depths=depths,
                                 frozen_layers=0 if frozen_layers is None else frozen_layers,
                                 dtype=kw.get("dtype"), tile=kw.get("tile"),
                                 n_jobs=kw.get("n_jobs"))
        nngp, ntk = self._compute(X, Z, True, True, **kw)
        return Kernels(nngp, ntk)

    def nngp(self, X, Z=None, **kw) -> np.ndarray:
        """The NNGP kernel Σ(X, Z) (N×M), the covariance of the network at init."""
        return self._compute(X, Z, True, False, **kw)[0]

    def ntk(self, X, Z=None, **kw) -> np.ndarray:
        """The neural tangent kernel Θ(X, Z) (N×M)."""
        return self._compute(X, Z, False, True, **kw)[1]

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

    def nngp_diag(self, X, dtype=None, out=None, tile=None, n_jobs=None, backend="auto",
                  progress=False) -> np.ndarray:
        """Σ(x_i, x_i) for every row, O(N · depth).  Takes the keywords of the kernel
        methods for uniformity (``tile``, ``n_jobs`` and ``progress`` have no effect)."""
        return self._diag(X, dtype, out, backend, 0)

    def ntk_diag(self, X, dtype=None, out=None, tile=None, n_jobs=None, backend="auto",
                 progress=False) -> np.ndarray:
        """Θ(x_i, x_i) for every row, O(N · depth).  Takes the keywords of the kernel
        methods for uniformity (``tile``, ``n_jobs`` and ``progress`` have no effect)."""
        return self._diag(X, dtype, out, backend, 1)
