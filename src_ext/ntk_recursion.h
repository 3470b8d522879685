/*
 * Fused NNGP / NTK depth recursion on one Gram tile (C99, no Python API).
 *
 * For a tile of raw dot products g_ij = x_i . z_j the kernels are
 *     S = w2 g/d + b2,  T = lam0 g/d + mu                         (first Dense)
 *     S' = w2 E + b2,   T' = w2 Edot T + lam E + mu               (each layer)
 * with E = E[phi(u)phi(v)], Edot = E[phi'(u)phi'(v)] under
 * (u, v) ~ N(0, [[qx, S], [S, qz]]) (see ntkfast/_spec.py, ntkfast/activations.py).
 *
 * Non-smooth activations (ABReLU family) depend on the angle
 * theta = atan2(sqrt(D), S), D = qx qz - S^2, which is ill-conditioned near
 * theta = 0 if D is formed by subtraction.  D is computed exactly for
 * near-parallel pairs of the first layer with Kahan's formula
 *     theta = 2 atan2(|x^ - z^|, |x^ + z^|),  D = qx qz (|x^-z^| |x^+z^| / 2)^2
 * on the augmented, normalised inputs x^ = (sw x / sqrt(d), sb) / sqrt(qx).
 * Each layer runs a fast division-free step (angle by an arcsine polynomial,
 * D' = qx' qz' - S'^2 by subtraction, exact where D' >= tau qx' qz'), and redoes
 * the columns it flags with the cancellation-free "gap" update of D (derived in
 * ntk_recursion_impl.h and ntkfast/backends/compiled.py).
 *
 * The row loops are written for the vectoriser (`omp simd`, no calls: the angle
 * and atan2 are inlined, branch-free polynomials), and the tile kernel is compiled
 * for x86-64-v4 (AVX-512), x86-64-v3 (AVX2 + FMA) and the baseline, chosen at run
 * time (ntk_isa_level below).  No -ffast-math: IEEE semantics are kept, and every
 * level computes the same formulas (FMA contraction differs only on the baseline).
 */
#ifndef NTK_RECURSION_H
#define NTK_RECURSION_H

#include <math.h>
#include <stddef.h>
#include <string.h>

#ifdef NTK_TARGET_CLONES
#define NTK_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define NTK_CLONES
#endif

/* Instruction-set levels of the FC tile kernel (ntk_tile_f64/_f32).  With
 * NTK_X86_DISPATCH (setup.py: the compiler accepts these targets) the kernel is
 * compiled three times -- x86-64-v4 (AVX-512 F/BW/DQ/VL, 512-bit vectors),
 * x86-64-v3 (AVX2 + FMA) and the baseline -- and ntk_tile_* calls the level in
 * ntk_isa_level, which starts at the best one the CPU and OS support
 * (ntk_isa_best) and can be lowered by ntk_set_isa (NTKFAST_ISA, see
 * ntkfast/backends/compiled.py).  Elsewhere only the baseline exists. */
#define NTK_ISA_BASELINE 0
#define NTK_ISA_V3 1
#define NTK_ISA_V4 2

#ifdef NTK_X86_DISPATCH
#define NTK_TARGET_V4 __attribute__((target("arch=x86-64-v4,prefer-vector-width=512")))
#define NTK_TARGET_V3 __attribute__((target("arch=x86-64-v3")))
#include <immintrin.h>

/* Non-temporal copies of nrows rows of seg bytes (a multiple of 64; dst rows 64-byte
 * aligned, ld_bytes apart) from a 64-byte aligned staging area (rows seg bytes apart):
 * whole cache lines written without reading them first.  Used for the mirrored
 * (transposed) writes of K(X, X), whose target lines are cold and scattered. */
NTK_TARGET_V4 static void ntk_stream_rows_v4(char *dst, ptrdiff_t ld_bytes, const char *src,
                                             size_t seg, int nrows)
{
    for (int r = 0; r < nrows; r++)
        for (size_t b = 0; b < seg; b += 64)
            _mm512_stream_si512((__m512i *)(dst + r * ld_bytes + b),
                                _mm512_load_si512((const void *)(src + r * seg + b)));
}

