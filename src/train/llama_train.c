/*
 * llama_train.c - Llama training forward/backward with LoRA (see llama_train.h).
 *
 * Per layer, as Hugging Face's LlamaDecoderLayer (N = B*T rows):
 *   ln1 = rmsnorm(x);  q,k,v = ln1 W^T (+ LoRA);  rope(q), rope(k)
 *   atty = causal_gqa_attention(q, k, v);  res1 = x + atty Wo^T (+ LoRA)
 *   ln2 = rmsnorm(res1);  h = silu(ln2 Wg^T) * (ln2 Wu^T);  x' = res1 + h Wd^T
 * then logits = rmsnorm(x_L) W_lm^T.
 */
#include "train/llama_train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "core/dtype.h"
#include "core/rng.h"

/* ---- Planning ------------------------------------------------------------------------ */

// A bump allocator over a slab: first pass (base NULL) only counts.
typedef struct {
    float *base;
    int64_t used;
} Bump;

static float *bump(Bump *b, int64_t n) {
    float *p = b->base ? b->base + b->used : NULL;
    b->used += (n + 15) & ~(int64_t)15; // keep every buffer 64-byte aligned
    return p;
}

static void plan_acts(LlamaTrain *lt, Bump *b) {
    const LlamaConfig *c = &lt->cfg;
    int64_t N = (int64_t)lt->B * lt->T, D = c->dim, F = c->hidden_dim;
    int64_t qd = (int64_t)c->n_heads * c->head_dim, kvd = (int64_t)c->n_kv_heads * c->head_dim;
    int64_t att = (int64_t)lt->B * c->n_heads * lt->T * lt->T;
    for (int l = 0; l <= c->n_layers; l++) {
        float *p = bump(b, N * D);
        if (b->base) lt->resid[l] = p;
    }
    // recomputation: one probability buffer shared by all layers, or one set of activations,
    // refilled in the backward
    float *shared_probs = lt->recompute == LLAMA_RECOMPUTE_ATTENTION ? bump(b, att) : NULL;
    const int n_sets = lt->recompute == LLAMA_RECOMPUTE_LAYERS ? 1 : c->n_layers;
    for (int l = 0; l < n_sets; l++) {
        LlamaTrainActs a = {0};
        a.ln1 = bump(b, N * D);
        a.rstd1 = bump(b, N);
        a.q = bump(b, N * qd);
        a.k = bump(b, N * kvd);
        a.v = bump(b, N * kvd);
        a.probs = lt->recompute == LLAMA_RECOMPUTE_ATTENTION ? shared_probs : bump(b, att);
        a.atty = bump(b, N * qd);
        a.res1 = bump(b, N * D);
        a.ln2 = bump(b, N * D);
        a.rstd2 = bump(b, N);
        a.gate = bump(b, N * F);
        a.up = bump(b, N * F);
        a.h = bump(b, N * F);
        if (lt->lora_rank > 0)
            for (int m = 0; m < LORA_MODULE_COUNT; m++)
                a.u[m] = bump(b, N * lt->lora_rank);
        if (b->base)
            for (int j = l; j < (n_sets == 1 ? c->n_layers : l + 1); j++)
                lt->acts[j] = a;
    }
    float *lnf = bump(b, N * D), *rstdf = bump(b, N), *logits = bump(b, N * c->vocab_size);
    float *rc = bump(b, (int64_t)lt->T * c->head_dim / 2),
          *rs = bump(b, (int64_t)lt->T * c->head_dim / 2);
    if (b->base) {
        lt->lnf = lnf;
        lt->rstdf = rstdf;
        lt->logits = logits;
        lt->rope_cos = rc;
        lt->rope_sin = rs;
    }
}

