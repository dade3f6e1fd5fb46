/* 1-D and 2-D convolution with stride, zero padding and dilation, CPU
 * reference: per-sample im2col + OpenBLAS sgemm for the forward and for the
 * input/weight gradients (col2im scatters the input gradient back). */
#include "kernels/nn.h"

#include <cblas.h>
#include <string.h>

#ifndef PHASEID_HAVE_CUDA
pid_status k_nn_conv_forward_cuda(pid_backend *be, const k_nn_conv *s, const float *x,
                                  const float *w, const float *b, float *y, float *work,
                                  pid_error *err)
{
    return pid_fail(err, PID_ERR_UNSUPPORTED, "nn conv: this phaseid was built without CUDA");
}
pid_status k_nn_conv_backward_cuda(pid_backend *be, const k_nn_conv *s, const float *x,
                                   const float *w, const float *dy, float *dx, float *dw, float *db,
                                   float *work, pid_error *err)
{
    return pid_fail(err, PID_ERR_UNSUPPORTED, "nn conv: this phaseid was built without CUDA");
}
#endif

k_nn_conv k_nn_conv1d_shape(int n, int c_in, int w_in, int c_out, int k, int stride, int pad,
                            int dil)
{
    k_nn_conv s = {n, c_in, 1, w_in, c_out, 1, k, 1, stride, 0, pad, 1, dil};
    return s;
}

pid_status k_nn_conv_out(const k_nn_conv *s, int *h_out, int *w_out, pid_error *err)
{
    if (!s) return pid_fail(err, PID_ERR_ARG, "nn conv: NULL shape");
    if (s->n <= 0 || s->c_in <= 0 || s->h_in <= 0 || s->w_in <= 0 || s->c_out <= 0 || s->k_h <= 0 ||
        s->k_w <= 0)
        return pid_fail(err, PID_ERR_ARG,
                        "nn conv: sizes must be positive (n=%d c_in=%d h=%d w=%d c_out=%d k=%dx%d)",
                        s->n, s->c_in, s->h_in, s->w_in, s->c_out, s->k_h, s->k_w);
    if (s->stride_h <= 0 || s->stride_w <= 0 || s->dil_h <= 0 || s->dil_w <= 0 || s->pad_h < 0 ||
        s->pad_w < 0)
        return pid_fail(err, PID_ERR_ARG,
                        "nn conv: stride and dilation must be positive, padding non-negative");
    long eh = (long)s->h_in + 2L * s->pad_h - (long)s->dil_h * (s->k_h - 1) - 1;
    long ew = (long)s->w_in + 2L * s->pad_w - (long)s->dil_w * (s->k_w - 1) - 1;
    if (eh < 0 || ew < 0)
        return pid_fail(err, PID_ERR_ARG,
                        "nn conv: the dilated kernel is larger than the padded input");
    if (h_out) *h_out = (int)(eh / s->stride_h + 1);
    if (w_out) *w_out = (int)(ew / s->stride_w + 1);
    return PID_OK;
}

size_t k_nn_conv_work_floats(const k_nn_conv *s)
{
    int ho = 0, wo = 0;
    if (k_nn_conv_out(s, &ho, &wo, NULL)) return 0;
    return (size_t)s->c_in * s->k_h * s->k_w * (size_t)ho * wo;
}

/* col[(c k_h + i) k_w + j][oh w_out + ow] = x[c][oh sh - ph + i dh][ow sw - pw + j dw]. */
static void im2col(const k_nn_conv *s, int ho, int wo, const float *x, float *col)
{
    const size_t p = (size_t)ho * wo;
    for (int c = 0; c < s->c_in; c++)
        for (int i = 0; i < s->k_h; i++)
            for (int j = 0; j < s->k_w; j++) {
                float *row = col + ((size_t)(c * s->k_h + i) * s->k_w + j) * p;
                for (int oh = 0; oh < ho; oh++) {
                    int h = oh * s->stride_h - s->pad_h + i * s->dil_h;
                    for (int ow = 0; ow < wo; ow++) {
                        int w = ow * s->stride_w - s->pad_w + j * s->dil_w;
                        int in = h >= 0 && h < s->h_in && w >= 0 && w < s->w_in;
                        row[(size_t)oh * wo + ow] =
                            in ? x[((size_t)c * s->h_in + h) * s->w_in + w] : 0.0f;
                    }
                }
            }
}

