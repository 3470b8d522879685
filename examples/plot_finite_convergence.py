"""
Finite networks converge to the NTK
===================================

At initialisation, the empirical NTK of a network of hidden width :math:`n`,
:math:`\\Theta_{\\mathrm{emp}}(x, z) = \\langle \\partial_\\theta f(x), \\partial_\\theta f(z)\\rangle`,
converges to the infinite-width kernel :math:`\\Theta_\\infty` as :math:`n \\to \\infty`,
with fluctuations of order :math:`n^{-1/2}` (Jacot et al. 2018). Here on 24 digits,
four random initialisations per width.
"""

import matplotlib.pyplot as plt

import ntkfast as nk
from ntkfast import experiments, plotting

data = experiments.load_digits_split(n_train=24, n_test=0, seed=1)
X = data["X_train"]
net = nk.MLP(depth=2, activation="relu", w_std=1.5, b_std=1.0)

# %%
# One finite network and its empirical NTK, against the infinite-width kernel:
f = net.finite(256, seed=0)
theta_emp = f.empirical_ntk(X)
theta_inf = net.ntk(X)
print(f"width 256: relative error {abs(theta_emp - theta_inf).max() / theta_inf.max():.3f}")

# %%
# The relative error :math:`\|K_{\mathrm{emp}} - K_\infty\|_F / \|K_\infty\|_F` for
# both kernels over widths and seeds, and the fitted log-log slope (theory: −1/2).
res = experiments.kernel_convergence(net, X, widths=[16, 32, 64, 128, 256, 512, 1024],
                                     n_seeds=4, seed=0)
print(f"log-log slope: NTK {res['ntk_slope']:.2f}, NNGP {res['nngp_slope']:.2f}")
plotting.plot_kernel_convergence(res, fig=plt.figure())
plt.show()
