/* Unit tests for core/: status messages, the Philox generator (against the
 * Random123 known-answer vectors), distributions, tensors, HDF5 round trips,
 * and backend selection. */
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

#include "core/h5.h"
#include "core/rng.h"
#include "core/status.h"
#include "core/tensor.h"
#include "kernels/backend.h"

static void test_status_messages(void **state)
{
    pid_error err;
    pid_error_clear(&err);
    assert_int_equal(pid_fail(&err, PID_ERR_PARSE, "line %d: bad token", 7), PID_ERR_PARSE);
    assert_int_equal(err.code, PID_ERR_PARSE);
    assert_string_equal(err.msg, "line 7: bad token");
    pid_error_prefix(&err, "%s", "x.cif");
    assert_string_equal(err.msg, "x.cif: line 7: bad token");
    assert_string_equal(pid_status_str(PID_ERR_NOMEM), "out of memory");
    assert_string_equal(pid_status_str((pid_status)999), "unknown status");
    /* NULL err is allowed and still returns the code. */
    assert_int_equal(pid_fail(NULL, PID_ERR_IO, "x"), PID_ERR_IO);
    /* Very long prefixes are truncated, never overflow. */
    char longp[2000];
    memset(longp, 'a', sizeof longp - 1);
    longp[sizeof longp - 1] = 0;
    pid_error_prefix(&err, "%s", longp);
    assert_true(strlen(err.msg) < PID_ERROR_MSG_LEN);
}

/* Known-answer vectors for philox4x32-10 from Random123's kat_vectors
 * (Salmon et al., SC'11), an implementation independent of ours. */
