/*
 * test_model_io.c - model files in and out: the llama2.c loader (legacy, version 1 and
 * version 2 files), Hugging Face directories (single file, sharded, Llama and Qwen2,
 * F32/F16/BF16), the HF writer, bad input, and the `convert`/`info` subcommands.
 *
 * References (tools/gen_hf_fixtures.py, transformers + numpy):
 *   tests/fixtures/hf/tiny_{llama,qwen2,llama_sharded}/ made by save_pretrained, with
 *   *_ref.safetensors holding every tensor as transformers loaded it back (float32);
 *   tests/fixtures/hf/llama2c/stories260K_qk_hf.safetensors: stories260K's q/k rows in HF
 *   order by transformers' conversion permutation; tiny_{legacy,v1,v2}.bin written with
 *   llama2.c export.py's layouts and tiny_ref.safetensors their weights in HF order
 *   (v2.* = Q8_0 dequantized).
 */
#include "core/common.h"
#include "core/dtype.h"
#include "core/fileio.h"
#include "model/llama.h"
#include "model/model_io.h"
#include "model/tokenizer.h"
#include "testutil.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define STORIES "models/stories260K/stories260K.bin"

/* ---- helpers ------------------------------------------------------------------ */

// Visits every weight of a model with its HF name (biases only when present).
typedef void (*TensorVisit)(const char *name, const Tensor *t, void *ctx);

static void for_each_tensor(const Model *m, TensorVisit fn, void *ctx) {
    char name[128];
    fn("model.embed_tokens.weight", &m->tok_emb, ctx);
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const LlamaLayer *ly = &m->layers[l];
        const struct {
            const char *s;
            const Tensor *t;
        } tab[] = {
            {"input_layernorm.weight", &ly->attn_norm},
            {"self_attn.q_proj.weight", &ly->wq},
            {"self_attn.k_proj.weight", &ly->wk},
            {"self_attn.v_proj.weight", &ly->wv},
            {"self_attn.o_proj.weight", &ly->wo},
            {"post_attention_layernorm.weight", &ly->ffn_norm},
            {"mlp.gate_proj.weight", &ly->w_gate},
            {"mlp.up_proj.weight", &ly->w_up},
            {"mlp.down_proj.weight", &ly->w_down},
            {"self_attn.q_proj.bias", &ly->bq},
            {"self_attn.k_proj.bias", &ly->bk},
            {"self_attn.v_proj.bias", &ly->bv},
        };
        for (size_t i = 0; i < ARRAY_LEN(tab); i++) {
            if (!tab[i].t->data) continue;
            snprintf(name, sizeof name, "model.layers.%d.%s", l, tab[i].s);
            fn(name, tab[i].t, ctx);
        }
    }
    fn("model.norm.weight", &m->final_norm, ctx);
    fn("lm_head.weight", &m->lm_head, ctx);
}

static float *tensor_f32(const Tensor *t) {
    int64_t n = tensor_numel(t);
    float *x = xmalloc((size_t)n * sizeof *x);
    dtype_to_f32(x, t->data, t->dtype, n);
    return x;
}

typedef struct {
    const SafeTensors *ref;
    const char *prefix; // "" or "v2."
    int checked;
} RefCheck;

// Every tensor equals the reference bit for bit (after widening to f32, which is exact).
static void check_against_ref(const char *name, const Tensor *t, void *ctx) {
    RefCheck *rc = ctx;
    char full[160];
    snprintf(full, sizeof full, "%s%s", rc->prefix, name);
    const SafeTensor *r = safetensors_find(rc->ref, full);
    if (!r && *rc->prefix && strstr(name, "norm"))
        r = safetensors_find(rc->ref, name);         // v2: fp32 norms
    if (!r && strcmp(name, "lm_head.weight") == 0) { // tied: the reference stores it anyway
        snprintf(full, sizeof full, "%smodel.embed_tokens.weight", rc->prefix);
        r = safetensors_find(rc->ref, full);
    }
    if (!r) fail_msg("reference has no '%s'", full);
    int64_t n = tensor_numel(t);
    if ((int64_t)(r->nbytes / 4) != n)
        fail_msg("'%s': %lld elements, reference %lld", name, (long long)n,
                 (long long)(r->nbytes / 4));
    for (int d = 0; d < t->ndim; d++)
        assert_int_equal(t->shape[d], r->shape[d]);
    float *x = tensor_f32(t);
    if (memcmp(x, r->data, (size_t)n * 4) != 0) {
        const float *rf = r->data;
        int64_t i = 0;
        while (f32_bits(x[i]) == f32_bits(rf[i]))
            i++;
        fail_msg("'%s' differs from the reference at %lld: %.9g vs %.9g", name, (long long)i,
                 (double)x[i], (double)rf[i]);
    }
    free(x);
    rc->checked++;
}

typedef struct {
    const Model *other;
    int checked;
} SameCheck;

static const Tensor *find_tensor(const Model *m, const char *name);

static void check_same_bits(const char *name, const Tensor *t, void *ctx) {
    SameCheck *sc = ctx;
    const Tensor *o = find_tensor(sc->other, name);
    if (!o) fail_msg("'%s' missing in the second model", name);
    assert_int_equal(t->dtype, o->dtype);
    assert_int_equal(t->ndim, o->ndim);
    for (int d = 0; d < t->ndim; d++)
        assert_int_equal(t->shape[d], o->shape[d]);
    if (memcmp(t->data, o->data, (size_t)tensor_numel(t) * dtype_size(t->dtype)) != 0)
        fail_msg("'%s' is not bit-identical", name);
    sc->checked++;
}

typedef struct {
    const char *want;
    const Tensor *found;
} FindCtx;

