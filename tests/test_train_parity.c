/*
 * test_train_parity.c - LoRA + KD training against PyTorch + PEFT
 * (tests/fixtures/train/, tools/gen_train_fixtures.py).
 *
 * The reference runs in float64; edgeforge runs in F32. Stated bounds:
 *   - teacher/student logits: max |x - r| <= 1e-4 (style.md §8 tiny-model logits);
 *   - loss, KL, CE: relative error <= 1e-4 (issue 4);
 *   - LoRA gradients, per tensor: max_i |g_i - r_i| <= 1e-4 * max_i |r_i| (issue 4);
 *   - 10 optimizer steps: |loss - ref| <= 1e-4 per step (style.md §8) and final LoRA
 *     weights per tensor max |w - r| <= 1e-4 * max |r|.
 * Measured errors are printed so the margins are visible.
 */
#include "core/common.h"
#include "model/llama.h"
#include "train/llama_train.h"
#include "train/lora.h"
#include "train/optim.h"
#include "testutil.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FIX_DIR "tests/fixtures/train"

/* ---- Loading the fixture models (HF directories) -------------------------------------- */

typedef struct {
    Model m;
    SafeTensors st;
} FixModel;

static void view(Tensor *t, const SafeTensors *st, const char *name) {
    const SafeTensor *s = safetensors_find(st, name);
    if (!s) fail_msg("fixture tensor '%s' missing", name);
    assert_int_equal(s->dtype, ST_F32);
    t->dtype = DTYPE_F32;
    t->ndim = s->ndim;
    for (int i = 0; i < s->ndim; i++)
        t->shape[i] = s->shape[i];
    t->data = (void *)s->data;
}

static double jnum(json_t *o, const char *k, double dflt) {
    json_t *v = json_object_get(o, k);
    return json_is_number(v) ? json_number_value(v) : dflt;
}

// Reads config.json + model.safetensors of a tiny HF Llama into views (no copies).
static void fix_model_load(FixModel *fm, const char *dir) {
    char path[512];
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_error_t err;
    json_t *j = json_load_file(path, 0, &err);
    if (!j) fail_msg("cannot parse %s: %s", path, err.text);
    Model *m = &fm->m;
    model_init(m);
    LlamaConfig *c = &m->cfg;
    c->dim = (int)jnum(j, "hidden_size", 0);
    c->hidden_dim = (int)jnum(j, "intermediate_size", 0);
    c->n_layers = (int)jnum(j, "num_hidden_layers", 0);
    c->n_heads = (int)jnum(j, "num_attention_heads", 0);
    c->n_kv_heads = (int)jnum(j, "num_key_value_heads", 0);
    c->head_dim = (int)jnum(j, "head_dim", 0);
    c->vocab_size = (int)jnum(j, "vocab_size", 0);
    c->norm_eps = (float)jnum(j, "rms_norm_eps", 1e-5);
    c->tied_embeddings = json_is_true(json_object_get(j, "tie_word_embeddings"));
    json_t *rp = json_object_get(j, "rope_parameters");
    c->rope_theta = (float)jnum(rp, "rope_theta", 10000);
    json_t *rt = json_object_get(rp, "rope_type");
    if (json_is_string(rt) && !strcmp(json_string_value(rt), "llama3")) {
        c->rope_scaling = ROPE_SCALING_LLAMA3;
        c->rope_factor = (float)jnum(rp, "factor", 0);
        c->rope_low_freq_factor = (float)jnum(rp, "low_freq_factor", 0);
        c->rope_high_freq_factor = (float)jnum(rp, "high_freq_factor", 0);
        c->rope_orig_max_pos = (int)jnum(rp, "original_max_position_embeddings", 0);
    }
    json_decref(j);
    assert_int_equal(llama_config_validate(c, dir), STATUS_OK);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    assert_int_equal(safetensors_open(&fm->st, path), STATUS_OK);
    const SafeTensors *st = &fm->st;
    view(&m->tok_emb, st, "model.embed_tokens.weight");
    view(&m->final_norm, st, "model.norm.weight");
    if (c->tied_embeddings)
        m->lm_head = m->tok_emb;
    else
        view(&m->lm_head, st, "lm_head.weight");
    m->layers = xcalloc((size_t)c->n_layers, sizeof(LlamaLayer));
    for (int l = 0; l < c->n_layers; l++) {
        LlamaLayer *ly = &m->layers[l];
        char n[128];
#define V(field, suffix)                                                                           \
    snprintf(n, sizeof n, "model.layers.%d.%s", l, suffix);                                        \
    view(&ly->field, st, n)
        V(attn_norm, "input_layernorm.weight");
        V(wq, "self_attn.q_proj.weight");
        V(wk, "self_attn.k_proj.weight");
        V(wv, "self_attn.v_proj.weight");
        V(wo, "self_attn.o_proj.weight");
        V(ffn_norm, "post_attention_layernorm.weight");
        V(w_gate, "mlp.gate_proj.weight");
        V(w_up, "mlp.up_proj.weight");
        V(w_down, "mlp.down_proj.weight");
#undef V
    }
}

