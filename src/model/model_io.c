/*
 * model_io.c - model file detection and tokenizer lookup per file kind.
 */
#include "model_io.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "model/tokenizer.h"

Status model_detect_kind(const char *path, ModelFileKind *kind) {
    *kind = MODEL_FILE_UNKNOWN;
    if (path_is_dir(path)) {
        *kind = MODEL_FILE_HF;
        return STATUS_OK;
    }
    size_t n = strlen(path);
    if (n >= 11 && strcmp(path + n - 11, "config.json") == 0) {
        *kind = MODEL_FILE_HF;
        return STATUS_OK;
    }
    FILE *f = fopen(path, "rb");
    if (!f) return fail(STATUS_ERR_IO, "cannot open '%s'", path);
    char magic[4] = {0};
    size_t r = fread(magic, 1, 4, f);
    fclose(f);
    if (r == 4 && memcmp(magic, "GGUF", 4) == 0)
        *kind = MODEL_FILE_GGUF;
    else
        *kind = MODEL_FILE_LLAMA2C;
    return STATUS_OK;
}

// llama2.c: an explicit tokenizer, else tok<V>.bin or tokenizer.bin in the same directory.
static Status find_llama2c_tokenizer(Model *m, const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, (size_t)(slash - path)) : xstrdup(".");
    char name[64];
    snprintf(name, sizeof name, "tok%d.bin", m->cfg.vocab_size);
    const char *cands[] = {name, "tokenizer.bin"};
    Status s =
        fail(STATUS_ERR_IO,
             "no tokenizer for '%s': put %s or tokenizer.bin next to it, or pass --tokenizer", path,
             name);
    for (size_t i = 0; i < ARRAY_LEN(cands); i++) {
        char *p = path_join(dir, cands[i]);
        if (path_is_file(p)) {
            s = tokenizer_load_llama2c(&m->tok, p, m->cfg.vocab_size);
            free(p);
            break;
        }
        free(p);
    }
    free(dir);
    return s;
}

Status model_load_tokenizer(Model *m, const char *path, ModelFileKind kind,
                            const char *tokenizer_path) {
    if (tokenizer_path) {
        ModelFileKind tk = MODEL_FILE_UNKNOWN;
        size_t n = strlen(tokenizer_path);
        if (path_is_dir(tokenizer_path) || (n >= 5 && strcmp(tokenizer_path + n - 5, ".json") == 0))
            tk = MODEL_FILE_HF;
        if (tk == MODEL_FILE_HF) return tokenizer_load_hf(&m->tok, tokenizer_path);
        return tokenizer_load_llama2c(&m->tok, tokenizer_path, m->cfg.vocab_size);
    }
    switch (kind) {
    case MODEL_FILE_LLAMA2C: return find_llama2c_tokenizer(m, path);
    case MODEL_FILE_HF: // model_load_hf keeps the directory in m->source (path may be config.json)
        return tokenizer_load_hf(&m->tok, m->source && path_is_dir(m->source) ? m->source : path);
    case MODEL_FILE_GGUF:
        return m->tok ? STATUS_OK : fail(STATUS_ERR_FORMAT, "'%s' has no tokenizer metadata", path);
    default: return fail(STATUS_ERR_FORMAT, "cannot find a tokenizer for '%s'", path);
    }
}

Status model_save(const Model *m, const char *out_path, ModelFormat fmt, DType dtype) {
    switch (fmt) {
    case MODEL_FORMAT_HF: return model_save_hf(m, out_path, dtype);
    case MODEL_FORMAT_GGUF: return model_save_gguf(m, out_path, dtype);
    default: return fail(STATUS_ERR_ARG, "unknown output format %d", (int)fmt);
    }
}
