"""Process-wide thread-pool limits that nest and overlap safely.

threadpoolctl's limits are global to the process, so two threads that each
enter ``threadpool_limits(...)`` and leave in the other order would leave the
*inner* limit in place for good.  :func:`limited` counts the holders of each
(limits, user_api) pair and restores the original limits when the last one leaves.
"""

from __future__ import annotations

import contextlib
import threading

from threadpoolctl import ThreadpoolController

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
