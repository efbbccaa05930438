/*
 * lora.c - LoRA adapters: init, forward/backward of the low-rank path, merge, and PEFT
 * adapter files (see lora.h).
 */
#include "train/lora.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "core/dtype.h"
#include "core/fileio.h"
#include "core/json_file.h"
#include "model/safetensors.h"
#include "tensor/gemm.h"

static const char *const lora_names[LORA_MODULE_COUNT] = {
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
static const char *const lora_short[LORA_MODULE_COUNT] = {"q", "k", "v", "o", "gate", "up", "down"};

const char *lora_module_name(LoraModule m) { return lora_names[m]; }
const char *lora_module_parent(LoraModule m) { return m <= LORA_O ? "self_attn" : "mlp"; }

LoraConfig lora_config_defaults(void) {
    LoraConfig c = {.rank = 8,
                    .lora_alpha = 8.0f,
                    .use_rslora = false,
                    .dropout = 0.0f,
                    .targets = LORA_ALL_MODULES};
    return c;
}

Status lora_parse_targets(const char *list, unsigned *mask) {
    *mask = 0;
    if (!strcmp(list, "all") || !strcmp(list, "all-linear")) {
        *mask = LORA_ALL_MODULES;
        return STATUS_OK;
    }
    char *copy = xstrdup(list), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int found = -1;
        for (int m = 0; m < LORA_MODULE_COUNT; m++)
            if (!strcmp(tok, lora_names[m]) || !strcmp(tok, lora_short[m])) found = m;
        if (found < 0) {
            Status s =
                fail(STATUS_ERR_ARG,
                     "unknown LoRA target module '%s' (expected q, k, v, o, gate, up, down)", tok);
            free(copy);
            return s;
        }
        *mask |= 1u << found;
    }
    free(copy);
    if (!*mask) return fail(STATUS_ERR_ARG, "empty LoRA target list '%s'", list);
    return STATUS_OK;
}

void lora_module_shape(const LlamaConfig *c, LoraModule m, int *in, int *out) {
    int qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    switch (m) {
    case LORA_Q:
        *in = c->dim;
        *out = qd;
        break;
    case LORA_K:
    case LORA_V:
        *in = c->dim;
        *out = kvd;
        break;
    case LORA_O:
        *in = qd;
        *out = c->dim;
        break;
    case LORA_GATE:
    case LORA_UP:
        *in = c->dim;
        *out = c->hidden_dim;
        break;
    case LORA_DOWN:
        *in = c->hidden_dim;
        *out = c->dim;
        break;
    default: CHECK(0);
    }
}

double lora_kaiming_bound(int in) {
    // torch.nn.init.kaiming_uniform_(a=sqrt(5)): gain = sqrt(2 / (1 + a^2)),
    // std = gain / sqrt(fan_in), bound = sqrt(3) * std  (= 1/sqrt(fan_in))
    double a = sqrt(5.0), gain = sqrt(2.0 / (1.0 + a * a));
    double std = gain / sqrt((double)in);
    return sqrt(3.0) * std;
}

static float lora_scaling(const LoraConfig *c) {
    return c->use_rslora ? (float)(c->lora_alpha / sqrt((double)c->rank))
                         : (float)((double)c->lora_alpha / c->rank);
}

// Lays out the adapters over the slabs (params/grads already allocated or NULL to count).
static int64_t lora_layout(LoraModel *lm, const LlamaConfig *c) {
    int64_t off = 0;
    int R = lm->cfg.rank;
    for (int l = 0; l < c->n_layers; l++)
        for (int m = 0; m < LORA_MODULE_COUNT; m++) {
            LoraAdapter *ad = &lm->ad[l * LORA_MODULE_COUNT + m];
            memset(ad, 0, sizeof *ad);
            if (!(lm->cfg.targets & (1u << m))) continue;
            lora_module_shape(c, (LoraModule)m, &ad->in, &ad->out);
            ad->rank = R;
            if (lm->params) {
                ad->a = lm->params + off;
                ad->da = lm->grads + off;
                ad->b = lm->params + off + (int64_t)R * ad->in;
                ad->db = lm->grads + off + (int64_t)R * ad->in;
            }
            off += (int64_t)R * ad->in + (int64_t)ad->out * R;
        }
    return off;
}

