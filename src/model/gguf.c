/*
 * gguf.c - GGUF reader (memory-mapped, fully validated), dequantization of ggml
 * block types to float32 and the atomic GGUF v3 writer. See gguf.h and
 * docs/formats.md "GGUF".
 */
#include "gguf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf.c reads little-endian files with memcpy and assumes a little-endian host"
#endif

// Dequantization must round like ggml's reference (one multiply, then one add):
// a fused multiply-add would change the last bit of d*q + m.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

/* ---- type tables ---------------------------------------------------------- */

static const char *const k_type_names[GGUF_TYPE_COUNT] = {
    "uint8", "int8",   "uint16", "int16",  "uint32", "int32",   "float32",
    "bool",  "string", "array",  "uint64", "int64",  "float64",
};

size_t gguf_type_size(GgufType t) {
    switch (t) {
    case GGUF_TYPE_UINT8:
    case GGUF_TYPE_INT8:
    case GGUF_TYPE_BOOL: return 1;
    case GGUF_TYPE_UINT16:
    case GGUF_TYPE_INT16: return 2;
    case GGUF_TYPE_UINT32:
    case GGUF_TYPE_INT32:
    case GGUF_TYPE_FLOAT32: return 4;
    case GGUF_TYPE_UINT64:
    case GGUF_TYPE_INT64:
    case GGUF_TYPE_FLOAT64: return 8;
    default: return 0;
    }
}

const char *gguf_type_name(GgufType t) {
    return (unsigned)t < GGUF_TYPE_COUNT ? k_type_names[t] : "unknown";
}

typedef struct {
    const char *name;
    int block;    // elements per block
    size_t bytes; // bytes per block
} TensorTypeInfo;

// ggml's type_traits (blck_size, type_size); {NULL, 0, 0} marks retired numbers.
static const TensorTypeInfo k_ttypes[GGUF_TENSOR_TYPE_COUNT] = {
    [GGUF_TENSOR_F32] = {"F32", 1, 4},
    [GGUF_TENSOR_F16] = {"F16", 1, 2},
    [GGUF_TENSOR_Q4_0] = {"Q4_0", 32, 2 + 16},
    [GGUF_TENSOR_Q4_1] = {"Q4_1", 32, 2 + 2 + 16},
    [GGUF_TENSOR_Q5_0] = {"Q5_0", 32, 2 + 4 + 16},
    [GGUF_TENSOR_Q5_1] = {"Q5_1", 32, 2 + 2 + 4 + 16},
    [GGUF_TENSOR_Q8_0] = {"Q8_0", 32, 2 + 32},
    [GGUF_TENSOR_Q8_1] = {"Q8_1", 32, 2 + 2 + 32},
    [GGUF_TENSOR_Q2_K] = {"Q2_K", 256, 2 + 2 + 16 + 64},
    [GGUF_TENSOR_Q3_K] = {"Q3_K", 256, 2 + 64 + 32 + 12},
    [GGUF_TENSOR_Q4_K] = {"Q4_K", 256, 2 + 2 + 128 + 12},
    [GGUF_TENSOR_Q5_K] = {"Q5_K", 256, 2 + 2 + 128 + 32 + 12},
    [GGUF_TENSOR_Q6_K] = {"Q6_K", 256, 2 + 128 + 64 + 16},
    [GGUF_TENSOR_Q8_K] = {"Q8_K", 256, 4 + 256 + 32},
    [GGUF_TENSOR_IQ2_XXS] = {"IQ2_XXS", 256, 2 + 64},
    [GGUF_TENSOR_IQ2_XS] = {"IQ2_XS", 256, 2 + 64 + 8},
    [GGUF_TENSOR_IQ3_XXS] = {"IQ3_XXS", 256, 2 + 64 + 32},
    [GGUF_TENSOR_IQ1_S] = {"IQ1_S", 256, 2 + 32 + 16},
    [GGUF_TENSOR_IQ4_NL] = {"IQ4_NL", 32, 2 + 16},
    [GGUF_TENSOR_IQ3_S] = {"IQ3_S", 256, 2 + 64 + 32 + 8 + 4},
    [GGUF_TENSOR_IQ2_S] = {"IQ2_S", 256, 2 + 64 + 16},
    [GGUF_TENSOR_IQ4_XS] = {"IQ4_XS", 256, 2 + 2 + 128 + 4},
    [GGUF_TENSOR_I8] = {"I8", 1, 1},
    [GGUF_TENSOR_I16] = {"I16", 1, 2},
    [GGUF_TENSOR_I32] = {"I32", 1, 4},
    [GGUF_TENSOR_I64] = {"I64", 1, 8},
    [GGUF_TENSOR_F64] = {"F64", 1, 8},
    [GGUF_TENSOR_IQ1_M] = {"IQ1_M", 256, 32 + 16 + 8},
    [GGUF_TENSOR_BF16] = {"BF16", 1, 2},
    [GGUF_TENSOR_TQ1_0] = {"TQ1_0", 256, 2 + 52},
    [GGUF_TENSOR_TQ2_0] = {"TQ2_0", 256, 2 + 64},
    [GGUF_TENSOR_MXFP4] = {"MXFP4", 32, 1 + 16},
};

int gguf_tensor_block_size(GgufTensorType t) {
    return (unsigned)t < GGUF_TENSOR_TYPE_COUNT ? k_ttypes[t].block : 0;
}
size_t gguf_tensor_type_size(GgufTensorType t) {
    return (unsigned)t < GGUF_TENSOR_TYPE_COUNT ? k_ttypes[t].bytes : 0;
}
const char *gguf_tensor_type_name(GgufTensorType t) {
    return (unsigned)t < GGUF_TENSOR_TYPE_COUNT && k_ttypes[t].name ? k_ttypes[t].name : "unknown";
}

/* ---- reader --------------------------------------------------------------- */

// Limits that keep hostile files from costing much before they are rejected.
#define GGUF_MAX_DEPTH 8 // nesting of arrays of arrays

typedef struct {
    const unsigned char *p;
    uint64_t pos, size;
    const char *path;
} Rd;

static Status rd_need(Rd *r, uint64_t n, const char *what) {
    if (n > r->size - r->pos)
        return fail(STATUS_ERR_FORMAT,
                    "'%s' is truncated: %s at offset %llu needs %llu bytes, %llu left", r->path,
                    what, (unsigned long long)r->pos, (unsigned long long)n,
                    (unsigned long long)(r->size - r->pos));
    return STATUS_OK;
}

static Status rd_u32(Rd *r, uint32_t *v, const char *what) {
    Status s = rd_need(r, 4, what);
    if (s != STATUS_OK) return s;
    memcpy(v, r->p + r->pos, 4);
    r->pos += 4;
    return STATUS_OK;
}

static Status rd_u64(Rd *r, uint64_t *v, const char *what) {
    Status s = rd_need(r, 8, what);
    if (s != STATUS_OK) return s;
    memcpy(v, r->p + r->pos, 8);
    r->pos += 8;
    return STATUS_OK;
}

static Status rd_str(Rd *r, GgufStr *out, const char *what) {
    uint64_t len;
    Status s = rd_u64(r, &len, what);
    if (s != STATUS_OK) return s;
    if ((s = rd_need(r, len, what)) != STATUS_OK) return s;
    out->ptr = (const char *)(r->p + r->pos);
    out->len = len;
    r->pos += len;
    return STATUS_OK;
}

static void *arena_alloc(Gguf *g, size_t n) {
    void *p = calloc(1, n ? n : 1);
    if (!p) return NULL;
    if (g->n_arena == g->cap_arena) {
        g->cap_arena = g->cap_arena ? 2 * g->cap_arena : 16;
        g->arena = xrealloc(g->arena, (size_t)g->cap_arena * sizeof *g->arena);
    }
    g->arena[g->n_arena++] = p;
    return p;
}

// Minimum bytes an element of type t occupies (for bounding counts before allocating).
static uint64_t min_elem_bytes(GgufType t) {
    if (t == GGUF_TYPE_STRING) return 8;
    if (t == GGUF_TYPE_ARRAY) return 12;
    return gguf_type_size(t);
}

