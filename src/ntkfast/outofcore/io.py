"""Files in and out: loading inputs (.npy memory-mapped, .csv/.txt) and writing
blocks of a standard ``.npy`` Gram matrix: page-aligned O_DIRECT writes with
Linux native AIO (:mod:`ntkfast._directio`; ``NTKFAST_DIRECT_IO=0`` turns them
off), or ``os.pwrite`` of row segments by the compiled helper
:mod:`ntkfast._blockio` without the GIL, or short-lived memory maps.
"""

from __future__ import annotations

import errno
import mmap
import os

import numpy as np
from numpy.lib import format as npy_format

from .. import _blockio

try:  # page-aligned O_DIRECT + AIO writer (Linux); optional
    from .._directio import DirectWriter
except ImportError:  # pragma: no cover - extension not built
    DirectWriter = None

__all__ = ["load_matrix", "NpyBlockFile", "drop_pages"]

_TEXT_SUFFIXES = (".csv", ".txt", ".tsv", ".dat")
#: how blocks reach the file: "pwrite" (row by row, os.pwrite) or "mmap" (a short-lived
#: shared map of the block's pages).  pwrite costs ~40% less CPU than the page faults of
#: a map, and a write error is an OSError instead of a SIGBUS.
WRITE_METHOD = "pwrite" if hasattr(os, "pwrite") else "mmap"
PAGE = _blockio.PAGE


# -- inputs ---------------------------------------------------------------------
def load_matrix(path, name="X"):
    """Load an input matrix: ``.npy`` memory-mapped read-only, text files parsed.

    ``.csv`` is comma-separated, ``.tsv`` tab-separated, ``.txt``/``.dat``
    whitespace- or comma-separated; one header line is skipped if it is not
    numeric.  Errors name the argument (``name``).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, f"{name}: file {path!r} not found")
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, f"{name}: {path!r} is a directory, not a file")
    lower = path.lower()
    if lower.endswith(".npy"):
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"{name}: could not read {path!r} as a numeric .npy file "
                             f"({exc})") from None
    if lower.endswith(_TEXT_SUFFIXES):
        return _load_text(path, name)
    raise ValueError(f"{name}: unsupported file type {path!r}; use .npy, .csv, .tsv or .txt")


def _load_text(path, name):
    with open(path) as f:
        first = f.readline()
    if path.lower().endswith(".csv"):
        delimiter = ","
    elif path.lower().endswith(".tsv"):
        delimiter = "\t"
    else:
        delimiter = "," if "," in first else None
    last_exc = None
    for skip in (0, 1):
        try:
            return np.loadtxt(path, delimiter=delimiter, ndmin=2, dtype=np.float64,
                              skiprows=skip)
        except ValueError as exc:
            last_exc = exc
    raise ValueError(f"{name}: could not parse {path!r} as a table of numbers "
                     f"({last_exc})") from None


def drop_pages(arr):
    """Unmap the resident pages of a read-only memory-mapped array (no-op otherwise).

    The data stays in the page cache; only this process's resident set shrinks.
    """
    mm = getattr(arr, "_mmap", None)
    if mm is None or getattr(arr, "mode", None) != "r" or not hasattr(mm, "madvise"):
        return
    try:
        mm.madvise(mmap.MADV_DONTNEED)
    except (OSError, ValueError, AttributeError):  # pragma: no cover - closed or unsupported
        pass


# -- outputs --------------------------------------------------------------------
def npy_bytes(shape, dtype) -> int:
    """Size in bytes of a .npy file holding an array of ``shape`` and ``dtype``."""
    data = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    header = {"descr": npy_format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
              "shape": tuple(shape)}
    import io as _io
    buf = _io.BytesIO()
    try:
        npy_format.write_array_header_1_0(buf, header)
    except ValueError:  # pragma: no cover - header over 64 KiB
        buf = _io.BytesIO()
        npy_format.write_array_header_2_0(buf, header)
    return buf.tell() + data


def allocated_bytes(path) -> int:
    """Disk space already allocated to ``path`` (0 if it does not exist)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return 0
    return getattr(st, "st_blocks", 0) * 512 or st.st_size


