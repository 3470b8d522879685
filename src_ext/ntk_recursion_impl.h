/*
 * Type-generic body of ntk_recursion.h, included once per REAL (float, double).
 * Names are suffixed by SUF(): ntk_tile_f64, ntk_tile_f32, ...
 */

/* s(t) = sin t - t cos t by its Taylor series (t < 0.5): sum_k (-1)^(k+1) 2k/(2k+1)! t^(2k+1). */
NTK_INLINE REAL SUF(ntk_s_series)(REAL t)
{
    /* Estrin's scheme in u = t^2 (short dependency chains). */
    const REAL u = t * t, u2 = u * u, u4 = u2 * u2;
    const REAL p01 = (REAL)(1.0 / 3.0) - u * (REAL)(1.0 / 30.0);
    const REAL p23 = (REAL)(1.0 / 840.0) - u * (REAL)(1.0 / 45360.0);
    const REAL p45 = (REAL)(1.0 / 3991680.0) - u * (REAL)(1.0 / 518918400.0);
    const REAL p67 = (REAL)(1.0 / 93405312000.0) - u * (REAL)(1.0 / 22230464256000.0);
    return t * u * ((p01 + u2 * p23) + u4 * (p45 + u2 * p67));
}

/* atan2(y, x) for x >= 0, inlined and branch-free so the layer loops vectorise
 * without a call (Cephes' atan, ~1 ulp): t = min(|y|, x) / max(|y|, x) in [0, 1],
 * reduced by atan t = pi/4 + atan((t - 1)/(t + 1)) above tan(pi/8)-ish, then
 * atan2 = pi/2 - atan t when |y| > x, with the sign of y.  (0, 0) gives NaN; the
 * callers mask that case. */
NTK_INLINE REAL SUF(ntk_atan2_xpos)(REAL y, REAL x)
{
    const REAL ay = RFABS(y);
    const int swap = ay > x;
    const REAL num = swap ? x : ay, den = swap ? ay : x;
#if NTK_REAL_IS_DOUBLE
    const int big = num > (REAL)0.66 * den;
    const REAL u = (big ? num - den : num) / (big ? num + den : den);
    const REAL z = u * u;
    const REAL p = ((((-8.750608600031904122785e-1 * z - 1.615753718733365076637e1) * z
                      - 7.500855792314704667340e1) * z - 1.228866684490136173410e2) * z
                    - 6.485021904942025371773e1);
    const REAL q = (((((z + 2.485846490142306297962e1) * z + 1.650270098316988542046e2) * z
                       + 4.328810604912902668951e2) * z + 4.853903996359136964868e2) * z
                    + 1.945506571482613964425e2);
    REAL a = u + u * (z * p / q);
    a = big ? a + (0.78539816339744830962 + 0.5 * 6.123233995736765886130e-17) : a;
    a = swap ? (1.57079632679489661923 + 6.123233995736765886130e-17) - a : a;
#else
    const int big = num > 0.41421356237309504880f * den;
    const REAL u = (big ? num - den : num) / (big ? num + den : den);
    const REAL z = u * u;
    REAL a = (((8.05374449538e-2f * z - 1.38776856032e-1f) * z + 1.99777106478e-1f) * z
              - 3.33329491539e-1f) * z * u + u;
    a = big ? a + 0.78539816339744830962f : a;
    a = swap ? 1.57079632679489661923f - a : a;
#endif
    return RCOPYSIGN(a, y);
}

/* D = qx qz - S^2 for the first layer, without cancellation (Kahan's angle):
 * with a = x'/|x'|, b = z'/|z'| for the augmented inputs x' = (sw x/sqrt(d), sb),
 * sin(theta) = |a - b| |a + b| / 2 and D = qx qz sin^2(theta).  Accumulated in double. */
static double SUF(ntk_first_layer_gap)(const ntk_spec *sp, const REAL *x, const REAL *z,
                                       int d, double qx, double qz)
{
    const double ws = sp->w_scale, bs = sp->b_std;
    double nx = bs * bs, nz = bs * bs;
    for (int k = 0; k < d; k++) {
        const double a = ws * (double)x[k], b = ws * (double)z[k];
        nx += a * a;
        nz += b * b;
    }
    if (nx <= 0.0 || nz <= 0.0)
        return 0.0;
    const double ix = 1.0 / sqrt(nx), iz = 1.0 / sqrt(nz);
    double u2 = (bs * ix - bs * iz) * (bs * ix - bs * iz);
    double v2 = (bs * ix + bs * iz) * (bs * ix + bs * iz);
    for (int k = 0; k < d; k++) {
        const double a = ws * (double)x[k] * ix, b = ws * (double)z[k] * iz;
        u2 += (a - b) * (a - b);
        v2 += (a + b) * (a + b);
    }
    return qx * qz * u2 * v2 * 0.25;
}

/* First Dense on one row: S = w2 g/d + b2, T = lam0 g/d + mu, D = qx qz - S^2.
 * Returns the number of columns (other than diag_col) with D < tau qx qz, whose D
 * must be recomputed exactly (near-parallel pairs). */
NTK_INLINE int SUF(ntk_row_init)(const ntk_spec *sp, int n, const REAL *restrict g,
                                 REAL qx0, const REAL *restrict qz0, REAL *restrict S,
                                 REAL *restrict D, REAL *restrict T, int diag_col)
{
    const REAL inv_d = (REAL)sp->inv_d, w2 = (REAL)sp->w2, b2 = (REAL)sp->b2;
    const REAL lam0 = (REAL)sp->lam0, mu = (REAL)sp->mu, tqx = (REAL)sp->tau * qx0;
    int nflag = 0;
#pragma omp simd reduction(+:nflag)
    for (int j = 0; j < n; j++) {
        const REAL gj = g[j] * inv_d;
        const REAL s = w2 * gj + b2;
        S[j] = s;
        T[j] = lam0 * gj + mu;
        const REAL dd = qx0 * qz0[j] - s * s;
        D[j] = dd > 0 ? dd : 0;
        nflag += (dd < tqx * qz0[j]) & (j != diag_col);
    }
    return nflag;
}

