/*
 * train_ops.c - F32 forward/backward kernels for Llama training (see train_ops.h).
 *
 * Reductions over a row (RMSNorm mean square, softmax sums, loss sums) accumulate in
 * double: the rows are short enough that this costs nothing measurable, and it keeps the
 * result independent of vectorisation and close to PyTorch's pairwise F32 sums.
 * OpenMP loops only split independent rows/heads, so results do not depend on the
 * thread count.
 */
#include "train/train_ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "tensor/gemm.h"
#include "tensor/vmath.h"

/* ---- Embedding ---------------------------------------------------------------------- */

void embedding_forward(float *out, const int32_t *ids, const float *emb, int64_t N, int D) {
    for (int64_t n = 0; n < N; n++)
        memcpy(out + n * D, emb + (int64_t)ids[n] * D, D * sizeof(float));
}

void embedding_backward(float *demb, const float *dout, const int32_t *ids, int64_t N, int D) {
    // serial: two positions may hold the same id
    for (int64_t n = 0; n < N; n++) {
        float *d = demb + (int64_t)ids[n] * D;
        const float *g = dout + n * D;
        for (int i = 0; i < D; i++)
            d[i] += g[i];
    }
}

/* ---- RMSNorm ------------------------------------------------------------------------ */

void rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int64_t N, int D,
                     float eps) {
#pragma omp parallel for if (N * D > 65536)
    for (int64_t n = 0; n < N; n++) {
        const float *xr = x + n * D;
        double ss = 0;
        for (int i = 0; i < D; i++)
            ss += (double)xr[i] * xr[i];
        // rstd = 1/sqrt(mean(x^2) + eps), rounded to F32 as PyTorch's rsqrt
        float r = (float)(1.0 / sqrt((double)(float)(ss / D) + (double)eps));
        rstd[n] = r;
        for (int i = 0; i < D; i++)
            out[n * D + i] = w[i] * (xr[i] * r);
    }
}

void rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x, const float *w,
                      const float *rstd, int64_t N, int D) {
    // y_i = w_i x_i r, r = (mean(x^2) + eps)^(-1/2), dr/dx_j = -r^3 x_j / D
    // dx_j = r w_j dy_j - (r^3 / D) x_j sum_i dy_i w_i x_i
#pragma omp parallel for if (N * D > 65536)
    for (int64_t n = 0; n < N; n++) {
        const float *xr = x + n * D, *g = dout + n * D;
        double r = rstd[n], dot = 0;
        for (int i = 0; i < D; i++)
            dot += (double)g[i] * w[i] * xr[i];
        double c = r * r * r * dot / D;
        for (int i = 0; i < D; i++)
            dx[n * D + i] += (float)(r * w[i] * g[i] - c * xr[i]);
    }
    if (dw) {
        for (int i = 0; i < D; i++) {
            double s = 0;
            for (int64_t n = 0; n < N; n++)
                s += (double)dout[n * D + i] * x[n * D + i] * rstd[n];
            dw[i] += (float)s;
        }
    }
}

/* ---- Linear ------------------------------------------------------------------------- */

void linear_forward(float *out, const float *x, const float *w, const float *bias, int64_t N,
                    int Din, int Dout) {
    // out (N, Dout) = x (N, Din) @ W^T, W (Dout, Din)
    gemm_f32(false, true, (int)N, Dout, Din, 1.0f, x, Din, w, Din, 0.0f, out, Dout);
    if (bias)
        for (int64_t n = 0; n < N; n++)
            for (int o = 0; o < Dout; o++)
                out[n * Dout + o] += bias[o];
}

void linear_forward_ref(float *out, const float *x, const float *w, const float *bias, int64_t N,
                        int Din, int Dout) {
    for (int64_t n = 0; n < N; n++)
        for (int o = 0; o < Dout; o++) {
            double s = bias ? bias[o] : 0.0;
            for (int i = 0; i < Din; i++)
                s += (double)x[n * Din + i] * w[(int64_t)o * Din + i];
            out[n * Dout + o] = (float)s;
        }
}

void linear_backward(float *dx, float *dw, float *db, const float *dout, const float *x,
                     const float *w, int64_t N, int Din, int Dout) {
    // dx (N, Din) += dout (N, Dout) @ W (Dout, Din)
    if (dx) gemm_f32(false, false, (int)N, Din, Dout, 1.0f, dout, Dout, w, Din, 1.0f, dx, Din);
    // dW (Dout, Din) += dout^T (Dout, N) @ x (N, Din)
    if (dw) gemm_f32(true, false, Dout, Din, (int)N, 1.0f, dout, Dout, x, Din, 1.0f, dw, Din);
    if (db)
        for (int o = 0; o < Dout; o++) {
            double s = 0;
            for (int64_t n = 0; n < N; n++)
                s += dout[n * Dout + o];
            db[o] += (float)s;
        }
}

