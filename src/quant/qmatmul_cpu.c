/*
 * qmatmul_cpu.c - fused w4a16 GEMV (decode) and dequantize + sgemm GEMM (prefill) on the
 * GPTQ v1 layout; specification in qmatmul_ref.c, contract in qmatmul.h.
 *
 * GEMV layout facts it relies on: qweight word (r, n) holds the codes of inputs 8r..8r+7 of
 * output n, so one 256-bit load of row r gives 8 outputs' words, and the code of input 8r+j
 * is (word >> 4j) & 15. The AVX2 decode kernels (gemv_group_i16_avx2, gemv_group_avx2) take
 * (group, panel of outputs) items, walking the group's word rows in order and reading each
 * row's panel as one run; the other paths take tiles of 64 outputs down the rows.
 *
 * Groups: when g_idx is the plain k / group_size with group_size % 8 == 0 (no act-order, or
 * act-order with static groups) a group is a run of whole word rows, and each output keeps
 *   acc = sum_{k in g} x_k q_kn   and adds   s_gn (acc - z_gn xsum_g)   at the group's end.
 * Otherwise (act-order) each input's group comes from g_idx: y = sum_k (x_k s_{g(k)n}) q_kn
 * - sum_g s_gn z_gn xsum_g, with the tile's scales and zeros unpacked once into scratch.
 *
 * AVX2 trick: (word & (15 << 4j)) converted to float is q * 2^4j exactly, so x is
 * pre-scaled by 2^-4j (exact) and the shift disappears; input 7 uses word >> 28.
 */
#include "quant/qmatmul.h"

#include <cpuid.h>
#include <immintrin.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <float.h>
#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "core/dtype.h"
#include "tensor/gemm.h"

// F16C through cpuid leaf 1 (ecx bit 29): clang 14's __builtin_cpu_supports has no "f16c".
static int cpu_has_f16c(void) {
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
}

// Asked once: CPUID traps to the hypervisor in a virtual machine (4.4 us per call on the
// 2-core VM of bench/RESULTS.md), and the decode path asks ~6 times per layer, which cost
// ~0.8 ms of a ~10 ms SmolLM2 token. Concurrent first calls store the same value.
QmatIsa qmatmul_isa_detect(void) {
    static _Atomic int cached = -1;
    int v = atomic_load_explicit(&cached, memory_order_relaxed);
    if (v < 0) {
        v = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c()
                ? QMAT_ISA_AVX2
                : QMAT_ISA_PORTABLE;
        if (v == QMAT_ISA_AVX2 && __builtin_cpu_supports("avx512f") &&
            __builtin_cpu_supports("avx512bw"))
            v = QMAT_ISA_AVX512;
        atomic_store_explicit(&cached, v, memory_order_relaxed);
    }
    return (QmatIsa)v;
}

Status qmatmul_check(const GptqPacked *w) {
    if (w->bits != 4)
        return fail(STATUS_ERR_UNSUPPORTED,
                    "qmatmul: only 4-bit GPTQ weights are supported, "
                    "got %d bits",
                    w->bits);
    return gptq_packed_validate(w, "qmatmul weight");
}

// Columns of W dequantized per sgemm call: about 4 Mi floats of scratch, a multiple of 64.
static int64_t gemm_block_cols(const GptqPacked *w) {
    int64_t nb = ((int64_t)1 << 20) / w->K;
    nb = MAX((int64_t)64, nb / 64 * 64);
    return MIN(nb, w->N);
}

size_t qmatmul_scratch_floats(const GptqPacked *w) { return (size_t)(gemm_block_cols(w) * w->K); }

/* ---- GEMV set-up: scaled x, group sums, group layout --------------------------------- */

typedef struct {
    const GptqPacked *w;
    int64_t R;          // word rows: ceil(K / 8)
    int64_t zc;         // qzeros words per group row
    int64_t rows_per_g; // word rows per group when contiguous, else 0
    const float *xp;    // (R*8) x, zero-padded; AVX2 path: pre-scaled by 2^-4(k%8) for k%8 < 7
    const float *xg;    // (G) sum of x over each group's inputs
    // AVX2 decode kernel (contiguous groups, finite x): x as int16 per group, see gemv_setup_i16
    bool i16;
    const uint32_t *xq; // (R*4) word (r, j): xi_{8r+j} | xi_{8r+j+4} << 16, j < 4
    const float *xsc;   // (G) x_k ~= xsc_g * xi_k for k in group g
    const int32_t *xqs; // (G) sum of xi over each group
    QmatIsa isa;        // the SIMD kernels' width (AVX2 or AVX512)
} GemvCtx;

#define AVX2_TARGET   __attribute__((target("avx2,fma,f16c")))
#define AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx2,fma,f16c")))

// Scratch floats of gemv_setup.
static int64_t gemv_scratch(const GptqPacked *w) { return (w->K + 7) / 8 * 12 + 3 * w->G; }

// Rows [r0, r1) of one group in file order (the common case of gemv_setup_i16), AVX2.
// cvtps rounds to nearest even, as nearbyintf does in the default rounding mode.
AVX2_TARGET static int32_t quant_rows_avx2(uint32_t *xq, const float *x, int64_t r0, int64_t r1,
                                           float inv) {
    const __m256 vinv = _mm256_set1_ps(inv);
    __m256i sum = _mm256_setzero_si256();
    for (int64_t r = r0; r < r1; r++) {
        const __m256i q = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + r * 8), vinv));
        sum = _mm256_add_epi32(sum, q);
        const __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
        _mm_storeu_si128(
            (__m128i *)(xq + r * 4),
            _mm_or_si128(_mm_and_si128(lo, _mm_set1_epi32(0xFFFF)), _mm_slli_epi32(hi, 16)));
    }
    int32_t l[8];
    _mm256_storeu_si256((__m256i *)l, sum);
    return l[0] + l[1] + l[2] + l[3] + l[4] + l[5] + l[6] + l[7];
}

