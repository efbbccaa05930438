/*
 * fidelity.c - KL divergence / top-1 / perplexity of a quantized model against its base,
 * and the quantization report (fidelity.h).
 */
#include "quant/fidelity.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "core/fileio.h"
#include "model/infer.h"

void fidelity_acc_init(FidelityAcc *a) { memset(a, 0, sizeof *a); }

void fidelity_acc_release(FidelityAcc *a) {
    free(a->kl);
    free(a->lp_b);
    free(a->lp_q);
    memset(a, 0, sizeof *a);
}

// lp (V) = log_softmax(x) in double; returns the index of the first maximum.
static int log_softmax(double *lp, const float *x, int V) {
    int am = 0;
    for (int v = 1; v < V; v++)
        if (x[v] > x[am]) am = v;
    double mx = x[am], s = 0;
    for (int v = 0; v < V; v++)
        s += exp((double)x[v] - mx);
    double lse = mx + log(s);
    for (int v = 0; v < V; v++)
        lp[v] = (double)x[v] - lse;
    return am;
}

void fidelity_acc_add(FidelityAcc *a, const float *lb, const float *lq, int V, int32_t y) {
    CHECK(V > 0 && y >= 0 && y < V);
    if (a->V != V) {
        a->lp_b = xrealloc(a->lp_b, (size_t)V * sizeof *a->lp_b);
        a->lp_q = xrealloc(a->lp_q, (size_t)V * sizeof *a->lp_q);
        a->V = V;
    }
    int ab = log_softmax(a->lp_b, lb, V), aq = log_softmax(a->lp_q, lq, V);
    double kl = 0;
    for (int v = 0; v < V; v++)
        kl += exp(a->lp_b[v]) * (a->lp_b[v] - a->lp_q[v]);
    double nb = -a->lp_b[y], nq = -a->lp_q[y], dp = exp(a->lp_q[y]) - exp(a->lp_b[y]);
    if (a->n == a->cap) {
        a->cap = a->cap ? 2 * a->cap : 1024;
        a->kl = xrealloc(a->kl, (size_t)a->cap * sizeof *a->kl);
    }
    a->kl[a->n++] = kl;
    a->s_kl += kl;
    a->s_kl2 += kl * kl;
    a->s_nb += nb;
    a->s_nb2 += nb * nb;
    a->s_nq += nq;
    a->s_nq2 += nq * nq;
    a->s_d += nq - nb;
    a->s_d2 += (nq - nb) * (nq - nb);
    a->s_dp2 += dp * dp;
    a->same += ab == aq;
}

double fidelity_percentile(const double *x, int64_t n, double q) {
    if (q <= 0) return x[0];
    if (q >= 1) return x[n - 1];
    double p = q * (double)(n - 1);
    int64_t i = (int64_t)p;
    double f = p - (double)i;
    return (1 - f) * x[i] + f * x[MIN(i + 1, n - 1)];
}

static int cmp_double(const void *pa, const void *pb) {
    double a = *(const double *)pa, b = *(const double *)pb;
    return a < b ? -1 : a > b;
}

// llama.cpp's mean_and_uncertainty: mean and sqrt(var / (n - 1)).
static void mean_se(double s, double s2, int64_t n, double *mean, double *se) {
    *mean = s / (double)n;
    double var = s2 / (double)n - *mean * *mean;
    *se = n > 1 && var > 0 ? sqrt(var / (double)(n - 1)) : 0;
}

void fidelity_acc_stats(const FidelityAcc *a, FidelityStats *s) {
    memset(s, 0, sizeof *s);
    int64_t n = a->n;
    s->n_tokens = n;
    if (n == 0) return;
    mean_se(a->s_kl, a->s_kl2, n, &s->kl_mean, &s->kl_se);
    mean_se(a->s_nb, a->s_nb2, n, &s->nll_base, &s->nll_base_se);
    mean_se(a->s_nq, a->s_nq2, n, &s->nll_quant, &s->nll_quant_se);
    mean_se(a->s_d, a->s_d2, n, &s->ln_ppl_ratio, &s->ln_ppl_ratio_se);
    s->ppl_base = exp(s->nll_base);
    s->ppl_quant = exp(s->nll_quant);
    s->top1 = (double)a->same / (double)n;
    s->top1_se = n > 1 ? sqrt(s->top1 * (1 - s->top1) / (double)(n - 1)) : 0;
    s->dp_rms = sqrt(a->s_dp2 / (double)n);
    double *k = xmalloc((size_t)n * sizeof *k);
    memcpy(k, a->kl, (size_t)n * sizeof *k);
    qsort(k, (size_t)n, sizeof *k, cmp_double);
    s->kl_median = fidelity_percentile(k, n, 0.5);
    s->kl_p90 = fidelity_percentile(k, n, 0.90);
    s->kl_p95 = fidelity_percentile(k, n, 0.95);
    s->kl_p99 = fidelity_percentile(k, n, 0.99);
    s->kl_p999 = fidelity_percentile(k, n, 0.999);
    s->kl_max = k[n - 1];
    free(k);
}

