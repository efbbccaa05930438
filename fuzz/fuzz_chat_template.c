/*
 * fuzz_chat_template.c - libFuzzer target for what chat_render reads from a model's chat
 * template (src/model/chat.c: the family pick, a ChatML default system prompt with its
 * Jinja string escapes, Llama 3.1's date_string): arbitrary bytes as the template of a
 * one-token tokenizer, then conversations with and without a system turn rendered through
 * CHAT_TEMPLATE_AUTO. Errors are expected; crashes, overreads (ASan) and undefined
 * behaviour (UBSan) are bugs.
 *
 *   make fuzz && build-fuzz/fuzz_chat_template -max_total_time=60 -max_len=4096 \
 *       build-fuzz/corpus-chat_template fuzz/corpus/chat_template
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *tmpl = malloc(size + 1); // a template is a C string in the tokenizer
    if (!tmpl) return 0;
    memcpy(tmpl, data, size);
    tmpl[size] = '\0';
    static const char *const tokens[] = {"a"};
    static const float scores[] = {0.0f};
    TokenizerSpec sp = {.kind = TOKENIZER_SPM,
                        .n_vocab = 1,
                        .tokens = tokens,
                        .scores = scores,
                        .bos_id = -1,
                        .eos_id = -1,
                        .unk_id = -1,
                        .pad_id = -1,
                        .chat_template = tmpl};
    Tokenizer *t = NULL;
    if (tokenizer_build(&t, &sp, "fuzz") == STATUS_OK) {
        static const ChatMessage conv[] = {
            {"system", " Be brief. "}, {"user", "hi"}, {"assistant", "Hello!"}, {"user", "x"}};
        for (int first = 0; first < 2; first++) {
            char *out = NULL;
            if (chat_render(t, CHAT_TEMPLATE_AUTO, conv + first, 4 - first, true, &out) ==
                STATUS_OK)
                free(out);
        }
        tokenizer_free(t);
    }
    free(tmpl);
    return 0;
}
