/*
 * parzen.c - Parzen estimator and truncated normal numerics of Optuna's TPE (see parzen.h).
 *
 * Written from the algorithm in optuna/samplers/_tpe/{parzen_estimator,
 * probability_distributions,_truncnorm}.py (Optuna 5.0.0): the same bandwidth rule, clip,
 * prior kernel and the same tail-safe log-mass formulas, so the estimators agree with
 * Optuna's to rounding (tests/test_tpe.c checks 1e-9 against fixtures).
 */
#include "hpo/parzen.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"

#define PARZEN_EPS 1e-12

HpoParzenConfig hpo_parzen_default_config(void) {
    HpoParzenConfig c = {1.0, true, false};
    return c;
}

// numpy's pairwise summation of a reduction (first element, then the pairwise sum of the
// rest), so normalisers round exactly like Optuna's.
static double pairwise(const double *a, int n) {
    if (n < 8) {
        double r = 0.0;
        for (int i = 0; i < n; i++)
            r += a[i];
        return r;
    }
    if (n <= 128) {
        double r[8];
        for (int j = 0; j < 8; j++)
            r[j] = a[j];
        int i = 8;
        for (; i < n - (n % 8); i += 8)
            for (int j = 0; j < 8; j++)
                r[j] += a[i + j];
        double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; i++)
            res += a[i];
        return res;
    }
    int n2 = n / 2;
    n2 -= n2 % 8;
    return pairwise(a, n2) + pairwise(a + n2, n - n2);
}

static double np_sum(const double *a, int n) {
    if (n == 0) return 0.0;
    return a[0] + pairwise(a + 1, n - 1);
}

void hpo_default_weights(int n, double *w) {
    if (n < 25) {
        for (int i = 0; i < n; i++)
            w[i] = 1.0;
        return;
    }
    // numpy linspace(1/n, 1, n-25): start + i*step, the last element set to stop exactly
    int num = n - 25;
    double start = 1.0 / n, stop = 1.0;
    if (num == 1)
        w[0] = start;
    else if (num > 1) {
        double step = (stop - start) / (num - 1);
        for (int i = 0; i < num; i++)
            w[i] = (double)i * step + start;
        w[num - 1] = stop;
    }
    for (int i = num; i < n; i++)
        w[i] = 1.0;
}

// ---- standard normal tails ---------------------------------------------------------------

static const double LOG_SQRT_2PI_C = 0.91893853320467274178; // log(sqrt(2*pi))

static double ndtr_single(double a) {
    double x = a / M_SQRT2;
    if (x < -1.0 / M_SQRT2) return 0.5 * erfc(-x);
    if (x < 1.0 / M_SQRT2) return 0.5 + 0.5 * erf(x);
    return 1.0 - 0.5 * erfc(x);
}

static double ndtr_vec(double a) { return 0.5 + 0.5 * erf(a / M_SQRT2); }

double hpo_log_ndtr(double a) {
    if (a > 6) return -ndtr_single(-a); // log(1 - p) ~ -p for tiny p
    if (a > -20) return log(ndtr_single(a));
    // asymptotic series of the Mills ratio far in the left tail
    double log_lhs = -0.5 * a * a - log(-a) - 0.5 * log(2 * M_PI);
    double last_total = 0, rhs = 1, numerator = 1, denom_factor = 1, denom_cons = 1 / (a * a);
    int sign = 1;
    for (int i = 1; fabs(last_total - rhs) > 2.220446049250313e-16; i++) {
        last_total = rhs;
        sign = -sign;
        denom_factor *= denom_cons;
        numerator *= 2 * i - 1;
        rhs += sign * numerator * denom_factor;
    }
    return log_lhs + log(rhs);
}

// log(exp(p) - exp(q)) for p >= q
static double log_diff(double p, double q) { return p + log1p(-exp(q - p)); }

double hpo_log_gauss_mass(double a, double b) {
    // The right tail is computed by symmetry in the left tail, where log_ndtr is accurate;
    // intervals around 0 use 1 - both tails to avoid cancellation.
    if (b <= 0) return log_diff(hpo_log_ndtr(b), hpo_log_ndtr(a));
    if (a > 0) return log_diff(hpo_log_ndtr(-a), hpo_log_ndtr(-b));
    return log1p(-ndtr_vec(a) - ndtr_vec(-b));
}

