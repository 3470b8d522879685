"""Nyström kernel ridge regression with the FALKON preconditioner, on the fly from the engine.

Reference: A. Rudi, L. Carratino, L. Rosasco, "FALKON: An Optimal Large Scale
Kernel Method", NeurIPS 2017 (arXiv:1705.10958), Algorithm 1; weighted
centres (approximate leverage scores) as in its Section 3 / Appendix, with the
leverage-score estimate of Rudi, Calandriello, Carratino, Rosasco, "On Fast
Leverage Score Sampling and Optimal Learning", NeurIPS 2018.

With M centres C ⊂ X and K_nM = k(X, C), K_MM = k(C, C), the Nyström estimator
f(x) = k(x, C) α solves

    (K_nMᵀ K_nM + ridge · K_MM) α = K_nMᵀ y                              (1)

(the paper writes λ = ridge / n: (K_nMᵀK_nM/n + λ K_MM) α = K_nMᵀ y / n).
``ridge`` has the meaning of :class:`~ntkfast.solve.KernelRegression`'s: with
all points as centres (M = N) the solution is exact kernel ridge regression
f = k(·, X)(K + ridge·I)⁻¹ y.

Algorithm 1 of the paper, followed step by step (D = I for uniform centres;
for leverage-score centres sampled with probabilities p_j, D = diag(1/√(n p_j))):

    T = chol(D K_MM D + eps·M·I)           upper triangular, TᵀT = D K_MM D
    A = chol(T Tᵀ / M + λ I)               upper triangular
    B = D T⁻¹ A⁻¹                          the preconditioner (up to 1/√n)
    BᵀHB u = A⁻ᵀ( T⁻ᵀ D K_nMᵀ K_nM D T⁻¹ A⁻¹ u / n + λ A⁻¹ u )
    r = A⁻ᵀ T⁻ᵀ D K_nMᵀ y / n
    β = conjugate gradient on BᵀHB β = r;   α = D T⁻¹ A⁻¹ β

(``eps·M`` is scaled by the mean diagonal of K_MM here, since NTK values are
not O(1); if that Cholesky still fails, the jitter grows ×100 up to 1e-6 ×
the mean diagonal, with a :class:`~ntkfast.solve.JitterWarning`.)

Each CG iteration needs w = K_nMᵀ (K_nM u): the engine computes K_nM in row
blocks of ``tile`` rows and each block is used and dropped (memory O(tile·M)),
unless the whole N×M matrix fits in ``memory_budget``, in which case it is
computed once and kept.  N×N is never formed.  CG stops when the relative
residual ‖r_k‖/‖r_0‖ of the preconditioned system is ≤ ``tol`` for every output
column, or after ``maxiter`` iterations.
"""

from __future__ import annotations

import contextlib
import sys
import time
import warnings

import numpy as np
import scipy.linalg as sla

from .. import _validation as V
from ..backends import check_examples, engine_and_spec, row_stats
from ..backends.reference import diagonal_from_variances
from ._checks import NotPositiveDefiniteError, as_ridge, as_targets
from ._compat import check_fitted, fit_if_given, renamed_keywords
from .regression import JitterWarning

__all__ = ["NystromRegression"]

_KERNELS = ("ntk", "nngp")
_CENTERS = ("uniform", "leverage")
#: bytes of K_nM row block computed at once when it is not cached
_BLOCK_BYTES = 64 * 2**20
_SMALL_FACTOR = 4096


