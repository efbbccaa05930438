/*
 * infer.c - the Llama forward pass over a batch of (token, sequence, position) triples,
 * with a per-sequence KV cache. Reads like HF's LlamaForCausalLM.forward:
 *
 *   x = embed(tokens)                                     // (T, D)
 *   for each layer:
 *     xn = rmsnorm(x) * attn_norm
 *     q, k, v = xn Wq^T (+bq), xn Wk^T (+bk), xn Wv^T (+bv)   // (T, H*HD), (T, KVH*HD) x2
 *     rope(q, k) at each token's position; k, v -> cache[seq][layer][:, pos]
 *     att = softmax(q K^T / sqrt(HD), causal) V per head (GQA: head h uses KV head h/(H/KVH))
 *     x += att Wo^T
 *     xn = rmsnorm(x) * ffn_norm
 *     x += (silu(xn Wg^T) * (xn Wu^T)) Wd^T
 *   logits = rmsnorm(x) * final_norm @ lm_head^T          // wanted rows only
 */
#include "model/infer.h"

#include <sys/mman.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/common.h"
#include "quant/qmatmul.h"
#include "tensor/ops.h"

InferOptions infer_options_default(void) {
    return (InferOptions){.max_seqs = 1, .max_ctx = 0, .max_batch = 512, .n_threads = 0};
}

void infer_rope_inv_freq(const LlamaConfig *c, float *inv_freq) {
    int HD = c->head_dim, half = HD / 2;
    for (int i = 0; i < half; i++) {
        // HF: 1 / base ** (arange(0, dim, 2).float() / dim), all float32
        float e = (float)(2 * i) / (float)HD;
        inv_freq[i] = 1.0f / powf(c->rope_theta, e);
    }
    if (c->rope_scaling != ROPE_SCALING_LLAMA3) return;
    // transformers _compute_llama3_parameters: keep high frequencies, divide low ones by
    // `factor`, interpolate smoothly in between (all float32 like the torch code)
    float factor = c->rope_factor, lo = c->rope_low_freq_factor, hi = c->rope_high_freq_factor;
    float old_ctx = (float)c->rope_orig_max_pos;
    float lo_wavelen = old_ctx / lo, hi_wavelen = old_ctx / hi;
    for (int i = 0; i < half; i++) {
        float f = inv_freq[i];
        float wavelen = (float)(2.0 * 3.14159265358979323846) / f; // 2 * math.pi
        float scaled = wavelen > lo_wavelen ? f / factor : f;
        float smooth = (old_ctx / wavelen - lo) / (hi - lo);
        float smoothed = (1.0f - smooth) * scaled / factor + smooth * scaled;
        bool medium = !(wavelen < hi_wavelen) && !(wavelen > lo_wavelen);
        inv_freq[i] = medium ? smoothed : scaled;
    }
}

/* ---- set-up ------------------------------------------------------------------------- */

// Allocates n floats (64-byte aligned) or records an error.
static float *alloc_f32(size_t n, Status *s) {
    if (*s != STATUS_OK) return NULL;
    size_t bytes = (n ? n : 1) * sizeof(float);
    bytes = (bytes + 63) / 64 * 64;
    float *p = aligned_alloc(64, bytes);
    if (!p)
        *s = fail(STATUS_ERR_NOMEM, "cannot allocate %zu bytes of inference buffers", bytes);
    else
        memset(p, 0, bytes);
    return p;
}

// A KV cache of `bytes`: zero pages mapped from the kernel on first touch, so a cache sized
// for the whole context (4096 positions by default, or eval's 1 GiB budget) costs memory and
// page faults only for the positions written. (aligned_alloc + memset touched all of it up
// front: ~4 % of a short evaluation run was page faults.) Released by cache_free.
static void *cache_alloc(size_t bytes, Status *s) {
    if (*s != STATUS_OK) return NULL;
    void *p =
        mmap(NULL, bytes ? bytes : 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        *s = fail(STATUS_ERR_NOMEM, "cannot allocate a %zu-byte KV cache", bytes);
        return NULL;
    }
    return p;
}

