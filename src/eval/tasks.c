/*
 * tasks.c - readers for the original files of the 8 benchmarks and lm-eval v0.4's
 * rendering of each (reference.md §9.3; YAMLs of lm-evaluation-harness 0.4.9.1).
 *
 * Checked against lm-eval's own task code on >= 50 documents per task
 * (tests/fixtures/eval/tasks_render.json, tools/gen_eval_fixtures.py).
 */
#include "eval/tasks.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "core/strbuf.h"
#include "core/fileio.h"

/* ---- string pool: every rendered string of a task lives here ------------------------ */

#define POOL_CHUNK (1u << 20)

struct TaskPool {
    char **chunks;
    int n_chunks, cap_chunks;
    size_t used, size; // in the last chunk
};

static const char *pool_strndup(TaskPool *p, const char *s, size_t n) {
    if (p->n_chunks == 0 || p->used + n + 1 > p->size) {
        size_t sz = n + 1 > POOL_CHUNK ? n + 1 : POOL_CHUNK;
        if (p->n_chunks == p->cap_chunks) {
            p->cap_chunks = p->cap_chunks ? 2 * p->cap_chunks : 16;
            p->chunks = xrealloc(p->chunks, (size_t)p->cap_chunks * sizeof(char *));
        }
        p->chunks[p->n_chunks++] = xmalloc(sz);
        p->used = 0;
        p->size = sz;
    }
    char *d = p->chunks[p->n_chunks - 1] + p->used;
    memcpy(d, s, n);
    d[n] = 0;
    p->used += n + 1;
    return d;
}

static const char *pool_strdup(TaskPool *p, const char *s) { return pool_strndup(p, s, strlen(s)); }

static void pool_free(TaskPool *p) {
    if (!p) return;
    for (int i = 0; i < p->n_chunks; i++)
        free(p->chunks[i]);
    free(p->chunks);
    free(p);
}

/* ---- a growable string buffer ---------------------------------------------------- */

/* ---- UTF-8 and Python string semantics ------------------------------------------- */

// Decodes one code point at s (n bytes left); *len = bytes used. Invalid bytes decode as
// themselves (one byte), so the functions below never lose data.
static uint32_t utf8_next(const unsigned char *s, size_t n, int *len) {
    uint32_t c = s[0];
    int k = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (k == 0 || (size_t)k > n) {
        *len = 1;
        return c;
    }
    if (k == 1) {
        *len = 1;
        return c;
    }
    uint32_t v = c & (0x7f >> k);
    for (int i = 1; i < k; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            *len = 1;
            return c;
        }
        v = (v << 6) | (s[i] & 0x3f);
    }
    *len = k;
    return v;
}

static void utf8_put(StrBuf *b, uint32_t c) {
    char t[4];
    size_t n;
    if (c < 0x80)
        t[0] = (char)c, n = 1;
    else if (c < 0x800)
        t[0] = (char)(0xc0 | (c >> 6)), t[1] = (char)(0x80 | (c & 0x3f)), n = 2;
    else if (c < 0x10000)
        t[0] = (char)(0xe0 | (c >> 12)), t[1] = (char)(0x80 | ((c >> 6) & 0x3f)),
        t[2] = (char)(0x80 | (c & 0x3f)), n = 3;
    else
        t[0] = (char)(0xf0 | (c >> 18)), t[1] = (char)(0x80 | ((c >> 12) & 0x3f)),
        t[2] = (char)(0x80 | ((c >> 6) & 0x3f)), t[3] = (char)(0x80 | (c & 0x3f)), n = 4;
    strbuf_put(b, t, n);
}

// Python str.isspace(): bidi classes WS, B, S and category Zs.
static bool py_isspace(uint32_t c) {
    return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
           c == 0x202f || c == 0x205f || c == 0x3000;
}

// Lower/upper case for ASCII, Latin-1, Latin Extended-A and basic Cyrillic (code points
// whose mapping is one code point; anything else maps to itself).
static uint32_t py_lower(uint32_t c) {
    if (c >= 'A' && c <= 'Z') return c + 32;
    if (c >= 0xc0 && c <= 0xde && c != 0xd7) return c + 32;
    if ((c >= 0x100 && c <= 0x137) || (c >= 0x14a && c <= 0x177)) return c | 1;
    if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17e)) return (c & 1) ? c + 1 : c;
    if (c == 0x178) return 0xff;
    if (c >= 0x410 && c <= 0x42f) return c + 32;
    if (c >= 0x400 && c <= 0x40f) return c + 80;
    return c;
}

static uint32_t py_upper(uint32_t c) {
    if (c >= 'a' && c <= 'z') return c - 32;
    if (c >= 0xe0 && c <= 0xfe && c != 0xf7) return c - 32;
    if (c == 0xff) return 0x178;
    if (c == 0xb5) return 0x39c;
    if ((c >= 0x100 && c <= 0x137) || (c >= 0x14a && c <= 0x177)) return c & ~1u;
    if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17e)) return (c & 1) ? c : c - 1;
    if (c == 0x131) return 'I';
    if (c == 0x17f) return 'S';
    if (c >= 0x430 && c <= 0x44f) return c - 32;
    if (c >= 0x450 && c <= 0x45f) return c - 80;
    return c;
}

