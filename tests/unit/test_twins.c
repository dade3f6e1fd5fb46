/* Unit tests for models/twins.*: on phases of the built-in library (sticks
 * from the simulator, Cu K-alpha1, 2-theta 10-80 deg at 0.02 deg, +-3 %
 * strain):
 * - bcc Cr and Fe (a = 2.884 and 2.867 A, one atom per lattice point) are
 *   near twins, and so are diamond-type Si and Ge and zincblende GaAs
 *   (a = 5.431, 5.658, 5.653 A: Si-Ge needs 4 % of relative strain, within
 *   the 6 % two +-3 % strains span); the same pairs and cosines (to 1e-3)
 *   as the independent numpy implementation
 *   (benchmarks/bench_common.near_twins) gives for the whole library;
 * - W (a = 3.165 A) is not one of Cr (its cell is 9.7 % larger, out of
 *   reach), NaCl is not one of MgO (cells 34 % apart), nor of KCl (rock
 *   salt too, cells 11.5 % apart);
 * - without strain Cr and Fe are not compared (their cells differ by 0.6 %);
 * - a phase and its own copy are twins with cosine 1 when cubic, never when
 *   monoclinic (not compared);
 * - bad settings and phases are refused;
 * - twins_matrix marks each pair both ways and skips pairs out of range. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "models/residual.h"
#include "models/twins.h"
#include "synth/phaselib.h"

#define NPT 3501
#define WL 1.540562

/* in the library's (alphabetical) order: the comparison strains the second
 * phase of a pair, so its cosine depends slightly on the order (edges of
 * the grid), and this order gives bench_common's pairs exactly */
static const char *const NAMES[] = {"Cr_229",  "CuO_15",  "Fe_229",   "GaAs_216", "Ge_227",
                                    "KCl_225", "MgO_225", "NaCl_225", "Si_227",   "W_229"};
enum { K = sizeof NAMES / sizeof NAMES[0] };

static pid_phaselib *lib;
static twin_phase ph[K];
static int32_t *hkl[K];
static float *inten[K];

static int setup(void **state)
{
    (void)state;
    pid_error err;
    if (pid_phaselib_load("builtin", &lib, &err)) return -1;
    for (int c = 0; c < K; c++) {
        const pid_structure *s = pid_phaselib_find(lib, NAMES[c]);
        if (!s || twins_phase_of(s, 10.0, 0.02, NPT, WL, 0.03, &ph[c], &hkl[c], &inten[c], &err))
            return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int c = 0; c < K; c++) {
        free(hkl[c]);
        free(inten[c]);
    }
    pid_phaselib_destroy(lib);
    return 0;
}

static int index_of(const char *name)
{
    for (int c = 0; c < K; c++)
        if (!strcmp(NAMES[c], name)) return c;
    return -1;
}

/* The cosine of pair (a, b) in the result, or -2 when it is not listed. */
static double pair_cos(const int32_t *pr, const float *cs, int n, const char *a, const char *b)
{
    int i = index_of(a), j = index_of(b);
    for (int t = 0; t < n; t++)
        if ((pr[2 * t] == i && pr[2 * t + 1] == j) || (pr[2 * t] == j && pr[2 * t + 1] == i))
            return cs[t];
    return -2.0;
}

static void test_library_pairs(void **state)
{
    (void)state;
    pid_error err;
    int32_t *pr = NULL;
    float *cs = NULL;
    int n = -1;
    assert_int_equal(twins_find(ph, K, 10.0, 0.02, NPT, WL, 0.03, TWIN_MIN_COS, &pr, &cs, &n, &err),
                     PID_OK);
    for (int t = 0; t < n; t++) {
        printf("  twins: %s %s %.4f\n", NAMES[pr[2 * t]], NAMES[pr[2 * t + 1]], (double)cs[t]);
        assert_true(pr[2 * t] < pr[2 * t + 1]);
        assert_true(cs[t] >= TWIN_MIN_COS && cs[t] <= 1.0 + 1e-6);
    }
    /* the pairs (and cosines, to 1e-3) of bench_common.near_twins */
    assert_true(fabs(pair_cos(pr, cs, n, "Cr_229", "Fe_229") - 0.9998) < 1e-3);
    assert_true(fabs(pair_cos(pr, cs, n, "Si_227", "Ge_227") - 0.9971) < 1e-3);
    assert_true(fabs(pair_cos(pr, cs, n, "GaAs_216", "Ge_227") - 0.9989) < 1e-3);
    assert_true(fabs(pair_cos(pr, cs, n, "GaAs_216", "Si_227") - 0.9986) < 1e-3);
    assert_int_equal(n, 4);
    assert_true(pair_cos(pr, cs, n, "Cr_229", "W_229") < -1.0);
    assert_true(pair_cos(pr, cs, n, "NaCl_225", "KCl_225") < -1.0);
    assert_true(pair_cos(pr, cs, n, "NaCl_225", "MgO_225") < -1.0);
    free(pr);
    free(cs);
    /* no strain: cells must match exactly, and Cr / Fe differ by 0.6 % */
    assert_int_equal(twins_find(ph, K, 10.0, 0.02, NPT, WL, 0.0, TWIN_MIN_COS, &pr, &cs, &n, &err),
                     PID_OK);
    assert_int_equal(n, 0);
    assert_null(pr);
    assert_null(cs);
}

