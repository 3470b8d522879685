"""Kernel (ridge) regression and the Gaussian-process posterior by Cholesky.

With K = k(X, X) + (ridge + jitter)·I = L Lᵀ (LAPACK ``potrf`` via
:func:`scipy.linalg.cho_factor`):

    mean      f(Z)    = k(Z, X) α,            α = K⁻¹ y
    variance  σ²(z)   = k(z, z) − ‖L⁻¹ k(X, z)‖²
    covariance C(Z,Z') = k(Z, Z') − (L⁻¹ k(X, Z))ᵀ (L⁻¹ k(X, Z'))
    LOO       y_i − f₋ᵢ(x_i) = [K⁻¹ y]_i / [K⁻¹]_ii

This is the t = ∞ limit of gradient flow with the NTK (see
:mod:`ntkfast.solve.dynamics`) and, with the NNGP kernel, the exact GP posterior.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple, Optional

import numpy as np
import scipy.linalg as sla

from .mixed_precision import MixedPrecision, fit_mixed, plan_route
from ._checks import (_TILE, NotPositiveDefiniteError, as_cross_kernel, as_ridge,
                      as_square_kernel, as_targets, as_vector, clip_variance, symmetric_psd)
from ._compat import check_fitted, fit_if_given

__all__ = ["KernelRegression", "RidgePath", "JitterWarning", "NotPositiveDefiniteError",
           "MixedPrecision"]

#: jitter tried after a failed factorisation, relative to the mean diagonal of K + ridge·I
JITTERS = (1e-10, 1e-8, 1e-6)
_BLOCK = 2048  # test points per triangular solve in variance()


class JitterWarning(RuntimeWarning):
    """Jitter was added to the diagonal to make the Cholesky factorisation succeed."""


class RidgePath(NamedTuple):
    """Results for each ridge r of a path (leading axis = ridges).

    ``alpha`` (R, N[, k]) dual coefficients (K + rI)⁻¹y; ``loo_residuals``
    (R, N[, k]) y_i − f₋ᵢ(x_i); ``loo_mse`` (R,) their mean square (over points
    and outputs); ``predictions`` (R, M[, k]) or None without ``k_test_train``.
    """

    ridges: np.ndarray
    alpha: np.ndarray
    loo_residuals: np.ndarray
    loo_mse: np.ndarray
    predictions: Optional[np.ndarray]


def _restore_lower(a, diag):
    """Undo a failed in-place lower factorisation of the symmetric F-ordered ``a``.

    LAPACK ``potrf(lower)`` never touches the strict upper triangle, so it still
    holds the input: copy it back into the lower triangle tile by tile (no N×N
    temporary) and reset the diagonal.
    """
    n = a.shape[0]
    for j0 in range(0, n, _TILE):
        j1 = min(j0 + _TILE, n)
        blk = a[j0:j1, j0:j1]
        il = np.tril_indices(j1 - j0, -1)
        blk[il] = blk.T[il]
        for i0 in range(j1, n, _TILE):
            i1 = min(i0 + _TILE, n)
            a[i0:i1, j0:j1] = a[j0:j1, i0:i1].T
    a[np.diag_indices(n)] = diag


class KernelRegression:
    """Kernel ridge regression / GP posterior from one Cholesky factorisation.

    Parameters
    ----------
    k_train_train : (N, N) array or memmap
        Symmetric PSD Gram matrix k(X, X) (only one triangle is read by LAPACK;
        symmetry is checked to √eps·max|diag|).
    y_train : (N,) or (N, k) array
        Targets; 1-D targets give 1-D predictions.
    ridge : float >= 0
        Added to the diagonal: K + ridge·I (the GP observation-noise variance).
    overwrite : bool
        False: factor one Fortran-ordered copy (the only N×N array allocated).
        True: factor ``k_train_train`` in place (it must be writable, e.g. an
        ``np.memmap`` opened 'r+'; non-contiguous or non-float input is still
        copied); afterwards one triangle holds L and the diagonal is changed, so
        the original K is gone (:meth:`ridge_path` then raises).  A failed
        attempt is undone from the untouched triangle before adding jitter.

    If the factorisation fails, jitter j·mean(diag(K + ridge·I)) is added for
    j in :data:`JITTERS` (with a :class:`JitterWarning` giving the amount);
    if all fail, :class:`NotPositiveDefiniteError` (a ``LinAlgError``) is raised.
    The absolute jitter used is ``self.jitter`` (0.0 if none).

    mixed_precision : 'auto', True, False or :class:`MixedPrecision`
        True or a :class:`MixedPrecision` (its options: where the float64 values
        come from, e.g. ``MixedPrecision(network=net, X=X)``, and the tolerance):
        factor a float32 copy of K + ridge·I (``spotrf``; in place with
        ``overwrite=True``) and reach the float64 α by conjugate gradients
        preconditioned with it, whose residuals use float64 kernel values (see
        :mod:`ntkfast.solve.mixed_precision`).  'auto' (default): that route for a
        float64 K whose float64 factorisation does not fit in the available
        memory (a log line on the ``ntkfast.solve`` logger says why).  Then
        ``mixed_precision_info`` reports the iterations and the backward error of
        α, ``self.jitter`` is 0 (jitter only ever enters the float32 factor), and
        :attr:`factor`, :meth:`variance`, :meth:`covariance` and
        :meth:`loo_residuals` use the float32 factor (float32 accuracy).

    Two equivalent forms: ``KernelRegression(K, y, ridge=r)`` fits on construction;
    ``KernelRegression(ridge=r).fit(K, y)`` is the estimator style.
    """

    def __init__(self, k_train_train=None, y_train=None, ridge=0.0, overwrite=False,
                 mixed_precision="auto"):
        self.ridge = as_ridge(ridge)
        self.overwrite = bool(overwrite)
        self.mixed_precision = mixed_precision
        fit_if_given(self, k_train_train, y_train, "k_train_train")

    def fit(self, k_train_train, y_train):
        """Factor k_train_train + ridge·I and solve for α; returns self."""
        overwrite = self.overwrite
        self.mixed_precision_info = None
        self._eig = None
        route = plan_route(k_train_train, overwrite, self.mixed_precision)
        if route is not None:
            fit = fit_mixed(k_train_train, y_train, self.ridge, overwrite, *route)
            self.n_train, self._y, self._1d = fit.Y.shape[0], fit.Y, fit.was_1d
            self._k, self._c, self._alpha, self.jitter = None, fit.factor, fit.alpha, 0.0
            self.mixed_precision_info = fit.info
            return self
        K = as_square_kernel(k_train_train, "k_train_train")
        n = K.shape[0]
        Y, self._1d = as_targets(y_train, "y_train", n)
        self.n_train = n
        self._y = Y
        if overwrite and not K.flags.writeable:
            raise ValueError("k_train_train: overwrite=True needs a writable array (open a "
                             "memmap with mode='r+'), or use overwrite=False")
        if overwrite and (K.flags.c_contiguous or K.flags.f_contiguous):
            a = K.T if K.flags.c_contiguous else K  # F-ordered view of the same memory
            self._k = None
        else:  # one F-ordered copy; K symmetric so K.T (a plain memcpy when K is C-ordered)
            a = np.array(K.T, order="F", copy=True)
            self._k = K
        self._factor(a, K, overwrite)
        self._alpha = self._solve(Y)
        return self

    # -- factorisation ---------------------------------------------------------------
    def _factor(self, a, K, overwrite):
        n = a.shape[0]
        diag0 = np.array(np.diagonal(a), dtype=np.float64)
        mean_diag = float(diag0.mean()) + self.ridge
        self.jitter = 0.0
        last_err = None
        for attempt, rel in enumerate((0.0,) + JITTERS):
            jitter = rel * mean_diag
            if attempt:
                if not (mean_diag > 0):
                    break  # jitter relative to a non-positive diagonal cannot help
                if overwrite and self._k is None:
                    _restore_lower(a, diag0)
                else:
                    np.copyto(a, K.T)
            a[np.diag_indices(n)] = diag0 + (self.ridge + jitter)
            try:
                c, _ = sla.cho_factor(a, lower=True, overwrite_a=True, check_finite=False)
            except np.linalg.LinAlgError as exc:
                last_err = exc
                continue
            assert np.shares_memory(c, a), "cho_factor copied the matrix"
            if attempt:
                warnings.warn(
                    f"k_train_train + ridge*I is not positive definite ({last_err}); added "
                    f"jitter {jitter:.3g} (= {rel:g} x mean diagonal {mean_diag:.3g}) to the "
                    "diagonal", JitterWarning, stacklevel=3)
            self.jitter = jitter
            self._c = c
            return
        raise NotPositiveDefiniteError(
            f"k_train_train + ridge*I is not positive definite ({last_err}), even with jitter "
            f"up to {JITTERS[-1]:g} x mean diagonal ({JITTERS[-1] * mean_diag:.3g}); increase "
            "ridge, or check k_train_train (it must be a PSD Gram matrix)")

    @property
    def factor(self):
        """(c, lower=True) for :func:`scipy.linalg.cho_solve`; c's lower triangle is L."""
        return self._c, True

    def _solve(self, B):
        B = np.asarray(B, dtype=self._c.dtype)
        return sla.cho_solve((self._c, True), B, check_finite=False)

    def _whiten(self, KzX):
        """W = L⁻¹ k(X, Z), shape (N, M)."""
        B = np.array(KzX.T, dtype=self._c.dtype, order="F", copy=True)  # never the caller's
        return sla.solve_triangular(self._c, B, lower=True, check_finite=False,
                                    overwrite_b=True)

    def _out(self, A):
        return A[..., 0] if self._1d else A

    # -- predictions -----------------------------------------------------------------
    @property
    def alpha(self):
        """Dual coefficients α = (K + ridge·I)⁻¹ y, shape of y_train."""
        return self._out(self._alpha)

    def predict(self, k_test_train):
        """Posterior mean f(Z) = k(Z, X) α; (M,) or (M, k)."""
        check_fitted(self, "_alpha")
        KzX = as_cross_kernel(k_test_train, "k_test_train", self.n_train)
        return self._out(KzX @ self._alpha)

    def variance(self, k_test_train, k_test_diag):
        """Posterior variance σ²(z) = k(z, z) − k(z, X) K⁻¹ k(X, z), shape (M,).

        Processed in blocks of test points; values negative only at rounding level
        (√eps·(k(z,z) + ‖L⁻¹k(X,z)‖²)) are set to 0.
        """
        KzX = as_cross_kernel(k_test_train, "k_test_train", self.n_train)
        m = KzX.shape[0]
        d = as_vector(k_test_diag, "k_test_diag", m, "k_test_train rows")
        var = np.empty(m)
        scale = np.empty(m)
        for i in range(0, m, _BLOCK):
            W = self._whiten(KzX[i:i + _BLOCK])
            q = np.einsum("ij,ij->j", W, W)
            var[i:i + _BLOCK] = d[i:i + _BLOCK] - q
            scale[i:i + _BLOCK] = np.abs(d[i:i + _BLOCK]) + q
        return clip_variance(var, scale, np.finfo(self._c.dtype).eps, "variance")

    def covariance(self, k_test_train, k_test_test):
        """Posterior covariance C = k(Z, Z) − k(Z, X) K⁻¹ k(X, Z), (M, M), symmetric PSD.

        Symmetrised; negative eigenvalues at rounding level are clipped to 0.
        """
        KzX = as_cross_kernel(k_test_train, "k_test_train", self.n_train)
        Kzz = as_square_kernel(k_test_test, "k_test_test")
        if Kzz.shape[0] != KzX.shape[0]:
            raise ValueError(f"k_test_test: shape {Kzz.shape} does not match the "
                             f"{KzX.shape[0]} rows of k_test_train")
        W = self._whiten(KzX)
        C = np.array(Kzz, dtype=np.float64)
        C -= W.T @ W
        scale = float(np.max(np.abs(np.diagonal(Kzz)))) + float(np.max(np.einsum("ij,ij->j", W, W)))
        return symmetric_psd(C, scale, "covariance")

    # -- leave-one-out and the ridge path --------------------------------------------
    def _inverse_diagonal(self):
        """diag(K⁻¹) = column sums of (L⁻¹)², from one ``trtri`` on a copy of L."""
        trtri, = sla.get_lapack_funcs(("trtri",), (self._c,))
        inv, info = trtri(self._c, lower=1, overwrite_c=0)
        if info != 0:
            raise NotPositiveDefiniteError(f"inverting the Cholesky factor failed (info={info})")
        n = self.n_train
        out = np.empty(n)
        for j0 in range(0, n, _TILE):
            j1 = min(j0 + _TILE, n)
            blk = np.array(inv[j0:, j0:j1])
            blk[:j1 - j0][np.triu_indices(j1 - j0, 1)] = 0.0  # upper triangle: not L⁻¹
            out[j0:j1] = np.einsum("ij,ij->j", blk, blk)
        return out

    def loo_residuals(self):
        """Leave-one-out residuals y_i − f₋ᵢ(x_i) = [K⁻¹y]_i / [K⁻¹]_ii (shape of y).

        Closed form from the factor (allocates one N×N array for L⁻¹): equals
        refitting without point i, with the same ridge and jitter.
        """
        return self._out(self._alpha / self._inverse_diagonal()[:, None])

    def ridge_path(self, ridges, k_test_train=None):
        """Fit every ridge r in ``ridges`` from ONE eigendecomposition K = V Λ Vᵀ.

        α_r = V (Λ + rI)⁻¹ Vᵀ y,  [(K + rI)⁻¹]_ii = Σ_k V_ik² / (λ_k + r),
        LOO_r = α_r / diag((K + rI)⁻¹);  predictions k(Z, X) α_r.
        ``self.ridge`` and jitter are not used.  The eigendecomposition (one
        ``scipy.linalg.eigh``) is cached on the instance.  Every λ_min + r must
        exceed N·eps·λ_max, else :class:`NotPositiveDefiniteError`.
        Returns a :class:`RidgePath`.
        """
        if self._k is None:
            raise ValueError("ridge_path: needs the original k_train_train, which "
                             "overwrite=True replaced by its Cholesky factor (or the "
                             "mixed-precision route did not keep); fit with "
                             "overwrite=False, mixed_precision=False")
        r = np.atleast_1d(np.asarray(ridges, dtype=np.float64))
        if r.ndim != 1 or r.size == 0:
            raise ValueError(f"ridges: expected a non-empty 1-D sequence, got shape {r.shape}")
        for v in r:
            as_ridge(float(v), "ridges")
        KzX = None if k_test_train is None else as_cross_kernel(
            k_test_train, "k_test_train", self.n_train)
        if self._eig is None:
            self._eig = sla.eigh(self._k, check_finite=False)
        lam, V = self._eig
        n, k = self._alpha.shape
        tol = n * np.finfo(V.dtype).eps * max(float(np.max(np.abs(lam))), np.finfo(float).tiny)
        mu = lam[:, None] + r[None, :]  # (N, R)
        if mu.min() <= tol:
            bad = r[int(np.argmin(mu.min(axis=0)))]
            raise NotPositiveDefiniteError(
                f"ridges: K + r*I is singular or indefinite for r = {bad:g} (smallest "
                f"eigenvalue of k_train_train is {lam[0]:.3g}); use ridges > {tol - lam[0]:.3g}")
        inv = 1.0 / mu
        c = V.T @ np.asarray(self._y, dtype=V.dtype)  # Vᵀy, (N, k)
        alpha = (V @ (inv[:, :, None] * c[:, None, :]).reshape(n, -1)).reshape(n, r.size, k)
        dinv = np.empty((n, r.size))
        for i in range(0, n, _TILE):
            dinv[i:i + _TILE] = np.square(V[i:i + _TILE]) @ inv
        loo = alpha / dinv[:, :, None]
        loo_mse = np.mean(np.square(loo), axis=(0, 2))
        preds = None
        if KzX is not None:
            preds = (KzX @ alpha.reshape(n, -1)).reshape(-1, r.size, k).transpose(1, 0, 2)
        alpha, loo = alpha.transpose(1, 0, 2), loo.transpose(1, 0, 2)
        if self._1d:
            alpha, loo = alpha[..., 0], loo[..., 0]
            preds = None if preds is None else preds[..., 0]
        return RidgePath(r, alpha, loo, loo_mse, preds)

    def __repr__(self):
        if not hasattr(self, "_alpha"):
            return f"KernelRegression(ridge={self.ridge!r}, overwrite={self.overwrite!r})"
        mixed = ("" if self.mixed_precision_info is None else
                 f", mixed_precision=True, residual={self.mixed_precision_info.residual:.3g}")
        return (f"KernelRegression(n_train={self.n_train}, ridge={self.ridge!r}, "
                f"jitter={self.jitter:.3g}{mixed})")
