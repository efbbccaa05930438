/*
 * model_hf.c - Hugging Face model directories, read and written.
 *
 * Reading: config.json (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM; the
 * transformers 4.x keys rope_theta/rope_scaling/torch_dtype and the 5.x keys
 * rope_parameters/dtype), generation_config.json when present (bos/eos ids), and the
 * weights from model.safetensors or model.safetensors.index.json (sharded). Tensors
 * stay where they are: every weight is a view into a memory-mapped shard, and the
 * mappings are kept in m->files. Every tensor's dtype and shape is checked against the
 * config; a missing, extra or mis-shaped tensor is an error naming it and its file.
 * Anything the forward pass would silently get wrong (sliding window actually used,
 * biases we do not model, other rope scalings, quantized checkpoints, other
 * activations) is refused with a message naming the setting.
 *
 * Writing: config.json (transformers-compatible LlamaForCausalLM or Qwen2ForCausalLM),
 * generation_config.json, model.safetensors with the weights converted to one dtype
 * (lm_head omitted when tied) and the tokenizer files. Everything goes into
 * "<dir>.tmp.<pid>" first, which is renamed to <dir> at the end, so a failure leaves
 * no output directory behind.
 *
 *   Model m;
 *   if (model_load_hf(&m, "models/tiny-llama") != STATUS_OK) ... status_msg() ...
 *   if (model_save_hf(&m, "out/tiny-llama-bf16", DTYPE_BF16) != STATUS_OK) ...
 *   model_release(&m);
 */
#include "model/model_io.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/common.h"
#include "core/json_file.h"
#include "model/safetensors.h"
#include "model/st_dir.h"
#include "model/tokenizer.h"

/* ---- config.json -------------------------------------------------------------- */

typedef struct {
    const char *arch;       // "architectures"[0]
    const char *model_type; // "model_type"
} HfArch;

static const HfArch hf_archs[] = {
    {"LlamaForCausalLM", "llama"},
    {"MistralForCausalLM", "mistral"},
    {"Qwen2ForCausalLM", "qwen2"},
};

// Reads an optional integer field into *out (left unchanged when absent or null).
static Status cfg_int(const json_t *root, const char *key, bool required, int *out,
                      const char *what) {
    const json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        if (required)
            return fail(STATUS_ERR_FORMAT, "'%s' lacks the required field '%s'", what, key);
        return STATUS_OK;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX)
        return fail(STATUS_ERR_FORMAT, "'%s': '%s' must be a non-negative integer", what, key);
    *out = (int)json_integer_value(v);
    return STATUS_OK;
}

// Reads an optional number (integer or real) into *out.
static Status cfg_float(const json_t *obj, const char *key, float *out, const char *what) {
    const json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) return STATUS_OK;
    if (!json_is_number(v))
        return fail(STATUS_ERR_FORMAT, "'%s': '%s' must be a number", what, key);
    double d = json_number_value(v);
    if (!isfinite(d) || fabs(d) > 3.0e38)
        return fail(STATUS_ERR_FORMAT, "'%s': '%s' is out of range", what, key);
    *out = (float)d;
    return STATUS_OK;
}

static Status cfg_bool(const json_t *root, const char *key, bool *out, const char *what) {
    const json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return STATUS_OK;
    if (!json_is_boolean(v))
        return fail(STATUS_ERR_FORMAT, "'%s': '%s' must be true or false", what, key);
    *out = json_is_true(v);
    return STATUS_OK;
}

// bos/eos ids: an integer, a list of integers (the first is kept) or null.
static Status cfg_token_id(const json_t *root, const char *key, int *out, const char *what) {
    const json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return STATUS_OK;
    if (json_is_array(v)) {
        if (json_array_size(v) == 0) return STATUS_OK;
        v = json_array_get(v, 0);
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX)
        return fail(STATUS_ERR_FORMAT, "'%s': '%s' must be a token id or a list of token ids", what,
                    key);
    *out = (int)json_integer_value(v);
    return STATUS_OK;
}

