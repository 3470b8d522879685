"""Input checks shared by every public entry point.

Errors name the offending argument and say how to fix it.
"""

from __future__ import annotations

import errno
import math
import numbers
import os

import numpy as np

from ._threads import available_cores, check_n_jobs  # noqa: F401 - the n_jobs convention

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

#: The deepest network accepted.  The per-row layer variances take (depth + 1)·(N + M)·8
#: bytes (80 MB per 1000 rows at this depth) and the work grows linearly with depth
#: (N = 200 rows: 1.9 s at depth 10 000, 24 s at 100 000); the kernels of such deep
#: networks have long converged to their depth-independent limit.
MAX_DEPTH = 10_000
#: w_std and b_std must stay below √(largest float64) ≈ 1.34e154 so that σ² = std² is
#: finite (the recursion coefficients are float64 squares).
MAX_STD = math.sqrt(np.finfo(np.float64).max)


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
    reject_nonfinite(arr, name, "row")
    return arr


def reject_nonfinite(arr, name, what="row"):
    """ValueError naming the first example (``what``) of ``arr`` (N, ...) that holds a
    NaN or inf; checked in chunks of rows (bounded temporaries for memory maps)."""
    flat = arr.reshape(arr.shape[0], -1)
    step = max(1, (1 << 22) // max(1, flat.shape[1]))
    finite = np.concatenate([np.isfinite(flat[i:i + step]).all(axis=1)
                             for i in range(0, flat.shape[0], step)])
    if not finite.all():
        rows = np.flatnonzero(~finite)
        more = f" (and {rows.size - 1} more)" if rows.size > 1 else ""
        raise ValueError(f"{name}: {what} {rows[0]}{more} contains NaN or inf; remove or "
                         "impute non-finite values first")


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


def check_diag_options(tile, n_jobs):
    """Validate the options the ``*_diag`` methods accept for uniformity with the kernel
    methods but do not use: the same errors for the same bad values."""
    if tile is not None:
        check_int(tile, "tile", minimum=1)
    check_n_jobs(n_jobs)


def check_std(value, name, allow_none=False):
    """A σ (w_std, b_std): finite, >= 0 and below :data:`MAX_STD` (σ² must be finite)."""
    value = check_nonneg_finite(value, name, allow_none=allow_none)
    if value is not None and value >= MAX_STD:
        raise ValueError(f"{name}: must be below {MAX_STD:.3g} (its square, the variance, "
                         f"must be a finite float64), got {value!r}")
    return value


def check_architecture(depth, activation, w_std, b_std, parameterization):
    """Validated (depth, Activation, w_std, b_std, parameterization) of an MLP."""
    from .activations import get_activation

    if parameterization not in ("ntk", "standard"):
        raise ValueError(f"parameterization: must be 'ntk' or 'standard', got "
                         f"{parameterization!r}")
    depth = check_int(depth, "depth", minimum=0)
    if depth > MAX_DEPTH:
        raise ValueError(f"depth: at most {MAX_DEPTH} hidden layers are supported, got "
                         f"{depth} (memory and time grow linearly with depth: the per-row "
                         "layer variances take (depth+1)·8 bytes per row; the kernels of "
                         "much shallower networks have already reached their deep limit)")
    return (depth, get_activation(activation), check_std(w_std, "w_std"),
            check_std(b_std, "b_std", allow_none=True), parameterization)


def variance_window(dtype):
    """(q_lo, q_hi): the layer variances q the recursion handles accurately in ``dtype``.

    q_hi = √(largest float)/16 keeps q q' and Σ² finite (:func:`check_variances`);
    q_lo = √(smallest normal float / ε) keeps them normal numbers with a full mantissa,
    so that D = q q' − Σ² (the angle between the inputs) keeps its relative accuracy:
    3.1e-16 … 1.2e18 in float32, 1.0e-146 … 8.4e152 in float64.
    """
    fi = np.finfo(dtype)
    return math.sqrt(float(fi.tiny) / float(fi.eps)), math.sqrt(float(fi.max)) / 16


def check_tiny_variances(spec, X, Z, dtype):
    """Reject inputs too small for an accurate kernel (issue 17), before any work.

    * Positively homogeneous networks without bias (ReLU, LeakyReLU, Abs, ABReLU,
      Identity; see :func:`ntkfast.backends.reference.is_homogeneous`): tiny rows are
      rescaled exactly by the engines, so any input works, provided the layer
      variances of one row fit the window of :func:`variance_window` at all: a deep
      network whose variance shrinks (or grows) by a constant factor per layer, e.g.
      ReLU with w_std=1 (halving per layer), is rejected here beyond ~110 layers in
      float32 (~1000 in float64), naming depth and w_std.
    * The angle-based ABReLU rules with a bias (or the 'standard' parameterization's
      μ = 1), and the quadrature activations (Tanh, Softplus, Sigmoid, SiLU, Custom;
      they form q q' in float64): a row with a positive layer variance below q_lo
      (q_lo of float64 for the quadrature ones) gives a wrong angle: ValueError naming
      X or Z, the row and the layer.  With a bias σ_b² >= q_lo no row can be (q >= σ_b²),
      and nothing is computed.
    * Erf, GELU, Identity with a bias, Sin, Cos: smooth in Σ, accurate at any scale
      (measured against a 40-digit mpmath recursion); nothing to check.
    """
    from .activations import QuadratureActivation
    from .backends.reference import homogeneous_span, is_homogeneous, layer_variances

    act = spec.activation
    dtype = np.dtype(dtype)
    q_lo, q_hi = variance_window(dtype)
    if is_homogeneous(spec):
        span = homogeneous_span(spec, X.shape[1])
        room = math.log2(q_hi / q_lo) - 2
        if span > room:
            span_txt = "more than float64 can hold" if math.isinf(span) else \
                f"a factor 2^{span:.0f}"
            raise ValueError(
                f"depth: the layer variances of this {act!r} network of depth "
                f"{spec.depth} with w_std={math.sqrt(spec.w2):.4g} span {span_txt} "
                f"between the input and the last layer, more than {dtype.name} holds "
                f"accurately (2^{room:.0f}); use dtype='float64', a smaller depth, or a "
                "w_std that keeps the variance constant with depth (for ABReLU(a, b): "
                "w_std = √(2/(a²+b²)), i.e. √2 for ReLU)")
        return
    quadrature = isinstance(act, QuadratureActivation)
    if act.smooth and not quadrature:
        return
    if quadrature:
        q_lo = variance_window(np.float64)[0]
    if spec.b2 >= q_lo:
        return
    for name, A in (("X", X), ("Z", Z)):
        if A is None:
            continue
        for r in range(0, A.shape[0], 8192):
            block = A[r:r + 8192]
            with np.errstate(under="ignore"):
                q = layer_variances(spec, block)
            bad = (q > 0) & (q < q_lo)
            zero = q[0] == 0
            if zero.any():
                bad[0] |= zero & np.any(np.asarray(block) != 0, axis=1)
            if not bad.any():
                continue
            layer, row = np.argwhere(bad.T)[0][::-1]
            if spec.b2 > 0 and spec.mu == spec.b2 and not quadrature:
                fix = ("rescale the inputs and b_std together (the 'ntk' kernels of a "
                       "bias-carrying ReLU-like network satisfy K(s·x, s·z; s·b_std) = "
                       "s² K(x, z; b_std)), or use dtype='float64'")
            elif quadrature:
                fix = "rescale the inputs (and b_std) to a larger scale"
            else:
                fix = "rescale the inputs (and b_std), or use dtype='float64'"
            raise ValueError(
                f"{name}: row {r + row} is too small for an accurate {act!r} kernel in "
                f"{(np.dtype(np.float64) if quadrature else dtype).name} (its layer-"
                f"{layer + 1} variance {q[layer, row]:.3g} is below {q_lo:.3g}, where "
                f"the products of variances underflow and the angle between inputs is "
                f"lost); {fix}")


def _overlaps(a, b) -> bool:
    """True if the arrays share memory (or are maps of the same file)."""
    if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
        return False
    fa, fb = getattr(a, "filename", None), getattr(b, "filename", None)
    if fa and fb:
        try:
            if os.path.samefile(fa, fb):
                return True
        except OSError:
            pass
    if not np.may_share_memory(a, b):
        return False
    try:
        return bool(np.shares_memory(a, b, max_work=10**6))
    except RuntimeError:  # numpy's TooHardError: assume the worst
        return True


def _targets(out):
    if out is None:
        return []
    if isinstance(out, (tuple, list)):
        return list(out)
    return [out]


def check_out_targets(out, inputs):
    """Reject ``out=`` targets that cannot be written safely, before any work.

    ``inputs``: (name, array) pairs of everything the computation reads (the user's
    arrays and their validated versions).  Arrays that share memory with an input
    would be overwritten while being read (silently wrong kernels); the two outputs of
    a pair must not share memory either.  For ``.npy`` paths: the directory must be
    writable (a probe file is created and removed), the file must not be the file an
    input is memory-mapped from, and a pair must name two different files.
    """
    targets = _targets(out)
    arrays = [t for t in targets if isinstance(t, np.ndarray)]
    for t in arrays:
        for name, A in inputs:
            if A is not None and _overlaps(t, A):
                raise ValueError(
                    f"out: the output array shares memory with {name}; the kernel would "
                    f"overwrite {name} while reading it and return wrong values; pass a "
                    f"separate output array (or out=None), or pass {name}.copy() as the "
                    "input")
    if len(arrays) == 2 and _overlaps(arrays[0], arrays[1]):
        raise ValueError("out: the two output arrays (nngp, ntk) share memory; pass two "
                         "separate arrays")
    paths = [os.path.abspath(os.fspath(t)) for t in targets
             if isinstance(t, (str, os.PathLike))]
    for p in paths:
        check_out_path(p, inputs)
    if len(paths) == 2 and os.path.realpath(paths[0]) == os.path.realpath(paths[1]):
        raise ValueError(f"out: both kernels would go to the same file {paths[0]!r}; "
                         "pass two different paths")


def check_out_path(path, inputs=()):
    """A ``.npy`` output path: its directory writable, not the file of a mapped input."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder) or os.path.isdir(path):
        return  # reported by the tiling layer (does not exist / is a directory)
    for name, A in inputs:
        fname = getattr(A, "filename", None)
        if fname and os.path.exists(path):
            try:
                same = os.path.samefile(fname, path)
            except OSError:
                same = False
            if same:
                raise ValueError(f"out: {path!r} is the file {name} is read from; writing "
                                 "the kernel there would destroy the input; choose another "
                                 "output path")
    import tempfile
    try:
        fd, probe = tempfile.mkstemp(prefix=".ntkfast-write-test-", dir=folder)
    except OSError as exc:
        raise OSError(exc.errno or errno.EACCES,
                      f"out: cannot create files in {folder!r} "
                      f"({exc.strerror or exc}): the directory is not writable; choose a "
                      "writable location for the output") from None
    os.close(fd)
    try:
        os.unlink(probe)
    except OSError:  # pragma: no cover
        pass


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
