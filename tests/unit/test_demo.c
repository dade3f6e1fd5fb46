/* Unit tests for synth/demo.*: the heating ramp's ground truth (fractions
 * sum to 1, anatase-only -> two-phase -> rutile-only -> out-of-library
 * blocks in that order, temperatures), thermal expansion measured on the
 * rendered rutile (110) peak against the shift computed from the published
 * cell and expansion coefficient, the brucite frames' (001) line, the
 * composition scan's triangular raster, reproducibility from the seed, and
 * refusal of bad arguments. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "synth/demo.h"

/* The source tree's data folder when ctest says where it is, else the
 * built-in one compiled into the library. */
static const char *data_dir(void)
{
    static char buf[1024];
    const char *src = getenv("PHASEID_SOURCE_DIR");
    if (!src || !*src) return NULL;
    snprintf(buf, sizeof buf, "%s/data", src);
    return buf;
}

static demo_scenario *make(const char *name, const demo_opts *o)
{
    demo_opts oo = *o;
    oo.data_dir = data_dir();
    demo_scenario *d = NULL;
    pid_error err;
    pid_error_clear(&err);
    pid_status st = demo_create(&d, name, &oo, &err);
    if (st) fprintf(stderr, "demo_create(%s): %s\n", name, err.msg);
    assert_int_equal(st, PID_OK);
    assert_non_null(d);
    return d;
}

static int has_phase(const demo_truth *t, const char *name)
{
    for (int k = 0; k < t->n; k++)
        if (!strcmp(t->phase[k], name)) return 1;
    return 0;
}

/* 'A' anatase only, 'B' anatase + rutile, 'R' rutile only, 'U' unknown. */
static char frame_class(const demo_truth *t)
{
    if (t->unknown) return 'U';
    int a = has_phase(t, DEMO_ANATASE), r = has_phase(t, DEMO_RUTILE);
    if (a && r) return 'B';
    if (a) return 'A';
    if (r) return 'R';
    return '?';
}

static void test_ramp_truth(void **state)
{
    demo_opts o;
    demo_opts_default(&o);
    o.n_frames = 200;
    o.unknown_fraction = 0.05;
    demo_scenario *d = make("heating-ramp", &o);
    assert_int_equal(demo_get_kind(d), DEMO_HEATING_RAMP);
    assert_int_equal(demo_n_frames(d), 200);
    assert_int_equal(demo_n_points(d), 7001);

    char seq[201] = {0};
    double t_prev = -1.0;
    int n_unknown = 0;
    for (int i = 0; i < 200; i++) {
        demo_truth t;
        assert_int_equal(demo_truth_get(d, i, &t, NULL), PID_OK);
        double sum = 0.0;
        assert_true(t.n >= 1 && t.n <= 2);
        for (int k = 0; k < t.n; k++) {
            assert_true(t.fraction[k] > 0.0 && t.fraction[k] <= 1.0);
            assert_true(t.size_nm[k] > 0.0);
            sum += t.fraction[k];
        }
        assert_true(fabs(sum - 1.0) < 1e-12);
        assert_true(isnan(t.composition[0]));
        seq[i] = frame_class(&t);
        if (seq[i] == 'U') {
            n_unknown++;
            assert_int_equal(t.n, 1);
            assert_string_equal(t.phase[0], DEMO_UNKNOWN);
            continue;
        }
        /* Temperature rises monotonically from 300 K to 1300 K. */
        assert_true(t.temperature_k > t_prev);
        t_prev = t.temperature_k;
        if (i == 0) assert_true(fabs(t.temperature_k - DEMO_T_START_K) < 1e-9);
        /* Phase content follows the transformation window. */
        if (seq[i] == 'A') assert_true(t.temperature_k <= DEMO_RUTILE_START_K);
        if (seq[i] == 'B')
            assert_true(t.temperature_k > DEMO_RUTILE_START_K &&
                        t.temperature_k < DEMO_RUTILE_END_K);
        if (seq[i] == 'R') assert_true(t.temperature_k >= DEMO_RUTILE_END_K);
    }
    assert_true(fabs(t_prev - DEMO_T_END_K) < 1e-9);
    /* 5 % of 200 frames out of the library, all at the end. */
    assert_int_equal(n_unknown, 10);
    /* The blocks come in the order A+ B+ R+ U+, each non-empty. */
    const char order[] = "ABRU";
    int pos = 0, count[4] = {0};
    for (int i = 0; i < 200; i++) {
        while (pos < 4 && seq[i] != order[pos])
            pos++;
        assert_true(pos < 4); /* never goes back to an earlier block */
        count[pos]++;
    }
    for (int k = 0; k < 4; k++)
        assert_true(count[k] > 0);
    /* Rutile fraction rises through the two-phase block. */
    double prev = 0.0;
    for (int i = count[0]; i < count[0] + count[1]; i++) {
        demo_truth t;
        assert_int_equal(demo_truth_get(d, i, &t, NULL), PID_OK);
        double fr = !strcmp(t.phase[1], DEMO_RUTILE) ? t.fraction[1] : t.fraction[0];
        assert_true(fr > prev);
        prev = fr;
    }
    demo_destroy(d);

    /* unknown_fraction 0: no out-of-library frames. */
    o.unknown_fraction = 0.0;
    d = make("heating-ramp", &o);
    for (int i = 0; i < 200; i++) {
        demo_truth t;
        assert_int_equal(demo_truth_get(d, i, &t, NULL), PID_OK);
        assert_int_equal(t.unknown, 0);
    }
    demo_destroy(d);
}

