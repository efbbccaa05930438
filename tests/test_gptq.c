/*
 * test_gptq.c - GPTQ against tools/gptq_ref.py (PyTorch, float64) on random layers with
 * realistic Hessians (tests/fixtures/gptq/<case>.safetensors), v1 packing against the
 * Python packer and tools/dequant_ref.py, and the error paths.
 *
 * Parity bounds: integer codes identical except at a documented tie (the first differing
 * code of a row must sit within 1e-6 of a .5 rounding boundary in the reference; later
 * codes of that row may follow it), scales within 1e-12 relative, zeros/g_idx/perm equal,
 * layer loss within 1e-5 relative, RTN codes identical.
 */
#include "core/common.h"
#include "core/dtype.h"
#include "core/rng.h"
#include "quant/gptq.h"
#include "quant/gptq_pack.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

// A fixture tensor of the expected dtype (asserts), its element count in *n.
static const void *tensor(const SafeTensors *st, const char *name, SafeDType dt, int64_t *n) {
    const SafeTensor *t = safetensors_find(st, name);
    if (!t) fail_msg("fixture tensor '%s' missing", name);
    if (t->dtype != dt) fail_msg("fixture tensor '%s' has dtype %s", name, safe_dtype_name(t->dtype));
    if (n) *n = (int64_t)(t->nbytes / safe_dtype_size(dt));
    return t->data;
}

static int meta_int(const SafeTensors *st, const char *key) {
    const char *v = safetensors_meta(st, key);
    if (!v) fail_msg("fixture metadata '%s' missing", key);
    return atoi(v);
}

/* ---- GPTQ parity with tools/gptq_ref.py ---------------------------------------------- */

static void accumulate_hessian(GptqHessian *h, const SafeTensors *st, int64_t K) {
    int64_t nb, n2, nx;
    const int64_t *rows = tensor(st, "batch_rows", ST_I64, &nb);
    const int64_t *seqs = tensor(st, "batch_seqs", ST_I64, &n2);
    const float *X = tensor(st, "x", ST_F32, &nx);
    assert_int_equal(nb, n2);
    assert_int_equal(gptq_hessian_init(h, K), STATUS_OK);
    int64_t t = 0;
    for (int64_t b = 0; b < nb; b++) {
        assert_int_equal(gptq_hessian_add_batch(h, X + t * K, rows[b], seqs[b]), STATUS_OK);
        t += rows[b];
    }
    assert_int_equal(t * K, nx);
}