// [*b, *e) = s without leading/trailing Python whitespace.
static void py_strip_range(const char *s, size_t n, size_t *b, size_t *e) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        int k;
        uint32_t c = utf8_next(u + i, n - i, &k);
        if (!py_isspace(c)) break;
        i += (size_t)k;
    }
    size_t end = i, j = i;
    while (j < n) {
        int k;
        uint32_t c = utf8_next(u + j, n - j, &k);
        j += (size_t)k;
        if (!py_isspace(c)) end = j;
    }
    *b = i;
    *e = end;
}

size_t py_rstrip_len(const char *s, size_t n) {
    size_t b, e;
    py_strip_range(s, n, &b, &e);
    if (b == e) return 0; // all whitespace
    return e;
}

char *py_strip(const char *s) {
    size_t b, e;
    py_strip_range(s, strlen(s), &b, &e);
    StrBuf out = {0};
    strbuf_put(&out, s + b, e - b);
    return strbuf_take(&out);
}

char *py_capitalize(const char *s) {
    size_t n = strlen(s);
    const unsigned char *u = (const unsigned char *)s;
    StrBuf out = {0};
    strbuf_put(&out, "", 0);
    for (size_t i = 0; i < n;) {
        int k;
        uint32_t c = utf8_next(u + i, n - i, &k);
        if (k == 1 && c >= 0x80)
            strbuf_putc(&out, (char)c); // invalid byte: keep as is
        else
            utf8_put(&out, i == 0 ? py_upper(c) : py_lower(c));
        i += (size_t)k;
    }
    return strbuf_take(&out);
}

int64_t py_len(const char *s) {
    const unsigned char *u = (const unsigned char *)s;
    size_t n = strlen(s);
    int64_t count = 0;
    for (size_t i = 0; i < n;) {
        int k;
        utf8_next(u + i, n - i, &k);
        i += (size_t)k;
        count++;
    }
    return count;
}

// Python text.replace(from, to): all non-overlapping occurrences, left to right.
static char *str_replace_all(const char *s, const char *from, const char *to) {
    StrBuf out = {0};
    strbuf_put(&out, "", 0);
    size_t fl = strlen(from);
    const char *p = s, *q;
    while ((q = strstr(p, from)) != NULL) {
        strbuf_put(&out, p, (size_t)(q - p));
        strbuf_puts(&out, to);
        p = q + fl;
    }
    strbuf_puts(&out, p);
    return strbuf_take(&out);
}

// re.sub(r"\[.*?\]", "", s): '[' then the shortest run of non-newline characters up to a
// ']' ('.' does not match "\n"); a '[' without such a ']' stays.
static char *remove_brackets(const char *s) {
    StrBuf out = {0};
    strbuf_put(&out, "", 0);
    const char *p = s;
    while (*p) {
        if (*p == '[') {
            const char *q = p + 1;
            while (*q && *q != ']' && *q != '\n')
                q++;
            if (*q == ']') {
                p = q + 1;
                continue;
            }
        }
        strbuf_putc(&out, *p++);
    }
    return strbuf_take(&out);
}

char *hellaswag_preprocess(const char *text) {
    char *a = py_strip(text);
    char *b = str_replace_all(a, " [title]", ". ");
    char *c = remove_brackets(b);
    char *d = str_replace_all(c, "  ", " ");
    free(a);
    free(b);
    free(c);
    return d;
}

/* ---- task table --------------------------------------------------------------------- */

static const struct {
    const char *name;
    bool acc_norm;
    double version;
} task_info[TASK_KIND_COUNT] = {
    [TASK_ARC_EASY] = {"arc_easy", true, 1.0},
    [TASK_COMMONSENSE_QA] = {"commonsense_qa", false, NAN}, // YAML has no metadata.version
    [TASK_HELLASWAG] = {"hellaswag", true, 1.0},
    [TASK_MMLU] = {"mmlu", false, 2.0},
    [TASK_OPENBOOKQA] = {"openbookqa", true, 1.0},
    [TASK_PIQA] = {"piqa", true, 1.0},
    [TASK_SOCIAL_IQA] = {"social_iqa", false, 0.0},
    [TASK_WINOGRANDE] = {"winogrande", false, 1.0},
};

static const char *const group_names[MMLU_GROUP_COUNT] = {"stem", "humanities", "social_sciences",
                                                          "other"};

TaskOpts task_opts_default(void) {
    TaskOpts o = {.num_fewshot = 0, .limit = 0};
    return o;
}

const char *task_name(TaskKind k) {
    return (unsigned)k < TASK_KIND_COUNT ? task_info[k].name : "?";
}

int task_kind_parse(const char *name) {
    for (int k = 0; k < TASK_KIND_COUNT; k++)
        if (strcmp(name, task_info[k].name) == 0) return k;
    return -1;
}

bool task_has_acc_norm(TaskKind k) {
    return (unsigned)k < TASK_KIND_COUNT && task_info[k].acc_norm;
}
double task_version(TaskKind k) { return (unsigned)k < TASK_KIND_COUNT ? task_info[k].version : 0; }

const char *mmlu_group_name(MmluGroup g) {
    return (unsigned)g < MMLU_GROUP_COUNT ? group_names[g] : "?";
}

/* ---- loading context ----------------------------------------------------------------- */

typedef struct {
    Task *t;
    const TaskOpts *o;
    int cap_docs;
    const char *path; // file being read (for messages)
    int line;         // 1-based record number
} Loader;

