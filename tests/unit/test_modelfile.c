/* Unit tests for models/modelfile: a round trip of every field, atomic saves,
 * and each refusal of mf_load on files broken in the test (missing, not HDF5,
 * truncated, attribute / dataset deleted, newer version, foreign modality,
 * weights not fitting the spec, NaN / Inf weights, phase count, bad grid).
 * MF_TEST_VERBOSE=1 prints each refusal message. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <hdf5.h>

#include "core/h5.h"
#include "models/modelfile.h"
#include "models/twins.h"

#define SPEC "conv1d(4,k5,s2) bn relu gpool dense(8) relu head(sigmoid,fractions)"
#define N_POINTS 64
#define N_CLASSES 3

static char g_dir[256];

static const char *tmp_path(const char *name)
{
    static char buf[4][512];
    static int slot;
    char *p = buf[slot++ % 4];
    snprintf(p, 512, "%s/%s", g_dir, name);
    return p;
}

static int64_t spec_count(const char *spec, int buffers)
{
    net_spec *s = NULL;
    net_shape in = {1, 1, 1, N_POINTS};
    net_spec_totals t;
    assert_int_equal(net_spec_parse(spec, &s, NULL), PID_OK);
    assert_int_equal(net_spec_build(s, &in, N_CLASSES, NULL), PID_OK);
    assert_int_equal(net_spec_totals_get(s, &t, NULL), PID_OK);
    net_spec_destroy(s);
    return buffers ? t.buffers : t.params;
}

/* A complete, valid model with distinct values in every field. */
static mf_model *make_model(const char *spec, int fractions)
{
    static const char *const names[N_CLASSES] = {"quartz-alpha", "corundum", "rutile"};
    static const char *const formulas[N_CLASSES] = {"SiO2", "Al2O3", "TiO2"};
    mf_model *m = mf_model_create();
    assert_non_null(m);
    net_spec *s = NULL;
    assert_int_equal(net_spec_parse(spec, &s, NULL), PID_OK);
    assert_int_equal(net_spec_canonical(s, &m->arch_spec, NULL), PID_OK);
    net_spec_destroy(s);
    m->modality = strdup("xrd");
    m->head = NET_HEAD_SIGMOID;
    m->head_fractions = fractions;
    m->input = (net_shape){1, 1, 1, N_POINTS};
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
    m->grid.axis = 0;
    m->grid.x0 = 10.0;
    m->grid.step = 0.25;
    m->grid.n_points = N_POINTS;
    m->grid.n_lines = 2;
    m->grid.wavelength_a[0] = 1.540562;
    m->grid.wavelength_a[1] = 1.544390;
    m->grid.wavelength_weight[0] = 1.0;
    m->grid.wavelength_weight[1] = 0.5;
    m->grid.source = strdup("CuKa");
    m->preprocessing = strdup("resample-linear; max-normalize");
    m->background_removal = 1;
    m->normalization = MF_NORM_MAX;
    m->temperature = 1.375;
    m->ece = 0.0125;
    m->unknown_score = strdup("energy");
    m->unknown_threshold = -4.25;
    m->unknown_auroc = 0.9375;
    m->train_seed = 0xfedcba9876543210ULL; /* above INT64_MAX: must survive as unsigned */
    m->train_steps = 20000;
    m->train_batch = 256;
    m->train_flops = 1.25e15;
    m->generator = strdup("{\"noise\": 0.02, \"max_phases\": 3}");
    m->phaseid_version = strdup("0.1.0");
    m->created = strdup("2026-11-24T07:00:00Z");
    m->library = strdup("/data/phaselib/minerals.h5");
    m->n_params = spec_count(spec, 0);
    m->n_buffers = spec_count(spec, 1);
    m->params = malloc((size_t)m->n_params * sizeof(float));
    for (int64_t i = 0; i < m->n_params; i++)
        m->params[i] = 0.001f * (float)i - 0.5f;
    if (m->n_buffers) {
        m->buffers = malloc((size_t)m->n_buffers * sizeof(float));
        for (int64_t i = 0; i < m->n_buffers; i++)
            m->buffers[i] = 1.0f + 0.125f * (float)i;
    }
    return m;
}

static void save_ok(const char *path, const mf_model *m)
{
    pid_error err;
    pid_status st = mf_save(path, m, &err);
    if (st) fail_msg("save %s: %s", path, err.msg);
}

/* Write a valid model to `name` and return its path. */
static const char *saved_model(const char *name)
{
    mf_model *m = make_model(SPEC, 1);
    const char *path = tmp_path(name);
    save_ok(path, m);
    mf_model_destroy(m);
    return path;
}

