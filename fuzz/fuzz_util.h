/*
 * fuzz_util.h - helpers shared by the libFuzzer targets that read files or directories:
 * a memfd path for one input, a private scratch directory (removed at exit), splitting an
 * input into parts at 0xFF bytes (several files from one input), and reading every weight
 * of a loaded model.
 */
#ifndef EF_FUZZ_UTIL_H
#define EF_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fileio.h"
#include "model/llama.h"

// The input as a file: /proc/self/fd/N of a memfd holding it; returns the fd (close it) or -1.
static inline int fuzz_memfd(const uint8_t *data, size_t size, char *path, size_t n) {
    int fd = memfd_create("fuzz", 0);
    if (fd < 0) return -1;
    if (size && write(fd, data, size) != (ssize_t)size) {
        close(fd);
        return -1;
    }
    snprintf(path, n, "/proc/self/fd/%d", fd);
    return fd;
}

static char fuzz_dir_path[64];

static inline void fuzz_dir_remove(void) {
    char cmd[96];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fuzz_dir_path);
    if (system(cmd) != 0) fprintf(stderr, "fuzz: cannot remove %s\n", fuzz_dir_path);
}

// This process's scratch directory, created on first use and removed at exit.
static inline const char *fuzz_dir(void) {
    if (!fuzz_dir_path[0]) {
        snprintf(fuzz_dir_path, sizeof fuzz_dir_path, "/tmp/edgeforge_fuzz_%ld", (long)getpid());
        mkdir(fuzz_dir_path, 0700);
        atexit(fuzz_dir_remove);
    }
    return fuzz_dir_path;
}

// Writes size bytes to <fuzz_dir()>/<sub>/<name> (sub may be NULL). 0 on success.
static inline int fuzz_write(const char *sub, const char *name, const void *data, size_t size) {
    char path[256];
    if (sub) {
        snprintf(path, sizeof path, "%s/%s", fuzz_dir(), sub);
        mkdir(path, 0700);
        snprintf(path, sizeof path, "%s/%s/%s", fuzz_dir(), sub, name);
    } else {
        snprintf(path, sizeof path, "%s/%s", fuzz_dir(), name);
    }
    return file_write_all(path, data, size) == STATUS_OK ? 0 : -1;
}

// Part k (0-based) of the input cut at 0xFF bytes: *len bytes at the returned pointer (an
// empty part when the input has fewer parts).
static inline const uint8_t *fuzz_part(const uint8_t *data, size_t size, int k, size_t *len) {
    size_t b = 0;
    for (int i = 0; i < k; i++) {
        const uint8_t *ff = b < size ? memchr(data + b, 0xFF, size - b) : NULL;
        if (!ff) {
            *len = 0;
            return data + size;
        }
        b = (size_t)(ff - data) + 1;
    }
    const uint8_t *ff = b < size ? memchr(data + b, 0xFF, size - b) : NULL;
    *len = (ff ? (size_t)(ff - data) : size) - b;
    return data + b;
}

static inline void fuzz_touch(const Tensor *t, volatile uint8_t *acc) {
    if (!t->data) return;
    const uint8_t *p = t->data;
    const size_t n = (size_t)tensor_numel(t) * dtype_size(t->dtype);
    for (size_t i = 0; i < n; i++)
        *acc ^= p[i];
}

// Reads every byte of every weight of an accepted model (absent ones, e.g. biases, skipped),
// so a view past its mapping or buffer shows up under ASan.
static inline void fuzz_touch_model(const Model *m) {
    volatile uint8_t acc = 0;
    fuzz_touch(&m->tok_emb, &acc);
    fuzz_touch(&m->final_norm, &acc);
    fuzz_touch(&m->lm_head, &acc);
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const LlamaLayer *ly = &m->layers[l];
        const Tensor *ts[] = {&ly->attn_norm, &ly->wq,     &ly->wk,   &ly->wv,
                              &ly->bq,        &ly->bk,     &ly->bv,   &ly->wo,
                              &ly->ffn_norm,  &ly->w_gate, &ly->w_up, &ly->w_down};
        for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
            fuzz_touch(ts[i], &acc);
    }
}

#endif