static void fix_model_release(FixModel *fm) {
    model_release(&fm->m); // frees layers and buffers of merged weights (model_alloc)
    safetensors_close(&fm->st);
}

/* ---- Shared state ------------------------------------------------------------------- */

typedef struct {
    FixModel student, teacher;
    SafeTensors ref;
    int B, T;
    int32_t *ids, *targets;
    float *tlogits;
    LlamaTrain lt;
} Ctx;

static int setup(void **state) {
    Ctx *c = xcalloc(1, sizeof *c);
    fix_model_load(&c->student, FIX_DIR "/tiny_student");
    fix_model_load(&c->teacher, FIX_DIR "/tiny_teacher");
    fixture_open(&c->ref, "train/parity.safetensors");
    c->B = atoi(safetensors_meta(&c->ref, "B"));
    c->T = atoi(safetensors_meta(&c->ref, "T"));
    int64_t n;
    int64_t *ids = fixture_i64(&c->ref, "ids", &n), *tg = fixture_i64(&c->ref, "targets", NULL);
    c->ids = xmalloc(sizeof(int32_t) * n);
    c->targets = xmalloc(sizeof(int32_t) * n);
    for (int64_t i = 0; i < n; i++) {
        c->ids[i] = (int32_t)ids[i];
        c->targets[i] = (int32_t)tg[i];
    }
    free(ids);
    free(tg);
    // the teacher runs through the same training forward, without adapters
    LlamaTrain te;
    assert_int_equal(llama_train_init(&te, &c->teacher.m, c->B, c->T, 0), STATUS_OK);
    assert_int_equal(llama_train_forward(&te, NULL, c->ids), STATUS_OK);
    int64_t nl = (int64_t)c->B * c->T * te.cfg.vocab_size;
    c->tlogits = xmalloc(sizeof(float) * nl);
    memcpy(c->tlogits, te.logits, sizeof(float) * nl);
    llama_train_release(&te);
    int rank = atoi(safetensors_meta(&c->ref, "rank"));
    assert_int_equal(llama_train_init(&c->lt, &c->student.m, c->B, c->T, rank), STATUS_OK);
    *state = c;
    return 0;
}

static int teardown(void **state) {
    Ctx *c = *state;
    llama_train_release(&c->lt);
    fix_model_release(&c->student);
    fix_model_release(&c->teacher);
    safetensors_close(&c->ref);
    free(c->ids);
    free(c->targets);
    free(c->tlogits);
    free(c);
    return 0;
}

static KdLossOptions kd_opts(const Ctx *c) {
    KdLossOptions o = {.temperature = (float)atof(safetensors_meta(&c->ref, "kd_temperature")),
                       .alpha = (float)atof(safetensors_meta(&c->ref, "kd_alpha"))};
    return o;
}

static void peft_key(char *buf, size_t n, const char *prefix, int l, LoraModule m, char ab) {
    snprintf(buf, n, "%sbase_model.model.model.layers.%d.%s.%s.lora_%c.weight", prefix, l,
             lora_module_parent(m), lora_module_name(m), ab);
}