static void cache_free(void *p, size_t bytes) {
    if (p) munmap(p, bytes ? bytes : 1);
}

// Scratch floats qmatmul needs for the model's GPTQ-packed linears (0 when none).
// The packed form the engine runs for t: its GPTQ weight when qmatmul has a kernel for it
// (4-bit), else NULL (a float dequantization in t->data runs instead: an in-memory 2- or
// 8-bit quantization keeps both).
static const GptqPacked *runs_packed(const Tensor *t) {
    return t->gptq && t->gptq->bits == 4 ? t->gptq : NULL;
}

// A linear the engine can run: float data, or a packed form qmatmul runs.
static bool runnable(const Tensor *t) { return t->data || runs_packed(t); }

static size_t infer_gptq_scratch_floats(const Model *m) {
    size_t n = 0;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const LlamaLayer *ly = &m->layers[l];
        const Tensor *ts[] = {&ly->wq,     &ly->wk,   &ly->wv,    &ly->wo,
                              &ly->w_gate, &ly->w_up, &ly->w_down};
        for (size_t i = 0; i < ARRAY_LEN(ts); i++)
            if (runs_packed(ts[i])) n = MAX(n, qmatmul_scratch_floats(ts[i]->gptq));
    }
    if (runs_packed(&m->lm_head)) n = MAX(n, qmatmul_scratch_floats(m->lm_head.gptq));
    return n;
}

static Status infer_check_model(const Model *m) {
    const LlamaConfig *c = &m->cfg;
    if (!m->tok_emb.data || !runnable(&m->lm_head) || !m->final_norm.data || !m->layers)
        return fail(STATUS_ERR_FORMAT,
                    "model '%s' is missing the embedding, classifier or final norm",
                    m->source ? m->source : "?");
    for (int l = 0; l < c->n_layers; l++) {
        const LlamaLayer *ly = &m->layers[l];
        if (!runnable(&ly->wq) || !runnable(&ly->wk) || !runnable(&ly->wv) || !runnable(&ly->wo) ||
            !runnable(&ly->w_gate) || !runnable(&ly->w_up) || !runnable(&ly->w_down) ||
            !ly->attn_norm.data || !ly->ffn_norm.data)
            return fail(STATUS_ERR_FORMAT, "model '%s': layer %d is missing a weight",
                        m->source ? m->source : "?", l);
    }
    return STATUS_OK;
}

