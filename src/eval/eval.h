/*
 * eval.h - running a multiple-choice task through the model: the log-likelihood and
 * is_greedy of every request, as lm-eval's HFLM._loglikelihood_tokens computes them
 * (reference.md §9.1-9.2), then lm-eval's per-document scores (mc.h).
 *
 * Requests are tokenized with lm-eval's rule (encode_pair.h). For the tasks whose choices
 * share one context (all but WinoGrande) a batch of up to `batch` questions is scored as:
 *   1. one forward over the contexts of all the questions (one KV-cache sequence each),
 *      logits only at each context's last token (it predicts every choice's first token);
 *   2. one forward over every choice's continuation tokens but the last, each choice in
 *      its own KV sequence: the question's own for its first such choice, copies of the
 *      context's cache (infer_seq_copy) for the others; logits for those rows only.
 *      Forwards are split only where the logit buffer (128 MiB) fills, so the GEMMs see
 *      hundreds of token rows at once.
 * So the context is computed once per question, never once per choice. WinoGrande's
 * requests (one context per choice) are scored as independent sequences, batched.
 *   LL = sum_j log_softmax(logits_j)[cont_j], in double from float32 logits;
 *   is_greedy = every continuation token is its row's argmax (first maximum).
 * Window: lm-eval feeds (ctx + cont)[-(max_length+1):][:-1]; a request longer than
 * max_length loses context tokens on the left. Here the left cut is the same for all
 * choices of a question (the longest continuation's), so only such over-long questions
 * can differ from lm-eval; none of the 8 tasks comes near 2048 tokens.
 *
 *   EvalOptions o = eval_options_default();              // no BOS, batch 32
 *   McDocScore *sc = xcalloc(task.n_docs, sizeof *sc);
 *   Progress p; progress_init(&p, "arc_easy", task.n_docs);
 *   if (eval_task(&model, &task, &o, sc, NULL, NULL, &p, NULL) != STATUS_OK) ...
 */
#ifndef EF_EVAL_H
#define EF_EVAL_H

#include <stdbool.h>
#include <stdint.h>

#include "core/log.h"
#include "core/status.h"
#include "eval/eval_cache.h"
#include "eval/mc.h"
#include "eval/tasks.h"
#include "model/llama.h"

typedef struct {
    bool add_bos;     // prepend BOS to every request (lm-eval add_bos_token; default off)
    int batch;        // questions scored together, >= 1 (fewer when their KV caches would
                      // pass 1 GiB)
    int max_length;   // request window in tokens; 0: the model's max_seq_len (lm-eval's
                      // max_length comes from the model config the same way)
    EvalCache *cache; // NULL, or computed requests to reuse and record (eval_cache.h): the
                      // documents whose every request is there are not run again
} EvalOptions;

EvalOptions eval_options_default(void);
// The request window eval_task uses: o->max_length, else the model's max_seq_len, else 2048.
int eval_window(const Model *m, const EvalOptions *o);

// What one eval_task call computed: for reports (tokens/s, FLOP estimates).
typedef struct {
    int64_t tokens;     // tokens run through the model (contexts once, shared prefixes once)
    int64_t logit_rows; // positions whose logits were computed
    int64_t forwards;   // infer_forward calls
    int64_t cached;     // documents taken from EvalOptions.cache
} EvalStats;

// Scores every document of `t` with `m` (which must carry a tokenizer). Writes scores
// (t->n_docs); when lls/greedy are not NULL also every request's log-likelihood and
// is_greedy flag, flattened in document order (sum of n_choices entries). `p` may be NULL.
// Errors: model/tokenizer failures, STATUS_ERR_UNSUPPORTED for a continuation longer than
// the window, STATUS_ERR_NOMEM for the KV cache. `stats` (may be NULL) receives the work done.
Status eval_task(const Model *m, const Task *t, const EvalOptions *o, McDocScore *scores,
                 double *lls, bool *greedy, Progress *p, EvalStats *stats);

#endif
