/*
 * test_quantize.c - end-to-end GPTQ (quant/gptq_model.h), calibration windows
 * (quant/calib.h) and the fidelity statistics (quant/fidelity.h).
 *
 * - fidelity math against numpy on fixed logits (tests/fixtures/quant/fidelity_ref.safetensors,
 *   tools/gen_quant_fixtures.py);
 * - stories260K quantized with GPTQ on a small calibration set (stories the model wrote,
 *   tests/fixtures/quant/stories_calib.txt), written as a GPTQ v1 directory, reloaded packed
 *   (no float weights) and run by the engine; the reload matches the in-memory dequantized
 *   model; GPTQ beats RTN in KL divergence and perplexity on held-out stories;
 * - bad input: calibration data shorter than asked, corrupt or inconsistent checkpoints.
 */
#include "core/common.h"
#include "core/fileio.h"
#include "core/json_file.h"
#include "core/log.h"
#include "core/rng.h"
#include "core/strbuf.h"
#include "model/infer.h"
#include "model/llama.h"
#include "model/model_io.h"
#include "model/safetensors.h"
#include "quant/calib.h"
#include "quant/fidelity.h"
#include "quant/gptq_model.h"
#include "testutil.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#define STORIES "models/stories260K/stories260K.bin"

static double scalar(const SafeTensors *st, const char *name) {
    const SafeTensor *t = safetensors_find(st, name);
    assert_non_null(t);
    assert_int_equal(t->dtype, ST_F64);
    return ((const double *)t->data)[0];
}

static void test_fidelity_vs_numpy(void **state) {
    (void)state;
    SafeTensors st;
    fixture_open(&st, "quant/fidelity_ref.safetensors");
    const SafeTensor *lb = safetensors_find(&st, "logits_base");
    const SafeTensor *lq = safetensors_find(&st, "logits_quant");
    const SafeTensor *tg = safetensors_find(&st, "targets");
    assert_non_null(lb);
    assert_non_null(lq);
    assert_non_null(tg);
    int n = (int)lb->shape[0], V = (int)lb->shape[1];
    FidelityAcc a;
    fidelity_acc_init(&a);
    for (int i = 0; i < n; i++)
        fidelity_acc_add(&a, (const float *)lb->data + (size_t)i * (size_t)V,
                         (const float *)lq->data + (size_t)i * (size_t)V, V,
                         ((const int32_t *)tg->data)[i]);
    FidelityStats s;
    fidelity_acc_stats(&a, &s);
    fidelity_acc_release(&a);
    assert_int_equal(s.n_tokens, n);
    struct {
        const char *name;
        double got;
    } tab[] = {
        {"kl_mean", s.kl_mean},
        {"kl_se", s.kl_se},
        {"kl_median", s.kl_median},
        {"kl_p90", s.kl_p90},
        {"kl_p95", s.kl_p95},
        {"kl_p99", s.kl_p99},
        {"kl_p999", s.kl_p999},
        {"kl_max", s.kl_max},
        {"top1", s.top1},
        {"top1_se", s.top1_se},
        {"nll_base", s.nll_base},
        {"nll_quant", s.nll_quant},
        {"nll_base_se", s.nll_base_se},
        {"nll_quant_se", s.nll_quant_se},
        {"ppl_base", s.ppl_base},
        {"ppl_quant", s.ppl_quant},
        {"ln_ppl_ratio", s.ln_ppl_ratio},
        {"ln_ppl_ratio_se", s.ln_ppl_ratio_se},
        {"dp_rms", s.dp_rms},
    };
    for (size_t i = 0; i < ARRAY_LEN(tab); i++) {
        double ref = scalar(&st, tab[i].name);
        // same float32 logits, double math on both sides: only libm rounding differs
        if (fabs(tab[i].got - ref) > 1e-9 * fabs(ref) + 1e-12)
            fail_msg("%s: got %.15g, numpy %.15g", tab[i].name, tab[i].got, ref);
    }
    safetensors_close(&st);
}

static void test_percentile(void **state) {
    (void)state;
    double x[] = {1, 2, 3, 4, 10};
    assert_true(fidelity_percentile(x, 5, 0.5) == 3);
    assert_true(fidelity_percentile(x, 5, 0.0) == 1);
    assert_true(fidelity_percentile(x, 5, 1.0) == 10);
    // numpy.percentile([1,2,3,4,10], 90) = 4 + 0.6 * 6 = 7.6
    assert_true(fabs(fidelity_percentile(x, 5, 0.9) - 7.6) < 1e-12);
    double one = 5;
    assert_true(fidelity_percentile(&one, 1, 0.99) == 5);
}

static void test_calib_windows(void **state) {
    (void)state;
    int32_t ids[100];
    for (int i = 0; i < 100; i++)
        ids[i] = i;
    CalibOptions o = {.n_seqs = 4, .seq_len = 10, .seed = 7};
    CalibSet a, b, c;
    assert_int_equal(calib_from_stream(&a, ids, 100, &o, true, "x"), STATUS_OK);
    assert_int_equal(calib_from_stream(&b, ids, 100, &o, true, "x"), STATUS_OK);
    assert_memory_equal(a.tokens, b.tokens, 40 * sizeof(int32_t)); // same seed, same windows
    // windows are aligned, disjoint runs of the stream
    int seen[10] = {0};
    for (int s = 0; s < 4; s++) {
        int w = a.tokens[s * 10] / 10;
        assert_int_equal(a.tokens[s * 10], w * 10);
        for (int t = 0; t < 10; t++)
            assert_int_equal(a.tokens[s * 10 + t], w * 10 + t);
        assert_int_equal(seen[w]++, 0);
    }
    assert_int_equal(calib_from_stream(&c, ids, 100, &o, false, "x"), STATUS_OK);
    for (int i = 0; i < 40; i++)
        assert_int_equal(c.tokens[i], i); // chunks: in order
    calib_release(&a);
    calib_release(&b);
    calib_release(&c);
    // shorter than asked: an error with the numbers
    o.n_seqs = 11;
    assert_int_equal(calib_from_stream(&a, ids, 100, &o, true, "data.txt"), STATUS_ERR_FORMAT);
    assert_non_null(strstr(status_msg(), "'data.txt' is too short: it has 100 tokens"));
    assert_non_null(strstr(status_msg(), "11 sequences of 10 tokens need 110"));
    assert_null(a.tokens);
}

