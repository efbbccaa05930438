/*
 * test_tokenizer.c - tokenizers against Hugging Face `tokenizers`, sentencepiece and
 * transformers' apply_chat_template (fixtures from tools/gen_tokenizer_fixtures.py in
 * tests/fixtures/tokenizers/), plus llama2.c's golden encodes for stories260K, the
 * tokenizer.json writer round trip, streaming decode and bad input.
 */
#include "model/tokenizer.h"
#include "core/common.h"
#include "core/fileio.h"
#include "core/strbuf.h"
#include "testutil.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FIX "tests/fixtures/tokenizers/"

typedef struct {
    json_t **rows;
    int n;
    json_t *meta;
} Cases;

static void cases_load(Cases *c, const char *path) {
    char *txt;
    size_t n;
    memset(c, 0, sizeof *c);
    if (file_read_all(path, &txt, &n) != STATUS_OK)
        fail_msg("cannot read %s: %s", path, status_msg());
    int cap = 0;
    for (char *line = txt; line && *line;) {
        char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        json_error_t err;
        json_t *j = json_loadb(line, len, JSON_ALLOW_NUL, &err);
        if (!j) fail_msg("%s: %s", path, err.text);
        if (json_object_get(j, "meta")) {
            c->meta = j;
        } else {
            if (c->n == cap) {
                cap = cap ? 2 * cap : 1024;
                c->rows = xrealloc(c->rows, (size_t)cap * sizeof(json_t *));
            }
            c->rows[c->n++] = j;
        }
        line = nl ? nl + 1 : NULL;
    }
    free(txt);
}

static void cases_free(Cases *c) {
    for (int i = 0; i < c->n; i++)
        json_decref(c->rows[i]);
    free(c->rows);
    if (c->meta) json_decref(c->meta);
}

static const char *row_text(const json_t *r, size_t *len) {
    const json_t *t = json_object_get(r, "text");
    *len = json_string_length(t);
    return json_string_value(t);
}

// True when ids equal the JSON list.
static bool ids_equal(const int32_t *ids, int n, const json_t *ref) {
    if ((size_t)n != json_array_size(ref)) return false;
    for (int i = 0; i < n; i++)
        if (ids[i] != (int32_t)json_integer_value(json_array_get(ref, (size_t)i))) return false;
    return true;
}

static void print_mismatch(const char *what, const char *text, const int32_t *ids, int n,
                           const json_t *ref) {
    fprintf(stderr, "  %s mismatch for \"", what);
    for (const char *p = text; *p; p++) {
        if ((unsigned char)*p < 0x20)
            fprintf(stderr, "\\x%02x", (unsigned char)*p);
        else
            fputc(*p, stderr);
    }
    fprintf(stderr, "\"\n    got:");
    for (int i = 0; i < n && i < 40; i++)
        fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "\n    ref:");
    for (size_t i = 0; i < json_array_size(ref) && i < 40; i++)
        fprintf(stderr, " %lld", (long long)json_integer_value(json_array_get(ref, i)));
    fprintf(stderr, "\n");
}

// Encodes every case with `flags` and compares with the field `key`; returns mismatches.
static int check_ids(const Tokenizer *t, const Cases *c, int flags, const char *key) {
    int bad = 0;
    for (int i = 0; i < c->n; i++) {
        size_t len;
        const char *text = row_text(c->rows[i], &len);
        const json_t *ref = json_object_get(c->rows[i], key);
        assert_non_null(ref);
        int32_t *ids;
        int n;
        assert_int_equal(tokenizer_encode(t, text, len, flags, &ids, &n), STATUS_OK);
        if (!ids_equal(ids, n, ref)) {
            if (bad < 5) print_mismatch(key, text, ids, n, ref);
            bad++;
        }
        free(ids);
    }
    return bad;
}

// decode(ref ids, skip special) == "decoded"; returns mismatches.
static int check_decode(const Tokenizer *t, const Cases *c) {
    int bad = 0;
    for (int i = 0; i < c->n; i++) {
        const json_t *ref = json_object_get(c->rows[i], "ids");
        const json_t *dec = json_object_get(c->rows[i], "decoded");
        int n = (int)json_array_size(ref);
        int32_t *ids = xmalloc((size_t)(n + 1) * sizeof(int32_t));
        for (int k = 0; k < n; k++)
            ids[k] = (int32_t)json_integer_value(json_array_get(ref, (size_t)k));
        char *out;
        size_t len;
        assert_int_equal(tokenizer_decode(t, ids, n, false, &out, &len), STATUS_OK);
        if (len != json_string_length(dec) || memcmp(out, json_string_value(dec), len) != 0) {
            if (bad < 5)
                fprintf(stderr, "  decode mismatch: got \"%s\" want \"%s\"\n", out,
                        json_string_value(dec));
            bad++;
        }
        // streaming decode gives the same text
        TokenizerStream st;
        tokenizer_stream_init(&st, t);
        char *acc = xmalloc(len * 3 + 64);
        size_t k2 = 0;
        for (int k = 0; k < n; k++) {
            const char *piece = tokenizer_stream_push(&st, ids[k]);
            size_t pl = strlen(piece);
            memcpy(acc + k2, piece, pl);
            k2 += pl;
        }
        const char *rest = tokenizer_stream_flush(&st);
        memcpy(acc + k2, rest, strlen(rest));
        k2 += strlen(rest);
        // strlen-based pieces cannot carry NUL bytes: compare up to the first NUL
        size_t cmp = strnlen(out, len);
        if (k2 < cmp || memcmp(acc, out, cmp) != 0) {
            if (bad < 5) fprintf(stderr, "  stream decode mismatch for \"%s\"\n", out);
            bad++;
        }
        free(acc);
        free(out);
        free(ids);
    }
    return bad;
}

