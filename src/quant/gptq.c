/*
 * gptq.c - GPTQ for one linear layer, after IST-DASLab/gptq `gptq.py` / `quant.py` as
 * docs/reference.md §1.2-§1.3 describes them (the step numbers below are §1.2's).
 *
 * Glossary: W (N, K) weights, rows = outputs; H (K, K) Hessian of the layer's inputs;
 * U (K, K) upper Cholesky factor of H^-1 (H^-1 = U^T U); G groups of g input columns.
 *
 * Precision: everything is double. The reference runs in fp32 on GPUs; double makes the
 * integer codes a function of the algorithm alone (tools/gptq_ref.py in float64 gives the
 * same codes) instead of summation order, at a cost that is small next to the Hessian.
 *
 * Parallelism: GPTQ treats the rows of W independently (each row has its own grids and
 * error feedback; only U is shared), so the in-block work runs one row per OpenMP
 * iteration and the lazy trailing update is one OpenBLAS dgemm per block. No reduction
 * crosses rows, so the codes do not depend on the thread count.
 */
#include "quant/gptq.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "core/log.h"
#include "tensor/vmath.h"

// LAPACK from OpenBLAS (Fortran ABI; Debian's libopenblas-dev ships no LAPACKE header).
// The trailing size_t is gfortran's hidden length of the `uplo` string.
void dpotrf_(const char *uplo, const int *n, double *a, const int *lda, int *info, size_t len);
void dtrtri_(const char *uplo, const char *diag, const int *n, double *a, const int *lda, int *info,
             size_t len_uplo, size_t len_diag);

void gptq_options_defaults(GptqOptions *o) {
    memset(o, 0, sizeof *o);
    o->bits = 4;
    o->group_size = 128;
    o->sym = true;
    o->act_order = false;
    o->static_groups = false;
    o->percdamp = 0.01;
    o->damp_growth = 10.0;
    o->damp_max = 1.0;
    o->blocksize = 128;
}

Status gptq_options_check(const GptqOptions *o) {
    if (o->bits < 2 || o->bits > 8)
        return fail(STATUS_ERR_ARG, "gptq: bits must be 2..8, got %d", o->bits);
    if (o->group_size != -1 && o->group_size < 1)
        return fail(STATUS_ERR_ARG, "gptq: group size must be -1 or positive, got %d",
                    o->group_size);
    if (!(o->percdamp > 0) || !(o->percdamp <= o->damp_max) || !isfinite(o->damp_max))
        return fail(STATUS_ERR_ARG, "gptq: dampening must be in (0, %g], got %g", o->damp_max,
                    o->percdamp);
    if (!(o->damp_growth > 1) || !isfinite(o->damp_growth))
        return fail(STATUS_ERR_ARG, "gptq: dampening growth must be > 1, got %g", o->damp_growth);
    if (o->blocksize < 1)
        return fail(STATUS_ERR_ARG, "gptq: block size must be positive, got %d", o->blocksize);
    return STATUS_OK;
}

/* ---- Hessian (step 1) --------------------------------------------------------------- */

// K up to 2^20 keeps K*K*8 bytes and LAPACK's int sizes far from overflow.
#define GPTQ_MAX_K (1 << 20)

Status gptq_hessian_init(GptqHessian *h, int64_t K) {
    memset(h, 0, sizeof *h);
    if (K < 1 || K > GPTQ_MAX_K)
        return fail(STATUS_ERR_ARG, "gptq: in_features must be 1..%d, got %lld", GPTQ_MAX_K,
                    (long long)K);
    h->H = calloc((size_t)K * (size_t)K, sizeof(double));
    if (!h->H)
        return fail(STATUS_ERR_NOMEM, "gptq: cannot allocate a %lldx%lld hessian", (long long)K,
                    (long long)K);
    h->K = K;
    return STATUS_OK;
}

void gptq_hessian_release(GptqHessian *h) {
    free(h->H);
    memset(h, 0, sizeof *h);
}

