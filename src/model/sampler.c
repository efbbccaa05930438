/*
 * sampler.c - greedy / temperature / top-k / top-p sampling and stop rules.
 *
 * Candidates are kept as (id, probability) arrays planned at init. Ties are broken by
 * the lower token id everywhere, so a seed gives the same tokens on every machine.
 */
#include "model/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"

SamplerParams sampler_params_default(void) {
    return (SamplerParams){.temperature = 0.0f, .top_k = 0, .top_p = 1.0f, .seed = 0};
}

Status sampler_params_check(const SamplerParams *p) {
    if (!isfinite(p->temperature) || p->temperature < 0.0f || p->temperature > 100.0f)
        return fail(STATUS_ERR_ARG, "temperature %g is outside [0, 100]", (double)p->temperature);
    if (p->top_k < 0) return fail(STATUS_ERR_ARG, "top_k %d is negative", p->top_k);
    if (!isfinite(p->top_p) || p->top_p <= 0.0f || p->top_p > 1.0f)
        return fail(STATUS_ERR_ARG, "top_p %g is outside (0, 1]", (double)p->top_p);
    return STATUS_OK;
}

Status sampler_init(Sampler *s, int V, const SamplerParams *p) {
    memset(s, 0, sizeof *s);
    if (V <= 0) return fail(STATUS_ERR_ARG, "vocabulary size %d", V);
    Status st = sampler_params_check(p);
    if (st != STATUS_OK) return st;
    s->p = *p;
    s->V = V;
    rng_seed(&s->rng, p->seed);
    s->prob = xmalloc((size_t)V * sizeof *s->prob);
    s->idx = xmalloc((size_t)V * sizeof *s->idx);
    return STATUS_OK;
}

void sampler_release(Sampler *s) {
    free(s->prob);
    free(s->idx);
    memset(s, 0, sizeof *s);
}

// The first index of the largest value; NaNs are skipped unless logits[0] is one (then 0),
// as the plain loop `if (logits[i] > logits[b]) b = i` gives. Two passes: the maximum in 8
// independent lanes (vectorizes: the loop above is one compare-and-select chain of ~4
// cycles per element, ~80 us for a 49k vocabulary), then the first index that holds it.
int32_t sampler_argmax(const float *logits, int V) {
    if (V <= 0 || logits[0] != logits[0]) return 0;
    float lane[8];
    for (int j = 0; j < 8; j++)
        lane[j] = logits[0];
    int i = 0;
    for (; i + 8 <= V; i += 8)
        for (int j = 0; j < 8; j++)
            lane[j] = logits[i + j] > lane[j] ? logits[i + j] : lane[j];
    float mx = lane[0];
    for (int j = 1; j < 8; j++)
        mx = lane[j] > mx ? lane[j] : mx;
    for (; i < V; i++)
        mx = logits[i] > mx ? logits[i] : mx;
    int32_t b = 0;
    while (logits[b] != mx)
        b++;
    return b;
}

// a before b when its value is larger, or equal with a lower id.
static inline bool cand_before(float va, int32_t ia, float vb, int32_t ib) {
    return va > vb || (va == vb && ia < ib);
}

// Sorts (val, id) pairs into cand_before order (Shell sort: in place, no allocation; n is
// small after top-k or the top-p cut).
static void cand_sort(float *val, int32_t *id, int n) {
    static const int gaps[] = {701, 301, 132, 57, 23, 10, 4, 1};
    for (size_t g = 0; g < ARRAY_LEN(gaps); g++) {
        int gap = gaps[g];
        for (int i = gap; i < n; i++) {
            float v = val[i];
            int32_t d = id[i];
            int j = i;
            for (; j >= gap && cand_before(v, d, val[j - gap], id[j - gap]); j -= gap) {
                val[j] = val[j - gap];
                id[j] = id[j - gap];
            }
            val[j] = v;
            id[j] = d;
        }
    }
}

// Keeps the k best (val, id) of n in the first k slots (min-heap of size k), sorted.
static int cand_top_k(float *val, int32_t *id, int n, int k) {
    if (k >= n) {
        cand_sort(val, id, n);
        return n;
    }
    // heap[0] is the worst kept candidate
    for (int i = 0; i < n; i++) {
        if (i >= k) {
            if (!cand_before(val[i], id[i], val[0], id[0])) continue;
            val[0] = val[i];
            id[0] = id[i];
        }
        int c = i < k ? i : 0, size = i < k ? i + 1 : k;
        if (i < k) { // sift up
            while (c > 0) {
                int pa = (c - 1) / 2;
                if (!cand_before(val[pa], id[pa], val[c], id[c])) break;
                float tv = val[pa];
                val[pa] = val[c];
                val[c] = tv;
                int32_t ti = id[pa];
                id[pa] = id[c];
                id[c] = ti;
                c = pa;
            }
        } else { // sift down
            for (;;) {
                int l = 2 * c + 1, r = l + 1, w = c;
                if (l < size && cand_before(val[w], id[w], val[l], id[l])) w = l;
                if (r < size && cand_before(val[w], id[w], val[r], id[r])) w = r;
                if (w == c) break;
                float tv = val[w];
                val[w] = val[c];
                val[c] = tv;
                int32_t ti = id[w];
                id[w] = id[c];
                id[c] = ti;
                c = w;
            }
        }
    }
    cand_sort(val, id, k);
    return k;
}