void linear_backward_ref(float *dx, float *dw, float *db, const float *dout, const float *x,
                         const float *w, int64_t N, int Din, int Dout) {
    if (dx)
        for (int64_t n = 0; n < N; n++)
            for (int i = 0; i < Din; i++) {
                double s = 0;
                for (int o = 0; o < Dout; o++)
                    s += (double)dout[n * Dout + o] * w[(int64_t)o * Din + i];
                dx[n * Din + i] += (float)s;
            }
    if (dw)
        for (int o = 0; o < Dout; o++)
            for (int i = 0; i < Din; i++) {
                double s = 0;
                for (int64_t n = 0; n < N; n++)
                    s += (double)dout[n * Dout + o] * x[n * Din + i];
                dw[(int64_t)o * Din + i] += (float)s;
            }
    if (db)
        for (int o = 0; o < Dout; o++) {
            double s = 0;
            for (int64_t n = 0; n < N; n++)
                s += dout[n * Dout + o];
            db[o] += (float)s;
        }
}

/* ---- RoPE --------------------------------------------------------------------------- */

// Hugging Face _compute_llama3_parameters, in F32 like the original.
static float rope_llama3_freq(float inv_freq, const LlamaConfig *c) {
    const float pi = 3.14159265358979323846f;
    float factor = c->rope_factor, lo = c->rope_low_freq_factor, hi = c->rope_high_freq_factor;
    float old_ctx = (float)c->rope_orig_max_pos;
    float low_wavelen = old_ctx / lo, high_wavelen = old_ctx / hi;
    float wavelen = 2 * pi / inv_freq;
    // long wavelengths (low frequencies) are divided by factor
    float f = wavelen > low_wavelen ? inv_freq / factor : inv_freq;
    bool medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
    if (medium) {
        // smooth interpolation between the scaled and the original frequency
        float smooth = (old_ctx / wavelen - lo) / (hi - lo);
        f = (1 - smooth) * f / factor + smooth * f;
    }
    return f;
}

void rope_tables_init(float *cos_t, float *sin_t, int T, int HD, const LlamaConfig *cfg) {
    int half = HD / 2;
    for (int i = 0; i < half; i++) {
        // inv_freq = 1 / theta^(arange(0, HD, 2) / HD), all in F32 as transformers does
        float e = (float)(2 * i) / (float)HD;
        float inv = 1.0f / powf(cfg->rope_theta, e);
        if (cfg->rope_scaling == ROPE_SCALING_LLAMA3) inv = rope_llama3_freq(inv, cfg);
        for (int t = 0; t < T; t++) {
            float ang = (float)t * inv;
            cos_t[(int64_t)t * half + i] = (float)cos((double)ang);
            sin_t[(int64_t)t * half + i] = (float)sin((double)ang);
        }
    }
}

void rope_forward(float *x, const float *cos_t, const float *sin_t, int B, int T, int NH, int HD) {
    int half = HD / 2;
#pragma omp parallel for collapse(2) if ((int64_t)B * T * NH * HD > 65536)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const float *c = cos_t + (int64_t)t * half, *s = sin_t + (int64_t)t * half;
            for (int h = 0; h < NH; h++) {
                float *v = x + (((int64_t)b * T + t) * NH + h) * HD;
                for (int i = 0; i < half; i++) {
                    float x0 = v[i], x1 = v[i + half];
                    v[i] = x0 * c[i] - x1 * s[i];
                    v[i + half] = x1 * c[i] + x0 * s[i];
                }
            }
        }
}

void rope_backward(float *dx, const float *cos_t, const float *sin_t, int B, int T, int NH,
                   int HD) {
    int half = HD / 2;
#pragma omp parallel for collapse(2) if ((int64_t)B * T * NH * HD > 65536)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const float *c = cos_t + (int64_t)t * half, *s = sin_t + (int64_t)t * half;
            for (int h = 0; h < NH; h++) {
                float *v = dx + (((int64_t)b * T + t) * NH + h) * HD;
                for (int i = 0; i < half; i++) {
                    // transpose of [[c, -s], [s, c]]
                    float g0 = v[i], g1 = v[i + half];
                    v[i] = g0 * c[i] + g1 * s[i];
                    v[i + half] = g1 * c[i] - g0 * s[i];
                }
            }
        }
}

/* ---- Attention ---------------------------------------------------------------------- */

void attention_forward_ref(float *out, float *probs, const float *q, const float *k, const float *v,
                           int B, int T, int H, int KVH, int HD) {
    int group = H / KVH;
    double scale = 1.0 / sqrt((double)HD);
    // threads only pay off above ~64k multiply-adds (they cost more on tiny shapes)
#pragma omp parallel for collapse(2) if ((int64_t)B * H * T * T * HD > 65536)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            int kh = h / group;
            for (int t = 0; t < T; t++) {
                const float *qt = q + (((int64_t)b * T + t) * H + h) * HD;
                float *p = probs + (((int64_t)b * H + h) * T + t) * T;
                // scores and running max over the causal prefix 0..t
                double mx = -INFINITY;
                for (int t2 = 0; t2 <= t; t2++) {
                    const float *kt = k + (((int64_t)b * T + t2) * KVH + kh) * HD;
                    double s = 0;
                    for (int i = 0; i < HD; i++)
                        s += (double)qt[i] * kt[i];
                    p[t2] = (float)(s * scale);
                    if (p[t2] > mx) mx = p[t2];
                }
                double sum = 0;
                for (int t2 = 0; t2 <= t; t2++) {
                    double e = exp((double)p[t2] - mx);
                    p[t2] = (float)e;
                    sum += e;
                }
                for (int t2 = 0; t2 <= t; t2++)
                    p[t2] = (float)(p[t2] / sum);
                for (int t2 = t + 1; t2 < T; t2++)
                    p[t2] = 0.0f;
                float *o = out + (((int64_t)b * T + t) * H + h) * HD;
                for (int i = 0; i < HD; i++) {
                    double s = 0;
                    for (int t2 = 0; t2 <= t; t2++)
                        s += (double)p[t2] * v[(((int64_t)b * T + t2) * KVH + kh) * HD + i];
                    o[i] = (float)s;
                }
            }
        }
}

