/*
 * optim.c - AdamW and Muon (see optim.h for the exact update rules).
 */
#include "train/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "tensor/gemm.h"

OptimOptions optim_defaults(OptimKind kind) {
    OptimOptions o = {.kind = kind,
                      .lr = 1e-3f,
                      .weight_decay = 0.01f,
                      .beta1 = 0.9f,
                      .beta2 = 0.999f,
                      .eps = 1e-8f,
                      .momentum = 0.95f,
                      .nesterov = true,
                      .ns_steps = 5,
                      .ns_eps = 1e-7f,
                      .scale = MUON_SCALE_ORIGINAL,
                      .lora_mode = MUON_LORA_BOTH};
    if (kind == OPTIM_MUON) o.weight_decay = 0.1f;
    return o;
}

const char *optim_kind_name(OptimKind k) { return k == OPTIM_MUON ? "muon" : "adamw"; }
const char *muon_scale_name(MuonScale s) {
    return s == MUON_SCALE_MATCH_RMS_ADAMW ? "match_rms_adamw" : "original";
}
const char *muon_lora_mode_name(MuonLoraMode m) {
    return m == MUON_LORA_B_ONLY ? "b-only" : "both";
}

/* ---- AdamW -------------------------------------------------------------------------- */

void adamw_update(float *p, const float *g, float *m, float *v, int64_t n, float lr,
                  const OptimOptions *o, int64_t t) {
    // scalars computed in double as Python does, then used as F32 by the kernels
    double b1 = o->beta1, b2 = o->beta2;
    float decay = (float)(1.0 - (double)lr * o->weight_decay);
    double bc1 = 1.0 - pow(b1, (double)t), bc2 = 1.0 - pow(b2, (double)t);
    float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    float w1 = (float)(1.0 - b1), w2 = (float)(1.0 - b2), fb2 = o->beta2;
    for (int64_t i = 0; i < n; i++) {
        p[i] *= decay;
        m[i] += w1 * (g[i] - m[i]); // lerp with weight 1 - b1 < 0.5
        v[i] = v[i] * fb2 + w2 * (g[i] * g[i]);
        float denom = sqrtf(v[i]) / bc2_sqrt + o->eps;
        p[i] += -step_size * (m[i] / denom);
    }
}

/* ---- Newton-Schulz ------------------------------------------------------------------ */

static const float NS_A = 3.4445f, NS_B = -4.7750f, NS_C = 2.0315f;

int64_t muon_scratch_floats(int rows, int cols) {
    int64_t s = MIN(rows, cols);
    return 2 * (int64_t)rows * cols + 3 * s * s;
}

// X (m, k) <- g or g^T normalised by its Frobenius norm, m = min(rows, cols).
static void ns_prepare(float *x, const float *g, int rows, int cols, float eps) {
    double ss = 0;
    for (int64_t i = 0; i < (int64_t)rows * cols; i++)
        ss += (double)g[i] * g[i];
    float nrm = (float)sqrt(ss);
    if (nrm < eps) nrm = eps;
    bool tr = rows > cols;
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            float val = g[(int64_t)r * cols + c] / nrm;
            if (tr)
                x[(int64_t)c * rows + r] = val;
            else
                x[(int64_t)r * cols + c] = val;
        }
}

static void ns_finish(float *out, const float *x, int rows, int cols) {
    bool tr = rows > cols;
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++)
            out[(int64_t)r * cols + c] = tr ? x[(int64_t)c * rows + r] : x[(int64_t)r * cols + c];
}

void muon_newton_schulz(float *out, const float *g, int rows, int cols, int steps, float eps,
                        float *scratch) {
    int m = MIN(rows, cols), k = MAX(rows, cols);
    float *x = scratch, *xn = x + (int64_t)m * k, *A = xn + (int64_t)m * k, *B = A + (int64_t)m * m;
    ns_prepare(x, g, rows, cols, eps);
    for (int s = 0; s < steps; s++) {
        // A = X X^T (m, m)
        gemm_f32(false, true, m, m, k, 1.0f, x, k, x, k, 0.0f, A, m);
        // B = b A + c A A
        memcpy(B, A, sizeof(float) * m * m);
        gemm_f32(false, false, m, m, m, NS_C, A, m, A, m, NS_B, B, m);
        // X <- a X + B X
        memcpy(xn, x, sizeof(float) * m * k);
        gemm_f32(false, false, m, k, m, 1.0f, B, m, x, k, NS_A, xn, k);
        float *t = x;
        x = xn;
        xn = t;
    }
    ns_finish(out, x, rows, cols);
}

void muon_newton_schulz_ref(float *out, const float *g, int rows, int cols, int steps, float eps,
                            float *scratch) {
    int m = MIN(rows, cols), k = MAX(rows, cols);
    float *x = scratch, *xn = x + (int64_t)m * k, *A = xn + (int64_t)m * k, *B = A + (int64_t)m * m;
    ns_prepare(x, g, rows, cols, eps);
    for (int s = 0; s < steps; s++) {
        for (int i = 0; i < m; i++)
            for (int j = 0; j < m; j++) {
                double acc = 0;
                for (int l = 0; l < k; l++)
                    acc += (double)x[(int64_t)i * k + l] * x[(int64_t)j * k + l];
                A[i * m + j] = (float)acc;
            }
        for (int i = 0; i < m; i++)
            for (int j = 0; j < m; j++) {
                double acc = 0;
                for (int l = 0; l < m; l++)
                    acc += (double)A[i * m + l] * A[l * m + j];
                B[i * m + j] = (float)(NS_B * (double)A[i * m + j] + NS_C * acc);
            }
        for (int i = 0; i < m; i++)
            for (int j = 0; j < k; j++) {
                double acc = 0;
                for (int l = 0; l < m; l++)
                    acc += (double)B[i * m + l] * x[(int64_t)l * k + j];
                xn[(int64_t)i * k + j] = (float)(NS_A * (double)x[(int64_t)i * k + j] + acc);
            }
        float *t = x;
        x = xn;
        xn = t;
    }
    ns_finish(out, x, rows, cols);
}

