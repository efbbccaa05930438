/*
 * test_mc.c - lm-eval scoring parity (tests/fixtures/eval/mc_scores.json: synthetic
 * log-likelihoods through lm-eval 0.4.9.1's process_results, mean, mean_stderr and
 * consolidate_group_results on the real mmlu group tree), lm-eval's _encode_pair with the
 * committed SmolLM2 and Llama 2 tokenizers (encode_pairs.json), numpy argmax semantics and
 * the results writers. Fixtures: tools/gen_eval_fixtures.py.
 */
#include "core/common.h"
#include "core/fileio.h"
#include "eval/encode_pair.h"
#include "eval/eval.h"
#include "eval/eval_cache.h"
#include "model/infer.h"
#include "model/llama.h"
#include "eval/mc.h"
#include "eval/tasks.h"
#include "model/tokenizer.h"
#include "testutil.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DATA "data/benchmarks"

static json_t *load_json(const char *name) {
    json_error_t err;
    json_t *j = json_load_file(fixture_path(name), 0, &err);
    if (!j) fail_msg("cannot read %s: %s", name, err.text);
    return j;
}

// |x - ref| <= 1e-12 * max(1, |ref|); "N/A" in the fixture must be NaN here.
static void assert_num(const char *what, double x, json_t *ref) {
    if (json_is_string(ref)) {
        if (!isnan(x)) fail_msg("%s: %.17g, lm-eval N/A", what, x);
        return;
    }
    double r = json_number_value(ref);
    if (!(fabs(x - r) <= 1e-12 * fmax(1.0, fabs(r))))
        fail_msg("%s: %.17g, lm-eval %.17g", what, x, r);
}

static void test_argmax_numpy(void **s) {
    (void)s;
    double a[] = {-3, -1, -1, -2};
    assert_int_equal(mc_argmax(a, 4), 1); // first of the tied maxima
    double b[] = {-3, NAN, 0, NAN};
    assert_int_equal(mc_argmax(b, 4), 1); // first NaN
    double c[] = {-INFINITY, -INFINITY};
    assert_int_equal(mc_argmax(c, 2), 0);
    // acc_norm divides by characters, not bytes: "é" is 1, its UTF-8 is 2 bytes
    const char *ch[] = {"\xc3\xa9\xc3\xa9", "abc"};
    double ll[] = {-2.1, -3.0}; // -1.05 vs -1.0: choice 1 by characters (by bytes: 0)
    McDocScore sc;
    mc_score_doc(&sc, ll, NULL, ch, 2, 1);
    assert_int_equal(sc.pred, 0);
    assert_int_equal(sc.pred_norm, 1);
    assert_true(sc.acc == 0 && sc.acc_norm == 1);
    mc_score_doc(&sc, ll, NULL, ch, 2, 7); // gold out of range: lm-eval's -100, scores 0
    assert_true(sc.acc == 0 && sc.acc_norm == 0);
    double one = 1;
    assert_true(isnan(mc_mean_stderr(&one, 1))); // "N/A"
}

static TaskKind kind_of(const char *name) {
    int k = task_kind_parse(name);
    assert_true(k >= 0);
    return (TaskKind)k;
}

