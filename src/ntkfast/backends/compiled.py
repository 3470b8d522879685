"""The compiled backend: ``ntkfast._engine`` (Cython + OpenMP + BLAS per tile).

Accuracy design (see ``src_ext/ntk_recursion.h``):

* Non-smooth activations (ReLU, LeakyReLU, Abs, ABReLU) depend on the angle
  θ = atan2(√D, Σ), D = q(x) q(z) − Σ².  Forming D by subtraction loses
  log10(1/θ²) digits for near-parallel pairs.  The engine computes D exactly for
  the first layer where D < τ q q' (Kahan's formula on the augmented inputs).
  Each layer then runs a fast, division-free step: φ from √D/√(qq') and
  |Σ|/√(qq') by an arcsine polynomial, and the next D' = q'q'' − Σ'² by
  subtraction, which is accurate to ~ε/τ relative wherever D' ≥ τ q'q''.  The
  columns it flags (D' < τ q'q'', or Σ < 0 near θ = π) are redone with the
  cancellation-free update

      D' = g (2m − g) + σ_b² (σ_w² c₀ (√q_x − √q_z)² + 2g),

  where m = σ_w² c₀ √(q_x q_z) and g = σ_w² (c₀ √(q_x q_z) − E[φφ]) is written
  with sin²(θ/2) and the series of sin θ − θ cos θ (a whole vectorised exact step
  when more than 1/8 of a chunk is flagged, as in deep nets where every pair
  becomes near-parallel).  So near-parallel pairs, duplicates and scaled copies
  keep full relative accuracy at every depth.
* Smooth activations (Erf, GELU, Identity) are well-conditioned in Σ.
* The diagonal of K(X, X) is overwritten by the O(N) diagonal recursion
  (θ = 0 exactly), so ``net.ntk(X)`` and ``net.ntk_diag(X)`` agree bitwise
  and the result is exactly symmetric (upper tiles are mirrored).
* Tiny rows of positively homogeneous networks without bias (whose variance
  products would underflow) are rescaled by powers of two and the block scaled
  back (:func:`ntkfast.backends.reference.fill_rescaled`; exact).
"""

from __future__ import annotations

import math
import os
import warnings

import numpy as np

# libgomp's idle threads otherwise spin after each parallel region and starve the
# BLAS threads of the solves that usually follow (eigh 6x slower on 2 cores).
# Read once, when libgomp is loaded (by importing _engine); a user value wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .. import _engine  # noqa: E402
from .._threads import limited  # noqa: E402
from ..activations import ABReLU, Erf
from .reference import diagonal_from_variances, fill_rescaled

#: Environment variable that caps the tile kernel's instruction-set level: "x86-64-v4"
#: (AVX-512), "x86-64-v3" (AVX2 + FMA), "baseline", or "auto"/unset (the best the CPU
#: runs).  Read once at import; :func:`set_isa` changes it at run time.  Every level
#: computes the same formulas (results agree to rounding); v3 on an AVX-512 machine is
#: for comparing the two.
ISA_ENV = "NTKFAST_ISA"


def isa_levels():
    """Instruction-set levels of the FC tile kernel this build and CPU can run."""
    return _engine.isa_levels()


def isa():
    """The level the FC tile kernel runs now (e.g. 'x86-64-v4')."""
    return _engine.isa()


def set_isa(level):
    """Run the FC tile kernel at ``level`` ('x86-64-v4', 'x86-64-v3', 'baseline'; 'auto'
    or None = the best available).  Returns the previous level (to restore it)."""
    previous = _engine.isa()
    if level in (None, "auto", ""):
        level = _engine.isa_levels()[-1]
    _engine.set_isa(level)
    return previous


def _isa_from_env():
    want = os.environ.get(ISA_ENV, "").strip().lower()
    if want in ("", "auto"):
        return
    levels = _engine.isa_levels()
    if want not in _engine.ISA_LEVELS:
        warnings.warn(f"{ISA_ENV}={want!r} is not one of {_engine.ISA_LEVELS + ('auto',)}; "
                      f"using {levels[-1]}", RuntimeWarning, stacklevel=2)
    elif want not in levels:
        warnings.warn(f"{ISA_ENV}={want!r}: this CPU/build runs only {levels}; "
                      f"using {levels[-1]}", RuntimeWarning, stacklevel=2)
    else:
        _engine.set_isa(want)


_isa_from_env()

#: D < τ q(x) q(z) (θ ≲ 0.01 in float64, ≲ 0.1 in float32) → D computed exactly (first
#: layer: Kahan; later layers: the cancellation-free update of the flagged columns).
TAU = {np.dtype(np.float64): 1e-4, np.dtype(np.float32): 1e-2}
#: Default work item: TILE rows × PANEL columns (one GEMM; a taller item packs each column
#: panel for more rows).  Per-thread scratch: TILE·PANEL + 8·PANEL elements (4 MB in
#: float64).
DEFAULT_TILE = 256
PANEL = 2048


