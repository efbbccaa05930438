/*
 * bench_qmatmul.c - the w4a16 decode GEMV on every SIMD path this CPU has, side by side:
 * the 210 linears of a SmolLM2-135M-shaped model (30 layers of q/k/v/o/gate/up/down, group
 * 128, random codes) through qmatmul_gemv with the path forced, and a plain read of as many
 * bytes (the bandwidth the GEMV competes with). Prints ms per pass, GB/s of packed weights
 * and the ratio to the read; the outputs of the paths are compared bit for bit.
 *
 *   cc -O2 -fopenmp -Isrc bench/bench_qmatmul.c build/libedgeforge.a -lopenblas -lm \
 *       -o bench/out/bench_qmatmul && OMP_NUM_THREADS=N bench/out/bench_qmatmul [REPS]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/common.h"
#include "core/dtype.h"
#include "core/rng.h"
#include "quant/gptq_pack.h"
#include "quant/qmatmul.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

enum { L = 30, NL = 7 };

static void make(GptqPacked *p, int64_t N, int64_t K, Rng *r) {
    const int64_t G = (K + 127) / 128;
    uint8_t *q = xmalloc((size_t)(N * K));
    int32_t *z = xmalloc((size_t)(G * N) * 4), *gi = xmalloc((size_t)K * 4);
    uint16_t *sc = xmalloc((size_t)(G * N) * 2);
    for (int64_t i = 0; i < N * K; i++)
        q[i] = (uint8_t)rng_below(r, 16);
    for (int64_t i = 0; i < G * N; i++) {
        z[i] = 8;
        sc[i] = f32_to_fp16(0.01f);
    }
    for (int64_t i = 0; i < K; i++)
        gi[i] = (int32_t)(i / 128);
    if (gptq_pack(p, q, z, sc, gi, K, N, 4, 128, G) != STATUS_OK ||
        gptq_packed_sort_groups(p) != STATUS_OK)
        exit(1);
    free(q);
    free(z);
    free(gi);
    free(sc);
}

int main(int argc, char **argv) {
    const int reps = argc > 1 ? atoi(argv[1]) : 5;
    static const int64_t shp[NL][2] = {{576, 576},  {192, 576},  {192, 576}, {576, 576},
                                       {1536, 576}, {1536, 576}, {576, 1536}};
    Rng r;
    rng_seed(&r, 1);
    GptqPacked(*w)[NL] = xmalloc(sizeof(GptqPacked[NL]) * L);
    double bytes = 0;
    for (int l = 0; l < L; l++)
        for (int i = 0; i < NL; i++) {
            make(&w[l][i], shp[i][0], shp[i][1], &r);
            bytes +=
                (double)(shp[i][0] * shp[i][1]) / 2 + (double)shp[i][0] * 2 * 5; // codes+scales
        }
    float x[1536], *y[QMAT_ISA_COUNT];
    for (int i = 0; i < 1536; i++)
        x[i] = (float)rng_normal(&r);
    const size_t nb = (size_t)(bytes / 4);
    float *buf = xmalloc(nb * 4);
    for (size_t i = 0; i < nb; i++)
        buf[i] = 1.0f;
    const QmatIsa best = qmatmul_isa_detect();
    printf("best path %d; %.1f MB of packed weights per pass\n", best, bytes / 1e6);
    for (int isa = QMAT_ISA_AVX2; isa <= (int)best; isa++)
        y[isa] = xmalloc(sizeof(float) * L * NL * 1536);
    for (int rep = 0; rep < reps; rep++) {
        double t1 = now(), tot = 0;
        for (int it = 0; it < 5; it++) {
#pragma omp parallel for schedule(static) reduction(+ : tot)
            for (size_t b = 0; b < nb; b += 4096) {
                float a[16] = {0};
                const size_t e = b + 4096 < nb ? b + 4096 : nb;
                for (size_t i = b; i + 16 <= e; i += 16)
                    for (int j = 0; j < 16; j++)
                        a[j] += buf[i + j];
                for (int j = 0; j < 16; j++)
                    tot += a[j];
            }
        }
        const double tread = (now() - t1) / 5;
        printf("read %.3f ms %.1f GB/s (%g)", tread * 1e3, bytes / tread / 1e9,
               tot > 0 ? 1.0 : 0.0);
        for (int isa = QMAT_ISA_AVX2; isa <= (int)best; isa++) {
            const double t0 = now();
            const int T = 20;
            for (int t = 0; t < T; t++)
                for (int l = 0; l < L; l++)
                    for (int i = 0; i < NL; i++)
                        qmatmul_gemv(y[isa] + (l * NL + i) * 1536, x, &w[l][i], (QmatIsa)isa);
            const double dt = (now() - t0) / T;
            printf(" | isa %d: %.3f ms %.1f GB/s (%.0f %% of read)", isa, dt * 1e3,
                   bytes / dt / 1e9, 100 * tread / dt);
        }
        printf("\n");
    }
    for (int isa = QMAT_ISA_AVX2 + 1; isa <= (int)best; isa++)
        printf("isa %d output %s isa %d's\n", isa,
               memcmp(y[isa], y[QMAT_ISA_AVX2], sizeof(float) * L * NL * 1536) ? "DIFFERS from"
                                                                               : "equals",
               QMAT_ISA_AVX2);
    return 0;
}
