/*
 * test_grad.c - analytic backward of every training op (src/train/train_ops.c, lora.c)
 * against central finite differences of a double-precision reference forward written
 * here, independently of the F32 kernels.
 *
 * For an op y = f(x) the scalar checked is L = sum(G * y) with a fixed random G (the
 * losses are scalars already); the analytic gradient is the F32 backward called with
 * dout = G. Metric per input tensor: max_i |g_i - fd_i| / max_i |fd_i|. Bounds (style.md
 * §8): 1e-4 for smooth ops (RMSNorm, linear, SwiGLU, embedding, residual, LoRA, losses),
 * 1e-3 for RoPE and attention. FD step h = 1e-5 in double (truncation ~1e-10).
 * Also: optimized linear vs its _ref twin (atol 1e-5, rtol 1e-4).
 */
#include "core/common.h"
#include "core/rng.h"
#include "train/lora.h"
#include "train/train_ops.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Helpers ------------------------------------------------------------------------ */

static float *rand_f(Rng *r, int64_t n, double scale) {
    float *p = xmalloc(sizeof(float) * n);
    for (int64_t i = 0; i < n; i++)
        p[i] = (float)(scale * rng_normal(r));
    return p;
}

static double *to_d(const float *x, int64_t n) {
    double *d = xmalloc(sizeof(double) * n);
    for (int64_t i = 0; i < n; i++)
        d[i] = x[i];
    return d;
}

typedef double (*LossFn)(void *ctx);

// Central differences of f w.r.t. each element of x (a double input of ctx), compared
// with the analytic F32 gradient. Returns the max error relative to max |fd|.
static double fd_check(const char *what, LossFn f, void *ctx, double *x, int64_t n,
                       const float *analytic, double tol) {
    const double h = 1e-5;
    double md = 0, mf = 0;
    for (int64_t i = 0; i < n; i++) {
        double x0 = x[i];
        x[i] = x0 + h;
        double lp = f(ctx);
        x[i] = x0 - h;
        double lm = f(ctx);
        x[i] = x0;
        double fd = (lp - lm) / (2 * h);
        md = fmax(md, fabs(fd - analytic[i]));
        mf = fmax(mf, fabs(fd));
    }
    double rel = mf > 0 ? md / mf : md;
    printf("  %-28s max|g-fd|/max|fd| = %.2e (bound %.0e)\n", what, rel, tol);
    if (!(rel <= tol)) fail_msg("%s: gradient error %.3g > %.3g", what, rel, tol);
    return rel;
}

/* ---- RMSNorm ------------------------------------------------------------------------ */

typedef struct {
    int N, D;
    double *x, *w;
    const float *G;
} NormCtx;

static double norm_loss(void *vc) {
    NormCtx *c = vc;
    double L = 0;
    for (int n = 0; n < c->N; n++) {
        double ss = 0;
        for (int i = 0; i < c->D; i++)
            ss += c->x[n * c->D + i] * c->x[n * c->D + i];
        double r = 1 / sqrt(ss / c->D + 1e-5);
        for (int i = 0; i < c->D; i++)
            L += c->G[n * c->D + i] * c->w[i] * c->x[n * c->D + i] * r;
    }
    return L;
}

static void test_rmsnorm_grad(void **state) {
    (void)state;
    Rng r;
    rng_seed(&r, 1);
    int N = 6, D = 24;
    float *x = rand_f(&r, N * D, 1.0), *w = rand_f(&r, D, 1.0), *G = rand_f(&r, N * D, 1.0);
    float *out = xmalloc(sizeof(float) * N * D), rstd[6];
    float *dx = xcalloc(N * D, sizeof(float)), *dw = xcalloc(D, sizeof(float));
    rmsnorm_forward(out, rstd, x, w, N, D, 1e-5f);
    rmsnorm_backward(dx, dw, G, x, w, rstd, N, D);
    NormCtx c = {N, D, to_d(x, N * D), to_d(w, D), G};
    // forward value against the double reference too
    double L = 0;
    for (int i = 0; i < N * D; i++)
        L += (double)out[i] * G[i];
    assert_true(fabs(L - norm_loss(&c)) <= 1e-5 * fabs(L) + 1e-6);
    fd_check("rmsnorm dx", norm_loss, &c, c.x, N * D, dx, 1e-4);
    fd_check("rmsnorm dw", norm_loss, &c, c.w, D, dw, 1e-4);
    free(x);
    free(w);
    free(G);
    free(out);
    free(dx);
    free(dw);
    free(c.x);
    free(c.w);
}

/* ---- Linear ------------------------------------------------------------------------- */

typedef struct {
    int N, I, O;
    double *x, *w, *b;
    const float *G;
} LinCtx;

static double lin_loss(void *vc) {
    LinCtx *c = vc;
    double L = 0;
    for (int n = 0; n < c->N; n++)
        for (int o = 0; o < c->O; o++) {
            double s = c->b[o];
            for (int i = 0; i < c->I; i++)
                s += c->x[n * c->I + i] * c->w[o * c->I + i];
            L += s * c->G[n * c->O + o];
        }
    return L;
}