Status lora_init(LoraModel *lm, const LlamaConfig *c, const LoraConfig *cfg, Rng *rng) {
    memset(lm, 0, sizeof *lm);
    if (cfg->rank <= 0 || cfg->rank > 4096)
        return fail(STATUS_ERR_ARG, "LoRA rank %d out of range 1..4096", cfg->rank);
    if (!(cfg->lora_alpha > 0) || !isfinite(cfg->lora_alpha))
        return fail(STATUS_ERR_ARG, "LoRA alpha %g must be a positive number",
                    (double)cfg->lora_alpha);
    if (!(cfg->dropout >= 0.0f && cfg->dropout < 1.0f))
        return fail(STATUS_ERR_ARG, "LoRA dropout %g out of range [0, 1)", (double)cfg->dropout);
    if (!(cfg->targets & LORA_ALL_MODULES)) return fail(STATUS_ERR_ARG, "no LoRA target modules");
    lm->cfg = *cfg;
    lm->scaling = lora_scaling(cfg);
    lm->n_layers = c->n_layers;
    lm->ad = xcalloc((size_t)c->n_layers * LORA_MODULE_COUNT, sizeof(LoraAdapter));
    lm->n_params = lora_layout(lm, c);
    lm->params = calloc((size_t)lm->n_params, sizeof(float));
    lm->grads = calloc((size_t)lm->n_params, sizeof(float));
    if (!lm->params || !lm->grads) {
        lora_release(lm);
        return fail(STATUS_ERR_NOMEM, "cannot allocate %lld LoRA parameters",
                    (long long)lm->n_params);
    }
    lora_layout(lm, c);
    for (int i = 0; i < c->n_layers * LORA_MODULE_COUNT; i++) {
        LoraAdapter *ad = &lm->ad[i];
        if (!ad->a) continue;
        double bound = lora_kaiming_bound(ad->in);
        // uniform(-bound, bound) like torch's uniform_: from + (to - from) * u
        for (int64_t j = 0; j < (int64_t)cfg->rank * ad->in; j++)
            ad->a[j] = (float)(-bound + 2 * bound * rng_uniform(rng));
    }
    return STATUS_OK;
}

void lora_release(LoraModel *lm) {
    free(lm->ad);
    free(lm->params);
    free(lm->grads);
    memset(lm, 0, sizeof *lm);
}

LoraAdapter *lora_get(const LoraModel *lm, int layer, LoraModule m) {
    if (!lm || !lm->ad) return NULL;
    LoraAdapter *ad = &lm->ad[layer * LORA_MODULE_COUNT + m];
    return ad->a ? ad : NULL;
}

void lora_zero_grad(LoraModel *lm) { memset(lm->grads, 0, (size_t)lm->n_params * sizeof(float)); }

/* ---- Forward / backward ------------------------------------------------------------ */

void lora_forward(float *out, float *u, const float *x, const LoraAdapter *ad, float scaling,
                  int64_t N) {
    int R = ad->rank, in = ad->in, o = ad->out;
    // u (N, R) = x (N, in) @ A^T
    gemm_f32(false, true, (int)N, R, in, 1.0f, x, in, ad->a, in, 0.0f, u, R);
    // out (N, out) += scaling * u @ B^T
    gemm_f32(false, true, (int)N, o, R, scaling, u, R, ad->b, R, 1.0f, out, o);
}

void lora_backward(float *dx, float *du, const float *dout, const float *x, const float *u,
                   LoraAdapter *ad, float scaling, int64_t N) {
    int in = ad->in, o = ad->out, R = ad->rank;
    // dB (out, R) += scaling * dout^T (out, N) @ u (N, R)
    gemm_f32(true, false, o, R, (int)N, scaling, dout, o, u, R, 1.0f, ad->db, R);
    // du (N, R) = scaling * dout (N, out) @ B (out, R)
    gemm_f32(false, false, (int)N, R, o, scaling, dout, o, ad->b, R, 0.0f, du, R);
    // dA (R, in) += du^T (R, N) @ x (N, in)
    gemm_f32(true, false, R, in, (int)N, 1.0f, du, R, x, in, 1.0f, ad->da, in);
    // dx (N, in) += du (N, R) @ A (R, in)
    if (dx) gemm_f32(false, false, (int)N, in, R, 1.0f, du, R, ad->a, in, 1.0f, dx, in);
}

