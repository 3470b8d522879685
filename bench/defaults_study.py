"""Which σ_w, σ_b and depth make good defaults?  A cross-validated study on the bundled
scikit-learn datasets (iris, wine, breast_cancer, digits).

    python bench/defaults_study.py            # the full grid, minutes
    python bench/defaults_study.py --quick    # iris and wine only, seconds

Part 1 (what ``ntkfast sweep`` does, with one Cholesky per ridge instead of its eigh,
cheaper for 7 ridges): for every (σ_w, σ_b) of the grid, ReLU networks of depth 1–5
(all from one :func:`ntkfast.kernels_multi` pass), the NTK Θ and the NNGP kernel Σ,
inputs standardised (z-scored per feature, as the CLI does), the 4 stratified folds of
``ntkfast sweep`` (seed 0), kernel regression on one-hot ±1 targets
(:class:`ntkfast.KernelRegression`); each (kernel, depth) takes its best ridge of 7
ridges 1e-4, 1e-3, …, 1e2 relative to mean diag(K_train).  Two numbers per
(σ_w, σ_b) and dataset: the best accuracy over kernel, depth and ridge (what `ntkfast
sweep` reports), and the mean over the 10 (kernel, depth) pairs at their best ridge
(how much a user loses with a depth or kernel that is not the best: robustness).
The ridge is chosen on the test folds, so absolute accuracies are optimistic by the
same small amount for every configuration; compare rows, not against other methods.

Part 2 (what a user of :mod:`ntkfast.sklearn` gets without tuning anything):
``cross_val_score(make_pipeline(StandardScaler(), NTKClassifier(...)))`` on the same
folds, at the estimator's default ridge (1e-4, absolute), for the old defaults
(b_std=None), the shipped defaults (:mod:`ntkfast._defaults`) and variations of depth
and ridge, and, as the reference the issue quotes, LogisticRegression and SVC.

Prints markdown tables (pasted into ``docs/defaults-study.md``); ``--csv`` writes every
row of part 1.
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import numpy as np
from threadpoolctl import threadpool_limits

import ntkfast as nk
from ntkfast import _defaults
from ntkfast.solve import JitterWarning, KernelRegression
from ntkfast.sweep import load_dataset, make_folds

DATASETS = ("iris", "wine", "breast_cancer", "digits")
W_STDS = (1.0, math.sqrt(2.0), 2.0)
B_STDS = (None, 0.1, 0.3, 1.0, 3.0)
DEPTHS = (1, 2, 3, 4, 5)
RIDGES = tuple(np.logspace(-4, 2, 7))   # relative to mean diag(K_train)
CV, SEED = 4, 0                          # the folds of `ntkfast sweep` (its defaults)


def _fmt_std(v):
    if v is None:
        return "none"
    return "√2" if abs(v - math.sqrt(2.0)) < 1e-12 else f"{v:g}"


def _standardized(X):
    """z-score each feature (constant features only centred), as ``ntkfast sweep``."""
    X = np.array(X, dtype=np.float64)
    X -= X.mean(axis=0)
    sd = X.std(axis=0)
    return X / np.where(sd > 0, sd, 1.0)


def _load(datasets):
    """{name: (standardised X, labels, one-hot ±1 Y, folds)}: the folds of `ntkfast sweep`."""
    out = {}
    for name in datasets:
        ds = load_dataset(name)
        classes, labels = np.unique(ds.y, return_inverse=True)
        Y = -np.ones((labels.size, classes.size))
        Y[np.arange(labels.size), labels] = 1.0
        out[name] = (_standardized(ds.X), labels, Y,
                     make_folds(labels, "classification", CV, SEED))
    return out


def _cv_accuracy(K, labels, Y, folds, ridges):
    """Mean accuracy over the folds for each relative ridge r: kernel regression with
    K_train + r · mean(diag K_train) · I (one Cholesky per fold and ridge)."""
    acc = np.zeros(len(ridges))
    for tr, te in folds:
        Ktr, Kte = K[np.ix_(tr, tr)], K[np.ix_(te, tr)]
        scale = float(np.mean(np.diagonal(Ktr)))
        for i, r in enumerate(ridges):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", JitterWarning)
                f = KernelRegression(Ktr, Y[tr], ridge=r * scale).predict(Kte)
            acc[i] += np.mean(np.argmax(f, axis=1) == labels[te]) / len(folds)
    return acc


def part1(data, w_stds, b_stds, n_jobs, csv_path=None):
    """{(w, b): {dataset: (best, robust, best_row, rows per (kernel, depth))}}."""
    results, all_rows = {}, []
    for w in w_stds:
        for b in b_stds:
            t = time.perf_counter()
            net = nk.MLP(depth=max(DEPTHS), w_std=w, b_std=b)
            per = {}
            for name, (X, labels, Y, folds) in data.items():
                mk = nk.kernels_multi(net, X, depths=DEPTHS, n_jobs=n_jobs)
                summary = []
                for depth in DEPTHS:
                    for kind in ("ntk", "nngp"):
                        K = getattr(mk[(depth, 0)], kind)
                        acc = _cv_accuracy(K, labels, Y, folds, RIDGES)
                        all_rows += [dict(w_std=w, b_std=b, dataset=name, kernel=kind,
                                          depth=depth, ridge=r, accuracy=a)
                                     for r, a in zip(RIDGES, acc)]
                        k = int(np.argmax(acc))
                        summary.append(dict(kernel=kind, depth=depth, ridge=RIDGES[k],
                                            score=float(acc[k])))
                best = max(summary, key=lambda r: r["score"])
                per[name] = (best["score"], float(np.mean([r["score"] for r in summary])),
                             best, summary)
            results[(w, b)] = per
            print(f"  σ_w={_fmt_std(w)} σ_b={_fmt_std(b)}: "
                  + ", ".join(f"{n} {per[n][0]:.3f}/{per[n][1]:.3f}" for n in data)
                  + f"  ({time.perf_counter() - t:.0f} s)", flush=True)
    if csv_path:
        import csv
        with open(csv_path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(all_rows[0]))
            w.writeheader()
            w.writerows(all_rows)
    return results


def table1(results, datasets):
    head = ("| σ_w | σ_b | " + " | ".join(f"{d} best / mean" for d in datasets)
            + " | mean best | mean of means |")
    lines = [head, "|" + "---:|" * (2 + len(datasets) + 2)]
    for (w, b), per in results.items():
        best = np.mean([per[d][0] for d in datasets])
        robust = np.mean([per[d][1] for d in datasets])
        cells = " | ".join(f"{per[d][0]:.3f} / {per[d][1]:.3f}" for d in datasets)
        lines.append(f"| {_fmt_std(w)} | {_fmt_std(b)} | {cells} | {best:.4f} | "
                     f"{robust:.4f} |")
    return "\n".join(lines)


def table_depths(results, key, datasets):
    """Accuracy per depth (best ridge; NTK / NNGP) for one (w, b)."""
    per = results[key]
    lines = ["| dataset | " + " | ".join(f"depth {d} Θ / Σ" for d in DEPTHS) + " |",
             "|---|" + "---:|" * len(DEPTHS)]
    for name in datasets:
        summary = per[name][3]
        cells = []
        for depth in DEPTHS:
            s = {r["kernel"]: r["score"] for r in summary if r["depth"] == depth}
            cells.append(f"{s.get('ntk', float('nan')):.3f} / {s.get('nngp', float('nan')):.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def part2(datasets, configs, n_jobs):
    """Accuracy of NTKClassifier (default ridge) and two classical baselines."""
    from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    from ntkfast.sklearn import NTKClassifier

    loaders = dict(iris=load_iris, wine=load_wine, breast_cancer=load_breast_cancer,
                   digits=load_digits)
    models = {label: NTKClassifier(n_jobs=n_jobs, **kw) for label, kw in configs}
    models["LogisticRegression"] = LogisticRegression(max_iter=5000)
    models["SVC (RBF)"] = SVC()
    folds = StratifiedKFold(4, shuffle=True, random_state=0)
    out = {}
    for label, model in models.items():
        out[label] = {}
        for name in datasets:
            X, y = loaders[name](return_X_y=True)
            pipe = make_pipeline(StandardScaler(), model)
            out[label][name] = float(np.mean(cross_val_score(pipe, X, y, cv=folds)))
    lines = ["| model | " + " | ".join(datasets) + " | mean |",
             "|---|" + "---:|" * (len(datasets) + 1)]
    for label, per in out.items():
        lines.append(f"| {label} | " + " | ".join(f"{per[d]:.3f}" for d in datasets)
                     + f" | {np.mean(list(per.values())):.4f} |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="iris and wine only")
    p.add_argument("--jobs", type=int, default=1,
                   help="threads of the kernels and of BLAS (default: 1; many small "
                   "Cholesky factorisations run fastest single-threaded, and far faster "
                   "so on a busy machine)")
    p.add_argument("--w-std", type=float, nargs="+", default=W_STDS,
                   help="σ_w values (default: 1 √2 2)")
    p.add_argument("--b-std", type=lambda t: None if t == "none" else float(t), nargs="+",
                   default=B_STDS, help="σ_b values, 'none' for no bias "
                   "(default: none 0.1 0.3 1 3)")
    p.add_argument("--csv", metavar="OUT.csv", default=None,
                   help="every (σ_w, σ_b, dataset, kernel, depth, ridge) row of part 1")
    a = p.parse_args()
    with threadpool_limits(limits=a.jobs, user_api="blas"):
        run(a)


def run(a):
    datasets = DATASETS[:2] if a.quick else DATASETS
    t0 = time.perf_counter()
    print("part 1: best / mean accuracy over (kernel, depth 1-5), best ridge each", flush=True)
    results = part1(_load(datasets), a.w_std, a.b_std, a.jobs, a.csv)
    print()
    print(table1(results, datasets))
    ranked = sorted(results, key=lambda k: -np.mean([results[k][d][1] for d in datasets]))
    print("\nranked by the mean of means: "
          + ", ".join(f"(σ_w={_fmt_std(w)}, σ_b={_fmt_std(b)})" for w, b in ranked[:5]))
    shipped = (_defaults.W_STD, _defaults.B_STD)
    for key in dict.fromkeys([(1.0, None), shipped, ranked[0]]):
        if key not in results:
            continue
        print(f"\naccuracy per depth, σ_w={_fmt_std(key[0])}, σ_b={_fmt_std(key[1])}"
              f"{' (the shipped defaults)' if key == shipped else ''} "
              "(NTK Θ / NNGP Σ, best ridge each):\n")
        print(table_depths(results, key, datasets))
    configs = [("NTKClassifier(depth=1, b_std=None) (old default)", dict(depth=1, b_std=None)),
               (f"NTKClassifier() (defaults: depth={_defaults.DEPTH}, "
                f"w_std={_fmt_std(_defaults.W_STD)}, b_std={_fmt_std(_defaults.B_STD)})", {})]
    configs += [(f"NTKClassifier(depth={d})", dict(depth=d)) for d in (2, 3)]
    configs += [(f"NTKClassifier(ridge={r:g})", dict(ridge=r)) for r in (1e-2, 1.0)]
    w, b = ranked[0]
    if (w, b) != shipped:
        configs.append((f"NTKClassifier(w_std={_fmt_std(w)}, b_std={_fmt_std(b)}) (top of "
                        "part 1)", dict(w_std=w, b_std=b)))
    print("\npart 2: NTKClassifier (default ridge 1e-4 unless given), standardised inputs, "
          "the same 4 folds\n")
    print(part2(datasets, configs, a.jobs))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