static void test_calib_file_too_short(void **state) {
    (void)state;
    Model m;
    assert_int_equal(model_load(&m, STORIES, NULL), STATUS_OK);
    CalibOptions o = {.n_seqs = 10000, .seq_len = 512, .seed = 0};
    CalibSet c;
    Status s = calib_sample(&c, "tests/fixtures/quant/stories_calib.txt", m.tok, &o);
    assert_int_equal(s, STATUS_ERR_FORMAT);
    assert_non_null(strstr(status_msg(), "too short"));
    assert_non_null(strstr(status_msg(), "10000 sequences of 512 tokens need 5120000"));
    assert_int_equal(calib_sample(&c, "tests/fixtures/quant/nope.txt", m.tok, &o), STATUS_ERR_IO);
    model_release(&m);
}

/* ---- end to end on stories260K ---------------------------------------------------------- */

typedef struct {
    char dir[256];     // the GPTQ checkpoint
    char rtn_dir[256]; // the RTN one
} E2E;

static int e2e_setup(void **state) {
    E2E *e = calloc(1, sizeof *e);
    snprintf(e->dir, sizeof e->dir, "/tmp/ef_test_quantize_%ld/gptq", (long)getpid());
    snprintf(e->rtn_dir, sizeof e->rtn_dir, "/tmp/ef_test_quantize_%ld/rtn", (long)getpid());
    *state = e;
    return 0;
}

static int e2e_teardown(void **state) {
    E2E *e = *state;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf /tmp/ef_test_quantize_%ld", (long)getpid());
    if (system(cmd) != 0) fprintf(stderr, "cannot remove the test directory\n");
    free(e);
    return 0;
}

// stories260K loaded into m, quantized with o (calibration: n_seqs x 128 tokens of
// stories_calib.txt drawn with seed; none for RTN) and written to dir; *rep: the report
// (caller releases).
static void quantize_save(Model *m, const GptqModelOptions *o, int n_seqs, uint64_t seed,
                          const char *dir, GptqModelReport *rep) {
    assert_int_equal(model_load(m, STORIES, NULL), STATUS_OK);
    CalibOptions co = {.n_seqs = n_seqs, .seq_len = 128, .seed = seed};
    CalibSet cs = {0};
    if (!o->rtn)
        assert_int_equal(calib_sample(&cs, "tests/fixtures/quant/stories_calib.txt", m->tok, &co),
                         STATUS_OK);
    Status s = gptq_model_quantize(m, rep, o->rtn ? NULL : &cs, o);
    if (s != STATUS_OK) fail_msg("quantize: %s", status_msg());
    GptqConfig c;
    gptq_model_config(&c, o);
    s = gptq_model_save(m, dir, &c);
    if (s != STATUS_OK) fail_msg("save: %s", status_msg());
    calib_release(&cs);
}

static void quantize_stories(Model *m, bool rtn, const char *dir) {
    GptqModelOptions o;
    gptq_model_options_defaults(&o); // 4-bit, group 128 (= min(128, K): one group per row)
    o.rtn = rtn;
    GptqModelReport rep;
    quantize_save(m, &o, 32, 1, dir, &rep);
    assert_int_equal(rep.n_linear, 5 * 7);
    assert_int_equal(rep.n_weights, 5 * (64 * 64 * 2 + 32 * 64 * 2 + 172 * 64 * 3));
    if (!rtn)
        for (int i = 0; i < rep.n_linear; i++)
            assert_true(rep.lin[i].loss > 0);
    gptq_model_report_release(&rep);
}

// Makes the engine run m's quantized linears (and lm_head) from their float dequantization
// (`data`) instead of the packed weights: the in-memory reference of a reload.
static void use_float_path(Model *m) {
    m->lm_head.gptq = NULL;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        Tensor *lin[GPTQ_MODEL_LINEARS];
        gptq_model_layer_linears(&m->layers[l], lin);
        for (int i = 0; i < GPTQ_MODEL_LINEARS; i++)
            lin[i]->gptq = NULL;
    }
}

static void fidelity_of(FidelityStats *fs, const Model *base, const Model *q) {
    Model tmp;
    assert_int_equal(model_load(&tmp, STORIES, NULL), STATUS_OK);
    CalibOptions co = {.n_seqs = 8, .seq_len = 192, .seed = 0};
    CalibSet ch;
    assert_int_equal(calib_chunks(&ch, "tests/fixtures/quant/stories_heldout.txt", tmp.tok, &co),
                     STATUS_OK);
    Status s = fidelity_eval(fs, base, q, &ch);
    if (s != STATUS_OK) fail_msg("fidelity: %s", status_msg());
    assert_int_equal(fs->n_tokens, 8 * (192 - 1 - 96));
    calib_release(&ch);
    model_release(&tmp);
}