void lora_dropout_mask(float *ms, int64_t n, float p, Rng *rng) {
    float keep = 1.0f / (1.0f - p);
    for (int64_t i = 0; i < n; i++)
        ms[i] = rng_float(rng) < p ? 0.0f : keep;
}

void lora_forward_dropout(float *out, float *u, float *xd, const float *x, const float *ms,
                          const LoraAdapter *ad, float scaling, int64_t N) {
    int64_t n = N * ad->in;
    for (int64_t i = 0; i < n; i++)
        xd[i] = x[i] * ms[i];
    lora_forward(out, u, xd, ad, scaling, N);
}

void lora_backward_dropout(float *dx, float *du, float *xd, const float *dout, const float *x,
                           const float *ms, const float *u, LoraAdapter *ad, float scaling,
                           int64_t N) {
    int in = ad->in, R = ad->rank;
    int64_t n = N * in;
    for (int64_t i = 0; i < n; i++)
        xd[i] = x[i] * ms[i];
    // dB, du, dA exactly as without dropout but with the dropped input
    lora_backward(NULL, du, dout, xd, u, ad, scaling, N);
    if (!dx) return;
    // xd <- du A (N, in), then dx += xd * ms
    gemm_f32(false, false, (int)N, in, R, 1.0f, du, R, ad->a, in, 0.0f, xd, in);
    for (int64_t i = 0; i < n; i++)
        dx[i] += xd[i] * ms[i];
}

void lora_merge_weight(float *w, const LoraAdapter *ad, float scaling) {
    int in = ad->in, R = ad->rank;
    // W (out, in) += scaling * B (out, R) @ A (R, in)
    gemm_f32(false, false, ad->out, in, R, scaling, ad->b, R, ad->a, in, 1.0f, w, in);
}

Tensor *lora_model_weight(LlamaLayer *ly, LoraModule m) {
    switch (m) {
    case LORA_Q: return &ly->wq;
    case LORA_K: return &ly->wk;
    case LORA_V: return &ly->wv;
    case LORA_O: return &ly->wo;
    case LORA_GATE: return &ly->w_gate;
    case LORA_UP: return &ly->w_up;
    case LORA_DOWN: return &ly->w_down;
    default: CHECK(0);
    }
    return NULL;
}

Status lora_merge_model(const LoraModel *lm, Model *m) {
    if (lm->n_layers != m->cfg.n_layers)
        return fail(STATUS_ERR_ARG, "LoRA has %d layers, model '%s' has %d", lm->n_layers,
                    m->source ? m->source : "?", m->cfg.n_layers);
    // check every shape before changing anything
    for (int l = 0; l < lm->n_layers; l++)
        for (int k = 0; k < LORA_MODULE_COUNT; k++) {
            const LoraAdapter *ad = lora_get(lm, l, (LoraModule)k);
            const Tensor *t = lora_model_weight(&m->layers[l], (LoraModule)k);
            if (ad && (t->ndim != 2 || !t->data || t->shape[0] != ad->out || t->shape[1] != ad->in))
                return fail(STATUS_ERR_ARG, "LoRA %s of layer %d is (%d, %d), the weight is not",
                            lora_names[k], l, ad->out, ad->in);
        }
    for (int l = 0; l < lm->n_layers; l++)
        for (int k = 0; k < LORA_MODULE_COUNT; k++) {
            const LoraAdapter *ad = lora_get(lm, l, (LoraModule)k);
            if (!ad) continue;
            Tensor *t = lora_model_weight(&m->layers[l], (LoraModule)k);
            int64_t n = tensor_numel(t);
            float *w = model_alloc(m, (size_t)n * sizeof(float));
            if (!w)
                return fail(STATUS_ERR_NOMEM, "cannot allocate a merged weight of %lld floats",
                            (long long)n);
            dtype_to_f32(w, t->data, t->dtype, n);
            lora_merge_weight(w, ad, lm->scaling);
            t->data = w;
            t->dtype = DTYPE_F32;
        }
    return STATUS_OK;
}