static void test_scores_vs_lm_eval(void **s) {
    (void)s;
    json_t *j = load_json("eval/mc_scores.json");
    const char *name;
    json_t *tj;
    int n_tasks = 0;
    json_object_foreach(json_object_get(j, "tasks"), name, tj) {
        json_t *docs = json_object_get(tj, "docs");
        Task t;
        TaskOpts o = task_opts_default();
        o.limit = (int64_t)json_array_size(docs);
        assert_int_equal(task_load(&t, kind_of(name), DATA, &o), STATUS_OK);
        assert_int_equal(t.n_docs, (int)json_array_size(docs));
        McDocScore *sc = xcalloc((size_t)t.n_docs, sizeof(McDocScore));
        double *acc = xcalloc((size_t)t.n_docs, sizeof(double));
        double *accn = xcalloc((size_t)t.n_docs, sizeof(double));
        for (int i = 0; i < t.n_docs; i++) {
            json_t *d = json_array_get(docs, (size_t)i);
            json_t *lj = json_object_get(d, "lls"), *gj = json_object_get(d, "is_greedy");
            int n = t.docs[i].n_choices;
            assert_int_equal((int)json_array_size(lj), n);
            double ll[64];
            bool gr[64];
            for (int c = 0; c < n; c++) {
                ll[c] = json_number_value(json_array_get(lj, (size_t)c));
                gr[c] = json_is_true(json_array_get(gj, (size_t)c));
            }
            mc_score_doc(&sc[i], ll, gr, t.docs[i].choices, n, t.docs[i].gold);
            char what[64];
            snprintf(what, sizeof(what), "%s doc %d acc", name, i);
            assert_num(what, sc[i].acc, json_object_get(d, "acc"));
            if (json_object_get(d, "acc_norm")) {
                snprintf(what, sizeof(what), "%s doc %d acc_norm", name, i);
                assert_num(what, sc[i].acc_norm, json_object_get(d, "acc_norm"));
            }
            acc[i] = sc[i].acc;
            accn[i] = sc[i].acc_norm;
        }
        json_t *agg = json_object_get(tj, "agg");
        McMetric m = mc_metric_from_values(acc, t.n_docs);
        assert_num("acc mean", m.value, json_object_get(agg, "acc"));
        assert_num("acc stderr", m.stderr_, json_object_get(agg, "acc_stderr"));
        if (json_object_get(agg, "acc_norm")) {
            assert_true(task_has_acc_norm(t.kind));
            m = mc_metric_from_values(accn, t.n_docs);
            assert_num("acc_norm mean", m.value, json_object_get(agg, "acc_norm"));
            assert_num("acc_norm stderr", m.stderr_, json_object_get(agg, "acc_norm_stderr"));
        } else {
            assert_false(task_has_acc_norm(t.kind));
        }
        // the rows the CLI reports carry the same numbers
        McResult *rows = NULL;
        int n_rows = 0;
        mc_task_results(&rows, &n_rows, &t, sc, NULL, 0);
        assert_int_equal(n_rows, 1);
        assert_num("row acc", rows[0].acc.value, json_object_get(agg, "acc"));
        free(rows);
        free(sc);
        free(acc);
        free(accn);
        task_release(&t);
        n_tasks++;
    }
    assert_int_equal(n_tasks, 7);
    json_decref(j);
}

// Per-subject 0/1 strings -> subjects -> 4 groups and mmlu, against consolidate_group_results.
static void check_groups(json_t *mm, const char *tag) {
    Task t;
    TaskOpts o = task_opts_default();
    o.limit = 1; // subjects and their groups only
    assert_int_equal(task_load(&t, TASK_MMLU, DATA, &o), STATUS_OK);
    assert_int_equal(t.n_subjects, 57);
    McMetric subj[64];
    json_t *sj = json_object_get(mm, "subjects");
    for (int i = 0; i < t.n_subjects; i++) {
        json_t *e = json_object_get(sj, t.subjects[i]);
        assert_non_null(e);
        const char *bits = json_string_value(json_object_get(e, "acc"));
        if (strcmp(tag, "all_defined") == 0 && strcmp(t.subjects[i], "anatomy") == 0)
            bits = json_string_value(json_object_get(mm, "anatomy_all_defined"));
        int64_t n = (int64_t)strlen(bits);
        double *v = xmalloc((size_t)n * sizeof(double));
        for (int64_t k = 0; k < n; k++)
            v[k] = bits[k] == '1';
        subj[i] = mc_metric_from_values(v, n);
        free(v);
    }
    McMetric groups[MMLU_GROUP_COUNT], all;
    mc_mmlu_aggregate(groups, &all, subj, t.subject_group, t.n_subjects);
    json_t *gj = json_object_get(json_object_get(mm, "groups"), tag);
    char key[64], what[96];
    for (int g = 0; g < MMLU_GROUP_COUNT; g++) {
        snprintf(key, sizeof(key), "mmlu_%s", mmlu_group_name((MmluGroup)g));
        json_t *e = json_object_get(gj, key);
        snprintf(what, sizeof(what), "%s %s acc", tag, key);
        assert_num(what, groups[g].value, json_object_get(e, "acc"));
        snprintf(what, sizeof(what), "%s %s stderr", tag, key);
        assert_num(what, groups[g].stderr_, json_object_get(e, "acc_stderr"));
        assert_int_equal(groups[g].size, json_integer_value(json_object_get(e, "samples")));
    }
    json_t *e = json_object_get(gj, "mmlu");
    snprintf(what, sizeof(what), "%s mmlu", tag);
    assert_num(what, all.value, json_object_get(e, "acc"));
    assert_num(what, all.stderr_, json_object_get(e, "acc_stderr"));
    assert_int_equal(all.size, json_integer_value(json_object_get(e, "samples")));
    task_release(&t);
}