static void test_e2e_gptq_beats_rtn(void **state) {
    E2E *e = *state;
    Model base, mg, mr, lg, lr;
    assert_int_equal(model_load(&base, STORIES, NULL), STATUS_OK);
    quantize_stories(&mg, false, e->dir);
    quantize_stories(&mr, true, e->rtn_dir);
    // the checkpoints reload packed: no float weights, the engine runs qmatmul
    assert_true(gptq_model_is_checkpoint(e->dir));
    assert_false(gptq_model_is_checkpoint(STORIES));
    assert_int_equal(model_load(&lg, e->dir, NULL), STATUS_OK);
    assert_int_equal(model_load(&lr, e->rtn_dir, NULL), STATUS_OK);
    assert_non_null(lg.tok);
    for (int l = 0; l < lg.cfg.n_layers; l++) {
        Tensor *lin[GPTQ_MODEL_LINEARS];
        gptq_model_layer_linears(&lg.layers[l], lin);
        for (int i = 0; i < GPTQ_MODEL_LINEARS; i++) {
            assert_non_null(lin[i]->gptq);
            assert_null(lin[i]->data);
        }
    }
    // reload (fp16 embeddings/norms, packed linears) vs the in-memory model whose linears
    // are the dequantized weights in float: the same function up to fp16 rounding
    use_float_path(&mg);
    FidelityStats same, fg, fr;
    fidelity_of(&same, &mg, &lg);
    print_message("reload vs in-memory dequantized: KL %.3g, top-1 %.4f\n", same.kl_mean,
                  same.top1);
    assert_true(same.kl_mean < 1e-3);
    assert_true(same.top1 > 0.98);
    fidelity_of(&fg, &base, &lg);
    fidelity_of(&fr, &base, &lr);
    print_message("GPTQ: KL %.4f p99 %.4f top1 %.4f ppl %.4f -> %.4f\n", fg.kl_mean, fg.kl_p99,
                  fg.top1, fg.ppl_base, fg.ppl_quant);
    print_message("RTN : KL %.4f p99 %.4f top1 %.4f ppl %.4f -> %.4f\n", fr.kl_mean, fr.kl_p99,
                  fr.top1, fr.ppl_base, fr.ppl_quant);
    assert_true(fg.kl_mean < fr.kl_mean);
    assert_true(fg.ppl_quant < fr.ppl_quant);
    assert_true(fg.ppl_base == fr.ppl_base);
    // and it generates: greedy decode through infer_prefill/decode on the packed weights
    InferState st;
    assert_int_equal(infer_init(&st, &lg, NULL), STATUS_OK);
    float *logits = malloc(512 * sizeof *logits);
    int32_t prompt[] = {1, 403, 407, 261, 378}; // BOS "Once upon a time"
    assert_int_equal(infer_prefill(&st, 0, prompt, 5, logits), STATUS_OK);
    for (int i = 0; i < 10; i++) {
        int am = 0;
        for (int v = 1; v < 512; v++)
            if (logits[v] > logits[am]) am = v;
        assert_int_equal(infer_decode(&st, 0, am, logits), STATUS_OK);
        for (int v = 0; v < 512; v++)
            assert_true(isfinite(logits[v]));
    }
    free(logits);
    infer_release(&st);
    // `edgeforge generate DIR` loads the checkpoint through model_load and streams text
    char cmd[400], *out = NULL;
    snprintf(cmd, sizeof cmd, "generate %s -p 'Once upon a time' -n 16 -t 1", e->dir);
    int rc = run_cli(cmd, &out);
    if (rc != 0) fail_msg("generate: %s", out);
    assert_non_null(strstr(out, "Once upon a time"));
    free(out);
    model_release(&base);
    model_release(&mg);
    model_release(&mr);
    model_release(&lg);
    model_release(&lr);
}

// true-sequential + act-order + group 32 (ragged: K = 172 = 5*32 + 12) + asym: written,
// reloaded in the sorted act-order layout, and equal to the in-memory dequantized model.
// The whole quantization (calibration forwards, Hessians, factors, GPTQ steps, packing) of
// a random Llama wide enough for every product to be split over threads, act-order, on 1
// and on 3 threads: the same checkpoint bytes. (With OpenBLAS's own sgemm threading in the
// calibration forward they differed; stories260K's 64-wide layers are too small to show it.)
static void test_e2e_threads(void **state) {
    E2E *e = *state;
#ifdef _OPENMP
    const int saved = omp_get_max_threads(), threads[2] = {1, 3};
    LlamaConfig c = test_threads_config();
    CalibSet cs = {.n_seqs = 16, .seq_len = 128};
    cs.tokens = malloc(sizeof(int32_t) * 16 * 128);
    Rng r;
    rng_seed(&r, 8);
    for (int i = 0; i < 16 * 128; i++)
        cs.tokens[i] = (int32_t)rng_below(&r, 1000);
    char dir[2][300];
    char *bytes[2];
    size_t size[2];
    for (int i = 0; i < 2; i++) {
        omp_set_num_threads(threads[i]);
        snprintf(dir[i], sizeof dir[i], "%s_t%d", e->dir, threads[i]);
        GptqModelOptions o;
        gptq_model_options_defaults(&o);
        o.gptq.act_order = true;
        Model m;
        test_random_model(&m, &c, 5);
        GptqModelReport rep;
        Status s = gptq_model_quantize(&m, &rep, &cs, &o);
        if (s != STATUS_OK) fail_msg("quantize: %s", status_msg());
        GptqConfig gc;
        gptq_model_config(&gc, &o);
        s = gptq_model_save(&m, dir[i], &gc);
        if (s != STATUS_OK) fail_msg("save: %s", status_msg());
        gptq_model_report_release(&rep);
        model_release(&m);
        char *f = path_join(dir[i], "model.safetensors");
        assert_int_equal(file_read_all(f, &bytes[i], &size[i]), STATUS_OK);
        free(f);
    }
    omp_set_num_threads(saved);
    assert_true(size[0] == size[1] && !memcmp(bytes[0], bytes[1], size[0]));
    free(bytes[0]);
    free(bytes[1]);
    free(cs.tokens);
#else
    (void)e;
    skip();
#endif
}