static void find_visit(const char *name, const Tensor *t, void *ctx) {
    FindCtx *f = ctx;
    if (strcmp(name, f->want) == 0) f->found = t;
}

static const Tensor *find_tensor(const Model *m, const char *name) {
    FindCtx f = {name, NULL};
    for_each_tensor(m, find_visit, &f);
    return f.found;
}

static void assert_same_config(const LlamaConfig *a, const LlamaConfig *b) {
    assert_int_equal(a->dim, b->dim);
    assert_int_equal(a->hidden_dim, b->hidden_dim);
    assert_int_equal(a->n_layers, b->n_layers);
    assert_int_equal(a->n_heads, b->n_heads);
    assert_int_equal(a->n_kv_heads, b->n_kv_heads);
    assert_int_equal(a->head_dim, b->head_dim);
    assert_int_equal(a->vocab_size, b->vocab_size);
    assert_int_equal(a->max_seq_len, b->max_seq_len);
    assert_int_equal(f32_bits(a->rope_theta), f32_bits(b->rope_theta));
    assert_int_equal(f32_bits(a->norm_eps), f32_bits(b->norm_eps));
    assert_int_equal(a->tied_embeddings, b->tied_embeddings);
    assert_int_equal(a->qkv_bias, b->qkv_bias);
    assert_int_equal(a->rope_scaling, b->rope_scaling);
    assert_int_equal(f32_bits(a->rope_factor), f32_bits(b->rope_factor));
    assert_int_equal(f32_bits(a->rope_low_freq_factor), f32_bits(b->rope_low_freq_factor));
    assert_int_equal(f32_bits(a->rope_high_freq_factor), f32_bits(b->rope_high_freq_factor));
    assert_int_equal(a->rope_orig_max_pos, b->rope_orig_max_pos);
    assert_int_equal(a->bos_id, b->bos_id);
    assert_int_equal(a->eos_id, b->eos_id);
}

// A fresh temporary directory (removed by rm_tree).
static char *tmp_dir(void) {
    char *d = xstrdup("/tmp/ef_model_io_XXXXXX");
    if (!mkdtemp(d)) fail_msg("mkdtemp failed");
    return d;
}

static void rm_tree(const char *path) {
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
            char *p = path_join(path, e->d_name);
            rm_tree(p);
            free(p);
        }
        closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

static void copy_file(const char *src, const char *dst, size_t max_bytes) {
    char *buf;
    size_t n;
    if (file_read_all(src, &buf, &n) != STATUS_OK) fail_msg("%s", status_msg());
    if (file_write_all(dst, buf, MIN(n, max_bytes)) != STATUS_OK) fail_msg("%s", status_msg());
    free(buf);
}

static void write_text(const char *dir, const char *name, const char *text) {
    char *p = path_join(dir, name);
    if (file_write_all(p, text, strlen(text)) != STATUS_OK) fail_msg("%s", status_msg());
    free(p);
}

static void copy_into(const char *src_dir, const char *dst_dir, const char *name) {
    char *s = path_join(src_dir, name), *d = path_join(dst_dir, name);
    copy_file(s, d, (size_t)-1);
    free(s);
    free(d);
}

static int path_exists(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0;
}

/* ---- llama2.c ----------------------------------------------------------------- */

static void test_stories260K_config(void **state) {
    (void)state;
    Model m;
    if (model_load_llama2c(&m, STORIES) != STATUS_OK) fail_msg("%s", status_msg());
    const LlamaConfig *c = &m.cfg;
    assert_string_equal(c->arch, "llama");
    assert_int_equal(c->dim, 64);
    assert_int_equal(c->hidden_dim, 172);
    assert_int_equal(c->n_layers, 5);
    assert_int_equal(c->n_heads, 8);
    assert_int_equal(c->n_kv_heads, 4);
    assert_int_equal(c->head_dim, 8);
    assert_int_equal(c->vocab_size, 512);
    assert_int_equal(c->max_seq_len, 512);
    assert_true(c->tied_embeddings);
    assert_false(c->qkv_bias);
    assert_ptr_equal(m.lm_head.data, m.tok_emb.data);
    assert_int_equal(m.layers[4].wk.shape[0], 32);
    assert_int_equal(m.layers[4].w_down.shape[1], 172);
    // 512*64 + 5*(64 + 64*64 + 2*32*64 + 64*64 + 64 + 3*172*64) + 64
    assert_int_equal(model_param_count(&m),
                     512 * 64 + 5 * (64 + 4096 + 4096 + 4096 + 64 + 3 * 172 * 64) + 64);
    model_release(&m);
}

static void test_stories260K_qk_hf_order(void **state) {
    (void)state;
    Model m;
    if (model_load_llama2c(&m, STORIES) != STATUS_OK) fail_msg("%s", status_msg());
    SafeTensors ref;
    fixture_open(&ref, "hf/llama2c/stories260K_qk_hf.safetensors");
    RefCheck rc = {&ref, "", 0};
    const int layers[] = {0, 4};
    char name[128];
    for (size_t i = 0; i < ARRAY_LEN(layers); i++) {
        const LlamaLayer *ly = &m.layers[layers[i]];
        snprintf(name, sizeof name, "model.layers.%d.self_attn.q_proj.weight", layers[i]);
        check_against_ref(name, &ly->wq, &rc);
        snprintf(name, sizeof name, "model.layers.%d.self_attn.k_proj.weight", layers[i]);
        check_against_ref(name, &ly->wk, &rc);
        snprintf(name, sizeof name, "model.layers.%d.self_attn.v_proj.weight", layers[i]);
        check_against_ref(name, &ly->wv, &rc);
    }
    assert_int_equal(rc.checked, 6);
    // the permutation really moved rows: row 1 of head 0 (HF order) is interleaved row 2
    const float *q = m.layers[0].wq.data;
    const float *raw = (const float *)(m.files[0].data + 28) + 512 * 64 + 5 * 64; // wq[0]
    assert_memory_equal(q + 1 * 64, raw + 2 * 64, 64 * sizeof(float));
    assert_memory_not_equal(q + 1 * 64, raw + 1 * 64, 64 * sizeof(float));
    safetensors_close(&ref);
    model_release(&m);
}

