/*
 * ops.h - the CPU kernels of the forward pass: embedding gather, RMSNorm, linear
 * layers (x W^T), RoPE (rotate_half), single-query causal attention over a KV cache,
 * SwiGLU and residual adds.
 *
 * Every op has two versions with the same contract:
 *   ops_<op>_ref  naive, single-threaded, obviously correct C (the specification);
 *   ops_<op>      optimized: OpenMP over independent output rows / heads, SIMD inner
 *                 loops chosen at run time (AVX-512, AVX2+FMA+F16C, or a portable path
 *                 that also builds on ARM). tests/test_ops.c compares the two.
 *
 * Math is float32 throughout. Weights may be F32, F16 or BF16 (DType); 16-bit weights are
 * widened to float32 element by element inside the kernels (exact), never stored widened,
 * except in ops_matmul's prefill path, which widens blocks of rows into a
 * caller-provided scratch buffer and hands it to OpenBLAS sgemm.
 *
 * Determinism: optimized kernels only split work over independent outputs (rows of y,
 * heads, sgemm tiles of a grid fixed by the shape: tensor/gemm.h), and each output's
 * reduction runs in a fixed order, so results do not depend on the thread count.
 *
 *   float y[T * N];
 *   ops_matmul(y, x, w.data, w.dtype, T, K, N, scratch);    // y = x W^T, x (T, K), W (N, K)
 *   ops_rmsnorm(xn, x, norm.data, norm.dtype, T, D, 1e-5f);
 */
#ifndef EF_OPS_H
#define EF_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"

// Which SIMD path the optimized kernels take on this machine.
typedef enum { OPS_ISA_PORTABLE, OPS_ISA_AVX2, OPS_ISA_AVX512, OPS_ISA_COUNT } OpsIsa;

// The best path the CPU supports (checked with __builtin_cpu_supports at each call; cheap).
OpsIsa ops_isa_detect(void);
const char *ops_isa_name(OpsIsa isa);

// Floats of scratch that ops_matmul needs for a weight with K columns.
size_t ops_matmul_scratch_floats(int K);

// Element i of a weight of type t, widened to float32.
static inline float ops_load(const void *w, DType t, int64_t i) {
    switch (t) {
    case DTYPE_F16: return fp16_to_f32(((const uint16_t *)w)[i]);
    case DTYPE_BF16: return bf16_to_f32(((const uint16_t *)w)[i]);
    default: return ((const float *)w)[i];
    }
}

/* ---- optimized ------------------------------------------------------------------ */

// y (T, N) = x (T, K) @ W^T, W (N, K) of type wt. scratch: ops_matmul_scratch_floats(K)
// floats (may be NULL when wt is F32 or T == 1). y must not alias x.
void ops_matmul(float *y, const float *x, const void *w, DType wt, int T, int K, int N,
                float *scratch);
// Several products of the same x (q/k/v, gate/up): y_i (T, N_i) = x (T, K) @ W_i^T. For
// decode-sized T one parallel loop covers the rows of every W_i (one OpenMP barrier
// instead of n_out); results equal ops_matmul's for each output. n_out <= 8.
typedef struct {
    float *y;
    const void *w;
    DType wt;
    int N;
} OpsMatmulOut;
void ops_matmul_multi(const OpsMatmulOut *out, int n_out, const float *x, int T, int K,
                      float *scratch);
// The same with a forced path (tests use it to check every path the CPU can run).
void ops_matmul_isa(float *y, const float *x, const void *w, DType wt, int T, int K, int N,
                    float *scratch, OpsIsa isa);
// y (T, N) += b (N) of type bt.
void ops_add_bias(float *y, const void *b, DType bt, int T, int N);
// out (T, D) = x / sqrt(mean(x^2) + eps) * w; out may equal x.
void ops_rmsnorm(float *out, const float *x, const void *w, DType wt, int T, int D, float eps);
// x (T, D) = rows tokens[t] of emb (V, D).
void ops_embed(float *x, const void *emb, DType et, const int32_t *tokens, int T, int D);
// In-place RoPE, rotate_half convention: for each token t and head h, pairs (i, i + HD/2)
// rotate by angle pos[t] * inv_freq[i]. x (T, nh, HD); cos_tab/sin_tab (P, HD/2) indexed
// by position.
void ops_rope(float *x, int T, int nh, int HD, const int32_t *pos, const float *cos_tab,
              const float *sin_tab);
