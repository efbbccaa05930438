/*
 * redis_journal.c - Optuna's JournalRedisBackend layout over hiredis (see redis_journal.h).
 */
#include "hpo/redis_journal.h"

#include <hiredis.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/common.h"
#include "core/log.h"

typedef struct {
    HpoBackend base;
    redisContext *c;
    char *prefix;
    char *url;
    char token[96]; // our lock value
} RedisBackend;

// Optuna's append script, verbatim in behaviour: atomic counter then the log.
static const char *APPEND_LUA =
    "local i = redis.call('incr', string.format('%s:log_number', ARGV[1])) "
    "redis.call('set', string.format('%s:log:%d', ARGV[1], i), ARGV[2])";
static const char *UNLOCK_LUA =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0";

static void nap_ms(double ms) {
    struct timespec ts = {(time_t)(ms / 1000), (long)(fmod(ms, 1000.0) * 1e6)};
    nanosleep(&ts, NULL);
}

static Status reply_err(RedisBackend *r, redisReply *rep, const char *what) {
    Status s;
    if (!rep)
        s = fail(STATUS_ERR_IO, "redis '%s': %s: %s", r->url, what, r->c->errstr);
    else
        s = fail(STATUS_ERR_IO, "redis '%s': %s: %s", r->url, what,
                 rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
    if (rep) freeReplyObject(rep);
    return s;
}

static Status redis_read(HpoBackend *b, int64_t from, Status (*fn)(void *, json_t *), void *ctx) {
    RedisBackend *r = (RedisBackend *)b;
    redisReply *rep = redisCommand(r->c, "GET %s:log_number", r->prefix);
    if (!rep || rep->type == REDIS_REPLY_ERROR) return reply_err(r, rep, "GET log_number");
    if (rep->type == REDIS_REPLY_NIL) {
        freeReplyObject(rep);
        return STATUS_OK;
    }
    long long max = strtoll(rep->str, NULL, 10);
    freeReplyObject(rep);
    for (long long n = from; n <= max; n++) {
        double wait = 100;
        double waited = 0;
        for (;;) {
            rep = redisCommand(r->c, "GET %s:log:%lld", r->prefix, n);
            if (!rep || rep->type == REDIS_REPLY_ERROR) return reply_err(r, rep, "GET log");
            if (rep->type == REDIS_REPLY_STRING) break;
            freeReplyObject(rep);
            // counter incremented but the log not set yet (cluster mode writers)
            if (waited > 30000)
                return fail(STATUS_ERR_IO, "redis '%s': log %lld missing for 30 s", r->url, n);
            nap_ms(wait);
            waited += wait;
            wait = fmin(wait * 2, 10000);
        }
        json_error_t err;
        json_t *log = hpo_journal_parse_line(rep->str, rep->len, &err);
        freeReplyObject(rep);
        if (!log) {
            if (n == max) return STATUS_OK; // Optuna tolerates a bad last log
            return fail(STATUS_ERR_FORMAT, "redis '%s': log %lld: invalid JSON: %s", r->url, n,
                        err.text);
        }
        Status s = fn(ctx, log);
        json_decref(log);
        if (s != STATUS_OK) return fail_context(s, "redis '%s': log %lld", r->url, n);
    }
    return STATUS_OK;
}

static Status redis_append(HpoBackend *b, char **lines, int n) {
    RedisBackend *r = (RedisBackend *)b;
    redisReply *rep = redisCommand(r->c, "SETNX %s:log_number -1", r->prefix);
    if (!rep || rep->type == REDIS_REPLY_ERROR) return reply_err(r, rep, "SETNX");
    freeReplyObject(rep);
    for (int i = 0; i < n; i++) {
        rep = redisCommand(r->c, "EVAL %s 0 %s %s", APPEND_LUA, r->prefix, lines[i]);
        if (!rep || rep->type == REDIS_REPLY_ERROR) return reply_err(r, rep, "EVAL append");
        freeReplyObject(rep);
    }
    return STATUS_OK;
}

static Status redis_lock(HpoBackend *b) {
    RedisBackend *r = (RedisBackend *)b;
    double wait = 1;
    for (;;) {
        // expires after 30 s, like the file lock's grace period, in case we die holding it
        redisReply *rep =
            redisCommand(r->c, "SET %s:edgeforge_lock %s NX PX 30000", r->prefix, r->token);
        if (!rep || rep->type == REDIS_REPLY_ERROR) return reply_err(r, rep, "SET lock");
        bool ok = rep->type == REDIS_REPLY_STATUS;
        freeReplyObject(rep);
        if (ok) return STATUS_OK;
        nap_ms(wait);
        wait = fmin(wait * 2, 100);
    }
}

static void redis_unlock(HpoBackend *b) {
    RedisBackend *r = (RedisBackend *)b;
    char key[512];
    snprintf(key, sizeof(key), "%s:edgeforge_lock", r->prefix);
    redisReply *rep = redisCommand(r->c, "EVAL %s 1 %s %s", UNLOCK_LUA, key, r->token);
    if (rep) freeReplyObject(rep);
}

static void redis_close(HpoBackend *b) {
    RedisBackend *r = (RedisBackend *)b;
    if (r->c) redisFree(r->c);
    free(r->prefix);
    free(r->url);
    free(r);
}

Status hpo_redis_backend_open(HpoBackend **out, const char *url) {
    *out = NULL;
    // redis://HOST:PORT[/DB][?prefix=P]
    const char *p = url + strlen("redis://");
    char host[256] = "127.0.0.1", prefix[256] = "";
    int port = 6379, db = 0;
    const char *colon = strchr(p, ':');
    const char *slash = strchr(p, '/');
    const char *q = strchr(p, '?');
    const char *host_end = colon ? colon : slash ? slash : q ? q : p + strlen(p);
    if (host_end - p >= (long)sizeof(host) || host_end == p)
        return fail(STATUS_ERR_ARG, "redis url '%s': bad host", url);
    memcpy(host, p, (size_t)(host_end - p));
    host[host_end - p] = 0;
    if (colon) {
        char *end;
        long v = strtol(colon + 1, &end, 10);
        if (end == colon + 1 || v <= 0 || v > 65535 || (*end && *end != '/' && *end != '?'))
            return fail(STATUS_ERR_ARG, "redis url '%s': bad port", url);
        port = (int)v;
    }
    if (slash && (!q || slash < q) && slash[1] && slash[1] != '?') {
        char *end;
        long v = strtol(slash + 1, &end, 10);
        if (end == slash + 1 || v < 0 || (*end && *end != '?'))
            return fail(STATUS_ERR_ARG, "redis url '%s': bad database number", url);
        db = (int)v;
    }
    if (q) {
        if (strncmp(q + 1, "prefix=", 7) != 0)
            return fail(STATUS_ERR_ARG, "redis url '%s': only ?prefix= is understood", url);
        snprintf(prefix, sizeof(prefix), "%s", q + 8);
    }
    struct timeval tv = {5, 0};
    redisContext *c = redisConnectWithTimeout(host, port, tv);
    if (!c || c->err) {
        Status s = fail(STATUS_ERR_IO, "cannot connect to redis '%s': %s", url,
                        c ? c->errstr : "out of memory");
        if (c) redisFree(c);
        return s;
    }
    redisSetTimeout(c, (struct timeval){60, 0});
    RedisBackend *r = xcalloc(1, sizeof(RedisBackend));
    r->c = c;
    r->prefix = xstrdup(prefix);
    r->url = xstrdup(url);
    // lock token: unique per connection (host, pid, time and random bits)
    unsigned long long rnd = 0;
    FILE *ur = fopen("/dev/urandom", "rb");
    if (ur) {
        if (fread(&rnd, sizeof(rnd), 1, ur) != 1) rnd = 0;
        fclose(ur);
    }
    char hn[64] = "host";
    gethostname(hn, sizeof(hn) - 1);
    snprintf(r->token, sizeof(r->token), "%.24s-%ld-%ld-%llx", hn, (long)getpid(), (long)time(NULL),
             rnd);
    r->base.read = redis_read;
    r->base.append = redis_append;
    r->base.lock = redis_lock;
    r->base.unlock = redis_unlock;
    r->base.close = redis_close;
    if (db != 0) {
        redisReply *rep = redisCommand(c, "SELECT %d", db);
        if (!rep || rep->type == REDIS_REPLY_ERROR) {
            Status s = reply_err(r, rep, "SELECT");
            redis_close(&r->base);
            return s;
        }
        freeReplyObject(rep);
    }
    *out = &r->base;
    return STATUS_OK;
}
