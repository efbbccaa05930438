/*
 * llama.c - Model lifecycle, configuration checks, the llama2.c checkpoint reader
 * and the loader dispatch by file kind.
 */
#include "llama.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "model/model_io.h"
#include "model/tokenizer.h"
#include "quant/gptq_model.h"

void model_init(Model *m) { memset(m, 0, sizeof *m); }

void *model_take(Model *m, void *buf) {
    if (m->n_owned == m->cap_owned) {
        m->cap_owned = m->cap_owned ? 2 * m->cap_owned : 16;
        m->owned = xrealloc(m->owned, (size_t)m->cap_owned * sizeof *m->owned);
    }
    m->owned[m->n_owned++] = buf;
    return buf;
}

void *model_alloc(Model *m, size_t n) {
    void *p = calloc(1, n ? n : 1);
    if (!p) {
        fail(STATUS_ERR_NOMEM, "cannot allocate %zu bytes for model weights", n);
        return NULL;
    }
    return model_take(m, p);
}

void model_release(Model *m) {
    for (int i = 0; i < m->n_files; i++)
        mapped_file_close(&m->files[i]);
    for (int i = 0; i < m->n_owned; i++)
        free(m->owned[i]);
    free(m->owned);
    free(m->layers);
    free(m->source);
    if (m->tok) tokenizer_free(m->tok);
    memset(m, 0, sizeof *m);
}

Status llama_config_validate(LlamaConfig *c, const char *what) {
    if (c->dim <= 0 || c->hidden_dim <= 0 || c->n_layers <= 0 || c->n_heads <= 0 ||
        c->vocab_size <= 0)
        return fail(STATUS_ERR_FORMAT,
                    "bad model configuration in '%s': dim=%d hidden_dim=%d n_layers=%d "
                    "n_heads=%d vocab_size=%d must all be positive",
                    what, c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->vocab_size);
    if (c->n_kv_heads <= 0) c->n_kv_heads = c->n_heads;
    if (c->n_heads % c->n_kv_heads != 0)
        return fail(
            STATUS_ERR_FORMAT,
            "bad model configuration in '%s': n_heads %d is not a multiple of n_kv_heads %d", what,
            c->n_heads, c->n_kv_heads);
    if (c->head_dim <= 0) {
        if (c->dim % c->n_heads != 0)
            return fail(STATUS_ERR_FORMAT,
                        "bad model configuration in '%s': dim %d not divisible by n_heads %d", what,
                        c->dim, c->n_heads);
        c->head_dim = c->dim / c->n_heads;
    }
    if (c->head_dim % 2 != 0)
        return fail(STATUS_ERR_FORMAT,
                    "bad model configuration in '%s': head_dim %d must be even for RoPE", what,
                    c->head_dim);
    // limits that keep every size computation far from overflow
    if (c->dim > (1 << 16) || c->hidden_dim > (1 << 18) || c->n_layers > 1024 ||
        c->n_heads > 1024 || c->head_dim > 4096 || c->vocab_size > (1 << 22))
        return fail(STATUS_ERR_FORMAT, "bad model configuration in '%s': sizes out of range", what);
    if (c->rope_theta <= 0) c->rope_theta = 10000.0f;
    if (c->norm_eps <= 0) c->norm_eps = 1e-5f;
    if (c->max_seq_len <= 0) c->max_seq_len = 2048;
    if (!isfinite(c->rope_theta) || !isfinite(c->norm_eps))
        return fail(STATUS_ERR_FORMAT,
                    "bad model configuration in '%s': non-finite rope theta or eps", what);
    if (c->rope_scaling == ROPE_SCALING_LLAMA3 &&
        (c->rope_factor <= 0 || c->rope_low_freq_factor <= 0 ||
         c->rope_high_freq_factor <= c->rope_low_freq_factor || c->rope_orig_max_pos <= 0))
        return fail(STATUS_ERR_FORMAT, "bad llama3 rope_scaling in '%s'", what);
    return STATUS_OK;
}

