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

/* Attention over the KV cache, for nh = 1..3 query heads that share a KV head at once, so
 * each key and value is loaded once for all of them (a decode step's chunk then comes from
 * memory once, as one sequential stream of tiles). The accumulators are named variables and
 * the head count a compile-time constant of each specialisation: with arrays GCC kept the
 * accumulators on the stack and stored all of them at every position. Per output element
 * the arithmetic is one FMA chain in the reference order (scores: over i ascending, then the
 * scale; p.v: over p ascending), whatever the head count or the blocking. */

#define KT OPS_KEY_TILE

// Scores of NH heads at NV * 8 positions starting at kb (row 0 of a key tile, rows KT apart).
#define SC_ACC(h, j) acc_##h##_##j
#define SC_DECL(h)                                                                                 \
    __m256 SC_ACC(h, 0) = _mm256_setzero_ps(), SC_ACC(h, 1) = _mm256_setzero_ps(),                 \
                     SC_ACC(h, 2) = _mm256_setzero_ps(), SC_ACC(h, 3) = _mm256_setzero_ps(),       \
                     SC_ACC(h, 4) = _mm256_setzero_ps(), SC_ACC(h, 5) = _mm256_setzero_ps(),       \
                     SC_ACC(h, 6) = _mm256_setzero_ps(), SC_ACC(h, 7) = _mm256_setzero_ps()
#define SC_FMA(h, qv)                                                                              \
    do {                                                                                           \
        SC_ACC(h, 0) = _mm256_fmadd_ps(qv, k0, SC_ACC(h, 0));                                      \
        SC_ACC(h, 1) = _mm256_fmadd_ps(qv, k1, SC_ACC(h, 1));                                      \
        SC_ACC(h, 2) = _mm256_fmadd_ps(qv, k2, SC_ACC(h, 2));                                      \
        SC_ACC(h, 3) = _mm256_fmadd_ps(qv, k3, SC_ACC(h, 3));                                      \
        if (NV == 8) {                                                                             \
            SC_ACC(h, 4) = _mm256_fmadd_ps(qv, k4, SC_ACC(h, 4));                                  \
            SC_ACC(h, 5) = _mm256_fmadd_ps(qv, k5, SC_ACC(h, 5));                                  \
            SC_ACC(h, 6) = _mm256_fmadd_ps(qv, k6, SC_ACC(h, 6));                                  \
            SC_ACC(h, 7) = _mm256_fmadd_ps(qv, k7, SC_ACC(h, 7));                                  \
        }                                                                                          \
    } while (0)
#define SC_STORE(h, dst)                                                                           \
    do {                                                                                           \
        _mm256_storeu_ps(dst, _mm256_mul_ps(SC_ACC(h, 0), vs));                                    \
        _mm256_storeu_ps(dst + 8, _mm256_mul_ps(SC_ACC(h, 1), vs));                                \
        _mm256_storeu_ps(dst + 16, _mm256_mul_ps(SC_ACC(h, 2), vs));                               \
        _mm256_storeu_ps(dst + 24, _mm256_mul_ps(SC_ACC(h, 3), vs));                               \
        if (NV == 8) {                                                                             \
            _mm256_storeu_ps(dst + 32, _mm256_mul_ps(SC_ACC(h, 4), vs));                           \
            _mm256_storeu_ps(dst + 40, _mm256_mul_ps(SC_ACC(h, 5), vs));                           \
            _mm256_storeu_ps(dst + 48, _mm256_mul_ps(SC_ACC(h, 6), vs));                           \
            _mm256_storeu_ps(dst + 56, _mm256_mul_ps(SC_ACC(h, 7), vs));                           \
        }                                                                                          \
    } while (0)

// 8 cache elements at e[i..i+8) as floats: float32, or fp16 widened (exact).
AVX2_TARGET static inline __attribute__((always_inline)) __m256 kv_load8(const void *e, int64_t i,
                                                                         const bool F16) {
    if (F16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)e + i)));
    return _mm256_loadu_ps((const float *)e + i);
}