static double logaddexp(double x, double y) {
    if (x == y) return x + M_LN2;
    double m = fmax(x, y), d = -fabs(x - y);
    return m + log1p(exp(d));
}

// x such that log_ndtr(x) = y (Newton on log_ndtr from an asymptotic or logistic guess).
static double ndtri_exp(double y) {
    bool flipped = y > -1e-2;
    double z = flipped ? log(-expm1(y)) : y;
    double x = z < -5 ? -sqrt(-2.0 * (z + LOG_SQRT_2PI_C)) : -(sqrt(3.0) / M_PI) * log(expm1(-z));
    for (int it = 0; it < 100; it++) {
        double lx = hpo_log_ndtr(x);
        double lpdf = -0.5 * x * x - LOG_SQRT_2PI_C;
        double dx = (lx - z) * exp(lx - lpdf);
        x -= dx;
        if (fabs(dx) < 1e-8 * fabs(x)) break;
    }
    return flipped ? -x : x;
}

double hpo_truncnorm_ppf(double q, double a, double b) {
    if (a == b) return NAN;
    if (q == 0) return a;
    if (q == 1) return b;
    double log_mass = hpo_log_gauss_mass(a, b);
    if (a < 0) return ndtri_exp(logaddexp(hpo_log_ndtr(a), log(q) + log_mass));
    return -ndtri_exp(logaddexp(hpo_log_ndtr(-b), log1p(-q) + log_mass));
}

// ---- estimator ---------------------------------------------------------------------------

typedef struct {
    double v;
    int i;
} SortItem;

static int cmp_item(const void *pa, const void *pb) {
    const SortItem *a = pa, *b = pb;
    if (a->v < b->v) return -1;
    if (a->v > b->v) return 1;
    return a->i - b->i; // stable: ties keep chronological order
}

// Bandwidths of the observation kernels (Optuna's univariate rule): distance to the farther
// neighbour among the sorted observations padded with the bounds; without consider_endpoints
// the extreme kernels look only inwards; then the magic clip.
static void numeric_sigmas(const double *mus, int n, double low, double high,
                           const HpoParzenConfig *cfg, double *sig) {
    if (n == 0) return;
    SortItem *it = xmalloc((size_t)n * sizeof(SortItem));
    double *e = xmalloc((size_t)(n + 2) * sizeof(double)); // sorted, padded: (n + 2)
    double *ss = xmalloc((size_t)n * sizeof(double));
    for (int i = 0; i < n; i++)
        it[i] = (SortItem){mus[i], i};
    qsort(it, (size_t)n, sizeof(SortItem), cmp_item);
    e[0] = low;
    for (int i = 0; i < n; i++)
        e[i + 1] = it[i].v;
    e[n + 1] = high;
    for (int i = 0; i < n; i++)
        ss[i] = fmax(e[i + 1] - e[i], e[i + 2] - e[i + 1]);
    if (!cfg->consider_endpoints && n + 2 >= 4) {
        ss[0] = e[2] - e[1];
        ss[n - 1] = e[n] - e[n - 1];
    }
    double maxs = high - low;
    double mins = cfg->consider_magic_clip ? (high - low) / fmin(100.0, 1.0 + (n + 1)) : PARZEN_EPS;
    for (int i = 0; i < n; i++) {
        // np.clip(x, lo, hi) = min(max(x, lo), hi)
        double s = ss[i] < mins ? mins : ss[i];
        sig[it[i].i] = s > maxs ? maxs : s;
    }
    free(it);
    free(e);
    free(ss);
}