int64_t model_param_count(const Model *m) {
    int64_t n = tensor_numel(&m->tok_emb) + tensor_numel(&m->final_norm);
    if (!m->cfg.tied_embeddings) n += tensor_numel(&m->lm_head);
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const LlamaLayer *ly = &m->layers[l];
        const Tensor *ts[] = {&ly->attn_norm, &ly->wq,     &ly->wk,   &ly->wv,
                              &ly->bq,        &ly->bk,     &ly->bv,   &ly->wo,
                              &ly->ffn_norm,  &ly->w_gate, &ly->w_up, &ly->w_down};
        for (size_t i = 0; i < ARRAY_LEN(ts); i++)
            if (ts[i]->data || ts[i]->gptq) n += tensor_numel(ts[i]); // packed: shape (N, K)
    }
    return n;
}

void rope_permute_rows(void *w, int n_head, int head_dim, size_t row_bytes, bool to_hf) {
    int half = head_dim / 2;
    size_t head_bytes = (size_t)head_dim * row_bytes;
    unsigned char *tmp = xmalloc(head_bytes);
    for (int h = 0; h < n_head; h++) {
        unsigned char *base = (unsigned char *)w + (size_t)h * head_bytes;
        memcpy(tmp, base, head_bytes);
        for (int i = 0; i < half; i++)
            for (int p = 0; p < 2; p++) {
                size_t inter = (size_t)(2 * i + p), hf = (size_t)(p * half + i);
                size_t dst = to_hf ? hf : inter, src = to_hf ? inter : hf;
                memcpy(base + dst * row_bytes, tmp + src * row_bytes, row_bytes);
            }
    }
    free(tmp);
}

/* ---- llama2.c checkpoints ---------------------------------------------------- */

// Sets a 1-D or 2-D F32 view at *cursor and advances it.
static void take_f32(Tensor *t, const float **cursor, int64_t rows, int64_t cols) {
    t->dtype = DTYPE_F32;
    t->ndim = cols > 0 ? 2 : 1;
    t->shape[0] = rows;
    t->shape[1] = cols > 0 ? cols : 0;
    t->data = (void *)*cursor;
    *cursor += rows * (cols > 0 ? cols : 1);
}

// Copies q/k weights into owned buffers in HF row order.
static Status permute_qk_owned(Model *m, Tensor *t, int n_head) {
    size_t bytes = (size_t)tensor_numel(t) * 4;
    void *buf = model_alloc(m, bytes);
    if (!buf) return STATUS_ERR_NOMEM;
    memcpy(buf, t->data, bytes);
    rope_permute_rows(buf, n_head, m->cfg.head_dim, (size_t)t->shape[1] * 4, true);
    t->data = buf;
    return STATUS_OK;
}

// Expected float count of a legacy checkpoint body.
static uint64_t llama2c_legacy_floats(const LlamaConfig *c, bool shared) {
    uint64_t D = (uint64_t)c->dim, F = (uint64_t)c->hidden_dim, L = (uint64_t)c->n_layers;
    uint64_t V = (uint64_t)c->vocab_size, HD = (uint64_t)c->head_dim;
    uint64_t QD = (uint64_t)c->n_heads * HD, KD = (uint64_t)c->n_kv_heads * HD;
    uint64_t n = V * D + L * (D + QD * D + 2 * KD * D + D * QD + D + 3 * F * D) + D;
    n += (uint64_t)c->max_seq_len * HD; // freq_cis_real + freq_cis_imag: 2 * T * HD/2
    if (!shared) n += V * D;
    return n;
}

static Status llama2c_read_config(LlamaConfig *c, const int32_t *h, const char *path,
                                  bool *shared) {
    memset(c, 0, sizeof *c);
    snprintf(c->arch, sizeof c->arch, "llama");
    c->dim = h[0];
    c->hidden_dim = h[1];
    c->n_layers = h[2];
    c->n_heads = h[3];
    c->n_kv_heads = h[4];
    *shared = h[5] > 0;
    c->vocab_size = h[5] > 0 ? h[5] : (h[5] == INT32_MIN ? 0 : -h[5]);
    c->max_seq_len = h[6];
    c->rope_theta = 10000.0f;
    c->norm_eps = 1e-5f;
    c->tied_embeddings = *shared;
    c->bos_id = 1;
    c->eos_id = 2;
    if (c->n_kv_heads <= 0 || c->max_seq_len <= 0)
        return fail(STATUS_ERR_FORMAT, "bad llama2.c header in '%s': n_kv_heads=%d seq_len=%d",
                    path, c->n_kv_heads, c->max_seq_len);
    return llama_config_validate(c, path);
}

