"""Bad input gets a clear error naming the argument; odd-but-valid input works."""

import numpy as np
import pytest

import ntkfast as nk


@pytest.fixture
def net():
    return nk.MLP(depth=2, b_std=0.1)


def test_nan_and_inf_name_the_row(net):
    X = np.ones((5, 3))
    X[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"X: row 3 .*NaN or inf"):
        net.ntk(X)
    Z = np.ones((4, 3))
    Z[0, 0] = np.inf
    Z[2, 0] = -np.inf
    with pytest.raises(ValueError, match=r"Z: row 0 \(and 1 more\)"):
        net.ntk(np.ones((2, 3)), Z)
    with pytest.raises(ValueError, match="X: row 3"):
        net.ntk_diag(X)


@pytest.mark.parametrize("bad, err, msg", [
    (np.ones(5), ValueError, "2-D"),
    (np.ones((2, 3, 4)), ValueError, "2-D"),
    (np.ones((0, 3)), ValueError, "empty"),
    (np.ones((3, 0)), ValueError, "empty"),
    (np.array([["a", "b"]]), TypeError, "numeric"),
    (np.ones((2, 2), dtype=complex), TypeError, "complex"),
])
def test_bad_arrays(net, bad, err, msg):
    with pytest.raises(err, match=msg):
        net.nngp(bad)


def test_feature_mismatch(net):
    with pytest.raises(ValueError, match="Z: has 4 features but X has 3"):
        net.ntk(np.ones((2, 3)), np.ones((2, 4)))


def test_bad_hyperparameters():
    with pytest.raises(ValueError, match="activation: unknown activation 'tanhh'.*'relu'"):
        nk.MLP(activation="tanhh")
    with pytest.raises(ValueError, match="w_std"):
        nk.MLP(w_std=-1.0)
    with pytest.raises(ValueError, match="w_std"):
        nk.MLP(w_std=float("nan"))
    with pytest.raises(ValueError, match="b_std"):
        nk.MLP(b_std=float("inf"))
    with pytest.raises(ValueError, match="depth"):
        nk.MLP(depth=-1)
    with pytest.raises(TypeError, match="depth"):
        nk.MLP(depth=2.5)
    with pytest.raises(ValueError, match="width: the 'standard' parameterization needs"):
        nk.MLP(parameterization="standard")
    with pytest.raises(ValueError, match="parameterization"):
        nk.MLP(parameterization="mup")
    with pytest.raises(ValueError, match="Erf: a must be finite"):
        nk.Erf(a=float("nan"))


def test_bad_options(net):
    X = np.ones((3, 2))
    with pytest.raises(TypeError, match="dtype"):
        net.ntk(X, dtype=np.int32)
    with pytest.raises(ValueError, match="backend: unknown backend 'gpu'"):
        net.ntk(X, backend="gpu")
    with pytest.raises(ValueError, match="n_jobs"):
        net.ntk(X, n_jobs=0)
    with pytest.raises(ValueError, match="tile"):
        net.ntk(X, tile=0)
    with pytest.raises(ValueError, match="out: .* shape"):
        net.ntk(X, out=np.empty((2, 2)))


def test_integer_fortran_and_strided_input(net, rng):
    Xi = rng.integers(-3, 4, size=(20, 5))
    ref = net.ntk(Xi.astype(np.float64))
    out = net.ntk(Xi)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, ref)
    Xf = np.asfortranarray(Xi.astype(np.float64))
    np.testing.assert_array_equal(net.ntk(Xf), ref)
    big = np.zeros((40, 10))
    big[::2, ::2] = Xi
    np.testing.assert_array_equal(net.ntk(big[::2, ::2]), ref)
    np.testing.assert_array_equal(net.ntk(Xi.tolist()), ref)


def test_dtype_follows_input_and_can_be_forced(net, rng):
    X = rng.standard_normal((10, 3))
    assert net.ntk(X.astype(np.float32)).dtype == np.float32
    assert net.ntk(X).dtype == np.float64
    assert net.ntk(X, dtype="float32").dtype == np.float32
    assert net.ntk(X.astype(np.float32), dtype=np.float64).dtype == np.float64


def test_inputs_too_large_for_the_dtype_are_rejected(net, rng):
    X = rng.standard_normal((5, 3))
    with pytest.raises(ValueError, match="X: row 0 is too large for float64"):
        net.ntk(X * 1e200)
    with pytest.raises(ValueError, match="too large for float32 .*dtype='float64'"):
        net.ntk(X.astype(np.float32) * 1e25)
    with pytest.raises(ValueError, match="Z: row"):
        net.ntk(X, X * 1e200)
    with pytest.raises(ValueError, match="too large"):
        net.ntk_diag(X * 1e200)
    assert np.all(np.isfinite(net.ntk(X * 1e60)))           # large but representable
    assert np.all(np.isfinite(net.ntk(X * 1e-200)))         # tiny inputs are fine


def test_diag_methods_take_the_kernel_keywords(net, rng):
    X = rng.standard_normal((7, 3))
    out = np.empty(7)
    assert net.ntk_diag(X, out=out, n_jobs=1, tile=4, progress=False) is out
    np.testing.assert_array_equal(out, np.diag(net.ntk(X)))
    with pytest.raises(ValueError, match="out: the diagonal needs an array of shape"):
        net.nngp_diag(X, out=np.empty(6))
    with pytest.raises(ValueError, match="backend"):
        net.ntk_diag(X, backend="gpu")