NTK_TARGET_V3 static void ntk_stream_rows_v3(char *dst, ptrdiff_t ld_bytes, const char *src,
                                             size_t seg, int nrows)
{
    for (int r = 0; r < nrows; r++)
        for (size_t b = 0; b < seg; b += 32)
            _mm256_stream_si256((__m256i *)(dst + r * ld_bytes + b),
                                _mm256_load_si256((const __m256i *)(src + r * seg + b)));
}

/* The mirror's transposes in registers (x86-64-v4): 16 rows of a just-written block
 * (src, rows lds elements apart, in cache) become rows of the target, each a whole
 * cache line (or two) streamed to dst (rows ld_bytes apart, 64-byte aligned).
 * f64: 16 source rows x 8 target rows (two 8x8 transposes; 2 lines per target row);
 * f32: 16 x 16 (one line per target row).  Pure bit moves, like the staging copy. */
NTK_TARGET_V4 static void ntk_mirror_16x8_f64_v4(char *dst, ptrdiff_t ld_bytes,
                                                  const double *src, ptrdiff_t lds)
{
    for (int h = 0; h < 2; h++) {
        const double *p = src + h * 8 * lds;
        const __m512d r0 = _mm512_loadu_pd(p), r1 = _mm512_loadu_pd(p + lds);
        const __m512d r2 = _mm512_loadu_pd(p + 2 * lds), r3 = _mm512_loadu_pd(p + 3 * lds);
        const __m512d r4 = _mm512_loadu_pd(p + 4 * lds), r5 = _mm512_loadu_pd(p + 5 * lds);
        const __m512d r6 = _mm512_loadu_pd(p + 6 * lds), r7 = _mm512_loadu_pd(p + 7 * lds);
        /* 128-bit lane L of t0 = (r0[2L], r1[2L]), of t1 = (r0[2L+1], r1[2L+1]), ... */
        const __m512d t0 = _mm512_unpacklo_pd(r0, r1), t1 = _mm512_unpackhi_pd(r0, r1);
        const __m512d t2 = _mm512_unpacklo_pd(r2, r3), t3 = _mm512_unpackhi_pd(r2, r3);
        const __m512d t4 = _mm512_unpacklo_pd(r4, r5), t5 = _mm512_unpackhi_pd(r4, r5);
        const __m512d t6 = _mm512_unpacklo_pd(r6, r7), t7 = _mm512_unpackhi_pd(r6, r7);
        /* u0 = columns 0 and 4 of rows 0-3, u1 = 2 and 6, u2 = 1 and 5, u3 = 3 and 7 */
        const __m512d u0 = _mm512_shuffle_f64x2(t0, t2, 0x88);
        const __m512d u1 = _mm512_shuffle_f64x2(t0, t2, 0xDD);
        const __m512d u2 = _mm512_shuffle_f64x2(t1, t3, 0x88);
        const __m512d u3 = _mm512_shuffle_f64x2(t1, t3, 0xDD);
        const __m512d u4 = _mm512_shuffle_f64x2(t4, t6, 0x88);
        const __m512d u5 = _mm512_shuffle_f64x2(t4, t6, 0xDD);
        const __m512d u6 = _mm512_shuffle_f64x2(t5, t7, 0x88);
        const __m512d u7 = _mm512_shuffle_f64x2(t5, t7, 0xDD);
        double *q = (double *)dst + h * 8;
        const ptrdiff_t ld = ld_bytes / (ptrdiff_t)sizeof(double);
        _mm512_stream_pd(q, _mm512_shuffle_f64x2(u0, u4, 0x88));
        _mm512_stream_pd(q + 1 * ld, _mm512_shuffle_f64x2(u2, u6, 0x88));
        _mm512_stream_pd(q + 2 * ld, _mm512_shuffle_f64x2(u1, u5, 0x88));
        _mm512_stream_pd(q + 3 * ld, _mm512_shuffle_f64x2(u3, u7, 0x88));
        _mm512_stream_pd(q + 4 * ld, _mm512_shuffle_f64x2(u0, u4, 0xDD));
        _mm512_stream_pd(q + 5 * ld, _mm512_shuffle_f64x2(u2, u6, 0xDD));
        _mm512_stream_pd(q + 6 * ld, _mm512_shuffle_f64x2(u1, u5, 0xDD));
        _mm512_stream_pd(q + 7 * ld, _mm512_shuffle_f64x2(u3, u7, 0xDD));
    }
}