static void plan_grads(LlamaTrain *lt, Bump *b) {
    const LlamaConfig *c = &lt->cfg;
    int64_t N = (int64_t)lt->B * lt->T, D = c->dim, F = c->hidden_dim;
    int64_t qd = (int64_t)c->n_heads * c->head_dim, kvd = (int64_t)c->n_kv_heads * c->head_dim;
    float *p[14];
    p[0] = bump(b, N * c->vocab_size);
    for (int i = 1; i <= 4; i++)
        p[i] = bump(b, N * D);
    p[5] = bump(b, N * qd);
    p[6] = bump(b, N * kvd);
    p[7] = bump(b, N * kvd);
    p[8] = bump(b, N * qd);
    p[9] = bump(b, (int64_t)lt->B * c->n_heads * lt->T * lt->T);
    p[10] = bump(b, N * F);
    p[11] = bump(b, N * F);
    p[12] = bump(b, N * F);
    p[13] = bump(b, N * MAX(lt->lora_rank, 1));
    if (!b->base) return;
    lt->dlogits = p[0];
    lt->g_res = p[1];
    lt->g_res1 = p[2];
    lt->g_ln = p[3];
    lt->g_tmp = p[4];
    lt->g_q = p[5];
    lt->g_k = p[6];
    lt->g_v = p[7];
    lt->g_atty = p[8];
    lt->g_probs = p[9];
    lt->g_gate = p[10];
    lt->g_up = p[11];
    lt->g_h = p[12];
    lt->g_u = p[13];
}

int64_t llama_train_act_bytes(const LlamaConfig *c, int B, int T, int lora_rank,
                              LlamaRecompute recompute) {
    LlamaTrain lt = {.cfg = *c, .B = B, .T = T, .lora_rank = lora_rank, .recompute = recompute};
    Bump a = {0}, g = {0};
    plan_acts(&lt, &a);
    plan_grads(&lt, &g);
    return (a.used + g.used) * (int64_t)sizeof(float);
}

// Converts a weight view to F32 into dst (numel elements); absent tensors give NULL.
static float *weight_f32(Bump *b, const Tensor *t) {
    if (!t->data) return NULL;
    int64_t n = tensor_numel(t);
    float *dst = bump(b, n);
    if (dst) dtype_to_f32(dst, t->data, t->dtype, n);
    return dst;
}

static void plan_weights(LlamaTrain *lt, const Model *m, Bump *b) {
    float *emb = weight_f32(b, &m->tok_emb);
    float *head = m->cfg.tied_embeddings ? emb : weight_f32(b, &m->lm_head);
    float *fnorm = weight_f32(b, &m->final_norm);
    if (b->base) {
        lt->tok_emb = emb;
        lt->lm_head = head;
        lt->final_norm = fnorm;
    }
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const LlamaLayer *s = &m->layers[l];
        LlamaTrainLayer w;
        w.attn_norm = weight_f32(b, &s->attn_norm);
        w.wq = weight_f32(b, &s->wq);
        w.wk = weight_f32(b, &s->wk);
        w.wv = weight_f32(b, &s->wv);
        w.bq = weight_f32(b, &s->bq);
        w.bk = weight_f32(b, &s->bk);
        w.bv = weight_f32(b, &s->bv);
        w.wo = weight_f32(b, &s->wo);
        w.ffn_norm = weight_f32(b, &s->ffn_norm);
        w.w_gate = weight_f32(b, &s->w_gate);
        w.w_up = weight_f32(b, &s->w_up);
        w.w_down = weight_f32(b, &s->w_down);
        if (b->base) lt->layers[l] = w;
    }
}

// Slab of n floats (64-byte aligned) or a Status.
static Status slab_alloc(float **p, int64_t n, const char *what) {
    *p = NULL;
    if (n <= 0) n = 16;
    if (posix_memalign((void **)p, 64, (size_t)n * sizeof(float)) != 0) {
        *p = NULL;
        return fail(STATUS_ERR_NOMEM, "cannot allocate %.1f MiB for %s",
                    (double)n * sizeof(float) / (1 << 20), what);
    }
    return STATUS_OK;
}

Status llama_train_init(LlamaTrain *lt, const Model *m, int B, int T, int lora_rank) {
    return llama_train_init_ex(lt, m, B, T, lora_rank, LLAMA_RECOMPUTE_NONE);
}

