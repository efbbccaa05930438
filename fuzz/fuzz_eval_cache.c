/*
 * fuzz_eval_cache.c - libFuzzer target for the eval cache file parser (eval_cache_parse):
 * arbitrary bytes as a cache file for fixed settings, then lookups of every parsed key's
 * neighbours and a few puts (the table's growth). Errors are expected; crashes, overreads
 * (ASan) and undefined behaviour (UBSan) are bugs.
 *
 *   make fuzz && build-fuzz/fuzz_eval_cache -max_total_time=60 -max_len=4096
 */
#include <stddef.h>
#include <stdint.h>

#include "eval/eval_cache.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    EvalCache c = {0};
    size_t whole;
    if (eval_cache_parse(&c, (const char *)data, size, "fuzz", "m.gguf (10 bytes)", false, 64,
                         &whole) == STATUS_OK) {
        double ll;
        bool g;
        for (uint64_t k = 1; k < 64; k++) {
            (void)eval_cache_get(&c, k, &ll, &g);
            (void)eval_cache_put(&c, k * 0x9E3779B97F4A7C15ULL, -1.0, true);
        }
    }
    eval_cache_close(&c);
    return 0;
}
