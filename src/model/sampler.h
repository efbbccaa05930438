/*
 * sampler.h - next-token choice from logits: greedy, temperature, top-k, top-p (nucleus),
 * with an explicit seeded Rng; plus the stop rules of a generation loop (stop token ids,
 * stop strings, a token budget).
 *
 * Order of the filters is Hugging Face's: logits / temperature -> top-k -> softmax ->
 * top-p -> draw. temperature 0 (or top_k 1) is greedy: the first index of the maximum.
 * On a tie at the k-th largest logit top-k keeps exactly k tokens, lower ids first
 * (transformers' TopKLogitsWarper keeps every tied token). tests/test_sampler.c checks the
 * distribution against transformers' warpers (tools/gen_sampler_fixtures.py).
 * All buffers are allocated in sampler_init; sampler_sample allocates nothing.
 *
 *   SamplerParams p = sampler_params_default();       // greedy
 *   p.temperature = 0.8f; p.top_p = 0.95f; p.seed = 42;
 *   if (sampler_params_check(&p) != STATUS_OK) ...     // "top_p 1.5 is outside (0, 1]"
 *   Sampler s;
 *   sampler_init(&s, V, &p);
 *   int32_t next = sampler_sample(&s, logits);          // logits (V)
 *   sampler_release(&s);
 */
#ifndef EF_SAMPLER_H
#define EF_SAMPLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/rng.h"
#include "core/status.h"

typedef struct {
    float temperature; // >= 0; 0 = greedy
    int top_k;         // >= 0; 0 = no limit
    float top_p;       // in (0, 1]; 1 = no limit
    uint64_t seed;     // Rng seed
} SamplerParams;

SamplerParams sampler_params_default(void);
// STATUS_ERR_ARG naming the parameter when one is out of range or not finite.
Status sampler_params_check(const SamplerParams *p);

typedef struct {
    SamplerParams p;
    int V;
    Rng rng;
    float *prob;  // (V) candidate probabilities
    int32_t *idx; // (V) candidate ids
} Sampler;

Status sampler_init(Sampler *s, int V, const SamplerParams *p);
void sampler_release(Sampler *s);
// Picks the next token from logits (V). Does not modify logits.
int32_t sampler_sample(Sampler *s, const float *logits);
// The distribution sampler_sample draws from: n candidate ids (id) with their renormalised
// probabilities (prob), V entries each; returns n. Greedy: the argmax with probability 1.
// Does not draw (the Rng is untouched).
int sampler_distribution(Sampler *s, const float *logits, float *prob, int32_t *id);
// The index of the largest logit (first one on ties).
int32_t sampler_argmax(const float *logits, int V);

/* ---- stop rules --------------------------------------------------------------------- */

typedef struct {
    const int32_t *stop_ids; // token ids that end generation (not printed)
    int n_stop_ids;
    const char *const *stop_strs; // text that ends generation (cut before it)
    int n_stop_strs;
    int max_tokens; // token budget (> 0)
} StopRules;

// True when `id` is one of the stop ids.
bool stop_is_token(const StopRules *r, int32_t id);
// Looks for the earliest stop string in text[0, len); returns true and its offset in *at.
bool stop_find_string(const StopRules *r, const char *text, size_t len, size_t *at);
// Longest stop string (bytes a streaming printer must hold back).
size_t stop_max_len(const StopRules *r);

#endif
