/* Host-side sequential helpers over the Philox streams of rng.h. */
#include "core/rng.h"

#include <math.h>

void pid_rng_init(pid_rng *r, uint64_t seed, uint64_t stream)
{
    r->seed = seed;
    r->stream = stream;
    r->index = 0;
    r->used = 4;
}

uint32_t pid_rng_u32(pid_rng *r)
{
    if (r->used == 4) {
        r->buf = pid_rng_block(r->seed, r->stream, r->index++);
        r->used = 0;
    }
    return r->buf.v[r->used++];
}

double pid_rng_uniform(pid_rng *r)
{
    return pid_u01d(pid_rng_u32(r));
}

double pid_rng_range(pid_rng *r, double lo, double hi)
{
    return lo + (hi - lo) * (pid_rng_uniform(r) - 0x1p-33);
}

uint32_t pid_rng_below(pid_rng *r, uint32_t n)
{
    /* Lemire's multiply-shift; the bias (< n / 2^32) is irrelevant here. */
    return (uint32_t)(((uint64_t)pid_rng_u32(r) * n) >> 32);
}

double pid_rng_normal(pid_rng *r)
{
    double u1 = pid_rng_uniform(r), u2 = pid_rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

double pid_rng_poisson(pid_rng *r, double lambda)
{
    if (!(lambda > 0)) return 0.0;
    if (lambda < 30.0) { /* Knuth's product method: exact */
        double L = exp(-lambda), p = 1.0;
        int k = 0;
        do {
            k++;
            p *= pid_rng_uniform(r);
        } while (p > L);
        return (double)(k - 1);
    }
    double x = floor(lambda + sqrt(lambda) * pid_rng_normal(r) + 0.5);
    return x < 0 ? 0 : x;
}

uint64_t pid_rng_mix(uint64_t a, uint64_t b)
{
    uint64_t z = a + 0x9E3779B97F4A7C15ull * (b + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
