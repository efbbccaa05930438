/*
 * main.c - the edgeforge command table (git's commands[] in git.c): finds the
 * subcommand, sets the log level and hands over argv.
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "cli/commands.h"
#include "core/common.h"
#include "core/fileio.h"
#include "core/log.h"
#include "core/status.h"
#include "tensor/gemm.h"

// One entry per implemented subcommand; keep in pipeline order.
static const Command commands[] = {
    {"info", cmd_info, "show a model's architecture, shapes, dtypes and tokenizer"},
    {"convert", cmd_convert, "convert a model to a Hugging Face directory or GGUF"},
    {"generate", cmd_generate, "generate text from a prompt (greedy or sampled), streamed"},
    {"chat", cmd_chat, "chat with a model interactively on stdin"},
    {"tokenize", cmd_tokenize, "print the token ids of a text (Hugging Face encode semantics)"},
    {"teacher-cache", cmd_teacher_cache, "store a teacher's top-k log-probs for sparse KD"},
    {"distill", cmd_distill, "LoRA + knowledge distillation of a student (AdamW or Muon)"},
    {"merge", cmd_merge, "merge a PEFT LoRA adapter into a model, write an HF directory"},
    {"prune", cmd_prune, "cut a student from a model by keeping some of its layers"},
    {"tune", cmd_tune, "TPE hyperparameter search over a command (Optuna-compatible studies)"},
    {"quantize", cmd_quantize,
     "GPTQ/RTN w4a16 quantization into a GPTQ v1 checkpoint + fidelity report"},
    {"eval", cmd_eval, "multiple-choice benchmarks with lm-evaluation-harness v0.4 scores"},
    {"analyze", cmd_analyze, "layer-wise weight/activation kurtosis (Table 7), vs GPTQ loss"},
    {NULL, NULL, NULL},
};

void cli_set_threads(int n) {
#ifdef _OPENMP
    if (n > 0) omp_set_num_threads(n);
    openblas_set_num_threads(omp_get_max_threads());
#else
    if (n > 0) openblas_set_num_threads(n);
#endif
}

int cli_fail(const char *what) {
    const char *msg = status_msg();
    if (what && *what)
        fprintf(stderr, "error: %s: %s\n", what, msg);
    else
        fprintf(stderr, "error: %s\n", msg);
    return 1;
}

// The version, and what besides the input decides a result's bits here (tensor/gemm.h).
static void print_version(void) {
    char sys[512];
    gemm_system_info(sys, sizeof sys);
    printf("edgeforge %s\n%s\n", EDGEFORGE_VERSION, sys);
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: edgeforge [-v|-q] <command> [options]\n\n"
            "Turns a small LLM into a task-specialized 4-bit model, with numbers.\n\ncommands:\n");
    for (size_t i = 0; commands[i].name; i++)
        fprintf(f, "  %-14s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "  %-14s %s\n", "help", "show this list");
    fprintf(f, "  %-14s %s\n", "version", "print the version");
    fprintf(f, "\n'edgeforge <command> --help' shows a command's options.\n");
}

int main(int argc, char **argv) {
    atomic_file_cleanup_on_signals(); // Ctrl-C leaves no half-written output
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "-v") == 0)
            log_set_level(LOG_DEBUG);
        else if (strcmp(argv[i], "-q") == 0)
            log_set_level(LOG_WARN);
        else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--version") == 0) {
            print_version();
            return 0;
        } else {
            fprintf(stderr, "error: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    const char *name = argv[i];
    if (strcmp(name, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(name, "version") == 0) {
        print_version();
        return 0;
    }
    for (size_t c = 0; commands[c].name; c++)
        if (strcmp(commands[c].name, name) == 0) return commands[c].fn(argc - i, argv + i);
    fprintf(stderr, "error: '%s' is not an edgeforge command (see 'edgeforge help')\n", name);
    return 2;
}
