"""The block loop between the public API and an engine: outputs, threads, resume.

``compute_gram`` cuts Σ(X, Z) / Θ(X, Z) into the blocks of
:mod:`ntkfast.outofcore.tile_plan` and has the engine fill each block into a *sink*:

* in-RAM outputs (``out=None`` or an array): the engine writes straight into the
  output; an off-diagonal block of K(X, X) is then mirrored below the diagonal;
* file outputs (``out="K.npy"`` or a pair of paths): the engine writes into a
  scratch slot; a writer thread stores it into ``K.npy.partial`` (see
  :class:`ntkfast.outofcore.io.NpyBlockFile`: page-aligned O_DIRECT writes where the
  platform, the filesystem and the block shapes allow, buffered ``pwrite``
  otherwise) and a sync thread fsyncs the file and only
  then records the stored blocks, each with a checksum of its values, in the
  journal (:mod:`ntkfast.outofcore.journal`), while the engine already computes the next
  block.  At the end, once every block of the plan is recorded, the partial file
  is renamed to ``K.npy`` and the journal removed.  A killed run started again
  with the same arguments skips the recorded blocks whose data in the partial
  file matches its checksum (the others are computed again); the result is the
  same file bit for bit.  SIGTERM stops a run as cleanly as Ctrl-C (the stored
  blocks are journaled first; see :func:`_sigterm_stops_run`).

Determinism: every output element is computed by the engine's per-element
recursion from its own GEMM entry, so results do not depend on ``n_jobs``
(tested bitwise).  The block edge decides which GEMM call (and whether GEMM or
SYRK) produces an entry: with the compiled engine, edges that are multiples of
its cache tile (256; the planner's default edges are) give bit-identical
results; other edges, and the NumPy reference backend, agree to ≤ 1e-13
relative (tested).  A resumed run reuses the block edge recorded in its
journal, so resuming is always bit-identical.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import sys
import threading
import time
import queue
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import journal as J
from .._alloc import aligned
from .._threads import limited
from .._validation import check_variances
from ..backends import row_stats
from .io import (PAGE, NpyBlockFile, allocated_bytes, drop_pages, npy_bytes, _copy,
                 transpose_scratch_size)
from .tile_plan import plan_gram

__all__ = ["compute_gram", "PARTIAL_SUFFIX"]

PARTIAL_SUFFIX = ".partial"
#: with direct writes, fsync (and journal) at most this often: an fsync commits the
#: filesystem's conversions of the written extents and flushes the disk cache, stalling
#: the writes meanwhile (on the reference VM ~0.35 s of a run's time per fsync: a run
#: at N = 100 000 took 85.3-85.5 s with one fsync at the end, 88.2-89.3 s with one per
#: 4 GiB).  A killed run redoes the blocks stored since the last fsync: at most about
#: this many seconds of work.
DIRECT_SYNC_SECONDS = 30.0
#: blocks of at least this many bytes (all outputs) are checksummed on a helper thread
#: while the writer stores them; smaller ones by the writer itself.  What the journal's
#: block checksums (zlib CRC-32, 2.6-4 GB/s on one core; :func:`ntkfast.outofcore.journal.checksum`)
#: cost, measured on a shared 2-core VM under other load (N = 6000 float32, depth-3
#: ReLU K(X, X) to a 144 MB file, compiled engine, 12 runs of each variant in rotating
#: order, medians): one 6000² block: 0.56 s with checksums,
#: 0.50 s without (process CPU 0.28 vs 0.25 s); 10 blocks of edge 1536: 0.85 vs 0.86 s
#: (CPU 0.39 vs 0.36 s).  That is ~0.035 s of CPU per 144 MB of block values; the
#: wall-time differences are within the run-to-run noise (±0.1 s), computing them
#: inline before the writes instead was not measurably different either (0.53 / 0.92
#: s).  A resume reads back and verifies the recorded blocks: 0.13-0.38 s for all 10.
CHECKSUM_OVERLAP_BYTES = 4 * 2**20
_KINDS = ("nngp", "ntk")


# -- public entry ---------------------------------------------------------------
def compute_gram(engine, spec, X, Z, dtype, want_nngp, want_ntk, *, out=None, tile=None,
                 n_jobs=1, progress=False, resume=True):
    """Σ(X, Z) and/or Θ(X, Z) (Z=None: X against X), as a pair (None where unwanted).

    ``out``: None (allocate), an array, a ``.npy`` path, or a pair of either
    for (nngp, ntk).  Paths give read-only memory maps of the finished files.
    ``tile``: block edge (default from :mod:`ntkfast.outofcore.tile_plan`).
    ``resume``: continue an interrupted run on the same path (False: start over).
    """
    dtype = np.dtype(dtype)
    symmetric = Z is None
    Zm = X if symmetric else Z
    shape = (X.shape[0], Zm.shape[0])
    targets = _resolve_out(out, want_nngp, want_ntk)
    kinds = [k for k, _ in targets]
    engine_name = getattr(engine, "name", type(engine).__name__)
    files = [t for _, t in targets if isinstance(t, str)]
    if files and len(files) != len(targets):
        raise ValueError("out: pass file paths for every requested kernel or for none "
                         "(a pair of paths, or a pair of arrays, not one of each)")

    def make_plan(edge):
        return plan_gram(shape[0], shape[1], symmetric, itemsize=dtype.itemsize,
                         n_outputs=len(targets), to_file=bool(files),
                         engine_name=engine_name, n_jobs=n_jobs, tile=edge,
                         progress=progress)

    with _sigterm_stops_run() if files else contextlib.nullcontext():
        if files:
            run = _FileRun(files, kinds, shape, dtype, symmetric, spec, engine_name, X, Z)
            plan = run.open(make_plan, tile, resume)
            try:
                sink = _FileSink(run, plan)
            except BaseException:
                run.close()
                raise
        else:
            plan = make_plan(tile)
            arrays = [_check_out(t, shape, dtype, k) for k, t in targets]
            sink = _ArraySink(arrays)
            run = None
        pending = [b for b in plan.blocks if run is None or b.index not in run.journal.done]
        bar = _Progress(progress, plan, pending, desc=_describe_target(targets))
        sink.progress = bar
        try:
            if pending:
                qx = _row_stats(engine, spec, X, dtype, "X")
                qz = qx if symmetric else _row_stats(engine, spec, Zm, dtype, "Z")
                _execute(engine, spec, X, Zm, dtype, plan, pending, sink, kinds, qx, qz)
            results = sink.finish()
        except BaseException:
            sink.abort()
            raise
        finally:
            bar.close()
    by_kind = dict(zip(kinds, results))
    return by_kind.get("nngp"), by_kind.get("ntk")


#: exit status of a run stopped by SIGTERM (the shell's convention for a process
#: ended by signal 15); see :func:`_sigterm_stops_run`
SIGTERM_EXIT = 128 + signal.SIGTERM


@contextlib.contextmanager
def _sigterm_stops_run():
    """During an out-of-core run, SIGTERM (``kill``, ``timeout``, batch schedulers)
    stops the run as cleanly as Ctrl-C: blocks already computed are stored, fsync'ed
    and journaled, the partial file and the journal stay for a resume, and then
    ``SystemExit(128 + 15)`` is raised, so an uncaught one ends the process
    quietly with exit status 143 (``except Exception`` does not catch it;
    ``finally`` blocks run).  Further SIGTERMs are ignored while the run stops.

    Installed only in the main thread (Python runs signal handlers there), only
    while SIGTERM has its default action (a handler of the caller's, or an ignored
    SIGTERM, is left alone), and only for the duration of the run: the previous
    disposition is restored afterwards.
    """
    installed = False
    if threading.current_thread() is threading.main_thread():
        try:
            previous = signal.getsignal(signal.SIGTERM)
            if previous == signal.SIG_DFL:
                fired = []

                def stop(signum, frame):
                    if fired:
                        return
                    fired.append(signum)
                    raise SystemExit(SIGTERM_EXIT)

                signal.signal(signal.SIGTERM, stop)
                installed = True
        except (ValueError, OSError, AttributeError):  # pragma: no cover - no SIGTERM
            installed = False
    try:
        yield
    finally:
        if installed:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


# -- outputs ----------------------------------------------------------------------
def _is_path(obj):
    return isinstance(obj, (str, os.PathLike))


def _resolve_out(out, want_nngp, want_ntk):
    """[(kind, target)] for the wanted kernels; target None, an array or a path str."""
    wanted = [k for k, w in zip(_KINDS, (want_nngp, want_ntk)) if w]
    if out is None:
        pair = (None, None)
    elif isinstance(out, (tuple, list)):
        if len(out) != 2:
            raise ValueError("out: for kernels() pass a pair (out_nngp, out_ntk), e.g. "
                             "out=('S.npy', 'T.npy')")
        pair = tuple(out)
    elif len(wanted) == 2:
        raise ValueError("out: kernels() computes two matrices; pass a pair "
                         "(out_nngp, out_ntk), e.g. out=('S.npy', 'T.npy')")
    else:
        pair = (out, None) if wanted == ["nngp"] else (None, out)
    targets = []
    for kind, target in zip(_KINDS, pair):
        if kind not in wanted:
            continue
        if _is_path(target):
            target = os.path.abspath(os.fspath(target))
            _check_out_path(target)
        elif target is not None and not isinstance(target, np.ndarray):
            raise TypeError(f"out: expected None, a NumPy array or a .npy path for {kind}, "
                            f"got {type(target).__name__}")
        targets.append((kind, target))
    paths = [t for _, t in targets if isinstance(t, str)]
    if len(paths) == 2 and paths[0] == paths[1]:
        raise ValueError(f"out: both kernels would go to the same file {paths[0]!r}; "
                         "pass two different paths")
    return targets


def _check_out_path(path):
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise FileNotFoundError(errno.ENOENT, f"out: directory {folder!r} does not exist; "
                                "create it first")
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, f"out: {path!r} is a directory; pass a file "
                                "name such as 'K.npy'")


def _check_out(out, shape, dtype, name):
    if out is None:  # cache-line aligned: the engine's mirror streams whole lines
        return aligned(shape, dtype)
    if out.shape != shape or out.dtype != dtype:
        raise ValueError(f"out: {name} output must have shape {shape} and dtype {dtype}, "
                         f"got shape {out.shape} and dtype {out.dtype}")
    if out.strides[1] != out.itemsize or out.strides[0] < shape[1] * out.itemsize:
        raise ValueError("out: the output array must be C-contiguous (row-major)")
    if not out.flags.writeable:
        raise ValueError(f"out: the {name} output array is read-only")
    return out


def _describe_target(targets):
    names = [os.path.basename(t) if isinstance(t, str) else k for k, t in targets]
    return " + ".join(names)


def _row_stats(engine, spec, A, dtype, name):
    """What the engine needs of every row, computed once up front and checked against
    overflow in ``dtype``: the MLP's per-layer variances (depth+1, N), or — engines of
    layer networks, which have ``variances`` — their self pass (a ``RowStats`` that
    slices like it; see :mod:`ntkfast.backends.reference_network`)."""
    stats = row_stats(engine, spec, A, after_chunk=lambda: drop_pages(A))
    drop_pages(A)
    if hasattr(stats, "check"):
        stats.check(dtype, name)
    else:
        check_variances(stats, dtype, name)
    return stats


# -- the block loop -------------------------------------------------------------
class _Abort(Exception):
    """Raised in a worker when another thread has failed."""


def _execute(engine, spec, X, Zm, dtype, plan, pending, sink, kinds, qx, qz):
    """Fill every pending block, on plan.workers threads (the caller's when 1)."""
    state = {"error": None, "stop": False}
    lock = threading.Lock()
    it = iter(pending)
    local = threading.local()
    mapped = [A for A in ((X,) if Zm is X else (X, Zm)) if isinstance(A, np.memmap)]

    def rows(i0, i1):
        band = getattr(local, "band", None)
        if band is None or band[0] != (i0, i1):
            band = ((i0, i1), np.ascontiguousarray(X[i0:i1], dtype=dtype))
            local.band = band
        return band[1]

    def fill(b):
        Xb = rows(b.i0, b.i1)
        Zb = Xb if b.diagonal else np.ascontiguousarray(Zm[b.j0:b.j1], dtype=dtype)
        for A in mapped:
            drop_pages(A)
        slot, views = sink.acquire(b)
        outs = dict(zip(kinds, views))
        engine.fill(spec, Xb, Zb, outs.get("nngp"), outs.get("ntk"), symmetric=b.diagonal,
                    dtype=dtype, tile=None, n_jobs=plan.engine_jobs, qx=qx[:, b.i0:b.i1],
                    qz=qz[:, b.j0:b.j1])
        sink.submit(b, slot, views)

    def work():
        try:
            while True:
                with lock:
                    if state["stop"]:
                        return
                    b = next(it, None)
                if b is None:
                    return
                fill(b)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            with lock:
                if state["error"] is None and not isinstance(exc, _Abort):
                    state["error"] = exc
                state["stop"] = True

    if plan.workers == 1:
        try:
            while True:
                b = next(it, None)
                if b is None:
                    return
                fill(b)
        except _Abort:
            return  # the sink reports its own error in finish()
    threads = [threading.Thread(target=work, name=f"ntkfast-block-{k}", daemon=True)
               for k in range(plan.workers)]
    with limited(1, "blas"):
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(0.2)
        except BaseException:
            with lock:
                state["stop"] = True
            for t in threads:
                t.join()
            raise
    if state["error"] is not None:
        raise state["error"]


class _Progress:
    """A thread-safe tqdm bar over output elements (no-op when disabled)."""

    def __init__(self, enabled, plan, pending, desc):
        self._lock = threading.Lock()
        self._bar = None
        self._blocks_total = len(plan.blocks)
        self._blocks_done = len(plan.blocks) - len(pending)
        if not enabled:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            warnings.warn("progress=True needs tqdm (pip install tqdm); continuing without "
                          "a progress bar", stacklevel=3)
            return
        done_elements = plan.elements - sum(b.elements for b in pending)
        self._bar = tqdm(total=plan.elements, initial=done_elements, unit="el",
                         unit_scale=True, desc=desc, file=sys.stderr, smoothing=0.1,
                         mininterval=0.5, dynamic_ncols=True)

    def update(self, elements):
        if self._bar is None:
            return
        with self._lock:
            self._blocks_done += 1
            self._bar.set_postfix_str(f"{self._blocks_done}/{self._blocks_total} blocks",
                                      refresh=False)
            self._bar.update(elements)

    def close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None


# -- sinks: where filled blocks go --------------------------------------------------
class _ArraySink:
    """The engine writes into the output arrays; off-diagonal blocks are mirrored."""

    progress = None

    def __init__(self, arrays):
        self.arrays = arrays

    def acquire(self, b):
        return None, [a[b.i0:b.i1, b.j0:b.j1] for a in self.arrays]

    def submit(self, b, slot, views):
        if b.mirror:
            for a, v in zip(self.arrays, views):
                _copy(a[b.j0:b.j1, b.i0:b.i1], v.T)
        self.progress.update(b.elements)

    def finish(self):
        return self.arrays

    def abort(self):
        pass


class _FileRun:
    """The files of one out-of-core run: partial outputs, journal, identity key."""

    def __init__(self, paths, kinds, shape, dtype, symmetric, spec, engine_name, X, Z):
        self.paths = paths
        self.partials = [p + PARTIAL_SUFFIX for p in paths]
        self.journal_path = J.journal_path(paths[0])
        self.kinds = kinds
        self.shape = shape
        self.dtype = dtype
        self.symmetric = symmetric
        self.files = []
        self.journal = None
        self.args = {
            "outputs": [[k, p] for k, p in zip(kinds, paths)],
            "shape": list(shape),
            "dtype": dtype.str,
            "X": _fingerprint(X),
            "Z": None if symmetric else _fingerprint(Z),
            # JSON-normalised (tuples as lists), as the journal stores it
            "network": json.loads(json.dumps(spec.describe())) if hasattr(spec, "describe")
            else {
                "activation": J.describe(spec.activation), "depth": spec.depth,
                "w2": spec.w2, "b2": spec.b2, "lam0": spec.lam0, "lam": spec.lam,
                "mu": spec.mu},
            "backend": engine_name,
        }

    # -- opening: resume or start over ----------------------------------------
    def open(self, make_plan, tile, resume):
        """Resume the journal's run or start a new one; returns the block plan."""
        if resume and os.path.exists(self.journal_path):
            try:
                plan = self._resume(make_plan, tile)
            except BaseException:
                self.close()
                raise
            if plan is not None:
                return plan
        plan = make_plan(tile)
        self._start(plan)
        return plan

    def _advice(self):
        files = ", ".join([*self.partials, self.journal_path])
        return (f"to start over, delete {files} or pass resume=False "
                "(CLI: --no-resume)")

    def _resume(self, make_plan, tile):
        header, _ = J.read(self.journal_path)
        old = header.get("args", {})
        new = dict(self.args, block=old.get("block") if tile is None else int(tile))
        diff = J.differences(old, new)
        if diff or header.get("key") != J.run_key(new):
            named = ", ".join(_FIELD_NAMES.get(d, d) for d in diff) or "the journal key"
            raise J.JournalMismatch(
                f"out: {self.journal_path} records an unfinished run with different "
                f"arguments ({named} differ); the partial output cannot be resumed with "
                f"these arguments; {self._advice()}")
        plan = make_plan(new["block"])
        if plan.edge != new["block"]:  # pragma: no cover - planner clamps only oversized edges
            raise J.JournalMismatch(f"out: cannot rebuild the block plan of "
                                    f"{self.journal_path}; {self._advice()}")
        try:
            files = [NpyBlockFile.open(p, self.shape, self.dtype) if os.path.exists(p)
                     else None for p in self.partials]
        except (ValueError, OSError) as exc:
            raise J.JournalMismatch(f"{exc}; {self._advice()}") from None
        self.files = files
        self.journal = J.Journal.open_existing(self.journal_path)
        entries = self._valid_entries(plan)
        missing = [p for p, f in zip(self.partials, files) if f is None]
        complete = len(entries) == len(plan.blocks)
        if missing and not complete:
            return self._restart(f"the partial output {', '.join(missing)} is missing")
        # a missing partial with every block recorded: renamed already (kill between
        # the final renames); its blocks are verified in the final file instead
        verified = self._verify(plan, entries)
        if len(verified) != len(entries):
            bad = sorted(set(entries) - set(verified))
            warnings.warn(f"out: {len(bad)} of the {len(entries)} blocks recorded in "
                          f"{self.journal_path} do not hold the values recorded there "
                          f"(checksum mismatch in {', '.join(self.partials)}; blocks "
                          f"{_some(bad)}); they are computed again", stacklevel=4)
        if verified != self.journal.done or self.journal.damaged:
            self.journal.rewrite(verified)
        if missing and len(verified) != len(plan.blocks):
            return self._restart(f"the output {', '.join(missing)} does not hold the "
                                 "recorded blocks")
        self.args = new
        if not missing:
            self._check_space(resuming=True)
        return plan

    def _restart(self, why):
        """Give up the resume (warning why); the caller starts a new run."""
        self.close()
        self.files, self.journal = [], None
        warnings.warn(f"out: {why}; starting over (journal {self.journal_path})",
                      stacklevel=5)
        return None

    def _valid_entries(self, plan):
        """The journal's entries that name a block of ``plan`` with one checksum per
        output; malformed lines and other entries are dropped with a warning (the
        journal is damaged: those blocks are computed again)."""
        n, k = len(plan.blocks), len(self.paths)
        done = self.journal.done
        valid = {i: s for i, s in done.items() if 0 <= i < n and len(s) == k}
        bad = [f"line {ln}: {text!r}" for ln, text in self.journal.damaged]
        bad += [f"{_entry_text(i, s)!r} (index outside 0..{n - 1})" for i, s in done.items()
                if not 0 <= i < n]
        bad += [f"{_entry_text(i, s)!r} ({len(s)} checksums for {k} outputs)"
                for i, s in done.items() if 0 <= i < n and len(s) != k]
        if bad:
            warnings.warn(f"out: the journal {self.journal_path} is damaged: "
                          f"{len(bad)} entries cannot be trusted ({'; '.join(bad[:3])}"
                          f"{'; …' if len(bad) > 3 else ''}); they are ignored and every "
                          "block not verified by its checksum is computed again",
                          stacklevel=5)
        return valid

    def _verify(self, plan, entries):
        """The entries whose blocks hold their recorded checksums in every output,
        read back from the partial files (from the final file where the partial was
        renamed already); the mirror of an off-diagonal block is checked too.

        Reads every recorded block once, about as fast as the disk reads (a file
        written with direct I/O on the reference VM: ~0.6 s for 144 MB, ~0.1 s when
        cached); the pages read are unmapped as it goes and dropped from the page
        cache at the end."""
        if not entries:
            return {}
        blocks = {b.index: b for b in plan.blocks}
        sources = [p if os.path.exists(p) else final
                   for p, final in zip(self.partials, self.paths)]
        maps = [_map_output(src, self.shape, self.dtype) for src in sources]
        verified = {}
        try:
            for i in sorted(entries):
                b, sums = blocks[i], entries[i]
                if all(m is not None and _block_holds(m, b, s) for m, s in zip(maps, sums)):
                    verified[i] = sums
        finally:
            for m in maps:
                if m is not None:
                    _release(m)
        return verified

    def _start(self, plan):
        J.assert_unlocked(self.journal_path)  # refuse to clobber a live run
        self._remove_leftovers()
        self.args = dict(self.args, block=plan.edge)
        self._check_space(resuming=False)
        try:
            for p in self.partials:
                self.files.append(NpyBlockFile.create(p, self.shape, self.dtype))
        except OSError as exc:
            self.close()
            self._remove_leftovers()
            if exc.errno == errno.ENOSPC:
                raise _no_space(self.paths, self._needed(False)) from None
            raise
        J.fsync_dir(self.partials[0])
        info = {"n_blocks": len(plan.blocks), "partials": self.partials}
        self.journal = J.Journal.create(self.journal_path, J.run_key(self.args), self.args,
                                        info)

    def _remove_leftovers(self):
        for p in [*self.partials, self.journal_path, self.journal_path + ".tmp"]:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass

    def _needed(self, resuming):
        """{directory: bytes still to reserve}."""
        need = {}
        for p in self.partials:
            size = npy_bytes(self.shape, self.dtype)
            if resuming:
                size = max(0, size - allocated_bytes(p))
            d = os.path.dirname(p)
            need[d] = need.get(d, 0) + size
        return need

    def _check_space(self, resuming):
        by_dev = {}
        for d, n in self._needed(resuming).items():
            dev = os.stat(d).st_dev
            folder, total = by_dev.get(dev, (d, 0))
            by_dev[dev] = (folder, total + n)
        for folder, n in by_dev.values():
            free = shutil.disk_usage(folder).free
            if n > free:
                raise OSError(errno.ENOSPC, f"out: writing {', '.join(self.paths)} needs "
                              f"{_gb(n)} but only {_gb(free)} is free in {folder}; free "
                              "space or choose another location")

    # -- the end ----------------------------------------------------------------
    def complete(self, plan):
        """Rename the partial files to their final names and remove the journal.

        Only if every block of ``plan`` is recorded as done (stored and fsync'ed by
        this run, or verified by its checksum on resume); otherwise RuntimeError,
        and the partial files and the journal stay for a resume."""
        done = self.journal.done
        missing = [b.index for b in plan.blocks if b.index not in done]
        if missing:
            self.close()
            raise RuntimeError(
                f"out: {len(missing)} of the {len(plan.blocks)} blocks (blocks "
                f"{_some(missing)}) are not recorded as written in {self.journal_path}; "
                f"{', '.join(self.partials)} was not renamed to {', '.join(self.paths)}. "
                "Run again with the same arguments to compute the missing blocks")
        for f in self.files:
            if f is not None:
                f.sync()
                f.close()
        for part, final in zip(self.partials, self.paths):
            if os.path.exists(part):
                os.replace(part, final)
        J.fsync_dir(self.paths[0])
        self.journal.remove()
        return [np.load(p, mmap_mode="r") for p in self.paths]

    def close(self):
        for f in self.files:
            if f is not None:
                f.close()
        if self.journal is not None:
            self.journal.close()


_FIELD_NAMES = {"X": "X (content, shape or dtype)", "Z": "Z (content, shape or dtype)",
                "network": "network (depth, activation, w_std, b_std, parameterization, "
                           "width)", "block": "tile (block edge)", "dtype": "dtype",
                "backend": "backend", "outputs": "out (requested kernels or paths)",
                "shape": "shape"}


def _gb(n):
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def _no_space(paths, need):
    return OSError(errno.ENOSPC, f"out: no space left on the device for "
                   f"{', '.join(paths)} (needs {_gb(sum(need.values()))}); nothing was "
                   "written under the final name; free space or choose another location")


def _some(indices, n=5):
    """'3, 7, 9' or '3, 7, 9, … (12 in all)'."""
    head = ", ".join(str(i) for i in indices[:n])
    return head if len(indices) <= n else f"{head}, … ({len(indices)} in all)"


def _entry_text(i, sums):
    return f"{i}" + "".join(f" {s:08x}" for s in sums)


def _map_output(path, shape, dtype):
    """A read-only memory map of a C-order .npy file of ``shape`` and ``dtype``, or
    None if there is no such file."""
    try:
        m = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    if m.shape != tuple(shape) or m.dtype != dtype or not m.flags.c_contiguous:
        _release(m)
        return None
    return m


def _release(m):
    drop_pages(m)
    _forget(m)
    mm = getattr(m, "_mmap", None)
    if mm is not None:
        try:
            mm.close()
        except (BufferError, ValueError):  # pragma: no cover - views still alive
            pass


def _forget(m):
    """Let the page cache forget a mapped .npy file's pages (read for verification)."""
    fname = getattr(m, "filename", None)
    if fname is None or not hasattr(os, "posix_fadvise"):
        return
    try:
        fd = os.open(fname, os.O_RDONLY)
    except OSError:  # pragma: no cover
        return
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _block_holds(m, b, crc):
    """Does the mapped output ``m`` hold block ``b`` with checksum ``crc`` (its mirror
    below the diagonal included)?  Unmaps the pages it read (they stay in the page
    cache until :func:`_forget`: dropping them block by block would drop the
    readahead of the neighbouring blocks too, ~3x slower)."""
    a = m.view(np.ndarray)  # rows of a plain view: no np.memmap per row
    ok = J.checksum(a[b.i0:b.i1, b.j0:b.j1], b.index) == crc
    if ok and b.mirror:
        ok = J.checksum(a[b.j0:b.j1, b.i0:b.i1], b.index, transposed=True) == crc
    del a
    drop_pages(m)
    return ok


def _fingerprint(A):
    fp = {"shape": list(A.shape), "dtype": A.dtype.str, "blake2b": J.content_hash(A)}
    drop_pages(A)
    return fp


class _FileSink:
    """Scratch slots filled by the engine, stored and journaled by a writer thread.

    Direct path (every row segment of a block at least a page long, O_DIRECT
    and Linux AIO available): the writer stores the block's rows, then its
    mirror, with page-aligned direct writes, telling the writer which
    neighbouring segments are already stored (their shared pages are completed
    by whichever of the two is written later); the sync thread fsyncs and
    journals every DIRECT_SYNC_SECONDS.  No page cache is involved.

    Buffered path: the writer stores a block with ``pwrite`` (the mirror of an
    off-diagonal block through a small transposition buffer); the sync thread
    writes back and waits for those pages, fsyncs, journals the blocks, and
    then drops their pages from the page cache.  Keeping the page
    cache small is not cosmetic: pages that are reused while still hot are
    much cheaper to fill than fresh ones (on VMs that hand freed memory back to
    the host several times cheaper), and the disk gets a steady stream of
    writes instead of bursts at each fsync.
    """

    progress = None

    def __init__(self, run, plan):
        self.run = run
        self.plan = plan
        self.error = None
        h = min(plan.edge, plan.n_rows)
        w = min(plan.edge, plan.n_cols)
        n_slots = plan.workers + 1
        self._bufs = [[np.empty((h, w), dtype=run.dtype) for _ in run.files]
                      for _ in range(n_slots)]
        # the writer's buffer for transposing mirrored blocks, a few rows at a time
        self._tbuf = np.empty(transpose_scratch_size(h, run.dtype.itemsize)
                              if plan.symmetric else 0, dtype=run.dtype)
        # cells (row band, column band) of the full matrix already stored: the
        # neighbour flags of the direct writer and of drop()
        self._cells = set()
        done = run.journal.done if run.journal is not None else ()
        for b in plan.blocks:
            if b.index in done:
                self._add_cells(b)
        self._direct = self._enable_direct()
        self._free = queue.Queue()
        for s in range(n_slots):
            self._free.put(s)
        self._queue = queue.Queue()
        self._written = []                 # stored, not yet fsync'ed blocks
        self._sums = {}                    # their checksums, by block index
        self._last_sync = time.monotonic()  # when the last fsync started
        self._cv = threading.Condition()
        self._writing = True
        self._writer = threading.Thread(target=self._write_loop, name="ntkfast-writer",
                                        daemon=True)
        self._syncer = threading.Thread(target=self._sync_loop, name="ntkfast-sync",
                                        daemon=True)
        self._crc_pool = ThreadPoolExecutor(1, thread_name_prefix="ntkfast-checksum")
        self._writer.start()
        self._syncer.start()

    def acquire(self, b):
        while True:
            if self.error is not None:
                raise _Abort()
            try:
                slot = self._free.get(timeout=0.2)
                break
            except queue.Empty:
                continue
        h, w = b.i1 - b.i0, b.j1 - b.j0
        return slot, [buf[:h, :w] for buf in self._bufs[slot]]

    def submit(self, b, slot, views):
        self._queue.put((b, slot, views))

    def _write_loop(self):
        while True:
            item = self._queue.get()
            if item is None:
                with self._cv:
                    self._writing = False
                    self._cv.notify()
                return
            b, slot, views = item
            try:
                if self.error is None:
                    self._store(b, views)
            except BaseException as exc:  # noqa: BLE001 - reported by finish()
                self.error = exc
            finally:
                self._free.put(slot)

    def _store(self, b, views):
        # the checksums of the block's values (the journal records them with its
        # index; a resume reads the block back and verifies them) are computed from
        # the in-memory block, the same for both writer paths; for large blocks on
        # the checksum thread while the writes run (both release the GIL), so they
        # cost CPU time but hardly any wall time (see CHECKSUM_OVERLAP_BYTES)
        def sums_of():
            return tuple(J.checksum(v, b.index) for v in views)

        nbytes = sum(v.nbytes for v in views)
        pending = self._crc_pool.submit(sums_of) if nbytes >= CHECKSUM_OVERLAP_BYTES \
            else None
        try:
            if self._direct:
                # each part's cell is recorded as soon as the part is stored: the
                # two parts of a block can be neighbours across a file-row end (with
                # two column bands, cell (0, 1) ends the rows whose successors start
                # cell (1, 0) on the same page), and the later one must then read
                # that page back instead of padding it with zeros
                for r0, c0, h, w in self._parts(b):
                    transposed = (r0, c0) != (b.i0, b.j0)
                    left, right = self._neighbours(r0, c0, h, w)
                    for f, v in zip(self.run.files, views):
                        f.write_direct(r0, c0, v, transposed, left, right,
                                       carry=not transposed)
                    self._add_cell(r0, c0)
            else:
                for f, v in zip(self.run.files, views):
                    f.write(b.i0, b.j0, v)
                    if b.mirror:
                        f.write(b.j0, b.i0, v.T, scratch=self._tbuf)
        finally:  # the slot is reused once this returns: the checksums must be done
            sums = sums_of() if pending is None else pending.result()
        self._add_cells(b)
        with self._cv:
            self._sums[b.index] = sums
            self._written.append(b)
            self._cv.notify()
        self.progress.update(b.elements)

    # -- direct I/O -----------------------------------------------------------------
    def _enable_direct(self):
        """Use page-aligned direct writes (:meth:`NpyBlockFile.enable_direct`) when
        every row segment of a block spans at least one page, i.e. there are at
        least two column bands and none is narrower than a page."""
        p, files = self.plan, self.run.files
        isz = self.run.dtype.itemsize
        last = p.n_cols - (p.n_cols - 1) // p.edge * p.edge
        if (p.n_cols <= p.edge or min(p.edge, last) * isz < PAGE or not files
                or any(f is None for f in files)):
            return False
        if all([f.enable_direct(p.edge) for f in files]):
            return True
        for f in files:
            f.disable_direct()
        return False

    def _neighbours(self, r0, c0, h, w):
        """((first row, other rows), (last row, other rows)): are the segments
        left / right of the rows of the area at (r0, c0) of h × w already stored?
        Left of column 0 is the end of the previous file row (the header for
        row 0); right of the last column the start of the next row."""
        e, cells = self.plan.edge, self._cells
        n_rows, n_cols = self.plan.n_rows, self.plan.n_cols
        band, last_col = r0 // e, (n_cols - 1) // e
        if c0 > 0:
            known = (band, c0 // e - 1) in cells
            left = (known, known)
        else:
            left = (r0 == 0 or ((r0 - 1) // e, last_col) in cells, (band, last_col) in cells)
        if c0 + w < n_cols:
            known = (band, (c0 + w) // e) in cells
            right = (known, known)
        else:
            right = (r0 + h >= n_rows or ((r0 + h) // e, 0) in cells, (band, 0) in cells)
        return left, right

    # -- page cache bookkeeping ---------------------------------------------------
    def _add_cell(self, r0, c0):
        """Record the cell at file rows r0…, columns c0… as stored."""
        e = self.plan.edge
        self._cells.add((r0 // e, c0 // e))

    def _add_cells(self, b):
        for r0, c0, _, _ in self._parts(b):
            self._add_cell(r0, c0)

    def _parts(self, b):
        """(row0, col0, rows, cols) of the file areas a block was stored to."""
        h, w = b.i1 - b.i0, b.j1 - b.j0
        parts = [(b.i0, b.j0, h, w)]
        if b.mirror:
            parts.append((b.j0, b.i0, w, h))
        return parts

    def _drop(self, batch):
        """Drop the blocks' pages; a page shared with a neighbouring cell of the same
        file rows only once that cell is stored and fills the rest of the page."""
        e, n_cols, isz = self.plan.edge, self.plan.n_cols, self.run.dtype.itemsize
        for b in batch:
            for r0, c0, h, w in self._parts(b):
                (_, left), (_, right) = self._neighbours(r0, c0, h, w)
                left = left and c0 > 0 and e * isz >= PAGE
                right = right and c0 + w < n_cols and min(e, n_cols - c0 - w) * isz >= PAGE
                for f in self.run.files:
                    f.drop(r0, c0, h, w, left, right)

    def _sync_loop(self):
        """Wait for the writeback of what the writer has stored, fsync, then journal
        exactly those blocks and drop their pages from the page cache.

        Runs beside the writer, so the disk flushes while the next blocks are
        stored and computed; a block is journaled only after an fsync that
        started after its data was written.
        """
        while True:
            with self._cv:
                while self._writing:
                    wait = self._sync_wait()
                    if wait == 0.0:
                        break
                    self._cv.wait(wait)
                batch, self._written = self._written, []
                entries = [(b.index, self._sums.pop(b.index)) for b in batch]
                self._last_sync = time.monotonic()
                last = not self._writing
            if batch and self.error is None:
                try:
                    if not self._direct:  # direct writes are on the device already
                        for f in self.run.files:
                            for b in batch:
                                for part in self._parts(b):
                                    f.wait_written(*part)
                    for f in self.run.files:
                        f.sync()
                    self.run.journal.mark(entries)
                    if not self._direct:
                        self._drop(batch)
                except BaseException as exc:  # noqa: BLE001 - reported by finish()
                    self.error = exc
            if last:
                with self._cv:
                    if not self._written:
                        return

    def _sync_wait(self):
        """0.0 when stored blocks are due for an fsync, else how long to wait (None:
        until notified).  Buffered writes are synced as they come, direct ones every
        DIRECT_SYNC_SECONDS."""
        if not self._written:
            return None
        if not self._direct:
            return 0.0
        return max(0.0, self._last_sync + DIRECT_SYNC_SECONDS - time.monotonic())

    def _stop_writer(self):
        self._queue.put(None)
        self._writer.join()
        self._syncer.join()
        self._crc_pool.shutdown(wait=True)

    def finish(self):
        self._stop_writer()
        if self.error is not None:
            self.run.close()
            raise self._describe_error(self.error)
        return self.run.complete(self.plan)

    def abort(self):
        """Store what is already computed, then keep partial + journal for a resume."""
        if self._writer.is_alive():
            self._stop_writer()
        self.run.close()

    def _describe_error(self, exc):
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            done = len(self.run.journal.done)
            return OSError(errno.ENOSPC, f"out: no space left on the device while writing "
                           f"{', '.join(self.run.partials)}; nothing was written under "
                           f"{', '.join(self.run.paths)}. Free space and run again with the "
                           f"same arguments to resume from the {done} finished blocks "
                           f"(journal {self.run.journal_path}), or delete those files")
        return exc
