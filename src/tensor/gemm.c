/*
 * gemm.c - float32 products with thread-count-independent bits (gemm.h).
 *
 * The grid: at most 512 rows and 2048 columns per tile, and, where the product allows
 * tiles of at least 128 rows and 128 columns, at least 8 tiles, so that up to 8 threads
 * have work. Widths are rounded up to multiples of 16 (the sgemm micro-kernels' widths).
 * None of it reads the thread count.
 *
 * How each tile stays on one thread: with OpenBLAS's OpenMP build (the one the Makefile
 * links) a call made inside an active parallel region runs on the calling thread, so the
 * tiles run in a parallel region of all the threads, even a single tile (and with one thread
 * OpenBLAS follows omp_get_max_threads() = 1). Products of
 * at most 65536 multiply-adds are called directly: OpenBLAS runs every product of up to
 * 4 x 65536 on one thread (SMP_THRESHOLD_MIN x GEMM_MULTITHREAD_THRESHOLD, fixed at
 * build time), and a parallel region would cost more than the product. With the pthread
 * build the CLI sets OpenBLAS to one thread (cli_set_threads), so every call is serial.
 */
#include "tensor/gemm.h"

#include <cblas.h>
#include <stdint.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/common.h"

#define GEMM_TILE_ROWS  512
#define GEMM_TILE_COLS  2048
#define GEMM_TILE_MIN   128 // rows or columns: no smaller tiles to make up the count
#define GEMM_TILE_COUNT 8
#define GEMM_ALIGN      16
#define GEMM_DIRECT_MAC (1 << 16) // products this small are one direct call

static int cdiv(int a, int b) { return (a + b - 1) / b; }

static int round_up(int a, int b) { return cdiv(a, b) * b; }

void gemm_f32_grid(int M, int N, int K, int *tm, int *tn) {
    *tm = MAX(M, 1);
    *tn = MAX(N, 1);
    if ((int64_t)M * N * K <= GEMM_DIRECT_MAC) return;
    int mc = cdiv(M, GEMM_TILE_ROWS), nc = cdiv(N, GEMM_TILE_COLS);
    if (mc * nc < GEMM_TILE_COUNT)
        nc = MIN(MAX(nc, cdiv(GEMM_TILE_COUNT, mc)), MAX(1, N / GEMM_TILE_MIN));
    if (mc * nc < GEMM_TILE_COUNT)
        mc = MIN(MAX(mc, cdiv(GEMM_TILE_COUNT, nc)), MAX(1, M / GEMM_TILE_MIN));
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
