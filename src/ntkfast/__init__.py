"""ntkfast: infinite-width NNGP and neural tangent kernels, fast, and solvers on them.

    >>> import ntkfast as nk
    >>> net = nk.MLP(depth=3, activation="relu", w_std=1.0, b_std=0.1)
    >>> K = net.ntk(X)          # Θ(X, X), exactly symmetric
"""

from . import activations
from .activations import (ABReLU, Abs, Cos, Custom, Erf, GELU, Identity, LeakyReLU, ReLU, SiLU,
                          Sigmoid, Sin, Softplus, Tanh)
from .network import MLP, Kernels
from . import layers
from .layers import (AvgPool, Conv, Dense, FanInSum, FanOut, Flatten, GlobalAvgPool, LayerNorm,
                     parallel, serial)
from . import experiments, finite, multidepth, solve, sweep
from .multidepth import MultiKernels, kernels_multi
from .finite import FiniteMLP, finite_network
from .solve import (GradientFlow, InfiniteEnsemble, JitterWarning, KernelRegression,
                    NotPositiveDefiniteError, NystromRegression)

__version__ = "0.1.0"

__all__ = [
    "MLP", "Kernels", "activations", "layers", "serial", "parallel", "Dense", "Conv",
    "AvgPool", "GlobalAvgPool", "Flatten", "FanOut", "FanInSum", "LayerNorm",
    "solve", "KernelRegression", "GradientFlow", "InfiniteEnsemble", "JitterWarning",
    "NotPositiveDefiniteError", "finite", "experiments", "FiniteMLP", "finite_network",
    "multidepth", "sweep", "kernels_multi", "MultiKernels",
    "ReLU", "LeakyReLU", "Abs", "ABReLU", "Erf", "GELU", "Identity",
    "Tanh", "Softplus", "Sigmoid", "SiLU", "Sin", "Cos", "Custom", "NystromRegression",
    "__version__",
]


def __dir__():  # the API: not the submodules imported on the way (network, backends, ...)
    return list(__all__)
