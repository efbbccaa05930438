/*
 * tpe.c - TPE and random samplers (see tpe.h).
 */
#include "hpo/tpe.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"

HpoTpeConfig hpo_tpe_default_config(void) {
    HpoTpeConfig c;
    c.n_startup_trials = 10;
    c.n_ei_candidates = 24;
    c.gamma = HPO_GAMMA_DEFAULT;
    c.multivariate = true;
    c.constant_liar = true;
    c.parzen = hpo_parzen_default_config();
    return c;
}

int hpo_tpe_gamma(HpoGamma g, int n) {
    // Same float expressions as Optuna: ceil(0.1 * 30) is 4 there too.
    double v = g == HPO_GAMMA_HYPEROPT ? ceil(0.25 * sqrt((double)n)) : ceil(0.1 * (double)n);
    return (int)fmin(v, 25.0);
}

typedef struct {
    double k1, k2; // sort keys
    int idx;       // position in the input (stable tie-break)
} Key;

static int cmp_key(const void *pa, const void *pb) {
    const Key *a = pa, *b = pb;
    if (a->k1 != b->k1) return a->k1 < b->k1 ? -1 : 1;
    if (a->k2 != b->k2) return a->k2 < b->k2 ? -1 : 1;
    return a->idx - b->idx;
}

static void sort_by_number(const HpoTpeTrial *t, int *idx, int n) {
    // insertion sort keeps this reentrant (no global comparator state)
    for (int i = 1; i < n; i++) {
        int v = idx[i], j = i - 1;
        while (j >= 0 && (t[idx[j]].number > t[v].number ||
                          (t[idx[j]].number == t[v].number && idx[j] > v))) {
            idx[j + 1] = idx[j];
            j--;
        }
        idx[j + 1] = v;
    }
}

void hpo_tpe_split(const HpoTpeConfig *cfg, bool maximize, const HpoTpeTrial *trials, int n,
                   int current_number, int *below, int *n_below, int *above, int *n_above) {
    Key *comp = xmalloc((size_t)(n + 1) * sizeof(Key));
    Key *prun = xmalloc((size_t)(n + 1) * sizeof(Key));
    int *run = xmalloc((size_t)(n + 1) * sizeof(int));
    int nc = 0, np = 0, nr = 0;
    for (int i = 0; i < n; i++) {
        const HpoTpeTrial *t = &trials[i];
        if (t->number == current_number) continue;
        if (t->state == HPO_COMPLETE) {
            // sorted(reverse=True) is stable too: negate the value, keep the index tie-break
            comp[nc++] = (Key){maximize ? -t->value : t->value, 0, i};
        } else if (t->state == HPO_PRUNED) {
            Key k = {1, 0.0, i};
            if (t->has_last_step) {
                k.k1 = -(double)t->last_step;
                k.k2 = isnan(t->last_value) ? INFINITY : maximize ? -t->last_value : t->last_value;
            }
            prun[np++] = k;
        } else if (t->state == HPO_RUNNING && cfg->constant_liar) {
            run[nr++] = i;
        }
    }
    int nb = hpo_tpe_gamma(cfg->gamma, nc + np);
    qsort(comp, (size_t)nc, sizeof(Key), cmp_key);
    qsort(prun, (size_t)np, sizeof(Key), cmp_key);
    int bc = MIN(nb, nc);
    nb = MAX(0, nb - bc);
    int bp = MIN(nb, np);
    *n_below = *n_above = 0;
    for (int i = 0; i < nc; i++) {
        if (i < bc)
            below[(*n_below)++] = comp[i].idx;
        else
            above[(*n_above)++] = comp[i].idx;
    }
    for (int i = 0; i < np; i++) {
        if (i < bp)
            below[(*n_below)++] = prun[i].idx;
        else
            above[(*n_above)++] = prun[i].idx;
    }
    for (int i = 0; i < nr; i++)
        above[(*n_above)++] = run[i];
    sort_by_number(trials, below, *n_below);
    sort_by_number(trials, above, *n_above);
    free(comp);
    free(prun);
    free(run);
}

// Observation matrix (rows of trials that have every sub-space parameter).
static double *gather(const HpoSpace *sub, const int *cols, const HpoTpeTrial *trials,
                      const int *idx, int n, int *n_obs) {
    double *obs = xmalloc((size_t)(n + 1) * (size_t)(sub->n + 1) * sizeof(double));
    int m = 0;
    for (int i = 0; i < n; i++) {
        const double *p = trials[idx[i]].params;
        bool ok = p != NULL;
        for (int j = 0; ok && j < sub->n; j++)
            ok = !isnan(p[cols[j]]);
        if (!ok) continue;
        for (int j = 0; j < sub->n; j++)
            obs[(size_t)m * sub->n + j] = p[cols[j]];
        m++;
    }
    *n_obs = m;
    return obs;
}

void hpo_tpe_build(const HpoTpeConfig *cfg, const HpoSpace *sub, const int *cols,
                   const HpoTpeTrial *trials, const int *below, int n_below, const int *above,
                   int n_above, HpoParzen *l, HpoParzen *g) {
    int nl, ng;
    double *ol = gather(sub, cols, trials, below, n_below, &nl);
    double *og = gather(sub, cols, trials, above, n_above, &ng);
    hpo_parzen_build(l, sub, ol, nl, NULL, &cfg->parzen);
    hpo_parzen_build(g, sub, og, ng, NULL, &cfg->parzen);
    free(ol);
    free(og);
}