// The filters of sampler.h on logits: leaves the candidates in s->prob / s->idx, most likely
// first where top-k or top-p sorted them, with probabilities (softmax over the top-k
// candidates) of which the first n are kept; *mass = their sum (1 without top-p). Not for
// greedy parameters.
static int sampler_filter(Sampler *s, const float *logits, double *mass) {
    const SamplerParams *p = &s->p;
    int V = s->V;
    float *val = s->prob;
    int32_t *id = s->idx;
    float inv_t = 1.0f / p->temperature;
    for (int i = 0; i < V; i++) {
        val[i] = logits[i] * inv_t;
        id[i] = i;
    }
    int n = V;
    if (p->top_k > 0) n = cand_top_k(val, id, V, p->top_k);
    // softmax over the candidates (max subtracted; sum in double)
    float mx = val[0];
    for (int i = 1; i < n; i++)
        mx = val[i] > mx ? val[i] : mx;
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        val[i] = expf(val[i] - mx);
        sum += val[i];
    }
    float top = 0.0f; // the largest probability
    for (int i = 0; i < n; i++) {
        val[i] = (float)(val[i] / sum);
        top = val[i] > top ? val[i] : top;
    }
    *mass = 1.0;
    if (p->top_p < 1.0f) {
        if (p->top_k == 0 && n > 1) {
            // a token other than the most likely one with probability below
            // (1 - top_p) / (n - 1) cannot be in the nucleus: even with every smaller one it
            // would not reach the missing mass; drop them before sorting (the most likely
            // token always stays: with top_p < 1/n it can be below the cut itself)
            float cut = (1.0f - p->top_p) / (float)(n - 1);
            int m = 0;
            for (int i = 0; i < n; i++)
                if (val[i] >= cut || val[i] == top) {
                    val[m] = val[i];
                    id[m++] = id[i];
                }
            n = m;
            cand_sort(val, id, n);
        }
        double cum = 0.0;
        int keep = n;
        for (int i = 0; i < n; i++) {
            cum += val[i];
            if (cum >= p->top_p) {
                keep = i + 1;
                break;
            }
        }
        n = keep;
        *mass = cum; // draw within the kept mass (renormalisation)
    }
    return n;
}

int32_t sampler_sample(Sampler *s, const float *logits) {
    const SamplerParams *p = &s->p;
    if (p->temperature == 0.0f || p->top_k == 1) return sampler_argmax(logits, s->V);
    double mass;
    const int n = sampler_filter(s, logits, &mass);
    const float *val = s->prob;
    const int32_t *id = s->idx;
    double r = rng_uniform(&s->rng) * mass, acc = 0.0;
    for (int i = 0; i < n; i++) {
        acc += val[i];
        if (r < acc) return id[i];
    }
    return id[n - 1]; // rounding: the last candidate
}

int sampler_distribution(Sampler *s, const float *logits, float *prob, int32_t *id) {
    const SamplerParams *p = &s->p;
    if (p->temperature == 0.0f || p->top_k == 1) {
        id[0] = sampler_argmax(logits, s->V);
        prob[0] = 1.0f;
        return 1;
    }
    double mass;
    const int n = sampler_filter(s, logits, &mass);
    for (int i = 0; i < n; i++) {
        prob[i] = (float)(s->prob[i] / mass);
        id[i] = s->idx[i];
    }
    return n;
}

/* ---- stop rules --------------------------------------------------------------------- */

bool stop_is_token(const StopRules *r, int32_t id) {
    for (int i = 0; i < r->n_stop_ids; i++)
        if (r->stop_ids[i] == id) return true;
    return false;
}

bool stop_find_string(const StopRules *r, const char *text, size_t len, size_t *at) {
    bool found = false;
    for (int i = 0; i < r->n_stop_strs; i++) {
        size_t sl = strlen(r->stop_strs[i]);
        if (sl == 0 || sl > len) continue;
        const char *hit = memmem(text, len, r->stop_strs[i], sl);
        if (hit && (!found || (size_t)(hit - text) < *at)) {
            *at = (size_t)(hit - text);
            found = true;
        }
    }
    return found;
}

size_t stop_max_len(const StopRules *r) {
    size_t m = 0;
    for (int i = 0; i < r->n_stop_strs; i++)
        m = MAX(m, strlen(r->stop_strs[i]));
    return m;
}