Status infer_init(InferState *st, const Model *m, const InferOptions *opt) {
    memset(st, 0, sizeof *st);
    InferOptions o = opt ? *opt : infer_options_default();
    const LlamaConfig *c = &m->cfg;
    if (o.max_ctx <= 0) o.max_ctx = MIN(c->max_seq_len, 4096);
    if (o.max_seqs < 1 || o.max_seqs > 65536 || o.max_batch < 1 || o.max_batch > (1 << 20) ||
        o.max_ctx > (1 << 24) || o.n_threads < 0)
        return fail(STATUS_ERR_ARG, "bad inference options: max_seqs=%d max_ctx=%d max_batch=%d",
                    o.max_seqs, o.max_ctx, o.max_batch);
    if (o.kv_dtype != DTYPE_F32 && o.kv_dtype != DTYPE_F16)
        return fail(STATUS_ERR_ARG, "KV cache type must be f32 or f16, not %s",
                    (int)o.kv_dtype >= 0 && o.kv_dtype < DTYPE_COUNT ? dtype_name(o.kv_dtype)
                                                                     : "unknown");
    Status s = infer_check_model(m);
    if (s != STATUS_OK) return s;
#ifdef _OPENMP
    st->n_threads = o.n_threads > 0 ? o.n_threads : omp_get_max_threads();
#else
    st->n_threads = 1;
#endif
    st->m = m;
    st->opt = o;
    int64_t D = c->dim, F = c->hidden_dim, HD = c->head_dim, QD = (int64_t)c->n_heads * HD;
    int64_t KD = (int64_t)c->n_kv_heads * HD, Tb = o.max_batch;
    // cache positions per KV head: the context rounded up to whole key tiles
    st->ctx_stride = ops_key_ctx(o.max_ctx);
    st->cache_bytes = (size_t)o.max_seqs * (size_t)c->n_layers * (size_t)KD *
                      (size_t)st->ctx_stride * dtype_size(o.kv_dtype);
    st->k_cache = cache_alloc(st->cache_bytes, &s);
    st->v_cache = cache_alloc(st->cache_bytes, &s);
    st->x = alloc_f32((size_t)(Tb * D), &s);
    st->xn = alloc_f32((size_t)(Tb * D), &s);
    st->q = alloc_f32((size_t)(Tb * QD), &s);
    st->att = alloc_f32((size_t)(Tb * QD), &s);
    st->k = alloc_f32((size_t)(Tb * KD), &s);
    st->v = alloc_f32((size_t)(Tb * KD), &s);
    st->g = alloc_f32((size_t)(Tb * F), &s);
    st->u = alloc_f32((size_t)(Tb * F), &s);
    st->y = alloc_f32((size_t)(Tb * MAX(MAX(D, F), QD)), &s);
    st->att_scratch = alloc_f32(
        ops_attention_scratch_floats(o.max_ctx, st->n_threads, c->n_heads, c->head_dim), &s);
    st->mm_scratch = alloc_f32(
        MAX(ops_matmul_scratch_floats((int)MAX(MAX(D, F), QD)), infer_gptq_scratch_floats(m)), &s);
    st->rope_cos = alloc_f32((size_t)o.max_ctx * (size_t)(HD / 2), &s);
    st->rope_sin = alloc_f32((size_t)o.max_ctx * (size_t)(HD / 2), &s);
    if (s != STATUS_OK) {
        infer_release(st);
        return s;
    }
    st->seq_len = xcalloc((size_t)o.max_seqs, sizeof *st->seq_len);
    st->lens_buf = xcalloc((size_t)o.max_seqs, sizeof *st->lens_buf);
    st->pos_buf = xcalloc((size_t)Tb, sizeof *st->pos_buf);
    st->pos_rows = xcalloc((size_t)Tb, sizeof *st->pos_rows);
    st->seq_buf = xcalloc((size_t)Tb, sizeof *st->seq_buf);
    st->want_buf = xcalloc((size_t)Tb, sizeof *st->want_buf);
    st->kseq = xcalloc((size_t)Tb, sizeof *st->kseq);
    st->vseq = xcalloc((size_t)Tb, sizeof *st->vseq);
    // RoPE tables: angle = pos * inv_freq in float32 (as HF), cos/sin of that angle
    float *inv = xmalloc((size_t)(HD / 2) * sizeof *inv);
    infer_rope_inv_freq(c, inv);
    for (int p = 0; p < o.max_ctx; p++)
        for (int i = 0; i < HD / 2; i++) {
            float ang = (float)p * inv[i];
            st->rope_cos[(size_t)p * (size_t)(HD / 2) + (size_t)i] = cosf(ang);
            st->rope_sin[(size_t)p * (size_t)(HD / 2) + (size_t)i] = sinf(ang);
        }
    free(inv);
    return STATUS_OK;
}

void infer_release(InferState *st) {
    cache_free(st->k_cache, st->cache_bytes);
    cache_free(st->v_cache, st->cache_bytes);
    void *bufs[] = {st->x,          st->xn,       st->q,       st->att, st->k,
                    st->v,          st->g,        st->u,       st->y,   st->att_scratch,
                    st->mm_scratch, st->rope_cos, st->rope_sin};
    for (size_t i = 0; i < ARRAY_LEN(bufs); i++)
        free(bufs[i]);
    free(st->seq_len);
    free(st->lens_buf);
    free(st->pos_buf);
    free(st->pos_rows);
    free(st->seq_buf);
    free(st->want_buf);
    free(st->kseq);
    free(st->vseq);
    memset(st, 0, sizeof *st);
}

