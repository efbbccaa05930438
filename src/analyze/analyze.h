/*
 * analyze.h - layer-wise kurtosis of a model's weights and of its linears' input
 * activations over calibration windows, aggregated as the paper's Table 7, and the
 * correlation of per-linear kurtosis with per-linear GPTQ loss (edgeforge analyze).
 *
 * Per decoder linear (q, k, v, o, gate, up, down of every layer; "layer" below means one
 * such linear, the unit GPTQ reports a loss for):
 *   weight kurtosis      kurtosis of all N*K elements of the weight matrix (as float32)
 *   activation kurtosis  the linear's input X (tokens, K) over every token of the
 *                        calibration windows; per input channel k the kurtosis of the
 *                        column X[:, k] over the tokens, then the mean over the K channels
 *                        (channels with constant values, NaN, are skipped). q/k/v share
 *                        their input (the attention norm's output), as do gate/up.
 *   also recorded        kurt_channels_value() absmax / rms / all of the same input.
 * Aggregation (Table 7): sum_i P_i kappa_i / sum_i P_i, P_i = N_i * K_i the parameter count
 * of linear i (kurtosis_weighted_mean), for weights and activations alike.
 * The kurtosis definition is the KurtosisOpts given (default Pearson, biased: normal = 3).
 *
 *   AnalyzeOptions o = analyze_options_default();
 *   AnalyzeReport r;
 *   if (analyze_run(&r, &model, &calib, &o) != STATUS_OK) ...
 *   if (analyze_attach_gptq(&r, "q.report.json") != STATUS_OK) ...   // optional
 *   analyze_write_csv(&r, "out.csv");  analyze_write_json(&r, "out.json");
 *   analyze_report_release(&r);
 */
#ifndef EF_ANALYZE_H
#define EF_ANALYZE_H

#include <stdbool.h>
#include <stdint.h>

#include "analyze/kurtosis.h"
#include "core/status.h"
#include "model/llama.h"
#include "quant/calib.h"

typedef struct {
    KurtosisOpts kurt; // definition used for every value (default Pearson, biased)
    int n_threads;     // 0: OpenMP default
} AnalyzeOptions;

AnalyzeOptions analyze_options_default(void);

typedef struct {
    char name[80];    // "model.layers.3.self_attn.q_proj"
    int layer, which; // decoder layer, index in q k v o gate up down order
    int64_t N, K;     // out, in features
    double w_kurt;    // weights, all elements
    double a_kurt;    // mean over input channels of the per-channel kurtosis over tokens
    double a_absmax, a_rms, a_all; // kurtosis of per-channel max|x|, RMS, and of all values
    double gptq_loss;              // from a GPTQ report (NaN when none attached)
} AnalyzeLinear;

typedef struct {
    AnalyzeLinear *lin; // (n_linear) layer by layer
    int n_linear;
    KurtosisOpts kurt;
    int n_seqs, seq_len;
    int64_t n_tokens;      // calibration tokens seen by every linear
    double w_mean, a_mean; // parameter-count-weighted means (Table 7)
    bool has_gptq;
    int n_corr;                                          // linears with finite kurtosis and loss
    double pearson_w, spearman_w, pearson_a, spearman_a; // vs GPTQ loss (NaN without)
} AnalyzeReport;

// Weight kurtosis of every decoder linear (no data needed); activation fields NaN.
// Errors: STATUS_ERR_UNSUPPORTED for packed GPTQ weights (no float weights to measure).
Status analyze_weights(AnalyzeReport *r, const Model *m, const AnalyzeOptions *o);
// Weights plus activations over every window of `calib` (n_seqs, seq_len). Errors:
// STATUS_ERR_ARG (windows longer than the model's context, token ids out of range),
// inference errors, as analyze_weights.
Status analyze_run(AnalyzeReport *r, const Model *m, const CalibSet *calib,
                   const AnalyzeOptions *o);
void analyze_report_release(AnalyzeReport *r);

// Reads the "linears" array of a GPTQ report (edgeforge quantize's OUT.report.json), sets
// gptq_loss by linear name and computes the correlations. Errors: I/O, STATUS_ERR_FORMAT
// (not JSON, no "linears", a linear of the model missing from the report).
Status analyze_attach_gptq(AnalyzeReport *r, const char *report_path);

// Pearson correlation of the pairs where both values are finite; NaN for < 2 pairs or
// zero variance. Spearman: Pearson of the ranks (ties get their average rank), as
// scipy.stats.spearmanr.
double analyze_pearson(const double *x, const double *y, int n);
double analyze_spearman(const double *x, const double *y, int n);

// Per-linear CSV and the whole report as JSON, written atomically.
Status analyze_write_csv(const AnalyzeReport *r, const char *path);
Status analyze_write_json(const AnalyzeReport *r, const char *path);

#endif
