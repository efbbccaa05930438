#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "core/dtype.h"
#include "core/fileio.h"
#include "core/rng.h"
#include "core/status.h"

const char *fixture_path(const char *name) {
    static char buf[1024];
    snprintf(buf, sizeof buf, "tests/fixtures/%s", name);
    return buf;
}

double nmse_f32(const float *x, const float *ref, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)x[i] - (double)ref[i];
        num += d * d;
        den += (double)ref[i] * (double)ref[i];
    }
    return den > 0 ? num / den : num;
}

void assert_close_f32_(const char *what, const float *x, const float *ref, int64_t n, double atol,
                       double rtol, const char *file, int line) {
    int64_t worst = -1, nbad = 0;
    double worst_excess = 0, max_rel = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)x[i] - (double)ref[i]);
        double tol = atol + rtol * fabs((double)ref[i]);
        double rel = d / (fabs((double)ref[i]) + 1e-30);
        if (rel > max_rel) max_rel = rel;
        if (!(d <= tol)) { // also catches NaN
            nbad++;
            if (worst < 0 || d - tol > worst_excess || isnan(d)) {
                worst = i;
                worst_excess = d - tol;
            }
        }
    }
    if (nbad) {
        print_error("%s: %lld of %lld elements out of tolerance (atol %g, rtol %g); worst [%lld] "
                    "got %.9g want %.9g; max rel err %.3g; NMSE %.3g\n",
                    what, (long long)nbad, (long long)n, atol, rtol, (long long)worst,
                    (double)x[worst], (double)ref[worst], max_rel, nmse_f32(x, ref, n));
        _fail(file, line);
    }
}

void fixture_open(SafeTensors *st, const char *name) {
    Status s = safetensors_open(st, fixture_path(name));
    if (s != STATUS_OK) fail_msg("cannot open fixture %s: %s", name, status_msg());
}

float *fixture_f32(const SafeTensors *st, const char *name, int64_t *numel) {
    const SafeTensor *t = safetensors_find(st, name);
    if (!t) fail_msg("fixture tensor '%s' missing", name);
    int64_t n = (int64_t)(t->nbytes / safe_dtype_size(t->dtype));
    float *out = xmalloc((size_t)(n ? n : 1) * sizeof(float));
    for (int64_t i = 0; i < n; i++) {
        switch (t->dtype) {
        case ST_F32: memcpy(&out[i], (const char *)t->data + 4 * i, 4); break;
        case ST_F64: {
            double v;
            memcpy(&v, (const char *)t->data + 8 * i, 8);
            out[i] = (float)v;
            break;
        }
        case ST_F16: {
            uint16_t h;
            memcpy(&h, (const char *)t->data + 2 * i, 2);
            out[i] = fp16_to_f32(h);
            break;
        }
        case ST_BF16: {
            uint16_t h;
            memcpy(&h, (const char *)t->data + 2 * i, 2);
            out[i] = bf16_to_f32(h);
            break;
        }
        default: fail_msg("fixture tensor '%s' is not a float tensor", name);
        }
    }
    if (numel) *numel = n;
    return out;
}

int64_t *fixture_i64(const SafeTensors *st, const char *name, int64_t *numel) {
    const SafeTensor *t = safetensors_find(st, name);
    if (!t) fail_msg("fixture tensor '%s' missing", name);
    int64_t n = (int64_t)(t->nbytes / safe_dtype_size(t->dtype));
    int64_t *out = xmalloc((size_t)(n ? n : 1) * sizeof(int64_t));
    for (int64_t i = 0; i < n; i++) {
        if (t->dtype == ST_I64)
            memcpy(&out[i], (const char *)t->data + 8 * i, 8);
        else if (t->dtype == ST_I32) {
            int32_t v;
            memcpy(&v, (const char *)t->data + 4 * i, 4);
            out[i] = v;
        } else
            fail_msg("fixture tensor '%s' is not an integer tensor", name);
    }
    if (numel) *numel = n;
    return out;
}

