/* HDF5 helpers: every library call is checked through PID_H5_CHECK. */
#include "core/h5.h"

#include <stdlib.h>
#include <string.h>

void pid_h5_quiet(void)
{
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

pid_status pid_h5_create(const char *path, hid_t *fid, pid_error *err)
{
    pid_h5_quiet();
    *fid = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (*fid < 0) return pid_fail(err, PID_ERR_IO, "%s: cannot create HDF5 file", path);
    return PID_OK;
}

pid_status pid_h5_open_ro(const char *path, hid_t *fid, pid_error *err)
{
    pid_h5_quiet();
    *fid = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (*fid < 0) return pid_fail(err, PID_ERR_IO, "%s: cannot open as HDF5", path);
    return PID_OK;
}

pid_status pid_h5_create_2d(hid_t loc, const char *name, hid_t type, int64_t rows, int64_t cols,
                            int deflate_level, hid_t *dset, pid_error *err)
{
    pid_status st = PID_OK;
    hid_t space = H5I_INVALID_HID, dcpl = H5I_INVALID_HID;
    *dset = H5I_INVALID_HID;
    if (rows <= 0 || cols <= 0)
        return pid_fail(err, PID_ERR_ARG, "dataset %s: bad shape %lld x %lld", name,
                        (long long)rows, (long long)cols);
    hsize_t dims[2] = {(hsize_t)rows, (hsize_t)cols};
    /* Chunks of whole rows, about 1 MiB, so row-block writes touch few chunks. */
    size_t esz = H5Tget_size(type);
    hsize_t crow = (hsize_t)(1048576 / (esz * (size_t)cols));
    if (crow < 1) crow = 1;
    if (crow > (hsize_t)rows) crow = (hsize_t)rows;
    hsize_t chunk[2] = {crow, (hsize_t)cols};
    PID_H5_CHECK(space = H5Screate_simple(2, dims, NULL));
    PID_H5_CHECK(dcpl = H5Pcreate(H5P_DATASET_CREATE));
    PID_H5_CHECK(H5Pset_chunk(dcpl, 2, chunk));
    if (deflate_level > 0) {
        PID_H5_CHECK(H5Pset_shuffle(dcpl));
        PID_H5_CHECK(H5Pset_deflate(dcpl, deflate_level > 9 ? 9 : (unsigned)deflate_level));
    }
    PID_H5_CHECK(*dset = H5Dcreate2(loc, name, type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT));
fail:
    if (dcpl >= 0) H5Pclose(dcpl);
    if (space >= 0) H5Sclose(space);
    return st;
}

pid_status pid_h5_write_rows(hid_t dset, hid_t memtype, int64_t row0, int64_t nrows, int64_t cols,
                             const void *buf, pid_error *err)
{
    pid_status st = PID_OK;
    hid_t fspace = H5I_INVALID_HID, mspace = H5I_INVALID_HID;
    hsize_t start[2] = {(hsize_t)row0, 0}, count[2] = {(hsize_t)nrows, (hsize_t)cols};
    PID_H5_CHECK(fspace = H5Dget_space(dset));
    PID_H5_CHECK(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL));
    PID_H5_CHECK(mspace = H5Screate_simple(2, count, NULL));
    PID_H5_CHECK(H5Dwrite(dset, memtype, mspace, fspace, H5P_DEFAULT, buf));
fail:
    if (mspace >= 0) H5Sclose(mspace);
    if (fspace >= 0) H5Sclose(fspace);
    return st;
}

