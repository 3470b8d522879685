"""The compiled engine against the plain NumPy oracle on random problems."""

import itertools

import numpy as np
import pytest

import ntkfast as nk
from conftest import ALL_ACTIVATIONS, requires_compiled

pytestmark = requires_compiled

TOL = {np.float64: 1e-12, np.float32: 2e-5}


def rel_err(a, b):
    """Max elementwise error relative to the matrix scale (max |b|)."""
    return np.max(np.abs(a.astype(np.float64) - b)) / np.max(np.abs(b))


@pytest.mark.parametrize("act", ALL_ACTIVATIONS, ids=repr)
@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_random_shapes_all_activations(act, parameterization, rng):
    for trial in range(3):
        n, m, d = rng.integers(1, 90), rng.integers(1, 70), rng.integers(1, 40)
        depth = int(rng.integers(0, 11))
        b_std = [None, 0.0, float(rng.uniform(0.05, 1.0))][trial]
        net = nk.MLP(depth=depth, activation=act, w_std=float(rng.uniform(0.5, 1.8)),
                     b_std=b_std, parameterization=parameterization, width=64)
        X = rng.standard_normal((n, d)) * rng.uniform(0.2, 3.0)
        Z = rng.standard_normal((m, d))
        ref = net.kernels(X, Z, backend="reference")
        ref_sym = net.kernels(X, backend="reference")
        for dtype in (np.float64, np.float32):
            for tile in (7, 32, None):
                got = net.kernels(X, Z, dtype=dtype, tile=tile, backend="compiled")
                assert got.nngp.dtype == dtype
                assert rel_err(got.nngp, ref.nngp) < TOL[dtype]
                assert rel_err(got.ntk, ref.ntk) < TOL[dtype]
                sym = net.kernels(X, dtype=dtype, tile=tile, backend="compiled")
                assert rel_err(sym.nngp, ref_sym.nngp) < TOL[dtype]
                assert rel_err(sym.ntk, ref_sym.ntk) < TOL[dtype]


@pytest.mark.parametrize("depth", [0, 1, 2, 5, 10])
def test_depths_elementwise_relative(depth, rng):
    """Elementwise relative error (not only relative to the max)."""
    X = rng.standard_normal((60, 9)) + 0.3
    for act in ALL_ACTIVATIONS:
        net = nk.MLP(depth=depth, activation=act, w_std=1.2, b_std=0.2)
        ref = net.kernels(X, backend="reference")
        got = net.kernels(X, backend="compiled", tile=16)
        for a, b in ((got.nngp, ref.nngp), (got.ntk, ref.ntk)):
            scale = np.maximum(np.abs(b), 1e-3 * np.abs(b).max())
            assert np.max(np.abs(a - b) / scale) < 1e-11, act


def test_symmetric_exact_and_diagonal_matches_diag(rng):
    X = rng.standard_normal((301, 17))
    for act in ALL_ACTIVATIONS:
        net = nk.MLP(depth=3, activation=act, b_std=0.1)
        for dtype in (np.float32, np.float64):
            k = net.kernels(X, dtype=dtype, tile=64)
            assert np.array_equal(k.ntk, k.ntk.T) and np.array_equal(k.nngp, k.nngp.T)
            assert np.array_equal(np.diag(k.ntk), net.ntk_diag(X, dtype=dtype))
            assert np.array_equal(np.diag(k.nngp), net.nngp_diag(X, dtype=dtype))


def test_thread_and_tile_independence(rng):
    """The per-element work is deterministic; only the GEMM blocking can change bits."""
    X = rng.standard_normal((257, 30))
    net = nk.MLP(depth=4, activation="relu", b_std=0.3)
    base = net.ntk(X, n_jobs=1, tile=64)
    for n_jobs, tile in itertools.product((1, 2), (16, 64, 100, 512)):
        other = net.ntk(X, n_jobs=n_jobs, tile=tile)
        np.testing.assert_allclose(other, base, rtol=1e-13, atol=0)
    assert np.array_equal(net.ntk(X, n_jobs=2, tile=64), base)


def test_single_kernel_methods_match_kernels(rng):
    X, Z = rng.standard_normal((40, 5)), rng.standard_normal((30, 5))
    net = nk.MLP(depth=2, activation="erf", b_std=0.5)
    k = net.kernels(X, Z)
    assert np.array_equal(net.nngp(X, Z), k.nngp)
    assert np.array_equal(net.ntk(X, Z), k.ntk)


def test_out_array_filled_in_place(rng):
    X = rng.standard_normal((50, 4))
    net = nk.MLP(depth=2)
    out = np.full((50, 50), np.nan)
    res = net.ntk(X, out=out)
    assert res is out and np.all(np.isfinite(out))
    np.testing.assert_allclose(out, net.ntk(X, backend="reference"), rtol=1e-12)
    big = np.zeros((50, 80))
    view = big[:, 10:60]  # rows with a larger stride still work
    net.ntk(X, out=view)
    np.testing.assert_allclose(view, out, rtol=0, atol=0)
    assert np.all(big[:, :10] == 0) and np.all(big[:, 60:] == 0)


def test_concurrent_calls_restore_blas_threads(rng):
    """Kernel calls from several Python threads give the same results and leave the
    BLAS thread count as it was (the limits are reference-counted)."""
    import threading

    from threadpoolctl import threadpool_info

    def blas_threads():
        return sorted(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")

    before = blas_threads()
    X = rng.standard_normal((300, 20))
    net = nk.MLP(depth=3, b_std=0.1)
    ref = net.ntk(X)
    results = [None] * 6

    def work(k):
        results[k] = net.ntk(X)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(r, ref) for r in results)
    assert blas_threads() == before


@requires_compiled
@pytest.mark.parametrize("tile, panel", [(16, 16), (32, 96), (256, 2048), (512, 512)])
def test_compiled_work_item_shapes(tile, panel, rng):
    """Work items narrower than the engine's column chunk, panels that are not a
    multiple of the tile, and wide ones all give the reference kernels."""
    from ntkfast import _engine
    from ntkfast.backends.compiled import _roots, engine_params
    from ntkfast.backends.reference import layer_variances

    net = nk.MLP(depth=3, activation="relu", w_std=1.3, b_std=0.2)
    X, Z = rng.standard_normal((300, 9)), rng.standard_normal((170, 9))
    spec = net._spec(9)
    qx, qz = layer_variances(spec, X), layer_variances(spec, Z)
    params = engine_params(spec, 9, np.float64)
    for A, B, qa, qb, sym in ((X, Z, qx, qz, False), (X, X, qx, qx, True)):
        S = np.full((len(A), len(B)), np.nan)
        T = np.full((len(A), len(B)), np.nan)
        _engine.fill_tiles(params, A, B, qa, _roots(qa, np.float64), qb,
                           _roots(qb, np.float64), S, T, True, True, sym, tile, 2, panel)
        ref = net.kernels(A, None if sym else B, backend="reference")
        off = ~np.eye(len(A), len(B), dtype=bool) if sym else np.ones(S.shape, bool)
        assert rel_err(S[off], ref.nngp[off]) < 1e-13
        assert rel_err(T[off], ref.ntk[off]) < 1e-13