int run_cli(const char *args, char **out) {
    const char *build = getenv("BUILD");
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "%s/edgeforge %s 2>&1", build ? build : "build", args);
    FILE *p = popen(cmd, "r");
    if (!p) fail_msg("cannot run: %s", cmd);
    size_t cap = 4096, n = 0;
    char *buf = xmalloc(cap);
    size_t r;
    while ((r = fread(buf + n, 1, cap - n - 1, p)) > 0) {
        n += r;
        if (n + 1 >= cap) buf = xrealloc(buf, cap *= 2);
    }
    buf[n] = '\0';
    int st = pclose(p);
    if (out)
        *out = buf;
    else
        free(buf);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static void random_tensor(Model *m, Tensor *t, Rng *r, int64_t rows, int64_t cols, double mean,
                          double sd) {
    const int64_t n = rows * cols;
    float *d = model_alloc(m, (size_t)n * sizeof(float));
    assert_non_null(d);
    for (int64_t i = 0; i < n; i++)
        d[i] = (float)(mean + sd * rng_normal(r));
    *t = (Tensor){.dtype = DTYPE_F32, .ndim = cols > 1 ? 2 : 1, .data = d};
    t->shape[0] = cols > 1 ? rows : rows * cols;
    t->shape[1] = cols > 1 ? cols : 0;
}

void test_random_model(Model *m, const LlamaConfig *c, uint64_t seed) {
    model_init(m);
    LlamaConfig *mc = &m->cfg;
    *mc = *c;
    snprintf(mc->arch, sizeof mc->arch, "llama");
    if (!mc->head_dim) mc->head_dim = mc->dim / mc->n_heads;
    if (!mc->max_seq_len) mc->max_seq_len = 1024;
    if (!mc->rope_theta) mc->rope_theta = 10000.0f;
    if (!mc->norm_eps) mc->norm_eps = 1e-5f;
    mc->bos_id = mc->eos_id = -1;
    assert_int_equal(llama_config_validate(mc, "random model"), STATUS_OK);
    Rng r;
    rng_seed(&r, seed);
    const int64_t D = mc->dim, F = mc->hidden_dim, QD = (int64_t)mc->n_heads * mc->head_dim,
                  KD = (int64_t)mc->n_kv_heads * mc->head_dim, V = mc->vocab_size;
    random_tensor(m, &m->tok_emb, &r, V, D, 0, 1);
    random_tensor(m, &m->final_norm, &r, D, 1, 1, 0.1);
    if (mc->tied_embeddings)
        m->lm_head = m->tok_emb;
    else
        random_tensor(m, &m->lm_head, &r, V, D, 0, 1 / sqrt((double)D));
    m->layers = calloc((size_t)mc->n_layers, sizeof(LlamaLayer));
    assert_non_null(m->layers);
    for (int l = 0; l < mc->n_layers; l++) {
        LlamaLayer *ly = &m->layers[l];
        random_tensor(m, &ly->attn_norm, &r, D, 1, 1, 0.1);
        random_tensor(m, &ly->wq, &r, QD, D, 0, 1 / sqrt((double)D));
        random_tensor(m, &ly->wk, &r, KD, D, 0, 1 / sqrt((double)D));
        random_tensor(m, &ly->wv, &r, KD, D, 0, 1 / sqrt((double)D));
        random_tensor(m, &ly->wo, &r, D, QD, 0, 1 / sqrt((double)QD));
        random_tensor(m, &ly->ffn_norm, &r, D, 1, 1, 0.1);
        random_tensor(m, &ly->w_gate, &r, F, D, 0, 1 / sqrt((double)D));
        random_tensor(m, &ly->w_up, &r, F, D, 0, 1 / sqrt((double)D));
        random_tensor(m, &ly->w_down, &r, D, F, 0, 1 / sqrt((double)F));
    }
}

LlamaConfig test_threads_config(void) {
    return (LlamaConfig){.dim = 192,
                         .hidden_dim = 512,
                         .n_layers = 2,
                         .n_heads = 6,
                         .n_kv_heads = 2,
                         .vocab_size = 1000};
}

void assert_same_file(const char *a, const char *b) {
    char *ba, *bb;
    size_t na, nb;
    if (file_read_all(a, &ba, &na) != STATUS_OK) fail_msg("%s", status_msg());
    if (file_read_all(b, &bb, &nb) != STATUS_OK) fail_msg("%s", status_msg());
    if (na != nb || memcmp(ba, bb, na) != 0)
        fail_msg("'%s' (%zu bytes) and '%s' (%zu bytes) differ", a, na, b, nb);
    free(ba);
    free(bb);
}
