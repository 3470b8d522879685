"""The engine against a 40-digit mpmath evaluation of the recursion.

The mpmath recursion below is written independently from DESIGN.md §1 (textbook
formulas, high precision absorbs the cancellation in q q' − Σ²).  Inputs are the
exact binary values of the float arrays, so the reference is the exact kernel
of the given inputs.
"""

import numpy as np
import pytest

mpmath = pytest.importorskip("mpmath")
from mpmath import mp, mpf  # noqa: E402

import ntkfast as nk  # noqa: E402
from conftest import ALL_ACTIVATIONS, requires_compiled  # noqa: E402

pytestmark = requires_compiled
mp.dps = 40


def mp_rule(act, s, qx, qz):
    """(E[φφ], E[φ'φ']) at 40 digits."""
    if isinstance(act, nk.ABReLU):
        a, b = mpf(act.a), mpf(act.b)
        sin_part = mp.sqrt(max(qx * qz - s * s, mpf(0)))
        theta = mp.pi / 2 if (sin_part == 0 and s == 0) else mp.atan2(sin_part, s)
        edot = (a * a + b * b) / 2 - (a - b) ** 2 * theta / (2 * mp.pi)
        return (a - b) ** 2 / (2 * mp.pi) * sin_part + edot * s, edot
    if isinstance(act, nk.Erf):
        a, b, c = mpf(act.a), mpf(act.b), mpf(act.c)
        s, qx, qz = b * b * s, b * b * qx, b * b * qz
        p = (1 + 2 * qx) * (1 + 2 * qz)
        e = a * a * 2 / mp.pi * mp.asin(2 * s / mp.sqrt(p)) + c * c
        return e, a * a * b * b * 4 / mp.pi / mp.sqrt(p - 4 * s * s)
    if isinstance(act, nk.GELU):
        pp1, prod = (qx + 1) * (qz + 1), qx * qz
        d2 = pp1 - s * s
        dl = mp.sqrt(d2)
        ang = mp.atan2(s, dl)
        e = ((s * s + prod * d2) / (pp1 * dl) + s * ang) / (2 * mp.pi) + s / 4
        edot = (1 / d2 + (1 - prod) / pp1 + 1) * s / dl / (2 * mp.pi) + mpf(1) / 4 \
            + ang / (2 * mp.pi)
        return e, edot
    assert isinstance(act, nk.Identity)
    return s, mpf(1)


def mp_kernels(net, x, z):
    """(Σ, Θ) of one pair at 40 digits, straight from the recursion."""
    d = len(x)
    x = [mpf(float(v)) for v in x]
    z = [mpf(float(v)) for v in z]
    w2 = mpf(net.w_std) ** 2
    b2 = mpf(0) if net.b_std is None else mpf(net.b_std) ** 2
    if net.parameterization == "ntk":
        lam0, lam, mu = w2, w2, b2
    else:
        lam0, lam, mu = mpf(d), mpf(net.width), mpf(0 if net.b_std is None else 1)
    g = mp.fsum(a * b for a, b in zip(x, z)) / d
    gx = mp.fsum(a * a for a in x) / d
    gz = mp.fsum(b * b for b in z) / d
    s, qx, qz = w2 * g + b2, w2 * gx + b2, w2 * gz + b2
    t = lam0 * g + mu
    for _ in range(net.depth):
        e, edot = mp_rule(net.activation, s, qx, qz)
        ex, _ = mp_rule(net.activation, qx, qx, qx)
        ez, _ = mp_rule(net.activation, qz, qz, qz)
        t = w2 * edot * t + lam * e + mu
        s, qx, qz = w2 * e + b2, w2 * ex + b2, w2 * ez + b2
    return s, t


def rotate(x, angle, rng):
    """A vector at `angle` from x (same norm), computed without losing the angle."""
    u = rng.standard_normal(x.shape)
    u -= (u @ x) / (x @ x) * x
    u *= np.linalg.norm(x) / np.linalg.norm(u)
    return np.cos(angle) * x + np.sin(angle) * u


def build_pairs(rng, d=12):
    """(x, z, kind) pairs: well separated, near-parallel (1e-4, 1e-6), duplicates,
    scaled copies, antiparallel and near-antiparallel, zero rows."""
    pairs = []
    for _ in range(4):
        pairs.append((rng.standard_normal(d), rng.standard_normal(d), "separated"))
    for angle in (1e-4, 1e-6):
        for _ in range(3):
            x = rng.standard_normal(d)
            pairs.append((x, rotate(x, angle, rng), "near"))
            pairs.append((x, rotate(x, np.pi - angle, rng), "near"))
    x = rng.standard_normal(d)
    pairs += [(x, x.copy(), "near"), (x, 3.0 * x, "near"), (x, 0.37 * x, "near"),
              (x, -x, "near"), (x, -2.5 * x, "near")]
    pairs.append((x, np.zeros(d), "separated"))
    return pairs