static void test_philox_kat(void **state)
{
    struct {
        uint32_t ctr[4], key[2], out[4];
    } kat[] = {
        {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
        {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
         {0xffffffff, 0xffffffff},
         {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
        {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
         {0xa4093822, 0x299f31d0},
         {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
    };
    for (size_t i = 0; i < sizeof kat / sizeof kat[0]; i++) {
        pid_u32x4 c = {{kat[i].ctr[0], kat[i].ctr[1], kat[i].ctr[2], kat[i].ctr[3]}};
        pid_u32x4 r = pid_philox4x32_10(c, kat[i].key[0], kat[i].key[1]);
        for (int j = 0; j < 4; j++)
            assert_int_equal(r.v[j], kat[i].out[j]);
    }
}

static void test_rng_streams(void **state)
{
    pid_rng a, b, c;
    pid_rng_init(&a, 42, 7);
    pid_rng_init(&b, 42, 7);
    pid_rng_init(&c, 42, 8);
    int same_c = 0;
    for (int i = 0; i < 1000; i++) {
        uint32_t x = pid_rng_u32(&a), y = pid_rng_u32(&b), z = pid_rng_u32(&c);
        assert_int_equal(x, y);
        same_c += x == z;
    }
    assert_true(same_c < 3);
    /* The sequential view draws exactly the words of pid_rng_block. */
    pid_rng_init(&a, 99, 3);
    pid_u32x4 blk = pid_rng_block(99, 3, 0);
    for (int j = 0; j < 4; j++)
        assert_int_equal(pid_rng_u32(&a), blk.v[j]);
    assert_true(pid_u01f(0) > 0.0f && pid_u01f(0xffffffffu) <= 1.0f);
    assert_true(pid_u01d(0) > 0.0 && pid_u01d(0xffffffffu) <= 1.0);
}

/* Moments over n draws; bounds are 6 standard errors, so a correct generator
 * fails with probability ~1e-9. */
static void test_rng_distributions(void **state)
{
    pid_rng r;
    pid_rng_init(&r, 1234, 0);
    const int n = 200000;
    double s = 0, s2 = 0;
    for (int i = 0; i < n; i++) {
        double x = pid_rng_uniform(&r);
        assert_true(x > 0.0 && x <= 1.0);
        s += x;
    }
    assert_true(fabs(s / n - 0.5) < 6 * sqrt(1.0 / 12 / n));
    s = s2 = 0;
    for (int i = 0; i < n; i++) {
        double x = pid_rng_normal(&r);
        s += x;
        s2 += x * x;
    }
    double mean = s / n, var = s2 / n - mean * mean;
    assert_true(fabs(mean) < 6 / sqrt((double)n));
    assert_true(fabs(var - 1.0) < 6 * sqrt(2.0 / n));
    const double lambdas[] = {0.5, 4.0, 25.0, 300.0};
    for (int k = 0; k < 4; k++) {
        double lam = lambdas[k];
        s = s2 = 0;
        for (int i = 0; i < n; i++) {
            double x = pid_rng_poisson(&r, lam);
            assert_true(x >= 0 && x == floor(x));
            s += x;
            s2 += x * x;
        }
        mean = s / n;
        var = s2 / n - mean * mean;
        assert_true(fabs(mean - lam) < 6 * sqrt(lam / n));
        assert_true(fabs(var - lam) < 0.03 * lam + 6 * lam * sqrt(2.0 / n));
    }
    assert_true(pid_rng_poisson(&r, 0.0) == 0.0);
    assert_true(pid_rng_poisson(&r, NAN) == 0.0);
    for (int i = 0; i < 1000; i++)
        assert_true(pid_rng_below(&r, 10) < 10);
    for (int i = 0; i < 1000; i++) {
        double x = pid_rng_range(&r, -2.0, 3.0);
        assert_true(x >= -2.0 && x <= 3.0);
    }
    assert_true(pid_rng_mix(1, 2) != pid_rng_mix(2, 1));
}

static void test_tensor(void **state)
{
    pid_error err;
    pid_tensor *a = NULL, *b = NULL, *d = NULL;
    int64_t shape[2] = {3, 5};
    assert_int_equal(pid_tensor_create(&a, PID_F32, PID_MEM_HOST, 2, shape, &err), PID_OK);
    assert_int_equal(pid_tensor_numel(a), 15);
    assert_int_equal(pid_tensor_bytes(a), 60);
    float *x = a->data;
    for (int i = 0; i < 15; i++) {
        assert_true(x[i] == 0.0f); /* zero-filled */
        x[i] = (float)i;
    }
    assert_int_equal(pid_tensor_create(&b, PID_F32, PID_MEM_HOST, 2, shape, &err), PID_OK);
    assert_int_equal(pid_tensor_copy(b, a, &err), PID_OK);
    assert_memory_equal(a->data, b->data, 60);
    pid_tensor_destroy(b);
    b = NULL;
    int64_t other[1] = {4};
    assert_int_equal(pid_tensor_create(&b, PID_F32, PID_MEM_HOST, 1, other, &err), PID_OK);
    assert_int_equal(pid_tensor_copy(b, a, &err), PID_ERR_ARG);
    int64_t bad[1] = {-1};
    assert_int_equal(pid_tensor_create(&d, PID_F32, PID_MEM_HOST, 1, bad, &err), PID_ERR_ARG);
    assert_null(d);
    assert_int_equal(pid_tensor_create(&d, PID_F32, PID_MEM_HOST, 9, shape, &err), PID_ERR_ARG);
    if (pid_backend_cuda_device_count() == 0) {
        /* Without a device, device tensors are refused with a reason. */
        assert_int_not_equal(pid_tensor_create(&d, PID_F32, PID_MEM_DEVICE, 2, shape, &err),
                             PID_OK);
        assert_null(d);
        assert_true(strlen(err.msg) > 0);
    }
    assert_string_equal(pid_dtype_name(PID_U16), "UINT16");
    pid_tensor_destroy(a);
    pid_tensor_destroy(b);
    pid_tensor_destroy(NULL);
}

static void test_h5_roundtrip(void **state)
{
    pid_error err;
    char path[] = "/tmp/pid_test_h5_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    hid_t f, dset;
    assert_int_equal(pid_h5_create(path, &f, &err), PID_OK);
    assert_int_equal(pid_h5_create_2d(f, "patterns", H5T_NATIVE_FLOAT, 10, 7, 1, &dset, &err),
                     PID_OK);
    float rows[10 * 7];
    for (int i = 0; i < 70; i++)
        rows[i] = (float)i * 0.5f;
    assert_int_equal(pid_h5_write_rows(dset, H5T_NATIVE_FLOAT, 0, 4, 7, rows, &err), PID_OK);
    assert_int_equal(pid_h5_write_rows(dset, H5T_NATIVE_FLOAT, 4, 6, 7, rows + 28, &err), PID_OK);
    H5Dclose(dset);
    assert_int_equal(pid_h5_attr_str(f, "modality", "xrd", &err), PID_OK);
    assert_int_equal(pid_h5_attr_f64(f, "wavelength_angstrom", 1.540562, &err), PID_OK);
    assert_int_equal(pid_h5_attr_i64(f, "seed", -12345678901LL, &err), PID_OK);
    const char *names[] = {"MnO_225", "TiO2_136"};
    assert_int_equal(pid_h5_write_strings(f, "phases", 2, names, &err), PID_OK);
    H5Fclose(f);

    assert_int_equal(pid_h5_open_ro(path, &f, &err), PID_OK);
    float *data;
    int ndim;
    int64_t dims[4];
    assert_int_equal(pid_h5_read_f32(f, "patterns", &data, &ndim, dims, &err), PID_OK);
    assert_int_equal(ndim, 2);
    assert_int_equal(dims[0], 10);
    assert_int_equal(dims[1], 7);
    assert_memory_equal(data, rows, sizeof rows);
    free(data);
    char *s;
    assert_int_equal(pid_h5_read_attr_str(f, "modality", &s, &err), PID_OK);
    assert_string_equal(s, "xrd");
    free(s);
    double w;
    assert_int_equal(pid_h5_read_attr_f64(f, "wavelength_angstrom", &w, &err), PID_OK);
    assert_true(w == 1.540562);
    int64_t seed;
    assert_int_equal(pid_h5_read_attr_i64(f, "seed", &seed, &err), PID_OK);
    assert_true(seed == -12345678901LL);
    assert_int_equal(pid_h5_read_attr_f64(f, "missing", &w, &err), PID_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "missing"));
    assert_int_equal(pid_h5_read_f32(f, "nope", &data, &ndim, dims, &err), PID_ERR_FORMAT);
    assert_null(data);
    H5Fclose(f);
    unlink(path);

    /* Not an HDF5 file: a clear error, not a crash. */
    FILE *junk = fopen(path, "w");
    fputs("this is not hdf5\n", junk);
    fclose(junk);
    assert_int_equal(pid_h5_open_ro(path, &f, &err), PID_ERR_IO);
    assert_non_null(strstr(err.msg, path));
    unlink(path);
}

static void test_backend_selection(void **state)
{
    pid_error err;
    pid_backend *be = NULL;
    assert_int_equal(pid_backend_create(&be, "cpu", 1, &err), PID_OK);
    assert_int_equal(pid_backend_kind(be), PID_DEVICE_CPU);
    assert_string_equal(pid_backend_name(be), "cpu");
    assert_int_equal(pid_backend_threads(be), 1);
    void *p;
    assert_int_equal(pid_backend_alloc(be, &p, 64, &err), PID_OK);
    char src[64], dst[64];
    memset(src, 7, sizeof src);
    assert_int_equal(pid_backend_upload(be, p, src, 64, &err), PID_OK);
    assert_int_equal(pid_backend_download(be, dst, p, 64, &err), PID_OK);
    assert_memory_equal(src, dst, 64);
    pid_backend_free(be, p);
    pid_backend_destroy(be);

    assert_int_equal(pid_backend_create(&be, "tpu", 0, &err), PID_ERR_ARG);
    assert_null(be);
    assert_non_null(strstr(err.msg, "tpu"));

    assert_int_equal(pid_backend_create(&be, "auto", 0, &err), PID_OK);
    if (pid_backend_cuda_device_count() == 0) {
        /* auto falls back to the CPU; asking for CUDA explains why it can't. */
        assert_int_equal(pid_backend_kind(be), PID_DEVICE_CPU);
        pid_backend *cu = NULL;
        assert_int_not_equal(pid_backend_create(&cu, "cuda", 0, &err), PID_OK);
        assert_null(cu);
        assert_non_null(strstr(err.msg, "cuda"));
    } else {
        assert_int_equal(pid_backend_kind(be), PID_DEVICE_CUDA);
    }
    pid_backend_destroy(be);
    pid_backend_destroy(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_messages),
        cmocka_unit_test(test_philox_kat),
        cmocka_unit_test(test_rng_streams),
        cmocka_unit_test(test_rng_distributions),
        cmocka_unit_test(test_tensor),
        cmocka_unit_test(test_h5_roundtrip),
        cmocka_unit_test(test_backend_selection),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