static void test_mmlu_groups_vs_lm_eval(void **s) {
    (void)s;
    json_t *j = load_json("eval/mc_scores.json");
    json_t *mm = json_object_get(j, "mmlu");
    check_groups(mm, "all_defined");
    check_groups(mm, "with_na"); // a one-document subject makes its group's stderr N/A
    json_decref(j);
}

static void check_pairs(const char *key, const char *tok_dir) {
    json_t *j = load_json("eval/encode_pairs.json");
    json_t *cases = json_object_get(json_object_get(j, key), "cases");
    assert_true(json_array_size(cases) > 100);
    Tokenizer *tok;
    if (tokenizer_load_hf(&tok, tok_dir) != STATUS_OK) fail_msg("%s", status_msg());
    size_t i;
    json_t *c;
    int bad = 0;
    json_array_foreach(cases, i, c) {
        const char *ctx = json_string_value(json_object_get(c, "context"));
        const char *cont = json_string_value(json_object_get(c, "continuation"));
        EvalPair p;
        if (eval_encode_pair(&p, tok, ctx, cont, false) != STATUS_OK) fail_msg("%s", status_msg());
        json_t *rc = json_object_get(c, "ctx"), *rk = json_object_get(c, "cont");
        bool ok = (size_t)p.n_ctx == json_array_size(rc) && (size_t)p.n_cont == json_array_size(rk);
        for (int k = 0; ok && k < p.n_ctx; k++)
            ok = p.ctx[k] == json_integer_value(json_array_get(rc, (size_t)k));
        for (int k = 0; ok && k < p.n_cont; k++)
            ok = p.cont[k] == json_integer_value(json_array_get(rk, (size_t)k));
        if (!ok && bad++ < 5)
            print_error("%s case %zu: [%s] + [%s]: ours %d+%d tokens, lm-eval %zu+%zu\n", key, i,
                        ctx, cont, p.n_ctx, p.n_cont, json_array_size(rc), json_array_size(rk));
        eval_pair_release(&p);
    }
    tokenizer_free(tok);
    json_decref(j);
    if (bad)
        fail_msg("%s: %d of %zu requests split differently from lm-eval", key, bad,
                 json_array_size(cases));
}

static void test_encode_pair_smollm2(void **s) {
    (void)s;
    check_pairs("smollm2", "tests/fixtures/tokenizers/smollm2");
}

static void test_encode_pair_llama2(void **s) {
    (void)s;
    check_pairs("llama2", "tests/fixtures/tokenizers/llama2/tokenizer.json");
}

// add_bos: BOS leads both encodings, so the continuation is unchanged.
static void test_encode_pair_bos(void **s) {
    (void)s;
    Tokenizer *tok;
    assert_int_equal(tokenizer_load_hf(&tok, "tests/fixtures/tokenizers/smollm2"), STATUS_OK);
    EvalPair a, b;
    assert_int_equal(eval_encode_pair(&a, tok, "Question: why?\nAnswer: ", "Because", false),
                     STATUS_OK);
    assert_int_equal(eval_encode_pair(&b, tok, "Question: why?\nAnswer: ", "Because", true),
                     STATUS_OK);
    assert_int_equal(b.n_ctx, a.n_ctx + 1);
    assert_int_equal(b.ctx[0], tokenizer_bos_id(tok));
    assert_int_equal(b.n_cont, a.n_cont);
    assert_memory_equal(a.cont, b.cont, (size_t)a.n_cont * sizeof(int32_t));
    eval_pair_release(&a);
    eval_pair_release(&b);
    tokenizer_free(tok);
}

