/*
 * test_ops.c - every optimized kernel (src/tensor/ops_cpu.c and its SIMD paths) against
 * its naive _ref twin (src/tensor/ops_ref.c) on odd shapes: dimensions of 1, sizes that
 * are not multiples of the SIMD width or the row block, F32/F16/BF16 weights, and every
 * ISA path this CPU can run. Tolerances: elementwise 1e-6; reductions and matmul
 * atol 1e-5 / rtol 1e-4 (docs/style.md §8).
 */
#include "core/common.h"
#include "core/dtype.h"
#include "core/rng.h"
#include "tensor/gemm.h"
#include "tensor/ops.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

static float *randn(Rng *r, int64_t n, float scale) {
    float *x = malloc((size_t)(n ? n : 1) * sizeof *x);
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)rng_normal(r) * scale;
    return x;
}

// A weight of type t holding random values; *f32 gets the exactly widened copy.
static void *rand_weight(Rng *r, int64_t n, DType t, float scale) {
    float *x = randn(r, n, scale);
    void *w = malloc((size_t)(n ? n : 1) * dtype_size(t));
    dtype_from_f32(w, x, t, n);
    free(x);
    return w;
}

static void test_matmul_vs_ref(void **state) {
    (void)state;
    Rng r;
    rng_seed(&r, 1);
    const int Ts[] = {1, 3, 8, 17, 35, 64}, Ks[] = {1, 5, 64, 77, 300}, Ns[] = {1, 7, 33, 70};
    OpsIsa best = ops_isa_detect();
    printf("    best ISA here: %s\n", ops_isa_name(best));
    int checked = 0;
    for (int d = 0; d < DTYPE_COUNT; d++)
        for (size_t ti = 0; ti < ARRAY_LEN(Ts); ti++)
            for (size_t ki = 0; ki < ARRAY_LEN(Ks); ki++)
                for (size_t ni = 0; ni < ARRAY_LEN(Ns); ni++) {
                    int T = Ts[ti], K = Ks[ki], N = Ns[ni];
                    float *x = randn(&r, (int64_t)T * K, 1.0f);
                    void *w = rand_weight(&r, (int64_t)N * K, (DType)d, 0.5f);
                    float *y = malloc((size_t)T * N * sizeof *y),
                          *yr = malloc((size_t)T * N * sizeof *yr);
                    float *scratch = malloc(ops_matmul_scratch_floats(K) * sizeof *scratch);
                    ops_matmul_ref(yr, x, w, (DType)d, T, K, N);
                    for (int isa = 0; isa <= (int)best; isa++) {
                        memset(y, 0xff, (size_t)T * N * sizeof *y);
                        ops_matmul_isa(y, x, w, (DType)d, T, K, N, scratch, (OpsIsa)isa);
                        char what[96];
                        snprintf(what, sizeof what, "matmul %s %s T=%d K=%d N=%d",
                                 dtype_name((DType)d), ops_isa_name((OpsIsa)isa), T, K, N);
                        assert_close_f32(what, y, yr, (int64_t)T * N, 1e-5, 1e-4);
                        checked++;
                    }
                    free(x);
                    free(w);
                    free(y);
                    free(yr);
                    free(scratch);
                }
    printf("    %d matmul configurations agree with ops_matmul_ref\n", checked);
}

