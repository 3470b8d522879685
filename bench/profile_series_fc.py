"""Where the fully-connected series path spends its time, against compiled ReLU.

    python bench/profile_series_fc.py [N] [depth] [repeats]

The data of ``bench/bench_activations.py`` (N × 64, rows of unequal norms, both
threads).  Per activation, the fastest of ``repeats`` whole ``net.kernels(X)`` calls
split into its phases (wall seconds, each also as a multiple of the whole ReLU call):
the coefficient and K tables (``_series_tables``), the panels' Gram products, the series
kernel (``_fill_series``) and the rest.  Then, per layer, on 24 sampled rows against all
columns, the mean number of series terms per element: what the kernel takes (one K per
chunk of ``SERIES_CB`` columns: the most any of them needs, estimated from the row's and
the column blocks' K tables in the bin of the chunk's largest |ρ|) and what each element
alone would need, and the median |ρ|.  The gap between the two is what smaller groups
of columns could save; the terms times ~0.085 ns per term and element (both maps from
one series, one core) plus ~2.6 ns per element and layer is the kernel's cost.
"""

import sys
import time

import numpy as np

import ntkfast as nk
from ntkfast import series
from ntkfast.backends import numba_quad as nq
from ntkfast.backends.reference import layer_variances

PHASES = {"tables": (nq, "_series_tables"), "gram": (nq._PanelGram, "__call__"),
          "kernel": (nq, "_fill_series")}


def _timed(spent):
    """Wrap the phases' functions to add their wall time to ``spent``."""
    for key, (owner, attr) in PHASES.items():
        orig = getattr(owner, attr)

        def wrapper(*a, _orig=orig, _key=key, **k):
            t0 = time.perf_counter()
            try:
                return _orig(*a, **k)
            finally:
                spent[_key] = spent.get(_key, 0.0) + time.perf_counter() - t0
        setattr(owner, attr, wrapper)


def _terms(act, net, X, rows):
    """Per layer: (mean terms per element as the kernel's chunks take them, mean terms
    each element needs alone, median |ρ|) over the sampled rows (diagonal left out)."""
    N, d = X.shape
    spec = net._spec(d)
    q = layer_variances(spec, X)[:spec.depth]
    P, c0x, kt, Qt, c0z, ktz, ktzb, lanes, CB = nq._series_tables(act, q, None, spec.depth,
                                                                   2, series.KFAST)
    S = spec.w2 * (X[rows] @ X.T / d) + spec.b2
    kcap = 2 * P.shape[2] - 2
    out = []
    for l in range(spec.depth):
        rho = np.clip(S / np.sqrt(q[l][rows][:, None] * q[l][None, :]), -1, 1)
        rho[np.arange(rows.size), rows] = 0
        bins = np.minimum((np.abs(rho) * series.NBINS).astype(int), series.NBINS - 1)
        own = np.maximum(kt[l, rows[:, None], bins],
                         kt[l, np.arange(N)[None, :], bins]).astype(np.int64)
        chunk = []
        for a, x in enumerate(rows):
            for lo in range(0, N, CB):
                hi = min(N, lo + CB)
                b = bins[a, lo:hi].max()
                K = int(max(kt[l, x, b], ktzb[l, lo // CB, b], ktzb[l, (hi - 1) // CB, b]))
                chunk.append((own[a, lo:hi].max() if K > kcap else K) * (hi - lo))
        out.append((sum(chunk) / own.size, own.mean(), np.median(np.abs(rho))))
        e, _ = act.kernel_rule(S, q[l][rows][:, None] + 0 * S, q[l][None, :] + 0 * S)
        S = spec.w2 * e + spec.b2
    return out


def main(N=4000, depth=3, repeats=3):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N, 64)) * rng.uniform(0.3, 2.0, (N, 1))
    acts = {"ReLU": nk.ReLU(), "Tanh": nk.activations.Tanh(),
            "Softplus": nk.activations.Softplus(), "SiLU": nk.activations.SiLU(),
            "Sigmoid": nk.activations.Sigmoid()}
    nets = {k: nk.MLP(depth=depth, activation=a) for k, a in acts.items()}
    for net in nets.values():
        net.kernels(X[:256], n_jobs=2)
    spent = {}
    _timed(spent)
    best = {}
    for _ in range(int(repeats)):
        for name, net in nets.items():
            vars(net.activation).pop("_diag_memo", None)
            spent.clear()
            t0 = time.perf_counter()
            net.kernels(X, n_jobs=2)
            wall = time.perf_counter() - t0
            if wall < best.get(name, (np.inf,))[0]:
                best[name] = (wall, dict(spent))
    relu = best["ReLU"][0]
    print(f"N = {N}, d = 64, depth = {depth}, n_jobs = 2; wall s (× the ReLU call)")
    print(f"{'activation':<9} {'total':>13} {'tables':>13} {'gram':>13} {'kernel':>13} "
          f"{'rest':>13}")
    for name, (wall, parts) in best.items():
        rest = wall - sum(parts.values())
        cells = [wall] + [parts.get(k, 0.0) for k in PHASES] + [rest]
        print(f"{name:<9} " + " ".join(f"{c:6.3f} ({c / relu:4.2f})" for c in cells))
    rows = rng.choice(N, 24, replace=False)
    print("\nseries terms per element and layer: kernel's chunks / each element alone "
          "(median |ρ|)")
    for name, act in acts.items():
        if name == "ReLU":
            continue
        per = _terms(act, nets[name], X, rows)
        print(f"{name:<9} " + "   ".join(f"L{l}: {c:5.1f} / {o:5.1f} ({r:.2f})"
                                         for l, (c, o, r) in enumerate(per)))


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
