/*
 * gptq.h - GPTQ weight quantization of one linear layer (Frantar et al. 2022, Alg. 1),
 * following the IST-DASLab/gptq reference (docs/reference.md §1.2-§1.3; decisions in
 * docs/gptq.md), plus the round-to-nearest (RTN) baseline on the same grid.
 *
 * W (N, K) is quantized column by column; each column's rounding error is pushed onto the
 * columns not yet quantized through the upper Cholesky factor U of H^-1, where
 * H = (2/n) sum x x^T (K, K) is accumulated from the layer's calibration inputs x.
 *
 *   GptqHessian h;
 *   gptq_hessian_init(&h, K);
 *   for each calibration batch: gptq_hessian_add_batch(&h, X, n_tokens, n_sequences);
 *   GptqOptions o;
 *   gptq_options_defaults(&o);            // 4 bits, group 128, sym, damp 0.01
 *   GptqResult r;
 *   Status s = gptq_quantize_layer(&r, W, N, &h, &o);   // r.q codes, r.scales, r.zeros
 *   ... gptq_pack_result(&packed, &r) (gptq_pack.h) ...
 *   gptq_result_release(&r);
 *   gptq_hessian_release(&h);
 *
 * Shapes: N = out_features (rows of W), K = in_features, G = number of groups
 * (ceil(K / group_size), or 1 for group_size -1). Everything runs in double precision
 * (Hessian, Cholesky, error feedback); results do not depend on the thread count.
 */
#ifndef EF_GPTQ_H
#define EF_GPTQ_H

#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"

typedef struct {
    int bits;           // 2..8; 4 for w4a16
    int group_size;     // -1 (one grid per row) or >= 1; a ragged last group when K % g != 0
    bool sym;           // symmetric grid, zero = 2^(bits-1); else asymmetric
    bool act_order;     // desc_act: quantize columns in order of decreasing diag(H)
    bool static_groups; // grids from the original W in column order (needs group_size > 0)
    double percdamp;    // dampening as a fraction of mean(diag H); 0.01
    double damp_growth; // factor applied to percdamp when the Cholesky factorisation fails: 10
    double damp_max;    // give up (STATUS_ERR_NUMERIC) once percdamp would exceed this: 1.0
    int blocksize;      // lazy-update block width: 128
    bool mse;           // MSE grid search for every grid (the reference's mse=True; off)
} GptqOptions;

void gptq_options_defaults(GptqOptions *o);
// Checks ranges (bits, group, damp, blocksize). Returns STATUS_ERR_ARG naming the option.
Status gptq_options_check(const GptqOptions *o);

/* ---- Hessian ------------------------------------------------------------------------- */

typedef struct {
    int64_t K;
    double *H;         // (K, K) running average (2/n) sum x x^T, row-major: its upper triangle
                       // (j >= i) after gptq_hessian_add_batch, which is all the factor reads;
                       // the whole symmetric matrix after gptq_hessian_symmetrize
    int64_t n_samples; // n: sequences seen so far (the reference's nsamples)
    bool lower_stale;  // the lower triangle lags the upper one
} GptqHessian;

Status gptq_hessian_init(GptqHessian *h, int64_t K);
void gptq_hessian_release(GptqHessian *h);

// Adds one batch of calibration inputs X (n_tokens, K) holding n_samples sequences, as the
// reference does: H *= n/(n + m); n += m; H += (2/n) X^T X (OpenBLAS in double), to the
// upper triangle. Errors: STATUS_ERR_ARG (n_samples < 1), STATUS_ERR_NUMERIC (NaN/Inf in X).
Status gptq_hessian_add_batch(GptqHessian *h, const float *X, int64_t n_tokens, int64_t n_samples);
// Copies the upper triangle onto the lower one (once after the last batch: not per batch)
// for code that reads H whole.
void gptq_hessian_symmetrize(GptqHessian *h);
// Naive triple-loop twin of gptq_hessian_add_batch, for tests.
Status gptq_hessian_add_batch_ref(GptqHessian *h, const float *X, int64_t n_tokens,
                                  int64_t n_samples);

/* ---- quantizer grid ------------------------------------------------------------------ */

// The reference quantizer's grid for one row segment x (n): maxq = 2^bits - 1;
// xmin = min(min x, 0), xmax = max(max x, 0); sym: xmax = max(|xmin|, xmax) and xmin = -xmax
// when xmin < 0; both 0 -> -1, +1; scale = (xmax - xmin)/maxq; zero = (maxq+1)/2 (sym) or
// rint(-xmin/scale).
// mse: the reference's grid search (mse=True: grid 100, maxshrink 0.8, norm 2.4): for
// i = 0..79 the range [p xmin, p xmax], p = 1 - i/100 (sym keeps its zero), and the grid
// with the least sum_k |scale (q_k - zero) - x_k|^2.4 (the first on equality) wins.
void gptq_grid(double *scale, double *zero, const double *x, int64_t n, int bits, bool sym,
               bool mse);
