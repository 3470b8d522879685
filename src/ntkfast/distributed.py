"""Gram matrices beyond one machine and beyond RAM, with Dask.

Three entry points, all needing the optional extra ``pip install ntkfast[distributed]``
(``dask[array,distributed]`` and ``zarr``)::

    from ntkfast.distributed import gram_dask, to_zarr, to_npy

    K = gram_dask(net, X, kind="ntk", chunks=4096)    # lazy dask.array, (N, N)
    K[:10, :10].compute()                               # only the blocks needed
    z = to_zarr(net, X, "K.zarr", chunks=4096)          # chunked, resumable store
    m = to_npy(net, X, "/shared/K.npy", chunks=4096)    # one .npy on a shared path

Every block ``K[i0:i1, j0:j1]`` is one Dask task that runs the compiled engine
(:func:`ntkfast.backends.get_backend` ``('auto', net.activation).fill``) on the
two row blocks of X (Z) it needs.  For K(X, X) only blocks on and above the
diagonal are computed; a block below the diagonal is a task that transposes
its mirror image, so it costs no kernel evaluations and the result is exactly
symmetric.  Row blocks of X are separate graph keys, so each is sent to a
worker once (not once per block); the per-layer variances q of each row block
are one small task too.

Determinism: with chunk edges that are multiples of the engine's cache tile
(256; the default 4096 is) the blocks are bit-identical to ``net.ntk(X)`` on
one machine; other edges agree to ≤ 1e-13 relative.

Schedulers
----------
Each function takes ``scheduler=None``: then Dask's default is used, i.e. the
``dask.distributed.Client`` created most recently in this process if there is
one, else the local threaded scheduler.  Pass a ``Client``, or a string such as
``"threads"``/``"sync"``/``"processes"``, to choose.

``n_jobs`` (default 1) is the number of threads each task may use (the engine's
OpenMP threads and BLAS threads are limited to it for the duration of the
task).  Choose ``threads_per_worker × n_jobs ≈ cores per worker process``:
e.g. one single-threaded worker per core with ``n_jobs=1`` (the
``LocalCluster`` default layout), or one worker per node with
``--nthreads 1`` and ``n_jobs=<cores>``.  Workers should also be started with
``OMP_NUM_THREADS``/``OPENBLAS_NUM_THREADS`` set to the same number.

Running on a real cluster
-------------------------
1. Start a scheduler and workers with the same Python environment (ntkfast,
   dask, distributed, zarr installed) on every node, e.g.::

       dask scheduler                                   # on the head node, port 8786
       OMP_NUM_THREADS=16 dask worker tcp://head:8786 --nthreads 1 --nworkers 1
       # or: dask-jobqueue (SLURM/PBS), dask-kubernetes, Coiled, ...

2. Connect from Python, and everything below uses that cluster::

       from dask.distributed import Client
       client = Client("tcp://head:8786")
       z = to_zarr(net, X, "/shared/K.zarr", n_jobs=16)

3. Getting X to the workers.  A NumPy ``X`` is cut into row blocks that travel
   inside the task graph (fine up to a few GB).  For larger data pass X as a
   path to a ``.npy`` file on a filesystem every worker can read (NFS, Lustre,
   ...) - each task memory-maps only the rows it needs - or as a
   ``dask.array`` (e.g. ``da.from_zarr("s3://.../X.zarr")``), whose chunks are
   loaded on the workers.
4. Outputs.  ``to_zarr`` and ``to_npy`` write from the workers, so the path
   must be on a filesystem shared by all workers and the client (for object
   stores use ``gram_dask(...)`` with ``dask.array.to_zarr`` instead, without
   resume).  ``to_zarr`` is resumable: a completion flag is written to the
   store after each finished block, and running the same call again computes
   only the blocks without a flag (also after the client or the whole cluster
   died).  A store made for other inputs, network, shape, dtype or chunks is
   refused with :class:`StoreMismatch`.
5. Faults.  If a worker dies mid-task, Dask reruns its tasks elsewhere (up to
   ``distributed.scheduler.allowed-failures`` times, default 3); blocks are
   pure functions of their inputs and writes go to disjoint regions, so a
   rerun produces the same result.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from . import _validation as V
from ._threads import limited
from .backends import check_examples, engine_and_spec, get_backend, row_stats

__all__ = ["gram_dask", "to_zarr", "to_npy", "StoreMismatch", "DEFAULT_CHUNK"]


def __dir__():  # the API, not this module's imports
    return list(__all__)

#: default block edge (a multiple of the engine's 256 cache tile: bitwise == net.ntk)
DEFAULT_CHUNK = 4096
_FORMAT = 1
_KINDS = ("ntk", "nngp")


class StoreMismatch(ValueError):
    """The zarr store on the path was written for a different computation."""


def _require_dask():
    try:
        import dask  # noqa: F401
        import dask.array  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("ntkfast.distributed needs Dask: pip install "
                          "'ntkfast[distributed]' (dask[array,distributed], zarr)") from exc


def _require_zarr():
    try:
        import zarr
    except ImportError as exc:  # pragma: no cover
        raise ImportError("to_zarr needs zarr: pip install 'ntkfast[distributed]' "
                          "(or pip install zarr)") from exc
    return zarr


# -- per-task thread limits ----------------------------------------------------------
def _thread_limits(n):
    """Limit BLAS and OpenMP pools to n threads while any task of this process runs
    (reference-counted: overlapping tasks do not undo each other's limits)."""
    return limited(int(n), None)


# -- inputs ----------------------------------------------------------------------------
class _Source:
    """Examples of X (or Z): a NumPy array, a shared .npy path, or a dask.array; rows
    (N, D) or, for layer networks, signals/images (N, ..., C).  ``net`` validates them
    (with ``example_shape``: Z must match X's per-example shape)."""

    def __init__(self, A, name, net, example_shape=None):
        self.name = name
        self.path = None
        self.dask = None
        if isinstance(A, (str, os.PathLike)):
            self.path = os.path.abspath(os.fspath(A))
            arr = np.load(self.path, mmap_mode="r")
            self.array = check_examples(net, arr, name, example_shape)  # on the client
            if self.array is not arr:  # ints/bools: the file cannot be used as is
                self.path = None
        elif _is_dask_array(A):
            if A.ndim < 2:
                raise ValueError(f"{name}: expected a dask array of examples (n_samples, "
                                 f"n_features) or (n_samples, ..., channels), got shape "
                                 f"{A.shape}")
            if example_shape is not None and tuple(A.shape[1:]) != tuple(example_shape):
                raise ValueError(f"{name}: has examples of shape {tuple(A.shape[1:])} but X's "
                                 f"are {tuple(example_shape)}")
            if any(np.isnan(s) for s in A.shape):
                raise ValueError(f"{name}: dask array with unknown shape; call "
                                 f"{name}.compute_chunk_sizes() first")
            self.dask = A
            self.array = None
        else:
            self.array = check_examples(net, A, name, example_shape)
        self.shape = tuple(int(s) for s in (A.shape if self.dask is not None
                                              else self.array.shape))

    def dtype_for(self, dtype):
        src = self.dask if self.dask is not None else self.array
        return V.check_dtype(dtype, src)

    def fingerprint(self):
        from .outofcore.journal import content_hash
        if self.dask is not None:
            from dask.base import tokenize
            return {"shape": list(self.shape), "dtype": self.dask.dtype.str,
                    "dask_token": tokenize(self.dask)}
        return {"shape": list(self.shape), "dtype": self.array.dtype.str,
                "blake2b": content_hash(self.array)}

    def row_keys(self, edge, dtype, prefix):
        """{block index: graph value or key} for rows [b·edge, (b+1)·edge), as dtype."""
        from dask.base import tokenize
        n = self.shape[0]
        starts = list(range(0, n, edge))
        dsk = {}
        token = tokenize(prefix, self.fingerprint(), edge, np.dtype(dtype).str)
        name = f"ntkfast-rows-{self.name}-{token}"
        deps = []
        if self.dask is not None:
            A = self.dask.rechunk((edge,) + self.shape[1:])
            deps.append(A)
            rest = (0,) * (len(self.shape) - 1)
            for b in range(len(starts)):
                dsk[(name, b)] = (_as_rows, (A.name, b) + rest, dtype.str)
        elif self.path is not None:
            for b, r0 in enumerate(starts):
                dsk[(name, b)] = (_load_rows, self.path, r0, min(r0 + edge, n), dtype.str)
        else:
            for b, r0 in enumerate(starts):
                dsk[(name, b)] = np.ascontiguousarray(self.array[r0:r0 + edge], dtype=dtype)
        return name, dsk, deps


def _is_dask_array(A):
    try:
        import dask.array as da
    except ImportError:
        return False
    return isinstance(A, da.Array)


def _as_rows(block, dtype):
    block = np.ascontiguousarray(block, dtype=np.dtype(dtype))
    if not np.isfinite(block).all():
        raise ValueError("X: a row block contains NaN or inf")
    return block


def _load_rows(path, r0, r1, dtype):
    arr = np.load(path, mmap_mode="r")
    return np.ascontiguousarray(arr[r0:r1], dtype=np.dtype(dtype))


# -- tasks -------------------------------------------------------------------------------
def _variances(spec, backend, rows):
    """Per-row statistics of a row block: the MLP's layer variances, or the self pass of
    a layer network's engine."""
    return row_stats(_engine_for(spec, backend), spec, rows)


def _engine_for(spec, backend):
    if isinstance(backend, str):
        return get_backend(backend, spec.activation)
    return backend  # an engine object (layer networks, tests, custom engines)


def _fill(spec, backend, kind, Xb, Zb, qx, qz, diagonal, dtype, n_jobs):
    """One block of Σ or Θ, computed by the engine on the worker."""
    dtype = np.dtype(dtype)
    out = np.empty((Xb.shape[0], Zb.shape[0]), dtype=dtype)
    engine = _engine_for(spec, backend)
    with _thread_limits(n_jobs):
        engine.fill(spec, Xb, Zb, out if kind == "nngp" else None,
                    out if kind == "ntk" else None, symmetric=diagonal, dtype=dtype,
                    tile=None, n_jobs=n_jobs, qx=qx, qz=qz)
    return out


def _transpose(block):
    return np.ascontiguousarray(block.T)


# -- argument handling -------------------------------------------------------------------
def _check_kind(kind):
    if kind not in _KINDS:
        raise ValueError(f"kind: must be 'ntk' or 'nngp', got {kind!r}")
    return kind


def _check_chunks(chunks, n_rows, n_cols, symmetric):
    if chunks is None:
        chunks = DEFAULT_CHUNK
    if isinstance(chunks, (tuple, list)):
        if len(chunks) != 2:
            raise ValueError(f"chunks: expected an int or a pair (rows, cols), got {chunks!r}")
        r = V.check_int(chunks[0], "chunks", minimum=1)
        c = V.check_int(chunks[1], "chunks", minimum=1)
        if symmetric and r != c:
            raise ValueError("chunks: K(X, X) needs square blocks (the upper triangle is "
                             f"computed and mirrored); got {chunks!r}, pass one int")
    else:
        r = c = V.check_int(chunks, "chunks", minimum=1)
    r, c = min(r, n_rows), min(c, n_cols)
    if symmetric:
        r = c = min(r, c)
    return r, c


def _chunk_tuple(n, edge):
    return tuple(min(edge, n - s) for s in range(0, n, edge))


class _Problem:
    """Validated arguments shared by the three entry points."""

    def __init__(self, net, X, Z, kind, chunks, dtype, n_jobs, backend):
        _require_dask()
        self.kind = _check_kind(kind)
        self.xs = _Source(X, "X", net)
        self.symmetric = Z is None
        self.zs = self.xs if self.symmetric else _Source(Z, "Z", net, self.xs.shape[1:])
        if dtype is None and not self.symmetric:
            a = np.dtype(self.xs.dtype_for(None))
            b = np.dtype(self.zs.dtype_for(None))
            dtype = np.result_type(a, b)
        self.dtype = np.dtype(self.xs.dtype_for(dtype))
        self.n_jobs = V.check_n_jobs(1 if n_jobs is None else n_jobs)
        if isinstance(backend, str):  # validates the name on the client
            engine, self.spec = engine_and_spec(net, self.xs.shape[1:], backend, self.n_jobs)
            # MLP engines are looked up by name on the worker; layer networks' engine
            # (plain Python) travels with the graph
            backend = engine if hasattr(engine, "variances") else backend
        else:
            _, self.spec = engine_and_spec(net, self.xs.shape[1:], "auto", self.n_jobs)
        self.backend = backend
        self.net = net
        self.shape = (self.xs.shape[0], self.zs.shape[0])
        self.edges = _check_chunks(chunks, *self.shape, self.symmetric)
        self.nb = (len(range(0, self.shape[0], self.edges[0])),
                   len(range(0, self.shape[1], self.edges[1])))

    def engine_name(self):
        if isinstance(self.backend, str):
            return get_backend(self.backend, self.spec.activation).name
        return getattr(self.backend, "name", type(self.backend).__name__)

    def describe(self):
        """A JSON-able description of everything that determines the result."""
        from .outofcore.journal import describe
        s = self.spec
        return {
            "format": _FORMAT, "kind": self.kind, "shape": list(self.shape),
            "chunks": list(self.edges), "dtype": self.dtype.str,
            "X": self.xs.fingerprint(),
            "Z": None if self.symmetric else self.zs.fingerprint(),
            "network": json.loads(json.dumps(s.describe())) if hasattr(s, "describe") else
            {"activation": describe(s.activation), "depth": s.depth, "w2": s.w2,
             "b2": s.b2, "lam0": s.lam0, "lam": s.lam, "mu": s.mu},
            "backend": self.engine_name(),
        }

    def graph(self):
        """(dsk, dependencies, block-key name, upper block keys) of the block tasks."""
        from dask.base import tokenize
        er, ec = self.edges
        token = tokenize(self.describe(), repr(self.backend), self.n_jobs)
        xname, dsk, deps = self.xs.row_keys(er, self.dtype, "x")
        if self.symmetric:
            zname = xname
        else:
            zname, dz, dz_deps = self.zs.row_keys(ec, self.dtype, "z")
            dsk.update(dz)
            deps += dz_deps
        qxname, qzname = f"ntkfast-q-x-{token}", f"ntkfast-q-z-{token}"
        for b in range(self.nb[0]):
            dsk[(qxname, b)] = (_variances, self.spec, self.backend, (xname, b))
        if not self.symmetric:
            for b in range(self.nb[1]):
                dsk[(qzname, b)] = (_variances, self.spec, self.backend, (zname, b))
        else:
            qzname = qxname
        name = f"ntkfast-{self.kind}-{token}"
        for i in range(self.nb[0]):
            for j in range(self.nb[1]):
                if self.symmetric and j < i:
                    dsk[(name, i, j)] = (_transpose, (name, j, i))
                    continue
                diag = self.symmetric and i == j
                dsk[(name, i, j)] = (_fill, self.spec, self.backend, self.kind, (xname, i),
                                     (zname, j), (qxname, i), (qzname, j), diag,
                                     self.dtype.str, self.n_jobs)
        return dsk, deps, name

    def block_bounds(self, i, j):
        er, ec = self.edges
        return (i * er, min((i + 1) * er, self.shape[0]),
                j * ec, min((j + 1) * ec, self.shape[1]))

    def upper_blocks(self):
        return [(i, j) for i in range(self.nb[0]) for j in range(self.nb[1])
                if not (self.symmetric and j < i)]


def _compute(tasks, scheduler):
    import dask
    if not tasks:
        return []
    return dask.compute(*tasks, scheduler=scheduler)


# -- public API ----------------------------------------------------------------------------
def gram_dask(net, X, Z=None, kind="ntk", chunks=None, dtype=None, *, n_jobs=1,
              backend="auto"):
    """K(X, Z) as a lazy ``dask.array`` whose blocks the engine computes on the workers.

    Parameters
    ----------
    net : ntkfast.MLP or a layer network (``nk.serial(...)``)
    X : (N, d) array — or (N, ..., C) signals/images for a layer network — a path to a
        ``.npy`` file every worker can read, or a dask.array
    Z : (M, ...) like X, or None for K(X, X) (upper blocks computed, lower = transposes)
    kind : 'ntk' | 'nngp'
    chunks : int or (rows, cols)
        Block edge (default :data:`DEFAULT_CHUNK` = 4096; multiples of 256 give
        results bit-identical to ``net.ntk``).  K(X, X) needs square blocks.
    dtype : float32 | float64 (default follows X)
    n_jobs : int
        Threads per task (engine OpenMP threads and BLAS); see the module docstring.
    backend : 'auto' | 'compiled' | 'reference'

    Compute it with any scheduler (``.compute()`` uses the default ``Client``
    if one exists), slice it, reduce it, or store it with ``dask.array.to_zarr``.
    """
    import dask.array as da
    from dask.highlevelgraph import HighLevelGraph
    p = _Problem(net, X, Z, kind, chunks, dtype, n_jobs, backend)
    dsk, deps, name = p.graph()
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=deps)
    chunks_ = (_chunk_tuple(p.shape[0], p.edges[0]), _chunk_tuple(p.shape[1], p.edges[1]))
    return da.Array(graph, name, chunks_, dtype=p.dtype)


