"""The compiled network engine: ``nk.serial`` networks of Conv, Dense, activations,
LayerNorm, pooling, readouts and branches, per pair of inputs in C (``ntkfast._conv_engine``,
``src_ext/ntk_conv.h``), with the contract of
:class:`~ntkfast.backends.reference_network.NetworkReferenceEngine` (``variances``,
``fill``), so :func:`ntkfast.outofcore.tiling.compute_gram` drives it in RAM or out of
core.

Design:

* **Program.**  :func:`compile_network` turns the network into a short list of ops on
  *slots* (each slot: Σ and Θ of one pair, all pixel pairs in nt's zipped layout
  (H, H', W, W') when the network pools, else the same-position pairs (H, W): decided
  by :class:`NetworkPlan`).  FanOut copies a slot, ``parallel`` runs branch i on slot i,
  FanInSum adds the slots into the first.  1-D signals are (L, 1) images, vectors (1, 1).
* **Per pair, in C.**  Work items are (row i, a tile of columns); in full mode one
  GEMM per item gives the tile's pixel-pair products x_i[p]·z_j[p'] (BLAS), then every
  pair runs the whole program in per-thread workspaces (OpenMP over items).  Conv's
  diagonal window sum is separable (one pass along (h, h'), one along (w, w')).
* **Same-position Conv** (stride 1, not circular): Σ and Θ copied zero-padded, so the
  window sums are long contiguous passes without edge cases (the same sums in the same
  order as the general path: identical values); the input products read the images
  channels first, vectorised over positions.
* **Self pass.**  ``variances`` runs the program on the pairs (x, x) in C, float64
  whatever the kernels' dtype (``run_self``: one GEMM x xᵀ per row in full mode),
  recording the per-position variances every activation / LayerNorm reads (the
  reference's tapes) and the exact diagonals: same-position pixel pairs take the
  activations' diagonal rule (θ = 0 by construction).  O(N P²), done once; rows whose
  own pixel pairs p ≠ p' are near-parallel enough to matter (the reference's estimate,
  in C) and the reference's tiny-input rescaling are handled as the reference does
  (those rows through its self pass).  Its states are symmetric, Σ(x, x)[h, h', w, w'] =
  Σ(x, x)[h', h, w', w]: Conv and the activations compute the planes h ≤ h' only, and
  the rest is mirrored (transposed) once, before an op that reads it (pooling, GAP, …).
  ``*_diag`` uses the same engine, so it is bitwise the diagonal of K(X, X); the
  compiled and reference diagonals agree to rounding (≲ 1e-15 relative).
* **Series activations** (Tanh, Softplus, Sigmoid, SiLU, ``Custom``: no closed form):
  the Hermite series with per-pixel coefficient tables built from the tapes
  (:mod:`.conv_series`, ``src_ext/ntk_conv_series.h``); the self pass runs in stages
  (a layer's tables need its variances); image pairs with a pixel pair the tables
  cannot certify (|ρ| → 1 with a steep φ) are recomputed by the reference engine
  (``_precise``), as are self-pass rows with one.
* **LayerNorm** (channel axis): Σ / √((ε + q_x)(ε + q_z)), Θ likewise, its variances
  on the tape like an activation's.
* **Accuracy.**  Float64 runs the reference's float64 rules (differences are rounding
  order: ≲ 1e-14 relative).  Angle-reading activations (the ReLU family) find the
  near-parallel pixel pairs D < τ q q' (τ = :data:`NEAR_TAU`) and, in float64, compute
  in C the reference's per-pair estimate of the relative Θ error their float64 angles
  cause (:mod:`ntkfast.layers.elementwise`: Σ k δθ |Θ| / Σ |Ė Θ| per layer, summed over
  the layers; pixel pairs with Σ = q = q' to the bit, computed alike, skipped; the
  first pass counts the near-parallel pixel pairs, the pairs with one are rerun for
  the estimate); only
  the pairs whose estimate exceeds ``NEAR_PARALLEL_RTOL`` (1e-10) go through the
  reference engine's own cross pass (its float64 pass, its criterion, its
  double-double pass).  The rerun always computes Θ, so Σ does not depend on whether
  Θ is wanted.
  Float32 sends every pair that meets a near-parallel pixel pair.
* **Memory.**  Per thread (``_conv_engine.workspace_bytes``): 2 (n_slots + 1) states
  of P² (full mode) or P (same-position) elements — Σ and Θ of each live slot and two
  spares, since a Conv's window sums read input planes around the output's — plus a few
  W × W planes; the GEMM tile (P² × columns per item) lives in a spare state when an item
  has one column (P² ≥ :data:`TILE_ELEMS`).  Myrtle-5 on 32×32 images: 4 × 1024² elements
  = **32 MiB float64 / 16 MiB float32 per thread** (measured from ``workspace_bytes``),
  ResNet-like with one FanOut branch 48 / 24 MiB; CNN-Flatten 80 KiB.  "A few MB" is not
  reachable with whole-layer states: one 32×32 layer's Σ alone is 1024² pixel pairs ×
  8 B = 8 MiB, and Σ, Θ of the input and the output of a Conv are 32 MiB; less needs
  tiling the P² state across layers (windows overlap by k − 1 per layer).
* **Symmetric K(X, X).**  Only pairs i < j are computed; the block is mirrored exactly
  and its diagonal is the self pass's.  Every pair is computed by the same operations
  whatever the thread count or tile, so results do not depend on either.
"""

