/*
 * study.c - ask/tell on a journal store, heartbeats and recovery (see study.h).
 */
#include "hpo/study.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "core/common.h"
#include "core/log.h"

static double unix_now(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec * 1e-6;
}

static void host_name(char *buf, size_t cap) {
    if (gethostname(buf, cap) != 0) snprintf(buf, cap, "unknown");
    buf[cap - 1] = 0;
}

Status hpo_study_open(HpoJournalStore *js, const char *name, bool maximize, bool create,
                      int *study_id) {
    Status s = hpo_journal_sync(js);
    if (s != STATUS_OK) return s;
    const HpoStudy *st = hpo_journal_find_study(hpo_journal_state(js), name);
    if (!st && !create) return fail(STATUS_ERR_ARG, "study '%s' does not exist", name);
    if (!st) {
        s = hpo_journal_lock(js);
        if (s != STATUS_OK) return s;
        s = hpo_journal_sync(js);
        st = s == STATUS_OK ? hpo_journal_find_study(hpo_journal_state(js), name) : NULL;
        if (s == STATUS_OK && !st) {
            json_t *log = hpo_log_new(HPO_OP_CREATE_STUDY);
            json_object_set_new(log, "study_name", json_string(name));
            json_t *dirs = json_array();
            json_array_append_new(dirs,
                                  json_integer(maximize ? HPO_DIR_MAXIMIZE : HPO_DIR_MINIMIZE));
            json_object_set_new(log, "directions", dirs);
            s = hpo_journal_append(js, &log, 1);
            st = s == STATUS_OK ? hpo_journal_find_study(hpo_journal_state(js), name) : NULL;
        }
        hpo_journal_unlock(js);
        if (s != STATUS_OK) return s;
        if (!st) return fail(STATUS_ERR_IO, "study '%s' was not created", name);
    }
    if (st->n_directions != 1)
        return fail(STATUS_ERR_UNSUPPORTED, "study '%s' has %d objectives; edgeforge tunes one",
                    name, st->n_directions);
    int want = maximize ? HPO_DIR_MAXIMIZE : HPO_DIR_MINIMIZE;
    if (st->directions[0] != want)
        return fail(STATUS_ERR_ARG, "study '%s' exists with direction %s", name,
                    st->directions[0] == HPO_DIR_MAXIMIZE ? "maximize" : "minimize");
    *study_id = st->study_id;
    return STATUS_OK;
}

HpoAskOptions hpo_ask_default_options(void) {
    HpoAskOptions o = {0, 1, 120.0, true};
    return o;
}

void hpo_ask_release(HpoAsk *a) {
    free(a->params);
    memset(a, 0, sizeof(*a));
    a->trial_id = -1;
}

static json_t *worker_attrs(void) {
    char host[256];
    host_name(host, sizeof(host));
    json_t *sa = json_object();
    json_t *w = json_object();
    json_object_set_new(w, "host", json_string(host));
    json_object_set_new(w, "pid", json_integer(getpid()));
    json_object_set_new(sa, "edgeforge:worker", w);
    json_object_set_new(sa, "edgeforge:heartbeat", json_real(unix_now()));
    return sa;
}

static json_t *sys_attr_log(int trial_id, const char *key, json_t *v) {
    json_t *log = hpo_log_new(HPO_OP_SET_TRIAL_SYSTEM_ATTR);
    json_object_set_new(log, "trial_id", json_integer(trial_id));
    json_t *a = json_object();
    json_object_set_new(a, key, v);
    json_object_set_new(log, "system_attr", a);
    return log;
}

static json_t *state_log(int trial_id, HpoTrialState state, double value) {
    json_t *log = hpo_log_new(HPO_OP_SET_TRIAL_STATE_VALUES);
    char ts[64];
    hpo_iso_now(ts, sizeof(ts));
    json_object_set_new(log, "trial_id", json_integer(trial_id));
    json_object_set_new(log, "state", json_integer(state));
    if (state == HPO_COMPLETE) {
        json_t *vals = json_array();
        json_array_append_new(vals, json_real(value));
        json_object_set_new(log, "values", vals);
    } else {
        json_object_set_new(log, "values", json_null());
    }
    if (state == HPO_RUNNING)
        json_object_set_new(log, "datetime_start", json_string(ts));
    else
        json_object_set_new(log, "datetime_complete", json_string(ts));
    return log;
}

