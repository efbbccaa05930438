/*
 * eval.c - log-likelihood scoring of multiple-choice tasks with the inference engine
 * (model/infer.h). See eval.h for the scheme; the arithmetic follows lm-eval's
 * HFLM._loglikelihood_tokens: logits row t predicts token t+1, the continuation's
 * log-probs are summed, is_greedy compares each row's argmax.
 */
#include "eval/eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "eval/encode_pair.h"
#include "model/infer.h"
#include "model/sampler.h"
#include "model/tokenizer.h"
#include "tensor/vmath.h"

// Memory the scoring may plan for: KV caches of one batch, logit rows of one forward.
#define EVAL_KV_BUDGET     (1024.0 * 1024 * 1024)
#define EVAL_LOGITS_BUDGET ((int64_t)128 << 20)
// A prefix shared by a batch's contexts gets its own forward when at least this long.
#define EVAL_MIN_PREFIX 4

EvalOptions eval_options_default(void) {
    EvalOptions o = {.add_bos = false, .batch = 32, .max_length = 0, .cache = NULL};
    return o;
}

int eval_window(const Model *m, const EvalOptions *o) {
    return o->max_length > 0 ? o->max_length : m->cfg.max_seq_len > 0 ? m->cfg.max_seq_len : 2048;
}

// Tokens appended to one sequence in one forward; rows want_from..n-1 get logits, and row
// want_from + j predicts continuation token cont_start + j of every request in
// [req_lo, req_hi) (several requests only for a shared context's last token).
typedef struct {
    int seq;
    const int32_t *tok;
    int n, want_from;
    int64_t req_lo, req_hi;
    int cont_start;
} Seg;

typedef struct {
    const Model *m;
    InferState st;
    int V;
    const EvalPair *pairs; // (n_req)
    double *ll;            // (n_req)
    bool *greedy;          // (n_req)
    // one forward's worth of segments
    Seg *segs;
    int n_segs, cap_segs;
    int64_t rows, cap_rows; // wanted rows queued / logits capacity
    int64_t n_tokens;
    int32_t *tok_buf, *seq_buf; // (cap_tokens)
    uint8_t *want_buf;
    int64_t cap_tokens;
    float *logits; // (cap_rows, V)
    double *lse;   // (cap_rows) log-sum-exp of each logits row
    int *argmax;   // (cap_rows)
    EvalStats stats;
} Runner;

// log-softmax of one row at `tok` and whether tok is the row's (first) argmax.
static void row_stats(const float *row, int V, double *lse, int *argmax) {
    int am = sampler_argmax(row, V);
    double mx = row[am]; // sum_v exp(row_v - mx) >= 1: the argmax's own term is exp(0)
    *lse = mx + log(vm_sum_exp(row, V, 1.0, mx));
    *argmax = am;
}

static Status runner_flush(Runner *r) {
    if (r->n_segs == 0) return STATUS_OK;
    InferBatch b = {.tokens = r->tok_buf,
                    .seq = r->seq_buf,
                    .pos = NULL,
                    .want_logits = r->want_buf,
                    .n = (int)r->n_tokens};
    Status s = infer_forward(&r->st, &b, r->logits);
    if (s != STATUS_OK) return s;
    r->stats.tokens += r->n_tokens;
    r->stats.logit_rows += r->rows;
    r->stats.forwards++;
    // each row's log-sum-exp and argmax in parallel (V exps per row), then the sums in order
    int64_t n_rows = r->rows;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n_rows; i++)
        row_stats(r->logits + i * r->V, r->V, &r->lse[i], &r->argmax[i]);
    int64_t row = 0;
    for (int i = 0; i < r->n_segs; i++) {
        const Seg *g = &r->segs[i];
        for (int j = g->want_from; j < g->n; j++, row++) {
            const float *x = r->logits + row * r->V;
            int k = g->cont_start + (j - g->want_from); // continuation index predicted
            for (int64_t q = g->req_lo; q < g->req_hi; q++) {
                const EvalPair *p = &r->pairs[q];
                if (k >= p->n_cont) continue;
                int32_t t = p->cont[k];
                r->ll[q] += (double)x[t] - r->lse[row];
                if (r->argmax[row] != t) r->greedy[q] = false;
            }
        }
    }
    r->n_segs = 0;
    r->rows = 0;
    r->n_tokens = 0;
    return STATUS_OK;
}