def _default_budget():
    from ..outofcore.tile_plan import total_memory
    return int(min(4 * 2**30, total_memory() // 4))


class NystromRegression:
    """Nyström kernel ridge regression solved by FALKON (preconditioned CG).

    Parameters
    ----------
    net : ntkfast.MLP
        The network whose kernel is used.
    X_train : (N, d) array, optional
        Training inputs (given with ``y_train``, :meth:`fit` runs on construction;
        ``NystromRegression(net, n_centers=M).fit(X_train, y_train)`` is the same).
        The former keyword names ``X=`` / ``y=`` still work, with a DeprecationWarning.
    y_train : (N,) or (N, k) array, optional
        Targets; 1-D targets give 1-D predictions.
    n_centers : int, 1 <= n_centers <= N
        Number M of Nyström centres (sampled from the rows of X_train, no repeats).
    ridge : float >= 0
        As in :class:`KernelRegression` (K + ridge·I when M = N); FALKON's
        λ is ridge / N.
    centers : 'uniform' | 'leverage'
        Uniform sampling without replacement, or sampling proportional to
        approximate ridge leverage scores (estimated from a uniform subset of
        2M points, one extra pass over X).
    kernel : 'ntk' | 'nngp'
    tol : float > 0
        Stop when the relative residual of the preconditioned system is ≤ tol.
    maxiter : int >= 1
        Maximum number of CG iterations (each is one pass over X).
    tile : int, optional
        Rows of X per kernel block (default: ~64 MiB blocks).
    progress : bool
        Show a tqdm progress bar (kernel pass and CG iterations).
    seed : int
        Seed of the centre sampling.
    dtype : float32 | float64, optional
        Dtype of the kernel evaluations (default follows X); CG runs in float64.
    n_jobs : int, optional
        Engine threads (default all cores).
    backend : 'auto' | 'compiled' | 'reference'
    memory_budget : int, optional
        Bytes allowed for keeping K_nM (N×M) between CG iterations (default
        min(4 GiB, RAM/4)); 0 recomputes it on the fly every iteration.

    Attributes
    ----------
    alpha_ : (M,) or (M, k)    coefficients on the centres
    centers_ : (M, d)          the centres;  center_indices_ : their rows in X
    n_iter_ : int               CG iterations run;  converged_ : bool
    residuals_ : list[float]    max relative residual over outputs after each iteration
    kernel_cached_ : bool       whether K_nM was kept in memory
    timings_ : dict             seconds spent in centre selection, factorisation, CG
    """

    @renamed_keywords(X="X_train", y="y_train")
    def __init__(self, net, X_train=None, y_train=None, n_centers=None, ridge=0.0,
                 centers="uniform", kernel="ntk", tol=1e-6, maxiter=100, tile=None,
                 progress=False, seed=0, *, dtype=None, n_jobs=None, backend="auto",
                 memory_budget=None):
        self.net = net
        self.ridge = as_ridge(ridge)
        if n_centers is not None:
            n_centers = V.check_int(n_centers, "n_centers", minimum=1)
        if centers not in _CENTERS:
            raise ValueError(f"centers: must be 'uniform' or 'leverage', got {centers!r}")
        if kernel not in _KERNELS:
            raise ValueError(f"kernel: must be 'ntk' or 'nngp', got {kernel!r}")
        tol = float(V.check_nonneg_finite(tol, "tol"))
        if tol <= 0:
            raise ValueError(f"tol: must be > 0, got {tol!r}")
        self.maxiter = V.check_int(maxiter, "maxiter", minimum=1)
        if tile is not None:
            tile = V.check_int(tile, "tile", minimum=1)
        self.n_jobs = V.check_n_jobs(n_jobs)
        self.memory_budget = None if memory_budget is None else \
            V.check_int(memory_budget, "memory_budget", minimum=0)
        self.kernel, self.tol, self.n_centers, self.tile = kernel, tol, n_centers, tile
        self.centers, self.seed, self.progress = centers, seed, bool(progress)
        self.backend, self._dtype_arg = backend, dtype
        fit_if_given(self, X_train, y_train, "X_train")

    @renamed_keywords(X="X_train", y="y_train")
    def fit(self, X_train, y_train):
        """Select the centres, build the preconditioner and run CG; returns self."""
        t_start = time.perf_counter()
        net = self.net
        X = check_examples(net, X_train, "X_train")
        n = X.shape[0]
        self.dtype = V.check_dtype(self._dtype_arg, X)
        X = X.astype(self.dtype, copy=False)
        Y, self._1d = as_targets(y_train, "y_train", n, "X_train")
        if self.n_centers is None:
            raise TypeError("NystromRegression: n_centers is required (the number M of "
                            "Nystrom centres), e.g. NystromRegression(net, n_centers=1000)")
        m = self.n_centers
        if m > n:
            raise ValueError(f"n_centers: must be <= the number of training points N = {n}, "
                             f"got {m}")
        budget = _default_budget() if self.memory_budget is None else self.memory_budget
        self.n_train = n
        self._engine, self._spec = engine_and_spec(net, X.shape[1:], self.backend,
                                                   self.n_jobs)
        itemsize = np.dtype(self.dtype).itemsize
        self._tile = self.tile or max(1, min(n, _BLOCK_BYTES // (itemsize * m)))
        self._X = X
        self._qX = self._variances(X)
        rng = np.random.default_rng(self.seed)
        self.timings_ = {}

        # 1. centres (and the weights D of the preconditioner)
        t0 = time.perf_counter()
        if self.centers == "uniform":
            idx = np.sort(rng.choice(n, size=m, replace=False))
            dw = np.ones(m)
        else:
            with _small_lapack(2 * m):
                idx, dw = self._leverage_centers(rng, m)
        self.center_indices_ = idx
        self.centers_ = np.ascontiguousarray(X[idx])
        self._qC = self._qX[:, idx]
        self.timings_["centers"] = time.perf_counter() - t0

        with _small_lapack(m):
            self._fit(Y, dw, itemsize, budget)
        self.timings_["total"] = time.perf_counter() - t_start
        self._X = self._qX = self._Knm = None  # only the centres are needed from now on
        return self

    def _fit(self, Y, dw, itemsize, budget):
        n, m = self.n_train, self.n_centers
        # 2. the preconditioner: Algorithm 1, lines 3-4
        t0 = time.perf_counter()
        lam = self.ridge / n
        Kmm = self._block(self.centers_, self._qC, None, None, symmetric=True)
        self._T, self.jitter = _chol_upper(dw[:, None] * Kmm * dw[None, :], m)
        del Kmm
        TTt = self._T @ self._T.T
        TTt /= m
        TTt[np.diag_indices(m)] += lam
        try:
            with _small_lapack(m):  # (also set around the whole fit)
                self._A = sla.cholesky(TTt, lower=False, overwrite_a=True, check_finite=False)
        except np.linalg.LinAlgError as exc:  # pragma: no cover - TTᵀ/M + λI is PD
            raise NotPositiveDefiniteError(f"FALKON preconditioner: T Tᵀ/M + λI is not "
                                           f"positive definite ({exc})") from None
        del TTt
        self._dw = dw
        self._lam = lam
        self.timings_["preconditioner"] = time.perf_counter() - t0

        # 3. K_nM kept if it fits the memory budget
        t0 = time.perf_counter()
        self._Knm = None
        self.kernel_cached_ = n * m * itemsize <= budget
        if self.kernel_cached_:
            self._Knm = self._cross(self._X, self._qX, desc="K_nM")
        self.timings_["kernel"] = time.perf_counter() - t0

        # 4. conjugate gradient on the preconditioned system
        t0 = time.perf_counter()
        beta = self._cg(Y)
        self._alpha = self._apply_B(beta)
        self.timings_["cg"] = time.perf_counter() - t0

    # -- kernel evaluation ------------------------------------------------------------
    def _variances(self, A):
        """Per-row statistics the engine needs: the MLP's layer variances (depth+1, n),
        or a layer network's self pass (``RowStats``, sliced alike)."""
        return row_stats(self._engine, self._spec, A)

    def _block(self, Xb, qx, out=None, qz=None, symmetric=False, Z=None):
        """k(Xb, Z) (symmetric: k(Xb, Xb)) via the engine, as an array of self.dtype."""
        Zb = Xb if symmetric else Z
        if out is None:
            out = np.empty((Xb.shape[0], Zb.shape[0]), dtype=self.dtype)
        Xc = np.ascontiguousarray(Xb, dtype=self.dtype)
        Zc = Xc if symmetric else np.ascontiguousarray(Zb, dtype=self.dtype)
        want_ntk = self.kernel == "ntk"
        self._engine.fill(self._spec, Xc, Zc, None if want_ntk else out,
                          out if want_ntk else None, symmetric=symmetric, dtype=self.dtype,
                          tile=None, n_jobs=self.n_jobs, qx=qx,
                          qz=qx if symmetric else qz)
        return out

    def _row_blocks(self, A, qA, desc=None):
        """Yield (r0, r1, k(A[r0:r1], C)) over row blocks; one reused buffer."""
        buf = np.empty((min(self._tile, A.shape[0]), self.n_centers), dtype=self.dtype)
        bar = _bar(self.progress and desc is not None, A.shape[0], desc, "rows")
        try:
            for r0 in range(0, A.shape[0], self._tile):
                r1 = min(r0 + self._tile, A.shape[0])
                blk = self._block(A[r0:r1], qA[:, r0:r1], out=buf[:r1 - r0], qz=self._qC,
                                  Z=self.centers_)
                yield r0, r1, blk
                if bar is not None:
                    bar.update(r1 - r0)
        finally:
            if bar is not None:
                bar.close()

    def _cross(self, A, qA, desc=None):
        out = np.empty((A.shape[0], self.n_centers), dtype=self.dtype)
        for r0, r1, blk in self._row_blocks(A, qA, desc):
            out[r0:r1] = blk
        return out

    def _knm_t(self, u, v):
        """K_nMᵀ (K_nM u + v) for u (M, k) or None and v (N, k) or None (Algorithm 1,
        ``KnM_times_vector``), in float64."""
        k = (u if u is not None else v).shape[1]
        w = np.zeros((self.n_centers, k))
        if self._Knm is not None:
            blocks = ((r0, min(r0 + self._tile, self.n_train),
                       self._Knm[r0:r0 + self._tile])
                      for r0 in range(0, self.n_train, self._tile))
        else:
            blocks = self._row_blocks(self._X, self._qX)
        for r0, r1, K in blocks:
            if K.dtype != np.float64:
                K = K.astype(np.float64)
            t = np.zeros((r1 - r0, k)) if u is None else K @ u
            if v is not None:
                t += v[r0:r1]
            w += K.T @ t
        return w

    # -- FALKON -----------------------------------------------------------------------
    def _apply_B(self, u):
        """D T⁻¹ A⁻¹ u."""
        t = sla.solve_triangular(self._A, u, lower=False, check_finite=False)
        t = sla.solve_triangular(self._T, t, lower=False, check_finite=False)
        return self._dw[:, None] * t

    def _apply_Bt(self, w):
        """A⁻ᵀ T⁻ᵀ D w."""
        t = sla.solve_triangular(self._T, self._dw[:, None] * w, lower=False, trans="T",
                                 check_finite=False)
        return sla.solve_triangular(self._A, t, lower=False, trans="T", check_finite=False)

    def _BHB(self, u):
        n = self.n_train
        Ainv_u = sla.solve_triangular(self._A, u, lower=False, check_finite=False)
        t = sla.solve_triangular(self._T, Ainv_u, lower=False, check_finite=False)
        w = self._knm_t(self._dw[:, None] * t, None) / n
        w = sla.solve_triangular(self._T, self._dw[:, None] * w, lower=False, trans="T",
                                 check_finite=False)
        w += self._lam * Ainv_u
        return sla.solve_triangular(self._A, w, lower=False, trans="T", check_finite=False)

    def _cg(self, Y):
        """Conjugate gradient on BᵀHB β = r, one column per output (own step sizes)."""
        n = self.n_train
        b = self._apply_Bt(self._knm_t(None, Y / n))
        x = np.zeros_like(b)
        r = b.copy()
        p = r.copy()
        rs = np.einsum("ij,ij->j", r, r)
        bnorm = np.sqrt(rs)
        bnorm[bnorm == 0] = 1.0
        active = np.sqrt(rs) / bnorm > self.tol
        self.residuals_ = []
        self.n_iter_ = 0
        bar = _bar(self.progress, self.maxiter, "FALKON CG", "it")
        try:
            while active.any() and self.n_iter_ < self.maxiter:
                Ap = self._BHB(p)
                pAp = np.einsum("ij,ij->j", p, Ap)
                step = np.where(active & (pAp > 0), rs / np.where(pAp > 0, pAp, 1.0), 0.0)
                x += step * p
                r -= step * Ap
                rs_new = np.einsum("ij,ij->j", r, r)
                rel = np.sqrt(rs_new) / bnorm
                self.n_iter_ += 1
                self.residuals_.append(float(rel.max()))
                active &= (rel > self.tol) & (pAp > 0)
                p = r + np.where(rs > 0, rs_new / np.where(rs > 0, rs, 1.0), 0.0) * p
                rs = rs_new
                if bar is not None:
                    bar.set_postfix_str(f"residual {rel.max():.2e}", refresh=False)
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        final = self.residuals_[-1] if self.residuals_ else 0.0
        self.converged_ = final <= self.tol
        if not self.converged_:
            warnings.warn(f"NystromRegression: CG stopped after maxiter={self.maxiter} "
                          f"iterations with relative residual {final:.3g} > tol={self.tol:g}; "
                          "increase maxiter or tol", RuntimeWarning, stacklevel=3)
        return x

    # -- centres by approximate leverage scores ------------------------------------------
    def _leverage_centers(self, rng, m):
        """Sample m rows ∝ approximate ridge leverage scores; returns (indices, D weights).

        ℓ_i(λ) = [K (K + λnI)⁻¹]_ii is estimated from a uniform subset J of R = min(N, 2M)
        rows as  ℓ̃_i = (K_ii − K_iJ (K_JJ + λ R I)⁻¹ K_Ji) / (λ n)  (Rudi et al. 2018);
        λ is floored at 1e-6 · mean K_ii / n so the estimate stays informative for tiny ridges.
        """
        n = self.n_train
        R = min(n, 2 * m)
        J = np.sort(rng.choice(n, size=R, replace=False))
        XJ = np.ascontiguousarray(self._X[J])
        qJ = self._qX[:, J]
        if hasattr(self._qX, "ntk"):  # a layer network's RowStats carry the diagonals
            sig, theta = self._qX.nngp, self._qX.ntk
        else:
            sig, theta = diagonal_from_variances(self._spec, self._X, self._qX)
        kdiag = np.asarray(theta if self.kernel == "ntk" else sig, dtype=np.float64)
        mean_diag = float(kdiag.mean())
        lam = max(self.ridge / n, 1e-6 * mean_diag / n)
        KJJ = np.array(self._block(XJ, qJ, symmetric=True), dtype=np.float64)
        KJJ[np.diag_indices(R)] += lam * R
        L, _ = _chol_upper(KJJ, 0, add=False)
        scores = np.empty(n)
        tile = max(1, min(n, _BLOCK_BYTES // (8 * R)))
        buf = np.empty((min(tile, n), R), dtype=self.dtype)
        bar = _bar(self.progress, n, "leverage scores", "rows")
        for r0 in range(0, n, tile):
            r1 = min(r0 + tile, n)
            K = self._block(self._X[r0:r1], self._qX[:, r0:r1], out=buf[:r1 - r0],
                            qz=qJ, Z=XJ)
            W = sla.solve_triangular(L, np.asarray(K, dtype=np.float64).T, lower=False,
                                     trans="T", check_finite=False)
            scores[r0:r1] = kdiag[r0:r1] - np.einsum("ij,ij->j", W, W)
            if bar is not None:
                bar.update(r1 - r0)
        if bar is not None:
            bar.close()
        # true ridge leverage scores lie in (0, 1]: clip the estimate to that range
        scores = np.clip(scores / (lam * n), 1e-12, 1.0)
        self.leverage_scores_ = scores
        p = scores / scores.sum()
        # sequential sampling without replacement ∝ p (Efraimidis–Spirakis keys)
        keys = rng.exponential(size=n) / p
        idx = np.sort(np.argpartition(keys, m - 1)[:m]) if m < n else np.arange(n)
        # D_jj = 1/√(n p_j) with p_j = π_j / M, π_j ≈ min(1, M p_j) the inclusion probability
        # (without replacement a point is picked at most once); uniform p gives D = I
        incl = np.minimum(1.0, m * p[idx])
        return idx, np.sqrt(m / (n * incl))

    # -- predictions ---------------------------------------------------------------------
    @property
    def alpha_(self):
        return self._alpha[:, 0] if self._1d else self._alpha

    def predict(self, X_test, progress=None):
        """f(X_test) = k(X_test, C) α, in row blocks; (n_test,) or (n_test, k)."""
        check_fitted(self, "_alpha")
        Xt = check_examples(self.net, X_test, "X_test", self.centers_.shape[1:])
        Xt = Xt.astype(self.dtype, copy=False)
        out = np.empty((Xt.shape[0], self._alpha.shape[1]))
        q = self._variances(Xt)
        show = self.progress if progress is None else bool(progress)
        saved, self.progress = self.progress, show
        try:
            for r0, r1, K in self._row_blocks(Xt, q, desc="predict"):
                out[r0:r1] = np.asarray(K, dtype=np.float64) @ self._alpha
        finally:
            self.progress = saved
        return out[:, 0] if self._1d else out

    def __repr__(self):
        if not hasattr(self, "_alpha"):
            return (f"NystromRegression(n_centers={self.n_centers}, ridge={self.ridge!r}, "
                    f"centers={self.centers!r}, kernel={self.kernel!r})")
        return (f"NystromRegression(n_train={self.n_train}, n_centers={self.n_centers}, "
                f"ridge={self.ridge!r}, centers={self.centers!r}, kernel={self.kernel!r}, "
                f"n_iter={self.n_iter_})")


def _small_lapack(n):
    """One BLAS thread for M < 4096: multi-threaded OpenBLAS potrf/trsm of that order is
    slower (up to 10x on a busy machine), the triangular solves with a few right-hand sides
    are memory-bound, and the work is small anyway."""
    if n >= _SMALL_FACTOR:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits
    return threadpool_limits(limits=1, user_api="blas")


def _chol_upper(K, m, add=True):
    """Upper Cholesky factor of K (+ eps·M·mean diag·I, FALKON's jitter), escalating.

    Returns (T, absolute jitter added).
    """
    K = np.array(K, dtype=np.float64, order="F")
    n = K.shape[0]
    diag = np.array(np.diagonal(K))
    mean_diag = float(diag.mean()) if n else 1.0
    scale = mean_diag if mean_diag > 0 else 1.0
    first = np.finfo(np.float64).eps * m * scale if add else 0.0
    jitters = [first] + [j * scale for j in (1e-12, 1e-10, 1e-8, 1e-6) if j * scale > first]
    last = None
    for attempt, jit in enumerate(jitters):
        A = K.copy(order="F")
        A[np.diag_indices(n)] = diag + jit
        try:
            with _small_lapack(max(n, m)):
                T = sla.cholesky(A, lower=False, overwrite_a=True, check_finite=False)
        except np.linalg.LinAlgError as exc:
            last = exc
            continue
        if attempt:
            warnings.warn(f"K_MM of the Nyström centres is not numerically positive definite "
                          f"({last}); added jitter {jit:.3g} to its diagonal", JitterWarning,
                          stacklevel=3)
        return T, jit
    raise NotPositiveDefiniteError(
        f"K_MM of the Nyström centres is not positive definite even with jitter "
        f"{jitters[-1]:.3g} ({last}); are there duplicate rows in X? Use fewer centres")


def _bar(enabled, total, desc, unit):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        warnings.warn("progress=True needs tqdm (pip install tqdm)", stacklevel=3)
        return None
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, mininterval=0.5,
                dynamic_ncols=True)