static void run_parity_case(const char *file) {
    SafeTensors st;
    fixture_open(&st, file);
    GptqOptions o;
    gptq_options_defaults(&o);
    o.bits = meta_int(&st, "bits");
    o.group_size = meta_int(&st, "group");
    o.sym = meta_int(&st, "sym");
    o.act_order = meta_int(&st, "act_order");
    o.static_groups = meta_int(&st, "static_groups");
    const SafeTensor *wt = safetensors_find(&st, "w");
    assert_non_null(wt);
    const int64_t N = wt->shape[0], K = wt->shape[1];
    const float *W = wt->data;

    GptqHessian h;
    accumulate_hessian(&h, &st, K);
    if (safetensors_find(&st, "h")) { // the running-average Hessian itself
        const double *Href = tensor(&st, "h", ST_F64, NULL);
        double amax = 0, dmax = 0;
        for (int64_t i = 0; i < K * K; i++) {
            amax = fmax(amax, fabs(Href[i]));
            dmax = fmax(dmax, fabs(h.H[i] - Href[i]));
        }
        if (dmax > 1e-12 * amax) fail_msg("hessian differs by %g (max %g)", dmax, amax);
    }

    GptqResult r;
    assert_int_equal(gptq_quantize_layer(&r, W, N, &h, &o), STATUS_OK);
    const int32_t *qref = tensor(&st, "q", ST_I32, NULL);
    const float *tie = tensor(&st, "tie", ST_F32, NULL);
    const int64_t *perm = tensor(&st, "perm", ST_I64, NULL);
    const int32_t *gref = tensor(&st, "g_idx", ST_I32, NULL);
    const double *sref = tensor(&st, "scale", ST_F64, NULL);
    const int32_t *zref = tensor(&st, "zero", ST_I32, NULL);
    const double *lref = tensor(&st, "loss", ST_F64, NULL);
    for (int64_t j = 0; j < K; j++) {
        assert_int_equal(r.perm[j], perm[j]);
        assert_int_equal(r.g_idx[j], gref[j]);
    }
    // codes: the first mismatch of a row (in quantization order) must be a tie
    int tie_rows = 0, n_diff = 0;
    bool *row_tied = xcalloc((size_t)N, 1);
    for (int64_t row = 0; row < N; row++)
        for (int64_t c = 0; c < K; c++) {
            int64_t j = r.perm[c];
            if (r.q[row * K + j] == qref[row * K + j]) continue;
            n_diff++;
            if (!row_tied[row]) {
                if (tie[row * K + j] > 1e-6)
                    fail_msg("%s: code (%lld, %lld) is %d, reference %d, not a tie (%g)", file,
                             (long long)row, (long long)j, r.q[row * K + j], qref[row * K + j],
                             (double)tie[row * K + j]);
                row_tied[row] = true;
                tie_rows++;
            }
        }
    // grids of rows without a tie
    for (int64_t gi = 0; gi < r.G; gi++)
        for (int64_t row = 0; row < N; row++) {
            if (row_tied[row]) continue;
            double s = r.scales[gi * N + row], sr = sref[gi * N + row];
            if (fabs(s - sr) > 1e-12 * fabs(sr))
                fail_msg("%s: scale (%lld, %lld) %.17g vs %.17g", file, (long long)gi,
                         (long long)row, s, sr);
            assert_int_equal(r.zeros[gi * N + row], zref[gi * N + row]);
        }
    double rel = fabs(r.loss - lref[0]) / lref[0];
    if (rel > 1e-5) fail_msg("%s: loss %.10g vs %.10g (rel %g)", file, r.loss, lref[0], rel);
    print_message("%s: %lldx%lld loss %.6g (ref %.6g, rel %.1e), %d differing codes in %d tied "
                  "rows, damp %g, dead %lld\n", file, (long long)N, (long long)K, r.loss, lref[0],
                  rel, n_diff, tie_rows, r.percdamp, (long long)r.n_dead);
    free(row_tied);

    // RTN on the same grid: identical codes; GPTQ's output error below RTN's
    GptqResult rt;
    assert_int_equal(gptq_rtn_layer(&rt, W, N, K, &o), STATUS_OK);
    const int32_t *rq = tensor(&st, "rtn_q", ST_I32, NULL);
    for (int64_t i = 0; i < N * K; i++)
        if (rt.q[i] != rq[i]) fail_msg("%s: rtn code %lld is %d, reference %d", file, (long long)i, rt.q[i], rq[i]);
    float *Wg = xmalloc((size_t)(N * K) * sizeof(float)), *Wr = xmalloc((size_t)(N * K) * sizeof(float));
    gptq_result_dequantize(Wg, &r);
    gptq_result_dequantize(Wr, &rt);
    double eg = gptq_layer_error(h.H, W, Wg, N, K), er = gptq_layer_error(h.H, W, Wr, N, K);
    print_message("%s: layer error gptq %.6g < rtn %.6g (%.1f%%)\n", file, eg, er, 100 * eg / er);
    assert_true(eg < er);

    free(Wg);
    free(Wr);
    gptq_result_release(&rt);
    gptq_result_release(&r);
    gptq_hessian_release(&h);
    safetensors_close(&st);
}

static void test_parity_plain(void **s) { (void)s; run_parity_case("gptq/plain_g128_k172.safetensors"); }
static void test_parity_actorder(void **s) { (void)s; run_parity_case("gptq/actorder_g32_k172.safetensors"); }
static void test_parity_static(void **s) { (void)s; run_parity_case("gptq/static_actorder_g64_k256.safetensors"); }
static void test_parity_asym(void **s) { (void)s; run_parity_case("gptq/asym_g128_k172.safetensors"); }
static void test_parity_asym_actorder(void **s) { (void)s; run_parity_case("gptq/asym_actorder_g64_k256.safetensors"); }
static void test_parity_perchannel(void **s) { (void)s; run_parity_case("gptq/perchannel_actorder_k96.safetensors"); }