/* phi = atan2(sn, cs) in [0, pi/2] for a point (sn, cs) >= 0 on the unit circle,
 * without a division: psi = asin(min(sn, cs)) in [0, pi/4], reduced above pi/8 by
 * psi = pi/4 - asin((max - min)/sqrt 2); asin(x) = x + x^3 P(x^2) on
 * x^2 <= sin^2(pi/8) (Chebyshev fit NTK_ASIN_P*, <= 2e-16 relative in double, 6e-8 in
 * float).  The result has the relative accuracy of sn (small angles) and the absolute
 * accuracy of one ulp of pi/2 elsewhere.  (0, 0) gives pi/2.  (Used as is by the conv
 * engine; the FC layers use ntk_angle_fc.) */
NTK_INLINE REAL SUF(ntk_angle)(REAL sn, REAL cs)
{
    const int lo = sn < cs;
    const REAL a = lo ? sn : cs, b = lo ? cs : sn;
    /* big as 0/1 arithmetic, not a select: a select on `big` twice makes gcc
     * evaluate the polynomial for both branches */
    const REAL big = a > (REAL)0.41421356237309504880 * b ? (REAL)1 : (REAL)0;
    const REAL x = a + big * ((b - a) * (REAL)0.70710678118654752440 - a);
    const REAL u = x * x;
#if NTK_REAL_IS_DOUBLE
    const REAL u2 = u * u, u4 = u2 * u2;
    const REAL p01 = NTK_ASIN_P0 + u * NTK_ASIN_P1;
    const REAL p23 = NTK_ASIN_P2 + u * NTK_ASIN_P3;
    const REAL p45 = NTK_ASIN_P4 + u * NTK_ASIN_P5;
    const REAL p67 = NTK_ASIN_P6 + u * NTK_ASIN_P7;
    const REAL p89 = NTK_ASIN_P8 + u * NTK_ASIN_P9;
    const REAL p = (p01 + u2 * p23) + u4 * ((p45 + u2 * p67) + u4 * p89);
#else
    const REAL p = (NTK_ASIN_F0 + u * NTK_ASIN_F1) + (u * u) * (NTK_ASIN_F2 + u * NTK_ASIN_F3);
#endif
    const REAL w = x + x * u * p;
    const REAL psi = w + big * ((REAL)0.78539816339744830962 - (REAL)2 * w);
    return lo ? psi : (REAL)1.57079632679489661923 - psi;
}

/* ntk_angle as the FC layers evaluate it.  Double: the same reduction and polynomial
 * with the reduction as selects (x = (max - min)/sqrt 2 or min, psi = pi/4 - w or w:
 * masked operations, no 0/1 products) and P by Horner (no u^2, u^4): 15% fewer
 * operations, the same accuracy.  Float: ntk_angle itself (there the 0/1 form and
 * the short Estrin polynomial are as fast). */
NTK_INLINE REAL SUF(ntk_angle_fc)(REAL sn, REAL cs)
{
#if NTK_REAL_IS_DOUBLE
    const int lo = sn < cs;
    const REAL a = lo ? sn : cs, b = lo ? cs : sn;
    const int big = a > (REAL)0.41421356237309504880 * b;
    const REAL x = big ? (b - a) * (REAL)0.70710678118654752440 : a;
    const REAL u = x * x;
    REAL p = NTK_ASIN_P9;
    p = p * u + NTK_ASIN_P8;
    p = p * u + NTK_ASIN_P7;
    p = p * u + NTK_ASIN_P6;
    p = p * u + NTK_ASIN_P5;
    p = p * u + NTK_ASIN_P4;
    p = p * u + NTK_ASIN_P3;
    p = p * u + NTK_ASIN_P2;
    p = p * u + NTK_ASIN_P1;
    p = p * u + NTK_ASIN_P0;
    const REAL w = x + (x * u) * p;
    const REAL psi = big ? (REAL)0.78539816339744830962 - w : w;
    return lo ? psi : (REAL)1.57079632679489661923 - psi;
#else
    return SUF(ntk_angle)(sn, cs);
#endif
}

/* D' = qx' qz' - S'^2 lost digits to cancellation (D' < tau qx' qz'): the test every
 * [ABReLU, Dense] step (fast, exact, fix) applies to the D' it hands on. */
NTK_INLINE int SUF(ntk_d_flagged)(REAL dnew, REAL tq, REAL qz1)
{
    return dnew < tq * qz1;
}

