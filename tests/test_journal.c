/*
 * test_journal.c - Optuna JournalStorage compatibility, bad journals, the lock file, median
 * pruning and recovery of trials whose worker died.
 *
 * tests/fixtures/hpo/optuna_journal.log was written by Optuna itself (JournalFileBackend,
 * tools/check_optuna_journal.py write) with every trial state, a deleted study, NaN
 * intermediate values, user attrs and an enqueued trial; optuna_journal_expected.json is
 * Optuna's own view of it. The reverse direction (Optuna reading edgeforge's journals) is
 * checked by tools/check_optuna_journal.py check (see docs/hpo.md).
 */
#include "core/common.h"
#include "core/fileio.h"
#include "core/log.h"
#include "hpo/journal.h"
#include "hpo/pruner.h"
#include "hpo/study.h"
#include "testutil.h"

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

static char g_dir[256];

static const char *tmp_path(const char *name) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof(buf[k]), "%s/%s", g_dir, name);
    return buf[k];
}

static int setup(void **state) {
    (void)state;
    snprintf(g_dir, sizeof(g_dir), "/tmp/ef_test_journal_%d", (int)getpid());
    mkdir(g_dir, 0755);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : 0;
}

static void copy_file(const char *src, const char *dst) {
    char *data;
    size_t n;
    assert_int_equal(file_read_all(src, &data, &n), STATUS_OK);
    assert_int_equal(file_write_all(dst, data, n), STATUS_OK);
    free(data);
}

static void write_text(const char *path, const char *text) {
    assert_int_equal(file_write_all(path, text, strlen(text)), STATUS_OK);
}

static int same_num(double a, double b) {
    return a == b || fabs(a - b) <= 1e-12 * fmax(1, fabs(b));
}

static void test_replay_optuna_written_journal(void **state) {
    (void)state;
    const char *log = tmp_path("optuna.log");
    copy_file(fixture_path("hpo/optuna_journal.log"), log);
    json_t *exp = json_load_file(fixture_path("hpo/optuna_journal_expected.json"), 0, NULL);
    assert_non_null(exp);
    HpoJournalStore *js;
    assert_int_equal(hpo_journal_open(&js, log), STATUS_OK);
    const HpoJournal *j = hpo_journal_state(js);
    const HpoStudy *st = hpo_journal_find_study(j, "paper");
    assert_non_null(st);
    assert_null(hpo_journal_find_study(j, "scratch")); // deleted
    assert_int_equal(st->study_id, (int)json_integer_value(json_object_get(exp, "study_id")));
    json_t *ours = hpo_study_to_json(j, st->study_id);
    json_t *et = json_object_get(exp, "trials"), *ot = json_object_get(ours, "trials");
    assert_int_equal(json_array_size(et), json_array_size(ot));
    int states_seen = 0;
    for (size_t i = 0; i < json_array_size(et); i++) {
        json_t *e = json_array_get(et, i), *o = json_array_get(ot, i);
        assert_int_equal(json_integer_value(json_object_get(e, "number")),
                         json_integer_value(json_object_get(o, "number")));
        int est = (int)json_integer_value(json_object_get(e, "state"));
        assert_int_equal(est, json_integer_value(json_object_get(o, "state")));
        states_seen |= 1 << est;
        json_t *ev = json_object_get(e, "value"), *ov = json_object_get(o, "value");
        assert_int_equal(json_is_null(ev), json_is_null(ov));
        if (!json_is_null(ev)) assert_true(same_num(json_number_value(ov), json_number_value(ev)));
        json_t *ep = json_object_get(e, "params"), *op = json_object_get(o, "params");
        assert_int_equal(json_object_size(ep), json_object_size(op));
        const char *k;
        json_t *v;
        json_object_foreach(ep, k, v) {
            assert_non_null(json_object_get(op, k));
            assert_true(same_num(json_number_value(json_object_get(op, k)), json_number_value(v)));
            // distributions parse to the same thing
            char *a =
                json_dumps(json_object_get(json_object_get(e, "distributions"), k), JSON_COMPACT);
            char *b =
                json_dumps(json_object_get(json_object_get(o, "distributions"), k), JSON_COMPACT);
            HpoDist da, db;
            assert_int_equal(hpo_dist_from_json(&da, a, k), STATUS_OK);
            assert_int_equal(hpo_dist_from_json(&db, b, k), STATUS_OK);
            assert_true(hpo_dist_equal(&da, &db));
            hpo_dist_release(&da);
            hpo_dist_release(&db);
            free(a);
            free(b);
        }
        json_t *ei = json_object_get(e, "intermediate"), *oi = json_object_get(o, "intermediate");
        assert_int_equal(json_object_size(ei), json_object_size(oi));
        json_object_foreach(ei, k, v) {
            json_t *w = json_object_get(oi, k);
            assert_non_null(w);
            if (json_is_null(v))
                assert_true(json_is_null(w)); // NaN both sides
            else
                assert_true(same_num(json_number_value(w), json_number_value(v)));
        }
        assert_true(json_equal(json_object_get(e, "user_attrs"), json_object_get(o, "user_attrs")));
    }
    // COMPLETE, PRUNED, FAIL, RUNNING and WAITING all present
    assert_int_equal(states_seen, 0x1f);
    json_decref(ours);
    json_decref(exp);
    hpo_journal_close(js);
}

