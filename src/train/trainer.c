/*
 * trainer.c - the distillation training loop, checkpoints and resume (see trainer.h).
 */
#include "train/trainer.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/common.h"
#include "core/fileio.h"
#include "core/log.h"
#include "core/rng.h"
#include "model/safetensors.h"
#include "train/llama_train.h"

TrainerOptions trainer_options_defaults(void) {
    TrainerOptions o = {0};
    o.lora = lora_config_defaults();
    o.optim = optim_defaults(OPTIM_ADAMW);
    o.optim.lr = 1e-4f;
    o.kd.temperature = 1.0f;
    o.kd.alpha = 1.0f; // the paper's HPO picked alpha = 1 in 14 of 16 runs
    o.schedule = SCHEDULE_COSINE;
    o.batch = 4;
    o.seq_len = 512;
    o.grad_accum = 1;
    o.epochs = 1;
    o.max_grad_norm = 1.0;
    o.group_mult = 50;
    return o;
}

/* ---- Batches ------------------------------------------------------------------------ */

int64_t trainer_fill_batch(int32_t *ids, int32_t *targets, const TrainSet *ts, const int *idx,
                           int nb, int B, int T) {
    int64_t tokens = 0;
    for (int b = 0; b < B; b++) {
        int32_t *row = ids + (int64_t)b * T, *tg = targets + (int64_t)b * T;
        const TrainExample *ex = b < nb ? &ts->ex[idx[b]] : NULL;
        int len = ex ? MIN(ex->len, T) : 0;
        for (int t = 0; t < T; t++) {
            row[t] = t < len ? ex->ids[t] : 0;
            // the logits at t predict token t+1: a target when t+1 is a response token
            tg[t] = (t + 1 < len && ex->mask[t + 1]) ? ex->ids[t + 1] : TRAIN_IGNORE_INDEX;
        }
        tokens += len;
    }
    return tokens;
}

/* ---- Evaluation --------------------------------------------------------------------- */

// Restricts lt's logits to the rows with a target and moves those targets to the front of
// targets (in place, in order). Returns their number.
static int64_t logit_rows_from_targets(LlamaTrain *lt, int32_t *targets) {
    const int64_t m = llama_train_set_logit_rows(lt, targets);
    for (int64_t i = 0; i < m; i++)
        targets[i] = targets[lt->logit_rows[i]];
    return m;
}

static Status eval_with(LlamaTrain *lt, const LoraModel *lora, const TrainSet *ts, const int *idx,
                        int n, int32_t *ids, int32_t *targets, double *ce, int64_t *tokens) {
    int B = lt->B, T = lt->T, V = lt->cfg.vocab_size;
    double sum = 0;
    int64_t cnt = 0;
    bool drop = lt->dropout_on;
    lt->dropout_on = false; // evaluation runs without dropout
    KdLossOptions o = {.temperature = 1.0f, .alpha = 0.0f};
    for (int i = 0; i < n; i += B) {
        int nb = MIN(B, n - i);
        trainer_fill_batch(ids, targets, ts, idx + i, nb, B, T);
        const int64_t m = logit_rows_from_targets(lt, targets);
        Status s = llama_train_forward(lt, lora, ids);
        if (s != STATUS_OK) {
            lt->dropout_on = drop;
            return s;
        }
        KdLoss l = kd_loss_forward(lt->logits, NULL, targets, m, V, &o);
        sum += l.ce * l.n_valid;
        cnt += l.n_valid;
    }
    lt->dropout_on = drop;
    *ce = cnt ? sum / cnt : NAN;
    if (tokens) *tokens = cnt;
    return STATUS_OK;
}

Status trainer_eval_ce(const Model *student, const LoraModel *lora, const TrainSet *ts,
                       const int *idx, int n, int B, int T, double *ce, int64_t *tokens) {
    LlamaTrain lt;
    Status s = llama_train_init_ex(&lt, student, B, T, lora ? lora->cfg.rank : 0,
                                   LLAMA_RECOMPUTE_LAYERS); // forward only: one layer's activations
    if (s != STATUS_OK) return s;
    int32_t *ids = xmalloc(sizeof(int32_t) * B * T), *tg = xmalloc(sizeof(int32_t) * B * T);
    s = eval_with(&lt, lora, ts, idx, n, ids, tg, ce, tokens);
    free(ids);
    free(tg);
    llama_train_release(&lt);
    return s;
}

