/* Unit tests for server/metrics: counters and histograms after known
 * requests and batches, read back from the Prometheus text (cumulative
 * buckets, +Inf = count, sums), HELP/TYPE for every family, GPU lines only
 * with a reading, the statistics snapshot, and the latency window's
 * nearest-rank percentiles, span and capacity. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "server/metrics.h"

/* The value of the sample line starting with `prefix` (name + labels). */
static double sample(const char *text, const char *prefix)
{
    size_t n = strlen(prefix);
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (!strncmp(p, prefix, n) && p[n] == ' ') return strtod(p + n + 1, NULL);
    fail_msg("no sample %s", prefix);
    return NAN;
}

static int has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (!strncmp(p, line, n) && (p[n] == '\n' || p[n] == '\0')) return 1;
    return 0;
}

static void test_counters_and_histograms(void **state)
{
    const char *names[2] = {"a", "b-1"};
    srv_metrics *m = NULL;
    pid_error err;
    assert_int_equal(srv_metrics_create(&m, names, 2, 64, &err), PID_OK);
    srv_metrics_request(m, 0, 200, 0.002);
    srv_metrics_request(m, 0, 200, 0.3);
    srv_metrics_request(m, 0, 503, 0.0001);
    srv_metrics_request(m, 1, 400, 0.01);
    srv_metrics_request(m, -1, 404, 0.001); /* not a model's */
    srv_metrics_batch(m, 0, 1, 0.001, 0.0005, 0.0005);
    srv_metrics_batch(m, 0, 3, 0.002, 0.003, 0.0012);
    srv_metrics_batch(m, 0, 64, 0.02, 0.1, 0.004);
    int64_t depth[2] = {5, 0};
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(srv_metrics_format(m, depth, NULL, &text, &len, &err), PID_OK);
    assert_int_equal(strlen(text), len);

    assert_true(sample(text, "phaseid_inference_request_success_total{model=\"a\"}") == 2);
    assert_true(sample(text, "phaseid_inference_request_failure_total{model=\"a\"}") == 1);
    assert_true(sample(text, "phaseid_inference_request_failure_total{model=\"b-1\"}") == 1);
    assert_true(sample(text, "phaseid_inference_frames_total{model=\"a\"}") == 68);
    assert_true(sample(text, "phaseid_inference_exec_total{model=\"a\"}") == 3);
    assert_true(sample(text, "phaseid_queue_frames{model=\"a\"}") == 5);
    /* batch sizes 1, 3, 64: le=1 -> 1, le=2 -> 1, le=4 -> 2, le=64 -> 3 */
    assert_true(sample(text, "phaseid_batch_size_bucket{model=\"a\",le=\"1\"}") == 1);
    assert_true(sample(text, "phaseid_batch_size_bucket{model=\"a\",le=\"2\"}") == 1);
    assert_true(sample(text, "phaseid_batch_size_bucket{model=\"a\",le=\"4\"}") == 2);
    assert_true(sample(text, "phaseid_batch_size_bucket{model=\"a\",le=\"32\"}") == 2);
    assert_true(sample(text, "phaseid_batch_size_bucket{model=\"a\",le=\"64\"}") == 3);
    assert_true(sample(text, "phaseid_batch_size_bucket{model=\"a\",le=\"+Inf\"}") == 3);
    assert_true(sample(text, "phaseid_batch_size_sum{model=\"a\"}") == 68);
    assert_true(sample(text, "phaseid_batch_size_count{model=\"a\"}") == 3);
    /* request durations of a: 0.0001, 0.002, 0.3 */
    assert_true(
        sample(text, "phaseid_request_duration_seconds_bucket{model=\"a\",le=\"0.0001\"}") == 1);
    assert_true(
        sample(text, "phaseid_request_duration_seconds_bucket{model=\"a\",le=\"0.0025\"}") == 2);
    assert_true(sample(text, "phaseid_request_duration_seconds_bucket{model=\"a\",le=\"0.25\"}") ==
                2);
    assert_true(sample(text, "phaseid_request_duration_seconds_bucket{model=\"a\",le=\"0.5\"}") ==
                3);
    assert_true(sample(text, "phaseid_request_duration_seconds_count{model=\"a\"}") == 3);
    assert_true(fabs(sample(text, "phaseid_request_duration_seconds_sum{model=\"a\"}") - 0.3021) <
                1e-12);
    assert_true(sample(text, "phaseid_compute_duration_seconds_count{model=\"a\"}") == 3);
    assert_true(sample(text, "phaseid_queue_duration_seconds_bucket{model=\"a\",le=\"0.001\"}") ==
                1);
    assert_true(sample(text, "phaseid_http_requests_total{code=\"200\"}") == 2);
    assert_true(sample(text, "phaseid_http_requests_total{code=\"404\"}") == 1);
    const char *families[] = {"phaseid_inference_request_success_total counter",
                              "phaseid_inference_request_failure_total counter",
                              "phaseid_inference_frames_total counter",
                              "phaseid_inference_exec_total counter",
                              "phaseid_queue_frames gauge",
                              "phaseid_batch_size histogram",
                              "phaseid_request_duration_seconds histogram",
                              "phaseid_queue_duration_seconds histogram",
                              "phaseid_compute_duration_seconds histogram",
                              "phaseid_http_requests_total counter"};
    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++) {
        char line[160];
        snprintf(line, sizeof line, "# TYPE %s", families[i]);
        if (!has_line(text, line)) fail_msg("missing %s", line);
    }
    assert_null(strstr(text, "gpu"));
    free(text);

    srv_gpu_reading g = {"H100", 312.5, 1234.25};
    assert_int_equal(srv_metrics_format(m, depth, &g, &text, &len, &err), PID_OK);
    assert_true(sample(text, "phaseid_gpu_power_watts{gpu=\"0\"}") == 312.5);
    assert_true(sample(text, "phaseid_gpu_energy_joules_total{gpu=\"0\"}") == 1234.25);
    assert_true(has_line(text, "# TYPE phaseid_gpu_energy_joules_total counter"));
    free(text);

    srv_model_stats st;
    srv_metrics_stats(m, 0, &st);
    assert_int_equal(st.success_count, 2);
    assert_int_equal(st.fail_count, 1);
    assert_int_equal(st.frames, 68);
    assert_int_equal(st.batches, 3);
    assert_true(fabs(st.compute_s - 0.023) < 1e-12);
    uint64_t c;
    double sec;
    srv_metrics_batch_stats(m, 0, 3, &c, &sec);
    assert_int_equal(c, 1);
    assert_true(sec == 0.002);
    srv_metrics_batch_stats(m, 0, 2, &c, &sec);
    assert_int_equal(c, 0);
    uint64_t rq, fr, ba;
    srv_metrics_totals(m, &rq, &fr, &ba);
    assert_int_equal(rq, 4);
    assert_int_equal(fr, 68);
    assert_int_equal(ba, 3);
    srv_metrics_destroy(m);
}

