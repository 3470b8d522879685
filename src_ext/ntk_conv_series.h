/*
 * Series activations (Tanh, Softplus, Sigmoid, SiLU, Custom: phi without a closed
 * form) in the compiled network engine: the Hermite (Mehler) series of
 * ntkfast/series.py with per-pixel coefficient tables, one activation layer of one
 * pair of images at a time (NCV_ACT_SERIES; the tables are built in Python by
 * ntkfast/backends/conv_series.py).
 *
 * With rho = Sigma / sqrt(qx qz) and the normalised coefficients b_k(q) =
 * E[phi(sqrt(q) g) He_k(g)] / sqrt(k!) of phi (and b'_k of phi'),
 *     E[phi(u) phi(v)]   = b_0 b_0 + f(rho),   f(rho) = sum_{k>=1} a_k(qx) a_k(qz) rho^k,
 *     E[phi'(u) phi'(v)] = f'(rho) / sqrt(qx qz)            (Stein: a_k = b_k),
 * one series for both maps (SeriesCoeffs.chain: a_k = sqrt(q) b'_{k-1} / sqrt(k)), per
 * pixel pair (p, p') with the per-pair weights a_k(p) a_k(p'): f = rho O(rho^2) +
 * rho^2 V(rho^2) by parity, the parity with the longer run of non-zero terms in the
 * major lane, the other in the minor lane (up to j2), each by Horner in rho^4 over its
 * even and its odd entries (two independent chains: the latency of a step hidden)
 * together with its derivative: three operations per term for both maps, where
 * separate series of E and Edot take four.  Terms: per block of
 * NCV_SB pixel pairs (one 64-byte vector), the most any of them needs by the
 * certificate of series._k_table (per pixel and |rho| bin, the least K with
 * |rho|^{K+1} sqrt(T_K(qx) T_K(qz)) <= 1e-13 sqrt(e(qx) e(qz)), T_K the tail energy),
 * read at the block's largest |rho|: more terms only lower the bound.  A pixel pair no
 * K <= the table's can certify makes the layer return INFINITY (the program stops
 * there): the caller recomputes the image pair with longer tables (conv_series.py's
 * tiers) or, past the last, with the reference engine (compiled_network.py's _precise
 * route).  Pixel pairs with
 * Sigma = qx = qz to 1e-12 (an image with itself, duplicate windows) take the diagonal
 * to first order, E = e(qx) - (qx - Sigma) e'(qx), Edot = e'(qx) (e = E[phi^2],
 * e' = E[phi'^2]): series.evaluate's rule; on the self pass's diagonal (Sigma = q
 * exactly) that is the 1-D diagonal rule E = e(q), Edot = e'(q).
 *
 * Table layout per image (one row, REAL), per layer at op->coff, P pixels padded to
 * Pp = op->spl (an odd number of 64-byte lines: the entries of one pixel in distinct
 * L1 sets, conv_series.entry_stride), J = op->sk / 2 + 1 chain entries, J2 =
 * op->sj2 + 1 (0: no minor lane), op->spe the major lane's parity (1: a_{2j+1},
 * 0: a_{2j+2}):
 *     major lane [J][Pp], minor lane [J2][Pp], b_0 [Pp], b'_0 [Pp], e [Pp], e' [Pp];
 * and per layer at op->koff of an int16 row: the K table [op->snb][P].
 *
 * Self pass in stages (the coefficients of a layer need its variances, which the
 * self pass computes): op->smode bit 1: record the variances on the tape, store the
 * slot's Sigma (and Theta) into st->save and stop (the program ends with this op);
 * bit 2: load them back first (a program that starts with this op).
 */
#ifndef NCV_SERIES_TYPES
#define NCV_SERIES_TYPES

#include <stdint.h>

