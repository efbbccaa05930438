/*
 * cmd_info.c - `edgeforge info MODEL`: what a model file holds.
 *
 *   edgeforge info models/stories260K/stories260K.bin
 *   edgeforge info out/tiny-hf --tensors          (every tensor, not a summary per kind)
 *   edgeforge info model.gguf --json              (everything as one JSON object)
 *
 * Prints the architecture and configuration, the weights (a summary per kind of
 * tensor, or every tensor with --tensors/--json: name, shape, dtype), the parameter
 * count, bytes per dtype, and a tokenizer summary (kind, vocabulary size, BOS/EOS and
 * control tokens, chat template). A model whose tokenizer cannot be found is still
 * described ("tokenizer: none (why)") unless --tokenizer names one explicitly.
 */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/common.h"
#include "model/llama.h"
#include "model/model_io.h"
#include "model/tokenizer.h"
#include "quant/gptq_pack.h"

// One weight with its Hugging Face name; `kind` is the name without the layer prefix.
typedef struct {
    char name[96];
    const char *kind;
    const Tensor *t;
} InfoTensor;

static int info_list_tensors(const Model *m, InfoTensor **out) {
    int cap = 3 + 12 * m->cfg.n_layers, n = 0;
    InfoTensor *v = xcalloc((size_t)cap, sizeof *v);
    v[n++] = (InfoTensor){"model.embed_tokens.weight", "model.embed_tokens.weight", &m->tok_emb};
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const LlamaLayer *ly = &m->layers[l];
        const struct {
            const char *kind;
            const Tensor *t;
        } tab[] = {
            {"input_layernorm.weight", &ly->attn_norm},
            {"self_attn.q_proj.weight", &ly->wq},
            {"self_attn.q_proj.bias", &ly->bq},
            {"self_attn.k_proj.weight", &ly->wk},
            {"self_attn.k_proj.bias", &ly->bk},
            {"self_attn.v_proj.weight", &ly->wv},
            {"self_attn.v_proj.bias", &ly->bv},
            {"self_attn.o_proj.weight", &ly->wo},
            {"post_attention_layernorm.weight", &ly->ffn_norm},
            {"mlp.gate_proj.weight", &ly->w_gate},
            {"mlp.up_proj.weight", &ly->w_up},
            {"mlp.down_proj.weight", &ly->w_down},
        };
        for (size_t i = 0; i < ARRAY_LEN(tab); i++) {
            if (!tab[i].t->data && !tab[i].t->gptq) continue;
            InfoTensor *e = &v[n++];
            snprintf(e->name, sizeof e->name, "model.layers.%d.%s", l, tab[i].kind);
            e->kind = tab[i].kind;
            e->t = tab[i].t;
        }
    }
    v[n++] = (InfoTensor){"model.norm.weight", "model.norm.weight", &m->final_norm};
    if (!m->cfg.tied_embeddings)
        v[n++] = (InfoTensor){"lm_head.weight", "lm_head.weight", &m->lm_head};
    *out = v;
    return n;
}

// "f16", or for a GPTQ-packed linear "gptq4-g128" (bits, group size; -1 = one group per row).
static const char *tensor_type(const Tensor *t, char *buf, size_t n) {
    if (!t->gptq) return dtype_name(t->dtype);
    snprintf(buf, n, "gptq%d-g%d", t->gptq->bits, t->gptq->group_size);
    return buf;
}

// Bytes as stored (a packed linear: qweight + qzeros + scales + g_idx).
static int64_t tensor_bytes(const Tensor *t) {
    return t->gptq ? gptq_packed_bytes(t->gptq) : tensor_numel(t) * (int64_t)dtype_size(t->dtype);
}

static void shape_text(char *buf, size_t n, const Tensor *t) {
    size_t o = 0;
    for (int i = 0; i < t->ndim && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, "%s%" PRId64, i ? " x " : "", t->shape[i]);
}

// The shortest decimal that reads back as the same float32 (1e-5f prints as 1e-05).
static json_t *json_f32(float f) {
    char buf[32];
    for (int p = 1; p <= 9; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, (double)f);
        if ((float)strtod(buf, NULL) == f) break;
    }
    return json_real(strtod(buf, NULL));
}

