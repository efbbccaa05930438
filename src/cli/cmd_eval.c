/*
 * cmd_eval.c - `edgeforge eval`: the paper's 8 multiple-choice benchmarks with
 * lm-evaluation-harness v0.4 semantics (docs/eval.md).
 *
 *   edgeforge eval models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
 *       --tasks arc_easy,commonsense_qa,hellaswag,mmlu,openbookqa,piqa,social_iqa,winogrande \
 *       --limit 100 --batch 8 --out results.json
 *
 * The Markdown table goes to stdout (and to --md), the lm-eval-layout JSON to --out,
 * progress with ETA to stderr. Every task's data is read and checked before the model is
 * loaded, so a missing or corrupt file fails fast. Exit: 0 ok, 1 failure, 2 bad usage.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#ifdef _OPENMP
#include <cblas.h>
#include <omp.h>
#endif

#include "cli/args.h"
#include "cli/commands.h"
#include "core/common.h"
#include "core/fileio.h"
#include "core/log.h"
#include "eval/eval.h"
#include "eval/mc.h"
#include "eval/tasks.h"
#include "model/infer.h"
#include "model/llama.h"
#include "tensor/gemm.h"

#define ALL_TASKS "arc_easy,commonsense_qa,hellaswag,mmlu,openbookqa,piqa,social_iqa,winogrande"

// Splits the comma-separated task list; "all" means the 8 tasks. Returns the count, or -1
// after printing an error for an unknown or repeated name.
static int parse_tasks(const char *list, TaskKind *out) {
    if (strcmp(list, "all") == 0) list = ALL_TASKS;
    char *copy = xstrdup(list), *save = NULL;
    int n = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int k = task_kind_parse(tok);
        if (k < 0) {
            fprintf(stderr, "error: unknown task '%s' (known: %s, or all)\n", tok, ALL_TASKS);
            free(copy);
            return -1;
        }
        for (int i = 0; i < n; i++)
            if (out[i] == (TaskKind)k) {
                fprintf(stderr, "error: task '%s' given twice\n", tok);
                free(copy);
                return -1;
            }
        out[n++] = (TaskKind)k;
    }
    free(copy);
    if (n == 0) fprintf(stderr, "error: --tasks is empty\n");
    return n > 0 ? n : -1;
}

// Document counts without --limit (lm-eval's n-samples "original"); per subject for MMLU.
static Status count_original(TaskKind k, const char *data_dir, int64_t *n, int64_t **per_subject) {
    Task full;
    TaskOpts o = task_opts_default();
    Status s = task_load(&full, k, data_dir, &o);
    if (s != STATUS_OK) return s;
    *n = full.n_docs;
    if (full.n_subjects > 0) {
        *per_subject = xcalloc((size_t)full.n_subjects, sizeof(int64_t));
        for (int i = 0; i < full.n_docs; i++)
            (*per_subject)[full.docs[i].subject]++;
    }
    task_release(&full);
    return STATUS_OK;
}

// Appends one JSON line per document: task, doc index (row in its file), subject, gold,
// per-choice log-likelihoods and is_greedy, acc and acc_norm (lm-eval --log_samples' role).
static void log_samples(FILE *f, const Task *t, const McDocScore *sc, const double *lls,
                        const bool *greedy) {
    int64_t q = 0;
    for (int i = 0; i < t->n_docs; i++) {
        const TaskDoc *d = &t->docs[i];
        fprintf(
            f, "{\"task\": \"%s\", \"doc_id\": %d, \"subject\": \"%s\", \"gold\": %d, \"lls\": [",
            task_name(t->kind), d->index, d->subject >= 0 ? t->subjects[d->subject] : "", d->gold);
        for (int c = 0; c < d->n_choices; c++)
            fprintf(f, "%s%.17g", c ? ", " : "", lls[q + c]);
        fprintf(f, "], \"is_greedy\": [");
        for (int c = 0; c < d->n_choices; c++)
            fprintf(f, "%s%s", c ? ", " : "", greedy[q + c] ? "true" : "false");
        fprintf(f, "], \"acc\": %g, \"acc_norm\": %g}\n", sc[i].acc, sc[i].acc_norm);
        q += d->n_choices;
    }
}

typedef struct {
    const char *tasks, *out, *md, *data_dir, *tokenizer, *dtype, *samples, *cache;
    int64_t limit;
    int num_fewshot, batch, threads, max_length;
    bool add_bos;
} EvalArgs;

int cmd_eval(int argc, char **argv) {
    EvalArgs a = {.tasks = ALL_TASKS, .data_dir = "data/benchmarks", .batch = 32};
    ArgSpec spec[] = {
        {"tasks", 0, ARG_STRING, &a.tasks, "comma-separated tasks, or all (default: all 8)", 0, 0},
        {"limit", 0, ARG_INT64, &a.limit, "at most N documents per task (per MMLU subject)", 1,
         9e18},
        {"num-fewshot", 0, ARG_INT, &a.num_fewshot, "few-shot examples (mmlu only; default 0)", 0,
         5},
        {"batch", 'b', ARG_INT, &a.batch, "questions scored together (default 32)", 1, 4096},
        {"out", 'o', ARG_STRING, &a.out, "write lm-eval-layout results JSON here", 0, 0},
        {"md", 0, ARG_STRING, &a.md, "also write the Markdown table here", 0, 0},
        {"log-samples", 0, ARG_STRING, &a.samples, "write per-document log-likelihoods (JSONL)", 0,
         0},
        {"add-bos", 0, ARG_FLAG, &a.add_bos, "prepend BOS to every request (default off)", 0, 0},
        {"cache", 0, ARG_STRING, &a.cache,
         "reuse and record request log-likelihoods in FILE (a stopped run resumes)", 0, 0},
        {"data-dir", 0, ARG_STRING, &a.data_dir, "benchmark data (default data/benchmarks)", 0, 0},
        {"max-length", 0, ARG_INT, &a.max_length, "request window (default: model context)", 2,
         1 << 24},
        {"dtype", 0, ARG_STRING, &a.dtype, "convert weights at load: f32, f16 or bf16", 0, 0},
        {"threads", 't', ARG_INT, &a.threads, "threads (default: OMP_NUM_THREADS or all)", 1, 1024},
        {"tokenizer", 0, ARG_STRING, &a.tokenizer, "tokenizer file (llama2.c models)", 0, 0},
    };
    ArgParse ap = {.cmd = "eval",
                   .pos_usage = "MODEL",
                   .spec = spec,
                   .n_spec = (int)ARRAY_LEN(spec),
                   .min_pos = 1,
                   .max_pos = 1,
                   .summary = "multiple-choice benchmarks with lm-evaluation-harness semantics"};
    int r = args_parse(&ap, argc, argv);
    if (r != 0) return r > 0 ? 0 : 2;
    TaskKind kinds[TASK_KIND_COUNT];
    int n_tasks = parse_tasks(a.tasks, kinds);
    if (n_tasks < 0) return 2;
    int dt = a.dtype ? dtype_from_name(a.dtype) : -1;
    if (a.dtype && dt < 0) {
        fprintf(stderr, "error: --dtype '%s' is not one of f32, f16, bf16\n", a.dtype);
        return 2;
    }
    // data first: every task loads (and is validated) before the model
    Task tasks[TASK_KIND_COUNT];
    memset(tasks, 0, sizeof(tasks));
    TaskOpts to = task_opts_default();
    to.limit = a.limit;
    to.num_fewshot = a.num_fewshot;
    int rc = 0;
    for (int i = 0; i < n_tasks && rc == 0; i++)
        if (task_load(&tasks[i], kinds[i], a.data_dir, &to) != STATUS_OK) rc = cli_fail(NULL);
    Model m;
    model_init(&m);
    cli_set_threads(a.threads);
    ModelLoadOptions lo = {.tokenizer_path = a.tokenizer};
    if (rc == 0 && model_load(&m, ap.pos[0], &lo) != STATUS_OK) rc = cli_fail("cannot load model");
    if (rc == 0 && !m.tok) {
        fprintf(stderr, "error: '%s' has no tokenizer\n", ap.pos[0]);
        rc = 1;
    }
    if (rc == 0 && dt >= 0 && infer_convert_weights(&m, (DType)dt) != STATUS_OK)
        rc = cli_fail(NULL);
    EvalOptions eo = eval_options_default();
    eo.add_bos = a.add_bos;
    eo.batch = a.batch;
    eo.max_length = a.max_length;
    EvalCache cache = {0};
    if (rc == 0 && a.cache) {
        // what decides the numbers besides the requests: the model file, the weight dtype
        // (BOS and the window are in the header too)
        char id[1200];
        struct stat sb;
        char *real = realpath(ap.pos[0], NULL);
        snprintf(id, sizeof id, "%s (%lld bytes%s%s)", real ? real : ap.pos[0],
                 stat(ap.pos[0], &sb) == 0 && S_ISREG(sb.st_mode) ? (long long)sb.st_size : -1LL,
                 a.dtype ? ", --dtype " : "", a.dtype ? a.dtype : "");
        free(real);
        if (eval_cache_open(&cache, a.cache, id, a.add_bos, eval_window(&m, &eo)) != STATUS_OK)
            rc = cli_fail(NULL);
        else
            eo.cache = &cache;
    }
    McResult *rows = NULL;
    int n_rows = 0;
    double t0 = time_now();
    AtomicFile samples = {0};
    if (rc == 0 && a.samples && atomic_file_open(&samples, a.samples) != STATUS_OK)
        rc = cli_fail(NULL);
    for (int i = 0; i < n_tasks && rc == 0; i++) {
        Task *t = &tasks[i];
        McDocScore *sc = xcalloc((size_t)(t->n_docs > 0 ? t->n_docs : 1), sizeof(McDocScore));
        int64_t n_req = 0;
        for (int d = 0; d < t->n_docs; d++)
            n_req += t->docs[d].n_choices;
        double *lls = xmalloc((size_t)(n_req > 0 ? n_req : 1) * sizeof(double));
        bool *greedy = xmalloc((size_t)(n_req > 0 ? n_req : 1) * sizeof(bool));
        Progress p;
        progress_init(&p, task_name(t->kind), t->n_docs);
        int64_t n_orig = t->n_docs, *per_subj = NULL;
        EvalStats es = {0};
        double t_task = time_now();
        if (eval_task(&m, t, &eo, sc, lls, greedy, &p, &es) != STATUS_OK)
            rc = cli_fail(NULL);
        else if (a.limit > 0 &&
                 count_original(t->kind, a.data_dir, &n_orig, &per_subj) != STATUS_OK)
            rc = cli_fail(NULL);
        if (rc == 0) {
            // the task's acc / acc_norm right away (a long run's finished tasks are not lost
            // if it is stopped before the results files are written)
            double acc = 0, acc_norm = 0;
            for (int d = 0; d < t->n_docs; d++) {
                acc += sc[d].acc;
                acc_norm += sc[d].acc_norm;
            }
            char extra[224], norm[40] = "";
            double secs = time_now() - t_task, nd = t->n_docs > 0 ? (double)t->n_docs : 1.0;
            if (task_has_acc_norm(t->kind))
                snprintf(norm, sizeof(norm), ", acc_norm %.4f", acc_norm / nd);
            char from_cache[48] = "";
            if (es.cached)
                snprintf(from_cache, sizeof(from_cache), "; %lld documents from the cache",
                         (long long)es.cached);
            snprintf(extra, sizeof(extra),
                     "acc %.4f%s; %lld tokens, %lld logit rows, %.0f tokens/s%s", acc / nd, norm,
                     (long long)es.tokens, (long long)es.logit_rows,
                     secs > 0 ? (double)es.tokens / secs : 0.0, from_cache);
            progress_finish(&p, extra);
            mc_task_results(&rows, &n_rows, t, sc, per_subj, n_orig);
            if (samples.f) log_samples(samples.f, t, sc, lls, greedy);
        }
        free(per_subj);
        free(sc);
        free(lls);
        free(greedy);
    }
    if (rc == 0) {
        char info[160], sysinfo[512];
        gemm_system_info(sysinfo, sizeof sysinfo);
        snprintf(info, sizeof(info), "%s, %d layers, dim %d, vocab %d", m.cfg.arch, m.cfg.n_layers,
                 m.cfg.dim, m.cfg.vocab_size);
        McRunConfig cfg = {.model = ap.pos[0],
                           .model_info = info,
                           .tasks = a.tasks,
                           .num_fewshot = a.num_fewshot,
                           .limit = a.limit,
                           .batch_size = a.batch,
                           .add_bos = a.add_bos,
                           .data_dir = a.data_dir,
                           .seconds = time_now() - t0,
                           .version = EDGEFORGE_VERSION,
                           .system = sysinfo};
        char *md = mc_results_markdown(rows, n_rows, &cfg);
        fputs(md, stdout);
        if (a.md && file_write_all(a.md, md, strlen(md)) != STATUS_OK) rc = cli_fail(NULL);
        if (rc == 0 && a.out && mc_results_write_json(a.out, rows, n_rows, &cfg) != STATUS_OK)
            rc = cli_fail(NULL);
        free(md);
    }
    if (samples.f) {
        if (rc == 0 && atomic_file_commit(&samples) != STATUS_OK)
            rc = cli_fail(NULL);
        else if (rc != 0)
            atomic_file_abort(&samples);
    }
    free(rows);
    eval_cache_close(&cache);
    for (int i = 0; i < n_tasks; i++)
        task_release(&tasks[i]);
    model_release(&m);
    return rc;
}