static Status rd_value(Gguf *g, Rd *r, GgufType type, GgufValue *out, int depth, const char *key) {
    memset(out, 0, sizeof *out);
    out->type = type;
    const char *path = r->path;
    Status s = STATUS_OK;
    size_t sz = gguf_type_size(type);
    if (sz) {
        if ((s = rd_need(r, sz, key)) != STATUS_OK) return s;
        const unsigned char *p = r->p + r->pos;
        r->pos += sz;
        switch (type) {
        case GGUF_TYPE_UINT8: out->v.u = p[0]; break;
        case GGUF_TYPE_INT8: out->v.i = (int8_t)p[0]; break;
        case GGUF_TYPE_BOOL: out->v.b = p[0] != 0; break;
        case GGUF_TYPE_UINT16: {
            uint16_t x;
            memcpy(&x, p, 2);
            out->v.u = x;
            break;
        }
        case GGUF_TYPE_INT16: {
            int16_t x;
            memcpy(&x, p, 2);
            out->v.i = x;
            break;
        }
        case GGUF_TYPE_UINT32: {
            uint32_t x;
            memcpy(&x, p, 4);
            out->v.u = x;
            break;
        }
        case GGUF_TYPE_INT32: {
            int32_t x;
            memcpy(&x, p, 4);
            out->v.i = x;
            break;
        }
        case GGUF_TYPE_FLOAT32: {
            float x;
            memcpy(&x, p, 4);
            out->v.f = x;
            break;
        }
        case GGUF_TYPE_UINT64: memcpy(&out->v.u, p, 8); break;
        case GGUF_TYPE_INT64: memcpy(&out->v.i, p, 8); break;
        case GGUF_TYPE_FLOAT64: memcpy(&out->v.f, p, 8); break;
        default: break;
        }
        return STATUS_OK;
    }
    if (type == GGUF_TYPE_STRING) return rd_str(r, &out->v.str, key);
    if (type != GGUF_TYPE_ARRAY)
        return fail(STATUS_ERR_FORMAT, "'%s': key '%s' has unknown value type %u", path, key,
                    (unsigned)type);
    if (depth >= GGUF_MAX_DEPTH)
        return fail(STATUS_ERR_FORMAT, "'%s': key '%s' nests arrays deeper than %d", path, key,
                    GGUF_MAX_DEPTH);
    uint32_t et;
    uint64_t n;
    if ((s = rd_u32(r, &et, key)) != STATUS_OK || (s = rd_u64(r, &n, key)) != STATUS_OK) return s;
    if (et >= GGUF_TYPE_COUNT)
        return fail(STATUS_ERR_FORMAT, "'%s': array '%s' has unknown element type %u", path, key,
                    et);
    out->elem_type = (GgufType)et;
    out->n = n;
    uint64_t left = r->size - r->pos;
    if (n > left / min_elem_bytes(out->elem_type))
        return fail(STATUS_ERR_FORMAT,
                    "'%s': array '%s' claims %llu %s elements but only %llu bytes are left", path,
                    key, (unsigned long long)n, gguf_type_name(out->elem_type),
                    (unsigned long long)left);
    if (gguf_type_size(out->elem_type)) {
        out->raw = r->p + r->pos;
        r->pos += n * gguf_type_size(out->elem_type); // bounded by the check above
        return STATUS_OK;
    }
    if (out->elem_type == GGUF_TYPE_STRING) {
        out->strs = arena_alloc(g, (size_t)n * sizeof *out->strs);
        if (!out->strs)
            return fail(STATUS_ERR_NOMEM, "'%s': out of memory for array '%s'", path, key);
        for (uint64_t i = 0; i < n; i++)
            if ((s = rd_str(r, &out->strs[i], key)) != STATUS_OK) return s;
        return STATUS_OK;
    }
    out->items = arena_alloc(g, (size_t)n * sizeof *out->items);
    if (!out->items) return fail(STATUS_ERR_NOMEM, "'%s': out of memory for array '%s'", path, key);
    for (uint64_t i = 0; i < n; i++)
        if ((s = rd_value(g, r, GGUF_TYPE_ARRAY, &out->items[i], depth + 1, key)) != STATUS_OK)
            return s;
    return STATUS_OK;
}

static Status gguf_parse_kv(Gguf *g, Rd *r, uint64_t n_kv) {
    Status s;
    g->kv = calloc((size_t)n_kv + 1, sizeof *g->kv);
    if (!g->kv)
        return fail(STATUS_ERR_NOMEM, "'%s': out of memory for %llu keys", r->path,
                    (unsigned long long)n_kv);
    for (uint64_t i = 0; i < n_kv; i++) {
        GgufStr key;
        uint32_t type;
        if ((s = rd_str(r, &key, "metadata key")) != STATUS_OK) return s;
        char *k = gguf_str_dup(key);
        g->kv[g->n_kv].key = k;
        g->n_kv++;
        if (strlen(k) != key.len)
            return fail(STATUS_ERR_FORMAT, "'%s': metadata key %llu contains a NUL byte", r->path,
                        (unsigned long long)i);
        if ((s = rd_u32(r, &type, k)) != STATUS_OK) return s;
        if (type >= GGUF_TYPE_COUNT)
            return fail(STATUS_ERR_FORMAT, "'%s': key '%s' has unknown value type %u", r->path, k,
                        type);
        if ((s = rd_value(g, r, (GgufType)type, &g->kv[g->n_kv - 1].val, 0, k)) != STATUS_OK)
            return s;
    }
    return STATUS_OK;
}

static Status gguf_parse_tensor_info(Gguf *g, Rd *r, GgufTensorInfo *t) {
    GgufStr name;
    uint32_t n_dims, type;
    Status s = rd_str(r, &name, "tensor name");
    if (s != STATUS_OK) return s;
    t->name = gguf_str_dup(name);
    if (strlen(t->name) != name.len)
        return fail(STATUS_ERR_FORMAT, "'%s': tensor name contains a NUL byte", r->path);
    if ((s = rd_u32(r, &n_dims, t->name)) != STATUS_OK) return s;
    if (n_dims > GGUF_MAX_DIMS)
        return fail(STATUS_ERR_FORMAT, "'%s': tensor '%s' has %u dimensions (at most %d)", r->path,
                    t->name, n_dims, GGUF_MAX_DIMS);
    t->n_dims = (int)n_dims;
    uint64_t n_elems = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) {
        uint64_t ne = 1;
        if (d < t->n_dims && (s = rd_u64(r, &ne, t->name)) != STATUS_OK) return s;
        if (ne > (uint64_t)INT64_MAX || mul_overflow_u64(n_elems, ne, &n_elems) ||
            n_elems > (uint64_t)INT64_MAX)
            return fail(STATUS_ERR_FORMAT,
                        "'%s': tensor '%s' has an absurd shape (dimension %d = %llu)", r->path,
                        t->name, d, (unsigned long long)ne);
        t->ne[d] = (int64_t)ne;
    }
    t->n_elems = (int64_t)n_elems;
    if ((s = rd_u32(r, &type, t->name)) != STATUS_OK) return s;
    if (type >= GGUF_TENSOR_TYPE_COUNT || !k_ttypes[type].name)
        return fail(STATUS_ERR_FORMAT, "'%s': tensor '%s' has unknown ggml type %u", r->path,
                    t->name, type);
    t->type = (GgufTensorType)type;
    const TensorTypeInfo *ti = &k_ttypes[type];
    if (t->ne[0] % ti->block != 0)
        return fail(STATUS_ERR_FORMAT,
                    "'%s': tensor '%s' row length %lld is not a multiple of the %s block size %d",
                    r->path, t->name, (long long)t->ne[0], ti->name, ti->block);
    if (mul_overflow_u64(n_elems / (uint64_t)ti->block, ti->bytes, &t->nbytes))
        return fail(STATUS_ERR_FORMAT, "'%s': tensor '%s' byte size overflows", r->path, t->name);
    return rd_u64(r, &t->offset, t->name);
}

