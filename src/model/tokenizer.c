/*
 * tokenizer.c - the tokenizer core: build from a TokenizerSpec, SPM and byte-level BPE
 * encoding, decoding, streaming decode and the llama2.c tokenizer.bin loader.
 * (tokenizer_hf.c reads/writes tokenizer.json, chat.c renders prompt templates.)
 *
 * One merge engine serves both kinds. A "word" (the whole text segment for SPM, one
 * regex pre-token for BPE) starts as a list of symbols; the best adjacent pair is merged
 * until none is left:
 *   - rank mode (a merges list is given: HF tokenizer.json, GGUF gpt2): the pair with
 *     the lowest merge rank, leftmost first (HF `tokenizers` BPE::merge_word);
 *   - score mode (SPM without merges: llama2.c, GGUF llama): the pair whose joined text
 *     is a vocabulary piece with the highest score, leftmost first (llama2.c encode,
 *     llama.cpp llm_tokenizer_spm).
 * A binary heap with lazy invalidation makes a word of n symbols cost O(n log n), so a
 * long SPM text (one word) does not go quadratic.
 *
 * Tokens are looked up by the bytes they stand for ("bytes form"): SPM "▁" is a space,
 * <0xNN> is that byte, a byte-level BPE token is un-mapped through the GPT-2 byte<->unicode
 * table. Encoding then works on the raw input bytes without building mapped strings.
 */
#include "model/tokenizer.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "core/common.h"
#include "core/strbuf.h"
#include "core/fileio.h"
#include "core/status.h"

/* ---- small utilities ---------------------------------------------------------- */

typedef struct {
    int32_t *v;
    int n, cap;
} IdVec;

static void idvec_push(IdVec *a, int32_t x) {
    if (a->n == a->cap) {
        a->cap = a->cap ? 2 * a->cap : 64;
        a->v = xrealloc(a->v, (size_t)a->cap * sizeof(int32_t));
    }
    a->v[a->n++] = x;
}

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull; // FNV-1a
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

// Length of the valid UTF-8 sequence at s[0..n), 0 when invalid. *partial is set when
// the bytes are a valid but unfinished prefix (more bytes could complete it); *sub is
// the length of the maximal valid subpart (what one U+FFFD replaces, as Rust's lossy
// conversion does).
static int utf8_seq(const unsigned char *s, size_t n, bool *partial, int *sub) {
    *partial = false;
    *sub = 1;
    unsigned c = s[0];
    if (c < 0x80) return 1;
    int len;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c == 0xE0)
        len = 3, lo = 0xA0;
    else if (c >= 0xE1 && c <= 0xEC)
        len = 3;
    else if (c == 0xED)
        len = 3, hi = 0x9F;
    else if (c >= 0xEE && c <= 0xEF)
        len = 3;
    else if (c == 0xF0)
        len = 4, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3)
        len = 4;
    else if (c == 0xF4)
        len = 4, hi = 0x8F;
    else
        return 0;
    for (int i = 1; i < len; i++) {
        if ((size_t)i >= n) {
            *partial = true;
            *sub = i;
            return 0;
        }
        unsigned b = s[i];
        if (b < (i == 1 ? lo : 0x80) || b > (i == 1 ? hi : 0xBF)) {
            *sub = i;
            return 0;
        }
    }
    return len;
}

// Appends `s` to `b` with every invalid UTF-8 subpart replaced by U+FFFD.
static void buf_put_lossy(StrBuf *b, const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, run = 0;
    while (i < n) {
        bool partial;
        int sub;
        int k = utf8_seq(u + i, n - i, &partial, &sub);
        if (k > 0) {
            i += (size_t)k;
            continue;
        }
        strbuf_put(b, s + run, i - run);
        strbuf_put(b, "\xEF\xBF\xBD", 3);
        i += (size_t)sub;
        run = i;
    }
    strbuf_put(b, s + run, n - run);
}

// GPT-2's bytes_to_unicode(): printable Latin-1 bytes map to themselves, the other 68
// bytes to U+0100.. in byte order, so every byte is a visible character.
static void byte_unicode_table(uint32_t cp[256]) {
    int n = 0;
    for (int b = 0; b < 256; b++) {
        bool keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        cp[b] = keep ? (uint32_t)b : (uint32_t)(256 + n++);
    }
}

/* ---- the tokenizer ------------------------------------------------------------ */

typedef struct {
    uint64_t key; // (left id << 32 | right id), UINT64_MAX = empty
    int32_t rank, id;
} PairSlot;

struct Tokenizer {
    TokenizerKind kind;
    int n_vocab;
    char **tokens;      // (n_vocab) as stored, NUL-terminated
    size_t *token_lens; // (n_vocab)
    char **bytes;       // (n_vocab) bytes form (see top of file)
    size_t *bytes_lens; // (n_vocab)
    float *scores;      // (n_vocab) or NULL
    int32_t *types;     // (n_vocab) TokenType
    int n_merges;
    char **merges; // (n_merges) "left right"
    char *pre;
    int n_pre_regex;
    char **pre_regex;
    pcre2_code **re; // (n_pre_regex) compiled, JIT where available
    bool ignore_merges, add_space_prefix, byte_fallback, add_bos, split_whitespace;
    int prefix_scheme;
    int32_t bos_id, eos_id, unk_id, pad_id;
    char *chat_template;

    uint32_t *map; // open addressing: bytes form -> id + 1 (0 = empty)
    uint64_t map_mask;
    PairSlot *pairs; // rank mode: (left, right) -> rank, merged id
    uint64_t pair_mask;
    int32_t byte_id[256]; // SPM: <0xNN> token; BPE: the token of the byte's mapped char
    // added/special tokens matched in the text, bucketed by first byte
    int32_t *special; // ids sorted by first byte, then by length descending
    int special_start[257];
};

static bool type_is_special(int32_t t) {
    return t == TOKEN_TYPE_CONTROL || t == TOKEN_TYPE_USER_DEFINED || t == TOKEN_TYPE_UNKNOWN;
}

static int32_t map_find(const Tokenizer *t, const char *s, size_t n) {
    if (!t->map) return -1;
    uint64_t i = hash_bytes(s, n) & t->map_mask;
    for (;;) {
        uint32_t v = t->map[i];
        if (!v) return -1;
        int32_t id = (int32_t)v - 1;
        if (t->bytes_lens[id] == n && memcmp(t->bytes[id], s, n) == 0) return id;
        i = (i + 1) & t->map_mask;
    }
}

static void map_insert(Tokenizer *t, int32_t id) {
    const char *s = t->bytes[id];
    size_t n = t->bytes_lens[id];
    uint64_t i = hash_bytes(s, n) & t->map_mask;
    for (;;) {
        uint32_t v = t->map[i];
        if (!v) {
            t->map[i] = (uint32_t)id + 1;
            return;
        }
        int32_t o = (int32_t)v - 1;
        if (t->bytes_lens[o] == n && memcmp(t->bytes[o], s, n) == 0) return; // first id wins
        i = (i + 1) & t->map_mask;
    }
}