/* mf_load must fail with `code` and a message containing the path and `what`. */
static void expect_refusal(const char *path, pid_status code, const char *what)
{
    pid_error err;
    mf_model *m = (mf_model *)1;
    pid_status st = mf_load(path, &m, &err);
    if (st != code) fail_msg("%s: status %d, want %d (%s)", path, (int)st, (int)code, err.msg);
    assert_null(m);
    if (getenv("MF_TEST_VERBOSE")) print_message("%s\n", err.msg);
    if (!strstr(err.msg, path)) fail_msg("message lacks the path: %s", err.msg);
    if (!strstr(err.msg, what)) fail_msg("message lacks '%s': %s", what, err.msg);
}

static hid_t open_rw(const char *path)
{
    pid_h5_quiet();
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    assert_true(f >= 0);
    return f;
}

static void set_attr_i64(const char *path, const char *obj, const char *name, int64_t v)
{
    hid_t f = open_rw(path);
    hid_t o = H5Oopen(f, obj, H5P_DEFAULT);
    assert_true(o >= 0);
    assert_int_equal(pid_h5_attr_i64(o, name, v, NULL), PID_OK);
    H5Oclose(o);
    H5Fclose(f);
}

static void set_attr_f64(const char *path, const char *obj, const char *name, double v)
{
    hid_t f = open_rw(path);
    hid_t o = H5Oopen(f, obj, H5P_DEFAULT);
    assert_true(o >= 0);
    assert_int_equal(pid_h5_attr_f64(o, name, v, NULL), PID_OK);
    H5Oclose(o);
    H5Fclose(f);
}

static void set_attr_str(const char *path, const char *obj, const char *name, const char *v)
{
    hid_t f = open_rw(path);
    hid_t o = H5Oopen(f, obj, H5P_DEFAULT);
    assert_true(o >= 0);
    assert_int_equal(pid_h5_attr_str(o, name, v, NULL), PID_OK);
    H5Oclose(o);
    H5Fclose(f);
}

static void delete_attr(const char *path, const char *obj, const char *name)
{
    hid_t f = open_rw(path);
    hid_t o = H5Oopen(f, obj, H5P_DEFAULT);
    assert_true(o >= 0);
    assert_true(H5Adelete(o, name) >= 0);
    H5Oclose(o);
    H5Fclose(f);
}

static void delete_link(const char *path, const char *name)
{
    hid_t f = open_rw(path);
    assert_true(H5Ldelete(f, name, H5P_DEFAULT) >= 0);
    H5Fclose(f);
}

static void poke_param(const char *path, int64_t index, float v)
{
    hid_t f = open_rw(path);
    hid_t d = H5Dopen2(f, "params", H5P_DEFAULT);
    assert_true(d >= 0);
    hid_t fs = H5Dget_space(d);
    hsize_t start[1] = {(hsize_t)index}, count[1] = {1};
    assert_true(H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) >= 0);
    hid_t ms = H5Screate_simple(1, count, NULL);
    assert_true(H5Dwrite(d, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, &v) >= 0);
    H5Sclose(ms);
    H5Sclose(fs);
    H5Dclose(d);
    H5Fclose(f);
}

static void assert_str(const char *a, const char *b)
{
    assert_non_null(a);
    assert_string_equal(a, b);
}

