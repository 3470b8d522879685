"""The resume journal of an out-of-core run.

Format (``FORMAT = 2``)
-----------------------
A text file next to the output, ``K.npy.ntkfast-journal``, of ``\\n``-terminated
lines:

* line 1, the header: one JSON object with ``"ntkfast_journal": 2``, a ``key``
  (a hash of everything that determines the bytes of the result: input shapes,
  dtypes and content hashes, the network, the dtype, the block edge, the
  backend), a readable copy of those arguments (``args``), ``n_blocks`` and the
  ``partials`` paths;
* every further line: one finished block, ``<index> <crc> [<crc>]`` — the
  block's index in the tile plan (decimal) and, per output file in the order of
  ``partials``, an 8-digit hexadecimal :func:`checksum` of the block's values.
  A block is recorded only after its data has been fsync'ed to the partial
  output file(s).  Later lines for the same index replace earlier ones.

Lines are appended with ``O_APPEND`` and fsync'ed, so a kill at any moment
leaves at most a torn last line (no newline).  :meth:`Journal.open_existing`
cuts such a fragment off before anything is appended, so a torn line is never
joined with the next entry (``1`` + ``4 …\\n`` would read as block 14).  On a
resume (:class:`ntkfast.outofcore.tiling._FileRun`) entries that are malformed or whose
index lies outside the plan are discarded with a warning, and every block the
journal lists is read back from the partial file and skipped only if its
checksum matches; the others are computed again and the journal is rewritten
with the verified entries only.  An exclusive ``flock`` on the journal keeps two
processes off one output.

Format 1 journals (ntkfast before block checksums: lines held only the index)
cannot be verified and are refused with a message that says how to start over.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import zlib

import numpy as np

FORMAT = 2
SUFFIX = ".ntkfast-journal"
_HASH_CHUNK = 64 * 2**20
_ENTRY = re.compile(rb"([0-9]{1,12})((?: [0-9a-f]{8})+)")


class JournalMismatch(ValueError):
    """The journal next to the output belongs to a run with other arguments."""


def content_hash(arr) -> str:
    """blake2b (128-bit) of an array's shape, dtype and bytes, streamed in row chunks.

    Works on memory-mapped arrays without loading them whole (each chunk is
    read, hashed and dropped).
    """
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((arr.shape, arr.dtype.str)).encode())
    n = arr.shape[0]
    row_bytes = max(1, arr.itemsize * int(np.prod(arr.shape[1:], dtype=np.int64)))
    step = max(1, _HASH_CHUNK // row_bytes)
    for r in range(0, n, step):
        h.update(memoryview(np.ascontiguousarray(arr[r:r + step])).cast("B"))
    return h.hexdigest()


# -- block checksums ----------------------------------------------------------------
def checksum(block, index, transposed=False) -> int:
    """CRC-32 (zlib) of a 2-D block's values in row-major order, seeded with its index.

    ``block`` needs contiguous rows (any row stride, e.g. a slice of a larger
    array or of a memory-mapped file); with ``transposed`` the checksum is of
    ``block.T`` (the mirrored copy of a block as it lies in the file), which is
    transposed a page-wide strip at a time.  The seed makes an entry that names
    the wrong block fail verification even where two blocks hold equal values.

    Cost: zlib's CRC-32 runs at ~4 GB/s on one core.  An out-of-core run computes
    it from the in-memory block while the writer stores it, beside the engine
    computing the next block (measured run times: ``CHECKSUM_OVERLAP_BYTES`` in
    :mod:`ntkfast.outofcore.tiling`).
    """
    crc = zlib.crc32(b"ntkfast-block %d" % int(index))
    if transposed:
        src = block.T                      # (h, w) view with strided rows
        h = src.shape[0]
        step = max(1, 4096 // max(1, block.itemsize))
        for r in range(0, h, step):
            crc = zlib.crc32(np.ascontiguousarray(src[r:r + step]), crc)
        return crc
    if block.size == 0:
        return crc
    if block.flags.c_contiguous:
        return zlib.crc32(block, crc)
    if block.shape[1] > 1 and block.strides[1] != block.itemsize:
        block = np.ascontiguousarray(block)
        return zlib.crc32(block, crc)
    for row in block:
        crc = zlib.crc32(row if row.flags.c_contiguous else np.ascontiguousarray(row), crc)
    return crc


def describe(value):
    """A JSON-able, address-free description of a spec field (callables by name)."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (tuple, list)):
        return [describe(v) for v in value]
    if callable(value):
        return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', repr(value))}"
    key = getattr(value, "_key", None)
    if callable(key):
        return describe(key())
    return repr(value)