// The dsyrk path equals the naive triple loop; codes do not depend on the thread count.
static void test_hessian_ref_and_threads(void **state) {
    (void)state;
    SafeTensors st;
    fixture_open(&st, "gptq/actorder_g32_k172.safetensors");
    const SafeTensor *wt = safetensors_find(&st, "w");
    const int64_t N = wt->shape[0], K = wt->shape[1];
    GptqHessian h, hr;
    accumulate_hessian(&h, &st, K);
    int64_t nb, nx;
    const int64_t *rows = tensor(&st, "batch_rows", ST_I64, &nb);
    const int64_t *seqs = tensor(&st, "batch_seqs", ST_I64, NULL);
    const float *X = tensor(&st, "x", ST_F32, &nx);
    assert_int_equal(gptq_hessian_init(&hr, K), STATUS_OK);
    for (int64_t b = 0, t = 0; b < nb; t += rows[b], b++)
        assert_int_equal(gptq_hessian_add_batch_ref(&hr, X + t * K, rows[b], seqs[b]), STATUS_OK);
    for (int64_t i = 0; i < K * K; i++)
        if (fabs(h.H[i] - hr.H[i]) > 1e-12 * (fabs(hr.H[i]) + 1e-3)) fail_msg("H[%lld] %g vs %g", (long long)i, h.H[i], hr.H[i]);
#ifdef _OPENMP
    GptqOptions o;
    gptq_options_defaults(&o);
    o.group_size = 32;
    o.act_order = true;
    GptqResult r1, r2;
    int nt = omp_get_max_threads();
    omp_set_num_threads(1);
    assert_int_equal(gptq_quantize_layer(&r1, wt->data, N, &h, &o), STATUS_OK);
    omp_set_num_threads(3);
    assert_int_equal(gptq_quantize_layer(&r2, wt->data, N, &h, &o), STATUS_OK);
    omp_set_num_threads(nt);
    assert_memory_equal(r1.q, r2.q, (size_t)(N * K));
    assert_memory_equal(r1.scales, r2.scales, (size_t)(r1.G * N) * sizeof(double));
    assert_true(r1.loss == r2.loss);
    gptq_result_release(&r1);
    gptq_result_release(&r2);
#endif
    gptq_hessian_release(&h);
    gptq_hessian_release(&hr);
    safetensors_close(&st);
}

// The reference quantizer's grid, including its quirks.
static void test_grid(void **state) {
    (void)state;
    double s, z;
    const double a[] = {-0.3, 0.1, 0.2};
    gptq_grid(&s, &z, a, 3, 4, true); // amax 0.3: scale 0.6/15, zero 8
    assert_true(s == 0.6 / 15 && z == 8);
    assert_int_equal(gptq_code(-0.3, s, z, 15), 0);   // -7.5 rounds to even (-8): 0
    assert_int_equal(gptq_code(0.3, s, z, 15), 15);   // 7.5 -> 8, +8 = 16, clamped
    const double pos[] = {0.1, 0.3};                  // no negative value: xmin stays 0
    gptq_grid(&s, &z, pos, 2, 4, true);
    assert_true(s == 0.3 / 15 && z == 8);
    const double zero[] = {0, 0};
    gptq_grid(&s, &z, zero, 2, 4, true);
    assert_true(s == 2.0 / 15 && z == 8);
    gptq_grid(&s, &z, a, 3, 4, false); // asym: (0.2 + 0.3)/15, zero rint(0.3/s) = rint(9) = 9
    assert_true(s == 0.5 / 15 && z == 9);
    gptq_grid(&s, &z, pos, 2, 4, false);
    assert_true(z == 0);
}

/* ---- error paths --------------------------------------------------------------------- */

static void set_hessian(GptqHessian *h, int64_t K, const double *H) {
    assert_int_equal(gptq_hessian_init(h, K), STATUS_OK);
    memcpy(h->H, H, (size_t)(K * K) * sizeof(double));
    h->n_samples = 1;
}

