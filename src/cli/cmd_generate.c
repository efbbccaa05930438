/*
 * cmd_generate.c - `edgeforge generate` (one prompt, streamed continuation) and
 * `edgeforge chat` (interactive turns on stdin, KV cache reused across turns).
 *
 *   edgeforge generate models/stories260K/stories260K.bin -p "Once upon a time" -n 64
 *   edgeforge generate models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --chat \
 *       -p "What is the capital of France?" --temp 0.7 --top-p 0.9 --seed 1
 *   edgeforge chat models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
 *
 * Text goes to stdout as it is generated; the prompt/generation speeds go to stderr.
 * Generation stops at an end-of-text/control token, a --stop string, the -n budget or
 * the end of the context. Nothing is allocated inside the decode loop.
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cli/args.h"
#include "cli/commands.h"
#include "core/common.h"
#include "core/log.h"
#include "core/rng.h"
#include "model/infer.h"
#include "model/llama.h"
#include "model/sampler.h"
#include "model/tokenizer.h"

typedef struct {
    const char *model_path, *prompt, *system, *tokenizer, *dtype, *stop, *kv_cache;
    int n, top_k, ctx, threads, bench_prompt;
    double temp, top_p;
    int64_t seed;
    bool chat, ids, no_bos, ignore_eos;
} GenArgs;

typedef struct {
    Model m;
    InferState st;
    Sampler smp;
    StopRules stop;
    const char *stop_strs[1];
    int32_t stop_ids[4];
    float *logits;    // (V)
    const char *echo; // prompt text printed once the prefill succeeded (or NULL)
    bool ignore_eos;
    char *win; // text held back while it may still start a stop string
    size_t win_len, win_cap;
} Gen;

static void gen_release(Gen *g) {
    free(g->logits);
    free(g->win);
    sampler_release(&g->smp);
    infer_release(&g->st);
    model_release(&g->m);
}

// Loads the model, converts weights, plans the state; prints nothing on success.
static int gen_setup(Gen *g, const GenArgs *a) {
    memset(g, 0, sizeof *g);
    SamplerParams sp = {.temperature = (float)a->temp,
                        .top_k = a->top_k,
                        .top_p = (float)a->top_p,
                        .seed = (uint64_t)a->seed};
    if (sampler_params_check(&sp) != STATUS_OK) {
        cli_fail("invalid sampling parameters");
        return 2;
    }
    int dt = a->dtype ? dtype_from_name(a->dtype) : -1;
    if (a->dtype && dt < 0) {
        fprintf(stderr, "error: --dtype '%s' is not one of f32, f16, bf16\n", a->dtype);
        return 2;
    }
    int kv = a->kv_cache ? dtype_from_name(a->kv_cache) : DTYPE_F32;
    if (kv != DTYPE_F32 && kv != DTYPE_F16) {
        fprintf(stderr, "error: --kv-cache '%s' is not one of f32, f16\n", a->kv_cache);
        return 2;
    }
    cli_set_threads(a->threads);
    ModelLoadOptions lo = {.tokenizer_path = a->tokenizer};
    if (model_load(&g->m, a->model_path, &lo) != STATUS_OK) return cli_fail("cannot load model");
    if (!g->m.tok) {
        fprintf(stderr, "error: '%s' has no tokenizer\n", a->model_path);
        return 1;
    }
    if (dt >= 0 && infer_convert_weights(&g->m, (DType)dt) != STATUS_OK) return cli_fail(NULL);
    InferOptions o = infer_options_default();
    o.max_ctx = a->ctx;
    o.kv_dtype = (DType)kv;
    if (infer_init(&g->st, &g->m, &o) != STATUS_OK) return cli_fail(NULL);
    int V = g->m.cfg.vocab_size;
    if (sampler_init(&g->smp, V, &sp) != STATUS_OK) return cli_fail(NULL);
    g->logits = xmalloc((size_t)V * sizeof *g->logits);
    // stop on EOS and on any control token (tokenizer_is_control) checked in the loop
    int ns = 0;
    int32_t eos = tokenizer_eos_id(g->m.tok);
    if (eos >= 0) g->stop_ids[ns++] = eos;
    if (g->m.cfg.eos_id >= 0 && g->m.cfg.eos_id != eos) g->stop_ids[ns++] = g->m.cfg.eos_id;
    g->stop = (StopRules){.stop_ids = g->stop_ids, .n_stop_ids = ns, .max_tokens = a->n};
    if (a->stop && *a->stop) {
        g->stop_strs[0] = a->stop;
        g->stop.stop_strs = g->stop_strs;
        g->stop.n_stop_strs = 1;
    }
    g->win_cap = stop_max_len(&g->stop) + 2 * sizeof(((TokenizerStream *)0)->out) + 1;
    g->win = xmalloc(g->win_cap);
    g->ignore_eos = a->ignore_eos;
    return 0;
}

// Appends generated text; prints what can no longer be part of a stop string. Returns
// true when a stop string was found (the text before it has been printed).
static bool gen_emit(Gen *g, const char *piece, bool final) {
    size_t n = strlen(piece);
    CHECK(g->win_len + n < g->win_cap);
    memcpy(g->win + g->win_len, piece, n);
    g->win_len += n;
    size_t at;
    if (stop_find_string(&g->stop, g->win, g->win_len, &at)) {
        fwrite(g->win, 1, at, stdout);
        g->win_len = 0;
        return true;
    }
    size_t hold = final ? 0 : stop_max_len(&g->stop);
    hold = hold > 0 ? hold - 1 : 0;
    if (g->win_len > hold) {
        size_t out = g->win_len - hold;
        fwrite(g->win, 1, out, stdout);
        memmove(g->win, g->win + out, hold);
        g->win_len = hold;
    }
    fflush(stdout);
    return false;
}

typedef struct {
    int n_prompt, n_gen;
    double t_prompt, t_gen;
} GenStats;

// Prefills `ids` (appended to sequence 0) and generates until a stop rule fires. Generated
// ids are written to out_ids (capacity max_tokens) when not NULL.
static int gen_run(Gen *g, const int32_t *ids, int n, bool print_ids, int32_t *out_ids,
                   GenStats *stats) {
    int ctx = g->st.opt.max_ctx, have = infer_seq_len(&g->st, 0);
    if (have + n > ctx) {
        fprintf(stderr, "error: the prompt is %d tokens but the context holds %d (use --ctx)\n",
                have + n, ctx);
        return 1;
    }
    double t0 = time_now();
    if (infer_prefill(&g->st, 0, ids, n, g->logits) != STATUS_OK) return cli_fail("prefill");
    double t1 = time_now();
    TokenizerStream ts;
    tokenizer_stream_init(&ts, g->m.tok);
    if (g->echo) { // the output continues the echoed prompt: keep the first token's space
        fputs(g->echo, stdout);
        fflush(stdout);
        ts.first = false;
    }
    int budget = MIN(g->stop.max_tokens, ctx - have - n + 1), gen = 0;
    bool stopped = false;
    g->win_len = 0;
    while (gen < budget && !stopped) {
        int32_t next = sampler_sample(&g->smp, g->logits);
        if (!g->ignore_eos &&
            (stop_is_token(&g->stop, next) || tokenizer_is_control(g->m.tok, next)))
            break;
        if (out_ids) out_ids[gen] = next;
        gen++;
        if (print_ids) {
            printf("%s%d", gen > 1 ? " " : "", next);
            fflush(stdout);
        } else {
            stopped = gen_emit(g, tokenizer_stream_push(&ts, next), false);
        }
        if (stopped || gen == budget) break;
        if (infer_decode(&g->st, 0, next, g->logits) != STATUS_OK) return cli_fail("decode");
    }
    if (!print_ids && !stopped) gen_emit(g, tokenizer_stream_flush(&ts), true);
    double t2 = time_now();
    if (gen == budget && budget < g->stop.max_tokens)
        log_warn("stopped at the end of the context (%d tokens)", ctx);
    stats->n_prompt = n;
    stats->n_gen = gen;
    stats->t_prompt = t1 - t0;
    stats->t_gen = t2 - t1;
    return 0;
}

static void print_stats(const GenStats *s) {
    fflush(stdout); // the text first, then the speeds (when both go to one pipe)
    fprintf(stderr, "\nprompt: %d tokens, %.1f tokens/s; generated: %d tokens, %.1f tokens/s\n",
            s->n_prompt, s->n_prompt / (s->t_prompt > 0 ? s->t_prompt : 1e-9), s->n_gen,
            s->n_gen > 0 ? s->n_gen / (s->t_gen > 0 ? s->t_gen : 1e-9) : 0.0);
}

// Renders a chat (or takes the plain prompt) and tokenizes it.
static int gen_tokenize(Gen *g, const GenArgs *a, const ChatMessage *msgs, int n_msgs,
                        int32_t **ids, int *n) {
    Status s;
    if (a->bench_prompt > 0) { // fixed pseudo-random ids, the same on every run
        Rng r;
        rng_seed(&r, 1234);
        *n = a->bench_prompt;
        *ids = xmalloc((size_t)*n * sizeof **ids);
        for (int i = 0; i < *n; i++)
            (*ids)[i] = (int32_t)rng_below(&r, (uint64_t)g->m.cfg.vocab_size);
        return 0;
    }
    if (msgs) {
        char *text;
        if (chat_render(g->m.tok, CHAT_TEMPLATE_AUTO, msgs, n_msgs, true, &text) != STATUS_OK)
            return cli_fail("chat template");
        s = tokenizer_encode(g->m.tok, text, strlen(text), TOKENIZE_PARSE_SPECIAL, ids, n);
        free(text);
    } else {
        const char *p = a->prompt ? a->prompt : "";
        int flags = TOKENIZE_PARSE_SPECIAL | (a->no_bos ? 0 : TOKENIZE_DEFAULT_BOS);
        s = tokenizer_encode(g->m.tok, p, strlen(p), flags, ids, n);
    }
    if (s != STATUS_OK) return cli_fail("tokenize");
    if (*n == 0) { // nothing to condition on: start from BOS
        int32_t bos = tokenizer_bos_id(g->m.tok);
        if (bos < 0) bos = g->m.cfg.bos_id;
        if (bos < 0) {
            fprintf(stderr, "error: empty prompt and the model has no BOS token\n");
            return 2;
        }
        *ids = xrealloc(*ids, sizeof **ids);
        (*ids)[0] = bos;
        *n = 1;
    }
    return 0;
}

static int parse_gen_args(GenArgs *a, int argc, char **argv, const char *cmd, bool chat_cmd) {
    *a = (GenArgs){.n = chat_cmd ? 256 : 128,
                   .top_p = 1.0,
                   .temp = chat_cmd ? 0.7 : 0.0,
                   .top_k = 0,
                   .seed = 0};
    ArgSpec spec[] = {
        {"prompt", 'p', ARG_STRING, &a->prompt, "prompt text (default: start from BOS)", 0, 0},
        {"chat", 0, ARG_FLAG, &a->chat, "wrap the prompt in the model's chat template", 0, 0},
        {"system", 0, ARG_STRING, &a->system, "system message for --chat / chat", 0, 0},
        {"temp", 0, ARG_FLOAT, &a->temp, "temperature; 0 = greedy (default 0, chat 0.7)", 0, 100},
        {"top-p", 0, ARG_FLOAT, &a->top_p, "nucleus sampling mass in (0, 1] (default 1)", 0, 1},
        {"top-k", 0, ARG_INT, &a->top_k, "keep the k most likely tokens; 0 = all", 0, 1e9},
        {"seed", 0, ARG_INT64, &a->seed, "random seed (default 0)", 0, 9.2e18},
        {"n", 'n', ARG_INT, &a->n, "tokens to generate at most (default 128, chat 256)", 1, 1e7},
        {"stop", 0, ARG_STRING, &a->stop, "stop when this text is generated", 0, 0},
        {"ctx", 0, ARG_INT, &a->ctx, "context length (default: the model's, at most 4096)", 1,
         1 << 24},
        {"dtype", 0, ARG_STRING, &a->dtype, "convert weights at load: f32, f16 or bf16", 0, 0},
        {"kv-cache", 0, ARG_STRING, &a->kv_cache,
         "KV cache type: f32 (default) or f16 (half the memory; keys and values rounded)", 0, 0},
        {"threads", 't', ARG_INT, &a->threads, "threads (default: OMP_NUM_THREADS or all cores)", 1,
         1024},
        {"tokenizer", 0, ARG_STRING, &a->tokenizer, "tokenizer file (llama2.c models)", 0, 0},
        {"ids", 0, ARG_FLAG, &a->ids, "print generated token ids instead of text", 0, 0},
        {"no-bos", 0, ARG_FLAG, &a->no_bos, "do not prepend BOS to the prompt", 0, 0},
        {"ignore-eos", 0, ARG_FLAG, &a->ignore_eos,
         "do not stop at end-of-text tokens (benchmarks)", 0, 0},
        {"bench-prompt", 0, ARG_INT, &a->bench_prompt,
         "use N fixed pseudo-random token ids as the prompt (benchmarks; as llama-bench)", 1,
         1 << 24},
    };
    ArgParse ap = {.cmd = cmd,
                   .pos_usage = "MODEL",
                   .spec = spec,
                   .n_spec = (int)ARRAY_LEN(spec),
                   .min_pos = 1,
                   .max_pos = 1,
                   .summary =
                       chat_cmd ? "chat with a model on stdin" : "generate text from a prompt"};
    int r = args_parse(&ap, argc, argv);
    if (r != 0) return r > 0 ? 0 : 2;
    a->model_path = ap.pos[0];
    return -1; // parsed, go on
}

int cmd_generate(int argc, char **argv) {
    GenArgs a;
    int r = parse_gen_args(&a, argc, argv, "generate", false);
    if (r >= 0) return r;
    Gen g;
    if ((r = gen_setup(&g, &a)) != 0) {
        gen_release(&g);
        return r;
    }
    int32_t *ids = NULL;
    int n = 0;
    ChatMessage msgs[2];
    int nm = 0;
    if (a.system) msgs[nm++] = (ChatMessage){"system", a.system};
    msgs[nm++] = (ChatMessage){"user", a.prompt ? a.prompt : ""};
    r = gen_tokenize(&g, &a, a.chat ? msgs : NULL, nm, &ids, &n);
    GenStats stats = {0};
    if (!a.chat && !a.ids && a.prompt && *a.prompt && !a.bench_prompt)
        g.echo = a.prompt; // as run.c
    if (r == 0) r = gen_run(&g, ids, n, a.ids, NULL, &stats);
    if (r == 0) {
        printf("\n");
        print_stats(&stats);
    }
    free(ids);
    gen_release(&g);
    return r;
}

/* ---- chat ----------------------------------------------------------------------------- */

