"""The direct (O_DIRECT, page-aligned) out-of-core writer: same bytes as the
buffered writer and the in-RAM path, in any block order, across a resume."""

import os
import time

import numpy as np
import pytest

import ntkfast as nk
from ntkfast.outofcore import io as nkio
from ntkfast.outofcore import journal as J
from ntkfast.outofcore import tiling
from ntkfast.backends.reference_engine import ReferenceEngine
from test_resume import interrupt_after, journal_blocks  # noqa: E402 - shared helpers

NET = nk.MLP(depth=2, activation="relu", w_std=1.0, b_std=0.1)


def direct_supported(folder):
    if nkio.DirectWriter is None:
        return False
    path = os.path.join(folder, "probe.npy")
    f = nkio.NpyBlockFile.create(path, (4, 2048), np.float32)
    try:
        return f.enable_direct(2048)
    finally:
        f.close()
        os.unlink(path)


@pytest.fixture
def folder(tmp_path):
    if not direct_supported(str(tmp_path)):
        pytest.skip("no O_DIRECT / Linux AIO on this filesystem")
    return tmp_path


@pytest.fixture
def spy(monkeypatch):
    """Record whether each file run used the direct writer."""
    used = []
    real = tiling._FileSink._enable_direct

    def enable(self):
        used.append(real(self))
        return used[-1]

    monkeypatch.setattr(tiling._FileSink, "_enable_direct", enable)
    return used


# (n_rows, n_cols or None for K(X, X), dtype, block edge): every column band is at
# least one page wide, the last one narrower than the others, rows not page-aligned
CASES = [
    (2600, None, "float64", 650),
    (3100, 2200, "float32", 1100),
    (5197, None, "float32", 1300),
    (1999, 3333, "float64", 1111),
    (2300, 4500, "float32", 1125),
]


@pytest.mark.parametrize("n,m,dtype,tile", CASES)
def test_direct_file_equals_in_ram_and_buffered(folder, spy, monkeypatch, n, m, dtype, tile):
    rng = np.random.default_rng(n)
    X = rng.standard_normal((n, 6))
    Z = None if m is None else rng.standard_normal((m, 6))
    outs = (str(folder / "S.npy"), str(folder / "T.npy"))
    ks = NET.kernels(X, Z, dtype=dtype, tile=tile, out=outs)
    assert spy == [True]
    ref = NET.kernels(X, Z, dtype=dtype, tile=tile)
    assert np.array_equal(ks.nngp, ref.nngp) and np.array_equal(ks.ntk, ref.ntk)
    del ks
    monkeypatch.setenv("NTKFAST_DIRECT_IO", "0")
    buffered = str(folder / "B.npy")
    NET.ntk(X, Z, dtype=dtype, tile=tile, out=buffered)
    assert spy == [True, False]
    with open(outs[1], "rb") as f1, open(buffered, "rb") as f2:
        assert f1.read() == f2.read()


def test_narrow_last_band_falls_back_to_buffered(folder, spy):
    X = np.random.default_rng(0).standard_normal((2100, 3))   # last band 52 items
    K = NET.ntk(X, dtype="float32", tile=1024, out=str(folder / "K.npy"))
    assert spy == [False]
    assert np.array_equal(K, NET.ntk(X, dtype="float32", tile=1024))


