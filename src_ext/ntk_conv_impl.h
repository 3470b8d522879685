/*
 * Type-generic body of ntk_conv.h, included once per REAL (double, float);
 * names suffixed by NCV(): ncv_pair_f64, ncv_pair_f32.
 */

/* Source index of window offset a for output i along one axis (lax's padding:
 * SAME / VALID zeros, CIRCULAR wrap), idx[a * n_out + i] (-1: a padded zero), and
 * the range [rlo[a], rhi[a]) of outputs with a valid source (an interval). */
static inline void NCV(ncv_map)(int n_in, int n_out, int k, int s, int lo, int circ,
                                int *idx, int *rlo, int *rhi)
{
    for (int a = 0; a < k; a++) {
        int first = n_out, last = -1;
        for (int i = 0; i < n_out; i++) {
            int src = s * i + a - lo;
            if (circ) {
                src %= n_in;
                if (src < 0)
                    src += n_in;
            } else if (src < 0 || src >= n_in) {
                src = -1;
            }
            idx[a * n_out + i] = src;
            if (src >= 0) {
                if (i < first)
                    first = i;
                last = i;
            }
        }
        rlo[a] = first;
        rhi[a] = last + 1 > first ? last + 1 : first;
    }
}

/* The index maps of a window op (Conv, AvgPool) along h and w in the index scratch
 * iws: ih (kh x ho), rlh, rhh, then iw (kw x wo), rlw, rhw (ncv_map's layout). */
typedef struct {
    int *ih, *rlh, *rhh, *iw, *rlw, *rhw;
} NCV(ncv_maps);

static inline NCV(ncv_maps) NCV(ncv_window_maps)(const ncv_op *op, int *iws)
{
    NCV(ncv_maps) m;
    m.ih = iws;
    m.rlh = m.ih + op->kh * op->ho;
    m.rhh = m.rlh + op->kh;
    m.iw = m.rhh + op->kh;
    m.rlw = m.iw + op->kw * op->wo;
    m.rhw = m.rlw + op->kw;
    NCV(ncv_map)(op->hi, op->ho, op->kh, op->sh, op->lo_h, op->circ, m.ih, m.rlh, m.rhh);
    NCV(ncv_map)(op->wi, op->wo, op->kw, op->sw, op->lo_w, op->circ, m.iw, m.rlw, m.rhw);
    return m;
}

/* dst = src for the first window offset (*started 0), dst += src after: n elements. */
NTK_INLINE void NCV(ncv_add_plane)(REAL *restrict dst, const REAL *restrict src, long n,
                                   int *started)
{
    if (!*started) {
        memcpy(dst, src, sizeof(REAL) * n);
        *started = 1;
        return;
    }
#pragma omp simd
    for (long r = 0; r < n; r++)
        dst[r] += src[r];
}

/* out[j] = src[0][j] + src[1][j] + ... (m sources, added in order) for j in [j0, j1):
 * one pass, the partial sums in registers (m = 0: zeros).  The same sums, in the same
 * order, as memcpy + ncv_add_plane per source, without storing and reloading them. */
NTK_INLINE void NCV(ncv_sumk)(REAL *restrict out, const REAL *const *src, int m, long j0,
                              long j1)
{
    if (j1 <= j0)
        return;
    if (m == 0) {
        memset(out + j0, 0, sizeof(REAL) * (j1 - j0));
    } else if (m == 1) {
        memcpy(out + j0, src[0] + j0, sizeof(REAL) * (j1 - j0));
    } else if (m == 2) {
        const REAL *restrict a = src[0], *restrict b = src[1];
#pragma omp simd
        for (long j = j0; j < j1; j++)
            out[j] = a[j] + b[j];
    } else {
        const REAL *restrict a = src[0], *restrict b = src[1], *restrict c = src[2];
#pragma omp simd
        for (long j = j0; j < j1; j++)
            out[j] = (a[j] + b[j]) + c[j];
        for (int t = 3; t < m; t++) {
            const REAL *restrict d = src[t];
#pragma omp simd
            for (long j = j0; j < j1; j++)
                out[j] += d[j];
        }
    }
}

/* One row of a window sum along the last axis from m contiguous source rows:
 * out[j] = sum_t rs[t][j] over the t with j in [jlo[t], jhi[t]) (in order; 0 if
 * none), j < n_out: the interior where every source is valid by ncv_sumk, the few
 * edge outputs one by one. */
NTK_INLINE void NCV(ncv_rowsum)(REAL *restrict out, int n_out, int m, const REAL *const *rs,
                                const int *jlo, const int *jhi)
{
    int jl = 0, jh = n_out;
    for (int t = 0; t < m; t++) {
        jl = jlo[t] > jl ? jlo[t] : jl;
        jh = jhi[t] < jh ? jhi[t] : jh;
    }
    if (jh < jl)
        jh = jl;
    NCV(ncv_sumk)(out, rs, m, jl, jh);
    for (int j = 0; j < n_out; j++) {
        if (j == jl)
            j = jh;
        if (j >= n_out)
            break;
        REAL acc = 0;
        for (int t = 0; t < m; t++)
            if (j >= jlo[t] && j < jhi[t])
                acc += rs[t][j];
        out[j] = acc;
    }
}

#define NCV_MAXK 16

/* Same-position Conv with stride 1, not circular, k <= NCV_MAXK (one of Sigma, Theta):
 * out[i, j] = sum_a sum_b X[i + a - lo_h, j + b - lo_w] (0 outside the input) for the
 * ho x wo outputs, from a zero-padded copy Pd (hp = ho + kh - 1 rows of
 * wp = wo + kw - 1) so that no output is an edge case: the sum along h is one
 * contiguous pass over ho wp elements, Hs[r] = sum_a Pd[r + a wp] (the k rows in
 * order), then per output row the sum along w, out[i, j] = sum_b Hs[i wp + j + b].
 * The sums of ncv_hrow + ncv_wrow in the same order, the padded zeros added in
 * (x + 0 = x: the same values). */