static Tokenizer *load_hf(const char *path) {
    Tokenizer *t = NULL;
    Status s = tokenizer_load_hf(&t, path);
    if (s != STATUS_OK) fail_msg("load %s: %s", path, status_msg());
    return t;
}

/* ---- llama2.c golden ---------------------------------------------------------- */

static void test_stories260k_golden(void **state) {
    (void)state;
    Tokenizer *t;
    assert_int_equal(tokenizer_load_llama2c(&t, "models/stories260K/tok512.bin", 512), STATUS_OK);
    assert_int_equal(tokenizer_vocab_size(t), 512);
    struct {
        const char *text;
        int32_t ids[16];
        int n;
    } cases[] = {
        {"Once upon a time", {403, 407, 261, 378}, 4},
        {"Lily and Tom went to the park.",
         {317, 269, 274, 287, 263, 377, 267, 265, 282, 295, 433, 426},
         12},
        {"Zoo", {410, 469, 347}, 3},
    };
    for (size_t c = 0; c < ARRAY_LEN(cases); c++) {
        int32_t *ids;
        int n;
        assert_int_equal(tokenizer_encode(t, cases[c].text, strlen(cases[c].text), 0, &ids, &n),
                         STATUS_OK);
        assert_int_equal(n, cases[c].n);
        for (int i = 0; i < n; i++)
            assert_int_equal(ids[i], cases[c].ids[i]);
        char *out;
        size_t len;
        assert_int_equal(tokenizer_decode(t, ids, n, false, &out, &len), STATUS_OK);
        assert_string_equal(out, cases[c].text);
        free(out);
        free(ids);
    }
    // BOS on request; the golden greedy text decodes token by token
    int32_t *ids;
    int n;
    assert_int_equal(tokenizer_encode(t, "Once", 4, TOKENIZE_ADD_BOS, &ids, &n), STATUS_OK);
    assert_int_equal(ids[0], 1);
    free(ids);
    // models/stories260K/golden.txt: the first 50 greedy ids and their decoded text
    static const int32_t greedy[] = {
        403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401,
        396, 267, 337, 410, 408, 419, 292, 411, 322, 265, 282, 295, 433, 426, 385, 328, 432,
        358, 394, 261, 370, 432, 352, 266, 268, 388, 426, 338, 391, 266, 267, 337, 335};
    TokenizerStream st;
    tokenizer_stream_init(&st, t);
    char text[512] = "";
    tokenizer_stream_push(&st, 1); // BOS prints nothing
    for (size_t i = 0; i < ARRAY_LEN(greedy); i++)
        strcat(text, tokenizer_stream_push(&st, greedy[i]));
    strcat(text, tokenizer_stream_flush(&st));
    assert_string_equal(text,
                        "Once upon a time, there was a little girl named Lily. She loved to play "
                        "outside in the park. One day, she saw a big, red ball. She wanted to "
                        "play with");
    tokenizer_free(t);
}

/* ---- Hugging Face fixtures ---------------------------------------------------- */

static void test_smollm2_vs_hf(void **state) {
    (void)state;
    Tokenizer *t = load_hf(FIX "smollm2");
    assert_int_equal(tokenizer_kind(t), TOKENIZER_BPE);
    assert_int_equal(tokenizer_vocab_size(t), 49152);
    Cases c;
    cases_load(&c, FIX "smollm2/cases.jsonl");
    assert_true(c.n >= 2000);
    int bad = check_ids(t, &c, TOKENIZE_HF, "ids");
    int bad_plain = check_ids(t, &c, 0, "ids_plain");
    int bad_dec = check_decode(t, &c);
    fprintf(stderr, "  smollm2: %d cases, ids mismatches %d, plain %d, decode %d\n", c.n, bad,
            bad_plain, bad_dec);
    assert_int_equal(bad, 0);
    assert_int_equal(bad_plain, 0);
    assert_int_equal(bad_dec, 0);
    cases_free(&c);
    tokenizer_free(t);
}