static Status hessian_check_batch(const GptqHessian *h, const float *X, int64_t n_tokens,
                                  int64_t n_samples) {
    if (!h->H) return fail(STATUS_ERR_ARG, "gptq: hessian used before gptq_hessian_init");
    if (n_samples < 1 || n_tokens < 1)
        return fail(STATUS_ERR_ARG,
                    "gptq: a calibration batch needs >= 1 sequence and token, "
                    "got %lld and %lld",
                    (long long)n_samples, (long long)n_tokens);
    int64_t n = n_tokens * h->K;
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(X[i]))
            return fail(STATUS_ERR_NUMERIC,
                        "gptq: non-finite calibration input at token %lld, "
                        "channel %lld",
                        (long long)(i / h->K), (long long)(i % h->K));
    return STATUS_OK;
}

// Copies the upper triangle of H (K, K) onto the lower one, in 64 x 64 tiles (walking whole
// columns reads a new cache line per element: 6.8 -> 4.7 ms per call at K = 1536 here, once
// per calibration batch).
static void mirror_upper(double *H, int64_t K) {
    enum { B = 64 };
    for (int64_t i0 = 0; i0 < K; i0 += B)
        for (int64_t j0 = 0; j0 <= i0; j0 += B)
            for (int64_t i = i0; i < MIN(i0 + B, K); i++)
                for (int64_t j = j0; j < MIN(j0 + B, i); j++)
                    H[i * K + j] = H[j * K + i];
}

Status gptq_hessian_add_batch(GptqHessian *h, const float *X, int64_t n_tokens, int64_t n_samples) {
    Status s = hessian_check_batch(h, X, n_tokens, n_samples);
    if (s != STATUS_OK) return s;
    const int64_t K = h->K;
    // running average: H *= n/(n+m); n += m; H += (2/n) X^T X
    double beta = (double)h->n_samples / (double)(h->n_samples + n_samples);
    h->n_samples += n_samples;
    double alpha = 2.0 / (double)h->n_samples;
    // X arrives as float; dsyrk wants double. Convert in chunks to bound the scratch memory.
    int64_t chunk = MAX((int64_t)1, MIN(n_tokens, (int64_t)(1 << 22) / K));
    double *Xd = malloc((size_t)chunk * (size_t)K * sizeof(double));
    if (!Xd) return fail(STATUS_ERR_NOMEM, "gptq: cannot allocate hessian scratch");
    for (int64_t t0 = 0; t0 < n_tokens; t0 += chunk) {
        int64_t m = MIN(chunk, n_tokens - t0);
        for (int64_t i = 0; i < m * K; i++)
            Xd[i] = X[t0 * K + i];
        // upper triangle of H = alpha Xd^T Xd + beta H   (Xd (m, K) row-major)
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)K, (int)m, alpha, Xd, (int)K,
                    t0 == 0 ? beta : 1.0, h->H, (int)K);
    }
    free(Xd);
    mirror_upper(h->H, K);
    return STATUS_OK;
}

Status gptq_hessian_add_batch_ref(GptqHessian *h, const float *X, int64_t n_tokens,
                                  int64_t n_samples) {
    Status s = hessian_check_batch(h, X, n_tokens, n_samples);
    if (s != STATUS_OK) return s;
    const int64_t K = h->K;
    double beta = (double)h->n_samples / (double)(h->n_samples + n_samples);
    h->n_samples += n_samples;
    double alpha = 2.0 / (double)h->n_samples;
    for (int64_t i = 0; i < K; i++)
        for (int64_t j = 0; j < K; j++) {
            double acc = 0;
            for (int64_t t = 0; t < n_tokens; t++)
                acc += (double)X[t * K + i] * X[t * K + j];
            h->H[i * K + j] = beta * h->H[i * K + j] + alpha * acc;
        }
    return STATUS_OK;
}

/* ---- quantizer (reference §1.3) ------------------------------------------------------ */

// The reference quantizer's MSE search constants (quant.py Quantizer.configure defaults).
#define GPTQ_MSE_GRID  100
#define GPTQ_MSE_STEPS 80 // int(maxshrink 0.8 * grid)
#define GPTQ_MSE_NORM  2.4

