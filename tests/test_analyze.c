/*
 * test_analyze.c - edgeforge analyze on stories260K: weight kurtosis equals kurtosis_f32 of
 * the same matrix; per-linear weight and activation kurtosis and the Table 7 weighted means
 * equal transformers + scipy on identical calibration windows
 * (tests/fixtures/analyze/stories_analyze.json from tools/gen_analyze_fixtures.py);
 * Pearson/Spearman equal scipy.stats.pearsonr/spearmanr; GPTQ report errors.
 */
#include "analyze/analyze.h"
#include "core/common.h"
#include "model/model_io.h"
#include "testutil.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MODEL "models/stories260K/stories260K.bin"
#define TOK   "models/stories260K/tok512.bin"
#define FIX   "tests/fixtures/analyze/stories_analyze.json"

static void load_model(Model *m) {
    ModelLoadOptions lo = {.tokenizer_path = TOK};
    assert_int_equal(model_load(m, MODEL, &lo), STATUS_OK);
}

static json_t *load_fixture(void) {
    json_error_t e;
    json_t *j = json_load_file(FIX, 0, &e);
    if (!j) fail_msg("cannot read %s: %s", FIX, e.text);
    return j;
}

static void assert_rel(const char *what, double x, double ref, double rtol) {
    if (!(fabs(x - ref) <= rtol * fmax(1.0, fabs(ref))))
        fail_msg("%s: %.12g, reference %.12g (rtol %g)", what, x, ref, rtol);
}

static void test_weights_independent(void **s) {
    (void)s;
    Model m;
    load_model(&m);
    AnalyzeOptions o = analyze_options_default();
    AnalyzeReport r;
    assert_int_equal(analyze_weights(&r, &m, &o), STATUS_OK);
    assert_int_equal(r.n_linear, m.cfg.n_layers * 7);
    const Tensor *w[7];
    double num = 0, den = 0;
    for (int i = 0; i < r.n_linear; i++) {
        const LlamaLayer *ly = &m.layers[i / 7];
        w[0] = &ly->wq, w[1] = &ly->wk, w[2] = &ly->wv, w[3] = &ly->wo;
        w[4] = &ly->w_gate, w[5] = &ly->w_up, w[6] = &ly->w_down;
        const Tensor *t = w[i % 7];
        assert_int_equal(t->dtype, DTYPE_F32);
        double k = kurtosis_f32(t->data, tensor_numel(t), o.kurt);
        assert_true(k == r.lin[i].w_kurt);
        num += (double)tensor_numel(t) * k;
        den += (double)tensor_numel(t);
        assert_true(isnan(r.lin[i].a_kurt));
    }
    assert_rel("weighted mean", r.w_mean, num / den, 1e-12);
    analyze_report_release(&r);
    model_release(&m);
}