// Picks the architecture from "architectures" (or "model_type" alone).
static Status cfg_arch(const json_t *root, LlamaConfig *c, const char *what) {
    const json_t *ja = json_object_get(root, "architectures");
    const json_t *jt = json_object_get(root, "model_type");
    const char *arch = NULL, *type = NULL;
    if (ja && !json_is_null(ja)) {
        if (!json_is_array(ja) || json_array_size(ja) == 0 ||
            !json_is_string(json_array_get(ja, 0)))
            return fail(STATUS_ERR_FORMAT,
                        "'%s': 'architectures' must be a non-empty list of names", what);
        if (json_array_size(ja) > 1)
            return fail(STATUS_ERR_UNSUPPORTED,
                        "'%s' lists %zu architectures; only one is supported", what,
                        json_array_size(ja));
        arch = json_string_value(json_array_get(ja, 0));
    }
    if (jt && !json_is_null(jt)) {
        if (!json_is_string(jt))
            return fail(STATUS_ERR_FORMAT, "'%s': 'model_type' must be a string", what);
        type = json_string_value(jt);
    }
    if (!arch && !type)
        return fail(STATUS_ERR_FORMAT, "'%s' lacks both 'architectures' and 'model_type'", what);
    const HfArch *found = NULL;
    for (size_t i = 0; i < ARRAY_LEN(hf_archs); i++)
        if (arch ? strcmp(arch, hf_archs[i].arch) == 0 : strcmp(type, hf_archs[i].model_type) == 0)
            found = &hf_archs[i];
    if (!found)
        return fail(STATUS_ERR_UNSUPPORTED,
                    "'%s': architecture '%s' is not supported (LlamaForCausalLM, "
                    "MistralForCausalLM or Qwen2ForCausalLM)",
                    what, arch ? arch : type);
    if (type && strcmp(type, found->model_type) != 0)
        return fail(STATUS_ERR_FORMAT, "'%s': model_type '%s' does not match architecture '%s'",
                    what, type, found->arch);
    snprintf(c->arch, sizeof c->arch, "%s", found->model_type);
    return STATUS_OK;
}

// rope_scaling (4.x) or rope_parameters (5.x): none/"default" or "llama3"; also the theta.
static Status cfg_rope(const json_t *root, LlamaConfig *c, const char *what) {
    const json_t *rs = json_object_get(root, "rope_scaling");
    const json_t *rp = json_object_get(root, "rope_parameters");
    if (rs && json_is_null(rs)) rs = NULL;
    if (rp && json_is_null(rp)) rp = NULL;
    if (rs && !json_is_object(rs))
        return fail(STATUS_ERR_FORMAT, "'%s': 'rope_scaling' must be an object or null", what);
    if (rp && !json_is_object(rp))
        return fail(STATUS_ERR_FORMAT, "'%s': 'rope_parameters' must be an object or null", what);
    Status s;
    c->rope_theta = 10000.0f; // transformers' default for all three architectures
    if (rp && (s = cfg_float(rp, "rope_theta", &c->rope_theta, what)) != STATUS_OK) return s;
    if ((s = cfg_float(root, "rope_theta", &c->rope_theta, what)) != STATUS_OK) return s;
    if (!(c->rope_theta > 0))
        return fail(STATUS_ERR_FORMAT, "'%s': rope_theta must be positive", what);
    const json_t *sc = rs ? rs : rp;
    c->rope_scaling = ROPE_SCALING_NONE;
    if (!sc) return STATUS_OK;
    const json_t *jt = json_object_get(sc, "rope_type");
    if (!jt || json_is_null(jt)) jt = json_object_get(sc, "type");
    if (jt && !json_is_null(jt) && !json_is_string(jt))
        return fail(STATUS_ERR_FORMAT, "'%s': rope type must be a string", what);
    const char *type = jt && json_is_string(jt) ? json_string_value(jt) : "default";
    float partial = 1.0f;
    if ((s = cfg_float(sc, "partial_rotary_factor", &partial, what)) != STATUS_OK) return s;
    if ((s = cfg_float(root, "partial_rotary_factor", &partial, what)) != STATUS_OK) return s;
    if (partial != 1.0f)
        return fail(STATUS_ERR_UNSUPPORTED, "'%s': partial_rotary_factor %g is not supported", what,
                    (double)partial);
    if (strcmp(type, "default") == 0) return STATUS_OK;
    if (strcmp(type, "llama3") != 0)
        return fail(STATUS_ERR_UNSUPPORTED,
                    "'%s': rope scaling type '%s' is not supported (only llama3)", what, type);
    c->rope_scaling = ROPE_SCALING_LLAMA3;
    if ((s = cfg_float(sc, "factor", &c->rope_factor, what)) != STATUS_OK ||
        (s = cfg_float(sc, "low_freq_factor", &c->rope_low_freq_factor, what)) != STATUS_OK ||
        (s = cfg_float(sc, "high_freq_factor", &c->rope_high_freq_factor, what)) != STATUS_OK ||
        (s = cfg_int(sc, "original_max_position_embeddings", true, &c->rope_orig_max_pos, what)) !=
            STATUS_OK)
        return s;
    return STATUS_OK;
}

