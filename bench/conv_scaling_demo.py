"""Scaling demo of the compiled conv engine: the CNN-GAP NTK of all of scikit-learn's
digits, its kernel-regression accuracy, and the cost per entry on 32×32×3 images.

    python bench/conv_scaling_demo.py [--n-jobs 2] [--dtype float64] [--n-cifar 8]

1. K(X, X) of all 1797 digits (sklearn has 1797, not 2000), 8×8×1 images as they
   are (not upsampled), ``parse_architecture('cnn-gap')``: (conv3-relu)×2 (σ_w = √2,
   σ_b = 0.1), global average pool, dense: all 4096 pixel pairs per image pair.
   The demo's preprocessing and split (``experiments.load_digits_split``, seed 0:
   1200 train, 597 test), kernel regression on one-hot labels (the demo's solver) on
   the train × train and test × train blocks of that one K.
2. The same network on N random 32×32×3 images (CIFAR-sized: P² ≈ 1.05 M pixel pairs
   per image pair): seconds per kernel entry of K(X, X) (the better of two runs), and
   the estimate for CIFAR-10's 50 000 × 50 000 training kernel (N²/2 pairs).
"""

import argparse
import os
import time

import numpy as np


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-jobs", type=int, default=2)
    p.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    p.add_argument("--n-cifar", type=int, default=8)
    a = p.parse_args()
    from ntkfast import experiments as E
    from ntkfast.apps.demo import kernel_regression
    from ntkfast.architecture_spec import parse_architecture

    net = parse_architecture("cnn-gap")
    dtype = np.dtype(a.dtype)
    print(f"# {os.cpu_count()} cores, n_jobs={a.n_jobs}, {dtype.name}; network "
          f"cnn-gap = {net}")
    d = E.load_digits_split(1200, 597, 0)
    X = np.concatenate([d["X_train"], d["X_test"]]).reshape(-1, 8, 8, 1).astype(dtype)
    n, ntr = X.shape[0], d["X_train"].shape[0]
    t = time.perf_counter()
    K = net.ntk(X, n_jobs=a.n_jobs)
    secs = time.perf_counter() - t
    Y = np.eye(10)[d["labels_train"]]
    pred = kernel_regression(K[:ntr, :ntr].astype(np.float64),
                             K[ntr:, :ntr].astype(np.float64), Y)
    acc = np.mean(pred.argmax(1) == d["labels_test"])
    print(f"digits: K(X, X) {n}x{n} (8x8x1, not upsampled) in {secs:.1f} s "
          f"({secs / (n * (n + 1) / 2) * 1e6:.1f} us per pair); kernel regression "
          f"{ntr} train / {n - ntr} test: accuracy {acc:.2%}", flush=True)

    Xc = np.random.default_rng(0).standard_normal((a.n_cifar, 32, 32, 3)).astype(dtype)
    net.ntk(Xc[:2], n_jobs=a.n_jobs)  # warm-up
    best = float("inf")
    for _ in range(2):
        t = time.perf_counter()
        net.ntk(Xc, n_jobs=a.n_jobs)
        best = min(best, time.perf_counter() - t)
    m = a.n_cifar
    per_pair = best / (m * (m + 1) / 2)
    cifar = 50_000 ** 2 / 2 * per_pair
    print(f"32x32x3: K(X, X) of {m} images in {best:.2f} s: {best / m ** 2 * 1e3:.1f} ms per "
          f"entry, {per_pair * 1e3:.1f} ms per pair computed; CIFAR-10 training kernel "
          f"(50 000^2 / 2 pairs) ~ {cifar / 3600:.0f} h = {cifar / 86400:.1f} days on "
          f"{a.n_jobs} threads of this machine")


if __name__ == "__main__":
    main()
