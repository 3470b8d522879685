"""
Digits with the NTK
===================

A small version of ``ntkfast demo``: the NTK of a depth-2 ReLU network on
scikit-learn's bundled 8×8 digits, kernel regression on one-hot targets, and the kernel
itself, sorted by class, beside the normalized kernel
:math:`\\Theta(x,x')/\\sqrt{\\Theta(x,x)\\,\\Theta(x',x')}`.
"""

import time

import matplotlib.pyplot as plt
import numpy as np

import ntkfast as nk
from ntkfast import experiments, plotting

# %%
# Data: 600 training and 400 test digits, pixels centred and every row scaled to norm
# √64 (``ntkfast.experiments.load_digits_split``, the demo's preprocessing).
data = experiments.load_digits_split(n_train=600, n_test=400, seed=0)
X, Z = data["X_train"], data["X_test"]

net = nk.MLP(depth=2, activation="relu", w_std=1.5, b_std=1.0)
t0 = time.perf_counter()
theta = net.ntk(X)              # Θ(X, X), (600, 600)
theta_test = net.ntk(Z, X)      # Θ(Z, X), (400, 600)
print(f"kernels in {time.perf_counter() - t0:.2f} s")

# %%
# Kernel regression, :math:`\hat y = \Theta(Z, X)\,(\Theta(X, X) + \epsilon I)^{-1} Y`,
# is the infinitely wide network trained to convergence on the squared loss.
Y = np.eye(10)[data["labels_train"]]
model = nk.KernelRegression(theta, Y, ridge=1e-6 * np.mean(np.diag(theta)))
scores = model.predict(theta_test)
accuracy = np.mean(scores.argmax(1) == data["labels_test"])
print(f"test accuracy {accuracy:.1%} on {len(Z)} digits")

# %%
# The kernel, sorted by class. Θ itself mostly shows the inputs' norms; the normalized
# kernel shows the blocks of digits the network treats as alike.
n = 200
plotting.plot_kernel_heatmap(
    dict(theta=theta[:n, :n], labels=data["labels_train"][:n],
         title=f"NTK of {net} on {n} digits"), fig=plt.figure())
plt.show()
