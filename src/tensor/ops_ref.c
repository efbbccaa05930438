/*
 * ops_ref.c - naive reference kernels: single-threaded, float32, sequential reductions.
 * They define what the optimized kernels in ops_cpu.c must compute (tests/test_ops.c).
 * Shape letters as in model/llama.h.
 */
#include "tensor/ops.h"

#include <math.h>

void ops_matmul_ref(float *y, const float *x, const void *w, DType wt, int T, int K, int N) {
    for (int t = 0; t < T; t++)
        for (int n = 0; n < N; n++) {
            float acc = 0.0f;
            for (int k = 0; k < K; k++)
                acc += x[(int64_t)t * K + k] * ops_load(w, wt, (int64_t)n * K + k);
            y[(int64_t)t * N + n] = acc;
        }
}

void ops_add_bias_ref(float *y, const void *b, DType bt, int T, int N) {
    for (int t = 0; t < T; t++)
        for (int n = 0; n < N; n++)
            y[(int64_t)t * N + n] += ops_load(b, bt, n);
}

void ops_rmsnorm_ref(float *out, const float *x, const void *w, DType wt, int T, int D, float eps) {
    for (int t = 0; t < T; t++) {
        const float *xr = x + (int64_t)t * D;
        float *o = out + (int64_t)t * D;
        float ss = 0.0f;
        for (int i = 0; i < D; i++)
            ss += xr[i] * xr[i];
        // rstd = 1/sqrt(mean(x^2) + eps), as HF LlamaRMSNorm (torch.rsqrt in float32)
        float rstd = 1.0f / sqrtf(ss / (float)D + eps);
        for (int i = 0; i < D; i++)
            o[i] = ops_load(w, wt, i) * (xr[i] * rstd);
    }
}

void ops_embed_ref(float *x, const void *emb, DType et, const int32_t *tokens, int T, int D) {
    for (int t = 0; t < T; t++)
        for (int i = 0; i < D; i++)
            x[(int64_t)t * D + i] = ops_load(emb, et, (int64_t)tokens[t] * D + i);
}

void ops_rope_ref(float *x, int T, int nh, int HD, const int32_t *pos, const float *cos_tab,
                  const float *sin_tab) {
    int half = HD / 2;
    for (int t = 0; t < T; t++) {
        const float *c = cos_tab + (int64_t)pos[t] * half, *s = sin_tab + (int64_t)pos[t] * half;
        for (int h = 0; h < nh; h++) {
            float *v = x + ((int64_t)t * nh + h) * HD;
            // rotate_half: (a, b) -> (a cos - b sin, b cos + a sin) for a = v[i], b = v[i + HD/2]
            for (int i = 0; i < half; i++) {
                float a = v[i], b = v[i + half];
                v[i] = a * c[i] - b * s[i];
                v[i + half] = b * c[i] + a * s[i];
            }
        }
    }
}

void ops_attention_ref(float *out, const float *q, const OpsAttnArgs *a, float *scratch) {
    int H = a->H, HD = a->HD, group = a->H / a->KVH;
    for (int t = 0; t < a->T; t++)
        for (int h = 0; h < H; h++) {
            const float *qh = q + ((int64_t)t * H + h) * HD;
            const int64_t kv_off = (int64_t)(h / group) * a->kv_head_stride;
            int np = a->pos[t] + 1; // causal: positions 0..pos
            float mx = -INFINITY;
            for (int p = 0; p < np; p++) {
                float s = 0.0f;
                for (int i = 0; i < HD; i++)
                    s += qh[i] *
                         ops_kv_get(a->k_seq[t], a->kv_dtype, kv_off + ops_key_offset(HD, i, p));
                scratch[p] = s * a->scale;
                if (scratch[p] > mx) mx = scratch[p];
            }
            float sum = 0.0f;
            for (int p = 0; p < np; p++) {
                scratch[p] = expf(scratch[p] - mx);
                sum += scratch[p];
            }
            float *o = out + ((int64_t)t * H + h) * HD;
            for (int i = 0; i < HD; i++)
                o[i] = 0.0f;
            for (int p = 0; p < np; p++) {
                float wgt = scratch[p] / sum;
                for (int i = 0; i < HD; i++)
                    o[i] +=
                        wgt * ops_kv_get(a->v_seq[t], a->kv_dtype, kv_off + (int64_t)p * HD + i);
            }
        }
}

void ops_swiglu_ref(float *h, const float *g, const float *u, int64_t n) {
    // silu(g) = g * sigmoid(g) = g / (1 + exp(-g))
    for (int64_t i = 0; i < n; i++)
        h[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void ops_add_ref(float *y, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        y[i] += x[i];
}
