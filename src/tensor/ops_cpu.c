/*
 * ops_cpu.c - optimized CPU kernels: OpenMP over independent outputs, SIMD inner loops
 * picked at run time (ops_avx512.c, ops_avx2.c, or the portable loops here), OpenBLAS
 * sgemm for prefill-sized matrix products.
 *
 * Linear layers (y = x W^T, the bulk of the work):
 *   T < OPS_GEMM_MIN_T  (decode, a few sequences): blocks of 16 weight rows are split over
 *                        threads; each block is applied to all T tokens while it is in
 *                        cache. Memory-bound: 16-bit weights halve the bytes read.
 *   OPS_GEMM_MIN_T <= T < OPS_TILE_MAX_T (x86): row blocks that stay in L2 per thread,
 *                        3x4 register tiles (no packing of the whole weight per call).
 *   T >= OPS_TILE_MAX_T (prefill): OpenBLAS sgemm in tiles (gemm_f32). 16-bit weights
 *                        are widened into the caller's scratch first, in blocks of >= 2M
 *                        floats (the widening costs one pass over the weights, the product
 *                        T passes).
 */
#include "tensor/ops.h"
#include "tensor/vmath.h"

#include <math.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/common.h"
#include "tensor/gemm.h"

#define OPS_GEMM_MIN_T 8  // from this many tokens on, sgemm beats re-reading weights
#define OPS_ROW_BLOCK  16 // weight rows per OpenMP work item in the GEMV path
#define OPS_TILE_MAX_T 64 // below this many tokens, register tiles beat sgemm (x86)
// 16-bit weights are widened into scratch in blocks of at least this many floats (8 MiB)
// and at least 256 rows, so that a layer's matrices go to sgemm in one call
#define OPS_WIDEN_FLOATS (1 << 21)
// Below this many multiply-adds (or elements) a kernel runs on one thread: waking the
// team costs more than the work (stories260K's 64-wide layers), and on a loaded machine
// a spinning team is much slower still.
#define OPS_PAR_MIN_WORK (1 << 16)

OpsIsa ops_isa_detect(void) {
#if defined(__x86_64__)
    // F16C is not a feature name every compiler's builtin knows (clang 14); every CPU with
    // AVX2 + FMA (Haswell, Zen and later) has it, and AVX-512F implies it
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma")) return OPS_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return OPS_ISA_AVX2;
#endif
    return OPS_ISA_PORTABLE;
}

const char *ops_isa_name(OpsIsa isa) {
    static const char *names[] = {"portable", "avx2", "avx512"};
    return isa >= 0 && isa < OPS_ISA_COUNT ? names[isa] : "?";
}

// Rows of a K-column weight widened per sgemm call.
static int widen_rows_per_block(int K) { return MAX(256, OPS_WIDEN_FLOATS / MAX(K, 1)); }

size_t ops_matmul_scratch_floats(int K) { return (size_t)widen_rows_per_block(K) * (size_t)K; }

static inline int thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* ---- linear layers ---------------------------------------------------------------- */

// Portable dot of x with one weight row: 8 interleaved partial sums (vectorizable), then
// a fixed-order reduction and a scalar tail.
static float dot_row_portable(const float *x, const void *w, DType t, int64_t off, int K) {
    float acc[8] = {0};
    int k = 0;
    if (t == DTYPE_F32) {
        const float *wr = (const float *)w + off;
        for (; k + 8 <= K; k += 8)
            for (int j = 0; j < 8; j++)
                acc[j] += x[k + j] * wr[k + j];
    } else {
        for (; k + 8 <= K; k += 8)
            for (int j = 0; j < 8; j++)
                acc[j] += x[k + j] * ops_load(w, t, off + k + j);
    }
    float s = ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
    for (; k < K; k++)
        s += x[k] * ops_load(w, t, off + k);
    return s;
}

static const void *row_ptr(const void *w, DType t, int64_t row, int K) {
    return (const unsigned char *)w + (size_t)row * (size_t)K * dtype_size(t);
}

