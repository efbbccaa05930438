/*
 * model_gguf.c - Llama-family models in GGUF files (llama.cpp's layout): loading into a
 * Model and writing a Model so that llama.cpp loads it.
 *
 * Names and layout follow llama.cpp's convert_hf_to_gguf.py:
 *   token_embd.weight (V, D); blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output,
 *   ffn_norm, ffn_gate, ffn_up, ffn_down}.weight; blk.N.attn_{q,k,v}.bias (Qwen2);
 *   output_norm.weight; output.weight (absent when tied); rope_freqs.weight (Llama 3 rope).
 * GGUF dims are ggml-ordered (ne[0] = in_features), i.e. the same row-major bytes as
 * PyTorch's (out, in). For arch "llama" the converter permutes q/k rows (and biases) to
 * the interleaved RoPE order; we undo that on load and redo it on save. Qwen2 uses
 * NEOX (rotate_half) RoPE and is stored unpermuted.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "core/common.h"
#include "model/gguf.h"
#include "model/llama.h"
#include "model/model_io.h"
#include "model/tokenizer.h"

typedef struct {
    Gguf g;
    Model *m;
    const char *path;
    char arch[32];
    bool permute_qk;    // llama/mistral: file holds interleaved q/k rows
    bool *used;         // (n_tensors) tensors consumed by the loader
    struct GlJob *jobs; // owned copies still to fill (run together, in parallel)
    int n_jobs, cap_jobs;
    size_t slab_bytes; // all owned copies live in one slab of this size (gl_fill)
} GgufLoad;

// One owned tensor copy: dequantize (or copy) `ti` into buf, then permute q/k rows.
typedef struct GlJob {
    const GgufTensorInfo *ti;
    Tensor *t; // gets data = slab + off
    size_t off;
    size_t bytes; // bytes to copy for F32/F16/BF16 sources (0: dequantize)
    int n_head;   // > 0: permute rows interleaved -> HF
    int head_dim;
    size_t row_bytes;
} GlJob;

/* ---- configuration ---------------------------------------------------------- */

static const char *arch_key(const GgufLoad *L, const char *suffix, char *buf, size_t n) {
    snprintf(buf, n, "%s.%s", L->arch, suffix);
    return buf;
}

// Reads "<arch>.<suffix>" as a positive int; absent leaves *out unchanged unless required.
static Status cfg_int(const GgufLoad *L, const char *suffix, bool required, int *out) {
    char key[128];
    arch_key(L, suffix, key, sizeof key);
    int64_t v = *out;
    Status s = required ? gguf_require_int(&L->g, key, &v) : gguf_get_int(&L->g, key, &v);
    if (s != STATUS_OK) return s;
    if (!gguf_find(&L->g, key)) return STATUS_OK;
    if (v <= 0 || v > INT32_MAX)
        return fail(STATUS_ERR_FORMAT, "'%s': %s = %lld is out of range", L->path, key,
                    (long long)v);
    *out = (int)v;
    return STATUS_OK;
}

static Status cfg_float(const GgufLoad *L, const char *suffix, float *out) {
    char key[128];
    double v = *out;
    Status s = gguf_get_float(&L->g, arch_key(L, suffix, key, sizeof key), &v);
    if (s != STATUS_OK) return s;
    *out = (float)v;
    return STATUS_OK;
}

// The Llama 3 frequency factors as convert_hf_to_gguf.py computes them (rope_freqs
// holds 1/multiplier per frequency): (HD/2) values.
static void llama3_rope_factors(const LlamaConfig *c, double *out) {
    double lo = c->rope_low_freq_factor, hi = c->rope_high_freq_factor, f = c->rope_factor;
    double orig = c->rope_orig_max_pos, lo_wl = orig / lo, hi_wl = orig / hi;
    for (int i = 0; i < c->head_dim / 2; i++) {
        double freq = 1.0 / pow((double)c->rope_theta, 2.0 * i / c->head_dim);
        double wl = 2 * M_PI / freq;
        if (wl < hi_wl)
            out[i] = 1;
        else if (wl > lo_wl)
            out[i] = f;
        else {
            double smooth = (orig / wl - lo) / (hi - lo);
            out[i] = 1 / ((1 - smooth) / f + smooth);
        }
    }
}

static bool llama3_matches(const LlamaConfig *c, const float *r, double *tmp) {
    llama3_rope_factors(c, tmp);
    for (int i = 0; i < c->head_dim / 2; i++)
        if (fabs(tmp[i] - r[i]) > 1e-4 * fabs(r[i])) return false;
    return true;
}

/*
 * llama.cpp keeps Llama 3 rope scaling only as the rope_freqs tensor. Its values are
 * 1 (short wavelengths), `factor` (long ones) and, between, 1/((1-s)/factor + s) with
 * s = orig*freq/(2*pi*(high-low)) - low/(high-low): linear in freq. The factors depend on
 * (low, high, orig) only through that line, so we fit it, take low = 1 (every released
 * Llama 3 model) and solve for high and orig; then check that the recomputed factors
 * reproduce the tensor.
 */
