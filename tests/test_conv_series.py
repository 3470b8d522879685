"""Series activations (Tanh, Softplus, Sigmoid, SiLU, Custom) in the compiled network
engine (src_ext/ntk_conv_series.h, ntkfast.backends.conv_series) against the NumPy
reference engine: random conv architectures, both readouts (Flatten: same-position
pixel pairs; pooling / GAP: all of them), strides and paddings, both
parameterizations and dtypes; near-parallel pairs (duplicates, scaled copies) through
the reference fallback; the certificate (too few terms change the route, not the
numbers); threads, tiles and table chunks."""

import math

import numpy as np
import pytest

from conftest import assert_fills_agree, fill_both
import ntkfast as nk
from ntkfast.backends import conv_series
from ntkfast.backends.compiled_network import CompiledNetworkEngine, unsupported_layer
from ntkfast.backends.reference_network import NetworkPlan


def _custom():
    def fn(u):
        return math.sin(u) + 0.5 * math.tanh(u)
    return nk.Custom(fn, name="sin_tanh")


SERIES = {"tanh": nk.Tanh, "softplus": nk.Softplus, "sigmoid": nk.Sigmoid,
          "silu": nk.SiLU, "custom": _custom}


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)


def _linear(rng, cls, **kw):
    std = rng.random() < 0.3
    b_std = None if rng.random() < 0.4 else float(rng.uniform(0.05, 0.5))
    return cls(**kw, w_std=float(rng.uniform(0.8, 1.8)), b_std=b_std,
               parameterization="standard" if std else "ntk", width=3)


def _conv(rng, size, same=False):
    k = tuple(int(rng.integers(1, 4)) for _ in size)
    pad = "SAME" if same else str(rng.choice(["SAME", "VALID", "CIRCULAR"]))
    if pad == "VALID" and any(kk > n for kk, n in zip(k, size)):
        pad = "SAME"
    s = None if same or rng.random() < 0.6 else tuple(int(rng.integers(1, 3)) for _ in size)
    layer = _linear(rng, nk.Conv, filter_shape=k, strides=s, padding=pad)
    return layer, layer.output_spatial(size, "")


def series_network(rng, act, size, pool):
    """A random conv network with the series activation ``act`` (a factory) after every
    conv, optionally a ReLU too, pooling (full mode) or a Flatten readout, a residual
    block now and then (the activation inside a branch)."""
    layers = []
    conv, size = _conv(rng, size)
    layers.append(conv)
    for depth in range(int(rng.integers(1, 3))):
        if rng.random() < 0.25:
            c, _ = _conv(rng, size, same=True)
            layers += [nk.FanOut(2), nk.parallel(nk.serial(act(), c), nk.Identity()),
                       nk.FanInSum()]
        layers.append(act() if rng.random() < 0.8 else nk.ReLU())
        if pool and rng.random() < 0.5 and min(size) >= 2:
            layers.append(nk.AvgPool((2,) * len(size), padding="SAME"))
            size = layers[-1].output_spatial(size, "")
        conv, size = _conv(rng, size)
        layers.append(conv)
    layers.append(act())
    layers.append(nk.GlobalAvgPool() if pool else nk.Flatten())
    layers.append(_linear(rng, nk.Dense))
    if rng.random() < 0.5:
        layers += [act(), _linear(rng, nk.Dense)]
    return nk.serial(*layers)


SHAPES = [(6, 5, 2), (5, 4, 3), (9, 2), (4, 7, 3)]
# (a Custom φ through the reference engine costs ~10x the built-ins: three of its cases)
CASES = [(name, seed) for name in SERIES for seed in range(3 if name == "custom" else 4)]


def _case(name, seed):
    rng = np.random.default_rng(1000 * seed + len(name))
    shape = SHAPES[seed % len(SHAPES)]
    net = series_network(rng, SERIES[name], shape[:-1], pool=seed % 2 == 1)
    X = rng.standard_normal((4,) + shape)
    Z = rng.standard_normal((3,) + shape)
    return net, X, Z


