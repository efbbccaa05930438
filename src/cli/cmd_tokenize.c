/*
 * cmd_tokenize.c - `edgeforge tokenize MODEL_OR_TOKENIZER TEXT`: the token ids of a text.
 *
 *   edgeforge tokenize models/stories260K/tok512.bin "Once upon a time" --no-bos
 *   edgeforge tokenize tests/fixtures/tokenizers/smollm2 "<|im_start|>user" --ids
 *   edgeforge tokenize models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf "Hello world"
 *
 * MODEL_OR_TOKENIZER: a tokenizer.json or a directory holding one (also an HF model
 * directory), a llama2.c tokenizer.bin / tok<V>.bin, or any model file edgeforge loads
 * (GGUF, llama2.c checkpoint: the tokenizer that comes with it). Encoding follows
 * Hugging Face's `tokenizer.encode(text)`: special tokens in the text are recognised
 * (--plain treats them as text) and BOS is added when the tokenizer says so
 * (--no-bos never adds it). Prints one "id<TAB>piece" line per token, or with --ids
 * only the ids on one line.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/common.h"
#include "core/fileio.h"
#include "model/llama.h"
#include "model/tokenizer.h"

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

// A llama2.c tokenizer file by name: tokenizer.bin or tok<digits>.bin.
static bool looks_like_llama2c_tokenizer(const char *path) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    if (strcmp(base, "tokenizer.bin") == 0) return true;
    if (strncmp(base, "tok", 3) != 0 || !ends_with(base, ".bin")) return false;
    for (const char *p = base + 3; *p != '.'; p++)
        if (*p < '0' || *p > '9') return false;
    return true;
}

// Prints a token's text with control bytes escaped.
static void print_piece(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n')
            fputs("\\n", stdout);
        else if (c == '\t')
            fputs("\\t", stdout);
        else if (c == '\\')
            fputs("\\\\", stdout);
        else if (c < 0x20 || c == 0x7f)
            printf("\\x%02x", c);
        else
            putchar(c);
    }
}

int cmd_tokenize(int argc, char **argv) {
    bool ids_only = false, no_bos = false, plain = false;
    ArgSpec spec[] = {
        {"ids", 0, ARG_FLAG, &ids_only, "print only the ids, space separated", 0, 0},
        {"no-bos", 0, ARG_FLAG, &no_bos, "never prepend BOS", 0, 0},
        {"plain", 0, ARG_FLAG, &plain, "treat special-token text as plain text", 0, 0},
    };
    ArgParse ap = {.cmd = "tokenize",
                   .pos_usage = "MODEL_OR_TOKENIZER TEXT",
                   .spec = spec,
                   .n_spec = (int)ARRAY_LEN(spec),
                   .min_pos = 2,
                   .max_pos = 2,
                   .summary = "print the token ids of TEXT (Hugging Face encode semantics)"};
    int rc = args_parse(&ap, argc, argv);
    if (rc != 0) return rc > 0 ? 0 : 2;
    const char *path = ap.pos[0], *text = ap.pos[1];

    Tokenizer *tok = NULL;
    Model m;
    model_init(&m);
    Status s;
    if (path_is_dir(path) || ends_with(path, ".json")) {
        s = tokenizer_load_hf(&tok, path);
    } else if (looks_like_llama2c_tokenizer(path)) {
        s = tokenizer_load_llama2c(&tok, path, -1);
    } else {
        ModelLoadOptions opts = {0};
        s = model_load(&m, path, &opts);
        if (s == STATUS_OK) tok = m.tok;
    }
    if (s != STATUS_OK || !tok) {
        if (s == STATUS_OK)
            fprintf(stderr, "error: '%s' has no tokenizer\n", path);
        else
            cli_fail(NULL);
        model_release(&m);
        return 1;
    }
    int flags = (plain ? 0 : TOKENIZE_PARSE_SPECIAL) | (no_bos ? 0 : TOKENIZE_DEFAULT_BOS);
    int32_t *ids = NULL;
    int n = 0;
    s = tokenizer_encode(tok, text, strlen(text), flags, &ids, &n);
    if (s != STATUS_OK) {
        cli_fail("tokenize");
    } else if (ids_only) {
        for (int i = 0; i < n; i++)
            printf(i ? " %d" : "%d", ids[i]);
        printf("\n");
    } else {
        for (int i = 0; i < n; i++) {
            size_t len;
            const char *b = tokenizer_token_bytes(tok, ids[i], &len);
            printf("%d\t'", ids[i]);
            print_piece(b, len);
            printf("'\n");
        }
        fprintf(stderr, "%d tokens\n", n);
    }
    free(ids);
    if (tok != m.tok) tokenizer_free(tok);
    model_release(&m);
    return s == STATUS_OK ? 0 : 1;
}