static void test_window(void **state)
{
    srv_window *w = NULL;
    pid_error err;
    assert_int_equal(srv_window_create(&w, 1000, &err), PID_OK);
    const double p[3] = {50, 90, 99};
    double lat[3], q[3];
    assert_int_equal(srv_window_percentiles(w, 100.0, 10.0, p, 3, lat, q), 0);
    assert_true(lat[0] == 0 && q[2] == 0);
    /* 100 samples at t = 95 (latency i ms, queue i/10 ms), 50 old ones at t = 80 */
    for (int i = 1; i <= 100; i++)
        srv_window_add(w, 95.0, 1e-3 * i, 1e-4 * i);
    for (int i = 0; i < 50; i++)
        srv_window_add(w, 80.0, 5.0, 5.0);
    assert_int_equal(srv_window_percentiles(w, 100.0, 10.0, p, 3, lat, q), 100);
    assert_true(fabs(lat[0] - 0.050) < 1e-12);
    assert_true(fabs(lat[1] - 0.090) < 1e-12);
    assert_true(fabs(lat[2] - 0.099) < 1e-12);
    assert_true(fabs(q[0] - 0.0050) < 1e-12);
    /* capacity: 2000 more samples keep only the newest 1000 */
    for (int i = 0; i < 2000; i++)
        srv_window_add(w, 99.0, i < 1000 ? 1.0 : 2.0, 0);
    assert_int_equal(srv_window_percentiles(w, 100.0, 10.0, p, 3, lat, q), 1000);
    assert_true(lat[0] == 2.0);
    srv_window_destroy(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counters_and_histograms),
        cmocka_unit_test(test_window),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
