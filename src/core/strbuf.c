#include "strbuf.h"

#include <stdlib.h>
#include <string.h>

#include "common.h"

void strbuf_put(StrBuf *b, const void *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n + 1)
            cap *= 2;
        b->p = xrealloc(b->p, cap);
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

void strbuf_puts(StrBuf *b, const char *s) { strbuf_put(b, s, strlen(s)); }

void strbuf_putc(StrBuf *b, char c) { strbuf_put(b, &c, 1); }

char *strbuf_take(StrBuf *b) {
    if (!b->p) strbuf_put(b, "", 0);
    char *s = b->p;
    memset(b, 0, sizeof *b);
    return s;
}

void strbuf_release(StrBuf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}
