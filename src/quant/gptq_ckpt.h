/*
 * gptq_ckpt.h - GPTQ v1 checkpoints as transformers/optimum, AutoGPTQ, GPTQModel and vLLM
 * load them (docs/reference.md §2): per quantized linear <prefix> the safetensors tensors
 * <prefix>.qweight (I32), .qzeros (I32), .scales (F16), .g_idx (I32) and optional .bias
 * (F16), laid out as in gptq_pack.h; and the `quantization_config` object, written both to
 * quantize_config.json and into config.json.
 *
 *   SafeWriter w;  safewriter_init(&w);
 *   gptq_ckpt_add_linear(&w, "model.layers.0.self_attn.q_proj", &packed);
 *   ... other tensors ...;  safewriter_write(&w, "out/model.safetensors");
 *   GptqConfig c;  gptq_config_from_options(&c, &opts);
 *   gptq_config_write("out", &c);
 *
 *   GptqConfig c;  gptq_config_read(&c, "dir");           // quantize_config.json or config.json
 *   GptqPacked p;  gptq_ckpt_read_linear(&p, &dir, prefix, &c, K, N);  // StDir; validated copy
 *
 * Readers validate everything (dtypes, shapes against each other and the config, g_idx
 * range, zero points, v1 vs v2 format) and answer STATUS_ERR_FORMAT / _UNSUPPORTED with the
 * file and tensor named; they never crash on a corrupt file.
 */
#ifndef EF_GPTQ_CKPT_H
#define EF_GPTQ_CKPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "model/safetensors.h"
#include "model/st_dir.h"
#include "quant/gptq.h"
#include "quant/gptq_pack.h"

typedef struct {
    int bits;       // 2, 3, 4, 8 parse; only 2/4/8 pack, only 4 runs (qmatmul)
    int group_size; // -1 or > 0
    bool desc_act;  // act-order
    bool sym;       // missing in a file: true (GPTQModel's default)
    bool true_sequential;
    bool static_groups;
    bool lm_head; // lm_head quantized too (GPTQModel's / vLLM's "lm_head"; default false)
    double damp_percent;
    char checkpoint_format[16]; // "gptq" (v1); others are refused on read
} GptqConfig;

// bits 4, group 128, desc_act false, sym true, true_sequential true, static_groups false,
// damp 0.01, format "gptq".
void gptq_config_defaults(GptqConfig *c);
void gptq_config_from_options(GptqConfig *c, const GptqOptions *o);

// The quantization_config object as JSON text (caller frees), keys in reference §2.2 order.
char *gptq_config_to_json(const GptqConfig *c);
// Parses a quantization_config object, or a whole config.json holding one. `what` names the
// source in errors. Errors: STATUS_ERR_FORMAT (bad JSON, missing or mistyped bits /
// group_size), STATUS_ERR_UNSUPPORTED (quant_method other than gptq, checkpoint_format or
// format other than gptq, e.g. gptq_v2 or marlin).
Status gptq_config_parse(GptqConfig *c, const char *json_text, const char *what);
// Reads DIR/quantize_config.json, else DIR/config.json's quantization_config.
Status gptq_config_read(GptqConfig *c, const char *dir);
// Writes DIR/quantize_config.json and, when DIR/config.json exists, sets its
// "quantization_config" (other keys kept). Both writes are atomic.
Status gptq_config_write(const char *dir, const GptqConfig *c);

// Adds <prefix>.qweight, .qzeros, .scales, .g_idx (and .bias when p->bias) to w; p's arrays
// are borrowed until safewriter_write.
void gptq_ckpt_add_linear(SafeWriter *w, const char *prefix, const GptqPacked *p);
// Reads and validates <prefix>.* from st (one file or a sharded directory; the tensors may
// sit in different shards) into p (copies). K, N: expected in/out features, or 0 to take
// them from the tensors (K then comes from g_idx, or qweight when g_idx is absent). Errors
// name the shard and the tensor. Marks nothing used (the caller does).
Status gptq_ckpt_read_linear(GptqPacked *p, const StDir *st, const char *prefix,
                             const GptqConfig *c, int64_t K, int64_t N);

#endif
