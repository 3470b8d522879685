"""Validation and small numerical helpers shared by the solvers.

Every check names the offending argument.  Kernel matrices are scanned in
square tiles so that no N×N temporary (not even a boolean mask) is created:
the solvers must work on memory-mapped Gram matrices.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np

from .._validation import as_numeric_array

from .._validation import check_nonneg_finite

_TILE = 512
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


class NotPositiveDefiniteError(np.linalg.LinAlgError):
    """The kernel matrix (plus ridge and the largest jitter tried) is not positive definite."""


def _as_real_array(a, name, allow_memmap=True):
    if not allow_memmap and isinstance(a, np.memmap):
        a = np.asarray(a)
    return as_numeric_array(a, name)


def _float(arr):
    """float32/float64 kept as is (no copy); anything else becomes float64."""
    return arr if arr.dtype in _FLOATS else arr.astype(np.float64)


def _tiles(n, m=None, tile=_TILE):
    m = n if m is None else m
    for i in range(0, n, tile):
        for j in range(0, m, tile):
            yield slice(i, min(i + tile, n)), slice(j, min(j + tile, m))


def check_finite_tiled(A, name):
    """Raise ValueError if A (2-D) holds NaN/inf; scans tiles of rows (O(tile·cols) memory)."""
    rows = max(1, (_TILE * _TILE) // max(A.shape[1], 1))
    for i in range(0, A.shape[0], rows):
        block = A[i:i + rows]
        if not np.isfinite(block).all():
            bad = i + int(np.flatnonzero(~np.isfinite(block).all(axis=1))[0])
            raise ValueError(f"{name}: row {bad} contains NaN or inf")


def as_square_kernel(K, name, visit=None):
    """Validate a Gram matrix K(X, X): 2-D, square, real, finite, symmetric.

    Returns the float32/float64 array without copying (integer input is cast to
    float64).  Symmetry is checked to max|K − Kᵀ| ≤ √eps · max|diag K| (the
    solvers read one triangle only), in tiles, together with finiteness: every
    element is read once.  NaN/inf raise a ValueError naming the first row that
    holds one.  ``visit(rows, cols, a, b)``, if given, is called for every tile
    pair a = K[rows, cols], b = K[cols, rows] (cols ≥ rows) after it was checked,
    so that a caller can copy the matrix in the same pass (a memory-mapped file
    is then read once).
    """
    arr = _as_real_array(K, name)
    arr = check_square_shape(arr, name)
    arr = _float(arr)
    n = arr.shape[0]
    diag = np.abs(np.asarray(np.diagonal(arr), dtype=np.float64))
    diag = diag[np.isfinite(diag)]  # NaN/inf are reported by the scan, with their row
    tol = np.sqrt(np.finfo(arr.dtype).eps) * max(float(np.max(diag, initial=0.0)),
                                                 np.finfo(float).tiny)
    worst = 0.0
    for r0 in range(0, n, _TILE):
        ri = slice(r0, min(r0 + _TILE, n))
        bad = []  # (row, col) of the first non-finite entry of each tile of this band
        for c0 in range(r0, n, _TILE):
            ci = slice(c0, min(c0 + _TILE, n))
            a = arr[ri, ci]
            b = a if c0 == r0 else arr[ci, ri]
            with np.errstate(invalid="ignore"):  # inf - inf: reported below
                d = np.subtract(a, b.T)
            np.abs(d, out=d)
            m = float(d.max())  # NaN/inf anywhere in a or b makes m non-finite
            if not np.isfinite(m):
                for blk, (o0, o1) in ((a, (r0, c0)), (b, (c0, r0))):
                    rows = np.flatnonzero(~np.isfinite(blk).all(axis=1))
                    if rows.size:
                        cols = np.flatnonzero(~np.isfinite(blk[rows[0]]))
                        bad.append((o0 + int(rows[0]), o1 + int(cols[0])))
                continue
            worst = max(worst, m)
            if visit is not None and not bad:
                visit(ri, ci, a, b)
        if bad:
            # rows of this band were read in full (earlier columns in earlier bands), the
            # later rows only in this band's columns: the smallest row index is the first
            r, c = min(bad)
            raise ValueError(f"{name}: row {r} contains NaN or inf (first at column {c}); "
                             "recompute the kernel or drop that point")
    if worst > tol:
        raise ValueError(f"{name}: not symmetric (max |K - K.T| = {worst:.3g} > {tol:.3g}); "
                         f"pass (K + K.T) / 2")
    return arr


def check_square_shape(arr, name):
    """``arr`` (already an array) must be a non-empty square 2-D matrix."""
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"{name}: expected a square 2-D Gram matrix K(X, X), got shape "
                         f"{arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name}: empty matrix; need at least one training point")
    return arr


def as_cross_kernel(K, name, n_train, n_rows=None, rows_name="rows"):
    """Validate a cross-kernel K(Z, X) of shape (M, n_train) (and M == n_rows if given)."""
    arr = _as_real_array(K, name)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array K(X_test, X_train) of shape "
                         f"(n_test, {n_train}), got shape {arr.shape}; use {name}[None, :] "
                         "for one test point")
    if arr.shape[1] != n_train:
        raise ValueError(f"{name}: has {arr.shape[1]} columns but there are {n_train} training "
                         f"points; expected shape (n_test, {n_train})")
    if n_rows is not None and arr.shape[0] != n_rows:
        raise ValueError(f"{name}: has {arr.shape[0]} rows but {rows_name} has {n_rows}")
    arr = _float(arr)
    check_finite_tiled(arr, name)
    return arr


def as_vector(v, name, n, n_name="the kernel"):
    """A finite 1-D float array of length n."""
    arr = _float(_as_real_array(v, name, allow_memmap=False))
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name}: expected shape ({n},) to match {n_name}, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: entry {int(np.flatnonzero(~np.isfinite(arr))[0])} is NaN "
                         "or inf")
    return arr


def as_targets(y, name, n, n_name="k_train_train"):
    """Targets of shape (n,) or (n, k) → (float64 array of shape (n, k), was_1d)."""
    arr = _as_real_array(y, name, allow_memmap=False)
    if arr.ndim not in (1, 2) or arr.shape[0] != n:
        raise ValueError(f"{name}: expected shape ({n},) or ({n}, n_outputs) to match "
                         f"{n_name} ({n} points), got shape {arr.shape}")
    if arr.ndim == 2 and arr.shape[1] == 0:
        raise ValueError(f"{name}: has zero outputs (shape {arr.shape})")
    arr = np.asarray(arr, dtype=np.float64)
    if not np.isfinite(arr).all():
        bad = int(np.flatnonzero(~np.isfinite(arr.reshape(n, -1)).all(axis=1))[0])
        raise ValueError(f"{name}: row {bad} contains NaN or inf")
    was_1d = arr.ndim == 1
    return (arr[:, None] if was_1d else arr), was_1d


def as_ridge(ridge, name="ridge"):
    """A finite real ridge ≥ 0 (ValueError naming the argument otherwise)."""
    if isinstance(ridge, np.generic):
        ridge = ridge.item()
    return check_nonneg_finite(ridge, name)


def as_positive(value, name):
    v = as_ridge(value, name)
    if v <= 0:
        raise ValueError(f"{name}: must be > 0, got {value!r}")
    return v


def as_times(t, name="t"):
    """Times ≥ 0 (inf allowed) → (1-D float64 array, is_scalar)."""
    if isinstance(t, numbers.Real) and not isinstance(t, bool):
        arr, scalar = np.array([float(t)]), True
    else:
        arr = _as_real_array(t, name, allow_memmap=False)
        scalar = arr.ndim == 0
        arr = np.asarray(arr, dtype=np.float64).reshape(-1) if scalar else np.asarray(arr, float)
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError(f"{name}: expected a scalar or a non-empty 1-D array of times, got "
                             f"shape {arr.shape}")
    if np.isnan(arr).any() or (arr < 0).any():
        raise ValueError(f"{name}: times must be >= 0 (inf allowed) and not NaN, got "
                         f"{arr[np.isnan(arr) | (arr < 0)][0]!r}")
    return arr, scalar


def flow_filter(mu, zero, eta, t):
    """g_t(μ) = (1 − e^{−ημt}) / μ for each eigenvalue μ (vector) at one time t.

    Numerically zero eigenvalues (``zero`` mask) use the limit ηt for finite t.
    At t = ∞: 1/μ, and 0 on the null space (pseudo-inverse: those directions
    never move under gradient flow, and a consistent PSD kernel has
    Θ(Z, X) v = 0 there).  Uses expm1, so no cancellation for small ημt.
    """
    g = np.empty_like(mu)
    nz = ~zero
    if np.isinf(t):
        g[nz] = 1.0 / mu[nz]
        g[zero] = 0.0
    else:
        g[nz] = -np.expm1(-eta * t * mu[nz]) / mu[nz]
        g[zero] = eta * t
    return g


def symmetric_psd(C, scale, name="covariance"):
    """Symmetrise C in place and clip negative eigenvalues at rounding level.

    Rounding level: |λ| ≤ √eps · scale, where ``scale`` is the magnitude of the
    terms C was computed from.  Larger negative eigenvalues are left in place
    with a warning (they mean inconsistent kernels, not rounding).
    """
    C += C.T
    C *= 0.5
    if C.shape[0] == 0:
        return C
    w, U = np.linalg.eigh(C)
    tol = np.sqrt(np.finfo(C.dtype).eps) * max(scale, np.finfo(float).tiny)
    if w[0] < -tol:
        warnings.warn(f"{name}: has eigenvalue {w[0]:.3g} below -{tol:.3g} (rounding level); "
                      "the kernels are not mutually consistent (not jointly PSD)",
                      RuntimeWarning, stacklevel=3)
    clip = (w < 0) & (w >= -tol)
    if clip.any():
        w[clip] = 0.0
        if w[0] >= 0:  # rebuild as B Bᵀ, B = U √w: PSD by construction
            B = U * np.sqrt(w)
            C[...] = B @ B.T
        else:
            C[...] = (U * w) @ U.T
        C += C.T
        C *= 0.5
    return C


def clip_variance(var, scale, eps, name="variance"):
    """Set variances in [−√eps·scale, 0) to 0; warn (and keep) anything more negative."""
    tol = np.sqrt(eps) * np.maximum(scale, np.finfo(float).tiny)
    bad = var < -tol
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        warnings.warn(f"{name}: entry {i} is {var[i]:.3g}, negative beyond rounding level "
                      f"({tol[i]:.3g}); the test kernels are not consistent with the training "
                      "kernel", RuntimeWarning, stacklevel=3)
    var[(var < 0) & ~bad] = 0.0
    return var
