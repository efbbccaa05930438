/*
 * fuzz_task_data.c - libFuzzer target for the benchmark readers (src/eval/tasks.c): the first
 * byte picks one of the seven single-file tasks (ARC-Easy, CommonsenseQA, HellaSwag,
 * OpenBookQA, PIQA, SocialIQA, WinoGrande), the rest, cut at the first 0xFF, becomes the
 * task's data file and (PIQA, SocialIQA) its labels file in a scratch data directory, which
 * task_load reads, validates and renders (contexts, choices, gold). MMLU's 57 CSV files plus
 * its subject table are covered by the unit tests instead.
 *
 *   make fuzz && build-fuzz/fuzz_task_data -max_total_time=120 -max_len=4096 fuzz/corpus/task_data
 */
#include "fuzz_util.h"

#include "core/log.h"
#include "eval/tasks.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    log_set_level(LOG_ERROR);
    if (size < 1) return 0;
    static const struct {
        TaskKind kind;
        const char *dir, *file, *labels, *alt;
    } t[] = {
        {TASK_ARC_EASY, "arc_easy", "ARC-Easy-Test.jsonl", NULL, NULL},
        {TASK_COMMONSENSE_QA, "commonsense_qa", "dev_rand_split.jsonl", NULL, NULL},
        {TASK_HELLASWAG, "hellaswag", "hellaswag_val.jsonl", NULL,
         "hellaswag_val_lmeval_approx.jsonl"},
        {TASK_OPENBOOKQA, "openbookqa", "test.jsonl", NULL, NULL},
        {TASK_PIQA, "piqa", "valid.jsonl", "valid-labels.lst", NULL},
        {TASK_SOCIAL_IQA, "social_iqa", "dev.jsonl", "dev-labels.lst", NULL},
        {TASK_WINOGRANDE, "winogrande", "dev.jsonl", NULL, NULL},
    };
    const size_t n = sizeof t / sizeof t[0], k = data[0] % n;
    size_t l0, l1;
    const uint8_t *p0 = fuzz_part(data + 1, size - 1, 0, &l0);
    const uint8_t *p1 = fuzz_part(data + 1, size - 1, 1, &l1);
    if (fuzz_write(t[k].dir, t[k].file, p0, l0) != 0) return 0;
    if (t[k].alt && fuzz_write(t[k].dir, t[k].alt, p0, l0) != 0) return 0;
    if (t[k].labels && fuzz_write(t[k].dir, t[k].labels, p1, l1) != 0) return 0;
    TaskOpts o = task_opts_default();
    o.limit = data[0] & 0x80 ? 3 : 0;
    Task task;
    if (task_load(&task, t[k].kind, fuzz_dir(), &o) == STATUS_OK) task_release(&task);
    return 0;
}
