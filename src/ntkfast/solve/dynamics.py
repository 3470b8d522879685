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
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np
import scipy.linalg as sla

from ._checks import (as_cross_kernel, as_positive, as_ridge, as_square_kernel, as_targets,
                      as_times, flow_filter)

__all__ = ["GradientFlow", "FlowPrediction", "EarlyStopping"]


class FlowPrediction(NamedTuple):
    """Outputs at time(s) t.

    ``train``: f_train(t), shape (N,) / (N, k) for scalar t and (T, N) / (T, N, k)
    for a vector of T times (the trailing k axis only for 2-D y).  ``test``:
    f_test(t), same layout with M test points, or None without a test kernel.
    """

    train: np.ndarray
    test: Optional[np.ndarray]


class EarlyStopping(NamedTuple):
    """``best_time`` = ts[best_index], the first minimiser of ``val_loss`` (T,),
    the validation loss ½‖f_val(t) − y_val‖²; ``train_loss`` (T,); ``times`` = ts."""

    best_time: float
    best_index: int
    val_loss: np.ndarray
    train_loss: np.ndarray
    times: np.ndarray


class GradientFlow:
    """Training dynamics under gradient flow from one eigendecomposition of the NTK.

    Parameters
    ----------
    ntk_train_train : (N, N) array
        Θ(X, X), symmetric PSD (eigenvalues below −N·eps·λ_max are rejected:
        the flow would diverge).  Eigenvalues with |λ| ≤ N·eps·λ_max are treated
        as exactly 0.
    y_train : (N,) or (N, k)
    learning_rate : float > 0
        η.
    ridge : float >= 0
        r; see the module docstring.

    Attributes ``eigenvalues`` (ascending, of Θ, as returned by ``eigh``) and
    ``eigenvectors`` (columns), ``learning_rate``, ``ridge``, ``n_train``.
    """

    def __init__(self, ntk_train_train, y_train, learning_rate=1.0, ridge=0.0):
        K = as_square_kernel(ntk_train_train, "ntk_train_train")
        n = K.shape[0]
        self._Y, self._1d = as_targets(y_train, "y_train", n, "ntk_train_train")
        self.learning_rate = as_positive(learning_rate, "learning_rate")
        self.ridge = as_ridge(ridge)
        self.n_train = n
        w, V = sla.eigh(K, check_finite=False)
        self.eigenvalues, self.eigenvectors = w, V
        tol = n * np.finfo(V.dtype).eps * max(float(np.max(np.abs(w))), np.finfo(float).tiny)
        if w[0] < -tol:
            raise ValueError(f"ntk_train_train: not positive semi-definite (smallest eigenvalue "
                             f"{w[0]:.3g} < -{tol:.3g}); gradient flow diverges along that "
                             "direction. Check the kernel")
        lam = np.where(np.abs(w) <= tol, 0.0, w).astype(np.float64)
        self._lam = lam
        self._mu = lam + self.ridge
        self._zero = self._mu <= tol
        self._c0 = V.T @ self._Y.astype(V.dtype)  # Vᵀ y

    # -- helpers ---------------------------------------------------------------------
    def _filters(self, ts):
        """G[:, j] = g_{t_j}(λ + r) (N, T) and Φ = λ·G, the fraction of each direction learned."""
        G = np.stack([flow_filter(self._mu, self._zero, self.learning_rate, t) for t in ts], 1)
        return G, self._lam[:, None] * G

    def _coef(self, f0_train):
        """(f₀(X) as (N, k) or None, c = Vᵀ(y − f₀(X)))."""
        if f0_train is None:
            return None, self._c0
        F0 = self._targets_like(f0_train, "f0_train", self.n_train, "ntk_train_train")
        return F0, self.eigenvectors.T @ (self._Y - F0).astype(self.eigenvectors.dtype)

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

    # -- public API ------------------------------------------------------------------
    def predict(self, t, ntk_test_train=None, f0_train=None, f0_test=None):
        """f_train(t) and f_test(t) (formulas in the module docstring).

        ``t``: scalar or 1-D array of times >= 0 (``np.inf`` allowed).
        ``ntk_test_train``: Θ(Z, X), (M, N).  ``f0_train`` / ``f0_test``: network
        outputs at initialisation (default 0, the infinite-ensemble mean).
        Returns a :class:`FlowPrediction` (train, test).
        """
        ts, scalar = as_times(t)
        if f0_test is not None and ntk_test_train is None:
            raise ValueError("f0_test: given without ntk_test_train")
        F0, c = self._coef(f0_train)
        G, Phi = self._filters(ts)
        V = self.eigenvectors
        train = self._apply(V, Phi, c)  # (T, N, k): Θ Π⁻¹(I − e^{−ηΠt})(y − f₀)
        if F0 is not None:
            train += F0[None]
        test = None
        if ntk_test_train is not None:
            KzX = as_cross_kernel(ntk_test_train, "ntk_test_train", self.n_train)
            m = KzX.shape[0]
            A = self._apply(V, G, c)  # (T, N, k): Π⁻¹(I − e^{−ηΠt})(y − f₀)
            T, n, k = A.shape
            test = (KzX @ A.transpose(1, 0, 2).reshape(n, T * k)).reshape(m, T, k)
            test = test.transpose(1, 0, 2)
            if f0_test is not None:
                test = test + self._targets_like(f0_test, "f0_test", m, "ntk_test_train rows")
        return FlowPrediction(self._shape(train, scalar),
                              None if test is None else self._shape(test, scalar))

    def residuals_by_eigendirection(self, t, f0_train=None):
        """Vᵀ(y − f_train(t)) = (1 − λ_k g_t(λ_k + r)) Vᵀ(y − f₀); with r = 0 this is
        e^{−ηλ_k t} Vᵀ(y − f₀).  Rows follow ``eigenvalues`` (ascending); shape
        (N[, k]) or (T, N[, k])."""
        ts, scalar = as_times(t)
        c = self._coef(f0_train)[1]
        _, Phi = self._filters(ts)
        E = (1.0 - Phi.T)[:, :, None] * c[None]
        return self._shape(E, scalar)

    def spectral_filter(self, t):
        """Fraction of each eigendirection learned, λ_k g_t(λ_k + r) (1 − e^{−ηλ_k t}
        for r = 0); (N,) or (T, N)."""
        ts, scalar = as_times(t)
        Phi = self._filters(ts)[1].T
        return Phi[0] if scalar else Phi

    def loss(self, t, f0_train=None):
        """Training loss ½‖f_train(t) − y‖² = ½ Σ_k (residual along v_k)²; float or (T,)."""
        ts, scalar = as_times(t)
        E = (1.0 - self._filters(ts)[1].T)[:, :, None] * self._coef(f0_train)[1][None]
        out = 0.5 * np.sum(np.square(E), axis=(1, 2))
        return float(out[0]) if scalar else out

    @property
    def convergence_rate(self):
        """η·λ_min(Θ + rI): the slowest exponential rate (0 if Θ is singular and r = 0)."""
        return self.learning_rate * float(self._mu.min())

    def max_learning_rate(self):
        """2 / λ_max(Θ + rI): discrete gradient descent is stable for η below this."""
        top = float(self._mu.max())
        return np.inf if top <= 0 else 2.0 / top

    def early_stopping(self, ntk_val_train, y_val, ts, f0_train=None, f0_val=None):
        """Validation curve over times ``ts`` and its first minimiser.

        val_loss(t) = ½‖f_val(t) − y_val‖² with f_val from :meth:`predict`.
        Returns an :class:`EarlyStopping`.
        """
        times, _ = as_times(ts, "ts")
        KvX = as_cross_kernel(ntk_val_train, "ntk_val_train", self.n_train)
        Yv = self._targets_like(y_val, "y_val", KvX.shape[0], "ntk_val_train rows")
        pred = self.predict(times, KvX, f0_train, f0_val).test
        pred = pred.reshape(times.size, KvX.shape[0], -1)
        val = 0.5 * np.sum(np.square(pred - Yv[None]), axis=(1, 2))
        best = int(np.argmin(val))
        return EarlyStopping(float(times[best]), best, val, self.loss(times, f0_train), times)

    def __repr__(self):
        return (f"GradientFlow(n_train={self.n_train}, learning_rate={self.learning_rate!r}, "
                f"ridge={self.ridge!r})")
