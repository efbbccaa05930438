/*
 * bench_omp.c - what one OpenMP parallel region costs on this machine: N regions of about
 * 2 us of work each on 2+ threads, timed. A decode step of SmolLM2-135M opens ~150 of them
 * (five per layer), so the per-region cost decides how much of a 20-40 ms token goes to
 * waking threads. Run it under each OMP_WAIT_POLICY:
 *
 *   cc -O2 -fopenmp -o bench_omp bench/bench_omp.c
 *   for p in passive active; do OMP_WAIT_POLICY=$p ./bench_omp; done; ./bench_omp
 */
#include <omp.h>
#include <stdio.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static float buf[64][4096];
static volatile float sink; // keeps the work from being optimized away

int main(void) {
    const int n = 20000, nt = omp_get_max_threads() < 64 ? omp_get_max_threads() : 64;
    double best = 1e9;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = now();
        for (int i = 0; i < n; i++) {
#pragma omp parallel for schedule(static) num_threads(nt)
            for (int t = 0; t < nt; t++) {
                float s = 0;
                for (int k = 0; k < 4096; k++)
                    buf[t][k] = s, s += 1.0f;
                if (buf[t][i % 4096] < 0) sink = s;
            }
        }
        double t = (now() - t0) / n;
        best = t < best ? t : best;
    }
    double t0 = now(); // the same work on one thread, no region
    for (int i = 0; i < n; i++) {
        float s = 0;
        for (int k = 0; k < 4096; k++)
            buf[0][k] = s, s += 1.0f;
        if (buf[0][i % 4096] < 0) sink = s;
    }
    double work = (now() - t0) / n;
    printf("%d threads: %.2f us per parallel region, of which ~%.2f us is the work\n", nt,
           best * 1e6, work * 1e6);
    return 0;
}