static json_t *info_config_json(const LlamaConfig *c) {
    json_t *j = json_object();
    json_object_set_new(j, "arch", json_string(c->arch));
    json_object_set_new(j, "dim", json_integer(c->dim));
    json_object_set_new(j, "hidden_dim", json_integer(c->hidden_dim));
    json_object_set_new(j, "n_layers", json_integer(c->n_layers));
    json_object_set_new(j, "n_heads", json_integer(c->n_heads));
    json_object_set_new(j, "n_kv_heads", json_integer(c->n_kv_heads));
    json_object_set_new(j, "head_dim", json_integer(c->head_dim));
    json_object_set_new(j, "vocab_size", json_integer(c->vocab_size));
    json_object_set_new(j, "max_seq_len", json_integer(c->max_seq_len));
    json_object_set_new(j, "rope_theta", json_f32(c->rope_theta));
    json_object_set_new(j, "norm_eps", json_f32(c->norm_eps));
    json_object_set_new(j, "tied_embeddings", json_boolean(c->tied_embeddings));
    json_object_set_new(j, "qkv_bias", json_boolean(c->qkv_bias));
    if (c->rope_scaling == ROPE_SCALING_LLAMA3) {
        json_t *r = json_object();
        json_object_set_new(r, "rope_type", json_string("llama3"));
        json_object_set_new(r, "factor", json_f32(c->rope_factor));
        json_object_set_new(r, "low_freq_factor", json_f32(c->rope_low_freq_factor));
        json_object_set_new(r, "high_freq_factor", json_f32(c->rope_high_freq_factor));
        json_object_set_new(r, "original_max_position_embeddings",
                            json_integer(c->rope_orig_max_pos));
        json_object_set_new(j, "rope_scaling", r);
    } else {
        json_object_set_new(j, "rope_scaling", json_null());
    }
    json_object_set_new(j, "bos_id", json_integer(c->bos_id));
    json_object_set_new(j, "eos_id", json_integer(c->eos_id));
    return j;
}

// A token string for one line of text: control bytes as \n, \t or \xNN.
static const char *token_printable(const Tokenizer *t, int32_t id, char *buf, size_t n) {
    const char *s = id >= 0 ? tokenizer_token_str(t, id) : "";
    size_t o = 0;
    for (; s && *s && o + 5 < n; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '\n')
            o += (size_t)snprintf(buf + o, n - o, "\\n");
        else if (c == '\t')
            o += (size_t)snprintf(buf + o, n - o, "\\t");
        else if (c < 0x20 || c == 0x7f)
            o += (size_t)snprintf(buf + o, n - o, "\\x%02x", c);
        else
            buf[o++] = (char)c;
    }
    buf[o] = '\0';
    return buf;
}

static const char *tokenizer_kind_name(TokenizerKind k) {
    return k == TOKENIZER_SPM ? "spm" : "bpe";
}

static int count_control(const Tokenizer *t) {
    int n = 0, v = tokenizer_vocab_size(t);
    for (int i = 0; i < v; i++)
        n += tokenizer_is_control(t, i);
    return n;
}

static json_t *info_tokenizer_json(const Tokenizer *t, const char *why) {
    json_t *j = json_object();
    if (!t) {
        json_object_set_new(j, "error", json_string(why));
        return j;
    }
    int32_t bos = tokenizer_bos_id(t), eos = tokenizer_eos_id(t);
    json_object_set_new(j, "kind", json_string(tokenizer_kind_name(tokenizer_kind(t))));
    json_object_set_new(j, "vocab_size", json_integer(tokenizer_vocab_size(t)));
    json_object_set_new(j, "bos_id", json_integer(bos));
    json_object_set_new(j, "eos_id", json_integer(eos));
    if (bos >= 0) json_object_set_new(j, "bos", json_string(tokenizer_token_str(t, bos)));
    if (eos >= 0) json_object_set_new(j, "eos", json_string(tokenizer_token_str(t, eos)));
    json_t *ctl = json_array();
    int v = tokenizer_vocab_size(t);
    for (int i = 0; i < v; i++)
        if (tokenizer_is_control(t, i))
            json_array_append_new(ctl, json_string(tokenizer_token_str(t, i)));
    json_object_set_new(j, "control_tokens", ctl);
    json_object_set_new(j, "chat_template", json_boolean(tokenizer_chat_template(t) != NULL));
    return j;
}