static void test_linear_grad(void **state) {
    (void)state;
    Rng r;
    rng_seed(&r, 2);
    int N = 5, I = 12, O = 7;
    float *x = rand_f(&r, N * I, 1.0), *w = rand_f(&r, O * I, 0.5), *b = rand_f(&r, O, 0.5);
    float *G = rand_f(&r, N * O, 1.0);
    float *dx = xcalloc(N * I, 4), *dw = xcalloc(O * I, 4), *db = xcalloc(O, 4);
    linear_backward(dx, dw, db, G, x, w, N, I, O);
    LinCtx c = {N, I, O, to_d(x, N * I), to_d(w, O * I), to_d(b, O), G};
    fd_check("linear dx", lin_loss, &c, c.x, N * I, dx, 1e-4);
    fd_check("linear dw", lin_loss, &c, c.w, O * I, dw, 1e-4);
    fd_check("linear db", lin_loss, &c, c.b, O, db, 1e-4);
    free(x);
    free(w);
    free(b);
    free(G);
    free(dx);
    free(dw);
    free(db);
    free(c.x);
    free(c.w);
    free(c.b);
}

static void test_linear_vs_ref(void **state) {
    (void)state;
    Rng r;
    rng_seed(&r, 3);
    int N = 33, I = 70, O = 45; // odd sizes: no block-multiple assumptions
    float *x = rand_f(&r, N * I, 1.0), *w = rand_f(&r, O * I, 0.3), *b = rand_f(&r, O, 0.3);
    float *G = rand_f(&r, N * O, 1.0);
    float *y = xmalloc(4 * N * O), *yr = xmalloc(4 * N * O);
    linear_forward(y, x, w, b, N, I, O);
    linear_forward_ref(yr, x, w, b, N, I, O);
    assert_close_f32("linear fwd vs ref", y, yr, N * O, 1e-5, 1e-4);
    float *dx = xcalloc(N * I, 4), *dw = xcalloc(O * I, 4), *db = xcalloc(O, 4);
    float *dxr = xcalloc(N * I, 4), *dwr = xcalloc(O * I, 4), *dbr = xcalloc(O, 4);
    linear_backward(dx, dw, db, G, x, w, N, I, O);
    linear_backward_ref(dxr, dwr, dbr, G, x, w, N, I, O);
    assert_close_f32("linear dx vs ref", dx, dxr, N * I, 1e-5, 1e-4);
    assert_close_f32("linear dw vs ref", dw, dwr, O * I, 1e-5, 1e-4);
    assert_close_f32("linear db vs ref", db, dbr, O, 1e-5, 1e-4);
    free(x);
    free(w);
    free(b);
    free(G);
    free(y);
    free(yr);
    free(dx);
    free(dw);
    free(db);
    free(dxr);
    free(dwr);
    free(dbr);
}

/* ---- RoPE --------------------------------------------------------------------------- */

typedef struct {
    int B, T, NH, HD;
    double *x;
    const float *cs, *sn, *G;
} RopeCtx;

static double rope_loss(void *vc) {
    RopeCtx *c = vc;
    int half = c->HD / 2;
    double L = 0;
    for (int b = 0; b < c->B; b++)
        for (int t = 0; t < c->T; t++)
            for (int h = 0; h < c->NH; h++) {
                int64_t o = (((int64_t)b * c->T + t) * c->NH + h) * c->HD;
                for (int i = 0; i < half; i++) {
                    double co = c->cs[t * half + i], si = c->sn[t * half + i];
                    double x0 = c->x[o + i], x1 = c->x[o + i + half];
                    L += c->G[o + i] * (x0 * co - x1 * si) +
                         c->G[o + i + half] * (x1 * co + x0 * si);
                }
            }
    return L;
}

static void test_rope_grad(void **state) {
    (void)state;
    Rng r;
    rng_seed(&r, 4);
    int B = 2, T = 7, NH = 3, HD = 8;
    LlamaConfig cfg = {.rope_theta = 10000.0f,
                       .rope_scaling = ROPE_SCALING_LLAMA3,
                       .rope_factor = 8,
                       .rope_low_freq_factor = 1,
                       .rope_high_freq_factor = 4,
                       .rope_orig_max_pos = 8};
    float cs[7 * 4], sn[7 * 4];
    rope_tables_init(cs, sn, T, HD, &cfg);
    int64_t n = (int64_t)B * T * NH * HD;
    float *x = rand_f(&r, n, 1.0), *G = rand_f(&r, n, 1.0), *g = xmalloc(4 * n);
    memcpy(g, G, 4 * n);
    rope_backward(g, cs, sn, B, T, NH, HD);
    RopeCtx c = {B, T, NH, HD, to_d(x, n), cs, sn, G};
    fd_check("rope dx", rope_loss, &c, c.x, n, g, 1e-3);
    // forward: rotation of the double reference
    float *y = xmalloc(4 * n);
    memcpy(y, x, 4 * n);
    rope_forward(y, cs, sn, B, T, NH, HD);
    double L = 0;
    for (int64_t i = 0; i < n; i++)
        L += (double)y[i] * G[i];
    assert_true(fabs(L - rope_loss(&c)) < 1e-4);
    free(x);
    free(G);
    free(g);
    free(y);
    free(c.x);
}

/* ---- Attention ---------------------------------------------------------------------- */

typedef struct {
    int B, T, H, KVH, HD;
    double *q, *k, *v;
    const float *G;
} AttCtx;

