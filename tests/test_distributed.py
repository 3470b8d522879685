"""ntkfast.distributed: Dask blocks on a 2-process LocalCluster, zarr resume, faults."""

import os
import signal
import uuid

import numpy as np
import pytest

import ntkfast as nk

dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")
zarr = pytest.importorskip("zarr")

from ntkfast.backends import get_backend  # noqa: E402
from ntkfast.distributed import (StoreMismatch, gram_dask, to_npy,  # noqa: E402
                                 to_zarr)

NET = nk.MLP(depth=2, activation="relu", w_std=1.3, b_std=0.2)


def assert_close(a, b, rtol=1e-13):
    """Equal to ``rtol`` of the matrix scale.  Blocks of other shapes make other GEMM
    calls, and BLAS does not promise one summation order across shapes (OpenBLAS's
    SkylakeX kernels differ in the last bit), so only same-shape results are bitwise."""
    assert a.shape == b.shape and a.dtype == b.dtype
    assert np.max(np.abs(a - b)) <= rtol * np.max(np.abs(b))


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster
    with dask.config.set({"distributed.scheduler.allowed-failures": 3}):
        cluster = LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                               dashboard_address=None, silence_logs=40)
        c = Client(cluster, set_as_default=False)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    X = rng.standard_normal((600, 24))
    Z = rng.standard_normal((300, 24))
    return X, Z, NET.ntk(X), NET.nngp(X, Z)


class CountingEngine:
    """The real engine, recording each block fill as a file in ``folder``; optionally
    raising on the fill number ``fail_at`` (counted over the folder's files)."""

    name = "compiled"

    def __init__(self, folder, fail_at=None):
        self.folder = str(folder)
        self.fail_at = fail_at

    def fill(self, spec, *args, **kw):
        n = len(os.listdir(self.folder))
        if self.fail_at is not None and n + 1 >= self.fail_at:
            raise RuntimeError("interrupted on purpose")
        get_backend("auto", spec.activation).fill(spec, *args, **kw)
        open(os.path.join(self.folder, uuid.uuid4().hex), "w").close()


class KillOnce:
    """The real engine, but the first fill (anywhere) SIGKILLs its worker process."""

    name = "compiled"

    def __init__(self, marker):
        self.marker = str(marker)

    def fill(self, spec, *args, **kw):
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            get_backend("auto", spec.activation).fill(spec, *args, **kw)
            return
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)


def test_threaded_equals_sync_bitwise(data):
    """The same blocks computed by threads or in sequence: the same bits."""
    X, Z, K, S = data
    Kd = gram_dask(NET, X, chunks=256).compute(scheduler="threads")
    assert_close(Kd, K)
    assert np.array_equal(Kd, Kd.T)
    assert np.array_equal(Kd, gram_dask(NET, X, chunks=256).compute(scheduler="sync"))
    Sd = gram_dask(NET, X, Z, kind="nngp", chunks=(256, 128)).compute(scheduler="sync")
    assert_close(Sd, S)
    assert np.array_equal(
        Sd, gram_dask(NET, X, Z, kind="nngp", chunks=(256, 128)).compute(scheduler="threads"))


def test_odd_chunks_close(data):
    X, _, K, _ = data
    Kd = gram_dask(NET, X, chunks=97, dtype=np.float64).compute(scheduler="threads")
    np.testing.assert_allclose(Kd, K, rtol=1e-13, atol=1e-13 * np.abs(K).max())
    assert np.array_equal(Kd, Kd.T)


def test_lower_blocks_are_transposes(data):
    X = data[0]
    arr = gram_dask(NET, X, chunks=256)
    graph = dict(arr.__dask_graph__())
    fills = [k for k in arr.__dask_keys__() for k in k
             if "_fill" in repr(graph[k])]
    assert len(fills) == 6  # 3x3 blocks: upper triangle only