static int info_print_json(const Model *m, const InfoTensor *ts, int n, const char *path,
                           const char *why) {
    json_t *j = json_object();
    json_object_set_new(j, "path", json_string(path));
    json_object_set_new(j, "config", info_config_json(&m->cfg));
    json_t *arr = json_array();
    int64_t bytes[DTYPE_COUNT] = {0}, packed = 0;
    char ty[32];
    for (int i = 0; i < n; i++) {
        json_t *e = json_object(), *sh = json_array();
        json_object_set_new(e, "name", json_string(ts[i].name));
        for (int d = 0; d < ts[i].t->ndim; d++)
            json_array_append_new(sh, json_integer(ts[i].t->shape[d]));
        json_object_set_new(e, "shape", sh);
        json_object_set_new(e, "dtype", json_string(tensor_type(ts[i].t, ty, sizeof ty)));
        json_array_append_new(arr, e);
        if (ts[i].t->gptq)
            packed += tensor_bytes(ts[i].t);
        else
            bytes[ts[i].t->dtype] += tensor_bytes(ts[i].t);
    }
    json_object_set_new(j, "tensors", arr);
    json_object_set_new(j, "n_params", json_integer(model_param_count(m)));
    json_t *jb = json_object();
    for (int d = 0; d < DTYPE_COUNT; d++)
        if (bytes[d]) json_object_set_new(jb, dtype_name((DType)d), json_integer(bytes[d]));
    if (packed) json_object_set_new(jb, "gptq", json_integer(packed));
    json_object_set_new(j, "bytes", jb);
    json_object_set_new(j, "tokenizer", info_tokenizer_json(m->tok, why));
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(j);
    if (!s) return 1;
    printf("%s\n", s);
    free(s);
    return 0;
}