static Status gl_rope_freqs(GgufLoad *L, const GgufTensorInfo *t) {
    LlamaConfig *c = &L->m->cfg;
    int n = c->head_dim / 2;
    if (t->type != GGUF_TENSOR_F32 || t->n_dims != 1 || t->ne[0] != n)
        return fail(STATUS_ERR_FORMAT, "'%s': rope_freqs.weight must be F32 with %d elements",
                    L->path, n);
    float *r = xmalloc((size_t)n * sizeof *r);
    double *tmp = xmalloc((size_t)n * sizeof *tmp);
    memcpy(r, t->data, (size_t)n * sizeof *r);
    double factor = 0;
    for (int i = 0; i < n; i++)
        factor = MAX(factor, (double)r[i]);
    Status s = STATUS_OK;
    if (!(factor > 1.0 + 1e-6)) goto out; // all ones: no scaling
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (!(r[i] > 1.0 + 1e-5 && r[i] < factor * (1 - 1e-5))) continue;
        double freq = 1.0 / pow((double)c->rope_theta, 2.0 * i / c->head_dim);
        double smooth = (1.0 / r[i] - 1.0 / factor) / (1.0 - 1.0 / factor);
        sx += freq, sy += smooth, sxx += freq * freq, sxy += freq * smooth, k++;
    }
    c->rope_scaling = ROPE_SCALING_LLAMA3;
    c->rope_factor = (float)factor;
    c->rope_low_freq_factor = 1.0f;
    c->rope_high_freq_factor = 4.0f;
    c->rope_orig_max_pos = 8192; // Llama 3 values: used when the tensor cannot tell
    if (k >= 2 && k * sxx - sx * sx > 0) {
        double a = (k * sxy - sx * sy) / (k * sxx - sx * sx), b = (sy - a * sx) / k;
        if (b < 0 && a > 0) {
            double high = 1.0 - 1.0 / b;
            c->rope_high_freq_factor = (float)(round(high * 1e4) / 1e4);
            c->rope_orig_max_pos = (int)lround(2 * M_PI * a * (high - 1.0));
        }
    } else if (k == 1) {
        for (int i = 0; i < n; i++)
            if (r[i] > 1.0 + 1e-5 && r[i] < factor * (1 - 1e-5)) {
                double freq = 1.0 / pow((double)c->rope_theta, 2.0 * i / c->head_dim);
                double smooth = (1.0 / r[i] - 1.0 / factor) / (1.0 - 1.0 / factor);
                c->rope_orig_max_pos = (int)lround(2 * M_PI / freq * (3 * smooth + 1));
            }
    }
    if (c->rope_orig_max_pos <= 0 || !llama3_matches(c, r, tmp))
        s = fail(STATUS_ERR_UNSUPPORTED,
                 "'%s': rope_freqs.weight does not follow the Llama 3 rope scaling formula",
                 L->path);
out:
    free(r);
    free(tmp);
    return s;
}

static Status gl_config(GgufLoad *L) {
    LlamaConfig *c = &L->m->cfg;
    char key[128];
    memset(c, 0, sizeof *c);
    snprintf(c->arch, sizeof c->arch, "%s", L->arch);
    Status s;
    if ((s = cfg_int(L, "embedding_length", true, &c->dim)) != STATUS_OK ||
        (s = cfg_int(L, "block_count", true, &c->n_layers)) != STATUS_OK ||
        (s = cfg_int(L, "feed_forward_length", true, &c->hidden_dim)) != STATUS_OK ||
        (s = cfg_int(L, "attention.head_count", true, &c->n_heads)) != STATUS_OK ||
        (s = cfg_int(L, "attention.head_count_kv", false, &c->n_kv_heads)) != STATUS_OK ||
        (s = cfg_int(L, "context_length", false, &c->max_seq_len)) != STATUS_OK ||
        (s = cfg_int(L, "attention.key_length", false, &c->head_dim)) != STATUS_OK)
        return s;
    int v_len = c->head_dim, rope_dims = 0;
    if ((s = cfg_int(L, "attention.value_length", false, &v_len)) != STATUS_OK) return s;
    if (v_len != c->head_dim)
        return fail(STATUS_ERR_UNSUPPORTED,
                    "'%s': value_length %d != key_length %d is not supported", L->path, v_len,
                    c->head_dim);
    c->rope_theta = 10000.0f; // llama.cpp's default when rope.freq_base is absent
    c->norm_eps = 1e-5f;
    if ((s = cfg_float(L, "rope.freq_base", &c->rope_theta)) != STATUS_OK ||
        (s = cfg_float(L, "attention.layer_norm_rms_epsilon", &c->norm_eps)) != STATUS_OK)
        return s;
    GgufStr st = {0};
    if ((s = gguf_get_str(&L->g, arch_key(L, "rope.scaling.type", key, sizeof key), &st)) !=
        STATUS_OK)
        return s;
    if (st.len && !gguf_str_eq(st, "none"))
        return fail(STATUS_ERR_UNSUPPORTED, "'%s': rope scaling type '%.*s' is not supported",
                    L->path, (int)MIN(st.len, 64), st.ptr);
    const GgufTensorInfo *emb = gguf_find_tensor(&L->g, "token_embd.weight");
    if (!emb) return fail(STATUS_ERR_FORMAT, "'%s': missing tensor 'token_embd.weight'", L->path);
    if (emb->n_dims != 2 || emb->ne[1] > INT32_MAX)
        return fail(STATUS_ERR_FORMAT, "'%s': token_embd.weight must be 2-D", L->path);
    c->vocab_size = (int)emb->ne[1];
    c->tied_embeddings = gguf_find_tensor(&L->g, "output.weight") == NULL;
    c->qkv_bias = strcmp(L->arch, "qwen2") == 0 || gguf_find_tensor(&L->g, "blk.0.attn_q.bias");
    c->bos_id = c->eos_id = -1;
    int64_t id = -1;
    if ((s = gguf_get_int(&L->g, "tokenizer.ggml.bos_token_id", &id)) != STATUS_OK) return s;
    c->bos_id = id >= 0 && id < c->vocab_size ? (int)id : -1;
    id = -1;
    if ((s = gguf_get_int(&L->g, "tokenizer.ggml.eos_token_id", &id)) != STATUS_OK) return s;
    c->eos_id = id >= 0 && id < c->vocab_size ? (int)id : -1;
    if ((s = llama_config_validate(c, L->path)) != STATUS_OK) return s;
    rope_dims = c->head_dim;
    if ((s = cfg_int(L, "rope.dimension_count", false, &rope_dims)) != STATUS_OK) return s;
    if (rope_dims != c->head_dim)
        return fail(STATUS_ERR_UNSUPPORTED, "'%s': partial RoPE (%d of %d dims) is not supported",
                    L->path, rope_dims, c->head_dim);
    const GgufTensorInfo *rf = gguf_find_tensor(&L->g, "rope_freqs.weight");
    if (rf) {
        L->used[rf - L->g.tensors] = true;
        if ((s = gl_rope_freqs(L, rf)) != STATUS_OK) return s;
    }
    return STATUS_OK;
}

