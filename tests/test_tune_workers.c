/*
 * test_tune_workers.c - `edgeforge tune` end to end: several worker processes on one journal
 * file, workers on a real redis-server started here, a worker killed with SIGKILL mid-trial,
 * pruning, and commands that crash or print nothing. The objective is a small sh+awk script.
 *
 * Needs the edgeforge binary ($BUILD/edgeforge). The redis test is skipped with a message when
 * redis-server is not installed (scripts/install-deps.sh installs it).
 */
#include "core/common.h"
#include "core/fileio.h"
#include "core/log.h"
#include "hpo/journal.h"
#include "hpo/study.h"
#include "testutil.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char g_dir[256];

static const char *tpath(const char *name) {
    static char buf[8][600];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof(buf[k]), "%s/%s", g_dir, name);
    return buf[k];
}

static const char *OBJ =
    "#!/bin/sh\n"
    "awk -v x=\"$EDGEFORGE_PARAM_X\" -v y=\"$EDGEFORGE_PARAM_Y\" 'BEGIN{v=(x-0.3)^2+(y-2)^2;"
    " printf \"{\\\"step\\\":0,\\\"value\\\":%.17g}\\n{\\\"step\\\":1,\\\"value\\\":%.17g}\\n"
    "{\\\"value\\\":%.17g}\\n\", v+1, v+0.5, v}' >> \"$EDGEFORGE_RESULT_FILE\"\n";

static void write_script(const char *path, const char *text) {
    assert_int_equal(file_write_all(path, text, strlen(text)), STATUS_OK);
    chmod(path, 0755);
}

static int setup(void **state) {
    (void)state;
    snprintf(g_dir, sizeof(g_dir), "/tmp/ef_test_tune_%d", (int)getpid());
    mkdir(g_dir, 0755);
    write_script(tpath("obj.sh"), OBJ);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_dir);
    int rc = system(cmd);
    (void)rc;
    return 0;
}

typedef struct {
    int n, complete, fail, pruned, running, waiting, max_number;
    int dup_numbers;
} Counts;

static Counts count_trials(const char *url, const char *study) {
    Counts c;
    memset(&c, 0, sizeof(c));
    HpoJournalStore *js;
    assert_int_equal(hpo_journal_open(&js, url), STATUS_OK);
    const HpoJournal *j = hpo_journal_state(js);
    const HpoStudy *st = hpo_journal_find_study(j, study);
    assert_non_null(st);
    char seen[4096] = {0};
    for (int i = 0; i < st->n_trials; i++) {
        const HpoTrial *t = &j->trials[st->trial_ids[i]];
        c.n++;
        if (t->number < 4096) {
            if (seen[t->number]) c.dup_numbers++;
            seen[t->number] = 1;
        }
        c.max_number = MAX(c.max_number, t->number);
        switch (t->state) {
        case HPO_COMPLETE:
            c.complete++;
            assert_int_equal(t->n_params, 2); // every finished trial has all its parameters
            assert_int_equal(t->n_values, 1);
            break;
        case HPO_FAIL: c.fail++; break;
        case HPO_PRUNED: c.pruned++; break;
        case HPO_RUNNING: c.running++; break;
        case HPO_WAITING: c.waiting++; break;
        }
    }
    hpo_journal_close(js);
    return c;
}

// Starts "edgeforge ARGS" in the background (via sh); returns its pid.
static pid_t spawn_cli(const char *args) {
    const char *build = getenv("BUILD");
    char cmd[4096];
    snprintf(cmd, sizeof(cmd), "exec %s/edgeforge -q %s >/dev/null 2>&1", build ? build : "build",
             args);
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    return pid;
}