// max |x[i]| over [0, n), AVX2; *finite = false when x has a NaN or an infinity (the lanes'
// max skips NaN, so NaN is detected on its own). fmaxf in the scalar loop was a libm call per
// input, 17 % of a 192 x 576 GEMV.
AVX2_TARGET static float absmax_avx2(const float *x, int64_t n, bool *finite) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i));
        m = _mm256_max_ps(m, v);
        bad = _mm256_or_ps(bad, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    }
    float l[8], amax = 0.0f;
    _mm256_storeu_ps(l, m);
    for (int j = 0; j < 8; j++)
        amax = l[j] > amax ? l[j] : amax;
    bool ok = _mm256_movemask_ps(bad) == 0;
    for (; i < n; i++) {
        const float v = fabsf(x[i]);
        ok &= v == v;
        amax = v > amax ? v : amax;
    }
    *finite = ok && amax <= FLT_MAX;
    return amax;
}

// The activations of the AVX2 decode kernel (c set up, contiguous groups): per group, x
// (gathered into packed order) scaled to int16 by its absolute maximum, xi = rint(x * 32767 /
// max|x|), so that group g's part of the product is computed exactly in int32,
//   t_gn = xsc_g (sum_k xi_k q_kn - z_gn sum_k xi_k),
// with vpmaddwd taking two inputs per instruction. The only rounding is x's: at most
// max|x_g| / 65534 per input, 1.5e-5 of the group's largest activation, where fp16
// activations (the "a16" of w4a16 on GPUs) round each input to 4.9e-4 of itself. Returns
// false (float kernel then) when x has a NaN or infinity. scr: R*4 + 2G floats.
static bool gemv_setup_i16(GemvCtx *c, float *scr, const float *x) {
    const GptqPacked *w = c->w;
    const int64_t K = w->K, rpg = c->rows_per_g;
    uint32_t *xq = (uint32_t *)scr;
    float *xsc = scr + c->R * 4;
    int32_t *xqs = (int32_t *)(xsc + w->G);
    c->i16 = false;
    if (rpg * 8 > 2048) return false; // int32 sums: 2048 * 32767 * 16 < 2^31
    for (int64_t g = 0; g < w->G; g++) {
        const int64_t k0 = g * rpg * 8, k1 = MIN(K, k0 + rpg * 8);
        float amax = 0.0f;
        bool finite = true;
        if (!w->k_perm) {
            amax = absmax_avx2(x + k0, k1 - k0, &finite);
        } else {
            float nf = 0.0f; // 0, or NaN when x has a NaN or infinity
            for (int64_t k = k0; k < k1; k++) {
                const float v = fabsf(x[w->k_perm[k]]);
                amax = v > amax ? v : amax; // (skips NaN: nf catches it)
                nf += v * 0.0f;
            }
            finite = nf == 0.0f && amax <= FLT_MAX;
        }
        if (!finite) return false;
        const float inv = amax > 0.0f ? 32767.0f / amax : 0.0f;
        xsc[g] = amax / 32767.0f;
        int32_t sum = 0;
        int16_t xi[8];
        int64_t r = g * rpg;
        const int64_t r1 = MIN((g + 1) * rpg, c->R);
        if (!w->k_perm) { // whole rows of 8 inputs straight from x
            const int64_t rf = MIN(r1, K / 8);
            sum += quant_rows_avx2(xq, x, r, rf, inv);
            r = MAX(r, rf);
        }
        for (; r < r1; r++) {
            for (int j = 0; j < 8; j++) {
                const int64_t k = r * 8 + j;
                const float v = k < K ? x[w->k_perm ? w->k_perm[k] : k] * inv : 0.0f;
                xi[j] = (int16_t)fmaxf(-32767.0f, fminf(32767.0f, nearbyintf(v)));
                sum += xi[j];
            }
            for (int j = 0; j < 4; j++)
                xq[r * 4 + j] = (uint32_t)(uint16_t)xi[j] | (uint32_t)(uint16_t)xi[j + 4] << 16;
        }
        xqs[g] = sum;
    }
    c->xq = xq;
    c->xsc = xsc;
    c->xqs = xqs;
    c->i16 = true;
    return true;
}

// Decides the group layout and fills the kernel's view of x (scratch: gemv_scratch floats):
// for the AVX2 kernels (avx2 != 0), the int16 activations when the groups are contiguous
// (gemv_setup_i16), else xp pre-scaled by 2^-4(k%8) and xg; for the portable ones xp and xg.
// No division per input: the contiguity test walks the groups, and the common case (file
// order, contiguous groups) fills xp and the group sums in one pass that vectorizes.
// The contiguous group size (gptq_packed_contiguous_group), or 0: recorded at load by
// gptq_packed_sort_groups, else walked here.
static int64_t contiguous_group_size(const GptqPacked *w) {
    if (w->contig_group) return MAX(w->contig_group, (int64_t)0);
    return gptq_packed_contiguous_group(w);
}

