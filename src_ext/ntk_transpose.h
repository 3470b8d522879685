/* Transposing blocks of 4- or 8-byte items (bit copies).
 *
 * ntk_transpose_rows(src, s0, h, c0, kc, dst, isz): dst[k][r] = src[r, c0 + k] for
 * r < h, k < kc, where src rows are s0 bytes apart and dst[k] is output row k
 * (anywhere: the direct writer transposes straight into its staging slots).
 * ntk_transpose(src, s0, h, c0, kc, dst, isz): the same into contiguous rows,
 * dst[k * h + r].  On x86-64 with AVX2, 4-byte items go through 8x8 register
 * transposes (about 3x a scalar loop).
 * Used by the out-of-core writers (_blockio.pyx, ntk_directio.h).
 */
#ifndef NTK_TRANSPOSE_H
#define NTK_TRANSPOSE_H
#include <stdint.h>
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#define NTK_HAVE_AVX2_PATH 1
/* 8x8 blocks of 4-byte items transposed in registers (pure bit moves). */
__attribute__((target("avx2")))
static void ntk_t32_avx2(const char *src, long s0, long h, long c0, long kc,
                         uint32_t **dst) {
    long rb = h - h % 8, kb = kc - kc % 8, r, k, i;
    for (r = 0; r < rb; r += 8) {
        const float *p = (const float*)(src + r * s0) + c0;
        for (k = 0; k < kb; k += 8) {
            __m256 a0 = _mm256_loadu_ps((const float*)((const char*)p + 0 * s0) + k);
            __m256 a1 = _mm256_loadu_ps((const float*)((const char*)p + 1 * s0) + k);
            __m256 a2 = _mm256_loadu_ps((const float*)((const char*)p + 2 * s0) + k);
            __m256 a3 = _mm256_loadu_ps((const float*)((const char*)p + 3 * s0) + k);
            __m256 a4 = _mm256_loadu_ps((const float*)((const char*)p + 4 * s0) + k);
            __m256 a5 = _mm256_loadu_ps((const float*)((const char*)p + 5 * s0) + k);
            __m256 a6 = _mm256_loadu_ps((const float*)((const char*)p + 6 * s0) + k);
            __m256 a7 = _mm256_loadu_ps((const float*)((const char*)p + 7 * s0) + k);
            __m256 t0 = _mm256_unpacklo_ps(a0, a1), t1 = _mm256_unpackhi_ps(a0, a1);
            __m256 t2 = _mm256_unpacklo_ps(a2, a3), t3 = _mm256_unpackhi_ps(a2, a3);
            __m256 t4 = _mm256_unpacklo_ps(a4, a5), t5 = _mm256_unpackhi_ps(a4, a5);
            __m256 t6 = _mm256_unpacklo_ps(a6, a7), t7 = _mm256_unpackhi_ps(a6, a7);
            __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
            __m256 u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
            __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
            __m256 u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
            __m256 u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
            __m256 u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
            __m256 u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
            __m256 u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
            uint32_t **q = dst + k;
            _mm256_storeu_ps((float*)(q[0] + r), _mm256_permute2f128_ps(u0, u4, 0x20));
            _mm256_storeu_ps((float*)(q[1] + r), _mm256_permute2f128_ps(u1, u5, 0x20));
            _mm256_storeu_ps((float*)(q[2] + r), _mm256_permute2f128_ps(u2, u6, 0x20));
            _mm256_storeu_ps((float*)(q[3] + r), _mm256_permute2f128_ps(u3, u7, 0x20));
            _mm256_storeu_ps((float*)(q[4] + r), _mm256_permute2f128_ps(u0, u4, 0x31));
            _mm256_storeu_ps((float*)(q[5] + r), _mm256_permute2f128_ps(u1, u5, 0x31));
            _mm256_storeu_ps((float*)(q[6] + r), _mm256_permute2f128_ps(u2, u6, 0x31));
            _mm256_storeu_ps((float*)(q[7] + r), _mm256_permute2f128_ps(u3, u7, 0x31));
        }
        for (k = kb; k < kc; k++)
            for (i = 0; i < 8; i++)
                dst[k][r + i] = ((const uint32_t*)(src + (r + i) * s0))[c0 + k];
    }
    for (r = rb; r < h; r++)
        for (k = 0; k < kc; k++)
            dst[k][r] = ((const uint32_t*)(src + r * s0))[c0 + k];
}
static int ntk_cpu_avx2(void) { __builtin_cpu_init(); return __builtin_cpu_supports("avx2"); }
#else
#define NTK_HAVE_AVX2_PATH 0
static void ntk_t32_avx2(const char *src, long s0, long h, long c0, long kc,
                         uint32_t **dst) { (void)src; (void)s0; (void)h; (void)c0; (void)kc; (void)dst; }
static int ntk_cpu_avx2(void) { return 0; }
#endif

/* The portable transposes, one per item type. */
#define NTK_T_SCALAR(name, T)                                                        \
    static void name(const char *src, long s0, long h, long c0, long kc, T **dst) {  \
        long r, k, i, rb = h - h % 8;                                                \
        for (r = 0; r < rb; r += 8)                                                  \
            for (k = 0; k < kc; k++)                                                 \
                for (i = 0; i < 8; i++)                                              \
                    dst[k][r + i] = ((const T*)(src + (r + i) * s0))[c0 + k];        \
        for (r = rb; r < h; r++)                                                     \
            for (k = 0; k < kc; k++)                                                 \
                dst[k][r] = ((const T*)(src + r * s0))[c0 + k];                      \
    }
NTK_T_SCALAR(ntk_t32_scalar, uint32_t)
NTK_T_SCALAR(ntk_t64_scalar, uint64_t)

static int ntk_avx2_state = -1;

static void ntk_transpose_rows(const char *src, long s0, long h, long c0, long kc,
                               void **dst, int isz) {
    if (isz == 8) {
        ntk_t64_scalar(src, s0, h, c0, kc, (uint64_t**)dst);
        return;
    }
    if (ntk_avx2_state < 0)
        ntk_avx2_state = ntk_cpu_avx2();
    if (ntk_avx2_state)
        ntk_t32_avx2(src, s0, h, c0, kc, (uint32_t**)dst);
    else
        ntk_t32_scalar(src, s0, h, c0, kc, (uint32_t**)dst);
}

#define NTK_T_CHUNK 256  /* output rows per ntk_transpose_rows call */

static inline void ntk_transpose(const char *src, long s0, long h, long c0, long kc,
                                 void *dst, int isz) {
    void *rows[NTK_T_CHUNK];
    long k0, j, n;
    for (k0 = 0; k0 < kc; k0 += n) {
        n = kc - k0 < NTK_T_CHUNK ? kc - k0 : NTK_T_CHUNK;
        for (j = 0; j < n; j++)
            rows[j] = (char*)dst + (k0 + j) * h * isz;
        ntk_transpose_rows(src, s0, h, c0 + k0, n, rows, isz);
    }
}

#endif
