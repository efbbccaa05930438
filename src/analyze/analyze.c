/*
 * analyze.c - layer-wise weight/activation kurtosis and its correlation with GPTQ loss.
 * See analyze.h. Activations are observed through InferState.on_linear_input, so the
 * forward pass is exactly the engine's (infer.c), chunk by chunk.
 */
#include "analyze/analyze.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "core/dtype.h"
#include "core/fileio.h"
#include "core/json_file.h"
#include "model/infer.h"
#include "quant/gptq_model.h"

AnalyzeOptions analyze_options_default(void) {
    AnalyzeOptions o = {.kurt = kurtosis_opts_default(), .n_threads = 0};
    return o;
}

void analyze_report_release(AnalyzeReport *r) {
    free(r->lin);
    memset(r, 0, sizeof *r);
}

// Capture point a linear reads: q/k/v the attention norm output, o the attention output,
// gate/up the MLP norm output, down the SwiGLU product.
static const int cap_of[GPTQ_MODEL_LINEARS] = {0, 0, 0, 1, 2, 2, 3};
#define N_CAP 4

static void report_init(AnalyzeReport *r, const Model *m, const AnalyzeOptions *o) {
    memset(r, 0, sizeof *r);
    r->n_linear = m->cfg.n_layers * GPTQ_MODEL_LINEARS;
    r->lin = xcalloc((size_t)r->n_linear, sizeof *r->lin);
    r->kurt = o->kurt;
    r->w_mean = r->a_mean = NAN;
    r->pearson_w = r->spearman_w = r->pearson_a = r->spearman_a = NAN;
}

Status analyze_weights(AnalyzeReport *r, const Model *m, const AnalyzeOptions *o) {
    report_init(r, m, o);
    int64_t *w = xcalloc((size_t)r->n_linear, sizeof *w);
    double *v = xcalloc((size_t)r->n_linear, sizeof *v);
    float *buf = NULL;
    int64_t cap = 0;
    Status s = STATUS_OK;
    for (int l = 0; l < m->cfg.n_layers && s == STATUS_OK; l++) {
        Tensor *lin[GPTQ_MODEL_LINEARS];
        gptq_model_layer_linears(&m->layers[l], lin);
        for (int i = 0; i < GPTQ_MODEL_LINEARS; i++) {
            AnalyzeLinear *a = &r->lin[l * GPTQ_MODEL_LINEARS + i];
            const Tensor *t = lin[i];
            snprintf(a->name, sizeof a->name, "model.layers.%d.%s", l, gptq_model_linear_name(i));
            a->layer = l;
            a->which = i;
            a->N = t->shape[0];
            a->K = t->shape[1];
            a->a_kurt = a->a_absmax = a->a_rms = a->a_all = a->gptq_loss = NAN;
            if (!t->data) {
                s = fail(STATUS_ERR_UNSUPPORTED,
                         "model '%s': %s holds only packed GPTQ weights; analyze the "
                         "unquantized model",
                         m->source ? m->source : "?", a->name);
                break;
            }
            int64_t n = a->N * a->K;
            if (n > cap) {
                free(buf);
                buf = xmalloc((size_t)n * sizeof *buf);
                cap = n;
            }
            dtype_to_f32(buf, t->data, t->dtype, n);
            a->w_kurt = kurtosis_f32(buf, n, o->kurt);
            w[l * GPTQ_MODEL_LINEARS + i] = n;
            v[l * GPTQ_MODEL_LINEARS + i] = a->w_kurt;
        }
    }
    if (s == STATUS_OK) r->w_mean = kurtosis_weighted_mean(v, w, r->n_linear);
    free(buf);
    free(w);
    free(v);
    if (s != STATUS_OK) analyze_report_release(r);
    return s;
}

/* ---- activations ---------------------------------------------------------------------- */

typedef struct {
    int K;
    KurtMoments *ch; // (K) per-channel moments over tokens
    KurtChannels acc;
} CapAcc;

typedef struct {
    CapAcc *cap; // (L, N_CAP)
    float *col;  // (max_batch) one gathered column
} Observer;

static void observe(void *user, int layer, int which, const float *x, int T, int K) {
    // q/k/v and gate/up see the same rows: measure each capture point once
    if (which != 0 && which != 3 && which != 4 && which != 6) return;
    Observer *ob = user;
    CapAcc *c = &ob->cap[layer * N_CAP + cap_of[which]];
    CHECK(c->K == K);
    for (int k = 0; k < K; k++) {
        for (int t = 0; t < T; t++)
            ob->col[t] = x[(int64_t)t * K + k];
        kurt_moments_push_f32(&c->ch[k], ob->col, T);
    }
    kurt_channels_push(&c->acc, x, T); // x (T, K)
}