void attention_backward_ref(float *dq, float *dk, float *dv, float *dprobs, const float *dout,
                            const float *probs, const float *q, const float *k, const float *v,
                            int B, int T, int H, int KVH, int HD) {
    int group = H / KVH;
    float scale = (float)(1.0 / sqrt((double)HD));
    // parallel over (b, kv head): the query heads of one group accumulate into the same
    // dk/dv rows, so they stay in one thread
#pragma omp parallel for collapse(2) if ((int64_t)B * H * T * T * HD > 65536)
    for (int b = 0; b < B; b++)
        for (int kh = 0; kh < KVH; kh++)
            for (int h = kh * group; h < (kh + 1) * group; h++)
                for (int t = 0; t < T; t++) {
                    const float *p = probs + (((int64_t)b * H + h) * T + t) * T;
                    float *dp = dprobs + (((int64_t)b * H + h) * T + t) * T;
                    const float *go = dout + (((int64_t)b * T + t) * H + h) * HD;
                    const float *qt = q + (((int64_t)b * T + t) * H + h) * HD;
                    float *dqt = dq + (((int64_t)b * T + t) * H + h) * HD;
                    // dp = dout . v ; dv += p dout
                    double pdp = 0;
                    for (int t2 = 0; t2 <= t; t2++) {
                        const float *vt = v + (((int64_t)b * T + t2) * KVH + kh) * HD;
                        float *dvt = dv + (((int64_t)b * T + t2) * KVH + kh) * HD;
                        double s = 0;
                        for (int i = 0; i < HD; i++) {
                            s += (double)go[i] * vt[i];
                            dvt[i] += p[t2] * go[i];
                        }
                        dp[t2] = (float)s;
                        pdp += (double)p[t2] * s;
                    }
                    // softmax backward: ds = p (dp - sum p dp); scores = q.k * scale
                    for (int t2 = 0; t2 <= t; t2++) {
                        float ds = (float)(p[t2] * (dp[t2] - pdp)) * scale;
                        const float *kt = k + (((int64_t)b * T + t2) * KVH + kh) * HD;
                        float *dkt = dk + (((int64_t)b * T + t2) * KVH + kh) * HD;
                        for (int i = 0; i < HD; i++) {
                            dqt[i] += ds * kt[i];
                            dkt[i] += ds * qt[i];
                        }
                    }
                }
}

// BLAS versions: per (b, h), S = Q_h K_h^T over the whole (T, T) square (the masked half
// is wasted work, but sgemm is far faster than the loops above), then a row softmax over
// the causal prefix; the probabilities above the diagonal are exact zeros, so P V needs
// no mask. Q_h is a strided view: row stride H*HD.
// Rows of the causal attention GEMMs per block: with T = 512 the blocks do 5/8 of the full
// T x T products (the rest lies above the diagonal, masked).
#define ATTN_ROW_BLOCK 128

// The work items are blocks of ATTN_ROW_BLOCK rows of one (b, h), whole: the GEMMs inside
// run on the item's thread (gemm_f32 nested), and every output has one writer and a fixed
// order, so the bits do not depend on the thread count.
void attention_forward(float *out, float *probs, const float *q, const float *k, const float *v,
                       int B, int T, int H, int KVH, int HD) {
    const int group = H / KVH, qs = H * HD, ks = KVH * HD,
              nrb = (T + ATTN_ROW_BLOCK - 1) / ATTN_ROW_BLOCK;
    const float scale = (float)(1.0 / sqrt((double)HD));
#pragma omp parallel for schedule(dynamic, 1) if ((int64_t)B * H * T * T * HD > 65536)
    for (int it = 0; it < B * H * nrb; it++) {
        const int bh = it / nrb, b = bh / H, h = bh % H, kh = h / group;
        // causal: rows [r0, r1) need keys [0, r1) only (the rest is masked)
        const int r0 = it % nrb * ATTN_ROW_BLOCK, r1 = MIN(T, r0 + ATTN_ROW_BLOCK);
        const float *kb = k + (int64_t)b * T * ks + kh * HD;
        const float *vb = v + (int64_t)b * T * ks + kh * HD;
        float *p = probs + (int64_t)bh * T * T;
        gemm_f32(false, true, r1 - r0, r1, HD, scale, q + ((int64_t)b * T + r0) * qs + h * HD, qs,
                 kb, ks, 0.0f, p + (int64_t)r0 * T, T);
        for (int t = r0; t < r1; t++) {
            float *row = p + (int64_t)t * T;
            float mx = vm_max_f32(row, t + 1);
            double sum = vm_expf_shift_sum(row, t + 1, mx);
            float inv = (float)(1.0 / sum);
            for (int t2 = 0; t2 <= t; t2++)
                row[t2] *= inv;
            for (int t2 = t + 1; t2 < T; t2++)
                row[t2] = 0.0f;
        }
        // O = P V over keys [0, r1)
        gemm_f32(false, false, r1 - r0, HD, r1, 1.0f, p + (int64_t)r0 * T, T, vb, ks, 0.0f,
                 out + ((int64_t)b * T + r0) * qs + h * HD, qs);
    }
}

