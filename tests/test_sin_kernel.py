"""The fused Numba kernel of Sin/Cos (numba_quad._fill_sin) against a 40-digit mpmath
evaluation of the closed form and against the NumPy rule (the reference backend)."""

import math

import numpy as np
import pytest

import ntkfast as nk
from ntkfast.activations import Cos, Sin

mpmath = pytest.importorskip("mpmath")
pytest.importorskip("numba")
from ntkfast.backends.numba_quad import NumbaQuadEngine, _fill_sin  # noqa: E402


def _mp_sin(a, b, c, s, qx, qz):
    """(E, Ė) at 40 digits from the textbook form a²/2 (e^{−b²(qx+qz−2Σ)/2} ∓
    e^{−b²(qx+qz+2Σ)/2} cos 2c) (not the kernels' cancellation-free rewrite)."""
    mp = mpmath.mp
    with mpmath.workdps(40):
        a, b, c, s, qx, qz = (mp.mpf(float(v)) for v in (a, b, c, s, qx, qz))
        p = mp.exp(-b * b * (qx + qz - 2 * s) / 2)
        m = mp.exp(-b * b * (qx + qz + 2 * s) / 2) * mp.cos(2 * c)
        return float(a * a / 2 * (p - m)), float(a * a * b * b / 2 * (p + m))


@pytest.mark.parametrize("a,b,c", [(1.0, 1.0, 0.0), (1.3, 0.7, 0.4), (0.5, 2.0, -1.0),
                                   (1.0, 1.0, math.pi / 2)])
def test_fused_sin_layer_matches_mpmath(a, b, c):
    """One layer of the kernel (w2 = 1, b2 = 0: S = E; λ0 = 1, λ = μ = 0: Θ = Ė Σ) at
    q from 1e-12 to 30 and ρ from −1 to 1 (incl. the tiny-input case where the plain
    difference of exponentials loses every digit): ≤ 1e-13 of √(E(qx) E(qz))."""
    rng = np.random.default_rng(7)
    q = np.array([1e-12, 1e-6, 0.01, 0.3, 1.0, 4.0, 30.0])
    qx = np.repeat(q, q.size)
    qz = np.tile(q, q.size)
    rho = rng.uniform(-1, 1, qx.size)
    rho[:5] = [-1.0, 1.0, 0.0, 1 - 1e-12, -0.5]
    rho[-1] = -1.0                 # q = 30, x = −30 b²: e^{−x} from 1 + expm1(x) would be lost
    rho[-2] = -0.9
    sig = rho * np.sqrt(qx * qz)
    sig[sig == 0] = 1e-300        # Θ = Ė Σ: keep Σ ≠ 0 to read Ė back
    bb = b * b
    G = sig[None, :].copy()
    oS, oT = np.empty_like(G), np.empty_like(G)
    fx = np.exp(-0.5 * bb * qx)[None, None, :]
    none = np.empty((0, 0))
    for i in range(qx.size):  # one row per element: fx of row i, fz of column i
        _fill_sin(G[:, i:i + 1], 1.0, False, 1, 1.0, 0.0, 1.0, 0.0, 0.0,
                  fx[0, :, i:i + 1].copy(), np.exp(-0.5 * bb * qz[i:i + 1])[None, :], 0, 0,
                  bb, a * a,
                  math.sin(c) ** 2, math.cos(c) ** 2, oS[:, i:i + 1], oT[:, i:i + 1],
                  none, none)
    for i in range(qx.size):
        e, ed = _mp_sin(a, b, c, sig[i], qx[i], qz[i])
        ex = _mp_sin(a, b, c, qx[i], qx[i], qx[i])
        ez = _mp_sin(a, b, c, qz[i], qz[i], qz[i])
        assert abs(oS[0, i] - e) <= 1e-13 * math.sqrt(ex[0] * ez[0]) + 1e-300, (i, oS[0, i], e)
        assert abs(oT[0, i] / sig[i] - ed) <= 1e-13 * math.sqrt(ex[1] * ez[1]), (i,)


def _unequal(rng, n, d=6):
    return rng.standard_normal((n, d)) * rng.uniform(0.2, 1.8, (n, 1))


@pytest.mark.parametrize("param", ["ntk", "standard"])
@pytest.mark.parametrize("act", [Sin(), Sin(1.3, 0.8, 0.2), Cos(0.5, 2.0, -1.0)], ids=repr)
def test_fused_sin_network_matches_reference(act, param, rng):
    """Depth 3, unequal norms, several panels (the in-kernel mirror), K(X, X) and
    K(X, Z), float64 ≤ 1e-13 and float32 ≤ 1e-5 of the matrix scale, NNGP and NTK."""
    X, Z = _unequal(rng, 70), _unequal(rng, 33)
    X[5] *= 1e-7                                   # tiny inputs: no cancellation
    kw = dict(depth=3, w_std=1.3, b_std=0.2, parameterization=param,
              width=None if param == "ntk" else 50)
    net = nk.MLP(activation=act, **kw)
    for Zi in (None, Z):
        eng = NumbaQuadEngine(panel=16)
        from ntkfast.outofcore.tiling import compute_gram
        spec = net._spec(X.shape[1])
        s, t = compute_gram(eng, spec, X, Zi, np.dtype(np.float64), True, True, n_jobs=2)
        assert eng.last_mode == "closed"
        r = net.kernels(X, Zi, backend="reference")
        for a, b in ((s, r.nngp), (t, r.ntk)):
            assert np.max(np.abs(a - b)) <= 1e-13 * np.max(np.abs(b))
            if Zi is None:
                assert np.array_equal(a, a.T)
        k32 = net.kernels(X, Zi, backend="numba", dtype=np.float32)
        for a, b in ((k32.nngp, r.nngp), (k32.ntk, r.ntk)):
            assert np.max(np.abs(a - b)) <= 1e-5 * np.max(np.abs(b))


def test_sin_ntk_only_output(rng):
    """Only Θ requested (Σ computed into a scratch panel): mirrored and exact."""
    X = _unequal(rng, 40)
    net = nk.MLP(depth=2, activation=Sin(1.1, 0.9, 0.3), b_std=0.1)
    a = net.ntk(X, backend="numba")
    b = net.ntk(X, backend="reference")
    assert np.max(np.abs(a - b)) <= 1e-13 * np.max(np.abs(b))
    assert np.array_equal(a, a.T)


def test_vector_exponential_within_two_ulp():
    """numba_quad._exp_sinh (the branch-free e^y, sinh y of the Sin kernel) against
    40-digit mpmath on [0, 709] incl. the switch of the sinh branch at y = 1."""
    import numba

    from ntkfast.backends.numba_quad import _exp_sinh

    @numba.njit
    def apply(y, e, s):
        for i in range(y.size):
            e[i], s[i] = _exp_sinh(y[i])

    y = np.concatenate([np.geomspace(1e-300, 1.0, 300), [1 - 1e-16, 1.0, 1 + 2e-16],
                        np.random.default_rng(2).uniform(0, 709, 400), [709.0]])
    e, s = np.empty_like(y), np.empty_like(y)
    apply(y, e, s)
    with mpmath.workdps(40):
        re_ = np.array([float(mpmath.exp(mpmath.mpf(v))) for v in y])
        rs = np.array([float(mpmath.sinh(mpmath.mpf(v))) for v in y])
    eps = np.finfo(float).eps
    assert np.all(np.abs(e - re_) <= 2 * eps * re_)
    assert np.all(np.abs(s - rs) <= 2 * eps * rs)
