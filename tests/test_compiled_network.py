"""The compiled network engine (ntkfast._conv_engine) against the NumPy reference
engine: random valid architectures from the supported layer set, both spatial modes,
1-D and 2-D inputs of odd sizes, both dtypes; K(X, Z) and K(X, X); threads and tiles;
out of core; dispatch."""

import numpy as np
import pytest

from conftest import assert_fills_agree, fill_both
import ntkfast as nk
from ntkfast.backends.compiled_network import CompiledNetworkEngine, unsupported_layer
from ntkfast.backends.reference_network import NetworkPlan, NetworkReferenceEngine

WIDTH = 4
ACTS = [nk.ReLU, lambda: nk.LeakyReLU(0.1), nk.Abs, lambda: nk.ABReLU(-0.3, 0.7),
        lambda: nk.Erf(1.2, 0.8, 0.1), nk.GELU, nk.Identity]


def _linear(rng, cls, **kw):
    std = rng.random() < 0.2
    b_std = None if rng.random() < 0.5 else float(rng.uniform(0, 0.5))
    return cls(**kw, w_std=float(rng.uniform(0.8, 1.6)), b_std=b_std,
               parameterization="standard" if std else "ntk", width=WIDTH)


def _conv(rng, d, size, same=False):
    """A Conv that fits the spatial ``size``; returns (layer, output size)."""
    k = tuple(int(rng.integers(1, 4)) for _ in range(d))
    pad = "SAME" if same else str(rng.choice(["SAME", "VALID", "CIRCULAR"]))
    if pad == "VALID" and any(kk > n for kk, n in zip(k, size)):
        pad = "SAME"
    s = None if same or rng.random() < 0.7 else tuple(int(rng.integers(1, 3))
                                                      for _ in range(d))
    layer = _linear(rng, nk.Conv, filter_shape=k, strides=s, padding=pad)
    return layer, layer.output_spatial(size, "")


def random_network(rng, d, size, pool):
    """A random valid network on spatial inputs of rank ``d`` and shape ``size``;
    ``pool``: with AvgPool / GlobalAvgPool (full mode), else a Flatten readout."""
    layers = []
    conv, size = _conv(rng, d, size)
    layers.append(conv)
    for depth in range(int(rng.integers(1, 4))):
        if rng.random() < 0.35:  # a residual block on the Gaussian output of a Conv
            branch = [ACTS[rng.integers(0, 6)]()]
            c, _ = _conv(rng, d, size, same=True)
            branch.append(c)
            layers += [nk.FanOut(2), nk.parallel(nk.serial(*branch), nk.Identity()),
                       nk.FanInSum()]
        layers.append(ACTS[rng.integers(0, len(ACTS))]())
        if pool and rng.random() < 0.6 and min(size) >= 2:
            w = tuple(int(rng.integers(1, min(3, min(size)) + 1)) for _ in range(d))
            s = None if rng.random() < 0.4 else tuple(int(rng.integers(1, 3))
                                                      for _ in range(d))
            p = layer = nk.AvgPool(w, strides=s, padding=str(rng.choice(["VALID", "SAME"])))
            layers.append(p)
            size = layer.output_spatial(size, "")
        if depth < 2:
            conv, size = _conv(rng, d, size)
            layers.append(conv)
    if not any(isinstance(l, nk.Conv) for l in layers[-1:]):
        conv, size = _conv(rng, d, size)
        layers.append(conv)
    layers.append(nk.GlobalAvgPool() if pool and rng.random() < 0.6 else nk.Flatten())
    layers.append(_linear(rng, nk.Dense))
    if rng.random() < 0.5:
        layers += [ACTS[rng.integers(0, len(ACTS))](), _linear(rng, nk.Dense)]
    return nk.serial(*layers)


SHAPES = [(7, 5, 3), (5, 3, 2), (9, 2), (11, 3), (3, 3, 1), (6, 7, 2)]


