/*
 * test_trainer.c - the distillation loop on the tiny fixture models
 * (tests/fixtures/train/tiny_student, tiny_teacher): batch/target layout, the same seed
 * twice gives identical adapter bytes, kill-and-resume reaches the same adapter bytes,
 * training lowers the loss, and bad input (vocabulary mismatch, NaN weights, empty
 * split) stops with a clear error.
 */
#include "core/common.h"
#include "core/fileio.h"
#include "core/rng.h"
#include "model/llama.h"
#include "train/llama_train.h"
#include "train/trainer.h"
#include "testutil.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef _OPENMP
#include <omp.h>
#endif

typedef struct {
    Model student, teacher;
    TrainSet ts;
    DataSplit sp;
} Ctx;

// 24 synthetic examples of 6..20 tokens with prompts of 2..6 tokens.
static void make_set(TrainSet *ts, int V) {
    Rng r;
    rng_seed(&r, 77);
    ts->n = 24;
    ts->n_dropped = 0;
    ts->ex = xcalloc(ts->n, sizeof *ts->ex);
    for (int i = 0; i < ts->n; i++) {
        TrainExample *ex = &ts->ex[i];
        ex->len = 6 + (int)rng_below(&r, 15);
        int np = 2 + (int)rng_below(&r, 5);
        ex->ids = xmalloc(sizeof(int32_t) * ex->len);
        ex->mask = xcalloc(ex->len, 1);
        for (int t = 0; t < ex->len; t++) {
            ex->ids[t] = (int32_t)rng_below(&r, (uint64_t)V);
            ex->mask[t] = t >= np;
            ex->n_target += t >= np;
        }
        ex->record = i;
    }
}

static int setup(void **state) {
    Ctx *c = xcalloc(1, sizeof *c);
    ModelLoadOptions lo = {.no_tokenizer = true};
    if (model_load(&c->student, "tests/fixtures/train/tiny_student", &lo) != STATUS_OK ||
        model_load(&c->teacher, "tests/fixtures/train/tiny_teacher", &lo) != STATUS_OK) {
        fprintf(stderr, "model_load: %s\n", status_msg());
        return -1;
    }
    make_set(&c->ts, c->student.cfg.vocab_size);
    data_split(&c->sp, c->ts.n, 0.25, 5);
    *state = c;
    return 0;
}

static int teardown(void **state) {
    Ctx *c = *state;
    model_release(&c->student);
    model_release(&c->teacher);
    trainset_release(&c->ts);
    data_split_release(&c->sp);
    free(c);
    return 0;
}

static TrainerOptions small_opts(void) {
    TrainerOptions o = trainer_options_defaults();
    o.lora.rank = 4;
    o.lora.lora_alpha = 8;
    o.optim.lr = 1e-2f;
    o.kd.temperature = 2.0f;
    o.kd.alpha = 0.5f;
    o.batch = 3;
    o.seq_len = 16;
    o.grad_accum = 2;
    o.max_steps = 6;
    o.warmup_steps = 1;
    o.group_mult = 2;
    o.seed = 11;
    return o;
}

static void test_fill_batch(void **state) {
    Ctx *c = *state;
    int32_t ids[2 * 16], tg[2 * 16];
    int idx[1] = {0};
    const TrainExample *ex = &c->ts.ex[0];
    int64_t n = trainer_fill_batch(ids, tg, &c->ts, idx, 1, 2, 16);
    assert_int_equal(n, MIN(ex->len, 16));
    for (int t = 0; t < 16; t++) {
        int want =
            (t + 1 < MIN(ex->len, 16) && ex->mask[t + 1]) ? ex->ids[t + 1] : TRAIN_IGNORE_INDEX;
        assert_int_equal(tg[t], want);
        assert_int_equal(tg[16 + t], TRAIN_IGNORE_INDEX); // row past nb: all ignored
    }
}

static void run_ok(Ctx *c, const TrainerOptions *o, LoraModel *lm, TrainerResult *res) {
    if (trainer_run(&c->student, &c->teacher, &c->ts, &c->sp, o, NULL, NULL, lm, res) != STATUS_OK)
        fail_msg("trainer_run: %s", status_msg());
}

