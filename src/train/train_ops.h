/*
 * train_ops.h - forward and backward kernels for training a Llama (F32), llm.c style.
 *
 * Every op is a pair <op>_forward / <op>_backward working on plain F32 arrays; the
 * forward writes what its backward needs (rstd of RMSNorm, attention probabilities),
 * the backward ACCUMULATES (+=) into the gradients of its inputs, so a tensor used by
 * two consumers (the residual stream, the input of q/k/v) sums its gradients without
 * extra buffers. Callers zero gradient buffers before a backward pass. Nothing here
 * allocates, prints or fails: shapes are the caller's contract.
 *
 * Shapes use the letters of model/llama.h; N = B*T rows of activations.
 *
 *   rmsnorm_forward(ln, rstd, x, w, N, D, eps);        // ln (N, D), rstd (N)
 *   linear_forward(q, ln, wq, NULL, N, D, H*HD);       // q (N, H*HD)
 *   ...
 *   rmsnorm_backward(dx, dw, dln, x, w, rstd, N, D);   // dx, dw accumulate
 *
 * The KD loss (kd_loss_*) implements reference.md §7 exactly; see its comment.
 */
#ifndef EF_TRAIN_OPS_H
#define EF_TRAIN_OPS_H

#include <stdbool.h>
#include <stdint.h>

#include "model/llama.h"

// Target id meaning "no loss at this position" (prompt tokens, padding), as Hugging Face.
#define TRAIN_IGNORE_INDEX (-100)

/* ---- Embedding ---------------------------------------------------------------------- */

// out (N, D) = emb[ids[n]] with emb (V, D). ids must be in [0, V).
void embedding_forward(float *out, const int32_t *ids, const float *emb, int64_t N, int D);
// demb (V, D) += scatter of dout (N, D) by ids.
void embedding_backward(float *demb, const float *dout, const int32_t *ids, int64_t N, int D);

/* ---- RMSNorm (Hugging Face LlamaRMSNorm) ------------------------------------------- */

// out = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps). x, out (N, D); w (D); rstd (N).
void rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int64_t N, int D,
                     float eps);
// dx (N, D) += d/dx; dw (D) += d/dw (dw may be NULL). rstd from the forward.
void rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x, const float *w,
                      const float *rstd, int64_t N, int D);

/* ---- Linear: out = x W^T + b -------------------------------------------------------- */

// out (N, Dout) = x (N, Din) @ W^T, W (Dout, Din) row-major (PyTorch layout), bias (Dout) or NULL.
// Uses gemm_f32 (OpenBLAS sgemm tiles, the same bits on any thread count);
// linear_forward_ref is the naive loop (double accumulation).
void linear_forward(float *out, const float *x, const float *w, const float *bias, int64_t N,
                    int Din, int Dout);
void linear_forward_ref(float *out, const float *x, const float *w, const float *bias, int64_t N,
                        int Din, int Dout);
// dx (N, Din) += dout @ W; dw (Dout, Din) += dout^T @ x; db (Dout) += sum_n dout. Any of dx, dw,
// db may be NULL (frozen weights skip dw).
void linear_backward(float *dx, float *dw, float *db, const float *dout, const float *x,
                     const float *w, int64_t N, int Din, int Dout);
void linear_backward_ref(float *dx, float *dw, float *db, const float *dout, const float *x,
                         const float *w, int64_t N, int Din, int Dout);

/* ---- RoPE (rotate_half convention) -------------------------------------------------- */

// Fills cos/sin tables (T, HD/2) for positions 0..T-1 exactly as Hugging Face's
// LlamaRotaryEmbedding: inv_freq[i] = 1/theta^(2i/HD) in F32, optional llama3 frequency
// scaling (cfg->rope_scaling), angle = pos * inv_freq[i] (F32).
void rope_tables_init(float *cos_t, float *sin_t, int T, int HD, const LlamaConfig *cfg);
// In-place on x (B, T, NH, HD): for i < HD/2, with c, s = tables[t][i]:
//   x[i] <- x[i] c - x[i+HD/2] s ; x[i+HD/2] <- x[i+HD/2] c + x[i] s.
void rope_forward(float *x, const float *cos_t, const float *sin_t, int B, int T, int NH, int HD);
// In-place on dx (B, T, NH, HD): applies the transposed rotation (rotation by -angle).
void rope_backward(float *dx, const float *cos_t, const float *sin_t, int B, int T, int NH, int HD);

/* ---- Causal GQA attention ----------------------------------------------------------- */

// q (B, T, H, HD), k, v (B, T, KVH, HD) (after RoPE); out (B, T, H, HD); probs (B, H, T, T)
// keeps the softmax (row t holds positions 0..t; the rest is written 0). Query head h
// reads kv head h / (H / KVH). Scores are scaled by 1/sqrt(HD); softmax subtracts the row
// max. Sequences are independent: right padding never affects real positions.
// attention_forward uses gemm_f32 per block of 128 rows of a (b, h), one block per
// thread; attention_forward_ref is the naive loop
// (double accumulation). Same for the backward.
void attention_forward(float *out, float *probs, const float *q, const float *k, const float *v,
                       int B, int T, int H, int KVH, int HD);
void attention_forward_ref(float *out, float *probs, const float *q, const float *k, const float *v,
                           int B, int T, int H, int KVH, int HD);
// dq (B, T, H, HD), dk, dv (B, T, KVH, HD) += gradients; dprobs is scratch (B, H, T, T).
void attention_backward(float *dq, float *dk, float *dv, float *dprobs, const float *dout,
                        const float *probs, const float *q, const float *k, const float *v, int B,
                        int T, int H, int KVH, int HD);