Status llama_train_init_ex(LlamaTrain *lt, const Model *m, int B, int T, int lora_rank,
                           LlamaRecompute recompute) {
    memset(lt, 0, sizeof *lt);
    lt->recompute = recompute;
    const LlamaConfig *c = &m->cfg;
    if (B <= 0 || T <= 0 || lora_rank < 0 || (int64_t)B * T > (1 << 24))
        return fail(STATUS_ERR_ARG, "bad training shape B=%d T=%d rank=%d", B, T, lora_rank);
    if (!m->tok_emb.data || !m->final_norm.data || !m->lm_head.data)
        return fail(STATUS_ERR_ARG, "model '%s' lacks embedding, final norm or lm_head",
                    m->source ? m->source : "?");
    lt->cfg = *c;
    lt->B = B;
    lt->T = T;
    lt->lora_rank = lora_rank;
    lt->layers = xcalloc((size_t)c->n_layers, sizeof(LlamaTrainLayer));
    lt->acts = xcalloc((size_t)c->n_layers, sizeof(LlamaTrainActs));
    lt->resid = xcalloc((size_t)c->n_layers + 1, sizeof(float *));
    Bump w = {0}, a = {0}, g = {0};
    plan_weights(lt, m, &w);
    plan_acts(lt, &a);
    plan_grads(lt, &g);
    Status s;
    if ((s = slab_alloc(&lt->w_slab, w.used, "F32 training weights")) != STATUS_OK ||
        (s = slab_alloc(&lt->act_slab, a.used, "training activations")) != STATUS_OK ||
        (s = slab_alloc(&lt->grad_slab, g.used, "activation gradients")) != STATUS_OK) {
        llama_train_release(lt);
        return s;
    }
    lt->act_floats = a.used;
    w = (Bump){.base = lt->w_slab};
    a = (Bump){.base = lt->act_slab};
    g = (Bump){.base = lt->grad_slab};
    plan_weights(lt, m, &w);
    plan_acts(lt, &a);
    plan_grads(lt, &g);
    rope_tables_init(lt->rope_cos, lt->rope_sin, T, c->head_dim, c);
    const int64_t N = (int64_t)B * T;
    lt->logit_rows = xmalloc((size_t)N * sizeof *lt->logit_rows);
    if ((s = slab_alloc(&lt->lnf_rows, N * c->dim, "logit rows")) != STATUS_OK) {
        llama_train_release(lt);
        return s;
    }
    llama_train_set_logit_rows(lt, NULL);
    return STATUS_OK;
}

int64_t llama_train_set_logit_rows(LlamaTrain *lt, const int32_t *targets) {
    const int64_t N = (int64_t)lt->B * lt->T;
    int64_t m = 0;
    for (int64_t n = 0; n < N; n++)
        if (!targets || targets[n] != TRAIN_IGNORE_INDEX) lt->logit_rows[m++] = (int32_t)n;
    lt->n_logit_rows = m;
    return m;
}

Status llama_train_enable_dropout(LlamaTrain *lt, float p) {
    if (!(p > 0.0f && p < 1.0f))
        return fail(STATUS_ERR_ARG, "LoRA dropout %g out of range (0, 1)", (double)p);
    if (lt->lora_rank <= 0) return fail(STATUS_ERR_ARG, "LoRA dropout needs a plan with adapters");
    const LlamaConfig *c = &lt->cfg;
    int64_t N = (int64_t)lt->B * lt->T, total = 0, max_in = 0;
    for (int m = 0; m < LORA_MODULE_COUNT; m++) {
        int in, out;
        lora_module_shape(c, (LoraModule)m, &in, &out);
        total += N * in * c->n_layers;
        max_in = MAX(max_in, in);
    }
    free(lt->drop_slab);
    free(lt->drop_ms);
    lt->drop_ms = xcalloc((size_t)c->n_layers * LORA_MODULE_COUNT, sizeof(float *));
    Status s = slab_alloc(&lt->drop_slab, total + N * max_in, "LoRA dropout masks");
    if (s != STATUS_OK) {
        free(lt->drop_ms);
        lt->drop_ms = NULL;
        return s;
    }
    float *p0 = lt->drop_slab;
    for (int l = 0; l < c->n_layers; l++)
        for (int m = 0; m < LORA_MODULE_COUNT; m++) {
            int in, out;
            lora_module_shape(c, (LoraModule)m, &in, &out);
            lt->drop_ms[l * LORA_MODULE_COUNT + m] = p0;
            p0 += N * in;
        }
    lt->drop_xd = p0;
    lt->dropout = p;
    lt->dropout_on = true;
    return STATUS_OK;
}