static void test_round_trip(void **state)
{
    mf_model *m = make_model(SPEC, 1), *r = NULL;
    const char *path = tmp_path("round.h5");
    pid_error err;
    save_ok(path, m);
    pid_status st = mf_load(path, &r, &err);
    if (st) fail_msg("load: %s", err.msg);
    assert_int_equal(r->format_version, MF_FORMAT_VERSION);
    assert_str(r->modality, "xrd");
    assert_str(r->arch_spec, m->arch_spec);
    assert_int_equal(r->head, NET_HEAD_SIGMOID);
    assert_int_equal(r->head_fractions, 1);
    assert_int_equal(r->input.rank, 1);
    assert_int_equal(r->input.c, 1);
    assert_int_equal(r->input.w, N_POINTS);
    assert_int_equal(r->n_classes, N_CLASSES);
    for (int i = 0; i < N_CLASSES; i++) {
        assert_str(r->phases[i].name, m->phases[i].name);
        assert_str(r->phases[i].formula, m->phases[i].formula);
        assert_str(r->phases[i].source, m->phases[i].source);
        assert_str(r->phases[i].reference, m->phases[i].reference);
    }
    assert_int_equal(r->grid.axis, 0);
    assert_true(r->grid.x0 == 10.0 && r->grid.step == 0.25);
    assert_int_equal(r->grid.n_points, N_POINTS);
    assert_int_equal(r->grid.n_lines, 2);
    assert_true(r->grid.wavelength_a[0] == 1.540562 && r->grid.wavelength_a[1] == 1.544390);
    assert_true(r->grid.wavelength_weight[0] == 1.0 && r->grid.wavelength_weight[1] == 0.5);
    assert_str(r->grid.source, "CuKa");
    assert_str(r->preprocessing, "resample-linear; max-normalize");
    assert_int_equal(r->background_removal, 1);
    assert_int_equal(r->normalization, MF_NORM_MAX);
    assert_true(r->temperature == 1.375 && r->ece == 0.0125);
    assert_str(r->unknown_score, "energy");
    assert_true(r->unknown_threshold == -4.25 && r->unknown_auroc == 0.9375);
    assert_true(r->train_seed == 0xfedcba9876543210ULL);
    assert_int_equal(r->train_steps, 20000);
    assert_int_equal(r->train_batch, 256);
    assert_true(r->train_flops == 1.25e15);
    assert_str(r->generator, m->generator);
    assert_str(r->phaseid_version, "0.1.0");
    assert_str(r->created, "2026-11-24T07:00:00Z");
    assert_str(r->library, "/data/phaselib/minerals.h5");
    assert_int_equal(r->n_params, m->n_params);
    assert_int_equal(r->n_buffers, m->n_buffers);
    assert_true(r->n_buffers > 0);
    assert_memory_equal(r->params, m->params, (size_t)m->n_params * sizeof(float));
    assert_memory_equal(r->buffers, m->buffers, (size_t)m->n_buffers * sizeof(float));
    /* no residual check: the attributes are absent and load as 0 (off) */
    assert_true(r->residual_threshold == 0.0 && r->residual_strain_max == 0.0);
    assert_true(r->missing_threshold == 0.0);
    mf_model_destroy(r);
    r = NULL;
    /* with one: both attributes round-trip, and the missing-reflection threshold */
    m->residual_threshold = 0.234375;
    m->residual_strain_max = 0.035;
    m->missing_threshold = 0.3125;
    const char *p2 = tmp_path("round_residual.h5");
    save_ok(p2, m);
    st = mf_load(p2, &r, &err);
    if (st) fail_msg("load: %s", err.msg);
    assert_true(r->residual_threshold == 0.234375 && r->residual_strain_max == 0.035);
    assert_true(r->missing_threshold == 0.3125);
    /* no set rule in the file: the 0.5 rule (n = 0) */
    assert_int_equal(r->set_rule.n, 0);
    /* near twins round-trip; none in the file: none loaded */
    assert_int_equal(r->n_twins, 0);
    assert_null(r->twin_pairs);
    mf_model_destroy(r);
    assert_true(m->n_classes >= 3);
    m->twin_pairs = malloc(4 * sizeof(int32_t));
    m->twin_cos = malloc(2 * sizeof(float));
    assert_non_null(m->twin_pairs);
    assert_non_null(m->twin_cos);
    m->twin_pairs[0] = 0;
    m->twin_pairs[1] = 2;
    m->twin_pairs[2] = 1;
    m->twin_pairs[3] = 2;
    m->twin_cos[0] = 0.9975f;
    m->twin_cos[1] = 0.999f;
    m->n_twins = 2;
    const char *p5 = tmp_path("round_twins.h5");
    save_ok(p5, m);
    st = mf_load(p5, &r, &err);
    if (st) fail_msg("load: %s", err.msg);
    assert_int_equal(r->n_twins, 2);
    assert_memory_equal(r->twin_pairs, m->twin_pairs, 4 * sizeof(int32_t));
    assert_memory_equal(r->twin_cos, m->twin_cos, 2 * sizeof(float));
    uint8_t *tm = NULL;
    assert_int_equal(twins_matrix(r->twin_pairs, r->n_twins, r->n_classes, &tm, &err), PID_OK);
    const int64_t k = r->n_classes;
    assert_non_null(tm);
    assert_true(tm[0 * k + 2] && tm[2 * k + 0] && tm[1 * k + 2] && tm[2 * k + 1] && !tm[0 * k + 1]);
    free(tm);
    mf_model_destroy(r);
    /* refused: a pair out of order or out of range, a cosine above 1 */
    m->twin_pairs[2] = 2;
    m->twin_pairs[3] = 1;
    assert_int_equal(mf_save(tmp_path("bad_twins.h5"), m, &err), PID_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "near twins"));
    m->twin_pairs[2] = 1;
    m->twin_pairs[3] = (int32_t)m->n_classes;
    assert_int_equal(mf_validate(m, &err), PID_ERR_FORMAT);
    m->twin_pairs[3] = 2;
    m->twin_cos[1] = 1.5f;
    assert_int_equal(mf_validate(m, &err), PID_ERR_FORMAT);
    m->twin_cos[1] = 0.999f;
    assert_int_equal(mf_validate(m, &err), PID_OK);
    free(m->twin_pairs);
    free(m->twin_cos);
    m->twin_pairs = NULL;
    m->twin_cos = NULL;
    m->n_twins = 0;
    /* a fitted set rule round-trips (thresholds of ranks 1..n-1) */
    m->set_rule = (calib_set_rule){.n = 3, .thr = {0.0, 0.375, 0.45}};
    const char *p4 = tmp_path("round_setrule.h5");
    save_ok(p4, m);
    st = mf_load(p4, &r, &err);
    if (st) fail_msg("load: %s", err.msg);
    assert_int_equal(r->set_rule.n, 3);
    assert_true(r->set_rule.thr[1] == 0.375 && r->set_rule.thr[2] == 0.45);
    mf_model_destroy(r);
    /* refused: a threshold outside (0, 1), one rank, too many ranks, a softmax head */
    m->set_rule.thr[2] = 1.0;
    assert_int_equal(mf_save(tmp_path("bad_setrule.h5"), m, &err), PID_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "set threshold"));
    m->set_rule.thr[2] = 0.45;
    m->set_rule.n = 1;
    assert_int_equal(mf_validate(m, &err), PID_ERR_FORMAT);
    m->set_rule.n = CALIB_MAX_SET + 1;
    assert_int_equal(mf_validate(m, &err), PID_ERR_FORMAT);
    m->set_rule.n = 3;
    m->head = NET_HEAD_SOFTMAX;
    assert_int_equal(mf_validate(m, &err), PID_ERR_FORMAT);
    m->head = NET_HEAD_SIGMOID;
    m->set_rule.n = 0;
    /* a checkpoint's optimizer state round-trips; half of it is refused */
    m->opt_m = calloc((size_t)m->n_params, sizeof(float));
    m->opt_v = calloc((size_t)m->n_params, sizeof(float));
    assert_non_null(m->opt_m);
    assert_non_null(m->opt_v);
    m->opt_m[0] = -0.5f;
    m->opt_v[0] = 0.25f;
    m->opt_step = 1234;
    const char *p3 = tmp_path("round_optimizer.h5");
    save_ok(p3, m);
    st = mf_load(p3, &r, &err);
    if (st) fail_msg("load: %s", err.msg);
    assert_non_null(r->opt_m);
    assert_memory_equal(r->opt_m, m->opt_m, (size_t)m->n_params * sizeof(float));
    assert_memory_equal(r->opt_v, m->opt_v, (size_t)m->n_params * sizeof(float));
    assert_int_equal(r->opt_step, 1234);
    mf_model_destroy(r);
    m->opt_v[1] = -1.0f;
    assert_int_equal(mf_validate(m, &err), PID_ERR_FORMAT);
    free(m->opt_v);
    m->opt_v = NULL;
    assert_int_equal(mf_validate(m, &err), PID_ERR_FORMAT);
    free(m->opt_m);
    m->opt_m = NULL;
    /* out of range: refused on save */
    m->residual_threshold = 1.5;
    assert_int_equal(mf_save(tmp_path("bad_residual.h5"), m, &err), PID_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "residual"));
    m->residual_threshold = 0.2;
    m->residual_strain_max = NAN;
    assert_int_equal(mf_validate(m, &err), PID_ERR_FORMAT);
    m->residual_strain_max = 0.03;
    /* a missing-reflection threshold out of range, or without the residual check */
    m->missing_threshold = NAN;
    assert_int_equal(mf_validate(m, &err), PID_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "missing-reflection"));
    m->missing_threshold = 0.4;
    assert_int_equal(mf_validate(m, &err), PID_OK);
    m->residual_threshold = 0.0;
    assert_int_equal(mf_validate(m, &err), PID_ERR_FORMAT);
    mf_model_destroy(m);
}