// splitmix64's finaliser: both ids reach the low bits the table index uses
static uint64_t pair_hash(uint64_t x) {
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static const PairSlot *pair_find(const Tokenizer *t, int32_t l, int32_t r) {
    uint64_t key = ((uint64_t)(uint32_t)l << 32) | (uint32_t)r;
    uint64_t i = pair_hash(key) & t->pair_mask;
    for (;;) {
        const PairSlot *p = &t->pairs[i];
        if (p->key == UINT64_MAX) return NULL;
        if (p->key == key) return p;
        i = (i + 1) & t->pair_mask;
    }
}

// Inserts a merge; a duplicate pair keeps its first (best) rank.
static void pair_insert(Tokenizer *t, int32_t l, int32_t r, int32_t rank, int32_t id) {
    uint64_t key = ((uint64_t)(uint32_t)l << 32) | (uint32_t)r;
    uint64_t i = pair_hash(key) & t->pair_mask;
    for (;;) {
        PairSlot *p = &t->pairs[i];
        if (p->key == key) return;
        if (p->key == UINT64_MAX) {
            p->key = key;
            p->rank = rank;
            p->id = id;
            return;
        }
        i = (i + 1) & t->pair_mask;
    }
}

static uint64_t pow2_at_least(uint64_t n) {
    uint64_t c = 16;
    while (c < n)
        c *= 2;
    return c;
}

/* ---- pre-tokenizer regexes ---------------------------------------------------- */

// GPT-2 (HF ByteLevel use_regex=true).
static const char RE_GPT2[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
// Llama 3 (tokenizer.json Split pattern; llama.cpp LLAMA_VOCAB_PRE_TYPE_LLAMA3).
static const char RE_LLAMA3[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
// Qwen2 (llama.cpp LLAMA_VOCAB_PRE_TYPE_QWEN2): Llama 3 with single digits.
static const char RE_QWEN2[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char RE_DIGIT[] = "\\p{N}";

// GGUF tokenizer.ggml.pre names -> split steps, after llama.cpp's llama-vocab.cpp.
static int pre_steps_for_name(const char *name, const char *steps[2]) {
    static const char *const llama3[] = {"llama3",  "llama-v3", "llama-bpe", "falcon3",
                                         "pixtral", "dbrx",     "smaug-bpe"};
    static const char *const digits_gpt2[] = {"smollm",    "starcoder", "refact",    "command-r",
                                              "codeshell", "exaone",    "minerva-7b"};
    static const char *const gpt2[] = {"gpt2",    "gpt-2",   "default",    "phi-2",
                                       "jina-es", "jina-de", "jina-v2-es", "jina-v2-de",
                                       "mpt",     "olmo",    "jais",       "trillion"};
    static const char *const qwen2[] = {"qwen2", "deepseek-r1-qwen", "megrez"};
    if (!name || !*name) return steps[0] = RE_GPT2, 1;
    for (size_t i = 0; i < ARRAY_LEN(llama3); i++)
        if (strcmp(name, llama3[i]) == 0) return steps[0] = RE_LLAMA3, 1;
    for (size_t i = 0; i < ARRAY_LEN(digits_gpt2); i++)
        if (strcmp(name, digits_gpt2[i]) == 0) return steps[0] = RE_DIGIT, steps[1] = RE_GPT2, 2;
    for (size_t i = 0; i < ARRAY_LEN(gpt2); i++)
        if (strcmp(name, gpt2[i]) == 0) return steps[0] = RE_GPT2, 1;
    for (size_t i = 0; i < ARRAY_LEN(qwen2); i++)
        if (strcmp(name, qwen2[i]) == 0) return steps[0] = RE_QWEN2, 1;
    return 0;
}

const char *tokenizer_pre_name(const TokenizerSpec *spec) {
    if (spec->kind != TOKENIZER_BPE) return "default";
    const char *steps[2];
    if (spec->n_pre_regex == 0) {
        if (!spec->pre) return "gpt2";
        return pre_steps_for_name(spec->pre, steps) ? spec->pre : NULL;
    }
    static const char *const names[] = {"smollm", "llama3", "qwen2", "gpt2"};
    for (size_t i = 0; i < ARRAY_LEN(names); i++) {
        int n = pre_steps_for_name(names[i], steps);
        bool same = n == spec->n_pre_regex;
        for (int j = 0; same && j < n; j++)
            same = strcmp(steps[j], spec->pre_regex[j]) == 0;
        if (same) return names[i];
    }
    return NULL;
}

static Status compile_regex(pcre2_code **out, const char *pattern, const char *what) {
    int err;
    PCRE2_SIZE off;
    uint32_t opts = PCRE2_UTF | PCRE2_UCP;
#ifdef PCRE2_MATCH_INVALID_UTF
    opts |= PCRE2_MATCH_INVALID_UTF; // raw bytes from the caller need not be valid UTF-8
#endif
    pcre2_code *re =
        pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, opts, &err, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return fail(STATUS_ERR_FORMAT, "bad pre-tokenizer regex in '%s' at offset %zu: %s", what,
                    (size_t)off, (const char *)msg);
    }
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); // falls back to the interpreter
    *out = re;
    return STATUS_OK;
}

/* ---- build -------------------------------------------------------------------- */

void tokenizer_free(Tokenizer *t) {
    if (!t) return;
    for (int i = 0; i < t->n_vocab; i++) {
        free(t->tokens[i]);
        free(t->bytes[i]);
    }
    free(t->tokens);
    free(t->token_lens);
    free(t->bytes);
    free(t->bytes_lens);
    free(t->scores);
    free(t->types);
    for (int i = 0; i < t->n_merges; i++)
        free(t->merges[i]);
    free(t->merges);
    free(t->pre);
    for (int i = 0; i < t->n_pre_regex; i++) {
        free(t->pre_regex[i]);
        if (t->re && t->re[i]) pcre2_code_free(t->re[i]);
    }
    free(t->pre_regex);
    free(t->re);
    free(t->chat_template);
    free(t->map);
    free(t->pairs);
    free(t->special);
    free(t);
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

// "<0xNN>" -> NN, else -1.
static int byte_token_value(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int a = hexval(s[3]), b = hexval(s[4]);
    return (a < 0 || b < 0) ? -1 : a * 16 + b;
}

// The bytes a token stands for (heap, *len): see the top of the file.
static char *token_to_bytes(const Tokenizer *t, int32_t id, const int32_t inv[], size_t *len) {
    const char *s = t->tokens[id];
    size_t n = t->token_lens[id];
    char *o = xmalloc(n + 1);
    size_t k = 0;
    int32_t ty = t->types[id];
    if (t->kind == TOKENIZER_SPM) {
        int bv = byte_token_value(s, n);
        if (bv >= 0 && (ty == TOKEN_TYPE_BYTE || t->byte_fallback)) {
            o[0] = (char)bv;
            *len = 1;
            o[1] = 0;
            return o;
        }
        for (size_t i = 0; i < n;) { // "▁" (E2 96 81) -> " "
            if (i + 3 <= n && memcmp(s + i, "\xE2\x96\x81", 3) == 0) {
                o[k++] = ' ';
                i += 3;
            } else {
                o[k++] = s[i++];
            }
        }
    } else {
        bool mapped = !type_is_special(ty);
        const unsigned char *u = (const unsigned char *)s;
        for (size_t i = 0; mapped && i < n;) {
            bool partial;
            int sub;
            int l = utf8_seq(u + i, n - i, &partial, &sub);
            uint32_t c = 0;
            if (l == 1)
                c = u[i];
            else if (l == 2)
                c = ((u[i] & 0x1Fu) << 6) | (u[i + 1] & 0x3Fu);
            else {
                mapped = false; // byte-level chars are all below U+0144
                break;
            }
            if (c >= 324 || inv[c] < 0) {
                mapped = false;
                break;
            }
            o[k++] = (char)inv[c];
            i += (size_t)l;
        }
        if (!mapped) { // added tokens and foreign pieces stand for their own text
            memcpy(o, s, n);
            k = n;
        }
    }
    o[k] = 0;
    *len = k;
    return o;
}

static Status build_pretokenizer(Tokenizer *t, const TokenizerSpec *spec, const char *what) {
    const char *steps[2];
    int n = 0;
    const char *const *src = steps;
    if (spec->pre && strcmp(spec->pre, "none") == 0) {
        n = 0; // no pre-tokenizer: each segment is one word
    } else if (spec->n_pre_regex > 0) {
        n = spec->n_pre_regex;
        src = spec->pre_regex;
    } else if (spec->pre && (n = pre_steps_for_name(spec->pre, steps)) == 0) {
        // not a known name: a bare lowercase word is a GGUF pre-tokenizer name we do not
        // know (guessing would tokenize silently wrong); anything else is the regex itself
        if (strspn(spec->pre, "abcdefghijklmnopqrstuvwxyz0123456789-_.") == strlen(spec->pre))
            return fail(STATUS_ERR_UNSUPPORTED, "unknown pre-tokenizer '%s' in '%s'", spec->pre,
                        what);
        steps[0] = spec->pre;
        n = 1;
    } else if (!spec->pre) {
        n = pre_steps_for_name(NULL, steps);
    }
    t->n_pre_regex = n;
    t->pre_regex = xcalloc((size_t)n, sizeof(char *));
    t->re = xcalloc((size_t)n, sizeof(pcre2_code *));
    for (int i = 0; i < n; i++) {
        if (!src[i]) return fail(STATUS_ERR_ARG, "NULL pre-tokenizer regex for '%s'", what);
        t->pre_regex[i] = xstrdup(src[i]);
        Status s = compile_regex(&t->re[i], src[i], what);
        if (s != STATUS_OK) return s;
    }
    return STATUS_OK;
}

// Merges "left right" -> pair map. A token may itself contain spaces (SPM "▁" is stored
// as such, but a vocabulary could hold " "), so try each space as the separator.
static Status build_merges(Tokenizer *t, const TokenizerSpec *spec, const char *what) {
    t->n_merges = spec->n_merges;
    t->merges = xcalloc((size_t)MAX(spec->n_merges, 1), sizeof(char *));
    t->pair_mask = pow2_at_least((uint64_t)spec->n_merges * 2 + 16) - 1;
    t->pairs = xmalloc((t->pair_mask + 1) * sizeof(PairSlot));
    for (uint64_t i = 0; i <= t->pair_mask; i++)
        t->pairs[i].key = UINT64_MAX;
    // merges name tokens by their stored strings: index those
    uint64_t mask = pow2_at_least((uint64_t)t->n_vocab * 2) - 1;
    int32_t *idx = xmalloc((mask + 1) * sizeof(int32_t));
    for (uint64_t i = 0; i <= mask; i++)
        idx[i] = -1;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        uint64_t h = hash_bytes(t->tokens[id], t->token_lens[id]) & mask;
        while (idx[h] >= 0) {
            int32_t o = idx[h];
            if (t->token_lens[o] == t->token_lens[id] &&
                memcmp(t->tokens[o], t->tokens[id], t->token_lens[id]) == 0)
                break;
            h = (h + 1) & mask;
        }
        if (idx[h] < 0) idx[h] = id;
    }
#define FIND_STR(s_, n_, out_)                                                                     \
    do {                                                                                           \
        uint64_t h_ = hash_bytes((s_), (n_)) & mask;                                               \
        (out_) = -1;                                                                               \
        while (idx[h_] >= 0) {                                                                     \
            int32_t o_ = idx[h_];                                                                  \
            if (t->token_lens[o_] == (n_) && memcmp(t->tokens[o_], (s_), (n_)) == 0) {             \
                (out_) = o_;                                                                       \
                break;                                                                             \
            }                                                                                      \
            h_ = (h_ + 1) & mask;                                                                  \
        }                                                                                          \
    } while (0)
    Status st = STATUS_OK;
    StrBuf joined = {0};
    for (int r = 0; r < spec->n_merges; r++) {
        const char *m = spec->merges[r];
        if (!m) {
            st = fail(STATUS_ERR_FORMAT, "merge %d is missing in '%s'", r, what);
            break;
        }
        t->merges[r] = xstrdup(m);
        size_t n = strlen(m);
        bool ok = false;
        for (size_t sp = 0; sp < n && !ok; sp++) {
            if (m[sp] != ' ') continue;
            int32_t l, rr, id;
            FIND_STR(m, sp, l);
            if (l < 0) continue;
            FIND_STR(m + sp + 1, n - sp - 1, rr);
            if (rr < 0) continue;
            joined.n = 0;
            strbuf_put(&joined, m, sp);
            strbuf_put(&joined, m + sp + 1, n - sp - 1);
            FIND_STR(joined.p, joined.n, id);
            if (id < 0) continue;
            pair_insert(t, l, rr, r, id);
            ok = true;
        }
        if (!ok) {
            st = fail(STATUS_ERR_FORMAT,
                      "merge %d \"%s\" in '%s' names tokens not in the vocabulary", r, m, what);
            break;
        }
    }
#undef FIND_STR
    free(joined.p);
    free(idx);
    return st;
}

static int cmp_special_(const Tokenizer *t, int32_t a, int32_t b) {
    unsigned char fa = (unsigned char)t->bytes[a][0], fb = (unsigned char)t->bytes[b][0];
    if (fa != fb) return fa < fb ? -1 : 1;
    if (t->bytes_lens[a] != t->bytes_lens[b]) return t->bytes_lens[a] > t->bytes_lens[b] ? -1 : 1;
    return a < b ? -1 : (a > b);
}

static void build_special(Tokenizer *t) {
    int n = 0;
    for (int32_t id = 0; id < t->n_vocab; id++)
        if (type_is_special(t->types[id]) && t->bytes_lens[id] > 0) n++;
    t->special = xmalloc((size_t)MAX(n, 1) * sizeof(int32_t));
    n = 0;
    for (int32_t id = 0; id < t->n_vocab; id++)
        if (type_is_special(t->types[id]) && t->bytes_lens[id] > 0) t->special[n++] = id;
    // insertion sort is fine: a few hundred entries at most in real vocabularies
    for (int i = 1; i < n; i++) {
        int32_t x = t->special[i];
        int j = i - 1;
        while (j >= 0 && cmp_special_(t, t->special[j], x) > 0) {
            t->special[j + 1] = t->special[j];
            j--;
        }
        t->special[j + 1] = x;
    }
    int k = 0;
    for (int b = 0; b <= 256; b++) {
        while (k < n && b < 256 && (unsigned char)t->bytes[t->special[k]][0] < b)
            k++;
        t->special_start[b] = b == 256 ? n : k;
    }
}

Status tokenizer_build(Tokenizer **out, const TokenizerSpec *spec, const char *what) {
    *out = NULL;
    if (!what) what = "tokenizer";
    if (!spec || spec->kind < 0 || spec->kind >= TOKENIZER_KIND_COUNT)
        return fail(STATUS_ERR_ARG, "unknown tokenizer kind for '%s'", what);
    if (spec->n_vocab <= 0 || !spec->tokens)
        return fail(STATUS_ERR_FORMAT, "empty vocabulary in '%s'", what);
    if (spec->n_merges < 0 || (spec->n_merges > 0 && !spec->merges))
        return fail(STATUS_ERR_FORMAT, "bad merges list in '%s'", what);
    if (spec->prefix_scheme < 0 || spec->prefix_scheme >= TOKENIZER_PREFIX_COUNT)
        return fail(STATUS_ERR_ARG, "bad prefix scheme %d for '%s'", spec->prefix_scheme, what);
    int32_t sp_ids[4] = {spec->bos_id, spec->eos_id, spec->unk_id, spec->pad_id};
    for (int i = 0; i < 4; i++)
        if (sp_ids[i] < -1 || sp_ids[i] >= spec->n_vocab)
            return fail(STATUS_ERR_FORMAT, "special token id %d out of range [0, %d) in '%s'",
                        sp_ids[i], spec->n_vocab, what);
    if (spec->kind == TOKENIZER_BPE && spec->n_merges == 0 && !spec->scores)
        return fail(STATUS_ERR_FORMAT, "BPE tokenizer '%s' has neither merges nor scores", what);

    Tokenizer *t = xcalloc(1, sizeof *t);
    t->kind = spec->kind;
    t->n_vocab = spec->n_vocab;
    t->tokens = xcalloc((size_t)t->n_vocab, sizeof(char *));
    t->token_lens = xcalloc((size_t)t->n_vocab, sizeof(size_t));
    t->bytes = xcalloc((size_t)t->n_vocab, sizeof(char *));
    t->bytes_lens = xcalloc((size_t)t->n_vocab, sizeof(size_t));
    t->types = xcalloc((size_t)t->n_vocab, sizeof(int32_t));
    t->ignore_merges = spec->ignore_merges;
    t->add_space_prefix = spec->add_space_prefix;
    t->byte_fallback = spec->byte_fallback;
    t->add_bos = spec->add_bos;
    t->split_whitespace = spec->split_whitespace;
    t->prefix_scheme = spec->prefix_scheme;
    t->bos_id = spec->bos_id;
    t->eos_id = spec->eos_id;
    t->unk_id = spec->unk_id;
    t->pad_id = spec->pad_id;
    t->pre = spec->pre ? xstrdup(spec->pre) : NULL;
    t->chat_template = spec->chat_template ? xstrdup(spec->chat_template) : NULL;
    Status st = STATUS_OK;
    for (int i = 0; i < t->n_vocab; i++) {
        const char *s = spec->tokens[i];
        if (!s) {
            st = fail(STATUS_ERR_FORMAT, "token %d is missing in '%s'", i, what);
            goto fail;
        }
        size_t n = spec->token_lens ? spec->token_lens[i] : strlen(s);
        if (n > TOKENIZER_MAX_TOKEN_BYTES) {
            st = fail(STATUS_ERR_UNSUPPORTED, "token %d in '%s' is %zu bytes long (max %d)", i,
                      what, n, TOKENIZER_MAX_TOKEN_BYTES);
            goto fail;
        }
        t->tokens[i] = xmalloc(n + 1);
        memcpy(t->tokens[i], s, n);
        t->tokens[i][n] = 0;
        t->token_lens[i] = n;
        int32_t ty = spec->token_types ? spec->token_types[i] : TOKEN_TYPE_NORMAL;
        if (ty < 0 || ty > TOKEN_TYPE_BYTE) ty = TOKEN_TYPE_NORMAL;
        t->types[i] = ty;
    }
    if (spec->scores) {
        t->scores = xmalloc((size_t)t->n_vocab * sizeof(float));
        memcpy(t->scores, spec->scores, (size_t)t->n_vocab * sizeof(float));
    }
    // ids named as BOS/EOS are control tokens even when the file has no types
    if (!spec->token_types) {
        if (t->bos_id >= 0) t->types[t->bos_id] = TOKEN_TYPE_CONTROL;
        if (t->eos_id >= 0) t->types[t->eos_id] = TOKEN_TYPE_CONTROL;
        if (t->unk_id >= 0) t->types[t->unk_id] = TOKEN_TYPE_UNKNOWN;
    }

    int32_t inv[324];
    uint32_t cp[256];
    byte_unicode_table(cp);
    for (int i = 0; i < 324; i++)
        inv[i] = -1;
    for (int b = 0; b < 256; b++)
        inv[cp[b]] = b;
    for (int32_t id = 0; id < t->n_vocab; id++)
        t->bytes[id] = token_to_bytes(t, id, inv, &t->bytes_lens[id]);

    // bytes-form map of the mergeable vocabulary (special and byte tokens are reached
    // only through their own paths)
    t->map_mask = pow2_at_least((uint64_t)t->n_vocab * 2) - 1;
    t->map = xcalloc(t->map_mask + 1, sizeof(uint32_t));
    for (int32_t id = 0; id < t->n_vocab; id++) {
        int32_t ty = t->types[id];
        if (type_is_special(ty) || t->bytes_lens[id] == 0) continue;
        if (t->kind == TOKENIZER_SPM &&
            (ty == TOKEN_TYPE_BYTE ||
             (t->byte_fallback && byte_token_value(t->tokens[id], t->token_lens[id]) >= 0)))
            continue;
        map_insert(t, id);
    }
    for (int b = 0; b < 256; b++)
        t->byte_id[b] = -1;
    if (t->kind == TOKENIZER_SPM) {
        for (int32_t id = 0; id < t->n_vocab; id++) {
            int bv = byte_token_value(t->tokens[id], t->token_lens[id]);
            if (bv >= 0 && t->byte_id[bv] < 0 &&
                (t->types[id] == TOKEN_TYPE_BYTE || t->byte_fallback))
                t->byte_id[bv] = id;
        }
    } else {
        for (int b = 0; b < 256; b++) {
            char c = (char)b;
            t->byte_id[b] = map_find(t, &c, 1);
        }
    }
    if (spec->n_merges > 0 || t->kind == TOKENIZER_BPE) {
        st = build_merges(t, spec, what);
        if (st != STATUS_OK) goto fail;
    }
    if (t->kind == TOKENIZER_SPM && t->n_merges == 0 && !t->scores) {
        st = fail(STATUS_ERR_FORMAT, "SPM tokenizer '%s' has neither scores nor merges", what);
        goto fail;
    }
    if (t->kind == TOKENIZER_BPE) {
        st = build_pretokenizer(t, spec, what);
        if (st != STATUS_OK) goto fail;
    }
    build_special(t);
    *out = t;
    return STATUS_OK;
fail:
    tokenizer_free(t);
    return st;
}

/* ---- the merge engine --------------------------------------------------------- */

typedef struct {
    float key;   // rank, or -score: smaller is better
    int32_t pos; // left symbol index: ties go to the leftmost pair
    int32_t l_id, r_id, r_pos, new_id;
} Cand;

typedef struct {
    int32_t *id, *prev, *next;
    uint32_t *start, *len;
    bool *mergeable;
    int n, cap;
    Cand *heap;
    int nh, caph;
    bool naive; // use word_merge_ref (tests compare the two)
} Word;

static void word_release(Word *w) {
    free(w->id);
    free(w->prev);
    free(w->next);
    free(w->start);
    free(w->len);
    free(w->mergeable);
    free(w->heap);
}

static void word_add(Word *w, int32_t id, uint32_t start, uint32_t len, bool mergeable) {
    if (w->n == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 64;
        size_t c = (size_t)w->cap;
        w->id = xrealloc(w->id, c * sizeof(int32_t));
        w->prev = xrealloc(w->prev, c * sizeof(int32_t));
        w->next = xrealloc(w->next, c * sizeof(int32_t));
        w->start = xrealloc(w->start, c * sizeof(uint32_t));
        w->len = xrealloc(w->len, c * sizeof(uint32_t));
        w->mergeable = xrealloc(w->mergeable, c * sizeof(bool));
    }
    int i = w->n++;
    w->id[i] = id;
    w->start[i] = start;
    w->len[i] = len;
    w->mergeable[i] = mergeable;
    w->prev[i] = i - 1;
    w->next[i] = -1;
    if (i > 0) w->next[i - 1] = i;
}

static bool cand_less(const Cand *a, const Cand *b) {
    if (a->key != b->key) return a->key < b->key;
    return a->pos < b->pos;
}

static void heap_push(Word *w, Cand c) {
    if (w->nh == w->caph) {
        w->caph = w->caph ? 2 * w->caph : 64;
        w->heap = xrealloc(w->heap, (size_t)w->caph * sizeof(Cand));
    }
    int i = w->nh++;
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!cand_less(&c, &w->heap[p])) break;
        w->heap[i] = w->heap[p];
        i = p;
    }
    w->heap[i] = c;
}