/* The [ABReLU, Dense] step, fast path, on a row (all columns, vectorised, no division):
 * r = sqrt(qx qz), phi = angle(sqrt D / r, |S| / r) in [0, pi/2] (theta = phi for
 * S >= 0, pi - phi for S < 0), h = sqrt D - phi |S| = r (sin phi - phi cos phi):
 *   E = c0 S + c1 h,  Edot = c0 - c1 phi              (S >= 0)
 *   E = c1 h - ab |S|, Edot = ab + c1 phi              (S < 0; c0 - c1 pi = ab)
 *   T' = w2 Edot T + lam E + mu,  S' = w2 E + b2,  D' = qx' qz' - S'^2 (need_d).
 * A zero row or column (q = 0, hence S = D = 0, 1/sqrt q stored as 0) gets
 * phi = pi/2, h = 0: E = 0, Edot = c0 - c1 pi/2 (the theta = pi/2 convention).
 * Exact where the pair is not near-parallel; the caller redoes with
 * ntk_abrelu_exact the columns this returns as flagged (their count): D' < tau qx' qz'
 * (D' by subtraction lost digits) or S < 0 with phi < NTK_SERIES_CUT
 * (h then loses digits and E = c1 h has nothing to hide them).
 * Both branches as one: E = c1 h + ks S, Edot = kd + kp phi with the per-sign
 * constants (ks, kd, kp) = (c0, c0, -c1) or (ab, ab, c1) picked by a blend, and the
 * flags counted in int lanes (a REAL reduction is kept on the stack by gcc). */
NTK_INLINE int SUF(ntk_layer_abrelu)(const ntk_spec *sp, int n, REAL irxl,
                                     const REAL *restrict irzl, REAL qx1, const REAL *restrict qz1,
                                     const REAL *restrict Sin, const REAL *restrict Din,
                                     const REAL *restrict Tin, REAL *restrict Sout,
                                     REAL *restrict Dout, REAL *restrict Tout,
                                     REAL *restrict Phi, REAL *restrict Sq,
                                     REAL *restrict Eo, REAL *restrict Go,
                                     const int need_d, const int want_e, int diag_col)
{
    const REAL c0 = (REAL)sp->c0, c1 = (REAL)sp->c1, ab = (REAL)sp->ab, w2 = (REAL)sp->w2;
    const REAL b2 = (REAL)sp->b2, lam = (REAL)sp->lam, mu = (REAL)sp->mu;
    const REAL tq = (REAL)sp->tau * qx1, cut = (REAL)NTK_SERIES_CUT;
    int nflag = 0;
    /* Two passes (angle, then the rest): each has a short dependency chain, so the
     * out-of-order core keeps more columns in flight than in one long loop body. */
#pragma omp simd
    for (int j = 0; j < n; j++) {
        const REAL sq = RSQRT(Din[j]), irz = irzl[j];
        Sq[j] = sq;
        Phi[j] = SUF(ntk_angle_fc)(sq * irxl * irz, RFABS(Sin[j]) * irxl * irz);
    }
#pragma omp simd reduction(+:nflag)
    for (int j = 0; j < n; j++) {
        const REAL s = Sin[j], phi = Phi[j];
        const int neg = s < 0;
        const REAL h = Sq[j] - phi * RFABS(s);
        const REAL ks = neg ? ab : c0, kp = neg ? c1 : -c1;
        const REAL e = c1 * h + ks * s;
        const REAL edot = ks + kp * phi;
        const REAL snew = w2 * e + b2;
        Tout[j] = w2 * edot * Tin[j] + lam * e + mu;
        Sout[j] = snew;
        if (want_e) {
            Eo[j] = e;
            Go[j] = edot;
        }
        int flag = neg & (phi < cut);
        if (need_d) {
            const REAL dnew = qx1 * qz1[j] - snew * snew;
            Dout[j] = dnew > 0 ? dnew : 0;
            flag |= SUF(ntk_d_flagged)(dnew, tq, qz1[j]);
        }
        nflag += flag;
    }
    if (diag_col >= 0) {  /* x_i itself (exact by construction) is not a flagged pair */
        const int j = diag_col;
        nflag -= (Sin[j] < 0 && Phi[j] < cut)
                 || (need_d && SUF(ntk_d_flagged)(Dout[j], tq, qz1[j]));
    }
    return nflag;
}

/* One column of the [ABReLU, Dense] step, exact for near-parallel and
 * near-antiparallel pairs: h = r s(phi) by its series for phi < NTK_SERIES_CUT, and D'
 * carried without cancellation.  With hv = sin^2(phi/2) = D / (2 r (r + |S|)), the gap
 * G = sqrt(Ex Ez) - E = c0 r - E is
 *   S >= 0:  G = r (2 c0 hv) - c1 h
 *   S <  0:  G = r ((a+b)^2/2 - 2ab hv) - c1 h            (phi = pi - theta)
 * and with m = sqrt(alpha_x alpha_z) = w2 c0 r, g = w2 G:
 *   D' = g (2m - g) + b2 (w2 c0 (rx - rz)^2 + 2 g).
 * Branch-free (zero rows: S = D = 0 give E = 0, G = 0) so that it vectorises. */
NTK_INLINE void SUF(ntk_abrelu_exact)(const ntk_spec *sp, REAL rx, REAL irx, REAL rz,
                                      REAL irz, REAL s, REAL dd, REAL t, REAL *Sout,
                                      REAL *Dout, REAL *Tout, REAL *Eo, REAL *Go, int need_d,
                                      int want_e)
{
    const REAL c0 = (REAL)sp->c0, c1 = (REAL)sp->c1, ab = (REAL)sp->ab, w2 = (REAL)sp->w2;
    const REAL b2 = (REAL)sp->b2, lam = (REAL)sp->lam, mu = (REAL)sp->mu;
    const REAL r = rx * rz;
    const REAL sq = RSQRT(dd), as = RFABS(s);
    const int neg = s < 0;
    const REAL phi = SUF(ntk_angle_fc)(sq * irx * irz, as * irx * irz);
    const REAL h = phi < (REAL)NTK_SERIES_CUT ? r * SUF(ntk_s_series)(phi) : sq - phi * as;
    const REAL e = neg ? c1 * h - ab * as : c0 * s + c1 * h;
    const REAL edot = neg ? ab + c1 * phi : c0 - c1 * phi;
    *Tout = w2 * edot * t + lam * e + mu;
    *Sout = w2 * e + b2;
    if (want_e) {
        *Eo = e;
        *Go = edot;
    }
    if (need_d) {
        const REAL hv = dd > 0 ? dd / ((REAL)2 * r * (r + as)) : (REAL)0;
        const REAL gap = neg ? r * ((REAL)sp->apb2h - (REAL)(2 * sp->ab) * hv) - c1 * h
                             : r * ((REAL)2 * c0 * hv) - c1 * h;
        const REAL m = w2 * c0 * r, gw = w2 * gap, dr = rx - rz;
        const REAL dnew = gw * ((REAL)2 * m - gw) + b2 * (w2 * c0 * dr * dr + (REAL)2 * gw);
        *Dout = dnew > 0 ? dnew : 0;
    }
}

