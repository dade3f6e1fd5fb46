/* k_par_for (par.h): threads are started per loop and joined at its end.
 * Starting and joining one costs ~40 us on the 2-core VM (20000 empty
 * loops); a training step of the built-in recipe (~53 ms) runs about 60
 * loops, so ~2.4 ms of it. A persistent pool could save part of that, at
 * the price of idle threads that spin or must be woken. */
#include "kernels/par.h"

#include <pthread.h>

#define PAR_MAX_THREADS 64

/* 1 on threads that must not start more (pid_backend_cpu_solo, and the
 * threads k_par_for starts). */
static _Thread_local int par_solo;

int pid_backend_cpu_solo(int solo)
{
    int was = par_solo;
    par_solo = solo != 0;
    return was;
}

typedef struct {
    k_par_fn fn;
    void *ctx;
    size_t i0, i1;
} par_range;

static void *par_run(void *arg)
{
    par_range *r = arg;
    par_solo = 1;
    r->fn(r->ctx, r->i0, r->i1);
    return NULL;
}

size_t k_par_grain(size_t bytes_per_item)
{
    const size_t target = (size_t)256 << 10;
    if (bytes_per_item == 0) return target;
    size_t g = target / bytes_per_item;
    return g ? g : 1;
}

void k_par_for(const pid_backend *be, size_t n, size_t grain, k_par_fn fn, void *ctx)
{
    if (n == 0) return;
    size_t t = be && !par_solo ? (size_t)pid_backend_threads(be) : 1;
    if (grain < 1) grain = 1;
    if (t > n / grain) t = n / grain;
    if (t > PAR_MAX_THREADS) t = PAR_MAX_THREADS;
    if (t <= 1) {
        fn(ctx, 0, n);
        return;
    }
    par_range r[PAR_MAX_THREADS];
    pthread_t tid[PAR_MAX_THREADS];
    int started[PAR_MAX_THREADS] = {0};
    for (size_t k = 0; k < t; k++)
        r[k] = (par_range){fn, ctx, n * k / t, n * (k + 1) / t};
    for (size_t k = 1; k < t; k++)
        started[k] = pthread_create(&tid[k], NULL, par_run, &r[k]) == 0;
    const int was = pid_backend_cpu_solo(1);
    fn(ctx, r[0].i0, r[0].i1);
    for (size_t k = 1; k < t; k++) {
        if (started[k])
            pthread_join(tid[k], NULL);
        else
            fn(ctx, r[k].i0, r[k].i1);
    }
    pid_backend_cpu_solo(was);
}
