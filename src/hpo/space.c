/*
 * space.c - distributions and search spaces (see space.h).
 */
#include "hpo/space.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "core/fileio.h"
#include "core/json_file.h"

Status hpo_dist_float(HpoDist *d, double low, double high, bool log, double step,
                      const char *what) {
    memset(d, 0, sizeof(*d));
    if (!isfinite(low) || !isfinite(high) || !isfinite(step))
        return fail(STATUS_ERR_ARG, "'%s': bounds and step must be finite", what);
    if (low > high)
        return fail(STATUS_ERR_ARG, "'%s': low %g is greater than high %g", what, low, high);
    if (log && step != 0)
        return fail(STATUS_ERR_ARG, "'%s': a log distribution cannot have a step", what);
    if (log && low <= 0)
        return fail(STATUS_ERR_ARG, "'%s': a log distribution needs low > 0 (got %g)", what, low);
    if (step < 0) return fail(STATUS_ERR_ARG, "'%s': step must be positive", what);
    if (step > 0) {
        // Optuna snaps high down onto the grid low + k*step (decimal arithmetic there; the
        // tolerance here absorbs the binary representation of steps like 0.1).
        double r = (high - low) / step;
        double k = floor(r + 1e-9);
        if (fabs(r - k) > 1e-9) high = k * step + low;
    }
    d->kind = HPO_DIST_FLOAT;
    d->low = low;
    d->high = high;
    d->log = log;
    d->step = step;
    return STATUS_OK;
}

Status hpo_dist_int(HpoDist *d, long long low, long long high, bool log, long long step,
                    const char *what) {
    memset(d, 0, sizeof(*d));
    if (low > high)
        return fail(STATUS_ERR_ARG, "'%s': low %lld is greater than high %lld", what, low, high);
    if (step < 1) return fail(STATUS_ERR_ARG, "'%s': int step must be >= 1", what);
    if (log && step != 1)
        return fail(STATUS_ERR_ARG, "'%s': a log int distribution needs step 1", what);
    if (log && low < 1)
        return fail(STATUS_ERR_ARG, "'%s': a log int distribution needs low >= 1", what);
    long long r = high - low;
    if (r % step != 0) high = r / step * step + low;
    d->kind = HPO_DIST_INT;
    d->low = (double)low;
    d->high = (double)high;
    d->log = log;
    d->step = (double)step;
    return STATUS_OK;
}

Status hpo_dist_categorical(HpoDist *d, const char *const *choices_json, int n, const char *what) {
    memset(d, 0, sizeof(*d));
    if (n < 1) return fail(STATUS_ERR_ARG, "'%s': a categorical needs at least one choice", what);
    d->kind = HPO_DIST_CATEGORICAL;
    d->n_choices = n;
    d->choices_json = xcalloc((size_t)n, sizeof(char *));
    for (int i = 0; i < n; i++)
        d->choices_json[i] = xstrdup(choices_json[i]);
    return STATUS_OK;
}

void hpo_dist_release(HpoDist *d) {
    for (int i = 0; i < d->n_choices; i++)
        free(d->choices_json[i]);
    free(d->choices_json);
    memset(d, 0, sizeof(*d));
}

void hpo_dist_copy(HpoDist *dst, const HpoDist *src) {
    *dst = *src;
    if (src->kind == HPO_DIST_CATEGORICAL) {
        dst->choices_json = xcalloc((size_t)src->n_choices, sizeof(char *));
        for (int i = 0; i < src->n_choices; i++)
            dst->choices_json[i] = xstrdup(src->choices_json[i]);
    }
}

bool hpo_dist_equal(const HpoDist *a, const HpoDist *b) {
    if (a->kind != b->kind) return false;
    if (a->kind == HPO_DIST_CATEGORICAL) {
        if (a->n_choices != b->n_choices) return false;
        for (int i = 0; i < a->n_choices; i++)
            if (strcmp(a->choices_json[i], b->choices_json[i]) != 0) return false;
        return true;
    }
    return a->low == b->low && a->high == b->high && a->log == b->log && a->step == b->step;
}

