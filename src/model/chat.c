/*
 * chat.c - prompt templates: ChatML (SmolLM2), Llama 3, Llama 2 chat, and the Alpaca
 * prompt. Hand-written equivalents of the Jinja templates, checked character for
 * character against transformers' apply_chat_template (tests/test_tokenizer.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "core/status.h"
#include "model/tokenizer.h"

static const char SMOLLM_SYSTEM[] =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

typedef struct {
    char *p;
    size_t n, cap;
} Str;

static void str_put(Str *s, const char *x, size_t n) {
    if (s->n + n + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 256;
        while (cap < s->n + n + 1)
            cap *= 2;
        s->p = xrealloc(s->p, cap);
        s->cap = cap;
    }
    memcpy(s->p + s->n, x, n);
    s->n += n;
    s->p[s->n] = 0;
}

static void str_cat(Str *s, const char *x) { str_put(s, x, strlen(x)); }

// Length of a Unicode White_Space character (what Python's str.strip() removes) at
// s[0..n), 0 if none.
static int ws_len(const unsigned char *s, size_t n) {
    if (n == 0) return 0;
    if (s[0] == ' ' || (s[0] >= 0x09 && s[0] <= 0x0D) || (s[0] >= 0x1C && s[0] <= 0x1F)) return 1;
    if (n >= 2 && s[0] == 0xC2 && (s[1] == 0x85 || s[1] == 0xA0)) return 2;
    if (n >= 3 && s[0] == 0xE1 && s[1] == 0x9A && s[2] == 0x80) return 3; // U+1680
    if (n >= 3 && s[0] == 0xE2 && s[1] == 0x80 &&
        (s[2] <= 0x8A || s[2] == 0xA8 || s[2] == 0xA9 || s[2] == 0xAF))
        return 3; // U+2000..200A, 2028, 2029, 202F
    if (n >= 3 && s[0] == 0xE2 && s[1] == 0x81 && s[2] == 0x9F) return 3; // U+205F
    if (n >= 3 && s[0] == 0xE3 && s[1] == 0x80 && s[2] == 0x80) return 3; // U+3000
    return 0;
}

// Appends x with leading and trailing whitespace removed (Jinja trim / str.strip()).
static void str_cat_stripped(Str *s, const char *x) {
    const unsigned char *u = (const unsigned char *)x;
    size_t n = strlen(x), a = 0;
    int k;
    while (a < n && (k = ws_len(u + a, n - a)) > 0)
        a += (size_t)k;
    size_t b = n;
    while (b > a) {
        // step back one character and test it
        size_t c = b - 1;
        while (c > a && (u[c] & 0xC0) == 0x80)
            c--;
        if (ws_len(u + c, b - c) != (int)(b - c)) break;
        b = c;
    }
    str_put(s, x + a, b - a);
}

static ChatTemplate chat_pick(const Tokenizer *t) {
    const char *tmpl = t ? tokenizer_chat_template(t) : NULL;
    if (tmpl) {
        if (strstr(tmpl, "<|im_start|>")) return CHAT_TEMPLATE_CHATML;
        if (strstr(tmpl, "<|start_header_id|>")) return CHAT_TEMPLATE_LLAMA3;
        if (strstr(tmpl, "[INST]")) return CHAT_TEMPLATE_LLAMA2;
    }
    if (t) {
        static const struct {
            const char *tok;
            ChatTemplate kind;
        } marks[] = {{"<|im_start|>", CHAT_TEMPLATE_CHATML},
                     {"<|start_header_id|>", CHAT_TEMPLATE_LLAMA3}};
        for (size_t m = 0; m < ARRAY_LEN(marks); m++)
            for (int id = 0; id < tokenizer_vocab_size(t); id++)
                if (strcmp(tokenizer_token_str(t, id), marks[m].tok) == 0) return marks[m].kind;
    }
    return CHAT_TEMPLATE_COUNT;
}

static Status render_chatml(const Tokenizer *t, const ChatMessage *msgs, int n, bool gen, Str *o) {
    const char *tmpl = t ? tokenizer_chat_template(t) : NULL;
    bool smol_default = tmpl && strstr(tmpl, SMOLLM_SYSTEM) != NULL;
    for (int i = 0; i < n; i++) {
        if (i == 0 && smol_default && strcmp(msgs[0].role, "system") != 0) {
            str_cat(o, "<|im_start|>system\n");
            str_cat(o, SMOLLM_SYSTEM);
            str_cat(o, "<|im_end|>\n");
        }
        str_cat(o, "<|im_start|>");
        str_cat(o, msgs[i].role);
        str_cat(o, "\n");
        str_cat(o, msgs[i].content);
        str_cat(o, "<|im_end|>\n");
    }
    if (gen) str_cat(o, "<|im_start|>assistant\n");
    return STATUS_OK;
}

static Status render_llama3(const ChatMessage *msgs, int n, bool gen, Str *o) {
    for (int i = 0; i < n; i++) {
        if (i == 0) str_cat(o, "<|begin_of_text|>");
        str_cat(o, "<|start_header_id|>");
        str_cat(o, msgs[i].role);
        str_cat(o, "<|end_header_id|>\n\n");
        str_cat_stripped(o, msgs[i].content);
        str_cat(o, "<|eot_id|>");
    }
    if (gen) str_cat(o, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    return STATUS_OK;
}

static Status render_llama2(const ChatMessage *msgs, int n, Str *o) {
    const char *system = NULL;
    int first = 0;
    if (n > 0 && strcmp(msgs[0].role, "system") == 0) {
        system = msgs[0].content;
        first = 1;
    }
    for (int i = first; i < n; i++) {
        int k = i - first;
        bool user = strcmp(msgs[i].role, "user") == 0;
        if (user != (k % 2 == 0))
            return fail(STATUS_ERR_ARG,
                        "llama2 chat: conversation roles must alternate "
                        "user/assistant/user/assistant/... (message %d is '%s')",
                        i, msgs[i].role);
        Str content = {0};
        if (k == 0 && system) {
            str_cat(&content, "<<SYS>>\n");
            str_cat(&content, system);
            str_cat(&content, "\n<</SYS>>\n\n");
        }
        str_cat(&content, msgs[i].content);
        if (user) {
            str_cat(o, "<s>[INST] ");
            str_cat_stripped(o, content.p);
            str_cat(o, " [/INST]");
        } else if (strcmp(msgs[i].role, "assistant") == 0) {
            str_cat(o, " ");
            str_cat_stripped(o, content.p);
            str_cat(o, " </s>");
        }
        free(content.p);
    }
    return STATUS_OK;
}

Status chat_render(const Tokenizer *t, ChatTemplate tmpl, const ChatMessage *msgs, int n,
                   bool add_generation_prompt, char **out) {
    *out = NULL;
    if (n < 0 || (n > 0 && !msgs)) return fail(STATUS_ERR_ARG, "chat_render: bad message list");
    for (int i = 0; i < n; i++)
        if (!msgs[i].role || !msgs[i].content)
            return fail(STATUS_ERR_ARG, "chat_render: message %d has no role or content", i);
    if (tmpl == CHAT_TEMPLATE_AUTO) {
        tmpl = chat_pick(t);
        if (tmpl == CHAT_TEMPLATE_COUNT)
            return fail(STATUS_ERR_UNSUPPORTED,
                        "no known chat format in the tokenizer (ChatML, Llama 3 or Llama 2)");
    }
    Str o = {0};
    str_cat(&o, "");
    Status s;
    switch (tmpl) {
    case CHAT_TEMPLATE_CHATML: s = render_chatml(t, msgs, n, add_generation_prompt, &o); break;
    case CHAT_TEMPLATE_LLAMA3: s = render_llama3(msgs, n, add_generation_prompt, &o); break;
    case CHAT_TEMPLATE_LLAMA2: s = render_llama2(msgs, n, &o); break;
    default: s = fail(STATUS_ERR_ARG, "unknown chat template %d", (int)tmpl); break;
    }
    if (s != STATUS_OK) {
        free(o.p);
        return s;
    }
    *out = o.p;
    return STATUS_OK;
}

char *alpaca_render(const char *instruction, const char *input) {
    Str o = {0};
    bool has_input = input && *input;
    if (has_input)
        str_cat(&o, "Below is an instruction that describes a task, paired with an input that "
                    "provides further context. Write a response that appropriately completes "
                    "the request.\n\n### Instruction:\n");
    else
        str_cat(&o, "Below is an instruction that describes a task. Write a response that "
                    "appropriately completes the request.\n\n### Instruction:\n");
    str_cat(&o, instruction ? instruction : "");
    if (has_input) {
        str_cat(&o, "\n\n### Input:\n");
        str_cat(&o, input);
    }
    str_cat(&o, "\n\n### Response:");
    return o.p;
}
