/*
 * cmd_prune.c - `edgeforge prune MODEL OUT --keep-layers LIST`: a smaller student with the
 * same tokenizer, cut from MODEL by keeping some decoder layers; written as an HF directory.
 *
 *   edgeforge prune models/stories260K/stories260K.bin out/student2 --keep-layers 0,4
 */
#include <stdio.h>
#include <stdlib.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/common.h"
#include "core/dtype.h"
#include "model/llama.h"
#include "model/model_io.h"
#include "train/prune.h"

int cmd_prune(int argc, char **argv) {
    const char *layers = NULL, *dtype_name = "f32";
    ArgSpec spec[] = {
        {"keep-layers", 0, ARG_STRING, &layers, "layers to keep, e.g. 0,4 or 0-2,5", 0, 0},
        {"dtype", 0, ARG_STRING, &dtype_name, "weights of the written model: f32 | f16 | bf16", 0,
         0},
    };
    ArgParse ap = {.cmd = "prune",
                   .pos_usage = "MODEL OUT",
                   .spec = spec,
                   .n_spec = (int)ARRAY_LEN(spec),
                   .min_pos = 2,
                   .max_pos = 2,
                   .summary = "cut a student from a model by keeping some of its layers"};
    int rc = args_parse(&ap, argc, argv);
    if (rc != 0) return rc > 0 ? 0 : 2;
    int dt = dtype_from_name(dtype_name);
    if (!layers || dt < 0) {
        fprintf(stderr, "error: prune needs --keep-layers and a known --dtype\n");
        return 2;
    }
    int *keep, n;
    if (prune_parse_layers(layers, &keep, &n) != STATUS_OK) return cli_fail("--keep-layers");
    Model m;
    int ret = 1;
    if (model_load(&m, ap.pos[0], NULL) != STATUS_OK) {
        free(keep);
        return cli_fail(ap.pos[0]);
    }
    int L = m.cfg.n_layers;
    if (prune_keep_layers(&m, keep, n) != STATUS_OK ||
        model_save_hf(&m, ap.pos[1], (DType)dt) != STATUS_OK)
        cli_fail("prune");
    else {
        printf("kept %d of %d layers (%s) -> %s, %lld parameters\n", n, L, layers, ap.pos[1],
               (long long)model_param_count(&m));
        ret = 0;
    }
    free(keep);
    model_release(&m);
    return ret;
}