/* The exact [ABReLU, Dense] step on all columns (vectorised; one division per column
 * more than the fast path).  Returns the number of columns (other than diag_col) with
 * D' < tau qx' qz' (0 if !need_d): the caller's guess for the next layer. */
NTK_INLINE int SUF(ntk_layer_abrelu_exact)(const ntk_spec *sp, int n, REAL rxl, REAL irxl,
                                           const REAL *restrict rzl,
                                           const REAL *restrict irzl, REAL qx1,
                                           const REAL *restrict qz1,
                                           const REAL *restrict Sin,
                                           const REAL *restrict Din,
                                           const REAL *restrict Tin, REAL *restrict Sout,
                                           REAL *restrict Dout, REAL *restrict Tout,
                                           REAL *restrict Eo, REAL *restrict Go,
                                           const int need_d, const int want_e, int diag_col)
{
    const REAL tq = (REAL)sp->tau * qx1;
    int nflag = 0;
#pragma omp simd reduction(+:nflag)
    for (int j = 0; j < n; j++) {
        SUF(ntk_abrelu_exact)(sp, rxl, irxl, rzl[j], irzl[j], Sin[j], Din[j], Tin[j],
                              Sout + j, Dout + j, Tout + j, want_e ? Eo + j : Eo,
                              want_e ? Go + j : Go, need_d, want_e);
        if (need_d)
            nflag += SUF(ntk_d_flagged)(Dout[j], tq, qz1[j]);
    }
    if (need_d && diag_col >= 0)
        nflag -= SUF(ntk_d_flagged)(Dout[diag_col], tq, qz1[diag_col]);
    return nflag;
}

/* Redo exactly the (few) columns a fast step flagged: S < 0 with phi < NTK_SERIES_CUT
 * (Phi: the fast step's angles), or D' < tau qx' qz'.  (Near-parallel columns with
 * S >= 0 need no redo on entry: their E and Edot only need phi to absolute accuracy,
 * which the exact D carried in gives; what must be exact is the D' they hand on.) */
static void SUF(ntk_layer_abrelu_fix)(const ntk_spec *sp, int n, REAL rxl, REAL irxl,
                                      const REAL *rzl, const REAL *irzl, REAL qx1,
                                      const REAL *qz1, const REAL *Sin, const REAL *Din,
                                      const REAL *Tin, const REAL *Phi, REAL *Sout,
                                      REAL *Dout, REAL *Tout, REAL *Eo, REAL *Go, int need_d,
                                      int want_e, int diag_col)
{
    const REAL tq = (REAL)sp->tau * qx1, cut = (REAL)NTK_SERIES_CUT;
    for (int j = 0; j < n; j++) {
        const REAL s = Sin[j];
        const int flagged = (s < 0 && Phi[j] < cut)
                            || (need_d && SUF(ntk_d_flagged)(Dout[j], tq, qz1[j]));
        if (flagged && j != diag_col)
            SUF(ntk_abrelu_exact)(sp, rxl, irxl, rzl[j], irzl[j], s, Din[j], Tin[j],
                                  Sout + j, Dout + j, Tout + j, want_e ? Eo + j : Eo,
                                  want_e ? Go + j : Go, need_d, want_e);
    }
}

/* One [ABReLU, Dense] step on a chunk of n columns, from (S, D, T) into (S2, D2, T2):
 * the fast step, then an exact redo of the columns it flags; when more than n/8 are
 * flagged (deep nets in the ordered phase: every pair near-parallel), the exact step
 * on the whole chunk -- directly so when the previous step flagged that many
 * (nflag_in).  tmp: 2 n scratch.  want_e: also store E and Edot in E, G (for the
 * frozen-layer chains).  Returns the number of columns the step flagged. */
NTK_INLINE int SUF(ntk_abrelu_step)(const ntk_spec *sp, int n, REAL rxl, REAL irxl,
                                    const REAL *rzl, const REAL *irzl, REAL qx1,
                                    const REAL *qz1, const REAL *S, const REAL *D,
                                    const REAL *T, REAL *S2, REAL *D2, REAL *T2, REAL *tmp,
                                    REAL *E, REAL *G, int nflag_in, const int need_d,
                                    const int want_e, int diag_col)
{
    const int many = n / 8;
    if (nflag_in <= many) {
        const int nout = SUF(ntk_layer_abrelu)(sp, n, irxl, irzl, qx1, qz1, S, D, T, S2, D2,
                                               T2, tmp, tmp + n, E, G, need_d, want_e,
                                               diag_col);
        if (nout <= many) {
            if (nout > 0)
                SUF(ntk_layer_abrelu_fix)(sp, n, rxl, irxl, rzl, irzl, qx1, qz1, S, D, T, tmp,
                                          S2, D2, T2, E, G, need_d, want_e, diag_col);
            return nout;
        }
    }
    return SUF(ntk_layer_abrelu_exact)(sp, n, rxl, irxl, rzl, irzl, qx1, qz1, S, D, T, S2, D2,
                                       T2, E, G, need_d, want_e, diag_col);
}