// y[0..n) = W rows [0, n) . x, through the chosen SIMD path.
static void gemv_rows(float *y, const float *x, const void *w, DType wt, int K, int n, OpsIsa isa) {
#if defined(__x86_64__)
    if (isa == OPS_ISA_AVX512) {
        ops_gemv_rows_avx512(y, x, w, wt, K, n);
        return;
    }
    if (isa == OPS_ISA_AVX2) {
        ops_gemv_rows_avx2(y, x, w, wt, K, n);
        return;
    }
#endif
    for (int r = 0; r < n; r++)
        y[r] = dot_row_portable(x, w, wt, (int64_t)r * K, K);
}

// Small T: each thread takes blocks of OPS_ROW_BLOCK weight rows and applies them to every
// token (y is (T, N): token t's outputs at y + t*N). One parallel loop covers the row blocks
// of all n_out matrices (q/k/v: one barrier, not three).
enum { OPS_MAX_OUT = 8 };
static void matmul_gemv(const OpsMatmulOut *out, int n_out, const float *x, int T, int K,
                        OpsIsa isa) {
    CHECK(n_out >= 1 && n_out <= OPS_MAX_OUT);
    int first[OPS_MAX_OUT + 1];
    int64_t work = 0;
    first[0] = 0;
    for (int i = 0; i < n_out; i++) {
        first[i + 1] = first[i] + (out[i].N + OPS_ROW_BLOCK - 1) / OPS_ROW_BLOCK;
        work += (int64_t)out[i].N * K * T;
    }
    bool par = work >= OPS_PAR_MIN_WORK;
    (void)par;
#pragma omp parallel for schedule(static) if (par)
    for (int b = 0; b < first[n_out]; b++) {
        int i = 0;
        while (b >= first[i + 1])
            i++;
        const OpsMatmulOut *o = &out[i];
        int r0 = (b - first[i]) * OPS_ROW_BLOCK, n = MIN(OPS_ROW_BLOCK, o->N - r0);
        const void *wb = row_ptr(o->w, o->wt, r0, K);
        for (int t = 0; t < T; t++)
            gemv_rows(o->y + (int64_t)t * o->N + r0, x + (int64_t)t * K, wb, o->wt, K, n, isa);
    }
}

// Middle T on x86: each thread takes blocks of weight rows small enough to stay in L2 and
// applies them to all T tokens in 3x4 register tiles (ops_gemm_rows_avx2). Against
// sgemm this skips OpenBLAS packing the whole weight matrix per call, which for a few
// dozen tokens (the classifier's wanted rows, batched decode) costs as much as the product.
static void matmul_tiles(float *y, const float *x, const void *w, DType wt, int T, int K, int N) {
#if defined(__x86_64__)
    int64_t row_bytes = (int64_t)K * (int64_t)dtype_size(wt);
    int rb = (int)MAX(3, MIN(96, (64 << 10) / MAX(row_bytes, 1)) / 3 * 3);
    int nb = (N + rb - 1) / rb;
#pragma omp parallel for schedule(static) if ((int64_t)N * K * T >= OPS_PAR_MIN_WORK)
    for (int b = 0; b < nb; b++) {
        int r0 = b * rb;
        ops_gemm_rows_avx2(y + r0, N, x, row_ptr(w, wt, r0, K), wt, K, MIN(rb, N - r0), T);
    }
#else
    (void)y, (void)x, (void)w, (void)wt, (void)T, (void)K, (void)N;
    CHECK_MSG(false, "matmul_tiles: x86-64 only");
#endif
}

static void widen_rows(float *dst, const void *src, DType t, int64_t n, OpsIsa isa) {
#if defined(__x86_64__)
    if (isa != OPS_ISA_PORTABLE) {
        ops_widen_avx2(dst, src, t, n);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++)
        dst[i] = ops_load(src, t, i);
}

