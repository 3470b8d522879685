# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Page-aligned direct writes (O_DIRECT + Linux native AIO) of matrix blocks.

The out-of-core writer's fast path; see ``ntk_directio.h`` for how pages shared
with neighbouring blocks are completed.  ``DirectWriter(...)`` raises OSError
where the platform or the filesystem has no direct I/O (callers then use the
buffered writer of :mod:`ntkfast._blockio`).
"""

import os

cdef extern from "ntk_directio.h":
    ctypedef struct ntk_dio:
        pass
    int ntk_dio_open(ntk_dio *d, const char *path, int isz, long long base,
                     long long row_bytes, long long n_rows, long long max_width,
                     long long max_rows, int batch) nogil
    void ntk_dio_close(ntk_dio *d) nogil
    int ntk_dio_write_part(ntk_dio *d, const char *src, long long s0, int transposed,
                           long long r0, long long c0, long long n, long long w,
                           int left_first, int left_rest, int right_last, int right_rest,
                           int keep_tail, int use_carry) nogil


cdef class DirectWriter:
    """Writes blocks of the ``n_rows`` × (row_bytes / itemsize) array stored at
    byte ``offset`` of ``path`` with O_DIRECT, ``batch`` rows in flight at a time.

    ``max_width``: the widest segment (items) and ``max_rows``: the most rows of a
    part whose tail pages are carried (both: the block edge).
    """

    cdef ntk_dio d
    cdef bint is_open
    cdef readonly int itemsize

    def __cinit__(self, path, int itemsize, long long offset, long long row_bytes,
                  long long n_rows, long long max_width, long long max_rows,
                  int batch=128):
        cdef bytes p = os.fsencode(path)
        cdef const char *cp = p
        cdef int rc
        self.is_open = False
        self.itemsize = itemsize
        if itemsize not in (4, 8):
            raise ValueError("DirectWriter: 4- or 8-byte items only")
        with nogil:
            rc = ntk_dio_open(&self.d, cp, itemsize, offset, row_bytes, n_rows, max_width,
                              max_rows, batch)
        if rc:
            raise OSError(rc, f"direct I/O unavailable for {path!r}: {os.strerror(rc)}")
        self.is_open = True

    def write_part(self, block, long long r0, long long c0, bint transposed,
                   bint left_first, bint left_rest, bint right_last, bint right_rest,
                   bint keep_tail=False, bint use_carry=False):
        """Store ``block`` (or ``block.T`` if ``transposed``) at file rows r0…,
        columns c0…; returns when the data is on the device (not yet fsync'ed).

        The flags say whether the segments left / right of each row are already
        written (``*_first``: the first row, ``*_last``: the last row,
        ``*_rest``: the others).  ``keep_tail`` / ``use_carry``: hand the pages
        shared with the next block along the same rows over in memory.
        """
        if not self.is_open:
            raise ValueError("DirectWriter is closed")
        if (block.ndim != 2 or block.itemsize != self.itemsize
                or (block.shape[1] > 1 and block.strides[1] != block.itemsize)):
            raise ValueError("write_part: a 2-D block with contiguous rows of the file's "
                             "itemsize is needed")
        cdef long long h = block.shape[0], w = block.shape[1]
        cdef long long n = w if transposed else h
        cdef long long width = h if transposed else w
        cdef long long s0 = block.strides[0]
        cdef Py_ssize_t addr = block.__array_interface__["data"][0]
        cdef const char *src = <const char*>addr
        cdef int rc
        if h == 0 or w == 0:
            return
        with nogil:
            rc = ntk_dio_write_part(&self.d, src, s0, transposed, r0, c0, n, width,
                                    left_first, left_rest, right_last, right_rest,
                                    keep_tail, use_carry)
        if rc:
            raise OSError(rc, os.strerror(rc))

    def close(self):
        if self.is_open:
            ntk_dio_close(&self.d)
            self.is_open = False

    def __dealloc__(self):
        if self.is_open:
            ntk_dio_close(&self.d)
