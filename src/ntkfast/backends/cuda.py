"""``backend='cuda'``: numba.cuda kernels for the closed-form activations.

Two kernels per block, in the block's dtype (float32 or float64):

1. ``gemm``: G = X Zᵀ, shared-memory tiled (TILE × TILE tiles of X and Z staged in
   shared memory, one output element per thread);
2. ``recursion``: one thread per output element (upper triangle only for K(X, X),
   written to both (i, j) and (j, i), so the result is exactly symmetric) runs the
   whole depth recursion of :mod:`ntkfast._spec` with the closed-form rules of
   :mod:`ntkfast.activations` (ReLU/LeakyReLU/Abs/ABReLU, Erf, GELU, Identity; the
   textbook angle θ = atan2(√max(q q' − Σ², 0), Σ) as the reference backend).

The diagonal of K(X, X) is the O(N) host recursion (θ = 0), as in the other engines.
Activations without a closed form (quadrature, Sin/Cos) are refused.

Testing: CI has no GPU; ``tests/test_cuda_sim.py`` runs these kernels under Numba's
CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, a separate process).  Nothing here has
been run on a real GPU by the authors of this module (see the README).
"""

from __future__ import annotations

import math

import numpy as np

from ..activations import ABReLU, Erf, GELU, Identity
from .reference import diagonal_from_variances

#: edge of the shared-memory GEMM tile and of the recursion thread block
TILE = 16

_KERNELS: dict = {}


try:  # a module global, so that the CUDA simulator can swap it inside the kernels
    from numba import cuda
except ImportError:  # pragma: no cover - numba is an optional extra
    cuda = None


def _cuda():
    if cuda is None:
        try:
            from numba import cuda as _c  # noqa: F401 - re-raise the real import error
        except ImportError as exc:
            raise ImportError("backend='cuda' needs numba with CUDA support: "
                              "pip install 'ntkfast[cuda]'") from exc
    return cuda


def cuda_available() -> bool:
    try:
        return bool(_cuda().is_available())
    except Exception:  # noqa: BLE001 - no driver, no toolkit, …
        return False


def _act_params(act):
    """(code, p0, p1, p2, p3): 0 Identity, 1 ABReLU(a, b), 2 Erf(a, b, c), 3 GELU."""
    if isinstance(act, ABReLU):
        return 1, act.a, act.b, 0.0, 0.0
    if isinstance(act, Erf):
        return 2, act.a, act.b, act.c, 0.0
    if isinstance(act, GELU):
        return 3, 0.0, 0.0, 0.0, 0.0
    if isinstance(act, Identity):
        return 0, 0.0, 0.0, 0.0, 0.0
    return None


def _make_kernels(nbtype):
    @cuda.jit
    def gemm(A, B, C):
        """C = A Bᵀ; A (n, d), B (m, d)."""
        sA = cuda.shared.array((TILE, TILE), dtype=nbtype)
        sB = cuda.shared.array((TILE, TILE), dtype=nbtype)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        row = cuda.blockIdx.y * TILE + ty
        col = cuda.blockIdx.x * TILE + tx
        n, d = A.shape
        m = B.shape[0]
        acc = nbtype(0)
        for t0 in range(0, d, TILE):
            if row < n and t0 + tx < d:
                sA[ty, tx] = A[row, t0 + tx]
            else:
                sA[ty, tx] = 0
            if cuda.blockIdx.x * TILE + ty < m and t0 + tx < d:
                sB[ty, tx] = B[cuda.blockIdx.x * TILE + ty, t0 + tx]
            else:
                sB[ty, tx] = 0
            cuda.syncthreads()
            for k in range(TILE):
                acc += sA[ty, k] * sB[tx, k]
            cuda.syncthreads()
        if row < n and col < m:
            C[row, col] = acc

    @cuda.jit(device=True)
    def rule(code, p0, p1, p2, S, a, b):
        if code == 0:
            return S, nbtype(1)
        if code == 1:
            D = a * b - S * S
            if D < 0:
                D = nbtype(0)
            sp = math.sqrt(D)
            if sp == 0 and S == 0:
                th = nbtype(math.pi / 2)
            else:
                th = math.atan2(sp, S)
            factor = (p0 - p1) * (p0 - p1) / nbtype(2 * math.pi)
            ed = (p0 * p0 + p1 * p1) / 2 - factor * th
            return factor * sp + ed * S, ed
        if code == 2:
            b2 = p1 * p1
            s = b2 * S
            qa = b2 * a
            qb = b2 * b
            D = qa * qb - s * s
            if D < 0:
                D = nbtype(0)
            det = 1 + 2 * (qa + qb) + 4 * D
            root = math.sqrt(det)
            e = p0 * p0 * nbtype(2 / math.pi) * math.atan2(2 * s, root) + p2 * p2
            return e, p0 * p0 * b2 * nbtype(4 / math.pi) / root
        # GELU
        pp1 = (a + 1) * (b + 1)
        prod = a * b
        D = prod - S * S
        if D < 0:
            D = nbtype(0)
        delta2 = 1 + a + b + D
        delta = math.sqrt(delta2)
        ang = math.atan2(S, delta)
        tp = nbtype(2 * math.pi)
        e = ((S * S + prod * delta2) / (pp1 * delta) + S * ang) / tp + nbtype(0.25) * S
        first = (1 / delta2 + (1 - prod) / pp1 + 1) * S / delta / tp
        return e, first + nbtype(0.25) + ang / tp

    @cuda.jit
    def recursion(G, qx, qz, sym, depth, code, p0, p1, p2, inv_d, w2, b2, lam0, lam, mu,
                  outS, outT):
        r, c = cuda.grid(2)
        n, m = G.shape
        if r >= n or c >= m or (sym and c < r):
            return
        g = G[r, c] * inv_d
        S = w2 * g + b2
        T = lam0 * g + mu
        for l in range(depth):
            e, ed = rule(code, p0, p1, p2, S, qx[l, r], qz[l, c])
            T = w2 * ed * T + lam * e + mu
            S = w2 * e + b2
        outS[r, c] = S
        outT[r, c] = T
        if sym:
            outS[c, r] = S
            outT[c, r] = T

    return gemm, recursion