bool hpo_dist_single(const HpoDist *d) {
    if (d->kind == HPO_DIST_CATEGORICAL) return d->n_choices == 1;
    if (d->step == 0) return d->low == d->high;
    return d->low == d->high || d->low + d->step > d->high;
}

bool hpo_dist_contains(const HpoDist *d, double v) {
    if (!isfinite(v)) return false;
    if (d->kind == HPO_DIST_CATEGORICAL) return v >= 0 && v < d->n_choices && v == floor(v);
    if (v < d->low || v > d->high) return false;
    if (d->kind == HPO_DIST_INT) return v == floor(v);
    return true;
}

static json_t *dist_to_obj(const HpoDist *d) {
    json_t *attrs = json_object();
    const char *name;
    if (d->kind == HPO_DIST_CATEGORICAL) {
        name = "CategoricalDistribution";
        json_t *ch = json_array();
        for (int i = 0; i < d->n_choices; i++) {
            json_t *c = json_loads(d->choices_json[i], JSON_DECODE_ANY, NULL);
            json_array_append_new(ch, c ? c : json_null());
        }
        json_object_set_new(attrs, "choices", ch);
    } else if (d->kind == HPO_DIST_FLOAT) {
        // Key order as Optuna writes it (cosmetic; readers look keys up by name).
        name = "FloatDistribution";
        json_object_set_new(attrs, "step", d->step > 0 ? json_real(d->step) : json_null());
        json_object_set_new(attrs, "low", json_real(d->low));
        json_object_set_new(attrs, "high", json_real(d->high));
        json_object_set_new(attrs, "log", json_boolean(d->log));
    } else {
        name = "IntDistribution";
        json_object_set_new(attrs, "log", json_boolean(d->log));
        json_object_set_new(attrs, "step", json_integer((json_int_t)d->step));
        json_object_set_new(attrs, "low", json_integer((json_int_t)d->low));
        json_object_set_new(attrs, "high", json_integer((json_int_t)d->high));
    }
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(name));
    json_object_set_new(o, "attributes", attrs);
    return o;
}

char *hpo_dist_to_json(const HpoDist *d) {
    json_t *o = dist_to_obj(d);
    char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(17) | JSON_ENCODE_ANY);
    json_decref(o);
    CHECK(s != NULL);
    return s;
}

static bool get_num(json_t *o, const char *key, double *out) {
    json_t *v = json_object_get(o, key);
    if (!v || !json_is_number(v)) return false;
    *out = json_number_value(v);
    return true;
}

static Status dist_from_fields(HpoDist *d, json_t *attrs, const char *kind, const char *what) {
    if (strcmp(kind, "categorical") == 0) {
        json_t *ch = json_object_get(attrs, "choices");
        if (!json_is_array(ch) || json_array_size(ch) == 0)
            return fail(STATUS_ERR_FORMAT, "'%s': categorical needs a non-empty 'choices' list",
                        what);
        int n = (int)json_array_size(ch);
        char **txt = xcalloc((size_t)n, sizeof(char *));
        for (int i = 0; i < n; i++)
            txt[i] = json_dumps(json_array_get(ch, (size_t)i),
                                JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(17));
        Status s = hpo_dist_categorical(d, (const char *const *)txt, n, what);
        for (int i = 0; i < n; i++)
            free(txt[i]);
        free(txt);
        return s;
    }
    double low, high, step = 0;
    if (!get_num(attrs, "low", &low) || !get_num(attrs, "high", &high))
        return fail(STATUS_ERR_FORMAT, "'%s': needs numeric 'low' and 'high'", what);
    json_t *jl = json_object_get(attrs, "log");
    if (jl && !json_is_boolean(jl))
        return fail(STATUS_ERR_FORMAT, "'%s': 'log' must be true or false", what);
    bool log = jl && json_is_true(jl);
    json_t *js = json_object_get(attrs, "step");
    if (js && !json_is_null(js)) {
        if (!json_is_number(js))
            return fail(STATUS_ERR_FORMAT, "'%s': 'step' must be a number", what);
        step = json_number_value(js);
    }
    if (strcmp(kind, "float") == 0) {
        Status s = hpo_dist_float(d, low, high, log, step, what);
        return s == STATUS_OK ? s : fail_context(STATUS_ERR_FORMAT, "bad distribution");
    }
    if (strcmp(kind, "int") == 0) {
        if (step == 0) step = 1;
        if (low != floor(low) || high != floor(high) || step != floor(step) || fabs(low) > 9e15 ||
            fabs(high) > 9e15)
            return fail(STATUS_ERR_FORMAT, "'%s': int bounds and step must be integers", what);
        Status s = hpo_dist_int(d, (long long)low, (long long)high, log, (long long)step, what);
        return s == STATUS_OK ? s : fail_context(STATUS_ERR_FORMAT, "bad distribution");
    }
    return fail(STATUS_ERR_FORMAT, "'%s': unknown distribution type '%s'", what, kind);
}

