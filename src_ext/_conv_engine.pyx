# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled network engine: per pair of inputs, the whole network (ntk_conv.h), OpenMP
over work items, BLAS for the first layer's pixel-pair products.

Work item = (row i, columns j0:j1): in full mode one GEMM x_i (P x C) . Z[j0:j1]^T
(a tile of P x (j1 - j0) P pixel-pair products, ``scipy.linalg.cython_blas``), then each
pair (i, j) through the network's program in per-thread workspaces.  The GIL is
released; BLAS must be pinned to one thread by the caller (our loop is the
parallelism).  See ntkfast/backends/compiled_network.py for the program.
"""

from cython.parallel cimport parallel, prange, threadid
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t
from scipy.linalg.cython_blas cimport dgemm, sgemm

import numpy as np

cdef extern from "ntk_conv.h" nogil:
    ctypedef struct ncv_op:
        int kind, dst, src
        int hi, wi, ho, wo
        int kh, kw, sh, sw
        int lo_h, lo_w
        int circ, act, qoff, standard, flag
        int sk, sj2, spe, spd, snb, smode, coff, koff, spl
        double w2, b2, cs, c0, inv, pa, pb, pc

    ctypedef struct ncv_prog:
        int n_ops
        const ncv_op *ops
        int full
        int H, W, C
        int n_slots
        long maxsize
        int want_ntk
        int idx_size
        long padsize
        double tau
        int est_mode

    ctypedef struct ncv_stab:
        const void *cx
        const void *cz
        const int16_t *kx
        const int16_t *kz
        void *save

    double ncv_pair_f64(const ncv_prog *pg, const double *g, long ldg, const double *x,
                     const double *z, const double *qx, const double *qz, const double *rx,
                     const double *rz, double *qself,
                     double *ws, int *iws, double *out_s, double *out_t,
                     const ncv_stab *st)
    double ncv_pair_f32(const ncv_prog *pg, const float *g, long ldg, const float *x,
                     const float *z, const float *qx, const float *qz, const float *rx,
                     const float *rz, float *qself,
                     float *ws, int *iws, float *out_s, float *out_t,
                     const ncv_stab *st)

ctypedef fused real:
    float
    double

#: int fields of one op, in ncv_op order (the Python compiler writes these columns)
INT_FIELDS = ("kind", "dst", "src", "hi", "wi", "ho", "wo", "kh", "kw", "sh", "sw",
              "lo_h", "lo_w", "circ", "act", "qoff", "standard", "flag",
              "sk", "sj2", "spe", "spd", "snb", "smode", "coff", "koff", "spl")
FLOAT_FIELDS = ("w2", "b2", "cs", "c0", "inv", "pa", "pb", "pc")


cdef void _gemm(real *g, int ldc, const real *xb, const real *zb, int bi, int bj,
                int d) noexcept nogil:
    """g[i * ldc + j] = x_i . z_j (row-major), as a column-major g^T = Zb^T' Xb'."""
    cdef char tr = b'T'
    cdef char nt = b'N'
    cdef int lda = d
    cdef real one = 1.0
    cdef real zero = 0.0
    if real is double:
        dgemm(&tr, &nt, &bj, &bi, &d, &one, <double *> zb, &lda, <double *> xb, &lda,
              &zero, g, &ldc)
    else:
        sgemm(&tr, &nt, &bj, &bi, &d, &one, <float *> zb, &lda, <float *> xb, &lda,
              &zero, g, &ldc)


#: float64, full mode: the ReLU family's division-free angle (False: the atan2)
FAST_ANGLE = True


def _inverse_roots(q):
    """1 / sqrt(q) elementwise, 0 where q <= 0 (a C-contiguous float64 copy)."""
    r = np.zeros(q.shape)
    np.divide(1.0, np.sqrt(q, where=q > 0, out=np.zeros(q.shape)), out=r, where=q > 0)
    return r


def _sizes(dict prog, int tile_cols):
    """(GEMM tile, workspace) elements per thread: the workspace holds 2 (n_slots + 1)
    states of ``maxsize`` elements (Σ and Θ per slot and two spares), four W x W plane
    buffers and the same-position Conv's padded copies; the GEMM tile (full mode) is
    P² ``tile_cols`` elements, kept in the first spare state when ``tile_cols`` is 1."""
    P = prog["H"] * prog["W"]
    wsize = (2 * (prog["n_slots"] + 1) * prog["maxsize"] + 4 * prog["W"] * prog["W"]
             + prog.get("padsize", 0))
    gsize = P * P * tile_cols if prog["full"] and tile_cols > 1 else 1
    return gsize, wsize


def workspace_bytes(dict prog, int tile_cols, itemsize):
    """Bytes of one thread's buffers in :func:`run_pairs` (GEMM tile + workspace +
    index scratch) for ``tile_cols`` columns per work item and ``itemsize``-byte reals."""
    gsize, wsize = _sizes(prog, tile_cols)
    return (gsize + wsize) * itemsize + 4 * max(1, prog["idx_size"])


def _channels_first(X, int P, int C):
    """Rows (P C, channels last) as rows (C P, channels first), C-contiguous."""
    X = np.asarray(X)
    return np.ascontiguousarray(X.reshape(X.shape[0], P, C).transpose(0, 2, 1)).reshape(
        X.shape[0], P * C)


cdef inline double _pair(const ncv_prog *pg, const real *g, long ldg, const real *x,
                      const real *z, const real *qx, const real *qz, const real *rx,
                      const real *rz, real *ws, int *iws, real *out_s,
                      real *out_t, const ncv_stab *st) noexcept nogil:
    if real is double:
        return ncv_pair_f64(pg, g, ldg, x, z, qx, qz, rx, rz, NULL, ws, iws, out_s, out_t,
                            st)
    else:
        return ncv_pair_f32(pg, g, ldg, x, z, qx, qz, NULL, NULL, NULL, ws, iws, out_s,
                            out_t, st)


cdef object _ops(const int64_t[:, ::1] iops, const double[:, ::1] fops):
    """The ops of a program (the Python compiler's int and float columns) as a buffer
    of ncv_op."""
    cdef Py_ssize_t n_ops = iops.shape[0], t
    if fops.shape[0] != n_ops or iops.shape[1] != len(INT_FIELDS) or \
            fops.shape[1] != len(FLOAT_FIELDS):
        raise ValueError("run_pairs: malformed program")
    ops_buf = bytearray(max(1, n_ops) * sizeof(ncv_op))
    cdef ncv_op *ops = <ncv_op *> (<char *> ops_buf)
    for t in range(n_ops):
        ops[t].kind = iops[t, 0]; ops[t].dst = iops[t, 1]; ops[t].src = iops[t, 2]
        ops[t].hi = iops[t, 3]; ops[t].wi = iops[t, 4]; ops[t].ho = iops[t, 5]
        ops[t].wo = iops[t, 6]; ops[t].kh = iops[t, 7]; ops[t].kw = iops[t, 8]
        ops[t].sh = iops[t, 9]; ops[t].sw = iops[t, 10]; ops[t].lo_h = iops[t, 11]
        ops[t].lo_w = iops[t, 12]; ops[t].circ = iops[t, 13]; ops[t].act = iops[t, 14]
        ops[t].qoff = iops[t, 15]; ops[t].standard = iops[t, 16]; ops[t].flag = iops[t, 17]
        ops[t].sk = iops[t, 18]; ops[t].sj2 = iops[t, 19]; ops[t].spe = iops[t, 20]
        ops[t].spd = iops[t, 21]; ops[t].snb = iops[t, 22]; ops[t].smode = iops[t, 23]
        ops[t].coff = iops[t, 24]; ops[t].koff = iops[t, 25]
        ops[t].spl = iops[t, 26]
        ops[t].w2 = fops[t, 0]; ops[t].b2 = fops[t, 1]; ops[t].cs = fops[t, 2]
        ops[t].c0 = fops[t, 3]; ops[t].inv = fops[t, 4]; ops[t].pa = fops[t, 5]
        ops[t].pb = fops[t, 6]; ops[t].pc = fops[t, 7]
    return ops_buf


cdef bint _has_series(const int64_t[:, ::1] iops):
    """True when the program has a series activation (NCV_ACT_SERIES)."""
    cdef Py_ssize_t t
    for t in range(iops.shape[0]):
        if iops[t, 0] == 3 and iops[t, 14] == 4:
            return True
    return False


cdef int _prog(ncv_prog *pg, object ops_buf, Py_ssize_t n_ops, dict prog, bint want_ntk,
               int est_mode) except -1:
    pg.n_ops = <int> n_ops
    pg.ops = <const ncv_op *> (<char *> ops_buf)
    pg.full = prog["full"]
    pg.H = prog["H"]; pg.W = prog["W"]; pg.C = prog["C"]
    pg.n_slots = prog["n_slots"]
    pg.maxsize = prog["maxsize"]
    pg.want_ntk = want_ntk
    pg.idx_size = prog["idx_size"]
    pg.padsize = prog.get("padsize", 0)
    pg.tau = prog["tau"]
    pg.est_mode = est_mode
    if pg.n_slots < 1 or pg.n_slots > 16:
        raise ValueError("run_pairs: 1 to 16 slots")
    return 0


def run_pairs(const int64_t[:, ::1] iops, const double[:, ::1] fops, dict prog,
              const real[:, ::1] X, const real[:, ::1] Z, const real[:, ::1] Qx,
              const real[:, ::1] Qz, const int64_t[:, ::1] items,
              real[:, ::1] out_s, real[:, ::1] out_t, double[:, ::1] flags,
              bint want_ntk, int n_jobs, int tile_cols, int est_mode=0,
              const int8_t[:, ::1] mask=None, const real[:, ::1] Cx=None,
              const real[:, ::1] Cz=None, const int16_t[:, ::1] KTx=None,
              const int16_t[:, ::1] KTz=None):
    """Σ (and Θ) of the pairs of the work items ``items`` (rows (i, j0, j1): pairs
    (i, j) for j0 <= j < j1, at most ``tile_cols`` columns) into out_s[i, j] /
    out_t[i, j]; flags[i, j] = what ncv_pair returns (est_mode 0: the number of
    near-parallel pixel pairs met; 1: Θ's estimated relative error from its float64
    angles, or without Θ the count of candidate pixel pairs; see ntk_conv_impl.h).
    ``mask`` (n1, n2): only the pairs with mask[i, j] != 0 are computed.
    X (n1, P C), Z (n2, P C): the inputs, channels last; Qx, Qz: the packed
    variance tapes.  ``prog``: full, H, W, C, n_slots, maxsize, idx_size, tau.
    Cx, Cz, KTx, KTz: the series activations' per-row coefficient and K tables
    (ntk_conv_series.h; required when the program has a series activation)."""
    ops_buf = _ops(iops, fops)
    cdef ncv_prog pg
    _prog(&pg, ops_buf, iops.shape[0], prog, want_ntk, est_mode)
    cdef int P = pg.H * pg.W, C = pg.C
    if X.shape[1] != P * C or Z.shape[1] != P * C:
        raise ValueError("run_pairs: inputs of the wrong size")

    dtype = np.float64 if real is double else np.float32
    # one column per work item (large images): the GEMM block in the workspace
    cdef bint g_in_ws = pg.full and tile_cols == 1
    cdef Py_ssize_t gsize, wsize
    gsize, wsize = _sizes(prog, tile_cols)
    cdef Py_ssize_t g_off = 2 * pg.n_slots * pg.maxsize
    cdef real[:, ::1] gbuf = np.empty((n_jobs, gsize), dtype=dtype)
    cdef real[:, ::1] wbuf = np.empty((n_jobs, wsize), dtype=dtype)
    cdef int[:, ::1] ibuf = np.empty((n_jobs, max(1, pg.idx_size)), dtype=np.intc)
    # per-thread series table pointers (set per pair)
    stab_buf = bytearray(n_jobs * sizeof(ncv_stab))
    cdef ncv_stab *stabs = <ncv_stab *> (<char *> stab_buf)
    cdef ncv_stab *stp
    cdef bint series = _has_series(iops)
    cdef const real *cxp = NULL
    cdef const real *czp = NULL
    cdef const int16_t *kxp = NULL
    cdef const int16_t *kzp = NULL
    cdef Py_ssize_t lc = 0, lk = 0
    if series:
        if Cx is None or Cz is None or KTx is None or KTz is None or \
                Cx.shape[0] != X.shape[0] or Cz.shape[0] != Z.shape[0] or \
                KTx.shape[0] != X.shape[0] or KTz.shape[0] != Z.shape[0] or \
                Cx.shape[1] != Cz.shape[1] or KTx.shape[1] != KTz.shape[1]:
            raise ValueError("run_pairs: series tables missing or of the wrong size")
        cxp = &Cx[0, 0]
        czp = &Cz[0, 0]
        kxp = &KTx[0, 0]
        kzp = &KTz[0, 0]
        lc = Cx.shape[1]
        lk = KTx.shape[1]
    cdef Py_ssize_t n_items = items.shape[0]
    cdef Py_ssize_t lq = Qx.shape[1]
    cdef Py_ssize_t row = P * C
    cdef int tid, bj
    cdef double nf
    cdef bint use_mask = mask is not None
    cdef const int8_t *mp = NULL
    cdef Py_ssize_t ncol = out_s.shape[1]
    cdef Py_ssize_t i, j, j0, j1, it
    cdef real *g
    cdef real *ws
    cdef int *iws
    cdef real *ot
    # same-position mode reads the inputs channels first (C x P per row)
    cdef const real[:, ::1] Xr = X if pg.full else _channels_first(X, P, C)
    cdef const real[:, ::1] Zr = Z if pg.full else (
        Xr if &Z[0, 0] == &X[0, 0] and Z.shape[0] == X.shape[0]
        else _channels_first(Z, P, C))
    cdef const real *xp = &Xr[0, 0]
    cdef const real *zp = &Zr[0, 0]
    cdef const real *qxp = &Qx[0, 0]
    cdef const real *qzp = &Qz[0, 0]
    # float64 in full mode: the inverse roots 1/sqrt(q) of the tapes (0 where q = 0), once per
    # image, for the activations' division-free angle; not where a variance is so
    # small (< 2^-1000) that rx rz could overflow (the atan2 then)
    cdef const real *rxp = NULL
    cdef const real *rzp = NULL
    cdef real[:, ::1] Rx, Rz
    if real is double:
        if FAST_ANGLE and pg.full and Qx.shape[1] > 0 and Qx.shape[0] > 0 and \
                Qz.shape[0] > 0:
            qxa, qza = np.asarray(Qx), np.asarray(Qz)
            if not (((qxa > 0) & (qxa < 2.0 ** -1000)).any() or
                    ((qza > 0) & (qza < 2.0 ** -1000)).any()):
                Rx = _inverse_roots(qxa)
                Rz = Rx if qzp == qxp and Qz.shape[0] == Qx.shape[0] else \
                    _inverse_roots(qza)
                rxp = &Rx[0, 0]
                rzp = &Rz[0, 0]
    if use_mask:
        if mask.shape[0] != out_s.shape[0] or mask.shape[1] != out_s.shape[1]:
            raise ValueError("run_pairs: mask of the wrong shape")
        mp = &mask[0, 0]
    if flags.shape[0] != out_s.shape[0] or flags.shape[1] != out_s.shape[1]:
        raise ValueError("run_pairs: flags of the wrong shape")
    for it in range(n_items):
        if items[it, 0] < 0 or items[it, 0] >= X.shape[0] or items[it, 1] < 0 or \
                items[it, 2] > Z.shape[0] or items[it, 2] - items[it, 1] > tile_cols:
            raise ValueError("run_pairs: work item out of range")

    with nogil, parallel(num_threads=n_jobs):
        tid = threadid()
        ws = &wbuf[tid, 0]
        g = ws + g_off if g_in_ws else &gbuf[tid, 0]
        iws = &ibuf[tid, 0]
        stp = stabs + tid
        stp.save = NULL
        for it in prange(n_items, schedule="dynamic"):
            i = items[it, 0]
            j0 = items[it, 1]
            j1 = items[it, 2]
            bj = <int> (j1 - j0)
            if bj <= 0:
                continue
            if pg.full:
                _gemm(g, bj * P, xp + i * row, zp + j0 * row, P, bj * P, C)
            for j in range(j0, j1):
                if use_mask and mp[i * ncol + j] == 0:
                    continue
                ot = &out_t[i, j] if want_ntk else NULL
                if series:
                    stp.cx = cxp + i * lc
                    stp.cz = czp + j * lc
                    stp.kx = kxp + i * lk
                    stp.kz = kzp + j * lk
                nf = _pair(&pg, g + (j - j0) * P, bj * P, xp + i * row, zp + j * row,
                           qxp + i * lq, qzp + j * lq,
                           rxp + i * lq if rxp != NULL else NULL,
                           rzp + j * lq if rxp != NULL else NULL,
                           ws, iws, &out_s[i, j], ot, stp if series else NULL)
                flags[i, j] = nf


def run_self(const int64_t[:, ::1] iops, const double[:, ::1] fops, dict prog,
             const double[:, ::1] X, double[:, ::1] Q, double[::1] out_s,
             double[::1] out_t, double[::1] est, bint want_ntk, int n_jobs, int est_mode,
             const double[:, ::1] Cs=None, const int16_t[:, ::1] KTs=None,
             double[:, ::1] save=None):
    """The self pass in float64: per row x_i of X (n, P C), the whole network on the
    pair (x_i, x_i), g = x_i x_i^T by one GEMM in full mode; writes the variance tape
    Q[i] (q(p) = Σ(x, x)[p, p] before every activation, packed), Σ(x_i, x_i) into
    out_s[i], Θ(x_i, x_i) (if wanted) into out_t[i], and est[i]: what ncv_pair returns
    in ``est_mode`` (2 with Θ: the estimated relative Θ error of its float64 angles at
    pixel pairs p != p').  Same-position pixel pairs take the activations' diagonal
    rule (θ = 0 exactly).  Cs, KTs: the series activations' tables of the rows; ``save``
    (n, 2 maxsize): per row the state a staged series program stores / loads
    (ntk_conv_series.h)."""
    ops_buf = _ops(iops, fops)
    cdef ncv_prog pg
    _prog(&pg, ops_buf, iops.shape[0], prog, want_ntk, est_mode)
    cdef int P = pg.H * pg.W, C = pg.C
    cdef Py_ssize_t n = X.shape[0]
    if X.shape[1] != P * C or Q.shape[0] != n or out_s.shape[0] != n or \
            est.shape[0] != n or (want_ntk and out_t.shape[0] != n):
        raise ValueError("run_self: arrays of the wrong size")
    if n == 0:
        return
    cdef Py_ssize_t gsize, wsize
    gsize, wsize = _sizes(prog, 1)  # the GEMM block x x^T in the workspace
    cdef Py_ssize_t g_off = 2 * pg.n_slots * pg.maxsize
    cdef double[:, ::1] gbuf = np.empty((n_jobs, gsize))
    cdef double[:, ::1] wbuf = np.empty((n_jobs, wsize))
    cdef int[:, ::1] ibuf = np.empty((n_jobs, max(1, pg.idx_size)), dtype=np.intc)
    cdef Py_ssize_t row = P * C, i
    cdef int tid
    cdef double *g
    cdef double *ws
    cdef int *iws
    cdef double *ot
    cdef const double[:, ::1] Xr = X if pg.full else _channels_first(X, P, C)
    cdef const double *xp = &Xr[0, 0]
    stab_buf = bytearray(n_jobs * sizeof(ncv_stab))
    cdef ncv_stab *stabs = <ncv_stab *> (<char *> stab_buf)
    cdef ncv_stab *stp
    cdef bint series = _has_series(iops)
    cdef const double *cp = NULL
    cdef const int16_t *kp = NULL
    cdef double *svp = NULL
    cdef Py_ssize_t lc = 0, lk = 0, ls = 0
    if series:
        if Cs is None or KTs is None or Cs.shape[0] != n or KTs.shape[0] != n:
            raise ValueError("run_self: series tables missing or of the wrong size")
        cp = &Cs[0, 0]
        kp = &KTs[0, 0]
        lc = Cs.shape[1]
        lk = KTs.shape[1]
        if save is not None:
            if save.shape[0] != n or save.shape[1] < 2 * pg.maxsize:
                raise ValueError("run_self: save buffer of the wrong size")
            svp = &save[0, 0]
            ls = save.shape[1]
    with nogil, parallel(num_threads=n_jobs):
        tid = threadid()
        ws = &wbuf[tid, 0]
        g = ws + g_off if pg.full else &gbuf[tid, 0]
        iws = &ibuf[tid, 0]
        stp = stabs + tid
        for i in prange(n, schedule="dynamic"):
            if pg.full:
                _gemm(g, P, xp + i * row, xp + i * row, P, P, C)
            ot = &out_t[i] if want_ntk else NULL
            if series:
                stp.cx = cp + i * lc
                stp.cz = cp + i * lc
                stp.kx = kp + i * lk
                stp.kz = kp + i * lk
                stp.save = svp + i * ls if svp != NULL else NULL
            est[i] = ncv_pair_f64(&pg, g, P, xp + i * row, xp + i * row, NULL, NULL,
                                  NULL, NULL, &Q[i, 0], ws, iws, &out_s[i], ot,
                                  stp if series else NULL)
