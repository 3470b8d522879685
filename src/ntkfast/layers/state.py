"""The kernel state the layer rules act on, and the spatial helpers they share.

A network is evaluated on a *block* of inputs in one of two passes:

* the **self pass** (one block of rows x_1 … x_n): the state holds each row's own
  covariance ``cov`` = Σ(x_i, x_i) at every pixel pair and its NTK ``ntk`` =
  Θ(x_i, x_i).  It gives the diagonals Σ(x, x), Θ(x, x) (θ = 0 exactly: the
  activations' ``diag_rule`` at the same-position pairs) and *records* the
  per-position variances q(p) = Σ(x, x)[p, p] that every activation / LayerNorm
  reads (:class:`RecordTape`).
* the **cross pass** (rows x_1 … x_n1 against z_1 … z_n2): the state holds the cross
  covariance ``nngp`` = Σ(x_i, z_j) and ``ntk`` = Θ(x_i, z_j) of every pair; the
  variances of both sides are *replayed* from the self passes (:class:`ReplayTape`),
  so a block never recomputes a row's own covariance.

Spatial layouts (the same as neural-tangents' ``diagonal_spatial``):

* **full** (``full=True``): all pixel pairs, spatial axes interleaved as in nt:
  ``nngp`` (n1, n2, H, H', W, W'), ``cov`` (n, H, H', W, W').  Needed when a layer
  mixes positions (AvgPool, GlobalAvgPool).
* **same-position** (``full=False``): only p = p': ``nngp`` (n1, n2, H, W), ``cov``
  (n, H, W).  Enough when the readout is Flatten and nothing pools: O(P) per pair
  instead of O(P²).

Arrays are float64 with the batch axes first and the spatial axes last, so every
spatial rule below acts on the trailing axes whatever the number of batch axes.
``ntk`` may be the Python float 0.0 (identically zero: the input layer, as in nt)
or None (not wanted).

**Precise passes.**  In the precise pass of a block with near-parallel pairs (see
:mod:`ntkfast.backends.reference_network`) Σ (``nngp``/``cov``) and the recorded
variances are double-doubles (:class:`~.doubledouble.DD`, ~32 digits); Θ stays
float64 (it needs no more).  The rules below and the layers' rules accept both.  In
the float64 passes the angle-reading activations add to the tape, per pair of the
block, the estimated error their float64 angles cause
(:meth:`RecordTape.add_angle_error`), from which the engine picks the pairs to redo.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from .doubledouble import DD, is_dd

__all__ = ["Meta", "KernelState", "RecordTape", "ReplayTape", "window_pads", "window_sum",
           "spatial_diagonal", "set_spatial_diagonal", "pair_broadcast", "spatial_mean",
           "same_position_mean", "broadcast"]


@dataclass(frozen=True)
class Meta:
    """What the kernel rules need to know about a representation besides its
    covariances: its spatial shape (``()`` for vectors), its channel count (the
    fan-in of a following 'standard' Dense/Conv; None if unknown) and whether it is
    a zero-mean Gaussian (nt's ``is_gaussian``: after Dense/Conv, pooling and sums of
    such; not after an activation, the input or Flatten)."""

    spatial: tuple
    channels: int | None
    gaussian: bool

    @property
    def size(self) -> int:
        return math.prod(self.spatial)


# -- variance tapes --------------------------------------------------------------
class _AngleErrors:
    #: per pair of the block (cross pass: (n1, n2); self pass: (n,)), the estimated
    #: relative error of Θ that float64 angles of near-parallel pixel pairs cause,
    #: summed over the angle-reading activations (see :mod:`.elementwise`); None
    #: while no activation has estimated one
    angle_error = None
    #: True once an activation without a double-double rule ran: a precise pass would
    #: evaluate it in float64, so later angles are not estimated (nothing to gain)
    float64_only = False

    def add_angle_error(self, est):
        """Add ``est`` (the block's batch shape) to :attr:`angle_error`."""
        self.angle_error = est if self.angle_error is None else self.angle_error + est


class RecordTape(_AngleErrors):
    """Self pass: records the variances q(p) of each variance-reading layer, in
    the order the layers run (branches in order, depth first)."""

    def __init__(self):
        self.records = []

    def record(self, q):
        self.records.append(q)
        return q


class ReplayTape(_AngleErrors):
    """Cross pass: hands back the recorded variances of the x rows and the z rows
    in the same order (``xs``, ``zs``: lists of arrays (n, *S_l)).

    ``zipped``: the block is the list of pairs (x_k, z_k) (batch shape (n, 1)) instead
    of all pairs x_i × z_j (n1, n2): the precise pass of scattered pairs."""

    def __init__(self, xs, zs, zipped=False, skip_diagonal=False):
        if len(xs) != len(zs):
            raise ValueError("ReplayTape: the two sides recorded different layer counts")
        self.xs, self.zs, self.pos = xs, zs, 0
        self.zipped = zipped
        #: the block is x against itself and its pairs (i, i) are not wanted (their
        #: values come from the self pass): no angle errors are estimated for them
        self.skip_diagonal = skip_diagonal

    def next(self):
        if self.pos >= len(self.xs):
            raise RuntimeError("ReplayTape: more variance reads than recorded (the self "
                               "and cross passes ran different layers)")
        i = self.pos
        self.pos += 1
        return self.xs[i], self.zs[i]


# -- the state ---------------------------------------------------------------------
def _is_zero_scalar(a):
    return a is not None and np.ndim(a) == 0


@dataclass
class KernelState:
    """Covariances of one block of inputs after some layers (see the module doc).

    Exactly one of ``cov`` (self pass) and ``nngp`` (cross pass) is set.
    """

    nngp: np.ndarray | None
    ntk: np.ndarray | float | None
    cov: np.ndarray | None
    full: bool
    meta: Meta
    tape: RecordTape | ReplayTape

    @property
    def is_self(self) -> bool:
        return self.nngp is None

    @property
    def sigma(self):
        """The covariance Θ is paired with: ``cov`` (self pass) or ``nngp``."""
        return self.cov if self.is_self else self.nngp

    def evolve(self, *, sigma=None, ntk=None, meta=None) -> "KernelState":
        """A new state with Σ (``cov`` or ``nngp``), Θ and/or meta replaced."""
        kw = {}
        if sigma is not None:
            kw["cov" if self.is_self else "nngp"] = sigma
        if ntk is not None:
            kw["ntk"] = ntk
        if meta is not None:
            kw["meta"] = meta
        return dataclasses.replace(self, **kw)

    def map_linear(self, fn, meta) -> "KernelState":
        """Apply one linear map of the spatial axes to Σ and Θ (pooling, readouts);
        an identically-zero Θ stays zero."""
        ntk = self.ntk
        if ntk is not None and not _is_zero_scalar(ntk):
            ntk = fn(ntk)
        return dataclasses.replace(self, meta=meta, ntk=ntk,
                                   **{"cov" if self.is_self else "nngp": fn(self.sigma)})

    def variances(self):
        """(q_x, q_z) broadcastable against Σ, the per-position variances of both sides
        (recorded in the self pass, replayed in the cross pass), and the raw q
        (self pass: (n, *S); cross pass: None)."""
        d = len(self.meta.spatial)
        if self.is_self:
            q = spatial_diagonal(self.cov, d) if self.full else self.cov
            self.tape.record(q)
            if self.full:
                return _interleave(q, d, 0), _interleave(q, d, 1), q
            return q, q, q
        q1, q2 = self.tape.next()
        a, b = pair_broadcast(q1, q2, d, self.full)
        if self.tape.zipped:  # (1, n, *A) → (n, 1, *A): pair k is (x_k, z_k)
            b = b.reshape(b.shape[1:2] + (1,) + b.shape[2:])
        return a, b, None


def scale_ntk(ntk, factor):
    """Θ · factor, keeping None and an identically-zero Θ as they are."""
    if ntk is None or _is_zero_scalar(ntk):
        return ntk
    return ntk * factor


# -- spatial helpers ----------------------------------------------------------------
def _interleave(q, d, which):
    """q (b, n_1, …, n_d) → (b, n_1, 1, n_2, 1, …) (which=0, position p) or
    (b, 1, n_1, 1, n_2, …) (which=1, position p'), to broadcast against a full-mode
    array (b, n_1, n_1, …)."""
    shape = list(q.shape[:q.ndim - d])
    for n in q.shape[q.ndim - d:]:
        shape += [n, 1] if which == 0 else [1, n]
    return q.reshape(shape)


def pair_broadcast(q1, q2, d, full):
    """Variances of the x rows (n1, *S) and z rows (n2, *S) shaped to broadcast against
    a cross array (n1, n2, *A)."""
    if full:
        a, b = _interleave(q1, d, 0), _interleave(q2, d, 1)
    else:
        a, b = q1, q2
    return a[:, None], b[None, :]


def _diag_index(spatial):
    grids = np.ix_(*[np.arange(n) for n in spatial])
    idx = [Ellipsis]
    for g in grids:
        idx += [g, g]
    return tuple(idx)


def spatial_diagonal(a, d):
    """The same-position entries a[..., p, p] of a full-mode array: (..., n_1, n_2, …)."""
    if d == 0:
        return a
    spatial = a.shape[a.ndim - 2 * d::2]
    return a[_diag_index(spatial)]


def set_spatial_diagonal(a, d, values):
    """a[..., p, p] = values, in place."""
    if d == 0:
        a[...] = values
        return
    spatial = a.shape[a.ndim - 2 * d::2]
    a[_diag_index(spatial)] = values


def window_pads(n, k, s, padding):
    """(low, high) padding of one axis as lax computes it: VALID none; SAME and
    CIRCULAR pad to ⌈n/s⌉ outputs with total = max((⌈n/s⌉ − 1)s + k − n, 0),
    low = total // 2 (zeros for SAME, wrapped values for CIRCULAR)."""
    if padding == "VALID":
        return 0, 0
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def broadcast(a, shape):
    """np.broadcast_to for float64 arrays and double-doubles."""
    return a.broadcast_to(shape) if is_dd(a) else np.broadcast_to(a, shape)


def _pad(a, axes, pads, padding):
    if all(p == (0, 0) for p in pads):
        return a
    if is_dd(a):
        return DD(_pad(a.hi, axes, pads, padding), _pad(a.lo, axes, pads, padding))
    width = [(0, 0)] * a.ndim
    for ax, p in zip(axes, pads):
        width[ax % a.ndim] = p
    return np.pad(a, width, mode="wrap" if padding == "CIRCULAR" else "constant")


def _take(a, axis, start, count, step):
    idx = [slice(None)] * a.ndim
    idx[axis % a.ndim] = slice(start, start + (count - 1) * step + 1, step)
    return a[tuple(idx)]


def window_sum(a, axes, n, k, s, padding):
    """Σ_o a[…, s·i + o, …] over the window offsets o = 0 … k−1 along every axis in
    ``axes`` *with the same offset on all of them* (a convolution's Φ[s p + o,
    s p' + o] with axes = (p, p'); one axis for pooling or the same-position mode),
    after padding each of those axes (SAME zeros, CIRCULAR wrap)."""
    lo, hi = window_pads(n, k, s, padding)
    padded = _pad(a, axes, [(lo, hi)] * len(axes), padding)
    count = (n + lo + hi - k) // s + 1
    out = None
    for o in range(k):
        view = padded
        for ax in axes:
            view = _take(view, ax, o, count, s)
        if out is None:
            out = view.copy() if is_dd(view) else np.array(view, dtype=np.float64)
        else:
            out += view  # a double-double sum for DD
    return out


def spatial_mean(a, d, full):
    """The mean over every spatial entry (all pixel pairs in full mode)."""
    if d == 0:
        return a
    n_axes = 2 * d if full else d
    return a.mean(axis=tuple(range(a.ndim - n_axes, a.ndim)))


def same_position_mean(a, d, full):
    """The mean over the same-position pairs (p, p)."""
    if d == 0:
        return a
    if full:
        a = spatial_diagonal(a, d)
    return a.mean(axis=tuple(range(a.ndim - d, a.ndim)))