// Large T: sgemm y (T, N) = x (T, K) W^T, widening 16-bit weights in row blocks first.
static void matmul_gemm(float *y, const float *x, const void *w, DType wt, int T, int K, int N,
                        float *scratch, OpsIsa isa) {
    if (wt == DTYPE_F32) {
        gemm_f32(false, true, T, N, K, 1.0f, x, K, (const float *)w, K, 0.0f, y, N);
        return;
    }
    CHECK_MSG(scratch, "ops_matmul: 16-bit weights with T=%d need scratch", T);
    int rows = widen_rows_per_block(K);
    for (int r0 = 0; r0 < N; r0 += rows) {
        int n = MIN(rows, N - r0);
#pragma omp parallel for schedule(static) if ((int64_t)n * K >= OPS_PAR_MIN_WORK)
        for (int r = 0; r < n; r++)
            widen_rows(scratch + (int64_t)r * K, row_ptr(w, wt, r0 + r, K), wt, K, isa);
        gemm_f32(false, true, T, n, K, 1.0f, x, K, scratch, K, 0.0f, y + r0, N);
    }
}

void ops_matmul_isa(float *y, const float *x, const void *w, DType wt, int T, int K, int N,
                    float *scratch, OpsIsa isa) {
    if (T >= OPS_GEMM_MIN_T && T < OPS_TILE_MAX_T && isa != OPS_ISA_PORTABLE)
        matmul_tiles(y, x, w, wt, T, K, N);
    else if (T >= OPS_GEMM_MIN_T)
        matmul_gemm(y, x, w, wt, T, K, N, scratch, isa);
    else
        matmul_gemv(&(OpsMatmulOut){y, w, wt, N}, 1, x, T, K, isa);
}

void ops_matmul(float *y, const float *x, const void *w, DType wt, int T, int K, int N,
                float *scratch) {
    ops_matmul_isa(y, x, w, wt, T, K, N, scratch, ops_isa_detect());
}

void ops_matmul_multi(const OpsMatmulOut *out, int n_out, const float *x, int T, int K,
                      float *scratch) {
    OpsIsa isa = ops_isa_detect();
    if (T >= OPS_GEMM_MIN_T) { // big enough to fill the threads one matrix at a time
        for (int i = 0; i < n_out; i++)
            ops_matmul_isa(out[i].y, x, out[i].w, out[i].wt, T, K, out[i].N, scratch, isa);
        return;
    }
    matmul_gemv(out, n_out, x, T, K, isa);
}

/* ---- elementwise and row ops ------------------------------------------------------ */

void ops_add_bias(float *y, const void *b, DType bt, int T, int N) {
#pragma omp parallel for schedule(static) if ((int64_t)T * N >= OPS_PAR_MIN_WORK)
    for (int t = 0; t < T; t++)
        for (int n = 0; n < N; n++)
            y[(int64_t)t * N + n] += ops_load(b, bt, n);
}

void ops_rmsnorm(float *out, const float *x, const void *w, DType wt, int T, int D, float eps) {
    // rows are independent, each with a fixed reduction order
    const OpsIsa isa = ops_isa_detect();
#pragma omp parallel for schedule(static) if ((int64_t)T * D >= OPS_PAR_MIN_WORK / 4)
    for (int t = 0; t < T; t++) {
#if defined(__x86_64__)
        if (isa != OPS_ISA_PORTABLE) {
            ops_rmsnorm_row_avx2(out + (int64_t)t * D, x + (int64_t)t * D, w, wt, D, eps);
            continue;
        }
#endif
        (void)isa;
        ops_rmsnorm_ref(out + (int64_t)t * D, x + (int64_t)t * D, w, wt, 1, D, eps);
    }
}

void ops_embed(float *x, const void *emb, DType et, const int32_t *tokens, int T, int D) {
    for (int t = 0; t < T; t++) {
        const void *row = row_ptr(emb, et, tokens[t], D);
        if (et == DTYPE_F32)
            memcpy(x + (int64_t)t * D, row, (size_t)D * sizeof(float));
        else
            widen_rows(x + (int64_t)t * D, row, et, D, ops_isa_detect());
    }
}

void ops_rope(float *x, int T, int nh, int HD, const int32_t *pos, const float *cos_tab,
              const float *sin_tab) {
#pragma omp parallel for schedule(static) if ((int64_t)T * nh * HD >= OPS_PAR_MIN_WORK / 4)
    for (int t = 0; t < T; t++)
        ops_rope_ref(x + (int64_t)t * nh * HD, 1, nh, HD, pos + t, cos_tab, sin_tab);
}

