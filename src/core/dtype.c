#include "dtype.h"

#include <strings.h>

#include "common.h"

size_t dtype_size(DType t) {
    switch (t) {
    case DTYPE_F32: return 4;
    case DTYPE_F16:
    case DTYPE_BF16: return 2;
    default: CHECK_MSG(0, "bad dtype %d", (int)t);
    }
}

const char *dtype_name(DType t) {
    static const char *names[DTYPE_COUNT] = {"f32", "f16", "bf16"};
    return (t >= 0 && t < DTYPE_COUNT) ? names[t] : "?";
}

int dtype_from_name(const char *s) {
    for (int t = 0; t < DTYPE_COUNT; t++)
        if (strcasecmp(s, dtype_name((DType)t)) == 0) return t;
    return -1;
}

float fp16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    if (exp == 0x1f) return f32_from_bits(sign | 0x7f800000u | (mant << 13)); // inf / nan
    if (exp == 0) {
        if (mant == 0) return f32_from_bits(sign);
        // subnormal: value = mant * 2^-24, exact in float32
        float v = (float)mant * 0x1.0p-24f;
        return sign ? -v : v;
    }
    return f32_from_bits(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t f32_to_fp16(float f) {
    uint32_t u = f32_bits(f);
    uint32_t sign = (u >> 16) & 0x8000;
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00 | ((a >> 13) & 0x3ff)); // nan
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); // rounds to >= 65520 -> inf
    if (a < 0x38800000u) {
        // result is subnormal or zero: round a * 2^24 to nearest even integer
        if (a < 0x33000000u) return (uint16_t)sign; // < 2^-25: rounds to zero
        uint32_t e = a >> 23, m = (a & 0x7fffff) | 0x800000;
        int shift = 126 - (int)e; // bits to drop so that the unit is 2^-24
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) q++;
        return (uint16_t)(sign | q);
    }
    // normal: rebias exponent, round mantissa 23 -> 10 bits to nearest even
    uint32_t r = a - 0x38000000u; // exponent 127 -> 15
    r += 0xfff + ((r >> 13) & 1);
    return (uint16_t)(sign | (r >> 13));
}

void dtype_to_f32(float *dst, const void *src, DType t, int64_t n) {
    switch (t) {
    case DTYPE_F32: memcpy(dst, src, (size_t)n * 4); break;
    case DTYPE_F16:
        for (int64_t i = 0; i < n; i++)
            dst[i] = fp16_to_f32(((const uint16_t *)src)[i]);
        break;
    case DTYPE_BF16:
        for (int64_t i = 0; i < n; i++)
            dst[i] = bf16_to_f32(((const uint16_t *)src)[i]);
        break;
    default: CHECK_MSG(0, "bad dtype %d", (int)t);
    }
}

void dtype_from_f32(void *dst, const float *src, DType t, int64_t n) {
    switch (t) {
    case DTYPE_F32: memcpy(dst, src, (size_t)n * 4); break;
    case DTYPE_F16:
        for (int64_t i = 0; i < n; i++)
            ((uint16_t *)dst)[i] = f32_to_fp16(src[i]);
        break;
    case DTYPE_BF16:
        for (int64_t i = 0; i < n; i++)
            ((uint16_t *)dst)[i] = f32_to_bf16(src[i]);
        break;
    default: CHECK_MSG(0, "bad dtype %d", (int)t);
    }
}
