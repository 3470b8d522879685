"""GradientFlow's Krylov route (block Lanczos) against the eigh route and direct formulas."""


import numpy as np
import pytest
import scipy.linalg as sla

import ntkfast as nk
from ntkfast.solve import GradientFlow, KernelRegression
from ntkfast.solve import dynamics
from ntkfast.solve.krylov import BlockLanczos, kernel_matvec, top_eigenpairs


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """Small dense LAPACK calls (the eigh references) are many times slower with
    threads on a busy machine; the results do not depend on it."""
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _data(n=400, m=30, d=6, k=None, seed=0, duplicate=False):
    rng = np.random.default_rng(seed)
    X, Z = rng.standard_normal((n, d)), rng.standard_normal((m, d))
    if duplicate:
        X[n // 2:] = X[: n - n // 2]
    y = rng.standard_normal(n if k is None else (n, k))
    net = nk.MLP(depth=3, activation="relu", w_std=1.2, b_std=0.1)
    return net.ntk(X), net.ntk(Z, X), y, rng


def _times(K, eta=1.0, T=100):
    """The issue's grid: T log-spaced η·t from 0.1/λ_max to 1e4/λ_max."""
    lmax = top_eigenpairs(K, 1)[0][-1]
    return np.geomspace(0.1 / lmax, 1e4 / lmax, T) / eta


def _rel(A, B, T):
    """Per time: ‖A − B‖_F / ‖B‖_F."""
    A = A.reshape(T, -1)
    B = B.reshape(T, -1)
    return np.linalg.norm(A - B, axis=1) / np.linalg.norm(B, axis=1)


@pytest.mark.parametrize("ridge", [0.0, 0.05])
@pytest.mark.parametrize("k", [None, 3])
def test_matches_eigh_on_the_issue_time_grid(ridge, k):
    K, KzX, y, rng = _data(k=k)
    eta = 0.7
    ts = _times(K, eta)
    ref = GradientFlow(K, y, eta, ridge, method="eigh").predict(KzX, ts)
    kry = GradientFlow(K, y, eta, ridge, method="krylov", tol=1e-8)
    out = kry.predict(KzX, ts)
    assert out.train.shape == ref.train.shape and out.test.shape == ref.test.shape
    T = ts.size
    assert _rel(out.train, ref.train, T).max() <= 1e-8
    assert _rel(out.test, ref.test, T).max() <= 1e-8
    assert kry.error_estimate_.shape == (T,) and kry.error_estimate_.max() <= 1e-8
    assert 0 < kry.krylov_size_ < len(K)  # converged well before the space is exhausted


def test_initial_outputs_and_infinite_time():
    K, KzX, y, rng = _data(k=2, seed=1)
    f0, f0z = rng.standard_normal(y.shape), rng.standard_normal((len(KzX), 2))
    ts = np.concatenate([[0.0], _times(K, T=7), [np.inf]])
    ref = GradientFlow(K, y, 1.3, 0.01, method="eigh").predict(KzX, ts, f0, f0z)
    kry = GradientFlow(K, y, 1.3, 0.01, method="krylov")
    out = kry.predict(KzX, ts, f0, f0z)
    np.testing.assert_allclose(out.train, ref.train, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(out.test, ref.test, rtol=1e-7, atol=1e-9)
    np.testing.assert_array_equal(out.train[0], f0)  # t = 0: nothing learned
    # t = inf is kernel ridge regression on the residual
    reg = KernelRegression(K, y - f0, ridge=0.01)
    np.testing.assert_allclose(out.test[-1], f0z + reg.predict(KzX), rtol=1e-9, atol=1e-12)
    # bases are cached per starting block: y − f0 above, y now; the y basis is kept
    kry.predict(KzX, ts[1:3])
    assert len(kry._bases) == 2 and kry._ykey in kry._bases
    kry.predict(KzX, ts[1:3], 2 * f0)
    assert len(kry._bases) == 2 and kry._ykey in kry._bases


def test_matches_matrix_exponential_directly():
    """Independent of both routes: scipy.linalg.expm and a linear solve."""
    K, KzX, y, _ = _data(n=120, k=2, seed=2)
    eta, r = 0.4, 0.2
    P = K + r * np.eye(len(K))
    out = GradientFlow(K, y, eta, r, method="krylov", tol=1e-10).predict(KzX, [0.03, 0.9])
    for j, t in enumerate([0.03, 0.9]):
        a = np.linalg.solve(P, (np.eye(len(K)) - sla.expm(-eta * t * P)) @ y)
        np.testing.assert_allclose(out.train[j], K @ a, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(out.test[j], KzX @ a, rtol=1e-8, atol=1e-10)


def test_tolerance_controls_the_error():
    K, KzX, y, _ = _data(seed=3)
    ts = _times(K, T=30)
    ref = GradientFlow(K, y, method="eigh").predict(KzX, ts)
    sizes = []
    for tol in (1e-3, 1e-10):
        kry = GradientFlow(K, y, method="krylov", tol=tol)
        out = kry.predict(KzX, ts)
        err = np.maximum(_rel(out.train, ref.train, 30), _rel(out.test, ref.test, 30))
        assert err.max() <= tol
        assert np.all(kry.error_estimate_ <= tol)
        sizes.append(kry.krylov_size_)
    assert sizes[0] < sizes[1]


def test_basis_limit_warns():
    K, KzX, y, _ = _data(seed=4)
    kry = GradientFlow(K, y, method="krylov", tol=1e-12, max_basis=10)
    with pytest.warns(RuntimeWarning, match="max_basis"):
        kry.predict(KzX, _times(K, T=5))
    assert kry.error_estimate_.max() > 1e-12


def test_float32_memmap_and_small_cases(tmp_path):
    K, KzX, y, _ = _data(n=200, seed=5)
    ts = _times(K, T=10)
    K32 = K.astype(np.float32)
    path = tmp_path / "k.npy"
    np.save(path, K32)
    Km = np.load(path, mmap_mode="r")
    ref = GradientFlow(K32.astype(np.float64), y, method="krylov").predict(KzX, ts)
    out = GradientFlow(Km, y, method="krylov").predict(KzX, ts)  # row-blocked upcast
    np.testing.assert_allclose(out.test, ref.test, rtol=1e-9, atol=1e-12)
    # tiny N: the Krylov space is exhausted, the result exact to rounding
    Ks, Kzs, ys, _ = _data(n=12, seed=6)
    kry = GradientFlow(Ks, ys, method="krylov")
    out = kry.predict(Kzs, [0.5, 50.0])
    ref = GradientFlow(Ks, ys, method="eigh").predict(Kzs, [0.5, 50.0])
    np.testing.assert_allclose(out.test, ref.test, rtol=1e-9, atol=1e-12)
    assert kry._bases[kry._ykey].exhausted and np.all(kry.error_estimate_ == 0)


def test_dependent_targets_and_singular_kernel():
    K, KzX, y, _ = _data(k=3, seed=7, duplicate=True)  # Θ of rank N/2
    y[:, 2] = 2 * y[:, 0] - y[:, 1]                     # the block deflates
    ts = _times(K, T=20)
    ref = GradientFlow(K, y, method="eigh").predict(KzX, ts)
    out = GradientFlow(K, y, method="krylov").predict(KzX, ts)
    assert _rel(out.train, ref.train, 20).max() <= 1e-8
    assert _rel(out.test, ref.test, 20).max() <= 1e-8
    Y0 = np.zeros_like(y)
    zero = GradientFlow(K, Y0, method="krylov").predict(KzX, ts)
    assert not zero.test.any() and not zero.train.any()


def test_not_psd_is_rejected():
    K, KzX, y, _ = _data(n=100, seed=8)
    bad = K - 2 * np.linalg.eigvalsh(K)[-1] * np.eye(len(K))
    kry = GradientFlow(bad, y, method="krylov")
    with pytest.raises(ValueError, match="k_train_train.*positive semi-definite"):
        kry.predict(KzX, 1.0)


def test_spectral_views_use_the_top_eigenpairs():
    K, KvX, y, rng = _data(k=2, seed=9)
    yv = rng.standard_normal((len(KvX), 2))
    eig = GradientFlow(K, y, 0.8, method="eigh")
    kry = GradientFlow(K, y, 0.8, method="krylov", n_components=6)
    w = np.linalg.eigvalsh(K)
    np.testing.assert_allclose(kry.eigenvalues, w[-6:], rtol=1e-9)
    ts = _times(K, 0.8, T=9)
    Re, Rk = eig.residuals_by_eigendirection(ts), kry.residuals_by_eigendirection(ts)
    # eigenvectors are defined up to sign: compare |components| of the top 6
    np.testing.assert_allclose(np.abs(Rk), np.abs(Re[:, -6:]), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(kry.spectral_filter(ts), eig.spectral_filter(ts)[:, -6:],
                               rtol=1e-9)
    np.testing.assert_allclose(kry.max_learning_rate(), eig.max_learning_rate(), rtol=1e-9)
    np.testing.assert_allclose(kry.loss(ts), eig.loss(ts), rtol=1e-7)
    es_e, es_k = eig.early_stopping(KvX, yv, ts), kry.early_stopping(KvX, yv, ts)
    np.testing.assert_allclose(es_k.val_loss, es_e.val_loss, rtol=1e-7)
    np.testing.assert_allclose(es_k.train_loss, es_e.train_loss, rtol=1e-7)
    assert es_k.best_index == es_e.best_index
    small = GradientFlow(K, y, 0.8, ridge=0.3, method="krylov")
    np.testing.assert_allclose(small.convergence_rate, 0.8 * (w[0] + 0.3), rtol=1e-6)


def test_route_choice_and_repr(monkeypatch):
    K, KzX, y, _ = _data(n=60, seed=10)
    assert GradientFlow(K, y).method_ == "eigh"
    monkeypatch.setattr(dynamics, "KRYLOV_MIN_N", 50)
    flow = GradientFlow(K, y)
    assert flow.method_ == "krylov" and "method='krylov'" in repr(flow)
    assert "method='eigh'" in repr(GradientFlow(K, y, method="eigh"))
    with pytest.raises(ValueError, match="method"):
        GradientFlow(K, y, method="lanczos")
    with pytest.raises(ValueError, match="tol"):
        GradientFlow(K, y, tol=0.0)


def test_block_lanczos_basis_and_projection():
    rng = np.random.default_rng(11)
    A = rng.standard_normal((50, 50))
    A = A @ A.T
    B = rng.standard_normal((50, 2))
    lz = BlockLanczos(kernel_matvec(A), B)
    lz.advance(12)
    Q = lz.basis()
    np.testing.assert_allclose(Q.T @ Q, np.eye(Q.shape[1]), atol=1e-13)
    np.testing.assert_allclose(lz._H[:lz.size, :lz.size], Q.T @ A @ Q,
                               atol=1e-11 * np.linalg.norm(A, 2))
    # polynomials of degree < m/k are reproduced exactly: A²B from 3 blocks
    (Y,), _ = lz.functions([lambda th: (th ** 2)[:, None]], 6)
    np.testing.assert_allclose(lz.basis(6) @ Y[:, 0], A @ A @ B,
                               rtol=1e-10, atol=1e-10 * np.linalg.norm(A @ A @ B))
    w, V = top_eigenpairs(A, 3)
    np.testing.assert_allclose(w, np.linalg.eigvalsh(A)[-3:], rtol=1e-10)
    np.testing.assert_allclose(np.abs(np.sum(V * (A @ V), axis=0)), w, rtol=1e-10)