int hpo_tpe_pick(const HpoParzen *l, const HpoParzen *g, const double *cand, int n, double *acq) {
    double *lg = xmalloc((size_t)n * sizeof(double));
    hpo_parzen_log_pdf(l, cand, n, acq);
    hpo_parzen_log_pdf(g, cand, n, lg);
    int best = 0;
    for (int i = 0; i < n; i++) {
        acq[i] -= lg[i];
        // np.argmax: first maximum; NaN wins as in numpy
        if (isnan(acq[best])) continue;
        if (isnan(acq[i]) || acq[i] > acq[best]) best = i;
    }
    free(lg);
    return best;
}

double hpo_random_sample(const HpoDist *d, Rng *rng) {
    if (d->kind == HPO_DIST_CATEGORICAL) return (double)rng_below(rng, (uint64_t)d->n_choices);
    if (d->step != 0 && !d->log) {
        uint64_t cells = (uint64_t)llround((d->high - d->low) / d->step) + 1;
        double v = d->low + (double)rng_below(rng, cells) * d->step;
        return v > d->high ? d->high : v;
    }
    if (d->log) {
        double lo = d->low, hi = d->high;
        if (d->kind == HPO_DIST_INT) {
            lo -= 0.5;
            hi += 0.5;
        }
        double v = exp(log(lo) + rng_uniform(rng) * (log(hi) - log(lo)));
        if (d->kind == HPO_DIST_INT) v = nearbyint(v);
        return v < d->low ? d->low : v > d->high ? d->high : v;
    }
    double v = d->low + rng_uniform(rng) * (d->high - d->low);
    return v > d->high ? d->high : v;
}

// One TPE draw over sub-space `sub` (columns cols of the full space); writes sub->n values.
static void tpe_sample(const HpoTpeConfig *cfg, const HpoSpace *sub, const int *cols, bool maximize,
                       const HpoTpeTrial *trials, int n, int current, Rng *rng, double *out) {
    int *below = xmalloc((size_t)(n + 1) * sizeof(int));
    int *above = xmalloc((size_t)(n + 1) * sizeof(int));
    int nb, na;
    hpo_tpe_split(cfg, maximize, trials, n, current, below, &nb, above, &na);
    HpoParzen l, g;
    hpo_tpe_build(cfg, sub, cols, trials, below, nb, above, na, &l, &g);
    int nc = cfg->n_ei_candidates;
    double *cand = xmalloc((size_t)nc * (size_t)sub->n * sizeof(double));
    double *acq = xmalloc((size_t)nc * sizeof(double));
    hpo_parzen_sample(&l, rng, nc, cand);
    int best = hpo_tpe_pick(&l, &g, cand, nc, acq);
    memcpy(out, cand + (size_t)best * sub->n, (size_t)sub->n * sizeof(double));
    hpo_parzen_release(&l);
    hpo_parzen_release(&g);
    free(cand);
    free(acq);
    free(below);
    free(above);
}

Status hpo_tpe_suggest(const HpoTpeConfig *cfg, const HpoSpace *sp, bool maximize,
                       const HpoTpeTrial *trials, int n, int current_number, Rng *rng,
                       double *out) {
    if (cfg->n_ei_candidates < 1 || cfg->n_startup_trials < 0 || cfg->parzen.prior_weight < 0)
        return fail(STATUS_ERR_ARG, "tpe: n_ei_candidates >= 1, n_startup_trials >= 0 and "
                                    "prior_weight >= 0 are required");
    int finished = 0;
    for (int i = 0; i < n; i++)
        if (trials[i].state == HPO_COMPLETE || trials[i].state == HPO_PRUNED) finished++;
    bool startup = finished < cfg->n_startup_trials;
    bool *done = xcalloc((size_t)sp->n + 1, sizeof(bool));
    for (int p = 0; p < sp->n; p++) {
        if (hpo_dist_single(&sp->params[p].dist)) {
            out[p] = sp->params[p].dist.kind == HPO_DIST_CATEGORICAL ? 0 : sp->params[p].dist.low;
            done[p] = true;
        }
    }
    if (cfg->multivariate && !startup) {
        // relative space: parameters every finished trial has with this distribution
        HpoSpace sub = {xcalloc((size_t)sp->n + 1, sizeof(HpoParam)), 0};
        int *cols = xmalloc((size_t)(sp->n + 1) * sizeof(int));
        for (int p = 0; p < sp->n; p++) {
            if (done[p]) continue;
            bool all = finished > 0;
            for (int i = 0; i < n && all; i++)
                if (trials[i].state == HPO_COMPLETE || trials[i].state == HPO_PRUNED)
                    all = trials[i].params && !isnan(trials[i].params[p]);
            if (!all) continue;
            sub.params[sub.n] = sp->params[p]; // shallow: borrowed for this call
            cols[sub.n++] = p;
        }
        if (sub.n > 0) {
            double *v = xmalloc((size_t)sub.n * sizeof(double));
            tpe_sample(cfg, &sub, cols, maximize, trials, n, current_number, rng, v);
            for (int j = 0; j < sub.n; j++) {
                out[cols[j]] = v[j];
                done[cols[j]] = true;
            }
            free(v);
        }
        free(sub.params);
        free(cols);
    }
    for (int p = 0; p < sp->n; p++) {
        if (done[p]) continue;
        if (startup) {
            out[p] = hpo_random_sample(&sp->params[p].dist, rng);
        } else {
            HpoSpace one = {&sp->params[p], 1};
            tpe_sample(cfg, &one, &p, maximize, trials, n, current_number, rng, &out[p]);
        }
    }
    free(done);
    return STATUS_OK;
}
