"""Gradient-flow training dynamics of an infinitely wide network (linear in its NTK).

Convention (``DESIGN.md`` §1): sum loss ½‖f(X) − y‖², learning rate η, NTK
Θ = Θ(X, X), so  df/dt = −η Θ (f − y).  With Θ = V diag(λ) Vᵀ (one ``eigh``)
and initial outputs f₀ (default 0):

    f_train(t) = y + e^{−ηΘt} (f₀ − y)
    f_test(t)  = f₀(Z) + Θ(Z, X) Θ⁻¹ (I − e^{−ηΘt}) (y − f₀(X))

Θ⁻¹(I − e^{−ηΘt}) = V diag(g_t(λ)) Vᵀ with g_t(λ) = (1 − e^{−ηλt})/λ, whose
λ → 0 limit is ηt (no division by ~0); at t = ∞, g = 1/λ and 0 on the null
space of Θ (those directions never move), so t = ∞ is kernel regression
(pseudo-inverse when Θ is singular).  Each eigendirection's residual decays as
e^{−ηλ_k t}: early stopping is a spectral filter 1 − e^{−ηλ_k t}.

``ridge`` r > 0 is weight decay towards the initialisation in the linearised
network (loss ½‖f − y‖² + r/2‖θ − θ₀‖²); with Π = Θ + rI,

    f(Z, t) = f₀(Z) + Θ(Z, X) Π⁻¹ (I − e^{−ηΠt}) (y − f₀(X)),

for Z = X too, so t = ∞ is kernel ridge regression with ridge r.  (This differs
from neural-tangents' ``diag_reg``, which replaces Θ by Π in the train dynamics.)

Two routes compute the same f(t) (``GradientFlow(method=...)``):

- ``'eigh'``: one full eigendecomposition Θ = V diag(λ) Vᵀ (O(N³), every time point
  and every spectral view is then a cheap product);
- ``'krylov'``: block Lanczos on the residual block y − f₀ (:mod:`ntkfast.solve.krylov`):
  Π⁻¹(I − e^{−ηΠt}) and Θ Π⁻¹(I − e^{−ηΠt}) applied to y − f₀ from one Krylov basis
  Q shared by all times, f ≈ Q φ_t(H) Qᵀ(y − f₀) with H = QᵀΠQ and φ_t(μ) =
  −expm1(−ημt)/μ evaluated on H's Ritz values (no cancellation for small ημt, ηt at
  μ = 0).  The basis grows until the a-posteriori estimate of the relative error of
  every output at every requested time is ≤ ``tol``; cost O(N²·k) per block step.
  t = ∞ is :class:`~ntkfast.solve.KernelRegression` (Cholesky, jitter on failure),
  and the spectral views use the top ``n_components`` eigenpairs from Lanczos
  (:func:`scipy.sparse.linalg.eigsh`).
"""

from __future__ import annotations

import hashlib
import warnings
from typing import NamedTuple, Optional

import numpy as np
import scipy.linalg as sla

from ._checks import (as_cross_kernel, as_positive, as_ridge, as_square_kernel, as_targets,
                      as_times, flow_filter)
from ._compat import UNSET, check_fitted, fit_if_given, renamed_keywords, warn_deprecated
from .krylov import BlockLanczos, kernel_matvec, relative_change, top_eigenpairs

__all__ = ["GradientFlow", "FlowPrediction", "EarlyStopping", "KRYLOV_MIN_N"]

#: method='auto' uses the Krylov route from this many training points on
KRYLOV_MIN_N = 2000
_METHODS = ("auto", "eigh", "krylov")


class FlowPrediction(NamedTuple):
    """Outputs at time(s) t.

    ``train``: f_train(t), shape (N,) / (N, k) for scalar t and (T, N) / (T, N, k)
    for a vector of T times (the trailing k axis only for 2-D y).  ``test``:
    f_test(t), same layout with M test points, or None without a test kernel.
    """

    train: np.ndarray
    test: Optional[np.ndarray]


class EarlyStopping(NamedTuple):
    """``best_time`` = t[best_index], the first minimiser of ``val_loss`` (T,),
    the validation loss ½‖f_val(t) − y_val‖²; ``train_loss`` (T,); ``times`` = t."""

    best_time: float
    best_index: int
    val_loss: np.ndarray
    train_loss: np.ndarray
    times: np.ndarray


