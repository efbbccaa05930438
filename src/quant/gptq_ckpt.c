/*
 * gptq_ckpt.c - GPTQ v1 checkpoint tensors and quantization_config (see gptq_ckpt.h and
 * docs/reference.md §2.1-§2.4).
 */
#include "quant/gptq_ckpt.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "core/dtype.h"
#include "core/fileio.h"
#include "core/json_file.h"
#include "core/log.h"

void gptq_config_defaults(GptqConfig *c) {
    memset(c, 0, sizeof *c);
    c->bits = 4;
    c->group_size = 128;
    c->desc_act = false;
    c->sym = true;
    c->true_sequential = true;
    c->static_groups = false;
    c->damp_percent = 0.01;
    snprintf(c->checkpoint_format, sizeof c->checkpoint_format, "gptq");
}

void gptq_config_from_options(GptqConfig *c, const GptqOptions *o) {
    gptq_config_defaults(c);
    c->bits = o->bits;
    c->group_size = o->group_size;
    c->desc_act = o->act_order;
    c->sym = o->sym;
    c->static_groups = o->static_groups;
    c->damp_percent = o->percdamp;
}

static json_t *config_to_object(const GptqConfig *c) {
    json_t *o = json_object();
    json_object_set_new(o, "quant_method", json_string("gptq"));
    json_object_set_new(o, "bits", json_integer(c->bits));
    json_object_set_new(o, "group_size", json_integer(c->group_size));
    json_object_set_new(o, "desc_act", json_boolean(c->desc_act));
    json_object_set_new(o, "sym", json_boolean(c->sym));
    json_object_set_new(o, "damp_percent", json_real(c->damp_percent));
    json_object_set_new(o, "true_sequential", json_boolean(c->true_sequential));
    json_object_set_new(o, "static_groups", json_boolean(c->static_groups));
    json_object_set_new(o, "lm_head", json_boolean(c->lm_head));
    json_object_set_new(o, "checkpoint_format", json_string(c->checkpoint_format));
    return o;
}

char *gptq_config_to_json(const GptqConfig *c) {
    json_t *o = config_to_object(c);
    char *s = json_dumps(o, JSON_INDENT(2));
    json_decref(o);
    CHECK(s);
    return s;
}

static Status get_bool(const json_t *o, const char *key, bool *out, const char *what) {
    const json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return STATUS_OK; // keep the default
    if (!json_is_boolean(v))
        return fail(STATUS_ERR_FORMAT, "'%s': quantization_config.%s must be true or false", what,
                    key);
    *out = json_is_true(v);
    return STATUS_OK;
}

static Status parse_object(GptqConfig *c, const json_t *o, const char *what) {
    gptq_config_defaults(c);
    const json_t *qm = json_object_get(o, "quant_method");
    if (qm && !(json_is_string(qm) && strcmp(json_string_value(qm), "gptq") == 0))
        return fail(STATUS_ERR_UNSUPPORTED, "'%s': quant_method is %s, not \"gptq\"", what,
                    json_is_string(qm) ? json_string_value(qm) : "not a string");
    // GPTQModel's "format" and AutoGPTQ's "checkpoint_format": only plain v1 "gptq"
    const char *fmt_keys[] = {"checkpoint_format", "format"};
    for (size_t i = 0; i < ARRAY_LEN(fmt_keys); i++) {
        const json_t *f = json_object_get(o, fmt_keys[i]);
        if (!f || json_is_null(f)) continue;
        if (!json_is_string(f) || strcmp(json_string_value(f), "gptq") != 0)
            return fail(STATUS_ERR_UNSUPPORTED,
                        "'%s': %s %s is not supported (only \"gptq\", "
                        "the v1 layout)",
                        what, fmt_keys[i],
                        json_is_string(f) ? json_string_value(f) : "(not a string)");
    }
    const json_t *b = json_object_get(o, "bits"), *g = json_object_get(o, "group_size");
    if (!json_is_integer(b) || !json_is_integer(g))
        return fail(STATUS_ERR_FORMAT,
                    "'%s': quantization_config needs integer bits and "
                    "group_size",
                    what);
    json_int_t bits = json_integer_value(b), gs = json_integer_value(g);
    if (bits != 2 && bits != 3 && bits != 4 && bits != 8)
        return fail(STATUS_ERR_FORMAT, "'%s': bits %lld is not one of 2, 3, 4, 8", what,
                    (long long)bits);
    if (gs != -1 && (gs < 1 || gs > (1 << 24)))
        return fail(STATUS_ERR_FORMAT, "'%s': group_size %lld is not -1 or positive", what,
                    (long long)gs);
    c->bits = (int)bits;
    c->group_size = (int)gs;
    Status s;
    if ((s = get_bool(o, "desc_act", &c->desc_act, what)) != STATUS_OK) return s;
    if (!json_object_get(o, "sym"))
        log_warn("'%s': quantization_config has no \"sym\"; assuming true", what);
    if ((s = get_bool(o, "sym", &c->sym, what)) != STATUS_OK) return s;
    if ((s = get_bool(o, "true_sequential", &c->true_sequential, what)) != STATUS_OK) return s;
    if ((s = get_bool(o, "static_groups", &c->static_groups, what)) != STATUS_OK) return s;
    if ((s = get_bool(o, "lm_head", &c->lm_head, what)) != STATUS_OK) return s;
    const json_t *d = json_object_get(o, "damp_percent");
    if (json_is_number(d)) c->damp_percent = json_number_value(d);
    return STATUS_OK;
}

