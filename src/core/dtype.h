/*
 * dtype.h - element types of weights as edgeforge keeps them in memory, and exact
 * conversions between float32, float16 (IEEE binary16) and bfloat16.
 *
 * Conversions to 16 bits round to nearest even and keep NaN a NaN, matching
 * PyTorch's .to(torch.float16/bfloat16) and numpy's astype(float16).
 */
#ifndef EF_DTYPE_H
#define EF_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

// NOTE: add new types at the end only.
typedef enum { DTYPE_F32, DTYPE_F16, DTYPE_BF16, DTYPE_COUNT } DType;

// Bytes per element.
size_t dtype_size(DType t);
// "f32", "f16", "bf16".
const char *dtype_name(DType t);
// Parses "f32"/"f16"/"bf16" (case-insensitive); returns -1 if unknown.
int dtype_from_name(const char *s);

static inline uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float fp16_to_f32(uint16_t h);
uint16_t f32_to_fp16(float f);

static inline float bf16_to_f32(uint16_t h) { return f32_from_bits((uint32_t)h << 16); }
static inline uint16_t f32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1); // round to nearest even
    return (uint16_t)(u >> 16);
}

// Converts n elements of `src` (type t) to float32.
void dtype_to_f32(float *dst, const void *src, DType t, int64_t n);
// Converts n float32 values to type t.
void dtype_from_f32(void *dst, const float *src, DType t, int64_t n);

#endif
