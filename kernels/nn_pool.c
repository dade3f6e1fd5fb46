/* Pooling, CPU reference: max pooling (with argmax indices for the
 * backward), average pooling (1-D and 2-D, kernel/stride, no padding) and
 * global average pooling, forward and backward; CUDA twins in nn_pool.cu. */
#include "kernels/nn.h"

#include <string.h>

#define NO_CUDA                                                                                    \
    return pid_fail(err, PID_ERR_UNSUPPORTED, "nn pool: this phaseid was built without CUDA")

#ifndef PHASEID_HAVE_CUDA
pid_status k_nn_maxpool_forward_cuda(pid_backend *be, const k_nn_pool *s, const float *x, float *y,
                                     int32_t *argmax, pid_error *err)
{
    NO_CUDA;
}
pid_status k_nn_maxpool_backward_cuda(pid_backend *be, const k_nn_pool *s, const float *dy,
                                      const int32_t *argmax, float *dx, pid_error *err)
{
    NO_CUDA;
}
pid_status k_nn_avgpool_forward_cuda(pid_backend *be, const k_nn_pool *s, const float *x, float *y,
                                     pid_error *err)
{
    NO_CUDA;
}
pid_status k_nn_avgpool_backward_cuda(pid_backend *be, const k_nn_pool *s, const float *dy,
                                      float *dx, pid_error *err)
{
    NO_CUDA;
}
pid_status k_nn_global_avgpool_forward_cuda(pid_backend *be, const float *x, float *y, int n, int c,
                                            int l, pid_error *err)
{
    NO_CUDA;
}
pid_status k_nn_global_avgpool_backward_cuda(pid_backend *be, const float *dy, float *dx, int n,
                                             int c, int l, pid_error *err)
{
    NO_CUDA;
}
#endif

k_nn_pool k_nn_pool1d_shape(int n, int c, int w_in, int k, int stride)
{
    k_nn_pool s = {n, c, 1, w_in, 1, k, 1, stride};
    return s;
}

pid_status k_nn_pool_out(const k_nn_pool *s, int *h_out, int *w_out, pid_error *err)
{
    if (!s) return pid_fail(err, PID_ERR_ARG, "nn pool: NULL shape");
    if (s->n <= 0 || s->c <= 0 || s->h_in <= 0 || s->w_in <= 0 || s->k_h <= 0 || s->k_w <= 0 ||
        s->stride_h <= 0 || s->stride_w <= 0)
        return pid_fail(err, PID_ERR_ARG, "nn pool: sizes, kernel and stride must be positive");
    if (s->k_h > s->h_in || s->k_w > s->w_in)
        return pid_fail(err, PID_ERR_ARG, "nn pool: kernel %dx%d larger than input %dx%d", s->k_h,
                        s->k_w, s->h_in, s->w_in);
    if (h_out) *h_out = (s->h_in - s->k_h) / s->stride_h + 1;
    if (w_out) *w_out = (s->w_in - s->k_w) / s->stride_w + 1;
    return PID_OK;
}

static pid_status pool_check(const pid_backend *be, const k_nn_pool *s, const void *a,
                             const void *b, const void *c, int *ho, int *wo, pid_error *err)
{
    pid_status st = k_nn_pool_out(s, ho, wo, err);
    if (st) return st;
    if (!be || !a || !b || !c) return pid_fail(err, PID_ERR_ARG, "nn pool: NULL backend or tensor");
    return PID_OK;
}

pid_status k_nn_maxpool_forward(pid_backend *be, const k_nn_pool *s, const float *x, float *y,
                                int32_t *argmax, pid_error *err)
{
    int ho = 0, wo = 0;
    pid_status st = pool_check(be, s, x, y, argmax, &ho, &wo, err);
    if (st) return st;
    if (pid_backend_kind(be) == PID_DEVICE_CUDA)
        return k_nn_maxpool_forward_cuda(be, s, x, y, argmax, err);
    const size_t plane = (size_t)s->h_in * s->w_in, out = (size_t)ho * wo;
    for (size_t pc = 0; pc < (size_t)s->n * s->c; pc++) {
        const float *xp = x + pc * plane;
        for (int oh = 0; oh < ho; oh++)
            for (int ow = 0; ow < wo; ow++) {
                int best = oh * s->stride_h * s->w_in + ow * s->stride_w;
                for (int i = 0; i < s->k_h; i++)
                    for (int j = 0; j < s->k_w; j++) {
                        int idx = (oh * s->stride_h + i) * s->w_in + ow * s->stride_w + j;
                        if (xp[idx] > xp[best]) best = idx;
                    }
                y[pc * out + (size_t)oh * wo + ow] = xp[best];
                argmax[pc * out + (size_t)oh * wo + ow] = best;
            }
    }
    return PID_OK;
}

