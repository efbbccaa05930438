/*
 * schedule.h - learning-rate schedules (warm-up, then cosine or linear decay) and
 * gradient clipping by global norm, with Hugging Face / PyTorch semantics.
 *
 * The factor at optimizer step s (0-based: the first update uses s = 0, as a
 * transformers LambdaLR scheduler stepped after each optimizer step) is
 *   s < W:      s / max(1, W)
 *   cosine:     0.5 (1 + cos(pi p)),  p = (s - W) / max(1, S - W)   (clamped at 0)
 *   linear:     max(0, (S - s) / max(1, S - W))
 *   constant:   1
 * and lr = peak (m + (1 - m) factor) during the decay, m = min_lr_ratio (0 in HF).
 * Past S the factor stays 0 (transformers' cosine, being periodic, would rise again).
 *
 *   Schedule sc = {.kind = SCHEDULE_COSINE, .warmup_steps = 10, .total_steps = 500};
 *   for (s = 0; s < 500; s++) {
 *       double norm = grad_clip_global(lora.grads, lora.n_params, 1.0);
 *       lora_optim_step(&opt, &lora, schedule_lr(&sc, peak_lr, s));
 *   }
 */
#ifndef EF_SCHEDULE_H
#define EF_SCHEDULE_H

#include <stdint.h>

#include "core/status.h"

// NOTE: add new kinds at the end only.
typedef enum { SCHEDULE_CONSTANT, SCHEDULE_COSINE, SCHEDULE_LINEAR, SCHEDULE_COUNT } ScheduleKind;

typedef struct {
    ScheduleKind kind;
    int64_t warmup_steps; // W
    int64_t total_steps;  // S (warm-up included)
    float min_lr_ratio;   // m: floor of the decay as a fraction of the peak
} Schedule;

// "constant", "cosine", "linear"; schedule_parse returns STATUS_ERR_ARG for other names.
const char *schedule_name(ScheduleKind k);
Status schedule_parse(const char *name, ScheduleKind *k);

// Learning rate at 0-based optimizer step `step`.
float schedule_lr(const Schedule *s, float peak_lr, int64_t step);

// L2 norm of n gradient values (double accumulation).
double grad_global_norm(const float *g, int64_t n);
// torch.nn.utils.clip_grad_norm_: coef = max_norm / (norm + 1e-6), applied when < 1.
// Returns the norm before clipping (NaN/Inf when the gradients are not finite; then
// nothing is scaled). max_norm <= 0 disables clipping (norm still returned).
double grad_clip_global(float *g, int64_t n, double max_norm);

#endif
