"""KernelRegression: Cholesky fit, GP posterior, LOO, ridge path, jitter, input checks."""

import numpy as np
import pytest

import ntkfast as nk
from ntkfast.solve import JitterWarning, KernelRegression, NotPositiveDefiniteError


def _data(n=40, m=7, d=5, seed=0, k=None):
    rng = np.random.default_rng(seed)
    X, Z = rng.standard_normal((n, d)), rng.standard_normal((m, d))
    y = rng.standard_normal(n if k is None else (n, k))
    net = nk.MLP(depth=2, activation="relu", w_std=1.4, b_std=0.2)
    return net.ntk(X), net.ntk(Z, X), net.ntk(Z), y


def _rank_deficient(n=30, seed=1):
    """NNGP Gram with duplicated rows: singular (PSD, not PD)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4))
    X[n // 2:] = X[: n - n // 2]
    y = rng.standard_normal(n)
    y[n // 2:] = y[: n - n // 2]
    net = nk.MLP(depth=1, activation="erf", w_std=1.2, b_std=0.1)
    Z = rng.standard_normal((5, 4))
    return net.nngp(X), net.nngp(Z, X), y, net.nngp_diag(Z)


@pytest.mark.parametrize("k", [None, 3])
@pytest.mark.parametrize("ridge", [0.0, 0.3])
def test_predict_matches_direct_solve(k, ridge):
    K, KzX, _, y = _data(k=k)
    reg = KernelRegression(K, y, ridge=ridge)
    alpha = np.linalg.solve(K + ridge * np.eye(len(K)), y)
    np.testing.assert_allclose(reg.alpha, alpha, rtol=1e-8, atol=1e-10)
    pred = reg.predict(KzX)
    assert pred.shape == ((len(KzX),) if k is None else (len(KzX), k))
    np.testing.assert_allclose(pred, KzX @ alpha, rtol=1e-8, atol=1e-10)
    assert reg.jitter == 0.0


def test_inputs_not_modified():
    K, KzX, Kzz, y = _data()
    copies = [a.copy() for a in (K, KzX, Kzz, y)]
    reg = KernelRegression(K, y)
    reg.predict(KzX), reg.variance(KzX, np.diag(Kzz)), reg.covariance(KzX, Kzz)
    reg.loo_residuals(), reg.ridge_path([0.1], KzX)
    for a, b in zip((K, KzX, Kzz, y), copies):
        np.testing.assert_array_equal(a, b)


def test_variance_and_covariance():
    K, KzX, Kzz, y = _data()
    reg = KernelRegression(K, y)
    direct = Kzz - KzX @ np.linalg.solve(K, KzX.T)
    C = reg.covariance(KzX, Kzz)
    np.testing.assert_array_equal(C, C.T)
    assert np.linalg.eigvalsh(C).min() >= -1e-12 * np.abs(Kzz).max()
    np.testing.assert_allclose(C, direct, atol=1e-8 * np.abs(Kzz).max())
    var = reg.variance(KzX, np.diag(Kzz))
    assert var.shape == (len(KzX),) and (var >= 0).all()
    np.testing.assert_allclose(var, np.diag(C), atol=1e-8 * np.abs(Kzz).max())
    # at the training points (ridge 0) the posterior collapses
    vtrain = reg.variance(K, np.diag(K))
    assert (vtrain >= 0).all()
    assert vtrain.max() <= 1e-7 * np.diag(K).mean()
    Ctrain = reg.covariance(K[:10], K[:10, :10])
    assert np.abs(Ctrain).max() <= 1e-7 * np.diag(K).mean()
    # with a ridge: variance at training points is positive, not zero
    vr = KernelRegression(K, y, ridge=0.5).variance(K, np.diag(K))
    assert vr.min() > 1e-3


def test_variance_warns_on_inconsistent_diag():
    K, KzX, Kzz, y = _data()
    with pytest.warns(RuntimeWarning, match="rounding"):
        var = KernelRegression(K, y).variance(KzX, np.zeros(len(KzX)))
    assert (var < 0).all()  # not clipped: beyond rounding level


@pytest.mark.parametrize("ridge", [0.0, 0.05])
@pytest.mark.parametrize("k", [None, 2])
def test_loo_equals_refit(ridge, k):
    K, _, _, y = _data(n=25, k=k)
    reg = KernelRegression(K, y, ridge=ridge)
    loo = reg.loo_residuals()
    assert loo.shape == y.shape
    for i in range(len(K)):
        keep = np.arange(len(K)) != i
        sub = KernelRegression(K[np.ix_(keep, keep)], y[keep], ridge=ridge)
        refit = y[i] - sub.predict(K[i:i + 1, keep])[0]
        np.testing.assert_allclose(loo[i], refit, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("k", [None, 2])
def test_ridge_path_equals_direct(k):
    K, KzX, _, y = _data(k=k)
    ridges = [0.0, 1e-3, 0.1, 2.0]
    reg = KernelRegression(K, y, ridge=0.7)
    path = reg.ridge_path(ridges, KzX)
    assert path.predictions.shape == (len(ridges),) + (KzX.shape[0],) + y.shape[1:]
    for j, r in enumerate(ridges):
        direct = KernelRegression(K, y, ridge=r)
        np.testing.assert_allclose(path.alpha[j], direct.alpha, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(path.predictions[j], direct.predict(KzX), rtol=1e-6,
                                   atol=1e-8)
        np.testing.assert_allclose(path.loo_residuals[j], direct.loo_residuals(), rtol=1e-6,
                                   atol=1e-8)
        assert path.loo_mse[j] == pytest.approx(np.mean(direct.loo_residuals() ** 2), rel=1e-6)
    assert reg.ridge_path([0.5]).predictions is None


def test_ridge_path_rejects_singular_ridge():
    K, _, y, _ = _rank_deficient()
    reg = KernelRegression(K, y, ridge=0.1)
    with pytest.raises(NotPositiveDefiniteError, match="ridges"):
        reg.ridge_path([0.0, 0.1])
    path = reg.ridge_path([0.1])
    np.testing.assert_allclose(path.alpha[0], reg.alpha, rtol=1e-6)


def test_jitter_on_duplicate_rows():
    K, KzX, y, kzz = _rank_deficient()
    with pytest.warns(JitterWarning, match=r"added jitter .* x mean diagonal") as rec:
        reg = KernelRegression(K, y)
    assert reg.jitter > 0
    assert f"{reg.jitter:.3g}" in str(rec[0].message)
    assert reg.jitter <= 1e-6 * np.diag(K).mean() * (1 + 1e-12)
    # the jittered fit still interpolates the (consistent) duplicated targets
    np.testing.assert_allclose(reg.predict(K), y, atol=1e-4)
    np.testing.assert_allclose(reg.alpha, np.linalg.solve(K + reg.jitter * np.eye(len(K)), y),
                               rtol=1e-5, atol=1e-6 * np.abs(reg.alpha).max())
    assert (reg.variance(KzX, kzz) >= 0).all()


def test_jitter_in_place_on_memmap(tmp_path):
    K, KzX, y, _ = _rank_deficient()
    with pytest.warns(JitterWarning):
        ref = KernelRegression(K, y)
    mm = np.lib.format.open_memmap(tmp_path / "K.npy", mode="w+", dtype=K.dtype, shape=K.shape)
    mm[...] = K
    with pytest.warns(JitterWarning):
        reg = KernelRegression(mm, y, overwrite=True)
    assert reg.jitter == ref.jitter
    assert np.shares_memory(reg.factor[0], mm)
    L = np.tril(reg.factor[0])
    np.testing.assert_allclose(L @ L.T, K + reg.jitter * np.eye(len(K)), atol=1e-12)
    np.testing.assert_allclose(reg.predict(KzX), ref.predict(KzX), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(reg.loo_residuals(), ref.loo_residuals(), rtol=1e-6)
    with pytest.raises(ValueError, match="overwrite=True"):
        reg.ridge_path([0.1])


def test_overwrite_in_place_no_jitter():
    K, KzX, _, y = _data()
    work = K.copy()
    reg = KernelRegression(work, y, overwrite=True)
    assert np.shares_memory(reg.factor[0], work)
    np.testing.assert_allclose(reg.predict(KzX), KernelRegression(K, y).predict(KzX), rtol=1e-10)
    ro = K.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="k_train_train.*writable"):
        KernelRegression(ro, y, overwrite=True)


def test_not_positive_definite_raises():
    rng = np.random.default_rng(3)
    A = rng.standard_normal((20, 20))
    K = A @ A.T - 5.0 * np.eye(20)  # a clearly negative eigenvalue
    with pytest.raises(NotPositiveDefiniteError, match="not positive definite") as ei:
        KernelRegression(K, rng.standard_normal(20))
    assert isinstance(ei.value, np.linalg.LinAlgError)
    with pytest.raises(np.linalg.LinAlgError, match="k_train_train"):
        KernelRegression(np.zeros((4, 4)), np.ones(4))


def test_float32_kernel():
    K, KzX, _, y = _data()
    reg = KernelRegression(K.astype(np.float32), y)
    assert reg.factor[0].dtype == np.float32
    np.testing.assert_allclose(reg.predict(KzX.astype(np.float32)),
                               KernelRegression(K, y).predict(KzX), rtol=2e-2, atol=2e-2)


def test_input_errors():
    K, KzX, Kzz, y = _data()
    with pytest.raises(ValueError, match="y_train"):
        KernelRegression(K, y[:-1])
    with pytest.raises(ValueError, match="k_train_train"):
        KernelRegression(K[:, :-1], y)
    ybad = y.copy()
    ybad[3] = np.nan
    with pytest.raises(ValueError, match="y_train.*NaN"):
        KernelRegression(K, ybad)
    Kbad = K.copy()
    Kbad[2, 5] = np.nan
    with pytest.raises(ValueError, match="k_train_train.*NaN"):
        KernelRegression(Kbad, y)
    with pytest.raises(ValueError, match="ridge"):
        KernelRegression(K, y, ridge=-1e-3)
    with pytest.raises(ValueError, match="ridge"):
        KernelRegression(K, y, ridge=np.nan)
    Kasym = K.copy()
    Kasym[0, 1] += 0.1
    with pytest.raises(ValueError, match="k_train_train.*symmetric"):
        KernelRegression(Kasym, y)
    reg = KernelRegression(K, y)
    with pytest.raises(ValueError, match="k_test_train"):
        reg.predict(KzX[:, :-1])
    with pytest.raises(ValueError, match="k_test_train"):
        reg.predict(KzX[0])
    with pytest.raises(ValueError, match="k_test_diag"):
        reg.variance(KzX, np.diag(Kzz)[:-1])
    with pytest.raises(ValueError, match="k_test_test"):
        reg.covariance(KzX, Kzz[:-1, :-1])
    with pytest.raises(ValueError, match="ridges"):
        reg.ridge_path([0.1, -0.1])
    with pytest.raises(TypeError, match="k_train_train"):
        KernelRegression(K.astype(complex), y)
