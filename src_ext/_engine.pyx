# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled Gram engine: BLAS GEMM per panel + fused depth recursion, OpenMP over panels.

Work item = a panel of ``tile`` rows × up to ``panel`` columns (a multiple of tile), with
per-thread buffers: one GEMM (``scipy.linalg.cython_blas``; SYRK on the diagonal
tile of K(X, X)), then, row by row, the whole recursion over all layers while the
row is in L1 (C kernels in ``ntk_recursion.h``), one write of each recorded kernel
(one, or every (depth, frozen k) kernel of a sweep: :func:`fill_tiles_multi`), and
the mirrored write of each block of 16 rows while it is still in cache (whole aligned
cache lines streamed with non-temporal stores on x86-64-v3/v4; none with mirror=False).  The tile
kernel runs at the CPU's instruction-set level (:func:`isa`, :func:`set_isa`).  For K(X, X) only
panels on and above the diagonal are computed.  The GIL is released; BLAS must
be pinned to one thread by the caller (threadpoolctl): the parallelism is ours.
"""

from cython.parallel cimport parallel, prange, threadid
from libc.stddef cimport ptrdiff_t
from scipy.linalg.cython_blas cimport dgemm, dsyrk, sgemm, ssyrk

import numpy as np

cdef extern from "ntk_recursion.h" nogil:
    ctypedef struct ntk_spec:
        int act
        int depth
        double w2, b2, lam0, lam, mu, inv_d, w_scale, b_std
        double c0, c1, apb2h, ab, ea2, eb2, ec2, tau

    ctypedef struct ntk_record:
        int nk
        const int *k
        const int *s_slot
        const int *t_slot
        int nout

    int NTK_WORK_ROWS(int nk)

    void ntk_tile_f64(const ntk_spec *sp, const ntk_record *rec, int bi, int bj,
                      const double *gram, ptrdiff_t ldg, const double *X, const double *Z,
                      int d, const double *Qx, const double *Rx, ptrdiff_t ldx,
                      const double *Qz, const double *Rz, ptrdiff_t ldz,
                      int diag_tile, int mirror, double *work,
                      double *const *out, const ptrdiff_t *ldo, ptrdiff_t i0, ptrdiff_t j0)
    void ntk_tile_f32(const ntk_spec *sp, const ntk_record *rec, int bi, int bj,
                      const float *gram, ptrdiff_t ldg, const float *X, const float *Z,
                      int d, const float *Qx, const float *Rx, ptrdiff_t ldx,
                      const float *Qz, const float *Rz, ptrdiff_t ldz,
                      int diag_tile, int mirror, float *work,
                      float *const *out, const ptrdiff_t *ldo, ptrdiff_t i0, ptrdiff_t j0)

    int ntk_isa_best()
    int ntk_isa_current()
    int ntk_set_isa(int level)

#: instruction-set levels of the tile kernel, by ntk_recursion.h's number
ISA_LEVELS = ("baseline", "x86-64-v3", "x86-64-v4")
ntk_isa_current()  # detect the CPU's level once, here, not racing in the OpenMP threads


def isa_levels():
    """The levels this build and CPU can run, lowest first (always 'baseline')."""
    return ISA_LEVELS[:ntk_isa_best() + 1]


def isa():
    """The level the tile kernel runs now."""
    return ISA_LEVELS[ntk_isa_current()]


def set_isa(str level):
    """Run the tile kernel at ``level`` (one of :func:`isa_levels`); returns it."""
    if level not in ISA_LEVELS:
        raise ValueError(f"level: expected one of {ISA_LEVELS}, got {level!r}")
    if ntk_set_isa(ISA_LEVELS.index(level)) < 0:
        raise ValueError(f"level: {level!r} is not available on this CPU/build; "
                         f"available: {isa_levels()}")
    return level


ctypedef fused real:
    float
    double


cdef void _gram_block(real *gram, int ldc, const real *Xb, const real *Zb, int bi, int bj,
                      int d, bint syrk) noexcept nogil:
    """gram[i * ldc + j] = x_i . z_j (row-major).  Column-major view: gram^T = Zb^T' Xb'."""
    cdef char tr = b'T'
    cdef char nt = b'N'
    cdef char lo = b'L'
    cdef int lda = d
    cdef real one = 1.0
    cdef real zero = 0.0
    if bi <= 0 or bj <= 0:
        return
    if syrk:  # row-major upper triangle == column-major lower triangle
        if real is double:
            dsyrk(&lo, &tr, &bi, &d, &one, <double *> Xb, &lda, &zero, gram, &ldc)
        else:
            ssyrk(&lo, &tr, &bi, &d, &one, <float *> Xb, &lda, &zero, gram, &ldc)
    else:
        if real is double:
            dgemm(&tr, &nt, &bj, &bi, &d, &one, <double *> Zb, &lda, <double *> Xb, &lda,
                  &zero, gram, &ldc)
        else:
            sgemm(&tr, &nt, &bj, &bi, &d, &one, <float *> Zb, &lda, <float *> Xb, &lda,
                  &zero, gram, &ldc)


cdef inline void _tile(const ntk_spec *sp, const ntk_record *rec, int bi, int bj,
                       const real *gram, ptrdiff_t ldg, const real *X, const real *Z, int d,
                       const real *Qx, const real *Rx, ptrdiff_t ldx,
                       const real *Qz, const real *Rz, ptrdiff_t ldz,
                       bint diag_tile, bint mirror, real *work,
                       real **out, const ptrdiff_t *ldo, ptrdiff_t i0,
                       ptrdiff_t j0) noexcept nogil:
    """The C tile kernel of the matching precision (see ntk_recursion_impl.h)."""
    if real is double:
        ntk_tile_f64(sp, rec, bi, bj, gram, ldg, X, Z, d, Qx, Rx, ldx, Qz, Rz, ldz, diag_tile,
                     mirror, work, out, ldo, i0, j0)
    else:
        ntk_tile_f32(sp, rec, bi, bj, gram, ldg, X, Z, d, Qx, Rx, ldx, Qz, Rz, ldz, diag_tile,
                     mirror, work, out, ldo, i0, j0)


cdef ntk_spec _spec(dict params, Py_ssize_t d):
    cdef ntk_spec sp
    sp.act = params["act"]
    sp.depth = params["depth"]
    sp.w2 = params["w2"]; sp.b2 = params["b2"]
    sp.lam0 = params["lam0"]; sp.lam = params["lam"]; sp.mu = params["mu"]
    sp.inv_d = 1.0 / d
    sp.w_scale = params["w_scale"]; sp.b_std = params["b_std"]
    sp.c0 = params["c0"]; sp.c1 = params["c1"]; sp.apb2h = params["apb2h"]; sp.ab = params["ab"]
    sp.ea2 = params["ea2"]; sp.eb2 = params["eb2"]; sp.ec2 = params["ec2"]
    sp.tau = params["tau"]
    return sp


def fill_tiles(dict params, const real[:, ::1] X, const real[:, ::1] Z,
               const real[:, ::1] Qx, const real[:, ::1] Rx,
               const real[:, ::1] Qz, const real[:, ::1] Rz,
               real[:, :] out_s, real[:, :] out_t, bint want_s, bint want_t,
               bint symmetric, int tile, int n_jobs, int panel_cols=2048):
    """Fill out_s = Σ(X, Z) and/or out_t = Θ(X, Z) of the depth ``params["depth"]`` net.

    Qx (depth+1, N): per-layer variances q^l(x_i); Rx (2 (depth+1), N): their square
    roots, then their reciprocal square roots (0 where q = 0).
    tile: rows per work item; panel_cols: its columns (rounded down to a multiple of
    tile, at least one tile): one GEMM per work item.
    Outputs need unit stride along rows (any row stride).  symmetric: Z is X;
    panels on/above the diagonal are computed and mirrored (diagonal entries are
    left for the caller to overwrite with the exact diagonal recursion).
    """
    depth = params["depth"]
    s_slot = [-1] * (depth + 1)
    t_slot = [-1] * (depth + 1)
    outs = []
    if want_s:
        s_slot[depth] = len(outs)
        outs.append(out_s)
    if want_t:
        t_slot[depth] = len(outs)
        outs.append(out_t)
    fill_tiles_multi(params, X, Z, Qx, Rx, Qz, Rz, outs, s_slot, t_slot, [0], symmetric,
                     tile, n_jobs, panel_cols)


def fill_tiles_multi(dict params, const real[:, ::1] X, const real[:, ::1] Z,
                     const real[:, ::1] Qx, const real[:, ::1] Rx,
                     const real[:, ::1] Qz, const real[:, ::1] Rz,
                     list outs, s_slot, t_slot, ks, bint symmetric, int tile, int n_jobs,
                     int panel_cols=2048, bint mirror=True):
    """Fill many kernels of one recursion pass (the ntk_record of ntk_recursion.h).

    outs: N×M output arrays of X's dtype (unit stride along rows).  After layer
    l = 0 .. params["depth"], Σ goes to ``outs[s_slot[l]]`` and the Θ of frozen-layer
    count ``ks[c]`` (strictly ascending) to ``outs[t_slot[l * len(ks) + c]]``; -1 = not
    recorded; each output at most once.  mirror (symmetric only): also write the
    strictly lower triangle (each upper tile's transpose, while it is in cache);
    False: only j >= i is written, the strictly lower triangle is not touched.
    The rest as :func:`fill_tiles`.
    """
    cdef ntk_spec sp = _spec(params, X.shape[1])
    cdef Py_ssize_t depth = sp.depth, nk = len(ks), nout = len(outs)
    if Rx.shape[0] != 2 * Qx.shape[0] or Rz.shape[0] != 2 * Qz.shape[0]:
        raise ValueError("Rx/Rz: expected sqrt(q) and 1/sqrt(q) rows (2 (depth + 1))")
    if Qx.shape[0] != depth + 1 or Qz.shape[0] != depth + 1:
        raise ValueError("Qx/Qz: expected depth + 1 rows of layer variances")
    cdef int[::1] k_arr = np.ascontiguousarray(ks, dtype=np.intc)
    cdef int[::1] s_arr = np.ascontiguousarray(s_slot, dtype=np.intc)
    cdef int[::1] t_arr = np.ascontiguousarray(t_slot, dtype=np.intc)
    if nk < 1 or (nk > 1 and np.any(np.diff(k_arr) <= 0)) or k_arr[0] < 0:
        raise ValueError("ks: expected strictly ascending frozen-layer counts >= 0")
    if s_arr.shape[0] != depth + 1 or t_arr.shape[0] != (depth + 1) * nk:
        raise ValueError("s_slot/t_slot: expected depth + 1 and (depth + 1) * len(ks) entries")
    used = [v for v in list(s_slot) + list(t_slot) if v >= 0]
    if len(set(used)) != len(used) or any(v >= nout for v in used):
        raise ValueError("s_slot/t_slot: each output slot at most once, < len(outs)")
    for lyr in range(depth + 1):
        for c in range(nk):
            if t_arr[lyr * nk + c] >= 0 and k_arr[c] > lyr:
                raise ValueError(f"t_slot: Θ of frozen count {k_arr[c]} at layer {lyr}")

    cdef ntk_record rec
    rec.nk = <int> nk
    rec.k = &k_arr[0]
    rec.s_slot = &s_arr[0]
    rec.t_slot = &t_arr[0]
    rec.nout = <int> nout

    cdef Py_ssize_t N = X.shape[0], M = Z.shape[0]
    cdef int d = <int> X.shape[1]
    cdef Py_ssize_t ldx = Qx.shape[1], ldz = Qz.shape[1]
    dtype = np.float64 if real is double else np.float32
    # output base pointers and row strides (the memoryviews kept alive in `views`)
    cdef real[:, :] view
    views = []
    ptr_store = np.zeros(max(nout, 1), dtype=np.uintp)
    cdef Py_ssize_t[::1] ldo = np.zeros(max(nout, 1), dtype=np.intp)
    cdef size_t[::1] ptrs = ptr_store
    for o in range(nout):
        view = outs[o]
        if view.shape[0] != N or view.shape[1] != M:
            raise ValueError(f"out: output {o} has shape ({view.shape[0]}, {view.shape[1]}), "
                             f"expected ({N}, {M})")
        if view.strides[1] != sizeof(real):
            raise ValueError("out: output rows must be contiguous")
        views.append(view)
        ptrs[o] = <size_t> &view[0, 0]
        ldo[o] = view.strides[0] // sizeof(real)
    cdef real **outp = <real **> &ptrs[0]
    cdef const ptrdiff_t *ldop = <const ptrdiff_t *> &ldo[0]

    # Work items: panels of `tile` rows x up to `panel` columns (one GEMM each, so the
    # row block is packed once per panel); for K(X, X) only columns >= the panel's
    # first row, whose leading tile is the diagonal one (SYRK).
    cdef Py_ssize_t panel = tile * max(1, panel_cols // tile)
    rows, starts = [], []
    for i in range(0, N, tile):
        for j in range(i if symmetric else 0, M, panel):
            rows.append(i)
            starts.append(j)
    cdef Py_ssize_t[::1] ti = np.asarray(rows, dtype=np.intp)
    cdef Py_ssize_t[::1] tj = np.asarray(starts, dtype=np.intp)
    cdef Py_ssize_t ntiles = ti.shape[0]
    if ntiles == 0:
        return

    cdef const real *xp = &X[0, 0]
    cdef const real *zp = &Z[0, 0]
    cdef const real *qxp = &Qx[0, 0]
    cdef const real *rxp = &Rx[0, 0]
    cdef const real *qzp = &Qz[0, 0]
    cdef const real *rzp = &Rz[0, 0]

    # Per-thread scratch: a tile of dot products and the recursion state rows.
    cdef real[:, ::1] gram_buf = np.empty((n_jobs, tile * panel), dtype=dtype)
    cdef real[:, ::1] work_buf = np.empty((n_jobs, NTK_WORK_ROWS(<int> nk) * panel),
                                          dtype=dtype)

    cdef Py_ssize_t t, i0, j0
    cdef int bi, w, off, tid
    cdef bint mirrored = symmetric and mirror
    cdef real *gram
    cdef real *work

    with nogil, parallel(num_threads=n_jobs):
        tid = threadid()
        gram = &gram_buf[tid, 0]
        work = &work_buf[tid, 0]
        for t in prange(ntiles, schedule="dynamic"):
            i0 = ti[t]
            j0 = tj[t]
            bi = <int> (tile if i0 + tile <= N else N - i0)
            w = <int> (panel if j0 + panel <= M else M - j0)
            off = bi if (symmetric and i0 == j0) else 0
            if off:  # the diagonal tile
                _gram_block(gram, w, xp + i0 * d, xp + i0 * d, bi, bi, d, True)
            _gram_block(gram + off, w, xp + i0 * d, zp + (j0 + off) * d, bi, w - off, d,
                        False)
            if off:  # the diagonal tile: j >= i only
                _tile(&sp, &rec, bi, bi, gram, w, xp + i0 * d, xp + i0 * d, d, qxp + i0,
                      rxp + i0, ldx, qzp + i0, rzp + i0, ldz, True, mirrored, work,
                      outp, ldop, i0, i0)
            if w > off:
                _tile(&sp, &rec, bi, w - off, gram + off, w, xp + i0 * d,
                      zp + (j0 + off) * d, d, qxp + i0, rxp + i0, ldx, qzp + j0 + off,
                      rzp + j0 + off, ldz, False, mirrored, work, outp, ldop, i0, j0 + off)
