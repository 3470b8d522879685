"""Out-of-core files where a row band ends part-way into a disk page.

The page holding the end of file row e - 1 (the last row of a row band) and the
start of row e is shared by the last column band of band 0 and the first column
band of band 1.  With two column bands, K(X, X) stores both as the two parts of
one block, (0, 1) and its mirror (1, 0); the direct writer must complete that
page from the part written first (a regression: it lost the last bytes of row
e - 1, K[e-1, -k:], to zeros).  The file must equal the in-RAM result bitwise
(the same engine code computes every element) for float32 / float64, for rows
ending at several offsets into a page, for K(X, Z), and across a resume.
"""

import numpy as np
import pytest

import ntkfast as nk
from ntkfast.outofcore import journal as J
from ntkfast.outofcore import tiling
from ntkfast.outofcore.io import PAGE, npy_bytes
from test_direct_io import folder, spy  # noqa: F401 - fixtures
from test_resume import interrupt_after

NET = nk.MLP(depth=3, activation="relu", w_std=1.0, b_std=0.1)


def boundary_offset(n, m, edge, dtype):
    """Bytes of row edge - 1 on the page it shares with row edge (0: page-aligned)."""
    isz = np.dtype(dtype).itemsize
    header = npy_bytes((n, m), dtype) - n * m * isz
    return (header + edge * m * isz) % PAGE


# (n, m or None for K(X, X), dtype, edge): two column bands, each at least a page
# wide (so the direct writer is used); the row band boundary ends row edge - 1 at
# the offset into its page given on the right
CASES = [
    (2600, None, "float32", 1300),   # 3328 bytes of row 1299 share the page
    (1600, None, "float64", 1024),   # 128 (the reported N = 15000 float32 layout)
    (2049, None, "float32", 1025),   # 132: rows of 8196 bytes, last band one page
    (1700, None, "float64", 1100),   # 1536
    (2080, None, "float32", 1055),   # 0: the band boundary is page-aligned
    (2200, 2600, "float32", 1300),   # K(X, Z): 3328, cells written block by block
    (1500, 1600, "float64", 1024),   # K(X, Z): 128
]


def test_cases_cover_several_alignments():
    offsets = {boundary_offset(n, m or n, e, dt) for n, m, dt, e in CASES}
    assert 0 in offsets and len(offsets) >= 5


@pytest.mark.parametrize("n,m,dtype,tile", CASES)
def test_two_column_bands_file_equals_in_ram(folder, spy, n, m, dtype, tile):  # noqa: F811
    rng = np.random.default_rng(n)
    X = rng.standard_normal((n, 7))
    Z = None if m is None else rng.standard_normal((m, 7))
    outs = (str(folder / "S.npy"), str(folder / "T.npy"))
    ks = NET.kernels(X, Z, dtype=dtype, tile=tile, out=outs)
    assert spy == [True]
    ref = NET.kernels(X, Z, dtype=dtype, tile=tile)
    for got, want in ((ks.nngp, ref.nngp), (ks.ntk, ref.ntk)):
        bad = np.argwhere(got != want)
        assert bad.size == 0, f"{len(bad)} wrong entries, first {bad[:3].tolist()}"


@pytest.mark.parametrize("n,dtype,tile", [(2600, "float32", 1300), (1600, "float64", 1024)])
@pytest.mark.parametrize("stored,journaled", [(1, True), (2, True), (2, False)])
def test_two_column_bands_resume(folder, spy, monkeypatch, n, dtype, tile,  # noqa: F811
                                 stored, journaled):
    """Interrupted after the diagonal block (0, 0) or after the block (0, 1) whose two
    parts share the page (journaled or not: then it is redone), then resumed."""
    X = np.random.default_rng(n + 1).standard_normal((n, 5))
    kw = dict(backend="reference", tile=tile, n_jobs=1, dtype=dtype)    # 3 blocks
    out = str(folder / "K.npy")
    monkeypatch.setattr(tiling, "DIRECT_SYNC_SECONDS", 0.0)
    if not journaled:
        monkeypatch.setattr(J.Journal, "mark", lambda self, blocks: None)
    interrupt_after(monkeypatch, stored)
    with pytest.raises(KeyboardInterrupt):
        NET.ntk(X, out=out, **kw)
    assert spy == [True]
    assert len(J.read(J.journal_path(out))[1]) == (stored if journaled else 0)
    monkeypatch.undo()
    K = NET.ntk(X, out=out, **kw)
    assert np.array_equal(K, NET.ntk(X, **kw))
