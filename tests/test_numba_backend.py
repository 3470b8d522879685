"""backend='numba': compiled quadrature kernels (per element and tabulated) and routing."""

import math

import numpy as np
import pytest

import ntkfast as nk
from ntkfast.activations import Sin, Tanh
from ntkfast.backends import get_backend

numba = pytest.importorskip("numba")
from ntkfast.activations import Custom  # noqa: E402
from ntkfast.backends.numba_quad import NumbaQuadEngine, build_table  # noqa: E402


def _relu(u):
    return max(u, 0.0)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((23, 6))
    Z = rng.standard_normal((9, 6))
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True) * math.sqrt(6)   # q constant
    Zn = Z / np.linalg.norm(Z, axis=1, keepdims=True) * 2.0
    return X, Z, Xn, Zn


def _rel(a, b):
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


def _run(net, X, Z, engine, dtype=np.float64):
    from ntkfast.outofcore.tiling import compute_gram
    spec = net._spec(X.shape[1])
    return compute_gram(engine, spec, X.astype(dtype), None if Z is None else Z.astype(dtype),
                        np.dtype(dtype), True, True, n_jobs=2)


def test_per_element_equals_reference(data):
    X, Z, _, _ = data
    act = Tanh(degree=21)  # small degree: same rule in both, so they agree to rounding
    for param in ("ntk", "standard"):
        net = nk.MLP(depth=3, activation=act, w_std=1.2, b_std=0.3, parameterization=param,
                     width=64)
        for ZZ in (None, Z):
            eng = NumbaQuadEngine()
            a = _run(net, X, ZZ, eng)
            assert eng.last_mode == "element"
            b = net.kernels(X, ZZ, backend="reference")
            assert _rel(a[0], b.nngp) < 1e-13 and _rel(a[1], b.ntk) < 1e-13
            if ZZ is None:
                assert np.array_equal(a[1], a[1].T)


def test_tabulated_equals_reference(data):
    _, _, Xn, Zn = data
    net = nk.MLP(depth=2, activation=Tanh(degree=41), w_std=1.2, b_std=0.3)
    for ZZ in (None, Zn):
        eng = NumbaQuadEngine()
        a = _run(net, Xn, ZZ, eng)
        assert eng.last_mode == "table"
        b = net.kernels(Xn, ZZ, backend="reference")
        assert _rel(a[0], b.nngp) < 1e-10 and _rel(a[1], b.ntk) < 1e-10
    # forcing the per-element path on the same data gives the same numbers
    a = _run(nk.MLP(depth=2, activation=Tanh(degree=21)), Xn, Zn, NumbaQuadEngine(tabulate=False))
    b = _run(nk.MLP(depth=2, activation=Tanh(degree=21)), Xn, Zn, NumbaQuadEngine())
    assert _rel(a[1], b[1]) < 1e-10


def test_table_interpolation_accuracy():
    """6-point Lagrange in θ on the default grid: ≤ 1e-10 relative to max|E|."""
    from ntkfast.backends.numba_quad import _fill_table
    for act in (Tanh(degree=41), nk.ReLU(), Sin(1.0, 1.5, 0.3)):
        for q in (0.5, 2.0):
            tabE, tabD = build_table(act, q, q)
            theta = np.random.default_rng(1).uniform(0, np.pi, 400)
            theta[:3] = [0.0, np.pi, 1e-7]
            sig = q * np.cos(theta)
            G = sig[None, :].copy()
            oS, oT = np.empty_like(G), np.empty_like(G)
            # depth 1, w2 = 1, b2 = 0, lam0 = 0, lam = 1, mu = 0: S = E, T = E
            _fill_table(G, 1.0, False, 1, 1.0, 0.0, 0.0, 1.0, 0.0, np.array([q * q]),
                        tabE[None], tabD[None], 2048 / np.pi, oS, oT)
            e, _ = act.kernel_rule(sig, q, q)
            assert np.max(np.abs(oS[0] - e)) <= 1e-10 * np.max(np.abs(e)), (act, q)


def test_custom_kink_matches_compiled_relu(data):
    X, Z, Xn, _ = data
    act = Custom(_relu, kink=True)
    for XX in (X[:8], Xn):
        net = nk.MLP(depth=2, activation=act, w_std=1.1, b_std=0.2)
        a = net.kernels(XX, Z, backend="numba")
        b = nk.MLP(depth=2, activation="relu", w_std=1.1, b_std=0.2).kernels(XX, Z,
                                                                            backend="reference")
        assert _rel(a.nngp, b.nngp) < 1e-8 and _rel(a.ntk, b.ntk) < 1e-8


def test_sin_and_float32(data):
    X, Z, Xn, _ = data
    net = nk.MLP(depth=2, activation=Sin(1.3, 0.8, 0.2), w_std=1.1, b_std=0.2)
    for XX in (X, Xn):
        a = net.kernels(XX, backend="numba")
        b = net.kernels(XX, backend="reference")
        assert _rel(a.ntk, b.ntk) < 1e-12
    a = net.kernels(Xn, Z, backend="numba", dtype=np.float32)
    b = net.kernels(Xn, Z, backend="reference")
    assert a.ntk.dtype == np.float32 and _rel(a.ntk, b.ntk) < 1e-5


def test_auto_routing_and_errors():
    assert get_backend("auto", Tanh()).name == "numba"
    assert get_backend("auto", Sin()).name == "numba"
    assert get_backend("auto", nk.ReLU()).name in ("compiled", "reference")
    for act in (Tanh(), nk.ReLU(), nk.Erf()):
        assert get_backend("auto", act).name != "cuda"
    with pytest.raises(ValueError, match="closed form"):
        nk.MLP(activation="relu").ntk(np.eye(3), backend="numba")
    with pytest.raises(ValueError, match="not constant"):
        eng = NumbaQuadEngine(tabulate=True)
        _run(nk.MLP(depth=1, activation=Tanh(degree=9)), np.diag([1.0, 2.0, 3.0]), None, eng)


def test_out_of_core_blocks_and_ntk_only(tmp_path, data):
    X, _, _, _ = data
    net = nk.MLP(depth=2, activation=Tanh(degree=21), b_std=0.1)
    full = net.ntk(X, backend="reference")
    part = net.ntk(X, backend="numba", out=str(tmp_path / "k.npy"))
    assert _rel(np.load(tmp_path / "k.npy"), full) < 1e-13
    assert _rel(np.asarray(part), full) < 1e-13
