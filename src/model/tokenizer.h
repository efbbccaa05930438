/*
 * tokenizer.h - one interface over the tokenizers of the supported model files.
 *
 * Kinds:
 *   TOKENIZER_SPM   SentencePiece-style BPE with scores and byte fallback
 *                   (llama2.c tokenizer.bin, GGUF "llama", HF tokenizer.json of the
 *                   Llama-2/TinyLlama kind with Metaspace / normalizer handling).
 *   TOKENIZER_BPE   byte-level BPE with regex pre-tokenization through PCRE2
 *                   (HF tokenizer.json BPE + ByteLevel/Split, GGUF "gpt2"):
 *                   GPT-2/SmolLM2 and Llama 3 split patterns, merges by rank,
 *                   added/special tokens, ignore_merges.
 *
 * Every loader fills a TokenizerSpec and calls tokenizer_build(), so the GGUF,
 * Hugging Face and llama2.c readers share one construction path.
 *
 * Exactness (tests/test_tokenizer.c against tools/gen_tokenizer_fixtures.py):
 *   - tokenizer.json: ids equal Hugging Face `tokenizers` Tokenizer.encode(text).ids
 *     (flags TOKENIZE_HF) for SmolLM2, Llama 2 (Metaspace and legacy Prepend forms) and
 *     Llama 3; without TOKENIZE_PARSE_SPECIAL they equal HF with encode_special_tokens.
 *     decode(ids, keep_special=false) equals HF decode(skip_special_tokens=True).
 *   - SPM without merges (llama2.c tokenizer.bin, GGUF "llama"): llama2.c's algorithm,
 *     equal to sentencepiece's own ids for Llama 2; dummy prefix before every text
 *     segment as llama.cpp does.
 *   - BPE with a GGUF `pre` name: llama.cpp's split regexes ("smollm" = digits one by
 *     one, then GPT-2; "llama-bpe"/"llama3" = Llama 3; "gpt2"; "qwen2").
 * Not supported (STATUS_ERR_UNSUPPORTED or a warning): Unigram/WordPiece models,
 * normalizers other than the SPM Prepend/Replace pair (e.g. NFC), ByteLevel
 * add_prefix_space, Split behaviours other than Isolated, added-token lstrip/rstrip/
 * single_word (warned, ignored), post-processor tokens after the text (warned).
 * Encode/decode are thread-safe on a shared Tokenizer (no mutable state).
 *
 *   Tokenizer *tok;
 *   if (tokenizer_load_llama2c(&tok, "tok512.bin", 512) != STATUS_OK) ...
 *   int32_t *ids; int n;
 *   tokenizer_encode(tok, "Once upon a time", 16, TOKENIZE_ADD_BOS, &ids, &n);
 *   tokenizer_free(tok);
 */
#ifndef EF_TOKENIZER_H
#define EF_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

typedef struct Tokenizer Tokenizer;

typedef enum { TOKENIZER_SPM, TOKENIZER_BPE, TOKENIZER_KIND_COUNT } TokenizerKind;

// Token types as GGUF's tokenizer.ggml.token_type stores them.
typedef enum {
    TOKEN_TYPE_UNDEFINED = 0,
    TOKEN_TYPE_NORMAL = 1,
    TOKEN_TYPE_UNKNOWN = 2,
    TOKEN_TYPE_CONTROL = 3,
    TOKEN_TYPE_USER_DEFINED = 4,
    TOKEN_TYPE_UNUSED = 5,
    TOKEN_TYPE_BYTE = 6,
} TokenType;

// Everything needed to build a tokenizer; arrays are borrowed (copied by build).
typedef struct {
    TokenizerKind kind;
    int n_vocab;
    const char *const *tokens;  // (n_vocab) token strings as the file stores them
    const size_t *token_lens;   // (n_vocab) byte lengths, or NULL for NUL-terminated
    const float *scores;        // (n_vocab) SPM merge scores, or NULL
    const int32_t *token_types; // (n_vocab) TokenType, or NULL
    int n_merges;
    const char *const *merges; // (n_merges) "left right", BPE only, in rank order
    const char *pre;           // pre-tokenizer: "llama3", "smollm"/"gpt2", ... or a regex;
                               // "none": no split; NULL: GPT-2 (BPE only)
    bool ignore_merges;        // Llama 3: a pre-token that is in the vocab is not merged
    bool add_space_prefix;     // SPM dummy prefix " " (llama2.c, Llama 2)
    bool byte_fallback;        // SPM <0xNN> fallback
    int32_t bos_id, eos_id, unk_id, pad_id; // -1 when absent
    bool add_bos;                           // BOS under TOKENIZE_DEFAULT_BOS
    const char *chat_template;              // Jinja source from the file, or NULL
    // ---- extensions (zero = the behaviour described above) ----
    int prefix_scheme;            // TokenizerPrefixScheme: where SPM puts the dummy prefix
    bool split_whitespace;        // SPM: split before every space (old HF Metaspace split=true)
    int n_pre_regex;              // BPE: explicit split steps (each an isolated regex split,
    const char *const *pre_regex; //      applied in order); overrides `pre` when > 0
} TokenizerSpec;

