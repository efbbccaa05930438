/*
 * teacher_cache.c - top-k teacher log-prob cache (see teacher_cache.h).
 */
#include "train/teacher_cache.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "core/log.h"
#include "model/safetensors.h"
#include "train/llama_train.h"
#include "train/trainer.h"

// Number of loss rows of an example seen through a window of T tokens.
static int64_t example_rows(const TrainExample *ex, int T) {
    int len = MIN(ex->len, T);
    int64_t n = 0;
    for (int t = 0; t + 1 < len; t++)
        n += ex->mask[t + 1] != 0;
    return n;
}

// Top-K of a row (descending), written to ids/logp as log softmax(x / t_gen).
static void row_topk(int32_t *ids, float *logp, const float *x, int V, int K, double inv_t) {
    double mx = -INFINITY, s = 0;
    for (int i = 0; i < V; i++)
        mx = fmax(mx, x[i] * inv_t);
    for (int i = 0; i < V; i++)
        s += exp(x[i] * inv_t - mx);
    double lse = mx + log(s);
    int n = 0;
    for (int i = 0; i < V; i++) {
        float v = x[i];
        if (n == K && v <= x[ids[K - 1]]) continue; // ties keep the lower id
        int j = n < K ? n++ : K - 1;
        while (j > 0 && x[ids[j - 1]] < v) {
            ids[j] = ids[j - 1];
            j--;
        }
        ids[j] = i;
    }
    for (int k = 0; k < K; k++)
        logp[k] = (float)(x[ids[k]] * inv_t - lse);
}

// FNV-1a over every example's length and tokens, cut to seq_len as training sees them.
static uint64_t tokens_hash(const TrainSet *ts, int seq_len) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (int e = 0; e < ts->n; e++) {
        const TrainExample *ex = &ts->ex[e];
        int32_t len = MIN(ex->len, seq_len);
        for (int i = -1; i < len; i++) {
            uint32_t v = (uint32_t)(i < 0 ? len : ex->ids[i]);
            for (int b = 0; b < 4; b++) {
                h ^= (v >> (8 * b)) & 0xFF;
                h *= 0x100000001b3ull;
            }
        }
    }
    return h ? h : 1; // 0 means "none recorded"
}

Status teacher_cache_build(TeacherCache *tc, const Model *teacher, const TrainSet *ts, int K,
                           float t_gen, int seq_len, int B) {
    memset(tc, 0, sizeof *tc);
    int V = teacher->cfg.vocab_size;
    if (K < 1 || K > V) return fail(STATUS_ERR_ARG, "top-k %d out of range 1..%d", K, V);
    if (!(t_gen > 0))
        return fail(STATUS_ERR_ARG, "teacher temperature %g must be positive", (double)t_gen);
    tc->K = K;
    tc->t_gen = t_gen;
    tc->vocab_size = V;
    tc->seq_len = seq_len;
    tc->n_examples = ts->n;
    tc->tokens_hash = tokens_hash(ts, seq_len);
    tc->offsets = xmalloc(sizeof(int64_t) * (ts->n + 1));
    tc->offsets[0] = 0;
    for (int e = 0; e < ts->n; e++)
        tc->offsets[e + 1] = tc->offsets[e] + example_rows(&ts->ex[e], seq_len);
    tc->rows = tc->offsets[ts->n];
    tc->ids = malloc(sizeof(int32_t) * (size_t)MAX(tc->rows, 1) * K);
    tc->logp = malloc(sizeof(float) * (size_t)MAX(tc->rows, 1) * K);
    if (!tc->ids || !tc->logp) {
        teacher_cache_release(tc);
        return fail(STATUS_ERR_NOMEM, "cannot allocate a teacher cache of %" PRId64 " x %d",
                    tc->rows, K);
    }
    LlamaTrain lt;
    Status s = llama_train_init_ex(&lt, teacher, B, seq_len, 0, LLAMA_RECOMPUTE_LAYERS); // fwd only
    if (s != STATUS_OK) {
        teacher_cache_release(tc);
        return s;
    }
    int32_t *bids = xmalloc(sizeof(int32_t) * B * seq_len),
            *tg = xmalloc(sizeof(int32_t) * B * seq_len);
    int *idx = xmalloc(sizeof(int) * B);
    for (int e0 = 0; e0 < ts->n && s == STATUS_OK; e0 += B) {
        int nb = MIN(B, ts->n - e0);
        for (int b = 0; b < nb; b++)
            idx[b] = e0 + b;
        trainer_fill_batch(bids, tg, ts, idx, nb, B, seq_len);
        llama_train_set_logit_rows(&lt, tg); // logits of the response rows only, in order
        if ((s = llama_train_forward(&lt, NULL, bids)) != STATUS_OK) break;
        int64_t row = 0;
        for (int b = 0; b < nb; b++) {
            int64_t r = tc->offsets[e0 + b];
            for (int t = 0; t < seq_len; t++) {
                if (tg[(int64_t)b * seq_len + t] == TRAIN_IGNORE_INDEX) continue;
                const float *x = lt.logits + row++ * V;
                row_topk(tc->ids + r * K, tc->logp + r * K, x, V, K, 1.0 / t_gen);
                r++;
            }
            CHECK(r == tc->offsets[e0 + b + 1]);
        }
    }
    free(bids);
    free(tg);
    free(idx);
    llama_train_release(&lt);
    if (s != STATUS_OK) teacher_cache_release(tc);
    return s;
}

