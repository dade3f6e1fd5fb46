/* Dataset files for training (see dataset.h): the HDF5 layout of
 * synth/xrd_dataset.h read into memory and checked value by value. */
#include "models/dataset.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/h5.h"

void ds_destroy(ds_xrd *d)
{
    if (!d) return;
    free(d->patterns);
    free(d->labels);
    free(d->multi_hot);
    free(d->fractions);
    for (int i = 0; d->names && i < d->k; i++)
        free(d->names[i]);
    free(d->names);
    free(d->library);
    free(d->path);
    free(d);
}

/* Read a numeric dataset of rank `rank` as float with the expected leading
 * sizes (-1: any); dims out. */
static pid_status read_array(hid_t fid, const char *path, const char *name, int rank,
                             const int64_t want[2], float **out, int64_t dims[4], pid_error *err)
{
    int nd = 0;
    if (H5Lexists(fid, name, H5P_DEFAULT) <= 0)
        return pid_fail(err, PID_ERR_FORMAT, "%s: missing dataset /%s (not a phaseid dataset?)",
                        path, name);
    pid_status st = pid_h5_read_f32(fid, name, out, &nd, dims, err);
    if (st) {
        char why[PID_ERROR_MSG_LEN];
        snprintf(why, sizeof why, "%s", err->msg);
        return pid_fail(err, st, "%s: /%s: %s", path, name, why);
    }
    int ok = nd == rank;
    for (int i = 0; ok && i < rank; i++)
        if (want[i] >= 0 && dims[i] != want[i]) ok = 0;
    if (!ok) {
        free(*out);
        *out = NULL;
        return pid_fail(err, PID_ERR_FORMAT, "%s: /%s has the wrong shape (rank %d, %lld x %lld)",
                        path, name, nd, (long long)dims[0], nd > 1 ? (long long)dims[1] : 1LL);
    }
    return PID_OK;
}