static void test_rows_ops_vs_ref(void **state) {
    (void)state;
    Rng r;
    rng_seed(&r, 2);
    const int T = 5, D = 37;
    for (int d = 0; d < DTYPE_COUNT; d++) {
        float *x = randn(&r, T * D, 2.0f);
        void *w = rand_weight(&r, D, (DType)d, 1.0f);
        float *o = malloc(T * D * sizeof *o), *orf = malloc(T * D * sizeof *orf);
        ops_rmsnorm(o, x, w, (DType)d, T, D, 1e-5f);
        ops_rmsnorm_ref(orf, x, w, (DType)d, T, D, 1e-5f);
        assert_close_f32("rmsnorm", o, orf, T * D, 1e-6, 1e-6);
        // in place
        memcpy(o, x, T * D * sizeof *o);
        ops_rmsnorm(o, o, w, (DType)d, T, D, 1e-5f);
        assert_close_f32("rmsnorm in place", o, orf, T * D, 1e-6, 1e-6);
        // bias
        memcpy(o, x, T * D * sizeof *o);
        memcpy(orf, x, T * D * sizeof *o);
        ops_add_bias(o, w, (DType)d, T, D);
        ops_add_bias_ref(orf, w, (DType)d, T, D);
        assert_close_f32("add_bias", o, orf, T * D, 1e-6, 1e-6);
        // embedding gather
        const int V = 11;
        void *emb = rand_weight(&r, V * D, (DType)d, 1.0f);
        int32_t tok[5] = {0, 10, 3, 3, 7};
        ops_embed(o, emb, (DType)d, tok, T, D);
        ops_embed_ref(orf, emb, (DType)d, tok, T, D);
        assert_close_f32("embed", o, orf, T * D, 0, 0);
        free(emb);
        free(x);
        free(w);
        free(o);
        free(orf);
    }
    // swiglu and add, odd length, in place
    int64_t n = 1001;
    float *g = randn(&r, n, 3.0f), *u = randn(&r, n, 1.0f);
    float *h = malloc(n * sizeof *h), *hr = malloc(n * sizeof *hr);
    ops_swiglu_ref(hr, g, u, n);
    memcpy(h, g, n * sizeof *h);
    ops_swiglu(h, h, u, n);
    assert_close_f32("swiglu", h, hr, n, 1e-6, 1e-6);
    memcpy(h, g, n * sizeof *h);
    memcpy(hr, g, n * sizeof *h);
    ops_add(h, u, n);
    ops_add_ref(hr, u, n);
    assert_close_f32("add", h, hr, n, 0, 0);
    free(g);
    free(u);
    free(h);
    free(hr);
}

static void test_rope_vs_ref(void **state) {
    (void)state;
    Rng r;
    rng_seed(&r, 3);
    const int T = 4, nh = 3, HD = 10, P = 40;
    float *cs = malloc(P * (HD / 2) * sizeof *cs), *sn = malloc(P * (HD / 2) * sizeof *sn);
    for (int p = 0; p < P; p++)
        for (int i = 0; i < HD / 2; i++) {
            float a = (float)p * powf(10000.0f, -(float)(2 * i) / HD);
            cs[p * (HD / 2) + i] = cosf(a);
            sn[p * (HD / 2) + i] = sinf(a);
        }
    int32_t pos[4] = {0, 39, 5, 6};
    float *x = randn(&r, T * nh * HD, 1.0f), *xr = malloc(T * nh * HD * sizeof *xr);
    memcpy(xr, x, T * nh * HD * sizeof *xr);
    ops_rope(x, T, nh, HD, pos, cs, sn);
    ops_rope_ref(xr, T, nh, HD, pos, cs, sn);
    assert_close_f32("rope", x, xr, T * nh * HD, 1e-6, 1e-6);
    // position 0 is the identity; the norm of each rotated pair is kept
    float *x0 = randn(&r, nh * HD, 1.0f), *x1 = malloc(nh * HD * sizeof *x1);
    memcpy(x1, x0, nh * HD * sizeof *x1);
    int32_t p0 = 0;
    ops_rope_ref(x1, 1, nh, HD, &p0, cs, sn);
    assert_close_f32("rope pos 0", x1, x0, nh * HD, 0, 0);
    free(x0);
    free(x1);
    free(x);
    free(xr);
    free(cs);
    free(sn);
}

