/*
 * testutil.h - numeric assertions and fixture access on top of cmocka.
 *
 * Tests are cmocka groups; tests/run_tests.sh sums their results into one
 * "N passed, N failed" line. Fixtures live in tests/fixtures (see its README):
 * numeric ones are safetensors files written by tools/ scripts.
 */
#ifndef EF_TESTUTIL_H
#define EF_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

// Our headers before cmocka.h: cmocka defines a fail() macro that would clash with
// status.h's fail(); tests use cmocka's fail()/fail_msg(), never the library's.
#include "core/status.h"
#include "model/llama.h"
#include "model/safetensors.h"

#include <cmocka.h>

// Path of a fixture: "tests/fixtures/<name>" (tests run from the repository root).
const char *fixture_path(const char *name);

// Compares n floats: fails unless |x - ref| <= atol + rtol*|ref| for every element.
// On failure prints the worst element, max relative error and NMSE.
void assert_close_f32_(const char *what, const float *x, const float *ref, int64_t n, double atol,
                       double rtol, const char *file, int line);
#define assert_close_f32(what, x, ref, n, atol, rtol)                                              \
    assert_close_f32_(what, x, ref, n, atol, rtol, __FILE__, __LINE__)

// NMSE = sum (x-r)^2 / sum r^2.
double nmse_f32(const float *x, const float *ref, int64_t n);

// Opens a fixture safetensors file (fails the test if missing).
void fixture_open(SafeTensors *st, const char *name);
// Returns a tensor's data as float32 (converted from F32/F64/F16/BF16); asserts it exists
// and, if numel != NULL, stores its element count. Caller frees.
float *fixture_f32(const SafeTensors *st, const char *name, int64_t *numel);
// Same for integer tensors (I64/I32) as int64. Caller frees.
int64_t *fixture_i64(const SafeTensors *st, const char *name, int64_t *numel);

// A Llama of config c (dims, heads, vocab, layers; the rest defaulted here) with float32
// weights drawn from a seeded normal (linears 1/sqrt(in), norms 1 +- 0.1), owned by m,
// no tokenizer: shapes large enough to exercise the threaded paths without a fixture.
void test_random_model(Model *m, const LlamaConfig *c, uint64_t seed);
// The config the thread-count tests use: 2 layers, D 192, F 512, 6 heads over 2 kv heads
// (HD 32), V 1000.
LlamaConfig test_threads_config(void);

// Runs the edgeforge binary (build dir from $BUILD, default "build") with a shell
// command tail; returns the exit status and captures stdout+stderr in *out (caller frees).
int run_cli(const char *args, char **out);

// Fails the test unless files a and b hold the same bytes.
void assert_same_file(const char *a, const char *b);

#endif
