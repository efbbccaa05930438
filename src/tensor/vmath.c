/*
 * vmath.c - vectorized exponentials (vmath.h). The AVX2 functions carry target attributes
 * and are called only after the run-time check, so the file builds for any x86-64 and,
 * without the x86 part, for other CPUs.
 */
#include "tensor/vmath.h"

#include <math.h>
#include <stdbool.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

float vm_expf_ref(float x) { return expf(x); }
double vm_exp_ref(double x) { return exp(x); }

#if defined(__x86_64__)

#define AVX2_TARGET __attribute__((target("avx2,fma")))

int vm_have_avx2(void) { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }

// exp of 8 floats. Range reduction with ln2 = 0.693359375 - 2.12194440e-4 (the first part
// has 9 significant bits, so n * it is exact); 2^n = 2^n1 * 2^n2 with n1 = floor(n/2), both
// normal for every n in [-150, 128], so subnormal results and overflow to +inf come out of
// the last multiplication as they should; below -103.97 (under half the smallest
// subnormal) the result is 0.
AVX2_TARGET static inline __m256 exp8(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-103.972077f), hi = _mm256_set1_ps(88.7228394f);
    __m256 xc = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(-0.693359375f), xc);
    r = _mm256_fmadd_ps(n, _mm256_set1_ps(2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.0f / 5040);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    const __m256i ni = _mm256_cvtps_epi32(n), bias = _mm256_set1_epi32(127);
    const __m256i n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
    __m256 y =
        _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23)));
    y = _mm256_mul_ps(y, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23)));
    y = _mm256_andnot_ps(_mm256_cmp_ps(x, lo, _CMP_LT_OQ), y); // underflow: 0
    y = _mm256_blendv_ps(y, _mm256_set1_ps(INFINITY), _mm256_cmp_ps(x, hi, _CMP_GT_OQ));
    return _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q)); // NaN stays NaN
}

// Integral doubles (|v| < 2^51) as int64: the low mantissa bits of v + 1.5 * 2^52.
AVX2_TARGET static inline __m256i pd_to_epi64(__m256d v) {
    const __m256d magic = _mm256_set1_pd(6755399441055744.0);
    return _mm256_sub_epi64(_mm256_castpd_si256(_mm256_add_pd(v, magic)),
                            _mm256_castpd_si256(magic));
}

