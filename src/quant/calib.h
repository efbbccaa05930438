/*
 * calib.h - calibration and held-out token windows for GPTQ and the fidelity report.
 *
 * A data file becomes one token stream: an Alpaca JSONL file (*.jsonl: every record rendered
 * as its Alpaca prompt followed by the output, data_render_prompt + output) or plain text
 * (documents separated by blank lines). Each document is tokenized on its own (BOS when the
 * tokenizer adds one by default) and followed by EOS when the tokenizer has one.
 *
 * The stream is cut into floor(n_tokens / L) disjoint windows of L tokens;
 *   calib_sample: N of them drawn with a seed (the reference samples random windows of a
 *                 corpus, reference.md §1.1; disjoint windows keep the N sequences distinct);
 *   calib_chunks: the first N of them in order (held-out text, llama-perplexity's chunks).
 * Data shorter than asked (fewer than N*L tokens) is an error that gives the numbers.
 *
 *   CalibSet cs;
 *   CalibOptions o = calib_options_default();      // 128 sequences of 2048 tokens, seed 0
 *   o.seq_len = 256;
 *   if (calib_sample(&cs, "train.jsonl", tok, &o) != STATUS_OK) ... status_msg() ...
 *   ... cs.tokens[s * cs.seq_len + t] ...
 *   calib_release(&cs);
 */
#ifndef EF_CALIB_H
#define EF_CALIB_H

#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"
#include "model/tokenizer.h"

typedef struct {
    int n_seqs;    // N sequences (128)
    int seq_len;   // L tokens per sequence (2048, the reference's seqlen)
    uint64_t seed; // window choice (calib_sample only)
} CalibOptions;

CalibOptions calib_options_default(void);

typedef struct {
    int32_t *tokens; // (n_seqs, seq_len)
    int n_seqs, seq_len;
    int64_t n_stream; // tokens in the whole stream the windows came from
} CalibSet;

// Reads `path` into one token stream (caller frees *ids; *n its length). Errors: I/O,
// STATUS_ERR_FORMAT (bad JSONL line, empty data).
Status calib_read_stream(const char *path, const Tokenizer *tok, int32_t **ids, int64_t *n);

// N seeded disjoint windows of L tokens. Errors: as calib_read_stream, STATUS_ERR_ARG
// (N or L < 1), STATUS_ERR_FORMAT when the data holds fewer than N*L tokens.
Status calib_sample(CalibSet *c, const char *path, const Tokenizer *tok, const CalibOptions *o);
// The first N consecutive windows of L tokens (o->seed unused). Errors as calib_sample.
Status calib_chunks(CalibSet *c, const char *path, const Tokenizer *tok, const CalibOptions *o);
// The same from a token stream in memory (`what` names it in errors); sample = seeded choice.
Status calib_from_stream(CalibSet *c, const int32_t *ids, int64_t n, const CalibOptions *o,
                         bool sample, const char *what);
void calib_release(CalibSet *c);

#endif
