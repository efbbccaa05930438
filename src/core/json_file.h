/*
 * json_file.h - JSON documents from files and buffers (jansson), with errors that name
 * the file and, for bad JSON, the line and column:
 *
 *   json_t *cfg;
 *   Status s = json_read_object(&cfg, "model/config.json", JSON_REJECT_DUPLICATES);
 *   // "cannot open 'model/config.json': No such file or directory"
 *   // "bad JSON in 'model/config.json' (line 3, column 7): ..."
 *   // "'model/config.json' is not a JSON object"
 *
 * flags are jansson's decoding flags. On failure *out is NULL.
 */
#ifndef EF_JSON_FILE_H
#define EF_JSON_FILE_H

#include <jansson.h>
#include <stddef.h>

#include "status.h"

// Parses text[0, len); `what` names the text in errors (a path, usually).
Status json_parse_buf(json_t **out, const char *text, size_t len, size_t flags, const char *what);
// Reads and parses the file at path.
Status json_read_file(json_t **out, const char *path, size_t flags);
// As json_read_file; the document must be an object.
Status json_read_object(json_t **out, const char *path, size_t flags);

#endif