/* Sorted indexes (by name) of keys and tensors: lookups are O(log n) and duplicates are
 * found in O(n log n), so a hostile file with millions of entries cannot stall us. */
static int cmp_kv(const void *a, const void *b, void *ctx) {
    const Gguf *g = ctx;
    return strcmp(g->kv[*(const int64_t *)a].key, g->kv[*(const int64_t *)b].key);
}
static int cmp_tensor(const void *a, const void *b, void *ctx) {
    const Gguf *g = ctx;
    return strcmp(g->tensors[*(const int64_t *)a].name, g->tensors[*(const int64_t *)b].name);
}

static Status gguf_build_index(Gguf *g) {
    g->kv_index = xmalloc((size_t)(g->n_kv + 1) * sizeof *g->kv_index);
    g->tensor_index = xmalloc((size_t)(g->n_tensors + 1) * sizeof *g->tensor_index);
    for (int64_t i = 0; i < g->n_kv; i++)
        g->kv_index[i] = i;
    for (int64_t i = 0; i < g->n_tensors; i++)
        g->tensor_index[i] = i;
    qsort_r(g->kv_index, (size_t)g->n_kv, sizeof *g->kv_index, cmp_kv, g);
    qsort_r(g->tensor_index, (size_t)g->n_tensors, sizeof *g->tensor_index, cmp_tensor, g);
    for (int64_t i = 1; i < g->n_kv; i++)
        if (strcmp(g->kv[g->kv_index[i - 1]].key, g->kv[g->kv_index[i]].key) == 0)
            return fail(STATUS_ERR_FORMAT, "'%s': duplicate metadata key '%s'", g->file.path,
                        g->kv[g->kv_index[i]].key);
    for (int64_t i = 1; i < g->n_tensors; i++)
        if (strcmp(g->tensors[g->tensor_index[i - 1]].name, g->tensors[g->tensor_index[i]].name) ==
            0)
            return fail(STATUS_ERR_FORMAT, "'%s': duplicate tensor name '%s'", g->file.path,
                        g->tensors[g->tensor_index[i]].name);
    g->indexed = true;
    return STATUS_OK;
}

static Status gguf_parse(Gguf *g) {
    Rd r = {g->file.data, 0, g->file.size, g->file.path};
    Status s;
    if (r.size < 4 || memcmp(r.p, "GGUF", 4) != 0)
        return fail(STATUS_ERR_FORMAT, "'%s' is not a GGUF file (bad magic)", r.path);
    r.pos = 4;
    if ((s = rd_u32(&r, &g->version, "version")) != STATUS_OK) return s;
    if (g->version != 2 && g->version != 3)
        return fail(STATUS_ERR_UNSUPPORTED, "'%s': GGUF version %u is not supported (2 or 3)",
                    r.path, g->version);
    uint64_t n_tensors, n_kv;
    if ((s = rd_u64(&r, &n_tensors, "tensor count")) != STATUS_OK) return s;
    if ((s = rd_u64(&r, &n_kv, "metadata count")) != STATUS_OK) return s;
    // a key/value takes >= 13 bytes, a tensor info >= 24
    uint64_t left = r.size - r.pos;
    if (n_kv > left / 13)
        return fail(STATUS_ERR_FORMAT, "'%s': absurd metadata count %llu for a %zu-byte file",
                    r.path, (unsigned long long)n_kv, g->file.size);
    if (n_tensors > left / 24)
        return fail(STATUS_ERR_FORMAT, "'%s': absurd tensor count %llu for a %zu-byte file", r.path,
                    (unsigned long long)n_tensors, g->file.size);
    if ((s = gguf_parse_kv(g, &r, n_kv)) != STATUS_OK) return s;

    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const GgufKV *al = NULL; // the index is built later: scan
    for (int64_t i = 0; i < g->n_kv; i++)
        if (strcmp(g->kv[i].key, "general.alignment") == 0) al = &g->kv[i];
    if (al) {
        if (al->val.type != GGUF_TYPE_UINT32 || al->val.v.u == 0 ||
            (al->val.v.u & (al->val.v.u - 1)))
            return fail(STATUS_ERR_FORMAT, "'%s': general.alignment must be a uint32 power of two",
                        r.path);
        g->alignment = al->val.v.u;
    }

    g->tensors = calloc((size_t)n_tensors + 1, sizeof *g->tensors);
    if (!g->tensors) return fail(STATUS_ERR_NOMEM, "'%s': out of memory for tensor table", r.path);
    for (uint64_t i = 0; i < n_tensors; i++) {
        g->n_tensors++;
        if ((s = gguf_parse_tensor_info(g, &r, &g->tensors[i])) != STATUS_OK) return s;
    }
    uint64_t pad = (g->alignment - r.pos % g->alignment) % g->alignment;
    g->data_offset = r.pos + pad;
    uint64_t data_size = g->data_offset <= r.size ? r.size - g->data_offset : 0;
    if (n_tensors > 0 && g->data_offset > r.size)
        return fail(STATUS_ERR_FORMAT,
                    "'%s' is truncated: the data section would start at %llu, past the end (%llu)",
                    r.path, (unsigned long long)g->data_offset, (unsigned long long)r.size);
    for (int64_t i = 0; i < g->n_tensors; i++) {
        GgufTensorInfo *t = &g->tensors[i];
        if (t->offset % g->alignment != 0)
            return fail(STATUS_ERR_FORMAT,
                        "'%s': tensor '%s' offset %llu is not a multiple of the alignment %llu",
                        r.path, t->name, (unsigned long long)t->offset,
                        (unsigned long long)g->alignment);
        if (t->offset > data_size || t->nbytes > data_size - t->offset)
            return fail(
                STATUS_ERR_FORMAT,
                "'%s': tensor '%s' (%llu bytes at data offset %llu) runs past the end of the "
                "file (data section is %llu bytes; truncated?)",
                r.path, t->name, (unsigned long long)t->nbytes, (unsigned long long)t->offset,
                (unsigned long long)data_size);
        t->data = g->file.data + g->data_offset + t->offset;
    }
    return gguf_build_index(g);
}

Status gguf_open(Gguf *g, const char *path) {
    memset(g, 0, sizeof *g);
    Status s = mapped_file_open(&g->file, path);
    if (s != STATUS_OK) return s;
    if ((s = gguf_parse(g)) != STATUS_OK) gguf_close(g);
    return s;
}

Status gguf_open_buffer(Gguf *g, const void *data, size_t size, const char *name) {
    memset(g, 0, sizeof *g);
    g->borrowed = true;
    g->file.data = data;
    g->file.size = size;
    g->file.path = xstrdup(name);
    Status s = gguf_parse(g);
    if (s != STATUS_OK) gguf_close(g);
    return s;
}

void gguf_close(Gguf *g) {
    if (g->borrowed) {
        free(g->file.path);
        memset(&g->file, 0, sizeof g->file);
    }
    mapped_file_close(&g->file);
    for (int64_t i = 0; i < g->n_kv; i++)
        free(g->kv[i].key);
    free(g->kv);
    for (int64_t i = 0; i < g->n_tensors; i++)
        free(g->tensors[i].name);
    free(g->tensors);
    for (int64_t i = 0; i < g->n_arena; i++)
        free(g->arena[i]);
    free(g->arena);
    free(g->kv_index);
    free(g->tensor_index);
    memset(g, 0, sizeof *g);
}

void gguf_take_file(Gguf *g, MappedFile *dst) {
    CHECK(!g->borrowed);
    *dst = g->file;
    // keep a private copy of the path for messages; the mapping now belongs to dst
    g->file.path = xstrdup(dst->path);
    g->file.data = NULL;
    g->file.size = 0;
}

