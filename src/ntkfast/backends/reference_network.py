"""The whole-network NumPy engine of ``nk.serial`` networks: the layer rules of
:mod:`ntkfast.layers` run on blocks of input pairs (the oracle of faster engines).

Pieces:

* :class:`NetworkPlan` — a network validated for one per-example input shape (N, D),
  (N, L, C) or (N, H, W, C): its layers' shapes, channel counts and Gaussianity
  (errors name the layer by index and type), and the spatial mode: **full** (all
  pixel pairs) when any layer pools, **same-position** otherwise (see
  :mod:`ntkfast.layers.state`).
* :class:`NetworkReferenceEngine` — ``variances(plan, A)`` runs the *self pass* on
  rows of A and returns their :class:`RowStats` (the per-position variances every
  activation / LayerNorm reads, and the exact diagonals Σ(x, x), Θ(x, x), θ = 0);
  ``fill(plan, Xb, Zb, out_nngp, out_ntk, symmetric=…, qx=…, qz=…)`` runs the *cross
  pass* on one block of pairs and writes it into 2-D output views, splitting the
  block so that no more than ``budget`` bytes of kernel state are alive.
* :func:`prepare` (validated inputs and plan) and :func:`compute_diagonal` (the self
  pass alone, for ``*_diag``).

``Serial.nngp/ntk/kernels`` drive the engine through :func:`ntkfast.outofcore.tiling.compute_gram`
like the MLP engines (in-RAM or ``out="K.npy"`` out of core and resumable), by this
contract:

1. per-row statistics computed once up front: ``stats = engine.variances(plan, A)``
   (the analogue of ``layer_variances``; size N·Σ_l P_l), checked with
   :meth:`RowStats.check` (the analogue of ``check_variances``);
2. per block ``engine.fill(plan, Xb, Zb, out_nngp, out_ntk, symmetric=b.diagonal,
   dtype=dtype, qx=stats_x[:, i0:i1], qz=stats_z[:, j0:j1])`` — ``RowStats`` slices
   like tiling's ``(depth+1, N)`` variance array; with ``symmetric=True`` (a diagonal
   block, Xb is Zb) the engine symmetrises the block exactly and writes the exact
   diagonal itself; tiling mirrors off-diagonal blocks;
3. the block inputs Xb, Zb keep their per-example shape (N_b, *S, C);
4. the journal key of a file output is ``plan.describe()`` (the network's
   ``describe()`` and the input shape) in place of the MLP spec.

**Near-parallel pairs (near-duplicate images).**  E[φ'φ'] of the ReLU family reads the
angle θ of each pixel pair to first order, and θ from D = q q' − Σ² formed in float64
is off by ~1e-16/θ — up to ~1e-8 for duplicates and near-duplicates (measured against
40-digit mpmath, ``tests/test_precision_mpmath_conv.py``: Θ off by up to 4e-9 relative
for z = x + 1e-9 η and for an exact copy of x as a cross pair).  The MLP engine's cure,
carrying D through the layers without cancellation, does not extend to pooling (the D
of a pooled pixel pair needs four-point covariances the state does not hold), so:

1. *Detect.*  The float64 pass estimates, per pair and summed over the angle-reading
   layers, the relative error of Θ its angles cause (see :mod:`ntkfast.layers.
   elementwise`: near-parallel pixel pairs weighted by their share of Θ; pixel pairs
   whose sides were computed alike, Σ = q = q' to the bit, are exact).  Two reductions
   per such layer when no pixel pair is near-parallel (random and natural images:
   ≤ 1.05× the time before, measured on 64 random 8×8×3 images and on 96 digits;
   ~1.15× for Flatten nets on digits, whose saturated strokes give many
   near-parallel pixel pairs with a negligible error).
2. *Recompute.*  The pairs whose estimate exceeds 1e-10
   (:data:`~ntkfast.layers.elementwise.NEAR_PARALLEL_RTOL`; the estimate is 4-50× the
   actual error) are recomputed by the same layer rules with Σ and the variances in
   double-double (:mod:`ntkfast.layers.doubledouble`: ~32 digits, angles to ~1e-32;
   the input layer's channel products exact), Θ float64; scattered pairs as a list,
   dense ones as the rows × columns they span; their rows' self passes are redone in
   double-double for the variances.  A self pass whose own pixel pairs p ≠ p' are
   near-parallel (uniform image regions) is redone likewise, keeping the diagonal
   exact.  Cost per recomputed pair (measured, 8×8×3 images, 2 ReLU layers): ~9× a
   float64 pair when the pairs fill their rows × columns, ~20× (GAP) to ~40×
   (Flatten) when scattered (each brings two self passes); ~44 float64 arrays per
   pair alive (:data:`PRECISE_FACTOR`).  Near-duplicates are rare in practice: 32
   near-duplicate pairs among 64 images cost ~1.3× (GAP) to ~2× (Flatten, 11 → 24 ms)
   the float64 K(X, X).
3. *Result.*  Every entry within ~1e-15 of the exact kernel of the given inputs, near
   duplicates and exact copies included; entries not recomputed within ~2.5e-11
   (their estimate is below 1e-10).  Not covered: a ReLU-family activation after an
   activation without a double-double rule (the quadrature ones, Sin/Cos: the precise
   pass could only evaluate it in float64, so such pairs are not recomputed and keep
   ~1e-9).  NNGP-only calls never recompute (Σ is second order in the angle errors).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import _validation as V
from ..layers.base import LayerError
from ..layers.doubledouble import DD, as_float, is_dd, two_prod
from ..layers.state import KernelState, Meta, RecordTape, ReplayTape

__all__ = ["NetworkPlan", "NetworkReferenceEngine", "RowStats", "prepare",
           "compute_diagonal", "check_batch", "STATE_BUDGET"]

#: bytes of kernel state (all arrays alive in one block, temporaries included) per call
STATE_BUDGET = 256 << 20
#: estimated float64 arrays of the per-pair size alive at once (Σ, Θ, the activation
#: rules' temporaries, padded copies, branches); measured peak ≈ 10-12 for conv nets
ARRAYS_ALIVE = 16
#: the precise (double-double) pass holds about this many times more (measured ≈ 2.7)
PRECISE_FACTOR = 4


# -- inputs -------------------------------------------------------------------------
def check_batch(X, name="X", example_shape=None) -> np.ndarray:
    """X as a float array (N, *S, C) with N ≥ 1 examples; rejects non-numeric, empty
    and non-finite input (naming the first bad example) and, with ``example_shape``,
    a different per-example shape."""
    arr = V.as_numeric_array(X, name)
    if arr.ndim < 2:
        raise ValueError(f"{name}: expected a batch (N, D), (N, L, C) or (N, H, W, C), got "
                         f"{arr.ndim}-D shape {arr.shape}; use {name}[None] for one example")
    if arr.size == 0:
        raise ValueError(f"{name}: empty array of shape {arr.shape}; need at least one "
                         "example with at least one feature")
    if example_shape is not None and arr.shape[1:] != tuple(example_shape):
        raise ValueError(f"{name}: examples of shape {arr.shape[1:]} but X's are "
                         f"{tuple(example_shape)}; both inputs must have the same shape per "
                         "example (channels last)")
    if arr.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        arr = arr.astype(np.float64)
    V.reject_nonfinite(arr, name, "example")
    return arr


# -- the plan ----------------------------------------------------------------------
class NetworkPlan:
    """A network checked against one per-example input shape ``(*S, C)``.

    ``full``: None chooses the spatial mode from the layers (full iff one pools);
    True forces all pixel pairs (a check that both modes agree)."""

    def __init__(self, network, example_shape, full=None):
        example_shape = tuple(int(n) for n in example_shape)
        self.network = network
        self.example_shape = example_shape
        self.in_meta = Meta(example_shape[:-1], example_shape[-1], False)
        out = network.output_meta(self.in_meta, "")
        if isinstance(out, list):
            raise LayerError(f"the network ends with {len(out)} branches; join them with "
                             "FanInSum()")
        if out.spatial:
            last = len(network.layers) - 1
            where = network._name("", last) if last >= 0 else "the input"
            raise LayerError(
                f"{where}: the network's output is still spatial (shape {out.spatial}) for "
                f"inputs of per-example shape {example_shape}; end it with a readout, "
                "Flatten() or GlobalAvgPool() (then Dense), or pass vectors (N, D)")
        self.out_meta = out
        if full is False and network.mixes_positions:
            raise ValueError("NetworkPlan: a network that pools needs full=True")
        self.full = bool(network.mixes_positions) if full is None else bool(full)
        self.P = self.in_meta.size
        self.C = example_shape[-1]
        #: float64 elements per pair (cross) or row (self) of one state array at the input
        #: (no layer increases the spatial size)
        self.pair_elems = self.P * self.P if self.full else self.P
        self.homogeneous = is_homogeneous(network)

    def describe(self) -> dict:
        return {"network": self.network.describe(), "example_shape": list(self.example_shape),
                "full": self.full}

    # -- input states --------------------------------------------------------------
    def _interleave(self, a, nb):
        """(batch…, *S, *S) → (batch…, S_1, S_1', S_2, S_2', …) (nt's zipped layout)."""
        if is_dd(a):
            return DD(self._interleave(a.hi, nb), self._interleave(a.lo, nb))
        d = len(self.in_meta.spatial)
        a = a.reshape(a.shape[:nb] + self.in_meta.spatial * 2)
        axes = list(range(nb))
        for i in range(d):
            axes += [nb + i, nb + d + i]
        return np.ascontiguousarray(a.transpose(axes))

    def _channel_dot_dd(self, a, b) -> DD:
        """Σ_c a[..., c] b[..., c] / C in double-double (exact products, one summation
        order for every call, so a row and its copy give the same bits)."""
        acc = None
        for c in range(self.C):
            term = DD(*two_prod(a[..., c], b[..., c]))
            acc = term if acc is None else acc + term
        return acc / float(self.C)

    def self_state(self, A, want_ntk, precise=False) -> KernelState:
        """Σ⁰(x, x)[p, p'] = x[p]·x[p']/C of rows A (n, *S, C); ``precise``: as a
        double-double (the precise pass of near-parallel pairs)."""
        A2 = np.asarray(A, dtype=np.float64).reshape(A.shape[0], self.P, self.C)
        if precise:
            if self.full:
                cov = self._interleave(self._channel_dot_dd(A2[:, :, None], A2[:, None]), 1)
            else:
                cov = self._channel_dot_dd(A2, A2).reshape(
                    (A.shape[0],) + self.in_meta.spatial)
        elif self.full:
            cov = self._interleave(np.matmul(A2, A2.transpose(0, 2, 1)) / self.C, 1)
        else:
            cov = np.einsum("npc,npc->np", A2, A2).reshape(
                (A.shape[0],) + self.in_meta.spatial) / self.C
        return KernelState(nngp=None, ntk=0.0 if want_ntk else None, cov=cov,
                           full=self.full, meta=self.in_meta, tape=RecordTape())

    def cross_state(self, Xb, Zb, tape, want_ntk, precise=False) -> KernelState:
        """Σ⁰(x, z)[p, p'] = x[p]·z[p']/C (nt's input covariance: the channel mean);
        ``precise``: as a double-double, for the pairs Xb × Zb or, with a zipped
        ``tape``, for the pairs (Xb[k], Zb[k]) (batch shape (n, 1))."""
        n1, n2 = Xb.shape[0], Zb.shape[0]
        X2 = np.asarray(Xb, dtype=np.float64).reshape(n1, self.P, self.C)
        Z2 = np.asarray(Zb, dtype=np.float64).reshape(n2, self.P, self.C)
        if precise:
            zb = Z2[:, None] if tape.zipped else Z2[None, :]
            if tape.zipped:
                n2 = 1
            if self.full:
                nngp = self._interleave(self._channel_dot_dd(
                    X2[:, None, :, None], zb[:, :, None, :]), 2)
            else:
                nngp = self._channel_dot_dd(X2[:, None], zb).reshape(
                    (n1, n2) + self.in_meta.spatial)
            return KernelState(nngp=nngp, ntk=0.0 if want_ntk else None, cov=None,
                               full=self.full, meta=self.in_meta, tape=tape)
        if self.full:
            g = (X2.reshape(n1 * self.P, self.C) @ Z2.reshape(n2 * self.P, self.C).T)
            g = g.reshape(n1, self.P, n2, self.P).transpose(0, 2, 1, 3) / self.C
            nngp = self._interleave(g, 2)
        else:
            g = np.matmul(X2.transpose(1, 0, 2), Z2.transpose(1, 2, 0))  # (P, n1, n2)
            nngp = np.ascontiguousarray(g.transpose(1, 2, 0)).reshape(
                (n1, n2) + self.in_meta.spatial) / self.C
        return KernelState(nngp=nngp, ntk=0.0 if want_ntk else None, cov=None,
                           full=self.full, meta=self.in_meta, tape=tape)

    def run(self, state) -> KernelState:
        return self.network.kernel(state)


# -- per-row statistics ----------------------------------------------------------------
@dataclass
class RowStats:
    """What the self pass leaves for the cross pass, per row: the variances q(p) of
    every variance-reading layer (``tapes``: arrays (n, *S_l)) and the exact diagonals
    Σ(x, x) (``nngp``) and Θ(x, x) (``ntk``, None if not wanted), float64."""

    tapes: list
    nngp: np.ndarray
    ntk: np.ndarray | None
    #: per-row exponents k (int64): the self pass (and the tapes) ran on 2^k x, the
    #: diagonals are scaled back; None when no row is rescaled (see ``_tiny_exponents``)
    k: np.ndarray | None = None

    def __len__(self):
        return self.nngp.shape[0]

    def __getitem__(self, key):
        # rows, or tiling's ``q[:, i0:i1]`` of the (depth+1, N) MLP variances
        if isinstance(key, tuple):
            if len(key) != 2 or key[0] != slice(None):
                raise IndexError("RowStats: index rows as stats[i0:i1] or stats[:, i0:i1]")
            key = key[1]
        if not isinstance(key, slice):
            key = np.asarray(key)
            if key.dtype.kind not in "iu" or key.ndim != 1:
                raise IndexError("RowStats: index rows by a slice or a 1-D integer array")
        return RowStats([t[key] for t in self.tapes], self.nngp[key],
                        None if self.ntk is None else self.ntk[key],
                        None if self.k is None else self.k[key])

    @staticmethod
    def concat(parts) -> "RowStats":
        parts = list(parts)
        if len(parts) == 1:
            return parts[0]
        ks = [p.k if p.k is not None else np.zeros(len(p), np.int64) for p in parts]
        return RowStats([np.concatenate(ts) for ts in zip(*(p.tapes for p in parts))],
                        np.concatenate([p.nngp for p in parts]),
                        None if parts[0].ntk is None else
                        np.concatenate([p.ntk for p in parts]),
                        np.concatenate(ks) if any(p.k is not None for p in parts) else None)

    def check(self, dtype, name="X"):
        """Reject rows whose variances would overflow ``dtype`` kernels (products of
        two variances are formed): every q must stay below √(max float)/16."""
        limit = np.sqrt(np.finfo(dtype).max) / 16
        for k, arr in enumerate(self.tapes + [self.nngp]):
            flat = arr.reshape(arr.shape[0], -1)
            bad = ~(flat <= limit).all(axis=1)
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                hint = (", or use dtype='float64'" if np.dtype(dtype) != np.float64 else "")
                raise ValueError(
                    f"{name}: example {row} is too large for {np.dtype(dtype).name} kernels "
                    f"(a layer variance {np.max(flat[row]):.3g} exceeds {limit:.3g}); "
                    f"rescale the inputs (or w_std/b_std){hint}")


# -- tiny inputs -----------------------------------------------------------------------
#: rows whose mean square is below this are rescaled (homogeneous networks) before the
#: self pass: far above the float64 window's q_lo ≈ 1e-146, so rows in the ordinary range
#: keep their exact bits
TINY_MEAN_SQUARE = 2.0 ** -200


def is_homogeneous(layer) -> bool:
    """True when the network's kernels are positively homogeneous of degree 1 in each
    input, K(a x, b z) = a b K(x, z) for a, b > 0: linear layers without bias (Dense,
    Conv; both parameterizations, whose Θ terms all scale alike), pooling, readouts,
    branches of such layers, and the ABReLU family / Identity.  Bias and LayerNorm are
    not (LayerNorm's ε sets a scale)."""
    from ..activations import ABReLU, Identity
    from ..layers import (AvgPool, Conv, Dense, Elementwise, FanInSum, FanOut, Flatten,
                          GlobalAvgPool, Parallel, Serial)
    if isinstance(layer, Serial):
        return all(is_homogeneous(l) for l in layer.layers)
    if isinstance(layer, Parallel):
        return all(is_homogeneous(b) for b in layer.branches)
    if isinstance(layer, (Dense, Conv)):
        return layer.b_std is None or (layer.b_std == 0 and layer.parameterization == "ntk")
    if isinstance(layer, Elementwise):
        return isinstance(layer.activation, (ABReLU, Identity))
    return isinstance(layer, (AvgPool, GlobalAvgPool, Flatten, FanOut, FanInSum))


def _tiny_exponents(plan, rows):
    """Per-row exponents k with 2^k x of mean square ≈ 1 for the non-zero rows whose mean
    square is below :data:`TINY_MEAN_SQUARE`, when the network is homogeneous (exact
    power-of-two scaling, undone on the results); None when no row needs it."""
    if not plan.homogeneous or rows.shape[0] == 0:
        return None
    flat = rows.reshape(rows.shape[0], -1)
    # the largest |x| first, so the mean square itself cannot underflow
    top = np.max(np.abs(flat), axis=1)
    small = (top > 0) & (top < math.sqrt(TINY_MEAN_SQUARE))
    if not small.any():
        return None
    k = np.zeros(rows.shape[0], np.int64)
    k[small] = -np.frexp(top[small])[1]  # 2^k · top in [0.5, 1)
    return k


def _check_tiny(plan, tapes, row0):
    """Reject examples whose layer variances fell below the float64 window (products of
    two variances underflow: the angle between inputs is lost) — for networks that
    could not be rescaled exactly (bias, LayerNorm, smooth activations)."""
    q_lo = V.variance_window(np.float64)[0]
    for arr in tapes:
        flat = np.asarray(arr).reshape(arr.shape[0], -1)
        bad = ((flat > 0) & (flat < q_lo)).any(axis=1)
        if bad.any():
            row = row0 + int(np.flatnonzero(bad)[0])
            fix = ("rescale the inputs (and b_std with them: the kernels scale as "
                   "K(s x, s z; s b_std) = s² K for networks of ReLU-like layers)"
                   if not plan.homogeneous else
                   "the layers shrink the variance too far for float64; use larger w_std")
            raise ValueError(
                f"X: example {row} is too small for an accurate kernel (a layer variance "
                f"{flat[int(np.flatnonzero(bad)[0])][flat[int(np.flatnonzero(bad)[0])] > 0].min():.3g} "
                f"is below {q_lo:.3g}, where q·q' underflows); {fix}")


# -- the engine ----------------------------------------------------------------------
def _inaccurate(tape):
    """The pairs of a float64 pass whose estimated Θ error from near-parallel angles
    exceeds :data:`~ntkfast.layers.elementwise.NEAR_PARALLEL_RTOL` (None: none
    estimated)."""
    from ..layers.elementwise import NEAR_PARALLEL_RTOL
    return None if tape.angle_error is None else tape.angle_error > NEAR_PARALLEL_RTOL


class NetworkReferenceEngine:
    """Plain-NumPy execution of a :class:`NetworkPlan` (see the module doc)."""

    name = "network-reference"

    def __init__(self, budget=STATE_BUDGET):
        self.budget = int(budget)

    def _rows_per_chunk(self, plan, factor=1):
        per = 8 * ARRAYS_ALIVE * plan.pair_elems * factor
        return max(1, self.budget // per)

    def variances(self, plan, A, want_ntk=True) -> RowStats:
        """The self pass over the rows of A (n, *S, C), in chunks within the budget."""
        step = self._rows_per_chunk(plan)
        parts = []
        for r in range(0, A.shape[0], step):
            rows = np.asarray(A[r:r + step], dtype=np.float64)
            k = _tiny_exponents(plan, rows)
            if k is not None:
                rows = np.ldexp(rows, k.reshape((-1,) + (1,) * (rows.ndim - 1)))
            # overflow (huge inputs) gives inf/NaN here; RowStats.check rejects it clearly
            with np.errstate(over="ignore", invalid="ignore", under="ignore"):
                state = plan.self_state(rows, want_ntk)
                out = plan.run(state)
            n = rows.shape[0]
            ntk = None if out.ntk is None else np.broadcast_to(out.ntk, (n,)).astype(
                np.float64)
            nngp = np.asarray(out.cov, np.float64)
            near = _inaccurate(state.tape)
            if near is not None and near.any():
                # rows with near-parallel pixel pairs p ≠ p' (uniform regions): their
                # exact diagonal from the precise pass
                idx = np.flatnonzero(near)
                _, s_dd, t_dd = self._precise_self(plan, rows[idx], want_ntk)
                nngp[idx] = s_dd
                if ntk is not None:
                    ntk[idx] = t_dd
            if k is not None:  # K(2^k x, 2^k x) = 4^k K(x, x): scale back (exact)
                nngp = np.ldexp(nngp, -2 * k)
                ntk = None if ntk is None else np.ldexp(ntk, -2 * k)
            _check_tiny(plan, state.tape.records, r)
            parts.append(RowStats(state.tape.records, nngp, ntk, k))
        return RowStats.concat(parts)

    def sub_block(self, plan, n1, n2):
        """Edge of the square sub-blocks of pairs that fit the budget."""
        pairs = self._rows_per_chunk(plan)
        edge = max(1, math.isqrt(pairs))
        return min(edge, max(n1, n2))

    def _cross(self, plan, Xb, Zb, sx, sz, want_ntk, skip_diagonal=False):
        """Σ, Θ of the pairs Xb × Zb: the float64 pass, then the precise
        (double-double) pass of the pairs whose estimated angle error is too large —
        as a list of pairs, or as the rows × columns they span when they fill at least
        half of it (``skip_diagonal``: Xb is Zb, and the pairs (i, i) and i > j are
        not wanted: their values come from the self pass and the mirror)."""
        tape = ReplayTape(sx.tapes, sz.tapes, skip_diagonal=skip_diagonal)
        out = plan.run(plan.cross_state(Xb, Zb, tape, want_ntk))
        shape = (Xb.shape[0], Zb.shape[0])
        ntk = None if out.ntk is None else np.broadcast_to(out.ntk, shape)
        nngp = np.broadcast_to(out.nngp, shape)
        near = _inaccurate(tape)
        if near is None:
            return nngp, ntk
        near = np.array(np.broadcast_to(near, shape))
        if skip_diagonal:  # (i, i) is overwritten, and only i < j is read
            near = np.triu(near, 1)
        if not near.any():
            return nngp, ntk
        nngp = np.array(nngp)
        ntk = None if ntk is None else np.array(ntk)
        rows, cols = np.flatnonzero(near.any(axis=1)), np.flatnonzero(near.any(axis=0))
        ii, jj = np.nonzero(near)
        if 2 * len(ii) >= len(rows) * len(cols):  # dense: the grid rows × cols
            s_dd, t_dd = self._precise_block(plan, Xb[rows], Zb[cols], want_ntk)
            ii, jj = np.ix_(rows, cols)
        else:  # scattered: the list of pairs
            s_dd, t_dd = self._precise_block(plan, Xb[ii], Zb[jj], want_ntk, zipped=True)
        nngp[ii, jj] = s_dd
        if ntk is not None:
            ntk[ii, jj] = t_dd
        return nngp, ntk

    # -- the precise pass ------------------------------------------------------------
    def _precise_self(self, plan, rows, want_ntk):
        """The self pass of ``rows`` in double-double: (tapes as DDs, Σ(x, x), Θ(x, x)
        float64), in chunks within the budget."""
        step = self._rows_per_chunk(plan, PRECISE_FACTOR)
        tapes, nngp, ntk = [], [], []
        for r in range(0, rows.shape[0], step):
            chunk = rows[r:r + step]
            with np.errstate(over="ignore", invalid="ignore", under="ignore"):
                state = plan.self_state(chunk, want_ntk, precise=True)
                out = plan.run(state)
            tapes.append(state.tape.records)
            nngp.append(as_float(out.cov))
            if want_ntk:
                ntk.append(np.broadcast_to(out.ntk, (chunk.shape[0],)).astype(np.float64))
        tapes = [t[0] if len(t) == 1 else
                 DD(np.concatenate([a.hi for a in t]), np.concatenate([a.lo for a in t]))
                 for t in zip(*tapes)]
        return tapes, np.concatenate(nngp), np.concatenate(ntk) if want_ntk else None

    def _precise_block(self, plan, Xs, Zs, want_ntk, zipped=False):
        """Σ, Θ (float64) of all pairs Xs × Zs (``zipped``: of the pairs (Xs[k],
        Zs[k]), returned as vectors) from the double-double pass: every kernel state
        entry to ~1e-32, so D = q q' − Σ² and the angles keep their digits however
        near-parallel the pixel pairs are (see the module doc)."""
        tx, _, _ = self._precise_self(plan, Xs, False)
        tz, _, _ = self._precise_self(plan, Zs, False)
        n1 = Xs.shape[0]
        n2 = 1 if zipped else Zs.shape[0]
        pairs = self._rows_per_chunk(plan, PRECISE_FACTOR)  # pairs per chunk
        cstep = n2 if zipped else min(n2, pairs)
        rstep = max(1, pairs // cstep)
        nngp = np.empty((n1, n2))
        ntk = np.empty((n1, n2)) if want_ntk else None
        for i0 in range(0, n1, rstep):
            i1 = min(n1, i0 + rstep)
            for j0 in range(0, n2, cstep):
                j1 = min(n2, j0 + cstep)
                if zipped:
                    tape = ReplayTape([t[i0:i1] for t in tx], [t[i0:i1] for t in tz], True)
                    zs = Zs[i0:i1]
                else:
                    tape = ReplayTape([t[i0:i1] for t in tx], [t[j0:j1] for t in tz])
                    zs = Zs[j0:j1]
                with np.errstate(over="ignore", invalid="ignore", under="ignore"):
                    out = plan.run(plan.cross_state(Xs[i0:i1], zs, tape, want_ntk,
                                                    precise=True))
                shape = (i1 - i0, j1 - j0)
                nngp[i0:i1, j0:j1] = np.broadcast_to(as_float(out.nngp), shape)
                if want_ntk:
                    ntk[i0:i1, j0:j1] = np.broadcast_to(out.ntk, shape)
        return (nngp[:, 0], None if ntk is None else ntk[:, 0]) if zipped else (nngp, ntk)

    def fill(self, plan, Xb, Zb, out_nngp, out_ntk, *, symmetric, dtype=None, tile=None,
             n_jobs=1, qx, qz):
        """Write Σ(Xb, Zb) / Θ(Xb, Zb) into the 2-D views ``out_nngp`` / ``out_ntk``
        (either may be None).  ``qx``, ``qz``: the rows' :class:`RowStats`.
        ``symmetric``: Xb is Zb (a block on the diagonal of K(X, X)): only sub-blocks
        on/above the diagonal are computed, the block is made exactly symmetric and its
        diagonal is the self pass's (θ = 0), equal to the ``*_diag`` methods bitwise.
        ``tile`` (sub-block edge) overrides the budget; ``n_jobs`` is unused (the
        caller's threads run blocks)."""
        want_ntk = out_ntk is not None
        outs = [o for o in (out_nngp, out_ntk) if o is not None]
        if not outs:
            return
        n1, n2 = Xb.shape[0], Zb.shape[0]
        kx, kz = qx.k, qz.k
        if kx is not None:
            Xb = np.ldexp(np.asarray(Xb, np.float64), kx.reshape((-1,) + (1,) * (Xb.ndim - 1)))
        if symmetric:
            Zb = Xb
        elif kz is not None:
            Zb = np.ldexp(np.asarray(Zb, np.float64), kz.reshape((-1,) + (1,) * (Zb.ndim - 1)))
        edge = int(tile) if tile else self.sub_block(plan, n1, n2)
        for i0 in range(0, n1, edge):
            i1 = min(n1, i0 + edge)
            for j0 in range(i0 if symmetric else 0, n2, edge):
                j1 = min(n2, j0 + edge)
                s, t = self._cross(plan, Xb[i0:i1], Zb[j0:j1], qx[i0:i1], qz[j0:j1],
                                   want_ntk, skip_diagonal=symmetric and i0 == j0)
                for o, v in zip((out_nngp, out_ntk), (s, t)):
                    if o is None:
                        continue
                    o[i0:i1, j0:j1] = v
                    if symmetric and j0 > i0:
                        o[j0:j1, i0:i1] = o[i0:i1, j0:j1].T
        if kx is not None or kz is not None:  # K(2^a x, 2^b z) = 2^(a+b) K(x, z)
            from .reference import unscale
            for o in outs:
                unscale(o, kx, kz)
        if symmetric:
            idx = np.arange(n1)
            for o in outs:
                iu = np.triu_indices(n1, 1)
                o.T[iu] = o[iu]
            if out_nngp is not None:
                out_nngp[idx, idx] = qx.nngp
            if out_ntk is not None:
                out_ntk[idx, idx] = qx.ntk


# -- drivers ----------------------------------------------------------------------
def prepare(network, X, Z, dtype):
    """Validated (X, Z, dtype, NetworkPlan): batches with one per-example shape."""
    X = check_batch(X, "X")
    if Z is not None:
        Z = check_batch(Z, "Z", X.shape[1:])
    dt = V.check_dtype(dtype, X if Z is None or Z.dtype == X.dtype
                       else np.empty(0, np.result_type(X, Z)))
    X = X.astype(dt, copy=False)
    Z = None if Z is None else Z.astype(dt, copy=False)
    return X, Z, dt, NetworkPlan(network, X.shape[1:])


def compute_diagonal(network, X, kind, *, dtype=None, out=None, backend="auto"):
    """Σ(x_i, x_i) (kind 0) or Θ(x_i, x_i) (kind 1): the self pass only, O(N P²) (full
    mode) or O(N P), by the engine K(X, X) uses with this ``backend`` (the compiled
    network engine's for 'auto'/'compiled' when it runs every layer): bitwise the
    diagonal of K(X, X)."""
    X, _, dt, plan = prepare(network, X, None, dtype)
    select = getattr(network, "_network_engine", None)
    engine = select(backend, 1) if select is not None else NetworkReferenceEngine()
    stats = engine.variances(plan, X, want_ntk=kind == 1)
    stats.check(dt, "X")
    value = (stats.nngp if kind == 0 else stats.ntk).astype(dt)
    if out is None:
        return value
    if not isinstance(out, np.ndarray) or out.shape != value.shape or out.dtype != dt:
        raise ValueError(f"out: the diagonal needs an array of shape {value.shape} and "
                         f"dtype {dt}")
    out[...] = value
    return out