pid_status ds_load(const char *path, ds_xrd **out, pid_error *err)
{
    *out = NULL;
    hid_t fid = H5I_INVALID_HID;
    pid_status st = pid_h5_open_ro(path, &fid, err);
    if (st) return st;
    ds_xrd *d = calloc(1, sizeof *d);
    float *lab = NULL, *axis = NULL;
    char *src = NULL, *kind = NULL;
    int64_t dims[4] = {0};
    if (!d || !(d->path = strdup(path))) {
        st = pid_fail(err, PID_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    /* shapes first from the metadata, so a huge file is refused before reading */
    {
        hid_t ds = H5Dopen2(fid, "patterns", H5P_DEFAULT);
        if (ds < 0) {
            st = pid_fail(err, PID_ERR_FORMAT,
                          "%s: missing dataset /patterns (not a phaseid "
                          "dataset?)",
                          path);
            goto done;
        }
        hid_t sp = H5Dget_space(ds);
        hsize_t hd[2] = {0, 0};
        int nd = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
        if (nd == 2) H5Sget_simple_extent_dims(sp, hd, NULL);
        if (sp >= 0) H5Sclose(sp);
        H5Dclose(ds);
        if (nd != 2 || hd[0] < 1 || hd[1] < 2 || hd[1] > K_XRD_MAX_POINTS) {
            st = pid_fail(err, PID_ERR_FORMAT, "%s: /patterns must be N x P (N >= 1, 2 <= P <= %d)",
                          path, K_XRD_MAX_POINTS);
            goto done;
        }
        if ((int64_t)hd[0] * (int64_t)hd[1] * 4 > DS_MAX_BYTES) {
            st = pid_fail(err, PID_ERR_UNSUPPORTED,
                          "%s: %llu x %llu patterns need more than %lld GiB in memory", path,
                          (unsigned long long)hd[0], (unsigned long long)hd[1],
                          (long long)(DS_MAX_BYTES >> 30));
            goto done;
        }
    }
    {
        int64_t any[2] = {-1, -1};
        if ((st = read_array(fid, path, "patterns", 2, any, &d->patterns, dims, err))) goto done;
        d->n = dims[0];
        d->p = (int)dims[1];
    }
    int64_t nk = 0;
    if ((st = pid_h5_read_strings(fid, "phases", &d->names, &nk, err))) {
        char why[PID_ERROR_MSG_LEN];
        snprintf(why, sizeof why, "%s", err->msg);
        st = pid_fail(err, st, "%s: %s", path, why);
        goto done;
    }
    d->k = (int)nk;
    if (nk < 1) {
        st = pid_fail(err, PID_ERR_FORMAT, "%s: /phases is empty", path);
        goto done;
    }
    {
        int64_t wl[2] = {d->n, -1}, wm[2] = {d->n, nk}, wa[2] = {d->p, -1};
        if ((st = read_array(fid, path, "labels", 1, wl, &lab, dims, err)) ||
            (st = read_array(fid, path, "multi_hot", 2, wm, &d->multi_hot, dims, err)) ||
            (st = read_array(fid, path, "fractions", 2, wm, &d->fractions, dims, err)) ||
            (st = read_array(fid, path, "axis", 1, wa, &axis, dims, err)))
            goto done;
    }
    d->labels = malloc(sizeof(int32_t) * (size_t)d->n);
    if (!d->labels) {
        st = pid_fail(err, PID_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    for (int64_t i = 0; i < d->n; i++) {
        float l = lab[i];
        if (!(l >= -1.0f && l < (float)nk) || l != floorf(l)) {
            st = pid_fail(err, PID_ERR_FORMAT, "%s: /labels[%lld] = %g is not a phase index", path,
                          (long long)i, (double)l);
            goto done;
        }
        d->labels[i] = (int32_t)l;
        int any = 0;
        for (int c = 0; c < d->k; c++) {
            float m = d->multi_hot[i * nk + c], f = d->fractions[i * nk + c];
            if ((m != 0.0f && m != 1.0f) || !isfinite(f) || f < 0.0f) {
                st = pid_fail(err, PID_ERR_FORMAT, "%s: row %lld: bad multi_hot/fractions value",
                              path, (long long)i);
                goto done;
            }
            any |= m == 1.0f;
        }
        if (!any) {
            st = pid_fail(err, PID_ERR_FORMAT, "%s: row %lld has no phase present", path,
                          (long long)i);
            goto done;
        }
    }
    for (int64_t i = 0; i < d->n * d->p; i++)
        if (!isfinite(d->patterns[i])) {
            st = pid_fail(err, PID_ERR_FORMAT, "%s: /patterns row %lld has a non-finite value",
                          path, (long long)(i / d->p));
            goto done;
        }
    /* axis: 2-theta, uniform */
    if (pid_h5_read_attr_str(fid, "axis_kind", &kind, err) == PID_OK &&
        strcmp(kind, "two_theta_deg") != 0) {
        st = pid_fail(err, PID_ERR_UNSUPPORTED, "%s: axis '%s': training reads 2-theta datasets",
                      path, kind);
        goto done;
    }
    double step = ((double)axis[d->p - 1] - axis[0]) / (d->p - 1);
    if (!(step > 0.0) || !isfinite(step)) {
        st = pid_fail(err, PID_ERR_FORMAT, "%s: /axis is not increasing", path);
        goto done;
    }
    double a_step = step;
    pid_h5_read_attr_f64(fid, "axis_step", &a_step, err);
    for (int j = 0; j < d->p; j++)
        if (fabs(axis[j] - (axis[0] + j * a_step)) > 1e-3 * a_step + 1e-5 * fabs(axis[j])) {
            st = pid_fail(err, PID_ERR_FORMAT, "%s: /axis is not uniform at point %d", path, j);
            goto done;
        }
    d->grid.axis = K_XRD_AXIS_TWO_THETA;
    d->grid.n_points = d->p;
    d->grid.x0 = axis[0];
    d->grid.step = (float)a_step;
    /* radiation */
    if ((st = pid_h5_read_attr_str(fid, "source", &src, err))) {
        st = pid_fail(err, PID_ERR_FORMAT, "%s: missing attribute 'source' (the radiation)", path);
        goto done;
    }
    if ((st = pid_xrd_source_parse(src, &d->source, err))) {
        double w = 0.0;
        if (pid_h5_read_attr_f64(fid, "wavelength_a", &w, err) || !(w > 0.0)) {
            st = pid_fail(err, PID_ERR_FORMAT, "%s: source '%s' is not a radiation phaseid knows",
                          path, src);
            goto done;
        }
        char wb[32];
        snprintf(wb, sizeof wb, "%.6f", w);
        if ((st = pid_xrd_source_parse(wb, &d->source, err))) goto done;
    }
    int64_t mx = 1;
    if (pid_h5_read_attr_i64(fid, "mixtures_max", &mx, err) || mx < 1) mx = 1;
    for (int64_t i = 0; i < d->n; i++) {
        int cnt = 0;
        for (int c = 0; c < d->k; c++)
            cnt += d->multi_hot[i * nk + c] == 1.0f;
        if (cnt > mx) mx = cnt;
    }
    d->mixtures_max = (int)mx;
    if (pid_h5_read_attr_str(fid, "library_path", &d->library, err)) d->library = strdup("");
    if (!d->library) {
        st = pid_fail(err, PID_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    pid_error_clear(err);
    st = PID_OK;
done:
    free(lab);
    free(axis);
    free(src);
    free(kind);
    H5Fclose(fid);
    if (st) {
        ds_destroy(d);
        return st;
    }
    *out = d;
    return PID_OK;
}
