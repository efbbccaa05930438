/*
 * json_file.c - see json_file.h.
 */
#include "json_file.h"

#include <stdlib.h>

#include "fileio.h"

Status json_parse_buf(json_t **out, const char *text, size_t len, size_t flags, const char *what) {
    json_error_t err;
    *out = json_loadb(text, len, flags, &err);
    if (!*out)
        return fail(STATUS_ERR_FORMAT, "bad JSON in '%s' (line %d, column %d): %s", what, err.line,
                    err.column, err.text);
    return STATUS_OK;
}

Status json_read_file(json_t **out, const char *path, size_t flags) {
    char *text;
    size_t len;
    *out = NULL;
    Status s = file_read_all(path, &text, &len);
    if (s != STATUS_OK) return s;
    s = json_parse_buf(out, text, len, flags, path);
    free(text);
    return s;
}

Status json_read_object(json_t **out, const char *path, size_t flags) {
    Status s = json_read_file(out, path, flags);
    if (s != STATUS_OK || json_is_object(*out)) return s;
    json_decref(*out);
    *out = NULL;
    return fail(STATUS_ERR_FORMAT, "'%s' is not a JSON object", path);
}