def test_local_cluster_equals_single_process(client, data, tmp_path):
    """Two worker processes compute the same blocks as one process: the same bits."""
    X, Z, K, S = data
    Kd = gram_dask(NET, X, chunks=256).compute(scheduler=client)
    K1 = gram_dask(NET, X, chunks=256).compute(scheduler="sync")
    assert np.array_equal(Kd, K1)
    assert_close(Kd, K)
    Sd = client.compute(gram_dask(NET, X, Z, kind="nngp", chunks=256)).result()
    assert np.array_equal(Sd, gram_dask(NET, X, Z, kind="nngp", chunks=256).compute(
        scheduler="sync"))
    assert_close(Sd, S)
    # X from a shared .npy path, output to a shared .npy memmap
    np.save(tmp_path / "X.npy", X)
    m = to_npy(NET, str(tmp_path / "X.npy"), tmp_path / "K.npy", chunks=256, scheduler=client)
    assert np.array_equal(np.asarray(m), K1)


def test_dask_array_input(data):
    import dask.array as da
    X, _, K, _ = data
    Kd = gram_dask(NET, da.from_array(X, chunks=(111, 24)), chunks=256).compute()
    assert np.array_equal(Kd, gram_dask(NET, X, chunks=256).compute(scheduler="sync"))
    assert_close(Kd, K)


def test_zarr_resume_no_recompute(data, tmp_path):
    X, _, K, _ = data
    path = tmp_path / "K.zarr"
    calls = tmp_path / "calls"
    calls.mkdir()
    with pytest.raises(RuntimeError, match="interrupted"):
        to_zarr(NET, X, path, chunks=256, backend=CountingEngine(calls, fail_at=3),
                scheduler="sync")
    done = np.asarray(zarr.open_group(str(path), mode="r")["done"][...], bool)
    assert done.sum() == 2 == len(os.listdir(calls))
    for f in os.listdir(calls):
        os.unlink(calls / f)
    z = to_zarr(NET, X, path, chunks=256, backend=CountingEngine(calls), scheduler="threads")
    assert len(os.listdir(calls)) == 6 - 2  # only the unfinished upper blocks
    assert np.array_equal(z[...], gram_dask(NET, X, chunks=256).compute(scheduler="sync"))
    assert_close(z[...], K)
    z = to_zarr(NET, X, path, chunks=256, backend=CountingEngine(calls))
    assert len(os.listdir(calls)) == 4  # finished: nothing recomputed


def test_zarr_blocks_subset_then_rest(client, data, tmp_path):
    X, Z, _, S = data
    path = tmp_path / "S.zarr"
    calls = tmp_path / "calls"
    calls.mkdir()
    to_zarr(NET, X, path, Z=Z, kind="nngp", chunks=256, blocks=[(0, 0), (2, 1)],
            backend=CountingEngine(calls), scheduler=client)
    assert len(os.listdir(calls)) == 2
    z = to_zarr(NET, X, path, Z=Z, kind="nngp", chunks=256, backend=CountingEngine(calls),
                scheduler=client)
    assert len(os.listdir(calls)) == 6  # 3x2 blocks in all
    assert np.array_equal(z[...], gram_dask(NET, X, Z, kind="nngp", chunks=256).compute(
        scheduler="sync"))
    assert_close(z[...], S)


def test_zarr_mismatch(data, tmp_path):
    X, _, _, _ = data
    path = tmp_path / "K.zarr"
    to_zarr(NET, X[:300], path, chunks=256, scheduler="sync")
    X2 = X[:300].copy()
    X2[5, 3] += 1e-9
    with pytest.raises(StoreMismatch, match="X"):
        to_zarr(NET, X2, path, chunks=256)
    with pytest.raises(StoreMismatch, match="chunks"):
        to_zarr(NET, X[:300], path, chunks=128)
    with pytest.raises(StoreMismatch, match="network"):
        to_zarr(nk.MLP(depth=3), X[:300], path, chunks=256)
    with pytest.raises(StoreMismatch, match="dtype"):
        to_zarr(NET, X[:300], path, chunks=256, dtype=np.float32)
    # overwrite=True replaces it
    z = to_zarr(NET, X2, path, chunks=256, overwrite=True, scheduler="sync")
    assert_close(z[...], NET.ntk(X2))
    other = tmp_path / "plain.zarr"
    zarr.open_group(str(other), mode="w")
    with pytest.raises(StoreMismatch, match="not written by"):
        to_zarr(NET, X[:300], other)


