/*
 * gptq_pack.h - the GPTQ v1 tensor layout (AutoGPTQ/vLLM/transformers "gptq" format,
 * docs/reference.md §2.1): packing integer codes, unpacking and dequantizing.
 *
 *   qweight int32 (ceil(K*bits/32), N): word (r, c) holds input rows r*pw .. r*pw+pw-1 of
 *           output column c (pw = 32/bits values per word), row r*pw+j in bits
 *           j*bits .. j*bits+bits-1, least significant first; unsigned codes 0..2^bits-1
 *   qzeros  int32 (G, ceil(N*bits/32)): packed along the output dim in the same order;
 *           v1 stores zero - 1 (sym 4-bit: nibble 7, every word 0x77777777)
 *   scales  fp16 (G, N);  g_idx int32 (K), group of each input row;  bias fp16 (N), optional
 *   dequant: w[c, i] = scales[g_idx[i], c] * (q[i, c] - (stored_zero[g_idx[i], c] + 1))
 *
 * K (in_features) or N (out_features) not a multiple of pw (stories260K's 172) is packed
 * with zero padding in the last word; such shapes are for internal use (vLLM, transformers
 * and AutoGPTQ require K % 32 == 0 and N % 32 == 0 for 4 bits).
 *
 *   GptqPacked p;
 *   gptq_pack_result(&p, &result);          // from gptq_quantize_layer
 *   gptq_dequantize(W_hat, &p);             // (N, K) float
 *   gptq_packed_release(&p);
 */
#ifndef EF_GPTQ_PACK_H
#define EF_GPTQ_PACK_H

#include <stdint.h>

#include "core/status.h"
#include "quant/gptq.h"

typedef struct GptqPacked {
    int64_t K, N;         // in_features, out_features
    int bits;             // 2, 4 or 8
    int group_size;       // the config's group size; -1 = one group
    int64_t G;            // number of groups (rows of scales/qzeros)
    uint32_t *qweight;    // (gptq_qweight_rows(K, bits), N)
    uint32_t *qzeros;     // (G, gptq_qzeros_cols(N, bits)), zero - 1
    uint16_t *scales;     // (G, N) fp16 bit patterns
    int32_t *g_idx;       // (K)
    uint16_t *bias;       // (N) fp16 bit patterns, or NULL
    int32_t *k_perm;      // (K) or NULL: after gptq_packed_sort_groups, packed row k holds input
                          // k_perm[k] (g_idx is then in packed order); NULL = file order
    int64_t contig_group; // gptq_packed_contiguous_group() recorded by gptq_packed_sort_groups:
                          // > 0 that group size, < 0 not contiguous, 0 not recorded (the
                          // kernels then walk g_idx per call)
} GptqPacked;

// Rows of qweight and columns of qzeros: ceil(K*bits/32), ceil(N*bits/32).
int64_t gptq_qweight_rows(int64_t K, int bits);
int64_t gptq_qzeros_cols(int64_t N, int bits);
// Bytes of a packed linear as a checkpoint stores it: qweight + qzeros + scales + g_idx
// (+ bias when it has one).
int64_t gptq_packed_bytes(const GptqPacked *p);

// Allocates zeroed tensors (bias left NULL). Errors: STATUS_ERR_UNSUPPORTED (bits not 2/4/8),
// STATUS_ERR_ARG (K, N, G < 1 or huge), STATUS_ERR_NOMEM.
Status gptq_packed_alloc(GptqPacked *p, int64_t K, int64_t N, int bits, int group_size, int64_t G);
void gptq_packed_release(GptqPacked *p);

// Packs codes q (N, K), true zero points zeros (G, N), fp16 scales (G, N) and g_idx (K) into
// p (allocated here). Errors: STATUS_ERR_ARG (a code > 2^bits-1, g_idx out of range),
// STATUS_ERR_UNSUPPORTED (a zero point of 0, which v1's zero-1 cannot store, or > 2^bits).
Status gptq_pack(GptqPacked *p, const uint8_t *q, const int32_t *zeros, const uint16_t *scales,
                 const int32_t *g_idx, int64_t K, int64_t N, int bits, int group_size, int64_t G);
// Packs a GptqResult, rounding its double scales to fp16 (round to nearest even, directly
// from double). Errors as gptq_pack, plus STATUS_ERR_NUMERIC when a scale overflows fp16.
Status gptq_pack_result(GptqPacked *p, const GptqResult *r);

// Codes (N, K) and true zero points (stored + 1) (G, N) back out of p.
void gptq_unpack_codes(uint8_t *q, const GptqPacked *p);
void gptq_unpack_zeros(int32_t *zeros, const GptqPacked *p);

// W (N, K) = scales * (q - zero), exact in float32 (an fp16 times a small integer).
void gptq_dequantize(float *W, const GptqPacked *p);

// In-memory layout for inference (exllama's act-order trick): reorders the packed input rows
// so that g_idx is non-decreasing, i.e. every group is a run of rows and qmatmul takes its
// fast path; x is gathered through k_perm at run time. A no-op when g_idx is already sorted.
// Unpack/dequantize/qmatmul keep working (results in the original input order); checkpoint
// writers refuse a sorted layer. Also records gptq_packed_contiguous_group in
// p->contig_group, so the decode kernels do not walk g_idx per call. Errors: STATUS_ERR_NOMEM.
Status gptq_packed_sort_groups(GptqPacked *p);

// The group size when the groups are contiguous runs of whole 8-input word rows in packed
// order (g_idx[k] = k / gsz with gsz % 8 == 0: no act-order, or act-order with static
// groups or sorted), else 0. Walks the groups (no division per input).
int64_t gptq_packed_contiguous_group(const GptqPacked *p);

// Checks a packed layer read from someone else's file: bits, G against K and group_size,
// g_idx in [0, G), finite scales. Errors: STATUS_ERR_FORMAT naming `what`.
Status gptq_packed_validate(const GptqPacked *p, const char *what);

// double -> fp16 with a single rounding (round to nearest even), like torch's .half().
uint16_t gptq_f64_to_fp16(double d);

#endif
