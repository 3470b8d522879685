"""A serial network that is a fully-connected chain runs on the MLP's compiled engine.

    python bench/serial_fastpath.py [--n 4000] [--d 784] [--repeat 7]

Times ``nk.MLP(depth=3).ntk(X)`` and ``nk.serial(Dense, [ReLU, Dense] * 3).ntk(X)``
alternately (same data, same threads) and prints the median of the per-pair ratios
(serial / MLP; 1.00 means the serial form costs nothing extra) and the maximum relative
difference of the results.
"""

import argparse
import statistics
import time

import numpy as np

import ntkfast as nk


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=4000)
    p.add_argument("--d", type=int, default=784)
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--dtype", default="float32")
    a = p.parse_args()
    X = np.random.default_rng(0).standard_normal((a.n, a.d)).astype(a.dtype)
    mlp = nk.MLP(depth=3, activation="relu", w_std=1.4, b_std=0.1)
    chain = nk.serial(nk.Dense(1.4, 0.1), *[l for _ in range(3)
                                            for l in (nk.ReLU(), nk.Dense(1.4, 0.1))])
    K1, K2 = mlp.ntk(X), chain.ntk(X)  # warm-up
    diff = float(np.max(np.abs(K1.astype(float) - K2)) / np.max(np.abs(K1)))
    ratios, t_mlp, t_chain = [], [], []
    for _ in range(a.repeat):
        t0 = time.perf_counter()
        mlp.ntk(X)
        t1 = time.perf_counter()
        chain.ntk(X)
        t2 = time.perf_counter()
        t_mlp.append(t1 - t0)
        t_chain.append(t2 - t1)
        ratios.append((t2 - t1) / (t1 - t0))
    print(f"N={a.n} D={a.d} {a.dtype}, depth-3 ReLU NTK, {a.repeat} alternating pairs")
    print(f"MLP    median {statistics.median(t_mlp):.3f} s")
    print(f"serial median {statistics.median(t_chain):.3f} s")
    print(f"serial / MLP  median of per-pair ratios {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f}); max rel. difference {diff:.1e}")


if __name__ == "__main__":
    main()