/* The optional phase cells and residual-check sticks: round trip (values
 * exact), a file without them loads with NULLs, and inconsistent ones
 * (offsets not spanning the sticks, a space group of 231, d <= 0, a
 * missing dataset) are refused. */
static void test_sticks(void **state)
{
    (void)state;
    mf_model *m = make_model(SPEC, 1), *r = NULL;
    pid_error err;
    pid_status st;
    m->residual_threshold = 0.25;
    m->residual_strain_max = 0.04;
    const int64_t k = m->n_classes, ns = 2 * k + 1;
    m->phase_cells = calloc(6 * (size_t)k, sizeof(double));
    m->phase_sg = calloc((size_t)k, sizeof(int32_t));
    m->stick_off = calloc((size_t)k + 1, sizeof(int64_t));
    m->stick_hkl = calloc(3 * (size_t)ns, sizeof(int32_t));
    m->stick_d = calloc((size_t)ns, sizeof(double));
    m->stick_int = calloc((size_t)ns, sizeof(float));
    assert_non_null(m->stick_int);
    for (int64_t c = 0; c < k; c++) {
        double cell[6] = {4.0 + 0.125 * (double)c, 4.5, 5.25, 90, 90, c ? 120 : 90};
        memcpy(m->phase_cells + 6 * c, cell, sizeof cell);
        m->phase_sg[c] = c ? 194 : 225;
        m->stick_off[c + 1] = m->stick_off[c] + (c == 0 ? 3 : 2); /* 3 + 2 (k - 1) = ns */
    }
    for (int64_t j = 0; j < ns; j++) {
        m->stick_hkl[3 * j] = (int32_t)j;
        m->stick_hkl[3 * j + 1] = -1;
        m->stick_hkl[3 * j + 2] = 2;
        m->stick_d[j] = 3.0 / (1.0 + (double)j);
        m->stick_int[j] = (float)(100.0 / (1.0 + (double)j));
    }
    m->n_sticks = ns;
    const char *p1 = tmp_path("sticks.h5");
    save_ok(p1, m);
    st = mf_load(p1, &r, &err);
    if (st) fail_msg("load: %s", err.msg);
    assert_int_equal(r->n_sticks, ns);
    assert_memory_equal(r->phase_cells, m->phase_cells, 6 * (size_t)k * sizeof(double));
    assert_memory_equal(r->phase_sg, m->phase_sg, (size_t)k * sizeof(int32_t));
    assert_memory_equal(r->stick_off, m->stick_off, ((size_t)k + 1) * sizeof(int64_t));
    assert_memory_equal(r->stick_hkl, m->stick_hkl, 3 * (size_t)ns * sizeof(int32_t));
    assert_memory_equal(r->stick_d, m->stick_d, (size_t)ns * sizeof(double));
    assert_memory_equal(r->stick_int, m->stick_int, (size_t)ns * sizeof(float));
    mf_model_destroy(r);
    r = NULL;
    /* a missing dataset: refused with its name */
    const char *p2 = tmp_path("sticks_missing.h5");
    save_ok(p2, m);
    delete_link(p2, "phases/sticks_d");
    expect_refusal(p2, PID_ERR_FORMAT, "sticks_d");
    /* inconsistent values: refused on save */
    m->stick_off[k] = ns - 1;
    assert_int_equal(mf_save(tmp_path("sticks_bad.h5"), m, &err), PID_ERR_FORMAT);
    m->stick_off[k] = ns;
    m->phase_sg[1] = 231;
    assert_int_equal(mf_validate(m, &err), PID_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "space group"));
    m->phase_sg[1] = 194;
    m->stick_d[2] = 0.0;
    assert_int_equal(mf_validate(m, &err), PID_ERR_FORMAT);
    m->stick_d[2] = 1.0;
    m->stick_int[0] = NAN;
    assert_int_equal(mf_validate(m, &err), PID_ERR_FORMAT);
    m->stick_int[0] = 1.0f;
    free(m->stick_d);
    m->stick_d = NULL;
    assert_int_equal(mf_validate(m, &err), PID_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "incomplete"));
    mf_model_destroy(m);
    /* a file without them: NULL fields */
    m = make_model(SPEC, 1);
    const char *p3 = tmp_path("no_sticks.h5");
    save_ok(p3, m);
    st = mf_load(p3, &r, &err);
    if (st) fail_msg("load: %s", err.msg);
    assert_null(r->stick_off);
    assert_null(r->phase_cells);
    assert_int_equal(r->n_sticks, 0);
    mf_model_destroy(r);
    mf_model_destroy(m);
}