// The reference's range of a segment: xmin = min(min x, 0), xmax = max(max x, 0), made
// symmetric for sym, -1..1 when both are 0.
static void grid_range(const double *x, int64_t n, bool sym, double *xmin, double *xmax) {
    double lo = 0, hi = 0;
    for (int64_t i = 0; i < n; i++) {
        if (x[i] < lo) lo = x[i];
        if (x[i] > hi) hi = x[i];
    }
    if (sym) {
        // Note the reference's quirk, kept on purpose: a segment with no negative value keeps
        // xmin = 0, so its scale is xmax/maxq while the zero stays at (maxq+1)/2.
        hi = fabs(lo) > hi ? fabs(lo) : hi;
        if (lo < 0) lo = -hi;
    }
    if (lo == 0 && hi == 0) {
        lo = -1;
        hi = 1;
    }
    *xmin = lo;
    *xmax = hi;
}

// The MSE search over the shrunk ranges; pruned: every candidate's error fast (within 1e-12
// relative of the exact sum, vm_quant_err_pow), then the exact sum (libm pow, in order) only
// for candidates within 1e-9 of the fast minimum. A candidate outside cannot reach the exact
// minimum, so the first exact minimum, the reference's choice (strict <), is among these and
// is found in the same order: the result equals the exhaustive search's.
static void grid_mse(double *scale, double *zero, const double *x, int64_t n, int maxq, bool sym,
                     double xmin, double xmax, bool pruned) {
    double s1[GPTQ_MSE_STEPS], z1[GPTQ_MSE_STEPS], fast[GPTQ_MSE_STEPS], fmin = INFINITY;
    for (int i = 0; i < GPTQ_MSE_STEPS; i++) {
        const double p = 1.0 - (double)i / GPTQ_MSE_GRID;
        const double xmin1 = p * xmin, xmax1 = p * xmax;
        s1[i] = (xmax1 - xmin1) / maxq;
        z1[i] = sym ? *zero : rint(-xmin1 / s1[i]);
        fast[i] = pruned ? vm_quant_err_pow(x, n, s1[i], z1[i], maxq, GPTQ_MSE_NORM) : 0;
        fmin = fast[i] < fmin ? fast[i] : fmin;
    }
    double best = INFINITY;
    for (int i = 0; i < GPTQ_MSE_STEPS; i++) {
        if (fast[i] > fmin * (1 + 1e-9)) continue;
        const double err = vm_quant_err_pow_ref(x, n, s1[i], z1[i], maxq, GPTQ_MSE_NORM);
        if (err < best) {
            best = err;
            *scale = s1[i];
            *zero = z1[i];
        }
    }
}

void gptq_grid(double *scale, double *zero, const double *x, int64_t n, int bits, bool sym,
               bool mse) {
    const int maxq = (1 << bits) - 1;
    double xmin, xmax;
    grid_range(x, n, sym, &xmin, &xmax);
    *scale = (xmax - xmin) / maxq;
    *zero = sym ? (maxq + 1) / 2.0 : rint(-xmin / *scale);
    if (mse) grid_mse(scale, zero, x, n, maxq, sym, xmin, xmax, true);
}

void gptq_grid_mse_ref(double *scale, double *zero, const double *x, int64_t n, int bits,
                       bool sym) {
    const int maxq = (1 << bits) - 1;
    double xmin, xmax;
    grid_range(x, n, sym, &xmin, &xmax);
    *scale = (xmax - xmin) / maxq;
    *zero = sym ? (maxq + 1) / 2.0 : rint(-xmin / *scale);
    grid_mse(scale, zero, x, n, maxq, sym, xmin, xmax, false);
}

/* ---- layer quantization ------------------------------------------------------------- */

static Status result_alloc(GptqResult *r, int64_t N, int64_t K, const GptqOptions *o) {
    memset(r, 0, sizeof *r);
    r->N = N;
    r->K = K;
    r->bits = o->bits;
    r->group_size = o->group_size;
    r->G = o->group_size == -1 ? 1 : (K + o->group_size - 1) / o->group_size;
    r->q = malloc((size_t)N * (size_t)K);
    r->scales = calloc((size_t)(r->G * N), sizeof(double));
    r->zeros = calloc((size_t)(r->G * N), sizeof(int32_t));
    r->g_idx = malloc((size_t)K * sizeof(int32_t));
    r->perm = malloc((size_t)K * sizeof(int32_t));
    if (!r->q || !r->scales || !r->zeros || !r->g_idx || !r->perm) {
        gptq_result_release(r);
        return fail(STATUS_ERR_NOMEM, "gptq: cannot allocate the result for a %lldx%lld layer",
                    (long long)N, (long long)K);
    }
    for (int64_t j = 0; j < K; j++)
        r->perm[j] = (int32_t)j;
    return STATUS_OK;
}