static void test_attention_vs_ref(void **state) {
    (void)state;
    Rng r;
    rng_seed(&r, 4);
    // two sequences, tokens at various positions: GQA 6/2 with HD not a multiple of 8, and
    // SmolLM2's 9/3 x 64 at depths that take the 64-position / 64-dimension SIMD blocks
    const struct {
        int H, KVH, HD, ctx;
        int32_t pos[5];
    } cfg[4] = {{6, 2, 12, 64, {0, 32, 7, 8, 20}},
                {9, 3, 64, 320, {0, 299, 130, 64, 200}},
                {9, 3, 64, 704, {0, 699, 513, 256, 255}}, // decode: 1-3 chunks of 256
                {8, 1, 16, 192, {0, 150, 191, 64, 33}}};  // 8 heads per KV head: 3 + 3 + 2
    // each configuration with a float32 and an fp16 cache (the reference reads the same
    // fp16 values, widened)
    for (int cd = 0; cd < 8; cd++) {
        const int c = cd / 2;
        const DType kvt = cd % 2 ? DTYPE_F16 : DTYPE_F32;
        const int H = cfg[c].H, KVH = cfg[c].KVH, HD = cfg[c].HD, ctx = cfg[c].ctx, T = 5;
        void *cache_k[2], *cache_v[2];
        for (int s = 0; s < 2; s++) {
            cache_k[s] = rand_weight(&r, (int64_t)KVH * ctx * HD, kvt, 1.0f);
            cache_v[s] = rand_weight(&r, (int64_t)KVH * ctx * HD, kvt, 1.0f);
        }
        int seq[5] = {0, 1, 0, 0, 1};
        const void *ks[5], *vs[5];
        for (int t = 0; t < T; t++) {
            ks[t] = cache_k[seq[t]];
            vs[t] = cache_v[seq[t]];
        }
        float *q = randn(&r, T * H * HD, 1.0f);
        float *o = malloc(T * H * HD * sizeof *o), *orf = malloc(T * H * HD * sizeof *orf);
        OpsAttnArgs a = {.T = T,
                         .H = H,
                         .KVH = KVH,
                         .HD = HD,
                         .ctx = ctx,
                         .pos = cfg[c].pos,
                         .k_seq = ks,
                         .v_seq = vs,
                         .kv_dtype = kvt,
                         .kv_head_stride = (int64_t)ctx * HD,
                         .scale = 1.0f / sqrtf((float)HD),
                         .n_threads = 4};
        float *scratch = malloc(ops_attention_scratch_floats(ctx, 4, H, HD) * sizeof *scratch);
        ops_attention(o, q, &a, scratch);
        ops_attention_ref(orf, q, &a, scratch);
        assert_close_f32("attention", o, orf, T * H * HD, 1e-5, 1e-4);
        // position 0 attends to itself only: output = its value row
        float v0[64];
        dtype_to_f32(v0, cache_v[0], kvt, HD);
        assert_close_f32("attention pos 0", orf, v0, HD, 1e-6, 1e-6);
        // decode path (1 or 2 query tokens; chunked, merged flash-decoding style), taking
        // the tokens from the second on: the deepest positions of each configuration
        for (int tq = 1; tq <= 2; tq++) {
            OpsAttnArgs d = a;
            d.T = tq;
            d.pos = cfg[c].pos + 1;
            d.k_seq = ks + 1;
            d.v_seq = vs + 1;
            const float *qd = q + (size_t)H * HD;
            ops_attention(o, qd, &d, scratch);
            ops_attention_ref(orf, qd, &d, scratch);
            assert_close_f32("decode attention", o, orf, tq * H * HD, 1e-5, 1e-4);
        }
        free(scratch);
        free(q);
        free(o);
        free(orf);
        for (int s = 0; s < 2; s++) {
            free(cache_k[s]);
            free(cache_v[s]);
        }
    }
}