static void test_llama2c_versions(void **state) {
    (void)state;
    SafeTensors ref;
    fixture_open(&ref, "hf/llama2c/tiny_ref.safetensors");
    Model legacy, v1, v2, tied;
    if (model_load_llama2c(&legacy, fixture_path("hf/llama2c/tiny_legacy.bin")) != STATUS_OK)
        fail_msg("%s", status_msg());
    if (model_load_llama2c(&v1, fixture_path("hf/llama2c/tiny_v1.bin")) != STATUS_OK)
        fail_msg("%s", status_msg());
    if (model_load_llama2c(&v2, fixture_path("hf/llama2c/tiny_v2.bin")) != STATUS_OK)
        fail_msg("%s", status_msg());
    if (model_load_llama2c(&tied, fixture_path("hf/llama2c/tiny_tied_legacy.bin")) != STATUS_OK)
        fail_msg("%s", status_msg());
    const Model *all[] = {&legacy, &v1, &v2, &tied};
    for (size_t i = 0; i < ARRAY_LEN(all); i++) {
        const LlamaConfig *c = &all[i]->cfg;
        assert_int_equal(c->dim, 32);
        assert_int_equal(c->hidden_dim, 48);
        assert_int_equal(c->n_layers, 2);
        assert_int_equal(c->n_heads, 4);
        assert_int_equal(c->n_kv_heads, 2);
        assert_int_equal(c->vocab_size, 40);
        assert_int_equal(c->max_seq_len, 16);
        assert_int_equal(c->tied_embeddings, all[i] == &tied);
    }
    RefCheck rc = {&ref, "", 0};
    for_each_tensor(&legacy, check_against_ref, &rc);
    assert_int_equal(rc.checked, 1 + 2 * 9 + 2);
    SameCheck sc = {&legacy, 0};
    for_each_tensor(&v1, check_same_bits, &sc); // version 1 == legacy, bit for bit
    assert_int_equal(sc.checked, 21);
    // version 2: matrices are int8 * scale as llama2.c computes them; norms stay fp32
    RefCheck rq = {&ref, "v2.", 0};
    for_each_tensor(&v2, check_against_ref, &rq);
    for (int l = 0; l < 2; l++) {
        assert_memory_equal(v2.layers[l].attn_norm.data, legacy.layers[l].attn_norm.data, 32 * 4);
        assert_memory_equal(v2.layers[l].ffn_norm.data, legacy.layers[l].ffn_norm.data, 32 * 4);
    }
    // Q8_0 error is at most half a step: |w| <= 127 * scale, so error <= max|w| / 254
    float *a = tensor_f32(&v2.layers[1].w_down), *b = tensor_f32(&legacy.layers[1].w_down);
    assert_close_f32("v2 w_down vs legacy", a, b, 32 * 48, 0.01, 0.0);
    free(a);
    free(b);
    // tied file: lm_head shares the embedding, same weights otherwise
    assert_ptr_equal(tied.lm_head.data, tied.tok_emb.data);
    assert_memory_equal(tied.layers[1].wq.data, legacy.layers[1].wq.data, 32 * 32 * 4);
    model_release(&legacy);
    model_release(&v1);
    model_release(&v2);
    model_release(&tied);
    safetensors_close(&ref);
}

static void test_llama2c_truncated(void **state) {
    (void)state;
    char *dir = tmp_dir();
    char *p = path_join(dir, "cut.bin");
    Model m;
    const size_t cuts[] = {10, 28, 1000, 1056540 - 4};
    for (size_t i = 0; i < ARRAY_LEN(cuts); i++) {
        copy_file(STORIES, p, cuts[i]);
        Status s = model_load_llama2c(&m, p);
        assert_int_not_equal(s, STATUS_OK);
        assert_non_null(strstr(status_msg(), p));
    }
    const char *versions[] = {"hf/llama2c/tiny_v1.bin", "hf/llama2c/tiny_v2.bin"};
    for (size_t i = 0; i < ARRAY_LEN(versions); i++) {
        copy_file(fixture_path(versions[i]), p, 300);
        assert_int_not_equal(model_load_llama2c(&m, p), STATUS_OK);
        assert_non_null(strstr(status_msg(), p));
    }
    free(p);
    rm_tree(dir);
    free(dir);
}

/* ---- Hugging Face: reading ---------------------------------------------------- */

static void check_hf_against_ref(const char *dir, const char *ref_name, Model *m) {
    if (model_load_hf(m, fixture_path(dir)) != STATUS_OK) fail_msg("%s", status_msg());
    SafeTensors ref;
    fixture_open(&ref, ref_name);
    RefCheck rc = {&ref, "", 0};
    for_each_tensor(m, check_against_ref, &rc);
    safetensors_close(&ref);
}

// Weights are views into the mapped files, not copies.
static int points_into_files(const Model *m, const void *p) {
    for (int i = 0; i < m->n_files; i++)
        if ((const unsigned char *)p >= m->files[i].data &&
            (const unsigned char *)p < m->files[i].data + m->files[i].size)
            return 1;
    return 0;
}