static double att_loss(void *vc) {
    AttCtx *c = vc;
    int g = c->H / c->KVH;
    double L = 0, sc[16];
    for (int b = 0; b < c->B; b++)
        for (int h = 0; h < c->H; h++)
            for (int t = 0; t < c->T; t++) {
                const double *qt = c->q + (((int64_t)b * c->T + t) * c->H + h) * c->HD;
                double mx = -1e300, sum = 0;
                for (int t2 = 0; t2 <= t; t2++) {
                    const double *kt = c->k + (((int64_t)b * c->T + t2) * c->KVH + h / g) * c->HD;
                    double s = 0;
                    for (int i = 0; i < c->HD; i++)
                        s += qt[i] * kt[i];
                    sc[t2] = s / sqrt((double)c->HD);
                    mx = fmax(mx, sc[t2]);
                }
                for (int t2 = 0; t2 <= t; t2++)
                    sum += (sc[t2] = exp(sc[t2] - mx));
                for (int i = 0; i < c->HD; i++) {
                    double o = 0;
                    for (int t2 = 0; t2 <= t; t2++)
                        o += sc[t2] / sum *
                             c->v[(((int64_t)b * c->T + t2) * c->KVH + h / g) * c->HD + i];
                    L += o * c->G[(((int64_t)b * c->T + t) * c->H + h) * c->HD + i];
                }
            }
    return L;
}

static void test_attention_grad(void **state) {
    (void)state;
    Rng r;
    rng_seed(&r, 5);
    int B = 2, T = 6, H = 4, KVH = 2, HD = 5;
    int64_t nq = (int64_t)B * T * H * HD, nk = (int64_t)B * T * KVH * HD;
    float *q = rand_f(&r, nq, 1.0), *k = rand_f(&r, nk, 1.0), *v = rand_f(&r, nk, 1.0);
    float *G = rand_f(&r, nq, 1.0), *out = xmalloc(4 * nq);
    float *probs = xmalloc(4 * (int64_t)B * H * T * T), *dp = xmalloc(4 * (int64_t)B * H * T * T);
    float *dq = xcalloc(nq, 4), *dk = xcalloc(nk, 4), *dv = xcalloc(nk, 4);
    attention_forward(out, probs, q, k, v, B, T, H, KVH, HD);
    attention_backward(dq, dk, dv, dp, G, probs, q, k, v, B, T, H, KVH, HD);
    AttCtx c = {B, T, H, KVH, HD, to_d(q, nq), to_d(k, nk), to_d(v, nk), G};
    double L = 0;
    for (int64_t i = 0; i < nq; i++)
        L += (double)out[i] * G[i];
    assert_true(fabs(L - att_loss(&c)) < 1e-4);
    fd_check("attention dq", att_loss, &c, c.q, nq, dq, 1e-3);
    // the naive twin too
    float *rq = xcalloc(nq, 4), *rk = xcalloc(nk, 4), *rv = xcalloc(nk, 4);
    attention_backward_ref(rq, rk, rv, dp, G, probs, q, k, v, B, T, H, KVH, HD);
    fd_check("attention_ref dq", att_loss, &c, c.q, nq, rq, 1e-3);
    fd_check("attention_ref dk", att_loss, &c, c.k, nk, rk, 1e-3);
    fd_check("attention_ref dv", att_loss, &c, c.v, nk, rv, 1e-3);
    free(rq);
    free(rk);
    free(rv);
    fd_check("attention dk", att_loss, &c, c.k, nk, dk, 1e-3);
    fd_check("attention dv", att_loss, &c, c.v, nk, dv, 1e-3);
    // causality: probabilities above the diagonal are exactly zero
    for (int t = 0; t < T; t++)
        for (int t2 = t + 1; t2 < T; t2++)
            assert_true(probs[t * T + t2] == 0.0f);
    free(q);
    free(k);
    free(v);
    free(G);
    free(out);
    free(probs);
    free(dp);
    free(dq);
    free(dk);
    free(dv);
    free(c.q);
    free(c.k);
    free(c.v);
}

// Optimized (sgemm, causal row blocks of 128) vs naive: odd sizes in one block, and a
// sequence of 300 positions in three blocks (the last ragged).
static void attention_vs_ref_case(int B, int T, int H, int KVH, int HD, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    int64_t nq = (int64_t)B * T * H * HD, nk = (int64_t)B * T * KVH * HD,
            np = (int64_t)B * H * T * T;
    float *q = rand_f(&r, nq, 1.0), *k = rand_f(&r, nk, 1.0), *v = rand_f(&r, nk, 1.0);
    float *G = rand_f(&r, nq, 1.0);
    float *o1 = xmalloc(4 * nq), *o2 = xmalloc(4 * nq), *p1 = xmalloc(4 * np),
          *p2 = xmalloc(4 * np);
    float *dp = xmalloc(4 * np);
    attention_forward(o1, p1, q, k, v, B, T, H, KVH, HD);
    attention_forward_ref(o2, p2, q, k, v, B, T, H, KVH, HD);
    assert_close_f32("attention out vs ref", o1, o2, nq, 1e-5, 1e-4);
    assert_close_f32("attention probs vs ref", p1, p2, np, 1e-6, 1e-5);
    float *g1[3] = {xcalloc(nq, 4), xcalloc(nk, 4), xcalloc(nk, 4)};
    float *g2[3] = {xcalloc(nq, 4), xcalloc(nk, 4), xcalloc(nk, 4)};
    attention_backward(g1[0], g1[1], g1[2], dp, G, p2, q, k, v, B, T, H, KVH, HD);
    attention_backward_ref(g2[0], g2[1], g2[2], dp, G, p2, q, k, v, B, T, H, KVH, HD);
    assert_close_f32("attention dq vs ref", g1[0], g2[0], nq, 1e-5, 1e-4);
    assert_close_f32("attention dk vs ref", g1[1], g2[1], nk, 1e-5, 1e-4);
    assert_close_f32("attention dv vs ref", g1[2], g2[2], nk, 1e-5, 1e-4);
    for (int i = 0; i < 3; i++) {
        free(g1[i]);
        free(g2[i]);
    }
    free(q);
    free(k);
    free(v);
    free(G);
    free(o1);
    free(o2);
    free(p1);
    free(p2);
    free(dp);
}