static void test_e2e_true_sequential_actorder(void **state) {
    E2E *e = *state;
    Model m, l;
    GptqModelOptions o;
    gptq_model_options_defaults(&o);
    o.true_sequential = true;
    o.gptq.act_order = true;
    o.gptq.group_size = 32;
    o.gptq.sym = false;
    GptqConfig c;
    gptq_model_config(&c, &o);
    assert_true(c.true_sequential && c.desc_act && !c.sym);
    char dir[300];
    snprintf(dir, sizeof dir, "%s_ts", e->dir);
    GptqModelReport rep;
    quantize_save(&m, &o, 16, 3, dir, &rep);
    assert_int_equal(model_load(&l, dir, NULL), STATUS_OK);
    assert_non_null(l.layers[0].w_down.gptq);
    assert_non_null(l.layers[0].w_down.gptq->k_perm); // act-order: sorted for the fast GEMV
    use_float_path(&m);
    FidelityStats f;
    fidelity_of(&f, &m, &l);
    assert_true(f.kl_mean < 1e-3);
    gptq_model_report_release(&rep);
    model_release(&m);
    model_release(&l);
}

// --lm-head: lm_head quantized too (GPTQModel's lm_head=True). The tied stories260K is
// untied: the embedding stays fp16, lm_head.{qweight,qzeros,scales,g_idx} are written with
// "lm_head": true and tie_word_embeddings false, and the reload runs the packed lm_head.
static void test_e2e_lm_head(void **state) {
    E2E *e = *state;
    Model m, l;
    assert_int_equal(model_load(&m, STORIES, NULL), STATUS_OK);
    assert_true(m.cfg.tied_embeddings);
    CalibOptions co = {.n_seqs = 16, .seq_len = 128, .seed = 5};
    CalibSet cs;
    assert_int_equal(calib_sample(&cs, "tests/fixtures/quant/stories_calib.txt", m.tok, &co),
                     STATUS_OK);
    GptqModelOptions o;
    gptq_model_options_defaults(&o);
    o.lm_head = true;
    o.gptq.group_size = 32;
    GptqModelReport rep;
    Status s = gptq_model_quantize(&m, &rep, &cs, &o);
    if (s != STATUS_OK) fail_msg("quantize: %s", status_msg());
    assert_int_equal(rep.n_linear, 5 * 7 + 1);
    assert_string_equal(rep.lin[35].name, "lm_head");
    assert_int_equal(rep.lin[35].N, 512);
    assert_int_equal(rep.lin[35].K, 64);
    assert_true(rep.lin[35].loss > 0);
    assert_int_equal(rep.n_weights, 5 * (64 * 64 * 2 + 32 * 64 * 2 + 172 * 64 * 3) + 512 * 64);
    assert_false(m.cfg.tied_embeddings);
    assert_non_null(m.lm_head.gptq);
    assert_true(m.tok_emb.data != m.lm_head.data); // the embedding kept its own weights
    GptqConfig c;
    gptq_model_config(&c, &o);
    char dir[300];
    snprintf(dir, sizeof dir, "%s_head", e->dir);
    s = gptq_model_save(&m, dir, &c);
    if (s != STATUS_OK) fail_msg("save: %s", status_msg());
    GptqConfig back;
    assert_int_equal(gptq_config_read(&back, dir), STATUS_OK);
    assert_true(back.lm_head);
    char path[400], *text;
    size_t len;
    snprintf(path, sizeof path, "%s/config.json", dir);
    assert_int_equal(file_read_all(path, &text, &len), STATUS_OK);
    assert_non_null(strstr(text, "\"tie_word_embeddings\": false"));
    assert_non_null(strstr(text, "\"lm_head\": true"));
    free(text);
    assert_int_equal(model_load(&l, dir, NULL), STATUS_OK);
    assert_non_null(l.lm_head.gptq);
    assert_null(l.lm_head.data);
    assert_non_null(l.tok_emb.data);
    assert_false(l.cfg.tied_embeddings);
    // the reload (packed lm_head through qmatmul) against the in-memory model run in float
    use_float_path(&m);
    FidelityStats f;
    fidelity_of(&f, &m, &l);
    print_message("lm_head quantized: reload vs in-memory KL %.3g, top-1 %.4f\n", f.kl_mean,
                  f.top1);
    assert_true(f.kl_mean < 1e-3);
    assert_true(f.top1 > 0.98);
    // decode (GEMVs, int16 activations) agrees with a batch forward of all 5 positions
    // (dequantize + sgemm, lm_head included) at the last position
    InferState st;
    assert_int_equal(infer_init(&st, &l, NULL), STATUS_OK);
    int32_t prompt[] = {1, 403, 407, 261, 378};
    float *a = malloc(5 * 512 * sizeof *a), *b = malloc(512 * sizeof *b);
    assert_int_equal(infer_prefill(&st, 0, prompt, 4, NULL), STATUS_OK);
    assert_int_equal(infer_decode(&st, 0, prompt[4], b), STATUS_OK);
    infer_seq_truncate(&st, 0, 0);
    InferBatch bt = {.tokens = prompt, .n = 5};
    assert_int_equal(infer_forward(&st, &bt, a), STATUS_OK);
    double worst = 0;
    for (int v = 0; v < 512; v++)
        worst = fmax(worst, fabs((double)a[4 * 512 + v] - b[v]));
    print_message("decode vs prefill logits: max |d| %.3g\n", worst);
    assert_true(worst < 1e-3);
    free(a);
    free(b);
    infer_release(&st);
    // `edgeforge info` shows packed tensors as such and counts their parameters
    char cmd[400], *out = NULL;
    snprintf(cmd, sizeof cmd, "info %s", dir);
    int rc = run_cli(cmd, &out);
    if (rc != 0) fail_msg("info: %s", out);
    assert_non_null(
        strstr(out, "lm_head.weight                       x1    512 x 64         gptq4-g32"));
    assert_non_null(
        strstr(out, "mlp.down_proj.weight                 x5    64 x 172         gptq4-g32"));
    char want[64];
    snprintf(want, sizeof want, "parameters: %lld", (long long)model_param_count(&m));
    assert_non_null(strstr(out, want));
    assert_int_equal(model_param_count(&l), model_param_count(&m));
    assert_int_equal(model_param_count(&l), 260032 + 512 * 64); // stories260K + the untied head
    free(out);
    // a quantized lm_head with a tensor missing: a clear error naming it and the file
    char bad[320], stp[400];
    snprintf(bad, sizeof bad, "%s_bad", dir);
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s' '%s'", bad, dir, bad);
    assert_int_equal(system(cmd), 0);
    snprintf(stp, sizeof stp, "%s/model.safetensors", bad);
    assert_int_equal(file_read_all(stp, &text, &len), STATUS_OK);
    char *hit = memmem(text, len, "\"lm_head.scales\"", 16);
    assert_non_null(hit);
    memcpy(hit, "\"lm_head.scalez\"", 16); // same length: the header stays valid
    assert_int_equal(file_write_all(stp, text, len), STATUS_OK);
    free(text);
    Model mb;
    Status sb = model_load(&mb, bad, NULL);
    print_message("missing lm_head.scales: %s\n", status_msg());
    assert_int_equal(sb, STATUS_ERR_FORMAT);
    assert_non_null(strstr(status_msg(), "lm_head.scales"));
    assert_non_null(strstr(status_msg(), "model.safetensors"));
    gptq_model_report_release(&rep);
    calib_release(&cs);
    model_release(&m);
    model_release(&l);
}

