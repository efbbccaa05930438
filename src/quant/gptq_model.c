/*
 * gptq_model.c - whole-model GPTQ / RTN, GPTQ v1 checkpoint directories (gptq_model.h).
 *
 * The calibration forward pass is a copy of the engine's layer (model/infer.c) over one
 * sequence at a time, with no KV cache beyond the sequence itself, that stops as soon as
 * the inputs it was asked to capture are known:
 *
 *   xn = rmsnorm(x) * attn_norm                      -> capture A (q, k, v)   // (T, D)
 *   att = attention(rope(xn Wq^T), rope(xn Wk^T), xn Wv^T)  -> capture B (o)  // (T, H*HD)
 *   x2 = x + att Wo^T;  xn2 = rmsnorm(x2) * ffn_norm -> capture C (gate, up)  // (T, D)
 *   h = silu(xn2 Wg^T) * (xn2 Wu^T)                  -> capture D (down)      // (T, F)
 *   out = x2 + h Wd^T
 */
#include "quant/gptq_model.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/common.h"
#include "core/dtype.h"
#include "core/fileio.h"
#include "core/json_file.h"
#include "core/log.h"
#include "model/infer.h"
#include "model/model_io.h"
#include "model/safetensors.h"
#include "quant/gptq_pack.h"
#include "quant/qmatmul.h"
#include "tensor/ops.h"

void gptq_model_options_defaults(GptqModelOptions *o) {
    memset(o, 0, sizeof *o);
    gptq_options_defaults(&o->gptq);
    o->batch_seqs = 8;
}

void gptq_model_config(GptqConfig *c, const GptqModelOptions *o) {
    gptq_config_from_options(c, &o->gptq);
    c->true_sequential = o->true_sequential;
    c->lm_head = o->lm_head;
}

void gptq_model_report_release(GptqModelReport *r) {
    free(r->lin);
    memset(r, 0, sizeof *r);
}

static const char *const linear_names[GPTQ_MODEL_LINEARS] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj",
};

const char *gptq_model_linear_name(int i) {
    CHECK(i >= 0 && i < GPTQ_MODEL_LINEARS);
    return linear_names[i];
}

void gptq_model_layer_linears(LlamaLayer *ly, Tensor *out[GPTQ_MODEL_LINEARS]) {
    out[0] = &ly->wq;
    out[1] = &ly->wk;
    out[2] = &ly->wv;
    out[3] = &ly->wo;
    out[4] = &ly->w_gate;
    out[5] = &ly->w_up;
    out[6] = &ly->w_down;
}

// Capture points, in forward order; each linear reads one of them.
enum { CAP_ATTN_IN, CAP_ATTN_OUT, CAP_MLP_IN, CAP_MLP_MID, CAP_COUNT, CAP_OUT = CAP_COUNT };
static const int linear_cap[GPTQ_MODEL_LINEARS] = {
    CAP_ATTN_IN, CAP_ATTN_IN, CAP_ATTN_IN, CAP_ATTN_OUT, CAP_MLP_IN, CAP_MLP_IN, CAP_MLP_MID};

/* ---- calibration forward pass --------------------------------------------------------- */

// Runs up to R sequences of T tokens at once: the linears see R T rows (OpenBLAS is ~15 %
// faster at 1024 rows than at 128), attention runs per sequence.
typedef struct {
    const Model *m;
    int T, R, n_threads;
    float *xn, *q, *k, *v, *att, *x2, *g, *u, *y; // (R T, .) activations
    float *kc, *vc; // one sequence's (KVH, HD, T) keys, (KVH, T, HD) values
    float *att_scratch, *mm_scratch, *rope_cos, *rope_sin;
    int32_t *pos;
    const void **kseq, **vseq;
} LayerFwd;

static void fwd_release(LayerFwd *f) {
    float *b[] = {f->xn, f->q,  f->k,  f->v,           f->att,        f->x2,       f->g,       f->u,
                  f->y,  f->kc, f->vc, f->att_scratch, f->mm_scratch, f->rope_cos, f->rope_sin};
    for (size_t i = 0; i < ARRAY_LEN(b); i++)
        free(b[i]);
    free(f->pos);
    free(f->kseq);
    free(f->vseq);
    memset(f, 0, sizeof *f);
}

static float *fwd_alloc(size_t n, Status *s) {
    if (*s != STATUS_OK) return NULL;
    float *p = calloc(n ? n : 1, sizeof(float));
    if (!p) *s = fail(STATUS_ERR_NOMEM, "cannot allocate %zu floats of calibration buffers", n);
    return p;
}