static void space_paper(HpoSpace *sp) {
    hpo_space_table3(sp);
    assert_int_equal(hpo_space_add_flag(sp, "opt=cat:adamw,muon"), STATUS_OK);
}

static void test_continue_optuna_study(void **state) {
    (void)state;
    const char *log = tmp_path("continue.log");
    copy_file(fixture_path("hpo/optuna_journal.log"), log);
    HpoJournalStore *js;
    assert_int_equal(hpo_journal_open(&js, log), STATUS_OK);
    int sid;
    assert_int_not_equal(hpo_study_open(js, "paper", true, false, &sid), STATUS_OK); // direction
    assert_int_equal(hpo_study_open(js, "paper", false, false, &sid), STATUS_OK);
    int n0 = hpo_journal_state(js)->studies[sid].n_trials;
    HpoSpace sp;
    space_paper(&sp);
    HpoTpeConfig cfg = hpo_tpe_default_config();
    cfg.n_startup_trials = 4;
    HpoAskOptions o = hpo_ask_default_options();
    o.max_trials = n0 + 3;
    Rng rng;
    rng_seed(&rng, 1);
    HpoAsk a;
    // the trial Optuna enqueued (WAITING) is claimed first, with its fixed parameters
    assert_int_equal(hpo_study_ask(js, sid, &sp, &cfg, &rng, &o, &a), STATUS_OK);
    assert_true(a.retried);
    assert_true(a.params[0] == 1.0 && a.params[1] == 32);
    assert_int_equal(hpo_trial_tell(js, a.trial_id, HPO_COMPLETE, 0.5), STATUS_OK);
    hpo_ask_release(&a);
    int made = 0;
    for (;;) {
        assert_int_equal(hpo_study_ask(js, sid, &sp, &cfg, &rng, &o, &a), STATUS_OK);
        if (a.trial_id < 0) break;
        for (int p = 0; p < sp.n; p++)
            assert_true(hpo_dist_contains(&sp.params[p].dist, a.params[p]));
        assert_int_equal(hpo_trial_report(js, a.trial_id, 0, 1.0), STATUS_OK);
        assert_int_equal(hpo_trial_tell(js, a.trial_id, HPO_COMPLETE, a.params[0]), STATUS_OK);
        hpo_ask_release(&a);
        made++;
    }
    hpo_ask_release(&a);
    // budget: FAIL trials do not count, so new trials fill up to max_trials active ones
    const HpoJournal *j = hpo_journal_state(js);
    int active = 0;
    for (int i = 0; i < j->studies[sid].n_trials; i++)
        if (j->trials[j->studies[sid].trial_ids[i]].state != HPO_FAIL) active++;
    assert_int_equal(active, o.max_trials);
    assert_true(made >= 2);
    // Optuna's own RUNNING trial (no edgeforge worker attrs) is left alone
    int running = 0;
    for (int i = 0; i < j->studies[sid].n_trials; i++)
        if (j->trials[j->studies[sid].trial_ids[i]].state == HPO_RUNNING) running++;
    assert_int_equal(running, 1);
    // a fresh replay sees the same thing
    HpoJournalStore *js2;
    assert_int_equal(hpo_journal_open(&js2, log), STATUS_OK);
    json_t *x = hpo_study_to_json(hpo_journal_state(js), sid);
    json_t *y = hpo_study_to_json(hpo_journal_state(js2), sid);
    assert_true(json_equal(x, y));
    json_decref(x);
    json_decref(y);
    hpo_journal_close(js2);
    hpo_journal_close(js);
    hpo_space_release(&sp);
}