NTK_INLINE void NCV(ncv_conv_sp)(const ncv_op *op, const REAL *restrict X,
                                 REAL *restrict out, REAL *restrict Pd, REAL *restrict Hs)
{
    const int hi = op->hi, wi = op->wi, ho = op->ho, wo = op->wo;
    const int kh = op->kh, kw = op->kw, lh = op->lo_h, lw = op->lo_w;
    const int hp = ho + kh - 1, wp = wo + kw - 1;
    /* columns [c0, c1) of a padded row hold the input row's [c0 - lw, c1 - lw) */
    const int c0 = lw < 0 ? 0 : lw;
    const int c1 = wi + lw < wp ? wi + lw : wp;
    for (int r = 0; r < hp; r++) {
        REAL *restrict pr = Pd + (long)r * wp;
        const int src = r - lh;
        if (src < 0 || src >= hi || c1 <= c0) {
            memset(pr, 0, sizeof(REAL) * wp);
            continue;
        }
        const REAL *restrict xr = X + (long)src * wi - lw;
        for (int c = 0; c < c0; c++)
            pr[c] = 0;
        memcpy(pr + c0, xr + c0, sizeof(REAL) * (c1 - c0));
        for (int c = c1; c < wp; c++)
            pr[c] = 0;
    }
    const REAL *rs[NCV_MAXK];
    for (int a = 0; a < kh; a++)
        rs[a] = Pd + (long)a * wp;
    NCV(ncv_sumk)(Hs, rs, kh, 0, (long)ho * wp);
    for (int i = 0; i < ho; i++) {
        for (int b = 0; b < kw; b++)
            rs[b] = Hs + (long)i * wp + b;
        NCV(ncv_sumk)(out + (long)i * wo, rs, kw, 0, wo);
    }
}

/* out[o, i, r] = sum_a in[o, idx[a][i], r]: a window sum along one axis
 * (dims (outer, n_in, inner) -> (outer, n_out, inner)). */
NTK_INLINE void NCV(ncv_wsum1)(const REAL *restrict in, REAL *restrict out, long outer,
                               int n_in, int n_out, long inner, int k, const int *idx)
{
    for (long o = 0; o < outer; o++) {
        const REAL *ib = in + o * n_in * inner;
        REAL *ob = out + o * n_out * inner;
        if (inner == 1) {
            for (int i = 0; i < n_out; i++) {
                REAL acc = 0;
                for (int a = 0; a < k; a++) {
                    const int src = idx[a * n_out + i];
                    if (src >= 0)
                        acc += ib[src];
                }
                ob[i] = acc;
            }
            continue;
        }
        for (int i = 0; i < n_out; i++) {
            REAL *restrict dst = ob + i * inner;
            int started = 0;
            for (int a = 0; a < k; a++) {
                const int src = idx[a * n_out + i];
                if (src < 0)
                    continue;
                NCV(ncv_add_plane)(dst, ib + src * inner, inner, &started);
            }
            if (!started)
                memset(dst, 0, sizeof(REAL) * inner);
        }
    }
}

/* One output plane (i, i') of the (h, h') diagonal window sum:
 * out = sum_a in[idx[a][i], idx[a][i']] (planes of `plane` elements). */
NTK_INLINE void NCV(ncv_hplane)(const REAL *restrict in, int n_in, long plane, int n_out,
                                int i, int i2, int k, const int *idx, REAL *restrict out)
{
    if (k <= NCV_MAXK) {
        const REAL *src[NCV_MAXK];
        int m = 0;
        for (int a = 0; a < k; a++) {
            const int s1 = idx[a * n_out + i], s2 = idx[a * n_out + i2];
            if (s1 >= 0 && s2 >= 0)
                src[m++] = in + ((long)s1 * n_in + s2) * plane;
        }
        NCV(ncv_sumk)(out, src, m, 0, plane);
        return;
    }
    int started = 0;
    for (int a = 0; a < k; a++) {
        const int s1 = idx[a * n_out + i], s2 = idx[a * n_out + i2];
        if (s1 < 0 || s2 < 0)
            continue;
        NCV(ncv_add_plane)(out, in + ((long)s1 * n_in + s2) * plane, plane, &started);
    }
    if (!started)
        memset(out, 0, sizeof(REAL) * plane);
}

/* out[o, i, i', r] = sum_a in[o, idx[a][i], idx[a][i'], r]: the window sum along the
 * diagonal of a pair of axes (the same offset on both: a convolution's
 * Phi[s p + a, s p' + a]); (outer, n_in, n_in, inner) -> (outer, n_out, n_out, inner).
 * inner == 1 (the last pair of axes): rows of i' with contiguous sources when the
 * axis is not circular and has stride 1. */
NTK_INLINE void NCV(ncv_wsum2)(const REAL *restrict in, REAL *restrict out, long outer,
                               int n_in, int n_out, long inner, int k, const int *idx,
                               const int *rlo, const int *rhi, int contig, int lo)
{
    const long pin = (long)n_in * n_in * inner, pout = (long)n_out * n_out * inner;
    for (long o = 0; o < outer; o++) {
        const REAL *ib = in + o * pin;
        REAL *ob = out + o * pout;
        if (inner > 1) {
            for (int i = 0; i < n_out; i++)
                for (int i2 = 0; i2 < n_out; i2++)
                    NCV(ncv_hplane)(ib, n_in, inner, n_out, i, i2, k, idx,
                                    ob + ((long)i * n_out + i2) * inner);
            continue;
        }
        for (int i = 0; i < n_out; i++) {
            REAL *restrict row = ob + (long)i * n_out;
            if (contig && k <= NCV_MAXK) {
                const REAL *rs[NCV_MAXK];
                int jlo[NCV_MAXK], jhi[NCV_MAXK], m = 0;
                for (int a = 0; a < k; a++) {
                    const int s1 = idx[a * n_out + i];
                    if (s1 < 0)
                        continue;
                    rs[m] = ib + (long)s1 * n_in + (a - lo);
                    jlo[m] = rlo[a];
                    jhi[m++] = rhi[a];
                }
                NCV(ncv_rowsum)(row, n_out, m, rs, jlo, jhi);
                continue;
            }
            memset(row, 0, sizeof(REAL) * n_out);
            for (int a = 0; a < k; a++) {
                const int s1 = idx[a * n_out + i];
                if (s1 < 0)
                    continue;
                const REAL *restrict rin = ib + (long)s1 * n_in;
                const int j0 = rlo[a], j1 = rhi[a];
                if (contig) {
                    const REAL *restrict rs = rin + (a - lo);
#pragma omp simd
                    for (int j = j0; j < j1; j++)
                        row[j] += rs[j];
                } else {
                    const int *ia = idx + a * n_out;
                    for (int j = j0; j < j1; j++)
                        row[j] += rin[ia[j]];
                }
            }
        }
    }
}