// ops_matmul_multi (one parallel loop over q/k/v-like matrices) gives exactly
// ops_matmul's outputs, for decode-sized and prefill-sized T and every dtype.
static void test_matmul_multi(void **state) {
    (void)state;
    Rng r;
    rng_seed(&r, 9);
    const int K = 200, Ns[3] = {96, 33, 40}, Ts[] = {1, 3, 9};
    for (int d = 0; d < DTYPE_COUNT; d++)
        for (size_t ti = 0; ti < ARRAY_LEN(Ts); ti++) {
            int T = Ts[ti];
            float *x = randn(&r, (int64_t)T * K, 1.0f);
            float *scratch = malloc(ops_matmul_scratch_floats(K) * sizeof *scratch);
            OpsMatmulOut out[3];
            float *want[3];
            for (int i = 0; i < 3; i++) {
                void *w = rand_weight(&r, (int64_t)Ns[i] * K, (DType)d, 0.5f);
                out[i] =
                    (OpsMatmulOut){malloc((size_t)T * Ns[i] * sizeof(float)), w, (DType)d, Ns[i]};
                want[i] = malloc((size_t)T * Ns[i] * sizeof(float));
                ops_matmul(want[i], x, w, (DType)d, T, K, Ns[i], scratch);
            }
            ops_matmul_multi(out, 3, x, T, K, scratch);
            for (int i = 0; i < 3; i++) {
                assert_memory_equal(out[i].y, want[i], (size_t)T * Ns[i] * sizeof(float));
                free(out[i].y);
                free((void *)out[i].w);
                free(want[i]);
            }
            free(x);
            free(scratch);
        }
}

// C = alpha op(A) op(B) + beta C in double, row-major.
static void gemm_ref(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
                     const float *B, int ldb, float beta, float *C, int ldc) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0;
            for (int k = 0; k < K; k++)
                s += (double)(ta ? A[(int64_t)k * lda + i] : A[(int64_t)i * lda + k]) *
                     (tb ? B[(int64_t)j * ldb + k] : B[(int64_t)k * ldb + j]);
            float *c = &C[(int64_t)i * ldc + j];
            *c = (float)(alpha * s + (double)beta * *c);
        }
}

