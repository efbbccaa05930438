/*
 * safetensors.c - safetensors reader and writer (format in safetensors.h and
 * docs/formats.md).
 */
#include "safetensors.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"

static const char *safe_names[ST_DTYPE_COUNT] = {"F32", "F16", "BF16", "F64",  "I64", "I32",
                                                 "I16", "I8",  "U8",   "BOOL", "U32"};
static const size_t safe_sizes[ST_DTYPE_COUNT] = {4, 2, 2, 8, 8, 4, 2, 1, 1, 1, 4};

size_t safe_dtype_size(SafeDType t) { return safe_sizes[t]; }
const char *safe_dtype_name(SafeDType t) { return safe_names[t]; }

static int safe_dtype_parse(const char *s) {
    for (int i = 0; i < ST_DTYPE_COUNT; i++)
        if (strcmp(s, safe_names[i]) == 0) return i;
    return -1;
}

void safetensors_close(SafeTensors *st) {
    for (int i = 0; i < st->n_tensors; i++)
        free(st->tensors[i].name);
    free(st->tensors);
    for (int i = 0; i < st->n_meta; i++) {
        free(st->meta_keys[i]);
        free(st->meta_values[i]);
    }
    free(st->meta_keys);
    free(st->meta_values);
    mapped_file_close(&st->file);
    memset(st, 0, sizeof *st);
}

// Parses one tensor entry; `dlen` is the data section's size.
static Status parse_entry(SafeTensor *t, const char *name, json_t *v, const unsigned char *data,
                          uint64_t dlen, const char *path) {
    json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape");
    json_t *jo = json_object_get(v, "data_offsets");
    if (!json_is_string(jd) || !json_is_array(js) || !json_is_array(jo) || json_array_size(jo) != 2)
        return fail(STATUS_ERR_FORMAT,
                    "bad safetensors header in '%s': tensor '%s' lacks dtype/shape/data_offsets",
                    path, name);
    int dt = safe_dtype_parse(json_string_value(jd));
    if (dt < 0)
        return fail(STATUS_ERR_FORMAT, "'%s': tensor '%s' has unknown dtype '%s'", path, name,
                    json_string_value(jd));
    t->dtype = (SafeDType)dt;
    size_t nd = json_array_size(js);
    if (nd > 8)
        return fail(STATUS_ERR_FORMAT, "'%s': tensor '%s' has %zu dims (max 8)", path, name, nd);
    t->ndim = (int)nd;
    uint64_t numel = 1;
    for (size_t i = 0; i < nd; i++) {
        json_t *d = json_array_get(js, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return fail(STATUS_ERR_FORMAT, "'%s': tensor '%s' has a bad shape", path, name);
        t->shape[i] = json_integer_value(d);
        if (mul_overflow_u64(numel, (uint64_t)t->shape[i], &numel))
            return fail(STATUS_ERR_FORMAT, "'%s': tensor '%s' shape product overflows", path, name);
    }
    json_t *b = json_array_get(jo, 0), *e = json_array_get(jo, 1);
    if (!json_is_integer(b) || !json_is_integer(e) || json_integer_value(b) < 0 ||
        json_integer_value(e) < json_integer_value(b))
        return fail(STATUS_ERR_FORMAT, "'%s': tensor '%s' has bad data_offsets", path, name);
    uint64_t begin = (uint64_t)json_integer_value(b), end = (uint64_t)json_integer_value(e), want;
    if (mul_overflow_u64(numel, safe_sizes[dt], &want) || end - begin != want)
        return fail(STATUS_ERR_FORMAT, "'%s': tensor '%s' has %llu bytes but its shape needs %llu",
                    path, name, (unsigned long long)(end - begin), (unsigned long long)want);
    if (end > dlen)
        return fail(STATUS_ERR_FORMAT,
                    "'%s': tensor '%s' ends past the end of the file (truncated?)", path, name);
    t->data = data + begin;
    t->nbytes = want;
    t->name = xstrdup(name);
    return STATUS_OK;
}

Status safetensors_open(SafeTensors *st, const char *path) {
    memset(st, 0, sizeof *st);
    Status s = mapped_file_open(&st->file, path);
    if (s != STATUS_OK) return s;
    const unsigned char *d = st->file.data;
    uint64_t hlen = 0;
    if (st->file.size < 8) {
        s = fail(STATUS_ERR_FORMAT, "'%s' is too short to be a safetensors file", path);
        goto out;
    }
    memcpy(&hlen, d, 8);
    if (hlen > st->file.size - 8 || hlen > (100u << 20)) {
        s = fail(STATUS_ERR_FORMAT, "'%s': safetensors header length %llu exceeds the file", path,
                 (unsigned long long)hlen);
        goto out;
    }
    json_error_t jerr;
    json_t *root = json_loadb((const char *)d + 8, hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root || !json_is_object(root)) {
        s = fail(STATUS_ERR_FORMAT, "'%s': bad safetensors JSON header: %s", path,
                 root ? "not an object" : jerr.text);
        json_decref(root);
        goto out;
    }
    size_t n = json_object_size(root);
    st->tensors = xcalloc(n, sizeof *st->tensors);
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (strcmp(key, "__metadata__") == 0) {
            if (!json_is_object(v)) continue;
            size_t nm = json_object_size(v);
            st->meta_keys = xcalloc(nm, sizeof(char *));
            st->meta_values = xcalloc(nm, sizeof(char *));
            const char *mk;
            json_t *mv;
            json_object_foreach(v, mk, mv) {
                if (!json_is_string(mv)) continue;
                st->meta_keys[st->n_meta] = xstrdup(mk);
                st->meta_values[st->n_meta++] = xstrdup(json_string_value(mv));
            }
            continue;
        }
        if (!json_is_object(v)) {
            s = fail(STATUS_ERR_FORMAT,
                     "bad safetensors header in '%s': entry '%s' is not an object", path, key);
            break;
        }
        s = parse_entry(&st->tensors[st->n_tensors], key, v, d + 8 + hlen, st->file.size - 8 - hlen,
                        path);
        if (s != STATUS_OK) break;
        st->n_tensors++;
    }
    json_decref(root);
out:
    if (s != STATUS_OK) safetensors_close(st);
    return s;
}