void gptq_result_release(GptqResult *r) {
    free(r->q);
    free(r->scales);
    free(r->zeros);
    free(r->g_idx);
    free(r->perm);
    memset(r, 0, sizeof *r);
}

static Status check_finite_f32(const float *x, int64_t n, const char *what) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return fail(STATUS_ERR_NUMERIC, "gptq: non-finite value in %s at element %lld", what,
                        (long long)i);
    return STATUS_OK;
}

// Act-order (step 3): columns by decreasing diag(H). Stable: equal diagonals keep column
// order (torch.argsort is not stable by default; tools/gptq_ref.py passes stable=True).
typedef struct {
    double d;
    int32_t i;
} DiagIdx;

static int cmp_diag_desc(const void *a, const void *b) {
    const DiagIdx *x = a, *y = b;
    if (x->d != y->d) return x->d > y->d ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i);
}

static void act_order_perm(int32_t *perm, const double *Hp, int64_t K) {
    DiagIdx *v = xmalloc((size_t)K * sizeof *v);
    for (int64_t i = 0; i < K; i++)
        v[i] = (DiagIdx){Hp[i * K + i], (int32_t)i};
    qsort(v, (size_t)K, sizeof *v, cmp_diag_desc);
    for (int64_t i = 0; i < K; i++)
        perm[i] = v[i].i;
    free(v);
}

// Steps 4-5: U = upper Cholesky factor of (H + damp I)^-1, damp = pd * mean(diag H),
// raising pd by o->damp_growth while a factorisation fails. U (K, K) row-major.
//
// The reference computes it as cholesky(cholesky_inverse(cholesky(H)), upper): three
// factorisation-sized steps (potrf, potri = trtri + lauum, potrf), 4K^3/3 flops. We take
// the reversed factorisation instead, 2K^3/3 flops: with J the exchange matrix (reversal)
// and J H J = L L^T (potrf of the reversed H),
//   H^-1 = J (L L^T)^-1 J = (J L^-1 J)^T (J L^-1 J),
// and J L^-1 J is upper triangular with a positive diagonal, so it *is* the upper Cholesky
// factor of H^-1 (unique). Same matrix up to rounding; tests/test_gptq.c checks the codes,
// scales and losses against the reference's three-step float64 computation.
static Status inverse_factor(double *U, const double *Hp, int64_t K, const GptqOptions *o,
                             double *pd_used) {
    double mean = 0;
    for (int64_t i = 0; i < K; i++)
        mean += Hp[i * K + i];
    mean /= (double)K;
    if (!(mean > 0) || !isfinite(mean))
        return fail(STATUS_ERR_NUMERIC, "gptq: hessian diagonal mean is %g, not positive", mean);
    const int n = (int)K;
    double pd = o->percdamp;
    for (;;) {
        const double damp = pd * mean;
        for (int64_t i = 0; i < K; i++) // U = J (H + damp I) J
            for (int64_t j = 0; j < K; j++)
                U[i * K + j] = Hp[(K - 1 - i) * K + (K - 1 - j)] + (i == j ? damp : 0.0);
        // Row-major U read as column-major is U^T = U (symmetric); uplo "L" of the
        // column-major view is the row-major upper triangle: potrf leaves L there (L[a][b],
        // a >= b, at row-major (b, a)) and trtri replaces it by L^-1.
        // One OpenBLAS thread: its threaded LAPACK blocks differently per thread count
        // (measured: other bits at 2 threads than at 1), and U decides the codes.
        int info = 0, threads = openblas_get_num_threads();
        openblas_set_num_threads(1);
        dpotrf_("L", &n, U, &n, &info, 1);
        if (info == 0) dtrtri_("L", "N", &n, U, &n, &info, 1, 1);
        openblas_set_num_threads(threads);
        if (info == 0) break;
        // potrf's info i: the reversed matrix's pivot i (from 1) failed, i.e. H's column K - i
        // (from 0; the factorisation runs from the last column to the first)
        const long long col = (long long)(K - info);
        double next = pd * o->damp_growth;
        if (next > o->damp_max * (1 + 1e-9))
            return fail(STATUS_ERR_NUMERIC,
                        "gptq: hessian is not positive definite even with dampening %g "
                        "(%g x mean diag %g; cholesky failed at column %lld); use more or longer "
                        "calibration sequences",
                        damp, pd, mean, col);
        log_warn("gptq: cholesky failed at column %lld with dampening %g; retrying with %g", col,
                 pd, next);
        pd = next;
    }
    // U[i][j] = (J L^-1 J)[i][j] = L^-1[K-1-i][K-1-j], stored at row-major (K-1-j, K-1-i):
    // an involution of the upper triangle, done by swapping pairs in place; then the strictly
    // lower triangle (LAPACK left the reversed H there) is cleared.
    for (int64_t i = 0; i < K; i++)
        for (int64_t j = i; j < K; j++) {
            const int64_t a = (K - 1 - j) * K + (K - 1 - i);
            if (a > i * K + j) {
                const double t = U[i * K + j];
                U[i * K + j] = U[a];
                U[a] = t;
            }
        }
    for (int64_t i = 0; i < K; i++)
        for (int64_t j = 0; j < i; j++)
            U[i * K + j] = 0;
    *pd_used = pd;
    return STATUS_OK;
}

