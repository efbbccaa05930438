/*
 * llama.h - the Llama-family model as edgeforge holds it in memory: configuration,
 * named weight views, and the files/buffers that own them.
 *
 * Shape letters (used in every shape comment of the project):
 *   B batch, T sequence, D model dim, H query heads, KVH key/value heads,
 *   HD head dim, F FFN dim, V vocab, L layers, R LoRA rank, G quant group size.
 *
 * Weight layout is PyTorch/Hugging Face's: a linear weight is (out, in) row-major,
 * and q/k rows are in Hugging Face order (RoPE rotates element i with i + HD/2,
 * "rotate_half"). Loaders of files that store q/k in the interleaved order
 * (llama2.c checkpoints, GGUF "llama") permute rows on load; writers permute back.
 * The permutation only reorders rows, so round trips are bit-identical.
 *
 * Weights stay in the dtype they were loaded in (F32/F16/BF16, usually a view
 * into a memory-mapped file); GGUF block-quantized tensors are dequantized to F32
 * into owned buffers at load.
 *
 *   Model m;
 *   if (model_load(&m, "models/stories260K/stories260K.bin", NULL) != STATUS_OK) ...
 *   ... m.cfg.dim, m.layers[0].wq ...
 *   model_release(&m);
 */
#ifndef EF_LLAMA_H
#define EF_LLAMA_H

#include <stdbool.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/fileio.h"
#include "core/status.h"

#define MODEL_MAX_FILES 64

typedef enum { ROPE_SCALING_NONE, ROPE_SCALING_LLAMA3, ROPE_SCALING_COUNT } RopeScalingType;

typedef struct {
    char arch[32];        // "llama", "qwen2", ... (what the file called it)
    int dim;              // D
    int hidden_dim;       // F
    int n_layers;         // L
    int n_heads;          // H
    int n_kv_heads;       // KVH
    int head_dim;         // HD (explicit; default D / H)
    int vocab_size;       // V (rows of the embedding, may include padding rows)
    int max_seq_len;      // context length the model was trained for
    float rope_theta;     // RoPE base
    float norm_eps;       // RMSNorm epsilon
    bool tied_embeddings; // lm_head shares the token embedding
    bool qkv_bias;        // q/k/v projections have biases (Qwen2)
    // rope_scaling {"rope_type": "llama3", factor, low_freq_factor, high_freq_factor,
    // original_max_position_embeddings}
    RopeScalingType rope_scaling;
    float rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_orig_max_pos;
    int bos_id, eos_id; // -1 when unknown (the tokenizer may know better)
} LlamaConfig;

struct GptqPacked;

// A non-owning view of a weight: row-major, shape outermost first.
// A GPTQ-quantized linear (quant/gptq_model.h) has gptq set and data NULL: the engine
// multiplies with the packed 4-bit weight directly (quant/qmatmul.h); dtype/shape still
// describe the logical (out, in) matrix.
typedef struct {
    DType dtype;
    int ndim;
    int64_t shape[4];
    void *data;              // NULL when absent (e.g. bias of a model without biases)
    struct GptqPacked *gptq; // packed GPTQ v1 weight (owned by the Model), or NULL
} Tensor;

static inline int64_t tensor_numel(const Tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

typedef struct {
    Tensor attn_norm;    // (D)
    Tensor wq, wk, wv;   // (H*HD, D), (KVH*HD, D), (KVH*HD, D)
    Tensor bq, bk, bv;   // (H*HD), (KVH*HD), (KVH*HD) or absent
    Tensor wo;           // (D, H*HD)
    Tensor ffn_norm;     // (D)
    Tensor w_gate, w_up; // (F, D)
    Tensor w_down;       // (D, F)
} LlamaLayer;

struct Tokenizer;

typedef struct {
    LlamaConfig cfg;
    Tensor tok_emb;        // (V, D)
    LlamaLayer *layers;    // (L)
    Tensor final_norm;     // (D)
    Tensor lm_head;        // (V, D); same data as tok_emb when tied
    struct Tokenizer *tok; // owned; NULL when the model came without one
    // ownership: mapped files and heap buffers released by model_release
    MappedFile files[MODEL_MAX_FILES];
    int n_files;
    void **owned;
    int n_owned, cap_owned;
    char *source; // path the model was loaded from
} Model;

typedef struct {
    const char *tokenizer_path; // explicit tokenizer file (llama2.c needs one), or NULL
    bool no_tokenizer;          // skip loading a tokenizer
} ModelLoadOptions;

// Loads a model from a llama2.c checkpoint, a Hugging Face directory (or its
// config.json) or a GGUF file; the kind is detected from the path and magic.
// Returns STATUS_OK, or an error naming the file and the problem; on error *m is
// left released.
Status model_load(Model *m, const char *path, const ModelLoadOptions *opts);

// Loads a llama2.c checkpoint (legacy header of 7 int32; negative vocab_size means a
// separate classifier; or version-2 "ak42" header). q/k rows are permuted to HF order.
Status model_load_llama2c(Model *m, const char *path);

// Frees everything the model owns; a zeroed Model is a no-op.
void model_release(Model *m);

// Initialises an empty model (all zero).
void model_init(Model *m);

// Takes ownership of a heap buffer (freed by model_release) and returns it.
void *model_take(Model *m, void *buf);

// Allocates an owned, zeroed buffer of n bytes; NULL (with a Status message) on OOM.
void *model_alloc(Model *m, size_t n);

// Sets defaults for derived config fields (head_dim, rope theta, eps) and checks
// the configuration for consistency. Errors name `what` (usually the file).
Status llama_config_validate(LlamaConfig *c, const char *what);

// Total parameter count (tied embeddings counted once).
int64_t model_param_count(const Model *m);

// Permutes the rows of a q/k weight (n_head*HD rows of `row_bytes`) between the
// interleaved (Meta/GGUF) order and HF's rotate_half order. to_hf=true maps
// interleaved -> HF; false maps HF -> interleaved. Works in place.
void rope_permute_rows(void *w, int n_head, int head_dim, size_t row_bytes, bool to_hf);

#endif