// gemm_f32: every transpose combination on shapes that cut into ragged tiles (and strided
// views, alpha and beta) against the double loop, and bit for bit the same C on 1, 2, 3
// and 8 threads and when called inside a parallel region (the tiles on one thread).
static void test_gemm_f32(void **state) {
    (void)state;
    Rng r;
    rng_seed(&r, 9);
    const int shapes[][3] = {{1100, 300, 70}, {37, 2500, 96}, {600, 16, 576},
                             {16, 576, 600},  {9, 9, 9},      {300, 129, 1}};
    for (size_t si = 0; si < ARRAY_LEN(shapes); si++)
        for (int tr = 0; tr < 4; tr++) {
            const bool ta = tr & 1, tb = tr & 2;
            const int M = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
            const int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5, ldc = N + 2;
            float *A = randn(&r, (int64_t)(ta ? K : M) * lda, 1.0f);
            float *B = randn(&r, (int64_t)(tb ? N : K) * ldb, 1.0f);
            float *C0 = randn(&r, (int64_t)M * ldc, 1.0f);
            const size_t cb = (size_t)M * (size_t)ldc * sizeof(float);
            float *C[6], *Cr = malloc(cb);
            memcpy(Cr, C0, cb);
            gemm_ref(ta, tb, M, N, K, 0.75f, A, lda, B, ldb, 0.5f, Cr, ldc);
#ifdef _OPENMP
            const int threads[] = {1, 2, 3, 8}, saved = omp_get_max_threads();
#endif
            for (int v = 0; v < 6; v++) {
                C[v] = malloc(cb);
                memcpy(C[v], C0, cb);
#ifdef _OPENMP
                omp_set_num_threads(v < 4 ? threads[v] : 2);
#endif
                if (v < 4) {
                    gemm_f32(ta, tb, M, N, K, 0.75f, A, lda, B, ldb, 0.5f, C[v], ldc);
                } else { // nested: inside a parallel region, on the thread that calls it
#pragma omp parallel num_threads(2)
                    {
#ifdef _OPENMP
                        if (omp_get_thread_num() == MIN(v - 4, omp_get_num_threads() - 1))
#endif
                            gemm_f32(ta, tb, M, N, K, 0.75f, A, lda, B, ldb, 0.5f, C[v], ldc);
                    }
                }
            }
#ifdef _OPENMP
            omp_set_num_threads(saved);
#endif
            char what[96];
            snprintf(what, sizeof what, "gemm_f32 ta=%d tb=%d M=%d N=%d K=%d", ta, tb, M, N, K);
            // float32 sums of K unit-variance products: absolute error ~sqrt(K) ulp-scale
            for (int i = 0; i < M; i++)
                assert_close_f32(what, C[0] + (int64_t)i * ldc, Cr + (int64_t)i * ldc, N,
                                 2e-5 * sqrt((double)K), 1e-4);
            for (int v = 1; v < 6; v++)
                if (memcmp(C[0], C[v], cb))
                    fail_msg("%s: variant %d differs from 1 thread", what, v);
            for (int v = 0; v < 6; v++)
                free(C[v]);
            free(A);
            free(B);
            free(C0);
            free(Cr);
        }
    // gemm_f64 (GPTQ's lazy updates): the same tiles in double, against the double loop
    // within 1e-12 and bit for bit on 1 and 3 threads
    for (int tr = 0; tr < 4; tr++) {
        const bool ta = tr & 1, tb = tr & 2;
        const int M = 700, N = 530, K = 128, lda = ta ? M : K, ldb = tb ? K : N, ldc = N;
        double *A = malloc(sizeof(double) * (size_t)((ta ? K : M) * lda)),
               *B = malloc(sizeof(double) * (size_t)((tb ? N : K) * ldb)),
               *C1 = calloc((size_t)M * N, sizeof(double)),
               *C3 = calloc((size_t)M * N, sizeof(double));
        for (int i = 0; i < (ta ? K : M) * lda; i++)
            A[i] = rng_normal(&r);
        for (int i = 0; i < (tb ? N : K) * ldb; i++)
            B[i] = rng_normal(&r);
#ifdef _OPENMP
        const int saved = omp_get_max_threads();
        omp_set_num_threads(1);
#endif
        gemm_f64(ta, tb, M, N, K, -1.0, A, lda, B, ldb, 1.0, C1, ldc);
#ifdef _OPENMP
        omp_set_num_threads(3);
#endif
        gemm_f64(ta, tb, M, N, K, -1.0, A, lda, B, ldb, 1.0, C3, ldc);
#ifdef _OPENMP
        omp_set_num_threads(saved);
#endif
        assert_memory_equal(C1, C3, sizeof(double) * (size_t)M * N);
        for (int i = 0; i < M; i += 37)
            for (int j = 0; j < N; j += 13) {
                double s = 0;
                for (int k = 0; k < K; k++)
                    s += (ta ? A[k * lda + i] : A[i * lda + k]) *
                         (tb ? B[j * ldb + k] : B[k * ldb + j]);
                assert_true(fabs(C1[i * ldc + j] + s) <= 1e-12 * (1 + fabs(s)));
            }
        free(A);
        free(B);
        free(C1);
        free(C3);
    }
    // tiles stay within 512 x 2048, at least 2 of them (one per CPU up to 16)
    int tm, tn;
    gemm_f32_grid(1024, 1536, 576, &tm, &tn);
    assert_true(tm <= 512 && tn <= 2048 && (1024 / tm) * ((1536 + tn - 1) / tn) >= 2);
    gemm_f32_grid(512, 49152, 576, &tm, &tn);
    assert_true(tm == 512 && tn == 2048);
    // the line --version prints, truncated safely
    char info[512], small[8];
    gemm_system_info(info, sizeof info);
    assert_non_null(strstr(info, ops_isa_name(ops_isa_detect())));
    assert_non_null(strstr(info, "GEMM grid for "));
    gemm_system_info(small, sizeof small);
    assert_int_equal(strlen(small), sizeof small - 1);
}