// Is the worker of a RUNNING trial gone?
static bool trial_dead(const HpoTrial *t, const HpoAskOptions *o, const char *host, double now) {
    json_t *w = json_object_get(t->system_attrs, "edgeforge:worker");
    json_t *hb = json_object_get(t->system_attrs, "edgeforge:heartbeat");
    if (!json_is_object(w)) return false; // not ours (an Optuna worker): leave it alone
    json_t *h = json_object_get(w, "host"), *p = json_object_get(w, "pid");
    if (json_is_string(h) && json_is_integer(p) && strcmp(json_string_value(h), host) == 0) {
        pid_t pid = (pid_t)json_integer_value(p);
        if (pid > 0 && kill(pid, 0) != 0 && errno == ESRCH) return true;
    }
    return json_is_number(hb) && now - json_number_value(hb) > o->grace_s;
}

Status hpo_study_recover(HpoJournalStore *js, int study_id, const HpoAskOptions *o, int *n_failed) {
    if (n_failed) *n_failed = 0;
    const HpoJournal *j = hpo_journal_state(js);
    if (study_id < 0 || study_id >= j->n_studies)
        return fail(STATUS_ERR_ARG, "no study %d", study_id);
    char host[256];
    host_name(host, sizeof(host));
    double now = unix_now();
    const HpoStudy *st = &j->studies[study_id];
    int n_logs = 0, cap = 8, nf = 0;
    json_t **logs = xcalloc((size_t)cap, sizeof(json_t *));
    for (int i = 0; i < st->n_trials; i++) {
        const HpoTrial *t = &j->trials[st->trial_ids[i]];
        if (t->state != HPO_RUNNING || !trial_dead(t, o, host, now)) continue;
        if (n_logs + 2 > cap) {
            cap *= 2;
            logs = xrealloc(logs, (size_t)cap * sizeof(json_t *));
        }
        log_warn("trial %d: worker is gone; marking it failed", t->number);
        logs[n_logs++] = state_log(t->trial_id, HPO_FAIL, NAN);
        nf++;
        // Retry like optuna.storages.RetryFailedTrialCallback: a WAITING copy of the params.
        json_t *hist = json_object_get(t->system_attrs, "retry_history");
        int n_hist = json_is_array(hist) ? (int)json_array_size(hist) : 0;
        if (n_hist >= o->max_retries) continue;
        json_t *sa = json_object();
        json_t *orig = json_object_get(t->system_attrs, "failed_trial");
        json_object_set_new(sa, "failed_trial",
                            json_is_integer(orig) ? json_copy(orig) : json_integer(t->number));
        json_t *nh = json_is_array(hist) ? json_deep_copy(hist) : json_array();
        json_array_append_new(nh, json_integer(t->number));
        json_object_set_new(sa, "retry_history", nh);
        json_t *log = hpo_log_new(HPO_OP_CREATE_TRIAL);
        json_object_set_new(log, "study_id", json_integer(study_id));
        json_object_set_new(log, "datetime_start", json_null());
        json_object_set_new(log, "state", json_integer(HPO_WAITING));
        json_object_set_new(log, "value", json_null());
        json_object_set_new(log, "values", json_null());
        json_t *dists = json_object(), *params = json_object();
        for (int p = 0; p < t->n_params; p++) {
            char *dj = hpo_dist_to_json(&t->params[p].dist);
            json_object_set_new(dists, t->params[p].name, json_string(dj));
            free(dj);
            json_object_set_new(params, t->params[p].name, json_real(t->params[p].value));
        }
        json_object_set_new(log, "distributions", dists);
        json_object_set_new(log, "params", params);
        json_object_set_new(log, "user_attrs", json_object());
        json_object_set_new(log, "system_attrs", sa);
        json_object_set_new(log, "intermediate_values", json_object());
        logs[n_logs++] = log;
    }
    Status s = n_logs ? hpo_journal_append(js, logs, n_logs) : STATUS_OK;
    free(logs);
    if (n_failed) *n_failed = nf;
    return s;
}