static Status loader_fail(const Loader *L, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static Status loader_fail(const Loader *L, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return fail(STATUS_ERR_FORMAT, "'%s' line %d: %s", L->path, L->line, msg);
}

// Appends a document whose requests are (context, " " + choice_i) for every choice.
static void add_doc_shared(Loader *L, const char *context, const char *const *choices, int n,
                           int gold, int subject, int index) {
    Task *t = L->t;
    if (t->n_docs == L->cap_docs) {
        L->cap_docs = L->cap_docs ? 2 * L->cap_docs : 1024;
        t->docs = xrealloc(t->docs, (size_t)L->cap_docs * sizeof(TaskDoc));
    }
    TaskDoc *d = &t->docs[t->n_docs++];
    memset(d, 0, sizeof(*d));
    d->n_choices = n;
    d->contexts = xmalloc((size_t)n * sizeof(char *));
    d->continuations = xmalloc((size_t)n * sizeof(char *));
    d->choices = xmalloc((size_t)n * sizeof(char *));
    const char *ctx = pool_strdup(t->pool, context);
    StrBuf cont = {0};
    for (int i = 0; i < n; i++) {
        d->contexts[i] = ctx;
        d->choices[i] = pool_strdup(t->pool, choices[i]);
        cont.n = 0;
        strbuf_puts(&cont, " "); // target_delimiter (default " ")
        strbuf_puts(&cont, choices[i]);
        d->continuations[i] = pool_strdup(t->pool, cont.p);
    }
    free(cont.p);
    d->gold = gold;
    d->subject = subject;
    d->index = index;
    d->shared_context = true;
}

static bool over_limit(const Loader *L, int64_t n_in_task) {
    return L->o->limit > 0 && n_in_task >= L->o->limit;
}

/* ---- JSON lines ------------------------------------------------------------------------ */

typedef Status (*RecordFn)(Loader *L, json_t *rec, int index);

// Calls fn for each non-empty line of a JSON-lines file (until the limit).
static Status read_jsonl(Loader *L, const char *path, RecordFn fn) {
    char *data;
    size_t size;
    Status s = file_read_all(path, &data, &size);
    if (s != STATUS_OK) return s;
    L->path = path;
    L->line = 0;
    int index = 0;
    char *p = data, *end = data + size;
    while (p < end && !over_limit(L, index)) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        L->line++;
        size_t b, e;
        py_strip_range(p, n, &b, &e);
        if (e > b) {
            json_error_t err;
            json_t *rec = json_loadb(p, n, 0, &err);
            if (!rec || !json_is_object(rec)) {
                json_decref(rec);
                free(data);
                return loader_fail(L, "not a JSON object (%s)", rec ? "wrong type" : err.text);
            }
            s = fn(L, rec, index++);
            json_decref(rec);
            if (s != STATUS_OK) break;
        }
        p += n + 1;
    }
    free(data);
    if (s == STATUS_OK && index == 0) return fail(STATUS_ERR_FORMAT, "'%s': no records", path);
    return s;
}

static Status get_str(const Loader *L, json_t *obj, const char *key, const char **out) {
    json_t *v = json_object_get(obj, key);
    if (!json_is_string(v)) return loader_fail(L, "missing string field '%s'", key);
    *out = json_string_value(v);
    return STATUS_OK;
}

// question.choices[] -> texts and labels (AI2 layout: ARC, OpenBookQA, CommonsenseQA).
static Status get_ai2_choices(const Loader *L, json_t *rec, const char **stem, int *n,
                              const char ***texts, const char ***labels) {
    json_t *q = json_object_get(rec, "question");
    if (!json_is_object(q)) return loader_fail(L, "missing object field 'question'");
    Status s = get_str(L, q, "stem", stem);
    if (s != STATUS_OK) return s;
    json_t *ch = json_object_get(q, "choices");
    if (!json_is_array(ch) || json_array_size(ch) == 0)
        return loader_fail(L, "missing array field 'question.choices'");
    *n = (int)json_array_size(ch);
    *texts = xmalloc((size_t)*n * sizeof(char *));
    *labels = xmalloc((size_t)*n * sizeof(char *));
    for (int i = 0; i < *n; i++) {
        json_t *c = json_array_get(ch, (size_t)i);
        if ((s = get_str(L, c, "text", &(*texts)[i])) != STATUS_OK ||
            (s = get_str(L, c, "label", &(*labels)[i])) != STATUS_OK) {
            free(*texts);
            free(*labels);
            return s;
        }
    }
    return STATUS_OK;
}

static int find_str(const char *const *list, int n, const char *s) {
    for (int i = 0; i < n; i++)
        if (strcmp(list[i], s) == 0) return i;
    return -1;
}

// ARC-Easy: "Question: {question}\nAnswer:", choices.text, choices.label.index(answerKey).
static Status rec_arc(Loader *L, json_t *rec, int index) {
    const char *stem = NULL, *key = NULL, **texts = NULL, **labels = NULL;
    int n;
    Status s = get_ai2_choices(L, rec, &stem, &n, &texts, &labels);
    if (s != STATUS_OK) return s;
    if ((s = get_str(L, rec, "answerKey", &key)) == STATUS_OK) {
        int gold = find_str(labels, n, key);
        if (gold < 0)
            s = loader_fail(L, "answerKey '%s' is not a choice label", key);
        else {
            StrBuf ctx = {0};
            strbuf_puts(&ctx, "Question: ");
            strbuf_puts(&ctx, stem);
            strbuf_puts(&ctx, "\nAnswer:");
            add_doc_shared(L, ctx.p, texts, n, gold, -1, index);
            free(ctx.p);
        }
    }
    free(texts);
    free(labels);
    return s;
}

