/*
 * pruner.c - median/percentile pruning (see pruner.h).
 */
#include "hpo/pruner.h"

#include <math.h>
#include <stdlib.h>

#include "core/common.h"

HpoPrunerConfig hpo_median_pruner_default(void) {
    HpoPrunerConfig c = {50.0, 5, 0, 1, 1};
    return c;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double hpo_nanpercentile(const double *v, int n, double q) {
    double *s = xmalloc((size_t)(n + 1) * sizeof(double));
    int m = 0;
    for (int i = 0; i < n; i++)
        if (!isnan(v[i])) s[m++] = v[i];
    double r = NAN;
    if (m > 0) {
        qsort(s, (size_t)m, sizeof(double), cmp_d);
        // numpy's default "linear" method: position q/100 * (m-1)
        double pos = q / 100.0 * (m - 1);
        int lo = (int)floor(pos);
        int hi = lo + 1 < m ? lo + 1 : lo;
        double frac = pos - lo;
        r = s[lo] + (s[hi] - s[lo]) * frac;
    }
    free(s);
    return r;
}

bool hpo_pruner_should_prune(const HpoPrunerConfig *pc, const HpoJournal *j, int study_id,
                             int trial_id) {
    const HpoStudy *st = &j->studies[study_id];
    const HpoTrial *t = &j->trials[trial_id];
    int n_complete = 0;
    for (int i = 0; i < st->n_trials; i++)
        if (j->trials[st->trial_ids[i]].state == HPO_COMPLETE) n_complete++;
    if (n_complete == 0 || n_complete < pc->n_startup_trials) return false;
    int64_t step;
    double last;
    if (!hpo_trial_last_step(t, &step, &last)) return false;
    if (step < pc->n_warmup_steps) return false;
    // only the first report at or after each interval point is judged
    int64_t nearest =
        (step - pc->n_warmup_steps) / pc->interval_steps * pc->interval_steps + pc->n_warmup_steps;
    int64_t second_last = -1;
    for (int i = 0; i < t->n_inter; i++)
        if (t->inter_steps[i] > second_last && t->inter_steps[i] != step)
            second_last = t->inter_steps[i];
    if (!(second_last < nearest)) return false;
    bool maximize = st->directions[0] == HPO_DIR_MAXIMIZE;
    double best = NAN;
    for (int i = 0; i < t->n_inter; i++) {
        double v = t->inter_values[i];
        if (isnan(v)) continue;
        if (isnan(best) || (maximize ? v > best : v < best)) best = v;
    }
    if (isnan(best)) return true;
    double *vals = xmalloc((size_t)(st->n_trials + 1) * sizeof(double));
    int m = 0;
    for (int i = 0; i < st->n_trials; i++) {
        const HpoTrial *o = &j->trials[st->trial_ids[i]];
        if (o->state != HPO_COMPLETE) continue;
        for (int k = 0; k < o->n_inter; k++)
            if (o->inter_steps[k] == step) vals[m++] = o->inter_values[k];
    }
    bool prune = false;
    if (m >= pc->n_min_trials) {
        double q = maximize ? 100 - pc->percentile : pc->percentile;
        double p = hpo_nanpercentile(vals, m, q);
        if (!isnan(p)) prune = maximize ? best < p : best > p;
    }
    free(vals);
    return prune;
}
