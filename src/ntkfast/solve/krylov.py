"""Block Lanczos for f(A)·B with a symmetric PSD A = Θ + rI that is never factorised.

After m basis columns, Q (N×m, orthonormal; its span is the block Krylov space
span{B, AB, A²B, …}) and H = QᵀAQ (m×m, block tridiagonal) give

    f(A) B ≈ Q f(H) QᵀB = Q S diag(f(θ)) Sᵀ E₁R₀,      H = S diag(θ) Sᵀ,  B = Q₁R₀,

exact when f is a polynomial of degree < m/k on A's spectrum, and once the space
is invariant (then ``exhausted`` is True).  One block step costs one product
A·Q_j (N²·k flops, the only access to A) plus a full re-orthogonalisation
(classical Gram–Schmidt twice, O(N·m·k)), which keeps Q orthonormal to rounding
so that Ritz values never repeat.  Everything but the product with A runs on one
BLAS thread: these operations are small (N×m×k, m×m), and multi-threaded OpenBLAS
is several times slower on them, more so on a busy machine.  Columns of a new block whose norm after
orthogonalisation is below 1e-12·‖A‖ are dropped (deflation), so dependent
targets and small N are handled.

A-posteriori error estimate (:meth:`BlockLanczos.functions`): the difference
between the approximations from the first m and the first m' < m columns,
‖Y_m − [Y_{m'}; 0]‖ / ‖Y_m‖ (Q is orthonormal, so these are norms of the N-vectors).
It estimates the error of the m'-approximation, hence over-estimates that of the
returned m-approximation while the iteration converges.
"""

from __future__ import annotations

import contextlib

import numpy as np
import scipy.linalg as sla
import scipy.sparse.linalg as spla
from threadpoolctl import ThreadpoolController

__all__ = ["BlockLanczos", "kernel_matvec", "top_eigenpairs"]

_ROW_BYTES = 64 * 2**20  # float64 bytes of K rows upcast at once for float32 / memmap input
_DEFLATE = 1e-12
_SMALL_N = 4096


def kernel_matvec(K, shift=0.0):
    """V ↦ (K + shift·I) V in float64 for V (N, k).

    An in-memory float64 K is one BLAS GEMM; float32 or memory-mapped K is read
    in row blocks of ~64 MiB, each upcast to float64 (no N×N temporary).  One BLAS
    thread for N < 4096 (too little work per product to share).
    """
    n = K.shape[0]
    direct = (K.dtype == np.float64 and not isinstance(K, np.memmap)
              and (K.flags.c_contiguous or K.flags.f_contiguous))
    rows = max(1, _ROW_BYTES // (8 * n))

    def matvec(V):
        V = np.asarray(V, dtype=np.float64)
        with _one_thread() if n < _SMALL_N else contextlib.nullcontext():
            if direct:
                out = K @ V
            else:
                out = np.empty((n,) + V.shape[1:])
                for i in range(0, n, rows):
                    out[i:i + rows] = np.asarray(K[i:i + rows], dtype=np.float64) @ V
        if shift:
            out += shift * V
        return out

    return matvec


def top_eigenpairs(K, k, tol=0.0, which="LA"):
    """The k largest ('LA') or smallest ('SA') eigenpairs of the symmetric K by Lanczos
    (ARPACK via :func:`scipy.sparse.linalg.eigsh`, K only through products); ascending."""
    n = K.shape[0]
    mv = kernel_matvec(K)
    op = spla.LinearOperator((n, n), matvec=mv, matmat=mv, dtype=np.float64)
    v0 = np.random.default_rng(0).standard_normal(n)  # reproducible start
    w, V = spla.eigsh(op, k=k, which=which, tol=tol, v0=v0)
    order = np.argsort(w)
    return w[order], V[:, order]


_CONTROLLER = []  # one ThreadpoolController (it scans the loaded libraries once)


def _one_thread():
    if not _CONTROLLER:
        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0].limit(limits=1, user_api="blas")


def _orthonormalise(W, tol):
    """W ≈ Qn Rn with orthonormal Qn (N, kn), dropping directions with singular value ≤ tol."""
    Q, R = np.linalg.qr(W)
    U, s, Vt = np.linalg.svd(R)
    keep = s > tol
    return Q @ U[:, keep], s[keep, None] * Vt[keep]