// OpenBookQA: question_stem verbatim, choices.text, choices.label.index(answerKey.lstrip()).
static Status rec_obqa(Loader *L, json_t *rec, int index) {
    const char *stem = NULL, *key = NULL, **texts = NULL, **labels = NULL;
    int n;
    Status s = get_ai2_choices(L, rec, &stem, &n, &texts, &labels);
    if (s != STATUS_OK) return s;
    if ((s = get_str(L, rec, "answerKey", &key)) == STATUS_OK) {
        const unsigned char *u = (const unsigned char *)key;
        size_t off = 0, kn = strlen(key);
        while (off < kn) { // lstrip()
            int k;
            if (!py_isspace(utf8_next(u + off, kn - off, &k))) break;
            off += (size_t)k;
        }
        int gold = find_str(labels, n, key + off);
        if (gold < 0)
            s = loader_fail(L, "answerKey '%s' is not a choice label", key);
        else
            add_doc_shared(L, stem, texts, n, gold, -1, index);
    }
    free(texts);
    free(labels);
    return s;
}

// CommonsenseQA: "Question: {question.strip()}\nA. {t0}\n...E. {t4}\nAnswer:", choices A-E,
// gold = ["A".."E"].index(answerKey).
static Status rec_csqa(Loader *L, json_t *rec, int index) {
    static const char *const letters[5] = {"A", "B", "C", "D", "E"};
    const char *stem = NULL, *key = NULL, **texts = NULL, **labels = NULL;
    int n;
    Status s = get_ai2_choices(L, rec, &stem, &n, &texts, &labels);
    if (s != STATUS_OK) return s;
    if (n < 5)
        s = loader_fail(L, "%d choices, the template needs 5", n);
    else if ((s = get_str(L, rec, "answerKey", &key)) == STATUS_OK) {
        int gold = find_str(letters, 5, key);
        if (gold < 0)
            s = loader_fail(L, "answerKey '%s' is not one of A-E", key);
        else {
            StrBuf ctx = {0};
            char *q = py_strip(stem);
            strbuf_puts(&ctx, "Question: ");
            strbuf_puts(&ctx, q);
            for (int i = 0; i < 5; i++) {
                strbuf_putc(&ctx, '\n');
                strbuf_puts(&ctx, letters[i]);
                strbuf_puts(&ctx, ". ");
                strbuf_puts(&ctx, texts[i]);
            }
            strbuf_puts(&ctx, "\nAnswer:");
            add_doc_shared(L, ctx.p, letters, 5, gold, -1, index);
            free(q);
            free(ctx.p);
        }
    }
    free(texts);
    free(labels);
    return s;
}

// HellaSwag, approximate (preprocessed) layout {"query","choices","gold"} or the original
// layout {activity_label, ctx_a, ctx_b, endings, label} through lm-eval's process_docs.
static Status rec_hellaswag(Loader *L, json_t *rec, int index) {
    json_t *q = json_object_get(rec, "query");
    if (json_is_string(q)) {
        json_t *ch = json_object_get(rec, "choices"), *g = json_object_get(rec, "gold");
        if (!json_is_array(ch) || json_array_size(ch) == 0 || !json_is_integer(g))
            return loader_fail(L, "expected {\"query\",\"choices\",\"gold\"}");
        int n = (int)json_array_size(ch);
        const char **texts = xmalloc((size_t)n * sizeof(char *));
        for (int i = 0; i < n; i++) {
            texts[i] = json_string_value(json_array_get(ch, (size_t)i));
            if (!texts[i]) {
                free(texts);
                return loader_fail(L, "choice %d is not a string", i);
            }
        }
        json_int_t gold = json_integer_value(g);
        if (gold < 0 || gold >= n) {
            free(texts);
            return loader_fail(L, "gold %lld out of range", (long long)gold);
        }
        add_doc_shared(L, json_string_value(q), texts, n, (int)gold, -1, index);
        free(texts);
        return STATUS_OK;
    }
    const char *act = NULL, *ca = NULL, *cb = NULL;
    Status s;
    if ((s = get_str(L, rec, "activity_label", &act)) != STATUS_OK ||
        (s = get_str(L, rec, "ctx_a", &ca)) != STATUS_OK ||
        (s = get_str(L, rec, "ctx_b", &cb)) != STATUS_OK)
        return s;
    json_t *ends = json_object_get(rec, "endings"), *lab = json_object_get(rec, "label");
    if (!json_is_array(ends) || json_array_size(ends) == 0)
        return loader_fail(L, "missing array field 'endings'");
    long gold = -1;
    if (json_is_integer(lab))
        gold = (long)json_integer_value(lab);
    else if (json_is_string(lab)) {
        char *e;
        errno = 0;
        gold = strtol(json_string_value(lab), &e, 10);
        if (errno || *e || e == json_string_value(lab)) gold = -1;
    }
    int n = (int)json_array_size(ends);
    if (gold < 0 || gold >= n) return loader_fail(L, "bad label");
    // query = preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize())
    StrBuf raw = {0};
    char *cap = py_capitalize(cb);
    strbuf_puts(&raw, act);
    strbuf_puts(&raw, ": ");
    strbuf_puts(&raw, ca);
    strbuf_puts(&raw, " ");
    strbuf_puts(&raw, cap);
    char *query = hellaswag_preprocess(raw.p);
    char **ch = xcalloc((size_t)n, sizeof(char *));
    for (int i = 0; i < n && s == STATUS_OK; i++) {
        const char *e = json_string_value(json_array_get(ends, (size_t)i));
        if (!e)
            s = loader_fail(L, "ending %d is not a string", i);
        else
            ch[i] = hellaswag_preprocess(e);
    }
    if (s == STATUS_OK) add_doc_shared(L, query, (const char *const *)ch, n, (int)gold, -1, index);
    for (int i = 0; i < n; i++)
        free(ch[i]);
    free(ch);
    free(cap);
    free(raw.p);
    free(query);
    return s;
}