void hpo_parzen_build(HpoParzen *pe, const HpoSpace *sp, const double *obs, int n_obs,
                      const double *weights, const HpoParzenConfig *cfg) {
    memset(pe, 0, sizeof(*pe));
    int K = n_obs == 0 ? 1 : n_obs + 1;
    pe->n_kernels = K;
    pe->n_dims = sp->n;
    pe->weights = xcalloc((size_t)K, sizeof(double));
    if (n_obs == 0)
        pe->weights[0] = 1.0;
    else {
        if (weights)
            memcpy(pe->weights, weights, (size_t)n_obs * sizeof(double));
        else
            hpo_default_weights(n_obs, pe->weights);
        pe->weights[n_obs] = cfg->prior_weight;
    }
    double wsum = np_sum(pe->weights, K);
    for (int k = 0; k < K; k++)
        pe->weights[k] /= wsum;

    pe->dim = xcalloc((size_t)sp->n, sizeof(HpoParzenDim));
    double *col = xmalloc((size_t)(n_obs + 1) * sizeof(double));
    for (int p = 0; p < sp->n; p++) {
        HpoParzenDim *dm = &pe->dim[p];
        const HpoDist *d = &sp->params[p].dist;
        dm->dist = d;
        for (int i = 0; i < n_obs; i++)
            col[i] = obs[(size_t)i * sp->n + p];
        if (d->kind == HPO_DIST_CATEGORICAL) {
            int C = d->n_choices;
            dm->cat_w = xcalloc((size_t)K * C, sizeof(double));
            if (n_obs == 0) {
                for (int c = 0; c < C; c++)
                    dm->cat_w[c] = 1.0 / C;
                continue;
            }
            for (int k = 0; k < K; k++)
                for (int c = 0; c < C; c++)
                    dm->cat_w[(size_t)k * C + c] = cfg->prior_weight / K;
            for (int i = 0; i < n_obs; i++)
                dm->cat_w[(size_t)i * C + (int)col[i]] += 1.0;
            for (int k = 0; k < K; k++) {
                double rs = np_sum(dm->cat_w + (size_t)k * C, C);
                if (rs == 0) rs = 1;
                for (int c = 0; c < C; c++)
                    dm->cat_w[(size_t)k * C + c] /= rs;
            }
            continue;
        }
        double low = d->low, high = d->high;
        if (d->step != 0) {
            low -= d->step / 2;
            high += d->step / 2;
        }
        if (d->log) {
            for (int i = 0; i < n_obs; i++)
                col[i] = log(col[i]);
            low = log(low);
            high = log(high);
        }
        dm->low = low;
        dm->high = high;
        dm->mu = xmalloc((size_t)K * sizeof(double));
        dm->sigma = xmalloc((size_t)K * sizeof(double));
        memcpy(dm->mu, col, (size_t)n_obs * sizeof(double));
        numeric_sigmas(col, n_obs, low, high, cfg, dm->sigma);
        dm->mu[K - 1] = 0.5 * (low + high); // prior kernel
        dm->sigma[K - 1] = high - low;
    }
    free(col);
}

void hpo_parzen_release(HpoParzen *pe) {
    if (pe->dim)
        for (int p = 0; p < pe->n_dims; p++) {
            free(pe->dim[p].mu);
            free(pe->dim[p].sigma);
            free(pe->dim[p].cat_w);
        }
    free(pe->dim);
    free(pe->weights);
    memset(pe, 0, sizeof(*pe));
}

// log N-truncated pdf of transformed value xt under kernel (mu, sigma) on [low, high]
static double cont_log_pdf(double xt, double mu, double sigma, double low, double high,
                           double log_mass) {
    double z = (xt - mu) / sigma, a = (low - mu) / sigma, b = (high - mu) / sigma;
    if (a == b) return NAN;
    if (z < a || z > b) return -INFINITY;
    return -(z * z) / 2.0 - LOG_SQRT_2PI_C - log_mass - log(sigma);
}

// log mass of the grid cell of x under kernel (mu, sigma), truncated to [low, high]
static double disc_log_mass(const HpoParzenDim *dm, double x, int k, double norm) {
    const HpoDist *d = dm->dist;
    double left = x - d->step / 2, right = x + d->step / 2;
    if (d->log) {
        left = log(left);
        right = log(right);
    }
    double mu = dm->mu[k], s = dm->sigma[k];
    return hpo_log_gauss_mass((left - mu) / s, (right - mu) / s) - norm;
}

static double kernel_norm(const HpoParzenDim *dm, int k) {
    double mu = dm->mu[k], s = dm->sigma[k];
    return hpo_log_gauss_mass((dm->low - mu) / s, (dm->high - mu) / s);
}

