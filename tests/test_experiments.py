"""Experiments: the NTK prediction formulas, Theorem 2 and trained nets vs the NTK."""

import numpy as np
import pytest
from scipy import linalg

import ntkfast as nk
from ntkfast import experiments as E


def _data(n=16, m=20, d=8, seed=0):
    rng = np.random.default_rng(seed)
    X, Z = rng.standard_normal((n, d)), rng.standard_normal((m, d))
    y = np.sin(X[:, 0]) + 0.5 * np.sign(X[:, 1])
    return X, y, Z


def test_ntk_prediction_matches_linear_model_in_parameter_space():
    """Θ = J Jᵀ of a random linear model: the discrete formula equals GD on θ exactly and
    the continuous one equals the matrix exponential."""
    rng = np.random.default_rng(0)
    J, Js = rng.standard_normal((6, 9)), rng.standard_normal((4, 9))
    f0, g0, y = rng.standard_normal(6), rng.standard_normal(4), rng.standard_normal(6)
    theta, theta_s = J @ J.T, Js @ J.T
    lr = 0.5 / linalg.eigvalsh(theta).max()
    w = np.zeros(9)
    for _ in range(25):
        w -= lr * J.T @ (f0 + J @ w - y)
    ftr, fte = E.ntk_prediction(theta, y, 25, lr, f0, theta_s, g0, discrete=True)
    np.testing.assert_allclose(ftr[:, 0], f0 + J @ w, atol=1e-10)
    np.testing.assert_allclose(fte[:, 0], g0 + Js @ w, atol=1e-10)
    ts = np.array([0.0, 3.0, 40.0])
    ftr, fte = E.ntk_prediction(theta, y, ts, lr, f0, theta_s, g0)
    for r, t in enumerate(ts):
        np.testing.assert_allclose(ftr[r, :, 0], y + linalg.expm(-lr * theta * t) @ (f0 - y),
                                   atol=1e-9)
    np.testing.assert_allclose(fte[0, :, 0], g0, atol=1e-12)
    # t → ∞: kernel regression on the residual (Θ is singular here: use a full-rank one)
    K = theta + np.eye(6)
    _, f_inf = E.ntk_prediction(K, y, 1e6, lr, f0, theta_s, g0)
    np.testing.assert_allclose(f_inf[:, 0], g0 + theta_s @ np.linalg.solve(K, y - f0),
                               atol=1e-8)
    with pytest.raises(ValueError, match="y"):
        E.ntk_prediction(theta, y[:3], 1.0, lr)


def test_ntk_ensemble_mean_and_variance_by_monte_carlo():
    X, y, Z = _data(6, 5, 3)
    mlp = nk.MLP(2, "erf", 1.3, 0.3)
    ktr, kzx = mlp.kernels(X), mlp.kernels(Z, X)
    t, lr = 30.0, 0.02
    mean, var = E.ntk_ensemble(ktr.ntk, kzx.ntk, ktr.nngp, kzx.nngp, mlp.nngp_diag(Z), y, t, lr)
    # sample f₀ ~ GP(0, Σ) jointly on (X, Z) and push it through the linear dynamics
    S = mlp.nngp(np.vstack([X, Z]))
    L = np.linalg.cholesky(S + 1e-10 * np.eye(len(S)))
    f0 = L @ np.random.default_rng(1).standard_normal((len(S), 20000))
    ft = np.stack([E.ntk_prediction(ktr.ntk, y, t, lr, f0[:6, i], kzx.ntk, f0[6:, i])[1][:, 0]
                   for i in range(0, 20000, 10)])
    np.testing.assert_allclose(ft.mean(0), mean, atol=4 * np.sqrt(var.max() / 2000))
    np.testing.assert_allclose(ft.var(0), var, rtol=0.15)
    m_inf, _ = E.ntk_ensemble(ktr.ntk, kzx.ntk, ktr.nngp, kzx.nngp, mlp.nngp_diag(Z), y)
    np.testing.assert_allclose(m_inf, kzx.ntk @ np.linalg.solve(ktr.ntk, y), rtol=1e-8)


