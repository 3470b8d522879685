"""kernels_multi in the compiled engine: one tiled pass records every (depth, k) kernel.

Checked against separate single-kernel runs (MLP(depth).kernels, compiled), the NumPy
pass of ntkfast.multidepth (independent code, float64) and a plain dense frozen-layer
recursion, on inputs with duplicates and near-parallel rows."""

import numpy as np
import pytest

import ntkfast as nk
from conftest import requires_compiled
from ntkfast.multidepth import kernels_multi
from test_multidepth import NETS, direct_frozen, normwise

pytestmark = requires_compiled


def _inputs(rng, n=41, d=6):
    X = rng.normal(size=(n, d))
    X[5] = X[2]                       # duplicate
    X[6] = 3.0 * X[2]                 # scaled copy
    X[7] = X[3] + 1e-7 * rng.normal(size=d)   # near-parallel
    X[8] = -X[4]                      # antiparallel
    return X


@pytest.mark.parametrize("net_kw", NETS, ids=lambda kw: f"{kw['activation']}")
@pytest.mark.parametrize("symmetric", [True, False])
def test_every_depth_and_k_equals_separate_runs(net_kw, symmetric, rng):
    X = _inputs(rng)
    Z = None if symmetric else np.vstack([rng.normal(size=(20, 6)), X[:6]])
    net = nk.MLP(depth=4, **net_kw)
    mk = kernels_multi(net, X, Z, depths=range(5), frozen_layers=[0, 1, 2], tile=8,
                       backend="compiled")
    ref = kernels_multi(net, X, Z, depths=range(5), frozen_layers=[0, 1, 2], tile=8,
                        backend="numpy")
    assert sorted(mk) == sorted(ref)
    for (d, k), kern in mk.items():
        assert kern.nngp is mk.nngp(d)
        assert normwise(kern.nngp, ref[(d, k)].nngp) <= 1e-12, (d, k)
        assert normwise(kern.ntk, ref[(d, k)].ntk) <= 1e-12, (d, k)
        if k == 0:
            single = nk.MLP(depth=d, **net_kw).kernels(X, Z, backend="compiled")
            assert normwise(kern.nngp, single.nngp) <= 1e-12, d
            assert normwise(kern.ntk, single.ntk) <= 1e-12, d
        if symmetric:
            assert np.array_equal(kern.ntk, kern.ntk.T)
            assert np.array_equal(kern.nngp, kern.nngp.T)
    if symmetric:
        for d in range(5):
            np.testing.assert_array_equal(np.diagonal(mk[(d, 0)].ntk),
                                          nk.MLP(depth=d, **net_kw).ntk_diag(X))


@pytest.mark.parametrize("net_kw", NETS[:3] + NETS[4:5], ids=lambda kw: f"{kw['activation']}")
def test_frozen_chains_against_dense_recursion(net_kw, rng):
    """Frozen counts that start above layer 0 only (the engine's chain 0 then starts
    from zero), a subset of depths, against the textbook dense loop."""
    X, Z = rng.normal(size=(19, 4)), rng.normal(size=(300, 4))
    net = nk.MLP(depth=3, **net_kw)
    mk = kernels_multi(net, X, Z, depths=[2, 3, 5], frozen_layers=[1, 3], tile=7,
                       backend="compiled")
    assert sorted(mk) == [(2, 1), (3, 1), (3, 3), (5, 1), (5, 3)]
    for (d, k), kern in mk.items():
        sigma, theta = direct_frozen(net_kw, d, k, X, Z)
        assert normwise(kern.nngp, sigma) <= 1e-12, (d, k)
        assert normwise(kern.ntk, theta) <= 1e-12, (d, k)


@pytest.mark.parametrize("get", ["ntk", "nngp"])
def test_get_one_kind(get, rng):
    X = _inputs(rng)
    net = nk.MLP(depth=3, activation="relu", b_std=0.1)
    mk = kernels_multi(net, X, depths=[1, 3], frozen_layers=[0, 2], get=get,
                       backend="compiled")
    full = kernels_multi(net, X, depths=[1, 3], frozen_layers=[0, 2], backend="compiled")
    for key, kern in mk.items():
        other = "nngp" if get == "ntk" else "ntk"
        assert getattr(kern, other) is None
        assert np.array_equal(getattr(kern, get), getattr(full[key], get))