/* Centroid (deg) of the points above half the maximum around the largest
 * value of y in [lo, hi] deg on grid g. */
static double peak_centroid(const float *y, const k_xrd_grid *g, double lo, double hi)
{
    int i0 = (int)ceil((lo - g->x0) / g->step), i1 = (int)floor((hi - g->x0) / g->step);
    int im = i0;
    for (int i = i0; i <= i1; i++)
        if (y[i] > y[im]) im = i;
    double half = 0.5 * y[im], sw = 0.0, sx = 0.0;
    int a = im, b = im;
    while (a > i0 && y[a - 1] > half)
        a--;
    while (b < i1 && y[b + 1] > half)
        b++;
    for (int i = a; i <= b; i++) {
        double w = y[i] - half;
        sw += w;
        sx += w * (g->x0 + (double)g->step * i);
    }
    return sx / sw;
}

static void test_thermal_expansion(void **state)
{
    /* Noise-free frames, one line (Cu K-alpha1), a fine grid around rutile
     * (110). Reference: a = 4.5937 A at room temperature (Burdett et al.
     * 1987, the library's rutile) and alpha_a = 7.00e-6 / K (Hummer et al.
     * 2007); d(110) = a / sqrt(2). */
    demo_opts o;
    demo_opts_default(&o);
    o.n_frames = 20;
    o.unknown_fraction = 0.0;
    o.noise = 0;
    assert_int_equal(pid_xrd_source_parse("CuKa1", &o.source, NULL), PID_OK);
    o.grid.x0 = 26.0f;
    o.grid.step = 0.002f;
    o.grid.n_points = 1501; /* 26 .. 29 deg */
    demo_scenario *d = make("heating-ramp", &o);
    const double lam = 1.540562, a_ref = 4.5937, alpha = 7.00e-6;
    float *y = malloc(sizeof(float) * 1501);
    assert_non_null(y);
    double pos[2], want[2];
    int frames[2] = {-1, 19};
    for (int i = 0; i < 20 && frames[0] < 0; i++) {
        demo_truth t;
        assert_int_equal(demo_truth_get(d, i, &t, NULL), PID_OK);
        if (frame_class(&t) == 'R') frames[0] = i;
    }
    assert_true(frames[0] > 0 && frames[0] < 19);
    for (int k = 0; k < 2; k++) {
        demo_truth t;
        assert_int_equal(demo_truth_get(d, frames[k], &t, NULL), PID_OK);
        assert_int_equal(t.n, 1);
        assert_string_equal(t.phase[0], DEMO_RUTILE);
        double a = a_ref * (1.0 + alpha * (t.temperature_k - 298.0));
        want[k] = 2.0 * asin(lam * sqrt(2.0) / (2.0 * a)) * 180.0 / M_PI;
        assert_int_equal(demo_render(d, frames[k], 1, y, NULL), PID_OK);
        pos[k] = peak_centroid(y, &o.grid, 26.5, 28.5);
        /* Absolute position within 0.01 deg of the expanded cell's line. */
        assert_true(fabs(pos[k] - want[k]) < 0.01);
    }
    /* At 1300 K the line sits ~0.195 deg below its room-temperature 27.437
     * deg; between the two frames it moves down by the computed amount
     * (within 20 %, and by at least 0.02 deg). */
    double room = 2.0 * asin(lam * sqrt(2.0) / (2.0 * a_ref)) * 180.0 / M_PI;
    assert_true(fabs(room - 27.437) < 0.002);
    assert_true(room - want[1] > 0.18 && room - want[1] < 0.21);
    double shift = pos[1] - pos[0], expect = want[1] - want[0];
    assert_true(expect < -0.02);
    assert_true(fabs(shift - expect) < 0.2 * fabs(expect));
    free(y);
    demo_destroy(d);
}

