/* Unit tests for synth/outlier.*: rows are finite, in [0, 1] with a maximum
 * of 1; the stream is reproducible and independent of how a range is split;
 * seeds differ; sharp-peak outliers have between PID_OUTLIER_MIN_PEAKS and
 * PID_OUTLIER_MAX_PEAKS resolved maxima; about PID_OUTLIER_AMORPHOUS_FRAC
 * are smooth (amorphous); bad arguments are refused. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "synth/outlier.h"

static const k_xrd_grid GRID = {
    .axis = K_XRD_AXIS_TWO_THETA, .n_points = 3501, .x0 = 10.0f, .step = 0.02f};

static void test_rows_normalized(void **state)
{
    (void)state;
    enum { N = 200 };
    float *y = malloc(sizeof(float) * N * 3501);
    assert_non_null(y);
    pid_error err;
    assert_int_equal(pid_outlier_patterns(&GRID, 7, 0, N, y, &err), PID_OK);
    for (int i = 0; i < N; i++) {
        float mx = 0.0f;
        for (int j = 0; j < 3501; j++) {
            float v = y[(size_t)i * 3501 + j];
            assert_true(isfinite(v));
            assert_true(v >= 0.0f && v <= 1.0f);
            if (v > mx) mx = v;
        }
        assert_float_equal(mx, 1.0f, 1e-6);
    }
    free(y);
}

static void test_reproducible_and_split_invariant(void **state)
{
    (void)state;
    enum { N = 24 };
    const size_t p = 3501;
    float *a = malloc(sizeof(float) * N * p), *b = malloc(sizeof(float) * N * p),
          *c = malloc(sizeof(float) * N * p);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    pid_error err;
    assert_int_equal(pid_outlier_patterns(&GRID, 11, 100, N, a, &err), PID_OK);
    assert_int_equal(pid_outlier_patterns(&GRID, 11, 100, 10, b, &err), PID_OK);
    assert_int_equal(pid_outlier_patterns(&GRID, 11, 110, N - 10, b + 10 * p, &err), PID_OK);
    assert_memory_equal(a, b, sizeof(float) * N * p);
    assert_int_equal(pid_outlier_patterns(&GRID, 12, 100, N, c, &err), PID_OK);
    int same = 0;
    for (int i = 0; i < N; i++)
        same += !memcmp(a + i * p, c + i * p, sizeof(float) * p);
    assert_int_equal(same, 0);
    free(a);
    free(b);
    free(c);
}

/* Local maxima standing clear of the noise: y[j] is the largest within
 * +-0.3 deg and exceeds the lowest point of +-3 deg by 10 % of the maximum (7 sigma of the largest
 * noise). */
static int count_peaks(const float *y, int p)
{
    int n = 0;
    for (int j = 15; j < p - 15; j++) {
        int top = 1;
        for (int d = -15; d <= 15 && top; d++)
            if (d && y[j + d] > y[j]) top = 0;
        if (!top) continue;
        float lo = y[j];
        for (int d = -150; d <= 150; d += 10) {
            int q = j + d;
            if (q >= 0 && q < p && y[q] < lo) lo = y[q];
        }
        if (y[j] - lo > 0.10f) n++;
    }
    return n;
}

static void test_peak_counts(void **state)
{
    (void)state;
    enum { N = 400 };
    const int p = 3501;
    float *y = malloc(sizeof(float) * N * (size_t)p);
    assert_non_null(y);
    pid_error err;
    assert_int_equal(pid_outlier_patterns(&GRID, 3, 0, N, y, &err), PID_OK);
    int smooth = 0, max_peaks = 0;
    for (int i = 0; i < N; i++) {
        const float *r = y + (size_t)i * p;
        /* the sharpest point-to-point rise: amorphous humps (FWHM >= 3 deg)
         * rise by < 2 % per 0.02 deg step, peaks of <= 0.6 deg by far more */
        float rise = 0.0f;
        for (int j = 1; j < p; j++) {
            /* compare over 5 points so the 1.5 % noise does not dominate */
            if (j >= 5) {
                float d = fabsf(r[j] - r[j - 5]);
                if (d > rise) rise = d;
            }
        }
        int np = count_peaks(r, p);
        if (np > max_peaks) max_peaks = np;
        if (rise < 0.12f)
            smooth++;
        else
            assert_true(np >= 1 && np <= PID_OUTLIER_MAX_PEAKS);
    }
    /* 10 % amorphous: 40 expected of 400, binomial sd 6 */
    assert_in_range(smooth, 20, 62);
    assert_true(max_peaks >= 10);
    free(y);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    float y[8];
    pid_error err;
    k_xrd_grid g = GRID;
    g.n_points = 1;
    assert_int_equal(pid_outlier_patterns(&g, 0, 0, 1, y, &err), PID_ERR_ARG);
    g = GRID;
    g.step = 0.0f;
    assert_int_equal(pid_outlier_patterns(&g, 0, 0, 1, y, &err), PID_ERR_ARG);
    g = GRID;
    g.x0 = NAN;
    assert_int_equal(pid_outlier_patterns(&g, 0, 0, 1, y, &err), PID_ERR_ARG);
    assert_int_equal(pid_outlier_patterns(&GRID, 0, 0, -1, y, &err), PID_ERR_ARG);
    assert_int_equal(pid_outlier_patterns(&GRID, 0, 0, 1, NULL, &err), PID_ERR_ARG);
    assert_int_equal(pid_outlier_patterns(&GRID, 0, 0, 0, NULL, &err), PID_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows_normalized),
        cmocka_unit_test(test_reproducible_and_split_invariant),
        cmocka_unit_test(test_peak_counts),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