/* ---- tensors ------------------------------------------------------------------ */

static int ggml_to_dtype(GgufTensorType t) {
    switch (t) {
    case GGUF_TENSOR_F32: return DTYPE_F32;
    case GGUF_TENSOR_F16: return DTYPE_F16;
    case GGUF_TENSOR_BF16: return DTYPE_BF16;
    default: return -1;
    }
}

// Binds tensor `name` of PyTorch shape (rows) or (rows, cols) to *t: a view into the
// mapping for F32/F16/BF16, else an owned F32 dequantized copy. n_head > 0 permutes
// rows from the interleaved order to HF order (owned copy).
static Status gl_bind(GgufLoad *L, Tensor *t, const char *name, int64_t rows, int64_t cols,
                      bool required, int n_head) {
    memset(t, 0, sizeof *t);
    const GgufTensorInfo *ti = gguf_find_tensor(&L->g, name);
    if (!ti) {
        if (!required) return STATUS_OK;
        return fail(STATUS_ERR_FORMAT, "'%s': missing tensor '%s'", L->path, name);
    }
    L->used[ti - L->g.tensors] = true;
    int nd = cols > 0 ? 2 : 1;
    bool ok =
        ti->n_dims == nd && ti->ne[0] == (nd == 2 ? cols : rows) && (nd == 1 || ti->ne[1] == rows);
    if (!ok)
        return fail(
            STATUS_ERR_FORMAT,
            "'%s': tensor '%s' has ggml shape [%lld, %lld] (%d dims), expected [%lld, %lld]",
            L->path, name, (long long)ti->ne[0], (long long)ti->ne[1], ti->n_dims,
            (long long)(nd == 2 ? cols : rows), (long long)(nd == 2 ? rows : 1));
    t->ndim = nd;
    t->shape[0] = rows;
    t->shape[1] = nd == 2 ? cols : 0;
    int dt = ggml_to_dtype(ti->type);
    size_t esz = dt >= 0 ? dtype_size((DType)dt) : 4;
    bool aligned = ((uintptr_t)ti->data % esz) == 0;
    if (dt >= 0 && n_head == 0 && aligned) { // zero-copy view
        t->dtype = (DType)dt;
        t->data = (void *)ti->data;
        return STATUS_OK;
    }
    if (dt < 0 && !gguf_tensor_can_dequant(ti->type))
        return fail(STATUS_ERR_UNSUPPORTED,
                    "'%s': tensor '%s' has type %s, which edgeforge cannot dequantize", L->path,
                    name, gguf_tensor_type_name(ti->type));
    int hd = L->m->cfg.head_dim;
    if (n_head > 0 && rows != (int64_t)n_head * hd)
        return fail(STATUS_ERR_FORMAT, "'%s': tensor '%s' rows %lld != %d heads x %d", L->path,
                    name, (long long)rows, n_head, hd);
    size_t bytes = (size_t)ti->n_elems * esz;
    t->dtype = dt >= 0 ? (DType)dt : DTYPE_F32;
    t->data = NULL; // set by gl_fill
    if (L->n_jobs == L->cap_jobs) {
        L->cap_jobs = L->cap_jobs ? 2 * L->cap_jobs : 64;
        L->jobs = xrealloc(L->jobs, (size_t)L->cap_jobs * sizeof *L->jobs);
    }
    L->jobs[L->n_jobs++] = (GlJob){
        ti, t, L->slab_bytes, dt >= 0 ? bytes : 0, n_head, hd, (size_t)(nd == 2 ? cols : 1) * esz};
    L->slab_bytes += (bytes + 63) / 64 * 64;
    return STATUS_OK;
}