static Status dist_from_obj(HpoDist *d, json_t *o, const char *what) {
    memset(d, 0, sizeof(*d));
    if (!json_is_object(o))
        return fail(STATUS_ERR_FORMAT, "'%s': distribution is not an object", what);
    json_t *name = json_object_get(o, "name");
    if (json_is_string(name)) {
        json_t *attrs = json_object_get(o, "attributes");
        if (!json_is_object(attrs))
            return fail(STATUS_ERR_FORMAT, "'%s': distribution without 'attributes'", what);
        const char *n = json_string_value(name);
        const char *kind = strcmp(n, "FloatDistribution") == 0         ? "float"
                           : strcmp(n, "IntDistribution") == 0         ? "int"
                           : strcmp(n, "CategoricalDistribution") == 0 ? "categorical"
                                                                       : NULL;
        if (!kind) return fail(STATUS_ERR_FORMAT, "'%s': unknown distribution class '%s'", what, n);
        return dist_from_fields(d, attrs, kind, what);
    }
    json_t *type = json_object_get(o, "type");
    if (!json_is_string(type))
        return fail(STATUS_ERR_FORMAT, "'%s': distribution needs 'name' or 'type'", what);
    return dist_from_fields(d, o, json_string_value(type), what);
}

Status hpo_dist_from_json(HpoDist *d, const char *json_text, const char *what) {
    json_error_t err;
    json_t *o = json_loads(json_text, 0, &err);
    if (!o) {
        memset(d, 0, sizeof(*d));
        return fail(STATUS_ERR_FORMAT, "'%s': distribution is not valid JSON: %s", what, err.text);
    }
    Status s = dist_from_obj(d, o, what);
    json_decref(o);
    return s;
}

void hpo_dist_format(const HpoDist *d, double v, char *buf, int cap) {
    if (!isfinite(v) || fabs(v) > 9e18) { // not a value of any distribution (corrupt input)
        snprintf(buf, (size_t)cap, "%g", v);
        return;
    }
    if (d->kind == HPO_DIST_INT) {
        snprintf(buf, (size_t)cap, "%lld", (long long)v);
    } else if (d->kind == HPO_DIST_FLOAT) {
        // Shortest text that reads back as the same double.
        for (int p = 1; p <= 17; p++) {
            snprintf(buf, (size_t)cap, "%.*g", p, v);
            if (strtod(buf, NULL) == v) break;
        }
    } else {
        int i = (int)v;
        const char *c = (i >= 0 && i < d->n_choices) ? d->choices_json[i] : "null";
        size_t n = strlen(c);
        if (n >= 2 && c[0] == '"') {
            // strings lose their quotes (escapes are rare in choices; kept verbatim)
            snprintf(buf, (size_t)cap, "%.*s", (int)(n - 2), c + 1);
        } else {
            snprintf(buf, (size_t)cap, "%s", c);
        }
    }
}