int infer_seq_len(const InferState *st, int seq) {
    return seq >= 0 && seq < st->opt.max_seqs ? st->seq_len[seq] : 0;
}

void infer_seq_truncate(InferState *st, int seq, int n) {
    CHECK(seq >= 0 && seq < st->opt.max_seqs && n >= 0);
    if (n < st->seq_len[seq]) st->seq_len[seq] = n;
}

/* ---- forward ------------------------------------------------------------------------ */

// Base of the cache of (seq, layer): (KVH, ctx, HD) elements of opt.kv_dtype.
static unsigned char *cache_at(const InferState *st, void *cache, int seq, int layer) {
    const LlamaConfig *c = &st->m->cfg;
    size_t per_layer = (size_t)c->n_kv_heads * (size_t)st->ctx_stride * (size_t)c->head_dim;
    return (unsigned char *)cache + ((size_t)seq * (size_t)c->n_layers + (size_t)layer) *
                                        per_layer * dtype_size(st->opt.kv_dtype);
}

void infer_seq_copy(InferState *st, int dst, int src, int n) {
    CHECK(dst >= 0 && dst < st->opt.max_seqs && src >= 0 && src < st->opt.max_seqs);
    CHECK(n >= 0 && n <= st->seq_len[src]);
    if (dst == src) {
        st->seq_len[dst] = n;
        return;
    }
    const LlamaConfig *c = &st->m->cfg;
    const size_t es = dtype_size(st->opt.kv_dtype);
    const size_t head = (size_t)st->ctx_stride * (size_t)c->head_dim * es; // bytes per KV head
    // keys: the whole tiles that hold positions 0..n-1 (past n, the copy overwrites only
    // positions the destination does not hold); values: n rows
    const size_t kbytes = (size_t)(n + OPS_KEY_TILE - 1) / OPS_KEY_TILE * OPS_KEY_TILE *
                          (size_t)c->head_dim * es,
                 vbytes = (size_t)n * (size_t)c->head_dim * es;
    for (int l = 0; l < c->n_layers; l++) {
        const unsigned char *ks = cache_at(st, st->k_cache, src, l),
                            *vs = cache_at(st, st->v_cache, src, l);
        unsigned char *kd = cache_at(st, st->k_cache, dst, l),
                      *vd = cache_at(st, st->v_cache, dst, l);
        for (size_t h = 0; h < (size_t)c->n_kv_heads; h++) {
            memcpy(kd + h * head, ks + h * head, kbytes);
            memcpy(vd + h * head, vs + h * head, vbytes);
        }
    }
    st->seq_len[dst] = n;
}

// Writes the chunk's k, v rows (T, KVH*HD) into each token's sequence cache (rounded to
// fp16 when the cache is F16).
static void cache_store(InferState *st, int layer, const int32_t *seq, const int32_t *pos, int T) {
    const LlamaConfig *c = &st->m->cfg;
    const int KVH = c->n_kv_heads, HD = c->head_dim;
    const DType et = st->opt.kv_dtype;
    const size_t head = (size_t)st->ctx_stride * (size_t)HD * dtype_size(et); // bytes per head
    for (int t = 0; t < T; t++) {
        unsigned char *kb = cache_at(st, st->k_cache, seq[t], layer);
        unsigned char *vb = cache_at(st, st->v_cache, seq[t], layer);
        for (int h = 0; h < KVH; h++) {
            const size_t src = ((size_t)t * (size_t)KVH + (size_t)h) * (size_t)HD;
            ops_kv_store(kb + (size_t)h * head, vb + (size_t)h * head, st->k + src, st->v + src, HD,
                         pos[t], et);
        }
        st->kseq[t] = kb;
        st->vseq[t] = vb;
    }
}