static void test_unknown_frames_pattern(void **state)
{
    /* The out-of-library frames show brucite's (001) line at d = c = 4.769
     * A (18.59 deg with Cu K-alpha1), where anatase and rutile have none. */
    demo_opts o;
    demo_opts_default(&o);
    o.n_frames = 40;
    o.noise = 0;
    assert_int_equal(pid_xrd_source_parse("CuKa1", &o.source, NULL), PID_OK);
    demo_scenario *d = make("heating-ramp", &o);
    float *y = malloc(sizeof(float) * 7001 * 2);
    assert_non_null(y);
    demo_truth t;
    assert_int_equal(demo_truth_get(d, 39, &t, NULL), PID_OK);
    assert_int_equal(t.unknown, 1);
    assert_int_equal(demo_render(d, 39, 1, y, NULL), PID_OK);
    assert_int_equal(demo_render(d, 0, 1, y + 7001, NULL), PID_OK);
    double want = 2.0 * asin(1.540562 / (2.0 * 4.769)) * 180.0 / M_PI;
    double p = peak_centroid(y, &o.grid, want - 0.5, want + 0.5);
    assert_true(fabs(p - want) < 0.02);
    int j = (int)lround((want - 10.0) / 0.01);
    assert_true(y[j] > 0.1f);         /* a real line in brucite */
    assert_true(y[7001 + j] < 0.02f); /* nothing there in anatase at 300 K */
    free(y);
    demo_destroy(d);
}

static void test_frames_and_seed(void **state)
{
    demo_opts o;
    demo_opts_default(&o);
    o.n_frames = 40;
    o.seed = 7;
    demo_scenario *d1 = make("heating-ramp", &o), *d2 = make("heating-ramp", &o);
    o.seed = 8;
    demo_scenario *d3 = make("heating-ramp", &o);
    o.seed = 7;
    o.noise = 0;
    demo_scenario *dc = make("heating-ramp", &o);
    size_t n = 7001;
    float *a = malloc(sizeof(float) * n * 4), *b = malloc(sizeof(float) * n * 4);
    float *c = malloc(sizeof(float) * n * 4), *e = malloc(sizeof(float) * n * 4);
    assert_true(a && b && c && e);
    assert_int_equal(demo_render(d1, 10, 4, a, NULL), PID_OK);
    /* Same seed, rendered in two pieces: identical. */
    assert_int_equal(demo_render(d2, 10, 1, b, NULL), PID_OK);
    assert_int_equal(demo_render(d2, 11, 3, b + n, NULL), PID_OK);
    assert_memory_equal(a, b, sizeof(float) * n * 4);
    /* Another seed or no noise: different values. */
    assert_int_equal(demo_render(d3, 10, 4, c, NULL), PID_OK);
    assert_int_equal(demo_render(dc, 10, 4, e, NULL), PID_OK);
    assert_true(memcmp(a, c, sizeof(float) * n * 4) != 0);
    double diff = 0.0, bg = 0.0;
    for (size_t i = 0; i < n * 4; i++) {
        assert_true(isfinite(a[i]));
        diff += fabs(a[i] - e[i]);
    }
    /* Each row's maximum is 1; the noisy frames carry a background: their
     * median over the first row is well above the clean frame's. */
    for (int r = 0; r < 4; r++) {
        float m = 0.0f;
        for (size_t i = 0; i < n; i++)
            m = fmaxf(m, a[r * n + i]);
        assert_true(fabsf(m - 1.0f) < 1e-6f);
    }
    for (size_t i = 0; i < n; i++)
        bg += a[i] - e[i];
    assert_true(diff / (double)(n * 4) > 0.01);
    assert_true(bg / (double)n > 0.02);
    free(a);
    free(b);
    free(c);
    free(e);
    demo_destroy(d1);
    demo_destroy(d2);
    demo_destroy(d3);
    demo_destroy(dc);
}

static void test_composition_scan(void **state)
{
    demo_opts o;
    demo_opts_default(&o);
    o.n_frames = 100; /* smallest triangle holding 100 points: 14 per edge */
    demo_scenario *d = make("composition-scan", &o);
    assert_int_equal(demo_get_kind(d), DEMO_COMPOSITION_SCAN);
    assert_string_equal(demo_corner_name(d, 0), "ZnO_186");
    assert_string_equal(demo_corner_name(d, 1), "CeO2_225");
    assert_string_equal(demo_corner_name(d, 2), "Fe2O3_167");
    assert_null(demo_corner_name(d, 3));
    double prev[3] = {0};
    int corners = 0;
    for (int i = 0; i < 100; i++) {
        demo_truth t;
        assert_int_equal(demo_truth_get(d, i, &t, NULL), PID_OK);
        assert_int_equal(t.unknown, 0);
        assert_true(isnan(t.temperature_k));
        double s = 0.0, sc = 0.0;
        for (int k = 0; k < t.n; k++)
            s += t.fraction[k];
        for (int k = 0; k < 3; k++) {
            assert_true(t.composition[k] >= 0.0);
            /* On the 13-step grid. */
            assert_true(fabs(t.composition[k] * 13.0 - lround(t.composition[k] * 13.0)) < 1e-9);
            sc += t.composition[k];
        }
        assert_true(fabs(s - 1.0) < 1e-12 && fabs(sc - 1.0) < 1e-12);
        corners += t.n == 1;
        /* Neighbouring frames are neighbouring grid points (boustrophedon),
         * apart from the first point of a new row. */
        if (i > 0) {
            double step = 0.0;
            for (int k = 0; k < 3; k++)
                step = fmax(step, fabs(t.composition[k] - prev[k]));
            assert_true(step < 1.0 / 13.0 + 1e-9);
        }
        memcpy(prev, t.composition, sizeof prev);
    }
    demo_truth t0;
    assert_int_equal(demo_truth_get(d, 0, &t0, NULL), PID_OK);
    assert_int_equal(t0.n, 1);
    assert_string_equal(t0.phase[0], "ZnO_186");
    assert_true(corners >= 2);
    demo_destroy(d);
}

