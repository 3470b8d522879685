"""Kernel rules against Monte Carlo over the bivariate Gaussian, and closed-form identities."""

import numpy as np
import pytest

import ntkfast as nk
from conftest import ALL_ACTIVATIONS


@pytest.mark.parametrize("act", ALL_ACTIVATIONS, ids=repr)
def test_rules_match_monte_carlo(act):
    """E[φ(u)φ(v)] and E[φ'(u)φ'(v)] for (u, v) ~ N(0, [[qx, Σ], [Σ, qz]])."""
    rng = np.random.default_rng(7)
    n = 400_000
    for qx, qz, rho in [(1.0, 1.0, 0.3), (2.5, 0.4, -0.7), (0.3, 1.7, 0.95), (1.0, 2.0, 0.0)]:
        sigma = rho * np.sqrt(qx * qz)
        g1, g2 = rng.standard_normal(n), rng.standard_normal(n)
        u = np.sqrt(qx) * g1
        v = np.sqrt(qz) * (rho * g1 + np.sqrt(1 - rho * rho) * g2)
        for f, idx in ((act.fn, 0), (act.dfn, 1)):
            samples = f(u) * f(v)
            mc, se = samples.mean(), samples.std() / np.sqrt(n)
            exact = act.kernel_rule(np.float64(sigma), np.float64(qx), np.float64(qz))[idx]
            assert abs(mc - exact) < 5 * se + 1e-12, (act, qx, qz, rho, idx, mc, exact)


@pytest.mark.parametrize("act", ALL_ACTIVATIONS, ids=repr)
def test_diag_rule_is_rule_at_theta_zero(act):
    q = np.array([0.0, 1e-3, 0.5, 1.0, 7.0])
    e, edot = act.diag_rule(q)
    rng = np.random.default_rng(0)
    u = np.sqrt(q)[:, None] * rng.standard_normal((1, 200_000))
    mc = (act.fn(u) ** 2).mean(axis=1)
    se = (act.fn(u) ** 2).std(axis=1) / np.sqrt(u.shape[1])
    assert np.all(np.abs(mc - e) <= 5 * se + 1e-12)


def test_depth_zero_is_linear_kernel(rng):
    X, Z = rng.standard_normal((20, 6)), rng.standard_normal((15, 6))
    for b_std in (None, 0.4):
        net = nk.MLP(depth=0, w_std=1.7, b_std=b_std)
        expected = 1.7 ** 2 * X @ Z.T / 6 + (b_std or 0) ** 2
        k = net.kernels(X, Z)
        np.testing.assert_allclose(k.nngp, expected, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(k.ntk, expected, rtol=1e-13, atol=1e-15)
    net = nk.MLP(depth=0, w_std=1.7, b_std=0.4, parameterization="standard", width=10)
    np.testing.assert_allclose(net.ntk(X, Z), X @ Z.T + 1, rtol=1e-13)


def test_identity_activation_is_deep_linear(rng):
    X = rng.standard_normal((10, 4))
    w, b, depth = 1.1, 0.3, 3
    k = nk.MLP(depth=depth, activation="identity", w_std=w, b_std=b).kernels(X)
    s = w * w * X @ X.T / 4 + b * b
    t = s.copy()
    for _ in range(depth):
        t = w * w * t + w * w * s + b * b
        s = w * w * s + b * b
    np.testing.assert_allclose(k.nngp, s, rtol=1e-13)
    np.testing.assert_allclose(k.ntk, t, rtol=1e-13)


@pytest.mark.parametrize("act", ALL_ACTIVATIONS, ids=repr)
def test_ntk_dominates_nngp_on_diagonal(act, rng):
    """NTK parameterization: Θ = Σ + (non-negative terms), so Θ(x,x) ≥ Σ(x,x)."""
    X = rng.standard_normal((30, 5))
    for depth in (0, 1, 4):
        net = nk.MLP(depth=depth, activation=act, b_std=0.2)
        assert np.all(net.ntk_diag(X) >= net.nngp_diag(X) * (1 - 1e-14))


def test_kernels_are_psd(rng):
    X = rng.standard_normal((80, 7))
    for act in ALL_ACTIVATIONS:
        k = nk.MLP(depth=3, activation=act, b_std=0.1).kernels(X)
        for m in (k.nngp, k.ntk):
            assert np.linalg.eigvalsh(m).min() > -1e-10 * np.abs(m).max()


def test_relu_known_value():
    """One-layer ReLU NNGP of orthogonal unit inputs: σ_w² √(q q') (1/π)/2 with q = 1/d·σ_w²."""
    X = np.eye(2) * np.sqrt(2)  # q = ‖x‖²/d = 1
    k = nk.MLP(depth=1, activation="relu").kernels(X)
    assert abs(k.nngp[0, 1] - 1 / (2 * np.pi)) < 1e-15       # (sin θ + (π−θ) cos θ)/(2π) at θ=π/2
    assert abs(k.ntk[0, 1] - (0 * 0.25 + 1 / (2 * np.pi))) < 1e-15  # Θ¹ = 0 off-diagonal
    assert abs(k.ntk[0, 0] - 1.0) < 1e-15                    # 1·½ + ½


def test_zero_rows_follow_pi_over_2_convention():
    X = np.array([[0.0, 0.0], [1.0, 2.0]])
    for act in ALL_ACTIVATIONS:
        for par, width in (("ntk", None), ("standard", 8)):
            net = nk.MLP(depth=3, activation=act, b_std=0.0, parameterization=par, width=width)
            fast, ref = net.kernels(X), net.kernels(X, backend="reference")
            for a, b in zip(fast, ref):
                assert np.all(np.isfinite(a))
                np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)
    # Ė(0, ·) = (a+b)²/4 for ABReLU (θ = π/2): standard param. with b_std = 0 makes Θ see it.
    net = nk.MLP(depth=1, activation="relu", b_std=0.0, parameterization="standard", width=8)
    assert abs(net.ntk(X[:1], X[1:])[0, 0] - (0.25 + 1)) < 1e-15


@pytest.mark.parametrize("act, c", [(nk.Sin(), 0.0), (nk.Cos(), np.pi / 2),
                                    (nk.Sin(2.0, 0.7, 0.3), 0.3)], ids=repr)
def test_sin_cos_rules_keep_their_digits_at_small_inputs(act, c):
    """The closed form as a difference of exponentials lost every digit at norms ~1e-12
    (Σ came out 0); against a 40-digit evaluation of that same difference."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    a, b = act.a, act.b
    for scale in (1e-14, 1e-9, 1e-4, 1.0, 4.0):
        for sigma, qx, qz in ((0.7, 1.1, 0.9), (-0.5, 0.8, 1.3)):
            sigma, qx, qz = sigma * scale, qx * scale, qz * scale
            S, X, Z = (mpmath.mpf(v) for v in (sigma, qx, qz))
            s1 = mpmath.exp(b * b * (S - (X + Z) / 2))
            s2 = mpmath.exp(-b * b * (S + (X + Z) / 2)) * mpmath.cos(2 * mpmath.mpf(c))
            want = (a * a * (s1 - s2) / 2, a * a * b * b * (s1 + s2) / 2)
            got = act.kernel_rule(np.float64(sigma), np.float64(qx), np.float64(qz))
            for g, w in zip(got, want):
                assert abs(g - float(w)) <= 1e-14 * abs(float(w)), (scale, sigma, g, w)