static Cand heap_pop(Word *w) {
    Cand top = w->heap[0];
    Cand last = w->heap[--w->nh];
    int i = 0;
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        const Cand *best = &last;
        if (l < w->nh && cand_less(&w->heap[l], best)) m = l, best = &w->heap[l];
        if (r < w->nh && cand_less(&w->heap[r], best)) m = r;
        if (m == i) break;
        w->heap[i] = w->heap[m];
        i = m;
    }
    if (w->nh > 0) w->heap[i] = last;
    return top;
}

// Pushes the pair (a, next(a)) if it can merge.
static void try_pair(const Tokenizer *t, Word *w, const char *text, int a) {
    int b = w->next[a];
    if (a < 0 || b < 0 || !w->mergeable[a] || !w->mergeable[b]) return;
    Cand c = {0, a, w->id[a], w->id[b], b, -1};
    if (t->n_merges > 0) {
        const PairSlot *p = pair_find(t, w->id[a], w->id[b]);
        if (!p) return;
        c.key = (float)p->rank;
        c.new_id = p->id;
    } else {
        int32_t id = map_find(t, text + w->start[a], w->len[a] + w->len[b]);
        if (id < 0) return;
        c.key = t->scores ? -t->scores[id] : 0.0f;
        c.new_id = id;
    }
    heap_push(w, c);
}