const GgufKV *gguf_find(const Gguf *g, const char *key) {
    if (!g->indexed) return NULL;
    int64_t lo = 0, hi = g->n_kv - 1;
    while (lo <= hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int c = strcmp(g->kv[g->kv_index[mid]].key, key);
        if (c == 0) return &g->kv[g->kv_index[mid]];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return NULL;
}

const GgufTensorInfo *gguf_find_tensor(const Gguf *g, const char *name) {
    if (!g->indexed) return NULL;
    int64_t lo = 0, hi = g->n_tensors - 1;
    while (lo <= hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int c = strcmp(g->tensors[g->tensor_index[mid]].name, name);
        if (c == 0) return &g->tensors[g->tensor_index[mid]];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return NULL;
}

char *gguf_str_dup(GgufStr s) {
    char *p = xmalloc((size_t)s.len + 1);
    if (s.len) memcpy(p, s.ptr, (size_t)s.len);
    p[s.len] = '\0';
    return p;
}

bool gguf_str_eq(GgufStr s, const char *c) {
    size_t n = strlen(c);
    return s.len == n && memcmp(s.ptr, c, n) == 0;
}

static bool type_is_uint(GgufType t) {
    return t == GGUF_TYPE_UINT8 || t == GGUF_TYPE_UINT16 || t == GGUF_TYPE_UINT32 ||
           t == GGUF_TYPE_UINT64;
}
static bool type_is_sint(GgufType t) {
    return t == GGUF_TYPE_INT8 || t == GGUF_TYPE_INT16 || t == GGUF_TYPE_INT32 ||
           t == GGUF_TYPE_INT64;
}

static Status missing(const Gguf *g, const char *key) {
    return fail(STATUS_ERR_FORMAT, "'%s': missing metadata key '%s'", g->file.path, key);
}
static Status wrong_type(const Gguf *g, const char *key, GgufType got, const char *want) {
    return fail(STATUS_ERR_FORMAT, "'%s': metadata key '%s' is a %s, expected %s", g->file.path,
                key, gguf_type_name(got), want);
}

Status gguf_get_int(const Gguf *g, const char *key, int64_t *out) {
    const GgufKV *kv = gguf_find(g, key);
    if (!kv) return STATUS_OK;
    GgufType t = kv->val.type;
    if (type_is_sint(t))
        *out = kv->val.v.i;
    else if (type_is_uint(t)) {
        if (kv->val.v.u > (uint64_t)INT64_MAX)
            return fail(STATUS_ERR_FORMAT, "'%s': metadata key '%s' value %llu out of range",
                        g->file.path, key, (unsigned long long)kv->val.v.u);
        *out = (int64_t)kv->val.v.u;
    } else if (t == GGUF_TYPE_BOOL)
        *out = kv->val.v.b;
    else
        return wrong_type(g, key, t, "an integer");
    return STATUS_OK;
}

Status gguf_require_int(const Gguf *g, const char *key, int64_t *out) {
    return gguf_find(g, key) ? gguf_get_int(g, key, out) : missing(g, key);
}

Status gguf_get_float(const Gguf *g, const char *key, double *out) {
    const GgufKV *kv = gguf_find(g, key);
    if (!kv) return STATUS_OK;
    GgufType t = kv->val.type;
    if (t == GGUF_TYPE_FLOAT32 || t == GGUF_TYPE_FLOAT64)
        *out = kv->val.v.f;
    else if (type_is_sint(t))
        *out = (double)kv->val.v.i;
    else if (type_is_uint(t))
        *out = (double)kv->val.v.u;
    else
        return wrong_type(g, key, t, "a number");
    return STATUS_OK;
}

Status gguf_require_float(const Gguf *g, const char *key, double *out) {
    return gguf_find(g, key) ? gguf_get_float(g, key, out) : missing(g, key);
}

Status gguf_get_bool(const Gguf *g, const char *key, bool *out) {
    const GgufKV *kv = gguf_find(g, key);
    if (!kv) return STATUS_OK;
    if (kv->val.type == GGUF_TYPE_BOOL)
        *out = kv->val.v.b;
    else if (type_is_uint(kv->val.type))
        *out = kv->val.v.u != 0;
    else if (type_is_sint(kv->val.type))
        *out = kv->val.v.i != 0;
    else
        return wrong_type(g, key, kv->val.type, "a bool");
    return STATUS_OK;
}

Status gguf_get_str(const Gguf *g, const char *key, GgufStr *out) {
    const GgufKV *kv = gguf_find(g, key);
    if (!kv) return STATUS_OK;
    if (kv->val.type != GGUF_TYPE_STRING) return wrong_type(g, key, kv->val.type, "a string");
    *out = kv->val.v.str;
    return STATUS_OK;
}

Status gguf_require_str(const Gguf *g, const char *key, GgufStr *out) {
    return gguf_find(g, key) ? gguf_get_str(g, key, out) : missing(g, key);
}

Status gguf_get_arr(const Gguf *g, const char *key, GgufType elem, const GgufValue **out) {
    *out = NULL;
    const GgufKV *kv = gguf_find(g, key);
    if (!kv) return STATUS_OK;
    if (kv->val.type != GGUF_TYPE_ARRAY) return wrong_type(g, key, kv->val.type, "an array");
    if (elem != GGUF_TYPE_COUNT && kv->val.elem_type != elem)
        return fail(STATUS_ERR_FORMAT, "'%s': metadata key '%s' is an array of %s, expected %s",
                    g->file.path, key, gguf_type_name(kv->val.elem_type), gguf_type_name(elem));
    *out = &kv->val;
    return STATUS_OK;
}

// Saturating float -> int64 (NaN -> 0): a plain cast of an out-of-range value is undefined.
static int64_t f64_to_i64(double x) {
    if (!(x == x)) return 0;
    if (x >= 9223372036854775807.0) return INT64_MAX;
    if (x <= -9223372036854775808.0) return INT64_MIN;
    return (int64_t)x;
}

int64_t gguf_arr_int(const GgufValue *a, uint64_t i) {
    CHECK(a->type == GGUF_TYPE_ARRAY && i < a->n && a->raw);
    const unsigned char *p = (const unsigned char *)a->raw + i * gguf_type_size(a->elem_type);
    switch (a->elem_type) {
    case GGUF_TYPE_UINT8:
    case GGUF_TYPE_BOOL: return p[0];
    case GGUF_TYPE_INT8: return (int8_t)p[0];
    case GGUF_TYPE_UINT16: {
        uint16_t x;
        memcpy(&x, p, 2);
        return x;
    }
    case GGUF_TYPE_INT16: {
        int16_t x;
        memcpy(&x, p, 2);
        return x;
    }
    case GGUF_TYPE_UINT32: {
        uint32_t x;
        memcpy(&x, p, 4);
        return x;
    }
    case GGUF_TYPE_INT32: {
        int32_t x;
        memcpy(&x, p, 4);
        return x;
    }
    case GGUF_TYPE_UINT64: {
        uint64_t x;
        memcpy(&x, p, 8);
        return (int64_t)x;
    }
    case GGUF_TYPE_INT64: {
        int64_t x;
        memcpy(&x, p, 8);
        return x;
    }
    case GGUF_TYPE_FLOAT32: {
        float x;
        memcpy(&x, p, 4);
        return f64_to_i64(x);
    }
    case GGUF_TYPE_FLOAT64: {
        double x;
        memcpy(&x, p, 8);
        return f64_to_i64(x);
    }
    default: return 0;
    }
}

double gguf_arr_float(const GgufValue *a, uint64_t i) {
    CHECK(a->type == GGUF_TYPE_ARRAY && i < a->n && a->raw);
    const unsigned char *p = (const unsigned char *)a->raw + i * gguf_type_size(a->elem_type);
    if (a->elem_type == GGUF_TYPE_FLOAT32) {
        float x;
        memcpy(&x, p, 4);
        return x;
    }
    if (a->elem_type == GGUF_TYPE_FLOAT64) {
        double x;
        memcpy(&x, p, 8);
        return x;
    }
    if (a->elem_type == GGUF_TYPE_UINT64) {
        uint64_t x;
        memcpy(&x, p, 8);
        return (double)x;
    }
    return (double)gguf_arr_int(a, i);
}

Status gguf_arr_copy_f32(const GgufValue *a, float *dst, const char *what) {
    if (a->type != GGUF_TYPE_ARRAY || !a->raw)
        return fail(STATUS_ERR_FORMAT, "%s: expected a numeric array", what);
    if (a->elem_type == GGUF_TYPE_FLOAT32) {
        memcpy(dst, a->raw, (size_t)a->n * 4);
        return STATUS_OK;
    }
    for (uint64_t i = 0; i < a->n; i++)
        dst[i] = (float)gguf_arr_float(a, i);
    return STATUS_OK;
}

Status gguf_arr_copy_i32(const GgufValue *a, int32_t *dst, const char *what) {
    if (a->type != GGUF_TYPE_ARRAY || !a->raw || a->elem_type == GGUF_TYPE_FLOAT32 ||
        a->elem_type == GGUF_TYPE_FLOAT64)
        return fail(STATUS_ERR_FORMAT, "%s: expected an integer array", what);
    for (uint64_t i = 0; i < a->n; i++) {
        int64_t x = gguf_arr_int(a, i);
        if (x < INT32_MIN || x > INT32_MAX || (a->elem_type == GGUF_TYPE_UINT64 && x < 0))
            return fail(STATUS_ERR_FORMAT, "%s: element %llu out of int32 range", what,
                        (unsigned long long)i);
        dst[i] = (int32_t)x;
    }
    return STATUS_OK;
}

/* ---- dequantization ------------------------------------------------------- */
/*
 * One function per block type; each converts one block `b` to block_size floats.
 * Byte layouts follow ggml-common.h (fp16 fields are IEEE half, little-endian).
 */

static inline float half_at(const unsigned char *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return fp16_to_f32(h);
}

// Q4_0: d, qs[16]; element j in the low nibble of qs[j], element j+16 in the high one.
static void deq_q4_0(const unsigned char *b, float *y) {
    float d = half_at(b);
    const unsigned char *qs = b + 2;
    for (int j = 0; j < 16; j++) {
        y[j] = (float)((qs[j] & 0x0F) - 8) * d;
        y[j + 16] = (float)((qs[j] >> 4) - 8) * d;
    }
}

// Q4_1: d, m, qs[16]; y = q*d + m.
static void deq_q4_1(const unsigned char *b, float *y) {
    float d = half_at(b), m = half_at(b + 2);
    const unsigned char *qs = b + 4;
    for (int j = 0; j < 16; j++) {
        y[j] = (float)(qs[j] & 0x0F) * d + m;
        y[j + 16] = (float)(qs[j] >> 4) * d + m;
    }
}

// Q5_0: d, qh (u32: bit j is the 5th bit of element j), qs[16] as in Q4_0; offset 16.
static void deq_q5_0(const unsigned char *b, float *y) {
    float d = half_at(b);
    uint32_t qh;
    memcpy(&qh, b + 2, 4);
    const unsigned char *qs = b + 6;
    for (int j = 0; j < 16; j++) {
        int h0 = (int)((qh >> j) & 1) << 4, h1 = (int)((qh >> (j + 16)) & 1) << 4;
        y[j] = (float)(((qs[j] & 0x0F) | h0) - 16) * d;
        y[j + 16] = (float)(((qs[j] >> 4) | h1) - 16) * d;
    }
}

// Q5_1: d, m, qh, qs[16]; y = q*d + m.
static void deq_q5_1(const unsigned char *b, float *y) {
    float d = half_at(b), m = half_at(b + 2);
    uint32_t qh;
    memcpy(&qh, b + 4, 4);
    const unsigned char *qs = b + 8;
    for (int j = 0; j < 16; j++) {
        int h0 = (int)((qh >> j) & 1) << 4, h1 = (int)((qh >> (j + 16)) & 1) << 4;
        y[j] = (float)((qs[j] & 0x0F) | h0) * d + m;
        y[j + 16] = (float)((qs[j] >> 4) | h1) * d + m;
    }
}

// Q8_0: d, int8 qs[32].
static void deq_q8_0(const unsigned char *b, float *y) {
    float d = half_at(b);
    for (int j = 0; j < 32; j++)
        y[j] = (float)(int8_t)b[2 + j] * d;
}

// Q2_K: scales[16] (low nibble scale, high nibble min), qs[64] (2-bit), d, dmin.
// Each 128-element half uses 32 bytes of qs: shift 0,2,4,6 picks one of four 32-element
// groups, and each group is two 16-element sub-blocks with their own scale/min.
static void deq_q2_k(const unsigned char *b, float *y) {
    const unsigned char *sc = b, *q = b + 16;
    float d = half_at(b + 80), dmin = half_at(b + 82);
    int is = 0;
    for (int half = 0; half < 2; half++, q += 32)
        for (int shift = 0; shift < 8; shift += 2)
            for (int part = 0; part < 2; part++, is++) {
                float dl = d * (float)(sc[is] & 0x0F), ml = dmin * (float)(sc[is] >> 4);
                for (int l = 0; l < 16; l++)
                    *y++ = dl * (float)((q[16 * part + l] >> shift) & 3) - ml;
            }
}

// Q3_K scales: 16 6-bit values; low 4 bits from bytes 0..7 (low nibbles first, then high
// nibbles), high 2 bits from bytes 8..11 (scale j: byte 8 + j%4, bits 2*(j/4)).
static void q3_k_scales(const unsigned char *s, int *out) {
    for (int j = 0; j < 16; j++) {
        int lo = j < 8 ? (s[j] & 0x0F) : (s[j - 8] >> 4);
        int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        out[j] = (lo | (hi << 4)) - 32;
    }
}

// Q3_K: hmask[32], qs[64], scales[12], d. q = 2 low bits - (hmask bit ? 0 : 4).
static void deq_q3_k(const unsigned char *b, float *y) {
    const unsigned char *hm = b, *q = b + 32;
    float d = half_at(b + 108);
    int sc[16], is = 0;
    q3_k_scales(b + 96, sc);
    unsigned m = 1;
    for (int half = 0; half < 2; half++, q += 32)
        for (int shift = 0; shift < 8; shift += 2, m <<= 1)
            for (int part = 0; part < 2; part++, is++) {
                float dl = d * (float)sc[is];
                for (int l = 16 * part; l < 16 * part + 16; l++)
                    *y++ = dl * (float)(((q[l] >> shift) & 3) - ((hm[l] & m) ? 0 : 4));
            }
}

// Q4_K/Q5_K scales: 8 (scale, min) pairs of 6 bits in 12 bytes.
static void k4_scale_min(int j, const unsigned char *q, int *sc, int *mn) {
    if (j < 4) {
        *sc = q[j] & 63;
        *mn = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
        *mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

// Q4_K: d, dmin, scales[12], qs[128]; per 64 elements: 32 low nibbles then 32 high.
static void deq_q4_k(const unsigned char *b, float *y) {
    float d = half_at(b), dmin = half_at(b + 2);
    const unsigned char *scales = b + 4, *q = b + 16;
    for (int j = 0; j < 4; j++, q += 32) {
        int sc, mn;
        k4_scale_min(2 * j, scales, &sc, &mn);
        float d1 = d * (float)sc, m1 = dmin * (float)mn;
        k4_scale_min(2 * j + 1, scales, &sc, &mn);
        float d2 = d * (float)sc, m2 = dmin * (float)mn;
        for (int l = 0; l < 32; l++)
            *y++ = d1 * (float)(q[l] & 0x0F) - m1;
        for (int l = 0; l < 32; l++)
            *y++ = d2 * (float)(q[l] >> 4) - m2;
    }
}

// Q5_K: d, dmin, scales[12], qh[32], qs[128]; 5th bits: qh bit 2j / 2j+1 per group.
static void deq_q5_k(const unsigned char *b, float *y) {
    float d = half_at(b), dmin = half_at(b + 2);
    const unsigned char *scales = b + 4, *qh = b + 16, *q = b + 48;
    for (int j = 0; j < 4; j++, q += 32) {
        int sc, mn;
        unsigned u1 = 1u << (2 * j), u2 = 2u << (2 * j);
        k4_scale_min(2 * j, scales, &sc, &mn);
        float d1 = d * (float)sc, m1 = dmin * (float)mn;
        k4_scale_min(2 * j + 1, scales, &sc, &mn);
        float d2 = d * (float)sc, m2 = dmin * (float)mn;
        for (int l = 0; l < 32; l++)
            *y++ = d1 * (float)((q[l] & 0x0F) + ((qh[l] & u1) ? 16 : 0)) - m1;
        for (int l = 0; l < 32; l++)
            *y++ = d2 * (float)((q[l] >> 4) + ((qh[l] & u2) ? 16 : 0)) - m2;
    }
}

// Q6_K: ql[128] (low 4 bits), qh[64] (high 2 bits), int8 scales[16], d; offset 32.
static void deq_q6_k(const unsigned char *b, float *y) {
    const unsigned char *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    float d = half_at(b + 208);
    for (int n = 0; n < 2; n++, y += 128, ql += 64, qh += 32, sc += 8)
        for (int l = 0; l < 32; l++) {
            int is = l / 16;
            int q1 = ((ql[l] & 0x0F) | (((qh[l] >> 0) & 3) << 4)) - 32;
            int q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
            int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[l] = d * (float)sc[is] * (float)q1;
            y[l + 32] = d * (float)sc[is + 2] * (float)q2;
            y[l + 64] = d * (float)sc[is + 4] * (float)q3;
            y[l + 96] = d * (float)sc[is + 6] * (float)q4;
        }
}

static void deq_f32(const unsigned char *b, float *y) { memcpy(y, b, 4); }
static void deq_f16(const unsigned char *b, float *y) { *y = half_at(b); }
static void deq_bf16(const unsigned char *b, float *y) {
    uint16_t h;
    memcpy(&h, b, 2);
    *y = bf16_to_f32(h);
}
static void deq_f64(const unsigned char *b, float *y) {
    double x;
    memcpy(&x, b, 8);
    *y = (float)x;
}

typedef void (*DeqBlockFn)(const unsigned char *b, float *y);

static DeqBlockFn deq_fn(GgufTensorType t) {
    switch (t) {
    case GGUF_TENSOR_F32: return deq_f32;
    case GGUF_TENSOR_F16: return deq_f16;
    case GGUF_TENSOR_BF16: return deq_bf16;
    case GGUF_TENSOR_F64: return deq_f64;
    case GGUF_TENSOR_Q4_0: return deq_q4_0;
    case GGUF_TENSOR_Q4_1: return deq_q4_1;
    case GGUF_TENSOR_Q5_0: return deq_q5_0;
    case GGUF_TENSOR_Q5_1: return deq_q5_1;
    case GGUF_TENSOR_Q8_0: return deq_q8_0;
    case GGUF_TENSOR_Q2_K: return deq_q2_k;
    case GGUF_TENSOR_Q3_K: return deq_q3_k;
    case GGUF_TENSOR_Q4_K: return deq_q4_k;
    case GGUF_TENSOR_Q5_K: return deq_q5_k;
    case GGUF_TENSOR_Q6_K: return deq_q6_k;
    default: return NULL;
    }
}

bool gguf_tensor_can_dequant(GgufTensorType t) { return deq_fn(t) != NULL; }

static Status deq_check(GgufTensorType t, int64_t n) {
    if (!deq_fn(t))
        return fail(STATUS_ERR_UNSUPPORTED, "dequantization of %s tensors is not supported",
                    gguf_tensor_type_name(t));
    if (n < 0 || n % k_ttypes[t].block != 0)
        return fail(STATUS_ERR_ARG,
                    "dequantize %s: %lld elements is not a multiple of the block size %d",
                    gguf_tensor_type_name(t), (long long)n, k_ttypes[t].block);
    return STATUS_OK;
}

Status gguf_dequantize_ref(GgufTensorType t, const void *src, float *dst, int64_t n) {
    Status s = deq_check(t, n);
    if (s != STATUS_OK) return s;
    DeqBlockFn fn = deq_fn(t);
    int bs = k_ttypes[t].block;
    size_t bytes = k_ttypes[t].bytes;
    const unsigned char *p = src;
    for (int64_t i = 0; i < n / bs; i++)
        fn(p + (size_t)i * bytes, dst + i * bs);
    return STATUS_OK;
}

#if defined(__x86_64__)
/*
 * AVX2 versions of the three block types that published small models use most (Q4_0,
 * Q4_1, Q8_0). Same arithmetic as the scalar functions, element by element: one int ->
 * float conversion, one multiply, (Q4_1) one add, each rounded once. No FMA in the target
 * list, so the compiler cannot fuse the multiply and the add; bit-identical results
 * (tests/test_gguf.c checks both paths against gguf-py).
 */
#include <immintrin.h>
#define DEQ_TARGET __attribute__((target("avx2")))

// 16 bytes of nibbles -> the low nibbles (elements 0..15) and the high ones (16..31), as
// 4 groups of 8 int32.
DEQ_TARGET static inline void nibbles32(const unsigned char *qs, __m256i out[4]) {
    __m128i q = _mm_loadu_si128((const __m128i *)qs), m = _mm_set1_epi8(0x0F);
    __m128i lo = _mm_and_si128(q, m), hi = _mm_and_si128(_mm_srli_epi16(q, 4), m);
    out[0] = _mm256_cvtepu8_epi32(lo);
    out[1] = _mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8));
    out[2] = _mm256_cvtepu8_epi32(hi);
    out[3] = _mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8));
}

