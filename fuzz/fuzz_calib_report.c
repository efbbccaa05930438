/*
 * fuzz_calib_report.c - libFuzzer target for two more readers of user files: calibration data
 * (src/quant/calib.c: plain text, or JSONL when the first input byte is odd; tokenized with
 * stories260K's tokenizer and cut into seeded windows) and the GPTQ report that `analyze
 * --gptq-report` reads (analyze_attach_gptq, src/analyze/analyze.c: the same bytes as a JSON
 * report, attached to stories260K's weight-kurtosis report). Run from the repository root.
 * Seeds: fuzz/corpus/calib_report (held-out stories text and a quantize report).
 *
 *   make fuzz && build-fuzz/fuzz_calib_report -max_total_time=120 -max_len=4096
 */
#include "fuzz_util.h"

#include "analyze/analyze.h"
#include "core/log.h"
#include "model/llama.h"
#include "quant/calib.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static Model model;
static AnalyzeReport weights;
static bool loaded;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    log_set_level(LOG_ERROR);
    if (!loaded) {
        AnalyzeOptions o = analyze_options_default();
        if (model_load(&model, "models/stories260K/stories260K.bin", NULL) != STATUS_OK ||
            analyze_weights(&weights, &model, &o) != STATUS_OK)
            abort(); // run from the repository root
        loaded = true;
    }
    const bool jsonl = size > 0 && (data[0] & 1);
    if (fuzz_write(NULL, jsonl ? "calib.jsonl" : "calib.txt", data, size) != 0) return 0;
    char path[128];
    snprintf(path, sizeof path, "%s/%s", fuzz_dir(), jsonl ? "calib.jsonl" : "calib.txt");
    CalibOptions co = {.n_seqs = 2, .seq_len = 8, .seed = size};
    CalibSet cs;
    if (calib_sample(&cs, path, model.tok, &co) == STATUS_OK) calib_release(&cs);
    if (calib_chunks(&cs, path, model.tok, &co) == STATUS_OK) calib_release(&cs);
    // the same bytes as a GPTQ report (attaching overwrites every linear's loss and the
    // correlations, so one weight report serves every input)
    (void)analyze_attach_gptq(&weights, path);
    return 0;
}
