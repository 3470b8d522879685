"""Threads: the ``n_jobs`` convention of the whole library, and thread-pool limits.

The ``n_jobs`` convention
-------------------------
Every kernel method (``MLP.ntk``, ``serial(...).kernels``, ...),
:func:`ntkfast.kernels_multi`, :func:`ntkfast.sweep.sweep`,
:class:`ntkfast.NystromRegression` and the CLI's ``--jobs`` take ``n_jobs``: the number of
threads of one computation (OpenMP threads of the compiled engines, or worker threads
over row blocks), resolved by :func:`check_n_jobs`:

* ``None`` or ``-1``: every core this process may run on (its CPU affinity);
* ``k > 0``: ``k`` threads, at most the available cores (more threads than cores
  only slow the kernels down, and each holds scratch memory);
* ``-k`` (k >= 2): all cores but ``k - 1``, at least one;
* ``0``, floats and booleans are errors.

The default is all cores because a kernel computation is one large BLAS-like job
(like NumPy's matrix product, which also uses every core).  BLAS inside our own
parallel regions is held single-threaded (:func:`limited`), so the threads never
multiply.

Two defaults differ on purpose; the values keep their meaning.
:mod:`ntkfast.distributed` counts threads per Dask task and defaults to 1 (Dask runs
many tasks at once).  The estimators of :mod:`ntkfast.sklearn` follow scikit-learn's
convention (``None`` means 1 thread unless a ``joblib.parallel_config(n_jobs=...)``
context says otherwise, ``-1`` all cores; :func:`sklearn_n_jobs`), so that an estimator
run inside ``GridSearchCV(..., n_jobs=-1)`` or ``cross_val_score(..., n_jobs=-1)`` does
not oversubscribe the machine.

Thread-pool limits
------------------
threadpoolctl's limits are global to the process, so two threads that each
enter ``threadpool_limits(...)`` and leave in the other order would leave the
*inner* limit in place for good.  :func:`limited` counts the holders of each
(limits, user_api) pair and restores the original limits when the last one leaves.
"""

from __future__ import annotations

import contextlib
import os
import threading

from threadpoolctl import ThreadpoolController

__all__ = ["available_cores", "check_n_jobs", "sklearn_n_jobs", "limited", "map_threads"]

_LOCK = threading.Lock()
_HELD: dict = {}          # (limits, user_api) -> [count, limiter]
_CONTROLLER = None


@contextlib.contextmanager
def limited(limits: int = 1, user_api: str | None = "blas"):
    """Hold ``limits`` threads for ``user_api`` ('blas', 'openmp' or None for all)
    while the block runs (e.g. BLAS single-threaded inside our own parallel loop)."""
    global _CONTROLLER
    key = (int(limits), user_api)
    with _LOCK:
        if _CONTROLLER is None:
            _CONTROLLER = ThreadpoolController()
        held = _HELD.get(key)
        if held is None:
            held = _HELD[key] = [0, _CONTROLLER.limit(limits=key[0], user_api=user_api)]
        held[0] += 1
    try:
        yield
    finally:
        with _LOCK:
            held[0] -= 1
            if held[0] == 0:
                held[1].restore_original_limits()
                del _HELD[key]


def map_threads(fn, items, jobs):
    """[fn(x) for x in items], on up to ``jobs`` threads of our own when there is more
    than one item (for work that releases the GIL: NumPy, BLAS, nogil Numba)."""
    items = list(items)
    jobs = min(int(jobs or 1), len(items))
    if jobs <= 1:
        return [fn(x) for x in items]
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(jobs) as pool:
        return list(pool.map(fn, items))


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def check_n_jobs(n_jobs) -> int:
    """The thread count of ``n_jobs`` in the library's convention (module docstring):
    None or -1 → all available cores; k > 0 → min(k, cores); -k → cores + 1 - k (at
    least 1); 0 is an error."""
    from ._validation import check_int
    ncpu = available_cores()
    if n_jobs is None:
        return ncpu
    n_jobs = check_int(n_jobs, "n_jobs", minimum=-(10**9))
    if n_jobs == 0:
        raise ValueError("n_jobs: must be a positive thread count, -1 for all cores or -k "
                         "for all but k - 1, not 0")
    return max(1, min(n_jobs, ncpu) if n_jobs > 0 else ncpu + 1 + n_jobs)


def sklearn_n_jobs(n_jobs) -> int:
    """The thread count of ``n_jobs`` in scikit-learn's convention (the estimators of
    :mod:`ntkfast.sklearn`): None → 1, unless a ``joblib.parallel_config(n_jobs=...)``
    (or ``parallel_backend``) context sets another value; otherwise as
    :func:`check_n_jobs` (-1 all cores, -k all but k - 1, k > 0 at most the cores)."""
    if n_jobs is None:
        from joblib import effective_n_jobs  # installed with scikit-learn
        n_jobs = effective_n_jobs(None)
    return check_n_jobs(n_jobs)