static void expect_bad(const char *name, const demo_opts *o, pid_status code, const char *needle)
{
    demo_scenario *d = (demo_scenario *)1;
    pid_error err;
    pid_error_clear(&err);
    pid_status st = demo_create(&d, name, o, &err);
    if (st != code || !strstr(err.msg, needle))
        fprintf(stderr, "expected %d '%s', got %d '%s'\n", (int)code, needle, (int)st, err.msg);
    assert_int_equal(st, code);
    assert_null(d);
    assert_non_null(strstr(err.msg, needle));
}

static void test_bad_arguments(void **state)
{
    demo_opts o, b;
    demo_opts_default(&o);
    o.data_dir = data_dir();
    expect_bad("cooling-ramp", &o, PID_ERR_ARG, "unknown scenario");
    expect_bad(NULL, &o, PID_ERR_ARG, "unknown scenario");
    b = o;
    b.n_frames = 19;
    expect_bad("heating-ramp", &b, PID_ERR_ARG, "n_frames");
    b = o;
    b.n_frames = DEMO_MAX_FRAMES + 1;
    expect_bad("heating-ramp", &b, PID_ERR_ARG, "n_frames");
    b = o;
    b.grid.axis = K_XRD_AXIS_Q;
    expect_bad("heating-ramp", &b, PID_ERR_ARG, "2-theta");
    b = o;
    b.grid.step = 0.0f;
    expect_bad("composition-scan", &b, PID_ERR_ARG, "grid");
    b = o;
    b.grid.step = NAN;
    expect_bad("composition-scan", &b, PID_ERR_ARG, "grid");
    b = o;
    b.grid.x0 = 170.0f;
    expect_bad("heating-ramp", &b, PID_ERR_ARG, "grid");
    b = o;
    b.grid.n_points = 1;
    expect_bad("heating-ramp", &b, PID_ERR_ARG, "grid points");
    b = o;
    b.unknown_fraction = 0.6;
    expect_bad("heating-ramp", &b, PID_ERR_ARG, "unknown_fraction");
    b = o;
    b.unknown_fraction = NAN;
    expect_bad("heating-ramp", &b, PID_ERR_ARG, "unknown_fraction");
    b = o;
    b.data_dir = "/nonexistent/phaseid-data";
    expect_bad("heating-ramp", &b, PID_ERR_IO, "TiO2_141");

    /* Frame indices outside the scenario. */
    o.n_frames = 20;
    demo_scenario *d = make("composition-scan", &o);
    demo_truth t;
    float y[8];
    assert_int_equal(demo_truth_get(d, -1, &t, NULL), PID_ERR_ARG);
    assert_int_equal(demo_truth_get(d, 20, &t, NULL), PID_ERR_ARG);
    assert_int_equal(demo_render(d, 19, 2, y, NULL), PID_ERR_ARG);
    assert_int_equal(demo_render(d, -1, 1, y, NULL), PID_ERR_ARG);
    assert_int_equal(demo_render(d, 0, -1, y, NULL), PID_ERR_ARG);
    demo_destroy(d);
    demo_destroy(NULL);
    assert_int_equal(demo_kind_parse("heating-ramp"), DEMO_HEATING_RAMP);
    assert_int_equal(demo_kind_parse("composition-scan"), DEMO_COMPOSITION_SCAN);
    assert_int_equal(demo_kind_parse("Heating-Ramp"), -1);
    assert_string_equal(demo_kind_name(DEMO_COMPOSITION_SCAN), "composition-scan");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ramp_truth),
        cmocka_unit_test(test_thermal_expansion),
        cmocka_unit_test(test_unknown_frames_pattern),
        cmocka_unit_test(test_frames_and_seed),
        cmocka_unit_test(test_composition_scan),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