def test_trained_nets_approach_ntk_and_kernel_freezes_with_width():
    """Theorem 2 and the NTK dynamics: both the distance to the NTK prediction and the
    relative kernel change shrink as width grows."""
    X, y, Z = _data()
    mlp = nk.MLP(2, "relu", 1.5, 0.2)
    res = E.training_experiments(mlp, X, y, Z, [16, 128, 1024], steps=40, n_checkpoints=4,
                                 n_seeds=3, seed=0)
    R = len(res["steps"])
    assert res["kernel_change"].shape == res["test_rms"].shape == (3, 3, R)
    change = res["kernel_change"][:, :, -1].mean(1)
    rms = res["test_rms"][:, :, -1].mean(1)
    train_rms = res["train_rms"][:, :, -1].mean(1)
    assert np.all(np.diff(change) < 0), change
    assert change[-1] < change[0] / 4
    assert rms[-1] < rms[0] / 2.5 and rms[-1] < rms[1] / 2, rms
    assert np.all(np.diff(train_rms) < 0) and train_rms[-1] < train_rms[0] / 4, train_rms
    assert res["change_slope"] < -0.25 and res["test_rms_slope"] < -0.25
    assert np.all(res["kernel_change"][:, :, 0] == 0)
    assert np.all(res["loss"][:, -1] < res["loss"][:, 0])   # it actually trained


def test_spectrum_dynamics_follow_the_eigenvalues():
    X, y, _ = _data(20)
    mlp = nk.MLP(1, "relu", 1.5, 0.2)
    res = E.spectrum_dynamics(mlp, X, y, 1024, steps=60, n_dirs=4, seed=0)
    lam = res["eigvals"]
    assert np.all(np.diff(lam) <= 1e-9) and res["dirs"][0] == 0
    np.testing.assert_allclose(res["ratio_ntk"], np.exp(-res["lr"] * np.outer(
        res["steps"], lam[res["dirs"]])))
    np.testing.assert_allclose(res["ratio_net"][0], 1.0)
    # the top direction converges first, in the network as predicted
    k = np.searchsorted(res["steps"], 10)
    assert res["ratio_net"][k, 0] < 0.2 and res["ratio_net"][k, -1] > 0.5
    np.testing.assert_allclose(res["ratio_net"][:k + 1, -1], res["ratio_ntk"][:k + 1, -1],
                               atol=0.1)
    # the empirical spectrum is close to the analytic one at this width
    np.testing.assert_allclose(res["eigvals_emp"][:3], lam[:3], rtol=0.15)


def test_digits_loader_and_bad_arguments():
    pytest.importorskip("sklearn")
    d = E.load_digits_split(10, 5, seed=0)
    assert d["X_train"].shape == (10, 64) and d["X_test"].shape == (5, 64)
    np.testing.assert_allclose(np.linalg.norm(d["X_train"], axis=1), 8.0)
    assert set(np.unique(d["y_train"])) <= {-1.0, 1.0}
    mlp = nk.MLP(1)
    X, y, Z = _data(4, 3, 2)
    with pytest.raises(ValueError, match="widths"):
        E.kernel_convergence(mlp, X, [0, 4])
    with pytest.raises(ValueError, match="widths"):
        E.kernel_convergence(mlp, X, [])
    with pytest.raises(ValueError, match="y"):
        E.training_experiments(mlp, X, y[:2], Z, [4])
    with pytest.raises(ValueError, match="X_test"):
        E.training_experiments(mlp, X, y, np.ones((3, 5)), [4])
    with pytest.raises(ValueError, match="width"):
        E.spectrum_dynamics(mlp, X, y, 0)
    with pytest.raises(ValueError, match="n_train"):
        E.load_digits_split(1000, 1000)
