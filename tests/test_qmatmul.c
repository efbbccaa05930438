/*
 * test_qmatmul.c - the w4a16 GEMV/GEMM against qmatmul_ref and against dequantize-then-
 * matmul (gptq_dequantize, itself checked against tools/dequant_ref.py in test_gptq.c), on
 * odd shapes, contiguous and act-order g_idx, with and without bias; thread-count
 * independence; bad weights.
 *
 * Tolerance: per output n, |y_n - ref_n| <= 1e-5 * sum_k |x_k w_kn| (float32 sums of a few
 * hundred terms, with each group's scale and zero factored out, stay near 1e-6 of that
 * bound; measured worst ratio is printed).
 *
 * QMATMUL_BENCH=1 build-x/tests/test_qmatmul  also prints GEMV GB/s for 1536x576 and
 * 49152x576 (not a test).
 */
#include "core/common.h"
#include "core/dtype.h"
#include "core/log.h"
#include "core/rng.h"
#include "quant/gptq_pack.h"
#include "quant/qmatmul.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

typedef struct {
    int64_t K, N;
    int group;     // -1 or > 0
    int act_order; // permuted g_idx
    int sym, bias;
} Shape;

// Random codes, zeros, fp16 scales and g_idx, packed.
static void make_weight(GptqPacked *p, const Shape *s, Rng *rng) {
    const int64_t K = s->K, N = s->N, G = s->group == -1 ? 1 : (K + s->group - 1) / s->group;
    uint8_t *q = xmalloc((size_t)(N * K));
    int32_t *z = xmalloc((size_t)(G * N) * 4), *gi = xmalloc((size_t)K * 4);
    uint16_t *sc = xmalloc((size_t)(G * N) * 2);
    for (int64_t i = 0; i < N * K; i++)
        q[i] = (uint8_t)rng_below(rng, 16);
    for (int64_t i = 0; i < G * N; i++) {
        z[i] = s->sym ? 8 : 1 + (int32_t)rng_below(rng, 15);
        sc[i] = f32_to_fp16((float)(0.002 + 0.02 * rng_uniform(rng)));
    }
    int32_t *perm = xmalloc((size_t)K * 4);
    for (int64_t i = 0; i < K; i++)
        perm[i] = (int32_t)i;
    if (s->act_order)
        for (int64_t i = K - 1; i > 0; i--) {
            int64_t j = (int64_t)rng_below(rng, (uint64_t)i + 1);
            int32_t t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
        }
    for (int64_t i = 0; i < K; i++)
        gi[i] = s->group == -1 ? 0 : perm[i] / s->group;
    assert_int_equal(gptq_pack(p, q, z, sc, gi, K, N, 4, s->group, G), STATUS_OK);
    if (s->bias) {
        p->bias = xmalloc((size_t)N * 2);
        for (int64_t n = 0; n < N; n++)
            p->bias[n] = f32_to_fp16((float)rng_normal(rng));
    }
    free(q);
    free(z);
    free(gi);
    free(sc);
    free(perm);
}

// Max over outputs of |y - ref| / sum_k |x_k w_kn|; fails above 1e-5.
// |y - ref| <= 1e-5 sum_k |x_k w_nk| + a16 * sum_g (max_{k in g} |x_k| / 65534) sum_{k in g}
// |w_nk|: the second term (a16 = 1) is the rounding bound of the AVX2 decode kernel's int16
// activations (one step of max|x_g| / 32767 per group, qmatmul_cpu.c gemv_setup_i16), about
// what fp16 activations would cost; the float paths pass a16 = 0.
static double check_close_a(const char *what, const float *y, const float *ref, const float *x,
                            const float *W, const GptqPacked *p, int64_t M, int a16) {
    double worst = 0;
    double *amax = xcalloc((size_t)p->G, sizeof(double)),
           *wg = xcalloc((size_t)p->G, sizeof(double));
    for (int64_t m = 0; m < M; m++) {
        memset(amax, 0, (size_t)p->G * sizeof(double));
        for (int64_t kk = 0; kk < p->K; kk++) { // g_idx is in packed order once sorted
            const int64_t k = p->k_perm ? p->k_perm[kk] : kk, g = p->g_idx[kk];
            amax[g] = fmax(amax[g], fabs((double)x[m * p->K + k]));
        }
        for (int64_t n = 0; n < p->N; n++) {
            double mag = 0, a16_bound = 0;
            memset(wg, 0, (size_t)p->G * sizeof(double));
            for (int64_t kk = 0; kk < p->K; kk++) {
                const int64_t k = p->k_perm ? p->k_perm[kk] : kk;
                mag += fabs((double)x[m * p->K + k] * W[n * p->K + k]);
                wg[p->g_idx[kk]] += fabs((double)W[n * p->K + k]);
            }
            for (int64_t g = 0; a16 && g < p->G; g++)
                a16_bound += amax[g] / 65534.0 * wg[g];
            double err = fabs((double)y[m * p->N + n] - ref[m * p->N + n]);
            double r = err / (mag + 1e-30);
            if (!a16 && r > worst) worst = r;
            if (err > 1e-5 * mag + 1.0001 * a16_bound + 1e-30)
                fail_msg("%s: y[%lld, %lld] = %.9g, reference %.9g (|x||w| %g, int16 bound %g)",
                         what, (long long)m, (long long)n, (double)y[m * p->N + n],
                         (double)ref[m * p->N + n], mag, a16_bound);
        }
    }
    free(amax);
    free(wg);
    return worst;
}

