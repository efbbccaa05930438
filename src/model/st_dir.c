/*
 * st_dir.c - a model directory's safetensors shards behind one name lookup (st_dir.h).
 */
#include "model/st_dir.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "core/fileio.h"
#include "core/json_file.h"

void st_dir_release(StDir *d) {
    for (int i = 0; i < d->n_st; i++) {
        if (!d->borrowed) safetensors_close(&d->st[i]);
        free(d->shard_names[i]);
        free(d->used[i]);
    }
    if (!d->borrowed) free(d->st);
    free(d->shard_names);
    free(d->used);
    json_decref(d->index);
    free(d->desc);
    memset(d, 0, sizeof *d);
}

void st_dir_wrap(StDir *d, const SafeTensors *st) {
    memset(d, 0, sizeof *d);
    d->borrowed = true;
    d->st = (SafeTensors *)st; // never written through: borrowed
    d->n_st = 1;
    d->shard_names = xcalloc(1, sizeof *d->shard_names);
    d->used = xcalloc(1, sizeof *d->used);
    d->shard_names[0] = xstrdup(st->file.path ? st->file.path : "(memory)");
    d->used[0] = xcalloc((size_t)st->n_tensors + 1, 1);
    d->desc = xstrdup(d->shard_names[0]);
}

// Opens shard NAME of DIR; with a Model, the model owns the mapping from then on.
static Status open_shard(StDir *d, const char *dir, const char *name, Model *m) {
    if (m && m->n_files >= MODEL_MAX_FILES)
        return fail(STATUS_ERR_UNSUPPORTED, "'%s' has more than %d shards", d->desc,
                    MODEL_MAX_FILES);
    if (!*name || strchr(name, '/') || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return fail(STATUS_ERR_FORMAT, "'%s' names a bad shard file '%s'", d->desc, name);
    char *path = path_join(dir, name);
    if (!path_is_file(path)) {
        Status s = fail(STATUS_ERR_IO, "'%s' points to shard '%s' but '%s' does not exist", d->desc,
                        name, path);
        free(path);
        return s;
    }
    int i = d->n_st;
    d->st = xrealloc(d->st, (size_t)(i + 1) * sizeof *d->st);
    d->shard_names = xrealloc(d->shard_names, (size_t)(i + 1) * sizeof *d->shard_names);
    d->used = xrealloc(d->used, (size_t)(i + 1) * sizeof *d->used);
    Status s = safetensors_open(&d->st[i], path);
    free(path);
    if (s != STATUS_OK) return s;
    d->shard_names[i] = xstrdup(name);
    d->used[i] = xcalloc((size_t)d->st[i].n_tensors + 1, 1);
    d->n_st++;
    if (m) { // safetensors_close leaves a moved mapping alone
        m->files[m->n_files++] = d->st[i].file;
        d->st[i].file.data = NULL;
        d->st[i].file.size = 0;
        d->st[i].file.path = xstrdup(m->files[m->n_files - 1].path);
    }
    return STATUS_OK;
}

static Status read_index(StDir *d, const char *dir, Model *m) {
    json_t *root;
    Status s = json_read_file(&root, d->desc, JSON_REJECT_DUPLICATES);
    if (s != STATUS_OK) return s;
    json_t *wm = json_is_object(root) ? json_object_get(root, "weight_map") : NULL;
    if (!json_is_object(wm)) {
        json_decref(root);
        return fail(STATUS_ERR_FORMAT, "'%s' has no 'weight_map' object", d->desc);
    }
    d->index = json_incref(wm);
    json_decref(root);
    const char *name;
    json_t *v;
    json_object_foreach((json_t *)d->index, name, v) {
        if (!json_is_string(v))
            return fail(STATUS_ERR_FORMAT, "'%s': weight_map entry '%s' is not a file name",
                        d->desc, name);
        const char *shard = json_string_value(v);
        bool have = false;
        for (int i = 0; i < d->n_st && !have; i++)
            have = strcmp(d->shard_names[i], shard) == 0;
        if (!have && (s = open_shard(d, dir, shard, m)) != STATUS_OK) return s;
    }
    if (d->n_st == 0) return fail(STATUS_ERR_FORMAT, "'%s' has an empty weight_map", d->desc);
    return STATUS_OK;
}

Status st_dir_open(StDir *d, const char *dir, Model *m) {
    memset(d, 0, sizeof *d);
    char *single = path_join(dir, "model.safetensors");
    char *index = path_join(dir, "model.safetensors.index.json");
    Status s;
    if (path_is_file(index)) {
        d->desc = index;
        index = NULL;
        s = read_index(d, dir, m);
    } else if (path_is_file(single)) {
        d->desc = xstrdup(single);
        s = open_shard(d, dir, "model.safetensors", m);
    } else {
        char *bin = path_join(dir, "pytorch_model.bin");
        s = fail(
            STATUS_ERR_IO, "no model.safetensors or model.safetensors.index.json in '%s'%s", dir,
            path_is_file(bin) ? " (pytorch_model.bin is not supported: re-save with safetensors)"
                              : "");
        free(bin);
    }
    free(single);
    free(index);
    if (s != STATUS_OK) st_dir_release(d);
    return s;
}

// Finds NAME; *shard / *idx locate it for the "used" marks.
static const SafeTensor *find_at(const StDir *d, const char *name, int *shard, int *idx) {
    int lo = 0, hi = d->n_st;
    if (d->index) { // only the shard the index names
        const json_t *v = json_object_get(d->index, name);
        if (!v) return NULL;
        for (lo = 0; lo < d->n_st; lo++)
            if (strcmp(d->shard_names[lo], json_string_value(v)) == 0) break;
        hi = lo + 1;
    }
    for (int i = lo; i < hi && i < d->n_st; i++) {
        const SafeTensor *t = safetensors_find(&d->st[i], name);
        if (t) {
            *shard = i;
            *idx = (int)(t - d->st[i].tensors);
            return t;
        }
    }
    return NULL;
}

const SafeTensor *st_dir_find(const StDir *d, const char *name, const char **file) {
    int sh, ix;
    const SafeTensor *t = find_at(d, name, &sh, &ix);
    if (file) *file = t ? d->st[sh].file.path : d->desc;
    return t;
}

bool st_dir_listed(const StDir *d, const char *name) {
    if (d->index) return json_object_get(d->index, name) != NULL;
    return st_dir_find(d, name, NULL) != NULL;
}

Status st_dir_missing(const StDir *d, const char *what, const char *name) {
    const json_t *v = d->index ? json_object_get(d->index, name) : NULL;
    if (v)
        return fail(STATUS_ERR_FORMAT, "'%s' maps %s '%s' to '%s', which does not contain it",
                    d->desc, what, name, json_string_value(v));
    return fail(STATUS_ERR_FORMAT, "%s '%s' is missing from '%s'", what, name, d->desc);
}

void st_dir_use(StDir *d, const char *name) {
    int sh, ix;
    if (find_at(d, name, &sh, &ix)) d->used[sh][ix] = 1;
}

static void shape_str(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t o = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (o < n) snprintf(buf + o, n - o, "]");
}

Status st_dir_bind(StDir *d, Model *m, Tensor *t, const char *name, int64_t d0, int64_t d1) {
    int sh = 0, ix = 0;
    const SafeTensor *st = find_at(d, name, &sh, &ix);
    if (!st) return st_dir_missing(d, "tensor", name);
    const char *file = d->st[sh].file.path;
    DType dt;
    switch (st->dtype) {
    case ST_F32: dt = DTYPE_F32; break;
    case ST_F16: dt = DTYPE_F16; break;
    case ST_BF16: dt = DTYPE_BF16; break;
    default:
        return fail(STATUS_ERR_UNSUPPORTED,
                    "tensor '%s' in '%s' has dtype %s (only F32, F16, BF16)", name, file,
                    safe_dtype_name(st->dtype));
    }
    int ndim = d1 > 0 ? 2 : 1;
    int64_t want[2] = {d0, d1};
    if (st->ndim != ndim || st->shape[0] != d0 || (ndim == 2 && st->shape[1] != d1)) {
        char got[128], exp[64];
        shape_str(got, sizeof got, st->ndim, st->shape);
        shape_str(exp, sizeof exp, ndim, want);
        return fail(STATUS_ERR_FORMAT,
                    "tensor '%s' in '%s' has shape %s, but config.json implies %s", name, file, got,
                    exp);
    }
    *t = (Tensor){
        .dtype = dt, .ndim = ndim, .shape = {d0, ndim == 2 ? d1 : 0}, .data = (void *)st->data};
    // safetensors does not promise alignment; kernels read elements in place
    if ((uintptr_t)st->data % dtype_size(dt) != 0) {
        void *buf = model_alloc(m, (size_t)st->nbytes);
        if (!buf) return STATUS_ERR_NOMEM;
        memcpy(buf, st->data, (size_t)st->nbytes);
        t->data = buf;
    }
    d->used[sh][ix] = 1;
    return STATUS_OK;
}

Status st_dir_check_unused(const StDir *d) {
    for (int i = 0; i < d->n_st; i++)
        for (int j = 0; j < d->st[i].n_tensors; j++)
            if (!d->used[i][j])
                return fail(
                    STATUS_ERR_FORMAT,
                    "unexpected tensor '%s' in '%s' (not part of the model config.json describes)",
                    d->st[i].tensors[j].name, d->st[i].file.path);
    return STATUS_OK;
}