// Logits (ctx, V) of every position of one chunk, from a fresh sequence.
static Status chunk_logits(InferState *st, const int32_t *toks, int ctx, float *logits) {
    infer_seq_truncate(st, 0, 0);
    InferBatch b = {.tokens = toks, .n = ctx};
    return infer_forward(st, &b, logits);
}

Status fidelity_eval(FidelityStats *s, const Model *base, const Model *quant,
                     const CalibSet *chunks) {
    memset(s, 0, sizeof *s);
    int V = (int)base->lm_head.shape[0], ctx = chunks->seq_len;
    if ((int)quant->lm_head.shape[0] != V)
        return fail(STATUS_ERR_ARG, "the models' vocabularies differ (%d vs %d)", V,
                    (int)quant->lm_head.shape[0]);
    if (ctx < 4) return fail(STATUS_ERR_ARG, "fidelity chunks of %d tokens are too short", ctx);
    if (ctx > base->cfg.max_seq_len || ctx > quant->cfg.max_seq_len)
        return fail(STATUS_ERR_ARG, "fidelity chunks of %d tokens exceed the model context", ctx);
    InferOptions o = infer_options_default();
    o.max_ctx = ctx;
    o.max_batch = ctx;
    InferState sb, sq;
    Status st = infer_init(&sb, base, &o);
    if (st != STATUS_OK) return st;
    if ((st = infer_init(&sq, quant, &o)) != STATUS_OK) {
        infer_release(&sb);
        return st;
    }
    float *lb = malloc((size_t)ctx * (size_t)V * sizeof *lb);
    float *lq = malloc((size_t)ctx * (size_t)V * sizeof *lq);
    FidelityAcc a;
    fidelity_acc_init(&a);
    if (!lb || !lq) st = fail(STATUS_ERR_NOMEM, "cannot allocate %d x %d logits", ctx, V);
    for (int c = 0; c < chunks->n_seqs && st == STATUS_OK; c++) {
        const int32_t *toks = chunks->tokens + (size_t)c * (size_t)ctx;
        st = chunk_logits(&sb, toks, ctx, lb);
        if (st == STATUS_OK) st = chunk_logits(&sq, toks, ctx, lq);
        // llama-perplexity scores the second half of each chunk: j predicts token j + 1
        for (int j = ctx / 2; j < ctx - 1 && st == STATUS_OK; j++)
            fidelity_acc_add(&a, lb + (size_t)j * (size_t)V, lq + (size_t)j * (size_t)V, V,
                             toks[j + 1]);
    }
    if (st == STATUS_OK) fidelity_acc_stats(&a, s);
    fidelity_acc_release(&a);
    free(lb);
    free(lq);
    infer_release(&sb);
    infer_release(&sq);
    return st;
}

/* ---- report -------------------------------------------------------------------------- */

static double bits_per_weight(const FidelityReport *r) {
    return r->rep && r->rep->n_weights
               ? 8.0 * (double)r->rep->packed_bytes / (double)r->rep->n_weights
               : 0;
}

void fidelity_report_print(FILE *f, const FidelityReport *r) {
    const GptqModelReport *rep = r->rep;
    fprintf(f, "quantized %s -> %s (%s, %d-bit, group %d)\n", r->model, r->out_dir, r->method,
            r->bits, r->group_size);
    if (rep) {
        fprintf(f,
                "  %d linears, %lld weights, %.3f bits per weight (qweight+qzeros+scales+g_idx), "
                "%.1f s\n",
                rep->n_linear, (long long)rep->n_weights, bits_per_weight(r), rep->seconds);
        if (r->calib_seqs > 0)
            fprintf(
                f,
                "  calibration: %d sequences x %d tokens; time: forward %.1f s, Hessian %.1f s, "
                "GPTQ %.1f s\n",
                r->calib_seqs, r->calib_len, rep->sec_forward, rep->sec_hessian, rep->sec_gptq);
        double tot = 0;
        for (int i = 0; i < rep->n_linear; i++)
            tot += rep->lin[i].loss;
        fprintf(f, "  GPTQ loss, summed over linears: %.6g\n", tot);
    }
    fprintf(f,
            "  size: %.2f MB at 16 bits -> %.2f MB (model.safetensors), %.3f bits per parameter\n",
            (double)r->bytes_before / 1e6, (double)r->bytes_after / 1e6,
            r->params_total ? 8.0 * (double)r->bytes_after / (double)r->params_total : 0);
    const FidelityStats *s = r->fid;
    if (!s) return;
    fprintf(f, "fidelity vs the unquantized model on %lld held-out tokens:\n",
            (long long)s->n_tokens);
    fprintf(f, "  PPL(base)  %10.4f   PPL(quant) %10.4f   ln(PPL(Q)/PPL(base)) %.6f +- %.6f\n",
            s->ppl_base, s->ppl_quant, s->ln_ppl_ratio, s->ln_ppl_ratio_se);
    fprintf(f, "  Mean KLD   %10.6f +- %.6f   median %.6f   99.0%% %.6f   max %.6f\n", s->kl_mean,
            s->kl_se, s->kl_median, s->kl_p99, s->kl_max);
    fprintf(f, "  Same top   %9.3f%% +- %.3f%%   RMS dp %.3f%%\n", 100 * s->top1, 100 * s->top1_se,
            100 * s->dp_rms);
}

