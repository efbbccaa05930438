/*
 * journal.c - replay of Optuna journal logs, the file backend with Optuna's lock files, and
 * the store that ties a backend to the replayed state (see journal.h).
 */
#include "hpo/journal.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "core/common.h"
#include "core/log.h"
#include "hpo/redis_journal.h"

// ---- replay ------------------------------------------------------------------------------

void hpo_journal_init(HpoJournal *j, const char *worker_id) {
    memset(j, 0, sizeof(*j));
    snprintf(j->worker_id, sizeof(j->worker_id), "%s", worker_id);
    j->last_created_trial_id = -1;
    j->owned_trial_id = -1;
}

static void trial_release(HpoTrial *t) {
    for (int i = 0; i < t->n_params; i++) {
        free(t->params[i].name);
        hpo_dist_release(&t->params[i].dist);
    }
    free(t->params);
    free(t->values);
    free(t->inter_steps);
    free(t->inter_values);
    json_decref(t->user_attrs);
    json_decref(t->system_attrs);
    free(t->datetime_start);
    free(t->datetime_complete);
}

void hpo_journal_release(HpoJournal *j) {
    for (int i = 0; i < j->n_studies; i++) {
        HpoStudy *s = &j->studies[i];
        free(s->name);
        free(s->directions);
        json_decref(s->user_attrs);
        json_decref(s->system_attrs);
        free(s->trial_ids);
    }
    free(j->studies);
    for (int i = 0; i < j->n_trials; i++)
        trial_release(&j->trials[i]);
    free(j->trials);
    memset(j, 0, sizeof(*j));
}

const HpoStudy *hpo_journal_find_study(const HpoJournal *j, const char *name) {
    for (int i = 0; i < j->n_studies; i++)
        if (!j->studies[i].deleted && strcmp(j->studies[i].name, name) == 0) return &j->studies[i];
    return NULL;
}

const HpoTrial *hpo_journal_trial(const HpoJournal *j, int id) {
    return id >= 0 && id < j->n_trials ? &j->trials[id] : NULL;
}

const HpoTrialParam *hpo_trial_param(const HpoTrial *t, const char *name) {
    for (int i = 0; i < t->n_params; i++)
        if (strcmp(t->params[i].name, name) == 0) return &t->params[i];
    return NULL;
}

bool hpo_trial_last_step(const HpoTrial *t, int64_t *step, double *value) {
    if (t->n_inter == 0) return false;
    int best = 0;
    for (int i = 1; i < t->n_inter; i++)
        if (t->inter_steps[i] > t->inter_steps[best]) best = i;
    *step = t->inter_steps[best];
    *value = t->inter_values[best];
    return true;
}

static bool is_finished(HpoTrialState s) {
    return s == HPO_COMPLETE || s == HPO_PRUNED || s == HPO_FAIL;
}

// Python's json writes NaN/Infinity bare; they reach us as marker strings (see sanitize_line).
static bool get_number(json_t *v, double *out) {
    if (json_is_number(v)) {
        *out = json_number_value(v);
        return true;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if (strcmp(s, "\x01NaN") == 0)
            *out = NAN;
        else if (strcmp(s, "\x01Infinity") == 0)
            *out = INFINITY;
        else if (strcmp(s, "\x01-Infinity") == 0)
            *out = -INFINITY;
        else
            return false;
        return true;
    }
    return false;
}

static bool get_int(json_t *o, const char *key, long long *out) {
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v)) return false;
    *out = json_integer_value(v);
    return true;
}

static bool is_own(const HpoJournal *j, json_t *log) {
    json_t *w = json_object_get(log, "worker_id");
    return json_is_string(w) && strcmp(json_string_value(w), j->worker_id) == 0;
}

static bool study_exists(const HpoJournal *j, long long id) {
    return id >= 0 && id < j->n_studies && !j->studies[id].deleted;
}

// Optuna skips other workers' logs that cannot apply; ours must apply.
static Status skip_or_fail(const HpoJournal *j, json_t *log, const char *why) {
    if (is_own(j, log)) return fail(STATUS_ERR_ARG, "journal: own operation failed: %s", why);
    return STATUS_OK;
}