// Settings that change the computation in ways edgeforge does not implement.
static Status cfg_refuse_unsupported(const json_t *root, const LlamaConfig *c, const char *what) {
    const char *act_keys[] = {"hidden_act", "hidden_activation"};
    for (size_t i = 0; i < ARRAY_LEN(act_keys); i++) {
        const json_t *v = json_object_get(root, act_keys[i]);
        if (v && !json_is_null(v) &&
            (!json_is_string(v) || strcmp(json_string_value(v), "silu") != 0))
            return fail(STATUS_ERR_UNSUPPORTED, "'%s': %s '%s' is not supported (only silu)", what,
                        act_keys[i], json_is_string(v) ? json_string_value(v) : "?");
    }
    const json_t *q = json_object_get(root, "quantization_config");
    if (q && !json_is_null(q))
        return fail(STATUS_ERR_UNSUPPORTED,
                    "'%s': quantized checkpoints (quantization_config) are not supported", what);
    Status s;
    bool mlp_bias = false, attn_bias = false, use_sw = false;
    if ((s = cfg_bool(root, "mlp_bias", &mlp_bias, what)) != STATUS_OK) return s;
    if (mlp_bias) return fail(STATUS_ERR_UNSUPPORTED, "'%s': mlp_bias true is not supported", what);
    if ((s = cfg_bool(root, "attention_bias", &attn_bias, what)) != STATUS_OK) return s;
    // Llama/Mistral attention_bias adds an o_proj bias, which the model does not have
    if (attn_bias && strcmp(c->arch, "qwen2") != 0)
        return fail(STATUS_ERR_UNSUPPORTED,
                    "'%s': attention_bias true (o_proj bias) is not supported", what);
    int pretraining_tp = 1;
    if ((s = cfg_int(root, "pretraining_tp", false, &pretraining_tp, what)) != STATUS_OK) return s;
    // sliding-window attention: refused only where it changes the result
    if ((s = cfg_bool(root, "use_sliding_window", &use_sw, what)) != STATUS_OK) return s;
    const json_t *sw = json_object_get(root, "sliding_window");
    if (sw && !json_is_null(sw) && !json_is_integer(sw))
        return fail(STATUS_ERR_FORMAT, "'%s': 'sliding_window' must be an integer or null", what);
    bool sw_set = sw && json_is_integer(sw) && json_integer_value(sw) < c->max_seq_len;
    bool sw_used = strcmp(c->arch, "qwen2") == 0 ? use_sw : sw_set;
    if (sw_used)
        return fail(
            STATUS_ERR_UNSUPPORTED,
            "'%s': sliding_window %lld (shorter than max_position_embeddings %d) is not supported",
            what, sw ? (long long)json_integer_value(sw) : -1LL, c->max_seq_len);
    const json_t *lt = json_object_get(root, "layer_types");
    if (lt && !json_is_null(lt)) {
        if (!json_is_array(lt))
            return fail(STATUS_ERR_FORMAT, "'%s': 'layer_types' must be a list", what);
        size_t i;
        const json_t *e;
        json_array_foreach(lt, i, e) {
            if (!json_is_string(e) || strcmp(json_string_value(e), "full_attention") != 0)
                return fail(STATUS_ERR_UNSUPPORTED,
                            "'%s': layer_types[%zu] '%s' is not supported (only full_attention)",
                            what, i, json_is_string(e) ? json_string_value(e) : "?");
        }
    }
    return STATUS_OK;
}

