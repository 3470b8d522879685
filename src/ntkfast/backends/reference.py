"""Plain vectorised NumPy backend: the readable oracle for every other backend.

It evaluates the recursion of :mod:`ntkfast._spec` on whole matrices, one
activation rule per layer (:meth:`Activation.kernel_rule`).  It is simple, not
fast, and it uses the textbook angle ``atan2(√max(qx qz − Σ², 0), Σ)``.
"""

from __future__ import annotations

import numpy as np

from .._spec import RecursionSpec


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
    """Full (Σ, Θ) matrices for rows of X against rows of Z (Z=None: X against X)."""
    symmetric = Z is None
    X = np.asarray(X, dtype=dtype)
    Zm = X if symmetric else np.asarray(Z, dtype=dtype)
    d = X.shape[1]
    qx = layer_variances(spec, X).astype(dtype)
    qz = qx if symmetric else layer_variances(spec, Zm).astype(dtype)
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