static Status fwd_init(LayerFwd *f, const Model *m, int T, int R) {
    memset(f, 0, sizeof *f);
    const LlamaConfig *c = &m->cfg;
    f->m = m;
    f->T = T;
    f->R = R;
#ifdef _OPENMP
    f->n_threads = omp_get_max_threads();
#else
    f->n_threads = 1;
#endif
    size_t D = (size_t)c->dim, F = (size_t)c->hidden_dim, HD = (size_t)c->head_dim;
    size_t QD = (size_t)c->n_heads * HD, KD = (size_t)c->n_kv_heads * HD, t = (size_t)T * R;
    Status s = STATUS_OK;
    f->xn = fwd_alloc(t * D, &s);
    f->q = fwd_alloc(t * QD, &s);
    f->k = fwd_alloc(t * KD, &s);
    f->v = fwd_alloc(t * KD, &s);
    f->att = fwd_alloc(t * QD, &s);
    f->x2 = fwd_alloc(t * D, &s);
    f->g = fwd_alloc(t * F, &s);
    f->u = fwd_alloc(t * F, &s);
    f->y = fwd_alloc(t * MAX(MAX(D, F), QD), &s);
    f->kc = fwd_alloc((size_t)ops_key_ctx(T) * KD, &s); // whole key tiles
    f->vc = fwd_alloc((size_t)ops_key_ctx(T) * KD, &s);
    f->att_scratch =
        fwd_alloc(ops_attention_scratch_floats(T, f->n_threads, c->n_heads, c->head_dim), &s);
    f->mm_scratch = fwd_alloc(ops_matmul_scratch_floats((int)MAX(MAX(D, F), QD)), &s);
    f->rope_cos = fwd_alloc((size_t)T * HD / 2, &s);
    f->rope_sin = fwd_alloc((size_t)T * HD / 2, &s);
    if (s != STATUS_OK) {
        fwd_release(f);
        return s;
    }
    f->pos = xmalloc(t * sizeof *f->pos);
    f->kseq = xmalloc((size_t)T * sizeof *f->kseq); // attention runs one sequence at a time
    f->vseq = xmalloc((size_t)T * sizeof *f->vseq);
    float *inv = xmalloc(HD / 2 * sizeof *inv);
    infer_rope_inv_freq(c, inv);
    for (size_t i = 0; i < t; i++) // the positions of R sequences
        f->pos[i] = (int32_t)(i % (size_t)T);
    for (int p = 0; p < T; p++) {
        f->kseq[p] = f->kc;
        f->vseq[p] = f->vc;
        for (size_t i = 0; i < HD / 2; i++) {
            float ang = (float)p * inv[i]; // float32 angle, as infer.c and HF
            f->rope_cos[(size_t)p * (HD / 2) + i] = cosf(ang);
            f->rope_sin[(size_t)p * (HD / 2) + i] = sinf(ang);
        }
    }
    free(inv);
    return STATUS_OK;
}

static void fwd_linear(float *y, const float *x, int rows, const Tensor *w, const Tensor *b,
                       float *scratch) {
    int N = (int)w->shape[0], K = (int)w->shape[1];
    ops_matmul(y, x, w->data, w->dtype, rows, K, N, scratch);
    if (b && b->data) ops_add_bias(y, b->data, b->dtype, rows, N);
}

// nr <= R sequences x (nr T, D) through layer l up to capture point `stop` (CAP_OUT: the
// whole layer, result in out (nr T, D)). cap[c] (nr T, K_c), when not NULL, receives capture
// point c. (OpenBLAS rounds by row count and thread count, so the bits of a row depend on
// how many sequences share the call: fixed for given options, docs/design.md "Threads".)
static void fwd_layer(LayerFwd *f, int l, const float *x, float *out, int nr, int stop,
                      float *const cap[CAP_COUNT]) {
    const LlamaConfig *c = &f->m->cfg;
    const LlamaLayer *ly = &f->m->layers[l];
    const int T = f->T, rows = nr * f->T, D = c->dim, H = c->n_heads, KVH = c->n_kv_heads,
              HD = c->head_dim;
    size_t QD = (size_t)H * (size_t)HD, KD = (size_t)KVH * (size_t)HD, F = (size_t)c->hidden_dim;
    float *mm = f->mm_scratch;
    // a captured activation is computed in its capture buffer (no copy)
    float *const xn1 = cap[CAP_ATTN_IN] ? cap[CAP_ATTN_IN] : f->xn,
                 *const att = cap[CAP_ATTN_OUT] ? cap[CAP_ATTN_OUT] : f->att,
                 *const xn2 = cap[CAP_MLP_IN] ? cap[CAP_MLP_IN] : f->xn,
                 *const mid = cap[CAP_MLP_MID] ? cap[CAP_MLP_MID] : f->g;
    ops_rmsnorm(xn1, x, ly->attn_norm.data, ly->attn_norm.dtype, rows, D, c->norm_eps);
    if (stop == CAP_ATTN_IN) return;
    fwd_linear(f->q, xn1, rows, &ly->wq, &ly->bq, mm);
    fwd_linear(f->k, xn1, rows, &ly->wk, &ly->bk, mm);
    fwd_linear(f->v, xn1, rows, &ly->wv, &ly->bv, mm);
    ops_rope(f->q, rows, H, HD, f->pos, f->rope_cos, f->rope_sin);
    ops_rope(f->k, rows, KVH, HD, f->pos, f->rope_cos, f->rope_sin);
    const int ctx = ops_key_ctx(T);
    for (int b = 0; b < nr; b++) {
        // the sequence's own KV "cache" of ctx = T rounded up to whole key tiles: keys in
        // transposed tiles (ops_key_offset), values (ctx, HD) per head
        const float *kb = f->k + (size_t)b * (size_t)T * KD,
                    *vb = f->v + (size_t)b * (size_t)T * KD;
        for (int t = 0; t < T; t++)
            for (int h = 0; h < KVH; h++) {
                const size_t src = ((size_t)t * (size_t)KVH + (size_t)h) * (size_t)HD;
                const size_t head = (size_t)h * (size_t)HD * (size_t)ctx;
                ops_kv_store(f->kc + head, f->vc + head, kb + src, vb + src, HD, t, DTYPE_F32);
            }
        OpsAttnArgs a = {.T = T,
                         .H = H,
                         .KVH = KVH,
                         .HD = HD,
                         .ctx = ctx,
                         .pos = f->pos,
                         .k_seq = f->kseq,
                         .v_seq = f->vseq,
                         .kv_head_stride = (int64_t)ctx * HD,
                         .scale = 1.0f / sqrtf((float)HD),
                         .n_threads = f->n_threads};
        const size_t qo = (size_t)b * (size_t)T * QD;
        ops_attention(att + qo, f->q + qo, &a, f->att_scratch);
    }
    if (stop == CAP_ATTN_OUT) return;
    fwd_linear(f->y, att, rows, &ly->wo, NULL, mm);
    memcpy(f->x2, x, (size_t)rows * (size_t)D * sizeof(float));
    ops_add(f->x2, f->y, (int64_t)rows * D);
    ops_rmsnorm(xn2, f->x2, ly->ffn_norm.data, ly->ffn_norm.dtype, rows, D, c->norm_eps);
    if (stop == CAP_MLP_IN) return;
    fwd_linear(f->g, xn2, rows, &ly->w_gate, NULL, mm);
    fwd_linear(f->u, xn2, rows, &ly->w_up, NULL, mm);
    ops_swiglu(mid, f->g, f->u, (int64_t)rows * (int64_t)F);
    if (stop == CAP_MLP_MID) return;
    fwd_linear(f->y, mid, rows, &ly->w_down, NULL, mm);
    memcpy(out, f->x2, (size_t)rows * (size_t)D * sizeof(float));
    ops_add(out, f->y, (int64_t)rows * D);
}