// Queues a segment (flushing first when the logits buffer would overflow).
static Status runner_add(Runner *r, const Seg *g) {
    int64_t want = g->n - g->want_from;
    CHECK(want <= r->cap_rows);
    if (r->rows + want > r->cap_rows) {
        Status s = runner_flush(r);
        if (s != STATUS_OK) return s;
    }
    if (r->n_tokens + g->n > r->cap_tokens) { // token buffers grow; only logit rows flush
        r->cap_tokens = MAX(2 * r->cap_tokens, r->n_tokens + g->n);
        r->tok_buf = xrealloc(r->tok_buf, (size_t)r->cap_tokens * sizeof(int32_t));
        r->seq_buf = xrealloc(r->seq_buf, (size_t)r->cap_tokens * sizeof(int32_t));
        r->want_buf = xrealloc(r->want_buf, (size_t)r->cap_tokens);
    }
    for (int j = 0; j < g->n; j++) {
        r->tok_buf[r->n_tokens + j] = g->tok[j];
        r->seq_buf[r->n_tokens + j] = g->seq;
        r->want_buf[r->n_tokens + j] = j >= g->want_from;
    }
    r->n_tokens += g->n;
    r->rows += want;
    if (r->n_segs == r->cap_segs) {
        r->cap_segs = r->cap_segs ? 2 * r->cap_segs : 64;
        r->segs = xrealloc(r->segs, (size_t)r->cap_segs * sizeof(Seg));
    }
    r->segs[r->n_segs++] = *g;
    return STATUS_OK;
}

static void runner_release(Runner *r) {
    infer_release(&r->st);
    free(r->segs);
    free(r->tok_buf);
    free(r->seq_buf);
    free(r->want_buf);
    free(r->logits);
    free(r->lse);
    free(r->argmax);
}

// Longest continuation of doc d's requests.
static int doc_max_cont(const EvalPair *pairs, int64_t lo, int64_t hi) {
    int mx = 0;
    for (int64_t q = lo; q < hi; q++)
        mx = MAX(mx, pairs[q].n_cont);
    return mx;
}

// Context tokens cut on the left so that ctx + cont[:-1] fits the window (lm-eval's
// left truncation); -1 when even the continuation does not fit.
static int window_drop(int n_ctx, int n_cont, int window) {
    int need = n_ctx + n_cont - 1;
    int drop = need > window ? need - window : 0;
    return drop >= n_ctx ? -1 : drop;
}

// Tokens that the (window-cut) contexts of documents [d0, d1) all start with, at most
// each context's length minus one so that every context keeps its own last token.
static int shared_prefix(const Runner *r, const int64_t *off, const int *drop, int d0, int d1) {
    const EvalPair *a = &r->pairs[off[d0]];
    const int32_t *t0 = a->ctx + drop[d0];
    int n = a->n_ctx - drop[d0] - 1;
    for (int d = d0 + 1; d < d1 && n > 0; d++) {
        const EvalPair *p = &r->pairs[off[d]];
        const int32_t *t = p->ctx + drop[d];
        int i = 0, lim = MIN(n, p->n_ctx - drop[d] - 1);
        while (i < lim && t[i] == t0[i])
            i++;
        n = i;
    }
    return n;
}