static void test_same_seed_identical_and_loss_drops(void **state) {
    Ctx *c = *state;
    TrainerOptions o = small_opts();
    o.max_steps = 8;
    o.schedule = SCHEDULE_CONSTANT;
    LoraModel a, b;
    TrainerResult ra, rb;
    run_ok(c, &o, &a, &ra);
    run_ok(c, &o, &b, &rb);
    assert_int_equal(ra.steps, 8);
    assert_memory_equal(a.params, b.params, sizeof(float) * a.n_params);
    // recomputing attention, or whole layers, in the backward gives the same bytes with
    // less memory
    lora_release(&b);
    o.recompute = LLAMA_RECOMPUTE_ATTENTION;
    run_ok(c, &o, &b, &rb);
    assert_memory_equal(a.params, b.params, sizeof(float) * a.n_params);
    lora_release(&b);
    o.recompute = LLAMA_RECOMPUTE_LAYERS;
    run_ok(c, &o, &b, &rb);
    assert_memory_equal(a.params, b.params, sizeof(float) * a.n_params);
    assert_true(rb.final_val_ce == ra.final_val_ce);
    const LlamaConfig *sc = &c->student.cfg;
    int64_t full = llama_train_act_bytes(sc, 3, 16, 4, LLAMA_RECOMPUTE_NONE);
    int64_t rec = llama_train_act_bytes(sc, 3, 16, 4, LLAMA_RECOMPUTE_ATTENTION);
    int64_t lay = llama_train_act_bytes(sc, 3, 16, 4, LLAMA_RECOMPUTE_LAYERS);
    int64_t probs = (int64_t)3 * sc->n_heads * 16 * 16 * (int64_t)sizeof(float);
    assert_true(full - rec == (sc->n_layers - 1) * probs);
    // a layer's activations: ln1 rstd1 q k v probs atty res1 ln2 rstd2 gate up h, u x 7
    // (each buffer rounded up to 16 floats)
    const int64_t N = 3 * 16, qd = (int64_t)sc->n_heads * sc->head_dim,
                  kvd = (int64_t)sc->n_kv_heads * sc->head_dim;
    int64_t per[] = {N * sc->dim,
                     N,
                     N * qd,
                     N * kvd,
                     N * kvd,
                     probs / 4,
                     N * qd,
                     N * sc->dim,
                     N * sc->dim,
                     N,
                     N * sc->hidden_dim,
                     N * sc->hidden_dim,
                     N * sc->hidden_dim};
    int64_t layer = 7 * ((N * 4 + 15) / 16 * 16);
    for (size_t i = 0; i < ARRAY_LEN(per); i++)
        layer += (per[i] + 15) / 16 * 16;
    assert_true(full - lay == (sc->n_layers - 1) * layer * (int64_t)sizeof(float));
    // validation CE improves on the initial (B = 0, i.e. base model) CE
    double ce0, ce1;
    assert_int_equal(
        trainer_eval_ce(&c->student, NULL, &c->ts, c->sp.val, c->sp.n_val, 3, 16, &ce0, NULL),
        STATUS_OK);
    assert_int_equal(
        trainer_eval_ce(&c->student, &a, &c->ts, c->sp.val, c->sp.n_val, 3, 16, &ce1, NULL),
        STATUS_OK);
    assert_true(fabs(ce1 - ra.final_val_ce) < 1e-9);
    printf("  val CE base %.4f -> trained %.4f; last train loss %.4f\n", ce0, ce1, ra.final_loss);
    lora_release(&a);
    lora_release(&b);
}

static void test_training_lowers_loss(void **state) {
    Ctx *c = *state;
    TrainerOptions o = small_opts();
    o.max_steps = 12;
    o.schedule = SCHEDULE_CONSTANT;
    o.grad_accum = 1;
    o.batch = 18; // the whole training split in one batch: the loss must fall
    LoraModel a;
    TrainerResult ra;
    double first = NAN;
    o.max_steps = 1;
    run_ok(c, &o, &a, &ra);
    first = ra.final_loss;
    lora_release(&a);
    o.max_steps = 12;
    run_ok(c, &o, &a, &ra);
    printf("  loss step 1 %.4f -> step 12 %.4f\n", first, ra.final_loss);
    assert_true(ra.final_loss < first);
    lora_release(&a);
}

static void rm_run_dir(const char *dir) {
    const char *files[] = {"train_log.jsonl",
                           "adapter/adapter_config.json",
                           "adapter/adapter_model.safetensors",
                           "checkpoint/adapter_config.json",
                           "checkpoint/adapter_model.safetensors",
                           "checkpoint/trainer_state.safetensors"};
    char p[512];
    for (size_t i = 0; i < ARRAY_LEN(files); i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        unlink(p);
    }
    snprintf(p, sizeof p, "%s/adapter", dir);
    rmdir(p);
    snprintf(p, sizeof p, "%s/checkpoint", dir);
    rmdir(p);
    rmdir(dir);
}

