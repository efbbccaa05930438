/*
 * lora.h - LoRA adapters (Hu et al. 2021) as PEFT implements them (reference.md §6).
 *
 * A targeted linear y = x W^T + b becomes
 *   y = x W^T + b + scaling * (dropout(x) A^T) B^T,   A (R, in), B (out, R)
 * with scaling = lora_alpha / R (rsLoRA: lora_alpha / sqrt(R)). The paper's "LoRA scale
 * a" is this scaling, so lora_alpha = a R (rsLoRA: a sqrt(R)). Init as PEFT's default:
 * A ~ kaiming_uniform(a = sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)), B = 0. Dropout is inverted
 * dropout on the adapter input (lora_*_dropout with a mask from lora_dropout_mask).
 *
 * All A and B of a model live in one parameter slab (and one gradient slab of the same
 * layout), module by module in layer order, A before B; optimizers walk that list.
 *
 *   LoraConfig c = lora_config_defaults();          // r 8, alpha 8, all linears
 *   c.rank = 16; c.lora_alpha = 1.5f * 16;         // paper scale a = 1.5
 *   LoraModel lm;
 *   if (lora_init(&lm, &model.cfg, &c, &rng) != STATUS_OK) ...
 *   ... train (llama_train.h) ...
 *   lora_save_peft(&lm, "out/adapter", "base-model-name");
 *   lora_merge_model(&lm, &model);                 // W += scaling B A, F32
 *   lora_release(&lm);
 */
#ifndef EF_LORA_H
#define EF_LORA_H

#include <stdbool.h>
#include <stdint.h>

#include "core/rng.h"
#include "core/status.h"
#include "model/llama.h"

// NOTE: add new modules at the end only (the order is the parameter layout).
typedef enum {
    LORA_Q,
    LORA_K,
    LORA_V,
    LORA_O,
    LORA_GATE,
    LORA_UP,
    LORA_DOWN,
    LORA_MODULE_COUNT
} LoraModule;

#define LORA_ALL_MODULES ((1u << LORA_MODULE_COUNT) - 1)

typedef struct {
    int rank;         // R
    float lora_alpha; // PEFT lora_alpha
    bool use_rslora;  // scaling = alpha / sqrt(R) instead of alpha / R
    float dropout;    // PEFT lora_dropout p in [0, 1) (inverted dropout on the LoRA input)
    unsigned targets; // bit mask of (1 << LoraModule)
} LoraConfig;

// PEFT defaults except targets: r 8, alpha 8, no rsLoRA, dropout 0, every linear.
LoraConfig lora_config_defaults(void);

typedef struct {
    float *a, *b;      // (R, in), (out, R) views into LoraModel.params; NULL if not targeted
    float *da, *db;    // same layout in LoraModel.grads
    int rank, in, out; // R, in, out
} LoraAdapter;

typedef struct {
    LoraConfig cfg;
    float scaling;
    int n_layers;
    LoraAdapter *ad; // (L * LORA_MODULE_COUNT), index layer * LORA_MODULE_COUNT + module
    float *params;   // all A and B, layer-major, A then B per module
    float *grads;    // same layout
    int64_t n_params;
} LoraModel;

// PEFT module names: "q_proj" ... "down_proj"; and the parent ("self_attn"/"mlp").
const char *lora_module_name(LoraModule m);
const char *lora_module_parent(LoraModule m);
// Parses "q,k,v,o,gate,up,down", "all" or PEFT names ("q_proj,v_proj") into a mask.
Status lora_parse_targets(const char *list, unsigned *mask);

// (in, out) of module m for a config.
void lora_module_shape(const LlamaConfig *c, LoraModule m, int *in, int *out);

// Allocates adapters for every targeted module of every layer, A with PEFT's
// kaiming-uniform bound 1/sqrt(in) drawn from rng (row-major order), B = 0, grads 0.
// Errors: STATUS_ERR_ARG for a bad rank/alpha/dropout, STATUS_ERR_NOMEM.
Status lora_init(LoraModel *lm, const LlamaConfig *c, const LoraConfig *cfg, Rng *rng);
void lora_release(LoraModel *lm);
// The adapter of (layer, module) or NULL when that module has no adapter.
LoraAdapter *lora_get(const LoraModel *lm, int layer, LoraModule m);
void lora_zero_grad(LoraModel *lm);
// The PyTorch bound of kaiming_uniform_(a=sqrt(5)) for a (R, in) tensor: 1/sqrt(in),
// computed as torch does (gain sqrt(2/(1+5)), std gain/sqrt(in), bound sqrt(3) std).
double lora_kaiming_bound(int in);

/* ---- Forward/backward of an adapted linear ----------------------------------------- */

// out (N, out) += scaling * (x A^T) B^T; u (N, R) receives x A^T (kept for backward).
void lora_forward(float *out, float *u, const float *x, const LoraAdapter *ad, float scaling,
                  int64_t N);
// Given dout (N, out): db += scaling dout^T u; du = scaling dout B (scratch (N, R));
// da += du^T x; dx (N, in) += du A (dx may be NULL).
void lora_backward(float *dx, float *du, const float *dout, const float *x, const float *u,
                   LoraAdapter *ad, float scaling, int64_t N);

// Inverted dropout on the adapter input, with a mask given as ms (N, in): each entry is
// 0 or 1/(1-p). xd is scratch (N, max(in, ...)) that lora_backward_dropout also reuses.
//   forward:  xd = x * ms; u = xd A^T; out += scaling u B^T
//   backward: dB += scaling dout^T u; du = scaling dout B; dA += du^T xd; dx += (du A) * ms
void lora_forward_dropout(float *out, float *u, float *xd, const float *x, const float *ms,
                          const LoraAdapter *ad, float scaling, int64_t N);
void lora_backward_dropout(float *dx, float *du, float *xd, const float *dout, const float *x,
                           const float *ms, const float *u, LoraAdapter *ad, float scaling,
                           int64_t N);
// Draws a dropout mask ms (n) with keep probability 1 - p: entries 0 or 1/(1-p).
void lora_dropout_mask(float *ms, int64_t n, float p, Rng *rng);

/* ---- Merge and PEFT files ---------------------------------------------------------- */

// w (out, in) F32 += scaling * B A for one adapter.
void lora_merge_weight(float *w, const LoraAdapter *ad, float scaling);

// Merges every adapter into the model: each targeted weight is replaced by an owned F32
// buffer (model_alloc) holding W + scaling B A, whatever its stored dtype (the paper's
// "merge, then quantize" order). Errors: STATUS_ERR_ARG when lm does not fit m's shapes,
// STATUS_ERR_NOMEM.
Status lora_merge_model(const LoraModel *lm, Model *m);
// The base weight of module m in layer ly (wq, wk, ..., w_down).
Tensor *lora_model_weight(LlamaLayer *ly, LoraModule m);

// Writes <dir>/adapter_config.json and <dir>/adapter_model.safetensors (F32) with PEFT's
// names base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight etc.
Status lora_save_peft(const LoraModel *lm, const char *dir, const char *base_model);
// Reads a PEFT adapter directory saved for a model of config c: rank, alpha, rsLoRA and
// targets from adapter_config.json, tensors (F32/F16/BF16) from the safetensors file.
// Errors name the file and the missing or mis-shaped tensor.
Status lora_load_peft(LoraModel *lm, const LlamaConfig *c, const char *dir);

#endif