/* Q axis, one line, softmax head without BN (so no buffers), no normalization. */
static void test_round_trip_q_no_buffers(void **state)
{
    const char *spec = "conv1d(4,k5,s2) relu gpool head";
    mf_model *m = make_model(spec, 0), *r = NULL;
    const char *path = tmp_path("round_q.h5");
    pid_error err;
    m->head = NET_HEAD_SOFTMAX;
    m->grid.axis = 1;
    m->grid.x0 = 0.5;
    m->grid.step = 0.05;
    m->grid.n_lines = 1;
    m->grid.wavelength_a[0] = 0.4133;
    free(m->grid.source);
    m->grid.source = strdup("0.4133");
    m->normalization = MF_NORM_NONE;
    m->background_removal = 0;
    assert_int_equal(m->n_buffers, 0);
    save_ok(path, m);
    pid_status st = mf_load(path, &r, &err);
    if (st) fail_msg("load: %s", err.msg);
    assert_int_equal(r->head, NET_HEAD_SOFTMAX);
    assert_int_equal(r->head_fractions, 0);
    assert_int_equal(r->grid.axis, 1);
    assert_int_equal(r->grid.n_lines, 1);
    assert_true(r->grid.wavelength_a[0] == 0.4133 && r->grid.wavelength_weight[0] == 1.0);
    assert_int_equal(r->normalization, MF_NORM_NONE);
    assert_int_equal(r->background_removal, 0);
    assert_int_equal(r->n_buffers, 0);
    assert_null(r->buffers);
    assert_memory_equal(r->params, m->params, (size_t)m->n_params * sizeof(float));
    mf_model_destroy(r);
    mf_model_destroy(m);
}

