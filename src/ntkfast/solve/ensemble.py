"""The infinite ensemble of wide networks trained by gradient flow (the NTK-GP).

Lee et al. (2019), "Wide neural networks of any depth evolve as linear models
under gradient descent", §2.3.1.  The outputs at initialisation are a GP with the
NNGP kernel K; training is linear in the NTK Θ (``DESIGN.md`` §1 conventions,
sum loss, learning rate η), so with P_t = Θ⁻¹(I − e^{−ηΘt}) and
M_t(x) = Θ(x, X) P_t the trained outputs are Gaussian with

    mean  μ_t(x)    = M_t(x) y
    cov   Σ_t(x,x') = K(x, x') + M_t(x) K(X, X) M_t(x')ᵀ
                      − M_t(x) K(X, x') − K(x, X) M_t(x')ᵀ.

t = 0 is the NNGP prior; t = ∞ gives mean Θ(x, X)Θ⁻¹y (NTK regression).
``ridge`` r replaces Θ⁻¹(I − e^{−ηΘt}) by Π⁻¹(I − e^{−ηΠt}), Π = Θ + rI (weight
decay to the initialisation; see :mod:`ntkfast.solve.dynamics`).  The plain
Bayesian NNGP posterior is :meth:`InfiniteEnsemble.nngp_posterior`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._validation import check_inputs
from ._checks import as_positive, as_ridge, as_targets, as_times, clip_variance, symmetric_psd
from ._compat import check_fitted, fit_if_given
from .dynamics import GradientFlow
from .regression import KernelRegression

__all__ = ["InfiniteEnsemble", "GaussianPrediction"]

_COV = ("full", "diag", None)


class GaussianPrediction(NamedTuple):
    """``mean``: (M,) / (M, k), with a leading (T,) axis for a vector of times.
    ``covariance``: (M, M) for cov='full', (M,) variances for cov='diag', None for
    cov=None (leading (T,) axis for vector t).  All outputs share the covariance."""

    mean: np.ndarray
    covariance: np.ndarray | None


class InfiniteEnsemble:
    """Mean and covariance of infinitely many infinitely wide networks trained by
    gradient flow from independent random initialisations.

    Parameters
    ----------
    net : ntkfast.MLP (anything with ``kernels``, ``nngp``, ``nngp_diag``)
    X_train : (N, d);  y_train : (N,) or (N, k)  (optional: then call :meth:`fit`)
    learning_rate : float > 0 (η);  ridge : float >= 0
    dtype, n_jobs, backend : passed to the kernel computations.

    ``InfiniteEnsemble(net, X, y)`` fits on construction;
    ``InfiniteEnsemble(net).fit(X, y)`` is the estimator style.  Fitting computes
    Θ(X, X) and K(X, X) once (``net.kernels(X_train)``) and one ``eigh`` of Θ (via
    :class:`GradientFlow` with method='eigh', exposed as ``self.flow``: the
    covariance needs all eigenvectors); K is kept, Θ is not.
    """

    def __init__(self, net, X_train=None, y_train=None, learning_rate=1.0, ridge=0.0, *,
                 dtype=None, n_jobs=None, backend="auto"):
        for attr in ("kernels", "nngp", "nngp_diag"):
            if not callable(getattr(net, attr, None)):
                raise TypeError(f"net: expected an ntkfast.MLP (with .{attr}), got {net!r}")
        self.net = net
        self.learning_rate = as_positive(learning_rate, "learning_rate")
        self.ridge = as_ridge(ridge)
        self._kw = dict(dtype=dtype, n_jobs=n_jobs, backend=backend)
        fit_if_given(self, X_train, y_train, "X_train")

    def fit(self, X_train, y_train):
        """Compute the training kernels and the eigendecomposition of Θ; returns self."""
        self._X = check_inputs(X_train, "X_train")
        n = self._X.shape[0]
        self._Y, self._1d = as_targets(y_train, "y_train", n, "X_train")
        ks = self.net.kernels(self._X, **self._kw)
        self.flow = GradientFlow(ks.ntk, self._Y, self.learning_rate, self.ridge,
                                 method="eigh")
        self.nngp_train = ks.nngp
        self._Kt = None   # Vᵀ K V, on first covariance request
        self._reg = None  # NNGP KernelRegression, on first nngp_posterior
        return self

    def _test(self, X_test):
        Xt = check_inputs(X_test, "X_test", d=self._X.shape[1])
        return Xt, self.net.kernels(Xt, self._X, **self._kw)

    def _prior(self, Xt, cov):
        if cov == "full":
            return np.asarray(self.net.nngp(Xt, **self._kw), dtype=np.float64)
        return np.asarray(self.net.nngp_diag(Xt, dtype=self._kw["dtype"]), dtype=np.float64)

    @staticmethod
    def _check_cov(cov):
        if cov not in _COV:
            raise ValueError(f"cov: must be 'full', 'diag' or None, got {cov!r}")

    def _out(self, A):
        return A[..., 0] if self._1d else A

    def predict(self, X_test, t=np.inf, cov="full"):
        """NTK-GP mean and covariance at time(s) t (formulas in the module docstring).

        ``t``: scalar or 1-D times >= 0, inf allowed.  Returns a
        :class:`GaussianPrediction`; covariances are symmetrised, and negative
        eigenvalues (variances for cov='diag') at rounding level are clipped to 0.
        """
        check_fitted(self, "flow")
        self._check_cov(cov)
        ts, scalar = as_times(t)
        Xt, ks = self._test(X_test)
        fl = self.flow
        V = fl.eigenvectors
        B = np.asarray(ks.ntk, dtype=np.float64) @ V        # Θ(Z, X) V, (M, N)
        G = fl._filters(ts)[0]                              # g_t(λ + r), (N, T)
        c = fl._c0                                          # Vᵀ y, (N, k)
        mean = np.stack([B @ (G[:, j, None] * c) for j in range(ts.size)])
        covs = None
        if cov is not None:
            KzX = np.asarray(ks.nngp, dtype=np.float64)
            P = V.T @ KzX.T                                 # Vᵀ K(X, Z), (N, M)
            if self._Kt is None:
                K = np.asarray(self.nngp_train, dtype=np.float64)
                self._Kt = V.T @ K @ V
                self._Kt += self._Kt.T
                self._Kt *= 0.5
            prior = self._prior(Xt, cov)
            eps = np.finfo(V.dtype).eps
            covs = []
            for j in range(ts.size):
                Mt = B * G[:, j]                            # M_t V = Θ(Z,X) V diag(g)
                MK = Mt @ self._Kt
                cross = Mt @ P                              # M_t K(X, Z)
                if cov == "full":
                    C = prior + MK @ Mt.T - cross - cross.T
                    scale = (np.max(np.abs(np.diagonal(prior)))
                             + np.max(np.abs(np.einsum("ij,ij->i", MK, Mt)))
                             + 2 * np.max(np.abs(np.diagonal(cross))))
                    covs.append(symmetric_psd(C, float(scale), "covariance"))
                else:
                    quad = np.einsum("ij,ij->i", MK, Mt)
                    xd = np.diagonal(cross)
                    var = prior + quad - 2 * xd
                    covs.append(clip_variance(var, np.abs(prior) + np.abs(quad)
                                              + 2 * np.abs(xd), eps, "variance"))
            covs = np.stack(covs)
        mean = self._out(mean)
        if scalar:
            mean = mean[0]
            covs = None if covs is None else covs[0]
        return GaussianPrediction(mean, covs)

    def nngp_posterior(self, X_test, cov="full"):
        """Bayesian posterior of the NNGP prior given (X_train, y_train), noise
        variance ``ridge``: mean K(Z,X)(K + rI)⁻¹y, covariance
        K(Z,Z) − K(Z,X)(K + rI)⁻¹K(X,Z) (:class:`KernelRegression`)."""
        check_fitted(self, "flow")
        self._check_cov(cov)
        if self._reg is None:
            self._reg = KernelRegression(self.nngp_train, self._Y, ridge=self.ridge)
        Xt, ks = self._test(X_test)
        mean = self._out(self._reg.predict(ks.nngp))
        if cov is None:
            return GaussianPrediction(mean, None)
        prior = self._prior(Xt, cov)
        if cov == "full":
            return GaussianPrediction(mean, self._reg.covariance(ks.nngp, prior))
        return GaussianPrediction(mean, self._reg.variance(ks.nngp, prior))

    def __repr__(self):
        if not hasattr(self, "flow"):
            return (f"InfiniteEnsemble({self.net!r}, learning_rate={self.learning_rate!r}, "
                    f"ridge={self.ridge!r})")
        return (f"InfiniteEnsemble({self.net!r}, n_train={self._X.shape[0]}, "
                f"learning_rate={self.learning_rate!r}, ridge={self.ridge!r})")