static Status llama2c_alloc_layers(Model *m) {
    m->layers = calloc((size_t)m->cfg.n_layers, sizeof *m->layers);
    if (!m->layers) return fail(STATUS_ERR_NOMEM, "cannot allocate layer table");
    return STATUS_OK;
}

static Status llama2c_load_legacy(Model *m, const MappedFile *mf) {
    bool shared;
    Status s = llama2c_read_config(&m->cfg, (const int32_t *)mf->data, mf->path, &shared);
    if (s != STATUS_OK) return s;
    const LlamaConfig *c = &m->cfg;
    if (c->max_seq_len > (1 << 24))
        return fail(STATUS_ERR_FORMAT, "bad llama2.c header in '%s': seq_len %d out of range",
                    mf->path, c->max_seq_len);
    uint64_t want = 28 + 4 * llama2c_legacy_floats(c, shared);
    if (mf->size != want)
        return fail(
            STATUS_ERR_FORMAT,
            "'%s' is %zu bytes but its llama2.c header (dim=%d layers=%d vocab=%d) implies %llu "
            "(truncated or not a llama2.c checkpoint)",
            mf->path, mf->size, c->dim, c->n_layers, c->vocab_size, (unsigned long long)want);
    if ((s = llama2c_alloc_layers(m)) != STATUS_OK) return s;
    int64_t D = c->dim, F = c->hidden_dim, V = c->vocab_size, HD = c->head_dim;
    int64_t QD = c->n_heads * HD, KD = c->n_kv_heads * HD;
    const float *p = (const float *)(mf->data + 28);
    take_f32(&m->tok_emb, &p, V, D);
    // per-kind arrays, each covering all layers
    for (int l = 0; l < c->n_layers; l++)
        take_f32(&m->layers[l].attn_norm, &p, D, 0);
    for (int l = 0; l < c->n_layers; l++)
        take_f32(&m->layers[l].wq, &p, QD, D);
    for (int l = 0; l < c->n_layers; l++)
        take_f32(&m->layers[l].wk, &p, KD, D);
    for (int l = 0; l < c->n_layers; l++)
        take_f32(&m->layers[l].wv, &p, KD, D);
    for (int l = 0; l < c->n_layers; l++)
        take_f32(&m->layers[l].wo, &p, D, QD);
    for (int l = 0; l < c->n_layers; l++)
        take_f32(&m->layers[l].ffn_norm, &p, D, 0);
    for (int l = 0; l < c->n_layers; l++)
        take_f32(&m->layers[l].w_gate, &p, F, D);
    for (int l = 0; l < c->n_layers; l++)
        take_f32(&m->layers[l].w_down, &p, D, F);
    for (int l = 0; l < c->n_layers; l++)
        take_f32(&m->layers[l].w_up, &p, F, D);
    take_f32(&m->final_norm, &p, D, 0);
    p += c->max_seq_len * HD; // skip the precomputed freq_cis tables (recomputed at run time)
    if (shared)
        m->lm_head = m->tok_emb;
    else
        take_f32(&m->lm_head, &p, V, D);
    return STATUS_OK;
}

typedef struct {
    Tensor *t;
    int64_t rows, cols;
} MatSlot;

static Status llama2c_take_v12(Model *m, const MappedFile *mf, int version, int gs, MatSlot *mats,
                               int nm, Tensor **norms, int nn);