static void test_kill_and_resume(void **state) {
    Ctx *c = *state;
    char da[] = "/tmp/ef_train_a_XXXXXX", db[] = "/tmp/ef_train_b_XXXXXX";
    assert_non_null(mkdtemp(da));
    assert_non_null(mkdtemp(db));
    // AdamW; Muon; AdamW with LoRA dropout (masks must follow the step after a resume)
    for (int k = 0; k < 3; k++) {
        OptimKind kind = k == 1 ? OPTIM_MUON : OPTIM_ADAMW;
        TrainerOptions o = small_opts();
        o.optim = optim_defaults(kind);
        o.optim.lr = kind == OPTIM_MUON ? 2e-2f : 1e-2f;
        if (k == 2) o.lora.dropout = 0.3f;
        o.ckpt_every = 2;
        o.out_dir = da;
        LoraModel a, b;
        TrainerResult ra, rb;
        run_ok(c, &o, &a, &ra); // straight through
        o.out_dir = db;
        o.stop_after = 3; // "killed" after step 3; the checkpoint holds step 2
        run_ok(c, &o, &b, &rb);
        assert_int_equal(rb.steps, 3);
        lora_release(&b);
        o.stop_after = 0;
        o.resume = true;
        run_ok(c, &o, &b, &rb);
        assert_int_equal(rb.steps, 6);
        assert_memory_equal(a.params, b.params, sizeof(float) * a.n_params);
        // the final adapters on disk are byte-identical too
        char pa[512], pb[512];
        snprintf(pa, sizeof pa, "%s/adapter/adapter_model.safetensors", da);
        snprintf(pb, sizeof pb, "%s/adapter/adapter_model.safetensors", db);
        assert_same_file(pa, pb);
        lora_release(&a);
        lora_release(&b);
        rm_run_dir(da);
        rm_run_dir(db);
        assert_non_null(mkdtemp(strcpy(da, "/tmp/ef_train_a_XXXXXX")));
        assert_non_null(mkdtemp(strcpy(db, "/tmp/ef_train_b_XXXXXX")));
    }
    rmdir(da);
    rmdir(db);
}

static void test_bad_input(void **state) {
    Ctx *c = *state;
    TrainerOptions o = small_opts();
    LoraModel lm;
    TrainerResult r;
    // vocabulary mismatch
    Model t2 = c->teacher;
    t2.cfg.vocab_size = 300;
    assert_int_equal(trainer_run(&c->student, &t2, &c->ts, &c->sp, &o, NULL, NULL, &lm, &r),
                     STATUS_ERR_ARG);
    assert_non_null(strstr(status_msg(), "vocabulary"));
    // a teacher with padding rows past the shared vocabulary: refused without a shared
    // vocabulary, and with it the run equals the unpadded one
    {
        Model tp = c->teacher;
        int V = c->teacher.cfg.vocab_size, D = c->teacher.cfg.dim, pad = 8;
        float *emb = xmalloc(sizeof(float) * (V + pad) * D);
        dtype_to_f32(emb, c->teacher.tok_emb.data, c->teacher.tok_emb.dtype, (int64_t)V * D);
        for (int i = V * D; i < (V + pad) * D; i++)
            emb[i] = 0.01f * (float)(i % 7);
        tp.cfg.vocab_size = V + pad;
        tp.tok_emb.data = emb;
        tp.tok_emb.dtype = DTYPE_F32;
        tp.tok_emb.shape[0] = V + pad;
        tp.lm_head = tp.tok_emb; // the fixture teacher is tied
        assert_true(c->teacher.cfg.tied_embeddings);
        assert_int_equal(trainer_run(&c->student, &tp, &c->ts, &c->sp, &o, NULL, NULL, &lm, &r),
                         STATUS_ERR_ARG);
        TrainerOptions o2 = o;
        o2.max_steps = 3;
        o2.shared_vocab = V;
        LoraModel a, b;
        TrainerResult ra, rb;
        if (trainer_run(&c->student, &tp, &c->ts, &c->sp, &o2, NULL, NULL, &a, &ra) != STATUS_OK)
            fail_msg("padded teacher: %s", status_msg());
        o2.shared_vocab = 0;
        run_ok(c, &o2, &b, &rb);
        printf("  padded teacher loss %.7f, unpadded %.7f\n", ra.final_loss, rb.final_loss);
        assert_true(fabs(ra.final_loss - rb.final_loss) < 1e-5);
        double md = 0, mr = 0;
        for (int64_t i = 0; i < a.n_params; i++) {
            md = fmax(md, fabs(a.params[i] - b.params[i]));
            mr = fmax(mr, fabs(b.params[i]));
        }
        assert_true(md <= 1e-4 * mr);
        lora_release(&a);
        lora_release(&b);
        free(emb);
    }
    // empty training split
    DataSplit empty = {0};
    assert_int_equal(trainer_run(&c->student, NULL, &c->ts, &empty, &o, NULL, NULL, &lm, &r),
                     STATUS_ERR_ARG);
    // NaN in a weight: a numeric error, not a crash
    Model bad = c->student;
    LlamaLayer *layers = xmalloc(sizeof(LlamaLayer) * bad.cfg.n_layers);
    memcpy(layers, c->student.layers, sizeof(LlamaLayer) * bad.cfg.n_layers);
    int64_t n = tensor_numel(&layers[0].w_up);
    float *w = xmalloc(sizeof(float) * n);
    dtype_to_f32(w, layers[0].w_up.data, layers[0].w_up.dtype, n);
    w[5] = NAN;
    layers[0].w_up.data = w;
    layers[0].w_up.dtype = DTYPE_F32;
    bad.layers = layers;
    assert_int_equal(trainer_run(&bad, &c->teacher, &c->ts, &c->sp, &o, NULL, NULL, &lm, &r),
                     STATUS_ERR_NUMERIC);
    assert_non_null(strstr(status_msg(), "step 0"));
    free(w);
    free(layers);
    // bad options
    o.batch = 0;
    assert_int_equal(trainer_run(&c->student, NULL, &c->ts, &c->sp, &o, NULL, NULL, &lm, &r),
                     STATUS_ERR_ARG);
}

