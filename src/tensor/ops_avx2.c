/*
 * ops_avx2.c - AVX2 + FMA + F16C inner loops for ops_cpu.c (x86-64 only).
 *
 * Compiled without -mavx2: each function carries __attribute__((target(...))), and
 * ops_cpu.c calls them only after __builtin_cpu_supports("avx2") etc. said yes, so the
 * same binary runs on CPUs without AVX2.
 *
 * Summation order per GEMV output row is fixed (four 8-wide accumulators over 32-element
 * steps, a fixed horizontal reduction, then a scalar tail), whatever rows a thread gets.
 */
#include "tensor/ops.h"

#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>
#include <stdbool.h>

#define AVX2_TARGET __attribute__((target("avx2,fma,f16c")))

// 8 weights of type t at w[i..i+8) as floats.
AVX2_TARGET static inline __m256 load8(const void *w, DType t, int64_t i) {
    switch (t) {
    case DTYPE_F16:
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + i)));
    case DTYPE_BF16: {
        __m256i u =
            _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + i)));
        return _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
    }
    default: return _mm256_loadu_ps((const float *)w + i);
    }
}

// Sum of the 8 lanes in a fixed order: ((0+4)+(2+6)) + ((1+5)+(3+7)).
AVX2_TARGET static inline float hsum8(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    __m128 s = _mm_add_ps(lo, hi);
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

#define LOAD_F32(w, i) _mm256_loadu_ps((const float *)(w) + (i))
#define LOAD_F16(w, i)                                                                             \
    _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)(w) + (i))))
#define LOAD_BF16(w, i)                                                                            \
    _mm256_castsi256_ps(_mm256_slli_epi32(                                                         \
        _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)(w) + (i)))),    \
        16))

// One row at a time, 4 accumulators over 32-element steps: the matrix is read as one
// sequential stream (its rows are contiguous), with a software prefetch PF bytes ahead.
#define GEMV1_BODY(LOAD, ESIZE, PF)                                                                \
    for (int r = 0; r < n_rows; r++) {                                                             \
        const int64_t o = (int64_t)r * K;                                                          \
        const char *pb = (const char *)w + o * ESIZE;                                              \
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();                                 \
        __m256 a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();                                 \
        int k = 0;                                                                                 \
        for (; k + 32 <= K; k += 32) {                                                             \
            if (PF) _mm_prefetch(pb + k * ESIZE + PF, _MM_HINT_T0);                                \
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k), LOAD(w, o + k), a0);                      \
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k + 8), LOAD(w, o + k + 8), a1);              \
            a2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k + 16), LOAD(w, o + k + 16), a2);            \
            a3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k + 24), LOAD(w, o + k + 24), a3);            \
        }                                                                                          \
        float s = hsum8(_mm256_add_ps(_mm256_add_ps(a0, a2), _mm256_add_ps(a1, a3)));              \
        for (; k < K; k++)                                                                         \
            s += x[k] * ops_load(w, wt, o + k);                                                    \
        y[r] = s;                                                                                  \
    }

// Prefetch distance: F32 rows stream best on the hardware prefetcher alone; 16-bit rows,
// which take half the time per byte, gain from a software prefetch 2 KiB ahead (SmolLM2
// decode on this 2-core Zen 3 VM; bench/RESULTS.md, "Inference").
AVX2_TARGET static void gemv1_f32(float *y, const float *x, const void *w, DType wt, int K,
                                  int n_rows){GEMV1_BODY(LOAD_F32, 4, 0)} AVX2_TARGET
    static void gemv1_f16(float *y, const float *x, const void *w, DType wt, int K,
                          int n_rows){GEMV1_BODY(LOAD_F16, 2, 2048)} AVX2_TARGET
    static void gemv1_bf16(float *y, const float *x, const void *w, DType wt, int K,
                           int n_rows){GEMV1_BODY(LOAD_BF16, 2, 2048)}

AVX2_TARGET
    void ops_gemv_rows_avx2(float *y, const float *x, const void *w, DType wt, int K, int n_rows) {
    switch (wt) {
    case DTYPE_F16: gemv1_f16(y, x, w, wt, K, n_rows); break;
    case DTYPE_BF16: gemv1_bf16(y, x, w, wt, K, n_rows); break;
    default: gemv1_f32(y, x, w, wt, K, n_rows); break;
    }
}