// Runs the merges over w's symbols and appends the resulting ids.
// Naive twin of word_merge (llama2.c's loop): rescan every adjacent pair for the best
// one, merge it, repeat. O(n^2) per word; tokenizer_encode_ref uses it.
static void word_merge_ref(const Tokenizer *t, Word *w, const char *text, IdVec *out) {
    for (;;) {
        int best = -1;
        float best_key = 0;
        int32_t best_id = -1;
        for (int a = 0; w->n > 0 && a >= 0; a = w->next[a]) {
            int b = w->next[a];
            if (b < 0) break;
            if (!w->mergeable[a] || !w->mergeable[b]) continue;
            float key;
            int32_t id;
            if (t->n_merges > 0) {
                const PairSlot *p = pair_find(t, w->id[a], w->id[b]);
                if (!p) continue;
                key = (float)p->rank;
                id = p->id;
            } else {
                id = map_find(t, text + w->start[a], w->len[a] + w->len[b]);
                if (id < 0) continue;
                key = t->scores ? -t->scores[id] : 0.0f;
            }
            if (best < 0 || key < best_key) { // strict: ties keep the leftmost pair
                best = a;
                best_key = key;
                best_id = id;
            }
        }
        if (best < 0) break;
        int b = w->next[best];
        w->id[best] = best_id;
        w->len[best] += w->len[b];
        w->len[b] = 0;
        w->next[best] = w->next[b];
        if (w->next[b] >= 0) w->prev[w->next[b]] = best;
    }
    for (int i = 0; i >= 0 && w->n > 0; i = w->next[i])
        idvec_push(out, w->id[i]);
}

