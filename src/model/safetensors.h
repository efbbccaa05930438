/*
 * safetensors.h - the safetensors container (Hugging Face): read (memory-mapped)
 * and write.
 *
 * Layout: u64 little-endian N, then N bytes of JSON header
 *   {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 *    "__metadata__": {"k": "v"}}
 * then the data section; offsets are relative to its start. Every offset, shape
 * product and dtype is validated against the file size before use.
 *
 *   SafeTensors st;
 *   if (safetensors_open(&st, "model.safetensors") != STATUS_OK) ...
 *   const SafeTensor *t = safetensors_find(&st, "model.norm.weight");
 *   safetensors_close(&st);
 */
#ifndef EF_SAFETENSORS_H
#define EF_SAFETENSORS_H

#include <stdint.h>
#include <stdio.h>

#include "core/fileio.h"
#include "core/status.h"

typedef enum {
    ST_F32,
    ST_F16,
    ST_BF16,
    ST_F64,
    ST_I64,
    ST_I32,
    ST_I16,
    ST_I8,
    ST_U8,
    ST_BOOL,
    ST_U32,
    ST_DTYPE_COUNT
} SafeDType;

typedef struct {
    char *name;
    SafeDType dtype;
    int ndim;
    int64_t shape[8];
    const void *data; // into the mapping
    uint64_t nbytes;
} SafeTensor;

typedef struct {
    MappedFile file;
    SafeTensor *tensors;
    int n_tensors;
    char **meta_keys, **meta_values; // __metadata__ (string -> string)
    int n_meta;
} SafeTensors;

Status safetensors_open(SafeTensors *st, const char *path);
void safetensors_close(SafeTensors *st);
const SafeTensor *safetensors_find(const SafeTensors *st, const char *name);
const char *safetensors_meta(const SafeTensors *st, const char *key);
size_t safe_dtype_size(SafeDType t);
const char *safe_dtype_name(SafeDType t);

// Writer: add tensors (data borrowed until commit), then write all at once.
typedef struct {
    char *name;
    SafeDType dtype;
    int ndim;
    int64_t shape[8];
    const void *data;
    uint64_t nbytes;
} SafeWriteTensor;

typedef struct {
    SafeWriteTensor *t;
    int n, cap;
    char **meta_keys, **meta_values;
    int n_meta;
} SafeWriter;

void safewriter_init(SafeWriter *w);
void safewriter_add(SafeWriter *w, const char *name, SafeDType dtype, int ndim,
                    const int64_t *shape, const void *data);
void safewriter_meta(SafeWriter *w, const char *key, const char *value);
// Writes the file atomically (tensors in the order added; offsets 8-aligned header).
Status safewriter_write(const SafeWriter *w, const char *path);
void safewriter_release(SafeWriter *w);

#endif