static Status cfg_from_json(LlamaConfig *c, const json_t *root, const char *what) {
    memset(c, 0, sizeof *c);
    c->bos_id = c->eos_id = -1;
    if (!json_is_object(root)) return fail(STATUS_ERR_FORMAT, "'%s' is not a JSON object", what);
    Status s;
    if ((s = cfg_arch(root, c, what)) != STATUS_OK) return s;
    struct {
        const char *key;
        int *dst;
        bool required;
    } ints[] = {
        {"hidden_size", &c->dim, true},
        {"intermediate_size", &c->hidden_dim, true},
        {"num_hidden_layers", &c->n_layers, true},
        {"num_attention_heads", &c->n_heads, true},
        {"vocab_size", &c->vocab_size, true},
        {"num_key_value_heads", &c->n_kv_heads, false},
        {"head_dim", &c->head_dim, false},
        {"max_position_embeddings", &c->max_seq_len, false},
    };
    for (size_t i = 0; i < ARRAY_LEN(ints); i++)
        if ((s = cfg_int(root, ints[i].key, ints[i].required, ints[i].dst, what)) != STATUS_OK)
            return s;
    if (c->max_seq_len <= 0) c->max_seq_len = 2048; // transformers' LlamaConfig default
    c->norm_eps = 1e-6f;                            // transformers' default for all three
    if ((s = cfg_float(root, "rms_norm_eps", &c->norm_eps, what)) != STATUS_OK) return s;
    if (!(c->norm_eps > 0))
        return fail(STATUS_ERR_FORMAT, "'%s': rms_norm_eps must be positive", what);
    if ((s = cfg_rope(root, c, what)) != STATUS_OK) return s;
    if ((s = cfg_bool(root, "tie_word_embeddings", &c->tied_embeddings, what)) != STATUS_OK)
        return s;
    c->qkv_bias = strcmp(c->arch, "qwen2") == 0; // Qwen2 always has q/k/v biases
    if ((s = cfg_token_id(root, "bos_token_id", &c->bos_id, what)) != STATUS_OK) return s;
    if ((s = cfg_token_id(root, "eos_token_id", &c->eos_id, what)) != STATUS_OK) return s;
    const char *dkeys[] = {"torch_dtype", "dtype"};
    for (size_t i = 0; i < ARRAY_LEN(dkeys); i++) {
        const json_t *v = json_object_get(root, dkeys[i]);
        if (v && !json_is_null(v) && !json_is_string(v))
            return fail(STATUS_ERR_FORMAT, "'%s': '%s' must be a string", what, dkeys[i]);
    }
    if ((s = cfg_refuse_unsupported(root, c, what)) != STATUS_OK) return s;
    return llama_config_validate(c, what);
}

Status model_hf_parse_config(LlamaConfig *c, const char *text, size_t len, const char *what) {
    json_t *root;
    Status s = json_parse_buf(&root, text, len, JSON_REJECT_DUPLICATES, what);
    if (s != STATUS_OK) return s;
    s = cfg_from_json(c, root, what);
    json_decref(root);
    return s;
}

// generation_config.json overrides bos/eos (first id of a list).
static Status hf_read_generation_config(LlamaConfig *c, const char *dir) {
    char *path = path_join(dir, "generation_config.json");
    Status s = STATUS_OK;
    if (path_is_file(path)) {
        json_t *root;
        s = json_read_object(&root, path, JSON_REJECT_DUPLICATES);
        if (s == STATUS_OK) {
            s = cfg_token_id(root, "bos_token_id", &c->bos_id, path);
            if (s == STATUS_OK) s = cfg_token_id(root, "eos_token_id", &c->eos_id, path);
            json_decref(root);
        }
    }
    free(path);
    return s;
}

/* ---- weights ------------------------------------------------------------------ */

static Status hf_bind_layer(StDir *w, Model *m, int l) {
    const LlamaConfig *c = &m->cfg;
    LlamaLayer *ly = &m->layers[l];
    int64_t D = c->dim, F = c->hidden_dim, QD = (int64_t)c->n_heads * c->head_dim;
    int64_t KD = (int64_t)c->n_kv_heads * c->head_dim;
    struct {
        const char *suffix;
        Tensor *t;
        int64_t d0, d1;
    } tab[] = {
        {"input_layernorm.weight", &ly->attn_norm, D, 0},
        {"self_attn.q_proj.weight", &ly->wq, QD, D},
        {"self_attn.k_proj.weight", &ly->wk, KD, D},
        {"self_attn.v_proj.weight", &ly->wv, KD, D},
        {"self_attn.o_proj.weight", &ly->wo, D, QD},
        {"post_attention_layernorm.weight", &ly->ffn_norm, D, 0},
        {"mlp.gate_proj.weight", &ly->w_gate, F, D},
        {"mlp.up_proj.weight", &ly->w_up, F, D},
        {"mlp.down_proj.weight", &ly->w_down, D, F},
        {"self_attn.q_proj.bias", &ly->bq, QD, 0},
        {"self_attn.k_proj.bias", &ly->bk, KD, 0},
        {"self_attn.v_proj.bias", &ly->bv, KD, 0},
    };
    size_t n = c->qkv_bias ? ARRAY_LEN(tab) : ARRAY_LEN(tab) - 3;
    char name[128];
    for (size_t i = 0; i < n; i++) {
        snprintf(name, sizeof name, "model.layers.%d.%s", l, tab[i].suffix);
        Status s = st_dir_bind(w, m, tab[i].t, name, tab[i].d0, tab[i].d1);
        if (s != STATUS_OK) return s;
    }
    // older checkpoints store RoPE's inverse frequencies; they are recomputed
    snprintf(name, sizeof name, "model.layers.%d.self_attn.rotary_emb.inv_freq", l);
    st_dir_use(w, name);
    return STATUS_OK;
}

