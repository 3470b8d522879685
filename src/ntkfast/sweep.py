"""One-pass hyperparameter sweeps of NTK / NNGP kernel regression over benchmark datasets.

For every dataset, :func:`sweep`

1. computes the kernels of every depth (and every frozen-layer count k, Arora
   et al. 2020's ``fix_dep``) of K(X, X) from ONE recursion pass
   (:func:`ntkfast.multidepth.kernels_multi`: the compiled engine for closed-form
   activations, which records every kernel in its tiled pass), upper triangles
   only (``symmetrize=False``: no transposed writes; every read below takes
   K[a, b] for a <= b from K[min, max]);
2. for every kernel and cross-validation fold, takes ONE eigendecomposition
   K_train = V Λ Vᵀ and scores every ridge r from it:
   f_test(r) = K_test,train V (Λ + r s I)⁻¹ Vᵀ y_train, with s = mean diag(K_train)
   (``relative_ridge=True``, the default, so one ridge grid suits every depth)
   or s = 1 (absolute ridges);
3. reports every (dataset, kernel, depth, k, ridge) score (mean ± std over
   folds), the best configuration per dataset, a CSV file and a terminal table.

The result equals a naive loop of ``MLP(depth).kernels`` + ``KernelRegression(
K_train + r s I)`` fits per (depth, k, ridge, fold) on the same folds.

Conventions
-----------
* Classification (y of a non-float dtype, or float with integral values and at
  most 20 distinct ones; or ``task=``): regression on one-hot ±1 targets, the
  prediction is the class of the largest output, score = accuracy.  Folds:
  ``StratifiedKFold(cv, shuffle=True, random_state)``.
* Regression: y is centred by the training-fold mean (added back), score = R²
  (``metric='r2'``, default) or mean squared error ('mse', lower is better).
  Folds: ``KFold(cv, shuffle=True, random_state)``.
* ``preprocess``: 'standardize' (z-score each feature; constant features are
  only centred), 'normalize' (rows scaled to unit norm) or 'none'.  It uses no
  labels and is applied once to the whole dataset, as the kernel is computed
  once for all rows (as in Arora et al.).
* Datasets: a path to ``.npz`` (arrays ``X`` and ``y``) or ``.csv`` (numeric
  columns, the last one is y; a header line is skipped; non-numeric labels
  become classes), a bundled scikit-learn set by name ('iris', 'wine',
  'breast_cancer', 'digits', 'diabetes'), a ``(name, X, y)`` or ``(X, y)``
  tuple, or a dict {name: (X, y)}.

scikit-learn is needed for the fold splitters and the bundled datasets only.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg as sla

from . import _defaults
from .multidepth import _uninitialised, kernels_multi
from .network import MLP

__all__ = ["sweep", "SweepResult", "load_dataset", "make_folds", "parse_int_list",
           "parse_ridges", "add_sweep_arguments", "main_from_args", "BUNDLED"]


def __dir__():  # the API, not this module's imports
    return list(__all__)

BUNDLED = ("iris", "wine", "breast_cancer", "digits", "diabetes")
METRICS = ("accuracy", "r2", "mse")
FIELDS = ("dataset", "task", "n", "d", "kernel", "depth", "frozen_layers", "ridge",
          "metric", "score", "score_std")
_MAX_CLASSES = 20


# -- datasets --------------------------------------------------------------------------
@dataclass
class Dataset:
    name: str
    X: np.ndarray
    y: np.ndarray


def _read_csv(path):
    with open(path, newline="") as fh:
        rows = [r for r in csv.reader(fh) if r and any(c.strip() for c in r)]
    if not rows:
        raise ValueError(f"datasets: {path!r} is empty")

    def numeric(row):
        try:
            [float(c) for c in row[:-1]]
            return True
        except ValueError:
            return False

    if not numeric(rows[0]):
        rows = rows[1:]  # header
    if not rows:
        raise ValueError(f"datasets: {path!r} has a header but no data rows")
    width = len(rows[0])
    if width < 2:
        raise ValueError(f"datasets: {path!r} needs at least two columns (features, then y)")
    for i, r in enumerate(rows):
        if len(r) != width:
            raise ValueError(f"datasets: {path!r} row {i + 1} has {len(r)} columns, "
                             f"expected {width}")
    try:
        X = np.array([[float(c) for c in r[:-1]] for r in rows])
    except ValueError as exc:
        raise ValueError(f"datasets: {path!r} has a non-numeric feature ({exc})") from None
    labels = [r[-1].strip() for r in rows]
    try:
        y = np.array([float(c) for c in labels])
    except ValueError:
        y = np.array(labels)
    return X, y


def load_dataset(spec) -> Dataset:
    """A :class:`Dataset` from a path, a bundled name or a (name, X, y) / (X, y) tuple."""
    if isinstance(spec, Dataset):
        return spec
    if isinstance(spec, tuple):
        if len(spec) == 3:
            name, X, y = spec
        elif len(spec) == 2:
            (X, y), name = spec, "data"
        else:
            raise ValueError("datasets: a tuple must be (X, y) or (name, X, y)")
        return Dataset(str(name), np.asarray(X), np.asarray(y))
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"datasets: expected a path, a bundled name, (X, y) or "
                        f"(name, X, y), got {type(spec).__name__}")
    text = os.fspath(spec)
    key = text.strip().lower()
    if key in BUNDLED and not os.path.exists(text):
        from sklearn import datasets as skd
        X, y = getattr(skd, f"load_{key}")(return_X_y=True)
        return Dataset(key, X, y)
    name = os.path.splitext(os.path.basename(text))[0]
    lower = text.lower()
    if not os.path.exists(text):
        raise ValueError(f"datasets: {text!r} is neither a file nor a bundled dataset "
                         f"({', '.join(BUNDLED)})")
    if lower.endswith(".npz"):
        with np.load(text, allow_pickle=False) as f:
            missing = [k for k in ("X", "y") if k not in f.files]
            if missing:
                raise ValueError(f"datasets: {text!r} lacks the array(s) {missing} "
                                 f"(has {f.files}); save with np.savez(path, X=X, y=y)")
            return Dataset(name, f["X"], f["y"])
    if lower.endswith((".csv", ".txt")):
        X, y = _read_csv(text)
        return Dataset(name, X, y)
    raise ValueError(f"datasets: {text!r}: unsupported file type; use .npz (X, y) or .csv")


def _datasets(datasets):
    if isinstance(datasets, dict):
        return [load_dataset((k, *v)) for k, v in datasets.items()]
    if isinstance(datasets, (str, os.PathLike, tuple, Dataset)):
        datasets = [datasets]
    out = [load_dataset(d) for d in datasets]
    if not out:
        raise ValueError("datasets: no dataset given")
    return out


def _prepare_X(X, name, preprocess):
    from ._validation import check_inputs
    X = np.array(check_inputs(X, f"X of dataset {name!r}"), dtype=np.float64)
    if preprocess == "standardize":
        X -= X.mean(axis=0)
        sd = X.std(axis=0)
        X /= np.where(sd > 0, sd, 1.0)
    elif preprocess == "normalize":
        nrm = np.linalg.norm(X, axis=1, keepdims=True)
        X /= np.where(nrm > 0, nrm, 1.0)
    return X


def detect_task(y):
    """'classification' or 'regression' (see the module docstring)."""
    y = np.asarray(y)
    if y.dtype.kind not in "fc":
        return "classification"
    if y.dtype.kind == "c":
        raise ValueError("y: complex targets are not supported")
    values = np.unique(y)
    if np.all(values == np.round(values)) and values.size <= _MAX_CLASSES:
        return "classification"
    return "regression"


def make_folds(y, task, cv, random_state):
    """[(train, test)] index pairs: (Stratified)KFold(cv, shuffle=True, random_state),
    or ``cv`` itself if it is a splitter (``.split(X, y)``) or a list of pairs."""
    n = len(y)
    if hasattr(cv, "split"):
        return [(np.asarray(a), np.asarray(b)) for a, b in cv.split(np.zeros((n, 1)), y)]
    if not isinstance(cv, (int, np.integer)) or isinstance(cv, bool):
        folds = [(np.asarray(a), np.asarray(b)) for a, b in cv]
        if not folds:
            raise ValueError("cv: an empty list of folds")
        return folds
    if cv < 2:
        raise ValueError(f"cv: need at least 2 folds, got {cv}")
    if cv > n:
        raise ValueError(f"cv: {cv} folds but only {n} samples")
    from sklearn.model_selection import KFold, StratifiedKFold
    if task == "classification":
        _, counts = np.unique(y, return_counts=True)
        if counts.min() >= cv:
            splitter = StratifiedKFold(cv, shuffle=True, random_state=random_state)
        else:  # a class smaller than cv: stratification impossible
            splitter = KFold(cv, shuffle=True, random_state=random_state)
    else:
        splitter = KFold(cv, shuffle=True, random_state=random_state)
    return list(splitter.split(np.zeros((n, 1)), y))


# -- scoring ---------------------------------------------------------------------------
def _targets(y, task):
    """(Y float (N, k), classes or None)."""
    if task == "classification":
        classes, idx = np.unique(y, return_inverse=True)
        if classes.size < 2:
            raise ValueError("y: classification needs at least 2 classes")
        Y = -np.ones((idx.size, classes.size))
        Y[np.arange(idx.size), idx] = 1.0
        return Y, idx
    y = np.asarray(y, dtype=np.float64)
    return (y[:, None] if y.ndim == 1 else y), None


def _score(metric, pred, truth):
    """Score of predictions (test, k) against truth (labels or (test, k) values)."""
    if metric == "accuracy":
        return float(np.mean(np.argmax(pred, axis=1) == truth))
    err = np.sum((pred - truth) ** 2)
    if metric == "mse":
        return float(err / truth.size)
    tot = np.sum((truth - truth.mean(axis=0)) ** 2)
    return float(1.0 - err / tot) if tot > 0 else (1.0 if err == 0 else 0.0)


def _upper_block(K, rows, cols):
    """K[rows][:, cols] of a symmetric K of which only the upper triangle (j >= i) is
    stored: entries with rows[a] > cols[b] are read as K[cols[b], rows[a]]."""
    A = K[np.ix_(rows, cols)]
    below = rows[:, None] > cols[None, :]
    if below.any():
        np.copyto(A, K[np.ix_(cols, rows)].T, where=below)
    return A


def fold_predictions(K, tr, te, Y, ridges, relative_ridge, task, upper=False):
    """Predictions (R, test, k) of every ridge from ONE eigh of K[tr, tr].

    Regression targets are centred by their training mean (added back).  A ridge
    with λ_min + r s <= N·eps·λ_max gives NaN predictions.  upper: K holds only
    its upper triangle (``kernels_multi(..., symmetrize=False)``); with ascending
    ``tr`` (scikit-learn's splitters) the eigensolver reads the upper triangle of
    K[tr, tr] as is (LAPACK uplo='U'), else it is completed first.
    """
    tr, te = np.asarray(tr), np.asarray(te)
    uplo_upper = upper and bool(np.all(tr[1:] > tr[:-1]))
    Ktr = _upper_block(K, tr, tr) if upper and not uplo_upper else K[np.ix_(tr, tr)]
    Kte = _upper_block(K, te, tr) if upper else K[np.ix_(te, tr)]
    Ytr = Y[tr]
    offset = Ytr.mean(axis=0) if task == "regression" else np.zeros(Y.shape[1])
    scale = float(np.mean(np.diagonal(Ktr))) if relative_ridge else 1.0
    # divide and conquer ('evd'): the fastest LAPACK driver for all eigenpairs
    lam, V = sla.eigh(Ktr, lower=not uplo_upper, driver="evd", check_finite=False)
    A = Kte @ V
    c = V.T @ (Ytr - offset)
    tol = tr.size * np.finfo(float).eps * max(float(np.max(np.abs(lam))),
                                              np.finfo(float).tiny)
    out = np.empty((len(ridges), te.size, Y.shape[1]))
    for i, r in enumerate(ridges):
        mu = lam + r * scale
        if mu.min() <= tol:
            out[i] = np.nan
        else:
            out[i] = A @ (c / mu[:, None]) + offset
    return out


# -- results ---------------------------------------------------------------------------
@dataclass
class SweepResult:
    """Rows of the sweep (list of dicts with :data:`FIELDS`), the best row per dataset
    and per-dataset timings (seconds: 'kernels', 'solve')."""

    rows: list
    best: dict
    timings: dict = field(default_factory=dict)
    relative_ridge: bool = True

    def __iter__(self):
        return iter(self.rows)

    def __len__(self):
        return len(self.rows)

    def to_csv(self, path):
        """Write every row (one per dataset, kernel, depth, k, ridge) to ``path``."""
        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=FIELDS)
            w.writeheader()
            for r in self.rows:
                w.writerow({k: ("" if r[k] is None else r[k]) for k in FIELDS})

    def summary_rows(self):
        """One row per (dataset, kernel, depth, k): its best ridge."""
        groups = {}
        for r in self.rows:
            key = (r["dataset"], r["kernel"], r["depth"], r["frozen_layers"])
            if key not in groups or _better(r, groups[key]):
                groups[key] = r
        return list(groups.values())

    def table(self, all_ridges=False):
        """A terminal table: every row, or (default) the best ridge of each kernel."""
        rows = self.rows if all_ridges else self.summary_rows()
        best_ids = {id(b) for b in self.best.values()}
        return _format_table(rows, best_ids, self.relative_ridge)

    def best_table(self):
        """The best configuration of each dataset as a table."""
        return _format_table(list(self.best.values()), set(), self.relative_ridge)


def _better(a, b):
    """Is row a better than row b (NaN scores lose; ties keep b)?"""
    sa, sb = a["score"], b["score"]
    if math.isnan(sa):
        return False
    if math.isnan(sb):
        return True
    return sa < sb if a["metric"] == "mse" else sa > sb


def _format_table(rows, mark, relative):
    head = ["dataset", "task", "n", "d", "kernel", "depth", "frozen", "ridge" +
            (" (rel)" if relative else ""), "metric", "score", "± std", ""]
    body = []
    for r in rows:
        body.append([r["dataset"], r["task"][:5], str(r["n"]), str(r["d"]), r["kernel"],
                     "-" if r["depth"] is None else str(r["depth"]),
                     "-" if r["frozen_layers"] is None
                     else str(r["frozen_layers"]), f"{r['ridge']:.3g}", r["metric"],
                     f"{r['score']:.4f}", f"{r['score_std']:.4f}",
                     "*" if id(r) in mark else ""])
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h)
              for i, h in enumerate(head)]
    right = {2, 3, 5, 6, 7, 9, 10}

    def fmt(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    lines = [fmt(head), fmt(["-" * w for w in widths])]
    lines += [fmt(b) for b in body]
    return "\n".join(lines)


# -- the sweep -------------------------------------------------------------------------
def _check_choice(value, name, choices):
    if value not in choices:
        raise ValueError(f"{name}: must be one of {', '.join(map(repr, choices))}, "
                         f"got {value!r}")
    return value


def sweep(datasets, depths=None, ridges=None, cv=4, kernel="ntk",
          frozen_layers=None, activation="relu", w_std=_defaults.W_STD,
          b_std=_defaults.B_STD, parameterization="ntk", width=None, task="auto", metric=None,
          preprocess="standardize", relative_ridge=True, random_state=0, n_jobs=None,
          verbose=False, architecture=None, input_shape=None) -> SweepResult:
    """Score every (depth, frozen layers, ridge) of NTK/NNGP kernel regression by CV.

    Parameters
    ----------
    datasets : path, bundled name, (name, X, y), dict, or a list of them
        See the module docstring.
    depths : sequence of int >= 0
        Hidden-layer counts; all come from one pass per dataset.  Default 1 … 5.
    ridges : sequence of float >= 0, optional
        Default ``np.logspace(-4, 2, 13)``.  Relative to mean diag(K_train) unless
        ``relative_ridge=False``.
    cv : int, splitter with ``.split(X, y)``, or a list of (train, test) pairs
    kernel : {'ntk', 'nngp', 'both'}
    frozen_layers : sequence of int >= 0
        NTK with the bottom k Dense layers frozen (see :mod:`ntkfast.multidepth`);
        pairs with k > depth are skipped.  The NNGP kernel does not depend on k.
        Default (0,).
    activation, w_std, b_std, parameterization, width
        The network, as in :class:`ntkfast.MLP`; σ_w and σ_b default to the
        applications' defaults (:mod:`ntkfast._defaults`, docs/defaults-study.md).
    task : {'auto', 'classification', 'regression'}
    metric : {'accuracy', 'r2', 'mse'}, optional
        Default: accuracy for classification, R² for regression.
    preprocess : {'standardize', 'normalize', 'none'}
    relative_ridge : bool
    random_state : int
        Seed of the fold shuffling.
    n_jobs : int, optional
        Threads for the kernel pass.
    verbose : bool
        Print one line per dataset.
    architecture : network or spec, optional
        Any architecture instead of the MLP (an ``nk.serial`` network or what
        :func:`ntkfast.architecture_spec.parse_architecture` reads); then only the
        ridge is swept (rows have depth and frozen_layers None), and ``depths``,
        ``frozen_layers``, ``activation``, ``w_std``, ``b_std``, ``parameterization``
        and ``width`` must be left at their defaults.
    input_shape : tuple of int, optional
        With ``architecture``: each (preprocessed) row is reshaped to this
        per-example shape, channels last (e.g. (8, 8, 1) for digits).

    Returns
    -------
    SweepResult
    """
    _check_choice(kernel, "kernel", ("ntk", "nngp", "both"))
    _check_choice(task, "task", ("auto", "classification", "regression"))
    _check_choice(preprocess, "preprocess", ("standardize", "normalize", "none"))
    if metric is not None:
        _check_choice(metric, "metric", METRICS)
    if ridges is None:
        ridges = np.logspace(-4, 2, 13)
    ridges = np.atleast_1d(np.asarray(ridges, dtype=np.float64))
    if ridges.ndim != 1 or ridges.size == 0:
        raise ValueError(f"ridges: expected a non-empty 1-D sequence, got shape {ridges.shape}")
    if not np.all(np.isfinite(ridges)) or np.any(ridges < 0):
        raise ValueError(f"ridges: must be finite and >= 0, got {ridges.tolist()}")
    from .multidepth import _as_int_list
    kinds = ("ntk", "nngp") if kernel == "both" else (kernel,)
    arch, shape = _sweep_architecture(architecture, input_shape, locals())
    depths = [None] if arch else _as_int_list((1, 2, 3, 4, 5) if depths is None else depths,
                                              "depths", 0)
    ks = _as_int_list((0,) if frozen_layers is None else frozen_layers, "frozen_layers", 0)
    if "ntk" not in kinds or arch:
        ks = [0]
    # Validates the architecture once, with named errors.
    net = arch or MLP(depth=max(depths), activation=activation, w_std=w_std, b_std=b_std,
                      parameterization=parameterization, width=width)

    rows, best, timings = [], {}, {}
    for ds in _datasets(datasets):
        X = _prepare_X(ds.X, ds.name, preprocess)
        y = np.asarray(ds.y)
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise ValueError(f"y of dataset {ds.name!r}: expected shape ({X.shape[0]},), "
                             f"got {y.shape}")
        t = detect_task(y) if task == "auto" else task
        m = metric or ("accuracy" if t == "classification" else "r2")
        if t == "classification" and m != "accuracy":
            raise ValueError(f"metric: {m!r} is for regression; dataset {ds.name!r} is a "
                             "classification task (use metric='accuracy' or task='regression')")
        if t == "regression" and m == "accuracy":
            raise ValueError(f"metric: 'accuracy' needs a classification task; dataset "
                             f"{ds.name!r} is a regression task")
        if t == "regression" and y.dtype.kind not in "fiub":
            raise ValueError(f"y of dataset {ds.name!r}: regression needs numeric targets")
        Y, labels = _targets(y, t)
        folds = make_folds(labels if t == "classification" else y, t, cv, random_state)
        if not arch and max(ks) > max(depths):
            raise ValueError(f"frozen_layers: k = {max(ks)} exceeds the largest depth "
                             f"{max(depths)}")
        t0 = time.perf_counter()
        configs = []
        if arch:  # one network: its kernel(s), every ridge
            Xa = X if shape is None else _reshape_rows(X, shape, ds.name)
            kern = net.kernels(Xa, n_jobs=n_jobs) if len(kinds) == 2 else \
                {kinds[0]: getattr(net, kinds[0])(Xa, n_jobs=n_jobs)}
            configs = [(kind, None, None, kern[kind] if isinstance(kern, dict)
                        else getattr(kern, kind)) for kind in kinds]
        else:
            # upper triangles into uninitialised arrays: fold_predictions(upper=True)
            # never reads below the diagonal (no zero pages to pay for)
            get = "both" if kernel == "both" else kernel
            mk = kernels_multi(net, X, depths=depths, frozen_layers=ks, get=get,
                               n_jobs=n_jobs, symmetrize=False,
                               out=_uninitialised(depths, ks, get, X.shape[0]))
        t1 = time.perf_counter()
        for depth in depths if not arch else ():
            if "ntk" in kinds:
                configs += [("ntk", depth, k, mk[(depth, k)].ntk) for k in ks if k <= depth]
            if "nngp" in kinds:
                configs.append(("nngp", depth, None, mk.nngp(depth)))
        ds_rows = []
        truth_of = (lambda te: labels[te]) if t == "classification" else (lambda te: Y[te])
        for kind, depth, k, K in configs:
            scores = np.empty((len(folds), ridges.size))
            for f, (tr, te) in enumerate(folds):
                preds = fold_predictions(K, tr, te, Y, ridges, relative_ridge, t,
                                         upper=not arch)
                for i in range(ridges.size):
                    scores[f, i] = (np.nan if np.isnan(preds[i]).any()
                                    else _score(m, preds[i], truth_of(te)))
            for i, r in enumerate(ridges):
                row = dict(dataset=ds.name, task=t, n=X.shape[0], d=X.shape[1], kernel=kind,
                           depth=depth, frozen_layers=k, ridge=float(r), metric=m,
                           score=float(np.mean(scores[:, i])),
                           score_std=float(np.std(scores[:, i])))
                ds_rows.append(row)
        t2 = time.perf_counter()
        if all(math.isnan(r["score"]) for r in ds_rows):
            warnings.warn(f"dataset {ds.name!r}: every ridge is too small for the kernel "
                          "matrices (K + rI singular); use larger ridges", RuntimeWarning,
                          stacklevel=2)
        b = ds_rows[0]
        for r in ds_rows[1:]:
            if _better(r, b):
                b = r
        best[ds.name] = b
        timings[ds.name] = dict(kernels=t1 - t0, solve=t2 - t1)
        rows += ds_rows
        if verbose:
            where = "" if b["depth"] is None else f" depth {b['depth']}"
            print(f"{ds.name}: n={X.shape[0]} d={X.shape[1]} {t}; kernels {t1 - t0:.2f} s, "
                  f"{len(configs)} kernels x {len(folds)} folds x {ridges.size} ridges "
                  f"{t2 - t1:.2f} s; best {b['kernel']}{where} "
                  f"ridge {b['ridge']:.3g}: {m} {b['score']:.4f}")
    return SweepResult(rows, best, timings, bool(relative_ridge))


_MLP_DEFAULTS = {"depths": None, "frozen_layers": None, "activation": "relu",
                 "w_std": _defaults.W_STD, "b_std": _defaults.B_STD, "parameterization": "ntk",
                 "width": None}


def _sweep_architecture(architecture, input_shape, given):
    """(network or None, input shape or None) of ``sweep(architecture=...)``."""
    if architecture is None:
        if input_shape is not None:
            raise ValueError("input_shape: only with architecture= (the MLP takes rows as "
                             "vectors)")
        return None, None
    bad = [k for k, v in _MLP_DEFAULTS.items() if given[k] != v]
    if bad:
        raise ValueError(f"architecture: {', '.join(bad)} describe(s) an MLP and cannot be "
                         "combined with architecture= (which sweeps the ridge only)")
    from .architecture_spec import parse_architecture
    shape = None if input_shape is None else tuple(int(v) for v in input_shape)
    if shape is not None and (not shape or min(shape) < 1):
        raise ValueError(f"input_shape: expected positive integers, got {input_shape!r}")
    dims = len(shape) - 1 if shape and len(shape) > 1 else None
    return parse_architecture(architecture, spatial_dims=dims), shape


def _reshape_rows(X, shape, name):
    if math.prod(shape) != X.shape[1]:
        raise ValueError(f"input_shape: dataset {name!r} has {X.shape[1]} features per "
                         f"row, which cannot be reshaped to {shape}")
    return X.reshape((X.shape[0],) + shape)


# -- command line ----------------------------------------------------------------------
def parse_int_list(text, name="depths"):
    """'1-5' / '1,3,5' / '0-2,7' → sorted list of ints."""
    out = set()
    try:
        for part in str(text).split(","):
            part = part.strip()
            if not part:
                continue
            if "-" in part:
                a, b = part.split("-", 1)
                a, b = int(a), int(b)
                if b < a:
                    raise ValueError
                out.update(range(a, b + 1))
            else:
                out.add(int(part))
    except ValueError:
        raise ValueError(f"{name}: cannot parse {text!r}; use e.g. '1-5', '1,3,5' or "
                         "'0-2,7'") from None
    if not out or min(out) < 0:
        raise ValueError(f"{name}: need non-negative integers, got {text!r}")
    return sorted(out)


def parse_ridges(text, n=13):
    """'1e-4..1e2' → n log-spaced values; '0.1,1,10' → those values."""
    text = str(text).strip()
    try:
        if ".." in text:
            a, b = (float(v) for v in text.split("..", 1))
            if not (a > 0 and b > 0):
                raise ValueError
            if n < 1:
                raise ValueError
            return np.logspace(math.log10(a), math.log10(b), n) if n > 1 else np.array([a])
        vals = np.array([float(v) for v in text.split(",") if v.strip()])
    except ValueError:
        raise ValueError(f"ridges: cannot parse {text!r}; use 'LO..HI' (positive, "
                         "log-spaced with --n-ridges) or a list '0.01,0.1,1'") from None
    if vals.size == 0 or np.any(vals < 0) or not np.all(np.isfinite(vals)):
        raise ValueError(f"ridges: need finite values >= 0, got {text!r}")
    return vals


def _optional_float(text):
    if text.strip().lower() in ("none", "no", ""):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None


def add_sweep_arguments(parser):
    """Arguments of ``ntkfast sweep DATA... --depths 1-5 --ridges 1e-4..1e2 --cv 4``."""
    parser.add_argument("data", nargs="+", metavar="DATA",
                        help=".npz (X, y) / .csv (last column y) files, or bundled "
                        f"scikit-learn datasets: {', '.join(BUNDLED)}")
    # MLP options default to "not given" (SUPPRESS) so that --arch can reject them
    unset = argparse.SUPPRESS
    parser.add_argument("--depths", default=unset,
                        help="hidden-layer counts, e.g. 1-5 or 1,3,5 (default: 1-5)")
    parser.add_argument("--ridges", default="1e-4..1e2",
                        help="LO..HI (log-spaced, --n-ridges values) or a list "
                        "0.01,0.1,1 (default: 1e-4..1e2)")
    parser.add_argument("--n-ridges", type=int, default=13,
                        help="number of ridges for LO..HI (default: 13)")
    parser.add_argument("--absolute-ridge", action="store_true",
                        help="ridges are absolute, not relative to mean diag(K_train)")
    parser.add_argument("--cv", type=int, default=4, help="folds (default: 4)")
    parser.add_argument("--seed", type=int, default=0, help="fold shuffling seed (default: 0)")
    parser.add_argument("--kernel", choices=("ntk", "nngp", "both"), default="ntk",
                        help="default: ntk")
    parser.add_argument("--frozen-layers", default=unset,
                        help="frozen bottom layers k of the NTK (Arora et al.'s fix_dep), "
                        "e.g. 0-2 (default: 0)")
    parser.add_argument("--activation", default=unset,
                        help="relu, leaky_relu, abs, erf, gelu, identity (default: relu)")
    parser.add_argument("--w-std", type=float, default=unset,
                        help=f"σ_w (default: {_defaults.W_STD:g})")
    parser.add_argument("--b-std", type=_optional_float, default=unset,
                        help=f"σ_b, or 'none' for no bias (default: {_defaults.B_STD:g})")
    parser.add_argument("--parameterization", choices=("ntk", "standard"), default=unset)
    parser.add_argument("--width", type=int, default=unset,
                        help="hidden width, needed by --parameterization standard")
    parser.add_argument("--arch", metavar="SPEC", default=None,
                        help="any architecture instead of the MLP options (see `ntkfast "
                        "gram --help`); only the ridge is swept")
    parser.add_argument("--input-shape", metavar="H,W,C", default=None,
                        help="with --arch: reshape each row to this shape, e.g. 8,8,1 "
                        "for digits")
    parser.add_argument("--task", choices=("auto", "classification", "regression"),
                        default="auto", help="default: detected from y")
    parser.add_argument("--metric", choices=METRICS, default=None,
                        help="default: accuracy (classification) or r2 (regression)")
    parser.add_argument("--preprocess", choices=("standardize", "normalize", "none"),
                        default="standardize", help="default: standardize")
    parser.add_argument("--jobs", type=int, default=None, help="threads (default: all cores)")
    parser.add_argument("--csv", metavar="OUT.csv", default=None,
                        help="write every (dataset, kernel, depth, k, ridge) row here")
    parser.add_argument("--all", action="store_true",
                        help="print every ridge, not only the best ridge per kernel")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="print only the best configuration per dataset")
    return parser


def main_from_args(args):
    """Run ``ntkfast sweep`` from parsed arguments; returns the exit code (0)."""
    mlp = {k: getattr(args, k) for k in _MLP_DEFAULTS if hasattr(args, k)}
    arch = getattr(args, "arch", None)
    if arch is not None and mlp:
        flags = ", ".join("--" + k.replace("_", "-") for k in mlp)
        raise ValueError(f"--arch: {flags} describe(s) an MLP and cannot be combined with "
                         "--arch (which sweeps the ridge only)")
    for key in ("depths", "frozen_layers"):
        if key in mlp:
            mlp[key] = parse_int_list(mlp[key], key)
    shape = getattr(args, "input_shape", None)
    if shape is not None:
        try:
            shape = tuple(int(v) for v in shape.split(","))
        except ValueError:
            raise ValueError(f"--input-shape: expected integers such as 8,8,1, got "
                             f"{shape!r}") from None
    result = sweep(args.data, ridges=parse_ridges(args.ridges, args.n_ridges), cv=args.cv,
                   kernel=args.kernel, task=args.task, metric=args.metric,
                   preprocess=args.preprocess, relative_ridge=not args.absolute_ridge,
                   random_state=args.seed, n_jobs=args.jobs, verbose=not args.quiet,
                   architecture=arch, input_shape=shape, **mlp)
    if not args.quiet:
        print()
        print(result.table(all_ridges=args.all))
        print()
    print("best configuration per dataset:")
    print(result.best_table())
    if args.csv:
        result.to_csv(args.csv)
        if not args.quiet:
            print(f"\nwrote {len(result)} rows to {args.csv}")
    return 0
