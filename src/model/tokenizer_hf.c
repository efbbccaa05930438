/*
 * tokenizer_hf.c - Hugging Face tokenizer files: tokenizer.json (+ tokenizer_config.json,
 * special_tokens_map.json, chat_template.jinja) to a TokenizerSpec, and back.
 *
 * Supported tokenizer.json: model "BPE" only (Unigram/WordPiece give
 * STATUS_ERR_UNSUPPORTED), as in the two families edgeforge runs:
 *   byte-level BPE: pre_tokenizer ByteLevel, or Sequence of Split(Regex|String, Isolated),
 *       Digits and ByteLevel; normalizer null; decoder ByteLevel (SmolLM2, Llama 3);
 *   SPM-style BPE: byte_fallback, normalizer Sequence[Prepend("▁"), Replace(" ", "▁")]
 *       (transformers 4 "legacy") or pre_tokenizer Metaspace(prepend_scheme, split)
 *       (transformers 5, older add_prefix_space=true), decoder Replace/ByteFallback/
 *       Fuse/Strip (Llama 2, TinyLlama).
 * BOS: the post_processor's TemplateProcessing (a SpecialToken before $A), overridden by
 * tokenizer_config.json "add_bos_token" when present (what transformers does).
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "core/fileio.h"
#include "core/json_file.h"
#include "core/log.h"
#include "core/status.h"
#include "model/tokenizer.h"

static const char RE_GPT2_HF[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char SPM_SPACE[] = "\xE2\x96\x81"; // "▁"

typedef struct {
    const char *path; // for messages
    // pre-tokenizer steps (borrowed from the json tree or static)
    const char *steps[16];
    char *owned[16];
    int n_steps;
    bool byte_level;
    bool metaspace;
    int prefix_scheme;
    bool add_prefix;
    bool split_ws;
} HfPre;

static Status pre_add_step(HfPre *h, const char *re, char *owned) {
    if (h->n_steps >= (int)ARRAY_LEN(h->steps)) {
        free(owned);
        return fail(STATUS_ERR_UNSUPPORTED, "too many pre-tokenizer steps in '%s'", h->path);
    }
    h->owned[h->n_steps] = owned;
    h->steps[h->n_steps++] = re;
    return STATUS_OK;
}

// A literal string as a PCRE2 pattern (\Q...\E, with any "\E" inside split out).
static char *regex_quote(const char *s) {
    size_t n = strlen(s);
    char *o = xmalloc(n * 6 + 8);
    size_t k = 0;
    memcpy(o, "\\Q", 2);
    k = 2;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\\' && s[i + 1] == 'E') {
            memcpy(o + k, "\\E\\\\E\\Q", 7);
            k += 7;
            i++;
            continue;
        }
        o[k++] = s[i];
    }
    memcpy(o + k, "\\E", 3);
    return o;
}

static const char *json_str(const json_t *o, const char *key) {
    const json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static bool json_bool(const json_t *o, const char *key, bool dflt) {
    const json_t *v = json_object_get(o, key);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

static Status parse_pre(HfPre *h, const json_t *pt) {
    if (!pt || json_is_null(pt)) return STATUS_OK;
    const char *type = json_str(pt, "type");
    if (!type) return fail(STATUS_ERR_FORMAT, "pre_tokenizer without a type in '%s'", h->path);
    if (strcmp(type, "Sequence") == 0) {
        const json_t *list = json_object_get(pt, "pretokenizers");
        if (!json_is_array(list))
            return fail(STATUS_ERR_FORMAT, "pre_tokenizer Sequence without a list in '%s'",
                        h->path);
        for (size_t i = 0; i < json_array_size(list); i++) {
            Status s = parse_pre(h, json_array_get(list, i));
            if (s != STATUS_OK) return s;
        }
        return STATUS_OK;
    }
    if (strcmp(type, "ByteLevel") == 0) {
        h->byte_level = true;
        if (json_bool(pt, "add_prefix_space", false))
            return fail(STATUS_ERR_UNSUPPORTED,
                        "ByteLevel pre_tokenizer with add_prefix_space in '%s' is not supported",
                        h->path);
        if (json_bool(pt, "use_regex", true)) return pre_add_step(h, RE_GPT2_HF, NULL);
        return STATUS_OK;
    }
    if (strcmp(type, "Split") == 0) {
        const json_t *pat = json_object_get(pt, "pattern");
        const char *behavior = json_str(pt, "behavior");
        if (json_bool(pt, "invert", false) || !behavior || strcmp(behavior, "Isolated") != 0)
            return fail(STATUS_ERR_UNSUPPORTED,
                        "Split pre_tokenizer with behavior '%s'%s in '%s' is not supported",
                        behavior ? behavior : "?",
                        json_bool(pt, "invert", false) ? " (inverted)" : "", h->path);
        const char *re = json_str(pat, "Regex");
        if (re) return pre_add_step(h, re, NULL);
        const char *lit = json_str(pat, "String");
        if (lit) {
            char *q = regex_quote(lit);
            return pre_add_step(h, q, q);
        }
        return fail(STATUS_ERR_FORMAT, "Split pre_tokenizer without a pattern in '%s'", h->path);
    }
    if (strcmp(type, "Digits") == 0)
        return pre_add_step(h, json_bool(pt, "individual_digits", false) ? "\\p{N}" : "\\p{N}+",
                            NULL);
    if (strcmp(type, "Metaspace") == 0) {
        const char *rep = json_str(pt, "replacement");
        if (rep && strcmp(rep, SPM_SPACE) != 0)
            return fail(STATUS_ERR_UNSUPPORTED,
                        "Metaspace replacement '%s' in '%s' is not supported", rep, h->path);
        h->metaspace = true;
        h->split_ws = json_bool(pt, "split", true);
        const char *scheme = json_str(pt, "prepend_scheme");
        if (!scheme) { // tokenizers < 0.14: add_prefix_space
            h->add_prefix = json_bool(pt, "add_prefix_space", true);
            h->prefix_scheme = TOKENIZER_PREFIX_ALWAYS;
        } else if (strcmp(scheme, "first") == 0) {
            h->add_prefix = true;
            h->prefix_scheme = TOKENIZER_PREFIX_FIRST;
        } else if (strcmp(scheme, "always") == 0) {
            h->add_prefix = true;
            h->prefix_scheme = TOKENIZER_PREFIX_ALWAYS;
        } else {
            h->add_prefix = false;
        }
        return STATUS_OK;
    }
    return fail(STATUS_ERR_UNSUPPORTED, "pre_tokenizer type '%s' in '%s' is not supported", type,
                h->path);
}

// SPM normalizers: Prepend("▁") and Replace(" ", "▁"), alone or in a Sequence.
static Status parse_normalizer(HfPre *h, const json_t *nm, bool *prepend, bool *replace) {
    if (!nm || json_is_null(nm)) return STATUS_OK;
    const char *type = json_str(nm, "type");
    if (!type) return fail(STATUS_ERR_FORMAT, "normalizer without a type in '%s'", h->path);
    if (strcmp(type, "Sequence") == 0) {
        const json_t *list = json_object_get(nm, "normalizers");
        for (size_t i = 0; i < json_array_size(list); i++) {
            Status s = parse_normalizer(h, json_array_get(list, i), prepend, replace);
            if (s != STATUS_OK) return s;
        }
        return STATUS_OK;
    }
    if (strcmp(type, "Prepend") == 0) {
        const char *p = json_str(nm, "prepend");
        if (!p || strcmp(p, SPM_SPACE) != 0)
            return fail(STATUS_ERR_UNSUPPORTED, "Prepend normalizer other than \"▁\" in '%s'",
                        h->path);
        *prepend = true;
        return STATUS_OK;
    }
    if (strcmp(type, "Replace") == 0) {
        const char *from = json_str(json_object_get(nm, "pattern"), "String");
        const char *to = json_str(nm, "content");
        if (!from || !to || strcmp(from, " ") != 0 || strcmp(to, SPM_SPACE) != 0)
            return fail(STATUS_ERR_UNSUPPORTED, "Replace normalizer other than ' ' -> '▁' in '%s'",
                        h->path);
        *replace = true;
        return STATUS_OK;
    }
    return fail(STATUS_ERR_UNSUPPORTED, "normalizer type '%s' in '%s' is not supported", type,
                h->path);
}

// tokenizer_config.json writes special tokens as "text" or {"content": "text", ...}.
static const char *special_content(const json_t *v) {
    if (json_is_string(v)) return json_string_value(v);
    if (json_is_object(v)) return json_str(v, "content");
    return NULL;
}

// flags: JSON_DECODE_INT_AS_REAL for the config files, whose model_max_length is 1e30
static json_t *load_json(const char *path, bool required, size_t flags, Status *st) {
    *st = STATUS_OK;
    if (!path_is_file(path)) {
        if (required) *st = fail(STATUS_ERR_IO, "cannot open '%s': no such file", path);
        return NULL;
    }
    json_t *j;
    *st = json_read_object(&j, path, JSON_ALLOW_NUL | flags);
    return j;
}

typedef struct {
    int n;
    char **tok; // (n) borrowed from json or NULL for a gap
    size_t *len;
    int32_t *type;
} HfVocab;

static int32_t vocab_find(const HfVocab *v, const char *s) {
    if (!s) return -1;
    size_t n = strlen(s);
    for (int i = 0; i < v->n; i++) // only used for a handful of special-token names
        if (v->tok[i] && v->len[i] == n && memcmp(v->tok[i], s, n) == 0) return i;
    return -1;
}

// Loads from the file `path` (a directory or tokenizer.json with its companion files),
// or, when buf != NULL, from tokenizer.json text in memory named `path` in messages.
static Status hf_load(Tokenizer **out, const char *path, const char *buf, size_t buf_len) {
    *out = NULL;
    char *dir = NULL, *json_path = NULL;
    if (buf) {
        json_path = xstrdup(path);
    } else if (path_is_dir(path)) {
        dir = xstrdup(path);
        json_path = path_join(path, "tokenizer.json");
    } else {
        json_path = xstrdup(path);
        dir = xstrdup(path);
        char *slash = strrchr(dir, '/');
        if (slash)
            *slash = 0;
        else
            strcpy(dir, ".");
    }
    Status s = STATUS_OK;
    json_t *root = NULL, *cfg = NULL, *stm = NULL;
    char *cfg_path = dir ? path_join(dir, "tokenizer_config.json") : NULL;
    char *stm_path = dir ? path_join(dir, "special_tokens_map.json") : NULL;
    char *jinja_path = dir ? path_join(dir, "chat_template.jinja") : NULL;
    char *jinja = NULL;
    char **merges = NULL;
    int n_merges = 0;
    HfVocab v = {0};
    HfPre h = {0};
    h.path = json_path;

    if (buf) {
        if ((s = json_parse_buf(&root, buf, buf_len, JSON_ALLOW_NUL, json_path)) != STATUS_OK)
            goto out;
        if (!json_is_object(root)) {
            s = fail(STATUS_ERR_FORMAT, "'%s' is not a JSON object", json_path);
            goto out;
        }
    } else {
        root = load_json(json_path, true, 0, &s);
        if (!root) goto out;
        cfg = load_json(cfg_path, false, JSON_DECODE_INT_AS_REAL, &s);
        if (s != STATUS_OK) goto out;
        stm = load_json(stm_path, false, JSON_DECODE_INT_AS_REAL, &s);
        if (s != STATUS_OK) goto out;
    }

    const json_t *model = json_object_get(root, "model");
    if (!json_is_object(model)) {
        s = fail(STATUS_ERR_FORMAT, "no \"model\" object in '%s'", json_path);
        goto out;
    }
    const char *mtype = json_str(model, "type");
    const json_t *vocab = json_object_get(model, "vocab");
    if (!mtype && json_is_object(vocab) && json_object_get(model, "merges")) mtype = "BPE";
    if (!mtype || strcmp(mtype, "BPE") != 0) {
        s = fail(STATUS_ERR_UNSUPPORTED,
                 "unknown or unsupported model type '%s' in '%s' (only BPE)",
                 mtype ? mtype : "(none)", json_path);
        goto out;
    }
    if (!json_is_object(vocab)) {
        s = fail(STATUS_ERR_FORMAT, "model.vocab is not an object in '%s'", json_path);
        goto out;
    }
    // vocabulary size: the largest id in vocab or added_tokens
    const json_t *added = json_object_get(root, "added_tokens");
    int64_t max_id = -1;
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)vocab, key, val) {
        if (!json_is_integer(val) || json_integer_value(val) < 0 ||
            json_integer_value(val) >= (1 << 24)) {
            s = fail(STATUS_ERR_FORMAT, "bad id for token \"%s\" in '%s'", key, json_path);
            goto out;
        }
        max_id = MAX(max_id, json_integer_value(val));
    }
    for (size_t i = 0; i < json_array_size(added); i++) {
        const json_t *a = json_array_get(added, i);
        const json_t *id = json_object_get(a, "id");
        if (!json_is_integer(id) || json_integer_value(id) < 0 ||
            json_integer_value(id) >= (1 << 24) || !json_str(a, "content")) {
            s = fail(STATUS_ERR_FORMAT, "bad added_tokens entry %zu in '%s'", i, json_path);
            goto out;
        }
        max_id = MAX(max_id, json_integer_value(id));
    }
    if (max_id < 0) {
        s = fail(STATUS_ERR_FORMAT, "empty vocabulary in '%s'", json_path);
        goto out;
    }
    // real vocabularies are dense; refuse files whose ids would make us allocate far more
    // than they hold
    size_t n_entries = json_object_size(vocab) + json_array_size(added);
    if ((uint64_t)max_id >= 2 * (uint64_t)n_entries + 1024) {
        s = fail(STATUS_ERR_FORMAT, "token id %lld in '%s' is far beyond the %zu tokens listed",
                 (long long)max_id, json_path, n_entries);
        goto out;
    }
    v.n = (int)max_id + 1;
    v.tok = xcalloc((size_t)v.n, sizeof(char *));
    v.len = xcalloc((size_t)v.n, sizeof(size_t));
    v.type = xcalloc((size_t)v.n, sizeof(int32_t));
    json_object_foreach((json_t *)vocab, key, val) {
        int id = (int)json_integer_value(val);
        v.tok[id] = (char *)key;
        v.len[id] = strlen(key);
        v.type[id] = TOKEN_TYPE_NORMAL;
    }
    for (size_t i = 0; i < json_array_size(added); i++) {
        const json_t *a = json_array_get(added, i);
        int id = (int)json_integer_value(json_object_get(a, "id"));
        const json_t *c = json_object_get(a, "content");
        v.tok[id] = (char *)json_string_value(c);
        v.len[id] = json_string_length(c);
        v.type[id] = json_bool(a, "special", false) ? TOKEN_TYPE_CONTROL : TOKEN_TYPE_USER_DEFINED;
        if (json_bool(a, "lstrip", false) || json_bool(a, "rstrip", false) ||
            json_bool(a, "single_word", false))
            log_warn("added token \"%s\" in '%s': lstrip/rstrip/single_word are ignored", v.tok[id],
                     json_path);
    }
    int n_gaps = 0;
    for (int i = 0; i < v.n; i++)
        if (!v.tok[i]) {
            v.tok[i] = (char *)"";
            v.type[i] = TOKEN_TYPE_UNUSED;
            n_gaps++;
        }
    if (n_gaps) log_warn("'%s': %d ids below %d have no token", json_path, n_gaps, v.n);

    // merges: "a b" strings (older files) or ["a", "b"] pairs (tokenizers >= 0.20)
    const json_t *jm = json_object_get(model, "merges");
    if (jm && !json_is_array(jm)) {
        s = fail(STATUS_ERR_FORMAT, "model.merges is not a list in '%s'", json_path);
        goto out;
    }
    merges = xcalloc(json_array_size(jm) + 1, sizeof(char *));
    for (size_t i = 0; i < json_array_size(jm); i++) {
        const json_t *m = json_array_get(jm, i);
        if (json_is_string(m)) {
            merges[n_merges++] = xstrdup(json_string_value(m));
        } else if (json_is_array(m) && json_array_size(m) == 2 &&
                   json_is_string(json_array_get(m, 0)) && json_is_string(json_array_get(m, 1))) {
            const char *a = json_string_value(json_array_get(m, 0));
            const char *b = json_string_value(json_array_get(m, 1));
            size_t la = strlen(a), lb = strlen(b);
            char *j = xmalloc(la + lb + 2);
            memcpy(j, a, la);
            j[la] = ' ';
            memcpy(j + la + 1, b, lb + 1);
            merges[n_merges++] = j;
        } else {
            s = fail(STATUS_ERR_FORMAT, "merge %zu in '%s' is neither \"a b\" nor [\"a\", \"b\"]",
                     i, json_path);
            goto out;
        }
    }

    s = parse_pre(&h, json_object_get(root, "pre_tokenizer"));
    if (s != STATUS_OK) goto out;
    bool prepend = false, replace = false;
    const char *dec_type = json_str(json_object_get(root, "decoder"), "type");
    bool byte_fallback = json_bool(model, "byte_fallback", false);
    bool is_bpe = h.byte_level || (dec_type && strcmp(dec_type, "ByteLevel") == 0);
    if (!is_bpe) {
        s = parse_normalizer(&h, json_object_get(root, "normalizer"), &prepend, &replace);
        if (s != STATUS_OK) goto out;
        if (h.n_steps > 0) {
            s = fail(STATUS_ERR_UNSUPPORTED,
                     "regex pre-tokenizer without ByteLevel in '%s' is not supported", json_path);
            goto out;
        }
    } else if (!json_is_null(json_object_get(root, "normalizer")) &&
               json_object_get(root, "normalizer")) {
        const char *nt = json_str(json_object_get(root, "normalizer"), "type");
        if (nt && strcmp(nt, "NFC") == 0) {
            // Qwen2-style: NFC is not implemented; text that is already NFC (nearly all
            // text) encodes exactly, other text may differ from HF
            log_warn("'%s': NFC normalizer not applied (exact only for NFC input)", json_path);
        } else {
            s = fail(STATUS_ERR_UNSUPPORTED,
                     "normalizer '%s' with a byte-level BPE in '%s' is not supported",
                     nt ? nt : "?", json_path);
            goto out;
        }
    }

    // special tokens: tokenizer_config.json, then special_tokens_map.json
    const char *names[4] = {"bos_token", "eos_token", "unk_token", "pad_token"};
    int32_t ids[4] = {-1, -1, -1, -1};
    for (int k = 0; k < 4; k++) {
        const char *c = cfg ? special_content(json_object_get(cfg, names[k])) : NULL;
        if (!c && stm) c = special_content(json_object_get(stm, names[k]));
        ids[k] = vocab_find(&v, c);
    }
    if (ids[2] < 0) ids[2] = vocab_find(&v, json_str(model, "unk_token"));
    // BOS from the post-processor: TemplateProcessing "single" starting with a SpecialToken
    bool add_bos = false;
    const json_t *pp = json_object_get(root, "post_processor");
    const json_t *pps[8];
    int n_pp = 0;
    if (json_is_object(pp)) {
        const char *pt = json_str(pp, "type");
        if (pt && strcmp(pt, "Sequence") == 0) {
            const json_t *list = json_object_get(pp, "processors");
            for (size_t i = 0; i < json_array_size(list) && n_pp < 8; i++)
                pps[n_pp++] = json_array_get(list, i);
        } else {
            pps[n_pp++] = pp;
        }
    }
    for (int i = 0; i < n_pp; i++) {
        const char *pt = json_str(pps[i], "type");
        if (!pt || strcmp(pt, "TemplateProcessing") != 0) continue;
        const json_t *single = json_object_get(pps[i], "single");
        size_t ns = json_array_size(single);
        for (size_t k = 0; k < ns; k++) {
            const json_t *sp = json_object_get(json_array_get(single, k), "SpecialToken");
            if (!sp) continue;
            const char *name = json_str(sp, "id");
            const json_t *tab =
                json_object_get(json_object_get(pps[i], "special_tokens"), name ? name : "");
            const json_t *tid = json_array_get(json_object_get(tab, "ids"), 0);
            int32_t id =
                json_is_integer(tid) ? (int32_t)json_integer_value(tid) : vocab_find(&v, name);
            if (k == 0 && id >= 0 && id < v.n) {
                add_bos = true;
                if (ids[0] < 0) ids[0] = id;
            } else {
                log_warn("'%s': post-processor token \"%s\" after the text is not added", json_path,
                         name ? name : "?");
            }
        }
    }
    if (cfg && json_is_boolean(json_object_get(cfg, "add_bos_token")))
        add_bos = json_is_true(json_object_get(cfg, "add_bos_token"));
    if (cfg && json_is_true(json_object_get(cfg, "add_eos_token")))
        log_warn("'%s': add_eos_token is ignored (edgeforge adds EOS itself where needed)",
                 cfg_path);

    // chat template: tokenizer_config.json (string or [{name, template}]) or .jinja file
    const char *tmpl = NULL;
    const json_t *ct = cfg ? json_object_get(cfg, "chat_template") : NULL;
    if (json_is_string(ct)) tmpl = json_string_value(ct);
    for (size_t i = 0; json_is_array(ct) && i < json_array_size(ct); i++) {
        const json_t *e = json_array_get(ct, i);
        const char *nm = json_str(e, "name");
        if (!tmpl || (nm && strcmp(nm, "default") == 0)) tmpl = json_str(e, "template");
    }
    if (!tmpl && jinja_path && path_is_file(jinja_path)) {
        size_t n;
        s = file_read_all(jinja_path, &jinja, &n);
        if (s != STATUS_OK) goto out;
        tmpl = jinja;
    }

    TokenizerSpec spec = {
        .kind = is_bpe ? TOKENIZER_BPE : TOKENIZER_SPM,
        .n_vocab = v.n,
        .tokens = (const char *const *)v.tok,
        .token_lens = v.len,
        .token_types = v.type,
        .n_merges = n_merges,
        .merges = (const char *const *)merges,
        .pre = is_bpe ? (h.n_steps ? "hf" : "none") : NULL,
        .ignore_merges = json_bool(model, "ignore_merges", false),
        .add_space_prefix = is_bpe ? false : (h.metaspace ? h.add_prefix : prepend),
        .byte_fallback = byte_fallback,
        .bos_id = ids[0],
        .eos_id = ids[1],
        .unk_id = ids[2],
        .pad_id = ids[3],
        .add_bos = add_bos,
        .chat_template = tmpl,
        .prefix_scheme = h.metaspace ? h.prefix_scheme : TOKENIZER_PREFIX_EVERY,
        .split_whitespace = h.metaspace && h.split_ws,
        .n_pre_regex = h.n_steps,
        .pre_regex = h.steps,
    };
    if (!is_bpe && byte_fallback)
        for (int i = 0; i < v.n; i++)
            if (v.type[i] == TOKEN_TYPE_NORMAL && v.len[i] == 6 &&
                strncmp(v.tok[i], "<0x", 3) == 0 && v.tok[i][5] == '>')
                v.type[i] = TOKEN_TYPE_BYTE;
    if (!is_bpe && !prepend && !replace && !h.metaspace)
        log_warn("'%s': SPM-style BPE without Prepend/Replace or Metaspace: spaces stay spaces",
                 json_path);
    s = tokenizer_build(out, &spec, json_path);
out:
    for (int i = 0; i < h.n_steps; i++)
        free(h.owned[i]);
    for (int i = 0; i < n_merges; i++)
        free(merges[i]);
    free(merges);
    free(v.tok);
    free(v.len);
    free(v.type);
    free(jinja);
    if (root) json_decref(root);
    if (cfg) json_decref(cfg);
    if (stm) json_decref(stm);
    free(cfg_path);
    free(stm_path);
    free(jinja_path);
    free(json_path);
    free(dir);
    return s;
}

Status tokenizer_load_hf(Tokenizer **out, const char *path) { return hf_load(out, path, NULL, 0); }

Status tokenizer_load_hf_json(Tokenizer **out, const char *json, size_t len, const char *what) {
    return hf_load(out, what ? what : "tokenizer.json", json, len);
}

/* ---- writer ------------------------------------------------------------------- */