static Status hf_bind_all(StDir *w, Model *m) {
    const LlamaConfig *c = &m->cfg;
    Status s = st_dir_bind(w, m, &m->tok_emb, "model.embed_tokens.weight", c->vocab_size, c->dim);
    if (s != STATUS_OK) return s;
    for (int l = 0; l < c->n_layers; l++)
        if ((s = hf_bind_layer(w, m, l)) != STATUS_OK) return s;
    if ((s = st_dir_bind(w, m, &m->final_norm, "model.norm.weight", c->dim, 0)) != STATUS_OK)
        return s;
    bool has_head = st_dir_find(w, "lm_head.weight", NULL) != NULL;
    if (!m->cfg.tied_embeddings && has_head) {
        if ((s = st_dir_bind(w, m, &m->lm_head, "lm_head.weight", c->vocab_size, c->dim)) !=
            STATUS_OK)
            return s;
    } else {
        // tie_word_embeddings (transformers then ignores a stored lm_head), or no lm_head
        m->cfg.tied_embeddings = true;
        m->lm_head = m->tok_emb;
        st_dir_use(w, "lm_head.weight");
    }
    return st_dir_check_unused(w);
}

Status model_load_hf(Model *m, const char *path) {
    model_init(m);
    char *dir, *cfg_path;
    size_t n = strlen(path);
    if (path_is_dir(path)) {
        dir = xstrdup(path);
    } else {
        // path is ".../config.json"
        const char *slash = strrchr(path, '/');
        dir = slash ? strndup(path, (size_t)(slash - path)) : xstrdup(".");
        if (!dir) dir = xstrdup(".");
        if (n < 11 || strcmp(path + n - 11, "config.json") != 0) {
            free(dir);
            return fail(STATUS_ERR_ARG,
                        "'%s' is neither a Hugging Face model directory nor its config.json", path);
        }
    }
    cfg_path = path_join(dir, "config.json");
    m->source = xstrdup(dir);
    StDir w = {0};
    json_t *root = NULL;
    Status s;
    if (!path_is_file(cfg_path)) {
        s = fail(STATUS_ERR_IO, "'%s' has no config.json (not a Hugging Face model directory)",
                 dir);
        goto out;
    }
    if ((s = json_read_file(&root, cfg_path, JSON_REJECT_DUPLICATES)) != STATUS_OK) goto out;
    if ((s = cfg_from_json(&m->cfg, root, cfg_path)) != STATUS_OK) goto out;
    if ((s = hf_read_generation_config(&m->cfg, dir)) != STATUS_OK) goto out;
    m->layers = calloc((size_t)m->cfg.n_layers, sizeof *m->layers);
    if (!m->layers) {
        s = fail(STATUS_ERR_NOMEM, "cannot allocate the layer table");
        goto out;
    }
    if ((s = st_dir_open(&w, dir, m)) != STATUS_OK) goto out;
    s = hf_bind_all(&w, m);
out:
    st_dir_release(&w);
    json_decref(root);
    free(cfg_path);
    free(dir);
    if (s != STATUS_OK) model_release(m);
    return s;
}

/* ---- writer ------------------------------------------------------------------- */

static const char *torch_dtype_name(DType t) {
    switch (t) {
    case DTYPE_F16: return "float16";
    case DTYPE_BF16: return "bfloat16";
    default: return "float32";
    }
}