static void test_bad_journal_lines(void **state) {
    (void)state;
    const char *log = tmp_path("bad.log");
    HpoJournalStore *js;
    const char *good =
        "{\"op_code\":0,\"worker_id\":\"w\",\"study_name\":\"s\",\"directions\":[1]}\n"
        "{\"op_code\":4,\"worker_id\":\"w\",\"study_id\":0,\"datetime_start\":null}\n";
    // a half-written final line is not a log yet: ignored, and cut off by the next writer
    char *text = xmalloc(1024);
    snprintf(text, 1024, "%s{\"op_code\":6,\"worker_id\":\"w\",\"tri", good);
    write_text(log, text);
    assert_int_equal(hpo_journal_open(&js, log), STATUS_OK);
    assert_int_equal(hpo_journal_state(js)->n_trials, 1);
    assert_int_equal(hpo_trial_tell(js, 0, HPO_COMPLETE, 1.5), STATUS_OK);
    assert_int_equal(hpo_journal_state(js)->trials[0].state, HPO_COMPLETE);
    hpo_journal_close(js);
    char *data;
    size_t n;
    assert_int_equal(file_read_all(log, &data, &n), STATUS_OK);
    assert_null(strstr(data, "\"tri\n"));
    assert_true(data[n - 1] == '\n');
    free(data);
    // a malformed line in the middle is an error naming the file and the line
    snprintf(text, 1024, "%s{\"op_code\":6,oops}\n%s", good, good);
    write_text(log, text);
    assert_int_equal(hpo_journal_open(&js, log), STATUS_ERR_FORMAT);
    assert_non_null(strstr(status_msg(), "line 3"));
    assert_non_null(strstr(status_msg(), log));
    // valid JSON without the fields its op_code needs
    const char *bad_lines[] = {
        "{\"op_code\":4,\"worker_id\":\"w\"}\n",
        "{\"op_code\":99,\"worker_id\":\"w\"}\n",
        "{\"worker_id\":\"w\"}\n",
        "[1,2,3]\n",
        "{\"op_code\":5,\"worker_id\":\"w\",\"trial_id\":0,\"param_name\":\"x\",\"param_value_"
        "internal\":1,\"distribution\":\"{bad\"}\n",
        "{\"op_code\":0,\"worker_id\":\"w\",\"study_name\":\"t\",\"directions\":[7]}\n",
    };
    for (size_t i = 0; i < ARRAY_LEN(bad_lines); i++) {
        snprintf(text, 1024, "%s%s", good, bad_lines[i]);
        write_text(log, text);
        Status s = hpo_journal_open(&js, log);
        if (s == STATUS_OK) {
            hpo_journal_close(js);
            fail_msg("bad line %zu accepted", i);
        }
        assert_non_null(strstr(status_msg(), "line 3"));
    }
    // an operation by another worker on a missing trial is skipped like Optuna does
    snprintf(text, 1024,
             "%s{\"op_code\":7,\"worker_id\":\"other\",\"trial_id\":42,\"step\":1,\"intermediate_"
             "value\":1}\n",
             good);
    write_text(log, text);
    assert_int_equal(hpo_journal_open(&js, log), STATUS_OK);
    hpo_journal_close(js);
    free(text);
    // a line of bare NaN tokens, each growing from 3 to 11 bytes when sanitized (overran
    // the parser's buffer under ASan before; found by fuzz/fuzz_journal.c)
    char nans[301];
    for (int i = 0; i < 100; i++)
        memcpy(nans + 3 * i, "NaN", 3);
    nans[300] = 0;
    json_error_t err;
    json_t *j = hpo_journal_parse_line(nans, 300, &err);
    assert_null(j); // not JSON, and no overrun
    j = hpo_journal_parse_line("[NaN,NaN,NaN]", 13, &err);
    assert_non_null(j);
    assert_int_equal(json_array_size(j), 3);
    json_decref(j);
}