const SafeTensor *safetensors_find(const SafeTensors *st, const char *name) {
    for (int i = 0; i < st->n_tensors; i++)
        if (strcmp(st->tensors[i].name, name) == 0) return &st->tensors[i];
    return NULL;
}

const char *safetensors_meta(const SafeTensors *st, const char *key) {
    for (int i = 0; i < st->n_meta; i++)
        if (strcmp(st->meta_keys[i], key) == 0) return st->meta_values[i];
    return NULL;
}

/* ---- writer ----------------------------------------------------------------- */

void safewriter_init(SafeWriter *w) { memset(w, 0, sizeof *w); }

void safewriter_add(SafeWriter *w, const char *name, SafeDType dtype, int ndim,
                    const int64_t *shape, const void *data) {
    CHECK(ndim >= 0 && ndim <= 8);
    if (w->n == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 64;
        w->t = xrealloc(w->t, (size_t)w->cap * sizeof *w->t);
    }
    SafeWriteTensor *t = &w->t[w->n++];
    memset(t, 0, sizeof *t);
    t->name = xstrdup(name);
    t->dtype = dtype;
    t->ndim = ndim;
    uint64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = shape[i];
        numel *= (uint64_t)shape[i];
    }
    t->data = data;
    t->nbytes = numel * safe_sizes[dtype];
}

void safewriter_meta(SafeWriter *w, const char *key, const char *value) {
    w->meta_keys = xrealloc(w->meta_keys, (size_t)(w->n_meta + 1) * sizeof(char *));
    w->meta_values = xrealloc(w->meta_values, (size_t)(w->n_meta + 1) * sizeof(char *));
    w->meta_keys[w->n_meta] = xstrdup(key);
    w->meta_values[w->n_meta++] = xstrdup(value);
}

Status safewriter_write(const SafeWriter *w, const char *path) {
    json_t *root = json_object();
    if (w->n_meta) {
        json_t *m = json_object();
        for (int i = 0; i < w->n_meta; i++)
            json_object_set_new(m, w->meta_keys[i], json_string(w->meta_values[i]));
        json_object_set_new(root, "__metadata__", m);
    }
    uint64_t off = 0;
    for (int i = 0; i < w->n; i++) {
        const SafeWriteTensor *t = &w->t[i];
        json_t *e = json_object(), *sh = json_array(), *of = json_array();
        json_object_set_new(e, "dtype", json_string(safe_names[t->dtype]));
        for (int k = 0; k < t->ndim; k++)
            json_array_append_new(sh, json_integer(t->shape[k]));
        json_object_set_new(e, "shape", sh);
        json_array_append_new(of, json_integer((json_int_t)off));
        json_array_append_new(of, json_integer((json_int_t)(off + t->nbytes)));
        json_object_set_new(e, "data_offsets", of);
        json_object_set_new(root, t->name, e);
        off += t->nbytes;
    }
    char *hdr = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    size_t hl = strlen(hdr), padded = (hl + 7) & ~(size_t)7; // pad with spaces to 8 bytes
    AtomicFile af;
    Status s = atomic_file_open(&af, path);
    if (s != STATUS_OK) {
        free(hdr);
        return s;
    }
    uint64_t n8 = padded;
    fwrite(&n8, 8, 1, af.f);
    fwrite(hdr, 1, hl, af.f);
    for (size_t i = hl; i < padded; i++)
        fputc(' ', af.f);
    free(hdr);
    for (int i = 0; i < w->n; i++)
        if (w->t[i].nbytes && fwrite(w->t[i].data, 1, w->t[i].nbytes, af.f) != w->t[i].nbytes)
            break;
    return atomic_file_commit(&af);
}

void safewriter_release(SafeWriter *w) {
    for (int i = 0; i < w->n; i++)
        free(w->t[i].name);
    free(w->t);
    for (int i = 0; i < w->n_meta; i++) {
        free(w->meta_keys[i]);
        free(w->meta_values[i]);
    }
    free(w->meta_keys);
    free(w->meta_values);
    memset(w, 0, sizeof *w);
}
