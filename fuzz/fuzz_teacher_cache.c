/*
 * fuzz_teacher_cache.c - libFuzzer target for the top-k teacher-logit cache reader
 * (teacher_cache_load, src/train/teacher_cache.c): the input as a cache file; of an accepted
 * cache every stored (id, log-probability) pair and offset is read.
 *
 *   make fuzz && build-fuzz/fuzz_teacher_cache -max_total_time=120 -max_len=8192
 */
#include "fuzz_util.h"

#include "core/log.h"
#include "train/teacher_cache.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    log_set_level(LOG_ERROR);
    char path[64];
    int fd = fuzz_memfd(data, size, path, sizeof path);
    if (fd < 0) return 0;
    TeacherCache tc;
    if (teacher_cache_load(&tc, path) == STATUS_OK) {
        volatile double s = 0;
        for (int64_t i = 0; i < tc.rows * tc.K; i++)
            s += (double)tc.logp[i] + (double)tc.ids[i];
        for (int i = 0; i <= tc.n_examples; i++)
            s += (double)tc.offsets[i];
        (void)s;
        teacher_cache_release(&tc);
    }
    close(fd);
    return 0;
}