static void write_text(const char *path, const char *text) {
    assert_int_equal(file_write_all(path, text, strlen(text)), STATUS_OK);
}

static void copy_ckpt(const char *from, const char *to) {
    char cmd[800];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s' '%s'", to, from, to);
    assert_int_equal(system(cmd), 0);
}

static void test_e2e_bad_checkpoints(void **state) {
    E2E *e = *state;
    char bad[300], path[400];
    Model m;
    snprintf(bad, sizeof bad, "%s_bad", e->dir);
    // refuses to overwrite
    Model q;
    assert_int_equal(model_load(&q, e->dir, NULL), STATUS_OK);
    GptqConfig c;
    gptq_config_defaults(&c);
    assert_int_equal(gptq_model_save(&q, e->dir, &c), STATUS_ERR_IO);
    assert_non_null(strstr(status_msg(), "already exists"));
    model_release(&q);
    // truncated weights
    copy_ckpt(e->dir, bad);
    snprintf(path, sizeof path, "%s/model.safetensors", bad);
    assert_int_equal(truncate(path, 5000), 0);
    Status s = model_load(&m, bad, NULL);
    assert_true(s == STATUS_ERR_FORMAT || s == STATUS_ERR_IO);
    assert_non_null(strstr(status_msg(), "model.safetensors"));
    // a group size that does not match the tensors
    copy_ckpt(e->dir, bad);
    snprintf(path, sizeof path, "%s/quantize_config.json", bad);
    write_text(path, "{\"quant_method\": \"gptq\", \"bits\": 4, \"group_size\": 16, "
                     "\"desc_act\": false, \"sym\": true, \"checkpoint_format\": \"gptq\"}");
    s = model_load(&m, bad, NULL);
    assert_int_equal(s, STATUS_ERR_FORMAT);
    print_message("group mismatch: %s\n", status_msg());
    // 3-bit and v2 checkpoints are refused
    write_text(path, "{\"quant_method\": \"gptq\", \"bits\": 3, \"group_size\": 128}");
    assert_int_equal(model_load(&m, bad, NULL), STATUS_ERR_UNSUPPORTED);
    write_text(path, "{\"quant_method\": \"gptq\", \"bits\": 4, \"group_size\": 128, "
                     "\"checkpoint_format\": \"gptq_v2\"}");
    assert_int_equal(model_load(&m, bad, NULL), STATUS_ERR_UNSUPPORTED);
    // a config.json that disagrees with the tensors' shapes
    copy_ckpt(e->dir, bad);
    snprintf(path, sizeof path, "%s/config.json", bad);
    char *text;
    size_t len;
    assert_int_equal(file_read_all(path, &text, &len), STATUS_OK);
    char *p = strstr(text, "\"intermediate_size\": 172");
    assert_non_null(p);
    memcpy(p, "\"intermediate_size\": 176", 24);
    write_text(path, text);
    free(text);
    s = model_load(&m, bad, NULL);
    assert_int_equal(s, STATUS_ERR_FORMAT);
    print_message("shape mismatch: %s\n", status_msg());
}