static Status attr_merge(json_t *dst, json_t *log, const char *key) {
    json_t *a = json_object_get(log, key);
    if (!json_is_object(a) || json_object_size(a) != 1)
        return fail(STATUS_ERR_FORMAT, "journal: '%s' must be an object with one key", key);
    json_object_update(dst, a);
    return STATUS_OK;
}

static Status set_param(HpoTrial *t, const char *name, const HpoDist *d, double v) {
    for (int i = 0; i < t->n_params; i++) {
        if (strcmp(t->params[i].name, name) == 0) {
            hpo_dist_release(&t->params[i].dist);
            hpo_dist_copy(&t->params[i].dist, d);
            t->params[i].value = v;
            return STATUS_OK;
        }
    }
    t->params = xrealloc(t->params, (size_t)(t->n_params + 1) * sizeof(HpoTrialParam));
    t->params[t->n_params].name = xstrdup(name);
    hpo_dist_copy(&t->params[t->n_params].dist, d);
    t->params[t->n_params].value = v;
    t->n_params++;
    return STATUS_OK;
}

static void set_inter(HpoTrial *t, int64_t step, double v) {
    for (int i = 0; i < t->n_inter; i++)
        if (t->inter_steps[i] == step) {
            t->inter_values[i] = v;
            return;
        }
    t->inter_steps = xrealloc(t->inter_steps, (size_t)(t->n_inter + 1) * sizeof(int64_t));
    t->inter_values = xrealloc(t->inter_values, (size_t)(t->n_inter + 1) * sizeof(double));
    t->inter_steps[t->n_inter] = step;
    t->inter_values[t->n_inter] = v;
    t->n_inter++;
}

static Status set_values(HpoTrial *t, json_t *vals) {
    if (json_is_null(vals) || !vals) return STATUS_OK;
    if (!json_is_array(vals)) return fail(STATUS_ERR_FORMAT, "journal: 'values' must be a list");
    int n = (int)json_array_size(vals);
    double *v = xcalloc((size_t)n + 1, sizeof(double));
    for (int i = 0; i < n; i++)
        if (!get_number(json_array_get(vals, (size_t)i), &v[i])) {
            free(v);
            return fail(STATUS_ERR_FORMAT, "journal: 'values' must hold numbers");
        }
    free(t->values);
    t->values = v;
    t->n_values = n;
    return STATUS_OK;
}

static Status dist_of(json_t *v, HpoDist *d, const char *name) {
    // the distribution is a JSON string holding JSON (distribution_to_json)
    if (json_is_string(v)) return hpo_dist_from_json(d, json_string_value(v), name);
    return fail(STATUS_ERR_FORMAT, "journal: distribution of '%s' is not a JSON string", name);
}