// A cache holding the whole distribution (K = V) at t_gen = T gives the dense KD run.
static void test_teacher_cache(void **state) {
    Ctx *c = *state;
    TrainerOptions o = small_opts();
    o.max_steps = 4;
    int V = c->teacher.cfg.vocab_size;
    TeacherCache tc, back;
    assert_int_equal(
        teacher_cache_build(&tc, &c->teacher, &c->ts, V, o.kd.temperature, o.seq_len, 5),
        STATUS_OK);
    char path[] = "/tmp/ef_cache_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(teacher_cache_save(&tc, path, "tiny_teacher"), STATUS_OK);
    assert_int_equal(teacher_cache_load(&back, path), STATUS_OK);
    assert_int_equal(back.rows, tc.rows);
    assert_memory_equal(back.ids, tc.ids, sizeof(int32_t) * tc.rows * V);
    assert_memory_equal(back.logp, tc.logp, sizeof(float) * tc.rows * V);
    // most likely first, log-probs of a distribution
    for (int k = 1; k < V; k++)
        assert_true(back.logp[k - 1] >= back.logp[k]);
    // a cache made for another window is refused with the example named
    assert_int_equal(teacher_cache_check(&back, &c->ts, 12, V), STATUS_ERR_ARG);
    // so is one made from other tokens with the same rows (a BOS rule shifts every token;
    // here one prompt token differs); a cache without the checksum (older files) passes
    assert_true(back.tokens_hash != 0 && back.tokens_hash == tc.tokens_hash);
    assert_int_equal(teacher_cache_check(&back, &c->ts, o.seq_len, V), STATUS_OK);
    int32_t *tok0 = &c->ts.ex[0].ids[0], was = *tok0;
    *tok0 = (was + 1) % V;
    assert_int_equal(teacher_cache_check(&back, &c->ts, o.seq_len, V), STATUS_ERR_ARG);
    assert_non_null(strstr(status_msg(), "other tokens"));
    back.tokens_hash = 0;
    assert_int_equal(teacher_cache_check(&back, &c->ts, o.seq_len, V), STATUS_OK);
    back.tokens_hash = tc.tokens_hash;
    *tok0 = was;
    LoraModel a, b;
    TrainerResult ra, rb;
    run_ok(c, &o, &a, &ra);
    o.teacher_cache = &back;
    if (trainer_run(&c->student, NULL, &c->ts, &c->sp, &o, NULL, NULL, &b, &rb) != STATUS_OK)
        fail_msg("trainer_run with cache: %s", status_msg());
    printf("  dense loss %.6f, cached top-%d loss %.6f\n", ra.final_loss, V, rb.final_loss);
    assert_true(fabs(ra.final_loss - rb.final_loss) < 1e-4);
    double md = 0, mr = 0;
    for (int64_t i = 0; i < a.n_params; i++) {
        md = fmax(md, fabs(a.params[i] - b.params[i]));
        mr = fmax(mr, fabs(a.params[i]));
    }
    assert_true(md <= 1e-3 * mr);
    // a truncated file is rejected
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    assert_int_equal(ftruncate(fileno(f), 64), 0);
    fclose(f);
    TeacherCache bad;
    assert_int_not_equal(teacher_cache_load(&bad, path), STATUS_OK);
    unlink(path);
    lora_release(&a);
    lora_release(&b);
    teacher_cache_release(&tc);
    teacher_cache_release(&back);
}

