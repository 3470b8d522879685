"""NystromRegression (FALKON): exactness at M = N, convergence in M, options, bad input."""

import functools
import warnings

import numpy as np
import pytest

import ntkfast as nk
from ntkfast.solve import NystromRegression as _NystromRegression

# one engine thread keeps these small problems fast on a busy machine (OpenMP spin-waits);
# test_all_centres_is_exact_krr uses the default (all cores)
NystromRegression = functools.partial(_NystromRegression, n_jobs=1)

NET = nk.MLP(depth=2, activation="relu", w_std=1.0, b_std=0.1)


def target(A):
    return np.sin(A[:, 0]) + A[:, 1] * A[:, 2]


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    N, d = 2000, 10
    X = rng.standard_normal((N, d))
    Xt = rng.standard_normal((400, d))
    Y = np.stack([target(X), np.cos(X[:, 3])], axis=1) + 0.1 * rng.standard_normal((N, 2))
    K = NET.ntk(X)
    Kt = NET.ntk(Xt, X)
    ridge = 1e-2 * float(np.mean(np.diag(K)))
    exact = nk.KernelRegression(K, Y, ridge=ridge).predict(Kt)
    return X, Xt, Y, ridge, exact


def rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def test_all_centres_is_exact_krr(problem):
    X, Xt, Y, ridge, exact = problem
    m = _NystromRegression(NET, X, Y, n_centers=len(X), ridge=ridge, tol=1e-10)
    assert m.converged_ and m.n_iter_ <= 5  # the preconditioner is exact at M = N
    assert rel(m.predict(Xt), exact) < 1e-6
    assert m.alpha_.shape == (len(X), 2)
    # 1-D targets give 1-D outputs, same numbers as the first column
    m1 = NystromRegression(NET, X, Y[:, 0], n_centers=len(X), ridge=ridge, tol=1e-10)
    p1 = m1.predict(Xt)
    assert p1.shape == (len(Xt),)
    assert rel(p1, exact[:, 0]) < 1e-6


@pytest.mark.parametrize("centers", ["uniform", "leverage"])
def test_error_decreases_with_m(problem, centers):
    X, Xt, Y, ridge, exact = problem
    errs = []
    for M in (50, 200, 800):
        m = NystromRegression(NET, X, Y, n_centers=M, ridge=ridge, centers=centers,
                              tol=1e-8, maxiter=300)
        assert m.converged_
        assert len(np.unique(m.center_indices_)) == M
        errs.append(rel(m.predict(Xt), exact))
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 0.15


def test_solves_the_nystrom_system(problem):
    """α solves (K_nMᵀK_nM + ridge K_MM) α = K_nMᵀ y (checked with dense matrices)."""
    X, _, Y, ridge, _ = problem
    m = NystromRegression(NET, X, Y, n_centers=300, ridge=ridge, tol=1e-12, maxiter=500,
                          seed=3)
    C = X[m.center_indices_]
    Knm, Kmm = NET.ntk(X, C), NET.ntk(C)
    H = Knm.T @ Knm + ridge * Kmm
    direct = np.linalg.solve(H, Knm.T @ Y)
    np.testing.assert_allclose(Knm @ m.alpha_, Knm @ direct, rtol=1e-7,
                               atol=1e-7 * np.abs(Knm @ direct).max())


def test_streaming_equals_cached(problem):
    X, Xt, Y, ridge, _ = problem
    a = NystromRegression(NET, X, Y, n_centers=200, ridge=ridge, tol=1e-9, tile=300)
    b = NystromRegression(NET, X, Y, n_centers=200, ridge=ridge, tol=1e-9, tile=300,
                          memory_budget=0)
    assert a.kernel_cached_ and not b.kernel_cached_
    np.testing.assert_array_equal(a.center_indices_, b.center_indices_)
    np.testing.assert_allclose(a.predict(Xt), b.predict(Xt), rtol=1e-12, atol=1e-12)


def test_nngp_kernel_early_exit_and_progress(problem, capsys):
    X, Xt, Y, ridge, _ = problem
    S = NET.nngp(X)
    exact = nk.KernelRegression(S, Y[:, 0], ridge=ridge).predict(NET.nngp(Xt, X))
    m = NystromRegression(NET, X, Y[:, 0], n_centers=len(X), ridge=ridge, kernel="nngp",
                          tol=1e-10, progress=True)
    assert rel(m.predict(Xt), exact) < 1e-6
    assert "FALKON CG" in capsys.readouterr().err
    loose = NystromRegression(NET, X, Y, n_centers=300, ridge=ridge, tol=1e-2)
    tight = NystromRegression(NET, X, Y, n_centers=300, ridge=ridge, tol=1e-9)
    assert loose.n_iter_ < tight.n_iter_
    assert loose.residuals_[-1] <= 1e-2