// exp of 4 doubles: fdlibm's ln2 split (ln2_hi has 32 significant bits), Taylor degree 13
// (truncation < 5e-18 relative on |r| <= ln2/2), 2^n split in two as for floats.
AVX2_TARGET static inline __m256d exp4(__m256d x) {
    const __m256d lo = _mm256_set1_pd(-745.13321910194122), hi = _mm256_set1_pd(709.78271289338397);
    __m256d xc = _mm256_min_pd(_mm256_max_pd(x, lo), hi);
    __m256d n = _mm256_round_pd(_mm256_mul_pd(xc, _mm256_set1_pd(1.4426950408889634)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256d r = _mm256_fmadd_pd(n, _mm256_set1_pd(-6.93147180369123816490e-01), xc);
    r = _mm256_fmadd_pd(n, _mm256_set1_pd(-1.90821492927058770002e-10), r);
    static const double c[14] = {1.0 / 6227020800.0, // 1/13!
                                 1.0 / 479001600.0,
                                 1.0 / 39916800.0,
                                 1.0 / 3628800.0,
                                 1.0 / 362880.0,
                                 1.0 / 40320.0,
                                 1.0 / 5040.0,
                                 1.0 / 720.0,
                                 1.0 / 120.0,
                                 1.0 / 24.0,
                                 1.0 / 6.0,
                                 0.5,
                                 1.0,
                                 1.0};
    __m256d p = _mm256_set1_pd(c[0]);
    for (int i = 1; i < 14; i++)
        p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(c[i]));
    const __m256d n1 = _mm256_floor_pd(_mm256_mul_pd(n, _mm256_set1_pd(0.5)));
    const __m256i bias = _mm256_set1_epi64x(1023);
    const __m256i e1 = _mm256_slli_epi64(_mm256_add_epi64(pd_to_epi64(n1), bias), 52);
    const __m256i e2 =
        _mm256_slli_epi64(_mm256_add_epi64(pd_to_epi64(_mm256_sub_pd(n, n1)), bias), 52);
    __m256d y = _mm256_mul_pd(_mm256_mul_pd(p, _mm256_castsi256_pd(e1)), _mm256_castsi256_pd(e2));
    y = _mm256_andnot_pd(_mm256_cmp_pd(x, lo, _CMP_LT_OQ), y);
    y = _mm256_blendv_pd(y, _mm256_set1_pd(INFINITY), _mm256_cmp_pd(x, hi, _CMP_GT_OQ));
    return _mm256_blendv_pd(y, x, _mm256_cmp_pd(x, x, _CMP_UNORD_Q));
}

AVX2_TARGET float vm_expf_avx2_one(float x) {
    float out[8];
    _mm256_storeu_ps(out, exp8(_mm256_set1_ps(x)));
    return out[0];
}

AVX2_TARGET double vm_exp_avx2_one(double x) {
    double out[4];
    _mm256_storeu_pd(out, exp4(_mm256_set1_pd(x)));
    return out[0];
}

// Lane sums in a fixed order: ((0+4)+(2+6)) + ((1+5)+(3+7)) and (0+2)+(1+3).
AVX2_TARGET static inline float hsum_ps(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}
AVX2_TARGET static inline double hsum_pd(__m256d v) {
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

AVX2_TARGET static float max_avx2(const float *x, int64_t n) {
    __m256 m = _mm256_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        m = _mm256_max_ps(_mm256_loadu_ps(x + i), m); // a NaN in x yields m
    float out[8], r = -INFINITY;
    _mm256_storeu_ps(out, m);
    for (int j = 0; j < 8; j++)
        r = out[j] > r ? out[j] : r;
    for (; i < n; i++)
        r = x[i] > r ? x[i] : r;
    return r;
}

// 4 floats widened to double, times a, minus b.
AVX2_TARGET static inline __m256d affine4(const float *x, __m256d a, __m256d b) {
    return _mm256_fmsub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x)), a, b);
}

AVX2_TARGET static double sum_exp_avx2(const float *x, int64_t n, double a, double b) {
    const __m256d va = _mm256_set1_pd(a), vb = _mm256_set1_pd(b);
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        s0 = _mm256_add_pd(s0, exp4(affine4(x + i, va, vb)));
        s1 = _mm256_add_pd(s1, exp4(affine4(x + i + 4, va, vb)));
    }
    double s = hsum_pd(_mm256_add_pd(s0, s1));
    for (; i < n; i++)
        s += vm_exp_avx2_one(a * (double)x[i] - b);
    return s;
}

AVX2_TARGET static void exp_affine_avx2(double *y, const float *x, int64_t n, double a, double b) {
    const __m256d va = _mm256_set1_pd(a), vb = _mm256_set1_pd(b);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
        _mm256_storeu_pd(y + i, exp4(affine4(x + i, va, vb)));
    for (; i < n; i++)
        y[i] = vm_exp_avx2_one(a * (double)x[i] - b);
}

AVX2_TARGET static float expf_shift_sum_avx2(float *x, int64_t n, float m) {
    const __m256 vm = _mm256_set1_ps(m);
    __m256 s = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
        _mm256_storeu_ps(x + i, e);
        s = _mm256_add_ps(s, e);
    }
    float r = hsum_ps(s);
    for (; i < n; i++) {
        x[i] = vm_expf_avx2_one(x[i] - m);
        r += x[i];
    }
    return r;
}

