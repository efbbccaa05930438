/*
 * data.c - Alpaca JSONL reading, prompt rendering, tokenization with a
 * response-only loss mask, seeded splits and length-grouped batches.
 */
#include "data.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "core/fileio.h"
#include "core/log.h"
#include "core/rng.h"

/* ---- JSONL ------------------------------------------------------------------ */

static void record_release(AlpacaRecord *r) {
    free(r->instruction);
    free(r->input);
    free(r->output);
}

// Parses one line into *r; returns NULL on success or a static reason.
static const char *parse_record(const char *line, size_t len, AlpacaRecord *r) {
    json_error_t err;
    json_t *o = json_loadb(line, len, 0, &err);
    if (!o) return "invalid JSON";
    const char *why = NULL;
    json_t *ins = json_object_get(o, "instruction"), *inp = json_object_get(o, "input");
    json_t *out = json_object_get(o, "output");
    if (!json_is_object(o))
        why = "not a JSON object";
    else if (!json_is_string(ins))
        why = "missing or non-string \"instruction\"";
    else if (!json_is_string(out))
        why = "missing or non-string \"output\"";
    else if (inp && !json_is_string(inp) && !json_is_null(inp))
        why = "non-string \"input\"";
    if (!why) {
        r->instruction = xstrdup(json_string_value(ins));
        r->input = xstrdup(json_is_string(inp) ? json_string_value(inp) : "");
        r->output = xstrdup(json_string_value(out));
    }
    json_decref(o);
    return why;
}

Status alpaca_read_jsonl(AlpacaSet *set, const char *path, bool skip_bad) {
    memset(set, 0, sizeof *set);
    char *buf;
    size_t size;
    Status s = file_read_all(path, &buf, &size);
    if (s != STATUS_OK) return s;
    int cap = 0, line_no = 0;
    for (size_t pos = 0; pos < size;) {
        const char *line = buf + pos;
        const char *nl = memchr(line, '\n', size - pos);
        size_t len = nl ? (size_t)(nl - line) : size - pos;
        pos += len + (nl ? 1 : 0);
        line_no++;
        size_t k = 0;
        while (k < len && (line[k] == ' ' || line[k] == '\t' || line[k] == '\r'))
            k++;
        if (k == len) continue; // blank line
        AlpacaRecord r = {0};
        const char *why = parse_record(line, len, &r);
        if (why) {
            if (!skip_bad) {
                s = fail(STATUS_ERR_FORMAT, "%s:%d: %s", path, line_no, why);
                break;
            }
            log_warn("%s:%d: %s (line skipped)", path, line_no, why);
            set->n_skipped++;
            continue;
        }
        r.line = line_no;
        if (set->n == cap) {
            cap = cap ? 2 * cap : 256;
            set->recs = xrealloc(set->recs, (size_t)cap * sizeof *set->recs);
        }
        set->recs[set->n++] = r;
    }
    free(buf);
    if (s == STATUS_OK && set->n == 0)
        s = fail(STATUS_ERR_FORMAT, "no usable records in '%s' (%d malformed lines skipped)", path,
                 set->n_skipped);
    if (s != STATUS_OK) alpaca_set_release(set);
    return s;
}

void alpaca_set_release(AlpacaSet *set) {
    for (int i = 0; i < set->n; i++)
        record_release(&set->recs[i]);
    free(set->recs);
    memset(set, 0, sizeof *set);
}

/* ---- prompts and tokens ------------------------------------------------------ */

Status data_render_prompt(const AlpacaRecord *r, const Tokenizer *tok, PromptFormat fmt,
                          char **out) {
    if (fmt == PROMPT_ALPACA) {
        *out = alpaca_render(r->instruction, r->input);
        return STATUS_OK;
    }
    // chat: the instruction, and its input after a blank line, as one user turn
    size_t n = strlen(r->instruction) + strlen(r->input) + 3;
    char *user = xmalloc(n);
    snprintf(user, n, "%s%s%s", r->instruction, r->input[0] ? "\n\n" : "", r->input);
    ChatMessage msg = {"user", user};
    Status s = chat_render(tok, CHAT_TEMPLATE_AUTO, &msg, 1, true, out);
    free(user);
    return s;
}

static Status build_example(TrainExample *ex, const AlpacaRecord *r, const Tokenizer *tok,
                            PromptFormat fmt, int max_len, bool add_special) {
    char *prompt = NULL, *full = NULL;
    int32_t *pids = NULL, *ids = NULL;
    int np = 0, n = 0;
    // special-token text is parsed as Hugging Face's tokenizer(text) does; BOS only where
    // the tokenizer's files add one, and never to a chat rendering (until 2026-11-28 BOS was
    // always prepended: SmolLM2 examples began with a stray <|im_start|>, Llama 3 chat
    // examples with two <|begin_of_text|>)
    int flags = (fmt != PROMPT_CHAT && add_special) ? TOKENIZE_HF : TOKENIZE_PARSE_SPECIAL;
    Status s = data_render_prompt(r, tok, fmt, &prompt);
    if (s != STATUS_OK) return s;
    size_t lp = strlen(prompt), lo = strlen(r->output);
    full = xmalloc(lp + lo + 1);
    memcpy(full, prompt, lp);
    memcpy(full + lp, r->output, lo + 1);
    if ((s = tokenizer_encode(tok, prompt, lp, flags, &pids, &np)) != STATUS_OK) goto out;
    if ((s = tokenizer_encode(tok, full, lp + lo, flags, &ids, &n)) != STATUS_OK) goto out;
    int32_t eos = tokenizer_eos_id(tok);
    ex->ids = xmalloc((size_t)(n + 1) * sizeof *ex->ids);
    memcpy(ex->ids, ids, (size_t)n * sizeof *ids);
    if (eos >= 0) ex->ids[n++] = eos; // the model learns to stop after the response
    ex->len = MIN(n, max_len);
    ex->mask = xcalloc((size_t)(ex->len ? ex->len : 1), 1);
    ex->n_target = 0;
    for (int t = np; t < ex->len; t++) {
        ex->mask[t] = 1;
        ex->n_target++;
    }
out:
    free(prompt);
    free(full);
    free(pids);
    free(ids);
    return s;
}