DEQ_TARGET static void deq_q4_0_avx2(const unsigned char *p, float *y, int64_t nb) {
    __m256i eight = _mm256_set1_epi32(8);
    for (int64_t i = 0; i < nb; i++, p += 18, y += 32) {
        __m256 d = _mm256_set1_ps(half_at(p));
        __m256i q[4];
        nibbles32(p + 2, q);
        for (int k = 0; k < 4; k++)
            _mm256_storeu_ps(y + 8 * k,
                             _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(q[k], eight)), d));
    }
}

DEQ_TARGET static void deq_q4_1_avx2(const unsigned char *p, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, p += 20, y += 32) {
        __m256 d = _mm256_set1_ps(half_at(p)), m = _mm256_set1_ps(half_at(p + 2));
        __m256i q[4];
        nibbles32(p + 4, q);
        for (int k = 0; k < 4; k++)
            _mm256_storeu_ps(y + 8 * k,
                             _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(q[k]), d), m));
    }
}

DEQ_TARGET static void deq_q8_0_avx2(const unsigned char *p, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, p += 34, y += 32) {
        __m256 d = _mm256_set1_ps(half_at(p));
        for (int k = 0; k < 4; k++) {
            __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(p + 2 + 8 * k)));
            _mm256_storeu_ps(y + 8 * k, _mm256_mul_ps(_mm256_cvtepi32_ps(q), d));
        }
    }
}