// Allocates one slab for every owned copy and fills them. One allocation, not one per
// tensor: a fresh process pays a page fault per 4 KiB of new memory, which for a 135M
// model dequantized to F32 (540 MB) cost more than the dequantization itself; one big
// 2 MiB-aligned block can be backed by transparent huge pages (MADV_HUGEPAGE: 512x fewer
// faults where the kernel allows it). One parallel loop over whole tensors; each job is
// independent, so the result does not depend on the thread count.
static Status gl_fill(GgufLoad *L) {
    if (L->n_jobs == 0) return STATUS_OK;
    size_t align = L->slab_bytes >= (4u << 20) ? (2u << 20) : 64;
    void *slab = NULL;
    if (posix_memalign(&slab, align, L->slab_bytes) != 0)
        return fail(STATUS_ERR_NOMEM, "'%s': cannot allocate %zu bytes for the weights", L->path,
                    L->slab_bytes);
#ifdef MADV_HUGEPAGE
    if (align > 64) (void)madvise(slab, L->slab_bytes, MADV_HUGEPAGE); // a hint only
#endif
    model_take(L->m, slab);
    for (int i = 0; i < L->n_jobs; i++)
        L->jobs[i].t->data = (char *)slab + L->jobs[i].off;
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1)
#endif
    for (int i = 0; i < L->n_jobs; i++) {
        const GlJob *j = &L->jobs[i];
        void *buf = j->t->data;
        if (j->bytes)
            memcpy(buf, j->ti->data, j->bytes);
        else
            (void)gguf_dequantize(j->ti->type, j->ti->data, buf, j->ti->n_elems); // checked
        if (j->n_head > 0) rope_permute_rows(buf, j->n_head, j->head_dim, j->row_bytes, true);
    }
    return STATUS_OK;
}

static Status gl_layer(GgufLoad *L, int l) {
    const LlamaConfig *c = &L->m->cfg;
    LlamaLayer *ly = &L->m->layers[l];
    int64_t D = c->dim, F = c->hidden_dim, QD = (int64_t)c->n_heads * c->head_dim;
    int64_t KD = (int64_t)c->n_kv_heads * c->head_dim;
    int hq = L->permute_qk ? c->n_heads : 0, hk = L->permute_qk ? c->n_kv_heads : 0;
    char n[96];
    Status s;
#define BIND(field, suffix, rows, cols, req, heads)                                                \
    do {                                                                                           \
        snprintf(n, sizeof n, "blk.%d.%s", l, suffix);                                             \
        if ((s = gl_bind(L, &ly->field, n, rows, cols, req, heads)) != STATUS_OK) return s;        \
    } while (0)
    BIND(attn_norm, "attn_norm.weight", D, 0, true, 0);
    BIND(wq, "attn_q.weight", QD, D, true, hq);
    BIND(wk, "attn_k.weight", KD, D, true, hk);
    BIND(wv, "attn_v.weight", KD, D, true, 0);
    BIND(bq, "attn_q.bias", QD, 0, c->qkv_bias, hq);
    BIND(bk, "attn_k.bias", KD, 0, c->qkv_bias, hk);
    BIND(bv, "attn_v.bias", KD, 0, c->qkv_bias, 0);
    BIND(wo, "attn_output.weight", D, QD, true, 0);
    BIND(ffn_norm, "ffn_norm.weight", D, 0, true, 0);
    BIND(w_gate, "ffn_gate.weight", F, D, true, 0);
    BIND(w_up, "ffn_up.weight", F, D, true, 0);
    BIND(w_down, "ffn_down.weight", D, F, true, 0);
#undef BIND
    return STATUS_OK;
}

static Status gl_tensors(GgufLoad *L) {
    Model *m = L->m;
    const LlamaConfig *c = &m->cfg;
    Status s;
    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    if (!m->layers) return fail(STATUS_ERR_NOMEM, "cannot allocate the layer table");
    if ((s = gl_bind(L, &m->tok_emb, "token_embd.weight", c->vocab_size, c->dim, true, 0)) !=
        STATUS_OK)
        return s;
    for (int l = 0; l < c->n_layers; l++)
        if ((s = gl_layer(L, l)) != STATUS_OK) return s;
    if ((s = gl_bind(L, &m->final_norm, "output_norm.weight", c->dim, 0, true, 0)) != STATUS_OK)
        return s;
    if (!c->tied_embeddings &&
        (s = gl_bind(L, &m->lm_head, "output.weight", c->vocab_size, c->dim, true, 0)) != STATUS_OK)
        return s;
    // a tensor we do not know means a model feature we would silently ignore
    for (int64_t i = 0; i < L->g.n_tensors; i++)
        if (!L->used[i])
            return fail(STATUS_ERR_UNSUPPORTED, "'%s': unexpected tensor '%s' for arch '%s'",
                        L->path, L->g.tensors[i].name, L->arch);
    if ((s = gl_fill(L)) != STATUS_OK) return s;
    if (c->tied_embeddings) m->lm_head = m->tok_emb; // after gl_fill set its data
    return STATUS_OK;
}

/* ---- tokenizer ------------------------------------------------------------------- */

static Status tok_id(const GgufLoad *L, const char *key, int32_t *out) {
    int64_t v = *out;
    Status s = gguf_get_int(&L->g, key, &v);
    if (s != STATUS_OK) return s;
    if (v < -1 || v > INT32_MAX)
        return fail(STATUS_ERR_FORMAT, "'%s': %s = %lld is out of range", L->path, key,
                    (long long)v);
    *out = (int32_t)v;
    return STATUS_OK;
}