static void linear(InferState *st, float *y, const float *x, const Tensor *w, const Tensor *b,
                   int T) {
    int N = (int)w->shape[0], K = (int)w->shape[1];
    // GPTQ w4a16: fused dequantizing GEMV for decode, dequantize + sgemm for prefill
    if (runs_packed(w))
        qmatmul(y, x, T, w->gptq, st->mm_scratch);
    else
        ops_matmul(y, x, w->data, w->dtype, T, K, N, st->mm_scratch);
    if (b && b->data) ops_add_bias(y, b->data, b->dtype, T, N);
}

// Several linears of the same input: one parallel loop for decode when none is GPTQ.
static void linear_multi(InferState *st, float *const *y, const float *x, const Tensor *const *w,
                         const Tensor *const *b, int n, int T) {
    OpsMatmulOut out[3];
    bool all_gptq = n <= 3 && T < QMATMUL_GEMM_MIN_M;
    for (int i = 0; i < n && all_gptq; i++)
        all_gptq = runs_packed(w[i]) && !(b[i] && b[i]->data);
    if (all_gptq) { // w4a16 decode: one parallel region per token row for all n weights
        const GptqPacked *gw[3];
        for (int i = 0; i < n; i++)
            gw[i] = w[i]->gptq;
        for (int t = 0; t < T; t++) {
            float *yt[3];
            for (int i = 0; i < n; i++)
                yt[i] = y[i] + (int64_t)t * gw[i]->N;
            qmatmul_gemv_multi(yt, x + (int64_t)t * gw[0]->K, gw, n);
        }
        return;
    }
    bool plain = n <= 3;
    for (int i = 0; i < n && plain; i++) {
        plain = !runs_packed(w[i]) && w[i]->shape[1] == w[0]->shape[1];
        out[i] = (OpsMatmulOut){y[i], w[i]->data, w[i]->dtype, (int)w[i]->shape[0]};
    }
    if (!plain) {
        for (int i = 0; i < n; i++)
            linear(st, y[i], x, w[i], b[i], T);
        return;
    }
    ops_matmul_multi(out, n, x, T, (int)w[0]->shape[1], st->mm_scratch);
    for (int i = 0; i < n; i++)
        if (b[i] && b[i]->data) ops_add_bias(y[i], b[i]->data, b[i]->dtype, T, out[i].N);
}

// Layer l's q, k, v of T rows; every row's key and value go to its sequence's cache (later
// tokens attend to them) and st->kseq / st->vseq point at those caches.
static void qkv_store(InferState *st, int l, const int32_t *seq, const int32_t *pos, int T) {
    const LlamaConfig *c = &st->m->cfg;
    const LlamaLayer *ly = &st->m->layers[l];
    ops_rmsnorm(st->xn, st->x, ly->attn_norm.data, ly->attn_norm.dtype, T, c->dim, c->norm_eps);
    if (st->on_linear_input)
        for (int i = 0; i < 3; i++)
            st->on_linear_input(st->on_linear_user, l, i, st->xn, T, c->dim);
    const Tensor *qkv[3] = {&ly->wq, &ly->wk, &ly->wv}, *qkv_b[3] = {&ly->bq, &ly->bk, &ly->bv};
    float *qkv_y[3] = {st->q, st->k, st->v};
    linear_multi(st, qkv_y, st->xn, qkv, qkv_b, 3, T);
    ops_rope(st->k, T, c->n_kv_heads, c->head_dim, pos, st->rope_cos, st->rope_sin);
    cache_store(st, l, seq, pos, T);
}

