"""GradientFlow: closed-form gradient-flow dynamics from one eigendecomposition."""

import numpy as np
import pytest
import scipy.linalg as sla

import ntkfast as nk
from ntkfast.solve import GradientFlow, KernelRegression


def _data(n=30, m=6, d=4, k=None, seed=0, duplicate=False):
    rng = np.random.default_rng(seed)
    X, Z = rng.standard_normal((n, d)), rng.standard_normal((m, d))
    if duplicate:
        X[n // 2:] = X[: n - n // 2]
    y = rng.standard_normal(n if k is None else (n, k))
    net = nk.MLP(depth=2, activation="relu", w_std=1.3, b_std=0.1)
    ks, kz = net.kernels(X), net.kernels(Z, X)
    return ks.ntk, kz.ntk, y, rng


def _expm_flow(K, KzX, y, f0, f0z, eta, t, ridge=0.0):
    """Direct formula with scipy.linalg.expm (no eigendecomposition)."""
    P = K + ridge * np.eye(len(K))
    a = np.linalg.solve(P, (np.eye(len(K)) - sla.expm(-eta * t * P)) @ (y - f0))
    return f0 + K @ a, f0z + KzX @ a


@pytest.mark.parametrize("ridge", [0.0, 0.2])
@pytest.mark.parametrize("k", [None, 2])
def test_t_infinity_is_kernel_regression(ridge, k):
    K, KzX, y, rng = _data(k=k)
    f0, f0z = rng.standard_normal(y.shape), rng.standard_normal((len(KzX),) + y.shape[1:])
    flow = GradientFlow(K, y, learning_rate=0.7, ridge=ridge)
    reg = KernelRegression(K, y, ridge=ridge)
    out = flow.predict(KzX, np.inf)
    np.testing.assert_allclose(out.test, reg.predict(KzX), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(out.train, reg.predict(K), rtol=1e-7, atol=1e-9)
    if ridge == 0.0:
        np.testing.assert_allclose(out.train, y, atol=1e-8)
    # from a non-zero initialisation: f0 + regression on the residual y - f0
    out0 = flow.predict(KzX, np.inf, f0_train=f0, f0_test=f0z)
    reg0 = KernelRegression(K, y - f0, ridge=ridge)
    np.testing.assert_allclose(out0.test, f0z + reg0.predict(KzX), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(out0.train, f0 + reg0.predict(K), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("ridge", [0.0, 0.3])
def test_matches_matrix_exponential(ridge):
    K, KzX, y, rng = _data(k=2)
    f0, f0z = rng.standard_normal(y.shape), rng.standard_normal((len(KzX), 2))
    eta = 0.5
    flow = GradientFlow(K, y, learning_rate=eta, ridge=ridge)
    ts = np.array([0.0, 0.01, 0.3, 2.0, 15.0])
    out = flow.predict(KzX, ts, f0, f0z)
    assert out.train.shape == (5, len(K), 2) and out.test.shape == (5, len(KzX), 2)
    for j, t in enumerate(ts):
        tr, te = _expm_flow(K, KzX, y, f0, f0z, eta, t, ridge)
        np.testing.assert_allclose(out.train[j], tr, rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(out.test[j], te, rtol=1e-7, atol=1e-9)
        single = flow.predict(KzX, t, f0, f0z)
        np.testing.assert_allclose(single.train, out.train[j], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(out.train[0], f0, atol=1e-12)
    np.testing.assert_allclose(out.test[0], f0z, atol=1e-12)


def test_satisfies_the_ode():
    """df/dt = -η Θ (f - y) on train, df_test/dt = -η Θ(Z,X)(f_train - y) (central FD)."""
    K, KzX, y, rng = _data()
    f0, f0z = rng.standard_normal(y.shape), rng.standard_normal(len(KzX))
    eta, h = 0.8, 1e-4
    flow = GradientFlow(K, y, learning_rate=eta)
    for t in (0.05, 0.5, 3.0):
        out = flow.predict(KzX, [t - h, t, t + h], f0, f0z)
        dtrain = (out.train[2] - out.train[0]) / (2 * h)
        dtest = (out.test[2] - out.test[0]) / (2 * h)
        resid = out.train[1] - y
        scale = np.abs(eta * K @ resid).max()
        np.testing.assert_allclose(dtrain, -eta * K @ resid, atol=1e-5 * scale)
        np.testing.assert_allclose(dtest, -eta * KzX @ resid, atol=1e-5 * scale)


def test_loss_monotone_and_consistent():
    K, _, y, rng = _data(k=3)
    f0 = rng.standard_normal(y.shape)
    flow = GradientFlow(K, y, learning_rate=1.3, ridge=0.05)
    ts = np.concatenate([[0.0], np.geomspace(1e-3, 1e4, 200), [np.inf]])
    L = flow.loss(ts, f0)
    assert L.shape == ts.shape
    assert np.all(np.diff(L) <= 1e-12 * L[0])
    tr = flow.predict(t=ts, f0_train=f0).train
    np.testing.assert_allclose(L, 0.5 * np.sum((tr - y) ** 2, axis=(1, 2)), rtol=1e-8,
                               atol=1e-12)
    assert flow.loss(0.0, f0) == pytest.approx(0.5 * np.sum((f0 - y) ** 2))
    assert isinstance(flow.loss(1.0), float)


def test_eigendirection_residuals_and_filter():
    K, _, y, rng = _data()
    f0 = rng.standard_normal(y.shape)
    eta = 0.6
    flow = GradientFlow(K, y, learning_rate=eta)
    lam, V = np.linalg.eigh(K)
    np.testing.assert_allclose(flow.eigenvalues, lam, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.abs(flow.eigenvectors.T @ V), np.eye(len(K)), atol=1e-6)
    for t in (0.0, 0.7, 5.0):
        res = flow.residuals_by_eigendirection(t, f0)
        Vf = flow.eigenvectors
        np.testing.assert_allclose(res, np.exp(-eta * flow.eigenvalues * t) * (Vf.T @ (y - f0)),
                                   rtol=1e-8, atol=1e-12)
        ftr = flow.predict(t=t, f0_train=f0).train
        np.testing.assert_allclose(res, Vf.T @ (y - ftr), rtol=1e-7, atol=1e-10)
        np.testing.assert_allclose(flow.spectral_filter(t),
                                   -np.expm1(-eta * flow.eigenvalues * t), atol=1e-14)
    assert flow.residuals_by_eigendirection([1.0, 2.0]).shape == (2, len(K))
    # larger eigenvalues are learned first
    assert np.all(np.diff(flow.spectral_filter(1.0)) >= 0)


def test_rates_and_discrete_gd_stability():
    K, _, y, _ = _data(n=20)
    flow = GradientFlow(K, y, learning_rate=0.4, ridge=0.1)
    lam = np.linalg.eigvalsh(K)
    assert flow.convergence_rate == pytest.approx(0.4 * (lam[0] + 0.1), rel=1e-8)
    assert flow.max_learning_rate() == pytest.approx(2 / (lam[-1] + 0.1), rel=1e-8)
    eta_max = GradientFlow(K, y).max_learning_rate()

    def gd(eta, steps=3000):
        f = np.zeros_like(y)
        for _ in range(steps):
            f = f - eta * K @ (f - y)
        return np.linalg.norm(f - y)

    assert gd(0.98 * eta_max) < np.linalg.norm(y)
    assert gd(1.02 * eta_max) > 1e3 * np.linalg.norm(y)


def test_rank_deficient_ntk():
    """Duplicated inputs: Θ singular. t = ∞ is the pseudo-inverse solution, no NaN."""
    K, KzX, y, _ = _data(duplicate=True)
    n = len(K)
    flow = GradientFlow(K, y, learning_rate=1.0)
    assert flow.convergence_rate == 0.0
    out = flow.predict(KzX, [0.0, 10.0, 1e6, np.inf])
    assert np.isfinite(out.train).all() and np.isfinite(out.test).all()
    pinv = np.linalg.pinv(K, rcond=n * np.finfo(float).eps, hermitian=True)
    np.testing.assert_allclose(out.test[-1], KzX @ pinv @ y, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(out.train[-1], K @ pinv @ y, rtol=1e-6, atol=1e-8)
    # the limit is reached continuously (null directions do not move)
    np.testing.assert_allclose(out.test[2], out.test[3], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.train[2], out.train[3], rtol=1e-5, atol=1e-6)
    # duplicated points with conflicting targets converge to their average
    np.testing.assert_allclose(out.train[-1][: n // 2], (y[: n // 2] + y[n // 2:]) / 2,
                               atol=1e-6)
    L = flow.loss(np.geomspace(1e-3, 1e6, 50))
    assert np.all(np.diff(L) <= 1e-12) and np.isfinite(L).all()
    assert flow.loss(np.inf) == pytest.approx(0.25 * np.sum((y[: n // 2] - y[n // 2:]) ** 2),
                                              rel=1e-6)


def test_early_stopping():
    K, KvX, y, rng = _data(m=15, seed=4)
    yv = rng.standard_normal(len(KvX))
    flow = GradientFlow(K, y, learning_rate=2.0)
    ts = np.geomspace(1e-3, 1e3, 40)
    es = flow.early_stopping(KvX, yv, ts)
    curve = [0.5 * np.sum((flow.predict(KvX, t).test - yv) ** 2) for t in ts]
    np.testing.assert_allclose(es.val_loss, curve, rtol=1e-8)
    assert es.best_index == int(np.argmin(curve)) and es.best_time == ts[es.best_index]
    np.testing.assert_allclose(es.train_loss, flow.loss(ts))
    with pytest.raises(ValueError, match="y_val"):
        flow.early_stopping(KvX, yv[:-1], ts)


def test_input_errors():
    K, KzX, y, _ = _data()
    with pytest.raises(ValueError, match="y_train"):
        GradientFlow(K, y[:-1])
    ybad = y.copy()
    ybad[0] = np.nan
    with pytest.raises(ValueError, match="y_train"):
        GradientFlow(K, ybad)
    with pytest.raises(ValueError, match="ridge"):
        GradientFlow(K, y, ridge=-0.1)
    with pytest.raises(ValueError, match="learning_rate"):
        GradientFlow(K, y, learning_rate=0.0)
    with pytest.raises(ValueError, match="k_train_train"):
        GradientFlow(K[:-1], y)
    with pytest.raises(ValueError, match="k_train_train.*positive semi-definite"):
        GradientFlow(K - 2 * np.linalg.eigvalsh(K).max() * np.eye(len(K)), y)
    flow = GradientFlow(K, y)
    for bad in (-1.0, np.nan, [0.0, -2.0]):
        with pytest.raises(ValueError, match="t:"):
            flow.predict(t=bad)
    with pytest.raises(ValueError, match="k_test_train"):
        flow.predict(KzX[:, :-1], 1.0)
    with pytest.raises(ValueError, match="f0_train"):
        flow.predict(t=1.0, f0_train=np.zeros(len(K) + 1))
    with pytest.raises(ValueError, match="f0_train"):
        flow.predict(t=1.0, f0_train=np.zeros((len(K), 2)))
    with pytest.raises(ValueError, match="f0_test"):
        flow.predict(t=1.0, f0_test=np.zeros(len(KzX)))
    with pytest.raises(ValueError, match="f0_test"):
        flow.predict(KzX, 1.0, f0_test=np.zeros(len(KzX) + 1))
