/*
 * common.h - small always-available helpers: CHECK, ARRAY_LEN, MIN/MAX and the
 * aborting allocators used for small bookkeeping allocations.
 *
 * CHECK() is for broken invariants only (programmer errors). Anything a user can
 * cause (bad file, bad flag, out of memory on a big slab) returns a Status instead
 * (see status.h).
 */
#ifndef EF_COMMON_H
#define EF_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define MIN(a, b)    ((a) < (b) ? (a) : (b))
#define MAX(a, b)    ((a) > (b) ? (a) : (b))

void check_failed(const char *file, int line, const char *expr, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 4, 5)));

// Always-on assertion: prints "file:line: CHECK(expr) failed" and aborts.
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) check_failed(__FILE__, __LINE__, #cond, NULL);                                \
    } while (0)
#define CHECK_MSG(cond, ...)                                                                       \
    do {                                                                                           \
        if (!(cond)) check_failed(__FILE__, __LINE__, #cond, __VA_ARGS__);                         \
    } while (0)

// Aborting allocators for small bookkeeping memory (redis zmalloc policy).
// Big slabs (weights, activations) must go through a Status path instead.
void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);

// Overflow-checked arithmetic for sizes read from files. Return false on overflow.
static inline bool mul_overflow_u64(uint64_t a, uint64_t b, uint64_t *out) {
    return __builtin_mul_overflow(a, b, out);
}
static inline bool add_overflow_u64(uint64_t a, uint64_t b, uint64_t *out) {
    return __builtin_add_overflow(a, b, out);
}

#endif