AVX2_TARGET static inline __attribute__((always_inline)) void
scores_block(float *sc, int64_t ss, const float *q, const void *kb, int HD, __m256 vs, const int NH,
             const int NV, const bool F16) {
    SC_DECL(0);
    SC_DECL(1);
    SC_DECL(2);
    for (int i = 0; i < HD; i++) {
        const int64_t r = (int64_t)i * KT;
        const __m256 k0 = kv_load8(kb, r, F16), k1 = kv_load8(kb, r + 8, F16);
        const __m256 k2 = kv_load8(kb, r + 16, F16), k3 = kv_load8(kb, r + 24, F16);
        const __m256 k4 = NV == 8 ? kv_load8(kb, r + 32, F16) : k0;
        const __m256 k5 = NV == 8 ? kv_load8(kb, r + 40, F16) : k0;
        const __m256 k6 = NV == 8 ? kv_load8(kb, r + 48, F16) : k0;
        const __m256 k7 = NV == 8 ? kv_load8(kb, r + 56, F16) : k0;
        SC_FMA(0, _mm256_broadcast_ss(q + i));
        if (NH > 1) SC_FMA(1, _mm256_broadcast_ss(q + HD + i));
        if (NH > 2) SC_FMA(2, _mm256_broadcast_ss(q + 2 * HD + i));
    }
    SC_STORE(0, sc);
    if (NH > 1) SC_STORE(1, sc + ss);
    if (NH > 2) SC_STORE(2, sc + 2 * ss);
}

// Element offset o of cache e as a pointer.
static inline const void *kv_at(const void *e, int64_t o, const bool F16) {
    return (const char *)e + o * (F16 ? 2 : 4);
}

// NH heads over positions [0, n) of the tiled keys from kt (blocks of NV * 8 positions;
// positions past n in the last block are computed from the tile's padding and dropped).
AVX2_TARGET static inline __attribute__((always_inline)) void
scores_heads(float *sc, int64_t ss, const float *q, const void *kt, int n, int HD, float scale,
             const int NH, const int NV, const bool F16) {
    const __m256 vs = _mm256_set1_ps(scale);
    const int B = 8 * NV;
    int p = 0;
    for (; p + B <= n; p += B)
        scores_block(sc + p, ss, q, kv_at(kt, ops_key_offset(HD, 0, p), F16), HD, vs, NH, NV, F16);
    if (p < n) {
        float tmp[3 * 64];
        scores_block(tmp, 64, q, kv_at(kt, ops_key_offset(HD, 0, p), F16), HD, vs, NH, NV, F16);
        for (int h = 0; h < NH; h++)
            for (int j = 0; j < n - p; j++)
                sc[h * ss + p + j] = tmp[h * 64 + j];
    }
}

AVX2_TARGET void ops_attn_scores_avx2(float *sc, int64_t ss, const float *q, int nh, const void *kt,
                                      DType kt_type, int n, int HD, float scale) {
    const bool h = kt_type == DTYPE_F16;
    switch (nh * 2 + h) {
    case 2: scores_heads(sc, ss, q, kt, n, HD, scale, 1, 8, false); break;
    case 3: scores_heads(sc, ss, q, kt, n, HD, scale, 1, 8, true); break;
    case 4: scores_heads(sc, ss, q, kt, n, HD, scale, 2, 4, false); break;
    case 5: scores_heads(sc, ss, q, kt, n, HD, scale, 2, 4, true); break;
    case 6: scores_heads(sc, ss, q, kt, n, HD, scale, 3, 4, false); break;
    default: scores_heads(sc, ss, q, kt, n, HD, scale, 3, 4, true); break;
    }
}

// p.v for NH heads, outputs [i0, i0 + 8 * NV) (NV = 4 or 1), positions [p0, p1): the
// accumulators start from o (zero when p0 = 0) and go back to o, so splitting the positions
// into blocks keeps each element's FMA chain.
#define PV_ACC(h, j) pv_##h##_##j
#define PV_DECL(h)                                                                                 \
    __m256 PV_ACC(h, 0) = _mm256_setzero_ps(), PV_ACC(h, 1) = _mm256_setzero_ps(),                 \
                     PV_ACC(h, 2) = _mm256_setzero_ps(), PV_ACC(h, 3) = _mm256_setzero_ps()
#define PV_LOAD(h)                                                                                 \
    do {                                                                                           \
        const float *oh = o + (h)*os + i0;                                                         \
        PV_ACC(h, 0) = _mm256_loadu_ps(oh);                                                        \
        if (NV == 4) {                                                                             \
            PV_ACC(h, 1) = _mm256_loadu_ps(oh + 8);                                                \
            PV_ACC(h, 2) = _mm256_loadu_ps(oh + 16);                                               \
            PV_ACC(h, 3) = _mm256_loadu_ps(oh + 24);                                               \
        }                                                                                          \
    } while (0)
