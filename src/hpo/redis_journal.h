/*
 * redis_journal.h - journal backend on Redis with the key layout of Optuna's
 * JournalRedisBackend, so Optuna and edgeforge workers on several machines share a study.
 *
 *   "<prefix>:log_number"  the number of the last log (-1 before the first)
 *   "<prefix>:log:<n>"     log n as JSON text
 * Appends run Optuna's Lua script (INCR the counter, SET the log) so numbering is atomic.
 *
 *   HpoBackend *be;
 *   hpo_redis_backend_open(&be, "redis://127.0.0.1:6379/0?prefix=study1");
 *
 * URL: redis://HOST:PORT[/DB][?prefix=PREFIX] (DB and prefix as in redis.Redis.from_url(url)
 * and JournalRedisBackend(url, prefix=...); the default prefix is "" like Optuna's).
 */
#ifndef EF_HPO_REDIS_JOURNAL_H
#define EF_HPO_REDIS_JOURNAL_H

#include "hpo/journal.h"

Status hpo_redis_backend_open(HpoBackend **out, const char *url);

#endif
