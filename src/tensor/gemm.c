/*
 * gemm.c - float32 products with thread-count-independent bits (gemm.h).
 *
 * The grid: at most 512 rows and 2048 columns per tile, and, where the product allows
 * tiles of at least 128 rows and 128 columns, at least as many tiles as the machine has
 * CPUs (sysconf(_SC_NPROCESSORS_CONF), clamped to 2..16), so that every core can have
 * work. Widths are rounded up to multiples of 16 (the sgemm micro-kernels' widths). The
 * grid never reads the thread count (-t, OMP_NUM_THREADS) or the CPU affinity: on a given
 * machine every thread count gives the same bits. (Other machines differ anyway: OpenBLAS
 * picks its kernels by CPU.) On 2 cores, 2 tiles of a 1024-row product run ~5 % faster
 * than 8 (less packing, fewer calls), which the forward of GPTQ's calibration shows.
 *
 * How each tile stays on one thread: with OpenBLAS's OpenMP build (the one the Makefile
 * links) a call made inside an active parallel region runs on the calling thread, so the
 * tiles run in a parallel region of all the threads, even a single tile (and with one thread
 * OpenBLAS follows omp_get_max_threads() = 1). Products of at most 65536 multiply-adds are
 * called directly: OpenBLAS runs every product of up to 4 x 65536 on one thread
 * (SMP_THRESHOLD_MIN x GEMM_MULTITHREAD_THRESHOLD, fixed at build time), and a parallel
 * region would cost more than the product. With the pthread build the CLI sets OpenBLAS to
 * one thread (cli_set_threads), so every call is serial.
 */
#include "tensor/gemm.h"

#include <cblas.h>
#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/common.h"

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

void gemm_f32_grid(int M, int N, int K, int *tm, int *tn) {
    *tm = MAX(M, 1);
    *tn = MAX(N, 1);
    if ((int64_t)M * N * K <= GEMM_DIRECT_MAC) return;
    const int want = tile_count();
    int mc = cdiv(M, GEMM_TILE_ROWS), nc = cdiv(N, GEMM_TILE_COLS);
    if (mc * nc < want) nc = MIN(MAX(nc, cdiv(want, mc)), MAX(1, N / GEMM_TILE_MIN));
    if (mc * nc < want) mc = MIN(MAX(mc, cdiv(want, nc)), MAX(1, M / GEMM_TILE_MIN));
    *tm = MIN(round_up(cdiv(M, mc), GEMM_ALIGN), M);
    *tn = MIN(round_up(cdiv(N, nc), GEMM_ALIGN), N);
}

static void tile(bool ta, bool tb, int i0, int j0, int m, int n, int K, float alpha, const float *A,
                 int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    const float *At = ta ? A + i0 : A + (int64_t)i0 * lda;
    const float *Bt = tb ? B + (int64_t)j0 * ldb : B + j0;
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n,
                K, alpha, At, lda, Bt, ldb, beta, C + (int64_t)i0 * ldc + j0, ldc);
}

void gemm_f32(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    int tm, tn;
    gemm_f32_grid(M, N, K, &tm, &tn);
    const int nc = cdiv(N, tn), n_tiles = cdiv(M, tm) * nc;
    if ((int64_t)M * N * K <= GEMM_DIRECT_MAC) {
        tile(ta, tb, 0, 0, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
#ifdef _OPENMP
    const bool nested = omp_in_parallel();
#else
    const bool nested = true;
#endif
    // which thread runs a tile does not matter; with one thread, OpenBLAS uses one too
#pragma omp parallel for schedule(dynamic, 1) if (!nested)
    for (int t = 0; t < n_tiles; t++) {
        const int i0 = t / nc * tm, j0 = t % nc * tn;
        tile(ta, tb, i0, j0, MIN(tm, M - i0), MIN(tn, N - j0), K, alpha, A, lda, B, ldb, beta, C,
             ldc);
    }
}
