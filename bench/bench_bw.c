/*
 * bench_bw.c - measures the machine's memory read bandwidth the way decode reads
 * weights: every thread streams through its share of a buffer far larger than the last-
 * level cache, summing floats (so the loads cannot be optimised away). Prints GB/s
 * (1e9 bytes/s), best of several passes.
 *
 *   cc -O2 -fopenmp -o bench_bw bench/bench_bw.c && OMP_NUM_THREADS=2 ./bench_bw 512
 *
 * Argument: buffer size in MiB (default 512). Built by bench/bench_infer.sh.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef _OPENMP
#include <omp.h>
#endif

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    long mib = argc > 1 ? strtol(argv[1], NULL, 10) : 512;
    if (mib < 64 || mib > 65536) {
        fprintf(stderr, "error: buffer size %ld MiB is outside 64..65536\n", mib);
        return 2;
    }
    size_t n = (size_t)mib * 1024 * 1024 / sizeof(float);
    float *buf = aligned_alloc(64, n * sizeof(float));
    if (!buf) {
        fprintf(stderr, "error: cannot allocate %ld MiB\n", mib);
        return 1;
    }
    // first touch by the threads that will read (page placement), small values
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++)
        buf[i] = (float)(i & 7) * 0.125f;
    double best = 1e30, sink = 0;
    for (int pass = 0; pass < 7; pass++) {
        double t0 = now(), total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total)
        for (size_t b = 0; b < n; b += 4096) {
            // 16 independent partial sums so the adds keep up with the loads
            float acc[16] = {0};
            size_t e = b + 4096 < n ? b + 4096 : n;
            for (size_t i = b; i + 16 <= e; i += 16)
                for (int j = 0; j < 16; j++)
                    acc[j] += buf[i + j];
            float s = 0;
            for (int j = 0; j < 16; j++)
                s += acc[j];
            total += s;
        }
        double dt = now() - t0;
        sink += total;
        if (dt < best) best = dt;
    }
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    printf("read_bw_gbs %.2f threads %d buffer_mib %ld (checksum %g)\n",
           (double)n * sizeof(float) / best / 1e9, threads, mib, sink);
    free(buf);
    return 0;
}