static void test_results_writers(void **s) {
    (void)s;
    Task t;
    TaskOpts o = task_opts_default();
    o.limit = 3;
    assert_int_equal(task_load(&t, TASK_MMLU, DATA, &o), STATUS_OK);
    McDocScore *sc = xcalloc((size_t)t.n_docs, sizeof(McDocScore));
    for (int i = 0; i < t.n_docs; i++)
        sc[i].acc = sc[i].acc_norm = (i % 3) == 0;
    McResult *rows = NULL;
    int n = 0;
    mc_task_results(&rows, &n, &t, sc, NULL, 0);
    assert_int_equal(n, 1 + 4 + 57);
    assert_string_equal(rows[0].name, "mmlu");
    assert_true(fabs(rows[0].acc.value - 57.0 / 171.0) < 1e-15); // micro-average
    Task a;
    o.limit = 10;
    assert_int_equal(task_load(&a, TASK_ARC_EASY, DATA, &o), STATUS_OK);
    mc_task_results(&rows, &n, &a, sc, NULL, 2376);
    McRunConfig cfg = {.model = "m.gguf", .tasks = "mmlu,arc_easy", .limit = 3, .batch_size = 8};
    const char *path = "/tmp/ef_test_mc_results.json";
    assert_int_equal(mc_results_write_json(path, rows, n, &cfg), STATUS_OK);
    json_error_t err;
    json_t *j = json_load_file(path, 0, &err);
    assert_non_null(j);
    json_t *r = json_object_get(json_object_get(j, "results"), "mmlu_anatomy");
    assert_string_equal(json_string_value(json_object_get(r, "alias")), "  - anatomy");
    assert_non_null(json_object_get(json_object_get(j, "groups"), "mmlu_stem"));
    json_t *ns = json_object_get(json_object_get(j, "n-samples"), "arc_easy");
    assert_int_equal(json_integer_value(json_object_get(ns, "original")), 2376);
    assert_int_equal(json_integer_value(json_object_get(ns, "effective")), 10);
    assert_non_null(json_object_get(json_object_get(json_object_get(j, "results"), "arc_easy"),
                                    "acc_norm_stderr,none"));
    assert_int_equal(json_array_size(json_object_get(json_object_get(j, "group_subtasks"), "mmlu")),
                     4);
    assert_false(json_is_true(json_object_get(json_object_get(j, "config"), "add_bos_token")));
    json_decref(j);
    unlink(path);
    char *md = mc_results_markdown(rows, n, &cfg);
    assert_non_null(strstr(md, "|arc_easy|1|none|"));
    assert_non_null(strstr(md, "|acc_norm|"));
    assert_non_null(strstr(md, "| - stem|2|none|"));
    free(md);
    free(rows);
    free(sc);
    task_release(&a);
    task_release(&t);
}

// eval_task's shared-KV batched scoring == the plain computation (each request on its own:
// one forward over ctx + cont[:-1], every row's logits), the _ref twin of eval.c.
// Over-long requests lose context tokens on the left, lm-eval's
// (ctx + cont)[-(window + 1):][:-1] (the MMLU prompts pass stories260K's 512 tokens), with
// eval.h's documented difference: every choice of a question is cut as its longest
// continuation `max_cont` needs, so that they still share one context.
static double request_ll_ref(InferState *st, int V, int window, int max_cont, const EvalPair *p,
                             bool *greedy) {
    int n = p->n_ctx + p->n_cont - 1;
    int need = p->n_ctx + max_cont - 1;
    int32_t *tok = xmalloc((size_t)n * sizeof(int32_t));
    memcpy(tok, p->ctx, (size_t)p->n_ctx * sizeof(int32_t));
    memcpy(tok + p->n_ctx, p->cont, (size_t)(p->n_cont - 1) * sizeof(int32_t));
    int drop = need > window ? need - window : 0;
    assert_true(drop < p->n_ctx);
    float *logits = xmalloc((size_t)n * (size_t)V * sizeof(float));
    infer_seq_truncate(st, 0, 0);
    InferBatch b = {.tokens = tok + drop, .n = n - drop};
    assert_int_equal(infer_forward(st, &b, logits), STATUS_OK);
    double ll = 0;
    *greedy = true;
    for (int k = 0; k < p->n_cont; k++) {
        const float *row = logits + (size_t)(p->n_ctx - 1 - drop + k) * (size_t)V;
        double mx = row[0], sum = 0;
        int am = 0;
        for (int v = 1; v < V; v++)
            if (row[v] > row[am]) am = v;
        mx = row[am];
        for (int v = 0; v < V; v++)
            sum += exp((double)row[v] - mx);
        ll += (double)row[p->cont[k]] - mx - log(sum);
        if (am != p->cont[k]) *greedy = false;
    }
    free(tok);
    free(logits);
    return ll;
}

