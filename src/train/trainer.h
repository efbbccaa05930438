/*
 * trainer.h - the distillation training loop: LoRA on a student, KD from a teacher run in
 * the same process (or plain CE without one), AdamW or Muon, warm-up + decay, gradient
 * clipping and accumulation, periodic validation CE, checkpoints and bit-identical resume.
 *
 * Vocabularies: student and teacher must share the tokenizer. With equal sizes and both
 * tokenizers present, every token string is compared. With different sizes (padding rows,
 * e.g. 151936 vs 152064) the KL runs over the shared real vocabulary: shared_vocab, or
 * the tokenizers' common size; anything else stops with an error naming both sizes.
 *
 * With a teacher_cache instead of a teacher the KL term is the sparse top-k KL
 * (kd_sparse_loss_*).
 *
 * One optimizer step = grad_accum micro-batches of `batch` sequences padded to seq_len.
 * Each micro-batch loss is the token mean over its response tokens (train_ops.h); the
 * accumulated gradient is the mean of the micro-batch gradients. Data order: each epoch
 * uses data_length_grouped_batches with seed + epoch, so the position in the data follows
 * from the step number alone.
 *
 * Files under out_dir:
 *   train_log.jsonl       one JSON object per step {"step","loss","kl","ce","lr",
 *                         "grad_norm","tokens","tok_per_s"} and per evaluation
 *                         {"step","val_ce","val_tokens"}
 *   checkpoint/           adapter_config.json + adapter_model.safetensors (PEFT) and
 *                         trainer_state.safetensors (AdamW/Muon moments, step counters);
 *                         replaced atomically (written to checkpoint.tmp, then renamed)
 *   adapter/              the final adapter (PEFT)
 *
 *   TrainerOptions o = trainer_options_defaults();
 *   o.out_dir = "runs/a"; o.optim = optim_defaults(OPTIM_MUON);
 *   TrainerResult r;
 *   Status s = trainer_run(&student, &teacher, &ts, &split, &o, NULL, NULL, &r);
 */
#ifndef EF_TRAINER_H
#define EF_TRAINER_H

#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"
#include "model/llama.h"
#include "train/data.h"
#include "train/llama_train.h"
#include "train/lora.h"
#include "train/optim.h"
#include "train/schedule.h"
#include "train/teacher_cache.h"
#include "train/train_ops.h"

typedef struct {
    LoraConfig lora;
    OptimOptions optim;
    KdLossOptions kd; // temperature, alpha (alpha is ignored without a teacher: CE)
    ScheduleKind schedule;
    int64_t warmup_steps;
    float min_lr_ratio;
    int batch;      // sequences per micro-batch (B)
    int seq_len;    // T
    int grad_accum; // micro-batches per optimizer step
    int epochs;
    int64_t max_steps;      // > 0: stop after this many optimizer steps (overrides epochs)
    int64_t stop_after;     // > 0: return after this step as if killed (tests of resume)
    double max_grad_norm;   // <= 0: no clipping
    int64_t eval_every;     // validation CE every N steps (0: only at the end)
    int64_t ckpt_every;     // checkpoint every N steps (0: never)
    uint64_t seed;          // LoRA init and data order
    int group_mult;         // length grouping: mega-batch = batch * group_mult
    bool resume;            // continue from out_dir/checkpoint when present
    const char *out_dir;    // NULL: nothing written (tests)
    const char *base_model; // recorded in adapter_config.json
    const TeacherCache *teacher_cache; // sparse top-k KD from a cache (then teacher = NULL)
    int shared_vocab;         // > 0: KL over the first shared_vocab logits (padded vocabularies)
    LlamaRecompute recompute; // what the student's backward recomputes (llama_train.h)
} TrainerOptions;

TrainerOptions trainer_options_defaults(void);

typedef struct {
    int64_t step, total_steps;
    double loss, kl, ce, lr, grad_norm;
    int64_t tokens;   // non-padding tokens of the step
    double tok_per_s; // over the whole run so far
    double val_ce;    // NaN unless this report is an evaluation
} TrainerProgress;

typedef void (*TrainerCallback)(const TrainerProgress *p, void *ctx);

typedef struct {
    int64_t steps; // optimizer steps taken in total (resumed ones included)
    double final_loss, final_val_ce;
    double seconds;
} TrainerResult;

// Trains a LoRA on `student` (teacher may be NULL: then loss = CE) over sp->train and
// evaluates CE on sp->val. The adapter is left in *lora (caller releases). Errors:
// STATUS_ERR_ARG (bad options, vocabulary mismatch with the teacher, empty split),
// STATUS_ERR_NUMERIC (NaN/Inf loss or gradient: the last checkpoint stays intact),
// STATUS_ERR_IO for output files.
Status trainer_run(const Model *student, const Model *teacher, const TrainSet *ts,
                   const DataSplit *sp, const TrainerOptions *o, TrainerCallback cb, void *ctx,
                   LoraModel *lora, TrainerResult *res);

// Checks that student and teacher share the tokenizer (token bytes compared when both
// have one) and sets *kd_vocab, the logit columns the KL runs over. STATUS_ERR_ARG names
// the mismatch.
Status trainer_resolve_vocab(const Model *student, const Model *teacher, const TrainerOptions *o,
                             int *kd_vocab);

// Validation CE (token mean over response tokens, untempered) of the student with lora
// (may be NULL) over examples idx (n), in batches of B x T.
Status trainer_eval_ce(const Model *student, const LoraModel *lora, const TrainSet *ts,
                       const int *idx, int n, int B, int T, double *ce, int64_t *tokens);

// Fills ids/targets (B, T) from nb <= B examples: targets[t] = ids[t+1] where mask[t+1],
// else TRAIN_IGNORE_INDEX; pad id 0 after each sequence. Returns the non-pad tokens.
int64_t trainer_fill_batch(int32_t *ids, int32_t *targets, const TrainSet *ts, const int *idx,
                           int nb, int B, int T);

#endif
