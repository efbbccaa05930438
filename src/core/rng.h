/*
 * rng.h - explicit, seedable random number generator (xoshiro256**, seeded by
 * splitmix64). No hidden global state: every consumer gets an Rng* passed in.
 * Streams are reproducible across platforms and thread counts.
 */
#ifndef EF_RNG_H
#define EF_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t s[4];
} Rng;

void rng_seed(Rng *r, uint64_t seed);
uint64_t rng_u64(Rng *r);
// Uniform in [0, 1) with 53 random bits.
double rng_uniform(Rng *r);
// Uniform float in [0, 1) with 24 random bits.
float rng_float(Rng *r);
// Uniform integer in [0, n) without modulo bias; n > 0.
uint64_t rng_below(Rng *r, uint64_t n);
// Standard normal (Box-Muller, no cached second value so the state is the whole story).
double rng_normal(Rng *r);

#endif
