"""Cost of quadrature activations on the 'numba' backend relative to closed-form ReLU.

    python bench/bench_quadrature.py [N] [depth]

N × N NTK (symmetric) with d = 64, normalised rows (q constant → the tabulated path) and
unnormalised rows (→ the per-element 2-D quadrature).  The per-element path costs
~n² φ evaluations per entry and layer, so it is timed on an N × M strip (M = 64 by default)
and extrapolated to the N(N+1)/2 upper-triangle entries (stated in the output).
One run each after a warm-up (compilation excluded).
"""

import sys
import time

import numpy as np

import ntkfast as nk
from ntkfast.activations import Custom, Tanh


def _t(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def main(N=4000, depth=3, strip=64):
    rng = np.random.default_rng(0)
    d = 64
    X = rng.standard_normal((N, d))
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True) * np.sqrt(d)
    relu = nk.MLP(depth=depth, activation="relu", b_std=0.1)
    relu.ntk(Xn[:256])
    t_relu = _t(lambda: relu.ntk(Xn))
    print(f"N={N} depth={depth}: ReLU compiled (closed form) {t_relu:.3f} s")
    acts = [("tanh", Tanh()), ("custom relu (polar)", Custom(lambda u: max(u, 0.0), kink=True))]
    for name, act in acts:
        net = nk.MLP(depth=depth, activation=act, b_std=0.1)
        net.ntk(Xn[:64], backend="numba")
        t_tab = _t(lambda: net.ntk(Xn, backend="numba"))
        net.ntk(X[:8], X[:8], backend="numba")
        t_strip = _t(lambda: net.ntk(X, X[:strip], backend="numba"))
        per_entry = t_strip / (N * strip)
        t_elem = per_entry * N * (N + 1) / 2
        print(f"  {name:22s} tabulated (q constant): {t_tab:8.3f} s  = {t_tab / t_relu:7.1f}x ReLU")
        print(f"  {name:22s} per element (q varies): {per_entry * 1e6:8.2f} us/entry -> "
              f"{t_elem:9.1f} s extrapolated = {t_elem / t_relu:9.0f}x ReLU")


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    main(*args)
