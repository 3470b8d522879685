"""
A convolutional kernel
======================

The NTK of a CNN with global average pooling, composed with :func:`ntkfast.serial`
like neural-tangents' ``stax`` (channels last), on a few 8×8 digits; and kernel
regression with it. Convolutional kernels cost much more than fully-connected ones
(every pair of pixel positions enters), so this runs on 100 training digits.
"""

import time

import matplotlib.pyplot as plt
import numpy as np

import ntkfast as nk
from ntkfast import experiments, plotting

data = experiments.load_digits_split(n_train=100, n_test=100, seed=0)
images = data["X_train"].reshape(-1, 8, 8, 1)       # (N, H, W, C)
test_images = data["X_test"].reshape(-1, 8, 8, 1)

cnn = nk.serial(nk.Conv((3, 3), w_std=2 ** 0.5), nk.ReLU(),
                nk.Conv((3, 3), w_std=2 ** 0.5), nk.ReLU(),
                nk.GlobalAvgPool(), nk.Dense())
t0 = time.perf_counter()
theta = cnn.ntk(images)
theta_test = cnn.ntk(test_images, images)
print(f"CNN-GAP NTK of {len(images)} + {len(test_images)} x {len(images)} images "
      f"in {time.perf_counter() - t0:.1f} s")

# %%
# Kernel regression on one-hot targets, against the MLP's NTK on the same digits.
Y = np.eye(10)[data["labels_train"]]
mlp = nk.MLP(depth=2, w_std=1.5, b_std=1.0)
kernels = {"CNN-GAP": (theta, theta_test),
           "MLP": (mlp.ntk(data["X_train"]), mlp.ntk(data["X_test"], data["X_train"]))}
for name, (K, Kt) in kernels.items():
    model = nk.KernelRegression(K, Y, ridge=1e-6 * np.mean(np.diag(K)))
    acc = np.mean(model.predict(Kt).argmax(1) == data["labels_test"])
    print(f"{name:8s} test accuracy {acc:.1%} on {len(Kt)} digits")

# %%
# The CNN kernel sorted by class, beside its normalized version.
plotting.plot_kernel_heatmap(dict(theta=theta, labels=data["labels_train"],
                                  title="CNN-GAP NTK on 100 digits"), fig=plt.figure())
plt.show()
