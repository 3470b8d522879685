"""kernels_multi's outputs: the mirror of K(X, X), symmetrize=False (upper triangles)
and out= (reused arrays).

The mirrored lower triangle is checked against entries computed directly (the engine's
rectangular pass K(X, Z) with Z = X, where every (i, j) is its own work, and separate
single-kernel runs), over several panels per row tile and ragged edges, so that a
missing, shifted or half-written mirror block fails; the upper triangle of
symmetrize=False against np.triu of the full result (same code path: bitwise)."""

import numpy as np
import pytest

import ntkfast as nk
from conftest import requires_compiled
from ntkfast.multidepth import MultiKernels, kernels_multi
from test_multidepth import normwise

DEPTHS, KS = [1, 2, 4], [0, 1, 2]


def _inputs(rng, n, d=6):
    X = rng.normal(size=(n, d))
    X[5] = X[2]                       # duplicate
    X[7] = X[3] + 1e-7 * rng.normal(size=d)   # near-parallel
    return X


def _arrays(mk):
    return [a for kern in mk.values() for a in kern if a is not None]


def _at_isa(level):
    """Context: the compiled tile kernel at ``level`` (skip where unavailable)."""
    import contextlib

    from ntkfast.backends import compiled

    @contextlib.contextmanager
    def ctx():
        if level not in compiled.isa_levels():
            pytest.skip(f"{level} not available here ({compiled.isa_levels()})")
        previous = compiled.set_isa(level)
        try:
            yield
        finally:
            compiled.set_isa(previous)
    return ctx()