static void word_merge(const Tokenizer *t, Word *w, const char *text, IdVec *out) {
    if (w->naive) {
        word_merge_ref(t, w, text, out);
        return;
    }
    w->nh = 0;
    for (int i = 0; i + 1 < w->n; i++)
        try_pair(t, w, text, i);
    while (w->nh > 0) {
        Cand c = heap_pop(w);
        int a = c.pos, b = c.r_pos;
        // stale when either side changed since the candidate was pushed
        if (w->len[a] == 0 || w->next[a] != b || w->id[a] != c.l_id || w->id[b] != c.r_id) continue;
        w->id[a] = c.new_id;
        w->len[a] += w->len[b];
        w->len[b] = 0;
        w->next[a] = w->next[b];
        if (w->next[b] >= 0) w->prev[w->next[b]] = a;
        if (w->prev[a] >= 0) try_pair(t, w, text, w->prev[a]);
        try_pair(t, w, text, a);
    }
    for (int i = 0; i >= 0 && w->n > 0; i = w->next[i])
        idvec_push(out, w->id[i]);
}

/* ---- SPM ---------------------------------------------------------------------- */

// One SPM word: the text bytes (spaces already as spaces) -> ids.
// One SPM word: the text bytes (spaces already as spaces) -> ids. Byte-fallback and
// <unk> symbols never merge, so they cut the word into runs merged independently: the
// result is the same and a long text does not grow one huge heap.
static void spm_word(const Tokenizer *t, Word *w, const char *s, size_t n, IdVec *out) {
    w->n = 0;
    bool last_unk = false;
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        bool partial;
        int sub;
        int l = utf8_seq(u + i, n - i, &partial, &sub);
        if (l == 0) l = 1; // an invalid byte is a character of its own: it falls back
        int32_t id = map_find(t, s + i, (size_t)l);
        if (id >= 0) {
            word_add(w, id, (uint32_t)i, (uint32_t)l, true);
            last_unk = false;
        } else {
            bool have = t->byte_fallback;
            for (int k = 0; k < l && have; k++)
                have = t->byte_id[u[i + k]] >= 0;
            if (have || t->unk_id >= 0) {
                word_merge(t, w, s, out); // the run so far is complete
                w->n = 0;
            }
            if (have) {
                for (int k = 0; k < l; k++)
                    idvec_push(out, t->byte_id[u[i + k]]);
                last_unk = false;
            } else if (t->unk_id >= 0) {
                // HF fuse_unk / sentencepiece: consecutive unknowns become one <unk>
                if (!last_unk) idvec_push(out, t->unk_id);
                last_unk = true;
            }
        }
        i += (size_t)l;
    }
    word_merge(t, w, s, out);
}

