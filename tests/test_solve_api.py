"""One calling convention for the four solvers; the former call forms warn and still work."""

import inspect
import warnings

import numpy as np
import pytest

import ntkfast as nk
from ntkfast.solve import GradientFlow, InfiniteEnsemble, KernelRegression, NystromRegression

NET = nk.MLP(depth=2, activation="relu", w_std=1.3, b_std=0.1)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X, Z = rng.standard_normal((40, 4)), rng.standard_normal((7, 4))
    y = rng.standard_normal((40, 2))
    return X, Z, y, NET.ntk(X), NET.ntk(Z, X)


def _no_warnings(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn(*args, **kw)


def test_predict_signatures_agree():
    """Test inputs first, then t; training data under the same names everywhere."""
    first = {cls: list(inspect.signature(cls.predict).parameters)[1]
             for cls in (KernelRegression, GradientFlow, InfiniteEnsemble, NystromRegression)}
    assert first[KernelRegression] == first[GradientFlow] == "k_test_train"
    assert first[InfiniteEnsemble] == first[NystromRegression] == "X_test"
    for cls in (GradientFlow, InfiniteEnsemble):
        assert list(inspect.signature(cls.predict).parameters)[2] == "t"
    for cls in (KernelRegression, GradientFlow):
        assert list(inspect.signature(cls.fit).parameters)[1:3] == ["k_train_train", "y_train"]
    for cls in (InfiniteEnsemble, NystromRegression):
        assert list(inspect.signature(cls.fit).parameters)[1:3] == ["X_train", "y_train"]
    for cls in (KernelRegression, GradientFlow, InfiniteEnsemble, NystromRegression):
        assert "ridge" in inspect.signature(cls).parameters
    for cls in (GradientFlow, InfiniteEnsemble):
        assert "learning_rate" in inspect.signature(cls).parameters


def test_estimator_form_equals_constructor_form(data):
    X, Z, y, K, KzX = data
    a = _no_warnings(KernelRegression, K, y, ridge=0.1)
    b = _no_warnings(KernelRegression(ridge=0.1).fit, K, y)
    np.testing.assert_array_equal(a.predict(KzX), b.predict(KzX))
    for method in ("eigh", "krylov"):
        a = _no_warnings(GradientFlow, K, y, learning_rate=0.5, method=method)
        b = _no_warnings(GradientFlow(learning_rate=0.5, method=method).fit, K, y)
        np.testing.assert_array_equal(a.predict(KzX, [0.1, 2.0]).test,
                                      b.predict(KzX, [0.1, 2.0]).test)
    a = _no_warnings(InfiniteEnsemble, NET, X, y, learning_rate=0.5)
    b = _no_warnings(InfiniteEnsemble(NET, learning_rate=0.5).fit, X, y)
    np.testing.assert_array_equal(a.predict(Z, 1.0).mean, b.predict(Z, 1.0).mean)
    a = _no_warnings(NystromRegression, NET, X, y, n_centers=20, ridge=0.1)
    b = _no_warnings(NystromRegression(NET, n_centers=20, ridge=0.1).fit, X, y)
    np.testing.assert_array_equal(a.predict(Z), b.predict(Z))
    # keywords: the same names everywhere
    c = _no_warnings(NystromRegression, NET, X_train=X, y_train=y, n_centers=20, ridge=0.1)
    np.testing.assert_array_equal(a.predict(X_test=Z), c.predict(X_test=Z))
    g = _no_warnings(GradientFlow, k_train_train=K, y_train=y)
    _no_warnings(g.predict, k_test_train=KzX, t=1.0)


def test_unfitted_and_half_given(data):
    X, Z, y, K, KzX = data
    for est, arg in ((KernelRegression(), KzX), (GradientFlow(), KzX),
                     (InfiniteEnsemble(NET), Z), (NystromRegression(NET, n_centers=5), Z)):
        with pytest.raises(RuntimeError, match="not fitted"):
            est.predict(arg)
        assert type(est).__name__ in repr(est)
    with pytest.raises(TypeError, match="y_train"):
        KernelRegression(K)
    with pytest.raises(TypeError, match="y_train"):
        GradientFlow(K)
    with pytest.raises(TypeError, match="n_centers"):
        NystromRegression(NET).fit(X, y)


def test_gradient_flow_old_predict_order_warns(data):
    X, Z, y, K, KzX = data
    flow = GradientFlow(K, y, learning_rate=0.5)
    ts = [0.0, 0.3, np.inf]
    new = flow.predict(KzX, ts)
    calls = [lambda: flow.predict(ts, KzX),                      # predict(t, ntk_test_train)
             lambda: flow.predict(ts, ntk_test_train=KzX),
             lambda: flow.predict(ntk_test_train=KzX, t=ts)]
    for call in calls:
        with pytest.warns(DeprecationWarning, match="k_test_train"):
            old = call()
        np.testing.assert_array_equal(old.test, new.test)
        np.testing.assert_array_equal(old.train, new.train)
    with pytest.warns(DeprecationWarning):
        old = flow.predict(0.3)  # a scalar first argument is a time
    np.testing.assert_array_equal(old.train, flow.predict(t=0.3).train)
    with pytest.warns(DeprecationWarning), pytest.raises(TypeError, match="twice"):
        flow.predict(ts, KzX, ntk_test_train=KzX)
    with pytest.warns(DeprecationWarning), pytest.raises(TypeError, match="both"):
        flow.predict(KzX, ntk_test_train=KzX)


def test_renamed_keywords_warn(data):
    X, Z, y, K, KzX = data
    with pytest.warns(DeprecationWarning, match="ntk_train_train= is renamed k_train_train="):
        old = GradientFlow(ntk_train_train=K, y_train=y)
    np.testing.assert_array_equal(old.predict(KzX, 1.0).test,
                                  GradientFlow(K, y).predict(KzX, 1.0).test)
    with pytest.raises(TypeError, match="both"):
        GradientFlow(ntk_train_train=K, k_train_train=K, y_train=y)
    yv = y[:7]
    ts = [0.1, 1.0]
    new = old.early_stopping(KzX, yv, ts)
    with pytest.warns(DeprecationWarning, match="renamed"):
        es = old.early_stopping(ntk_val_train=KzX, y_val=yv, ts=ts)
    np.testing.assert_array_equal(es.val_loss, new.val_loss)
    with pytest.warns(DeprecationWarning, match="renamed"):
        a = NystromRegression(NET, X=X, y=y, n_centers=20)
    np.testing.assert_array_equal(a.predict(Z), NystromRegression(NET, X, y, 20).predict(Z))
    with pytest.warns(DeprecationWarning, match="y= is renamed y_train="):
        NystromRegression(NET, n_centers=20).fit(X, y=y)
