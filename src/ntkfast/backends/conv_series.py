"""Series activations (Tanh, Softplus, Sigmoid, SiLU, :class:`~ntkfast.activations.Custom`)
in the compiled network engine: the per-image coefficient tables of the Hermite series
(:mod:`ntkfast.series`) and the two passes that read them (``src_ext/ntk_conv_series.h``).

Per series activation layer and pixel p of an image, with q(p) the variance the self
pass records (the tape), the normalised coefficients b_k(q(p)) of φ and φ'
(:func:`ntkfast.series.coefficients`: one trapezoidal rule per variance, a BLAS product)
and the certificate's K table (per |ρ| bin the least K with |ρ|^{K+1} √(T_K T'_K) ≤
1e-13 √(e e'), T_K the tail energy).  The C side evaluates, per pixel pair,
Σ_k b_k(q_x(p)) b_k(q_z(p')) ρ^k and the same for φ' by Horner chains with the
largest certified K of its block of pixel pairs (a SIMD vector); a pixel pair no K of
the table certifies flags the image pair, which the engine recomputes with the next tier
of longer tables (:data:`FIRST_TERMS`, :data:`TERMS`, :data:`LONG_TERMS`) and, past the
last, with the reference engine (``_precise``).  An image and its partner's
coefficients come from one call, so both have the same number of terms and the
certificate holds over computed terms only.

* **Cross pass** (:class:`PairTables`): a symmetric block whose tables fit
  :data:`TABLE_BUDGET` in one chunk (each image's tables built once per fill), else
  the pairs in chunks of rows × columns whose tables fit (never N × P × K for all N),
  each chunk's tables built for its rows and columns only.  A layer's tables come
  through the program's :class:`TableCache`: the cross pass of the rows a full-mode
  self pass has just tabulated (``kernels(X)``) reads them instead of rebuilding.
* **Table layout**: a lane's entries :func:`entry_stride` elements apart (padded to an
  odd number of 64-byte lines, so that one pixel's entries do not share an L1 set).
* **Self pass** (:func:`run_self`): in stages, because a layer's coefficients need the
  variances the layers before it produce: the program runs up to a series activation,
  records its variances and stores the state (Σ, Θ of the image with itself), Python
  builds that layer's tables, the next stage loads the state and goes on.  O(N P²),
  in C (full mode: the planes h ≤ h' of the symmetric state, as the ReLU family); a network whose series activation sits in a branch while another branch is
  alive (the state of one slot is stored) takes the reference engine's self pass.
"""

from __future__ import annotations

import numpy as np

from .._threads import limited

__all__ = ["is_series", "SeriesLayer", "PairTables", "build_tables", "run_self",
           "reference_rows", "TableCache", "table_cache", "entry_stride", "TABLE_BUDGET",
           "CACHE_BUDGET", "SAVE", "LOAD"]

#: bytes of coefficient tables alive in one chunk of the cross pass (rows + columns).
#: Smooth 32×32 images need the long tier in their first layer: ~34 MB per image (as
#: four lanes of 1025 entries per pixel; ~17 MB in the two of one series for both
#: maps), so 8 images share one chunk, each image's tables
#: built once, where 128 MB made chunks of one row and one column whose tables were
#: rebuilt for every image pair (Myrtle-5 / tanh: 6.1 s → see docs/benchmarks.md)
TABLE_BUDGET = 512 << 20
#: bytes of stored states in one chunk of the staged self pass
SAVE_BUDGET = 256 << 20
#: most Hermite terms of a table; pixel pairs that need more are not certified and
#: their image pairs are recomputed by the reference.  Twice the FC engine's KCAP:
#: images with smooth regions have many pixel pairs at |ρ| > 0.99 (digits 16×16,
#: Myrtle-5 with SiLU, first layer: up to 7 % of the pixel pairs need more than 128
#: terms, none more than 256), each row of pixel pairs reads only the terms it needs
TERMS = 256
#: terms of the first tables (the FC engine's KCAP): the pairs (and self-pass rows) with
#: a pixel pair these cannot certify are rerun with TERMS terms, so the common case pays
#: for the shorter tables (48 terms, the FC engine's first pass, measured slower on
#: Myrtle-5 / tanh: one pixel pair out of 10^6 beyond 48 terms reruns the whole pair)
FIRST_TERMS = 128
#: terms of the last tier, for the pairs (and self-pass rows) TERMS cannot certify:
#: pixel pairs at |ρ| → 1 with a large variance (smooth images: upscaled digits with
#: Myrtle-5 / tanh reach q = 8.4 in the first layer, where ρ = 1 needs 1058 terms).
#: Every |ρ| ≤ 1 is certified up to q ≈ 12 for tanh (1584 terms), 45 for sigmoid, 32
#: and more for softplus and SiLU; the tables' trapezoidal step shrinks with the
#: terms (:func:`ntkfast.series._step`) and their length is what the largest variance
#: needs, so a table that reaches 2048 terms is rare.  Beyond, the reference engine.
LONG_TERMS = 2048
#: ntk_conv_series.h's stage modes
SAVE, LOAD = 1, 2