static void test_attention_vs_ref(void **state) {
    (void)state;
    attention_vs_ref_case(2, 13, 6, 2, 7, 55);
    attention_vs_ref_case(1, 300, 3, 1, 16, 56);
}

/* ---- SwiGLU, residual, embedding ----------------------------------------------------- */

typedef struct {
    int64_t n;
    double *g, *u;
    const float *G;
} SwiCtx;

static double swi_loss(void *vc) {
    SwiCtx *c = vc;
    double L = 0;
    for (int64_t i = 0; i < c->n; i++)
        L += c->G[i] * c->g[i] / (1 + exp(-c->g[i])) * c->u[i];
    return L;
}

static double res_loss(void *vc) {
    SwiCtx *c = vc; // reuse: out = g + u
    double L = 0;
    for (int64_t i = 0; i < c->n; i++)
        L += c->G[i] * (c->g[i] + c->u[i]);
    return L;
}

static void test_swiglu_residual_grad(void **state) {
    (void)state;
    Rng r;
    rng_seed(&r, 6);
    int64_t n = 40;
    float *g = rand_f(&r, n, 2.0), *u = rand_f(&r, n, 1.0), *G = rand_f(&r, n, 1.0);
    float *dg = xcalloc(n, 4), *du = xcalloc(n, 4);
    swiglu_backward(dg, du, G, g, u, n);
    SwiCtx c = {n, to_d(g, n), to_d(u, n), G};
    fd_check("swiglu dgate", swi_loss, &c, c.g, n, dg, 1e-4);
    fd_check("swiglu dup", swi_loss, &c, c.u, n, du, 1e-4);
    memset(dg, 0, 4 * n);
    memset(du, 0, 4 * n);
    residual_backward(dg, du, G, n);
    fd_check("residual da", res_loss, &c, c.g, n, dg, 1e-4);
    fd_check("residual db", res_loss, &c, c.u, n, du, 1e-4);
    free(g);
    free(u);
    free(G);
    free(dg);
    free(du);
    free(c.g);
    free(c.u);
}

typedef struct {
    int N, D;
    const int32_t *ids;
    double *emb;
    const float *G;
} EmbCtx;

static double emb_loss(void *vc) {
    EmbCtx *c = vc;
    double L = 0;
    for (int n = 0; n < c->N; n++)
        for (int i = 0; i < c->D; i++)
            L += c->G[n * c->D + i] * c->emb[c->ids[n] * c->D + i];
    return L;
}

static void test_embedding_grad(void **state) {
    (void)state;
    Rng r;
    rng_seed(&r, 7);
    int V = 9, D = 4, N = 7;
    int32_t ids[7] = {3, 1, 3, 8, 0, 3, 1}; // repeated ids accumulate
    float *emb = rand_f(&r, V * D, 1.0), *G = rand_f(&r, N * D, 1.0), *demb = xcalloc(V * D, 4);
    embedding_backward(demb, G, ids, N, D);
    EmbCtx c = {N, D, ids, to_d(emb, V * D), G};
    fd_check("embedding demb", emb_loss, &c, c.emb, V * D, demb, 1e-4);
    free(emb);
    free(G);
    free(demb);
    free(c.emb);
}

/* ---- Losses ------------------------------------------------------------------------- */

typedef struct {
    int N, V;
    double *s;
    const float *t; // teacher logits or NULL
    const int32_t *y;
    double T, alpha;
    // sparse teacher
    const int32_t *tid;
    const float *tlp;
    int K;
    double tgen;
    int Vk, Vt; // shared vocabulary and teacher row length (0 = V)
} LossCtx;

static double lse_d(const double *x, int V, double inv_t) {
    double mx = -1e300, s = 0;
    for (int i = 0; i < V; i++)
        mx = fmax(mx, x[i] * inv_t);
    for (int i = 0; i < V; i++)
        s += exp(x[i] * inv_t - mx);
    return mx + log(s);
}

