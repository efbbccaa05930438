/*
 * gguf.h - the GGUF container (llama.cpp / ggml model files, versions 2 and 3):
 * a memory-mapped reader, block dequantization to float32, and an atomic writer.
 *
 * Layout (all little-endian; docs/formats.md "GGUF" has the full description):
 *   "GGUF" u32 version u64 n_tensors u64 n_kv
 *   n_kv x     { str key, u32 value type, value }
 *   n_tensors x{ str name, u32 n_dims, u64 ne[n_dims], u32 ggml type, u64 offset }
 *   zero padding to `general.alignment` (default 32), then the data section;
 *   each tensor's offset is relative to the data section and a multiple of the alignment.
 * A str is u64 length + bytes (no NUL); an array is u32 element type + u64 count +
 * elements (arrays may nest). ne[0] is the innermost (fastest) dimension, so a PyTorch
 * (out, in) matrix is stored with ne = {in, out}.
 *
 * Every count, length, shape product, byte size and offset is checked against the
 * file size before use; bad files give STATUS_ERR_FORMAT naming the file and problem.
 *
 *   Gguf g;
 *   if (gguf_open(&g, "model.gguf") != STATUS_OK) ... status_msg() ...
 *   int64_t n_layer = 0;
 *   if (gguf_require_int(&g, "llama.block_count", &n_layer) != STATUS_OK) ...
 *   const GgufTensorInfo *t = gguf_find_tensor(&g, "token_embd.weight");
 *   float *w = malloc(t->n_elems * sizeof *w);
 *   if (gguf_tensor_to_f32(&g, t, w) != STATUS_OK) ...   // any supported type
 *   gguf_close(&g);
 *
 *   GgufWriter w;
 *   gguf_writer_init(&w);
 *   gguf_writer_set_str(&w, "general.architecture", "llama");
 *   int64_t ne[2] = {D, V};                            // (V, D) row-major
 *   gguf_writer_add_tensor(&w, "token_embd.weight", GGUF_TENSOR_F16, 2, ne, emb, DTYPE_F32);
 *   Status s = gguf_writer_write(&w, "out.gguf");      // atomic
 *   gguf_writer_release(&w);
 */
#ifndef EF_GGUF_H
#define EF_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/fileio.h"
#include "core/status.h"

#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_DIMS          4 // ggml's GGML_MAX_DIMS

// Metadata value types (numbers as stored in the file).
typedef enum {
    GGUF_TYPE_UINT8 = 0,
    GGUF_TYPE_INT8 = 1,
    GGUF_TYPE_UINT16 = 2,
    GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4,
    GGUF_TYPE_INT32 = 5,
    GGUF_TYPE_FLOAT32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8,
    GGUF_TYPE_ARRAY = 9,
    GGUF_TYPE_UINT64 = 10,
    GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
    GGUF_TYPE_COUNT
} GgufType;

// Tensor element types (ggml's enum ggml_type numbering; gaps are retired types).
typedef enum {
    GGUF_TENSOR_F32 = 0,
    GGUF_TENSOR_F16 = 1,
    GGUF_TENSOR_Q4_0 = 2,
    GGUF_TENSOR_Q4_1 = 3,
    GGUF_TENSOR_Q5_0 = 6,
    GGUF_TENSOR_Q5_1 = 7,
    GGUF_TENSOR_Q8_0 = 8,
    GGUF_TENSOR_Q8_1 = 9,
    GGUF_TENSOR_Q2_K = 10,
    GGUF_TENSOR_Q3_K = 11,
    GGUF_TENSOR_Q4_K = 12,
    GGUF_TENSOR_Q5_K = 13,
    GGUF_TENSOR_Q6_K = 14,
    GGUF_TENSOR_Q8_K = 15,
    GGUF_TENSOR_IQ2_XXS = 16,
    GGUF_TENSOR_IQ2_XS = 17,
    GGUF_TENSOR_IQ3_XXS = 18,
    GGUF_TENSOR_IQ1_S = 19,
    GGUF_TENSOR_IQ4_NL = 20,
    GGUF_TENSOR_IQ3_S = 21,
    GGUF_TENSOR_IQ2_S = 22,
    GGUF_TENSOR_IQ4_XS = 23,
    GGUF_TENSOR_I8 = 24,
    GGUF_TENSOR_I16 = 25,
    GGUF_TENSOR_I32 = 26,
    GGUF_TENSOR_I64 = 27,
    GGUF_TENSOR_F64 = 28,
    GGUF_TENSOR_IQ1_M = 29,
    GGUF_TENSOR_BF16 = 30,
    GGUF_TENSOR_TQ1_0 = 34,
    GGUF_TENSOR_TQ2_0 = 35,
    GGUF_TENSOR_MXFP4 = 39,
    GGUF_TENSOR_TYPE_COUNT = 40
} GgufTensorType;

