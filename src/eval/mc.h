/*
 * mc.h - lm-evaluation-harness v0.4 multiple-choice scoring, aggregation and reporting
 * (reference.md §9.1; lm_eval/api/task.py process_results, api/metrics.py,
 * evaluator_utils.py consolidate_group_results, utils.py make_table; 0.4.9.1).
 *
 * Per document, from the per-choice log-likelihoods LL_i = sum log p(cont | ctx):
 *   acc       = [argmax_i LL_i == gold]
 *   acc_norm  = [argmax_i LL_i / len(choice_i) == gold], len = Python len() of the
 *               doc_to_choice string (code points, no delimiter); IEEE division, so an
 *               empty choice gives -inf (or NaN for LL = 0) exactly as numpy does
 *   argmax    = numpy's: the FIRST maximum; a NaN counts as the maximum (first NaN wins)
 * Per task: mean (Python sum/len), stderr = sample std (n - 1) / sqrt(n) (mean_stderr);
 * "N/A" (NaN here) for one document. Groups (MMLU: 57 subjects -> stem, humanities,
 * social_sciences, other -> mmlu): the size-weighted mean of the LEAF subtasks, which is
 * the micro-average over all questions, and the pooled stderr
 *   sqrt( sum_i (n_i - 1) n_i se_i^2 / (sum n_i - k) / sum n_i )
 * over the leaf subtasks (N/A if any leaf is N/A).
 *
 *   McDocScore *sc = ...;                              // (n_docs)
 *   for each doc: mc_score_doc(&sc[i], lls, is_greedy, d->choices, d->n_choices, d->gold);
 *   McResult *res; int n_res;
 *   mc_task_results(&task, sc, &res, &n_res);          // 1 row, or 62 for mmlu
 *   mc_results_write_json("results.json", res, n_res, &cfg);
 */
#ifndef EF_MC_H
#define EF_MC_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "core/status.h"
#include "eval/tasks.h"

typedef struct {
    int pred, pred_norm;  // argmax of LL and of LL / len(choice)
    double acc, acc_norm; // 0 or 1
    double exact_match;   // is_greedy[gold] (0/1)
} McDocScore;

// numpy.argmax over n doubles: first maximum, first NaN if any. n >= 1.
int mc_argmax(const double *x, int n);

// Scores one document. lls (n), is_greedy (n; NULL = all false), choices (n) strings whose
// code points normalise acc_norm. gold outside [0, n) scores 0 (lm-eval's -100).
void mc_score_doc(McDocScore *out, const double *lls, const bool *is_greedy,
                  const char *const *choices, int n, int gold);
// Same with choice lengths given directly (len(choice) as doubles).
void mc_score_doc_len(McDocScore *out, const double *lls, const bool *is_greedy,
                      const double *choice_len, int n, int gold);

// A metric of a task or group: value, stderr (NaN = "N/A"), number of documents.
typedef struct {
    double value;
    double stderr_;
    int64_t size;
} McMetric;

// lm-eval mean (sum in order / n) and mean_stderr (NaN for n < 2).
double mc_mean(const double *x, int64_t n);
double mc_mean_stderr(const double *x, int64_t n);
McMetric mc_metric_from_values(const double *x, int64_t n);

// Group of leaf subtasks: size-weighted mean and pooled stderr (weight_by_size = True).
McMetric mc_group_aggregate(const McMetric *leaves, int n);

// MMLU: per-subject metrics -> the 4 groups and the overall "mmlu" (all from the leaves).
void mc_mmlu_aggregate(McMetric groups[MMLU_GROUP_COUNT], McMetric *all, const McMetric *subj,
                       const MmluGroup *group_of, int n_subj);

/* ---- results ------------------------------------------------------------------------- */

typedef enum { MC_ROW_TASK, MC_ROW_GROUP, MC_ROW_SUBTASK } McRowKind;

typedef struct {
    char name[96];   // lm-eval task name: "arc_easy", "mmlu", "mmlu_stem", "mmlu_anatomy"
    char alias[96];  // lm-eval alias: "arc_easy", "mmlu", " - stem", "  - anatomy"
    char parent[96]; // group this row belongs to ("" for top level)
    McRowKind kind;
    bool has_acc_norm;
    McMetric acc, acc_norm;
    int64_t n_original, n_effective; // documents in the task / evaluated (leaves)
    double version;                  // NaN -> null
    int num_fewshot;
    bool approximate; // HellaSwag from the preprocessed copy
} McResult;

// Rows for one evaluated task from its per-document scores (Task.n_docs of them): one row,
// or for MMLU "mmlu", 4 groups and 57 subjects (subjects without documents are skipped).
// n_original = documents in the full task (before --limit): pass Task.n_docs of an
// unlimited load, or 0 to use the evaluated count. Appends to *rows (realloc'd).
void mc_task_results(McResult **rows, int *n_rows, const Task *t, const McDocScore *scores,
                     const int64_t *n_original_per_subject, int64_t n_original);

typedef struct {
    const char *model;      // path given on the command line
    const char *model_info; // e.g. "llama F16, 30 layers" (free text, may be NULL)
    const char *tasks;      // the --tasks list as given
    int num_fewshot;
    int64_t limit; // <= 0: none
    int batch_size;
    bool add_bos; // BOS prepended to every request (lm-eval add_bos_token)
    const char *data_dir;
    double seconds;      // wall time of the evaluation
    const char *version; // edgeforge version
    const char *system;  // gemm_system_info (lm-eval's "pretty_env_info"), or NULL
} McRunConfig;

// Writes lm-eval's results layout (results, groups, group_subtasks, configs, versions,
// n-shot, higher_is_better, n-samples, config) atomically to `path`.
Status mc_results_write_json(const char *path, const McResult *rows, int n, const McRunConfig *cfg);
// lm-eval's make_table Markdown (Tasks|Version|Filter|n-shot|Metric||Value||Stderr), the
// groups table, and footnotes (metric definitions, BOS, approximate tasks). New heap string.
char *mc_results_markdown(const McResult *rows, int n, const McRunConfig *cfg);

#endif
