/*
 * test_tpe.c - TPE parity with Optuna and sampler behaviour.
 *
 * tests/fixtures/hpo/tpe_cases.json (tools/gen_tpe_fixtures.py, real Optuna TPESampler) holds
 * trial histories and, for each TPE draw, Optuna's below/above split, the Parzen estimators
 * l(x) and g(x) (weights, mu, sigma, categorical rows), 24 candidates drawn by Optuna and their
 * acquisition values and argmax. We rebuild everything from the same history and compare:
 * estimators to 1e-9, acquisition values to 1e-9, the same chosen candidate.
 */
#include "core/common.h"
#include "core/rng.h"
#include "hpo/parzen.h"
#include "hpo/space.h"
#include "hpo/tpe.h"
#include "testutil.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int close_enough(double a, double b, double tol) {
    if (isinf(a) || isinf(b)) return a == b;
    return fabs(a - b) <= tol * (1.0 + fabs(b));
}

typedef struct {
    HpoSpace space;
    json_t *root;
} Fix;

static void load_fixture(Fix *f) {
    json_error_t err;
    f->root = json_load_file(fixture_path("hpo/tpe_cases.json"), 0, &err);
    if (!f->root) fail_msg("cannot load tpe fixture: %s", err.text);
    memset(&f->space, 0, sizeof(f->space));
    json_t *sp = json_object_get(f->root, "space");
    for (size_t i = 0; i < json_array_size(sp); i++) {
        json_t *e = json_array_get(sp, i);
        HpoDist d;
        const char *name = json_string_value(json_object_get(e, "name"));
        assert_int_equal(
            hpo_dist_from_json(&d, json_string_value(json_object_get(e, "distribution")), name),
            STATUS_OK);
        assert_int_equal(hpo_space_add(&f->space, name, &d), STATUS_OK);
        hpo_dist_release(&d);
    }
}

// Compares one estimator against the fixture's (built with a stable argsort, i.e. tied
// observations keep trial order, as ours do; see tools/gen_tpe_fixtures.py).
static int check_estimator(const char *what, const HpoParzen *pe, json_t *ref, json_t *pnames) {
    json_t *w = json_object_get(ref, "weights");
    if ((int)json_array_size(w) != pe->n_kernels) {
        print_error("%s: %d kernels, optuna %zu\n", what, pe->n_kernels, json_array_size(w));
        return 1;
    }
    int bad = 0;
    for (int k = 0; k < pe->n_kernels; k++)
        if (!close_enough(pe->weights[k], json_real_value(json_array_get(w, (size_t)k)), 1e-9))
            bad++;
    json_t *dims = json_object_get(ref, "dims");
    for (int p = 0; p < pe->n_dims; p++) {
        const char *name = json_string_value(json_array_get(pnames, (size_t)p));
        json_t *dj = json_object_get(dims, name);
        const HpoParzenDim *dm = &pe->dim[p];
        if (dm->dist->kind == HPO_DIST_CATEGORICAL) {
            json_t *rows = json_object_get(dj, "cat_weights");
            int C = dm->dist->n_choices;
            for (int k = 0; k < pe->n_kernels; k++)
                for (int c = 0; c < C; c++) {
                    double r = json_number_value(
                        json_array_get(json_array_get(rows, (size_t)k), (size_t)c));
                    if (!close_enough(dm->cat_w[k * C + c], r, 1e-9)) bad++;
                }
            continue;
        }
        json_t *mu = json_object_get(dj, "mu"), *sg = json_object_get(dj, "sigma");
        int dim_bad = 0;
        for (int k = 0; k < pe->n_kernels; k++) {
            if (!close_enough(dm->mu[k], json_number_value(json_array_get(mu, (size_t)k)), 1e-9))
                dim_bad++;
            if (!close_enough(dm->sigma[k], json_number_value(json_array_get(sg, (size_t)k)), 1e-9))
                dim_bad++;
        }
        if (dim_bad) {
            print_error("%s: param %s: %d mu/sigma values differ\n", what, name, dim_bad);
            bad += dim_bad;
        }
    }
    return bad;
}