// The attention of the first T rows of st->q (at positions pos, over st->kseq / st->vseq),
// o_proj and the residual add into st->x.
static void attend(InferState *st, int l, const int32_t *pos, int T) {
    const LlamaConfig *c = &st->m->cfg;
    const int H = c->n_heads, HD = c->head_dim;
    ops_rope(st->q, T, H, HD, pos, st->rope_cos, st->rope_sin);
    const OpsAttnArgs a = {.T = T,
                           .H = H,
                           .KVH = c->n_kv_heads,
                           .HD = HD,
                           .ctx = st->ctx_stride,
                           .pos = pos,
                           .k_seq = st->kseq,
                           .v_seq = st->vseq,
                           .kv_dtype = st->opt.kv_dtype,
                           .kv_head_stride = (int64_t)st->ctx_stride * HD,
                           .scale = 1.0f / sqrtf((float)HD),
                           .n_threads = st->n_threads};
    ops_attention(st->att, st->q, &a, st->att_scratch);
    if (st->on_linear_input) st->on_linear_input(st->on_linear_user, l, 3, st->att, T, H * HD);
    linear(st, st->y, st->att, &st->m->layers[l].wo, NULL, T);
    ops_add(st->x, st->y, (int64_t)T * c->dim);
}

static void mlp_block(InferState *st, int l, int T) {
    const LlamaConfig *c = &st->m->cfg;
    const LlamaLayer *ly = &st->m->layers[l];
    int D = c->dim;
    ops_rmsnorm(st->xn, st->x, ly->ffn_norm.data, ly->ffn_norm.dtype, T, D, c->norm_eps);
    if (st->on_linear_input)
        for (int i = 4; i < 6; i++)
            st->on_linear_input(st->on_linear_user, l, i, st->xn, T, D);
    const Tensor *gu[2] = {&ly->w_gate, &ly->w_up}, *gu_b[2] = {NULL, NULL};
    float *gu_y[2] = {st->g, st->u};
    linear_multi(st, gu_y, st->xn, gu, gu_b, 2, T);
    ops_swiglu(st->g, st->g, st->u, (int64_t)T * c->hidden_dim);
    if (st->on_linear_input) st->on_linear_input(st->on_linear_user, l, 6, st->g, T, c->hidden_dim);
    linear(st, st->y, st->g, &ly->w_down, NULL, T);
    ops_add(st->x, st->y, (int64_t)T * D);
}

// Moves the rows of x (T, D) that get logits to its first nr rows (in order); returns nr.
static int gather_wanted(float *x, const uint8_t *want, int T, int D) {
    int nr = 0;
    for (int t = 0; t < T; t++) {
        if (want && !want[t]) continue;
        if (nr != t)
            memcpy(x + (size_t)nr * (size_t)D, x + (size_t)t * (size_t)D,
                   (size_t)D * sizeof(float));
        nr++;
    }
    return nr;
}

// The last layer when only some rows get logits: every row's keys and values still go to
// the cache (later tokens attend to them), but the attention output, o_proj and the MLP run
// for the nr wanted rows only; on return x holds them in its first nr rows. For a scored
// evaluation context or a prompt this skips most of the layer's rows (~3 % of a forward
// for one logits row per 100 tokens). The wanted rows' q, k, v are the same numbers as in
// the other layers' path (qkv_store over every row); their attention, o_proj and MLP run on
// fewer rows (OpenBLAS rounds by row count, as between two batch sizes).
static void last_layer_wanted(InferState *st, int l, const int32_t *seq, const int32_t *pos,
                              const uint8_t *want, int T, int nr) {
    const LlamaConfig *c = &st->m->cfg;
    const int QD = c->n_heads * c->head_dim;
    qkv_store(st, l, seq, pos, T);
    // the wanted rows' queries, positions, caches and residual stream, moved to the front
    int i = 0;
    for (int t = 0; t < T; t++) {
        if (!want[t]) continue;
        if (i != t) {
            memcpy(st->q + (size_t)i * (size_t)QD, st->q + (size_t)t * (size_t)QD,
                   (size_t)QD * sizeof(float));
            st->kseq[i] = st->kseq[t];
            st->vseq[i] = st->vseq[t];
        }
        st->pos_rows[i++] = pos[t];
    }
    gather_wanted(st->x, want, T, c->dim);
    if (nr == 0) return;
    attend(st, l, st->pos_rows, nr);
    mlp_block(st, l, nr);
}