// Step 6 for one row and one block [i1, i2): quantizes w1 = W[row, i1:i2] (updated in place
// by the in-block feedback), writes codes, the block's errors and the row's grid state.
// wrow is the outer row, stale inside the block: group grids are found from it, as in the
// reference (identical to the updated values when group == blocksize).
typedef struct {
    const GptqOptions *o;
    const double *U;
    int64_t K, N, bs;
    int maxq;
} BlockCtx;

static double quantize_block_row(const BlockCtx *b, GptqResult *r, int64_t row, int64_t i1,
                                 int64_t i2, const double *wrow, double *w1, double *err1,
                                 double *scale, double *zero) {
    const int64_t K = b->K, N = b->N, g = b->o->group_size;
    double loss = 0;
    for (int64_t i = 0; i < i2 - i1; i++) {
        const int64_t c = i1 + i;
        if (g > 0 && !b->o->static_groups && c % g == 0) {
            gptq_grid(scale, zero, wrow + c, MIN(g, K - c), b->o->bits, b->o->sym, b->o->mse);
            r->scales[(c / g) * N + row] = *scale;
            r->zeros[(c / g) * N + row] = (int32_t)*zero;
        } else if (g > 0 && b->o->static_groups) {
            int64_t gi = r->perm[c] / g;
            *scale = r->scales[gi * N + row];
            *zero = r->zeros[gi * N + row];
        }
        const double x = w1[i];
        const int q = gptq_code(x, *scale, *zero, b->maxq);
        const double diff = x - *scale * ((double)q - *zero);
        const double d = b->U[c * K + c];
        loss += diff * diff / (d * d);
        const double e = diff / d;
        const double *u = b->U + c * K + i1;
        for (int64_t j = i; j < i2 - i1; j++)
            w1[j] -= e * u[j]; // w1[:, i:] -= e U[c, i:]
        err1[i] = e;
        r->q[row * K + r->perm[c]] = (uint8_t)q;
    }
    return loss / 2;
}

