/*
 * strbuf.h - a growable byte buffer that is always NUL-terminated (for building
 * strings piece by piece: chat prompts, decoded text, JSON fragments).
 *
 *   StrBuf b = {0};
 *   strbuf_puts(&b, "hello ");
 *   strbuf_put(&b, name, name_len);
 *   use(b.p, b.n);       // b.p[b.n] == '\0'
 *   strbuf_release(&b);  // or keep b.p and free() it later
 */
#ifndef EF_STRBUF_H
#define EF_STRBUF_H

#include <stddef.h>

typedef struct {
    char *p;    // NUL-terminated once anything was added (NULL before)
    size_t n;   // bytes used, without the NUL
    size_t cap; // bytes allocated
} StrBuf;

// Appends n bytes (which may contain NULs); aborts on out of memory (small buffers).
void strbuf_put(StrBuf *b, const void *s, size_t n);
// Appends a NUL-terminated string.
void strbuf_puts(StrBuf *b, const char *s);
// Appends one byte.
void strbuf_putc(StrBuf *b, char c);
// Returns the string (an empty one if nothing was added; caller frees) and resets b.
char *strbuf_take(StrBuf *b);
// Frees the buffer and zeroes the struct.
void strbuf_release(StrBuf *b);

#endif
