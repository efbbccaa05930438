/*
 * encode_pair.h - lm-evaluation-harness's context/continuation tokenization for
 * log-likelihood requests (HFLM / TemplateLM._encode_pair, lm-eval 0.4.9.1; reference.md §9.2).
 *
 *   1. trailing whitespace of the context (Python str.rstrip()) moves to the front of the
 *      continuation;
 *   2. whole = enc(context + continuation), ctx = enc(context);
 *   3. cont = whole[len(ctx):]  (the continuation's tokens come from the JOINT tokenization,
 *      so a merge across the boundary is attributed to the continuation);
 *   an empty context is scored after one prefix token (BOS, else EOS) with
 *   cont = enc(continuation), as TemplateLM.loglikelihood does.
 * enc() adds no special tokens unless add_bos (lm-eval v0.4: add_special_tokens =
 * add_bos_token, False by default for causal LMs). Our add_bos prepends the BOS id to both
 * encodings; for tokenizers whose post-processor prepends BOS (Llama 2/3) that is what
 * lm-eval's add_bos_token=True does.
 *
 *   EvalPair p;
 *   if (eval_encode_pair(&p, tok, "Question: ...\nAnswer:", " Paris", false) != STATUS_OK) ...
 *   score p.cont[0..n_cont) after p.ctx[0..n_ctx)
 *   eval_pair_release(&p);
 */
#ifndef EF_ENCODE_PAIR_H
#define EF_ENCODE_PAIR_H

#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"
#include "model/tokenizer.h"

typedef struct {
    int32_t *ctx; // (n_ctx) context tokens
    int n_ctx;
    int32_t *cont; // (n_cont) continuation tokens
    int n_cont;
} EvalPair;

// Tokenizes one request. Errors: tokenizer failures; STATUS_ERR_FORMAT when the joint
// tokenization is shorter than the context's (no continuation token can be scored).
Status eval_encode_pair(EvalPair *out, const Tokenizer *tok, const char *context,
                        const char *continuation, bool add_bos);
// Frees the arrays; a zeroed EvalPair is a no-op.
void eval_pair_release(EvalPair *p);

#endif