// Where the SPM dummy prefix " " goes when add_space_prefix is set. Text is cut into
// segments at special tokens first (TOKENIZE_PARSE_SPECIAL); these say which segments
// get the prefix (Hugging Face semantics, checked against `tokenizers` fixtures).
typedef enum {
    TOKENIZER_PREFIX_EVERY = 0, // every non-empty segment (llama2.c, HF Prepend normalizer)
    TOKENIZER_PREFIX_FIRST,     // only a segment at offset 0 not starting with " "
                                // (HF Metaspace prepend_scheme "first")
    TOKENIZER_PREFIX_ALWAYS,    // every segment not starting with " " (Metaspace "always")
    TOKENIZER_PREFIX_COUNT
} TokenizerPrefixScheme;

// Longest token (bytes) a tokenizer may hold; longer ones are rejected by build
// (keeps TokenizerStream's fixed buffer sufficient).
#define TOKENIZER_MAX_TOKEN_BYTES 512

// Builds a tokenizer; errors (bad merges, ids out of range) name `what`.
Status tokenizer_build(Tokenizer **out, const TokenizerSpec *spec, const char *what);

// llama2.c tokenizer.bin (int32 max_token_length, then per token: f32 score,
// int32 len, bytes). ids 0/1/2 = unk/BOS/EOS.
Status tokenizer_load_llama2c(Tokenizer **out, const char *path, int vocab_size);

// Hugging Face: `path` is a directory holding tokenizer.json (+ tokenizer_config.json,
// special_tokens_map.json) or a tokenizer.json file.
Status tokenizer_load_hf(Tokenizer **out, const char *path);

// The same from tokenizer.json text in memory (no companion files); `what` names it
// in error messages.
Status tokenizer_load_hf_json(Tokenizer **out, const char *json, size_t len, const char *what);

void tokenizer_free(Tokenizer *t);

// Writes tokenizer.json, tokenizer_config.json (bos/eos, chat template) and
// special_tokens_map.json into `dir` so that transformers' AutoTokenizer loads the
// same tokenizer. Atomic per file.
Status tokenizer_save_hf(const Tokenizer *t, const char *dir);

enum {
    TOKENIZE_ADD_BOS = 1 << 0,       // prepend BOS
    TOKENIZE_PARSE_SPECIAL = 1 << 1, // recognise special/added tokens in the text
    TOKENIZE_DEFAULT_BOS = 1 << 2,   // prepend BOS when the file says so (spec add_bos)
};
// Hugging Face `Tokenizer.encode(text).ids` / transformers `tokenizer.encode(text)`:
// added tokens are always split out of the text and the post-processor decides on BOS.
// User-defined (non-special) added tokens are matched even without PARSE_SPECIAL, as in
// HF with encode_special_tokens=True and in llama.cpp with parse_special=false.
#define TOKENIZE_HF (TOKENIZE_PARSE_SPECIAL | TOKENIZE_DEFAULT_BOS)

// Encodes len bytes of text. *ids is a new heap array (caller frees), *n its length.
Status tokenizer_encode(const Tokenizer *t, const char *text, size_t len, int flags, int32_t **ids,
                        int *n);

// The same with the naive O(n^2) merge loop (llama2.c's: rescan every pair for the best
// one) instead of the heap; for tests of tokenizer_encode.
Status tokenizer_encode_ref(const Tokenizer *t, const char *text, size_t len, int flags,
                            int32_t **ids, int *n);

// Decodes ids into a new NUL-terminated heap string (*out; *len bytes without the NUL).
// Control tokens (BOS/EOS) decode to "" unless `keep_special`.
Status tokenizer_decode(const Tokenizer *t, const int32_t *ids, int n, bool keep_special,
                        char **out, size_t *len);

// Raw bytes a single token stands for (byte fallback and byte-level mapping undone;
// SPM's leading-space handling is the caller's business: see TokenizerStream).
const char *tokenizer_token_bytes(const Tokenizer *t, int32_t id, size_t *len);
// The mergeable vocabulary piece that stands for exactly these bytes, or -1 (special,
// byte-fallback and unused tokens are not pieces).
int32_t tokenizer_piece_id(const Tokenizer *t, const char *bytes, size_t len);
// The token string as stored in the file (for info, GGUF/HF writers).
const char *tokenizer_token_str(const Tokenizer *t, int32_t id);