// Causal blocks: P and dS are zero above the diagonal, so a block of rows [r0, r1) needs
// columns [0, r1) and a block of columns [r0, r1) rows [r0, T). First, per block of rows of
// one (b, h): dP, dS and dQ. Then per block of rows of dK and dV of one (b, kv-head): the
// sums over the group's query heads, in head order.
void attention_backward(float *dq, float *dk, float *dv, float *dprobs, const float *dout,
                        const float *probs, const float *q, const float *k, const float *v, int B,
                        int T, int H, int KVH, int HD) {
    const int group = H / KVH, qs = H * HD, ks = KVH * HD,
              nrb = (T + ATTN_ROW_BLOCK - 1) / ATTN_ROW_BLOCK;
    const float scale = (float)(1.0 / sqrt((double)HD));
    const bool par = (int64_t)B * H * T * T * HD > 65536;
    (void)par; // read by the pragmas only (unused without OpenMP)
#pragma omp parallel for schedule(dynamic, 1) if (par)
    for (int it = 0; it < B * H * nrb; it++) {
        const int bh = it / nrb, b = bh / H, h = bh % H, kh = h / group;
        const int r0 = it % nrb * ATTN_ROW_BLOCK, r1 = MIN(T, r0 + ATTN_ROW_BLOCK);
        const int64_t qo = ((int64_t)b * T + r0) * qs + h * HD, ko = (int64_t)b * T * ks + kh * HD;
        const float *p = probs + (int64_t)bh * T * T;
        float *dp = dprobs + (int64_t)bh * T * T;
        // dP[r0:r1, 0:r1] = dO[r0:r1] V[0:r1]^T
        gemm_f32(false, true, r1 - r0, r1, HD, 1.0f, dout + qo, qs, v + ko, ks, 0.0f,
                 dp + (int64_t)r0 * T, T);
        // dS = P (dP - sum_j P dP) * scale, zero above the diagonal
        for (int t = r0; t < r1; t++) {
            const float *pr = p + (int64_t)t * T;
            float *dr = dp + (int64_t)t * T;
            double pdp = 0;
            for (int t2 = 0; t2 <= t; t2++)
                pdp += (double)pr[t2] * dr[t2];
            for (int t2 = 0; t2 <= t; t2++)
                dr[t2] = pr[t2] * (dr[t2] - (float)pdp) * scale;
            for (int t2 = t + 1; t2 < T; t2++)
                dr[t2] = 0.0f;
        }
        // dQ[r0:r1] += dS[r0:r1, 0:r1] K[0:r1]
        gemm_f32(false, false, r1 - r0, HD, r1, 1.0f, dp + (int64_t)r0 * T, T, k + ko, ks, 1.0f,
                 dq + qo, qs);
    }
#pragma omp parallel for schedule(dynamic, 1) if (par)
    for (int it = 0; it < B * KVH * nrb; it++) {
        const int bk = it / nrb, b = bk / KVH, kh = bk % KVH;
        const int r0 = it % nrb * ATTN_ROW_BLOCK, r1 = MIN(T, r0 + ATTN_ROW_BLOCK);
        const int64_t ko = ((int64_t)b * T + r0) * ks + kh * HD;
        for (int h = kh * group; h < (kh + 1) * group; h++) {
            const int64_t qo = ((int64_t)b * T + r0) * qs + h * HD,
                          po = ((int64_t)b * H + h) * T * T;
            const float *p = probs + po + (int64_t)r0 * T + r0,
                        *ds = dprobs + po + (int64_t)r0 * T + r0;
            // dV[r0:r1] += P[r0:T, r0:r1]^T dO[r0:T]; dK[r0:r1] += dS[r0:T, r0:r1]^T Q[r0:T]
            gemm_f32(true, false, r1 - r0, HD, T - r0, 1.0f, p, T, dout + qo, qs, 1.0f, dv + ko,
                     ks);
            gemm_f32(true, false, r1 - r0, HD, T - r0, 1.0f, ds, T, q + qo, qs, 1.0f, dk + ko, ks);
        }
    }
}

/* ---- SwiGLU and residual ------------------------------------------------------------ */

