"""Finite-width serial networks (ntkfast.finite_layers): the manual backward pass against
central finite differences, the empirical NTK against J Jᵀ and FiniteMLP, the layer
conventions against direct loops, the nt-style functional interface, and Monte Carlo
convergence to the analytic kernels ``net.ntk`` / ``net.nngp`` (Jacot et al. 2018,
Theorem 1, for CNNs)."""

import itertools
import math

import numpy as np
import pytest

import ntkfast as nk
from ntkfast.finite_layers import (FiniteNetwork, apply, finite_network_for, init_params,
                                   n_params, stax_functions)
from ntkfast.layers import LayerError


def _residual(*inner):
    return nk.serial(nk.FanOut(2), nk.parallel(nk.serial(*inner), nk.Identity()),
                     nk.FanInSum())


# Nets covering every layer kind, both parameterizations, 0-, 1- and 2-D inputs.
# Smooth activations where a kink could fall inside the finite-difference stencil.
GRAD_CASES = {
    "image-all-layers": (nk.serial(
        nk.Conv((3, 3), padding="SAME", w_std=1.3, b_std=0.2), nk.Erf(),
        nk.Conv((2, 3), strides=(2, 1), padding="CIRCULAR", w_std=1.1, b_std=0.3), nk.GELU(),
        nk.AvgPool((2, 2), strides=(1, 1), padding="SAME"),
        _residual(nk.Tanh(), nk.Conv((3, 3), padding="CIRCULAR", w_std=1.2)),
        nk.LayerNorm(eps=1e-3), nk.Dense(w_std=0.9, b_std=0.1), nk.Erf(),
        nk.AvgPool((2, 2), strides=(1, 2), padding="VALID"), nk.Flatten(),
        nk.Dense(1.0, 0.5), nk.Erf(), nk.Dense(1.2, 0.1)), (3, 5, 5, 2)),
    "image-gap-standard": (nk.serial(
        nk.Conv((2, 2), strides=(2, 2), padding="SAME", parameterization="standard",
                w_std=1.4, b_std=0.3),
        nk.LeakyReLU(0.2), nk.AvgPool((2, 2), padding="CIRCULAR"),
        nk.Conv((3, 3), padding="VALID", w_std=1.2, b_std=0.0), nk.GELU(),
        nk.GlobalAvgPool(), nk.Dense(1.1, 0.2, parameterization="standard")), (3, 7, 6, 3)),
    "signal": (nk.serial(
        nk.Conv((3,), padding="CIRCULAR", w_std=1.3, b_std=0.2), nk.Erf(),
        nk.Conv((2,), strides=(2,), padding="VALID", parameterization="standard", b_std=0.1),
        _residual(nk.Erf(), nk.Dense(1.1)),
        nk.GlobalAvgPool(), nk.Dense(parameterization="standard", b_std=0.3)), (3, 6, 2)),
    "vector": (nk.serial(nk.Dense(1.5, 0.1), nk.Erf(), _residual(nk.Dense(1.2, 0.2), nk.GELU()),
                         nk.LayerNorm(), nk.Dense(1.2, 0.2)), (3, 4)),
}


def _fd_jacobian(fn, theta, h=1e-5):
    cols = []
    for i in range(theta.size):
        t = theta.copy()
        t[i] += h
        plus = fn(t)
        t[i] -= 2 * h
        cols.append((plus - fn(t)) / (2 * h))
    return np.stack(cols, axis=-1)


@pytest.mark.parametrize("case", list(GRAD_CASES))
def test_backward_pass_matches_central_differences(case):
    net, shape = GRAD_CASES[case]
    X = np.random.default_rng(7).standard_normal(shape)
    f = FiniteNetwork(net, width=3, seed=1, n_out=2)
    out = f(X)
    assert out.shape == (shape[0], 2)
    theta = f.get_params()
    assert theta.size == f.n_params

    J = f.jacobian(X)                                             # (N, K, P)

    def f_of_theta(t):
        return f.copy().set_params(t)(X)

    Jfd = _fd_jacobian(f_of_theta, theta)                         # (N, K, P)
    assert J.shape == Jfd.shape
    assert np.max(np.abs(J - Jfd)) <= 1e-6 * np.max(np.abs(Jfd))
    np.testing.assert_array_equal(f.get_params(), theta)          # copies were perturbed

    # the input cotangents too (padding adjoints of the first layer, LayerNorm, …)
    Jx = f.input_jacobian(X)                                      # (N, K, *shape)
    flatX = X.reshape(len(X), -1)
    Jx_fd = np.empty_like(Jx).reshape(len(X), 2, -1)
    for j in range(flatX.shape[1]):
        e = np.zeros_like(flatX)
        e[:, j] = 1e-5
        Jx_fd[:, :, j] = (f((flatX + e).reshape(X.shape)) -
                          f((flatX - e).reshape(X.shape))) / 2e-5
    Jx_fd = Jx_fd.reshape(Jx.shape)
    assert np.max(np.abs(Jx - Jx_fd)) <= 1e-6 * np.max(np.abs(Jx_fd))