static void test_not_positive_definite(void **state) {
    (void)state;
    // eigenvalues 11 and -9: no dampening up to 1 x mean(diag) helps
    const double Hbad[] = {1, 10, 0, 0, 10, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1};
    const float W[] = {0.1f, -0.2f, 0.3f, 0.4f, 0.5f, 0.6f, -0.7f, 0.8f};
    GptqHessian h;
    set_hessian(&h, 4, Hbad);
    GptqOptions o;
    gptq_options_defaults(&o);
    GptqResult r;
    assert_int_equal(gptq_quantize_layer(&r, W, 2, &h, &o), STATUS_ERR_NUMERIC);
    assert_non_null(strstr(status_msg(), "not positive definite"));
    assert_null(r.q);
    // eigenvalue -0.05: fails at damp 0.01, succeeds after the automatic raise to 0.1
    h.H[1] = h.H[4] = 1.05;
    assert_int_equal(gptq_quantize_layer(&r, W, 2, &h, &o), STATUS_OK);
    assert_true(fabs(r.percdamp - 0.1) < 1e-12);
    gptq_result_release(&r);
    // NaN in the Hessian or the weights
    h.H[5] = NAN;
    assert_int_equal(gptq_quantize_layer(&r, W, 2, &h, &o), STATUS_ERR_NUMERIC);
    gptq_hessian_release(&h);
    const double Hok[] = {2, 0, 0, 0, 0, 2, 0, 0, 0, 0, 2, 0, 0, 0, 0, 2};
    set_hessian(&h, 4, Hok);
    float Wn[8];
    memcpy(Wn, W, sizeof W);
    Wn[3] = NAN;
    assert_int_equal(gptq_quantize_layer(&r, Wn, 2, &h, &o), STATUS_ERR_NUMERIC);
    assert_non_null(strstr(status_msg(), "weights"));
    gptq_hessian_release(&h);
}