Status fidelity_report_write_json(const char *path, const FidelityReport *r) {
    json_t *j = json_object();
    json_object_set_new(j, "model", json_string(r->model ? r->model : ""));
    json_object_set_new(j, "output", json_string(r->out_dir ? r->out_dir : ""));
    json_object_set_new(j, "method", json_string(r->method ? r->method : ""));
    json_object_set_new(j, "bits", json_integer(r->bits));
    json_object_set_new(j, "group_size", json_integer(r->group_size));
    json_object_set_new(j, "calib_sequences", json_integer(r->calib_seqs));
    json_object_set_new(j, "calib_seq_len", json_integer(r->calib_len));
    json_object_set_new(j, "params_total", json_integer(r->params_total));
    json_object_set_new(j, "bytes_before_16bit", json_integer(r->bytes_before));
    json_object_set_new(j, "bytes_after", json_integer(r->bytes_after));
    json_object_set_new(j, "bits_per_weight_quantized", json_real(bits_per_weight(r)));
    if (r->system) json_object_set_new(j, "system", json_string(r->system));
    if (r->rep) {
        json_object_set_new(j, "quantized_weights", json_integer(r->rep->n_weights));
        json_object_set_new(j, "seconds", json_real(r->rep->seconds));
        json_object_set_new(j, "seconds_forward", json_real(r->rep->sec_forward));
        json_object_set_new(j, "seconds_hessian", json_real(r->rep->sec_hessian));
        json_object_set_new(j, "seconds_gptq", json_real(r->rep->sec_gptq));
        json_t *arr = json_array();
        for (int i = 0; i < r->rep->n_linear; i++) {
            const GptqLinearInfo *li = &r->rep->lin[i];
            json_t *o = json_object();
            json_object_set_new(o, "name", json_string(li->name));
            json_object_set_new(o, "layer", json_integer(li->layer));
            json_object_set_new(o, "out_features", json_integer(li->N));
            json_object_set_new(o, "in_features", json_integer(li->K));
            json_object_set_new(o, "loss", json_real(li->loss));
            json_object_set_new(o, "damp", json_real(li->percdamp));
            json_object_set_new(o, "dead_columns", json_integer(li->n_dead));
            json_object_set_new(o, "seconds", json_real(li->seconds));
            json_array_append_new(arr, o);
        }
        json_object_set_new(j, "linears", arr);
    }
    if (r->fid) {
        const FidelityStats *s = r->fid;
        json_t *o = json_object();
        json_object_set_new(o, "tokens", json_integer(s->n_tokens));
        json_object_set_new(o, "ppl_base", json_real(s->ppl_base));
        json_object_set_new(o, "ppl_quant", json_real(s->ppl_quant));
        json_object_set_new(o, "ln_ppl_ratio", json_real(s->ln_ppl_ratio));
        json_object_set_new(o, "ln_ppl_ratio_se", json_real(s->ln_ppl_ratio_se));
        json_object_set_new(o, "kl_mean", json_real(s->kl_mean));
        json_object_set_new(o, "kl_se", json_real(s->kl_se));
        json_object_set_new(o, "kl_median", json_real(s->kl_median));
        json_object_set_new(o, "kl_p90", json_real(s->kl_p90));
        json_object_set_new(o, "kl_p95", json_real(s->kl_p95));
        json_object_set_new(o, "kl_p99", json_real(s->kl_p99));
        json_object_set_new(o, "kl_p999", json_real(s->kl_p999));
        json_object_set_new(o, "kl_max", json_real(s->kl_max));
        json_object_set_new(o, "top1_agreement", json_real(s->top1));
        json_object_set_new(o, "top1_agreement_se", json_real(s->top1_se));
        json_object_set_new(o, "dp_rms", json_real(s->dp_rms));
        json_object_set_new(j, "fidelity", o);
    }
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
    json_decref(j);
    if (!text) return fail(STATUS_ERR_NOMEM, "cannot format the report");
    size_t len = strlen(text);
    text[len] = '\n';
    Status s = file_write_all(path, text, len + 1);
    free(text);
    return s;
}