// The legacy (transformers 4) form of the Llama 2 tokenizer.json, made by the same edit
// as legacy_variant() in tools/gen_tokenizer_fixtures.py.
static char *write_legacy_llama2(void) {
    json_error_t err;
    json_t *d = json_load_file(FIX "llama2/tokenizer.json", 0, &err);
    assert_non_null(d);
    json_object_set_new(d, "normalizer",
                        json_pack("{s:s,s:[{s:s,s:s},{s:s,s:{s:s},s:s}]}", "type", "Sequence",
                                  "normalizers", "type", "Prepend", "prepend", "\xE2\x96\x81",
                                  "type", "Replace", "pattern", "String", " ", "content",
                                  "\xE2\x96\x81"));
    json_object_set_new(d, "pre_tokenizer", json_null());
    json_object_set_new(d, "post_processor",
                        json_pack("{s:s,s:[{s:{s:s,s:i}},{s:{s:s,s:i}}],s:{s:{s:s,s:[i],s:[s]}}}",
                                  "type", "TemplateProcessing", "single", "SpecialToken", "id",
                                  "<s>", "type_id", 0, "Sequence", "id", "A", "type_id", 0,
                                  "special_tokens", "<s>", "id", "<s>", "ids", 1, "tokens", "<s>"));
    char dir[] = "/tmp/ef_tok_legacy_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char *path = path_join(dir, "tokenizer.json");
    assert_int_equal(json_dump_file(d, path, 0), 0);
    json_decref(d);
    return path;
}

static void test_llama2_vs_hf_and_sentencepiece(void **state) {
    (void)state;
    Tokenizer *t = load_hf(FIX "llama2");
    assert_int_equal(tokenizer_kind(t), TOKENIZER_SPM);
    Cases c;
    cases_load(&c, FIX "llama2/cases.jsonl");
    assert_true(c.n >= 2000);
    int bad = check_ids(t, &c, TOKENIZE_HF, "ids");
    int bad_dec = check_decode(t, &c);
    tokenizer_free(t);

    char *legacy = write_legacy_llama2();
    t = load_hf(legacy);
    int bad_leg = check_ids(t, &c, TOKENIZE_HF, "ids_legacy");
    tokenizer_free(t);
    unlink(legacy);
    char *slash = strrchr(legacy, '/');
    *slash = 0;
    rmdir(legacy);
    free(legacy);

    // llama2.c's algorithm (score merges over the whole text, no added-token matching)
    // on tokenizer.bin vs sentencepiece's own ids for tokenizer.model
    assert_int_equal(tokenizer_load_llama2c(&t, FIX "llama2/tokenizer.bin", 32000), STATUS_OK);
    int bad_sp = check_ids(t, &c, 0, "sp");
    fprintf(stderr,
            "  llama2: %d cases; mismatches: tokenizer.json %d, legacy variant %d, decode %d, "
            "tokenizer.bin vs sentencepiece %d\n",
            c.n, bad, bad_leg, bad_dec, bad_sp);
    assert_int_equal(bad_sp, 0);
    tokenizer_free(t);
    cases_free(&c);
    assert_int_equal(bad, 0);
    assert_int_equal(bad_leg, 0);
    assert_int_equal(bad_dec, 0);
}

// the conversations of CONVS in tools/gen_tokenizer_fixtures.py
static const ChatMessage conv0[] = {{"user", "Hello!"}};
static const ChatMessage conv1[] = {{"system", "You are terse."}, {"user", "What is 2+2?"}};
static const ChatMessage conv2[] = {
    {"user", "  Write a haiku.\n"},
    {"assistant", "Leaves fall \n slowly. "},
    {"user", "Another, about \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80"}};
static const ChatMessage conv3[] = {{"system", "Be kind.\nAlways."},
                                    {"user", "hi"},
                                    {"assistant", "Hello! How can I help?"},
                                    {"user", "tell me a joke"}};
// EXTRA_CONVS of tools/gen_chat_fixtures.py: a system turn that is not first
static const ChatMessage conv4[] = {{"user", "a"}, {"system", " Be brief. "}, {"user", "b"}};
static const ChatMessage *const convs[] = {conv0, conv1, conv2, conv3, conv4};
static const int lens[] = {1, 2, 3, 4, 3};

static void test_chat_vs_transformers(void **state) {
    (void)state;
    Tokenizer *t = load_hf(FIX "smollm2");
    Cases c;
    cases_load(&c, FIX "chat_cases.jsonl");
    assert_true(c.n >= 20);
    for (int i = 0; i < c.n; i++) {
        const json_t *r = c.rows[i];
        const char *tmpl = json_string_value(json_object_get(r, "template"));
        int conv = (int)json_integer_value(json_object_get(r, "conv"));
        bool gen = json_is_true(json_object_get(r, "add_generation_prompt"));
        ChatTemplate kind = strcmp(tmpl, "llama3") == 0   ? CHAT_TEMPLATE_LLAMA3
                            : strcmp(tmpl, "llama2") == 0 ? CHAT_TEMPLATE_LLAMA2
                                                          : CHAT_TEMPLATE_AUTO;
        char *out;
        assert_int_equal(chat_render(kind == CHAT_TEMPLATE_AUTO ? t : NULL, kind, convs[conv],
                                     lens[conv], gen, &out),
                         STATUS_OK);
        const char *want = json_string_value(json_object_get(r, "text"));
        if (strcmp(out, want) != 0)
            fail_msg("%s conv %d gen %d:\n got: %s\nwant: %s", tmpl, conv, gen, out, want);
        free(out);
    }
    // roles that do not alternate are refused by the Llama 2 format
    static const ChatMessage badc[] = {{"user", "a"}, {"user", "b"}};
    char *out;
    assert_int_equal(chat_render(NULL, CHAT_TEMPLATE_LLAMA2, badc, 2, false, &out), STATUS_ERR_ARG);
    cases_free(&c);
    tokenizer_free(t);
}

