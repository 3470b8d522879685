"""The block planner: how a Gram matrix is cut into blocks ("super tiles").

The engines tile a block into small cache tiles themselves (the compiled one
threads over them); this module decides the larger blocks above them:

* the block edge comes from a memory budget (default 512 MiB of scratch per
  run, 648 MiB for file outputs, less on small machines) and is a multiple of
  256 so that engine cache tiles divide it; ``tile=`` overrides it;
* for K(X, X) only blocks on and above the diagonal are listed; a diagonal
  block is filled by the engine with ``symmetric=True``, an off-diagonal one
  is mirrored below the diagonal by the caller;
* blocks run row band by row band (the X rows of a band are converted once);
* both cores stay busy: an engine that threads internally (the compiled one)
  gets all ``n_jobs`` threads on one block at a time while a writer thread
  stores the previous block; a single-threaded engine (the NumPy reference)
  gets ``n_jobs`` blocks at once instead.

The default edge depends only on the shapes, the dtype, the outputs, the engine
and the machine's total memory, never on momentary free memory, so a resumed
run gets the same blocks (a journal also records the edge it used).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

#: scratch memory a run may use by default (blocks in flight, engine temporaries)
DEFAULT_BUDGET = 512 * 2**20
#: the same for file outputs: two float32 slots of 9216² (peak RSS ~0.8 GB).  Larger
#: blocks mean longer row segments per write (the mirror of a block is written as
#: edge-long pieces of many rows), which the disk takes much faster: about 200, 285 and
#: 350 MB/s for edges 6656, 8192 and 10240 on the reference VM.
FILE_BUDGET = 648 * 2**20
#: block edges are multiples of this (engine cache tiles divide it)
GRANULE = 256
#: a block with progress on is at most this big, so the bar moves
PROGRESS_EDGE = 2048
#: bytes of temporaries per block element, in units of the itemsize, for engines that
#: evaluate a whole block with NumPy (the others only need per-cache-tile scratch)
_ENGINE_TEMPS = {"reference": 16}
#: engines without internal threads: blocks are spread over n_jobs workers instead
_SINGLE_THREADED = {"reference", "network-reference"}


@dataclass(frozen=True)
class Block:
    """Rows i0:i1 against columns j0:j1; ``diagonal``: Z is X and i0:i1 == j0:j1."""

    index: int
    i0: int
    i1: int
    j0: int
    j1: int
    diagonal: bool = False
    mirror: bool = False  # also write the transpose at (j0:j1, i0:i1)

    @property
    def elements(self) -> int:
        """Output elements written (the mirror included)."""
        n = (self.i1 - self.i0) * (self.j1 - self.j0)
        return 2 * n if self.mirror else n


@dataclass(frozen=True)
class Plan:
    n_rows: int
    n_cols: int
    symmetric: bool
    edge: int            # block edge (rows and columns)
    blocks: tuple        # Block, in execution order
    workers: int         # blocks computed concurrently
    engine_jobs: int     # threads handed to the engine per block

    @property
    def elements(self) -> int:
        return self.n_rows * self.n_cols


def total_memory() -> int:
    """Physical memory in bytes (8 GiB if unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 * 2**30


def cache_sizes() -> dict:
    """Per-core L1d/L2 and shared L3 sizes in bytes from sysfs (empty dict if unknown)."""
    sizes = {}
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        entries = sorted(os.listdir(base))
    except OSError:
        return sizes
    for entry in entries:
        try:
            with open(f"{base}/{entry}/level") as f:
                level = f.read().strip()
            with open(f"{base}/{entry}/type") as f:
                kind = f.read().strip()
            with open(f"{base}/{entry}/size") as f:
                text = f.read().strip()
        except OSError:
            continue
        if kind == "Instruction":
            continue
        mult = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        try:
            sizes[f"L{level}"] = int(text.rstrip("KMG")) * mult
        except ValueError:
            continue
    return sizes


def default_budget(to_file=False) -> int:
    """DEFAULT_BUDGET (FILE_BUDGET for file outputs), or 1/8 of physical memory on
    small machines."""
    return int(min(FILE_BUDGET if to_file else DEFAULT_BUDGET, total_memory() // 8))


def block_edge(n_rows, n_cols, *, itemsize, n_outputs, to_file, engine_name, workers=1,
               progress=False, budget=None) -> int:
    """The default block edge for a Gram matrix of n_rows × n_cols.

    Per block element a run holds ``n_outputs`` values in each of ``workers + 1``
    scratch slots (file outputs), plus the engine's own temporaries; the edge is
    the largest multiple of GRANULE that keeps that within ``budget``.  In-RAM outputs with an engine that needs no
    temporaries get one block (a single engine call), or blocks of at most
    PROGRESS_EDGE when a progress bar should move.
    """
    budget = default_budget(to_file) if budget is None else int(budget)
    per_elem = _ENGINE_TEMPS.get(engine_name, 0) * 8 * workers
    if to_file:  # scratch slots (the writer transposes through a few rows only)
        per_elem += (workers + 1) * n_outputs * itemsize
    full = max(n_rows, n_cols)
    if per_elem == 0:
        edge = full
    else:
        edge = int((budget / per_elem) ** 0.5) // GRANULE * GRANULE
        edge = max(GRANULE, edge)
    if progress and per_elem == 0:
        edge = min(edge, PROGRESS_EDGE)
    return max(1, min(edge, full))


def plan_gram(n_rows, n_cols, symmetric, *, itemsize, n_outputs, to_file, engine_name,
              n_jobs=1, tile=None, progress=False, budget=None) -> Plan:
    """Blocks (upper triangle only when ``symmetric``), workers and engine threads."""
    if symmetric and n_rows != n_cols:
        raise ValueError("symmetric plans need a square matrix")
    single = engine_name in _SINGLE_THREADED
    workers = max(1, n_jobs) if single else 1
    engine_jobs = 1 if single else max(1, n_jobs)
    if tile is None:
        edge = block_edge(n_rows, n_cols, itemsize=itemsize, n_outputs=n_outputs,
                          to_file=to_file, engine_name=engine_name, workers=workers,
                          progress=progress, budget=budget)
    else:
        edge = max(1, min(int(tile), max(n_rows, n_cols)))
    blocks = []
    for i0 in range(0, n_rows, edge):
        i1 = min(i0 + edge, n_rows)
        for j0 in range(i0 if symmetric else 0, n_cols, edge):
            j1 = min(j0 + edge, n_cols)
            diag = symmetric and i0 == j0
            blocks.append(Block(len(blocks), i0, i1, j0, j1, diagonal=diag,
                                mirror=symmetric and not diag))
    workers = min(workers, len(blocks))
    return Plan(n_rows, n_cols, symmetric, edge, tuple(blocks), workers, engine_jobs)