static Status apply_create_trial(HpoJournal *j, json_t *log) {
    long long sid;
    if (!get_int(log, "study_id", &sid))
        return fail(STATUS_ERR_FORMAT, "journal: CREATE_TRIAL without study_id");
    if (!study_exists(j, sid)) return skip_or_fail(j, log, "study does not exist");
    HpoTrial t;
    memset(&t, 0, sizeof(t));
    t.study_id = (int)sid;
    t.trial_id = j->n_trials;
    HpoStudy *st = &j->studies[sid];
    t.number = st->n_trials;
    t.state = HPO_RUNNING;
    Status s = STATUS_OK;
    long long state;
    if (json_object_get(log, "state")) {
        if (!get_int(log, "state", &state) || state < 0 || state > 4) {
            return fail(STATUS_ERR_FORMAT, "journal: CREATE_TRIAL with a bad state");
        }
        t.state = (HpoTrialState)state;
    }
    t.user_attrs = json_object();
    t.system_attrs = json_object();
    json_t *dists = json_object_get(log, "distributions");
    json_t *params = json_object_get(log, "params");
    if (params && !json_is_object(dists))
        s = fail(STATUS_ERR_FORMAT, "journal: params without distributions");
    if (s == STATUS_OK && json_is_object(params)) {
        const char *k;
        json_t *v;
        json_object_foreach(params, k, v) {
            HpoDist d;
            double x;
            s = dist_of(json_object_get(dists, k), &d, k);
            if (s != STATUS_OK) break;
            if (!get_number(v, &x))
                s = fail(STATUS_ERR_FORMAT, "journal: param '%s' is not a number", k);
            if (s == STATUS_OK) set_param(&t, k, &d, x);
            hpo_dist_release(&d);
            if (s != STATUS_OK) break;
        }
    }
    json_t *ua = json_object_get(log, "user_attrs"), *sa = json_object_get(log, "system_attrs");
    if (json_is_object(ua)) json_object_update(t.user_attrs, ua);
    if (json_is_object(sa)) json_object_update(t.system_attrs, sa);
    json_t *iv = json_object_get(log, "intermediate_values");
    if (s == STATUS_OK && json_is_object(iv)) {
        const char *k;
        json_t *v;
        json_object_foreach(iv, k, v) {
            double x;
            char *end;
            long long step = strtoll(k, &end, 10);
            if (*end || !get_number(v, &x)) {
                s = fail(STATUS_ERR_FORMAT, "journal: bad intermediate value '%s'", k);
                break;
            }
            set_inter(&t, step, x);
        }
    }
    if (s == STATUS_OK) {
        json_t *vals = json_object_get(log, "values");
        if (vals && !json_is_null(vals))
            s = set_values(&t, vals);
        else {
            double x;
            json_t *v1 = json_object_get(log, "value");
            if (v1 && !json_is_null(v1)) {
                if (get_number(v1, &x)) {
                    t.values = xmalloc(sizeof(double));
                    t.values[0] = x;
                    t.n_values = 1;
                } else {
                    s = fail(STATUS_ERR_FORMAT, "journal: 'value' is not a number");
                }
            }
        }
    }
    json_t *ds = json_object_get(log, "datetime_start"),
           *dc = json_object_get(log, "datetime_complete");
    if (json_is_string(ds)) t.datetime_start = xstrdup(json_string_value(ds));
    if (json_is_string(dc)) t.datetime_complete = xstrdup(json_string_value(dc));
    if (s != STATUS_OK) {
        trial_release(&t);
        return s;
    }
    j->trials = xrealloc(j->trials, (size_t)(j->n_trials + 1) * sizeof(HpoTrial));
    j->trials[j->n_trials++] = t;
    st->trial_ids = xrealloc(st->trial_ids, (size_t)(st->n_trials + 1) * sizeof(int));
    st->trial_ids[st->n_trials++] = t.trial_id;
    if (is_own(j, log)) {
        j->last_created_trial_id = t.trial_id;
        if (t.state == HPO_RUNNING) j->owned_trial_id = t.trial_id;
    }
    return STATUS_OK;
}

// Trial exists and is not finished (Optuna's _trial_exists_and_updatable).
static HpoTrial *updatable(HpoJournal *j, json_t *log, Status *s) {
    long long id;
    *s = STATUS_OK;
    if (!get_int(log, "trial_id", &id)) {
        *s = fail(STATUS_ERR_FORMAT, "journal: operation without trial_id");
        return NULL;
    }
    if (id < 0 || id >= j->n_trials) {
        *s = skip_or_fail(j, log, "trial does not exist");
        return NULL;
    }
    HpoTrial *t = &j->trials[id];
    if (is_finished(t->state)) {
        *s = skip_or_fail(j, log, "trial has already finished and can not be updated");
        return NULL;
    }
    return t;
}

static bool dist_compatible(const HpoDist *a, const HpoDist *b) {
    // Optuna's check_distribution_compatibility: same class, categorical choices equal,
    // numeric log flags equal (ranges may differ).
    if (a->kind != b->kind) return false;
    if (a->kind == HPO_DIST_CATEGORICAL) return hpo_dist_equal(a, b);
    return a->log == b->log;
}

