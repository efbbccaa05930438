/*
 * gemm.h - float32 matrix products whose bits do not depend on the thread count.
 *
 * OpenBLAS's threaded sgemm splits C over its threads at points that follow the thread
 * count, and its edge micro-kernels sum in another order than its main one, so ~4 % of the
 * outputs of a 2048 x 1536 x 576 product change in the last bit between 1 and 2 threads.
 * gemm_f32 instead cuts C into a grid of tiles that is a function of (M, N, K) and of the
 * machine's CPU count (never of -t, OMP_NUM_THREADS or the affinity mask) and runs one
 * single-threaded sgemm per tile on the OpenMP threads (any tile on any thread), so C is
 * the same for every thread count. On 2 cores it runs within the noise of the threaded
 * sgemm (docs/design.md, "Threads").
 *
 *   // C (M, N) = alpha op(A) op(B) + beta C, row-major, op = transpose when ta / tb
 *   gemm_f32(false, true, T, N, K, 1.0f, x, K, w, K, 0.0f, y, N);   // y = x W^T
 *
 * Called inside an OpenMP parallel region it runs the same tiles on the calling thread.
 * With OpenBLAS's pthread build (the Makefile's fallback) it sets OpenBLAS to one thread
 * first, since that build splits every call over its own threads.
 */
#ifndef EF_GEMM_H
#define EF_GEMM_H

#include <stdbool.h>
#include <stddef.h>

void gemm_f32(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc);
// The same for double (OpenBLAS dgemm tiles on the same grid).
void gemm_f64(bool ta, bool tb, int M, int N, int K, double alpha, const double *A, int lda,
              const double *B, int ldb, double beta, double *C, int ldc);

// What, besides the input, decides the bits of a result on this machine: the SIMD path of
// our kernels, OpenBLAS's build (its kernels follow the CPU) and the CPU count the grid
// uses, e.g. "kernels avx2; OpenBLAS 0.3.21 ... (OpenMP build); GEMM grid for 2 CPUs".
// Written into buf (NUL-terminated, truncated to n).
void gemm_system_info(char *buf, size_t n);

// The tile grid gemm_f32 uses for an (M, N, K) product: tiles of *tm rows and *tn columns
// (the last ones ragged). Exposed for the tests.
void gemm_f32_grid(int M, int N, int K, int *tm, int *tn);

#endif
