# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Storing blocks of a row-major matrix file without the GIL (the out-of-core writer).

* ``write_rows``: the rows of a block, one ``pwrite`` each (with row-strided
  sources, no copy first);
* ``write_transposed``: the transpose of a block, a few output rows at a time
  (transposed through a small cache-resident buffer, then ``pwrite``), so the
  mirror of an off-diagonal block needs no block-sized scratch;
* ``wait_writeback``: ``sync_file_range`` (Linux; a no-op elsewhere): write back
  the dirty pages of a byte range and wait for them;
* ``drop_rows``: ``posix_fadvise(DONTNEED)`` on the pages of row segments that
  are written back (clean), so the page cache does not fill up with the output
  and its pages are reused while still hot.  Pages shared with a neighbouring
  segment are kept unless the caller says that neighbour is written.

None of these changes data semantics: dirty pages are never dropped, and
durability still comes from ``fsync`` (sync_file_range writes no metadata and
flushes no disk cache).
"""

from libc.errno cimport errno

cdef extern from *:
    """
    #ifndef _GNU_SOURCE
    #define _GNU_SOURCE
    #endif
    #include <fcntl.h>
    #include <unistd.h>
    #include <errno.h>
    #if defined(__linux__)
    static int ntk_sync_range(int fd, long long off, long long n, unsigned int flags) {
        return sync_file_range(fd, (off_t)off, (off_t)n, flags);
    }
    #define NTK_SFR_WAIT_BEFORE SYNC_FILE_RANGE_WAIT_BEFORE
    #define NTK_SFR_WRITE SYNC_FILE_RANGE_WRITE
    #define NTK_SFR_WAIT_AFTER SYNC_FILE_RANGE_WAIT_AFTER
    #else
    static int ntk_sync_range(int fd, long long off, long long n, unsigned int flags) {
        (void)fd; (void)off; (void)n; (void)flags; return 0;
    }
    #define NTK_SFR_WAIT_BEFORE 1
    #define NTK_SFR_WRITE 2
    #define NTK_SFR_WAIT_AFTER 4
    #endif
    #if defined(POSIX_FADV_DONTNEED)
    static int ntk_dontneed(int fd, long long off, long long n) {
        return posix_fadvise(fd, (off_t)off, (off_t)n, POSIX_FADV_DONTNEED);
    }
    #define NTK_HAVE_FADVISE 1
    #else
    static int ntk_dontneed(int fd, long long off, long long n) {
        (void)fd; (void)off; (void)n; return 0;
    }
    #define NTK_HAVE_FADVISE 0
    #endif
    """
    int ntk_sync_range(int fd, long long off, long long n, unsigned int flags) nogil
    int ntk_dontneed(int fd, long long off, long long n) nogil
    unsigned int NTK_SFR_WAIT_BEFORE, NTK_SFR_WRITE, NTK_SFR_WAIT_AFTER
    int NTK_HAVE_FADVISE

cdef extern from "ntk_fileio.h":
    int ntk_pwrite_all(int fd, const char *buf, long long n, long long off) nogil

cdef extern from "ntk_transpose.h":
    void ntk_transpose(const char *src, long s0, long h, long c0, long kc, void *dst,
                       int isz) nogil
PAGE = 4096

import os
import numpy as np


cdef inline void _raise(int err):
    raise OSError(err, os.strerror(err))


cdef const char* _data(object arr):
    cdef Py_ssize_t addr = arr.__array_interface__["data"][0]
    return <const char*>addr


def write_rows(int fd, block, long long offset, long long row_bytes):
    """pwrite row r of ``block`` (2-D, unit column stride) at offset + r * row_bytes."""
    if block.ndim != 2 or (block.shape[1] > 1 and block.strides[1] != block.itemsize):
        raise ValueError("write_rows: rows must be contiguous")
    cdef Py_ssize_t h = block.shape[0], w = block.shape[1]
    cdef Py_ssize_t s0 = block.strides[0]
    cdef long long nbytes = <long long>w * block.itemsize
    cdef const char *src = _data(block)
    cdef Py_ssize_t r
    cdef int err = 0
    if h == 0 or w == 0:
        return
    with nogil:
        for r in range(h):
            err = ntk_pwrite_all(fd, src + r * s0, nbytes, offset + r * row_bytes)
            if err:
                break
    if err:
        _raise(err)


def write_transposed(int fd, block, long long offset, long long row_bytes, scratch):
    """pwrite column c of ``block`` (h × w, unit column stride) as the row at
    offset + c * row_bytes (h items), i.e. store block.T.

    ``scratch``: a C-contiguous array of at least ``cols_per_pass(itemsize) * h``
    items of the block's itemsize (bit copies; no conversion).
    """
    if block.ndim != 2 or (block.shape[1] > 1 and block.strides[1] != block.itemsize):
        raise ValueError("write_transposed: block rows must be contiguous")
    cdef int isz = block.itemsize
    if isz != 4 and isz != 8:
        raise ValueError("write_transposed: 4- or 8-byte items only")
    cdef Py_ssize_t h = block.shape[0], w = block.shape[1]
    if h == 0 or w == 0:
        return
    cdef Py_ssize_t K = cols_per_pass(isz)
    if (not scratch.flags.c_contiguous or scratch.itemsize != isz
            or scratch.size < K * h or not scratch.flags.writeable):
        raise ValueError("write_transposed: scratch too small or of the wrong itemsize")
    cdef Py_ssize_t s0 = block.strides[0]
    cdef const char *src = _data(block)
    cdef char *buf = <char*>_data(scratch)
    cdef long long nbytes = <long long>h * isz
    cdef Py_ssize_t c0, kc, k
    cdef int err = 0
    with nogil:
        c0 = 0
        while c0 < w:
            kc = min(K, w - c0)
            ntk_transpose(src, s0, h, c0, kc, buf, isz)
            for k in range(kc):
                err = ntk_pwrite_all(fd, buf + k * nbytes, nbytes, offset + (c0 + k) * row_bytes)
                if err:
                    break
            if err:
                break
            c0 += K
    if err:
        _raise(err)


def cols_per_pass(int itemsize):
    """Output rows ``write_transposed`` builds per pass (64 bytes of each source row)."""
    return 64 if itemsize <= 4 else 32


def wait_writeback(int fd, long long offset, long long nbytes):
    """Write back the dirty pages of a byte range and wait for them (no metadata,
    no disk cache flush: not a substitute for fsync)."""
    cdef int rc
    if nbytes <= 0:
        return
    with nogil:
        rc = ntk_sync_range(fd, offset, nbytes,
                            NTK_SFR_WAIT_BEFORE | NTK_SFR_WRITE | NTK_SFR_WAIT_AFTER)
    if rc != 0:
        _raise(errno)


def drop_rows(int fd, long long offset, long long row_bytes, Py_ssize_t n_rows,
              long long seg_bytes, bint left_done, bint right_done):
    """posix_fadvise(DONTNEED) on n_rows row segments [offset + r * row_bytes, + seg_bytes).

    A page only partly covered by a segment is included only when all its
    other bytes are already written (``left_done`` / ``right_done``, the
    caller's judgement); otherwise it stays cached, so that the neighbour's
    later write does not have to read it back from disk.  Dirty pages are
    never dropped (the kernel skips them): this only affects what stays cached.
    """
    cdef Py_ssize_t r
    cdef long long s, e, lo, hi, P = PAGE
    if not NTK_HAVE_FADVISE or n_rows <= 0 or seg_bytes <= 0:
        return
    with nogil:
        for r in range(n_rows):
            s = offset + r * row_bytes
            e = s + seg_bytes
            lo = s - s % P if left_done else s
            hi = e + (P - e % P) % P if right_done else e
            if hi - lo >= P:
                ntk_dontneed(fd, lo, hi - lo)