NTK_TARGET_V4 static void ntk_mirror_16x16_f32_v4(char *dst, ptrdiff_t ld_bytes,
                                                   const float *src, ptrdiff_t lds)
{
    __m512 a[16], b[16];
    for (int k = 0; k < 8; k++) {  /* lane L: (r2k[4L], r2k+1[4L], r2k[4L+1], ...) */
        const __m512 x = _mm512_loadu_ps(src + 2 * k * lds);
        const __m512 y = _mm512_loadu_ps(src + (2 * k + 1) * lds);
        a[2 * k] = _mm512_unpacklo_ps(x, y);
        a[2 * k + 1] = _mm512_unpackhi_ps(x, y);
    }
    for (int g = 0; g < 4; g++) {  /* b[4g + m], lane L: rows 4g..4g+3 of column 4L + m */
        const __m512d a0 = _mm512_castps_pd(a[4 * g]), a1 = _mm512_castps_pd(a[4 * g + 1]);
        const __m512d a2 = _mm512_castps_pd(a[4 * g + 2]), a3 = _mm512_castps_pd(a[4 * g + 3]);
        b[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(a0, a2));
        b[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a0, a2));
        b[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(a1, a3));
        b[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(a1, a3));
    }
    float *q = (float *)dst;
    const ptrdiff_t ld = ld_bytes / (ptrdiff_t)sizeof(float);
    for (int m = 0; m < 4; m++) {  /* columns m, 4 + m, 8 + m, 12 + m */
        const __m512 clo = _mm512_shuffle_f32x4(b[m], b[4 + m], 0x44);
        const __m512 chi = _mm512_shuffle_f32x4(b[m], b[4 + m], 0xEE);
        const __m512 dlo = _mm512_shuffle_f32x4(b[8 + m], b[12 + m], 0x44);
        const __m512 dhi = _mm512_shuffle_f32x4(b[8 + m], b[12 + m], 0xEE);
        _mm512_stream_ps(q + m * ld, _mm512_shuffle_f32x4(clo, dlo, 0x88));
        _mm512_stream_ps(q + (4 + m) * ld, _mm512_shuffle_f32x4(clo, dlo, 0xDD));
        _mm512_stream_ps(q + (8 + m) * ld, _mm512_shuffle_f32x4(chi, dhi, 0x88));
        _mm512_stream_ps(q + (12 + m) * ld, _mm512_shuffle_f32x4(chi, dhi, 0xDD));
    }
}
#endif

/* The best level this CPU (and OS: __builtin_cpu_supports checks XCR0) runs. */
__attribute__((unused)) static int ntk_isa_best(void)
{
#ifdef NTK_X86_DISPATCH
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")
        && __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx2")
        && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2"))
        return NTK_ISA_V4;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
        && __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2")
        && __builtin_cpu_supports("f16c") && __builtin_cpu_supports("movbe"))
        return NTK_ISA_V3;
#endif
    return NTK_ISA_BASELINE;
}

/* -1 until first used: then ntk_isa_best(). */
__attribute__((unused)) static int ntk_isa_level = -1;

__attribute__((unused)) static int ntk_isa_current(void)
{
    if (ntk_isa_level < 0)
        ntk_isa_level = ntk_isa_best();
    return ntk_isa_level;
}

/* Select a level (0 baseline, 1 x86-64-v3, 2 x86-64-v4); -1 = the best.  Returns the
 * level now in use, or -1 (nothing changed) if this CPU or build lacks it. */
__attribute__((unused)) static int ntk_set_isa(int level)
{
    const int best = ntk_isa_best();
    if (level < 0)
        level = best;
    if (level > best)
        return -1;
    ntk_isa_level = level;
    return level;
}

/* The row kernels are inlined into each target clone of the tile function. */
#define NTK_INLINE static inline __attribute__((always_inline))

#define NTK_ACT_IDENTITY 0
#define NTK_ACT_ABRELU 1
#define NTK_ACT_ERF 2
#define NTK_ACT_GELU 3

typedef struct {
    int act;          /* NTK_ACT_* */
    int depth;        /* number of [Activation, Dense] steps */
    double w2, b2;    /* sigma_w^2, sigma_b^2 */
    double lam0, lam, mu;
    double inv_d;     /* 1 / input dimension */
    double w_scale;   /* sigma_w / sqrt(d), for the first-layer Kahan angle */
    double b_std;     /* sigma_b */
    /* ABReLU(a, b): c0 = (a^2+b^2)/2, c1 = (a-b)^2/(2 pi), apb2h = (a+b)^2/2, ab = a b */
    double c0, c1, apb2h, ab;
    /* Erf(a, b, c): a^2, b^2, c^2 */
    double ea2, eb2, ec2;
    double tau;       /* D < tau qx qz  ->  D computed exactly (first layer, each step) */
} ntk_spec;