// Fills a TokenizerSpec from tokenizer.ggml.* (llama.cpp's keys and defaults) and builds
// m->tok. A file without tokenizer.ggml.model gets no tokenizer.
static Status gl_tokenizer(GgufLoad *L) {
    const Gguf *g = &L->g;
    if (!gguf_find(g, "tokenizer.ggml.model")) return STATUS_OK;
    GgufStr model = {0}, pre = {0}, tmpl = {0};
    Status s = gguf_require_str(g, "tokenizer.ggml.model", &model);
    if (s != STATUS_OK) return s;
    TokenizerSpec sp;
    memset(&sp, 0, sizeof sp);
    if (gguf_str_eq(model, "llama"))
        sp.kind = TOKENIZER_SPM;
    else if (gguf_str_eq(model, "gpt2"))
        sp.kind = TOKENIZER_BPE;
    else
        return fail(STATUS_ERR_UNSUPPORTED,
                    "'%s': tokenizer model '%.*s' is not supported (llama or gpt2)", L->path,
                    (int)MIN(model.len, 64), model.ptr);
    const GgufValue *toks, *scores, *types, *merges;
    if ((s = gguf_get_arr(g, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, &toks)) != STATUS_OK ||
        (s = gguf_get_arr(g, "tokenizer.ggml.scores", GGUF_TYPE_COUNT, &scores)) != STATUS_OK ||
        (s = gguf_get_arr(g, "tokenizer.ggml.token_type", GGUF_TYPE_COUNT, &types)) != STATUS_OK ||
        (s = gguf_get_arr(g, "tokenizer.ggml.merges", GGUF_TYPE_STRING, &merges)) != STATUS_OK ||
        (s = gguf_get_str(g, "tokenizer.ggml.pre", &pre)) != STATUS_OK ||
        (s = gguf_get_str(g, "tokenizer.chat_template", &tmpl)) != STATUS_OK)
        return s;
    if (!toks || toks->n == 0 || toks->n > (1u << 24))
        return fail(STATUS_ERR_FORMAT, "'%s': tokenizer.ggml.tokens is missing or has a bad size",
                    L->path);
    int n = (int)toks->n;
    if ((scores && scores->n != toks->n) || (types && types->n != toks->n))
        return fail(STATUS_ERR_FORMAT,
                    "'%s': tokenizer scores/token_type sizes differ from the %d tokens", L->path,
                    n);
    const char **tp = xmalloc((size_t)n * sizeof *tp);
    size_t *lens = xmalloc((size_t)n * sizeof *lens);
    float *sc = scores ? xmalloc((size_t)n * sizeof *sc) : NULL;
    int32_t *ty = types ? xmalloc((size_t)n * sizeof *ty) : NULL;
    int n_merges = merges ? (int)MIN(merges->n, (uint64_t)INT32_MAX) : 0;
    char **mg = xcalloc((size_t)n_merges + 1, sizeof *mg);
    char *pre_s = pre.len ? gguf_str_dup(pre) : NULL,
         *tmpl_s = tmpl.len ? gguf_str_dup(tmpl) : NULL;
    for (int i = 0; i < n; i++) {
        tp[i] = toks->strs[i].ptr;
        lens[i] = (size_t)toks->strs[i].len;
    }
    for (int i = 0; i < n_merges; i++)
        mg[i] = gguf_str_dup(merges->strs[i]);
    if (sc) s = gguf_arr_copy_f32(scores, sc, "tokenizer.ggml.scores");
    if (s == STATUS_OK && ty) s = gguf_arr_copy_i32(types, ty, "tokenizer.ggml.token_type");
    if (s != STATUS_OK) s = fail_context(s, "'%s'", L->path);
    bool spm = sp.kind == TOKENIZER_SPM;
    sp.n_vocab = n;
    sp.tokens = tp;
    sp.token_lens = lens;
    sp.scores = sc;
    sp.token_types = ty;
    sp.n_merges = n_merges;
    sp.merges = (const char *const *)mg;
    sp.pre = spm ? NULL : pre_s; // SPM has no pre-tokenizer; "default" etc. mean nothing there
    sp.chat_template = tmpl_s;
    // llama.cpp's defaults per tokenizer model
    sp.bos_id = spm ? 1 : -1;
    sp.eos_id = spm ? 2 : -1;
    sp.unk_id = spm ? 0 : -1;
    sp.pad_id = -1;
    sp.add_bos = spm;
    sp.add_space_prefix = spm; // llama.cpp applies the dummy prefix to SPM only
    sp.byte_fallback = spm;
    sp.ignore_merges = pre_s && (strcmp(pre_s, "llama-bpe") == 0 || strcmp(pre_s, "llama3") == 0 ||
                                 strcmp(pre_s, "llama-v3") == 0);
    if (s == STATUS_OK) s = tok_id(L, "tokenizer.ggml.bos_token_id", &sp.bos_id);
    if (s == STATUS_OK) s = tok_id(L, "tokenizer.ggml.eos_token_id", &sp.eos_id);
    if (s == STATUS_OK) s = tok_id(L, "tokenizer.ggml.unknown_token_id", &sp.unk_id);
    if (s == STATUS_OK) s = tok_id(L, "tokenizer.ggml.padding_token_id", &sp.pad_id);
    if (s == STATUS_OK) s = gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &sp.add_bos);
    if (s == STATUS_OK && spm)
        s = gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &sp.add_space_prefix);
    if (s == STATUS_OK) s = tokenizer_build(&L->m->tok, &sp, L->path);
    for (int i = 0; i < n_merges; i++)
        free(mg[i]);
    free(mg);
    free(tp);
    free(lens);
    free(sc);
    free(ty);
    free(pre_s);
    free(tmpl_s);
    return s;
}