// LoRA with the fixture's config; A (and B when b_prefix != NULL) from the fixture.
static void make_lora(const Ctx *c, LoraModel *lm, const char *b_prefix) {
    LoraConfig lc = lora_config_defaults();
    lc.rank = atoi(safetensors_meta(&c->ref, "rank"));
    lc.lora_alpha = (float)atof(safetensors_meta(&c->ref, "lora_alpha"));
    Rng rng;
    rng_seed(&rng, 1);
    assert_int_equal(lora_init(lm, &c->student.m.cfg, &lc, &rng), STATUS_OK);
    char key[256];
    for (int l = 0; l < lm->n_layers; l++)
        for (int m = 0; m < LORA_MODULE_COUNT; m++) {
            LoraAdapter *ad = lora_get(lm, l, (LoraModule)m);
            int64_t n;
            peft_key(key, sizeof key, "init.", l, (LoraModule)m, 'A');
            float *a = fixture_f32(&c->ref, key, &n);
            assert_int_equal(n, (int64_t)ad->rank * ad->in);
            memcpy(ad->a, a, sizeof(float) * n);
            free(a);
            if (b_prefix) {
                peft_key(key, sizeof key, b_prefix, l, (LoraModule)m, 'B');
                float *b = fixture_f32(&c->ref, key, &n);
                assert_int_equal(n, (int64_t)ad->rank * ad->out);
                memcpy(ad->b, b, sizeof(float) * n);
                free(b);
            }
        }
}

// max |x - r| / max |r| (0/0 = 0); prints and checks <= tol.
static double check_rel(const char *what, const float *x, const float *r, int64_t n, double tol) {
    double md = 0, mr = 0;
    for (int64_t i = 0; i < n; i++) {
        md = fmax(md, fabs((double)x[i] - r[i]));
        mr = fmax(mr, fabs((double)r[i]));
    }
    double rel = mr > 0 ? md / mr : md;
    if (!(rel <= tol)) fail_msg("%s: max|x-r|/max|r| = %.3g > %.3g", what, rel, tol);
    return rel;
}

// Compares every LoRA tensor of lm (params or grads) with fixture tensors "<prefix><key>".
static double check_lora(const Ctx *c, const LoraModel *lm, bool grads, const char *prefix,
                         double tol) {
    double worst = 0;
    char key[256];
    for (int l = 0; l < lm->n_layers; l++)
        for (int m = 0; m < LORA_MODULE_COUNT; m++) {
            const LoraAdapter *ad = lora_get(lm, l, (LoraModule)m);
            for (int ab = 0; ab < 2; ab++) {
                peft_key(key, sizeof key, prefix, l, (LoraModule)m, ab ? 'B' : 'A');
                int64_t n;
                float *r = fixture_f32(&c->ref, key, &n);
                const float *x = ab ? (grads ? ad->db : ad->b) : (grads ? ad->da : ad->a);
                worst = fmax(worst, check_rel(key, x, r, n, tol));
                free(r);
            }
        }
    return worst;
}

/* ---- Tests -------------------------------------------------------------------------- */

static void test_teacher_logits(void **state) {
    Ctx *c = *state;
    int64_t n;
    float *r = fixture_f32(&c->ref, "teacher_logits", &n);
    assert_close_f32("teacher logits", c->tlogits, r, n, 1e-4, 0);
    free(r);
}

// rows: logits only for the rows with a target (llama_train_set_logit_rows), as the trainer
// runs; PyTorch computes every row and masks.
static void check_case(Ctx *c, int case_no, bool rows) {
    LoraModel lm;
    make_lora(c, &lm, case_no ? "brand." : NULL);
    KdLossOptions o = kd_opts(c);
    KdLoss l;
    lora_zero_grad(&lm);
    const int64_t N = (int64_t)c->lt.B * c->lt.T, V = c->lt.cfg.vocab_size;
    const int64_t m = llama_train_set_logit_rows(&c->lt, rows ? c->targets : NULL);
    if (rows) assert_true(m > 0 && m < N); // the fixture masks prompt and padding rows
    assert_int_equal(llama_train_step(&c->lt, &lm, c->ids, c->targets, c->tlogits, &o, &l),
                     STATUS_OK);
    char name[64];
    snprintf(name, sizeof name, "student_logits%d", case_no);
    int64_t n;
    float *r = fixture_f32(&c->ref, name, &n);
    assert_int_equal(n, N * V);
    for (int64_t i = 0; i < m; i++) // the reference's rows the logits rows stand for
        memmove(r + i * V, r + (int64_t)c->lt.logit_rows[i] * V, (size_t)V * sizeof(float));
    assert_close_f32("student logits", c->lt.logits, r, m * V, 1e-4, 0);
    free(r);
    llama_train_set_logit_rows(&c->lt, NULL);
    snprintf(name, sizeof name, "scalars%d", case_no);
    const SafeTensor *sc = safetensors_find(&c->ref, name);
    assert_non_null(sc);
    const double *ref = sc->data;
    double got[3] = {l.loss, l.kl, l.ce};
    const char *what[3] = {"loss", "KL", "CE"};
    for (int i = 0; i < 3; i++) {
        double rel = fabs(got[i] - ref[i]) / fabs(ref[i]);
        printf("  case %d %s: %.9f ref %.9f rel %.2e\n", case_no, what[i], got[i], ref[i], rel);
        if (!(rel <= 1e-4)) fail_msg("%s relative error %.3g > 1e-4", what[i], rel);
    }
    snprintf(name, sizeof name, "grad%d.", case_no);
    double worst = check_lora(c, &lm, true, name, 1e-4);
    printf("  case %d LoRA gradients: worst max|g-r|/max|r| %.2e\n", case_no, worst);
    lora_release(&lm);
}

