"""ntkfast.sweep: one-pass sweeps equal a naive loop; loaders, CLI, errors."""

import argparse
import csv
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.datasets import load_diabetes, load_iris  # noqa: E402
from sklearn.model_selection import KFold, StratifiedKFold  # noqa: E402

import ntkfast as nk  # noqa: E402
from ntkfast import sweep as S  # noqa: E402
from ntkfast.multidepth import kernels_multi  # noqa: E402


def naive_scores(X, y, task, kernel, depths, ks, ridges, folds):
    """{(kernel, depth, k, ridge): mean score}: separate kernels and Cholesky fits."""
    out = {}
    for depth in depths:
        net = nk.MLP(depth=depth, b_std=0.1)
        for k in (ks if kernel == "ntk" else [None]):
            if k is not None and k > depth:
                continue
            for r in ridges:
                scores = []
                for tr, te in folds:
                    if kernel == "nngp":
                        Ktr, Kte = net.nngp(X[tr]), net.nngp(X[te], X[tr])
                    elif k == 0:
                        Ktr, Kte = net.ntk(X[tr]), net.ntk(X[te], X[tr])
                    else:  # frozen layers: only kernels_multi has them
                        Ktr = kernels_multi(net, X[tr], depths=[depth],
                                            frozen_layers=[k])[(depth, k)].ntk
                        Kte = kernels_multi(net, X[te], X[tr], depths=[depth],
                                            frozen_layers=[k])[(depth, k)].ntk
                    scale = np.mean(np.diag(Ktr))
                    if task == "classification":
                        classes, idx = np.unique(y, return_inverse=True)
                        Y = -np.ones((len(y), classes.size))
                        Y[np.arange(len(y)), idx] = 1
                        reg = nk.KernelRegression(Ktr, Y[tr], ridge=r * scale)
                        scores.append(np.mean(reg.predict(Kte).argmax(1) == idx[te]))
                    else:
                        mu = y[tr].mean()
                        reg = nk.KernelRegression(Ktr, y[tr] - mu, ridge=r * scale)
                        pred = reg.predict(Kte) + mu
                        scores.append(1 - np.sum((pred - y[te]) ** 2)
                                      / np.sum((y[te] - y[te].mean()) ** 2))
                out[(kernel, depth, k, float(r))] = np.mean(scores)
    return out


def standardize(X):
    X = X - X.mean(0)
    sd = X.std(0)
    return X / np.where(sd > 0, sd, 1)


def test_sweep_equals_naive_loop_classification():
    X, y = load_iris(return_X_y=True)
    X, y = X[::2], y[::2]
    ridges = [1e-3, 1e-1, 3.0]
    res = S.sweep([("iris_half", X, y)], depths=[1, 2, 3], ridges=ridges, cv=3,
                  kernel="both", frozen_layers=[0, 2], b_std=0.1, random_state=7)
    folds = list(StratifiedKFold(3, shuffle=True, random_state=7).split(X, y))
    Xs = standardize(X)
    ref = {**naive_scores(Xs, y, "classification", "ntk", [1, 2, 3], [0, 2], ridges, folds),
           **naive_scores(Xs, y, "classification", "nngp", [1, 2, 3], [0], ridges, folds)}
    got = {(r["kernel"], r["depth"], r["frozen_layers"], r["ridge"]): r["score"]
           for r in res.rows}
    assert set(got) == set(ref) and len(res.rows) == len(ref) == (2 + 3 + 3) * 3
    for key, v in ref.items():
        assert got[key] == pytest.approx(v, abs=1e-12), key
    assert all(r["metric"] == "accuracy" and r["task"] == "classification" for r in res)
    best = res.best["iris_half"]
    assert best["score"] == max(r["score"] for r in res.rows) > 0.9


def test_sweep_equals_naive_loop_regression():
    X, y = load_diabetes(return_X_y=True)
    X, y = X[:120], y[:120]
    ridges = [1e-2, 1.0]
    res = S.sweep(("diab", X, y), depths=[1, 3], ridges=ridges, cv=4, b_std=0.1,
                  random_state=3)
    folds = list(KFold(4, shuffle=True, random_state=3).split(X))
    ref = naive_scores(standardize(X), y, "regression", "ntk", [1, 3], [0], ridges, folds)
    for r in res.rows:
        assert r["score"] == pytest.approx(ref[(r["kernel"], r["depth"], 0, r["ridge"])],
                                           rel=1e-9, abs=1e-9)
    assert res.rows[0]["metric"] == "r2" and res.best["diab"]["score"] > 0.2
    mse = S.sweep(("diab", X, y), depths=[1, 3], ridges=ridges, cv=4, metric="mse")
    assert mse.best["diab"]["score"] == min(r["score"] for r in mse.rows)


