/*
 * infer.h - exact Llama-family forward pass on the CPU: embedding, RMSNorm, RoPE (theta,
 * llama3 scaling), grouped-query causal attention over a per-sequence KV cache, SwiGLU MLP,
 * final norm, tied or untied classifier, optional q/k/v biases (Qwen2).
 *
 * One call, infer_forward(), serves batched prefill of many sequences of different
 * lengths, incremental decode, and scoring (logits for every position) alike: each token
 * carries its sequence id and position, and a mask says which rows get logits.
 * All buffers (KV cache, activations, attention scratch, RoPE tables) are planned and
 * allocated in infer_init(); infer_forward() allocates nothing. Batches longer than
 * max_batch are processed in chunks.
 *
 * Math is float32. Weights are used in the dtype the model holds (F32/F16/BF16) and widened
 * inside the kernels; infer_convert_weights() converts a model's matrices to F16/BF16 once,
 * at load (halves the bytes decode reads). The KV cache is float32.
 *
 *   InferState st;
 *   InferOptions o = infer_options_default();           // max_seqs 1, ctx from the model
 *   if (infer_init(&st, &model, &o) != STATUS_OK) ...
 *   float *logits = ...;                                // (V)
 *   infer_prefill(&st, 0, prompt, n_prompt, logits);    // logits of the last prompt token
 *   infer_decode(&st, 0, next_token, logits);           // one token, one row of logits
 *   infer_release(&st);
 *
 * Contract on positions: the tokens of a sequence are appended in order — a token of
 * sequence s must have position infer_seq_len(st, s) at the time it is reached in the batch
 * (earlier tokens of the same batch count). infer_seq_truncate() rewinds a sequence (chat
 * turns, scoring several continuations of one context).
 */
#ifndef EF_INFER_H
#define EF_INFER_H

#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"
#include "model/llama.h"

typedef struct {
    int max_seqs;   // sequences with their own KV cache (>= 1)
    int max_ctx;    // positions per sequence; 0: the model's max_seq_len capped at 4096
    int max_batch;  // tokens per internal chunk of infer_forward (>= 1)
    int n_threads;  // OpenMP threads the attention scratch is planned for; 0: omp max
    DType kv_dtype; // KV cache elements: DTYPE_F32 (the default, 0) or DTYPE_F16 (half the
                    // memory and the bytes read per decoded token; values rounded to fp16)
} InferOptions;

InferOptions infer_options_default(void);

typedef struct {
    const Model *m;
    InferOptions opt;
    int n_threads;
    int ctx_stride; // cache positions per KV head (max_ctx in whole key tiles)
    // keys (S, L, KVH, ctx/64, HD, 64) tiles; values (S, L, KVH, ctx, HD); of opt.kv_dtype
    void *k_cache, *v_cache; // mmap'd, zero until written
    size_t cache_bytes;      // of each
    int *seq_len;            // (S) positions filled
    // activations of one chunk (Tb = max_batch)
    float *x, *xn;              // (Tb, D)
    float *q, *att;             // (Tb, H*HD)
    float *k, *v;               // (Tb, KVH*HD)
    float *g, *u;               // (Tb, F)
    float *y;                   // (Tb, max(D, F, H*HD))
    float *att_scratch;         // ops_attention_scratch_floats(ctx, n_threads)
    float *mm_scratch;          // ops_matmul_scratch_floats(max K)
    float *rope_cos, *rope_sin; // (ctx, HD/2)
    int *lens_buf;              // (S) validation copy of seq_len
    int32_t *pos_buf, *seq_buf; // (Tb) positions and sequence ids of a chunk
    int32_t *pos_rows;          // (Tb) positions of the rows that get logits (last layer)
    uint8_t *want_buf;          // (Tb) rows of a chunk that get logits
    const void **kseq, **vseq;  // (Tb)
    // Optional observer of every decoder linear's input (analysis: edgeforge analyze).
    // When non-NULL, called per chunk before each linear with the layer, the linear's
    // index in GPTQ report order (0 q, 1 k, 2 v, 3 o, 4 gate, 5 up, 6 down; q/k/v and
    // gate/up receive the same rows) and its input x (T, K). Set it after infer_init;
    // infer_init clears it. Must not modify x.
    void (*on_linear_input)(void *user, int layer, int which, const float *x, int T, int K);
    void *on_linear_user;
} InferState;

// One batch of tokens; seq/pos/want_logits are per token.
typedef struct {
    const int32_t *tokens;      // (n)
    const int32_t *seq;         // (n) sequence ids in [0, max_seqs); NULL: all 0
    const int32_t *pos;         // (n) positions; NULL: appended after each sequence's cache
    const uint8_t *want_logits; // (n) nonzero rows get logits; NULL: every row
    int n;
} InferBatch;

// Plans and allocates everything for `m` (which must outlive the state). Errors:
// STATUS_ERR_ARG for bad options, STATUS_ERR_NOMEM.
Status infer_init(InferState *st, const Model *m, const InferOptions *opt);
void infer_release(InferState *st);

// Runs the batch; writes one row of V logits per wanted token, in batch order, to
// `logits` (may be NULL when no row is wanted). Validates every token id, sequence and
// position before touching the cache: on error nothing has changed.
Status infer_forward(InferState *st, const InferBatch *b, float *logits);

// Appends n tokens to sequence `seq`; writes the last token's logits (V) when logits != NULL.
Status infer_prefill(InferState *st, int seq, const int32_t *tokens, int n, float *logits);
// Appends one token to `seq` and writes its logits (V).
Status infer_decode(InferState *st, int seq, int32_t token, float *logits);

int infer_seq_len(const InferState *st, int seq);
// Forgets positions >= n of `seq` (n <= current length).
void infer_seq_truncate(InferState *st, int seq, int n);
// Makes `dst` a copy of the first n positions of `src` (n <= its length): several
// continuations of one prefix then run side by side in one batch (evaluation).
void infer_seq_copy(InferState *st, int dst, int src, int n);

// RoPE inverse frequencies (HD/2) of a configuration, HF's formula in float32 including
// llama3 scaling (transformers _compute_llama3_parameters).
void infer_rope_inv_freq(const LlamaConfig *c, float *inv_freq);

// Converts every matrix of the model (embedding, projections, classifier) to dtype `dt`
// into model-owned buffers; norms and biases stay as they are. Converting to the dtype a
// matrix already has is a no-op. Tied embeddings stay tied.
Status infer_convert_weights(Model *m, DType dt);

#endif