// Splits DIR/model.safetensors of the checkpoint at FROM into N shards in TO, as
// transformers' save_pretrained(max_shard_size=...) lays them out (model-0000i-of-0000N,
// model.safetensors.index.json with metadata.total_size and weight_map), dealing tensors
// round-robin so that the parts of one packed linear land in different shards.
static void shard_ckpt(const char *from, const char *to, int n) {
    copy_ckpt(from, to);
    char path[400];
    snprintf(path, sizeof path, "%s/model.safetensors", to);
    SafeTensors st;
    assert_int_equal(safetensors_open(&st, path), STATUS_OK);
    StrBuf ix = {0};
    char line[600];
    uint64_t total = 0;
    for (int i = 0; i < st.n_tensors; i++)
        total += st.tensors[i].nbytes;
    snprintf(line, sizeof line, "{\"metadata\": {\"total_size\": %llu}, \"weight_map\": {",
             (unsigned long long)total);
    strbuf_puts(&ix, line);
    const size_t head = ix.n;
    for (int k = 0; k < n; k++) {
        SafeWriter w;
        safewriter_init(&w);
        char name[64];
        snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", k + 1, n);
        for (int i = k; i < st.n_tensors; i += n) {
            const SafeTensor *t = &st.tensors[i];
            safewriter_add(&w, t->name, t->dtype, t->ndim, t->shape, t->data);
            snprintf(line, sizeof line, "%s\"%s\": \"%s\"", ix.n > head ? ", " : "", t->name, name);
            strbuf_puts(&ix, line);
        }
        char sp[500];
        snprintf(sp, sizeof sp, "%s/%s", to, name);
        assert_int_equal(safewriter_write(&w, sp), STATUS_OK);
        safewriter_release(&w);
    }
    strbuf_puts(&ix, "}}\n");
    safetensors_close(&st);
    assert_int_equal(unlink(path), 0);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", to);
    write_text(path, ix.p);
    strbuf_release(&ix);
}

// Logits of the first positions of a fixed prompt.
static void prompt_logits(const Model *m, float *logits) {
    InferState st;
    assert_int_equal(infer_init(&st, m, NULL), STATUS_OK);
    int32_t prompt[] = {1, 403, 407, 261, 378};
    assert_int_equal(infer_prefill(&st, 0, prompt, 5, logits), STATUS_OK);
    assert_int_equal(infer_decode(&st, 0, 300, logits + m->cfg.vocab_size), STATUS_OK);
    infer_release(&st);
}

// A checkpoint sharded as transformers shards it loads and runs exactly as the single file;
// a missing shard and an index that points a tensor at the wrong shard are clear errors.
static void test_e2e_sharded(void **state) {
    E2E *e = *state;
    char sh[300], path[600];
    snprintf(sh, sizeof sh, "%s_sharded", e->dir);
    shard_ckpt(e->dir, sh, 3);
    Model a, b;
    assert_int_equal(model_load(&a, e->dir, NULL), STATUS_OK);
    Status s = model_load(&b, sh, NULL);
    if (s != STATUS_OK) fail_msg("sharded load: %s", status_msg());
    assert_int_equal(b.n_files, 3);
    assert_non_null(b.layers[0].wq.gptq);
    const int V = a.cfg.vocab_size;
    float *la = malloc(2 * (size_t)V * sizeof *la), *lb = malloc(2 * (size_t)V * sizeof *lb);
    prompt_logits(&a, la);
    prompt_logits(&b, lb);
    assert_memory_equal(la, lb, 2 * (size_t)V * sizeof *la);
    free(la);
    free(lb);
    model_release(&a);
    model_release(&b);
    // the CLI runs it too
    char cmd[400], *out = NULL;
    snprintf(cmd, sizeof cmd, "generate %s -p 'Once upon a time' -n 4 -t 1", sh);
    int rc = run_cli(cmd, &out);
    if (rc != 0) fail_msg("generate: %s", out);
    free(out);
    // a shard gone
    snprintf(path, sizeof path, "%s/model-00002-of-00003.safetensors", sh);
    char moved[620];
    snprintf(moved, sizeof moved, "%s.away", path);
    assert_int_equal(rename(path, moved), 0);
    assert_int_equal(model_load(&b, sh, NULL), STATUS_ERR_IO);
    print_message("missing shard: %s\n", status_msg());
    assert_non_null(strstr(status_msg(), "model-00002-of-00003.safetensors"));
    assert_int_equal(rename(moved, path), 0);
    // the index sends a packed tensor to a shard that does not hold it
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", sh);
    char *text;
    size_t len;
    assert_int_equal(file_read_all(path, &text, &len), STATUS_OK);
    char *q = strstr(text, "\"model.layers.0.self_attn.q_proj.qweight\": \"model-0000");
    assert_non_null(q);
    q += strlen("\"model.layers.0.self_attn.q_proj.qweight\": \"model-0000");
    *q = *q == '1' ? '2' : '1';
    write_text(path, text);
    free(text);
    assert_int_equal(model_load(&b, sh, NULL), STATUS_ERR_FORMAT);
    print_message("wrong shard: %s\n", status_msg());
    assert_non_null(strstr(status_msg(), "q_proj.qweight"));
    assert_non_null(strstr(status_msg(), "does not contain it"));
}

