#include "args.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void args_usage(const ArgParse *ap, FILE *f) {
    fprintf(f, "usage: edgeforge %s [options] %s\n", ap->cmd, ap->pos_usage ? ap->pos_usage : "");
    if (ap->summary) fprintf(f, "\n%s\n", ap->summary);
    fprintf(f, "\noptions:\n");
    for (int i = 0; i < ap->n_spec; i++) {
        const ArgSpec *s = &ap->spec[i];
        char left[64];
        const char *arg = s->type == ARG_FLAG     ? ""
                          : s->type == ARG_STRING ? " S"
                          : s->type == ARG_FLOAT  ? " X"
                                                  : " N";
        if (s->short_name)
            snprintf(left, sizeof left, "-%c, --%s%s", s->short_name, s->name, arg);
        else
            snprintf(left, sizeof left, "    --%s%s", s->name, arg);
        fprintf(f, "  %-28s %s\n", left, s->help ? s->help : "");
    }
    fprintf(f, "  %-28s %s\n", "-h, --help", "show this help");
}

static int set_value(const ArgParse *ap, const ArgSpec *s, const char *v) {
    char *end;
    errno = 0;
    switch (s->type) {
    case ARG_STRING: *(const char **)s->dst = v; return 0;
    case ARG_INT:
    case ARG_INT64: {
        long long x = strtoll(v, &end, 0);
        if (errno || end == v || *end) {
            fprintf(stderr, "error: %s: --%s expects an integer, got '%s'\n", ap->cmd, s->name, v);
            return -1;
        }
        if (s->min < s->max && ((double)x < s->min || (double)x > s->max)) {
            fprintf(stderr, "error: %s: --%s must be in [%.15g, %.15g], got %s\n", ap->cmd, s->name,
                    s->min, s->max, v);
            return -1;
        }
        if (s->type == ARG_INT) {
            if (x < INT32_MIN || x > INT32_MAX) {
                fprintf(stderr, "error: %s: --%s is out of range: %s\n", ap->cmd, s->name, v);
                return -1;
            }
            *(int *)s->dst = (int)x;
        } else
            *(int64_t *)s->dst = x;
        return 0;
    }
    case ARG_FLOAT: {
        double x = strtod(v, &end);
        if (errno || end == v || *end || !isfinite(x)) {
            fprintf(stderr, "error: %s: --%s expects a number, got '%s'\n", ap->cmd, s->name, v);
            return -1;
        }
        if (s->min < s->max && (x < s->min || x > s->max)) {
            fprintf(stderr, "error: %s: --%s must be in [%g, %g], got %s\n", ap->cmd, s->name,
                    s->min, s->max, v);
            return -1;
        }
        *(double *)s->dst = x;
        return 0;
    }
    case ARG_FLAG: *(bool *)s->dst = true; return 0;
    }
    return -1;
}

static const ArgSpec *find_long(const ArgParse *ap, const char *name, size_t len) {
    for (int i = 0; i < ap->n_spec; i++)
        if (strlen(ap->spec[i].name) == len && strncmp(ap->spec[i].name, name, len) == 0)
            return &ap->spec[i];
    return NULL;
}

static const ArgSpec *find_short(const ArgParse *ap, char c) {
    for (int i = 0; i < ap->n_spec; i++)
        if (ap->spec[i].short_name == c) return &ap->spec[i];
    return NULL;
}

int args_parse(ArgParse *ap, int argc, char **argv) {
    ap->n_pos = 0;
    ap->rest = NULL;
    ap->n_rest = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            ap->rest = argv + i + 1;
            ap->n_rest = argc - i - 1;
            break;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            args_usage(ap, stdout);
            ap->help_shown = true;
            return 1;
        }
        const ArgSpec *s = NULL;
        const char *val = NULL;
        if (a[0] == '-' && a[1] == '-') {
            const char *eq = strchr(a + 2, '=');
            size_t len = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
            s = find_long(ap, a + 2, len);
            if (eq) val = eq + 1;
        } else if (a[0] == '-' && a[1] && !(a[1] >= '0' && a[1] <= '9') && a[1] != '.') {
            if (a[2]) {
                fprintf(stderr,
                        "error: %s: unknown option '%s' (short options take their value as the "
                        "next argument)\n",
                        ap->cmd, a);
                return -1;
            }
            s = find_short(ap, a[1]);
        } else {
            if (ap->n_pos >= ap->max_pos || ap->n_pos >= ARGS_MAX_POS) {
                fprintf(stderr, "error: %s: unexpected argument '%s'\n", ap->cmd, a);
                return -1;
            }
            ap->pos[ap->n_pos++] = a;
            continue;
        }
        if (!s) {
            fprintf(stderr, "error: %s: unknown option '%s' (see 'edgeforge %s --help')\n", ap->cmd,
                    a, ap->cmd);
            return -1;
        }
        if (s->type == ARG_FLAG) {
            if (val) {
                fprintf(stderr, "error: %s: --%s takes no value\n", ap->cmd, s->name);
                return -1;
            }
            *(bool *)s->dst = true;
            continue;
        }
        if (!val) {
            if (i + 1 >= argc) {
                fprintf(stderr, "error: %s: option '%s' needs a value\n", ap->cmd, a);
                return -1;
            }
            val = argv[++i];
        }
        if (set_value(ap, s, val) != 0) return -1;
    }
    if (ap->n_pos < ap->min_pos) {
        fprintf(stderr, "error: %s: missing %s\n", ap->cmd,
                ap->pos_usage ? ap->pos_usage : "arguments");
        args_usage(ap, stderr);
        return -1;
    }
    return 0;
}
