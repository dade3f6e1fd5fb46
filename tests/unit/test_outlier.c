/* Unit tests for synth/outlier.*: rows are finite, in [0, 1] with a maximum
 * of 1; the stream is reproducible and independent of how a range is split;
 * seeds differ; sharp-peak outliers have between PID_OUTLIER_MIN_PEAKS and
 * PID_OUTLIER_MAX_PEAKS resolved maxima; about PID_OUTLIER_AMORPHOUS_FRAC
 * are smooth (amorphous); bad arguments are refused. Lattice outliers
 * (pid_outlier_relative): cell lengths scaled by 1 -+ [MIN, MAX] in the
 * pattern the crystal system allows (one factor cubic, a = b apart from c
 * uniaxial), angles and atom positions kept, each element swapped
 * consistently for a valid one, reproducible per (seed, index); a library
 * made of them in memory (pid_phaselib_from) holds copies. */
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
#include "synth/phaselib.h"

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

static int factor_ok(double f)
{
    const double u = fabs(f - 1.0);
    return u >= PID_OUTLIER_CELL_MIN - 1e-12 && u <= PID_OUTLIER_CELL_MAX + 1e-12;
}

static void test_relatives(void **state)
{
    (void)state;
    pid_error err;
    pid_phaselib *lib = NULL;
    assert_int_equal(pid_phaselib_load("builtin", &lib, &err), PID_OK);
    const char *names[] = {"Fe_229", "ZnO_186", "TiO2_136", "CaCO3_62", "CuO_15"};
    enum { R = 25 };
    const pid_structure *made[5 * R];
    pid_structure *own[5 * R];
    int nm = 0, swapped = 0;
    for (int p = 0; p < 5; p++) {
        const pid_structure *s = pid_phaselib_find(lib, names[p]);
        assert_non_null(s);
        for (int i = 0; i < R; i++) {
            pid_structure *r = NULL, *r2 = NULL;
            assert_int_equal(pid_outlier_relative(s, 11, (uint64_t)(p * R + i), &r, &err), PID_OK);
            const double fa = r->a / s->a, fb = r->b / s->b, fc = r->c / s->c;
            assert_true(factor_ok(fa) && factor_ok(fb) && factor_ok(fc));
            const int sg = s->spacegroup_number;
            if (sg >= 195) assert_true(fabs(fa - fb) < 1e-12 && fabs(fa - fc) < 1e-12);
            if (sg >= 75) assert_true(fabs(fa - fb) < 1e-12);
            assert_true(r->alpha == s->alpha && r->beta == s->beta && r->gamma == s->gamma);
            assert_int_equal(r->n_sites, s->n_sites);
            for (int a = 0; a < s->n_sites; a++) {
                assert_memory_equal(r->sites[a].frac, s->sites[a].frac, sizeof s->sites[a].frac);
                assert_true(r->sites[a].z >= 1 && r->sites[a].z <= 83);
                assert_string_equal(r->sites[a].element, pid_element_symbol(r->sites[a].z));
                swapped += r->sites[a].z != s->sites[a].z;
                /* one element -> one element */
                for (int b = 0; b < a; b++)
                    if (s->sites[b].z == s->sites[a].z)
                        assert_int_equal(r->sites[b].z, r->sites[a].z);
            }
            assert_non_null(strstr(r->name, "~"));
            /* the same (seed, index): the same relative; another seed: another cell */
            assert_int_equal(pid_outlier_relative(s, 11, (uint64_t)(p * R + i), &r2, &err), PID_OK);
            assert_true(r2->a == r->a && r2->c == r->c && r2->sites[0].z == r->sites[0].z);
            pid_structure_destroy(r2);
            assert_int_equal(pid_outlier_relative(s, 12, (uint64_t)(p * R + i), &r2, &err), PID_OK);
            assert_true(r2->a != r->a || r2->c != r->c);
            pid_structure_destroy(r2);
            own[nm] = r;
            made[nm++] = r;
        }
    }
    assert_true(swapped > 0);
    pid_phaselib *rl = NULL;
    assert_int_equal(pid_phaselib_from(made, nm, "(relatives)", &rl, &err), PID_OK);
    assert_int_equal(pid_phaselib_count(rl), nm);
    assert_string_equal(pid_phaselib_get(rl, 7)->name, made[7]->name);
    assert_true(pid_phaselib_get(rl, 7)->a == made[7]->a);
    for (int i = 0; i < nm; i++)
        pid_structure_destroy(own[i]);
    /* copies: still readable after the originals are gone */
    assert_int_equal(pid_phaselib_get(rl, nm - 1)->n_sites,
                     pid_phaselib_find(lib, "CuO_15")->n_sites);
    pid_phaselib *none = NULL;
    assert_int_equal(pid_phaselib_from(made, 0, "", &none, &err), PID_ERR_ARG);
    assert_null(none);
    pid_phaselib_destroy(rl);
    pid_phaselib_destroy(lib);
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
        cmocka_unit_test(test_relatives),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
