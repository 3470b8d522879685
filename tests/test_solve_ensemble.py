"""InfiniteEnsemble: the NTK-GP of Lee et al. (2019) and the NNGP posterior."""

import numpy as np
import pytest
import scipy.linalg as sla

import ntkfast as nk
from ntkfast.solve import GradientFlow, InfiniteEnsemble, KernelRegression


def _setup(n=25, m=6, d=3, k=None, seed=0, duplicate=False):
    rng = np.random.default_rng(seed)
    X, Z = rng.standard_normal((n, d)), rng.standard_normal((m, d))
    if duplicate:
        X[n // 2:] = X[: n - n // 2]
    y = rng.standard_normal(n if k is None else (n, k))
    net = nk.MLP(depth=2, activation="erf", w_std=1.5, b_std=0.2)
    return net, X, Z, y


def _affine_map_moments(net, X, Z, y, eta, t, ridge=0.0):
    """Independent derivation: f_t(Z) = f0(Z) + Θ(Z,X) P_t (y − f0(X)) with
    f0 ~ GP(0, NNGP) jointly on [X; Z] and P_t = Π⁻¹(I − expm(−ηΠt)); the moments
    of this affine map of a Gaussian, with the joint prior covariance."""
    n = len(X)
    ks, kz = net.kernels(X), net.kernels(Z, X)
    Pi = ks.ntk + ridge * np.eye(n)
    Pt = np.linalg.solve(Pi, np.eye(n) - sla.expm(-eta * t * Pi))
    Mt = kz.ntk @ Pt
    joint = net.nngp(np.vstack([X, Z]))
    A = np.hstack([-Mt, np.eye(len(Z))])
    return Mt @ y, A @ joint @ A.T


def _assert_psd(C, rel=1e-10):
    np.testing.assert_array_equal(C, np.swapaxes(C, -1, -2))
    w = np.linalg.eigvalsh(C)
    assert w.min() >= -rel * max(np.abs(w).max(), 1e-300)


@pytest.mark.parametrize("ridge", [0.0, 0.1])
def test_matches_affine_map_of_prior(ridge):
    net, X, Z, y = _setup(k=2)
    eta = 0.7
    ens = InfiniteEnsemble(net, X, y, learning_rate=eta, ridge=ridge)
    ts = [0.0, 0.3, 4.0]
    out = ens.predict(Z, ts)
    assert out.mean.shape == (3, len(Z), 2) and out.covariance.shape == (3, len(Z), len(Z))
    for j, t in enumerate(ts):
        mean, cov = _affine_map_moments(net, X, Z, y, eta, t, ridge)
        np.testing.assert_allclose(out.mean[j], mean, rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(out.covariance[j], cov, rtol=1e-6, atol=1e-9)
        _assert_psd(out.covariance[j])
        diag = ens.predict(Z, t, cov="diag").covariance
        np.testing.assert_allclose(diag, np.diag(out.covariance[j]), rtol=1e-8, atol=1e-12)


def test_t_zero_is_prior_and_t_inf_is_ntk_regression():
    net, X, Z, y = _setup()
    ens = InfiniteEnsemble(net, X, y, learning_rate=1.5)
    prior = ens.predict(Z, 0.0)
    np.testing.assert_array_equal(prior.mean, np.zeros(len(Z)))
    np.testing.assert_allclose(prior.covariance, net.nngp(Z), rtol=1e-12, atol=1e-14)
    post = ens.predict(Z)  # t = inf by default
    ntk_reg = KernelRegression(net.ntk(X), y).predict(net.ntk(Z, X))
    np.testing.assert_allclose(post.mean, ntk_reg, rtol=1e-8, atol=1e-10)
    _assert_psd(post.covariance)
    # same as GradientFlow's test predictions at any t
    flow = GradientFlow(net.ntk(X), y, learning_rate=1.5)
    for t in (0.2, np.inf):
        np.testing.assert_allclose(ens.predict(Z, t, cov=None).mean,
                                   flow.predict(net.ntk(Z, X), t).test, rtol=1e-9, atol=1e-12)


def test_ensemble_interpolates_at_training_points():
    net, X, _, y = _setup()
    ens = InfiniteEnsemble(net, X, y)
    out = ens.predict(X[:8])
    np.testing.assert_allclose(out.mean, y[:8], atol=1e-7)
    scale = np.diag(net.nngp(X)).max()
    assert np.abs(out.covariance).max() <= 1e-7 * scale
    _assert_psd(out.covariance)
    assert (ens.predict(X[:8], cov="diag").covariance >= 0).all()


def test_covariance_variance_decrease_over_training_at_train_points():
    net, X, _, y = _setup()
    ens = InfiniteEnsemble(net, X, y)
    var = ens.predict(X, [0.0, 0.1, 1.0, 10.0, np.inf], cov="diag").covariance
    assert (var >= 0).all()
    assert np.all(np.diff(var.sum(axis=1)) <= 1e-12)


def test_rank_deficient_training_set():
    net, X, Z, y = _setup(duplicate=True)
    ens = InfiniteEnsemble(net, X, y)
    out = ens.predict(Z, [1.0, np.inf])
    assert np.isfinite(out.mean).all() and np.isfinite(out.covariance).all()
    for C in out.covariance:
        _assert_psd(C)


@pytest.mark.parametrize("k", [None, 2])
def test_nngp_posterior(k):
    net, X, Z, y = _setup(k=k)
    ens = InfiniteEnsemble(net, X, y, ridge=0.01)
    post = ens.nngp_posterior(Z)
    reg = KernelRegression(net.nngp(X), y, ridge=0.01)
    np.testing.assert_allclose(post.mean, reg.predict(net.nngp(Z, X)), rtol=1e-9)
    np.testing.assert_allclose(post.covariance, reg.covariance(net.nngp(Z, X), net.nngp(Z)),
                               rtol=1e-9, atol=1e-12)
    _assert_psd(post.covariance)
    var = ens.nngp_posterior(Z, cov="diag").covariance
    np.testing.assert_allclose(var, np.diag(post.covariance), rtol=1e-8, atol=1e-12)
    assert ens.nngp_posterior(Z, cov=None).covariance is None


def test_input_errors():
    net, X, Z, y = _setup()
    with pytest.raises(TypeError, match="net"):
        InfiniteEnsemble(object(), X, y)
    with pytest.raises(ValueError, match="y_train"):
        InfiniteEnsemble(net, X, y[:-1])
    with pytest.raises(ValueError, match="ridge"):
        InfiniteEnsemble(net, X, y, ridge=-1.0)
    ens = InfiniteEnsemble(net, X, y)
    with pytest.raises(ValueError, match="cov"):
        ens.predict(Z, cov="lower")
    with pytest.raises(ValueError, match="X_test"):
        ens.predict(Z[:, :-1])
    with pytest.raises(ValueError, match="t:"):
        ens.predict(Z, -1.0)