/* ---- Checkpoints -------------------------------------------------------------------- */

static const char *const ckpt_files[] = {"adapter_config.json", "adapter_model.safetensors",
                                         "trainer_state.safetensors"};

// Removes a checkpoint directory written by ckpt_save (only the files it writes).
static void ckpt_remove(const char *dir) {
    for (size_t i = 0; i < ARRAY_LEN(ckpt_files); i++) {
        char *p = path_join(dir, ckpt_files[i]);
        unlink(p);
        free(p);
    }
    rmdir(dir);
}

static Status ckpt_save(const char *out_dir, const LoraModel *lm, const LoraOptimizer *opt,
                        int64_t step, const TrainerOptions *o) {
    char *tmp = path_join(out_dir, "checkpoint.tmp"), *fin = path_join(out_dir, "checkpoint");
    char *old = path_join(out_dir, "checkpoint.old");
    ckpt_remove(tmp);
    Status s = lora_save_peft(lm, tmp, o->base_model);
    if (s == STATUS_OK) {
        SafeWriter w;
        safewriter_init(&w);
        int64_t n = opt->n;
        safewriter_add(&w, "opt_m", ST_F32, 1, &n, opt->m);
        safewriter_add(&w, "opt_v", ST_F32, 1, &n, opt->v);
        char buf[64];
        snprintf(buf, sizeof buf, "%" PRId64, step);
        safewriter_meta(&w, "step", buf);
        snprintf(buf, sizeof buf, "%" PRId64, opt->t);
        safewriter_meta(&w, "opt_t", buf);
        snprintf(buf, sizeof buf, "%" PRIu64, o->seed);
        safewriter_meta(&w, "seed", buf);
        safewriter_meta(&w, "optimizer", optim_kind_name(opt->opt.kind));
        char *st = path_join(tmp, "trainer_state.safetensors");
        s = safewriter_write(&w, st);
        free(st);
        safewriter_release(&w);
    }
    if (s == STATUS_OK) {
        // swap: the previous checkpoint survives until the new one is in place
        ckpt_remove(old);
        if (path_is_dir(fin) && rename(fin, old) != 0)
            s = fail(STATUS_ERR_IO, "cannot rename '%s': %s", fin, strerror(errno));
        else if (rename(tmp, fin) != 0)
            s = fail(STATUS_ERR_IO, "cannot rename '%s': %s", tmp, strerror(errno));
        else
            ckpt_remove(old);
    }
    free(tmp);
    free(fin);
    free(old);
    return s;
}

static Status ckpt_load(const char *dir, const LlamaConfig *cfg, LoraModel *lm, LoraOptimizer *opt,
                        int64_t *step) {
    LoraModel saved;
    Status s = lora_load_peft(&saved, cfg, dir);
    if (s != STATUS_OK) return fail_context(s, "resume");
    if (saved.n_params != lm->n_params || saved.cfg.rank != lm->cfg.rank ||
        saved.cfg.targets != lm->cfg.targets || saved.scaling != lm->scaling) {
        lora_release(&saved);
        return fail(STATUS_ERR_ARG, "checkpoint '%s' has another LoRA configuration than this run",
                    dir);
    }
    memcpy(lm->params, saved.params, sizeof(float) * lm->n_params);
    lora_release(&saved);
    char *path = path_join(dir, "trainer_state.safetensors");
    SafeTensors st;
    s = safetensors_open(&st, path);
    if (s == STATUS_OK) {
        const SafeTensor *m = safetensors_find(&st, "opt_m"), *v = safetensors_find(&st, "opt_v");
        const char *sstep = safetensors_meta(&st, "step"), *st_t = safetensors_meta(&st, "opt_t");
        const char *kind = safetensors_meta(&st, "optimizer");
        if (!m || !v || !sstep || !st_t || !kind || m->dtype != ST_F32 || v->dtype != ST_F32 ||
            m->nbytes != sizeof(float) * (uint64_t)opt->n || v->nbytes != m->nbytes)
            s = fail(STATUS_ERR_FORMAT, "'%s' lacks or mis-sizes opt_m/opt_v/step", path);
        else if (strcmp(kind, optim_kind_name(opt->opt.kind)) != 0)
            s = fail(STATUS_ERR_ARG, "checkpoint '%s' was written by %s, this run uses %s", path,
                     kind, optim_kind_name(opt->opt.kind));
        else {
            memcpy(opt->m, m->data, m->nbytes);
            memcpy(opt->v, v->data, v->nbytes);
            *step = strtoll(sstep, NULL, 10);
            opt->t = strtoll(st_t, NULL, 10);
        }
        safetensors_close(&st);
    }
    free(path);
    return s;
}