/* One [Erf(a,b,c), Dense] step: with s = b^2 S, q = b^2 q,
 * P - 4 s^2 = 1 + 2(qx + qz) + 4 (qx qz - s^2),
 * E = a^2 (2/pi) atan2(2 s, sqrt(P - 4 s^2)) + c^2,  Edot = a^2 b^2 (4/pi) / sqrt(P - 4 s^2).
 * (Sin, Tin) -> (Sout, Tout); E, Edot also into (Eo, Go) when want_e. */
NTK_INLINE void SUF(ntk_layer_erf)(const ntk_spec *sp, int n, REAL qxl,
                                   const REAL *restrict qzl, const REAL *restrict Sin,
                                   const REAL *restrict Tin, REAL *restrict Sout,
                                   REAL *restrict Tout, REAL *restrict Eo, REAL *restrict Go,
                                   const int want_e)
{
    const REAL b2e = (REAL)sp->eb2, c2 = (REAL)sp->ec2;
    const REAL w2 = (REAL)sp->w2, b2 = (REAL)sp->b2, lam = (REAL)sp->lam, mu = (REAL)sp->mu;
    const REAL k_e = (REAL)(sp->ea2 * 2.0 / NTK_PI);
    const REAL k_edot = (REAL)(sp->ea2 * sp->eb2 * 4.0 / NTK_PI);
    const REAL qxs = b2e * qxl;
#pragma omp simd
    for (int j = 0; j < n; j++) {
        const REAL s = b2e * Sin[j], qzs = b2e * qzl[j];
        const REAL gap = qxs * qzs - s * s;
        const REAL det = (REAL)1 + (REAL)2 * (qxs + qzs) + (REAL)4 * (gap > 0 ? gap : 0);
        const REAL root = RSQRT(det);
        const REAL e = k_e * SUF(ntk_atan2_xpos)((REAL)2 * s, root) + c2;
        const REAL edot = k_edot / root;
        Tout[j] = w2 * edot * Tin[j] + lam * e + mu;
        Sout[j] = w2 * e + b2;
        if (want_e) {
            Eo[j] = e;
            Go[j] = edot;
        }
    }
}

/* One [GELU, Dense] step (neural-tangents' closed form): with d2 = (qx+1)(qz+1) - S^2,
 * ang = atan2(S, sqrt d2),
 * E = S/4 + ((S^2 + qx qz d2) / ((qx+1)(qz+1) sqrt d2) + S ang) / (2 pi),
 * Edot = 1/4 + ang/(2 pi) + S/(2 pi sqrt d2) (1/d2 + (1 - qx qz)/((qx+1)(qz+1)) + 1). */
NTK_INLINE void SUF(ntk_layer_gelu)(const ntk_spec *sp, int n, REAL qxl,
                                    const REAL *restrict qzl, const REAL *restrict Sin,
                                    const REAL *restrict Tin, REAL *restrict Sout,
                                    REAL *restrict Tout, REAL *restrict Eo, REAL *restrict Go,
                                    const int want_e)
{
    const REAL w2 = (REAL)sp->w2, b2 = (REAL)sp->b2, lam = (REAL)sp->lam, mu = (REAL)sp->mu;
    const REAL inv2pi = (REAL)(1.0 / (2.0 * NTK_PI));
#pragma omp simd
    for (int j = 0; j < n; j++) {
        const REAL s = Sin[j], qz = qzl[j];
        const REAL prod = qxl * qz, pp1 = (qxl + 1) * (qz + 1);
        const REAL gap = prod - s * s;
        const REAL d2 = (REAL)1 + qxl + qz + (gap > 0 ? gap : 0);
        const REAL dl = RSQRT(d2);
        const REAL ang = SUF(ntk_atan2_xpos)(s, dl);
        const REAL e = ((s * s + prod * d2) / (pp1 * dl) + s * ang) * inv2pi + (REAL)0.25 * s;
        const REAL edot = ((REAL)1 / d2 + ((REAL)1 - prod) / pp1 + (REAL)1) * s / dl * inv2pi
                          + (REAL)0.25 + ang * inv2pi;
        Tout[j] = w2 * edot * Tin[j] + lam * e + mu;
        Sout[j] = w2 * e + b2;
        if (want_e) {
            Eo[j] = e;
            Go[j] = edot;
        }
    }
}

/* One [Identity, Dense] step: E = S, Edot = 1. */
NTK_INLINE void SUF(ntk_layer_identity)(const ntk_spec *sp, int n, const REAL *restrict Sin,
                                        const REAL *restrict Tin, REAL *restrict Sout,
                                        REAL *restrict Tout, REAL *restrict Eo,
                                        REAL *restrict Go, const int want_e)
{
    const REAL w2 = (REAL)sp->w2, b2 = (REAL)sp->b2, lam = (REAL)sp->lam, mu = (REAL)sp->mu;
#pragma omp simd
    for (int j = 0; j < n; j++) {
        const REAL s = Sin[j];
        Tout[j] = w2 * Tin[j] + lam * s + mu;
        Sout[j] = w2 * s + b2;
        if (want_e) {
            Eo[j] = s;
            Go[j] = (REAL)1;
        }
    }
}

