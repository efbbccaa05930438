/*
 * gptq_pack.c - GPTQ v1 packing, unpacking and dequantization (layout in gptq_pack.h,
 * docs/reference.md §2.1). We pack the integer codes GPTQ chose; AutoGPTQ instead re-derives
 * them from the dequantized weight and the fp16 scale, which can differ at ties.
 */
#include "quant/gptq_pack.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "core/dtype.h"

int64_t gptq_qweight_rows(int64_t K, int bits) { return (K * bits + 31) / 32; }
int64_t gptq_qzeros_cols(int64_t N, int bits) { return (N * bits + 31) / 32; }

int64_t gptq_packed_bytes(const GptqPacked *p) {
    return (gptq_qweight_rows(p->K, p->bits) * p->N + p->G * gptq_qzeros_cols(p->N, p->bits)) * 4 +
           p->G * p->N * 2 + p->K * 4 + (p->bias ? p->N * 2 : 0);
}

// 2^26 rows/columns (and 2^20 groups) is far beyond any model and keeps products in range.
#define GPTQ_PACK_MAX_DIM ((int64_t)1 << 26)

Status gptq_packed_alloc(GptqPacked *p, int64_t K, int64_t N, int bits, int group_size, int64_t G) {
    memset(p, 0, sizeof *p);
    if (bits != 2 && bits != 4 && bits != 8)
        return fail(STATUS_ERR_UNSUPPORTED, "gptq: %d-bit packing is not supported (2, 4, 8)",
                    bits);
    if (K < 1 || N < 1 || G < 1 || K > GPTQ_PACK_MAX_DIM || N > GPTQ_PACK_MAX_DIM || G > K ||
        (group_size != -1 && group_size < 1))
        return fail(STATUS_ERR_ARG, "gptq: bad packed layer shape K=%lld N=%lld G=%lld group %d",
                    (long long)K, (long long)N, (long long)G, group_size);
    p->K = K;
    p->N = N;
    p->bits = bits;
    p->group_size = group_size;
    p->G = G;
    p->qweight = calloc((size_t)(gptq_qweight_rows(K, bits) * N), sizeof(uint32_t));
    p->qzeros = calloc((size_t)(G * gptq_qzeros_cols(N, bits)), sizeof(uint32_t));
    p->scales = calloc((size_t)(G * N), sizeof(uint16_t));
    p->g_idx = calloc((size_t)K, sizeof(int32_t));
    if (!p->qweight || !p->qzeros || !p->scales || !p->g_idx) {
        gptq_packed_release(p);
        return fail(STATUS_ERR_NOMEM, "gptq: cannot allocate a packed %lldx%lld layer",
                    (long long)N, (long long)K);
    }
    return STATUS_OK;
}

void gptq_packed_release(GptqPacked *p) {
    free(p->qweight);
    free(p->qzeros);
    free(p->scales);
    free(p->g_idx);
    free(p->bias);
    free(p->k_perm);
    memset(p, 0, sizeof *p);
}

Status gptq_pack(GptqPacked *p, const uint8_t *q, const int32_t *zeros, const uint16_t *scales,
                 const int32_t *g_idx, int64_t K, int64_t N, int bits, int group_size, int64_t G) {
    Status s = gptq_packed_alloc(p, K, N, bits, group_size, G);
    if (s != STATUS_OK) return s;
    const int pw = 32 / bits;
    const uint32_t maxq = (1u << bits) - 1;
    for (int64_t i = 0; i < K; i++) {
        if (g_idx[i] < 0 || g_idx[i] >= G) {
            s = fail(STATUS_ERR_ARG, "gptq: g_idx[%lld] = %d outside [0, %lld)", (long long)i,
                     g_idx[i], (long long)G);
            goto bad;
        }
        p->g_idx[i] = g_idx[i];
    }
    // qweight[r, c] |= q[c, r*pw + j] << (bits*j)
    for (int64_t c = 0; c < N; c++)
        for (int64_t i = 0; i < K; i++) {
            uint32_t v = q[c * K + i];
            if (v > maxq) {
                s = fail(STATUS_ERR_ARG, "gptq: code %u at (%lld, %lld) exceeds %u", v,
                         (long long)c, (long long)i, maxq);
                goto bad;
            }
            p->qweight[(i / pw) * N + c] |= v << (bits * (i % pw));
        }
    const int64_t zc = gptq_qzeros_cols(N, bits);
    for (int64_t gi = 0; gi < G; gi++)
        for (int64_t c = 0; c < N; c++) {
            int32_t z = zeros[gi * N + c];
            if (z < 1 || (uint32_t)z > maxq + 1) {
                s = fail(STATUS_ERR_UNSUPPORTED,
                         "gptq: zero point %d (group %lld, column %lld) cannot be stored in GPTQ "
                         "v1, which keeps zero-1 in %d bits; use a symmetric grid",
                         z, (long long)gi, (long long)c, bits);
                goto bad;
            }
            p->qzeros[gi * zc + c / pw] |= (uint32_t)(z - 1) << (bits * (c % pw));
        }
    memcpy(p->scales, scales, (size_t)(G * N) * sizeof(uint16_t));
    return STATUS_OK;
bad:
    gptq_packed_release(p);
    return s;
}