void teacher_cache_release(TeacherCache *tc) {
    free(tc->offsets);
    free(tc->ids);
    free(tc->logp);
    memset(tc, 0, sizeof *tc);
}

Status teacher_cache_save(const TeacherCache *tc, const char *path, const char *teacher_name) {
    SafeWriter w;
    safewriter_init(&w);
    int64_t so = tc->n_examples + 1, sk[2] = {tc->rows, tc->K};
    safewriter_add(&w, "offsets", ST_I64, 1, &so, tc->offsets);
    safewriter_add(&w, "ids", ST_I32, 2, sk, tc->ids);
    safewriter_add(&w, "logp", ST_F32, 2, sk, tc->logp);
    char buf[64];
    safewriter_meta(&w, "format", "edgeforge-teacher-cache");
    safewriter_meta(&w, "version", "1");
#define META_INT(key, val)                                                                         \
    snprintf(buf, sizeof buf, "%lld", (long long)(val));                                           \
    safewriter_meta(&w, key, buf)
    META_INT("k", tc->K);
    META_INT("vocab_size", tc->vocab_size);
    META_INT("n_examples", tc->n_examples);
    META_INT("seq_len", tc->seq_len);
#undef META_INT
    snprintf(buf, sizeof buf, "%.9g", (double)tc->t_gen);
    safewriter_meta(&w, "t_gen", buf);
    if (teacher_name) safewriter_meta(&w, "teacher", teacher_name);
    snprintf(buf, sizeof buf, "%016llx", (unsigned long long)tc->tokens_hash);
    if (tc->tokens_hash) safewriter_meta(&w, "tokens_fnv1a64", buf);
    Status s = safewriter_write(&w, path);
    safewriter_release(&w);
    return s;
}

static long long meta_int(const SafeTensors *st, const char *key, bool *ok) {
    const char *v = safetensors_meta(st, key);
    char *end;
    long long x = v ? strtoll(v, &end, 10) : 0;
    if (!v || *end || x < 0) *ok = false;
    return x;
}

