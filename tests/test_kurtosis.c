/*
 * test_kurtosis.c - kurtosis against scipy.stats.kurtosis for fisher in {True, False} and
 * bias in {True, False} (tests/fixtures/eval/kurtosis.safetensors from
 * tools/gen_eval_fixtures.py): normal, Student-t(3), Cauchy, LLM-like outliers, a large
 * mean, n = 4, n = 3 and constant data; streaming batches vs one pass; per-channel
 * activation statistics; the parameter-weighted layer mean.
 */
#include "analyze/kurtosis.h"
#include "core/common.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const KurtosisOpts combos[4] = {{true, true}, {true, false}, {false, true}, {false, false}};

static double *fixture_f64(const SafeTensors *st, const char *name, int64_t *n) {
    const SafeTensor *t = safetensors_find(st, name);
    if (!t) fail_msg("fixture tensor '%s' missing", name);
    *n = (int64_t)(t->nbytes / 8);
    double *v = xmalloc(t->nbytes);
    memcpy(v, t->data, t->nbytes);
    return v;
}

// Relative 1e-9: two-pass double moments vs numpy's (different summation order; Cauchy
// data has m4 ~ 1e13, so the comparison is relative).
static void assert_kurt(const char *what, double x, double ref) {
    if (isnan(ref)) {
        if (!isnan(x)) fail_msg("%s: %.17g, scipy nan", what, x);
        return;
    }
    if (!(fabs(x - ref) <= 1e-9 * fmax(1.0, fabs(ref))))
        fail_msg("%s: %.17g, scipy %.17g", what, x, ref);
}

static void test_vs_scipy(void **s) {
    (void)s;
    static const char *const cases[] = {"normal",          "student_t3", "cauchy", "outliers",
                                        "uniform_shifted", "tiny4",      "tiny3",  "constant"};
    SafeTensors st;
    fixture_open(&st, "eval/kurtosis.safetensors");
    for (size_t c = 0; c < ARRAY_LEN(cases); c++) {
        char name[64], what[96];
        int64_t n, nk;
        snprintf(name, sizeof(name), "x_%s", cases[c]);
        float *x = fixture_f32(&st, name, &n);
        snprintf(name, sizeof(name), "k_%s", cases[c]);
        double *ref = fixture_f64(&st, name, &nk);
        assert_int_equal(nk, 4);
        for (int k = 0; k < 4; k++) {
            snprintf(what, sizeof(what), "%s fisher=%d bias=%d", cases[c], combos[k].fisher,
                     combos[k].bias);
            assert_kurt(what, kurtosis_f32(x, n, combos[k]), ref[k]);
            // streaming in uneven batches gives the same value
            KurtMoments m = {0};
            for (int64_t i = 0; i < n; i += 97)
                kurt_moments_push_f32(&m, x + i, MIN(97, n - i));
            assert_kurt(what, kurt_moments_value(&m, combos[k]), ref[k]);
        }
        free(x);
        free(ref);
    }
    safetensors_close(&st);
}

static void test_channels_vs_scipy(void **s) {
    (void)s;
    SafeTensors st;
    fixture_open(&st, "eval/kurtosis.safetensors");
    const SafeTensor *xt = safetensors_find(&st, "act_X");
    assert_non_null(xt);
    int T = (int)xt->shape[0], K = (int)xt->shape[1];
    int64_t n;
    float *X = fixture_f32(&st, "act_X", &n);
    KurtChannels c;
    kurt_channels_init(&c, K);
    kurt_channels_push(&c, X, 40); // two calibration batches
    kurt_channels_push(&c, X + 40 * K, T - 40);
    for (int stat = 0; stat < KURT_CHANNEL_COUNT; stat++) {
        char name[64];
        snprintf(name, sizeof(name), "act_k_%s", kurt_channel_stat_name((KurtChannelStat)stat));
        int64_t nk;
        double *ref = fixture_f64(&st, name, &nk);
        for (int k = 0; k < 4; k++)
            assert_kurt(name, kurt_channels_value(&c, (KurtChannelStat)stat, combos[k]), ref[k]);
        free(ref);
    }
    assert_int_equal(kurt_channel_stat_parse("rms"), KURT_CHANNEL_RMS);
    assert_int_equal(kurt_channel_stat_parse("max"), -1);
    kurt_channels_release(&c);
    kurt_channels_release(&c); // released twice: no-op
    free(X);
    safetensors_close(&st);
}

static void test_weighted_mean(void **s) {
    (void)s;
    SafeTensors st;
    fixture_open(&st, "eval/kurtosis.safetensors");
    int64_t n, nw, nr;
    double *v = fixture_f64(&st, "wmean_values", &n);
    int64_t *w = fixture_i64(&st, "wmean_weights", &nw);
    double *ref = fixture_f64(&st, "wmean_ref", &nr);
    assert_int_equal(n, nw);
    assert_kurt("weighted mean", kurtosis_weighted_mean(v, w, (int)n), ref[0]);
    double nan1 = NAN;
    int64_t w1 = 10;
    assert_true(isnan(kurtosis_weighted_mean(&nan1, &w1, 1)));
    free(v);
    free(w);
    free(ref);
    safetensors_close(&st);
}

// Pearson default; a Gaussian sample is near 3 Pearson, 0 excess.
static void test_defaults(void **s) {
    (void)s;
    KurtosisOpts o = kurtosis_opts_default();
    assert_false(o.fisher);
    assert_true(o.bias);
    double x[] = {-1, 1, -1, 1};
    assert_true(fabs(kurtosis_f64(x, 4, o) - 1.0) < 1e-15); // two-point distribution: 1
    assert_true(isnan(kurtosis_f64(x, 0, o)));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vs_scipy),
        cmocka_unit_test(test_channels_vs_scipy),
        cmocka_unit_test(test_weighted_mean),
        cmocka_unit_test(test_defaults),
    };
    return cmocka_run_group_tests_name("kurtosis", tests, NULL, NULL);
}