static void test_waits_for_optuna_lock(void **state) {
    (void)state;
    const char *log = tmp_path("locked.log");
    const char *lock = tmp_path("locked.log.lock");
    write_text(log, "");
    // Optuna's JournalFileSymlinkLock: a symlink "<path>.lock" -> path
    assert_int_equal(symlink(log, lock), 0);
    pid_t child = fork();
    if (child == 0) {
        usleep(300000);
        unlink(lock);
        _exit(0);
    }
    HpoJournalStore *js;
    assert_int_equal(hpo_journal_open(&js, log), STATUS_OK);
    double t0 = time_now();
    int sid;
    assert_int_equal(hpo_study_open(js, "s", false, true, &sid), STATUS_OK);
    double waited = time_now() - t0;
    int st;
    waitpid(child, &st, 0);
    assert_true(waited > 0.2); // it waited for the lock to go
    struct stat sb;
    assert_int_not_equal(lstat(lock, &sb), 0); // and released its own
    hpo_journal_close(js);
}

// JournalFileOpenLock: a plain O_EXCL file "<path>.lock" held by another process.
static void test_waits_for_optuna_open_lock(void **state) {
    (void)state;
    const char *log = tmp_path("olocked.log");
    const char *lock = tmp_path("olocked.log.lock");
    write_text(log, "");
    write_text(lock, "");
    pid_t child = fork();
    if (child == 0) {
        usleep(300000);
        unlink(lock);
        _exit(0);
    }
    char url[600];
    snprintf(url, sizeof(url), "journal-open:%s", log);
    HpoJournalStore *js;
    assert_int_equal(hpo_journal_open(&js, url), STATUS_OK);
    double t0 = time_now();
    int sid;
    assert_int_equal(hpo_study_open(js, "s", false, true, &sid), STATUS_OK);
    assert_true(time_now() - t0 > 0.2);
    int st;
    waitpid(child, &st, 0);
    struct stat sb;
    assert_int_not_equal(lstat(lock, &sb), 0);
    hpo_journal_close(js);
}

// A trial on another host whose heartbeat is older than the grace period is failed.
static void test_stale_heartbeat_other_host(void **state) {
    (void)state;
    const char *log = tmp_path("stale.log");
    write_text(log, "");
    HpoJournalStore *js;
    assert_int_equal(hpo_journal_open(&js, log), STATUS_OK);
    int sid;
    assert_int_equal(hpo_study_open(js, "s", false, true, &sid), STATUS_OK);
    json_t *l = hpo_log_new(HPO_OP_CREATE_TRIAL);
    json_object_set_new(l, "study_id", json_integer(sid));
    json_object_set_new(l, "datetime_start", json_null());
    json_t *sa = json_object(), *w = json_object();
    json_object_set_new(w, "host", json_string("some-other-machine"));
    json_object_set_new(w, "pid", json_integer(1));
    json_object_set_new(sa, "edgeforge:worker", w);
    json_object_set_new(sa, "edgeforge:heartbeat", json_real(1000.0)); // 1970: long stale
    json_object_set_new(l, "system_attrs", sa);
    assert_int_equal(hpo_journal_append(js, &l, 1), STATUS_OK);
    // a fresh heartbeat on another host is left alone
    l = hpo_log_new(HPO_OP_CREATE_TRIAL);
    json_object_set_new(l, "study_id", json_integer(sid));
    json_object_set_new(l, "datetime_start", json_null());
    sa = json_object();
    w = json_object();
    json_object_set_new(w, "host", json_string("some-other-machine"));
    json_object_set_new(w, "pid", json_integer(1));
    json_object_set_new(sa, "edgeforge:worker", w);
    json_object_set_new(sa, "edgeforge:heartbeat", json_real((double)time(NULL)));
    json_object_set_new(l, "system_attrs", sa);
    assert_int_equal(hpo_journal_append(js, &l, 1), STATUS_OK);
    HpoAskOptions o = hpo_ask_default_options();
    o.max_retries = 0;
    int nf;
    assert_int_equal(hpo_study_recover(js, sid, &o, &nf), STATUS_OK);
    assert_int_equal(nf, 1);
    const HpoJournal *j = hpo_journal_state(js);
    assert_int_equal(j->trials[j->studies[sid].trial_ids[0]].state, HPO_FAIL);
    assert_int_equal(j->trials[j->studies[sid].trial_ids[1]].state, HPO_RUNNING);
    assert_int_equal(j->studies[sid].n_trials, 2); // no retry with max_retries 0
    hpo_journal_close(js);
}

