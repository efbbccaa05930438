/*
 * args.h - a small table-driven option parser for the subcommands.
 *
 *   int n = 64; double temp = 0.8; const char *prompt = NULL; bool chat = false;
 *   ArgSpec spec[] = {
 *       {"n",      'n', ARG_INT,    &n,      "tokens to generate", 1, 1e9},
 *       {"temp",    0,  ARG_FLOAT,  &temp,   "sampling temperature", 0, 100},
 *       {"prompt", 'p', ARG_STRING, &prompt, "prompt text"},
 *       {"chat",    0,  ARG_FLAG,   &chat,   "use the chat template"},
 *   };
 *   ArgParse ap = {"generate", "MODEL", spec, ARRAY_LEN(spec), 1, 1};
 *   if (args_parse(&ap, argc, argv) != 0) return 2;   // message already printed
 *   ap.pos[0] is MODEL
 *
 * Values are validated (strtol/strtod with range checks); errors name the flag.
 * "--" ends option parsing; everything after it is collected in ap.rest.
 */
#ifndef EF_ARGS_H
#define EF_ARGS_H

#include <stdbool.h>
#include <stdio.h>

typedef enum { ARG_FLAG, ARG_INT, ARG_INT64, ARG_FLOAT, ARG_STRING } ArgType;

typedef struct {
    const char *name; // long name without "--"
    char short_name;  // 0 if none
    ArgType type;
    void *dst; // bool*, int*, int64_t*, double*, const char**
    const char *help;
    double min, max; // numeric range (inclusive) when min < max
} ArgSpec;

#define ARGS_MAX_POS 16

typedef struct {
    const char *cmd;       // subcommand name for messages
    const char *pos_usage; // e.g. "MODEL" or "IN OUT"
    const ArgSpec *spec;
    int n_spec;
    int min_pos, max_pos; // positional argument count limits
    const char *summary;  // one-line description for --help
    // outputs
    const char *pos[ARGS_MAX_POS];
    int n_pos;
    char **rest; // after "--", or NULL
    int n_rest;
    bool help_shown; // --help was given (args_parse returned 1)
} ArgParse;

// Parses argv[1..argc) (argv[0] is the subcommand). Returns 0 on success, 1 when
// --help was printed, -1 after printing "error: ..." for a bad option.
int args_parse(ArgParse *ap, int argc, char **argv);
void args_usage(const ArgParse *ap, FILE *f);

#endif