// 8- and 2-bit checkpoints (no fused kernel) load dequantized to float32 and run as the
// in-memory quantized model does; `convert` writes a GPTQ checkpoint as a plain model (its
// exact dequantization) that runs like the checkpoint.
static void test_e2e_other_bits_and_convert(void **state) {
    E2E *e = *state;
    const int bits[] = {8, 2};
    for (size_t bi = 0; bi < ARRAY_LEN(bits); bi++) {
        Model m, l;
        GptqModelOptions o;
        gptq_model_options_defaults(&o);
        o.gptq.bits = bits[bi];
        char dir[300];
        snprintf(dir, sizeof dir, "%s_b%d", e->dir, bits[bi]);
        GptqModelReport rep;
        quantize_save(&m, &o, 8, 2, dir, &rep);
        Status s;
        s = model_load(&l, dir, NULL);
        if (s != STATUS_OK) fail_msg("load %d-bit: %s", bits[bi], status_msg());
        assert_null(l.layers[0].wq.gptq); // dequantized at load
        assert_non_null(l.layers[0].wq.data);
        assert_int_equal(l.layers[0].wq.dtype, DTYPE_F32);
        use_float_path(&m);
        FidelityStats f;
        fidelity_of(&f, &m, &l);
        print_message("%d-bit reload vs in-memory: KL %.3g, top-1 %.4f\n", bits[bi], f.kl_mean,
                      f.top1);
        assert_true(f.kl_mean < 1e-3);
        assert_true(f.top1 > 0.98);
        gptq_model_report_release(&rep);
        model_release(&m);
        model_release(&l);
    }
    // convert: the 4-bit checkpoint as an F32 HF directory and as a GGUF
    char out[300], cmd[800], *txt = NULL;
    const char *fmts[] = {"hf", "gguf"};
    for (int k = 0; k < 2; k++) {
        snprintf(out, sizeof out, "%s_conv%s", e->dir, k ? ".gguf" : "");
        snprintf(cmd, sizeof cmd, "convert -f %s --dtype f32 %s %s", fmts[k], e->dir, out);
        int rc = run_cli(cmd, &txt);
        if (rc != 0) fail_msg("convert: %s", txt);
        assert_non_null(strstr(txt, "dequantizing the GPTQ linears"));
        free(txt);
        Model q, p;
        assert_int_equal(model_load(&q, e->dir, NULL), STATUS_OK);
        assert_true(gptq_model_has_packed(&q));
        assert_int_equal(gptq_model_dequantize(&q), STATUS_OK);
        assert_false(gptq_model_has_packed(&q));
        assert_int_equal(model_load(&p, out, NULL), STATUS_OK);
        assert_false(gptq_model_has_packed(&p));
        // the same float32 weights: the linears bit for bit
        for (int l = 0; l < q.cfg.n_layers; l++) {
            Tensor *a[GPTQ_MODEL_LINEARS], *b[GPTQ_MODEL_LINEARS];
            gptq_model_layer_linears(&q.layers[l], a);
            gptq_model_layer_linears(&p.layers[l], b);
            for (int i = 0; i < GPTQ_MODEL_LINEARS; i++) {
                assert_int_equal(b[i]->dtype, DTYPE_F32);
                if (k == 1 && (i == 0 || i == 1)) // GGUF stores q/k rows in llama.cpp's order;
                    continue;                     // the reader undoes it (checked by logits)
                const int64_t n = a[i]->shape[0] * a[i]->shape[1];
                assert_memory_equal(a[i]->data, b[i]->data, (size_t)n * sizeof(float));
            }
        }
        FidelityStats f;
        fidelity_of(&f, &q, &p);
        print_message("convert -f %s: KL %.3g top-1 %.4f\n", fmts[k], f.kl_mean, f.top1);
        assert_true(f.kl_mean < 1e-9);
        assert_true(f.top1 == 1.0);
        model_release(&q);
        model_release(&p);
    }
}

// The CLI: too little calibration data is a clear error and leaves no output behind.
static void test_cli_quantize_errors(void **state) {
    E2E *e = *state;
    char cmd[600], dir[300], *out = NULL;
    snprintf(dir, sizeof dir, "%s_cli", e->dir);
    snprintf(cmd, sizeof cmd,
             "quantize -t 1 " STORIES " --calib tests/fixtures/quant/"
             "stories_heldout.txt --nsamples 1000 --seq-len 128 --out %s",
             dir);
    assert_int_equal(run_cli(cmd, &out), 1);
    assert_non_null(strstr(out, "error: --calib: 'tests/fixtures/quant/stories_heldout.txt' is "
                                "too short"));
    assert_false(path_is_dir(dir));
    free(out);
    assert_int_equal(run_cli("quantize " STORIES " --calib x.txt", &out), 2); // no --out
    assert_non_null(strstr(out, "--out"));
    free(out);
    snprintf(cmd, sizeof cmd, "quantize -t 1 " STORIES " --rtn --out %s", dir);
    assert_int_equal(run_cli(cmd, &out), 0);
    assert_non_null(strstr(out, "rtn, 4-bit, group 128"));
    assert_true(path_is_dir(dir));
    free(out);
    // --mse is recorded as the method; --bits 3 is refused before any work
    snprintf(cmd, sizeof cmd, "quantize -t 1 " STORIES " --rtn --mse --out %s_mse", dir);
    assert_int_equal(run_cli(cmd, &out), 0);
    assert_non_null(strstr(out, "rtn+mse, 4-bit, group 128"));
    free(out);
    snprintf(cmd, sizeof cmd, "quantize -t 1 " STORIES " --rtn --bits 3 --out %s_b3", dir);
    assert_int_equal(run_cli(cmd, &out), 2);
    assert_non_null(strstr(out, "--bits must be 2, 4 or 8"));
    free(out);
    // usage errors: exit 2 before any work, no output
    const char *bad[][2] = {{"--rtn --sym --asym", "exclude each other"},
                            {"--rtn --group 0", "--group must be -1 or positive"},
                            {"", "needs --calib"}};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        snprintf(cmd, sizeof cmd, "quantize -t 1 " STORIES " %s --out %s_bad", bad[i][0], dir);
        assert_int_equal(run_cli(cmd, &out), 2);
        if (!strstr(out, bad[i][1])) fail_msg("'%s': %s", bad[i][0], out);
        free(out);
        snprintf(cmd, sizeof cmd, "%s_bad", dir);
        assert_false(path_is_dir(cmd));
    }
}

