"""Backends that fill Gram tiles of Σ and Θ.

A backend is an object with ``name`` and
``fill(spec, X, Z, rows, cols, out_nngp, out_ntk, n_jobs)`` that writes the
block ``K[rows, cols]`` (Z None: K(X, X) where only tiles on/above the diagonal
are requested and mirrored by the backend itself; see :mod:`ntkfast.outofcore.tiling`).
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


def engine_and_spec(net, example_shape, backend="auto", n_jobs=1):
    """(engine, spec) that compute the kernels of ``net`` (an :class:`ntkfast.MLP` or a
    ``nk.serial`` network) on examples of ``example_shape`` (one example, no batch
    axis): ``engine.fill(spec, ...)`` fills blocks, as :func:`ntkfast.outofcore.tiling.compute_gram`
    and :mod:`ntkfast.distributed` drive it."""
    setup = getattr(net, "_engine_and_spec", None)
    example_shape = tuple(int(n) for n in example_shape)
    if setup is not None:
        return setup(example_shape, backend, n_jobs)
    if len(example_shape) != 1:
        raise ValueError(f"X: {type(net).__name__} takes vectors (N, D), got examples of "
                         f"shape {example_shape}; use nk.serial(...) with Conv/Flatten layers "
                         "for signals and images")
    return get_backend(backend, net.activation), net._spec(example_shape[0])


#: rows per chunk of the MLP's layer variances (bounded float64 temporaries)
ROW_CHUNK = 8192


def row_stats(engine, spec, A, after_chunk=None):
    """What ``engine.fill`` reads of every row (its ``qx``/``qz``), computed once up front:
    a layer-network engine's self pass (``engine.variances``, a ``RowStats``), or the
    MLP's per-layer variances (depth + 1, n) in chunks of :data:`ROW_CHUNK` rows
    (``after_chunk()`` after each, e.g. to drop a memory map's pages)."""
    if hasattr(engine, "variances"):
        return engine.variances(spec, A)
    import numpy as np
    from .reference import layer_variances
    q = np.empty((spec.depth + 1, A.shape[0]))
    for r in range(0, A.shape[0], ROW_CHUNK):
        q[:, r:r + ROW_CHUNK] = layer_variances(spec, A[r:r + ROW_CHUNK])
        if after_chunk is not None:
            after_chunk()
    return q


def check_examples(net, A, name, example_shape=None):
    """``A`` validated as a batch of examples for ``net`` (NaN, shape, dtype), with the
    per-example shape ``example_shape`` when given (Z against X)."""
    check = getattr(net, "_check_examples", None)
    if check is not None:
        return check(A, name, example_shape)
    from .._validation import check_inputs
    return check_inputs(A, name, d=None if example_shape is None else example_shape[0])