static void test_loss_grads_peft_init(void **state) { check_case(*state, 0, false); }
static void test_loss_grads_random_b(void **state) { check_case(*state, 1, false); }
static void test_loss_grads_logit_rows(void **state) {
    check_case(*state, 0, true);
    check_case(*state, 1, true);
}

static OptimOptions opts_from_meta(const Ctx *c, const char *tag, OptimKind kind) {
    OptimOptions o = optim_defaults(kind);
    json_error_t err;
    json_t *j = json_loads(safetensors_meta(&c->ref, tag), 0, &err);
    assert_non_null(j);
    o.lr = (float)jnum(j, "lr", o.lr);
    o.weight_decay = (float)jnum(j, "weight_decay", o.weight_decay);
    o.momentum = (float)jnum(j, "momentum", o.momentum);
    o.eps = (float)jnum(j, "eps", o.eps);
    json_t *fn = json_object_get(j, "adjust_lr_fn");
    if (json_is_string(fn) && !strcmp(json_string_value(fn), "match_rms_adamw"))
        o.scale = MUON_SCALE_MATCH_RMS_ADAMW;
    json_decref(j);
    return o;
}

static void run_steps(Ctx *c, const char *tag, OptimOptions oo) {
    LoraModel lm;
    make_lora(c, &lm, NULL);
    LoraOptimizer opt;
    assert_int_equal(lora_optim_init(&opt, &lm, &oo), STATUS_OK);
    KdLossOptions ko = kd_opts(c);
    int steps = atoi(safetensors_meta(&c->ref, "steps"));
    char name[64];
    snprintf(name, sizeof name, "%s_losses", tag);
    const SafeTensor *ls = safetensors_find(&c->ref, name);
    assert_non_null(ls);
    const double *ref = ls->data;
    double worst_loss = 0;
    for (int s = 0; s < steps; s++) {
        KdLoss l;
        lora_zero_grad(&lm);
        assert_int_equal(llama_train_step(&c->lt, &lm, c->ids, c->targets, c->tlogits, &ko, &l),
                         STATUS_OK);
        double d = fabs(l.loss - ref[s]);
        worst_loss = fmax(worst_loss, d);
        if (!(d <= 1e-4)) fail_msg("%s step %d: loss %.8f ref %.8f", tag, s, l.loss, ref[s]);
        assert_int_equal(lora_optim_step(&opt, &lm, oo.lr), STATUS_OK);
    }
    snprintf(name, sizeof name, "%s.", tag);
    double worst = check_lora(c, &lm, false, name, 1e-4);
    printf("  %s: %d steps, loss %.6f -> %.6f, worst |dloss| %.2e, worst weight rel %.2e\n", tag,
           steps, ref[0], ref[steps - 1], worst_loss, worst);
    lora_optim_release(&opt);
    lora_release(&lm);
}

static void test_adamw_10_steps(void **state) {
    Ctx *c = *state;
    run_steps(c, "adamw", opts_from_meta(c, "adamw", OPTIM_ADAMW));
}

static void test_muon_10_steps(void **state) {
    Ctx *c = *state;
    run_steps(c, "muon", opts_from_meta(c, "muon", OPTIM_MUON));
}