Status hpo_journal_apply(HpoJournal *j, json_t *log) {
    j->log_number_read++; // a decodable line counts as read even when it cannot apply
    if (!json_is_object(log)) return fail(STATUS_ERR_FORMAT, "journal: log is not a JSON object");
    long long op;
    if (!get_int(log, "op_code", &op))
        return fail(STATUS_ERR_FORMAT, "journal: log without op_code");
    if (!json_is_string(json_object_get(log, "worker_id")))
        return fail(STATUS_ERR_FORMAT, "journal: log without worker_id");
    Status s = STATUS_OK;
    long long id;
    switch (op) {
    case HPO_OP_CREATE_STUDY: {
        json_t *name = json_object_get(log, "study_name"),
               *dirs = json_object_get(log, "directions");
        if (!json_is_string(name) || !json_is_array(dirs) || json_array_size(dirs) == 0)
            return fail(STATUS_ERR_FORMAT, "journal: CREATE_STUDY needs study_name and directions");
        if (hpo_journal_find_study(j, json_string_value(name)))
            return skip_or_fail(j, log, "study name already exists");
        HpoStudy st;
        memset(&st, 0, sizeof(st));
        st.study_id = j->n_studies;
        st.name = xstrdup(json_string_value(name));
        st.n_directions = (int)json_array_size(dirs);
        st.directions = xcalloc((size_t)st.n_directions, sizeof(int));
        for (int i = 0; i < st.n_directions; i++) {
            json_t *d = json_array_get(dirs, (size_t)i);
            st.directions[i] = json_is_integer(d) ? (int)json_integer_value(d) : -1;
            if (st.directions[i] < 0 || st.directions[i] > 2) {
                free(st.name);
                free(st.directions);
                return fail(STATUS_ERR_FORMAT, "journal: bad study direction");
            }
        }
        st.user_attrs = json_object();
        st.system_attrs = json_object();
        j->studies = xrealloc(j->studies, (size_t)(j->n_studies + 1) * sizeof(HpoStudy));
        j->studies[j->n_studies++] = st;
        return STATUS_OK;
    }
    case HPO_OP_DELETE_STUDY:
        if (!get_int(log, "study_id", &id))
            return fail(STATUS_ERR_FORMAT, "journal: DELETE_STUDY without study_id");
        if (!study_exists(j, id)) return skip_or_fail(j, log, "study does not exist");
        j->studies[id].deleted = true;
        return STATUS_OK;
    case HPO_OP_SET_STUDY_USER_ATTR:
    case HPO_OP_SET_STUDY_SYSTEM_ATTR:
        if (!get_int(log, "study_id", &id))
            return fail(STATUS_ERR_FORMAT, "journal: study attr without study_id");
        if (!study_exists(j, id)) return skip_or_fail(j, log, "study does not exist");
        return op == HPO_OP_SET_STUDY_USER_ATTR
                   ? attr_merge(j->studies[id].user_attrs, log, "user_attr")
                   : attr_merge(j->studies[id].system_attrs, log, "system_attr");
    case HPO_OP_CREATE_TRIAL: return apply_create_trial(j, log);
    case HPO_OP_SET_TRIAL_PARAM: {
        HpoTrial *t = updatable(j, log, &s);
        if (!t) return s;
        json_t *name = json_object_get(log, "param_name");
        double v;
        if (!json_is_string(name) || !get_number(json_object_get(log, "param_value_internal"), &v))
            return fail(STATUS_ERR_FORMAT, "journal: SET_TRIAL_PARAM needs param_name and value");
        HpoDist d;
        s = dist_of(json_object_get(log, "distribution"), &d, json_string_value(name));
        if (s != STATUS_OK) return s;
        const HpoStudy *st = &j->studies[t->study_id];
        for (int i = 0; i < st->n_trials; i++) {
            const HpoTrialParam *p =
                hpo_trial_param(&j->trials[st->trial_ids[i]], json_string_value(name));
            if (!p) continue;
            if (!dist_compatible(&p->dist, &d)) {
                hpo_dist_release(&d);
                return skip_or_fail(j, log, "incompatible distribution for a parameter");
            }
            break;
        }
        set_param(t, json_string_value(name), &d, v);
        hpo_dist_release(&d);
        return STATUS_OK;
    }
    case HPO_OP_SET_TRIAL_STATE_VALUES: {
        HpoTrial *t = updatable(j, log, &s);
        if (!t) return s;
        long long state;
        if (!get_int(log, "state", &state) || state < 0 || state > 4)
            return fail(STATUS_ERR_FORMAT, "journal: SET_TRIAL_STATE_VALUES with a bad state");
        if (state == HPO_RUNNING && t->state == HPO_RUNNING) return STATUS_OK;
        s = set_values(t, json_object_get(log, "values"));
        if (s != STATUS_OK) return s;
        if (state == HPO_RUNNING) {
            json_t *ds = json_object_get(log, "datetime_start");
            free(t->datetime_start);
            t->datetime_start = json_is_string(ds) ? xstrdup(json_string_value(ds)) : NULL;
            if (is_own(j, log)) j->owned_trial_id = t->trial_id;
        }
        if (is_finished((HpoTrialState)state)) {
            json_t *dc = json_object_get(log, "datetime_complete");
            free(t->datetime_complete);
            t->datetime_complete = json_is_string(dc) ? xstrdup(json_string_value(dc)) : NULL;
        }
        t->state = (HpoTrialState)state;
        return STATUS_OK;
    }
    case HPO_OP_SET_TRIAL_INTERMEDIATE_VALUE: {
        HpoTrial *t = updatable(j, log, &s);
        if (!t) return s;
        long long step;
        double v;
        if (!get_int(log, "step", &step) ||
            !get_number(json_object_get(log, "intermediate_value"), &v))
            return fail(STATUS_ERR_FORMAT,
                        "journal: SET_TRIAL_INTERMEDIATE_VALUE needs step and value");
        set_inter(t, step, v);
        return STATUS_OK;
    }
    case HPO_OP_SET_TRIAL_USER_ATTR:
    case HPO_OP_SET_TRIAL_SYSTEM_ATTR: {
        HpoTrial *t = updatable(j, log, &s);
        if (!t) return s;
        return op == HPO_OP_SET_TRIAL_USER_ATTR ? attr_merge(t->user_attrs, log, "user_attr")
                                                : attr_merge(t->system_attrs, log, "system_attr");
    }
    case HPO_OP_DISCARD_TRIALS: return STATUS_OK;
    default: return fail(STATUS_ERR_FORMAT, "journal: unknown op_code %lld", op);
    }
}