static void test_parzen_parity_with_optuna(void **state) {
    (void)state;
    Fix f;
    load_fixture(&f);
    json_t *cases = json_object_get(f.root, "cases");
    int n_draws = 0, n_bad = 0, n_same_pick = 0, n_same_numpy = 0, n_est = 0;
    double max_acq_err = 0;
    for (size_t ci = 0; ci < json_array_size(cases); ci++) {
        json_t *c = json_array_get(cases, ci);
        const char *cname = json_string_value(json_object_get(c, "name"));
        HpoTpeConfig cfg = hpo_tpe_default_config();
        cfg.multivariate = json_is_true(json_object_get(c, "multivariate"));
        cfg.constant_liar = json_is_true(json_object_get(c, "constant_liar"));
        json_t *cc = json_object_get(c, "config");
        if (json_object_get(cc, "consider_endpoints"))
            cfg.parzen.consider_endpoints = json_is_true(json_object_get(cc, "consider_endpoints"));
        if (json_object_get(cc, "consider_magic_clip"))
            cfg.parzen.consider_magic_clip =
                json_is_true(json_object_get(cc, "consider_magic_clip"));
        if (json_object_get(cc, "prior_weight"))
            cfg.parzen.prior_weight = json_number_value(json_object_get(cc, "prior_weight"));
        bool maximize = json_is_true(json_object_get(c, "maximize"));
        int current = (int)json_integer_value(json_object_get(c, "current_number"));
        json_t *tj = json_object_get(c, "trials");
        int nt = (int)json_array_size(tj);
        HpoTpeTrial *tr = xcalloc((size_t)nt + 1, sizeof(HpoTpeTrial));
        double *pv = xcalloc((size_t)(nt + 1) * (size_t)f.space.n, sizeof(double));
        for (int i = 0; i < nt; i++) {
            json_t *t = json_array_get(tj, (size_t)i);
            tr[i].number = (int)json_integer_value(json_object_get(t, "number"));
            tr[i].state = (HpoTrialState)json_integer_value(json_object_get(t, "state"));
            json_t *v = json_object_get(t, "value");
            tr[i].value = json_is_number(v) ? json_number_value(v) : NAN;
            json_t *last = json_object_get(t, "last");
            if (json_is_array(last)) {
                tr[i].has_last_step = true;
                tr[i].last_step = json_integer_value(json_array_get(last, 0));
                json_t *lv = json_array_get(last, 1);
                tr[i].last_value = json_is_number(lv) ? json_number_value(lv) : NAN;
            }
            json_t *ps = json_object_get(t, "params");
            for (int p = 0; p < f.space.n; p++) {
                json_t *x = json_array_get(ps, (size_t)p);
                pv[i * f.space.n + p] = json_is_number(x) ? json_number_value(x) : NAN;
            }
            tr[i].params = pv + i * f.space.n;
        }
        json_t *draws = json_object_get(c, "draws");
        for (size_t di = 0; di < json_array_size(draws); di++) {
            json_t *dr = json_array_get(draws, di);
            json_t *pn = json_object_get(dr, "params");
            HpoSpace sub = {xcalloc(json_array_size(pn) + 1, sizeof(HpoParam)), 0};
            int cols[32];
            for (size_t j = 0; j < json_array_size(pn); j++) {
                int col = hpo_space_find(&f.space, json_string_value(json_array_get(pn, j)));
                assert_true(col >= 0);
                sub.params[sub.n] = f.space.params[col];
                cols[sub.n++] = col;
            }
            char what[160];
            snprintf(what, sizeof(what), "%s draw %zu", cname, di);
            // split
            int *below = xcalloc((size_t)nt + 1, sizeof(int)),
                *above = xcalloc((size_t)nt + 1, sizeof(int));
            int nb, na;
            hpo_tpe_split(&cfg, maximize, tr, nt, current, below, &nb, above, &na);
            json_t *rb = json_object_get(dr, "below"), *ra = json_object_get(dr, "above");
            assert_int_equal(hpo_tpe_gamma(cfg.gamma, 0), 0);
            if (nb != (int)json_array_size(rb) || na != (int)json_array_size(ra)) {
                print_error("%s: split %d/%d, optuna %zu/%zu\n", what, nb, na, json_array_size(rb),
                            json_array_size(ra));
                n_bad++;
            } else {
                for (int i = 0; i < nb; i++)
                    if (tr[below[i]].number !=
                        (int)json_integer_value(json_array_get(rb, (size_t)i)))
                        n_bad++;
                for (int i = 0; i < na; i++)
                    if (tr[above[i]].number !=
                        (int)json_integer_value(json_array_get(ra, (size_t)i)))
                        n_bad++;
            }
            HpoParzen l, g;
            hpo_tpe_build(&cfg, &sub, cols, tr, below, nb, above, na, &l, &g);
            n_bad += check_estimator(what, &l, json_object_get(dr, "below_est"), pn);
            n_bad += check_estimator(what, &g, json_object_get(dr, "above_est"), pn);
            n_est += 2;
            // same candidates -> same acquisition values -> same pick
            json_t *cj = json_object_get(dr, "candidates");
            int ncand = (int)json_array_size(cj);
            double *cand = xcalloc((size_t)ncand * (size_t)sub.n, sizeof(double));
            for (int i = 0; i < ncand; i++)
                for (int j = 0; j < sub.n; j++)
                    cand[i * sub.n + j] =
                        json_number_value(json_array_get(json_array_get(cj, (size_t)i), (size_t)j));
            double *acq = xcalloc((size_t)ncand, sizeof(double));
            double *ref_l = xcalloc((size_t)ncand, sizeof(double));
            double *ref_l2 = xcalloc((size_t)ncand, sizeof(double));
            int best = hpo_tpe_pick(&l, &g, cand, ncand, acq);
            // the shared-normaliser log pdf equals its per-kernel _ref twin
            hpo_parzen_log_pdf(&l, cand, ncand, ref_l);
            hpo_parzen_log_pdf_ref(&l, cand, ncand, ref_l2);
            for (int i = 0; i < ncand; i++)
                assert_true(ref_l[i] == ref_l2[i]);
            json_t *aj = json_object_get(dr, "acq");
            for (int i = 0; i < ncand; i++) {
                double r = json_number_value(json_array_get(aj, (size_t)i));
                double e = fabs(acq[i] - r) / (1.0 + fabs(r));
                if (e > max_acq_err) max_acq_err = e;
                if (!close_enough(acq[i], r, 1e-9)) {
                    print_error("%s: acq[%d] %.17g optuna %.17g\n", what, i, acq[i], r);
                    n_bad++;
                }
            }
            int rbest = (int)json_integer_value(json_object_get(dr, "best"));
            if (best == (int)json_integer_value(json_object_get(dr, "best_numpy"))) n_same_numpy++;
            if (best == rbest)
                n_same_pick++;
            else {
                print_error("%s: picked %d, optuna %d\n", what, best, rbest);
                n_bad++;
            }
            n_draws++;
            free(cand);
            free(acq);
            free(ref_l);
            free(ref_l2);
            hpo_parzen_release(&l);
            hpo_parzen_release(&g);
            free(below);
            free(above);
            free(sub.params);
        }
        free(tr);
        free(pv);
    }
    print_message("tpe parity: %d draws, %d estimators, %d same picks, max acq rel err %.3g, "
                  "same pick as stock-numpy Optuna %d\n",
                  n_draws, n_est, n_same_pick, max_acq_err, n_same_numpy);
    assert_int_equal(n_bad, 0);
    assert_true(n_draws >= 50);
    hpo_space_release(&f.space);
    json_decref(f.root);
}