static void gemv_setup(GemvCtx *c, float *scr, const float *x, const GptqPacked *w, int avx2) {
    const int64_t K = w->K;
    c->w = w;
    c->R = (K + 7) / 8;
    c->zc = gptq_qzeros_cols(w->N, 4);
    float *xp = scr, *xg = scr + c->R * 8;
    static const float pow2[8] = {1.0f,     0x1p-4f,  0x1p-8f,  0x1p-12f,
                                  0x1p-16f, 0x1p-20f, 0x1p-24f, 1.0f};
    const int64_t gsz = contiguous_group_size(w);
    const bool contiguous = gsz > 0;
    c->rows_per_g = gsz / 8;
    c->xp = xp;
    c->xg = xg;
    c->i16 = false;
    if (avx2 && contiguous && gemv_setup_i16(c, scr + c->R * 8 + w->G, x)) return;
    if (contiguous && !w->k_perm) {
        for (int64_t g = 0; g < w->G; g++) {
            const int64_t k0 = g * gsz, k1 = MIN(K, k0 + gsz);
            float s = 0.0f;
            for (int64_t k = k0; k < k1; k++)
                s += x[k];
            xg[g] = s;
        }
        const int64_t K8 = K / 8 * 8;
        for (int64_t r = 0; r < K8 / 8; r++)
            for (int j = 0; j < 8; j++)
                xp[r * 8 + j] = avx2 ? x[r * 8 + j] * pow2[j] : x[r * 8 + j];
        for (int64_t k = K8; k < c->R * 8; k++)
            xp[k] = k < K ? (avx2 ? x[k] * pow2[k % 8] : x[k]) : 0.0f;
        return;
    }
    for (int64_t k = 0; k < c->R * 8; k++) { // x in packed row order (gathered when sorted)
        const float v = k < K ? x[w->k_perm ? w->k_perm[k] : k] : 0.0f;
        xp[k] = avx2 ? v * pow2[k % 8] : v;
    }
    memset(xg, 0, (size_t)w->G * sizeof(float));
    for (int64_t k = 0; k < K; k++)
        xg[w->g_idx[k]] += x[w->k_perm ? w->k_perm[k] : k];
}

static inline int zero_at(const GemvCtx *c, int64_t g, int64_t n) {
    return (int)((c->w->qzeros[g * c->zc + n / 8] >> (4 * (n % 8))) & 15) + 1;
}

/* ---- portable path ---------------------------------------------------------------- */

#define TILE 64 // outputs per tile

// Outputs [n0, n0+nt), contiguous groups. Inner loops over outputs vectorize.
static void gemv_tile_portable(float *y, const GemvCtx *c, int64_t n0, int64_t nt) {
    const GptqPacked *w = c->w;
    const int64_t N = w->N;
    float acc[TILE], yacc[TILE] = {0};
    for (int64_t g = 0; g < w->G; g++) {
        const int64_t r0 = g * c->rows_per_g, r1 = MIN(r0 + c->rows_per_g, c->R);
        memset(acc, 0, sizeof acc);
        for (int64_t r = r0; r < r1; r++) {
            const uint32_t *row = w->qweight + r * N + n0;
            for (int j = 0; j < 8; j++) {
                const float xv = c->xp[r * 8 + j];
#pragma omp simd
                for (int64_t i = 0; i < nt; i++)
                    acc[i] += xv * (float)(int32_t)((row[i] >> (4 * j)) & 15);
            }
        }
        for (int64_t i = 0; i < nt; i++)
            yacc[i] += fp16_to_f32(w->scales[g * N + n0 + i]) *
                       (acc[i] - (float)zero_at(c, g, n0 + i) * c->xg[g]);
    }
    memcpy(y + n0, yacc, (size_t)nt * sizeof(float));
}

// Outputs [n0, n0+nt), any g_idx: each weight dequantized (exact) and accumulated.
static void gemv_tile_generic_portable(float *y, const GemvCtx *c, int64_t n0, int64_t nt) {
    const GptqPacked *w = c->w;
    const int64_t N = w->N;
    float yacc[TILE] = {0};
    for (int64_t k = 0; k < w->K; k++) {
        const int64_t g = w->g_idx[k];
        const uint32_t *row = w->qweight + (k / 8) * N + n0;
        const float xv = c->xp[k];
        for (int64_t i = 0; i < nt; i++) {
            const int q = (int)((row[i] >> (4 * (k % 8))) & 15);
            yacc[i] +=
                xv * (fp16_to_f32(w->scales[g * N + n0 + i]) * (float)(q - zero_at(c, g, n0 + i)));
        }
    }
    memcpy(y + n0, yacc, (size_t)nt * sizeof(float));
}

/* ---- AVX2 path ---------------------------------------------------------------------- */

// The 8 zero points (stored + 1) of outputs n0..n0+7 of group g, as int32 and as floats.
AVX2_TARGET static inline __m256i zeros8_epi32(const GemvCtx *c, int64_t g, int64_t n0) {
    const __m256i sh = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
    __m256i z = _mm256_srlv_epi32(_mm256_set1_epi32((int)c->w->qzeros[g * c->zc + n0 / 8]), sh);
    return _mm256_add_epi32(_mm256_and_si256(z, _mm256_set1_epi32(15)), _mm256_set1_epi32(1));
}

AVX2_TARGET static inline __m256 zeros8_avx2(const GemvCtx *c, int64_t g, int64_t n0) {
    return _mm256_cvtepi32_ps(zeros8_epi32(c, g, n0));
}

AVX2_TARGET static inline __m256 scales8_avx2(const uint16_t *s) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)s));
}

// Group g of a weight with contiguous groups, the panel of outputs [p0, p1) (p1 - p0 a multiple
// of 8, at most GEMV_PANEL), x pre-scaled: t[n] = sum_{k in g} x_k q_kn - z_gn xsum_g. The
// decode kernel. The panel's part of each of the group's word rows is read whole, one row
// after the other: for N <= GEMV_PANEL the group is one sequential stream (36 KiB for 576
// outputs); splitting those outputs between threads instead (each thread a part of every
// row) measured slower, and so did walking 64-output tiles down the rows. Wider weights
// (lm_head: 49152 outputs) are cut into 8 KiB row runs. The accumulators live in L1 (acc).
#define GEMV_PANEL 2048

