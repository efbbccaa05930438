/*
 * test_data.c - Alpaca JSONL reading (errors with line numbers, skip mode, empty
 * sets), the seeded split and length-grouped batches, and the response-only loss
 * mask on the stories260K tokenizer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/common.h"
#include "core/fileio.h"
#include "train/data.h"
#include "testutil.h"

static const char *write_tmp(const char *name, const char *text) {
    static char path[256];
    snprintf(path, sizeof path, "build/%s", name);
    if (file_write_all(path, text, strlen(text)) != STATUS_OK) fail_msg("cannot write %s", path);
    return path;
}

static void test_jsonl_good_and_bad_lines(void **state) {
    (void)state;
    const char *text = "{\"instruction\": \"Add\", \"input\": \"1 2\", \"output\": \"3\"}\n"
                       "\n"
                       "{\"instruction\": \"Say hi\", \"output\": \"hi\"}\n"
                       "{\"instruction\": 5, \"output\": \"x\"}\n"
                       "not json\n"
                       "{\"instruction\": \"x\", \"input\": null, \"output\": \"y\"}";
    const char *p = write_tmp("test_data_a.jsonl", text);
    AlpacaSet set;
    // strict mode stops at the first bad line and names file:line
    assert_int_equal(alpaca_read_jsonl(&set, p, false), STATUS_ERR_FORMAT);
    char want[300];
    snprintf(want, sizeof want, "%s:4:", p);
    assert_non_null(strstr(status_msg(), want));
    // skip mode keeps the good ones with their line numbers
    assert_int_equal(alpaca_read_jsonl(&set, p, true), STATUS_OK);
    assert_int_equal(set.n, 3);
    assert_int_equal(set.n_skipped, 2);
    assert_string_equal(set.recs[0].input, "1 2");
    assert_string_equal(set.recs[1].input, "");
    assert_int_equal(set.recs[1].line, 3);
    assert_int_equal(set.recs[2].line, 6);
    alpaca_set_release(&set);
    unlink(p);
}

static void test_jsonl_empty_and_missing(void **state) {
    (void)state;
    const char *p = write_tmp("test_data_b.jsonl", "\n\n");
    AlpacaSet set;
    assert_int_equal(alpaca_read_jsonl(&set, p, true), STATUS_ERR_FORMAT);
    assert_non_null(strstr(status_msg(), "no usable records"));
    unlink(p);
    assert_int_equal(alpaca_read_jsonl(&set, "build/does-not-exist.jsonl", true), STATUS_ERR_IO);
}

static void test_split_is_seeded_disjoint_and_complete(void **state) {
    (void)state;
    DataSplit a, b, c;
    data_split(&a, 1000, 0.1, 42);
    data_split(&b, 1000, 0.1, 42);
    data_split(&c, 1000, 0.1, 43);
    assert_int_equal(a.n_val, 100);
    assert_int_equal(a.n_train, 900);
    assert_memory_equal(a.val, b.val, 100 * sizeof(int));
    assert_true(memcmp(a.val, c.val, 100 * sizeof(int)) != 0);
    char *seen = xcalloc(1000, 1);
    for (int i = 0; i < a.n_val; i++)
        seen[a.val[i]]++;
    for (int i = 0; i < a.n_train; i++)
        seen[a.train[i]]++;
    for (int i = 0; i < 1000; i++)
        assert_int_equal(seen[i], 1);
    free(seen);
    data_split_release(&a);
    data_split_release(&b);
    data_split_release(&c);
    DataSplit d;
    data_split(&d, 3, 0.1, 1); // tiny sets still get one validation example
    assert_int_equal(d.n_val, 1);
    data_split_release(&d);
}

static void test_length_grouped_batches(void **state) {
    (void)state;
    enum { N = 103, B = 8 };
    TrainSet ts = {0};
    ts.n = N;
    ts.ex = xcalloc(N, sizeof *ts.ex);
    int idx[N], order[N], starts[N + 1];
    for (int i = 0; i < N; i++) {
        ts.ex[i].len = 1 + (i * 37) % 200;
        idx[i] = i;
    }
    int nb = data_length_grouped_batches(&ts, idx, N, B, 4, 7, order, starts);
    assert_int_equal(nb, (N + B - 1) / B);
    assert_int_equal(starts[nb], N);
    char seen[N] = {0};
    for (int i = 0; i < N; i++)
        seen[order[i]]++;
    for (int i = 0; i < N; i++)
        assert_int_equal(seen[i], 1);
    // inside each batch lengths are non-increasing (sorted mega-batches cut in order)
    for (int b = 0; b < nb; b++)
        for (int k = starts[b] + 1; k < starts[b + 1]; k++)
            assert_true(ts.ex[order[k - 1]].len >= ts.ex[order[k]].len);
    int order2[N], starts2[N + 1];
    data_length_grouped_batches(&ts, idx, N, B, 4, 7, order2, starts2);
    assert_memory_equal(order, order2, sizeof order);
    free(ts.ex);
}

static void test_response_mask_stories260k(void **state) {
    (void)state;
    Tokenizer *tok;
    if (tokenizer_load_llama2c(&tok, "models/stories260K/tok512.bin", 512) != STATUS_OK)
        fail_msg("%s", status_msg());
    AlpacaSet set = {0};
    AlpacaRecord r = {(char *)"Tell a story", (char *)"", (char *)"Once upon a time", 1};
    set.recs = &r;
    set.n = 1;
    TrainSet ts;
    assert_int_equal(trainset_build(&ts, &set, tok, PROMPT_ALPACA, 4096, true), STATUS_OK);
    assert_int_equal(ts.n, 1);
    // the prompt's own tokens are masked, the rest (response + EOS) are targets
    char *prompt = alpaca_render("Tell a story", "");
    int32_t *pids;
    int np;
    assert_int_equal(tokenizer_encode(tok, prompt, strlen(prompt), TOKENIZE_ADD_BOS, &pids, &np),
                     STATUS_OK);
    const TrainExample *ex = &ts.ex[0];
    assert_memory_equal(ex->ids, pids, (size_t)np * sizeof *pids);
    for (int t = 0; t < ex->len; t++)
        assert_int_equal(ex->mask[t], t >= np);
    assert_int_equal(ex->ids[ex->len - 1], tokenizer_eos_id(tok));
    assert_int_equal(ex->n_target, ex->len - np);
    trainset_release(&ts);
    // a window shorter than the prompt leaves nothing to train on: an error
    assert_int_equal(trainset_build(&ts, &set, tok, PROMPT_ALPACA, np, true), STATUS_ERR_FORMAT);
    free(prompt);
    free(pids);
    tokenizer_free(tok);
}

// Special tokens as Hugging Face tokenizes training text (SmolLM2's tokenizer, committed under
// tests/fixtures/tokenizers): Alpaca text gets no BOS (SmolLM2's files add none; stories260K
// above gets its BOS) and its "<|im_end|>" text is the control token, as tokenizer(text)
// parses it; chat text is the template's rendering with nothing added, so it starts with the
// template's one <|im_start|>; both end in EOS (<|im_end|>).
static void test_special_tokens_smollm2(void **state) {
    (void)state;
    Tokenizer *tok;
    if (tokenizer_load_hf(&tok, "tests/fixtures/tokenizers/smollm2") != STATUS_OK)
        fail_msg("%s", status_msg());
    const int32_t bos = tokenizer_bos_id(tok), eos = tokenizer_eos_id(tok);
    AlpacaRecord r = {(char *)"Name a color.", (char *)"", (char *)"Blue.<|im_end|>", 1};
    AlpacaSet set = {.recs = &r, .n = 1};
    for (int f = 0; f < 2; f++) {
        TrainSet ts;
        assert_int_equal(trainset_build(&ts, &set, tok, (PromptFormat)f, 4096, true), STATUS_OK);
        char *prompt;
        assert_int_equal(data_render_prompt(&r, tok, (PromptFormat)f, &prompt), STATUS_OK);
        size_t lp = strlen(prompt);
        char *full = malloc(lp + strlen(r.output) + 1);
        memcpy(full, prompt, lp);
        strcpy(full + lp, r.output);
        int32_t *ids;
        int n;
        assert_int_equal(tokenizer_encode(tok, full, strlen(full),
                                          f == PROMPT_CHAT ? TOKENIZE_PARSE_SPECIAL : TOKENIZE_HF,
                                          &ids, &n),
                         STATUS_OK);
        const TrainExample *ex = &ts.ex[0];
        assert_int_equal(ex->len, n + 1);
        assert_memory_equal(ex->ids, ids, (size_t)n * sizeof *ids);
        assert_int_equal(ex->ids[n - 1], eos); // the "<|im_end|>" text, parsed
        assert_int_equal(ex->ids[n], eos);
        if (f == PROMPT_CHAT) {
            assert_int_equal(ex->ids[0], bos); // "<|im_start|>system": the template's own
            assert_int_not_equal(ex->ids[1], bos);
        } else {
            assert_int_not_equal(ex->ids[0], bos);
        }
        free(ids);
        free(full);
        free(prompt);
        trainset_release(&ts);
    }
    tokenizer_free(tok);
}

// Llama 3 chat text (models/llama3-tokenizer, fetched by tools/fetch_llama3_tokenizer.sh;
// skipped without it): the rendering starts with its own <|begin_of_text|> and gets no second
// one; Alpaca text gets the tokenizer's BOS (its files add one).
static void test_special_tokens_llama3(void **state) {
    (void)state;
    Tokenizer *tok;
    if (!path_is_file("models/llama3-tokenizer/tokenizer.json")) skip();
    if (tokenizer_load_hf(&tok, "models/llama3-tokenizer") != STATUS_OK)
        fail_msg("%s", status_msg());
    const int32_t bos = tokenizer_bos_id(tok);
    assert_int_equal(bos, 128000);
    AlpacaRecord r = {(char *)"Name a color.", (char *)"", (char *)"Blue.", 1};
    AlpacaSet set = {.recs = &r, .n = 1};
    for (int f = 0; f < 2; f++) {
        TrainSet ts;
        assert_int_equal(trainset_build(&ts, &set, tok, (PromptFormat)f, 4096, true), STATUS_OK);
        assert_int_equal(ts.ex[0].ids[0], bos);
        assert_int_not_equal(ts.ex[0].ids[1], bos);
        trainset_release(&ts);
    }
    tokenizer_free(tok);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jsonl_good_and_bad_lines),
        cmocka_unit_test(test_jsonl_empty_and_missing),
        cmocka_unit_test(test_split_is_seeded_disjoint_and_complete),
        cmocka_unit_test(test_length_grouped_batches),
        cmocka_unit_test(test_response_mask_stories260k),
        cmocka_unit_test(test_special_tokens_smollm2),
        cmocka_unit_test(test_special_tokens_llama3),
    };
    return cmocka_run_group_tests_name("data", tests, NULL, NULL);
}