static int wait_rc(pid_t pid) {
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static void test_many_workers_one_file(void **state) {
    (void)state;
    // two tune processes with 3 workers each on one journal: 6 processes share the lock
    char args[2048];
    snprintf(args, sizeof(args),
             "tune --study w --storage journal:%s --trials 30 --startup 5 --space "
             "'x=float:0:1;y=int:0:5' "
             "--workers 3 --seed %d -- %s",
             tpath("w.log"), 1, tpath("obj.sh"));
    pid_t a = spawn_cli(args);
    snprintf(args, sizeof(args),
             "tune --study w --storage journal:%s --trials 30 --startup 5 --space "
             "'x=float:0:1;y=int:0:5' "
             "--workers 3 --seed %d -- %s",
             tpath("w.log"), 2, tpath("obj.sh"));
    pid_t b = spawn_cli(args);
    assert_int_equal(wait_rc(a), 0);
    assert_int_equal(wait_rc(b), 0);
    char url[700];
    snprintf(url, sizeof(url), "journal:%s", tpath("w.log"));
    Counts c = count_trials(url, "w");
    print_message("6 workers, 1 journal: %d trials, %d complete, %d fail, %d running, %d dup\n",
                  c.n, c.complete, c.fail, c.running, c.dup_numbers);
    assert_int_equal(c.n, 30);
    assert_int_equal(c.complete, 30);
    assert_int_equal(c.dup_numbers, 0);
    assert_int_equal(c.max_number, 29);
    // no torn or foreign lock left behind
    struct stat sb;
    char lock[700];
    snprintf(lock, sizeof(lock), "%s.lock", tpath("w.log"));
    assert_int_not_equal(lstat(lock, &sb), 0);
    // --show prints the best parameters
    char *out;
    snprintf(args, sizeof(args), "tune --show --study w --storage journal:%s", tpath("w.log"));
    assert_int_equal(run_cli(args, &out), 0);
    assert_non_null(strstr(out, "best: trial"));
    free(out);
}

static void test_sigkill_worker_is_recovered(void **state) {
    (void)state;
    // trial 0 hangs (and records its pid) until killed; the rest are quick
    char script[2048];
    snprintf(script, sizeof(script),
             "#!/bin/sh\n"
             "if [ \"$EDGEFORGE_TRIAL_NUMBER\" = 0 ] && [ ! -e %s ]; then echo $$ > %s; exec sleep "
             "30; fi\n"
             "exec %s\n",
             tpath("hang.pid"), tpath("hang.pid"), tpath("obj.sh"));
    write_script(tpath("hang.sh"), script);
    char args[2048];
    snprintf(args, sizeof(args),
             "tune --study k --storage journal:%s --trials 6 --startup 3 --space "
             "'x=float:0:1;y=int:0:5' -- %s",
             tpath("k.log"), tpath("hang.sh"));
    pid_t p = spawn_cli(args);
    // wait until trial 0 is running its command
    for (int i = 0; i < 200 && access(tpath("hang.pid"), F_OK) != 0; i++)
        usleep(50000);
    usleep(100000);
    assert_int_equal(access(tpath("hang.pid"), F_OK), 0);
    kill(p, SIGKILL);
    waitpid(p, NULL, 0);
    char *pidtxt;
    size_t n;
    assert_int_equal(file_read_all(tpath("hang.pid"), &pidtxt, &n), STATUS_OK);
    pid_t hang = (pid_t)atoi(pidtxt);
    free(pidtxt);
    if (hang > 0) kill(-hang, SIGKILL), kill(hang, SIGKILL);
    char url[700];
    snprintf(url, sizeof(url), "journal:%s", tpath("k.log"));
    Counts c = count_trials(url, "k");
    assert_int_equal(c.running, 1); // the killed worker's trial is still RUNNING
    // a new worker marks it failed, retries its parameters, and finishes the study
    char *out;
    assert_int_equal(run_cli(args, &out), 0);
    free(out);
    c = count_trials(url, "k");
    print_message("after SIGKILL: %d trials, %d complete, %d fail, %d running\n", c.n, c.complete,
                  c.fail, c.running);
    assert_int_equal(c.fail, 1);
    assert_int_equal(c.running, 0);
    assert_int_equal(c.complete, 6);
    // the retry carries trial 0's parameters and names it
    HpoJournalStore *js;
    assert_int_equal(hpo_journal_open(&js, url), STATUS_OK);
    const HpoJournal *j = hpo_journal_state(js);
    const HpoStudy *st = hpo_journal_find_study(j, "k");
    const HpoTrial *t0 = &j->trials[st->trial_ids[0]];
    int found = 0;
    for (int i = 1; i < st->n_trials; i++) {
        const HpoTrial *t = &j->trials[st->trial_ids[i]];
        json_t *ft = json_object_get(t->system_attrs, "failed_trial");
        if (json_is_integer(ft) && json_integer_value(ft) == 0) {
            found++;
            assert_true(hpo_trial_param(t, "x")->value == hpo_trial_param(t0, "x")->value);
            assert_int_equal(t->state, HPO_COMPLETE);
        }
    }
    assert_int_equal(found, 1);
    hpo_journal_close(js);
}

static void test_bad_commands(void **state) {
    (void)state;
    char *out;
    char args[2048];
    // a command that crashes: each trial FAILs with the reason; the worker stops after 2
    write_script(tpath("crash.sh"), "#!/bin/sh\necho boom >&2\nexit 3\n");
    snprintf(args, sizeof(args),
             "tune --study c --storage journal:%s --trials 4 --space 'x=float:0:1;y=int:0:5' "
             "--max-failures 2 -- %s",
             tpath("c.log"), tpath("crash.sh"));
    assert_int_equal(run_cli(args, &out), 1);
    assert_non_null(strstr(out, "exited with status 3"));
    assert_non_null(strstr(out, "2 trials in a row failed"));
    free(out);
    char url[700];
    snprintf(url, sizeof(url), "journal:%s", tpath("c.log"));
    Counts c = count_trials(url, "c");
    assert_int_equal(c.fail, 2);
    assert_int_equal(c.running, 0);
    // a command that prints no result
    write_script(tpath("silent.sh"), "#!/bin/sh\nexit 0\n");
    snprintf(args, sizeof(args),
             "tune --study s --storage journal:%s --trials 2 --space 'x=float:0:1;y=int:0:5' "
             "--max-failures 1 -- %s",
             tpath("s.log"), tpath("silent.sh"));
    assert_int_equal(run_cli(args, &out), 1);
    assert_non_null(strstr(out, "no objective value"));
    free(out);
    snprintf(args, sizeof(args), "tune --show --study s --storage journal:%s", tpath("s.log"));
    assert_int_equal(run_cli(args, &out), 0);
    assert_non_null(strstr(out, "FAIL"));
    assert_non_null(strstr(out, "best: none"));
    free(out);
    // a command that does not exist
    snprintf(args, sizeof(args),
             "tune --study s2 --storage journal:%s --trials 1 --space 'x=float:0:1' --max-failures "
             "1 -- /nonexistent/cmd",
             tpath("s.log"));
    assert_int_equal(run_cli(args, &out), 1);
    assert_non_null(strstr(out, "status 127"));
    free(out);
    // invalid spaces fail before anything runs
    snprintf(args, sizeof(args),
             "tune --study v --storage journal:%s --space 'x=float:1:0' -- true", tpath("v.log"));
    assert_int_equal(run_cli(args, &out), 1);
    assert_non_null(strstr(out, "greater than high"));
    free(out);
    snprintf(args, sizeof(args), "tune --study v --storage journal:%s --space %s -- true",
             tpath("v.log"), tpath("missing.json"));
    assert_int_equal(run_cli(args, &out), 1);
    assert_non_null(strstr(out, "missing.json"));
    free(out);
    // a journal with a malformed line in the middle is reported, not replayed past
    const char *bad =
        "{\"op_code\":0,\"worker_id\":\"w\",\"study_name\":\"b\",\"directions\":[1]}\nnot json\n"
        "{\"op_code\":4,\"worker_id\":\"w\",\"study_id\":0,\"datetime_start\":null}\n";
    assert_int_equal(file_write_all(tpath("b.log"), bad, strlen(bad)), STATUS_OK);
    snprintf(args, sizeof(args), "tune --show --study b --storage journal:%s", tpath("b.log"));
    assert_int_equal(run_cli(args, &out), 1);
    assert_non_null(strstr(out, "line 2"));
    free(out);
}

static void test_pruning_cli(void **state) {
    (void)state;
    // curves: value(step) = v + 1/(step+1); bad points are pruned at step 1 or 2
    write_script(tpath("curve.sh"),
                 "#!/bin/sh\n"
                 "awk -v x=\"$EDGEFORGE_PARAM_X\" 'BEGIN{v=(x-0.3)^2; for(s=0;s<4;s++)"
                 " printf \"{\\\"step\\\":%d,\\\"value\\\":%.17g}\\n\", s, v+1/(s+1);"
                 " printf \"{\\\"value\\\":%.17g}\\n\", v}' >> \"$EDGEFORGE_RESULT_FILE\"\n");
    char args[2048];
    char *out;
    snprintf(args, sizeof(args),
             "tune --study p --storage journal:%s --trials 20 --startup 20 --prune --space "
             "'x=float:0:1;y=int:0:5' -- %s",
             tpath("p.log"), tpath("curve.sh"));
    assert_int_equal(run_cli(args, &out), 0);
    free(out);
    char url[700];
    snprintf(url, sizeof(url), "journal:%s", tpath("p.log"));
    Counts c = count_trials(url, "p");
    print_message("pruning: %d complete, %d pruned\n", c.complete, c.pruned);
    assert_int_equal(c.complete + c.pruned, 20);
    assert_true(c.pruned >= 1);
    assert_true(c.complete >= 5); // no pruning before 5 completed trials
}

// Optuna and edgeforge workers on one journal file at the same time (needs Optuna: runs the
// Python named by $EF_OPTUNA_PYTHON, e.g. /work/pyref/bin/python; skipped otherwise).
static void test_optuna_and_edgeforge_share_a_study(void **state) {
    (void)state;
    const char *py = getenv("EF_OPTUNA_PYTHON");
    if (!py || !*py) {
        print_message("EF_OPTUNA_PYTHON not set: skipping the mixed Optuna/edgeforge test\n");
        skip();
    }
    char args[2048];
    snprintf(args, sizeof(args),
             "tune --study mix --storage journal:%s --trials 24 --startup 5 "
             "--space 'x=float:0:1;y=int:0:5' --workers 2 -- %s",
             tpath("mix.log"), tpath("obj.sh"));
    pid_t ef = spawn_cli(args);
    char cmd[2048];
    snprintf(cmd, sizeof(cmd), "%s tools/check_optuna_journal.py worker %s mix 8 >/dev/null", py,
             tpath("mix.log"));
    assert_int_equal(system(cmd), 0);
    assert_int_equal(wait_rc(ef), 0);
    char url[700];
    snprintf(url, sizeof(url), "journal:%s", tpath("mix.log"));
    Counts c = count_trials(url, "mix");
    print_message("optuna + edgeforge workers: %d trials, %d complete, %d dup\n", c.n, c.complete,
                  c.dup_numbers);
    assert_int_equal(c.complete, c.n);
    assert_int_equal(c.dup_numbers, 0);
    assert_true(c.n >= 24);
    // and Optuna sees exactly what we see
    char *out;
    snprintf(args, sizeof(args), "tune --show --json --study mix --storage journal:%s > %s",
             tpath("mix.log"), tpath("mix.json"));
    assert_int_equal(run_cli(args, &out), 0);
    free(out);
    snprintf(cmd, sizeof(cmd), "%s tools/check_optuna_journal.py check %s mix %s >/dev/null", py,
             tpath("mix.log"), tpath("mix.json"));
    assert_int_equal(system(cmd), 0);
}

static int free_port(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    if (bind(s, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(s);
        return -1;
    }
    socklen_t l = sizeof(a);
    getsockname(s, (struct sockaddr *)&a, &l);
    int port = ntohs(a.sin_port);
    close(s);
    return port;
}

static void test_redis_workers(void **state) {
    (void)state;
    if (system("command -v redis-server >/dev/null 2>&1") != 0) {
        print_message(
            "redis-server not installed: skipping the redis test (scripts/install-deps.sh)\n");
        skip();
    }
    int port = free_port();
    assert_true(port > 0);
    char ports[16];
    snprintf(ports, sizeof(ports), "%d", port);
    pid_t srv = fork();
    if (srv == 0) {
        int fd = open("/dev/null", O_WRONLY);
        if (fd >= 0) dup2(fd, 1), dup2(fd, 2);
        execlp("redis-server", "redis-server", "--port", ports, "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--daemonize", "no", (char *)NULL);
        _exit(127);
    }
    char url[128];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d/0?prefix=ef", port);
    HpoJournalStore *js = NULL;
    for (int i = 0; i < 100; i++) {
        if (hpo_journal_open(&js, url) == STATUS_OK) break;
        usleep(50000);
    }
    assert_non_null(js);
    hpo_journal_close(js);
    char args[2048];
    snprintf(args, sizeof(args),
             "tune --study r --storage '%s' --trials 24 --startup 5 --space "
             "'x=float:0:1;y=int:0:5' --workers 2 -- %s",
             url, tpath("obj.sh"));
    pid_t a = spawn_cli(args), b = spawn_cli(args);
    int ra = wait_rc(a), rb = wait_rc(b);
    Counts c = count_trials(url, "r");
    print_message("redis, 4 workers: %d trials, %d complete, %d dup\n", c.n, c.complete,
                  c.dup_numbers);
    kill(srv, SIGTERM);
    waitpid(srv, NULL, 0);
    assert_int_equal(ra, 0);
    assert_int_equal(rb, 0);
    assert_int_equal(c.n, 24);
    assert_int_equal(c.complete, 24);
    assert_int_equal(c.dup_numbers, 0);
}

int main(void) {
    log_set_level(LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_many_workers_one_file),
        cmocka_unit_test(test_sigkill_worker_is_recovered),
        cmocka_unit_test(test_bad_commands),
        cmocka_unit_test(test_pruning_cli),
        cmocka_unit_test(test_redis_workers),
        cmocka_unit_test(test_optuna_and_edgeforge_share_a_study),
    };
    return cmocka_run_group_tests_name("tune_workers", tests, setup, teardown);
}