int tokenizer_vocab_size(const Tokenizer *t);
TokenizerKind tokenizer_kind(const Tokenizer *t);
int32_t tokenizer_bos_id(const Tokenizer *t);
int32_t tokenizer_eos_id(const Tokenizer *t);
// Chat template text from the file (NULL when none).
const char *tokenizer_chat_template(const Tokenizer *t);
// The spec as built (for writers): arrays point into the tokenizer.
void tokenizer_get_spec(const Tokenizer *t, TokenizerSpec *spec);
// The GGUF tokenizer.ggml.pre name (llama.cpp's) that splits text as spec's BPE
// pre-tokenizer does: spec->pre when it is a name we know, else the name whose regex steps
// equal spec->pre_regex ("smollm" for SmolLM2's Digits + ByteLevel, "llama3", "qwen2",
// "gpt2"); "default" for SPM (unused there). NULL when no name gives the same split (a
// custom regex), which GGUF cannot carry.
const char *tokenizer_pre_name(const TokenizerSpec *spec);
// True for control tokens (BOS/EOS/special) that text generation stops on or hides.
bool tokenizer_is_control(const Tokenizer *t, int32_t id);

// Streaming decode: feed token ids one by one, get the UTF-8 text that became
// complete (partial multi-byte sequences are held back until finished).
typedef struct {
    const Tokenizer *tok;
    char pending[8];
    int n_pending;
    bool first; // SPM: drop the dummy-prefix space of the first token
    char out[2 * TOKENIZER_MAX_TOKEN_BYTES + 32];
} TokenizerStream;

void tokenizer_stream_init(TokenizerStream *s, const Tokenizer *t);
// Returns the bytes ready to print after `id` (NUL-terminated, valid until next call).
const char *tokenizer_stream_push(TokenizerStream *s, int32_t id);
// Returns whatever is still pending (invalid bytes as U+FFFD).
const char *tokenizer_stream_flush(TokenizerStream *s);

/* ---- prompt templates -------------------------------------------------------- */

typedef struct {
    const char *role; // "system", "user", "assistant"
    const char *content;
} ChatMessage;

typedef enum {
    CHAT_TEMPLATE_AUTO,    // pick from the tokenizer's template (any kind below)
    CHAT_TEMPLATE_CHATML,  // <|im_start|>role\ncontent<|im_end|>\n (SmolLM2, Qwen2)
    CHAT_TEMPLATE_LLAMA3,  // <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>
    CHAT_TEMPLATE_LLAMA31, // Llama 3.1 / 3.2 / 3.3 Instruct: LLAMA3 after a system block
    CHAT_TEMPLATE_LLAMA2,  // [INST] ... [/INST]
    CHAT_TEMPLATE_ZEPHYR,  // <|user|>\ncontent</s> (TinyLlama-Chat, Zephyr)
    CHAT_TEMPLATE_COUNT
} ChatTemplate;

// Renders messages as the model's chat format; add_generation_prompt appends the
// assistant header. *out is a new heap string. Matches transformers' apply_chat_template
// (tests/fixtures/tokenizers/chat_cases.jsonl, chat_llama31_cases.jsonl) for:
//   CHATML  SmolLM2's and Qwen2's templates, contents as given: when `t`'s template prints
//           a default system prompt (a string literal '<|im_start|>system\n...<|im_end|>'
//           after a test of messages[0], as SmolLM2's and Qwen2.5's; decoded as Jinja
//           decodes string literals) and the first message is not "system", it is inserted;
//   LLAMA3  Meta's template: "<|begin_of_text|>" first, contents trimmed (Jinja trim);
//   LLAMA31 Meta's Llama 3.1 / 3.2 / 3.3 Instruct template without tools: a system block
//           "Cutting Knowledge Date: December 2023\nToday Date: D\n\n" + the system message
//           (trimmed, or nothing) always comes first, then as LLAMA3. D is the template's
//           `set date_string = "..."` default ("26 Jul 2024" without a template). 3.2's
//           template takes today's date from strftime_now where the renderer has it
//           (transformers, vLLM); its fallback keeps prompts the same on every day;
//   LLAMA2  Meta's Llama-2-chat template: "<s>[INST] ... [/INST] answer </s>", system in
//           <<SYS>>, roles must alternate user/assistant (else STATUS_ERR_ARG);
//           add_generation_prompt has no effect there;
//   ZEPHYR  Zephyr's template (TinyLlama-1.1B-Chat): "<|role|>\n" + content + EOS per
//           message, then "<|assistant|>"; a newline after each when the template has one
//           after its tags (TinyLlama's does, a one-line copy does not). EOS is t's EOS token
//           ("</s>" without one).
// AUTO picks from t's template (or its vocabulary); t may be NULL for explicit kinds.
// Refused: an empty conversation (STATUS_ERR_ARG, as transformers), roles other than system,
// user and assistant, a template of no family above, a reasoning model's ChatML template
// (thinking modes), an [INST] template without Llama 2's <<SYS>> (Mistral's, whose details
// differ by version), a default system prompt with escapes not decoded here
// (STATUS_ERR_UNSUPPORTED).
Status chat_render(const Tokenizer *t, ChatTemplate tmpl, const ChatMessage *msgs, int n,
                   bool add_generation_prompt, char **out);

// The Alpaca prompt (tatsu-lab/stanford_alpaca train.py PROMPT_DICT): with an input
// section when `input` is non-NULL and non-empty, ending in "### Response:" (no newline,
// as PROMPT_DICT has it). Returns a new heap string.
char *alpaca_render(const char *instruction, const char *input);

#endif
