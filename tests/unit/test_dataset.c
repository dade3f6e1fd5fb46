/* Unit tests for models/dataset.*: a file written by the dataset writer
 * (synth/xrd_dataset.h) loads with the rows the in-memory generator makes for
 * the same settings, its grid, radiation, phase names and mixture count; and
 * damaged files (not HDF5, missing datasets, NaN, labels out of range, a row
 * with no phase) are refused with the file named. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/h5.h"
#include "kernels/backend.h"
#include "models/dataset.h"
#include "synth/phaselib.h"
#include "synth/xrd_dataset.h"

#define OK(x) assert_int_equal((x), PID_OK)

static char dir[256], good[300];
static pid_phaselib *lib;
static pid_xrd_dataset_opts opts;
static pid_error err;

static int setup(void **state)
{
    (void)state;
    char data[512], cmd[2048];
    snprintf(dir, sizeof dir, "/tmp/pid_test_dataset_XXXXXX");
    if (!mkdtemp(dir) || pid_phaselib_builtin_dir(data, sizeof data, &err)) return -1;
    snprintf(cmd, sizeof cmd, "cp %s/NaCl_225.cif %s/Si_227.cif %s/TiO2_136.cif %s/", data, data,
             data, dir);
    if (system(cmd) != 0 || pid_phaselib_load(dir, &lib, &err)) return -1;
    pid_xrd_dataset_opts_default(&opts);
    opts.n = 40;
    opts.seed = 5;
    opts.grid.x0 = 10.0f;
    opts.grid.step = 0.05f;
    opts.grid.n_points = 1401;
    opts.aug.mixtures_max = 2;
    opts.threads = 1;
    pid_backend *cpu = NULL;
    if (pid_backend_create(&cpu, "cpu", 1, &err)) return -1;
    snprintf(good, sizeof good, "%s/good.h5", dir);
    pid_status st = pid_xrd_dataset_write(lib, &opts, cpu, good, NULL, NULL, &err);
    pid_backend_destroy(cpu);
    return st ? -1 : 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[512];
    pid_phaselib_destroy(lib);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_load_matches_generator(void **state)
{
    (void)state;
    ds_xrd *d = NULL;
    OK(ds_load(good, &d, &err));
    assert_int_equal(d->n, 40);
    assert_int_equal(d->p, 1401);
    assert_int_equal(d->k, 3);
    assert_string_equal(d->names[1], "Si_227");
    assert_float_equal(d->grid.x0, 10.0, 1e-6);
    assert_float_equal(d->grid.step, 0.05, 1e-6);
    assert_int_equal(d->grid.n_points, 1401);
    assert_string_equal(d->source.name, "CuKa");
    assert_int_equal(d->source.n_lines, 2);
    assert_int_equal(d->mixtures_max, 2);
    pid_xrd_gen *g = NULL;
    OK(pid_xrd_gen_create(&g, lib, &opts, &err));
    float *x = malloc(sizeof(float) * 40 * 1401), *mh = malloc(sizeof(float) * 40 * 3);
    int32_t lab[40];
    assert_non_null(x);
    assert_non_null(mh);
    OK(pid_xrd_generate(g, 0, 40, x, lab, mh, NULL, &err));
    for (int i = 0; i < 40 * 1401; i++)
        assert_float_equal(x[i], d->patterns[i], 1e-6);
    for (int i = 0; i < 40; i++)
        assert_int_equal(lab[i], d->labels[i]);
    assert_memory_equal(mh, d->multi_hot, sizeof(float) * 40 * 3);
    pid_xrd_gen_destroy(g);
    free(x);
    free(mh);
    ds_destroy(d);
}

/* Copy the good file to `name` and overwrite one float of dataset `dset`
 * (flat element `at`) with v, or delete the dataset when del. */
static void damaged(const char *name, const char *dset, int64_t at, double v, int del, char *out)
{
    char cmd[1024];
    snprintf(out, 300, "%s/%s", dir, name);
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", good, out);
    assert_int_equal(system(cmd), 0);
    hid_t f = H5Fopen(out, H5F_ACC_RDWR, H5P_DEFAULT);
    assert_true(f >= 0);
    if (del)
        assert_true(H5Ldelete(f, dset, H5P_DEFAULT) >= 0);
    else {
        hid_t d = H5Dopen2(f, dset, H5P_DEFAULT), sp = H5Dget_space(d);
        int nd = H5Sget_simple_extent_ndims(sp);
        hsize_t dims[2] = {0, 0}, start[2] = {0, 0}, cnt[2] = {1, 1};
        H5Sget_simple_extent_dims(sp, dims, NULL);
        if (nd == 2) {
            start[0] = (hsize_t)at / dims[1];
            start[1] = (hsize_t)at % dims[1];
        } else
            start[0] = (hsize_t)at;
        H5Sselect_hyperslab(sp, H5S_SELECT_SET, start, NULL, cnt, NULL);
        hid_t ms = H5Screate_simple(1, cnt, NULL);
        assert_true(H5Dwrite(d, H5T_NATIVE_DOUBLE, ms, sp, H5P_DEFAULT, &v) >= 0);
        H5Sclose(ms);
        H5Sclose(sp);
        H5Dclose(d);
    }
    H5Fclose(f);
}

static void expect_refused(const char *path, pid_status code, const char *needle)
{
    ds_xrd *d = NULL;
    pid_error e;
    pid_error_clear(&e);
    pid_status st = ds_load(path, &d, &e);
    if (st != code || !strstr(e.msg, needle) || !strstr(e.msg, path))
        fprintf(stderr, "expected %d '%s', got %d '%s'\n", (int)code, needle, (int)st, e.msg);
    assert_int_equal(st, code);
    assert_null(d);
    assert_non_null(strstr(e.msg, needle));
    assert_non_null(strstr(e.msg, path));
}

static void test_refusals(void **state)
{
    (void)state;
    char p[300], cmd[700];
    snprintf(p, sizeof p, "%s/junk.h5", dir);
    snprintf(cmd, sizeof cmd, "head -c 5000 /dev/urandom > '%s'", p);
    assert_int_equal(system(cmd), 0);
    expect_refused(p, PID_ERR_IO, "cannot open");
    snprintf(p, sizeof p, "%s/none.h5", dir);
    expect_refused(p, PID_ERR_IO, "cannot open");
    damaged("nan.h5", "patterns", 1401 * 3 + 17, NAN, 0, p);
    expect_refused(p, PID_ERR_FORMAT, "non-finite");
    damaged("label.h5", "labels", 4, 7, 0, p);
    expect_refused(p, PID_ERR_FORMAT, "not a phase index");
    damaged("nophase.h5", "phases", 0, 0, 1, p);
    expect_refused(p, PID_ERR_FORMAT, "phases");
    damaged("noaxis.h5", "axis", 0, 0, 1, p);
    expect_refused(p, PID_ERR_FORMAT, "/axis");
    damaged("axis.h5", "axis", 700, 99.0, 0, p);
    expect_refused(p, PID_ERR_FORMAT, "not uniform");
    /* a row whose phases were all cleared */
    damaged("empty.h5", "multi_hot", 0, 0, 0, p);
    hid_t f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, "multi_hot", H5P_DEFAULT);
    unsigned char zero[3 * 40] = {0};
    assert_true(H5Dwrite(d, H5T_NATIVE_UCHAR, H5S_ALL, H5S_ALL, H5P_DEFAULT, zero) >= 0);
    H5Dclose(d);
    H5Fclose(f);
    expect_refused(p, PID_ERR_FORMAT, "no phase present");
}

int main(void)
{
    pid_h5_quiet();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_matches_generator),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
