/*
 * fileio.h - memory-mapped reading, whole-file reading and atomic writing.
 *
 * Readers map big files read-only (no copies of multi-GB weights). Writers write
 * to "<path>.tmp.<pid>" and rename() into place on success, so an error never
 * leaves a half-written output behind.
 */
#ifndef EF_FILEIO_H
#define EF_FILEIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "status.h"

typedef struct {
    const unsigned char *data; // read-only mapping (NULL for an empty file)
    size_t size;               // bytes
    char *path;                // owned copy of the path, for error messages
} MappedFile;

// Maps `path` read-only. Errors: STATUS_ERR_IO naming the file.
Status mapped_file_open(MappedFile *mf, const char *path);
// Unmaps; a zeroed MappedFile is a no-op.
void mapped_file_close(MappedFile *mf);

// Reads a whole file into a NUL-terminated heap buffer (*out, caller frees).
Status file_read_all(const char *path, char **out, size_t *size);

// Atomic file writer: fopen a temporary next to `path` (creating its directory if
// missing); commit renames it into place, abort removes it.
typedef struct {
    FILE *f;
    char *path;
    char *tmp_path;
    int slot; // its entry in the interrupt-cleanup table + 1 (0: none)
} AtomicFile;

// Makes SIGINT, SIGTERM and SIGHUP remove the temporary files of atomic writers that are
// still open, then end the process by the same signal: an interrupted run leaves neither a
// final output nor a "<path>.tmp.<pid>" behind. For programs (the CLI calls it first thing);
// up to 64 open writers are tracked.
void atomic_file_cleanup_on_signals(void);

Status atomic_file_open(AtomicFile *af, const char *path);
// Checks write errors, flushes, fsyncs and renames. Always releases af.
Status atomic_file_commit(AtomicFile *af);
// Removes the temporary file and releases af (no-op on a zeroed struct).
void atomic_file_abort(AtomicFile *af);

// Writes a buffer to `path` atomically.
Status file_write_all(const char *path, const void *data, size_t size);

// Creates a directory (and its parents) if missing.
Status dir_create(const char *path);
// True when `path` is an existing directory / regular file.
int path_is_dir(const char *path);
int path_is_file(const char *path);
// Removes the files directly inside `dir` (and empty subdirectories), then `dir` itself.
// Best effort, for cleaning up a temporary output directory after a failure.
void dir_remove(const char *dir);
// True when `dir` is a directory with no entries besides "." and "..".
bool dir_is_empty(const char *dir);
// True when `path` exists and is not an empty directory: an output directory the writers
// refuse to write over.
bool out_dir_taken(const char *path);
// Joins dir and name into a new heap string.
char *path_join(const char *dir, const char *name);

#endif
