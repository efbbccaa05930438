/*
 * fuzz_gptq_ckpt.c - libFuzzer target for the GPTQ checkpoint readers: the input is parsed
 * as a quantization_config JSON text (gptq_config_parse) and, as a whole file, as a
 * safetensors checkpoint whose linear "l" is read with gptq_ckpt_read_linear under a few
 * configs (4-bit group 32 / 128 / -1, 2- and 8-bit). Every layer the reader accepts is
 * unpacked, dequantized and run through qmatmul (4-bit), also after reordering its rows by
 * group (gptq_packed_sort_groups), so a shape or g_idx check that
 * lets a bad layer through shows up under ASan.
 *
 *   make fuzz && build-fuzz/fuzz_gptq_ckpt -max_total_time=120 -max_len=8192
 */
#include "fuzz_util.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/log.h"
#include "model/safetensors.h"
#include "quant/gptq_ckpt.h"
#include "quant/gptq_pack.h"
#include "quant/qmatmul.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void exercise(const GptqPacked *p) {
    if ((uint64_t)p->K * (uint64_t)p->N > (1u << 20)) return; // keep each run fast
    uint8_t *q = malloc((size_t)(p->K * p->N));
    int32_t *z = malloc((size_t)(p->G * p->N) * sizeof(int32_t));
    float *w = malloc((size_t)(p->K * p->N) * sizeof(float));
    float *x = calloc((size_t)p->K, sizeof(float)), *y = malloc((size_t)p->N * sizeof(float));
    if (q && z && w && x && y) {
        gptq_unpack_codes(q, p);
        gptq_unpack_zeros(z, p);
        gptq_dequantize(w, p);
        if (qmatmul_check(p) == STATUS_OK) {
            qmatmul_gemv(y, x, p, QMAT_ISA_PORTABLE);
            qmatmul_gemv(y, x, p, qmatmul_isa_detect());
            qmatmul_ref(y, x, 1, p);
        }
    }
    free(q);
    free(z);
    free(w);
    free(x);
    free(y);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    log_set_level(LOG_ERROR);
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = 0;
    GptqConfig c;
    (void)gptq_config_parse(&c, text, "fuzz");
    free(text);

    char path[64];
    int fd = fuzz_memfd(data, size, path, sizeof path);
    if (fd < 0) return 0;
    SafeTensors st;
    if (safetensors_open(&st, path) == STATUS_OK) {
        StDir sd;
        st_dir_wrap(&sd, &st);
        const int cfgs[][2] = {{4, 32}, {4, 128}, {4, -1}, {2, 32}, {8, 64}};
        for (size_t i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++) {
            gptq_config_defaults(&c);
            c.bits = cfgs[i][0];
            c.group_size = cfgs[i][1];
            GptqPacked p;
            if (gptq_ckpt_read_linear(&p, &sd, "l", &c, 0, 0) == STATUS_OK) {
                exercise(&p);
                if (gptq_packed_sort_groups(&p) == STATUS_OK) exercise(&p); // act-order layout
                gptq_packed_release(&p);
            }
        }
        st_dir_release(&sd);
        safetensors_close(&st);
    }
    close(fd);
    return 0;
}