// Version 1 (fp32) and version 2 (Q8_0 groups) files of llama2.c export.py.
static Status llama2c_load_v12(Model *m, const MappedFile *mf) {
    const unsigned char *d = mf->data;
    if (mf->size < 256)
        return fail(STATUS_ERR_FORMAT, "'%s' is truncated: llama2.c header needs 256 bytes",
                    mf->path);
    int32_t version, h[7], gs = 0;
    memcpy(&version, d + 4, 4);
    memcpy(h, d + 8, 28);
    if (version != 1 && version != 2)
        return fail(STATUS_ERR_UNSUPPORTED,
                    "'%s': llama2.c checkpoint version %d is not supported (1 or 2)", mf->path,
                    version);
    bool shared = d[36] != 0, dummy;
    // export.py writes a positive vocab_size; tolerate a negative one (INT32_MIN has no
    // positive twin: llama2c_read_config rejects it as vocab 0)
    if (h[5] < 0 && h[5] != INT32_MIN) h[5] = -h[5];
    Status s = llama2c_read_config(&m->cfg, h, mf->path, &dummy);
    if (s != STATUS_OK) return s;
    m->cfg.tied_embeddings = shared;
    if (version == 2) {
        memcpy(&gs, d + 37, 4);
        if (gs <= 0 || gs > (1 << 20))
            return fail(STATUS_ERR_FORMAT, "'%s': bad Q8_0 group size %d", mf->path, gs);
    }
    const LlamaConfig *c = &m->cfg;
    int64_t D = c->dim, F = c->hidden_dim, V = c->vocab_size, HD = c->head_dim, L = c->n_layers;
    int64_t QD = c->n_heads * HD, KD = c->n_kv_heads * HD;
    if ((s = llama2c_alloc_layers(m)) != STATUS_OK) return s;
    // tensors in file order: norms (fp32 always), then the matrices
    MatSlot *mats = xmalloc((size_t)(8 * L + 2) * sizeof *mats);
    Tensor **norms = xmalloc((size_t)(2 * L + 1) * sizeof *norms);
    int nm = 0, nn = 0;
    for (int l = 0; l < L; l++)
        norms[nn++] = &m->layers[l].attn_norm;
    for (int l = 0; l < L; l++)
        norms[nn++] = &m->layers[l].ffn_norm;
    norms[nn++] = &m->final_norm;
    mats[nm++] = (MatSlot){&m->tok_emb, V, D};
    for (int l = 0; l < L; l++)
        mats[nm++] = (MatSlot){&m->layers[l].wq, QD, D};
    for (int l = 0; l < L; l++)
        mats[nm++] = (MatSlot){&m->layers[l].wk, KD, D};
    for (int l = 0; l < L; l++)
        mats[nm++] = (MatSlot){&m->layers[l].wv, KD, D};
    for (int l = 0; l < L; l++)
        mats[nm++] = (MatSlot){&m->layers[l].wo, D, QD};
    for (int l = 0; l < L; l++)
        mats[nm++] = (MatSlot){&m->layers[l].w_gate, F, D};
    for (int l = 0; l < L; l++)
        mats[nm++] = (MatSlot){&m->layers[l].w_down, D, F};
    for (int l = 0; l < L; l++)
        mats[nm++] = (MatSlot){&m->layers[l].w_up, F, D};
    if (!shared) mats[nm++] = (MatSlot){&m->lm_head, V, D};
    s = llama2c_take_v12(m, mf, version, gs, mats, nm, norms, nn);
    free(mats);
    free(norms);
    if (s == STATUS_OK && shared) m->lm_head = m->tok_emb;
    return s;
}