// 3 weight rows x 4 tokens of y = x W^T: 12 accumulators; per 8 columns 3 weight and 4
// activation loads feed 12 FMAs, so the loop runs at FMA speed from L1/L2. Rows and tokens
// past the tile's end repeat the last one (computed, not stored).
AVX2_TARGET static void tile3x4(float *y, int64_t ldy, const float *x, const void *w, DType wt,
                                int K, int nr, int nt) {
    int64_t K64 = K;
    int64_t r1 = nr > 1 ? K64 : 0, r2 = nr > 2 ? 2 * K64 : r1;
    const float *x0 = x, *x1 = nt > 1 ? x + K64 : x0, *x2 = nt > 2 ? x + 2 * K64 : x1,
                *x3 = nt > 3 ? x + 3 * K64 : x2;
    __m256 a[3][4];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++)
            a[i][j] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= K64; k += 8) {
        __m256 b0 = load8(w, wt, k), b1 = load8(w, wt, r1 + k), b2 = load8(w, wt, r2 + k);
        __m256 v = _mm256_loadu_ps(x0 + k);
        a[0][0] = _mm256_fmadd_ps(b0, v, a[0][0]);
        a[1][0] = _mm256_fmadd_ps(b1, v, a[1][0]);
        a[2][0] = _mm256_fmadd_ps(b2, v, a[2][0]);
        v = _mm256_loadu_ps(x1 + k);
        a[0][1] = _mm256_fmadd_ps(b0, v, a[0][1]);
        a[1][1] = _mm256_fmadd_ps(b1, v, a[1][1]);
        a[2][1] = _mm256_fmadd_ps(b2, v, a[2][1]);
        v = _mm256_loadu_ps(x2 + k);
        a[0][2] = _mm256_fmadd_ps(b0, v, a[0][2]);
        a[1][2] = _mm256_fmadd_ps(b1, v, a[1][2]);
        a[2][2] = _mm256_fmadd_ps(b2, v, a[2][2]);
        v = _mm256_loadu_ps(x3 + k);
        a[0][3] = _mm256_fmadd_ps(b0, v, a[0][3]);
        a[1][3] = _mm256_fmadd_ps(b1, v, a[1][3]);
        a[2][3] = _mm256_fmadd_ps(b2, v, a[2][3]);
    }
    const float *xs[4] = {x0, x1, x2, x3};
    int64_t ro[3] = {0, r1, r2};
    for (int i = 0; i < nr; i++)
        for (int j = 0; j < nt; j++) {
            float acc = hsum8(a[i][j]);
            for (int64_t kk = k; kk < K64; kk++)
                acc += ops_load(w, wt, ro[i] + kk) * xs[j][kk];
            y[j * ldy + i] = acc;
        }
}

AVX2_TARGET void ops_gemm_rows_avx2(float *y, int64_t ldy, const float *x, const void *w, DType wt,
                                    int K, int n_rows, int T) {
    for (int r = 0; r < n_rows; r += 3) {
        const void *wr = (const char *)w + (int64_t)r * K * (int64_t)dtype_size(wt);
        for (int t = 0; t < T; t += 4)
            tile3x4(y + (int64_t)t * ldy + r, ldy, x + (int64_t)t * K, wr, wt, K,
                    n_rows - r < 3 ? n_rows - r : 3, T - t < 4 ? T - t : 4);
    }
}

AVX2_TARGET void ops_rmsnorm_row_avx2(float *out, const float *x, const void *w, DType wt, int D,
                                      float eps) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= D; i += 16) {
        __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + 8);
        s0 = _mm256_fmadd_ps(a, a, s0);
        s1 = _mm256_fmadd_ps(b, b, s1);
    }
    float ss = hsum8(_mm256_add_ps(s0, s1));
    for (; i < D; i++)
        ss += x[i] * x[i];
    const float rstd = 1.0f / sqrtf(ss / (float)D + eps); // as HF: torch.rsqrt in float32
    const __m256 vr = _mm256_set1_ps(rstd);
    for (i = 0; i + 8 <= D; i += 8)
        _mm256_storeu_ps(out + i,
                         _mm256_mul_ps(load8(w, wt, i), _mm256_mul_ps(_mm256_loadu_ps(x + i), vr)));
    for (; i < D; i++)
        out[i] = ops_load(w, wt, i) * (x[i] * rstd);
}

AVX2_TARGET void ops_widen_avx2(float *dst, const void *src, DType t, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, load8(src, t, i));
    for (; i < n; i++)
        dst[i] = ops_load(src, t, i);
}