from __future__ import annotations

import math
import os

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .._threads import limited  # noqa: E402
from ..activations import ABReLU, Erf, GELU, Identity  # noqa: E402
from ..layers.state import window_pads  # noqa: E402
from ..layers.elementwise import NEAR_PARALLEL_RTOL  # noqa: E402
from .reference_network import STATE_BUDGET, NetworkReferenceEngine  # noqa: E402
from . import conv_series  # noqa: E402

__all__ = ["CompiledNetworkEngine", "compile_network", "unsupported_layer", "Program"]

INT_FIELDS = ("kind", "dst", "src", "hi", "wi", "ho", "wo", "kh", "kw", "sh", "sw",
              "lo_h", "lo_w", "circ", "act", "qoff", "standard", "flag",
              "sk", "sj2", "spe", "spd", "snb", "smode", "coff", "koff", "spl")
FLOAT_FIELDS = ("w2", "b2", "cs", "c0", "inv", "pa", "pb", "pc")
INPUT, AFFINE, CONV, ACT, POOL, GAP, FLATTEN, COPY, ADD, LNORM = range(10)
ACT_ABRELU, ACT_ERF, ACT_GELU, ACT_SERIES = 1, 2, 3, 4
MAX_SLOTS = 16
#: pairs with a pixel pair of sin²θ < NEAR_TAU at an angle-reading activation go through
#: the reference engine's own cross pass (its near-parallel criterion screens the same
#: pixel pairs)
NEAR_TAU = 1e-6
#: elements of one thread's GEMM tile in full mode (x_i against a tile of columns)
TILE_ELEMS = 1 << 18
#: rows per chunk of the self pass (float64 copies of the inputs)
SELF_CHUNK = 1024


def _layer_classes():
    from ..layers import (AvgPool, Conv, Dense, Elementwise, FanInSum, FanOut, Flatten,
                          GlobalAvgPool, Parallel, Serial)
    return AvgPool, Conv, Dense, Elementwise, FanInSum, FanOut, Flatten, GlobalAvgPool, \
        Parallel, Serial


