"""The resume journal of an out-of-core run.

A JSON-lines file next to the output (``K.npy.ntkfast-journal``): the first line
is a header with a key (a hash of everything that determines the bytes of the
result: input shapes, dtypes and content hashes, the network, the dtype, the
block edge, the backend) and a readable copy of those arguments; every further
line is the index of one block whose data has already been fsync'ed to the
partial output file.  Lines are appended with ``O_APPEND`` and fsync'ed, so a
kill at any moment leaves at most a torn last line, which is ignored.  An
exclusive ``flock`` on the journal keeps two processes off one output.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os

import numpy as np

FORMAT = 1
SUFFIX = ".ntkfast-journal"
_HASH_CHUNK = 64 * 2**20


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


class Journal:
    """An open journal: ``done`` holds the finished block indices."""

    def __init__(self, path, fd, header, done):
        self.path = path
        self._fd = fd
        self.header = header
        self.done = done

    # -- opening -------------------------------------------------------------
    @classmethod
    def create(cls, path, key, args, extra=None) -> "Journal":
        """Start a new journal (replacing any old one) with its header fsync'ed."""
        header = {"ntkfast_journal": FORMAT, "key": key, "args": args, **(extra or {})}
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps(header, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        _lock(fd, path)
        return cls(path, fd, header, set())

    @classmethod
    def open_existing(cls, path) -> "Journal":
        """Open a journal for appending; the header and the done set are read back."""
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        _lock(fd, path)
        try:
            header, done = read(path)
        except Exception:
            os.close(fd)
            raise
        return cls(path, fd, header, done)

    # -- use -------------------------------------------------------------------
    def mark(self, indices):
        """Record finished blocks (call only after their data is fsync'ed)."""
        text = "".join(f"{int(i)}\n" for i in indices)
        os.write(self._fd, text.encode())
        os.fsync(self._fd)
        self.done.update(int(i) for i in indices)

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


def read(path):
    """(header, done set) of a journal file; a torn last line is ignored."""
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    try:
        header = json.loads(lines[0])
        if header.get("ntkfast_journal") != FORMAT:
            raise ValueError
    except (ValueError, AttributeError):
        raise JournalMismatch(f"out: {path} is not a journal this version of ntkfast can "
                              "read; delete it and the .partial file(s) next to it, or pass "
                              "resume=False (CLI: --no-resume)") from None
    done = set()
    # lines[-1] is the text after the last newline: empty, or a torn write
    for line in lines[1:-1]:
        try:
            done.add(int(line))
        except ValueError:
            continue
    return header, done


def differences(old: dict, new: dict) -> list:
    """Names of the argument fields that differ between two descriptions."""
    keys = sorted(set(old) | set(new))
    return [k for k in keys if old.get(k) != new.get(k)]
