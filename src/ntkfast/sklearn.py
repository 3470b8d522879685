"""scikit-learn integration: estimators and a Gaussian-process kernel.

scikit-learn is an optional extra (``pip install ntkfast[sklearn]``); it is
imported only by this module.

- :class:`NTKRegressor`: kernel (ridge) regression with the NTK Θ or the NNGP
  kernel Σ of an infinitely wide MLP, i.e. the infinite network trained by
  gradient flow to convergence on the squared loss (Θ), or the exact GP
  posterior mean (Σ); ``predict(X, return_std=True)`` adds the GP posterior
  standard deviation.
- :class:`NTKClassifier`: the same on one-hot targets (±1 or 0/1).
- :class:`NTKKernel`: a ``sklearn.gaussian_process.kernels.Kernel`` (for
  ``GaussianProcessRegressor``, ``KernelRidge``, and as a callable for
  ``SVC(kernel=NTKKernel(...))``), computing whole Gram matrices with the
  compiled engine.

Every hyperparameter of the network is a constructor argument:
``depth, activation, w_std, b_std, parameterization, width`` as in
:class:`ntkfast.MLP` (defaults depth=1, w_std=1.0, b_std=1.0: with a bias, see
``docs/defaults-study.md``), plus ``kernel`` ('ntk' | 'nngp'), ``dtype`` of the
kernel computation and ``n_jobs`` (threads, in scikit-learn's convention: None
means 1 unless a ``joblib.parallel_config(n_jobs=...)`` context sets it, -1 all
cores, -k all but k - 1).  Any other
architecture: ``network=nk.serial(...)`` (or an ``nk.MLP``) instead of the MLP
hyperparameters, with ``input_shape`` to view each row of the 2-D ``X`` that
scikit-learn passes as one example, e.g. ``input_shape=(8, 8, 1)`` for digits'
64 pixels as an 8×8 one-channel image.
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.gaussian_process.kernels import Hyperparameter, Kernel
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from . import _defaults
from ._threads import sklearn_n_jobs
from .network import MLP
from .solve import KernelRegression

__all__ = ["NTKRegressor", "NTKClassifier", "NTKKernel"]


def __dir__():  # the API only, not the helpers this module imports (np, numbers, ...)
    return list(__all__)

_KERNELS = ("ntk", "nngp")


def _check_kernel_name(kernel):
    if kernel not in _KERNELS:
        raise ValueError(f"kernel: must be 'ntk' or 'nngp', got {kernel!r}")
    return kernel


def _check_ridge(ridge):
    if isinstance(ridge, bool) or not isinstance(ridge, numbers.Real) \
            or not np.isfinite(ridge) or ridge < 0:
        raise ValueError(f"ridge: must be a finite number >= 0, got {ridge!r}")
    return float(ridge)


#: the MLP hyperparameters' defaults (the applications' defaults, :mod:`ntkfast._defaults`)
_MLP_DEFAULTS = dict(depth=_defaults.DEPTH, activation="relu", w_std=_defaults.W_STD,
                     b_std=_defaults.B_STD, parameterization="ntk", width=None)


class _RowsAsExamples:
    """A network whose kernel methods take 2-D X, each row viewed as ``input_shape``."""

    def __init__(self, net, input_shape):
        self.net, self.input_shape = net, input_shape

    def _view(self, X):
        if X is None or self.input_shape is None:
            return X
        X = np.asarray(X)
        size = int(np.prod(self.input_shape))
        if X.ndim != 2 or X.shape[1] != size:
            raise ValueError(f"X: input_shape={self.input_shape} needs rows of "
                             f"{size} features, got X of shape {X.shape}")
        return X.reshape((X.shape[0],) + self.input_shape)

    def ntk(self, X, Z=None, **kw):
        return self.net.ntk(self._view(X), self._view(Z), **kw)

    def nngp(self, X, Z=None, **kw):
        return self.net.nngp(self._view(X), self._view(Z), **kw)

    def ntk_diag(self, X, **kw):
        return self.net.ntk_diag(self._view(X), **kw)

    def nngp_diag(self, X, **kw):
        return self.net.nngp_diag(self._view(X), **kw)


def _build_net(obj):
    """The network of an estimator's / kernel's parameters: ``network`` (any
    architecture) or the MLP of the hyperparameters (validated by MLP)."""
    network = getattr(obj, "network", None)
    input_shape = getattr(obj, "input_shape", None)
    if input_shape is not None:
        try:
            input_shape = tuple(int(n) for n in input_shape)
        except TypeError:
            raise ValueError(f"input_shape: expected a tuple of ints such as (8, 8, 1), "
                             f"got {input_shape!r}") from None
        if not input_shape or min(input_shape) < 1:
            raise ValueError(f"input_shape: expected positive ints, got {input_shape!r}")
    if network is None:
        net = MLP(depth=obj.depth, activation=obj.activation, w_std=obj.w_std,
                  b_std=obj.b_std, parameterization=obj.parameterization, width=obj.width)
    else:
        changed = [k for k, v in _MLP_DEFAULTS.items() if getattr(obj, k) != v]
        if changed:
            raise ValueError(f"network: give either network= or the MLP hyperparameters, "
                             f"not both ({', '.join(changed)} set); put them in the network")
        if not all(callable(getattr(network, m, None)) for m in ("ntk", "nngp")):
            raise TypeError(f"network: expected an ntkfast network (nk.serial(...) or "
                            f"nk.MLP(...)), got {network!r}")
        net = network
    return net if input_shape is None else _RowsAsExamples(net, input_shape)


class _NTKModel(BaseEstimator):
    """Shared fit / kernel code of the two estimators."""

    def _gram(self, X, Z=None):
        kw = dict(dtype=self.dtype, n_jobs=sklearn_n_jobs(self.n_jobs))
        if self.kernel == "ntk":
            return self.net_.ntk(X, Z, **kw)
        return self.net_.nngp(X, Z, **kw)

    def _gram_diag(self, X):
        if self.kernel == "ntk":
            return self.net_.ntk_diag(X, dtype=self.dtype)
        return self.net_.nngp_diag(X, dtype=self.dtype)

    def _fit_targets(self, X, Y):
        _check_kernel_name(self.kernel)
        ridge = _check_ridge(self.ridge)
        self.net_ = _build_net(self)
        self.X_fit_ = X
        self.regression_ = KernelRegression(self._gram(X), Y, ridge=ridge)
        return self

    def _latent(self, X):
        """Posterior mean k(X, X_fit) α, shape (M,) or (M, k)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        Kzx = self._gram(X, self.X_fit_)
        return X, Kzx, self.regression_.predict(Kzx)