@pytest.mark.parametrize("name,seed", CASES)
def test_random_series_networks_match_reference(name, seed):
    net, X, Z = _case(name, seed)
    assert unsupported_layer(net) is None
    eng, _ = net._engine_and_spec(X.shape[1:], "auto")
    assert isinstance(eng, CompiledNetworkEngine)
    for args in ((X, Z), (X,)):
        ref = net.kernels(*args, backend="reference")
        got = net.kernels(*args, backend="compiled")
        assert _rel(got.nngp, ref.nngp) <= 1e-12, net
        assert _rel(got.ntk, ref.ntk) <= 1e-12, net
        got32 = net.kernels(*(a.astype(np.float32) for a in args), backend="compiled")
        assert got32.ntk.dtype == np.float32
        assert _rel(got32.nngp, ref.nngp) <= 3e-5, net
        assert _rel(got32.ntk, ref.ntk) <= 3e-5, net
    # K(X, X): exactly symmetric, its diagonal the self pass's (nngp_diag / ntk_diag)
    got = net.kernels(X, backend="compiled")
    for k, diag in ((got.nngp, net.nngp_diag(X)), (got.ntk, net.ntk_diag(X))):
        assert np.array_equal(k, k.T)
        assert np.array_equal(np.diag(k), diag)
    assert np.array_equal(net.nngp(X, backend="compiled"), got.nngp)


def _spy(monkeypatch):
    """The image pairs the compiled engine sends to the reference (``_precise``)."""
    sent = []
    orig = CompiledNetworkEngine._precise

    def spy(self, plan, X64, Z64, near, *args, **kw):
        sent.append(np.argwhere(near))
        return orig(self, plan, X64, Z64, near, *args, **kw)

    monkeypatch.setattr(CompiledNetworkEngine, "_precise", spy)
    return sent


def _near_parallel(rng, w_std, pool):
    """Duplicates and scaled copies: pixel pairs at |rho| -> 1 with a steep
    tanh(sqrt(q) .) (q ~ w_std^2)."""
    X = rng.standard_normal((4, 5, 5, 2))
    X[1] = X[0]                         # an exact copy
    X[2] = 1.5 * X[0]                   # a scaled copy (rho = 1, q differ)
    X[3] = X[0] + 1e-7 * rng.standard_normal(X[0].shape)
    readout = [nk.AvgPool((2, 2)), nk.GlobalAvgPool()] if pool else [nk.Flatten()]
    net = nk.serial(nk.Conv((3, 3), w_std=w_std), nk.Tanh(), nk.Conv((3, 3), w_std=w_std),
                    nk.Tanh(), *readout, nk.Dense())
    return net, X, np.concatenate([X[:1], 1.5 * X[:1]])


@pytest.mark.parametrize("pool", [False, True])
def test_near_parallel_pairs_take_the_long_tables(pool, monkeypatch):
    """q up to ~10 in both layers: pixel pairs at |rho| -> 1 that TERMS cannot certify
    but LONG_TERMS can (their image pairs went to the reference before the long tier,
    and do again without it); same numbers either way."""
    net, X, Z = _near_parallel(np.random.default_rng(7), 2.5, pool)
    sent = _spy(monkeypatch)
    got = net.kernels(X, backend="compiled")
    cross = net.kernels(X, Z, backend="compiled")
    assert not sent, "a pair went to the reference"
    monkeypatch.setattr(conv_series, "LONG_TERMS", 0)
    short = net.kernels(X, backend="compiled")
    assert sent, "TERMS certified every pair: the case does not test the long tier"
    ref = net.kernels(X, backend="reference")
    ref_cross = net.kernels(X, Z, backend="reference")
    for a, b in ((got, ref), (short, ref), (cross, ref_cross)):
        assert _rel(a.nngp, b.nngp) <= 1e-12
        assert _rel(a.ntk, b.ntk) <= 1e-12