@pytest.mark.parametrize("case", list(GRAD_CASES))
def test_empirical_ntk_is_the_jacobian_gram(case):
    net, shape = GRAD_CASES[case]
    X = np.random.default_rng(3).standard_normal(shape)
    f = FiniteNetwork(net, width=4, seed=2, n_out=3)
    J = f.jacobian(X)
    full = np.einsum("ncp,mdp->nmcd", J, J)
    scale = np.max(np.abs(full))
    np.testing.assert_allclose(f.ntk(X, full=True), full, rtol=0, atol=1e-13 * scale)
    np.testing.assert_allclose(f.ntk(X), np.einsum("nmcc->nm", full) / 3, rtol=0,
                               atol=1e-13 * scale)
    np.testing.assert_allclose(f.ntk(X[:1], X[1:]), np.einsum("nmcc->nm", full)[:1, 1:] / 3,
                               rtol=0, atol=1e-13 * scale)
    np.testing.assert_allclose(f.ntk(X[:2], X[1:], full=True), full[:2, 1:], rtol=0,
                               atol=1e-13 * scale)
    k = f.empirical_kernels(X[:2], X[1:])
    np.testing.assert_allclose(k.ntk, f.ntk(X[:2], X[1:]), rtol=0, atol=1e-13 * scale)
    np.testing.assert_allclose(k.nngp, f.nngp(X)[:2, 1:], rtol=1e-13, atol=1e-15)