// Token string as HF stores it: SPM pieces from llama2.c carry spaces where HF has "▁".
static json_t *hf_token_string(const TokenizerSpec *sp, int id) {
    const char *s = sp->tokens[id];
    size_t n = sp->token_lens ? sp->token_lens[id] : strlen(s);
    if (sp->kind != TOKENIZER_SPM || !memchr(s, ' ', n)) return json_stringn(s, n);
    char *o = xmalloc(3 * n + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') {
            memcpy(o + k, SPM_SPACE, 3);
            k += 3;
        } else {
            o[k++] = s[i];
        }
    }
    json_t *j = json_stringn(o, k);
    free(o);
    return j;
}

static bool is_added(int32_t ty) {
    return ty == TOKEN_TYPE_CONTROL || ty == TOKEN_TYPE_USER_DEFINED || ty == TOKEN_TYPE_UNKNOWN;
}

typedef struct {
    float score;
    int32_t merged, left, right;
} GenMerge;

static int cmp_genmerge(const void *a, const void *b) {
    const GenMerge *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    if (x->merged != y->merged) return x->merged < y->merged ? -1 : 1;
    if (x->left != y->left) return x->left < y->left ? -1 : 1;
    return 0;
}

// Score-only SPM (llama2.c, GGUF llama) -> merges ranked by the merged piece's score,
// as transformers' SentencePieceExtractor does: every split of a piece into two pieces.
static Status spm_merges_from_scores(const Tokenizer *t, const TokenizerSpec *sp, json_t *arr) {
    GenMerge *g = NULL;
    size_t n = 0, cap = 0;
    for (int32_t id = 0; id < sp->n_vocab; id++) {
        if (sp->token_types[id] != TOKEN_TYPE_NORMAL) continue;
        size_t len;
        const char *b = tokenizer_token_bytes(t, id, &len);
        for (size_t k = 1; k < len; k++) {
            if (((unsigned char)b[k] & 0xC0) == 0x80) continue; // split at characters only
            int32_t l = tokenizer_piece_id(t, b, k), r = tokenizer_piece_id(t, b + k, len - k);
            if (l < 0 || r < 0) continue;
            if (n == cap) {
                cap = cap ? 2 * cap : 4096;
                g = xrealloc(g, cap * sizeof *g);
            }
            g[n].score = sp->scores ? sp->scores[id] : 0.0f;
            g[n].merged = id;
            g[n].left = l;
            g[n].right = r;
            n++;
        }
    }
    if (n) qsort(g, n, sizeof *g, cmp_genmerge);
    for (size_t i = 0; i < n; i++) {
        json_t *pair = json_array();
        json_array_append_new(pair, hf_token_string(sp, g[i].left));
        json_array_append_new(pair, hf_token_string(sp, g[i].right));
        json_array_append_new(arr, pair);
    }
    free(g);
    return STATUS_OK;
}

