/*
 * cmd_teacher_cache.c - `edgeforge teacher-cache`: run a teacher once over a dataset and
 * store its top-k log-probabilities at every response position, for
 * `edgeforge distill --teacher-cache FILE` (sparse top-k KD, reference.md §7.2).
 *
 *   edgeforge teacher-cache --teacher T --data train.jsonl --out cache.safetensors \
 *       --top-k 32 --seq-len 512
 *
 * The data is tokenized with the teacher's tokenizer and the same options distill uses
 * (--format, --seq-len, --skip-bad-lines must match the distill run; distill checks).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/common.h"
#include "model/llama.h"
#include "model/model_io.h"
#include "train/data.h"
#include "train/teacher_cache.h"

int cmd_teacher_cache(int argc, char **argv) {
    const char *teacher_path = NULL, *data_path = NULL, *out = NULL, *format = "alpaca";
    int k = 32, seq_len = 512, batch = 4, threads = 0;
    double t_gen = 1.0;
    bool skip_bad = false;
    ArgSpec spec[] = {
        {"teacher", 0, ARG_STRING, &teacher_path, "teacher model", 0, 0},
        {"data", 0, ARG_STRING, &data_path, "Alpaca JSONL", 0, 0},
        {"out", 'o', ARG_STRING, &out, "cache file (safetensors)", 0, 0},
        {"top-k", 'k', ARG_INT, &k, "log-probs kept per position", 1, 1 << 20},
        {"seq-len", 0, ARG_INT, &seq_len, "tokens per sequence (as in distill)", 2, 1 << 20},
        {"batch", 'b', ARG_INT, &batch, "sequences per teacher forward", 1, 4096},
        {"t-gen", 0, ARG_FLOAT, &t_gen, "temperature of the stored log-probs", 1e-3, 1e3},
        {"format", 0, ARG_STRING, &format, "prompt format: alpaca | chat", 0, 0},
        {"skip-bad-lines", 0, ARG_FLAG, &skip_bad, "skip malformed JSONL lines", 0, 0},
        {"threads", 't', ARG_INT, &threads, "threads (default: all)", 0, 4096},
    };
    ArgParse ap = {.cmd = "teacher-cache",
                   .pos_usage = "",
                   .spec = spec,
                   .n_spec = (int)ARRAY_LEN(spec),
                   .min_pos = 0,
                   .max_pos = 0,
                   .summary = "store a teacher's top-k log-probs for sparse KD"};
    int rc = args_parse(&ap, argc, argv);
    if (rc != 0) return rc > 0 ? 0 : 2;
    if (!teacher_path || !data_path || !out) {
        fprintf(stderr, "error: teacher-cache needs --teacher, --data and --out\n");
        return 2;
    }
    cli_set_threads(threads);
    PromptFormat fmt = PROMPT_ALPACA;
    if (!strcmp(format, "chat"))
        fmt = PROMPT_CHAT;
    else if (strcmp(format, "alpaca") != 0) {
        fprintf(stderr, "error: --format: unknown value '%s'\n", format);
        return 2;
    }
    Model m;
    AlpacaSet set = {0};
    TrainSet ts = {0};
    TeacherCache tc = {0};
    int ret = 1;
    if (model_load(&m, teacher_path, NULL) != STATUS_OK) return cli_fail(teacher_path);
    // the reader's messages name the file and line; the builder's only the line
    if (alpaca_read_jsonl(&set, data_path, skip_bad) != STATUS_OK) {
        cli_fail(NULL);
        goto done;
    }
    if (trainset_build(&ts, &set, m.tok, fmt, seq_len, true) != STATUS_OK) {
        cli_fail(data_path);
        goto done;
    }
    if (teacher_cache_build(&tc, &m, &ts, k, (float)t_gen, seq_len, batch) != STATUS_OK ||
        teacher_cache_save(&tc, out, teacher_path) != STATUS_OK) {
        cli_fail("teacher-cache");
        goto done;
    }
    printf("%d examples, %" PRId64 " positions x top-%d -> %s\n", ts.n, tc.rows, k, out);
    ret = 0;
done:
    teacher_cache_release(&tc);
    trainset_release(&ts);
    alpaca_set_release(&set);
    model_release(&m);
    return ret;
}