class NpyBlockFile:
    """A ``.npy`` file of a 2-D C-order array, written block by block.

    ``create`` writes the header with :func:`numpy.lib.format.open_memmap` and
    reserves the whole data area with ``posix_fallocate`` (a full disk is an
    OSError now, not halfway through).  ``write`` stores a block with
    ``os.pwrite`` row by row (``WRITE_METHOD="mmap"``: through a memory map of
    just the pages it covers, unmapped at once); either way no page of the
    output stays in the process's resident set.  ``sync`` is ``os.fsync``
    (it also writes back pages dirtied through shared maps; ``mmap.flush``
    would hold the GIL during msync).
    """

    def __init__(self, path, shape, dtype, offset):
        self.path = path
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.offset = offset
        self.row_bytes = self.shape[1] * self.dtype.itemsize
        self._fd = os.open(path, os.O_RDWR)
        self.direct = None  # a DirectWriter once enable_direct() succeeded

    @classmethod
    def create(cls, path, shape, dtype) -> "NpyBlockFile":
        m = npy_format.open_memmap(path, mode="w+", dtype=dtype, shape=tuple(shape))
        offset = m.offset
        del m
        self = cls(path, shape, dtype, offset)
        size = offset + self.row_bytes * self.shape[0]
        try:
            os.posix_fallocate(self._fd, 0, size)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                self.close()
                raise
            # EINVAL/EOPNOTSUPP: the filesystem cannot reserve space; writes still work
        except AttributeError:  # pragma: no cover - no posix_fallocate (macOS)
            pass
        os.fsync(self._fd)
        return self

    @classmethod
    def open(cls, path, shape, dtype) -> "NpyBlockFile":
        """Open an existing partial file; ValueError if its header does not match."""
        with open(path, "rb") as f:
            version = npy_format.read_magic(f)
            if version == (1, 0):
                hdr_shape, fortran, hdr_dtype = npy_format.read_array_header_1_0(f)
            else:
                hdr_shape, fortran, hdr_dtype = npy_format.read_array_header_2_0(f)
            offset = f.tell()
        if tuple(hdr_shape) != tuple(shape) or fortran or np.dtype(hdr_dtype) != np.dtype(dtype):
            raise ValueError(f"out: {path} holds a {hdr_shape} {hdr_dtype} array, expected "
                             f"{tuple(shape)} {np.dtype(dtype)}")
        self = cls(path, shape, dtype, offset)
        need = offset + self.row_bytes * self.shape[0]
        if os.fstat(self._fd).st_size != need:
            self.close()
            raise ValueError(f"out: {path} has the wrong size (truncated?)")
        return self

    def write(self, i0, j0, block, scratch=None):
        """Store ``block`` (2-D) at rows i0…, columns j0… of the array.

        With ``WRITE_METHOD="pwrite"`` rows with unit column stride are written
        as they are, and a transposed view of such a block (``v.T``) is
        transposed a few rows at a time through ``scratch`` (a C-contiguous
        array of at least :func:`transpose_scratch_size` items).  Other layouts,
        and the "mmap" method, copy the block into ``scratch`` (allocated if too
        small) first.  Durability needs :meth:`sync`.
        """
        h, w = block.shape
        if h == 0 or w == 0:
            return
        isz = self.dtype.itemsize
        if block.dtype != self.dtype:
            raise ValueError(f"write: block dtype {block.dtype} != file dtype {self.dtype}")
        start = self.offset + i0 * self.row_bytes + j0 * isz
        if WRITE_METHOD == "pwrite":
            if w == 1 or block.strides[1] == isz:
                _blockio.write_rows(self._fd, block, start, self.row_bytes)
                return
            if (h == 1 or block.strides[0] == isz) and isz in (4, 8):
                src = block.T
                if (scratch is None or scratch.dtype != self.dtype
                        or not scratch.flags.c_contiguous
                        or scratch.size < transpose_scratch_size(src.shape[0], isz)):
                    scratch = np.empty(transpose_scratch_size(src.shape[0], isz), self.dtype)
                _blockio.write_transposed(self._fd, src, start, self.row_bytes,
                                          scratch.reshape(-1))
                return
        if block.strides[1] != isz or block.strides[0] < w * block.itemsize:
            if scratch is None or scratch.size < h * w:
                scratch = np.empty(h * w, dtype=self.dtype)
            dense = scratch.reshape(-1)[:h * w].reshape(h, w)
            _copy(dense, block)
            block = dense
        if WRITE_METHOD == "pwrite":
            _blockio.write_rows(self._fd, block, start, self.row_bytes)
        else:
            self._write_mmap(i0, j0, block)

    def enable_direct(self, edge, batch=256):
        """Write through a :class:`~ntkfast._directio.DirectWriter` (O_DIRECT,
        page-aligned, no page cache) from now on, for blocks of at most ``edge``
        rows and columns; False (buffered writes stay) where the platform or the
        filesystem cannot.  The caller must store parts one at a time, in order,
        and tell which neighbouring segments are written (see :meth:`write_direct`).
        """
        if DirectWriter is None or os.environ.get("NTKFAST_DIRECT_IO", "1") == "0":
            return False
        try:
            self.direct = DirectWriter(self.path, self.dtype.itemsize, self.offset,
                                       self.row_bytes, self.shape[0], edge, edge, batch)
        except OSError:
            self.direct = None
        return self.direct is not None

    def disable_direct(self):
        """Back to buffered writes (closes the direct writer, if any)."""
        if self.direct is not None:
            self.direct.close()
            self.direct = None

    def write_direct(self, i0, j0, block, transposed, left, right, carry=False):
        """Store ``block`` (``block.T`` if ``transposed``) at rows i0…, columns j0…
        through the direct writer; ``left`` / ``right``: (first row, other rows)
        and (last row, other rows) flags: is the neighbouring segment written.
        ``carry``: hand the pages shared with the next block of the same rows over
        in memory (for consecutive blocks of one row band)."""
        self.direct.write_part(block, i0, j0, transposed, left[0], left[1], right[0],
                               right[1], keep_tail=carry, use_carry=carry)

    def span(self, i0, j0, h, w):
        """(offset, nbytes): the byte range from element (i0, j0) to (i0+h-1, j0+w-1)."""
        isz = self.dtype.itemsize
        start = self.offset + i0 * self.row_bytes + j0 * isz
        return start, (h - 1) * self.row_bytes + w * isz

    def wait_written(self, i0, j0, h, w):
        """Write back the dirty pages of a block's byte range and wait for them.

        Only a performance device (the data then leaves the page cache before
        :meth:`drop`); durability needs :meth:`sync`.
        """
        if h > 0 and w > 0:
            _blockio.wait_writeback(self._fd, *self.span(i0, j0, h, w))

    def drop(self, i0, j0, h, w, left_done=False, right_done=False):
        """Let the page cache forget the (written back) pages of a block.

        Pages shared with the neighbouring segments of each row are kept
        unless ``left_done`` / ``right_done`` (those neighbours are written),
        so a later partial-page write need not read them back from disk.
        """
        if h > 0 and w > 0:
            isz = self.dtype.itemsize
            _blockio.drop_rows(self._fd, self.offset + i0 * self.row_bytes + j0 * isz,
                               self.row_bytes, h, w * isz, bool(left_done),
                               bool(right_done))

    def _write_mmap(self, i0, j0, block):
        h, w = block.shape
        isz = self.dtype.itemsize
        start = self.offset + i0 * self.row_bytes + j0 * isz
        stop = self.offset + (i0 + h - 1) * self.row_bytes + (j0 + w) * isz
        base = start - start % mmap.ALLOCATIONGRANULARITY
        mm = mmap.mmap(self._fd, stop - base, offset=base)
        try:
            view = np.ndarray((h, w), dtype=self.dtype, buffer=mm, offset=start - base,
                              strides=(self.row_bytes, isz))
            np.copyto(view, block, casting="no")
            del view
        finally:
            mm.close()

    def sync(self):
        os.fsync(self._fd)

    def close(self):
        self.disable_direct()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def transpose_scratch_size(h, itemsize) -> int:
    """Items of scratch :meth:`NpyBlockFile.write` needs to store the transpose of a
    block of ``h`` rows."""
    return _blockio.cols_per_pass(itemsize) * max(1, h)


def _copy(dst, src):
    """dst[...] = src; a transposed src is copied in cache-sized square tiles.

    (A plain ``dst[...] = src.T`` walks one side with a large stride; tiling is
    about 4× faster for blocks of a few thousand rows.)
    """
    if src.strides[0] >= src.strides[1]:
        np.copyto(dst, src, casting="no")
        return
    t = 256 if src.itemsize <= 4 else 128
    h, w = src.shape
    for r in range(0, h, t):
        for c in range(0, w, t):
            np.copyto(dst[r:r + t, c:c + t], src[r:r + t, c:c + t], casting="no")