static void test_vs_transformers(void **s) {
    (void)s;
    json_t *j = load_fixture();
    int ns = (int)json_integer_value(json_object_get(j, "n_seqs"));
    int L = (int)json_integer_value(json_object_get(j, "seq_len"));
    json_t *toks = json_object_get(j, "tokens");
    assert_int_equal((int)json_array_size(toks), ns);
    CalibSet cs = {.tokens = xmalloc((size_t)ns * L * sizeof(int32_t)), .n_seqs = ns, .seq_len = L};
    for (int q = 0; q < ns; q++) {
        json_t *row = json_array_get(toks, (size_t)q);
        assert_int_equal((int)json_array_size(row), L);
        for (int t = 0; t < L; t++)
            cs.tokens[q * L + t] = (int32_t)json_integer_value(json_array_get(row, (size_t)t));
    }
    Model m;
    load_model(&m);
    AnalyzeOptions o = analyze_options_default();
    AnalyzeReport r;
    assert_int_equal(analyze_run(&r, &m, &cs, &o), STATUS_OK);
    json_t *lins = json_object_get(j, "linears");
    assert_int_equal((int)json_array_size(lins), r.n_linear);
    assert_int_equal((int)r.n_tokens, ns * L);
    for (int i = 0; i < r.n_linear; i++) {
        json_t *e = json_array_get(lins, (size_t)i);
        const AnalyzeLinear *a = &r.lin[i];
        char what[128];
        assert_string_equal(a->name, json_string_value(json_object_get(e, "name")));
        snprintf(what, sizeof what, "%s w_kurt", a->name);
        // identical float32 weights, double moments: summation order only
        assert_rel(what, a->w_kurt, json_real_value(json_object_get(e, "w_kurt")), 1e-9);
        // activations: float32 forward passes of two engines (different summation orders;
        // agreement measured ~1e-7 relative on this machine)
        static const char *const keys[4] = {"a_kurt", "a_absmax", "a_rms", "a_all"};
        const double vals[4] = {a->a_kurt, a->a_absmax, a->a_rms, a->a_all};
        for (int k = 0; k < 4; k++) {
            snprintf(what, sizeof what, "%s %s", a->name, keys[k]);
            assert_rel(what, vals[k], json_real_value(json_object_get(e, keys[k])), 2e-4);
        }
    }
    assert_rel("W weighted mean", r.w_mean, json_real_value(json_object_get(j, "w_mean")), 1e-9);
    assert_rel("A weighted mean", r.a_mean, json_real_value(json_object_get(j, "a_mean")), 1e-5);

    // the GPTQ report path: losses written as edgeforge quantize's report lays them out
    json_t *corr = json_object_get(j, "correlation");
    json_t *loss = json_object_get(corr, "loss");
    json_t *rep = json_object(), *arr = json_array();
    for (int i = r.n_linear - 1; i >= 0; i--) { // order must not matter
        json_t *e = json_object();
        json_object_set_new(e, "name", json_string(r.lin[i].name));
        json_object_set(e, "loss", json_array_get(loss, (size_t)i));
        json_array_append_new(arr, e);
    }
    json_object_set_new(rep, "linears", arr);
    char path[] = "/tmp/ef_analyze_rep_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(json_dumpfd(rep, fd, 0), 0);
    close(fd);
    json_decref(rep);
    assert_int_equal(analyze_attach_gptq(&r, path), STATUS_OK);
    remove(path);
    assert_true(r.has_gptq);
    assert_int_equal(r.n_corr, r.n_linear);
    assert_rel("pearson A", r.pearson_a, json_real_value(json_object_get(corr, "pearson_a")), 1e-3);
    assert_rel("spearman A", r.spearman_a, json_real_value(json_object_get(corr, "spearman_a")),
               1e-12);
    assert_rel("pearson W", r.pearson_w, json_real_value(json_object_get(corr, "pearson_w")), 1e-9);
    assert_rel("spearman W", r.spearman_w, json_real_value(json_object_get(corr, "spearman_w")),
               1e-12);

    // outputs
    char csv[] = "/tmp/ef_analyze_csv_XXXXXX";
    fd = mkstemp(csv);
    close(fd);
    assert_int_equal(analyze_write_csv(&r, csv), STATUS_OK);
    assert_int_equal(analyze_write_json(&r, csv), STATUS_OK);
    json_error_t je;
    json_t *back = json_load_file(csv, 0, &je);
    assert_non_null(back);
    assert_int_equal((int)json_array_size(json_object_get(back, "linears")), r.n_linear);
    json_decref(back);
    remove(csv);

    analyze_report_release(&r);
    calib_release(&cs);
    model_release(&m);
    json_decref(j);
}

// The correlation math alone on the fixture's numbers, exact inputs.
static void test_correlation_vs_scipy(void **s) {
    (void)s;
    json_t *j = load_fixture();
    json_t *lins = json_object_get(j, "linears"), *corr = json_object_get(j, "correlation");
    int n = (int)json_array_size(lins);
    double *w = xmalloc((size_t)n * sizeof *w), *a = xmalloc((size_t)n * sizeof *a),
           *l = xmalloc((size_t)n * sizeof *l);
    for (int i = 0; i < n; i++) {
        w[i] = json_real_value(json_object_get(json_array_get(lins, (size_t)i), "w_kurt"));
        a[i] = json_real_value(json_object_get(json_array_get(lins, (size_t)i), "a_kurt"));
        l[i] = json_real_value(json_array_get(json_object_get(corr, "loss"), (size_t)i));
    }
    assert_rel("pearson w", analyze_pearson(w, l, n),
               json_real_value(json_object_get(corr, "pearson_w")), 1e-12);
    assert_rel("pearson a", analyze_pearson(a, l, n),
               json_real_value(json_object_get(corr, "pearson_a")), 1e-12);
    assert_rel("spearman w", analyze_spearman(w, l, n),
               json_real_value(json_object_get(corr, "spearman_w")), 1e-12);
    assert_rel("spearman a", analyze_spearman(a, l, n),
               json_real_value(json_object_get(corr, "spearman_a")), 1e-12);
    // NaN pairs are skipped; degenerate inputs give NaN
    l[0] = NAN;
    assert_true(isfinite(analyze_pearson(w, l, n)));
    double c[3] = {1, 1, 1}, d[3] = {1, 2, 3};
    assert_true(isnan(analyze_pearson(c, d, 3)));
    assert_true(isnan(analyze_spearman(d, d, 1)));
    assert_rel("perfect", analyze_spearman(d, d, 3), 1.0, 1e-15);
    free(w);
    free(a);
    free(l);
    json_decref(j);
}

