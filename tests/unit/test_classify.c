/* Unit tests for models/classify: tiny models built and saved in the test
 * (random weights from net_create), resampling, wavelength conversion and
 * background removal against hand-computed positions, probabilities and
 * energy against the network run directly, ranking, fractions, the unknown
 * flag, and refusals (bad coverage, NaN, flat, missing/truncated model). With
 * PHASEID_CLS_WRITE_MODEL=PATH it only writes the softmax model to PATH and exits 0 (used by
 * tests/integration/test_classify_cli.py). */
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

#include "kernels/backend.h"
#include "models/classify.h"
#include "models/net.h"

#define N_POINTS 200
#define N_CLASSES 3
#define X0_DEG 10.0
#define STEP_DEG 0.35 /* grid 10 .. 79.65 deg 2-theta */
#define CU_KA1 1.540562
#define MO_KA1 0.709300

static char g_dir[256];

static const char *tmp_path(const char *name)
{
    static char buf[4][512];
    static int slot;
    char *p = buf[slot++ % 4];
    snprintf(p, 512, "%s/%s", g_dir, name);
    return p;
}

/* A complete model of `spec` on a 1 x 200 grid (2-theta, or Q when q != 0)
 * with weights drawn by net_create, saved to `path`. */
static void write_model(const char *path, const char *spec, net_head_kind head, int fractions,
                        int q, double threshold, int bg)
{
    static const char *const names[N_CLASSES] = {"MnO_225", "quartz-alpha", "corundum"};
    static const char *const formulas[N_CLASSES] = {"MnO", "SiO2", "Al2O3"};
    pid_error err;
    mf_model *m = mf_model_create();
    assert_non_null(m);
    const net_shape in = {1, 1, 1, N_POINTS};
    assert_int_equal(net_random_model(m, spec, &in, N_CLASSES, 1234, &err), PID_OK);

    m->modality = strdup("xrd");
    m->head = head;
    m->head_fractions = fractions;
    m->n_classes = N_CLASSES;
    m->phases = calloc(N_CLASSES, sizeof *m->phases);
    for (int i = 0; i < N_CLASSES; i++) {
        char buf[128];
        m->phases[i].name = strdup(names[i]);
        m->phases[i].formula = strdup(formulas[i]);
        snprintf(buf, sizeof buf, "data/cif/%s.cif", names[i]);
        m->phases[i].source = strdup(buf);
        snprintf(buf, sizeof buf, "COD %d", 9000000 + i);
        m->phases[i].reference = strdup(buf);
    }
    m->grid.axis = q ? 1 : 0;
    m->grid.x0 = q ? 1.0 : X0_DEG;
    m->grid.step = q ? 0.025 : STEP_DEG; /* Q: 1 .. 5.975 1/A */
    m->grid.n_points = N_POINTS;
    m->grid.n_lines = 2;
    m->grid.wavelength_a[0] = CU_KA1;
    m->grid.wavelength_a[1] = 1.544390;
    m->grid.wavelength_weight[0] = 1.0;
    m->grid.wavelength_weight[1] = 0.5;
    m->grid.source = strdup("CuKa");
    m->preprocessing = strdup("resample-linear; max-normalize");
    m->background_removal = bg;
    m->normalization = MF_NORM_MAX;
    m->temperature = 1.5;
    m->ece = 0.02;
    m->unknown_score = strdup("energy");
    m->unknown_threshold = threshold;
    m->unknown_auroc = 0.9;
    m->train_seed = 1234;
    m->train_steps = 1;
    m->train_batch = 1;
    m->train_flops = 1.0;
    m->generator = strdup("{\"test\": true}");
    m->phaseid_version = strdup(PHASEID_VERSION);
    m->created = strdup("2026-11-24T07:00:00Z");
    m->library = strdup("builtin");
    pid_status st = mf_save(path, m, &err);
    if (st) fail_msg("mf_save %s: %s", path, err.msg);
    mf_model_destroy(m);
}

