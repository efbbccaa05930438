/*
 * fuzz_llama2c.c - libFuzzer target for the llama2.c checkpoint loader
 * (model_load_llama2c: legacy 7-int header, version 1/2 "ak42" headers). Every weight
 * of an accepted model is read end to end, so a view past the mapping shows up under ASan.
 *
 *   make fuzz && build-fuzz/fuzz_llama2c -max_total_time=120 -max_len=8192
 */
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

#include "fuzz_util.h"
#include "model/llama.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    int fd = fuzz_memfd(data, size, path, sizeof path);
    if (fd < 0) return 0;
    Model m;
    if (model_load_llama2c(&m, path) == STATUS_OK) {
        fuzz_touch_model(&m);
        model_release(&m);
    }
    close(fd);
    return 0;
}
