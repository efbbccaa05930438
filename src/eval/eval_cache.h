/*
 * eval_cache.h - a file of computed request log-likelihoods, so that an evaluation that was
 * stopped (a 2-hour MMLU + HellaSwag run on 2 cores) starts again where it was: `edgeforge
 * eval MODEL --cache FILE`. The counterpart of lm-eval's --use_cache (a per-model sqlite
 * file of model responses keyed by request).
 *
 * Format (text, one record per line, appended and flushed after every scored batch):
 *   edgeforge-eval-cache 1 bos=<0|1> window=<tokens> model=<model identity, to the end>
 *   <key: 16 hex digits> <log-likelihood: C99 hex float, exact> <is_greedy: 0|1>
 * The key is a 64-bit FNV-1a hash of the request's scored tokens (context after the window's
 * left cut, then continuation, with their lengths), so a request is found whatever task,
 * document order or --limit produced it. The header pins what else decides the numbers: the
 * model (path and file size, as the CLI words it; also the --dtype), BOS, the window; a file
 * written with other settings is refused, never mixed. A last line without its newline (the
 * run was killed while writing it) is dropped when the file is opened; any other malformed
 * line is an error naming the file and the line.
 *
 *   EvalCache c;
 *   if (eval_cache_open(&c, "run.cache", "model.gguf (140 MB)", false, 2048) != STATUS_OK) ...
 *   EvalOptions o = eval_options_default(); o.cache = &c;   // eval_task reads and appends
 *   eval_cache_close(&c);
 */
#ifndef EF_EVAL_CACHE_H
#define EF_EVAL_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/status.h"

typedef struct {
    uint64_t key;
    double ll;
    bool greedy;
} EvalCacheEntry;

typedef struct {
    char *path;
    FILE *f;               // open for appending; NULL for a cache parsed from memory
    EvalCacheEntry *slots; // open addressing, key 0 = empty (keys are never 0)
    size_t cap, n;         // cap: a power of two > 2 n
} EvalCache;

// Key of a request: its scored context tokens (after the left cut) and continuation tokens.
uint64_t eval_cache_key(const int32_t *ctx, int n_ctx, const int32_t *cont, int n_cont);

// Opens (creating it with its header when missing or empty), locks (flock, exclusive, until
// eval_cache_close) and reads the file. Errors: STATUS_ERR_IO (cannot read / write, or
// another run holds the lock), STATUS_ERR_FORMAT (not a cache file, a malformed line, or a
// header for another model / BOS / window: the message names both).
Status eval_cache_open(EvalCache *c, const char *path, const char *model_id, bool add_bos,
                       int window);
// Parses a cache file's bytes (the fuzz target's entry point; name is for messages).
// *complete_len receives the length up to the last newline (what eval_cache_open keeps).
Status eval_cache_parse(EvalCache *c, const char *buf, size_t n, const char *name,
                        const char *model_id, bool add_bos, int window, size_t *complete_len);
bool eval_cache_get(EvalCache *c, uint64_t key, double *ll, bool *greedy);
// Adds an entry in memory and, for an opened file, appends its line (buffered).
Status eval_cache_put(EvalCache *c, uint64_t key, double ll, bool greedy);
// Pushes the appended lines to the file (after each batch). Errors: STATUS_ERR_IO.
Status eval_cache_flush(EvalCache *c);
void eval_cache_close(EvalCache *c);

#endif