static void test_recover_dead_worker(void **state) {
    (void)state;
    const char *log = tmp_path("dead.log");
    write_text(log, "");
    HpoJournalStore *js;
    assert_int_equal(hpo_journal_open(&js, log), STATUS_OK);
    int sid;
    assert_int_equal(hpo_study_open(js, "s", false, true, &sid), STATUS_OK);
    HpoSpace sp;
    space_paper(&sp);
    HpoTpeConfig cfg = hpo_tpe_default_config();
    HpoAskOptions o = hpo_ask_default_options();
    o.max_trials = 2;
    Rng rng;
    rng_seed(&rng, 3);
    HpoAsk a;
    assert_int_equal(hpo_study_ask(js, sid, &sp, &cfg, &rng, &o, &a), STATUS_OK);
    int dead_trial = a.trial_id;
    double p0 = a.params[0];
    hpo_ask_release(&a);
    // pretend its worker was a process that has exited
    pid_t child = fork();
    if (child == 0) _exit(0);
    int st;
    waitpid(child, &st, 0);
    char host[256];
    gethostname(host, sizeof(host));
    json_t *w = json_object();
    json_object_set_new(w, "host", json_string(host));
    json_object_set_new(w, "pid", json_integer(child));
    json_t *logj = hpo_log_new(HPO_OP_SET_TRIAL_SYSTEM_ATTR);
    json_object_set_new(logj, "trial_id", json_integer(dead_trial));
    json_t *attr = json_object();
    json_object_set_new(attr, "edgeforge:worker", w);
    json_object_set_new(logj, "system_attr", attr);
    assert_int_equal(hpo_journal_append(js, &logj, 1), STATUS_OK);
    // the next ask fails it and claims the retry with the same parameters
    assert_int_equal(hpo_study_ask(js, sid, &sp, &cfg, &rng, &o, &a), STATUS_OK);
    const HpoJournal *j = hpo_journal_state(js);
    assert_int_equal(j->trials[dead_trial].state, HPO_FAIL);
    assert_true(a.retried);
    assert_true(a.params[0] == p0);
    const HpoTrial *t = hpo_journal_trial(j, a.trial_id);
    assert_int_equal(json_integer_value(json_object_get(t->system_attrs, "failed_trial")), 0);
    assert_int_equal(hpo_trial_tell(js, a.trial_id, HPO_COMPLETE, 1.0), STATUS_OK);
    hpo_ask_release(&a);
    assert_int_equal(hpo_study_ask(js, sid, &sp, &cfg, &rng, &o, &a), STATUS_OK);
    assert_true(a.trial_id >= 0 && !a.retried); // budget 2: one more new trial
    assert_int_equal(hpo_trial_tell(js, a.trial_id, HPO_COMPLETE, 2.0), STATUS_OK);
    hpo_ask_release(&a);
    assert_int_equal(hpo_study_ask(js, sid, &sp, &cfg, &rng, &o, &a), STATUS_OK);
    assert_int_equal(a.trial_id, -1);
    hpo_journal_close(js);
    hpo_space_release(&sp);
}

