"""Overhead ratios of the solver layer (issue 4 targets).

    python bench/solve_ratios.py                # N = 4000
    python bench/solve_ratios.py 4000 16000     # both sizes (16000: tens of GB-seconds)
    python bench/solve_ratios.py 16000 --no-dynamics   # Cholesky ratios only

Prints, for each N (best of ``--repeat`` runs, one process, same matrix):
  fit / cho_factor        KernelRegression(K, y) / scipy.linalg.cho_factor(K)   target <= 1.1
  fit(in place) / bare    overwrite=True / cho_factor(overwrite_a=True, check_finite=False)
  100 times / eigh        GradientFlow.predict(100 times [, test kernel]) / one eigh   target <= 0.1
  flow / eigh             GradientFlow(K, y, method='eigh') construction / one scipy.linalg.eigh(K)
(the Krylov route of GradientFlow is measured by bench/bench_dynamics.py)
The kernel is a Gaussian (RBF) Gram of random 32-D points: SPD, unit diagonal.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import scipy.linalg as sla

from ntkfast.solve import GradientFlow, KernelRegression  # noqa: E402


def rbf_gram(X, Z=None):
    Z = X if Z is None else Z
    sq = (X * X).sum(1)[:, None] + (Z * Z).sum(1)[None, :] - 2.0 * (X @ Z.T)
    K = np.exp(-np.maximum(sq, 0.0) / (2.0 * X.shape[1]))
    if Z is X:
        K += K.T
        K *= 0.5
        K[np.diag_indices(len(K))] += 1e-6  # well conditioned enough for an unjittered factor
    return K


def interleaved(pairs, repeat):
    """Best-of-``repeat`` times of each (fn, setup) pair, as (wall, cpu) lists.

    Runs are interleaved so that load changes on a shared machine hit every
    candidate alike; the process CPU time is the steadier measure under load
    (exact for single-threaded BLAS, OPENBLAS_NUM_THREADS=1)."""
    wall, cpu = [np.inf] * len(pairs), [np.inf] * len(pairs)
    for _ in range(repeat):
        for i, (fn, setup) in enumerate(pairs):
            arg = setup() if setup else None
            t0, c0 = time.perf_counter(), time.process_time()
            fn(arg)
            wall[i] = min(wall[i], time.perf_counter() - t0)
            cpu[i] = min(cpu[i], time.process_time() - c0)
            del arg
    return wall, cpu


def _ratio(label, names, wall, cpu, num, den, target=None):
    tgt = "" if target is None else f"  (target <= {target})"
    print(f"  {label}: {names[num]} / {names[den]} = {wall[num] / wall[den]:.3f} wall, "
          f"{cpu[num] / cpu[den]:.3f} cpu{tgt}")


def run(n, repeat, dynamics, n_test):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, 32))
    K = rbf_gram(X)
    y = rng.standard_normal(n)
    names = ["cho_factor(K)", "KernelRegression(K, y)",
             "cho_factor(K, overwrite_a=True, check_finite=False)",
             "KernelRegression(K, y, overwrite=True)"]
    wall, cpu = interleaved([
        (lambda _: sla.cho_factor(K), None),
        (lambda _: KernelRegression(K, y), None),
        (lambda a: sla.cho_factor(a, overwrite_a=True, check_finite=False),
         lambda: np.array(K, order="F")),
        (lambda a: KernelRegression(a, y, overwrite=True), lambda: K.copy()),
    ], repeat)
    print(f"N={n}  (best of {repeat}; seconds wall/cpu: "
          + ", ".join(f"{nm} {w:.3f}/{c:.3f}" for nm, w, c in zip(names, wall, cpu)) + ")")
    _ratio("fit", names, wall, cpu, 1, 0, 1.1)
    _ratio("fit in place", names, wall, cpu, 3, 2)
    if not dynamics:
        return
    flow = []
    r = max(1, repeat // 2)
    names = ["eigh(K)", "GradientFlow(K, y)"]
    wall, cpu = interleaved([(lambda _: sla.eigh(K), None),
                             (lambda _: flow.append(GradientFlow(K, y, method="eigh")), None)], r)
    flow = flow[-1]
    ts = np.concatenate([np.geomspace(1e-3, 1e4, 99), [np.inf]])
    Kz = rbf_gram(rng.standard_normal((n_test, 32)), X)
    w2, c2 = interleaved([(lambda _: flow.predict(t=ts), None),
                          (lambda _: flow.predict(Kz, ts), None),
                          (lambda _: flow.loss(ts), None)], repeat)
    names += ["predict(100 t)", f"predict(100 t, {n_test} test)", "loss(100 t)"]
    wall, cpu = wall + w2, cpu + c2
    print(f"N={n}  (seconds wall/cpu: "
          + ", ".join(f"{nm} {w:.4f}/{c:.4f}" for nm, w, c in zip(names, wall, cpu)) + ")")
    _ratio("dynamics", names, wall, cpu, 2, 0, 0.1)
    _ratio("dynamics", names, wall, cpu, 3, 0, 0.1)
    _ratio("dynamics", names, wall, cpu, 4, 0)
    _ratio("setup", names, wall, cpu, 1, 0)

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sizes", nargs="*", type=int, default=[4000])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--no-dynamics", action="store_true", help="skip the eigh-based ratios")
    a = p.parse_args(argv)
    for n in a.sizes:
        run(n, a.repeat, not a.no_dynamics, a.n_test)


if __name__ == "__main__":
    main()