// One chunk of at most max_batch tokens, already validated; returns logits rows written.
static int forward_chunk(InferState *st, const int32_t *tokens, const int32_t *seq,
                         const int32_t *pos, const uint8_t *want, int T, float *logits) {
    const Model *m = st->m;
    const LlamaConfig *c = &m->cfg;
    int D = c->dim, nr = T;
    if (want) {
        nr = 0;
        for (int t = 0; t < T; t++)
            nr += want[t] != 0;
    }
    // an observer (analyze) sees every row of every layer
    const bool partial = nr < T && !st->on_linear_input;
    ops_embed(st->x, m->tok_emb.data, m->tok_emb.dtype, tokens, T, D);
    for (int l = 0; l < c->n_layers - (partial ? 1 : 0); l++) {
        qkv_store(st, l, seq, pos, T);
        attend(st, l, pos, T);
        mlp_block(st, l, T);
    }
    // the wanted rows to the front, normalise, classify
    if (partial)
        last_layer_wanted(st, c->n_layers - 1, seq, pos, want, T, nr);
    else
        gather_wanted(st->x, want, T, D);
    if (nr == 0) return 0;
    ops_rmsnorm(st->xn, st->x, m->final_norm.data, m->final_norm.dtype, nr, D, c->norm_eps);
    linear(st, logits, st->xn, &m->lm_head, NULL, nr); // a GPTQ lm_head runs packed
    return nr;
}

// Checks ids, sequences and positions of the whole batch against the current cache.
static Status validate_batch(const InferState *st, const InferBatch *b) {
    const LlamaConfig *c = &st->m->cfg;
    int *lens = st->lens_buf;
    memcpy(lens, st->seq_len, (size_t)st->opt.max_seqs * sizeof *lens);
    for (int i = 0; i < b->n; i++) {
        int32_t tok = b->tokens[i], s = b->seq ? b->seq[i] : 0;
        if (tok < 0 || tok >= c->vocab_size)
            return fail(STATUS_ERR_ARG,
                        "token id %d at batch index %d is outside the vocabulary (0..%d)", tok, i,
                        c->vocab_size - 1);
        if (s < 0 || s >= st->opt.max_seqs)
            return fail(STATUS_ERR_ARG, "sequence id %d at batch index %d is outside 0..%d", s, i,
                        st->opt.max_seqs - 1);
        int p = b->pos ? b->pos[i] : lens[s];
        if (p != lens[s])
            return fail(STATUS_ERR_ARG,
                        "position %d of sequence %d at batch index %d: expected %d "
                        "(tokens of a sequence must be appended in order)",
                        p, s, i, lens[s]);
        if (p >= st->opt.max_ctx)
            return fail(STATUS_ERR_ARG,
                        "sequence %d is full: position %d does not fit the context "
                        "of %d tokens",
                        s, p, st->opt.max_ctx);
        lens[s] = p + 1;
    }
    return STATUS_OK;
}

// Runs T tokens whose sequence ids and want-flags the caller put in seq_buf/want_buf;
// assigns positions from the cache lengths. Returns the number of logits rows written.
static int run_chunk(InferState *st, const int32_t *tokens, int T, float *logits) {
    for (int t = 0; t < T; t++)
        st->pos_buf[t] = st->seq_len[st->seq_buf[t]]++;
    return forward_chunk(st, tokens, st->seq_buf, st->pos_buf, st->want_buf, T, logits);
}

Status infer_forward(InferState *st, const InferBatch *b, float *logits) {
    if (b->n < 0 || (b->n > 0 && !b->tokens)) return fail(STATUS_ERR_ARG, "bad batch (n=%d)", b->n);
    Status s = validate_batch(st, b);
    if (s != STATUS_OK) return s;
    int V = (int)st->m->lm_head.shape[0], Tb = st->opt.max_batch;
    for (int i0 = 0; i0 < b->n; i0 += Tb) {
        int T = MIN(Tb, b->n - i0);
        for (int t = 0; t < T; t++) {
            st->seq_buf[t] = b->seq ? b->seq[i0 + t] : 0;
            st->want_buf[t] = logits && (b->want_logits ? b->want_logits[i0 + t] != 0 : 1);
        }
        int nr = run_chunk(st, b->tokens + i0, T, logits);
        if (logits) logits += (size_t)nr * (size_t)V;
    }
    return STATUS_OK;
}

