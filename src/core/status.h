/*
 * status.h - run-time failure reporting for library code.
 *
 * Library functions return a Status. On failure they record one human-readable
 * line (git style: lowercase, no final full stop, the subject in quotes) in a
 * thread-local buffer through fail(); the CLI prints it as "error: <msg>" and
 * exits. Library code never exits.
 *
 *   if (!f) return fail(STATUS_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
 *   ...
 *   Status s = model_load(&m, path);
 *   if (s != STATUS_OK) fprintf(stderr, "error: %s\n", status_msg());
 */
#ifndef EF_STATUS_H
#define EF_STATUS_H

typedef enum {
    STATUS_OK = 0,
    STATUS_ERR_IO,          // cannot open/read/write a file or socket
    STATUS_ERR_FORMAT,      // malformed or unsupported input data
    STATUS_ERR_NOMEM,       // a large allocation failed
    STATUS_ERR_ARG,         // an invalid argument reached the library
    STATUS_ERR_DEVICE,      // accelerator failure
    STATUS_ERR_NUMERIC,     // NaN/Inf or a factorisation that failed
    STATUS_ERR_UNSUPPORTED, // valid input that edgeforge does not handle
    STATUS_COUNT
} Status;

// Name of a status code ("io error", "format error", ...).
const char *status_str(Status s);

// Records the formatted message as the calling thread's last error and returns s.
Status fail(Status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// Prepends "context: " to the current message (for callers that add the file name
// or the step). Returns s unchanged.
Status fail_context(Status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// The calling thread's last error message ("" if none).
const char *status_msg(void);

// Clears the last error message.
void status_clear(void);

#endif