/* ---- files with a separate labels file (PIQA, SIQA) ---------------------------------- */

typedef struct {
    char **v;
    int n;
} Lines;

static void lines_free(Lines *l) {
    for (int i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof(*l));
}

// Non-empty stripped lines of a small text file.
static Status read_lines(const char *path, Lines *out) {
    char *data;
    size_t size;
    memset(out, 0, sizeof(*out));
    Status s = file_read_all(path, &data, &size);
    if (s != STATUS_OK) return s;
    int cap = 0;
    for (char *p = data, *end = data + size; p < end;) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        size_t b, e;
        py_strip_range(p, n, &b, &e);
        if (e > b) {
            if (out->n == cap) {
                cap = cap ? 2 * cap : 1024;
                out->v = xrealloc(out->v, (size_t)cap * sizeof(char *));
            }
            out->v[out->n] = xmalloc(e - b + 1);
            memcpy(out->v[out->n], p + b, e - b);
            out->v[out->n++][e - b] = 0;
        }
        p += n + 1;
    }
    free(data);
    return STATUS_OK;
}

typedef struct {
    Lines labels;
    const char *labels_path;
} LabelsCtx;

// Integer label of record `index` (PIQA 0/1, SIQA 1..3).
static Status label_at(Loader *L, const LabelsCtx *lc, int index, int lo, int hi, int *out) {
    if (index >= lc->labels.n)
        return fail(STATUS_ERR_FORMAT, "'%s' has %d labels, fewer than the records of '%s'",
                    lc->labels_path, lc->labels.n, L->path);
    char *e;
    errno = 0;
    long v = strtol(lc->labels.v[index], &e, 10);
    if (errno || *e || v < lo || v > hi)
        return fail(STATUS_ERR_FORMAT, "'%s' line %d: label '%s' is not in %d..%d", lc->labels_path,
                    index + 1, lc->labels.v[index], lo, hi);
    *out = (int)v;
    return STATUS_OK;
}

// PIQA: "Question: {goal}\nAnswer:", [sol1, sol2], label.
static Status rec_piqa_with(Loader *L, json_t *rec, int index, const LabelsCtx *lc) {
    const char *goal = NULL, *ch[2] = {NULL, NULL};
    Status s;
    if ((s = get_str(L, rec, "goal", &goal)) != STATUS_OK ||
        (s = get_str(L, rec, "sol1", &ch[0])) != STATUS_OK ||
        (s = get_str(L, rec, "sol2", &ch[1])) != STATUS_OK)
        return s;
    int gold;
    if ((s = label_at(L, lc, index, 0, 1, &gold)) != STATUS_OK) return s;
    StrBuf ctx = {0};
    strbuf_puts(&ctx, "Question: ");
    strbuf_puts(&ctx, goal);
    strbuf_puts(&ctx, "\nAnswer:");
    add_doc_shared(L, ctx.p, ch, 2, gold, -1, index);
    free(ctx.p);
    return STATUS_OK;
}

// Social IQa: "Q: {context} {question}\nA:", [answerA, answerB, answerC], int(label) - 1.
static Status rec_siqa_with(Loader *L, json_t *rec, int index, const LabelsCtx *lc) {
    const char *c = NULL, *q = NULL, *ch[3] = {NULL, NULL, NULL};
    Status s;
    if ((s = get_str(L, rec, "context", &c)) != STATUS_OK ||
        (s = get_str(L, rec, "question", &q)) != STATUS_OK ||
        (s = get_str(L, rec, "answerA", &ch[0])) != STATUS_OK ||
        (s = get_str(L, rec, "answerB", &ch[1])) != STATUS_OK ||
        (s = get_str(L, rec, "answerC", &ch[2])) != STATUS_OK)
        return s;
    int label;
    if ((s = label_at(L, lc, index, 1, 3, &label)) != STATUS_OK) return s;
    StrBuf ctx = {0};
    strbuf_puts(&ctx, "Q: ");
    strbuf_puts(&ctx, c);
    strbuf_puts(&ctx, " ");
    strbuf_puts(&ctx, q);
    strbuf_puts(&ctx, "\nA:");
    add_doc_shared(L, ctx.p, ch, 3, label - 1, -1, index);
    free(ctx.p);
    return STATUS_OK;
}