// A one-token tokenizer carrying chat template `tmpl` (for AUTO's pick).
static Tokenizer *template_tokenizer(const char *tmpl) {
    static const char *const tokens[] = {"a"};
    static const float scores[] = {0.0f};
    TokenizerSpec sp = {.kind = TOKENIZER_SPM,
                        .n_vocab = 1,
                        .tokens = tokens,
                        .scores = scores,
                        .bos_id = -1,
                        .eos_id = -1,
                        .unk_id = -1,
                        .pad_id = -1,
                        .chat_template = tmpl};
    Tokenizer *t;
    if (tokenizer_build(&t, &sp, "test") != STATUS_OK) fail_msg("%s", status_msg());
    return t;
}

// s with every `from` replaced by `to`, as Python's str.replace (a new string; `from` must
// occur).
static char *str_replace_all(const char *s, const char *from, const char *to) {
    if (!strstr(s, from)) fail_msg("'%s' not found", from);
    StrBuf b = {0};
    for (const char *at; (at = strstr(s, from)); s = at + strlen(from)) {
        strbuf_put(&b, s, (size_t)(at - s));
        strbuf_puts(&b, to);
    }
    strbuf_puts(&b, s);
    return b.p;
}

// tools/gen_chat_fixtures.py: transformers' renderings of Meta's Llama 3.1, 3.2 and 3.3
// Instruct templates (3.2 with its fixed-date fallback), of Qwen2.5's, of two variants
// (Qwen2.5 with Qwen2.5-Math's default system prompt, which holds braces and a backslash;
// Llama 3.1 with another date_string), of three small ChatML templates of ours (a
// double-quoted default with an apostrophe; Python string escapes; a system turn printed only
// with tools, which is no default) and of Zephyr's template as TinyLlama-Chat ships it
// (multi-line) and on one line. Meta's go through CHAT_TEMPLATE_LLAMA31 (their text is not
// committed); the others through AUTO with the template in a tokenizer, so the default
// system prompt, the date and Zephyr's newlines are read from the template.
static void test_chat_llama31(void **state) {
    (void)state;
    Cases c;
    cases_load(&c, FIX "chat_llama31_cases.jsonl");
    assert_int_equal(c.n, 110);
    char *qwen;
    assert_int_equal(file_read_all(FIX "qwen2.5_chat_template.jinja", &qwen, NULL), STATUS_OK);
    char *math = str_replace_all(
        qwen, "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
        "Please reason step by step, and put your final answer within \\\\boxed{}.");
    const json_t *synth = json_object_get(json_object_get(c.meta, "meta"), "synthetic");
    assert_int_equal(json_object_size(synth), 5);
    int n_auto = 0;
    for (int i = 0; i < c.n; i++) {
        const json_t *r = c.rows[i];
        const char *name = json_string_value(json_object_get(r, "template"));
        int conv = (int)json_integer_value(json_object_get(r, "conv"));
        bool gen = json_is_true(json_object_get(r, "add_generation_prompt"));
        const char *tmpl = strcmp(name, "qwen2.5") == 0        ? qwen
                           : strcmp(name, "qwen2.5-math") == 0 ? math
                           : strcmp(name, "llama3.1-date") == 0
                               ? "<|start_header_id|>Cutting Knowledge Date{%- set "
                                 "date_string = \"01 Jan 2025\" %}"
                               : json_string_value(json_object_get(synth, name));
        Tokenizer *t = tmpl ? template_tokenizer(tmpl) : NULL;
        n_auto += t != NULL;
        char *out;
        if (chat_render(t, t ? CHAT_TEMPLATE_AUTO : CHAT_TEMPLATE_LLAMA31, convs[conv], lens[conv],
                        gen, &out) != STATUS_OK)
            fail_msg("%s conv %d: %s", name, conv, status_msg());
        const char *want = json_string_value(json_object_get(r, "text"));
        if (strcmp(out, want) != 0)
            fail_msg("%s conv %d gen %d:\n got: %s\nwant: %s", name, conv, gen, out, want);
        free(out);
        if (t) tokenizer_free(t);
    }
    assert_int_equal(n_auto, 80); // 8 templates x 5 conversations x 2
    free(math);
    free(qwen);
    cases_free(&c);
    // AUTO's pick between the Llama 3 formats: the knowledge-cutoff line makes it 3.1-style
    const char *tmpls[] = {
        "{{- bos_token }}{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}"
        "{{- \"Cutting Knowledge Date: December 2023\\n\" }}",
        "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>' }}"};
    const ChatTemplate want_kind[] = {CHAT_TEMPLATE_LLAMA31, CHAT_TEMPLATE_LLAMA3};
    for (int k = 0; k < 2; k++) {
        Tokenizer *t = template_tokenizer(tmpls[k]);
        char *a, *b;
        assert_int_equal(chat_render(t, CHAT_TEMPLATE_AUTO, conv1, 2, true, &a), STATUS_OK);
        assert_int_equal(chat_render(NULL, want_kind[k], conv1, 2, true, &b), STATUS_OK);
        assert_string_equal(a, b);
        free(a);
        free(b);
        tokenizer_free(t);
    }
}