typedef void (*DeqRunFn)(const unsigned char *p, float *y, int64_t nb);

static DeqRunFn deq_run_avx2(GgufTensorType t) {
    if (!__builtin_cpu_supports("avx2")) return NULL;
    switch (t) {
    case GGUF_TENSOR_Q4_0: return deq_q4_0_avx2;
    case GGUF_TENSOR_Q4_1: return deq_q4_1_avx2;
    case GGUF_TENSOR_Q8_0: return deq_q8_0_avx2;
    default: return NULL;
    }
}
#endif

Status gguf_dequantize(GgufTensorType t, const void *src, float *dst, int64_t n) {
    Status s = deq_check(t, n);
    if (s != STATUS_OK) return s;
    const unsigned char *p = src;
    if (t == GGUF_TENSOR_F32) { // plain copy
        memcpy(dst, p, (size_t)n * 4);
        return STATUS_OK;
    }
#if defined(__x86_64__)
    DeqRunFn run = deq_run_avx2(t);
    if (run) { // blocks are independent: any split gives the same bits
        int64_t nb = n / 32, chunk = 1024;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (nb >= 16384)
#endif
        for (int64_t c = 0; c < (nb + chunk - 1) / chunk; c++) {
            int64_t b0 = c * chunk, nbc = MIN(chunk, nb - b0);
            run(p + (size_t)b0 * k_ttypes[t].bytes, dst + b0 * 32, nbc);
        }
        return STATUS_OK;
    }
#endif
    DeqBlockFn fn = deq_fn(t);
    int bs = k_ttypes[t].block;
    size_t bytes = k_ttypes[t].bytes;
    int64_t nb = n / bs;
    // blocks are independent, so any split gives the same bits as the _ref loop
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (nb >= 4096)
#endif
    for (int64_t i = 0; i < nb; i++)
        fn(p + (size_t)i * bytes, dst + i * bs);
    return STATUS_OK;
}