void llama_train_release(LlamaTrain *lt) {
    free(lt->drop_slab);
    free(lt->drop_ms);
    free(lt->logit_rows);
    free(lt->lnf_rows);
    free(lt->w_slab);
    free(lt->act_slab);
    free(lt->grad_slab);
    free(lt->layers);
    free(lt->acts);
    free(lt->resid);
    memset(lt, 0, sizeof *lt);
}

/* ---- Forward ------------------------------------------------------------------------ */

// out (N, Dout) = x W^T + b (+ LoRA of module m, intermediate kept in u; with dropout the
// mask of (layer, m) is drawn from rng first).
static void lin_fwd(LlamaTrain *lt, Rng *rng, float *out, float *u, const float *x, const float *w,
                    const float *bias, int Din, int Dout, const LoraModel *lora, int layer,
                    LoraModule m, int64_t N) {
    linear_forward(out, x, w, bias, N, Din, Dout);
    const LoraAdapter *ad = lora_get(lora, layer, m);
    if (!ad) return;
    if (lt->dropout_applied) {
        float *ms = lt->drop_ms[layer * LORA_MODULE_COUNT + m];
        if (!lt->recomputing) lora_dropout_mask(ms, N * Din, lt->dropout, rng); // else: kept
        lora_forward_dropout(out, u, lt->drop_xd, x, ms, ad, lora->scaling, N);
    } else {
        lora_forward(out, u, x, ad, lora->scaling, N);
    }
}

static void layer_forward(LlamaTrain *lt, Rng *rng, const LoraModel *lora, int l) {
    const LlamaConfig *c = &lt->cfg;
    const LlamaTrainLayer *w = &lt->layers[l];
    LlamaTrainActs *a = &lt->acts[l];
    int64_t N = (int64_t)lt->B * lt->T;
    int D = c->dim, F = c->hidden_dim, H = c->n_heads, KVH = c->n_kv_heads, HD = c->head_dim;
    int qd = H * HD, kvd = KVH * HD;
    const float *x = lt->resid[l];
    float *tmp = lt->g_tmp; // (N, D) scratch: the backward recomputes nothing from it

    rmsnorm_forward(a->ln1, a->rstd1, x, w->attn_norm, N, D, c->norm_eps);
    lin_fwd(lt, rng, a->q, a->u[LORA_Q], a->ln1, w->wq, w->bq, D, qd, lora, l, LORA_Q, N);
    lin_fwd(lt, rng, a->k, a->u[LORA_K], a->ln1, w->wk, w->bk, D, kvd, lora, l, LORA_K, N);
    lin_fwd(lt, rng, a->v, a->u[LORA_V], a->ln1, w->wv, w->bv, D, kvd, lora, l, LORA_V, N);
    rope_forward(a->q, lt->rope_cos, lt->rope_sin, lt->B, lt->T, H, HD);
    rope_forward(a->k, lt->rope_cos, lt->rope_sin, lt->B, lt->T, KVH, HD);
    attention_forward(a->atty, a->probs, a->q, a->k, a->v, lt->B, lt->T, H, KVH, HD);
    lin_fwd(lt, rng, tmp, a->u[LORA_O], a->atty, w->wo, NULL, qd, D, lora, l, LORA_O, N);
    residual_forward(a->res1, x, tmp, N * D);

    rmsnorm_forward(a->ln2, a->rstd2, a->res1, w->ffn_norm, N, D, c->norm_eps);
    lin_fwd(lt, rng, a->gate, a->u[LORA_GATE], a->ln2, w->w_gate, NULL, D, F, lora, l, LORA_GATE,
            N);
    lin_fwd(lt, rng, a->up, a->u[LORA_UP], a->ln2, w->w_up, NULL, D, F, lora, l, LORA_UP, N);
    swiglu_forward(a->h, a->gate, a->up, N * F);
    lin_fwd(lt, rng, tmp, a->u[LORA_DOWN], a->h, w->w_down, NULL, F, D, lora, l, LORA_DOWN, N);
    residual_forward(lt->resid[l + 1], a->res1, tmp, N * D);
}