def test_long_tier_tables_of_a_symmetric_block_are_built_once(monkeypatch):
    """The cross pass sizes its chunks by the terms each layer's tables take for these
    images (here < LONG_TERMS), not by LONG_TERMS everywhere: with a budget between the
    two, the symmetric block is one chunk and each layer's long tables are built once
    (the old estimate gave chunks of one row and one column: a rebuild per image
    pair); the numbers are the reference's."""
    from ntkfast.backends.compiled_network import _packed
    net, X, _ = _near_parallel(np.random.default_rng(7), 2.5, True)
    plan = NetworkPlan(net, X.shape[1:])
    eng = CompiledNetworkEngine()
    q = eng.variances(plan, X)
    prog = eng.program(plan)
    n = X.shape[0]
    tapes = _packed(q, n, np.float64)
    tight = n * conv_series._bytes_per_image(prog, 8, conv_series.LONG_TERMS, tapes)
    assert tight < conv_series.table_memory(prog, n, 8, conv_series.LONG_TERMS), \
        "the variances need all LONG_TERMS terms: the case does not test the estimate"
    from ntkfast import series
    for layer in prog.series:     # the bound from the range covers the exact length
        ql = tapes[:, layer.qoff:layer.qoff + layer.P]
        assert conv_series._terms_bound(layer, ql, conv_series.LONG_TERMS) >= \
            series.table_terms(layer.act.phi2, ql, conv_series.LONG_TERMS)
    # tanh has a parity: the minor lane is empty, and the lane-plan estimate (about
    # half the two-full-lanes bound) is still at least what an image's tables take
    est = conv_series._bytes_per_image(prog, 8, conv_series.LONG_TERMS, tapes, lanes=True)
    _, C, KT = conv_series.build_tables(prog, tapes, np.float64,
                                        terms=conv_series.LONG_TERMS)
    assert C[0].nbytes + KT[0].nbytes <= est < tight / n
    monkeypatch.setattr(conv_series, "TABLE_BUDGET", tight)
    monkeypatch.setattr(conv_series, "CACHE_BUDGET", 0)   # no tables from the self pass
    pairs = conv_series.PairTables(prog, tapes, tapes, True)
    assert pairs._chunk(np.float64, conv_series.LONG_TERMS, n) == n
    built = []
    orig = conv_series._layer_tables

    def spy(layer, q_, dtype, terms, jobs=1):
        built.append((layer.op, terms))
        return orig(layer, q_, dtype, terms, jobs)

    monkeypatch.setattr(conv_series, "_layer_tables", spy)
    S = np.empty((n, n))
    T = np.empty_like(S)
    eng.fill(plan, X, X, S, T, symmetric=True, n_jobs=1, qx=q, qz=q)
    long = [b for b in built if b[1] == conv_series.LONG_TERMS]
    assert long, "no pair needed the long tier: the case does not test it"
    assert len(long) == len(set(long)) == len(prog.series)
    ref = net.kernels(X, backend="reference")
    np.fill_diagonal(S, q.nngp)
    np.fill_diagonal(T, q.ntk)
    assert _rel(S, ref.nngp) <= 1e-12 and _rel(T, ref.ntk) <= 1e-12


@pytest.mark.parametrize("first", [6, None])
def test_cross_pass_starts_where_the_self_pass_ended(first, monkeypatch):
    """A self pass whose first tier fails most rows (6 terms) makes the cross pass of
    the same program start at the last tier (no first-tier tables built); one whose
    first tier certifies every row (the default 128) leaves it at the first.  Same
    numbers either way."""
    if first:
        monkeypatch.setattr(conv_series, "FIRST_TERMS", first)
    net, X, Z = _near_parallel(np.random.default_rng(7), 1.0, True)
    plan = NetworkPlan(net, X.shape[1:])
    eng = CompiledNetworkEngine()
    qx, qz = eng.variances(plan, X), eng.variances(plan, Z)
    prog = eng.program(plan)
    assert prog.series_skip == bool(first)
    built = []
    orig = conv_series._layer_tables

    def spy(layer, q_, dtype, terms, jobs=1):
        built.append(terms)
        return orig(layer, q_, dtype, terms, jobs)

    monkeypatch.setattr(conv_series, "_layer_tables", spy)
    monkeypatch.setattr(conv_series, "CACHE_BUDGET", 0)
    S = np.empty((X.shape[0], Z.shape[0]))
    T = np.empty_like(S)
    eng.fill(plan, X, Z, S, T, symmetric=False, n_jobs=1, qx=qx, qz=qz)
    assert built and (set(built) == {conv_series.LONG_TERMS} if first else
                      conv_series.FIRST_TERMS in built)
    ref = net.kernels(X, Z, backend="reference")
    assert _rel(S, ref.nngp) <= 1e-12 and _rel(T, ref.ntk) <= 1e-12


@pytest.mark.parametrize("first", [6, None])
def test_self_pass_probes_the_first_tier(first, monkeypatch):
    """The staged self pass runs the first tier on one row first: when it fails (6
    terms) the other rows skip that tier; when it passes (128) all rows take it (one
    set of tables, which the cross pass reuses).  The diagonals are the reference's
    either way."""
    if first:
        monkeypatch.setattr(conv_series, "FIRST_TERMS", first)
    net, X, _ = _near_parallel(np.random.default_rng(7), 1.0, True)
    calls = []
    orig = conv_series._run_self

    def spy(prog, X_, *args):
        calls.append((args[-1], X_.shape[0]))
        return orig(prog, X_, *args)

    monkeypatch.setattr(conv_series, "_run_self", spy)
    plan = NetworkPlan(net, X.shape[1:])
    q = CompiledNetworkEngine().variances(plan, X)
    n, tiers = X.shape[0], conv_series._tiers()
    if first:
        assert calls == [(first, 1), (tiers[-1], n)]
    else:
        assert calls == [(tiers[0], 1), (tiers[0], n)]
    ref = net.kernels(X, backend="reference")
    assert _rel(q.nngp, np.diag(ref.nngp)) <= 1e-12
    assert _rel(q.ntk, np.diag(ref.ntk)) <= 1e-12