static void test_hf_llama(void **state) {
    (void)state;
    Model m;
    check_hf_against_ref("hf/tiny_llama", "hf/tiny_llama_ref.safetensors", &m);
    const LlamaConfig *c = &m.cfg;
    assert_string_equal(c->arch, "llama");
    assert_int_equal(c->dim, 32);
    assert_int_equal(c->hidden_dim, 48);
    assert_int_equal(c->n_layers, 2);
    assert_int_equal(c->n_heads, 4);
    assert_int_equal(c->n_kv_heads, 2);
    assert_int_equal(c->head_dim, 8);
    assert_int_equal(c->vocab_size, 64);
    assert_int_equal(c->max_seq_len, 256);
    assert_int_equal(f32_bits(c->rope_theta), f32_bits(500000.0f));
    assert_int_equal(f32_bits(c->norm_eps), f32_bits(1e-5f));
    assert_int_equal(c->rope_scaling, ROPE_SCALING_LLAMA3);
    assert_true(c->rope_factor == 8.0f && c->rope_low_freq_factor == 1.0f &&
                c->rope_high_freq_factor == 4.0f);
    assert_int_equal(c->rope_orig_max_pos, 64);
    assert_false(c->tied_embeddings);
    assert_false(c->qkv_bias);
    assert_int_equal(c->bos_id, 1);
    assert_int_equal(c->eos_id, 2); // generation_config.json [2, 3]: the first
    assert_int_equal(m.tok_emb.dtype, DTYPE_F32);
    assert_true(m.lm_head.data != m.tok_emb.data);
    assert_int_equal(m.n_files, 1);
    assert_true(points_into_files(&m, m.layers[1].w_down.data));
    assert_true(points_into_files(&m, m.lm_head.data));
    model_release(&m);
    // the config.json path works as well as the directory
    if (model_load_hf(&m, fixture_path("hf/tiny_llama/config.json")) != STATUS_OK)
        fail_msg("%s", status_msg());
    model_release(&m);
}

static void test_hf_qwen2_bf16(void **state) {
    (void)state;
    Model m;
    check_hf_against_ref("hf/tiny_qwen2", "hf/tiny_qwen2_ref.safetensors", &m);
    const LlamaConfig *c = &m.cfg;
    assert_string_equal(c->arch, "qwen2");
    assert_true(c->qkv_bias);
    assert_true(c->tied_embeddings);
    assert_int_equal(c->head_dim, 8);
    assert_int_equal(f32_bits(c->rope_theta), f32_bits(1000000.0f));
    assert_int_equal(f32_bits(c->norm_eps), f32_bits(1e-6f));
    assert_int_equal(c->rope_scaling, ROPE_SCALING_NONE);
    assert_int_equal(c->bos_id, -1);
    assert_int_equal(c->eos_id, 5);
    assert_int_equal(m.tok_emb.dtype, DTYPE_BF16);
    assert_int_equal(m.layers[0].bq.dtype, DTYPE_BF16);
    assert_int_equal(m.layers[1].bk.shape[0], 16);
    assert_ptr_equal(m.lm_head.data, m.tok_emb.data);
    assert_true(points_into_files(&m, m.layers[1].bv.data));
    model_release(&m);
}

static void test_hf_sharded_f16(void **state) {
    (void)state;
    Model m;
    check_hf_against_ref("hf/tiny_llama_sharded", "hf/tiny_llama_sharded_ref.safetensors", &m);
    assert_int_equal(m.n_files, 2); // each shard mapped once
    assert_int_equal(m.tok_emb.dtype, DTYPE_F16);
    assert_false(m.cfg.tied_embeddings);
    assert_true(points_into_files(&m, m.lm_head.data));
    assert_true(points_into_files(&m, m.layers[0].wq.data));
    model_release(&m);
}

/* ---- Hugging Face: writing ---------------------------------------------------- */

static void save_load_same(const char *fixture, DType dt) {
    Model a, b;
    if (model_load_hf(&a, fixture_path(fixture)) != STATUS_OK) fail_msg("%s", status_msg());
    char *dir = tmp_dir();
    char *out = path_join(dir, "out");
    if (model_save_hf(&a, out, dt) != STATUS_OK) fail_msg("%s", status_msg());
    if (model_load_hf(&b, out) != STATUS_OK) fail_msg("%s", status_msg());
    assert_same_config(&a.cfg, &b.cfg);
    SameCheck sc = {&b, 0};
    for_each_tensor(&a, check_same_bits, &sc);
    assert_true(sc.checked > 20);
    model_release(&a);
    model_release(&b);
    free(out);
    rm_tree(dir);
    free(dir);
}

static void test_hf_save_load_identical(void **state) {
    (void)state;
    save_load_same("hf/tiny_llama", DTYPE_F32);
    save_load_same("hf/tiny_qwen2", DTYPE_BF16);
    save_load_same("hf/tiny_llama_sharded", DTYPE_F16);
}

static void test_hf_save_converts_dtype(void **state) {
    (void)state;
    Model a, b;
    if (model_load_hf(&a, fixture_path("hf/tiny_llama")) != STATUS_OK) fail_msg("%s", status_msg());
    char *dir = tmp_dir();
    char *out = path_join(dir, "bf16");
    if (model_save_hf(&a, out, DTYPE_BF16) != STATUS_OK) fail_msg("%s", status_msg());
    if (model_load_hf(&b, out) != STATUS_OK) fail_msg("%s", status_msg());
    assert_int_equal(b.layers[1].w_up.dtype, DTYPE_BF16);
    const float *src = a.layers[1].w_up.data;
    const uint16_t *got = b.layers[1].w_up.data;
    for (int64_t i = 0; i < tensor_numel(&a.layers[1].w_up); i++)
        assert_int_equal(got[i], f32_to_bf16(src[i]));
    // the written config says so
    char *cfg_path = path_join(out, "config.json"), *text;
    size_t n;
    assert_int_equal(file_read_all(cfg_path, &text, &n), STATUS_OK);
    assert_non_null(strstr(text, "\"torch_dtype\": \"bfloat16\""));
    assert_non_null(strstr(text, "\"LlamaForCausalLM\""));
    assert_true(strstr(text, "\"rms_norm_eps\": 1e-05") || strstr(text, "\"rms_norm_eps\": 1e-5"));
    free(text);
    free(cfg_path);
    model_release(&a);
    model_release(&b);
    free(out);
    rm_tree(dir);
    free(dir);
}

