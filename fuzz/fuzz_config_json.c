/*
 * fuzz_config_json.c - libFuzzer target for the Hugging Face config.json parser
 * (model_hf_parse_config): any accepted config must pass llama_config_validate's limits.
 *
 *   make fuzz && build-fuzz/fuzz_config_json -max_total_time=120 -max_len=2048 \
 *       -dict=fuzz/config_json.dict
 */
#include <stddef.h>
#include <stdint.h>

#include "model/model_io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    LlamaConfig c;
    if (model_hf_parse_config(&c, (const char *)data, size, "fuzz/config.json") == STATUS_OK) {
        // what the loader relies on after a successful parse
        if (c.dim <= 0 || c.n_layers <= 0 || c.head_dim <= 0 || c.n_kv_heads <= 0 ||
            c.n_heads % c.n_kv_heads != 0 || c.vocab_size <= 0 || !(c.rope_theta > 0) ||
            !(c.norm_eps > 0))
            __builtin_trap();
    }
    return 0;
}