// What chat_render refuses: an empty conversation (as transformers does), tool turns (each
// template has its own format for them), a reasoning model's ChatML template (thinking modes),
// a default system prompt with escapes it does not decode.
static void test_chat_refusals(void **state) {
    (void)state;
    char *out = NULL;
    assert_int_equal(chat_render(NULL, CHAT_TEMPLATE_CHATML, conv0, 0, true, &out), STATUS_ERR_ARG);
    static const ChatMessage tool[] = {{"user", "hi"}, {"tool", "42"}};
    for (int k = CHAT_TEMPLATE_CHATML; k < CHAT_TEMPLATE_COUNT; k++)
        assert_int_equal(chat_render(NULL, (ChatTemplate)k, tool, 2, true, &out),
                         STATUS_ERR_UNSUPPORTED);
    const char *bad[] = {"{%- if enable_thinking %}<think>{% endif %}<|im_start|>",
                         "{%- if messages[0]['role'] != 'system' %}{{- '<|im_start|>system\\n"
                         "caf\\351<|im_end|>\\n' }}{%- endif %}",
                         "{{- bos_token }}{{- '[INST] ' + message['content'] + '[/INST]' }}"};
    const char *why[] = {"reasoning model", "escapes", "Mistral-style"};
    for (int k = 0; k < 3; k++) {
        Tokenizer *t = template_tokenizer(bad[k]);
        assert_int_equal(chat_render(t, CHAT_TEMPLATE_AUTO, conv0, 1, true, &out),
                         STATUS_ERR_UNSUPPORTED);
        if (!strstr(status_msg(), why[k])) fail_msg("%s", status_msg());
        tokenizer_free(t);
    }
    assert_null(out);
}

static void test_alpaca(void **state) {
    (void)state;
    char *a = alpaca_render("Add the numbers.", "2 and 3");
    assert_string_equal(a,
                        "Below is an instruction that describes a task, paired with an input that "
                        "provides further context. Write a response that appropriately completes "
                        "the request.\n\n### Instruction:\nAdd the numbers.\n\n### Input:\n2 and "
                        "3\n\n### Response:");
    free(a);
    a = alpaca_render("Say hi.", "");
    assert_string_equal(a, "Below is an instruction that describes a task. Write a response that "
                           "appropriately completes the request.\n\n### Instruction:\nSay hi.\n\n"
                           "### Response:");
    free(a);
}

/* ---- writer round trip -------------------------------------------------------- */