class NTKRegressor(RegressorMixin, _NTKModel):
    """Kernel regression with the NTK (or NNGP kernel) of an infinitely wide MLP.

    Parameters
    ----------
    kernel : {'ntk', 'nngp'}
        Θ: the infinitely wide network trained to convergence by gradient
        flow on the squared loss (with ``ridge`` as L2 / noise).  Σ: the
        posterior mean of the Bayesian infinite network (exact GP posterior,
        observation-noise variance ``ridge``).
    depth, activation, w_std, b_std, parameterization, width
        The network, as in :class:`ntkfast.MLP`.  Defaults: depth 1, ReLU, σ_w = 1 and
        σ_b = 1 — a bias, unlike ``MLP``'s ``b_std=None``: chosen by cross-validation on
        the bundled datasets (``docs/defaults-study.md``; without a bias iris loses 5–7
        points).
    network : network, optional
        Any architecture (``nk.serial(...)``, ``nk.MLP(...)``) instead of the MLP
        hyperparameters above.
    input_shape : tuple, optional
        The shape of one example, e.g. ``(8, 8, 1)``: each row of X is reshaped to it.
    ridge : float >= 0
        Added to the kernel diagonal, K + ridge·I (absolute, like
        ``KernelRidge(alpha=...)``).  Jitter is added (with a
        ``JitterWarning``) if K + ridge·I is numerically singular.
    dtype : 'float64' | 'float32' | None
        Dtype of the kernel computation (None: follows X).
    n_jobs : int or None
        Threads for the kernel computation, as scikit-learn's ``n_jobs``: None means
        1 unless in a ``joblib.parallel_config(n_jobs=...)`` context; -1 all cores,
        -k all but k - 1.  (Unlike the core API, where None is all cores: see
        :mod:`ntkfast._threads`.)

    Attributes
    ----------
    net_ : the network (ntkfast.MLP or ``network``);  X_fit_ : training inputs;  regression_ :
    :class:`ntkfast.KernelRegression` on K(X_fit_, X_fit_);  n_features_in_.

    Multi-output y (n_samples, n_targets) is supported.
    """

    def __init__(self, kernel="ntk", depth=_defaults.DEPTH, activation="relu",
                 w_std=_defaults.W_STD, b_std=_defaults.B_STD,
                 parameterization="ntk", width=None, ridge=1e-4, dtype="float64",
                 n_jobs=None, network=None, input_shape=None):
        self.kernel = kernel
        self.depth = depth
        self.activation = activation
        self.w_std = w_std
        self.b_std = b_std
        self.parameterization = parameterization
        self.width = width
        self.ridge = ridge
        self.dtype = dtype
        self.n_jobs = n_jobs
        self.network = network
        self.input_shape = input_shape

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.input_tags.sparse = False
        return tags

    def fit(self, X, y):
        """Factor K(X, X) + ridge·I once (Cholesky) and store the dual coefficients."""
        X, y = validate_data(self, X, y, y_numeric=True, multi_output=True,
                             dtype=[np.float64, np.float32])
        return self._fit_targets(X, np.asarray(y, dtype=np.float64))

    def predict(self, X, return_std=False):
        """Posterior mean k(X, X_fit) (K + ridge·I)⁻¹ y; with ``return_std`` also the
        GP posterior standard deviation √(k(x,x) − k(x,X)(K + ridge·I)⁻¹k(X,x)) of the
        latent function (no observation noise added), shape (M,) for 1-D y and
        (M, n_targets) for 2-D y (the same for every target).

        With kernel='nngp' this is the Bayesian posterior of the infinite network; with
        'ntk' it is the GP posterior with Θ as prior covariance (for the variance of
        an ensemble of trained networks see :class:`ntkfast.InfiniteEnsemble`).
        """
        X, Kzx, mean = self._latent(X)
        if not return_std:
            return mean
        var = self.regression_.variance(Kzx, self._gram_diag(X))
        std = np.sqrt(var)
        if mean.ndim == 2:
            std = np.repeat(std[:, None], mean.shape[1], axis=1)
        return mean, std