def test_matches_finite_mlp_with_the_same_parameters():
    mlp = nk.MLP(depth=2, activation="erf", w_std=1.4, b_std=0.3)
    ref = nk.finite_network(mlp, width=7, seed=3, n_out=2, d=4)
    net = nk.serial(nk.Dense(1.4, 0.3), nk.Erf(), nk.Dense(1.4, 0.3), nk.Erf(),
                    nk.Dense(1.4, 0.3))
    f = finite_network_for(net, 7, seed=0, input_shape=(4,), n_out=2)
    assert f.n_params == ref.n_params
    # FiniteMLP stores W as (n_out, n_in); nt (and we) as (n_in, n_out)
    f.set_params(np.concatenate([p for W, b in zip(ref.weights, ref.biases)
                                 for p in (W.T.ravel(), b)]))
    rng = np.random.default_rng(1)
    X, Z = rng.standard_normal((5, 4)), rng.standard_normal((3, 4))
    np.testing.assert_allclose(f(X), ref(X), rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(f.ntk(X, Z), ref.empirical_ntk(X, Z), rtol=1e-12)
    np.testing.assert_allclose(f.ntk(X, full=True), ref.empirical_ntk(X, full=True),
                               rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(f.nngp(X, Z), ref.empirical_nngp(X, Z), rtol=1e-12)


# -- the layer conventions, written out as loops --------------------------------------

def _conv_loop(x, W, b, strides, padding, a, beta):
    """z[p, c'] = a Σ_o Σ_c W[o, c, c'] x[s·p + o − low, c] + β b[c'] for one image."""
    H, Wd, C = x.shape
    kh, kw = W.shape[:2]
    outs, lows = [], []
    for n, k, s in zip((H, Wd), (kh, kw), strides):
        if padding == "VALID":
            outs.append((n - k) // s + 1)
            lows.append(0)
        else:
            out = -(-n // s)
            outs.append(out)
            lows.append(max((out - 1) * s + k - n, 0) // 2)
    z = np.zeros((outs[0], outs[1], W.shape[-1]))
    for p, q in itertools.product(range(outs[0]), range(outs[1])):
        for o, r in itertools.product(range(kh), range(kw)):
            i, j = strides[0] * p + o - lows[0], strides[1] * q + r - lows[1]
            if padding == "CIRCULAR":
                i, j = i % H, j % Wd
            elif not (0 <= i < H and 0 <= j < Wd):
                continue
            z[p, q] += x[i, j] @ W[o, r]
    return a * z + (0 if b is None else beta * b.reshape(-1))


@pytest.mark.parametrize("padding", ["SAME", "VALID", "CIRCULAR"])
@pytest.mark.parametrize("filt, strides", [((3, 3), (1, 1)), ((2, 3), (2, 1)),
                                           ((4, 2), (3, 2)), ((1, 1), (2, 2))])
def test_conv_convention(padding, filt, strides):
    x = np.random.default_rng(0).standard_normal((2, 5, 6, 3))
    net = nk.serial(nk.Conv(filt, strides=strides, padding=padding, w_std=1.7, b_std=0.4))
    (_, *out_shape), params = init_params(net, 5, (-1, 5, 6, 3), n_out=4)
    (W, b), = params
    assert W.shape == filt + (3, 4) and b.shape == (1, 1, 4)
    z = apply(net, params, x)
    assert z.shape[1:] == tuple(out_shape)
    a = 1.7 / math.sqrt(3 * math.prod(filt))
    for n in range(2):
        np.testing.assert_allclose(z[n], _conv_loop(x[n], W, b, strides, padding, a, 0.4),
                                   rtol=1e-12, atol=1e-13)


def test_pooling_flatten_dense_layernorm_conventions():
    x = np.random.default_rng(1).standard_normal((2, 5, 4, 3))
    # AvgPool SAME: zeros count, the sum is divided by the full window (3·3)
    pool = nk.serial(nk.AvgPool((3, 3), strides=(2, 2), padding="SAME"))
    W = np.broadcast_to(np.eye(3), (3, 3, 3, 3))
    y = apply(pool, ((),), x)
    for n in range(2):
        np.testing.assert_allclose(y[n], _conv_loop(x[n], W, None, (2, 2), "SAME", 1 / 9, 0),
                                   rtol=1e-13, atol=1e-14)
    # CIRCULAR pooling wraps: the mean is preserved
    yc = apply(nk.serial(nk.AvgPool((2, 3), strides=(1, 1), padding="CIRCULAR")), ((),), x)
    np.testing.assert_allclose(yc.mean(axis=(1, 2)), x.mean(axis=(1, 2)), rtol=1e-12)
    np.testing.assert_allclose(apply(nk.serial(nk.GlobalAvgPool()), ((),), x),
                               x.mean(axis=(1, 2)), rtol=1e-13)
    # Flatten: C order of (H, W, C); the next Dense has fan-in H·W·C
    net = nk.serial(nk.Flatten(), nk.Dense(w_std=2.0, b_std=0.5))
    out_shape, ((), (Wd, bd)) = init_params(net, 0, (-1, 5, 4, 3), n_out=2)
    assert out_shape == (-1, 2) and Wd.shape == (60, 2)
    want = 2.0 / math.sqrt(60) * x.reshape(2, -1) @ Wd + 0.5 * bd
    np.testing.assert_allclose(apply(net, ((), (Wd, bd)), x), want, rtol=1e-13,
                               atol=1e-13 * np.abs(want).max())
    # Dense on spatial input acts per position with fan-in C
    (Wp, bp), = init_params(nk.serial(nk.Dense(1.5)), 0, (-1, 5, 4, 3), n_out=6)[1]
    assert bp is None
    want = 1.5 / math.sqrt(3) * x @ Wp  # another BLAS call: equal to the scale, not bits
    np.testing.assert_allclose(apply(nk.serial(nk.Dense(1.5)), ((Wp, None),), x), want,
                               rtol=1e-13, atol=1e-13 * np.abs(want).max())
    ln = apply(nk.serial(nk.LayerNorm(eps=0.1)), ((),), x)
    np.testing.assert_allclose(ln, (x - x.mean(-1, keepdims=True)) /
                               np.sqrt(x.var(-1, keepdims=True) + 0.1), rtol=1e-13)


def test_functional_interface_and_widths():
    net = nk.serial(nk.Conv((3, 3), w_std=1.3), nk.ReLU(), _residual(nk.Conv((3, 3))),
                    nk.Conv((1, 1), width=5), nk.ReLU(), nk.GlobalAvgPool(), nk.Dense())
    out_shape, params = init_params(net, 11, (-1, 6, 6, 2), width=8, n_out=3)
    assert out_shape == (-1, 3)
    (W0, b0), _, res, (W2, _), _, _, (W3, _) = params
    assert W0.shape == (3, 3, 2, 8) and b0 is None
    assert res[1][0][0][0].shape == (3, 3, 8, 8)           # the residual branch's Conv
    assert W2.shape == (1, 1, 8, 5)                        # the layer's own width
    assert W3.shape == (5, 3)                              # the readout: n_out
    # the same seed draws the same parameters; a jax-key-like int array works as a seed
    _, again = init_params(net, 11, (7, 6, 6, 2), width=8, n_out=3)
    np.testing.assert_array_equal(again[0][0], W0)
    init_params(net, np.array([0, 11], dtype=np.uint32), (-1, 6, 6, 2), width=8)
    init_fn, apply_fn = stax_functions(net, width=8, n_out=3)
    shape, p = init_fn(11, (4, 6, 6, 2))
    assert shape == (4, 3)
    x = np.random.default_rng(2).standard_normal((4, 6, 6, 2))
    f = FiniteNetwork(net, 8, seed=11, n_out=3)
    np.testing.assert_array_equal(apply_fn(p, x), f(x))
    assert n_params(net, p) == f.n_params
    assert f.input_shape == (6, 6, 2) and f.output_shape == (3,)
    # nt's default readout width: n_out=None keeps a terminal layer's own width, else 1
    assert init_params(net, 0, (-1, 6, 6, 2), width=8)[0] == (-1, 1)
    # a network ending in a Conv keeps its spatial output (apply works, kernels do not)
    conv = nk.serial(nk.Conv((3, 3)), nk.ReLU(), nk.Conv((3, 3)))
    fc = FiniteNetwork(conv, 4, n_out=2)
    assert fc(x).shape == (4, 6, 6, 2)
    with pytest.raises(ValueError, match="vector outputs"):
        fc.ntk(x)


def test_errors():
    x = np.zeros((2, 5, 5, 3))
    with pytest.raises(ValueError, match="width"):
        init_params(nk.serial(nk.Conv((3, 3)), nk.Flatten(), nk.Dense()), 0, (-1, 5, 5, 3))
    # the identity branch keeps `width` channels, the terminal Dense has n_out
    bad = nk.serial(nk.Conv((3, 3)), nk.GlobalAvgPool(), _residual(nk.Dense()))
    with pytest.raises(LayerError, match="FanInSum"):
        FiniteNetwork(bad, 4, n_out=1)(x)
    with pytest.raises(LayerError, match="Conv"):
        FiniteNetwork(nk.serial(nk.Dense(), nk.Conv((3,))), 4)(np.zeros((2, 3)))
    f = FiniteNetwork(nk.serial(nk.Conv((3, 3)), nk.GlobalAvgPool(), nk.Dense()), 4)
    f(x)
    with pytest.raises(ValueError, match="built for"):
        f(np.zeros((2, 4, 4, 3)))
    with pytest.raises(ValueError, match="NaN"):
        f(np.full((2, 5, 5, 3), np.nan))
    with pytest.raises(ValueError, match="Dense readout"):
        FiniteNetwork(nk.serial(nk.Conv((3, 3)), nk.GlobalAvgPool(), nk.Dense(), nk.ReLU()),
                      4).nngp(x)
    with pytest.raises(RuntimeError, match="no parameters"):
        FiniteNetwork(nk.serial(nk.Dense()), 4).get_params()


# -- Monte Carlo: the empirical kernels converge to the analytic ones ------------------

MC_NETS = {
    "conv-gap": nk.serial(
        nk.Conv((3, 3), padding="SAME", w_std=1.5, b_std=0.1), nk.ReLU(),
        nk.Conv((3, 3), padding="SAME", w_std=1.5, b_std=0.1), nk.ReLU(),
        nk.GlobalAvgPool(), nk.Dense(1.0, 0.1)),
    "conv-flatten": nk.serial(
        nk.Conv((3, 3), strides=(2, 2), padding="CIRCULAR", w_std=1.5), nk.Erf(),
        nk.Conv((2, 2), padding="VALID", w_std=1.5, b_std=0.2), nk.ReLU(),
        nk.Flatten(), nk.Dense(1.0, 0.1)),
    "avgpool-residual": nk.serial(
        nk.Conv((3, 3), padding="SAME", w_std=1.4),
        nk.AvgPool((2, 2), strides=(1, 1), padding="SAME"),
        _residual(nk.ReLU(), nk.Conv((3, 3), padding="SAME", w_std=1.4, b_std=0.1)),
        nk.LayerNorm(), nk.ReLU(), nk.GlobalAvgPool(), nk.Dense(1.0, 0.1)),
}


def _rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def _monte_carlo(net, X, width, seeds, n_ff=32):
    """Per-seed empirical NTK, empirical NNGP (readout covariance) and the mean over n_ff
    output units of f(x) f(z)ᵀ (the hidden parameters are the same for a given seed)."""
    ntk, nngp, ff = [], [], []
    for seed in seeds:
        k = FiniteNetwork(net, width, seed=seed).empirical_kernels(X)
        ntk.append(k.ntk)
        nngp.append(k.nngp)
        out = FiniteNetwork(net, width, seed=seed, n_out=n_ff)(X)
        ff.append(out @ out.T / n_ff)
    return np.array(ntk), np.array(nngp), np.array(ff)


def _analytic(net, X):
    if not hasattr(net, "ntk"):
        pytest.skip("the analytic serial kernels (net.ntk / net.nngp) are not available")
    return net.nngp(X), net.ntk(X)


def _check_convergence(net, X, widths, seeds, z_max, ratio_max):
    nngp_inf, ntk_inf = _analytic(net, X)
    report = {}
    for width in widths:
        ntk, nngp, ff = _monte_carlo(net, X, width, seeds)
        for name, samples, ref in (("ntk", ntk, ntk_inf), ("nngp", nngp, nngp_inf),
                                   ("ff", ff, nngp_inf)):
            mean = samples.mean(axis=0)
            se = samples.std(axis=0, ddof=1) / math.sqrt(len(samples))
            report[name, width] = dict(
                per_seed=np.mean([_rel(s, ref) for s in samples]),   # typical single draw
                mean_err=np.linalg.norm(mean - ref),
                se=np.linalg.norm(se))
    lo, hi = widths[0], widths[-1]
    for name in ("ntk", "nngp", "ff"):
        r = report[name, hi]
        # the mean over seeds agrees with the limit within a few standard errors
        assert r["mean_err"] <= z_max * r["se"], (name, report)
    for name in ("ntk", "nngp"):
        # single draws fluctuate O(1/√width): from 16 to 256, 4x less expected
        assert report[name, hi]["per_seed"] <= ratio_max * report[name, lo]["per_seed"], \
            (name, report)
    # (f fᵀ keeps the O(1/√n_ff) readout noise at every width: no ratio check)
    return report


@pytest.mark.parametrize("name", list(MC_NETS))
def test_monte_carlo_converges_to_analytic_kernels(name):
    X = np.random.default_rng(0).standard_normal((4, 5, 5, 2))
    _check_convergence(MC_NETS[name], X, widths=(16, 256), seeds=range(6), z_max=4.0,
                       ratio_max=0.6)


def test_monte_carlo_standard_parameterization():
    """'standard': the analytic NTK depends on the widths (the layers' ``width``), which
    the finite network takes from the same attributes."""
    X = np.random.default_rng(0).standard_normal((4, 5, 5, 2))
    w = 96
    net = nk.serial(
        nk.Conv((3, 3), w_std=1.5, b_std=0.1, parameterization="standard", width=w),
        nk.ReLU(), nk.AvgPool((2, 2), padding="SAME"),
        nk.Conv((3, 3), w_std=1.5, b_std=0.1, parameterization="standard", width=w),
        nk.ReLU(), nk.Flatten(), nk.Dense(1.0, 0.1, parameterization="standard"))
    nngp_inf, ntk_inf = _analytic(net, X)
    for ref, get in ((ntk_inf, "ntk"), (nngp_inf, "nngp")):
        samples = np.array([getattr(FiniteNetwork(net, 1, seed=s).empirical_kernels(X), get)
                            for s in range(6)])
        se = samples.std(axis=0, ddof=1) / math.sqrt(len(samples))
        assert np.linalg.norm(samples.mean(axis=0) - ref) <= 4.0 * np.linalg.norm(se), get
        assert np.mean([_rel(k, ref) for k in samples]) < 0.2, get


def test_serial_finite_method():
    net = MC_NETS["conv-gap"]
    if not hasattr(net, "finite"):
        pytest.skip("Serial.finite is not wired to finite_network_for yet")
    X = np.random.default_rng(0).standard_normal((2, 5, 5, 2))
    f = net.finite(8, seed=3)
    np.testing.assert_array_equal(f(X), finite_network_for(net, 8, seed=3)(X))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MC_NETS))
def test_monte_carlo_converges_to_analytic_kernels_slow(name):
    X = np.random.default_rng(1).standard_normal((5, 6, 6, 3))
    widths = (16, 64, 256, 512)
    report = _check_convergence(MC_NETS[name], X, widths=widths, seeds=range(100, 124),
                                z_max=4.0, ratio_max=0.45)
    for kind in ("ntk", "nngp"):
        errs = [report[kind, w]["per_seed"] for w in widths]
        assert all(b < a for a, b in zip(errs, errs[1:])), (kind, errs)