static json_t *special_template(const char *bos, int32_t bos_id) {
    json_t *tp = json_object();
    json_object_set_new(tp, "type", json_string("TemplateProcessing"));
    json_t *single = json_array(), *pair = json_array();
    json_t *st = json_pack("{s:{s:s,s:i}}", "SpecialToken", "id", bos, "type_id", 0);
    json_array_append_new(single, st);
    json_array_append_new(single, json_pack("{s:{s:s,s:i}}", "Sequence", "id", "A", "type_id", 0));
    json_array_append_new(pair, json_deep_copy(st));
    json_array_append_new(pair, json_pack("{s:{s:s,s:i}}", "Sequence", "id", "A", "type_id", 0));
    json_array_append_new(pair,
                          json_pack("{s:{s:s,s:i}}", "SpecialToken", "id", bos, "type_id", 1));
    json_array_append_new(pair, json_pack("{s:{s:s,s:i}}", "Sequence", "id", "B", "type_id", 1));
    json_object_set_new(tp, "single", single);
    json_object_set_new(tp, "pair", pair);
    json_t *sts = json_object();
    json_object_set_new(sts, bos,
                        json_pack("{s:s,s:[i],s:[s]}", "id", bos, "ids", bos_id, "tokens", bos));
    json_object_set_new(tp, "special_tokens", sts);
    return tp;
}