static void test_atomic_save(void **state)
{
    mf_model *m = make_model(SPEC, 1), *r = NULL;
    const char *path = tmp_path("atomic.h5");
    char tmp[600];
    struct stat sb;
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    save_ok(path, m);
    assert_int_not_equal(stat(tmp, &sb), 0); /* no .tmp left behind */
    /* Overwriting replaces the file in one step. */
    m->temperature = 2.5;
    save_ok(path, m);
    assert_int_not_equal(stat(tmp, &sb), 0);
    assert_int_equal(mf_load(path, &r, NULL), PID_OK);
    assert_true(r->temperature == 2.5);
    mf_model_destroy(r);
    /* An invalid model is refused and leaves the old file and no .tmp. */
    pid_error err;
    m->params[3] = NAN;
    assert_int_equal(mf_save(path, m, &err), PID_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "not finite"));
    assert_int_not_equal(stat(tmp, &sb), 0);
    assert_int_equal(mf_load(path, &r, NULL), PID_OK);
    assert_true(r->temperature == 2.5);
    mf_model_destroy(r);
    /* A directory that does not exist: error, nothing written. */
    m->params[3] = 0.0f;
    const char *bad = tmp_path("no/such/dir/model.h5");
    assert_int_equal(mf_save(bad, m, &err), PID_ERR_IO);
    assert_non_null(strstr(err.msg, "no/such/dir"));
    mf_model_destroy(m);
}

static void test_refuse_missing_file(void **state)
{
    expect_refusal(tmp_path("does_not_exist.h5"), PID_ERR_IO, "No such file");
}

static void test_refuse_not_hdf5(void **state)
{
    const char *path = tmp_path("text.h5");
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < 100; i++)
        fprintf(f, "%d.0 %d\n", i, i * i);
    fclose(f);
    expect_refusal(path, PID_ERR_IO, "not an HDF5 file");
    /* An empty file too. */
    const char *empty = tmp_path("empty.h5");
    f = fopen(empty, "w");
    fclose(f);
    expect_refusal(empty, PID_ERR_IO, "not an HDF5 file");
}

static void test_refuse_truncated(void **state)
{
    const char *path = saved_model("trunc.h5");
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(truncate(path, sb.st_size / 2), 0);
    expect_refusal(path, PID_ERR_FORMAT, "truncated");
}

