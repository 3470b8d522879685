"""Cost of a one-pass sweep: the kernel pass against the deepest single kernel, and
``ntkfast.sweep`` against a naive loop on a bundled scikit-learn dataset.

1. Kernel pass (``--pass-n``, default N = 4000, D = 64, depths 1-5 x frozen 0-2, float64,
   both threads): ``kernels_multi`` (every (depth, k) Σ and Θ; compiled engine, and the
   NumPy pass with ``--numpy``) against the deepest single ``MLP(5).kernels(X)`` (fresh
   outputs), run alternately (median of per-pair ratios of wall time, and of process
   CPU time, less sensitive to other jobs): full matrices and ``symmetrize=False``
   (upper triangles), each into fresh outputs and into reused ones (``out=``); and two
   floors: allocating and writing the same number of N x N matrices (``np.empty`` +
   fill, page faults included), and rewriting already allocated ones (memory
   bandwidth alone).  ``--pass-n 0`` skips it.
2. Dataset sweep (``--dataset``; ``--skip-dataset`` skips it):

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
(scores identical; kernels by the NumPy pass then).
Kernel pass, compiled engine: 2-core Zen 4 VM shared with two other engineers' jobs
(load 5-6), OPENBLAS_NUM_THREADS=1, N=4000, depths 1-5 x k 0-2 = 19 matrices (2.43 GB)
float64; ``python bench/sweep_speedup.py --skip-dataset --repeat 5 [--pass-d 784]``;
ratio to the deepest single kernel (fresh outputs), wall (cpu):
                                                  D=64          D=784
  before (42ab6eb; fresh outputs, full)           4.08          3.92
    its floor, single + allocate/write 17         4.78          3.21
  full matrices, fresh outputs (default)          2.84 (3.54)   3.91 (3.53)
  symmetrize=False, fresh (zero-page maps)        6.63 (6.56)   2.19 (2.69)
  floor: single + allocate/write 17 matrices      8.14 (8.36)   4.18 (4.31)
  full matrices, out= reused                      1.91 (2.02)   1.50 (1.50)
  symmetrize=False, out= reused                   1.25 (1.23)   0.99 (1.08)
  floor: single + rewrite 17 matrices             1.24 (1.33)   1.11 (1.13)
(before/after in alternate processes, a minute apart; the single kernel itself took
0.28-0.53 s at D=64 and 0.88-1.41 s at D=784 within these runs.)
Fresh outputs: the first touch of 2.4 GB (the kernel zeroing every page, faults) costs
1-3 s on this VM and varies 3x from run to run with the other jobs: more than the
single kernel itself, so <= 2x with 19 fresh dense float64 outputs is below the memory
floor here.  Reused outputs (``out=``): the full pass is within 1.5-1.9x, the upper
triangles at the floor.  The mirror (full - upper, reused outputs, D=64, the two
builds alternating): 0.39-0.40 s with plain stores, 0.19-0.30 s since it streams
whole cache lines (outputs 64-byte aligned: 0.40 -> 0.34 s before that).
Dataset sweep (``--dataset digits --frozen 0-2 --skip-naive --repeat 5``, n=1797, 12
NTKs, 4 folds): sweep 41.4 s (kernels 0.86 s, solves 40.5 s); its kernel pass,
upper triangles into uninitialised arrays 5.2x (cpu 4.8x) the deepest single NTK,
zero-page maps 5.0x (6.1x), full matrices 4.3x (4.1x): first touch again.
"""

from __future__ import annotations

import argparse
import gc
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

import ntkfast as nk  # noqa: E402
from ntkfast import sweep as S  # noqa: E402
from ntkfast.multidepth import _uninitialised, kernels_multi  # noqa: E402


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


def _paired(fa, fb, repeat):
    """fa, fb run alternately (after one untimed call of each): median wall times of
    each, the median of the per-pair wall-time ratios fa/fb (robust to drift on a
    shared machine) and the same ratio of process CPU time (user + system, all
    threads: page faults included, time lost to other jobs' threads excluded)."""
    fa()
    fb()
    wa, wb, ca, cb = [], [], [], []
    for _ in range(repeat):
        for f, ws, cs in ((fa, wa, ca), (fb, wb, cb)):
            gc.collect()
            time.sleep(0.2)
            c0, t0 = time.process_time(), time.perf_counter()
            f()
            ws.append(time.perf_counter() - t0)
            cs.append(time.process_time() - c0)
    wa, wb, ca, cb = map(np.array, (wa, wb, ca, cb))
    return (float(np.median(wa)), float(np.median(wb)), float(np.median(wa / wb)),
            float(np.median(ca / cb)))


