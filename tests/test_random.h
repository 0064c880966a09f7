/* test_random.h: random test tensors, the same numbers on every machine
 * (xorshift64*, no libc rand). Include after <cmocka.h>. */
#ifndef USP_TEST_RANDOM_H
#define USP_TEST_RANDOM_H

#include <stdint.h>
#include <stdlib.h>

static uint64_t rng_state;

/* Starts the sequence for `seed`; the odd constant spreads small seeds
 * over the state, and +1 keeps it from being zero. */
static inline void rng_seed(uint64_t seed) {
    rng_state = seed * 0x9E3779B97F4A7C15ULL + 1;
}

/* Uniform in (-1, 1). */
static inline double uniform(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    uint64_t x = rng_state * 0x2545F4914F6CDD1DULL;
    return (double)(x >> 11) * 0x1p-52 - 1.0;
}

/* n uniform values; the caller frees them. */
static inline double *random_tensor(long n) {
    double *x = malloc(sizeof *x * (size_t)n);
    assert_non_null(x);
    for (long i = 0; i < n; i++) x[i] = uniform();
    return x;
}

#endif