void swiglu_forward(float *out, const float *gate, const float *up, int64_t n) {
    enum { CHUNK = 4096 };
#pragma omp parallel for if (n > 65536)
    for (int64_t c = 0; c < n; c += CHUNK)
        vm_silu_mul(out + c, gate + c, up + c, MIN((int64_t)CHUNK, n - c));
}

void swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                     const float *up, int64_t n) {
    // silu'(g) = sig(g) (1 + g (1 - sig(g)))
    enum { CHUNK = 4096 };
#pragma omp parallel for if (n > 65536)
    for (int64_t c = 0; c < n; c += CHUNK)
        vm_silu_mul_backward(dgate + c, dup + c, dout + c, gate + c, up + c,
                             MIN((int64_t)CHUNK, n - c));
}

void residual_forward(float *out, const float *a, const float *b, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        out[i] = a[i] + b[i];
}

void residual_backward(float *da, float *db, const float *dout, int64_t n) {
    if (da)
        for (int64_t i = 0; i < n; i++)
            da[i] += dout[i];
    if (db)
        for (int64_t i = 0; i < n; i++)
            db[i] += dout[i];
}

/* ---- Losses ------------------------------------------------------------------------- */

// log sum_i exp(x_i * inv_t), with the max subtracted first.
// log sum_i exp(x_i inv_t), inv_t > 0 (so max(x) inv_t is the largest term's exponent).
static double row_lse(const float *x, int V, double inv_t) {
    double mx = (double)vm_max_f32(x, V) * inv_t;
    return mx + log(vm_sum_exp(x, V, inv_t, mx));
}

// Rows are processed in chunks whose exponentials come from vm_exp_affine.
#define ROW_CHUNK 256

static int64_t count_valid(const int32_t *targets, int64_t N) {
    int64_t n = 0;
    for (int64_t i = 0; i < N; i++)
        n += targets[i] != TRAIN_IGNORE_INDEX;
    return n;
}

// The loss sums: per-row terms summed in row order afterwards (an OpenMP reduction would
// add the threads' partial sums in an order that follows the thread count).
static double sum_rows(const double *v, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += v[i];
    return s;
}

// sum_i p_T(i) (log p_T(i) - log p_S(i)) for one row at temperature T (no T^2).
static double row_kl(const float *s, const float *t, int V, double inv_t) {
    double ls = row_lse(s, V, inv_t), lt = row_lse(t, V, inv_t), kl = 0, pt[ROW_CHUNK];
    for (int i0 = 0; i0 < V; i0 += ROW_CHUNK) {
        int n = MIN(ROW_CHUNK, V - i0);
        vm_exp_affine(pt, t + i0, n, inv_t, lt);
        for (int j = 0; j < n; j++) {
            double lpt = t[i0 + j] * inv_t - lt, lps = s[i0 + j] * inv_t - ls;
            kl += pt[j] * (lpt - lps);
        }
    }
    return kl;
}

KdLoss kd_loss_forward(const float *logits, const float *tlogits, const int32_t *targets, int64_t N,
                       int V, const KdLossOptions *o) {
    KdLoss r = {0};
    r.n_valid = count_valid(targets, N);
    if (r.n_valid == 0) return r;
    double inv_t = 1.0 / o->temperature;
    int Vk = o->kd_vocab > 0 ? o->kd_vocab : V, Vt = o->teacher_vocab > 0 ? o->teacher_vocab : V;
    double *rkl = xcalloc((size_t)(2 * N), sizeof(double)), *rce = rkl + N;
#pragma omp parallel for if (N * V > 65536)
    for (int64_t n = 0; n < N; n++) {
        if (targets[n] == TRAIN_IGNORE_INDEX) continue;
        const float *s = logits + n * V;
        rce[n] = row_lse(s, V, 1.0) - s[targets[n]];
        if (tlogits) rkl[n] = row_kl(s, tlogits + n * Vt, Vk, inv_t);
    }
    const double kl = sum_rows(rkl, N), ce = sum_rows(rce, N);
    free(rkl);
    double T2 = (double)o->temperature * o->temperature;
    r.kl = T2 * kl / r.n_valid;
    r.ce = ce / r.n_valid;
    r.loss = (tlogits ? o->alpha * r.kl : 0) + (1 - (double)o->alpha) * r.ce;
    return r;
}

