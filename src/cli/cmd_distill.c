/*
 * cmd_distill.c - `edgeforge distill`: LoRA + logit knowledge distillation of a student
 * from a teacher with the same tokenizer (paper §3.1), AdamW or Muon.
 *
 *   edgeforge distill --student S --teacher T --data train.jsonl --out runs/a \
 *       --optimizer muon --rank 16 --scale 1.5 --lr 2e-4 --temperature 2 --alpha 1 \
 *       --weight-decay 0.01 --epochs 1 --batch 4 --seq-len 512 --seed 0
 *   edgeforge distill ... --resume          (continue from runs/a/checkpoint)
 *
 * Without --teacher (or --teacher-cache, sparse top-k KD) the loss is plain CE. Writes OUT/adapter
 * (PEFT), OUT/train_log.jsonl, OUT/checkpoint (with --save-every), and with --merge the merged
 * student as an HF directory OUT/merged. Prints a progress line per step on stderr and a
 * summary on stdout.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/common.h"
#include "core/fileio.h"
#include "core/log.h"
#include "model/llama.h"
#include "model/model_io.h"
#include "train/data.h"
#include "train/lora.h"
#include "train/trainer.h"

typedef struct {
    Progress pr;
} DistillCtx;

static void distill_progress(const TrainerProgress *p, void *vctx) {
    DistillCtx *c = vctx;
    char extra[160];
    if (!isnan(p->val_ce)) {
        log_info("step %" PRId64 ": validation CE %.4f", p->step, p->val_ce);
        return;
    }
    snprintf(extra, sizeof extra, "loss %.4f  KL %.4f  CE %.4f  lr %.3g  %.0f tok/s", p->loss,
             p->kl, p->ce, p->lr, p->tok_per_s);
    progress_update(&c->pr, p->step, extra);
}

static int parse_enum(const char *flag, const char *v, const char *const *names, int n, int *out) {
    for (int i = 0; i < n; i++)
        if (!strcmp(v, names[i])) {
            *out = i;
            return 0;
        }
    fprintf(stderr, "error: --%s: unknown value '%s'\n", flag, v);
    return -1;
}

int cmd_distill(int argc, char **argv) {
    const char *student_path = NULL, *teacher_path = NULL, *data_path = NULL, *out = NULL;
    const char *cache_path = NULL;
    const char *optimizer = "adamw", *muon_scale = "original", *muon_lora = "both";
    const char *schedule = "cosine", *targets = "all", *format = "alpaca", *recompute = "none";
    double scale = 1.0, lr = 1e-4, temperature = 1.0, alpha = 1.0, wd = 0.01, val_frac = 0.1;
    double max_grad_norm = 1.0, warmup_ratio = 0.0, dropout = 0.0;
    int rank = 8, epochs = 1, batch = 4, seq_len = 512, grad_accum = 1, shared_vocab = 0;
    int threads = 0;
    int64_t seed = 0, max_steps = 0, eval_every = 0, save_every = 0;
    bool resume = false, skip_bad = false, rslora = false, merge = false;
    ArgSpec spec[] = {
        {"student", 0, ARG_STRING, &student_path, "student model (HF dir, GGUF, llama2.c)", 0, 0},
        {"teacher", 0, ARG_STRING, &teacher_path,
         "teacher model with the same vocabulary (omit: CE only)", 0, 0},
        {"teacher-cache", 0, ARG_STRING, &cache_path,
         "top-k cache from teacher-cache (instead of --teacher)", 0, 0},
        {"shared-vocab", 0, ARG_INT, &shared_vocab,
         "KL over the first N logits (padded vocabularies; 0: auto)", 0, 1 << 24},
        {"data", 0, ARG_STRING, &data_path, "Alpaca JSONL (instruction, input, output)", 0, 0},
        {"out", 'o', ARG_STRING, &out, "output directory", 0, 0},
        {"optimizer", 0, ARG_STRING, &optimizer, "adamw | muon", 0, 0},
        {"rank", 'r', ARG_INT, &rank, "LoRA rank R", 1, 4096},
        {"scale", 0, ARG_FLOAT, &scale, "LoRA scaling a (lora_alpha = a*R)", 1e-6, 1e6},
        {"rslora", 0, ARG_FLAG, &rslora, "rsLoRA: lora_alpha = a*sqrt(R)", 0, 0},
        {"lora-dropout", 0, ARG_FLOAT, &dropout, "LoRA dropout p (PEFT lora_dropout)", 0, 0.99},
        {"targets", 0, ARG_STRING, &targets, "LoRA modules: all or q,k,v,o,gate,up,down", 0, 0},
        {"lr", 0, ARG_FLOAT, &lr, "peak learning rate", 0, 10},
        {"temperature", 0, ARG_FLOAT, &temperature, "KD temperature T", 1e-3, 1e3},
        {"alpha", 0, ARG_FLOAT, &alpha, "KD weight: alpha*KL + (1-alpha)*CE", 0, 1},
        {"weight-decay", 0, ARG_FLOAT, &wd, "decoupled weight decay", 0, 100},
        {"muon-scale", 0, ARG_STRING, &muon_scale, "original | match_rms_adamw", 0, 0},
        {"muon-lora", 0, ARG_STRING, &muon_lora, "both | b-only (AdamW for A)", 0, 0},
        {"schedule", 0, ARG_STRING, &schedule, "cosine | linear | constant", 0, 0},
        {"warmup-ratio", 0, ARG_FLOAT, &warmup_ratio, "warm-up steps as a fraction of all", 0, 1},
        {"max-grad-norm", 0, ARG_FLOAT, &max_grad_norm, "clip gradients (0: off)", 0, 1e9},
        {"epochs", 0, ARG_INT, &epochs, "epochs", 1, 1000},
        {"max-steps", 0, ARG_INT64, &max_steps, "stop after N optimizer steps (overrides epochs)",
         0, 1e12},
        {"batch", 'b', ARG_INT, &batch, "sequences per micro-batch", 1, 4096},
        {"grad-accum", 0, ARG_INT, &grad_accum, "micro-batches per step", 1, 4096},
        {"seq-len", 0, ARG_INT, &seq_len, "tokens per sequence", 2, 1 << 20},
        {"format", 0, ARG_STRING, &format, "prompt format: alpaca | chat", 0, 0},
        {"val-frac", 0, ARG_FLOAT, &val_frac, "validation fraction", 0, 0.9},
        {"eval-every", 0, ARG_INT64, &eval_every, "validation CE every N steps (0: at the end)", 0,
         1e12},
        {"save-every", 0, ARG_INT64, &save_every, "checkpoint every N steps (0: never)", 0, 1e12},
        {"recompute", 0, ARG_STRING, &recompute,
         "recompute in the backward for less memory: none | attention | layers", 0, 0},
        {"resume", 0, ARG_FLAG, &resume, "continue from OUT/checkpoint", 0, 0},
        {"skip-bad-lines", 0, ARG_FLAG, &skip_bad, "skip malformed JSONL lines (default: fatal)", 0,
         0},
        {"merge", 0, ARG_FLAG, &merge, "also write the merged student to OUT/merged", 0, 0},
        {"seed", 0, ARG_INT64, &seed, "seed (LoRA init, split, data order)", 0, 9e18},
        {"threads", 't', ARG_INT, &threads, "threads (default: all)", 0, 4096},
    };
    ArgParse ap = {.cmd = "distill",
                   .pos_usage = "",
                   .spec = spec,
                   .n_spec = (int)ARRAY_LEN(spec),
                   .min_pos = 0,
                   .max_pos = 0,
                   .summary = "LoRA + knowledge distillation of a student from a teacher"};
    int rc = args_parse(&ap, argc, argv);
    if (rc != 0) return rc > 0 ? 0 : 2;
    if (!student_path || !data_path || !out) {
        fprintf(stderr, "error: distill needs --student, --data and --out\n");
        return 2;
    }
    cli_set_threads(threads);
    TrainerOptions o = trainer_options_defaults();
    static const char *const opt_names[] = {"adamw", "muon"};
    static const char *const scale_names[] = {"original", "match_rms_adamw"};
    static const char *const lora_names[] = {"both", "b-only"};
    static const char *const fmt_names[] = {"alpaca", "chat"};
    static const char *const rec_names[] = {"none", "attention", "layers"};
    int kind, msc, mlo, fmt, rec;
    if (parse_enum("optimizer", optimizer, opt_names, 2, &kind) ||
        parse_enum("muon-scale", muon_scale, scale_names, 2, &msc) ||
        parse_enum("muon-lora", muon_lora, lora_names, 2, &mlo) ||
        parse_enum("format", format, fmt_names, 2, &fmt) ||
        parse_enum("recompute", recompute, rec_names, 3, &rec))
        return 2;
    if (schedule_parse(schedule, &o.schedule) != STATUS_OK) return cli_fail("--schedule");
    if (lora_parse_targets(targets, &o.lora.targets) != STATUS_OK) return cli_fail("--targets");
    o.optim = optim_defaults((OptimKind)kind);
    o.optim.lr = (float)lr;
    o.optim.weight_decay = (float)wd;
    o.optim.scale = (MuonScale)msc;
    o.optim.lora_mode = (MuonLoraMode)mlo;
    o.lora.rank = rank;
    o.lora.use_rslora = rslora;
    o.lora.dropout = (float)dropout;
    o.lora.lora_alpha = (float)(rslora ? scale * sqrt((double)rank) : scale * rank);
    o.kd.temperature = (float)temperature;
    o.kd.alpha = (float)alpha;
    o.epochs = epochs;
    o.max_steps = max_steps;
    o.batch = batch;
    o.grad_accum = grad_accum;
    o.seq_len = seq_len;
    o.max_grad_norm = max_grad_norm;
    o.eval_every = eval_every;
    o.ckpt_every = save_every;
    o.seed = (uint64_t)seed;
    o.resume = resume;
    o.out_dir = out;
    o.base_model = student_path;
    o.shared_vocab = shared_vocab;
    o.recompute = (LlamaRecompute)rec;

    Model student, teacher;
    model_init(&student);
    model_init(&teacher);
    AlpacaSet set = {0};
    TrainSet ts = {0};
    DataSplit sp = {0};
    LoraModel lora = {0};
    TeacherCache cache = {0};
    int ret = 1;
    if (model_load(&student, student_path, NULL) != STATUS_OK) {
        cli_fail(student_path);
        goto done;
    }
    if (teacher_path && model_load(&teacher, teacher_path, NULL) != STATUS_OK) {
        // without its tokenizer the token strings cannot be compared, only the sizes
        log_warn("%s: %s; loading it without a tokenizer", teacher_path, status_msg());
        ModelLoadOptions lo = {.no_tokenizer = true};
        if (model_load(&teacher, teacher_path, &lo) != STATUS_OK) {
            cli_fail(teacher_path);
            goto done;
        }
    }
    int kv;
    if (teacher_path && trainer_resolve_vocab(&student, &teacher, &o, &kv) != STATUS_OK) {
        cli_fail("distill");
        goto done;
    }
    // the reader's messages name the file and line; the builder's only the line
    if (alpaca_read_jsonl(&set, data_path, skip_bad) != STATUS_OK) {
        cli_fail(NULL);
        goto done;
    }
    if (trainset_build(&ts, &set, student.tok, (PromptFormat)fmt, seq_len, true) != STATUS_OK) {
        cli_fail(data_path);
        goto done;
    }
    if (cache_path) {
        if (teacher_path) {
            fprintf(stderr, "error: give --teacher or --teacher-cache, not both\n");
            ret = 2;
            goto done;
        }
        if (teacher_cache_load(&cache, cache_path) != STATUS_OK) {
            cli_fail(cache_path);
            goto done;
        }
        o.teacher_cache = &cache;
    }
    data_split(&sp, ts.n, val_frac, (uint64_t)seed);
    {
        int64_t nb = (sp.n_train + batch - 1) / batch,
                per_epoch = (nb + grad_accum - 1) / grad_accum;
        int64_t total = max_steps > 0 ? max_steps : epochs * per_epoch;
        o.warmup_steps = (int64_t)ceil(warmup_ratio * (double)total);
        log_info("distill: %d train / %d validation examples, %" PRId64 " steps, %s, rank %d, "
                 "scaling %.4g, T %.3g, alpha %.3g, seed %" PRId64,
                 sp.n_train, sp.n_val, total, optimizer, rank, scale, temperature, alpha, seed);
        // the gap to close: validation CE of the untouched student and of the teacher
        double ce_s = NAN, ce_t = NAN;
        if (sp.n_val > 0 && !resume) {
            if (trainer_eval_ce(&student, NULL, &ts, sp.val, sp.n_val, batch, seq_len, &ce_s,
                                NULL) != STATUS_OK ||
                (teacher_path && trainer_eval_ce(&teacher, NULL, &ts, sp.val, sp.n_val, batch,
                                                 seq_len, &ce_t, NULL) != STATUS_OK)) {
                cli_fail("validation");
                goto done;
            }
            if (teacher_path)
                printf("validation CE before training: student %.6f  teacher %.6f\n", ce_s, ce_t);
            else // a teacher cache holds top-k log-probs, not a model to evaluate
                printf("validation CE before training: student %.6f\n", ce_s);
        }
        DistillCtx ctx;
        progress_init(&ctx.pr, "distill", total);
        TrainerResult res;
        Status s = trainer_run(&student, teacher_path ? &teacher : NULL, &ts, &sp, &o,
                               distill_progress, &ctx, &lora, &res);
        if (s != STATUS_OK) {
            cli_fail("distill");
            goto done;
        }
        progress_finish(&ctx.pr, NULL);
        printf("steps %" PRId64 "  final loss %.6f  validation CE %.6f  %.1f s\n", res.steps,
               res.final_loss, res.final_val_ce, res.seconds);
        printf("adapter: %s/adapter\n", out);
    }
    if (merge) {
        char *md = path_join(out, "merged");
        Status s = lora_merge_model(&lora, &student);
        if (s == STATUS_OK) s = model_save_hf(&student, md, DTYPE_F32);
        if (s != STATUS_OK) {
            free(md);
            cli_fail("merge");
            goto done;
        }
        printf("merged model: %s\n", md);
        free(md);
    }
    ret = 0;
done:
    teacher_cache_release(&cache);
    lora_release(&lora);
    data_split_release(&sp);
    trainset_release(&ts);
    alpaca_set_release(&set);
    model_release(&teacher);
    model_release(&student);
    return ret;
}
