/*
 * fuzz_hpo_space.c - libFuzzer target for search-space definitions (src/hpo/space.c): the
 * input as a space file (hpo_space_load), each of its lines as a --param flag
 * (hpo_space_add_flag) and as a distribution JSON (hpo_dist_from_json); every accepted
 * distribution is formatted and checked for containment at a few points.
 *
 *   make fuzz && build-fuzz/fuzz_hpo_space -max_total_time=120 -max_len=2048 fuzz/corpus/hpo_space
 */
#include "fuzz_util.h"

#include <math.h>

#include "core/log.h"
#include "hpo/space.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void poke(const HpoDist *d) {
    char buf[128];
    const double pts[] = {0.0, 1.0, -1.0, 0.5, 1e9, NAN};
    for (size_t i = 0; i < sizeof pts / sizeof pts[0]; i++) {
        (void)hpo_dist_contains(d, pts[i]);
        hpo_dist_format(d, pts[i], buf, sizeof buf);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    log_set_level(LOG_ERROR);
    char path[64];
    int fd = fuzz_memfd(data, size, path, sizeof path);
    if (fd < 0) return 0;
    HpoSpace sp = {0};
    if (hpo_space_load(&sp, path) == STATUS_OK)
        for (int i = 0; i < sp.n; i++)
            poke(&sp.params[i].dist);
    hpo_space_release(&sp);
    close(fd);
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = 0;
    HpoSpace fl = {0};
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        (void)hpo_space_add_flag(&fl, line);
        HpoDist d;
        if (hpo_dist_from_json(&d, line, "fuzz") == STATUS_OK) {
            poke(&d);
            hpo_dist_release(&d);
        }
    }
    for (int i = 0; i < fl.n; i++)
        poke(&fl.params[i].dist);
    hpo_space_release(&fl);
    free(text);
    return 0;
}