// Every matmul path splits work only over independent outputs with a fixed reduction order
// (prefill: a fixed grid of sgemm tiles): 1, 2 and 3 threads must give bit-identical
// results (shapes big enough to go parallel).
static void test_thread_count_invariance(void **state) {
    (void)state;
#ifdef _OPENMP
    Rng r;
    rng_seed(&r, 5);
    const int K = 576, N = 1003;
    int saved = omp_get_max_threads();
    // T = 3: GEMV rows; T = 21: register tiles; T = 200: sgemm tiles (gemm_f32)
    for (int d = 0; d < 3 * DTYPE_COUNT; d++) {
        int T = d < DTYPE_COUNT ? 3 : d < 2 * DTYPE_COUNT ? 21 : 200;
        float *x = randn(&r, T * K, 1.0f);
        DType dt = (DType)(d % DTYPE_COUNT);
        void *w = rand_weight(&r, (int64_t)N * K, dt, 0.5f);
        float *y1 = malloc((size_t)T * N * sizeof *y1), *y2 = malloc((size_t)T * N * sizeof *y2);
        float *scratch = malloc(ops_matmul_scratch_floats(K) * sizeof *scratch);
        omp_set_num_threads(1);
        ops_matmul(y1, x, w, dt, T, K, N, scratch);
        for (int nt = 2; nt <= 3; nt++) {
            omp_set_num_threads(nt);
            ops_matmul(y2, x, w, dt, T, K, N, scratch);
            assert_memory_equal(y1, y2, (size_t)T * N * sizeof *y1);
        }
        free(scratch);
        free(x);
        free(w);
        free(y1);
        free(y2);
    }
    // attention over a long context, float32 and fp16 caches
    for (int kd = 0; kd < 2; kd++) {
        const DType kvt = kd ? DTYPE_F16 : DTYPE_F32;
        const int H = 9, KVH = 3, HD = 64, ctx = 320;
        void *ck = rand_weight(&r, KVH * ctx * HD, kvt, 1.0f),
             *cv = rand_weight(&r, KVH * ctx * HD, kvt, 1.0f);
        float *q = randn(&r, 2 * H * HD, 1.0f), *o1 = malloc(2 * H * HD * sizeof *o1),
              *o2 = malloc(2 * H * HD * sizeof *o2);
        int32_t pos[2] = {299, 150};
        const void *ks[2] = {ck, ck}, *vs[2] = {cv, cv};
        OpsAttnArgs a = {.T = 2,
                         .kv_dtype = kvt,
                         .H = H,
                         .KVH = KVH,
                         .HD = HD,
                         .ctx = ctx,
                         .pos = pos,
                         .k_seq = ks,
                         .v_seq = vs,
                         .kv_head_stride = (int64_t)ctx * HD,
                         .scale = 0.125f,
                         .n_threads = 1};
        float *scratch = malloc(ops_attention_scratch_floats(ctx, 2, H, HD) * sizeof *scratch);
        ops_attention(o1, q, &a, scratch);
        a.n_threads = 2;
        omp_set_num_threads(2);
        ops_attention(o2, q, &a, scratch);
        assert_memory_equal(o1, o2, 2 * H * HD * sizeof *o1);
        omp_set_num_threads(saved);
        free(scratch);
        free(ck);
        free(cv);
        free(q);
        free(o1);
        free(o2);
    }
#else
    skip();
#endif
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul_vs_ref), cmocka_unit_test(test_rows_ops_vs_ref),
        cmocka_unit_test(test_rope_vs_ref),   cmocka_unit_test(test_attention_vs_ref),
        cmocka_unit_test(test_matmul_multi),  cmocka_unit_test(test_thread_count_invariance),
        cmocka_unit_test(test_gemm_f32),
    };
    return cmocka_run_group_tests_name("ops", tests, NULL, NULL);
}
