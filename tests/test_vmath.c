/*
 * test_vmath.c - the vectorized exponentials (src/tensor/vmath.c) against the C library's
 * expf/exp: ulp distance over the whole finite range (normal and subnormal results),
 * overflow, underflow, NaN, and the array helpers against plain loops.
 */
#include "core/common.h"
#include "core/rng.h"
#include "tensor/vmath.h"
#include "testutil.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

// Distance in units in the last place between two finite floats of the same sign (or
// zero), counted on the ordered integer representation.
static int64_t ulps_f(float a, float b) {
    int32_t ia, ib;
    memcpy(&ia, &a, 4);
    memcpy(&ib, &b, 4);
    return llabs((int64_t)ia - (int64_t)ib);
}
static int64_t ulps_d(double a, double b) {
    int64_t ia, ib;
    memcpy(&ia, &a, 8);
    memcpy(&ib, &b, 8);
    int64_t d = ia - ib;
    return d < 0 ? -d : d;
}

static void test_expf_ulps(void **s) {
    (void)s;
    if (!vm_have_avx2()) skip();
    Rng r;
    rng_seed(&r, 1);
    int64_t worst = 0;
    float worst_x = 0;
    for (int i = 0; i < 2000000; i++) {
        // uniform over [-104, 89] plus dense sampling near 0 and the ends
        float x = i % 4 == 0   ? (float)(rng_uniform(&r) * 193.0 - 104.0)
                  : i % 4 == 1 ? (float)(rng_uniform(&r) * 2.0 - 1.0)
                  : i % 4 == 2 ? (float)(-87.0 - rng_uniform(&r) * 17.0)
                               : (float)(80.0 + rng_uniform(&r) * 8.72);
        float ref = vm_expf_ref(x), got = vm_expf_avx2_one(x);
        int64_t u = ulps_f(got, ref);
        if (u > worst) worst = u, worst_x = x;
    }
    print_message("expf: worst %lld ulp at x = %.9g\n", (long long)worst, (double)worst_x);
    assert_true(worst <= 2);
    // edges
    assert_true(vm_expf_avx2_one(0.0f) == 1.0f);
    assert_true(vm_expf_avx2_one(-200.0f) == 0.0f);
    assert_true(vm_expf_avx2_one(-INFINITY) == 0.0f);
    assert_true(isinf(vm_expf_avx2_one(89.0f)) && vm_expf_avx2_one(89.0f) > 0);
    assert_true(isinf(vm_expf_avx2_one(INFINITY)));
    assert_true(isnan(vm_expf_avx2_one(NAN)));
    assert_true(ulps_f(vm_expf_avx2_one(88.72f), expf(88.72f)) <= 2);
    assert_true(ulps_f(vm_expf_avx2_one(-103.0f), expf(-103.0f)) <= 2); // subnormal
}

static void test_exp_ulps(void **s) {
    (void)s;
    if (!vm_have_avx2()) skip();
    Rng r;
    rng_seed(&r, 2);
    int64_t worst = 0;
    double worst_x = 0;
    for (int i = 0; i < 2000000; i++) {
        double x = i % 4 == 0   ? rng_uniform(&r) * 1455.0 - 745.0
                   : i % 4 == 1 ? rng_uniform(&r) * 60.0 - 50.0
                   : i % 4 == 2 ? -708.0 - rng_uniform(&r) * 37.0
                                : 700.0 + rng_uniform(&r) * 9.78;
        double ref = vm_exp_ref(x), got = vm_exp_avx2_one(x);
        if (ref < 0x1p-1022) { // subnormal results: absolute, in units of the smallest one
            if (fabs(got - ref) > 2 * 0x1p-1074) fail_msg("exp(%.17g) = %g vs %g", x, got, ref);
            continue;
        }
        int64_t u = ulps_d(got, ref);
        if (u > worst) worst = u, worst_x = x;
    }
    print_message("exp: worst %lld ulp at x = %.17g\n", (long long)worst, worst_x);
    assert_true(worst <= 2);
    assert_true(vm_exp_avx2_one(0.0) == 1.0);
    assert_true(vm_exp_avx2_one(-800.0) == 0.0);
    assert_true(vm_exp_avx2_one(-INFINITY) == 0.0);
    assert_true(isinf(vm_exp_avx2_one(710.0)));
    assert_true(isnan(vm_exp_avx2_one(NAN)));
    assert_true(ulps_d(vm_exp_avx2_one(709.78), exp(709.78)) <= 2);
}

