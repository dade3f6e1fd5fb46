/* Unit tests for the CPU kernels' parallel loop (kernels/par.h): every index
 * is visited exactly once in contiguous ranges, small loops and "solo"
 * threads stay on the caller, nested loops do not start threads, and the
 * lane sum agrees with a plain double sum. */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/rng.h"
#include "kernels/backend.h"
#include "kernels/par.h"

#define MAX_RANGES 64

typedef struct {
    pthread_mutex_t mu;
    int *hits; /* per index */
    int n_ranges;
    size_t lo[MAX_RANGES], hi[MAX_RANGES];
    pthread_t who[MAX_RANGES];
    const pid_backend *be; /* for the nested loop (NULL: none) */
    int nested_ranges;     /* ranges the nested loops ran as */
} visit;

static void count_range(void *ctx, size_t i0, size_t i1)
{
    visit *v = ctx;
    pthread_mutex_lock(&v->mu);
    if (v->n_ranges < MAX_RANGES) {
        v->lo[v->n_ranges] = i0, v->hi[v->n_ranges] = i1;
        v->who[v->n_ranges] = pthread_self();
    }
    v->n_ranges++;
    for (size_t i = i0; i < i1; i++)
        v->hits[i]++;
    pthread_mutex_unlock(&v->mu);
}

static void nested_range(void *ctx, size_t i0, size_t i1)
{
    visit *v = ctx;
    visit inner = {.mu = PTHREAD_MUTEX_INITIALIZER};
    int hits[1000] = {0};
    inner.hits = hits;
    k_par_for(v->be, 1000, 1, count_range, &inner);
    pthread_mutex_lock(&v->mu);
    v->nested_ranges += inner.n_ranges;
    pthread_mutex_unlock(&v->mu);
    count_range(ctx, i0, i1);
}

static visit *run(const pid_backend *be, size_t n, size_t grain, k_par_fn fn)
{
    visit *v = calloc(1, sizeof *v);
    pthread_mutex_init(&v->mu, NULL);
    v->hits = calloc(n ? n : 1, sizeof(int));
    v->be = be;
    k_par_for(be, n, grain, fn, v);
    return v;
}

static void done(visit *v)
{
    pthread_mutex_destroy(&v->mu);
    free(v->hits);
    free(v);
}

/* Each index once; the ranges, sorted by start, tile [0, n). */
static void assert_tiles(const visit *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        assert_int_equal(v->hits[i], 1);
    assert_true(v->n_ranges >= 1 && v->n_ranges <= MAX_RANGES);
    size_t at = 0;
    for (int k = 0; k < v->n_ranges; k++) {
        int found = 0;
        for (int j = 0; j < v->n_ranges; j++)
            if (v->lo[j] == at && v->hi[j] > at) {
                at = v->hi[j];
                found = 1;
                break;
            }
        assert_true(found);
    }
    assert_true(at == n);
}

static void test_par_for(void **state)
{
    pid_backend *be = NULL, *one = NULL;
    pid_error err;
    assert_int_equal(pid_backend_create(&be, "cpu", 0, &err), PID_OK);
    assert_int_equal(pid_backend_create(&one, "cpu", 1, &err), PID_OK);
    const int t = pid_backend_threads(be);

    /* one range per thread, each index once */
    visit *v = run(be, 1000, 1, count_range);
    assert_tiles(v, 1000);
    assert_int_equal(v->n_ranges, t);
    for (int k = 0; k < v->n_ranges; k++) /* the caller runs the first range, threads the rest */
        assert_int_equal(!!pthread_equal(v->who[k], pthread_self()), v->lo[k] == 0);
    done(v);

    /* a one-thread backend, and a loop under 2 x grain: the caller, once */
    v = run(one, 1000, 1, count_range);
    assert_tiles(v, 1000);
    assert_int_equal(v->n_ranges, 1);
    assert_true(pthread_equal(v->who[0], pthread_self()));
    done(v);
    v = run(be, 15, 8, count_range);
    assert_tiles(v, 15);
    assert_int_equal(v->n_ranges, 1);
    assert_true(pthread_equal(v->who[0], pthread_self()));
    done(v);

    /* fewer items than threads: ranges of at least one */
    v = run(be, 1, 1, count_range);
    assert_tiles(v, 1);
    assert_int_equal(v->n_ranges, 1);
    done(v);

    /* nothing to do: fn is not called */
    v = run(be, 0, 1, count_range);
    assert_int_equal(v->n_ranges, 0);
    done(v);

    /* solo: the caller runs the whole loop; the previous setting comes back */
    assert_int_equal(pid_backend_cpu_solo(1), 0);
    v = run(be, 1000, 1, count_range);
    assert_tiles(v, 1000);
    assert_int_equal(v->n_ranges, 1);
    assert_true(pthread_equal(v->who[0], pthread_self()));
    done(v);
    assert_int_equal(pid_backend_cpu_solo(0), 1);

    /* a loop inside a range runs as one range on that range's thread, and
     * the caller is no longer solo afterwards */
    v = run(be, 1000, 1, nested_range);
    assert_tiles(v, 1000);
    assert_int_equal(v->nested_ranges, v->n_ranges);
    done(v);
    assert_int_equal(pid_backend_cpu_solo(0), 0);
    if (t < 2) printf("(only one CPU online: the multi-thread cases ran as one range)\n");

    pid_backend_destroy(be);
    pid_backend_destroy(one);
}

static void test_par_grain(void **state)
{
    assert_int_equal(k_par_grain(0), 256 << 10);
    assert_int_equal(k_par_grain(4), 64 << 10);
    assert_int_equal(k_par_grain(1 << 20), 1);
}

/* The lane sum against a plain double sum: equal to rounding (each partial
 * sum is exact for these values: integers times 2^-10 below 2^20). */
static void test_sum_run(void **state)
{
    pid_rng g;
    pid_rng_init(&g, 9, 9);
    float x[300];
    for (size_t n = 0; n <= 300; n += (n < 20 ? 1 : 37)) {
        double plain = 0.0;
        for (size_t i = 0; i < n; i++) {
            x[i] = (float)((int)pid_rng_below(&g, 2048) - 1024) / 1024.0f;
            plain += x[i];
        }
        assert_true(k_sum_run(x, n) == plain);
    }
    /* and close to it on values of every size */
    double plain = 0.0;
    for (size_t i = 0; i < 300; i++) {
        x[i] = (float)(pid_rng_range(&g, -1.0, 1.0) * pow(10.0, pid_rng_range(&g, -6, 6)));
        plain += x[i];
    }
    double s = k_sum_run(x, 300);
    assert_true(fabs(s - plain) <= 1e-12 * 300 * 1e6);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_par_for),
        cmocka_unit_test(test_par_grain),
        cmocka_unit_test(test_sum_run),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