/* A contiguous dataset of rank 1 or 2 written whole from buf. */
static pid_status write_whole(hid_t loc, const char *name, hid_t type, int rank, int64_t rows,
                              int64_t cols, const void *buf, pid_error *err)
{
    pid_status st = PID_OK;
    hid_t space = H5I_INVALID_HID, dset = H5I_INVALID_HID;
    hsize_t dims[2] = {(hsize_t)rows, (hsize_t)cols};
    PID_H5_CHECK(space = H5Screate_simple(rank, dims, NULL));
    PID_H5_CHECK(dset = H5Dcreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    if (rows > 0 && cols > 0)
        PID_H5_CHECK(H5Dwrite(dset, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf));
fail:
    if (dset >= 0) H5Dclose(dset);
    if (space >= 0) H5Sclose(space);
    return st;
}

pid_status pid_h5_write_1d(hid_t loc, const char *name, hid_t type, int64_t n, const void *buf,
                           pid_error *err)
{
    return write_whole(loc, name, type, 1, n, 1, buf, err);
}

pid_status pid_h5_write_2d(hid_t loc, const char *name, hid_t type, int64_t rows, int64_t cols,
                           const void *buf, pid_error *err)
{
    return write_whole(loc, name, type, 2, rows, cols, buf, err);
}

pid_status pid_h5_write_strings(hid_t loc, const char *name, int64_t n, const char *const *s,
                                pid_error *err)
{
    pid_status st = PID_OK;
    hid_t space = H5I_INVALID_HID, dset = H5I_INVALID_HID, type = H5I_INVALID_HID;
    hsize_t dims[1] = {(hsize_t)n};
    PID_H5_CHECK(type = H5Tcopy(H5T_C_S1));
    PID_H5_CHECK(H5Tset_size(type, H5T_VARIABLE));
    PID_H5_CHECK(H5Tset_cset(type, H5T_CSET_UTF8));
    PID_H5_CHECK(space = H5Screate_simple(1, dims, NULL));
    PID_H5_CHECK(dset = H5Dcreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    if (n > 0) PID_H5_CHECK(H5Dwrite(dset, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, s));
fail:
    if (dset >= 0) H5Dclose(dset);
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    return st;
}

pid_status pid_h5_read_as(hid_t loc, const char *name, hid_t memtype, void **data, int *ndim,
                          int64_t dims[4], pid_error *err)
{
    pid_status st = PID_OK;
    hid_t dset = H5I_INVALID_HID, space = H5I_INVALID_HID;
    *data = NULL;
    const size_t esize = H5Tget_size(memtype);
    if (esize == 0) return pid_fail(err, PID_ERR_ARG, "dataset '%s': bad memory type", name);
    pid_h5_quiet();
    dset = H5Dopen2(loc, name, H5P_DEFAULT);
    if (dset < 0) return pid_fail(err, PID_ERR_FORMAT, "no dataset '%s'", name);
    PID_H5_CHECK(space = H5Dget_space(dset));
    int nd = H5Sget_simple_extent_ndims(space);
    if (nd < 0 || nd > 4) {
        st = pid_fail(err, PID_ERR_FORMAT, "dataset '%s': rank %d not supported", name, nd);
        goto fail;
    }
    hsize_t hd[4] = {0};
    PID_H5_CHECK(H5Sget_simple_extent_dims(space, hd, NULL));
    size_t n = 1;
    for (int i = 0; i < nd; i++) {
        dims[i] = (int64_t)hd[i];
        n *= hd[i];
    }
    *ndim = nd;
    *data = malloc(n ? n * esize : 1);
    if (!*data) {
        st = pid_fail(err, PID_ERR_NOMEM, "dataset '%s': out of memory", name);
        goto fail;
    }
    if (n) PID_H5_CHECK(H5Dread(dset, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, *data));
fail:
    if (st && *data) {
        free(*data);
        *data = NULL;
    }
    if (space >= 0) H5Sclose(space);
    if (dset >= 0) H5Dclose(dset);
    return st;
}

pid_status pid_h5_read_f32(hid_t loc, const char *name, float **data, int *ndim, int64_t dims[4],
                           pid_error *err)
{
    void *v = NULL;
    pid_status st = pid_h5_read_as(loc, name, H5T_NATIVE_FLOAT, &v, ndim, dims, err);
    *data = v;
    return st;
}

static pid_status attr_write(hid_t loc, const char *name, hid_t type, hid_t space, const void *buf,
                             pid_error *err)
{
    pid_status st = PID_OK;
    hid_t a = H5I_INVALID_HID;
    if (H5Aexists(loc, name) > 0) H5Adelete(loc, name);
    PID_H5_CHECK(a = H5Acreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT));
    PID_H5_CHECK(H5Awrite(a, type, buf));
fail:
    if (a >= 0) H5Aclose(a);
    return st;
}

pid_status pid_h5_attr_str(hid_t loc, const char *name, const char *value, pid_error *err)
{
    pid_status st = PID_OK;
    hid_t type = H5I_INVALID_HID, space = H5I_INVALID_HID;
    PID_H5_CHECK(type = H5Tcopy(H5T_C_S1));
    PID_H5_CHECK(H5Tset_size(type, H5T_VARIABLE));
    PID_H5_CHECK(H5Tset_cset(type, H5T_CSET_UTF8));
    PID_H5_CHECK(space = H5Screate(H5S_SCALAR));
    st = attr_write(loc, name, type, space, &value, err);
fail:
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    return st;
}

pid_status pid_h5_attr_f64(hid_t loc, const char *name, double value, pid_error *err)
{
    return pid_h5_attr_f64_array(loc, name, 1, &value, err);
}

pid_status pid_h5_attr_i64(hid_t loc, const char *name, int64_t value, pid_error *err)
{
    pid_status st = PID_OK;
    hid_t space = H5I_INVALID_HID;
    PID_H5_CHECK(space = H5Screate(H5S_SCALAR));
    st = attr_write(loc, name, H5T_NATIVE_INT64, space, &value, err);
fail:
    if (space >= 0) H5Sclose(space);
    return st;
}

pid_status pid_h5_attr_f64_array(hid_t loc, const char *name, int n, const double *v,
                                 pid_error *err)
{
    pid_status st = PID_OK;
    hid_t space = H5I_INVALID_HID;
    hsize_t d[1] = {(hsize_t)n};
    PID_H5_CHECK(space = n == 1 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, d, NULL));
    st = attr_write(loc, name, H5T_NATIVE_DOUBLE, space, v, err);
fail:
    if (space >= 0) H5Sclose(space);
    return st;
}

