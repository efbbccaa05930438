/*
 * cmd_merge.c - `edgeforge merge MODEL ADAPTER OUT`: merge a PEFT LoRA adapter into a
 * model (W += scaling B A, computed in F32) and write an HF directory.
 *
 *   edgeforge merge models/smollm2 runs/a/adapter out/merged --dtype bf16
 *
 * Merging into the full-precision base and quantizing afterwards is the supported order
 * (reference.md §2.6).
 */
#include <stdio.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/common.h"
#include "core/dtype.h"
#include "model/llama.h"
#include "model/model_io.h"
#include "train/lora.h"

int cmd_merge(int argc, char **argv) {
    const char *dtype_name = "f32";
    ArgSpec spec[] = {
        {"dtype", 0, ARG_STRING, &dtype_name, "weights of the written model: f32 | f16 | bf16", 0,
         0},
    };
    ArgParse ap = {.cmd = "merge",
                   .pos_usage = "MODEL ADAPTER OUT",
                   .spec = spec,
                   .n_spec = (int)ARRAY_LEN(spec),
                   .min_pos = 3,
                   .max_pos = 3,
                   .summary = "merge a PEFT LoRA adapter into a model and write an HF directory"};
    int rc = args_parse(&ap, argc, argv);
    if (rc != 0) return rc > 0 ? 0 : 2;
    int dt = dtype_from_name(dtype_name);
    if (dt < 0) {
        fprintf(stderr, "error: --dtype: unknown type '%s'\n", dtype_name);
        return 2;
    }
    Model m;
    LoraModel lm = {0};
    int ret = 1;
    if (model_load(&m, ap.pos[0], NULL) != STATUS_OK) return cli_fail(ap.pos[0]);
    if (lora_load_peft(&lm, &m.cfg, ap.pos[1]) != STATUS_OK) {
        cli_fail("merge"); // the messages name the adapter's files
        goto done;
    }
    if (lora_merge_model(&lm, &m) != STATUS_OK ||
        model_save_hf(&m, ap.pos[2], (DType)dt) != STATUS_OK) {
        cli_fail("merge");
        goto done;
    }
    printf("merged %s (rank %d, scaling %.6g) into %s -> %s\n", ap.pos[1], lm.cfg.rank,
           (double)lm.scaling, ap.pos[0], ap.pos[2]);
    ret = 0;
done:
    lora_release(&lm);
    model_release(&m);
    return ret;
}
