/*
 * fuzz_llama2c.c - libFuzzer target for the llama2.c checkpoint loader
 * (model_load_llama2c: legacy 7-int header, version 1/2 "ak42" headers). Every weight
 * of an accepted model is read end to end, so a view past the mapping shows up under ASan.
 *
 *   make fuzz && build-fuzz/fuzz_llama2c -max_total_time=120 -max_len=8192
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include "model/llama.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void touch(const Tensor *t, volatile float *sum) {
    if (!t->data) return;
    const float *p = t->data; // llama2.c weights are always f32
    for (int64_t i = 0; i < tensor_numel(t); i++)
        *sum += p[i];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int fd = memfd_create("fuzz", 0);
    if (fd < 0) return 0;
    if (size && write(fd, data, size) != (ssize_t)size) {
        close(fd);
        return 0;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    Model m;
    if (model_load_llama2c(&m, path) == STATUS_OK) {
        volatile float sum = 0;
        touch(&m.tok_emb, &sum);
        touch(&m.final_norm, &sum);
        touch(&m.lm_head, &sum);
        for (int l = 0; l < m.cfg.n_layers; l++) {
            const LlamaLayer *ly = &m.layers[l];
            const Tensor *ts[] = {&ly->attn_norm, &ly->wq,     &ly->wk,   &ly->wv,    &ly->wo,
                                  &ly->ffn_norm,  &ly->w_gate, &ly->w_up, &ly->w_down};
            for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
                touch(ts[i], &sum);
        }
        model_release(&m);
    }
    close(fd);
    return 0;
}