static void test_bad_arguments(void **state) {
    (void)state;
    GptqOptions o;
    gptq_options_defaults(&o);
    o.bits = 9;
    assert_int_equal(gptq_options_check(&o), STATUS_ERR_ARG);
    gptq_options_defaults(&o);
    o.group_size = 0;
    assert_int_equal(gptq_options_check(&o), STATUS_ERR_ARG);
    gptq_options_defaults(&o);
    o.percdamp = -1;
    assert_int_equal(gptq_options_check(&o), STATUS_ERR_ARG);
    GptqHessian h;
    assert_int_equal(gptq_hessian_init(&h, 0), STATUS_ERR_ARG);
    assert_int_equal(gptq_hessian_init(&h, 4), STATUS_OK);
    const float X[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    assert_int_equal(gptq_hessian_add_batch(&h, X, 2, 0), STATUS_ERR_ARG);
    const float Xn[4] = {1, NAN, 3, 4};
    assert_int_equal(gptq_hessian_add_batch(&h, Xn, 1, 1), STATUS_ERR_NUMERIC);
    GptqResult r;
    gptq_options_defaults(&o);
    assert_int_equal(gptq_quantize_layer(&r, X, 2, &h, &o), STATUS_ERR_ARG); // no data yet
    assert_int_equal(gptq_hessian_add_batch(&h, X, 2, 1), STATUS_OK);
    assert_int_equal(gptq_quantize_layer(&r, X, 0, &h, &o), STATUS_ERR_ARG);
    gptq_hessian_release(&h);
}

/* ---- v1 packing ---------------------------------------------------------------------- */

// Tensors packed by tools/gptq_ref.py and dequantized by tools/dequant_ref.py.
static void run_pack_case(const char *file) {
    SafeTensors st;
    fixture_open(&st, file);
    const int64_t K = meta_int(&st, "in_features"), N = meta_int(&st, "out_features");
    const int group = meta_int(&st, "group");
    int64_t nz;
    const int32_t *q32 = tensor(&st, "q", ST_I32, NULL);
    const int32_t *zeros = tensor(&st, "zero", ST_I32, &nz);
    const uint32_t *qw = tensor(&st, "layer.qweight", ST_I32, NULL);
    const uint32_t *qz = tensor(&st, "layer.qzeros", ST_I32, NULL);
    const uint16_t *sc = tensor(&st, "layer.scales", ST_F16, NULL);
    const int32_t *gi = tensor(&st, "layer.g_idx", ST_I32, NULL);
    const float *deq = tensor(&st, "dequant", ST_F32, NULL);
    const int64_t G = nz / N;
    uint8_t *q = xmalloc((size_t)(N * K));
    for (int64_t i = 0; i < N * K; i++) q[i] = (uint8_t)q32[i];
    GptqPacked p;
    assert_int_equal(gptq_pack(&p, q, zeros, sc, gi, K, N, 4, group, G), STATUS_OK);
    assert_int_equal(gptq_packed_validate(&p, file), STATUS_OK);
    assert_memory_equal(p.qweight, qw, (size_t)(K / 8 * N) * 4);
    assert_memory_equal(p.qzeros, qz, (size_t)(G * N / 8) * 4);
    uint8_t *q2 = xmalloc((size_t)(N * K));
    int32_t *z2 = xmalloc((size_t)(G * N) * sizeof(int32_t));
    gptq_unpack_codes(q2, &p);
    gptq_unpack_zeros(z2, &p);
    assert_memory_equal(q2, q, (size_t)(N * K));
    assert_memory_equal(z2, zeros, (size_t)(G * N) * sizeof(int32_t));
    float *W = xmalloc((size_t)(N * K) * sizeof(float));
    gptq_dequantize(W, &p);
    for (int64_t i = 0; i < N * K; i++)
        if (f32_bits(W[i]) != f32_bits(deq[i]))
            fail_msg("%s: dequant[%lld] %.9g vs dequant_ref.py %.9g", file, (long long)i, (double)W[i], (double)deq[i]);
    free(W);
    free(q);
    free(q2);
    free(z2);
    gptq_packed_release(&p);
    safetensors_close(&st);
}

static void test_pack_vs_python(void **state) {
    (void)state;
    run_pack_case("gptq/pack_sym_actorder_g32.safetensors");
    run_pack_case("gptq/pack_asym_g128_k384.safetensors");
    run_pack_case("gptq/pack_perchannel.safetensors");
}

// Random codes through pack/unpack for 2/4/8 bits and ragged K, N.
static void test_pack_round_trip(void **state) {
    (void)state;
    Rng rng;
    rng_seed(&rng, 5);
    const int bits_list[] = {2, 4, 8};
    const int64_t shapes[][2] = {{172, 13}, {64, 64}, {9, 1}, {256, 40}};
    for (size_t bi = 0; bi < ARRAY_LEN(bits_list); bi++)
        for (size_t si = 0; si < ARRAY_LEN(shapes); si++) {
            const int bits = bits_list[bi];
            const int64_t K = shapes[si][0], N = shapes[si][1], g = 32, G = (K + g - 1) / g;
            uint8_t *q = xmalloc((size_t)(N * K)), *q2 = xmalloc((size_t)(N * K));
            int32_t *z = xmalloc((size_t)(G * N) * 4), *z2 = xmalloc((size_t)(G * N) * 4);
            uint16_t *sc = xmalloc((size_t)(G * N) * 2);
            int32_t *gi = xmalloc((size_t)K * 4);
            for (int64_t i = 0; i < N * K; i++) q[i] = (uint8_t)rng_below(&rng, 1u << bits);
            for (int64_t i = 0; i < G * N; i++) {
                z[i] = 1 + (int32_t)rng_below(&rng, 1u << bits);
                sc[i] = f32_to_fp16(0.01f);
            }
            for (int64_t i = 0; i < K; i++) gi[i] = (int32_t)(i / g);
            GptqPacked p;
            assert_int_equal(gptq_pack(&p, q, z, sc, gi, K, N, bits, (int)g, G), STATUS_OK);
            assert_int_equal(p.bits, bits);
            gptq_unpack_codes(q2, &p);
            gptq_unpack_zeros(z2, &p);
            assert_memory_equal(q, q2, (size_t)(N * K));
            assert_memory_equal(z, z2, (size_t)(G * N) * 4);
            gptq_packed_release(&p);
            free(q);
            free(q2);
            free(z);
            free(z2);
            free(sc);
            free(gi);
        }
}

// A GPTQ result packs (fp16 scales) and dequantizes to its own values within fp16 rounding;
// sym 4-bit qzeros are all 0x77777777.
static void test_pack_result(void **state) {
    (void)state;
    SafeTensors st;
    fixture_open(&st, "gptq/static_actorder_g64_k256.safetensors");
    const SafeTensor *wt = safetensors_find(&st, "w");
    const int64_t N = wt->shape[0], K = wt->shape[1];
    GptqHessian h;
    accumulate_hessian(&h, &st, K);
    GptqOptions o;
    gptq_options_defaults(&o);
    o.group_size = 64;
    o.act_order = true;
    GptqResult r;
    assert_int_equal(gptq_quantize_layer(&r, wt->data, N, &h, &o), STATUS_OK);
    GptqPacked p;
    assert_int_equal(gptq_pack_result(&p, &r), STATUS_OK);
    for (int64_t i = 0; i < p.G * N / 8; i++) assert_int_equal(p.qzeros[i], 0x77777777u);
    float *A = xmalloc((size_t)(N * K) * 4), *B = xmalloc((size_t)(N * K) * 4);
    gptq_result_dequantize(A, &r);
    gptq_dequantize(B, &p);
    assert_close_f32("fp16-scale dequant", B, A, N * K, 1e-7, 1.0 / 2048); // fp16: 2^-11 rel
    uint8_t *q = xmalloc((size_t)(N * K));
    gptq_unpack_codes(q, &p);
    assert_memory_equal(q, r.q, (size_t)(N * K));
    free(q);
    free(A);
    free(B);
    gptq_packed_release(&p);
    gptq_result_release(&r);
    gptq_hessian_release(&h);
    safetensors_close(&st);
}

static void test_pack_errors(void **state) {
    (void)state;
    uint8_t q[16] = {0};
    int32_t z[2] = {8, 0}; // a zero point of 0 has no v1 encoding
    uint16_t sc[2] = {0x3c00, 0x3c00};
    int32_t gi[16] = {0};
    GptqPacked p;
    assert_int_equal(gptq_pack(&p, q, z, sc, gi, 8, 2, 4, -1, 1), STATUS_ERR_UNSUPPORTED);
    assert_non_null(strstr(status_msg(), "v1"));
    assert_null(p.qweight);
    z[1] = 8;
    assert_int_equal(gptq_pack(&p, q, z, sc, gi, 8, 2, 3, -1, 1), STATUS_ERR_UNSUPPORTED);
    q[3] = 16;
    assert_int_equal(gptq_pack(&p, q, z, sc, gi, 8, 2, 4, -1, 1), STATUS_ERR_ARG);
    q[3] = 1;
    gi[5] = 1;
    assert_int_equal(gptq_pack(&p, q, z, sc, gi, 8, 2, 4, -1, 1), STATUS_ERR_ARG);
    gi[5] = 0;
    assert_int_equal(gptq_pack(&p, q, z, sc, gi, 0, 2, 4, -1, 1), STATUS_ERR_ARG);
    assert_int_equal(gptq_pack(&p, q, z, sc, gi, 8, 2, 4, -1, 1), STATUS_OK);
    p.G = 2; // inconsistent with group -1
    assert_int_equal(gptq_packed_validate(&p, "t"), STATUS_ERR_FORMAT);
    p.G = 1;
    p.scales[0] = 0x7e00;
    assert_int_equal(gptq_packed_validate(&p, "t"), STATUS_ERR_FORMAT);
    gptq_packed_release(&p);
}

// double -> fp16 with one rounding: 1 + 2^-11 + 2^-40 is just above the halfway point
// between 1 and 1 + 2^-10, so it rounds up; via float it would tie and round to 1.
static void test_f64_to_fp16(void **state) {
    (void)state;
    assert_int_equal(gptq_f64_to_fp16(1.0 + ldexp(1, -11) + ldexp(1, -40)), 0x3c01);
    assert_int_equal(gptq_f64_to_fp16(1.0 + ldexp(1, -11)), 0x3c00);
    assert_int_equal(gptq_f64_to_fp16(-(1.0 + ldexp(1, -11) + ldexp(1, -40))), 0xbc01);
    assert_int_equal(gptq_f64_to_fp16(0.5), 0x3800);
    assert_int_equal(gptq_f64_to_fp16(1e6), 0x7c00);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grid),
        cmocka_unit_test(test_parity_plain),
        cmocka_unit_test(test_parity_actorder),
        cmocka_unit_test(test_parity_static),
        cmocka_unit_test(test_parity_asym),
        cmocka_unit_test(test_parity_asym_actorder),
        cmocka_unit_test(test_parity_perchannel),
        cmocka_unit_test(test_hessian_ref_and_threads),
        cmocka_unit_test(test_not_positive_definite),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_pack_vs_python),
        cmocka_unit_test(test_pack_round_trip),
        cmocka_unit_test(test_pack_result),
        cmocka_unit_test(test_pack_errors),
        cmocka_unit_test(test_f64_to_fp16),
    };
    return cmocka_run_group_tests_name("gptq", tests, NULL, NULL);
}