static void test_llama2c_to_hf_bit_identical(void **state) {
    (void)state;
    Model a, b;
    if (model_load_llama2c(&a, STORIES) != STATUS_OK) fail_msg("%s", status_msg());
    char *dir = tmp_dir();
    char *out = path_join(dir, "stories-hf");
    if (model_save_hf(&a, out, DTYPE_F32) != STATUS_OK) fail_msg("%s", status_msg());
    if (model_load_hf(&b, out) != STATUS_OK) fail_msg("%s", status_msg());
    SameCheck sc = {&b, 0};
    for_each_tensor(&a, check_same_bits, &sc); // q/k in HF order on both sides
    assert_int_equal(sc.checked, 1 + 5 * 9 + 2);
    assert_true(b.cfg.tied_embeddings);
    assert_int_equal(b.cfg.bos_id, 1);
    assert_int_equal(b.cfg.eos_id, 2);
    // and the q/k rows are those of the transformers-permuted fixture
    SafeTensors ref;
    fixture_open(&ref, "hf/llama2c/stories260K_qk_hf.safetensors");
    RefCheck rc = {&ref, "", 0};
    check_against_ref("model.layers.4.self_attn.q_proj.weight", &b.layers[4].wq, &rc);
    check_against_ref("model.layers.4.self_attn.k_proj.weight", &b.layers[4].wk, &rc);
    safetensors_close(&ref);
    // tied: no lm_head in the file
    char *st = path_join(out, "model.safetensors");
    SafeTensors f;
    assert_int_equal(safetensors_open(&f, st), STATUS_OK);
    assert_null(safetensors_find(&f, "lm_head.weight"));
    assert_string_equal(safetensors_meta(&f, "format"), "pt");
    safetensors_close(&f);
    free(st);
    // an existing non-empty directory is not overwritten
    assert_int_not_equal(model_save_hf(&a, out, DTYPE_F32), STATUS_OK);
    assert_non_null(strstr(status_msg(), "already exists"));
    model_release(&a);
    model_release(&b);
    free(out);
    rm_tree(dir);
    free(dir);
}

// model_load (with the tokenizer next to the checkpoint) -> HF -> model_load again:
// the tokenizer travels along (tokenizer_save_hf) and the weights stay bit-identical.
static void test_llama2c_to_hf_with_tokenizer(void **state) {
    (void)state;
    Model a, b;
    if (model_load(&a, STORIES, NULL) != STATUS_OK) fail_msg("%s", status_msg());
    assert_non_null(a.tok);
    char *dir = tmp_dir();
    char *out = path_join(dir, "hf");
    if (model_save(&a, out, MODEL_FORMAT_HF, DTYPE_F32) != STATUS_OK) fail_msg("%s", status_msg());
    char *cfg = path_join(out, "config.json");
    if (model_load(&b, cfg, NULL) != STATUS_OK) fail_msg("%s", status_msg()); // via config.json
    assert_non_null(b.tok);
    assert_int_equal(tokenizer_vocab_size(b.tok), 512);
    assert_int_equal(tokenizer_bos_id(b.tok), 1);
    assert_int_equal(tokenizer_eos_id(b.tok), 2);
    SameCheck sc = {&b, 0};
    for_each_tensor(&a, check_same_bits, &sc);
    assert_int_equal(sc.checked, 1 + 5 * 9 + 2);
    model_release(&a);
    model_release(&b);
    free(cfg);
    free(out);
    rm_tree(dir);
    free(dir);
}

// A save that cannot complete leaves nothing behind (and never a half-written dir).
static void test_hf_save_failure_leaves_nothing(void **state) {
    (void)state;
    Model a;
    if (model_load_hf(&a, fixture_path("hf/tiny_qwen2")) != STATUS_OK) fail_msg("%s", status_msg());
    char *dir = tmp_dir();
    char *file = path_join(dir, "file");
    write_text(dir, "file", "x");
    char *out = path_join(file, "out"); // parent is a regular file
    assert_int_not_equal(model_save_hf(&a, out, DTYPE_F16), STATUS_OK);
    assert_false(path_exists(out));
    // an existing non-empty directory is left as it was
    char *keep = path_join(dir, "keep");
    assert_int_equal(dir_create(keep), STATUS_OK);
    write_text(keep, "mine.txt", "hello");
    assert_int_not_equal(model_save_hf(&a, keep, DTYPE_F16), STATUS_OK);
    char *mine = path_join(keep, "mine.txt"), *cfg = path_join(keep, "config.json");
    assert_true(path_is_file(mine));
    assert_false(path_exists(cfg));
    // an existing empty directory is replaced by the output
    char *empty = path_join(dir, "empty");
    assert_int_equal(dir_create(empty), STATUS_OK);
    if (model_save_hf(&a, empty, DTYPE_BF16) != STATUS_OK) fail_msg("%s", status_msg());
    // a trailing slash names the same directory
    char *slashed = xmalloc(strlen(dir) + 16);
    sprintf(slashed, "%s/slashed/", dir);
    if (model_save_hf(&a, slashed, DTYPE_F32) != STATUS_OK) fail_msg("%s", status_msg());
    Model b;
    if (model_load_hf(&b, slashed) != STATUS_OK) fail_msg("%s", status_msg());
    model_release(&b);
    free(slashed);
    // nothing else was created next to the outputs (no *.tmp.* leftovers)
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d)) != NULL) {
        if (strstr(e->d_name, ".tmp.")) fail_msg("leftover '%s'", e->d_name);
        n++;
    }
    closedir(d);
    assert_int_equal(n, 2 + 4); // ., .., file, keep, empty, slashed
    model_release(&a);
    free(mine);
    free(cfg);
    free(empty);
    free(keep);
    free(out);
    free(file);
    rm_tree(dir);
    free(dir);
}

