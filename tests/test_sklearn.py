"""ntkfast.sklearn: estimators pass check_estimator; NTKKernel in GP, SVC, KernelRidge."""

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_digits, load_iris  # noqa: E402
from sklearn.gaussian_process import GaussianProcessRegressor  # noqa: E402
from sklearn.gaussian_process.kernels import ConstantKernel, WhiteKernel  # noqa: E402
from sklearn.kernel_ridge import KernelRidge  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.svm import SVC  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import ntkfast as nk  # noqa: E402
from ntkfast import _defaults  # noqa: E402
from ntkfast.sklearn import NTKClassifier, NTKKernel, NTKRegressor  # noqa: E402


@parametrize_with_checks([NTKRegressor(), NTKClassifier(),
                          NTKClassifier(kernel="nngp", depth=2, target_encoding="01")])
def test_sklearn_compatible(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    return train_test_split(X, y, test_size=0.4, stratify=y, random_state=0)


def test_classifier_iris(iris):
    Xtr, Xte, ytr, yte = iris
    clf = NTKClassifier(depth=2, b_std=0.1, ridge=1e-2).fit(Xtr, ytr)
    assert list(clf.classes_) == [0, 1, 2]
    assert clf.score(Xte, yte) > 0.9
    dec = clf.decision_function(Xte)
    assert dec.shape == (len(Xte), 3)
    np.testing.assert_array_equal(clf.predict(Xte), clf.classes_[dec.argmax(1)])
    # The scores are kernel regression on one-hot ±1 targets.
    Y = -np.ones((len(ytr), 3))
    Y[np.arange(len(ytr)), ytr] = 1
    net = nk.MLP(depth=2, b_std=0.1)
    reg = nk.KernelRegression(net.ntk(Xtr), Y, ridge=1e-2)
    np.testing.assert_allclose(dec, reg.predict(net.ntk(Xte, Xtr)), rtol=1e-10, atol=1e-12)


def test_classifier_binary_and_string_labels(iris):
    Xtr, Xte, ytr, yte = iris
    names = np.array(["setosa", "versicolor", "virginica"])
    mask_tr, mask_te = ytr > 0, yte > 0
    clf = NTKClassifier(depth=2, ridge=0.1, target_encoding="01").fit(
        Xtr[mask_tr], names[ytr[mask_tr]])
    dec = clf.decision_function(Xte[mask_te])
    assert dec.ndim == 1
    pred = clf.predict(Xte[mask_te])
    np.testing.assert_array_equal(pred, clf.classes_[(dec > 0).astype(int)])
    assert np.mean(pred == names[yte[mask_te]]) > 0.85


def test_classifier_digits_subset():
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    clf = NTKClassifier(depth=3, ridge=1e-3).fit(X[:500], y[:500])
    assert clf.score(X[500:800], y[500:800]) > 0.9


def test_regressor_return_std_matches_gp(rng):
    X = rng.normal(size=(40, 3))
    y = np.sin(X[:, 0]) + 0.1 * X[:, 1]
    Xt = rng.normal(size=(15, 3))
    reg = NTKRegressor(kernel="nngp", depth=2, b_std=0.5, ridge=1e-3).fit(X, y)
    mean, std = reg.predict(Xt, return_std=True)
    assert mean.shape == std.shape == (15,) and np.all(std >= 0)
    gp = GaussianProcessRegressor(kernel=NTKKernel(kernel="nngp", depth=2, b_std=0.5),
                                  alpha=1e-3, optimizer=None).fit(X, y)
    gmean, gstd = gp.predict(Xt, return_std=True)
    np.testing.assert_allclose(mean, gmean, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(std, gstd, rtol=1e-6, atol=1e-8)
    # At a training point the latent posterior variance is below the noise variance.
    _, std_train = reg.predict(X, return_std=True)
    assert std_train.max() < np.sqrt(1e-3) < std.max()
    # Multi-output: std per target.
    reg2 = NTKRegressor(depth=2).fit(X, np.c_[y, 2 * y])
    m2, s2 = reg2.predict(Xt, return_std=True)
    assert m2.shape == s2.shape == (15, 2)
    np.testing.assert_allclose(s2[:, 0], s2[:, 1])
    np.testing.assert_allclose(m2[:, 1], 2 * m2[:, 0], rtol=1e-10, atol=1e-12)


def test_kernel_object(rng):
    X, Y = rng.normal(size=(12, 4)), rng.normal(size=(5, 4))
    k = NTKKernel(depth=3, b_std=0.2)
    net = nk.MLP(depth=3, b_std=0.2)
    np.testing.assert_array_equal(k(X), net.ntk(X))
    np.testing.assert_array_equal(k(X, Y), net.ntk(X, Y))
    np.testing.assert_allclose(k.diag(X), np.diag(k(X)), rtol=1e-14)
    app = nk.MLP(depth=_defaults.DEPTH, w_std=_defaults.W_STD, b_std=_defaults.B_STD)
    np.testing.assert_allclose(NTKKernel(kernel="nngp").diag(X), app.nngp_diag(X))
    K, grad = k(X, eval_gradient=True)
    assert grad.shape == (12, 12, 0)
    with pytest.raises(ValueError, match="eval_gradient"):
        k(X, Y, eval_gradient=True)
    assert not k.is_stationary()
    names = {h.name for h in k.hyperparameters}
    assert names == {"w_std", "b_std", "depth"} and all(h.fixed for h in k.hyperparameters)
    assert k.n_dims == 0
    k2 = clone(k)
    assert k2 == k and k2.get_params()["depth"] == 3
    assert "depth=3" in repr(k)
    with pytest.raises(ValueError, match="kernel"):
        NTKKernel(kernel="rbf")(X)


def test_kernel_in_gp_with_optimizer(iris):
    Xtr, Xte, ytr, yte = iris
    y = Xtr[:, 3]
    kern = ConstantKernel(1.0) * NTKKernel(depth=2) + WhiteKernel(1e-2)
    gp = GaussianProcessRegressor(kernel=kern, random_state=0).fit(Xtr[:, :3], y)
    # The constant and the noise were fitted (gradients through the fixed NTK part).
    assert gp.kernel_.k2.noise_level != 1e-2
    assert gp.score(Xte[:, :3], Xte[:, 3]) > 0.8


def test_kernel_in_svc_and_kernel_ridge(iris):
    Xtr, Xte, ytr, yte = iris
    k = NTKKernel(depth=2)
    svc = SVC(kernel=k, C=10.0).fit(Xtr, ytr)
    assert svc.score(Xte, yte) > 0.9
    pre = SVC(kernel="precomputed", C=10.0).fit(k(Xtr), ytr)
    np.testing.assert_array_equal(svc.predict(Xte), pre.predict(k(Xte, Xtr)))
    kr = KernelRidge(kernel=k, alpha=0.1).fit(Xtr, Xtr[:, 0])
    ours = NTKRegressor(depth=2, ridge=0.1).fit(Xtr, Xtr[:, 0])
    np.testing.assert_allclose(kr.predict(Xte), ours.predict(Xte), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("Est", [NTKRegressor, NTKClassifier])
@pytest.mark.parametrize("params, match", [
    (dict(kernel="rbf"), "kernel"),
    (dict(ridge=-1.0), "ridge"),
    (dict(ridge=float("nan")), "ridge"),
    (dict(depth=-1), "depth"),
    (dict(depth=1.5), "depth"),
    (dict(activation="softsign"), "activation"),
    (dict(w_std=-2.0), "w_std"),
    (dict(parameterization="standard"), "width"),
    (dict(dtype="int8"), "dtype"),
])
def test_bad_parameters_name_themselves(Est, params, match):
    X, y = np.random.default_rng(0).normal(size=(10, 2)), np.arange(10) % 2
    with pytest.raises((ValueError, TypeError), match=match):
        Est(**params).fit(X, y)


def test_classifier_bad_target_encoding_and_one_class():
    X = np.random.default_rng(0).normal(size=(6, 2))
    with pytest.raises(ValueError, match="target_encoding"):
        NTKClassifier(target_encoding="onehot").fit(X, np.arange(6) % 2)
    with pytest.raises(ValueError, match="class"):
        NTKClassifier().fit(X, np.zeros(6))


# -- n_jobs: scikit-learn's convention ---------------------------------------------------
class _Recorder:
    """An MLP that records the n_jobs each kernel call receives."""

    def __init__(self):
        self.net, self.seen = nk.MLP(depth=1, b_std=1.0), []

    def ntk(self, X, Z=None, **kw):
        self.seen.append(kw.get("n_jobs"))
        return self.net.ntk(X, Z, **kw)

    def nngp(self, X, Z=None, **kw):
        self.seen.append(kw.get("n_jobs"))
        return self.net.nngp(X, Z, **kw)

    def ntk_diag(self, X, **kw):
        return self.net.ntk_diag(X, **kw)

    def nngp_diag(self, X, **kw):
        return self.net.nngp_diag(X, **kw)


@pytest.mark.parametrize("make", [
    lambda net, n: NTKRegressor(network=net, n_jobs=n),
    lambda net, n: NTKClassifier(network=net, n_jobs=n),
])
def test_n_jobs_follows_scikit_learns_convention(make, monkeypatch):
    import joblib

    from ntkfast import _threads
    monkeypatch.setattr(_threads, "available_cores", lambda: 4)
    X, y = np.random.default_rng(0).normal(size=(12, 3)), np.arange(12) % 2

    def seen(n_jobs):
        rec = _Recorder()
        make(rec, n_jobs).fit(X, y).predict(X)
        assert len(set(rec.seen)) == 1
        return rec.seen[0]

    assert seen(None) == 1            # None: one thread ...
    with joblib.parallel_config(n_jobs=3):
        assert seen(None) == 3        # ... unless a joblib context says otherwise
        assert seen(2) == 2
    assert seen(-1) == 4 and seen(-2) == 3 and seen(64) == 4
    with pytest.raises(ValueError, match="n_jobs"):
        seen(0)


def test_kernel_object_n_jobs(monkeypatch):
    from ntkfast import _threads
    monkeypatch.setattr(_threads, "available_cores", lambda: 4)
    rec = _Recorder()
    X = np.random.default_rng(1).normal(size=(5, 3))
    NTKKernel(network=rec)(X)
    NTKKernel(network=rec, n_jobs=-1)(X)
    assert rec.seen == [1, 4]


def test_module_shows_only_its_api():
    import ntkfast.sklearn as m
    assert sorted(n for n in dir(m) if not n.startswith("_")) == sorted(m.__all__)


@pytest.mark.parametrize("Est", [NTKRegressor, NTKClassifier, NTKKernel])
def test_defaults_are_the_applications_defaults(Est):
    """The estimators' network defaults are ntkfast._defaults (the study in
    docs/defaults-study.md), and _MLP_DEFAULTS (network= conflict check) agrees."""
    from ntkfast.sklearn import _MLP_DEFAULTS
    params = Est().get_params()
    assert {k: params[k] for k in _MLP_DEFAULTS} == _MLP_DEFAULTS
    assert (params["depth"], params["w_std"], params["b_std"]) == (
        _defaults.DEPTH, _defaults.W_STD, _defaults.B_STD)
    Est(network=nk.MLP())  # network= alone is fine ...
    X, y = np.random.default_rng(0).normal(size=(6, 2)), np.arange(6) % 2
    with pytest.raises(ValueError, match="b_std"):
        est = Est(network=nk.MLP(), b_std=None)  # ... but not with a changed default
        est(X) if Est is NTKKernel else est.fit(X, y)