// Software prefetch GEMV_PREFETCH bytes ahead in the item's stream of word rows: within the
// row's panel, then on into the next row's (the prefetchers alone left a decode step's small
// weights at 5-7 GB/s per thread; +5 % decode tokens/s, median of 6 A/B runs). Prefetches
// do not fault, so running past the last row is harmless.
#define GEMV_PREFETCH 1024
static inline void gemv_prefetch(const char *row, const char *next, int64_t row_bytes, int64_t at) {
    const int64_t b = at + GEMV_PREFETCH;
    const char *p = b < row_bytes ? row + b : next + (b - row_bytes);
    _mm_prefetch(p, _MM_HINT_T0);
    _mm_prefetch(p + 64, _MM_HINT_T0);
}
AVX2_TARGET static void gemv_group_avx2(float *t, const GemvCtx *c, int64_t g, int64_t p0,
                                        int64_t p1) {
    const GptqPacked *w = c->w;
    const int64_t N = w->N;
    float acc[GEMV_PANEL] __attribute__((aligned(32)));
    const int64_t r0 = g * c->rows_per_g, r1 = MIN(r0 + c->rows_per_g, c->R);
    const int64_t nv = (p1 - p0) / 8; // p1 - p0 <= GEMV_PANEL, a multiple of 8
    memset(acc, 0, (size_t)nv * 8 * sizeof(float));
    for (int64_t r = r0; r < r1; r++) {
        const __m256i *row = (const __m256i *)(w->qweight + r * N + p0);
        const char *next = (const char *)(w->qweight + (r + 1) * N + p0);
        const float *xr = c->xp + r * 8;
        __m256 xb[8];
        for (int j = 0; j < 8; j++)
            xb[j] = _mm256_broadcast_ss(xr + j);
        int64_t v = 0;
        for (; v + 4 <= nv; v += 4) {
            __m256 a0 = _mm256_load_ps(acc + 8 * v), a1 = _mm256_load_ps(acc + 8 * v + 8);
            __m256 a2 = _mm256_load_ps(acc + 8 * v + 16);
            __m256 a3 = _mm256_load_ps(acc + 8 * v + 24);
            const __m256i w0 = _mm256_loadu_si256(row + v), w1 = _mm256_loadu_si256(row + v + 1);
            const __m256i w2 = _mm256_loadu_si256(row + v + 2);
            const __m256i w3 = _mm256_loadu_si256(row + v + 3);
            gemv_prefetch((const char *)row, next, nv * 32, v * 32);
            _Pragma("GCC unroll 8") for (int j = 0; j < 7; j++) {
                const __m256i m = _mm256_set1_epi32(15 << (4 * j));
                a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(w0, m)), xb[j], a0);
                a1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(w1, m)), xb[j], a1);
                a2 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(w2, m)), xb[j], a2);
                a3 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(w3, m)), xb[j], a3);
            }
            a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(w0, 28)), xb[7], a0);
            a1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(w1, 28)), xb[7], a1);
            a2 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(w2, 28)), xb[7], a2);
            a3 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(w3, 28)), xb[7], a3);
            _mm256_store_ps(acc + 8 * v, a0);
            _mm256_store_ps(acc + 8 * v + 8, a1);
            _mm256_store_ps(acc + 8 * v + 16, a2);
            _mm256_store_ps(acc + 8 * v + 24, a3);
        }
        for (; v < nv; v++) {
            __m256 a0 = _mm256_load_ps(acc + 8 * v);
            const __m256i w0 = _mm256_loadu_si256(row + v);
            _Pragma("GCC unroll 8") for (int j = 0; j < 7; j++) {
                const __m256i m = _mm256_set1_epi32(15 << (4 * j));
                a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(w0, m)), xb[j], a0);
            }
            a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(w0, 28)), xb[7], a0);
            _mm256_store_ps(acc + 8 * v, a0);
        }
    }
    const __m256 xs = _mm256_set1_ps(c->xg[g]);
    for (int64_t v2 = 0; v2 < nv; v2++)
        _mm256_storeu_ps(t + p0 + 8 * v2, _mm256_fnmadd_ps(zeros8_avx2(c, g, p0 + 8 * v2), xs,
                                                           _mm256_load_ps(acc + 8 * v2)));
}

// The end of an int16 group item: t[n] = xsc_g (acc_n - z_gn sum_k xi_k) for the panel's nv
// vectors of 8 outputs from p0 (exact int32 until the one conversion), AVX2.
AVX2_TARGET static inline void i16_group_finish(float *t, const GemvCtx *c, int64_t g, int64_t p0,
                                                int64_t nv, const int32_t *acc) {
    const __m256 xs = _mm256_set1_ps(c->xsc[g]);
    const __m256i xq = _mm256_set1_epi32(c->xqs[g]);
    for (int64_t v = 0; v < nv; v++) {
        const int64_t n0 = p0 + 8 * v;
        const __m256i d = _mm256_sub_epi32(_mm256_load_si256((const __m256i *)(acc + 8 * v)),
                                           _mm256_mullo_epi32(zeros8_epi32(c, g, n0), xq));
        _mm256_storeu_ps(t + n0, _mm256_mul_ps(xs, _mm256_cvtepi32_ps(d)));
    }
}

