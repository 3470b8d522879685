"""Gaussian quadrature of the kernel maps (ntkfast.quadrature) and the new activations."""

import math

import numpy as np
import pytest
from scipy import special

import ntkfast as nk
from ntkfast import quadrature as Q
from ntkfast.activations import (Cos, QuadratureActivation, SiLU, Sigmoid, Sin, Softplus,
                                 Tanh, get_activation)


class _QuadErf(QuadratureActivation):
    """erf through the quadrature path (no numba needed)."""

    def __init__(self, **kw):
        self._init_degree(None)

    def phi2(self, u):
        return special.erf(u), 2 / np.sqrt(np.pi) * np.exp(-u * u)


class _QuadABReLU(QuadratureActivation):
    kink = True

    def __init__(self, a, b):
        self._init_degree(None)
        self.a, self.b = a, b

    def phi2(self, u):
        return np.where(u > 0, self.b * u, self.a * u), np.where(u > 0, self.b, self.a) + 0 * u


class _QuadSin(QuadratureActivation):
    def __init__(self, a, b, c):
        self._init_degree(None)
        self.p = (a, b, c)

    def phi2(self, u):
        a, b, c = self.p
        return a * np.sin(b * u + c), a * b * np.cos(b * u + c)


def _points(rng, m=300, qmax=3.0):
    qx = rng.uniform(0.05, qmax, m)
    qz = rng.uniform(0.05, qmax, m)
    rho = rng.uniform(-1, 1, m)
    rho[:6] = [1.0, -1.0, 0.0, 1 - 1e-9, -1 + 1e-7, 0.5]
    qz[0] = qx[0]  # exactly parallel
    return rho * np.sqrt(qx * qz), qx, qz


def _rel(a, b):
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


def test_rules_integrate_gaussian_moments():
    for x, w in (Q.trapezoid_rule(97), Q.hermite_rule(64), Q.smooth_rule()):
        assert w.sum() == pytest.approx(1, abs=1e-15)
        assert w @ x ** 2 == pytest.approx(1, rel=1e-13)
        assert w @ x ** 4 == pytest.approx(3, rel=1e-13)
        assert abs(w @ x ** 3) < 1e-13
    r, w = Q.halfline_rule(32, 1)           # weight r e^{-r²/2}: E r = √(π/2), E r² = 2
    assert w @ r == pytest.approx(math.sqrt(math.pi / 2), rel=1e-13)
    assert w @ r ** 2 == pytest.approx(2, rel=1e-13)
    assert w @ r ** 10 == pytest.approx(2 ** 5 * math.factorial(5), rel=1e-12)
    r, w = Q.halfline_rule(64, 0)           # half-normal: E r² = 1, E r = √(2/π)
    assert w @ r ** 2 == pytest.approx(1, rel=1e-13)
    assert w @ r == pytest.approx(math.sqrt(2 / math.pi), rel=1e-13)
    with pytest.raises(ValueError, match="rule"):
        Q.smooth_rule(10, "simpson")


@pytest.mark.parametrize("a,b", [(0.0, 1.0), (-1.0, 1.0), (-0.3, 2.0)])
def test_kinked_quadrature_matches_abrelu_closed_form(rng, a, b):
    sigma, qx, qz = _points(rng)
    e0, d0 = nk.ABReLU(a, b).kernel_rule(sigma, qx, qz)
    e, d = _QuadABReLU(a, b).kernel_rule(sigma, qx, qz)
    assert _rel(e, e0) < 1e-8 and _rel(d, d0) < 1e-8
    assert np.max(np.abs(e - e0) / np.abs(e0).clip(1e-3)) < 1e-8
    e0, d0 = nk.ABReLU(a, b).diag_rule(qx)
    e, d = _QuadABReLU(a, b).diag_rule(qx)
    assert _rel(e, e0) < 1e-10 and _rel(d, d0) < 1e-12


def test_plain_rule_is_bad_across_a_kink(rng):
    """Why the polar rule exists: the tensor rule on ReLU stays far from 1e-8."""
    sigma, qx, qz = _points(rng, 50)
    act = _QuadABReLU(0.0, 1.0)
    act.kink = False
    _, d = act.kernel_rule(sigma, qx, qz)
    _, d0 = nk.ReLU().kernel_rule(sigma, qx, qz)
    assert _rel(d, d0) > 1e-6