static Status llama2c_take_v12(Model *m, const MappedFile *mf, int version, int gs, MatSlot *mats,
                               int nm, Tensor **norms, int nn) {
    const unsigned char *d = mf->data;
    int64_t D = m->cfg.dim;
    // size check before touching data
    uint64_t need = 256 + (uint64_t)(nn - 1) * (uint64_t)D * 4 + (uint64_t)D * 4;
    for (int i = 0; i < nm; i++) {
        uint64_t n = (uint64_t)mats[i].rows * (uint64_t)mats[i].cols;
        if (version == 1)
            need += 4 * n;
        else {
            if (n % (uint64_t)gs)
                return fail(STATUS_ERR_FORMAT,
                            "'%s': tensor size %llu not a multiple of group size %d", mf->path,
                            (unsigned long long)n, gs);
            need += n + 4 * (n / (uint64_t)gs);
        }
    }
    if (mf->size < need)
        return fail(STATUS_ERR_FORMAT, "'%s' is truncated: %zu bytes, header implies at least %llu",
                    mf->path, mf->size, (unsigned long long)need);
    const float *p = (const float *)(d + 256);
    for (int i = 0; i < nn; i++)
        take_f32(norms[i], &p, D, 0);
    const unsigned char *q = (const unsigned char *)p;
    for (int i = 0; i < nm; i++) {
        int64_t n = mats[i].rows * mats[i].cols;
        if (version == 1) {
            const float *pf = (const float *)q;
            take_f32(mats[i].t, &pf, mats[i].rows, mats[i].cols);
            q = (const unsigned char *)pf;
            continue;
        }
        float *w = model_alloc(m, (size_t)n * 4);
        if (!w) return STATUS_ERR_NOMEM;
        const int8_t *qi = (const int8_t *)q;
        const unsigned char *sc = q + n;
        for (int64_t j = 0; j < n; j++) {
            float scale;
            memcpy(&scale, sc + 4 * (j / gs), 4);
            w[j] = (float)qi[j] * scale;
        }
        q += n + 4 * (n / gs);
        Tensor *t = mats[i].t;
        *t = (Tensor){
            .dtype = DTYPE_F32, .ndim = 2, .shape = {mats[i].rows, mats[i].cols}, .data = w};
    }
    return STATUS_OK;
}

Status model_load_llama2c(Model *m, const char *path) {
    model_init(m);
    m->source = xstrdup(path);
    MappedFile *mf = &m->files[m->n_files++];
    Status s = mapped_file_open(mf, path);
    if (s != STATUS_OK) goto out;
    if (mf->size < 28) {
        s = fail(STATUS_ERR_FORMAT, "'%s' is too short (%zu bytes) for a llama2.c checkpoint", path,
                 mf->size);
        goto out;
    }
    uint32_t magic;
    memcpy(&magic, mf->data, 4);
    s = magic == 0x616b3432u ? llama2c_load_v12(m, mf) : llama2c_load_legacy(m, mf);
    if (s != STATUS_OK) goto out;
    // llama2.c stores q/k in Meta's interleaved order; convert to HF order
    for (int l = 0; l < m->cfg.n_layers && s == STATUS_OK; l++) {
        s = permute_qk_owned(m, &m->layers[l].wq, m->cfg.n_heads);
        if (s == STATUS_OK) s = permute_qk_owned(m, &m->layers[l].wk, m->cfg.n_kv_heads);
    }
out:
    if (s != STATUS_OK) model_release(m);
    return s;
}

/* ---- dispatch --------------------------------------------------------------- */

Status model_load(Model *m, const char *path, const ModelLoadOptions *opts) {
    ModelLoadOptions def = {0};
    if (!opts) opts = &def;
    ModelFileKind kind;
    Status s = model_detect_kind(path, &kind);
    if (s != STATUS_OK) return s;
    switch (kind) {
    case MODEL_FILE_LLAMA2C: s = model_load_llama2c(m, path); break;
    case MODEL_FILE_GGUF: s = model_load_gguf(m, path); break;
    case MODEL_FILE_HF: // a GPTQ checkpoint directory loads packed (quant/gptq_model.h)
        s = gptq_model_is_checkpoint(path) ? gptq_model_load(m, path) : model_load_hf(m, path);
        break;
    default: return fail(STATUS_ERR_FORMAT, "cannot tell the format of '%s'", path);
    }
    if (s != STATUS_OK) return s;
    if (opts->no_tokenizer) return STATUS_OK;
    s = model_load_tokenizer(m, path, kind, opts->tokenizer_path);
    if (s != STATUS_OK) model_release(m);
    return s;
}
