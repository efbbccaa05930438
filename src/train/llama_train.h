/*
 * llama_train.h - training forward and backward pass of a Llama with LoRA adapters
 * (F32, CPU), in llm.c's style: every activation the backward needs is kept in one slab
 * planned up front for a fixed (B, T) (optionally recomputing attention probabilities); the
 * backward walks the layers in reverse and accumulates the LoRA gradients into LoraModel.grads.
 * Base weights are frozen (F32 copies of the Model's weights, whatever their stored dtype).
 *
 * Sequences are right-padded: attention is causal per sequence, so padding after the real
 * tokens never changes them; targets mark padding and prompt positions with
 * TRAIN_IGNORE_INDEX. targets[b][t] is the token the logits at (b, t) should predict,
 * i.e. ids shifted by one (Hugging Face's labels shifted inside the model).
 *
 *   LlamaTrain st, te;
 *   llama_train_init(&st, &student, B, T);
 *   llama_train_init(&te, &teacher, B, T);
 *   llama_train_forward(&te, NULL, ids);                    // te.logits (B*T, V)
 *   lora_zero_grad(&lora);
 *   KdLoss l;
 *   Status s = llama_train_step(&st, &lora, ids, targets, te.logits, &kdopt, &l);
 *   ... optimizer step on lora.params with lora.grads ...
 *   llama_train_release(&te); llama_train_release(&st);
 */
#ifndef EF_LLAMA_TRAIN_H
#define EF_LLAMA_TRAIN_H

#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"
#include "model/llama.h"
#include "train/lora.h"
#include "train/train_ops.h"

// Memory for speed in the backward. ATTENTION: one (B, H, T, T) probability buffer for all
// layers, refilled by one attention forward per layer in the backward. LAYERS: only each
// layer's input is kept (L + 1 residual streams) and one layer's activations, refilled by
// re-running that layer's forward in the backward (activation checkpointing: one more
// student forward per step). Both give bit-identical results; a forward-only plan (teacher,
// evaluation) loses nothing with LAYERS.
typedef enum {
    LLAMA_RECOMPUTE_NONE,
    LLAMA_RECOMPUTE_ATTENTION,
    LLAMA_RECOMPUTE_LAYERS
} LlamaRecompute;

typedef struct {
    float *attn_norm;     // (D)
    float *wq, *wk, *wv;  // (H*HD, D), (KVH*HD, D), (KVH*HD, D)
    float *bq, *bk, *bv;  // biases or NULL
    float *wo;            // (D, H*HD)
    float *ffn_norm;      // (D)
    float *w_gate, *w_up; // (F, D)
    float *w_down;        // (D, F)
} LlamaTrainLayer;

// Activations of one layer, N = B*T.
typedef struct {
    float *ln1, *rstd1;          // (N, D), (N)
    float *q, *k, *v;            // (N, H*HD), (N, KVH*HD), (N, KVH*HD); q, k after RoPE
    float *probs;                // (B, H, T, T)
    float *atty;                 // (N, H*HD) attention output before o_proj
    float *res1;                 // (N, D) residual after attention
    float *ln2, *rstd2;          // (N, D), (N)
    float *gate, *up, *h;        // (N, F); h = silu(gate) * up
    float *u[LORA_MODULE_COUNT]; // (N, R) x A^T of each adapter (NULL without adapter)
} LlamaTrainActs;

