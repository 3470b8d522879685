"""Test accuracy of MLP and convolutional NTKs on scikit-learn's digits (8×8 images).

    python bench/digits_architectures.py [--n-train 1200]

The demo's split (``ntkfast.experiments.load_digits_split``, seed 0: 1200 training and
597 test digits), kernel regression on one-hot targets (the demo's solver), and each
kernel's time.  The images are the 64 pixels of each row as an 8×8×1 image, not
upsampled.  The conv kernels run on the NumPy layer-rule engine (the compiled conv
engine is a separate issue), so CNN-GAP (all P² = 4096 pixel pairs per image pair) takes
minutes; CNN-Flatten needs only the 64 same-position pairs.
"""

import argparse
import time

import numpy as np

import ntkfast as nk
from ntkfast import experiments as E
from ntkfast.apps.demo import kernel_regression


def networks():
    conv = dict(w_std=2 ** 0.5, b_std=0.1)
    return {
        "MLP, depth 2 (the demo's)": (nk.MLP(2, "relu", 1.5, 1.0), False),
        "CNN-Flatten: (conv3x3-relu)x2, flatten, dense": (nk.serial(
            nk.Conv((3, 3), **conv), nk.ReLU(), nk.Conv((3, 3), **conv), nk.ReLU(),
            nk.Flatten(), nk.Dense(1.0, 0.1)), True),
        "CNN-GAP: (conv3x3-relu)x2, global avg pool, dense": (nk.serial(
            nk.Conv((3, 3), **conv), nk.ReLU(), nk.Conv((3, 3), **conv), nk.ReLU(),
            nk.GlobalAvgPool(), nk.Dense(1.0, 0.1)), True),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-train", type=int, default=1200)
    a = p.parse_args()
    d = E.load_digits_split(a.n_train, 1797 - a.n_train, 0)
    Y = np.eye(10)[d["labels_train"]]
    print(f"digits: {len(d['X_train'])} train, {len(d['X_test'])} test")
    for name, (net, image) in networks().items():
        shape = (-1, 8, 8, 1) if image else (-1, 64)
        Xtr, Xte = d["X_train"].reshape(shape), d["X_test"].reshape(shape)
        t = time.perf_counter()
        Ktr, Kte = net.ntk(Xtr), net.ntk(Xte, Xtr)
        t = time.perf_counter() - t
        acc = np.mean(kernel_regression(Ktr, Kte, Y).argmax(1) == d["labels_test"])
        print(f"{name}: test accuracy {acc:.2%}, kernels {t:.1f} s", flush=True)


if __name__ == "__main__":
    main()
