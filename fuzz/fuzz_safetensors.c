/*
 * fuzz_safetensors.c - libFuzzer target for the safetensors reader (safetensors_open):
 * the input is the whole file. Every tensor the reader accepts is read end to end,
 * so an offset or size that escapes the mapping shows up under ASan.
 *
 *   make fuzz && build-fuzz/fuzz_safetensors -max_total_time=120 -max_len=4096
 */
#include "fuzz_util.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include "model/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

// The input goes into an in-memory file that the reader maps like any other path.
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    int fd = fuzz_memfd(data, size, path, sizeof path);
    if (fd < 0) return 0;
    SafeTensors st;
    if (safetensors_open(&st, path) == STATUS_OK) {
        volatile unsigned sum = 0;
        for (int i = 0; i < st.n_tensors; i++) {
            const unsigned char *p = st.tensors[i].data;
            for (uint64_t k = 0; k < st.tensors[i].nbytes; k++)
                sum += p[k];
            if (safetensors_find(&st, st.tensors[i].name) == NULL) __builtin_trap();
        }
        for (int i = 0; i < st.n_meta; i++)
            if (safetensors_meta(&st, st.meta_keys[i]) == NULL) __builtin_trap();
        safetensors_close(&st);
    }
    close(fd);
    return 0;
}
