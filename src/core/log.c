#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static LogLevel g_level = LOG_INFO; // set once by the CLI; read-only afterwards

void log_set_level(LogLevel level) { g_level = level; }
LogLevel log_get_level(void) { return g_level; }

void log_msg(LogLevel level, const char *fmt, ...) {
    static const char *prefix[] = {"error: ", "warning: ", "", ""};
    if (level > g_level) return;
    va_list ap;
    va_start(ap, fmt);
    fputs(prefix[level], stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

double time_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void fmt_duration(char *buf, size_t n, double s) {
    if (s < 0 || s > 1e7) {
        snprintf(buf, n, "--:--");
        return;
    }
    int t = (int)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%d:%02d:%02d", t / 3600, (t / 60) % 60, t % 60);
    else
        snprintf(buf, n, "%02d:%02d", t / 60, t % 60);
}

void progress_init(Progress *p, const char *label, int64_t total) {
    p->label = label;
    p->total = total;
    p->t_start = time_now();
    p->t_last = 0;
    p->is_tty = isatty(2);
}

static void progress_print(Progress *p, int64_t done, const char *extra, int final) {
    double now = time_now(), el = now - p->t_start;
    double rate = el > 0 ? (double)done / el : 0;
    double eta = (rate > 0 && p->total > 0) ? (double)(p->total - done) / rate : -1;
    char se[16], sl[16];
    fmt_duration(se, sizeof se, final ? el : eta);
    fmt_duration(sl, sizeof sl, el);
    double pct = p->total > 0 ? 100.0 * (double)done / (double)p->total : 0;
    fprintf(stderr, "%s%s %lld/%lld %5.1f%% %.1f/s %s %s %s%s", p->is_tty ? "\r\033[K" : "",
            p->label, (long long)done, (long long)p->total, pct, rate, final ? "took" : "eta",
            final ? sl : se, extra ? extra : "", (p->is_tty && !final) ? "" : "\n");
    fflush(stderr);
}

void progress_update(Progress *p, int64_t done, const char *extra) {
    if (g_level < LOG_INFO) return;
    double now = time_now();
    double every = p->is_tty ? 0.5 : 10.0;
    if (now - p->t_last < every) return;
    p->t_last = now;
    progress_print(p, done, extra, 0);
}

void progress_finish(Progress *p, const char *extra) {
    if (g_level < LOG_INFO) return;
    progress_print(p, p->total, extra, 1);
}