static void test_eval_vs_unshared_ref(void **s) {
    (void)s;
    Model m;
    assert_int_equal(model_load(&m, "models/stories260K/stories260K.bin", NULL), STATUS_OK);
    assert_non_null(m.tok);
    InferOptions io = infer_options_default();
    InferState st;
    assert_int_equal(infer_init(&st, &m, &io), STATUS_OK);
    // MMLU: its batches share the subject line, which gets a forward of its own
    static const TaskKind kinds[] = {TASK_ARC_EASY, TASK_HELLASWAG, TASK_WINOGRANDE,
                                     TASK_COMMONSENSE_QA, TASK_MMLU};
    static const int batches[] = {1, 3, 32}; // 3: a partial last batch; 32: one batch
    int checked = 0;
    double worst = 0;
    for (size_t k = 0; k < ARRAY_LEN(kinds); k++) {
        Task t;
        TaskOpts o = task_opts_default();
        o.limit = kinds[k] == TASK_MMLU ? 1 : 5; // MMLU: per subject
        assert_int_equal(task_load(&t, kinds[k], DATA, &o), STATUS_OK);
        // the reference once per request
        int64_t n_req = 0, q = 0, ctx_tokens = 0;
        for (int d = 0; d < t.n_docs; d++)
            n_req += t.docs[d].n_choices;
        double *ref = xcalloc((size_t)n_req, sizeof(double));
        bool *ref_gr = xcalloc((size_t)n_req, sizeof(bool));
        EvalPair *pr = xcalloc(8, sizeof(EvalPair));
        for (int d = 0; d < t.n_docs; d++) {
            int nc = t.docs[d].n_choices, max_cont = 1;
            assert_true(nc <= 8);
            for (int c = 0; c < nc; c++) {
                assert_int_equal(eval_encode_pair(&pr[c], m.tok, t.docs[d].contexts[c],
                                                  t.docs[d].continuations[c], false),
                                 STATUS_OK);
                max_cont = MAX(max_cont, pr[c].n_cont);
            }
            ctx_tokens += pr[0].n_ctx;
            for (int c = 0; c < nc; c++, q++) {
                int cut = t.kind == TASK_WINOGRANDE ? pr[c].n_cont : max_cont; // independent
                ref[q] = request_ll_ref(&st, m.cfg.vocab_size, m.cfg.max_seq_len, cut, &pr[c],
                                        &ref_gr[q]);
                eval_pair_release(&pr[c]);
            }
        }
        free(pr);
        for (size_t b = 0; b < ARRAY_LEN(batches); b++) {
            double *lls = xcalloc((size_t)n_req, sizeof(double));
            bool *gr = xcalloc((size_t)n_req, sizeof(bool));
            McDocScore *sc = xcalloc((size_t)t.n_docs, sizeof(McDocScore));
            EvalOptions eo = eval_options_default();
            eo.batch = batches[b];
            EvalStats es;
            if (eval_task(&m, &t, &eo, sc, lls, gr, NULL, &es) != STATUS_OK)
                fail_msg("%s", status_msg());
            if (t.kind == TASK_MMLU && eo.batch > 1) // the shared prefixes ran once per batch
                assert_true(es.tokens < ctx_tokens);
            assert_true(es.forwards > 0 && es.logit_rows >= t.n_docs);
            for (q = 0; q < n_req; q++) {
                worst = fmax(worst, fabs(lls[q] - ref[q]));
                // float32 logits from differently batched forwards: 1e-4 absolute on LLs of
                // tens of nats (measured worst is printed on failure)
                if (!(fabs(lls[q] - ref[q]) <= 1e-4 * fmax(1.0, fabs(ref[q]))))
                    fail_msg("%s request %lld (batch %d): %.9g vs unshared %.9g", task_name(t.kind),
                             (long long)q, eo.batch, lls[q], ref[q]);
                assert_int_equal(gr[q], ref_gr[q]);
                checked++;
            }
            free(lls);
            free(gr);
            free(sc);
        }
        free(ref);
        free(ref_gr);
        task_release(&t);
    }
    assert_true(checked > 150);
    print_message("eval_task vs unshared reference: %d requests, worst |dLL| %.3g\n", checked,
                  worst);
    infer_release(&st);
    model_release(&m);
}

