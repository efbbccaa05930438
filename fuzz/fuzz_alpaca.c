/*
 * fuzz_alpaca.c - libFuzzer target for the training data reader (src/train/data.c): the input
 * is an Alpaca JSONL file read with alpaca_read_jsonl (skipping bad lines when the first byte
 * is odd, else stopping at the first), and every accepted set is rendered and tokenized with
 * the stories260K tokenizer (trainset_build: Alpaca template, 64-token window) and split.
 * Run from the repository root (the tokenizer is models/stories260K/tok512.bin).
 *
 *   make fuzz && build-fuzz/fuzz_alpaca -max_total_time=120 -max_len=4096 fuzz/corpus/alpaca
 */
#include "fuzz_util.h"

#include "core/log.h"
#include "model/tokenizer.h"
#include "train/data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static Tokenizer *tok;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    log_set_level(LOG_ERROR);
    if (!tok && tokenizer_load_llama2c(&tok, "models/stories260K/tok512.bin", 512) != STATUS_OK)
        abort(); // run from the repository root
    char path[64];
    int fd = fuzz_memfd(data, size, path, sizeof path);
    if (fd < 0) return 0;
    AlpacaSet set;
    if (alpaca_read_jsonl(&set, path, size > 0 && (data[0] & 1)) == STATUS_OK) {
        TrainSet ts;
        if (trainset_build(&ts, &set, tok, PROMPT_ALPACA, 64, true) == STATUS_OK) {
            DataSplit sp;
            data_split(&sp, ts.n, 0.1, 7);
            data_split_release(&sp);
            trainset_release(&ts);
        }
        alpaca_set_release(&set);
    }
    close(fd);
    return 0;
}