static double kd_loss_d(void *vc) {
    LossCtx *c = vc;
    double kl = 0, ce = 0, tt[64];
    int nv = 0;
    for (int n = 0; n < c->N; n++) {
        if (c->y[n] == TRAIN_IGNORE_INDEX) continue;
        nv++;
        const double *s = c->s + n * c->V;
        ce += lse_d(s, c->V, 1) - s[c->y[n]];
        if (!c->t) continue;
        int Vk = c->Vk ? c->Vk : c->V, Vt = c->Vt ? c->Vt : c->V;
        for (int i = 0; i < Vk; i++)
            tt[i] = c->t[n * Vt + i];
        double ls = lse_d(s, Vk, 1 / c->T), lt = lse_d(tt, Vk, 1 / c->T);
        for (int i = 0; i < Vk; i++) {
            double a = tt[i] / c->T - lt, b = s[i] / c->T - ls;
            kl += exp(a) * (a - b);
        }
    }
    kl *= c->T * c->T / nv;
    ce /= nv;
    return (c->t ? c->alpha * kl : 0) + (1 - c->alpha) * ce;
}

static void test_kd_loss_grad(void **state) {
    (void)state;
    Rng r;
    rng_seed(&r, 8);
    int N = 6, V = 11;
    int32_t y[6] = {3, TRAIN_IGNORE_INDEX, 0, 10, TRAIN_IGNORE_INDEX, 7};
    float *s = rand_f(&r, N * V, 2.0), *t = rand_f(&r, N * V, 2.0), *d = xmalloc(4 * N * V);
    for (int with_teacher = 0; with_teacher < 2; with_teacher++) {
        KdLossOptions o = {.temperature = 2.5f, .alpha = 0.3f};
        const float *tl = with_teacher ? t : NULL;
        KdLoss l = kd_loss_forward(s, tl, y, N, V, &o);
        assert_int_equal(l.n_valid, 4);
        kd_loss_backward(d, s, tl, y, N, V, &o, 1.0f);
        LossCtx c = {N, V, to_d(s, N * V), tl, y, 2.5, 0.3, NULL, NULL, 0, 1, 0, 0};
        assert_true(fabs(l.loss - kd_loss_d(&c)) < 1e-6);
        fd_check(with_teacher ? "kd loss dlogits" : "ce loss dlogits", kd_loss_d, &c, c.s, N * V, d,
                 1e-4);
        free(c.s);
    }
    // shared vocabulary: KL over the first 8 columns, teacher rows of 13 (padding rows)
    {
        float *tp = rand_f(&r, N * 13, 2.0);
        KdLossOptions o = {.temperature = 1.5f, .alpha = 0.6f, .kd_vocab = 8, .teacher_vocab = 13};
        KdLoss l = kd_loss_forward(s, tp, y, N, V, &o);
        kd_loss_backward(d, s, tp, y, N, V, &o, 1.0f);
        LossCtx c = {N, V, to_d(s, N * V), tp, y, 1.5, 0.6, NULL, NULL, 0, 1, 8, 13};
        assert_true(fabs(l.loss - kd_loss_d(&c)) < 1e-6);
        fd_check("kd loss, shared vocab 8", kd_loss_d, &c, c.s, N * V, d, 1e-4);
        free(c.s);
        free(tp);
    }
    // KL of identical distributions is 0; all-ignored batch gives zeros
    KdLossOptions o = {.temperature = 1.0f, .alpha = 1.0f};
    KdLoss same = kd_loss_forward(s, s, y, N, V, &o);
    assert_true(fabs(same.kl) < 1e-12);
    int32_t none[6] = {TRAIN_IGNORE_INDEX, TRAIN_IGNORE_INDEX, TRAIN_IGNORE_INDEX,
                       TRAIN_IGNORE_INDEX, TRAIN_IGNORE_INDEX, TRAIN_IGNORE_INDEX};
    KdLoss z = kd_loss_forward(s, t, none, N, V, &o);
    assert_true(z.loss == 0 && z.n_valid == 0);
    free(s);
    free(t);
    free(d);
}

// The fused loss + gradient of a training step equals kd_loss_forward + kd_loss_backward:
// the same loss values bit for bit and the same dlogits as numbers, over temperatures
// (T = 1 shares the student's softmax), alphas (0 and 1 drop a term), no teacher, a shared
// vocabulary with padded teacher rows, ignored rows, rows longer than one 256-column chunk,
// and enough rows for the parallel loop.
static void test_kd_loss_fused(void **state) {
    (void)state;
    Rng r;
    rng_seed(&r, 12);
    const int N = 120, V = 600, Vt = 613;
    float *s = rand_f(&r, N * V, 3.0), *t = rand_f(&r, N * Vt, 3.0);
    float *d1 = xmalloc(sizeof(float) * N * V), *d2 = xmalloc(sizeof(float) * N * V);
    int32_t *y = xmalloc(sizeof(int32_t) * N);
    for (int n = 0; n < N; n++)
        y[n] = n % 7 == 3 ? TRAIN_IGNORE_INDEX : (int32_t)((n * 37) % V);
    const float temps[] = {1.0f, 2.5f}, alphas[] = {0.0f, 0.3f, 1.0f};
    for (int vi = 0; vi < 2; vi++)
        for (int ti = 0; ti < 2; ti++)
            for (int ai = 0; ai < 3; ai++)
                for (int wt = 0; wt < 2; wt++) {
                    // teacher rows of 613 (padding past the student's 600); the KL over
                    // all 600 columns or over the first 500
                    KdLossOptions o = {.temperature = temps[ti],
                                       .alpha = alphas[ai],
                                       .kd_vocab = vi ? 500 : V,
                                       .teacher_vocab = Vt};
                    const float *tl = wt ? t : NULL;
                    KdLoss a = kd_loss_forward(s, tl, y, N, V, &o);
                    kd_loss_backward(d1, s, tl, y, N, V, &o, 0.5f);
                    KdLoss b = kd_loss_forward_backward(d2, s, tl, y, N, V, &o, 0.5f);
                    assert_true(a.loss == b.loss && a.kl == b.kl && a.ce == b.ce);
                    assert_int_equal(a.n_valid, b.n_valid);
                    for (int64_t i = 0; i < (int64_t)N * V; i++)
                        if (!(d1[i] == d2[i]))
                            fail_msg("T %g alpha %g teacher %d vocab case %d: dlogits[%lld] %g vs "
                                     "%g",
                                     (double)o.temperature, (double)o.alpha, wt, vi, (long long)i,
                                     (double)d1[i], (double)d2[i]);
                }
    int32_t *none = xmalloc(sizeof(int32_t) * N);
    for (int n = 0; n < N; n++)
        none[n] = TRAIN_IGNORE_INDEX;
    KdLossOptions o = {.temperature = 1.0f, .alpha = 1.0f, .teacher_vocab = Vt};
    KdLoss z = kd_loss_forward_backward(d2, s, t, none, N, V, &o, 1.0f);
    assert_true(z.loss == 0 && z.n_valid == 0);
    for (int64_t i = 0; i < (int64_t)N * V; i++)
        assert_true(d2[i] == 0);
    free(none);
    free(y);
    free(d1);
    free(d2);
    free(s);
    free(t);
}