// Spaces ----------------------------------------------------------------------------------

Status hpo_space_add(HpoSpace *sp, const char *name, const HpoDist *dist) {
    if (!name[0]) return fail(STATUS_ERR_ARG, "empty parameter name");
    if (hpo_space_find(sp, name) >= 0)
        return fail(STATUS_ERR_ARG, "parameter '%s' defined twice", name);
    sp->params = xrealloc(sp->params, (size_t)(sp->n + 1) * sizeof(HpoParam));
    sp->params[sp->n].name = xstrdup(name);
    hpo_dist_copy(&sp->params[sp->n].dist, dist);
    sp->n++;
    return STATUS_OK;
}

int hpo_space_find(const HpoSpace *sp, const char *name) {
    for (int i = 0; i < sp->n; i++)
        if (strcmp(sp->params[i].name, name) == 0) return i;
    return -1;
}

void hpo_space_release(HpoSpace *sp) {
    for (int i = 0; i < sp->n; i++) {
        free(sp->params[i].name);
        hpo_dist_release(&sp->params[i].dist);
    }
    free(sp->params);
    memset(sp, 0, sizeof(*sp));
}

void hpo_space_table3(HpoSpace *sp) {
    memset(sp, 0, sizeof(*sp));
    HpoDist d;
    CHECK(hpo_dist_float(&d, 0.5, 2.0, false, 0, "scale") == STATUS_OK);
    CHECK(hpo_space_add(sp, "scale", &d) == STATUS_OK);
    CHECK(hpo_dist_int(&d, 8, 64, false, 1, "rank") == STATUS_OK);
    CHECK(hpo_space_add(sp, "rank", &d) == STATUS_OK);
    CHECK(hpo_dist_float(&d, 1e-5, 1e-3, true, 0, "lr") == STATUS_OK);
    CHECK(hpo_space_add(sp, "lr", &d) == STATUS_OK);
    CHECK(hpo_dist_float(&d, 0.5, 8.0, false, 0, "temperature") == STATUS_OK);
    CHECK(hpo_space_add(sp, "temperature", &d) == STATUS_OK);
    CHECK(hpo_dist_float(&d, 0.0, 1.0, false, 0, "alpha") == STATUS_OK);
    CHECK(hpo_space_add(sp, "alpha", &d) == STATUS_OK);
    CHECK(hpo_dist_float(&d, 0.0, 2.0, false, 0, "weight_decay") == STATUS_OK);
    CHECK(hpo_space_add(sp, "weight_decay", &d) == STATUS_OK);
}

static bool parse_double(const char *s, double *out) {
    char *end;
    errno = 0;
    *out = strtod(s, &end);
    return end != s && *end == 0 && errno == 0 && isfinite(*out);
}

static bool parse_ll(const char *s, long long *out) {
    char *end;
    errno = 0;
    *out = strtoll(s, &end, 10);
    return end != s && *end == 0 && errno == 0;
}