/* ---- load ------------------------------------------------------------------------- */

Status model_load_gguf(Model *m, const char *path) {
    model_init(m);
    m->source = xstrdup(path);
    GgufLoad L = {.m = m, .path = path};
    Status s = gguf_open(&L.g, path);
    if (s != STATUS_OK) goto out;
    GgufStr arch = {0};
    if ((s = gguf_require_str(&L.g, "general.architecture", &arch)) != STATUS_OK) goto out;
    if (gguf_str_eq(arch, "llama") || gguf_str_eq(arch, "mistral"))
        L.permute_qk = true;
    else if (!gguf_str_eq(arch, "qwen2")) {
        s = fail(STATUS_ERR_UNSUPPORTED,
                 "'%s': architecture '%.*s' is not supported (llama, mistral, qwen2)", path,
                 (int)MIN(arch.len, 64), arch.ptr);
        goto out;
    }
    snprintf(L.arch, sizeof L.arch, "%.*s", (int)arch.len, arch.ptr);
    L.used = xcalloc((size_t)L.g.n_tensors + 1, sizeof *L.used);
    if ((s = gl_config(&L)) != STATUS_OK) goto out;
    if ((s = gl_tensors(&L)) != STATUS_OK) goto out;
    if ((s = gl_tokenizer(&L)) != STATUS_OK) goto out;
    // the views point into the mapping: hand it to the model
    gguf_take_file(&L.g, &m->files[m->n_files++]);
out:
    gguf_close(&L.g);
    free(L.used);
    free(L.jobs);
    if (s != STATUS_OK) model_release(m);
    return s;
}

/* ---- save -------------------------------------------------------------------------- */

typedef struct {
    GgufWriter w;
    void **bufs; // permuted q/k copies, freed after the write
    int n_bufs;
} GgufSave;

static GgufTensorType dtype_to_ggml(DType d) {
    return d == DTYPE_F16 ? GGUF_TENSOR_F16 : d == DTYPE_BF16 ? GGUF_TENSOR_BF16 : GGUF_TENSOR_F32;
}

// Adds a weight (converted to `type` at write time); n_head > 0 stores an interleaved copy.
static Status gs_add(GgufSave *S, const char *name, const Tensor *t, GgufTensorType type,
                     int n_head, int head_dim) {
    if (!t->data) return STATUS_OK;
    int64_t ne[2] = {t->ndim == 2 ? t->shape[1] : t->shape[0], t->ndim == 2 ? t->shape[0] : 1};
    const void *data = t->data;
    if (n_head > 0) {
        size_t esz = dtype_size(t->dtype), bytes = (size_t)tensor_numel(t) * esz;
        void *buf = malloc(bytes);
        if (!buf) return fail(STATUS_ERR_NOMEM, "cannot allocate %zu bytes for '%s'", bytes, name);
        memcpy(buf, t->data, bytes);
        size_t row_bytes =
            t->ndim == 2 ? (size_t)t->shape[1] * esz : esz; // a bias row is one value
        rope_permute_rows(buf, n_head, head_dim, row_bytes, false);
        S->bufs = xrealloc(S->bufs, (size_t)(S->n_bufs + 1) * sizeof *S->bufs);
        S->bufs[S->n_bufs++] = buf;
        data = buf;
    }
    gguf_writer_add_tensor(&S->w, name, type, t->ndim, ne, data, t->dtype);
    return STATUS_OK;
}

static void gs_config(GgufWriter *w, const LlamaConfig *c, const char *arch, DType dtype) {
    char k[128];
#define KEY(suffix) (snprintf(k, sizeof k, "%s.%s", arch, suffix), k)
    gguf_writer_set_str(w, "general.architecture", arch);
    gguf_writer_set_str(w, "general.name", "edgeforge");
    gguf_writer_set_u32(w, "general.file_type",
                        dtype == DTYPE_F16    ? 1
                        : dtype == DTYPE_BF16 ? 32
                                              : 0);
    gguf_writer_set_u32(w, KEY("context_length"), (uint32_t)c->max_seq_len);
    gguf_writer_set_u32(w, KEY("embedding_length"), (uint32_t)c->dim);
    gguf_writer_set_u32(w, KEY("block_count"), (uint32_t)c->n_layers);
    gguf_writer_set_u32(w, KEY("feed_forward_length"), (uint32_t)c->hidden_dim);
    gguf_writer_set_u32(w, KEY("attention.head_count"), (uint32_t)c->n_heads);
    gguf_writer_set_u32(w, KEY("attention.head_count_kv"), (uint32_t)c->n_kv_heads);
    gguf_writer_set_f32(w, KEY("rope.freq_base"), c->rope_theta);
    gguf_writer_set_f32(w, KEY("attention.layer_norm_rms_epsilon"), c->norm_eps);
    if (c->head_dim != c->dim / c->n_heads || c->dim % c->n_heads) {
        gguf_writer_set_u32(w, KEY("attention.key_length"), (uint32_t)c->head_dim);
        gguf_writer_set_u32(w, KEY("attention.value_length"), (uint32_t)c->head_dim);
    }
    gguf_writer_set_u32(w, KEY("rope.dimension_count"), (uint32_t)c->head_dim);
    gguf_writer_set_u32(w, KEY("vocab_size"), (uint32_t)c->vocab_size);
#undef KEY
}