@pytest.mark.parametrize("isz,n,m,e", [(4, 3000, 3250, 1100), (8, 1500, 1760, 600)])
def test_writer_any_order_any_neighbours(folder, isz, n, m, e):
    """Cells written in a random order, as rows or as transposes, each told which
    neighbours are written: the file ends up exactly the matrix."""
    dtype = np.float32 if isz == 4 else np.float64
    rng = np.random.default_rng(isz)
    A = rng.standard_normal((n, m)).astype(dtype)
    path = str(folder / "A.npy")
    f = nkio.NpyBlockFile.create(path, (n, m), dtype)
    assert f.enable_direct(e)
    cells = [(i, j) for i in range(0, n, e) for j in range(0, m, e)]
    done = set()
    last_col = (m - 1) // e

    def written(i, j):
        return (i // e, j // e) in done

    for k in rng.permutation(len(cells)):
        i0, j0 = cells[k]
        h, w = min(e, n - i0), min(e, m - j0)
        if j0 > 0:
            left = (written(i0, j0 - e),) * 2
        else:
            left = (i0 == 0 or written(i0 - e, last_col * e), written(i0, last_col * e))
        if j0 + w < m:
            right = (written(i0, j0 + w),) * 2
        else:
            right = (i0 + h >= n or written(i0 + h, 0), written(i0, 0))
        block = A[i0:i0 + h, j0:j0 + w]
        if k % 2:
            f.write_direct(i0, j0, np.ascontiguousarray(block.T), True, left, right)
        else:
            f.write_direct(i0, j0, np.ascontiguousarray(block), False, left, right)
        done.add((i0 // e, j0 // e))
    f.sync()
    f.close()
    assert np.array_equal(np.load(path), A)


def test_carry_between_consecutive_blocks_of_a_band(folder):
    """Blocks of one row band left to right, the shared pages handed over in memory
    (no read-back needed): still exactly the matrix."""
    n, m, e = 700, 5900, 1200
    A = np.random.default_rng(1).standard_normal((n, m)).astype(np.float32)
    path = str(folder / "A.npy")
    f = nkio.NpyBlockFile.create(path, (n, m), np.float32)
    assert f.enable_direct(e)
    for j0 in range(0, m, e):
        w = min(e, m - j0)
        left = (True, True) if j0 > 0 else (True, False)       # row 0 follows the header
        right = (True, True) if j0 + w == m else (False, False)
        f.write_direct(0, j0, np.ascontiguousarray(A[:, j0:j0 + w]), False, left, right,
                       carry=True)
    f.close()
    assert np.array_equal(np.load(path), A)


@pytest.mark.parametrize("journaled", [True, False])
def test_interrupted_direct_run_resumes_bit_identical(folder, spy, monkeypatch, journaled):
    """journaled=False: the stored blocks never reach the journal (a kill between
    the writes and the fsync), so all are redone on resume; the pages they share
    with their neighbours must not spoil the result either way."""
    X = np.random.default_rng(5).standard_normal((2170, 5))
    kw = dict(backend="reference", tile=550, n_jobs=1)          # 4 bands, 10 blocks
    out = str(folder / "K.npy")
    monkeypatch.setattr(tiling, "DIRECT_SYNC_SECONDS", 0.0)
    if not journaled:
        monkeypatch.setattr(J.Journal, "mark", lambda self, blocks: None)
    interrupt_after(monkeypatch, 6)
    with pytest.raises(KeyboardInterrupt):
        NET.ntk(X, out=out, **kw)
    assert spy == [True]
    header, done = J.read(J.journal_path(out))
    assert len(done) == (6 if journaled else 0)
    monkeypatch.undo()
    K = NET.ntk(X, out=out, **kw)
    fresh = str(folder / "fresh.npy")
    NET.ntk(X, out=fresh, **kw)
    with open(out, "rb") as f1, open(fresh, "rb") as f2:
        assert f1.read() == f2.read()
    assert np.array_equal(K, NET.ntk(X, **kw))


@pytest.mark.parametrize("interval", [0.0, 1e9])
def test_direct_runs_fsync_and_journal_at_most_every_interval(folder, spy, monkeypatch,
                                                              interval):
    """Stored blocks reach the journal only after DIRECT_SYNC_SECONDS (0: at once;
    1e9: only at the end), and the result is the same either way."""
    X = np.random.default_rng(6).standard_normal((2170, 5))
    kw = dict(backend="reference", tile=550, n_jobs=1)          # 4 bands, 10 blocks
    out = str(folder / "K.npy")
    monkeypatch.setattr(tiling, "DIRECT_SYNC_SECONDS", interval)
    real = ReferenceEngine.fill
    seen = []

    def fill(self, *a, **k):
        if len(seen) == 5:  # the sixth block: five are stored or on their way
            deadline = time.monotonic() + (10.0 if interval == 0.0 else 0.3)
            while journal_blocks(out) == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
        seen.append(journal_blocks(out))
        return real(self, *a, **k)

    monkeypatch.setattr(ReferenceEngine, "fill", fill)
    K = NET.ntk(X, out=out, **kw)
    assert spy == [True] and len(seen) == 10
    if interval == 0.0:
        assert seen[5] >= 1
    else:
        assert max(seen) == 0
    assert np.array_equal(K, NET.ntk(X, **kw))