pid_status pid_h5_read_attr_str(hid_t loc, const char *name, char **value, pid_error *err)
{
    pid_status st = PID_OK;
    hid_t a = H5I_INVALID_HID, type = H5I_INVALID_HID, mtype = H5I_INVALID_HID;
    *value = NULL;
    pid_h5_quiet();
    a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return pid_fail(err, PID_ERR_FORMAT, "missing attribute '%s'", name);
    PID_H5_CHECK(type = H5Aget_type(a));
    if (H5Tget_class(type) != H5T_STRING) {
        st = pid_fail(err, PID_ERR_FORMAT, "attribute '%s' is not a string", name);
        goto fail;
    }
    if (H5Tis_variable_str(type) > 0) {
        char *s = NULL;
        /* Memory type must carry the stored character set (UTF-8 vs ASCII). */
        PID_H5_CHECK(mtype = H5Tcopy(H5T_C_S1));
        PID_H5_CHECK(H5Tset_size(mtype, H5T_VARIABLE));
        PID_H5_CHECK(H5Tset_cset(mtype, H5Tget_cset(type)));
        PID_H5_CHECK(H5Aread(a, mtype, &s));
        *value = strdup(s ? s : "");
        H5free_memory(s);
    } else {
        size_t n = H5Tget_size(type);
        *value = calloc(n + 1, 1);
        if (*value) PID_H5_CHECK(H5Aread(a, type, *value));
    }
    if (!*value) st = pid_fail(err, PID_ERR_NOMEM, "attribute '%s': out of memory", name);
fail:
    if (mtype >= 0) H5Tclose(mtype);
    if (type >= 0) H5Tclose(type);
    if (a >= 0) H5Aclose(a);
    return st;
}

static pid_status attr_read(hid_t loc, const char *name, hid_t memtype, void *v, pid_error *err)
{
    pid_status st = PID_OK;
    hid_t a = H5I_INVALID_HID;
    pid_h5_quiet();
    a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return pid_fail(err, PID_ERR_FORMAT, "missing attribute '%s'", name);
    PID_H5_CHECK(H5Aread(a, memtype, v));
fail:
    if (a >= 0) H5Aclose(a);
    return st;
}

pid_status pid_h5_read_attr_f64(hid_t loc, const char *name, double *value, pid_error *err)
{
    return attr_read(loc, name, H5T_NATIVE_DOUBLE, value, err);
}

pid_status pid_h5_read_attr_i64(hid_t loc, const char *name, int64_t *value, pid_error *err)
{
    return attr_read(loc, name, H5T_NATIVE_INT64, value, err);
}

pid_status pid_h5_read_strings(hid_t loc, const char *name, char ***out, int64_t *n, pid_error *err)
{
    pid_status st = PID_OK;
    hid_t d = H5I_INVALID_HID, space = H5I_INVALID_HID, type = H5I_INVALID_HID,
          mtype = H5I_INVALID_HID;
    char **raw = NULL, **res = NULL;
    hssize_t np = 0;
    *out = NULL;
    *n = 0;
    if (H5Lexists(loc, name, H5P_DEFAULT) <= 0 || (d = H5Dopen2(loc, name, H5P_DEFAULT)) < 0)
        return pid_fail(err, PID_ERR_FORMAT, "missing dataset '%s'", name);
    PID_H5_CHECK(space = H5Dget_space(d));
    PID_H5_CHECK(type = H5Dget_type(d));
    if (H5Sget_simple_extent_ndims(space) != 1 || H5Tget_class(type) != H5T_STRING ||
        H5Tis_variable_str(type) <= 0) {
        st = pid_fail(err, PID_ERR_FORMAT, "dataset '%s' is not a 1-D string list", name);
        goto fail;
    }
    np = H5Sget_simple_extent_npoints(space);
    raw = calloc(np > 0 ? (size_t)np : 1, sizeof *raw);
    res = calloc(np > 0 ? (size_t)np : 1, sizeof *res);
    if (!raw || !res) {
        st = pid_fail(err, PID_ERR_NOMEM, "%s: out of memory", name);
        goto fail;
    }
    PID_H5_CHECK(mtype = H5Tcopy(H5T_C_S1));
    PID_H5_CHECK(H5Tset_size(mtype, H5T_VARIABLE));
    PID_H5_CHECK(H5Tset_cset(mtype, H5Tget_cset(type)));
    if (np > 0) {
        PID_H5_CHECK(H5Dread(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, raw));
        for (hssize_t i = 0; i < np; i++) {
            res[i] = strdup(raw[i] ? raw[i] : "");
            if (!res[i]) st = pid_fail(err, PID_ERR_NOMEM, "%s: out of memory", name);
        }
        H5Dvlen_reclaim(mtype, space, H5P_DEFAULT, raw);
    }
fail:
    free(raw);
    if (mtype >= 0) H5Tclose(mtype);
    if (type >= 0) H5Tclose(type);
    if (space >= 0) H5Sclose(space);
    if (d >= 0) H5Dclose(d);
    if (st) {
        for (hssize_t i = 0; res && i < np; i++)
            free(res[i]);
        free(res);
        return st;
    }
    *out = res;
    *n = (int64_t)np;
    return PID_OK;
}