// log-sum-exp over kernels of one row (K) the way Optuna reduces it
static double row_lse(double *row, int K) {
    double mx = -INFINITY;
    for (int k = 0; k < K; k++)
        mx = row[k] > mx ? row[k] : mx;
    if (isinf(mx) && mx < 0) mx = 0;
    for (int k = 0; k < K; k++)
        row[k] = exp(row[k] - mx);
    return log(np_sum(row, K)) + mx;
}

static void log_pdf_impl(const HpoParzen *pe, const double *x, int n, double *out, bool shared) {
    int K = pe->n_kernels, D = pe->n_dims;
    // Normalisers log Z_k per numeric dim do not depend on x: computed once when shared.
    double *norm = xcalloc((size_t)D * K, sizeof(double));
    if (shared)
        for (int p = 0; p < D; p++)
            if (pe->dim[p].dist->kind != HPO_DIST_CATEGORICAL)
                for (int k = 0; k < K; k++)
                    norm[(size_t)p * K + k] = kernel_norm(&pe->dim[p], k);
    double *row = xmalloc((size_t)K * sizeof(double));
    for (int i = 0; i < n; i++) {
        const double *xi = x + (size_t)i * D;
        for (int k = 0; k < K; k++) {
            double acc = 0, cont = 0;
            bool any_cont = false;
            for (int p = 0; p < D; p++) {
                const HpoParzenDim *dm = &pe->dim[p];
                const HpoDist *d = dm->dist;
                double nk = shared ? norm[(size_t)p * K + k] : 0;
                if (d->kind == HPO_DIST_CATEGORICAL) {
                    acc += log(dm->cat_w[(size_t)k * d->n_choices + (int)xi[p]]);
                } else if (d->step != 0) {
                    if (!shared) nk = kernel_norm(dm, k);
                    acc += disc_log_mass(dm, xi[p], k, nk);
                } else {
                    if (!shared) nk = kernel_norm(dm, k);
                    double xt = d->log ? log(xi[p]) : xi[p];
                    double v = cont_log_pdf(xt, dm->mu[k], dm->sigma[k], dm->low, dm->high, nk);
                    cont = any_cont ? cont + v : v;
                    any_cont = true;
                }
            }
            row[k] = acc + cont + log(pe->weights[k]);
        }
        out[i] = row_lse(row, K);
    }
    free(row);
    free(norm);
}

void hpo_parzen_log_pdf(const HpoParzen *pe, const double *x, int n, double *out) {
    log_pdf_impl(pe, x, n, out, true);
}

void hpo_parzen_log_pdf_ref(const HpoParzen *pe, const double *x, int n, double *out) {
    log_pdf_impl(pe, x, n, out, false);
}

static int pick_index(const double *p, int n, double u) {
    // count of cumulative probabilities below u, the last forced to 1 (Optuna's rule)
    double c = 0;
    for (int i = 0; i < n - 1; i++) {
        c += p[i];
        if (c >= u) return i;
    }
    return n - 1;
}

void hpo_parzen_sample(const HpoParzen *pe, Rng *rng, int n, double *out) {
    int K = pe->n_kernels, D = pe->n_dims;
    for (int i = 0; i < n; i++) {
        int k = pick_index(pe->weights, K, rng_uniform(rng));
        for (int p = 0; p < D; p++) {
            const HpoParzenDim *dm = &pe->dim[p];
            const HpoDist *d = dm->dist;
            double v;
            if (d->kind == HPO_DIST_CATEGORICAL) {
                v = pick_index(dm->cat_w + (size_t)k * d->n_choices, d->n_choices,
                               rng_uniform(rng));
            } else {
                double mu = dm->mu[k], s = dm->sigma[k];
                double q = rng_uniform(rng);
                v = hpo_truncnorm_ppf(q, (dm->low - mu) / s, (dm->high - mu) / s) * s + mu;
                if (!isfinite(v)) v = mu;
                if (v < dm->low) v = dm->low; // ppf rounding at the ends
                if (v > dm->high) v = dm->high;
                if (d->log) v = exp(v);
                if (d->step != 0) {
                    v = d->low + nearbyint((v - d->low) / d->step) * d->step;
                    v = v < d->low ? d->low : v > d->high ? d->high : v;
                } else {
                    v = v < d->low ? d->low : v > d->high ? d->high : v;
                }
            }
            out[(size_t)i * D + p] = v;
        }
    }
}