// WinoGrande, partial scoring: i = sentence.index("_"); contexts sentence[:i] + option_k;
// one continuation " " + sentence[i+1:].strip(); gold {"1": 0, "2": 1}[answer];
// doc_to_choice (acc_norm lengths) = the two contexts.
static Status rec_winogrande(Loader *L, json_t *rec, int index) {
    const char *sent = NULL, *o1 = NULL, *o2 = NULL, *ans = NULL;
    Status s;
    if ((s = get_str(L, rec, "sentence", &sent)) != STATUS_OK ||
        (s = get_str(L, rec, "option1", &o1)) != STATUS_OK ||
        (s = get_str(L, rec, "option2", &o2)) != STATUS_OK ||
        (s = get_str(L, rec, "answer", &ans)) != STATUS_OK)
        return s;
    const char *us = strchr(sent, '_');
    if (!us) return loader_fail(L, "sentence has no '_'");
    int gold = strcmp(ans, "1") == 0 ? 0 : strcmp(ans, "2") == 0 ? 1 : -1;
    if (gold < 0) return loader_fail(L, "answer '%s' is not \"1\" or \"2\"", ans);
    Task *t = L->t;
    if (t->n_docs == L->cap_docs) {
        L->cap_docs = L->cap_docs ? 2 * L->cap_docs : 1024;
        t->docs = xrealloc(t->docs, (size_t)L->cap_docs * sizeof(TaskDoc));
    }
    TaskDoc *d = &t->docs[t->n_docs++];
    memset(d, 0, sizeof(*d));
    d->n_choices = 2;
    d->contexts = xmalloc(2 * sizeof(char *));
    d->continuations = xmalloc(2 * sizeof(char *));
    d->choices = xmalloc(2 * sizeof(char *));
    char *rest = py_strip(us + 1);
    StrBuf b = {0};
    strbuf_puts(&b, " ");
    strbuf_puts(&b, rest);
    const char *cont = pool_strdup(t->pool, b.p);
    const char *opts[2] = {o1, o2};
    for (int i = 0; i < 2; i++) {
        b.n = 0;
        strbuf_put(&b, sent, (size_t)(us - sent));
        strbuf_puts(&b, opts[i]);
        d->contexts[i] = d->choices[i] = pool_strdup(t->pool, b.p);
        d->continuations[i] = cont;
    }
    free(b.p);
    free(rest);
    d->gold = gold;
    d->subject = -1;
    d->index = index;
    d->shared_context = false;
    return STATUS_OK;
}

/* ---- closures for the labelled readers (C has none; a tiny shim) -------------------- */

typedef struct {
    Loader base;
    LabelsCtx lc;
    Status (*fn)(Loader *L, json_t *rec, int index, const LabelsCtx *lc);
} LabelledLoader;

static Status rec_labelled(Loader *L, json_t *rec, int index) {
    LabelledLoader *ll = (LabelledLoader *)L; // base is the first member
    return ll->fn(L, rec, index, &ll->lc);
}

static Status load_labelled(Loader *L, const char *dir, const char *data_name,
                            const char *labels_name,
                            Status (*fn)(Loader *, json_t *, int, const LabelsCtx *)) {
    LabelledLoader ll;
    memset(&ll, 0, sizeof(ll));
    ll.base = *L;
    ll.fn = fn;
    char *data_path = path_join(dir, data_name), *labels_path = path_join(dir, labels_name);
    ll.lc.labels_path = labels_path;
    Status s = read_lines(labels_path, &ll.lc.labels);
    if (s == STATUS_OK) s = read_jsonl(&ll.base, data_path, rec_labelled);
    if (s == STATUS_OK && L->o->limit <= 0 && ll.lc.labels.n != ll.base.t->n_docs)
        s = fail(STATUS_ERR_FORMAT, "'%s' has %d labels but '%s' has %d records", labels_path,
                 ll.lc.labels.n, data_path, ll.base.t->n_docs);
    L->cap_docs = ll.base.cap_docs;
    lines_free(&ll.lc.labels);
    free(data_path);
    free(labels_path);
    return s;
}

/* ---- MMLU: CSV (RFC 4180, as Python's csv module reads it) ------------------------- */

typedef struct {
    char *f[8];
    int n;
} CsvRow;

static void csv_row_free(CsvRow *r) {
    for (int i = 0; i < r->n; i++)
        free(r->f[i]);
    r->n = 0;
}

// Parses one record at *pp (Python csv, excel dialect, strict=False): quoted fields may
// hold newlines and "" for a quote; text after a closing quote is kept literally.
// Returns 1 for a record, 0 at end of data, -1 for an unterminated quote or > 8 fields.
static int csv_next(const char **pp, const char *end, CsvRow *row) {
    const char *p = *pp;
    row->n = 0;
    if (p >= end) return 0;
    StrBuf fld = {0};
    strbuf_put(&fld, "", 0);
    enum { START, FIELD, QUOTED, QUOTE_IN_QUOTED } st = START;
    for (;;) {
        int c = p < end ? (unsigned char)*p : -1;
        bool eor = c == -1 || ((c == '\n' || c == '\r') && st != QUOTED);
        if (eor || (c == ',' && st != QUOTED)) {
            if (row->n == 8) {
                free(fld.p);
                return -1;
            }
            row->f[row->n++] = strbuf_take(&fld);
            strbuf_put(&fld, "", 0);
            if (eor) {
                if (c == '\r' && p + 1 < end && p[1] == '\n') p++;
                if (c != -1) p++;
                break;
            }
            st = START;
            p++;
            continue;
        }
        if (c == -1) break;
        switch (st) {
        case START:
            if (c == '"')
                st = QUOTED;
            else
                strbuf_putc(&fld, (char)c), st = FIELD;
            break;
        case FIELD: strbuf_putc(&fld, (char)c); break;
        case QUOTED:
            if (c == '"')
                st = QUOTE_IN_QUOTED;
            else
                strbuf_putc(&fld, (char)c);
            break;
        case QUOTE_IN_QUOTED:
            strbuf_putc(&fld, (char)c);
            st = c == '"' ? QUOTED : FIELD;
            break;
        }
        p++;
        if (p >= end && st == QUOTED) {
            free(fld.p);
            return -1;
        }
    }
    free(fld.p);
    *pp = p;
    return 1;
}