#define SPEC_SOFTMAX "dense(16) relu head"
#define SPEC_SIGMOID "dense(16) relu head(sigmoid,fractions)"

static cls_classifier *open_ok(const char *path, int max_batch)
{
    pid_error err;
    cls_classifier *c = NULL;
    pid_status st = cls_open(&c, path, "cpu", max_batch, &err);
    if (st) fail_msg("cls_open %s: %s", path, err.msg);
    return c;
}

/* A pattern x = lo, lo + step, ... <= hi with y = f(x). */
static pid_xy *make_xy(double lo, double hi, double step, double (*f)(double))
{
    pid_xy *p = calloc(1, sizeof *p);
    int n = (int)floor((hi - lo) / step + 1e-9) + 1;
    p->n = n;
    p->x = malloc((size_t)n * sizeof *p->x);
    p->y = malloc((size_t)n * sizeof *p->y);
    for (int i = 0; i < n; i++) {
        p->x[i] = lo + i * step;
        p->y[i] = f(p->x[i]);
    }
    return p;
}

static double f_linear(double x)
{
    return x;
}
static double f_flat(double x)
{
    return 0 * x + 7.0;
}
static double f_bumpy(double x)
{
    return 1.0 + exp(-0.5 * pow((x - 60.0) / 0.2, 2));
}

/* Mo K-alpha1 Gaussian peak at the 2-theta of d = 2.0 A on a weak slope. */
static double f_mo_peak(double x)
{
    double tt = 2.0 * asin(MO_KA1 / (2.0 * 2.0)) * 180.0 / M_PI; /* 20.428 deg */
    return 10.0 + 0.01 * x + 1000.0 * exp(-0.5 * pow((x - tt) / 0.05, 2));
}

static int argmax(const float *v, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[b]) b = i;
    return b;
}

