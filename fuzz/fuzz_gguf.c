/*
 * fuzz_gguf.c - libFuzzer target for the GGUF reader: parse arbitrary bytes, walk every
 * metadata value and dequantize every tensor the reader accepted. Any crash, overread
 * (ASan) or undefined behaviour (UBSan) is a bug; errors are expected.
 *
 *   make fuzz && build-fuzz/fuzz_gguf -max_total_time=120 tests/fixtures/gguf
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t walk(const GgufValue *v, int depth) {
    uint64_t h = (uint64_t)v->type;
    if (v->type == GGUF_TYPE_STRING)
        return h + v->v.str.len + (v->v.str.len ? (uint8_t)v->v.str.ptr[0] : 0);
    if (v->type != GGUF_TYPE_ARRAY) return h + v->v.u;
    for (uint64_t i = 0; i < v->n && i < 4096; i++) {
        if (v->raw) {
            double f = gguf_arr_float(v, i);
            uint64_t bits;
            memcpy(&bits, &f, 8);
            h += (uint64_t)gguf_arr_int(v, i) + bits;
        } else if (v->strs)
            h +=
                v->strs[i].len + (v->strs[i].len ? (uint8_t)v->strs[i].ptr[v->strs[i].len - 1] : 0);
        else if (v->items && depth < 16)
            h += walk(&v->items[i], depth + 1);
    }
    return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    // an exact-size copy so that ASan catches reads past the end
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy) return 0;
    memcpy(copy, data, size);
    Gguf g;
    if (gguf_open_buffer(&g, copy, size, "fuzz.gguf") == STATUS_OK) {
        volatile uint64_t sink = 0;
        for (int64_t i = 0; i < g.n_kv; i++)
            sink += walk(&g.kv[i].val, 0);
        for (int64_t i = 0; i < g.n_tensors; i++) {
            const GgufTensorInfo *t = &g.tensors[i];
            if (!gguf_tensor_can_dequant(t->type) || t->n_elems > (1 << 20)) continue;
            float *out = malloc((size_t)t->n_elems * sizeof *out + 1);
            uint32_t bits = 0;
            if (out && gguf_tensor_to_f32(&g, t, out) == STATUS_OK && t->n_elems > 0)
                memcpy(&bits, out, 4);
            sink += bits;
            free(out);
        }
        (void)sink;
        gguf_close(&g);
    }
    free(copy);
    return 0;
}