/* the per-pair (or per-image) pointers of the series activations */
typedef struct {
    const void *cx, *cz;        /* REAL coefficient tables of x and z (one row each) */
    const int16_t *kx, *kz;       /* K tables of x and z */
    void *save;                 /* self pass stages: Sigma then Theta (REAL) */
} ncv_stab;

#define NCV_SERIES_LANES 64     /* pixel pairs evaluated together */
#define NCV_SERIES_SAVE 1
#define NCV_SERIES_LOAD 2

#endif /* NCV_SERIES_TYPES */

/* Lanes of one block (SIMD width: 64 bytes of REAL, one AVX-512 vector).  Each block
 * of pixel pairs takes the terms its own largest |rho| needs, so a few pixel pairs at
 * large |rho| cost terms in their block only. */
#define NCV_SB ((int)(64 / sizeof(REAL)))

/* c(t) = sum_{jj <= top} c_jj t^jj at t = rr (rho^2) for m <= NCV_SB pixel pairs
 * (j < m), c_jj = x[jj pl + j xs] z[jj pl + j], and (want_d) its t-derivative: Horner
 * in u = r4 = t^2 over the even and the odd entries separately (two independent
 * chains, so that the latency of one step is hidden), each with its derivative:
 * c = ce(u) + t co(u), dc/dt = 2t ce'(u) + co(u) + 2u co'(u).  The accumulators are
 * per-block locals (registers). */
NTK_INLINE void NCV(ncv_series_chain)(int m, int top, long pl, int want_d,
                                      const REAL *restrict x, int xs,
                                      const REAL *restrict z, const REAL *restrict rr,
                                      const REAL *restrict r4, REAL *restrict outC,
                                      REAL *restrict outD)
{
    REAL ae[NCV_SB], ao[NCV_SB], de[NCV_SB], dd[NCV_SB];
    int jj = top;
#pragma omp simd
    for (int j = 0; j < m; j++)
        ae[j] = ao[j] = de[j] = dd[j] = 0;
    if (top >= 0 && !(top & 1)) {  /* the even top entry starts the even chain */
        const long o = (long)top * pl;
#pragma omp simd
        for (int j = 0; j < m; j++)
            ae[j] = x[o + j * xs] * z[o + j];
        jj = top - 1;
    }
    for (; jj > 0; jj -= 2) {  /* odd jj, even jj - 1 */
        const long o = (long)jj * pl, e = o - pl;
        if (want_d) {
#pragma omp simd
            for (int j = 0; j < m; j++) {
                dd[j] = dd[j] * r4[j] + ao[j];
                ao[j] = ao[j] * r4[j] + x[o + j * xs] * z[o + j];
                de[j] = de[j] * r4[j] + ae[j];
                ae[j] = ae[j] * r4[j] + x[e + j * xs] * z[e + j];
            }
        } else {
#pragma omp simd
            for (int j = 0; j < m; j++) {
                ao[j] = ao[j] * r4[j] + x[o + j * xs] * z[o + j];
                ae[j] = ae[j] * r4[j] + x[e + j * xs] * z[e + j];
            }
        }
    }
#pragma omp simd
    for (int j = 0; j < m; j++) {
        outC[j] = ae[j] + rr[j] * ao[j];
        outD[j] = 2 * rr[j] * de[j] + ao[j] + 2 * r4[j] * dd[j];
    }
}

/* The chains of m <= NCV_SB pixel pairs (x entries x0[j xs], z entries z0[j]): the
 * major lane from entry top down into l0 (its t-derivative l1, when want_d), the
 * minor lane (J entries further) from top2 (< 0: none) down into l2, l3. */
