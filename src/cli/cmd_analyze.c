/*
 * cmd_analyze.c - `edgeforge analyze`: layer-wise kurtosis of weights and of each linear's
 * input activation channels over calibration windows, aggregated as the paper's Table 7,
 * optionally correlated with the per-linear loss of a GPTQ report (docs/eval.md).
 *
 *   edgeforge analyze MODEL --calib train.jsonl [--nsamples 128] [--seq-len L] [--seed S]
 *       [--gptq-report OUT.report.json] [--excess] [--out PREFIX] [--threads N]
 *
 * Writes PREFIX.csv (one row per decoder linear) and PREFIX.json (summary + rows); prints
 * the weighted means and the correlations. --seq-len defaults to 2048 capped at the
 * model's context. Exit: 0 ok, 1 failure, 2 bad usage.
 */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analyze/analyze.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "core/common.h"
#include "core/log.h"
#include "model/llama.h"
#include "model/model_io.h"
#include "quant/calib.h"

int cmd_analyze(int argc, char **argv) {
    const char *calib = NULL, *report = NULL, *out = "analyze", *tokenizer = NULL;
    int nsamples = 128, seq_len = 0, threads = 0;
    int64_t seed = 0;
    bool excess = false;
    ArgSpec spec[] = {
        {"calib", 0, ARG_STRING, &calib, "calibration data: Alpaca JSONL or plain text", 0, 0},
        {"nsamples", 0, ARG_INT, &nsamples, "calibration sequences (128)", 1, 1 << 20},
        {"seq-len", 0, ARG_INT, &seq_len, "tokens per sequence (2048, capped at the context)", 1,
         1 << 20},
        {"seed", 0, ARG_INT64, &seed, "seed of the calibration window choice (0)", 0, 0},
        {"gptq-report", 0, ARG_STRING, &report, "edgeforge quantize OUT.report.json", 0, 0},
        {"excess", 0, ARG_FLAG, &excess, "excess kurtosis (kappa - 3) instead of Pearson", 0, 0},
        {"out", 'o', ARG_STRING, &out, "output prefix: PREFIX.csv and PREFIX.json", 0, 0},
        {"tokenizer", 0, ARG_STRING, &tokenizer, "tokenizer file (llama2.c checkpoints)", 0, 0},
        {"threads", 't', ARG_INT, &threads, "threads (default: all)", 0, 4096},
    };
    ArgParse ap = {.cmd = "analyze",
                   .pos_usage = "MODEL",
                   .spec = spec,
                   .n_spec = (int)ARRAY_LEN(spec),
                   .min_pos = 1,
                   .max_pos = 1,
                   .summary = "layer-wise kurtosis of weights and activations (Table 7)"};
    int r = args_parse(&ap, argc, argv);
    if (r != 0) return r > 0 ? 0 : 2;
    if (!calib) {
        fprintf(stderr, "error: analyze needs --calib DATA\n");
        return 2;
    }
    cli_set_threads(threads);
    Model m;
    ModelLoadOptions lo = {.tokenizer_path = tokenizer};
    if (model_load(&m, ap.pos[0], &lo) != STATUS_OK) return cli_fail(ap.pos[0]);
    if (!m.tok) {
        model_release(&m);
        fprintf(stderr, "error: '%s' has no tokenizer\n", ap.pos[0]);
        return 1;
    }
    int rc = 1;
    CalibSet cs = {0};
    AnalyzeReport rep = {0};
    AnalyzeOptions ao = analyze_options_default();
    ao.kurt.fisher = excess;
    ao.n_threads = threads;
    CalibOptions co = {.n_seqs = nsamples,
                       .seq_len = seq_len > 0 ? seq_len : MIN(2048, m.cfg.max_seq_len),
                       .seed = (uint64_t)seed};
    size_t plen = strlen(out) + 8;
    char *csv = xmalloc(plen), *js = xmalloc(plen);
    snprintf(csv, plen, "%s.csv", out);
    snprintf(js, plen, "%s.json", out);
    if (calib_sample(&cs, calib, m.tok, &co) != STATUS_OK) {
        cli_fail("--calib");
        goto done;
    }
    log_info("calibration: %d sequences of %d tokens from %lld tokens of '%s'", cs.n_seqs,
             cs.seq_len, (long long)cs.n_stream, calib);
    if (analyze_run(&rep, &m, &cs, &ao) != STATUS_OK) {
        cli_fail("analyze");
        goto done;
    }
    if (report && analyze_attach_gptq(&rep, report) != STATUS_OK) {
        cli_fail("--gptq-report");
        goto done;
    }
    if (analyze_write_csv(&rep, csv) != STATUS_OK) {
        cli_fail("cannot write the report");
        goto done;
    }
    if (analyze_write_json(&rep, js) != STATUS_OK) {
        cli_fail("cannot write the report");
        remove(csv); // no half of the output
        goto done;
    }
    printf("kurtosis: %s, %d linears, %lld calibration tokens\n",
           excess ? "excess (fisher)" : "Pearson", rep.n_linear, (long long)rep.n_tokens);
    printf("weighted mean weight kurtosis (W):     %.4f\n", rep.w_mean);
    printf("weighted mean activation kurtosis (A): %.4f\n", rep.a_mean);
    if (rep.has_gptq)
        printf("vs GPTQ loss over %d linears: W pearson %.4f spearman %.4f; "
               "A pearson %.4f spearman %.4f\n",
               rep.n_corr, rep.pearson_w, rep.spearman_w, rep.pearson_a, rep.spearman_a);
    printf("wrote %s and %s\n", csv, js);
    rc = 0;
done:
    free(csv);
    free(js);
    analyze_report_release(&rep);
    calib_release(&cs);
    model_release(&m);
    return rc;
}