void kd_loss_backward(float *dlogits, const float *logits, const float *tlogits,
                      const int32_t *targets, int64_t N, int V, const KdLossOptions *o,
                      float dloss) {
    int64_t nv = count_valid(targets, N);
    double inv_t = 1.0 / o->temperature;
    int Vk = o->kd_vocab > 0 ? o->kd_vocab : V, Vt = o->teacher_vocab > 0 ? o->teacher_vocab : V;
    // d(T^2 KL)/ds = T (p_S^T - p_T^T); d CE/ds = softmax(s) - onehot(y)
    double wkl = nv ? (double)dloss * o->alpha * o->temperature / nv : 0;
    double wce = nv ? (double)dloss * (1 - (double)o->alpha) / nv : 0;
#pragma omp parallel for if (N * V > 65536)
    for (int64_t n = 0; n < N; n++) {
        float *d = dlogits + n * V;
        if (targets[n] == TRAIN_IGNORE_INDEX) {
            memset(d, 0, V * sizeof(float));
            continue;
        }
        const float *s = logits + n * V, *t = tlogits ? tlogits + n * Vt : NULL;
        double ls1 = row_lse(s, V, 1.0);
        double lst = t ? row_lse(s, Vk, inv_t) : 0, ltt = t ? row_lse(t, Vk, inv_t) : 0;
        double p1[ROW_CHUNK], ps[ROW_CHUNK], pt[ROW_CHUNK];
        for (int i0 = 0; i0 < V; i0 += ROW_CHUNK) {
            int m = MIN(ROW_CHUNK, V - i0), mk = t ? MAX(0, MIN(m, Vk - i0)) : 0;
            vm_exp_affine(p1, s + i0, m, 1.0, ls1);
            if (mk > 0) {
                vm_exp_affine(ps, s + i0, mk, inv_t, lst);
                vm_exp_affine(pt, t + i0, mk, inv_t, ltt);
            }
            for (int j = 0; j < m; j++) {
                double g = wce * (p1[j] - (i0 + j == targets[n]));
                if (j < mk) g += wkl * (ps[j] - pt[j]);
                d[i0 + j] = (float)g;
            }
        }
    }
}

// One row of kd_loss_forward_backward: adds the row's CE and KL (no T^2) to *ce, *kl and
// writes its gradient. The values are computed exactly as row_lse / row_kl and
// kd_loss_backward compute them, but each log-sum-exp once and each exponential pass only
// when a term needs it (at T = 1 the tempered student softmax is the plain one).
static void kd_row_fused(float *d, const float *s, const float *t, int32_t y, int V, int Vk,
                         double inv_t, double wkl, double wce, double *ce, double *kl) {
    const double ls1 = row_lse(s, V, 1.0);
    *ce += ls1 - s[y];
    const bool same_s = inv_t == 1.0 && Vk == V; // softmax(s/T) over Vk is softmax(s)
    double lst = 0, ltt = 0;
    if (t) {
        lst = same_s ? ls1 : row_lse(s, Vk, inv_t);
        ltt = row_lse(t, Vk, inv_t);
    }
    const bool need_p1 = wce != 0, need_ps = t && wkl != 0;
    double p1[ROW_CHUNK], ps[ROW_CHUNK], pt[ROW_CHUNK], rkl = 0;
    for (int i0 = 0; i0 < V; i0 += ROW_CHUNK) {
        const int m = MIN(ROW_CHUNK, V - i0), mk = t ? MAX(0, MIN(m, Vk - i0)) : 0;
        if (need_p1 || (need_ps && same_s)) vm_exp_affine(p1, s + i0, m, 1.0, ls1);
        const double *pss = same_s ? p1 : ps;
        if (mk > 0) {
            if (need_ps && !same_s) vm_exp_affine(ps, s + i0, mk, inv_t, lst);
            vm_exp_affine(pt, t + i0, mk, inv_t, ltt);
            for (int j = 0; j < mk; j++) { // as row_kl
                double lpt = t[i0 + j] * inv_t - ltt, lps = s[i0 + j] * inv_t - lst;
                rkl += pt[j] * (lpt - lps);
            }
        }
        for (int j = 0; j < m; j++) {
            // without the CE term its weight is 0: 0 (p1 - onehot) is 0 (up to its sign)
            double g = need_p1 ? wce * (p1[j] - (i0 + j == y)) : 0.0;
            if (j < mk && need_ps) g += wkl * (pss[j] - pt[j]);
            d[i0 + j] = (float)g;
        }
    }
    *kl += rkl;
}

KdLoss kd_loss_forward_backward(float *dlogits, const float *logits, const float *tlogits,
                                const int32_t *targets, int64_t N, int V, const KdLossOptions *o,
                                float dloss) {
    KdLoss r = {0};
    r.n_valid = count_valid(targets, N);
    const double inv_t = 1.0 / o->temperature;
    const int Vk = o->kd_vocab > 0 ? o->kd_vocab : V,
              Vt = o->teacher_vocab > 0 ? o->teacher_vocab : V;
    const int64_t nv = r.n_valid;
    const double wkl = nv && tlogits ? (double)dloss * o->alpha * o->temperature / nv : 0;
    const double wce = nv ? (double)dloss * (1 - (double)o->alpha) / nv : 0;
    double *rkl = xcalloc((size_t)(2 * N), sizeof(double)), *rce = rkl + N;
#pragma omp parallel for if (N * V > 65536)
    for (int64_t n = 0; n < N; n++) {
        float *d = dlogits + n * V;
        if (targets[n] == TRAIN_IGNORE_INDEX) {
            memset(d, 0, V * sizeof(float));
            continue;
        }
        kd_row_fused(d, logits + n * V, tlogits ? tlogits + n * Vt : NULL, targets[n], V, Vk, inv_t,
                     wkl, wce, &rce[n], &rkl[n]);
    }
    const double kl = sum_rows(rkl, N), ce = sum_rows(rce, N);
    free(rkl);
    if (nv == 0) return r;
    double T2 = (double)o->temperature * o->temperature;
    r.kl = T2 * kl / nv;
    r.ce = ce / nv;
    r.loss = (tlogits ? o->alpha * r.kl : 0) + (1 - (double)o->alpha) * r.ce;
    return r;
}

