/*
 * schedule.c - learning-rate schedules and gradient clipping (see schedule.h).
 */
#include "train/schedule.h"

#include <math.h>
#include <string.h>

static const char *const schedule_names[SCHEDULE_COUNT] = {"constant", "cosine", "linear"};

const char *schedule_name(ScheduleKind k) {
    return k >= 0 && k < SCHEDULE_COUNT ? schedule_names[k] : "?";
}

Status schedule_parse(const char *name, ScheduleKind *k) {
    for (int i = 0; i < SCHEDULE_COUNT; i++)
        if (!strcmp(name, schedule_names[i])) {
            *k = (ScheduleKind)i;
            return STATUS_OK;
        }
    return fail(STATUS_ERR_ARG, "unknown schedule '%s' (expected constant, cosine or linear)",
                name);
}

float schedule_lr(const Schedule *s, float peak_lr, int64_t step) {
    int64_t W = s->warmup_steps > 0 ? s->warmup_steps : 0, S = s->total_steps;
    if (step < W) return (float)(peak_lr * ((double)step / (double)(W > 1 ? W : 1)));
    double f = 1.0, span = (double)(S - W > 1 ? S - W : 1);
    switch (s->kind) {
    case SCHEDULE_COSINE: {
        double p = (double)(step - W) / span;
        f = 0.5 * (1.0 + cos(M_PI * p));
        if (p >= 1.0 || f < 0) f = 0.0;
        break;
    }
    case SCHEDULE_LINEAR:
        f = (double)(S - step) / span;
        if (f < 0) f = 0;
        break;
    default: return peak_lr;
    }
    double m = s->min_lr_ratio;
    return (float)(peak_lr * (m + (1.0 - m) * f));
}

double grad_global_norm(const float *g, int64_t n) {
    double ss = 0;
    for (int64_t i = 0; i < n; i++)
        ss += (double)g[i] * g[i];
    return sqrt(ss);
}

double grad_clip_global(float *g, int64_t n, double max_norm) {
    double norm = grad_global_norm(g, n);
    if (max_norm <= 0 || !isfinite(norm)) return norm;
    double coef = max_norm / (norm + 1e-6);
    if (coef < 1.0) {
        float c = (float)coef;
        for (int64_t i = 0; i < n; i++)
            g[i] *= c;
    }
    return norm;
}