static void test_median_pruner(void **state) {
    (void)state;
    double v[] = {1, 3, NAN, 2, 10};
    assert_true(hpo_nanpercentile(v, 5, 50) == 2.5); // numpy.nanpercentile -> 2.5
    assert_true(hpo_nanpercentile(v, 5, 25) == 1.75);
    const char *log = tmp_path("prune.log");
    write_text(log, "");
    HpoJournalStore *js;
    assert_int_equal(hpo_journal_open(&js, log), STATUS_OK);
    int sid;
    assert_int_equal(hpo_study_open(js, "p", false, true, &sid), STATUS_OK);
    HpoSpace sp = {0};
    assert_int_equal(hpo_space_add_flag(&sp, "x=float:0:1"), STATUS_OK);
    HpoTpeConfig cfg = hpo_tpe_default_config();
    HpoAskOptions o = hpo_ask_default_options();
    Rng rng;
    rng_seed(&rng, 5);
    HpoPrunerConfig pc = hpo_median_pruner_default();
    HpoAsk a;
    // 5 completed trials with curves i, i/2 at steps 0, 1 (median at step 1: 1.0)
    for (int i = 0; i < 5; i++) {
        assert_int_equal(hpo_study_ask(js, sid, &sp, &cfg, &rng, &o, &a), STATUS_OK);
        assert_int_equal(hpo_trial_report(js, a.trial_id, 0, i), STATUS_OK);
        assert_int_equal(hpo_trial_report(js, a.trial_id, 1, i / 2.0), STATUS_OK);
        if (i < 4)
            assert_false(hpo_pruner_should_prune(&pc, hpo_journal_state(js), sid, a.trial_id));
        assert_int_equal(hpo_trial_tell(js, a.trial_id, HPO_COMPLETE, i / 2.0), STATUS_OK);
        hpo_ask_release(&a);
    }
    assert_int_equal(hpo_study_ask(js, sid, &sp, &cfg, &rng, &o, &a), STATUS_OK);
    assert_int_equal(hpo_trial_report(js, a.trial_id, 0, 1.5), STATUS_OK); // median 2 -> keep
    assert_false(hpo_pruner_should_prune(&pc, hpo_journal_state(js), sid, a.trial_id));
    assert_int_equal(hpo_trial_report(js, a.trial_id, 1, 1.4), STATUS_OK); // best 1.4 > 1.0
    assert_true(hpo_pruner_should_prune(&pc, hpo_journal_state(js), sid, a.trial_id));
    assert_int_equal(hpo_trial_tell(js, a.trial_id, HPO_PRUNED, NAN), STATUS_OK);
    assert_int_not_equal(hpo_trial_report(js, a.trial_id, 2, NAN), STATUS_OK);
    // reporting to a finished trial is an error for its own worker
    assert_int_not_equal(hpo_trial_report(js, a.trial_id, 2, 1.0), STATUS_OK);
    hpo_ask_release(&a);
    hpo_space_release(&sp);
    hpo_journal_close(js);
}

// MedianPruner parity: Optuna wrote the studies (tools/check_optuna_journal.py write-pruner)
// and recorded MedianPruner().prune() for each RUNNING probe trial.
static void test_median_pruner_parity_with_optuna(void **state) {
    (void)state;
    const char *log = tmp_path("pruner.log");
    copy_file(fixture_path("hpo/pruner_journal.log"), log);
    json_t *exp = json_load_file(fixture_path("hpo/pruner_expected.json"), 0, NULL);
    assert_non_null(exp);
    HpoJournalStore *js;
    assert_int_equal(hpo_journal_open(&js, log), STATUS_OK);
    const HpoJournal *j = hpo_journal_state(js);
    HpoPrunerConfig pc = hpo_median_pruner_default();
    json_t *probes = json_object_get(exp, "probes");
    int same = 0, n_pruned = 0;
    for (size_t i = 0; i < json_array_size(probes); i++) {
        json_t *p = json_array_get(probes, i);
        const HpoStudy *st =
            hpo_journal_find_study(j, json_string_value(json_object_get(p, "study")));
        assert_non_null(st);
        int number = (int)json_integer_value(json_object_get(p, "number"));
        assert_true(number < st->n_trials);
        bool want = json_is_true(json_object_get(p, "prune"));
        bool got = hpo_pruner_should_prune(&pc, j, st->study_id, st->trial_ids[number]);
        if (got == want)
            same++;
        else
            print_error("study %s trial %d: pruned %d, optuna %d\n", st->name, number, got, want);
        n_pruned += want;
    }
    print_message("median pruner: %d/%zu verdicts equal Optuna's (%d pruned)\n", same,
                  json_array_size(probes), n_pruned);
    assert_int_equal(same, (int)json_array_size(probes));
    assert_true(n_pruned > 0 && n_pruned < same);
    hpo_journal_close(js);
    json_decref(exp);
}