def test_loaders_and_task_detection(tmp_path):
    X, y = load_iris(return_X_y=True)
    np.savez(tmp_path / "a.npz", X=X[:60], y=y[:60])
    names = np.array(["setosa", "versicolor", "virginica"])[y[:60]]
    with open(tmp_path / "b.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["f1", "f2", "f3", "f4", "label"])
        for row, lab in zip(X[:60], names):
            w.writerow([*row, lab])
    np.savetxt(tmp_path / "c.csv", np.c_[X[:40, :2], X[:40, 2]], delimiter=",")
    a, b, c = (S.load_dataset(str(tmp_path / f)) for f in ("a.npz", "b.csv", "c.csv"))
    assert a.name == "a" and a.X.shape == (60, 4)
    np.testing.assert_allclose(b.X, X[:60])
    assert list(np.unique(b.y)) == ["setosa", "versicolor"]
    assert S.detect_task(a.y) == S.detect_task(b.y) == "classification"
    assert S.detect_task(c.y) == "regression"
    assert S.load_dataset("wine").X.shape == (178, 13)
    res = S.sweep([str(tmp_path / "a.npz"), str(tmp_path / "b.csv"), str(tmp_path / "c.csv")],
                  depths=[1], ridges=[0.1], cv=2)
    assert set(res.best) == {"a", "b", "c"}
    assert res.best["a"]["score"] == res.best["b"]["score"]  # same data, labels renamed
    assert res.best["c"]["metric"] == "r2"


def test_cli_functions(tmp_path, capsys):
    p = argparse.ArgumentParser(prog="ntkfast sweep")
    S.add_sweep_arguments(p)
    out = tmp_path / "out.csv"
    args = p.parse_args(["iris", "--depths", "1-2", "--ridges", "1e-2..1", "--n-ridges", "3",
                         "--cv", "3", "--kernel", "both", "--frozen-layers", "0,1",
                         "--b-std", "0.1", "--csv", str(out)])
    assert S.main_from_args(args) == 0
    text = capsys.readouterr().out
    assert "best configuration per dataset" in text and "iris" in text
    with open(out) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == (3 + 3) * 3 and set(rows[0]) == set(S.FIELDS)
    assert S.parse_int_list("1-3,5") == [1, 2, 3, 5]
    np.testing.assert_allclose(S.parse_ridges("1e-4..1e2", 7), np.logspace(-4, 2, 7))
    np.testing.assert_allclose(S.parse_ridges("0.1, 1"), [0.1, 1])
    for bad, fn in (("1-x", S.parse_int_list), ("3-1", S.parse_int_list),
                    ("-1e-2..1", S.parse_ridges), ("a,b", S.parse_ridges)):
        with pytest.raises(ValueError):
            fn(bad)


def test_singular_ridge_gives_nan_and_warning():
    X = np.repeat(np.eye(3), 4, axis=0)  # duplicate rows: K is singular
    y = np.repeat([0, 1, 2], 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = S.sweep(("dup", X, y), depths=[1], ridges=[0.0, 0.1], cv=2, preprocess="none")
    scores = {r["ridge"]: r["score"] for r in res.rows}
    assert np.isnan(scores[0.0]) and scores[0.1] == 1.0
    assert res.best["dup"]["ridge"] == 0.1
    with pytest.warns(RuntimeWarning, match="ridge"):
        S.sweep(("dup", X, y), depths=[1], ridges=[0.0], cv=2, preprocess="none")


@pytest.mark.parametrize("kwargs, match", [
    (dict(datasets="no_such_dataset"), "datasets"),
    (dict(ridges=[-1.0]), "ridges"),
    (dict(ridges=[]), "ridges"),
    (dict(kernel="rbf"), "kernel"),
    (dict(cv=1), "cv"),
    (dict(metric="r2"), "metric"),
    (dict(metric="auc"), "metric"),
    (dict(depths=[1], frozen_layers=[2]), "frozen_layers"),
    (dict(depths=[-1]), "depths"),
    (dict(task="ranking"), "task"),
    (dict(preprocess="pca"), "preprocess"),
    (dict(activation="softsign"), "activation"),
])
def test_bad_arguments_name_themselves(kwargs, match):
    kw = dict(datasets="iris", depths=[1], ridges=[0.1], cv=2)
    kw.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        S.sweep(**kw)


def test_bad_files(tmp_path):
    np.savez(tmp_path / "x.npz", X=np.ones((4, 2)))
    with pytest.raises(ValueError, match="datasets.*lacks"):
        S.load_dataset(str(tmp_path / "x.npz"))
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ValueError, match="datasets.*unsupported"):
        S.load_dataset(str(tmp_path / "x.json"))
    with pytest.raises(ValueError, match="y of dataset"):
        S.sweep(("bad", np.ones((5, 2)), np.arange(4)), depths=[1], ridges=[1.0], cv=2)


# -- issue 18 item 6: --arch (ridge only) ---------------------------------------------
def test_sweep_architecture_equals_naive_fits(capsys):
    rng = np.random.default_rng(4)
    X = rng.standard_normal((24, 16))
    y = (X[:, :8].sum(1) > 0).astype(int)
    ridges = [1e-2, 1.0]
    res = S.sweep(("img", X, y), architecture="conv3x3-relu,flatten,dense-b0.1",
                  input_shape=(4, 4, 1), ridges=ridges, cv=3, kernel="both",
                  random_state=1, verbose=True)
    out = capsys.readouterr().out
    assert "img: n=24 d=16" in out and " depth " not in out
    folds = list(StratifiedKFold(3, shuffle=True, random_state=1).split(X, y))
    net = nk.serial(nk.Conv((3, 3)), nk.ReLU(), nk.Flatten(), nk.Dense(b_std=0.1))
    Xs = standardize(X).reshape(24, 4, 4, 1)
    Y = -np.ones((24, 2))
    Y[np.arange(24), y] = 1
    assert len(res.rows) == 2 * len(ridges)
    for row in res.rows:
        assert row["depth"] is None and row["frozen_layers"] is None
        K = getattr(net, row["kernel"])(Xs)
        scores = []
        for tr, te in folds:
            Ktr = K[np.ix_(tr, tr)]
            reg = nk.KernelRegression(Ktr, Y[tr], ridge=row["ridge"] * np.mean(np.diag(Ktr)))
            scores.append(np.mean(reg.predict(K[np.ix_(te, tr)]).argmax(1) == y[te]))
        assert row["score"] == pytest.approx(np.mean(scores), abs=1e-12)
    assert "   -       -" in res.table()


def test_sweep_architecture_cli_and_errors(capsys):
    p = argparse.ArgumentParser(prog="ntkfast sweep")
    S.add_sweep_arguments(p)
    args = p.parse_args(["iris", "--arch", "dense,erf,dense", "--ridges", "0.1", "--cv", "2",
                         "-q"])
    assert S.main_from_args(args) == 0
    assert "iris" in capsys.readouterr().out
    with pytest.raises(ValueError, match="--arch: --depths, --w-std describe"):
        S.main_from_args(p.parse_args(["iris", "--arch", "dense", "--depths", "1-2",
                                       "--w-std", "2"]))
    for kw, match in [(dict(depths=[1, 2]), "architecture: depths describe"),
                      (dict(activation="erf"), "activation describe"),
                      (dict(input_shape=(3, 3, 1)), "cannot be reshaped"),
                      (dict(architecture=None, input_shape=(4,)), "only with architecture")]:
        kw = {"architecture": "dense", **kw}
        with pytest.raises(ValueError, match=match):
            S.sweep("iris", ridges=[0.1], cv=2, **kw)


@pytest.mark.parametrize("order", ["sorted", "shuffled"])
def test_fold_predictions_from_the_upper_triangle(order):
    """The sweep reads kernels_multi(symmetrize=False)'s upper triangles: the same
    predictions as from the full matrix, for ascending folds (LAPACK uplo='U' on
    K[tr, tr] as is) and for shuffled ones (completed from the upper triangle)."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(60, 4))
    Y = rng.normal(size=(60, 2))
    K = nk.MLP(depth=2, b_std=0.1).ntk(X)
    idx = np.arange(60) if order == "sorted" else rng.permutation(60)
    tr, te = idx[:45], idx[45:]
    if order == "sorted":
        tr, te = np.sort(tr), np.sort(te)
    ridges = [1e-2, 1.0]
    full = S.fold_predictions(K, tr, te, Y, ridges, True, "regression")
    got = S.fold_predictions(np.triu(K), tr, te, Y, ridges, True, "regression",
                             upper=True)
    scale = np.max(np.abs(full))
    assert np.max(np.abs(got - full)) <= 1e-11 * scale
    # the lower triangle is really not read: garbage there changes nothing
    junk = np.triu(K) + np.tril(np.full_like(K, np.nan), -1)
    np.testing.assert_array_equal(
        S.fold_predictions(junk, tr, te, Y, ridges, True, "regression", upper=True), got)