@pytest.mark.parametrize("pool", [False, True])
def test_near_parallel_pairs_beyond_the_tables_go_through_the_reference(pool, monkeypatch):
    """q ~ 40: tanh(sqrt(q) .) needs more than LONG_TERMS terms at rho -> 1; those
    image pairs take the reference's route."""
    net, X, Z = _near_parallel(np.random.default_rng(7), 6.0, pool)
    sent = _spy(monkeypatch)
    got = net.kernels(X, backend="compiled")
    assert sent, "no pair was sent to the reference"
    ref = net.kernels(X, backend="reference")
    assert _rel(got.nngp, ref.nngp) <= 1e-12
    assert _rel(got.ntk, ref.ntk) <= 1e-12
    got = net.kernels(X, Z, backend="compiled")
    ref = net.kernels(X, Z, backend="reference")
    assert _rel(got.ntk, ref.ntk) <= 1e-12


@pytest.mark.parametrize("pool", [False, True])
def test_too_few_terms_change_the_route_not_the_numbers(pool, monkeypatch):
    """With tables of 6 terms most pixel pairs cannot be certified: the pairs go to the
    reference and the kernels stay the reference's.  (Skipping the certificate, the
    6-term sums would be off by far more than 1e-12.)"""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((4, 5, 4, 2)) + 0.5     # correlated images: larger |rho|
    readout = [nk.GlobalAvgPool()] if pool else [nk.Flatten()]
    net = nk.serial(nk.Conv((2, 2), w_std=1.5, b_std=0.2), nk.Tanh(), nk.Conv((3, 3)),
                    nk.SiLU(), *readout, nk.Dense())
    ref = net.kernels(X, backend="reference")
    sent = _spy(monkeypatch)
    full = net.kernels(X, backend="compiled")
    routed = sum(len(s) for s in sent)
    monkeypatch.setattr(conv_series, "TERMS", 6)
    monkeypatch.setattr(conv_series, "LONG_TERMS", 0)
    del sent[:]
    few = net.kernels(X, backend="compiled")
    assert sum(len(s) for s in sent) > routed
    # 6-term first tables, then the other tiers for what they leave: the route of `full`
    monkeypatch.undo()
    sent = _spy(monkeypatch)
    monkeypatch.setattr(conv_series, "FIRST_TERMS", 6)
    tiered = net.kernels(X, backend="compiled")
    assert sum(len(s) for s in sent) == routed
    for got in (full, few, tiered):
        assert _rel(got.nngp, ref.nngp) <= 1e-12
        assert _rel(got.ntk, ref.ntk) <= 1e-12


def test_threads_tiles_and_table_chunks_do_not_change_results(monkeypatch):
    net, X, Z = _case("silu", 1)
    plan = NetworkPlan(net, X.shape[1:])
    eng = CompiledNetworkEngine()
    qx, qz = eng.variances(plan, X), eng.variances(plan, Z)
    results = []
    for tile, jobs, budget in ((None, 1, None), (1, 2, None), (2, 2, 1), (3, 1, 1)):
        if budget:  # one image's tables per chunk
            monkeypatch.setattr(conv_series, "TABLE_BUDGET", budget)
            monkeypatch.setattr(conv_series, "SAVE_BUDGET", budget)
        q2 = CompiledNetworkEngine(n_jobs=jobs).variances(plan, X)
        assert np.array_equal(q2.nngp, qx.nngp) and np.array_equal(q2.ntk, qx.ntk)
        results += fill_both(eng, plan, X, Z, qx, qz, tile, jobs)
    assert_fills_agree(results)