/* ---- one linear ------------------------------------------------------------------------ */

// Hands a packed layer's arrays (and the struct) to the model.
static void own_packed(Model *m, GptqPacked *p) {
    void *arrs[] = {p->qweight, p->qzeros, p->scales, p->g_idx, p->bias, p->k_perm};
    for (size_t i = 0; i < ARRAY_LEN(arrs); i++)
        if (arrs[i]) model_take(m, arrs[i]);
    model_take(m, p);
}

// Quantizes the linear t (N, K) with Hessian h (NULL for RTN) and replaces it by the packed
// weight plus its dequantization. fac holds h's factor, made on first use and shared by
// the linears that read the same inputs (its time counts to the first of them).
static Status quantize_linear(Model *m, Tensor *t, const GptqHessian *h, GptqFactor *fac,
                              const GptqModelOptions *o, GptqLinearInfo *info) {
    if (t->gptq || !t->data)
        return fail(STATUS_ERR_UNSUPPORTED, "%s is already quantized", info->name);
    double t0 = time_now();
    int64_t N = t->shape[0], K = t->shape[1];
    info->N = N;
    info->K = K;
    float *Wf = NULL; // a float copy of 16-bit weights
    if (t->dtype != DTYPE_F32) {
        Wf = malloc((size_t)(N * K) * sizeof(float));
        if (!Wf) return fail(STATUS_ERR_NOMEM, "cannot allocate %s as float", info->name);
        dtype_to_f32(Wf, t->data, t->dtype, N * K);
    }
    const float *W = Wf ? Wf : t->data;
    GptqResult r;
    Status s = STATUS_OK;
    if (h && !fac->U) s = gptq_factor_init(fac, h, &o->gptq);
    if (s == STATUS_OK)
        s = h ? gptq_quantize_factored(&r, W, N, fac, &o->gptq)
              : gptq_rtn_layer(&r, W, N, K, &o->gptq);
    free(Wf);
    if (s != STATUS_OK) return fail_context(s, "%s", info->name);
    GptqPacked *p = xcalloc(1, sizeof *p);
    s = gptq_pack_result(p, &r);
    info->loss = r.loss;
    info->percdamp = r.percdamp;
    info->n_dead = r.n_dead;
    gptq_result_release(&r);
    if (s != STATUS_OK) {
        free(p);
        return fail_context(s, "%s", info->name);
    }
    float *What = model_alloc(m, (size_t)(N * K) * sizeof(float));
    if (!What) {
        gptq_packed_release(p);
        free(p);
        return STATUS_ERR_NOMEM;
    }
    // the float copy is the exact dequantization of what the checkpoint stores (fp16 scales)
    gptq_dequantize(What, p);
    own_packed(m, p);
    *t = (Tensor){.dtype = DTYPE_F32, .ndim = 2, .shape = {N, K}, .data = What, .gptq = p};
    info->seconds = time_now() - t0;
    log_info("gptq: %-34s %5lldx%-5lld loss %-11.5g damp %.3g %.2fs", info->name, (long long)N,
             (long long)K, info->loss, info->percdamp, info->seconds);
    return STATUS_OK;
}

/* ---- the model -------------------------------------------------------------------------- */

typedef struct {
    LayerFwd f;
    float *X, *Y;          // (S, T, D) layer inputs and outputs of every sequence
    float *cap[CAP_COUNT]; // (B, T, K_c) captured inputs of one Hessian batch
    GptqHessian h[CAP_COUNT];
    GptqFactor fac[CAP_COUNT]; // of h, made by the first linear that needs it
    int64_t cap_K[CAP_COUNT];
    int S, T, B;
} Calib;

static void calib_state_release(Calib *c) {
    fwd_release(&c->f);
    free(c->X);
    free(c->Y);
    for (int i = 0; i < CAP_COUNT; i++) {
        free(c->cap[i]);
        gptq_hessian_release(&c->h[i]);
        gptq_factor_release(&c->fac[i]);
    }
    memset(c, 0, sizeof *c);
}

