"""Solvers on Gram matrices: what an infinitely wide network trained by gradient flow does.

- :class:`KernelRegression`: kernel ridge regression / GP posterior by Cholesky, with
  jitter escalation, closed-form leave-one-out and a ridge path from one ``eigh``.
- :class:`GradientFlow`: f(t) at any time(s) from one ``eigh`` of the NTK
  (df/dt = −ηΘ(f − y), sum loss ½‖f − y‖²), loss, spectral filtering, early stopping.
- :class:`InfiniteEnsemble`: mean and covariance of the NTK-GP at time t (Lee et al. 2019)
  and the NNGP posterior, from an :class:`ntkfast.MLP`.
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
