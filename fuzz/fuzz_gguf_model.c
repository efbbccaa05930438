/*
 * fuzz_gguf_model.c - libFuzzer target for the model-level GGUF loader (model_load_gguf in
 * src/model/model_gguf.c): the architecture and config from metadata, tensor binding
 * (zero-copy views, dequantized and q/k-permuted copies, rope_freqs), and the tokenizer
 * from tokenizer.ggml.*. fuzz_gguf covers the container; this covers what is built on it.
 * When the loader accepts the bytes, every weight is read end to end (a view past the
 * mapping shows up under ASan) and the tokenizer encodes and decodes a short text.
 *
 *   make fuzz && build-fuzz/fuzz_gguf_model -max_total_time=120 -max_len=16384 \
 *       build-fuzz/corpus-gguf_model fuzz/corpus/gguf_model
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "fuzz_util.h"
#include "model/llama.h"
#include "model/model_io.h"
#include "model/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void use_tokenizer(const Tokenizer *tok) {
    static const char text[] = "ab a <s> b\xc3\xa9 \xe2\x96\x81"
                               "a";
    int32_t *ids = NULL;
    int n = 0;
    if (tokenizer_encode(tok, text, sizeof text - 1, TOKENIZE_HF, &ids, &n) == STATUS_OK) {
        char *s = NULL;
        size_t len = 0;
        if (tokenizer_decode(tok, ids, n, true, &s, &len) == STATUS_OK) free(s);
        free(ids);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    int fd = fuzz_memfd(data, size, path, sizeof path);
    if (fd < 0) return 0;
    Model m;
    if (model_load_gguf(&m, path) == STATUS_OK) {
        fuzz_touch_model(&m);
        if (m.tok) use_tokenizer(m.tok);
        model_release(&m);
    }
    close(fd);
    return 0;
}