static void test_bad_inputs(void **s) {
    (void)s;
    Model m;
    load_model(&m);
    AnalyzeOptions o = analyze_options_default();
    AnalyzeReport r;
    assert_int_equal(analyze_weights(&r, &m, &o), STATUS_OK);
    assert_int_equal(analyze_attach_gptq(&r, "/nonexistent/rep.json"), STATUS_ERR_IO);
    char path[] = "/tmp/ef_analyze_bad_XXXXXX";
    int fd = mkstemp(path);
    assert_true(write(fd, "{\"linears\": [{\"name\": \"x\", \"loss\": 1}]}", 39) == 39);
    close(fd);
    assert_int_equal(analyze_attach_gptq(&r, path), STATUS_ERR_FORMAT);
    assert_non_null(strstr(status_msg(), "model.layers.0.self_attn.q_proj"));
    FILE *f = fopen(path, "w");
    fputs("not json", f);
    fclose(f);
    assert_int_equal(analyze_attach_gptq(&r, path), STATUS_ERR_FORMAT);
    remove(path);
    assert_false(r.has_gptq);
    // windows longer than the context
    int32_t *t = xcalloc(1024, sizeof *t);
    CalibSet cs = {.tokens = t, .n_seqs = 1, .seq_len = 1024};
    AnalyzeReport r2;
    assert_int_equal(analyze_run(&r2, &m, &cs, &o), STATUS_ERR_ARG);
    free(t);
    analyze_report_release(&r);
    model_release(&m);
}

// End to end: edgeforge quantize writes a GPTQ report, edgeforge analyze correlates with it.
static void test_cli(void **s) {
    (void)s;
    char *out = NULL;
    const char *base = MODEL " --tokenizer " TOK " --calib tests/fixtures/quant/stories_calib.txt"
                             " --nsamples 4 --seq-len 64";
    char cmd[1024];
    remove("/tmp/ef_analyze_cli.csv");
    remove("/tmp/ef_analyze_cli.json");
    system("rm -rf /tmp/ef_analyze_q /tmp/ef_analyze_q.report.json");
    snprintf(cmd, sizeof cmd, "quantize %s --group 32 --out /tmp/ef_analyze_q", base);
    assert_int_equal(run_cli(cmd, &out), 0);
    free(out);
    // the same output again: refused before any work (exit 2, a usage error)
    assert_int_equal(run_cli(cmd, &out), 2);
    assert_non_null(strstr(out, "'/tmp/ef_analyze_q' already exists"));
    assert_null(strstr(out, "calibration:"));
    free(out);
    // a missing report: clear error, no output files
    snprintf(cmd, sizeof cmd,
             "analyze %s --gptq-report /nonexistent.json --out /tmp/ef_analyze_cli", base);
    assert_int_equal(run_cli(cmd, &out), 1);
    assert_non_null(strstr(out, "/nonexistent.json"));
    free(out);
    assert_true(access("/tmp/ef_analyze_cli.csv", F_OK) != 0);
    assert_int_equal(run_cli("analyze " MODEL " --tokenizer " TOK, &out), 2); // no --calib
    free(out);
    snprintf(cmd, sizeof cmd,
             "analyze %s --gptq-report /tmp/ef_analyze_q.report.json --out /tmp/ef_analyze_cli",
             base);
    assert_int_equal(run_cli(cmd, &out), 0);
    assert_non_null(strstr(out, "vs GPTQ loss over 35 linears"));
    free(out);
    json_error_t je;
    json_t *j = json_load_file("/tmp/ef_analyze_cli.json", 0, &je);
    assert_non_null(j);
    json_t *c = json_object_get(j, "gptq_loss_correlation");
    assert_int_equal((int)json_integer_value(json_object_get(c, "n")), 35);
    double p = json_real_value(json_object_get(c, "pearson_activation_kurtosis"));
    assert_true(p >= -1 && p <= 1);
    json_decref(j);
    remove("/tmp/ef_analyze_cli.csv");
    remove("/tmp/ef_analyze_cli.json");
    system("rm -rf /tmp/ef_analyze_q /tmp/ef_analyze_q.report.json");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_weights_independent),
        cmocka_unit_test(test_vs_transformers),
        cmocka_unit_test(test_correlation_vs_scipy),
        cmocka_unit_test(test_bad_inputs),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests_name("analyze", tests, NULL, NULL);
}
