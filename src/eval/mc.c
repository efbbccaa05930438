/*
 * mc.c - lm-eval v0.4 multiple-choice metrics, group aggregation and the results writers.
 * Checked against lm-eval 0.4.9.1's own process_results / mean_stderr /
 * consolidate_group_results on synthetic log-likelihoods (tests/fixtures/eval/mc_scores.json).
 */
#include "eval/mc.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "core/fileio.h"

/* ---- per document --------------------------------------------------------------- */

int mc_argmax(const double *x, int n) {
    CHECK(n >= 1);
    int best = 0;
    if (isnan(x[0])) return 0;
    for (int i = 1; i < n; i++) {
        if (isnan(x[i])) return i;    // numpy: NaN propagates as the maximum, first one wins
        if (x[i] > x[best]) best = i; // strict: ties keep the first maximum
    }
    return best;
}

void mc_score_doc_len(McDocScore *out, const double *lls, const bool *is_greedy,
                      const double *choice_len, int n, int gold) {
    CHECK(n >= 1 && n <= 64);
    double norm[64];
    for (int i = 0; i < n; i++)
        norm[i] = lls[i] / choice_len[i]; // lls / completion_len
    out->pred = mc_argmax(lls, n);
    out->pred_norm = mc_argmax(norm, n);
    bool ok = gold >= 0 && gold < n; // lm-eval maps an out-of-range gold to -100
    out->acc = ok && out->pred == gold ? 1.0 : 0.0;
    out->acc_norm = ok && out->pred_norm == gold ? 1.0 : 0.0;
    out->exact_match = ok && is_greedy && is_greedy[gold] ? 1.0 : 0.0;
}

void mc_score_doc(McDocScore *out, const double *lls, const bool *is_greedy,
                  const char *const *choices, int n, int gold) {
    CHECK(n >= 1 && n <= 64);
    double len[64];
    for (int i = 0; i < n; i++)
        len[i] = (double)py_len(choices[i]); // float(len(choice))
    mc_score_doc_len(out, lls, is_greedy, len, n, gold);
}

/* ---- aggregation -------------------------------------------------------------------- */

double mc_mean(const double *x, int64_t n) {
    if (n <= 0) return NAN;
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += x[i]; // Python sum(): left to right
    return s / (double)n;
}

double mc_mean_stderr(const double *x, int64_t n) {
    if (n < 2) return NAN; // lm-eval: "N/A" when len(items) <= 1
    double mu = mc_mean(x, n), ss = 0;
    for (int64_t i = 0; i < n; i++)
        ss += (x[i] - mu) * (x[i] - mu);
    // sample_stddev / sqrt(n), in lm-eval's order of operations
    return sqrt(ss / (double)(n - 1)) / sqrt((double)n);
}

McMetric mc_metric_from_values(const double *x, int64_t n) {
    McMetric m = {mc_mean(x, n), mc_mean_stderr(x, n), n};
    return m;
}

McMetric mc_group_aggregate(const McMetric *leaves, int n) {
    McMetric g = {NAN, NAN, 0};
    if (n <= 0) return g;
    double num = 0, den = 0, pooled = 0;
    bool na = false;
    for (int i = 0; i < n; i++) {
        double sz = (double)leaves[i].size;
        num += leaves[i].value * sz; // aggregate_subtask_metrics
        den += sz;
        g.size += leaves[i].size;
        if (isnan(leaves[i].stderr_))
            na = true;
        else
            pooled += (sz - 1) * leaves[i].stderr_ * leaves[i].stderr_ * sz;
    }
    g.value = num / den;
    // pooled_sample_stderr: sqrt(sum (n_i-1) se_i^2 n_i / (N - k) / N)
    if (!na && den > n) g.stderr_ = sqrt(pooled / (den - n) / den);
    return g;
}