static Status calib_state_init(Calib *c, const Model *m, const CalibSet *cs, int batch) {
    memset(c, 0, sizeof *c);
    const LlamaConfig *cf = &m->cfg;
    c->S = cs->n_seqs;
    c->T = cs->seq_len;
    c->B = MAX(1, MIN(batch, c->S));
    size_t n = (size_t)c->S * (size_t)c->T * (size_t)cf->dim;
    c->X = malloc(n * sizeof(float));
    c->Y = malloc(n * sizeof(float));
    c->cap_K[CAP_ATTN_IN] = cf->dim;
    c->cap_K[CAP_ATTN_OUT] = (int64_t)cf->n_heads * cf->head_dim;
    c->cap_K[CAP_MLP_IN] = cf->dim;
    c->cap_K[CAP_MLP_MID] = cf->hidden_dim;
    bool ok = c->X && c->Y;
    for (int i = 0; i < CAP_COUNT && ok; i++) {
        c->cap[i] = malloc((size_t)c->B * (size_t)c->T * (size_t)c->cap_K[i] * sizeof(float));
        ok = c->cap[i] != NULL;
    }
    if (!ok) {
        calib_state_release(c);
        return fail(STATUS_ERR_NOMEM,
                    "cannot allocate activations of %d calibration sequences "
                    "of %d tokens",
                    cs->n_seqs, cs->seq_len);
    }
    // sequences per forward: ~1024 rows, within one Hessian batch
    Status s = fwd_init(&c->f, m, c->T, MAX(1, MIN(c->B, 1024 / c->T)));
    if (s != STATUS_OK) calib_state_release(c);
    return s;
}

// Runs every sequence through layer l up to `stop`, accumulating the Hessians of the
// capture points in `want` (bit mask). Adds its time to rep's forward and Hessian totals.
static Status calib_accumulate(Calib *c, int l, int stop, unsigned want, GptqModelReport *rep) {
    size_t D = (size_t)c->f.m->cfg.dim, T = (size_t)c->T;
    for (int i = 0; i < CAP_COUNT; i++) {
        gptq_hessian_release(&c->h[i]);
        gptq_factor_release(&c->fac[i]);
        if (want & (1u << i)) {
            Status s = gptq_hessian_init(&c->h[i], c->cap_K[i]);
            if (s != STATUS_OK) return s;
        }
    }
    for (int s0 = 0; s0 < c->S; s0 += c->B) {
        int nb = MIN(c->B, c->S - s0);
        double t0 = time_now();
        for (int b = 0; b < nb; b += c->f.R) {
            float *cap[CAP_COUNT];
            for (int i = 0; i < CAP_COUNT; i++)
                cap[i] =
                    (want & (1u << i)) ? c->cap[i] + (size_t)b * T * (size_t)c->cap_K[i] : NULL;
            fwd_layer(&c->f, l, c->X + (size_t)(s0 + b) * T * D, NULL, MIN(c->f.R, nb - b), stop,
                      cap);
        }
        double t1 = time_now();
        rep->sec_forward += t1 - t0;
        for (int i = 0; i < CAP_COUNT; i++) {
            if (!(want & (1u << i))) continue;
            Status s = gptq_hessian_add_batch(&c->h[i], c->cap[i], (int64_t)nb * (int64_t)T, nb);
            if (s != STATUS_OK) return fail_context(s, "layer %d calibration activations", l);
        }
        rep->sec_hessian += time_now() - t1;
    }
    return STATUS_OK;
}

static void info_init(GptqLinearInfo *info, int l, int i) {
    memset(info, 0, sizeof *info);
    info->layer = l;
    snprintf(info->name, sizeof info->name, "model.layers.%d.%s", l, linear_names[i]);
}

static Status check_calib(const Model *m, const CalibSet *cs) {
    if (!cs || cs->n_seqs < 1 || cs->seq_len < 1 || !cs->tokens)
        return fail(STATUS_ERR_ARG, "gptq needs calibration sequences (or use rtn)");
    if (cs->seq_len > m->cfg.max_seq_len)
        return fail(STATUS_ERR_ARG,
                    "calibration sequences of %d tokens are longer than the "
                    "model's context of %d",
                    cs->seq_len, m->cfg.max_seq_len);
    int64_t n = (int64_t)cs->n_seqs * cs->seq_len;
    for (int64_t i = 0; i < n; i++)
        if (cs->tokens[i] < 0 || cs->tokens[i] >= m->cfg.vocab_size)
            return fail(STATUS_ERR_ARG,
                        "calibration token id %d is outside the vocabulary "
                        "(0..%d)",
                        cs->tokens[i], m->cfg.vocab_size - 1);
    return STATUS_OK;
}

static void head_info_init(GptqLinearInfo *info, const Model *m) {
    memset(info, 0, sizeof *info);
    info->layer = m->cfg.n_layers;
    snprintf(info->name, sizeof info->name, "lm_head");
}

// lm_head (tied or not) replaced by its quantization; a tied model becomes untied, the
// embedding keeping its 16-bit copy.
static Status quantize_head(Model *m, const GptqHessian *h, const GptqModelOptions *o,
                            GptqLinearInfo *info) {
    GptqFactor fac = {0};
    Status s = quantize_linear(m, &m->lm_head, h, &fac, o, info);
    gptq_factor_release(&fac);
    if (s == STATUS_OK) m->cfg.tied_embeddings = false;
    return s;
}

// GPTQ of lm_head: its inputs are the final norm of the last (quantized) layer's outputs,
// c->X, normalised in place (the decoder is done with them).
static Status quantize_head_gptq(Model *m, GptqModelReport *rep, Calib *c,
                                 const GptqModelOptions *o) {
    const LlamaConfig *cf = &m->cfg;
    const size_t D = (size_t)cf->dim, T = (size_t)c->T;
    ops_rmsnorm(c->X, c->X, m->final_norm.data, m->final_norm.dtype, c->S * c->T, cf->dim,
                cf->norm_eps);
    GptqHessian h;
    Status s = gptq_hessian_init(&h, cf->dim);
    double t0 = time_now();
    for (int s0 = 0; s0 < c->S && s == STATUS_OK; s0 += c->B) {
        const int nb = MIN(c->B, c->S - s0);
        s = gptq_hessian_add_batch(&h, c->X + (size_t)s0 * T * D, (int64_t)nb * c->T, nb);
    }
    rep->sec_hessian += time_now() - t0;
    if (s != STATUS_OK) s = fail_context(s, "lm_head calibration activations");
    GptqLinearInfo *info = &rep->lin[rep->n_linear - 1];
    head_info_init(info, m);
    if (s == STATUS_OK) s = quantize_head(m, &h, o, info);
    gptq_hessian_release(&h);
    return s;
}