NTK_INLINE void NCV(ncv_series_horner)(int m, int top, int top2, int J, long pl,
                                       int want_d, const REAL *restrict x0, int xs,
                                       const REAL *restrict z0, const REAL *restrict r2,
                                       REAL *restrict l0, REAL *restrict l1,
                                       REAL *restrict l2, REAL *restrict l3)
{
    REAL rr[NCV_SB], r4[NCV_SB];
#pragma omp simd
    for (int j = 0; j < m; j++) {
        rr[j] = r2[j];
        r4[j] = rr[j] * rr[j];
    }
    NCV(ncv_series_chain)(m, top, pl, want_d, x0, xs, z0, rr, r4, l0, l1);
    const long o2 = (long)J * pl;
    NCV(ncv_series_chain)(m, top2, pl, want_d, x0 + o2, xs, z0 + o2, rr, r4, l2, l3);
}

/* The terms m <= NCV_SB lanes need together: their K-table entries (x's at kx[j xs],
 * z's at kz[j], bins P apart) in the bin of their largest |rho| (ar: |rho|, 0 for
 * lanes that take the diagonal rule). */
NTK_INLINE int NCV(ncv_series_kblock)(int m, const REAL *restrict ar, int nb,
                                      const int16_t *restrict kx, int xs,
                                      const int16_t *restrict kz, long P)
{
    REAL amax = 0;
    for (int j = 0; j < m; j++)
        amax = ar[j] > amax ? ar[j] : amax;
    int bin = (int)(amax * (REAL)nb);
    bin = bin < nb ? bin : nb - 1;
    const int16_t *restrict kxb = kx + (long)bin * P, *restrict kzb = kz + (long)bin * P;
    int kmax = 0;
    for (int j = 0; j < m; j++) {
        const int ka = kxb[j * xs], kb = kzb[j];
        const int k = ka > kb ? ka : kb;
        kmax = k > kmax ? k : kmax;
    }
    return kmax;
}

/* n pixel pairs: x pixels px0 + j xs, z pixels pz0 + j (j < n <= NCV_SERIES_LANES), S
 * and T (NULL: Theta not wanted or zero) in place; qx, qz the layer's variances
 * (x's at px0 with stride xs, z's at pz0); returns the uncertified pixel pairs.
 * Terms per block of NCV_SB lanes: those the block's largest |rho| needs (K tables are
 * nondecreasing in |rho|), unless that is more than the table holds: then each lane's
 * own (the block's largest certified one), lanes needing more flagged. */