static Status write_json(const char *dir, const char *name, json_t *j) {
    char *path = path_join(dir, name);
    char *txt = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    Status s;
    if (!txt)
        s = fail(STATUS_ERR_FORMAT, "cannot serialise '%s'", path);
    else
        s = file_write_all(path, txt, strlen(txt));
    free(txt);
    free(path);
    return s;
}

Status tokenizer_save_hf(const Tokenizer *t, const char *dir) {
    TokenizerSpec sp;
    tokenizer_get_spec(t, &sp);
    Status s = dir_create(dir);
    if (s != STATUS_OK) return s;
    json_t *root = json_object(), *cfg = NULL, *stm = NULL;
    json_object_set_new(root, "version", json_string("1.0"));
    json_object_set_new(root, "truncation", json_null());
    json_object_set_new(root, "padding", json_null());
    json_t *added = json_array();
    json_t *vocab = json_object();
    for (int id = 0; id < sp.n_vocab; id++) {
        json_t *str = hf_token_string(&sp, id);
        if (!str) {
            s = fail(STATUS_ERR_FORMAT,
                     "token %d is not valid UTF-8: cannot write '%s/tokenizer.json'", id, dir);
            goto out;
        }
        if (is_added(sp.token_types[id])) {
            json_t *a = json_object();
            json_object_set_new(a, "id", json_integer(id));
            json_object_set(a, "content", str);
            json_object_set_new(a, "single_word", json_false());
            json_object_set_new(a, "lstrip", json_false());
            json_object_set_new(a, "rstrip", json_false());
            json_object_set_new(a, "normalized", json_false());
            json_object_set_new(a, "special",
                                json_boolean(sp.token_types[id] != TOKEN_TYPE_USER_DEFINED));
            json_array_append_new(added, a);
        }
        if (json_object_get(vocab, json_string_value(str))) {
            json_decref(str);
            s = fail(STATUS_ERR_UNSUPPORTED,
                     "token %d \"%s\" is a duplicate: cannot write '%s/tokenizer.json'", id,
                     sp.tokens[id], dir);
            goto out;
        }
        json_object_set_new(vocab, json_string_value(str), json_integer(id));
        json_decref(str);
    }
    json_object_set_new(root, "added_tokens", added);
    bool spm = sp.kind == TOKENIZER_SPM;
    if (spm && sp.add_space_prefix && sp.prefix_scheme == TOKENIZER_PREFIX_EVERY &&
        !sp.split_whitespace) {
        json_object_set_new(root, "normalizer",
                            json_pack("{s:s,s:[{s:s,s:s},{s:s,s:{s:s},s:s}]}", "type", "Sequence",
                                      "normalizers", "type", "Prepend", "prepend", SPM_SPACE,
                                      "type", "Replace", "pattern", "String", " ", "content",
                                      SPM_SPACE));
        json_object_set_new(root, "pre_tokenizer", json_null());
    } else if (spm) {
        const char *scheme = !sp.add_space_prefix                         ? "never"
                             : sp.prefix_scheme == TOKENIZER_PREFIX_FIRST ? "first"
                                                                          : "always";
        if (sp.add_space_prefix && sp.prefix_scheme == TOKENIZER_PREFIX_EVERY) {
            s = fail(STATUS_ERR_UNSUPPORTED,
                     "SPM prefix on every segment with whitespace split "
                     "has no tokenizer.json form ('%s')",
                     dir);
            goto out;
        }
        json_object_set_new(root, "normalizer", json_null());
        json_object_set_new(root, "pre_tokenizer",
                            json_pack("{s:s,s:s,s:s,s:b}", "type", "Metaspace", "replacement",
                                      SPM_SPACE, "prepend_scheme", scheme, "split",
                                      sp.split_whitespace));
    } else {
        json_object_set_new(root, "normalizer", json_null());
        json_t *steps = json_array();
        for (int i = 0; i < sp.n_pre_regex; i++)
            json_array_append_new(steps, json_pack("{s:s,s:{s:s},s:s,s:b}", "type", "Split",
                                                   "pattern", "Regex", sp.pre_regex[i], "behavior",
                                                   "Isolated", "invert", 0));
        json_array_append_new(steps,
                              json_pack("{s:s,s:b,s:b,s:b}", "type", "ByteLevel",
                                        "add_prefix_space", 0, "trim_offsets", 1, "use_regex", 0));
        json_object_set_new(root, "pre_tokenizer",
                            json_pack("{s:s,s:o}", "type", "Sequence", "pretokenizers", steps));
    }
    const char *bos = sp.bos_id >= 0 ? sp.tokens[sp.bos_id] : NULL;
    if (sp.add_bos && bos)
        json_object_set_new(root, "post_processor", special_template(bos, sp.bos_id));
    else
        json_object_set_new(root, "post_processor", json_null());
    if (spm) {
        json_t *decs = json_array();
        json_array_append_new(decs, json_pack("{s:s,s:{s:s},s:s}", "type", "Replace", "pattern",
                                              "String", SPM_SPACE, "content", " "));
        json_array_append_new(decs, json_pack("{s:s}", "type", "ByteFallback"));
        json_array_append_new(decs, json_pack("{s:s}", "type", "Fuse"));
        if (sp.add_space_prefix)
            json_array_append_new(decs, json_pack("{s:s,s:s,s:i,s:i}", "type", "Strip", "content",
                                                  " ", "start", 1, "stop", 0));
        json_object_set_new(root, "decoder",
                            json_pack("{s:s,s:o}", "type", "Sequence", "decoders", decs));
    } else {
        json_object_set_new(root, "decoder",
                            json_pack("{s:s,s:b,s:b,s:b}", "type", "ByteLevel", "add_prefix_space",
                                      1, "trim_offsets", 1, "use_regex", 1));
    }
    json_t *model = json_object();
    json_object_set_new(model, "type", json_string("BPE"));
    json_object_set_new(model, "dropout", json_null());
    json_object_set_new(model, "unk_token",
                        sp.unk_id >= 0 ? hf_token_string(&sp, sp.unk_id) : json_null());
    json_object_set_new(model, "continuing_subword_prefix", json_null());
    json_object_set_new(model, "end_of_word_suffix", json_null());
    json_object_set_new(model, "fuse_unk", json_boolean(spm));
    json_object_set_new(model, "byte_fallback", json_boolean(sp.byte_fallback));
    json_object_set_new(model, "ignore_merges", json_boolean(sp.ignore_merges));
    json_object_set_new(model, "vocab", vocab);
    vocab = NULL;
    json_t *merges = json_array();
    if (sp.n_merges > 0) {
        for (int i = 0; i < sp.n_merges; i++) {
            // "left right": the engine split it once at build; find the split again
            const char *m = sp.merges[i];
            const char *space = strchr(m, ' ');
            json_t *pair = json_array();
            json_array_append_new(pair, json_stringn(m, (size_t)(space - m)));
            json_array_append_new(pair, json_string(space + 1));
            json_array_append_new(merges, pair);
        }
    } else {
        spm_merges_from_scores(t, &sp, merges);
    }
    json_object_set_new(model, "merges", merges);
    json_object_set_new(root, "model", model);
    s = write_json(dir, "tokenizer.json", root);
    if (s != STATUS_OK) goto out;

    cfg = json_object();
    stm = json_object();
    json_object_set_new(cfg, "add_bos_token", json_boolean(sp.add_bos));
    json_object_set_new(cfg, "add_eos_token", json_false());
    const char *names[4] = {"bos_token", "eos_token", "unk_token", "pad_token"};
    int32_t ids[4] = {sp.bos_id, sp.eos_id, sp.unk_id, sp.pad_id};
    for (int k = 0; k < 4; k++) {
        if (ids[k] < 0) continue;
        json_object_set_new(cfg, names[k], hf_token_string(&sp, ids[k]));
        json_object_set_new(stm, names[k], hf_token_string(&sp, ids[k]));
    }
    if (sp.chat_template) json_object_set_new(cfg, "chat_template", json_string(sp.chat_template));
    json_object_set_new(cfg, "clean_up_tokenization_spaces", json_false());
    json_object_set_new(cfg, "model_max_length", json_integer(1000000));
    json_object_set_new(cfg, "tokenizer_class", json_string("PreTrainedTokenizerFast"));
    s = write_json(dir, "tokenizer_config.json", cfg);
    if (s == STATUS_OK) s = write_json(dir, "special_tokens_map.json", stm);
out:
    if (vocab) json_decref(vocab);
    json_decref(root);
    if (cfg) json_decref(cfg);
    if (stm) json_decref(stm);
    return s;
}