/* ---- bad input ---------------------------------------------------------------- */

#define GOOD_CONFIG                                                                                \
    "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": 32,"  \
    " \"intermediate_size\": 48, \"num_hidden_layers\": 2, \"num_attention_heads\": 4,"            \
    " \"num_key_value_heads\": 2, \"head_dim\": 8, \"vocab_size\": 64,"                            \
    " \"max_position_embeddings\": 256, \"rms_norm_eps\": 1e-05, \"rope_theta\": 500000.0,"        \
    " \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0,"    \
    " \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 64},"                       \
    " \"tie_word_embeddings\": false %s}"

// Replaces `key` ... up to the next ',' in GOOD_CONFIG's text (crude but enough here).
static char *config_with(const char *extra, const char *drop) {
    char *s = xmalloc(4096);
    snprintf(s, 4096, GOOD_CONFIG, extra);
    if (drop) {
        char *p = strstr(s, drop);
        CHECK(p);
        char *e = strchr(p, ',');
        memmove(p, e + 1, strlen(e + 1) + 1);
    }
    return s;
}

// A directory with tiny_llama's weights and the given config.json; expects failure
// with `status` and a message containing each of the needles.
static void expect_bad_config(const char *config, Status status, const char *n1, const char *n2) {
    char *dir = tmp_dir();
    copy_into(fixture_path("hf/tiny_llama"), dir, "model.safetensors");
    write_text(dir, "config.json", config);
    Model m;
    Status s = model_load_hf(&m, dir);
    if (s == STATUS_OK) fail_msg("config accepted: %s", config);
    if (s != status)
        fail_msg("status %s, want %s: %s", status_str(s), status_str(status), status_msg());
    if (n1 && !strstr(status_msg(), n1)) fail_msg("message lacks '%s': %s", n1, status_msg());
    if (n2 && !strstr(status_msg(), n2)) fail_msg("message lacks '%s': %s", n2, status_msg());
    assert_int_equal(m.n_files, 0); // released
    rm_tree(dir);
    free(dir);
}

static void test_hf_bad_config(void **state) {
    (void)state;
    char *c;
    // the text itself is fine (sanity check of the helper, legacy 4.x keys)
    char *dir = tmp_dir();
    copy_into(fixture_path("hf/tiny_llama"), dir, "model.safetensors");
    c = config_with("", NULL);
    write_text(dir, "config.json", c);
    free(c);
    Model m;
    if (model_load_hf(&m, dir) != STATUS_OK) fail_msg("%s", status_msg());
    assert_int_equal(f32_bits(m.cfg.rope_theta), f32_bits(500000.0f));
    assert_int_equal(m.cfg.rope_scaling, ROPE_SCALING_LLAMA3);
    model_release(&m);
    rm_tree(dir);
    free(dir);

    c = config_with("", "\"hidden_size\"");
    expect_bad_config(c, STATUS_ERR_FORMAT, "hidden_size", "config.json");
    free(c);
    c = config_with("", "\"num_hidden_layers\"");
    expect_bad_config(c, STATUS_ERR_FORMAT, "num_hidden_layers", NULL);
    free(c);
    expect_bad_config("{\"architectures\": [\"GPT2LMHeadModel\"], \"hidden_size\": 32}",
                      STATUS_ERR_UNSUPPORTED, "GPT2LMHeadModel", "config.json");
    expect_bad_config("{\"model_type\": \"gemma\"}", STATUS_ERR_UNSUPPORTED, "gemma", NULL);
    expect_bad_config("{\"hidden_size\": 32}", STATUS_ERR_FORMAT, "architectures", NULL);
    expect_bad_config("{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 32,,}",
                      STATUS_ERR_FORMAT, "bad JSON", "config.json");
    expect_bad_config("[1, 2]", STATUS_ERR_FORMAT, "not a JSON object", NULL);
    expect_bad_config("", STATUS_ERR_FORMAT, "bad JSON", NULL);
    c = config_with(", \"hidden_size\": 33", "\"hidden_size\"");
    expect_bad_config(c, STATUS_ERR_FORMAT, "model.embed_tokens.weight", "shape");
    free(c);
    c = config_with(", \"intermediate_size\": 40", "\"intermediate_size\"");
    expect_bad_config(c, STATUS_ERR_FORMAT, "mlp.gate_proj.weight", "[48, 32]");
    free(c);
    c = config_with(", \"num_attention_heads\": \"4\"", "\"num_attention_heads\"");
    expect_bad_config(c, STATUS_ERR_FORMAT, "num_attention_heads", NULL);
    free(c);
    c = config_with(", \"mlp_bias\": true", NULL);
    expect_bad_config(c, STATUS_ERR_UNSUPPORTED, "mlp_bias", NULL);
    free(c);
    c = config_with(", \"attention_bias\": true", NULL);
    expect_bad_config(c, STATUS_ERR_UNSUPPORTED, "attention_bias", NULL);
    free(c);
    c = config_with(", \"hidden_act\": \"gelu\"", NULL);
    expect_bad_config(c, STATUS_ERR_UNSUPPORTED, "gelu", NULL);
    free(c);
    c = config_with(", \"quantization_config\": {\"quant_method\": \"gptq\"}", NULL);
    expect_bad_config(c, STATUS_ERR_UNSUPPORTED, "quantization_config", NULL);
    free(c);
    expect_bad_config("{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 32, "
                      "\"intermediate_size\": 48,"
                      " \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 64,"
                      " \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0}}",
                      STATUS_ERR_UNSUPPORTED, "yarn", NULL);
    expect_bad_config("{\"architectures\": [\"MistralForCausalLM\"], \"hidden_size\": 32, "
                      "\"intermediate_size\": 48,"
                      " \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 64,"
                      " \"max_position_embeddings\": 256, \"sliding_window\": 128}",
                      STATUS_ERR_UNSUPPORTED, "sliding_window", NULL);
    expect_bad_config("{\"architectures\": [\"Qwen2ForCausalLM\"], \"hidden_size\": 32, "
                      "\"intermediate_size\": 48,"
                      " \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 64,"
                      " \"use_sliding_window\": true, \"sliding_window\": 16}",
                      STATUS_ERR_UNSUPPORTED, "sliding_window", NULL);
    expect_bad_config("{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"qwen2\", "
                      "\"hidden_size\": 32}",
                      STATUS_ERR_FORMAT, "model_type", NULL);
    expect_bad_config("{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 32, "
                      "\"intermediate_size\": 48,"
                      " \"num_hidden_layers\": 2, \"num_attention_heads\": 3, \"vocab_size\": 64}",
                      STATUS_ERR_FORMAT, "n_heads", NULL);
    // Mistral without a (used) sliding window is a Llama: the tiny_llama weights load
    c = xstrdup("{\"architectures\": [\"MistralForCausalLM\"], \"hidden_size\": 32, "
                "\"intermediate_size\": 48,"
                " \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2,"
                " \"vocab_size\": 64, \"sliding_window\": null}");
    dir = tmp_dir();
    copy_into(fixture_path("hf/tiny_llama"), dir, "model.safetensors");
    write_text(dir, "config.json", c);
    if (model_load_hf(&m, dir) != STATUS_OK) fail_msg("%s", status_msg());
    assert_string_equal(m.cfg.arch, "mistral");
    assert_int_equal(f32_bits(m.cfg.norm_eps), f32_bits(1e-6f)); // transformers' default
    model_release(&m);
    rm_tree(dir);
    free(dir);
    free(c);
    // no config.json at all
    dir = tmp_dir();
    assert_int_not_equal(model_load_hf(&m, dir), STATUS_OK);
    assert_non_null(strstr(status_msg(), "config.json"));
    rm_tree(dir);
    free(dir);
}

