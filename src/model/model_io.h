/*
 * model_io.h - reading and writing model files: detection, Hugging Face directories
 * (config.json + safetensors, sharded or not) and GGUF, plus the tokenizer that
 * travels with each.
 */
#ifndef EF_MODEL_IO_H
#define EF_MODEL_IO_H

#include "model/llama.h"

typedef enum {
    MODEL_FILE_UNKNOWN,
    MODEL_FILE_LLAMA2C,
    MODEL_FILE_GGUF,
    MODEL_FILE_HF,
    MODEL_FILE_KIND_COUNT
} ModelFileKind;

// Detects the kind of `path`: a directory or config.json -> HF, "GGUF" magic -> GGUF,
// anything else that is a regular file -> llama2.c (checked further by its loader).
Status model_detect_kind(const char *path, ModelFileKind *kind);

// GGUF v2/v3: config from metadata, tensors mapped (F32/F16/BF16) or dequantized.
Status model_load_gguf(Model *m, const char *path);

// Hugging Face directory: config.json, model.safetensors or the sharded index.
Status model_load_hf(Model *m, const char *path);

// Parses config.json text (len bytes) into *c and validates it; unsupported settings
// are refused naming them. `what` names the file in errors. (model_hf.c; fuzzed.)
Status model_hf_parse_config(LlamaConfig *c, const char *text, size_t len, const char *what);

// Loads the tokenizer that belongs to a model file into m->tok: explicit path if given,
// else tokenizer.bin / tok<V>.bin next to a llama2.c file, the GGUF metadata, or the
// HF directory's tokenizer.json. A model without a findable tokenizer is an error.
Status model_load_tokenizer(Model *m, const char *path, ModelFileKind kind,
                            const char *tokenizer_path);

typedef enum { MODEL_FORMAT_HF, MODEL_FORMAT_GGUF, MODEL_FORMAT_COUNT } ModelFormat;

// Writes `m` (and its tokenizer) as an HF directory or a GGUF file with weights
// converted to `dtype`. Atomic: nothing is left behind on error.
Status model_save(const Model *m, const char *out_path, ModelFormat fmt, DType dtype);

// HF directory: config.json, model.safetensors, generation_config.json and the
// tokenizer files (tokenizer_save_hf). Implemented in model_hf.c.
Status model_save_hf(const Model *m, const char *dir, DType dtype);
// The same without model.safetensors (config.json still names `dtype`), for writers of
// another weight layout (GPTQ checkpoints) that add their own.
Status model_save_hf_meta(const Model *m, const char *dir, DType dtype);

// GGUF v3 file with llama/qwen2 metadata and tokenizer.ggml.* (model_gguf.c).
Status model_save_gguf(const Model *m, const char *path, DType dtype);

#endif