// Fills NaN entries of row from an object {name: external value} (Optuna's fixed_params of
// enqueued trials and the relative params of running ones).
static void fill_external(json_t *o, const HpoSpace *sp, double *row) {
    if (!json_is_object(o)) return;
    for (int p = 0; p < sp->n; p++) {
        if (!isnan(row[p])) continue;
        json_t *v = json_object_get(o, sp->params[p].name);
        if (!v) continue;
        const HpoDist *d = &sp->params[p].dist;
        if (d->kind == HPO_DIST_CATEGORICAL) {
            char *txt = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(17));
            for (int c = 0; txt && c < d->n_choices; c++)
                if (strcmp(txt, d->choices_json[c]) == 0) row[p] = c;
            free(txt);
        } else if (json_is_number(v) && hpo_dist_contains(d, json_number_value(v))) {
            row[p] = json_number_value(v);
        }
    }
}

// Optuna's multivariate TPE shares a RUNNING trial's sampled point through the system attrs
// "tpe:relative_params:<i>" (JSON chunks) before the params are set: read them for the liar.
static void relative_params(const HpoTrial *t, const HpoSpace *sp, double *row) {
    size_t total = 0;
    char *buf = NULL;
    for (int i = 0;; i++) {
        char key[64];
        snprintf(key, sizeof(key), "tpe:relative_params:%d", i);
        json_t *v = json_object_get(t->system_attrs, key);
        if (!json_is_string(v)) break;
        size_t l = strlen(json_string_value(v));
        buf = xrealloc(buf, total + l + 1);
        memcpy(buf + total, json_string_value(v), l + 1);
        total += l;
    }
    if (!buf) return;
    json_t *o = json_loads(buf, 0, NULL);
    free(buf);
    fill_external(o, sp, row);
    json_decref(o);
}

void hpo_study_tpe_trials(const HpoJournal *j, int study_id, const HpoSpace *sp,
                          HpoTpeTrial **trials, double **vals, int *n) {
    const HpoStudy *st = &j->studies[study_id];
    int m = st->n_trials;
    HpoTpeTrial *tr = xcalloc((size_t)m + 1, sizeof(HpoTpeTrial));
    double *v = xmalloc(((size_t)m + 1) * (size_t)(sp->n + 1) * sizeof(double));
    for (int i = 0; i < m; i++) {
        const HpoTrial *t = &j->trials[st->trial_ids[i]];
        double *row = v + (size_t)i * sp->n;
        for (int p = 0; p < sp->n; p++) {
            const HpoTrialParam *tp = hpo_trial_param(t, sp->params[p].name);
            // a value outside its distribution (a hand-edited journal) counts as absent
            row[p] = tp && hpo_dist_equal(&tp->dist, &sp->params[p].dist) &&
                             hpo_dist_contains(&sp->params[p].dist, tp->value)
                         ? tp->value
                         : NAN;
        }
        if (t->state == HPO_RUNNING) relative_params(t, sp, row);
        tr[i].number = t->number;
        tr[i].state = t->state;
        tr[i].value = t->n_values > 0 ? t->values[0] : NAN;
        tr[i].has_last_step = hpo_trial_last_step(t, &tr[i].last_step, &tr[i].last_value);
        tr[i].params = row;
    }
    *trials = tr;
    *vals = v;
    *n = m;
}

int hpo_study_best_trial(const HpoJournal *j, int study_id) {
    const HpoStudy *st = &j->studies[study_id];
    bool maximize = st->directions[0] == HPO_DIR_MAXIMIZE;
    int best = -1;
    for (int i = 0; i < st->n_trials; i++) {
        const HpoTrial *t = &j->trials[st->trial_ids[i]];
        if (t->state != HPO_COMPLETE || t->n_values < 1) continue;
        if (best < 0)
            best = t->trial_id;
        else {
            double a = t->values[0], b = j->trials[best].values[0];
            if (maximize ? a > b : a < b) best = t->trial_id;
        }
    }
    return best;
}