// The MSE search of gptq_grid evaluated exhaustively with libm's pow (80 exact sums; gptq_grid
// prunes with a fast approximation first); for tests: both must pick the same grid.
void gptq_grid_mse_ref(double *scale, double *zero, const double *x, int64_t n, int bits, bool sym);
// q = clamp(rint(x/scale) + zero, 0, maxq) (round half to even, like torch.round).
static inline int gptq_code(double x, double scale, double zero, int maxq) {
    double q = __builtin_rint(x / scale) + zero;
    return q < 0 ? 0 : q > maxq ? maxq : (int)q;
}

/* ---- layer quantization -------------------------------------------------------------- */

typedef struct {
    int64_t N, K, G;
    int bits, group_size; // as requested (-1: one group)
    uint8_t *q;           // (N, K) integer codes 0..2^bits-1, original column order
    double *scales;       // (G, N) grid scale of each group and row
    int32_t *zeros;       // (G, N) integer zero points (the true zero, not v1's zero-1)
    int32_t *g_idx;       // (K) group of each input column
    int32_t *perm;        // (K) quantization order: column perm[c] was the c-th quantized
    double loss;          // sum over the layer of (w - q)^2 / d^2 / 2 (the reference's "error")
    double percdamp;      // dampening actually used (after automatic increases)
    int64_t n_dead;       // columns with diag(H) == 0 (zeroed in the result)
} GptqResult;

// Quantizes W (N, K) with the Hessian h (not modified). The result owns its arrays.
// Errors: STATUS_ERR_ARG (bad options, N < 1, h empty), STATUS_ERR_NUMERIC (NaN/Inf in W
// or H, or H not positive definite even after raising the dampening to o->damp_max; each
// increase is logged), STATUS_ERR_NOMEM.
Status gptq_quantize_layer(GptqResult *r, const float *W, int64_t N, const GptqHessian *h,
                           const GptqOptions *o);

// Steps 2-5 of a Hessian, shared by every linear that reads the same inputs (q/k/v, gate/up):
// dead columns, the act-order permutation and U, the upper Cholesky factor of
// (H_p + damp I)^-1. Depends on H and on o's act_order and dampening options only.
typedef struct {
    int64_t K;
    double *U;     // (K, K) in quantization order
    int32_t *perm; // (K) quantization order (identity without act-order)
    uint8_t *dead; // (K) 1 where diag(H) == 0, original column order
    int64_t n_dead;
    double percdamp; // dampening used (after automatic increases)
    bool act_order;
} GptqFactor;

// Errors: as gptq_quantize_layer's for H (STATUS_ERR_ARG, STATUS_ERR_NUMERIC, NOMEM).
Status gptq_factor_init(GptqFactor *f, const GptqHessian *h, const GptqOptions *o);
void gptq_factor_release(GptqFactor *f);
// gptq_quantize_layer with a factor made by gptq_factor_init from the same act_order and
// dampening options (act_order is checked). The block loop runs 8 rows at a time.
Status gptq_quantize_factored(GptqResult *r, const float *W, int64_t N, const GptqFactor *f,
                              const GptqOptions *o);
// The reference twin: one row at a time, scalar (same bits; for tests).
Status gptq_quantize_factored_ref(GptqResult *r, const float *W, int64_t N, const GptqFactor *f,
                                  const GptqOptions *o);

// Round-to-nearest baseline on the same grids (per group of W in column order, no error
// feedback, act_order/static_groups ignored); r->loss is 0 (no Hessian).
Status gptq_rtn_layer(GptqResult *r, const float *W, int64_t N, int64_t K, const GptqOptions *o);
void gptq_result_release(GptqResult *r);

// W_hat (N, K) = scale * (q - zero) with the double-precision scales (before fp16 packing).
void gptq_result_dequantize(float *W_hat, const GptqResult *r);

// Layer output error sum_r (w_r - w_hat_r)^T H (w_r - w_hat_r) = (2/n) ||(W - W_hat) X^T||^2
// for W, W_hat (N, K) and H (K, K) read whole (gptq_hessian_symmetrize a GptqHessian first).
double gptq_layer_error(const double *H, const float *W, const float *W_hat, int64_t N, int64_t K);

#endif
