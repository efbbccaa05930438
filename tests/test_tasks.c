/*
 * test_tasks.c - the 8 benchmark readers against lm-evaluation-harness 0.4.9.1's own
 * rendering (tests/fixtures/eval/tasks_render.json from tools/gen_eval_fixtures.py):
 * identical context and continuation strings, choice strings and gold index on >= 50
 * documents per task, MMLU on 8 subjects at 0, 1 and 5 shots, HellaSwag's preprocess on
 * the original-format subset; plus sizes, Python string helpers and bad input.
 */
#include "core/fileio.h"
#include "eval/tasks.h"
#include "testutil.h"

#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DATA "data/benchmarks"

static json_t *load_fixture(void) {
    json_error_t err;
    json_t *j = json_load_file(fixture_path("eval/tasks_render.json"), 0, &err);
    if (!j) fail_msg("cannot read tasks_render.json: %s", err.text);
    return json_object_get(j, "tasks") ? j : NULL;
}

// Finds the document of `subject` (NULL: any) at source row `index`.
static const TaskDoc *find_doc(const Task *t, const char *subject, int index) {
    for (int i = 0; i < t->n_docs; i++) {
        const TaskDoc *d = &t->docs[i];
        if (d->index != index) continue;
        if (subject && (d->subject < 0 || strcmp(t->subjects[d->subject], subject) != 0)) continue;
        return d;
    }
    return NULL;
}

// Compares every fixture item of `key` with our rendering; returns the number compared.
static int compare_items(const Task *t, json_t *items, const char *key) {
    size_t i;
    json_t *it;
    int n = 0;
    json_array_foreach(items, i, it) {
        int index = (int)json_integer_value(json_object_get(it, "index"));
        const char *subject = json_string_value(json_object_get(it, "subject"));
        const TaskDoc *d = find_doc(t, subject, index);
        if (!d) fail_msg("%s: no document %s/%d", key, subject ? subject : "", index);
        json_t *req = json_object_get(it, "requests"), *ch = json_object_get(it, "choices");
        assert_int_equal(json_array_size(req), d->n_choices);
        assert_int_equal(json_array_size(ch), d->n_choices);
        for (int c = 0; c < d->n_choices; c++) {
            json_t *r = json_array_get(req, (size_t)c);
            const char *ctx = json_string_value(json_array_get(r, 0));
            const char *cont = json_string_value(json_array_get(r, 1));
            const char *choice = json_string_value(json_array_get(ch, (size_t)c));
            if (strcmp(ctx, d->contexts[c]) != 0)
                fail_msg("%s doc %d choice %d context\n  lm-eval: [%s]\n  ours:    [%s]", key,
                         index, c, ctx, d->contexts[c]);
            if (strcmp(cont, d->continuations[c]) != 0)
                fail_msg("%s doc %d choice %d continuation\n  lm-eval: [%s]\n  ours:    [%s]", key,
                         index, c, cont, d->continuations[c]);
            if (strcmp(choice, d->choices[c]) != 0)
                fail_msg("%s doc %d choice %d: [%s] vs [%s]", key, index, c, choice, d->choices[c]);
        }
        if (d->gold != (int)json_integer_value(json_object_get(it, "gold")))
            fail_msg("%s doc %d: gold %d, lm-eval %d", key, index, d->gold,
                     (int)json_integer_value(json_object_get(it, "gold")));
        n++;
    }
    return n;
}

static const char *g_fixture = NULL; // EF_TASKS_FULL overrides the committed fixture

static void check_task(const char *key, TaskKind kind, const char *data_dir, int fewshot,
                       int expect_docs) {
    json_t *j = g_fixture ? json_load_file(g_fixture, 0, NULL) : load_fixture();
    assert_non_null(j);
    json_t *items = json_object_get(json_object_get(j, "tasks"), key);
    assert_non_null(items);
    Task t;
    TaskOpts o = task_opts_default();
    o.num_fewshot = fewshot;
    if (task_load(&t, kind, data_dir, &o) != STATUS_OK) fail_msg("%s", status_msg());
    if (expect_docs) assert_int_equal(t.n_docs, expect_docs);
    int n = compare_items(&t, items, key);
    assert_true(n >= (fewshot ? 16 : 50));
    task_release(&t);
    json_decref(j);
}