void mc_mmlu_aggregate(McMetric groups[MMLU_GROUP_COUNT], McMetric *all, const McMetric *subj,
                       const MmluGroup *group_of, int n_subj) {
    McMetric *tmp = xmalloc((size_t)(n_subj > 0 ? n_subj : 1) * sizeof(McMetric));
    for (int g = 0; g < MMLU_GROUP_COUNT; g++) {
        int k = 0;
        for (int i = 0; i < n_subj; i++)
            if (group_of[i] == (MmluGroup)g && subj[i].size > 0) tmp[k++] = subj[i];
        groups[g] = mc_group_aggregate(tmp, k);
    }
    // "mmlu" aggregates the leaves of all its groups (the task list is flattened), in the
    // order lm-eval visits them: stem, other, social_sciences, humanities (_mmlu.yaml)
    static const MmluGroup order[MMLU_GROUP_COUNT] = {
        MMLU_GROUP_STEM, MMLU_GROUP_OTHER, MMLU_GROUP_SOCIAL_SCIENCES, MMLU_GROUP_HUMANITIES};
    int k = 0;
    for (int o = 0; o < MMLU_GROUP_COUNT; o++)
        for (int i = 0; i < n_subj; i++)
            if (group_of[i] == order[o] && subj[i].size > 0) tmp[k++] = subj[i];
    *all = mc_group_aggregate(tmp, k);
    free(tmp);
}

/* ---- result rows ---------------------------------------------------------------------- */

static McResult *push_row(McResult **rows, int *n) {
    *rows = xrealloc(*rows, (size_t)(*n + 1) * sizeof(McResult));
    McResult *r = &(*rows)[(*n)++];
    memset(r, 0, sizeof(*r));
    r->acc_norm.value = r->acc_norm.stderr_ = NAN;
    return r;
}

// Metric over docs [lo, hi) that satisfy subject == s (s < 0: all).
static void metric_over(McMetric *acc, McMetric *acc_norm, const Task *t, const McDocScore *sc,
                        int subject) {
    double *a = xmalloc((size_t)(t->n_docs > 0 ? t->n_docs : 1) * sizeof(double));
    double *b = xmalloc((size_t)(t->n_docs > 0 ? t->n_docs : 1) * sizeof(double));
    int64_t k = 0;
    for (int i = 0; i < t->n_docs; i++) {
        if (subject >= 0 && t->docs[i].subject != subject) continue;
        a[k] = sc[i].acc;
        b[k++] = sc[i].acc_norm;
    }
    *acc = mc_metric_from_values(a, k);
    *acc_norm = mc_metric_from_values(b, k);
    free(a);
    free(b);
}

void mc_task_results(McResult **rows, int *n_rows, const Task *t, const McDocScore *scores,
                     const int64_t *n_original_per_subject, int64_t n_original) {
    const char *name = task_name(t->kind);
    if (t->kind != TASK_MMLU) {
        McResult *r = push_row(rows, n_rows);
        snprintf(r->name, sizeof(r->name), "%s", name);
        snprintf(r->alias, sizeof(r->alias), "%s", name);
        r->kind = MC_ROW_TASK;
        r->has_acc_norm = task_has_acc_norm(t->kind);
        McMetric an;
        metric_over(&r->acc, &an, t, scores, -1);
        if (r->has_acc_norm) r->acc_norm = an;
        r->n_effective = t->n_docs;
        r->n_original = n_original > 0 ? n_original : t->n_docs;
        r->version = task_version(t->kind);
        r->num_fewshot = t->num_fewshot;
        r->approximate = t->approximate;
        return;
    }
    McMetric *subj = xcalloc((size_t)t->n_subjects, sizeof(McMetric));
    for (int s = 0; s < t->n_subjects; s++) {
        McMetric an;
        metric_over(&subj[s], &an, t, scores, s);
    }
    McMetric groups[MMLU_GROUP_COUNT], all;
    mc_mmlu_aggregate(groups, &all, subj, t->subject_group, t->n_subjects);
    McResult *r = push_row(rows, n_rows);
    snprintf(r->name, sizeof(r->name), "mmlu");
    snprintf(r->alias, sizeof(r->alias), "mmlu");
    r->kind = MC_ROW_GROUP;
    r->acc = all;
    r->n_effective = all.size;
    r->version = 2.0; // _mmlu.yaml metadata version
    r->num_fewshot = t->num_fewshot;
    // lm-eval prints groups in alphabetical order: humanities, other, social_sciences, stem
    static const MmluGroup gorder[MMLU_GROUP_COUNT] = {MMLU_GROUP_HUMANITIES, MMLU_GROUP_OTHER,
                                                       MMLU_GROUP_SOCIAL_SCIENCES, MMLU_GROUP_STEM};
    for (int gi = 0; gi < MMLU_GROUP_COUNT; gi++) {
        MmluGroup g = gorder[gi];
        if (groups[g].size == 0) continue;
        r = push_row(rows, n_rows);
        snprintf(r->name, sizeof(r->name), "mmlu_%s", mmlu_group_name(g));
        snprintf(r->alias, sizeof(r->alias), " - %s", mmlu_group_name(g));
        snprintf(r->parent, sizeof(r->parent), "mmlu");
        r->kind = MC_ROW_GROUP;
        r->acc = groups[g];
        r->n_effective = groups[g].size;
        r->version = 2.0;
        r->num_fewshot = t->num_fewshot;
        for (int s = 0; s < t->n_subjects; s++) {
            if (t->subject_group[s] != g || subj[s].size == 0) continue;
            r = push_row(rows, n_rows);
            snprintf(r->name, sizeof(r->name), "mmlu_%s", t->subjects[s]);
            snprintf(r->alias, sizeof(r->alias), "  - %s", t->subjects[s]);
            snprintf(r->parent, sizeof(r->parent), "mmlu_%s", mmlu_group_name(g));
            r->kind = MC_ROW_SUBTASK;
            r->acc = subj[s];
            r->n_effective = subj[s].size;
            r->n_original = n_original_per_subject ? n_original_per_subject[s] : subj[s].size;
            r->version = 1.0;
            r->num_fewshot = t->num_fewshot;
        }
    }
    free(subj);
}

