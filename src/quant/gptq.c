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
 * error feedback; only U is shared), so the in-block work runs eight rows per OpenMP
 * iteration, across the rows in vector lanes (quantize_block_tile; quantize_block_row is
 * its one-row scalar twin), and the lazy trailing update is one dgemm per block, as a
 * grid of single-threaded tiles (gemm_f64).
 * U comes from a blocked Cholesky factorisation and triangular inverse of our own whose
 * tiles are single-threaded BLAS calls shared out to the threads. No reduction crosses rows
 * or tiles, so the codes do not depend on the thread count.
 */
#include "quant/gptq.h"

#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "core/log.h"
#include "tensor/gemm.h"
#include "tensor/vmath.h"

// LAPACK from OpenBLAS (Fortran ABI; Debian's libopenblas-dev ships no LAPACKE header).
// The trailing size_t is gfortran's hidden length of the `uplo` string.
void dpotrf_(const char *uplo, const int *n, double *a, const int *lda, int *info, size_t len);

// Index of the first NaN/Inf of x (n), or n; the scan runs on all threads, in blocks whose
// sum of x * 0 (NaN exactly when the block holds a NaN or an infinity; a SIMD reduction,
// unlike a search) decides whether to look for the element.
static int64_t first_nonfinite_f32(const float *x, int64_t n) {
    enum { BLK = 4096 };
    const int64_t nb = (n + BLK - 1) / BLK;
    int64_t first = n;
#pragma omp parallel for schedule(static) reduction(min : first) if (n >= (1 << 16))
    for (int64_t b = 0; b < nb; b++) {
        const int64_t i0 = b * BLK, i1 = MIN(i0 + BLK, n);
        float z = 0;
#pragma omp simd reduction(+ : z)
        for (int64_t i = i0; i < i1; i++)
            z += x[i] * 0.0f;
        if (z == 0) continue;
        for (int64_t i = i0; i < i1; i++)
            if (!isfinite(x[i])) {
                first = MIN(first, i);
                break;
            }
    }
    return first;
}

// The same over the upper triangle (j >= i) of the row-major (K, K) matrix H: the index
// i K + j of its first non-finite entry, or K K.
static int64_t first_nonfinite_upper(const double *H, int64_t K) {
    int64_t first = K * K;
#pragma omp parallel for schedule(dynamic, 16) reduction(min : first) if (K >= 256)
    for (int64_t i = 0; i < K; i++)
        for (int64_t j = i; j < K; j++)
            if (!isfinite(H[i * K + j]) && i * K + j < first) first = i * K + j;
    return first;
}

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
    const int64_t n = n_tokens * h->K, i = first_nonfinite_f32(X, n);
    if (i < n)
        return fail(STATUS_ERR_NUMERIC,
                    "gptq: non-finite calibration input at token %lld, "
                    "channel %lld",
                    (long long)(i / h->K), (long long)(i % h->K));
    return STATUS_OK;
}

// Copies the upper triangle of H (K, K) onto the lower one, in 64 x 64 tiles (walking whole
// columns reads a new cache line per element: 6.8 -> 4.7 ms per call at K = 1536 here).
static void mirror_upper(double *H, int64_t K) {
    enum { B = 64 };
#pragma omp parallel for schedule(dynamic)
    for (int64_t i0 = 0; i0 < K; i0 += B)
        for (int64_t j0 = 0; j0 <= i0; j0 += B)
            for (int64_t i = i0; i < MIN(i0 + B, K); i++)
                for (int64_t j = j0; j < MIN(j0 + B, i); j++)
                    H[i * K + j] = H[j * K + i];
}

// Tiles of the Hessian's rank-m update: a function of K alone (bits must not depend on the
// thread count), ~384 wide: OpenBLAS's threaded dsyrk runs at ~55 % of this machine's DGEMM
// rate on these shapes, one-thread dgemm tiles of this size at ~85 % (RESULTS.md).
static int64_t syrk_tiles(int64_t K) { return (K + 383) / 384; }

