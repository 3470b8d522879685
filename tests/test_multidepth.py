"""ntkfast.multidepth: every depth and frozen-layer count from one pass."""

import math

import numpy as np
import pytest

import ntkfast as nk
from ntkfast.backends.reference import layer_variances
from ntkfast._spec import RecursionSpec
from ntkfast.multidepth import MultiKernels, kernels_multi

NETS = [
    dict(activation="relu", b_std=0.2, w_std=1.3),
    dict(activation="relu", b_std=None, w_std=1.0, parameterization="standard", width=64),
    dict(activation=nk.LeakyReLU(0.1), b_std=0.3),
    dict(activation="abs", b_std=None),
    dict(activation=nk.Erf(2.0, 0.5, 0.3), b_std=0.1, w_std=0.9),
    dict(activation="gelu", b_std=0.1, parameterization="standard", width=32),
    dict(activation="identity", b_std=0.5),
]


def normwise(a, b):
    return float(np.max(np.abs(np.asarray(a, float) - b)) / np.max(np.abs(b)))


def direct_frozen(net_kw, depth, k, X, Z):
    """Σ and frozen-k Θ by a plain dense loop (textbook angles, no tiling)."""
    net = nk.MLP(depth=depth, **net_kw)
    spec = RecursionSpec.build(net.activation, depth, net.w_std, net.b_std,
                               net.parameterization, net.width, X.shape[1])
    qx, qz = layer_variances(spec, X), layer_variances(spec, Z)
    g = X @ Z.T / X.shape[1]
    sigma = spec.w2 * g + spec.b2
    theta = spec.lam0 * g + spec.mu if k == 0 else np.zeros_like(g)
    for layer in range(1, depth + 1):
        e, edot = spec.activation.kernel_rule(sigma, qx[layer - 1][:, None],
                                              qz[layer - 1][None, :])
        theta = spec.w2 * edot * theta + (spec.lam * e + spec.mu if layer >= k else 0.0)
        sigma = spec.w2 * e + spec.b2
    return sigma, theta


@pytest.mark.parametrize("net_kw", NETS, ids=lambda kw: f"{kw['activation']}")
@pytest.mark.parametrize("symmetric", [True, False])
def test_every_depth_equals_single_runs(net_kw, symmetric, rng):
    X = rng.normal(size=(23, 5))
    Z = None if symmetric else rng.normal(size=(17, 5))
    mk = kernels_multi(nk.MLP(depth=4, **net_kw), X, Z, depths=range(5), tile=6)
    assert isinstance(mk, MultiKernels) and sorted(mk) == [(d, 0) for d in range(5)]
    for d in range(5):
        single = nk.MLP(depth=d, **net_kw).kernels(X, Z)
        for got, ref in zip(mk[(d, 0)], single):
            assert got.shape == ref.shape and got.dtype == ref.dtype
            assert normwise(got, ref) <= 1e-12
        if symmetric:
            assert np.array_equal(mk[(d, 0)].ntk, mk[(d, 0)].ntk.T)
            np.testing.assert_array_equal(np.diagonal(mk[(d, 0)].ntk),
                                          nk.MLP(depth=d, **net_kw).ntk_diag(X))


@pytest.mark.parametrize("net_kw", NETS[:3] + NETS[4:5], ids=lambda kw: f"{kw['activation']}")
def test_frozen_layers_against_direct_recursion(net_kw, rng):
    X, Z = rng.normal(size=(19, 4)), rng.normal(size=(11, 4))
    mk = kernels_multi(nk.MLP(depth=3, **net_kw), X, Z, depths=[1, 2, 3],
                       frozen_layers=[0, 1, 2, 3], tile=5, exact_angles=False)
    assert sorted(mk) == [(1, 0), (1, 1), (2, 0), (2, 1), (2, 2),
                          (3, 0), (3, 1), (3, 2), (3, 3)]
    for (d, k), kern in mk.items():
        sigma, theta = direct_frozen(net_kw, d, k, X, Z)
        assert normwise(kern.nngp, sigma) <= 1e-12
        assert normwise(kern.ntk, theta) <= 1e-12, (d, k)
        assert kern.nngp is mk.nngp(d)  # shared across k


def test_frozen_matches_arora_fix_dep(rng):
    """Arora et al.'s NTK.py kernel_value_batch (ReLU, σ_w = 1, no bias) on X/√d."""
    X = rng.normal(size=(15, 6))
    d_max = 4
    Xs = X / math.sqrt(X.shape[1])
    arora = np.zeros((d_max, d_max, 15, 15))
    for fix_dep in range(d_max):
        S = Xs @ Xs.T
        H = np.zeros_like(S)
        for dep in range(d_max):
            if fix_dep <= dep:
                H += S
            arora[dep][fix_dep] = H
            L = np.diag(S)
            P = np.clip(np.sqrt(np.outer(L, L)), 1e-9, None)
            Sn = np.clip(S / P, -1, 1)
            S = (Sn * (math.pi - np.arccos(Sn)) + np.sqrt(1.0 - Sn * Sn)) * P / 2.0 / math.pi
            H = H * (math.pi - np.arccos(Sn)) / 2.0 / math.pi
    mk = kernels_multi(nk.MLP(depth=3), X, depths=range(d_max),
                       frozen_layers=range(d_max), get="ntk")
    for (dep, k), kern in mk.items():
        assert kern.nngp is None
        assert normwise(kern.ntk, arora[dep][k]) < 1e-7  # arccos near θ = 0 limits Arora's
    # k = depth trains only the readout: Θ = Σ in the 'ntk' parameterization.
    both = kernels_multi(nk.MLP(depth=3, b_std=0.4), X, depths=[2, 3], frozen_layers=[2, 3])
    for d in (2, 3):
        assert normwise(both.ntk(d, d), both.nngp(d)) <= 1e-15


