/* gpp/rng.h - the one random number generator of gppd: xoshiro256** seeded
 * by splitmix64.  Small, fast, and its whole state is four words, so a stage
 * can save it in a checkpoint and resume bit for bit.  Header-only.
 *
 * Every random choice (weight init, shuffling, dropout masks, augmentation,
 * random pruning) draws from a gpp_rng seeded from the job's `seed`; derive
 * independent streams with gpp_rng_seed(&r, seed ^ GPP_RNG_STREAM_x) or
 * gpp_rng_split(). */
#ifndef GPP_RNG_H
#define GPP_RNG_H

#include <math.h>
#include <stdint.h>

typedef struct gpp_rng {
    uint64_t s[4];   /* xoshiro256** state; never all zero */
} gpp_rng;

static inline uint64_t gpp__splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Seed the generator; the same seed always gives the same stream. */
static inline void gpp_rng_seed(gpp_rng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) r->s[i] = gpp__splitmix64(&x);
}

static inline uint64_t gpp__rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

/* Next 64 random bits. */
static inline uint64_t gpp_rng_next(gpp_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = gpp__rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
    s[2] ^= t;
    s[3] = gpp__rotl(s[3], 45);
    return result;
}

/* Uniform float in [0, 1) with 24 bits of precision. */
static inline float gpp_rng_uniform(gpp_rng *r)
{
    return (float)(gpp_rng_next(r) >> 40) * (1.0f / 16777216.0f);
}

/* Uniform integer in [0, n) without modulo bias (Lemire); n > 0. */
static inline uint32_t gpp_rng_below(gpp_rng *r, uint32_t n)
{
    uint64_t m = (uint64_t)(uint32_t)(gpp_rng_next(r) >> 32) * n;
    uint32_t lo = (uint32_t)m;
    if (lo < n) {
        uint32_t t = (uint32_t)(-n) % n;
        while (lo < t) {
            m = (uint64_t)(uint32_t)(gpp_rng_next(r) >> 32) * n;
            lo = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

/* Standard normal deviate (Box-Muller, one of the pair). */
static inline float gpp_rng_normal(gpp_rng *r)
{
    double u1 = ((double)(gpp_rng_next(r) >> 11) + 1.0) * (1.0 / 9007199254740993.0);
    double u2 = (double)(gpp_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

/* A new independent generator derived from r (advances r). */
static inline gpp_rng gpp_rng_split(gpp_rng *r)
{
    gpp_rng out;
    gpp_rng_seed(&out, gpp_rng_next(r));
    return out;
}

#endif