static void test_gamma_and_weights(void **state) {
    (void)state;
    // Optuna: default_gamma(n) = min(ceil(0.1 n), 25)
    assert_int_equal(hpo_tpe_gamma(HPO_GAMMA_DEFAULT, 30), 3);
    assert_int_equal(hpo_tpe_gamma(HPO_GAMMA_DEFAULT, 31), 4);
    assert_int_equal(hpo_tpe_gamma(HPO_GAMMA_DEFAULT, 10), 1);
    assert_int_equal(hpo_tpe_gamma(HPO_GAMMA_DEFAULT, 1000), 25);
    assert_int_equal(hpo_tpe_gamma(HPO_GAMMA_HYPEROPT, 16), 1);
    double w[40];
    hpo_default_weights(40, w);
    assert_true(fabs(w[0] - 1.0 / 40) < 1e-15);
    assert_true(w[14] == 1.0 && w[39] == 1.0);
    assert_true(w[1] > w[0] && w[13] < 1.0);
}

static void test_truncnorm_numerics(void **state) {
    (void)state;
    // log mass of the whole line is 0, of a symmetric interval matches erf
    assert_true(fabs(hpo_log_gauss_mass(-40, 40)) < 1e-15);
    assert_true(fabs(hpo_log_gauss_mass(-1, 1) - log(erf(1 / M_SQRT2))) < 1e-14);
    // far tails stay finite
    assert_true(isfinite(hpo_log_gauss_mass(30, 31)));
    assert_true(isfinite(hpo_log_gauss_mass(-31, -30)));
    // ppf inverts the truncated cdf
    double a = -0.7, b = 2.3;
    for (double q = 0.05; q < 1; q += 0.1) {
        double x = hpo_truncnorm_ppf(q, a, b);
        double cdf = exp(hpo_log_gauss_mass(a, x) - hpo_log_gauss_mass(a, b));
        assert_true(fabs(cdf - q) < 1e-9);
        assert_true(x >= a && x <= b);
    }
    assert_true(hpo_truncnorm_ppf(0.5, 8, 9) > 8);
}