// Elementwise, so the chunking (and the thread count) does not change any bit.
void ops_swiglu(float *h, const float *g, const float *u, int64_t n) {
    enum { CHUNK = 1024 };
#pragma omp parallel for schedule(static) if (n >= OPS_PAR_MIN_WORK / 4)
    for (int64_t c = 0; c < n; c += CHUNK)
        vm_silu_mul(h + c, g + c, u + c, MIN((int64_t)CHUNK, n - c));
}

void ops_add(float *y, const float *x, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= OPS_PAR_MIN_WORK)
    for (int64_t i = 0; i < n; i++)
        y[i] += x[i];
}

/* ---- attention -------------------------------------------------------------------- */

void ops_kv_store(void *kh, void *vh, const float *k, const float *v, int HD, int p, DType t) {
    for (int i = 0; i < HD; i++) { // keys transposed in tiles of positions (ops_key_offset)
        const int64_t e = ops_key_offset(HD, i, p);
        if (t == DTYPE_F16)
            ((uint16_t *)kh)[e] = f32_to_fp16(k[i]);
        else
            ((float *)kh)[e] = k[i];
    }
    dtype_from_f32((char *)vh + (size_t)p * (size_t)HD * dtype_size(t), v, t, HD);
}

// Decode attention works on chunks of this many cache positions (fixed, so that the
// results do not depend on the thread count).
#define ATTN_CHUNK 256

static int attn_chunks(int np) { return (np + ATTN_CHUNK - 1) / ATTN_CHUNK; }

// Query heads scored together over one read of their KV head's keys and values (the
// SIMD kernels take 1..3).
#define ATTN_HEADS 3

size_t ops_attention_scratch_floats(int max_pos, int n_threads, int H, int HD) {
    size_t nt = (size_t)MAX(n_threads, 1);
    size_t prefill = ATTN_HEADS * (size_t)(max_pos + 1) * nt;
    // decode (T <= 2): a chunk's scores for ATTN_HEADS heads per thread, and per (token,
    // head, chunk) the chunk's max, sum and unnormalized output
    size_t decode = nt * ATTN_HEADS * ATTN_CHUNK +
                    2 * (size_t)H * (size_t)attn_chunks(max_pos + 1) * (size_t)(HD + 2);
    return MAX(prefill, decode);
}

// Element o of a cache of type t (F32 or F16) as a pointer.
static inline const void *kv_ptr(const void *e, DType t, int64_t o) {
    return (const char *)e + o * (int64_t)dtype_size(t);
}

// sc[h * ss + p] = scale * q_h . key p for nh heads, p < np, keys tiled (ops_key_offset)
// from kt, the tile of position 0, of type kt_type.
static void attn_scores(float *sc, int64_t ss, const float *q, int nh, const void *kt,
                        DType kt_type, int np, int HD, float scale, OpsIsa isa) {
#if defined(__x86_64__)
    if (isa != OPS_ISA_PORTABLE) {
        ops_attn_scores_avx2(sc, ss, q, nh, kt, kt_type, np, HD, scale);
        return;
    }
#endif
    for (int h = 0; h < nh; h++) {
        float *s = sc + h * ss;
        const float *qh = q + (int64_t)h * HD;
        for (int p = 0; p < np; p++)
            s[p] = 0.0f;
        for (int p0 = 0; p0 < np; p0 += OPS_KEY_TILE) { // tile by tile, row by row
            const int64_t tile = ops_key_offset(HD, 0, p0);
            const int n = MIN(OPS_KEY_TILE, np - p0);
            for (int i = 0; i < HD; i++)
                for (int p = 0; p < n; p++)
                    s[p0 + p] +=
                        qh[i] * ops_kv_get(kt, kt_type, tile + (int64_t)i * OPS_KEY_TILE + p);
        }
        for (int p = 0; p < np; p++)
            s[p] *= scale;
    }
}