static SafeDType safe_dtype_of(DType t) {
    switch (t) {
    case DTYPE_F16: return ST_F16;
    case DTYPE_BF16: return ST_BF16;
    default: return ST_F32;
    }
}

// The shortest decimal that reads back as the same float32, as a double for Jansson:
// 1e-5f is written "1e-05", not "9.99999974737875e-06".
static json_t *json_float32(float f) {
    char buf[32];
    for (int p = 1; p <= 9; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, (double)f);
        if ((float)strtod(buf, NULL) == f) break;
    }
    return json_real(strtod(buf, NULL));
}

static json_t *json_token_id(int id) { return id >= 0 ? json_integer(id) : json_null(); }

static bool hf_is_qwen2(const Model *m) {
    return m->cfg.qkv_bias || strcmp(m->cfg.arch, "qwen2") == 0;
}

static json_t *hf_config_json(const Model *m, DType dtype, int bos, int eos) {
    const LlamaConfig *c = &m->cfg;
    bool qwen = hf_is_qwen2(m);
    json_t *j = json_object();
    json_t *arch = json_array();
    json_array_append_new(arch, json_string(qwen ? "Qwen2ForCausalLM" : "LlamaForCausalLM"));
    json_object_set_new(j, "architectures", arch);
    json_object_set_new(j, "model_type", json_string(qwen ? "qwen2" : "llama"));
    json_object_set_new(j, "hidden_size", json_integer(c->dim));
    json_object_set_new(j, "intermediate_size", json_integer(c->hidden_dim));
    json_object_set_new(j, "num_hidden_layers", json_integer(c->n_layers));
    json_object_set_new(j, "num_attention_heads", json_integer(c->n_heads));
    json_object_set_new(j, "num_key_value_heads", json_integer(c->n_kv_heads));
    json_object_set_new(j, "head_dim", json_integer(c->head_dim));
    json_object_set_new(j, "vocab_size", json_integer(c->vocab_size));
    json_object_set_new(j, "max_position_embeddings", json_integer(c->max_seq_len));
    json_object_set_new(j, "rms_norm_eps", json_float32(c->norm_eps));
    json_object_set_new(j, "rope_theta", json_float32(c->rope_theta));
    if (c->rope_scaling == ROPE_SCALING_LLAMA3) {
        json_t *rs = json_object();
        json_object_set_new(rs, "rope_type", json_string("llama3"));
        json_object_set_new(rs, "factor", json_float32(c->rope_factor));
        json_object_set_new(rs, "low_freq_factor", json_float32(c->rope_low_freq_factor));
        json_object_set_new(rs, "high_freq_factor", json_float32(c->rope_high_freq_factor));
        json_object_set_new(rs, "original_max_position_embeddings",
                            json_integer(c->rope_orig_max_pos));
        json_object_set_new(j, "rope_scaling", rs);
    } else {
        json_object_set_new(j, "rope_scaling", json_null());
    }
    json_object_set_new(j, "tie_word_embeddings", json_boolean(c->tied_embeddings));
    json_object_set_new(j, "hidden_act", json_string("silu"));
    json_object_set_new(j, "initializer_range", json_real(0.02));
    json_object_set_new(j, "attention_dropout", json_real(0.0));
    json_object_set_new(j, "use_cache", json_true());
    json_object_set_new(j, "bos_token_id", json_token_id(bos));
    json_object_set_new(j, "eos_token_id", json_token_id(eos));
    json_object_set_new(j, "torch_dtype", json_string(torch_dtype_name(dtype)));
    if (qwen) {
        json_object_set_new(j, "use_sliding_window", json_false());
        json_object_set_new(j, "sliding_window", json_null());
        json_object_set_new(j, "max_window_layers", json_integer(c->n_layers));
    } else {
        json_object_set_new(j, "attention_bias", json_false());
        json_object_set_new(j, "mlp_bias", json_false());
        json_object_set_new(j, "pretraining_tp", json_integer(1));
    }
    return j;
}

static Status hf_write_json(json_t *j, const char *dir, const char *name) {
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(9));
    json_decref(j);
    if (!text) return fail(STATUS_ERR_NOMEM, "cannot format %s", name);
    char *path = path_join(dir, name);
    size_t len = strlen(text);
    text[len] = '\n'; // overwrite the NUL: file_write_all takes a length
    Status s = file_write_all(path, text, len + 1);
    free(path);
    free(text);
    return s;
}