/* A frozen-layer chain's Theta through one layer from the step's E, Edot:
 * started: T' = w2 Edot T + lam E + mu (the steps' association); else T' = lam E + mu
 * (its first trained Dense).  Tin and Tout may be the same row. */
NTK_INLINE void SUF(ntk_chain_step)(const ntk_spec *sp, int n, int started,
                                    const REAL *restrict E, const REAL *restrict G,
                                    const REAL *Tin, REAL *Tout)
{
    const REAL w2 = (REAL)sp->w2, lam = (REAL)sp->lam, mu = (REAL)sp->mu;
    if (started) {
#pragma omp simd
        for (int j = 0; j < n; j++)
            Tout[j] = w2 * G[j] * Tin[j] + lam * E[j] + mu;
    } else {
#pragma omp simd
        for (int j = 0; j < n; j++)
            Tout[j] = lam * E[j] + mu;
    }
}

/* One [Activation, Dense] step from (S, D, T) into (S2, D2, T2) (need_d, want_e as
 * constants in each inlined copy); returns the ABReLU flag count for the next layer. */
#define NTK_ABRELU_STEP(ND, WE)                                                            \
    SUF(ntk_abrelu_step)(sp, n, rxl, irxl, rzl, irzl, qx1, qz1, S, D, T, S2, D2, T2,       \
                         work + 6 * ldw, E, G, nflag, ND, WE, diag_col)

/* The whole recursion for one tile row i against columns 0..n-1, recording the
 * kernels rec asks for straight into the output rows orow[slot] (each layer's
 * step writes a recorded Sigma / Theta there, and the next layer reads it back from
 * L1).  qx, rx: q^l(x_i), sqrt(q^l(x_i)) at [l * ldx], 1/sqrt(q^l(x_i)) (0 for q = 0) at
 * [(depth + 1 + l) * ldx]; qz, rz: the same for the columns, stride ldz.
 * xrow, zrows (n rows of d): inputs for the exact near-parallel first layer.
 * work: NTK_WORK_ROWS(nk) rows of ldw >= n: S, D, T (chain 0) twice (the ABReLU step
 * reads one set and writes the other, so flagged columns can be redone from their
 * inputs), 2 rows of temporaries, E, Edot, a zero row, then chains 1..nk-1.
 * diag_col >= 0 marks the column holding x_i itself (S = q exactly, D = 0). */
NTK_INLINE void SUF(ntk_row)(const ntk_spec *sp, const ntk_record *rec, int n,
                             const REAL *g, const REAL *qx, const REAL *rx, ptrdiff_t ldx,
                             const REAL *qz, const REAL *rz, ptrdiff_t ldz,
                             const REAL *xrow, const REAL *zrows, int d,
                             REAL *work, ptrdiff_t ldw, REAL *const *orow, int diag_col)
{
    const int nk = rec->nk, depth = sp->depth, want_e = nk > 1;
    const int k0 = rec->k[0];
    REAL *E = work + 8 * ldw, *G = work + 9 * ldw, *zeros = work + 10 * ldw;
    REAL *chain[nk];              /* where chain c's current Theta lives (c >= 1) */
    int par = 0;                  /* S, D, T live in work set par (or S, T in outputs) */
    const int s0 = rec->s_slot[0], t0 = rec->t_slot[0];
    REAL *S = s0 >= 0 ? orow[s0] : work, *D = work + 2 * ldw;
    REAL *T = t0 >= 0 ? orow[t0] : work + 4 * ldw;
    int nflag = SUF(ntk_row_init)(sp, n, g, qx[0], qz, S, D, T, diag_col);
    if (diag_col >= 0) {
        S[diag_col] = qx[0];
        D[diag_col] = 0;
    }
    if (k0 > 0)
        memset(zeros, 0, (size_t)n * sizeof(REAL));
    for (int c = 1; c < nk; c++)
        chain[c] = work + (ptrdiff_t)(10 + c) * ldw;
    if (nflag > 0 && sp->act == NTK_ACT_ABRELU && depth > 0) {
        const double qx0 = (double)qx[0], tau = sp->tau;
        for (int j = 0; j < n; j++) {
            const double qq = qx0 * (double)qz[j];
            if ((double)D[j] < tau * qq && j != diag_col)
                D[j] = (REAL)SUF(ntk_first_layer_gap)(sp, xrow, zrows + (ptrdiff_t)j * d, d,
                                                      qx0, (double)qz[j]);
        }
    }
    const ptrdiff_t ir_off = (ptrdiff_t)(depth + 1);
    for (int l = 0; l < depth; l++) {
        const int lo = l + 1;  /* the layer this step produces */
        const int so = rec->s_slot[lo], to = rec->t_slot[(ptrdiff_t)lo * nk];
        const int other = 1 - par;
        REAL *S2 = so >= 0 ? orow[so] : work + other * ldw;
        REAL *D2 = work + (2 + other) * ldw;
        REAL *T2 = to >= 0 ? orow[to] : work + (4 + other) * ldw;
        if (k0 >= lo)  /* chain 0 starts at layer k0: Theta = 0 below it */
            T = zeros;
        switch (sp->act) {
        case NTK_ACT_ABRELU: {
            const int need_d = lo < depth;  /* the last layer needs no D' */
            const REAL rxl = rx[l * ldx], irxl = rx[(ir_off + l) * ldx];
            const REAL *rzl = rz + l * ldz, *irzl = rz + (ir_off + l) * ldz;
            const REAL qx1 = qx[lo * ldx], *qz1 = qz + lo * ldz;
            /* need_d, want_e constants in each call: each inlined copy is specialised */
            if (want_e)
                nflag = need_d ? NTK_ABRELU_STEP(1, 1) : NTK_ABRELU_STEP(0, 1);
            else
                nflag = need_d ? NTK_ABRELU_STEP(1, 0) : NTK_ABRELU_STEP(0, 0);
            if (need_d && diag_col >= 0)
                D2[diag_col] = 0;
            break;
        }
        case NTK_ACT_ERF:
            if (want_e)
                SUF(ntk_layer_erf)(sp, n, qx[l * ldx], qz + l * ldz, S, T, S2, T2, E, G, 1);
            else
                SUF(ntk_layer_erf)(sp, n, qx[l * ldx], qz + l * ldz, S, T, S2, T2, E, G, 0);
            break;
        case NTK_ACT_GELU:
            if (want_e)
                SUF(ntk_layer_gelu)(sp, n, qx[l * ldx], qz + l * ldz, S, T, S2, T2, E, G, 1);
            else
                SUF(ntk_layer_gelu)(sp, n, qx[l * ldx], qz + l * ldz, S, T, S2, T2, E, G, 0);
            break;
        default:
            if (want_e)
                SUF(ntk_layer_identity)(sp, n, S, T, S2, T2, E, G, 1);
            else
                SUF(ntk_layer_identity)(sp, n, S, T, S2, T2, E, G, 0);
        }
        S = S2;
        D = D2;
        T = T2;
        par = other;
        for (int c = 1; c < nk; c++) {
            const int kc = rec->k[c];
            if (kc > lo)
                break;  /* ascending: this chain and the later ones start further up */
            const int tc = rec->t_slot[(ptrdiff_t)lo * nk + c];
            REAL *dst = tc >= 0 ? orow[tc] : work + (ptrdiff_t)(10 + c) * ldw;
            SUF(ntk_chain_step)(sp, n, kc < lo, E, G, chain[c], dst);
            chain[c] = dst;
        }
    }
}