static Status quantize_gptq(Model *m, GptqModelReport *rep, const CalibSet *cs,
                            const GptqModelOptions *o) {
    Calib c;
    Status s = calib_state_init(&c, m, cs, o->batch_seqs);
    if (s != STATUS_OK) return s;
    const LlamaConfig *cf = &m->cfg;
    int64_t ntok = (int64_t)c.S * c.T;
    ops_embed(c.X, m->tok_emb.data, m->tok_emb.dtype, cs->tokens, (int)ntok, cf->dim);
    // linears of each true-sequential group; without it one group of all seven
    static const int groups[4][4] = {{0, 1, 2, -1}, {3, -1}, {4, 5, -1}, {6, -1}};
    static const int all[8] = {0, 1, 2, 3, 4, 5, 6, -1};
    Progress pr;
    progress_init(&pr, "gptq layers", cf->n_layers);
    for (int l = 0; l < cf->n_layers && s == STATUS_OK; l++) {
        Tensor *lin[GPTQ_MODEL_LINEARS];
        gptq_model_layer_linears(&m->layers[l], lin);
        int n_groups = o->true_sequential ? 4 : 1;
        for (int gi = 0; gi < n_groups && s == STATUS_OK; gi++) {
            const int *grp = o->true_sequential ? groups[gi] : all;
            unsigned want = 0;
            int stop = 0;
            for (int j = 0; grp[j] >= 0; j++) {
                want |= 1u << linear_cap[grp[j]];
                stop = MAX(stop, linear_cap[grp[j]]);
            }
            s = calib_accumulate(&c, l, stop, want, rep);
            for (int j = 0; grp[j] >= 0 && s == STATUS_OK; j++) {
                int i = grp[j];
                GptqLinearInfo *info = &rep->lin[l * GPTQ_MODEL_LINEARS + i];
                info_init(info, l, i);
                s = quantize_linear(m, lin[i], &c.h[linear_cap[i]], &c.fac[linear_cap[i]], o, info);
            }
        }
        // the next layer's inputs come from this layer with its quantized weights (the last
        // layer's outputs only matter to lm_head's Hessian)
        const bool need_out = l + 1 < cf->n_layers || o->lm_head;
        float *none[CAP_COUNT] = {NULL, NULL, NULL, NULL};
        size_t stride = (size_t)c.T * (size_t)cf->dim;
        double t0 = time_now();
        for (int q = 0; q < c.S && need_out && s == STATUS_OK; q += c.f.R)
            fwd_layer(&c.f, l, c.X + (size_t)q * stride, c.Y + (size_t)q * stride,
                      MIN(c.f.R, c.S - q), CAP_OUT, none);
        rep->sec_forward += time_now() - t0;
        float *tmp = c.X;
        c.X = c.Y;
        c.Y = tmp;
        progress_update(&pr, l + 1, NULL);
    }
    progress_finish(&pr, NULL);
    if (s == STATUS_OK && o->lm_head) s = quantize_head_gptq(m, rep, &c, o);
    calib_state_release(&c);
    return s;
}

Status gptq_model_quantize(Model *m, GptqModelReport *rep, const CalibSet *calib,
                           const GptqModelOptions *o) {
    memset(rep, 0, sizeof *rep);
    Status s = gptq_options_check(&o->gptq);
    if (s != STATUS_OK) return s;
    if (o->gptq.bits != 2 && o->gptq.bits != 4 && o->gptq.bits != 8)
        return fail(STATUS_ERR_UNSUPPORTED,
                    "%d-bit GPTQ: checkpoints are written for 2, 4 or 8 bits (4 runs packed; 2 "
                    "and 8 load dequantized)",
                    o->gptq.bits);
    if (!m->layers || m->cfg.n_layers < 1) return fail(STATUS_ERR_ARG, "the model has no layers");
    if (!o->rtn && (s = check_calib(m, calib)) != STATUS_OK) return s;
    // ragged last groups are fine here, but GPU/CPU GPTQ kernels elsewhere refuse them
    // (vLLM Marlin, gptqmodel's torch int4pack): say so once
    Tensor *l0[GPTQ_MODEL_LINEARS];
    gptq_model_layer_linears(&m->layers[0], l0);
    for (int i = 0; i < GPTQ_MODEL_LINEARS; i++) {
        int64_t K = l0[i]->shape[1];
        if (o->gptq.group_size > 0 && o->gptq.group_size < K && K % o->gptq.group_size != 0) {
            log_warn("gptq: %s has %lld inputs, not a multiple of group %d: the last group is "
                     "ragged (edgeforge runs it; vLLM and transformers' GPTQ kernels refuse it)",
                     linear_names[i], (long long)K, o->gptq.group_size);
            break;
        }
    }
    if (o->lm_head && (m->lm_head.gptq || !m->lm_head.data))
        return fail(STATUS_ERR_UNSUPPORTED, "lm_head is already quantized");
    double t0 = time_now();
    rep->n_linear = m->cfg.n_layers * GPTQ_MODEL_LINEARS + (o->lm_head ? 1 : 0);
    rep->lin = xcalloc((size_t)rep->n_linear, sizeof *rep->lin);
    if (o->rtn) {
        for (int l = 0; l < m->cfg.n_layers && s == STATUS_OK; l++) {
            Tensor *lin[GPTQ_MODEL_LINEARS];
            gptq_model_layer_linears(&m->layers[l], lin);
            for (int i = 0; i < GPTQ_MODEL_LINEARS && s == STATUS_OK; i++) {
                GptqLinearInfo *info = &rep->lin[l * GPTQ_MODEL_LINEARS + i];
                info_init(info, l, i);
                s = quantize_linear(m, lin[i], NULL, NULL, o, info);
            }
        }
        if (s == STATUS_OK && o->lm_head) {
            GptqLinearInfo *info = &rep->lin[rep->n_linear - 1];
            head_info_init(info, m);
            s = quantize_head(m, NULL, o, info);
        }
    } else {
        s = quantize_gptq(m, rep, calib, o);
    }
    if (s != STATUS_OK) {
        gptq_model_report_release(rep);
        return s;
    }
    for (int l = 0; l < m->cfg.n_layers; l++) {
        Tensor *lin[GPTQ_MODEL_LINEARS];
        gptq_model_layer_linears(&m->layers[l], lin);
        for (int i = 0; i < GPTQ_MODEL_LINEARS; i++) {
            rep->n_weights += lin[i]->gptq->N * lin[i]->gptq->K;
            rep->packed_bytes += gptq_packed_bytes(lin[i]->gptq);
        }
    }
    if (m->lm_head.gptq) {
        rep->n_weights += m->lm_head.gptq->N * m->lm_head.gptq->K;
        rep->packed_bytes += gptq_packed_bytes(m->lm_head.gptq);
    }
    for (int i = 0; i < rep->n_linear; i++)
        rep->sec_gptq += rep->lin[i].seconds;
    rep->seconds = time_now() - t0;
    return STATUS_OK;
}