static void test_copies(void **state)
{
    (void)state;
    pid_error err;
    int32_t *pr = NULL;
    float *cs = NULL;
    int n = -1;
    const twin_phase two[2] = {ph[index_of("NaCl_225")], ph[index_of("NaCl_225")]};
    assert_int_equal(
        twins_find(two, 2, 10.0, 0.02, NPT, WL, 0.03, TWIN_MIN_COS, &pr, &cs, &n, &err), PID_OK);
    assert_int_equal(n, 1);
    assert_true(pr[0] == 0 && pr[1] == 1 && fabs(cs[0] - 1.0) < 1e-6);
    free(pr);
    free(cs);
    const twin_phase mono[2] = {ph[index_of("CuO_15")], ph[index_of("CuO_15")]};
    assert_int_equal(
        twins_find(mono, 2, 10.0, 0.02, NPT, WL, 0.03, TWIN_MIN_COS, &pr, &cs, &n, &err), PID_OK);
    assert_int_equal(n, 0);
}

static void test_refusals(void **state)
{
    (void)state;
    pid_error err;
    int32_t *pr = NULL;
    float *cs = NULL;
    int n = 0;
    assert_int_equal(twins_find(ph, K, 10.0, 0.0, NPT, WL, 0.03, 0.995, &pr, &cs, &n, &err),
                     PID_ERR_ARG);
    assert_int_equal(twins_find(ph, K, 10.0, 0.02, 4, WL, 0.03, 0.995, &pr, &cs, &n, &err),
                     PID_ERR_ARG);
    assert_int_equal(twins_find(ph, K, 10.0, 0.02, NPT, -1.0, 0.03, 0.995, &pr, &cs, &n, &err),
                     PID_ERR_ARG);
    assert_int_equal(twins_find(ph, K, 10.0, 0.02, NPT, WL, 0.5, 0.995, &pr, &cs, &n, &err),
                     PID_ERR_ARG);
    assert_int_equal(twins_find(ph, K, 10.0, 0.02, NPT, WL, 0.03, 1.5, &pr, &cs, &n, &err),
                     PID_ERR_ARG);
    twin_phase bad[2] = {ph[0], ph[1]};
    bad[1].spacegroup = 231;
    assert_int_equal(twins_find(bad, 2, 10.0, 0.02, NPT, WL, 0.03, 0.995, &pr, &cs, &n, &err),
                     PID_ERR_ARG);
    bad[1] = ph[1];
    bad[1].hkl = NULL;
    assert_int_equal(twins_find(bad, 2, 10.0, 0.02, NPT, WL, 0.03, 0.995, &pr, &cs, &n, &err),
                     PID_ERR_ARG);
    bad[1] = ph[1];
    bad[1].cell[0] = NAN;
    assert_int_equal(twins_find(bad, 2, 10.0, 0.02, NPT, WL, 0.03, 0.995, &pr, &cs, &n, &err),
                     PID_ERR_ARG);
    assert_null(pr);
    assert_null(cs);
}

/* The pair list as a matrix: both ways, out-of-range pairs skipped, none -> NULL. */
static void test_matrix(void **state)
{
    (void)state;
    pid_error err;
    const int32_t pairs[6] = {0, 2, 1, 7, 2, 3};
    uint8_t *t = NULL;
    assert_int_equal(twins_matrix(pairs, 3, 4, &t, &err), PID_OK);
    assert_non_null(t);
    int ones = 0;
    for (int i = 0; i < 16; i++)
        ones += t[i];
    assert_int_equal(ones, 4);
    assert_true(t[0 * 4 + 2] && t[2 * 4 + 0] && t[2 * 4 + 3] && t[3 * 4 + 2]);
    free(t);
    assert_int_equal(twins_matrix(pairs, 0, 4, &t, &err), PID_OK);
    assert_null(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_library_pairs),
        cmocka_unit_test(test_copies),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_matrix),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
