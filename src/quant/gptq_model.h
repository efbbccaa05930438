/*
 * gptq_model.h - GPTQ (or round-to-nearest) quantization of a whole Llama-family Model,
 * and GPTQ v1 checkpoint directories written and read (docs/gptq.md "End to end").
 *
 * Quantization follows IST-DASLab/gptq llama.py (reference.md §1.1): the calibration
 * sequences are embedded, then the decoder layers are processed in order; each layer's
 * inputs are the outputs of the layers before it computed with their *quantized* weights.
 * Inside a layer the Hessians H = 2 X^T X / n are accumulated per linear input, so q/k/v
 * share one (the attention norm's output) and gate/up share one (the MLP norm's output);
 * o_proj sees the attention output and down_proj the SwiGLU product. Without
 * true_sequential all four come from one pass of the unquantized layer; with it the layer
 * is re-run between the groups [q,k,v] -> [o] -> [gate,up] -> [down], each group's inputs
 * computed with the groups before it already quantized. Embeddings and norms are not
 * quantized; lm_head only when asked (o->lm_head, GPTQModel's `lm_head=True`): its Hessian
 * comes from the final norm's output of the quantized decoder, and a tied model is untied
 * (the embedding stays 16-bit, lm_head.{qweight,...} is written, tie_word_embeddings false).
 * RTN mode quantizes every linear on the same grid without data.
 *
 * After gptq_model_quantize every decoder linear Tensor holds both `gptq` (the packed
 * weight, owned by the Model; the engine multiplies with it) and `data` (its exact
 * dequantization in F32, for code that needs floats, e.g. the HF writer).
 *
 * Checkpoints: a Hugging Face directory with config.json (+ quantization_config),
 * quantize_config.json, generation_config.json, model.safetensors (per linear qweight,
 * qzeros, scales, g_idx, [bias]; everything else fp16) and the tokenizer files.
 * gptq_model_load reads such a directory (ours or another tool's, one safetensors file,
 * 4-bit) into a Model whose linears are packed (`data` NULL): nothing is dequantized.
 * model_load() dispatches here when a directory's config.json has a gptq
 * quantization_config.
 *
 *   GptqModelOptions o;  gptq_model_options_defaults(&o);
 *   GptqModelReport rep;
 *   if (gptq_model_quantize(&m, &rep, &calib, &o) != STATUS_OK) ...
 *   GptqConfig c;  gptq_model_config(&c, &o);
 *   if (gptq_model_save(&m, "out/model-gptq", &c) != STATUS_OK) ...
 *   gptq_model_report_release(&rep);
 */
#ifndef EF_GPTQ_MODEL_H
#define EF_GPTQ_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"
#include "model/llama.h"
#include "quant/calib.h"
#include "quant/gptq.h"
#include "quant/gptq_ckpt.h"

// Decoder linears per layer, in the order reports and checkpoints list them.
#define GPTQ_MODEL_LINEARS 7

typedef struct {
    GptqOptions gptq;     // bits, group, sym, act-order, static groups, damp
    bool rtn;             // round-to-nearest instead of GPTQ (no calibration data needed)
    bool true_sequential; // re-run the layer between [qkv] [o] [gate,up] [down]
    int batch_seqs;       // sequences per Hessian update (memory only; 8)
    bool lm_head;         // quantize lm_head too (default false)
} GptqModelOptions;

void gptq_model_options_defaults(GptqModelOptions *o);
// quantization_config for checkpoints made with these options.
void gptq_model_config(GptqConfig *c, const GptqModelOptions *o);

typedef struct {
    char name[80]; // HF prefix, "model.layers.3.self_attn.q_proj"
    int layer;
    int64_t N, K;    // out, in features
    double loss;     // GPTQ's sum (w - q)^2 / d^2 / 2 (0 for RTN)
    double percdamp; // dampening used
    int64_t n_dead;  // dead input columns
    double seconds;
} GptqLinearInfo;

typedef struct {
    GptqLinearInfo *lin; // (n_linear) layer by layer, q k v o gate up down [, lm_head]
    int n_linear;
    double seconds;       // whole run
    double sec_forward;   // of which: layer forward passes of the calibration sequences,
    double sec_hessian;   //   Hessian accumulation,
    double sec_gptq;      //   GPTQ (or RTN) of the linears
    int64_t n_weights;    // weights in quantized linears
    int64_t packed_bytes; // their qweight + qzeros + scales + g_idx bytes
} GptqModelReport;

void gptq_model_report_release(GptqModelReport *r);

// The linears of layer l in report order (q, k, v, o, gate, up, down) and their HF names.
void gptq_model_layer_linears(LlamaLayer *ly, Tensor *out[GPTQ_MODEL_LINEARS]);
const char *gptq_model_linear_name(int i); // "self_attn.q_proj", ...

// Quantizes every decoder linear of m in place (see above). calib: (n_seqs, seq_len)
// tokens, may be NULL with o->rtn. Errors: STATUS_ERR_ARG (options, no calibration,
// sequences longer than the model's context, token ids out of range),
// STATUS_ERR_NUMERIC (a Hessian that stays non-positive-definite; names the linear),
// STATUS_ERR_UNSUPPORTED (a linear that is already quantized), STATUS_ERR_NOMEM.
Status gptq_model_quantize(Model *m, GptqModelReport *rep, const CalibSet *calib,
                           const GptqModelOptions *o);

// Writes the quantized model m as a GPTQ v1 checkpoint directory `dir` (must not exist
// or be empty). Atomic: built in "<dir>.gptq.tmp.<pid>" and renamed. Errors: STATUS_ERR_ARG
// (a linear without a packed weight), I/O.
Status gptq_model_save(const Model *m, const char *dir, const GptqConfig *c);

// Replaces every packed linear of m (and a packed lm_head) by its float32 dequantization
// (exact: an fp16 scale times a small integer), so that the model can be written to formats
// without GPTQ (convert) or run where no fused kernel exists. Errors: STATUS_ERR_NOMEM.
Status gptq_model_dequantize(Model *m);
// Whether m has any packed GPTQ linear.
bool gptq_model_has_packed(const Model *m);

// True when `path` is a directory (or its config.json) whose config.json carries a
// quantization_config with quant_method "gptq".
bool gptq_model_is_checkpoint(const char *path);

// Loads a GPTQ checkpoint directory (weights and config; model_load adds the tokenizer).
// Errors name the file and the tensor: STATUS_ERR_FORMAT (corrupt or missing tensors,
// shapes that disagree with config.json, unexpected tensors), STATUS_ERR_UNSUPPORTED
// (3-bit, gptq_v2/marlin formats). Weights: model.safetensors or the shards of its index.
// 4-bit linears stay packed (qmatmul runs them); 2- and 8-bit ones are dequantized to
// float32 (with a warning). A quantized lm_head (lm_head.qweight, ...) loads like the
// decoder linears.
Status gptq_model_load(Model *m, const char *path);

#endif
