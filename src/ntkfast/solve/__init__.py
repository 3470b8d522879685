"""Solvers on Gram matrices: what an infinitely wide network trained by gradient flow does.

- :class:`KernelRegression`: kernel ridge regression / GP posterior by Cholesky, with
  jitter escalation, closed-form leave-one-out and a ridge path from one ``eigh``.
- :class:`GradientFlow`: f(t) at any time(s) (df/dt = −ηΘ(f − y), sum loss ½‖f − y‖²)
  from one ``eigh`` of the NTK, or for large N from a block Lanczos basis with an
  a-posteriori error estimate (:mod:`ntkfast.solve.krylov`); loss, spectral filtering,
  early stopping.
- :class:`InfiniteEnsemble`: mean and covariance of the NTK-GP at time t (Lee et al. 2019)
  and the NNGP posterior, from an :class:`ntkfast.MLP`.
- :class:`NystromRegression`: Nyström + FALKON for N beyond one Gram matrix.

Every solver has two equivalent forms: ``Solver(train data, hyperparameters)`` fits on
construction, ``Solver(hyperparameters).fit(train data)`` is the estimator style.  Names
are shared: ``k_train_train``/``y_train`` and ``predict(k_test_train[, t])`` for the
kernel solvers, ``X_train``/``y_train`` and ``predict(X_test[, t])`` for the ones that
compute their kernels from a network; ``ridge``, ``learning_rate``, ``tol``.
"""

from ._checks import NotPositiveDefiniteError
from .dynamics import EarlyStopping, FlowPrediction, GradientFlow
from .ensemble import GaussianPrediction, InfiniteEnsemble
from .regression import JitterWarning, KernelRegression, RidgePath
from .mixed_precision import ConvergenceWarning, MixedPrecision, MixedPrecisionInfo
from .nystrom import NystromRegression

__all__ = [
    "KernelRegression", "GradientFlow", "InfiniteEnsemble",
    "RidgePath", "FlowPrediction", "EarlyStopping", "GaussianPrediction",
    "JitterWarning", "NotPositiveDefiniteError", "NystromRegression",
    "MixedPrecision", "MixedPrecisionInfo", "ConvergenceWarning",
]
