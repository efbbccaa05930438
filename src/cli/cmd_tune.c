/*
 * cmd_tune.c - `edgeforge tune`: TPE hyperparameter search that runs a command per trial,
 * stored as an Optuna journal (file or Redis) that Optuna and optuna-dashboard read.
 *
 *   edgeforge tune --study paper --storage journal:tune.log --trials 16 --space table3 \
 *       --startup 5 -- edgeforge distill --lr {lr} --rank {rank} ... --result {result}
 *   edgeforge tune --study paper --storage journal:tune.log --workers 4 -- ./objective.sh
 *   edgeforge tune --study paper --storage redis://10.0.0.5:6379 -- ./objective.sh
 *   edgeforge tune --show --study paper --storage journal:tune.log [--json]
 *
 * Each trial's COMMAND gets its parameters as "{name}" placeholders in its words, as the
 * environment (EDGEFORGE_PARAM_<NAME>, EDGEFORGE_PARAMS as a JSON object) and, with --args,
 * as appended "--name value" pairs. It writes results to the file named by {result} /
 * EDGEFORGE_RESULT_FILE, one JSON object per line:
 *   {"step": 100, "value": 2.31}     intermediate value (reported, used by --prune)
 *   {"value": 2.05}                  the objective (a bare number line also works)
 * A command that exits non-zero, is killed, times out, or leaves no objective marks the
 * trial FAIL with the reason in its user attr "edgeforge:error"; the study goes on.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/common.h"
#include "core/fileio.h"
#include "core/log.h"
#include "core/rng.h"
#include "hpo/journal.h"
#include "hpo/pruner.h"
#include "hpo/space.h"
#include "hpo/study.h"
#include "hpo/tpe.h"

typedef struct {
    const char *study, *storage, *space_spec, *direction;
    int trials, workers, startup, candidates, retries, max_failures;
    int64_t seed;
    double timeout_s, heartbeat_s, grace_s;
    bool univariate, no_liar, prune, pass_args, show, json;
    char **cmd;
    int n_cmd;
} TuneOpts;

// Set by SIGINT/SIGTERM: the worker stops its command and fails the trial.
static volatile sig_atomic_t g_stop;

static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

static Status load_space(HpoSpace *sp, const char *spec) {
    memset(sp, 0, sizeof(*sp));
    if (!strchr(spec, '=')) return hpo_space_load(sp, spec); // "table3" or a JSON file
    // "name=float:0:1;name2=int:1:8"
    char *dup = xstrdup(spec), *save = NULL;
    Status s = STATUS_OK;
    for (char *tok = strtok_r(dup, ";", &save); tok && s == STATUS_OK;
         tok = strtok_r(NULL, ";", &save))
        s = hpo_space_add_flag(sp, tok);
    free(dup);
    if (s == STATUS_OK && sp->n == 0) s = fail(STATUS_ERR_ARG, "search space '%s' is empty", spec);
    return s;
}

// Shell-safe-ish name for an environment variable: EDGEFORGE_PARAM_<NAME>.
static void env_name(char *buf, size_t cap, const char *name) {
    size_t o = (size_t)snprintf(buf, cap, "EDGEFORGE_PARAM_");
    for (const char *c = name; *c && o + 1 < cap; c++) {
        char ch = *c;
        if (ch >= 'a' && ch <= 'z')
            ch = (char)(ch - 'a' + 'A');
        else if (!((ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9')))
            ch = '_';
        buf[o++] = ch;
    }
    buf[o] = 0;
}

// Replaces every "{key}" in word by its value. Returns a new string.
static char *substitute(const char *word, const char *const *keys, const char *const *vals, int n) {
    size_t cap = strlen(word) + 64, o = 0;
    char *out = xmalloc(cap);
    for (const char *p = word; *p;) {
        int hit = -1;
        if (*p == '{')
            for (int i = 0; i < n && hit < 0; i++) {
                size_t kl = strlen(keys[i]);
                if (strncmp(p + 1, keys[i], kl) == 0 && p[1 + kl] == '}') hit = i;
            }
        const char *add = hit >= 0 ? vals[hit] : p;
        size_t al = hit >= 0 ? strlen(vals[hit]) : 1;
        if (o + al + 1 > cap) {
            cap = 2 * (o + al + 1);
            out = xrealloc(out, cap);
        }
        memcpy(out + o, add, al);
        o += al;
        p += hit >= 0 ? strlen(keys[hit]) + 2 : 1;
    }
    out[o] = 0;
    return out;
}

typedef struct {
    double final_value;
    bool has_final;
    int64_t n_read; // bytes of the result file consumed
    int bad_lines;
} ResultState;

// Reads complete new lines of the result file; reports intermediate values. Returns true when
// the pruner says stop.
static bool poll_results(const char *path, ResultState *rs, HpoJournalStore *js, int study_id,
                         int trial_id, const TuneOpts *o, const HpoPrunerConfig *pc) {
    FILE *f = fopen(path, "r");
    if (!f) return false;
    bool prune = false;
    if (fseek(f, (long)rs->n_read, SEEK_SET) != 0) {
        fclose(f);
        return false;
    }
    char line[4096];
    while (fgets(line, sizeof(line), f)) {
        size_t l = strlen(line);
        if (l == 0 || line[l - 1] != '\n') break; // still being written
        rs->n_read += (int64_t)l;
        line[l - 1] = 0;
        char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        if (!*p) continue;
        json_t *j = json_loads(p, JSON_DECODE_ANY, NULL);
        if (json_is_number(j)) {
            rs->final_value = json_number_value(j);
            rs->has_final = true;
        } else if (json_is_object(j)) {
            json_t *v = json_object_get(j, "value");
            if (!v) v = json_object_get(j, "objective");
            json_t *st = json_object_get(j, "step");
            if (json_is_number(v) && json_is_integer(st)) {
                Status s =
                    hpo_trial_report(js, trial_id, json_integer_value(st), json_number_value(v));
                if (s != STATUS_OK)
                    log_warn("trial result: %s", status_msg());
                else if (o->prune &&
                         hpo_pruner_should_prune(pc, hpo_journal_state(js), study_id, trial_id))
                    prune = true;
            } else if (json_is_number(v)) {
                rs->final_value = json_number_value(v);
                rs->has_final = true;
            } else {
                rs->bad_lines++;
            }
        } else {
            rs->bad_lines++;
            log_warn("trial %d: result line is not JSON or a number: '%.80s'", trial_id, p);
        }
        json_decref(j);
        if (prune) break;
    }
    fclose(f);
    return prune;
}

static void kill_group(pid_t pid) {
    kill(-pid, SIGTERM);
    for (int i = 0; i < 50; i++) {
        if (waitpid(pid, NULL, WNOHANG) == pid) return;
        usleep(100000);
    }
    kill(-pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - floor(s)) * 1e9)};
    nanosleep(&ts, NULL);
}

// Runs one trial's command to the end; returns the state to tell and sets *value / *why.
static HpoTrialState run_trial(const TuneOpts *o, HpoJournalStore *js, int study_id,
                               const HpoSpace *sp, const HpoAsk *a, const char *tmpdir,
                               const HpoPrunerConfig *pc, double *value, char *why,
                               size_t why_cap) {
    char result[600], num[32], tid[32];
    snprintf(result, sizeof(result), "%s/trial-%d.result", tmpdir, a->number);
    unlink(result);
    snprintf(num, sizeof(num), "%d", a->number);
    snprintf(tid, sizeof(tid), "%d", a->trial_id);
    int nk = sp->n + 3;
    const char **keys = xcalloc((size_t)nk, sizeof(char *));
    const char **vals = xcalloc((size_t)nk, sizeof(char *));
    char **owned = xcalloc((size_t)sp->n + 1, sizeof(char *));
    json_t *pj = json_object();
    for (int p = 0; p < sp->n; p++) {
        char buf[512];
        hpo_dist_format(&sp->params[p].dist, a->params[p], buf, sizeof(buf));
        owned[p] = xstrdup(buf);
        keys[p] = sp->params[p].name;
        vals[p] = owned[p];
        const HpoDist *d = &sp->params[p].dist;
        if (d->kind == HPO_DIST_CATEGORICAL)
            json_object_set_new(
                pj, keys[p], json_loads(d->choices_json[(int)a->params[p]], JSON_DECODE_ANY, NULL));
        else if (d->kind == HPO_DIST_INT)
            json_object_set_new(pj, keys[p], json_integer((json_int_t)a->params[p]));
        else
            json_object_set_new(pj, keys[p], json_real(a->params[p]));
    }
    keys[sp->n] = "result";
    vals[sp->n] = result;
    keys[sp->n + 1] = "trial";
    vals[sp->n + 1] = num;
    keys[sp->n + 2] = "study";
    vals[sp->n + 2] = o->study;
    int argc = o->n_cmd + (o->pass_args ? 2 * sp->n : 0);
    char **argv = xcalloc((size_t)argc + 1, sizeof(char *));
    for (int i = 0; i < o->n_cmd; i++)
        argv[i] = substitute(o->cmd[i], keys, vals, nk);
    if (o->pass_args)
        for (int p = 0; p < sp->n; p++) {
            size_t l = strlen(keys[p]) + 3;
            argv[o->n_cmd + 2 * p] = xmalloc(l);
            snprintf(argv[o->n_cmd + 2 * p], l, "--%s", keys[p]);
            argv[o->n_cmd + 2 * p + 1] = xstrdup(vals[p]);
        }
    char *params_json = json_dumps(pj, JSON_COMPACT | JSON_REAL_PRECISION(17));
    json_decref(pj);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        for (int p = 0; p < sp->n; p++) {
            char en[300];
            env_name(en, sizeof(en), keys[p]);
            setenv(en, vals[p], 1);
        }
        setenv("EDGEFORGE_PARAMS", params_json, 1);
        setenv("EDGEFORGE_RESULT_FILE", result, 1);
        setenv("EDGEFORGE_TRIAL_NUMBER", num, 1);
        setenv("EDGEFORGE_TRIAL_ID", tid, 1);
        setenv("EDGEFORGE_STUDY", o->study, 1);
        execvp(argv[0], argv);
        fprintf(stderr, "error: tune: cannot run '%s': %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    HpoTrialState state = HPO_FAIL;
    *value = NAN;
    why[0] = 0;
    ResultState rs = {NAN, false, 0, 0};
    if (pid < 0) {
        snprintf(why, why_cap, "cannot fork: %s", strerror(errno));
        goto out;
    }
    setpgid(pid, pid);
    double t0 = time_now(), last_hb = t0;
    int wst = 0;
    bool exited = false, pruned = false, timed_out = false;
    while (!exited) {
        pid_t r = waitpid(pid, &wst, WNOHANG);
        if (r == pid) {
            exited = true;
            break;
        }
        if (poll_results(result, &rs, js, study_id, a->trial_id, o, pc)) {
            pruned = true;
            kill_group(pid);
            break;
        }
        if (g_stop) {
            kill_group(pid);
            snprintf(why, why_cap, "interrupted");
            goto out;
        }
        if (o->timeout_s > 0 && time_now() - t0 > o->timeout_s) {
            timed_out = true;
            kill_group(pid);
            break;
        }
        if (time_now() - last_hb > o->heartbeat_s) {
            if (hpo_trial_heartbeat(js, a->trial_id) != STATUS_OK)
                log_warn("heartbeat: %s", status_msg());
            last_hb = time_now();
        }
        sleep_s(0.05);
    }
    if (pruned) {
        state = HPO_PRUNED;
        goto out;
    }
    if (timed_out) {
        snprintf(why, why_cap, "timed out after %.0f s", o->timeout_s);
        goto out;
    }
    if (poll_results(result, &rs, js, study_id, a->trial_id, o, pc)) {
        // the command finished before we read its reports; the pruner's verdict at the
        // reported step stands, as it would have in-process
        state = HPO_PRUNED;
        goto out;
    }
    if (WIFSIGNALED(wst)) {
        snprintf(why, why_cap, "command killed by signal %d", WTERMSIG(wst));
    } else if (WEXITSTATUS(wst) != 0) {
        snprintf(why, why_cap, "command exited with status %d", WEXITSTATUS(wst));
    } else if (!rs.has_final) {
        snprintf(why, why_cap, "command wrote no objective value to '%s'", result);
    } else if (!isfinite(rs.final_value)) {
        snprintf(why, why_cap, "objective value is not finite");
    } else {
        state = HPO_COMPLETE;
        *value = rs.final_value;
    }
out:
    unlink(result);
    for (int i = 0; i < argc; i++)
        free(argv[i]);
    free(argv);
    for (int p = 0; p < sp->n; p++)
        free(owned[p]);
    free(owned);
    free(keys);
    free(vals);
    free(params_json);
    return state;
}

// One worker: ask, run, tell until the budget is used up. Returns the exit status.
static int worker(const TuneOpts *o, int index) {
    HpoJournalStore *js = NULL;
    HpoSpace sp;
    int rc = 1;
    char tmpdir[256] = "";
    if (load_space(&sp, o->space_spec) != STATUS_OK) return cli_fail("tune: --space");
    if (hpo_journal_open(&js, o->storage) != STATUS_OK) {
        hpo_space_release(&sp);
        return cli_fail("tune");
    }
    int study_id;
    bool maximize = strcmp(o->direction, "maximize") == 0;
    if (hpo_study_open(js, o->study, maximize, true, &study_id) != STATUS_OK) {
        cli_fail("tune");
        goto done;
    }
    const char *tmp = getenv("TMPDIR");
    snprintf(tmpdir, sizeof(tmpdir), "%s/edgeforge-tune-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(tmpdir)) {
        fprintf(stderr, "error: tune: cannot create a temporary directory: %s\n", strerror(errno));
        tmpdir[0] = 0;
        goto done;
    }
    HpoTpeConfig cfg = hpo_tpe_default_config();
    cfg.n_startup_trials = o->startup;
    cfg.n_ei_candidates = o->candidates;
    cfg.multivariate = !o->univariate;
    cfg.constant_liar = !o->no_liar;
    HpoAskOptions ao = hpo_ask_default_options();
    ao.max_trials = o->trials;
    ao.max_retries = o->retries;
    ao.grace_s = o->grace_s;
    HpoPrunerConfig pc = hpo_median_pruner_default();
    Rng rng;
    rng_seed(&rng, (uint64_t)o->seed * 1000003u + (uint64_t)index);
    int consecutive_fail = 0;
    rc = 0;
    while (!g_stop) {
        HpoAsk a;
        if (hpo_study_ask(js, study_id, &sp, &cfg, &rng, &ao, &a) != STATUS_OK) {
            rc = cli_fail("tune");
            break;
        }
        if (a.trial_id < 0) break;
        double value;
        char why[700];
        HpoTrialState st =
            run_trial(o, js, study_id, &sp, &a, tmpdir, &pc, &value, why, sizeof(why));
        if (st == HPO_FAIL && why[0]) {
            fprintf(stderr, "warning: trial %d failed: %s\n", a.number, why);
            if (hpo_trial_set_user_attr(js, a.trial_id, "edgeforge:error", json_string(why)) !=
                STATUS_OK)
                log_warn("%s", status_msg());
        }
        Status s = hpo_trial_tell(js, a.trial_id, st, value);
        if (s == STATUS_ERR_ARG) {
            // e.g. another worker already failed this trial (its heartbeat looked stale)
            fprintf(stderr, "warning: trial %d: %s\n", a.number, status_msg());
        } else if (s != STATUS_OK) {
            rc = cli_fail("tune");
            hpo_ask_release(&a);
            break;
        }
        if (st == HPO_COMPLETE)
            log_info("trial %d: %.6g", a.number, value);
        else if (st == HPO_PRUNED)
            log_info("trial %d: pruned", a.number);
        hpo_ask_release(&a);
        consecutive_fail = st == HPO_FAIL ? consecutive_fail + 1 : 0;
        if (consecutive_fail >= o->max_failures) {
            fprintf(stderr,
                    "error: tune: %d trials in a row failed; stopping (see --max-failures)\n",
                    consecutive_fail);
            rc = 1;
            break;
        }
    }
    if (g_stop && rc == 0) rc = 1;
done:
    if (tmpdir[0]) rmdir(tmpdir);
    hpo_journal_close(js);
    hpo_space_release(&sp);
    return rc;
}

static const char *state_name(HpoTrialState s) {
    static const char *names[] = {"RUNNING", "COMPLETE", "PRUNED", "FAIL", "WAITING"};
    return s >= 0 && s <= 4 ? names[s] : "?";
}

static int show(const TuneOpts *o) {
    HpoJournalStore *js;
    if (hpo_journal_open(&js, o->storage) != STATUS_OK) return cli_fail("tune --show");
    const HpoJournal *j = hpo_journal_state(js);
    const HpoStudy *st = hpo_journal_find_study(j, o->study);
    if (!st) {
        fprintf(stderr, "error: tune --show: no study '%s' in '%s'\n", o->study, o->storage);
        hpo_journal_close(js);
        return 1;
    }
    if (o->json) {
        json_t *root = hpo_study_to_json(j, st->study_id);
        int best = hpo_study_best_trial(j, st->study_id);
        json_object_set_new(root, "best_trial",
                            best >= 0 ? json_integer(j->trials[best].number) : json_null());
        char *txt = json_dumps(root, JSON_INDENT(1) | JSON_REAL_PRECISION(17));
        printf("%s\n", txt);
        free(txt);
        json_decref(root);
        hpo_journal_close(js);
        return 0;
    }
    printf("study '%s' (%s), %d trials\n", st->name,
           st->directions[0] == HPO_DIR_MAXIMIZE ? "maximize" : "minimize", st->n_trials);
    for (int i = 0; i < st->n_trials; i++) {
        const HpoTrial *t = &j->trials[st->trial_ids[i]];
        printf("%4d  %-8s ", t->number, state_name(t->state));
        if (t->n_values == 1)
            printf("%-14.8g", t->values[0]);
        else
            printf("%-14s", "-");
        for (int p = 0; p < t->n_params; p++) {
            char buf[256];
            hpo_dist_format(&t->params[p].dist, t->params[p].value, buf, sizeof(buf));
            printf(" %s=%s", t->params[p].name, buf);
        }
        json_t *err = json_object_get(t->user_attrs, "edgeforge:error");
        if (json_is_string(err)) printf("  (%s)", json_string_value(err));
        printf("\n");
    }
    int best = hpo_study_best_trial(j, st->study_id);
    if (best >= 0) {
        const HpoTrial *t = &j->trials[best];
        printf("best: trial %d value %.10g\n", t->number, t->values[0]);
        for (int p = 0; p < t->n_params; p++) {
            char buf[256];
            hpo_dist_format(&t->params[p].dist, t->params[p].value, buf, sizeof(buf));
            printf("  %s = %s\n", t->params[p].name, buf);
        }
    } else {
        printf("best: none (no COMPLETE trial)\n");
    }
    hpo_journal_close(js);
    return 0;
}

int cmd_tune(int argc, char **argv) {
    TuneOpts o = {0};
    o.storage = NULL;
    o.space_spec = "table3";
    o.direction = "minimize";
    o.trials = 16;
    o.workers = 1;
    o.startup = 10;
    o.candidates = 24;
    o.retries = 1;
    o.max_failures = 5;
    o.seed = 0;
    o.heartbeat_s = 30;
    o.grace_s = 120;
    ArgSpec spec[] = {
        {"study", 0, ARG_STRING, &o.study, "study name (created if missing)", 0, 0},
        {"storage", 0, ARG_STRING, &o.storage,
         "journal:FILE, journal-open:FILE or redis://HOST:PORT[/DB][?prefix=P]", 0, 0},
        {"trials", 'n', ARG_INT, &o.trials, "trial budget of the whole study, all workers (16)", 1,
         1e6},
        {"space", 0, ARG_STRING, &o.space_spec,
         "table3 (default), a JSON file, or 'x=float:0:1;r=int:8:64;o=cat:a,b'", 0, 0},
        {"direction", 0, ARG_STRING, &o.direction, "minimize (default) or maximize", 0, 0},
        {"workers", 'j', ARG_INT, &o.workers, "worker processes on this machine (1)", 1, 256},
        {"startup", 0, ARG_INT, &o.startup,
         "random trials before TPE (10; 4-6 suits a 16-trial budget)", 0, 1e6},
        {"candidates", 0, ARG_INT, &o.candidates, "EI candidates per suggestion (24)", 1, 1e5},
        {"univariate", 0, ARG_FLAG, &o.univariate,
         "independent TPE per parameter (default: multivariate)", 0, 0},
        {"no-liar", 0, ARG_FLAG, &o.no_liar, "do not count running trials as worst (constant liar)",
         0, 0},
        {"prune", 0, ARG_FLAG, &o.prune, "median pruning on reported intermediate values", 0, 0},
        {"seed", 0, ARG_INT64, &o.seed, "sampler seed (0)", 0, 0},
        {"args", 0, ARG_FLAG, &o.pass_args, "append --name value for every parameter", 0, 0},
        {"timeout", 0, ARG_FLOAT, &o.timeout_s,
         "seconds before a trial's command is killed (0: none)", 0, 1e9},
        {"heartbeat", 0, ARG_FLOAT, &o.heartbeat_s, "seconds between heartbeats (30)", 0.01, 1e6},
        {"grace", 0, ARG_FLOAT, &o.grace_s, "heartbeat age that marks a trial's worker dead (120)",
         0.01, 1e7},
        {"retries", 0, ARG_INT, &o.retries, "retries of a trial whose worker died (1)", 0, 1000},
        {"max-failures", 0, ARG_INT, &o.max_failures,
         "stop a worker after this many failed trials in a row (5)", 1, 1e6},
        {"show", 0, ARG_FLAG, &o.show, "print the study's trials and best parameters, run nothing",
         0, 0},
        {"json", 0, ARG_FLAG, &o.json, "with --show: print JSON", 0, 0},
    };
    ArgParse ap = {
        "tune",
        "[-- COMMAND...]",
        spec,
        (int)ARRAY_LEN(spec),
        0,
        0,
        "TPE search (Optuna semantics) running COMMAND per trial; studies are Optuna journals.",
        {0},
        0,
        NULL,
        0,
        false};
    int r = args_parse(&ap, argc, argv);
    if (r != 0) return r > 0 ? 0 : 2;
    if (!o.study || !o.storage) {
        fprintf(stderr, "error: tune: --study and --storage are required\n");
        return 2;
    }
    if (strcmp(o.direction, "minimize") != 0 && strcmp(o.direction, "maximize") != 0) {
        fprintf(stderr, "error: tune: --direction must be minimize or maximize\n");
        return 2;
    }
    if (o.show) return show(&o);
    if (ap.n_rest < 1) {
        fprintf(stderr, "error: tune: give the objective command after '--'\n");
        return 2;
    }
    o.cmd = ap.rest;
    o.n_cmd = ap.n_rest;
    // check the space before starting anything
    HpoSpace sp;
    if (load_space(&sp, o.space_spec) != STATUS_OK) return cli_fail("tune: --space");
    hpo_space_release(&sp);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    if (o.workers == 1) return worker(&o, 0);
    pid_t *pids = xcalloc((size_t)o.workers, sizeof(pid_t));
    fflush(NULL);
    for (int w = 0; w < o.workers; w++) {
        pids[w] = fork();
        if (pids[w] == 0) _exit(worker(&o, w));
        if (pids[w] < 0) {
            fprintf(stderr, "error: tune: cannot fork worker %d: %s\n", w, strerror(errno));
            pids[w] = 0;
        }
    }
    int rc = 0;
    for (int w = 0; w < o.workers; w++) {
        if (pids[w] <= 0) {
            rc = 1;
            continue;
        }
        int st;
        while (waitpid(pids[w], &st, 0) < 0 && errno == EINTR) {
            if (g_stop)
                for (int k = 0; k < o.workers; k++)
                    if (pids[k] > 0) kill(pids[k], SIGTERM);
        }
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) rc = 1;
    }
    free(pids);
    return rc;
}