static double check_close(const char *what, const float *y, const float *ref, const float *x,
                          const float *W, const GptqPacked *p, int64_t M) {
    return check_close_a(what, y, ref, x, W, p, M, 0);
}

static void run_shape(const Shape *s, Rng *rng) {
    GptqPacked p;
    make_weight(&p, s, rng);
    assert_int_equal(qmatmul_check(&p), STATUS_OK);
    const int64_t K = s->K, N = s->N, M = 6;
    float *x = xmalloc((size_t)(M * K) * 4), *W = xmalloc((size_t)(N * K) * 4);
    float *yr = xmalloc((size_t)(M * N) * 4), *yd = xmalloc((size_t)(M * N) * 4);
    float *y = xmalloc((size_t)(M * N) * 4), *y2 = xmalloc((size_t)(M * N) * 4);
    float *scratch = xmalloc(qmatmul_scratch_floats(&p) * 4);
    for (int64_t i = 0; i < M * K; i++)
        x[i] = (float)rng_normal(rng);
    x[3] = 40.0f; // an outlier activation
    qmatmul_ref(yr, x, M, &p);
    // dequantize-then-matmul (double accumulation of exact float weights)
    gptq_dequantize(W, &p);
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double acc = p.bias ? fp16_to_f32(p.bias[n]) : 0;
            for (int64_t k = 0; k < K; k++)
                acc += (double)x[m * K + k] * W[n * K + k];
            yd[m * N + n] = (float)acc;
        }
    char what[128];
    double worst = 0;
    snprintf(what, sizeof what, "ref vs dequant K=%lld N=%lld", (long long)K, (long long)N);
    worst = fmax(worst, check_close(what, yr, yd, x, W, &p, M));
    for (int isa = 0; isa < QMAT_ISA_COUNT; isa++) {
        if (isa > (int)qmatmul_isa_detect()) continue; // the CPU lacks it
        for (int64_t m = 0; m < M; m++)
            qmatmul_gemv(y + m * N, x + m * K, &p, (QmatIsa)isa);
        snprintf(what, sizeof what, "gemv isa %d K=%lld N=%lld g=%d act=%d", isa, (long long)K,
                 (long long)N, s->group, s->act_order);
        const int a16 = isa != QMAT_ISA_PORTABLE;
        worst = fmax(worst, check_close_a(what, y, yr, x, W, &p, M, a16));
        worst = fmax(worst, check_close_a(what, y, yd, x, W, &p, M, a16));
        if (isa == QMAT_ISA_AVX2) memcpy(y2, y, (size_t)(M * N) * 4);
        if (isa == QMAT_ISA_AVX512) // the same exact int32 sums and float steps as AVX2
            assert_memory_equal(y, y2, (size_t)(M * N) * 4);
    }
    qmatmul(y, x, M, &p, scratch); // GEMM path (M >= QMATMUL_GEMM_MIN_M)
    snprintf(what, sizeof what, "gemm K=%lld N=%lld", (long long)K, (long long)N);
    worst = fmax(worst, check_close(what, y, yr, x, W, &p, M));
    worst = fmax(worst, check_close(what, y, yd, x, W, &p, M));
    // the GEMM's dequantization is exact on every path: the portable one gives the same bits
    float *yp = xmalloc((size_t)(M * N) * 4);
    qmatmul_isa(yp, x, M, &p, scratch, QMAT_ISA_PORTABLE);
    assert_memory_equal(yp, y, (size_t)(M * N) * 4);
    free(yp);
    if (!s->act_order) { // the group layout recorded at load (contig_group) gives the same bits
        assert_int_equal(p.contig_group, 0);
        assert_int_equal(gptq_packed_sort_groups(&p), STATUS_OK);
        assert_null(p.k_perm);
        assert_int_equal(p.contig_group > 0 ? p.contig_group : 0, gptq_packed_contiguous_group(&p));
        assert_true(p.contig_group != 0);
        float *yc = xmalloc((size_t)(M * N) * 4);
        for (int64_t m = 0; m < M; m++)
            qmatmul_gemv(yc + m * N, x + m * K, &p, qmatmul_isa_detect());
        float *yw = xmalloc((size_t)(M * N) * 4);
        p.contig_group = 0; // walked per call again
        for (int64_t m = 0; m < M; m++)
            qmatmul_gemv(yw + m * N, x + m * K, &p, qmatmul_isa_detect());
        assert_memory_equal(yc, yw, (size_t)(M * N) * 4);
        free(yc);
        free(yw);
    }
    if (s->act_order) { // the sorted in-memory layout gives the same products
        assert_int_equal(gptq_packed_sort_groups(&p), STATUS_OK);
        assert_non_null(p.k_perm);
        assert_int_equal(qmatmul_check(&p), STATUS_OK);
        float *W2 = xmalloc((size_t)(N * K) * 4);
        gptq_dequantize(W2, &p);
        assert_memory_equal(W2, W, (size_t)(N * K) * 4);
        free(W2);
        qmatmul_ref(y, x, M, &p);
        worst = fmax(worst, check_close("sorted ref", y, yr, x, W, &p, M));
        for (int isa = 0; isa < QMAT_ISA_COUNT; isa++) {
            if (isa > (int)qmatmul_isa_detect()) continue; // the CPU lacks it
            for (int64_t m = 0; m < M; m++)
                qmatmul_gemv(y + m * N, x + m * K, &p, (QmatIsa)isa);
            worst = fmax(
                worst, check_close_a("sorted gemv", y, yr, x, W, &p, M, isa != QMAT_ISA_PORTABLE));
        }
        qmatmul(y, x, M, &p, scratch);
        worst = fmax(worst, check_close("sorted gemm", y, yr, x, W, &p, M));
    }