static void test_arc_easy(void **s) {
    (void)s;
    check_task("arc_easy", TASK_ARC_EASY, DATA, 0, 2376);
}
static void test_commonsense_qa(void **s) {
    (void)s;
    check_task("commonsense_qa", TASK_COMMONSENSE_QA, DATA, 0, 1221);
}
static void test_openbookqa(void **s) {
    (void)s;
    check_task("openbookqa", TASK_OPENBOOKQA, DATA, 0, 500);
}
static void test_piqa(void **s) {
    (void)s;
    check_task("piqa", TASK_PIQA, DATA, 0, 1838);
}
static void test_social_iqa(void **s) {
    (void)s;
    check_task("social_iqa", TASK_SOCIAL_IQA, DATA, 0, 1954);
}
static void test_winogrande(void **s) {
    (void)s;
    check_task("winogrande", TASK_WINOGRANDE, DATA, 0, 1267);
}
static void test_mmlu(void **s) {
    (void)s;
    check_task("mmlu", TASK_MMLU, DATA, 0, 14042);
}
static void test_mmlu_fewshot(void **s) {
    (void)s;
    check_task("mmlu_fewshot1", TASK_MMLU, DATA, 1, 14042);
    check_task("mmlu_fewshot5", TASK_MMLU, DATA, 5, 14042);
}

static void test_hellaswag_approx(void **s) {
    (void)s;
    check_task("hellaswag_approx", TASK_HELLASWAG, DATA, 0, 10042);
    Task t;
    TaskOpts o = task_opts_default();
    assert_int_equal(task_load(&t, TASK_HELLASWAG, DATA, &o), STATUS_OK);
    assert_true(t.approximate);
    task_release(&t);
}

// Original-format records through our preprocess == lm-eval's process_docs: a temporary data
// dir whose hellaswag/hellaswag_val.jsonl is the 1000-record original subset.
static void hellaswag_original(void);
static void test_hellaswag_preprocess_original(void **s) {
    (void)s;
    hellaswag_original();
}

static void hellaswag_original(void) {
    char dir[] = "/tmp/ef_test_tasks_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char sub[PATH_MAX], link_path[PATH_MAX], target[PATH_MAX];
    snprintf(sub, sizeof(sub), "%s/hellaswag", dir);
    assert_int_equal(dir_create(sub), STATUS_OK);
    assert_non_null(realpath(DATA "/hellaswag/val_subset1000_original_rubrikscube.jsonl", target));
    snprintf(link_path, sizeof(link_path), "%s/hellaswag_val.jsonl", sub);
    assert_int_equal(symlink(target, link_path), 0);
    Task t;
    TaskOpts o = task_opts_default();
    assert_int_equal(task_load(&t, TASK_HELLASWAG, dir, &o), STATUS_OK);
    assert_false(t.approximate);
    assert_int_equal(t.n_docs, 1000);
    task_release(&t);
    check_task("hellaswag", TASK_HELLASWAG, dir, 0, 1000);
    unlink(link_path);
    rmdir(sub);
    rmdir(dir);
}

static void test_python_strings(void **s) {
    (void)s;
    char *a = hellaswag_preprocess("  [header] How to x [title] Do y. [step] Then  z.  ");
    // strip first, then " [title]" -> ". ", tags removed, "  " -> " " (Python gives the same,
    // leading space included: the space before "How" was inside the stripped text)
    assert_string_equal(a, " How to x. Do y. Then z.");
    free(a);
    a = hellaswag_preprocess("[substeps] Use plain water.");
    assert_string_equal(a, " Use plain water."); // lm-eval's quirk: the leading space stays
    free(a);
    a = hellaswag_preprocess("a   b [unclosed\n] c");
    assert_string_equal(a, "a  b [unclosed\n] c"); // one replace pass; '.' stops at "\n"
    free(a);
    a = py_capitalize("hELLO wORLD \xc3\xa9T\xc3\x89"); // "hELLO wORLD éTÉ"
    assert_string_equal(a, "Hello world \xc3\xa9t\xc3\xa9");
    free(a);
    a = py_capitalize("\xc3\xa9"
                      "cole"); // "école" -> "École"
    assert_string_equal(a, "\xc3\x89"
                           "cole");
    free(a);
    a = py_strip("\xc2\xa0\t x y \xe3\x80\x80\n"); // NBSP, ideographic space
    assert_string_equal(a, "x y");
    free(a);
    assert_int_equal(py_len("caf\xc3\xa9"), 4);
    assert_int_equal(py_len("\xf0\x9f\x98\x80!"), 2);
    assert_int_equal(py_len(""), 0);
}