def _case(seed):
    rng = np.random.default_rng(seed)
    shape = SHAPES[seed % len(SHAPES)]
    net = random_network(rng, len(shape) - 1, shape[:-1], pool=seed % 2 == 0)
    X = rng.standard_normal((5,) + shape)
    Z = rng.standard_normal((4,) + shape)
    return net, X, Z


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)


@pytest.mark.parametrize("seed", range(16))
def test_random_networks_match_reference(seed):
    net, X, Z = _case(seed)
    assert unsupported_layer(net) is None
    ref = net.kernels(X, Z, backend="reference")
    got = net.kernels(X, Z, backend="compiled")
    assert _rel(got.nngp, ref.nngp) <= 1e-12, net
    assert _rel(got.ntk, ref.ntk) <= 1e-12, net
    got32 = net.kernels(X.astype(np.float32), Z.astype(np.float32), backend="compiled")
    assert got32.ntk.dtype == np.float32
    assert _rel(got32.nngp, ref.nngp) <= 1e-5, net
    assert _rel(got32.ntk, ref.ntk) <= 1e-5, net


@pytest.mark.parametrize("seed", [0, 3, 4, 9])
def test_symmetric_exact(seed):
    net, X, _ = _case(seed)
    got = net.kernels(X, backend="compiled")
    ref = net.kernels(X, backend="reference")
    for k, r, diag in ((got.nngp, ref.nngp, net.nngp_diag(X)),
                       (got.ntk, ref.ntk, net.ntk_diag(X))):
        assert np.array_equal(k, k.T)
        assert np.array_equal(np.diag(k), diag)
        assert _rel(k, r) <= 1e-12
    assert np.array_equal(net.nngp(X, backend="compiled"), got.nngp)


def test_threads_and_tiles_do_not_change_results():
    net, X, Z = _case(2)
    plan = NetworkPlan(net, X.shape[1:])
    eng = CompiledNetworkEngine()
    qx, qz = eng.variances(plan, X), eng.variances(plan, Z)
    results = []
    for tile, jobs in ((None, 1), (1, 2), (3, 2), (2, 1)):
        results += fill_both(eng, plan, X, Z, qx, qz, tile, jobs)
    assert_fills_agree(results)
    # whole network through tiling with several threads and small blocks
    a = net.kernels(X, Z, backend="compiled", n_jobs=2, tile=2)
    b = net.kernels(X, Z, backend="compiled", n_jobs=1)
    assert _rel(a.ntk, b.ntk) <= 1e-13


def test_out_of_core(tmp_path):
    net, X, _ = _case(0)
    paths = (str(tmp_path / "s.npy"), str(tmp_path / "t.npy"))
    S, T = net.kernels(X, backend="compiled", out=paths, tile=2)
    ref = net.kernels(X, backend="compiled")
    assert np.array_equal(np.asarray(S), ref.nngp)
    assert np.array_equal(np.asarray(T), ref.ntk)
    assert np.array_equal(np.load(paths[1]), ref.ntk)


def test_myrtle_like_and_vectors():
    rng = np.random.default_rng(7)
    net = nk.serial(nk.Conv((3, 3), w_std=2 ** .5), nk.ReLU(),
                    nk.Conv((3, 3), w_std=2 ** .5), nk.ReLU(),
                    nk.AvgPool((2, 2), strides=(2, 2)),
                    nk.Conv((3, 3), w_std=2 ** .5), nk.ReLU(), nk.GlobalAvgPool(),
                    nk.Dense())
    X, Z = rng.standard_normal((3, 8, 8, 3)), rng.standard_normal((2, 8, 8, 3))
    assert _rel(net.ntk(X, Z, backend="compiled"), net.ntk(X, Z, backend="reference")) \
        <= 1e-12
    # a residual MLP on vectors (not an MLP chain: the network engine)
    res = nk.serial(nk.Dense(b_std=0.1), nk.FanOut(2),
                    nk.parallel(nk.serial(nk.ReLU(), nk.Dense()), nk.Identity()),
                    nk.FanInSum(), nk.Erf(), nk.Dense())
    V, W = rng.standard_normal((4, 6)), rng.standard_normal((3, 6))
    assert _rel(res.ntk(V, W, backend="compiled"), res.ntk(V, W, backend="reference")) \
        <= 1e-12