Status gguf_tensor_to_f32(const Gguf *g, const GgufTensorInfo *t, float *dst) {
    Status s = gguf_dequantize(t->type, t->data, dst, t->n_elems);
    if (s != STATUS_OK) return fail_context(s, "'%s': tensor '%s'", g->file.path, t->name);
    return STATUS_OK;
}

/* ---- writer --------------------------------------------------------------- */

typedef struct {
    unsigned char *p;
    size_t n, cap;
} Buf;

static void buf_put(Buf *b, const void *data, size_t n) {
    if (b->n + n > b->cap) {
        while (b->n + n > b->cap)
            b->cap = b->cap ? 2 * b->cap : 64;
        b->p = xrealloc(b->p, b->cap);
    }
    if (n) memcpy(b->p + b->n, data, n);
    b->n += n;
}
static void buf_u32(Buf *b, uint32_t v) { buf_put(b, &v, 4); }
static void buf_u64(Buf *b, uint64_t v) { buf_put(b, &v, 8); }
static void buf_str(Buf *b, const char *s, uint64_t len) {
    buf_u64(b, len);
    buf_put(b, s, (size_t)len);
}

// Serializes the payload of v (without its type tag).
static void ser_value(Buf *b, const GgufValue *v) {
    unsigned char tmp[8];
    switch (v->type) {
    case GGUF_TYPE_UINT8:
        tmp[0] = (uint8_t)v->v.u;
        buf_put(b, tmp, 1);
        break;
    case GGUF_TYPE_INT8:
        tmp[0] = (uint8_t)(int8_t)v->v.i;
        buf_put(b, tmp, 1);
        break;
    case GGUF_TYPE_BOOL:
        tmp[0] = v->v.b ? 1 : 0;
        buf_put(b, tmp, 1);
        break;
    case GGUF_TYPE_UINT16: {
        uint16_t x = (uint16_t)v->v.u;
        buf_put(b, &x, 2);
        break;
    }
    case GGUF_TYPE_INT16: {
        int16_t x = (int16_t)v->v.i;
        buf_put(b, &x, 2);
        break;
    }
    case GGUF_TYPE_UINT32: {
        uint32_t x = (uint32_t)v->v.u;
        buf_put(b, &x, 4);
        break;
    }
    case GGUF_TYPE_INT32: {
        int32_t x = (int32_t)v->v.i;
        buf_put(b, &x, 4);
        break;
    }
    case GGUF_TYPE_FLOAT32: {
        float x = (float)v->v.f;
        buf_put(b, &x, 4);
        break;
    }
    case GGUF_TYPE_UINT64: buf_put(b, &v->v.u, 8); break;
    case GGUF_TYPE_INT64: buf_put(b, &v->v.i, 8); break;
    case GGUF_TYPE_FLOAT64: buf_put(b, &v->v.f, 8); break;
    case GGUF_TYPE_STRING: buf_str(b, v->v.str.ptr, v->v.str.len); break;
    case GGUF_TYPE_ARRAY:
        buf_u32(b, (uint32_t)v->elem_type);
        buf_u64(b, v->n);
        if (gguf_type_size(v->elem_type))
            buf_put(b, v->raw, (size_t)v->n * gguf_type_size(v->elem_type));
        else if (v->elem_type == GGUF_TYPE_STRING)
            for (uint64_t i = 0; i < v->n; i++)
                buf_str(b, v->strs[i].ptr, v->strs[i].len);
        else
            for (uint64_t i = 0; i < v->n; i++)
                ser_value(b, &v->items[i]);
        break;
    default: CHECK_MSG(0, "bad GGUF value type %d", (int)v->type);
    }
}

void gguf_writer_init(GgufWriter *w) {
    memset(w, 0, sizeof *w);
    w->alignment = GGUF_DEFAULT_ALIGNMENT;
}

void gguf_writer_release(GgufWriter *w) {
    for (int i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].blob);
    }
    free(w->kv);
    for (int i = 0; i < w->n_t; i++)
        free(w->t[i].name);
    free(w->t);
    memset(w, 0, sizeof *w);
}

void gguf_writer_set_value(GgufWriter *w, const char *key, const GgufValue *v) {
    CHECK((unsigned)v->type < GGUF_TYPE_COUNT);
    Buf b = {0};
    buf_u32(&b, (uint32_t)v->type);
    ser_value(&b, v);
    if (strcmp(key, "general.alignment") == 0 && v->type == GGUF_TYPE_UINT32 && v->v.u &&
        !(v->v.u & (v->v.u - 1)))
        w->alignment = v->v.u;
    for (int i = 0; i < w->n_kv; i++)
        if (strcmp(w->kv[i].key, key) == 0) {
            free(w->kv[i].blob);
            w->kv[i].blob = b.p;
            w->kv[i].blob_len = b.n;
            return;
        }
    if (w->n_kv == w->cap_kv) {
        w->cap_kv = w->cap_kv ? 2 * w->cap_kv : 32;
        w->kv = xrealloc(w->kv, (size_t)w->cap_kv * sizeof *w->kv);
    }
    w->kv[w->n_kv++] = (GgufWriterKV){xstrdup(key), b.p, b.n};
}

#define SETTER(fn, ctype, gtype, field)                                                            \
    void fn(GgufWriter *w, const char *key, ctype x) {                                             \
        GgufValue v = {.type = gtype};                                                             \
        v.v.field = x;                                                                             \
        gguf_writer_set_value(w, key, &v);                                                         \
    }
SETTER(gguf_writer_set_u8, uint8_t, GGUF_TYPE_UINT8, u)
SETTER(gguf_writer_set_i8, int8_t, GGUF_TYPE_INT8, i)
SETTER(gguf_writer_set_u16, uint16_t, GGUF_TYPE_UINT16, u)
SETTER(gguf_writer_set_i16, int16_t, GGUF_TYPE_INT16, i)
SETTER(gguf_writer_set_u32, uint32_t, GGUF_TYPE_UINT32, u)
SETTER(gguf_writer_set_i32, int32_t, GGUF_TYPE_INT32, i)
SETTER(gguf_writer_set_u64, uint64_t, GGUF_TYPE_UINT64, u)
SETTER(gguf_writer_set_i64, int64_t, GGUF_TYPE_INT64, i)
SETTER(gguf_writer_set_f32, float, GGUF_TYPE_FLOAT32, f)
SETTER(gguf_writer_set_f64, double, GGUF_TYPE_FLOAT64, f)
SETTER(gguf_writer_set_bool, bool, GGUF_TYPE_BOOL, b)
#undef SETTER

void gguf_writer_set_strn(GgufWriter *w, const char *key, const char *s, size_t len) {
    GgufValue v = {.type = GGUF_TYPE_STRING};
    v.v.str = (GgufStr){s, len};
    gguf_writer_set_value(w, key, &v);
}

void gguf_writer_set_str(GgufWriter *w, const char *key, const char *s) {
    gguf_writer_set_strn(w, key, s, strlen(s));
}

void gguf_writer_set_arr(GgufWriter *w, const char *key, GgufType elem, const void *data,
                         uint64_t n) {
    CHECK(gguf_type_size(elem) > 0);
    GgufValue v = {.type = GGUF_TYPE_ARRAY, .elem_type = elem, .n = n, .raw = data};
    gguf_writer_set_value(w, key, &v);
}