Status analyze_run(AnalyzeReport *r, const Model *m, const CalibSet *calib,
                   const AnalyzeOptions *o) {
    const LlamaConfig *cfg = &m->cfg;
    if (!calib || calib->n_seqs < 1 || calib->seq_len < 1)
        return fail(STATUS_ERR_ARG, "analyze: no calibration windows");
    if (calib->seq_len > cfg->max_seq_len)
        return fail(STATUS_ERR_ARG,
                    "analyze: calibration windows of %d tokens exceed the "
                    "context of model '%s' (%d)",
                    calib->seq_len, m->source ? m->source : "?", cfg->max_seq_len);
    Status s = analyze_weights(r, m, o);
    if (s != STATUS_OK) return s;
    r->n_seqs = calib->n_seqs;
    r->seq_len = calib->seq_len;

    InferOptions io = infer_options_default();
    io.max_seqs = 1;
    io.max_ctx = calib->seq_len;
    io.max_batch = calib->seq_len;
    io.n_threads = o->n_threads;
    InferState st;
    s = infer_init(&st, m, &io);
    if (s != STATUS_OK) {
        analyze_report_release(r);
        return s;
    }
    int L = cfg->n_layers;
    int capK[N_CAP] = {cfg->dim, cfg->n_heads * cfg->head_dim, cfg->dim, cfg->hidden_dim};
    Observer ob = {.cap = xcalloc((size_t)L * N_CAP, sizeof(CapAcc)),
                   .col = xmalloc((size_t)calib->seq_len * sizeof(float))};
    for (int i = 0; i < L * N_CAP; i++) {
        ob.cap[i].K = capK[i % N_CAP];
        ob.cap[i].ch = xcalloc((size_t)ob.cap[i].K, sizeof(KurtMoments));
        kurt_channels_init(&ob.cap[i].acc, ob.cap[i].K);
    }
    st.on_linear_input = observe;
    st.on_linear_user = &ob;
    uint8_t *want = xcalloc((size_t)calib->seq_len, 1); // no logits needed
    for (int q = 0; q < calib->n_seqs && s == STATUS_OK; q++) {
        infer_seq_truncate(&st, 0, 0);
        InferBatch b = {.tokens = calib->tokens + (int64_t)q * calib->seq_len,
                        .want_logits = want,
                        .n = calib->seq_len};
        s = infer_forward(&st, &b, NULL);
    }
    free(want);
    infer_release(&st);
    if (s == STATUS_OK) {
        r->n_tokens = (int64_t)calib->n_seqs * calib->seq_len;
        int64_t *w = xcalloc((size_t)r->n_linear, sizeof *w);
        double *v = xcalloc((size_t)r->n_linear, sizeof *v);
        for (int i = 0; i < r->n_linear; i++) {
            AnalyzeLinear *a = &r->lin[i];
            const CapAcc *c = &ob.cap[a->layer * N_CAP + cap_of[a->which]];
            double sum = 0;
            int cnt = 0;
            for (int k = 0; k < c->K; k++) {
                double kv = kurt_moments_value(&c->ch[k], o->kurt);
                if (isfinite(kv)) {
                    sum += kv;
                    cnt++;
                }
            }
            a->a_kurt = cnt ? sum / cnt : NAN;
            a->a_absmax = kurt_channels_value(&c->acc, KURT_CHANNEL_ABSMAX, o->kurt);
            a->a_rms = kurt_channels_value(&c->acc, KURT_CHANNEL_RMS, o->kurt);
            a->a_all = kurt_channels_value(&c->acc, KURT_CHANNEL_ALL, o->kurt);
            w[i] = a->N * a->K;
            v[i] = a->a_kurt;
        }
        r->a_mean = kurtosis_weighted_mean(v, w, r->n_linear);
        free(w);
        free(v);
    }
    for (int i = 0; i < L * N_CAP; i++) {
        free(ob.cap[i].ch);
        kurt_channels_release(&ob.cap[i].acc);
    }
    free(ob.cap);
    free(ob.col);
    if (s != STATUS_OK) analyze_report_release(r);
    return s;
}

/* ---- correlation ---------------------------------------------------------------------- */

static int finite_pairs(const double *x, const double *y, int n, double *px, double *py) {
    int k = 0;
    for (int i = 0; i < n; i++)
        if (isfinite(x[i]) && isfinite(y[i])) {
            px[k] = x[i];
            py[k] = y[i];
            k++;
        }
    return k;
}

