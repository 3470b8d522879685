"""
Training dynamics
=================

Gradient flow on :math:`\\tfrac12\\|f(X) - y\\|^2` moves an infinitely wide network as
:math:`df/dt = -\\eta\\,\\Theta\\,(f - y)`, so after one eigendecomposition of
:math:`\\Theta` its outputs are known at every time:

.. math::

   f_{\\mathrm{train}}(t) &= y + e^{-\\eta\\Theta t}(f_0 - y), \\\\
   f_{\\mathrm{test}}(t) &= f_0(Z) + \\Theta(Z, X)\\,\\Theta^{-1}(I - e^{-\\eta\\Theta t})(y - f_0(X)).

:class:`ntkfast.GradientFlow` computes them; here we compare with a finite network of
width 512 trained by gradient descent (step :math:`s` is time :math:`t = s`).
"""

import matplotlib.pyplot as plt
import numpy as np

import ntkfast as nk

rng = np.random.default_rng(0)
x = np.sort(rng.uniform(-3, 3, 12))[:, None]
y = np.sin(x[:, 0])
grid = np.linspace(-3.5, 3.5, 200)[:, None]

net = nk.MLP(depth=2, activation="relu", w_std=1.5, b_std=1.0)
theta = net.ntk(x)
theta_grid = net.ntk(grid, x)
flow = nk.GradientFlow(theta, y, learning_rate=1.0)
eta = 0.5 * flow.max_learning_rate()      # a stable step size for gradient descent
flow = nk.GradientFlow(theta, y, learning_rate=eta)

# %%
# Outputs at several times, from the mean initialisation :math:`f_0 = 0`; and the loss
# and the residual along each eigendirection, which decays as :math:`e^{-\eta\lambda_k t}`:
# large eigenvalues are learned first.
times = [10, 100, 1000, np.inf]
pred = flow.predict(theta_grid, times)
ts = np.geomspace(1, 1e5, 60)
resid = np.abs(flow.residuals_by_eigendirection(ts))       # (T, N), ascending λ

finite = net.finite(512, seed=0, d=1)
f0_x, f0_grid = finite(x)[:, 0], finite(grid)[:, 0]
finite.train(x, y, eta, 1000)
flow_f0 = flow.predict(theta_grid, 1000, f0_train=f0_x, f0_test=f0_grid)

fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
for t, f, c in zip(times, pred.test, plt.cm.viridis(np.linspace(0, 0.9, len(times)))):
    a1.plot(grid, f, color=c, label=f"NTK, $t$ = {t:g}".replace("inf", r"$\infty$"))
a1.plot(grid, finite(grid)[:, 0], "r-", lw=1, label="width 512 after 1000 steps")
a1.plot(grid, flow_f0.test, "k--", lw=1, label="NTK from its $f_0$, $t$ = 1000")
a1.plot(x, y, "ko", label="training points")
a1.set_xlabel("$x$")
a1.set_ylabel("$f(x)$")
a1.legend(fontsize=7)
for k, c in zip(range(len(y)), plt.cm.plasma(np.linspace(0, 0.85, len(y)))):
    a2.loglog(ts, np.maximum(resid[:, k], 1e-12), color=c)
a2.set_ylim(1e-8, None)
a2.set_xlabel("time $t$")
a2.set_ylabel(r"$|v_k^\top(y - f_t)|$")
a2.set_title(r"one curve per eigenvalue $\lambda_k$ (bright: large)", fontsize=10)
fig.tight_layout()
plt.show()
