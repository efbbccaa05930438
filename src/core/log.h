/*
 * log.h - diagnostics on stderr, and a progress line with ETA for long work.
 *
 * Results go to stdout (only from src/cli); everything else goes through here.
 * The level comes from the LogConfig the CLI sets once at start-up (-v/-q).
 */
#ifndef EF_LOG_H
#define EF_LOG_H

#include <stdint.h>

typedef enum { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG } LogLevel;

// Sets the global verbosity. Called once by the CLI before any work starts.
void log_set_level(LogLevel level);
LogLevel log_get_level(void);

void log_msg(LogLevel level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

// A progress line "label  done/total  pct  rate  ETA" redrawn on stderr at most
// every 0.5 s (a plain line every 10 s when stderr is not a terminal).
typedef struct {
    const char *label;
    int64_t total;
    double t_start, t_last;
    int is_tty;
} Progress;

void progress_init(Progress *p, const char *label, int64_t total);
// Reports `done` units finished; `extra` (may be NULL) is appended to the line.
void progress_update(Progress *p, int64_t done, const char *extra);
void progress_finish(Progress *p, const char *extra);

// Monotonic wall-clock time in seconds.
double time_now(void);

#endif