def run_key(args: dict) -> str:
    """Hash of a JSON-able argument description."""
    text = json.dumps(args, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def journal_path(output_path) -> str:
    return os.fspath(output_path) + SUFFIX


def fsync_dir(path):
    """fsync the directory holding ``path`` (makes creates/renames durable)."""
    d = os.path.dirname(os.path.abspath(path))
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _lock(fd, path):
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
            os.close(fd)
            raise OSError(errno.EBUSY, f"out: another process is writing this output "
                                       f"(its journal {path} is locked); wait for it or "
                                       "choose another output path") from None
        raise


def assert_unlocked(path):
    """OSError(EBUSY) if another process holds the journal at ``path`` open."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    except FileNotFoundError:
        return
    _lock(fd, path)
    os.close(fd)


def _entry_line(index, sums) -> str:
    return f"{int(index)}" + "".join(f" {int(s) & 0xFFFFFFFF:08x}" for s in sums) + "\n"


def _write_new(path, header, entries=()):
    """Write a complete journal under ``path`` + '.tmp', fsync'ed and locked, then
    rename it over ``path``; returns the locked fd (open for appending)."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o666)
    try:
        _lock(fd, tmp)  # locked before it becomes visible under the journal's name
        text = json.dumps(header, sort_keys=True) + "\n"
        text += "".join(_entry_line(i, s) for i, s in entries)
        os.write(fd, text.encode())
        os.fsync(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.close(fd)
        except OSError:  # _lock closed it already
            pass
        raise
    fsync_dir(path)
    return fd


class Journal:
    """An open, locked journal.

    ``done``: {block index: tuple of checksums, one per output file}.
    ``damaged``: [(line number, text)] of the entries :func:`parse` could not read
    (malformed lines); ``torn``: the bytes of a torn last line that were cut off.
    """

    def __init__(self, path, fd, header, done, damaged=(), torn=b""):
        self.path = path
        self._fd = fd
        self.header = header
        self.done = done
        self.damaged = list(damaged)
        self.torn = torn

    # -- opening -------------------------------------------------------------
    @classmethod
    def create(cls, path, key, args, extra=None) -> "Journal":
        """Start a new journal (replacing any old one) with its header fsync'ed."""
        header = {"ntkfast_journal": FORMAT, "key": key, "args": args, **(extra or {})}
        fd = _write_new(path, header)
        return cls(path, fd, header, {})

    @classmethod
    def open_existing(cls, path) -> "Journal":
        """Open a journal for appending; the header and the done entries are read back.

        A torn last line (bytes after the last newline, left by a kill mid-append)
        is cut off with ``ftruncate`` (and fsync'ed) before anything is appended,
        so the next entry never joins it.
        """
        fd = os.open(path, os.O_RDWR | os.O_APPEND)
        _lock(fd, path)
        try:
            with open(path, "rb") as f:
                data = f.read()
            header, done, damaged, complete = parse(data, path)
            torn = data[complete:]
            if torn:
                os.ftruncate(fd, complete)
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, header, done, damaged, torn)

    # -- use -------------------------------------------------------------------
    def mark(self, entries):
        """Record finished blocks, ``[(index, (checksum, …))]`` (call only after their
        data is fsync'ed)."""
        entries = [(int(i), tuple(int(s) for s in sums)) for i, sums in entries]
        if not entries:
            return
        text = "".join(_entry_line(i, s) for i, s in entries)
        os.write(self._fd, text.encode())
        os.fsync(self._fd)
        self.done.update(entries)

    def rewrite(self, entries):
        """Replace the journal by its header and ``entries`` ({index: checksums}),
        atomically (written and locked under a temporary name, then renamed)."""
        fd = _write_new(self.path, self.header, sorted(entries.items()))
        old, self._fd = self._fd, fd
        if old is not None:
            os.close(old)
        self.done = dict(entries)
        self.damaged = []

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def remove(self):
        self.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        fsync_dir(self.path)


def _unreadable(path, why=""):
    return JournalMismatch(f"out: {path} is not a journal this version of ntkfast can "
                           f"read{why}; delete it and the .partial file(s) next to it, or "
                           "pass resume=False (CLI: --no-resume)")


def parse(data: bytes, path="journal"):
    """(header, done, damaged, complete) of a journal's bytes.

    ``done``: {index: checksums} of the well-formed entry lines (a later line for
    an index replaces an earlier one); ``damaged``: [(line number, text)] of the
    malformed ones; ``complete``: the length of the text up to and including the
    last newline (what follows is a torn last line and is ignored).
    JournalMismatch if the header is unreadable or of another format.
    """
    complete = data.rfind(b"\n") + 1
    lines = data[:complete].split(b"\n")[:-1]
    try:
        header = json.loads(lines[0])
        version = header.get("ntkfast_journal")
    except (ValueError, AttributeError, IndexError):
        raise _unreadable(path) from None
    if version == 1:
        raise _unreadable(path, " (format 1, written by an older ntkfast without block "
                                "checksums: its blocks cannot be verified)")
    if version != FORMAT:
        raise _unreadable(path, f" (format {version!r}; this version reads format "
                                f"{FORMAT})")
    done, damaged = {}, []
    for n, line in enumerate(lines[1:], start=2):
        m = _ENTRY.fullmatch(line)
        if m is None:
            damaged.append((n, line.decode("ascii", "backslashreplace")[:60]))
            continue
        done[int(m.group(1))] = tuple(int(s, 16) for s in m.group(2).split())
    return header, done, damaged, complete


def read(path):
    """(header, done) of a journal file: ``done`` maps the recorded block indices to
    their checksums; malformed lines and a torn last line are left out."""
    with open(path, "rb") as f:
        data = f.read()
    header, done, _, _ = parse(data, path)
    return header, done


def differences(old: dict, new: dict) -> list:
    """Names of the argument fields that differ between two descriptions."""
    keys = sorted(set(old) | set(new))
    return [k for k in keys if old.get(k) != new.get(k)]