static double pearson_all(const double *x, const double *y, int n) {
    if (n < 2) return NAN;
    double mx = 0, my = 0;
    for (int i = 0; i < n; i++) {
        mx += x[i];
        my += y[i];
    }
    mx /= n;
    my /= n;
    double sxy = 0, sxx = 0, syy = 0;
    for (int i = 0; i < n; i++) {
        double dx = x[i] - mx, dy = y[i] - my;
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if (sxx <= 0 || syy <= 0) return NAN;
    double r = sxy / sqrt(sxx * syy);
    return r > 1 ? 1 : r < -1 ? -1 : r;
}

double analyze_pearson(const double *x, const double *y, int n) {
    double *px = xmalloc((size_t)MAX(n, 1) * sizeof *px),
           *py = xmalloc((size_t)MAX(n, 1) * sizeof *py);
    double r = pearson_all(px, py, finite_pairs(x, y, n, px, py));
    free(px);
    free(py);
    return r;
}

typedef struct {
    double v;
    int i;
} Ranked;

static int cmp_ranked(const void *a, const void *b) {
    double x = ((const Ranked *)a)->v, y = ((const Ranked *)b)->v;
    return x < y ? -1 : x > y ? 1 : 0;
}

// 1-based ranks, ties averaged (scipy.stats.rankdata "average").
static void rank_avg(const double *x, int n, double *rank) {
    Ranked *r = xmalloc((size_t)MAX(n, 1) * sizeof *r);
    for (int i = 0; i < n; i++)
        r[i] = (Ranked){x[i], i};
    qsort(r, (size_t)n, sizeof *r, cmp_ranked);
    for (int i = 0; i < n;) {
        int j = i;
        while (j + 1 < n && r[j + 1].v == r[i].v)
            j++;
        double avg = 0.5 * (i + j) + 1.0;
        for (int t = i; t <= j; t++)
            rank[r[t].i] = avg;
        i = j + 1;
    }
    free(r);
}

double analyze_spearman(const double *x, const double *y, int n) {
    size_t sz = (size_t)MAX(n, 1) * sizeof(double);
    double *px = xmalloc(sz), *py = xmalloc(sz), *rx = xmalloc(sz), *ry = xmalloc(sz);
    int k = finite_pairs(x, y, n, px, py);
    rank_avg(px, k, rx);
    rank_avg(py, k, ry);
    double r = pearson_all(rx, ry, k);
    free(px);
    free(py);
    free(rx);
    free(ry);
    return r;
}

Status analyze_attach_gptq(AnalyzeReport *r, const char *path) {
    json_t *j;
    Status s = json_read_file(&j, path, 0);
    if (s != STATUS_OK) return fail_context(s, "GPTQ report");
    json_t *arr = json_object_get(j, "linears");
    if (!json_is_array(arr)) {
        s = fail(STATUS_ERR_FORMAT,
                 "GPTQ report '%s': no \"linears\" array (an RTN report or "
                 "not written by edgeforge quantize)",
                 path);
    }
    for (int i = 0; i < r->n_linear && s == STATUS_OK; i++) {
        AnalyzeLinear *a = &r->lin[i];
        bool found = false;
        size_t idx;
        json_t *e;
        json_array_foreach(arr, idx, e) {
            const char *nm = json_string_value(json_object_get(e, "name"));
            json_t *lo = json_object_get(e, "loss");
            if (nm && strcmp(nm, a->name) == 0 && json_is_number(lo)) {
                a->gptq_loss = json_number_value(lo);
                found = true;
                break;
            }
        }
        if (!found)
            s = fail(STATUS_ERR_FORMAT,
                     "GPTQ report '%s' has no loss for '%s' (a report of "
                     "another model?)",
                     path, a->name);
    }
    json_decref(j);
    if (s != STATUS_OK) {
        for (int i = 0; i < r->n_linear; i++)
            r->lin[i].gptq_loss = NAN;
        return s;
    }
    int n = r->n_linear;
    double *w = xmalloc((size_t)n * sizeof *w), *a = xmalloc((size_t)n * sizeof *a),
           *l = xmalloc((size_t)n * sizeof *l);
    for (int i = 0; i < n; i++) {
        w[i] = r->lin[i].w_kurt;
        a[i] = r->lin[i].a_kurt;
        l[i] = r->lin[i].gptq_loss;
    }
    r->has_gptq = true;
    r->pearson_w = analyze_pearson(w, l, n);
    r->spearman_w = analyze_spearman(w, l, n);
    r->pearson_a = analyze_pearson(a, l, n);
    r->spearman_a = analyze_spearman(a, l, n);
    r->n_corr = 0;
    for (int i = 0; i < n; i++)
        r->n_corr += isfinite(a[i]) && isfinite(l[i]);
    free(w);
    free(a);
    free(l);
    return STATUS_OK;
}

/* ---- output --------------------------------------------------------------------------- */

static json_t *num(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static const char *kurt_name(KurtosisOpts k) {
    return k.fisher
               ? (k.bias ? "excess (fisher=True, bias=True)" : "excess (fisher=True, bias=False)")
               : (k.bias ? "pearson (fisher=False, bias=True)"
                         : "pearson (fisher=False, bias=False)");
}

Status analyze_write_csv(const AnalyzeReport *r, const char *path) {
    AtomicFile af;
    Status s = atomic_file_open(&af, path);
    if (s != STATUS_OK) return s;
    fprintf(af.f, "name,layer,linear,out_features,in_features,params,w_kurt,a_kurt,a_absmax,"
                  "a_rms,a_all,gptq_loss\n");
    for (int i = 0; i < r->n_linear; i++) {
        const AnalyzeLinear *a = &r->lin[i];
        fprintf(af.f, "%s,%d,%s,%lld,%lld,%lld,%.10g,%.10g,%.10g,%.10g,%.10g,%.10g\n", a->name,
                a->layer, gptq_model_linear_name(a->which), (long long)a->N, (long long)a->K,
                (long long)(a->N * a->K), a->w_kurt, a->a_kurt, a->a_absmax, a->a_rms, a->a_all,
                a->gptq_loss);
    }
    return atomic_file_commit(&af);
}

Status analyze_write_json(const AnalyzeReport *r, const char *path) {
    json_t *j = json_object();
    json_object_set_new(j, "kurtosis", json_string(kurt_name(r->kurt)));
    json_object_set_new(j, "activation_statistic",
                        json_string("mean over input channels of the per-channel kurtosis "
                                    "over calibration tokens"));
    json_object_set_new(j, "aggregation",
                        json_string("parameter-count-weighted mean over "
                                    "decoder linears (paper Table 7)"));
    json_object_set_new(j, "calib_sequences", json_integer(r->n_seqs));
    json_object_set_new(j, "calib_seq_len", json_integer(r->seq_len));
    json_object_set_new(j, "calib_tokens", json_integer(r->n_tokens));
    json_object_set_new(j, "weight_kurtosis_weighted_mean", num(r->w_mean));
    json_object_set_new(j, "activation_kurtosis_weighted_mean", num(r->a_mean));
    if (r->has_gptq) {
        json_t *c = json_object();
        json_object_set_new(c, "n", json_integer(r->n_corr));
        json_object_set_new(c, "pearson_weight_kurtosis", num(r->pearson_w));
        json_object_set_new(c, "spearman_weight_kurtosis", num(r->spearman_w));
        json_object_set_new(c, "pearson_activation_kurtosis", num(r->pearson_a));
        json_object_set_new(c, "spearman_activation_kurtosis", num(r->spearman_a));
        json_object_set_new(j, "gptq_loss_correlation", c);
    }
    json_t *arr = json_array();
    for (int i = 0; i < r->n_linear; i++) {
        const AnalyzeLinear *a = &r->lin[i];
        json_t *o = json_object();
        json_object_set_new(o, "name", json_string(a->name));
        json_object_set_new(o, "layer", json_integer(a->layer));
        json_object_set_new(o, "out_features", json_integer(a->N));
        json_object_set_new(o, "in_features", json_integer(a->K));
        json_object_set_new(o, "w_kurt", num(a->w_kurt));
        json_object_set_new(o, "a_kurt", num(a->a_kurt));
        json_object_set_new(o, "a_absmax", num(a->a_absmax));
        json_object_set_new(o, "a_rms", num(a->a_rms));
        json_object_set_new(o, "a_all", num(a->a_all));
        if (r->has_gptq) json_object_set_new(o, "gptq_loss", num(a->gptq_loss));
        json_array_append_new(arr, o);
    }
    json_object_set_new(j, "linears", arr);
    char *txt = json_dumps(j, JSON_INDENT(2) | JSON_REAL_PRECISION(12));
    json_decref(j);
    if (!txt) return fail(STATUS_ERR_NOMEM, "analyze: cannot serialise '%s'", path);
    size_t n = strlen(txt);
    txt[n] = '\n'; // replace the terminator: file_write_all takes a size
    Status s = file_write_all(path, txt, n + 1);
    free(txt);
    return s;
}