// Writes tiny_llama's tensors (as the reference holds them) next to its config.json,
// without `skip`, with `extra` added, with `halve`'s first dimension halved and with
// `as_i32` stored as I32; expects a failure whose message contains n1 and n2.
typedef struct {
    const char *skip, *extra, *halve, *as_i32;
} BadTensors;

static void expect_bad_tensors(BadTensors b, const char *n1, const char *n2) {
    char *dir = tmp_dir();
    copy_into(fixture_path("hf/tiny_llama"), dir, "config.json");
    SafeTensors ref;
    fixture_open(&ref, "hf/tiny_llama_ref.safetensors");
    SafeWriter w;
    safewriter_init(&w);
    for (int i = 0; i < ref.n_tensors; i++) {
        const SafeTensor *t = &ref.tensors[i];
        if (strcmp(t->name, "logits") == 0 || strcmp(t->name, "ids") == 0) continue;
        if (b.skip && strcmp(t->name, b.skip) == 0) continue;
        int64_t shape[8];
        memcpy(shape, t->shape, sizeof shape);
        if (b.halve && strcmp(t->name, b.halve) == 0) shape[0] /= 2;
        SafeDType dt = b.as_i32 && strcmp(t->name, b.as_i32) == 0 ? ST_I32 : t->dtype;
        safewriter_add(&w, t->name, dt, t->ndim, shape, t->data);
    }
    if (b.extra) {
        const SafeTensor *t = safetensors_find(&ref, "model.norm.weight");
        safewriter_add(&w, b.extra, t->dtype, t->ndim, t->shape, t->data);
    }
    char *p = path_join(dir, "model.safetensors");
    assert_int_equal(safewriter_write(&w, p), STATUS_OK);
    safewriter_release(&w);
    safetensors_close(&ref);
    Model m;
    Status s = model_load_hf(&m, dir);
    if (!b.skip && !b.extra && !b.halve && !b.as_i32) { // the unchanged set loads
        if (s != STATUS_OK) fail_msg("%s", status_msg());
        model_release(&m);
    } else {
        assert_int_not_equal(s, STATUS_OK);
        if (n1 && !strstr(status_msg(), n1)) fail_msg("message lacks '%s': %s", n1, status_msg());
        if (n2 && !strstr(status_msg(), n2)) fail_msg("message lacks '%s': %s", n2, status_msg());
        assert_non_null(strstr(status_msg(), "model.safetensors"));
    }
    free(p);
    rm_tree(dir);
    free(dir);
}

static void test_hf_bad_tensors(void **state) {
    (void)state;
    expect_bad_tensors((BadTensors){0}, NULL, NULL);
    expect_bad_tensors((BadTensors){.skip = "model.layers.1.mlp.up_proj.weight"}, "missing",
                       "model.layers.1.mlp.up_proj.weight");
    expect_bad_tensors((BadTensors){.extra = "model.layers.0.self_attn.o_proj.bias"}, "unexpected",
                       "model.layers.0.self_attn.o_proj.bias");
    expect_bad_tensors((BadTensors){.halve = "model.layers.0.self_attn.k_proj.weight"},
                       "model.layers.0.self_attn.k_proj.weight", "[8, 32]");
    expect_bad_tensors((BadTensors){.as_i32 = "model.norm.weight"}, "model.norm.weight", "I32");
}

