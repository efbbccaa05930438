/*
 * teacher_cache.h - top-k teacher log-probabilities computed once and stored, so a
 * teacher too big to share the machine with the student runs once (reference.md §7.2).
 *
 * For every example of a TrainSet and every position t whose next token is a response
 * token (the positions the loss uses), the cache holds the teacher's top-K token ids and
 * their log-probabilities log softmax(logits / t_gen) over the full vocabulary. Training
 * uses them with the sparse KL of train_ops.h (DistillKit's SYMMETRIC_UNIFORM).
 *
 * File (safetensors):
 *   "offsets"  I64 (n_examples + 1)  rows of example e are offsets[e] .. offsets[e+1)
 *   "ids"      I32 (rows, K)         top-K ids, most likely first
 *   "logp"     F32 (rows, K)
 *   metadata   format "edgeforge-teacher-cache", version "1", k, t_gen, vocab_size,
 *              n_examples, seq_len, teacher (path)
 * Row r of an example is its r-th position with a target, in position order.
 *
 *   TeacherCache tc;
 *   teacher_cache_build(&tc, &teacher, &ts, 32, 1.0f, 512, 4);
 *   teacher_cache_save(&tc, "cache.safetensors", "teacher-path");
 *   ... teacher_cache_load(&tc, "cache.safetensors") ... teacher_cache_fill(...) ...
 *   teacher_cache_release(&tc);
 */
#ifndef EF_TEACHER_CACHE_H
#define EF_TEACHER_CACHE_H

#include <stdint.h>

#include "core/status.h"
#include "model/llama.h"
#include "train/data.h"
#include "train/train_ops.h"

typedef struct {
    int K;
    float t_gen;
    int vocab_size, seq_len, n_examples;
    int64_t *offsets; // (n_examples + 1)
    int32_t *ids;     // (rows, K)
    float *logp;      // (rows, K)
    int64_t rows;
    uint64_t tokens_hash; // FNV-1a of every example's tokens as the teacher saw them (0: a
                          // cache written before 2026-11-28, which has none)
} TeacherCache;

// Runs the teacher over every example (batches of B, sequences truncated to seq_len, as
// training will see them) and keeps the top-K. Errors: STATUS_ERR_ARG (K out of 1..V),
// STATUS_ERR_NOMEM.
Status teacher_cache_build(TeacherCache *tc, const Model *teacher, const TrainSet *ts, int K,
                           float t_gen, int seq_len, int B);
Status teacher_cache_save(const TeacherCache *tc, const char *path, const char *teacher_name);
// Reads a cache and checks its layout (offsets monotone, sizes consistent).
Status teacher_cache_load(TeacherCache *tc, const char *path);
void teacher_cache_release(TeacherCache *tc);

// Checks that the cache was built for this TrainSet (example count, target rows per
// example for seq_len, the tokens themselves when the cache records them: a tokenizer that
// adds BOS and one that does not give the same rows, shifted) and vocabulary. Errors name
// the first mismatch.
Status teacher_cache_check(const TeacherCache *tc, const TrainSet *ts, int seq_len, int vocab_size);

// Fills ids/logp (B*T, K) for a batch laid out by trainer_fill_batch (examples idx[0..nb));
// rows without a target get id 0 and log-prob 0 (they are ignored by the loss).
void teacher_cache_fill(int32_t *ids, float *logp, const TeacherCache *tc, const TrainSet *ts,
                        const int *idx, int nb, int B, int T);

#endif