typedef struct {
    LlamaConfig cfg;
    int B, T;
    // frozen F32 weights (one owned slab)
    float *w_slab;
    float *tok_emb;          // (V, D)
    float *lm_head;          // (V, D); == tok_emb when tied
    float *final_norm;       // (D)
    LlamaTrainLayer *layers; // (L)
    // activations (one slab)
    float *act_slab;
    int64_t act_floats;
    float **resid;        // (L+1) x (N, D): resid[0] embeddings, resid[l+1] layer l out
    LlamaTrainActs *acts; // (L)
    float *lnf, *rstdf;   // (N, D), (N)
    float *logits;        // (N, V); (n_logit_rows, V) when fewer rows get logits
    // rows of the batch that get logits, in order (llama_train_set_logit_rows; all N by
    // default), and their final-norm outputs
    int32_t *logit_rows; // (N)
    int64_t n_logit_rows;
    float *lnf_rows;            // (N, D)
    float *rope_cos, *rope_sin; // (T, HD/2)
    // backward scratch (one slab)
    float *grad_slab;
    float *dlogits;                       // (N, V)
    float *g_res, *g_res1, *g_ln, *g_tmp; // (N, D)
    float *g_q, *g_k, *g_v, *g_atty;      // (N, H*HD), (N, KVH*HD) x2, (N, H*HD)
    float *g_probs;                       // (B, H, T, T)
    float *g_gate, *g_up, *g_h;           // (N, F)
    float *g_u;                           // (N, R) for the largest rank the slab was planned for
    int lora_rank;                        // rank the u buffers were planned for (0 = no LoRA)
    LlamaRecompute recompute;             // what the backward recomputes instead of keeping
    bool recomputing;                     // inside a backward's layer re-run (reuse dropout masks)
    const int32_t *ids;                   // input ids of the last forward (borrowed)
    // LoRA dropout (llama_train_enable_dropout)
    float dropout;         // p (0: none)
    bool dropout_on;       // the next forward applies dropout (off for evaluation)
    uint64_t dropout_seed; // masks of the next forward are drawn from this seed
    bool dropout_applied;  // the last forward used masks (its backward must too)
    float *drop_slab;      // masks (N, in) per layer and module, then xd scratch
    float **drop_ms;       // (L * LORA_MODULE_COUNT)
    float *drop_xd;        // (N, max in) scratch
} LlamaTrain;

// Plans all buffers for batch B, sequence T and LoRA rank R (0: no adapters, e.g. for a
// teacher) and converts the model's weights to F32. Errors: STATUS_ERR_ARG (bad sizes),
// STATUS_ERR_NOMEM naming the bytes wanted.
Status llama_train_init(LlamaTrain *lt, const Model *m, int B, int T, int lora_rank);
// Same, with recomputation (see LlamaRecompute).
Status llama_train_init_ex(LlamaTrain *lt, const Model *m, int B, int T, int lora_rank,
                           LlamaRecompute recompute);
void llama_train_release(LlamaTrain *lt);
// Allocates the masks of LoRA dropout with probability p (inverted dropout, PEFT's
// nn.Dropout on the adapter input; one mask per adapter). Dropout then applies to every
// forward while lt->dropout_on, with masks drawn from lt->dropout_seed in layer and module
// order (set the seed per micro-batch for reproducible, resumable runs).
Status llama_train_enable_dropout(LlamaTrain *lt, float p);

// Bytes of the activation and scratch slabs for a (B, T, R) plan (for memory reports).
int64_t llama_train_act_bytes(const LlamaConfig *c, int B, int T, int lora_rank,
                              LlamaRecompute recompute);

// Limits the logits of the following forwards and their backwards to the rows whose
// target is not TRAIN_IGNORE_INDEX (the rows a loss reads: prompt and padding rows have
// none), in order: lt->logits and lt->dlogits are then (n_logit_rows, V), and the KD loss
// takes the targets (and teacher rows) of those rows. lm_head's forward and backward are
// ~21 % of a step's FLOPs per row, so a batch that is 40 % prompt saves ~8 %. targets NULL:
// every row again (the default). Returns n_logit_rows.
int64_t llama_train_set_logit_rows(LlamaTrain *lt, const int32_t *targets);

// Forward of ids (B, T) (each in [0, V)); lora may be NULL. Logits land in lt->logits.
// ids is borrowed until the backward. Errors: STATUS_ERR_ARG for an out-of-range id or a
// LoRA model of another rank/shape.
Status llama_train_forward(LlamaTrain *lt, const LoraModel *lora, const int32_t *ids);
// Backward from lt->dlogits (N, V) through the last forward, accumulating the LoRA
// gradients into lora->grads. Base weights get no gradients.
void llama_train_backward(LlamaTrain *lt, LoraModel *lora);

// forward + KD loss (train_ops.h) + backward. tlogits (B*T, V) or NULL (then the loss is
// (1 - alpha) CE). Accumulates into lora->grads (zero them first). Returns
// STATUS_ERR_NUMERIC for a NaN/Inf loss (gradients then untouched).
Status llama_train_step(LlamaTrain *lt, LoraModel *lora, const int32_t *ids, const int32_t *targets,
                        const float *tlogits, const KdLossOptions *o, KdLoss *out);

#endif