// ln of 4 positive normal doubles: x = m 2^e with m in [sqrt(1/2), sqrt(2)); f = (m-1)/(m+1)
// (m - 1 exact); ln m = 2 atanh f = 2f (1 + f^2/3 + ... + f^22/23) (truncation below 1e-18
// relative for |f| <= 0.1716); ln x = e ln2_hi + (e ln2_lo + ln m) with fdlibm's split.
AVX2_TARGET static inline __m256d log4(__m256d x) {
    const __m256i bits = _mm256_castpd_si256(x);
    __m256i e = _mm256_sub_epi64(_mm256_srli_epi64(bits, 52), _mm256_set1_epi64x(1023));
    __m256d m = _mm256_castsi256_pd(
        _mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi64x(0x000FFFFFFFFFFFFFLL)),
                        _mm256_set1_epi64x(0x3FF0000000000000LL))); // [1, 2)
    const __m256d big = _mm256_cmp_pd(m, _mm256_set1_pd(1.4142135623730951), _CMP_GT_OQ);
    m = _mm256_blendv_pd(m, _mm256_mul_pd(m, _mm256_set1_pd(0.5)), big);
    e = _mm256_sub_epi64(e, _mm256_castpd_si256(big));        // mask -1: e + 1
    const __m256d magic = _mm256_set1_pd(6755399441055744.0); // small int64 -> double
    const __m256d ed =
        _mm256_sub_pd(_mm256_castsi256_pd(_mm256_add_epi64(e, _mm256_castpd_si256(magic))), magic);
    const __m256d one = _mm256_set1_pd(1.0);
    const __m256d f = _mm256_div_pd(_mm256_sub_pd(m, one), _mm256_add_pd(m, one));
    const __m256d f2 = _mm256_mul_pd(f, f);
    static const double c[11] = {1.0 / 23, 1.0 / 21, 1.0 / 19, 1.0 / 17, 1.0 / 15, 1.0 / 13,
                                 1.0 / 11, 1.0 / 9,  1.0 / 7,  1.0 / 5,  1.0 / 3};
    __m256d s = _mm256_set1_pd(c[0]);
    for (int k = 1; k < 11; k++)
        s = _mm256_fmadd_pd(s, f2, _mm256_set1_pd(c[k]));
    s = _mm256_fmadd_pd(s, f2, one);
    const __m256d lnm = _mm256_mul_pd(_mm256_add_pd(f, f), s);
    const __m256d lo = _mm256_fmadd_pd(ed, _mm256_set1_pd(1.90821492927058770002e-10), lnm);
    return _mm256_fmadd_pd(ed, _mm256_set1_pd(6.93147180369123816490e-01), lo);
}

// |s (clamp(rint(x/s) + z, 0, maxq) - z) - x|^p for 4 doubles at xp (0 below 1e-300).
AVX2_TARGET static inline __m256d quant_err_pow4(const double *xp, __m256d vs, __m256d vz,
                                                 __m256d vmax, __m256d vp) {
    const __m256d zero = _mm256_setzero_pd(), tiny = _mm256_set1_pd(1e-300);
    const __m256d xv = _mm256_loadu_pd(xp);
    __m256d q =
        _mm256_round_pd(_mm256_div_pd(xv, vs), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    q = _mm256_min_pd(_mm256_max_pd(_mm256_add_pd(q, vz), zero), vmax);
    const __m256d d = _mm256_andnot_pd(_mm256_set1_pd(-0.0),
                                       _mm256_sub_pd(_mm256_mul_pd(vs, _mm256_sub_pd(q, vz)), xv));
    const __m256d t = exp4(_mm256_mul_pd(vp, log4(_mm256_max_pd(d, tiny))));
    return _mm256_and_pd(t, _mm256_cmp_pd(d, tiny, _CMP_GE_OQ)); // d^p below 1e-720: 0
}

AVX2_TARGET static double quant_err_pow_avx2(const double *x, int64_t n, double s, double z,
                                             int maxq, double p) {
    const __m256d vs = _mm256_set1_pd(s), vz = _mm256_set1_pd(z), vp = _mm256_set1_pd(p);
    const __m256d vmax = _mm256_set1_pd(maxq);
    __m256d acc = _mm256_setzero_pd();
    int64_t k = 0;
    for (; k + 4 <= n; k += 4)
        acc = _mm256_add_pd(acc, quant_err_pow4(x + k, vs, vz, vmax, vp));
    return hsum_pd(acc) + vm_quant_err_pow_ref(x + k, n - k, s, z, maxq, p); // the < 4 left
}

AVX2_TARGET static void silu_mul_avx2(float *h, const float *g, const float *u, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 gv = _mm256_loadu_ps(g + i);
        __m256 d = _mm256_add_ps(one, exp8(_mm256_xor_ps(gv, sign)));
        _mm256_storeu_ps(h + i, _mm256_mul_ps(_mm256_div_ps(gv, d), _mm256_loadu_ps(u + i)));
    }
    for (; i < n; i++)
        h[i] = g[i] / (1.0f + vm_expf_avx2_one(-g[i])) * u[i];
}

