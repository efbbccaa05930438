/*
 * qmatmul_ref.c - the readable specification of qmatmul: unpack each 4-bit code from the
 * v1 layout, dequantize it with its group's fp16 scale and zero (stored + 1), and
 * accumulate x . w in double. Single-threaded; for tests only.
 */
#include "quant/qmatmul.h"

#include "core/dtype.h"

void qmatmul_ref(float *y, const float *x, int64_t M, const GptqPacked *w) {
    const int64_t K = w->K, N = w->N, zc = gptq_qzeros_cols(N, 4);
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double acc = 0;
            for (int64_t k = 0; k < K; k++) {
                const int64_t g = w->g_idx[k];
                const int q = (int)((w->qweight[(k / 8) * N + n] >> (4 * (k % 8))) & 15);
                const int z = (int)((w->qzeros[g * zc + n / 8] >> (4 * (n % 8))) & 15) + 1;
                const float wt = fp16_to_f32(w->scales[g * N + n]) * (float)(q - z);
                acc += (double)x[m * K + (w->k_perm ? w->k_perm[k] : k)] * wt;
            }
            if (w->bias) acc += fp16_to_f32(w->bias[n]);
            y[m * N + n] = (float)acc;
        }
}
