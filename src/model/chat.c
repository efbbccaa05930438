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

// The format of t's template (or, without one, of its vocabulary); CHAT_TEMPLATE_COUNT with
// *why set when there is none we render.
static ChatTemplate chat_pick(const Tokenizer *t, const char **why) {
    const char *tmpl = t ? tokenizer_chat_template(t) : NULL;
    *why = "no known chat format in the tokenizer (ChatML, Llama 3.x, Llama 2 or Zephyr)";
    if (tmpl) {
        if (strstr(tmpl, "<|im_start|>")) {
            // reasoning models (Qwen3, SmolLM3) write think blocks and system metadata
            // that plain ChatML lacks
            if (strstr(tmpl, "enable_thinking") || strstr(tmpl, "reasoning_content") ||
                strstr(tmpl, "<think>")) {
                *why = "the chat template is a reasoning model's (thinking modes, <think> "
                       "blocks), which is not rendered";
                return CHAT_TEMPLATE_COUNT;
            }
            return CHAT_TEMPLATE_CHATML;
        }
        if (strstr(tmpl, "<|start_header_id|>"))
            return strstr(tmpl, "Cutting Knowledge Date") ? CHAT_TEMPLATE_LLAMA31
                                                          : CHAT_TEMPLATE_LLAMA3;
        if (strstr(tmpl, "'<|user|>\\n' + message['content'] + eos_token"))
            return CHAT_TEMPLATE_ZEPHYR;
        if (strstr(tmpl, "[INST]")) {
            if (strstr(tmpl, "<<SYS>>")) return CHAT_TEMPLATE_LLAMA2;
            // Mistral's templates differ from Llama 2's by version (spaces, where the system
            // prompt goes, BOS once): rendering one as Llama 2 would be silently wrong
            *why = "the chat template uses [INST] without Llama 2's <<SYS>> (Mistral-style), "
                   "which is not rendered";
            return CHAT_TEMPLATE_COUNT;
        }
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

static int hex_digit(char c) {
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

// Code point cp as UTF-8 into out.
static void put_utf8(StrBuf *out, unsigned cp) {
    char b[4];
    size_t n;
    if (cp < 0x80) {
        b[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        b[0] = (char)(0xC0 | (cp >> 6));
        b[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        b[0] = (char)(0xE0 | (cp >> 12));
        b[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        b[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        b[0] = (char)(0xF0 | (cp >> 18));
        b[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        b[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        b[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    strbuf_put(out, b, n);
}

// s[0, n), the inside of a Jinja string literal, decoded as Jinja decodes it (Python's
// string escapes: \n \t \r \\ \' \" \a \b \f \v, \xHH, \uHHHH, \UHHHHHHHH; an unknown escape
// keeps its backslash; a CRLF line break is one \n, as Jinja normalises newlines). False for
// forms not decoded here (octal, \N{name}, a code point past U+10FFFF or a surrogate).
static bool jinja_unescape(const char *s, size_t n, StrBuf *out) {
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\r' && i + 1 < n && s[i + 1] == '\n') continue;
        if (s[i] != '\\' || i + 1 == n) {
            strbuf_put(out, s + i, 1);
            continue;
        }
        char e = s[++i], c;
        int digits = e == 'x' ? 2 : e == 'u' ? 4 : e == 'U' ? 8 : 0;
        if (digits) {
            unsigned cp = 0;
            for (int k = 0; k < digits; k++) {
                int h = i + 1 + (size_t)k < n ? hex_digit(s[i + 1 + (size_t)k]) : -1;
                if (h < 0) return false;
                cp = cp * 16 + (unsigned)h;
            }
            if (cp > 0x10FFFF || (cp >= 0xD800 && cp < 0xE000)) return false;
            put_utf8(out, cp);
            i += (size_t)digits;
            continue;
        }
        switch (e) {
        case 'n': c = '\n'; break;
        case 't': c = '\t'; break;
        case 'r': c = '\r'; break;
        case 'a': c = '\a'; break;
        case 'b': c = '\b'; break;
        case 'f': c = '\f'; break;
        case 'v': c = '\v'; break;
        case '\\':
        case '\'':
        case '"': c = e; break;
        case '\n': continue; // a backslash-newline is a line continuation
        default:
            if ((e >= '0' && e <= '7') || e == 'N') return false;
            strbuf_put(out, s + i - 1, 2); // unknown: kept as written
            continue;
        }
        strbuf_put(out, &c, 1);
    }
    return true;
}

// A ChatML template's default system prompt: a string literal
// '<|im_start|>system\n...<|im_end|>...' (newline written as is or as \n) that the template
// prints when the first message is not "system", as SmolLM2's and Qwen2.5's do. Taken only
// where a test of messages[0] comes shortly before it, with no mention of tools in between
// (a system turn printed only when tools are given is not a default). Returns 1 with the
// decoded text in out, 0 when the template has none, -1 when its escapes are not decoded.
static int chatml_default_system(const char *tmpl, StrBuf *out) {
    static const char head[] = "<|im_start|>system", tail[] = "<|im_end|>";
    for (const char *p = tmpl ? strstr(tmpl, head) : NULL; p; p = strstr(p + 1, head)) {
        if (p == tmpl || (p[-1] != '\'' && p[-1] != '"')) continue; // not a literal's start
        const char quote = p[-1];
        const char *q = p + strlen(head);
        if (q[0] == '\n')
            q++;
        else if (q[0] == '\r' && q[1] == '\n')
            q += 2;
        else if (q[0] == '\\' && q[1] == 'n')
            q += 2;
        else
            continue;
        const char *close = q; // the literal's closing quote
        while (*close && *close != quote)
            close += close[0] == '\\' && close[1] ? 2 : 1;
        const char *e = strstr(q, tail);
        if (!*close || !e || e > close || e == q) continue; // the text comes from elsewhere
        // the condition: "messages[0]" within 300 bytes before, no "tools" after it
        const char *from = p - 1 - tmpl > 300 ? p - 1 - 300 : tmpl, *m = NULL;
        for (const char *f = from; (f = memmem(f, (size_t)(p - f), "messages[0]", 11)); f++)
            m = f;
        if (!m || memmem(m, (size_t)(p - m), "tools", 5)) continue;
        return jinja_unescape(q, (size_t)(e - q), out) ? 1 : -1;
    }
    return 0;
}

// ChatML as SmolLM2's and Qwen2's templates write it (contents as they are, not trimmed),
// after the template's default system prompt when the first message is not "system".
static Status render_chatml(const Tokenizer *t, const ChatMessage *msgs, int n, bool gen,
                            StrBuf *o) {
    StrBuf def = {0};
    int has_default = chatml_default_system(t ? tokenizer_chat_template(t) : NULL, &def);
    if (has_default < 0) {
        free(def.p);
        return fail(STATUS_ERR_UNSUPPORTED,
                    "the chat template's default system prompt uses string escapes that are "
                    "not decoded here (octal or \\N{...})");
    }
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

// Llama 3.1-3.3's date line: the template's `set date_string = "..."` default (Meta's:
// "26 Jul 2024"; 3.2 sets it when the renderer has no strftime_now), that date without one.
static void llama31_date(const Tokenizer *t, StrBuf *o) {
    const char *tmpl = t ? tokenizer_chat_template(t) : NULL;
    const char *d = tmpl ? strstr(tmpl, "set date_string = \"") : NULL;
    const char *e = d ? strchr(d += strlen("set date_string = \""), '"') : NULL;
    if (e && e - d < 64 && !memchr(d, '\\', (size_t)(e - d)))
        strbuf_put(o, d, (size_t)(e - d));
    else
        strbuf_puts(o, "26 Jul 2024");
}

// v31: Llama 3.1-3.3's system block first (the first message when it is "system", else an
// empty system message after the fixed lines).
static Status render_llama3(const Tokenizer *t, const ChatMessage *msgs, int n, bool gen, bool v31,
                            StrBuf *o) {
    int first = 0;
    strbuf_puts(o, "<|begin_of_text|>");
    if (v31) {
        strbuf_puts(o, "<|start_header_id|>system<|end_header_id|>\n\n"
                       "Cutting Knowledge Date: December 2023\nToday Date: ");
        llama31_date(t, o);
        strbuf_puts(o, "\n\n");
        if (strcmp(msgs[0].role, "system") == 0) {
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

// Zephyr: what follows a message, and the generation prompt, in the template's text: the
// newline after its "}}" survives transformers' trim_blocks (only newlines after {% %} tags
// go), so TinyLlama's multi-line template puts one after each; a one-line copy does not.
static Status render_zephyr(const Tokenizer *t, const ChatMessage *msgs, int n, bool gen,
                            StrBuf *o) {
    const char *tmpl = t ? tokenizer_chat_template(t) : NULL;
    const char *m = tmpl ? strstr(tmpl, "eos_token }}") : NULL;
    const char *g = tmpl ? strstr(tmpl, "{{ '<|assistant|>' }}") : NULL;
    const bool sep = !tmpl || (m && m[strlen("eos_token }}")] == '\n'),
               gen_sep = !tmpl || (g && g[strlen("{{ '<|assistant|>' }}")] == '\n');
    const int32_t eos = t ? tokenizer_eos_id(t) : -1;
    const char *eos_str = eos >= 0 ? tokenizer_token_str(t, eos) : "</s>";
    for (int i = 0; i < n; i++) {
        strbuf_puts(o, "<|");
        strbuf_puts(o, msgs[i].role);
        strbuf_puts(o, "|>\n");
        strbuf_puts(o, msgs[i].content);
        strbuf_puts(o, eos_str);
        if (sep) strbuf_puts(o, "\n");
    }
    if (gen) strbuf_puts(o, gen_sep ? "<|assistant|>\n" : "<|assistant|>");
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
    // transformers refuses an empty conversation too
    if (n == 0) return fail(STATUS_ERR_ARG, "chat_render: the conversation is empty");
    for (int i = 0; i < n; i++) {
        if (!msgs[i].role || !msgs[i].content)
            return fail(STATUS_ERR_ARG, "chat_render: message %d has no role or content", i);
        // tool results and calls have formats of their own in each template
        if (strcmp(msgs[i].role, "system") != 0 && strcmp(msgs[i].role, "user") != 0 &&
            strcmp(msgs[i].role, "assistant") != 0)
            return fail(STATUS_ERR_UNSUPPORTED,
                        "chat_render: message %d has role '%s'; only system, user and assistant "
                        "turns are rendered",
                        i, msgs[i].role);
    }
    if (tmpl == CHAT_TEMPLATE_AUTO) {
        const char *why;
        tmpl = chat_pick(t, &why);
        if (tmpl == CHAT_TEMPLATE_COUNT) return fail(STATUS_ERR_UNSUPPORTED, "%s", why);
    }
    StrBuf o = {0};
    strbuf_puts(&o, "");
    Status s;
    switch (tmpl) {
    case CHAT_TEMPLATE_CHATML: s = render_chatml(t, msgs, n, add_generation_prompt, &o); break;
    case CHAT_TEMPLATE_LLAMA3:
        s = render_llama3(t, msgs, n, add_generation_prompt, false, &o);
        break;
    case CHAT_TEMPLATE_LLAMA31:
        s = render_llama3(t, msgs, n, add_generation_prompt, true, &o);
        break;
    case CHAT_TEMPLATE_LLAMA2: s = render_llama2(msgs, n, &o); break;
    case CHAT_TEMPLATE_ZEPHYR: s = render_zephyr(t, msgs, n, add_generation_prompt, &o); break;
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