def test_activation_in_a_live_branch_uses_the_reference_self_pass():
    """A series activation while another branch is alive: the staged self pass stores
    one slot, so the self pass is the reference's; the cross pass stays compiled."""
    net = nk.serial(nk.Conv((3, 3), b_std=0.1), nk.FanOut(2),
                    nk.parallel(nk.serial(nk.Tanh(), nk.Conv((3, 3))), nk.Identity()),
                    nk.FanInSum(), nk.Softplus(), nk.GlobalAvgPool(), nk.Dense())
    X = np.random.default_rng(5).standard_normal((3, 4, 4, 2))
    plan = NetworkPlan(net, X.shape[1:])
    prog = CompiledNetworkEngine().program(plan)
    assert not conv_series.staged(prog)
    got = net.kernels(X, backend="compiled")
    ref = net.kernels(X, backend="reference")
    assert _rel(got.ntk, ref.ntk) <= 1e-12
    assert _rel(got.nngp, ref.nngp) <= 1e-12


def test_quadrature_and_kinked_activations_stay_in_the_reference():
    net = nk.serial(nk.Conv((3,)), nk.Tanh(degree=40), nk.Flatten(), nk.Dense())
    assert unsupported_layer(net) is not None
    kinked = nk.Custom(lambda u: abs(u), kink=True, name="abs")
    assert unsupported_layer(nk.serial(nk.Conv((3,)), kinked, nk.Flatten(),
                                       nk.Dense())) is not None


# Rows of 19 pixels: two full blocks of 8 doubles and a tail (one of 16 floats and a
# tail) in ntk_conv_series.h; a correlated band makes the blocks' largest |rho|, so
# their terms, differ.
WIDE = [("tanh", True), ("softplus", False), ("silu", True), ("sigmoid", False)]


def _wide(name, pool, seed=11):
    rng = np.random.default_rng(seed + len(name))
    X = rng.standard_normal((3, 2, 19, 2))
    X[1, :, 8:16] = X[0, :, 8:16] + 0.05 * rng.standard_normal((2, 8, 2))
    Z = rng.standard_normal((2, 2, 19, 2))
    readout = [nk.GlobalAvgPool()] if pool else [nk.Flatten()]
    net = nk.serial(nk.Conv((2, 3), w_std=1.4, b_std=0.1), SERIES[name](),
                    nk.Conv((1, 3), w_std=1.2), SERIES[name](), *readout, nk.Dense())
    return net, X, Z


@pytest.mark.parametrize("name,pool", WIDE)
def test_wide_rows_per_block_terms_match_reference(name, pool):
    """Full lane blocks with terms of their own (per-block K, Horner chains split in
    r^4) and tails, float64 and float32, against the reference."""
    net, X, Z = _wide(name, pool)
    for args in ((X, Z), (X,)):
        ref = net.kernels(*args, backend="reference")
        got = net.kernels(*args, backend="compiled")
        assert _rel(got.nngp, ref.nngp) <= 1e-12
        assert _rel(got.ntk, ref.ntk) <= 1e-12
        got32 = net.kernels(*(a.astype(np.float32) for a in args), backend="compiled")
        assert _rel(got32.nngp, ref.nngp) <= 3e-5
        assert _rel(got32.ntk, ref.ntk) <= 3e-5
    got = net.kernels(X, backend="compiled")
    assert np.array_equal(np.diag(got.ntk), net.ntk_diag(X))


@pytest.mark.parametrize("pool", [False, True])
def test_wide_rows_too_few_terms_change_the_route_not_the_numbers(pool, monkeypatch):
    """8-term tables: in full blocks too, lanes no table certifies flag their pair (the
    per-lane fallback of a block), which the reference recomputes."""
    net, X, Z = _wide("tanh", pool)
    ref = net.kernels(X, Z, backend="reference")
    sent = _spy(monkeypatch)
    monkeypatch.setattr(conv_series, "TERMS", 8)
    monkeypatch.setattr(conv_series, "LONG_TERMS", 0)
    got = net.kernels(X, Z, backend="compiled")
    assert sent and sum(len(s) for s in sent) < X.shape[0] * Z.shape[0] + X.shape[0]
    assert _rel(got.nngp, ref.nngp) <= 1e-12
    assert _rel(got.ntk, ref.ntk) <= 1e-12


