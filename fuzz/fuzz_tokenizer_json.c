/*
 * fuzz_tokenizer_json.c - libFuzzer target for the tokenizer.json reader and the encoder:
 * the input is tokenizer.json text, optionally followed by a 0xFF byte and text to
 * encode (0xFF never occurs in UTF-8 JSON). Every accepted tokenizer must encode any
 * bytes (invalid UTF-8 included), decode its own ids, stream-decode them and decode out
 * of range ids as an error. Crashes, overreads (ASan) and UB (UBSan) are bugs.
 *
 *   make fuzz && build-fuzz/fuzz_tokenizer_json -max_total_time=120 -max_len=4096 \
 *       -dict=fuzz/tokenizer_json.dict fuzz/corpus_tokenizer_json
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *sep = memchr(data, 0xFF, size);
    size_t json_len = sep ? (size_t)(sep - data) : size;
    const char *text =
        sep ? (const char *)sep + 1 : "Hello  world\n\t<s> 12345 caf\xC3\xA9 \xF0\x9F\x98\x80";
    size_t text_len = sep ? size - json_len - 1 : strlen(text);
    Tokenizer *t = NULL;
    if (tokenizer_load_hf_json(&t, (const char *)data, json_len, "fuzz/tokenizer.json") !=
        STATUS_OK) {
        if (t) __builtin_trap(); // no partial output on error
        return 0;
    }
    static const int flags[] = {0, TOKENIZE_HF, TOKENIZE_ADD_BOS | TOKENIZE_PARSE_SPECIAL};
    for (size_t f = 0; f < sizeof flags / sizeof flags[0]; f++) {
        int32_t *ids = NULL;
        int n = 0;
        if (tokenizer_encode(t, text, text_len, flags[f], &ids, &n) != STATUS_OK) __builtin_trap();
        for (int i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= tokenizer_vocab_size(t)) __builtin_trap();
        char *out = NULL;
        size_t len = 0;
        if (tokenizer_decode(t, ids, n, f == 1, &out, &len) != STATUS_OK) __builtin_trap();
        if (strlen(out) > len) __builtin_trap();
        free(out);
        TokenizerStream st;
        tokenizer_stream_init(&st, t);
        for (int i = 0; i < n; i++)
            (void)tokenizer_stream_push(&st, ids[i]);
        (void)tokenizer_stream_flush(&st);
        free(ids);
    }
    int32_t bad = tokenizer_vocab_size(t);
    char *out = NULL;
    size_t len;
    if (tokenizer_decode(t, &bad, 1, false, &out, &len) == STATUS_OK) __builtin_trap();
    tokenizer_free(t);
    return 0;
}