/* ---- The loop ----------------------------------------------------------------------- */

typedef struct {
    const TrainSet *ts;
    const DataSplit *sp;
    int B, group_mult;
    uint64_t seed;
    int *order, *starts;
    int n_batches;
    int64_t epoch; // epoch whose order is loaded (-1: none)
} BatchSource;

// Examples of global micro-batch g (epoch = g / n_batches): *idx, *nb.
static void batch_get(BatchSource *bs, int64_t g, const int **idx, int *nb) {
    int64_t epoch = g / bs->n_batches;
    int b = (int)(g % bs->n_batches);
    if (epoch != bs->epoch) {
        data_length_grouped_batches(bs->ts, bs->sp->train, bs->sp->n_train, bs->B, bs->group_mult,
                                    bs->seed + (uint64_t)epoch, bs->order, bs->starts);
        bs->epoch = epoch;
    }
    *idx = bs->order + bs->starts[b];
    *nb = bs->starts[b + 1] - bs->starts[b];
}

Status trainer_resolve_vocab(const Model *st, const Model *te, const TrainerOptions *o, int *kv) {
    int vs = st->cfg.vocab_size, vt = te->cfg.vocab_size;
    int ns = st->tok ? tokenizer_vocab_size(st->tok) : 0,
        nt = te->tok ? tokenizer_vocab_size(te->tok) : 0;
    if (st->tok && te->tok) {
        if (ns != nt)
            return fail(
                STATUS_ERR_ARG,
                "student tokenizer has %d tokens, the teacher's %d: KD needs the same tokenizer",
                ns, nt);
        // compare the bytes each token stands for: the same vocabulary stored as SPM
        // pieces ("\u2581t") and as HF byte-level strings (" t") must agree
        for (int i = 0; i < ns; i++) {
            size_t la = 0, lb = 0;
            const char *a = tokenizer_token_bytes(st->tok, i, &la);
            const char *b = tokenizer_token_bytes(te->tok, i, &lb);
            if ((a == NULL) != (b == NULL) || la != lb || (a && memcmp(a, b, la) != 0))
                return fail(STATUS_ERR_ARG,
                            "student and teacher tokenizers differ at id %d ('%s' vs '%s')", i,
                            tokenizer_token_str(st->tok, i), tokenizer_token_str(te->tok, i));
        }
    }
    int shared =
        o->shared_vocab > 0 ? o->shared_vocab : (vs == vt ? vs : (ns && ns == nt ? ns : 0));
    if (shared <= 0 || shared > vs || shared > vt)
        return fail(STATUS_ERR_ARG,
                    "teacher vocabulary (%d) differs from the student's (%d) and no shared "
                    "vocabulary fits both: "
                    "KD needs the same tokenizer",
                    vt, vs);
    *kv = shared;
    return STATUS_OK;
}