void attention_backward_ref(float *dq, float *dk, float *dv, float *dprobs, const float *dout,
                            const float *probs, const float *q, const float *k, const float *v,
                            int B, int T, int H, int KVH, int HD);

/* ---- SwiGLU and residual ------------------------------------------------------------ */

// out (N, F) = silu(gate) * up, silu(g) = g / (1 + exp(-g)).
void swiglu_forward(float *out, const float *gate, const float *up, int64_t n);
// dgate, dup (n) += gradients.
void swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                     const float *up, int64_t n);
// out = a + b (n). Its backward is "dout flows to both inputs": residual_backward adds
// dout into da and db (either may be NULL).
void residual_forward(float *out, const float *a, const float *b, int64_t n);
void residual_backward(float *da, float *db, const float *dout, int64_t n);

/* ---- Losses -------------------------------------------------------------------------- */

// The distillation loss of paper.md eq. 5 / reference.md §7.1, over the positions whose
// target is not TRAIN_IGNORE_INDEX (response tokens; n_valid of them):
//   KL = (1/n_valid) sum_n T^2 sum_i p_T(i) (log p_T(i) - log p_S(i)),  p = softmax(z/T)
//   CE = (1/n_valid) sum_n -log softmax(s)(y_n)          (untempered, as Hinton/DistillKit)
//   loss = alpha KL + (1 - alpha) CE
// Teacher logits NULL means no KL term (KL reported 0, loss = (1-alpha) CE; use alpha = 0
// for plain fine-tuning). Reduction: mean over response tokens of the whole batch (not
// per sequence). With n_valid = 0 every value is 0.
typedef struct {
    double loss, kl, ce;
    int64_t n_valid;
} KdLoss;

typedef struct {
    float temperature; // T > 0
    float alpha;       // weight of the KL term, [0, 1]
    // Shared vocabulary (0 = V): the KL term uses only logit columns [0, kd_vocab) of both
    // models (padding rows past the real vocabulary are left out of both softmaxes; CE
    // still uses all V student columns). teacher_vocab (0 = V) is the row length of tlogits.
    int kd_vocab;
    int teacher_vocab;
} KdLossOptions;

// logits, tlogits (N, V) (tlogits may be NULL), targets (N). Returns the three means.
KdLoss kd_loss_forward(const float *logits, const float *tlogits, const int32_t *targets, int64_t N,
                       int V, const KdLossOptions *o);
// dlogits (N, V) = dloss * d loss / d logits (written, not accumulated):
//   alpha T (softmax(s/T) - softmax(t/T)) / n_valid + (1-alpha) (softmax(s) - onehot(y)) / n_valid
// rows without a target get 0.
void kd_loss_backward(float *dlogits, const float *logits, const float *tlogits,
                      const int32_t *targets, int64_t N, int V, const KdLossOptions *o,
                      float dloss);

// kd_loss_forward and kd_loss_backward in one pass over the rows (what a training step
// needs): the same loss values and the same dlogits as numbers (a zero gradient entry may
// differ in sign where alpha = 1 leaves the CE term out), with each log-sum-exp computed
// once and the exponential passes a term does not need skipped: 4 vocabulary-wide passes
// per row at T = 1 and alpha = 1 instead of 10.
KdLoss kd_loss_forward_backward(float *dlogits, const float *logits, const float *tlogits,
                                const int32_t *targets, int64_t N, int V, const KdLossOptions *o,
                                float dloss);

// Sparse top-k KD (DistillKit's sparse_kl_div with SYMMETRIC_UNIFORM missing mass).
// The teacher gives, per position, K token ids (N, K) and their log-probabilities (N, K)
// computed at temperature t_gen over the full vocabulary. With a = t_gen / T:
//   q_i = a lp_i - log( sum_j exp(a lp_j) + (1 - sum_j exp(lp_j))^a )   (re-tempered)
//   s_i = log softmax(z/T)[id_i]
//   KL_n = sum_i e^{q_i} (q_i - s_i) + m_T (log m_T - log m_S)
// where m_T = 1 - sum e^{q_i}, m_S = 1 - sum e^{s_i}, both clamped to [1e-8, 1 - 1e-8]
// inside the log (DistillKit's eps; a clamped m_S passes no gradient). The KL is scaled by
// T^2 and averaged over response tokens as in kd_loss_forward; CE is the dense CE above.
typedef struct {
    const int32_t *ids; // (N, K) teacher top-k ids (distinct within a row)
    const float *logp;  // (N, K) teacher log-probabilities at t_gen
    int K;
    float t_gen; // temperature the teacher log-probs were computed at (usually 1)
} KdSparseTeacher;

KdLoss kd_sparse_loss_forward(const float *logits, const KdSparseTeacher *t, const int32_t *targets,
                              int64_t N, int V, const KdLossOptions *o);
void kd_sparse_loss_backward(float *dlogits, const float *logits, const KdSparseTeacher *t,
                             const int32_t *targets, int64_t N, int V, const KdLossOptions *o,
                             float dloss);
// Both in one pass over the rows, on all threads, with vectorized exponentials and each
// gradient entry rounded to float once (what a training step uses; the two above are its
// reference): the same losses and dlogits up to the exponentials' last-bit differences.
KdLoss kd_sparse_loss_forward_backward(float *dlogits, const float *logits,
                                       const KdSparseTeacher *t, const int32_t *targets, int64_t N,
                                       int V, const KdLossOptions *o, float dloss);

#endif