/* Row i of the window sum along h of rows of width w: out = sum_a in[idx[a][i]]
 * (the same order as ncv_wsum1). */
NTK_INLINE void NCV(ncv_hrow)(const REAL *restrict in, int w, int n_out, int i, int k,
                              const int *idx, REAL *restrict out)
{
    if (k <= NCV_MAXK) {
        const REAL *rs[NCV_MAXK];
        int m = 0;
        for (int a = 0; a < k; a++) {
            const int src = idx[a * n_out + i];
            if (src >= 0)
                rs[m++] = in + (long)src * w;
        }
        NCV(ncv_sumk)(out, rs, m, 0, w);
        return;
    }
    int started = 0;
    for (int a = 0; a < k; a++) {
        const int src = idx[a * n_out + i];
        if (src >= 0)
            NCV(ncv_add_plane)(out, in + (long)src * w, w, &started);
    }
    if (!started)
        memset(out, 0, sizeof(REAL) * w);
}

/* One row of the window sum along w: out[j] = sum_a in[idx[a][j]] over the outputs
 * j in [rlo[a], rhi[a]) with a source (an interval; all of them when circular):
 * the order of ncv_wsum1 (0 + a_0 + a_1 + ...), vectorised over j. */
NTK_INLINE void NCV(ncv_wrow)(const REAL *restrict in, REAL *restrict out, int n_out, int k,
                              const int *idx, const int *rlo, const int *rhi, int contig,
                              int lo)
{
    if (contig && k <= NCV_MAXK) {  /* stride 1, not circular: idx[a][j] = j + a - lo */
        const REAL *rs[NCV_MAXK];
        for (int a = 0; a < k; a++)
            rs[a] = in + (a - lo);
        NCV(ncv_rowsum)(out, n_out, k, rs, rlo, rhi);
        return;
    }
    memset(out, 0, sizeof(REAL) * n_out);
    for (int a = 0; a < k; a++) {
        const int j0 = rlo[a], j1 = rhi[a];
        if (contig) {  /* stride 1, not circular: idx[a][j] = j + a - lo */
            const REAL *restrict src = in + (a - lo);
#pragma omp simd
            for (int j = j0; j < j1; j++)
                out[j] += src[j];
        } else {
            const int *restrict ia = idx + a * n_out;
#pragma omp simd
            for (int j = j0; j < j1; j++)
                out[j] += in[ia[j]];
        }
    }
}

/* The activation on one row of n pixel pairs: S <- E[phi phi], T <- T E[phi' phi']
 * (T NULL: Theta identically zero or not wanted).  qx: the row's x variances with
 * stride xs (0: one value, full mode), qz: the z variances.  Returns the number of
 * near-parallel pixel pairs (D < tau q q') for angle-reading activations. */
NTK_INLINE int NCV(ncv_act_row_k)(const ncv_op *op, int n, REAL *restrict S, REAL *restrict T,
                                const REAL *restrict qx, int xs, const REAL *restrict qz,
                                const REAL *restrict rx, const REAL *restrict rz,
                                const int fast, REAL tau, int mode, double *num)
{
    if (op->act == NCV_ACT_ABRELU) {
        const REAL c0 = (REAL)op->pa, f = (REAL)op->pb;
        const REAL pi = (REAL)NCV_PI, half_pi = (REAL)(NCV_PI / 2);
        /* phi = atan2(sn, |s|) in [0, pi/2].  fast (float64, the cross pass): the
         * division-free ntk_angle on the unit circle, (sn, |s|) / sqrt(qx qz) with the
         * inverse roots rx = 1/sqrt(qx), rz = 1/sqrt(qz) of the caller (0 where q = 0:
         * ntk_angle(0, 0) = pi/2); else the inlined atan2 (its division costs as much
         * as the rest of the rule). */
#if NCV_FAST_ANGLE
#define NCV_PHI(sn, s, j)                                               \
            (fast ? NCV_ANGLE((sn) * (rx[(j) * xs] * rz[j]),            \
                              RFABS(s) * (rx[(j) * xs] * rz[j]))        \
                  : NCV_ATAN2((sn), RFABS(s)))
#else
#define NCV_PHI(sn, s, j) NCV_ATAN2((sn), RFABS(s))
        (void)rx; (void)rz; (void)fast;
#endif
        /* the rule at j (s, qq, gap read), writing S[j] and ed */
#define NCV_RELU_BODY                                                   \
            const REAL sn = RSQRT(gap > 0 ? gap : (REAL)0);             \
            const REAL phi = NCV_PHI(sn, s, j);                         \
            REAL th = s < 0 ? pi - phi : phi;                           \
            th = (sn == 0 && s == 0) ? half_pi : th;                    \
            const REAL ed = c0 - f * th;                                \
            S[j] = f * sn + ed * s;
        /* near-parallel: D < tau q q'; est_mode >= 1 leaves out the pixel pairs with
         * Sigma = qx = qz to the bit (computed alike on both sides: theta = 0 right) */
#define NCV_NEAR                                                        \
            ((gap < tau * qq) & !(ex & (s == qx[j * xs]) & (s == qz[j])))
        const int ex = mode > 0;
        if (op->flag && mode == 2) {
            /* the estimate of elementwise.py, k dtheta |Theta| with dtheta =
             * nu / (sin theta + sqrt(nu)) in double, read before the rule overwrites
             * S and T: a pre-pass finds the row's near-parallel pixel pairs */
            REAL nf = 0;
#pragma omp simd reduction(+:nf)
            for (int j = 0; j < n; j++) {
                const REAL s = S[j], qq = qx[j * xs] * qz[j];
                const REAL gap = qq - s * s;
                nf += NCV_NEAR ? (REAL)1 : (REAL)0;
            }
            if (nf > 0 && T) {
                const double nu = NCV_ANGLE_NOISE, rnu = sqrt(NCV_ANGLE_NOISE);
                double acc = 0;
                for (int j = 0; j < n; j++) {
                    const double s = S[j], a = qx[j * xs], b = qz[j], qq = a * b;
                    const double gap = qq - s * s;
                    if (!(gap < (double)tau * qq) || (s == a && s == b))
                        continue;
                    const double sn = sqrt((gap > 0 ? gap : 0.0) / qq);
                    acc += nu / (sn + rnu) * fabs((double)T[j]);
                }
                *num += op->pb * acc;
            }
#pragma omp simd
            for (int j = 0; j < n; j++) {
                const REAL s = S[j], qq = qx[j * xs] * qz[j];
                const REAL gap = qq - s * s;
                NCV_RELU_BODY
                if (T)
                    T[j] *= ed;
            }
            return (int)nf;
        }
        REAL nf = 0;
#pragma omp simd reduction(+:nf)
        for (int j = 0; j < n; j++) {
            const REAL s = S[j], qq = qx[j * xs] * qz[j];
            const REAL gap = qq - s * s;
            nf += NCV_NEAR ? (REAL)1 : (REAL)0;
            NCV_RELU_BODY
            if (T)
                T[j] *= ed;
        }
#undef NCV_RELU_BODY
#undef NCV_NEAR
#undef NCV_PHI
        return op->flag ? (int)nf : 0;
    }
    if (op->act == NCV_ACT_ERF) {
        const REAL a2 = (REAL)op->pa, b2 = (REAL)op->pb, c2 = (REAL)op->pc;
        const REAL ce = a2 * (REAL)(2 / NCV_PI), cd = a2 * b2 * (REAL)(4 / NCV_PI);
#pragma omp simd
        for (int j = 0; j < n; j++) {
            const REAL s = b2 * S[j], x = b2 * qx[j * xs], z = b2 * qz[j];
            const REAL g = x * z - s * s;
            const REAL root = RSQRT(1 + 2 * (x + z) + 4 * (g > 0 ? g : (REAL)0));
            S[j] = ce * NCV_ATAN2(2 * s, root) + c2;
            if (T)
                T[j] *= cd / root;
        }
        return 0;
    }
    /* GELU */
    const REAL i2pi = (REAL)(1 / (2 * NCV_PI));
#pragma omp simd
    for (int j = 0; j < n; j++) {
        const REAL s = S[j], x = qx[j * xs], z = qz[j];
        const REAL pp1 = (x + 1) * (z + 1), prod = x * z;
        const REAL g = prod - s * s;
        const REAL d2 = 1 + x + z + (g > 0 ? g : (REAL)0);
        const REAL d = RSQRT(d2);
        const REAL ang = NCV_ATAN2(s, d);
        S[j] = ((s * s + prod * d2) / (pp1 * d) + s * ang) * i2pi + (REAL)0.25 * s;
        if (T) {
            const REAL first = (1 / d2 + (1 - prod) / pp1 + 1) * s / d * i2pi;
            T[j] *= first + (REAL)0.25 + ang * i2pi;
        }
    }
    return 0;
}