AVX2_TARGET static void silu_mul_backward_avx2(float *dg, float *du, const float *d, const float *g,
                                               const float *u, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 gv = _mm256_loadu_ps(g + i), dv = _mm256_loadu_ps(d + i);
        const __m256 s = _mm256_div_ps(one, _mm256_add_ps(one, exp8(_mm256_xor_ps(gv, sign))));
        const __m256 t = _mm256_add_ps(one, _mm256_mul_ps(gv, _mm256_sub_ps(one, s)));
        const __m256 a = _mm256_mul_ps(_mm256_mul_ps(dv, _mm256_loadu_ps(u + i)), s);
        _mm256_storeu_ps(dg + i, _mm256_add_ps(_mm256_loadu_ps(dg + i), _mm256_mul_ps(a, t)));
        _mm256_storeu_ps(du + i, _mm256_add_ps(_mm256_loadu_ps(du + i),
                                               _mm256_mul_ps(_mm256_mul_ps(dv, gv), s)));
    }
    for (; i < n; i++) {
        const float s = 1.0f / (1.0f + vm_expf_avx2_one(-g[i]));
        dg[i] += d[i] * u[i] * s * (1.0f + g[i] * (1.0f - s));
        du[i] += d[i] * g[i] * s;
    }
}

#else // not x86-64: the C library

int vm_have_avx2(void) { return 0; }
float vm_expf_avx2_one(float x) { return (void)x, 0.0f; }
double vm_exp_avx2_one(double x) { return (void)x, 0.0; }

#endif

float vm_max_f32(const float *x, int64_t n) {
#if defined(__x86_64__)
    if (vm_have_avx2()) return max_avx2(x, n);
#endif
    float r = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        r = x[i] > r ? x[i] : r;
    return r;
}

double vm_sum_exp(const float *x, int64_t n, double a, double b) {
#if defined(__x86_64__)
    if (vm_have_avx2()) return sum_exp_avx2(x, n, a, b);
#endif
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += exp(a * (double)x[i] - b);
    return s;
}

void vm_exp_affine(double *y, const float *x, int64_t n, double a, double b) {
#if defined(__x86_64__)
    if (vm_have_avx2()) {
        exp_affine_avx2(y, x, n, a, b);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++)
        y[i] = exp(a * (double)x[i] - b);
}

float vm_expf_shift_sum(float *x, int64_t n, float m) {
#if defined(__x86_64__)
    if (vm_have_avx2()) return expf_shift_sum_avx2(x, n, m);
#endif
    float s = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - m);
        s += x[i];
    }
    return s;
}

double vm_quant_err_pow_ref(const double *x, int64_t n, double s, double z, int maxq, double p) {
    double sum = 0;
    for (int64_t k = 0; k < n; k++) {
        double q = rint(x[k] / s) + z;
        q = q < 0 ? 0 : q > maxq ? maxq : q;
        sum += pow(fabs(s * (q - z) - x[k]), p);
    }
    return sum;
}

double vm_quant_err_pow(const double *x, int64_t n, double s, double z, int maxq, double p) {
#if defined(__x86_64__)
    if (vm_have_avx2()) return quant_err_pow_avx2(x, n, s, z, maxq, p);
#endif
    return vm_quant_err_pow_ref(x, n, s, z, maxq, p);
}

void vm_silu_mul(float *h, const float *g, const float *u, int64_t n) {
#if defined(__x86_64__)
    if (vm_have_avx2()) {
        silu_mul_avx2(h, g, u, n);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++)
        h[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void vm_silu_mul_backward(float *dg, float *du, const float *d, const float *g, const float *u,
                          int64_t n) {
#if defined(__x86_64__)
    if (vm_have_avx2()) {
        silu_mul_backward_avx2(dg, du, d, g, u, n);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) {
        const float s = 1.0f / (1.0f + expf(-g[i]));
        dg[i] += d[i] * u[i] * s * (1.0f + g[i] * (1.0f - s));
        du[i] += d[i] * g[i] * s;
    }
}