static int setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/pid_cls_XXXXXX");
    if (!mkdtemp(g_dir)) return -1;
    write_model(tmp_path("softmax.h5"), SPEC_SOFTMAX, NET_HEAD_SOFTMAX, 0, 0, -2.0, 0);
    write_model(tmp_path("sigmoid.h5"), SPEC_SIGMOID, NET_HEAD_SIGMOID, 1, 0, -2.0, 0);
    write_model(tmp_path("bg.h5"), SPEC_SOFTMAX, NET_HEAD_SOFTMAX, 0, 0, -2.0, 1);
    write_model(tmp_path("q.h5"), SPEC_SOFTMAX, NET_HEAD_SOFTMAX, 0, 1, -2.0, 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    const char *names[] = {"softmax.h5", "sigmoid.h5", "q.h5",  "bg.h5",
                           "trunc.h5",   "thr.h5",     "cnn.h5"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        unlink(tmp_path(names[i]));
    rmdir(g_dir);
    return 0;
}

/* Same wavelength: linear resampling of y = x, max-normalized, is exact. */
static void test_prepare_resample(void **state)
{
    (void)state;
    cls_classifier *c = open_ok(tmp_path("softmax.h5"), 1);
    assert_int_equal(cls_frame_size(c), N_POINTS);
    float frame[N_POINTS];
    pid_error err;
    pid_xy *xy = make_xy(5.0, 90.0, 0.1, f_linear);
    assert_int_equal(cls_prepare_xy(c, xy, NULL, frame, &err), PID_OK);
    const double last = X0_DEG + (N_POINTS - 1) * STEP_DEG; /* 79.65, the max */
    for (int j = 0; j < N_POINTS; j++)
        assert_true(fabs(frame[j] - (X0_DEG + j * STEP_DEG) / last) < 1e-5);
    /* Same wavelength given explicitly: no conversion. */
    double cu = CU_KA1;
    float frame2[N_POINTS];
    assert_int_equal(cls_prepare_xy(c, xy, &cu, frame2, &err), PID_OK);
    assert_memory_equal(frame, frame2, sizeof frame);
    pid_xy_destroy(xy);

    /* 40..90 deg covers grid points 86..199 (57 %): the rest is 0. */
    xy = make_xy(40.0, 90.0, 0.1, f_linear);
    assert_int_equal(cls_prepare_xy(c, xy, NULL, frame, &err), PID_OK);
    for (int j = 0; j < 86; j++)
        assert_true(frame[j] == 0.0f);
    for (int j = 86; j < N_POINTS; j++)
        assert_true(fabs(frame[j] - (X0_DEG + j * STEP_DEG) / last) < 1e-5);
    pid_xy_destroy(xy);
    cls_close(c);
}

/* A d = 2.0 A peak measured with Mo K-alpha1 lands at the Cu K-alpha1
 * 2-theta of d = 2.0 A, 2 asin(1.540562 / 4) = 45.3049 deg, within one grid
 * step; on a Q model at Q = 2 pi / d = 3.14159 1/A. */
static void test_prepare_wavelength(void **state)
{
    (void)state;
    float frame[N_POINTS];
    pid_error err;
    double mo = MO_KA1;
    pid_xy *xy = make_xy(3.0, 45.0, 0.01, f_mo_peak);

    cls_classifier *c = open_ok(tmp_path("softmax.h5"), 1);
    assert_int_equal(cls_prepare_xy(c, xy, &mo, frame, &err), PID_OK);
    double at = X0_DEG + argmax(frame, N_POINTS) * STEP_DEG;
    assert_true(fabs(at - 45.3049) <= STEP_DEG);
    assert_true(fabs(frame[argmax(frame, N_POINTS)] - 1.0f) < 1e-6);
    /* Without the wavelength the peak stays at its Mo angle, 20.428 deg. */
    assert_int_equal(cls_prepare_xy(c, xy, NULL, frame, &err), PID_OK);
    at = X0_DEG + argmax(frame, N_POINTS) * STEP_DEG;
    assert_true(fabs(at - 20.428) <= STEP_DEG);
    cls_close(c);

    c = open_ok(tmp_path("q.h5"), 1);
    assert_int_equal(cls_prepare_xy(c, xy, &mo, frame, &err), PID_OK);
    at = 1.0 + argmax(frame, N_POINTS) * 0.025;
    assert_true(fabs(at - M_PI) <= 0.025);
    cls_close(c);
    pid_xy_destroy(xy);

    /* A bad wavelength is an argument error. */
    c = open_ok(tmp_path("softmax.h5"), 1);
    xy = make_xy(5.0, 90.0, 0.1, f_linear);
    double bad = -1.0;
    assert_int_equal(cls_prepare_xy(c, xy, &bad, frame, &err), PID_ERR_ARG);
    pid_xy_destroy(xy);
    cls_close(c);
}

/* Background removal (model flag): a peak on a sloped background comes out
 * with the background gone (far from the peak ~0) and the peak at 1. */
static double f_slope_peak(double x)
{
    return 50.0 + 2.0 * x + 100.0 * exp(-0.5 * pow((x - 40.0) / 0.2, 2));
}

static void test_prepare_background(void **state)
{
    (void)state;
    cls_classifier *c = open_ok(tmp_path("bg.h5"), 1);
    float frame[N_POINTS];
    pid_error err;
    pid_xy *xy = make_xy(5.0, 90.0, 0.05, f_slope_peak);
    assert_int_equal(cls_prepare_xy(c, xy, NULL, frame, &err), PID_OK);
    int top = argmax(frame, N_POINTS);
    assert_true(fabs(X0_DEG + top * STEP_DEG - 40.0) <= STEP_DEG);
    assert_true(fabs(frame[top] - 1.0f) < 1e-6);
    for (int j = 0; j < N_POINTS; j++)
        if (fabs(X0_DEG + j * STEP_DEG - 40.0) > 3.0) assert_true(frame[j] < 0.05f);
    pid_xy_destroy(xy);
    cls_close(c);
}

static void test_prepare_refusals(void **state)
{
    (void)state;
    cls_classifier *c = open_ok(tmp_path("softmax.h5"), 1);
    float frame[N_POINTS];
    pid_error err;
    /* 50..90 deg: 85 of 200 points (42.5 %) */
    pid_xy *xy = make_xy(50.0, 90.0, 0.1, f_linear);
    assert_int_equal(cls_prepare_xy(c, xy, NULL, frame, &err), PID_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "covers"));
    pid_xy_destroy(xy);
    /* entirely outside */
    xy = make_xy(100.0, 120.0, 0.1, f_linear);
    assert_int_equal(cls_prepare_xy(c, xy, NULL, frame, &err), PID_ERR_FORMAT);
    pid_xy_destroy(xy);
    /* Mo measurement 3..15 deg reaches only ~32.8 deg at Cu: 33 % */
    double mo = MO_KA1;
    xy = make_xy(3.0, 15.0, 0.01, f_mo_peak);
    assert_int_equal(cls_prepare_xy(c, xy, &mo, frame, &err), PID_ERR_FORMAT);
    pid_xy_destroy(xy);
    /* flat */
    xy = make_xy(5.0, 90.0, 0.1, f_flat);
    assert_int_equal(cls_prepare_xy(c, xy, NULL, frame, &err), PID_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "flat"));
    /* NaN */
    xy->y[100] = NAN;
    assert_int_equal(cls_prepare_xy(c, xy, NULL, frame, &err), PID_ERR_FORMAT);
    pid_xy_destroy(xy);
    /* on-grid frames: NaN and flat refused, a good one max-normalized */
    float in[N_POINTS];
    for (int j = 0; j < N_POINTS; j++)
        in[j] = 3.0f;
    assert_int_equal(cls_prepare_frame(c, in, frame, &err), PID_ERR_FORMAT);
    in[5] = 6.0f;
    assert_int_equal(cls_prepare_frame(c, in, frame, &err), PID_OK);
    assert_true(frame[5] == 1.0f && frame[0] == 0.5f);
    in[7] = INFINITY;
    assert_int_equal(cls_prepare_frame(c, in, frame, &err), PID_ERR_FORMAT);
    cls_close(c);
}