NTK_INLINE int NCV(ncv_series_lanes)(const ncv_op *op, int n, REAL *restrict S,
                                     REAL *restrict T, const REAL *restrict qx, int xs,
                                     const REAL *restrict qz, long px0, long pz0,
                                     const REAL *restrict cx, const REAL *restrict cz,
                                     const int16_t *restrict kx, const int16_t *restrict kz,
                                     long P)
{
    REAL rho[NCV_SERIES_LANES], r2[NCV_SERIES_LANES], ar[NCV_SERIES_LANES];
    REAL rq[NCV_SERIES_LANES];  /* sqrt(qx qz), 0 where a variance is 0 */
    REAL l0[NCV_SERIES_LANES], l1[NCV_SERIES_LANES], l2[NCV_SERIES_LANES],
        l3[NCV_SERIES_LANES];
    int kk[NCV_SERIES_LANES];
    const int nb = op->snb, kall = op->sk, J = op->sk / 2 + 1, J2 = op->sj2 + 1;
    const int pe = op->spe;
    const REAL tiny = (REAL)1e-12;
#pragma omp simd
    for (int j = 0; j < n; j++) {
        const REAL s = S[j], a = qx[j * xs], b = qz[j], qq = a * b;
        const REAL root = qq > 0 ? RSQRT(qq) : (REAL)0;
        REAL r = qq > 0 ? s / root : (REAL)0;
        rq[j] = root;
        r = r > 1 ? (REAL)1 : (r < -1 ? (REAL)-1 : r);
        /* (q = 0 too: E = e(0) = phi(0)^2, Edot = phi'(0)^2) */
        const int dg = a - s <= tiny * a && RFABS(a - b) <= tiny * a;
        kk[j] = dg ? -1 : 0;
        ar[j] = dg ? (REAL)0 : RFABS(r);
        rho[j] = r;
        r2[j] = r * r;
    }
    const long pl = op->spl;
    const REAL *restrict x0 = cx + op->coff + px0, *restrict z0 = cz + op->coff + pz0;
    int bad = 0;
    for (int b0 = 0; b0 < n; b0 += NCV_SB) {
        const int m = n - b0 < NCV_SB ? n - b0 : NCV_SB;
        const int16_t *kxb = kx + px0 + (long)b0 * xs, *kzb = kz + pz0 + b0;
        int kmax = m == NCV_SB
                       ? NCV(ncv_series_kblock)(NCV_SB, ar + b0, nb, kxb, xs, kzb, P)
                       : NCV(ncv_series_kblock)(m, ar + b0, nb, kxb, xs, kzb, P);
        if (kmax > kall) {  /* some lane needs more than the table: each lane's own */
            kmax = 0;
            for (int j = b0; j < b0 + m; j++) {
                if (kk[j] < 0)
                    continue;
                int b = (int)(RFABS(rho[j]) * (REAL)nb);
                b = b < nb ? b : nb - 1;
                const int ka = kx[(long)b * P + px0 + (long)j * xs];
                const int kb = kz[(long)b * P + pz0 + j];
                const int k = ka > kb ? ka : kb;
                if (k > kall) {
                    kk[j] = -2;
                    bad++;
                } else {
                    kmax = k > kmax ? k : kmax;
                }
            }
        }
        /* f to rho^{K+1} (f' then has Edot's K terms): the odd chain (a_{2jj+1})
         * to jj = K / 2, the even one (a_{2jj+2}) to (K - 1) / 2; the minor lane
         * stops at its last entry */
        const int todd = kmax / 2, teven = kmax > 0 ? (kmax - 1) / 2 : -1;
        const int top = pe ? todd : teven, t2 = pe ? teven : todd;
        const int top2 = t2 < J2 - 1 ? t2 : J2 - 1;
        const REAL *xb0 = x0 + (long)b0 * xs, *zb0 = z0 + b0;
        if (m == NCV_SB)
            NCV(ncv_series_horner)(NCV_SB, top, top2, J, pl, T != NULL, xb0, xs, zb0,
                                   r2 + b0, l0 + b0, l1 + b0, l2 + b0, l3 + b0);
        else
            NCV(ncv_series_horner)(m, top, top2, J, pl, T != NULL, xb0, xs, zb0,
                                   r2 + b0, l0 + b0, l1 + b0, l2 + b0, l3 + b0);
    }
    const long tail = (long)(J + J2) * pl;
    const REAL *restrict c0x = x0 + tail, *restrict c0z = z0 + tail;
    const REAL *restrict d0x = c0x + pl, *restrict d0z = c0z + pl;
    const REAL *restrict ex = d0x + pl, *restrict edx = ex + pl;
#pragma omp simd
    for (int j = 0; j < n; j++) {
        const REAL r = rho[j], rr = r2[j];
        const REAL e = c0x[j * xs] * c0z[j] + (pe ? r * l0[j] + rr * l2[j]
                                                   : rr * l0[j] + r * l2[j]);
        const int k = kk[j];
        const REAL dE = ex[j * xs] - (qx[j * xs] - S[j]) * edx[j * xs];
        S[j] = k == -1 ? dE : (k == -2 ? (REAL)0 : e);
    }
    if (T) {
#pragma omp simd
        for (int j = 0; j < n; j++) {
            const REAL r = rho[j], rr = r2[j];
            /* f'(rho), A = l0, B = l2 the chains at t = rho^2, l1, l3 their derivatives */
            const REAL D = pe ? l0[j] + 2 * rr * l1[j] + 2 * r * (l2[j] + rr * l3[j])
                              : 2 * r * (l0[j] + rr * l1[j]) + l2[j] + 2 * rr * l3[j];
            /* q = 0 on a side: f = 0 there, and Edot = b'_0 b'_0 */
            const REAL ed = rq[j] > 0 ? D / rq[j] : d0x[j * xs] * d0z[j];
            const int k = kk[j];
            T[j] *= k == -1 ? edx[j * xs] : (k == -2 ? (REAL)0 : ed);
        }
    }
    return bad;
}