static void test_muon_b_only_10_steps(void **state) {
    Ctx *c = *state;
    OptimOptions o = opts_from_meta(c, "muonb", OPTIM_MUON);
    o.lora_mode = MUON_LORA_B_ONLY;
    // the AdamW half of the hybrid run uses torch.optim.AdamW's default betas/eps
    o.beta1 = 0.9f;
    o.beta2 = 0.999f;
    o.eps = 1e-8f;
    run_steps(c, "muonb", o);
}

static void test_peft_save_load(void **state) {
    Ctx *c = *state;
    LoraModel lm, back;
    make_lora(c, &lm, "brand.");
    char dir[] = "/tmp/ef_lora_XXXXXX";
    assert_non_null(mkdtemp(dir));
    assert_int_equal(lora_save_peft(&lm, dir, "tiny_student"), STATUS_OK);
    assert_int_equal(lora_load_peft(&back, &c->student.m.cfg, dir), STATUS_OK);
    assert_int_equal(back.n_params, lm.n_params);
    assert_true(fabsf(back.scaling - lm.scaling) == 0.0f);
    assert_memory_equal(back.params, lm.params, sizeof(float) * lm.n_params);
    // the saved names are PEFT's: every fixture key must exist in the written file
    char path[600], key[256];
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    SafeTensors st;
    assert_int_equal(safetensors_open(&st, path), STATUS_OK);
    for (int l = 0; l < lm.n_layers; l++)
        for (int m = 0; m < LORA_MODULE_COUNT; m++) {
            peft_key(key, sizeof key, "", l, (LoraModule)m, 'A');
            assert_non_null(safetensors_find(&st, key));
            peft_key(key, sizeof key, "", l, (LoraModule)m, 'B');
            assert_non_null(safetensors_find(&st, key));
        }
    safetensors_close(&st);
    // a missing tensor is reported by name
    LoraModel bad;
    SafeWriter w;
    safewriter_init(&w);
    int64_t shp[2] = {1, 1};
    float one = 1;
    safewriter_add(&w, "nothing", ST_F32, 2, shp, &one);
    assert_int_equal(safewriter_write(&w, path), STATUS_OK);
    safewriter_release(&w);
    assert_int_equal(lora_load_peft(&bad, &c->student.m.cfg, dir), STATUS_ERR_FORMAT);
    assert_non_null(strstr(status_msg(), "lora_A"));
    unlink(path);
    // PEFT features that would change the merge are refused by name, before any tensor is
    // read; their empty / default values (as PEFT writes them) pass to the tensors
    char cfg[600];
    snprintf(cfg, sizeof cfg, "%s/adapter_config.json", dir);
    const char *refused[][2] = {
        {"{\"r\": 4, \"lora_alpha\": 8, \"use_dora\": true}", "use_dora"},
        {"{\"r\": 4, \"lora_alpha\": 8, \"layers_to_transform\": [0]}", "layers_to_transform"},
        {"{\"r\": 4, \"lora_alpha\": 8, \"alpha_pattern\": {\"q_proj\": 16}}", "alpha_pattern"},
        {"{\"r\": 4, \"lora_alpha\": 8, \"bias\": \"all\"}", "bias"},
        {"{\"r\": 4, \"lora_alpha\": 8, \"modules_to_save\": [\"lm_head\"]}", "modules_to_save"},
        {"{\"r\": 4, \"lora_alpha\": 8, \"use_dora\": false, \"alpha_pattern\": {}, "
         "\"rank_pattern\": {}, \"bias\": \"none\", \"layers_to_transform\": null}",
         NULL},
    };
    for (size_t i = 0; i < ARRAY_LEN(refused); i++) {
        assert_int_equal(file_write_all(cfg, refused[i][0], strlen(refused[i][0])), STATUS_OK);
        Status s = lora_load_peft(&bad, &c->student.m.cfg, dir);
        if (refused[i][1]) {
            assert_int_equal(s, STATUS_ERR_UNSUPPORTED);
            assert_non_null(strstr(status_msg(), refused[i][1]));
        } else { // accepted config: the (removed) weights file is what fails
            assert_int_equal(s, STATUS_ERR_IO);
        }
    }
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    unlink(path);
    rmdir(dir);
    lora_release(&lm);
    lora_release(&back);
}

