/*
 * cmd_quantize.c - `edgeforge quantize`: GPTQ (or RTN) w4a16 quantization of a model into a
 * GPTQ v1 checkpoint directory, with a fidelity report against the unquantized model.
 *
 *   edgeforge quantize models/stories260K/stories260K.bin --calib calib.txt --nsamples 64 \
 *       --seq-len 128 --fidelity-data heldout.txt --out out/stories-gptq
 *   edgeforge quantize MODEL --calib train.jsonl --bits 4 --group 128 [--act-order]
 *       [--static-groups] [--sym|--asym] [--mse] [--damp X] [--nsamples N] [--seq-len L] [--rtn]
 *       [--true-sequential] [--lm-head] [--fidelity-data F] --out DIR
 *   edgeforge generate out/stories-gptq -p "Once upon a time"     # runs the 4-bit weights
 *
 * The report (printed, and written as JSON to --report, default DIR.report.json next to
 * the checkpoint) has the per-linear GPTQ loss, bits per weight, sizes before/after and, with
 * --fidelity-data, KL divergence / top-1 agreement / perplexity of the reloaded checkpoint
 * against the unquantized model (quant/fidelity.h).
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cli/args.h"
#include "cli/commands.h"
#include "core/common.h"
#include "core/fileio.h"
#include "core/log.h"
#include "model/llama.h"
#include "model/infer.h"
#include "model/model_io.h"
#include "model/safetensors.h"
#include "quant/calib.h"
#include "quant/fidelity.h"
#include "quant/gptq_model.h"
#include "tensor/gemm.h"

typedef struct {
    const char *calib, *out, *fid_data, *report, *tokenizer, *logits_out;
    int bits, group, nsamples, seq_len, fid_chunks, fid_ctx, threads, batch;
    double damp;
    int64_t seed;
    bool act_order, static_groups, sym, asym, rtn, true_seq, lm_head, mse;
} QuantArgs;

static int64_t file_size(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 ? (int64_t)sb.st_size : 0;
}

// Writes tokens (T) and the logits (T, V) of model q on the first held-out chunk, for
// checks outside edgeforge (tools/check_gptq_transformers.py).
static Status write_logits(const char *path, const Model *q, const CalibSet *chunks) {
    int T = chunks->seq_len, V = (int)q->lm_head.shape[0];
    InferOptions o = infer_options_default();
    o.max_ctx = T;
    o.max_batch = T;
    InferState st;
    Status s = infer_init(&st, q, &o);
    if (s != STATUS_OK) return s;
    float *lg = malloc((size_t)T * (size_t)V * sizeof *lg);
    if (!lg) s = fail(STATUS_ERR_NOMEM, "cannot allocate logits");
    InferBatch b = {.tokens = chunks->tokens, .n = T};
    if (s == STATUS_OK) s = infer_forward(&st, &b, lg);
    if (s == STATUS_OK) {
        SafeWriter w;
        safewriter_init(&w);
        int64_t ts[1] = {T}, ls[2] = {T, V};
        safewriter_add(&w, "tokens", ST_I32, 1, ts, chunks->tokens);
        safewriter_add(&w, "logits", ST_F32, 2, ls, lg);
        s = safewriter_write(&w, path);
        safewriter_release(&w);
    }
    free(lg);
    infer_release(&st);
    return s;
}

// Loads the reloaded checkpoint and the base model and measures the fidelity.
static int run_fidelity(const QuantArgs *a, const char *model_path, const Tokenizer *tok,
                        FidelityStats *fs) {
    CalibOptions co = {.n_seqs = a->fid_chunks, .seq_len = a->fid_ctx, .seed = 0};
    CalibSet chunks;
    if (calib_chunks(&chunks, a->fid_data, tok, &co) != STATUS_OK)
        return cli_fail("--fidelity-data");
    Model base, q;
    ModelLoadOptions lo = {.tokenizer_path = a->tokenizer, .no_tokenizer = true};
    int rc = 1;
    if (model_load(&base, model_path, &lo) != STATUS_OK) {
        calib_release(&chunks);
        return cli_fail(model_path);
    }
    if (model_load(&q, a->out, &lo) != STATUS_OK) {
        cli_fail("cannot reload the checkpoint");
    } else {
        double t0 = time_now();
        if (fidelity_eval(fs, &base, &q, &chunks) != STATUS_OK)
            cli_fail("fidelity");
        else if (a->logits_out && write_logits(a->logits_out, &q, &chunks) != STATUS_OK)
            cli_fail("--logits");
        else
            rc = 0;
        log_info("fidelity: %d chunks of %d tokens in %.1f s", chunks.n_seqs, chunks.seq_len,
                 time_now() - t0);
        model_release(&q);
    }
    model_release(&base);
    calib_release(&chunks);
    return rc;
}

static int quantize_run(const QuantArgs *a, const char *model_path) {
    GptqModelOptions mo;
    gptq_model_options_defaults(&mo);
    mo.gptq.bits = a->bits;
    mo.gptq.group_size = a->group;
    mo.gptq.act_order = a->act_order;
    mo.gptq.static_groups = a->static_groups;
    mo.gptq.mse = a->mse;
    mo.gptq.sym = !a->asym;
    mo.gptq.percdamp = a->damp;
    mo.rtn = a->rtn;
    mo.true_sequential = a->true_seq;
    mo.lm_head = a->lm_head;
    mo.batch_seqs = a->batch;
    if (gptq_options_check(&mo.gptq) != STATUS_OK) {
        cli_fail("bad quantization options");
        return 2;
    }
    Model m;
    ModelLoadOptions lo = {.tokenizer_path = a->tokenizer};
    if (model_load(&m, model_path, &lo) != STATUS_OK) return cli_fail(model_path);
    if (!m.tok) {
        model_release(&m);
        fprintf(stderr, "error: '%s' has no tokenizer\n", model_path);
        return 1;
    }
    CalibSet cs = {0};
    GptqModelReport rep = {0};
    FidelityStats fs;
    int rc = 1;
    int64_t params = model_param_count(&m);
    if (!a->rtn) {
        CalibOptions co = {.n_seqs = a->nsamples, .seq_len = a->seq_len, .seed = (uint64_t)a->seed};
        if (calib_sample(&cs, a->calib, m.tok, &co) != STATUS_OK) {
            cli_fail("--calib");
            goto out;
        }
        log_info("calibration: %d sequences of %d tokens from %lld tokens of '%s'", cs.n_seqs,
                 cs.seq_len, (long long)cs.n_stream, a->calib);
    }
    if (gptq_model_quantize(&m, &rep, a->rtn ? NULL : &cs, &mo) != STATUS_OK) {
        cli_fail("quantize");
        goto out;
    }
    GptqConfig gc;
    gptq_model_config(&gc, &mo);
    if (gptq_model_save(&m, a->out, &gc) != STATUS_OK) {
        cli_fail("cannot write the checkpoint");
        goto out;
    }
    bool have_fid = false;
    if (a->fid_data) {
        if (run_fidelity(a, model_path, m.tok, &fs) != 0) goto out;
        have_fid = true;
    }
    char *st_path = path_join(a->out, "model.safetensors");
    char sysinfo[512];
    gemm_system_info(sysinfo, sizeof sysinfo);
    FidelityReport fr = {.model = model_path,
                         .out_dir = a->out,
                         .method =
                             a->rtn ? (a->mse ? "rtn+mse" : "rtn") : (a->mse ? "gptq+mse" : "gptq"),
                         .bits = a->bits,
                         .group_size = a->group,
                         .params_total = params,
                         .bytes_before = 2 * params,
                         .bytes_after = file_size(st_path),
                         .rep = &rep,
                         .fid = have_fid ? &fs : NULL,
                         .calib_seqs = a->rtn ? 0 : cs.n_seqs,
                         .calib_len = a->rtn ? 0 : cs.seq_len,
                         .system = sysinfo};
    free(st_path);
    fidelity_report_print(stdout, &fr);
    char *rp = NULL;
    if (!a->report) {
        size_t n = strlen(a->out);
        while (n > 1 && a->out[n - 1] == '/')
            n--; // "out/" -> "out.report.json"
        rp = xmalloc(n + 16);
        snprintf(rp, n + 16, "%.*s.report.json", (int)n, a->out);
    }
    if (fidelity_report_write_json(a->report ? a->report : rp, &fr) != STATUS_OK) {
        cli_fail("report");
    } else {
        printf("report: %s\n", a->report ? a->report : rp);
        rc = 0;
    }
    free(rp);
out:
    gptq_model_report_release(&rep);
    calib_release(&cs);
    model_release(&m);
    return rc;
}

int cmd_quantize(int argc, char **argv) {
    QuantArgs a = {.bits = 4,
                   .group = 128,
                   .nsamples = 128,
                   .seq_len = 2048,
                   .fid_chunks = 16,
                   .fid_ctx = 512,
                   .damp = 0.01,
                   .batch = 8};
    ArgSpec spec[] = {
        {"calib", 0, ARG_STRING, &a.calib, "calibration data: Alpaca JSONL or plain text", 0, 0},
        {"out", 'o', ARG_STRING, &a.out, "output GPTQ checkpoint directory", 0, 0},
        {"bits", 0, ARG_INT, &a.bits, "weight bits: 4 (runs packed), 2 or 8 (load dequantized)", 2,
         8},
        {"group", 0, ARG_INT, &a.group, "group size, -1 for one group per row", -1, 1 << 20},
        {"act-order", 0, ARG_FLAG, &a.act_order, "desc_act: quantize columns by decreasing diag(H)",
         0, 0},
        {"static-groups", 0, ARG_FLAG, &a.static_groups, "grids from the original weights", 0, 0},
        {"mse", 0, ARG_FLAG, &a.mse,
         "MSE grid search: shrink each grid's range (80 steps) to the least |error|^2.4", 0, 0},
        {"sym", 0, ARG_FLAG, &a.sym, "symmetric grid, zero 8 (default)", 0, 0},
        {"asym", 0, ARG_FLAG, &a.asym, "asymmetric grid", 0, 0},
        {"damp", 0, ARG_FLOAT, &a.damp, "dampening, fraction of mean diag(H) (0.01)", 0, 1},
        {"nsamples", 0, ARG_INT, &a.nsamples, "calibration sequences (128)", 1, 1 << 20},
        {"seq-len", 0, ARG_INT, &a.seq_len, "tokens per calibration sequence (2048)", 1, 1 << 20},
        {"seed", 0, ARG_INT64, &a.seed, "seed of the calibration window choice (0)", 0, 0},
        {"rtn", 0, ARG_FLAG, &a.rtn, "round-to-nearest baseline (no calibration)", 0, 0},
        {"true-sequential", 0, ARG_FLAG, &a.true_seq, "re-run each layer between linear groups", 0,
         0},
        {"lm-head", 0, ARG_FLAG, &a.lm_head,
         "quantize lm_head too (unties a tied embedding; GPTQModel's lm_head=True)", 0, 0},
        {"fidelity-data", 0, ARG_STRING, &a.fid_data, "held-out text for KL/top-1/perplexity", 0,
         0},
        {"fidelity-chunks", 0, ARG_INT, &a.fid_chunks, "held-out chunks (16)", 1, 1 << 20},
        {"fidelity-ctx", 0, ARG_INT, &a.fid_ctx, "tokens per held-out chunk (512)", 4, 1 << 20},
        {"report", 0, ARG_STRING, &a.report, "JSON report path (default OUT.report.json)", 0, 0},
        {"logits", 0, ARG_STRING, &a.logits_out,
         "write the reloaded checkpoint's logits on the first held-out chunk (safetensors)", 0, 0},
        {"batch", 0, ARG_INT, &a.batch, "sequences per Hessian update (8)", 1, 1 << 16},
        {"tokenizer", 0, ARG_STRING, &a.tokenizer, "tokenizer file when the model has none", 0, 0},
        {"threads", 't', ARG_INT, &a.threads, "threads (default: all)", 0, 4096},
    };
    ArgParse ap = {.cmd = "quantize",
                   .pos_usage = "MODEL",
                   .spec = spec,
                   .n_spec = (int)ARRAY_LEN(spec),
                   .min_pos = 1,
                   .max_pos = 1,
                   .summary = "GPTQ/RTN w4a16 quantization into a GPTQ v1 checkpoint, with a "
                              "fidelity report"};
    int rc = args_parse(&ap, argc, argv);
    if (rc != 0) return rc > 0 ? 0 : 2;
    if (!a.out) {
        fprintf(stderr, "error: quantize needs --out DIR\n");
        return 2;
    }
    if (a.bits != 2 && a.bits != 4 && a.bits != 8) {
        fprintf(stderr,
                "error: quantize: --bits must be 2, 4 or 8 (GPTQ v1 packs %d bits across "
                "words; not written here)\n",
                a.bits);
        return 2;
    }
    // the checkpoint writer refuses a non-empty output too, but only after all the work
    if (out_dir_taken(a.out)) {
        fprintf(stderr, "error: quantize: '%s' already exists (refusing to overwrite it)\n", a.out);
        return 2;
    }
    if (!a.calib && !a.rtn) {
        fprintf(stderr, "error: quantize needs --calib DATA (or --rtn)\n");
        return 2;
    }
    if (a.sym && a.asym) {
        fprintf(stderr, "error: --sym and --asym exclude each other\n");
        return 2;
    }
    if (a.group == 0) {
        fprintf(stderr, "error: --group must be -1 or positive\n");
        return 2;
    }
    cli_set_threads(a.threads);
    return quantize_run(&a, ap.pos[0]);
}