/* ---- PEFT files --------------------------------------------------------------------- */

static void peft_key(char *buf, size_t n, int layer, LoraModule m, char ab) {
    snprintf(buf, n, "base_model.model.model.layers.%d.%s.%s.lora_%c.weight", layer,
             lora_module_parent(m), lora_names[m], ab);
}

Status lora_save_peft(const LoraModel *lm, const char *dir, const char *base_model) {
    Status s = dir_create(dir);
    if (s != STATUS_OK) return s;
    json_t *cfg = json_object(), *targets = json_array();
    for (int m = 0; m < LORA_MODULE_COUNT; m++)
        if (lm->cfg.targets & (1u << m)) json_array_append_new(targets, json_string(lora_names[m]));
    json_object_set_new(cfg, "peft_type", json_string("LORA"));
    json_object_set_new(cfg, "task_type", json_string("CAUSAL_LM"));
    json_object_set_new(cfg, "base_model_name_or_path",
                        base_model ? json_string(base_model) : json_null());
    json_object_set_new(cfg, "r", json_integer(lm->cfg.rank));
    json_object_set_new(cfg, "lora_alpha", json_real(lm->cfg.lora_alpha));
    json_object_set_new(cfg, "lora_dropout", json_real(lm->cfg.dropout));
    json_object_set_new(cfg, "target_modules", targets);
    json_object_set_new(cfg, "bias", json_string("none"));
    json_object_set_new(cfg, "use_rslora", json_boolean(lm->cfg.use_rslora));
    json_object_set_new(cfg, "fan_in_fan_out", json_false());
    json_object_set_new(cfg, "init_lora_weights", json_true());
    json_object_set_new(cfg, "inference_mode", json_true());
    json_object_set_new(cfg, "modules_to_save", json_null());
    char *text = json_dumps(cfg, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(cfg);
    char *cfg_path = path_join(dir, "adapter_config.json");
    s = file_write_all(cfg_path, text, strlen(text));
    free(text);
    free(cfg_path);
    if (s != STATUS_OK) return s;

    SafeWriter w;
    safewriter_init(&w);
    char key[256];
    int R = lm->cfg.rank;
    for (int l = 0; l < lm->n_layers; l++)
        for (int m = 0; m < LORA_MODULE_COUNT; m++) {
            const LoraAdapter *ad = lora_get(lm, l, (LoraModule)m);
            if (!ad) continue;
            int64_t sa[2] = {R, ad->in}, sb[2] = {ad->out, R};
            peft_key(key, sizeof key, l, (LoraModule)m, 'A');
            safewriter_add(&w, key, ST_F32, 2, sa, ad->a);
            peft_key(key, sizeof key, l, (LoraModule)m, 'B');
            safewriter_add(&w, key, ST_F32, 2, sb, ad->b);
        }
    safewriter_meta(&w, "format", "pt");
    char *st_path = path_join(dir, "adapter_model.safetensors");
    s = safewriter_write(&w, st_path);
    free(st_path);
    safewriter_release(&w);
    return s;
}

// Copies a safetensors tensor of shape (d0, d1) into dst as F32 and marks it used.
static Status lora_read_tensor(float *dst, const SafeTensors *st, const char *name, int64_t d0,
                               int64_t d1, const char *path, bool *used) {
    const SafeTensor *t = safetensors_find(st, name);
    if (!t)
        return fail(STATUS_ERR_FORMAT,
                    "missing tensor '%s' in '%s' (an adapter for another model or other modules?)",
                    name, path);
    used[t - st->tensors] = true;
    if (t->ndim != 2 || t->shape[0] != d0 || t->shape[1] != d1)
        return fail(STATUS_ERR_FORMAT,
                    "tensor '%s' in '%s' has the wrong shape (expected [%lld, %lld])", name, path,
                    (long long)d0, (long long)d1);
    DType dt;
    switch (t->dtype) {
    case ST_F32: dt = DTYPE_F32; break;
    case ST_F16: dt = DTYPE_F16; break;
    case ST_BF16: dt = DTYPE_BF16; break;
    default:
        return fail(STATUS_ERR_FORMAT, "tensor '%s' in '%s': unsupported dtype %s", name, path,
                    safe_dtype_name(t->dtype));
    }
    dtype_to_f32(dst, t->data, dt, d0 * d1);
    return STATUS_OK;
}

// The PEFT features that change what an adapter computes and that we do not implement: an
// adapter using one is refused by name (rather than merged as if it were plain LoRA).
// Returns the offending key, or NULL. Absent, null, false, "none" and empty values pass.
static const char *peft_unsupported(json_t *j) {
    static const char *const keys[] = {
        "use_dora",      // magnitude vectors: another merge
        "rank_pattern",  // per-module ranks
        "alpha_pattern", // per-module scaling
        "layers_to_transform",
        "layers_pattern",    // adapters on some layers only
        "modules_to_save",   // whole modules (e.g. lm_head) saved beside the adapter
        "fan_in_fan_out",    // Conv1D-style weights (GPT-2), transposed
        "lora_bias",         // a bias on lora_B
        "target_parameters", // adapters on parameters rather than modules
        "use_qalora",
        "trainable_token_indices", // token embeddings trained beside the adapter
        "layer_replication",       // layers duplicated before the adapters
    };
    for (size_t i = 0; i < ARRAY_LEN(keys); i++) {
        json_t *v = json_object_get(j, keys[i]);
        if (!v || json_is_null(v) || json_is_false(v)) continue;
        if ((json_is_object(v) && json_object_size(v) == 0) ||
            (json_is_array(v) && json_array_size(v) == 0))
            continue;
        return keys[i];
    }
    json_t *b = json_object_get(j, "bias"); // trainable biases of the base layers
    if (b && !json_is_null(b) && !(json_is_string(b) && !strcmp(json_string_value(b), "none")))
        return "bias";
    return NULL;
}

Status lora_load_peft(LoraModel *lm, const LlamaConfig *c, const char *dir) {
    memset(lm, 0, sizeof *lm);
    char *cfg_path = path_join(dir, "adapter_config.json");
    json_t *j;
    Status js = json_read_object(&j, cfg_path, 0);
    if (js != STATUS_OK) {
        free(cfg_path);
        return js;
    }
    LoraConfig lc = lora_config_defaults();
    json_t *r = json_object_get(j, "r"), *al = json_object_get(j, "lora_alpha");
    json_t *rs = json_object_get(j, "use_rslora"), *tm = json_object_get(j, "target_modules");
    json_t *dr = json_object_get(j, "lora_dropout");
    Status s = STATUS_OK;
    const char *unsup = peft_unsupported(j);
    if (unsup) {
        s = fail(STATUS_ERR_UNSUPPORTED,
                 "'%s' uses PEFT's '%s', which edgeforge does not implement (plain LoRA or "
                 "rsLoRA on whole modules of every layer only)",
                 cfg_path, unsup);
        goto out;
    }
    if (!json_is_integer(r) || !json_is_number(al)) {
        s = fail(STATUS_ERR_FORMAT, "'%s' lacks an integer 'r' or a numeric 'lora_alpha'",
                 cfg_path);
        goto out;
    }
    lc.rank = (int)json_integer_value(r);
    lc.lora_alpha = (float)json_number_value(al);
    lc.use_rslora = json_is_true(rs);
    // dropout only matters for training; a loaded adapter is used without it
    (void)dr;
    lc.dropout = 0.0f;
    if (json_is_array(tm)) {
        // entries are module names ("q_proj"), suffixes of module paths (PEFT matches by
        // suffix) or, as PEFT writes "all-linear" for models with fewer than 20 linears, full
        // paths ("model.layers.0.self_attn.q_proj"), which must then cover every layer (an
        // adapter on some layers only is not merged)
        lc.targets = 0;
        unsigned *paths = xcalloc((size_t)c->n_layers, sizeof *paths), in_paths = 0;
        size_t i;
        json_t *v;
        json_array_foreach(tm, i, v) {
            const char *name = json_is_string(v) ? json_string_value(v) : NULL;
            const char *dot = name ? strrchr(name, '.') : NULL, *at = NULL;
            unsigned mk;
            if (dot && (at = strstr(name, "layers."))) {
                char *end;
                long l = strtol(at + strlen("layers."), &end, 10);
                if (*end == '.' && l >= 0 && l < c->n_layers &&
                    lora_parse_targets(dot + 1, &mk) == STATUS_OK) {
                    paths[l] |= mk;
                    in_paths |= mk;
                    continue;
                }
            } else if (name && lora_parse_targets(dot ? dot + 1 : name, &mk) == STATUS_OK) {
                lc.targets |= mk; // "q_proj", or a suffix such as "self_attn.q_proj"
                continue;
            }
            free(paths);
            s = fail(STATUS_ERR_FORMAT,
                     "'%s': unsupported entry %s%s%s in 'target_modules' (a module name, or a "
                     "path into one of the model's %d layers)",
                     cfg_path, name ? "'" : "", name ? name : "(not a string)", name ? "'" : "",
                     c->n_layers);
            goto out;
        }
        for (int l = 0; l < c->n_layers && s == STATUS_OK; l++)
            if ((paths[l] & in_paths) != in_paths)
                s = fail(STATUS_ERR_UNSUPPORTED,
                         "'%s': 'target_modules' names some modules in some layers only (layer "
                         "%d lacks one); adapters on a subset of layers are not merged",
                         cfg_path, l);
        free(paths);
        if (s != STATUS_OK) goto out;
        lc.targets |= in_paths;
    } else if (json_is_string(tm)) {
        if (lora_parse_targets(json_string_value(tm), &lc.targets) != STATUS_OK) {
            s = fail(STATUS_ERR_FORMAT, "'%s': unsupported 'target_modules'", cfg_path);
            goto out;
        }
    }
    {
        Rng rng;
        rng_seed(&rng, 0);
        if ((s = lora_init(lm, c, &lc, &rng)) != STATUS_OK) {
            fail_context(s, "'%s'", cfg_path);
            goto out;
        }
    }
    {
        char *st_path = path_join(dir, "adapter_model.safetensors");
        SafeTensors st;
        s = safetensors_open(&st, st_path);
        if (s == STATUS_OK) {
            char key[256];
            bool *used = xcalloc((size_t)st.n_tensors + 1, sizeof *used);
            for (int l = 0; l < lm->n_layers && s == STATUS_OK; l++)
                for (int m = 0; m < LORA_MODULE_COUNT && s == STATUS_OK; m++) {
                    LoraAdapter *ad = lora_get(lm, l, (LoraModule)m);
                    if (!ad) continue;
                    peft_key(key, sizeof key, l, (LoraModule)m, 'A');
                    s = lora_read_tensor(ad->a, &st, key, lc.rank, ad->in, st_path, used);
                    if (s != STATUS_OK) break;
                    peft_key(key, sizeof key, l, (LoraModule)m, 'B');
                    s = lora_read_tensor(ad->b, &st, key, ad->out, lc.rank, st_path, used);
                }
            // a tensor left over is refused, not dropped: an adapter of a deeper model
            // would otherwise merge its first layers silently
            for (int i = 0; i < st.n_tensors && s == STATUS_OK; i++) {
                if (used[i]) continue;
                const char *name = st.tensors[i].name, *at = strstr(name, "layers.");
                int layer = at ? atoi(at + strlen("layers.")) : -1;
                if (layer >= lm->n_layers)
                    s = fail(STATUS_ERR_FORMAT,
                             "'%s' has tensor '%s', but this model has %d layers: the adapter "
                             "was made for a deeper model",
                             st_path, name, lm->n_layers);
                else
                    s = fail(STATUS_ERR_UNSUPPORTED,
                             "'%s' has tensor '%s', which a plain LoRA merge of the modules in "
                             "adapter_config.json does not use (other modules, embeddings, "
                             "biases?)",
                             st_path, name);
            }
            free(used);
            safetensors_close(&st);
        }
        free(st_path);
        if (s != STATUS_OK) lora_release(lm);
    }
out:
    json_decref(j);
    free(cfg_path);
    return s;
}