/* Probabilities sum to 1, order is a permutation sorted by probability,
 * batching does not change results, the single predicted phase has fraction 1. */
static void test_run_softmax(void **state)
{
    (void)state;
    enum { NF = 5 };
    cls_classifier *c = open_ok(tmp_path("softmax.h5"), 2);
    cls_classifier *c1 = open_ok(tmp_path("softmax.h5"), 1);
    pid_error err;
    float frames[NF * N_POINTS];
    for (int f = 0; f < NF; f++)
        for (int j = 0; j < N_POINTS; j++)
            frames[f * N_POINTS + j] =
                (float)(0.5 + 0.5 * sin(0.05 * (f + 1) * j) * exp(-0.001 * f * j));
    cls_results *r = NULL, *r1 = NULL;
    assert_int_equal(cls_results_create(&r, c, NF, &err), PID_OK);
    assert_int_equal(cls_results_create(&r1, c1, 1, &err), PID_OK);
    assert_int_equal(cls_run(c, frames, NF, r, &err), PID_OK);
    assert_int_equal(r->n, NF);
    const double thr = cls_model(c)->unknown_threshold;
    for (int f = 0; f < NF; f++) {
        const float *p = r->prob + f * N_CLASSES;
        const int32_t *o = r->order + f * N_CLASSES;
        double s = 0;
        int seen = 0;
        for (int i = 0; i < N_CLASSES; i++) {
            assert_true(p[i] > 0 && p[i] < 1);
            s += p[i];
            seen |= 1 << o[i];
            if (i) assert_true(p[o[i - 1]] >= p[o[i]]);
        }
        assert_true(fabs(s - 1.0) < 1e-5);
        assert_int_equal(seen, (1 << N_CLASSES) - 1);
        for (int i = 0; i < N_CLASSES; i++) {
            assert_int_equal(r->present[f * N_CLASSES + i], i == o[0]);
            assert_true(r->fraction[f * N_CLASSES + i] == (i == o[0] ? 1.0f : 0.0f));
        }
        assert_true(isfinite(r->unknown_score[f]));
        assert_int_equal(r->unknown[f], r->unknown_score[f] > thr);
        /* one frame at a time gives the same numbers */
        assert_int_equal(cls_run(c1, frames + f * N_POINTS, 1, r1, &err), PID_OK);
        for (int i = 0; i < N_CLASSES; i++)
            assert_true(fabs(r1->prob[i] - p[i]) < 1e-6);
        assert_true(fabs(r1->unknown_score[0] - r->unknown_score[f]) < 1e-5);
    }
    /* Against the network run directly (same spec and seed as the file):
     * p = softmax(z / T), energy = -T log sum exp(z / T), T = 1.5. */
    {
        net_spec *s = NULL;
        pid_backend *be = NULL;
        net *n = NULL;
        net_shape in = {1, 1, 1, N_POINTS};
        assert_int_equal(net_spec_parse(SPEC_SOFTMAX, &s, &err), PID_OK);
        assert_int_equal(net_spec_build(s, &in, N_CLASSES, &err), PID_OK);
        assert_int_equal(pid_backend_create(&be, "cpu", 1, &err), PID_OK);
        assert_int_equal(net_create(&n, s, be, NF, 1234, &err), PID_OK);
        assert_int_equal(net_forward(n, frames, NF, 0, &err), PID_OK);
        const float *z = net_logits(n); /* host memory on the CPU backend */
        for (int f = 0; f < NF; f++) {
            double sum = 0;
            for (int i = 0; i < N_CLASSES; i++)
                sum += exp(z[f * N_CLASSES + i] / 1.5);
            for (int i = 0; i < N_CLASSES; i++)
                assert_true(fabs(r->prob[f * N_CLASSES + i] -
                                 exp(z[f * N_CLASSES + i] / 1.5) / sum) < 1e-5);
            assert_true(fabs(r->unknown_score[f] - (-1.5 * log(sum))) < 1e-5);
        }
        net_destroy(n);
        pid_backend_destroy(be);
        net_spec_destroy(s);
    }
    /* more frames than the results hold */
    assert_int_equal(cls_run(c, frames, NF + 1, r, &err), PID_ERR_ARG);

    /* The unknown flag follows the stored threshold on both sides of a score. */
    double score = r->unknown_score[0];
    cls_results_destroy(r1);
    cls_close(c1);
    for (int side = 0; side < 2; side++) {
        mf_model *m = NULL;
        assert_int_equal(mf_load(tmp_path("softmax.h5"), &m, &err), PID_OK);
        m->unknown_threshold = side ? score + 0.01 : score - 0.01;
        assert_int_equal(mf_save(tmp_path("thr.h5"), m, &err), PID_OK);
        mf_model_destroy(m);
        c1 = open_ok(tmp_path("thr.h5"), 1);
        assert_int_equal(cls_results_create(&r1, c1, 1, &err), PID_OK);
        assert_int_equal(cls_run(c1, frames, 1, r1, &err), PID_OK);
        assert_true(fabs(r1->unknown_score[0] - score) < 1e-5);
        assert_int_equal(r1->unknown[0], side ? 0 : 1);
        cls_results_destroy(r1);
        cls_close(c1);
    }
    cls_results_destroy(r);
    cls_close(c);
}

