/*
 * cmd_convert.c - `edgeforge convert IN OUT --format hf|gguf`: rewrites a model
 * (llama2.c, Hugging Face directory or GGUF) as a Hugging Face directory or a GGUF
 * file, with its tokenizer.
 *
 *   edgeforge convert models/stories260K/stories260K.bin out/stories-hf --format hf
 *   edgeforge convert out/stories-hf out/stories.gguf --format gguf --dtype f16
 *
 * --dtype picks the weight type of the output (default: the input's embedding dtype;
 * quantized GGUF input is dequantized to f32; a GPTQ checkpoint's packed linears are
 * dequantized exactly to float32 first, then written as --dtype: the quantized model in a
 * format every tool runs, e.g. for llama.cpp or as a merge base). The tokenizer comes from next to
 * the input (or --tokenizer); a model without one is refused unless --no-tokenizer. Writers are
 * atomic: on any error OUT does not exist afterwards.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/common.h"
#include "model/llama.h"
#include "model/model_io.h"
#include "quant/gptq_model.h"

int cmd_convert(int argc, char **argv) {
    const char *format = NULL, *dtype_s = NULL, *tok_path = NULL;
    bool no_tok = false;
    ArgSpec spec[] = {
        {"format", 'f', ARG_STRING, &format, "output format: hf (directory) or gguf (file)", 0, 0},
        {"dtype", 0, ARG_STRING, &dtype_s, "weight type of the output: f32, f16 or bf16", 0, 0},
        {"tokenizer", 0, ARG_STRING, &tok_path, "tokenizer file or directory to use", 0, 0},
        {"no-tokenizer", 0, ARG_FLAG, &no_tok, "write the weights without a tokenizer", 0, 0},
    };
    ArgParse ap = {.cmd = "convert",
                   .pos_usage = "IN OUT",
                   .spec = spec,
                   .n_spec = (int)ARRAY_LEN(spec),
                   .min_pos = 2,
                   .max_pos = 2,
                   .summary = "Converts a model (llama2.c, Hugging Face or GGUF) to a Hugging Face "
                              "directory or a GGUF file."};
    int r = args_parse(&ap, argc, argv);
    if (r != 0) return r > 0 ? 0 : 2;
    ModelFormat fmt;
    if (!format) {
        fprintf(stderr, "error: convert: --format hf|gguf is required\n");
        return 2;
    }
    if (strcmp(format, "hf") == 0)
        fmt = MODEL_FORMAT_HF;
    else if (strcmp(format, "gguf") == 0)
        fmt = MODEL_FORMAT_GGUF;
    else {
        fprintf(stderr, "error: convert: --format must be hf or gguf, got '%s'\n", format);
        return 2;
    }
    int dt = -1;
    if (dtype_s && (dt = dtype_from_name(dtype_s)) < 0) {
        fprintf(stderr, "error: convert: --dtype must be f32, f16 or bf16, got '%s'\n", dtype_s);
        return 2;
    }
    if (no_tok && tok_path) {
        fprintf(stderr, "error: convert: --tokenizer and --no-tokenizer exclude each other\n");
        return 2;
    }
    const char *in = ap.pos[0], *out = ap.pos[1];
    Model m;
    ModelLoadOptions opts = {.tokenizer_path = tok_path, .no_tokenizer = no_tok};
    if (model_load(&m, in, &opts) != STATUS_OK) return cli_fail("convert");
    DType dtype = dt >= 0 ? (DType)dt : m.tok_emb.dtype;
    Status s = STATUS_OK;
    if (gptq_model_has_packed(&m)) {
        fprintf(stderr, "convert: dequantizing the GPTQ linears of '%s' (exact, float32)\n", in);
        s = gptq_model_dequantize(&m);
    }
    if (s == STATUS_OK) s = model_save(&m, out, fmt, dtype);
    if (s != STATUS_OK) {
        model_release(&m);
        return cli_fail("convert");
    }
    printf("wrote %s (%s, %s, %" PRId64 " parameters%s)\n", out,
           fmt == MODEL_FORMAT_HF ? "hf" : "gguf", dtype_name(dtype), model_param_count(&m),
           m.tok ? "" : ", no tokenizer");
    model_release(&m);
    return 0;
}