/* ---- writing --------------------------------------------------------------------------- */

typedef struct {
    void **p;
    int n;
} Bufs;

static void *bufs_add(Bufs *b, void *p) {
    b->p = xrealloc(b->p, (size_t)(b->n + 1) * sizeof *b->p);
    b->p[b->n++] = p;
    return p;
}

static void bufs_release(Bufs *b) {
    for (int i = 0; i < b->n; i++)
        free(b->p[i]);
    free(b->p);
    memset(b, 0, sizeof *b);
}

// Adds an unquantized tensor as fp16 (the dtype GPTQ checkpoints use for the rest).
static Status add_f16(SafeWriter *w, Bufs *b, const char *name, const Tensor *t) {
    int64_t n = tensor_numel(t);
    if (t->dtype == DTYPE_F16) {
        safewriter_add(w, name, ST_F16, t->ndim, t->shape, t->data);
        return STATUS_OK;
    }
    uint16_t *h = malloc((size_t)n * sizeof *h);
    float *f = malloc((size_t)n * sizeof *f);
    if (!h || !f) {
        free(h);
        free(f);
        return fail(STATUS_ERR_NOMEM, "cannot convert '%s' to fp16", name);
    }
    dtype_to_f32(f, t->data, t->dtype, n);
    dtype_from_f32(h, f, DTYPE_F16, n);
    free(f);
    bufs_add(b, h);
    safewriter_add(w, name, ST_F16, t->ndim, t->shape, h);
    return STATUS_OK;
}

static Status write_weights(const Model *m, const char *path) {
    const LlamaConfig *c = &m->cfg;
    SafeWriter w;
    Bufs b = {0};
    safewriter_init(&w);
    safewriter_meta(&w, "format", "pt");
    safewriter_meta(&w, "quantizer", "edgeforge");
    char name[128];
    Status s = add_f16(&w, &b, "model.embed_tokens.weight", &m->tok_emb);
    for (int l = 0; l < c->n_layers && s == STATUS_OK; l++) {
        LlamaLayer *ly = &m->layers[l];
        snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
        s = add_f16(&w, &b, name, &ly->attn_norm);
        if (s == STATUS_OK) {
            snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", l);
            s = add_f16(&w, &b, name, &ly->ffn_norm);
        }
        Tensor *lin[GPTQ_MODEL_LINEARS];
        gptq_model_layer_linears(ly, lin);
        const Tensor *bias[GPTQ_MODEL_LINEARS] = {&ly->bq, &ly->bk, &ly->bv, NULL,
                                                  NULL,    NULL,    NULL};
        for (int i = 0; i < GPTQ_MODEL_LINEARS && s == STATUS_OK; i++) {
            snprintf(name, sizeof name, "model.layers.%d.%s", l, linear_names[i]);
            if (!lin[i]->gptq) {
                s = fail(STATUS_ERR_ARG, "%s is not quantized", name);
                break;
            }
            if (lin[i]->gptq->k_perm) {
                s = fail(STATUS_ERR_ARG, "%s is in the sorted inference layout", name);
                break;
            }
            gptq_ckpt_add_linear(&w, name, lin[i]->gptq);
            if (bias[i] && bias[i]->data && !lin[i]->gptq->bias) {
                char bn[160];
                snprintf(bn, sizeof bn, "%s.bias", name);
                s = add_f16(&w, &b, bn, bias[i]);
            }
        }
    }
    if (s == STATUS_OK) s = add_f16(&w, &b, "model.norm.weight", &m->final_norm);
    if (s == STATUS_OK && m->lm_head.gptq) {
        if (m->lm_head.gptq->k_perm)
            s = fail(STATUS_ERR_ARG, "lm_head is in the sorted inference layout");
        else
            gptq_ckpt_add_linear(&w, "lm_head", m->lm_head.gptq);
    } else if (s == STATUS_OK && !c->tied_embeddings) {
        s = add_f16(&w, &b, "lm_head.weight", &m->lm_head);
    }
    if (s == STATUS_OK) s = safewriter_write(&w, path);
    safewriter_release(&w);
    bufs_release(&b);
    return s;
}

