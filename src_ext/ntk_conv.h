/*
 * The compiled network engine's per-pair interpreter (C99, no Python API).
 *
 * A network (ntkfast.layers: Conv, Dense, activations, AvgPool, GlobalAvgPool,
 * Flatten, FanOut / parallel / FanInSum) is compiled in Python
 * (ntkfast/backends/compiled_network.py) into a short program of ops on "slots":
 * each slot holds the pixel-pair covariances Sigma and Theta of one pair of inputs
 * (x, z) in neural-tangents' zipped layout (H, H', W, W') in full mode (all pixel
 * pairs, networks that pool) or (H, W) in same-position mode (Flatten readouts:
 * O(P) per pair).  1-D signals are (L, 1) images, vectors (1, 1).
 *
 * ncv_pair_*: the whole network for one pair (x_i, z_j), layer by layer in
 * per-thread workspaces:
 *   - input: Sigma0[p, p'] = x[p].z[p'] / C from the caller's GEMM tile (full mode)
 *     or direct per-position dot products (same-position mode), Theta0 = 0;
 *   - Conv: the window sum along the diagonal (p + a, p' + a) is separable: one
 *     pass along the (h, h') diagonal adding whole W x W planes, one along the
 *     (w, w') diagonal over contiguous rows: 2k loads per element, not k^2; in
 *     same-position mode (stride 1, not circular) from zero-padded copies, so the
 *     sums are long contiguous passes without edge cases;
 *   - activations: the closed forms (ABReLU family, Erf, GELU) with an inlined
 *     vectorisable atan2 (ntk_recursion.h); in float64 the ABReLU family's angle is
 *     the division-free ntk_angle of the unit-circle point (sqrt D, |Sigma|) rx rz,
 *     from the inverse roots rx = 1/sqrt(qx), rz = 1/sqrt(qz) the caller computes
 *     once per image (the self pass keeps the atan2); angle-reading activations flag the
 *     pair when a pixel pair is near-parallel, D < tau q q' (the caller recomputes
 *     flagged pairs with the reference engine's double-double pass);
 *   - AvgPool: four one-axis window sums; GlobalAvgPool / Flatten: means;
 *   - LayerNorm: Sigma[p, p'] / sqrt((eps + qx(p)) (eps + qz(p'))), Theta likewise.
 * The self pass (x = z) computes the planes h <= h' of its symmetric states only and
 * mirrors the rest before an op that reads them (ncv_complete).
 * Each pair is computed by the same sequence of operations whatever the thread or
 * the tile it falls in, so results do not depend on either.
 */
#ifndef NTK_CONV_H
#define NTK_CONV_H

#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "ntk_recursion.h"

enum {
    NCV_INPUT = 0,   /* dst = input covariances */
    NCV_AFFINE = 1,  /* Dense (per position / on vectors), in place */
    NCV_CONV = 2,
    NCV_ACT = 3,
    NCV_POOL = 4,
    NCV_GAP = 5,
    NCV_FLATTEN = 6,
    NCV_COPY = 7,    /* dst = src (FanOut) */
    NCV_ADD = 8,     /* dst += src (FanInSum) */
    NCV_LNORM = 9    /* LayerNorm: Sigma / sqrt((eps + qx)(eps + qz)), Theta likewise */
};

enum { NCV_ACT_ABRELU = 1, NCV_ACT_ERF = 2, NCV_ACT_GELU = 3,
       NCV_ACT_SERIES = 4 /* Hermite series with per-pixel tables: ntk_conv_series.h */ };

#define NCV_MAX_SLOTS 16

/* ncv_pair is cloned for AVX-512 (x86-64-v4) too where the FC engine clones for AVX2:
 * the activations' sqrt / divisions and selects run ~1.3-1.5x faster there (Zen 4,
 * measured); without fused multiply-adds (-ffp-contract=off) the clones give the
 * same elementwise results (reductions may differ in rounding order). */
#if defined(NTK_TARGET_CLONES) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
#define NCV_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define NCV_CLONES NTK_CLONES
#endif

typedef struct {
    int kind, dst, src;
    int hi, wi, ho, wo;      /* spatial shape in and out */
    int kh, kw, sh, sw;      /* window and strides */
    int lo_h, lo_w;          /* low padding */
    int circ;                /* CIRCULAR padding */
    int act;                 /* NCV_ACT_* */
    int qoff;                /* activation: offset of its variances in a packed tape row */
    int standard;            /* 'standard' parameterization */
    int flag;                /* activation: angle-reading (flags near-parallel pairs) */
    /* NCV_ACT_SERIES (ntk_conv_series.h): terms K of the tables, last entry of lanes 2, 3
     * (-1: none), parities of lanes 0, 1 (1: odd), |rho| bins, stage mode, offsets of
     * the layer in a coefficient row and in a K-table row, stride of a table entry's
     * pixels (>= the layer's pixels: padded, ntk_conv_series.h) */
    int sk, sj2, spe, spd, snb, smode, coff, koff, spl;
    double w2, b2;           /* Sigma' = w2 M(Sigma) + b2 (M: window mean) */
    double cs, c0;           /* standard: Theta' = cs M(Sigma) + w2 M(Theta) + c0 */
    double inv;              /* 1 / window size (Conv), 1 / window^2 (AvgPool) */
    double pa, pb, pc;       /* activation parameters (ABReLU: c0, f = (a-b)^2/2pi);
                              LayerNorm: pa = eps */
} ncv_op;

typedef struct {
    int n_ops;
    const ncv_op *ops;
    int full;                /* all pixel pairs */
    int H, W, C;             /* input spatial shape and channels */
    int n_slots;
    long maxsize;            /* elements of the largest state array */
    int want_ntk;
    int idx_size;            /* ints of index scratch */
    long padsize;            /* elements of the same-position Conv's padded scratch */
    double tau;
    int est_mode;            /* 0: count near-parallel pixel pairs; 1: those not alike;
                              2: the Theta error estimate */
} ncv_prog;

/* nu: the float64 noise of D = q q' - Sigma^2 relative to q q' (16 u; elementwise.py's
 * ANGLE_NOISE) */
#define NCV_ANGLE_NOISE (16.0 * 1.1102230246251565e-16)

#define NCV_PI 3.14159265358979323846

#define REAL double
#define NCV(name) name##_f64
#define NCV_ATAN2 ntk_atan2_xpos_f64
#define NCV_ANGLE ntk_angle_f64
#define NCV_FAST_ANGLE 1
#define RSQRT sqrt
#define RFABS fabs
#include "ntk_conv_impl.h"
#undef REAL
#undef NCV
#undef NCV_ATAN2
#undef NCV_ANGLE
#undef NCV_FAST_ANGLE
#undef RSQRT
#undef RFABS

#define REAL float
#define NCV(name) name##_f32
#define NCV_ATAN2 ntk_atan2_xpos_f32
#define NCV_FAST_ANGLE 0
#define RSQRT sqrtf
#define RFABS fabsf
#include "ntk_conv_impl.h"
#undef REAL
#undef NCV
#undef NCV_ATAN2
#undef NCV_FAST_ANGLE
#undef RSQRT
#undef RFABS

#endif /* NTK_CONV_H */