// sc[p] = scale * sum_i q[i] kt[i][p], the sum a plain FMA chain over i = 0..HD-1 per
// position. Keys are stored transposed (HD rows of ctx floats), so the work goes 8 key rows
// at a time over all positions, with the partial sums parked in sc (L1): a decode step then
// reads the cache as 8 sequential streams. (Walking all HD rows per block of positions, as
// this kernel first did, interleaves HD streams 4 KiB+ apart, more than the hardware
// prefetchers track, and the cache came from DRAM at latency, not bandwidth.)
AVX2_TARGET void ops_attn_scores_avx2(float *sc, const float *q, const float *kt, int np, int HD,
                                      int ctx, float scale) {
    const __m256 vs = _mm256_set1_ps(scale);
    for (int i0 = 0; i0 < HD; i0 += 8) {
        const int ni = HD - i0 < 8 ? HD - i0 : 8;
        const bool first = i0 == 0, last = i0 + ni == HD;
        const float *kr[8];
        __m256 qb[8];
        for (int ii = 0; ii < 8; ii++) { // rows past HD repeat the last (unused)
            int i = i0 + (ii < ni ? ii : ni - 1);
            kr[ii] = kt + (int64_t)i * ctx;
            qb[ii] = _mm256_broadcast_ss(q + i);
        }
        int p = 0;
        for (; p + 64 <= np; p += 64) { // 8 independent chains of ni FMAs
            __m256 a[8];
            for (int j = 0; j < 8; j++)
                a[j] = first ? _mm256_setzero_ps() : _mm256_loadu_ps(sc + p + 8 * j);
            for (int ii = 0; ii < ni; ii++)
                _Pragma("GCC unroll 8") for (int j = 0; j < 8; j++) a[j] =
                    _mm256_fmadd_ps(qb[ii], _mm256_loadu_ps(kr[ii] + p + 8 * j), a[j]);
            for (int j = 0; j < 8; j++)
                _mm256_storeu_ps(sc + p + 8 * j, last ? _mm256_mul_ps(a[j], vs) : a[j]);
        }
        for (; p + 8 <= np; p += 8) {
            __m256 a0 = first ? _mm256_setzero_ps() : _mm256_loadu_ps(sc + p);
            for (int ii = 0; ii < ni; ii++)
                a0 = _mm256_fmadd_ps(qb[ii], _mm256_loadu_ps(kr[ii] + p), a0);
            _mm256_storeu_ps(sc + p, last ? _mm256_mul_ps(a0, vs) : a0);
        }
        for (; p < np; p++) { // the same chain as a SIMD lane
            float s0 = first ? 0.0f : sc[p];
            for (int ii = 0; ii < ni; ii++)
                s0 = fmaf(q[i0 + ii], kr[ii][p], s0);
            sc[p] = last ? s0 * scale : s0;
        }
    }
}

// o = sum_p w[p] v[p]: 32 output elements at a time kept in registers across positions.
AVX2_TARGET void ops_attn_pv_avx2(float *o, const float *w, const float *v, int np, int HD) {
    int i = 0;
    for (; i + 64 <= HD; i += 64) { // 8 chains, and each V row read once when HD = 64
        __m256 a[8];
        for (int j = 0; j < 8; j++)
            a[j] = _mm256_setzero_ps();
        for (int p = 0; p < np; p++) {
            __m256 wp = _mm256_broadcast_ss(w + p);
            const float *vr = v + (int64_t)p * HD + i;
            _Pragma("GCC unroll 8") for (int j = 0; j < 8; j++) a[j] =
                _mm256_fmadd_ps(wp, _mm256_loadu_ps(vr + 8 * j), a[j]);
        }
        for (int j = 0; j < 8; j++)
            _mm256_storeu_ps(o + i + 8 * j, a[j]);
    }
    for (; i + 32 <= HD; i += 32) {
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        __m256 a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
        for (int p = 0; p < np; p++) {
            __m256 wp = _mm256_broadcast_ss(w + p);
            const float *vr = v + (int64_t)p * HD + i;
            a0 = _mm256_fmadd_ps(wp, _mm256_loadu_ps(vr), a0);
            a1 = _mm256_fmadd_ps(wp, _mm256_loadu_ps(vr + 8), a1);
            a2 = _mm256_fmadd_ps(wp, _mm256_loadu_ps(vr + 16), a2);
            a3 = _mm256_fmadd_ps(wp, _mm256_loadu_ps(vr + 24), a3);
        }
        _mm256_storeu_ps(o + i, a0);
        _mm256_storeu_ps(o + i + 8, a1);
        _mm256_storeu_ps(o + i + 16, a2);
        _mm256_storeu_ps(o + i + 24, a3);
    }
    for (; i + 8 <= HD; i += 8) {
        __m256 a0 = _mm256_setzero_ps();
        for (int p = 0; p < np; p++)
            a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(w + p),
                                 _mm256_loadu_ps(v + (int64_t)p * HD + i), a0);
        _mm256_storeu_ps(o + i, a0);
    }
    for (; i < HD; i++) {
        float s = 0.0f;
        for (int p = 0; p < np; p++)
            s = fmaf(w[p], v[(int64_t)p * HD + i], s);
        o[i] = s;
    }
}

#endif