static void test_refuse_missing_parts(void **state)
{
    const char *p1 = saved_model("noattr.h5");
    delete_attr(p1, "/", "temperature");
    expect_refusal(p1, PID_ERR_FORMAT, "missing attribute 'temperature'");

    const char *p2 = saved_model("nogridattr.h5");
    delete_attr(p2, "/grid", "step");
    expect_refusal(p2, PID_ERR_FORMAT, "missing attribute 'step'");

    const char *p3 = saved_model("noparams.h5");
    delete_link(p3, "params");
    expect_refusal(p3, PID_ERR_FORMAT, "no dataset 'params'");

    const char *p4 = saved_model("noformulas.h5");
    delete_link(p4, "phases/formulas");
    expect_refusal(p4, PID_ERR_FORMAT, "missing dataset 'phases/formulas'");

    const char *p5 = saved_model("nogrid.h5");
    delete_link(p5, "grid");
    expect_refusal(p5, PID_ERR_FORMAT, "missing group 'grid'");

    const char *p6 = saved_model("noformat.h5");
    delete_attr(p6, "/", "format");
    expect_refusal(p6, PID_ERR_FORMAT, "missing attribute 'format'");
}

static void test_refuse_newer_version(void **state)
{
    const char *path = saved_model("v99.h5");
    set_attr_i64(path, "/", "format_version", 99);
    expect_refusal(path, PID_ERR_UNSUPPORTED, "format version 99 is newer");
}

static void test_refuse_modality(void **state)
{
    const char *path = saved_model("ebsd.h5");
    set_attr_str(path, "/", "modality", "ebsd");
    expect_refusal(path, PID_ERR_UNSUPPORTED, "unknown modality 'ebsd'");
}

static void test_refuse_spec_mismatch(void **state)
{
    /* Another architecture with the same input: its parameter count differs. */
    const char *p1 = saved_model("otherspec.h5");
    set_attr_str(p1, "/", "arch_spec",
                 "conv1d(8,k5,s2) bn relu gpool dense(8) relu head(sigmoid,fractions)");
    expect_refusal(p1, PID_ERR_FORMAT, "inconsistent with the architecture spec");

    /* n_params and /params agree with each other but not with the spec. */
    const char *p2 = saved_model("moreparams.h5");
    int64_t n = spec_count(SPEC, 0) + 7;
    float *v = calloc((size_t)n, sizeof *v);
    delete_link(p2, "params");
    hid_t f = open_rw(p2);
    assert_int_equal(pid_h5_write_1d(f, "params", H5T_NATIVE_FLOAT, n, v, NULL), PID_OK);
    H5Fclose(f);
    free(v);
    set_attr_i64(p2, "/", "n_params", n);
    expect_refusal(p2, PID_ERR_FORMAT, "inconsistent with the architecture spec");

    /* n_params attribute disagreeing with the dataset length. */
    const char *p3 = saved_model("shortparams.h5");
    delete_link(p3, "params");
    f = open_rw(p3);
    float one = 1.0f;
    assert_int_equal(pid_h5_write_1d(f, "params", H5T_NATIVE_FLOAT, 1, &one, NULL), PID_OK);
    H5Fclose(f);
    expect_refusal(p3, PID_ERR_FORMAT, "dataset 'params' has 1 values");

    /* Head kind attribute disagreeing with the spec's head. */
    const char *p4 = saved_model("head.h5");
    set_attr_str(p4, "/", "head", "softmax");
    expect_refusal(p4, PID_ERR_FORMAT, "disagrees with the spec's head");

    /* A spec that does not parse. */
    const char *p5 = saved_model("badspec.h5");
    set_attr_str(p5, "/", "arch_spec", "conv1d(4) head");
    expect_refusal(p5, PID_ERR_FORMAT, "architecture spec");
}

static void test_refuse_nonfinite(void **state)
{
    const char *p1 = saved_model("nan.h5");
    poke_param(p1, 5, NAN);
    expect_refusal(p1, PID_ERR_FORMAT, "parameter 5 is not finite");
    const char *p2 = saved_model("inf.h5");
    poke_param(p2, 0, -INFINITY);
    expect_refusal(p2, PID_ERR_FORMAT, "parameter 0 is not finite");
}

static void test_refuse_phase_count(void **state)
{
    const char *path = saved_model("phases.h5");
    const char *two[2] = {"quartz-alpha", "corundum"};
    delete_link(path, "phases/names");
    hid_t f = open_rw(path);
    hid_t g = H5Gopen2(f, "phases", H5P_DEFAULT);
    assert_int_equal(pid_h5_write_strings(g, "names", 2, two, NULL), PID_OK);
    H5Gclose(g);
    H5Fclose(f);
    expect_refusal(path, PID_ERR_FORMAT, "phase count 2 in 'phases/names' != n_classes 3");
}