static void test_names_and_limits(void **s) {
    (void)s;
    assert_int_equal(task_kind_parse("mmlu"), TASK_MMLU);
    assert_int_equal(task_kind_parse("hellaswag_xx"), -1);
    assert_true(task_has_acc_norm(TASK_PIQA));
    assert_false(task_has_acc_norm(TASK_WINOGRANDE));
    Task t;
    TaskOpts o = task_opts_default();
    o.limit = 7;
    assert_int_equal(task_load(&t, TASK_MMLU, DATA, &o), STATUS_OK);
    assert_int_equal(t.n_docs, 57 * 7); // --limit applies per subject, as in lm-eval
    task_release(&t);
    o.limit = 100000; // larger than the task: the whole task, as lm-eval does
    assert_int_equal(task_load(&t, TASK_OPENBOOKQA, DATA, &o), STATUS_OK);
    assert_int_equal(t.n_docs, 500);
    task_release(&t);
    o.limit = 3;
    assert_int_equal(task_load(&t, TASK_SOCIAL_IQA, DATA, &o), STATUS_OK);
    assert_int_equal(t.n_docs, 3);
    task_release(&t);
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_bad_input(void **s) {
    (void)s;
    Task t;
    TaskOpts o = task_opts_default();
    assert_int_equal(task_load(&t, TASK_ARC_EASY, "/nonexistent", &o), STATUS_ERR_IO);
    assert_non_null(strstr(status_msg(), "arc_easy"));
    o.num_fewshot = 5;
    assert_int_equal(task_load(&t, TASK_PIQA, DATA, &o), STATUS_ERR_UNSUPPORTED);
    o.num_fewshot = 6; // dev has 5 rows per subject
    assert_int_equal(task_load(&t, TASK_MMLU, DATA, &o), STATUS_ERR_ARG);
    o.num_fewshot = 0;
    char dir[] = "/tmp/ef_test_tasks_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char p[PATH_MAX], q[PATH_MAX];
    snprintf(p, sizeof(p), "%s/winogrande", dir);
    assert_int_equal(dir_create(p), STATUS_OK);
    snprintf(q, sizeof(q), "%s/dev.jsonl", p);
    write_file(q, "{\"sentence\": \"no blank here\", \"option1\": \"a\", \"option2\": \"b\", "
                  "\"answer\": \"1\"}\n");
    assert_int_equal(task_load(&t, TASK_WINOGRANDE, dir, &o), STATUS_ERR_FORMAT);
    assert_non_null(strstr(status_msg(), "line 1"));
    assert_null(t.docs);
    write_file(q, "{\"sentence\": \"a _ b\", \"option1\": \"x\", \"option2\": \"y\", \"answer\": "
                  "\"1\"}\n{\"sentence\": \"truncated");
    assert_int_equal(task_load(&t, TASK_WINOGRANDE, dir, &o), STATUS_ERR_FORMAT);
    assert_non_null(strstr(status_msg(), "line 2"));
    unlink(q);
    snprintf(q, sizeof(q), "%s/social_iqa", dir);
    assert_int_equal(dir_create(q), STATUS_OK);
    snprintf(p, sizeof(p), "%s/dev.jsonl", q);
    write_file(p,
               "{\"context\": \"c\", \"question\": \"q\", \"answerA\": \"a\", \"answerB\": \"b\", "
               "\"answerC\": \"c\"}\n");
    char l[PATH_MAX];
    snprintf(l, sizeof(l), "%s/dev-labels.lst", q);
    write_file(l, "4\n");
    assert_int_equal(task_load(&t, TASK_SOCIAL_IQA, dir, &o), STATUS_ERR_FORMAT);
    assert_non_null(strstr(status_msg(), "dev-labels.lst"));
    unlink(p);
    unlink(l);
    rmdir(q);
    snprintf(p, sizeof(p), "%s/winogrande", dir);
    rmdir(p);
    rmdir(dir);
}

// Every document of every task (EF_TASKS_FULL=<file from gen_eval_fixtures.py --full>).
static void test_full_dump(void **s) {
    (void)s;
    const char *full = getenv("EF_TASKS_FULL");
    if (!full) skip();
    g_fixture = full;
    check_task("arc_easy", TASK_ARC_EASY, DATA, 0, 2376);
    check_task("commonsense_qa", TASK_COMMONSENSE_QA, DATA, 0, 1221);
    check_task("openbookqa", TASK_OPENBOOKQA, DATA, 0, 500);
    check_task("piqa", TASK_PIQA, DATA, 0, 1838);
    check_task("social_iqa", TASK_SOCIAL_IQA, DATA, 0, 1954);
    check_task("winogrande", TASK_WINOGRANDE, DATA, 0, 1267);
    check_task("mmlu", TASK_MMLU, DATA, 0, 14042);
    check_task("hellaswag_approx", TASK_HELLASWAG, DATA, 0, 10042);
    hellaswag_original();
    g_fixture = NULL;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_arc_easy),
        cmocka_unit_test(test_commonsense_qa),
        cmocka_unit_test(test_openbookqa),
        cmocka_unit_test(test_piqa),
        cmocka_unit_test(test_social_iqa),
        cmocka_unit_test(test_winogrande),
        cmocka_unit_test(test_mmlu),
        cmocka_unit_test(test_mmlu_fewshot),
        cmocka_unit_test(test_hellaswag_approx),
        cmocka_unit_test(test_hellaswag_preprocess_original),
        cmocka_unit_test(test_python_strings),
        cmocka_unit_test(test_names_and_limits),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_full_dump),
    };
    return cmocka_run_group_tests_name("tasks", tests, NULL, NULL);
}