def test_near_parallel_and_tiny_rows_as_reference():
    """One channel and 1×1 convolutions: every pixel pair is (anti)parallel, so every
    pair goes through the reference engine's own precise path; tiny rows of a
    homogeneous network are rescaled exactly."""
    rng = np.random.default_rng(3)
    net = nk.serial(nk.Conv((1, 1)), nk.ReLU(), nk.Conv((3, 3)), nk.ReLU(),
                    nk.AvgPool((2, 2)), nk.Flatten(), nk.Dense())
    X = rng.standard_normal((3, 4, 5, 1))
    Z = np.concatenate([X[:1], rng.standard_normal((2, 4, 5, 1))])
    for A, B in ((X, Z), (X * 1e-160, Z)):
        ref = net.kernels(A, B, backend="reference")
        got = net.kernels(A, B, backend="compiled")
        assert _rel(got.ntk, ref.ntk) <= 1e-12
        assert _rel(got.nngp, ref.nngp) <= 1e-12


def test_dispatch():
    conv = nk.serial(nk.Conv((3,)), nk.ReLU(), nk.Flatten(), nk.Dense())
    eng, _ = conv._engine_and_spec((5, 2), "auto")
    assert isinstance(eng, CompiledNetworkEngine)
    eng, _ = conv._engine_and_spec((5, 2), "compiled")
    assert isinstance(eng, CompiledNetworkEngine)
    eng, _ = conv._engine_and_spec((5, 2), "reference")
    assert type(eng) is NetworkReferenceEngine
    # Tanh by 2-D quadrature (the series ones run compiled: tests/test_conv_series.py)
    tanh = nk.serial(nk.Conv((3,)), nk.FanOut(1), nk.parallel(nk.Tanh(degree=40)),
                     nk.FanInSum(), nk.Flatten(), nk.Dense())
    eng, _ = tanh._engine_and_spec((5, 2), "auto")
    assert type(eng) is NetworkReferenceEngine
    with pytest.raises(ValueError, match=r"backend='compiled'.*branch 0.*Tanh"):
        tanh.ntk(np.ones((2, 5, 2)), backend="compiled")


