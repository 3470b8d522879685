"""Finite-width networks: empirical NTK = JJᵀ, gradients, and Theorem 1 (convergence)."""

import numpy as np
import pytest

import ntkfast as nk
from ntkfast.experiments import kernel_convergence
from ntkfast.finite import FiniteMLP, finite_network


def fd_jacobian(net, X, eps=1e-6):
    """(N, k, P) Jacobian of f(X) w.r.t. the flat parameters, central differences."""
    theta = net.get_params()
    cols = []
    for i in range(theta.size):
        e = np.zeros_like(theta)
        e[i] = eps
        fp = net.set_params(theta + e)(X)
        fm = net.set_params(theta - e)(X)
        cols.append((fp - fm) / (2 * eps))
    net.set_params(theta)
    return np.stack(cols, axis=-1)


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("b_std", [None, 0.3])
@pytest.mark.parametrize("activation", ["erf", "relu"])
def test_empirical_ntk_equals_finite_difference_jjt(parameterization, b_std, activation):
    rng = np.random.default_rng(7)
    X, Z = rng.standard_normal((4, 3)), rng.standard_normal((3, 3))
    net = FiniteMLP(5, depth=2, activation=activation, w_std=1.3, b_std=b_std,
                    parameterization=parameterization, n_out=2, seed=3, d=3)
    JX, JZ = fd_jacobian(net, X), fd_jacobian(net, Z)
    full = np.einsum("xcp,zdp->xzcd", JX, JZ)
    np.testing.assert_allclose(net.empirical_ntk(X, Z, full=True), full, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(net.empirical_ntk(X, Z), np.einsum("xzcc->xz", full) / 2,
                               rtol=1e-6, atol=1e-7)
    JJ = np.einsum("xcp,zcp->xz", JX, JX) / 2
    np.testing.assert_allclose(net.empirical_ntk(X), JJ, rtol=1e-6, atol=1e-7)
    # backprop gradient of ½‖f − y‖² against the same Jacobian
    y = rng.standard_normal((4, 2))
    _, dW, db = net.loss_and_grads(X, y)
    flat = np.concatenate([np.concatenate([dW[l].ravel()] + ([db[l]] if b_std else []))
                           for l in range(3)])
    np.testing.assert_allclose(flat, np.einsum("xc,xcp->p", net(X) - y, JX), rtol=1e-6,
                               atol=1e-7)


def test_depth_zero_is_linear_model():
    X = np.random.default_rng(0).standard_normal((5, 4))
    net = FiniteMLP(3, depth=0, w_std=2.0, b_std=0.5, d=4)
    np.testing.assert_allclose(net.empirical_ntk(X), nk.MLP(0, "relu", 2.0, 0.5).ntk(X))


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_monte_carlo_mean_approaches_analytic_kernels(parameterization):
    """Theorem 1 in expectation: the seed average of Θ_emp and Σ_emp approaches MLP's
    kernels, and E[f(x) f(z)] = Σ (exact for depth 1 at any width)."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((6, 5))
    width, n_seeds = 128, 120
    mlp = nk.MLP(1, "erf", 1.4, 0.2, parameterization, width=width)
    nets = [finite_network(mlp, width, seed=s, d=5) for s in range(n_seeds)]
    ks = nets[0].analytic().kernels(X)
    mean_ntk = np.mean([n.empirical_ntk(X) for n in nets], axis=0)
    mean_nngp = np.mean([n.empirical_nngp(X) for n in nets], axis=0)
    rel = lambda a, b: np.linalg.norm(a - b) / np.linalg.norm(b)  # noqa: E731
    assert rel(mean_ntk, ks.ntk) < 0.035
    assert rel(mean_nngp, ks.nngp) < 0.035
    single = rel(nets[0].empirical_ntk(X), ks.ntk)
    assert rel(mean_ntk, ks.ntk) < single / 3            # averaging helps
    outs = np.stack([finite_network(mlp, 8, seed=s, d=5)(X)[:, 0] for s in range(3000)])
    assert rel(outs.T @ outs / len(outs), ks.nngp) < 0.08


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_kernel_error_slope_is_minus_half(parameterization):
    X = np.random.default_rng(2).standard_normal((12, 6))
    mlp = nk.MLP(2, "relu", 1.5, 0.1, parameterization, width=1)
    res = kernel_convergence(mlp, X, [16, 64, 256, 1024], n_seeds=4, seed=0)
    assert res["ntk_errors"].shape == (4, 4)
    assert abs(res["ntk_slope"] + 0.5) < 0.15, res["ntk_slope"]
    assert abs(res["nngp_slope"] + 0.5) < 0.15, res["nngp_slope"]
    assert res["ntk_mean"][-1] < res["ntk_mean"][0] / 4


def test_training_decreases_loss_and_is_seeded():
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((10, 4)), rng.standard_normal(10)
    a, b = (finite_network(nk.MLP(2, "gelu", 1.2, 0.1), 64, seed=5) for _ in range(2))
    ha = a.train(X, y, lr=0.01, steps=100, record_steps=[0, 50, 100], X_test=X[:3])
    hb = b.train(X, y, lr=0.01, steps=100)
    np.testing.assert_array_equal(a.get_params(), b.get_params())
    assert ha.loss[-1] < 0.2 * ha.loss[0]
    assert ha.train.shape == (3, 10, 1) and ha.test.shape == (3, 3, 1)
    np.testing.assert_allclose(hb.train[-1], a(X))
    c = finite_network(nk.MLP(2, "gelu", 1.2, 0.1), 64, seed=6, d=4)
    assert not np.allclose(c.get_params(), FiniteMLP(64, 2, "gelu", 1.2, 0.1, seed=5,
                                                      d=4).get_params())


def test_multi_output_training_and_copy():
    rng = np.random.default_rng(4)
    X, Y = rng.standard_normal((6, 3)), rng.standard_normal((6, 2))
    net = FiniteMLP(16, depth=1, n_out=2, seed=0)        # parameters drawn on first use
    hist = net.train(X, Y, lr=0.02, steps=30)
    assert net.d == 3 and hist.loss[-1] < hist.loss[0]
    before = net.get_params().copy()
    other = net.copy()
    other.train(X, Y, lr=0.02, steps=5)
    np.testing.assert_array_equal(net.get_params(), before)


def test_finite_network_matches_mlp():
    mlp = nk.MLP(3, nk.LeakyReLU(0.2), 1.1, None, "standard", width=32)
    net = finite_network(mlp, 32, seed=1, d=7)
    assert (net.depth, net.w_std, net.b_std, net.parameterization) == (3, 1.1, None, "standard")
    assert net.activation == mlp.activation and net.layer_widths == (7, 32, 32, 32, 1)
    assert net.n_params == net.get_params().size == 7 * 32 + 2 * 32 * 32 + 32
    assert net.analytic().width == 32


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="width"):
        FiniteMLP(0)
    with pytest.raises(ValueError, match="width"):
        finite_network(nk.MLP(1), 0)
    with pytest.raises(ValueError, match="parameterization"):
        FiniteMLP(4, parameterization="mup")
    net = FiniteMLP(4, d=3)
    with pytest.raises(ValueError, match="X: has 2 features"):
        net(np.ones((5, 2)))
    with pytest.raises(ValueError, match="Z"):
        net.empirical_ntk(np.ones((5, 3)), np.ones((5, 4)))
    with pytest.raises(ValueError, match="y"):
        net.train(np.ones((5, 3)), np.ones(4), lr=0.1, steps=1)
    with pytest.raises(ValueError, match="y"):
        net.train(np.ones((5, 3)), np.ones((5, 2)), lr=0.1, steps=1)
    with pytest.raises(ValueError, match="lr"):
        net.train(np.ones((5, 3)), np.ones(5), lr=-1.0, steps=1)
    with pytest.raises(ValueError, match="theta"):
        net.set_params(np.ones(3))
    with pytest.raises(RuntimeError, match="d="):
        FiniteMLP(4).get_params()