// Encodes one segment of plain text (no special tokens inside).
static void spm_segment(const Tokenizer *t, Word *w, StrBuf *tmp, const char *s, size_t n,
                        bool at_start, IdVec *out) {
    if (n == 0) return;
    tmp->n = 0;
    // input "▁" is the same as a space (HF's replacement character)
    bool starts_space = s[0] == ' ' || (n >= 3 && memcmp(s, "\xE2\x96\x81", 3) == 0);
    bool prefix = false;
    if (t->add_space_prefix) {
        switch (t->prefix_scheme) {
        case TOKENIZER_PREFIX_EVERY: prefix = true; break;
        case TOKENIZER_PREFIX_FIRST: prefix = at_start && !starts_space; break;
        default: prefix = !starts_space; break;
        }
    }
    if (prefix) strbuf_put(tmp, " ", 1);
    for (size_t i = 0; i < n; i++) {
        if (i + 3 <= n && memcmp(s + i, "\xE2\x96\x81", 3) == 0) {
            strbuf_put(tmp, " ", 1);
            i += 2;
        } else {
            strbuf_put(tmp, s + i, 1);
        }
    }
    if (!t->split_whitespace) {
        spm_word(t, w, tmp->p, tmp->n, out);
        return;
    }
    // old HF Metaspace(split=true): every space starts a new word
    size_t a = 0;
    for (size_t i = 1; i <= tmp->n; i++) {
        if (i == tmp->n || tmp->p[i] == ' ') {
            spm_word(t, w, tmp->p + a, i - a, out);
            a = i;
        }
    }
}

/* ---- byte-level BPE ----------------------------------------------------------- */

static void bpe_word(const Tokenizer *t, Word *w, const char *s, size_t n, IdVec *out) {
    if (n == 0) return;
    if (t->ignore_merges) {
        int32_t id = map_find(t, s, n);
        if (id >= 0) {
            idvec_push(out, id);
            return;
        }
    }
    w->n = 0;
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n; i++) {
        int32_t id = t->byte_id[u[i]];
        if (id < 0) id = t->unk_id;
        if (id < 0) continue; // a vocabulary without that byte and no <unk>: HF drops it too
        word_add(w, id, (uint32_t)i, 1, t->byte_id[u[i]] >= 0);
    }
    word_merge(t, w, s, out);
}

typedef struct {
    size_t start, len;
} Span;

typedef struct {
    Span *v;
    int n, cap;
} SpanVec;

static void span_push(SpanVec *a, size_t start, size_t len) {
    if (len == 0) return;
    if (a->n == a->cap) {
        a->cap = a->cap ? 2 * a->cap : 64;
        a->v = xrealloc(a->v, (size_t)a->cap * sizeof(Span));
    }
    a->v[a->n].start = start;
    a->v[a->n].len = len;
    a->n++;
}

// Isolated split of s[start..start+len) by re: the matches and the gaps between them.
// Each piece is matched on its own (lookaheads do not see past it), as HF does.
static void regex_split(const pcre2_code *re, pcre2_match_data *md, const char *s, size_t start,
                        size_t len, SpanVec *out) {
    PCRE2_SPTR subj = (PCRE2_SPTR)(s + start);
    size_t pos = 0, last = 0;
    while (pos < len) {
        int rc = pcre2_match(re, subj, len, pos, 0, md, NULL);
        // a JIT stack overflow on a pathological piece: the interpreter keeps going
        if (rc < 0 && rc != PCRE2_ERROR_NOMATCH)
            rc = pcre2_match(re, subj, len, pos, PCRE2_NO_JIT, md, NULL);
        if (rc < 0) break; // no more matches (or still an error): the rest is one gap
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        if (me <= ms) { // empty match: step over one character
            pos = ms + 1;
            while (pos < len && ((unsigned char)s[start + pos] & 0xC0) == 0x80)
                pos++;
            continue;
        }
        span_push(out, start + last, ms - last);
        span_push(out, start + ms, me - ms);
        last = pos = me;
    }
    span_push(out, start + last, len - last);
}

static void bpe_segment(const Tokenizer *t, Word *w, pcre2_match_data *md, SpanVec *a, SpanVec *b,
                        const char *s, size_t n, IdVec *out) {
    if (n == 0) return;
    a->n = 0;
    span_push(a, 0, n);
    for (int k = 0; k < t->n_pre_regex; k++) {
        b->n = 0;
        for (int i = 0; i < a->n; i++)
            regex_split(t->re[k], md, s, a->v[i].start, a->v[i].len, b);
        SpanVec tmp = *a;
        *a = *b;
        *b = tmp;
    }
    for (int i = 0; i < a->n; i++)
        bpe_word(t, w, s + a->v[i].start, a->v[i].len, out);
}

