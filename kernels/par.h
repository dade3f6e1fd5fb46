/* A parallel loop for the CPU reference kernels: [0, n) is cut into one
 * contiguous range per thread of the backend and each range runs fn. The
 * kernels give every item (a sample, a channel, an element) the same
 * arithmetic whichever range holds it, so their results do not depend on the
 * number of threads. Not for use outside kernels/. */
#ifndef PID_KERNELS_PAR_H
#define PID_KERNELS_PAR_H

#include <stddef.h>

#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef void (*k_par_fn)(void *ctx, size_t i0, size_t i1);

/* Runs fn(ctx, i0, i1) over ranges covering [0, n) once, on up to
 * pid_backend_threads(be) threads (the caller runs the first range), with at
 * least `grain` items per range, so small loops stay on the calling thread.
 * If a thread cannot be started its range runs on the caller: never fails. */
void k_par_for(const pid_backend *be, size_t n, size_t grain, k_par_fn fn, void *ctx);

/* Items of `bytes_per_item` bytes that make a range worth a thread (~256 KiB
 * of memory traffic: below it, starting the thread costs more than it saves). */
size_t k_par_grain(size_t bytes_per_item);

/* The sum of x[0..n) in double, as 8 interleaved partial sums (lane j
 * takes x[j], x[j + 8], ...) added together at the end in a fixed order.
 * The lanes vectorize and do not wait on one another; one running sum was
 * bound by the adder's latency (4 cycles a float). The kernels' channel sums
 * are made of these over contiguous runs, so they depend on the shapes
 * only. */
#define K_SUM_LANES 8

/* The lanes' partial sums added in the one fixed order every lane sum uses. */
static inline double k_sum_lanes(const double acc[K_SUM_LANES])
{
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

static inline double k_sum_run(const float *x, size_t n)
{
    double acc[K_SUM_LANES] = {0};
    size_t i = 0;
    for (; i + K_SUM_LANES <= n; i += K_SUM_LANES)
        for (int j = 0; j < K_SUM_LANES; j++)
            acc[j] += x[i + j];
    for (int j = 0; i < n; i++, j++)
        acc[j] += x[i];
    return k_sum_lanes(acc);
}

#ifdef __cplusplus
}
#endif
#endif