def _delayed_blocks(p, writer, blocks):
    """A Delayed that computes each requested upper block and calls ``writer(i, j, block)``."""
    from dask.delayed import Delayed
    from dask.highlevelgraph import HighLevelGraph
    from dask.base import tokenize
    dsk, deps, name = p.graph()
    wname = f"ntkfast-write-{tokenize(name, writer)}"
    out = []
    for i, j in blocks:
        key = (wname, i, j)
        dsk[key] = (writer, i, j, (name, i, j))
        out.append(key)
    dsk[wname] = (_count, out)  # one final task; the graph is culled to what it needs
    graph = HighLevelGraph.from_collections(wname, dsk, dependencies=deps)
    return [Delayed(wname, graph)]


def _count(results):
    return len(results)


class _ZarrWriter:
    """Writes a block (and its mirror) into the zarr arrays, then its done flag."""

    def __init__(self, path, kind, symmetric, edges):
        self.path = path
        self.kind = kind
        self.symmetric = symmetric
        self.edges = edges

    def __call__(self, i, j, block):
        zarr = _require_zarr()
        arr = zarr.open_array(store=os.path.join(self.path, self.kind), mode="r+")
        er, ec = self.edges
        i0, j0 = i * er, j * ec
        arr[i0:i0 + block.shape[0], j0:j0 + block.shape[1]] = block
        if self.symmetric and i != j:
            arr[j0:j0 + block.shape[1], i0:i0 + block.shape[0]] = block.T
        done = zarr.open_array(store=os.path.join(self.path, "done"), mode="r+")
        done[i, j] = 1  # written only after the data: a flag means the block is stored
        return 1