Status hpo_space_add_flag(HpoSpace *sp, const char *flag) {
    const char *eq = strchr(flag, '=');
    if (!eq || eq == flag)
        return fail(STATUS_ERR_ARG, "parameter '%s': expected NAME=TYPE:...", flag);
    char *name = xstrdup(flag);
    name[eq - flag] = 0;
    char *rest = xstrdup(eq + 1);
    char *fields[8];
    int nf = 0;
    Status s = STATUS_OK;
    HpoDist d;
    memset(&d, 0, sizeof(d));
    if (strncmp(rest, "cat:", 4) == 0) {
        // choices separated by commas; numbers stay numbers, anything else becomes a string
        const char *txt[256] = {0};
        char *buf[256] = {0};
        int n = 0;
        char *save = NULL;
        for (char *tok = strtok_r(rest + 4, ",", &save); tok && n < 256;
             tok = strtok_r(NULL, ",", &save)) {
            double v;
            json_t *j = parse_double(tok, &v) ? json_real(v) : json_string(tok);
            long long iv;
            if (parse_ll(tok, &iv)) {
                json_decref(j);
                j = json_integer(iv);
            }
            if (!j) { // jansson refuses NaN/inf reals and strings that are not UTF-8
                s = fail(STATUS_ERR_ARG,
                         "parameter '%s': choice '%s' is not a finite number or UTF-8 text", name,
                         tok);
                break;
            }
            buf[n] = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(17));
            txt[n] = buf[n];
            json_decref(j);
            n++;
        }
        if (s == STATUS_OK) s = hpo_dist_categorical(&d, txt, n, name);
        for (int i = 0; i < n; i++)
            free(buf[i]);
    } else {
        char *save = NULL;
        for (char *tok = strtok_r(rest, ":", &save); tok && nf < 8;
             tok = strtok_r(NULL, ":", &save))
            fields[nf++] = tok;
        bool is_float = nf > 0 && strcmp(fields[0], "float") == 0;
        bool is_int = nf > 0 && strcmp(fields[0], "int") == 0;
        bool log = false;
        double step = 0;
        if ((!is_float && !is_int) || nf < 3) {
            s = fail(STATUS_ERR_ARG,
                     "parameter '%s': expected float:LOW:HIGH, int:LOW:HIGH or cat:A,B,...", flag);
            goto done;
        }
        for (int i = 3; i < nf; i++) {
            if (strcmp(fields[i], "log") == 0)
                log = true;
            else if (strncmp(fields[i], "step=", 5) == 0 && parse_double(fields[i] + 5, &step)) {
            } else {
                s = fail(STATUS_ERR_ARG, "parameter '%s': unknown option '%s'", flag, fields[i]);
                goto done;
            }
        }
        if (is_float) {
            double lo, hi;
            if (!parse_double(fields[1], &lo) || !parse_double(fields[2], &hi)) {
                s = fail(STATUS_ERR_ARG, "parameter '%s': bounds are not numbers", flag);
                goto done;
            }
            s = hpo_dist_float(&d, lo, hi, log, step, name);
        } else {
            long long lo, hi;
            if (!parse_ll(fields[1], &lo) || !parse_ll(fields[2], &hi) ||
                (step != 0 && step != floor(step)) || !(fabs(step) < 9e18)) {
                s = fail(STATUS_ERR_ARG, "parameter '%s': int bounds/step are not integers", flag);
                goto done;
            }
            s = hpo_dist_int(&d, lo, hi, log, step == 0 ? 1 : (long long)step, name);
        }
    }
    if (s == STATUS_OK) s = hpo_space_add(sp, name, &d);
done:
    hpo_dist_release(&d);
    free(name);
    free(rest);
    return s;
}

Status hpo_space_load(HpoSpace *sp, const char *path) {
    if (strcmp(path, "table3") == 0) {
        HpoSpace t;
        hpo_space_table3(&t);
        Status s = STATUS_OK;
        for (int i = 0; i < t.n && s == STATUS_OK; i++)
            s = hpo_space_add(sp, t.params[i].name, &t.params[i].dist);
        hpo_space_release(&t);
        return s;
    }
    json_t *root;
    // a parameter given twice is a mistake, not "the last one wins"
    Status s = json_read_file(&root, path, JSON_REJECT_DUPLICATES);
    if (s != STATUS_OK) return fail_context(s, "space file");
    if (!json_is_object(root) || json_object_size(root) == 0) {
        s = fail(STATUS_ERR_FORMAT, "space file '%s': expected a non-empty object {name: dist}",
                 path);
    } else {
        const char *key;
        json_t *val;
        json_object_foreach(root, key, val) {
            HpoDist d;
            s = dist_from_obj(&d, val, key);
            if (s == STATUS_OK) s = hpo_space_add(sp, key, &d);
            hpo_dist_release(&d);
            if (s != STATUS_OK) {
                fail_context(s, "space file '%s'", path);
                break;
            }
        }
    }
    json_decref(root);
    return s;
}