// Causal attention of T query tokens against a per-sequence KV cache.
//   out (T, H, HD); q (T, H, HD); token t sees cache positions 0..pos[t] of its sequence.
//   Keys are stored transposed in tiles of OPS_KEY_TILE positions, (ctx / OPS_KEY_TILE,
//   HD, OPS_KEY_TILE) per KV head: the scores of consecutive positions are contiguous SIMD
//   lanes, and a run of positions is one contiguous stream of memory (with plain (HD, ctx)
//   rows a decode step's chunk was HD short runs a whole row apart, which the hardware
//   prefetchers follow badly). Key element i of position p is
//   k_seq[t][kvh * kv_head_stride + ops_key_offset(HD, i, p)]. Values are (ctx, HD) per KV
//   head: v_seq[t][kvh * kv_head_stride + p * HD + i]. ctx is a multiple of OPS_KEY_TILE.
//   The elements are float32 or IEEE fp16 (kv_dtype; all arithmetic in float32).
//   Head h uses KV head h / (H / KVH).
#define OPS_KEY_TILE 64
static inline int64_t ops_key_offset(int HD, int i, int p) {
    return (int64_t)(p / OPS_KEY_TILE) * HD * OPS_KEY_TILE + (int64_t)i * OPS_KEY_TILE +
           p % OPS_KEY_TILE;
}
// Element o of a KV cache of type t (DTYPE_F32 or DTYPE_F16) as float.
static inline float ops_kv_get(const void *e, DType t, int64_t o) {
    return t == DTYPE_F16 ? fp16_to_f32(((const uint16_t *)e)[o]) : ((const float *)e)[o];
}
// ctx rounded up to a whole number of key tiles.
static inline int ops_key_ctx(int ctx) {
    return (ctx + OPS_KEY_TILE - 1) / OPS_KEY_TILE * OPS_KEY_TILE;
}
// Stores position p of one KV head: k, v (HD) floats into kh (the head's tiled keys) and vh
// (its (ctx, HD) values), as elements of type t (DTYPE_F32 or DTYPE_F16, rounded).
void ops_kv_store(void *kh, void *vh, const float *k, const float *v, int HD, int p, DType t);
typedef struct {
    int T, H, KVH, HD;
    int ctx;                  // cache positions per KV head (> every pos; whole key tiles)
    const int32_t *pos;       // (T) position of each query
    const void *const *k_seq; // (T) key cache base of the token's sequence and layer
    const void *const *v_seq; // (T) value cache base
    DType kv_dtype;           // element type of the cache: DTYPE_F32 (0) or DTYPE_F16
    int64_t kv_head_stride;   // elements between KV heads in the cache (HD * ctx)
    float scale;              // 1/sqrt(HD)
    int n_threads;            // threads the scratch was planned for (at most this many run)
} OpsAttnArgs;
// scratch: ops_attention_scratch_floats(max_pos, n_threads, H, HD) floats, max_pos >= every
// pos[t]. Decode (T <= 2) runs in fixed chunks of cache positions merged flash-decoding
// style (ops_cpu.c), prefill one (token, head) at a time; both give the same bits for any
// thread count.
size_t ops_attention_scratch_floats(int max_pos, int n_threads, int H, int HD);
void ops_attention(float *out, const float *q, const OpsAttnArgs *a, float *scratch);
// h (n) = silu(g) * u; h may equal g.
void ops_swiglu(float *h, const float *g, const float *u, int64_t n);
// y (n) += x (n).
void ops_add(float *y, const float *x, int64_t n);

/* ---- reference ------------------------------------------------------------------ */

void ops_matmul_ref(float *y, const float *x, const void *w, DType wt, int T, int K, int N);
void ops_add_bias_ref(float *y, const void *b, DType bt, int T, int N);
void ops_rmsnorm_ref(float *out, const float *x, const void *w, DType wt, int T, int D, float eps);
void ops_embed_ref(float *x, const void *emb, DType et, const int32_t *tokens, int T, int D);
void ops_rope_ref(float *x, int T, int nh, int HD, const int32_t *pos, const float *cos_tab,
                  const float *sin_tab);
// scratch: max_pos + 1 floats.
void ops_attention_ref(float *out, const float *q, const OpsAttnArgs *a, float *scratch);
void ops_swiglu_ref(float *h, const float *g, const float *u, int64_t n);
void ops_add_ref(float *y, const float *x, int64_t n);

/* ---- SIMD dot products (ops_avx2.c / ops_avx512.c; x86-64 only) -------------------- */

// y[r] = dot(x, W row r) for r in [0, n_rows), W rows of K elements of type wt.
void ops_gemv_rows_avx2(float *y, const float *x, const void *w, DType wt, int K, int n_rows);
void ops_gemv_rows_avx512(float *y, const float *x, const void *w, DType wt, int K, int n_rows);
// y[t * ldy + r] = dot(x row t, W row r) for r < n_rows, t < T (tiles of 3 rows x 4 tokens).
void ops_gemm_rows_avx2(float *y, int64_t ldy, const float *x, const void *w, DType wt, int K,
                        int n_rows, int T);
// dst (n) = src (n) of type t widened to float32.
void ops_widen_avx2(float *dst, const void *src, DType t, int64_t n);
// One row of RMSNorm: out (D) = w * x * rstd, the sum of squares in 8 lanes (then a fixed
// tree), so it differs from ops_rmsnorm_ref's sequential sum in the last bits.
void ops_rmsnorm_row_avx2(float *out, const float *x, const void *w, DType wt, int D, float eps);
// Scores of nh (1..3) consecutive query heads q (nh, HD) against positions [0, n) of tiled
// keys (ops_key_offset) of type kt_type (F32 or F16) from kt, the tile holding position 0:
//   sc[h * ss + p] = scale * sum_i q[h * HD + i] * key(i, p).
void ops_attn_scores_avx2(float *sc, int64_t ss, const float *q, int nh, const void *kt,
                          DType kt_type, int n, int HD, float scale);
// o[h * os + i] = sum_p w[h * ws + p] * v[p * HD + i] for p in [0, n), heads h < nh (1..3);
// v of type v_type (F32 or F16).
void ops_attn_pv_avx2(float *o, int64_t os, const float *w, int64_t ws, int nh, const void *v,
                      DType v_type, int n, int HD);

#endif