pid_status k_nn_maxpool_backward(pid_backend *be, const k_nn_pool *s, const float *dy,
                                 const int32_t *argmax, float *dx, pid_error *err)
{
    int ho = 0, wo = 0;
    pid_status st = pool_check(be, s, dy, argmax, dx, &ho, &wo, err);
    if (st) return st;
    if (pid_backend_kind(be) == PID_DEVICE_CUDA)
        return k_nn_maxpool_backward_cuda(be, s, dy, argmax, dx, err);
    const size_t plane = (size_t)s->h_in * s->w_in, out = (size_t)ho * wo;
    memset(dx, 0, sizeof(float) * plane * s->n * s->c);
    for (size_t pc = 0; pc < (size_t)s->n * s->c; pc++)
        for (size_t q = 0; q < out; q++)
            dx[pc * plane + (size_t)argmax[pc * out + q]] += dy[pc * out + q];
    return PID_OK;
}

pid_status k_nn_avgpool_forward(pid_backend *be, const k_nn_pool *s, const float *x, float *y,
                                pid_error *err)
{
    int ho = 0, wo = 0;
    pid_status st = pool_check(be, s, x, y, y, &ho, &wo, err);
    if (st) return st;
    if (pid_backend_kind(be) == PID_DEVICE_CUDA) return k_nn_avgpool_forward_cuda(be, s, x, y, err);
    const size_t plane = (size_t)s->h_in * s->w_in, out = (size_t)ho * wo;
    const float inv = 1.0f / (float)(s->k_h * s->k_w);
    for (size_t pc = 0; pc < (size_t)s->n * s->c; pc++)
        for (int oh = 0; oh < ho; oh++)
            for (int ow = 0; ow < wo; ow++) {
                float acc = 0.0f;
                for (int i = 0; i < s->k_h; i++)
                    for (int j = 0; j < s->k_w; j++)
                        acc += x[pc * plane + (size_t)(oh * s->stride_h + i) * s->w_in +
                                 ow * s->stride_w + j];
                y[pc * out + (size_t)oh * wo + ow] = acc * inv;
            }
    return PID_OK;
}

pid_status k_nn_avgpool_backward(pid_backend *be, const k_nn_pool *s, const float *dy, float *dx,
                                 pid_error *err)
{
    int ho = 0, wo = 0;
    pid_status st = pool_check(be, s, dy, dx, dx, &ho, &wo, err);
    if (st) return st;
    if (pid_backend_kind(be) == PID_DEVICE_CUDA)
        return k_nn_avgpool_backward_cuda(be, s, dy, dx, err);
    const size_t plane = (size_t)s->h_in * s->w_in, out = (size_t)ho * wo;
    const float inv = 1.0f / (float)(s->k_h * s->k_w);
    memset(dx, 0, sizeof(float) * plane * s->n * s->c);
    for (size_t pc = 0; pc < (size_t)s->n * s->c; pc++)
        for (int oh = 0; oh < ho; oh++)
            for (int ow = 0; ow < wo; ow++) {
                float g = dy[pc * out + (size_t)oh * wo + ow] * inv;
                for (int i = 0; i < s->k_h; i++)
                    for (int j = 0; j < s->k_w; j++)
                        dx[pc * plane + (size_t)(oh * s->stride_h + i) * s->w_in +
                           ow * s->stride_w + j] += g;
            }
    return PID_OK;
}

static pid_status gap_check(const pid_backend *be, const void *a, const void *b, int n, int c,
                            int l, pid_error *err)
{
    if (!be || !a || !b)
        return pid_fail(err, PID_ERR_ARG, "nn global avgpool: NULL backend or tensor");
    if (n <= 0 || c <= 0 || l <= 0)
        return pid_fail(err, PID_ERR_ARG,
                        "nn global avgpool: sizes must be positive (n=%d c=%d l=%d)", n, c, l);
    return PID_OK;
}

pid_status k_nn_global_avgpool_forward(pid_backend *be, const float *x, float *y, int n, int c,
                                       int l, pid_error *err)
{
    pid_status st = gap_check(be, x, y, n, c, l, err);
    if (st) return st;
    if (pid_backend_kind(be) == PID_DEVICE_CUDA)
        return k_nn_global_avgpool_forward_cuda(be, x, y, n, c, l, err);
    for (size_t pc = 0; pc < (size_t)n * c; pc++) {
        double acc = 0.0;
        for (int k = 0; k < l; k++)
            acc += x[pc * l + k];
        y[pc] = (float)(acc / l);
    }
    return PID_OK;
}

pid_status k_nn_global_avgpool_backward(pid_backend *be, const float *dy, float *dx, int n, int c,
                                        int l, pid_error *err)
{
    pid_status st = gap_check(be, dy, dx, n, c, l, err);
    if (st) return st;
    if (pid_backend_kind(be) == PID_DEVICE_CUDA)
        return k_nn_global_avgpool_backward_cuda(be, dy, dx, n, c, l, err);
    for (size_t pc = 0; pc < (size_t)n * c; pc++)
        for (int k = 0; k < l; k++)
            dx[pc * l + k] = dy[pc] / (float)l;
    return PID_OK;
}