// SPM token text as llama.cpp expects it: spaces as U+2581 "▁" (llama2.c vocabularies store
// plain spaces; sentencepiece and HF store "▁"). Returns heap strings and lengths.
static void spm_metaspace(const TokenizerSpec *sp, char ***out, size_t **out_lens) {
    char **t = xmalloc((size_t)sp->n_vocab * sizeof *t);
    size_t *l = xmalloc((size_t)sp->n_vocab * sizeof *l);
    for (int i = 0; i < sp->n_vocab; i++) {
        const char *s = sp->tokens[i];
        size_t n = sp->token_lens ? sp->token_lens[i] : strlen(s), k = 0;
        char *d = xmalloc(3 * n + 1);
        for (size_t j = 0; j < n; j++) {
            if (s[j] == ' ') {
                memcpy(d + k, "\xe2\x96\x81", 3);
                k += 3;
            } else {
                d[k++] = s[j];
            }
        }
        d[k] = '\0';
        t[i] = d;
        l[i] = k;
    }
    *out = t;
    *out_lens = l;
}

static uint64_t str_hash(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull; // FNV-1a
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

// Token text -> id over a power-of-two open-addressing table (-1 = empty).
typedef struct {
    int32_t *slot;
    uint64_t mask;
    char **tok;
    const size_t *len;
} TokMap;

static int32_t tokmap_find(const TokMap *m, const char *s, size_t n) {
    for (uint64_t h = str_hash(s, n) & m->mask;; h = (h + 1) & m->mask) {
        int32_t id = m->slot[h];
        if (id < 0) return -1;
        if (m->len[id] == n && memcmp(m->tok[id], s, n) == 0) return id;
    }
}

/*
 * An SPM tokenizer that came with BPE merges but no scores (Hugging Face tokenizer.json):
 * llama.cpp's SPM merges the pair whose merged token has the highest score, which is the
 * BPE merge order when score = -rank. Tokens no merge produces get -1e9 (last).
 */
static float *spm_scores_from_merges(const TokenizerSpec *sp, char **tok, const size_t *len) {
    TokMap m = {NULL, 0, tok, len};
    uint64_t cap = 16;
    while (cap < 2 * (uint64_t)sp->n_vocab)
        cap *= 2;
    m.slot = xmalloc(cap * sizeof *m.slot);
    m.mask = cap - 1;
    for (uint64_t i = 0; i < cap; i++)
        m.slot[i] = -1;
    for (int i = 0; i < sp->n_vocab; i++) {
        if (tokmap_find(&m, tok[i], len[i]) >= 0) continue; // duplicate text: first id wins
        uint64_t h = str_hash(tok[i], len[i]) & m.mask;
        while (m.slot[h] >= 0)
            h = (h + 1) & m.mask;
        m.slot[h] = i;
    }
    float *sc = xmalloc((size_t)sp->n_vocab * sizeof *sc);
    for (int i = 0; i < sp->n_vocab; i++)
        sc[i] = -1e9f;
    char buf[1024];
    for (int r = 0; r < sp->n_merges; r++) {
        // "left right" in the file's form: the merged token is the text without the separator
        // (the first space after the first byte; HF SPM tokens hold "▁", never a space)
        const char *mg = sp->merges[r], *sep = mg[0] ? strchr(mg + 1, ' ') : NULL;
        size_t la = sep ? (size_t)(sep - mg) : 0, lb = sep ? strlen(sep + 1) : 0;
        if (!sep || la + lb > sizeof buf) continue;
        memcpy(buf, mg, la);
        memcpy(buf + la, sep + 1, lb);
        int32_t id = tokmap_find(&m, buf, la + lb);
        if (id >= 0 && sc[id] == -1e9f) sc[id] = (float)-r;
    }
    free(m.slot);
    return sc;
}

static Status gs_tokenizer(GgufWriter *w, const Tokenizer *tok, const char *path) {
    TokenizerSpec sp;
    tokenizer_get_spec(tok, &sp);
    bool spm = sp.kind == TOKENIZER_SPM;
    gguf_writer_set_str(w, "tokenizer.ggml.model", spm ? "llama" : "gpt2");
    // only names are meaningful to llama.cpp (and to our GGUF reader): a tokenizer.json's
    // regex steps are written as the name that splits the same way
    const char *pre = tokenizer_pre_name(&sp);
    if (!pre)
        return fail(STATUS_ERR_UNSUPPORTED,
                    "cannot write '%s': the tokenizer's pre-tokenizer (%d regex step%s, first "
                    "'%.60s') matches no GGUF pre-tokenizer name (smollm, llama3, qwen2, gpt2)",
                    path, sp.n_pre_regex, sp.n_pre_regex == 1 ? "" : "s",
                    sp.n_pre_regex > 0 ? sp.pre_regex[0] : (sp.pre ? sp.pre : "?"));
    gguf_writer_set_str(w, "tokenizer.ggml.pre", pre);
    char **mtok = NULL;
    size_t *mlen = NULL;
    float *syn = NULL;
    if (spm) {
        spm_metaspace(&sp, &mtok, &mlen);
        if (!sp.scores && sp.n_merges > 0) syn = spm_scores_from_merges(&sp, mtok, mlen);
        gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)mtok, mlen,
                                (uint64_t)sp.n_vocab);
    } else {
        gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", sp.tokens, sp.token_lens,
                                (uint64_t)sp.n_vocab);
    }
    if (sp.scores || syn)
        gguf_writer_set_arr(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, syn ? syn : sp.scores,
                            (uint64_t)sp.n_vocab);
    if (mtok)
        for (int i = 0; i < sp.n_vocab; i++)
            free(mtok[i]);
    free(mtok);
    free(mlen);
    free(syn);
    if (sp.token_types)
        gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, sp.token_types,
                            (uint64_t)sp.n_vocab);
    if (!spm && sp.n_merges > 0)
        gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", sp.merges, NULL, (uint64_t)sp.n_merges);
    if (sp.bos_id >= 0) gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)sp.bos_id);
    if (sp.eos_id >= 0) gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)sp.eos_id);
    if (sp.unk_id >= 0)
        gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)sp.unk_id);
    if (sp.pad_id >= 0)
        gguf_writer_set_u32(w, "tokenizer.ggml.padding_token_id", (uint32_t)sp.pad_id);
    gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", sp.add_bos);
    if (spm) gguf_writer_set_bool(w, "tokenizer.ggml.add_space_prefix", sp.add_space_prefix);
    if (sp.chat_template) gguf_writer_set_str(w, "tokenizer.chat_template", sp.chat_template);
    return STATUS_OK;
}