static void info_print_text(const Model *m, const InfoTensor *ts, int n, const char *path,
                            const char *why, bool all_tensors) {
    const LlamaConfig *c = &m->cfg;
    printf("model: %s\n", path);
    printf("architecture: %s\n", c->arch);
    printf(
        "config: dim %d, hidden_dim %d, layers %d, heads %d, kv_heads %d, head_dim %d, vocab %d, "
        "max_seq_len %d\n",
        c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim, c->vocab_size,
        c->max_seq_len);
    printf("        rope_theta %g, norm_eps %g, tied_embeddings %s, qkv_bias %s",
           (double)c->rope_theta, (double)c->norm_eps, c->tied_embeddings ? "yes" : "no",
           c->qkv_bias ? "yes" : "no");
    if (c->rope_scaling == ROPE_SCALING_LLAMA3)
        printf(", rope_scaling llama3 (factor %g, low %g, high %g, original %d)",
               (double)c->rope_factor, (double)c->rope_low_freq_factor,
               (double)c->rope_high_freq_factor, c->rope_orig_max_pos);
    printf("\n        bos %d, eos %d\n", c->bos_id, c->eos_id);
    printf("tensors: %d\n", n);
    char sh[64], ty[32];
    int64_t bytes[DTYPE_COUNT] = {0}, packed = 0;
    for (int i = 0; i < n; i++) {
        if (ts[i].t->gptq)
            packed += tensor_bytes(ts[i].t);
        else
            bytes[ts[i].t->dtype] += tensor_bytes(ts[i].t);
    }
    if (all_tensors) {
        for (int i = 0; i < n; i++) {
            shape_text(sh, sizeof sh, ts[i].t);
            printf("  %-52s %-16s %s\n", ts[i].name, sh, tensor_type(ts[i].t, ty, sizeof ty));
        }
    } else {
        // one line per kind: count, shape and dtype of the first (shapes agree across layers)
        bool *done = xcalloc((size_t)n, sizeof *done);
        for (int i = 0; i < n; i++) {
            if (done[i]) continue;
            int count = 0;
            bool mixed = false;
            for (int k = i; k < n; k++)
                if (strcmp(ts[k].kind, ts[i].kind) == 0) {
                    done[k] = true;
                    count++;
                    mixed |= ts[k].t->dtype != ts[i].t->dtype || !ts[k].t->gptq != !ts[i].t->gptq;
                }
            shape_text(sh, sizeof sh, ts[i].t);
            printf("  %-36s x%-4d %-16s %s\n", ts[i].kind, count, sh,
                   mixed ? "mixed" : tensor_type(ts[i].t, ty, sizeof ty));
        }
        free(done);
    }
    printf("parameters: %" PRId64 "\n", model_param_count(m));
    printf("bytes:");
    for (int d = 0; d < DTYPE_COUNT; d++)
        if (bytes[d]) printf(" %s %" PRId64, dtype_name((DType)d), bytes[d]);
    if (packed) printf(" gptq %" PRId64, packed);
    printf("\n");
    const Tokenizer *t = m->tok;
    if (!t) {
        printf("tokenizer: none (%s)\n", why);
        return;
    }
    int32_t bos = tokenizer_bos_id(t), eos = tokenizer_eos_id(t);
    char bbuf[64], ebuf[64];
    printf(
        "tokenizer: %s, vocab %d, bos %d '%s', eos %d '%s', %d control tokens, chat template %s\n",
        tokenizer_kind_name(tokenizer_kind(t)), tokenizer_vocab_size(t), bos,
        token_printable(t, bos, bbuf, sizeof bbuf), eos, token_printable(t, eos, ebuf, sizeof ebuf),
        count_control(t), tokenizer_chat_template(t) ? "yes" : "no");
}

int cmd_info(int argc, char **argv) {
    const char *tok_path = NULL;
    bool as_json = false, all_tensors = false;
    ArgSpec spec[] = {
        {"tokenizer", 0, ARG_STRING, &tok_path,
         "tokenizer file or directory (llama2.c tokenizer.bin, HF)", 0, 0},
        {"json", 0, ARG_FLAG, &as_json, "print everything as one JSON object", 0, 0},
        {"tensors", 0, ARG_FLAG, &all_tensors, "list every tensor instead of a summary per kind", 0,
         0},
    };
    ArgParse ap = {
        .cmd = "info",
        .pos_usage = "MODEL",
        .spec = spec,
        .n_spec = (int)ARRAY_LEN(spec),
        .min_pos = 1,
        .max_pos = 1,
        .summary = "Shows a model's architecture, configuration, tensors, dtypes and tokenizer."};
    int r = args_parse(&ap, argc, argv);
    if (r != 0) return r > 0 ? 0 : 2;
    const char *path = ap.pos[0];
    Model m;
    ModelLoadOptions opts = {.no_tokenizer = true};
    if (model_load(&m, path, &opts) != STATUS_OK) return cli_fail("info");
    ModelFileKind kind = MODEL_FILE_UNKNOWN;
    char *why = NULL;
    if (tok_path && m.tok) { // an explicit tokenizer replaces the one in the file
        tokenizer_free(m.tok);
        m.tok = NULL;
    }
    if (!m.tok && model_detect_kind(path, &kind) == STATUS_OK &&
        model_load_tokenizer(&m, path, kind, tok_path) != STATUS_OK) {
        if (tok_path) {
            model_release(&m);
            return cli_fail("info");
        }
        why = xstrdup(status_msg());
        m.tok = NULL;
    }
    InfoTensor *ts;
    int n = info_list_tensors(&m, &ts);
    int rc = 0;
    if (as_json)
        rc = info_print_json(&m, ts, n, path, why ? why : "");
    else
        info_print_text(&m, ts, n, path, why ? why : "", all_tensors);
    free(ts);
    free(why);
    model_release(&m);
    return rc;
}
