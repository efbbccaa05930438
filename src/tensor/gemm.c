/*
 * gemm.c - float32 products with thread-count-independent bits (gemm.h).
 *
 * The grid: at most 512 rows and 2048 columns per tile, and, where the product allows
 * tiles of at least 128 rows and 128 columns, at least as many tiles as the machine has
 * CPUs (sysconf(_SC_NPROCESSORS_CONF), clamped to 2..16), so that every core can have
 * work, and a multiple of that count where it can (1536 rows: 3 x 2 tiles on 2 CPUs). Widths are
 * rounded up to multiples of 16 (the sgemm micro-kernels' widths). The grid never reads the thread
 * count (-t, OMP_NUM_THREADS) or the CPU affinity: on a given machine every thread count gives the
 * same bits. (Other machines differ anyway: OpenBLAS picks its kernels by CPU.) On 2 cores, 2 tiles
 * of a 1024-row product run ~5 % faster than 8 (less packing, fewer calls), which the forward of
 * GPTQ's calibration shows.
 *
 * How each tile stays on one thread: with OpenBLAS's OpenMP build (the one the Makefile
 * links) a call made inside an active parallel region runs on the calling thread, so the
 * tiles run in a parallel region of all the threads, even a single tile (and with one thread
 * OpenBLAS follows omp_get_max_threads() = 1). Products of at most 65536 multiply-adds are
 * called directly: OpenBLAS runs every product of up to 4 x 65536 on one thread
 * (SMP_THRESHOLD_MIN x GEMM_MULTITHREAD_THRESHOLD, fixed at build time), and a parallel
 * region would cost more than the product. With any other OpenBLAS build (pthread,
 * sequential; or no OpenMP here) gemm_f32 sets OpenBLAS to one thread before its tiles, so
 * every call is serial.
 */
#include "tensor/gemm.h"

#include <cblas.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/common.h"
#include "tensor/ops.h"

#define GEMM_TILE_ROWS  512
#define GEMM_TILE_COLS  2048
#define GEMM_TILE_MIN   128 // rows or columns: no smaller tiles to make up the count
#define GEMM_TILES_MIN  2
#define GEMM_TILES_MAX  16
#define GEMM_ALIGN      16
#define GEMM_DIRECT_MAC (1 << 16) // products this small are one direct call

static int cdiv(int a, int b) { return (a + b - 1) / b; }

static int round_up(int a, int b) { return cdiv(a, b) * b; }

// Tiles to aim for: the CPUs the system has (configured, not online or in our affinity
// mask, so that neither taskset nor -t changes it), read once.
static int tile_count(void) {
    static atomic_int cached;
    int n = atomic_load_explicit(&cached, memory_order_relaxed);
    if (n) return n;
    const long cpus = sysconf(_SC_NPROCESSORS_CONF);
    n = (int)MIN(MAX(cpus, GEMM_TILES_MIN), GEMM_TILES_MAX);
    atomic_store_explicit(&cached, n, memory_order_relaxed);
    return n;
}

void gemm_system_info(char *buf, size_t n) {
    static const char *const modes[] = {"sequential", "pthread", "OpenMP"};
    const int mode = openblas_get_parallel();
    snprintf(buf, n, "kernels %s; %s (%s build); GEMM grid for %d CPUs",
             ops_isa_name(ops_isa_detect()), openblas_get_config(),
             mode >= 0 && mode <= 2 ? modes[mode] : "unknown", tile_count());
}

void gemm_f32_grid(int M, int N, int K, int *tm, int *tn) {
    *tm = MAX(M, 1);
    *tn = MAX(N, 1);
    if ((int64_t)M * N * K <= GEMM_DIRECT_MAC) return;
    const int want = tile_count();
    int mc = cdiv(M, GEMM_TILE_ROWS), nc = cdiv(N, GEMM_TILE_COLS);
    if (mc * nc < want) nc = MIN(MAX(nc, cdiv(want, mc)), MAX(1, N / GEMM_TILE_MIN));
    if (mc * nc < want) mc = MIN(MAX(mc, cdiv(want, nc)), MAX(1, M / GEMM_TILE_MIN));
    if ((mc * nc) % want) { // a whole number of tiles per CPU (3 tiles on 2 keep one idle)
        const int t = round_up(mc * nc, want), nc2 = cdiv(t, mc), mc2 = cdiv(t, nc);
        if ((mc * nc2) % want == 0 && nc2 <= MAX(1, N / GEMM_TILE_MIN))
            nc = nc2;
        else if ((mc2 * nc) % want == 0 && mc2 <= MAX(1, M / GEMM_TILE_MIN))
            mc = mc2;
    }
    *tm = MIN(round_up(cdiv(M, mc), GEMM_ALIGN), M);
    *tn = MIN(round_up(cdiv(N, nc), GEMM_ALIGN), N);
}