#ifdef _OPENMP
    // the same bits whatever the thread count
    float *y1 = xmalloc((size_t)(M * N) * 4), *y3 = xmalloc((size_t)(M * N) * 4);
    int nt = omp_get_max_threads();
    omp_set_num_threads(1);
    qmatmul_gemv(y1, x, &p, qmatmul_isa_detect());
    qmatmul(y1 + N, x + K, M - 1, &p, scratch);
    omp_set_num_threads(3);
    qmatmul_gemv(y3, x, &p, qmatmul_isa_detect());
    qmatmul(y3 + N, x + K, M - 1, &p, scratch);
    // 24 threads: fewer than two panel items per thread, so the panels are narrowed
    float *y24 = xmalloc((size_t)N * 4);
    omp_set_num_threads(24);
    qmatmul_gemv(y24, x, &p, qmatmul_isa_detect());
    omp_set_num_threads(nt);
    assert_memory_equal(y1, y24, (size_t)N * 4);
    free(y24);
    // our GEMV: the same bits; the GEMM rows go through OpenBLAS sgemm, whose bits depend on
    // its thread count (docs/design.md, "Threads"): close, not identical
    assert_memory_equal(y1, y3, (size_t)N * 4);
    for (int64_t i = N; i < M * N; i++)
        assert_true(fabsf(y1[i] - y3[i]) <= 1e-5f * (1.0f + fabsf(y1[i])));
    free(y1);
    free(y3);
#endif
    print_message("K=%lld N=%lld group %d act-order %d bias %d: worst |y-ref|/sum|xw| %.2e\n",
                  (long long)K, (long long)N, s->group, s->act_order, s->bias, worst);
    free(x);
    free(W);
    free(yr);
    free(yd);
    free(y);
    free(y2);
    free(scratch);
    gptq_packed_release(&p);
}

static void test_shapes(void **state) {
    (void)state;
    Rng rng;
    rng_seed(&rng, 11);
    const Shape shapes[] = {
        {576, 200, 128, 0, 1, 0}, // 3 full tiles + 8-wide tail
        {172, 141, 128, 0, 0, 1}, // ragged K (last word half empty, last group 44), odd N
        {256, 72, 32, 1, 1, 0},   // act-order g_idx
        {172, 67, 32, 1, 0, 1},   // act-order, ragged K and N
        {64, 8, -1, 0, 1, 0},     // one group
        {96, 130, 32, 0, 0, 0},   // g 32, asym
        {100, 64, 12, 0, 1, 0},   // group not a multiple of 8: generic path
        {8, 3, -1, 0, 1, 1},      // tiny
        {64, 2100, 32, 0, 1, 0},  // wide: a thread's output range spans two panels
    };
    for (size_t i = 0; i < ARRAY_LEN(shapes); i++)
        run_shape(&shapes[i], &rng);
}