// lora_merge_model: W' = W + scaling B A, and the merged model without adapters gives the
// logits of the base model with adapters.
static void test_merge(void **state) {
    Ctx *c = *state;
    LoraModel lm;
    make_lora(c, &lm, "brand.");
    KdLossOptions o = kd_opts(c);
    KdLoss l1, l2;
    lora_zero_grad(&lm);
    assert_int_equal(llama_train_step(&c->lt, &lm, c->ids, c->targets, c->tlogits, &o, &l1),
                     STATUS_OK);
    int64_t nl = (int64_t)c->B * c->T * c->student.m.cfg.vocab_size;
    float *with = xmalloc(sizeof(float) * nl);
    memcpy(with, c->lt.logits, sizeof(float) * nl);
    FixModel merged;
    fix_model_load(&merged, FIX_DIR "/tiny_student");
    assert_int_equal(lora_merge_model(&lm, &merged.m), STATUS_OK);
    // one weight checked element by element in double
    const LoraAdapter *ad = lora_get(&lm, 1, LORA_DOWN);
    const float *w0 = c->student.m.layers[1].w_down.data, *w1 = merged.m.layers[1].w_down.data;
    assert_int_equal(merged.m.layers[1].w_down.dtype, DTYPE_F32);
    double md = 0;
    for (int o2 = 0; o2 < ad->out; o2++)
        for (int i = 0; i < ad->in; i++) {
            double d = 0;
            for (int k = 0; k < ad->rank; k++)
                d += (double)ad->b[o2 * ad->rank + k] * ad->a[k * ad->in + i];
            md = fmax(md, fabs(w1[o2 * ad->in + i] - (w0[o2 * ad->in + i] + lm.scaling * d)));
        }
    assert_true(md < 1e-6);
    LlamaTrain lt;
    assert_int_equal(llama_train_init(&lt, &merged.m, c->B, c->T, 0), STATUS_OK);
    assert_int_equal(llama_train_forward(&lt, NULL, c->ids), STATUS_OK);
    assert_close_f32("merged logits", lt.logits, with, nl, 1e-4, 1e-4);
    l2 = kd_loss_forward(lt.logits, c->tlogits, c->targets, (int64_t)c->B * c->T,
                         c->student.m.cfg.vocab_size, &o);
    assert_true(fabs(l2.loss - l1.loss) < 1e-5);
    // an adapter for another shape is refused before anything changes
    LoraModel other;
    Rng rng;
    rng_seed(&rng, 2);
    LoraConfig lc = lora_config_defaults();
    assert_int_equal(lora_init(&other, &c->teacher.m.cfg, &lc, &rng), STATUS_OK);
    assert_int_equal(lora_merge_model(&other, &merged.m), STATUS_ERR_ARG);
    lora_release(&other);
    llama_train_release(&lt);
    fix_model_release(&merged);
    free(with);
    lora_release(&lm);
}

// The project's HF loader (model_load) reads the fixture into the same model.
static void test_model_load_hf_agrees(void **state) {
    Ctx *c = *state;
    Model m;
    ModelLoadOptions lo = {.no_tokenizer = true};
    if (model_load(&m, FIX_DIR "/tiny_student", &lo) != STATUS_OK)
        fail_msg("model_load: %s", status_msg());
    const LlamaConfig *a = &m.cfg, *b = &c->student.m.cfg;
    assert_int_equal(a->dim, b->dim);
    assert_int_equal(a->n_layers, b->n_layers);
    assert_int_equal(a->n_kv_heads, b->n_kv_heads);
    assert_int_equal(a->rope_scaling, b->rope_scaling);
    assert_true(a->rope_factor == b->rope_factor && a->rope_orig_max_pos == b->rope_orig_max_pos);
    LlamaTrain lt;
    assert_int_equal(llama_train_init(&lt, &m, c->B, c->T, 0), STATUS_OK);
    assert_int_equal(llama_train_forward(&lt, NULL, c->ids), STATUS_OK);
    LlamaTrain lt2;
    assert_int_equal(llama_train_init(&lt2, &c->student.m, c->B, c->T, 0), STATUS_OK);
    assert_int_equal(llama_train_forward(&lt2, NULL, c->ids), STATUS_OK);
    assert_memory_equal(lt.logits, lt2.logits, sizeof(float) * c->B * c->T * a->vocab_size);
    llama_train_release(&lt);
    llama_train_release(&lt2);
    model_release(&m);
}