static int gptq_omp_threads(void);

// Upper triangle of C (K, K) := alpha X^T X + beta C for X (m, K), row-major: diagonal tiles
// by dsyrk, the others by dgemm, one single-threaded BLAS call per tile on the OpenMP
// threads, so the bits do not depend on the thread count (test_gptq.c
// test_hessian_threads). They are not those of one whole dsyrk: OpenBLAS's dgemm and dsyrk
// split a long inner dimension (over 256 rows) at different points and apply alpha per
// split, so which path runs depends on K alone (one tile when K <= 384).
static void syrk_upper(double *C, const double *X, int64_t K, int64_t m, double alpha,
                       double beta) {
    const int64_t nb = syrk_tiles(K), NB = (K + nb - 1) / nb, n_tiles = nb * (nb + 1) / 2;
    const int nt = gptq_omp_threads();
    (void)nt; // read by the pragma only (unused without OpenMP)
    // (OpenBLAS's OpenMP build sets our thread count too: ours are counted first)
    const int threads = openblas_get_num_threads();
    openblas_set_num_threads(1);
    // off-diagonal tiles (twice a diagonal one's work) first, then the diagonal
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
    for (int64_t t = 0; t < n_tiles; t++) {
        int64_t i, j;
        if (t < n_tiles - nb) { // off-diagonal number t, row by row: (i, j), j > i
            int64_t k = t;
            for (i = 0; k >= nb - 1 - i; i++)
                k -= nb - 1 - i;
            j = i + 1 + k;
        } else {
            i = j = t - (n_tiles - nb);
        }
        const int64_t i0 = i * NB, j0 = j * NB, mi = MIN(NB, K - i0), mj = MIN(NB, K - j0);
        double *Ct = C + i0 * K + j0;
        if (i == j)
            cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)mi, (int)m, alpha, X + i0,
                        (int)K, beta, Ct, (int)K);
        else
            cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)mi, (int)mj, (int)m, alpha,
                        X + i0, (int)K, X + j0, (int)K, beta, Ct, (int)K);
    }
    openblas_set_num_threads(threads);
#ifdef _OPENMP
    omp_set_num_threads(nt);
#endif
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
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < m * K; i++)
            Xd[i] = X[t0 * K + i];
        // upper triangle of H = alpha Xd^T Xd + beta H   (Xd (m, K) row-major)
        syrk_upper(h->H, Xd, K, m, alpha, t0 == 0 ? beta : 1.0);
    }
    free(Xd);
    h->lower_stale = true;
    return STATUS_OK;
}

void gptq_hessian_symmetrize(GptqHessian *h) {
    if (!h->H || !h->lower_stale) return;
    mirror_upper(h->H, h->K);
    h->lower_stale = false;
}