/* ---- encode ------------------------------------------------------------------- */

// Longest special token matching at s[0..n) (-1 if none).
static int32_t match_special(const Tokenizer *t, const char *s, size_t n, int flags) {
    unsigned char c = (unsigned char)s[0];
    for (int k = t->special_start[c]; k < t->special_start[c + 1]; k++) {
        int32_t id = t->special[k];
        if (!(flags & TOKENIZE_PARSE_SPECIAL) && t->types[id] != TOKEN_TYPE_USER_DEFINED) continue;
        size_t l = t->bytes_lens[id];
        if (l <= n && memcmp(s, t->bytes[id], l) == 0) return id; // sorted longest first
    }
    return -1;
}

static Status encode_impl(const Tokenizer *t, const char *text, size_t len, int flags,
                          int32_t **ids, int *n, bool naive) {
    *ids = NULL;
    *n = 0;
    if (!t || (!text && len > 0)) return fail(STATUS_ERR_ARG, "tokenizer_encode: NULL argument");
    if (len > (size_t)INT32_MAX / 2)
        return fail(STATUS_ERR_ARG, "tokenizer_encode: text of %zu bytes is too long", len);
    IdVec out = {0};
    bool bos = (flags & TOKENIZE_ADD_BOS) || ((flags & TOKENIZE_DEFAULT_BOS) && t->add_bos);
    if (bos && t->bos_id >= 0) idvec_push(&out, t->bos_id);
    Word w = {0};
    w.naive = naive;
    StrBuf tmp = {0};
    SpanVec sa = {0}, sb = {0};
    pcre2_match_data *md = NULL;
    if (t->kind == TOKENIZER_BPE) {
        md = pcre2_match_data_create(4, NULL);
        if (!md) return fail(STATUS_ERR_NOMEM, "out of memory for regex match data");
    }
    // cut the text at special tokens; encode the plain segments between them
    size_t seg = 0;
    for (size_t i = 0; i <= len; i++) {
        int32_t sid = -1;
        if (i < len &&
            t->special_start[(unsigned char)text[i] + 1] > t->special_start[(unsigned char)text[i]])
            sid = match_special(t, text + i, len - i, flags);
        if (sid < 0 && i < len) continue;
        if (t->kind == TOKENIZER_SPM)
            spm_segment(t, &w, &tmp, text + seg, i - seg, seg == 0, &out);
        else
            bpe_segment(t, &w, md, &sa, &sb, text + seg, i - seg, &out);
        if (sid >= 0) {
            idvec_push(&out, sid);
            i += t->bytes_lens[sid] - 1;
            seg = i + 1;
        }
    }
    if (md) pcre2_match_data_free(md);
    word_release(&w);
    free(tmp.p);
    free(sa.v);
    free(sb.v);
    if (!out.v) out.v = xmalloc(sizeof(int32_t));
    *ids = out.v;
    *n = out.n;
    return STATUS_OK;
}

Status tokenizer_encode(const Tokenizer *t, const char *text, size_t len, int flags, int32_t **ids,
                        int *n) {
    return encode_impl(t, text, len, flags, ids, n, false);
}

Status tokenizer_encode_ref(const Tokenizer *t, const char *text, size_t len, int flags,
                            int32_t **ids, int *n) {
    return encode_impl(t, text, len, flags, ids, n, true);
}

/* ---- decode ------------------------------------------------------------------- */

const char *tokenizer_token_bytes(const Tokenizer *t, int32_t id, size_t *len) {
    if (!t || id < 0 || id >= t->n_vocab) {
        if (len) *len = 0;
        return "";
    }
    if (len) *len = t->bytes_lens[id];
    return t->bytes[id];
}

int32_t tokenizer_piece_id(const Tokenizer *t, const char *bytes, size_t len) {
    return map_find(t, bytes, len);
}

const char *tokenizer_token_str(const Tokenizer *t, int32_t id) {
    if (!t || id < 0 || id >= t->n_vocab) return "";
    return t->tokens[id];
}

static bool hidden_special(const Tokenizer *t, int32_t id) {
    int32_t ty = t->types[id];
    return ty == TOKEN_TYPE_CONTROL || ty == TOKEN_TYPE_UNKNOWN || id == t->bos_id ||
           id == t->eos_id;
}

Status tokenizer_decode(const Tokenizer *t, const int32_t *ids, int n, bool keep_special,
                        char **out, size_t *len) {
    *out = NULL;
    if (len) *len = 0;
    if (!t || (n > 0 && !ids) || n < 0)
        return fail(STATUS_ERR_ARG, "tokenizer_decode: bad argument");
    StrBuf raw = {0};
    strbuf_put(&raw, "", 0);
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_vocab) {
            free(raw.p);
            return fail(STATUS_ERR_ARG, "token id %d out of range [0, %d)", ids[i], t->n_vocab);
        }
        if (!keep_special && hidden_special(t, ids[i])) continue;
        strbuf_put(&raw, t->bytes[ids[i]], t->bytes_lens[ids[i]]);
    }
    size_t skip = 0;
    // HF's Llama decoder ends in Strip(" ", 1, 0): one leading space of the whole text
    if (t->kind == TOKENIZER_SPM && t->add_space_prefix && raw.n > 0 && raw.p[0] == ' ') skip = 1;
    StrBuf o = {0};
    strbuf_put(&o, "", 0);
    buf_put_lossy(&o, raw.p + skip, raw.n - skip);
    free(raw.p);
    *out = o.p;
    if (len) *len = o.n;
    return STATUS_OK;
}

void tokenizer_stream_init(TokenizerStream *s, const Tokenizer *t) {
    memset(s, 0, sizeof *s);
    s->tok = t;
    s->first = t && t->kind == TOKENIZER_SPM && t->add_space_prefix;
}