static Status check_options(const Model *student, const Model *teacher, const TrainSet *ts,
                            const DataSplit *sp, const TrainerOptions *o) {
    if (o->batch < 1 || o->seq_len < 2 || o->grad_accum < 1 || o->group_mult < 1 ||
        (o->epochs < 1 && o->max_steps <= 0))
        return fail(STATUS_ERR_ARG,
                    "bad trainer options: batch %d, seq_len %d, grad_accum %d, epochs %d", o->batch,
                    o->seq_len, o->grad_accum, o->epochs);
    if (!(o->kd.temperature > 0) || !(o->kd.alpha >= 0 && o->kd.alpha <= 1))
        return fail(STATUS_ERR_ARG, "bad KD options: temperature %g, alpha %g",
                    (double)o->kd.temperature, (double)o->kd.alpha);
    if (sp->n_train < 1) return fail(STATUS_ERR_ARG, "the training split is empty");
    if (teacher && o->teacher_cache)
        return fail(STATUS_ERR_ARG, "give either a teacher or a teacher cache, not both");
    if (o->teacher_cache) {
        Status s = teacher_cache_check(o->teacher_cache, ts, o->seq_len, student->cfg.vocab_size);
        if (s != STATUS_OK) return s;
    }
    return STATUS_OK;
}

static void log_step(FILE *f, const TrainerProgress *p) {
    if (!f) return;
    fprintf(f,
            "{\"step\":%" PRId64 ",\"loss\":%.9g,\"kl\":%.9g,\"ce\":%.9g,\"lr\":%.9g,"
            "\"grad_norm\":%.9g,\"tokens\":%" PRId64 ",\"tok_per_s\":%.6g}\n",
            p->step, p->loss, p->kl, p->ce, p->lr, p->grad_norm, p->tokens, p->tok_per_s);
    fflush(f);
}

static void log_eval(FILE *f, int64_t step, double ce, int64_t tokens) {
    if (!f) return;
    fprintf(f, "{\"step\":%" PRId64 ",\"val_ce\":%.9g,\"val_tokens\":%" PRId64 "}\n", step, ce,
            tokens);
    fflush(f);
}

typedef struct {
    LlamaTrain st, te;
    LoraOptimizer opt;
    BatchSource bs;
    int32_t *ids, *targets;
    int kd_vocab;   // columns the KL runs over
    int32_t *c_ids; // (B*T, K) teacher-cache rows of the micro-batch
    float *c_logp;
    FILE *log;
} Run;

static void run_release(Run *r) {
    llama_train_release(&r->st);
    llama_train_release(&r->te);
    lora_optim_release(&r->opt);
    free(r->bs.order);
    free(r->bs.starts);
    free(r->ids);
    free(r->targets);
    free(r->c_ids);
    free(r->c_logp);
    if (r->log) fclose(r->log);
}