def unsupported_layer(layer, where="the network"):
    """None when the compiled engine runs every layer of ``layer``, else a description
    of the first layer it does not (its position and type)."""
    (AvgPool, Conv, Dense, Elementwise, FanInSum, FanOut, Flatten, GlobalAvgPool,
     Parallel, Serial) = _layer_classes()
    if isinstance(layer, Serial):
        for i, l in enumerate(layer.layers):
            bad = unsupported_layer(l, layer._name("" if where == "the network" else where,
                                                   i))
            if bad:
                return bad
        return None
    if isinstance(layer, Parallel):
        from ..layers.combinators import _layer_name
        for i, b in enumerate(layer.branches):
            name = f"{where} branch {i}"
            bad = unsupported_layer(b, name if isinstance(b, Serial) else
                                    f"{name} ({_layer_name(b)})")
            if bad:
                return bad
        return None
    if isinstance(layer, Elementwise):
        act = layer.activation
        if type(act) in (Identity, GELU) or isinstance(act, (ABReLU, Erf)) or \
                conv_series.is_series(act):
            return None
        return where
    from ..layers import LayerNorm
    if isinstance(layer, (Dense, Conv, AvgPool, GlobalAvgPool, Flatten, FanOut, FanInSum,
                          LayerNorm)):
        return None
    return f"{where} ({type(layer).__name__})"


def _dims(spatial):
    spatial = tuple(spatial)
    if len(spatial) == 0:
        return 1, 1
    if len(spatial) == 1:
        return spatial[0], 1
    if len(spatial) == 2:
        return spatial
    raise ValueError(f"compiled network engine: spatial rank {len(spatial)} > 2")


def _axes(n, window, strides, padding, spatial):
    """(k, s, lo) per axis h, w (1-D: w trivial)."""
    out = []
    for i in range(2):
        if i < len(window):
            k, s = window[i], strides[i]
            out.append((k, s, window_pads(spatial[i], k, s, padding)[0]))
        else:
            out.append((1, 1, 0))
    return out


