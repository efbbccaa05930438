/*
 * calib.c - calibration / held-out token windows (see calib.h).
 */
#include "quant/calib.h"

#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "core/fileio.h"
#include "core/rng.h"
#include "train/data.h"

CalibOptions calib_options_default(void) {
    return (CalibOptions){.n_seqs = 128, .seq_len = 2048, .seed = 0};
}

typedef struct {
    int32_t *ids;
    int64_t n, cap;
} IdBuf;

static void idbuf_push(IdBuf *b, const int32_t *ids, int64_t n) {
    if (b->n + n > b->cap) {
        while (b->n + n > b->cap)
            b->cap = b->cap ? 2 * b->cap : 4096;
        b->ids = xrealloc(b->ids, (size_t)b->cap * sizeof *b->ids);
    }
    memcpy(b->ids + b->n, ids, (size_t)n * sizeof *ids);
    b->n += n;
}

// Tokenizes one document (BOS per the tokenizer's default) and appends it and EOS.
static Status add_doc(IdBuf *b, const Tokenizer *tok, const char *text, size_t len) {
    int32_t *ids;
    int n;
    Status s = tokenizer_encode(tok, text, len, TOKENIZE_HF, &ids, &n); // tokenizer(text)
    if (s != STATUS_OK) return s;
    idbuf_push(b, ids, n);
    free(ids);
    int32_t eos = tokenizer_eos_id(tok);
    if (eos >= 0) idbuf_push(b, &eos, 1);
    return STATUS_OK;
}

static bool ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

static Status stream_jsonl(IdBuf *b, const char *path, const Tokenizer *tok) {
    AlpacaSet set;
    Status s = alpaca_read_jsonl(&set, path, false);
    if (s != STATUS_OK) return s;
    for (int i = 0; i < set.n && s == STATUS_OK; i++) {
        char *prompt;
        s = data_render_prompt(&set.recs[i], tok, PROMPT_ALPACA, &prompt);
        if (s != STATUS_OK) break;
        size_t lp = strlen(prompt), lo = strlen(set.recs[i].output);
        char *full = xmalloc(lp + lo + 1);
        memcpy(full, prompt, lp);
        memcpy(full + lp, set.recs[i].output, lo + 1);
        s = add_doc(b, tok, full, lp + lo);
        free(full);
        free(prompt);
    }
    alpaca_set_release(&set);
    return s;
}

// Plain text: documents are separated by one or more blank lines.
static Status stream_text(IdBuf *b, const char *path, const Tokenizer *tok) {
    char *text;
    size_t len;
    Status s = file_read_all(path, &text, &len);
    if (s != STATUS_OK) return s;
    size_t i = 0;
    while (i < len && s == STATUS_OK) {
        while (i < len && (text[i] == '\n' || text[i] == '\r'))
            i++;
        size_t start = i;
        // a document ends at "\n\n" (or "\n\r\n") or at the end of the file
        while (i < len && !(text[i] == '\n' && i + 1 < len &&
                            (text[i + 1] == '\n' ||
                             (text[i + 1] == '\r' && i + 2 < len && text[i + 2] == '\n'))))
            i++;
        if (i > start) s = add_doc(b, tok, text + start, i - start);
    }
    free(text);
    return s;
}

Status calib_read_stream(const char *path, const Tokenizer *tok, int32_t **ids, int64_t *n) {
    *ids = NULL;
    *n = 0;
    if (!tok) return fail(STATUS_ERR_ARG, "calibration data '%s' needs a tokenizer", path);
    if (!path_is_file(path)) return fail(STATUS_ERR_IO, "cannot open calibration data '%s'", path);
    IdBuf b = {0};
    Status s = ends_with(path, ".jsonl") ? stream_jsonl(&b, path, tok) : stream_text(&b, path, tok);
    if (s == STATUS_OK && b.n == 0) s = fail(STATUS_ERR_FORMAT, "'%s' holds no text", path);
    if (s != STATUS_OK) {
        free(b.ids);
        return s;
    }
    *ids = b.ids;
    *n = b.n;
    return STATUS_OK;
}

Status calib_from_stream(CalibSet *c, const int32_t *ids, int64_t n, const CalibOptions *o,
                         bool sample, const char *what) {
    memset(c, 0, sizeof *c);
    if (o->n_seqs < 1 || o->seq_len < 1)
        return fail(STATUS_ERR_ARG, "bad calibration size: %d sequences of %d tokens", o->n_seqs,
                    o->seq_len);
    int64_t L = o->seq_len, have = n / L;
    if (have < o->n_seqs)
        return fail(STATUS_ERR_FORMAT,
                    "'%s' is too short: it has %lld tokens, but %d sequences of %d tokens need "
                    "%lld (use fewer or shorter sequences, or more data)",
                    what, (long long)n, o->n_seqs, o->seq_len, (long long)o->n_seqs * L);
    c->tokens = malloc((size_t)o->n_seqs * (size_t)L * sizeof *c->tokens);
    if (!c->tokens) return fail(STATUS_ERR_NOMEM, "cannot allocate calibration tokens");
    c->n_seqs = o->n_seqs;
    c->seq_len = o->seq_len;
    c->n_stream = n;
    // window choice: a seeded partial Fisher-Yates shuffle of the window indices
    int64_t *win = xmalloc((size_t)have * sizeof *win);
    for (int64_t i = 0; i < have; i++)
        win[i] = i;
    if (sample) {
        Rng r;
        rng_seed(&r, o->seed);
        for (int64_t i = 0; i < o->n_seqs; i++) {
            int64_t j = i + (int64_t)rng_below(&r, (uint64_t)(have - i));
            int64_t t = win[i];
            win[i] = win[j];
            win[j] = t;
        }
    }
    for (int s = 0; s < o->n_seqs; s++)
        memcpy(c->tokens + (size_t)s * (size_t)L, ids + win[s] * L, (size_t)L * sizeof *ids);
    free(win);
    return STATUS_OK;
}

static Status calib_load(CalibSet *c, const char *path, const Tokenizer *tok, const CalibOptions *o,
                         bool sample) {
    memset(c, 0, sizeof *c);
    int32_t *ids;
    int64_t n;
    Status s = calib_read_stream(path, tok, &ids, &n);
    if (s != STATUS_OK) return s;
    s = calib_from_stream(c, ids, n, o, sample, path);
    free(ids);
    return s;
}

Status calib_sample(CalibSet *c, const char *path, const Tokenizer *tok, const CalibOptions *o) {
    return calib_load(c, path, tok, o, true);
}

Status calib_chunks(CalibSet *c, const char *path, const Tokenizer *tok, const CalibOptions *o) {
    return calib_load(c, path, tok, o, false);
}

void calib_release(CalibSet *c) {
    free(c->tokens);
    memset(c, 0, sizeof *c);
}
