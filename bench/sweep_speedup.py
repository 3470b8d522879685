"""Speed-up of ``ntkfast.sweep`` over a naive loop on a bundled scikit-learn dataset.

Naive: for every (depth, frozen-layer count, ridge, fold) compute the training and
test kernels with ``MLP(depth).kernels`` (the compiled engine; frozen k > 0 through
``kernels_multi`` restricted to that single (depth, k), as MLP has no frozen layers)
and fit ``KernelRegression(K_train, Y_train, ridge)``.
Sweep: one multi-depth kernel pass per dataset, one ``eigh`` per kernel per fold.
Both use the same folds and preprocessing; the script checks that the scores agree.

    python bench/sweep_speedup.py [--dataset digits] [--depths 1-5] [--n-ridges 13]
                                  [--frozen 0] [--cv 4] [--subsample N]

OMP_WAIT_POLICY defaults to PASSIVE here: with libgomp's default spinning, BLAS calls
made right after the compiled engine (the naive loop's Cholesky solves) run several
times slower on a 2-core machine, which would flatter the sweep.  On a shared, loaded
machine also set OPENBLAS_NUM_THREADS=1 (OpenBLAS's spinning threads then stall both sides).

Measured (2-core Zen 3, loaded by other jobs, OPENBLAS_NUM_THREADS=1):
  digits n=600, depths 1-5, k=0, 13 ridges, 4 folds:      sweep 0.86 s, naive 2.71 s: 3.1x
  digits n=1797, depths 1-5, k=0-2, 13 ridges, 4 folds:   sweep 44.7 s, naive 462 s: 10.3x
(scores identical).
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

import ntkfast as nk  # noqa: E402
from ntkfast import sweep as S  # noqa: E402
from ntkfast.multidepth import kernels_multi  # noqa: E402


def naive(X, y, task, depths, ks, ridges, folds, metric):
    """{(depth, k, ridge): mean score} from separate kernels and solves."""
    Y, labels = S._targets(y, task)
    out = {}
    for depth in depths:
        for k in ks:
            if k > depth:
                continue
            net = nk.MLP(depth=depth)
            for r in ridges:
                scores = []
                for tr, te in folds:
                    if k == 0:
                        Ktr = net.ntk(X[tr])
                        Kte = net.ntk(X[te], X[tr])
                    else:
                        Ktr = kernels_multi(net, X[tr], depths=[depth], frozen_layers=[k],
                                            get="ntk")[(depth, k)].ntk
                        Kte = kernels_multi(net, X[te], X[tr], depths=[depth],
                                            frozen_layers=[k], get="ntk")[(depth, k)].ntk
                    scale = float(np.mean(np.diagonal(Ktr)))
                    off = Y[tr].mean(axis=0) if task == "regression" else 0.0
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", nk.JitterWarning)
                        reg = nk.KernelRegression(Ktr, Y[tr] - off, ridge=r * scale)
                    pred = reg.predict(Kte) + off
                    truth = labels[te] if task == "classification" else Y[te]
                    scores.append(S._score(metric, pred, truth))
                out[(depth, k, float(r))] = float(np.mean(scores))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--depths", default="1-5")
    p.add_argument("--frozen", default="0")
    p.add_argument("--ridges", default="1e-4..1e2")
    p.add_argument("--n-ridges", type=int, default=13)
    p.add_argument("--cv", type=int, default=4)
    p.add_argument("--subsample", type=int, default=None,
                   help="use the first N rows only (quick runs)")
    a = p.parse_args(argv)
    depths = S.parse_int_list(a.depths, "depths")
    ks = S.parse_int_list(a.frozen, "frozen_layers")
    ridges = S.parse_ridges(a.ridges, a.n_ridges)
    ds = S.load_dataset(a.dataset)
    X, y = ds.X, ds.y
    if a.subsample:
        X, y = X[:a.subsample], y[:a.subsample]
    Xp = S._prepare_X(X, ds.name, "standardize")
    task = S.detect_task(y)
    metric = "accuracy" if task == "classification" else "r2"
    Y, labels = S._targets(y, task)
    folds = S.make_folds(labels if task == "classification" else y, task, a.cv, 0)
    n_fits = sum(1 for d in depths for k in ks if k <= d) * len(ridges) * len(folds)
    print(f"{ds.name}: n={Xp.shape[0]} d={Xp.shape[1]} {task}; depths {depths}, frozen {ks}, "
          f"{len(ridges)} ridges, {len(folds)} folds = {n_fits} fits")

    t0 = time.perf_counter()
    res = S.sweep([(ds.name, Xp, y)], depths=depths, ridges=ridges, cv=folds,
                  frozen_layers=ks, preprocess="none")
    t_sweep = time.perf_counter() - t0
    tm = res.timings[ds.name]
    print(f"sweep: {t_sweep:8.2f} s  (kernels {tm['kernels']:.2f} s, solves {tm['solve']:.2f} s)")

    t0 = time.perf_counter()
    ref = naive(Xp, y, task, depths, ks, ridges, folds, metric)
    t_naive = time.perf_counter() - t0
    print(f"naive: {t_naive:8.2f} s  ({n_fits} x (kernels + Cholesky fit))")
    print(f"speed-up: {t_naive / t_sweep:.1f}x")

    worst = max(abs(r["score"] - ref[(r["depth"], r["frozen_layers"], r["ridge"])])
                for r in res.rows)
    print(f"max |score difference| sweep vs naive: {worst:.2e}")
    b = res.best[ds.name]
    print(f"best: depth {b['depth']}, frozen {b['frozen_layers']}, ridge {b['ridge']:.3g} "
          f"(relative), {metric} {b['score']:.4f}")


if __name__ == "__main__":
    main()