// gemv_group_avx2 on the int16 activations of gemv_setup_i16: lane n of a word row holds
// the pairs (q_{8r+j}, q_{8r+j+4}) after a shift by 4j and the mask 0x000F000F, and
// vpmaddwd multiplies them with (xi_{8r+j}, xi_{8r+j+4}) and adds the pair: 15 integer
// operations per 64 weights where the float kernel needs 24 (and 8 int-to-float
// conversions among them). Exact in int32 (|acc| < 2048 * 32767 * 15).
AVX2_TARGET static void gemv_group_i16_avx2(float *t, const GemvCtx *c, int64_t g, int64_t p0,
                                            int64_t p1) {
    const GptqPacked *w = c->w;
    const int64_t N = w->N;
    int32_t acc[GEMV_PANEL] __attribute__((aligned(32)));
    const int64_t r0 = g * c->rows_per_g, r1 = MIN(r0 + c->rows_per_g, c->R);
    const int64_t nv = (p1 - p0) / 8; // p1 - p0 <= GEMV_PANEL, a multiple of 8
    const __m256i m = _mm256_set1_epi32(0x000F000F);
    memset(acc, 0, (size_t)nv * 8 * sizeof(int32_t));
    for (int64_t r = r0; r < r1; r++) {
        const __m256i *row = (const __m256i *)(w->qweight + r * N + p0);
        const char *next = (const char *)(w->qweight + (r + 1) * N + p0);
        const uint32_t *xr = c->xq + r * 4;
        const __m256i x0 = _mm256_set1_epi32((int)xr[0]), x1 = _mm256_set1_epi32((int)xr[1]);
        const __m256i x2 = _mm256_set1_epi32((int)xr[2]), x3 = _mm256_set1_epi32((int)xr[3]);
        int64_t v = 0;
#define I16_STEP(a, wv)                                                                            \
    do {                                                                                           \
        a = _mm256_add_epi32(a, _mm256_madd_epi16(_mm256_and_si256(wv, m), x0));                   \
        a = _mm256_add_epi32(                                                                      \
            a, _mm256_madd_epi16(_mm256_and_si256(_mm256_srli_epi32(wv, 4), m), x1));              \
        a = _mm256_add_epi32(                                                                      \
            a, _mm256_madd_epi16(_mm256_and_si256(_mm256_srli_epi32(wv, 8), m), x2));              \
        a = _mm256_add_epi32(                                                                      \
            a, _mm256_madd_epi16(_mm256_and_si256(_mm256_srli_epi32(wv, 12), m), x3));             \
    } while (0)
        for (; v + 4 <= nv; v += 4) {
            __m256i a0 = _mm256_load_si256((const __m256i *)(acc + 8 * v));
            __m256i a1 = _mm256_load_si256((const __m256i *)(acc + 8 * v + 8));
            __m256i a2 = _mm256_load_si256((const __m256i *)(acc + 8 * v + 16));
            __m256i a3 = _mm256_load_si256((const __m256i *)(acc + 8 * v + 24));
            const __m256i w0 = _mm256_loadu_si256(row + v), w1 = _mm256_loadu_si256(row + v + 1);
            const __m256i w2 = _mm256_loadu_si256(row + v + 2),
                          w3 = _mm256_loadu_si256(row + v + 3);
            gemv_prefetch((const char *)row, next, nv * 32, v * 32);
            I16_STEP(a0, w0);
            I16_STEP(a1, w1);
            I16_STEP(a2, w2);
            I16_STEP(a3, w3);
            _mm256_store_si256((__m256i *)(acc + 8 * v), a0);
            _mm256_store_si256((__m256i *)(acc + 8 * v + 8), a1);
            _mm256_store_si256((__m256i *)(acc + 8 * v + 16), a2);
            _mm256_store_si256((__m256i *)(acc + 8 * v + 24), a3);
        }
        for (; v < nv; v++) {
            __m256i a0 = _mm256_load_si256((const __m256i *)(acc + 8 * v));
            const __m256i w0 = _mm256_loadu_si256(row + v);
            I16_STEP(a0, w0);
            _mm256_store_si256((__m256i *)(acc + 8 * v), a0);
        }
#undef I16_STEP
    }
    i16_group_finish(t, c, g, p0, nv, acc);
}

// gemv_group_i16_avx2 with 512-bit vectors: 16 outputs per vector, two vectors (one 128-byte
// run of the row) per step; an odd last 8 outputs take the 256-bit step. The int32 sums are
// the AVX2 kernel's exactly (integer arithmetic), so are the float steps after them.
AVX512_TARGET static void gemv_group_i16_avx512(float *t, const GemvCtx *c, int64_t g, int64_t p0,
                                                int64_t p1) {
    const GptqPacked *w = c->w;
    const int64_t N = w->N;
    int32_t acc[GEMV_PANEL] __attribute__((aligned(64)));
    const int64_t r0 = g * c->rows_per_g, r1 = MIN(r0 + c->rows_per_g, c->R);
    const int64_t nv = (p1 - p0) / 8, nv16 = nv / 2;
    const __m512i m = _mm512_set1_epi32(0x000F000F);
    const __m256i m8 = _mm256_set1_epi32(0x000F000F);
    memset(acc, 0, (size_t)nv * 8 * sizeof(int32_t));
    for (int64_t r = r0; r < r1; r++) {
        const uint32_t *row = w->qweight + r * N + p0;
        const char *next = (const char *)(w->qweight + (r + 1) * N + p0);
        const uint32_t *xr = c->xq + r * 4;
        const __m512i x0 = _mm512_set1_epi32((int)xr[0]), x1 = _mm512_set1_epi32((int)xr[1]);
        const __m512i x2 = _mm512_set1_epi32((int)xr[2]), x3 = _mm512_set1_epi32((int)xr[3]);
#define I16_STEP512(a, wv)                                                                         \
    do {                                                                                           \
        a = _mm512_add_epi32(a, _mm512_madd_epi16(_mm512_and_si512(wv, m), x0));                   \
        a = _mm512_add_epi32(                                                                      \
            a, _mm512_madd_epi16(_mm512_and_si512(_mm512_srli_epi32(wv, 4), m), x1));              \
        a = _mm512_add_epi32(                                                                      \
            a, _mm512_madd_epi16(_mm512_and_si512(_mm512_srli_epi32(wv, 8), m), x2));              \
        a = _mm512_add_epi32(                                                                      \
            a, _mm512_madd_epi16(_mm512_and_si512(_mm512_srli_epi32(wv, 12), m), x3));             \
    } while (0)
        int64_t v = 0;
        for (; v + 2 <= nv16; v += 2) {
            __m512i a0 = _mm512_load_si512(acc + 16 * v), a1 = _mm512_load_si512(acc + 16 * v + 16);
            const __m512i w0 = _mm512_loadu_si512(row + 16 * v);
            const __m512i w1 = _mm512_loadu_si512(row + 16 * v + 16);
            gemv_prefetch((const char *)row, next, nv * 32, v * 64);
            I16_STEP512(a0, w0);
            I16_STEP512(a1, w1);
            _mm512_store_si512(acc + 16 * v, a0);
            _mm512_store_si512(acc + 16 * v + 16, a1);
        }
        for (; v < nv16; v++) {
            __m512i a0 = _mm512_load_si512(acc + 16 * v);
            const __m512i w0 = _mm512_loadu_si512(row + 16 * v);
            I16_STEP512(a0, w0);
            _mm512_store_si512(acc + 16 * v, a0);
        }
#undef I16_STEP512
        if (nv % 2) { // the last 8 outputs
            const int64_t o = 8 * (nv - 1);
            __m256i a = _mm256_load_si256((const __m256i *)(acc + o));
            const __m256i wv = _mm256_loadu_si256((const __m256i *)(row + o));
            for (int j = 0; j < 4; j++)
                a = _mm256_add_epi32(
                    a, _mm256_madd_epi16(_mm256_and_si256(_mm256_srli_epi32(wv, 4 * j), m8),
                                         _mm256_set1_epi32((int)xr[j])));
            _mm256_store_si256((__m256i *)(acc + o), a);
        }
    }
    i16_group_finish(t, c, g, p0, nv, acc);
}

