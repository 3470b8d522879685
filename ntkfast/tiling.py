"""Output allocation and the block loop around a backend.

``compute_gram`` validates/allocates the outputs and asks the backend to fill
them.  The compiled backend tiles internally (upper-triangle tiles for K(X, X),
OpenMP over tiles); this module owns everything above one in-memory block.
"""

from __future__ import annotations

import numpy as np

from .backends.reference import layer_variances


def _check_out(out, shape, dtype, name):
    if out is None:
        return np.empty(shape, dtype=dtype)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out: expected None or a NumPy array for {name}, got "
                        f"{type(out).__name__}")
    if out.shape != shape or out.dtype != dtype:
        raise ValueError(f"out: {name} output must have shape {shape} and dtype {dtype}, "
                         f"got shape {out.shape} and dtype {out.dtype}")
    if out.strides[1] != out.itemsize or out.strides[0] < shape[1] * out.itemsize:
        raise ValueError("out: the output array must be C-contiguous (row-major)")
    return out


def _split_out(out, want_nngp, want_ntk):
    """`out` may be one array (one kernel requested) or a pair (nngp, ntk)."""
    if out is None:
        return None, None
    if isinstance(out, (tuple, list)):
        if len(out) != 2:
            raise ValueError("out: for kernels() pass a pair (out_nngp, out_ntk)")
        return out[0], out[1]
    if want_nngp and want_ntk:
        raise ValueError("out: kernels() computes two matrices; pass a pair "
                         "(out_nngp, out_ntk)")
    return (out, None) if want_nngp else (None, out)


def compute_gram(engine, spec, X, Z, dtype, want_nngp, want_ntk, *, out=None, tile=None,
                 n_jobs=1, progress=False):
    """Σ(X, Z) and/or Θ(X, Z) (Z=None: X against X), as a pair (None where unwanted)."""
    symmetric = Z is None
    Zm = X if symmetric else Z
    shape = (X.shape[0], Zm.shape[0])
    out_s, out_t = _split_out(out, want_nngp, want_ntk)
    out_s = _check_out(out_s, shape, dtype, "nngp") if want_nngp else None
    out_t = _check_out(out_t, shape, dtype, "ntk") if want_ntk else None
    Xc = np.ascontiguousarray(X, dtype=dtype)
    Zc = Xc if symmetric else np.ascontiguousarray(Zm, dtype=dtype)
    qx = layer_variances(spec, X)
    qz = qx if symmetric else layer_variances(spec, Zm)
    engine.fill(spec, Xc, Zc, out_s, out_t, symmetric=symmetric, dtype=dtype, tile=tile,
                n_jobs=n_jobs, qx=qx, qz=qz)
    return out_s, out_t