// Bad --param flags are errors, not crashes (found by fuzz/fuzz_hpo_space.c): a choice that
// is not UTF-8 (jansson refuses it: a NULL string reached strdup), an int step out of range
// (undefined conversion); and
// formatting a value no distribution holds (a corrupt journal) prints it plainly.
static void test_space_flags_bad(void **state) {
    (void)state;
    HpoSpace sp = {0};
    assert_int_equal(hpo_space_add_flag(&sp, "opt=cat:adamw,\xff\xfe"), STATUS_ERR_ARG);
    assert_non_null(strstr(status_msg(), "UTF-8"));
    assert_int_equal(hpo_space_add_flag(&sp, "n=int:1:8:step=1e300"), STATUS_ERR_ARG);
    assert_int_equal(sp.n, 0);
    assert_int_equal(hpo_space_add_flag(&sp, "opt=cat:adamw,1.5,2"), STATUS_OK);
    assert_int_equal(hpo_space_add_flag(&sp, "n=int:1:8"), STATUS_OK);
    char buf[64];
    hpo_dist_format(&sp.params[0].dist, 1, buf, sizeof buf);
    assert_string_equal(buf, "1.5");
    hpo_dist_format(&sp.params[0].dist, NAN, buf, sizeof buf);
    assert_string_equal(buf, "nan");
    hpo_dist_format(&sp.params[1].dist, 1e300, buf, sizeof buf);
    assert_string_equal(buf, "1e+300");
    hpo_space_release(&sp);
}

static void test_sampler_in_bounds_and_deterministic(void **state) {
    (void)state;
    HpoSpace sp;
    hpo_space_table3(&sp);
    assert_int_equal(hpo_space_add_flag(&sp, "opt=cat:adamw,muon"), STATUS_OK);
    assert_int_equal(hpo_space_add_flag(&sp, "bits=int:2:8:step=2"), STATUS_OK);
    HpoTpeConfig cfg = hpo_tpe_default_config();
    cfg.n_startup_trials = 4;
    enum { N = 30 };
    HpoTpeTrial tr[N];
    double pv[N][8], pv2[N][8];
    Rng r1, r2;
    rng_seed(&r1, 7);
    rng_seed(&r2, 7);
    for (int mode = 0; mode < 2; mode++) {
        cfg.multivariate = mode == 1;
        for (int i = 0; i < N; i++) {
            assert_int_equal(hpo_tpe_suggest(&cfg, &sp, false, tr, i, i, &r1, pv[i]), STATUS_OK);
            assert_int_equal(hpo_tpe_suggest(&cfg, &sp, false, tr, i, i, &r2, pv2[i]), STATUS_OK);
            for (int p = 0; p < sp.n; p++) {
                assert_true(pv[i][p] == pv2[i][p]);
                assert_true(hpo_dist_contains(&sp.params[p].dist, pv[i][p]));
            }
            tr[i] = (HpoTpeTrial){.number = i, .state = HPO_COMPLETE, .params = pv[i]};
            tr[i].value =
                (pv[i][0] - 1.3) * (pv[i][0] - 1.3) + (log10(pv[i][2]) + 4) * (log10(pv[i][2]) + 4);
        }
        // TPE concentrates near the optimum: the best of the last 10 beats random's typical
        double best_late = 1e9;
        for (int i = N - 10; i < N; i++)
            best_late = fmin(best_late, tr[i].value);
        assert_true(best_late < 0.05);
    }
    hpo_space_release(&sp);
}