@requires_compiled
@pytest.mark.parametrize("isa", ["baseline", "x86-64-v3", "x86-64-v4"])
# (200, 16, 48), (96, 32, 64), (64, 64, 64): rows of 64-byte multiples, the mirror's
# streamed whole-line path (x86-64-v3/v4); the others its plain stores
@pytest.mark.parametrize("n, tile, panel", [(203, 16, 48), (130, 7, 21), (200, 16, 48),
                                            (96, 32, 64), (64, 64, 64)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_engine_mirror_equals_direct_entries(n, tile, panel, dtype, isa, rng):
    """fill_tiles_multi(symmetric) with panels narrower than a row: every mirrored
    entry against the rectangular pass (each entry computed, none mirrored), into
    64-byte aligned outputs (as kernels_multi allocates them)."""
    from ntkfast.multidepth import _aligned
    from ntkfast import _engine
    from ntkfast._spec import RecursionSpec
    from ntkfast.backends.compiled import _roots, engine_params
    from ntkfast.backends.reference import layer_variances
    net = nk.MLP(depth=3, b_std=0.3)
    X = _inputs(rng, n)
    spec = RecursionSpec.build(net.activation, 3, net.w_std, net.b_std, "ntk", None, 6)
    q = layer_variances(spec, X)
    r = _roots(q, dtype)
    Xd, qd = X.astype(dtype), q.astype(dtype)
    args = (engine_params(spec, 6, dtype), Xd, Xd.copy(), qd, r, qd, r)
    # Σ and Θ after layers 1 and 3, k = 0 and 1
    s_slot, t_slot = [-1, 0, -1, 1], [-1, -1, 2, 3, -1, -1, 4, 5]
    sym = [_aligned((n, n), dtype) for _ in range(6)]
    for a in sym:
        a.fill(np.nan)
    rect = [np.full((n, n), np.nan, dtype=dtype) for _ in range(6)]
    with _at_isa(isa):
        _engine.fill_tiles_multi(*args, sym, s_slot, t_slot, [0, 1], True, tile, 2, panel)
        _engine.fill_tiles_multi(*args, rect, s_slot, t_slot, [0, 1], False, tile, 2, panel)
    off = ~np.eye(n, dtype=bool)      # the caller overwrites the diagonal
    for a, b in zip(sym, rect):
        assert np.array_equal(a[off], a.T[off])           # exactly symmetric
        assert not np.isnan(a[off]).any()                 # every entry written
        tol = 1e-13 if dtype == np.float64 else 1e-5
        assert normwise(np.where(off, a, 0), np.where(off, b, 0)) <= tol


@requires_compiled
def test_engine_without_mirror_leaves_the_lower_triangle(rng):
    from ntkfast import _engine
    from ntkfast._spec import RecursionSpec
    from ntkfast.backends.compiled import _roots, engine_params
    from ntkfast.backends.reference import layer_variances
    net = nk.MLP(depth=2)
    n = 75
    X = _inputs(rng, n)
    spec = RecursionSpec.build(net.activation, 2, net.w_std, net.b_std, "ntk", None, 6)
    q = layer_variances(spec, X)
    r = _roots(q, np.float64)
    args = (engine_params(spec, 6, np.float64), X, X, q, r, q, r)
    full, upper = np.empty((n, n)), np.full((n, n), -7.0)
    _engine.fill_tiles_multi(*args, [full], [-1, -1, -1], [-1, -1, 0], [0], True, 8, 2, 16)
    _engine.fill_tiles_multi(*args, [upper], [-1, -1, -1], [-1, -1, 0], [0], True, 8, 2, 16,
                             False)
    below = np.tril(np.ones((n, n), dtype=bool), -1)
    assert np.all(upper[below] == -7.0)
    assert np.array_equal(upper[~below], full[~below])


@pytest.mark.parametrize("backend", [pytest.param("compiled", marks=requires_compiled),
                                     "numpy"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_full_matrices_are_symmetric_and_equal_single_runs(backend, dtype, rng):
    X = _inputs(rng, 150)
    net = nk.MLP(depth=4, b_std=0.1)
    mk = kernels_multi(net, X, depths=DEPTHS, frozen_layers=KS, tile=16, n_jobs=2,
                       dtype=dtype, backend=backend)
    assert mk.symmetrized
    tol = 1e-12 if dtype == np.float64 else 1e-5
    for (d, k), kern in mk.items():
        for a in kern:
            assert a.dtype == dtype and np.array_equal(a, a.T), (d, k)
        if k == 0:
            single = nk.MLP(depth=d, b_std=0.1).kernels(X, dtype=dtype)
            lower = np.tril_indices(X.shape[0], -1)   # the mirrored half
            assert normwise(kern.ntk[lower], single.ntk[lower]) <= tol, d
            assert normwise(kern.nngp[lower], single.nngp[lower]) <= tol, d


@pytest.mark.parametrize("backend", [pytest.param("compiled", marks=requires_compiled),
                                     "numpy"])
@pytest.mark.parametrize("get", ["both", "ntk"])
@pytest.mark.parametrize("n", [133, 400])     # 400: outputs > 1 MiB, memory maps
def test_symmetrize_false_gives_the_upper_triangle(backend, get, n, rng):
    X = _inputs(rng, n)
    net = nk.MLP(depth=4, b_std=0.1)
    full = kernels_multi(net, X, depths=DEPTHS, frozen_layers=KS, tile=16, get=get,
                         backend=backend)
    up = kernels_multi(net, X, depths=DEPTHS, frozen_layers=KS, tile=16, get=get,
                       backend=backend, symmetrize=False)
    assert not up.symmetrized and sorted(up) == sorted(full)
    for key in full:
        for a, b in zip(full[key], up[key]):
            assert (a is None) == (b is None)
            if a is not None:
                np.testing.assert_array_equal(b, np.triu(a))
                assert b.flags.writeable and b.flags.c_contiguous
        if get == "both":
            assert up[key].nngp is up.nngp(key[0])


@requires_compiled
@pytest.mark.parametrize("symmetrize", [True, False])
def test_thread_count_does_not_change_results(symmetrize, rng):
    X = _inputs(rng, 176)     # rows of whole cache lines: the streamed mirror
    net = nk.MLP(depth=3, b_std=0.2)
    a = kernels_multi(net, X, depths=[1, 3], frozen_layers=[0, 1], tile=16, n_jobs=1,
                      symmetrize=symmetrize)
    b = kernels_multi(net, X, depths=[1, 3], frozen_layers=[0, 1], tile=16, n_jobs=2,
                      symmetrize=symmetrize)
    for x, y in zip(_arrays(a), _arrays(b)):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("backend", [pytest.param("compiled", marks=requires_compiled),
                                     "numpy"])
def test_out_reuses_the_arrays(backend, rng):
    X = _inputs(rng, 90)
    Z = rng.normal(size=(31, 6))
    net = nk.MLP(depth=3, b_std=0.1)
    kw = dict(depths=[1, 3], frozen_layers=[0, 1], tile=16, backend=backend)
    fresh = kernels_multi(net, X, **kw)
    buf = kernels_multi(net, X[::-1].copy(), **kw)        # other values, same shapes
    again = kernels_multi(net, X, out=buf, **kw)
    assert isinstance(again, MultiKernels)
    for key in fresh:
        for a, b, c in zip(fresh[key], buf[key], again[key]):
            assert c is b
            np.testing.assert_array_equal(c, a)
    # an upper-triangle pass into them leaves the lower triangle, a full one fills it
    up = kernels_multi(net, X[::-1].copy(), out=buf, symmetrize=False, **kw)
    assert not up.symmetrized
    kernels_multi(net, X, out=buf, **kw)
    for x, y in zip(_arrays(fresh), _arrays(buf)):
        np.testing.assert_array_equal(x, y)
    cross = kernels_multi(net, X, Z, **kw)
    cross2 = kernels_multi(net, X, Z, out=kernels_multi(net, X + 1, Z, **kw), **kw)
    for x, y in zip(_arrays(cross), _arrays(cross2)):
        np.testing.assert_array_equal(x, y)


def test_fresh_outputs_are_cache_line_aligned(rng):
    mk = kernels_multi(nk.MLP(depth=2), rng.normal(size=(37, 3)), frozen_layers=[0, 1])
    for a in _arrays(mk):
        assert a.ctypes.data % 64 == 0 and a.flags.c_contiguous and a.flags.writeable


def test_bad_out_and_symmetrize(rng):
    X = rng.normal(size=(20, 3))
    net = nk.MLP(depth=2)
    kw = dict(depths=[1, 2], frozen_layers=[0, 1], backend="numpy")
    good = kernels_multi(net, X, **kw)
    with pytest.raises(ValueError, match="symmetrize=False: only for K"):
        kernels_multi(net, X, X, symmetrize=False, **kw)
    with pytest.raises(TypeError, match="symmetrize"):
        kernels_multi(net, X, symmetrize="no", **kw)
    with pytest.raises(TypeError, match="out: expected the MultiKernels"):
        kernels_multi(net, X, out=[good], **kw)
    with pytest.raises(ValueError, match="out: has the"):
        kernels_multi(net, X, depths=[2], out=good)
    with pytest.raises(ValueError, match="dtype"):
        kernels_multi(net, X, dtype=np.float32, out=good, **kw)
    with pytest.raises(ValueError, match="shape"):
        kernels_multi(net, X[:10], out=good, **kw)
    with pytest.raises(ValueError, match="missing"):
        kernels_multi(net, X, get="both", out=kernels_multi(net, X, get="ntk", **kw), **kw)
    with pytest.raises(ValueError, match="given"):
        kernels_multi(net, X, get="ntk", out=good, **kw)
    shared = MultiKernels(good)
    shared[(2, 1)] = nk.Kernels(good[(2, 1)].nngp, good[(2, 0)].ntk)
    with pytest.raises(ValueError, match="its own array"):
        kernels_multi(net, X, out=shared, **kw)
    split = MultiKernels(good)
    split[(2, 1)] = nk.Kernels(good[(2, 1)].nngp.copy(), good[(2, 1)].ntk)
    with pytest.raises(ValueError, match="share one nngp"):
        kernels_multi(net, X, out=split, **kw)
    ro = MultiKernels(good)
    arr = good[(1, 0)].ntk.copy()
    arr.flags.writeable = False
    ro[(1, 0)] = nk.Kernels(good[(1, 0)].nngp, arr)
    with pytest.raises(ValueError, match="writeable"):
        kernels_multi(net, X, out=ro, **kw)
    big = np.empty((40, 20))
    over = MultiKernels(good)
    over[(1, 0)] = nk.Kernels(good[(1, 0)].nngp, big[:20])
    over[(1, 1)] = nk.Kernels(good[(1, 1)].nngp, big[10:30])
    with pytest.raises(ValueError, match="overlap"):
        kernels_multi(net, X, out=over, **kw)