// The CLI end to end on the bundled stories260K model (its scores mean nothing; the
// plumbing, the outputs and the error paths do).
#define STORIES "models/stories260K/stories260K.bin"
static void test_cli_eval(void **s) {
    (void)s;
    char *out;
    const char *json = "/tmp/ef_test_mc_cli.json", *samples = "/tmp/ef_test_mc_cli.jsonl";
    unlink(json);
    int rc = run_cli("eval " STORIES " --tasks arc_easy,winogrande,mmlu --limit 2 -t 1 --out "
                     "/tmp/ef_test_mc_cli.json --log-samples /tmp/ef_test_mc_cli.jsonl",
                     &out);
    if (rc != 0) fail_msg("eval failed (%d): %s", rc, out);
    assert_non_null(strstr(out, "|arc_easy|1|none|"));
    assert_non_null(strstr(out, "|winogrande|1|none|"));
    assert_non_null(strstr(out, "|mmlu|2|none|"));
    free(out);
    json_t *j = json_load_file(json, 0, NULL);
    assert_non_null(j);
    json_t *ns = json_object_get(json_object_get(j, "n-samples"), "arc_easy");
    assert_int_equal(json_integer_value(json_object_get(ns, "effective")), 2);
    assert_int_equal(json_integer_value(json_object_get(ns, "original")), 2376);
    json_t *mm = json_object_get(json_object_get(j, "results"), "mmlu");
    assert_true(json_is_real(json_object_get(mm, "acc,none")));
    json_decref(j);
    char *lines;
    size_t n;
    assert_int_equal(file_read_all(samples, &lines, &n), STATUS_OK);
    int count = 0;
    for (size_t i = 0; i < n; i++)
        count += lines[i] == '\n';
    assert_int_equal(count, 2 + 2 + 57 * 2); // one line per document
    free(lines);
    unlink(json);
    unlink(samples);
    // bad input: unknown task (usage, 2), missing data (1, nothing written), few-shot
    assert_int_equal(run_cli("eval " STORIES " --tasks arc_easy,nope", &out), 2);
    assert_non_null(strstr(out, "unknown task 'nope'"));
    free(out);
    assert_int_equal(run_cli("eval " STORIES " --tasks piqa --data-dir /nonexistent --out "
                             "/tmp/ef_test_mc_cli.json",
                             &out),
                     1);
    assert_non_null(strstr(out, "error:"));
    assert_false(path_is_file(json));
    free(out);
    assert_int_equal(run_cli("eval " STORIES " --tasks piqa --num-fewshot 2", &out), 1);
    assert_non_null(strstr(out, "few-shot"));
    free(out);
}