typedef struct {
    char *text; // "{question.strip()}\nA. ..\nB. ..\nC. ..\nD. ..\nAnswer:"
    int answer; // 0..3
} MmluItem;

static void mmlu_items_free(MmluItem *it, int n) {
    for (int i = 0; i < n; i++)
        free(it[i].text);
    free(it);
}

// Reads one subject CSV into items (at most `limit` when > 0).
static Status mmlu_read_csv(const char *path, int64_t limit, MmluItem **out, int *n_out) {
    char *data;
    size_t size;
    *out = NULL;
    *n_out = 0;
    Status s = file_read_all(path, &data, &size);
    if (s != STATUS_OK) return s;
    const char *p = data, *end = data + size;
    CsvRow row = {{0}, 0};
    int n = 0, cap = 0, rec = 0, r;
    MmluItem *items = NULL;
    while ((limit <= 0 || n < limit) && (r = csv_next(&p, end, &row)) != 0) {
        rec++;
        if (r < 0) {
            s = fail(STATUS_ERR_FORMAT, "'%s' record %d: unterminated quote or too many fields",
                     path, rec);
            break;
        }
        if (row.n == 1 && row.f[0][0] == 0) { // blank line
            csv_row_free(&row);
            continue;
        }
        int ans = row.n == 6 && strlen(row.f[5]) == 1 ? row.f[5][0] - 'A' : -1;
        if (row.n != 6 || ans < 0 || ans > 3) {
            s = fail(STATUS_ERR_FORMAT,
                     "'%s' record %d: expected question,A,B,C,D,answer with answer in A-D", path,
                     rec);
            csv_row_free(&row);
            break;
        }
        StrBuf t = {0};
        char *q = py_strip(row.f[0]);
        strbuf_puts(&t, q);
        free(q);
        for (int i = 0; i < 4; i++) {
            char hdr[5] = {'\n', (char)('A' + i), '.', ' ', 0};
            strbuf_puts(&t, hdr);
            strbuf_puts(&t, row.f[1 + i]);
        }
        strbuf_puts(&t, "\nAnswer:");
        if (n == cap) {
            cap = cap ? 2 * cap : 256;
            items = xrealloc(items, (size_t)cap * sizeof(MmluItem));
        }
        items[n].text = strbuf_take(&t);
        items[n++].answer = ans;
        csv_row_free(&row);
    }
    free(data);
    if (s != STATUS_OK) {
        mmlu_items_free(items, n);
        return s;
    }
    *out = items;
    *n_out = n;
    return STATUS_OK;
}

// lm_eval_subject_categories.tsv: "subject\tgroup" per line.
static Status mmlu_read_subjects(Task *t, const char *dir) {
    char *path = path_join(dir, "lm_eval_subject_categories.tsv");
    Lines l;
    Status s = read_lines(path, &l);
    if (s == STATUS_OK) {
        t->subjects = xcalloc((size_t)l.n, sizeof(char *));
        t->subject_group = xcalloc((size_t)l.n, sizeof(MmluGroup));
        for (int i = 0; i < l.n && s == STATUS_OK; i++) {
            char *tab = strchr(l.v[i], '\t');
            int g = -1;
            if (tab) {
                *tab = 0;
                for (int k = 0; k < MMLU_GROUP_COUNT; k++)
                    if (strcmp(tab + 1, group_names[k]) == 0) g = k;
            }
            if (g < 0 || !*l.v[i] || strchr(l.v[i], '/'))
                s = fail(STATUS_ERR_FORMAT, "'%s' line %d: expected subject<TAB>group", path,
                         i + 1);
            else {
                t->subjects[t->n_subjects] = xstrdup(l.v[i]);
                t->subject_group[t->n_subjects++] = (MmluGroup)g;
            }
        }
        if (s == STATUS_OK && t->n_subjects == 0)
            s = fail(STATUS_ERR_FORMAT, "'%s': no subjects", path);
    }
    lines_free(&l);
    free(path);
    return s;
}