// One product: float32 (A, B, C float) or float64 (double).
typedef struct {
    bool ta, tb, f64;
    int M, N, K;
    double alpha, beta;
    const void *A, *B;
    void *C;
    int lda, ldb, ldc;
} Gemm;

static void tile(const Gemm *g, int i0, int j0, int m, int n) {
    const size_t es = g->f64 ? sizeof(double) : sizeof(float);
    const int64_t a_off = g->ta ? i0 : (int64_t)i0 * g->lda,
                  b_off = g->tb ? (int64_t)j0 * g->ldb : j0, c_off = (int64_t)i0 * g->ldc + j0;
    const char *A = (const char *)g->A + a_off * es, *B = (const char *)g->B + b_off * es;
    char *C = (char *)g->C + c_off * es;
    const enum CBLAS_TRANSPOSE ta = g->ta ? CblasTrans : CblasNoTrans,
                               tb = g->tb ? CblasTrans : CblasNoTrans;
    if (g->f64)
        cblas_dgemm(CblasRowMajor, ta, tb, m, n, g->K, g->alpha, (const double *)A, g->lda,
                    (const double *)B, g->ldb, g->beta, (double *)C, g->ldc);
    else
        cblas_sgemm(CblasRowMajor, ta, tb, m, n, g->K, (float)g->alpha, (const float *)A, g->lda,
                    (const float *)B, g->ldb, (float)g->beta, (float *)C, g->ldc);
}

static void run(const Gemm *g) {
    const int M = g->M, N = g->N;
    if (M <= 0 || N <= 0) return;
    if ((int64_t)M * N * g->K <= GEMM_DIRECT_MAC) {
        tile(g, 0, 0, M, N);
        return;
    }
    int tm, tn;
    gemm_f32_grid(M, N, g->K, &tm, &tn);
    const int nc = cdiv(N, tn), n_tiles = cdiv(M, tm) * nc;
#ifdef _OPENMP
    const bool nested = omp_in_parallel();
#else
    const bool nested = false; // without OpenMP the tiles run in order on this thread
#endif
    // any build but OpenBLAS's OpenMP one splits each call over its own threads: one, here
    if (!nested && openblas_get_parallel() != 2 && openblas_get_num_threads() != 1)
        openblas_set_num_threads(1);
        // which thread runs a tile does not matter; with one thread, OpenBLAS uses one too
#pragma omp parallel if (!nested)
    {
#ifdef _OPENMP
        // a team smaller than asked (OMP_DYNAMIC, OMP_THREAD_LIMIT) is an inactive region,
        // where OpenBLAS would thread a call by omp_get_max_threads(): one, for this thread
        if (!nested && omp_get_num_threads() == 1) omp_set_num_threads(1);
#endif
#pragma omp for schedule(dynamic, 1)
        for (int t = 0; t < n_tiles; t++) {
            const int i0 = t / nc * tm, j0 = t % nc * tn;
            tile(g, i0, j0, MIN(tm, M - i0), MIN(tn, N - j0));
        }
    }
}

void gemm_f32(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc) {
    const Gemm g = {ta, tb, false, M, N, K, alpha, beta, A, B, C, lda, ldb, ldc};
    run(&g);
}

void gemm_f64(bool ta, bool tb, int M, int N, int K, double alpha, const double *A, int lda,
              const double *B, int ldb, double beta, double *C, int ldc) {
    const Gemm g = {ta, tb, true, M, N, K, alpha, beta, A, B, C, lda, ldb, ldc};
    run(&g);
}