static void test_lora_init_bound(void **state) {
    Ctx *c = *state;
    // PyTorch's kaiming_uniform_(a=sqrt(5)) bound is 1/sqrt(in); the fixture's A lies inside it
    char key[256];
    for (int m = 0; m < LORA_MODULE_COUNT; m++) {
        int in, out;
        lora_module_shape(&c->student.m.cfg, (LoraModule)m, &in, &out);
        double bound = lora_kaiming_bound(in);
        assert_true(fabs(bound - 1.0 / sqrt(in)) < 1e-12);
        peft_key(key, sizeof key, "init.", 0, (LoraModule)m, 'A');
        int64_t n;
        float *a = fixture_f32(&c->ref, key, &n);
        float mx = 0;
        for (int64_t i = 0; i < n; i++)
            mx = fmaxf(mx, fabsf(a[i]));
        assert_true(mx <= bound && mx > 0.8 * bound);
        free(a);
    }
    // ours: same bound, B = 0
    LoraModel lm;
    LoraConfig lc = lora_config_defaults();
    Rng rng;
    rng_seed(&rng, 5);
    assert_int_equal(lora_init(&lm, &c->student.m.cfg, &lc, &rng), STATUS_OK);
    LoraAdapter *ad = lora_get(&lm, 1, LORA_DOWN);
    float mx = 0;
    for (int64_t i = 0; i < (int64_t)ad->rank * ad->in; i++)
        mx = fmaxf(mx, fabsf(ad->a[i]));
    assert_true(mx <= lora_kaiming_bound(ad->in) && mx > 0.9 * lora_kaiming_bound(ad->in));
    for (int64_t i = 0; i < (int64_t)ad->rank * ad->out; i++)
        assert_true(ad->b[i] == 0.0f);
    assert_true(lm.scaling == 1.0f);
    lora_release(&lm);
}

// PEFT's target_modules="all-linear" adapter of the 2-layer student
// (tools/gen_peft_all_linear.py): 14 linears, so PEFT writes their full paths, which must
// load as every module of every layer; our merge equals PEFT's merge_and_unload.
static void test_peft_all_linear(void **state) {
    Ctx *c = *state;
    LoraModel lm;
    if (lora_load_peft(&lm, &c->student.m.cfg, FIX_DIR "/peft_all_linear") != STATUS_OK)
        fail_msg("%s", status_msg());
    assert_int_equal(lm.cfg.targets, LORA_ALL_MODULES);
    assert_int_equal(lm.cfg.rank, 2);
    assert_true(lm.scaling == 2.0f); // lora_alpha 4 / r 2
    FixModel merged;
    fix_model_load(&merged, FIX_DIR "/tiny_student");
    assert_int_equal(lora_merge_model(&lm, &merged.m), STATUS_OK);
    SafeTensors ref;
    assert_int_equal(safetensors_open(&ref, FIX_DIR "/peft_all_linear_merged.safetensors"),
                     STATUS_OK);
    char key[128];
    for (int l = 0; l < merged.m.cfg.n_layers; l++)
        for (int m = 0; m < LORA_MODULE_COUNT; m++) {
            snprintf(key, sizeof key, "model.layers.%d.%s.%s.weight", l,
                     lora_module_parent((LoraModule)m), lora_module_name((LoraModule)m));
            int64_t n;
            float *want = fixture_f32(&ref, key, &n);
            const Tensor *got = lora_model_weight(&merged.m.layers[l], (LoraModule)m);
            assert_int_equal(tensor_numel(got), n);
            assert_close_f32(key, got->data, want, n, 1e-6, 0);
            free(want);
        }
    safetensors_close(&ref);
    fix_model_release(&merged);
    lora_release(&lm);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_teacher_logits),        cmocka_unit_test(test_lora_init_bound),
        cmocka_unit_test(test_loss_grads_peft_init),  cmocka_unit_test(test_loss_grads_random_b),
        cmocka_unit_test(test_loss_grads_logit_rows), cmocka_unit_test(test_adamw_10_steps),
        cmocka_unit_test(test_muon_10_steps),         cmocka_unit_test(test_muon_b_only_10_steps),
        cmocka_unit_test(test_peft_save_load),        cmocka_unit_test(test_merge),
        cmocka_unit_test(test_peft_all_linear),       cmocka_unit_test(test_model_load_hf_agrees),
    };
    return cmocka_run_group_tests_name("train_parity", tests, setup, teardown);
}