// Shared-context documents [d0, d1): the prefix all their contexts share (MMLU's subject
// line, few-shot examples) once, copied into every document's sequence; then every
// context's remaining tokens (document k in sequence k); then every choice's remaining
// tokens in its own sequence (a copy of the context's cache), all in as few forwards as the
// logits buffer allows: big token batches keep the GEMMs efficient.
static Status score_shared(Runner *r, const Task *t, const int64_t *off, const int *drop, int d0,
                           int d1) {
    Status s;
    for (int d = d0; d < d1; d++)
        infer_seq_truncate(&r->st, d - d0, 0);
    int np = d1 - d0 > 1 ? shared_prefix(r, off, drop, d0, d1) : 0;
    if (np < EVAL_MIN_PREFIX) np = 0;
    if (np > 0) {
        Seg g = {.seq = 0, .tok = r->pairs[off[d0]].ctx + drop[d0], .n = np, .want_from = np};
        if ((s = runner_add(r, &g)) != STATUS_OK || (s = runner_flush(r)) != STATUS_OK) return s;
        for (int d = d0 + 1; d < d1; d++)
            infer_seq_copy(&r->st, d - d0, 0, np);
    }
    for (int d = d0; d < d1; d++) {
        const EvalPair *p0 = &r->pairs[off[d]];
        int n = p0->n_ctx - drop[d] - np;
        Seg g = {.seq = d - d0,
                 .tok = p0->ctx + drop[d] + np,
                 .n = n,
                 .want_from = n - 1,
                 .req_lo = off[d],
                 .req_hi = off[d + 1],
                 .cont_start = 0};
        if ((s = runner_add(r, &g)) != STATUS_OK) return s;
    }
    if ((s = runner_flush(r)) != STATUS_OK) return s;
    int next = d1 - d0; // first free sequence
    for (int d = d0; d < d1; d++) {
        int n_ctx = r->pairs[off[d]].n_ctx - drop[d];
        bool own_used = false;
        for (int c = 0; c < t->docs[d].n_choices; c++) {
            int64_t q = off[d] + c;
            const EvalPair *p = &r->pairs[q];
            if (p->n_cont < 2) continue; // the context's last row already scored it
            int seq = d - d0;
            if (own_used) // the context's own sequence takes the first choice; copies the rest
                infer_seq_copy(&r->st, seq = next++, d - d0, n_ctx);
            own_used = true;
            Seg g = {.seq = seq,
                     .tok = p->cont,
                     .n = p->n_cont - 1,
                     .want_from = 0,
                     .req_lo = q,
                     .req_hi = q + 1,
                     .cont_start = 1};
            if ((s = runner_add(r, &g)) != STATUS_OK) return s;
        }
    }
    return runner_flush(r);
}

// Independent requests [q0, q1) (WinoGrande): ctx + cont[:-1] each in its own sequence.
static Status score_independent(Runner *r, const int *drop_req, int64_t q0, int64_t q1,
                                int32_t **scratch) {
    Status s;
    for (int64_t q = q0; q < q1; q++) {
        const EvalPair *p = &r->pairs[q];
        int seq = (int)(q - q0);
        infer_seq_truncate(&r->st, seq, 0);
        if (p->n_cont == 0) continue;
        int nc = p->n_ctx - drop_req[q];
        int32_t *buf = scratch[seq];
        memcpy(buf, p->ctx + drop_req[q], (size_t)nc * sizeof(int32_t));
        memcpy(buf + nc, p->cont, (size_t)(p->n_cont - 1) * sizeof(int32_t));
        Seg g = {.seq = seq,
                 .tok = buf,
                 .n = nc + p->n_cont - 1,
                 .want_from = nc - 1,
                 .req_lo = q,
                 .req_hi = q + 1,
                 .cont_start = 0};
        if ((s = runner_add(r, &g)) != STATUS_OK) return s;
    }
    return runner_flush(r);
}

