#include "status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char last_msg[1024];

const char *status_str(Status s) {
    static const char *names[STATUS_COUNT] = {
        [STATUS_OK] = "ok",
        [STATUS_ERR_IO] = "io error",
        [STATUS_ERR_FORMAT] = "format error",
        [STATUS_ERR_NOMEM] = "out of memory",
        [STATUS_ERR_ARG] = "invalid argument",
        [STATUS_ERR_DEVICE] = "device error",
        [STATUS_ERR_NUMERIC] = "numeric error",
        [STATUS_ERR_UNSUPPORTED] = "unsupported",
    };
    return (s >= 0 && s < STATUS_COUNT) ? names[s] : "unknown status";
}

Status fail(Status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_msg, sizeof last_msg, fmt, ap);
    va_end(ap);
    return s;
}

Status fail_context(Status s, const char *fmt, ...) {
    char prefix[512], old[sizeof last_msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, last_msg, sizeof old);
    snprintf(last_msg, sizeof last_msg, "%s: %s", prefix, old);
    return s;
}

const char *status_msg(void) { return last_msg; }

void status_clear(void) { last_msg[0] = '\0'; }
