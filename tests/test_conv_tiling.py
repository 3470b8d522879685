"""The tiling layer (in RAM and out of core) and Dask drive the compiled conv engine
(issue 19, item 4): its self pass and its fill run, and the blocks they assemble equal
one K(X, X) of the compiled engine (≤ 1e-13 of the scale; the pairs are computed by
the same code whatever the block)."""

import numpy as np
import pytest

import ntkfast as nk
from ntkfast.backends import engine_and_spec
from ntkfast.backends.compiled_network import CompiledNetworkEngine

CNN = nk.serial(nk.Conv((3, 3), w_std=1.4, b_std=0.1), nk.ReLU(), nk.AvgPool((2, 2)),
                nk.Conv((3, 2), padding="VALID"), nk.GELU(), nk.GlobalAvgPool(),
                nk.Dense(b_std=0.1))
FLAT = nk.serial(nk.Conv((3, 3), w_std=1.4, b_std=0.1), nk.ReLU(), nk.Conv((1, 3)),
                 nk.ReLU(), nk.Flatten(), nk.Dense())


@pytest.fixture
def calls(monkeypatch):
    """Counts of the compiled engine's self passes and fills."""
    count = {"variances": 0, "fill": 0}
    for name in count:
        orig = getattr(CompiledNetworkEngine, name)

        def spy(self, *a, _orig=orig, _name=name, **kw):
            count[_name] += 1
            return _orig(self, *a, **kw)
        monkeypatch.setattr(CompiledNetworkEngine, name, spy)
    return count


def _rel(a, b):
    return np.max(np.abs(np.asarray(a) - b)) / np.max(np.abs(b))


def _data(seed, n, shape=(7, 6, 2)):
    return np.random.default_rng(seed).standard_normal((n,) + shape)


def test_auto_engine_is_compiled():
    engine, _ = engine_and_spec(CNN, (7, 6, 2), "auto", 2)
    assert isinstance(engine, CompiledNetworkEngine) and engine.n_jobs == 2


@pytest.mark.parametrize("net", [CNN, FLAT], ids=["pooling", "flatten"])
def test_tiles_in_ram_and_out_of_core(net, calls, tmp_path):
    X, Z = _data(0, 9), _data(1, 5)
    whole = net.kernels(X, backend="compiled")
    assert calls["variances"] >= 1 and calls["fill"] >= 1
    for tile in (2, 4):
        t = net.kernels(X, tile=tile, n_jobs=2)
        assert _rel(t.ntk, whole.ntk) <= 1e-13 and _rel(t.nngp, whole.nngp) <= 1e-13
        assert np.array_equal(t.ntk, t.ntk.T)
        assert np.array_equal(np.diag(t.ntk), net.ntk_diag(X))
    path = str(tmp_path / "K.npy")
    K = net.ntk(X, out=path, tile=3)
    assert _rel(np.load(path), whole.ntk) <= 1e-13 and np.array_equal(np.asarray(K),
                                                                      np.load(path))
    cross = net.kernels(X, Z, tile=3)
    ref = net.kernels(X, Z, backend="reference")
    assert _rel(cross.ntk, ref.ntk) <= 1e-12


def test_dask_blocks(calls):
    pytest.importorskip("dask")
    from ntkfast.distributed import gram_dask
    X = _data(2, 11)
    before = dict(calls)
    K = gram_dask(CNN, X, kind="ntk", chunks=4).compute(scheduler="sync")
    assert calls["variances"] > before["variances"] and calls["fill"] > before["fill"]
    assert np.array_equal(K, K.T)
    assert _rel(K, CNN.ntk(X)) <= 1e-13


def test_self_pass_in_chunks(monkeypatch):
    """The self pass runs rows in chunks (memory maps): the same bits as one chunk,
    tiny rows (rescaled by 2^k) included."""
    from ntkfast.backends import compiled_network as CN
    from ntkfast.backends.reference_network import NetworkPlan
    net = nk.serial(nk.Conv((3, 3), w_std=1.4), nk.ReLU(), nk.AvgPool((2, 2)),
                    nk.Conv((3, 3)), nk.ReLU(), nk.GlobalAvgPool(), nk.Dense())
    X = _data(3, 7)
    X[4] *= 1e-120  # a tiny row: rescaled exactly
    plan = NetworkPlan(net, X.shape[1:])
    whole = CompiledNetworkEngine().variances(plan, X)
    monkeypatch.setattr(CN, "SELF_CHUNK", 3)
    parts = CompiledNetworkEngine(n_jobs=2).variances(plan, X)
    assert np.array_equal(parts.nngp, whole.nngp) and np.array_equal(parts.ntk, whole.ntk)
    assert all(np.array_equal(a, b) for a, b in zip(parts.tapes, whole.tapes))
    assert np.array_equal(parts.k, whole.k) and whole.k[4] != 0