def kernel_pass(n, d, depths, ks, repeat, numpy, n_jobs):
    """Print the sweep pass / deepest single kernel ratios (see the module docstring)."""
    X = np.random.default_rng(0).standard_normal((n, d))
    net = nk.MLP(depth=max(depths), activation="relu", b_std=0.1)
    n_mats = len({id(a) for kern in kernels_multi(net, X[:8], depths=depths,
                                                  frozen_layers=ks).values()
                  for a in kern if a is not None})
    print(f"Kernel pass: N={n} D={d} ReLU b_std=0.1 float64, depths {depths} x frozen {ks} "
          f"= {n_mats} matrices of {n * n * 8 / 1e9:.3f} GB ({n_mats * n * n * 8 / 1e9:.2f} "
          f"GB), n_jobs={n_jobs}, {repeat} paired runs; ratios = median of per-pair "
          "time / deepest single kernel (Σ+Θ, fresh outputs)")

    def single():
        return net.kernels(X, n_jobs=n_jobs)

    def multi(backend="compiled", **kw):
        return lambda: kernels_multi(net, X, depths=depths, frozen_layers=ks,
                                     n_jobs=n_jobs, backend=backend, **kw)

    threads = n_jobs or os.cpu_count() or 1

    def write(mats):
        """Write ``mats`` on ``threads`` threads (np.copyto releases the GIL)."""
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda a: np.copyto(a, 1.0), mats))
        return mats

    def row(label, f):
        t_f, t_s, r, r_cpu = _paired(f, single, repeat)
        print(f"  {label:<48s} {t_f:6.3f} s  {r:5.2f} x  cpu {r_cpu:5.2f} x  "
              f"(single {t_s:.3f} s)")
        return r, r_cpu

    # fresh outputs (np.empty, first touched by the pass's writers: page faults included)
    row("sweep pass, full matrices (default)", multi())
    row("sweep pass, symmetrize=False (upper triangles)", multi(symmetrize=False))
    r_w = row(f"floor: allocate + write {n_mats - 2} matrices",
              lambda: write([np.empty((n, n)) for _ in range(n_mats - 2)]))
    print(f"  {'':<48s} -> single + that = {1 + r_w[0]:5.2f} x  cpu {1 + r_w[1]:5.2f} x")
    # outputs reused (out=: allocated and faulted once, outside the timing)
    buf = multi()()
    row("sweep pass, full, out= reused", multi(out=buf))
    row("sweep pass, symmetrize=False, out= reused", multi(out=buf, symmetrize=False))
    mats = [a for a in {id(a): a for kern in buf.values() for a in kern}.values()]
    r_r = row(f"floor: rewrite {n_mats - 2} allocated matrices", lambda: write(mats[2:]))
    print(f"  {'':<48s} -> single + that = {1 + r_r[0]:5.2f} x  cpu {1 + r_r[1]:5.2f} x")
    del buf, mats
    if numpy:
        row("sweep pass, NumPy", multi("numpy"))


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
    p.add_argument("--pass-n", type=int, default=4000,
                   help="N of the kernel-pass benchmark (0: skip it)")
    p.add_argument("--pass-d", type=int, default=64)
    p.add_argument("--pass-depths", default="1-5")
    p.add_argument("--pass-frozen", default="0-2")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--jobs", type=int, default=None)
    p.add_argument("--numpy", action="store_true",
                   help="also time the NumPy pass (slow)")
    p.add_argument("--skip-dataset", action="store_true")
    p.add_argument("--skip-naive", action="store_true",
                   help="dataset: time the sweep and its kernel pass only")
    a = p.parse_args(argv)
    if a.pass_n:
        kernel_pass(a.pass_n, a.pass_d, S.parse_int_list(a.pass_depths, "depths"),
                    S.parse_int_list(a.pass_frozen, "frozen_layers"), a.repeat, a.numpy,
                    a.jobs)
    if a.skip_dataset:
        return
    print()
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
    net = nk.MLP(depth=max(depths))
    get = "ntk"
    n_x = Xp.shape[0]
    variants = (("upper triangles into new uninitialised arrays (the sweep)", False, True),
                ("upper triangles, zero below (symmetrize=False)", False, False),
                ("full matrices", True, False))
    for label, sym, fresh in variants:
        t_p, t_1, r, r_cpu = _paired(
            lambda: kernels_multi(net, Xp, depths=depths, frozen_layers=ks, get=get,
                                  symmetrize=sym, out=_uninitialised(depths, ks, get, n_x)
                                  if fresh else None),
            lambda: net.ntk(Xp), a.repeat)
        print(f"  its kernel pass, {label}: {t_p:.3f} s = {r:.2f} x (cpu {r_cpu:.2f} x) the "
              f"deepest single NTK ({t_1:.3f} s)")
    if a.skip_naive:
        return

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