def test_worker_killed_is_retried(client, data, tmp_path):
    X, _, K, _ = data
    marker = tmp_path / "killed"
    before = set(client.scheduler_info()["workers"])
    Kd = gram_dask(NET, X, chunks=256, backend=KillOnce(marker)).compute(scheduler=client)
    assert marker.exists()  # a worker really died
    assert np.array_equal(Kd, gram_dask(NET, X, chunks=256).compute(scheduler="sync"))
    client.wait_for_workers(2, timeout=30)  # the nanny restarted it
    assert set(client.scheduler_info()["workers"]) != before


def test_bad_input(data, tmp_path):
    X, Z, _, _ = data
    with pytest.raises(ValueError, match="kind"):
        gram_dask(NET, X, kind="cov")
    with pytest.raises(ValueError, match="chunks"):
        gram_dask(NET, X, chunks=(256, 128))
    with pytest.raises(ValueError, match="chunks"):
        gram_dask(NET, X, chunks=0)
    Xn = X.copy()
    Xn[3, 1] = np.nan
    with pytest.raises(ValueError, match="X: row 3"):
        gram_dask(NET, Xn)
    with pytest.raises(ValueError, match="Z: has 5 features"):
        gram_dask(NET, X, Z[:, :5])
    with pytest.raises(ValueError, match="blocks"):
        to_zarr(NET, X, tmp_path / "b.zarr", chunks=256, blocks=[(1, 0)])
    with pytest.raises(FileNotFoundError, match="path"):
        to_npy(NET, X, tmp_path / "missing" / "K.npy")


CNN = nk.serial(nk.Conv((3, 3), w_std=1.4, b_std=0.1), nk.ReLU(), nk.AvgPool((2, 2), (2, 2)),
                nk.Conv((3, 3)), nk.ReLU(), nk.GlobalAvgPool(), nk.Dense(b_std=0.1))


def test_layer_network_blocks(client, tmp_path):
    """A conv network's blocks on the workers: the same numbers as one process; images
    from an array, a shared .npy path and a dask.array; zarr output resumable."""
    import dask.array as da
    rng = np.random.default_rng(11)
    X, Z = rng.standard_normal((19, 6, 6, 2)), rng.standard_normal((7, 6, 6, 2))
    K, S = CNN.ntk(X), CNN.nngp(X, Z)
    Kd = gram_dask(CNN, X, chunks=8).compute(scheduler=client)
    assert_close(Kd, K) and np.array_equal(Kd, Kd.T)
    np.save(tmp_path / "X.npy", X)
    Sd = gram_dask(CNN, str(tmp_path / "X.npy"), da.from_array(Z, chunks=(4, 6, 6, 2)),
                   kind="nngp", chunks=(8, 4)).compute(scheduler="threads")
    assert_close(Sd, S)
    z = to_zarr(CNN, X, tmp_path / "K.zarr", chunks=8, scheduler="sync")
    assert_close(z[...], K)
    with pytest.raises(StoreMismatch, match="network"):
        to_zarr(nk.serial(*CNN.layers[:-1], nk.Dense()), X, tmp_path / "K.zarr", chunks=8)
    with pytest.raises(ValueError, match="Z: examples of shape"):
        gram_dask(CNN, X, Z[:, :5])
    with pytest.raises(ValueError, match="X: expected a 2-D array"):
        gram_dask(NET, X)