/* Which kernels a tile call records, and where (one pass, many kernels: every depth
 * l = 0..depth of the recursion, and Theta for several frozen-layer counts k; see
 * ntkfast/multidepth.py).  Theta chain c (frozen count k[c], ascending) is 0 up to
 * layer k[c], lam E + mu there (k[c] = 0: the first Dense's lam0 g + mu) and the
 * usual T' = w2 Edot T + lam E + mu above.  Chain 0 is carried by the layer steps;
 * the others from the E, Edot the steps then also store.  After layer l, Sigma goes
 * to output slot s_slot[l] and chain c's Theta to t_slot[l * nk + c] (-1: not
 * recorded; every slot at most once).  A single kernel: nk = 1, k = {0}, slots only
 * at l = depth. */
typedef struct {
    int nk;              /* Theta chains, >= 1 */
    const int *k;        /* [nk] frozen-layer counts, strictly ascending */
    const int *s_slot;   /* [depth + 1] */
    const int *t_slot;   /* [(depth + 1) * nk] */
    int nout;            /* output matrices */
} ntk_record;

/* rows of scratch per column a tile needs (ntk_row's work) */
#define NTK_WORK_ROWS(nk) (10 + (nk))

#define NTK_PI 3.14159265358979323846
#define NTK_SERIES_CUT 0.5
/* columns of a row processed at once: 6 state rows of this many bytes stay in L1 */
#define NTK_CHUNK_BYTES 2048
/* rows of a tile computed (and then mirrored, output by output, while in cache) at once */
#ifndef NTK_MIRROR_ROWS
#define NTK_MIRROR_ROWS 16
#endif
/* 1: mirror whole aligned lines with non-temporal stores (x86-64-v3/v4), 0: never */
#ifndef NTK_MIRROR_STREAM
#define NTK_MIRROR_STREAM 1
#endif
/* mirrored rows prefetched ahead for writing (plain stores) */
#ifndef NTK_MIRROR_AHEAD
#define NTK_MIRROR_AHEAD 24
#endif

/* asin(x) = x + x^3 P(x^2) on x^2 <= sin^2(pi/8) (ntk_angle): P's coefficients,
 * double (P0..P9) and float (F0..F3) */
#define NTK_ASIN_P0 0.166666666666666540078
#define NTK_ASIN_P1 0.0750000000001725869716
#define NTK_ASIN_P2 0.0446428571041353068606
#define NTK_ASIN_P3 0.0303819478043488405161
#define NTK_ASIN_P4 0.0223720115764510810761
#define NTK_ASIN_P5 0.0173564660745035383572
#define NTK_ASIN_P6 0.0139087124076352668485
#define NTK_ASIN_P7 0.0120720864133227279311
#define NTK_ASIN_P8 0.00691764662872174328376
#define NTK_ASIN_P9 0.0164797844863943903745
#define NTK_ASIN_F0 0.16666656410578364352f
#define NTK_ASIN_F1 0.0750223068219190454028f
#define NTK_ASIN_F2 0.0438967708556046410593f
#define NTK_ASIN_F3 0.0381318220605275596188f

/* Instantiate the kernels for double and float. */
#define REAL double
#define NTK_REAL_IS_DOUBLE 1
#define SUF(name) name##_f64
#define RSQRT sqrt
#define RFABS fabs
#define RCOPYSIGN copysign
#include "ntk_recursion_impl.h"
#undef REAL
#undef NTK_REAL_IS_DOUBLE
#undef SUF
#undef RSQRT
#undef RFABS
#undef RCOPYSIGN

#define REAL float
#define NTK_REAL_IS_DOUBLE 0
#define SUF(name) name##_f32
#define RSQRT sqrtf
#define RFABS fabsf
#define RCOPYSIGN copysignf
#include "ntk_recursion_impl.h"
#undef REAL
#undef NTK_REAL_IS_DOUBLE
#undef SUF
#undef RSQRT
#undef RFABS
#undef RCOPYSIGN

#endif /* NTK_RECURSION_H */