void gguf_writer_set_arr_str(GgufWriter *w, const char *key, const char *const *strs,
                             const size_t *lens, uint64_t n) {
    GgufStr *tab = xmalloc((size_t)(n ? n : 1) * sizeof *tab);
    for (uint64_t i = 0; i < n; i++)
        tab[i] = (GgufStr){strs[i], lens ? lens[i] : strlen(strs[i])};
    GgufValue v = {.type = GGUF_TYPE_ARRAY, .elem_type = GGUF_TYPE_STRING, .n = n, .strs = tab};
    gguf_writer_set_value(w, key, &v);
    free(tab);
}

static GgufWriterTensor *writer_new_tensor(GgufWriter *w, const char *name, GgufTensorType type,
                                           int n_dims, const int64_t *ne, const void *data) {
    if (w->n_t == w->cap_t) {
        w->cap_t = w->cap_t ? 2 * w->cap_t : 64;
        w->t = xrealloc(w->t, (size_t)w->cap_t * sizeof *w->t);
    }
    GgufWriterTensor *t = &w->t[w->n_t++];
    memset(t, 0, sizeof *t);
    t->name = xstrdup(name);
    t->type = type;
    t->n_dims = n_dims;
    for (int d = 0; d < GGUF_MAX_DIMS; d++)
        t->ne[d] = d < n_dims && n_dims <= GGUF_MAX_DIMS ? ne[d] : 1;
    t->data = data;
    return t;
}

void gguf_writer_add_tensor(GgufWriter *w, const char *name, GgufTensorType type, int n_dims,
                            const int64_t *ne, const void *data, DType src_dtype) {
    GgufWriterTensor *t = writer_new_tensor(w, name, type, n_dims, ne, data);
    t->src_dtype = src_dtype;
}

void gguf_writer_add_tensor_raw(GgufWriter *w, const char *name, GgufTensorType type, int n_dims,
                                const int64_t *ne, const void *data) {
    GgufWriterTensor *t = writer_new_tensor(w, name, type, n_dims, ne, data);
    t->raw = true;
}

static int ttype_to_dtype(GgufTensorType t) {
    switch (t) {
    case GGUF_TENSOR_F32: return DTYPE_F32;
    case GGUF_TENSOR_F16: return DTYPE_F16;
    case GGUF_TENSOR_BF16: return DTYPE_BF16;
    default: return -1;
    }
}

// Checks shapes and types and computes byte sizes (nbytes is cached per tensor).
static Status writer_check(const GgufWriter *w, const char *path, uint64_t *nbytes) {
    for (int i = 0; i < w->n_t; i++) {
        const GgufWriterTensor *t = &w->t[i];
        if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS)
            return fail(STATUS_ERR_ARG, "writing '%s': tensor '%s' has %d dimensions", path,
                        t->name, t->n_dims);
        if ((unsigned)t->type >= GGUF_TENSOR_TYPE_COUNT || !k_ttypes[t->type].name)
            return fail(STATUS_ERR_ARG, "writing '%s': tensor '%s' has unknown type %d", path,
                        t->name, (int)t->type);
        if (!t->raw && ttype_to_dtype(t->type) < 0)
            return fail(STATUS_ERR_ARG,
                        "writing '%s': tensor '%s': conversion to %s is not supported", path,
                        t->name, gguf_tensor_type_name(t->type));
        uint64_t n = 1;
        for (int d = 0; d < GGUF_MAX_DIMS; d++)
            if (t->ne[d] <= 0 || mul_overflow_u64(n, (uint64_t)t->ne[d], &n))
                return fail(STATUS_ERR_ARG, "writing '%s': tensor '%s' has a bad shape", path,
                            t->name);
        const TensorTypeInfo *ti = &k_ttypes[t->type];
        if (t->ne[0] % ti->block)
            return fail(STATUS_ERR_ARG, "writing '%s': tensor '%s' row %lld not a multiple of %d",
                        path, t->name, (long long)t->ne[0], ti->block);
        nbytes[i] = n / (uint64_t)ti->block * ti->bytes;
        for (int j = 0; j < i; j++)
            if (strcmp(w->t[j].name, t->name) == 0)
                return fail(STATUS_ERR_ARG, "writing '%s': duplicate tensor name '%s'", path,
                            t->name);
    }
    return STATUS_OK;
}

static const unsigned char k_zeros[256];

static bool put_pad(FILE *f, uint64_t pos, uint64_t align) {
    uint64_t pad = (align - pos % align) % align;
    while (pad) {
        size_t k = (size_t)MIN(pad, sizeof k_zeros);
        if (fwrite(k_zeros, 1, k, f) != k) return false;
        pad -= k;
    }
    return true;
}

// Writes one tensor's data, converting F32/F16/BF16 in chunks to bound memory use.
static bool write_tensor_data(FILE *f, const GgufWriterTensor *t, uint64_t nbytes) {
    if (t->raw || ttype_to_dtype(t->type) == (int)t->src_dtype)
        return fwrite(t->data, 1, (size_t)nbytes, f) == (size_t)nbytes;
    DType dst = (DType)ttype_to_dtype(t->type);
    int64_t n = (int64_t)(nbytes / dtype_size(dst)), chunk = 1 << 16;
    float *tmp = xmalloc((size_t)chunk * sizeof *tmp);
    unsigned char *out = xmalloc((size_t)chunk * 4);
    const unsigned char *src = t->data;
    bool ok = true;
    for (int64_t i = 0; i < n && ok; i += chunk) {
        int64_t k = MIN(chunk, n - i);
        dtype_to_f32(tmp, src + (size_t)i * dtype_size(t->src_dtype), t->src_dtype, k);
        dtype_from_f32(out, tmp, dst, k);
        size_t kb = (size_t)k * dtype_size(dst);
        ok = fwrite(out, 1, kb, f) == kb;
    }
    free(tmp);
    free(out);
    return ok;
}

Status gguf_writer_write(const GgufWriter *w, const char *path) {
    uint64_t *nbytes = xcalloc((size_t)w->n_t + 1, sizeof *nbytes);
    Status s = writer_check(w, path, nbytes);
    if (s != STATUS_OK) {
        free(nbytes);
        return s;
    }
    uint64_t align = w->alignment;
    Buf h = {0};
    buf_put(&h, "GGUF", 4);
    buf_u32(&h, 3);
    buf_u64(&h, (uint64_t)w->n_t);
    buf_u64(&h, (uint64_t)w->n_kv);
    for (int i = 0; i < w->n_kv; i++) {
        buf_str(&h, w->kv[i].key, strlen(w->kv[i].key));
        buf_put(&h, w->kv[i].blob, w->kv[i].blob_len);
    }
    uint64_t off = 0;
    for (int i = 0; i < w->n_t; i++) {
        const GgufWriterTensor *t = &w->t[i];
        buf_str(&h, t->name, strlen(t->name));
        buf_u32(&h, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++)
            buf_u64(&h, (uint64_t)t->ne[d]);
        buf_u32(&h, (uint32_t)t->type);
        buf_u64(&h, off);
        off += nbytes[i];
        off += (align - off % align) % align;
    }
    AtomicFile af;
    if ((s = atomic_file_open(&af, path)) != STATUS_OK) {
        free(h.p);
        free(nbytes);
        return s;
    }
    bool ok = fwrite(h.p, 1, h.n, af.f) == h.n && put_pad(af.f, h.n, align);
    for (int i = 0; i < w->n_t && ok; i++)
        ok = write_tensor_data(af.f, &w->t[i], nbytes[i]) && put_pad(af.f, nbytes[i], align);
    free(h.p);
    free(nbytes);
    if (!ok) {
        s = fail(STATUS_ERR_IO, "cannot write '%s': %s", path, strerror(errno));
        atomic_file_abort(&af);
        return s;
    }
    return atomic_file_commit(&af);
}
