"""ntkfast.sklearn with any architecture: ``network=`` and ``input_shape=``."""

import numpy as np
import pytest

import ntkfast as nk

pytest.importorskip("sklearn")
from ntkfast.sklearn import NTKClassifier, NTKKernel, NTKRegressor  # noqa: E402
from ntkfast.solve import KernelRegression  # noqa: E402


@pytest.fixture
def data():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((40, 16))
    y = np.sin(X[:, 0]) + 0.1 * X[:, 1]
    return X, y, rng.standard_normal((7, 16))


def test_mlp_network_equals_hyperparameters(data):
    X, y, T = data
    a = NTKRegressor(network=nk.MLP(depth=2, b_std=0.1), ridge=1e-3).fit(X, y).predict(T)
    b = NTKRegressor(depth=2, b_std=0.1, ridge=1e-3).fit(X, y).predict(T)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_conv_network_on_rows_viewed_as_images(data):
    X, y, T = data
    net = nk.serial(nk.Conv((3, 3), w_std=1.4), nk.ReLU(), nk.GlobalAvgPool(), nk.Dense())
    model = NTKRegressor(network=net, input_shape=(4, 4, 1), ridge=1e-3).fit(X, y)
    images, test = X.reshape(-1, 4, 4, 1), T.reshape(-1, 4, 4, 1)
    expected = KernelRegression(net.ntk(images), y, ridge=1e-3).predict(net.ntk(test, images))
    np.testing.assert_allclose(model.predict(T), expected, rtol=1e-10, atol=1e-12)
    labels = (y > 0).astype(int)
    clf = NTKClassifier(network=net, input_shape=(4, 4, 1)).fit(X, labels)
    assert clf.predict(T).shape == (7,)
    K = NTKKernel(network=net, input_shape=(4, 4, 1))
    np.testing.assert_allclose(K(X, T), net.ntk(images, test), rtol=1e-13)
    np.testing.assert_allclose(K.diag(X), net.ntk_diag(images), rtol=1e-13)


def test_network_errors(data):
    X, y, _ = data
    with pytest.raises(ValueError, match="network: give either"):
        NTKRegressor(network=nk.MLP(depth=2), depth=3).fit(X, y)
    with pytest.raises(TypeError, match="network: expected an ntkfast network"):
        NTKRegressor(network="cnn").fit(X, y)
    with pytest.raises(ValueError, match="input_shape"):
        NTKRegressor(network=nk.MLP(), input_shape=(5, 5, 1)).fit(X, y)