def test_fallback_only_where_the_error_estimate_is_large():
    """Digits (flat regions): many pairs meet a near-parallel pixel pair, few have an
    estimated Θ error above NEAR_PARALLEL_RTOL; the compiled engine computes the
    reference's estimate in C and sends only those to the reference's cross pass — the
    pairs the reference engine itself recomputes; Σ-only calls pick the same pairs."""
    pytest.importorskip("sklearn")
    from ntkfast import experiments as E
    from ntkfast.layers.elementwise import NEAR_PARALLEL_RTOL
    from ntkfast.layers.state import ReplayTape
    rng = np.random.default_rng(0)
    X = E.load_digits_split(60, 0, 0)["X_train"].reshape(-1, 8, 8, 1)
    # near-duplicates: a large estimate (the fallback must stay)
    X = np.concatenate([X, X[:3] + 1e-9 * rng.standard_normal((3, 8, 8, 1))])
    n = X.shape[0]
    net = nk.serial(nk.Conv((3, 3), w_std=2 ** .5, b_std=0.1), nk.ReLU(),
                    nk.Conv((3, 3), w_std=2 ** .5, b_std=0.1), nk.ReLU(),
                    nk.GlobalAvgPool(), nk.Dense(1.0, 0.1))
    plan = NetworkPlan(net, X.shape[1:])
    eng = CompiledNetworkEngine()
    q = eng.variances(plan, X)
    # the reference's decision (its float64 cross pass, its estimate)
    tape = ReplayTape(q.tapes, q.tapes, skip_diagonal=True)
    plan.run(plan.cross_state(X, X, tape, True))
    est = np.triu(tape.angle_error, 1)
    assert (est > 0).sum() > 10 * (est > NEAR_PARALLEL_RTOL).sum() > 0
    sent = []
    orig = eng._precise

    def spy(plan_, X64, Z64, near, *args):
        sent.append(near.copy())
        return orig(plan_, X64, Z64, near, *args)

    eng._precise = spy
    from ntkfast import _conv_engine
    runs = []
    run_pairs = _conv_engine.run_pairs

    def spy_runs(*args):
        out = run_pairs(*args)
        runs.append((args[14], np.array(args[10])))  # (est_mode, what C returned)
        return out

    S, T = np.empty((n, n)), np.empty((n, n))
    try:
        _conv_engine.run_pairs = spy_runs
        eng.fill(plan, X, X, S, T, symmetric=True, dtype=np.float64, qx=q, qz=q)
    finally:
        _conv_engine.run_pairs = run_pairs
    # C's estimates (the rerun, est_mode 2) are the reference's, on the same pairs (up
    # to the float64 noise of the near-parallel angles they are about)
    assert [m for m, _ in runs] == [1, 2]
    c_est = runs[1][1]
    assert np.array_equal(c_est > 0, est > 0)
    assert np.allclose(c_est, est, rtol=0.25, atol=0)
    S2 = np.empty((n, n))
    eng.fill(plan, X, X, S2, None, symmetric=True, dtype=np.float64, qx=q, qz=q)
    assert len(sent) == 2 and np.array_equal(sent[0], sent[1])
    assert np.array_equal(S, S2)
    # the same pairs as the reference, but for estimates near the threshold
    clear = (est > 2 * NEAR_PARALLEL_RTOL) | (est < NEAR_PARALLEL_RTOL / 2)
    assert np.array_equal(sent[0] & clear, (est > NEAR_PARALLEL_RTOL) & clear)
    for i in range(3):
        assert sent[0][i, 60 + i]
    ref = net.kernels(X, backend="reference")
    assert _rel(T, ref.ntk) <= 1e-13
    assert _rel(S, ref.nngp) <= 1e-13


@pytest.mark.parametrize("readout", ["gap", "flatten"])
def test_wide_windows_zero_pixels_and_both_angles(readout, monkeypatch):
    """5×5 and 4×2 windows (the one-pass window sums of 4 and 5 sources, their edges
    under SAME / VALID padding), a block of zero pixels (q = 0: the angle's pi/2
    convention), and float64's two ReLU angles: the division-free one from the inverse
    roots (full mode) and the atan2 agree with each other and with the reference."""
    from ntkfast import _conv_engine
    rng = np.random.default_rng(11)
    head = [nk.Conv((5, 5), w_std=1.3), nk.ReLU(),
            nk.Conv((4, 2), w_std=1.2, padding="VALID"), nk.LeakyReLU(0.2),
            nk.Conv((3, 5), w_std=1.1, b_std=0.2), nk.ReLU()]
    tail = [nk.GlobalAvgPool()] if readout == "gap" else [nk.Flatten()]
    net = nk.serial(*head, *tail, nk.Dense())
    X, Z = rng.standard_normal((3, 9, 7, 2)), rng.standard_normal((2, 9, 7, 2))
    X[0, :6, :5] = 0.0  # windows of zeros only: q = 0 pixels after the first Conv
    ref = net.kernels(X, Z, backend="reference")
    got = {}
    for fast in (True, False):
        monkeypatch.setattr(_conv_engine, "FAST_ANGLE", fast)
        got[fast] = net.kernels(X, Z, backend="compiled")
        assert _rel(got[fast].nngp, ref.nngp) <= 1e-12
        assert _rel(got[fast].ntk, ref.ntk) <= 1e-12
    assert _rel(got[True].ntk, got[False].ntk) <= 1e-13
    assert _rel(got[True].nngp, got[False].nngp) <= 1e-13