class NTKClassifier(ClassifierMixin, _NTKModel):
    """Classification by kernel regression on one-hot targets with the NTK / NNGP kernel.

    The targets are the one-hot encoding of y with ``target_encoding`` 'pm1'
    (+1 for the class, −1 elsewhere; Arora et al. 2020's convention for
    regression on labels) or '01' (1 / 0).  ``decision_function`` returns the
    regressed scores, shape (M, n_classes); for two classes the margin
    f_{classes_[1]} − f_{classes_[0]}, shape (M,), positive for ``classes_[1]``.
    ``predict`` is the class of the largest score.  No ``predict_proba``.

    Parameters as :class:`NTKRegressor`, plus ``target_encoding``.
    """

    def __init__(self, kernel="ntk", depth=_defaults.DEPTH, activation="relu",
                 w_std=_defaults.W_STD, b_std=_defaults.B_STD,
                 parameterization="ntk", width=None, ridge=1e-4, target_encoding="pm1",
                 dtype="float64", n_jobs=None, network=None, input_shape=None):
        self.kernel = kernel
        self.depth = depth
        self.activation = activation
        self.w_std = w_std
        self.b_std = b_std
        self.parameterization = parameterization
        self.width = width
        self.ridge = ridge
        self.target_encoding = target_encoding
        self.dtype = dtype
        self.n_jobs = n_jobs
        self.network = network
        self.input_shape = input_shape

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        return tags

    def fit(self, X, y):
        """Regress the one-hot encoding of y with K(X, X) + ridge·I."""
        if self.target_encoding not in ("pm1", "01"):
            raise ValueError(f"target_encoding: must be 'pm1' or '01', got "
                             f"{self.target_encoding!r}")
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        if self.classes_.size < 2:
            raise ValueError(f"y: NTKClassifier needs at least 2 classes, but only one "
                             f"class ({self.classes_[0]!r}) is present")
        Y = np.zeros((y_idx.size, self.classes_.size))
        Y[np.arange(y_idx.size), y_idx] = 1.0
        if self.target_encoding == "pm1":
            Y = 2.0 * Y - 1.0
        return self._fit_targets(X, Y)

    def decision_function(self, X):
        """Scores (M, n_classes); binary: f_1 − f_0, shape (M,)."""
        _, _, scores = self._latent(X)
        if self.classes_.size == 2:
            return scores[:, 1] - scores[:, 0]
        return scores

    def predict(self, X):
        _, _, scores = self._latent(X)
        return self.classes_[np.argmax(scores, axis=1)]