/* The adjoint of im2col: dx (zeroed here) += every column entry at its source. */
static void col2im(const k_nn_conv *s, int ho, int wo, const float *col, float *dx)
{
    const size_t p = (size_t)ho * wo;
    memset(dx, 0, sizeof(float) * (size_t)s->c_in * s->h_in * s->w_in);
    for (int c = 0; c < s->c_in; c++)
        for (int i = 0; i < s->k_h; i++)
            for (int j = 0; j < s->k_w; j++) {
                const float *row = col + ((size_t)(c * s->k_h + i) * s->k_w + j) * p;
                for (int oh = 0; oh < ho; oh++) {
                    int h = oh * s->stride_h - s->pad_h + i * s->dil_h;
                    if (h < 0 || h >= s->h_in) continue;
                    for (int ow = 0; ow < wo; ow++) {
                        int w = ow * s->stride_w - s->pad_w + j * s->dil_w;
                        if (w < 0 || w >= s->w_in) continue;
                        dx[((size_t)c * s->h_in + h) * s->w_in + w] += row[(size_t)oh * wo + ow];
                    }
                }
            }
}

pid_status k_nn_conv_forward(pid_backend *be, const k_nn_conv *s, const float *x, const float *w,
                             const float *b, float *y, float *work, pid_error *err)
{
    int ho = 0, wo = 0;
    pid_status st = k_nn_conv_out(s, &ho, &wo, err);
    if (st) return st;
    if (!be || !x || !w || !y || !work)
        return pid_fail(err, PID_ERR_ARG, "nn conv forward: NULL backend, x, w, y or work");
    if (pid_backend_kind(be) == PID_DEVICE_CUDA)
        return k_nn_conv_forward_cuda(be, s, x, w, b, y, work, err);
    const int kk = s->c_in * s->k_h * s->k_w, p = ho * wo;
    const size_t xs = (size_t)s->c_in * s->h_in * s->w_in, ys = (size_t)s->c_out * p;
    for (int n = 0; n < s->n; n++) {
        float *yn = y + n * ys;
        im2col(s, ho, wo, x + n * xs, work);
        for (int o = 0; o < s->c_out; o++)
            for (int q = 0; q < p; q++)
                yn[(size_t)o * p + q] = b ? b[o] : 0.0f;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->c_out, p, kk, 1.0f, w, kk, work,
                    p, 1.0f, yn, p);
    }
    return PID_OK;
}

pid_status k_nn_conv_backward(pid_backend *be, const k_nn_conv *s, const float *x, const float *w,
                              const float *dy, float *dx, float *dw, float *db, float *work,
                              pid_error *err)
{
    int ho = 0, wo = 0;
    pid_status st = k_nn_conv_out(s, &ho, &wo, err);
    if (st) return st;
    if (!be || !dy || ((dx || dw) && !work))
        return pid_fail(err, PID_ERR_ARG, "nn conv backward: NULL backend, dy or work");
    if ((dx && !w) || (dw && !x))
        return pid_fail(err, PID_ERR_ARG, "nn conv backward: NULL w (for dx) or x (for dw)");
    if (pid_backend_kind(be) == PID_DEVICE_CUDA)
        return k_nn_conv_backward_cuda(be, s, x, w, dy, dx, dw, db, work, err);
    const int kk = s->c_in * s->k_h * s->k_w, p = ho * wo;
    const size_t xs = (size_t)s->c_in * s->h_in * s->w_in, ys = (size_t)s->c_out * p;
    if (db)
        for (int o = 0; o < s->c_out; o++) {
            double acc = 0.0;
            for (int n = 0; n < s->n; n++)
                for (int q = 0; q < p; q++)
                    acc += dy[n * ys + (size_t)o * p + q];
            db[o] = (float)acc;
        }
    for (int n = 0; n < s->n; n++) {
        const float *dyn = dy + n * ys;
        if (dw) { /* dw[c_out, kk] (+)= dy_n[c_out, p] col_n^T */
            im2col(s, ho, wo, x + n * xs, work);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s->c_out, kk, p, 1.0f, dyn, p,
                        work, p, n ? 1.0f : 0.0f, dw, kk);
        }
        if (dx) { /* dcol[kk, p] = W^T dy_n, then col2im */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kk, p, s->c_out, 1.0f, w, kk, dyn,
                        p, 0.0f, work, p);
            col2im(s, ho, wo, work, dx + n * xs);
        }
    }
    return PID_OK;
}
