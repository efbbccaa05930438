/*
 * qmatmul.h - w4a16 matrix products straight from the GPTQ v1 layout (gptq_pack.h):
 * y = x W^T (+ bias) where W (N, K) is 4-bit packed qweight + fp16 scales + v1 qzeros +
 * g_idx. Nothing is dequantized at load time.
 *
 *   decode (M < QMATMUL_GEMM_MIN_M): a fused dequantizing GEMV per row of x, AVX2+FMA+F16C
 *     when the CPU has it (chosen at run time), else a portable C path;
 *   prefill (M >= QMATMUL_GEMM_MIN_M): blocks of W dequantized into scratch (exact: an
 *     fp16 scale times a small integer is exact in float32) and OpenBLAS sgemm.
 * Activations: float32 on every path except the AVX2 decode kernel for contiguous groups
 * (no act-order, or act-order with static groups, group <= 2048), which takes each group's
 * x as int16 scaled by the group's max |x| (one rounding of at most max|x_g| / 65534 per
 * input; fp16 activations, the "a16" of GPU w4a16 kernels, round each input to 4.9e-4 of
 * itself) and then computes the group's sum exactly in int32 (vpmaddwd). A NaN or infinity
 * in x sends that call to the float kernel, so it reaches the outputs.
 *
 * Both paths split work over output columns or whole groups only and keep each reduction's
 * order fixed, so results do not depend on the thread count. The fused GEMV factors each
 * group's scale and zero out of its sum, y_n = sum_g s_gn (sum_{k in g} x_k q_kn - z_gn
 * sum_{k in g} x_k), so the float kernels differ from qmatmul_ref (which dequantizes every
 * weight) by float rounding only: tests/test_qmatmul.c bounds |y - y_ref| <= 1e-5 *
 * (sum_k |x_k w_kn|) per output, plus sum_g (max|x_g| / 65534) sum_{k in g} |w_kn| for the
 * int16 kernel.
 *
 *   float *scratch = malloc(qmatmul_scratch_floats(&w) * sizeof(float));
 *   qmatmul(y, x, M, &w, scratch);   // y (M, N), x (M, K)
 */
#ifndef EF_QMATMUL_H
#define EF_QMATMUL_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "quant/gptq_pack.h"

// Rows of x from which the dequantize + sgemm path is used.
#define QMATMUL_GEMM_MIN_M 4

// Ordered: each path includes the one before it. AVX512 runs the int16 decode kernel 16
// outputs per vector (avx512f + avx512bw) and everything else as AVX2; its results equal
// AVX2's bit for bit (the same exact int32 sums, the same float steps).
typedef enum { QMAT_ISA_PORTABLE, QMAT_ISA_AVX2, QMAT_ISA_AVX512, QMAT_ISA_COUNT } QmatIsa;

// Best path this CPU supports (AVX2 needs avx2, fma and f16c; AVX512 also avx512f/bw).
QmatIsa qmatmul_isa_detect(void);

// Checks that w can be used here: 4 bits, consistent shapes and g_idx (gptq_packed_validate).
// Errors: STATUS_ERR_UNSUPPORTED (not 4-bit), STATUS_ERR_FORMAT.
Status qmatmul_check(const GptqPacked *w);

// Floats of scratch qmatmul needs for M >= QMATMUL_GEMM_MIN_M (0 is fine below).
size_t qmatmul_scratch_floats(const GptqPacked *w);

// y (M, N) = x (M, K) W^T + bias. w must have passed qmatmul_check. y must not alias x.
void qmatmul(float *y, const float *x, int64_t M, const GptqPacked *w, float *scratch);
// The same with a forced SIMD path (tests check every path the CPU can run; a path above
// qmatmul_isa_detect() runs as the best one below it).
void qmatmul_isa(float *y, const float *x, int64_t M, const GptqPacked *w, float *scratch,
                 QmatIsa isa);
// One row: y (N) = x (K) W^T + bias, the fused GEMV.
void qmatmul_gemv(float *y, const float *x, const GptqPacked *w, QmatIsa isa);

// y[i] (N_i) = x (K) W_i^T + bias_i for n <= 3 weights of the same x: one parallel region
// for all of them where the AVX2 decode kernel applies (fewer OpenMP barriers per token);
// results equal qmatmul_gemv's.
void qmatmul_gemv_multi(float *const *y, const float *x, const GptqPacked *const *w, int n);

// Naive reference: dequantize each weight (scale * (q - zero)) and accumulate in double.
void qmatmul_ref(float *y, const float *x, int64_t M, const GptqPacked *w);

#endif