// A string inside the mapping: NOT NUL-terminated.
typedef struct {
    const char *ptr;
    uint64_t len;
} GgufStr;

// One metadata value. Scalars are decoded; arrays keep their elements in the mapping
// (little-endian, possibly unaligned: read them with gguf_value_get_* or the copy
// helpers), except string arrays (a table of GgufStr into the mapping) and arrays of
// arrays (a table of GgufValue). Writers build values of this shape too.
typedef struct GgufValue {
    GgufType type;
    union {
        uint64_t u;  // UINT8/16/32/64
        int64_t i;   // INT8/16/32/64
        double f;    // FLOAT32/64 (a FLOAT32 is exact in a double)
        bool b;      // BOOL
        GgufStr str; // STRING
    } v;
    // ARRAY only:
    GgufType elem_type;
    uint64_t n;              // element count
    const void *raw;         // numeric/bool elements, n * gguf_type_size(elem_type) bytes
    GgufStr *strs;           // (n) when elem_type == STRING
    struct GgufValue *items; // (n) when elem_type == ARRAY
} GgufValue;

typedef struct {
    char *key; // owned, NUL-terminated
    GgufValue val;
} GgufKV;

typedef struct {
    char *name; // owned, NUL-terminated
    int n_dims;
    int64_t ne[GGUF_MAX_DIMS]; // ggml order, ne[0] innermost; unused dims are 1
    GgufTensorType type;
    uint64_t offset; // relative to the data section
    uint64_t nbytes;
    int64_t n_elems;
    const void *data; // into the mapping
} GgufTensorInfo;

typedef struct {
    MappedFile file; // file.path names the source in every error
    bool borrowed;   // data belongs to the caller (gguf_open_buffer)
    uint32_t version;
    uint64_t alignment;
    uint64_t data_offset; // file offset of the data section
    GgufKV *kv;
    int64_t n_kv;
    GgufTensorInfo *tensors;
    int64_t n_tensors;
    void **arena; // owned tables (string arrays, nested arrays)
    int64_t n_arena, cap_arena;
    int64_t *kv_index, *tensor_index; // indices sorted by key / name (binary search)
    bool indexed; // set once parsing succeeded; lookups before that find nothing
} Gguf;

/* ---- types ---------------------------------------------------------------- */

// Bytes of one scalar metadata value (0 for STRING/ARRAY or unknown).
size_t gguf_type_size(GgufType t);
const char *gguf_type_name(GgufType t);

// Elements per block and bytes per block (0 for unknown/retired types).
int gguf_tensor_block_size(GgufTensorType t);
size_t gguf_tensor_type_size(GgufTensorType t);
const char *gguf_tensor_type_name(GgufTensorType t);
// True when gguf_dequantize handles the type.
bool gguf_tensor_can_dequant(GgufTensorType t);

/* ---- reading -------------------------------------------------------------- */

// Maps and parses `path`. On error nothing is left open.
Status gguf_open(Gguf *g, const char *path);
// Parses a caller-owned buffer (kept alive by the caller until gguf_close); `name`
// stands for the file in error messages.
Status gguf_open_buffer(Gguf *g, const void *data, size_t size, const char *name);
// Releases everything; a zeroed Gguf is a no-op.
void gguf_close(Gguf *g);
// Moves the mapping to *dst (e.g. a Model's file list); the pointers of g stay valid
// as long as *dst is open. gguf_close(g) is still needed for g's tables.
void gguf_take_file(Gguf *g, MappedFile *dst);

const GgufKV *gguf_find(const Gguf *g, const char *key);
const GgufTensorInfo *gguf_find_tensor(const Gguf *g, const char *name);

// Key-level getters. `require` fails (naming file and key) when the key is absent;
// `get` returns STATUS_OK and leaves *out unchanged. Both fail on a wrong type or a
// value out of range for the output.
Status gguf_get_int(const Gguf *g, const char *key, int64_t *out); // any integer type
Status gguf_require_int(const Gguf *g, const char *key, int64_t *out);
Status gguf_get_float(const Gguf *g, const char *key, double *out); // float or integer
Status gguf_require_float(const Gguf *g, const char *key, double *out);
Status gguf_get_bool(const Gguf *g, const char *key, bool *out);
Status gguf_get_str(const Gguf *g, const char *key, GgufStr *out);
Status gguf_require_str(const Gguf *g, const char *key, GgufStr *out);
// Array of `elem` type (GGUF_TYPE_COUNT: any); *out NULL when absent.
Status gguf_get_arr(const Gguf *g, const char *key, GgufType elem, const GgufValue **out);