// Optuna reads what we write: runs tools/check_optuna_journal.py with the Python named by
// $EF_OPTUNA_PYTHON (e.g. /work/pyref/bin/python); skipped when it is not set.
static void test_optuna_reads_our_journal(void **state) {
    (void)state;
    const char *py = getenv("EF_OPTUNA_PYTHON");
    if (!py || !*py) {
        print_message("EF_OPTUNA_PYTHON not set: skipping the Optuna load check\n");
        skip();
    }
    const char *log = tmp_path("ours.log");
    write_text(log, "");
    HpoJournalStore *js;
    assert_int_equal(hpo_journal_open(&js, log), STATUS_OK);
    int sid;
    assert_int_equal(hpo_study_open(js, "ours", false, true, &sid), STATUS_OK);
    HpoSpace sp;
    space_paper(&sp);
    assert_int_equal(hpo_space_add_flag(&sp, "bits=int:2:8:step=2"), STATUS_OK);
    assert_int_equal(hpo_space_add_flag(&sp, "drop=float:0:0.5:step=0.1"), STATUS_OK);
    HpoTpeConfig cfg = hpo_tpe_default_config();
    cfg.n_startup_trials = 3;
    HpoAskOptions o = hpo_ask_default_options();
    Rng rng;
    rng_seed(&rng, 9);
    for (int i = 0; i < 8; i++) {
        HpoAsk a;
        assert_int_equal(hpo_study_ask(js, sid, &sp, &cfg, &rng, &o, &a), STATUS_OK);
        assert_int_equal(hpo_trial_report(js, a.trial_id, 0, a.params[0] + 1), STATUS_OK);
        HpoTrialState st = i == 3 ? HPO_PRUNED : i == 5 ? HPO_FAIL : HPO_COMPLETE;
        assert_int_equal(hpo_trial_tell(js, a.trial_id, st, a.params[0]), STATUS_OK);
        hpo_ask_release(&a);
    }
    json_t *dump = hpo_study_to_json(hpo_journal_state(js), sid);
    assert_int_equal(json_dump_file(dump, tmp_path("ours.json"), JSON_REAL_PRECISION(17)), 0);
    json_decref(dump);
    hpo_journal_close(js);
    hpo_space_release(&sp);
    char cmd[2048];
    snprintf(cmd, sizeof(cmd), "%s tools/check_optuna_journal.py check %s ours %s", py, log,
             tmp_path("ours.json"));
    assert_int_equal(system(cmd), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_replay_optuna_written_journal),
        cmocka_unit_test(test_continue_optuna_study),
        cmocka_unit_test(test_bad_journal_lines),
        cmocka_unit_test(test_waits_for_optuna_lock),
        cmocka_unit_test(test_waits_for_optuna_open_lock),
        cmocka_unit_test(test_stale_heartbeat_other_host),
        cmocka_unit_test(test_recover_dead_worker),
        cmocka_unit_test(test_median_pruner),
        cmocka_unit_test(test_median_pruner_parity_with_optuna),
        cmocka_unit_test(test_optuna_reads_our_journal),
    };
    return cmocka_run_group_tests_name("journal", tests, setup, teardown);
}