// y[n] for outputs [n0, n1) (multiples of 8) from the groups' t (G, n8): sum over g in order
// of s_gn t_gn, one FMA per group, as every other kernel here orders it.
AVX2_TARGET static void gemv_reduce_avx2(float *y, const GemvCtx *c, const float *t, int64_t n8,
                                         int64_t n0, int64_t n1) {
    const GptqPacked *w = c->w;
    for (int64_t n = n0; n < n1; n += 8) {
        __m256 yacc = _mm256_setzero_ps();
        for (int64_t g = 0; g < w->G; g++)
            yacc = _mm256_fmadd_ps(scales8_avx2(w->scales + g * w->N + n),
                                   _mm256_loadu_ps(t + g * n8 + n), yacc);
        _mm256_storeu_ps(y + n, yacc);
    }
}

// Outputs [n0, n0 + 8*nv), nv <= 8, any g_idx. sz: (G, 2, 64) floats of scratch for the
// tile's scales and scale*zero.
AVX2_TARGET static void gemv_tile_generic_avx2(float *y, const GemvCtx *c, int64_t n0, int nv,
                                               float *sz) {
    const GptqPacked *w = c->w;
    const int64_t N = w->N, G = w->G;
    for (int64_t g = 0; g < G; g++)
        for (int v = 0; v < nv; v++) {
            __m256 s = scales8_avx2(w->scales + g * N + n0 + 8 * v);
            _mm256_storeu_ps(sz + g * 128 + 8 * v, s);
            _mm256_storeu_ps(sz + g * 128 + 64 + 8 * v,
                             _mm256_mul_ps(s, zeros8_avx2(c, g, n0 + 8 * v)));
        }
    __m256 yacc[8];
    for (int v = 0; v < 8; v++)
        yacc[v] = _mm256_setzero_ps();
    for (int64_t k = 0; k < w->K; k++) {
        const int64_t g = w->g_idx[k], j = k % 8;
        const __m256i *row = (const __m256i *)(w->qweight + (k / 8) * N + n0);
        const __m256 xb = _mm256_broadcast_ss(c->xp + k);
        const __m256i m = _mm256_set1_epi32(j == 7 ? 15 : 15 << (4 * j));
        for (int v = 0; v < nv; v++) {
            __m256i q = _mm256_loadu_si256(row + v);
            q = j == 7 ? _mm256_srli_epi32(q, 28) : _mm256_and_si256(q, m);
            __m256 xs = _mm256_mul_ps(xb, _mm256_loadu_ps(sz + g * 128 + 8 * v));
            yacc[v] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q), xs, yacc[v]);
        }
    }
    for (int64_t g = 0; g < G; g++) {
        const __m256 xs = _mm256_set1_ps(c->xg[g]);
        for (int v = 0; v < nv; v++)
            yacc[v] = _mm256_fnmadd_ps(_mm256_loadu_ps(sz + g * 128 + 64 + 8 * v), xs, yacc[v]);
    }
    for (int v = 0; v < nv; v++)
        _mm256_storeu_ps(y + n0 + 8 * v, yacc[v]);
}

// Partial sums of the grouped decode kernel: one buffer per calling thread, grown on demand
// and kept, so a decode step allocates nothing once the largest layer has run.
static _Thread_local float *part_buf;
static _Thread_local size_t part_cap;

static float *part_scratch(size_t n) {
    if (n > part_cap) {
        free(part_buf);
        part_buf = xmalloc(n * sizeof(float));
        part_cap = n;
    }
    return part_buf;
}

enum { GEMV_MAX_W = 3 };