def test_maxiter_warns(problem):
    X, _, Y, ridge, _ = problem
    with pytest.warns(RuntimeWarning, match="maxiter"):
        m = NystromRegression(NET, X, Y, n_centers=300, ridge=ridge * 1e-4, tol=1e-14,
                              maxiter=2)
    assert m.n_iter_ == 2 and not m.converged_


def test_float32_and_seed(problem):
    X, Xt, Y, ridge, exact = problem
    m = NystromRegression(NET, X.astype(np.float32), Y, n_centers=len(X), ridge=ridge,
                          tol=1e-8)
    assert rel(m.predict(Xt), exact) < 1e-3
    a = NystromRegression(NET, X, Y, n_centers=100, ridge=ridge, seed=1).center_indices_
    b = NystromRegression(NET, X, Y, n_centers=100, ridge=ridge, seed=1).center_indices_
    c = NystromRegression(NET, X, Y, n_centers=100, ridge=ridge, seed=2).center_indices_
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_duplicate_rows_jitter():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((50, 4))
    X = np.concatenate([X, X])  # every point twice: K_MM singular at M = N
    y = target(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = NystromRegression(NET, X, y, n_centers=100, ridge=0.1, tol=1e-8)
    assert np.isfinite(m.predict(X)).all()


def test_bad_input(problem):
    X, _, Y, _, _ = problem
    X, Y = X[:100], Y[:100]
    with pytest.raises(ValueError, match="ridge"):
        NystromRegression(NET, X, Y, n_centers=10, ridge=-1.0)
    with pytest.raises(ValueError, match="n_centers"):
        NystromRegression(NET, X, Y, n_centers=101)
    with pytest.raises(ValueError, match="n_centers"):
        NystromRegression(NET, X, Y, n_centers=0)
    with pytest.raises(TypeError, match="n_centers"):
        NystromRegression(NET, X, Y, n_centers=2.5)
    Xn = X.copy()
    Xn[7, 2] = np.nan
    with pytest.raises(ValueError, match="X_train: row 7"):
        NystromRegression(NET, Xn, Y, n_centers=10)
    Yn = Y.copy()
    Yn[4, 1] = np.inf
    with pytest.raises(ValueError, match="y_train: row 4"):
        NystromRegression(NET, X, Yn, n_centers=10)
    with pytest.raises(ValueError, match="y_train: expected shape"):
        NystromRegression(NET, X, Y[:50], n_centers=10)
    with pytest.raises(ValueError, match="X_train: expected a 2-D"):
        NystromRegression(NET, X[0], Y[0], n_centers=1)
    with pytest.raises(ValueError, match="centers"):
        NystromRegression(NET, X, Y, n_centers=10, centers="kmeans")
    with pytest.raises(ValueError, match="kernel"):
        NystromRegression(NET, X, Y, n_centers=10, kernel="rbf")
    with pytest.raises(ValueError, match="tol"):
        NystromRegression(NET, X, Y, n_centers=10, tol=0)
    with pytest.raises(ValueError, match="maxiter"):
        NystromRegression(NET, X, Y, n_centers=10, maxiter=0)
    m = NystromRegression(NET, X, Y, n_centers=10)
    with pytest.raises(ValueError, match="X_test: has 3 features"):
        m.predict(X[:, :3])


@pytest.mark.parametrize("centers", ["uniform", "leverage"])
def test_layer_network_solves_the_nystrom_system(centers):
    """A conv network's kernel, tile by tile from images: α solves the dense system."""
    cnn = nk.serial(nk.Conv((3, 3), w_std=1.4, b_std=0.1), nk.ReLU(),
                    nk.AvgPool((2, 2), (2, 2)), nk.Conv((2, 2)), nk.ReLU(), nk.GlobalAvgPool(),
                    nk.Dense(b_std=0.1))
    rng = np.random.default_rng(4)
    X, Xt = rng.standard_normal((60, 4, 4, 2)), rng.standard_normal((9, 4, 4, 2))
    y = np.sin(X[:, 0, 0, 0]) + X[:, 1, 2, 1]
    ridge = 1e-2
    m = NystromRegression(cnn, X, y, n_centers=25, ridge=ridge, centers=centers,
                          tol=1e-12, maxiter=500, tile=16)
    C = X[m.center_indices_]
    Knm, Kmm = cnn.ntk(X, C), cnn.ntk(C)
    direct = np.linalg.solve(Knm.T @ Knm + ridge * Kmm, Knm.T @ y)
    np.testing.assert_allclose(m.predict(Xt), cnn.ntk(Xt, C) @ direct, rtol=1e-7,
                               atol=1e-7 * np.abs(cnn.ntk(Xt, C) @ direct).max())
    with pytest.raises(ValueError, match="X_test: examples of shape"):
        m.predict(Xt[:, :3])