// o[h * os + i] = sum_p w[h * ws + p] * value p, for nh heads; values of type v_type.
static void attn_pv(float *o, int64_t os, const float *w, int64_t ws, int nh, const void *v,
                    DType v_type, int np, int HD, OpsIsa isa) {
#if defined(__x86_64__)
    if (isa != OPS_ISA_PORTABLE) {
        ops_attn_pv_avx2(o, os, w, ws, nh, v, v_type, np, HD);
        return;
    }
#endif
    for (int h = 0; h < nh; h++) {
        float *oh = o + h * os;
        memset(oh, 0, (size_t)HD * sizeof *oh);
        for (int p = 0; p < np; p++)
            for (int i = 0; i < HD; i++)
                oh[i] += w[h * ws + p] * ops_kv_get(v, v_type, (int64_t)p * HD + i);
    }
}

// Work item i = (token i / KVH, KV head i % KVH): softmax(q K^T * scale) V over positions
// 0..pos for every query head of the KV head, ATTN_HEADS at a time. sc: ATTN_HEADS * (pos+1).
static void attend_item(float *out, const float *q, const OpsAttnArgs *a, int i, float *sc,
                        OpsIsa isa) {
    const int t = i / a->KVH, kvh = i % a->KVH, HD = a->HD, group = a->H / a->KVH;
    const int np = a->pos[t] + 1;
    const DType et = a->kv_dtype;
    const int64_t kv_off = (int64_t)kvh * a->kv_head_stride;
    const void *kb = kv_ptr(a->k_seq[t], et, kv_off), *vb = kv_ptr(a->v_seq[t], et, kv_off);
    for (int h0 = kvh * group; h0 < (kvh + 1) * group; h0 += ATTN_HEADS) {
        const int nh = MIN(ATTN_HEADS, (kvh + 1) * group - h0);
        const int64_t qo = ((int64_t)t * a->H + h0) * HD;
        attn_scores(sc, np, q + qo, nh, kb, et, np, HD, a->scale, isa);
        for (int h = 0; h < nh; h++) {
            float *s = sc + (int64_t)h * np, mx = -INFINITY, sum = 0.0f;
            if (isa != OPS_ISA_PORTABLE) {
                mx = vm_max_f32(s, np);
                sum = vm_expf_shift_sum(s, np, mx);
            } else {
                for (int p = 0; p < np; p++)
                    mx = s[p] > mx ? s[p] : mx;
                for (int p = 0; p < np; p++) {
                    s[p] = expf(s[p] - mx);
                    sum += s[p];
                }
            }
            const float inv = 1.0f / sum;
            for (int p = 0; p < np; p++)
                s[p] *= inv;
        }
        attn_pv(out + qo, HD, sc, np, nh, vb, et, np, HD, isa);
    }
}

