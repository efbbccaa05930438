/*
 * bench_load_llamacpp.c - llama.cpp side of bench/bench_load.sh when llama-cpp-python is not
 * importable: times llama_model_load_from_file (model + vocab) and, separately, that plus
 * llama_init_from_model with n_ctx=512 (what llama_cpp.Llama(n_ctx=512) does), N reps, with
 * mmap on or off (load_mode MMAP or NONE); prints one JSON line like bench_load.c. Built against
 * the libllama.so that llama-cpp-python's source build produces (headers from its
 * vendor/llama.cpp).
 *
 *   cc -O2 -Ibench/out/llamacpp/include bench/bench_load_llamacpp.c -Lbench/out/llamacpp/lib \
 *      -lllama -lggml -lggml-base -Wl,-rpath,$PWD/bench/out/llamacpp/lib -o
 * build-iobench/bench_load_llamacpp build-iobench/bench_load_llamacpp --reps 7 --mmap 1 MODEL.gguf
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "llama.h"

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void quiet(enum ggml_log_level level, const char *text, void *user) {
    (void)level, (void)text, (void)user;
}

// One load (and optionally a context); returns the wall time in ms, < 0 on failure.
static double load_once(const char *path, int mmap, int with_ctx) {
    struct llama_model_params mp = llama_model_default_params();
    mp.load_mode = mmap ? LLAMA_LOAD_MODE_MMAP : LLAMA_LOAD_MODE_NONE;
    double t0 = now_ms();
    struct llama_model *m = llama_model_load_from_file(path, mp);
    if (!m) return -1;
    struct llama_context *c = NULL;
    if (with_ctx) {
        struct llama_context_params cp = llama_context_default_params();
        cp.n_ctx = 512;
        c = llama_init_from_model(m, cp);
        if (!c) return -1;
    }
    double t = now_ms() - t0;
    if (c) llama_free(c);
    llama_model_free(m);
    return t;
}

int main(int argc, char **argv) {
    int reps = 7, mmap = 1;
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--mmap") && i + 1 < argc)
            mmap = atoi(argv[++i]);
        else
            path = argv[i];
    }
    if (!path || reps < 1) {
        fprintf(stderr, "usage: bench_load_llamacpp [--reps N] [--mmap 0|1] MODEL.gguf\n");
        return 2;
    }
    llama_log_set(quiet, NULL);
    llama_backend_init();
    double *t[2];
    for (int w = 0; w < 2; w++) {
        t[w] = calloc((size_t)reps, sizeof(double));
        if (load_once(path, mmap, w) < 0) { // warm-up
            fprintf(stderr, "llama.cpp could not load %s\n", path);
            return 1;
        }
        for (int r = 0; r < reps; r++)
            t[w][r] = load_once(path, mmap, w);
        qsort(t[w], (size_t)reps, sizeof(double), cmp_double);
    }
#define MED(v) (reps % 2 ? (v)[reps / 2] : 0.5 * ((v)[reps / 2 - 1] + (v)[reps / 2]))
    printf("{\"path\": \"%s\", \"reps\": %d, \"mmap\": %d, \"model_ms_median\": %.2f, "
           "\"model_ms_min\": %.2f, \"model_ms_max\": %.2f, \"ctx_ms_median\": %.2f, "
           "\"ctx_ms_min\": %.2f, \"ctx_ms_max\": %.2f}\n",
           path, reps, mmap, MED(t[0]), t[0][0], t[0][reps - 1], MED(t[1]), t[1][0],
           t[1][reps - 1]);
    llama_backend_free();
    return 0;
}