Status gptq_model_save(const Model *m, const char *dir_in, const GptqConfig *c) {
    char *dir = xstrdup(dir_in);
    for (size_t n = strlen(dir); n > 1 && dir[n - 1] == '/'; n--)
        dir[n - 1] = '\0';
    Status s = STATUS_OK;
    if (out_dir_taken(dir)) {
        s = fail(STATUS_ERR_IO, "'%s' already exists (refusing to overwrite it)", dir);
        free(dir);
        return s;
    }
    size_t n = strlen(dir) + 40;
    char *tmp = xmalloc(n);
    snprintf(tmp, n, "%s.gptq.tmp.%ld", dir, (long)getpid());
    dir_remove(tmp);
    // config.json, generation_config.json and the tokenizer from the HF writer; the weights
    // are ours
    s = model_save_hf_meta(m, tmp, DTYPE_F16);
    if (s == STATUS_OK) {
        char *st = path_join(tmp, "model.safetensors");
        s = write_weights(m, st);
        free(st);
    }
    if (s == STATUS_OK) s = gptq_config_write(tmp, c);
    if (s == STATUS_OK && rename(tmp, dir) != 0)
        s = fail(STATUS_ERR_IO, "cannot rename '%s' to '%s': %s", tmp, dir, strerror(errno));
    if (s != STATUS_OK) dir_remove(tmp);
    free(tmp);
    free(dir);
    return s;
}

/* ---- reading ---------------------------------------------------------------------------- */

static char *dir_of(const char *path) {
    if (path_is_dir(path)) return xstrdup(path);
    const char *slash = strrchr(path, '/');
    return slash ? strndup(path, (size_t)(slash - path)) : xstrdup(".");
}

bool gptq_model_is_checkpoint(const char *path) {
    size_t n = strlen(path);
    if (!path_is_dir(path) && !(n >= 11 && strcmp(path + n - 11, "config.json") == 0)) return false;
    char *dir = dir_of(path);
    char *cfg = path_join(dir, "config.json");
    json_t *root = NULL;
    bool yes = false;
    if (path_is_file(cfg) && json_read_object(&root, cfg, 0) == STATUS_OK) {
        const json_t *q = json_object_get(root, "quantization_config");
        const json_t *qm = q ? json_object_get(q, "quant_method") : NULL;
        yes = qm && json_is_string(qm) && strcmp(json_string_value(qm), "gptq") == 0;
    }
    status_clear();
    json_decref(root);
    free(cfg);
    free(dir);
    return yes;
}

// A packed t becomes its float32 dequantization (exact; model-owned): t->data set, t->gptq
// dropped (the packed arrays stay owned by m).
static Status dequantize_tensor(Model *m, Tensor *t) {
    GptqPacked *p = t->gptq;
    if (!p) return STATUS_OK;
    if (!t->data) {
        float *W = model_alloc(m, (size_t)(p->N * p->K) * sizeof(float));
        if (!W)
            return fail(STATUS_ERR_NOMEM,
                        "cannot allocate %.1f MiB to dequantize a %lld x %lld "
                        "linear",
                        (double)(p->N * p->K) * 4 / (1 << 20), (long long)p->N, (long long)p->K);
        gptq_dequantize(W, p);
        t->data = W;
    }
    t->gptq = NULL;
    return STATUS_OK;
}

Status gptq_model_dequantize(Model *m) {
    Status s = dequantize_tensor(m, &m->lm_head);
    for (int l = 0; l < m->cfg.n_layers && s == STATUS_OK; l++) {
        Tensor *lin[GPTQ_MODEL_LINEARS];
        gptq_model_layer_linears(&m->layers[l], lin);
        for (int i = 0; i < GPTQ_MODEL_LINEARS && s == STATUS_OK; i++)
            s = dequantize_tensor(m, lin[i]);
    }
    return s;
}

bool gptq_model_has_packed(const Model *m) {
    if (m->lm_head.gptq) return true;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        Tensor *lin[GPTQ_MODEL_LINEARS];
        gptq_model_layer_linears(&m->layers[l], lin);
        for (int i = 0; i < GPTQ_MODEL_LINEARS; i++)
            if (lin[i]->gptq) return true;
    }
    return false;
}

// One decoder linear: packed when <prefix>.qweight exists, else a float <prefix>.weight.
// Bit widths other than 4 (no fused kernel) are dequantized to float32 here.
static Status bind_linear(StDir *k, Model *m, const GptqConfig *gc, Tensor *t, Tensor *bias,
                          const char *prefix, int64_t N, int64_t K) {
    char name[160];
    snprintf(name, sizeof name, "%s.qweight", prefix);
    if (!st_dir_listed(k, name)) {
        snprintf(name, sizeof name, "%s.weight", prefix);
        Status s = st_dir_bind(k, m, t, name, N, K);
        if (s == STATUS_OK && bias) {
            snprintf(name, sizeof name, "%s.bias", prefix);
            s = st_dir_bind(k, m, bias, name, N, 0);
        }
        return s;
    }
    GptqPacked *p = xcalloc(1, sizeof *p);
    Status s = gptq_ckpt_read_linear(p, k, prefix, gc, K, N);
    if (s == STATUS_OK && gc->bits == 4) s = qmatmul_check(p);
    if (s == STATUS_OK && p->bias && !bias)
        s = fail(STATUS_ERR_UNSUPPORTED,
                 "'%s': %s has a bias, which this architecture does not have", k->desc, prefix);
    if (s == STATUS_OK && bias && !p->bias)
        s = fail(STATUS_ERR_FORMAT, "'%s': %s.bias is missing", k->desc, prefix);
    if (s == STATUS_OK && gc->bits == 4) s = gptq_packed_sort_groups(p); // act-order: fast GEMV
    if (s != STATUS_OK) { // the reader's messages already name the file
        gptq_packed_release(p);
        free(p);
        return s;
    }
    const char *parts[] = {"qweight", "qzeros", "scales", "g_idx", "bias"};
    for (size_t i = 0; i < ARRAY_LEN(parts); i++) {
        snprintf(name, sizeof name, "%s.%s", prefix, parts[i]);
        st_dir_use(k, name);
    }
    if (p->bias) { // the engine adds biases from the layer's own tensor
        *bias = (Tensor){.dtype = DTYPE_F16, .ndim = 1, .shape = {N}, .data = p->bias};
        model_take(m, p->bias);
        p->bias = NULL;
    }
    *t = (Tensor){.dtype = DTYPE_F32, .ndim = 2, .shape = {N, K}, .data = NULL, .gptq = p};
    if (gc->bits == 4) {
        own_packed(m, p);
        return STATUS_OK;
    }
    Status sd = dequantize_tensor(m, t); // the packed form is not kept
    t->gptq = NULL;
    gptq_packed_release(p);
    free(p);
    return sd;
}

