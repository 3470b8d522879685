"""GradientFlow: Krylov (block Lanczos) route against the eigh route (issue 21, item 2).

    python bench/bench_dynamics.py                           # N = 2000 and 8000
    python bench/bench_dynamics.py 8000 20000 --eigh-max 8000
    python bench/bench_dynamics.py 2000 --outputs 1 --tol 1e-10
    python bench/bench_dynamics.py 20000 --eigh-max 0 --eigh-ref 12000=1568  # reuse a measurement

For each N: a depth-3 ReLU NTK (compiled engine) of N "image-like" points
(D = 784, Gaussian with a power-law covariance spectrum i^-1, like pixels), a
test kernel of ``--n-test`` points, ``--outputs`` one-hot targets from a random
linear teacher, and the issue's time grid: 100 log-spaced η·t from 0.1/λ_max to
1e4/λ_max (η = 1; λ_max from Lanczos, timed separately).  Prints side by side:

  eigh    GradientFlow(K, y, method='eigh') + predict(K_test, 100 t)
  krylov  GradientFlow(K, y, method='krylov', tol) + predict(K_test, 100 t)
          (run before and after the eigh route; the faster run is used)
  error   max over t of ‖f_krylov(t) − f_eigh(t)‖ / ‖f_eigh(t)‖ (train, test),
          and the Krylov route's own a-posteriori estimate

For N above ``--eigh-max`` the eigh route is not run: its time is extrapolated
cubically from the largest measured N (eigh is O(N³)), or from ``--eigh-ref N=SECONDS``
measured earlier, and marked "extrap.".
Timings are wall-clock on whatever else the machine is running: say so.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

import ntkfast as nk
from ntkfast.solve import GradientFlow
from ntkfast.solve.krylov import top_eigenpairs


def problem(n, n_test, outputs, seed=0):
    rng = np.random.default_rng(seed)
    d = 784
    scale = 1.0 / np.sqrt(np.arange(1, d + 1))  # power-law covariance spectrum
    X = rng.standard_normal((n + n_test, d)) * scale
    W = rng.standard_normal((d, max(outputs, 2)))
    labels = np.argmax(X @ W, axis=1)
    Y = np.eye(max(outputs, 2))[labels][:, :outputs] - 1.0 / max(outputs, 2)
    net = nk.MLP(depth=3, activation="relu")
    t0 = time.perf_counter()
    K = net.ntk(X[:n])
    Kz = net.ntk(X[n:], X[:n])
    t_kernel = time.perf_counter() - t0
    y = Y[:n, 0] if outputs == 1 else Y[:n]
    return K, Kz, y, t_kernel


def run_krylov(K, Kz, y, ts, tol):
    t0 = time.perf_counter()
    flow = GradientFlow(K, y, method="krylov", tol=tol)
    out = flow.predict(Kz, ts)
    return time.perf_counter() - t0, out, flow


def run_eigh(K, Kz, y, ts):
    t0 = time.perf_counter()
    flow = GradientFlow(K, y, method="eigh")
    t_fit = time.perf_counter() - t0
    out = flow.predict(Kz, ts)
    return time.perf_counter() - t0, t_fit, out


def rel_err(A, B, T):
    A, B = A.reshape(T, -1), B.reshape(T, -1)
    return float(np.max(np.linalg.norm(A - B, axis=1) / np.linalg.norm(B, axis=1)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sizes", nargs="*", type=int, default=[2000, 8000])
    p.add_argument("--eigh-max", type=int, default=12000,
                   help="largest N for which the eigh route is run (default 12000)")
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--outputs", type=int, default=10)
    p.add_argument("--tol", type=float, default=1e-8)
    p.add_argument("--times", type=int, default=100)
    p.add_argument("--eigh-ref", default=None, metavar="N=SECONDS",
                   help="an eigh-route time measured earlier, for the extrapolation")
    a = p.parse_args(argv)
    eigh_ref = None  # (N, seconds) of the largest measured eigh route
    if a.eigh_ref:
        n_ref, sec = a.eigh_ref.split("=")
        eigh_ref = (int(n_ref), float(sec))
    print(f"{'N':>6} {'kernel s':>9} {'lmax s':>7} {'krylov s':>9} {'(2nd)':>7} {'basis':>6} "
          f"{'eigh s':>10} {'of which eigh':>13} {'ratio':>7} {'err train':>10} "
          f"{'err test':>10} {'estimate':>9} {'maxrss GB':>9}")
    for n in a.sizes:
        K, Kz, y, t_kernel = problem(n, a.n_test, a.outputs)
        t0 = time.perf_counter()
        lmax = float(top_eigenpairs(K, 1)[0][-1])
        t_lmax = time.perf_counter() - t0
        ts = np.geomspace(0.1 / lmax, 1e4 / lmax, a.times)
        tk1, out_k, flow = run_krylov(K, Kz, y, ts, a.tol)
        err_tr = err_te = float("nan")
        if n <= a.eigh_max:
            te, te_fit, out_e = run_eigh(K, Kz, y, ts)
            eigh_ref = (n, te)
            err_tr = rel_err(out_k.train, out_e.train, a.times)
            err_te = rel_err(out_k.test, out_e.test, a.times)
            eigh_s, fit_s = f"{te:10.1f}", f"{te_fit:13.1f}"
            del out_e
            tk2 = run_krylov(K, Kz, y, ts, a.tol)[0]
        elif eigh_ref is not None:
            te = eigh_ref[1] * (n / eigh_ref[0]) ** 3
            eigh_s, fit_s = f"{te:8.0f}ex", f"extrap. N={eigh_ref[0]}"
            tk2 = run_krylov(K, Kz, y, ts, a.tol)[0]
        else:
            te, eigh_s, fit_s = float("nan"), "-", "-"
            tk2 = run_krylov(K, Kz, y, ts, a.tol)[0]
        tk = np.nanmin([tk1, tk2])
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(f"{n:6d} {t_kernel:9.1f} {t_lmax:7.1f} {tk1:9.2f} {tk2:7.2f} "
              f"{flow.krylov_size_:6d} {eigh_s:>10} {fit_s:>13} {(tk + t_lmax) / te:7.4f} "
              f"{err_tr:10.2e} {err_te:10.2e} {flow.error_estimate_.max():9.1e} {rss:9.1f}",
              flush=True)
        del K, Kz, flow, out_k
    print("ratio = (best Krylov run + lambda_max by Lanczos) / eigh route; errors: max over "
          f"the {a.times} times, relative to the eigh route; estimate: the Krylov route's "
          f"a-posteriori estimate (tol={a.tol:g}); outputs={a.outputs}, n_test={a.n_test}")


if __name__ == "__main__":
    main()