Status model_save_gguf(const Model *m, const char *path, DType dtype) {
    if ((int)dtype < 0 || dtype >= DTYPE_COUNT)
        return fail(STATUS_ERR_ARG, "bad dtype %d", (int)dtype);
    const LlamaConfig *c = &m->cfg;
    if (!m->layers || c->n_layers <= 0 || !m->tok_emb.data || !m->final_norm.data ||
        (!c->tied_embeddings && !m->lm_head.data))
        return fail(STATUS_ERR_ARG, "cannot save an incomplete model to '%s'", path);
    bool qwen = strcmp(c->arch, "qwen2") == 0;
    const char *arch = qwen ? "qwen2" : "llama"; // mistral is stored as llama, as llama.cpp does
    int hd = c->head_dim, hq = qwen ? 0 : c->n_heads, hk = qwen ? 0 : c->n_kv_heads;
    GgufSave S = {0};
    gguf_writer_init(&S.w);
    gs_config(&S.w, c, arch, dtype);
    Status s = m->tok ? gs_tokenizer(&S.w, m->tok, path) : STATUS_OK;
    GgufTensorType wt = dtype_to_ggml(dtype), f32 = GGUF_TENSOR_F32; // norms/biases stay F32
    if (s == STATUS_OK) s = gs_add(&S, "token_embd.weight", &m->tok_emb, wt, 0, hd);
    char n[96];
    for (int l = 0; l < c->n_layers && s == STATUS_OK; l++) {
        const LlamaLayer *ly = &m->layers[l];
#define ADD(suffix, t, type, heads)                                                                \
    do {                                                                                           \
        snprintf(n, sizeof n, "blk.%d.%s", l, suffix);                                             \
        if (s == STATUS_OK) s = gs_add(&S, n, t, type, heads, hd);                                 \
    } while (0)
        ADD("attn_norm.weight", &ly->attn_norm, f32, 0);
        ADD("attn_q.weight", &ly->wq, wt, hq);
        ADD("attn_k.weight", &ly->wk, wt, hk);
        ADD("attn_v.weight", &ly->wv, wt, 0);
        ADD("attn_q.bias", &ly->bq, f32, hq);
        ADD("attn_k.bias", &ly->bk, f32, hk);
        ADD("attn_v.bias", &ly->bv, f32, 0);
        ADD("attn_output.weight", &ly->wo, wt, 0);
        ADD("ffn_norm.weight", &ly->ffn_norm, f32, 0);
        ADD("ffn_gate.weight", &ly->w_gate, wt, 0);
        ADD("ffn_up.weight", &ly->w_up, wt, 0);
        ADD("ffn_down.weight", &ly->w_down, wt, 0);
#undef ADD
    }
    if (s == STATUS_OK) s = gs_add(&S, "output_norm.weight", &m->final_norm, f32, 0, hd);
    if (s == STATUS_OK && !c->tied_embeddings)
        s = gs_add(&S, "output.weight", &m->lm_head, wt, 0, hd);
    float *rf = NULL;
    if (c->rope_scaling == ROPE_SCALING_LLAMA3) {
        double *f = xmalloc((size_t)(hd / 2) * sizeof *f);
        rf = xmalloc((size_t)(hd / 2) * sizeof *rf);
        llama3_rope_factors(c, f);
        for (int i = 0; i < hd / 2; i++)
            rf[i] = (float)f[i];
        free(f);
        int64_t ne[1] = {hd / 2};
        gguf_writer_add_tensor(&S.w, "rope_freqs.weight", GGUF_TENSOR_F32, 1, ne, rf, DTYPE_F32);
    }
    if (s == STATUS_OK) s = gguf_writer_write(&S.w, path);
    gguf_writer_release(&S.w);
    for (int i = 0; i < S.n_bufs; i++)
        free(S.bufs[i]);
    free(S.bufs);
    free(rf);
    return s;
}
