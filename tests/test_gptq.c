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
#include "core/fileio.h"
#include "core/log.h"
#include "core/rng.h"
#include "quant/gptq.h"
#include "quant/gptq_ckpt.h"
#include "quant/gptq_pack.h"
#include "testutil.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#else // NO_OMP builds: one thread, the thread-count checks compare a run with itself
static int omp_get_max_threads(void) { return 1; }
static void omp_set_num_threads(int n) { (void)n; }
#endif

// A fixture tensor of the expected dtype (asserts), its element count in *n.
static const void *tensor(const SafeTensors *st, const char *name, SafeDType dt, int64_t *n) {
    const SafeTensor *t = safetensors_find(st, name);
    if (!t) fail_msg("fixture tensor '%s' missing", name);
    if (t->dtype != dt)
        fail_msg("fixture tensor '%s' has dtype %s", name, safe_dtype_name(t->dtype));
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
    o.mse = safetensors_meta(&st, "mse") && meta_int(&st, "mse"); // absent before mse cases
    const SafeTensor *wt = safetensors_find(&st, "w");
    assert_non_null(wt);
    const int64_t N = wt->shape[0], K = wt->shape[1];
    const float *W = wt->data;

    GptqHessian h;
    accumulate_hessian(&h, &st, K);
    if (safetensors_find(&st, "h")) { // the running-average Hessian itself
        const double *Href = tensor(&st, "h", ST_F64, NULL);
        double amax = 0, dmax = 0;
        for (int64_t i = 0; i < K * K; i++) { // the upper triangle is what add_batch keeps
            amax = fmax(amax, fabs(Href[i]));
            if (i % K >= i / K) dmax = fmax(dmax, fabs(h.H[i] - Href[i]));
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
                  "rows, damp %g, dead %lld\n",
                  file, (long long)N, (long long)K, r.loss, lref[0], rel, n_diff, tie_rows,
                  r.percdamp, (long long)r.n_dead);
    free(row_tied);

    // RTN on the same grid: identical codes; GPTQ's output error below RTN's
    GptqResult rt;
    assert_int_equal(gptq_rtn_layer(&rt, W, N, K, &o), STATUS_OK);
    const int32_t *rq = tensor(&st, "rtn_q", ST_I32, NULL);
    for (int64_t i = 0; i < N * K; i++)
        if (rt.q[i] != rq[i])
            fail_msg("%s: rtn code %lld is %d, reference %d", file, (long long)i, rt.q[i], rq[i]);
    float *Wg = xmalloc((size_t)(N * K) * sizeof(float)),
          *Wr = xmalloc((size_t)(N * K) * sizeof(float));
    gptq_result_dequantize(Wg, &r);
    gptq_result_dequantize(Wr, &rt);
    gptq_hessian_symmetrize(&h);
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

static void test_parity_plain(void **s) {
    (void)s;
    run_parity_case("gptq/plain_g128_k172.safetensors");
}
static void test_parity_actorder(void **s) {
    (void)s;
    run_parity_case("gptq/actorder_g32_k172.safetensors");
}
static void test_parity_static(void **s) {
    (void)s;
    run_parity_case("gptq/static_actorder_g64_k256.safetensors");
}
static void test_parity_asym(void **s) {
    (void)s;
    run_parity_case("gptq/asym_g128_k172.safetensors");
}
static void test_parity_asym_actorder(void **s) {
    (void)s;
    run_parity_case("gptq/asym_actorder_g64_k256.safetensors");
}
static void test_parity_perchannel(void **s) {
    (void)s;
    run_parity_case("gptq/perchannel_actorder_k96.safetensors");
}
// MSE grid search (the reference's mse=True) on every grid: group, static groups with
// act-order and a dead column, per-channel asymmetric with the zero and all-positive rows
static void test_parity_mse(void **s) {
    (void)s;
    run_parity_case("gptq/mse_g128_k172.safetensors");
    run_parity_case("gptq/mse_asym_static_actorder_g64_k256.safetensors");
    run_parity_case("gptq/mse_asym_perchannel_k96.safetensors");
}

// A layer big enough for OpenBLAS's threaded LAPACK (K = 640): the same codes, scales and
// loss bits with 1 and 2 OpenBLAS threads and 1 and 3 OpenMP threads (before the
// factorisation was pinned to one BLAS thread, U and so the loss differed at 2 threads).
static void test_quantize_blas_threads(void **state) {
    (void)state;
    const int64_t K = 640, N = 48, T = 1024;
    Rng r;
    rng_seed(&r, 11);
    float *X = xmalloc((size_t)(T * K) * sizeof(float)), *W = xmalloc((size_t)(N * K) * 4);
    for (int64_t i = 0; i < T * K; i++)
        X[i] = (float)rng_normal(&r) * (1.0f + (float)(i % K) / 64.0f);
    for (int64_t i = 0; i < N * K; i++)
        W[i] = 0.05f * (float)rng_normal(&r);
    GptqHessian h;
    assert_int_equal(gptq_hessian_init(&h, K), STATUS_OK);
    assert_int_equal(gptq_hessian_add_batch(&h, X, T, 8), STATUS_OK);
    GptqOptions o;
    gptq_options_defaults(&o);
    GptqResult r1, r2;
    int nt = omp_get_max_threads(), bt = openblas_get_num_threads();
    omp_set_num_threads(1);
    openblas_set_num_threads(1);
    assert_int_equal(gptq_quantize_layer(&r1, W, N, &h, &o), STATUS_OK);
    omp_set_num_threads(3);
    openblas_set_num_threads(2);
    assert_int_equal(gptq_quantize_layer(&r2, W, N, &h, &o), STATUS_OK);
    omp_set_num_threads(nt);
    openblas_set_num_threads(bt);
    assert_memory_equal(r1.q, r2.q, (size_t)(N * K));
    assert_memory_equal(r1.scales, r2.scales, (size_t)(r1.G * N) * sizeof(double));
    assert_true(r1.loss == r2.loss);
    gptq_result_release(&r1);
    gptq_result_release(&r2);
    gptq_hessian_release(&h);
    free(X);
    free(W);
}

// The factor of a Hessian bigger than one block of the blocked Cholesky (K = 300 and 700:
// ragged last blocks): U upper with a positive diagonal, U^T U (H + damp I) = I to rounding
// (measured 3e-15 / 4e-15), and the same bits on 1, 2 and 3 threads (each tile is one
// single-threaded BLAS call).
static void test_factor_blocked(void **state) {
    (void)state;
    const int64_t Ks[] = {300, 700};
    for (size_t ki = 0; ki < ARRAY_LEN(Ks); ki++) {
        const int64_t K = Ks[ki], T = 2 * K;
        Rng r;
        rng_seed(&r, 5 + ki);
        float *X = xmalloc((size_t)(T * K) * sizeof(float));
        for (int64_t i = 0; i < T * K; i++)
            X[i] = (float)rng_normal(&r) * (1.0f + (float)(i % K) / 50.0f);
        GptqHessian h;
        assert_int_equal(gptq_hessian_init(&h, K), STATUS_OK);
        assert_int_equal(gptq_hessian_add_batch(&h, X, T, 4), STATUS_OK);
        GptqOptions o;
        gptq_options_defaults(&o);
        GptqFactor f[3];
        const int nt = omp_get_max_threads();
        for (int t = 0; t < 3; t++) {
            omp_set_num_threads(t + 1);
            assert_int_equal(gptq_factor_init(&f[t], &h, &o), STATUS_OK);
        }
        omp_set_num_threads(nt);
        for (int t = 1; t < 3; t++)
            assert_memory_equal(f[0].U, f[t].U, (size_t)(K * K) * sizeof(double));
        // the factor reads H's upper triangle only (plain and act-order): NaN below the
        // diagonal changes nothing
        GptqHessian hn;
        assert_int_equal(gptq_hessian_init(&hn, K), STATUS_OK);
        hn.n_samples = h.n_samples;
        for (int64_t i = 0; i < K; i++)
            for (int64_t j = 0; j < K; j++)
                hn.H[i * K + j] = j >= i ? h.H[i * K + j] : NAN;
        for (int ao = 0; ao < 2; ao++) {
            GptqFactor fa, fb;
            o.act_order = ao;
            assert_int_equal(gptq_factor_init(&fa, &h, &o), STATUS_OK);
            assert_int_equal(gptq_factor_init(&fb, &hn, &o), STATUS_OK);
            assert_memory_equal(fa.U, fb.U, (size_t)(K * K) * sizeof(double));
            assert_memory_equal(fa.perm, fb.perm, (size_t)K * sizeof(int32_t));
            gptq_factor_release(&fa);
            gptq_factor_release(&fb);
        }
        o.act_order = false;
        gptq_hessian_release(&hn);
        gptq_hessian_symmetrize(&h); // the check below reads H whole
        const double *U = f[0].U;
        double mean = 0;
        for (int64_t i = 0; i < K; i++)
            mean += h.H[i * K + i] / (double)K;
        const double damp = o.percdamp * mean;
        for (int64_t i = 0; i < K; i++) {
            assert_true(U[i * K + i] > 0);
            for (int64_t j = 0; j < i; j++)
                assert_true(U[i * K + j] == 0);
        }
        double *M = xcalloc((size_t)(K * K), sizeof(double)); // U^T U
        for (int64_t i = 0; i < K; i++)
            for (int64_t j = 0; j < K; j++) {
                double acc = 0;
                for (int64_t k = 0; k <= MIN(i, j); k++)
                    acc += U[k * K + i] * U[k * K + j];
                M[i * K + j] = acc;
            }
        double worst = 0;
        for (int64_t i = 0; i < K; i++)
            for (int64_t j = 0; j < K; j++) {
                double acc = 0;
                for (int64_t k = 0; k < K; k++)
                    acc += M[i * K + k] * (h.H[k * K + j] + (k == j ? damp : 0));
                worst = fmax(worst, fabs(acc - (i == j)));
            }
        if (worst > 1e-12) fail_msg("K %lld: |U^T U H - I| = %g", (long long)K, worst);
        for (int t = 0; t < 3; t++)
            gptq_factor_release(&f[t]);
        free(M);
        free(X);
        gptq_hessian_release(&h);
    }
}

// The 8-row tile path (vectorized where the CPU allows) gives the bits of the scalar one-row
// twin, for row counts that do not fill the last tile, every grid option, dead columns, and
// one factor shared by several weights (as q/k/v share theirs).
static void test_tile_vs_row_ref(void **state) {
    (void)state;
    const int64_t K = 200, T = 400;
    Rng r;
    rng_seed(&r, 23);
    float *X = xmalloc((size_t)(T * K) * sizeof(float)), *W = xmalloc((size_t)(45 * K) * 4);
    for (int64_t i = 0; i < T * K; i++) // inputs 7 and 150 always 0: dead columns
        X[i] = (i % K == 7 || i % K == 150) ? 0 : (float)rng_normal(&r) * (1.0f + (float)(i % 13));
    for (int64_t i = 0; i < 45 * K; i++)
        W[i] = 0.05f * (float)rng_normal(&r) + (i % 37 == 0 ? 0.3f : 0.0f);
    GptqHessian h;
    assert_int_equal(gptq_hessian_init(&h, K), STATUS_OK);
    assert_int_equal(gptq_hessian_add_batch(&h, X, T, 4), STATUS_OK);
    struct {
        int bits, group;
        bool sym, act_order, static_groups, mse;
        int blocksize;
    } cases[] = {
        {4, 128, true, false, false, false, 128}, {4, -1, true, false, false, false, 128},
        {4, 32, false, true, false, false, 128},  {4, 64, true, true, true, false, 48},
        {3, 48, false, false, false, true, 128},  {2, 32, true, true, false, false, 200},
        {8, 128, false, false, true, false, 7},
    };
    const int64_t rows[] = {45, 8, 3, 17};
    for (size_t ci = 0; ci < ARRAY_LEN(cases); ci++) {
        GptqOptions o;
        gptq_options_defaults(&o);
        o.bits = cases[ci].bits;
        o.group_size = cases[ci].group;
        o.sym = cases[ci].sym;
        o.act_order = cases[ci].act_order;
        o.static_groups = cases[ci].static_groups;
        o.mse = cases[ci].mse;
        o.blocksize = cases[ci].blocksize;
        GptqFactor f;
        assert_int_equal(gptq_factor_init(&f, &h, &o), STATUS_OK);
        assert_int_equal(f.n_dead, 2);
        for (size_t ri = 0; ri < ARRAY_LEN(rows); ri++) {
            const int64_t N = rows[ri];
            const float *Wr = W + (45 - N) * K; // a different weight for each row count
            GptqResult a, b, c;
            assert_int_equal(gptq_quantize_factored(&a, Wr, N, &f, &o), STATUS_OK);
            assert_int_equal(gptq_quantize_factored_ref(&b, Wr, N, &f, &o), STATUS_OK);
            assert_int_equal(gptq_quantize_layer(&c, Wr, N, &h, &o), STATUS_OK);
            assert_memory_equal(a.q, b.q, (size_t)(N * K));
            assert_memory_equal(a.scales, b.scales, (size_t)(a.G * N) * sizeof(double));
            assert_memory_equal(a.zeros, b.zeros, (size_t)(a.G * N) * sizeof(int32_t));
            assert_memory_equal(a.g_idx, b.g_idx, (size_t)K * sizeof(int32_t));
            assert_true(a.loss == b.loss && a.loss > 0);
            assert_memory_equal(a.q, c.q, (size_t)(N * K));
            assert_true(a.loss == c.loss);
            gptq_result_release(&a);
            gptq_result_release(&b);
            gptq_result_release(&c);
        }
        // a factor made for the other act-order setting is refused
        o.act_order = !o.act_order;
        GptqResult a;
        assert_int_equal(gptq_quantize_factored(&a, W, 4, &f, &o), STATUS_ERR_ARG);
        gptq_factor_release(&f);
    }
    gptq_hessian_release(&h);
    free(X);
    free(W);
}

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
    gptq_hessian_symmetrize(&h);
    // within 1e-12 of sqrt(H_ii H_jj) >= (2/n) sum |x_i x_j|, the scale of the sum's rounding
    // (an entry that cancels to near 0 keeps the rounding of its terms; relative to the entry
    // itself the two summation orders differed by 3e-12 with OpenBLAS on a Sapphire Rapids)
    for (int64_t i = 0; i < K * K; i++) {
        const double scale = sqrt(hr.H[(i / K) * (K + 1)] * hr.H[(i % K) * (K + 1)]);
        if (fabs(h.H[i] - hr.H[i]) > 1e-12 * scale)
            fail_msg("H[%lld] %.17g vs %.17g (scale %g)", (long long)i, h.H[i], hr.H[i], scale);
    }
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
    gptq_hessian_release(&h);
    gptq_hessian_release(&hr);
    safetensors_close(&st);
}

// The Hessian's tiled update (one-thread BLAS tiles on the OpenMP threads) gives the same
// bits on any thread count: K = 900 is 3 x 3 tiles (6 with the diagonal), fewer than 8
// threads, more than 1-3; batches of 700 and 400 rows (longer than OpenBLAS's 256-row inner
// blocks, which its dgemm and dsyrk split differently: a fallback to one whole dsyrk when
// tiles are fewer than threads made 8 threads differ from 1) with n_samples 3 and 1, so
// alpha = 2/3 and then 1/2.
static void test_hessian_threads(void **state) {
    (void)state;
    const int64_t K = 900, T = 1100;
    Rng r;
    rng_seed(&r, 11);
    float *X = xmalloc((size_t)(T * K) * sizeof(float));
    for (int64_t i = 0; i < T * K; i++)
        X[i] = (float)rng_normal(&r) * (1.0f + (float)(i % K) / 100.0f);
    const int threads[] = {1, 2, 3, 8};
    GptqHessian h[ARRAY_LEN(threads)];
    const int nt = omp_get_max_threads();
    for (size_t t = 0; t < ARRAY_LEN(threads); t++) {
        omp_set_num_threads(threads[t]);
        assert_int_equal(gptq_hessian_init(&h[t], K), STATUS_OK);
        assert_int_equal(gptq_hessian_add_batch(&h[t], X, 700, 3), STATUS_OK);
        assert_int_equal(gptq_hessian_add_batch(&h[t], X + 700 * K, T - 700, 1), STATUS_OK);
        gptq_hessian_symmetrize(&h[t]);
    }
    omp_set_num_threads(nt);
    for (size_t t = 1; t < ARRAY_LEN(threads); t++)
        assert_memory_equal(h[0].H, h[t].H, (size_t)(K * K) * sizeof(double));
    // and the numbers: the naive sum within the summation-order scale
    GptqHessian hr;
    assert_int_equal(gptq_hessian_init(&hr, K), STATUS_OK);
    assert_int_equal(gptq_hessian_add_batch_ref(&hr, X, 700, 3), STATUS_OK);
    assert_int_equal(gptq_hessian_add_batch_ref(&hr, X + 700 * K, T - 700, 1), STATUS_OK);
    for (int64_t i = 0; i < K * K; i++) {
        const double scale = sqrt(hr.H[(i / K) * (K + 1)] * hr.H[(i % K) * (K + 1)]);
        if (fabs(h[0].H[i] - hr.H[i]) > 1e-12 * scale)
            fail_msg("H[%lld] %.17g vs %.17g", (long long)i, h[0].H[i], hr.H[i]);
    }
    for (size_t t = 0; t < ARRAY_LEN(threads); t++)
        gptq_hessian_release(&h[t]);
    gptq_hessian_release(&hr);
    free(X);
}

// The reference quantizer's grid, including its quirks.
static void test_grid(void **state) {
    (void)state;
    double s, z;
    const double a[] = {-0.3, 0.1, 0.2};
    gptq_grid(&s, &z, a, 3, 4, true, false); // amax 0.3: scale 0.6/15, zero 8
    assert_true(s == 0.6 / 15 && z == 8);
    assert_int_equal(gptq_code(-0.3, s, z, 15), 0); // -7.5 rounds to even (-8): 0
    assert_int_equal(gptq_code(0.3, s, z, 15), 15); // 7.5 -> 8, +8 = 16, clamped
    const double pos[] = {0.1, 0.3};                // no negative value: xmin stays 0
    gptq_grid(&s, &z, pos, 2, 4, true, false);
    assert_true(s == 0.3 / 15 && z == 8);
    const double zero[] = {0, 0};
    gptq_grid(&s, &z, zero, 2, 4, true, false);
    assert_true(s == 2.0 / 15 && z == 8);
    // asym: (0.2 + 0.3)/15, zero rint(0.3/s) = rint(9) = 9
    gptq_grid(&s, &z, a, 3, 4, false, false);
    assert_true(s == 0.5 / 15 && z == 9);
    gptq_grid(&s, &z, pos, 2, 4, false, false);
    assert_true(z == 0);
}

// The MSE search prunes with a fast error estimate; it must choose exactly the grid of the
// exhaustive search with libm's pow, on Gaussian, heavy-tailed, sparse, constant and
// degenerate segments, sym and asym, 2/4/8 bits, lengths 1..300.
static void test_grid_mse_pruned(void **state) {
    (void)state;
    Rng rng;
    rng_seed(&rng, 5);
    double x[300];
    int moved = 0;
    for (int t = 0; t < 1500; t++) {
        const int n = 1 + (int)(rng_uniform(&rng) * 300), kind = t % 6;
        const int bits = t % 7 == 0 ? 2 : t % 7 == 1 ? 8 : 4;
        const bool sym = (t / 6) % 2 == 0;
        for (int k = 0; k < n; k++) {
            double v = 0.02 * rng_normal(&rng);
            if (kind == 1) v = v / (0.05 + fabs(rng_normal(&rng))); // heavy tails
            if (kind == 2 && rng_uniform(&rng) < 0.8) v = 0;        // sparse
            if (kind == 3) v = 0.125;                               // constant
            if (kind == 4) v = fabs(v);                             // all positive
            if (kind == 5 && k > 0) v = 1e-3 * v;                   // one outlier
            x[k] = v;
        }
        double s0, z0, s1, z1, s2, z2;
        gptq_grid(&s0, &z0, x, n, bits, sym, false);
        gptq_grid(&s1, &z1, x, n, bits, sym, true);
        gptq_grid_mse_ref(&s2, &z2, x, n, bits, sym);
        if (s1 != s2 || z1 != z2)
            fail_msg("case %d (n %d, kind %d, bits %d, sym %d): pruned %.17g/%g, exhaustive "
                     "%.17g/%g",
                     t, n, kind, bits, sym, s1, z1, s2, z2);
        moved += s1 != s0;
    }
    print_message("MSE grids: 1500 segments, pruned == exhaustive, %d shrunk\n", moved);
    assert_true(moved > 500); // the search does something
}

// stories260K-like shapes: a group wider than K is one group (min(g, K)), the same as
// per-channel when no column is dead; and g 32 on K = 172 leaves a ragged group of 12.
static void test_small_shapes(void **state) {
    (void)state;
    Rng rng;
    rng_seed(&rng, 17);
    const int64_t N = 16, K = 64, T = 256;
    float *X = xmalloc((size_t)(T * 172) * 4), *W = xmalloc((size_t)(N * 172) * 4);
    for (int64_t i = 0; i < T * 172; i++)
        X[i] = (float)rng_normal(&rng);
    for (int64_t i = 0; i < N * 172; i++)
        W[i] = (float)(0.02 * rng_normal(&rng));
    GptqHessian h;
    assert_int_equal(gptq_hessian_init(&h, K), STATUS_OK);
    assert_int_equal(gptq_hessian_add_batch(&h, X, T * 172 / K, 4), STATUS_OK);
    GptqOptions o;
    gptq_options_defaults(&o); // group 128 > K = 64
    GptqResult a, b;
    assert_int_equal(gptq_quantize_layer(&a, W, N, &h, &o), STATUS_OK);
    assert_int_equal(a.G, 1);
    o.group_size = -1;
    assert_int_equal(gptq_quantize_layer(&b, W, N, &h, &o), STATUS_OK);
    assert_memory_equal(a.q, b.q, (size_t)(N * K));
    assert_true(a.loss == b.loss);
    gptq_result_release(&a);
    gptq_result_release(&b);
    gptq_hessian_release(&h);
    assert_int_equal(gptq_hessian_init(&h, 172), STATUS_OK);
    assert_int_equal(gptq_hessian_add_batch(&h, X, T, 4), STATUS_OK);
    o.group_size = 32;
    o.act_order = true;
    assert_int_equal(gptq_quantize_layer(&a, W, N, &h, &o), STATUS_OK);
    assert_int_equal(a.G, 6);
    int count[6] = {0};
    for (int64_t j = 0; j < 172; j++)
        count[a.g_idx[j]]++;
    for (int g = 0; g < 5; g++)
        assert_int_equal(count[g], 32);
    assert_int_equal(count[5], 12);
    GptqPacked p;
    assert_int_equal(gptq_pack_result(&p, &a), STATUS_OK);
    assert_int_equal(gptq_qweight_rows(172, 4), 22); // 21.5 words: the last is half padding
    uint8_t *q = xmalloc((size_t)(N * 172));
    gptq_unpack_codes(q, &p);
    assert_memory_equal(q, a.q, (size_t)(N * 172));
    free(q);
    gptq_packed_release(&p);
    gptq_result_release(&a);
    gptq_hessian_release(&h);
    free(X);
    free(W);
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
    const int group = meta_int(&st, "group"), bits = meta_int(&st, "bits");
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
    for (int64_t i = 0; i < N * K; i++)
        q[i] = (uint8_t)q32[i];
    GptqPacked p;
    assert_int_equal(gptq_pack(&p, q, zeros, sc, gi, K, N, bits, group, G), STATUS_OK);
    assert_int_equal(gptq_packed_validate(&p, file), STATUS_OK);
    assert_memory_equal(p.qweight, qw, (size_t)(gptq_qweight_rows(K, bits) * N) * 4);
    assert_memory_equal(p.qzeros, qz, (size_t)(G * gptq_qzeros_cols(N, bits)) * 4);
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
            fail_msg("%s: dequant[%lld] %.9g vs dequant_ref.py %.9g", file, (long long)i,
                     (double)W[i], (double)deq[i]);
    // the same tensors read as a checkpoint linear (2/8-bit ones load this way, dequantized)
    GptqConfig c;
    gptq_config_defaults(&c);
    c.bits = bits;
    c.group_size = group;
    c.sym = meta_int(&st, "sym");
    c.desc_act = meta_int(&st, "desc_act");
    StDir sd;
    st_dir_wrap(&sd, &st);
    GptqPacked r;
    assert_int_equal(gptq_ckpt_read_linear(&r, &sd, "layer", &c, K, N), STATUS_OK);
    st_dir_release(&sd);
    gptq_dequantize(W, &r);
    assert_memory_equal(W, deq, (size_t)(N * K) * sizeof(float));
    gptq_packed_release(&r);
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
    run_pack_case("gptq/pack_8bit_asym_g64.safetensors");
    run_pack_case("gptq/pack_2bit_sym_actorder_g32.safetensors");
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
            for (int64_t i = 0; i < N * K; i++)
                q[i] = (uint8_t)rng_below(&rng, 1u << bits);
            for (int64_t i = 0; i < G * N; i++) {
                z[i] = 1 + (int32_t)rng_below(&rng, 1u << bits);
                sc[i] = f32_to_fp16(0.01f);
            }
            for (int64_t i = 0; i < K; i++)
                gi[i] = (int32_t)(i / g);
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
    for (int64_t i = 0; i < p.G * N / 8; i++)
        assert_int_equal(p.qzeros[i], 0x77777777u);
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

/* ---- checkpoints --------------------------------------------------------------------- */

static void packed_equal(const GptqPacked *a, const GptqPacked *b) {
    assert_int_equal(a->K, b->K);
    assert_int_equal(a->N, b->N);
    assert_int_equal(a->G, b->G);
    assert_int_equal(a->bits, b->bits);
    assert_memory_equal(a->qweight, b->qweight,
                        (size_t)(gptq_qweight_rows(a->K, a->bits) * a->N) * 4);
    assert_memory_equal(a->qzeros, b->qzeros, (size_t)(a->G * gptq_qzeros_cols(a->N, a->bits)) * 4);
    assert_memory_equal(a->scales, b->scales, (size_t)(a->G * a->N) * 2);
    assert_memory_equal(a->g_idx, b->g_idx, (size_t)a->K * 4);
    assert_int_equal(!a->bias, !b->bias);
    if (a->bias) assert_memory_equal(a->bias, b->bias, (size_t)a->N * 2);
}

// A random sym 4-bit layer (K, N, group), packed.
static void random_packed(GptqPacked *p, int64_t K, int64_t N, int group, uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    const int64_t G = group == -1 ? 1 : (K + group - 1) / group;
    uint8_t *q = xmalloc((size_t)(N * K));
    int32_t *z = xmalloc((size_t)(G * N) * 4), *gi = xmalloc((size_t)K * 4);
    uint16_t *sc = xmalloc((size_t)(G * N) * 2);
    for (int64_t i = 0; i < N * K; i++)
        q[i] = (uint8_t)rng_below(&rng, 16);
    for (int64_t i = 0; i < G * N; i++) {
        z[i] = 8;
        sc[i] = f32_to_fp16((float)(0.01 * rng_uniform(&rng) + 1e-3));
    }
    for (int64_t i = 0; i < K; i++)
        gi[i] = group == -1 ? 0 : (int32_t)(i / group);
    assert_int_equal(gptq_pack(p, q, z, sc, gi, K, N, 4, group, G), STATUS_OK);
    free(q);
    free(z);
    free(gi);
    free(sc);
}

static char *tmp_dir(void) {
    char tmpl[] = "/tmp/ef_test_gptq_XXXXXX";
    char *d = mkdtemp(tmpl);
    assert_non_null(d);
    return xstrdup(d);
}

static void rm_dir(const char *dir) {
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_ckpt_round_trip(void **state) {
    (void)state;
    char *dir = tmp_dir();
    GptqPacked a, b;
    random_packed(&a, 256, 72, 64, 21);
    a.bias = xmalloc(72 * 2);
    for (int i = 0; i < 72; i++)
        a.bias[i] = f32_to_fp16((float)i / 10);
    SafeWriter w;
    safewriter_init(&w);
    gptq_ckpt_add_linear(&w, "model.layers.0.mlp.up_proj", &a);
    char *path = path_join(dir, "model.safetensors");
    assert_int_equal(safewriter_write(&w, path), STATUS_OK);
    safewriter_release(&w);
    // config.json keeps its keys and gains quantization_config; quantize_config.json matches
    char *cfg = path_join(dir, "config.json");
    const char *hf = "{\"model_type\": \"llama\", \"hidden_size\": 64}";
    assert_int_equal(file_write_all(cfg, hf, strlen(hf)), STATUS_OK);
    GptqConfig c, c2, c3;
    gptq_config_defaults(&c);
    c.group_size = 64;
    c.desc_act = true;
    assert_int_equal(gptq_config_write(dir, &c), STATUS_OK);
    assert_int_equal(gptq_config_read(&c2, dir), STATUS_OK);
    assert_int_equal(c2.group_size, 64);
    assert_true(c2.desc_act && c2.sym && !c2.static_groups && c2.bits == 4);
    char *text = NULL;
    size_t n;
    assert_int_equal(file_read_all(cfg, &text, &n), STATUS_OK);
    assert_non_null(strstr(text, "\"model_type\": \"llama\""));
    assert_int_equal(gptq_config_parse(&c3, text, "config.json"), STATUS_OK);
    assert_int_equal(c3.group_size, 64);
    assert_true(c3.desc_act);
    free(text);
    SafeTensors st;
    assert_int_equal(safetensors_open(&st, path), STATUS_OK);
    StDir sd;
    st_dir_wrap(&sd, &st);
    assert_int_equal(gptq_ckpt_read_linear(&b, &sd, "model.layers.0.mlp.up_proj", &c2, 256, 72),
                     STATUS_OK);
    packed_equal(&a, &b);
    gptq_packed_release(&b);
    assert_int_equal(gptq_ckpt_read_linear(&b, &sd, "model.layers.0.mlp.up_proj", &c2, 0, 0),
                     STATUS_OK); // shapes inferred
    packed_equal(&a, &b);
    gptq_packed_release(&b);
    assert_int_equal(gptq_ckpt_read_linear(&b, &sd, "model.layers.0.mlp.up_proj", &c2, 256, 64),
                     STATUS_ERR_FORMAT); // not the expected out_features
    st_dir_release(&sd);
    safetensors_close(&st);
    gptq_packed_release(&a);
    free(cfg);
    free(path);
    rm_dir(dir);
    free(dir);
}

// The layer packed by tools/gptq_ref.py, read as a checkpoint, dequantizes like dequant_ref.py.
static void test_ckpt_python_file(void **state) {
    (void)state;
    SafeTensors st;
    fixture_open(&st, "gptq/pack_sym_actorder_g32.safetensors");
    GptqConfig c;
    assert_int_equal(gptq_config_parse(&c,
                                       "{\"quant_method\": \"gptq\", \"bits\": 4, "
                                       "\"group_size\": 32, \"desc_act\": true, \"sym\": true}",
                                       "inline"),
                     STATUS_OK);
    GptqPacked p;
    StDir sd;
    st_dir_wrap(&sd, &st);
    assert_int_equal(gptq_ckpt_read_linear(&p, &sd, "layer", &c, 0, 0), STATUS_OK);
    st_dir_release(&sd);
    const float *deq = tensor(&st, "dequant", ST_F32, NULL);
    float *W = xmalloc((size_t)(p.N * p.K) * 4);
    gptq_dequantize(W, &p);
    assert_memory_equal(W, deq, (size_t)(p.N * p.K) * 4);
    free(W);
    gptq_packed_release(&p);
    safetensors_close(&st);
}

// Writes a checkpoint with one tensor replaced and expects `want` mentioning `needle`.
typedef enum {
    BAD_NONE,
    BAD_QWEIGHT_DTYPE,
    BAD_QZEROS_SHAPE,
    BAD_NO_SCALES,
    BAD_GIDX_RANGE,
    BAD_BIAS_SHAPE
} BadKind;

static void expect_bad(const char *dir, BadKind kind, const GptqConfig *c, Status want,
                       const char *needle) {
    GptqPacked a, b;
    random_packed(&a, 128, 64, 32, 9);
    SafeWriter w;
    safewriter_init(&w);
    int64_t shp[2];
    float *f = xcalloc(16 * 64, 4);
    uint16_t *bias = xcalloc(65, 2);
    if (kind == BAD_GIDX_RANGE) a.g_idx[17] = 4;
    if (kind != BAD_QWEIGHT_DTYPE) {
        shp[0] = 16;
        shp[1] = 64;
        safewriter_add(&w, "l.qweight", ST_I32, 2, shp, a.qweight);
    } else {
        shp[0] = 16;
        shp[1] = 64;
        safewriter_add(&w, "l.qweight", ST_F32, 2, shp, f);
    }
    shp[0] = 4;
    shp[1] = kind == BAD_QZEROS_SHAPE ? 7 : 8;
    safewriter_add(&w, "l.qzeros", ST_I32, 2, shp, a.qzeros);
    shp[1] = 64;
    if (kind != BAD_NO_SCALES) safewriter_add(&w, "l.scales", ST_F16, 2, shp, a.scales);
    shp[0] = 128;
    safewriter_add(&w, "l.g_idx", ST_I32, 1, shp, a.g_idx);
    if (kind == BAD_BIAS_SHAPE) {
        shp[0] = 65;
        safewriter_add(&w, "l.bias", ST_F16, 1, shp, bias);
    }
    char *path = path_join(dir, "bad.safetensors");
    assert_int_equal(safewriter_write(&w, path), STATUS_OK);
    safewriter_release(&w);
    SafeTensors st;
    assert_int_equal(safetensors_open(&st, path), STATUS_OK);
    StDir sd;
    st_dir_wrap(&sd, &st);
    Status s = gptq_ckpt_read_linear(&b, &sd, "l", c, 0, 0);
    st_dir_release(&sd);
    if (s != want || (needle && !strstr(status_msg(), needle)))
        fail_msg("case %d: status %d (%s), want %d with '%s'", kind, s, status_msg(), want, needle);
    if (s == STATUS_OK) gptq_packed_release(&b);
    assert_null(s == STATUS_OK ? NULL : b.qweight);
    safetensors_close(&st);
    free(path);
    free(f);
    free(bias);
    gptq_packed_release(&a);
}

static void test_ckpt_corrupt(void **state) {
    (void)state;
    char *dir = tmp_dir();
    GptqConfig c;
    gptq_config_defaults(&c);
    c.group_size = 32;
    expect_bad(dir, BAD_NONE, &c, STATUS_OK, NULL);
    expect_bad(dir, BAD_QWEIGHT_DTYPE, &c, STATUS_ERR_FORMAT, "dtype");
    expect_bad(dir, BAD_QZEROS_SHAPE, &c, STATUS_ERR_FORMAT, "qzeros");
    expect_bad(dir, BAD_NO_SCALES, &c, STATUS_ERR_FORMAT, "missing");
    expect_bad(dir, BAD_GIDX_RANGE, &c, STATUS_ERR_FORMAT, "g_idx");
    expect_bad(dir, BAD_BIAS_SHAPE, &c, STATUS_ERR_FORMAT, "bias");
    c.group_size = 64; // the file has 4 groups of 32
    expect_bad(dir, BAD_NONE, &c, STATUS_ERR_FORMAT, "groups");
    c.group_size = 32;
    c.bits = 3;
    expect_bad(dir, BAD_NONE, &c, STATUS_ERR_UNSUPPORTED, "3-bit");
    // quantization_config errors
    GptqConfig d;
    const struct {
        const char *json;
        Status want;
    } cfgs[] = {
        {"{\"bits\": 4, \"group_size\": 128, \"sym\": true}", STATUS_OK},
        {"{\"quantization_config\": {\"quant_method\": \"gptq\", \"bits\": 4, \"group_size\": -1, "
         "\"sym\": false}}",
         STATUS_OK},
        {"{\"quant_method\": \"awq\", \"bits\": 4, \"group_size\": 128}", STATUS_ERR_UNSUPPORTED},
        {"{\"bits\": 4, \"group_size\": 128, \"format\": \"gptq_v2\"}", STATUS_ERR_UNSUPPORTED},
        {"{\"bits\": 4, \"group_size\": 128, \"checkpoint_format\": \"marlin\"}",
         STATUS_ERR_UNSUPPORTED},
        {"{\"bits\": \"4\", \"group_size\": 128}", STATUS_ERR_FORMAT},
        {"{\"bits\": 5, \"group_size\": 128}", STATUS_ERR_FORMAT},
        {"{\"bits\": 4, \"group_size\": 0}", STATUS_ERR_FORMAT},
        {"{\"bits\": 4, \"group_size\": 128, \"desc_act\": 1}", STATUS_ERR_FORMAT},
        {"{\"bits\": 4, \"group_size\": 128", STATUS_ERR_FORMAT},
        {"[1, 2]", STATUS_ERR_FORMAT},
        {"{\"quantization_config\": 7}", STATUS_ERR_FORMAT},
    };
    for (size_t i = 0; i < ARRAY_LEN(cfgs); i++) {
        Status s = gptq_config_parse(&d, cfgs[i].json, "config.json");
        if (s != cfgs[i].want) fail_msg("config %zu: status %d (%s)", i, s, status_msg());
    }
    assert_int_equal(gptq_config_read(&d, dir), STATUS_ERR_IO); // neither file
    rm_dir(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grid),
        cmocka_unit_test(test_grid_mse_pruned),
        cmocka_unit_test(test_parity_plain),
        cmocka_unit_test(test_parity_actorder),
        cmocka_unit_test(test_parity_static),
        cmocka_unit_test(test_parity_asym),
        cmocka_unit_test(test_parity_asym_actorder),
        cmocka_unit_test(test_parity_perchannel),
        cmocka_unit_test(test_parity_mse),
        cmocka_unit_test(test_hessian_ref_and_threads),
        cmocka_unit_test(test_quantize_blas_threads),
        cmocka_unit_test(test_tile_vs_row_ref),
        cmocka_unit_test(test_factor_blocked),
        cmocka_unit_test(test_hessian_threads),
        cmocka_unit_test(test_small_shapes),
        cmocka_unit_test(test_not_positive_definite),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_pack_vs_python),
        cmocka_unit_test(test_pack_round_trip),
        cmocka_unit_test(test_pack_result),
        cmocka_unit_test(test_pack_errors),
        cmocka_unit_test(test_f64_to_fp16),
        cmocka_unit_test(test_ckpt_round_trip),
        cmocka_unit_test(test_ckpt_python_file),
        cmocka_unit_test(test_ckpt_corrupt),
    };
    return cmocka_run_group_tests_name("gptq", tests, NULL, NULL);
}