/* ---- JSON ------------------------------------------------------------------------------- */

static json_t *json_num_or_na(double v) { return isnan(v) ? json_string("N/A") : json_real(v); }

static json_t *json_version(double v) {
    if (isnan(v)) return json_null();
    if (v == floor(v) && v >= 2) return json_integer((json_int_t)v); // group versions: int
    return json_real(v);
}

static json_t *row_results(const McResult *r) {
    json_t *o = json_object();
    json_object_set_new(o, "alias", json_string(r->alias));
    json_object_set_new(o, "acc,none", json_real(r->acc.value));
    json_object_set_new(o, "acc_stderr,none", json_num_or_na(r->acc.stderr_));
    if (r->has_acc_norm) {
        json_object_set_new(o, "acc_norm,none", json_real(r->acc_norm.value));
        json_object_set_new(o, "acc_norm_stderr,none", json_num_or_na(r->acc_norm.stderr_));
    }
    return o;
}

// The task configuration as lm-eval records it (the fields that define the scores).
static json_t *row_config(const McResult *r) {
    json_t *c = json_object();
    json_object_set_new(c, "task", json_string(r->name));
    json_object_set_new(c, "output_type", json_string("multiple_choice"));
    json_object_set_new(c, "target_delimiter", json_string(" "));
    json_object_set_new(c, "fewshot_delimiter", json_string("\n\n"));
    json_object_set_new(c, "num_fewshot", json_integer(r->num_fewshot));
    if (r->kind == MC_ROW_SUBTASK) {
        char desc[200];
        const char *subj = r->name + 5;
        int k = snprintf(desc, sizeof(desc),
                         "The following are multiple choice questions (with answers) about ");
        for (const char *p = subj; *p && k < (int)sizeof(desc) - 4; p++)
            desc[k++] = *p == '_' ? ' ' : *p;
        snprintf(desc + k, sizeof(desc) - (size_t)k, ".\n\n");
        json_object_set_new(c, "description", json_string(desc));
        json_object_set_new(c, "fewshot_config", json_pack("{s:s}", "sampler", "first_n"));
    }
    json_t *ml = json_array();
    json_array_append_new(ml, json_pack("{s:s,s:s,s:b}", "metric", "acc", "aggregation", "mean",
                                        "higher_is_better", 1));
    if (r->has_acc_norm)
        json_array_append_new(ml, json_pack("{s:s,s:s,s:b}", "metric", "acc_norm", "aggregation",
                                            "mean", "higher_is_better", 1));
    json_object_set_new(c, "metric_list", ml);
    json_t *md = json_object();
    json_object_set_new(md, "version", json_version(r->version));
    json_object_set_new(c, "metadata", md);
    if (r->approximate)
        json_object_set_new(c, "edgeforge_note",
                            json_string("approximate: HellaSwag from the preprocessed copy; about "
                                        "6% of items have endings with one leading space fewer "
                                        "than lm-eval (data/benchmarks/hellaswag/SOURCES.md)"));
    return c;
}