class _Spectrum(NamedTuple):
    lam: np.ndarray    # eigenvalues of Θ (ascending), numerically-zero ones set to 0
    V: np.ndarray      # eigenvectors (columns)
    raw: np.ndarray    # eigenvalues as computed
    mu: np.ndarray     # lam + ridge
    zero: np.ndarray   # mu numerically 0


class GradientFlow:
    """Training dynamics under gradient flow: f(t) on training and test points.

    Two equivalent forms::

        flow = GradientFlow(K, y, learning_rate=1.0)               # fit on construction
        flow = GradientFlow(learning_rate=1.0).fit(K, y)           # estimator style
        out = flow.predict(K_test_train, t)                        # out.train, out.test

    Parameters
    ----------
    k_train_train : (N, N) array, optional
        The NTK Θ(X, X), symmetric PSD.  Eigenvalues (eigh route) or Ritz values
        (Krylov route) below −N·eps·λ_max are rejected (the flow would diverge);
        |λ| ≤ N·eps·λ_max counts as exactly 0.  Given here, :meth:`fit` is called.
    y_train : (N,) or (N, k), optional
    learning_rate : float > 0
        η.
    ridge : float >= 0
        r; see the module docstring.
    method : 'auto' | 'eigh' | 'krylov'
        'auto': 'eigh' for N < :data:`KRYLOV_MIN_N`, else 'krylov' (module docstring).
    tol : float > 0
        Krylov route: target relative error of every output at every finite time
        (a-posteriori estimate, see :mod:`ntkfast.solve.krylov`).
    n_components : int
        Krylov route: number of top eigenpairs (Lanczos) behind the spectral views.
    max_basis : int, optional
        Krylov route: largest basis (columns); default min(N, 4000).  Reaching it
        without meeting ``tol`` gives a RuntimeWarning.

    Attributes: ``method_`` (the route used), ``eigenvalues`` (ascending) and
    ``eigenvectors`` (columns) of Θ — all N on the eigh route, the top
    ``n_components`` on the Krylov route (computed on first use), ``n_train``,
    ``error_estimate_`` (per time of the last :meth:`predict`: estimated relative
    error, 0 on the eigh route and for t = ∞), ``krylov_size_`` (basis columns used
    by the last Krylov predict).
    """

    @renamed_keywords(ntk_train_train="k_train_train")
    def __init__(self, k_train_train=None, y_train=None, learning_rate=1.0, ridge=0.0, *,
                 method="auto", tol=1e-8, n_components=20, max_basis=None):
        self.learning_rate = as_positive(learning_rate, "learning_rate")
        self.ridge = as_ridge(ridge)
        if method not in _METHODS:
            raise ValueError(f"method: must be one of {_METHODS}, got {method!r}")
        self.method = method
        self.tol = as_positive(tol, "tol")
        if isinstance(n_components, bool) or not isinstance(n_components, (int, np.integer)) \
                or n_components < 1:
            raise ValueError(f"n_components: must be an int >= 1, got {n_components!r}")
        self.n_components = int(n_components)
        if max_basis is not None and (not isinstance(max_basis, (int, np.integer))
                                      or max_basis < 1):
            raise ValueError(f"max_basis: must be an int >= 1 or None, got {max_basis!r}")
        self.max_basis = max_basis
        fit_if_given(self, k_train_train, y_train, "k_train_train")

    # -- fitting -----------------------------------------------------------------------
    @renamed_keywords(ntk_train_train="k_train_train")
    def fit(self, k_train_train, y_train):
        """Validate Θ(X, X) and y; the eigh route computes the eigendecomposition here,
        the Krylov route defers all work to :meth:`predict`.  Returns self."""
        K = as_square_kernel(k_train_train, "k_train_train")
        n = K.shape[0]
        self._Y, self._1d = as_targets(y_train, "y_train", n, "k_train_train")
        self.n_train = n
        self.error_estimate_ = None
        self.krylov_size_ = None
        self._spec = None
        if self.method == "auto":
            self.method_ = "krylov" if n >= KRYLOV_MIN_N else "eigh"
        else:
            self.method_ = self.method
        if self.method_ == "eigh":
            w, V = sla.eigh(K, check_finite=False)
            self._spec = self._make_spectrum(w, V, full=True)
            self._K = None
        else:
            self._K = K
            self._matvec = kernel_matvec(K, self.ridge)
            self._bases = {}
            self._ykey = self._key(self._Y)
            self._reg = None
            self._lmax = None
            self._lmin = None
        self._c0_cache = None
        return self

    def _make_spectrum(self, w, V, full):
        n = self.n_train
        tol = n * np.finfo(V.dtype).eps * max(float(np.max(np.abs(w))), np.finfo(float).tiny)
        if full and w[0] < -tol:
            raise ValueError(f"k_train_train: not positive semi-definite (smallest eigenvalue "
                             f"{w[0]:.3g} < -{tol:.3g}); gradient flow diverges along that "
                             "direction. Check the kernel")
        lam = np.where(np.abs(w) <= tol, 0.0, w).astype(np.float64)
        mu = lam + self.ridge
        return _Spectrum(lam, V, w, mu, mu <= tol)

    def _spectrum(self):
        check_fitted(self, "_Y")
        if self._spec is None:  # Krylov route: top eigenpairs by Lanczos
            k = min(self.n_components, self.n_train - 1)
            if k < 1:
                w, V = sla.eigh(np.asarray(self._K, dtype=np.float64))
            else:
                w, V = top_eigenpairs(self._K, k)
            self._spec = self._make_spectrum(w, V, full=False)
        return self._spec

    @property
    def eigenvalues(self):
        """Eigenvalues of Θ, ascending: all (eigh route) or the top ``n_components``."""
        return self._spectrum().raw

    @property
    def eigenvectors(self):
        """The matching eigenvectors of Θ (columns)."""
        return self._spectrum().V

    @property
    def _c0(self):
        """Vᵀ y (N or n_components, k)."""
        if self._c0_cache is None:
            V = self._spectrum().V
            self._c0_cache = V.T @ self._Y.astype(V.dtype)
        return self._c0_cache

    # -- helpers ---------------------------------------------------------------------
    def _filters(self, ts):
        """G[:, j] = g_{t_j}(λ + r) (n_eig, T) and Φ = λ·G, the fraction of each direction
        learned."""
        sp = self._spectrum()
        G = np.stack([flow_filter(sp.mu, sp.zero, self.learning_rate, t) for t in ts], 1)
        return G, sp.lam[:, None] * G

    def _coef(self, f0_train):
        """(f₀(X) as (N, k) or None, c = Vᵀ(y − f₀(X)))."""
        if f0_train is None:
            return None, self._c0
        F0 = self._targets_like(f0_train, "f0_train", self.n_train, "k_train_train")
        V = self._spectrum().V
        return F0, V.T @ (self._Y - F0).astype(V.dtype)

    def _targets_like(self, f, name, n, n_name):
        F, _ = as_targets(f, name, n, n_name)
        if F.shape[1] != self._Y.shape[1]:
            raise ValueError(f"{name}: has {F.shape[1]} outputs but y_train has "
                             f"{self._Y.shape[1]}")
        return F

    def _shape(self, A, scalar):
        """A is (T, n, k): drop T for scalar t and k for 1-D y."""
        if scalar:
            A = A[0]
        return A[..., 0] if self._1d else A

    @staticmethod
    def _apply(V, D, c):
        """V @ (D[:, t] * c) for every t at once: one GEMM, result (T, N, k)."""
        n, T = D.shape
        k = c.shape[1]
        return (V @ (D[:, :, None] * c[:, None, :]).reshape(n, T * k)).reshape(
            V.shape[0], T, k).transpose(1, 0, 2)

    # -- the eigh route --------------------------------------------------------------
    def _predict_eigh(self, ts, KzX, F0):
        """(train (T, N, k) without f₀, test (T, M, k) or None, estimate (T,))."""
        V = self._spec.V
        R = self._Y if F0 is None else self._Y - F0
        c = V.T @ R.astype(V.dtype)
        G, Phi = self._filters(ts)
        train = self._apply(V, Phi, c)  # Θ Π⁻¹(I − e^{−ηΠt})(y − f₀)
        test = None
        if KzX is not None:
            A = self._apply(V, G, c)  # Π⁻¹(I − e^{−ηΠt})(y − f₀), (T, N, k)
            T, n, k = A.shape
            m = KzX.shape[0]
            test = (KzX @ A.transpose(1, 0, 2).reshape(n, T * k)).reshape(m, T, k)
            test = test.transpose(1, 0, 2)
        return train, test, np.zeros(ts.size)

    # -- the Krylov route ------------------------------------------------------------
    @staticmethod
    def _key(R):
        return hashlib.sha1(np.ascontiguousarray(R).tobytes()).hexdigest()

    def _basis(self, R):
        """The Krylov basis started at R = y − f₀ (cached: the y basis and the latest other)."""
        key = self._key(R)
        lz = self._bases.get(key)
        if lz is None:
            if key != self._ykey:
                for old in [k for k in self._bases if k != self._ykey]:
                    del self._bases[old]
            lz = self._bases[key] = BlockLanczos(self._matvec, R)
        return lz

    def _phi(self, ts):
        """θ ↦ (m, T) arrays φ_t(θ) = (1 − e^{−ηθt})/θ and (θ − r)·φ_t(θ), for Ritz values
        θ of Π (PSD-checked)."""
        eta, r, n = self.learning_rate, self.ridge, self.n_train

        def zero_mask(theta):
            top = max(float(np.max(np.abs(theta))), np.finfo(float).tiny) if theta.size else 1.0
            tol = n * np.finfo(float).eps * top
            if theta.size and theta[0] - r < -tol:
                raise ValueError(f"k_train_train: not positive semi-definite (Ritz value "
                                 f"{theta[0] - r:.3g} < -{tol:.3g}); gradient flow diverges "
                                 "along that direction. Check the kernel")
            return np.abs(theta) <= tol

        def fx(theta):
            z = zero_mask(theta)
            return np.stack([flow_filter(theta, z, eta, t) for t in ts], 1).reshape(-1, ts.size)

        def ftr(theta):
            return (theta - r)[:, None] * fx(theta)

        return ftr, fx

    def _predict_krylov(self, ts, KzX, F0):
        """Finite ts only: (train (T, N, k) without f₀, test or None, estimate (T,))."""
        R = self._Y if F0 is None else self._Y - F0
        lz = self._basis(R)
        ftr, fx = self._phi(ts)
        k = self._Y.shape[1]
        cap = min(self.n_train, 4000) if self.max_basis is None else self.max_basis
        m = max(lz.size, 8 * k)
        P = None  # KzX @ Q, extended as the basis grows
        while True:
            lz.advance(m)
            m = lz.size
            (Ytr, Yx), _ = lz.functions([ftr, fx], m)
            if lz.exhausted:
                est = np.zeros(ts.size)
            else:
                d = max(2 * max(lz.block_size, 1), m // 6)
                (Ptr, Px), _ = lz.functions([ftr, fx], max(m - d, 0))
                est = np.maximum(relative_change(Ytr, Ptr), relative_change(Yx, Px))
            if KzX is not None and est.max() <= self.tol:
                Q = lz.basis(m)
                if P is None:
                    P = KzX @ Q
                elif P.shape[1] < m:
                    P = np.hstack([P, KzX @ Q[:, P.shape[1]:]])
                if not lz.exhausted:
                    est = np.maximum(est, self._test_change(P, Yx, Px))
            if est.max() <= self.tol or lz.exhausted:
                break
            if m >= cap:
                warnings.warn(f"GradientFlow: Krylov basis reached max_basis={cap} columns "
                              f"with estimated relative error {est.max():.3g} > tol="
                              f"{self.tol:g}; increase max_basis or tol, or use "
                              "method='eigh'", RuntimeWarning, stacklevel=4)
                break
            m = min(m + d, cap)
        self.krylov_size_ = m
        Q = lz.basis(m)
        T = ts.size
        train = (Q @ Ytr.reshape(m, T * k)).reshape(self.n_train, T, k).transpose(1, 0, 2)
        test = None
        if KzX is not None:
            if P is None or P.shape[1] != m:
                P = KzX @ Q
            test = (P @ Yx.reshape(m, T * k)).reshape(KzX.shape[0], T, k).transpose(1, 0, 2)
        return train, test, est

    @staticmethod
    def _test_change(P, Yx, Px):
        """Per time: ‖P(Y − [Yp; 0])‖ / ‖P Y‖, the change of the test outputs."""
        m, T, k = Yx.shape
        D = Yx.copy()
        D[:Px.shape[0]] -= Px
        A = P @ D.reshape(m, T * k)
        B = P @ Yx.reshape(m, T * k)
        num = np.sqrt(np.sum(np.square(A.reshape(-1, T, k)), axis=(0, 2)))
        den = np.sqrt(np.sum(np.square(B.reshape(-1, T, k)), axis=(0, 2)))
        return np.where(den > 0, num / np.where(den > 0, den, 1.0),
                        np.where(num > 0, np.inf, 0.0))

    def _predict_infinite(self, KzX, F0):
        """t = ∞ on the Krylov route: kernel (ridge) regression by Cholesky, (1, ·, k)."""
        from .regression import KernelRegression
        if self._reg is None:
            self._reg = KernelRegression(self._K, self._Y, ridge=self.ridge)
        R = self._Y if F0 is None else self._Y - F0
        alpha = sla.cho_solve(self._reg.factor, R, check_finite=False)
        train = self._matvec(alpha) - self.ridge * alpha  # Θ α
        test = None if KzX is None else (KzX @ alpha)[None]
        return train[None], test

    def _predict(self, ts, KzX, F0):
        if self.method_ == "eigh":
            return self._predict_eigh(ts, KzX, F0)
        k = self._Y.shape[1]
        T = ts.size
        train = np.empty((T, self.n_train, k))
        test = None if KzX is None else np.empty((T, KzX.shape[0], k))
        est = np.zeros(T)
        fin = np.isfinite(ts)
        if fin.any():
            tr, te, e = self._predict_krylov(ts[fin], KzX, F0)
            train[fin], est[fin] = tr, e
            if test is not None:
                test[fin] = te
        if not fin.all():
            tr, te = self._predict_infinite(KzX, F0)
            train[~fin] = tr
            if test is not None:
                test[~fin] = te
        return train, test, est

    # -- public API ------------------------------------------------------------------
    def predict(self, k_test_train=None, t=UNSET, f0_train=None, f0_test=None, *,
                ntk_test_train=UNSET):
        """f_train(t) and f_test(t) (formulas in the module docstring).

        ``k_test_train``: Θ(Z, X), (M, N), or None for the training outputs only.
        ``t``: scalar or 1-D array of times >= 0 (``np.inf`` allowed; default ∞).
        ``f0_train`` / ``f0_test``: network outputs at initialisation (default 0,
        the infinite-ensemble mean).  Returns a :class:`FlowPrediction` (train, test)
        and sets ``error_estimate_``.

        The former order ``predict(t, ntk_test_train)`` (recognised by a scalar or
        1-D first argument) still works, with a DeprecationWarning.
        """
        check_fitted(self, "_Y")
        KzX, t = _new_order(k_test_train, t, ntk_test_train)
        ts, scalar = as_times(t)
        if f0_test is not None and KzX is None:
            raise ValueError("f0_test: given without k_test_train")
        F0 = None if f0_train is None else self._targets_like(
            f0_train, "f0_train", self.n_train, "k_train_train")
        if KzX is not None:
            KzX = as_cross_kernel(KzX, "k_test_train", self.n_train)
        train, test, est = self._predict(ts, KzX, F0)
        self.error_estimate_ = est
        if F0 is not None:
            train += F0[None]
        if test is not None and f0_test is not None:
            test = test + self._targets_like(f0_test, "f0_test", KzX.shape[0],
                                             "k_test_train rows")
        return FlowPrediction(self._shape(train, scalar),
                              None if test is None else self._shape(test, scalar))

    def residuals_by_eigendirection(self, t, f0_train=None):
        """Vᵀ(y − f_train(t)) = (1 − λ_k g_t(λ_k + r)) Vᵀ(y − f₀); with r = 0 this is
        e^{−ηλ_k t} Vᵀ(y − f₀).  Rows follow ``eigenvalues`` (ascending; the top
        ``n_components`` only on the Krylov route); shape (n_eig[, k]) or (T, n_eig[, k])."""
        ts, scalar = as_times(t)
        c = self._coef(f0_train)[1]
        _, Phi = self._filters(ts)
        E = (1.0 - Phi.T)[:, :, None] * c[None]
        return self._shape(E, scalar)

    def spectral_filter(self, t):
        """Fraction of each eigendirection learned, λ_k g_t(λ_k + r) (1 − e^{−ηλ_k t}
        for r = 0), following ``eigenvalues``; (n_eig,) or (T, n_eig)."""
        ts, scalar = as_times(t)
        Phi = self._filters(ts)[1].T
        return Phi[0] if scalar else Phi

    def loss(self, t, f0_train=None):
        """Training loss ½‖f_train(t) − y‖²; float or (T,).  Eigh route: ½ Σ_k (residual
        along v_k)²; Krylov route: from :meth:`predict`."""
        check_fitted(self, "_Y")
        ts, scalar = as_times(t)
        if self.method_ == "eigh":
            E = (1.0 - self._filters(ts)[1].T)[:, :, None] * self._coef(f0_train)[1][None]
        else:
            tr = self.predict(None, ts, f0_train).train.reshape(ts.size, self.n_train, -1)
            E = tr - self._Y[None]
        out = 0.5 * np.sum(np.square(E), axis=(1, 2))
        return float(out[0]) if scalar else out

    def _extreme(self, which):
        sp = self._spectrum()
        if self.method_ == "eigh":
            return float(sp.mu.min() if which == "SA" else sp.mu.max())
        if which == "LA":
            return float(sp.mu.max())
        if self._lmin is None:
            self._lmin = float(top_eigenpairs(self._K, 1, which="SA")[0][0])
        return max(self._lmin, 0.0) + self.ridge

    @property
    def convergence_rate(self):
        """η·λ_min(Θ + rI): the slowest exponential rate (0 if Θ is singular and r = 0).
        Krylov route: λ_min from Lanczos (eigsh 'SA'; slow for clustered small eigenvalues)."""
        return self.learning_rate * self._extreme("SA")

    def max_learning_rate(self):
        """2 / λ_max(Θ + rI): discrete gradient descent is stable for η below this."""
        top = self._extreme("LA")
        return np.inf if top <= 0 else 2.0 / top

    @renamed_keywords(ntk_val_train="k_val_train", ts="t")
    def early_stopping(self, k_val_train, y_val, t, f0_train=None, f0_val=None):
        """Validation curve over times ``t`` and its first minimiser.

        val_loss(t) = ½‖f_val(t) − y_val‖² with f_val from :meth:`predict`.
        Returns an :class:`EarlyStopping`.
        """
        check_fitted(self, "_Y")
        times, _ = as_times(t, "t")
        KvX = as_cross_kernel(k_val_train, "k_val_train", self.n_train)
        Yv = self._targets_like(y_val, "y_val", KvX.shape[0], "k_val_train rows")
        pred = self.predict(KvX, times, f0_train, f0_val)
        val_pred = pred.test.reshape(times.size, KvX.shape[0], -1)
        val = 0.5 * np.sum(np.square(val_pred - Yv[None]), axis=(1, 2))
        if self.method_ == "eigh":  # spectral formula: exact where the residual is tiny
            train_loss = self.loss(times, f0_train)
        else:
            tr = pred.train.reshape(times.size, self.n_train, -1)
            train_loss = 0.5 * np.sum(np.square(tr - self._Y[None]), axis=(1, 2))
        best = int(np.argmin(val))
        return EarlyStopping(float(times[best]), best, val, train_loss, times)

    def __repr__(self):
        fitted = f"n_train={self.n_train}, " if hasattr(self, "_Y") else ""
        route = getattr(self, "method_", self.method)
        extra = f", tol={self.tol:g}" if route != "eigh" else ""
        return (f"GradientFlow({fitted}learning_rate={self.learning_rate!r}, "
                f"ridge={self.ridge!r}, method={route!r}{extra})")


def _new_order(k_test_train, t, ntk_test_train):
    """Resolve predict's arguments, accepting the deprecated predict(t, ntk_test_train)."""
    old_kw = ntk_test_train is not UNSET
    if k_test_train is not None and np.ndim(k_test_train) <= 1:  # a time, not a 2-D kernel
        warn_deprecated("GradientFlow.predict(t, ntk_test_train): the order is now "
                        "predict(k_test_train, t)", stacklevel=4)
        if old_kw and t is not UNSET:
            raise TypeError("GradientFlow.predict: test kernel given twice")
        kernel = ntk_test_train if old_kw else (None if t is UNSET else t)
        return kernel, k_test_train
    if old_kw:
        warn_deprecated("GradientFlow.predict: keyword ntk_test_train= is renamed "
                        "k_test_train=", stacklevel=4)
        if k_test_train is not None:
            raise TypeError("GradientFlow.predict: got both ntk_test_train= (its deprecated "
                            "name) and k_test_train=")
        k_test_train = ntk_test_train
    return k_test_train, (np.inf if t is UNSET else t)