// One optimizer step: grad_accum micro-batches, clipping, schedule, update.
static Status train_step(Run *r, const Model *teacher, LoraModel *lora, const TrainerOptions *o,
                         int64_t step, int64_t total, TrainerProgress *p) {
    int B = o->batch, T = o->seq_len, V = r->st.cfg.vocab_size;
    lora_zero_grad(lora);
    double loss = 0, kl = 0, ce = 0;
    p->tokens = 0;
    for (int a = 0; a < o->grad_accum; a++) {
        const int *idx;
        int nb;
        batch_get(&r->bs, step * o->grad_accum + a, &idx, &nb);
        p->tokens += trainer_fill_batch(r->ids, r->targets, r->bs.ts, idx, nb, B, T);
        // logits only where a loss reads them (prompt and padding rows have no target)
        if (teacher) llama_train_set_logit_rows(&r->te, r->targets); // the same rows
        const int64_t M = logit_rows_from_targets(&r->st, r->targets);
        const float *tl = NULL;
        Status s;
        if (teacher) {
            if ((s = llama_train_forward(&r->te, NULL, r->ids)) != STATUS_OK) return s;
            tl = r->te.logits;
        }
        KdLossOptions ko = o->kd;
        if (teacher) {
            ko.kd_vocab = r->kd_vocab;
            ko.teacher_vocab = teacher->cfg.vocab_size;
        }
        const TeacherCache *tc = o->teacher_cache;
        if (!teacher && !tc) ko.alpha = 0; // no teacher: plain CE
        // dropout masks follow from (seed, micro-batch index) alone: resumable
        r->st.dropout_seed =
            o->seed * 0x9E3779B97F4A7C15ull + (uint64_t)(step * o->grad_accum + a) + 1;
        if ((s = llama_train_forward(&r->st, lora, r->ids)) != STATUS_OK) return s;
        KdLoss l;
        KdSparseTeacher sp = {0};
        if (tc) {
            teacher_cache_fill(r->c_ids, r->c_logp, tc, r->bs.ts, idx, nb, B, T);
            for (int64_t i = 0; i < M; i++) { // the cache rows of the logits rows, to the front
                const int64_t n = r->st.logit_rows[i], K = tc->K;
                memmove(r->c_ids + i * K, r->c_ids + n * K, (size_t)K * sizeof *r->c_ids);
                memmove(r->c_logp + i * K, r->c_logp + n * K, (size_t)K * sizeof *r->c_logp);
            }
            sp = (KdSparseTeacher){
                .ids = r->c_ids, .logp = r->c_logp, .K = tc->K, .t_gen = tc->t_gen};
            l = kd_sparse_loss_forward_backward(r->st.dlogits, r->st.logits, &sp, r->targets, M, V,
                                                &ko, 1.0f / (float)o->grad_accum);
        } else { // (both) the loss and its gradient in one pass over the logits
            l = kd_loss_forward_backward(r->st.dlogits, r->st.logits, tl, r->targets, M, V, &ko,
                                         1.0f / (float)o->grad_accum);
        }
        if (!isfinite(l.loss))
            return fail(STATUS_ERR_NUMERIC, "loss is %g at step %" PRId64 " (KL %g, CE %g)", l.loss,
                        step, l.kl, l.ce);
        llama_train_backward(&r->st, lora);
        loss += l.loss / o->grad_accum;
        kl += l.kl / o->grad_accum;
        ce += l.ce / o->grad_accum;
    }
    double gn = grad_clip_global(lora->grads, lora->n_params, o->max_grad_norm);
    if (!isfinite(gn))
        return fail(STATUS_ERR_NUMERIC, "gradient norm is %g at step %" PRId64, gn, step);
    Schedule sc = {.kind = o->schedule,
                   .warmup_steps = o->warmup_steps,
                   .total_steps = total,
                   .min_lr_ratio = o->min_lr_ratio};
    float lr = schedule_lr(&sc, o->optim.lr, step);
    Status s = lora_optim_step(&r->opt, lora, lr);
    if (s != STATUS_OK) return s;
    p->loss = loss;
    p->kl = kl;
    p->ce = ce;
    p->lr = lr;
    p->grad_norm = gn;
    return STATUS_OK;
}

