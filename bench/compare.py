"""Engine timings against BLAS SYRK and a naive NumPy recursion, from one run.

    python bench/compare.py                  # N=8000, D in (784, 16), depth 3, f32 + f64
    python bench/compare.py --n 4000 --repeat 3 --no-naive
    python bench/compare.py --isa x86-64-v4 x86-64-v3   # AVX-512 and AVX2 kernels side by side

For each (D, dtype): our NTK time (Θ only and Σ+Θ), the naive NumPy recursion
(the textbook ReLU formulas vectorised over the whole matrix: cos θ = Σ/√(qq'),
θ = arccos, one N×N temporary per operation), BLAS ``syrk`` on the same X (the
floor: a Gram matrix must at least be formed), their ratios, and peak memory of
our call relative to its output (NumPy allocations, via tracemalloc).  Then a
depth sweep.  Ours and syrk run alternately ``--repeat`` times and the ratio is
the median of the per-pair ratios (robust to drift on a shared machine), each timed call
after a short pause (BLAS worker threads spin for a while after a threaded call);
other times are medians / best of ``--repeat``.  Quote ratios, not seconds.
``--isa``: run the tile kernel at each instruction-set level in turn (rows next to each
other, measured in the same run; ``NTKFAST_ISA`` sets a single one instead).
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc

import numpy as np
from scipy.linalg import blas
from threadpoolctl import threadpool_info

import ntkfast as nk
from ntkfast.backends import compiled


def naive_relu_ntk(X, depth, w_std=1.0, b_std=0.1):
    """The seeds' ReLU recursion, vectorised with NumPy over the whole matrix."""
    d = X.shape[1]
    w2, b2 = w_std ** 2, b_std ** 2
    sigma = w2 * (X @ X.T) / d + b2
    theta = sigma.copy()
    for _ in range(depth):
        q = np.diag(sigma).copy()
        norm = np.sqrt(np.outer(q, q))
        cos = np.clip(sigma / norm, -1.0, 1.0)
        ang = np.arccos(cos)
        edot = (np.pi - ang) / (2 * np.pi)
        e = norm * (np.sin(ang) + (np.pi - ang) * cos) / (2 * np.pi)
        theta = w2 * edot * theta + w2 * e + b2
        sigma = w2 * e + b2
    return sigma, theta


def best_time(fn, repeat):
    best = np.inf
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


#: pause before each timed call: OpenBLAS's worker threads spin for ~0.1 s after a
#: multithreaded call (syrk) and would otherwise slow whatever runs next
SETTLE_S = 0.3


def paired_times(fa, fb, repeat):
    """Median times of fa and fb and the median of the per-pair ratios fa/fb, running
    them alternately (A B A B …, after one untimed call of each) so that drift of a
    shared machine cancels; each timed call starts after a SETTLE_S pause."""
    fa()
    fb()
    ta, tb = [], []
    for _ in range(repeat):
        time.sleep(SETTLE_S)
        ta.append(best_time(fa, 1))
        time.sleep(SETTLE_S)
        tb.append(best_time(fb, 1))
    ta, tb = np.array(ta), np.array(tb)
    return np.median(ta), np.median(tb), np.median(ta / tb)


def peak_numpy_bytes(fn):
    gc.collect()
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def syrk(X):
    return (blas.dsyrk if X.dtype == np.float64 else blas.ssyrk)(1.0, X, lower=False)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=8000)
    ap.add_argument("--dims", type=int, nargs="+", default=[784, 16])
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--no-naive", action="store_true", help="skip the (slow) naive NumPy runs")
    ap.add_argument("--sweep-depths", type=int, nargs="*", default=[1, 3, 10, 20])
    ap.add_argument("--isa", nargs="+", default=None, metavar="LEVEL",
                    help=f"tile-kernel levels to compare (available here: "
                         f"{', '.join(compiled.isa_levels())}); default: the current one")
    args = ap.parse_args(argv)
    levels = args.isa or [compiled.isa()]
    for level in levels:
        if level not in compiled.isa_levels():
            ap.error(f"--isa {level}: not available here ({compiled.isa_levels()})")

    blas_info = [f"{i['internal_api']} {i.get('version')} ({i['num_threads']} thr)"
                 for i in threadpool_info() if i["user_api"] == "blas"]
    print(f"ntkfast {nk.__version__}; BLAS: {', '.join(blas_info)}; N={args.n}, "
          f"depth={args.depth}, ReLU, b_std=0.1; {args.repeat} paired runs; "
          f"tile kernel: {', '.join(levels)}\n")
    rng = np.random.default_rng(0)
    net = nk.MLP(depth=args.depth, activation="relu", w_std=1.0, b_std=0.1)
    head = (f"{'D':>4} {'dtype':>7} {'isa':>10} {'ntk s':>8} {'both s':>8} {'syrk s':>8} "
            f"{'naive s':>8} {'ntk/syrk':>9} {'naive/ntk':>10} {'peak/out':>9} "
            f"{'max rel err':>12}")
    print(head)
    print("-" * len(head))
    for d in args.dims:
        X64 = rng.standard_normal((args.n, d))
        for dtype in (np.float32, np.float64):
            X = X64.astype(dtype)
            t_naive, err_ref = np.nan, None
            if not args.no_naive:
                t_naive = best_time(lambda: naive_relu_ntk(X, args.depth), 1)
                err_ref = naive_relu_ntk(X64, args.depth)[1]
            for level in levels:
                compiled.set_isa(level)
                t_ntk, t_syrk, ratio = paired_times(lambda: net.ntk(X, n_jobs=args.jobs),
                                                    lambda: syrk(X), args.repeat)
                t_both = best_time(lambda: net.kernels(X, n_jobs=args.jobs), args.repeat)
                peak = peak_numpy_bytes(lambda: net.ntk(X, n_jobs=args.jobs))
                out_bytes = args.n * args.n * np.dtype(dtype).itemsize
                err = np.nan
                if err_ref is not None:
                    ours = net.ntk(X, n_jobs=args.jobs).astype(np.float64)
                    err = np.max(np.abs(ours - err_ref) / np.abs(err_ref).max())
                print(f"{d:>4} {np.dtype(dtype).name:>7} {level:>10} {t_ntk:8.3f} "
                      f"{t_both:8.3f} {t_syrk:8.3f} {t_naive:8.3f} {ratio:9.2f} "
                      f"{t_naive / t_ntk:10.1f} {peak / out_bytes:9.3f} {err:12.2e}",
                      flush=True)

    if args.sweep_depths:
        d = args.dims[0]
        X = rng.standard_normal((args.n, d)).astype(np.float32)
        print(f"\nDepth sweep (D={d}, float32, Θ only): median time and median time / syrk")
        for depth in args.sweep_depths:
            deep = nk.MLP(depth=depth, activation="relu", w_std=1.0, b_std=0.1)
            for level in levels:
                compiled.set_isa(level)
                t, _, ratio = paired_times(lambda: deep.ntk(X, n_jobs=args.jobs),
                                           lambda: syrk(X), args.repeat)
                print(f"  depth {depth:>3} {level:>10}: {t:8.3f} s   {ratio:6.2f} x syrk",
                      flush=True)

if __name__ == "__main__":
    main()