// Double reference of DistillKit's sparse KL (SYMMETRIC_UNIFORM), written from the formula.
static double sparse_loss_d(void *vc) {
    LossCtx *c = vc;
    double kl = 0, ce = 0, a = c->tgen / c->T;
    int nv = 0;
    for (int n = 0; n < c->N; n++) {
        if (c->y[n] == TRAIN_IGNORE_INDEX) continue;
        nv++;
        const double *s = c->s + n * c->V;
        ce += lse_d(s, c->V, 1) - s[c->y[n]];
        const float *lp = c->tlp + n * c->K;
        const int32_t *id = c->tid + n * c->K;
        double psum = 0, asum = 0;
        for (int i = 0; i < c->K; i++) {
            psum += exp(lp[i]);
            asum += exp(a * lp[i]);
        }
        double z = log(asum + pow(fmax(0, 1 - psum), a)), ls = lse_d(s, c->V, 1 / c->T);
        double tsum = 0, ssum = 0;
        for (int i = 0; i < c->K; i++) {
            double q = a * lp[i] - z, si = s[id[i]] / c->T - ls;
            kl += exp(q) * (q - si);
            tsum += exp(q);
            ssum += exp(si);
        }
        double mt = fmin(fmax(1 - tsum, 1e-8), 1 - 1e-8), ms = fmin(fmax(1 - ssum, 1e-8), 1 - 1e-8);
        kl += mt * (log(mt) - log(ms));
    }
    return c->alpha * c->T * c->T * kl / nv + (1 - c->alpha) * ce / nv;
}

// K teacher ids per row, (n a + k b) mod V (distinct for the a, b used), and their
// log-probabilities under the full softmax of the teacher logits t (N, V).
static void teacher_topk(int32_t *ids, float *lp, const float *t, int N, int V, int K, int a,
                         int b) {
    for (int n = 0; n < N; n++) {
        double mx = -1e300, sum = 0;
        for (int i = 0; i < V; i++)
            mx = fmax(mx, t[n * V + i]);
        for (int i = 0; i < V; i++)
            sum += exp(t[n * V + i] - mx);
        for (int k = 0; k < K; k++) {
            ids[n * K + k] = (n * a + k * b) % V;
            lp[n * K + k] = (float)(t[n * V + ids[n * K + k]] - mx - log(sum));
        }
    }
}

static void test_sparse_kd_grad(void **state) {
    (void)state;
    Rng r;
    rng_seed(&r, 9);
    int N = 5, V = 13, K = 4;
    int32_t y[5] = {2, TRAIN_IGNORE_INDEX, 12, 5, 0};
    float *s = rand_f(&r, N * V, 1.5), *t = rand_f(&r, N * V, 2.0), *d = xmalloc(4 * N * V);
    // teacher top-k ids (distinct) and their full-vocabulary log-probabilities
    int32_t ids[5 * 4];
    float lp[5 * 4];
    teacher_topk(ids, lp, t, N, V, K, 3, 5);
    KdSparseTeacher st = {.ids = ids, .logp = lp, .K = K, .t_gen = 1.0f};
    KdLossOptions o = {.temperature = 2.0f, .alpha = 0.7f};
    KdLoss l = kd_sparse_loss_forward(s, &st, y, N, V, &o);
    kd_sparse_loss_backward(d, s, &st, y, N, V, &o, 1.0f);
    LossCtx c = {N, V, to_d(s, N * V), NULL, y, 2.0, 0.7, ids, lp, K, 1.0, 0, 0};
    assert_true(fabs(l.loss - sparse_loss_d(&c)) < 1e-6);
    fd_check("sparse kd dlogits", sparse_loss_d, &c, c.s, N * V, d, 1e-4);
    // with K = V (the whole distribution) and t_gen = T the sparse KL equals the dense KL
    int32_t all[13];
    float lpa[13];
    double mx = -1e300, sum = 0;
    for (int i = 0; i < V; i++)
        mx = fmax(mx, t[i]);
    for (int i = 0; i < V; i++)
        sum += exp(t[i] - mx);
    for (int i = 0; i < V; i++) {
        all[i] = i;
        lpa[i] = (float)(t[i] - mx - log(sum));
    }
    KdSparseTeacher full = {.ids = all, .logp = lpa, .K = V, .t_gen = 1.0f};
    KdLossOptions o1 = {.temperature = 1.0f, .alpha = 1.0f};
    KdLoss a = kd_sparse_loss_forward(s, &full, y, 1, V, &o1),
           b = kd_loss_forward(s, t, y, 1, V, &o1);
    assert_true(fabs(a.kl - b.kl) < 1e-5);
    free(s);
    free(t);
    free(d);
    free(c.s);
}

