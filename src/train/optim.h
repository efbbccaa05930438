/*
 * optim.h - AdamW (torch.optim.AdamW) and Muon (torch.optim.Muon / KellerJordan/Muon, in
 * F32) for the LoRA parameters, reference.md §4.
 *
 * AdamW, step t = 1, 2, ... (exactly torch's single-tensor path):
 *   p <- p (1 - lr wd)                               decoupled weight decay
 *   m <- m + (1 - b1)(g - m) ;  v <- b2 v + (1 - b2) g^2
 *   p <- p - (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 *
 * Muon, per 2-D matrix G (rows, cols):
 *   buf <- buf + (1 - mu)(g - buf)                   EMA momentum (torch's lerp)
 *   u = nesterov ? g + mu (buf - g) : buf
 *   O = NS5(u): X = u / max(||u||_F, eps), work on X^T if rows > cols, 5 times
 *       A = X X^T ; B = b A + c A A ; X <- a X + B X, (a, b, c) = (3.4445, -4.7750, 2.0315)
 *   p <- p (1 - lr wd) ;  p <- p - lr_adj O
 *   lr_adj = lr sqrt(max(1, rows/cols))   ("original")
 *          = lr 0.2 sqrt(max(rows, cols)) ("match_rms_adamw", Moonlight)
 * Weight decay uses the unadjusted lr, as torch.optim.Muon and Moonlight do. torch runs
 * NS in bf16; edgeforge runs it in F32 (reference fixtures transcribe it in F32).
 *
 *   LoraOptimizer opt;
 *   OptimOptions o = optim_defaults(OPTIM_MUON);
 *   lora_optim_init(&opt, &lora, &o);
 *   ... lora_optim_step(&opt, &lora, lr_now); ...
 *   lora_optim_release(&opt);
 */
#ifndef EF_OPTIM_H
#define EF_OPTIM_H

#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"
#include "train/lora.h"

typedef enum { OPTIM_ADAMW, OPTIM_MUON, OPTIM_COUNT } OptimKind;
typedef enum { MUON_SCALE_ORIGINAL, MUON_SCALE_MATCH_RMS_ADAMW, MUON_SCALE_COUNT } MuonScale;
// Which LoRA factors Muon updates; the others get AdamW with the same lr and wd.
typedef enum { MUON_LORA_BOTH, MUON_LORA_B_ONLY, MUON_LORA_COUNT } MuonLoraMode;

typedef struct {
    OptimKind kind;
    float lr; // peak learning rate (the schedule scales it)
    float weight_decay;
    float beta1, beta2, eps; // AdamW (also the AdamW part of a hybrid Muon run)
    float momentum;          // Muon mu
    bool nesterov;
    int ns_steps;
    float ns_eps; // Frobenius-norm floor of NS5 (torch: 1e-7)
    MuonScale scale;
    MuonLoraMode lora_mode;
} OptimOptions;

// AdamW: torch defaults (lr 1e-3, betas 0.9/0.999, eps 1e-8, wd 0.01).
// Muon: torch defaults (lr 1e-3, wd 0.1, momentum 0.95, nesterov, 5 steps, eps 1e-7,
// "original" scale) and MUON_LORA_BOTH (see docs/training.md for why).
OptimOptions optim_defaults(OptimKind kind);
const char *optim_kind_name(OptimKind k);
const char *muon_scale_name(MuonScale s);
const char *muon_lora_mode_name(MuonLoraMode m);

/* ---- Kernels ------------------------------------------------------------------------ */

// One AdamW step on n elements, t >= 1 the step number (after increment).
void adamw_update(float *p, const float *g, float *m, float *v, int64_t n, float lr,
                  const OptimOptions *o, int64_t t);

// Newton-Schulz quintic: out (rows, cols) ~ orthogonalized g (rows, cols). scratch holds
// at least 2 * rows * cols + 3 * min(rows, cols)^2 floats. _ref is the naive-loop twin.
void muon_newton_schulz(float *out, const float *g, int rows, int cols, int steps, float eps,
                        float *scratch);
void muon_newton_schulz_ref(float *out, const float *g, int rows, int cols, int steps, float eps,
                            float *scratch);
// Floats muon_newton_schulz needs as scratch.
int64_t muon_scratch_floats(int rows, int cols);
// lr multiplier of a (rows, cols) matrix for the scale rule.
double muon_lr_scale(MuonScale s, int rows, int cols);
// One Muon step on a (rows, cols) matrix p with gradient g and momentum buf.
void muon_update(float *p, const float *g, float *buf, int rows, int cols, float lr,
                 const OptimOptions *o, float *scratch);

/* ---- LoRA optimizer ----------------------------------------------------------------- */

typedef struct {
    OptimOptions opt;
    int64_t t;      // steps taken
    float *m, *v;   // AdamW moments (n_params each; Muon uses m as momentum buffer)
    float *scratch; // NS5 scratch for the largest factor
    int64_t n;
} LoraOptimizer;

Status lora_optim_init(LoraOptimizer *o, const LoraModel *lm, const OptimOptions *opt);
void lora_optim_release(LoraOptimizer *o);
// Applies one step with learning rate lr (the schedule's value) to lm->params using
// lm->grads. Returns STATUS_ERR_NUMERIC if a parameter became NaN/Inf.
Status lora_optim_step(LoraOptimizer *o, LoraModel *lm, float lr);

#endif
