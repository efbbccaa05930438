/*
 * eval_cache.c - the request log-likelihood cache of `edgeforge eval --cache` (eval_cache.h).
 */
#include "eval/eval_cache.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "core/common.h"
#include "core/fileio.h"
#include "core/log.h"

#define CACHE_MAGIC "edgeforge-eval-cache 1"

static uint64_t fnv1a(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

uint64_t eval_cache_key(const int32_t *ctx, int n_ctx, const int32_t *cont, int n_cont) {
    uint64_t h = 0xcbf29ce484222325ULL;
    int32_t len[2] = {n_ctx, n_cont};
    h = fnv1a(h, len, sizeof len);
    h = fnv1a(h, ctx, (size_t)n_ctx * sizeof *ctx);
    h = fnv1a(h, cont, (size_t)n_cont * sizeof *cont);
    return h ? h : 1; // 0 marks an empty slot
}

static void table_insert(EvalCache *c, uint64_t key, double ll, bool greedy) {
    if (2 * (c->n + 1) >= c->cap) { // grow, rehash
        size_t cap = c->cap ? 2 * c->cap : 1024;
        EvalCacheEntry *s = xcalloc(cap, sizeof *s);
        for (size_t i = 0; i < c->cap; i++)
            if (c->slots[i].key) {
                size_t j = (size_t)c->slots[i].key & (cap - 1);
                while (s[j].key)
                    j = (j + 1) & (cap - 1);
                s[j] = c->slots[i];
            }
        free(c->slots);
        c->slots = s;
        c->cap = cap;
    }
    size_t j = (size_t)key & (c->cap - 1);
    while (c->slots[j].key && c->slots[j].key != key)
        j = (j + 1) & (c->cap - 1);
    if (!c->slots[j].key) c->n++;
    c->slots[j] = (EvalCacheEntry){key, ll, greedy}; // a repeated key: the last line wins
}

bool eval_cache_get(EvalCache *c, uint64_t key, double *ll, bool *greedy) {
    if (!c->cap) return false;
    size_t j = (size_t)key & (c->cap - 1);
    while (c->slots[j].key) {
        if (c->slots[j].key == key) {
            *ll = c->slots[j].ll;
            *greedy = c->slots[j].greedy;
            return true;
        }
        j = (j + 1) & (c->cap - 1);
    }
    return false;
}

// The header line for these settings (caller frees).
static char *header_line(const char *model_id, bool add_bos, int window) {
    size_t n = strlen(model_id) + 96;
    char *h = xmalloc(n);
    snprintf(h, n, CACHE_MAGIC " bos=%d window=%d model=%s", add_bos ? 1 : 0, window, model_id);
    for (char *p = h; *p; p++) // one line: a newline in a path would split it
        if (*p == '\n' || *p == '\r') *p = ' ';
    return h;
}

// One entry line (without its newline): key, hex-float log-likelihood, greedy flag.
static bool parse_entry(const char *s, size_t n, uint64_t *key, double *ll, bool *greedy) {
    char line[128];
    if (n < 20 || n >= sizeof line) return false;
    memcpy(line, s, n);
    line[n] = '\0';
    for (int i = 0; i < 16; i++) {
        char ch = line[i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'))) return false;
    }
    if (line[16] != ' ') return false;
    line[16] = '\0';
    *key = strtoull(line, NULL, 16);
    char *end;
    errno = 0;
    *ll = strtod(line + 17, &end);
    if (end == line + 17 || errno == ERANGE || *end != ' ' || *ll != *ll || *ll > 0.0)
        return false; // a log-likelihood is a number <= 0 (or -inf)
    if (!((end[1] == '0' || end[1] == '1') && end[2] == '\0')) return false;
    *greedy = end[1] == '1';
    return *key != 0;
}

Status eval_cache_parse(EvalCache *c, const char *buf, size_t n, const char *name,
                        const char *model_id, bool add_bos, int window, size_t *complete_len) {
    // only whole lines count: a last line without its newline was cut off by a kill
    size_t whole = n;
    while (whole > 0 && buf[whole - 1] != '\n')
        whole--;
    if (complete_len) *complete_len = whole;
    if (whole == 0) return STATUS_OK; // empty (or only a cut-off header): a new file
    const char *nl = memchr(buf, '\n', whole);
    size_t hl = (size_t)(nl - buf);
    char *want = header_line(model_id, add_bos, window);
    Status s = STATUS_OK;
    if (hl < strlen(CACHE_MAGIC) || memcmp(buf, CACHE_MAGIC, strlen(CACHE_MAGIC)) != 0) {
        s = fail(STATUS_ERR_FORMAT, "'%s' is not an edgeforge eval cache (line 1)", name);
    } else if (hl != strlen(want) || memcmp(buf, want, hl) != 0) {
        s = fail(STATUS_ERR_FORMAT,
                 "eval cache '%s' was written with other settings: '%.*s', this run: '%s' "
                 "(use another --cache file)",
                 name, (int)MIN(hl, (size_t)400), buf, want);
    }
    free(want);
    int64_t line_no = 1;
    for (size_t p = hl + 1; s == STATUS_OK && p < whole; line_no++) {
        const char *e = memchr(buf + p, '\n', whole - p);
        size_t len = (size_t)(e - (buf + p));
        uint64_t key;
        double ll;
        bool greedy;
        if (!parse_entry(buf + p, len, &key, &ll, &greedy))
            s = fail(STATUS_ERR_FORMAT,
                     "eval cache '%s' line %lld: expected '<16 hex digits> <log-likelihood> "
                     "<0|1>'",
                     name, (long long)(line_no + 1));
        else
            table_insert(c, key, ll, greedy);
        p += len + 1;
    }
    return s;
}

Status eval_cache_open(EvalCache *c, const char *path, const char *model_id, bool add_bos,
                       int window) {
    memset(c, 0, sizeof *c);
    c->path = xstrdup(path);
    // open (creating) and lock first: two runs appending to one file would interleave
    // their lines, so the second is refused while the first holds it
    Status s = STATUS_OK;
    c->f = fopen(path, "a");
    if (!c->f)
        s = fail(STATUS_ERR_IO, "cannot open eval cache '%s' for appending: %s", path,
                 strerror(errno));
    else if (flock(fileno(c->f), LOCK_EX | LOCK_NB) != 0)
        s = fail(STATUS_ERR_IO, "eval cache '%s' is in use by another run (%s)", path,
                 strerror(errno));
    char *buf = NULL;
    size_t n = 0, whole = 0;
    if (s == STATUS_OK && file_read_all(path, &buf, &n) != STATUS_OK)
        s = fail_context(STATUS_ERR_IO, "reading eval cache");
    if (s == STATUS_OK)
        s = eval_cache_parse(c, buf ? buf : "", n, path, model_id, add_bos, window, &whole);
    free(buf);
    if (s != STATUS_OK) {
        eval_cache_close(c);
        return s;
    }
    if (whole < n) {
        log_warn("eval cache '%s': dropping a last line cut off by an interrupted run (%zu bytes)",
                 path, n - whole);
        if (ftruncate(fileno(c->f), (off_t)whole) != 0) { // (appends go to the new end)
            s = fail(STATUS_ERR_IO, "cannot truncate '%s': %s", path, strerror(errno));
            eval_cache_close(c);
            return s;
        }
    }
    if (whole == 0) { // new file: the header first
        char *h = header_line(model_id, add_bos, window);
        fprintf(c->f, "%s\n", h);
        free(h);
        if ((s = eval_cache_flush(c)) != STATUS_OK) {
            eval_cache_close(c);
            return s;
        }
    }
    return STATUS_OK;
}

Status eval_cache_put(EvalCache *c, uint64_t key, double ll, bool greedy) {
    table_insert(c, key, ll, greedy);
    if (c->f && fprintf(c->f, "%016" PRIx64 " %a %d\n", key, ll, greedy ? 1 : 0) < 0)
        return fail(STATUS_ERR_IO, "cannot write eval cache '%s': %s", c->path, strerror(errno));
    return STATUS_OK;
}

Status eval_cache_flush(EvalCache *c) {
    if (c->f && (fflush(c->f) != 0 || ferror(c->f)))
        return fail(STATUS_ERR_IO, "cannot write eval cache '%s': %s", c->path, strerror(errno));
    return STATUS_OK;
}

void eval_cache_close(EvalCache *c) {
    if (c->f) fclose(c->f);
    free(c->slots);
    free(c->path);
    memset(c, 0, sizeof *c);
}