// Element i of a numeric array, converted (no range checks beyond the type's).
int64_t gguf_arr_int(const GgufValue *arr, uint64_t i);
double gguf_arr_float(const GgufValue *arr, uint64_t i);
// Copies a numeric array into float/int32 storage (n = arr->n elements).
// Fails naming `what` for non-numeric arrays or int values out of int32 range.
Status gguf_arr_copy_f32(const GgufValue *arr, float *dst, const char *what);
Status gguf_arr_copy_i32(const GgufValue *arr, int32_t *dst, const char *what);
// Heap NUL-terminated copy of a GgufStr (caller frees).
char *gguf_str_dup(GgufStr s);
bool gguf_str_eq(GgufStr s, const char *c);

/* ---- dequantization --------------------------------------------------------- */

// Converts n elements (a multiple of the type's block size) of type t at `src` to
// float32, exactly as ggml's dequantize_row_* / ggml_*_to_fp32 reference code does.
// STATUS_ERR_UNSUPPORTED for types without a dequantizer.
Status gguf_dequantize(GgufTensorType t, const void *src, float *dst, int64_t n);
// Naive one-block-at-a-time dequantization (the _ref twin of gguf_dequantize, which
// splits the work over threads).
Status gguf_dequantize_ref(GgufTensorType t, const void *src, float *dst, int64_t n);
// Dequantizes a whole tensor into dst (t->n_elems floats). Errors name the file and tensor.
Status gguf_tensor_to_f32(const Gguf *g, const GgufTensorInfo *t, float *dst);

/* ---- writing ---------------------------------------------------------------- */

typedef struct {
    char *key;
    unsigned char *blob; // serialized u32 type + value
    size_t blob_len;
} GgufWriterKV;

typedef struct {
    char *name;
    GgufTensorType type; // F32, F16 or BF16 (converted at write time), or a raw type
    int n_dims;
    int64_t ne[GGUF_MAX_DIMS];
    const void *data; // borrowed until gguf_writer_write returns
    DType src_dtype;  // element type of `data` for F32/F16/BF16 targets
    bool raw;         // data already in `type` (any type): copied as is
    uint64_t nbytes;
} GgufWriterTensor;

typedef struct {
    GgufWriterKV *kv;
    int n_kv, cap_kv;
    GgufWriterTensor *t;
    int n_t, cap_t;
    uint64_t alignment; // from general.alignment if set, else 32
} GgufWriter;

void gguf_writer_init(GgufWriter *w);
void gguf_writer_release(GgufWriter *w);

// Setting a key again replaces its value (keeping its position).
void gguf_writer_set_value(GgufWriter *w, const char *key, const GgufValue *v);
void gguf_writer_set_u8(GgufWriter *w, const char *key, uint8_t v);
void gguf_writer_set_i8(GgufWriter *w, const char *key, int8_t v);
void gguf_writer_set_u16(GgufWriter *w, const char *key, uint16_t v);
void gguf_writer_set_i16(GgufWriter *w, const char *key, int16_t v);
void gguf_writer_set_u32(GgufWriter *w, const char *key, uint32_t v);
void gguf_writer_set_i32(GgufWriter *w, const char *key, int32_t v);
void gguf_writer_set_u64(GgufWriter *w, const char *key, uint64_t v);
void gguf_writer_set_i64(GgufWriter *w, const char *key, int64_t v);
void gguf_writer_set_f32(GgufWriter *w, const char *key, float v);
void gguf_writer_set_f64(GgufWriter *w, const char *key, double v);
void gguf_writer_set_bool(GgufWriter *w, const char *key, bool v);
void gguf_writer_set_str(GgufWriter *w, const char *key, const char *v);
void gguf_writer_set_strn(GgufWriter *w, const char *key, const char *v, size_t len);
// Numeric/bool array: n elements of `elem` in host (little-endian) layout.
void gguf_writer_set_arr(GgufWriter *w, const char *key, GgufType elem, const void *data,
                         uint64_t n);
// String array; lens may be NULL for NUL-terminated strings.
void gguf_writer_set_arr_str(GgufWriter *w, const char *key, const char *const *strs,
                             const size_t *lens, uint64_t n);

// Adds a tensor of shape ne (ggml order) stored as `type` (F32/F16/BF16), converted
// from `data` of src_dtype at write time. Data is borrowed until the write.
void gguf_writer_add_tensor(GgufWriter *w, const char *name, GgufTensorType type, int n_dims,
                            const int64_t *ne, const void *data, DType src_dtype);
// Adds tensor bytes already encoded as `type` (e.g. copied from another GGUF).
void gguf_writer_add_tensor_raw(GgufWriter *w, const char *name, GgufTensorType type, int n_dims,
                                const int64_t *ne, const void *data);
// Writes the GGUF v3 file atomically. Errors: bad shapes/types/duplicate names
// (STATUS_ERR_ARG), I/O (naming the path).
Status gguf_writer_write(const GgufWriter *w, const char *path);

#endif