def _kernels(dtype):
    _cuda()
    key = np.dtype(dtype)
    if key not in _KERNELS:
        import numba
        nbtype = numba.float64 if key == np.float64 else numba.float32
        _KERNELS[key] = _make_kernels(nbtype)
    return _KERNELS[key]


class CudaEngine:
    """The 'cuda' backend (see module docstring).  Raises at construction when no CUDA
    GPU is visible or the activation has no closed form here."""

    name = "cuda"

    def __init__(self, activation):
        if not cuda_available():
            raise RuntimeError(
                "backend='cuda': no CUDA GPU is available (numba.cuda.is_available() is "
                "False: no NVIDIA driver/device, or numba without CUDA support). Use "
                "backend='auto' (CPU: compiled / numba / reference).")
        if _act_params(activation) is None:
            raise ValueError(f"backend='cuda': no CUDA kernel for {activation!r}; supported: "
                             "ReLU, LeakyReLU, Abs, ABReLU, Erf, GELU, Identity (use "
                             "backend='numba' or 'auto' for the others)")

    def fill(self, spec, Xb, Zb, out_nngp, out_ntk, *, symmetric, dtype, tile=None,
             n_jobs=1, qx, qz):
        _cuda()
        dtype = np.dtype(dtype)
        if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError(f"backend='cuda': dtype must be float32 or float64, got {dtype}")
        gemm, recursion = _kernels(dtype)
        code, p0, p1, p2, _ = _act_params(spec.activation)
        Xc = np.ascontiguousarray(Xb, dtype=dtype)
        Zc = Xc if symmetric else np.ascontiguousarray(Zb, dtype=dtype)
        n, m = Xc.shape[0], Zc.shape[0]
        dX = cuda.to_device(Xc)
        dZ = dX if symmetric else cuda.to_device(Zc)
        dqx = cuda.to_device(np.ascontiguousarray(qx, dtype=dtype))
        dqz = dqx if symmetric else cuda.to_device(np.ascontiguousarray(qz, dtype=dtype))
        dG = cuda.device_array((n, m), dtype=dtype)
        dS = cuda.device_array((n, m), dtype=dtype)
        dT = cuda.device_array((n, m), dtype=dtype)
        grid = ((m + TILE - 1) // TILE, (n + TILE - 1) // TILE)
        gemm[grid, (TILE, TILE)](dX, dZ, dG)
        t = dtype.type
        grid2 = ((n + TILE - 1) // TILE, (m + TILE - 1) // TILE)
        recursion[grid2, (TILE, TILE)](dG, dqx, dqz, bool(symmetric), spec.depth, code,
                                       t(p0), t(p1), t(p2), t(1.0 / Xc.shape[1]), t(spec.w2),
                                       t(spec.b2), t(spec.lam0), t(spec.lam), t(spec.mu),
                                       dS, dT)
        if out_nngp is not None:
            np.copyto(out_nngp, dS.copy_to_host())
        if out_ntk is not None:
            np.copyto(out_ntk, dT.copy_to_host())
        if symmetric:
            sig_diag, ntk_diag = diagonal_from_variances(spec, Xc, np.asarray(qx, np.float64))
            idx = np.arange(n)
            if out_nngp is not None:
                out_nngp[idx, idx] = sig_diag
            if out_ntk is not None:
                out_ntk[idx, idx] = ntk_diag