/* Multi-label head: independent probabilities, fractions over the present
 * phases summing to 1, zero for absent ones. */
static void test_run_sigmoid_fractions(void **state)
{
    (void)state;
    cls_classifier *c = open_ok(tmp_path("sigmoid.h5"), 4);
    pid_error err;
    float frame[N_POINTS];
    pid_xy *xy = make_xy(5.0, 90.0, 0.05, f_bumpy);
    assert_int_equal(cls_prepare_xy(c, xy, NULL, frame, &err), PID_OK);
    pid_xy_destroy(xy);
    cls_results *r = NULL;
    assert_int_equal(cls_results_create(&r, c, 1, &err), PID_OK);
    assert_int_equal(cls_run(c, frame, 1, r, &err), PID_OK);
    double fs = 0;
    int n_present = 0;
    for (int i = 0; i < N_CLASSES; i++) {
        assert_true(r->prob[i] > 0 && r->prob[i] < 1);
        int want = i == r->order[0] || r->prob[i] >= CLS_PRESENT_PROB;
        if (fabs(r->prob[i] - CLS_PRESENT_PROB) > 1e-6) assert_int_equal(r->present[i], want);
        n_present += want;
        if (!want) assert_true(r->fraction[i] == 0.0f);
        assert_true(r->fraction[i] >= 0 && r->fraction[i] <= 1);
        fs += r->fraction[i];
    }
    assert_true(n_present >= 1);
    assert_true(fabs(fs - 1.0) < 1e-5);
    cls_results_destroy(r);
    cls_close(c);
}