def test_smooth_quadrature_matches_erf_closed_form(rng):
    sigma, qx, qz = _points(rng)
    for act in (nk.Erf(), ):
        e0, d0 = act.kernel_rule(sigma, qx, qz)
        e, d = _QuadErf().kernel_rule(sigma, qx, qz)
        assert _rel(e, e0) < 1e-8 and _rel(d, d0) < 1e-8
        e0, d0 = act.diag_rule(qx)
        e, d = _QuadErf().diag_rule(qx)
        assert _rel(e, e0) < 1e-12 and _rel(d, d0) < 1e-12


def test_gauss_hermite_option_converges(rng):
    sigma, qx, qz = _points(rng, 40, qmax=1.0)
    q = _QuadErf()
    q.rule, q.degree = "hermite", 96
    e0, _ = nk.Erf().kernel_rule(sigma, qx, qz)
    e, _ = q.kernel_rule(sigma, qx, qz)
    assert _rel(e, e0) < 1e-5


@pytest.mark.parametrize("act", [Sin(), Sin(1.3, 0.7, 0.4), Cos(), Cos(0.5, 2.0, -1.0)])
def test_sin_closed_form_vs_quadrature(rng, act):
    sigma, qx, qz = _points(rng, 100, qmax=2.0)
    e0, d0 = act.kernel_rule(sigma, qx, qz)
    e, d = _QuadSin(act.a, act.b, act.c).kernel_rule(sigma, qx, qz)
    assert _rel(e, e0) < 1e-10 and _rel(d, d0) < 1e-10
    u = np.linspace(-3, 3, 7)
    if isinstance(act, Cos):
        np.testing.assert_allclose(act.fn(u), act.a * np.cos(act.b * u + act.c_cos), atol=1e-15)


def test_cos_is_shifted_sin():
    np.testing.assert_allclose(Cos().fn(np.array([0.0, 1.0])), [1.0, math.cos(1.0)])
    # E[cos u cos v] for u = v ~ N(0, q): (1 + e^{-2q})/2
    e, _ = Cos().diag_rule(np.array([0.7]))
    assert e[0] == pytest.approx((1 + math.exp(-1.4)) / 2, rel=1e-14)


@pytest.mark.parametrize("act", [Tanh(), Softplus(), Sigmoid(), SiLU()])
def test_monte_carlo_kernel_maps(act):
    rng = np.random.default_rng(7)
    n = 400_000
    for qx, qz, rho in ((1.0, 1.0, 0.6), (0.4, 2.0, -0.3), (1.5, 1.5, 0.999)):
        xi, eta = rng.standard_normal((2, n))
        u = math.sqrt(qx) * xi
        v = math.sqrt(qz) * (rho * xi + math.sqrt(1 - rho * rho) * eta)
        pu, du = act.phi2(u)
        pv, dv = act.phi2(v)
        e, d = act.kernel_rule(np.array(rho * math.sqrt(qx * qz)), np.array(qx), np.array(qz))
        for est, val in ((pu * pv, e), (du * dv, d)):
            se = est.std() / math.sqrt(n)
            assert abs(est.mean() - val) < 5 * se + 1e-12


@pytest.mark.parametrize("act", [Tanh(), Softplus(), Sigmoid(), SiLU()])
def test_degree_convergence_and_consistency(rng, act):
    """Default degree agrees with a much finer rule to ~1e-11 at q <= 2; diag = rule at θ=0."""
    sigma, qx, qz = _points(rng, 60, qmax=2.0)
    fine = type(act)(degree=161)
    e, d = act.kernel_rule(sigma, qx, qz)
    e1, d1 = fine.kernel_rule(sigma, qx, qz)
    assert _rel(e, e1) < 1e-11 and _rel(d, d1) < 1e-10
    q = np.array([0.3, 1.0, 2.0])
    e, d = act.diag_rule(q)
    e1, d1 = act.kernel_rule(q, q, q)
    np.testing.assert_allclose(e, e1, rtol=1e-12)
    np.testing.assert_allclose(d, d1, rtol=1e-12)