class NTKKernel(Kernel):
    """The NTK Θ (or NNGP kernel Σ) of an infinitely wide MLP as a scikit-learn kernel.

    Use it in ``GaussianProcessRegressor(kernel=ConstantKernel() * NTKKernel(depth=3)
    + WhiteKernel())``, ``KernelRidge(kernel=NTKKernel())`` (whole matrices, not
    pairwise calls) or ``SVC(kernel=NTKKernel())`` (SVC calls ``kernel(X, Y)``).

    The network hyperparameters are declared (``hyperparameter_w_std``,
    ``hyperparameter_b_std``, ``hyperparameter_depth``) with *fixed* bounds: the
    kernel is not differentiated with respect to them, so a GP optimizer leaves
    them alone (combine with ``ConstantKernel``/``WhiteKernel`` to fit a scale and
    a noise level).  ``eval_gradient=True`` therefore returns the gradient with
    respect to the zero free hyperparameters, an (N, N, 0) array, as
    scikit-learn's own kernels do for fixed hyperparameters.  ``diag(X)`` is
    O(N · depth).  The kernel is not stationary.
    """

    def __init__(self, kernel="ntk", depth=_defaults.DEPTH, activation="relu",
                 w_std=_defaults.W_STD, b_std=_defaults.B_STD,
                 parameterization="ntk", width=None, dtype="float64", n_jobs=None,
                 network=None, input_shape=None):
        self.kernel = kernel
        self.depth = depth
        self.activation = activation
        self.w_std = w_std
        self.b_std = b_std
        self.parameterization = parameterization
        self.width = width
        self.dtype = dtype
        self.n_jobs = n_jobs
        self.network = network
        self.input_shape = input_shape

    @property
    def hyperparameter_w_std(self):
        return Hyperparameter("w_std", "numeric", "fixed")

    @property
    def hyperparameter_b_std(self):
        return Hyperparameter("b_std", "numeric", "fixed")

    @property
    def hyperparameter_depth(self):
        return Hyperparameter("depth", "numeric", "fixed")

    def _net(self):
        _check_kernel_name(self.kernel)
        return _build_net(self)

    def __call__(self, X, Y=None, eval_gradient=False):
        """K(X, Y) as a whole matrix (Y None: K(X, X), exactly symmetric).

        eval_gradient=True (only with Y None) returns (K, an (N, N, 0) array): all
        hyperparameters are fixed.
        """
        if eval_gradient and Y is not None:
            raise ValueError("eval_gradient: the gradient can only be evaluated when Y "
                             "is None")
        net = self._net()
        kw = dict(dtype=self.dtype, n_jobs=sklearn_n_jobs(self.n_jobs))
        K = net.ntk(X, Y, **kw) if self.kernel == "ntk" else net.nngp(X, Y, **kw)
        if eval_gradient:
            return K, np.empty((K.shape[0], K.shape[0], 0), dtype=K.dtype)
        return K

    def diag(self, X):
        """k(x_i, x_i) for every row, O(N · depth) (equals np.diag(self(X)))."""
        net = self._net()
        if self.kernel == "ntk":
            return net.ntk_diag(X, dtype=self.dtype)
        return net.nngp_diag(X, dtype=self.dtype)

    def is_stationary(self):
        return False

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"NTKKernel({args})"