Status infer_prefill(InferState *st, int seq, const int32_t *tokens, int n, float *logits) {
    if (seq < 0 || seq >= st->opt.max_seqs)
        return fail(STATUS_ERR_ARG, "sequence id %d is outside 0..%d", seq, st->opt.max_seqs - 1);
    if (n <= 0) return fail(STATUS_ERR_ARG, "no tokens to process");
    if (n > st->opt.max_ctx - st->seq_len[seq])
        return fail(STATUS_ERR_ARG,
                    "%d tokens do not fit the context of %d tokens (sequence %d "
                    "already holds %d)",
                    n, st->opt.max_ctx, seq, st->seq_len[seq]);
    const LlamaConfig *c = &st->m->cfg;
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size)
            return fail(STATUS_ERR_ARG, "token id %d at index %d is outside the vocabulary (0..%d)",
                        tokens[i], i, c->vocab_size - 1);
    int Tb = st->opt.max_batch;
    for (int i0 = 0; i0 < n; i0 += Tb) {
        int T = MIN(Tb, n - i0);
        for (int t = 0; t < T; t++) {
            st->seq_buf[t] = seq;
            st->want_buf[t] = logits && i0 + t == n - 1; // only the prompt's last token
        }
        run_chunk(st, tokens + i0, T, logits);
    }
    return STATUS_OK;
}

Status infer_decode(InferState *st, int seq, int32_t token, float *logits) {
    return infer_prefill(st, seq, &token, 1, logits);
}

/* ---- weight conversion --------------------------------------------------------------- */

static Status convert_tensor(Model *m, Tensor *t, DType dt) {
    if (!t->data || t->dtype == dt) return STATUS_OK;
    int64_t n = tensor_numel(t);
    void *dst = model_alloc(m, (size_t)n * dtype_size(dt));
    if (!dst) return fail_context(STATUS_ERR_NOMEM, "converting weights to %s", dtype_name(dt));
    if (t->dtype == DTYPE_F32)
        dtype_from_f32(dst, t->data, dt, n);
    else {
        // 16-bit -> other: widen in blocks through a small buffer
        float buf[4096];
        for (int64_t i = 0; i < n; i += 4096) {
            int64_t k = MIN((int64_t)4096, n - i);
            dtype_to_f32(buf, (const unsigned char *)t->data + (size_t)i * dtype_size(t->dtype),
                         t->dtype, k);
            dtype_from_f32((unsigned char *)dst + (size_t)i * dtype_size(dt), buf, dt, k);
        }
    }
    t->data = dst;
    t->dtype = dt;
    return STATUS_OK;
}

Status infer_convert_weights(Model *m, DType dt) {
    if (dt < 0 || dt >= DTYPE_COUNT)
        return fail(STATUS_ERR_ARG, "unknown weight dtype %d", (int)dt);
    bool tied = m->lm_head.data == m->tok_emb.data;
    Status s = convert_tensor(m, &m->tok_emb, dt);
    if (s == STATUS_OK) {
        if (tied)
            m->lm_head = m->tok_emb;
        else
            s = convert_tensor(m, &m->lm_head, dt);
    }
    for (int l = 0; l < m->cfg.n_layers && s == STATUS_OK; l++) {
        LlamaLayer *ly = &m->layers[l];
        Tensor *ts[] = {&ly->wq, &ly->wk, &ly->wv, &ly->wo, &ly->w_gate, &ly->w_up, &ly->w_down};
        for (size_t i = 0; i < ARRAY_LEN(ts) && s == STATUS_OK; i++)
            s = convert_tensor(m, ts[i], dt);
    }
    return s;
}