def test_float32_and_threads(rng):
    X = _inputs(rng, n=300, d=9)
    net = nk.MLP(depth=3, activation="relu", b_std=0.2)
    mk = kernels_multi(net, X, depths=[1, 2, 3], frozen_layers=[0, 1], dtype=np.float32,
                       tile=32, n_jobs=2, backend="compiled")
    ref = kernels_multi(net, X, depths=[1, 2, 3], frozen_layers=[0, 1], backend="numpy")
    for key, kern in mk.items():
        assert kern.ntk.dtype == np.float32 and kern.nngp.dtype == np.float32
        assert normwise(kern.ntk, ref[key].ntk) <= 2e-6, key
        assert normwise(kern.nngp, ref[key].nngp) <= 2e-6, key
    single = nk.MLP(depth=3, activation="relu", b_std=0.2).kernels(X, dtype=np.float32)
    assert normwise(mk[(3, 0)].ntk, single.ntk.astype(np.float64)) <= 1e-6


def test_tiny_rows_rescaled(rng):
    """Homogeneous net (ReLU, no bias): tiny rows rescaled and scaled back, as MLP."""
    X = rng.normal(size=(30, 5))
    X[3] *= 1e-160
    X[4] *= 1e-300
    net = nk.MLP(depth=3, activation="relu", b_std=None)
    mk = kernels_multi(net, X, depths=[1, 3], frozen_layers=[0, 1], backend="compiled")
    for d in (1, 3):
        single = nk.MLP(depth=d, activation="relu", b_std=None).kernels(X)
        np.testing.assert_allclose(mk[(d, 0)].ntk, single.ntk, rtol=1e-12, atol=0)
        np.testing.assert_allclose(mk[(d, 0)].nngp, single.nngp, rtol=1e-12, atol=0)


def test_auto_uses_the_engine_and_falls_back(rng, monkeypatch):
    import ntkfast.multidepth as M
    X = rng.normal(size=(12, 3))
    calls = []
    real = M._numpy_pass
    monkeypatch.setattr(M, "_numpy_pass", lambda *a, **k: calls.append(1) or real(*a, **k))
    nk.MLP(depth=2).kernels(X, depths=[1, 2], frozen_layers=[0, 1])
    assert calls == []                      # closed form: the compiled pass
    kernels_multi(nk.MLP(depth=2), X, depths=[1, 2], exact_angles=False)
    assert calls == [1]                     # textbook angles: NumPy


def test_bad_backend_arguments(rng):
    X = rng.normal(size=(5, 3))
    net = nk.MLP(depth=2)
    with pytest.raises(ValueError, match="backend"):
        kernels_multi(net, X, backend="cuda")
    with pytest.raises(ValueError, match="exact_angles"):
        kernels_multi(net, X, backend="compiled", exact_angles=False)


def test_engine_record_validation():
    from ntkfast import _engine
    from ntkfast.backends.compiled import _roots, engine_params
    from ntkfast.backends.reference import layer_variances
    from ntkfast._spec import RecursionSpec
    net = nk.MLP(depth=2)
    X = np.random.default_rng(0).normal(size=(6, 3))
    spec = RecursionSpec.build(net.activation, 2, net.w_std, net.b_std, "ntk", None, 3)
    q = layer_variances(spec, X)
    args = (engine_params(spec, 3, np.float64), X, X, q, _roots(q, np.float64), q,
            _roots(q, np.float64))
    out = np.empty((6, 6))
    with pytest.raises(ValueError, match="slot"):
        _engine.fill_tiles_multi(*args, [out], [0, -1, 0], [-1, -1, -1], [0], True, 4, 1)
    with pytest.raises(ValueError, match="ks"):
        _engine.fill_tiles_multi(*args, [out], [-1, -1, 0], [-1] * 6, [1, 1], True, 4, 1)
    with pytest.raises(ValueError, match="t_slot"):
        _engine.fill_tiles_multi(*args, [out], [-1, -1, -1], [-1, 0, -1, -1, -1, -1],
                                 [0, 2], True, 4, 1)