def test_near_duplicates_keep_full_accuracy(rng):
    X = rng.normal(size=(20, 6))
    X = np.vstack([X, X[:6] * (1 + 1e-9), 3 * X[:4], X[:3]])
    mk = kernels_multi(nk.MLP(depth=4, b_std=0.2), X, depths=[1, 2, 4], tile=9)
    for d in (1, 2, 4):
        ref = nk.MLP(depth=d, b_std=0.2).kernels(X)
        for got, r in zip(mk[(d, 0)], ref):
            assert np.max(np.abs(got - r) / np.abs(r)) <= 1e-12
    # The textbook rule (exact_angles=False) loses about half the digits there.
    mk2 = kernels_multi(nk.MLP(depth=4, b_std=0.2), X, depths=[4], exact_angles=False)
    ref = nk.MLP(depth=4, b_std=0.2).kernels(X)
    assert 1e-13 < normwise(mk2[(4, 0)].ntk, ref.ntk) < 1e-6


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-14), (np.float32, 1e-6)])
def test_tiles_threads_and_dtype_do_not_change_results(dtype, tol, rng):
    X = rng.normal(size=(31, 3)).astype(dtype)
    net = nk.MLP(depth=3, b_std=0.1)
    a = kernels_multi(net, X, depths=[1, 3], frozen_layers=[0, 1], tile=1, n_jobs=1)
    b = kernels_multi(net, X, depths=[1, 3], frozen_layers=[0, 1], tile=8, n_jobs=2)
    c = kernels_multi(net, X, depths=[1, 3], frozen_layers=[0, 1])
    for key in a:
        assert a[key].ntk.dtype == dtype
        for x, y, z in zip(a[key], b[key], c[key]):
            assert normwise(x, y) <= tol and normwise(x, z) <= tol
            assert np.array_equal(x, x.T)
    ref = nk.MLP(depth=3, b_std=0.1).ntk(X)
    assert normwise(a[(3, 0)].ntk, ref) < 10 * tol


def test_default_depths_and_get():
    X = np.eye(4) + 0.1
    mk = kernels_multi(nk.MLP(depth=3), X, get="nngp")
    assert sorted(mk) == [(1, 0), (2, 0), (3, 0)] and mk[(2, 0)].ntk is None
    assert sorted(kernels_multi(nk.MLP(depth=0), X)) == [(0, 0)]


@pytest.mark.parametrize("kwargs, match", [
    (dict(depths=[1, 2], frozen_layers=[3]), "frozen_layers"),
    (dict(depths=[-1]), "depths"),
    (dict(depths=[]), "depths"),
    (dict(frozen_layers=[0.5]), "frozen_layers"),
    (dict(get="all"), "get"),
    (dict(tile=0), "tile"),
    (dict(dtype="int32"), "dtype"),
])
def test_bad_arguments_name_themselves(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        kernels_multi(nk.MLP(depth=2), np.ones((3, 2)), **kwargs)


def test_bad_inputs():
    with pytest.raises(TypeError, match="net"):
        kernels_multi("relu", np.ones((3, 2)))
    with pytest.raises(ValueError, match="Z"):
        kernels_multi(nk.MLP(), np.ones((3, 2)), np.ones((3, 3)))
    with pytest.raises(ValueError, match="X"):
        kernels_multi(nk.MLP(), np.array([[1.0, np.nan]]))


# -- issue 17 on the multi-depth pass: tiny inputs ------------------------------------
@pytest.mark.parametrize("symmetric", [True, False])
def test_tiny_inputs_are_rescaled_exactly(symmetric):
    """kernels(X · 1e-90, depths=[1, 2, 3]) was NaN off the diagonal (q q' underflows);
    homogeneous networks (ReLU, no bias) now scale tiny rows by powers of two and every
    (depth, k) kernel back: the unit-scale kernels times the scales, to 1e-12."""
    rng = np.random.default_rng(11)
    X, Z = rng.standard_normal((7, 5)), rng.standard_normal((4, 5))
    sx = np.full(7, 1e-90)
    sx[2] = 1.0                                  # a normal row among tiny ones
    sz = np.full(4, 1e-80)
    Zin = None if symmetric else Z * sz[:, None]
    scale = np.outer(sx, sx if symmetric else sz)
    got = nk.MLP(3).kernels(X * sx[:, None], Zin, depths=[1, 2, 3], frozen_layers=[0, 1])
    ref = nk.MLP(3).kernels(X, None if symmetric else Z, depths=[1, 2, 3],
                            frozen_layers=[0, 1])
    assert set(got) == set(ref)
    for key in ref:
        for kind in ("nngp", "ntk"):
            a, b = getattr(got[key], kind), getattr(ref[key], kind) * scale
            assert np.all(np.isfinite(a)), (key, kind)
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=0, err_msg=f"{key} {kind}")
    if symmetric:
        assert np.array_equal(got[(3, 0)].ntk, got[(3, 0)].ntk.T)


def test_tiny_inputs_without_an_exact_identity_are_rejected():
    X = np.random.default_rng(2).standard_normal((3, 4)) * 1e-90
    with pytest.raises(ValueError, match="too small for an accurate"):
        nk.MLP(3, b_std=1e-100).kernels(X, depths=[1, 2])