static Status load_mmlu(Loader *L, const char *dir) {
    Task *t = L->t;
    Status s = mmlu_read_subjects(t, dir);
    int k = L->o->num_fewshot;
    for (int si = 0; si < t->n_subjects && s == STATUS_OK; si++) {
        const char *subj = t->subjects[si];
        char name[300];
        snprintf(name, sizeof(name), "test/%s_test.csv", subj);
        char *path = path_join(dir, name);
        MmluItem *items = NULL, *shots = NULL;
        int n = 0, n_shots = 0;
        s = mmlu_read_csv(path, L->o->limit, &items, &n);
        if (s == STATUS_OK && k > 0) {
            snprintf(name, sizeof(name), "dev/%s_dev.csv", subj);
            char *dev = path_join(dir, name);
            s = mmlu_read_csv(dev, k, &shots, &n_shots);
            if (s == STATUS_OK && n_shots < k)
                s = fail(STATUS_ERR_ARG, "--num-fewshot %d exceeds the %d examples of '%s'", k,
                         n_shots, dev);
            free(dev);
        }
        if (s == STATUS_OK && n == 0) s = fail(STATUS_ERR_FORMAT, "'%s': no records", path);
        if (s == STATUS_OK) {
            // description (subject with "_" -> " ") + K shots "text answer\n\n" + item
            StrBuf pre = {0};
            strbuf_puts(&pre, "The following are multiple choice questions (with answers) about ");
            for (const char *c = subj; *c; c++)
                strbuf_putc(&pre, *c == '_' ? ' ' : *c);
            strbuf_puts(&pre, ".\n\n");
            for (int j = 0; j < n_shots; j++) {
                strbuf_puts(&pre, shots[j].text);
                strbuf_putc(&pre, ' ');
                strbuf_putc(&pre, (char)('A' + shots[j].answer));
                strbuf_puts(&pre, "\n\n");
            }
            static const char *const letters[4] = {"A", "B", "C", "D"};
            StrBuf ctx = {0};
            for (int i = 0; i < n; i++) {
                ctx.n = 0;
                strbuf_put(&ctx, pre.p, pre.n);
                strbuf_puts(&ctx, items[i].text);
                add_doc_shared(L, ctx.p, letters, 4, items[i].answer, si, i);
            }
            free(ctx.p);
            free(pre.p);
        }
        mmlu_items_free(items, n);
        mmlu_items_free(shots, n_shots);
        free(path);
    }
    return s;
}

/* ---- entry points ---------------------------------------------------------------------- */

static void docs_free(Task *t) {
    for (int i = 0; i < t->n_docs; i++) {
        free(t->docs[i].contexts);
        free(t->docs[i].continuations);
        free(t->docs[i].choices);
    }
    free(t->docs);
}

void task_release(Task *t) {
    docs_free(t);
    for (int i = 0; i < t->n_subjects; i++)
        free(t->subjects[i]);
    free(t->subjects);
    free(t->subject_group);
    free(t->source);
    pool_free(t->pool);
    memset(t, 0, sizeof(*t));
}

Status task_load(Task *t, TaskKind kind, const char *data_dir, const TaskOpts *o) {
    memset(t, 0, sizeof(*t));
    if ((unsigned)kind >= TASK_KIND_COUNT) return fail(STATUS_ERR_ARG, "unknown task %d", kind);
    if (o->num_fewshot < 0) return fail(STATUS_ERR_ARG, "--num-fewshot must be >= 0");
    if (o->num_fewshot > 0 && kind != TASK_MMLU)
        return fail(STATUS_ERR_UNSUPPORTED,
                    "few-shot for '%s' needs its training split, which is not shipped "
                    "(only mmlu has a few-shot split, dev/)",
                    task_info[kind].name);
    char *dir = path_join(data_dir, task_info[kind].name);
    if (!path_is_dir(dir)) {
        Status s = fail(STATUS_ERR_IO, "no data for task '%s': '%s' is not a directory",
                        task_info[kind].name, dir);
        free(dir);
        return s;
    }
    t->kind = kind;
    t->num_fewshot = o->num_fewshot;
    t->pool = xcalloc(1, sizeof(TaskPool));
    Loader L = {.t = t, .o = o};
    Status s = STATUS_OK;
    char *path = NULL;
    switch (kind) {
    case TASK_ARC_EASY:
        path = path_join(dir, "ARC-Easy-Test.jsonl");
        s = read_jsonl(&L, path, rec_arc);
        break;
    case TASK_COMMONSENSE_QA:
        path = path_join(dir, "dev_rand_split.jsonl");
        s = read_jsonl(&L, path, rec_csqa);
        break;
    case TASK_HELLASWAG:
        // the original validation file is exact; the shipped copy is approximate (§9.3)
        path = path_join(dir, "hellaswag_val.jsonl");
        if (!path_is_file(path)) {
            free(path);
            path = path_join(dir, "hellaswag_val_lmeval_approx.jsonl");
            t->approximate = true;
        }
        s = read_jsonl(&L, path, rec_hellaswag);
        break;
    case TASK_MMLU:
        path = path_join(dir, "test");
        s = load_mmlu(&L, dir);
        break;
    case TASK_OPENBOOKQA:
        path = path_join(dir, "test.jsonl");
        s = read_jsonl(&L, path, rec_obqa);
        break;
    case TASK_PIQA:
        path = path_join(dir, "valid.jsonl");
        s = load_labelled(&L, dir, "valid.jsonl", "valid-labels.lst", rec_piqa_with);
        break;
    case TASK_SOCIAL_IQA:
        path = path_join(dir, "dev.jsonl");
        s = load_labelled(&L, dir, "dev.jsonl", "dev-labels.lst", rec_siqa_with);
        break;
    case TASK_WINOGRANDE:
        path = path_join(dir, "dev.jsonl");
        s = read_jsonl(&L, path, rec_winogrande);
        break;
    case TASK_KIND_COUNT: break;
    }
    free(dir);
    t->source = path;
    if (s != STATUS_OK) {
        task_release(t);
        return fail_context(s, "task '%s'", task_info[kind].name);
    }
    return STATUS_OK;
}
