/*
 * test_sampler.c - next-token sampling against transformers' logits warpers
 * (tests/fixtures/sampler/cases.json, tools/gen_sampler_fixtures.py):
 *   - sampler_distribution = TemperatureLogitsWarper -> TopKLogitsWarper -> TopPLogitsWarper
 *     -> softmax: the same kept token ids and probabilities within 1e-5 relative;
 *   - sampler_sample draws from that distribution: a seeded run of 8000 draws per case
 *     passes a chi-square test (p > 1e-4 for a correct sampler; a wrong filter or draw fails
 *     by orders of magnitude), and the same seed gives the same tokens;
 *   - top_p below 1/V on flat logits keeps the most likely token (it used to be cut with the
 *     rest, leaving no candidate);
 *   - parameter checks.
 */
#include "core/common.h"
#include "model/sampler.h"
#include "testutil.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CASES "tests/fixtures/sampler/cases.json"

typedef struct {
    const char *name;
    SamplerParams p;
    int V, n_ref;
    float *logits;
    int32_t *ref_id;
    double *ref_p;
} Case;

static float *json_floats(json_t *a, int *n) {
    *n = (int)json_array_size(a);
    float *v = xmalloc((size_t)MAX(*n, 1) * sizeof *v);
    for (int i = 0; i < *n; i++)
        v[i] = (float)json_number_value(json_array_get(a, (size_t)i));
    return v;
}

static void case_load(Case *c, json_t *j) {
    c->name = json_string_value(json_object_get(j, "name"));
    c->p = sampler_params_default();
    c->p.temperature = (float)json_number_value(json_object_get(j, "temperature"));
    c->p.top_k = (int)json_integer_value(json_object_get(j, "top_k"));
    c->p.top_p = (float)json_number_value(json_object_get(j, "top_p"));
    c->p.seed = 7;
    c->logits = json_floats(json_object_get(j, "logits"), &c->V);
    json_t *ids = json_object_get(j, "ids"), *probs = json_object_get(j, "probs");
    c->n_ref = (int)json_array_size(ids);
    assert_int_equal(json_array_size(probs), (size_t)c->n_ref);
    c->ref_id = xmalloc((size_t)c->n_ref * sizeof *c->ref_id);
    c->ref_p = xmalloc((size_t)c->n_ref * sizeof *c->ref_p);
    for (int i = 0; i < c->n_ref; i++) {
        c->ref_id[i] = (int32_t)json_integer_value(json_array_get(ids, (size_t)i));
        c->ref_p[i] = json_number_value(json_array_get(probs, (size_t)i));
    }
}

static void case_free(Case *c) {
    free(c->logits);
    free(c->ref_id);
    free(c->ref_p);
}

// Upper tail of the chi-square distribution with k degrees of freedom at x (Wilson-Hilferty:
// accurate to a few percent of the p-value, enough for a 1e-4 threshold).
static double chi2_tail(double x, int k) {
    const double z = (cbrt(x / k) - (1.0 - 2.0 / (9.0 * k))) / sqrt(2.0 / (9.0 * k));
    return 0.5 * erfc(z / sqrt(2.0));
}