// The AVX2 decode path for n weights (contiguous groups, set up in c) of the same x: one
// parallel region whose work items are (weight, group, panel of outputs), handed out one at
// a time (dynamic: a thread that finds its memory share slower, or that was descheduled,
// takes fewer), then, after its barrier, blocks of 64 outputs reduced over the groups. Each
// item writes its own partial sums, so each output's arithmetic is fixed by the grouping,
// not by the thread that ran it, nor by the panel width. Panels are GEMV_PANEL outputs wide
// unless that leaves fewer than two items per thread (many cores, small weights: SmolLM2's
// o_proj is 5 groups of one panel); they are then halved down to 256 outputs. (Capping the
// region's team at the item count instead made GOMP re-form teams: 10x slower at 16 threads.)
static void gemv_grouped(float *const *y, const GemvCtx *c, int n) {
    int64_t bfirst[GEMV_MAX_W + 1], ifirst[GEMV_MAX_W + 1], n8[GEMV_MAX_W], npan[GEMV_MAX_W];
    size_t off[GEMV_MAX_W + 1];
#ifdef _OPENMP
    const int nt = omp_get_max_threads();
#else
    const int nt = 1;
#endif
    int64_t pw = GEMV_PANEL;
    for (;;) {
        bfirst[0] = ifirst[0] = 0;
        off[0] = 0;
        for (int i = 0; i < n; i++) {
            n8[i] = c[i].w->N / 8 * 8;
            npan[i] = (n8[i] + pw - 1) / pw;
            bfirst[i + 1] = bfirst[i] + (n8[i] + TILE - 1) / TILE;
            ifirst[i + 1] = ifirst[i] + c[i].w->G * npan[i];
            off[i + 1] = off[i] + (size_t)(c[i].w->G * n8[i]);
        }
        if (ifirst[n] >= 2 * (int64_t)nt || pw <= 256) break;
        pw /= 2;
    }
    float *part = part_scratch(MAX(off[n], (size_t)1));
#pragma omp parallel
    {
#pragma omp for schedule(dynamic, 1)
        for (int64_t it = 0; it < ifirst[n]; it++) {
            int i = 0;
            while (it >= ifirst[i + 1])
                i++;
            const int64_t g = (it - ifirst[i]) / npan[i];
            const int64_t p0 = (it - ifirst[i]) % npan[i] * pw, p1 = MIN(p0 + pw, n8[i]);
            float *t = part + off[i] + (size_t)(g * n8[i]);
            if (c[i].i16 && c[i].isa == QMAT_ISA_AVX512)
                gemv_group_i16_avx512(t, &c[i], g, p0, p1);
            else if (c[i].i16)
                gemv_group_i16_avx2(t, &c[i], g, p0, p1);
            else
                gemv_group_avx2(t, &c[i], g, p0, p1);
        }
#pragma omp for schedule(static) nowait
        for (int64_t b = 0; b < bfirst[n]; b++) {
            int i = 0;
            while (b >= bfirst[i + 1])
                i++;
            const int64_t n0 = (b - bfirst[i]) * TILE;
            gemv_reduce_avx2(y[i], &c[i], part + off[i], n8[i], n0, MIN(n0 + TILE, n8[i]));
        }
    }
}

/* ---- GEMV driver -------------------------------------------------------------------- */

// Outputs [n8, N) (fewer than 8 left by the AVX2 kernels; none on the portable path): the
// portable tile on unscaled x (scr is reused for it); then the bias.
static void gemv_finish(float *y, const float *x, const GptqPacked *w, GemvCtx *c, float *scr,
                        int64_t n8) {
    const int64_t N = w->N;
    if (n8 < N) {
        gemv_setup(c, scr, x, w, 0);
        if (c->rows_per_g)
            gemv_tile_portable(y, c, n8, N - n8);
        else
            gemv_tile_generic_portable(y, c, n8, N - n8);
    }
    if (w->bias)
        for (int64_t n = 0; n < N; n++)
            y[n] += fp16_to_f32(w->bias[n]);
}

static void gemv_run(float *y, const float *x, const GptqPacked *w, QmatIsa isa) {
    CHECK(w->bits == 4);
    const int64_t N = w->N;
    if (isa > qmatmul_isa_detect()) isa = qmatmul_isa_detect();
    const bool simd = isa != QMAT_ISA_PORTABLE;
    // scratch for x and the group sums: on the stack when small (decode allocates nothing)
    float stack_buf[4096];
    const int64_t need = gemv_scratch(w);
    float *scr =
        need <= (int64_t)ARRAY_LEN(stack_buf) ? stack_buf : xmalloc((size_t)need * sizeof(float));
    GemvCtx c;
    gemv_setup(&c, scr, x, w, simd);
    c.isa = isa;
    // Tiles: full 64-output tiles, then 8-output tiles (AVX2), then single outputs (portable).
    const int64_t n_full = N / TILE, n8 = simd ? N / 8 * 8 : N;
    const int64_t n_tiles = n_full + (n8 - n_full * TILE + TILE - 1) / TILE;
    if (simd && c.rows_per_g) {
        gemv_grouped(&y, &c, 1);
    } else
#pragma omp parallel
    {
        float *sz = NULL;
        if (simd && !c.rows_per_g) sz = xmalloc((size_t)(w->G * 128) * sizeof(float));
#pragma omp for schedule(static)
        for (int64_t t = 0; t < n_tiles; t++) {
            const int64_t n0 = t * TILE, nt = MIN((int64_t)TILE, n8 - n0);
            if (simd) { // (contiguous groups took gemv_grouped above)
                gemv_tile_generic_avx2(y, &c, n0, (int)(nt / 8), sz);
            } else if (c.rows_per_g) {
                gemv_tile_portable(y, &c, n0, nt);
            } else {
                gemv_tile_generic_portable(y, &c, n0, nt);
            }
        }
        free(sz);
    }
    gemv_finish(y, x, w, &c, scr, n8);
    if (scr != stack_buf) free(scr);
}

