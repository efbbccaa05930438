/*
 * encode_pair.c - lm-eval's context/continuation split (see encode_pair.h).
 */
#include "eval/encode_pair.h"

#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "eval/tasks.h"

void eval_pair_release(EvalPair *p) {
    free(p->ctx);
    free(p->cont);
    memset(p, 0, sizeof(*p));
}

Status eval_encode_pair(EvalPair *out, const Tokenizer *tok, const char *context,
                        const char *continuation, bool add_bos) {
    memset(out, 0, sizeof(*out));
    int flags = add_bos ? TOKENIZE_ADD_BOS : 0;
    size_t n_ctx_bytes = strlen(context), n_cont_bytes = strlen(continuation);
    Status s;
    if (n_ctx_bytes == 0) {
        // TemplateLM.loglikelihood: context "" -> [prefix_token_id], enc(continuation)
        int32_t prefix = tokenizer_bos_id(tok);
        if (prefix < 0) prefix = tokenizer_eos_id(tok);
        if (prefix < 0)
            return fail(STATUS_ERR_UNSUPPORTED, "empty context needs a BOS or EOS token");
        s = tokenizer_encode(tok, continuation, n_cont_bytes, flags, &out->cont, &out->n_cont);
        if (s != STATUS_OK) return s;
        out->ctx = xmalloc(sizeof(int32_t));
        out->ctx[0] = prefix;
        out->n_ctx = 1;
        return STATUS_OK;
    }
    // 1. n_spaces = len(context) - len(context.rstrip()): move them to the continuation
    size_t keep = py_rstrip_len(context, n_ctx_bytes);
    // 2. whole = enc(context + continuation) (the same bytes whatever the split), ctx =
    // enc(context)
    char *whole = xmalloc(n_ctx_bytes + n_cont_bytes + 1);
    memcpy(whole, context, n_ctx_bytes);
    memcpy(whole + n_ctx_bytes, continuation, n_cont_bytes + 1);
    int32_t *w = NULL;
    int n_w = 0;
    s = tokenizer_encode(tok, whole, n_ctx_bytes + n_cont_bytes, flags, &w, &n_w);
    free(whole);
    if (s != STATUS_OK) return s;
    s = tokenizer_encode(tok, context, keep, flags, &out->ctx, &out->n_ctx);
    if (s != STATUS_OK) {
        free(w);
        return s;
    }
    // 3. cont = whole[len(ctx):]
    if (n_w < out->n_ctx) {
        free(w);
        eval_pair_release(out);
        return fail(STATUS_ERR_FORMAT,
                    "request tokenizes to %d tokens, fewer than its context's %d", n_w, out->n_ctx);
    }
    out->n_cont = n_w - out->n_ctx;
    out->cont = xmalloc((size_t)(out->n_cont > 0 ? out->n_cont : 1) * sizeof(int32_t));
    memcpy(out->cont, w + out->n_ctx, (size_t)out->n_cont * sizeof(int32_t));
    free(w);
    return STATUS_OK;
}
