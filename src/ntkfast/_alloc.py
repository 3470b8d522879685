"""Output arrays for the compiled engines: C-contiguous, cache-line aligned.

The engines mirror each finished tile of K(X, X) into the lower triangle with
streamed (non-temporal) stores of whole 64-byte lines, which needs rows that start
on a line boundary; ``np.empty`` only guarantees 16 bytes."""

from __future__ import annotations

import math
import mmap

import numpy as np

__all__ = ["aligned"]

#: output arrays start on a cache-line boundary: the mirrored (transposed) writes of a
#: tile's rows then fill whole lines (np.empty only guarantees 16 bytes)
_ALIGN = 64


#: zero-filled outputs from this size on are anonymous memory maps
_MMAP_BYTES = 1 << 20


def aligned(shape, dtype, zero=False):
    """An uninitialised (``zero``: zero-filled) C-contiguous array of ``shape`` and
    ``dtype`` whose data starts on a ``_ALIGN``-byte boundary.

    Large zero-filled arrays (the upper triangles of ``symmetrize=False``) are a
    private anonymous memory map: zero by definition, in 4 KiB pages of which those
    never written (below the diagonal) are never faulted in, so about 2/3 of the
    memory is resident (np.zeros measured up to 3x slower here)."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if zero and nbytes >= _MMAP_BYTES:
        if hasattr(mmap, "MAP_PRIVATE"):  # POSIX (a shared map would be shmem)
            buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        else:
            buf = mmap.mmap(-1, nbytes)
        return np.frombuffer(buf, dtype=dtype).reshape(shape)
    raw = (np.zeros if zero else np.empty)(nbytes + _ALIGN, dtype=np.uint8)
    off = -raw.ctypes.data % _ALIGN
    return raw[off:off + nbytes].view(dtype).reshape(shape)