/* One series activation layer of the pair (x, z) (self pass: qself != NULL, x = z):
 * S, T the slot's arrays, *tz its Theta-is-zero flag.  Returns INFINITY when a pixel
 * pair could not be certified (the caller recomputes the pair), else 0.  Full mode,
 * self pass: evaluates the planes h <= h' only (the caller sets the slot's up flag). */
static NCV_CLONES double NCV(ncv_series_layer)(const ncv_prog *pg, const ncv_op *op, REAL *S, REAL *T,
                                               int *tz, const REAL *qx, const REAL *qz, REAL *qself,
                                    const ncv_stab *st)
{
    const int hi = op->hi, wi = op->wi, full = pg->full;
    const long P = (long)hi * wi;
    const long n_in = full ? P * P : P;
    REAL *sv = st ? (REAL *)st->save : NULL;
    if ((op->smode & NCV_SERIES_LOAD) && sv) {
        memcpy(S, sv, sizeof(REAL) * n_in);
        if (pg->want_ntk)
            memcpy(T, sv + n_in, sizeof(REAL) * n_in);
        *tz = !pg->want_ntk;
    }
    if (qself) {
        for (long p = 0; p < P; p++) {
            const long h = p / wi, w = p % wi;
            qself[op->qoff + p] = full ? S[((h * hi + h) * wi + w) * wi + w] : S[p];
        }
        if (op->smode & NCV_SERIES_SAVE) {
            if (sv) {
                memcpy(sv, S, sizeof(REAL) * n_in);
                if (pg->want_ntk)
                    memcpy(sv + n_in, T, sizeof(REAL) * n_in);
            }
            return 0.0;
        }
    }
    REAL *Tp = (pg->want_ntk && !*tz) ? T : NULL;
    const REAL *cx = (const REAL *)st->cx, *cz = (const REAL *)st->cz;
    const int16_t *kx = st->kx + op->koff, *kz = st->kz + op->koff;
    const REAL *qxl = qx + op->qoff, *qzl = qz + op->qoff;
    long bad = 0;
    if (full) {
        /* the self pass (x = z, a symmetric state): the planes h <= h' only, the
         * caller marks the others stale (ncv_complete mirrors them when read) */
        for (int h = 0; h < hi; h++)
            for (int h2 = qself ? h : 0; h2 < hi; h2++)
                for (int w = 0; w < wi; w++) {
                    const long off = (((long)h * hi + h2) * wi + w) * wi;
                    for (int j0 = 0; j0 < wi; j0 += NCV_SERIES_LANES) {
                        const int n = wi - j0 < NCV_SERIES_LANES ? wi - j0 : NCV_SERIES_LANES;
                        bad += NCV(ncv_series_lanes)(
                            op, n, S + off + j0, Tp ? Tp + off + j0 : NULL,
                            qxl + h * wi + w, 0, qzl + h2 * wi + j0, (long)h * wi + w,
                            (long)h2 * wi + j0, cx, cz, kx, kz, P);
                    }
                }
    } else {
        for (long j0 = 0; j0 < P; j0 += NCV_SERIES_LANES) {
            const int n = P - j0 < NCV_SERIES_LANES ? (int)(P - j0) : NCV_SERIES_LANES;
            bad += NCV(ncv_series_lanes)(op, n, S + j0, Tp ? Tp + j0 : NULL, qxl + j0, 1,
                                         qzl + j0, j0, j0, cx, cz, kx, kz, P);
        }
    }
    return bad ? INFINITY : 0.0;
}