static void check_case(const Case *c) {
    Sampler s;
    assert_int_equal(sampler_params_check(&c->p), STATUS_OK);
    assert_int_equal(sampler_init(&s, c->V, &c->p), STATUS_OK);
    float *prob = xmalloc((size_t)c->V * sizeof *prob);
    int32_t *id = xmalloc((size_t)c->V * sizeof *id);
    double *ours = xcalloc((size_t)c->V, sizeof *ours), *ref = xcalloc((size_t)c->V, sizeof *ref);
    const int n = sampler_distribution(&s, c->logits, prob, id);
    double total = 0.0;
    for (int i = 0; i < n; i++) {
        assert_true(id[i] >= 0 && id[i] < c->V);
        assert_true(ours[id[i]] == 0.0); // each id once
        ours[id[i]] = prob[i];
        total += prob[i];
    }
    if (fabs(total - 1.0) > 1e-5) fail_msg("%s: probabilities sum to %.9g", c->name, total);
    for (int i = 0; i < c->n_ref; i++)
        ref[c->ref_id[i]] = c->ref_p[i];
    // the same support (ignoring probabilities that underflow float32 on one side) and the
    // same values
    for (int v = 0; v < c->V; v++) {
        const double a = ours[v], b = ref[v];
        if (MAX(a, b) < 1e-30) continue;
        if (fabs(a - b) > 1e-5 * b + 1e-9)
            fail_msg("%s: token %d has probability %.9g, transformers %.9g (%d vs %d kept)",
                     c->name, v, a, b, n, c->n_ref);
    }
    // draws: chi-square over the kept tokens, bins of expected count >= 5 (the rest pooled)
    enum { DRAWS = 8000 };
    int *count = xcalloc((size_t)c->V, sizeof *count);
    int32_t first[8];
    for (int d = 0; d < DRAWS; d++) {
        const int32_t t = sampler_sample(&s, c->logits);
        assert_true(t >= 0 && t < c->V);
        if (ref[t] == 0.0) fail_msg("%s: drew token %d, outside the kept set", c->name, t);
        count[t]++;
        if (d < 8) first[d] = t;
    }
    double chi = 0.0, pool_e = 0.0, pool_o = 0.0;
    int bins = 0;
    for (int v = 0; v < c->V; v++) {
        const double e = ref[v] * DRAWS;
        if (e == 0.0) continue;
        if (e < 5.0) {
            pool_e += e;
            pool_o += count[v];
            continue;
        }
        chi += (count[v] - e) * (count[v] - e) / e;
        bins++;
    }
    if (pool_e > 0.0) {
        chi += (pool_o - pool_e) * (pool_o - pool_e) / MAX(pool_e, 1e-9);
        bins++;
    }
    if (bins > 1) {
        const double pv = chi2_tail(chi, bins - 1);
        if (pv < 1e-4)
            fail_msg("%s: chi-square %.1f over %d bins, p = %.2g", c->name, chi, bins, pv);
    }
    // the same seed gives the same tokens
    Sampler s2;
    assert_int_equal(sampler_init(&s2, c->V, &c->p), STATUS_OK);
    for (int d = 0; d < 8; d++)
        assert_int_equal(sampler_sample(&s2, c->logits), first[d]);
    sampler_release(&s2);
    sampler_release(&s);
    free(count);
    free(prob);
    free(id);
    free(ours);
    free(ref);
}

static void test_against_transformers(void **state) {
    (void)state;
    json_error_t e;
    json_t *root = json_load_file(CASES, 0, &e);
    if (!root) fail_msg("%s: %s (line %d)", CASES, e.text, e.line);
    json_t *cases = json_object_get(root, "cases");
    assert_true(json_array_size(cases) >= 40);
    for (size_t i = 0; i < json_array_size(cases); i++) {
        Case c;
        case_load(&c, json_array_get(cases, i));
        check_case(&c);
        case_free(&c);
    }
    json_decref(root);
}

// top_p < 1/V with equal logits: the nucleus is the most likely token (the first, on ties).
static void test_tiny_top_p(void **state) {
    (void)state;
    float logits[4] = {0.5f, 0.5f, 0.5f, 0.5f};
    SamplerParams p = sampler_params_default();
    p.temperature = 1.0f;
    p.top_p = 0.01f;
    Sampler s;
    assert_int_equal(sampler_init(&s, 4, &p), STATUS_OK);
    float prob[4];
    int32_t id[4];
    assert_int_equal(sampler_distribution(&s, logits, prob, id), 1);
    assert_int_equal(id[0], 0);
    assert_true(prob[0] == 1.0f);
    for (int d = 0; d < 100; d++)
        assert_int_equal(sampler_sample(&s, logits), 0);
    sampler_release(&s);
}

static void test_params(void **state) {
    (void)state;
    SamplerParams p = sampler_params_default();
    assert_int_equal(sampler_params_check(&p), STATUS_OK);
    const float bad_t[] = {-1.0f, NAN, INFINITY};
    for (size_t i = 0; i < ARRAY_LEN(bad_t); i++) {
        p = sampler_params_default();
        p.temperature = bad_t[i];
        assert_int_equal(sampler_params_check(&p), STATUS_ERR_ARG);
    }
    const float bad_p[] = {0.0f, -0.5f, 1.5f, NAN};
    for (size_t i = 0; i < ARRAY_LEN(bad_p); i++) {
        p = sampler_params_default();
        p.top_p = bad_p[i];
        assert_int_equal(sampler_params_check(&p), STATUS_ERR_ARG);
    }
    p = sampler_params_default();
    p.top_k = -1;
    assert_int_equal(sampler_params_check(&p), STATUS_ERR_ARG);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_against_transformers),
        cmocka_unit_test(test_tiny_top_p),
        cmocka_unit_test(test_params),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