// --cache: a run stopped after 2 documents per task and started again with --limit 4
// computes only the rest and writes the per-document log-likelihoods of a run without the
// cache, up to float32 rounding (a batch of other documents shares another context prefix
// and feeds the GEMMs other row counts: the same holds between two --batch sizes); a
// cut-off last line (a kill mid-write) is dropped with a warning; other settings are refused.
static void test_cli_eval_cache(void **s) {
    (void)s;
    const char *cache = "/tmp/ef_test_mc.cache", *s1 = "/tmp/ef_test_mc_s1.jsonl",
               *s2 = "/tmp/ef_test_mc_s2.jsonl";
    unlink(cache);
    char *out;
    int rc = run_cli("eval " STORIES " --tasks arc_easy,winogrande --limit 2 -t 1 --cache "
                     "/tmp/ef_test_mc.cache",
                     &out);
    if (rc != 0) fail_msg("eval failed (%d): %s", rc, out);
    free(out);
    char *text;
    size_t n;
    assert_int_equal(file_read_all(cache, &text, &n), STATUS_OK);
    assert_true(strncmp(text, "edgeforge-eval-cache 1 bos=0 window=", 36) == 0);
    int lines = 0;
    for (size_t i = 0; i < n; i++)
        lines += text[i] == '\n';
    assert_int_equal(lines, 1 + 2 * 4 + 2 * 2); // header, arc_easy 2 x 4 choices, winogrande
    // the kill: half of the last line
    assert_int_equal(truncate(cache, (off_t)(n - 10)), 0);
    free(text);
    rc = run_cli("eval " STORIES " --tasks arc_easy,winogrande --limit 4 -t 1 --cache "
                 "/tmp/ef_test_mc.cache --log-samples /tmp/ef_test_mc_s1.jsonl",
                 &out);
    if (rc != 0) fail_msg("eval failed (%d): %s", rc, out);
    assert_non_null(strstr(out, "dropping a last line cut off"));
    assert_non_null(strstr(out, "2 documents from the cache")); // arc_easy
    assert_non_null(strstr(out, "1 documents from the cache")); // winogrande lost its last
    free(out);
    assert_int_equal(run_cli("eval " STORIES " --tasks arc_easy,winogrande --limit 4 -t 1 "
                             "--log-samples /tmp/ef_test_mc_s2.jsonl",
                             &out),
                     0);
    free(out);
    char *a, *b;
    size_t na, nb;
    assert_int_equal(file_read_all(s1, &a, &na), STATUS_OK);
    assert_int_equal(file_read_all(s2, &b, &nb), STATUS_OK);
    char *sa = NULL, *sb = NULL;
    int docs = 0;
    double worst = 0;
    for (char *la = strtok_r(a, "\n", &sa), *lb = strtok_r(b, "\n", &sb); la || lb;
         la = strtok_r(NULL, "\n", &sa), lb = strtok_r(NULL, "\n", &sb), docs++) {
        assert_true(la && lb);
        json_t *ja = json_loads(la, 0, NULL), *jb = json_loads(lb, 0, NULL);
        assert_true(ja && jb);
        json_t *xa = json_object_get(ja, "lls"), *xb = json_object_get(jb, "lls");
        assert_int_equal(json_array_size(xa), json_array_size(xb));
        assert_true(json_array_size(xa) >= 2);
        for (size_t k = 0; k < json_array_size(xa); k++) {
            double va = json_number_value(json_array_get(xa, k));
            double vb = json_number_value(json_array_get(xb, k));
            worst = fmax(worst, fabs(va - vb) / fmax(1.0, fabs(vb)));
        }
        assert_true(json_equal(json_object_get(ja, "acc"), json_object_get(jb, "acc")));
        json_decref(ja);
        json_decref(jb);
    }
    assert_int_equal(docs, 8);
    print_message("resumed vs uninterrupted run: worst relative |dLL| %.3g\n", worst);
    assert_true(worst < 1e-5);
    free(a);
    free(b);
    // the same file with BOS: refused, nothing run
    assert_int_equal(run_cli("eval " STORIES " --tasks arc_easy --limit 4 -t 1 --add-bos "
                             "--cache /tmp/ef_test_mc.cache",
                             &out),
                     1);
    assert_non_null(strstr(out, "written with other settings"));
    free(out);
    unlink(cache);
    unlink(s1);
    unlink(s2);
}

