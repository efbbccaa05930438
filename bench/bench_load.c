/*
 * bench_load.c - times model_load (detect + parse + map + dequantize/q-k permutation +
 * tokenizer) for each path, N repetitions, and prints one JSON line per path with the
 * median, min and max wall time in milliseconds. --touch also reads every weight byte
 * after the load (forces mapped pages in: what the first forward pass would pay), timed
 * separately. Files are in the page cache after the first (untimed) warm-up load, like
 * every other tool in bench/bench_load.sh; this measures the loader, not the disk.
 *
 *   cc -std=c11 -O2 -D_GNU_SOURCE -Isrc bench/bench_load.c build-iobench/libedgeforge.a \
 *      $(pkg-config --libs jansson libpcre2-8 hiredis libcurl) -lopenblas -lm -lpthread \
 *      -fopenmp -o build-iobench/bench_load
 *   build-iobench/bench_load --reps 10 --touch models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
 *   -> {"path": "...", "reps": 10, "load_ms_median": ..., "touch_ms_median": ..., ...}
 *
 * Options: --reps N (default 10), --touch, --no-tokenizer (ModelLoadOptions.no_tokenizer).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model/llama.h"
#include "model/model_io.h"

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Reads every byte of a weight (8 bytes at a time; the tail byte-wise) so that mapped
// pages are faulted in; the sum goes to a volatile sink so the loop is not removed.
static uint64_t touch_tensor(const Tensor *t) {
    if (!t->data) return 0;
    size_t n = (size_t)tensor_numel(t) * dtype_size(t->dtype);
    const unsigned char *p = t->data;
    uint64_t s = 0, w;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        memcpy(&w, p + i, 8);
        s += w;
    }
    for (; i < n; i++)
        s += p[i];
    return s;
}

static uint64_t touch_model(const Model *m, uint64_t *bytes) {
    uint64_t s = touch_tensor(&m->tok_emb) + touch_tensor(&m->final_norm);
    *bytes = (uint64_t)tensor_numel(&m->tok_emb) * dtype_size(m->tok_emb.dtype);
    if (m->lm_head.data != m->tok_emb.data) {
        s += touch_tensor(&m->lm_head);
        *bytes += (uint64_t)tensor_numel(&m->lm_head) * dtype_size(m->lm_head.dtype);
    }
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const LlamaLayer *ly = &m->layers[l];
        const Tensor *ts[] = {&ly->attn_norm, &ly->wq,     &ly->wk,   &ly->wv,
                              &ly->bq,        &ly->bk,     &ly->bv,   &ly->wo,
                              &ly->ffn_norm,  &ly->w_gate, &ly->w_up, &ly->w_down};
        for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
            s += touch_tensor(ts[i]);
            if (ts[i]->data) *bytes += (uint64_t)tensor_numel(ts[i]) * dtype_size(ts[i]->dtype);
        }
    }
    return s;
}

static int bench_path(const char *path, int reps, int touch, const ModelLoadOptions *opts) {
    double *load = calloc((size_t)reps, sizeof *load), *tch = calloc((size_t)reps, sizeof *tch);
    if (!load || !tch) return 1;
    volatile uint64_t sink = 0;
    uint64_t bytes = 0;
    Model m;
    // warm-up: page cache and allocator state as for the timed runs
    if (model_load(&m, path, opts) != STATUS_OK) {
        fprintf(stderr, "bench_load: %s\n", status_msg());
        return 1;
    }
    LlamaConfig cfg = m.cfg;
    model_release(&m);
    for (int r = 0; r < reps; r++) {
        double t0 = now_ms();
        if (model_load(&m, path, opts) != STATUS_OK) {
            fprintf(stderr, "bench_load: %s\n", status_msg());
            return 1;
        }
        double t1 = now_ms();
        if (touch) sink += touch_model(&m, &bytes);
        double t2 = now_ms();
        model_release(&m);
        load[r] = t1 - t0;
        tch[r] = t2 - t1;
    }
    (void)sink;
    double mn = load[0], mx = load[0];
    for (int r = 1; r < reps; r++) {
        if (load[r] < mn) mn = load[r];
        if (load[r] > mx) mx = load[r];
    }
    printf("{\"path\": \"%s\", \"reps\": %d, \"tokenizer\": %s, \"layers\": %d, \"dim\": %d, "
           "\"load_ms_median\": %.2f, \"load_ms_min\": %.2f, \"load_ms_max\": %.2f",
           path, reps, opts->no_tokenizer ? "false" : "true", cfg.n_layers, cfg.dim,
           median(load, reps), mn, mx);
    if (touch)
        printf(", \"touch_ms_median\": %.2f, \"weight_bytes\": %llu", median(tch, reps),
               (unsigned long long)bytes);
    printf("}\n");
    free(load);
    free(tch);
    return 0;
}

int main(int argc, char **argv) {
    int reps = 10, touch = 0, rc = 0;
    ModelLoadOptions opts = {0};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            reps = atoi(argv[++i]);
            if (reps < 1) reps = 1;
        } else if (!strcmp(argv[i], "--touch")) {
            touch = 1;
        } else if (!strcmp(argv[i], "--no-tokenizer")) {
            opts.no_tokenizer = true;
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "usage: bench_load [--reps N] [--touch] [--no-tokenizer] PATH...\n");
            return 2;
        } else {
            rc |= bench_path(argv[i], reps, touch, &opts);
        }
    }
    return rc;
}
