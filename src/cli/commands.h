/*
 * commands.h - the subcommands of edgeforge, one cmd_<name>.c file each
 * (git's builtin/ layout). Each returns the process exit status:
 * 0 success, 1 failure of the work, 2 bad usage.
 */
#ifndef EF_COMMANDS_H
#define EF_COMMANDS_H

#define EDGEFORGE_VERSION "0.1.0"

typedef int (*CmdFn)(int argc, char **argv);

typedef struct {
    const char *name;
    CmdFn fn;
    const char *summary;
} Command;

// Prints "error: <msg>" for the last library error (status_msg()) and returns 1.
int cli_fail(const char *what);
// -t N: OpenMP's and OpenBLAS's thread counts (n <= 0: OpenMP's default, e.g.
// OMP_NUM_THREADS, for both).
void cli_set_threads(int n);

int cmd_info(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_distill(int argc, char **argv);
int cmd_teacher_cache(int argc, char **argv);
int cmd_merge(int argc, char **argv);
int cmd_prune(int argc, char **argv);
int cmd_tune(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_analyze(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_synth(int argc, char **argv);

#endif
