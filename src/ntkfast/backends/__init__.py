"""Backends that fill Gram tiles of Σ and Θ.

A backend is an object with ``name`` and
``fill(spec, X, Z, rows, cols, out_nngp, out_ntk, n_jobs)`` that writes the
block ``K[rows, cols]`` (Z None: K(X, X) where only tiles on/above the diagonal
are requested and mirrored by the backend itself; see :mod:`ntkfast.tiling`).
"""

from __future__ import annotations

from .reference_engine import ReferenceEngine

_COMPILED_ERROR = None
try:  # the compiled extension is optional at import time (e.g. source checkout)
    from .compiled import CompiledEngine
except ImportError as exc:  # pragma: no cover - exercised only without a build
    CompiledEngine = None
    _COMPILED_ERROR = exc

BACKENDS = ("auto", "compiled", "reference", "numba", "cuda")


def compiled_available() -> bool:
    return CompiledEngine is not None


def numba_available() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def get_backend(name, activation):
    """The engine for ``name``.  'auto': compiled for closed forms with a C kernel, numba
    for quadrature activations (and Sin/Cos) when numba is installed, else reference.
    'auto' never picks 'cuda'."""
    if name == "reference":
        return ReferenceEngine()
    if name == "numba":
        from .numba_quad import NumbaQuadEngine
        return NumbaQuadEngine()
    if name == "cuda":
        from .cuda import CudaEngine
        return CudaEngine(activation)
    if name == "auto" and activation.engine_code < 0:
        from .numba_quad import supports
        if supports(activation) and numba_available():
            from .numba_quad import NumbaQuadEngine
            return NumbaQuadEngine()
        return ReferenceEngine()
    if name in ("compiled", "auto"):
        if CompiledEngine is None:
            if name == "compiled":
                raise ImportError(
                    "backend='compiled': the compiled extension ntkfast._engine is not "
                    f"built ({_COMPILED_ERROR}); reinstall with `pip install .`") from _COMPILED_ERROR
            return ReferenceEngine()
        if activation.engine_code < 0:
            if name == "compiled":
                raise ValueError(f"backend='compiled': no compiled kernel for {activation!r}")
            return ReferenceEngine()
        return CompiledEngine()
    valid = ", ".join(repr(b) for b in BACKENDS)
    raise ValueError(f"backend: unknown backend {name!r}; use one of {valid}")
