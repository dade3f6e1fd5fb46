/* Thin HDF5 helpers: checked calls that record the call, file and line; row-
 * block writes into 2-D datasets (so N x P datasets larger than memory can be
 * written as they are generated); scalar and string attributes. */
#ifndef PID_H5_H
#define PID_H5_H

#include <hdf5.h>
#include <stdint.h>

#include "core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Evaluate an HDF5 call returning herr_t/hid_t; on a negative result record
 * "call at file:line" in err and jump to the enclosing function's `fail:`
 * label with `st` set to PID_ERR_HDF5. */
#define PID_H5_CHECK(expr)                                                                         \
    do {                                                                                           \
        if ((expr) < 0) {                                                                          \
            st = pid_fail(err, PID_ERR_HDF5, "HDF5 call failed: %s (%s:%d)", #expr, __FILE__,      \
                          __LINE__);                                                               \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)

/* Silence HDF5's automatic error stack printing (we report errors ourselves). */
void pid_h5_quiet(void);

/* Create (truncate) / open an HDF5 file. On failure *fid is H5I_INVALID_HID. */
pid_status pid_h5_create(const char *path, hid_t *fid, pid_error *err);
pid_status pid_h5_open_ro(const char *path, hid_t *fid, pid_error *err);

/* Create a chunked 2-D dataset of `type` (H5T_NATIVE_FLOAT, H5T_NATIVE_UINT8,
 * ...) with `rows` x `cols`, gzip-compressed (with byte shuffle) at
 * deflate_level 1..9, uncompressed at 0; caller closes *dset. */
pid_status pid_h5_create_2d(hid_t loc, const char *name, hid_t type, int64_t rows, int64_t cols,
                            int deflate_level, hid_t *dset, pid_error *err);
/* Write rows [row0, row0+nrows) of a 2-D dataset from a contiguous buffer. */
pid_status pid_h5_write_rows(hid_t dset, hid_t memtype, int64_t row0, int64_t nrows, int64_t cols,
                             const void *buf, pid_error *err);
/* Write a whole 1-D dataset of `type` from buf. */
pid_status pid_h5_write_1d(hid_t loc, const char *name, hid_t type, int64_t n, const void *buf,
                           pid_error *err);
/* Write a whole contiguous 2-D dataset [rows, cols] of `type` from buf
 * (rows may be 0). */
pid_status pid_h5_write_2d(hid_t loc, const char *name, hid_t type, int64_t rows, int64_t cols,
                           const void *buf, pid_error *err);
/* Write a 1-D dataset of strings (variable length). */
pid_status pid_h5_write_strings(hid_t loc, const char *name, int64_t n, const char *const *s,
                                pid_error *err);

/* Read a dataset of rank <= 4 as elements of the native type memtype
 * (H5T_NATIVE_DOUBLE, H5T_NATIVE_INT32, ...; HDF5 converts). *data is
 * malloc'd (caller frees); dims filled up to 4, *ndim set. */
pid_status pid_h5_read_as(hid_t loc, const char *name, hid_t memtype, void **data, int *ndim,
                          int64_t dims[4], pid_error *err);
/* Read a dataset of any rank as float (converted by HDF5). *data is malloc'd
 * (caller frees); dims filled up to 4, *ndim set. */
pid_status pid_h5_read_f32(hid_t loc, const char *name, float **data, int *ndim, int64_t dims[4],
                           pid_error *err);

/* Read a 1-D dataset of variable-length strings (as written by
 * pid_h5_write_strings). On success *out is a malloc'd array of *n malloc'd
 * strings (caller frees each and the array); on failure *out is NULL and
 * err names the dataset (missing: PID_ERR_FORMAT "missing dataset '...'",
 * not a 1-D string list: PID_ERR_FORMAT). */
pid_status pid_h5_read_strings(hid_t loc, const char *name, char ***out, int64_t *n,
                               pid_error *err);

/* Attributes on a file, group or dataset. */
pid_status pid_h5_attr_str(hid_t loc, const char *name, const char *value, pid_error *err);
pid_status pid_h5_attr_f64(hid_t loc, const char *name, double value, pid_error *err);
pid_status pid_h5_attr_i64(hid_t loc, const char *name, int64_t value, pid_error *err);
pid_status pid_h5_attr_f64_array(hid_t loc, const char *name, int n, const double *v,
                                 pid_error *err);
/* Read attributes; a string is malloc'd into *value (caller frees). */
pid_status pid_h5_read_attr_str(hid_t loc, const char *name, char **value, pid_error *err);
pid_status pid_h5_read_attr_f64(hid_t loc, const char *name, double *value, pid_error *err);
pid_status pid_h5_read_attr_i64(hid_t loc, const char *name, int64_t *value, pid_error *err);

#ifdef __cplusplus
}
#endif
#endif