// Several weights of the same x (q/k/v, gate/up) in one parallel region when every one
// takes the panel kernel: one OpenMP barrier instead of n. Same results as qmatmul_gemv.
void qmatmul_gemv_multi(float *const *y, const float *x, const GptqPacked *const *w, int n) {
    enum { MAX_W = GEMV_MAX_W, BUF = 4096 };
    float buf[MAX_W][BUF];
    GemvCtx c[MAX_W] = {0};
    const QmatIsa isa = qmatmul_isa_detect();
    bool one_region = n <= MAX_W && isa != QMAT_ISA_PORTABLE;
    for (int i = 0; i < n && one_region; i++) {
        CHECK(w[i]->bits == 4);
        one_region = gemv_scratch(w[i]) <= BUF;
        if (!one_region) break;
        // q/k/v and gate/up usually share K and the group layout: then x is set up once
        const GptqPacked *a = w[i], *b = i ? w[i - 1] : NULL;
        // (the same K and contiguous group size: the same g_idx)
        if (b && !a->k_perm && !b->k_perm && a->K == b->K && a->G == b->G && c[i - 1].rows_per_g &&
            contiguous_group_size(a) == c[i - 1].rows_per_g * 8) {
            c[i] = c[i - 1];
            c[i].w = a;
            c[i].zc = gptq_qzeros_cols(a->N, 4);
        } else {
            gemv_setup(&c[i], buf[i], x, w[i], 1);
        }
        c[i].isa = isa;
        one_region = c[i].rows_per_g;
    }
    if (!one_region) {
        for (int i = 0; i < n; i++)
            gemv_run(y[i], x, w[i], isa);
        return;
    }
    gemv_grouped(y, c, n);
    for (int i = 0; i < n; i++)
        gemv_finish(y[i], x, w[i], &c[i], buf[i], w[i]->N / 8 * 8);
}

void qmatmul_gemv(float *y, const float *x, const GptqPacked *w, QmatIsa isa) {
    gemv_run(y, x, w, isa);
}

/* ---- GEMM: dequantize blocks of W, then sgemm ---------------------------------------- */

// Row n of W (K inputs, file order, groups of gsz inputs in order, gsz % 8 == 0), AVX2: per
// word row the 8 codes by one variable shift, then s_gn * (q - z_gn) as the scalar loop
// computes it (exact in float), 8 at a time.
AVX2_TARGET static void dequant_row_avx2(float *dst, const GptqPacked *w, int64_t n, int64_t gsz) {
    const int64_t K = w->K, N = w->N, K8 = K / 8, zc = gptq_qzeros_cols(N, 4);
    const __m256i sh = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28), m15 = _mm256_set1_epi32(15);
    for (int64_t g = 0; g < w->G; g++) {
        const __m256 vs = _mm256_set1_ps(fp16_to_f32(w->scales[g * N + n]));
        const int z = (int)((w->qzeros[g * zc + n / 8] >> (4 * (n % 8))) & 15) + 1;
        const __m256i vz = _mm256_set1_epi32(z);
        const int64_t r1 = MIN((g + 1) * gsz / 8, K8);
        for (int64_t r = g * gsz / 8; r < r1; r++) {
            const __m256i q = _mm256_and_si256(
                _mm256_srlv_epi32(_mm256_set1_epi32((int)w->qweight[r * N + n]), sh), m15);
            _mm256_storeu_ps(dst + 8 * r,
                             _mm256_mul_ps(vs, _mm256_cvtepi32_ps(_mm256_sub_epi32(q, vz))));
        }
    }
    for (int64_t k = K8 * 8; k < K; k++) { // a last partial word row
        const int64_t g = k / gsz;
        const int q = (int)((w->qweight[(k / 8) * N + n] >> (4 * (k % 8))) & 15);
        const int z = (int)((w->qzeros[g * zc + n / 8] >> (4 * (n % 8))) & 15) + 1;
        dst[k] = fp16_to_f32(w->scales[g * N + n]) * (float)(q - z);
    }
}

// Wb (n1 - n0, K) = dequantized rows n0..n1 of W (exact in float).
static void dequant_block(float *Wb, const GptqPacked *w, int64_t n0, int64_t n1, QmatIsa isa) {
    const int64_t K = w->K, N = w->N, zc = gptq_qzeros_cols(N, 4);
    // the AVX2 rows write inputs in file order: contiguous groups, not sorted (k_perm)
    const int64_t gsz =
        isa != QMAT_ISA_PORTABLE && qmatmul_isa_detect() != QMAT_ISA_PORTABLE && !w->k_perm
            ? contiguous_group_size(w)
            : 0;
    if (gsz) {
#pragma omp parallel for schedule(static)
        for (int64_t n = n0; n < n1; n++)
            dequant_row_avx2(Wb + (n - n0) * K, w, n, gsz);
        return;
    }
#pragma omp parallel for schedule(static)
    for (int64_t n = n0; n < n1; n++) {
        float *dst = Wb + (n - n0) * K;
        for (int64_t k = 0; k < K; k++) {
            const int64_t g = w->g_idx[k];
            const int q = (int)((w->qweight[(k / 8) * N + n] >> (4 * (k % 8))) & 15);
            const int z = (int)((w->qzeros[g * zc + n / 8] >> (4 * (n % 8))) & 15) + 1;
            dst[w->k_perm ? w->k_perm[k] : k] = fp16_to_f32(w->scales[g * N + n]) * (float)(q - z);
        }
    }
}

void qmatmul_isa(float *y, const float *x, int64_t M, const GptqPacked *w, float *scratch,
                 QmatIsa isa) {
    const int64_t K = w->K, N = w->N;
    if (M < QMATMUL_GEMM_MIN_M || !scratch) {
        for (int64_t m = 0; m < M; m++)
            gemv_run(y + m * N, x + m * K, w, isa);
        return;
    }
    const int64_t nb = gemm_block_cols(w);
    for (int64_t n0 = 0; n0 < N; n0 += nb) {
        const int64_t n1 = MIN(n0 + nb, N);
        dequant_block(scratch, w, n0, n1, isa);
        // y[:, n0:n1] (M, n1-n0) = x (M, K) . Wb^T
        gemm_f32(false, true, (int)M, (int)(n1 - n0), (int)K, 1.0f, x, (int)K, scratch, (int)K,
                 0.0f, y + n0, (int)N);
    }
    if (w->bias)
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++)
                y[m * N + n] += fp16_to_f32(w->bias[n]);
}

void qmatmul(float *y, const float *x, int64_t M, const GptqPacked *w, float *scratch) {
    qmatmul_isa(y, x, M, w, scratch, qmatmul_isa_detect());
}
