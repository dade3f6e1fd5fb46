/* Unit tests for synth/xy: text pattern formats, refusal of bad files,
 * resampling, and SNIP background on a pattern with a known background. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "synth/xy.h"

static pid_xy *parse_ok(const char *text)
{
    pid_error err;
    pid_xy *p = NULL;
    pid_status st = pid_xy_read_buffer(text, strlen(text), "t.xy", &p, &err);
    if (st) fprintf(stderr, "unexpected error: %s\n", err.msg);
    assert_int_equal(st, PID_OK);
    return p;
}

static void expect_error(const char *text, pid_status code, const char *needle)
{
    pid_error err;
    pid_xy *p = (pid_xy *)1;
    assert_int_equal(pid_xy_read_buffer(text, strlen(text), "bad.xy", &p, &err), code);
    assert_null(p);
    assert_non_null(strstr(err.msg, "bad.xy"));
    if (needle && !strstr(err.msg, needle)) fail_msg("'%s' not in '%s'", needle, err.msg);
}

static void test_formats(void **state)
{
    pid_xy *p = parse_ok("# comment\n10.0\t100\n10.01\t101\n10.02 102\n10.03 103\n"
                         "10.04 104\n10.05 105\n10.06 106\n10.07 107\n");
    assert_int_equal(p->n, 8);
    assert_null(p->sigma);
    assert_true(p->x[7] == 10.07 && p->y[7] == 107);
    pid_xy_destroy(p);
    /* CSV with a header and a third (sigma) column. */
    p = parse_ok(
        "two_theta,counts,sigma\n1,5,2\n2,6,2\n3,7,2\n4,8,2\n5,9,3\n6,1,1\n7,2,1\n8,3,1\n");
    assert_int_equal(p->n, 8);
    assert_non_null(p->sigma);
    assert_true(p->sigma[4] == 3);
    pid_xy_destroy(p);
    /* Descending x is reversed; CRLF line ends are fine. */
    p = parse_ok("8 1\r\n7 2\r\n6 3\r\n5 4\r\n4 5\r\n3 6\r\n2 7\r\n1 8\r\n");
    assert_true(p->x[0] == 1 && p->y[0] == 8 && p->x[7] == 8);
    pid_xy_destroy(p);
}

static void test_bad_inputs(void **state)
{
    expect_error("", PID_ERR_FORMAT, "need at least 8");
    expect_error("1 2\n2 3\n", PID_ERR_FORMAT, "need at least 8");
    expect_error("1 2\n2 3\n3 4\n4 nan\n5 1\n6 1\n7 1\n8 1\n", PID_ERR_FORMAT, "non-finite");
    expect_error("1 2\n2 3\n3 4\n4 5\n4 1\n6 1\n7 1\n8 1\n", PID_ERR_FORMAT, "monotonic");
    expect_error("1 2\n2 3\n3 4 1\n4 5\n5 1\n6 1\n7 1\n8 1\n", PID_ERR_PARSE, ":3:");
    expect_error("1 2\n2 3\nhello world\n4 5\n5 1\n6 1\n7 1\n8 1\n", PID_ERR_PARSE, ":3:");
    expect_error("1\n2\n3\n4\n5\n6\n7\n8\n", PID_ERR_PARSE, "columns");
    char bin[32] = "1 2\n2 3\n";
    bin[5] = 0;
    pid_error err;
    pid_xy *p;
    assert_int_equal(pid_xy_read_buffer(bin, sizeof bin, "bad.xy", &p, &err), PID_ERR_PARSE);
    assert_int_equal(pid_xy_read("/nonexistent/x.xy", &p, &err), PID_ERR_IO);
    assert_non_null(strstr(err.msg, "/nonexistent/x.xy"));
}

static void test_resample(void **state)
{
    pid_xy *p = parse_ok("0 0\n1 10\n2 20\n3 30\n4 40\n5 50\n6 60\n7 70\n");
    float out[6];
    pid_xy_resample(p, -1.0, 1.5, 6, -5.0, out);
    /* x = -1 (outside), 0.5, 2, 3.5, 5, 6.5 */
    assert_true(out[0] == -5.0f);
    assert_float_equal(out[1], 5.0f, 1e-5);
    assert_float_equal(out[2], 20.0f, 1e-5);
    assert_float_equal(out[3], 35.0f, 1e-5);
    assert_float_equal(out[4], 50.0f, 1e-5);
    assert_float_equal(out[5], 65.0f, 1e-5);
    pid_xy_destroy(p);
}

/* A known linear + curved background under narrow Gaussian peaks: SNIP must
 * recover the background within 2 % of the tallest peak everywhere away from
 * the ends. */
static void test_snip(void **state)
{
    enum { N = 4000 };
    float *y = malloc(N * sizeof *y), *bg = malloc(N * sizeof *bg),
          *truth = malloc(N * sizeof *truth);
    const double centres[] = {500, 1200, 1250, 2100, 3000, 3500};
    const double heights[] = {1000, 5000, 800, 20000, 3000, 600};
    for (int i = 0; i < N; i++) {
        double b = 300.0 + 0.05 * i + 200.0 * exp(-pow((i - 1800.0) / 600.0, 2));
        double s = 0;
        for (int k = 0; k < 6; k++)
            s += heights[k] * exp(-0.5 * pow((i - centres[k]) / 6.0, 2));
        truth[i] = (float)b;
        y[i] = (float)(b + s);
    }
    pid_error err;
    assert_int_equal(pid_snip_background(y, N, 60, bg, &err), PID_OK);
    double worst = 0;
    for (int i = 100; i < N - 100; i++) {
        double e = fabs(bg[i] - truth[i]);
        if (e > worst) worst = e;
    }
    assert_true(worst < 0.02 * 20000);
    assert_int_equal(pid_snip_background(y, 2, 5, bg, &err), PID_ERR_ARG);
    free(y);
    free(bg);
    free(truth);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_formats),
        cmocka_unit_test(test_bad_inputs),
        cmocka_unit_test(test_resample),
        cmocka_unit_test(test_snip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
