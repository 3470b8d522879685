"""Mixed-precision exact kernel regression: a float32 Cholesky factor, a float64 answer.

With A = K + λI (K = k(X, X) in float64, λ = ridge) and M = L Lᵀ ≈ A the float32
Cholesky factor of a float32 copy of A (LAPACK ``spotrf``, in place when allowed),
α = A⁻¹y is found by the conjugate-gradient method preconditioned with M:

    x₀ = 0,  r₀ = y,  p₀ = z₀ = M⁻¹r₀
    a = rₖᵀzₖ / pₖᵀA pₖ,  xₖ₊₁ = xₖ + a pₖ,  rₖ₊₁ = rₖ − a A pₖ,
    zₖ₊₁ = M⁻¹rₖ₊₁,  pₖ₊₁ = zₖ₊₁ + (rₖ₊₁ᵀzₖ₊₁ / rₖᵀzₖ) pₖ.

When κ(A)·eps₃₂ ≪ 1 this is as fast as iterative refinement (each step gains
about −log₁₀(κ·eps₃₂) digits); unlike refinement it still converges when it is
not (jitter in M only slows it down).  Every product A v uses float64 kernel
values: read from a float64 array / ``.npy`` file, or recomputed from the network
and X by the compiled engine, in row panels of the upper triangle (each value once
per product, one panel in memory).  Each product also computes A xₖ, so rₖ is the
true residual y − A xₖ (residual replacement), not a recurrence.

Stopping rule, per output column: the normwise backward error
η = ‖r‖∞ / (‖A‖∞‖x‖∞ + ‖y‖∞) ≤ ``tol`` (default √N·eps₆₄, LAPACK ``dsposv``'s
criterion), r = y − A x from float64 products; ‖A‖∞ is measured on the first
product.  The η of the returned solution is reported (:class:`MixedPrecisionInfo`);
the forward error is at most κ(A)·η.

Convergence: each step gains about −log₁₀(κ(A)·eps₃₂) digits while κ(A) ≲ 1e6
(measured: 3 steps to η ~ 1e-17 for depth-3 ReLU NTKs with κ up to ~4e6); for
κ(A)·eps₃₂ ≳ 1 the float32 factor is a poor preconditioner (or needs jitter) and
the iteration may stall: a :class:`ConvergenceWarning` then gives the η reached.

Memory: one N×N float32 array (the factor; the input itself with ``overwrite=True``),
one panel of float64 kernel values (≤ :data:`PANEL_BYTES`) and O(N) vectors.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from typing import NamedTuple, Optional

import numpy as np
import scipy.linalg.lapack as lapack

from ._checks import (NotPositiveDefiniteError, _as_real_array, as_square_kernel, as_targets,
                      check_square_shape)

__all__ = ["MixedPrecision", "MixedPrecisionInfo", "ConvergenceWarning", "JITTERS32",
           "available_memory"]

log = logging.getLogger("ntkfast.solve")

#: jitter tried (in order) when the float32 factorisation fails, relative to the mean
#: diagonal of K + ridge·I.  It changes the preconditioner M only, never the float64
#: system: the float32 roundoff of K is already ~6e-8 × max|K|.
JITTERS32 = (1e-6, 1e-5, 1e-4)
#: float64 kernel values held at once (one row panel of the upper triangle)
PANEL_BYTES = 256 * 2**20
#: stop when the backward error has not halved in this many steps
STALL_STEPS = 5
#: "auto" picks the mixed route when the float64 route needs more than this fraction
#: of the available memory
MEMORY_FRACTION = 0.8


class ConvergenceWarning(RuntimeWarning):
    """The mixed-precision solve stopped (stagnation or ``max_iter``) above its tolerance."""


def available_memory() -> int:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``; else half
    of physical memory)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    from ..outofcore.tile_plan import total_memory
    return total_memory() // 2


@dataclass(frozen=True)
class MixedPrecision:
    """Options of the mixed-precision route of :class:`KernelRegression`.

    Where the float64 values of K for the residuals come from (at most one):

    - ``network`` and ``X``: recomputed tile by tile, ``getattr(network, kind)(...)``
      with dtype float64 (``kind`` 'ntk' or 'nngp'); the diagonal blocks use the
      symmetric computation, as ``network.ntk(X)`` does;
    - ``float64_kernel``: an (N, N) float64 array, memmap or ``.npy`` path of K;
    - neither: ``k_train_train`` itself (float32 input is then solved exactly as
      given, and cannot be overwritten).

    ``tol``: stop when the backward error η ≤ tol (None: √N·eps₆₄);
    ``max_iter``: most conjugate-gradient steps; ``n_jobs``: passed to the network.

    Example (N = 50 000: a 10 GB float32 kernel file, factored in place)::

        net.ntk(X, dtype=np.float32, out="K32.npy")
        K = np.load("K32.npy", mmap_mode="r+")
        kr = KernelRegression(K, y, ridge=1e-3, overwrite=True,
                              mixed_precision=MixedPrecision(network=net, X=X))
        kr.mixed_precision_info.residual   # backward error of kr.alpha
    """

    network: object = None
    X: object = None
    kind: str = "ntk"
    float64_kernel: object = None
    tol: Optional[float] = None
    max_iter: int = 50
    n_jobs: Optional[int] = None

    def __post_init__(self):
        if (self.network is None) != (self.X is None):
            raise ValueError("mixed_precision: pass both network= and X= (the float64 kernel "
                             "is recomputed from them), or neither")
        if self.network is not None and self.float64_kernel is not None:
            raise ValueError("mixed_precision: pass network=/X= or float64_kernel=, not both")
        if self.kind not in ("ntk", "nngp"):
            raise ValueError(f"mixed_precision: kind must be 'ntk' or 'nngp', got {self.kind!r}")
        if self.tol is not None and not (0 < float(self.tol) < 1):
            raise ValueError(f"mixed_precision: tol must be in (0, 1), got {self.tol!r}")
        if int(self.max_iter) < 1:
            raise ValueError(f"mixed_precision: max_iter must be >= 1, got {self.max_iter!r}")


class MixedPrecisionInfo(NamedTuple):
    """What the mixed-precision route did (``KernelRegression.mixed_precision_info``).

    ``reason``: why it was used; ``source``: where the float64 values came from;
    ``n_iter``: conjugate-gradient steps = passes over the float64 kernel values;
    ``residual``: backward error η of the returned α (max over outputs);
    ``tol``: the target η; ``converged``: residual ≤ tol;
    ``preconditioner_jitter``: absolute jitter in the float32 factor only;
    ``history``: η after each step (max over outputs);
    ``forward_error``: ‖M⁻¹r‖∞ / ‖α‖∞ (max over outputs), an estimate of the relative
    error of α (M⁻¹ ≈ A⁻¹), from one float32 solve with the final residual.
    """

    reason: str
    source: str
    n_iter: int
    residual: float
    tol: float
    converged: bool
    preconditioner_jitter: float
    history: tuple
    forward_error: float


class MixedFit(NamedTuple):
    factor: np.ndarray
    alpha: np.ndarray
    Y: np.ndarray
    was_1d: bool
    info: MixedPrecisionInfo


# -- route -------------------------------------------------------------------------------
def plan_route(K, overwrite, option):
    """(MixedPrecision, reason) for the mixed route, or None for the direct one.

    ``option``: "auto", True, False or a :class:`MixedPrecision`.  "auto" chooses the
    mixed route for a float64 (or integer) K whose direct float64 factorisation needs
    more than :data:`MEMORY_FRACTION` of :func:`available_memory`.
    """
    if isinstance(option, MixedPrecision):
        return option, "asked for (mixed_precision=MixedPrecision(...))"
    if option is True:
        return MixedPrecision(), "asked for (mixed_precision=True)"
    if option is False:
        return None
    if not (isinstance(option, str) and option == "auto"):
        raise ValueError(f"mixed_precision: expected 'auto', True, False or a MixedPrecision, "
                         f"got {option!r}")
    dtype = getattr(K, "dtype", None)
    shape = getattr(K, "shape", ())
    if dtype is None or len(shape) != 2 or shape[0] != shape[1] or dtype == np.float32:
        return None  # float32 input keeps its float32 route; bad shapes error there
    n = shape[0]
    in_place = (overwrite and dtype == np.float64 and getattr(K, "flags", None) is not None
                and K.flags.writeable and (K.flags.c_contiguous or K.flags.f_contiguous))
    need = 0 if in_place and not isinstance(K, np.memmap) else 8 * n * n
    avail = available_memory()
    if need <= MEMORY_FRACTION * avail:
        return None
    reason = (f"auto: the float64 factorisation needs {need / 1e9:.3g} GB, more than "
              f"{MEMORY_FRACTION:g} x the {avail / 1e9:.3g} GB available; the float32 factor "
              f"needs {4 * n * n / 1e9:.3g} GB")
    return MixedPrecision(), reason


# -- float64 kernel values -----------------------------------------------------------------
class _Panels:
    """K (float64) as row panels of its upper triangle: (i0, i1, K[I, I], K[I, i1:])."""

    def __init__(self, n):
        self.n = n
        h = max(64, PANEL_BYTES // (8 * max(n, 1)))
        self.rows = min(n, h if h < 256 else (h // 256) * 256)

    def panels(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def matmul(self, V, with_row_norms=False):
        """(K V, row sums of |K| or None), float64, one pass over the panels."""
        n = self.n
        out = np.zeros((n, V.shape[1]))
        absrow = np.zeros(n) if with_row_norms else None
        for i0, i1, D, R in self.panels():
            out[i0:i1] += D @ V[i0:i1]
            if R.shape[1]:
                out[i0:i1] += R @ V[i1:]
                out[i1:] += R.T @ V[i0:i1]
            if with_row_norms:
                absrow[i0:i1] += np.abs(D).sum(axis=1)
                if R.shape[1]:
                    A = np.abs(R)
                    absrow[i0:i1] += A.sum(axis=1)
                    absrow[i1:] += A.sum(axis=0)
            if with_row_norms:  # the first pass also checks the values
                for blk, c0 in ((D, i0), (R, i1)):
                    if not np.isfinite(blk).all():
                        r = int(np.flatnonzero(~np.isfinite(blk).all(axis=1))[0])
                        c = int(np.flatnonzero(~np.isfinite(blk[r]))[0])
                        raise ValueError(
                            f"mixed_precision: the float64 kernel ({self.describe()}) has NaN "
                            f"or inf in row {i0 + r} (column {c0 + c})")
        return out, absrow


class _ArrayPanels(_Panels):
    def __init__(self, arr, label):
        super().__init__(arr.shape[0])
        self.arr, self.label = arr, label

    def describe(self):
        return self.label

    def panels(self):
        from ..outofcore.io import drop_pages
        a, n = self.arr, self.n
        for i0 in range(0, n, self.rows):
            i1 = min(i0 + self.rows, n)
            yield (i0, i1, np.asarray(a[i0:i1, i0:i1], dtype=np.float64),
                   np.asarray(a[i0:i1, i1:], dtype=np.float64))
            drop_pages(a)


class _NetworkPanels(_Panels):
    def __init__(self, network, X, kind, n_jobs):
        super().__init__(X.shape[0])
        self.fn = getattr(network, kind)
        self.X, self.kind, self.n_jobs = X, kind, n_jobs
        self.net = network

    def describe(self):
        return f"{self.kind} of {self.net!r} recomputed from X"

    def panels(self):
        X, n, f = self.X, self.n, self.fn
        for i0 in range(0, n, self.rows):
            i1 = min(i0 + self.rows, n)
            D = f(X[i0:i1], dtype=np.float64, n_jobs=self.n_jobs)
            R = (f(X[i0:i1], X[i1:], dtype=np.float64, n_jobs=self.n_jobs) if i1 < n
                 else np.zeros((i1 - i0, 0)))
            yield i0, i1, D, R


def _source(opt, K, n, name):
    """The float64 values of K as :class:`_Panels`, with shape checks naming the argument."""
    if opt.network is not None:
        X = opt.X
        shape = getattr(X, "shape", None)
        if shape is None or len(shape) < 2:
            raise ValueError(f"mixed_precision: X must be an array of inputs (N, ...) "
                             f"with N = {n} rows, got {type(X).__name__} of shape {shape}")
        if shape[0] != n:
            raise ValueError(f"mixed_precision: X has {shape[0]} rows but {name} is {n}x{n}; "
                             "pass the X the kernel was computed from")
        if not hasattr(opt.network, opt.kind):
            raise ValueError(f"mixed_precision: network has no method {opt.kind!r}")
        return _NetworkPanels(opt.network, X, opt.kind, opt.n_jobs)
    if opt.float64_kernel is not None:
        src = opt.float64_kernel
        label = "float64_kernel"
        if isinstance(src, (str, os.PathLike)):
            label = f"float64_kernel {os.fspath(src)!r}"
            src = np.load(src, mmap_mode="r")
        src = _as_real_array(src, "mixed_precision.float64_kernel")
        if src.shape != (n, n):
            raise ValueError(f"mixed_precision: {label} has shape {src.shape} but {name} is "
                             f"{n}x{n}; both must be K(X, X) of the same X")
        if src.dtype != np.float64:
            raise ValueError(f"mixed_precision: {label} has dtype {src.dtype}; it must hold "
                             "the float64 values (or pass network= and X=)")
        return _ArrayPanels(src, label)
    return _ArrayPanels(K, f"{name} itself")


# -- the float32 factor ----------------------------------------------------------------------
def _float32_copy(K, name):
    """Validate K (one pass over it, see ``as_square_kernel``) while copying it into a
    new Fortran-ordered float32 array; memory-mapped pages are released as they go."""
    from ..outofcore.io import drop_pages
    n = K.shape[0]
    a = np.empty((n, n), dtype=np.float32, order="F")

    def visit(ri, ci, t, u):
        a[ri, ci] = t
        if ci.start != ri.start:
            a[ci, ri] = u
        if ci.stop == n:
            drop_pages(K)

    as_square_kernel(K, name, visit=visit)
    return a


def _factor32(a, diag0, ridge, restore):
    """spotrf in place on ``a`` with jitter escalation (JITTERS32); returns the jitter."""
    from .regression import JitterWarning, _restore_lower
    n = a.shape[0]
    mean_diag = float(diag0.mean()) + ridge
    last = None
    for attempt, rel in enumerate((0.0,) + JITTERS32):
        if attempt:
            if not mean_diag > 0:
                break
            restore()
        jitter = rel * mean_diag
        a[np.diag_indices(n)] = diag0 + (ridge + jitter)
        c, info = lapack.spotrf(a, lower=1, overwrite_a=1, clean=0)
        assert np.shares_memory(c, a), "spotrf copied the matrix"
        if info == 0:
            if attempt:
                warnings.warn(
                    f"the float32 copy of k_train_train + ridge*I is not positive definite "
                    f"({last}); added jitter {jitter:.3g} (= {rel:g} x mean diagonal "
                    f"{mean_diag:.3g}) to the float32 preconditioner only: the float64 system "
                    "solved is unchanged", JitterWarning, stacklevel=4)
            return jitter
        if info < 0:  # pragma: no cover - argument error
            raise ValueError(f"spotrf: illegal argument {-info}")
        last = f"spotrf failed at column {info - 1}"
    raise NotPositiveDefiniteError(
        f"the float32 copy of k_train_train + ridge*I is not positive definite ({last}), "
        f"even with jitter up to {JITTERS32[-1]:g} x mean diagonal; increase ridge, or check "
        "k_train_train (it must be a PSD Gram matrix)")


# -- the solve -------------------------------------------------------------------------------
def _pcg(panels, ridge, a, Y, tol, max_iter):
    """Preconditioned CG (module docstring) for all columns of Y at once."""
    k = Y.shape[1]

    def msolve(R):
        s = np.max(np.abs(R), axis=0)
        s[s == 0] = 1.0
        B = np.asfortranarray(R / s, dtype=np.float32)
        Z, info = lapack.spotrs(a, B, lower=1)
        if info != 0:  # pragma: no cover
            raise ValueError(f"spotrs: illegal argument {-info}")
        return np.asarray(Z, dtype=np.float64) * s

    ynorm = np.max(np.abs(Y), axis=0)
    anorm = None

    def eta(r, x):
        den = anorm * np.max(np.abs(x), axis=0) + ynorm
        den[den == 0] = 1.0
        return np.max(np.abs(r), axis=0) / den

    # x₀ = 0, so r₀ = y needs no product; the first step gives x₁ = a M⁻¹y
    x = np.zeros_like(Y)
    r = Y.copy()
    z = msolve(r)
    p = z.copy()
    rz = np.einsum("ij,ij->j", r, z)
    done = ynorm == 0
    history = []
    best, since = np.inf, 0
    it = 0
    for it in range(1, max_iter + 1):
        if anorm is None:  # first product: also ‖K‖∞ and the NaN/inf check of the values
            W, absrow = panels.matmul(p, with_row_norms=True)
            anorm = float(np.max(absrow)) + ridge
            W = np.hstack([np.zeros_like(p), W])
        else:
            W, _ = panels.matmul(np.hstack([x, p]))
            r = Y - W[:, :k] - ridge * x  # residual replacement: the true y − A x
        q = W[:, k:] + ridge * p
        pq = np.einsum("ij,ij->j", p, q)
        if np.any((pq <= 0) & ~done):
            raise NotPositiveDefiniteError(
                "k_train_train + ridge*I is not positive definite in float64 (conjugate "
                "gradients found pᵀAp <= 0); increase ridge")
        step = np.where(done, 0.0, rz / np.where(pq > 0, pq, 1.0))
        x = x + step * p
        r_old = r
        r = r - step * q
        e = eta(r, x)
        history.append(float(e.max()))
        log.info("mixed precision: step %d, backward error %.3g (tol %.3g)", it, history[-1],
                 tol)
        done = e <= tol
        if done.all():
            break
        if history[-1] < 0.5 * best:
            best, since = history[-1], 0
        else:
            since += 1
            if since >= STALL_STEPS:  # no halving of η: rounding floor reached
                break
        z = msolve(r)
        rz_new = np.einsum("ij,ij->j", r, z)
        # flexible (Polak-Ribiere) beta: M⁻¹ is applied in float32, so it is not exactly
        # a fixed linear operator; this keeps the conjugacy that matters (Notay 2000)
        beta = (rz_new - np.einsum("ij,ij->j", r_old, z)) / np.where(rz != 0, rz, 1.0)
        p = z + beta * p
        rz = rz_new
    den = np.max(np.abs(x), axis=0)
    ferr = np.max(np.abs(msolve(r)), axis=0) / np.where(den > 0, den, 1.0)
    return x, e, it, history, float(ferr.max())


def fit_mixed(K_in, y_train, ridge, overwrite, opt, reason, name="k_train_train"):
    """The mixed-precision fit: validate, factor in float32, solve in float64."""
    K = check_square_shape(_as_real_array(K_in, name), name)
    n = K.shape[0]
    Y, was_1d = as_targets(y_train, "y_train", n)
    panels = _source(opt, K, n, name)
    own_values = isinstance(panels, _ArrayPanels) and panels.arr is K
    if overwrite and own_values and K.dtype == np.float32:
        raise ValueError(f"{name}: overwrite=True would destroy the values the float64 "
                         "residuals need; pass mixed_precision=MixedPrecision(network=..., "
                         "X=...) or float64_kernel=..., or overwrite=False")
    in_place = (overwrite and K.dtype == np.float32 and K.flags.writeable
                and (K.flags.c_contiguous or K.flags.f_contiguous))
    if overwrite and not K.flags.writeable and K.dtype == np.float32:
        raise ValueError(f"{name}: overwrite=True needs a writable array (open a memmap with "
                         "mode='r+'), or use overwrite=False")
    if in_place:
        as_square_kernel(K, name)  # one read; spotrf then works on resident pages
        a = K.T if K.flags.c_contiguous else K
    else:
        a = _float32_copy(K, name)
    source = panels.describe()
    log.info("KernelRegression: mixed precision (float32 factor, float64 residuals from %s); "
             "%s", source, reason)
    diag0 = np.array(np.diagonal(a), dtype=np.float64)
    jitter = _factor32(a, diag0, ridge, restore=lambda: _restore(a, diag0))
    log.info("mixed precision: float32 factor of the %dx%d matrix done", n, n)
    tol = float(opt.tol) if opt.tol is not None else np.sqrt(n) * np.finfo(np.float64).eps
    x, e, it, history, ferr = _pcg(panels, ridge, a, Y, tol, int(opt.max_iter))
    res = float(e.max())
    if not res <= tol:
        warnings.warn(f"mixed precision: stopped after {it} steps at backward error {res:.3g} "
                      f"> tol {tol:.3g} (history {['%.2g' % h for h in history]}); the system "
                      "is too ill-conditioned for float32 preconditioning: increase ridge or "
                      "max_iter, or loosen tol", ConvergenceWarning, stacklevel=3)
    info = MixedPrecisionInfo(reason, source, it, res, tol, res <= tol, jitter, tuple(history),
                              ferr)
    return MixedFit(a, x, Y, was_1d, info)


def _restore(a, diag0):
    from .regression import _restore_lower
    _restore_lower(a, diag0.astype(a.dtype))