def test_names_and_errors():
    assert get_activation("tanh") == Tanh()
    assert isinstance(get_activation("silu"), SiLU)
    assert isinstance(get_activation("sin"), Sin)
    assert isinstance(get_activation("cos"), Cos)
    assert Tanh() != Tanh(degree=33)
    with pytest.raises(ValueError, match="degree"):
        Tanh(degree=1)
    with pytest.raises(ValueError, match="finite"):
        Sin(b=float("nan"))


def test_plugs_into_recursion_reference(rng):
    X = rng.standard_normal((7, 4))
    net = nk.MLP(depth=2, activation="tanh", w_std=1.1, b_std=0.2)
    ks = net.kernels(X, backend="reference")
    np.testing.assert_allclose(np.diag(ks.ntk), net.ntk_diag(X), rtol=1e-12)
    np.testing.assert_allclose(np.diag(ks.nngp), net.nngp_diag(X), rtol=1e-12)
    assert np.all(np.linalg.eigvalsh(ks.ntk) > 0)


# -- Custom (needs numba) ---------------------------------------------------------
numba = pytest.importorskip("numba")
from ntkfast.activations import Custom  # noqa: E402


def _relu(u):
    return max(u, 0.0)


def test_custom_relu_matches_closed_form(rng):
    act = Custom(_relu, kink=True)
    assert act.derivative_method == "central-difference"
    sigma, qx, qz = _points(rng, 200)
    e0, d0 = nk.ReLU().kernel_rule(sigma, qx, qz)
    e, d = act.kernel_rule(sigma, qx, qz)
    assert _rel(e, e0) < 1e-8 and _rel(d, d0) < 1e-8
    e, d = act.diag_rule(qx)
    assert _rel(d, 0.5 + 0 * qx) < 1e-12


def test_custom_derivative_methods():
    t = Custom(lambda u: np.tanh(u) + 0.1 * u)
    assert t.derivative_method == "complex-step"
    u = np.linspace(-3, 3, 13)
    np.testing.assert_allclose(t.dfn(u), 1 - np.tanh(u) ** 2 + 0.1, rtol=1e-14, atol=1e-15)
    a = Custom(lambda u: abs(u) * 1.0, kink=True)   # compiles for complex but is not analytic
    assert a.derivative_method == "central-difference"
    np.testing.assert_allclose(a.dfn(np.array([-2.0, -1e-3, 1e-3, 2.0])), [-1, -1, 1, 1],
                               rtol=1e-9)
    m = Custom(lambda u: math.sin(u) * u)          # math.sin: no complex typing → FD
    np.testing.assert_allclose(m.dfn(u), np.cos(u) * u + np.sin(u), rtol=1e-10, atol=1e-11)
    g = Custom(lambda u: math.tanh(u), lambda u: 1 - math.tanh(u) ** 2)
    assert g.derivative_method == "given"


@pytest.mark.parametrize("bad,match", [
    (lambda u, v: u + v, "one float"),
    (lambda u: (u, u), "one real number"),
    (lambda u: math.exp(300 * u), "not finite"),
    (lambda u: np.undefined_thing(u), "Numba-compilable"),
    (lambda u: "x", "compil|real number"),
])
def test_custom_bad_input(bad, match):
    with pytest.raises(ValueError, match=match) as info:
        Custom(bad, name="mybad")
    assert "Custom(mybad)" in str(info.value)
    with pytest.raises(ValueError, match="callable"):
        Custom(3.0)


def test_custom_against_finite_width_monte_carlo():
    """Empirical NNGP of one very wide hidden layer with a Custom φ → the analytic Σ."""
    def phi(u):
        return math.sin(u) + 0.5 * u * u / (1.0 + u * u)

    act = Custom(phi, name="wavy")
    rng = np.random.default_rng(3)
    d, width = 3, 200_000
    X = rng.standard_normal((4, d))
    net = nk.MLP(depth=1, activation=act, w_std=1.3, b_std=0.4)
    sigma = net.nngp(X, backend="reference")
    W = rng.standard_normal((d, width))
    b = rng.standard_normal(width)
    h = 1.3 * X @ W / math.sqrt(d) + 0.4 * b
    a = act.fn(h)
    emp = 1.3 ** 2 * (a @ a.T) / width + 0.4 ** 2
    assert np.max(np.abs(emp - sigma)) < 6 * np.max(np.abs(sigma)) / math.sqrt(width) * 3
    assert np.max(np.abs(emp - sigma)) > 0  # a real Monte Carlo, not an identity