static json_t *build_json(const McResult *rows, int n, const McRunConfig *cfg) {
    json_t *root = json_object(), *results = json_object(), *groups = json_object();
    json_t *gsub = json_object(), *configs = json_object(), *versions = json_object();
    json_t *nshot = json_object(), *hib = json_object(), *nsamp = json_object();
    for (int i = 0; i < n; i++) {
        const McResult *r = &rows[i];
        json_object_set_new(results, r->name, row_results(r));
        json_object_set_new(versions, r->name, json_version(r->version));
        json_object_set_new(nshot, r->name, json_integer(r->num_fewshot));
        json_t *h = json_pack("{s:b}", "acc", 1);
        if (r->has_acc_norm) json_object_set_new(h, "acc_norm", json_true());
        json_object_set_new(hib, r->name, h);
        if (r->kind == MC_ROW_GROUP) {
            json_object_set_new(groups, r->name, row_results(r));
            if (!json_object_get(gsub, r->name)) json_object_set_new(gsub, r->name, json_array());
        } else {
            json_object_set_new(configs, r->name, row_config(r));
            json_object_set_new(nsamp, r->name,
                                json_pack("{s:I,s:I}", "original", (json_int_t)r->n_original,
                                          "effective", (json_int_t)r->n_effective));
            if (r->kind == MC_ROW_TASK) json_object_set_new(gsub, r->name, json_array());
        }
        if (r->parent[0]) {
            json_t *a = json_object_get(gsub, r->parent);
            if (!a) json_object_set_new(gsub, r->parent, a = json_array());
            json_array_append_new(a, json_string(r->name));
        }
    }
    json_object_set_new(root, "results", results);
    json_object_set_new(root, "groups", groups);
    json_object_set_new(root, "group_subtasks", gsub);
    json_object_set_new(root, "configs", configs);
    json_object_set_new(root, "versions", versions);
    json_object_set_new(root, "n-shot", nshot);
    json_object_set_new(root, "higher_is_better", hib);
    json_object_set_new(root, "n-samples", nsamp);
    json_t *c = json_object();
    json_object_set_new(c, "model", json_string("edgeforge"));
    json_object_set_new(c, "model_args", json_string(cfg->model ? cfg->model : ""));
    if (cfg->model_info) json_object_set_new(c, "model_info", json_string(cfg->model_info));
    json_object_set_new(c, "batch_size", json_integer(cfg->batch_size));
    json_object_set_new(c, "limit", cfg->limit > 0 ? json_integer(cfg->limit) : json_null());
    json_object_set_new(c, "num_fewshot", json_integer(cfg->num_fewshot));
    json_object_set_new(c, "add_bos_token", json_boolean(cfg->add_bos));
    json_object_set_new(c, "bootstrap_iters", json_integer(100000)); // stderr is closed-form
    json_object_set_new(c, "tasks", json_string(cfg->tasks ? cfg->tasks : ""));
    json_object_set_new(c, "data_dir", json_string(cfg->data_dir ? cfg->data_dir : ""));
    json_object_set_new(c, "lm_eval_semantics", json_string("0.4.9.1"));
    json_object_set_new(c, "acc_norm",
                        json_string("argmax of loglikelihood / len(choice) in Unicode code "
                                    "points, choice without the leading delimiter"));
    json_object_set_new(root, "config", c);
    if (cfg->version) json_object_set_new(root, "edgeforge_version", json_string(cfg->version));
    if (cfg->system) json_object_set_new(root, "pretty_env_info", json_string(cfg->system));
    json_object_set_new(root, "total_evaluation_time_seconds", json_real(cfg->seconds));
    return root;
}