// The fused sparse loss + gradient of a training step against kd_sparse_loss_forward +
// kd_sparse_loss_backward (its reference: scalar exponentials, two float roundings per
// entry): losses within 1e-12 and dlogits within 1e-6 of the largest entry, over
// temperatures, alphas (0 and 1 drop a term), ignored rows, rows of several 256-column
// chunks and enough rows for the parallel loop; and the fused gradient against finite
// differences of the double reference on the small case of test_sparse_kd_grad.
static void test_sparse_kd_fused(void **state) {
    (void)state;
    Rng r;
    rng_seed(&r, 21);
    const int N = 120, V = 600, K = 16;
    float *s = rand_f(&r, N * V, 3.0), *t = rand_f(&r, N * V, 3.0);
    float *d1 = xmalloc(sizeof(float) * N * V), *d2 = xmalloc(sizeof(float) * N * V);
    int32_t *y = xmalloc(sizeof(int32_t) * N), *ids = xmalloc(sizeof(int32_t) * N * K);
    float *lp = xmalloc(sizeof(float) * N * K);
    for (int n = 0; n < N; n++)
        y[n] = n % 9 == 4 ? TRAIN_IGNORE_INDEX : (int32_t)((n * 41) % V);
    teacher_topk(ids, lp, t, N, V, K, 7, 37);
    KdSparseTeacher st = {.ids = ids, .logp = lp, .K = K, .t_gen = 1.0f};
    const float temps[] = {1.0f, 2.0f}, alphas[] = {0.0f, 0.7f, 1.0f};
    for (int ti = 0; ti < 2; ti++)
        for (int ai = 0; ai < 3; ai++) {
            KdLossOptions o = {.temperature = temps[ti], .alpha = alphas[ai]};
            KdLoss a = kd_sparse_loss_forward(s, &st, y, N, V, &o);
            kd_sparse_loss_backward(d1, s, &st, y, N, V, &o, 0.5f);
            KdLoss b = kd_sparse_loss_forward_backward(d2, s, &st, y, N, V, &o, 0.5f);
            assert_int_equal(a.n_valid, b.n_valid);
            assert_true(fabs(a.loss - b.loss) <= 1e-12 * fabs(a.loss) + 1e-15);
            assert_true(fabs(a.kl - b.kl) <= 1e-12 * fabs(a.kl) + 1e-15);
            double mx = 0, worst = 0;
            for (int64_t i = 0; i < (int64_t)N * V; i++) {
                mx = fmax(mx, fabs(d1[i]));
                worst = fmax(worst, fabs((double)d1[i] - d2[i]));
            }
            if (worst > 1e-6 * mx)
                fail_msg("T %g alpha %g: dlogits differ by %g (max %g)", (double)o.temperature,
                         (double)o.alpha, worst, mx);
        }
    // finite differences of the double reference (same case as test_sparse_kd_grad)
    {
        const int n2 = 5, v2 = 13, k2 = 4;
        int32_t y2[5] = {2, TRAIN_IGNORE_INDEX, 12, 5, 0}, id2[20];
        float lp2[20];
        for (int n = 0; n < n2; n++)
            for (int k = 0; k < k2; k++) {
                id2[n * k2 + k] = (n * 3 + k * 5) % v2;
                lp2[n * k2 + k] = lp[n * K + k]; // any log-probs below 0 will do
            }
        KdSparseTeacher s2 = {.ids = id2, .logp = lp2, .K = k2, .t_gen = 1.0f};
        KdLossOptions o = {.temperature = 2.0f, .alpha = 0.7f};
        KdLoss l = kd_sparse_loss_forward_backward(d2, s, &s2, y2, n2, v2, &o, 1.0f);
        LossCtx c = {n2, v2, to_d(s, n2 * v2), NULL, y2, 2.0, 0.7, id2, lp2, k2, 1.0, 0, 0};
        assert_true(fabs(l.loss - sparse_loss_d(&c)) < 1e-6);
        fd_check("fused sparse kd dlogits", sparse_loss_d, &c, c.s, n2 * v2, d2, 1e-4);
        free(c.s);
    }
    free(s);
    free(t);
    free(d1);
    free(d2);
    free(y);
    free(ids);
    free(lp);
}

/* ---- LoRA --------------------------------------------------------------------------- */

