"""The out-of-core writer's compiled block I/O (ntkfast._blockio) and NpyBlockFile."""

import os

import numpy as np
import pytest

from ntkfast import _blockio
from ntkfast.outofcore.io import NpyBlockFile


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (7, 300), (300, 7), (129, 77), (1, 50), (50, 1)])
def test_blocks_and_mirrors_land_bit_exact(tmp_path, dtype, shape):
    n = 700
    rng = np.random.default_rng(0)
    big = rng.standard_normal((400, 400)).astype(dtype)
    big[0, 0] = np.nan                                          # bit copies, NaN included
    h, w = shape
    v = big[3:3 + h, 5:5 + w]                                   # a strided view
    f = NpyBlockFile.create(str(tmp_path / "K.npy"), (n, n), dtype)
    try:
        f.write(10, 400, v)
        f.write(400, 10, v.T, scratch=np.empty(1, dtype))       # scratch too small: allocated
        f.wait_written(10, 400, h, w)
        f.sync()
        f.drop(10, 400, h, w, True, True)                       # never loses data
        f.drop(400, 10, w, h, False, False)
    finally:
        f.close()
    K = np.load(tmp_path / "K.npy")
    assert np.array_equal(K[10:10 + h, 400:400 + w], v, equal_nan=True)
    assert np.array_equal(K[400:400 + w, 10:10 + h], v.T, equal_nan=True)
    K[10:10 + h, 400:400 + w] = 0
    K[400:400 + w, 10:10 + h] = 0
    assert not K.any()                                          # nothing else touched


def test_write_errors_are_oserrors(tmp_path):
    v = np.ones((4, 4), np.float32)
    fd = os.open(tmp_path / "ro", os.O_RDONLY | os.O_CREAT)
    try:
        with pytest.raises(OSError):
            _blockio.write_rows(fd, v, 0, 16)
        with pytest.raises(OSError):
            _blockio.write_transposed(fd, v, 0, 16, np.empty(_blockio.cols_per_pass(4) * 4,
                                                             np.float32))
    finally:
        os.close(fd)
    with pytest.raises(ValueError):
        _blockio.write_transposed(0, v, 0, 16, np.empty(1, np.float32))