Status mc_results_write_json(const char *path, const McResult *rows, int n,
                             const McRunConfig *cfg) {
    json_t *root = build_json(rows, n, cfg);
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_REAL_PRECISION(17));
    json_decref(root);
    if (!text) return fail(STATUS_ERR_NOMEM, "cannot serialise results for '%s'", path);
    size_t len = strlen(text);
    text[len] = 0;
    Status s = file_write_all(path, text, len);
    free(text);
    return s;
}

/* ---- Markdown (lm-eval utils.make_table) -------------------------------------------- */

typedef struct {
    char *s;
    size_t len, cap;
} Str;

static void str_printf(Str *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void str_printf(Str *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (b->len + (size_t)n + 1 > b->cap) {
        b->cap = (b->len + (size_t)n + 1) * 2;
        b->s = xrealloc(b->s, b->cap);
    }
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

static void fmt_version(char *buf, size_t n, double v) {
    if (isnan(v))
        snprintf(buf, n, "N/A");
    else if (v == floor(v))
        snprintf(buf, n, "%d", (int)v);
    else
        snprintf(buf, n, "%g", v);
}

static void md_metric(Str *b, const char *task_col, const char *ver, int nshot, const char *m,
                      const McMetric *v) {
    char se[32];
    if (isnan(v->stderr_))
        snprintf(se, sizeof(se), "N/A");
    else
        snprintf(se, sizeof(se), "%.4f", v->stderr_);
    str_printf(b, "|%s|%s|none|%7d|%s|↑|%.4f|±|%s|\n", task_col, ver, nshot, m, v->value, se);
}

static void md_table(Str *b, const McResult *rows, int n, bool groups) {
    str_printf(b, "|Tasks|Version|Filter|n-shot|Metric| |Value| |Stderr|\n");
    str_printf(b, "|-----|------:|------|-----:|------|-|----:|-|-----:|\n");
    for (int i = 0; i < n; i++) {
        const McResult *r = &rows[i];
        if (groups && r->kind != MC_ROW_GROUP) continue;
        char ver[16], alias[120];
        fmt_version(ver, sizeof(ver), r->version);
        snprintf(alias, sizeof(alias), "%s%s", r->alias, r->approximate ? " (approx.)" : "");
        md_metric(b, alias, ver, r->num_fewshot, "acc", &r->acc);
        if (r->has_acc_norm) md_metric(b, "", "", r->num_fewshot, "acc_norm", &r->acc_norm);
    }
}

char *mc_results_markdown(const McResult *rows, int n, const McRunConfig *cfg) {
    Str b = {0};
    str_printf(&b, "edgeforge eval (%s), num_fewshot: %d, limit: ", cfg->model ? cfg->model : "",
               cfg->num_fewshot);
    if (cfg->limit > 0)
        str_printf(&b, "%lld", (long long)cfg->limit);
    else
        str_printf(&b, "None");
    str_printf(&b, ", batch_size: %d, add_bos_token: %s\n\n", cfg->batch_size,
               cfg->add_bos ? "True" : "False");
    md_table(&b, rows, n, false);
    bool any_group = false, any_approx = false;
    for (int i = 0; i < n; i++) {
        any_group |= rows[i].kind == MC_ROW_GROUP;
        any_approx |= rows[i].approximate;
    }
    if (any_group) {
        str_printf(&b, "\n");
        md_table(&b, rows, n, true);
    }
    str_printf(&b, "\nacc: argmax of the summed continuation log-likelihood; acc_norm: argmax of "
                   "log-likelihood / len(choice) in characters (lm-eval 0.4 semantics); stderr: "
                   "sample std / sqrt(n), groups pooled; mmlu: micro-average over questions.\n");
    if (any_approx)
        str_printf(&b, "(approx.): HellaSwag from the preprocessed copy; ~6%% of items differ "
                       "from lm-eval by one leading space in an ending.\n");
    if (!b.s) str_printf(&b, "%s", "");
    return b.s;
}