Status hpo_study_ask(HpoJournalStore *js, int study_id, const HpoSpace *sp, const HpoTpeConfig *cfg,
                     Rng *rng, const HpoAskOptions *o, HpoAsk *a) {
    memset(a, 0, sizeof(*a));
    a->trial_id = -1;
    Status s = hpo_journal_lock(js);
    if (s != STATUS_OK) return s;
    s = hpo_journal_sync(js);
    if (s == STATUS_OK && o->fail_stale) s = hpo_study_recover(js, study_id, o, NULL);
    int waiting = -1;
    if (s == STATUS_OK) {
        const HpoJournal *j = hpo_journal_state(js);
        const HpoStudy *st = &j->studies[study_id];
        int active = 0;
        for (int i = 0; i < st->n_trials; i++) {
            HpoTrialState ts = j->trials[st->trial_ids[i]].state;
            if (ts != HPO_FAIL) active++;
            if (ts == HPO_WAITING && waiting < 0) waiting = st->trial_ids[i];
        }
        if (waiting >= 0) {
            // claim the oldest WAITING trial (Optuna's pop_waiting_trial)
            json_t *logs[2];
            logs[0] = state_log(waiting, HPO_RUNNING, NAN);
            json_t *wa = worker_attrs();
            logs[1] = sys_attr_log(waiting, "edgeforge:worker",
                                   json_incref(json_object_get(wa, "edgeforge:worker")));
            json_decref(wa);
            s = hpo_journal_append(js, logs, 2);
            if (s == STATUS_OK) {
                s = hpo_trial_heartbeat(js, waiting);
                a->trial_id = waiting;
                a->retried = true;
            }
        } else if (o->max_trials <= 0 || active < o->max_trials) {
            json_t *log = hpo_log_new(HPO_OP_CREATE_TRIAL);
            char ts[64];
            hpo_iso_now(ts, sizeof(ts));
            json_object_set_new(log, "study_id", json_integer(study_id));
            json_object_set_new(log, "datetime_start", json_string(ts));
            json_object_set_new(log, "system_attrs", worker_attrs());
            s = hpo_journal_append(js, &log, 1);
            if (s == STATUS_OK) a->trial_id = hpo_journal_state(js)->last_created_trial_id;
        }
    }
    hpo_journal_unlock(js);
    if (s != STATUS_OK || a->trial_id < 0) return s;

    const HpoJournal *j = hpo_journal_state(js);
    const HpoTrial *me = hpo_journal_trial(j, a->trial_id);
    a->number = me->number;
    a->params = xmalloc((size_t)(sp->n + 1) * sizeof(double));
    bool need_sampling = false;
    for (int p = 0; p < sp->n; p++) {
        const HpoTrialParam *tp = hpo_trial_param(me, sp->params[p].name);
        a->params[p] = tp && hpo_dist_equal(&tp->dist, &sp->params[p].dist) &&
                               hpo_dist_contains(&sp->params[p].dist, tp->value)
                           ? tp->value
                           : NAN;
    }
    // an enqueued trial (Optuna's enqueue_trial) carries its values in "fixed_params"
    fill_external(json_object_get(me->system_attrs, "fixed_params"), sp, a->params);
    for (int p = 0; p < sp->n; p++)
        if (isnan(a->params[p])) need_sampling = true;
    if (need_sampling) {
        HpoTpeTrial *tr;
        double *vals;
        int n;
        hpo_study_tpe_trials(j, study_id, sp, &tr, &vals, &n);
        double *x = xmalloc((size_t)(sp->n + 1) * sizeof(double));
        bool maximize = j->studies[study_id].directions[0] == HPO_DIR_MAXIMIZE;
        s = hpo_tpe_suggest(cfg, sp, maximize, tr, n, a->number, rng, x);
        for (int p = 0; p < sp->n && s == STATUS_OK; p++)
            if (isnan(a->params[p])) a->params[p] = x[p];
        free(x);
        free(tr);
        free(vals);
    }
    if (s == STATUS_OK) {
        json_t **logs = xcalloc((size_t)sp->n + 1, sizeof(json_t *));
        int nl = 0;
        for (int p = 0; p < sp->n; p++) {
            if (hpo_trial_param(me, sp->params[p].name)) continue;
            json_t *log = hpo_log_new(HPO_OP_SET_TRIAL_PARAM);
            json_object_set_new(log, "trial_id", json_integer(a->trial_id));
            json_object_set_new(log, "param_name", json_string(sp->params[p].name));
            json_object_set_new(log, "param_value_internal", json_real(a->params[p]));
            char *dj = hpo_dist_to_json(&sp->params[p].dist);
            json_object_set_new(log, "distribution", json_string(dj));
            free(dj);
            logs[nl++] = log;
        }
        s = nl ? hpo_journal_append(js, logs, nl) : STATUS_OK;
        free(logs);
    }
    if (s != STATUS_OK) {
        // the trial must not stay RUNNING forever
        Status s2 = hpo_trial_tell(js, a->trial_id, HPO_FAIL, NAN);
        (void)s2;
        int tid = a->trial_id;
        hpo_ask_release(a);
        return fail_context(s, "trial id %d", tid);
    }
    return STATUS_OK;
}

