"""Many kernels from one pass: every depth and every frozen-layer count at once.

The depth recursion of :mod:`ntkfast._spec` visits the kernels of all shallower
networks on its way: after the first Dense and ``l`` [Activation, Dense] steps
the running Σ is the NNGP kernel of the depth-``l`` network.  The NTK of a
network whose bottom layers are *frozen* (not trained) differs only in which
layers' parameter-gradient terms enter Θ, so it can be carried along the same
pass as well.  :func:`kernels_multi` returns all of them from one recursion.

Frozen-layer convention (Arora et al. 2020, "Harnessing the power of infinitely
wide deep nets on small-data tasks", ``fix_dep`` in their code)
------------------------------------------------------------------------------
Number the Dense layers 1 … depth+1 from the input (Dense depth+1 is the
readout).  In Θ every Dense layer contributes the term of the gradient with
respect to its own parameters (its "Σ term"), and every later activation
multiplies what is below it by σ_w² Ė:

    Θ¹ = [k < 1] · (λ₀ g + μ)
    Θ^{l+1} = σ_w² Ė^l · Θ^l + [k < l+1] · (λ E^l + μ)        l = 1 … depth

With ``k`` frozen layers (Dense 1 … k fixed at initialisation, the others
trained) the terms of Dense 1 … k are dropped: the recursion starts from Θ = 0
and adds the Σ terms from Dense k+1 on.  ``k = 0`` is the ordinary NTK;
``k = depth`` trains only the readout (Θ = λ E + μ, which equals the NNGP
kernel Σ in the 'ntk' parameterization); ``k = depth + 1`` would freeze
everything (Θ = 0) and is not allowed.  In Arora et al.'s ``NTK.py`` their
``K[dep][fix_dep]`` is our (depth = dep, k = fix_dep) for a ReLU network with
σ_w = 1, no bias, up to the constant 1/d of g = x·z/d.  Σ does not depend on k.

Engines
-------
Closed-form activations (ReLU family, Erf, GELU, Identity) run in the compiled
engine (``backend='auto'`` or ``'compiled'``): its tile kernel records Σ after
every requested layer and Θ of every frozen count k straight into the output
rows during the one pass (one GEMM per tile, the recursion once; the frozen
chains reuse each layer's E, Ė), in the output dtype, with the engine's
exact-angle arithmetic, so every kernel equals ``MLP(depth).kernels`` to
rounding.  The cost above one single kernel is writing the extra matrices: their
first touch (page faults) when new, memory bandwidth when reused (``out=``); a
consumer that reads one triangle asks for ``symmetrize=False`` and skips the
transposed writes (:func:`ntkfast.sweep` does).
Other activations, and ``exact_angles=False``, use the NumPy pass below
(``backend='numpy'``).

Numerics of the NumPy pass
--------------------------
Blocked over row tiles of X (the working set is O(tile × M × (2 + #k))
float64 numbers; the outputs themselves are N × M each).  Smooth activations
use :meth:`Activation.kernel_rule`.  The ABReLU family (ReLU, LeakyReLU, Abs)
carries D = q(x)q(z) − Σ² through the layers with the cancellation-free update
of the compiled engine (see :mod:`ntkfast.backends.compiled`; near-parallel
pairs of the first layer get D from Kahan's angle formula), so duplicates and
near-duplicates keep full relative accuracy and every kernel equals
``MLP(depth=d, ...).kernels(X, Z)`` to rounding (≈1e-15 relative); pass
``exact_angles=False`` for the textbook rule ``kernel_rule`` of the NumPy
reference backend instead.  Arithmetic is float64; outputs are cast to
``dtype``.  Tiny inputs are handled as by :class:`ntkfast.MLP` in float64: rows whose
layer variances leave the float64 window are rescaled by exact powers of two when the
network is positively homogeneous (ReLU-like or identity, no bias, 'ntk'), and every
(depth, k) kernel is scaled back exactly (K(a x, b z) = a b K(x, z)); otherwise such
inputs are rejected with the single-depth path's error
(:func:`ntkfast._validation.check_tiny_variances`).  For K(X, X) only tiles on and above the diagonal are computed and
mirrored (exactly symmetric), and the diagonal is the O(N) diagonal recursion
(θ = 0), as in :meth:`MLP.kernels`.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import _validation as V
from ._alloc import aligned as _aligned
from ._threads import limited
from ._spec import RecursionSpec
from .activations import ABReLU
from .backends.reference import layer_variances, rescale_rows, tiny_row_exponents, unscale
from .network import Kernels

__all__ = ["kernels_multi", "MultiKernels"]


def __dir__():  # the API, not this module's imports
    return list(__all__)

#: first-layer D < TAU q(x) q(z): recompute D exactly (as the compiled engine does)
TAU = 1e-4
#: default tile: about this many float64 entries per working array
_TILE_ELEMS = 1 << 17
_SERIES_CUT = 0.5


class MultiKernels(dict):
    """``{(depth, k): Kernels(nngp, ntk)}`` from :func:`kernels_multi`.

    ``nngp`` arrays are shared by all k of one depth (Σ does not depend on k);
    an entry is None where it was not requested (``get``).  Pairs with
    k > depth are absent.  Helpers: :meth:`nngp` and :meth:`ntk`.
    """

    depths: tuple
    frozen_layers: tuple
    #: False for ``kernels_multi(X, symmetrize=False)``: only the upper triangle
    #: (j >= i) of each K(X, X) holds the kernel (see :func:`kernels_multi`)
    symmetrized: bool = True

    def nngp(self, depth):
        """Σ of the depth-``depth`` network."""
        return self[(depth, self._some_k(depth))].nngp

    def ntk(self, depth, frozen_layers=0):
        """Θ of the depth-``depth`` network with ``frozen_layers`` bottom layers frozen."""
        return self[(depth, frozen_layers)].ntk

    def _some_k(self, depth):
        for (d, k) in self:
            if d == depth:
                return k
        raise KeyError(f"depth {depth} was not computed; depths: {self.depths}")


def _as_int_list(values, name, minimum, maximum=None):
    if values is None:
        return None
    if isinstance(values, (int, np.integer)) and not isinstance(values, bool):
        values = [values]
    try:
        seq = list(values)
    except TypeError:
        raise TypeError(f"{name}: expected an integer or a sequence of integers, "
                        f"got {values!r}") from None
    if not seq:
        raise ValueError(f"{name}: must not be empty")
    out = [V.check_int(v, name, minimum=minimum) for v in seq]
    if maximum is not None and max(out) > maximum:
        raise ValueError(f"{name}: {max(out)} is larger than {maximum}")
    return sorted(set(out))


def _s_series(t):
    """sin t − t cos t for t < 0.5 (the engine's Taylor series, same coefficients)."""
    u = t * t
    u2 = u * u
    u4 = u2 * u2
    p01 = 1.0 / 3.0 - u * (1.0 / 30.0)
    p23 = 1.0 / 840.0 - u * (1.0 / 45360.0)
    p45 = 1.0 / 3991680.0 - u * (1.0 / 518918400.0)
    p67 = 1.0 / 93405312000.0 - u * (1.0 / 22230464256000.0)
    return t * u * ((p01 + u2 * p23) + u4 * (p45 + u2 * p67))


def _abrelu_step(act, spec, S, D, rx, rz):
    """(E, Ė, D') of one [ABReLU, Dense] step without cancellation (engine algorithm).

    phi = atan2(√D, |S|); θ = phi (S ≥ 0) or π − phi (S < 0);
    r·s(phi) = √D − phi|S| (series for phi < 0.5); the gap √(E_x E_z) − E gives
    D' = g(2m − g) + σ_b²(σ_w² c₀ (r_x − r_z)² + 2g), g = σ_w²·gap, m = σ_w² c₀ r.
    """
    a, b = act.a, act.b
    c0 = (a * a + b * b) / 2
    c1 = (a - b) ** 2 / (2 * math.pi)
    apb2h = (a + b) ** 2 / 2
    ab = a * b
    w2, b2 = spec.w2, spec.b2
    sq = np.sqrt(D)
    aS = np.abs(S)
    phi = np.arctan2(sq, aS)
    r = rx * rz
    neg = S < 0
    small = phi < _SERIES_CUT
    with np.errstate(divide="ignore", invalid="ignore"):
        hphi = np.where(small, r * _s_series(phi), sq - phi * aS)
        half = D / (2 * r * (r + aS))
    ok = r > 0
    e = np.where(neg, c1 * hphi - ab * aS, c0 * S + c1 * hphi)
    edot = np.where(neg, ab + c1 * phi, c0 - c1 * phi)
    gap = np.where(neg, r * (apb2h - 2 * ab * half), r * (2 * c0 * half)) - c1 * hphi
    if not ok.all():
        e = np.where(ok, e, 0.0)
        edot = np.where(ok, edot, c0 - c1 * math.pi / 2)
        gap = np.where(ok, gap, 0.0)
    gw = w2 * gap
    dr = rx - rz
    dnew = gw * (2 * (w2 * c0) * r - gw) + b2 * ((w2 * c0) * dr * dr + 2 * gw)
    return e, edot, np.maximum(dnew, 0.0)


def _first_layer_gap(spec, d, X, Z, qx0, qz0, rows, cols):
    """Exact D = q q' sin²θ for the pairs (rows[i], cols[i]) (Kahan's angle)."""
    ws = math.sqrt(spec.w2 / d)
    bs = math.sqrt(spec.b2)
    out = np.empty(rows.size)
    step = max(1, (1 << 20) // max(d, 1))
    for s in range(0, rows.size, step):
        ri, ci = rows[s:s + step], cols[s:s + step]
        xa = ws * np.asarray(X[ri], dtype=np.float64)
        za = ws * np.asarray(Z[ci], dtype=np.float64)
        nx = bs * bs + np.einsum("ij,ij->i", xa, xa)
        nz = bs * bs + np.einsum("ij,ij->i", za, za)
        good = (nx > 0) & (nz > 0)
        with np.errstate(divide="ignore"):
            ix = np.where(good, 1.0 / np.sqrt(nx), 0.0)
            iz = np.where(good, 1.0 / np.sqrt(nz), 0.0)
        A = xa * ix[:, None]
        B = za * iz[:, None]
        u2 = (bs * ix - bs * iz) ** 2 + np.einsum("ij,ij->i", A - B, A - B)
        v2 = (bs * ix + bs * iz) ** 2 + np.einsum("ij,ij->i", A + B, A + B)
        out[s:s + step] = np.where(good, qx0[ri] * qz0[ci] * u2 * v2 * 0.25, 0.0)
    return out


class _Plan:
    """What to record: depths, frozen counts, which kernels."""

    def __init__(self, depths, ks, want_nngp, want_ntk):
        self.depths = depths
        self.ks = ks
        self.want_nngp = want_nngp
        self.want_ntk = want_ntk
        self.max_depth = max(depths)
        self.keys = [(d, k) for d in depths for k in ks if k <= d]


def _block(spec, plan, exact, X, Z, qx, qz, rxs, rzs, i0, i1, j0, diag_offset, outs):
    """Compute rows i0:i1 of X against Z[j0:] and write them into ``outs``."""
    act = spec.activation
    d = X.shape[1]
    Xb = X[i0:i1]
    Zb = Z[j0:]
    g = (Xb.astype(np.float64, copy=False) @ Zb.T.astype(np.float64, copy=False)) * (1.0 / d)
    S = spec.w2 * g + spec.b2
    qx_b = qx[:, i0:i1, None]
    qz_b = qz[:, None, j0:]
    diag = None
    if diag_offset is not None:  # the entries (i, i) of a symmetric block
        ii = np.arange(i1 - i0)
        diag = (ii, ii + diag_offset)
        S[diag] = qx[0, i0:i1]
    use_gap = exact and isinstance(act, ABReLU) and plan.max_depth > 0
    D = None
    if use_gap:
        D = np.maximum(qx_b[0] * qz_b[0] - S * S, 0.0)
        if diag is not None:
            D[diag] = 0.0
        qq = qx_b[0] * qz_b[0]
        flag = D < TAU * qq
        if diag is not None:
            flag[diag] = False
        r_, c_ = np.nonzero(flag)
        if r_.size:
            D[r_, c_] = _first_layer_gap(spec, d, X, Z, qx[0], qz[0], r_ + i0, c_ + j0)
    ntk_of = {}
    if plan.want_ntk and 0 in plan.ks:
        ntk_of[0] = spec.lam0 * g + spec.mu

    def record(depth):
        if depth not in plan.depths:
            return
        for k in plan.ks:
            if k > depth:
                continue
            o_s, o_t = outs[(depth, k)]
            if o_s is not None and k == plan.ks[0]:
                o_s[i0:i1, j0:] = S
            if o_t is not None:
                o_t[i0:i1, j0:] = ntk_of[k]

    record(0)
    for layer in range(1, plan.max_depth + 1):
        if use_gap:
            e, edot, D = _abrelu_step(act, spec, S, D, rxs[layer - 1][i0:i1, None],
                                      rzs[layer - 1][None, j0:])
        else:
            e, edot = act.kernel_rule(S, qx_b[layer - 1], qz_b[layer - 1])
        if plan.want_ntk:
            le = spec.lam * e
            for k in plan.ks:
                if k < layer:  # same association as the engines
                    ntk_of[k] = spec.w2 * edot * ntk_of[k] + le + spec.mu
                elif k == layer:
                    ntk_of[k] = le + spec.mu  # Θ was 0 below: Dense k+1 is the first trained
        S = spec.w2 * e + spec.b2
        if diag is not None:
            S[diag] = qx[layer, i0:i1]
        record(layer)


def _diagonals(spec, plan, X, q):
    """{(depth, k): (Σ(x_i, x_i), Θ(x_i, x_i))} by the O(N) recursion (θ = 0)."""
    d = X.shape[1]
    x64 = np.asarray(X, dtype=np.float64)
    g = np.einsum("ij,ij->i", x64, x64) / d
    thetas = {0: spec.lam0 * g + spec.mu} if 0 in plan.ks else {}
    out = {}

    def record(depth):
        if depth in plan.depths:
            for k in plan.ks:
                if k <= depth:
                    out[(depth, k)] = (q[depth], thetas.get(k))

    record(0)
    for layer in range(1, plan.max_depth + 1):
        e, edot = spec.activation.diag_rule(q[layer - 1])
        for k in plan.ks:
            if k < layer:
                thetas[k] = spec.w2 * edot * thetas[k] + spec.lam * e + spec.mu
            elif k == layer:
                thetas[k] = spec.lam * e + spec.mu
        record(layer)
    return out


def kernels_multi(net, X, Z=None, depths=None, frozen_layers=(0,), *, get="both",
                  dtype=None, tile=None, n_jobs=None, exact_angles=True,
                  backend="auto", out=None, symmetrize=True) -> MultiKernels:
    """The kernels of several depths and frozen-layer counts from ONE recursion pass.

    Parameters
    ----------
    net : ntkfast.MLP
        Activation, σ_w, σ_b, parameterization and width; its ``depth`` is the
        default largest depth.
    X, Z : (N, d), (M, d) arrays
        ``Z=None``: K(X, X), exactly symmetric.
    depths : int or sequence of int >= 0, optional
        Depths (hidden layers) to return; default ``1 … net.depth``
        (``[0]`` if ``net.depth == 0``).  May exceed ``net.depth``.
    frozen_layers : int or sequence of int >= 0
        Numbers k of frozen bottom Dense layers for Θ (Arora et al.'s
        ``fix_dep``; see the module docstring for the exact recursion).
        0 = the ordinary NTK.  Every k must be <= max(depths); the pairs with
        k > depth are skipped.
    get : {'both', 'ntk', 'nngp'}
        Which kernels to keep (the other field of each ``Kernels`` is None).
    dtype : float32 | float64, optional
        Output dtype (default follows X); the arithmetic is float64 in the NumPy
        pass, ``dtype`` in the compiled engine (as :meth:`MLP.kernels`).
    tile : int, optional
        Rows of X per block (default: about 128k entries per working array).
    n_jobs : int, optional
        Threads over row blocks (None or -1: all cores).
    exact_angles : bool
        ABReLU family: carry D = q q' − Σ² without cancellation, as the
        compiled engine (default); False: the textbook ``kernel_rule``, as the
        NumPy reference backend (NumPy pass only).
    backend : {'auto', 'compiled', 'numpy' (alias 'reference')}
        'compiled': the C engine records every (depth, k) kernel in its one tiled
        pass (closed-form activations; arithmetic in ``dtype``, as
        :meth:`MLP.kernels`).  'numpy': the blocked NumPy pass of this module
        (float64 arithmetic; any activation).  'auto': compiled when it applies.
    out : MultiKernels, optional
        The result of an earlier call with the same depths, frozen_layers, get,
        shapes and dtype: its arrays are overwritten in place and returned (no
        allocation, no page faults: a repeated sweep writes at memory speed).
    symmetrize : bool
        K(X, X) only.  True (default): full, exactly symmetric matrices.  False:
        only the upper triangle j >= i (diagonal included) is computed and written,
        for consumers that read one triangle (LAPACK ``uplo='U'``, e.g.
        ``scipy.linalg.eigh(K, lower=False)``, as :func:`ntkfast.sweep` does); the
        strictly lower triangle is not the kernel: 0 in arrays allocated here (each
        array equals ``np.triu(K)``; the zero pages below the diagonal are never
        written), unspecified in ``out`` arrays.  The result's ``symmetrized`` is
        False.  Saves the transposed write of every tile (about half the memory
        traffic of the pass).

    Returns
    -------
    MultiKernels
        ``{(depth, k): Kernels(nngp, ntk)}``; each equals
        ``MLP(depth=depth, ...).kernels(X, Z)`` (and, for k > 0, the frozen
        recursion) to rounding (its upper triangle with ``symmetrize=False``).
    """
    from .network import MLP

    if not isinstance(net, MLP):
        raise TypeError(f"net: expected an ntkfast.MLP, got {type(net).__name__}")
    if get not in ("both", "ntk", "nngp"):
        raise ValueError(f"get: must be 'both', 'ntk' or 'nngp', got {get!r}")
    X, Z, dt = V.check_pair(X, Z, dtype)
    if depths is None:
        depths = list(range(1, net.depth + 1)) or [0]
    depths = _as_int_list(depths, "depths", 0)
    ks = _as_int_list(frozen_layers, "frozen_layers", 0)
    if max(ks) > max(depths):
        raise ValueError(f"frozen_layers: k = {max(ks)} exceeds the largest depth "
                         f"{max(depths)} (k = depth trains only the readout)")
    if tile is not None:
        tile = V.check_int(tile, "tile", minimum=1)
    n_threads = V.check_n_jobs(n_jobs)
    if not isinstance(symmetrize, (bool, np.bool_)):
        raise TypeError(f"symmetrize: expected True or False, got {symmetrize!r}")
    if not symmetrize and Z is not None:
        raise ValueError("symmetrize=False: only for K(X, X) (Z=None); K(X, Z) has no "
                         "symmetry to skip")
    want_nngp, want_ntk = get in ("both", "nngp"), get in ("both", "ntk")
    plan = _Plan(depths, ks, want_nngp, want_ntk)
    engine = _compiled_engine(backend, net.activation, exact_angles)

    spec = RecursionSpec.build(net.activation, plan.max_depth, net.w_std, net.b_std,
                               net.parameterization, net.width, X.shape[1])
    symmetric = Z is None
    # Tiny rows (issue 17; the arithmetic is float64 in the NumPy pass, dt in the engine):
    # rejected where no exact identity rescues them, else rescaled by powers of two and
    # every kernel scaled back below.
    arith = np.dtype(dt) if engine is not None else np.dtype(np.float64)
    V.check_tiny_variances(spec, X, Z, arith)
    qx = layer_variances(spec, X)
    kx = tiny_row_exponents(spec, X, qx, arith)
    X, qx = _rescaled(spec, X, qx, kx, arith)
    if symmetric:
        Zm, qz, kz = X, qx, kx
    else:
        qz = layer_variances(spec, Z)
        kz = tiny_row_exponents(spec, Z, qz, arith)
        Zm, qz = _rescaled(spec, Z, qz, kz, arith)
    n, m = X.shape[0], Zm.shape[0]
    mirror = symmetric and bool(symmetrize)
    result = MultiKernels()
    result.depths = tuple(depths)
    result.frozen_layers = tuple(ks)
    result.symmetrized = bool(symmetrize)
    if out is not None:
        outs = _reused_outputs(out, plan, (n, m), dt, X, Z)
    else:
        # uninitialised: first touched by the pass's own (parallel) writers.  Upper
        # triangles only: zeroed, whose untouched pages below the diagonal stay zero pages.
        outs = _allocate(plan, (n, m), dt, symmetric and not mirror)
    for key, (o_s, o_t) in outs.items():
        result[key] = Kernels(o_s, o_t)

    if engine is not None:
        _compiled_pass(engine, spec, plan, X, Zm, qx, qz, outs, symmetric, dt, tile,
                       n_threads, mirror)
    else:
        _numpy_pass(spec, plan, exact_angles, X, Zm, qx, qz, outs, symmetric, tile,
                    n_threads, mirror)

    if symmetric:
        idx = np.arange(n)
        for key, (ds, dtt) in _diagonals(spec, plan, X, qx).items():
            o_s, o_t = outs[key]
            if o_s is not None:
                o_s[idx, idx] = ds
            if o_t is not None:
                o_t[idx, idx] = dtt
    if kx is not None or kz is not None:
        for arr in _distinct(outs):
            unscale(arr, kx, kz)
    return result


def _allocate(plan, shape, dt, zero):
    """{(depth, k): (nngp, ntk)} of new ``_aligned`` arrays (one Σ per depth)."""
    outs = {}
    for depth in plan.depths:
        s_arr = _aligned(shape, dt, zero) if plan.want_nngp else None
        for k in plan.ks:
            if k <= depth:
                t_arr = _aligned(shape, dt, zero) if plan.want_ntk else None
                outs[(depth, k)] = (s_arr, t_arr)
    return outs


def _uninitialised(depths, frozen_layers, get, n, dtype=np.float64):
    """A MultiKernels of uninitialised N × N arrays to pass as ``out=`` with
    ``symmetrize=False`` by a consumer that reads the upper triangles only
    (:func:`ntkfast.sweep`): the strictly lower triangles then stay garbage, without
    the cost of zero pages."""
    plan = _Plan(sorted(set(depths)), sorted(set(frozen_layers)), get in ("both", "nngp"),
                 get in ("both", "ntk"))
    result = MultiKernels()
    for key, (o_s, o_t) in _allocate(plan, (n, n), np.dtype(dtype), False).items():
        result[key] = Kernels(o_s, o_t)
    return result


def _reused_outputs(out, plan, shape, dt, X, Z):
    """{(depth, k): (nngp, ntk)} of an earlier result ``out`` (see :func:`kernels_multi`),
    checked: the same (depth, k) keys and kernels, one Σ per depth shared by its k, every
    array of ``shape`` and ``dt``, rows contiguous, writeable, no two overlapping nor
    overlapping the inputs."""
    if not isinstance(out, dict):
        raise TypeError("out: expected the MultiKernels of an earlier kernels_multi call "
                        f"(same depths, frozen_layers, get, shapes, dtype), got "
                        f"{type(out).__name__}")
    if sorted(out) != sorted(plan.keys):
        raise ValueError(f"out: has the (depth, k) kernels {sorted(out)}, this call "
                         f"computes {sorted(plan.keys)}; pass the result of a call with "
                         "the same depths and frozen_layers")
    outs, sigma_of = {}, {}
    for key in plan.keys:
        entry = out[key]
        pair = (getattr(entry, "nngp", None), getattr(entry, "ntk", None))
        for name, arr, want in zip(("nngp", "ntk"), pair, (plan.want_nngp, plan.want_ntk)):
            if (arr is None) == want:
                raise ValueError(f"out[{key}].{name}: {'missing' if want else 'given'}; "
                                 "pass the result of a call with the same get=")
            if arr is None:
                continue
            if not isinstance(arr, np.ndarray) or arr.shape != shape or arr.dtype != dt:
                raise ValueError(f"out[{key}].{name}: expected an ndarray of shape {shape} "
                                 f"and dtype {dt}, got {getattr(arr, 'shape', None)} "
                                 f"{getattr(arr, 'dtype', None)}")
            if arr.strides[1] != arr.itemsize or not arr.flags.writeable:
                raise ValueError(f"out[{key}].{name}: must be writeable with contiguous rows")
        if pair[0] is not None and sigma_of.setdefault(key[0], pair[0]) is not pair[0]:
            raise ValueError(f"out[{key}].nngp: Σ does not depend on k, so every k of depth "
                             f"{key[0]} must share one nngp array (as kernels_multi returns)")
        outs[key] = pair
    ntks = [p[1] for p in outs.values() if p[1] is not None]
    if len({id(a) for a in ntks}) != len(ntks) or \
            {id(a) for a in sigma_of.values()} & {id(a) for a in ntks}:
        raise ValueError("out: every (depth, k) Θ needs its own array, distinct from the Σ "
                         "arrays")
    distinct = _distinct(outs)
    inputs = [X] if Z is None else [X, Z]
    for i, a in enumerate(distinct):
        for b in distinct[i + 1:] + inputs:
            if np.may_share_memory(a, b):
                raise ValueError("out: its arrays overlap each other or the inputs")
    return outs


def _numpy_pass(spec, plan, exact, X, Z, qx, qz, outs, symmetric, tile, n_threads,
                mirror=True):
    """Every (depth, k) kernel of ``outs`` by the blocked NumPy recursion (float64);
    K(X, X) without ``mirror``: the upper triangle (j >= i) only."""
    n, m = X.shape[0], Z.shape[0]
    rxs = np.sqrt(qx)
    rzs = rxs if symmetric else np.sqrt(qz)
    if tile is None:
        tile = max(1, min(n, _TILE_ELEMS // max(m, 1)))
    starts = list(range(0, n, tile))

    def work(i0):
        i1 = min(i0 + tile, n)
        j0 = i0 if symmetric else 0
        _block(spec, plan, exact, X, Z, qx, qz, rxs, rzs, i0, i1, j0,
               0 if symmetric else None, outs)
        if mirror:
            _mirror_block(outs, i0, i1)
        elif symmetric:
            _zero_below_diagonal(outs, i0, i1)

    if n_threads > 1 and len(starts) > 1:
        # Our threads are the parallelism: BLAS single-threaded inside them (OpenBLAS's
        # own pool, called from several threads at once, stays slow long afterwards).
        with limited(1, "blas"), \
                ThreadPoolExecutor(max_workers=min(n_threads, len(starts))) as pool:
            list(pool.map(work, starts))
    else:
        for i0 in starts:
            work(i0)


def _rescaled(spec, A, q, k, dtype):
    """(2^k A, its layer variances): the rows with k ≠ 0 rescaled exactly (as ``dtype``,
    the arithmetic of the pass); A and q unchanged when ``k`` is None."""
    if k is None:
        return A, q
    return rescale_rows(spec, A, q, k, dtype)


def _compiled_engine(backend, activation, exact_angles):
    """The compiled engine for the one-pass sweep, or None for the NumPy pass."""
    if backend not in ("auto", "compiled", "numpy", "reference"):
        raise ValueError("backend: a sweep runs in the compiled engine or the NumPy pass: "
                         f"'auto', 'compiled' or 'numpy' (alias 'reference'), got {backend!r}")
    if backend in ("numpy", "reference") or (backend == "auto" and not exact_angles):
        return None
    if not exact_angles:
        raise ValueError("exact_angles=False: the textbook angle rule runs in the NumPy "
                         "pass only; use backend='numpy' (or 'auto')")
    from .backends import get_backend
    engine = get_backend("compiled" if backend == "compiled" else "auto", activation)
    if not hasattr(engine, "fill_multi"):
        return None
    return engine


def _compiled_pass(engine, spec, plan, X, Z, qx, qz, outs, symmetric, dt, tile, n_jobs,
                   mirror=True):
    """Every (depth, k) kernel of ``outs`` from one pass of the compiled engine: the
    record tables of ``_engine.fill_tiles_multi`` (Σ shared by all k of a depth);
    K(X, X) without ``mirror``: the upper triangle (j >= i) only."""
    ks = list(plan.ks) if plan.want_ntk else [0]
    nk = len(ks)
    s_slot = [-1] * (plan.max_depth + 1)
    t_slot = [-1] * ((plan.max_depth + 1) * nk)
    arrays = []
    for (depth, k), (o_s, o_t) in outs.items():
        if o_s is not None and s_slot[depth] < 0:
            s_slot[depth] = len(arrays)
            arrays.append(o_s)
        if o_t is not None:
            t_slot[depth * nk + ks.index(k)] = len(arrays)
            arrays.append(o_t)
    engine.fill_multi(spec, X, Z, arrays, s_slot, t_slot, ks, symmetric=symmetric,
                      dtype=dt, tile=tile, n_jobs=n_jobs, qx=qx, qz=qz, mirror=mirror)


def _distinct(outs):
    """The distinct arrays of ``outs`` (Σ is shared by the k of a depth)."""
    return list({id(a): a for pair in outs.values() for a in pair if a is not None}.values())


def _zero_below_diagonal(outs, i0, i1):
    """Zero the strictly lower part of the diagonal block of rows i0:i1 (the NumPy pass
    computes whole block rows from column i0; symmetrize=False promises np.triu)."""
    il = np.tril_indices(i1 - i0, -1)
    for a in _distinct(outs):
        a[i0:i1, i0:i1][il] = 0


def _mirror_block(outs, i0, i1):
    """Copy the upper part of rows i0:i1 (columns >= their own index) into the lower part."""
    seen = set()
    for arrs in outs.values():
        for a in arrs:
            if a is None or id(a) in seen:
                continue
            seen.add(id(a))
            blk = a[i0:i1, i0:i1]
            il = np.tril_indices(i1 - i0, -1)
            blk[il] = blk.T[il]
            a[i1:, i0:i1] = a[i0:i1, i1:].T
