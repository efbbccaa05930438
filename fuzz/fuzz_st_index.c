/*
 * fuzz_st_index.c - libFuzzer target for the sharded-weights index
 * (model.safetensors.index.json, src/model/st_dir.c): the input is written as the index of
 * a directory that holds two small shards (model-00001-of-00002.safetensors with tensors
 * "a" and "b", model-00002-of-00002.safetensors with "c"), opened with st_dir_open, and
 * every name it maps is looked up, marked, checked and bound, so a weight_map that names
 * odd files, non-strings, missing or duplicate tensors shows up under ASan/UBSan.
 *
 *   make fuzz && build-fuzz/fuzz_st_index -max_total_time=120 -max_len=2048 fuzz/corpus/st_index
 */
#include "fuzz_util.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fileio.h"
#include "core/log.h"
#include "model/llama.h"
#include "model/st_dir.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool ready;

static void make_shard(const char *name, const char *const *tensors, int n) {
    static const float vals[6] = {1, 2, 3, 4, 5, 6};
    SafeWriter w;
    safewriter_init(&w);
    for (int i = 0; i < n; i++) {
        const int64_t shp[2] = {2, 3};
        safewriter_add(&w, tensors[i], ST_F32, 2, shp, vals);
    }
    char path[128];
    snprintf(path, sizeof path, "%s/%s", fuzz_dir(), name);
    if (safewriter_write(&w, path) != STATUS_OK) abort();
    safewriter_release(&w);
}

static void setup(void) {
    if (ready) return;
    const char *one[] = {"a", "b"}, *two[] = {"c"};
    make_shard("model-00001-of-00002.safetensors", one, 2);
    make_shard("model-00002-of-00002.safetensors", two, 1);
    ready = true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    log_set_level(LOG_ERROR);
    setup();
    if (fuzz_write(NULL, "model.safetensors.index.json", data, size) != 0) return 0;
    StDir d;
    Model m;
    model_init(&m);
    if (st_dir_open(&d, fuzz_dir(), &m) == STATUS_OK) {
        const char *probe[] = {"a", "b", "c", "d", ""};
        for (size_t i = 0; i < sizeof probe / sizeof probe[0]; i++) {
            const char *file;
            const SafeTensor *t = st_dir_find(&d, probe[i], &file);
            if (t) {
                volatile float s = 0;
                for (int j = 0; j < 6; j++)
                    s += ((const float *)t->data)[j];
                (void)s;
            }
            (void)st_dir_listed(&d, probe[i]);
            if (!t) (void)st_dir_missing(&d, "tensor", probe[i]);
            Tensor x;
            (void)st_dir_bind(&d, &m, &x, probe[i], 2, 3);
            st_dir_use(&d, probe[i]);
        }
        (void)st_dir_check_unused(&d);
        st_dir_release(&d);
    }
    model_release(&m);
    return 0;
}