Status eval_task(const Model *m, const Task *t, const EvalOptions *o, McDocScore *scores,
                 double *lls_out, bool *greedy_out, Progress *prog, EvalStats *stats) {
    if (!m->tok) return fail(STATUS_ERR_ARG, "model '%s' has no tokenizer", m->source);
    if (o->batch < 1) return fail(STATUS_ERR_ARG, "--batch must be >= 1");
    int window = eval_window(m, o);
    // 1. tokenize every request (lm-eval's _encode_pair)
    int64_t *off = xmalloc((size_t)(t->n_docs + 1) * sizeof(int64_t));
    off[0] = 0;
    for (int d = 0; d < t->n_docs; d++)
        off[d + 1] = off[d] + t->docs[d].n_choices;
    int64_t n_req = off[t->n_docs];
    Runner r;
    memset(&r, 0, sizeof(r));
    EvalPair *pairs = xcalloc((size_t)(n_req > 0 ? n_req : 1), sizeof(EvalPair));
    int *drop = xcalloc((size_t)(t->n_docs > 0 ? t->n_docs : 1), sizeof(int));
    int *drop_req = xcalloc((size_t)(n_req > 0 ? n_req : 1), sizeof(int));
    int32_t **scratch = NULL;
    Status s = STATUS_OK;
    int max_len = 1, max_cont = 1, max_choices = 1, max_forks = 1;
    bool any_indep = false;
    for (int d = 0; d < t->n_docs && s == STATUS_OK; d++) {
        const TaskDoc *doc = &t->docs[d];
        for (int c = 0; c < doc->n_choices && s == STATUS_OK; c++)
            s = eval_encode_pair(&pairs[off[d] + c], m->tok, doc->contexts[c],
                                 doc->continuations[c], o->add_bos);
        if (s != STATUS_OK) break;
        max_choices = MAX(max_choices, doc->n_choices);
        int mc = doc_max_cont(pairs, off[d], off[d + 1]);
        max_cont = MAX(max_cont, mc);
        bool shared = doc->shared_context;
        for (int c = 1; shared && c < doc->n_choices; c++) // same context -> same tokens
            shared = pairs[off[d] + c].n_ctx == pairs[off[d]].n_ctx;
        if (shared) {
            int n_ctx = pairs[off[d]].n_ctx;
            drop[d] = window_drop(n_ctx, MAX(mc, 1), window);
            if (n_ctx == 0) { // whitespace-only context (its spaces moved to the choices)
                s = fail(STATUS_ERR_UNSUPPORTED, "%s document %d: context has no tokens",
                         task_name(t->kind), doc->index);
                break;
            }
            if (drop[d] < 0) {
                s = fail(STATUS_ERR_UNSUPPORTED,
                         "%s document %d: continuation of %d tokens "
                         "does not fit the %d-token window after its context",
                         task_name(t->kind), doc->index, mc, window);
                break;
            }
            max_len = MAX(max_len, n_ctx - drop[d] + mc);
            int forks = 0; // choices that need their own copy of the context
            for (int c = 0; c < doc->n_choices; c++)
                forks += pairs[off[d] + c].n_cont >= 2;
            max_forks = MAX(max_forks, forks);
        } else {
            any_indep = true;
            drop[d] = -1; // marks the document as independent
            for (int c = 0; c < doc->n_choices && s == STATUS_OK; c++) {
                const EvalPair *p = &pairs[off[d] + c];
                int dr = window_drop(p->n_ctx, MAX(p->n_cont, 1), window);
                if (dr < 0 || p->n_ctx == 0)
                    s = fail(STATUS_ERR_UNSUPPORTED,
                             "%s document %d: request has an empty context or does not fit "
                             "the %d-token window",
                             task_name(t->kind), doc->index, window);
                drop_req[off[d] + c] = dr;
                max_len = MAX(max_len, p->n_ctx - dr + p->n_cont);
            }
        }
    }
    // 2. the engine: per document one KV sequence per choice that needs one (a shared
    // context's copies, or independent requests); --batch documents at a time, fewer when
    // their caches would pass EVAL_KV_BUDGET
    int per_doc = MAX(max_forks, any_indep ? max_choices : 1);
    const LlamaConfig *cf = &m->cfg;
    double seq_bytes =
        2.0 * cf->n_layers * cf->n_kv_heads * cf->head_dim * sizeof(float) * (double)(max_len + 33);
    int docs = (int)MIN((double)o->batch, MAX(1.0, EVAL_KV_BUDGET / (seq_bytes * per_doc)));
    int n_seqs = docs * per_doc;
    if (s == STATUS_OK) {
        InferOptions io = infer_options_default();
        io.max_seqs = n_seqs;
        io.max_ctx = max_len + 1;
        r.m = m;
        r.V = m->cfg.vocab_size;
        r.pairs = pairs;
        r.ll = xcalloc((size_t)(n_req > 0 ? n_req : 1), sizeof(double));
        r.greedy = xmalloc((size_t)(n_req > 0 ? n_req : 1) * sizeof(bool));
        for (int64_t q = 0; q < n_req; q++)
            r.greedy[q] = true; // all() of no tokens is True
        r.cap_rows = MAX(max_cont + docs, EVAL_LOGITS_BUDGET / ((int64_t)r.V * 4));
        r.logits = malloc((size_t)r.cap_rows * (size_t)r.V * sizeof(float));
        r.lse = xmalloc((size_t)r.cap_rows * sizeof(double));
        r.argmax = xmalloc((size_t)r.cap_rows * sizeof(int));
        if (!r.logits)
            s = fail(STATUS_ERR_NOMEM, "cannot allocate %lld logit rows", (long long)r.cap_rows);
        if (s == STATUS_OK) s = infer_init(&r.st, m, &io);
    }
    if (s == STATUS_OK && any_indep) {
        scratch = xcalloc((size_t)n_seqs, sizeof(int32_t *));
        for (int i = 0; i < n_seqs; i++)
            scratch[i] = xmalloc((size_t)(max_len + 1) * sizeof(int32_t));
    }
    // 3. the cache: documents whose every request it holds are done
    uint64_t *keys = NULL;
    bool *done = xcalloc((size_t)(t->n_docs > 0 ? t->n_docs : 1), sizeof(bool));
    if (s == STATUS_OK && o->cache) {
        keys = xmalloc((size_t)(n_req > 0 ? n_req : 1) * sizeof(uint64_t));
        for (int dd = 0; dd < t->n_docs; dd++) {
            bool all = true;
            for (int64_t q = off[dd]; q < off[dd + 1]; q++) {
                const EvalPair *p = &pairs[q];
                int dr = drop[dd] >= 0 ? drop[dd] : drop_req[q];
                keys[q] = eval_cache_key(p->ctx + dr, p->n_ctx - dr, p->cont, p->n_cont);
                all = all && eval_cache_get(o->cache, keys[q], &r.ll[q], &r.greedy[q]);
            }
            // a document is taken whole or run whole: the runner adds to ll[q] from 0
            for (int64_t q = off[dd]; !all && q < off[dd + 1]; q++) {
                r.ll[q] = 0.0;
                r.greedy[q] = true;
            }
            done[dd] = all;
            r.stats.cached += all;
        }
    }
    // 4. batches of consecutive documents of one kind, not done
    int d = 0;
    while (s == STATUS_OK && d < t->n_docs) {
        if (done[d]) {
            d++;
            continue;
        }
        bool indep = drop[d] < 0;
        int per = docs;
        int d1 = d + 1;
        while (d1 < t->n_docs && d1 - d < per && (drop[d1] < 0) == indep && !done[d1])
            d1++;
        s = indep ? score_independent(&r, drop_req, off[d], off[d1], scratch)
                  : score_shared(&r, t, off, drop, d, d1);
        for (int64_t q = off[d]; s == STATUS_OK && keys && q < off[d1]; q++)
            if (r.ll[q] == r.ll[q]) // (a NaN is not worth keeping)
                s = eval_cache_put(o->cache, keys[q], r.ll[q], r.greedy[q]);
        if (s == STATUS_OK && keys) s = eval_cache_flush(o->cache);
        d = d1;
        if (prog) progress_update(prog, d, NULL);
    }
    free(keys);
    free(done);
    // 5. lm-eval's per-document metrics
    for (int i = 0; s == STATUS_OK && i < t->n_docs; i++) {
        const TaskDoc *doc = &t->docs[i];
        mc_score_doc(&scores[i], r.ll + off[i], r.greedy + off[i], doc->choices, doc->n_choices,
                     doc->gold);
    }
    if (s == STATUS_OK && lls_out) memcpy(lls_out, r.ll, (size_t)n_req * sizeof(double));
    if (s == STATUS_OK && stats) *stats = r.stats;
    if (s == STATUS_OK && greedy_out) memcpy(greedy_out, r.greedy, (size_t)n_req * sizeof(bool));
    if (scratch)
        for (int i = 0; i < n_seqs; i++)
            free(scratch[i]);
    free(scratch);
    for (int64_t q = 0; q < n_req; q++)
        eval_pair_release(&pairs[q]);
    free(pairs);
    free(drop);
    free(drop_req);
    free(off);
    free(r.ll);
    free(r.greedy);
    runner_release(&r);
    return s == STATUS_OK ? s : fail_context(s, "eval '%s'", task_name(t->kind));
}
