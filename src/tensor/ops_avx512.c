/*
 * ops_avx512.c - AVX-512F inner loop of the decode GEMV (x86-64 only), chosen by
 * ops_cpu.c when __builtin_cpu_supports("avx512f") says so. Function-level target
 * attributes: no per-file compiler flags.
 *
 * Per row: two 16-wide accumulators over 32-element steps, a fixed reduction, then
 * a scalar tail (the order does not depend on which rows a thread gets).
 */
#include "tensor/ops.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define AVX512_TARGET __attribute__((target("avx512f,avx2,fma,f16c")))

AVX512_TARGET static inline __m512 load16(const void *w, DType t, int64_t i) {
    switch (t) {
    case DTYPE_F16:
        return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)w + i)));
    case DTYPE_BF16: {
        __m512i u =
            _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)((const uint16_t *)w + i)));
        return _mm512_castsi512_ps(_mm512_slli_epi32(u, 16));
    }
    default: return _mm512_loadu_ps((const float *)w + i);
    }
}

// Fixed-order sum of 16 lanes: fold 512 -> 256 -> 128 -> scalar.
AVX512_TARGET static inline float hsum16(__m512 v) {
    __m256 lo = _mm512_castps512_ps256(v);
    __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
    __m256 s8 = _mm256_add_ps(lo, hi);
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

AVX512_TARGET static float dot_row16(const float *x, const void *w, DType t, int64_t off, int K) {
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    int k = 0;
    for (; k + 32 <= K; k += 32) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k), load16(w, t, off + k), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k + 16), load16(w, t, off + k + 16), a1);
    }
    float s = hsum16(_mm512_add_ps(a0, a1));
    for (; k < K; k++)
        s += x[k] * ops_load(w, t, off + k);
    return s;
}

AVX512_TARGET void ops_gemv_rows_avx512(float *y, const float *x, const void *w, DType wt, int K,
                                        int n_rows) {
    int r = 0;
    for (; r + 4 <= n_rows; r += 4) {
        int64_t o[4] = {(int64_t)r * K, (int64_t)(r + 1) * K, (int64_t)(r + 2) * K,
                        (int64_t)(r + 3) * K};
        __m512 a[4][2];
        for (int j = 0; j < 4; j++)
            a[j][0] = a[j][1] = _mm512_setzero_ps();
        int k = 0;
        for (; k + 32 <= K; k += 32) {
            __m512 x0 = _mm512_loadu_ps(x + k), x1 = _mm512_loadu_ps(x + k + 16);
            for (int j = 0; j < 4; j++) {
                a[j][0] = _mm512_fmadd_ps(x0, load16(w, wt, o[j] + k), a[j][0]);
                a[j][1] = _mm512_fmadd_ps(x1, load16(w, wt, o[j] + k + 16), a[j][1]);
            }
        }
        for (int j = 0; j < 4; j++) {
            float s = hsum16(_mm512_add_ps(a[j][0], a[j][1]));
            for (int kk = k; kk < K; kk++)
                s += x[kk] * ops_load(w, wt, o[j] + kk);
            y[r + j] = s;
        }
    }
    for (; r < n_rows; r++)
        y[r] = dot_row16(x, w, wt, (int64_t)r * K, K);
}

#endif
