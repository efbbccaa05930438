/*
 * tasks.h - the paper's 8 multiple-choice benchmarks, read from their original files and
 * rendered exactly as lm-evaluation-harness v0.4 (0.4.9.1) renders them (reference.md §9.3).
 *
 * A task is a list of documents; a document is a list of requests (context, continuation),
 * one per choice, as lm-eval's ConfigurableTask.construct_requests builds them:
 *   single-context tasks   context shared, continuation = target_delimiter + choice (" ")
 *   WinoGrande             context per choice (sentence up to "_" + option), one shared
 *                          continuation " " + rest of the sentence ("partial scoring")
 * plus the doc_to_choice strings (whose character counts acc_norm divides by) and the gold
 * index as process_results derives it.
 *
 *   task        file(s) under <data_dir>/<task>/                   split    metrics
 *   arc_easy    ARC-Easy-Test.jsonl                                test     acc, acc_norm
 *   commonsense_qa dev_rand_split.jsonl                            valid.   acc
 *   hellaswag   hellaswag_val.jsonl (original, exact) if present,  valid.   acc, acc_norm
 *               else hellaswag_val_lmeval_approx.jsonl (approximate, Task.approximate)
 *   mmlu        test/<subject>_test.csv (+ dev/ for few-shot),     test     acc (57 subjects,
 *               lm_eval_subject_categories.tsv                              4 groups)
 *   openbookqa  test.jsonl                                         test     acc, acc_norm
 *   piqa        valid.jsonl + valid-labels.lst                     valid.   acc, acc_norm
 *   social_iqa  dev.jsonl + dev-labels.lst                         valid.   acc
 *   winogrande  dev.jsonl                                          valid.   acc
 *
 * Python string semantics are reproduced where lm-eval relies on them: str.strip() strips
 * Unicode whitespace, str.capitalize() uppercases the first character and lowercases the
 * rest (ASCII, Latin-1, Latin Extended-A and basic Cyrillic letters; other scripts are left
 * unchanged: a documented gap), len() counts code points.
 *
 *   Task t;
 *   TaskOpts o = task_opts_default();               // 0-shot, no limit
 *   if (task_load(&t, TASK_ARC_EASY, "data/benchmarks", &o) != STATUS_OK) ...
 *   for (int i = 0; i < t.n_docs; i++) {
 *       const TaskDoc *d = &t.docs[i];
 *       for (int c = 0; c < d->n_choices; c++) score(d->contexts[c], d->continuations[c]);
 *   }
 *   task_release(&t);
 */
#ifndef EF_TASKS_H
#define EF_TASKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

typedef enum {
    TASK_ARC_EASY,
    TASK_COMMONSENSE_QA,
    TASK_HELLASWAG,
    TASK_MMLU,
    TASK_OPENBOOKQA,
    TASK_PIQA,
    TASK_SOCIAL_IQA,
    TASK_WINOGRANDE,
    TASK_KIND_COUNT
} TaskKind;

// MMLU subject groups (lm-eval mmlu_stem, mmlu_humanities, ...).
typedef enum {
    MMLU_GROUP_STEM,
    MMLU_GROUP_HUMANITIES,
    MMLU_GROUP_SOCIAL_SCIENCES,
    MMLU_GROUP_OTHER,
    MMLU_GROUP_COUNT
} MmluGroup;

typedef struct {
    int n_choices;
    const char **contexts;      // (n_choices) lm-eval request context per choice
    const char **continuations; // (n_choices) request continuation (delimiter included)
    const char **choices;       // (n_choices) doc_to_choice strings (acc_norm: code points)
    int gold;                   // index into choices
    int subject;                // MMLU subject index into Task.subjects, else -1
    int index;                  // row in the source file (per subject for MMLU)
    bool shared_context;        // all contexts[] are one string (one KV-cache prefix)
} TaskDoc;

typedef struct {
    int num_fewshot; // MMLU only: first K rows of dev/ (lm-eval sampler first_n); 0 default
    int64_t limit;   // at most this many documents per task (per subject for MMLU, as
                     // lm-eval applies --limit to every subtask); <= 0: all. A limit above
                     // the task size takes the whole task, as lm-eval does.
} TaskOpts;

typedef struct TaskPool TaskPool; // string storage (private)

typedef struct {
    TaskKind kind;
    int n_docs;
    TaskDoc *docs;
    int n_subjects;           // MMLU: 57, else 0
    char **subjects;          // (n_subjects) "abstract_algebra", ... (categories file order)
    MmluGroup *subject_group; // (n_subjects)
    int num_fewshot;
    bool approximate; // HellaSwag from the preprocessed copy (not bit-exact lm-eval)
    char *source;     // the main file read (for the results' config)
    TaskPool *pool;
} Task;

TaskOpts task_opts_default(void);

// "arc_easy", ... and the inverse (-1 for an unknown name).
const char *task_name(TaskKind k);
int task_kind_parse(const char *name);
// True for the tasks whose lm-eval YAML lists acc_norm (arc_easy, hellaswag, openbookqa, piqa).
bool task_has_acc_norm(TaskKind k);
// lm-eval YAML metadata version (1.0; social_iqa 0.0; mmlu group 2.0; NaN = none, for
// commonsense_qa, whose YAML has no metadata; lm-eval reports null).
double task_version(TaskKind k);
const char *mmlu_group_name(MmluGroup g); // "stem", "humanities", "social_sciences", "other"

// Reads and renders one task from <data_dir>/<task name>/. Errors name the file and line:
// STATUS_ERR_IO (missing file), STATUS_ERR_FORMAT (bad record), STATUS_ERR_UNSUPPORTED
// (few-shot for a task whose training split is not shipped), STATUS_ERR_ARG (bad opts).
// On error *t is left zeroed.
Status task_load(Task *t, TaskKind kind, const char *data_dir, const TaskOpts *o);
// Frees everything; a zeroed Task is a no-op.
void task_release(Task *t);

/* ---- pieces, exposed for tests ------------------------------------------------------ */

// lm-eval hellaswag utils.preprocess: strip; " [title]" -> ". "; drop "\[.*?\]";
// "  " -> " " (one pass). Returns a new heap string.
char *hellaswag_preprocess(const char *text);
// Python str.strip(): a new heap string without leading/trailing Unicode whitespace.
char *py_strip(const char *s);
// Python str.capitalize() (see the file comment for the letters covered). New heap string.
char *py_capitalize(const char *s);
// Python len(): code points of a UTF-8 string (invalid bytes count one each).
int64_t py_len(const char *s);
// Byte length of s[0..n) without its trailing Python whitespace (len of s.rstrip()).
size_t py_rstrip_len(const char *s, size_t n);

#endif