static void test_space_parsing(void **state) {
    (void)state;
    HpoSpace sp = {0};
    assert_int_equal(hpo_space_add_flag(&sp, "x=float:0:1"), STATUS_OK);
    assert_int_equal(hpo_space_add_flag(&sp, "lr=float:1e-5:1e-3:log"), STATUS_OK);
    assert_int_equal(hpo_space_add_flag(&sp, "r=int:8:65:step=8"), STATUS_OK);
    assert_true(sp.params[2].dist.high == 64); // snapped onto the grid like Optuna
    assert_int_not_equal(hpo_space_add_flag(&sp, "x=float:0:1"), STATUS_OK);     // dup
    assert_int_not_equal(hpo_space_add_flag(&sp, "y=float:1:0"), STATUS_OK);     // low>high
    assert_int_not_equal(hpo_space_add_flag(&sp, "y=float:0:1:log"), STATUS_OK); // log 0
    assert_int_not_equal(hpo_space_add_flag(&sp, "y=int:0.5:3"), STATUS_OK);
    assert_int_not_equal(hpo_space_add_flag(&sp, "y=weird:0:3"), STATUS_OK);
    assert_int_not_equal(hpo_space_add_flag(&sp, "y"), STATUS_OK);
    char *js = hpo_dist_to_json(&sp.params[1].dist);
    HpoDist back;
    assert_int_equal(hpo_dist_from_json(&back, js, "lr"), STATUS_OK);
    assert_true(hpo_dist_equal(&back, &sp.params[1].dist));
    hpo_dist_release(&back);
    free(js);
    HpoDist d;
    assert_int_not_equal(hpo_dist_from_json(&d, "{\"name\":\"Nope\",\"attributes\":{}}", "z"),
                         STATUS_OK);
    assert_int_not_equal(hpo_dist_from_json(&d, "{\"type\":\"int\",\"low\":1.5,\"high\":3}", "z"),
                         STATUS_OK);
    assert_int_not_equal(hpo_dist_from_json(&d, "not json", "z"), STATUS_OK);
    assert_int_equal(
        hpo_dist_from_json(&d, "{\"type\":\"categorical\",\"choices\":[\"a\",1,null]}", "z"),
        STATUS_OK);
    assert_int_equal(d.n_choices, 3);
    hpo_dist_release(&d);
    hpo_space_release(&sp);
    // space files
    const char *bad = "/tmp/ef_hpo_bad_space.json";
    FILE *fp = fopen(bad, "w");
    fputs("{\"x\": {\"type\": \"float\", \"low\": 2, \"high\": 1}}", fp);
    fclose(fp);
    assert_int_not_equal(hpo_space_load(&sp, bad), STATUS_OK);
    assert_true(strstr(status_msg(), bad) != NULL);
    hpo_space_release(&sp);
    fp = fopen(bad, "w");
    fputs("{\"lr\": {\"type\": \"float\", \"low\": 1e-5, \"high\": 1e-3, \"log\": true},"
          " \"r\": {\"type\": \"int\", \"low\": 8, \"high\": 64, \"step\": 8},"
          " \"opt\": {\"name\": \"CategoricalDistribution\", \"attributes\": {\"choices\": [\"a\", "
          "2]}}}",
          fp);
    fclose(fp);
    assert_int_equal(hpo_space_load(&sp, bad), STATUS_OK);
    assert_int_equal(sp.n, 3);
    assert_true(sp.params[0].dist.log && sp.params[1].dist.step == 8);
    assert_int_equal(sp.params[2].dist.n_choices, 2);
    hpo_space_release(&sp);
    assert_int_equal(hpo_space_load(&sp, "table3"), STATUS_OK);
    assert_int_equal(sp.n, 6);
    hpo_space_release(&sp);
    // a parameter given twice is refused (JSON would keep the last one)
    fp = fopen(bad, "w");
    fputs("{\"r\": {\"type\": \"int\", \"low\": 8, \"high\": 64},"
          " \"r\": {\"type\": \"int\", \"low\": 1, \"high\": 2}}",
          fp);
    fclose(fp);
    assert_int_equal(hpo_space_load(&sp, bad), STATUS_ERR_FORMAT);
    assert_non_null(strstr(status_msg(), "duplicate"));
    hpo_space_release(&sp);
    remove(bad);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parzen_parity_with_optuna),
        cmocka_unit_test(test_gamma_and_weights),
        cmocka_unit_test(test_truncnorm_numerics),
        cmocka_unit_test(test_space_flags_bad),
        cmocka_unit_test(test_sampler_in_bounds_and_deterministic),
        cmocka_unit_test(test_space_parsing),
    };
    return cmocka_run_group_tests_name("tpe", tests, NULL, NULL);
}