def is_series(act) -> bool:
    """True for an activation the compiled engine evaluates by its Hermite series."""
    from ..activations import QuadratureActivation
    return isinstance(act, QuadratureActivation) and act.uses_series


class SeriesLayer:
    """One series activation of a :class:`~.compiled_network.Program`: its op row, φ,
    its tape offset and pixel count, and whether it is the only live slot (the staged
    self pass stores one slot's state)."""

    __slots__ = ("op", "act", "qoff", "P", "alone")

    def __init__(self, op, act, qoff, P, alone):
        self.op, self.act, self.qoff, self.P, self.alone = op, act, qoff, P, alone


def _col(name):
    from .._conv_engine import INT_FIELDS
    return INT_FIELDS.index(name)


def entry_stride(P, itemsize):
    """Elements between consecutive entries of a table lane (ntk_conv_series.h's
    op->spl): P rounded up to whole 64-byte lines, an odd number of them.  With P a
    power of two the entries of a pixel would sit a multiple of 4 KiB apart, in the
    same L1 set: one Horner chain would evict its own lines (measured on Myrtle-5)."""
    per_line = max(1, 64 // itemsize)
    lines = -(-P // per_line)
    return (lines | 1) * per_line


#: a tier that leaves more than this fraction of its pairs (rows) uncertified hands
#: them to the last tier directly: smooth images, whose near-parallel pixel pairs need
#: the long tables anyway (Myrtle-5 / tanh, 32x32 smoothed noise: -12 % per pair)
SKIP_TO_LAST = 0.25


#: the staged self pass tries the first tier on 1/PROBE of its rows before the others
#: (8 smooth 32x32 images, Myrtle-5 / tanh: the first tier's pass on all rows was
#: 0.3 s of 1.8, and failed every row)
PROBE = 8


def _next_tier(k, n_tiers, failed, tried):
    """The tier after k for ``failed`` of the ``tried`` pairs (or rows) of tier k."""
    return n_tiers - 1 if failed > SKIP_TO_LAST * max(tried, 1) else k + 1


def _tiers():
    tiers = [FIRST_TERMS] if FIRST_TERMS and FIRST_TERMS < TERMS else []
    return tuple(tiers + [TERMS] + ([LONG_TERMS] if LONG_TERMS > TERMS else []))


def _layer_tables(layer, q, dtype, terms, jobs=1):
    """(blocks, K table, fields) of one layer for the variances q (n, P) float64:
    blocks (n, m P) in the row layout of ntk_conv_series.h, K table (n, NBINS P) int16,
    fields: the op's sk, sj2, spe (spd unused: 0), snb.  The blocks hold one power
    series for both maps (:meth:`ntkfast.series.SeriesCoeffs.chain`), its major and
    minor parity lanes (:func:`ntkfast.series.chain_plan`).  ``jobs``: threads for the
    coefficients (:func:`ntkfast.series.coefficients`; the same tables for any
    number)."""
    from .. import series
    n, P = q.shape
    Pp = entry_stride(P, np.dtype(dtype).itemsize)
    act = layer.act
    with np.errstate(all="ignore"):
        C = series.coefficients(act.phi2, q.ravel(), terms, act.series_step, jobs=jobs)
        F = C.chain(q.ravel())
    K = C.K
    J = K // 2 + 1
    pm, two, j2 = series.chain_plan(F)
    J2 = j2 + 1 if two else 0

    # [major lane J][minor lane J2][b_0, b'_0, e, e'], each [Pp] (pixels padded)
    block = np.zeros((n, J + J2 + 4, Pp), dtype=dtype)
    for start, par, m in ((0, pm, J), (J, 1 - pm, J2)):
        if not m:                                   # no minor lane
            continue
        part = series.chain_lane(F, par)[:, :m]
        block[:, start:start + part.shape[1], :P] = part.reshape(n, P, -1).transpose(0, 2, 1)
    for i, v in enumerate((C.A[:, 0], C.Ad[:, 0], C.e, C.ed)):
        block[:, J + J2 + i, :P] = np.asarray(v).reshape(n, P)
    block = block.reshape(n, -1)
    kt = np.ascontiguousarray(C.kt.reshape(n, P, -1).transpose(0, 2, 1),
                              dtype=np.int16).reshape(n, -1)     # [bin][pixel]
    fields = dict(sk=K, sj2=J2 - 1, spe=pm, spd=0, snb=C.kt.shape[1], spl=Pp)
    return block, kt, fields


def _assemble(prog, tapes, dtype, layers, layer_tables):
    """(iops, C, KT) from ``layer_tables(layer, q) -> (block, kt, fields)`` per series
    layer, with q its (n, P) float64 variances from ``tapes``: the blocks and K tables
    concatenated in layer order, their offsets and fields set in the op rows."""
    iops = prog.iops.copy()
    n = tapes.shape[0]
    blocks, kts = [], []
    coff = koff = 0
    for layer in layers:
        q = np.ascontiguousarray(tapes[:, layer.qoff:layer.qoff + layer.P],
                                 dtype=np.float64)
        block, kt, fields = layer_tables(layer, q)
        fields.update(coff=coff, koff=koff)
        for name, v in fields.items():
            iops[layer.op, _col(name)] = v
        blocks.append(block)
        kts.append(kt)
        coff += block.shape[1]
        koff += kt.shape[1]
    C = np.ascontiguousarray(np.concatenate(blocks, axis=1)) if blocks else \
        np.zeros((n, 1), dtype)
    KT = np.ascontiguousarray(np.concatenate(kts, axis=1)) if kts else \
        np.zeros((n, 1), np.int16)
    return iops, C, KT


class TableCache:
    """The last layer tables built for a program, keyed by (layer, terms, dtype, digest
    of the variances): the staged self pass builds each layer's tables of its rows, and
    the cross pass of the same rows (``kernels(X)``: the fill after ``variances``, or a
    second fill) reads the same ones instead of rebuilding them.  At most ``budget``
    bytes, oldest out first.  The tables are a deterministic function of the key's
    variances, so a hit is the table a rebuild would give, bit for bit."""

    def __init__(self, budget):
        self.budget = budget
        self.items = {}
        self.nbytes = 0
        self.hits = self.misses = 0

    @staticmethod
    def key(layer, terms, dtype, q):
        import hashlib
        digest = hashlib.blake2b(np.ascontiguousarray(q).view(np.uint8),
                                 digest_size=16).digest()
        return (layer.op, int(terms), np.dtype(dtype).str, q.shape, digest)

    def get(self, key, build):
        hit = self.items.get(key)
        if hit is not None:
            self.hits += 1
            return hit
        self.misses += 1
        value = build()
        size = value[0].nbytes + value[1].nbytes
        if size <= self.budget:
            while self.items and self.nbytes + size > self.budget:
                old = self.items.pop(next(iter(self.items)))
                self.nbytes -= old[0].nbytes + old[1].nbytes
            self.items[key] = value
            self.nbytes += size
        return value


#: bytes of layer tables a program keeps between the self pass and the cross pass, as
#: long as its engine lives: one ``kernels`` call (a :mod:`ntkfast.distributed` graph
#: keeps its engine, and so up to this much, while it exists).  The long tier of 8
#: smooth 32×32 images is 135 MB in its first layer alone
CACHE_BUDGET = 256 << 20


def table_cache(prog) -> TableCache:
    """The program's :class:`TableCache` (made on first use)."""
    cache = getattr(prog, "series_cache", None)
    if cache is None or cache.budget != CACHE_BUDGET:
        cache = prog.series_cache = TableCache(CACHE_BUDGET)
    return cache


def build_tables(prog, tapes, dtype, layers=None, terms=None, jobs=1):
    """(iops, C, KT): the program's op rows with the series fields set, and per row
    of ``tapes`` (the packed float64 variance tapes (n, Σ P_l), x and z rows stacked)
    the coefficient row C (``dtype``) and the K-table row KT of the series layers
    ``layers`` (default: all), laid out in that order (ntk_conv_series.h), with at
    most ``terms`` terms (default :data:`TERMS`), built on ``jobs`` threads; each
    layer's through the program's :func:`table_cache`."""
    terms = terms or TERMS
    cache = table_cache(prog)

    def layer_tables(layer, q):
        return cache.get(TableCache.key(layer, terms, dtype, q),
                         lambda: _layer_tables(layer, q, dtype, terms, jobs))

    return _assemble(prog, tapes, dtype, prog.series if layers is None else layers,
                     layer_tables)


def diag_tables(prog, tapes, dtype, layers, terms=None, jobs=1):
    """:func:`build_tables` for a self pass of same-position pixel pairs only (every
    pixel pair takes the diagonal rule E = e(q), Ė = e'(q)): the 1-D
    :func:`ntkfast.series.diag` values and empty series (K = 0)."""
    from .. import series

    def layer_tables(layer, q):
        n = q.shape[0]
        with np.errstate(all="ignore"):
            e, ed = series.diag(layer.act.phi2, q, step=layer.act.series_step)
        Pp = entry_stride(layer.P, np.dtype(dtype).itemsize)
        block = np.zeros((n, 5, Pp), dtype)   # the major lane; b_0, b'_0; e, e'
        block[:, 3, :layer.P], block[:, 4, :layer.P] = e, ed
        return (block.reshape(n, -1), np.zeros((n, layer.P), np.int16),
                dict(sk=0, sj2=-1, spe=1, spd=0, snb=1, spl=Pp))

    return _assemble(prog, tapes, dtype, layers, layer_tables)


def _bytes_per_image(prog, itemsize, terms=TERMS, tapes=None, lanes=False):
    """Upper bound of one image's tables (both lanes full): with ``terms`` terms
    per layer, or, given the packed variance ``tapes`` of the images, with the terms
    each layer's tables of those images take (:func:`_terms_bound`: the long tier's
    2048 only where a variance needs them).  ``lanes``: the minor lane as long as the
    lane plan of the coefficients at the variances' octaves makes it
    (:func:`_minor_lanes`; none for a φ with a parity, e.g. tanh: about half the bytes),
    an estimate, not a bound."""
    from .. import series
    total = 0
    for layer in prog.series:
        K = terms
        q = None if tapes is None else tapes[:, layer.qoff:layer.qoff + layer.P]
        if q is not None:
            K = min(terms, _terms_bound(layer, q, terms))
        J = K // 2 + 1
        J2 = _minor_lanes(layer, q, K) if lanes and q is not None else J
        per_pixel = (J + J2 + 4) * itemsize + 2 * series.NBINS
        total += entry_stride(layer.P, itemsize) * per_pixel
    return total


def _octaves_of(q):
    """2^g for the octaves g = ⌈log₂ q⌉ from the smallest positive q (at most 64 below
    the largest) to the largest; None when no q > 0."""
    from ..series import _octaves
    pos = q[q > 0]
    if not pos.size:
        return None
    lo, hi = _octaves(np.array([pos.min(), pos.max()]))
    return 2.0 ** np.arange(max(lo, hi - 64), hi + 1)


def _terms_bound(layer, q, terms):
    """The terms of the layer's tables for the variances q (what
    :func:`ntkfast.series.table_terms` gives them) from their range alone, O(q.size):
    the most any octave of :func:`_octaves_of` needs."""
    from .. import series
    octaves = _octaves_of(q)
    if octaves is None:
        return 2
    return series.table_terms(layer.act.phi2, octaves, terms, layer.act.series_step)


def _minor_lanes(layer, q, terms):
    """Entries per pixel of the minor lane in the lane plan
    (:func:`ntkfast.series.chain_plan`) of the coefficients at the octaves of q
    (:func:`_octaves_of`): 0 for φ with a parity (tanh, sigmoid − ½), 1 for softplus
    and SiLU (odd part u/2)."""
    from .. import series
    octaves = _octaves_of(q)
    if octaves is None:
        return 0
    with np.errstate(all="ignore"):
        C = series.coefficients(layer.act.phi2, octaves, terms, layer.act.series_step)
        _, two, j2 = series.chain_plan(C.chain(octaves))
    return j2 + 1 if two else 0


class PairTables:
    """The cross pass of a program with series activations: ``run(...)`` has the
    signature of ``_conv_engine.run_pairs`` (without the tables) and runs the work
    items in chunks of rows × columns, each with its rows' and columns' tables.
    ``tx``, ``tz``: the packed float64 tapes of the block's rows and columns;
    ``symmetric``: the columns are the rows."""

    def __init__(self, prog, tx, tz, symmetric):
        self.prog = prog
        self.tx, self.tz = tx, tz
        self.symmetric = symmetric

    def _chunk(self, dtype, terms, n):
        """Rows (and columns) per chunk: all n when the symmetric block's tables fit
        :data:`TABLE_BUDGET` (each image's tables built once per fill), else as many
        as fit with their columns'."""
        tapes = self.tx if self.symmetric else np.concatenate([self.tx, self.tz])
        size = np.dtype(dtype).itemsize
        per = max(1, _bytes_per_image(self.prog, size, terms, tapes))
        if self.symmetric and n * per <= TABLE_BUDGET:
            return max(1, n)
        # too large with both lanes full: size them by the lane plan (φ with a parity
        # has one; 24 smooth 32x32 images, Myrtle-5 / tanh: one chunk instead of 4 × 4)
        per = max(1, _bytes_per_image(self.prog, size, terms, tapes, lanes=True))
        if self.symmetric and n * per <= TABLE_BUDGET:
            return max(1, n)
        return max(1, TABLE_BUDGET // (2 * per))

    def _tables(self, r0, r1, c0, c1, dtype, terms, jobs=1):
        if self.symmetric and (r0, r1) == (c0, c1):
            iops, C, KT = build_tables(self.prog, self.tx[r0:r1], dtype, terms=terms,
                                       jobs=jobs)
            return iops, C, C, KT, KT
        n = r1 - r0
        iops, C, KT = build_tables(self.prog, np.concatenate(
            [self.tx[r0:r1], self.tz[c0:c1]]), dtype, terms=terms, jobs=jobs)
        return (iops, np.ascontiguousarray(C[:n]), np.ascontiguousarray(C[n:]),
                np.ascontiguousarray(KT[:n]), np.ascontiguousarray(KT[n:]))

    def run(self, iops, fops, prog, X, Z, Qx, Qz, items, out_s, out_t, flags, want_t,
            jobs, cols, mode, mask=None):
        """The tiers of terms (:data:`FIRST_TERMS`, then :data:`TERMS` for the pairs the
        first tables could not certify, flags = ∞, then :data:`LONG_TERMS`; a tier
        that fails more than :data:`SKIP_TO_LAST` of its pairs passes them to the
        last, and the pass starts at the last when a self pass of the program did so
        with its rows: ``run_self`` sets ``prog.series_skip``)."""
        tiers = _tiers()
        # a self pass of this program (same kernels call) whose first tier failed more
        # than SKIP_TO_LAST of its rows: smooth images, whose image pairs fail it too
        # (8 smooth 32x32 images, Myrtle-5 / tanh: cross pass 72 -> 47 ms per pair)
        k = len(tiers) - 1 if self.prog.series_skip else 0
        while True:
            self._pass(tiers[k], fops, prog, X, Z, Qx, Qz, items, out_s, out_t, flags,
                       want_t, jobs, cols, mode, mask)
            if k == len(tiers) - 1:
                return
            tried = int(np.count_nonzero(mask)) if mask is not None else \
                int((items[:, 2] - items[:, 1]).sum())
            redo = np.isinf(flags)
            if mask is not None:
                redo &= mask != 0
            failed = int(np.count_nonzero(redo))
            if not failed:
                return
            out_s[redo] = 0
            if want_t:
                out_t[redo] = 0
            flags[redo] = 0
            mask = redo.astype(np.int8)
            k = _next_tier(k, len(tiers), failed, tried)

    def _pass(self, terms, fops, prog, X, Z, Qx, Qz, items, out_s, out_t, flags, want_t,
              jobs, cols, mode, mask):
        from .. import _conv_engine
        dtype = X.dtype
        n1, n2 = X.shape[0], Z.shape[0]
        step = self._chunk(dtype, terms, max(n1, n2))
        for r0 in range(0, n1, step):
            r1 = min(n1, r0 + step)
            for c0 in range(0, n2, step):
                c1 = min(n2, c0 + step)
                sel = items[(items[:, 0] >= r0) & (items[:, 0] < r1) &
                            (items[:, 2] > c0) & (items[:, 1] < c1)]
                if not sel.shape[0]:
                    continue
                sub = np.stack([sel[:, 0] - r0, np.maximum(sel[:, 1], c0) - c0,
                                np.minimum(sel[:, 2], c1) - c0], axis=1)
                sub = np.ascontiguousarray(sub, dtype=np.int64)
                m = None if mask is None else np.ascontiguousarray(mask[r0:r1, c0:c1])
                if m is not None:
                    keep = np.fromiter((m[i, j0:j1].any() for i, j0, j1 in sub), bool,
                                       count=sub.shape[0])
                    sub = np.ascontiguousarray(sub[keep])
                    if not sub.shape[0]:
                        continue
                ops, Cx, Cz, KTx, KTz = self._tables(r0, r1, c0, c1, dtype, terms, jobs)
                s = np.zeros((r1 - r0, c1 - c0), dtype)
                t = np.zeros((r1 - r0, c1 - c0), dtype) if want_t else np.zeros((1, 1),
                                                                                dtype)
                f = np.zeros((r1 - r0, c1 - c0))
                with limited(1, "blas"):
                    _conv_engine.run_pairs(ops, fops, prog, X[r0:r1], Z[c0:c1],
                                           Qx[r0:r1], Qz[c0:c1], sub, s, t, f, want_t,
                                           jobs, cols, mode, m, Cx, Cz, KTx, KTz)
                out_s[r0:r1, c0:c1] += s
                if want_t:
                    out_t[r0:r1, c0:c1] += t
                flags[r0:r1, c0:c1] += f


def staged(prog) -> bool:
    """True when the self pass can run in stages (every series activation is the only
    live slot when it runs)."""
    return all(layer.alone for layer in prog.series)


def _stage_ops(prog, a, b):
    """The op rows of stage [a, b): ops a..b-1, loading at a series op a, and ending
    with the series op b (storing) when b is one."""
    iops = prog.iops.copy()
    col = _col("smode")
    stop = b if b < iops.shape[0] else None
    rows = iops[a:(stop + 1 if stop is not None else None)].copy()
    fops = prog.fops[a:(stop + 1 if stop is not None else None)]
    if a > 0:
        rows[0, col] = LOAD
    if stop is not None:
        rows[-1, col] = SAVE
    return rows, np.ascontiguousarray(fops)


def run_self(prog, X, Q, nngp, ntk, est, want_ntk, jobs):
    """:func:`_run_self` with the tiers of terms: the rows the first tables leave
    uncertified (est = ∞) rerun with :data:`TERMS` terms, then :data:`LONG_TERMS` (or
    the last tier at once when more than :data:`SKIP_TO_LAST` of them failed; if still
    uncertified, :func:`reference_rows` takes them).  The first tier runs on 1/
    :data:`PROBE` of the rows first: when more than SKIP_TO_LAST of those fail, all
    rows go to the last tier directly."""
    tiers = _tiers()
    n = X.shape[0]
    # a probe: the first tier on an eighth of the rows; most of them uncertified
    # (smooth images) sends every row to the last tier without the first's pass
    # (rerun with the others when it passes: the cross pass reuses tables of all rows)
    probe = max(1, n // PROBE) if len(tiers) > 1 else n
    if probe < n:
        _run_self(prog, X[:probe], Q[:probe], nngp[:probe],
                  ntk[:probe] if want_ntk else ntk, est[:probe], want_ntk, jobs, tiers[0])
    if probe < n and np.count_nonzero(np.isinf(est[:probe])) > SKIP_TO_LAST * probe:
        est[probe:] = np.inf           # not run: the loop below sends them on
    else:
        _run_self(prog, X, Q, nngp, ntk, est, want_ntk, jobs, tiers[0])
    k, tried = 0, n
    while k < len(tiers) - 1:
        rows = np.flatnonzero(np.isinf(est))
        if not rows.size:
            return est
        if k == 0 and rows.size > SKIP_TO_LAST * tried:
            prog.series_skip = True    # PairTables.run: the cross pass starts at the last
        k = _next_tier(k, len(tiers), rows.size, tried)
        tried = rows.size
        q, s = Q[rows].copy(), nngp[rows].copy()
        t = ntk[rows].copy() if want_ntk else None
        e = est[rows].copy()
        _run_self(prog, np.ascontiguousarray(X[rows]), q, s, t, e, want_ntk, jobs,
                  tiers[k])
        Q[rows], nngp[rows], est[rows] = q, s, e
        if want_ntk:
            ntk[rows] = t
    return est


def _run_self(prog, X, Q, nngp, ntk, est, want_ntk, jobs, terms):
    """The self pass of the rows X (n, P C) float64 in stages (see the module doc);
    writes the tapes Q (n, Σ P_l), the diagonals nngp, ntk and the estimate est (the
    sum over the stages of what ``run_self`` returns: near-parallel estimates of the
    ReLU family, ∞ where a series layer could not certify a pixel pair p ≠ p')."""
    from .. import _conv_engine
    n = X.shape[0]
    ops = [layer.op for layer in prog.series]
    bounds = [0] + ops + [prog.iops.shape[0]]
    step = max(1, SAVE_BUDGET // (16 * prog.maxsize))
    pdict = prog.prog(np.float64)
    est[...] = 0.0
    for r in range(0, n, step):
        r1 = min(n, r + step)
        rows = X[r:r1]
        save = np.zeros((r1 - r, 2 * prog.maxsize))
        s = np.zeros(r1 - r)
        t = np.zeros(r1 - r)
        e = np.zeros(r1 - r)
        for k in range(len(bounds) - 1):
            a, b = bounds[k], bounds[k + 1]
            if a == b:
                continue
            iops, fops = _stage_ops(prog, a, b)
            if a > 0:  # this stage starts with series layer k - 1: its tables
                layer = prog.series[k - 1]
                build = build_tables if prog.full else diag_tables
                full, C, KT = build(prog, Q[r:r1], np.float64, [layer], terms, jobs)
                iops[0] = full[layer.op]
                iops[0, _col("smode")] = LOAD
            else:
                C = KT = None
            if a == 0 and b == prog.iops.shape[0]:
                C = KT = None
            if C is None:
                C = np.zeros((r1 - r, 1))
                KT = np.zeros((r1 - r, 1), np.int16)
            e[...] = 0.0
            with limited(1, "blas"):
                _conv_engine.run_self(np.ascontiguousarray(iops), fops, pdict, rows, Q[r:r1],
                                      s, t, e, want_ntk, min(jobs, r1 - r),
                                      2 if want_ntk else 0, C, KT, save)
            est[r:r1] += e
        nngp[r:r1] = s
        if want_ntk:
            ntk[r:r1] = t
    return est


def reference_rows(reference, plan, A, Q, nngp, ntk, est, want_ntk):
    """The rows whose staged self pass met a pixel pair no table certifies (est = ∞:
    that pixel pair, and so the later tapes, were not computed) from the reference
    engine's self pass: tapes, diagonals; their estimate is then 0."""
    bad = np.flatnonzero(np.isinf(est))
    if not bad.size:
        return
    ref = reference.variances(plan, A[bad], want_ntk)
    Q[bad] = np.concatenate([np.asarray(t, np.float64).reshape(bad.size, -1)
                             for t in ref.tapes], axis=1)
    nngp[bad] = ref.nngp
    if want_ntk:
        ntk[bad] = ref.ntk
    est[bad] = 0.0


def table_memory(prog, n, itemsize=8, terms=TERMS):
    """Bytes of the tables of n images (upper bound, for the docs and tests)."""
    return n * _bytes_per_image(prog, itemsize, terms)