def engine_params(spec, d, dtype) -> dict:
    act = spec.activation
    p = dict(act=act.engine_code, depth=spec.depth, w2=spec.w2, b2=spec.b2,
             lam0=spec.lam0, lam=spec.lam, mu=spec.mu,
             w_scale=math.sqrt(spec.w2 / d), b_std=math.sqrt(spec.b2),
             c0=0.0, c1=0.0, apb2h=0.0, ab=0.0, ea2=0.0, eb2=0.0, ec2=0.0,
             tau=TAU[np.dtype(dtype)])
    if isinstance(act, ABReLU):
        a, b = act.a, act.b
        p.update(c0=(a * a + b * b) / 2, c1=(a - b) ** 2 / (2 * math.pi),
                 apb2h=(a + b) ** 2 / 2, ab=a * b)
    elif isinstance(act, Erf):
        p.update(ea2=act.a ** 2, eb2=act.b ** 2, ec2=act.c ** 2)
    return p


def _engine_inputs(X, Z, qx, qz, symmetric, dtype):
    """The engine's C-contiguous inputs: X, Z (Z is X when symmetric), the layer
    variances Q and their square roots R of each side, in ``dtype``."""
    Xc = np.ascontiguousarray(X, dtype=dtype)
    Qx, Rx = np.ascontiguousarray(qx, dtype=dtype), _roots(qx, dtype)
    if symmetric:
        return Xc, Xc, Qx, Rx, Qx, Rx
    return (Xc, np.ascontiguousarray(Z, dtype=dtype), Qx, Rx,
            np.ascontiguousarray(qz, dtype=dtype), _roots(qz, dtype))


def _roots(q, dtype):
    """[√q; 1/√q] stacked (2 (depth+1), n) in ``dtype``, 1/√0 taken as 0 (zero rows)."""
    r = np.sqrt(q)
    with np.errstate(divide="ignore"):
        inv = np.where(r > 0, 1.0 / r, 0.0)
    return np.ascontiguousarray(np.concatenate([r, inv]), dtype=dtype)


class CompiledEngine:
    name = "compiled"

    def fill(self, spec, Xb, Zb, out_nngp, out_ntk, *, symmetric, dtype, tile=None,
             n_jobs=1, qx, qz):
        """Write Σ(Xb, Zb) / Θ(Xb, Zb) into 2-D row-major outputs (either may be None).

        qx, qz: float64 per-layer variances (depth+1, n) from ``layer_variances``.
        """
        fill_rescaled(self._fill, spec, Xb, Zb, out_nngp, out_ntk, symmetric=symmetric,
                      dtype=np.dtype(dtype), tile=tile, n_jobs=n_jobs, qx=qx, qz=qz)

    def _fill(self, spec, Xb, Zb, out_nngp, out_ntk, *, symmetric, dtype, tile=None,
              n_jobs=1, qx, qz):
        dtype = np.dtype(dtype)
        tile = int(tile or DEFAULT_TILE)
        Xc, Zc, Qx, Rx, Qz, Rz = _engine_inputs(Xb, Zb, qx, qz, symmetric, dtype)
        dummy = np.empty((1, 1), dtype=dtype)
        want_s, want_t = out_nngp is not None, out_ntk is not None
        params = engine_params(spec, Xc.shape[1], dtype)
        with limited(1, "blas"):  # our OpenMP loop is the parallelism
            _engine.fill_tiles(params, Xc, Zc, Qx, Rx, Qz, Rz,
                               out_nngp if want_s else dummy, out_ntk if want_t else dummy,
                               want_s, want_t, symmetric, tile, int(n_jobs), PANEL)
        if symmetric:
            sig_diag, ntk_diag = diagonal_from_variances(spec, Xc, qx)
            idx = np.arange(Xc.shape[0])
            if want_s:
                out_nngp[idx, idx] = sig_diag
            if want_t:
                out_ntk[idx, idx] = ntk_diag

    def fill_multi(self, spec, X, Z, outs, s_slot, t_slot, ks, *, symmetric, dtype,
                   tile=None, n_jobs=1, qx, qz, mirror=True):
        """Many kernels of one recursion pass (``spec.depth`` = the deepest layer), as
        ``_engine.fill_tiles_multi``: after layer l, Σ into ``outs[s_slot[l]]`` and the
        Θ of frozen-layer count ``ks[c]`` into ``outs[t_slot[l * len(ks) + c]]`` (-1: not
        recorded).  X, Z already rescaled (no tiny rows); qx, qz their float64 layer
        variances.  The diagonal of K(X, X) is left to the caller.  mirror=False
        (symmetric only): write the upper triangle j > i only, not its transpose."""
        dtype = np.dtype(dtype)
        Xc, Zc, Qx, Rx, Qz, Rz = _engine_inputs(X, Z, qx, qz, symmetric, dtype)
        with limited(1, "blas"):  # our OpenMP loop is the parallelism
            _engine.fill_tiles_multi(engine_params(spec, Xc.shape[1], dtype), Xc, Zc, Qx, Rx,
                                     Qz, Rz, list(outs), list(s_slot), list(t_slot), list(ks),
                                     symmetric, int(tile or DEFAULT_TILE), int(n_jobs), PANEL,
                                     bool(mirror))
