/*
 * fuzz_journal.c - libFuzzer target for the Optuna journal replay: split arbitrary bytes into
 * lines, parse each (Python's NaN/Infinity tokens included) and apply it to a journal state,
 * then turn every study's trials into TPE records and sample from them. Errors are expected;
 * crashes, overreads (ASan) and undefined behaviour (UBSan) are bugs.
 *
 *   make fuzz && build-fuzz/fuzz_journal -max_total_time=120 -max_len=4096 \
 *       tests/fixtures/hpo    (the Optuna-written journal is a good seed)
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "hpo/journal.h"
#include "hpo/study.h"
#include "hpo/tpe.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    HpoJournal j;
    hpo_journal_init(&j, "fuzz-worker");
    size_t p = 0;
    while (p < size) {
        const uint8_t *nl = memchr(data + p, '\n', size - p);
        size_t len = nl ? (size_t)(nl - (data + p)) : size - p;
        json_error_t err;
        json_t *log = hpo_journal_parse_line((const char *)data + p, len, &err);
        if (log) {
            (void)hpo_journal_apply(&j, log);
            json_decref(log);
        }
        p += len + 1;
    }
    HpoSpace sp;
    hpo_space_table3(&sp);
    (void)hpo_space_add_flag(&sp, "opt=cat:adamw,muon");
    HpoTpeConfig cfg = hpo_tpe_default_config();
    cfg.n_startup_trials = 1;
    cfg.n_ei_candidates = 4;
    for (int s = 0; s < j.n_studies && s < 4; s++) {
        if (j.studies[s].deleted || j.studies[s].n_directions < 1) continue;
        HpoTpeTrial *tr;
        double *vals;
        int n;
        hpo_study_tpe_trials(&j, s, &sp, &tr, &vals, &n);
        double x[8];
        Rng rng;
        rng_seed(&rng, 1);
        // values from the journal may be anything; the sampler must stay in bounds
        for (int i = 0; i < n; i++)
            if (!isfinite(tr[i].value)) tr[i].state = HPO_FAIL;
        if (hpo_tpe_suggest(&cfg, &sp, false, tr, n, n, &rng, x) == STATUS_OK)
            for (int k = 0; k < sp.n; k++)
                if (!hpo_dist_contains(&sp.params[k].dist, x[k])) __builtin_trap();
        free(tr);
        free(vals);
    }
    hpo_space_release(&sp);
    hpo_journal_release(&j);
    return 0;
}
