"""Input checks shared by every public entry point.

Errors name the offending argument and say how to fix it.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_dtype(dtype, X) -> np.dtype:
    """Resolve the computation dtype: float32/float64; default follows X."""
    if dtype is None:
        return np.dtype(np.float32) if X.dtype == np.float32 else np.dtype(np.float64)
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype: {dtype!r} is not a dtype; use 'float32' or 'float64'") from exc
    if dt not in _FLOAT_DTYPES:
        raise TypeError(f"dtype: {dt} is not supported; use 'float32' or 'float64'")
    return dt


def as_numeric_array(X, name) -> np.ndarray:
    """np.asarray(X) (memmaps kept as they are), rejecting non-numeric and complex data."""
    if isinstance(X, np.memmap):
        arr = X
    else:
        try:
            arr = np.asarray(X)
        except Exception as exc:  # ragged lists etc.
            raise TypeError(f"{name}: could not be converted to an array ({exc})") from exc
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise TypeError(f"{name}: complex input is not supported; pass the real part")
    return arr


def check_inputs(X, name="X", d=None) -> np.ndarray:
    """Return X as a 2-D C-contiguous float32/float64 array (ints → float64).

    Rejects non-2-D, empty, complex, non-numeric and non-finite input (naming the
    first bad row), and a feature dimension different from ``d``.
    """
    arr = as_numeric_array(X, name)
    if arr.ndim != 2:
        raise ValueError(
            f"{name}: expected a 2-D array of shape (n_samples, n_features), got "
            f"{arr.ndim}-D shape {arr.shape}; use {name}.reshape(len({name}), -1) "
            f"or {name}[None, :] for a single sample")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name}: empty array of shape {arr.shape}; need at least one "
                         "row and one feature")
    if d is not None and arr.shape[1] != d:
        raise ValueError(f"{name}: has {arr.shape[1]} features but X has {d}; both inputs "
                         "must have the same feature dimension")
    if arr.dtype not in _FLOAT_DTYPES:
        arr = arr.astype(np.float64)
    finite = np.concatenate([np.isfinite(arr[i:i + 65536]).all(axis=1)
                             for i in range(0, arr.shape[0], 65536)])
    if not finite.all():
        rows = np.flatnonzero(~finite)
        more = f" (and {rows.size - 1} more)" if rows.size > 1 else ""
        raise ValueError(f"{name}: row {rows[0]}{more} contains NaN or inf; remove or "
                         "impute non-finite values first")
    return arr


def check_pair(X, Z, dtype):
    """Validated (X, Z or None, dtype) of a kernel call, inputs rounded to the dtype
    (the kernels are those of the inputs as the computation sees them)."""
    X = check_inputs(X, "X")
    if Z is not None:
        Z = check_inputs(Z, "Z", d=X.shape[1])
    dt = check_dtype(dtype, X if Z is None or Z.dtype == X.dtype
                     else np.empty(0, np.result_type(X, Z)))
    return X.astype(dt, copy=False), None if Z is None else Z.astype(dt, copy=False), dt


def check_nonneg_finite(value, name, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}: must be finite and >= 0, got {value!r}")
    return value


def check_int(value, name, minimum=0):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an integer, got {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name}: must be >= {minimum}, got {value}")
    return value


def check_n_jobs(n_jobs) -> int:
    """None or -1 → all cores; k > 0 → k threads; -k → cores + 1 − k."""
    import os

    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if n_jobs is None:
        return ncpu
    n_jobs = check_int(n_jobs, "n_jobs", minimum=-(10**9))
    if n_jobs == 0:
        raise ValueError("n_jobs: must be a positive thread count, or -1 for all cores, not 0")
    return max(1, n_jobs if n_jobs > 0 else ncpu + 1 + n_jobs)


def check_architecture(depth, activation, w_std, b_std, parameterization):
    """Validated (depth, Activation, w_std, b_std, parameterization) of an MLP."""
    from .activations import get_activation

    if parameterization not in ("ntk", "standard"):
        raise ValueError(f"parameterization: must be 'ntk' or 'standard', got "
                         f"{parameterization!r}")
    return (check_int(depth, "depth", minimum=0), get_activation(activation),
            check_nonneg_finite(w_std, "w_std"),
            check_nonneg_finite(b_std, "b_std", allow_none=True), parameterization)


def check_variances(q, dtype, name="X"):
    """Reject inputs whose layer variances q^l(x) = Σ^l(x, x) would overflow the kernels.

    The recursion forms q(x)·q(z) and Σ², so every q must stay below
    √(largest float of ``dtype``) / 16; past that the result would be inf/NaN.
    """
    limit = np.sqrt(np.finfo(dtype).max) / 16
    bad = ~(q <= limit)
    if bad.any():
        layer, row = np.argwhere(bad)[0]
        raise ValueError(
            f"{name}: row {row} is too large for {np.dtype(dtype).name} kernels (its layer-{layer + 1} "
            f"variance {q[layer, row]:.3g} exceeds {limit:.3g}); rescale the inputs (or "
            "w_std/b_std), or use dtype='float64'")