class BlockLanczos:
    """Orthonormal basis of the block Krylov space of A = (matvec) started at B (N, k).

    ``size``: number m of basis columns whose projection H[:m, :m] is complete;
    ``exhausted``: the space is invariant under A (every f(A)B is then exact).
    """

    def __init__(self, matvec, B):
        B = np.asarray(B, dtype=np.float64)
        n, k = B.shape
        self._mv, self.n, self.k = matvec, n, k
        bnorm = float(np.linalg.norm(B, 2)) if B.size else 0.0
        Q1, self._R0 = _orthonormalise(B, 1e-14 * bnorm)
        cap = min(n, max(8 * Q1.shape[1], 64))
        self._Q = np.empty((n, cap), order="F")
        self._H = np.zeros((cap, cap))
        k1 = Q1.shape[1]
        self._Q[:, :k1] = Q1
        self._cur = (0, k1)  # columns of the block whose product A·Q_j is next
        self.size = 0
        self.exhausted = k1 == 0
        self.anorm = 0.0  # running lower bound on ‖A‖ (largest ‖A q‖ seen)
        self.matvecs = 0  # block products A·Q_j computed

    def _grow(self, need):
        cap = self._Q.shape[1]
        if need <= cap:
            return
        new = min(self.n + self.k, max(need, 2 * cap))
        Q = np.empty((self.n, new), order="F")
        Q[:, :cap] = self._Q
        H = np.zeros((new, new))
        H[:cap, :cap] = self._H
        self._Q, self._H = Q, H

    def step(self):
        """One block step: H gains the diagonal block of Q_j, Q the next block."""
        if self.exhausted:
            return
        j0, j1 = self._cur
        Qj = self._Q[:, j0:j1]
        W = self._mv(Qj)
        self.matvecs += 1
        self.anorm = max(self.anorm, float(np.sqrt(np.max(np.einsum("ij,ij->j", W, W)))))
        with _one_thread():
            A = Qj.T @ W
            self._H[j0:j1, j0:j1] = 0.5 * (A + A.T)
            Qa = self._Q[:, :j1]
            for _ in range(2):  # full re-orthogonalisation, classical Gram-Schmidt twice
                W -= Qa @ (Qa.T @ W)
            self.size = j1
            Qn, Bn = _orthonormalise(W, _DEFLATE * self.anorm)
        kn = Qn.shape[1]
        if kn == 0 or j1 >= self.n:
            self.exhausted = True
            return
        self._grow(j1 + kn)
        self._Q[:, j1:j1 + kn] = Qn
        self._H[j1:j1 + kn, j0:j1] = Bn
        self._H[j0:j1, j1:j1 + kn] = Bn.T
        self._cur = (j1, j1 + kn)

    def advance(self, m):
        """Step until ``size`` ≥ m or the space is exhausted."""
        while self.size < m and not self.exhausted:
            self.step()

    @property
    def block_size(self):
        return self._cur[1] - self._cur[0]

    def basis(self, m=None):
        """Q[:, :m] (a view)."""
        return self._Q[:, :self.size if m is None else m]

    def ritz(self, m=None):
        """Ritz values θ (ascending) and vectors S of H[:m, :m]."""
        m = self.size if m is None else m
        return sla.eigh(self._H[:m, :m], check_finite=False)

    def functions(self, fns, m=None):
        """Coefficients in the basis of f(A)B for each f in ``fns``.

        Each f maps the Ritz values θ (m,) to an (m, T) array (T functions at once,
        e.g. one per time).  Returns a list of (m, T, k) arrays Y with
        f(A)B ≈ Q[:, :m] @ Y[:, t, :].
        """
        m = self.size if m is None else m
        k0 = self._R0.shape[0]
        with _one_thread():
            theta, S = self.ritz(m) if m else (np.zeros(0), np.zeros((0, 0)))
            c = S[:k0].T @ self._R0  # Sᵀ E₁ R₀, (m, k)
            out = []
            for f in fns:
                F = f(theta)
                T = F.shape[1]
                out.append((S @ (F[:, :, None] * c[:, None, :]).reshape(
                    m, T * self.k)).reshape(m, T, self.k))
        return out, theta


def relative_change(Y, Yp):
    """Per time: ‖Y − [Yp; 0]‖_F / ‖Y‖_F over the (basis, output) axes of (m, T, k) arrays."""
    D = Y.copy()
    D[:Yp.shape[0]] -= Yp
    num = np.sqrt(np.einsum("itk,itk->t", D, D))
    den = np.sqrt(np.einsum("itk,itk->t", Y, Y))
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.where(num > 0, np.inf, 0.0))