uint16_t gptq_f64_to_fp16(double d) {
    float f = (float)d;
    if ((double)f != d && isfinite(f)) {
        // Round to odd into float (truncate toward zero, set the sticky last bit): with 13
        // spare bits the following RNE to fp16 then rounds exactly as double -> fp16 would.
        uint32_t u = f32_bits(f);
        if (fabs((double)f) > fabs(d)) u -= 1;
        f = f32_from_bits(u | 1);
    }
    return f32_to_fp16(f);
}

Status gptq_pack_result(GptqPacked *p, const GptqResult *r) {
    memset(p, 0, sizeof *p);
    uint16_t *s16 = malloc((size_t)(r->G * r->N) * sizeof(uint16_t));
    if (!s16) return fail(STATUS_ERR_NOMEM, "gptq: cannot allocate scales");
    for (int64_t i = 0; i < r->G * r->N; i++) {
        s16[i] = gptq_f64_to_fp16(r->scales[i]);
        if ((s16[i] & 0x7c00) == 0x7c00) {
            free(s16);
            return fail(STATUS_ERR_NUMERIC,
                        "gptq: scale %g (group %lld, column %lld) overflows "
                        "fp16",
                        r->scales[i], (long long)(i / r->N), (long long)(i % r->N));
        }
    }
    Status s =
        gptq_pack(p, r->q, r->zeros, s16, r->g_idx, r->K, r->N, r->bits, r->group_size, r->G);
    free(s16);
    return s;
}

void gptq_unpack_codes(uint8_t *q, const GptqPacked *p) {
    const int pw = 32 / p->bits;
    const uint32_t mask = (1u << p->bits) - 1;
    for (int64_t c = 0; c < p->N; c++)
        for (int64_t i = 0; i < p->K; i++)
            q[c * p->K + (p->k_perm ? p->k_perm[i] : i)] =
                (uint8_t)((p->qweight[(i / pw) * p->N + c] >> (p->bits * (i % pw))) & mask);
}

void gptq_unpack_zeros(int32_t *zeros, const GptqPacked *p) {
    const int pw = 32 / p->bits;
    const uint32_t mask = (1u << p->bits) - 1;
    const int64_t zc = gptq_qzeros_cols(p->N, p->bits);
    for (int64_t gi = 0; gi < p->G; gi++)
        for (int64_t c = 0; c < p->N; c++)
            zeros[gi * p->N + c] =
                (int32_t)((p->qzeros[gi * zc + c / pw] >> (p->bits * (c % pw))) & mask) + 1;
}

void gptq_dequantize(float *W, const GptqPacked *p) {
    const int pw = 32 / p->bits;
    const uint32_t mask = (1u << p->bits) - 1;
    const int64_t zc = gptq_qzeros_cols(p->N, p->bits), N = p->N, K = p->K;
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < N; c++)
        for (int64_t i = 0; i < K; i++) {
            const int64_t g = p->g_idx[i];
            const int32_t q =
                (int32_t)((p->qweight[(i / pw) * N + c] >> (p->bits * (i % pw))) & mask);
            const int32_t z =
                (int32_t)((p->qzeros[g * zc + c / pw] >> (p->bits * (c % pw))) & mask) + 1;
            W[c * K + (p->k_perm ? p->k_perm[i] : i)] =
                fp16_to_f32(p->scales[g * N + c]) * (float)(q - z);
        }
}