// Interactive: each line on stdin is a user turn. The whole conversation is re-rendered
// and tokenized each turn; the KV cache keeps the longest common token prefix, so only
// the new part is prefilled.
int cmd_chat(int argc, char **argv) {
    GenArgs a;
    int r = parse_gen_args(&a, argc, argv, "chat", true);
    if (r >= 0) return r;
    Gen g;
    if ((r = gen_setup(&g, &a)) != 0) {
        gen_release(&g);
        return r;
    }
    int cap = 64, nm = 0;
    ChatMessage *msgs = xmalloc((size_t)cap * sizeof *msgs);
    char **owned = xmalloc((size_t)cap * sizeof *owned);
    int32_t *cached = xmalloc((size_t)g.st.opt.max_ctx * sizeof *cached),
            *gen_ids = xmalloc((size_t)a.n * sizeof *gen_ids);
    int n_cached = 0;
    if (a.system) {
        owned[nm] = xstrdup(a.system);
        msgs[nm] = (ChatMessage){"system", owned[nm]};
        nm++;
    }
    char line[8192];
    fprintf(stderr, "chat with %s: type a message, an empty line or EOF ends\n", a.model_path);
    while (r == 0) {
        fprintf(stderr, "> ");
        if (!fgets(line, sizeof line, stdin)) break;
        line[strcspn(line, "\n")] = 0;
        if (!*line) break;
        if (nm + 2 > cap) {
            cap *= 2;
            msgs = xrealloc(msgs, (size_t)cap * sizeof *msgs);
            owned = xrealloc(owned, (size_t)cap * sizeof *owned);
        }
        owned[nm] = xstrdup(line);
        msgs[nm] = (ChatMessage){"user", owned[nm]};
        nm++;
        int32_t *ids;
        int n;
        if ((r = gen_tokenize(&g, &a, msgs, nm, &ids, &n)) != 0) break;
        int common = 0;
        while (common < n_cached && common < n - 1 && cached[common] == ids[common])
            common++;
        infer_seq_truncate(&g.st, 0, common);
        GenStats stats = {0};
        r = gen_run(&g, ids + common, n - common, false, gen_ids, &stats);
        if (r == 0) {
            // the cache now holds ids + generated tokens (the last one not yet decoded)
            memcpy(cached, ids, (size_t)n * sizeof *ids);
            n_cached = n;
            for (int i = 0; i + 1 < stats.n_gen && n_cached < g.st.opt.max_ctx; i++)
                cached[n_cached++] = gen_ids[i];
            infer_seq_truncate(&g.st, 0, n_cached);
            char *reply;
            size_t len;
            if (tokenizer_decode(g.m.tok, gen_ids, stats.n_gen, false, &reply, &len) != STATUS_OK) {
                free(ids);
                r = cli_fail(NULL);
                break;
            }
            owned[nm] = reply;
            msgs[nm] = (ChatMessage){"assistant", reply};
            nm++;
            printf("\n");
            print_stats(&stats);
        }
        free(ids);
    }
    for (int i = 0; i < nm; i++)
        free(owned[i]);
    free(owned);
    free(msgs);
    free(cached);
    free(gen_ids);
    gen_release(&g);
    return r;
}