// quantize with the fidelity report: its numbers in the report JSON (62 scored tokens = 2
// chunks x (64/2 - 1), llama.cpp's second-half rule), and --logits holds the reloaded
// checkpoint's logits on the first held-out chunk (a forward of that checkpoint here).
static void test_cli_quantize_fidelity(void **state) {
    E2E *e = *state;
    char cmd[1200], dir[300], logits[320], report[320], *out = NULL;
    snprintf(dir, sizeof dir, "%s_fid", e->dir);
    snprintf(logits, sizeof logits, "%s_fid_logits.safetensors", e->dir);
    snprintf(report, sizeof report, "%s_fid.json", e->dir);
    snprintf(cmd, sizeof cmd,
             "quantize -t 1 " STORIES " --calib tests/fixtures/quant/stories_heldout.txt "
             "--nsamples 8 --seq-len 64 --fidelity-data tests/fixtures/quant/stories_heldout.txt "
             "--fidelity-chunks 2 --fidelity-ctx 64 --logits %s --report %s --out %s",
             logits, report, dir);
    int rc = run_cli(cmd, &out);
    if (rc != 0) fail_msg("quantize: %s", out);
    assert_non_null(strstr(out, "Mean KLD"));
    free(out);
    json_t *r;
    assert_int_equal(json_read_object(&r, report, 0), STATUS_OK);
    json_t *fid = json_object_get(r, "fidelity");
    assert_true(json_is_object(fid));
    assert_int_equal(json_integer_value(json_object_get(fid, "tokens")), 62);
    double kl = json_number_value(json_object_get(fid, "kl_mean")),
           top1 = json_number_value(json_object_get(fid, "top1_agreement")),
           pb = json_number_value(json_object_get(fid, "ppl_base")),
           pq = json_number_value(json_object_get(fid, "ppl_quant"));
    assert_true(kl > 0 && kl < 10 && top1 > 0.3 && top1 <= 1 && pb > 1 && pq > 1);
    json_decref(r);
    SafeTensors st;
    assert_int_equal(safetensors_open(&st, logits), STATUS_OK);
    const SafeTensor *tt = safetensors_find(&st, "tokens"), *lt = safetensors_find(&st, "logits");
    assert_true(tt && lt && tt->dtype == ST_I32 && lt->dtype == ST_F32);
    assert_true(tt->ndim == 1 && tt->shape[0] == 64);
    assert_true(lt->ndim == 2 && lt->shape[0] == 64 && lt->shape[1] == 512);
    Model q;
    assert_int_equal(model_load(&q, dir, NULL), STATUS_OK);
    InferOptions o = infer_options_default();
    o.max_ctx = o.max_batch = 64;
    InferState is;
    assert_int_equal(infer_init(&is, &q, &o), STATUS_OK);
    float *lg = xmalloc(64 * 512 * sizeof *lg);
    InferBatch b = {.tokens = (const int32_t *)tt->data, .n = 64};
    assert_int_equal(infer_forward(&is, &b, lg), STATUS_OK);
    assert_memory_equal(lg, lt->data, 64 * 512 * sizeof *lg);
    free(lg);
    infer_release(&is);
    model_release(&q);
    safetensors_close(&st);
    unlink(logits);
    unlink(report);
}

int main(void) {
    // tests run beside other jobs on 2 cores: one thread avoids OpenMP spin-waits
#ifdef _OPENMP
    omp_set_num_threads(1);
#endif
    openblas_set_num_threads(1);
    log_set_level(LOG_WARN); // per-linear GPTQ lines are for the CLI
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fidelity_vs_numpy),
        cmocka_unit_test(test_percentile),
        cmocka_unit_test(test_calib_windows),
        cmocka_unit_test(test_calib_file_too_short),
        cmocka_unit_test(test_e2e_gptq_beats_rtn),
        cmocka_unit_test(test_e2e_threads),
        cmocka_unit_test(test_e2e_bad_checkpoints),
        cmocka_unit_test(test_e2e_sharded),
        cmocka_unit_test(test_e2e_other_bits_and_convert),
        cmocka_unit_test(test_e2e_true_sequential_actorder),
        cmocka_unit_test(test_e2e_lm_head),
        cmocka_unit_test(test_cli_quantize_errors),
        cmocka_unit_test(test_cli_quantize_fidelity),
    };
    return cmocka_run_group_tests_name("quantize", tests, e2e_setup, e2e_teardown);
}
