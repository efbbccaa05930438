/*
 * prune.c - keep a subset of decoder layers (see prune.h).
 */
#include "train/prune.h"

#include <stdlib.h>
#include <string.h>

#include "core/common.h"

Status prune_keep_layers(Model *m, const int *keep, int n) {
    int L = m->cfg.n_layers;
    if (n < 1) return fail(STATUS_ERR_ARG, "keep at least one layer");
    for (int i = 0; i < n; i++) {
        if (keep[i] < 0 || keep[i] >= L)
            return fail(STATUS_ERR_ARG, "layer %d does not exist (the model has %d)", keep[i], L);
        if (i > 0 && keep[i] <= keep[i - 1])
            return fail(STATUS_ERR_ARG, "layers to keep must be strictly increasing (%d after %d)",
                        keep[i], keep[i - 1]);
    }
    // views only: the dropped layers' data stays with the model's files/buffers
    LlamaLayer *nl = xcalloc((size_t)n, sizeof *nl);
    for (int i = 0; i < n; i++)
        nl[i] = m->layers[keep[i]];
    free(m->layers);
    m->layers = nl;
    m->cfg.n_layers = n;
    return STATUS_OK;
}

Status prune_parse_layers(const char *list, int **keep, int *n) {
    *keep = NULL;
    *n = 0;
    int cap = 0;
    const char *p = list;
    while (*p) {
        char *end;
        long a = strtol(p, &end, 10), b;
        if (end == p || a < 0 || a > 100000) goto bad;
        b = a;
        p = end;
        if (*p == '-') {
            b = strtol(p + 1, &end, 10);
            if (end == p + 1 || b < a || b > 100000) goto bad;
            p = end;
        }
        for (long v = a; v <= b; v++) {
            if (*n == cap) {
                cap = cap ? 2 * cap : 8;
                *keep = xrealloc(*keep, sizeof(int) * (size_t)cap);
            }
            (*keep)[(*n)++] = (int)v;
        }
        if (*p == ',')
            p++;
        else if (*p)
            goto bad;
    }
    if (*n > 0) return STATUS_OK;
bad:
    free(*keep);
    *keep = NULL;
    *n = 0;
    return fail(STATUS_ERR_ARG, "bad layer list '%s' (expected e.g. 0,4 or 0-2,5)", list);
}