class Program:
    """The op list of a network for one :class:`NetworkPlan` (see the module doc)."""

    def __init__(self, plan):
        bad = unsupported_layer(plan.network)
        if bad:
            raise ValueError(f"compiled network engine: {bad} is not supported")
        self.plan = plan
        self.full = bool(plan.full)
        self.H, self.W = _dims(plan.in_meta.spatial)
        self.C = plan.C
        self.P = self.H * self.W
        self.maxsize = self.P * self.P if self.full else self.P
        self.rows = []
        self.qoff = 0
        #: spatial shape of each activation's variance tape (offsets: running sums)
        self.tape_shapes = []
        self.idx_size = 1
        self.padsize = 0
        self.used = {0}
        self.n_slots = 1
        #: the series activations (conv_series.SeriesLayer), in op order
        self.series = []
        #: the series layers' tables kept between passes (conv_series.table_cache)
        self.series_cache = None
        #: a self pass found its first tier of series tables failing most rows
        #: (conv_series.run_self): the cross pass starts at the last tier
        self.series_skip = False
        self._op(INPUT, dst=0, hi=self.H, wi=self.W, ho=self.H, wo=self.W)
        state = self._walk(plan.network, (0, plan.in_meta))
        if isinstance(state, list) or state[0] != 0:
            raise ValueError("compiled network engine: the network must end in one branch")
        if self.n_slots > MAX_SLOTS:
            raise ValueError(f"compiled network engine: more than {MAX_SLOTS} live branches")
        self.iops = np.array([[r.get(f, 0) for f in INT_FIELDS] for r in self.rows],
                             dtype=np.int64).reshape(-1, len(INT_FIELDS))
        self.fops = np.array([[float(r.get(f, 0.0)) for f in FLOAT_FIELDS]
                              for r in self.rows], dtype=np.float64
                             ).reshape(-1, len(FLOAT_FIELDS))

    def _op(self, kind, **kw):
        kw["kind"] = kind
        self.rows.append(kw)

    def _alloc(self):
        k = 0
        while k in self.used:
            k += 1
        self.used.add(k)
        self.n_slots = max(self.n_slots, k + 1)
        return k

    def _walk(self, layer, state):
        (AvgPool, Conv, Dense, Elementwise, FanInSum, FanOut, Flatten, GlobalAvgPool,
         Parallel, Serial) = _layer_classes()
        from ..layers import LayerNorm
        if isinstance(layer, Serial):
            for l in layer.layers:
                state = self._walk(l, state)
            return state
        if isinstance(layer, FanOut):
            slot, meta = state
            out = [(slot, meta)]
            h, w = _dims(meta.spatial)
            for _ in range(layer.num - 1):
                k = self._alloc()
                self._op(COPY, dst=k, src=slot, hi=h, wi=w, ho=h, wo=w)
                out.append((k, meta))
            return out
        if isinstance(layer, Parallel):
            return [self._walk(b, s) for b, s in zip(layer.branches, state)]
        if isinstance(layer, FanInSum):
            meta = layer.output_meta([m for _, m in state], "")
            first = state[0][0]
            h, w = _dims(meta.spatial)
            for slot, _ in state[1:]:
                self._op(ADD, dst=first, src=slot, hi=h, wi=w, ho=h, wo=w)
                self.used.discard(slot)
            return first, meta
        slot, meta = state
        out_meta = layer.output_meta(meta, "")
        h, w = _dims(meta.spatial)
        ho, wo = _dims(out_meta.spatial)
        base = dict(dst=slot, hi=h, wi=w, ho=ho, wo=wo)
        if isinstance(layer, Dense):
            std = layer.parameterization == "standard"
            self._op(AFFINE, **base, w2=layer.w_std ** 2,
                     b2=0.0 if layer.b_std is None else layer.b_std ** 2,
                     standard=int(std), cs=float(meta.channels) if std else 0.0,
                     c0=1.0 if std and layer.b_std is not None else 0.0)
        elif isinstance(layer, Conv):
            std = layer.parameterization == "standard"
            (kh, sh, lh), (kw, sw, lw) = _axes(2, layer.filter_shape, layer.strides_or_ones,
                                               layer.padding, meta.spatial)
            size = math.prod(layer.filter_shape)
            self._op(CONV, **base, kh=kh, kw=kw, sh=sh, sw=sw, lo_h=lh, lo_w=lw,
                     circ=int(layer.padding == "CIRCULAR"), w2=layer.w_std ** 2,
                     b2=0.0 if layer.b_std is None else layer.b_std ** 2,
                     standard=int(std),
                     cs=float(meta.channels * size) if std else 0.0,
                     c0=1.0 if std and layer.b_std is not None else 0.0, inv=1.0 / size)
            self.idx_size = max(self.idx_size, kh * ho + 2 * kh + kw * wo + 2 * kw)
            if not self.full:  # the same-position Conv's padded copy + row sums
                wp = wo + kw - 1
                self.padsize = max(self.padsize, (ho + kh - 1) * wp + ho * wp)
        elif isinstance(layer, Elementwise):
            act = layer.activation
            if isinstance(act, Identity):
                return slot, out_meta
            fields = dict(qoff=self.qoff)
            if isinstance(act, ABReLU):
                a, b = act.a, act.b
                fields.update(act=ACT_ABRELU, pa=(a * a + b * b) / 2,
                              pb=(a - b) ** 2 / (2 * np.pi), flag=int(act.angle_sensitive))
            elif isinstance(act, Erf):
                fields.update(act=ACT_ERF, pa=act.a ** 2, pb=act.b ** 2, pc=act.c ** 2)
            elif conv_series.is_series(act):  # tables per fill call: conv_series
                fields.update(act=ACT_SERIES)
                self.series.append(conv_series.SeriesLayer(
                    len(self.rows), act, self.qoff, h * w, len(self.used) == 1))
            else:
                fields.update(act=ACT_GELU)
            self._op(ACT, **base, **fields)
            self.qoff += h * w
            self.tape_shapes.append(tuple(meta.spatial))
        elif isinstance(layer, AvgPool):
            (kh, sh, lh), (kw, sw, lw) = _axes(2, layer.window_shape,
                                               layer.strides_or_default, layer.padding,
                                               meta.spatial)
            self._op(POOL, **base, kh=kh, kw=kw, sh=sh, sw=sw, lo_h=lh, lo_w=lw,
                     circ=int(layer.padding == "CIRCULAR"),
                     inv=1.0 / math.prod(layer.window_shape) ** 2)
            self.idx_size = max(self.idx_size, kh * ho + 2 * kh + kw * wo + 2 * kw)
        elif isinstance(layer, GlobalAvgPool):
            self._op(GAP, **base)
        elif isinstance(layer, LayerNorm):
            self._op(LNORM, **base, qoff=self.qoff, pa=layer.eps)
            self.qoff += h * w
            self.tape_shapes.append(tuple(meta.spatial))
        elif isinstance(layer, Flatten):
            if meta.spatial:
                self._op(FLATTEN, **base)
        else:  # pragma: no cover - unsupported_layer checked it
            raise ValueError(f"compiled network engine: {type(layer).__name__}")
        return slot, out_meta

    def prog(self, dtype):
        from ..activations import ABReLU  # noqa: F401
        return dict(full=int(self.full), H=self.H, W=self.W, C=self.C,
                    n_slots=self.n_slots, maxsize=self.maxsize, idx_size=self.idx_size,
                    padsize=self.padsize, tau=NEAR_TAU)


