"""The block layer: plans, tile/thread independence, outputs (arrays, .npy files), disk full."""

import errno
import os

import numpy as np
import pytest

import ntkfast as nk
from ntkfast.outofcore import io as nio
from ntkfast.outofcore import tiling
from ntkfast.outofcore.tile_plan import GRANULE, block_edge, plan_gram

NET = nk.MLP(depth=3, activation="relu", w_std=1.2, b_std=0.1)


def data(n=500, m=170, d=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.standard_normal((m, d))


def rel(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


# -- planner -----------------------------------------------------------------------
@pytest.mark.parametrize("n,m,sym,edge", [(500, 500, True, 64), (500, 170, False, 64),
                                          (257, 257, True, 256), (10, 999, False, 7),
                                          (300, 300, True, 1000)])
def test_plan_covers_every_element_once(n, m, sym, edge):
    plan = plan_gram(n, m, sym, itemsize=8, n_outputs=1, to_file=True, engine_name="x",
                     tile=edge)
    count = np.zeros((n, m), dtype=int)
    for b in plan.blocks:
        count[b.i0:b.i1, b.j0:b.j1] += 1
        if b.mirror:
            count[b.j0:b.j1, b.i0:b.i1] += 1
        assert not sym or b.j0 >= b.i0            # upper triangle only
        assert b.diagonal == (sym and b.i0 == b.j0)
    assert (count == 1).all()
    assert sum(b.elements for b in plan.blocks) == n * m
    assert [b.index for b in plan.blocks] == list(range(len(plan.blocks)))


def test_default_edge_from_budget():
    e = block_edge(100_000, 100_000, itemsize=4, n_outputs=1, to_file=True,
                   engine_name="compiled", budget=512 * 2**20)
    assert e % GRANULE == 0 and 2048 <= e <= 8192
    assert (2 * 4) * e * e <= 512 * 2**20  # two float32 slots within budget
    both64 = block_edge(100_000, 100_000, itemsize=8, n_outputs=2, to_file=True,
                        engine_name="compiled", budget=512 * 2**20)
    assert both64 < e
    # in-RAM with an engine that needs no block temporaries: one call
    assert block_edge(5000, 5000, itemsize=8, n_outputs=1, to_file=False,
                      engine_name="compiled") == 5000
    assert block_edge(5000, 5000, itemsize=8, n_outputs=1, to_file=False,
                      engine_name="compiled", progress=True) < 5000
    # the NumPy reference engine has big temporaries: bounded blocks, one per worker
    plan = plan_gram(9000, 9000, True, itemsize=8, n_outputs=1, to_file=False,
                     engine_name="reference", n_jobs=2)
    assert plan.workers == 2 and plan.engine_jobs == 1 and plan.edge < 9000


# -- independence of block edge and threads ------------------------------------------
@pytest.mark.parametrize("tile", [37, 64, 100, 256, 1000])
def test_tile_independence_float64(tile):
    """Other block edges make GEMM calls of other shapes, and BLAS promises no summation
    order across shapes (OpenBLAS's SkylakeX kernels differ in the last bit from its
    Haswell ones): equal to 1e-13, not bitwise.  Bitwise holds where the same calls
    compute each element: thread counts (below), resumes (test_resume.py)."""
    X, Z = data()
    for args in ((X,), (X, Z)):
        ref = NET.kernels(*args)
        got = NET.kernels(*args, tile=tile)
        assert rel(got.ntk, ref.ntk) <= 1e-13 and rel(got.nngp, ref.nngp) <= 1e-13
    sym = NET.ntk(X, tile=tile)
    assert np.array_equal(sym, sym.T)
    assert np.array_equal(np.diag(sym), NET.ntk_diag(X))


def test_tile_independence_float32():
    X, Z = data()
    X = X.astype(np.float32)
    ref = NET.ntk(X, Z.astype(np.float32))
    got = NET.ntk(X, Z.astype(np.float32), tile=70)
    assert got.dtype == np.float32 and rel(got, ref) <= 1e-6


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_n_jobs_independence_bitwise(backend):
    X, Z = data()
    for args in ((X,), (X, Z)):
        one = NET.ntk(*args, tile=96, n_jobs=1, backend=backend)
        two = NET.ntk(*args, tile=96, n_jobs=2, backend=backend)
        assert np.array_equal(one, two)


# -- outputs ---------------------------------------------------------------------------
def test_out_ndarray_filled_in_place():
    X, Z = data()
    out = np.full((500, 170), np.nan)
    res = NET.ntk(X, Z, out=out, tile=64)
    assert res is out and np.array_equal(out, NET.ntk(X, Z, tile=64))
    S, T = np.empty((500, 500)), np.empty((500, 500))
    ks = NET.kernels(X, out=(S, T), tile=128)
    assert ks.nngp is S and ks.ntk is T and np.array_equal(S, S.T)
    with pytest.raises(ValueError, match="out: ntk output must have shape"):
        NET.ntk(X, Z, out=np.empty((170, 500)))


def test_out_file_matches_ram(tmp_path):
    X, Z = data()
    path = tmp_path / "K.npy"
    res = NET.ntk(X, out=str(path), tile=64)
    assert isinstance(res, np.memmap) and res.mode == "r"
    assert np.array_equal(np.load(path), NET.ntk(X, tile=64))
    assert sorted(os.listdir(tmp_path)) == ["K.npy"]          # no partial, no journal
    ks = NET.kernels(X, Z, out=(tmp_path / "S.npy", tmp_path / "T.npy"), tile=100)
    ref = NET.kernels(X, Z, tile=100)
    assert np.array_equal(np.load(tmp_path / "S.npy"), ref.nngp)
    assert np.array_equal(np.load(tmp_path / "T.npy"), ref.ntk)
    assert np.array_equal(ks.ntk, ref.ntk)


def test_out_file_float32_both_write_methods(tmp_path, monkeypatch):
    X, _ = data()
    X = X.astype(np.float32)
    a = np.array(NET.nngp(X, out=tmp_path / "a.npy", tile=128))
    monkeypatch.setattr(nio, "WRITE_METHOD", "mmap")
    b = np.array(NET.nngp(X, out=tmp_path / "b.npy", tile=128))
    assert a.dtype == np.float32 and np.array_equal(a, b)
    assert np.array_equal(a, NET.nngp(X, tile=128))


def test_memmap_inputs(tmp_path):
    X, Z = data()
    np.save(tmp_path / "X.npy", X.astype(np.float32))
    np.save(tmp_path / "Z.npy", np.asfortranarray(Z))
    Xm = np.load(tmp_path / "X.npy", mmap_mode="r")
    Zm = np.load(tmp_path / "Z.npy", mmap_mode="r")
    got = NET.ntk(Xm, Zm, out=tmp_path / "K.npy", tile=64)
    ref = NET.ntk(np.array(Xm), np.array(Zm), tile=64)
    assert np.array_equal(got, ref)


def test_out_errors_name_the_argument(tmp_path):
    X, Z = data()
    with pytest.raises(ValueError, match="out: kernels.. computes two"):
        NET.kernels(X, out=str(tmp_path / "K.npy"))
    with pytest.raises(ValueError, match="out: pass file paths for every"):
        NET.kernels(X, out=(str(tmp_path / "S.npy"), np.empty((500, 500))))
    with pytest.raises(ValueError, match="same file"):
        NET.kernels(X, out=(tmp_path / "S.npy", tmp_path / "S.npy"))
    with pytest.raises(FileNotFoundError, match="out: directory"):
        NET.ntk(X, out=str(tmp_path / "missing" / "K.npy"))
    with pytest.raises(TypeError, match="out: expected"):
        NET.ntk(X, out=3)


def test_progress_bar(capsys):
    X, _ = data()
    NET.ntk(X, tile=64, progress=True)
    err = capsys.readouterr().err
    assert "blocks" in err and "el/s" in err
    NET.ntk(X, tile=64)
    assert capsys.readouterr().err == ""


# -- disk full ---------------------------------------------------------------------------
def test_disk_full_midway_then_resume(tmp_path, monkeypatch):
    X, _ = data()
    path = tmp_path / "K.npy"
    calls = {"n": 0}
    real = nio.NpyBlockFile.write

    def failing(self, *a, **k):
        calls["n"] += 1
        if calls["n"] > 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *a, **k)

    monkeypatch.setattr(nio.NpyBlockFile, "write", failing)
    with pytest.raises(OSError, match="no space left") as info:
        NET.ntk(X, out=path, tile=64)
    assert info.value.errno == errno.ENOSPC
    assert not path.exists()                                     # nothing under the name
    assert (tmp_path / "K.npy.partial").exists()
    monkeypatch.setattr(nio.NpyBlockFile, "write", real)
    NET.ntk(X, out=path, tile=64)                                # resumes
    assert np.array_equal(np.load(path), NET.ntk(X, tile=64))
    assert sorted(os.listdir(tmp_path)) == ["K.npy"]


def test_disk_space_checked_up_front(tmp_path, monkeypatch):
    X, _ = data()

    class Usage:
        free = 1000

    monkeypatch.setattr(tiling.shutil, "disk_usage", lambda p: Usage)
    with pytest.raises(OSError, match=r"needs 2\.\d MB but only") as info:
        NET.ntk(X, out=tmp_path / "K.npy")
    assert info.value.errno == errno.ENOSPC
    assert os.listdir(tmp_path) == []


def test_fallocate_enospc_leaves_nothing(tmp_path, monkeypatch):
    X, _ = data()

    def full(*a):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(nio.os, "posix_fallocate", full)
    with pytest.raises(OSError, match="no space left"):
        NET.ntk(X, out=tmp_path / "K.npy")
    assert os.listdir(tmp_path) == []
