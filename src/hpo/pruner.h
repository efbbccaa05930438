/*
 * pruner.h - Optuna's MedianPruner (PercentilePruner at 50) on a study's intermediate values.
 *
 *   HpoPrunerConfig pc = hpo_median_pruner_default();   // Optuna's defaults
 *   if (hpo_pruner_should_prune(&pc, j, study_id, trial_id)) ... stop the trial, tell PRUNED
 *
 * Rules (optuna/pruners/_percentile.py): no pruning before n_startup_trials COMPLETE trials,
 * before step n_warmup_steps, or off the interval grid; prune when the trial's best
 * intermediate value so far is worse than the percentile (median) of the COMPLETE trials'
 * values at the trial's last step, given at least n_min_trials of them; an all-NaN trial is
 * pruned.
 */
#ifndef EF_HPO_PRUNER_H
#define EF_HPO_PRUNER_H

#include <stdbool.h>

#include "hpo/journal.h"

typedef struct {
    double percentile;    // 50 for the median pruner
    int n_startup_trials; // 5
    int n_warmup_steps;   // 0
    int interval_steps;   // 1
    int n_min_trials;     // 1
} HpoPrunerConfig;

HpoPrunerConfig hpo_median_pruner_default(void);

// numpy.nanpercentile with linear interpolation over n values (NaNs ignored; NaN if all NaN).
double hpo_nanpercentile(const double *v, int n, double q);

bool hpo_pruner_should_prune(const HpoPrunerConfig *pc, const HpoJournal *j, int study_id,
                             int trial_id);

#endif