Status gptq_config_parse(GptqConfig *c, const char *json_text, const char *what) {
    json_error_t err;
    json_t *root = json_loads(json_text, 0, &err);
    if (!root)
        return fail(STATUS_ERR_FORMAT, "'%s': bad JSON at line %d: %s", what, err.line, err.text);
    Status s;
    const json_t *qc = json_object_get(root, "quantization_config");
    if (!json_is_object(root))
        s = fail(STATUS_ERR_FORMAT, "'%s': not a JSON object", what);
    else if (qc && !json_is_object(qc))
        s = fail(STATUS_ERR_FORMAT, "'%s': quantization_config is not an object", what);
    else
        s = parse_object(c, qc ? qc : root, what);
    json_decref(root);
    return s;
}

Status gptq_config_read(GptqConfig *c, const char *dir) {
    const char *names[] = {"quantize_config.json", "config.json"};
    for (size_t i = 0; i < ARRAY_LEN(names); i++) {
        char *path = path_join(dir, names[i]);
        if (!path_is_file(path)) {
            free(path);
            continue;
        }
        char *text = NULL;
        size_t n = 0;
        Status s = file_read_all(path, &text, &n);
        if (s == STATUS_OK) {
            if (i == 1 && !strstr(text, "quantization_config"))
                s = fail(STATUS_ERR_FORMAT,
                         "'%s' has no quantization_config: not a GPTQ "
                         "checkpoint",
                         path);
            else
                s = gptq_config_parse(c, text, path);
        }
        free(text);
        free(path);
        return s;
    }
    return fail(STATUS_ERR_IO, "'%s' has neither quantize_config.json nor config.json", dir);
}

Status gptq_config_write(const char *dir, const GptqConfig *c) {
    char *path = path_join(dir, "quantize_config.json");
    char *text = gptq_config_to_json(c);
    Status s = file_write_all(path, text, strlen(text));
    free(text);
    free(path);
    if (s != STATUS_OK) return s;
    path = path_join(dir, "config.json");
    if (!path_is_file(path)) {
        free(path);
        return STATUS_OK;
    }
    json_t *root;
    s = json_read_object(&root, path, 0);
    if (s != STATUS_OK) {
        fail_context(s, "cannot add quantization_config");
    } else {
        json_object_set_new(root, "quantization_config", config_to_object(c));
        char *out = json_dumps(root, JSON_INDENT(2));
        CHECK(out);
        s = file_write_all(path, out, strlen(out));
        free(out);
    }
    json_decref(root);
    free(path);
    return s;
}

/* ---- tensors ------------------------------------------------------------------------- */

void gptq_ckpt_add_linear(SafeWriter *w, const char *prefix, const GptqPacked *p) {
    CHECK_MSG(!p->k_perm, "'%s': a layer sorted by gptq_packed_sort_groups is not in file order",
              prefix);
    char name[512];
    int64_t shp[2];
    shp[0] = gptq_qweight_rows(p->K, p->bits);
    shp[1] = p->N;
    snprintf(name, sizeof name, "%s.qweight", prefix);
    safewriter_add(w, name, ST_I32, 2, shp, p->qweight);
    shp[0] = p->G;
    shp[1] = gptq_qzeros_cols(p->N, p->bits);
    snprintf(name, sizeof name, "%s.qzeros", prefix);
    safewriter_add(w, name, ST_I32, 2, shp, p->qzeros);
    shp[1] = p->N;
    snprintf(name, sizeof name, "%s.scales", prefix);
    safewriter_add(w, name, ST_F16, 2, shp, p->scales);
    shp[0] = p->K;
    snprintf(name, sizeof name, "%s.g_idx", prefix);
    safewriter_add(w, name, ST_I32, 1, shp, p->g_idx);
    if (p->bias) {
        shp[0] = p->N;
        snprintf(name, sizeof name, "%s.bias", prefix);
        safewriter_add(w, name, ST_F16, 1, shp, p->bias);
    }
}

// Finds <prefix>.<suffix>; checks dtype and rank. *t NULL when optional and absent.
static Status find_tensor(const SafeTensor **t, const StDir *d, const char *prefix,
                          const char *suffix, SafeDType dt, int ndim, bool required) {
    char name[512];
    const char *file;
    snprintf(name, sizeof name, "%s.%s", prefix, suffix);
    *t = st_dir_find(d, name, &file);
    if (!*t) {
        if (!required) return STATUS_OK;
        return st_dir_missing(d, "GPTQ tensor", name);
    }
    if ((*t)->dtype != dt && !(dt == ST_I32 && (*t)->dtype == ST_U32))
        return fail(STATUS_ERR_FORMAT, "'%s': '%s' has dtype %s, expected %s", file, name,
                    safe_dtype_name((*t)->dtype), safe_dtype_name(dt));
    if ((*t)->ndim != ndim)
        return fail(STATUS_ERR_FORMAT, "'%s': '%s' has %d dimensions, expected %d", file, name,
                    (*t)->ndim, ndim);
    return STATUS_OK;
}

