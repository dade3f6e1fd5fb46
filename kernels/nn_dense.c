/* Dense (fully connected) layer, CPU reference: y = x W^T + b and its
 * backward, with OpenBLAS sgemm for the products; dispatches to the CUDA twin
 * (nn_dense.cu) when the backend is CUDA. */
#include "kernels/nn.h"

#include <cblas.h>
#include <string.h>

#ifndef PHASEID_HAVE_CUDA
pid_status k_nn_dense_forward_cuda(pid_backend *be, const float *x, const float *w, const float *b,
                                   float *y, int n, int in, int out, pid_error *err)
{
    return pid_fail(err, PID_ERR_UNSUPPORTED, "nn dense: this phaseid was built without CUDA");
}
pid_status k_nn_dense_backward_cuda(pid_backend *be, const float *x, const float *w,
                                    const float *dy, float *dx, float *dw, float *db, int n, int in,
                                    int out, pid_error *err)
{
    return pid_fail(err, PID_ERR_UNSUPPORTED, "nn dense: this phaseid was built without CUDA");
}
#endif

static pid_status dense_check(const pid_backend *be, int n, int in, int out, pid_error *err)
{
    if (!be) return pid_fail(err, PID_ERR_ARG, "nn dense: NULL backend");
    if (n <= 0 || in <= 0 || out <= 0)
        return pid_fail(err, PID_ERR_ARG, "nn dense: sizes must be positive (n=%d in=%d out=%d)", n,
                        in, out);
    return PID_OK;
}

pid_status k_nn_dense_forward(pid_backend *be, const float *x, const float *w, const float *b,
                              float *y, int n, int in, int out, pid_error *err)
{
    pid_status st = dense_check(be, n, in, out, err);
    if (st) return st;
    if (!x || !w || !y) return pid_fail(err, PID_ERR_ARG, "nn dense forward: NULL x, w or y");
    if (pid_backend_kind(be) == PID_DEVICE_CUDA)
        return k_nn_dense_forward_cuda(be, x, w, b, y, n, in, out, err);
    /* y starts as the broadcast bias, then y += x W^T. */
    for (int i = 0; i < n; i++) {
        if (b)
            memcpy(y + (size_t)i * out, b, sizeof(float) * (size_t)out);
        else
            memset(y + (size_t)i * out, 0, sizeof(float) * (size_t)out);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f, x, in, w, in, 1.0f, y,
                out);
    return PID_OK;
}

pid_status k_nn_dense_backward(pid_backend *be, const float *x, const float *w, const float *dy,
                               float *dx, float *dw, float *db, int n, int in, int out,
                               pid_error *err)
{
    pid_status st = dense_check(be, n, in, out, err);
    if (st) return st;
    if (!dy) return pid_fail(err, PID_ERR_ARG, "nn dense backward: NULL dy");
    if ((dx && !w) || (dw && !x))
        return pid_fail(err, PID_ERR_ARG, "nn dense backward: NULL w (for dx) or x (for dw)");
    if (pid_backend_kind(be) == PID_DEVICE_CUDA)
        return k_nn_dense_backward_cuda(be, x, w, dy, dx, dw, db, n, in, out, err);
    if (dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, in, out, 1.0f, dy, out, w, in,
                    0.0f, dx, in);
    if (dw)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, n, 1.0f, dy, out, x, in, 0.0f,
                    dw, in);
    if (db) {
        for (int o = 0; o < out; o++) {
            double s = 0.0;
            for (int i = 0; i < n; i++)
                s += dy[(size_t)i * out + o];
            db[o] = (float)s;
        }
    }
    return PID_OK;
}
