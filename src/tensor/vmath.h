/*
 * vmath.h - vectorized exponentials for the softmax-shaped loops: silu, attention softmax,
 * log-sum-exp over a vocabulary row (evaluation, distillation loss); and the |error|^p sums
 * of GPTQ's MSE grid search (exp of p times a vectorized log).
 *
 * With AVX2+FMA (chosen at run time) exp is computed 8 floats or 4 doubles at a time:
 * Cody-Waite range reduction x = n ln2 + r, |r| <= ln2/2, a Taylor polynomial in r (degree
 * 7 for float, 13 for double) and 2^n put into the exponent field. Measured against the C
 * library (tests/test_vmath.c, 2M points each): float and double within 1 ulp, subnormal results
 * included; overflow gives +inf and NaN stays NaN, as in the C library. Without AVX2 the
 * functions loop over expf/exp. Sums run in a fixed lane order, so a row's result does not
 * depend on the thread that computes it.
 */
#ifndef EF_VMATH_H
#define EF_VMATH_H

#include <stdint.h>

// Largest element of x (n >= 1); NaNs are skipped unless every element is NaN.
float vm_max_f32(const float *x, int64_t n);
// sum_i exp(a * x[i] - b), in double.
double vm_sum_exp(const float *x, int64_t n, double a, double b);
// y[i] = exp(a * x[i] - b), in double.
void vm_exp_affine(double *y, const float *x, int64_t n, double a, double b);
// x[i] = expf(x[i] - m); returns the float sum of the new x (8 lanes, then a fixed tree).
float vm_expf_shift_sum(float *x, int64_t n, float m);
// h[i] = g[i] / (1 + expf(-g[i])) * u[i] (SwiGLU); h may equal g or u.
void vm_silu_mul(float *h, const float *g, const float *u, int64_t n);
// SwiGLU's backward, accumulated: with s = 1 / (1 + expf(-g[i])),
// dg[i] += d[i] u[i] s (1 + g[i] (1 - s)) and du[i] += d[i] g[i] s.
void vm_silu_mul_backward(float *dg, float *du, const float *d, const float *g, const float *u,
                          int64_t n);

// Quantization error of one grid for GPTQ's MSE search: sum_k |s (q_k - z) - x_k|^p with
// q_k = clamp(rint(x_k / s) + z, 0, maxq), p > 0. With AVX2, |d|^p = exp(p ln |d|) 4 doubles
// at a time (ln: atanh series; |d| < 1e-300 counts 0): within 1e-12 relative of the C
// library's pow summed in order (tests/test_vmath.c), not bit-identical: callers that need
// the exact value (gptq_grid) re-evaluate with vm_quant_err_pow_ref where it matters.
double vm_quant_err_pow(const double *x, int64_t n, double s, double z, int maxq, double p);
double vm_quant_err_pow_ref(const double *x, int64_t n, double s, double z, int maxq, double p);

// The C library's versions of the two kernels, for tests and the portable path.
float vm_expf_ref(float x);
double vm_exp_ref(double x);
// 8 and 4 lanes of the AVX2 kernels on one value (0 on CPUs without AVX2), for tests.
float vm_expf_avx2_one(float x);
double vm_exp_avx2_one(double x);
int vm_have_avx2(void);

#endif