/* The inference net (BN folded, fused kernels, several threads and chunk
 * sizes, reference kernels) gives the training net's results: a CNN with
 * BN running stats away from 0 / 1, a residual block, dropout and a
 * sigmoid + fractions head. Probabilities and fractions within 1e-5
 * (absolute), unknown scores within 1e-5 max(1, |score|), the same present
 * sets and, where probabilities differ by more than 1e-5, the same order. */
#define SPEC_CNN                                                                                   \
    "conv1d(8,k5,s2,p2) bn relu maxpool(2) res(conv1d(8,k3,p1) bn relu conv1d(8,k3,p1) bn) relu "  \
    "dropout(0.1) conv1d(12,k3,p1) bn relu gpool dense(16) bn relu head(sigmoid,fractions)"

static void test_run_engines(void **state)
{
    (void)state;
    enum { NF = 13 };
    pid_error err;
    write_model(tmp_path("cnn.h5"), SPEC_CNN, NET_HEAD_SIGMOID, 1, 0, -2.0, 0);
    mf_model *m = NULL;
    assert_int_equal(mf_load(tmp_path("cnn.h5"), &m, &err), PID_OK);
    for (int64_t i = 0; i < m->n_buffers; i++) /* means in [-0.3, 0.3), variances in [0.5, 1.5) */
        m->buffers[i] = (i / 4) % 2 ? 0.5f + (float)((i * 37) % 100) / 100.0f
                                    : -0.3f + (float)((i * 53) % 60) / 100.0f;
    for (int64_t i = 0; i < m->n_params; i++)
        m->params[i] += 0.05f * (float)sin(0.7 * (double)i);
    assert_int_equal(mf_save(tmp_path("cnn.h5"), m, &err), PID_OK);
    mf_model_destroy(m);

    float frames[NF * N_POINTS];
    for (int f = 0; f < NF; f++)
        for (int j = 0; j < N_POINTS; j++)
            frames[f * N_POINTS + j] = (float)(0.5 + 0.5 * sin(0.03 * (f + 2) * j + f));
    cls_options base;
    memset(&base, 0, sizeof base);
    base.device = "cpu";
    base.max_batch = 7;
    base.training_net = 1;
    cls_classifier *ref = NULL;
    assert_int_equal(cls_open_opts(&ref, tmp_path("cnn.h5"), &base, &err), PID_OK);
    assert_false(net_is_infer(cls_net(ref)));
    cls_results *rr = NULL;
    assert_int_equal(cls_results_create(&rr, ref, NF, &err), PID_OK);
    assert_int_equal(cls_run(ref, frames, NF, rr, &err), PID_OK);
    const cls_options variants[] = {
        {"cpu", 7, 0, 0, 0, 0, 0},  /* the default: all cores, automatic chunk */
        {"cpu", 7, 1, 0, 0, 0, 0},  /* one thread */
        {"cpu", 13, 2, 1, 0, 0, 0}, /* two threads, one frame per chunk */
        {"cpu", 4, 2, 0, 1, 0, 0},  /* reference kernels */
    };
    for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
        cls_classifier *c = NULL;
        cls_results *r = NULL;
        assert_int_equal(cls_open_opts(&c, tmp_path("cnn.h5"), &variants[v], &err), PID_OK);
        assert_true(net_is_infer(cls_net(c)));
        assert_int_equal(cls_results_create(&r, c, NF, &err), PID_OK);
        assert_int_equal(cls_run(c, frames, NF, r, &err), PID_OK);
        double worst = 0.0;
        for (int i = 0; i < NF * N_CLASSES; i++) {
            double dp = fabs((double)r->prob[i] - rr->prob[i]);
            double dfr = fabs((double)r->fraction[i] - rr->fraction[i]);
            worst = fmax(worst, fmax(dp, dfr));
            if (!(dp <= 1e-5 && dfr <= 1e-5))
                fail_msg("variant %zu: value %d: prob %.8f vs %.8f, fraction %.8f vs %.8f", v, i,
                         r->prob[i], rr->prob[i], r->fraction[i], rr->fraction[i]);
            if (fabs(rr->prob[i] - CLS_PRESENT_PROB) > 1e-5)
                assert_int_equal(r->present[i], rr->present[i]);
        }
        for (int f = 0; f < NF; f++) {
            const float *p = rr->prob + f * N_CLASSES;
            for (int i = 1; i < N_CLASSES; i++) {
                int32_t a = rr->order[f * N_CLASSES + i - 1], b = rr->order[f * N_CLASSES + i];
                if (p[a] - p[b] > 1e-5) {
                    assert_int_equal(r->order[f * N_CLASSES + i - 1], a);
                    assert_int_equal(r->order[f * N_CLASSES + i], b);
                }
            }
            double u = rr->unknown_score[f];
            assert_true(fabs(r->unknown_score[f] - u) <= 1e-5 * fmax(1.0, fabs(u)));
        }
        printf("  engine variant %zu (%d threads): worst probability / fraction difference "
               "%.2e\n",
               v, cls_threads(c), worst);
        cls_results_destroy(r);
        cls_close(c);
    }
    cls_results_destroy(rr);
    cls_close(ref);
}