// qmatmul_gemv_multi (q/k/v in one parallel region) == qmatmul_gemv on each weight, bit for
// bit: panel kernel, 8-wide tail, bias, an act-order set that takes the fallback, and a set
// whose group sizes differ (x set up per weight); each again with the layouts recorded as
// at load (gptq_packed_sort_groups).
static void test_gemv_multi(void **state) {
    (void)state;
    Rng rng;
    rng_seed(&rng, 5);
    const Shape sets[3][3] = {
        {{576, 200, 128, 0, 1, 0}, {576, 141, 128, 0, 0, 1}, {576, 1100, 128, 0, 1, 0}},
        {{256, 72, 32, 1, 1, 0}, {256, 40, 32, 0, 1, 0}, {256, 9, 32, 1, 0, 1}},
        {{576, 64, 128, 0, 1, 0}, {576, 72, 64, 0, 1, 0}, {576, 80, 64, 0, 0, 0}}};
    for (int k = 0; k < 3; k++) {
        GptqPacked p[3];
        const GptqPacked *pw[3];
        float *y[3], *want[3];
        const int64_t K = sets[k][0].K;
        float *x = xmalloc((size_t)K * 4);
        for (int64_t i = 0; i < K; i++)
            x[i] = (float)rng_normal(&rng);
        for (int i = 0; i < 3; i++) {
            make_weight(&p[i], &sets[k][i], &rng);
            pw[i] = &p[i];
            y[i] = xmalloc((size_t)p[i].N * 4);
            want[i] = xmalloc((size_t)p[i].N * 4);
            qmatmul_gemv(want[i], x, &p[i], qmatmul_isa_detect());
        }
        qmatmul_gemv_multi(y, x, pw, 3);
        for (int i = 0; i < 3; i++)
            assert_memory_equal(y[i], want[i], (size_t)p[i].N * 4);
        for (int i = 0; i < 3; i++) { // (sorted act-order layers take other kernels: new want)
            assert_int_equal(gptq_packed_sort_groups(&p[i]), STATUS_OK);
            qmatmul_gemv(want[i], x, &p[i], qmatmul_isa_detect());
        }
        qmatmul_gemv_multi(y, x, pw, 3);
        for (int i = 0; i < 3; i++) {
            assert_memory_equal(y[i], want[i], (size_t)p[i].N * 4);
            free(y[i]);
            free(want[i]);
            gptq_packed_release(&p[i]);
        }
        free(x);
    }
}

// A NaN or infinity in x reaches every output (the int16 decode path cannot carry them, so
// the kernel falls back to float): no finite garbage from converting NaN to an integer.
static void test_gemv_nonfinite(void **state) {
    (void)state;
    Rng rng;
    rng_seed(&rng, 9);
    const Shape s = {576, 64, 128, 0, 1, 0};
    GptqPacked p;
    make_weight(&p, &s, &rng);
    float x[576], y[64];
    const float bad[2] = {NAN, INFINITY};
    for (int b = 0; b < 2; b++) {
        for (int k = 0; k < 576; k++)
            x[k] = (float)rng_normal(&rng);
        x[300] = bad[b];
        for (int isa = 0; isa < QMAT_ISA_COUNT; isa++) {
            if (isa > (int)qmatmul_isa_detect()) continue; // the CPU lacks it
            qmatmul_gemv(y, x, &p, (QmatIsa)isa);
            for (int n = 0; n < 64; n++)
                if (isfinite(y[n])) fail_msg("isa %d bad %d: y[%d] = %g", isa, b, n, (double)y[n]);
        }
    }
    gptq_packed_release(&p);
}

static void test_bad_weights(void **state) {
    (void)state;
    Rng rng;
    rng_seed(&rng, 3);
    const Shape s = {64, 16, 32, 0, 1, 0};
    GptqPacked p;
    make_weight(&p, &s, &rng);
    p.bits = 8;
    assert_int_equal(qmatmul_check(&p), STATUS_ERR_UNSUPPORTED);
    p.bits = 4;
    p.g_idx[10] = 7;
    assert_int_equal(qmatmul_check(&p), STATUS_ERR_FORMAT);
    assert_non_null(strstr(status_msg(), "g_idx"));
    p.g_idx[10] = -1;
    assert_int_equal(qmatmul_check(&p), STATUS_ERR_FORMAT);
    gptq_packed_release(&p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shapes),
        cmocka_unit_test(test_gemv_multi),
        cmocka_unit_test(test_gemv_nonfinite),
        cmocka_unit_test(test_bad_weights),
    };
    return cmocka_run_group_tests_name("qmatmul", tests, NULL, NULL);
}