static int roundtrip_mismatches(Tokenizer *t, const Cases *c, int flags, int limit) {
    char dir[] = "/tmp/ef_tok_save_XXXXXX";
    assert_non_null(mkdtemp(dir));
    if (tokenizer_save_hf(t, dir) != STATUS_OK) fail_msg("save: %s", status_msg());
    Tokenizer *u = load_hf(dir);
    assert_int_equal(tokenizer_vocab_size(u), tokenizer_vocab_size(t));
    assert_int_equal(tokenizer_bos_id(u), tokenizer_bos_id(t));
    assert_int_equal(tokenizer_eos_id(u), tokenizer_eos_id(t));
    int bad = 0;
    for (int i = 0; i < c->n && i < limit; i++) {
        size_t len;
        const char *text = row_text(c->rows[i], &len);
        int32_t *a, *b;
        int na, nb;
        assert_int_equal(tokenizer_encode(t, text, len, flags, &a, &na), STATUS_OK);
        assert_int_equal(tokenizer_encode(u, text, len, flags, &b, &nb), STATUS_OK);
        if (na != nb || memcmp(a, b, (size_t)na * sizeof(int32_t)) != 0) bad++;
        free(a);
        free(b);
    }
    const char *names[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"};
    for (size_t i = 0; i < ARRAY_LEN(names); i++) {
        char *p = path_join(dir, names[i]);
        unlink(p);
        free(p);
    }
    rmdir(dir);
    tokenizer_free(u);
    return bad;
}

static void test_save_hf_roundtrip(void **state) {
    (void)state;
    Cases c;
    cases_load(&c, FIX "smollm2/cases.jsonl");
    Tokenizer *t = load_hf(FIX "smollm2");
    assert_int_equal(roundtrip_mismatches(t, &c, TOKENIZE_HF, 600), 0);
    tokenizer_free(t);
    cases_free(&c);
    cases_load(&c, FIX "llama2/cases.jsonl");
    t = load_hf(FIX "llama2");
    assert_int_equal(roundtrip_mismatches(t, &c, TOKENIZE_HF, 600), 0);
    tokenizer_free(t);
    // score-only SPM (llama2.c) -> tokenizer.json merges ranked by score
    assert_int_equal(tokenizer_load_llama2c(&t, "models/stories260K/tok512.bin", 512), STATUS_OK);
    assert_int_equal(roundtrip_mismatches(t, &c, TOKENIZE_DEFAULT_BOS, 2400), 0);
    tokenizer_free(t);
    cases_free(&c);
}

/* ---- GGUF-style specs ------------------------------------------------------------ */

// A spec as the GGUF reader fills it ("gpt2" with pre "smollm"): the SmolLM2 vocabulary
// and merges with llama.cpp's smollm split (digits one by one, then GPT-2).
static void test_spec_pre_names(void **state) {
    (void)state;
    Tokenizer *t = load_hf(FIX "smollm2");
    TokenizerSpec sp;
    tokenizer_get_spec(t, &sp);
    sp.n_pre_regex = 0;
    sp.pre_regex = NULL;
    sp.pre = "smollm";
    Tokenizer *u;
    assert_int_equal(tokenizer_build(&u, &sp, "spec"), STATUS_OK);
    // against HF with SmolLM2's own Sequence[Digits(individual), ByteLevel]
    Cases c;
    cases_load(&c, FIX "smollm2/cases.jsonl");
    int bad = check_ids(u, &c, TOKENIZE_HF, "ids_digits");
    fprintf(stderr, "  smollm2 spec pre=\"smollm\": %d cases, mismatches %d\n", c.n, bad);
    assert_int_equal(bad, 0);
    cases_free(&c);
    tokenizer_free(u);
    // the GGUF name of a tokenizer.json's regex steps (what the GGUF writer stores)
    // (the fixture's tokenizer.json has ByteLevel alone; the released SmolLM2 file puts
    // Digits(individual_digits) before it)
    TokenizerSpec hs;
    tokenizer_get_spec(t, &hs);
    assert_true(hs.n_pre_regex == 1);
    assert_string_equal(tokenizer_pre_name(&hs), "gpt2");
    const char *two[] = {"\\p{N}", hs.pre_regex[0]};
    hs.n_pre_regex = 2;
    hs.pre_regex = two;
    assert_string_equal(tokenizer_pre_name(&hs), "smollm");
    const char *custom[] = {"\\p{N}{1,2}", two[1]}; // digits in pairs: no GGUF name
    hs.n_pre_regex = 2;
    hs.pre_regex = custom;
    assert_null(tokenizer_pre_name(&hs));
    assert_string_equal(tokenizer_pre_name(&sp), "smollm");
    sp.pre = "deepseek-coder"; // a GGUF name we do not map
    assert_null(tokenizer_pre_name(&sp));
    assert_int_equal(tokenizer_build(&u, &sp, "spec"), STATUS_ERR_UNSUPPORTED);
    assert_non_null(strstr(status_msg(), "deepseek-coder"));
    sp.pre = "no-such-(regex";
    assert_int_equal(tokenizer_build(&u, &sp, "spec"), STATUS_ERR_FORMAT);
    assert_non_null(strstr(status_msg(), "regex"));
    tokenizer_free(t);
}

// Llama 3 (tools/fetch_llama3_tokenizer.sh; skipped when the vocabulary is absent).
#define LLAMA3_DIR "models/llama3-tokenizer"
static void test_llama3_vs_hf(void **state) {
    (void)state;
    if (!path_is_file(LLAMA3_DIR "/tokenizer.json")) {
        fprintf(stderr, "  %s/tokenizer.json absent (tools/fetch_llama3_tokenizer.sh): skipped\n",
                LLAMA3_DIR);
        skip();
    }
    Tokenizer *t = load_hf(LLAMA3_DIR);
    // 128,000 BPE tokens + 256 specials (+ <|image|> = 128256 in this Llama 3.2 Vision file)
    assert_true(tokenizer_vocab_size(t) >= 128256);
    Cases c;
    cases_load(&c, FIX "llama3_cases.jsonl");
    int bad = check_ids(t, &c, TOKENIZE_HF, "ids");
    int bad_plain = check_ids(t, &c, TOKENIZE_DEFAULT_BOS, "ids_plain");
    int bad_dec = check_decode(t, &c);
    tokenizer_free(t);
    // the same file with ignore_merges = true
    json_error_t err;
    json_t *d = json_load_file(LLAMA3_DIR "/tokenizer.json", 0, &err);
    assert_non_null(d);
    json_object_set_new(json_object_get(d, "model"), "ignore_merges", json_true());
    char dir[] = "/tmp/ef_tok_l3_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char *path = path_join(dir, "tokenizer.json");
    assert_int_equal(json_dump_file(d, path, JSON_COMPACT), 0);
    json_decref(d);
    t = load_hf(path);
    int bad_im = check_ids(t, &c, TOKENIZE_HF, "ids_im");
    tokenizer_free(t);
    unlink(path);
    rmdir(dir);
    free(path);
    fprintf(stderr,
            "  llama3: %d cases; mismatches: ids %d, plain %d, ignore_merges %d, decode %d\n", c.n,
            bad, bad_plain, bad_im, bad_dec);
    cases_free(&c);
    assert_int_equal(bad, 0);
    assert_int_equal(bad_plain, 0);
    assert_int_equal(bad_im, 0);
    assert_int_equal(bad_dec, 0);
}

/* ---- bad input ---------------------------------------------------------------- */

static char *tmp_write(const char *name, const void *data, size_t n) {
    char dir[] = "/tmp/ef_tok_bad_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char *p = path_join(dir, name);
    assert_int_equal(file_write_all(p, data, n), STATUS_OK);
    return p;
}

static void tmp_remove(char *p) {
    unlink(p);
    char *slash = strrchr(p, '/');
    *slash = 0;
    rmdir(p);
    free(p);
}

static void expect_error(Status got, Status want, const char *needle) {
    assert_int_equal(got, want);
    if (!strstr(status_msg(), needle))
        fail_msg("message \"%s\" does not name \"%s\"", status_msg(), needle);
}

static void test_bad_input(void **state) {
    (void)state;
    Tokenizer *t = NULL;
    char *p = tmp_write("tokenizer.json", "{\"model\": {\"type\": \"BPE\", ", 26);
    expect_error(tokenizer_load_hf(&t, p), STATUS_ERR_FORMAT, p);
    assert_null(t);
    tmp_remove(p);
    const char *uni = "{\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\", 0.0]]}}";
    p = tmp_write("tokenizer.json", uni, strlen(uni));
    expect_error(tokenizer_load_hf(&t, p), STATUS_ERR_UNSUPPORTED, "Unigram");
    assert_non_null(strstr(status_msg(), p));
    tmp_remove(p);
    const char *badmerge = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, "
                           "\"merges\": [\"a c\"]}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}";
    p = tmp_write("tokenizer.json", badmerge, strlen(badmerge));
    expect_error(tokenizer_load_hf(&t, p), STATUS_ERR_FORMAT, "merge 0");
    tmp_remove(p);
    expect_error(tokenizer_load_hf(&t, "/nonexistent/dir/tokenizer.json"), STATUS_ERR_IO,
                 "/nonexistent/dir/tokenizer.json");
    // truncated tokenizer.bin
    char *data;
    size_t n;
    assert_int_equal(file_read_all("models/stories260K/tok512.bin", &data, &n), STATUS_OK);
    p = tmp_write("tok512.bin", data, n / 2);
    expect_error(tokenizer_load_llama2c(&t, p, 512), STATUS_ERR_FORMAT, p);
    assert_null(t);
    tmp_remove(p);
    p = tmp_write("tok512.bin", data, 2);
    expect_error(tokenizer_load_llama2c(&t, p, 512), STATUS_ERR_FORMAT, "truncated");
    tmp_remove(p);
    free(data);
    // ids out of range in a spec
    const char *toks[] = {"a", "b"};
    TokenizerSpec sp = {.kind = TOKENIZER_SPM,
                        .n_vocab = 2,
                        .tokens = toks,
                        .bos_id = 5,
                        .eos_id = -1,
                        .unk_id = -1,
                        .pad_id = -1};
    float sc[2] = {0, 0};
    sp.scores = sc;
    expect_error(tokenizer_build(&t, &sp, "myspec"), STATUS_ERR_FORMAT, "myspec");
    // invalid UTF-8 text encodes without crashing and decodes to U+FFFD
    assert_int_equal(tokenizer_load_llama2c(&t, "models/stories260K/tok512.bin", 512), STATUS_OK);
    int32_t *ids;
    int m;
    assert_int_equal(tokenizer_encode(t, "a\xff\xc3", 3, 0, &ids, &m), STATUS_OK);
    char *out;
    size_t len;
    assert_int_equal(tokenizer_decode(t, ids, m, false, &out, &len), STATUS_OK);
    assert_string_equal(out, "a\xEF\xBF\xBD\xEF\xBF\xBD");
    free(out);
    free(ids);
    int32_t bad_id = 9999;
    assert_int_equal(tokenizer_decode(t, &bad_id, 1, false, &out, &len), STATUS_ERR_ARG);
    tokenizer_free(t);
}

static bool valid_utf8(const char *s) {
    const unsigned char *u = (const unsigned char *)s;
    while (*u) {
        int k = *u < 0x80 ? 1 : (*u >> 5) == 6 ? 2 : (*u >> 4) == 14 ? 3 : (*u >> 3) == 30 ? 4 : 0;
        if (!k) return false;
        for (int i = 1; i < k; i++)
            if ((u[i] & 0xC0) != 0x80) return false;
        u += k;
    }
    return true;
}

static void test_stream_holds_partial_utf8(void **state) {
    (void)state;
    Tokenizer *t = load_hf(FIX "smollm2");
    const char *text = "\xF0\x9F\x98\x80 \xE6\x97\xA5 \xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9";
    int32_t *ids;
    int n;
    assert_int_equal(tokenizer_encode(t, text, strlen(text), 0, &ids, &n), STATUS_OK);
    TokenizerStream st;
    tokenizer_stream_init(&st, t);
    char acc[64] = "";
    int n_held = 0;
    for (int i = 0; i < n; i++) {
        const char *piece = tokenizer_stream_push(&st, ids[i]);
        assert_true(valid_utf8(piece)); // only complete characters are handed out
        n_held += st.n_pending > 0;
        strcat(acc, piece);
    }
    assert_true(n_held > 0); // the emoji are split across byte-level tokens
    strcat(acc, tokenizer_stream_flush(&st));
    assert_string_equal(acc, text);
    free(ids);
    // a lone lead byte is held back, then flushed as U+FFFD
    int32_t lead = tokenizer_piece_id(t, "\xF0", 1);
    assert_true(lead >= 0);
    tokenizer_stream_init(&st, t);
    assert_string_equal(tokenizer_stream_push(&st, lead), "");
    assert_string_equal(tokenizer_stream_push(&st, tokenizer_piece_id(t, "a", 1)), "\xEF\xBF\xBD"
                                                                                   "a");
    tokenizer_stream_init(&st, t);
    tokenizer_stream_push(&st, lead);
    assert_string_equal(tokenizer_stream_flush(&st), "\xEF\xBF\xBD");
    // control tokens print nothing
    assert_string_equal(tokenizer_stream_push(&st, tokenizer_eos_id(t)), "");
    tokenizer_free(t);
}

// The heap merge loop against its naive twin, in rank mode (HF merges) and score mode
// (llama2.c tokenizer.bin), on every fixture string.
static int ref_mismatches(const Tokenizer *t, const Cases *c, int flags) {
    int bad = 0;
    for (int i = 0; i < c->n; i++) {
        size_t len;
        const char *text = row_text(c->rows[i], &len);
        int32_t *a, *b;
        int na, nb;
        assert_int_equal(tokenizer_encode(t, text, len, flags, &a, &na), STATUS_OK);
        assert_int_equal(tokenizer_encode_ref(t, text, len, flags, &b, &nb), STATUS_OK);
        if (na != nb || memcmp(a, b, (size_t)na * sizeof(int32_t)) != 0) bad++;
        free(a);
        free(b);
    }
    return bad;
}

static void test_encode_vs_ref(void **state) {
    (void)state;
    Cases c;
    cases_load(&c, FIX "smollm2/cases.jsonl");
    Tokenizer *t = load_hf(FIX "smollm2");
    assert_int_equal(ref_mismatches(t, &c, TOKENIZE_HF), 0);
    tokenizer_free(t);
    cases_free(&c);
    cases_load(&c, FIX "llama2/cases.jsonl");
    t = load_hf(FIX "llama2");
    assert_int_equal(ref_mismatches(t, &c, TOKENIZE_HF), 0);
    tokenizer_free(t);
    assert_int_equal(tokenizer_load_llama2c(&t, FIX "llama2/tokenizer.bin", 32000), STATUS_OK);
    assert_int_equal(ref_mismatches(t, &c, TOKENIZE_HF), 0);
    tokenizer_free(t);
    cases_free(&c);
}

static void test_cli_tokenize(void **state) {
    (void)state;
    char *out;
    int rc =
        run_cli("tokenize models/stories260K/tok512.bin 'Once upon a time' --ids --no-bos", &out);
    if (rc != 0 || strcmp(out, "403 407 261 378\n") != 0) fail_msg("rc %d, output: %s", rc, out);
    free(out);
    rc = run_cli("tokenize " FIX "smollm2 '<|im_start|>user' --ids", &out);
    if (rc != 0 || strcmp(out, "1 4093\n") != 0) fail_msg("rc %d, output: %s", rc, out);
    free(out);
    rc = run_cli("tokenize " FIX "smollm2 '<|im_start|>' --ids --plain", &out);
    if (rc != 0 || strcmp(out, "44 108 306 79 3738 108 46\n") != 0)
        fail_msg("rc %d, output: %s", rc, out);
    free(out);
    rc = run_cli("tokenize /nonexistent/tokenizer.json x", &out);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(out, "/nonexistent/tokenizer.json"));
    free(out);
    assert_int_equal(run_cli("tokenize", NULL), 2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stories260k_golden),
        cmocka_unit_test(test_smollm2_vs_hf),
        cmocka_unit_test(test_llama2_vs_hf_and_sentencepiece),
        cmocka_unit_test(test_chat_vs_transformers),
        cmocka_unit_test(test_chat_llama31),
        cmocka_unit_test(test_chat_refusals),
        cmocka_unit_test(test_alpaca),
        cmocka_unit_test(test_save_hf_roundtrip),
        cmocka_unit_test(test_spec_pre_names),
        cmocka_unit_test(test_llama3_vs_hf),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_stream_holds_partial_utf8),
        cmocka_unit_test(test_encode_vs_ref),
        cmocka_unit_test(test_cli_tokenize),
    };
    return cmocka_run_group_tests_name("tokenizer", tests, NULL, NULL);
}