Status llama_train_forward(LlamaTrain *lt, const LoraModel *lora, const int32_t *ids) {
    const LlamaConfig *c = &lt->cfg;
    int64_t N = (int64_t)lt->B * lt->T;
    for (int64_t n = 0; n < N; n++)
        if (ids[n] < 0 || ids[n] >= c->vocab_size)
            return fail(STATUS_ERR_ARG, "token id %d at position %lld outside the vocabulary (%d)",
                        ids[n], (long long)n, c->vocab_size);
    if (lora) {
        if (lora->cfg.rank != lt->lora_rank || lora->n_layers != c->n_layers)
            return fail(STATUS_ERR_ARG,
                        "LoRA of rank %d / %d layers does not fit a plan for rank %d / %d layers",
                        lora->cfg.rank, lora->n_layers, lt->lora_rank, c->n_layers);
        for (int m = 0; m < LORA_MODULE_COUNT; m++) {
            const LoraAdapter *ad = lora_get(lora, 0, (LoraModule)m);
            int in, out;
            lora_module_shape(c, (LoraModule)m, &in, &out);
            if (ad && (ad->in != in || ad->out != out))
                return fail(STATUS_ERR_ARG, "LoRA %s is (%d, %d), the model needs (%d, %d)",
                            lora_module_name((LoraModule)m), ad->out, ad->in, out, in);
        }
    }
    lt->ids = ids;
    lt->dropout_applied = lora && lt->dropout > 0 && lt->dropout_on && lt->drop_ms;
    Rng rng;
    rng_seed(&rng, lt->dropout_seed);
    embedding_forward(lt->resid[0], ids, lt->tok_emb, N, c->dim);
    for (int l = 0; l < c->n_layers; l++)
        layer_forward(lt, &rng, lora, l);
    rmsnorm_forward(lt->lnf, lt->rstdf, lt->resid[c->n_layers], lt->final_norm, N, c->dim,
                    c->norm_eps);
    const int64_t M = lt->n_logit_rows;
    if (M == N) {
        linear_forward(lt->logits, lt->lnf, lt->lm_head, NULL, N, c->dim, c->vocab_size);
    } else if (M > 0) { // the rows a loss reads, gathered
        for (int64_t i = 0; i < M; i++)
            memcpy(lt->lnf_rows + i * c->dim, lt->lnf + (int64_t)lt->logit_rows[i] * c->dim,
                   (size_t)c->dim * sizeof(float));
        linear_forward(lt->logits, lt->lnf_rows, lt->lm_head, NULL, M, c->dim, c->vocab_size);
    }
    return STATUS_OK;
}

/* ---- Backward ----------------------------------------------------------------------- */

// dx (N, Din) += dout W (+ LoRA path); LoRA grads accumulate into lora->grads.
static void lin_bwd(LlamaTrain *lt, float *dx, const float *dout, const float *x, const float *w,
                    const float *u, int Din, int Dout, LoraModel *lora, int layer, LoraModule m,
                    float *du, int64_t N) {
    linear_backward(dx, NULL, NULL, dout, x, w, N, Din, Dout);
    LoraAdapter *ad = lora_get(lora, layer, m);
    if (!ad) return;
    if (lt->dropout_applied)
        lora_backward_dropout(dx, du, lt->drop_xd, dout, x,
                              lt->drop_ms[layer * LORA_MODULE_COUNT + m], u, ad, lora->scaling, N);
    else
        lora_backward(dx, du, dout, x, u, ad, lora->scaling, N);
}