Status hpo_trial_report(HpoJournalStore *js, int trial_id, int64_t step, double value) {
    if (!isfinite(value))
        return fail(STATUS_ERR_ARG, "intermediate value at step %lld is not finite",
                    (long long)step);
    if (step < 0) return fail(STATUS_ERR_ARG, "step %lld is negative", (long long)step);
    json_t *log = hpo_log_new(HPO_OP_SET_TRIAL_INTERMEDIATE_VALUE);
    json_object_set_new(log, "trial_id", json_integer(trial_id));
    json_object_set_new(log, "step", json_integer(step));
    json_object_set_new(log, "intermediate_value", json_real(value));
    return hpo_journal_append(js, &log, 1);
}

Status hpo_trial_tell(HpoJournalStore *js, int trial_id, HpoTrialState state, double value) {
    if (state == HPO_COMPLETE && !isfinite(value))
        return fail(STATUS_ERR_ARG, "objective value %g is not finite", value);
    if (state != HPO_COMPLETE && state != HPO_PRUNED && state != HPO_FAIL)
        return fail(STATUS_ERR_ARG, "tell needs COMPLETE, PRUNED or FAIL");
    json_t *log = state_log(trial_id, state, value);
    return hpo_journal_append(js, &log, 1);
}

Status hpo_trial_heartbeat(HpoJournalStore *js, int trial_id) {
    json_t *log = sys_attr_log(trial_id, "edgeforge:heartbeat", json_real(unix_now()));
    return hpo_journal_append(js, &log, 1);
}

Status hpo_trial_set_user_attr(HpoJournalStore *js, int trial_id, const char *key, json_t *v) {
    json_t *log = hpo_log_new(HPO_OP_SET_TRIAL_USER_ATTR);
    json_object_set_new(log, "trial_id", json_integer(trial_id));
    json_t *a = json_object();
    json_object_set_new(a, key, v);
    json_object_set_new(log, "user_attr", a);
    return hpo_journal_append(js, &log, 1);
}

json_t *hpo_study_to_json(const HpoJournal *j, int study_id) {
    const HpoStudy *st = &j->studies[study_id];
    json_t *root = json_object();
    json_object_set_new(root, "study", json_string(st->name));
    json_object_set_new(
        root, "direction",
        json_string(st->directions[0] == HPO_DIR_MAXIMIZE ? "maximize" : "minimize"));
    json_t *arr = json_array();
    for (int i = 0; i < st->n_trials; i++) {
        const HpoTrial *t = &j->trials[st->trial_ids[i]];
        json_t *o = json_object();
        json_object_set_new(o, "number", json_integer(t->number));
        json_object_set_new(o, "state", json_integer(t->state));
        json_object_set_new(o, "value",
                            t->n_values == 1 && isfinite(t->values[0]) ? json_real(t->values[0])
                                                                       : json_null());
        json_t *ps = json_object(), *ds = json_object(), *iv = json_object();
        for (int p = 0; p < t->n_params; p++) {
            json_object_set_new(ps, t->params[p].name, json_real(t->params[p].value));
            char *dj = hpo_dist_to_json(&t->params[p].dist);
            json_object_set_new(ds, t->params[p].name, json_loads(dj, 0, NULL));
            free(dj);
        }
        for (int k = 0; k < t->n_inter; k++) {
            char key[32];
            snprintf(key, sizeof(key), "%lld", (long long)t->inter_steps[k]);
            json_object_set_new(iv, key,
                                isfinite(t->inter_values[k]) ? json_real(t->inter_values[k])
                                                             : json_null());
        }
        json_object_set_new(o, "params", ps);
        json_object_set_new(o, "distributions", ds);
        json_object_set_new(o, "intermediate", iv);
        json_object_set_new(o, "user_attrs", json_incref(t->user_attrs));
        json_array_append_new(arr, o);
    }
    json_object_set_new(root, "trials", arr);
    return root;
}