#undef NTK_ABRELU_STEP

/* Copy the block rows g0..g1 x columns c0..c1 of a tile (just written, still in
 * cache) to its mirror image out[j0 + j, i0 + i] (only j > i on a diagonal tile).
 * Each target row gets a contiguous run of g1 - g0 elements.  isa >= 1 (x86-64-v3/v4
 * builds) and whole, aligned cache lines (run a multiple of 64 bytes, out and its row
 * stride 64-byte aligned: ntkfast allocates its outputs so): 8 target rows at a time
 * are transposed into a staging area in L1 and streamed out with non-temporal stores
 * (no read for ownership of the cold, scattered target lines).  Otherwise plain
 * stores, the rows `ahead` further on (up to bj) prefetched for writing. */
NTK_INLINE void SUF(ntk_mirror_block)(REAL *out, ptrdiff_t ldo, ptrdiff_t i0, ptrdiff_t j0,
                                      int g0, int g1, int c0, int c1, int bj, int diag_tile,
                                      const int isa)
{
    const int ahead = NTK_MIRROR_AHEAD;
    int j = (diag_tile && g0 + 1 > c0) ? g0 + 1 : c0;
#ifdef NTK_X86_DISPATCH
    const size_t seg = (size_t)(g1 - g0) * sizeof(REAL);
    if (NTK_MIRROR_STREAM && isa >= NTK_ISA_V3 && seg % 64 == 0 && seg <= 64 * sizeof(REAL)
        && ((size_t)ldo * sizeof(REAL)) % 64 == 0
        && (size_t)(out + i0 + g0) % 64 == 0) {
        /* rows j < g1 of a diagonal tile take part of the run only: plain stores */
        const int jfull = (diag_tile && j < g1) ? (g1 < c1 ? g1 : c1) : j;
        for (; j < jfull; j++) {
            REAL *dst = out + (j0 + j) * ldo + i0;
            const REAL *src = out + i0 * ldo + j0 + j;
            for (int i = g0; i < j; i++)
                dst[i] = src[i * ldo];
        }
        const int m = g1 - g0;
        if (isa >= NTK_ISA_V4 && m == 16) {  /* whole 16-row groups: in-register transposes */
#if NTK_REAL_IS_DOUBLE
            const int nr = 8;
#else
            const int nr = 16;
#endif
            for (; j + nr <= c1; j += nr) {
                const REAL *src = out + (i0 + g0) * ldo + j0 + j;
                char *dst = (char *)(out + (j0 + j) * ldo + i0 + g0);
#if NTK_REAL_IS_DOUBLE
                ntk_mirror_16x8_f64_v4(dst, ldo * (ptrdiff_t)sizeof(REAL), src, ldo);
#else
                ntk_mirror_16x16_f32_v4(dst, ldo * (ptrdiff_t)sizeof(REAL), src, ldo);
#endif
            }
        }
        REAL stage[8 * 64] __attribute__((aligned(64)));
        for (; j < c1; j += 8) {
            const int nr = c1 - j < 8 ? c1 - j : 8;
            const REAL *src = out + (i0 + g0) * ldo + j0 + j;
            for (int i = 0; i < m; i++)
                for (int r = 0; r < nr; r++)
                    stage[r * m + i] = src[i * ldo + r];
            char *dst = (char *)(out + (j0 + j) * ldo + i0 + g0);
            if (isa >= NTK_ISA_V4)
                ntk_stream_rows_v4(dst, ldo * (ptrdiff_t)sizeof(REAL), (const char *)stage,
                                   seg, nr);
            else
                ntk_stream_rows_v3(dst, ldo * (ptrdiff_t)sizeof(REAL), (const char *)stage,
                                   seg, nr);
        }
        return;
    }
#else
    (void)isa;
#endif
    for (; j < c1; j++) {
        REAL *dst = out + (j0 + j) * ldo + i0;
        const REAL *src = out + i0 * ldo + j0 + j;
        if (j + ahead < bj) {
            const REAL *pf = dst + ahead * ldo + g0;
            __builtin_prefetch(pf, 1, 3);
            __builtin_prefetch(pf + (g1 - g0) - 1, 1, 3);
        }
        const int iend = (diag_tile && j < g1) ? j : g1;
        for (int i = g0; i < iend; i++)
            dst[i] = src[i * ldo];
    }
}