// ---- helpers ------------------------------------------------------------------------------

json_t *hpo_log_new(int op_code) {
    json_t *o = json_object();
    json_object_set_new(o, "op_code", json_integer(op_code));
    json_object_set_new(o, "worker_id", json_string(""));
    return o;
}

void hpo_iso_now(char *buf, int cap) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    time_t secs = tv.tv_sec;
    gmtime_r(&secs, &tm);
    snprintf(buf, (size_t)cap, "%04d-%02d-%02dT%02d:%02d:%02d.%06ld+00:00", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (long)tv.tv_usec);
}

// Replaces Python's bare NaN / Infinity / -Infinity tokens (outside strings) with marker
// strings Jansson can parse. Returns a new string. The worst growth is NaN's: 3 bytes
// become the 11 of "\u0001NaN" (found by fuzz/fuzz_journal.c: a line of NaNs overran the
// 3n buffer this had), so 4n bounds it.
static char *sanitize_line(const char *s, size_t n) {
    char *out = xmalloc(n * 4 + 16);
    size_t o = 0;
    bool in_str = false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_str) {
            out[o++] = c;
            if (c == '\\' && i + 1 < n)
                out[o++] = s[++i];
            else if (c == '"')
                in_str = false;
            continue;
        }
        if (c == '"') in_str = true;
        const char *tok = NULL;
        size_t tl = 0;
        if (c == 'N' && n - i >= 3 && memcmp(s + i, "NaN", 3) == 0)
            tok = "NaN", tl = 3;
        else if (c == 'I' && n - i >= 8 && memcmp(s + i, "Infinity", 8) == 0)
            tok = "Infinity", tl = 8;
        else if (c == '-' && n - i >= 9 && memcmp(s + i, "-Infinity", 9) == 0)
            tok = "-Infinity", tl = 9;
        if (tok) {
            o += (size_t)sprintf(out + o, "\"\\u0001%s\"", tok);
            i += tl - 1;
            continue;
        }
        out[o++] = c;
    }
    out[o] = 0;
    return out;
}

json_t *hpo_journal_parse_line(const char *s, size_t n, json_error_t *err) {
    char *clean = sanitize_line(s, n);
    json_t *log = json_loads(clean, 0, err);
    free(clean);
    return log;
}

// ---- file backend -------------------------------------------------------------------------