// The cache file's parser and table: entries round-trip exactly (hex floats), a cut-off last
// line is not an entry, malformed lines and other settings are errors naming the file/line.
static void test_eval_cache_parse(void **s) {
    (void)s;
    const char *id = "m.gguf (10 bytes)";
    const char *ok = "edgeforge-eval-cache 1 bos=0 window=64 model=m.gguf (10 bytes)\n"
                     "00000000000000ab -0x1.8p+1 1\n"
                     "00000000000000cd -inf 0\n"
                     "00000000000000ab -0x1p-1074 0\n" // a repeated key: the last line wins
                     "00000000000000ef -0x1.0";        // cut off by a kill
    EvalCache c = {0};
    size_t whole;
    assert_int_equal(eval_cache_parse(&c, ok, strlen(ok), "f", id, false, 64, &whole), STATUS_OK);
    assert_int_equal(whole, strlen(ok) - strlen("00000000000000ef -0x1.0"));
    assert_int_equal(c.n, 2);
    double ll;
    bool g;
    assert_true(eval_cache_get(&c, 0xcd, &ll, &g));
    assert_true(isinf(ll) && ll < 0 && !g);
    assert_true(eval_cache_get(&c, 0xab, &ll, &g));
    assert_true(ll == -0x1p-1074 && !g);
    assert_false(eval_cache_get(&c, 0xef, &ll, &g));
    for (uint64_t k = 1; k <= 5000; k++) // growth and probing
        assert_int_equal(eval_cache_put(&c, k * 0x9E3779B97F4A7C15ULL, -(double)k, k % 2),
                         STATUS_OK);
    for (uint64_t k = 1; k <= 5000; k++) {
        assert_true(eval_cache_get(&c, k * 0x9E3779B97F4A7C15ULL, &ll, &g));
        assert_true(ll == -(double)k && g == (k % 2 == 1));
    }
    eval_cache_close(&c);
    const struct {
        const char *text, *msg;
    } bad[] = {
        {"hello\n", "'f' is not an edgeforge eval cache"},
        {"edgeforge-eval-cache 1 bos=1 window=64 model=m.gguf (10 bytes)\n", "other settings"},
        {"edgeforge-eval-cache 1 bos=0 window=32 model=m.gguf (10 bytes)\n", "other settings"},
        {"edgeforge-eval-cache 1 bos=0 window=64 model=n.gguf (10 bytes)\n", "other settings"},
        {"edgeforge-eval-cache 1 bos=0 window=64 model=m.gguf (10 bytes)\n"
         "00000000000000ab -0x1.8p+1 1\n00000000000000ab 0x1p+1 1\n",
         "'f' line 3"}, // a positive log-likelihood
        {"edgeforge-eval-cache 1 bos=0 window=64 model=m.gguf (10 bytes)\n"
         "00000000000000AB -1 1\n",
         "'f' line 2"}, // upper-case hex
        {"edgeforge-eval-cache 1 bos=0 window=64 model=m.gguf (10 bytes)\n"
         "00000000000000ab nan 1\n",
         "'f' line 2"},
        {"edgeforge-eval-cache 1 bos=0 window=64 model=m.gguf (10 bytes)\n"
         "00000000000000ab -1 2\n",
         "'f' line 2"},
        {"edgeforge-eval-cache 1 bos=0 window=64 model=m.gguf (10 bytes)\n"
         "0000000000000000 -1 1\n",
         "'f' line 2"}, // key 0 is never written
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        memset(&c, 0, sizeof c);
        Status st =
            eval_cache_parse(&c, bad[i].text, strlen(bad[i].text), "f", id, false, 64, NULL);
        if (st != STATUS_ERR_FORMAT || !strstr(status_msg(), bad[i].msg))
            fail_msg("case %zu: %d %s", i, (int)st, status_msg());
        eval_cache_close(&c);
    }
    // a file in use by another run (here: another open of it) is refused
    const char *path = "/tmp/ef_test_mc_lock.cache";
    unlink(path);
    EvalCache c1, c2;
    assert_int_equal(eval_cache_open(&c1, path, id, false, 64), STATUS_OK);
    assert_int_equal(eval_cache_open(&c2, path, id, false, 64), STATUS_ERR_IO);
    assert_non_null(strstr(status_msg(), "is in use by another run"));
    eval_cache_close(&c1);
    assert_int_equal(eval_cache_open(&c2, path, id, false, 64), STATUS_OK); // released
    eval_cache_close(&c2);
    unlink(path);
    // keys: the same tokens give the same key, a moved boundary another
    int32_t a[4] = {5, 6, 7, 8};
    assert_true(eval_cache_key(a, 2, a + 2, 2) == eval_cache_key(a, 2, a + 2, 2));
    assert_true(eval_cache_key(a, 2, a + 2, 2) != eval_cache_key(a, 3, a + 3, 1));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_argmax_numpy),
        cmocka_unit_test(test_scores_vs_lm_eval),
        cmocka_unit_test(test_mmlu_groups_vs_lm_eval),
        cmocka_unit_test(test_encode_pair_smollm2),
        cmocka_unit_test(test_encode_pair_llama2),
        cmocka_unit_test(test_encode_pair_bos),
        cmocka_unit_test(test_results_writers),
        cmocka_unit_test(test_eval_vs_unshared_ref),
        cmocka_unit_test(test_cli_eval),
        cmocka_unit_test(test_eval_cache_parse),
        cmocka_unit_test(test_cli_eval_cache),
    };
    return cmocka_run_group_tests_name("mc", tests, NULL, NULL);
}
