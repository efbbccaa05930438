/*
 * kurtosis.h - kurtosis of weights and of activation channels, and the
 * parameter-count-weighted layer average of the paper's Table 7 (paper.md §4.4).
 *
 * Definitions (reference.md §10, identical to scipy.stats.kurtosis):
 *   central moments  m_k = mean((x - mu)^k)                  (biased, divided by n)
 *   Pearson          kappa = m4 / m2^2                       (normal = 3)    fisher = false
 *   excess (Fisher)  kappa - 3                               (normal = 0)    fisher = true
 *   bias = false     G2 = ((n^2-1) m4/m2^2 - 3 (n-1)^2) / ((n-2)(n-3)) + 3   (n > 3)
 * scipy's defaults are fisher = true, bias = true. A sample with
 * m2 <= (DBL_EPSILON * mu)^2 (constant data) has no kurtosis: NaN, as scipy returns.
 * Everything is computed in double; the data may be float.
 *
 * edgeforge's analysis reports PEARSON kurtosis (fisher = false, bias = true) by default,
 * the textbook "kurtosis" (normal = 3). The paper does not say which it used: its weight
 * value 4.6038 fits Pearson for mildly heavy-tailed weights, but excess is not excluded.
 * Both are available through KurtosisOpts; reports state which one they used.
 *
 * Activations: the paper's "kurtosis of activation channels" does not say which per-channel
 * statistic is used. A KurtChannels accumulator streams over calibration batches of a
 * linear's input X (n_tokens, K) and keeps, per channel, max|x|, sum x and sum x^2, plus the
 * moments of all values; kurt_channels_value() then gives the kurtosis over the K
 * per-channel statistics (absmax or RMS) or over all n_tokens*K values.
 *
 *   KurtosisOpts o = kurtosis_opts_default();            // Pearson, biased
 *   double kw = kurtosis_f32(W, n_out * n_in, o);         // a weight matrix
 *   KurtChannels c;
 *   kurt_channels_init(&c, K);
 *   for each calibration batch: kurt_channels_push(&c, X, n_tokens);   // X (n_tokens, K)
 *   double ka = kurt_channels_value(&c, KURT_CHANNEL_ABSMAX, o);
 *   kurt_channels_release(&c);
 *   double table7 = kurtosis_weighted_mean(per_layer, n_params, n_layers);
 */
#ifndef EF_KURTOSIS_H
#define EF_KURTOSIS_H

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    bool fisher; // true: excess kurtosis (kappa - 3); false: Pearson kappa
    bool bias;   // true: plain moment ratio; false: the unbiased G2 correction (n > 3)
} KurtosisOpts;

// Pearson, biased (edgeforge's documented default; scipy would be fisher=true).
KurtosisOpts kurtosis_opts_default(void);

// Two-pass kurtosis of n values (mean first, then m2 and m4), in double.
// Returns NaN for n == 0 or constant data.
double kurtosis_f32(const float *x, int64_t n, KurtosisOpts o);
double kurtosis_f64(const double *x, int64_t n, KurtosisOpts o);

// Streaming moments: count, mean and the sums of powers of deviations
// M2 = sum (x-mu)^2, M3, M4. Batches are folded in with the pairwise update of
// Pébay (2008, "Formulas for robust, one-pass parallel computation of covariances and
// arbitrary-order statistical moments", eqs. 3.1), which is as accurate as two passes
// on each batch; merging is exact in exact arithmetic and order-independent up to rounding.
typedef struct {
    int64_t n;
    double mean, M2, M3, M4;
} KurtMoments;

// Adds a batch of n values (two-pass within the batch, then merged).
void kurt_moments_push_f32(KurtMoments *m, const float *x, int64_t n);
void kurt_moments_push_f64(KurtMoments *m, const double *x, int64_t n);
// a <- a combined with b.
void kurt_moments_merge(KurtMoments *a, const KurtMoments *b);
// Kurtosis of everything pushed so far (NaN when empty or constant).
double kurt_moments_value(const KurtMoments *m, KurtosisOpts o);

typedef enum {
    KURT_CHANNEL_ABSMAX, // kurtosis over the K values max_t |x[t, k]|
    KURT_CHANNEL_RMS,    // kurtosis over the K values sqrt(mean_t x[t, k]^2)
    KURT_CHANNEL_ALL,    // kurtosis of all n_tokens * K activation values
    KURT_CHANNEL_COUNT
} KurtChannelStat;

// Name of a statistic ("absmax", "rms", "all") and its inverse (-1 when unknown).
const char *kurt_channel_stat_name(KurtChannelStat s);
int kurt_channel_stat_parse(const char *name);

typedef struct {
    int K;            // channels (in_features of the linear)
    int64_t n_tokens; // rows pushed so far
    double *sum;      // (K) sum_t x[t, k]
    double *sumsq;    // (K) sum_t x[t, k]^2
    double *absmax;   // (K) max_t |x[t, k]|
    KurtMoments all;  // all values
} KurtChannels;

// Allocates the K-channel accumulators (aborting allocator: K is a layer width).
void kurt_channels_init(KurtChannels *c, int K);
// Adds X (n_tokens, K), row-major (one token per row).
void kurt_channels_push(KurtChannels *c, const float *X, int64_t n_tokens);
// Kurtosis of the chosen statistic (NaN when nothing was pushed).
double kurt_channels_value(const KurtChannels *c, KurtChannelStat stat, KurtosisOpts o);
// Frees the accumulators; a zeroed struct is a no-op.
void kurt_channels_release(KurtChannels *c);

// The paper's aggregation: sum_i w_i k_i / sum_i w_i with w_i the parameter count of
// layer i (for activations: of the linear whose input was measured). Layers whose
// kurtosis is NaN (constant data) are skipped and do not count in the weights.
// Returns NaN when no layer has a finite value or all weights are 0.
double kurtosis_weighted_mean(const double *values, const int64_t *weights, int n);

#endif