typedef struct {
    HpoBackend base;
    char *path, *lock_path;
    bool open_lock;     // JournalFileOpenLock instead of the symlink lock
    int64_t cached_log; // log number at byte offset cached_off
    off_t cached_off;
} FileBackend;

static void sleep_ms(double ms) {
    struct timespec ts = {(time_t)(ms / 1000), (long)(fmod(ms, 1000.0) * 1e6)};
    nanosleep(&ts, NULL);
}

static void random_hex(char *buf, int n) {
    // unique names for the lock release rename; not security sensitive
    unsigned char b[32];
    int fd = open("/dev/urandom", O_RDONLY);
    ssize_t got = fd >= 0 ? read(fd, b, sizeof(b)) : -1;
    if (fd >= 0) close(fd);
    if (got != (ssize_t)sizeof(b)) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
        for (size_t i = 0; i < sizeof(b); i++)
            b[i] = (unsigned char)(x >> (8 * (i % 8))) ^ (unsigned char)i;
    }
    for (int i = 0; i < n && i < 64; i++)
        buf[i] = "0123456789abcdef"[(b[i / 2] >> (4 * (i % 2))) & 15];
    buf[n] = 0;
}

static Status file_lock(HpoBackend *b) {
    FileBackend *f = (FileBackend *)b;
    // Optuna's acquire loop: retry with backoff from 1 ms (we cap at 100 ms, Optuna at 1 s);
    // a lock whose (followed) mtime has not changed for the 30 s grace period is broken.
    double sleep = 1, last_change = time_now(), last_warn = time_now();
    bool have_mtime = false;
    struct timespec mtime = {0, 0};
    for (;;) {
        int rc;
        if (f->open_lock) {
            int fd = open(f->lock_path, O_CREAT | O_EXCL | O_WRONLY, 0644);
            rc = fd >= 0 ? 0 : -1;
            if (fd >= 0) close(fd);
        } else {
            rc = symlink(f->path, f->lock_path);
        }
        if (rc == 0) return STATUS_OK;
        if (errno != EEXIST)
            return fail(STATUS_ERR_IO, "cannot create lock '%s': %s", f->lock_path,
                        strerror(errno));
        struct stat stt;
        if (stat(f->lock_path, &stt) == 0) {
            if (!have_mtime || stt.st_mtim.tv_sec != mtime.tv_sec ||
                stt.st_mtim.tv_nsec != mtime.tv_nsec) {
                mtime = stt.st_mtim;
                have_mtime = true;
                last_change = time_now();
            } else if (time_now() - last_change > 30.0) {
                log_warn("journal lock '%s' held for more than 30 s without progress; breaking it",
                         f->lock_path);
                b->unlock(b);
                last_change = time_now();
                sleep = 1;
                continue;
            }
        }
        if (time_now() - last_warn > 10.0) {
            log_warn("waiting more than 10 s for the journal lock '%s'", f->lock_path);
            last_warn = time_now();
        }
        sleep_ms(sleep);
        sleep = fmin(sleep * 2, 100);
    }
}

static void file_unlock(HpoBackend *b) {
    FileBackend *f = (FileBackend *)b;
    // Optuna's release: rename to a unique name, then unlink (never removes another's lock
    // that appeared in between).
    char hex[40];
    random_hex(hex, 32);
    size_t n = strlen(f->lock_path) + 64;
    char *tmp = xmalloc(n);
    snprintf(tmp, n, "%s%s.rename", f->lock_path, hex);
    if (rename(f->lock_path, tmp) == 0) unlink(tmp);
    free(tmp);
}

Status hpo_file_backend_repair(const char *path, long *removed) {
    *removed = 0;
    int fd = open(path, O_RDWR);
    if (fd < 0) return fail(STATUS_ERR_IO, "cannot open journal '%s': %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size == 0) {
        close(fd);
        return STATUS_OK;
    }
    char c;
    if (pread(fd, &c, 1, st.st_size - 1) == 1 && c == '\n') {
        close(fd);
        return STATUS_OK;
    }
    off_t pos = st.st_size;
    char buf[4096];
    off_t keep = 0;
    while (pos > 0) {
        off_t start = pos > (off_t)sizeof(buf) ? pos - (off_t)sizeof(buf) : 0;
        ssize_t got = pread(fd, buf, (size_t)(pos - start), start);
        if (got <= 0) break;
        ssize_t i = got - 1;
        while (i >= 0 && buf[i] != '\n')
            i--;
        if (i >= 0) {
            keep = start + i + 1;
            break;
        }
        pos = start;
    }
    Status s = STATUS_OK;
    if (ftruncate(fd, keep) != 0)
        s = fail(STATUS_ERR_IO, "cannot repair journal '%s': %s", path, strerror(errno));
    else
        *removed = (long)(st.st_size - keep);
    close(fd);
    return s;
}