Status trainer_run(const Model *student, const Model *teacher, const TrainSet *ts,
                   const DataSplit *sp, const TrainerOptions *o, TrainerCallback cb, void *ctx,
                   LoraModel *lora, TrainerResult *res) {
    memset(lora, 0, sizeof *lora);
    memset(res, 0, sizeof *res);
    Status s = check_options(student, teacher, ts, sp, o);
    if (s != STATUS_OK) return s;
    Run r;
    memset(&r, 0, sizeof r);
    int B = o->batch, T = o->seq_len;
    Rng rng;
    rng_seed(&rng, o->seed);
    if ((s = lora_init(lora, &student->cfg, &o->lora, &rng)) != STATUS_OK) return s;
    if ((s = llama_train_init_ex(&r.st, student, B, T, o->lora.rank, o->recompute)) != STATUS_OK)
        goto out;
    if (o->lora.dropout > 0 &&
        (s = llama_train_enable_dropout(&r.st, o->lora.dropout)) != STATUS_OK)
        goto out;
    if (teacher && (s = trainer_resolve_vocab(student, teacher, o, &r.kd_vocab)) != STATUS_OK)
        goto out;
    // the teacher only runs forward: one layer's activations are enough
    if (teacher &&
        (s = llama_train_init_ex(&r.te, teacher, B, T, 0, LLAMA_RECOMPUTE_LAYERS)) != STATUS_OK)
        goto out;
    if ((s = lora_optim_init(&r.opt, lora, &o->optim)) != STATUS_OK) goto out;
    r.ids = xmalloc(sizeof(int32_t) * B * T);
    r.targets = xmalloc(sizeof(int32_t) * B * T);
    if (o->teacher_cache) {
        r.c_ids = xmalloc(sizeof(int32_t) * B * T * o->teacher_cache->K);
        r.c_logp = xmalloc(sizeof(float) * B * T * o->teacher_cache->K);
    }
    r.bs = (BatchSource){
        .ts = ts, .sp = sp, .B = B, .group_mult = o->group_mult, .seed = o->seed, .epoch = -1};
    r.bs.n_batches = (sp->n_train + B - 1) / B;
    r.bs.order = xmalloc(sizeof(int) * sp->n_train);
    r.bs.starts = xmalloc(sizeof(int) * (r.bs.n_batches + 1));
    int64_t per_epoch = (r.bs.n_batches + o->grad_accum - 1) / o->grad_accum;
    int64_t total = o->max_steps > 0 ? o->max_steps : o->epochs * per_epoch;
    int64_t step = 0;
    if (o->out_dir) {
        if ((s = dir_create(o->out_dir)) != STATUS_OK) goto out;
        char *ck = path_join(o->out_dir, "checkpoint");
        if (o->resume && path_is_dir(ck)) {
            s = ckpt_load(ck, &student->cfg, lora, &r.opt, &step);
            if (s == STATUS_OK) log_info("resuming from '%s' at step %" PRId64, ck, step);
        }
        free(ck);
        if (s != STATUS_OK) goto out;
        char *lp = path_join(o->out_dir, "train_log.jsonl");
        r.log = fopen(lp, step > 0 ? "a" : "w");
        if (!r.log) s = fail(STATUS_ERR_IO, "cannot open '%s': %s", lp, strerror(errno));
        free(lp);
        if (s != STATUS_OK) goto out;
    }
    double t0 = time_now();
    int64_t tokens_run = 0;
    TrainerProgress p = {.total_steps = total, .val_ce = NAN};
    for (; step < total; step++) {
        if ((s = train_step(&r, teacher, lora, o, step, total, &p)) != STATUS_OK) goto out;
        tokens_run += p.tokens;
        p.step = step + 1;
        p.tok_per_s = tokens_run / fmax(time_now() - t0, 1e-9);
        p.val_ce = NAN;
        log_step(r.log, &p);
        if (cb) cb(&p, ctx);
        res->final_loss = p.loss;
        bool last = step + 1 == total;
        if (sp->n_val > 0 && ((o->eval_every > 0 && (step + 1) % o->eval_every == 0) || last)) {
            int64_t vt;
            s = eval_with(&r.st, lora, ts, sp->val, sp->n_val, r.ids, r.targets, &p.val_ce, &vt);
            if (s != STATUS_OK) goto out;
            log_eval(r.log, step + 1, p.val_ce, vt);
            if (cb) cb(&p, ctx);
            res->final_val_ce = p.val_ce;
        }
        if (o->out_dir && o->ckpt_every > 0 && (step + 1) % o->ckpt_every == 0 &&
            (s = ckpt_save(o->out_dir, lora, &r.opt, step + 1, o)) != STATUS_OK)
            goto out;
        if (o->stop_after > 0 && step + 1 >= o->stop_after) {
            step++;
            break;
        }
    }
    res->steps = step;
    res->seconds = time_now() - t0;
    if (o->out_dir && step == total) {
        char *ad = path_join(o->out_dir, "adapter");
        s = lora_save_peft(lora, ad, o->base_model);
        free(ad);
    }
out:
    run_release(&r);
    if (s != STATUS_OK) lora_release(lora);
    return s;
}