int64_t gptq_packed_contiguous_group(const GptqPacked *p) {
    const int64_t K = p->K, gsz = p->G == 1 ? (K + 7) / 8 * 8 : p->group_size;
    if (gsz <= 0 || gsz % 8 != 0 || p->G * gsz < K) return 0;
    for (int64_t g = 0; g < p->G; g++) {
        int bad = 0;
        for (int64_t k = g * gsz; k < MIN(K, (g + 1) * gsz); k++)
            bad |= p->g_idx[k] != (int32_t)g;
        if (bad) return 0;
    }
    return gsz;
}

static void record_layout(GptqPacked *p) {
    const int64_t gsz = gptq_packed_contiguous_group(p);
    p->contig_group = gsz > 0 ? gsz : -1;
}

Status gptq_packed_sort_groups(GptqPacked *p) {
    const int64_t K = p->K, N = p->N, G = p->G;
    bool sorted = true;
    for (int64_t i = 1; i < K && sorted; i++)
        sorted = p->g_idx[i] >= p->g_idx[i - 1];
    if (sorted) {
        record_layout(p);
        return STATUS_OK;
    }
    CHECK(!p->k_perm);
    // stable counting sort of the inputs by group
    int64_t *start = calloc((size_t)G + 1, sizeof(int64_t));
    int32_t *perm = malloc((size_t)K * sizeof(int32_t)), *gi = malloc((size_t)K * sizeof(int32_t));
    uint8_t *q = malloc((size_t)(N * K));
    uint32_t *qw = calloc((size_t)(gptq_qweight_rows(K, p->bits) * N), sizeof(uint32_t));
    if (!start || !perm || !gi || !q || !qw) {
        free(start);
        free(perm);
        free(gi);
        free(q);
        free(qw);
        return fail(STATUS_ERR_NOMEM, "gptq: cannot allocate the group reordering");
    }
    for (int64_t i = 0; i < K; i++)
        start[p->g_idx[i] + 1]++;
    for (int64_t g = 0; g < G; g++)
        start[g + 1] += start[g];
    for (int64_t i = 0; i < K; i++)
        perm[start[p->g_idx[i]]++] = (int32_t)i;
    gptq_unpack_codes(q, p); // (N, K) in input order
    const int pw = 32 / p->bits;
    for (int64_t c = 0; c < N; c++)
        for (int64_t i = 0; i < K; i++)
            qw[(i / pw) * N + c] |= (uint32_t)q[c * K + perm[i]] << (p->bits * (i % pw));
    for (int64_t i = 0; i < K; i++)
        gi[i] = p->g_idx[perm[i]];
    free(p->qweight);
    free(p->g_idx);
    p->qweight = qw;
    p->g_idx = gi;
    p->k_perm = perm;
    record_layout(p);
    free(q);
    free(start);
    return STATUS_OK;
}

Status gptq_packed_validate(const GptqPacked *p, const char *what) {
    if (p->bits != 2 && p->bits != 4 && p->bits != 8)
        return fail(STATUS_ERR_FORMAT, "%s: %d-bit GPTQ is not supported", what, p->bits);
    const int64_t G = p->group_size == -1 ? 1 : (p->K + p->group_size - 1) / p->group_size;
    if (p->G != G)
        return fail(STATUS_ERR_FORMAT,
                    "%s: %lld groups for in_features %lld and group size %d "
                    "(expected %lld)",
                    what, (long long)p->G, (long long)p->K, p->group_size, (long long)G);
    for (int64_t i = 0; i < p->K; i++)
        if (p->g_idx[i] < 0 || p->g_idx[i] >= p->G)
            return fail(STATUS_ERR_FORMAT, "%s: g_idx[%lld] = %d outside [0, %lld)", what,
                        (long long)i, p->g_idx[i], (long long)p->G);
    if (p->k_perm) {
        uint8_t *seen = calloc((size_t)p->K, 1);
        CHECK(seen);
        for (int64_t i = 0; i < p->K; i++) {
            int32_t j = p->k_perm[i];
            if (j < 0 || j >= p->K || seen[j]) {
                free(seen);
                return fail(STATUS_ERR_FORMAT, "%s: k_perm is not a permutation", what);
            }
            seen[j] = 1;
        }
        free(seen);
    }
    for (int64_t i = 0; i < p->G * p->N; i++)
        if ((p->scales[i] & 0x7c00) == 0x7c00)
            return fail(STATUS_ERR_FORMAT, "%s: scale %lld is inf or nan", what, (long long)i);
    return STATUS_OK;
}