static Status shape_error(const StDir *d, const char *prefix, const char *suffix,
                          const SafeTensor *t, int64_t e0, int64_t e1) {
    char want[64], name[512];
    const char *file;
    snprintf(name, sizeof name, "%s.%s", prefix, suffix);
    st_dir_find(d, name, &file);
    if (e1 >= 0)
        snprintf(want, sizeof want, "[%lld, %lld]", (long long)e0, (long long)e1);
    else
        snprintf(want, sizeof want, "[%lld]", (long long)e0);
    return fail(STATUS_ERR_FORMAT, "'%s': '%s' has shape [%lld%s%lld], expected %s", file, name,
                (long long)t->shape[0], t->ndim > 1 ? ", " : "",
                t->ndim > 1 ? (long long)t->shape[1] : 0LL, want);
}

Status gptq_ckpt_read_linear(GptqPacked *p, const StDir *st, const char *prefix,
                             const GptqConfig *c, int64_t K, int64_t N) {
    memset(p, 0, sizeof *p);
    char qw_name[512];
    const char *file; // the messages below name qweight's shard
    snprintf(qw_name, sizeof qw_name, "%s.qweight", prefix);
    st_dir_find(st, qw_name, &file);
    if (c->bits != 2 && c->bits != 4 && c->bits != 8)
        return fail(STATUS_ERR_UNSUPPORTED, "'%s': %d-bit GPTQ is not supported", file, c->bits);
    const SafeTensor *qw, *qz, *sc, *gi, *bias;
    Status s;
    if ((s = find_tensor(&qw, st, prefix, "qweight", ST_I32, 2, true)) != STATUS_OK ||
        (s = find_tensor(&qz, st, prefix, "qzeros", ST_I32, 2, true)) != STATUS_OK ||
        (s = find_tensor(&sc, st, prefix, "scales", ST_F16, 2, true)) != STATUS_OK ||
        (s = find_tensor(&gi, st, prefix, "g_idx", ST_I32, 1, false)) != STATUS_OK ||
        (s = find_tensor(&bias, st, prefix, "bias", ST_F16, 1, false)) != STATUS_OK)
        return s;
    const int64_t G = sc->shape[0];
    if (N == 0) N = sc->shape[1];
    if (K == 0) K = gi ? gi->shape[0] : qw->shape[0] * (32 / c->bits);
    if (K < 1 || N < 1 || K > ((int64_t)1 << 26) || N > ((int64_t)1 << 26))
        return fail(STATUS_ERR_FORMAT, "'%s': '%s' has a bad shape (K %lld, N %lld)", file, prefix,
                    (long long)K, (long long)N);
    if (qw->shape[0] != gptq_qweight_rows(K, c->bits) || qw->shape[1] != N)
        return shape_error(st, prefix, "qweight", qw, gptq_qweight_rows(K, c->bits), N);
    if (sc->shape[1] != N) return shape_error(st, prefix, "scales", sc, G, N);
    const int64_t G_want = c->group_size == -1 ? 1 : (K + c->group_size - 1) / c->group_size;
    if (G != G_want)
        return fail(STATUS_ERR_FORMAT,
                    "'%s': '%s.scales' has %lld groups; in_features %lld with "
                    "group_size %d needs %lld",
                    file, prefix, (long long)G, (long long)K, c->group_size, (long long)G_want);
    if (qz->shape[0] != G || qz->shape[1] != gptq_qzeros_cols(N, c->bits))
        return shape_error(st, prefix, "qzeros", qz, G, gptq_qzeros_cols(N, c->bits));
    if (gi && gi->shape[0] != K) return shape_error(st, prefix, "g_idx", gi, K, -1);
    if (bias && bias->shape[0] != N) return shape_error(st, prefix, "bias", bias, N, -1);

    if ((s = gptq_packed_alloc(p, K, N, c->bits, c->group_size, G)) != STATUS_OK) return s;
    memcpy(p->qweight, qw->data, qw->nbytes);
    memcpy(p->qzeros, qz->data, qz->nbytes);
    memcpy(p->scales, sc->data, sc->nbytes);
    if (gi)
        memcpy(p->g_idx, gi->data, gi->nbytes);
    else
        for (int64_t i = 0; i < K; i++)
            p->g_idx[i] = c->group_size == -1 ? 0 : (int32_t)(i / c->group_size);
    if (bias) {
        p->bias = xmalloc((size_t)N * sizeof(uint16_t));
        memcpy(p->bias, bias->data, bias->nbytes);
    }
    if ((s = gptq_packed_validate(p, file)) != STATUS_OK) {
        gptq_packed_release(p);
        return fail_context(s, "'%s'", prefix);
    }
    return STATUS_OK;
}