typedef struct {
    int N, I, O, R;
    double *x, *a, *b, scaling;
    const float *G;
    const float *ms; // dropout mask (N, I) or NULL
} LoraCtx;

static double lora_loss_d(void *vc) {
    LoraCtx *c = vc;
    double L = 0, u[8];
    for (int n = 0; n < c->N; n++) {
        for (int k = 0; k < c->R; k++) {
            u[k] = 0;
            for (int i = 0; i < c->I; i++)
                u[k] +=
                    c->x[n * c->I + i] * (c->ms ? c->ms[n * c->I + i] : 1.0) * c->a[k * c->I + i];
        }
        for (int o = 0; o < c->O; o++) {
            double y = 0;
            for (int k = 0; k < c->R; k++)
                y += u[k] * c->b[o * c->R + k];
            L += c->scaling * y * c->G[n * c->O + o];
        }
    }
    return L;
}

static void test_lora_grad(void **state) {
    (void)state;
    Rng r;
    rng_seed(&r, 10);
    int N = 5, I = 9, O = 7, R = 3;
    float *x = rand_f(&r, N * I, 1.0), *G = rand_f(&r, N * O, 1.0);
    float *slab = rand_f(&r, R * I + O * R, 0.5), *gslab = xcalloc(R * I + O * R, 4);
    LoraAdapter ad = {.a = slab,
                      .b = slab + R * I,
                      .da = gslab,
                      .db = gslab + R * I,
                      .rank = R,
                      .in = I,
                      .out = O};
    float *y = xcalloc(N * O, 4), *u = xmalloc(4 * N * R), *du = xmalloc(4 * N * R);
    float *dx = xcalloc(N * I, 4);
    float scaling = 2.5f;
    lora_forward(y, u, x, &ad, scaling, N);
    lora_backward(dx, du, G, x, u, &ad, scaling, N);
    LoraCtx c = {N,       I, O,   R, to_d(x, N * I), to_d(ad.a, R * I), to_d(ad.b, O * R),
                 scaling, G, NULL};
    double L = 0;
    for (int i = 0; i < N * O; i++)
        L += (double)y[i] * G[i];
    assert_true(fabs(L - lora_loss_d(&c)) < 1e-4);
    fd_check("lora dx", lora_loss_d, &c, c.x, N * I, dx, 1e-4);
    fd_check("lora dA", lora_loss_d, &c, c.a, R * I, ad.da, 1e-4);
    fd_check("lora dB", lora_loss_d, &c, c.b, O * R, ad.db, 1e-4);
    // merge: W + scaling B A applied to x equals the unmerged path
    float *w = xcalloc(O * I, 4), *ym = xmalloc(4 * N * O);
    lora_merge_weight(w, &ad, scaling);
    linear_forward_ref(ym, x, w, NULL, N, I, O);
    assert_close_f32("merged = unmerged", ym, y, N * O, 1e-5, 1e-4);
    // inverted dropout with a fixed mask (p = 0.4)
    float *ms = xmalloc(4 * N * I), *xd = xmalloc(4 * N * I);
    lora_dropout_mask(ms, N * I, 0.4f, &r);
    int zeros = 0;
    for (int i = 0; i < N * I; i++) {
        zeros += ms[i] == 0.0f;
        assert_true(ms[i] == 0.0f || fabsf(ms[i] - 1.0f / 0.6f) < 1e-6f);
    }
    assert_true(zeros > 0 && zeros < N * I);
    memset(gslab, 0, 4 * (R * I + O * R));
    memset(dx, 0, 4 * N * I);
    memset(y, 0, 4 * N * O);
    lora_forward_dropout(y, u, xd, x, ms, &ad, scaling, N);
    lora_backward_dropout(dx, du, xd, G, x, ms, u, &ad, scaling, N);
    c.ms = ms;
    L = 0;
    for (int i = 0; i < N * O; i++)
        L += (double)y[i] * G[i];
    assert_true(fabs(L - lora_loss_d(&c)) < 1e-4);
    fd_check("lora+dropout dx", lora_loss_d, &c, c.x, N * I, dx, 1e-4);
    fd_check("lora+dropout dA", lora_loss_d, &c, c.a, R * I, ad.da, 1e-4);
    fd_check("lora+dropout dB", lora_loss_d, &c, c.b, O * R, ad.db, 1e-4);
    free(ms);
    free(xd);
    free(x);
    free(G);
    free(slab);
    free(gslab);
    free(y);
    free(u);
    free(du);
    free(dx);
    free(w);
    free(ym);
    free(c.x);
    free(c.a);
    free(c.b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rmsnorm_grad),
        cmocka_unit_test(test_linear_grad),
        cmocka_unit_test(test_linear_vs_ref),
        cmocka_unit_test(test_rope_grad),
        cmocka_unit_test(test_attention_grad),
        cmocka_unit_test(test_attention_vs_ref),
        cmocka_unit_test(test_swiglu_residual_grad),
        cmocka_unit_test(test_embedding_grad),
        cmocka_unit_test(test_kd_loss_grad),
        cmocka_unit_test(test_kd_loss_fused),
        cmocka_unit_test(test_sparse_kd_grad),
        cmocka_unit_test(test_sparse_kd_fused),
        cmocka_unit_test(test_lora_grad),
    };
    return cmocka_run_group_tests_name("grad", tests, NULL, NULL);
}
