/*
 * parzen.h - the Parzen estimator of Optuna's TPE: a mixture of product kernels, one kernel
 * per observation plus one prior kernel (optuna/samplers/_tpe/parzen_estimator.py).
 *
 * Numeric parameters are modelled in a transformed space (log for log=True; step params
 * widen the bounds by step/2) with truncated normals (discretized for step/int params);
 * categorical parameters with smoothed one-hot weight rows.
 *
 *   HpoParzenConfig cfg = hpo_parzen_default_config();
 *   HpoParzen pe;
 *   hpo_parzen_build(&pe, &space, obs, n_obs, NULL, &cfg);   // obs: (n_obs, space.n)
 *   hpo_parzen_sample(&pe, rng, 24, cand);                   // cand: (24, space.n)
 *   hpo_parzen_log_pdf(&pe, cand, 24, lp);                   // lp: (24)
 *   hpo_parzen_release(&pe);
 *
 * Values are Optuna "internal representations": floats/ints as numbers, categoricals as
 * choice indices.
 */
#ifndef EF_HPO_PARZEN_H
#define EF_HPO_PARZEN_H

#include <stdbool.h>

#include "core/rng.h"
#include "hpo/space.h"

typedef struct {
    double prior_weight;      // 1.0
    bool consider_magic_clip; // true
    bool consider_endpoints;  // false
} HpoParzenConfig;

HpoParzenConfig hpo_parzen_default_config(void);

typedef struct {
    const HpoDist *dist; // borrowed from the space
    double *mu, *sigma;  // (n_kernels) numeric kernels in transformed space
    double *cat_w;       // (n_kernels, n_choices) categorical rows, each sums to 1
    double low, high;    // transformed bounds the kernels are truncated to
} HpoParzenDim;

typedef struct {
    int n_kernels; // n_obs + 1 (prior); 1 without observations
    int n_dims;
    double *weights;   // (n_kernels) normalized mixture weights
    HpoParzenDim *dim; // (n_dims)
} HpoParzen;

// Optuna's default_weights(n): ones for n < 25, else linspace(1/n, 1, n-25) ++ ones(25).
// w: (n)
void hpo_default_weights(int n, double *w);

// Builds the estimator over n_obs observations obs (n_obs, sp->n), row-major, in chronological
// order. weights (n_obs) or NULL for hpo_default_weights. The space must outlive pe.
void hpo_parzen_build(HpoParzen *pe, const HpoSpace *sp, const double *obs, int n_obs,
                      const double *weights, const HpoParzenConfig *cfg);
void hpo_parzen_release(HpoParzen *pe);

// Log density (mass for discrete dims) of n points x (n, n_dims) under the mixture. out: (n)
void hpo_parzen_log_pdf(const HpoParzen *pe, const double *x, int n, double *out);
// Straightforward per-kernel twin of hpo_parzen_log_pdf (no sharing of the normalisers).
void hpo_parzen_log_pdf_ref(const HpoParzen *pe, const double *x, int n, double *out);
// Draws n points from the mixture with rng. out: (n, n_dims)
void hpo_parzen_sample(const HpoParzen *pe, Rng *rng, int n, double *out);

// Truncated-normal helpers (standard normal; exposed for tests).
double hpo_log_ndtr(double a);
// log(Phi(b) - Phi(a)), accurate in the tails.
double hpo_log_gauss_mass(double a, double b);
// Inverse CDF of the standard normal truncated to [a, b] at quantile q in [0, 1].
double hpo_truncnorm_ppf(double q, double a, double b);

#endif