// Buffers converted for the writer (freed after the write).
typedef struct {
    void **p;
    int n, cap;
} BufList;

static void *buflist_alloc(BufList *b, size_t n) {
    void *p = calloc(1, n ? n : 1);
    if (!p) return NULL;
    if (b->n == b->cap) {
        b->cap = b->cap ? 2 * b->cap : 64;
        b->p = xrealloc(b->p, (size_t)b->cap * sizeof *b->p);
    }
    b->p[b->n++] = p;
    return p;
}

static void buflist_release(BufList *b) {
    for (int i = 0; i < b->n; i++)
        free(b->p[i]);
    free(b->p);
    memset(b, 0, sizeof *b);
}

// Adds tensor t (converted to dt when needed; zeros of `zero_rows` when t is absent).
static Status hf_add(SafeWriter *sw, BufList *bufs, const char *name, const Tensor *t, DType dt,
                     int64_t zero_rows) {
    int64_t shape[4] = {zero_rows, 0, 0, 0};
    int ndim = 1;
    const void *data;
    if (!t->data) {
        data = buflist_alloc(bufs, (size_t)zero_rows * dtype_size(dt));
        if (!data) return fail(STATUS_ERR_NOMEM, "cannot allocate '%s'", name);
    } else {
        ndim = t->ndim;
        memcpy(shape, t->shape, sizeof shape);
        int64_t n = tensor_numel(t);
        if (t->dtype == dt) {
            data = t->data;
        } else {
            void *out = buflist_alloc(bufs, (size_t)n * dtype_size(dt));
            if (!out)
                return fail(STATUS_ERR_NOMEM, "cannot allocate '%s' as %s", name, dtype_name(dt));
            if (t->dtype == DTYPE_F32) {
                dtype_from_f32(out, t->data, dt, n);
            } else if (dt == DTYPE_F32) {
                dtype_to_f32(out, t->data, t->dtype, n);
            } else {
                float *tmp = malloc((size_t)n * sizeof(float));
                if (!tmp) return fail(STATUS_ERR_NOMEM, "cannot allocate '%s' as f32", name);
                dtype_to_f32(tmp, t->data, t->dtype, n);
                dtype_from_f32(out, tmp, dt, n);
                free(tmp);
            }
            data = out;
        }
    }
    safewriter_add(sw, name, safe_dtype_of(dt), ndim, shape, data);
    return STATUS_OK;
}

static Status hf_write_weights(const Model *m, const char *dir, DType dt) {
    const LlamaConfig *c = &m->cfg;
    SafeWriter sw;
    BufList bufs = {0};
    safewriter_init(&sw);
    safewriter_meta(&sw, "format", "pt"); // transformers refuses files without it
    bool qwen = hf_is_qwen2(m);
    int64_t QD = (int64_t)c->n_heads * c->head_dim, KD = (int64_t)c->n_kv_heads * c->head_dim;
    Status s = hf_add(&sw, &bufs, "model.embed_tokens.weight", &m->tok_emb, dt, 0);
    char name[128];
    for (int l = 0; l < c->n_layers && s == STATUS_OK; l++) {
        const LlamaLayer *ly = &m->layers[l];
        struct {
            const char *suffix;
            const Tensor *t;
            int64_t zero_rows; // >0: a Qwen2 bias written as zeros when the model has none
        } tab[] = {
            {"input_layernorm.weight", &ly->attn_norm, 0},
            {"self_attn.q_proj.weight", &ly->wq, 0},
            {"self_attn.k_proj.weight", &ly->wk, 0},
            {"self_attn.v_proj.weight", &ly->wv, 0},
            {"self_attn.o_proj.weight", &ly->wo, 0},
            {"post_attention_layernorm.weight", &ly->ffn_norm, 0},
            {"mlp.gate_proj.weight", &ly->w_gate, 0},
            {"mlp.up_proj.weight", &ly->w_up, 0},
            {"mlp.down_proj.weight", &ly->w_down, 0},
            {"self_attn.q_proj.bias", &ly->bq, QD},
            {"self_attn.k_proj.bias", &ly->bk, KD},
            {"self_attn.v_proj.bias", &ly->bv, KD},
        };
        for (size_t i = 0; i < ARRAY_LEN(tab) && s == STATUS_OK; i++) {
            if (tab[i].zero_rows && !qwen) continue;
            if (!tab[i].zero_rows && !tab[i].t->data) {
                s = fail(STATUS_ERR_ARG, "model has no layer %d %s", l, tab[i].suffix);
                break;
            }
            snprintf(name, sizeof name, "model.layers.%d.%s", l, tab[i].suffix);
            s = hf_add(&sw, &bufs, name, tab[i].t, dt, tab[i].zero_rows);
        }
    }
    if (s == STATUS_OK) s = hf_add(&sw, &bufs, "model.norm.weight", &m->final_norm, dt, 0);
    if (s == STATUS_OK && !c->tied_embeddings)
        s = hf_add(&sw, &bufs, "lm_head.weight", &m->lm_head, dt, 0);
    if (s == STATUS_OK) {
        char *path = path_join(dir, "model.safetensors");
        s = safewriter_write(&sw, path);
        free(path);
    }
    safewriter_release(&sw);
    buflist_release(&bufs);
    return s;
}