// Decode (T <= 2 query tokens, the SIMD path): work items are (token, KV head, chunk of
// ATTN_CHUNK positions). An item runs every query head of its KV head over its chunk, up to
// ATTN_HEADS heads per pass over the chunk's keys and values, which come from memory as one
// sequential run of key tiles and one of value rows; it leaves per head the chunk's max
// score m, sum of exp(s - m) and unnormalized output o = sum_p exp(s_p - m) v_p. The chunks
// of a head are then merged in chunk order (flash-decoding):
// out = sum_c e^(m_c - M) o_c / sum_c e^(m_c - M) l_c, M = max_c m_c. Items are spread over
// the threads dynamically (the last chunk of a head is shorter; a 9-head, 3-KV-head model
// gives 3 items per 256 positions), and every number depends only on the chunking, not on
// the thread count.
static void attention_decode(float *out, const float *q, const OpsAttnArgs *a, float *scratch,
                             OpsIsa isa) {
    const int HD = a->HD, H = a->H, KVH = a->KVH, group = H / KVH, nt = MAX(a->n_threads, 1);
    int max_pos = 0;
    for (int t = 0; t < a->T; t++)
        max_pos = MAX(max_pos, a->pos[t]);
    const int nc_max = attn_chunks(max_pos + 1);
    float *part = scratch + (size_t)nt * ATTN_HEADS * ATTN_CHUNK; // (T, H, nc_max, HD + 2)
    const int64_t head_stride = (int64_t)nc_max * (HD + 2);       // between heads in part
    const int n_items = a->T * KVH * nc_max;
    int64_t work = (int64_t)a->T * H * HD * (max_pos + 1);
    (void)work; // read by the pragma only
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1) if (work >= OPS_PAR_MIN_WORK / 2)
    for (int it = 0; it < n_items; it++) {
        const int t = it / (KVH * nc_max), kvh = it / nc_max % KVH, c = it % nc_max;
        const int np = a->pos[t] + 1, p0 = c * ATTN_CHUNK;
        if (p0 >= np) continue; // this token's cache is shorter
        const int n = MIN(ATTN_CHUNK, np - p0);
        const int64_t kv_off = (int64_t)kvh * a->kv_head_stride;
        const DType et = a->kv_dtype;
        const void *kt = kv_ptr(a->k_seq[t], et, kv_off + ops_key_offset(HD, 0, p0));
        const void *v = kv_ptr(a->v_seq[t], et, kv_off + (int64_t)p0 * HD);
        float *sc = scratch + (size_t)thread_id() * ATTN_HEADS * ATTN_CHUNK;
        for (int h0 = kvh * group; h0 < (kvh + 1) * group; h0 += ATTN_HEADS) {
            const int nh = MIN(ATTN_HEADS, (kvh + 1) * group - h0);
            float *r = part + ((size_t)t * H + h0) * (size_t)head_stride + (size_t)c * (HD + 2);
            attn_scores(sc, ATTN_CHUNK, q + ((int64_t)t * H + h0) * HD, nh, kt, et, n, HD, a->scale,
                        isa);
            for (int h = 0; h < nh; h++) {
                float *s = sc + h * ATTN_CHUNK, *rh = r + h * head_stride;
                rh[0] = vm_max_f32(s, n);
                rh[1] = vm_expf_shift_sum(s, n, rh[0]);
            }
            attn_pv(r + 2, head_stride, sc, ATTN_CHUNK, nh, v, et, n, HD, isa);
        }
    }
    for (int t = 0; t < a->T; t++) { // merge, chunk by chunk in order
        const int nc = attn_chunks(a->pos[t] + 1);
        for (int h = 0; h < H; h++) {
            const float *r0 = part + ((size_t)t * H + h) * (size_t)head_stride;
            float *o = out + ((int64_t)t * H + h) * HD;
            float M = -INFINITY, L = 0.0f;
            for (int c = 0; c < nc; c++)
                M = MAX(M, r0[(size_t)c * (HD + 2)]);
            for (int i = 0; i < HD; i++)
                o[i] = 0.0f;
            for (int c = 0; c < nc; c++) {
                const float *r = r0 + (size_t)c * (HD + 2);
                const float w = nc == 1 ? 1.0f : expf(r[0] - M);
                L += w * r[1];
                for (int i = 0; i < HD; i++)
                    o[i] += w * r[2 + i];
            }
            const float inv = 1.0f / L;
            for (int i = 0; i < HD; i++)
                o[i] *= inv;
        }
    }
}

void ops_attention(float *out, const float *q, const OpsAttnArgs *a, float *scratch) {
    const int HD = a->HD, n = a->T * a->KVH;
    int max_pos = 0;
    for (int t = 0; t < a->T; t++)
        max_pos = MAX(max_pos, a->pos[t]);
    const size_t per_thread = ATTN_HEADS * ((size_t)max_pos + 1);
    const OpsIsa isa = ops_isa_detect();
    const int nt = MAX(a->n_threads, 1);
    const int64_t work = (int64_t)a->T * a->H * HD * (max_pos + 1); // multiply-adds of q.k
    (void)nt, (void)work; // read by the pragmas only (unused without OpenMP)
    // Work items are (token, KV head) pairs; each output is computed by one thread alone.
    // Decode (a token or two) with SIMD: chunks of positions, see attention_decode. Otherwise
    // items are handed out dynamically, since later tokens attend over more positions.
    if (a->T <= 2 && isa != OPS_ISA_PORTABLE) {
        attention_decode(out, q, a, scratch, isa);
        return;
    }
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1) if (work >= OPS_PAR_MIN_WORK / 2)
    for (int i = 0; i < n; i++)
        attend_item(out, q, a, i, scratch + (size_t)thread_id() * per_thread, isa);
}