Status trainset_build(TrainSet *ts, const AlpacaSet *set, const Tokenizer *tok, PromptFormat fmt,
                      int max_len, bool add_special) {
    memset(ts, 0, sizeof *ts);
    if (max_len < 2)
        return fail(STATUS_ERR_ARG, "maximum sequence length %d is too short", max_len);
    ts->ex = xcalloc((size_t)set->n, sizeof *ts->ex);
    for (int i = 0; i < set->n; i++) {
        TrainExample ex = {0};
        Status s = build_example(&ex, &set->recs[i], tok, fmt, max_len, add_special);
        if (s != STATUS_OK) {
            trainset_release(ts);
            return fail_context(s, "record on line %d", set->recs[i].line);
        }
        if (ex.n_target == 0) { // prompt alone fills the window: nothing to learn
            free(ex.ids);
            free(ex.mask);
            ts->n_dropped++;
            continue;
        }
        ex.record = i;
        ts->ex[ts->n++] = ex;
    }
    if (ts->n_dropped)
        log_warn("%d of %d records dropped: their prompt fills the %d-token window", ts->n_dropped,
                 set->n, max_len);
    if (ts->n == 0) {
        trainset_release(ts);
        return fail(STATUS_ERR_FORMAT,
                    "no trainable examples: every prompt is longer than %d tokens", max_len);
    }
    return STATUS_OK;
}

void trainset_release(TrainSet *ts) {
    for (int i = 0; i < ts->n; i++) {
        free(ts->ex[i].ids);
        free(ts->ex[i].mask);
    }
    free(ts->ex);
    memset(ts, 0, sizeof *ts);
}

/* ---- split and batches -------------------------------------------------------- */

static void shuffle_ints(int *a, int n, Rng *r) {
    for (int i = n - 1; i > 0; i--) {
        int j = (int)rng_below(r, (uint64_t)i + 1);
        int t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

void data_split(DataSplit *sp, int n, double val_frac, uint64_t seed) {
    memset(sp, 0, sizeof *sp);
    int *perm = xmalloc((size_t)(n ? n : 1) * sizeof *perm);
    for (int i = 0; i < n; i++)
        perm[i] = i;
    Rng r;
    rng_seed(&r, seed);
    shuffle_ints(perm, n, &r);
    int nv = (int)(val_frac * n + 0.5);
    if (val_frac > 0 && nv == 0 && n >= 2) nv = 1;
    if (nv >= n) nv = n > 1 ? n - 1 : 0;
    sp->n_val = nv;
    sp->n_train = n - nv;
    sp->val = xmalloc((size_t)(nv ? nv : 1) * sizeof *sp->val);
    sp->train = xmalloc((size_t)(sp->n_train ? sp->n_train : 1) * sizeof *sp->train);
    memcpy(sp->val, perm, (size_t)nv * sizeof *perm);
    memcpy(sp->train, perm + nv, (size_t)sp->n_train * sizeof *perm);
    qsort(sp->val, (size_t)nv, sizeof *sp->val, cmp_int);
    qsort(sp->train, (size_t)sp->n_train, sizeof *sp->train, cmp_int);
    free(perm);
}

void data_split_release(DataSplit *sp) {
    free(sp->train);
    free(sp->val);
    memset(sp, 0, sizeof *sp);
}

// qsort_r comparator: example indices by length, longest first (ties by index).
static int cmp_len_desc(const void *a, const void *b, void *ctx) {
    const TrainSet *ts = ctx;
    int x = *(const int *)a, y = *(const int *)b;
    int lx = ts->ex[x].len, ly = ts->ex[y].len;
    if (lx != ly) return ly - lx;
    return (x > y) - (x < y);
}

int data_length_grouped_batches(const TrainSet *ts, const int *idx, int n, int batch,
                                int group_mult, uint64_t seed, int *order, int *starts) {
    CHECK(batch > 0 && group_mult > 0);
    Rng r;
    rng_seed(&r, seed);
    memcpy(order, idx, (size_t)n * sizeof *order);
    shuffle_ints(order, n, &r);
    int mega = batch * group_mult;
    for (int s = 0; s < n; s += mega)
        qsort_r(order + s, (size_t)MIN(mega, n - s), sizeof *order, cmp_len_desc, (void *)ts);
    int nb = (n + batch - 1) / batch;
    // shuffle the order of the batches (not their contents)
    int *bperm = xmalloc((size_t)(nb ? nb : 1) * sizeof *bperm);
    for (int b = 0; b < nb; b++)
        bperm[b] = b;
    shuffle_ints(bperm, nb, &r);
    int *tmp = xmalloc((size_t)(n ? n : 1) * sizeof *tmp);
    int k = 0;
    for (int b = 0; b < nb; b++) {
        int s0 = bperm[b] * batch, s1 = MIN(n, s0 + batch);
        starts[b] = k;
        for (int i = s0; i < s1; i++)
            tmp[k++] = order[i];
    }
    starts[nb] = k;
    memcpy(order, tmp, (size_t)n * sizeof *order);
    free(tmp);
    free(bperm);
    return nb;
}