/* A bi x bj tile at (i0, j0) of the outputs: gram holds x_i . z_j (row-major, ld ldg).
 * X, Z point at the tile's first rows (d columns each); Qx/Rx/Qz/Rz at the tile's
 * first entries of each layer row (strides ldx, ldz; Rx/Rz rows depth+1.. hold the
 * reciprocal square roots).  diag_tile: Z is X, compute j >= i only.  mirror: also
 * write the transposed block (symmetric K(X, X)), in groups of rows while they are
 * in cache.  rec: which kernels go to which of the rec->nout output matrices out[s]
 * (row-major, ld ldo[s]).  work: NTK_WORK_ROWS(rec->nk) * bj scratch. */
#define NTK_TILE_PARAMS const ntk_spec *sp, const ntk_record *rec, int bi, int bj, \
    const REAL *gram, ptrdiff_t ldg, const REAL *X, const REAL *Z, int d, const REAL *Qx, \
    const REAL *Rx, ptrdiff_t ldx, const REAL *Qz, const REAL *Rz, ptrdiff_t ldz, \
    int diag_tile, int mirror, REAL *work, REAL *const *out, const ptrdiff_t *ldo, \
    ptrdiff_t i0, ptrdiff_t j0
#define NTK_TILE_ARGS sp, rec, bi, bj, gram, ldg, X, Z, d, Qx, Rx, ldx, Qz, Rz, ldz, \
    diag_tile, mirror, work, out, ldo, i0, j0

NTK_INLINE void SUF(ntk_tile_body)(NTK_TILE_PARAMS, const int isa)
{
    const int G = NTK_MIRROR_ROWS, nout = rec->nout;
    /* columns in chunks whose recursion state stays in L1; chunk <= bj, so the
     * caller's NTK_WORK_ROWS(nk) bj of scratch always suffice */
    const int chunk_max = NTK_CHUNK_BYTES / (int)sizeof(REAL);
    const int chunk = bj < chunk_max ? bj : chunk_max;
    REAL *orow[nout > 0 ? nout : 1];
    /* groups of G rows, column chunk by column chunk: the G x chunk block of every
     * output is mirrored right after it is written, while it is in L1/L2 (with many
     * outputs, a whole row group would not stay in cache) */
    for (int g0 = 0; g0 < bi; g0 += G) {
        const int g1 = g0 + G < bi ? g0 + G : bi;
        for (int cs = diag_tile ? g0 : 0; cs < bj; cs += chunk) {
            const int ce = cs + chunk < bj ? cs + chunk : bj;
            for (int i = g0; i < g1; i++) {
                const int js = (diag_tile && i > cs) ? i : cs;  /* j >= i on the diagonal */
                if (js >= ce)
                    break;
                for (int o = 0; o < nout; o++)
                    orow[o] = out[o] + (i0 + i) * ldo[o] + j0 + js;
                SUF(ntk_row)(sp, rec, ce - js, gram + (ptrdiff_t)i * ldg + js, Qx + i, Rx + i,
                             ldx, Qz + js, Rz + js, ldz, X + (ptrdiff_t)i * d,
                             Z + (ptrdiff_t)js * d, d, work, chunk, orow,
                             (diag_tile && js == i) ? 0 : -1);
            }
            if (mirror)
                for (int o = 0; o < nout; o++)
                    SUF(ntk_mirror_block)(out[o], ldo[o], i0, j0, g0, g1, cs, ce, bj,
                                          diag_tile, isa);
        }
    }
}

/* The tile kernel once per instruction-set level (see ntk_isa_level in ntk_recursion.h):
 * the same source inlined into each, so only the vector width and instruction
 * selection differ. */
#ifdef NTK_X86_DISPATCH
NTK_TARGET_V4 static void SUF(ntk_tile_v4)(NTK_TILE_PARAMS)
{
    SUF(ntk_tile_body)(NTK_TILE_ARGS, NTK_ISA_V4);
    if (mirror)
        _mm_sfence();  /* the streamed lines are ordered before anything after the tile */
}
NTK_TARGET_V3 static void SUF(ntk_tile_v3)(NTK_TILE_PARAMS)
{
    SUF(ntk_tile_body)(NTK_TILE_ARGS, NTK_ISA_V3);
    if (mirror)
        _mm_sfence();
}
#endif
static void SUF(ntk_tile_base)(NTK_TILE_PARAMS)
{
    SUF(ntk_tile_body)(NTK_TILE_ARGS, NTK_ISA_BASELINE);
}

__attribute__((unused)) static void SUF(ntk_tile)(NTK_TILE_PARAMS)
{
#ifdef NTK_X86_DISPATCH
    switch (ntk_isa_current()) {
    case NTK_ISA_V4:
        SUF(ntk_tile_v4)(NTK_TILE_ARGS);
        return;
    case NTK_ISA_V3:
        SUF(ntk_tile_v3)(NTK_TILE_ARGS);
        return;
    default:
        break;
    }
#endif
    SUF(ntk_tile_base)(NTK_TILE_ARGS);
}

#undef NTK_TILE_PARAMS
#undef NTK_TILE_ARGS