static Status load_weights(StDir *k, Model *m, const GptqConfig *gc) {
    const LlamaConfig *c = &m->cfg;
    int64_t D = c->dim, F = c->hidden_dim, QD = (int64_t)c->n_heads * c->head_dim;
    int64_t KD = (int64_t)c->n_kv_heads * c->head_dim;
    Status s = st_dir_bind(k, m, &m->tok_emb, "model.embed_tokens.weight", c->vocab_size, D);
    char name[160];
    for (int l = 0; l < c->n_layers && s == STATUS_OK; l++) {
        LlamaLayer *ly = &m->layers[l];
        snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
        s = st_dir_bind(k, m, &ly->attn_norm, name, D, 0);
        snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", l);
        if (s == STATUS_OK) s = st_dir_bind(k, m, &ly->ffn_norm, name, D, 0);
        Tensor *lin[GPTQ_MODEL_LINEARS];
        gptq_model_layer_linears(ly, lin);
        Tensor *bias[GPTQ_MODEL_LINEARS] = {NULL};
        if (c->qkv_bias) {
            bias[0] = &ly->bq;
            bias[1] = &ly->bk;
            bias[2] = &ly->bv;
        }
        const int64_t shp[GPTQ_MODEL_LINEARS][2] = {{QD, D}, {KD, D}, {KD, D}, {D, QD},
                                                    {F, D},  {F, D},  {D, F}};
        for (int i = 0; i < GPTQ_MODEL_LINEARS && s == STATUS_OK; i++) {
            snprintf(name, sizeof name, "model.layers.%d.%s", l, linear_names[i]);
            s = bind_linear(k, m, gc, lin[i], bias[i], name, shp[i][0], shp[i][1]);
        }
        snprintf(name, sizeof name, "model.layers.%d.self_attn.rotary_emb.inv_freq", l);
        st_dir_use(k, name);
    }
    if (s == STATUS_OK) s = st_dir_bind(k, m, &m->final_norm, "model.norm.weight", D, 0);
    if (s != STATUS_OK) return s;
    if (st_dir_listed(k, "lm_head.qweight")) { // GPTQModel's lm_head=True
        s = bind_linear(k, m, gc, &m->lm_head, NULL, "lm_head", c->vocab_size, D);
        if (s == STATUS_OK) m->cfg.tied_embeddings = false;
    } else if (!c->tied_embeddings && st_dir_find(k, "lm_head.weight", NULL)) {
        s = st_dir_bind(k, m, &m->lm_head, "lm_head.weight", c->vocab_size, D);
    } else {
        m->cfg.tied_embeddings = true;
        m->lm_head = m->tok_emb;
        st_dir_use(k, "lm_head.weight");
    }
    return s == STATUS_OK ? st_dir_check_unused(k) : s;
}

Status gptq_model_load(Model *m, const char *path) {
    model_init(m);
    char *dir = dir_of(path);
    char *cfg_path = path_join(dir, "config.json");
    json_t *root = NULL;
    StDir k = {0};
    m->source = xstrdup(dir);
    Status s = json_read_object(&root, cfg_path, 0);
    GptqConfig gc;
    if (s == STATUS_OK) {
        // the architecture part through the HF parser, without the quantization block
        json_object_del(root, "quantization_config");
        char *text = json_dumps(root, 0);
        CHECK(text);
        s = model_hf_parse_config(&m->cfg, text, strlen(text), cfg_path);
        free(text);
    }
    if (s == STATUS_OK) s = gptq_config_read(&gc, dir);
    if (s == STATUS_OK && gc.bits != 4)
        log_warn("'%s': %d-bit GPTQ: no fused kernel for it (4-bit only); the linears are "
                 "dequantized to float32 at load",
                 dir, gc.bits);
    // model.safetensors or the shards of model.safetensors.index.json; the model keeps the
    // mappings: unquantized tensors stay views into them
    if (s == STATUS_OK) s = st_dir_open(&k, dir, m);
    if (s == STATUS_OK) {
        m->layers = calloc((size_t)m->cfg.n_layers, sizeof *m->layers);
        if (!m->layers) s = fail(STATUS_ERR_NOMEM, "cannot allocate the layer table");
    }
    if (s == STATUS_OK) s = load_weights(&k, m, &gc);
    st_dir_release(&k);
    json_decref(root);
    free(cfg_path);
    free(dir);
    if (s != STATUS_OK) model_release(m);
    return s;
}