Status gptq_quantize_layer(GptqResult *r, const float *W, int64_t N, const GptqHessian *h,
                           const GptqOptions *o) {
    memset(r, 0, sizeof *r);
    Status s = gptq_options_check(o);
    if (s != STATUS_OK) return s;
    if (!h || !h->H || h->n_samples < 1)
        return fail(STATUS_ERR_ARG, "gptq: the hessian has no calibration data");
    if (N < 1)
        return fail(STATUS_ERR_ARG, "gptq: out_features must be positive, got %lld", (long long)N);
    const int64_t K = h->K, g = o->group_size, bs = MIN((int64_t)o->blocksize, K);
    if ((s = check_finite_f32(W, N * K, "weights")) != STATUS_OK) return s;
    for (int64_t i = 0; i < K * K; i++)
        if (!isfinite(h->H[i]))
            return fail(STATUS_ERR_NUMERIC, "gptq: non-finite hessian entry (%lld, %lld)",
                        (long long)(i / K), (long long)(i % K));
    if ((s = result_alloc(r, N, K, o)) != STATUS_OK) return s;

    double *Wd = malloc((size_t)(N * K) * sizeof(double)); // (N, K), permuted columns
    double *Hp = malloc((size_t)(K * K) * sizeof(double)); // (K, K), dead-fixed, permuted
    double *U = malloc((size_t)(K * K) * sizeof(double));  // (K, K) upper factor of H^-1
    double *tmp = malloc((size_t)MAX(N, K) * sizeof(double));
    double *W1 = malloc((size_t)(N * bs) * sizeof(double));  // (N, bs) block copy
    double *Err = malloc((size_t)(N * bs) * sizeof(double)); // (N, bs) scaled errors
    double *gs = malloc((size_t)N * sizeof(double)), *gz = malloc((size_t)N * sizeof(double));
    double *row_loss = calloc((size_t)N, sizeof(double));
    if (!Wd || !Hp || !U || !tmp || !W1 || !Err || !gs || !gz || !row_loss) {
        s = fail(STATUS_ERR_NOMEM, "gptq: cannot allocate work memory for a %lldx%lld layer",
                 (long long)N, (long long)K);
        goto out;
    }
    for (int64_t i = 0; i < N * K; i++)
        Wd[i] = W[i];
    memcpy(Hp, h->H, (size_t)(K * K) * sizeof(double));

    // The per-row grid for group -1 comes from W before dead columns are zeroed (with groups
    // every row's grid is replaced before its first use).
#pragma omp parallel for schedule(static) if (o->mse)
    for (int64_t row = 0; row < N; row++)
        gptq_grid(&gs[row], &gz[row], Wd + row * K, K, o->bits, o->sym, o->mse && g == -1);
    if (g == -1)
        for (int64_t row = 0; row < N; row++) {
            r->scales[row] = gs[row];
            r->zeros[row] = (int32_t)gz[row];
        }

    // Step 2: dead columns (an input that was always zero).
    for (int64_t i = 0; i < K; i++)
        if (Hp[i * K + i] == 0) {
            Hp[i * K + i] = 1;
            for (int64_t row = 0; row < N; row++)
                Wd[row * K + i] = 0;
            r->n_dead++;
        }

    // Static groups: every grid up front from the (dead-zeroed) W in column order.
    if (g > 0 && o->static_groups)
#pragma omp parallel for schedule(static) if (o->mse)
        for (int64_t row = 0; row < N; row++)
            for (int64_t gi = 0; gi < r->G; gi++) {
                double sc, z;
                gptq_grid(&sc, &z, Wd + row * K + gi * g, MIN(g, K - gi * g), o->bits, o->sym,
                          o->mse);
                r->scales[gi * N + row] = sc;
                r->zeros[gi * N + row] = (int32_t)z;
            }

    // Step 3: act-order permutes W's columns and H's rows and columns.
    if (o->act_order) {
        act_order_perm(r->perm, Hp, K);
        for (int64_t i = 0; i < K; i++)
            for (int64_t j = 0; j < K; j++)
                U[i * K + j] = Hp[(int64_t)r->perm[i] * K + r->perm[j]];
        memcpy(Hp, U, (size_t)(K * K) * sizeof(double));
        for (int64_t row = 0; row < N; row++) {
            double *w = Wd + row * K;
            for (int64_t j = 0; j < K; j++)
                tmp[j] = w[r->perm[j]];
            memcpy(w, tmp, (size_t)K * sizeof(double));
        }
    }

    // Steps 4-5.
    if ((s = inverse_factor(U, Hp, K, o, &r->percdamp)) != STATUS_OK) goto out;

    // Step 6: lazy blocks.
    BlockCtx b = {.o = o, .U = U, .K = K, .N = N, .bs = bs, .maxq = (1 << o->bits) - 1};
    for (int64_t i1 = 0; i1 < K; i1 += bs) {
        const int64_t i2 = MIN(i1 + bs, K);
#pragma omp parallel for schedule(static)
        for (int64_t row = 0; row < N; row++) {
            double *w1 = W1 + row * bs;
            memcpy(w1, Wd + row * K + i1, (size_t)(i2 - i1) * sizeof(double));
            row_loss[row] += quantize_block_row(&b, r, row, i1, i2, Wd + row * K, w1,
                                                Err + row * bs, &gs[row], &gz[row]);
        }
        // W[:, i2:] -= Err1 (N, i2-i1) . U[i1:i2, i2:]
        if (i2 < K)
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, (int)(K - i2),
                        (int)(i2 - i1), -1.0, Err, (int)bs, U + i1 * K + i2, (int)K, 1.0, Wd + i2,
                        (int)K);
    }
    r->loss = 0;
    for (int64_t row = 0; row < N; row++)
        r->loss += row_loss[row];

    // Step 7 (codes were written unpermuted): group of each original column.
    for (int64_t c = 0; c < K; c++) {
        int64_t j = r->perm[c];
        r->g_idx[j] = g == -1 ? 0 : (int32_t)((o->act_order && !o->static_groups ? c : j) / g);
    }
    if (!isfinite(r->loss)) s = fail(STATUS_ERR_NUMERIC, "gptq: the layer loss is not finite");
