/*
 * chat.c - prompt templates: ChatML (SmolLM2, Qwen2), Llama 3.x, Llama 2 chat, and the Alpaca
 * prompt. Hand-written equivalents of the Jinja templates, checked character for
 * character against transformers' apply_chat_template (tests/test_tokenizer.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "core/strbuf.h"
#include "core/status.h"
#include "model/tokenizer.h"

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
static void str_cat_stripped(StrBuf *s, const char *x) {
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
    strbuf_put(s, x + a, b - a);
}

static ChatTemplate chat_pick(const Tokenizer *t) {
    const char *tmpl = t ? tokenizer_chat_template(t) : NULL;
    if (tmpl) {
        if (strstr(tmpl, "<|im_start|>")) return CHAT_TEMPLATE_CHATML;
        if (strstr(tmpl, "<|start_header_id|>"))
            return strstr(tmpl, "Cutting Knowledge Date") ? CHAT_TEMPLATE_LLAMA31
                                                          : CHAT_TEMPLATE_LLAMA3;
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

// A ChatML template's default system prompt: the text of a string literal
// '<|im_start|>system\n...<|im_end|>' (newline written as is or as \n), which SmolLM2's and
// Qwen2.5's templates print when the first message is not "system". Jinja's string escapes
// are undone. False when the template has none (its system turn comes from the messages).
static bool chatml_default_system(const char *tmpl, StrBuf *out) {
    static const char head[] = "<|im_start|>system", tail[] = "<|im_end|>";
    for (const char *p = tmpl ? strstr(tmpl, head) : NULL; p; p = strstr(p + 1, head)) {
        const char *q = p + strlen(head);
        if (*q == '\n')
            q++;
        else if (q[0] == '\\' && q[1] == 'n')
            q += 2;
        else
            continue;
        const char *e = strstr(q, tail);
        if (!e || e == q || memchr(q, '\'', (size_t)(e - q)) || memchr(q, '"', (size_t)(e - q)) ||
            memchr(q, '{', (size_t)(e - q)))
            continue; // the literal ends before <|im_end|>: the text comes from elsewhere
        for (const char *c = q; c < e; c++) {
            if (*c == '\\' && c + 1 < e) {
                c++;
                char u = *c == 'n' ? '\n' : *c == 't' ? '\t' : *c == 'r' ? '\r' : *c;
                strbuf_put(out, &u, 1);
            } else {
                strbuf_put(out, c, 1);
            }
        }
        return true;
    }
    return false;
}

// ChatML as SmolLM2's and Qwen2's templates write it (contents as they are, not trimmed),
// after the template's default system prompt when the first message is not "system".
// (Qwen2.5's template also prints its default for an empty conversation; SmolLM2's prints
// nothing; here an empty conversation is empty.)
static Status render_chatml(const Tokenizer *t, const ChatMessage *msgs, int n, bool gen,
                            StrBuf *o) {
    StrBuf def = {0};
    bool has_default = chatml_default_system(t ? tokenizer_chat_template(t) : NULL, &def);
    for (int i = 0; i < n; i++) {
        if (i == 0 && has_default && strcmp(msgs[0].role, "system") != 0) {
            strbuf_puts(o, "<|im_start|>system\n");
            strbuf_put(o, def.p, def.n);
            strbuf_puts(o, "<|im_end|>\n");
        }
        strbuf_puts(o, "<|im_start|>");
        strbuf_puts(o, msgs[i].role);
        strbuf_puts(o, "\n");
        strbuf_puts(o, msgs[i].content);
        strbuf_puts(o, "<|im_end|>\n");
    }
    if (gen) strbuf_puts(o, "<|im_start|>assistant\n");
    free(def.p);
    return STATUS_OK;
}

// v31: Llama 3.1-3.3's system block first (the first message when it is "system", else an
// empty system message after the fixed lines).
static Status render_llama3(const ChatMessage *msgs, int n, bool gen, bool v31, StrBuf *o) {
    int first = 0;
    if (v31 || n > 0) strbuf_puts(o, "<|begin_of_text|>");
    if (v31) {
        strbuf_puts(o, "<|start_header_id|>system<|end_header_id|>\n\n"
                       "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n");
        if (n > 0 && strcmp(msgs[0].role, "system") == 0) {
            str_cat_stripped(o, msgs[0].content);
            first = 1;
        }
        strbuf_puts(o, "<|eot_id|>");
    }
    for (int i = first; i < n; i++) {
        strbuf_puts(o, "<|start_header_id|>");
        strbuf_puts(o, msgs[i].role);
        strbuf_puts(o, "<|end_header_id|>\n\n");
        str_cat_stripped(o, msgs[i].content);
        strbuf_puts(o, "<|eot_id|>");
    }
    if (gen) strbuf_puts(o, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    return STATUS_OK;
}

static Status render_llama2(const ChatMessage *msgs, int n, StrBuf *o) {
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
        StrBuf content = {0};
        if (k == 0 && system) {
            strbuf_puts(&content, "<<SYS>>\n");
            strbuf_puts(&content, system);
            strbuf_puts(&content, "\n<</SYS>>\n\n");
        }
        strbuf_puts(&content, msgs[i].content);
        if (user) {
            strbuf_puts(o, "<s>[INST] ");
            str_cat_stripped(o, content.p);
            strbuf_puts(o, " [/INST]");
        } else if (strcmp(msgs[i].role, "assistant") == 0) {
            strbuf_puts(o, " ");
            str_cat_stripped(o, content.p);
            strbuf_puts(o, " </s>");
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
                        "no known chat format in the tokenizer (ChatML, Llama 3.x or Llama 2)");
    }
    StrBuf o = {0};
    strbuf_puts(&o, "");
    Status s;
    switch (tmpl) {
    case CHAT_TEMPLATE_CHATML: s = render_chatml(t, msgs, n, add_generation_prompt, &o); break;
    case CHAT_TEMPLATE_LLAMA3: s = render_llama3(msgs, n, add_generation_prompt, false, &o); break;
    case CHAT_TEMPLATE_LLAMA31: s = render_llama3(msgs, n, add_generation_prompt, true, &o); break;
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
    StrBuf o = {0};
    bool has_input = input && *input;
    if (has_input)
        strbuf_puts(&o, "Below is an instruction that describes a task, paired with an input that "
                        "provides further context. Write a response that appropriately completes "
                        "the request.\n\n### Instruction:\n");
    else
        strbuf_puts(&o, "Below is an instruction that describes a task. Write a response that "
                        "appropriately completes the request.\n\n### Instruction:\n");
    strbuf_puts(&o, instruction ? instruction : "");
    if (has_input) {
        strbuf_puts(&o, "\n\n### Input:\n");
        strbuf_puts(&o, input);
    }
    strbuf_puts(&o, "\n\n### Response:");
    return o.p;
}
