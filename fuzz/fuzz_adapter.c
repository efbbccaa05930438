/*
 * fuzz_adapter.c - libFuzzer target for the PEFT adapter reader (lora_load_peft,
 * src/train/lora.c): the input, cut at the first 0xFF, becomes adapter_config.json and
 * adapter_model.safetensors of a scratch directory, read for stories260K's configuration
 * (5 layers, dim 64, 8 heads / 4 KV heads, hidden 172); an accepted adapter is merged into
 * the model (every tensor read end to end). Run from the repository root.
 *
 *   make fuzz && build-fuzz/fuzz_adapter -max_total_time=120 -max_len=32768 fuzz/corpus/adapter
 */
#include "fuzz_util.h"

#include "core/log.h"
#include "model/llama.h"
#include "train/lora.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static Model model;
static bool loaded;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    log_set_level(LOG_ERROR);
    if (!loaded) {
        if (model_load(&model, "models/stories260K/stories260K.bin", NULL) != STATUS_OK)
            abort(); // run from the repository root
        loaded = true;
    }
    size_t l0, l1;
    const uint8_t *p0 = fuzz_part(data, size, 0, &l0), *p1 = fuzz_part(data, size, 1, &l1);
    if (fuzz_write("adapter", "adapter_config.json", p0, l0) != 0 ||
        fuzz_write("adapter", "adapter_model.safetensors", p1, l1) != 0)
        return 0;
    char dir[128];
    snprintf(dir, sizeof dir, "%s/adapter", fuzz_dir());
    LoraModel lm;
    if (lora_load_peft(&lm, &model.cfg, dir) == STATUS_OK) {
        Model m;
        if (model_load(&m, "models/stories260K/stories260K.bin", NULL) == STATUS_OK) {
            (void)lora_merge_model(&lm, &m);
            model_release(&m);
        }
        lora_release(&lm);
    }
    return 0;
}