// A NaN during a resumed run stops it and leaves the last good checkpoint as it was.
static void test_nan_keeps_checkpoint(void **state) {
    Ctx *c = *state;
    char dir[] = "/tmp/ef_train_n_XXXXXX";
    assert_non_null(mkdtemp(dir));
    TrainerOptions o = small_opts();
    o.out_dir = dir;
    o.ckpt_every = 2;
    o.stop_after = 2;
    LoraModel lm;
    TrainerResult r;
    run_ok(c, &o, &lm, &r);
    lora_release(&lm);
    char st[512];
    snprintf(st, sizeof st, "%s/checkpoint/trainer_state.safetensors", dir);
    char *before, *after;
    size_t nb, na;
    assert_int_equal(file_read_all(st, &before, &nb), STATUS_OK);
    Model bad = c->student;
    LlamaLayer *layers = xmalloc(sizeof(LlamaLayer) * bad.cfg.n_layers);
    memcpy(layers, c->student.layers, sizeof(LlamaLayer) * bad.cfg.n_layers);
    int64_t n = tensor_numel(&layers[1].wo);
    float *w = xmalloc(sizeof(float) * n);
    dtype_to_f32(w, layers[1].wo.data, layers[1].wo.dtype, n);
    w[3] = INFINITY;
    layers[1].wo.data = w;
    layers[1].wo.dtype = DTYPE_F32;
    bad.layers = layers;
    o.stop_after = 0;
    o.resume = true;
    assert_int_equal(trainer_run(&bad, &c->teacher, &c->ts, &c->sp, &o, NULL, NULL, &lm, &r),
                     STATUS_ERR_NUMERIC);
    assert_int_equal(file_read_all(st, &after, &na), STATUS_OK);
    assert_int_equal(na, nb);
    assert_memory_equal(before, after, na);
    free(before);
    free(after);
    free(w);
    free(layers);
    rm_run_dir(dir);
}

// The CLI on the bundled stories260K: malformed JSONL lines (fatal with the line number,
// or skipped by flag), an empty dataset, and a short successful run.
static void test_distill_cli(void **state) {
    (void)state;
    char dir[] = "/tmp/ef_distill_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char data[600], empty[600], args[2048], *out;
    snprintf(data, sizeof data, "%s/d.jsonl", dir);
    snprintf(empty, sizeof empty, "%s/e.jsonl", dir);
    FILE *f = fopen(data, "w");
    assert_non_null(f);
    for (int i = 0; i < 6; i++) {
        fprintf(f, "{\"instruction\": \"Tell a story.\", \"output\": \"Once upon a time %d.\"}\n",
                i);
        if (i == 1) fprintf(f, "{\"instruction\": 3}\n"); // line 3
    }
    fclose(f);
    f = fopen(empty, "w");
    assert_non_null(f);
    fputs("\n\n", f);
    fclose(f);
    const char *m = "models/stories260K/stories260K.bin";
    snprintf(args, sizeof args,
             "distill --student %s --teacher %s --data %s --out %s/run --max-steps 2 "
             "--batch 2 --seq-len 160 --rank 2",
             m, m, data, dir);
    assert_int_equal(run_cli(args, &out), 1);
    assert_non_null(strstr(out, "d.jsonl:3:"));
    free(out);
    strcat(args, " --skip-bad-lines");
    int rc = run_cli(args, &out);
    if (rc != 0) fail_msg("distill failed: %s", out);
    assert_non_null(strstr(out, "adapter:"));
    free(out);
    // -t sets the thread count (as quantize, eval, generate and analyze take it)
    snprintf(args, sizeof args,
             "distill -t 1 --student %s --teacher %s --data %s --out %s/run1 --max-steps 1 "
             "--batch 2 --seq-len 160 --rank 2 --skip-bad-lines",
             m, m, data, dir);
    rc = run_cli(args, &out);
    if (rc != 0) fail_msg("distill -t 1 failed: %s", out);
    assert_non_null(strstr(out, "adapter:"));
    free(out);
    snprintf(args, sizeof args, "distill --student %s --data %s --out %s/run2", m, empty, dir);
    assert_int_equal(run_cli(args, &out), 1);
    assert_non_null(strstr(out, "no usable records"));
    free(out);
    snprintf(args, sizeof args, "rm -rf '%s'", dir); // test-only clean-up of our own temp dir
    assert_int_equal(system(args), 0);
}