def _store_key(meta):
    text = json.dumps(meta, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _describe_diff(old, new):
    names = {"X": "X (content, shape or dtype)", "Z": "Z (content, shape or dtype)",
             "network": "network (depth, activation, w_std, b_std, parameterization, width)",
             "chunks": "chunks", "shape": "shape", "dtype": "dtype", "kind": "kind",
             "backend": "backend", "format": "format"}
    keys = sorted(set(old) | set(new))
    return [names.get(k, k) for k in keys if old.get(k) != new.get(k)]


def to_zarr(net, X, path, Z=None, kind="ntk", chunks=None, dtype=None, *, n_jobs=1,
            backend="auto", scheduler=None, resume=True, overwrite=False, blocks=None):
    """Compute K(X, Z) into a zarr group at ``path``, block by block, resumably.

    The group holds the array ``path/<kind>`` (chunked like the blocks), a
    ``path/done`` array of completion flags (one per block; a flag is written
    after its block is stored) and the attribute ``ntkfast`` describing the
    computation (input hashes, network, shape, dtype, chunks).

    Resume: calling again with the same arguments computes only the blocks
    whose flag is not set (with ``resume=True``, the default).  A store for a
    different computation raises :class:`StoreMismatch`; pass
    ``overwrite=True`` to replace it.  ``blocks`` (a list of (i, j) block
    indices, upper triangle for K(X, X)) computes only those (e.g. to split a
    run into parts).  Returns the zarr array (``zarr.open_group(path)[kind]``).
    Other arguments as :func:`gram_dask`.
    """
    zarr = _require_zarr()
    p = _Problem(net, X, Z, kind, chunks, dtype, n_jobs, backend)
    path = os.path.abspath(os.fspath(path))
    meta = p.describe()
    meta["key"] = _store_key(meta)
    group = _open_store(zarr, path, p, meta, resume, overwrite)
    done = np.asarray(group["done"][...], dtype=bool)
    wanted = p.upper_blocks() if blocks is None else _check_blocks(blocks, p)
    pending = [(i, j) for i, j in wanted if not done[i, j]]
    writer = _ZarrWriter(path, p.kind, p.symmetric, p.edges)
    _compute(_delayed_blocks(p, writer, pending), scheduler)
    return zarr.open_group(path, mode="r")[p.kind]


def _check_blocks(blocks, p):
    out = []
    upper = set(p.upper_blocks())
    for b in blocks:
        try:
            i, j = (int(v) for v in b)
        except (TypeError, ValueError):
            raise ValueError(f"blocks: expected (i, j) block indices, got {b!r}") from None
        if (i, j) not in upper:
            raise ValueError(f"blocks: ({i}, {j}) is not a block of the {p.nb[0]}x{p.nb[1]} "
                             "block grid" + (" on or above the diagonal" if p.symmetric else ""))
        out.append((i, j))
    return out


def _open_store(zarr, path, p, meta, resume, overwrite):
    exists = os.path.exists(path)
    if exists and not overwrite:
        try:
            group = zarr.open_group(path, mode="r+")
            old = dict(group.attrs.get("ntkfast", {}))
        except Exception as exc:  # noqa: BLE001 - not a zarr group at all
            raise StoreMismatch(f"path: {path!r} exists and is not an ntkfast zarr store "
                                f"({exc}); choose another path or pass overwrite=True") from None
        if not old:
            raise StoreMismatch(f"path: {path!r} is a zarr store not written by "
                                "ntkfast.distributed.to_zarr; choose another path or pass "
                                "overwrite=True")
        if old.get("key") != meta["key"]:
            diff = _describe_diff(old, meta) or ["the store key"]
            raise StoreMismatch(
                f"path: the zarr store {path!r} was written for a different computation "
                f"({', '.join(d for d in diff if d != 'key')} differ); it cannot be resumed "
                "with these arguments. Delete it, choose another path, or pass overwrite=True")
        if not resume:
            group["done"][...] = 0
        return group
    group = zarr.open_group(path, mode="w")
    group.zeros(name=p.kind, shape=p.shape, chunks=p.edges, dtype=p.dtype)
    group.zeros(name="done", shape=p.nb, chunks=(1, 1), dtype="u1")
    group.attrs["ntkfast"] = meta  # last: a store without it is not resumable
    return group


class _NpyWriter:
    def __init__(self, path, symmetric, edges):
        self.path = path
        self.symmetric = symmetric
        self.edges = edges

    def __call__(self, i, j, block):
        arr = np.lib.format.open_memmap(self.path, mode="r+")
        er, ec = self.edges
        i0, j0 = i * er, j * ec
        arr[i0:i0 + block.shape[0], j0:j0 + block.shape[1]] = block
        if self.symmetric and i != j:
            arr[j0:j0 + block.shape[1], i0:i0 + block.shape[0]] = block.T
        arr.flush()
        del arr
        return 1


def to_npy(net, X, path, Z=None, kind="ntk", chunks=None, dtype=None, *, n_jobs=1,
           backend="auto", scheduler=None):
    """Compute K(X, Z) into one ``.npy`` file at ``path`` (on a filesystem shared by
    all workers); each task opens it with ``open_memmap(mode='r+')`` and writes
    its block (and the mirrored block).  Returns a read-only memory map.
    Not resumable (use :func:`to_zarr` for that).  Arguments as :func:`gram_dask`.
    """
    p = _Problem(net, X, Z, kind, chunks, dtype, n_jobs, backend)
    path = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"path: directory {folder!r} does not exist; create it first")
    m = np.lib.format.open_memmap(path, mode="w+", dtype=p.dtype, shape=p.shape)
    del m
    writer = _NpyWriter(path, p.symmetric, p.edges)
    _compute(_delayed_blocks(p, writer, p.upper_blocks()), scheduler)
    return np.load(path, mmap_mode="r")