/* ---- Sparse top-k KD ---------------------------------------------------------------- */

#define KD_SPARSE_EPS 1e-8

// Re-tempered teacher log-probs q (K) of one row (DistillKit get_target_logprobs).
static void sparse_teacher_row(double *q, const float *lp, int K, double a) {
    double mx = -INFINITY, mxa = -INFINITY;
    for (int i = 0; i < K; i++) {
        if (lp[i] > mx) mx = lp[i];
        if (a * lp[i] > mxa) mxa = a * lp[i];
    }
    double s = 0, sa = 0;
    for (int i = 0; i < K; i++) {
        s += exp(lp[i] - mx);
        sa += exp(a * lp[i] - mxa);
    }
    double leftover = 1.0 - exp(mx + log(s));
    if (leftover < 0) leftover = 0;
    if (leftover > 1) leftover = 1;
    double z = log(exp(mxa + log(sa)) + pow(leftover, a));
    for (int i = 0; i < K; i++)
        q[i] = a * lp[i] - z;
}

static double clamp_miss(double m) {
    return m < KD_SPARSE_EPS ? KD_SPARSE_EPS : m > 1 - KD_SPARSE_EPS ? 1 - KD_SPARSE_EPS : m;
}

// One row: returns sum_i e^q (q - s) + m_T (log m_T - log m_S); with d != NULL also writes
// d KL / d z (z = logits / T) into d (V), scaled by w.
// The KL of one row (ls: the row's tempered log-sum-exp) and what its gradient needs: the
// teacher's kept mass tsum, the student's ssum over the same ids, and cm = m_T / m_S (0 when
// m_S is clamped: no gradient through it). qbuf (K) receives the re-tempered teacher q.
static double sparse_row_kl(double *qbuf, const float *logits, const int32_t *ids, const float *lp,
                            int K, double inv_t, double a, double ls, double *tsum_out,
                            double *ssum_out, double *cm_out) {
    sparse_teacher_row(qbuf, lp, K, a);
    double kl = 0, tsum = 0, ssum = 0;
    for (int i = 0; i < K; i++) {
        double si = logits[ids[i]] * inv_t - ls;
        kl += exp(qbuf[i]) * (qbuf[i] - si);
        tsum += exp(qbuf[i]);
        ssum += exp(si);
    }
    double mt_raw = 1 - tsum, ms_raw = 1 - ssum;
    double mt = clamp_miss(mt_raw), ms = clamp_miss(ms_raw);
    // DistillKit: exp(log1p(-clamp(sum))) * (log1p(-clamp(t)) - log1p(-clamp(s)))
    kl += mt * (log(mt) - log(ms));
    // d/dz_j of -sum_i pt_i s_i = -pt_j [j in K] + tsum p_j
    // d/dz_j of -mt log(1 - S)   = mt (p_j [j in K] - S p_j) / (1 - S), S = ssum (unclamped)
    *tsum_out = tsum;
    *ssum_out = ssum;
    *cm_out = ms_raw == ms ? mt / ms : 0;
    return kl;
}

static double sparse_row(float *d, double w, const float *logits, const int32_t *ids,
                         const float *lp, int K, int V, double inv_t, double a, double *qbuf) {
    double ls = row_lse(logits, V, inv_t), tsum, ssum, cm;
    double kl = sparse_row_kl(qbuf, logits, ids, lp, K, inv_t, a, ls, &tsum, &ssum, &cm);
    if (!d) return kl;
    for (int j = 0; j < V; j++) {
        double p = exp(logits[j] * inv_t - ls);
        d[j] = (float)(w * (tsum * p - cm * ssum * p));
    }
    for (int i = 0; i < K; i++) {
        double p = exp(logits[ids[i]] * inv_t - ls);
        d[ids[i]] += (float)(w * (-exp(qbuf[i]) + cm * p));
    }
    return kl;
}

// One row of kd_sparse_loss_forward_backward: sparse_row's KL (ls = the row's tempered
// log-sum-exp, given) plus the whole row's gradient, KL (weight wkl) and CE (weight wce, ls1
// the plain log-sum-exp, y the target) together, the softmax terms from vectorized
// exponentials in chunks.
static double sparse_row_fused(float *d, double wkl, double wce, const float *s, int32_t y,
                               const int32_t *ids, const float *lp, int K, int V, double inv_t,
                               double a, double *qbuf, double ls, double ls1) {
    double tsum, ssum, cm;
    const double kl = sparse_row_kl(qbuf, s, ids, lp, K, inv_t, a, ls, &tsum, &ssum, &cm);
    const bool same = inv_t == 1.0, need_p = wkl != 0, need_p1 = wce != 0;
    double p[ROW_CHUNK], p1b[ROW_CHUNK];
    for (int i0 = 0; i0 < V; i0 += ROW_CHUNK) {
        const int m = MIN(ROW_CHUNK, V - i0);
        if (need_p) vm_exp_affine(p, s + i0, m, inv_t, ls);
        const double *p1 = same && need_p ? p : p1b;
        if (need_p1 && !(same && need_p)) vm_exp_affine(p1b, s + i0, m, 1.0, ls1);
        for (int j = 0; j < m; j++) {
            double g = need_p ? wkl * (tsum * p[j] - cm * ssum * p[j]) : 0.0;
            if (need_p1) g += wce * (p1[j] - (i0 + j == y));
            d[i0 + j] = (float)g;
        }
    }
    if (need_p)
        for (int i = 0; i < K; i++) {
            double pi = exp(s[ids[i]] * inv_t - ls);
            d[ids[i]] += (float)(wkl * (-exp(qbuf[i]) + cm * pi));
        }
    return kl;
}