static void test_refuse_grid(void **state)
{
    const char *p1 = saved_model("negstep.h5");
    set_attr_f64(p1, "/grid", "step", -0.25);
    expect_refusal(p1, PID_ERR_FORMAT, "grid: bad x0");

    const char *p2 = saved_model("npoints.h5");
    set_attr_i64(p2, "/grid", "n_points", N_POINTS + 1);
    expect_refusal(p2, PID_ERR_FORMAT, "network input is 1x64");

    const char *p3 = saved_model("axis.h5");
    set_attr_str(p3, "/grid", "axis", "d-spacing");
    expect_refusal(p3, PID_ERR_FORMAT, "grid: unknown axis kind 'd-spacing'");

    const char *p4 = saved_model("wl.h5");
    hid_t f = open_rw(p4);
    hid_t g = H5Gopen2(f, "grid", H5P_DEFAULT);
    const double wl[2] = {1.540562, 0.0};
    assert_int_equal(pid_h5_attr_f64_array(g, "wavelengths_a", 2, wl, NULL), PID_OK);
    H5Gclose(g);
    H5Fclose(f);
    expect_refusal(p4, PID_ERR_FORMAT, "grid: wavelength 1 is 0 angstrom");

    const char *p6 = saved_model("nweights.h5");
    set_attr_f64(p6, "/grid", "weights", 1.0);
    expect_refusal(p6, PID_ERR_FORMAT, "grid: 2 wavelengths but 1 weights");

    const char *p5 = saved_model("range.h5");
    set_attr_f64(p5, "/grid", "step", 3.0); /* 10 + 63 * 3 = 199 deg */
    expect_refusal(p5, PID_ERR_FORMAT, ">= 180");
}

static void test_refuse_other_fields(void **state)
{
    const char *p1 = saved_model("temp.h5");
    set_attr_f64(p1, "/", "temperature", 0.0);
    expect_refusal(p1, PID_ERR_FORMAT, "temperature");
    const char *p2 = saved_model("norm.h5");
    set_attr_str(p2, "/", "normalization", "zscore");
    expect_refusal(p2, PID_ERR_FORMAT, "unknown normalization kind 'zscore'");
    const char *p3 = saved_model("score.h5");
    set_attr_str(p3, "/", "unknown_score", "msp");
    expect_refusal(p3, PID_ERR_FORMAT, "unknown-phase score 'msp'");
}

static void test_summary(void **state)
{
    mf_model *m = make_model(SPEC, 1);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    mf_print_summary(f, m);
    fclose(f);
    assert_non_null(strstr(buf, "sigmoid+fractions, 3 classes"));
    assert_non_null(strstr(buf, "2-theta 10 .. 25.75 deg, step 0.25, 64 points"));
    assert_non_null(strstr(buf, "CuKa (1.540562 A x 1, 1.544390 A x 0.5)"));
    assert_non_null(strstr(buf, "temperature 1.375"));
    assert_non_null(strstr(buf, "energy score, threshold -4.25"));
    assert_non_null(strstr(buf, "corundum"));
    assert_non_null(strstr(buf, "COD 9000002"));
    assert_non_null(strstr(buf, "held-out AUROC 0.9375"));
    free(buf);
    buf = NULL;
    /* a model whose training held no phases out: its AUROC is a placeholder */
    assert_int_equal(mf_auroc_measured(m), 1);
    free(m->generator);
    m->generator = strdup("{\"calibrated\": true, \"unknown_auroc_measured\": false}");
    assert_int_equal(mf_auroc_measured(m), 0);
    f = open_memstream(&buf, &len);
    assert_non_null(f);
    mf_print_summary(f, m);
    fclose(f);
    assert_non_null(strstr(buf, "held-out AUROC not measured"));
    free(buf);
    mf_model_destroy(m);
}

static int setup(void **state)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/pid_mf_XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **state)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_round_trip_q_no_buffers),
        cmocka_unit_test(test_sticks),
        cmocka_unit_test(test_atomic_save),
        cmocka_unit_test(test_refuse_missing_file),
        cmocka_unit_test(test_refuse_not_hdf5),
        cmocka_unit_test(test_refuse_truncated),
        cmocka_unit_test(test_refuse_missing_parts),
        cmocka_unit_test(test_refuse_newer_version),
        cmocka_unit_test(test_refuse_modality),
        cmocka_unit_test(test_refuse_spec_mismatch),
        cmocka_unit_test(test_refuse_nonfinite),
        cmocka_unit_test(test_refuse_phase_count),
        cmocka_unit_test(test_refuse_grid),
        cmocka_unit_test(test_refuse_other_fields),
        cmocka_unit_test(test_summary),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
