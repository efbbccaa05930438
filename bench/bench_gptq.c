/*
 * bench_gptq.c - timings of the GPTQ kernels (not tests: bench/bench_quant.sh runs them).
 *
 *   bench_gptq layer   GPTQ of W (1536, 576) plain and act-order, and of W (576, 1536),
 *                      each with 128 sequences x 512 tokens of calibration (the shapes of
 *                      SmolLM2-135M's gate/up and down; tools/gptq_ref.py bench does the same)
 *   bench_gptq gemv    the fused w4a16 GEMV (qmatmul_gemv) on random packed weights, group
 *                      128: GB/s of the packed bytes, wall and process CPU time
 *
 * Threads: OMP_NUM_THREADS. Output: one "bench gptq ..." / "bench gemv ..." line per case.
 */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/common.h"
#include "core/dtype.h"
#include "core/rng.h"
#include "quant/gptq.h"
#include "quant/gptq_pack.h"
#include "quant/qmatmul.h"

static double clock_s(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
static double wall(void) { return clock_s(CLOCK_MONOTONIC); }
static double cpu(void) { return clock_s(CLOCK_PROCESS_CPUTIME_ID); }

static int die(const char *what) {
    fprintf(stderr, "bench_gptq: %s: %s\n", what, status_msg());
    return 1;
}

// W (N, K), 128 sequences of 512 tokens (one batch reused: timing does not depend on values).
static int bench_layer(int64_t N, int64_t K, bool act_order) {
    Rng rng;
    rng_seed(&rng, 1);
    const int64_t T = 512, S = 128;
    float *X = xmalloc((size_t)(T * K) * 4), *W = xmalloc((size_t)(N * K) * 4);
    for (int64_t i = 0; i < N * K; i++)
        W[i] = (float)(0.02 * rng_normal(&rng));
    for (int64_t i = 0; i < T * K; i++)
        X[i] = (float)rng_normal(&rng) * (1 + (float)(i % K == 3) * 20);
    GptqHessian h;
    if (gptq_hessian_init(&h, K) != STATUS_OK) return die("hessian");
    double t0 = wall(), c0 = cpu();
    for (int64_t s = 0; s < S; s++)
        if (gptq_hessian_add_batch(&h, X, T, 1) != STATUS_OK) return die("hessian");
    double th = wall() - t0, ch = cpu() - c0;
    GptqOptions o;
    gptq_options_defaults(&o);
    o.act_order = act_order;
    GptqResult r;
    t0 = wall();
    c0 = cpu();
    if (gptq_quantize_layer(&r, W, N, &h, &o) != STATUS_OK) return die("quantize");
    printf("bench gptq W (%lld, %lld), %lldx%lld tokens, act-order %d: hessian %.3f s "
           "(cpu %.3f s), quantize %.3f s (cpu %.3f s), loss %.6g\n",
           (long long)N, (long long)K, (long long)S, (long long)T, act_order, th, ch, wall() - t0,
           cpu() - c0, r.loss);
    gptq_result_release(&r);
    gptq_hessian_release(&h);
    free(X);
    free(W);
    return 0;
}

// Random 4-bit codes, zeros and fp16 scales, group 128; act_order 1: permuted g_idx,
// 2: the same sorted into groups (gptq_packed_sort_groups, what the engine does at load).
static int bench_gemv(int64_t N, int64_t K, int act_order, Rng *rng) {
    const int64_t G = (K + 127) / 128;
    uint8_t *q = xmalloc((size_t)(N * K));
    int32_t *z = xmalloc((size_t)(G * N) * 4), *gi = xmalloc((size_t)K * 4);
    int32_t *perm = xmalloc((size_t)K * 4);
    uint16_t *sc = xmalloc((size_t)(G * N) * 2);
    for (int64_t i = 0; i < N * K; i++)
        q[i] = (uint8_t)rng_below(rng, 16);
    for (int64_t i = 0; i < G * N; i++) {
        z[i] = 8;
        sc[i] = f32_to_fp16((float)(0.002 + 0.02 * rng_uniform(rng)));
    }
    for (int64_t i = 0; i < K; i++)
        perm[i] = (int32_t)i;
    for (int64_t i = K - 1; act_order && i > 0; i--) {
        int64_t j = (int64_t)rng_below(rng, (uint64_t)i + 1);
        int32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (int64_t i = 0; i < K; i++)
        gi[i] = perm[i] / 128;
    GptqPacked p;
    if (gptq_pack(&p, q, z, sc, gi, K, N, 4, 128, G) != STATUS_OK) return die("pack");
    if (act_order == 2 && gptq_packed_sort_groups(&p) != STATUS_OK) return die("sort");
    float *x = xmalloc((size_t)K * 4), *y = xmalloc((size_t)N * 4);
    for (int64_t i = 0; i < K; i++)
        x[i] = (float)rng_normal(rng);
    const double bytes = (double)N * K / 2 + (double)p.G * N * 2.5;
    for (int isa = QMAT_ISA_COUNT - 1; isa >= 0; isa--) {
        if (isa == QMAT_ISA_AVX2 && qmatmul_isa_detect() != QMAT_ISA_AVX2) continue;
        qmatmul_gemv(y, x, &p, (QmatIsa)isa);
        // best of 5 runs of >= 0.1 s each; wall time and process CPU time (the machine is
        // shared: with one thread, CPU time is the time the kernel ran)
        double best = 1e30, best_cpu = 1e30;
        for (int rep = 0; rep < 5; rep++) {
            double t0 = wall(), c0 = cpu(), dt;
            int n = 0;
            do {
                qmatmul_gemv(y, x, &p, (QmatIsa)isa);
                n++;
            } while ((dt = wall() - t0) < 0.1);
            best = fmin(best, dt / n);
            best_cpu = fmin(best_cpu, (cpu() - c0) / n);
        }
        printf("bench gemv %s %lldx%lld g128%s: wall %.1f us %.2f GB/s; cpu %.1f us %.2f "
               "GB/s per cpu-second\n",
               isa == QMAT_ISA_AVX2 ? "avx2" : "portable", (long long)N, (long long)K,
               act_order == 2 ? " act-order sorted"
               : act_order    ? " act-order"
                              : "",
               best * 1e6, bytes / best / 1e9, best_cpu * 1e6, bytes / best_cpu / 1e9);
    }
    gptq_packed_release(&p);
    free(q);
    free(z);
    free(gi);
    free(perm);
    free(sc);
    free(x);
    free(y);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 2 && !strcmp(argv[1], "layer"))
        return bench_layer(1536, 576, false) || bench_layer(1536, 576, true) ||
               bench_layer(576, 1536, false);
    if (argc == 2 && !strcmp(argv[1], "gemv")) {
        Rng rng;
        rng_seed(&rng, 1);
        return bench_gemv(1536, 576, 0, &rng) || bench_gemv(1536, 576, 1, &rng) ||
               bench_gemv(1536, 576, 2, &rng) || bench_gemv(49152, 576, 0, &rng);
    }
    fprintf(stderr, "usage: bench_gptq layer|gemv\n");
    return 2;
}