static Status file_append(HpoBackend *b, char **lines, int n) {
    FileBackend *f = (FileBackend *)b;
    long removed;
    Status s = hpo_file_backend_repair(f->path, &removed);
    if (s != STATUS_OK) return s;
    if (removed)
        log_warn("journal '%s': removed a torn final line (%ld bytes) left by a killed writer",
                 f->path, removed);
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += strlen(lines[i]) + 1;
    char *buf = xmalloc(total + 1);
    size_t o = 0;
    for (int i = 0; i < n; i++) {
        size_t l = strlen(lines[i]);
        memcpy(buf + o, lines[i], l);
        o += l;
        buf[o++] = '\n';
    }
    int fd = open(f->path, O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (fd < 0) {
        free(buf);
        return fail(STATUS_ERR_IO, "cannot open journal '%s': %s", f->path, strerror(errno));
    }
    size_t done = 0;
    while (done < o) {
        ssize_t w = write(fd, buf + done, o - done);
        if (w < 0) {
            if (errno == EINTR) continue;
            s = fail(STATUS_ERR_IO, "cannot write journal '%s': %s", f->path, strerror(errno));
            break;
        }
        done += (size_t)w;
    }
    if (s == STATUS_OK && fsync(fd) != 0)
        s = fail(STATUS_ERR_IO, "cannot fsync journal '%s': %s", f->path, strerror(errno));
    close(fd);
    free(buf);
    return s;
}

static Status file_read(HpoBackend *b, int64_t from, Status (*fn)(void *, json_t *), void *ctx) {
    FileBackend *f = (FileBackend *)b;
    if (from != f->cached_log) {
        f->cached_log = 0;
        f->cached_off = 0;
    }
    int fd = open(f->path, O_RDONLY);
    if (fd < 0)
        return fail(STATUS_ERR_IO, "cannot open journal '%s': %s", f->path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return fail(STATUS_ERR_IO, "cannot stat journal '%s'", f->path);
    }
    Status s = STATUS_OK;
    if (st.st_size > f->cached_off) {
        size_t len = (size_t)(st.st_size - f->cached_off);
        char *buf = xmalloc(len + 1);
        size_t got = 0;
        while (got < len) {
            ssize_t r = pread(fd, buf + got, len - got, f->cached_off + (off_t)got);
            if (r <= 0) break;
            got += (size_t)r;
        }
        size_t p = 0;
        while (p < got) {
            char *nl = memchr(buf + p, '\n', got - p);
            if (!nl) break; // a line still being written (or torn): not a log yet
            size_t ll = (size_t)(nl - (buf + p));
            int64_t lineno = f->cached_log + 1;
            if (f->cached_log >= from) {
                json_error_t err;
                json_t *log = hpo_journal_parse_line(buf + p, ll, &err);
                if (!log) {
                    s = fail(STATUS_ERR_FORMAT, "journal '%s': line %lld: invalid JSON: %s",
                             f->path, (long long)lineno, err.text);
                    break;
                }
                s = fn(ctx, log);
                json_decref(log);
            }
            // consumed (the replay counted it) even when it could not apply
            f->cached_log++;
            f->cached_off += (off_t)(ll + 1);
            p += ll + 1;
            if (s != STATUS_OK) {
                fail_context(s, "journal '%s': line %lld", f->path, (long long)lineno);
                break;
            }
        }
        free(buf);
    }
    close(fd);
    return s;
}

static void file_close(HpoBackend *b) {
    FileBackend *f = (FileBackend *)b;
    free(f->path);
    free(f->lock_path);
    free(f);
}

Status hpo_file_backend_open(HpoBackend **out, const char *path, bool open_lock) {
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (fd < 0) return fail(STATUS_ERR_IO, "cannot open journal '%s': %s", path, strerror(errno));
    close(fd);
    FileBackend *f = xcalloc(1, sizeof(FileBackend));
    f->base.read = file_read;
    f->base.append = file_append;
    f->base.lock = file_lock;
    f->base.unlock = file_unlock;
    f->base.close = file_close;
    f->path = xstrdup(path);
    size_t n = strlen(path) + 8;
    f->lock_path = xmalloc(n);
    snprintf(f->lock_path, n, "%s.lock", path);
    f->open_lock = open_lock;
    *out = &f->base;
    return STATUS_OK;
}

// ---- store --------------------------------------------------------------------------------

struct HpoJournalStore {
    HpoBackend *be;
    HpoJournal j;
    int lock_depth;
};

static Status apply_cb(void *ctx, json_t *log) { return hpo_journal_apply((HpoJournal *)ctx, log); }

Status hpo_journal_open(HpoJournalStore **out, const char *url) {
    *out = NULL;
    HpoBackend *be = NULL;
    Status s;
    if (strncmp(url, "redis://", 8) == 0)
        s = hpo_redis_backend_open(&be, url);
    else if (strncmp(url, "journal-open:", 13) == 0)
        s = hpo_file_backend_open(&be, url + 13, true);
    else if (strncmp(url, "journal:", 8) == 0)
        s = hpo_file_backend_open(&be, url + 8, false);
    else
        s = hpo_file_backend_open(&be, url, false);
    if (s != STATUS_OK) return s;
    HpoJournalStore *js = xcalloc(1, sizeof(HpoJournalStore));
    js->be = be;
    // "<uuid4>-<pid>": Optuna uses "<uuid4>-<thread id>"; any unique string works.
    char hex[40], wid[96];
    random_hex(hex, 32);
    snprintf(wid, sizeof(wid), "%.8s-%.4s-4%.3s-a%.3s-%.12s-%ld", hex, hex + 8, hex + 12, hex + 15,
             hex + 18, (long)getpid());
    hpo_journal_init(&js->j, wid);
    s = hpo_journal_sync(js);
    if (s != STATUS_OK) {
        hpo_journal_close(js);
        return s;
    }
    *out = js;
    return STATUS_OK;
}

void hpo_journal_close(HpoJournalStore *js) {
    if (!js) return;
    if (js->lock_depth > 0) js->be->unlock(js->be);
    js->be->close(js->be);
    hpo_journal_release(&js->j);
    free(js);
}

Status hpo_journal_sync(HpoJournalStore *js) {
    return js->be->read(js->be, js->j.log_number_read, apply_cb, &js->j);
}

const HpoJournal *hpo_journal_state(const HpoJournalStore *js) { return &js->j; }

Status hpo_journal_lock(HpoJournalStore *js) {
    if (js->lock_depth++ > 0) return STATUS_OK;
    Status s = js->be->lock(js->be);
    if (s != STATUS_OK) js->lock_depth = 0;
    return s;
}

void hpo_journal_unlock(HpoJournalStore *js) {
    if (js->lock_depth == 0) return;
    if (--js->lock_depth == 0) js->be->unlock(js->be);
}

Status hpo_journal_append(HpoJournalStore *js, json_t **logs, int n) {
    char **lines = xcalloc((size_t)n + 1, sizeof(char *));
    Status s = STATUS_OK;
    for (int i = 0; i < n; i++) {
        json_object_set_new(logs[i], "worker_id", json_string(js->j.worker_id));
        lines[i] =
            json_dumps(logs[i], JSON_COMPACT | JSON_REAL_PRECISION(17) | JSON_PRESERVE_ORDER);
        json_decref(logs[i]);
        if (!lines[i])
            s = fail(STATUS_ERR_ARG, "journal: cannot serialize a log (non-finite number?)");
    }
    if (s == STATUS_OK) {
        s = hpo_journal_lock(js);
        if (s == STATUS_OK) {
            s = js->be->append(js->be, lines, n);
            hpo_journal_unlock(js);
        }
    }
    for (int i = 0; i < n; i++)
        free(lines[i]);
    free(lines);
    if (s != STATUS_OK) return s;
    return hpo_journal_sync(js);
}