/* ncv_act_row_k with the stride of qx a constant (0: one value, full mode; 1) and T
 * known NULL or not, so the vectorised loops neither gather qx nor mask stores. */
NTK_INLINE int NCV(ncv_act_row_t)(const ncv_op *op, int n, REAL *restrict S,
                                  REAL *restrict T, const REAL *restrict qx, int xs,
                                  const REAL *restrict qz, const REAL *restrict rx,
                                  const REAL *restrict rz, const int fast, REAL tau,
                                  int mode, double *num)
{
    /* T tested here once, so the loops have no conditional (masked) stores */
    if (!T) {
        if (xs == 0)
            return NCV(ncv_act_row_k)(op, n, S, NULL, qx, 0, qz, rx, rz, fast, tau,
                                      mode, num);
        return NCV(ncv_act_row_k)(op, n, S, NULL, qx, 1, qz, rx, rz, fast, tau, mode,
                                  num);
    }
    if (xs == 0)
        return NCV(ncv_act_row_k)(op, n, S, T, qx, 0, qz, rx, rz, fast, tau, mode, num);
    return NCV(ncv_act_row_k)(op, n, S, T, qx, 1, qz, rx, rz, fast, tau, mode, num);
}

/* ncv_act_row_t with the angle's kind a constant too: rx (and rz) NULL, the atan2;
 * else (float64) the division-free angle from the inverse roots rx, rz (stride xs). */
NTK_INLINE int NCV(ncv_act_row)(const ncv_op *op, int n, REAL *restrict S, REAL *restrict T,
                                const REAL *restrict qx, int xs, const REAL *restrict qz,
                                const REAL *restrict rx, const REAL *restrict rz,
                                REAL tau, int mode, double *num)
{
#if NCV_FAST_ANGLE
    if (rx && op->act == NCV_ACT_ABRELU)
        return NCV(ncv_act_row_t)(op, n, S, T, qx, xs, qz, rx, rz, 1, tau, mode, num);
#endif
    return NCV(ncv_act_row_t)(op, n, S, T, qx, xs, qz, NULL, NULL, 0, tau, mode, num);
}

/* The activation's rule on the diagonal (theta = 0 exactly: Sigma = qx = qz = q,
 * D = 0 by construction, not by cancellation), on n same-position pixel pairs in
 * place: S[j] (= q on entry) <- E(q), T[j] <- T[j] Edot(q) (T NULL: not wanted).
 * The activations' diag_rule (kernel_rule(q, q, q)) with gap = 0. */
NTK_INLINE void NCV(ncv_act_diag)(const ncv_op *op, long n, REAL *restrict S,
                                  REAL *restrict T)
{
    if (op->act == NCV_ACT_ABRELU) {
        const REAL c0 = (REAL)op->pa, f = (REAL)op->pb;
        const REAL half_pi = (REAL)(NCV_PI / 2);
        for (long j = 0; j < n; j++) {
            const REAL s = S[j];
            /* theta = 0, or pi/2 by convention where q = 0 (the kernel rule's) */
            const REAL ed = s == 0 ? c0 - f * half_pi : c0;
            S[j] = ed * s;
            if (T)
                T[j] *= ed;
        }
        return;
    }
    if (op->act == NCV_ACT_ERF) {
        const REAL a2 = (REAL)op->pa, b2 = (REAL)op->pb, c2 = (REAL)op->pc;
        const REAL ce = a2 * (REAL)(2 / NCV_PI), cd = a2 * b2 * (REAL)(4 / NCV_PI);
        for (long j = 0; j < n; j++) {
            const REAL x = b2 * S[j];
            const REAL root = RSQRT(1 + 2 * (x + x));
            S[j] = ce * NCV_ATAN2(2 * x, root) + c2;
            if (T)
                T[j] *= cd / root;
        }
        return;
    }
    const REAL i2pi = (REAL)(1 / (2 * NCV_PI));
    for (long j = 0; j < n; j++) {
        const REAL s = S[j];
        const REAL pp1 = (s + 1) * (s + 1), prod = s * s;
        const REAL d2 = 1 + s + s;
        const REAL d = RSQRT(d2);
        const REAL ang = NCV_ATAN2(s, d);
        S[j] = ((s * s + prod * d2) / (pp1 * d) + s * ang) * i2pi + (REAL)0.25 * s;
        if (T) {
            const REAL first = (1 / d2 + (1 - prod) / pp1 + 1) * s / d * i2pi;
            T[j] *= first + (REAL)0.25 + ang * i2pi;
        }
    }
}