Status gptq_hessian_add_batch_ref(GptqHessian *h, const float *X, int64_t n_tokens,
                                  int64_t n_samples) {
    Status s = hessian_check_batch(h, X, n_tokens, n_samples);
    if (s != STATUS_OK) return s;
    const int64_t K = h->K;
    gptq_hessian_symmetrize(h); // every entry is updated from its current value
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
    h->lower_stale = false; // every entry computed
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
    const int64_t i = first_nonfinite_f32(x, n);
    if (i < n)
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

static void act_order_perm(int32_t *perm, const double *diag, int64_t K) {
    DiagIdx *v = xmalloc((size_t)K * sizeof *v);
    for (int64_t i = 0; i < K; i++)
        v[i] = (DiagIdx){diag[i], (int32_t)i};
    qsort(v, (size_t)K, sizeof *v, cmp_diag_desc);
    for (int64_t i = 0; i < K; i++)
        perm[i] = v[i].i;
    free(v);
}

/* ---- Cholesky factor and triangular inverse, deterministic on any thread count --------- */

static int gptq_omp_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

// Block size of the factorisation and the inverse.
#define GPTQ_CHOL_NB 128

// Tile (i, j), j <= i, of the lower triangle's tile number t (row by row).
static void lower_tile(int t, int *i, int *j) {
    int r = 0;
    while ((r + 1) * (r + 2) / 2 <= t)
        r++;
    *i = r;
    *j = t - r * (r + 1) / 2;
}

// The lower Cholesky factor L of the column-major n x n matrix A (lower triangle read), in
// place: right-looking, in blocks of GPTQ_CHOL_NB, the panel's row strips and the trailing
// update's tiles handed to the OpenMP threads. Each tile is one BLAS call on one thread
// (the caller sets OpenBLAS to one thread; inside our parallel regions its OpenMP build
// runs on the calling thread anyway), and no tile depends on which thread ran another, so
// the bits do not depend on the thread count (LAPACK's threaded dpotrf blocks by thread
// count, so its bits do). Returns 0, or LAPACK's info: the failing pivot, from 1.
static int chol_lower(double *A, int n, int nt) {
    const int NB = GPTQ_CHOL_NB;
    for (int k0 = 0; k0 < n; k0 += NB) {
        const int kb = MIN(NB, n - k0), r0 = k0 + kb, m = n - r0;
        int info = 0;
        dpotrf_("L", &kb, A + k0 + (size_t)k0 * n, &n, &info, 1);
        if (info != 0) return k0 + info;
        if (m == 0) break;
        const double *Lkk = A + k0 + (size_t)k0 * n;
        double *P = A + r0 + (size_t)k0 * n; // (m, kb): the panel below the diagonal block
        const int ns = (m + NB - 1) / NB;
#pragma omp parallel for schedule(dynamic) num_threads(nt)
        for (int st = 0; st < ns; st++) // P := P L_kk^-T
            cblas_dtrsm(CblasColMajor, CblasRight, CblasLower, CblasTrans, CblasNonUnit,
                        MIN(NB, m - st * NB), kb, 1.0, Lkk, n, P + st * NB, n);
#pragma omp parallel for schedule(dynamic) num_threads(nt)
        for (int t = 0; t < ns * (ns + 1) / 2; t++) { // A[r0:, r0:] -= P P^T, lower tiles
            int i, j;
            lower_tile(t, &i, &j);
            const int ri = MIN(NB, m - i * NB), rj = MIN(NB, m - j * NB);
            double *C = A + (r0 + i * NB) + (size_t)(r0 + j * NB) * n;
            if (i == j)
                cblas_dsyrk(CblasColMajor, CblasLower, CblasNoTrans, ri, kb, -1.0, P + i * NB, n,
                            1.0, C, n);
            else
                cblas_dgemm(CblasColMajor, CblasNoTrans, CblasTrans, ri, rj, kb, -1.0, P + i * NB,
                            n, P + j * NB, n, 1.0, C, n);
        }
    }
    return 0;
}

// X = L^-1 for the column-major lower n x n factor L (X lower, zero above): column strips
// of GPTQ_CHOL_NB, each an independent triangular solve L[c0:, c0:] X[c0:, strip] = I, on
// the OpenMP threads (the first strips are the largest; dynamic order takes them first).
static void tri_inv_lower(double *X, const double *L, int n, int nt) {
    const int NB = GPTQ_CHOL_NB, ns = (n + NB - 1) / NB;
#pragma omp parallel for schedule(dynamic) num_threads(nt)
    for (int st = 0; st < ns; st++) {
        const int c0 = st * NB, cb = MIN(NB, n - c0);
        memset(X + (size_t)c0 * n, 0, (size_t)cb * (size_t)n * sizeof(double)); // its columns
        double *Xs = X + c0 + (size_t)c0 * n;
        for (int j = 0; j < cb; j++)
            Xs[j + (size_t)j * n] = 1.0;
        cblas_dtrsm(CblasColMajor, CblasLeft, CblasLower, CblasNoTrans, CblasNonUnit, n - c0, cb,
                    1.0, L + c0 + (size_t)c0 * n, n, Xs, n);
    }
}

// Steps 4-5: U = upper Cholesky factor of (H' + damp I)^-1, damp = pd * mean(diag H'),
// raising pd by o->damp_growth while a factorisation fails, where H' is H with dead
// columns' diagonals set to 1 (diag: H's diagonal so fixed) and rows and columns taken in
// the order perm (act-order; the identity otherwise). U (K, K) row-major; X (K, K) scratch.
//
// The reference computes it as cholesky(cholesky_inverse(cholesky(H)), upper): three
// factorisation-sized steps (potrf, potri = trtri + lauum, potrf), 4K^3/3 flops. We take
// the reversed factorisation instead, 2K^3/3 flops: with J the exchange matrix (reversal)
// and J H J = L L^T (the factorisation of the reversed H),
//   H^-1 = J (L L^T)^-1 J = (J L^-1 J)^T (J L^-1 J),
// and J L^-1 J is upper triangular with a positive diagonal, so it *is* the upper Cholesky
// factor of H^-1 (unique). Same matrix up to rounding; tests/test_gptq.c checks the codes,
// scales and losses against the reference's three-step float64 computation.
static Status inverse_factor(double *U, double *X, const double *H, const double *diag,
                             const int32_t *perm, int64_t K, const GptqOptions *o,
                             double *pd_used) {
    double mean = 0;
    for (int64_t i = 0; i < K; i++) // in the permuted order, as a permuted copy would sum
        mean += diag[perm[i]];
    mean /= (double)K;
    if (!(mean > 0) || !isfinite(mean))
        return fail(STATUS_ERR_NUMERIC, "gptq: hessian diagonal mean is %g, not positive", mean);
    const int n = (int)K;
    double pd = o->percdamp;
    for (;;) {
        const double damp = pd * mean;
        // U = J P^T (H' + damp I) P J straight from H's upper triangle, into U's row-major
        // upper triangle: read as column-major it is the lower triangle chol_lower reads and
        // writes (the matrix is symmetric). U[i][j] = H[a][b], a = p(K-1-i), b = p(K-1-j),
        // taken from H[min][max]; without act-order b < a, and along i in a 64 x 64 tile H is
        // read along a row.
        enum { TB = 64 };
        const int64_t nb = (K + TB - 1) / TB;
#pragma omp parallel for schedule(dynamic)
        for (int64_t bi = 0; bi < nb; bi++) {
            const int64_t i0 = bi * TB, i1 = MIN(i0 + TB, K);
            for (int64_t j0 = i0; j0 < K; j0 += TB)
                for (int64_t j = j0; j < MIN(j0 + TB, K); j++) {
                    const int64_t b = perm[K - 1 - j];
                    for (int64_t i = i0; i < MIN(i1, j); i++) {
                        const int64_t a = perm[K - 1 - i];
                        U[i * K + j] = a <= b ? H[a * K + b] : H[b * K + a];
                    }
                }
            for (int64_t i = i0; i < i1; i++)
                U[i * K + i] = diag[perm[K - 1 - i]] + damp;
        }
        // (OpenBLAS's OpenMP build sets our thread count too: ours are counted first)
        const int threads = openblas_get_num_threads(), nt = gptq_omp_threads();
        openblas_set_num_threads(1);
        const int info = chol_lower(U, n, nt);
        if (info == 0) tri_inv_lower(X, U, n, nt); // X := L^-1 (column-major lower)
        openblas_set_num_threads(threads);
#ifdef _OPENMP
        omp_set_num_threads(nt); // as the caller had it, whatever OpenBLAS's build did
#endif
        if (info == 0) break;
        // the reversed matrix's pivot info (from 1) failed, i.e. H's column K - info (from 0;
        // the factorisation runs from the last column to the first)
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
    // U[i][j] = (J L^-1 J)[i][j] = L^-1[K-1-i][K-1-j], which column-major X holds at
    // (K-1-i) + (K-1-j) K; zero below the diagonal. In 64 x 64 tiles: X is read down its
    // columns, U written along its rows.
    enum { TB = 64 };
    const int64_t nb = (K + TB - 1) / TB;
#pragma omp parallel for schedule(dynamic)
    for (int64_t bi = 0; bi < nb; bi++) {
        const int64_t i0 = bi * TB, i1 = MIN(i0 + TB, K);
        for (int64_t i = i0; i < i1; i++)
            memset(U + i * K, 0, (size_t)i * sizeof(double));
        for (int64_t j0 = i0; j0 < K; j0 += TB) {
            const int64_t j1 = MIN(j0 + TB, K);
            for (int64_t j = j0; j < j1; j++) {
                const double *xc = X + (K - 1 - j) * K + (K - 1);
                for (int64_t i = i0; i < MIN(i1, j + 1); i++)
                    U[i * K + j] = xc[-i];
            }
        }
    }
    *pd_used = pd;
    return STATUS_OK;
}

/* ---- the factor shared by the linears of one Hessian (steps 2-5) ------------------------ */

Status gptq_factor_init(GptqFactor *f, const GptqHessian *h, const GptqOptions *o) {
    memset(f, 0, sizeof *f);
    Status s = gptq_options_check(o);
    if (s != STATUS_OK) return s;
    if (!h || !h->H || h->n_samples < 1)
        return fail(STATUS_ERR_ARG, "gptq: the hessian has no calibration data");
    const int64_t K = h->K, bad = first_nonfinite_upper(h->H, K);
    if (bad < K * K)
        return fail(STATUS_ERR_NUMERIC, "gptq: non-finite hessian entry (%lld, %lld)",
                    (long long)(bad / K), (long long)(bad % K));
    f->K = K;
    f->act_order = o->act_order;
    f->U = malloc((size_t)(K * K) * sizeof(double));
    f->perm = malloc((size_t)K * sizeof(int32_t));
    f->dead = calloc((size_t)K, 1);
    double *X = malloc((size_t)(K * K) * sizeof(double)); // the inverse's scratch
    double *diag = malloc((size_t)K * sizeof(double));
    if (!f->U || !f->perm || !f->dead || !X || !diag) {
        free(X);
        free(diag);
        gptq_factor_release(f);
        return fail(STATUS_ERR_NOMEM, "gptq: cannot allocate the factor of a %lldx%lld hessian",
                    (long long)K, (long long)K);
    }
    // Step 2: dead columns (an input that was always zero): diagonal 1 (W's columns are
    // zeroed in the quantizer).
    for (int64_t i = 0; i < K; i++) {
        diag[i] = h->H[i * K + i];
        if (diag[i] == 0) {
            diag[i] = 1;
            f->dead[i] = 1;
            f->n_dead++;
        }
    }
    // Step 3: act-order permutes H's rows and columns (W's columns in the quantizer).
    for (int64_t i = 0; i < K; i++)
        f->perm[i] = (int32_t)i;
    if (o->act_order) act_order_perm(f->perm, diag, K);
    // Steps 4-5 (the permuted, dead-fixed H is read from h->H as it is copied).
    s = inverse_factor(f->U, X, h->H, diag, f->perm, K, o, &f->percdamp);
    free(X);
    free(diag);
    if (s != STATUS_OK) gptq_factor_release(f);
    return s;
}

void gptq_factor_release(GptqFactor *f) {
    free(f->U);
    free(f->perm);
    free(f->dead);
    memset(f, 0, sizeof *f);
}

/* ---- step 6: lazy blocks ----------------------------------------------------------------- */

// What the quantization of one block [i1, i2) of columns reads. Within a block each row
// has its own grid state and error feedback; only U is shared.
typedef struct {
    const GptqOptions *o;
    const double *U;
    const double *Wd; // (N, K) the outer rows, stale inside the block: group grids come
                      // from them, as in the reference (identical to the updated values
                      // when group == blocksize)
    int64_t K, N, bs, i1, i2;
    int maxq;
} BlockCtx;

// The grid of `row` at column c (in quantization order), when one starts there.
static void block_grid(const BlockCtx *b, GptqResult *r, int64_t row, int64_t c, double *scale,
                       double *zero) {
    const int64_t g = b->o->group_size, N = b->N, K = b->K;
    if (g > 0 && !b->o->static_groups && c % g == 0) {
        gptq_grid(scale, zero, b->Wd + row * K + c, MIN(g, K - c), b->o->bits, b->o->sym,
                  b->o->mse);
        r->scales[(c / g) * N + row] = *scale;
        r->zeros[(c / g) * N + row] = (int32_t)*zero;
    } else if (g > 0 && b->o->static_groups) {
        const int64_t gi = r->perm[c] / g;
        *scale = r->scales[gi * N + row];
        *zero = r->zeros[gi * N + row];
    }
}

// The reference twin: one row, scalar. w1 = W[row, i1:i2] (updated in place by the in-block
// feedback); writes codes, the block's scaled errors err1 and the row's grid state.
static double quantize_block_row(const BlockCtx *b, GptqResult *r, int64_t row, double *w1,
                                 double *err1, double *scale, double *zero) {
    const int64_t K = b->K, i1 = b->i1, n = b->i2 - b->i1;
    memcpy(w1, b->Wd + row * K + i1, (size_t)n * sizeof(double));
    double loss = 0;
    for (int64_t i = 0; i < n; i++) {
        const int64_t c = i1 + i;
        block_grid(b, r, row, c, scale, zero);
        const double x = w1[i];
        const int q = gptq_code(x, *scale, *zero, b->maxq);
        const double diff = x - *scale * ((double)q - *zero);
        const double d = b->U[c * K + c];
        loss += diff * diff / (d * d);
        const double e = diff / d;
        const double *u = b->U + c * K + i1;
        for (int64_t j = i; j < n; j++)
            w1[j] -= e * u[j]; // w1[:, i:] -= e U[c, i:]
        err1[i] = e;
        r->q[row * K + r->perm[c]] = (uint8_t)q;
    }
    return loss / 2;
}

// The same for GPTQ_LANES rows at once (nr <= GPTQ_LANES of them real), the block held
// transposed in wt (n, GPTQ_LANES) so that every step runs across the rows: the same
// operations per row in the same order as quantize_block_row, so the same bits.
// Err (N, bs) and row_loss, gs, gz (N) are indexed by row.
// Compiled twice: for the baseline ISA and, called when the CPU has it, for AVX2 (no FMA:
// a contracted e * u - w would round differently from the twin).
#define GPTQ_LANES 8
static inline __attribute__((always_inline)) void block_tile_body(const BlockCtx *b, GptqResult *r,
                                                                  int64_t r0, int nr, double *wt,
                                                                  double *Err, double *row_loss,
                                                                  double *gs, double *gz) {
    enum { L = GPTQ_LANES };
    const int64_t K = b->K, i1 = b->i1, n = b->i2 - b->i1;
    const double mq = b->maxq;
    double sc[L], zr[L], loss[L], e[L], qd[L];
    for (int l = 0; l < L; l++) {
        const bool real = l < nr;
        sc[l] = real ? gs[r0 + l] : 1;
        zr[l] = real ? gz[r0 + l] : 0;
        loss[l] = 0;
        for (int64_t j = 0; j < n; j++)
            wt[j * L + l] = real ? b->Wd[(r0 + l) * K + i1 + j] : 0;
    }
    const int64_t g = b->o->group_size;
    for (int64_t i = 0; i < n; i++) {
        const int64_t c = i1 + i;
        if (g > 0 && (b->o->static_groups || c % g == 0)) // where a row's grid can change
            for (int l = 0; l < nr; l++)
                block_grid(b, r, r0 + l, c, &sc[l], &zr[l]);
        const double d = b->U[c * K + c], dd = d * d;
        double *w = wt + i * L;
#pragma omp simd
        for (int l = 0; l < L; l++) { // gptq_code across the rows
            double q = __builtin_rint(w[l] / sc[l]) + zr[l];
            q = q < 0 ? 0 : q;
            q = q > mq ? mq : q;
            const double diff = w[l] - sc[l] * (q - zr[l]);
            loss[l] += diff * diff / dd;
            e[l] = diff / d;
            qd[l] = q;
        }
        const double *u = b->U + c * K + i1;
        for (int64_t j = i + 1; j < n; j++) {
            double *wj = wt + j * L;
            const double uj = u[j];
#pragma omp simd
            for (int l = 0; l < L; l++)
                wj[l] -= e[l] * uj;
        }
        for (int l = 0; l < nr; l++) {
            Err[(r0 + l) * b->bs + i] = e[l];
            r->q[(r0 + l) * K + r->perm[c]] = (uint8_t)qd[l];
        }
    }
    for (int l = 0; l < nr; l++) {
        row_loss[r0 + l] += loss[l] / 2;
        gs[r0 + l] = sc[l];
        gz[r0 + l] = zr[l];
    }
}

static void quantize_block_tile(const BlockCtx *b, GptqResult *r, int64_t r0, int nr, double *wt,
                                double *Err, double *row_loss, double *gs, double *gz) {
    block_tile_body(b, r, r0, nr, wt, Err, row_loss, gs, gz);
}

#if defined(__x86_64__) && !defined(__AVX2__)
__attribute__((target("avx2"))) static void
quantize_block_tile_avx2(const BlockCtx *b, GptqResult *r, int64_t r0, int nr, double *wt,
                         double *Err, double *row_loss, double *gs, double *gz) {
    block_tile_body(b, r, r0, nr, wt, Err, row_loss, gs, gz);
}
#define HAVE_TILE_AVX2 1
#endif

static Status quantize_factored(GptqResult *r, const float *W, int64_t N, const GptqFactor *f,
                                const GptqOptions *o, bool ref) {
    memset(r, 0, sizeof *r);
    Status s = gptq_options_check(o);
    if (s != STATUS_OK) return s;
    if (!f || !f->U) return fail(STATUS_ERR_ARG, "gptq: no factor (gptq_factor_init first)");
    if (f->act_order != o->act_order)
        return fail(STATUS_ERR_ARG, "gptq: the factor was made %s act-order, the options ask %s",
                    f->act_order ? "with" : "without", o->act_order ? "for it" : "for none");
    if (N < 1)
        return fail(STATUS_ERR_ARG, "gptq: out_features must be positive, got %lld", (long long)N);
    const int64_t K = f->K, g = o->group_size, bs = MIN((int64_t)o->blocksize, K);
    if ((s = check_finite_f32(W, N * K, "weights")) != STATUS_OK) return s;
    if ((s = result_alloc(r, N, K, o)) != STATUS_OK) return s;
    memcpy(r->perm, f->perm, (size_t)K * sizeof(int32_t));
    r->percdamp = f->percdamp;
    r->n_dead = f->n_dead;

    const int64_t n_tiles = (N + GPTQ_LANES - 1) / GPTQ_LANES;
    double *Wd = malloc((size_t)(N * K) * sizeof(double)); // (N, K), permuted columns
    double *tmp = malloc((size_t)K * sizeof(double));
    // (N, bs) block copies for the row path, (tiles, bs, lanes) for the tile path
    double *W1 = malloc((size_t)(n_tiles * GPTQ_LANES * bs) * sizeof(double));
    double *Err = malloc((size_t)(N * bs) * sizeof(double)); // (N, bs) scaled errors
    double *gs = malloc((size_t)N * sizeof(double)), *gz = malloc((size_t)N * sizeof(double));
    double *row_loss = calloc((size_t)N, sizeof(double));
    if (!Wd || !tmp || !W1 || !Err || !gs || !gz || !row_loss) {
        s = fail(STATUS_ERR_NOMEM, "gptq: cannot allocate work memory for a %lldx%lld layer",
                 (long long)N, (long long)K);
        goto out;
    }
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < N * K; i++)
        Wd[i] = W[i];

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

    // Step 2: dead columns are zeroed in W.
    for (int64_t i = 0; i < K; i++)
        if (f->dead[i])
            for (int64_t row = 0; row < N; row++)
                Wd[row * K + i] = 0;

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

    // Step 3: act-order permutes W's columns.
    if (o->act_order)
        for (int64_t row = 0; row < N; row++) {
            double *w = Wd + row * K;
            for (int64_t j = 0; j < K; j++)
                tmp[j] = w[f->perm[j]];
            memcpy(w, tmp, (size_t)K * sizeof(double));
        }

    // Step 6: lazy blocks.
    for (int64_t i1 = 0; i1 < K; i1 += bs) {
        const int64_t i2 = MIN(i1 + bs, K);
        const BlockCtx b = {.o = o,
                            .U = f->U,
                            .Wd = Wd,
                            .K = K,
                            .N = N,
                            .bs = bs,
                            .i1 = i1,
                            .i2 = i2,
                            .maxq = (1 << o->bits) - 1};
        if (ref) {
#pragma omp parallel for schedule(static)
            for (int64_t row = 0; row < N; row++)
                row_loss[row] += quantize_block_row(&b, r, row, W1 + row * bs, Err + row * bs,
                                                    &gs[row], &gz[row]);
        } else {
#ifdef HAVE_TILE_AVX2
            const bool avx2 = vm_have_avx2();
#endif
#pragma omp parallel for schedule(static)
            for (int64_t t = 0; t < n_tiles; t++) {
                const int64_t r0 = t * GPTQ_LANES;
                const int nr = (int)MIN((int64_t)GPTQ_LANES, N - r0);
                double *wt = W1 + t * GPTQ_LANES * bs;
#ifdef HAVE_TILE_AVX2
                if (avx2) {
                    quantize_block_tile_avx2(&b, r, r0, nr, wt, Err, row_loss, gs, gz);
                    continue;
                }
#endif
                quantize_block_tile(&b, r, r0, nr, wt, Err, row_loss, gs, gz);
            }
        }
        // W[:, i2:] -= Err1 (N, i2-i1) . U[i1:i2, i2:]
        if (i2 < K)
            gemm_f64(false, false, (int)N, (int)(K - i2), (int)(i2 - i1), -1.0, Err, (int)bs,
                     f->U + i1 * K + i2, (int)K, 1.0, Wd + i2, (int)K);
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
    free(tmp);
    free(W1);
    free(Err);
    free(gs);
    free(gz);
    free(row_loss);
    if (s != STATUS_OK) gptq_result_release(r);
    return s;
}

Status gptq_quantize_factored(GptqResult *r, const float *W, int64_t N, const GptqFactor *f,
                              const GptqOptions *o) {
    return quantize_factored(r, W, N, f, o, false);
}

Status gptq_quantize_factored_ref(GptqResult *r, const float *W, int64_t N, const GptqFactor *f,
                                  const GptqOptions *o) {
    return quantize_factored(r, W, N, f, o, true);
}

Status gptq_quantize_layer(GptqResult *r, const float *W, int64_t N, const GptqHessian *h,
                           const GptqOptions *o) {
    memset(r, 0, sizeof *r);
    if (N < 1) // before the factorisation, which would be wasted
        return fail(STATUS_ERR_ARG, "gptq: out_features must be positive, got %lld", (long long)N);
    GptqFactor f;
    Status s = gptq_factor_init(&f, h, o);
    if (s != STATUS_OK) return s;
    s = gptq_quantize_factored(r, W, N, &f, o);
    gptq_factor_release(&f);
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
    gemm_f64(false, false, (int)N, (int)K, (int)K, 1.0, D, (int)K, H, (int)K, 0.0, DH, (int)K);
    double e = 0;
    for (int64_t i = 0; i < N * K; i++)
        e += D[i] * DH[i];
    free(D);
    free(DH);
    return e;
}