double muon_lr_scale(MuonScale s, int rows, int cols) {
    if (s == MUON_SCALE_MATCH_RMS_ADAMW) return 0.2 * sqrt((double)MAX(rows, cols));
    return sqrt(MAX(1.0, (double)rows / cols));
}

void muon_update(float *p, const float *g, float *buf, int rows, int cols, float lr,
                 const OptimOptions *o, float *scratch) {
    int64_t n = (int64_t)rows * cols;
    float mu = o->momentum, w = 1.0f - mu;
    // the update input goes to the tail of scratch, NS5 uses the head
    float *u = scratch + muon_scratch_floats(rows, cols);
    for (int64_t i = 0; i < n; i++) {
        buf[i] += w * (g[i] - buf[i]); // buf.lerp_(g, 1 - mu), weight < 0.5
        // g.lerp(buf, mu), weight >= 0.5: end - (end - self) (1 - weight)
        u[i] = o->nesterov ? buf[i] - (buf[i] - g[i]) * w : buf[i];
    }
    muon_newton_schulz(u, u, rows, cols, o->ns_steps, o->ns_eps, scratch);
    float adj = (float)(lr * muon_lr_scale(o->scale, rows, cols));
    float decay = (float)(1.0 - (double)lr * o->weight_decay);
    for (int64_t i = 0; i < n; i++) {
        p[i] *= decay;
        p[i] += -adj * u[i];
    }
}

/* ---- LoRA optimizer ----------------------------------------------------------------- */

Status lora_optim_init(LoraOptimizer *o, const LoraModel *lm, const OptimOptions *opt) {
    memset(o, 0, sizeof *o);
    if (opt->kind < 0 || opt->kind >= OPTIM_COUNT) return fail(STATUS_ERR_ARG, "unknown optimizer");
    if (!(opt->lr >= 0) || !(opt->weight_decay >= 0) || !(opt->beta1 >= 0 && opt->beta1 < 1) ||
        !(opt->beta2 >= 0 && opt->beta2 < 1) || !(opt->momentum >= 0 && opt->momentum < 1) ||
        opt->ns_steps < 0 || opt->ns_steps > 100)
        return fail(STATUS_ERR_ARG,
                    "bad optimizer settings (lr %g, wd %g, betas %g/%g, momentum %g)",
                    (double)opt->lr, (double)opt->weight_decay, (double)opt->beta1,
                    (double)opt->beta2, (double)opt->momentum);
    o->opt = *opt;
    o->n = lm->n_params;
    o->m = calloc((size_t)o->n, sizeof(float));
    o->v = calloc((size_t)o->n, sizeof(float));
    int64_t sc = 0;
    for (int i = 0; i < lm->n_layers * LORA_MODULE_COUNT; i++) {
        const LoraAdapter *ad = &lm->ad[i];
        if (!ad->a) continue;
        // NS5 scratch plus the update buffer
        sc = MAX(sc, muon_scratch_floats(ad->rank, ad->in) + (int64_t)ad->rank * ad->in);
        sc = MAX(sc, muon_scratch_floats(ad->out, ad->rank) + (int64_t)ad->out * ad->rank);
    }
    o->scratch = opt->kind == OPTIM_MUON ? malloc((size_t)MAX(sc, 1) * sizeof(float)) : NULL;
    if (!o->m || !o->v || (opt->kind == OPTIM_MUON && !o->scratch)) {
        lora_optim_release(o);
        return fail(STATUS_ERR_NOMEM, "cannot allocate optimizer state for %lld parameters",
                    (long long)lm->n_params);
    }
    return STATUS_OK;
}

void lora_optim_release(LoraOptimizer *o) {
    free(o->m);
    free(o->v);
    free(o->scratch);
    memset(o, 0, sizeof *o);
}

Status lora_optim_step(LoraOptimizer *o, LoraModel *lm, float lr) {
    o->t++;
    const OptimOptions *op = &o->opt;
    if (op->kind == OPTIM_ADAMW) {
        adamw_update(lm->params, lm->grads, o->m, o->v, lm->n_params, lr, op, o->t);
    } else {
        for (int i = 0; i < lm->n_layers * LORA_MODULE_COUNT; i++) {
            LoraAdapter *ad = &lm->ad[i];
            if (!ad->a) continue;
            int64_t oa = ad->a - lm->params, ob = ad->b - lm->params;
            int64_t na = (int64_t)ad->rank * ad->in;
            if (op->lora_mode == MUON_LORA_B_ONLY)
                adamw_update(ad->a, ad->da, o->m + oa, o->v + oa, na, lr, op, o->t);
            else
                muon_update(ad->a, ad->da, o->m + oa, ad->rank, ad->in, lr, op, o->scratch);
            muon_update(ad->b, ad->db, o->m + ob, ad->out, ad->rank, lr, op, o->scratch);
        }
    }
    for (int64_t i = 0; i < lm->n_params; i++)
        if (!isfinite(lm->params[i]))
            return fail(STATUS_ERR_NUMERIC, "LoRA parameter %lld is %g after step %lld",
                        (long long)i, (double)lm->params[i], (long long)o->t);
    return STATUS_OK;
}