// On entry lt->g_res holds d loss / d resid[l+1]; on exit d loss / d resid[l].
static void layer_backward(LlamaTrain *lt, LoraModel *lora, int l) {
    const LlamaConfig *c = &lt->cfg;
    const LlamaTrainLayer *w = &lt->layers[l];
    const LlamaTrainActs *a = &lt->acts[l];
    int64_t N = (int64_t)lt->B * lt->T;
    int D = c->dim, F = c->hidden_dim, H = c->n_heads, KVH = c->n_kv_heads, HD = c->head_dim;
    int qd = H * HD, kvd = KVH * HD;
    float *gres = lt->g_res, *gres1 = lt->g_res1;
    if (lt->recompute == LLAMA_RECOMPUTE_LAYERS) { // refill the shared activations from resid[l]
        lt->recomputing = true;                    // (and resid[l + 1], with the same values)
        layer_forward(lt, NULL, lora, l);
        lt->recomputing = false;
    }
    // (with recomputed attention atty is rewritten below with the same values, after its
    // last use)

    // x' = res1 + down(h): the residual passes gres to res1 unchanged
    memcpy(gres1, gres, (size_t)N * D * sizeof(float));
    memset(lt->g_h, 0, (size_t)N * F * sizeof(float));
    lin_bwd(lt, lt->g_h, gres, a->h, w->w_down, a->u[LORA_DOWN], F, D, lora, l, LORA_DOWN, lt->g_u,
            N);
    memset(lt->g_gate, 0, (size_t)N * F * sizeof(float));
    memset(lt->g_up, 0, (size_t)N * F * sizeof(float));
    swiglu_backward(lt->g_gate, lt->g_up, lt->g_h, a->gate, a->up, N * F);
    memset(lt->g_ln, 0, (size_t)N * D * sizeof(float));
    lin_bwd(lt, lt->g_ln, lt->g_gate, a->ln2, w->w_gate, a->u[LORA_GATE], D, F, lora, l, LORA_GATE,
            lt->g_u, N);
    lin_bwd(lt, lt->g_ln, lt->g_up, a->ln2, w->w_up, a->u[LORA_UP], D, F, lora, l, LORA_UP, lt->g_u,
            N);
    rmsnorm_backward(gres1, NULL, lt->g_ln, a->res1, w->ffn_norm, a->rstd2, N, D);

    // res1 = x + o(atty)
    memcpy(gres, gres1, (size_t)N * D * sizeof(float));
    memset(lt->g_atty, 0, (size_t)N * qd * sizeof(float));
    lin_bwd(lt, lt->g_atty, gres1, a->atty, w->wo, a->u[LORA_O], qd, D, lora, l, LORA_O, lt->g_u,
            N);
    if (lt->recompute == LLAMA_RECOMPUTE_ATTENTION) // the shared buffer holds another layer's
        attention_forward(a->atty, a->probs, a->q, a->k, a->v, lt->B, lt->T, H, KVH, HD);
    memset(lt->g_q, 0, (size_t)N * qd * sizeof(float));
    memset(lt->g_k, 0, (size_t)N * kvd * sizeof(float));
    memset(lt->g_v, 0, (size_t)N * kvd * sizeof(float));
    attention_backward(lt->g_q, lt->g_k, lt->g_v, lt->g_probs, lt->g_atty, a->probs, a->q, a->k,
                       a->v, lt->B, lt->T, H, KVH, HD);
    rope_backward(lt->g_q, lt->rope_cos, lt->rope_sin, lt->B, lt->T, H, HD);
    rope_backward(lt->g_k, lt->rope_cos, lt->rope_sin, lt->B, lt->T, KVH, HD);
    memset(lt->g_ln, 0, (size_t)N * D * sizeof(float));
    lin_bwd(lt, lt->g_ln, lt->g_q, a->ln1, w->wq, a->u[LORA_Q], D, qd, lora, l, LORA_Q, lt->g_u, N);
    lin_bwd(lt, lt->g_ln, lt->g_k, a->ln1, w->wk, a->u[LORA_K], D, kvd, lora, l, LORA_K, lt->g_u,
            N);
    lin_bwd(lt, lt->g_ln, lt->g_v, a->ln1, w->wv, a->u[LORA_V], D, kvd, lora, l, LORA_V, lt->g_u,
            N);
    rmsnorm_backward(gres, NULL, lt->g_ln, lt->resid[l], w->attn_norm, a->rstd1, N, D);
}

