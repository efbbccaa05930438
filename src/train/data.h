/*
 * data.h - training data for distillation: Alpaca JSONL records, prompt rendering
 * (Alpaca template or the model's chat template), tokenization with a response-only loss
 * mask, a seeded train/validation split and length-grouped batches.
 *
 *   AlpacaSet set;
 *   if (alpaca_read_jsonl(&set, "data.jsonl", true) != STATUS_OK) ...   // skip bad lines
 *   TrainSet ts;
 *   trainset_build(&ts, &set, tok, PROMPT_ALPACA, 512, true);
 *   DataSplit sp;
 *   data_split(&sp, ts.n, 0.1, seed);                                   // 90/10
 *   nb = data_length_grouped_batches(&ts, sp.train, sp.n_train, B, 50, seed, order, starts);
 *   ... batch b is order[starts[b] .. starts[b+1]) ...
 *   data_split_release(&sp); trainset_release(&ts); alpaca_set_release(&set);
 */
#ifndef EF_DATA_H
#define EF_DATA_H

#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"
#include "model/tokenizer.h"

/* ---- JSONL records ---------------------------------------------------------- */

typedef struct {
    char *instruction;
    char *input; // "" when absent or null
    char *output;
    int line; // 1-based line number in the file
} AlpacaRecord;

typedef struct {
    AlpacaRecord *recs;
    int n;
    int n_skipped; // malformed lines skipped (skip_bad mode)
} AlpacaSet;

// Reads Alpaca JSONL ({"instruction", "input" (optional, string or null), "output"}).
// Blank lines are ignored. A malformed line is an error naming "file:line: reason"
// unless skip_bad, which logs a warning and skips it. No usable record is an error.
Status alpaca_read_jsonl(AlpacaSet *set, const char *path, bool skip_bad);
void alpaca_set_release(AlpacaSet *set);

/* ---- prompts and tokens ------------------------------------------------------ */

typedef enum { PROMPT_ALPACA, PROMPT_CHAT, PROMPT_FORMAT_COUNT } PromptFormat;

// Renders the prompt of a record (everything before the response) as a new heap string.
Status data_render_prompt(const AlpacaRecord *r, const Tokenizer *tok, PromptFormat fmt,
                          char **out);

typedef struct {
    int32_t *ids;  // (len) prompt + response + EOS, truncated to max_len
    uint8_t *mask; // (len) 1 where the token is a loss target (response), 0 for the prompt
    int len;
    int n_target; // number of mask == 1
    int record;   // index of the record in the AlpacaSet
} TrainExample;

typedef struct {
    TrainExample *ex;
    int n;
    int n_dropped; // records whose prompt fills the window (nothing to learn)
} TrainSet;

// Tokenizes every record (prompt+output, EOS appended, prompt tokens masked) as Hugging Face's
// tokenizer(text, add_special_tokens=add_special) does: special-token text in it becomes the
// special token, and Alpaca text gets the tokenizer's BOS when add_special and its files ask
// for one (Llama 2 and 3, llama2.c: yes; SmolLM2: no). Chat text is the template's rendering,
// to which nothing is added whatever add_special says (apply_chat_template: the Llama 3
// template writes its own <|begin_of_text|>).
// Errors: STATUS_ERR_ARG (max_len < 2), STATUS_ERR_FORMAT (no trainable example).
Status trainset_build(TrainSet *ts, const AlpacaSet *set, const Tokenizer *tok, PromptFormat fmt,
                      int max_len, bool add_special);
void trainset_release(TrainSet *ts);

/* ---- split and batches -------------------------------------------------------- */

typedef struct {
    int *train, *val; // sorted example indices
    int n_train, n_val;
} DataSplit;

// Seeded split of n examples: round(val_frac * n) to validation (at least 1 when
// val_frac > 0 and n >= 2, at most n - 1).
void data_split(DataSplit *sp, int n, double val_frac, uint64_t seed);
void data_split_release(DataSplit *sp);

// Length-grouped batches: shuffles idx (n) with seed, sorts mega-batches of
// batch * group_mult by length (longest first), cuts them into batches and shuffles the
// batch order. order (n) receives the indices, starts (n_batches + 1) the batch bounds.
// Returns the number of batches.
int data_length_grouped_batches(const TrainSet *ts, const int *idx, int n, int batch,
                                int group_mult, uint64_t seed, int *order, int *starts);

#endif
