/*
 * tpe.h - Tree-structured Parzen Estimator sampler with Optuna's TPESampler semantics
 * (Optuna 5.0.0 optuna/samplers/_tpe/sampler.py), and a random sampler.
 *
 * The sampler is pure: it sees the study's trials as HpoTpeTrial records (internal values,
 * NaN for a parameter the trial does not have) and returns the next point. study.c turns
 * journal trials into records; tests feed fixture histories directly.
 *
 *   HpoTpeConfig cfg = hpo_tpe_default_config();
 *   cfg.n_startup_trials = 5;                    // for a 16-trial budget, see docs/hpo.md
 *   double x[6];
 *   hpo_tpe_suggest(&cfg, &space, false, trials, n, current_number, &rng, x);
 *
 * Modes: univariate (one estimator per parameter, Optuna's multivariate=False) and
 * multivariate (joint kernels over the parameters every finished trial has, the default for
 * single-objective studies since Optuna 5). constant_liar counts RUNNING trials (other than
 * the current one) in the "above" set so parallel workers spread out.
 */
#ifndef EF_HPO_TPE_H
#define EF_HPO_TPE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/rng.h"
#include "hpo/parzen.h"
#include "hpo/space.h"

// Optuna's TrialState values (they are written to the journal as these integers).
typedef enum {
    HPO_RUNNING = 0,
    HPO_COMPLETE = 1,
    HPO_PRUNED = 2,
    HPO_FAIL = 3,
    HPO_WAITING = 4,
} HpoTrialState;

typedef enum { HPO_GAMMA_DEFAULT = 0, HPO_GAMMA_HYPEROPT } HpoGamma;

typedef struct {
    int n_startup_trials; // 10 (random until this many COMPLETE+PRUNED trials exist)
    int n_ei_candidates;  // 24
    HpoGamma gamma;       // default: min(ceil(0.1 n), 25)
    bool multivariate;    // true (Optuna 5 default for single objective)
    bool constant_liar;   // true (Optuna 5 default)
    HpoParzenConfig parzen;
} HpoTpeConfig;

HpoTpeConfig hpo_tpe_default_config(void);

typedef struct {
    int number;          // trial number in the study (chronological)
    HpoTrialState state; // RUNNING, COMPLETE or PRUNED are used; others ignored
    double value;        // COMPLETE: objective value
    bool has_last_step;  // PRUNED ranking: the trial's largest reported step ...
    int64_t last_step;
    double last_value;    // ... and the intermediate value there
    const double *params; // (space n) internal values; NaN = absent or other distribution
} HpoTpeTrial;

int hpo_tpe_gamma(HpoGamma g, int n);

// Optuna's _split_trials: COMPLETE by value, then PRUNED by (later step first, value),
// running trials always "above"; both lists returned in trial-number order as indices into
// trials. Trials with number == current_number are skipped. below/above: (n) each.
void hpo_tpe_split(const HpoTpeConfig *cfg, bool maximize, const HpoTpeTrial *trials, int n,
                   int current_number, int *below, int *n_below, int *above, int *n_above);

// Builds l(x) (below) and g(x) (above) over the sub-space `sub` whose parameters are at
// columns cols[] of the trial params. Trials missing any of them are left out (Optuna's
// internal-repr rule).
void hpo_tpe_build(const HpoTpeConfig *cfg, const HpoSpace *sub, const int *cols,
                   const HpoTpeTrial *trials, const int *below, int n_below, const int *above,
                   int n_above, HpoParzen *l, HpoParzen *g);

// Scores candidates (n, sub n) by log l(x) - log g(x) into acq (n) and returns the argmax
// (the first on ties).
int hpo_tpe_pick(const HpoParzen *l, const HpoParzen *g, const double *cand, int n, double *acq);

// Suggests every non-single parameter of sp into out (sp->n) for the trial current_number.
// Single-valued parameters get their only value. Errors: STATUS_ERR_ARG for a bad config.
Status hpo_tpe_suggest(const HpoTpeConfig *cfg, const HpoSpace *sp, bool maximize,
                       const HpoTpeTrial *trials, int n, int current_number, Rng *rng, double *out);

// Random sampling of one distribution (uniform; log-uniform for log=True; uniform on the
// step grid).
double hpo_random_sample(const HpoDist *d, Rng *rng);

#endif