void llama_train_backward(LlamaTrain *lt, LoraModel *lora) {
    const LlamaConfig *c = &lt->cfg;
    int64_t N = (int64_t)lt->B * lt->T;
    int D = c->dim;
    // logits = lnf W_lm^T (lm_head frozen, no adapter); rows without logits get no gradient
    memset(lt->g_ln, 0, (size_t)N * D * sizeof(float));
    const int64_t M = lt->n_logit_rows;
    if (M == N) {
        linear_backward(lt->g_ln, NULL, NULL, lt->dlogits, lt->lnf, lt->lm_head, N, D,
                        c->vocab_size);
    } else if (M > 0) { // through the gathered rows, then scattered back (g_tmp is free here)
        memset(lt->g_tmp, 0, (size_t)M * D * sizeof(float));
        linear_backward(lt->g_tmp, NULL, NULL, lt->dlogits, lt->lnf_rows, lt->lm_head, M, D,
                        c->vocab_size);
        for (int64_t i = 0; i < M; i++)
            memcpy(lt->g_ln + (int64_t)lt->logit_rows[i] * D, lt->g_tmp + i * D,
                   (size_t)D * sizeof(float));
    }
    memset(lt->g_res, 0, (size_t)N * D * sizeof(float));
    rmsnorm_backward(lt->g_res, NULL, lt->g_ln, lt->resid[c->n_layers], lt->final_norm, lt->rstdf,
                     N, D);
    for (int l = c->n_layers - 1; l >= 0; l--)
        layer_backward(lt, lora, l);
    // the embedding is frozen: g_res now holds d loss / d embeddings, unused
}

Status llama_train_step(LlamaTrain *lt, LoraModel *lora, const int32_t *ids, const int32_t *targets,
                        const float *tlogits, const KdLossOptions *o, KdLoss *out) {
    Status s = llama_train_forward(lt, lora, ids);
    if (s != STATUS_OK) return s;
    int64_t N = (int64_t)lt->B * lt->T;
    int V = lt->cfg.vocab_size;
    for (int64_t n = 0; n < N; n++)
        if (targets[n] != TRAIN_IGNORE_INDEX && (targets[n] < 0 || targets[n] >= V))
            return fail(STATUS_ERR_ARG, "target id %d at position %lld outside the vocabulary (%d)",
                        targets[n], (long long)n, V);
    // the loss and its gradient as the trainer computes them (one pass over the logits),
    // over the logits rows (llama_train_set_logit_rows) with their targets and teacher rows
    const int64_t M = lt->n_logit_rows;
    const int Vt = o->teacher_vocab > 0 ? o->teacher_vocab : V;
    int32_t *tg = NULL;
    float *tl = NULL;
    if (M < N) {
        tg = xmalloc((size_t)(M ? M : 1) * sizeof *tg);
        if (tlogits) tl = xmalloc((size_t)(M ? M : 1) * (size_t)Vt * sizeof *tl);
        for (int64_t i = 0; i < M; i++) {
            const int64_t n = lt->logit_rows[i];
            tg[i] = targets[n];
            if (tl) memcpy(tl + i * Vt, tlogits + n * Vt, (size_t)Vt * sizeof *tl);
        }
    }
    KdLoss l = kd_loss_forward_backward(lt->dlogits, lt->logits, tg ? tl : tlogits,
                                        tg ? tg : targets, M, V, o, 1.0f);
    free(tg);
    free(tl);
    if (out) *out = l;
    if (!isfinite(l.loss))
        return fail(STATUS_ERR_NUMERIC, "loss is %g (KL %g, CE %g)", l.loss, l.kl, l.ce);
    llama_train_backward(lt, lora);
    return STATUS_OK;
}