out:
    free(Wd);
    free(Hp);
    free(U);
    free(tmp);
    free(W1);
    free(Err);
    free(gs);
    free(gz);
    free(row_loss);
    if (s != STATUS_OK) gptq_result_release(r);
    return s;
}

Status gptq_rtn_layer(GptqResult *r, const float *W, int64_t N, int64_t K, const GptqOptions *o) {
    memset(r, 0, sizeof *r);
    Status s = gptq_options_check(o);
    if (s != STATUS_OK) return s;
    if (N < 1 || K < 1 || K > GPTQ_MAX_K)
        return fail(STATUS_ERR_ARG, "gptq: bad layer shape %lldx%lld", (long long)N, (long long)K);
    if ((s = check_finite_f32(W, N * K, "weights")) != STATUS_OK) return s;
    if ((s = result_alloc(r, N, K, o)) != STATUS_OK) return s;
    const int64_t g = o->group_size == -1 ? K : o->group_size;
    const int maxq = (1 << o->bits) - 1;
    double *x = xmalloc((size_t)K * sizeof(double));
    for (int64_t row = 0; row < N; row++) {
        for (int64_t j = 0; j < K; j++)
            x[j] = W[row * K + j];
        for (int64_t gi = 0; gi < r->G; gi++) {
            const int64_t a = gi * g, n = MIN(g, K - a);
            double sc, z;
            gptq_grid(&sc, &z, x + a, n, o->bits, o->sym, o->mse);
            r->scales[gi * N + row] = sc;
            r->zeros[gi * N + row] = (int32_t)z;
            for (int64_t j = a; j < a + n; j++)
                r->q[row * K + j] = (uint8_t)gptq_code(x[j], sc, z, maxq);
        }
    }
    free(x);
    for (int64_t j = 0; j < K; j++)
        r->g_idx[j] = (int32_t)(j / g);
    r->percdamp = 0;
    return STATUS_OK;
}

void gptq_result_dequantize(float *W_hat, const GptqResult *r) {
    for (int64_t row = 0; row < r->N; row++)
        for (int64_t j = 0; j < r->K; j++) {
            int64_t gi = r->g_idx[j];
            W_hat[row * r->K + j] =
                (float)(r->scales[gi * r->N + row] *
                        ((double)r->q[row * r->K + j] - r->zeros[gi * r->N + row]));
        }
}

double gptq_layer_error(const double *H, const float *W, const float *W_hat, int64_t N, int64_t K) {
    double *D = xmalloc((size_t)(N * K) * sizeof(double)),
           *DH = xmalloc((size_t)(N * K) * sizeof(double));
    for (int64_t i = 0; i < N * K; i++)
        D[i] = (double)W[i] - (double)W_hat[i];
    // DH (N, K) = D H; error = sum D .* DH
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, (int)K, (int)K, 1.0, D, (int)K,
                H, (int)K, 0.0, DH, (int)K);
    double e = 0;
    for (int64_t i = 0; i < N * K; i++)
        e += D[i] * DH[i];
    free(D);
    free(DH);
    return e;
}