#define PV_FMA(h)                                                                                  \
    do {                                                                                           \
        const __m256 wv = _mm256_broadcast_ss(w + (h)*ws + p);                                     \
        PV_ACC(h, 0) = _mm256_fmadd_ps(wv, v0, PV_ACC(h, 0));                                      \
        if (NV == 4) {                                                                             \
            PV_ACC(h, 1) = _mm256_fmadd_ps(wv, v1, PV_ACC(h, 1));                                  \
            PV_ACC(h, 2) = _mm256_fmadd_ps(wv, v2, PV_ACC(h, 2));                                  \
            PV_ACC(h, 3) = _mm256_fmadd_ps(wv, v3, PV_ACC(h, 3));                                  \
        }                                                                                          \
    } while (0)
#define PV_STORE(h)                                                                                \
    do {                                                                                           \
        float *oh = o + (h)*os + i0;                                                               \
        _mm256_storeu_ps(oh, PV_ACC(h, 0));                                                        \
        if (NV == 4) {                                                                             \
            _mm256_storeu_ps(oh + 8, PV_ACC(h, 1));                                                \
            _mm256_storeu_ps(oh + 16, PV_ACC(h, 2));                                               \
            _mm256_storeu_ps(oh + 24, PV_ACC(h, 3));                                               \
        }                                                                                          \
    } while (0)

AVX2_TARGET static inline __attribute__((always_inline)) void
pv_block(float *o, int64_t os, const float *w, int64_t ws, const void *v, int p0, int p1, int HD,
         int i0, const int NH, const int NV, const bool F16) {
    PV_DECL(0);
    PV_DECL(1);
    PV_DECL(2);
    if (p0 > 0) {
        PV_LOAD(0);
        if (NH > 1) PV_LOAD(1);
        if (NH > 2) PV_LOAD(2);
    }
    for (int p = p0; p < p1; p++) {
        const int64_t r = (int64_t)p * HD + i0;
        const __m256 v0 = kv_load8(v, r, F16);
        const __m256 v1 = NV == 4 ? kv_load8(v, r + 8, F16) : v0;
        const __m256 v2 = NV == 4 ? kv_load8(v, r + 16, F16) : v0;
        const __m256 v3 = NV == 4 ? kv_load8(v, r + 24, F16) : v0;
        PV_FMA(0);
        if (NH > 1) PV_FMA(1);
        if (NH > 2) PV_FMA(2);
    }
    PV_STORE(0);
    if (NH > 1) PV_STORE(1);
    if (NH > 2) PV_STORE(2);
}

// Blocks of 64 positions (16 KiB of values at HD = 64), each used for every 32-output slice
// while it is in L1.
AVX2_TARGET static inline __attribute__((always_inline)) void
pv_heads(float *o, int64_t os, const float *w, int64_t ws, const void *v, int n, int HD,
         const int NH, const bool F16) {
    const int i32 = HD / 32 * 32, i8 = HD / 8 * 8;
    for (int p0 = 0; p0 < n; p0 += 64) {
        const int p1 = p0 + 64 < n ? p0 + 64 : n;
        for (int i0 = 0; i0 < i32; i0 += 32)
            pv_block(o, os, w, ws, v, p0, p1, HD, i0, NH, 4, F16);
        for (int i0 = i32; i0 < i8; i0 += 8)
            pv_block(o, os, w, ws, v, p0, p1, HD, i0, NH, 1, F16);
    }
    for (int h = 0; h < NH; h++)
        for (int i = i8; i < HD; i++) {
            float s = 0.0f;
            for (int p = 0; p < n; p++) {
                const int64_t e = (int64_t)p * HD + i;
                const float ve =
                    F16 ? fp16_to_f32(((const uint16_t *)v)[e]) : ((const float *)v)[e];
                s = fmaf(w[h * ws + p], ve, s);
            }
            o[h * os + i] = s;
        }
}

AVX2_TARGET void ops_attn_pv_avx2(float *o, int64_t os, const float *w, int64_t ws, int nh,
                                  const void *v, DType v_type, int n, int HD) {
    const bool h = v_type == DTYPE_F16;
    switch (nh * 2 + h) {
    case 2: pv_heads(o, os, w, ws, v, n, HD, 1, false); break;
    case 3: pv_heads(o, os, w, ws, v, n, HD, 1, true); break;
    case 4: pv_heads(o, os, w, ws, v, n, HD, 2, false); break;
    case 5: pv_heads(o, os, w, ws, v, n, HD, 2, true); break;
    case 6: pv_heads(o, os, w, ws, v, n, HD, 3, false); break;
    default: pv_heads(o, os, w, ws, v, n, HD, 3, true); break;
    }
}

#endif