NTK_INLINE REAL NCV(ncv_sum)(const REAL *restrict a, long n)
{
    REAL acc = 0;
#pragma omp simd reduction(+:acc)
    for (long j = 0; j < n; j++)
        acc += a[j];
    return acc;
}

/* Sigma' = w2 u + b2 with u = inv U, Theta' per parameterization; V the window sum
 * of Theta (NULL: Theta was zero).  U may be S and V may be T (same index, read
 * before written): no restrict. */
NTK_INLINE void NCV(ncv_affine)(const ncv_op *op, long n, const REAL *U, const REAL *V,
                                REAL *S, REAL *T, REAL inv)
{
    const REAL w2 = (REAL)op->w2, b2 = (REAL)op->b2, cs = (REAL)op->cs, c0 = (REAL)op->c0;
    if (!T) {
#pragma omp simd
        for (long j = 0; j < n; j++)
            S[j] = w2 * (U[j] * inv) + b2;
    } else if (op->standard) {
#pragma omp simd
        for (long j = 0; j < n; j++) {
            const REAL u = U[j] * inv;
            const REAL t = V ? w2 * (V[j] * inv) : (REAL)0;
            S[j] = w2 * u + b2;
            T[j] = cs * u + t + c0;
        }
    } else {
#pragma omp simd
        for (long j = 0; j < n; j++) {
            const REAL s = w2 * (U[j] * inv) + b2;
            S[j] = s;
            T[j] = V ? s + w2 * (V[j] * inv) : s;
        }
    }
}

/* One activation layer's term of the value ncv_pair returns: the count of its
 * near-parallel pixel pairs (est_mode 1: not counting those computed alike), or in
 * est_mode 2 with Theta wanted the estimated relative error of Theta' its float64
 * angles cause, num / sum |Theta'| (num: the near-parallel pixel pairs' k dtheta
 * |Theta|; ntkfast/layers/elementwise.py), 0 when Theta is identically zero here
 * (T NULL).  The caller reruns in est_mode 2 the pairs with a count. */
static inline double NCV(ncv_layer_est)(const ncv_prog *pg, int cnt, double num,
                                        const REAL *T, long n)
{
    if (pg->est_mode != 2 || !pg->want_ntk)
        return (double)cnt;
    if (!T || !(num > 0))
        return 0.0;
    double den = 0;
    for (long j = 0; j < n; j++)
        den += fabs((double)T[j]);
    const double est = num / den;  /* den 0: inf */
    return est == est ? est : INFINITY;
}

/* The self pass's states are symmetric, X[h, h', w, w'] = X[h', h, w', w] (Sigma(x, x),
 * Theta(x, x); every op keeps that, with the same operations in the same order on both
 * elements): the planes h > h' as the transposes of the planes h < h'
 * (X: n x n planes of w x w). */
static inline void NCV(ncv_mirror)(REAL *X, int n, int w)
{
    const long pl = (long)w * w;
    for (int h = 0; h < n; h++)
        for (int h2 = h + 1; h2 < n; h2++) {
            const REAL *restrict src = X + ((long)h * n + h2) * pl;
            REAL *restrict dst = X + ((long)h2 * n + h) * pl;
            for (int a = 0; a < w; a++)
                for (int b = 0; b < w; b++)
                    dst[(long)b * w + a] = src[(long)a * w + b];
        }
}

/* The self pass: slot k's stale planes h > h' from the planes h < h' (n x n planes
 * of w x w), Theta's too where it is not identically zero. */
static inline void NCV(ncv_complete)(int *up, int k, REAL *const *Sb, REAL *const *Tb,
                                     const int *tz, int want_ntk, int n, int w)
{
    if (!up[k])
        return;
    NCV(ncv_mirror)(Sb[k], n, w);
    if (want_ntk && !tz[k])
        NCV(ncv_mirror)(Tb[k], n, w);
    up[k] = 0;
}

#include "ntk_conv_series.h"

/* The whole network for one pair (x, z).  g: the pair's block of the GEMM tile
 * (full mode: g[p * ldg + p'] = x[p].z[p']); x, z: the inputs channels first (C x P,
 * same-position mode; unused in full mode); qx, qz: the packed variance tapes of x and z; rx, rz: their inverse roots
 * 1/sqrt(q) (0 where q = 0), or NULL (the ReLU family's angle then by atan2).  ws: 2 (n_slots + 1) maxsize
 * elements; iws: idx_size ints; st: the series activations' tables (ntk_conv_series.h;
 * NULL without them).  Writes Sigma, Theta (if wanted) and returns the number
 * of near-parallel pixel pairs met by angle-reading activations. */