static void test_open_refusals(void **state)
{
    (void)state;
    pid_error err;
    cls_classifier *c = (cls_classifier *)1;
    assert_int_equal(cls_open(&c, tmp_path("missing.h5"), "cpu", 1, &err), PID_ERR_IO);
    assert_null(c);
    assert_non_null(strstr(err.msg, "missing.h5"));

    /* Truncated: the first half of a valid file. */
    FILE *in = fopen(tmp_path("softmax.h5"), "rb");
    assert_non_null(in);
    fseek(in, 0, SEEK_END);
    long size = ftell(in);
    fseek(in, 0, SEEK_SET);
    char *buf = malloc((size_t)size);
    assert_int_equal(fread(buf, 1, (size_t)size, in), (size_t)size);
    fclose(in);
    FILE *out = fopen(tmp_path("trunc.h5"), "wb");
    assert_non_null(out);
    fwrite(buf, 1, (size_t)size / 2, out);
    fclose(out);
    free(buf);
    c = (cls_classifier *)1;
    assert_int_not_equal(cls_open(&c, tmp_path("trunc.h5"), "cpu", 1, &err), PID_OK);
    assert_null(c);
    assert_non_null(strstr(err.msg, "trunc.h5"));

    c = (cls_classifier *)1;
    assert_int_equal(cls_open(&c, tmp_path("softmax.h5"), "cpu", 0, &err), PID_ERR_ARG);
    assert_null(c);
    cls_close(NULL);
    cls_results_destroy(NULL);
}

