/*
 * kurtosis.c - Pearson/excess kurtosis (scipy.stats.kurtosis semantics), streaming
 * moments and per-channel activation statistics. See kurtosis.h for the definitions.
 */
#include "analyze/kurtosis.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"

KurtosisOpts kurtosis_opts_default(void) {
    KurtosisOpts o = {.fisher = false, .bias = true};
    return o;
}

// kurtosis from n, mean and the biased moments m2, m4 (scipy's final step).
static double kurtosis_from_moments(int64_t n, double mean, double m2, double m4, KurtosisOpts o) {
    if (n <= 0) return NAN;
    // scipy: zero = m2 <= (eps * mean)^2 -> NaN (a constant sample has no kurtosis)
    double lim = DBL_EPSILON * mean;
    if (!(m2 > lim * lim)) return NAN;
    double k = m4 / (m2 * m2);
    if (!o.bias && n > 3) {
        double dn = (double)n;
        // G2 = ((n^2-1) b2 - 3 (n-1)^2) / ((n-2)(n-3)), reported as G2 + 3 (scipy)
        k = 1.0 / (dn - 2.0) / (dn - 3.0) * ((dn * dn - 1.0) * k - 3.0 * (dn - 1.0) * (dn - 1.0)) +
            3.0;
    }
    return o.fisher ? k - 3.0 : k;
}

/* ---- streaming moments ------------------------------------------------------------ */

void kurt_moments_merge(KurtMoments *a, const KurtMoments *b) {
    if (b->n == 0) return;
    if (a->n == 0) {
        *a = *b;
        return;
    }
    double na = (double)a->n, nb = (double)b->n, n = na + nb;
    double d = b->mean - a->mean, d2 = d * d;
    // Pébay (2008) eq. 3.1 for p = 2, 3, 4 (M3 needs the old M2, M4 the old M2 and M3)
    double M2 = a->M2 + b->M2 + d2 * na * nb / n;
    double M3 = a->M3 + b->M3 + d2 * d * na * nb * (na - nb) / (n * n) +
                3.0 * d * (na * b->M2 - nb * a->M2) / n;
    double M4 = a->M4 + b->M4 + d2 * d2 * na * nb * (na * na - na * nb + nb * nb) / (n * n * n) +
                6.0 * d2 * (na * na * b->M2 + nb * nb * a->M2) / (n * n) +
                4.0 * d * (na * b->M3 - nb * a->M3) / n;
    a->mean += d * nb / n;
    a->n += b->n;
    a->M2 = M2;
    a->M3 = M3;
    a->M4 = M4;
}

// One batch's moments, two passes (mean, then powers of the deviations).
static KurtMoments batch_moments_f32(const float *x, int64_t n) {
    KurtMoments m = {0};
    if (n <= 0) return m;
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += x[i];
    m.n = n;
    m.mean = s / (double)n;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)x[i] - m.mean, d2 = d * d;
        m.M2 += d2;
        m.M3 += d2 * d;
        m.M4 += d2 * d2;
    }
    return m;
}

static KurtMoments batch_moments_f64(const double *x, int64_t n) {
    KurtMoments m = {0};
    if (n <= 0) return m;
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += x[i];
    m.n = n;
    m.mean = s / (double)n;
    for (int64_t i = 0; i < n; i++) {
        double d = x[i] - m.mean, d2 = d * d;
        m.M2 += d2;
        m.M3 += d2 * d;
        m.M4 += d2 * d2;
    }
    return m;
}

void kurt_moments_push_f32(KurtMoments *m, const float *x, int64_t n) {
    KurtMoments b = batch_moments_f32(x, n);
    kurt_moments_merge(m, &b);
}

void kurt_moments_push_f64(KurtMoments *m, const double *x, int64_t n) {
    KurtMoments b = batch_moments_f64(x, n);
    kurt_moments_merge(m, &b);
}

double kurtosis_f64(const double *x, int64_t n, KurtosisOpts o) {
    KurtMoments m = batch_moments_f64(x, n);
    return kurt_moments_value(&m, o);
}

double kurtosis_f32(const float *x, int64_t n, KurtosisOpts o) {
    KurtMoments m = batch_moments_f32(x, n);
    return kurt_moments_value(&m, o);
}

double kurt_moments_value(const KurtMoments *m, KurtosisOpts o) {
    if (m->n <= 0) return NAN;
    double n = (double)m->n;
    return kurtosis_from_moments(m->n, m->mean, m->M2 / n, m->M4 / n, o);
}

/* ---- activation channels ------------------------------------------------------------ */

static const char *const stat_names[KURT_CHANNEL_COUNT] = {"absmax", "rms", "all"};

const char *kurt_channel_stat_name(KurtChannelStat s) {
    return (unsigned)s < KURT_CHANNEL_COUNT ? stat_names[s] : "?";
}

int kurt_channel_stat_parse(const char *name) {
    for (int i = 0; i < KURT_CHANNEL_COUNT; i++)
        if (strcmp(name, stat_names[i]) == 0) return i;
    return -1;
}

void kurt_channels_init(KurtChannels *c, int K) {
    CHECK(K > 0);
    memset(c, 0, sizeof(*c));
    c->K = K;
    c->sum = xcalloc((size_t)K, sizeof(double));
    c->sumsq = xcalloc((size_t)K, sizeof(double));
    c->absmax = xcalloc((size_t)K, sizeof(double));
}

void kurt_channels_push(KurtChannels *c, const float *X, int64_t n_tokens) {
    // X (n_tokens, K): per-channel sums and max|x| walk rows in order (cache-friendly)
    for (int64_t t = 0; t < n_tokens; t++) {
        const float *row = X + t * c->K;
        for (int k = 0; k < c->K; k++) {
            double v = row[k];
            c->sum[k] += v;
            c->sumsq[k] += v * v;
            double a = fabs(v);
            if (a > c->absmax[k]) c->absmax[k] = a;
        }
    }
    kurt_moments_push_f32(&c->all, X, n_tokens * c->K);
    c->n_tokens += n_tokens;
}

double kurt_channels_value(const KurtChannels *c, KurtChannelStat stat, KurtosisOpts o) {
    if (c->n_tokens == 0) return NAN;
    if (stat == KURT_CHANNEL_ALL) return kurt_moments_value(&c->all, o);
    if (stat == KURT_CHANNEL_ABSMAX) return kurtosis_f64(c->absmax, c->K, o);
    CHECK(stat == KURT_CHANNEL_RMS);
    double *rms = xmalloc((size_t)c->K * sizeof(double));
    for (int k = 0; k < c->K; k++)
        rms[k] = sqrt(c->sumsq[k] / (double)c->n_tokens);
    double v = kurtosis_f64(rms, c->K, o);
    free(rms);
    return v;
}

void kurt_channels_release(KurtChannels *c) {
    free(c->sum);
    free(c->sumsq);
    free(c->absmax);
    memset(c, 0, sizeof(*c));
}

double kurtosis_weighted_mean(const double *values, const int64_t *weights, int n) {
    double num = 0, den = 0;
    for (int i = 0; i < n; i++) {
        if (!isfinite(values[i]) || weights[i] <= 0) continue;
        num += (double)weights[i] * values[i];
        den += (double)weights[i];
    }
    return den > 0 ? num / den : NAN;
}