static void test_hf_bad_shards(void **state) {
    (void)state;
    const char *src = fixture_path("hf/tiny_llama_sharded");
    char *dir = tmp_dir();
    copy_into(src, dir, "config.json");
    copy_into(src, dir, "model-00001-of-00002.safetensors");
    copy_into(src, dir, "model-00002-of-00002.safetensors");
    char *ip = path_join(src, "model.safetensors.index.json"), *text;
    size_t n;
    assert_int_equal(file_read_all(ip, &text, &n), STATUS_OK);
    free(ip);
    // point the final norm at a shard that does not exist
    char *k = strstr(text, "\"model.norm.weight\": \"model-0000");
    assert_non_null(k);
    char *digit = strstr(k, "-of-") - 1, orig = *digit;
    *digit = '3';
    write_text(dir, "model.safetensors.index.json", text);
    Model m;
    assert_int_not_equal(model_load_hf(&m, dir), STATUS_OK);
    assert_non_null(strstr(status_msg(), "model-00003-of-00002.safetensors"));
    assert_non_null(strstr(status_msg(), "does not exist"));
    // a shard that exists but does not hold the tensor
    *digit = orig == '1' ? '2' : '1';
    write_text(dir, "model.safetensors.index.json", text);
    assert_int_not_equal(model_load_hf(&m, dir), STATUS_OK);
    assert_non_null(strstr(status_msg(), "model.norm.weight"));
    // an index pointing outside the directory
    char *bad = strstr(text, "\"model-0000");
    memcpy(bad + 1, "../x", 4);
    write_text(dir, "model.safetensors.index.json", text);
    assert_int_not_equal(model_load_hf(&m, dir), STATUS_OK);
    free(text);
    // a truncated shard names its file
    char *shard = path_join(dir, "model-00002-of-00002.safetensors");
    copy_file(shard, shard, 2000);
    copy_into(src, dir, "model.safetensors.index.json");
    assert_int_not_equal(model_load_hf(&m, dir), STATUS_OK);
    assert_non_null(strstr(status_msg(), "model-00002-of-00002.safetensors"));
    free(shard);
    rm_tree(dir);
    free(dir);
}

/* ---- CLI ---------------------------------------------------------------------- */

static void test_cli_convert_and_info(void **state) {
    (void)state;
    char *dir = tmp_dir();
    char args[1024], *out;
    // bad input: non-zero exit, nothing left behind
    char *cut = path_join(dir, "cut.bin");
    copy_file(STORIES, cut, 5000);
    snprintf(args, sizeof args, "convert %s %s/out --format hf --no-tokenizer", cut, dir);
    int rc = run_cli(args, &out);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(out, "cut.bin"));
    free(out);
    snprintf(args, sizeof args, "%s/out", dir);
    assert_false(path_exists(args));
    snprintf(args, sizeof args, "convert %s/missing %s/out --format hf", dir, dir);
    assert_int_not_equal(run_cli(args, NULL), 0);
    snprintf(args, sizeof args, "%s/out", dir);
    assert_false(path_exists(args));
    snprintf(args, sizeof args, "convert %s %s/out --format onnx", STORIES, dir);
    assert_int_equal(run_cli(args, NULL), 2);
    // a good conversion, then info on the result
    snprintf(args, sizeof args, "convert %s %s/out --format hf --dtype bf16 --no-tokenizer",
             STORIES, dir);
    rc = run_cli(args, &out);
    if (rc != 0) fail_msg("convert failed: %s", out);
    free(out);
    snprintf(args, sizeof args, "info %s/out --tensors", dir);
    rc = run_cli(args, &out);
    if (rc != 0) fail_msg("info failed: %s", out);
    assert_non_null(strstr(out, "architecture: llama"));
    assert_non_null(strstr(out, "model.layers.4.mlp.down_proj.weight"));
    assert_non_null(strstr(out, "bf16"));
    assert_non_null(strstr(out, "parameters: 260032"));
    free(out);
    snprintf(args, sizeof args, "info %s --json", STORIES);
    rc = run_cli(args, &out);
    if (rc != 0) fail_msg("info --json failed: %s", out);
    assert_non_null(strstr(out, "\"n_params\": 260032"));
    free(out);
    free(cut);
    rm_tree(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stories260K_config),
        cmocka_unit_test(test_stories260K_qk_hf_order),
        cmocka_unit_test(test_llama2c_versions),
        cmocka_unit_test(test_llama2c_truncated),
        cmocka_unit_test(test_hf_llama),
        cmocka_unit_test(test_hf_qwen2_bf16),
        cmocka_unit_test(test_hf_sharded_f16),
        cmocka_unit_test(test_hf_save_load_identical),
        cmocka_unit_test(test_hf_save_converts_dtype),
        cmocka_unit_test(test_llama2c_to_hf_bit_identical),
        cmocka_unit_test(test_llama2c_to_hf_with_tokenizer),
        cmocka_unit_test(test_hf_save_failure_leaves_nothing),
        cmocka_unit_test(test_hf_bad_config),
        cmocka_unit_test(test_hf_bad_tensors),
        cmocka_unit_test(test_hf_bad_shards),
        cmocka_unit_test(test_cli_convert_and_info),
    };
    return cmocka_run_group_tests_name("model_io", tests, NULL, NULL);
}