Status teacher_cache_load(TeacherCache *tc, const char *path) {
    memset(tc, 0, sizeof *tc);
    SafeTensors st;
    Status s = safetensors_open(&st, path);
    if (s != STATUS_OK) return s;
    bool ok = true;
    const char *fmt = safetensors_meta(&st, "format"), *tg = safetensors_meta(&st, "t_gen");
    if (!fmt || strcmp(fmt, "edgeforge-teacher-cache") != 0) ok = false;
    tc->K = (int)meta_int(&st, "k", &ok);
    tc->vocab_size = (int)meta_int(&st, "vocab_size", &ok);
    tc->n_examples = (int)meta_int(&st, "n_examples", &ok);
    tc->seq_len = (int)meta_int(&st, "seq_len", &ok);
    tc->t_gen = tg ? strtof(tg, NULL) : 0;
    const char *th = safetensors_meta(&st, "tokens_fnv1a64");
    if (th) {
        char *end;
        tc->tokens_hash = strtoull(th, &end, 16);
        if (*end || !tc->tokens_hash || strlen(th) != 16) ok = false;
    }
    const SafeTensor *o = safetensors_find(&st, "offsets"), *ids = safetensors_find(&st, "ids");
    const SafeTensor *lp = safetensors_find(&st, "logp");
    if (!ok || !(tc->t_gen > 0) || tc->K < 1 || !o || !ids || !lp || o->dtype != ST_I64 ||
        ids->dtype != ST_I32 || lp->dtype != ST_F32 || o->ndim != 1 ||
        o->shape[0] != (int64_t)tc->n_examples + 1 || ids->ndim != 2 || ids->shape[1] != tc->K ||
        lp->ndim != 2 || lp->shape[0] != ids->shape[0] || lp->shape[1] != tc->K) {
        safetensors_close(&st);
        memset(tc, 0, sizeof *tc);
        return fail(STATUS_ERR_FORMAT, "'%s' is not a valid edgeforge teacher cache", path);
    }
    tc->rows = ids->shape[0];
    tc->offsets = xmalloc(o->nbytes);
    memcpy(tc->offsets, o->data, o->nbytes);
    tc->ids = malloc((size_t)MAX(ids->nbytes, 1));
    tc->logp = malloc((size_t)MAX(lp->nbytes, 1));
    if (!tc->ids || !tc->logp) {
        safetensors_close(&st);
        teacher_cache_release(tc);
        return fail(STATUS_ERR_NOMEM, "cannot load teacher cache '%s'", path);
    }
    memcpy(tc->ids, ids->data, ids->nbytes);
    memcpy(tc->logp, lp->data, lp->nbytes);
    safetensors_close(&st);
    for (int e = 0; e < tc->n_examples; e++)
        if (tc->offsets[e + 1] < tc->offsets[e]) ok = false;
    if (tc->offsets[0] != 0 || tc->offsets[tc->n_examples] != tc->rows) ok = false;
    for (int64_t i = 0; ok && i < tc->rows * tc->K; i++)
        if (tc->ids[i] < 0 || tc->ids[i] >= tc->vocab_size) ok = false;
    if (!ok) {
        teacher_cache_release(tc);
        return fail(STATUS_ERR_FORMAT, "teacher cache '%s' has inconsistent offsets or ids", path);
    }
    return STATUS_OK;
}

Status teacher_cache_check(const TeacherCache *tc, const TrainSet *ts, int seq_len,
                           int vocab_size) {
    if (tc->vocab_size != vocab_size)
        return fail(STATUS_ERR_ARG, "teacher cache vocabulary (%d) differs from the student's (%d)",
                    tc->vocab_size, vocab_size);
    if (tc->n_examples != ts->n)
        return fail(
            STATUS_ERR_ARG,
            "teacher cache holds %d examples, the data has %d (same data, format and --seq-len?)",
            tc->n_examples, ts->n);
    for (int e = 0; e < ts->n; e++)
        if (tc->offsets[e + 1] - tc->offsets[e] != example_rows(&ts->ex[e], seq_len))
            return fail(STATUS_ERR_ARG,
                        "teacher cache example %d has %" PRId64 " target rows, the data %" PRId64
                        " (cache seq_len %d, run seq_len %d)",
                        e, tc->offsets[e + 1] - tc->offsets[e], example_rows(&ts->ex[e], seq_len),
                        tc->seq_len, seq_len);
    if (!tc->tokens_hash)
        log_warn("teacher cache records no token checksum (written before 2026-11-28): its "
                 "tokens are not compared with the data's");
    else if (tc->tokens_hash != tokens_hash(ts, seq_len))
        return fail(STATUS_ERR_ARG,
                    "teacher cache was made from other tokens than the data gives here (another "
                    "tokenizer, BOS rule, prompt format or data?)");
    return STATUS_OK;
}

void teacher_cache_fill(int32_t *ids, float *logp, const TeacherCache *tc, const TrainSet *ts,
                        const int *idx, int nb, int B, int T) {
    int K = tc->K;
    memset(ids, 0, sizeof(int32_t) * (size_t)B * T * K);
    memset(logp, 0, sizeof(float) * (size_t)B * T * K);
    for (int b = 0; b < nb; b++) {
        const TrainExample *ex = &ts->ex[idx[b]];
        int len = MIN(ex->len, T);
        int64_t r = tc->offsets[idx[b]];
        for (int t = 0; t + 1 < len; t++) {
            if (!ex->mask[t + 1]) continue;
            int64_t row = (int64_t)b * T + t;
            memcpy(ids + row * K, tc->ids + r * K, sizeof(int32_t) * K);
            memcpy(logp + row * K, tc->logp + r * K, sizeof(float) * K);
            r++;
        }
    }
}
