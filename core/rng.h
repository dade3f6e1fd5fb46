/* Counter-based random numbers (Philox4x32-10, Salmon et al., SC'11) so the
 * CPU and the GPU draw identical streams from a seed: draw number i of stream
 * s under seed k is a pure function of (k, s, i), with no state to carry.
 * The inline functions compile for the host and, under nvcc, for the device. */
#ifndef PID_RNG_H
#define PID_RNG_H

#include <stdint.h>

#include "core/hd.h"

typedef struct {
    uint32_t v[4];
} pid_u32x4;

static PID_HD PID_INLINE uint32_t pid_mulhilo32(uint32_t a, uint32_t b, uint32_t *hi)
{
    uint64_t p = (uint64_t)a * (uint64_t)b;
    *hi = (uint32_t)(p >> 32);
    return (uint32_t)p;
}

/* One Philox4x32 block with 10 rounds. ctr: 128-bit counter, key: 64-bit key. */
static PID_HD PID_INLINE pid_u32x4 pid_philox4x32_10(pid_u32x4 ctr, uint32_t k0, uint32_t k1)
{
    for (int r = 0; r < 10; r++) {
        uint32_t hi0, hi1;
        uint32_t lo0 = pid_mulhilo32(0xD2511F53u, ctr.v[0], &hi0);
        uint32_t lo1 = pid_mulhilo32(0xCD9E8D57u, ctr.v[2], &hi1);
        pid_u32x4 n;
        n.v[0] = hi1 ^ ctr.v[1] ^ k0;
        n.v[1] = lo1;
        n.v[2] = hi0 ^ ctr.v[3] ^ k1;
        n.v[3] = lo0;
        ctr = n;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    return ctr;
}

/* Four uniform 32-bit words for block `index` of stream `stream` under `seed`. */
static PID_HD PID_INLINE pid_u32x4 pid_rng_block(uint64_t seed, uint64_t stream, uint64_t index)
{
    pid_u32x4 c;
    c.v[0] = (uint32_t)index;
    c.v[1] = (uint32_t)(index >> 32);
    c.v[2] = (uint32_t)stream;
    c.v[3] = (uint32_t)(stream >> 32);
    return pid_philox4x32_10(c, (uint32_t)seed, (uint32_t)(seed >> 32));
}

/* Map a 32-bit word to a float in (0, 1]: never 0, so log() is safe. */
static PID_HD PID_INLINE float pid_u01f(uint32_t x)
{
    return ((float)(x >> 8) + 1.0f) * (1.0f / 16777216.0f);
}

/* Map a 32-bit word to a double in (0, 1]. */
static PID_HD PID_INLINE double pid_u01d(uint32_t x)
{
    return ((double)x + 1.0) * (1.0 / 4294967296.0);
}

/* Host-side sequential view of one stream: convenient for the CPU generator.
 * Draws are the same words the device sees for (seed, stream, index). */
typedef struct {
    uint64_t seed, stream, index;
    pid_u32x4 buf;
    int used; /* words of buf already consumed (4 = empty) */
} pid_rng;

void pid_rng_init(pid_rng *r, uint64_t seed, uint64_t stream);
uint32_t pid_rng_u32(pid_rng *r);
/* Uniform double in (0, 1]. */
double pid_rng_uniform(pid_rng *r);
/* Uniform double in [lo, hi]. */
double pid_rng_range(pid_rng *r, double lo, double hi);
/* Uniform integer in [0, n). n must be > 0. */
uint32_t pid_rng_below(pid_rng *r, uint32_t n);
/* Standard normal (Box-Muller). */
double pid_rng_normal(pid_rng *r);
/* Poisson with mean lambda >= 0 (exact for lambda < 30, PTRS-free normal
 * approximation with continuity correction above, where it is within 1e-3). */
double pid_rng_poisson(pid_rng *r, double lambda);
/* Mix two 64-bit values into a new stream id (splitmix64 finalizer). */
uint64_t pid_rng_mix(uint64_t a, uint64_t b);

#endif