// The array helpers against plain loops on the C library, lengths around the lane counts.
// The MSE search's fast error sum against pow summed in order: within 1e-12 relative (the
// pruning in gptq_grid assumes 1e-9 with room to spare); zero and sub-1e-300 errors count 0.
static void test_quant_err_pow(void **s) {
    (void)s;
    Rng r;
    rng_seed(&r, 9);
    double x[257], worst = 0;
    for (int t = 0; t < 3000; t++) {
        const int n = 1 + t % 257, maxq = t % 3 == 0 ? 3 : t % 3 == 1 ? 15 : 255;
        const double scale = pow(10.0, -1 - 4 * rng_uniform(&r));
        for (int k = 0; k < n; k++) {
            x[k] = scale * rng_normal(&r);
            if (t % 5 == 0 && k % 3 == 0) x[k] = 0;      // exact zeros: d = 0
            if (t % 7 == 0 && k == 0) x[k] = 1e-305;     // below the cut-off
            if (t % 11 == 0 && k % 4 == 0) x[k] *= 1000; // clamped codes
        }
        const double sc = scale * (0.5 + rng_uniform(&r)) / (maxq / 4.0),
                     z = rint((maxq + 1) / 2.0 * (0.5 + 0.5 * rng_uniform(&r)));
        const double p = t % 2 ? 2.4 : 1.0 + 2 * rng_uniform(&r);
        const double a = vm_quant_err_pow(x, n, sc, z, maxq, p);
        const double b = vm_quant_err_pow_ref(x, n, sc, z, maxq, p);
        const double rel = b > 0 ? fabs(a - b) / b : fabs(a);
        worst = rel > worst ? rel : worst;
    }
    print_message("quant_err_pow: worst relative difference %.3g over 3000 sums\n", worst);
    assert_true(worst < 1e-12);
}

static void test_array_helpers(void **s) {
    (void)s;
    Rng r;
    rng_seed(&r, 3);
    for (int n = 1; n < 80; n += (n < 20 ? 1 : 13)) {
        float *x = xmalloc((size_t)n * sizeof(float)), *y = xmalloc((size_t)n * sizeof(float));
        float *u = xmalloc((size_t)n * sizeof(float)), *h = xmalloc((size_t)n * sizeof(float));
        double *e = xmalloc((size_t)n * sizeof(double));
        for (int i = 0; i < n; i++) {
            x[i] = (float)(rng_normal(&r) * 8.0);
            u[i] = (float)rng_normal(&r);
        }
        float mx = -INFINITY;
        double sum = 0;
        for (int i = 0; i < n; i++)
            mx = x[i] > mx ? x[i] : mx;
        assert_true(vm_max_f32(x, n) == mx);
        for (int i = 0; i < n; i++)
            sum += exp(0.5 * (double)x[i] - 1.25);
        double got = vm_sum_exp(x, n, 0.5, 1.25);
        assert_true(fabs(got - sum) <= 1e-14 * sum);
        vm_exp_affine(e, x, n, 0.5, 1.25);
        for (int i = 0; i < n; i++)
            assert_true(fabs(e[i] - exp(0.5 * (double)x[i] - 1.25)) <= 4e-16 * e[i]);
        memcpy(y, x, (size_t)n * sizeof(float));
        float fs = vm_expf_shift_sum(y, n, mx), fs_ref = 0;
        for (int i = 0; i < n; i++) {
            float ref = expf(x[i] - mx);
            fs_ref += ref;
            assert_true(fabsf(y[i] - ref) <= 3e-7f * ref + 1e-38f);
        }
        assert_true(fabsf(fs - fs_ref) <= 1e-6f * fs_ref);
        vm_silu_mul(h, x, u, n);
        for (int i = 0; i < n; i++) {
            float ref = x[i] / (1.0f + expf(-x[i])) * u[i];
            assert_true(fabsf(h[i] - ref) <= 1e-6f * fabsf(ref) + 1e-30f);
        }
        // the backward, accumulated into dg and du, against the formula in double
        float *dg = malloc((size_t)n * sizeof(float)), *du = malloc((size_t)n * sizeof(float));
        for (int i = 0; i < n; i++) {
            dg[i] = 0.25f;
            du[i] = -0.5f;
            e[i] = rng_normal(&r); // the incoming gradient (double copy)
            y[i] = (float)e[i];
        }
        vm_silu_mul_backward(dg, du, y, x, u, n);
        for (int i = 0; i < n; i++) {
            const double g = x[i], sg = 1 / (1 + exp(-g)), d = y[i];
            const double rg = d * u[i] * sg * (1 + g * (1 - sg)), ru = d * g * sg;
            assert_true(fabs(dg[i] - (0.25 + rg)) <= 2e-6 * fabs(rg) + 1e-6);
            assert_true(fabs(du[i] - (-0.5 + ru)) <= 2e-6 * fabs(ru) + 1e-6);
        }
        free(dg), free(du);
        vm_silu_mul(x, x, u, n); // in place
        for (int i = 0; i < n; i++)
            assert_true(x[i] == h[i]);
        free(x), free(y), free(u), free(h), free(e);
    }
    // NaN: skipped by max, propagated by the exponentials
    float v[9] = {1, 2, NAN, 3, 0, 0, 0, 0, -1};
    assert_true(vm_max_f32(v, 9) == 3.0f);
    assert_true(isnan(vm_sum_exp(v, 9, 1.0, 0.0)));
    assert_true(isnan(vm_expf_shift_sum(v, 9, 3.0f)));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_expf_ulps),
        cmocka_unit_test(test_exp_ulps),
        cmocka_unit_test(test_quant_err_pow),
        cmocka_unit_test(test_array_helpers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