/* A model file's fitted set rule decides the present phases and the
 * fractions are renormalized over them: with a rank-2 threshold of 0.01
 * every frame reports exactly its two most probable phases, with 0.999
 * only the top one (unless the second reaches 0.999); without the rule the
 * 0.5 rule holds. */
static void test_set_rule_applied(void **state)
{
    (void)state;
    enum { NF = 9 };
    pid_error err;
    write_model(tmp_path("setrule.h5"), SPEC_CNN, NET_HEAD_SIGMOID, 1, 0, -2.0, 0);
    float frames[NF * N_POINTS];
    for (int f = 0; f < NF; f++)
        for (int j = 0; j < N_POINTS; j++)
            frames[f * N_POINTS + j] = (float)(0.5 + 0.5 * sin(0.05 * (f + 1) * j + 2 * f));
    const double thr[3] = {-1.0, 0.01, 0.999}; /* -1: no rule */
    for (int v = 0; v < 3; v++) {
        mf_model *m = NULL;
        assert_int_equal(mf_load(tmp_path("setrule.h5"), &m, &err), PID_OK);
        m->set_rule = (calib_set_rule){0};
        if (thr[v] > 0) m->set_rule = (calib_set_rule){.n = 2, .thr = {0.0, thr[v]}};
        assert_int_equal(mf_save(tmp_path("setrule_v.h5"), m, &err), PID_OK);
        mf_model_destroy(m);
        cls_classifier *c = NULL;
        cls_results *r = NULL;
        assert_int_equal(cls_open(&c, tmp_path("setrule_v.h5"), "cpu", 4, &err), PID_OK);
        assert_int_equal(cls_results_create(&r, c, NF, &err), PID_OK);
        assert_int_equal(cls_run(c, frames, NF, r, &err), PID_OK);
        for (int f = 0; f < NF; f++) {
            const float *p = r->prob + f * N_CLASSES, *fr = r->fraction + f * N_CLASSES;
            const uint8_t *pr = r->present + f * N_CLASSES;
            const int32_t *o = r->order + f * N_CLASSES;
            int n = 0;
            double sum = 0.0;
            for (int i = 0; i < N_CLASSES; i++) {
                n += pr[i];
                sum += fr[i];
                if (!pr[i]) assert_true(fr[i] == 0.0f);
            }
            assert_true(fabs(sum - 1.0) < 1e-5);
            assert_int_equal(pr[o[0]], 1);
            if (v == 0) {
                for (int i = 0; i < N_CLASSES; i++)
                    if (i != o[0] && fabs(p[i] - 0.5) > 1e-6) assert_int_equal(pr[i], p[i] >= 0.5);
            } else if (v == 1) {
                assert_int_equal(n, 2);
                assert_int_equal(pr[o[1]], 1);
            } else {
                assert_int_equal(n, 1 + (p[o[1]] >= 0.999f));
            }
        }
        cls_results_destroy(r);
        cls_close(c);
    }
}

int main(void)
{
    const char *out = getenv("PHASEID_CLS_WRITE_MODEL");
    if (out && *out) {
        /* Helper mode for the CLI test: cmocka asserts still guard the writes. */
        write_model(out, SPEC_SOFTMAX, NET_HEAD_SOFTMAX, 0, 0, -2.0, 0);
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prepare_resample),   cmocka_unit_test(test_prepare_wavelength),
        cmocka_unit_test(test_prepare_background), cmocka_unit_test(test_prepare_refusals),
        cmocka_unit_test(test_run_softmax),        cmocka_unit_test(test_run_sigmoid_fractions),
        cmocka_unit_test(test_run_engines),        cmocka_unit_test(test_set_rule_applied),
        cmocka_unit_test(test_open_refusals),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
