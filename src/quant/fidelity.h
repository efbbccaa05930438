/*
 * fidelity.h - how closely a quantized model follows its unquantized base on held-out
 * text, with the statistics of llama.cpp's `llama-perplexity --kl-divergence` report
 * (reference.md §12.4):
 *
 *   per scored token i (logits of base b and quantized q at the same position, target y =
 *   the next token of the text), in double precision:
 *     KL_i   = sum_v p_b(v) (log p_b(v) - log p_q(v))              (KL(base || quant))
 *     nll_i  = -log p(y)                  for both models
 *     same_i = argmax_v b == argmax_v q   (first index on ties)
 *     dp_i   = p_q(y) - p_b(y)
 *   mean KL with the standard error sqrt((E[KL^2] - E[KL]^2) / (n - 1)) (llama.cpp's
 *   mean_and_uncertainty), KL percentiles by linear interpolation between order statistics
 *   (numpy's default, llama.cpp's `percentile`), top-1 agreement p with sqrt(p(1-p)/(n-1)),
 *   PPL = exp(mean nll) for each model, mean ln(PPL_q/PPL_b) = mean(nll_q - nll_b) with
 *   its standard error, RMS dp.
 * Held-out text is cut into chunks of ctx tokens (calib_chunks); as llama-perplexity does,
 * only the second half of each chunk is scored: positions j in [ctx/2, ctx-1) predict
 * token j+1, so each chunk gives ctx - 1 - ctx/2 tokens.
 * Checked against numpy on fixed logits (tests/test_quantize.c,
 * tools/gen_quant_fixtures.py).
 *
 *   FidelityAcc a;  fidelity_acc_init(&a);
 *   for each token: fidelity_acc_add(&a, logits_base, logits_quant, V, target);
 *   FidelityStats st;  fidelity_acc_stats(&a, &st);
 *   fidelity_acc_release(&a);
 */
#ifndef EF_FIDELITY_H
#define EF_FIDELITY_H

#include <stdint.h>
#include <stdio.h>

#include "core/status.h"
#include "model/llama.h"
#include "quant/calib.h"
#include "quant/gptq_model.h"

typedef struct {
    int64_t n_tokens;                     // scored tokens
    double nll_base, nll_quant;           // mean negative log-likelihood
    double nll_base_se, nll_quant_se;     // their standard errors
    double ppl_base, ppl_quant;           // exp(mean nll)
    double ln_ppl_ratio, ln_ppl_ratio_se; // mean(nll_q - nll_b) = ln(PPL_q / PPL_b)
    double kl_mean, kl_se;                // mean KL(base || quant) and its standard error
    double kl_median, kl_p90, kl_p95, kl_p99, kl_p999, kl_max;
    double top1, top1_se; // fraction of tokens whose argmax agrees
    double dp_rms;        // RMS of p_q(y) - p_b(y)
} FidelityStats;

typedef struct {
    double *kl; // (n) per-token KL, for the percentiles
    int64_t n, cap;
    double s_nb, s_nb2, s_nq, s_nq2, s_d, s_d2, s_kl, s_kl2, s_dp2;
    int64_t same;
    double *lp_b, *lp_q; // (V) scratch log-probs
    int V;
} FidelityAcc;

void fidelity_acc_init(FidelityAcc *a);
void fidelity_acc_release(FidelityAcc *a);
// Adds one token: base and quantized logits (V) at the same position, target next token.
void fidelity_acc_add(FidelityAcc *a, const float *logits_base, const float *logits_quant, int V,
                      int32_t target);
// Statistics of the tokens added so far (zeros when none).
void fidelity_acc_stats(const FidelityAcc *a, FidelityStats *s);

// q-quantile (0..1) of sorted values x (n >= 1) by linear interpolation (numpy "linear").
double fidelity_percentile(const double *sorted, int64_t n, double q);

// Runs both models over every chunk (chunks->seq_len >= 4 tokens) and scores the second
// halves. Errors: STATUS_ERR_ARG (vocabularies differ, chunk longer than a model's
// context), inference errors.
Status fidelity_eval(FidelityStats *s, const Model *base, const Model *quant,
                     const CalibSet *chunks);

typedef struct {
    const char *model, *out_dir, *method; // method: "gptq" or "rtn"
    int bits, group_size;
    int64_t params_total; // all parameters of the model
    int64_t bytes_before; // the unquantized model at 16 bits per parameter
    int64_t bytes_after;  // model.safetensors of the checkpoint
    const GptqModelReport *rep;
    const FidelityStats *fid; // NULL when not measured
    int calib_seqs, calib_len;
    const char *system; // gemm_system_info: what besides the input decides the bits, or NULL
} FidelityReport;

// Prints the report as text to f.
void fidelity_report_print(FILE *f, const FidelityReport *r);
// Writes the report as JSON (per-linear loss, bits per weight, sizes, fidelity) atomically.
Status fidelity_report_write_json(const char *path, const FidelityReport *r);

#endif