def compile_network(plan) -> Program:
    """The :class:`Program` of ``plan`` (raises ValueError naming an unsupported layer)."""
    return Program(plan)


def _packed(stats, n, dtype):
    """The variance tapes of rows as one (n, Σ P_l) array in ``dtype``."""
    if not stats.tapes:
        return np.zeros((n, 1), dtype=dtype)
    return np.ascontiguousarray(np.concatenate(
        [np.asarray(t, np.float64).reshape(n, -1) for t in stats.tapes], axis=1),
        dtype=dtype)


class CompiledNetworkEngine:
    """The compiled engine of :mod:`ntkfast.layers` networks (see the module doc)."""

    name = "compiled-network"

    def __init__(self, budget=STATE_BUDGET, n_jobs=1):
        self.reference = NetworkReferenceEngine(budget)
        #: threads of the self pass (``fill`` takes its own ``n_jobs``)
        self.n_jobs = max(1, int(n_jobs or 1))
        self._cache = None

    def program(self, plan) -> Program:
        if self._cache is None or self._cache[0] is not plan:
            self._cache = (plan, Program(plan))
        return self._cache[1]

    def variances(self, plan, A, want_ntk=True, n_jobs=None):
        """The self pass in C (float64 whatever the kernels' dtype), the contract of
        :meth:`NetworkReferenceEngine.variances`: per row x the program on the pair
        (x, x), recording q(p) = Σ(x, x)[p, p] before every activation, the
        same-position pixel pairs by the activations' diagonal rule (θ = 0 exactly).
        As in the reference: rows of tiny inputs run rescaled by 2^k (homogeneous
        networks, exact), and rows whose pixel pairs p ≠ p' are near-parallel enough
        that their float64 angles may put Θ(x, x) off by more than NEAR_PARALLEL_RTOL
        (the same per-row estimate, C's est_mode 2) take the reference's self pass."""
        from .. import _conv_engine
        from .reference_network import _check_tiny, _tiny_exponents
        prog = self.program(plan)  # rejects unsupported networks before the work
        if prog.series and not conv_series.staged(prog):
            return self.reference.variances(plan, A, want_ntk)
        n = A.shape[0]
        Q = np.zeros((n, max(1, prog.qoff)))
        nngp = np.zeros(n)
        ntk = np.zeros(n) if want_ntk else None
        est = np.zeros(n)
        ks = []
        jobs = max(1, min(int(n_jobs or self.n_jobs), n))
        # rows in chunks (A may be a memory map): float64 copies of SELF_CHUNK rows
        for r in range(0, n, SELF_CHUNK):
            r1 = min(n, r + SELF_CHUNK)
            rows = np.asarray(A[r:r1], dtype=np.float64)
            kc = _tiny_exponents(plan, rows)
            if kc is not None:
                rows = np.ldexp(rows, kc.reshape((-1,) + (1,) * (rows.ndim - 1)))
            ks.append(kc if kc is not None else np.zeros(r1 - r, np.int64))
            X = np.ascontiguousarray(rows.reshape(r1 - r, -1))
            if prog.series:  # in stages: a layer's tables need its variances
                conv_series.run_self(prog, X, Q[r:r1], nngp[r:r1],
                                     ntk[r:r1] if want_ntk else None, est[r:r1],
                                     want_ntk, min(jobs, r1 - r))
                continue
            with limited(1, "blas"):  # our OpenMP loop is the parallelism
                _conv_engine.run_self(prog.iops, prog.fops, prog.prog(np.float64), X,
                                      Q[r:r1], nngp[r:r1],
                                      ntk[r:r1] if want_ntk else np.zeros(1), est[r:r1],
                                      want_ntk, min(jobs, r1 - r), 2 if want_ntk else 0)
        if prog.series:  # rows with a pixel pair p != p' no table certifies
            conv_series.reference_rows(self.reference, plan, A, Q, nngp, ntk, est,
                                       want_ntk)
        k = np.concatenate(ks) if ks and any(c.any() for c in ks) else None
        tapes, off = [], 0
        for shape in prog.tape_shapes:
            size = math.prod(shape)
            tapes.append(Q[:, off:off + size].reshape((n,) + shape))
            off += size
        if k is not None:  # K(2^k x, 2^k x) = 4^k K(x, x): scale back (exact)
            nngp = np.ldexp(nngp, -2 * k)
            ntk = None if ntk is None else np.ldexp(ntk, -2 * k)
        if want_ntk:
            near = np.flatnonzero(~(est <= NEAR_PARALLEL_RTOL))
            if near.size:  # the reference decides on (and runs) its precise pass
                ref = self.reference.variances(plan, A[near], want_ntk)
                nngp[near], ntk[near] = ref.nngp, ref.ntk
        _check_tiny(plan, tapes, 0)
        from .reference_network import RowStats
        return RowStats(tapes, nngp, ntk, k)

    def fill(self, plan, Xb, Zb, out_nngp, out_ntk, *, symmetric, dtype=None, tile=None,
             n_jobs=1, qx, qz):
        """Write Σ(Xb, Zb) / Θ(Xb, Zb) into the 2-D views ``out_nngp`` / ``out_ntk``
        (either may be None); the contract of
        :meth:`NetworkReferenceEngine.fill`.  ``tile``: columns per work item (default:
        a GEMM tile of :data:`TILE_ELEMS` pixel pairs)."""
        from .. import _conv_engine
        want_s, want_t = out_nngp is not None, out_ntk is not None
        if not (want_s or want_t):
            return
        dtype = np.dtype(dtype or Xb.dtype)
        prog = self.program(plan)
        n1, n2 = Xb.shape[0], Zb.shape[0]
        kx, kz = qx.k, qz.k
        X64 = np.asarray(Xb, np.float64)
        if kx is not None:
            X64 = np.ldexp(X64, kx.reshape((-1,) + (1,) * (Xb.ndim - 1)))
        if symmetric:
            Z64 = X64
        else:
            Z64 = np.asarray(Zb, np.float64)
            if kz is not None:
                Z64 = np.ldexp(Z64, kz.reshape((-1,) + (1,) * (Zb.ndim - 1)))
        Xc = np.ascontiguousarray(X64.reshape(n1, -1), dtype=dtype)
        Zc = Xc if symmetric else np.ascontiguousarray(Z64.reshape(n2, -1), dtype=dtype)
        Qx = _packed(qx, n1, dtype)
        Qz = Qx if symmetric else _packed(qz, n2, dtype)
        if prog.full:
            cols = int(tile) if tile else max(1, TILE_ELEMS // (prog.P * prog.P))
        else:
            cols = int(tile) if tile else 256
        cols = max(1, min(cols, n2))
        items = [(i, j0, min(n2, j0 + cols)) for i in range(n1)
                 for j0 in range(i + 1 if symmetric else 0, n2, cols)]
        items = np.array(items, dtype=np.int64).reshape(-1, 3)
        res_s = np.zeros((n1, n2), dtype=dtype)
        res_t = np.zeros((n1, n2), dtype=dtype) if want_t else np.zeros((1, 1), dtype)
        flags = np.zeros((n1, n2))
        # float64: Θ's estimated error (elementwise.py's); float32: near-parallel count
        mode = 1 if dtype == np.float64 else 0
        jobs = max(1, int(n_jobs or 1))
        run = _conv_engine.run_pairs
        if prog.series:  # per chunk of rows x columns, with their series tables
            run = conv_series.PairTables(prog, _packed(qx, n1, np.float64),
                                         _packed(qz, n2, np.float64), symmetric).run
        if items.shape[0]:
            with limited(1, "blas"):  # our OpenMP loop is the parallelism
                run(prog.iops, prog.fops, prog.prog(dtype), Xc, Zc, Qx, Qz, items, res_s,
                    res_t, flags, want_t, jobs, cols, mode)
        # float64: candidates (a near-parallel pixel pair not computed alike)
        near = flags > 0
        if symmetric:
            near = np.triu(near, 1)
        if mode and near.any():
            # ∞: a series pixel pair no table certifies (recomputed, no estimate needed)
            bad = near & np.isinf(flags)
            cand = near & ~bad
            near = bad | (self._estimate(prog, dtype, Xc, Zc, Qx, Qz, items, cand, jobs,
                                         cols, run) if cand.any() else cand)
        if near.any():
            self._precise(plan, X64, Z64, near, res_s, res_t if want_t else None, want_t,
                          qx, qz)
        from .reference import unscale
        if symmetric:
            iu = np.triu_indices(n1, 1)
            for r in ((res_s, res_t) if want_t else (res_s,)):
                r.T[iu] = r[iu]
        for r in ((res_s, res_t) if want_t else (res_s,)):
            unscale(r, kx, kz)
        if symmetric:
            idx = np.arange(n1)
            res_s[idx, idx] = qx.nngp
            if want_t:
                res_t[idx, idx] = qx.ntk
        if want_s:
            out_nngp[...] = res_s
        if want_t:
            out_ntk[...] = res_t

    def _estimate(self, prog, dtype, Xc, Zc, Qx, Qz, items, cand, jobs, cols, run=None):
        """Float64: the candidate pairs (a near-parallel pixel pair not computed
        alike) rerun with Θ for their error estimate (C's est_mode 2: a pre-pass and a
        scalar loop per row, kept out of the first pass's loop), in the same work items
        (the same GEMM tiles, so the same values whether Θ is wanted or not: Σ does not
        depend on it); returns the pairs whose estimate exceeds NEAR_PARALLEL_RTOL."""
        from .. import _conv_engine
        keep = np.fromiter((cand[i, j0:j1].any() for i, j0, j1 in items), bool,
                           count=items.shape[0])
        shape = cand.shape
        s2, t2 = np.zeros(shape, dtype), np.zeros(shape, dtype)
        est = np.zeros(shape)
        with limited(1, "blas"):
            (run or _conv_engine.run_pairs)(
                prog.iops, prog.fops, prog.prog(dtype), Xc, Zc, Qx, Qz,
                np.ascontiguousarray(items[keep]), s2, t2, est, True, jobs, cols, 2,
                cand.astype(np.int8))
        return cand & (est > NEAR_PARALLEL_RTOL)

    def _precise(self, plan, X64, Z64, near, res_s, res_t, want_t, qx, qz):
        """The flagged pairs (a near-parallel pixel pair met) through the reference
        engine's own cross pass, row by row: its float64 pass, its criterion and its
        double-double pass, so these pairs are the reference's values."""
        ref = self.reference
        for i in np.flatnonzero(near.any(axis=1)):
            cols = np.flatnonzero(near[i])
            # Θ always: the reference decides on its precise pass from Θ's error, and
            # Σ must not depend on whether Θ is wanted (nngp(X) == kernels(X).nngp)
            s, t = ref._cross(plan, X64[i:i + 1], Z64[cols], qx[i:i + 1], qz[cols], True)
            res_s[i, cols] = s[0]
            if want_t:
                res_t[i, cols] = t[0]