// Moves the complete UTF-8 prefix of pending+src into s->out; keeps an unfinished tail.
static const char *stream_emit(TokenizerStream *s, const char *src, size_t n, bool flush) {
    char tmp[TOKENIZER_MAX_TOKEN_BYTES + 16];
    size_t m = 0;
    memcpy(tmp, s->pending, (size_t)s->n_pending);
    m = (size_t)s->n_pending;
    if (n > TOKENIZER_MAX_TOKEN_BYTES) n = TOKENIZER_MAX_TOKEN_BYTES; // build rejects longer
    memcpy(tmp + m, src, n);
    m += n;
    s->n_pending = 0;
    size_t o = 0, i = 0;
    const unsigned char *u = (const unsigned char *)tmp;
    while (i < m) {
        bool partial;
        int sub;
        int k = utf8_seq(u + i, m - i, &partial, &sub);
        if (k > 0) {
            memcpy(s->out + o, tmp + i, (size_t)k);
            o += (size_t)k;
            i += (size_t)k;
        } else if (partial && !flush) {
            memcpy(s->pending, tmp + i, m - i);
            s->n_pending = (int)(m - i);
            break;
        } else {
            memcpy(s->out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i += (size_t)sub;
        }
    }
    s->out[o] = 0;
    return s->out;
}

const char *tokenizer_stream_push(TokenizerStream *s, int32_t id) {
    const Tokenizer *t = s->tok;
    if (!t || id < 0 || id >= t->n_vocab || hidden_special(t, id)) {
        s->out[0] = 0;
        return s->out;
    }
    const char *b = t->bytes[id];
    size_t n = t->bytes_lens[id];
    if (s->first && n > 0) {
        s->first = false;
        if (b[0] == ' ') b++, n--;
    }
    return stream_emit(s, b, n, false);
}

const char *tokenizer_stream_flush(TokenizerStream *s) { return stream_emit(s, "", 0, true); }

/* ---- accessors ---------------------------------------------------------------- */

int tokenizer_vocab_size(const Tokenizer *t) { return t->n_vocab; }
TokenizerKind tokenizer_kind(const Tokenizer *t) { return t->kind; }
int32_t tokenizer_bos_id(const Tokenizer *t) { return t->bos_id; }
int32_t tokenizer_eos_id(const Tokenizer *t) { return t->eos_id; }
const char *tokenizer_chat_template(const Tokenizer *t) { return t->chat_template; }

bool tokenizer_is_control(const Tokenizer *t, int32_t id) {
    if (!t || id < 0 || id >= t->n_vocab) return false;
    return t->types[id] == TOKEN_TYPE_CONTROL || id == t->bos_id || id == t->eos_id;
}

void tokenizer_get_spec(const Tokenizer *t, TokenizerSpec *spec) {
    memset(spec, 0, sizeof *spec);
    spec->kind = t->kind;
    spec->n_vocab = t->n_vocab;
    spec->tokens = (const char *const *)t->tokens;
    spec->token_lens = t->token_lens;
    spec->scores = t->scores;
    spec->token_types = t->types;
    spec->n_merges = t->n_merges;
    spec->merges = (const char *const *)t->merges;
    spec->pre = t->pre;
    spec->ignore_merges = t->ignore_merges;
    spec->add_space_prefix = t->add_space_prefix;
    spec->byte_fallback = t->byte_fallback;
    spec->bos_id = t->bos_id;
    spec->eos_id = t->eos_id;
    spec->unk_id = t->unk_id;
    spec->pad_id = t->pad_id;
    spec->add_bos = t->add_bos;
    spec->chat_template = t->chat_template;
    spec->prefix_scheme = t->prefix_scheme;
    spec->split_whitespace = t->split_whitespace;
    spec->n_pre_regex = t->n_pre_regex;
    spec->pre_regex = (const char *const *)t->pre_regex;
}

/* ---- llama2.c tokenizer.bin --------------------------------------------------- */

Status tokenizer_load_llama2c(Tokenizer **out, const char *path, int vocab_size) {
    *out = NULL;
    MappedFile mf = {0};
    Status s = mapped_file_open(&mf, path);
    if (s != STATUS_OK) return s;
    const unsigned char *p = mf.data, *end = mf.data + mf.size;
    if (mf.size < 4) {
        mapped_file_close(&mf);
        return fail(STATUS_ERR_FORMAT, "truncated tokenizer '%s': no header", path);
    }
    int32_t max_len;
    memcpy(&max_len, p, 4);
    p += 4;
    if (max_len <= 0 || max_len > TOKENIZER_MAX_TOKEN_BYTES) {
        mapped_file_close(&mf);
        return fail(STATUS_ERR_FORMAT,
                    "bad max_token_length %d in '%s' (not a llama2.c tokenizer?)", max_len, path);
    }
    int cap = vocab_size > 0 ? vocab_size : 1024;
    char **toks = xmalloc((size_t)cap * sizeof(char *));
    size_t *lens = xmalloc((size_t)cap * sizeof(size_t));
    float *scores = xmalloc((size_t)cap * sizeof(float));
    int n = 0;
    s = STATUS_OK;
    while (vocab_size > 0 ? n < vocab_size : p < end) {
        if (end - p < 8) {
            s = fail(STATUS_ERR_FORMAT, "truncated tokenizer '%s': token %d of %d is cut off", path,
                     n, vocab_size);
            break;
        }
        int32_t l;
        memcpy(&scores[n], p, 4);
        memcpy(&l, p + 4, 4);
        p += 8;
        if (l < 0 || l > max_len || end - p < l) {
            s = fail(STATUS_ERR_FORMAT,
                     "truncated or corrupt tokenizer '%s': token %d has length %d", path, n, l);
            break;
        }
        if (!isfinite(scores[n])) {
            s = fail(STATUS_ERR_FORMAT, "token %d in '%s' has a non-finite score", n, path);
            break;
        }
        toks[n] = (char *)p;
        lens[n] = (size_t)l;
        p += l;
        n++;
        if (n == cap && vocab_size <= 0) {
            cap *= 2;
            toks = xrealloc(toks, (size_t)cap * sizeof(char *));
            lens = xrealloc(lens, (size_t)cap * sizeof(size_t));
            scores = xrealloc(scores, (size_t)cap * sizeof(float));
        }
    }
    if (s == STATUS_OK && n < 3)
        s = fail(STATUS_ERR_FORMAT, "tokenizer '%s' has only %d tokens", path, n);
    if (s == STATUS_OK) {
        int32_t *types = xmalloc((size_t)n * sizeof(int32_t));
        for (int i = 0; i < n; i++)
            types[i] =
                byte_token_value(toks[i], lens[i]) >= 0 ? TOKEN_TYPE_BYTE : TOKEN_TYPE_NORMAL;
        types[0] = TOKEN_TYPE_UNKNOWN;
        types[1] = types[2] = TOKEN_TYPE_CONTROL;
        TokenizerSpec spec = {
            .kind = TOKENIZER_SPM,
            .n_vocab = n,
            .tokens = (const char *const *)toks,
            .token_lens = lens,
            .scores = scores,
            .token_types = types,
            .add_space_prefix = true,
            .byte_fallback = true,
            .bos_id = 1,
            .eos_id = 2,
            .unk_id = 0,
            .pad_id = -1,
            .add_bos = true,
            .prefix_scheme = TOKENIZER_PREFIX_EVERY,
        };
        s = tokenizer_build(out, &spec, path);
        free(types);
    }
    free(toks);
    free(lens);
    free(scores);
    mapped_file_close(&mf);
    return s;
}
