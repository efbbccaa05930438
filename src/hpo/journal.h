/*
 * journal.h - Optuna's JournalStorage: an append-only log of JSON operations, replayed to
 * rebuild studies and trials (optuna/storages/journal/_storage.py, Optuna 5.0.0).
 *
 * One line per operation, {"op_code": N, "worker_id": "<uuid4>-<id>", ...}. Study and trial
 * ids are assigned by replay order (trial ids are global across studies). A log from another
 * worker that does not apply (unknown id, finished trial) is skipped, as Optuna does; the same
 * problem in one of our own logs is an error.
 *
 * Backends (where the lines live):
 *   file   - JournalFileBackend: append under Optuna's lock file "<path>.lock" (a symlink,
 *            JournalFileSymlinkLock; or O_EXCL, JournalFileOpenLock), flush + fsync; readers
 *            skip a final line without '\n'. A torn final line left by a killed writer is cut
 *            off by the next writer (under the lock), so Optuna can still read the file.
 *   redis  - JournalRedisBackend: "<prefix>:log_number" counter and "<prefix>:log:<n>" values,
 *            appended with the same Lua INCR+SET script (redis_journal.c, via hiredis).
 *
 *   HpoJournalStore *js;
 *   hpo_journal_open(&js, "journal:study.log");       // or "redis://127.0.0.1:6379"
 *   hpo_journal_sync(js);                             // replay new lines
 *   const HpoJournal *j = hpo_journal_state(js);
 *   hpo_journal_close(js);
 */
#ifndef EF_HPO_JOURNAL_H
#define EF_HPO_JOURNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"
#include "hpo/space.h"
#include "hpo/tpe.h"

enum {
    HPO_OP_CREATE_STUDY = 0,
    HPO_OP_DELETE_STUDY = 1,
    HPO_OP_SET_STUDY_USER_ATTR = 2,
    HPO_OP_SET_STUDY_SYSTEM_ATTR = 3,
    HPO_OP_CREATE_TRIAL = 4,
    HPO_OP_SET_TRIAL_PARAM = 5,
    HPO_OP_SET_TRIAL_STATE_VALUES = 6,
    HPO_OP_SET_TRIAL_INTERMEDIATE_VALUE = 7,
    HPO_OP_SET_TRIAL_USER_ATTR = 8,
    HPO_OP_SET_TRIAL_SYSTEM_ATTR = 9,
    HPO_OP_DISCARD_TRIALS = 10,
};

// Optuna's StudyDirection values.
enum { HPO_DIR_NOT_SET = 0, HPO_DIR_MINIMIZE = 1, HPO_DIR_MAXIMIZE = 2 };

typedef struct {
    char *name;
    HpoDist dist;
    double value; // internal representation
} HpoTrialParam;

typedef struct {
    int trial_id, number, study_id;
    HpoTrialState state;
    int n_values;
    double *values; // (n_values), NULL when unset
    int n_params;
    HpoTrialParam *params;
    int n_inter;
    int64_t *inter_steps;                     // (n_inter) in report order, steps unique
    double *inter_values;                     // (n_inter) NaN allowed
    json_t *user_attrs, *system_attrs;        // objects, owned
    char *datetime_start, *datetime_complete; // ISO 8601 or NULL
} HpoTrial;

typedef struct {
    int study_id;
    char *name;
    bool deleted;
    int n_directions;
    int *directions;
    json_t *user_attrs, *system_attrs;
    int n_trials;
    int *trial_ids; // by trial number
} HpoStudy;

typedef struct {
    int n_studies;
    HpoStudy *studies; // study_id = index (deleted studies keep their slot)
    int n_trials;
    HpoTrial *trials; // trial_id = index
    int64_t log_number_read;
    char worker_id[96];
    int last_created_trial_id; // by this worker, -1 if none
    int owned_trial_id;        // last trial this worker moved to RUNNING, -1 if none
} HpoJournal;

void hpo_journal_init(HpoJournal *j, const char *worker_id);
void hpo_journal_release(HpoJournal *j);
// Applies one log (Optuna's replay rules). Errors (STATUS_ERR_FORMAT) for a log without the
// fields its op_code needs, or when a log issued by this worker cannot apply.
Status hpo_journal_apply(HpoJournal *j, json_t *log);
// Finds a live study by name; NULL if none.
const HpoStudy *hpo_journal_find_study(const HpoJournal *j, const char *name);
const HpoTrial *hpo_journal_trial(const HpoJournal *j, int trial_id);
// Param of a trial by name, NULL if absent.
const HpoTrialParam *hpo_trial_param(const HpoTrial *t, const char *name);
// Last (largest) reported step; false when none.
bool hpo_trial_last_step(const HpoTrial *t, int64_t *step, double *value);

// Store: a backend plus the replayed state -------------------------------------------------

typedef struct HpoJournalStore HpoJournalStore;

// url: "journal:PATH", "journal-open:PATH" (O_EXCL lock), "redis://HOST:PORT[/PREFIX]" or a
// plain PATH. Creates the file if missing and replays it.
Status hpo_journal_open(HpoJournalStore **out, const char *url);
void hpo_journal_close(HpoJournalStore *js);
// Replays lines appended since the last sync.
Status hpo_journal_sync(HpoJournalStore *js);
const HpoJournal *hpo_journal_state(const HpoJournalStore *js);
// Appends logs (objects; op_code and worker_id are added) under the backend's lock, then
// syncs. Steals the references.
Status hpo_journal_append(HpoJournalStore *js, json_t **logs, int n);
// Holds the backend's lock across a sync-decide-append sequence (file: the journal lock file;
// redis: a SET NX key); hpo_journal_append inside the section does not lock again.
Status hpo_journal_lock(HpoJournalStore *js);
void hpo_journal_unlock(HpoJournalStore *js);

// Helpers for building logs: a new object {"op_code": op} and an ISO-8601 UTC timestamp with
// microseconds (buf >= 40 bytes).
json_t *hpo_log_new(int op_code);
void hpo_iso_now(char *buf, int cap);

// Parses one log line (n bytes, no newline). Python's bare NaN / Infinity / -Infinity tokens
// are accepted. NULL with err filled on invalid JSON.
json_t *hpo_journal_parse_line(const char *s, size_t n, json_error_t *err);

// Backend interface (file and redis implement it).
typedef struct HpoBackend {
    // Calls fn for each log with number >= from, in order; stops at the end of complete logs.
    Status (*read)(struct HpoBackend *b, int64_t from, Status (*fn)(void *ctx, json_t *log),
                   void *ctx);
    // Appends serialized lines (no trailing newline) atomically with respect to other writers.
    Status (*append)(struct HpoBackend *b, char **lines, int n);
    Status (*lock)(struct HpoBackend *b);
    void (*unlock)(struct HpoBackend *b);
    void (*close)(struct HpoBackend *b);
} HpoBackend;

Status hpo_file_backend_open(HpoBackend **out, const char *path, bool open_lock);
// Cuts a torn (newline-less) tail off a journal file; returns the number of bytes removed.
// Caller holds the lock.
Status hpo_file_backend_repair(const char *path, long *removed);

#endif