def test_entry_stride_pads_to_an_odd_number_of_lines(monkeypatch):
    for itemsize in (4, 8):
        per = 64 // itemsize
        for P in list(range(1, 70)) + [256, 1024, 4096]:
            s = conv_series.entry_stride(P, itemsize)
            assert s >= P and s % per == 0 and (s // per) % 2 == 1 and s - P < 2 * per
    # the stride is the layout's, not the numbers': unpadded or oddly padded tables
    # (op->spl read by the C) give the same bits
    net, X, Z = _wide("silu", True)
    base = net.kernels(X, Z, backend="compiled")
    for stride in (lambda P, itemsize: P, lambda P, itemsize: P + 5):
        monkeypatch.setattr(conv_series, "entry_stride", stride)
        got = net.kernels(X, Z, backend="compiled")
        assert np.array_equal(got.nngp, base.nngp) and np.array_equal(got.ntk, base.ntk)


def _sym_fill(eng, plan, A):
    q = eng.variances(plan, A)
    S = np.empty((A.shape[0],) * 2)
    T = np.empty_like(S)
    eng.fill(plan, A, A, S, T, symmetric=True, n_jobs=1, qx=q, qz=q)
    return S, T


def test_tables_kept_between_passes_are_the_ones_a_rebuild_gives(monkeypatch):
    """The self pass's tables serve the cross pass of the same rows (cache hits), with
    the bits of tables built afresh; other rows (other variances) miss the cache."""
    net, X, _ = _wide("tanh", True)
    plan = NetworkPlan(net, X.shape[1:])
    eng = CompiledNetworkEngine()
    S1, T1 = _sym_fill(eng, plan, X)
    cache = conv_series.table_cache(eng.program(plan))
    assert cache.hits >= len(eng.program(plan).series) and cache.nbytes > 0
    X2 = X + 0.1
    S2, T2 = _sym_fill(eng, plan, X2)       # warm cache, other images
    monkeypatch.setattr(conv_series, "CACHE_BUDGET", 0)   # nothing kept: rebuilt
    for A, S, T in ((X, S1, T1), (X2, S2, T2)):
        fresh = CompiledNetworkEngine()
        Sf, Tf = _sym_fill(fresh, plan, A)
        assert conv_series.table_cache(fresh.program(plan)).nbytes == 0
        assert np.array_equal(S, Sf) and np.array_equal(T, Tf)


def test_table_cache_keys_and_budget():
    layer = conv_series.SeriesLayer(3, None, 0, 4, True)
    q = np.arange(8.0).reshape(2, 4)
    q2 = q.copy()
    q2[1, 3] = np.nextafter(q2[1, 3], 10)
    key = conv_series.TableCache.key
    assert key(layer, 128, np.float64, q) == key(layer, 128, np.float64, q.copy())
    for other in (key(layer, 128, np.float64, q2), key(layer, 256, np.float64, q),
                  key(layer, 128, np.float32, q)):
        assert other != key(layer, 128, np.float64, q)
    value = (np.zeros(100), np.zeros(28, np.int16))     # 856 bytes
    cache = conv_series.TableCache(2000)
    built = []

    def build(tag):
        built.append(tag)
        return value

    assert cache.get("a", lambda: build("a")) is value
    assert cache.get("a", lambda: build("a again")) is value and built == ["a"]
    cache.get("b", lambda: build("b"))
    cache.get("c", lambda: build("c"))                  # over budget: "a" goes
    assert list(cache.items) == ["b", "c"] and cache.nbytes == 2 * 856
    cache.get("a", lambda: build("a"))
    assert built == ["a", "b", "c", "a"]


@pytest.mark.parametrize("act", [nk.Tanh, nk.Softplus], ids=["tanh", "softplus"])
@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_zero_variance_pixels(act, parameterization):
    """Pixels whose variance is 0 (a zero region of the image, no bias): the kernels
    take Ė = b'_0 b'_0 there (f'(ρ)/√(qx qz) has no value at q = 0).  Θ's previous
    layer is not 0 at those pixels in the standard parameterization with b_std = 0
    (it adds 1), so a wrong Ė shows; the numbers are the reference's."""
    rng = np.random.default_rng(11)
    X = rng.standard_normal((3, 6, 6, 2))
    X[:, :3] = 0.0                       # the top half of every image: q = 0 windows
    X[1] = 0.0                           # and one image all zero
    kw = dict(b_std=0.0, parameterization=parameterization, width=8)
    net = nk.serial(nk.Conv((2, 2), **kw), act(), nk.Conv((2, 2), **kw), act(),
                    nk.GlobalAvgPool(), nk.Dense(**kw))
    ref = net.kernels(X, backend="reference")
    got = net.kernels(X, backend="compiled")
    assert _rel(got.nngp, ref.nngp) <= 1e-12
    assert _rel(got.ntk, ref.ntk) <= 1e-12
