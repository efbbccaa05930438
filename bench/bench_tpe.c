/*
 * bench_tpe.c - edgeforge's TPE and random samplers on standard test functions: the best
 * value after 16 and after 64 trials over many seeds, and the time per suggestion.
 * bench/bench_tpe.py runs Optuna's TPESampler/RandomSampler on the same functions and
 * budgets and puts the two side by side with statistics.
 *
 *   make BUILD=build-hpo build-hpo/libedgeforge.a
 *   cc -std=c11 -O2 -D_GNU_SOURCE -Isrc $(pkg-config --cflags jansson hiredis) bench/bench_tpe.c \
 *      build-hpo/libedgeforge.a $(pkg-config --libs jansson hiredis libpcre2-8 libcurl) \
 *      -lopenblas -lm -lpthread -fopenmp -o build-hpo/bench_tpe
 *   build-hpo/bench_tpe [--seeds 30] [--trials 64] [--func NAME] > bench/bench_tpe.edgeforge.jsonl
 *
 * One JSON object per (function, sampler, seed) line: best16, best64, suggest_us (mean wall
 * time of one hpo_tpe_suggest call, in-memory history, one thread).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/common.h"
#include "core/rng.h"
#include "hpo/space.h"
#include "hpo/tpe.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double branin(const double *x) {
    double a = 1, b = 5.1 / (4 * M_PI * M_PI), c = 5 / M_PI, r = 6, s = 10, t = 1 / (8 * M_PI);
    double u = x[1] - b * x[0] * x[0] + c * x[0] - r;
    return a * u * u + s * (1 - t) * cos(x[0]) + s;
}

static double hartmann6(const double *x) {
    static const double alpha[4] = {1.0, 1.2, 3.0, 3.2};
    static const double A[4][6] = {{10, 3, 17, 3.5, 1.7, 8},
                                   {0.05, 10, 17, 0.1, 8, 14},
                                   {3, 3.5, 1.7, 10, 17, 8},
                                   {17, 8, 0.05, 10, 0.1, 14}};
    static const double P[4][6] = {{1312, 1696, 5569, 124, 8283, 5886},
                                   {2329, 4135, 8307, 3736, 1004, 9991},
                                   {2348, 1451, 3522, 2883, 3047, 6650},
                                   {4047, 8828, 8732, 5743, 1091, 381}};
    double f = 0;
    for (int i = 0; i < 4; i++) {
        double e = 0;
        for (int j = 0; j < 6; j++)
            e += A[i][j] * (x[j] - 1e-4 * P[i][j]) * (x[j] - 1e-4 * P[i][j]);
        f -= alpha[i] * exp(-e);
    }
    return f;
}

static double rosenbrock4(const double *x) {
    double f = 0;
    for (int i = 0; i < 3; i++)
        f += 100 * pow(x[i + 1] - x[i] * x[i], 2) + pow(1 - x[i], 2);
    return f;
}

// Shaped like the paper's Table 3 space (scale, rank int, lr log, temperature, alpha, wd):
// a smooth bowl with its minimum 0 inside the space, log-scaled in lr.
static double table3_like(const double *x) {
    double f = pow(x[0] - 1.25, 2) + pow((x[1] - 24) / 28.0, 2) + pow(log10(x[2]) + 3.6, 2);
    f += pow((x[3] - 2.0) / 3.75, 2) + pow(x[4] - 0.7, 2) + pow((x[5] - 0.1) / 2, 2);
    return f;
}

typedef struct {
    const char *name;
    const char *space; // flags joined by ';'
    double (*fn)(const double *);
} Problem;

static const Problem PROBLEMS[] = {
    {"branin", "x0=float:-5:10;x1=float:0:15", branin},
    {"hartmann6", "x0=float:0:1;x1=float:0:1;x2=float:0:1;x3=float:0:1;x4=float:0:1;x5=float:0:1",
     hartmann6},
    {"rosenbrock4", "x0=float:-5:10;x1=float:-5:10;x2=float:-5:10;x3=float:-5:10", rosenbrock4},
    {"table3", "table3", table3_like},
};

static void make_space(HpoSpace *sp, const char *spec) {
    memset(sp, 0, sizeof(*sp));
    if (strcmp(spec, "table3") == 0) {
        hpo_space_table3(sp);
        return;
    }
    char *dup = xstrdup(spec), *save = NULL;
    for (char *t = strtok_r(dup, ";", &save); t; t = strtok_r(NULL, ";", &save))
        CHECK(hpo_space_add_flag(sp, t) == STATUS_OK);
    free(dup);
}

int main(int argc, char **argv) {
    int seeds = 30, trials = 64;
    const char *only = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--seeds") == 0)
            seeds = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--trials") == 0)
            trials = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--func") == 0)
            only = argv[i + 1];
    }
    if (trials < 16) trials = 16;
    for (size_t pi = 0; pi < ARRAY_LEN(PROBLEMS); pi++) {
        const Problem *pb = &PROBLEMS[pi];
        if (only && strcmp(only, pb->name) != 0) continue;
        HpoSpace sp;
        make_space(&sp, pb->space);
        for (int mode = 0; mode < 2; mode++) {
            HpoTpeConfig cfg = hpo_tpe_default_config();      // Optuna 5 defaults
            if (mode == 1) cfg.n_startup_trials = trials + 1; // all random
            for (int seed = 0; seed < seeds; seed++) {
                Rng rng;
                rng_seed(&rng, (uint64_t)seed);
                HpoTpeTrial *tr = xcalloc((size_t)trials, sizeof(HpoTpeTrial));
                double *vals = xcalloc((size_t)trials * (size_t)sp.n, sizeof(double));
                double best = INFINITY, best16 = INFINITY, t_suggest = 0;
                for (int i = 0; i < trials; i++) {
                    double *x = vals + (size_t)i * sp.n;
                    double t0 = now_s();
                    CHECK(hpo_tpe_suggest(&cfg, &sp, false, tr, i, i, &rng, x) == STATUS_OK);
                    t_suggest += now_s() - t0;
                    double v = pb->fn(x);
                    tr[i] =
                        (HpoTpeTrial){.number = i, .state = HPO_COMPLETE, .value = v, .params = x};
                    best = fmin(best, v);
                    if (i == 15) best16 = best;
                }
                printf("{\"func\":\"%s\",\"sampler\":\"%s\",\"seed\":%d,\"best16\":%.17g,"
                       "\"best64\":%.17g,\"suggest_us\":%.3f}\n",
                       pb->name, mode == 0 ? "edgeforge_tpe" : "edgeforge_random", seed, best16,
                       best, t_suggest / trials * 1e6);
                free(tr);
                free(vals);
            }
        }
        hpo_space_release(&sp);
    }
    return 0;
}
