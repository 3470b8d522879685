"""Plain vectorised NumPy backend: the readable oracle for every other backend.

It evaluates the recursion of :mod:`ntkfast._spec` on whole matrices, one
activation rule per layer (:meth:`Activation.kernel_rule`).  It is simple, not
fast, and it uses the textbook angle ``atan2(√max(qx qz − Σ², 0), Σ)``.

It also holds the exact rescaling of tiny rows shared by the engines
(:func:`fill_rescaled`, :func:`diagonal_in_dtype`; issue 17).
"""

from __future__ import annotations

import math

import numpy as np

from .._spec import RecursionSpec
from .._validation import variance_window
from ..activations import ABReLU, Identity


def row_sq_norms(X: np.ndarray) -> np.ndarray:
    """‖x_i‖² in float64, in row blocks of ≤ 4 MB (no full float64 copy of X)."""
    out = np.empty(X.shape[0])
    block = max(1, (1 << 22) // (8 * max(1, X.shape[1])))
    for i in range(0, X.shape[0], block):
        xb = np.asarray(X[i:i + block], dtype=np.float64)
        out[i:i + block] = np.einsum("ij,ij->i", xb, xb)
    return out


def layer_variances(spec: RecursionSpec, X: np.ndarray) -> np.ndarray:
    """q^l(x) = Σ^l(x, x) for l = 1 … depth+1, shape (depth+1, N), float64.

    q¹ = σ_w² ‖x‖²/d + σ_b²,  q^{l+1} = σ_w² E[φ(u)²] + σ_b² with u ~ N(0, q^l).
    """
    out = np.empty((spec.depth + 1, X.shape[0]))
    # Overflow (huge inputs) gives inf/NaN here; callers reject it with a clear error
    # (_validation.check_variances) rather than warn from deep inside the recursion.
    with np.errstate(over="ignore", invalid="ignore"):
        out[0] = row_sq_norms(X) / X.shape[1] * spec.w2 + spec.b2
        for layer in range(spec.depth):
            e, _ = spec.activation.diag_rule(out[layer])
            out[layer + 1] = spec.w2 * e + spec.b2
    return out


def diagonal(spec: RecursionSpec, X: np.ndarray, dtype) -> tuple[np.ndarray, np.ndarray]:
    """(Σ(x_i, x_i), Θ(x_i, x_i)) in O(N · depth), computed in float64."""
    sigma, theta = diagonal_from_variances(spec, X, layer_variances(spec, X))
    return sigma.astype(dtype), theta.astype(dtype)


def diagonal_from_variances(spec: RecursionSpec, X: np.ndarray, q: np.ndarray):
    """Float64 (Σ, Θ) diagonals given q = layer_variances(spec, X).

    Θ¹ = λ₀ ‖x‖²/d + μ,  Θ^{l+1} = σ_w² Ė(q^l) Θ^l + λ E(q^l) + μ  (θ = 0).
    """
    g = row_sq_norms(X) / X.shape[1]
    theta = spec.lam0 * g + spec.mu
    for layer in range(spec.depth):
        e, edot = spec.activation.diag_rule(q[layer])
        theta = spec.w2 * edot * theta + spec.lam * e + spec.mu
    return q[-1], theta


def gram(spec: RecursionSpec, X: np.ndarray, Z: np.ndarray | None, dtype):
    """Full (Σ, Θ) matrices for rows of X against rows of Z (Z=None: X against X).

    Rows too small for the recursion in ``dtype`` are rescaled exactly when the network
    is positively homogeneous (:func:`tiny_row_exponents`), as in every engine.
    """
    symmetric = Z is None
    X = np.asarray(X, dtype=dtype)
    Zm = X if symmetric else np.asarray(Z, dtype=dtype)
    qx = layer_variances(spec, X)
    qz = qx if symmetric else layer_variances(spec, Zm)
    kx = tiny_row_exponents(spec, X, qx, dtype)
    kz = kx if symmetric else tiny_row_exponents(spec, Zm, qz, dtype)
    if kx is None and kz is None:
        return _gram(spec, X, Zm, symmetric, dtype, qx, qz)
    X, qx = rescale_rows(spec, X, qx, kx, dtype)
    if symmetric:
        Zm, qz = X, qx
    else:
        Zm, qz = rescale_rows(spec, Zm, qz, kz, dtype)
    sigma, theta = _gram(spec, X, Zm, symmetric, dtype, qx, qz)
    unscale(sigma, kx, kz)
    unscale(theta, kx, kz)
    return sigma, theta


def _gram(spec, X, Zm, symmetric, dtype, qx, qz):
    d = X.shape[1]
    qx = qx.astype(dtype)
    qz = qx if symmetric else qz.astype(dtype)
    g = (X @ Zm.T) / dtype(d)
    sigma = spec.w2 * g + spec.b2
    if symmetric:
        # The diagonal is q exactly (θ = 0), as in every other backend.
        np.fill_diagonal(sigma, qx[0])
        np.fill_diagonal(g, row_sq_norms(X) / d)
    theta = spec.lam0 * g + spec.mu
    for layer in range(spec.depth):
        e, edot = spec.activation.kernel_rule(sigma, qx[layer][:, None], qz[layer][None, :])
        theta = spec.w2 * edot * theta + spec.lam * e + spec.mu
        sigma = spec.w2 * e + spec.b2
        if symmetric:
            np.fill_diagonal(sigma, qx[layer + 1])
    sigma = sigma.astype(dtype, copy=False)
    theta = theta.astype(dtype, copy=False)
    if symmetric:
        # Symmetrise exactly (the GEMM need not be bitwise symmetric).
        iu = np.triu_indices(sigma.shape[0], 1)
        sigma.T[iu] = sigma[iu]
        theta.T[iu] = theta[iu]
    return sigma, theta


# -- tiny inputs (issue 17) ---------------------------------------------------------
#
# The recursion forms q(x)·q(z) and Σ² (and, in the compiled engine, D = q q' − Σ²).
# When the layer variances q are so small that these products underflow, the angle
# between the inputs is lost: a ReLU network without bias on rows of norm ~1e-12
# (float32) or ~1e-90 (float64) came out 17-25 % wrong, with no warning.
#
# The exact cure for positively homogeneous networks: φ(a u) = a φ(u) for a > 0
# (ABReLU: ReLU, LeakyReLU, Abs; Identity) and no bias (σ_b² = 0 and μ = 0, i.e.
# ``b_std=None``, or ``b_std=0`` in the 'ntk' parameterization).  Then, by induction
# over the layers, for a, b > 0
#
#     Σ¹(a x, b z) = σ_w² (a x)·(b z)/d = a b Σ¹(x, z),      q¹(a x) = a² q¹(x),
#     E[φ(a u) φ(b v)] = a b E[φ(u) φ(v)],   E[φ'(a u) φ'(b v)] = E[φ'(u) φ'(v)]
#         (u, v) ~ N(0, [[q_x, Σ], [Σ, q_z]]), φ' homogeneous of degree 0,
#     Σ^{l+1} = σ_w² E + 0  →  a b Σ^{l+1},
#     Θ¹ = λ₀ g + 0,  Θ^{l+1} = σ_w² Ė Θ^l + λ E + 0  →  a b Θ,
#
# in both parameterizations (λ₀, λ are constants; μ = 0 without a bias): K(a x, b z) =
# a b K(x, z).  So a row x_i whose variances leave the safe window is replaced by
# 2^{k_i} x_i (a power of two: exact, also for subnormal entries) and the kernel entries
# are multiplied back by 2^{−k_i − k_j} (np.ldexp: exact, or one correct rounding where
# the true value is subnormal).  Rows inside the window are untouched (bit for bit).
#
# With a bias, or for activations that are not homogeneous, no such identity holds;
# _validation.check_tiny_variances rejects the inputs where that matters (measured
# against a 40-digit mpmath recursion: the angle-based ABReLU rules, and the quadrature
# activations, which form q q' in float64); Erf, GELU and Identity are accurate at any
# scale (smooth in Σ, no products of variances that matter).

def is_homogeneous(spec: RecursionSpec) -> bool:
    """True when K(a x, b z) = a b K(x, z) for a, b > 0 (see the comment above)."""
    return (isinstance(spec.activation, (ABReLU, Identity)) and spec.b2 == 0
            and spec.mu == 0)


def _levels(spec, X64):
    """The positive magnitudes a row's computation goes through, (depth + 3, n) float64:
    g = ‖x‖²/d, the layer variances q¹ … q^{L+1}, and Θ(x, x)."""
    q = layer_variances(spec, X64)
    _, theta = diagonal_from_variances(spec, X64, q)
    return np.vstack([row_sq_norms(X64)[None] / X64.shape[1], q, theta[None]])


def homogeneous_span(spec: RecursionSpec, d: int) -> float:
    """log2(largest / smallest positive level) of a row (:func:`_levels`): the same for
    every non-zero row of a homogeneous network, each level being ‖x‖² times a constant
    of the network.  0.0 without positive levels, ``inf`` when a level under- or
    overflows even in float64."""
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        lev = _levels(spec, np.full((1, d), 1.0))[:, 0]
        if not np.all(np.isfinite(lev)):
            return math.inf
        pos = lev[lev > 0]
        if pos.size == 0:
            return 0.0
        if pos.min() < np.finfo(np.float64).tiny:  # subnormal: ratio unreliable
            return math.inf
        return float(np.log2(pos.max()) - np.log2(pos.min()))


def tiny_row_exponents(spec: RecursionSpec, X, q, dtype):
    """Per-row exponents k (int64) such that the rows 2^{k_i} x_i compute accurately in
    ``dtype``, or None when no row needs rescaling (then nothing changes).

    A row needs it when the network is homogeneous (:func:`is_homogeneous`) and one of
    its positive layer variances ``q`` (float64, (depth + 1, n)) lies below the window
    of :func:`ntkfast._validation.variance_window`, or when it is non-zero but q¹
    underflowed to 0.  Its k centres the row's levels (:func:`_levels`) in the window
    (log scale).  Zero rows and rows that need nothing get k = 0.  Raises ValueError
    when a row's levels span more than the window (deep networks whose variance
    shrinks with depth; :func:`ntkfast._validation.check_tiny_variances` reports this
    before any work, naming depth and w_std).
    """
    if not is_homogeneous(spec) or X.shape[0] == 0:
        return None
    q_lo, q_hi = variance_window(dtype)
    small = ((q > 0) & (q < q_lo)).any(axis=0)
    zero = np.flatnonzero(q[0] == 0)
    if zero.size:
        small[zero] = np.any(np.asarray(X[zero]) != 0, axis=1)
    if not small.any():
        return None
    rows = np.flatnonzero(small)
    Xr = np.asarray(X[rows], dtype=np.float64)
    _, e = np.frexp(np.abs(Xr).max(axis=1))
    Xr = np.ldexp(Xr, -e[:, None])  # max |x| in [0.5, 1): exact
    with np.errstate(under="ignore"):
        lev = _levels(spec, Xr)
    pos = lev > 0
    has = pos.any(axis=0)
    lo = np.log2(np.where(pos, lev, np.inf).min(axis=0), where=has, out=np.zeros(len(rows)))
    hi = np.log2(np.where(pos, lev, 1.0).max(axis=0), where=has, out=np.zeros(len(rows)))
    log_lo, log_hi = math.log2(q_lo), math.log2(q_hi)
    # x → 2^j x multiplies every level by 4^j
    j = np.rint(((log_lo + log_hi) / 2 - (lo + hi) / 2) / 2).astype(np.int64)
    bad = has & ((lo + 2 * j < log_lo) | (hi + 2 * j > log_hi))
    if bad.any():
        raise ValueError(
            f"X/Z: the layer variances of this network span 2^{hi[bad][0] - lo[bad][0]:.0f}, "
            f"more than {np.dtype(dtype).name} holds accurately ({q_lo:.3g} … {q_hi:.3g}); "
            "use dtype='float64', a smaller depth, or a w_std that keeps the variance "
            "constant with depth (√2 for ReLU)")
    k = np.zeros(X.shape[0], dtype=np.int64)
    k[rows] = np.where(has, j - e, 0)
    return k


def rescale_rows(spec: RecursionSpec, X, q, k, dtype):
    """(2^k X as a ``dtype`` array, its float64 layer variances); rows with k = 0 and
    their variances are passed through unchanged.  ``k`` None: nothing to do."""
    X = np.ascontiguousarray(X, dtype=dtype)
    if k is None:
        return X, q
    rows = np.flatnonzero(k)
    if rows.size == 0:
        return X, q
    X = X.copy()
    X[rows] = np.ldexp(X[rows], k[rows, None])
    q = np.array(q, dtype=np.float64, copy=True)
    q[:, rows] = layer_variances(spec, X[rows])
    return X, q


def unscale(out, kx, kz, rows_per_pass=256):
    """out[i, j] *= 2^{−kx_i − kz_j} in place (exact; one correct rounding where the
    result is subnormal).  ``out`` None, or both exponent vectors None: nothing."""
    if out is None or (kx is None and kz is None):
        return
    n, m = out.shape
    kx = np.zeros(n, np.int64) if kx is None else kx
    kz = np.zeros(m, np.int64) if kz is None else kz
    col_scaled = bool(kz.any())
    for r0 in range(0, n, rows_per_pass):
        kr = kx[r0:r0 + rows_per_pass]
        if not col_scaled and not kr.any():
            continue
        view = out[r0:r0 + rows_per_pass]
        np.ldexp(view, -(kr[:, None] + kz[None, :]), out=view)


def fill_rescaled(fill, spec, Xb, Zb, out_nngp, out_ntk, *, symmetric, dtype, qx, qz, **kw):
    """Call an engine's ``fill`` on exactly rescaled tiny rows, then scale the block back.

    Same arguments as ``Engine.fill``.  Without a row to rescale it is ``fill`` itself
    (no copies, the same bits as before)."""
    kx = tiny_row_exponents(spec, Xb, qx, dtype)
    kz = kx if symmetric else tiny_row_exponents(spec, Zb, qz, dtype)
    if kx is None and kz is None:
        return fill(spec, Xb, Zb, out_nngp, out_ntk, symmetric=symmetric, dtype=dtype,
                    qx=qx, qz=qz, **kw)
    Xs, qxs = rescale_rows(spec, Xb, qx, kx, dtype)
    Zs, qzs = (Xs, qxs) if symmetric else rescale_rows(spec, Zb, qz, kz, dtype)
    fill(spec, Xs, Zs, out_nngp, out_ntk, symmetric=symmetric, dtype=dtype, qx=qxs,
         qz=qzs, **kw)
    unscale(out_nngp, kx, kz)
    unscale(out_ntk, kx, kz)


def diagonal_in_dtype(spec: RecursionSpec, X, q, dtype):
    """(Σ(x_i, x_i), Θ(x_i, x_i)) as ``dtype`` arrays, tiny rows rescaled as in the
    engines (the same bits as the diagonal of K(X, X))."""
    k = tiny_row_exponents(spec, X, q, dtype)
    if k is None:
        sigma, theta = diagonal_from_variances(spec, X, q)
        return sigma.astype(dtype), theta.astype(dtype)
    Xs, qs = rescale_rows(spec, X, q, k, dtype)
    sigma, theta = diagonal_from_variances(spec, Xs, qs)
    return np.ldexp(sigma.astype(dtype), -2 * k), np.ldexp(theta.astype(dtype), -2 * k)
