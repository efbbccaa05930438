/*
 * test_core.c - core utilities: fp16/bf16 conversions against values computed
 * by numpy/PyTorch (tests/fixtures/dtype_ref.safetensors, tools/gen_dtype_fixture.py),
 * the RNG's range contracts, atomic writes, JSON files and the safetensors reader on bad
 * input.
 */
#include "core/common.h"
#include "core/dtype.h"
#include "core/fileio.h"
#include "core/json_file.h"
#include "core/rng.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/common.h"
#include "core/dtype.h"
#include "core/fileio.h"
#include "core/rng.h"

static void test_fp16_bf16_vs_torch(void **state) {
    (void)state;
    SafeTensors st;
    fixture_open(&st, "dtype_ref.safetensors");
    const SafeTensor *src = safetensors_find(&st, "x_f32");
    const SafeTensor *h = safetensors_find(&st, "x_f16");
    const SafeTensor *b = safetensors_find(&st, "x_bf16");
    assert_non_null(src);
    assert_non_null(h);
    assert_non_null(b);
    int64_t n = (int64_t)(src->nbytes / 4);
    const float *x = src->data;
    const uint16_t *hr = h->data, *br = b->data;
    int bad_h = 0, bad_b = 0, bad_back = 0;
    for (int64_t i = 0; i < n; i++) {
        uint16_t hh = f32_to_fp16(x[i]), bb = f32_to_bf16(x[i]);
        int h_nan = ((hr[i] & 0x7c00) == 0x7c00) && (hr[i] & 0x3ff);
        int b_nan = ((br[i] & 0x7f80) == 0x7f80) && (br[i] & 0x7f);
        if (h_nan ? !isnan(fp16_to_f32(hh)) : hh != hr[i]) bad_h++;
        if (b_nan ? !isnan(bf16_to_f32(bb)) : bb != br[i]) bad_b++;
        // widening back must be exact: compare with the fixture's own f16 -> f32
        if (!h_nan && f32_bits(fp16_to_f32(hr[i])) != f32_bits((float)fp16_to_f32(hh))) bad_back++;
    }
    if (bad_h || bad_b || bad_back)
        fail_msg("fp16 mismatches %d, bf16 mismatches %d, widen %d of %lld", bad_h, bad_b, bad_back,
                 (long long)n);
    // widening of every f16 bit pattern against torch
    const SafeTensor *all = safetensors_find(&st, "all_f16_as_f32");
    assert_non_null(all);
    const float *ref = all->data;
    for (uint32_t u = 0; u < 65536; u++) {
        float got = fp16_to_f32((uint16_t)u);
        if (isnan(ref[u]))
            assert_true(isnan(got));
        else if (f32_bits(got) != f32_bits(ref[u]))
            fail_msg("fp16 0x%04x -> %g, torch %g", u, (double)got, (double)ref[u]);
    }
    safetensors_close(&st);
}

static void test_rng_ranges(void **state) {
    (void)state;
    Rng r, r2;
    rng_seed(&r, 42);
    rng_seed(&r2, 42);
    double sum = 0;
    for (int i = 0; i < 100000; i++) {
        double u = rng_uniform(&r);
        assert_true(u >= 0 && u < 1);
        assert_true(rng_below(&r, 7) < 7);
        sum += u;
    }
    // mean of 1e5 uniforms: 0.5 +- 5 sigma (sigma = 0.289/sqrt(1e5) = 9.1e-4)
    assert_true(fabs(sum / 100000 - 0.5) < 5 * 9.1e-4);
    // same seed, same stream; another seed, another stream
    Rng a, b, c;
    rng_seed(&a, 7);
    rng_seed(&b, 7);
    rng_seed(&c, 8);
    int same = 1, diff = 0;
    for (int i = 0; i < 16; i++) {
        uint64_t x = rng_u64(&a);
        same &= x == rng_u64(&b);
        diff += x != rng_u64(&c);
    }
    assert_true(same);
    assert_true(diff >= 15);
    (void)r2;
}

static void test_atomic_write_leaves_nothing_on_abort(void **state) {
    (void)state;
    const char *p = "build/test_core_atomic.bin";
    unlink(p);
    AtomicFile af;
    assert_int_equal(atomic_file_open(&af, p), STATUS_OK);
    fputs("partial", af.f);
    atomic_file_abort(&af);
    assert_false(path_is_file(p));
    assert_int_equal(file_write_all(p, "abc", 3), STATUS_OK);
    char *buf;
    size_t n;
    assert_int_equal(file_read_all(p, &buf, &n), STATUS_OK);
    assert_int_equal(n, 3);
    assert_memory_equal(buf, "abc", 3);
    free(buf);
    unlink(p);
}

