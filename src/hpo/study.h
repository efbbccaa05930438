/*
 * study.h - studies on a journal store: create/load, ask (claim a trial and sample it with
 * TPE), report, tell, heartbeats and recovery of trials whose worker died.
 *
 *   HpoJournalStore *js;  hpo_journal_open(&js, "journal:tune.log");
 *   int sid;              hpo_study_open(js, "paper", false, true, &sid);
 *   HpoAskOptions o = hpo_ask_default_options();  o.max_trials = 16;
 *   HpoAsk a;
 *   while (hpo_study_ask(js, sid, &space, &cfg, &rng, &o, &a) == STATUS_OK && a.trial_id >= 0) {
 *       ... run the objective with a.params (internal values, space order) ...
 *       hpo_trial_report(js, a.trial_id, step, value);    // intermediate values
 *       hpo_trial_tell(js, a.trial_id, HPO_COMPLETE, value);
 *   }
 *
 * Budget: ask creates a trial only while COMPLETE + PRUNED + RUNNING + WAITING trials number
 * fewer than max_trials; the count and the CREATE_TRIAL happen under the journal lock, so
 * concurrent workers neither overshoot nor duplicate. FAIL trials do not count (they are
 * retried or replaced).
 *
 * Liveness: our RUNNING trials carry system attrs "edgeforge:worker" {host, pid} and
 * "edgeforge:heartbeat" (unix seconds). ask() first fails RUNNING trials whose worker is gone
 * (same host and the pid no longer exists, or no heartbeat for grace_s) and, like Optuna's
 * RetryFailedTrialCallback, enqueues a WAITING copy of the parameters with system attrs
 * "failed_trial" and "retry_history"; WAITING trials are claimed before new ones are created.
 */
#ifndef EF_HPO_STUDY_H
#define EF_HPO_STUDY_H

#include <stdbool.h>

#include "core/rng.h"
#include "hpo/journal.h"
#include "hpo/space.h"
#include "hpo/tpe.h"

// Finds study `name` or (create=true) creates it with one direction. A study found with a
// different direction is an error.
Status hpo_study_open(HpoJournalStore *js, const char *name, bool maximize, bool create,
                      int *study_id);

typedef struct {
    int max_trials;  // budget over the whole study (all workers); <= 0: unlimited
    int max_retries; // retries of a trial whose worker died (default 1)
    double grace_s;  // heartbeat age that marks a RUNNING trial dead (default 120)
    bool fail_stale; // run the recovery before asking (default true)
} HpoAskOptions;

HpoAskOptions hpo_ask_default_options(void);

typedef struct {
    int trial_id; // -1: the budget is used up
    int number;
    bool retried;   // claimed a WAITING trial (its parameters were fixed)
    double *params; // (space n) internal values; owned, free with hpo_ask_release
} HpoAsk;

void hpo_ask_release(HpoAsk *a);

// Claims the next trial of the study and sets its parameters (TPE or the WAITING trial's).
Status hpo_study_ask(HpoJournalStore *js, int study_id, const HpoSpace *sp, const HpoTpeConfig *cfg,
                     Rng *rng, const HpoAskOptions *o, HpoAsk *a);

// Intermediate value at step (Optuna's trial.report). NaN/Inf are rejected.
Status hpo_trial_report(HpoJournalStore *js, int trial_id, int64_t step, double value);
// Finishes a trial. value is used for COMPLETE only (must be finite).
Status hpo_trial_tell(HpoJournalStore *js, int trial_id, HpoTrialState state, double value);
// Writes "edgeforge:heartbeat" = now.
Status hpo_trial_heartbeat(HpoJournalStore *js, int trial_id);
Status hpo_trial_set_user_attr(HpoJournalStore *js, int trial_id, const char *key, json_t *v);

// Fails RUNNING trials of the study whose worker is gone and enqueues retries (see above).
// Caller may hold the lock. *n_failed (may be NULL) gets the count.
Status hpo_study_recover(HpoJournalStore *js, int study_id, const HpoAskOptions *o, int *n_failed);

// Converts the study's trials into TPE records over sp (NaN where a trial lacks a parameter
// or has it with another distribution). *vals is (n, sp->n); caller frees both.
void hpo_study_tpe_trials(const HpoJournal *j, int study_id, const HpoSpace *sp,
                          HpoTpeTrial **trials, double **vals, int *n);

// The study's trials as JSON {"study", "direction", "trials": [{number, state, value,
// params (internal), distributions, intermediate, user_attrs}]} (what
// tools/check_optuna_journal.py compares with Optuna's view). Caller decrefs.
json_t *hpo_study_to_json(const HpoJournal *j, int study_id);

// The best COMPLETE trial id, -1 if none.
int hpo_study_best_trial(const HpoJournal *j, int study_id);

#endif