static Status hf_check_model(const Model *m) {
    if (!m->layers || m->cfg.n_layers <= 0 || !m->tok_emb.data || !m->final_norm.data ||
        (!m->cfg.tied_embeddings && !m->lm_head.data))
        return fail(STATUS_ERR_ARG, "cannot save an incomplete model");
    return STATUS_OK;
}

static Status hf_save_dir(const Model *m, const char *dir, DType dtype, bool weights) {
    if ((int)dtype < 0 || dtype >= DTYPE_COUNT)
        return fail(STATUS_ERR_ARG, "bad dtype %d", (int)dtype);
    Status s = hf_check_model(m);
    if (s != STATUS_OK) return s;
    if (out_dir_taken(dir))
        return fail(STATUS_ERR_IO, "'%s' already exists (refusing to overwrite it)", dir);
    // parent directories are created; the output itself appears only by rename()
    const char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        char *parent = strndup(dir, (size_t)(slash - dir));
        s = parent ? dir_create(parent) : fail(STATUS_ERR_NOMEM, "out of memory");
        free(parent);
        if (s != STATUS_OK) return s;
    }
    size_t n = strlen(dir) + 32;
    char *tmp = xmalloc(n);
    snprintf(tmp, n, "%s.tmp.%ld", dir, (long)getpid());
    dir_remove(tmp); // a leftover of a crashed run of this pid
    if (mkdir(tmp, 0755) != 0) {
        s = fail(STATUS_ERR_IO, "cannot create directory '%s': %s", tmp, strerror(errno));
        free(tmp);
        return s;
    }
    int bos = m->tok ? tokenizer_bos_id(m->tok) : m->cfg.bos_id;
    int eos = m->tok ? tokenizer_eos_id(m->tok) : m->cfg.eos_id;
    if (bos < 0) bos = m->cfg.bos_id;
    if (eos < 0) eos = m->cfg.eos_id;
    s = hf_write_json(hf_config_json(m, dtype, bos, eos), tmp, "config.json");
    if (s == STATUS_OK) {
        json_t *g = json_object();
        json_object_set_new(g, "_from_model_config", json_true());
        json_object_set_new(g, "bos_token_id", json_token_id(bos));
        json_object_set_new(g, "eos_token_id", json_token_id(eos));
        s = hf_write_json(g, tmp, "generation_config.json");
    }
    if (s == STATUS_OK && weights) s = hf_write_weights(m, tmp, dtype);
    if (s == STATUS_OK && m->tok) s = tokenizer_save_hf(m->tok, tmp);
    if (s == STATUS_OK && rename(tmp, dir) != 0)
        s = fail(STATUS_ERR_IO, "cannot rename '%s' to '%s': %s", tmp, dir, strerror(errno));
    if (s != STATUS_OK) dir_remove(tmp);
    free(tmp);
    return s;
}

static Status hf_save(const Model *m, const char *dir, DType dtype, bool weights) {
    // "out/" names the directory "out": the temporary must sit next to it, not inside
    char *d = xstrdup(dir);
    for (size_t n = strlen(d); n > 1 && d[n - 1] == '/'; n--)
        d[n - 1] = '\0';
    Status s = hf_save_dir(m, d, dtype, weights);
    free(d);
    return s;
}

Status model_save_hf(const Model *m, const char *dir, DType dtype) {
    return hf_save(m, dir, dtype, true);
}

Status model_save_hf_meta(const Model *m, const char *dir, DType dtype) {
    return hf_save(m, dir, dtype, false);
}