NCV_CLONES double NCV(ncv_pair)(const ncv_prog *pg, const REAL *g, long ldg,
                             const REAL *x, const REAL *z, const REAL *qx, const REAL *qz,
                             const REAL *rx, const REAL *rz, REAL *qself, REAL *ws,
                             int *iws, REAL *out_s, REAL *out_t, const ncv_stab *st)
{
    const long M = pg->maxsize;
    REAL *A = ws + 2L * pg->n_slots * M, *B = A + M;
    /* four plane buffers of the fused Conv (W x W each) after the spares */
    REAL *P1 = B + M, *P2 = P1 + (long)pg->W * pg->W, *P3 = P2 + (long)pg->W * pg->W;
    REAL *P4 = P3 + (long)pg->W * pg->W;
    /* the padded copy and row sums of the same-position Conv (pg->padsize elements) */
    REAL *PAD = P4 + (long)pg->W * pg->W;
    REAL *Sb[NCV_MAX_SLOTS], *Tb[NCV_MAX_SLOTS];
    int tz[NCV_MAX_SLOTS];
    /* the self pass (full mode): up[k] = slot k holds its planes h <= h' only (the
     * others stale until ncv_mirror: Conv and the activations read and write those
     * planes only, the ops that read the others mirror first) */
    int up[NCV_MAX_SLOTS];
    int H = pg->H, W = pg->W;
    long size = 1;
    double flags = 0;   /* the estimate (or count) returned: see ncv_layer_est */
    const int mode = pg->est_mode;
    const REAL tau = (REAL)pg->tau;
    const int full = pg->full;
    /* the self pass (x = z, g = x x^T): qself receives the variance tape, read back by
     * the activations as qx = qz; same-position pixel pairs by the diagonal rule */
    if (qself) {
        qx = qself;
        qz = qself;
        rx = NULL;
    }
    if (!rx)
        rz = NULL;
    for (int k = 0; k < pg->n_slots; k++) {
        tz[k] = 1;
        up[k] = 0;
        Sb[k] = ws + 2L * k * M;
        Tb[k] = Sb[k] + M;
    }
    for (int t = 0; t < pg->n_ops; t++) {
        const ncv_op *op = pg->ops + t;
        REAL *S = Sb[op->dst], *T = Tb[op->dst];
        const int hi = op->hi, wi = op->wi, ho = op->ho, wo = op->wo;
        const long n_in = full ? (long)hi * hi * wi * wi : (long)hi * wi;
        const long n_out = full ? (long)ho * ho * wo * wo : (long)ho * wo;
        switch (op->kind) {
        case NCV_INPUT: {
            const int C = pg->C;
            const REAL invc = (REAL)1 / (REAL)C;
            if (full) {
                for (int h = 0; h < H; h++)
                    for (int h2 = 0; h2 < H; h2++)
                        for (int w = 0; w < W; w++) {
                            const REAL *restrict gr = g + (long)(h * W + w) * ldg + h2 * W;
                            REAL *restrict sr = S + (((long)h * H + h2) * W + w) * W;
#pragma omp simd
                            for (int w2 = 0; w2 < W; w2++)
                                sr[w2] = gr[w2] * invc;
                        }
            } else {
                /* x, z channels first (C x P): vectorised over the positions, the
                 * channels added in order */
                const long P = (long)H * W;
                {
                    const REAL *restrict xc = x, *restrict zc = z;
#pragma omp simd
                    for (long p = 0; p < P; p++)
                        S[p] = xc[p] * zc[p];
                }
                for (int c = 1; c < C; c++) {
                    const REAL *restrict xc = x + c * P, *restrict zc = z + c * P;
#pragma omp simd
                    for (long p = 0; p < P; p++)
                        S[p] += xc[p] * zc[p];
                }
#pragma omp simd
                for (long p = 0; p < P; p++)
                    S[p] *= invc;
            }
            tz[op->dst] = 1;
            size = n_out;
            break;
        }
        case NCV_AFFINE: {
            REAL *Tp = pg->want_ntk ? T : NULL;
            NCV(ncv_affine)(op, n_in, S, tz[op->dst] ? NULL : T, S, Tp, (REAL)1);
            tz[op->dst] = !pg->want_ntk;
            break;
        }
        case NCV_CONV: {
            const int has_t = pg->want_ntk && !tz[op->dst];
            if (!full && op->sh == 1 && op->sw == 1 && !op->circ && op->kh <= NCV_MAXK &&
                op->kw <= NCV_MAXK) {
                /* same-position pairs, stride 1: from zero-padded copies, no edge
                 * cases (ncv_conv_sp); Sigma's window sums into B, Theta's into A */
                REAL *Pd = PAD, *Hs = PAD + (long)(ho + op->kh - 1) * (wo + op->kw - 1);
                NCV(ncv_conv_sp)(op, S, B, Pd, Hs);
                if (has_t)
                    NCV(ncv_conv_sp)(op, T, A, Pd, Hs);
                NCV(ncv_affine)(op, n_out, B, has_t ? A : NULL, S, pg->want_ntk ? T : NULL,
                                (REAL)op->inv);
                tz[op->dst] = !pg->want_ntk;
                size = n_out;
                break;
            }
            if (full && op->circ)  /* wrapped windows read planes h > h' too */
                NCV(ncv_complete)(up, op->dst, Sb, Tb, tz, pg->want_ntk, hi, wi);
            const NCV(ncv_maps) mp = NCV(ncv_window_maps)(op, iws);
            const int *ih = mp.ih, *iw = mp.iw, *rlw = mp.rlw, *rhw = mp.rhw;
            const int cw = !op->circ && op->sw == 1;
            if (full) {
                /* per output plane (i, i'): the (h, h') sum, the (w, w') sum and the
                 * affine step in L1, then the next op if it is this slot's activation
                 * (fused); written to the spare buffers, which become the slot's */
                const ncv_op *nx = (!qself && t + 1 < pg->n_ops && op[1].kind == NCV_ACT &&
                                    op[1].dst == op->dst && op[1].act != NCV_ACT_SERIES)
                                   ? op + 1 : NULL;
                REAL *So = A, *To = B;
                const long pin = (long)wi * wi, pout = (long)wo * wo;
                double num = 0;
                int cnt = 0;
                /* along the diagonals i2 - i = dd: consecutive output planes share
                 * k - 1 of their k input planes (stride 1), which stay in cache */
                /* (the self pass: the planes i <= i' only, see up) */
                for (int dd = qself ? 0 : 1 - ho; dd < ho; dd++)
                    for (int i = dd < 0 ? -dd : 0; i < (dd > 0 ? ho - dd : ho); i++) {
                        const int i2 = i + dd;
                        const long off = ((long)i * ho + i2) * pout;
                        NCV(ncv_hplane)(S, hi, pin, ho, i, i2, op->kh, ih, P1);
                        NCV(ncv_wsum2)(P1, P2, 1, wi, wo, 1, op->kw, iw, rlw, rhw, cw,
                                       op->lo_w);
                        if (has_t) {
                            NCV(ncv_hplane)(T, hi, pin, ho, i, i2, op->kh, ih, P3);
                            NCV(ncv_wsum2)(P3, P4, 1, wi, wo, 1, op->kw, iw, rlw, rhw, cw,
                                           op->lo_w);
                        }
                        REAL *to = pg->want_ntk ? To + off : NULL;
                        NCV(ncv_affine)(op, pout, P2, has_t ? P4 : NULL, So + off, to,
                                        (REAL)op->inv);
                        if (nx)
                            for (int w = 0; w < wo; w++)
                                cnt += NCV(ncv_act_row)(
                                    nx, wo, So + off + (long)w * wo,
                                    to ? to + (long)w * wo : NULL,
                                    qx + nx->qoff + i * wo + w, 0, qz + nx->qoff + i2 * wo,
                                    rx ? rx + nx->qoff + i * wo + w : NULL,
                                    rx ? rz + nx->qoff + i2 * wo : NULL, tau, mode, &num);
                    }
                if (nx)
                    flags += NCV(ncv_layer_est)(pg, cnt, num, pg->want_ntk ? To : NULL,
                                                n_out);
                /* (the self pass: the planes i > i' stale, see up) */
                if (qself)
                    up[op->dst] = 1;
                Sb[op->dst] = So;
                Tb[op->dst] = To;
                A = S;
                B = T;
                tz[op->dst] = !pg->want_ntk;
                size = n_out;
                if (nx)
                    t++;
                break;
            }
            /* same-position pairs: per output row, the window sum along h of whole
             * input rows (P1, P3), then along w; Sigma's into B, Theta's into A */
            for (int i = 0; i < ho; i++) {
                NCV(ncv_hrow)(S, wi, ho, i, op->kh, ih, P1);
                NCV(ncv_wrow)(P1, B + (long)i * wo, wo, op->kw, iw, rlw, rhw, cw, op->lo_w);
                if (has_t) {
                    NCV(ncv_hrow)(T, wi, ho, i, op->kh, ih, P3);
                    NCV(ncv_wrow)(P3, A + (long)i * wo, wo, op->kw, iw, rlw, rhw, cw, op->lo_w);
                }
            }
            NCV(ncv_affine)(op, n_out, B, has_t ? A : NULL, S, pg->want_ntk ? T : NULL,
                            (REAL)op->inv);
            tz[op->dst] = !pg->want_ntk;
            size = n_out;
            break;
        }
        case NCV_ACT: {
            if (op->act == NCV_ACT_SERIES) {
                /* the series layer reads (and its staged self pass stores) whole
                 * states: complete the self pass's half planes first */
                NCV(ncv_complete)(up, op->dst, Sb, Tb, tz, pg->want_ntk, hi, wi);
                flags += NCV(ncv_series_layer)(pg, op, S, T, &tz[op->dst], qx, qz, qself, st);
                if (isinf(flags)) {
                    /* an uncertified pixel pair: the caller recomputes the pair (a
                     * longer table, or the reference), so the rest is not needed */
                    out_s[0] = 0;
                    if (out_t)
                        out_t[0] = 0;
                    return flags;
                }
                if (qself && full && !(op->smode & NCV_SERIES_SAVE))
                    up[op->dst] = 1;  /* the planes h > h' stale (ncv_series_layer) */
                break;
            }
            REAL *Tp = (pg->want_ntk && !tz[op->dst]) ? T : NULL;
            const REAL *qxl = qx + op->qoff, *qzl = qz + op->qoff;
            const REAL *rxl = rx ? rx + op->qoff : NULL, *rzl = rx ? rz + op->qoff : NULL;
            double num = 0;
            int cnt = 0;
            if (qself && !full) {
                /* every pixel pair is a same-position one */
                memcpy(qself + op->qoff, S, sizeof(REAL) * n_in);
                NCV(ncv_act_diag)(op, n_in, S, Tp);
                break;
            }
            const long pd = (long)hi * wi;
            if (qself) {
                /* q(p) = Sigma(x, x)[p, p]; the diagonal's Sigma and Theta kept aside in
                 * the spare buffers A, B (>= P elements each) for the diagonal rule */
                for (int h = 0; h < hi; h++)
                    for (int w = 0; w < wi; w++) {
                        const long d = (((long)h * hi + h) * wi + w) * wi + w;
                        const long p = (long)h * wi + w;
                        qself[op->qoff + p] = S[d];
                        A[p] = S[d];
                        B[p] = Tp ? Tp[d] : (REAL)0;
                    }
            }
            if (full) {
                /* the self pass: the planes h <= h' (see up), those h < h' counted
                 * twice in the near-parallel count and estimate */
                double num2 = 0;
                int cnt2 = 0;
                for (int h = 0; h < hi; h++)
                    for (int h2 = qself ? h : 0; h2 < hi; h2++) {
                        const int twice = qself && h2 > h;
                        for (int w = 0; w < wi; w++) {
                            const long off = (((long)h * hi + h2) * wi + w) * wi;
                            const int c = NCV(ncv_act_row)(op, wi, S + off,
                                                           Tp ? Tp + off : NULL,
                                                           qxl + h * wi + w, 0, qzl + h2 * wi,
                                                           rxl ? rxl + h * wi + w : NULL,
                                                           rxl ? rzl + h2 * wi : NULL, tau,
                                                           mode, twice ? &num2 : &num);
                            if (twice)
                                cnt2 += c;
                            else
                                cnt += c;
                        }
                    }
                cnt += 2 * cnt2;
                num += 2 * num2;
                if (qself)
                    up[op->dst] = 1;
            } else {
                cnt += NCV(ncv_act_row)(op, (int)n_in, S, Tp, qxl, 1, qzl, rxl, rzl, tau, mode,
                                    &num);
            }
            if (qself) {
                NCV(ncv_act_diag)(op, pd, A, Tp ? B : NULL);
                for (int h = 0; h < hi; h++)
                    for (int w = 0; w < wi; w++) {
                        const long d = (((long)h * hi + h) * wi + w) * wi + w;
                        const long p = (long)h * wi + w;
                        S[d] = A[p];
                        if (Tp)
                            Tp[d] = B[p];
                    }
            }
            /* the estimate's denominator sums |Theta| over all pixel pairs */
            if (num > 0 && up[op->dst])
                NCV(ncv_complete)(up, op->dst, Sb, Tb, tz, pg->want_ntk, hi, wi);
            flags += NCV(ncv_layer_est)(pg, cnt, num, pg->want_ntk ? Tp : NULL, n_in);
            break;
        }
        case NCV_POOL: {
            NCV(ncv_complete)(up, op->dst, Sb, Tb, tz, pg->want_ntk, hi, wi);
            const NCV(ncv_maps) mp = NCV(ncv_window_maps)(op, iws);
            const int *ih = mp.ih, *iw = mp.iw;
            const int has_t = pg->want_ntk && !tz[op->dst];
            for (int pass = 0; pass < (has_t ? 2 : 1); pass++) {
                REAL *X0 = pass ? T : S;
                NCV(ncv_wsum1)(X0, A, 1, hi, ho, (long)hi * wi * wi, op->kh, ih);
                NCV(ncv_wsum1)(A, X0, ho, hi, ho, (long)wi * wi, op->kh, ih);
                NCV(ncv_wsum1)(X0, A, (long)ho * ho, wi, wo, wi, op->kw, iw);
                NCV(ncv_wsum1)(A, X0, (long)ho * ho * wo, wi, wo, 1, op->kw, iw);
                const REAL inv = (REAL)op->inv;
#pragma omp simd
                for (long j = 0; j < n_out; j++)
                    X0[j] *= inv;
            }
            size = n_out;
            break;
        }
        case NCV_GAP: {
            NCV(ncv_complete)(up, op->dst, Sb, Tb, tz, pg->want_ntk, hi, wi);
            const int has_t = pg->want_ntk && !tz[op->dst];
            /* per (h, h') plane, then the planes: short sums */
            const long plane = (long)wi * wi, np = (long)hi * hi;
            for (int pass = 0; pass < (has_t ? 2 : 1); pass++) {
                REAL *X0 = pass ? T : S;
                for (long q = 0; q < np; q++)
                    A[q] = NCV(ncv_sum)(X0 + q * plane, plane);
                X0[0] = NCV(ncv_sum)(A, np) / (REAL)(np * plane);
            }
            size = 1;
            break;
        }
        case NCV_FLATTEN: {
            const int has_t = pg->want_ntk && !tz[op->dst];
            const long P = (long)hi * wi;
            for (int pass = 0; pass < (has_t ? 2 : 1); pass++) {
                REAL *X0 = pass ? T : S;
                REAL acc;
                if (full) {
                    acc = 0;
                    for (int h = 0; h < hi; h++)
                        for (int w = 0; w < wi; w++)
                            acc += X0[(((long)h * hi + h) * wi + w) * wi + w];
                } else {
                    acc = NCV(ncv_sum)(X0, P);
                }
                X0[0] = acc / (REAL)P;
            }
            size = 1;
            break;
        }
        case NCV_LNORM: {
            NCV(ncv_complete)(up, op->dst, Sb, Tb, tz, pg->want_ntk, hi, wi);
            /* the variances before the layer: recorded on the tape (self pass) */
            const REAL eps = (REAL)op->pa;
            REAL *Tp = (pg->want_ntk && !tz[op->dst]) ? T : NULL;
            if (qself) {
                for (int h = 0; h < hi; h++)
                    for (int w = 0; w < wi; w++) {
                        const long p = (long)h * wi + w;
                        qself[op->qoff + p] =
                            full ? S[(((long)h * hi + h) * wi + w) * wi + w] : S[p];
                    }
            }
            const REAL *qxl = qx + op->qoff, *qzl = qz + op->qoff;
            if (full) {
                for (int h = 0; h < hi; h++)
                    for (int h2 = 0; h2 < hi; h2++)
                        for (int w = 0; w < wi; w++) {
                            const long off = (((long)h * hi + h2) * wi + w) * wi;
                            const REAL a = eps + qxl[h * wi + w];
                            const REAL *restrict b = qzl + h2 * wi;
                            REAL *restrict sr = S + off;
#pragma omp simd
                            for (int w2 = 0; w2 < wi; w2++)
                                sr[w2] = sr[w2] / RSQRT(a * (eps + b[w2]));
                            if (Tp) {
                                REAL *restrict tr = Tp + off;
#pragma omp simd
                                for (int w2 = 0; w2 < wi; w2++)
                                    tr[w2] = tr[w2] / RSQRT(a * (eps + b[w2]));
                            }
                        }
            } else {
#pragma omp simd
                for (long p = 0; p < n_in; p++)
                    S[p] = S[p] / RSQRT((eps + qxl[p]) * (eps + qzl[p]));
                if (Tp) {
#pragma omp simd
                    for (long p = 0; p < n_in; p++)
                        Tp[p] = Tp[p] / RSQRT((eps + qxl[p]) * (eps + qzl[p]));
                }
            }
            break;
        }
        case NCV_COPY: {
            up[op->dst] = up[op->src];
            memcpy(S, Sb[op->src], sizeof(REAL) * n_in);
            if (pg->want_ntk && !tz[op->src])
                memcpy(T, Tb[op->src], sizeof(REAL) * n_in);
            tz[op->dst] = tz[op->src];
            break;
        }
        case NCV_ADD: {
            if (up[op->dst] != up[op->src]) {  /* elementwise: alike or both complete */
                NCV(ncv_complete)(up, op->dst, Sb, Tb, tz, pg->want_ntk, hi, wi);
                NCV(ncv_complete)(up, op->src, Sb, Tb, tz, pg->want_ntk, hi, wi);
            }
            REAL *Ss = Sb[op->src], *Ts = Tb[op->src];
#pragma omp simd
            for (long j = 0; j < n_in; j++)
                S[j] += Ss[j];
            if (pg->want_ntk && !tz[op->src]) {
                if (tz[op->dst]) {
                    memcpy(T, Ts, sizeof(REAL) * n_in);
                } else {
#pragma omp simd
                    for (long j = 0; j < n_in; j++)
                        T[j] += Ts[j];
                }
                tz[op->dst] = 0;
            }
            break;
        }
        default:
            break;
        }
        (void)size;
    }
    out_s[0] = Sb[0][0];
    if (out_t)
        out_t[0] = (pg->want_ntk && !tz[0]) ? Tb[0][0] : (REAL)0;
    return flags;
}