// runs `edgeforge ARGS`, expects exit code rc and (when not NULL) `want` in its output
static void expect_cli(int rc, const char *want, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void expect_cli(int rc, const char *want, const char *fmt, ...) {
    char args[4096], *out;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    int got = run_cli(args, &out);
    if (got != rc || (want && !strstr(out, want)))
        fail_msg("edgeforge %s: exit %d (expected %d), output:\n%s\n(expected to contain '%s')",
                 args, got, rc, out, want ? want : "");
    free(out);
}

// The student-making commands end to end through the CLI: prune, distill --merge, merge (the
// same merged bytes), teacher-cache and distill from it; and their refusals: a layer that
// does not exist, an existing output, an adapter of a deeper model (its extra layers would
// otherwise be dropped silently), a bad adapter_config.json (named with line and column).
static void test_student_cli(void **state) {
    (void)state;
    char dir[] = "/tmp/ef_student_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char data[600], path_a[700], path_b[700];
    snprintf(data, sizeof data, "%s/d.jsonl", dir);
    FILE *f = fopen(data, "w");
    assert_non_null(f);
    for (int i = 0; i < 6; i++)
        fprintf(f, "{\"instruction\": \"Tell a story.\", \"output\": \"Once upon a time %d.\"}\n",
                i);
    fclose(f);
    const char *m = "models/stories260K/stories260K.bin";
    const char *fit = "--max-steps 2 --batch 2 --seq-len 160 --rank 2 -t 1";
    expect_cli(0, "kept 2 of 5 layers", "prune %s %s/student --keep-layers 0,4", m, dir);
    expect_cli(1, "layer 9 does not exist", "prune %s %s/s9 --keep-layers 0,9", m, dir);
    expect_cli(1, "already exists", "prune %s %s/student --keep-layers 0", m, dir);
    expect_cli(0, "merged model:",
               "distill --student %s/student --teacher %s --data %s "
               "--out %s/run %s --merge",
               dir, m, data, dir, fit);
    expect_cli(0, "merged", "merge %s/student %s/run/adapter %s/merged", dir, dir, dir);
    snprintf(path_a, sizeof path_a, "%s/run/merged/model.safetensors", dir);
    snprintf(path_b, sizeof path_b, "%s/merged/model.safetensors", dir);
    assert_same_file(path_a, path_b);
    expect_cli(1, "already exists", "merge %s/student %s/run/adapter %s/merged", dir, dir, dir);
    // an adapter trained on the 5-layer teacher does not fit the 2-layer student
    expect_cli(0, "adapter:", "distill --student %s --teacher %s --data %s --out %s/deep %s", m, m,
               data, dir, fit);
    expect_cli(1, "made for a deeper model", "merge %s/student %s/deep/adapter %s/m2", dir, dir,
               dir);
    // the config names fewer modules than the file holds; an out-of-range rank names the file
    char cmd[1600], qcfg[700];
    snprintf(cmd, sizeof cmd, "cp -r '%s/run/adapter' '%s/qonly'", dir, dir);
    assert_int_equal(system(cmd), 0);
    snprintf(qcfg, sizeof qcfg, "%s/qonly/adapter_config.json", dir);
    const char *cfgs[][2] = {
        {"{\"peft_type\": \"LORA\", \"r\": 2, \"lora_alpha\": 2, \"target_modules\": [\"q_proj\"]}",
         "does not use"},
        {"{\"peft_type\": \"LORA\", \"r\": 0, \"lora_alpha\": 2, \"target_modules\": [\"q_proj\"]}",
         "qonly/adapter_config.json': LoRA rank 0"}};
    for (size_t i = 0; i < ARRAY_LEN(cfgs); i++) {
        assert_int_equal(file_write_all(qcfg, cfgs[i][0], strlen(cfgs[i][0])), STATUS_OK);
        expect_cli(1, cfgs[i][1], "merge %s/student %s/qonly %s/m2", dir, dir, dir);
    }
    // target_modules as full paths, as PEFT writes "all-linear" for a model with fewer than
    // 20 linears (this student has 14): the same merge; with a layer missing, refused
    static const char *const mods[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                       "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                       "mlp.down_proj"};
    for (int layers = 2; layers >= 1; layers--) {
        char cfg[2048] = "{\"peft_type\": \"LORA\", \"r\": 2, \"lora_alpha\": 2.0, "
                         "\"target_modules\": [";
        for (int l = 0; l < layers; l++)
            for (size_t k = 0; k < ARRAY_LEN(mods); k++)
                snprintf(cfg + strlen(cfg), sizeof cfg - strlen(cfg), "%s\"model.layers.%d.%s\"",
                         l || k ? ", " : "", l, mods[k]);
        strcat(cfg, "]}");
        assert_int_equal(file_write_all(qcfg, cfg, strlen(cfg)), STATUS_OK);
        if (layers == 2) {
            expect_cli(0, "merged", "merge %s/student %s/qonly %s/m5", dir, dir, dir);
            snprintf(path_a, sizeof path_a, "%s/merged/model.safetensors", dir);
            snprintf(path_b, sizeof path_b, "%s/m5/model.safetensors", dir);
            assert_same_file(path_a, path_b);
        } else {
            expect_cli(1, "some layers only", "merge %s/student %s/qonly %s/m6", dir, dir, dir);
        }
    }
    expect_cli(1, "missing tensor", "merge %s %s/run/adapter %s/m3", m, dir, dir);
    snprintf(path_a, sizeof path_a, "%s/deep/adapter/adapter_config.json", dir);
    f = fopen(path_a, "w");
    assert_non_null(f);
    fputs("{\"r\": 2,\n", f);
    fclose(f);
    expect_cli(1, "(line 2, column", "merge %s %s/deep/adapter %s/m4", m, dir, dir);
    // teacher-cache, then distill from the cache (no teacher model in the process)
    expect_cli(0, "top-8",
               "teacher-cache --teacher %s --data %s -o %s/c.safetensors -k 8 "
               "--seq-len 160 -t 1",
               m, data, dir);
    expect_cli(2, "needs --teacher", "teacher-cache --data %s -o %s/c2.safetensors", data, dir);
    char args[2048], *out;
    snprintf(args, sizeof args,
             "distill --student %s/student --teacher-cache %s/c.safetensors --data %s "
             "--out %s/cached %s",
             dir, dir, data, dir, fit);
    assert_int_equal(run_cli(args, &out), 0);
    assert_non_null(strstr(out, "adapter:"));
    // no teacher CE to print without a teacher model
    const char *ce = strstr(out, "validation CE before training: student ");
    assert_non_null(ce);
    const char *eol = strchr(ce, '\n');
    assert_non_null(eol);
    assert_null(memmem(ce, (size_t)(eol - ce), "teacher", 7));
    free(out);
    char rm[700];
    for (const char *p = "m2\0m3\0m4\0m6\0s9\0"; *p; p += strlen(p) + 1) { // refused: no output
        snprintf(path_a, sizeof path_a, "%s/%s", dir, p);
        assert_false(path_is_dir(path_a));
    }
    snprintf(rm, sizeof rm, "rm -rf '%s'", dir); // test-only clean-up of our own temp dir
    assert_int_equal(system(rm), 0);
}

// LoRA dropout: seeded (same run twice = same bytes), it changes the result, and the
// validation CE is computed without it (equals a plain evaluation of the adapter).
static void test_lora_dropout_run(void **state) {
    Ctx *c = *state;
    TrainerOptions o = small_opts();
    LoraModel a, b, d;
    TrainerResult ra, rb, rd;
    run_ok(c, &o, &d, &rd);
    o.lora.dropout = 0.25f;
    run_ok(c, &o, &a, &ra);
    run_ok(c, &o, &b, &rb);
    assert_memory_equal(a.params, b.params, sizeof(float) * a.n_params);
    assert_true(memcmp(a.params, d.params, sizeof(float) * a.n_params) != 0);
    // layer recomputation reuses the forward's masks: the same bytes
    lora_release(&b);
    o.recompute = LLAMA_RECOMPUTE_LAYERS;
    run_ok(c, &o, &b, &rb);
    assert_memory_equal(a.params, b.params, sizeof(float) * a.n_params);
    double ce;
    assert_int_equal(trainer_eval_ce(&c->student, &a, &c->ts, c->sp.val, c->sp.n_val, o.batch,
                                     o.seq_len, &ce, NULL),
                     STATUS_OK);
    assert_true(fabs(ce - ra.final_val_ce) < 1e-9);
    printf("  dropout 0.25: loss %.5f (no dropout %.5f), val CE %.5f\n", ra.final_loss,
           rd.final_loss, ce);
    lora_release(&a);
    lora_release(&b);
    lora_release(&d);
}

// One training step (forward, KD loss, backward) of a random Llama big enough for every
// product to be split over threads, on 1, 2 and 3 threads: the loss terms and every LoRA
// gradient bit for bit the same (OpenBLAS's own threading changed ~4 % of a product's
// outputs with the thread count; tensor/gemm.h). T = 160 leaves ragged attention blocks.
static void test_step_thread_invariance(void **state) {
    (void)state;
#ifdef _OPENMP
    LlamaConfig c = test_threads_config();
    Model m;
    test_random_model(&m, &c, 3);
    const int B = 2, T = 160, V = c.vocab_size;
    LoraConfig lc = lora_config_defaults();
    lc.rank = 8;
    lc.lora_alpha = 16;
    Rng r;
    rng_seed(&r, 4);
    LoraModel lm;
    assert_int_equal(lora_init(&lm, &m.cfg, &lc, &r), STATUS_OK);
    for (int64_t i = 0; i < lm.n_params; i++) // B != 0, so every gradient path carries signal
        lm.params[i] = (float)(0.05 * rng_normal(&r));
    int32_t *ids = xmalloc(sizeof(int32_t) * B * T), *tg = xmalloc(sizeof(int32_t) * B * T);
    float *tl = xmalloc(sizeof(float) * (size_t)(B * T) * (size_t)V);
    for (int i = 0; i < B * T; i++) {
        ids[i] = (int32_t)rng_below(&r, (uint64_t)V);
        tg[i] = i % T < 20 ? TRAIN_IGNORE_INDEX : (int32_t)rng_below(&r, (uint64_t)V);
    }
    for (int64_t i = 0; i < (int64_t)B * T * V; i++)
        tl[i] = (float)(2 * rng_normal(&r));
    KdLossOptions ko = {.temperature = 2.0f, .alpha = 0.5f};
    const int saved = omp_get_max_threads();
    float *g1 = xmalloc(sizeof(float) * (size_t)lm.n_params);
    KdLoss l1 = {0};
    int differ = 0; // the first thread count whose loss or gradients differ from 1 thread's
    for (int nt = 1; nt <= 3; nt++) {
        omp_set_num_threads(nt);
        LlamaTrain lt;
        assert_int_equal(llama_train_init(&lt, &m, B, T, lc.rank), STATUS_OK);
        lora_zero_grad(&lm);
        KdLoss l;
        assert_int_equal(llama_train_step(&lt, &lm, ids, tg, tl, &ko, &l), STATUS_OK);
        llama_train_release(&lt);
        if (nt == 1) {
            memcpy(g1, lm.grads, sizeof(float) * (size_t)lm.n_params);
            l1 = l;
            continue;
        }
        if (!differ && (l.loss != l1.loss || l.kl != l1.kl || l.ce != l1.ce ||
                        memcmp(g1, lm.grads, sizeof(float) * (size_t)lm.n_params)))
            differ = nt;
    }
    omp_set_num_threads(saved);
    if (differ) fail_msg("loss or LoRA gradients on %d threads differ from 1 thread", differ);
    double gn = 0;
    for (int64_t i = 0; i < lm.n_params; i++)
        gn += (double)g1[i] * g1[i];
    assert_true(gn > 0 && l1.kl > 0 && l1.ce > 0);
    free(g1);
    free(ids);
    free(tg);
    free(tl);
    lora_release(&lm);
    model_release(&m);
#else
    skip();
#endif
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fill_batch),
        cmocka_unit_test(test_step_thread_invariance),
        cmocka_unit_test(test_same_seed_identical_and_loss_drops),
        cmocka_unit_test(test_training_lowers_loss),
        cmocka_unit_test(test_kill_and_resume),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_teacher_cache),
        cmocka_unit_test(test_nan_keeps_checkpoint),
        cmocka_unit_test(test_lora_dropout_run),
        cmocka_unit_test(test_distill_cli),
        cmocka_unit_test(test_student_cli),
    };
    return cmocka_run_group_tests_name("trainer", tests, setup, teardown);
}