NETS = [
    dict(depth=1, w_std=1.0, b_std=None),
    dict(depth=3, w_std=1.4, b_std=0.1),
    dict(depth=10, w_std=1.0, b_std=0.5),
    dict(depth=3, w_std=1.2, b_std=0.0, parameterization="standard", width=128),
]


def _check(net, pairs, dtype, tol_sep, tol_near):
    """Relative error ≤ tol, except that an absolute error of a few ulps of the
    pair's natural scale √(K(x,x) K(z,z)) (Cauchy–Schwarz) is always accepted:
    below that, the input rounding itself decides the value (e.g. ReLU Θ of
    z = −2.5·x, whose true value is ~1e-17 of the scale)."""
    X = np.array([p[0] for p in pairs], dtype=dtype)
    Z = np.array([p[1] for p in pairs], dtype=dtype)
    k = net.kernels(X, Z, dtype=dtype)
    floor = 4 * np.finfo(dtype).eps
    worst = {"separated": 0.0, "near": 0.0}
    for i, (_, _, kind) in enumerate(pairs):
        s_ref, t_ref = mp_kernels(net, X[i], Z[i])
        s_x, t_x = mp_kernels(net, X[i], X[i])
        s_z, t_z = mp_kernels(net, Z[i], Z[i])
        tol = tol_sep if kind == "separated" else tol_near
        for got, ref, scale in ((k.nngp[i, i], s_ref, mp.sqrt(s_x * s_z)),
                                (k.ntk[i, i], t_ref, mp.sqrt(t_x * t_z))):
            err = abs(mpf(float(got)) - ref)
            assert err <= max(tol * abs(ref), floor * scale), (i, kind, float(got), ref)
            if abs(ref) > 1e-6 * scale:
                worst[kind] = max(worst[kind], float(err / abs(ref)))
    return worst


@pytest.mark.parametrize("act", ALL_ACTIVATIONS, ids=repr)
@pytest.mark.parametrize("net_kw", NETS, ids=lambda kw: f"depth{kw['depth']}-{kw['b_std']}")
def test_float64_against_mpmath(act, net_kw, rng):
    net = nk.MLP(activation=act, **net_kw)
    _check(net, build_pairs(rng), np.float64, 1e-12, 1e-10)


@pytest.mark.parametrize("act", ALL_ACTIVATIONS, ids=repr)
def test_float32_against_mpmath(act, rng):
    for net_kw in NETS[:3]:
        net = nk.MLP(activation=act, **net_kw)
        _check(net, build_pairs(rng), np.float32, 1e-5, 1e-5)


@pytest.mark.parametrize("act", ALL_ACTIVATIONS, ids=repr)
def test_diagonal_against_mpmath(act, rng):
    X = rng.standard_normal((6, 10)) * np.array([0.1, 0.5, 1, 2, 4, 8])[:, None]
    net = nk.MLP(depth=5, activation=act, w_std=1.3, b_std=0.2)
    k = net.kernels(X)
    for i in range(len(X)):
        s_ref, t_ref = mp_kernels(net, X[i], X[i])
        assert float(abs(mpf(float(k.nngp[i, i])) / s_ref - 1)) <= 1e-12
        assert float(abs(mpf(float(k.ntk[i, i])) / t_ref - 1)) <= 1e-12


def test_near_parallel_beats_textbook_formula(rng):
    """The reference (textbook angle) loses digits at 1e-6; the engine must not."""
    net = nk.MLP(depth=10, activation="relu", b_std=0.5)
    x = rng.standard_normal(12)
    X, Z = x[None, :], rotate(x, 1e-6, rng)[None, :]
    s_ref, t_ref = mp_kernels(net, X[0], Z[0])
    fast = net.ntk(X, Z, backend="compiled")[0, 0]
    assert float(abs(mpf(float(fast)) / t_ref - 1)) < 1e-12


@pytest.mark.parametrize("act", [a for a in ALL_ACTIVATIONS if "ReLU" in repr(a) or "Abs" in repr(a)],
                         ids=repr)
def test_pairs_that_become_near_parallel_deep_in_the_net(act, rng):
    """Separated inputs whose layer kernels approach θ = 0 with depth (large σ_b):
    full accuracy at every depth, in the layers where the pairs have become
    near-parallel too (there the engine redoes the step with the exact update)."""
    d = 12
    x = rng.standard_normal(d)
    pairs = [(x, rotate(x, angle, rng), "separated") for angle in (0.05, 0.3, 1.0, 2.0, 3.0)]
    for depth, b_std in ((6, 2.0), (12, 4.0)):
        net = nk.MLP(depth=depth, activation=act, w_std=1.0, b_std=b_std)
        _check(net, pairs, np.float64, 1e-12, 1e-12)
        _check(net, pairs, np.float32, 1e-5, 1e-5)