KdLoss kd_sparse_loss_forward_backward(float *dlogits, const float *logits,
                                       const KdSparseTeacher *t, const int32_t *targets, int64_t N,
                                       int V, const KdLossOptions *o, float dloss) {
    KdLoss r = {0};
    r.n_valid = count_valid(targets, N);
    const int64_t nv = r.n_valid;
    const double inv_t = 1.0 / o->temperature, a = t->t_gen / (double)o->temperature;
    const double wkl = nv ? (double)dloss * o->alpha * o->temperature / nv : 0;
    const double wce = nv ? (double)dloss * (1 - (double)o->alpha) / nv : 0;
    double *rkl = xcalloc((size_t)(2 * N), sizeof(double)), *rce = rkl + N;
#pragma omp parallel if (N * V > 65536)
    {
        double *q = xmalloc(sizeof(double) * (size_t)t->K);
#pragma omp for schedule(static)
        for (int64_t n = 0; n < N; n++) {
            float *d = dlogits + n * V;
            if (targets[n] == TRAIN_IGNORE_INDEX) {
                memset(d, 0, V * sizeof(float));
                continue;
            }
            const float *s = logits + n * V;
            const double ls1 = row_lse(s, V, 1.0), ls = inv_t == 1.0 ? ls1 : row_lse(s, V, inv_t);
            rce[n] = ls1 - s[targets[n]];
            rkl[n] = sparse_row_fused(d, wkl, wce, s, targets[n], t->ids + n * t->K,
                                      t->logp + n * t->K, t->K, V, inv_t, a, q, ls, ls1);
        }
        free(q);
    }
    const double kl = sum_rows(rkl, N), ce = sum_rows(rce, N);
    free(rkl);
    if (nv == 0) return r;
    r.kl = (double)o->temperature * o->temperature * kl / nv;
    r.ce = ce / nv;
    r.loss = o->alpha * r.kl + (1 - (double)o->alpha) * r.ce;
    return r;
}

KdLoss kd_sparse_loss_forward(const float *logits, const KdSparseTeacher *t, const int32_t *targets,
                              int64_t N, int V, const KdLossOptions *o) {
    KdLoss r = {0};
    r.n_valid = count_valid(targets, N);
    if (r.n_valid == 0) return r;
    double inv_t = 1.0 / o->temperature, a = t->t_gen / (double)o->temperature, kl = 0, ce = 0;
    double *q = xmalloc(sizeof(double) * t->K);
    for (int64_t n = 0; n < N; n++) {
        if (targets[n] == TRAIN_IGNORE_INDEX) continue;
        const float *s = logits + n * V;
        ce += row_lse(s, V, 1.0) - s[targets[n]];
        kl += sparse_row(NULL, 0, s, t->ids + n * t->K, t->logp + n * t->K, t->K, V, inv_t, a, q);
    }
    free(q);
    r.kl = (double)o->temperature * o->temperature * kl / r.n_valid;
    r.ce = ce / r.n_valid;
    r.loss = o->alpha * r.kl + (1 - (double)o->alpha) * r.ce;
    return r;
}

void kd_sparse_loss_backward(float *dlogits, const float *logits, const KdSparseTeacher *t,
                             const int32_t *targets, int64_t N, int V, const KdLossOptions *o,
                             float dloss) {
    int64_t nv = count_valid(targets, N);
    double inv_t = 1.0 / o->temperature, a = t->t_gen / (double)o->temperature;
    // T^2 KL(z = s/T): d/ds = T^2 (1/T) dKL/dz = T dKL/dz
    double wkl = nv ? (double)dloss * o->alpha * o->temperature / nv : 0;
    double wce = nv ? (double)dloss * (1 - (double)o->alpha) / nv : 0;
    double *q = xmalloc(sizeof(double) * t->K);
    for (int64_t n = 0; n < N; n++) {
        float *d = dlogits + n * V;
        if (targets[n] == TRAIN_IGNORE_INDEX) {
            memset(d, 0, V * sizeof(float));
            continue;
        }
        const float *s = logits + n * V;
        sparse_row(d, wkl, s, t->ids + n * t->K, t->logp + n * t->K, t->K, V, inv_t, a, q);
        double ls1 = row_lse(s, V, 1.0);
        for (int i = 0; i < V; i++)
            d[i] += (float)(wce * (exp(s[i] - ls1) - (i == targets[n])));
    }
    free(q);
}