// json_read_*: a document, and each failure named: missing file (I/O), bad JSON with its line
// and column, duplicate keys under JSON_REJECT_DUPLICATES, not an object.
static void test_json_file(void **state) {
    (void)state;
    const char *p = "build/test_core_json.json";
    json_t *j;
    assert_int_equal(file_write_all(p, "{\"a\": [1, 2]}", 13), STATUS_OK);
    assert_int_equal(json_read_object(&j, p, 0), STATUS_OK);
    assert_int_equal(json_array_size(json_object_get(j, "a")), 2);
    json_decref(j);
    assert_int_equal(file_write_all(p, "{\"a\":\n  [1,", 11), STATUS_OK);
    assert_int_equal(json_read_file(&j, p, 0), STATUS_ERR_FORMAT);
    assert_null(j);
    assert_non_null(
        strstr(status_msg(), "bad JSON in 'build/test_core_json.json' (line 2, column"));
    assert_int_equal(file_write_all(p, "{\"a\": 1, \"a\": 2}", 16), STATUS_OK);
    assert_int_equal(json_read_file(&j, p, 0), STATUS_OK); // jansson keeps the last
    json_decref(j);
    assert_int_equal(json_read_file(&j, p, JSON_REJECT_DUPLICATES), STATUS_ERR_FORMAT);
    assert_null(j);
    assert_non_null(strstr(status_msg(), "duplicate"));
    assert_int_equal(file_write_all(p, "[1]", 3), STATUS_OK);
    assert_int_equal(json_read_file(&j, p, 0), STATUS_OK);
    json_decref(j);
    assert_int_equal(json_read_object(&j, p, 0), STATUS_ERR_FORMAT);
    assert_null(j);
    assert_non_null(strstr(status_msg(), "is not a JSON object"));
    unlink(p);
    assert_int_equal(json_read_object(&j, p, 0), STATUS_ERR_IO);
    assert_non_null(strstr(status_msg(), "cannot open 'build/test_core_json.json'"));
    assert_int_equal(json_parse_buf(&j, "{}", 2, 0, "buffer"), STATUS_OK);
    json_decref(j);
    assert_int_equal(json_parse_buf(&j, "{", 1, 0, "the buffer"), STATUS_ERR_FORMAT);
    assert_non_null(strstr(status_msg(), "bad JSON in 'the buffer' (line 1"));
}

// An interrupted writer (SIGTERM in a child with the CLI's handlers) leaves neither the
// output nor its temporary file, and the child dies by that signal.
static void test_atomic_write_interrupted(void **state) {
    (void)state;
    const char *p = "build/test_core_atomic_sig.bin";
    unlink(p);
    char tmp[256];
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        atomic_file_cleanup_on_signals();
        AtomicFile a, b;
        if (atomic_file_open(&a, p) != STATUS_OK) _exit(3);
        if (atomic_file_open(&b, "build/test_core_atomic_sig2.bin") != STATUS_OK) _exit(3);
        atomic_file_abort(&b); // a released slot is not touched again
        fputs("partial", a.f);
        fflush(a.f);
        raise(SIGTERM);
        _exit(4); // not reached
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM);
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", p, (long)pid);
    assert_false(path_is_file(tmp));
    assert_false(path_is_file(p));
}

static void test_safetensors_bad_input(void **state) {
    (void)state;
    const char *p = "build/test_core_bad.safetensors";
    SafeTensors st;
    struct {
        const char *what, *json;
        uint64_t data_len;
    } cases[] = {
        {"past end", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8},
        {"bad dtype", "{\"a\":{\"dtype\":\"Q9\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4},
        {"size mismatch", "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8},
        {"overflow",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}", 0},
        {"not json", "{\"a\":", 0},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        size_t hl = strlen(cases[i].json);
        size_t total = 8 + hl + cases[i].data_len;
        unsigned char *buf = xcalloc(1, total);
        uint64_t h64 = hl;
        memcpy(buf, &h64, 8);
        memcpy(buf + 8, cases[i].json, hl);
        assert_int_equal(file_write_all(p, buf, total), STATUS_OK);
        free(buf);
        Status s = safetensors_open(&st, p);
        if (s == STATUS_OK) fail_msg("case '%s' was accepted", cases[i].what);
        assert_non_null(strstr(status_msg(), p)); // the message names the file
    }
    // truncated: header length larger than the file
    unsigned char hdr[12] = {0xff, 0xff, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' '};
    assert_int_equal(file_write_all(p, hdr, sizeof hdr), STATUS_OK);
    assert_int_not_equal(safetensors_open(&st, p), STATUS_OK);
    unlink(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fp16_bf16_vs_torch),
        cmocka_unit_test(test_rng_ranges),
        cmocka_unit_test(test_atomic_write_leaves_nothing_on_abort),
        cmocka_unit_test(test_atomic_write_interrupted),
        cmocka_unit_test(test_json_file),
        cmocka_unit_test(test_safetensors_bad_input),
    };
    return cmocka_run_group_tests_name("core", tests, NULL, NULL);
}
