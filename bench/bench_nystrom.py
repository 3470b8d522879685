"""FALKON-style Nyström regression on N = 200k, D = 784 (synthetic, seeded): time, peak RSS
and test error against the number of centres M.

    python bench/bench_nystrom.py                        # N=200000, M in 500 1000 2000
    python bench/bench_nystrom.py --n 20000 --m 500 1000 2000

Data: X ~ N(0, I_D) rows (float64, generated in chunks from a seed), targets from a
fixed teacher y = tanh(3 x·w₁/√D) + 0.5 sin(3 x·w₂/√D) + 0.1 ε; the test error is the
RMSE on n_test fresh points against the noise-free teacher (and relative to its std).
Kernel: NTK of a depth-2 ReLU MLP with b_std=0.1; ridge = ridge_rel · mean Θ(x, x).
Each M runs in its own subprocess so its peak RSS (ru_maxrss) is its own.  K_nM is
kept in memory when N·M·8 bytes fits ``--memory-budget`` (default: NystromRegression's,
min(4 GiB, RAM/4)); otherwise it is recomputed on the fly in every CG iteration.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np


def make_data(n, d, seed, offset=0):
    """Rows offset..offset+n of the seeded synthetic set (chunk-wise generation)."""
    rng_w = np.random.default_rng(seed)
    w = rng_w.standard_normal((d, 2))
    X = np.empty((n, d))
    rng = np.random.default_rng([seed, offset])
    for r in range(0, n, 50_000):
        X[r:r + 50_000] = rng.standard_normal((min(50_000, n - r), d))
    proj = 3.0 * (X @ w) / np.sqrt(d)
    f = np.tanh(proj[:, 0]) + 0.5 * np.sin(proj[:, 1])
    return X, f, f + 0.1 * rng.standard_normal(n)


def run_one(args):
    import ntkfast as nk
    from ntkfast.solve import NystromRegression
    t0 = time.perf_counter()
    X, _, y = make_data(args.n, args.d, args.seed)
    Xt, ft, _ = make_data(args.n_test, args.d, args.seed, offset=1)
    t_data = time.perf_counter() - t0
    net = nk.MLP(depth=2, activation="relu", b_std=0.1)
    ridge = args.ridge_rel * float(np.mean(net.ntk_diag(X[:10_000])))
    t0 = time.perf_counter()
    model = NystromRegression(net, X, y, n_centers=args.one, ridge=ridge,
                              centers=args.centers, tol=args.tol, maxiter=args.maxiter,
                              memory_budget=args.memory_budget, progress=args.progress)
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = model.predict(Xt)
    t_pred = time.perf_counter() - t0
    rmse = float(np.sqrt(np.mean((pred - ft) ** 2)))
    out = {"M": args.one, "fit_s": t_fit, "predict_s": t_pred, "data_s": t_data,
           "iters": model.n_iter_, "converged": bool(model.converged_),
           "cached": bool(model.kernel_cached_), "rmse": rmse,
           "rel_err": rmse / float(np.std(ft)),
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "timings": model.timings_}
    print("RESULT " + json.dumps(out))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--d", type=int, default=784)
    p.add_argument("--m", type=int, nargs="+", default=[500, 1000, 2000])
    p.add_argument("--n-test", type=int, default=10_000)
    p.add_argument("--centers", default="uniform", choices=["uniform", "leverage"])
    p.add_argument("--ridge-rel", type=float, default=1e-3)
    p.add_argument("--tol", type=float, default=1e-6)
    p.add_argument("--maxiter", type=int, default=100)
    p.add_argument("--memory-budget", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress", action="store_true")
    p.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one is not None:
        run_one(args)
        return
    print(f"N={args.n} D={args.d} n_test={args.n_test} centers={args.centers} "
          f"ridge={args.ridge_rel:g}*mean diag tol={args.tol:g} cores={os.cpu_count()}")
    print(f"{'M':>6} {'fit s':>8} {'K_nM':>7} {'iters':>5} {'predict s':>9} "
          f"{'peak RSS MB':>11} {'test RMSE':>9} {'rel err':>8}")
    base = [a for a in (argv if argv is not None else sys.argv[1:])]
    for m in args.m:
        cmd = [sys.executable, os.path.abspath(__file__), *base, "--one", str(m)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
        if res.returncode or not lines:
            print(f"{m:>6} failed: {res.stderr.strip()[-500:]}")
            continue
        r = json.loads(lines[-1][7:])
        print(f"{r['M']:>6} {r['fit_s']:>8.1f} {'cached' if r['cached'] else 'stream':>7} "
              f"{r['iters']:>5} {r['predict_s']:>9.1f} {r['peak_rss_mb']:>11.0f} "
              f"{r['rmse']:>9.4f} {r['rel_err']:>8.4f}", flush=True)
        if args.progress:
            print("   ", {k: round(v, 1) for k, v in r["timings"].items()})


if __name__ == "__main__":
    main()
